/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ctl.c — see ctl.h.
 */
#include "config.h"
#include "ctl.h"

#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "bridge.h"
#include "clone.h"
#include "groups.h"
#include "cluster.h"
#include "managed.h"
#include "vms-log.h"

#define CTL_LINE_MAX 4096
#define CTL_CONN_MAX 16

struct ctl_conn {
    struct bridge_admin *adm;
    struct bridge_watch w;
    char buf[CTL_LINE_MAX];
    size_t len;
    int waiting; /* an operation answers later */
    char *out;
    size_t out_len, out_off;
    int closing; /* close once the answer is written */
};

struct bridge_admin {
    struct bridge *br;
    struct bridge_watch lw;
    struct ctl_conn *conns[CTL_CONN_MAX];
};

static void conn_free(struct ctl_conn *c)
{
    struct bridge_admin *adm = c->adm;
    for (int i = 0; i < CTL_CONN_MAX; i++)
        if (adm->conns[i] == c)
            adm->conns[i] = NULL;
    bridge_managed_forget(adm->br, c);
    bridge_groups_forget(adm->br, c);
    bridge_clones_forget(adm->br, c);
    bridge_cluster_forget(adm->br, c);
    if (c->w.fd >= 0) {
        int fd = c->w.fd;
        bridge_watch_del(&adm->br->loop, &c->w);
        close(fd);
    }
    free(c->out);
    free(c);
}

static void conn_flush(struct ctl_conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->w.fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            bridge_watch_set(&c->adm->br->loop, &c->w, EPOLLIN | EPOLLOUT);
            return;
        }
        if (n <= 0) {
            conn_free(c);
            return;
        }
        c->out_off += (size_t)n;
    }
    conn_free(c); /* one command per connection */
}

/* Send @o (consumed) with "ok" set, then close. */
static void conn_answer(struct ctl_conn *c, int ok, json_object *o)
{
    const char *s;

    if (!o)
        o = json_object_new_object();
    json_object_object_add(o, "ok", json_object_new_boolean(ok));
    s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    free(c->out);
    c->out = NULL;
    if (asprintf(&c->out, "%s\n", s) < 0) {
        json_object_put(o);
        conn_free(c);
        return;
    }
    json_object_put(o);
    c->out_len = strlen(c->out);
    c->out_off = 0;
    c->waiting = 0;
    conn_flush(c);
}

static void conn_error(struct ctl_conn *c, const char *msg)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "error", json_object_new_string(msg));
    conn_answer(c, 0, o);
}

static void on_op_done(void *opaque, int ok, json_object *result)
{
    conn_answer(opaque, ok, result);
}

static struct bridge_vm *find_vm(struct bridge *br, const char *name)
{
    for (size_t i = 0; i < br->n_vms; i++)
        if (!strcmp(br->vms[i].cfg->name, name))
            return &br->vms[i];
    return NULL;
}

static void handle_command(struct ctl_conn *c, const char *line)
{
    struct bridge *br = c->adm->br;
    json_object *req = json_tokener_parse(line), *v, *o;
    const char *cmd = NULL, *vmn = NULL;
    struct bridge_vm *vm = NULL;
    static const struct {
        const char *name;
        enum bridge_lc_op op;
    } ops[] = {{"start", BRIDGE_LC_START},
               {"stop", BRIDGE_LC_STOP},
               {"suspend", BRIDGE_LC_SUSPEND},
               {"resume", BRIDGE_LC_RESUME}};

    if (!req || !json_object_is_type(req, json_type_object) ||
        !json_object_object_get_ex(req, "cmd", &v) || !json_object_is_type(v, json_type_string)) {
        conn_error(c, "expected a JSON object with \"cmd\"");
        goto out;
    }
    cmd = json_object_get_string(v);
    if (json_object_object_get_ex(req, "vm", &v) && json_object_is_type(v, json_type_string))
        vmn = json_object_get_string(v);
    if (!strcmp(cmd, "status")) {
        json_object *a = json_object_new_array();
        o = json_object_new_object();
        for (size_t i = 0; i < br->n_vms; i++)
            if (!vmn || !strcmp(vmn, br->vms[i].cfg->name))
                json_object_array_add(a, bridge_managed_status(&br->vms[i]));
        json_object_object_add(o, "vms", a);
        conn_answer(c, 1, o);
        goto out;
    }
    if (!strcmp(cmd, "cluster")) {
        conn_answer(c, 1, bridge_cluster_status(br));
        goto out;
    }
    if (!strcmp(cmd, "tiers")) {
        o = json_object_new_object();
        json_object_object_add(o, "tiers", bridge_managed_tiers(br));
        conn_answer(c, 1, o);
        goto out;
    }
    c->waiting = 1; /* a group command may answer later */
    if (bridge_clones_command(br, cmd, req, on_op_done, c) ||
        bridge_groups_command(br, cmd, req, on_op_done, c))
        goto out;
    c->waiting = 0;
    if (!vmn || !(vm = find_vm(br, vmn))) {
        char msg[160];
        snprintf(msg, sizeof(msg), "no VM named '%.64s' in the bridge's configuration",
                 vmn ? vmn : "");
        conn_error(c, msg);
        goto out;
    }
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        if (!strcmp(cmd, ops[i].name)) {
            c->waiting = 1;
            /* an HA VM powers on through the cluster: admission, then an ordered claim */
            if (ops[i].op == BRIDGE_LC_START && bridge_cluster_start(vm, on_op_done, c))
                goto out;
            bridge_managed_request(vm, ops[i].op, on_op_done, c);
            goto out;
        }
    if (!strcmp(cmd, "pin") || !strcmp(cmd, "unpin")) {
        char why[160];
        if (bridge_managed_pin(vm, cmd[0] == 'p', why, sizeof(why)) < 0)
            conn_error(c, why);
        else
            conn_answer(c, 1, NULL);
    } else if (!strcmp(cmd, "schedule-resume")) {
        char why[160];
        int64_t at = 0;
        if (json_object_object_get_ex(req, "at", &v) && json_object_is_type(v, json_type_int))
            at = json_object_get_int64(v);
        if (at < 0 || bridge_managed_schedule_resume(vm, at, why, sizeof(why)) < 0)
            conn_error(c, at < 0 ? "\"at\" must be a unix time" : why);
        else
            conn_answer(c, 1, NULL);
    } else if (!strcmp(cmd, "demote") || !strcmp(cmd, "promote")) {
        c->waiting = 1;
        bridge_managed_move(vm, cmd[0] == 'p', on_op_done, c);
    } else {
        conn_error(c, "unknown command");
    }
out:
    json_object_put(req);
}

static void conn_io(struct bridge_watch *w, uint32_t revents)
{
    struct ctl_conn *c = w->opaque;
    char *nl;
    ssize_t n;

    if (revents & EPOLLOUT) {
        conn_flush(c);
        return;
    }
    if (c->waiting || c->out)
        return; /* one command per connection; EOF while waiting is seen at the answer */
    n = read(w->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        conn_free(c);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    nl = strchr(c->buf, '\n');
    if (!nl) {
        if (c->len >= sizeof(c->buf) - 1)
            conn_error(c, "command line too long");
        return;
    }
    *nl = '\0';
    handle_command(c, c->buf);
}

static void on_accept(struct bridge_watch *w, uint32_t revents)
{
    struct bridge_admin *adm = w->opaque;
    int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), slot = -1;
    struct ctl_conn *c;
    (void)revents;

    if (fd < 0)
        return;
    for (int i = 0; i < CTL_CONN_MAX && slot < 0; i++)
        if (!adm->conns[i])
            slot = i;
    c = slot >= 0 ? calloc(1, sizeof(*c)) : NULL;
    if (!c) {
        static const char busy[] = "{\"ok\":false,\"error\":\"too many admin connections\"}\n";
        if (write(fd, busy, sizeof(busy) - 1) < 0) {
            /* closing anyway */
        }
        close(fd);
        return;
    }
    c->adm = adm;
    bridge_watch_init(&c->w, conn_io, c);
    if (bridge_watch_add(&adm->br->loop, &c->w, fd, EPOLLIN) < 0) {
        close(fd);
        free(c);
        return;
    }
    adm->conns[slot] = c;
}

int bridge_admin_listen(struct bridge *br, const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct bridge_admin *adm;
    mode_t old;
    int fd;

    if (!path || !*path)
        return 0;
    if (strlen(path) >= sizeof(sa.sun_path))
        return -1;
    strcpy(sa.sun_path, path);
    adm = calloc(1, sizeof(*adm));
    if (!adm)
        return -1;
    adm->br = br;
    unlink(path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    old = umask(077); /* the socket is born 0600: no window where others may connect */
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0) {
        umask(old);
        vms_err(NULL, NULL, "admin socket %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        free(adm);
        return -1;
    }
    umask(old);
    bridge_watch_init(&adm->lw, on_accept, adm);
    if (bridge_watch_add(&br->loop, &adm->lw, fd, EPOLLIN) < 0) {
        close(fd);
        free(adm);
        return -1;
    }
    br->admin = adm;
    vms_info(NULL, NULL, "admin socket %s", path);
    return 0;
}

void bridge_admin_close(struct bridge *br)
{
    struct bridge_admin *adm = br->admin;

    if (!adm)
        return;
    for (int i = 0; i < CTL_CONN_MAX; i++)
        if (adm->conns[i])
            conn_free(adm->conns[i]);
    if (adm->lw.fd >= 0) {
        int fd = adm->lw.fd;
        bridge_watch_del(&br->loop, &adm->lw);
        close(fd);
    }
    free(adm);
    br->admin = NULL;
}

/* ---- client ---- */

static const char *const ctl_commands[] = {"status",   "tiers", "start",  "stop",   "suspend",
                                           "resume",   "pin",   "unpin",  "demote", "promote",
                                           "schedule", "group", "cluster"};

int bridge_admin_is_ctl_command(const char *cmd)
{
    for (size_t i = 0; i < sizeof(ctl_commands) / sizeof(ctl_commands[0]); i++)
        if (!strcmp(cmd, ctl_commands[i]))
            return 1;
    return 0;
}

/* vmstate-admin cluster: this node, quorum, admission slots, members, every HA VM. */
static void print_cluster(json_object *o)
{
    json_object *v, *f, *sl;
#define S(obj, k) (json_object_object_get_ex(obj, k, &f) ? json_object_get_string(f) : "-")
#define B(obj, k) (json_object_object_get_ex(obj, k, &f) && json_object_get_boolean(f))
    printf("node %s (id %s): %s, %s, %s\n", S(o, "node"), S(o, "nodeid"),
           B(o, "connected") ? "connected to corosync" : "NOT connected to corosync",
           B(o, "quorate") ? "quorate" : "NOT quorate", B(o, "synced") ? "synced" : "syncing");
    if (json_object_object_get_ex(o, "slots", &sl))
        printf("slots: %s admitted of maxSlot %s (total %s, tolerating %s host failure(s); box "
               "%s vCPU, %s bytes)\n",
               S(sl, "admitted"), S(sl, "max_slot"), S(sl, "total"), S(sl, "failures_tolerated"),
               S(sl, "box_vcpus"), S(sl, "box_memory"));
    printf("%-16s %-8s %-7s %-6s %s\n", "HOST", "NODEID", "MEMBER", "SLOTS", "CAPACITY");
    json_object_object_get_ex(o, "hosts", &v);
    for (size_t i = 0; i < json_object_array_length(v); i++) {
        json_object *h = json_object_array_get_idx(v, i);
        printf("%-16s %-8s %-7s %-6s %s vCPU, %s bytes\n", S(h, "name"), S(h, "nodeid"),
               B(h, "member") ? "yes" : "no", S(h, "slots"), S(h, "vcpus"), S(h, "memory"));
    }
    printf("%-16s %-16s %-9s %-8s %-4s %-18s %s\n", "VM", "HOST", "STATE", "PRIORITY", "GEN",
           "CHECKPOINT", "LEASE");
    if (json_object_object_get_ex(o, "vms", &v))
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            json_object *e = json_object_array_get_idx(v, i);
            printf("%-16s %-16s %-9s %-8s %-4s %-18s %s\n", S(e, "vm"), S(e, "host"),
                   B(e, "waiting") ? "waiting" : S(e, "state"), S(e, "priority"), S(e, "gen"),
                   S(e, "checkpoint"), S(e, "lease"));
        }
#undef S
#undef B
}

static void print_human(const char *cmd, json_object *o)
{
    json_object *v;

    if (json_object_object_get_ex(o, "error", &v)) {
        fprintf(stderr, "vmstate-admin: %s: %s\n", cmd, json_object_get_string(v));
        return;
    }
    if (!strcmp(cmd, "status") && json_object_object_get_ex(o, "vms", &v)) {
        printf("%-20s %-10s %-8s %-4s %-4s %-4s %-10s %s\n", "VM", "STATE", "PID", "QMP", "A", "B",
               "TIER", "CHECKPOINT");
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            json_object *vm = json_object_array_get_idx(v, i), *f, *ck;
#define S(k) (json_object_object_get_ex(vm, k, &f) ? json_object_get_string(f) : "-")
#define B(k) (json_object_object_get_ex(vm, k, &f) && json_object_get_boolean(f) ? "up" : "-")
            printf("%-20s %-10s %-8s %-4s %-4s %-4s %-10s %s\n", S("vm"),
                   json_object_object_get_ex(vm, "run_state", &f) ? json_object_get_string(f)
                                                                  : "attached",
                   S("pid"), B("qmp"), B("port_a"), B("port_b"), S("tier"),
                   json_object_object_get_ex(vm, "checkpoint", &ck) &&
                           json_object_object_get_ex(ck, "id", &f)
                       ? json_object_get_string(f)
                       : "-");
#undef S
#undef B
        }
        return;
    }
    if (!strcmp(cmd, "tiers") && json_object_object_get_ex(o, "tiers", &v)) {
        printf("%-12s %-5s %-14s %-14s %-14s %s\n", "TIER", "CLASS", "CAPACITY", "RESERVED", "FREE",
               "VMS");
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            json_object *t = json_object_array_get_idx(v, i), *f;
#define S(k) (json_object_object_get_ex(t, k, &f) ? json_object_get_string(f) : "-")
            printf("%-12s %-5s %-14s %-14s %-14s %s\n", S("name"), S("class"), S("capacity"),
                   S("reserved"), S("free"), S("vms"));
#undef S
        }
        return;
    }
    if (!strcmp(cmd, "cluster") && json_object_object_get_ex(o, "hosts", &v)) {
        print_cluster(o);
        return;
    }
    json_object_object_del(o, "ok");
    printf("%s: %s\n", cmd, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
}

/* "+SECONDS" (from now) or unix seconds, fractions allowed: ns since the epoch, or -1. */
static int64_t parse_at(const char *s)
{
    char *end = NULL;
    double v = strtod(s + (s[0] == '+'), &end);
    struct timespec now;

    if (!*s || !end || *end || !(v > 0) || v > 1e11)
        return -1;
    if (s[0] != '+')
        return (int64_t)(v * 1e9);
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000000000ll + now.tv_nsec + (int64_t)(v * 1e9);
}

/*
 * vmstate-admin group create G | add G VM [BRIDGE] | show G | suspend G AT |
 * resume G AT [preserve|host] | clone G NEW [--at AT] [--policy preserve|host]: the request
 * into @req. 0, or -1 (usage printed).
 */
static int group_request(json_object *req, int argc, char **argv)
{
    const char *sub = argc > 0 ? argv[0] : "";
    int64_t at;
    char cmd[32];

    if (argc < 2 || strlen(sub) > 16)
        goto usage;
    snprintf(cmd, sizeof(cmd), "group-%s", sub);
    json_object_object_add(req, "cmd", json_object_new_string(cmd));
    json_object_object_add(req, "group", json_object_new_string(argv[1]));
    if ((!strcmp(sub, "create") || !strcmp(sub, "show")) && argc == 2)
        return 0;
    if (!strcmp(sub, "add") && (argc == 3 || argc == 4)) {
        json_object_object_add(req, "vm", json_object_new_string(argv[2]));
        if (argc == 4)
            json_object_object_add(req, "bridge", json_object_new_string(argv[3]));
        return 0;
    }
    if (!strcmp(sub, "clone") && argc >= 3) {
        json_object_object_add(req, "new", json_object_new_string(argv[2]));
        for (int i = 3; i < argc; i += 2) {
            if (i + 1 >= argc)
                goto usage;
            if (!strcmp(argv[i], "--policy")) {
                json_object_object_add(req, "policy", json_object_new_string(argv[i + 1]));
            } else if (!strcmp(argv[i], "--at") && (at = parse_at(argv[i + 1])) > 0) {
                json_object_object_add(req, "at_ns", json_object_new_int64(at));
            } else {
                fprintf(stderr, "vmstate-admin: group clone: bad option '%s %s'\n", argv[i],
                        argv[i + 1]);
                return -1;
            }
        }
        return 0;
    }
    if ((!strcmp(sub, "suspend") && argc == 3) ||
        (!strcmp(sub, "resume") && (argc == 3 || argc == 4))) {
        at = parse_at(argv[2]);
        if (at < 0) {
            fprintf(stderr,
                    "vmstate-admin: group %s: '%s' is not a time (+SECONDS or unix "
                    "seconds)\n",
                    sub, argv[2]);
            return -1;
        }
        json_object_object_add(req, "at_ns", json_object_new_int64(at));
        if (argc == 4)
            json_object_object_add(req, "policy", json_object_new_string(argv[3]));
        return 0;
    }
usage:
    fprintf(
        stderr,
        "vmstate-admin: usage: group create G | group add G VM [BRIDGE] | group show "
        "G | group suspend G AT | group resume G AT [preserve|host] | group clone G NEW [--at AT] "
        "[--policy preserve|host]\n"
        "  AT: +SECONDS from now or unix seconds (fractions allowed); BRIDGE: a "
        "[peer NAME] of the bridge, default self\n");
    return -1;
}

int bridge_admin_ctl_main(const char *socket_path, const char *cmd, int argc, char **argv, int json,
                          double timeout_s)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    json_object *req = json_object_new_object(), *ans = NULL, *v;
    char buf[1 << 16];
    size_t len = 0;
    int fd = -1, rc = 3;
    const char *text;

    if (!strcmp(cmd, "schedule")) {
        /* schedule VM resume AT: AT is unix seconds, +SECONDS from now, or "none" */
        char *end = NULL;
        long long at;
        if (argc != 3 || strcmp(argv[1], "resume")) {
            fprintf(stderr, "vmstate-admin: usage: schedule VM resume AT|+SECONDS|none\n");
            rc = 2;
            goto out;
        }
        at = !strcmp(argv[2], "none") ? 0 : strtoll(argv[2] + (argv[2][0] == '+'), &end, 10);
        if (strcmp(argv[2], "none") && (!end || *end || at <= 0)) {
            fprintf(stderr, "vmstate-admin: schedule: '%s' is not a time\n", argv[2]);
            rc = 2;
            goto out;
        }
        if (argv[2][0] == '+')
            at += (long long)time(NULL);
        json_object_object_add(req, "at", json_object_new_int64(at));
        cmd = "schedule-resume";
    }
    if (!strcmp(cmd, "group")) {
        if (group_request(req, argc, argv) < 0) {
            rc = 2;
            goto out;
        }
        cmd = json_object_get_string(json_object_object_get(req, "cmd"));
        argc = 0;
    } else {
        json_object_object_add(req, "cmd", json_object_new_string(cmd));
    }
    if (argc > 0)
        json_object_object_add(req, "vm", json_object_new_string(argv[0]));
    else if (strcmp(cmd, "status") && strcmp(cmd, "tiers") && strncmp(cmd, "group-", 6) &&
             strcmp(cmd, "cluster")) {
        fprintf(stderr, "vmstate-admin: %s needs a VM name\n", cmd);
        rc = 2;
        goto out;
    }
    if (strlen(socket_path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "vmstate-admin: socket path too long: %s\n", socket_path);
        goto out;
    }
    strcpy(sa.sun_path, socket_path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fprintf(stderr,
                "vmstate-admin: no bridge answers on %s (%s): is vmstate-bridged running with "
                "admin_socket set?\n",
                socket_path, strerror(errno));
        goto out;
    }
    text = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
    if (dprintf(fd, "%s\n", text) < 0)
        goto lost;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)(timeout_s * 1000));
        ssize_t n;
        if (pr == 0) {
            fprintf(stderr,
                    "vmstate-admin: %s: no answer within %.0f s (it may still finish; "
                    "see `vmstate-admin status`)\n",
                    cmd, timeout_s);
            rc = 1;
            goto out;
        }
        if (pr < 0 && errno == EINTR)
            continue;
        n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        if (memchr(buf, '\n', len) || len >= sizeof(buf) - 1)
            break;
    }
    buf[len] = '\0';
    ans = json_tokener_parse(buf);
    if (!ans || !json_object_is_type(ans, json_type_object))
        goto lost;
    rc = json_object_object_get_ex(ans, "ok", &v) && json_object_get_boolean(v) ? 0 : 1;
    if (json)
        printf("%s\n", json_object_to_json_string_ext(ans, JSON_C_TO_STRING_PLAIN));
    else
        print_human(cmd, ans);
    goto out;
lost:
    fprintf(stderr, "vmstate-admin: the bridge closed the connection without an answer\n");
    rc = 1;
out:
    if (fd >= 0)
        close(fd);
    json_object_put(req);
    json_object_put(ans);
    return rc;
}
