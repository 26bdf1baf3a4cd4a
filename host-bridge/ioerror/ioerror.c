/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ioerror.c — the I/O-error policy's glue for one VM (see ioerror.h): QMP
 * through the backend ops, probes in a helper thread (a probe of dead storage
 * may block; the event loop must not), notifications, and the bridge-wide
 * admin event socket (JSON lines; the last 64 are replayed to a new client).
 */
#include "config.h"
#include "ioerror.h"

#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bridge.h"
#include "cluster.h"
#include "vms-log.h"

#define KILL_FORCE_AFTER 5.0 /* s after QMP quit: SIGKILL */

struct probe_job {
    struct bridge_ioe_probe_cfg cfg;
    uint64_t min_free;
    pthread_t th;
    atomic_int done; /* 0 running, 1 finished (thread), 2 orphaned (owner): the second frees */
    int result;
    char detail[256];
};

struct bridge_ioe {
    struct bridge_vm *vm;
    struct bridge_ioe_sm sm;
    struct probe_job *job;
    double now;
    double kill_force_at;
    int restart_pending; /* killed by us: run io_restart_command once QEMU is gone */
};

static const char *vmname(const struct bridge_ioe *e)
{
    return e->vm->cfg->name;
}

static const struct bridge_backend_ops *ops(const struct bridge_ioe *e)
{
    return e->vm->ops;
}

/* ---- admin event socket (bridge-wide) ---- */

#define ADMIN_CLIENTS_MAX 16
#define ADMIN_BACKLOG     64

static struct {
    struct bridge_loop *loop;
    struct bridge_watch listen;
    char path[BRIDGE_PATH_MAX];
    int clients[ADMIN_CLIENTS_MAX];
    char *backlog[ADMIN_BACKLOG];
    unsigned next; /* ring index */
    int users;
} admin = {.listen = {.fd = -1}};

static void admin_send(int *fd, const char *line, size_t len)
{
    ssize_t n = send(*fd, line, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n != (ssize_t)len) { /* gone or too slow: dropped (it can reconnect; backlog replays) */
        close(*fd);
        *fd = -1;
    }
}

static void admin_accept(struct bridge_watch *w, uint32_t revents)
{
    int fd;
    (void)revents;

    while ((fd = accept4(w->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0) {
        int slot = -1;
        for (int i = 0; i < ADMIN_CLIENTS_MAX; i++)
            if (admin.clients[i] < 0) {
                slot = i;
                break;
            }
        if (slot < 0) {
            close(fd);
            continue;
        }
        admin.clients[slot] = fd;
        for (unsigned k = 0; k < ADMIN_BACKLOG && admin.clients[slot] >= 0; k++) {
            const char *l = admin.backlog[(admin.next + k) % ADMIN_BACKLOG];
            if (l)
                admin_send(&admin.clients[slot], l, strlen(l));
        }
    }
}

int bridge_ioe_admin_open(const char *path, void *loop)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd;

    if (admin.users++ > 0 || !path[0])
        return 0;
    for (int i = 0; i < ADMIN_CLIENTS_MAX; i++)
        admin.clients[i] = -1;
    if (strlen(path) >= sizeof(sa.sun_path))
        return -1;
    strcpy(sa.sun_path, path);
    unlink(path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        /* created 0600: no moment when another user could connect */
        mode_t old_mask = umask(0177);
        int bound = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
        umask(old_mask);
        if (bound < 0) {
            close(fd);
            fd = -1;
        }
    }
    if (fd < 0 || listen(fd, 8) < 0) {
        vms_err(NULL, NULL, "io events: cannot listen on %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    admin.loop = loop;
    bridge_watch_init(&admin.listen, admin_accept, NULL);
    if (bridge_watch_add(loop, &admin.listen, fd, EPOLLIN) < 0) {
        close(fd);
        return -1;
    }
    snprintf(admin.path, sizeof(admin.path), "%s", path);
    vms_info(NULL, NULL, "io events: streaming JSON lines on %s", path);
    return 0;
}

void bridge_ioe_admin_close(void)
{
    if (admin.users == 0 || --admin.users > 0)
        return;
    if (admin.listen.fd >= 0) {
        int fd = admin.listen.fd;
        bridge_watch_del(admin.loop, &admin.listen);
        close(fd);
        unlink(admin.path);
    }
    for (int i = 0; i < ADMIN_CLIENTS_MAX; i++)
        if (admin.clients[i] >= 0) {
            close(admin.clients[i]);
            admin.clients[i] = -1;
        }
    for (unsigned k = 0; k < ADMIN_BACKLOG; k++) {
        free(admin.backlog[k]);
        admin.backlog[k] = NULL;
    }
}

static void admin_publish(const char *line)
{
    size_t len = strlen(line);
    char *copy;

    if (admin.listen.fd < 0)
        return;
    copy = strdup(line);
    if (copy) {
        free(admin.backlog[admin.next]);
        admin.backlog[admin.next] = copy;
        admin.next = (admin.next + 1) % ADMIN_BACKLOG;
    }
    for (int i = 0; i < ADMIN_CLIENTS_MAX; i++)
        if (admin.clients[i] >= 0)
            admin_send(&admin.clients[i], line, len);
}

/* ---- actions ---- */

/* io-error: which drive (query-block io-status), then the machine hears the status. */
static void on_block_done(void *opaque, const struct bridge_backend_result *r)
{
    struct bridge_ioe *e = opaque;
    double now = bridge_now();

    int pick = -1, score = -1;

    for (unsigned i = 0; r->status == VMS_STATUS_OK && i < r->n_io; i++) {
        /* BLOCK_IO_ERROR named the drive: confirmed if listed. Else (the VM paused before we
         * connected) guess: nospace first, then a drive with a probe, then the first. */
        int s = e->sm.error_seen && !strcmp(r->io_node[i], e->sm.node)
                    ? 10
                    : 2 * !strcmp(r->io_status[i], "nospace") +
                          (bridge_ioe_probe_for(e->sm.cfg, r->io_node[i]) != NULL);
        vms_debug(vmname(e), NULL, "io: query-block: node %s io-status %s", r->io_node[i],
                  r->io_status[i]);
        if (s > score) {
            score = s;
            pick = (int)i;
        }
    }
    if (pick >= 0 && !e->sm.error_seen && !e->sm.episode) {
        vms_info(vmname(e), NULL,
                 "io: paused before any BLOCK_IO_ERROR was seen; query-block: "
                 "node %s io-status %s",
                 r->io_node[pick], r->io_status[pick]);
        bridge_ioe_on_io_error(&e->sm, r->io_node[pick], "", r->io_status[pick],
                               !strcmp(r->io_status[pick], "nospace"), now);
    } else if (e->sm.error_seen && score < 10) {
        vms_info(vmname(e), NULL, "io: query-block does not list node %s as failed", e->sm.node);
    }
    bridge_ioe_on_status(&e->sm, "io-error", now);
}

static void on_status_done(void *opaque, const struct bridge_backend_result *r)
{
    struct bridge_ioe *e = opaque;

    if (r->status == VMS_STATUS_OK && !strcmp(r->run_status, "io-error") && e->vm->backend &&
        ops(e)->query_block && ops(e)->query_block(e->vm->backend, on_block_done, e) == 0)
        return;
    bridge_ioe_on_status(&e->sm, r->status == VMS_STATUS_OK ? r->run_status : NULL, bridge_now());
}

static void act_query_status(void *opaque)
{
    struct bridge_ioe *e = opaque;
    if (!e->vm->backend || ops(e)->query_status(e->vm->backend, on_status_done, e) < 0)
        bridge_ioe_on_status(&e->sm, NULL, e->now);
}

static void on_cont_done(void *opaque, const struct bridge_backend_result *r)
{
    struct bridge_ioe *e = opaque;
    double now = bridge_now();

    if (r->status != VMS_STATUS_OK)
        vms_warn(vmname(e), NULL, "io: cont failed: %s", r->message);
    bridge_ioe_on_cont(&e->sm, r->status == VMS_STATUS_OK, r->message, now);
}

/* Right before a cont: is the VM still paused by the I/O error (not stopped by a user since)? */
static void on_precont_status(void *opaque, const struct bridge_backend_result *r)
{
    struct bridge_ioe *e = opaque;
    double now = bridge_now();

    if (e->sm.state != BRIDGE_IOE_RESUMING)
        return;
    if (r->status != VMS_STATUS_OK) {
        bridge_ioe_on_cont(&e->sm, 0, r->message, now);
        return;
    }
    if (strcmp(r->run_status, "io-error")) {
        bridge_ioe_on_status(&e->sm, r->run_status, now);
        return;
    }
    vms_info(vmname(e), NULL, "io: cont (attempt %u of this episode)", e->sm.conts);
    if (ops(e)->cont(e->vm->backend, on_cont_done, e) < 0)
        bridge_ioe_on_cont(&e->sm, 0, "QMP unavailable", now);
}

static void act_cont(void *opaque)
{
    struct bridge_ioe *e = opaque;
    if (bridge_cluster_storage_moving(e->vm)) {
        /* its state is on its way to another host: this QEMU must not run it again */
        bridge_ioe_on_cont(&e->sm, 0, "moving to another host", e->now);
        return;
    }
    if (!e->vm->backend || ops(e)->query_status(e->vm->backend, on_precont_status, e) < 0)
        bridge_ioe_on_cont(&e->sm, 0, "QMP unavailable", e->now);
}

/* io_restart_command, detached (double fork: the bridge's reaper never sees it). */
static void run_restart(struct bridge_ioe *e)
{
    const char *cmd = e->vm->cfg->ioe.restart_command;
    char vmenv[BRIDGE_VM_NAME_MAX + 16];
    char *const envp[] = {vmenv, "VMSTATE_EVENT=io-killed", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                          NULL};
    pid_t c;

    e->restart_pending = 0;
    if (!cmd[0])
        return;
    snprintf(vmenv, sizeof(vmenv), "VMSTATE_VM=%s", vmname(e));
    vms_warn(vmname(e), NULL, "io: running io_restart_command");
    c = fork();
    if (c == 0) { /* only async-signal-safe calls: other threads may hold locks */
        if (fork() == 0) {
            setsid();
            execle("/bin/sh", "sh", "-c", cmd, (char *)NULL, envp);
            _exit(127);
        }
        _exit(0);
    }
    if (c < 0)
        vms_err(vmname(e), NULL, "io: cannot run io_restart_command: %s", strerror(errno));
    else
        waitpid(c, NULL, 0);
}

static void act_kill(void *opaque, const char *why)
{
    struct bridge_ioe *e = opaque;
    (void)why;
    e->restart_pending = 1;
    if (e->vm->backend && ops(e)->kill(e->vm->backend, 0) == 0) {
        e->kill_force_at = e->now + KILL_FORCE_AFTER;
        return;
    }
    if (e->vm->backend)
        ops(e)->kill(e->vm->backend, 1);
}

static void *probe_thread(void *arg)
{
    struct probe_job *j = arg;

    j->result = bridge_ioe_probe_run(&j->cfg, j->min_free, j->detail, sizeof(j->detail));
    if (atomic_exchange(&j->done, 1) == 2) /* the owner left */
        free(j);
    return NULL;
}

static void act_probe(void *opaque, const struct bridge_ioe_probe_cfg *p)
{
    struct bridge_ioe *e = opaque;
    struct probe_job *j;
    pthread_attr_t attr;

    if (e->job) /* one at a time; the machine asks again later */
        return;
    j = calloc(1, sizeof(*j));
    if (!j)
        goto fail;
    j->cfg = *p;
    j->min_free = e->vm->cfg->ioe.min_free_bytes;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&j->th, &attr, probe_thread, j) != 0) {
        pthread_attr_destroy(&attr);
        free(j);
        goto fail;
    }
    pthread_attr_destroy(&attr);
    e->job = j;
    return;
fail:
    e->sm.probing = 0;
    bridge_ioe_on_probe(&e->sm, 0, "cannot start a probe", e->now);
}

/* After a resume: tell the guest's listeners (best effort: port B connected, not journaled). */
static void send_guest_notice(struct bridge_ioe *e, const struct bridge_ioe_sm *sm)
{
    struct vms_msg n;
    char text[VMS_STR_MAX + 1];

    snprintf(text, sizeof(text), "paused %.1f s by a storage error (%s) on disk %s",
             sm->paused_total, sm->nospace ? "ENOSPC" : "EIO", sm->node[0] ? sm->node : "?");
    if (!vms_valid_text(text))
        return;
    vms_msg_init(&n, VMS_MSG_NOTICE);
    vms_msg_set_str(&n, VMS_F_REASON, "io-resumed");
    vms_msg_set_str(&n, VMS_F_MESSAGE, text);
    bridge_vm_send(e->vm, &n);
    vms_msg_clear(&n);
}

static void act_notify(void *opaque, const char *kind, const struct bridge_ioe_sm *sm,
                       const char *text)
{
    struct bridge_ioe *e = opaque;
    json_object *o = json_object_new_object();
    struct timespec ts;
    const char *line;
    char *copy;

    if (!strcmp(kind, "repaused") || !strcmp(kind, "healthy"))
        vms_info(vmname(e), NULL, "io: %s", text);
    else if (!strcmp(kind, "resumed") || !strcmp(kind, "user-paused"))
        vms_info(vmname(e), NULL, "io: %s", text);
    else
        vms_warn(vmname(e), NULL, "io: %s", text);
    if (!o)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    json_object_object_add(o, "time", json_object_new_double(ts.tv_sec + ts.tv_nsec / 1e9));
    json_object_object_add(o, "vm", json_object_new_string(vmname(e)));
    json_object_object_add(o, "kind", json_object_new_string(kind));
    json_object_object_add(o, "state", json_object_new_string(bridge_ioe_state_name(sm->state)));
    json_object_object_add(o, "node", json_object_new_string(sm->node));
    json_object_object_add(o, "error", json_object_new_string(sm->nospace ? "ENOSPC" : "EIO"));
    json_object_object_add(o, "operation", json_object_new_string(sm->operation));
    json_object_object_add(o, "reason", json_object_new_string(sm->reason));
    json_object_object_add(o, "policy",
                           json_object_new_string(bridge_ioe_policy_name(sm->cfg->policy)));
    json_object_object_add(o, "stateless", json_object_new_boolean(sm->cfg->stateless));
    json_object_object_add(o, "pauses", json_object_new_int((int)sm->pauses));
    json_object_object_add(o, "conts", json_object_new_int((int)sm->conts));
    json_object_object_add(o, "paused_s", json_object_new_double(sm->paused_total));
    json_object_object_add(o, "since_s",
                           json_object_new_double(sm->episode ? e->now - sm->since : 0));
    if (!strcmp(kind, "resumed")) {
        json_object_object_add(o, "healthy_to_running_s",
                               json_object_new_double(sm->last_healthy_to_running));
        json_object_object_add(o, "healthy_to_cont_s",
                               json_object_new_double(sm->last_healthy_to_cont));
    }
    json_object_object_add(o, "text", json_object_new_string(text));
    if (!strcmp(kind, "escalated")) {
        /* in a cluster: move it to a host that reaches its storage, or say why not */
        json_object *cl = bridge_cluster_storage_escalated(e->vm, sm->cfg->stateless, sm->node);
        if (cl)
            json_object_object_add(o, "cluster", cl);
    }
    if (!strcmp(kind, "healthy") || !strcmp(kind, "resumed"))
        bridge_cluster_storage_resumed(e->vm); /* its path works here: the policy resumes it */
    if (!strcmp(kind, "resumed"))
        send_guest_notice(e, sm);
    line = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    copy = malloc(strlen(line) + 2);
    if (copy) {
        sprintf(copy, "%s\n", line);
        admin_publish(copy);
        free(copy);
    }
    json_object_put(o);
}

void bridge_ioe_publish(const char *vm, const char *kind, const char *text, json_object *cluster)
{
    json_object *o = json_object_new_object();
    struct timespec ts;
    const char *line;
    char *copy;

    if (!o) {
        json_object_put(cluster);
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    json_object_object_add(o, "time", json_object_new_double(ts.tv_sec + ts.tv_nsec / 1e9));
    json_object_object_add(o, "vm", json_object_new_string(vm));
    json_object_object_add(o, "kind", json_object_new_string(kind));
    json_object_object_add(o, "text", json_object_new_string(text));
    if (cluster)
        json_object_object_add(o, "cluster", cluster);
    line = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    copy = malloc(strlen(line) + 2);
    if (copy) {
        sprintf(copy, "%s\n", line);
        admin_publish(copy);
        free(copy);
    }
    json_object_put(o);
}

static const struct bridge_ioe_actions actions = {
    .query_status = act_query_status,
    .probe = act_probe,
    .cont = act_cont,
    .kill = act_kill,
    .notify = act_notify,
};

/* ---- the VM's hooks ---- */

struct bridge_ioe *bridge_ioe_new(struct bridge_vm *vm)
{
    struct bridge_ioe *e = calloc(1, sizeof(*e));

    if (!e)
        return NULL;
    e->vm = vm;
    e->now = bridge_now();
    bridge_ioe_sm_init(&e->sm, &vm->cfg->ioe, &actions, e);
    if (bridge_ioe_admin_open(vm->br->cfg->io_event_socket, &vm->br->loop) < 0)
        vms_warn(vmname(e), NULL, "io: no admin event socket; events are logged only");
    return e;
}

void bridge_ioe_free(struct bridge_ioe *e)
{
    if (!e)
        return;
    if (e->job) {
        if (atomic_exchange(&e->job->done, 2) == 1)
            free(e->job);
    }
    bridge_ioe_admin_close();
    free(e);
}

void bridge_ioe_event(struct bridge_ioe *e, const char *name)
{
    double now = bridge_now();

    if (!e)
        return;
    e->now = now;
    if (!strcmp(name, "STOP"))
        bridge_ioe_on_stop(&e->sm, now);
    else if (!strcmp(name, "RESUME"))
        bridge_ioe_on_resume(&e->sm, now);
    else if (!strcmp(name, "SHUTDOWN"))
        vms_info(vmname(e), NULL, "io: QEMU is shutting down");
    else if (!strcmp(name, "GONE")) /* libvirt: QEMU ended, the connection stays */
        bridge_ioe_lost(e);
}

void bridge_ioe_io_error(struct bridge_ioe *e, const char *node, const char *operation,
                         const char *reason, int nospace)
{
    if (e)
        bridge_ioe_on_io_error(&e->sm, node, operation, reason, nospace, bridge_now());
}

void bridge_ioe_ready(struct bridge_ioe *e)
{
    if (!e)
        return;
    e->kill_force_at = 0;
    bridge_ioe_on_ready(&e->sm, bridge_now());
}

void bridge_ioe_lost(struct bridge_ioe *e)
{
    if (e && e->restart_pending) {
        e->kill_force_at = 0;
        run_restart(e);
    }
}

void bridge_ioe_tick_vm(struct bridge_ioe *e, double now)
{
    if (!e)
        return;
    e->now = now;
    if (e->job && atomic_load(&e->job->done) == 1) {
        struct probe_job *j = e->job;
        e->job = NULL;
        vms_debug(vmname(e), NULL, "io: probe %s: %s: %s", j->cfg.target,
                  j->result ? "healthy" : "unhealthy", j->detail);
        if (j->result && e->sm.state == BRIDGE_IOE_IO_PAUSED && !e->sm.healthy)
            vms_info(vmname(e), NULL, "io: store healthy (%s)", j->detail);
        bridge_ioe_on_probe(&e->sm, j->result, j->detail, now);
        free(j);
    }
    if (e->kill_force_at > 0 && now >= e->kill_force_at) {
        e->kill_force_at = 0;
        if (e->vm->backend && ops(e)->is_ready(e->vm->backend))
            ops(e)->kill(e->vm->backend, 1);
    }
    bridge_ioe_tick(&e->sm, now);
}
