/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vmstatectl — command-line client of vmstate-helperd, built on libvmstate.
 * See vmstatectl(1) (libvmstate/vmstatectl.1) for usage and exit codes.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vmstate.h"

/* Exit codes (documented in vmstatectl.1). */
enum {
    EXIT_OK = 0,
    EXIT_FAILED = 1,    /* the request completed with an error status */
    EXIT_USAGE = 2,     /* bad command line or unreadable credentials */
    EXIT_REFUSED = 3,   /* the helper refused: permission, busy, bad state, ... */
    EXIT_TIMEOUT = 4,   /* --wait ran out of time (the request may still complete) */
    EXIT_QUEUED = 5,    /* accepted and queued, not waited for (no --wait) */
    EXIT_NO_BUS = 6,    /* no D-Bus bus to talk to */
    EXIT_NO_HELPER = 7, /* no vmstate-helperd on the bus */
    EXIT_NO_BRIDGE = 8, /* the host bridge is unreachable (list: answered from the cache) */
};

struct opts {
    const char *address;
    const char *app_id;
    const char *principal;
    const char *secret_file;
    const char *data;
    const char *data_file;
    int wait;
    int timeout_s;
    int json;
    int quiet;
    int tree;
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void usage(FILE *f)
{
    fputs("Usage: vmstatectl [OPTIONS] COMMAND [ARG...]\n"
          "Ask the host (through vmstate-helperd) to save, list or restore this VM's state.\n\n"
          "Commands:\n"
          "  save LABEL          save the VM's state under LABEL\n"
          "  restore STATE_ID    restore a saved state; with --then-set-memory BYTES and/or\n"
          "                      --then-hostinfo the host runs them inside the restore and\n"
          "                      their results come with the restore's completion\n"
          "  list [--tree]       list the saved states (waits for the answer); --tree\n"
          "                      draws them by parent\n"
          "  delete STATE_ID     delete a saved state\n"
          "  hostinfo            show host information (waits for the answer)\n"
          "  set-memory BYTES    resize the VM's memory (suffixes K, M, G); with --offline\n"
          "                      (a managed VM) the host shuts the guest down, changes its\n"
          "                      memory and boots it again: the answer comes in the new boot\n"
          "  suspend             ask the host to suspend this VM (a managed VM); with --wait,\n"
          "                      the answer comes once the host has resumed it\n"
          "  watch               print this app id's events, save announcements, states saved\n"
          "                      or deleted by any app, clock corrections and host notices\n"
          "                      until interrupted\n"
          "  inhibit REQUEST_ID REASON\n"
          "                      veto the save REQUEST_ID announced by a prepare-save event\n\n"
          "Options:\n"
          "  -w, --wait            follow the request to its completion, with a progress line\n"
          "  -t, --timeout SEC     give up waiting after SEC seconds (default 600)\n"
          "  -j, --json            machine-readable output (one JSON object per line)\n"
          "  -q, --quiet           no progress line\n"
          "  -a, --app-id ID       app id (env VMSTATE_APP_ID; default \"vmstatectl\")\n"
          "  -p, --principal NAME  principal (env VMSTATE_PRINCIPAL)\n"
          "      --secret-file F   read the secret from F (first line); else env VMSTATE_SECRET\n"
          "  -d, --data TEXT       app data sent with save/restore\n"
          "      --data-file F     app data read from F (at most 64 KiB)\n"
          "      --then-set-memory BYTES, --then-hostinfo\n"
          "                        restore only: operations the host runs inside the restore\n"
          "      --offline         set-memory only: shut down, resize, boot again (managed VM)\n"
          "      --address ADDR    D-Bus address instead of the system bus (env\n"
          "                        VMSTATE_BUS_ADDRESS)\n"
          "  -h, --help            this text\n"
          "  -V, --version         print the version\n\n"
          "Exit status: 0 completed ok; 1 completed with an error; 2 usage or credentials\n"
          "error; 3 the helper refused; 4 timed out waiting; 5 queued (accepted, not waited\n"
          "for: use --wait); 6 no D-Bus bus; 7 vmstate-helperd not running; 8 host bridge\n"
          "unreachable (list then shows the helper's last known list).\n"
          "The secret is never taken from the command line.\n",
          f);
}

/* ---- output ---------------------------------------------------------------- */

static int printable(const uint8_t *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((d[i] < 0x20 && d[i] != '\n' && d[i] != '\t') || d[i] == 0x7f)
            return 0;
    return 1;
}

static void put_time(char *buf, size_t len, int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The one-line text of the events that are not completions, restores or bridge changes. */
static int print_info_line(FILE *f, const struct vmstate_event *ev)
{
    switch (ev->type) {
    case VMSTATE_EVENT_PREPARE_SAVE:
        return fprintf(f, "prepare-save %s: a save is about to be taken (label: %s)\n",
                       ev->request_id, ev->label);
    case VMSTATE_EVENT_CLOCK_CORRECTED:
        return fprintf(f, "clock-corrected: %+.3f s (%s)\n", (double)ev->clock_correction_ns / 1e9,
                       ev->reason);
    case VMSTATE_EVENT_NOTICE:
        return fprintf(f, "notice (%s): %s\n", ev->reason, ev->message);
    case VMSTATE_EVENT_STATE_SAVED:
    case VMSTATE_EVENT_STATE_DELETED:
        return fprintf(f, "state-%s %s: label: %s  app: %s  parent: %s\n",
                       ev->type == VMSTATE_EVENT_STATE_SAVED ? "saved" : "deleted", ev->state_id,
                       ev->label, ev->creator[0] ? ev->creator : "?",
                       ev->parent_id[0] ? ev->parent_id : "-");
    default:
        return 0;
    }
}

/* {"event": @name, @k1: @v1, @k2: @v2} (no @k2 when NULL). */
static json_object *small_event(const char *name, const char *k1, json_object *v1, const char *k2,
                                json_object *v2)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "event", json_object_new_string(name));
    json_object_object_add(o, k1, v1);
    if (k2)
        json_object_object_add(o, k2, v2);
    return o;
}

/* 1 if a restore's follow-ups included a successful hostinfo. */
static int hostinfo_result(const struct vmstate_event *ev)
{
    for (size_t i = 0; i < ev->n_results; i++)
        if (!strcmp(ev->results[i].operation, "hostinfo") && ev->results[i].status == 0)
            return 1;
    return 0;
}

static void add_hostinfo_json(json_object *o, const struct vmstate_event *ev)
{
    static const struct {
        const char *key;
        size_t offset;
    } u64s[] = {
#define U64(k) {#k, offsetof(struct vmstate_event, k)}
        U64(free_bytes), U64(mem_bytes),       U64(host_mem_total), U64(host_mem_available),
        U64(host_cpus),  U64(host_load_milli), U64(vcpus),          U64(mem_boot),
        U64(mem_min),    U64(mem_max),
#undef U64
    };
    json_object *q = json_object_new_array();

    for (size_t i = 0; i < sizeof(u64s) / sizeof(u64s[0]); i++)
        json_object_object_add(
            o, u64s[i].key,
            json_object_new_uint64(
                *(const uint64_t *)(const void *)((const char *)ev + u64s[i].offset)));
    json_object_object_add(o, "hostname", json_object_new_string(ev->hostname));
    json_object_object_add(o, "bridge_version", json_object_new_string(ev->bridge_version));
    json_object_object_add(o, "hypervisor_version", json_object_new_string(ev->hypervisor_version));
    json_object_object_add(o, "ops", json_object_new_string(ev->ops));
    for (size_t i = 0; i < ev->n_quotas; i++) {
        json_object *e = json_object_new_object();
        json_object_object_add(e, "name", json_object_new_string(ev->quotas[i].name));
        json_object_object_add(e, "limit", json_object_new_uint64(ev->quotas[i].limit));
        json_object_object_add(e, "used", json_object_new_uint64(ev->quotas[i].used));
        json_object_array_add(q, e);
    }
    json_object_object_add(o, "quotas", q);
}

static json_object *event_json(const struct vmstate_event *ev)
{
    json_object *o;

    switch (ev->type) {
    case VMSTATE_EVENT_RESTORED:
        return small_event("restored", "state_id", json_object_new_string(ev->state_id), "epoch",
                           json_object_new_uint64(ev->epoch));
    case VMSTATE_EVENT_BRIDGE:
        return small_event("bridge", "connected", json_object_new_boolean(ev->bridge_connected),
                           NULL, NULL);
    case VMSTATE_EVENT_PREPARE_SAVE:
        return small_event("prepare-save", "request_id", json_object_new_string(ev->request_id),
                           "label", json_object_new_string(ev->label));
    case VMSTATE_EVENT_CLOCK_CORRECTED:
        return small_event("clock-corrected", "correction_ns",
                           json_object_new_int64(ev->clock_correction_ns), "reason",
                           json_object_new_string(ev->reason));
    case VMSTATE_EVENT_NOTICE:
        return small_event("notice", "reason", json_object_new_string(ev->reason), "message",
                           json_object_new_string(ev->message));
    case VMSTATE_EVENT_STATE_SAVED:
    case VMSTATE_EVENT_STATE_DELETED:
        o = small_event(ev->type == VMSTATE_EVENT_STATE_SAVED ? "state-saved" : "state-deleted",
                        "state_id", json_object_new_string(ev->state_id), "label",
                        json_object_new_string(ev->label));
        json_object_object_add(o, "creator", json_object_new_string(ev->creator));
        json_object_object_add(o, "parent_id", json_object_new_string(ev->parent_id));
        json_object_object_add(o, "epoch", json_object_new_uint64(ev->epoch));
        return o;
    default:
        break;
    }
    o = json_object_new_object();
    json_object_object_add(o, "event", json_object_new_string("completed"));
    json_object_object_add(o, "request_id", json_object_new_string(ev->request_id));
    json_object_object_add(o, "operation", json_object_new_string(ev->operation));
    json_object_object_add(o, "status", json_object_new_int((int)ev->status));
    json_object_object_add(o, "status_name",
                           json_object_new_string(vmstate_status_name(ev->status)));
    json_object_object_add(o, "message", json_object_new_string(ev->message));
    json_object_object_add(o, "state_id", json_object_new_string(ev->state_id));
    json_object_object_add(o, "label", json_object_new_string(ev->label));
    json_object_object_add(o, "app_id", json_object_new_string(ev->app_id));
    if (printable(ev->app_data, ev->app_data_len)) {
        json_object_object_add(
            o, "app_data",
            json_object_new_string_len((const char *)ev->app_data, (int)ev->app_data_len));
    } else {
        char *hex = malloc(ev->app_data_len * 2 + 1);
        if (hex) {
            for (size_t i = 0; i < ev->app_data_len; i++)
                snprintf(hex + 2 * i, 3, "%02x", ev->app_data[i]);
            hex[ev->app_data_len * 2] = '\0';
            json_object_object_add(o, "app_data_hex", json_object_new_string(hex));
            free(hex);
        }
    }
    json_object_object_add(o, "epoch", json_object_new_uint64(ev->epoch));
    if (ev->reason[0])
        json_object_object_add(o, "reason", json_object_new_string(ev->reason));
    if (ev->parent_id[0])
        json_object_object_add(o, "parent_id", json_object_new_string(ev->parent_id));
    if (!strcmp(ev->operation, "list")) {
        json_object *arr = json_object_new_array();
        for (size_t i = 0; i < ev->n_states; i++) {
            json_object *s = json_object_new_object();
            json_object_object_add(s, "id", json_object_new_string(ev->states[i].id));
            json_object_object_add(s, "label", json_object_new_string(ev->states[i].label));
            json_object_object_add(s, "app_id", json_object_new_string(ev->states[i].app_id));
            json_object_object_add(s, "parent", json_object_new_string(ev->states[i].parent));
            json_object_object_add(s, "created", json_object_new_int64(ev->states[i].created));
            json_object_array_add(arr, s);
        }
        json_object_object_add(o, "states", arr);
    }
    if (ev->creator[0])
        json_object_object_add(o, "creator", json_object_new_string(ev->creator));
    if (!strcmp(ev->operation, "hostinfo") || hostinfo_result(ev))
        add_hostinfo_json(o, ev);
    if (!strcmp(ev->operation, "set-memory") || ev->bytes) {
        json_object_object_add(o, "bytes", json_object_new_uint64(ev->bytes));
        json_object_object_add(o, "mem_bytes", json_object_new_uint64(ev->mem_bytes));
        if (ev->mode[0])
            json_object_object_add(o, "mode", json_object_new_string(ev->mode));
    }
    if (ev->n_results) {
        json_object *arr = json_object_new_array();
        for (size_t i = 0; i < ev->n_results; i++) {
            json_object *r = json_object_new_object();
            json_object_object_add(r, "operation",
                                   json_object_new_string(ev->results[i].operation));
            json_object_object_add(r, "status", json_object_new_int((int)ev->results[i].status));
            json_object_object_add(r, "message", json_object_new_string(ev->results[i].message));
            json_object_array_add(arr, r);
        }
        json_object_object_add(o, "results", arr);
    }
    return o;
}

static int list_as_tree; /* --tree: list draws states under their parents */

static int has_state(const struct vmstate_event *ev, const char *id)
{
    for (size_t i = 0; i < ev->n_states; i++)
        if (!strcmp(ev->states[i].id, id))
            return 1;
    return 0;
}

/* The children of @parent ("" for the roots: no parent, or one not in the list), with
 * @prefix drawn before each; @depth stops a (hostile) cycle of parents. */
static void print_tree(const struct vmstate_event *ev, const char *parent, const char *prefix,
                       size_t depth)
{
    size_t last = SIZE_MAX;
    char when[32], sub[512];

    if (depth > ev->n_states)
        return;
    for (size_t i = 0; i < ev->n_states; i++) {
        const struct vmstate_state *st = &ev->states[i];
        if (parent[0] ? !strcmp(st->parent, parent) : !has_state(ev, st->parent))
            last = i;
    }
    for (size_t i = 0; last != SIZE_MAX && i <= last; i++) {
        const struct vmstate_state *st = &ev->states[i];
        if (parent[0] ? strcmp(st->parent, parent) : has_state(ev, st->parent))
            continue;
        put_time(when, sizeof(when), st->created);
        printf("  %s%s%s  %s  %s (%s)\n", prefix, i == last ? "└─ " : "├─ ", st->id, when,
               st->label, st->app_id);
        snprintf(sub, sizeof(sub), "%s%s", prefix, i == last ? "   " : "│  ");
        print_tree(ev, st->id, sub, depth + 1);
    }
}

static void print_event(const struct vmstate_event *ev, int json)
{
    if (json) {
        json_object *o = event_json(ev);
        puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
        json_object_put(o);
        fflush(stdout);
        return;
    }
    if (ev->type == VMSTATE_EVENT_RESTORED) {
        printf("restored: now running state %s (epoch %llu)\n",
               ev->state_id[0] ? ev->state_id : "?", (unsigned long long)ev->epoch);
    } else if (ev->type == VMSTATE_EVENT_BRIDGE) {
        printf("bridge %s\n", ev->bridge_connected ? "connected" : "disconnected");
    } else if (ev->type != VMSTATE_EVENT_COMPLETED) {
        print_info_line(stdout, ev);
    } else {
        printf("%s %s: %s%s%s\n", ev->operation, ev->request_id,
               ev->status ? vmstate_status_name(ev->status) : "ok", ev->message[0] ? ": " : "",
               ev->message);
        if (ev->state_id[0])
            printf("  state: %s%s%s\n", ev->state_id, ev->label[0] ? "  label: " : "", ev->label);
        if (ev->reason[0])
            printf("  reason: %s\n", ev->reason);
        if (ev->app_data_len && printable(ev->app_data, ev->app_data_len))
            printf("  app data: %.*s\n", (int)ev->app_data_len, (const char *)ev->app_data);
        else if (ev->app_data_len)
            printf("  app data: %zu bytes (binary)\n", ev->app_data_len);
        if (!strcmp(ev->operation, "list") && list_as_tree) {
            print_tree(ev, "", "", 0);
        } else if (!strcmp(ev->operation, "list")) {
            printf("  %-24s %-20s %-24s %-24s %s\n", "ID", "CREATED", "LABEL", "APP", "PARENT");
            for (size_t i = 0; i < ev->n_states; i++) {
                char when[32];
                put_time(when, sizeof(when), ev->states[i].created);
                printf("  %-24s %-20s %-24s %-24s %s\n", ev->states[i].id, when,
                       ev->states[i].label, ev->states[i].app_id, ev->states[i].parent);
            }
        }
        if (!strcmp(ev->operation, "hostinfo") || hostinfo_result(ev)) {
            printf("  host: %s  bridge: %s  memory: %llu bytes  free: %llu bytes\n", ev->hostname,
                   ev->bridge_version, (unsigned long long)ev->mem_bytes,
                   (unsigned long long)ev->free_bytes);
            if (ev->host_cpus)
                printf("  host: %llu CPUs, load %.2f, memory %llu bytes (%llu available)\n",
                       (unsigned long long)ev->host_cpus, (double)ev->host_load_milli / 1000.0,
                       (unsigned long long)ev->host_mem_total,
                       (unsigned long long)ev->host_mem_available);
            if (ev->vcpus)
                printf("  vm: %llu vCPUs, memory boot %llu min %llu max %llu bytes\n",
                       (unsigned long long)ev->vcpus, (unsigned long long)ev->mem_boot,
                       (unsigned long long)ev->mem_min, (unsigned long long)ev->mem_max);
            if (ev->hypervisor_version[0])
                printf("  hypervisor: %s\n", ev->hypervisor_version);
            if (ev->ops[0])
                printf("  allowed operations: %s\n", ev->ops);
            for (size_t i = 0; i < ev->n_quotas; i++) {
                const struct vmstate_quota *q = &ev->quotas[i];
                if (!strncmp(q->name, "tier:", 5)) /* a managed VM's tier: capacity, reserved */
                    printf("  tier %s: %llu bytes free of %llu\n", q->name + 5,
                           (unsigned long long)(q->limit > q->used ? q->limit - q->used : 0),
                           (unsigned long long)q->limit);
                else
                    printf("  quota %s: %llu used of %llu%s\n", q->name,
                           (unsigned long long)q->used, (unsigned long long)q->limit,
                           q->limit ? "" : " (no limit)");
            }
        }
        if ((!strcmp(ev->operation, "set-memory") && ev->status == 0) || ev->bytes)
            printf("  memory: %llu bytes (target %llu bytes%s%s)\n",
                   (unsigned long long)ev->mem_bytes, (unsigned long long)ev->bytes,
                   ev->mode[0] ? ", mode " : "", ev->mode);
        if (ev->creator[0])
            printf("  created by: %s\n", ev->creator);
        for (size_t i = 0; i < ev->n_results; i++)
            printf("  follow-up %s: %s%s%s\n", ev->results[i].operation,
                   ev->results[i].status ? vmstate_status_name(ev->results[i].status) : "ok",
                   ev->results[i].message[0] ? ": " : "", ev->results[i].message);
    }
    fflush(stdout);
}

/* ---- inputs ---------------------------------------------------------------- */

static int read_file(const char *path, char *buf, size_t cap, size_t *len)
{
    FILE *f = fopen(path, "rb");
    size_t n;

    if (!f)
        return -1;
    n = fread(buf, 1, cap, f);
    if (n == cap && fgetc(f) != EOF) {
        fclose(f);
        errno = EFBIG;
        return -1;
    }
    fclose(f);
    *len = n;
    return 0;
}

static int parse_bytes(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long n;

    errno = 0;
    n = strtoull(s, &end, 10);
    if (errno || end == s || s[0] == '-')
        return -1;
    switch (*end) {
    case 'K':
    case 'k':
        n <<= 10;
        end++;
        break;
    case 'M':
    case 'm':
        n <<= 20;
        end++;
        break;
    case 'G':
    case 'g':
        n <<= 30;
        end++;
        break;
    default:
        break;
    }
    if (*end || n == 0)
        return -1;
    *out = n;
    return 0;
}

static int set_credentials(vmstate *v, const struct opts *o)
{
    char secret[512] = "";
    const char *principal = o->principal ? o->principal : getenv("VMSTATE_PRINCIPAL");
    size_t len = 0;
    int rc;

    if (!principal) {
        fprintf(stderr, "vmstatectl: no principal: use --principal or VMSTATE_PRINCIPAL\n");
        return -1;
    }
    if (o->secret_file) {
        if (read_file(o->secret_file, secret, sizeof(secret) - 1, &len) < 0) {
            fprintf(stderr, "vmstatectl: %s: %s\n", o->secret_file, strerror(errno));
            return -1;
        }
        secret[len] = '\0';
        secret[strcspn(secret, "\r\n")] = '\0';
    } else if (getenv("VMSTATE_SECRET")) {
        snprintf(secret, sizeof(secret), "%s", getenv("VMSTATE_SECRET"));
    } else {
        fprintf(stderr, "vmstatectl: no secret: use --secret-file or VMSTATE_SECRET\n");
        return -1;
    }
    rc = vmstate_set_credentials(v, principal, secret);
    explicit_bzero(secret, sizeof(secret));
    if (rc < 0) {
        fprintf(stderr, "vmstatectl: credentials: %s\n", vmstate_last_error(v));
        return -1;
    }
    return 0;
}

/* The message and exit status for a request @what that could not be made: every "not
 * there" case says which part is missing and what to do. */
static int cannot(vmstate *v, const char *what, int rc)
{
    switch (rc) {
    case VMSTATE_E_NO_HELPER:
        fprintf(stderr,
                "vmstatectl: %s: vmstate-helperd is not running (nobody owns org.vmstate.Helper1 "
                "on the bus).\n"
                "  It starts when this VM has the vmstate ports (virtio-serial "
                "org.vmstate.request.0 and org.vmstate.event.0):\n"
                "  check `systemctl status vmstate-helperd` (or `/etc/init.d/vmstate-helperd "
                "status`) and ask the host's admin to add the ports.\n",
                what);
        return EXIT_NO_HELPER;
    case VMSTATE_E_UNAVAILABLE:
        fprintf(stderr,
                "vmstatectl: %s: the host bridge is unreachable (the ports are closed or "
                "vmstate-bridged is not running on the host),\n"
                "  and the helper does not queue requests (queue_when_disconnected = false). "
                "Ask the host's admin: `systemctl status vmstate-bridged`.\n",
                what);
        return EXIT_NO_BRIDGE;
    case VMSTATE_E_DISCONNECTED:
        fprintf(stderr, "vmstatectl: %s: the D-Bus connection was lost (dbus-daemon stopped?)\n",
                what);
        return EXIT_NO_BUS;
    default:
        fprintf(stderr, "vmstatectl: %s: %s\n", what, vmstate_last_error(v));
        return rc == VMSTATE_E_INVALID ? EXIT_USAGE : EXIT_REFUSED;
    }
}

/* list with the bridge away: do not wait for an answer that may never come; show the helper's
 * last known catalogue. Other commands are held by the helper: say so. Returns -1 when the
 * command should go on (bridge connected, or a request the helper queues). */
static int bridge_away(vmstate *v, const char *cmd, const struct opts *o)
{
    struct vmstate_event *ev = NULL;
    int rc = vmstate_bridge_connected(v);

    if (rc == 1)
        return -1;
    if (rc < 0)
        return cannot(v, cmd, rc);
    fprintf(stderr, "vmstatectl: the host bridge is not connected (the ports are closed or "
                    "vmstate-bridged is not running on the host)\n");
    if (strcmp(cmd, "list")) {
        fprintf(stderr, "vmstatectl: the helper holds %s until the bridge is back%s\n", cmd,
                o->wait || !strcmp(cmd, "hostinfo") ? "; waiting (--timeout)" : "");
        return -1;
    }
    rc = vmstate_cached_list(v, &ev);
    if (rc < 0)
        return cannot(v, cmd, rc);
    fprintf(stderr, "vmstatectl: showing the helper's last known list; it may be stale\n");
    print_event(ev, o->json);
    vmstate_event_free(ev);
    return EXIT_NO_BRIDGE;
}

/* ---- waiting ---------------------------------------------------------------- */

struct watch_ctx {
    int json;
    int progress; /* a progress line is on the terminal */
};

static void on_event(vmstate *v, const struct vmstate_event *ev, void *userdata)
{
    struct watch_ctx *w = userdata;

    (void)v;
    if (ev->type == VMSTATE_EVENT_COMPLETED)
        return; /* printed by the caller (wait) or by watch below */
    if (w->progress) {
        fputs("\r\033[K", stderr);
        w->progress = 0;
    }
    if (w->json)
        print_event(ev, 1);
    else if (ev->type == VMSTATE_EVENT_RESTORED)
        fputs("vmstatectl: the VM was restored\n", stderr);
    else if (ev->type == VMSTATE_EVENT_BRIDGE)
        fprintf(stderr, "vmstatectl: bridge %s\n",
                ev->bridge_connected ? "connected" : "disconnected");
    else {
        fputs("vmstatectl: ", stderr);
        print_info_line(stderr, ev);
    }
}

static int follow(vmstate *v, const char *op, const char *rid, const struct opts *o,
                  struct watch_ctx *w)
{
    uint64_t start = (uint64_t)time(NULL);
    int tty = isatty(2) && !o->quiet && !o->json;
    struct vmstate_event *ev = NULL;
    int rc;

    if (!o->quiet && !o->json && !tty)
        fprintf(stderr, "vmstatectl: waiting for %s %s\n", op, rid);
    for (;;) {
        uint64_t elapsed = (uint64_t)time(NULL) - start;
        if (tty) {
            fprintf(stderr, "\r\033[Kwaiting for %s %.8s… %llus", op, rid,
                    (unsigned long long)elapsed);
            w->progress = 1;
        }
        if ((int)elapsed >= o->timeout_s) {
            rc = VMSTATE_E_TIMEOUT;
            break;
        }
        rc = vmstate_wait(v, rid, 1000, &ev); /* 1 s slices keep the progress line moving */
        if (rc != VMSTATE_E_TIMEOUT || interrupted)
            break;
    }
    if (w->progress)
        fputs("\r\033[K", stderr);
    w->progress = 0;
    if (rc == VMSTATE_E_TIMEOUT) {
        fprintf(stderr, "vmstatectl: no completion for %s within %d s (it may still complete)\n",
                rid, o->timeout_s);
        return EXIT_TIMEOUT;
    }
    if (rc < 0)
        return cannot(v, op, rc);
    print_event(ev, o->json);
    rc = ev->status == 0 ? EXIT_OK : EXIT_FAILED;
    vmstate_event_free(ev);
    return rc;
}

/* Print events (the callback set by vmstate_listen) until interrupted. */
static int watch(vmstate *v, const struct opts *o)
{
    if (!o->json)
        fprintf(stderr, "vmstatectl: watching events (Ctrl-C to stop)\n");
    while (!interrupted) {
        struct pollfd p = {.fd = vmstate_get_fd(v), .events = POLLIN};
        if (poll(&p, 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (vmstate_dispatch(v) < 0)
            return cannot(v, "watch", VMSTATE_E_DISCONNECTED);
    }
    return EXIT_OK;
}

/* Veto a save being prepared; needs no credentials. */
static int inhibit(vmstate *v, const char *request_id, const char *reason, const struct opts *o)
{
    int rc = vmstate_inhibit(v, request_id, reason);

    if (rc < 0)
        return cannot(v, "inhibit", rc);
    if (o->json)
        printf("{\"request_id\":\"%s\",\"inhibited\":true}\n", request_id);
    else if (!o->quiet)
        printf("inhibited save %s\n", request_id);
    return EXIT_OK;
}

static void print_event_cb(vmstate *v, const struct vmstate_event *ev, void *userdata)
{
    (void)v;
    print_event(ev, *(int *)userdata);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"wait", no_argument, NULL, 'w'},
                                             {"timeout", required_argument, NULL, 't'},
                                             {"json", no_argument, NULL, 'j'},
                                             {"quiet", no_argument, NULL, 'q'},
                                             {"app-id", required_argument, NULL, 'a'},
                                             {"principal", required_argument, NULL, 'p'},
                                             {"secret-file", required_argument, NULL, 'S'},
                                             {"data", required_argument, NULL, 'd'},
                                             {"data-file", required_argument, NULL, 'D'},
                                             {"address", required_argument, NULL, 'A'},
                                             {"then-set-memory", required_argument, NULL, 'M'},
                                             {"then-hostinfo", no_argument, NULL, 'H'},
                                             {"offline", no_argument, NULL, 'O'},
                                             {"help", no_argument, NULL, 'h'},
                                             {"version", no_argument, NULL, 'V'},
                                             {"tree", no_argument, NULL, 'T'},
                                             {NULL, 0, NULL, 0}};
    struct opts o = {.timeout_s = 600};
    struct watch_ctx w = {0};
    const char *cmd, *arg = NULL, *arg2 = NULL;
    char rid[VMSTATE_REQUEST_ID_LEN + 1];
    static char data[VMSTATE_APP_DATA_MAX];
    size_t data_len = 0;
    uint64_t bytes = 0, then_bytes = 0;
    int offline = 0;
    struct vmstate_followup followups[VMSTATE_FOLLOWUPS_MAX];
    size_t n_followups = 0;
    vmstate *v = NULL;
    int c, rc, needs_arg, must_wait = 0;
    struct sigaction sa = {.sa_handler = on_signal};

    while ((c = getopt_long(argc, argv, "wt:jqa:p:d:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 'w':
            o.wait = 1;
            break;
        case 't': {
            char *end;
            long t;
            errno = 0;
            t = strtol(optarg, &end, 10);
            o.timeout_s = errno || end == optarg || *end || t <= 0 || t > INT_MAX ? 0 : (int)t;
            if (o.timeout_s <= 0) {
                fprintf(stderr,
                        "vmstatectl: --timeout needs a positive number of seconds, not '%s'\n",
                        optarg);
                return EXIT_USAGE;
            }
            break;
        }
        case 'T':
            o.tree = 1;
            break;
        case 'j':
            o.json = 1;
            break;
        case 'q':
            o.quiet = 1;
            break;
        case 'a':
            o.app_id = optarg;
            break;
        case 'p':
            o.principal = optarg;
            break;
        case 'S':
            o.secret_file = optarg;
            break;
        case 'd':
            o.data = optarg;
            break;
        case 'D':
            o.data_file = optarg;
            break;
        case 'A':
            o.address = optarg;
            break;
        case 'O':
            offline = 1;
            break;
        case 'M':
            if (parse_bytes(optarg, &then_bytes) < 0 || n_followups >= VMSTATE_FOLLOWUPS_MAX) {
                fprintf(stderr, "vmstatectl: bad --then-set-memory size '%s'\n", optarg);
                return EXIT_USAGE;
            }
            followups[n_followups++] = (struct vmstate_followup){"set-memory", then_bytes};
            break;
        case 'H':
            if (n_followups >= VMSTATE_FOLLOWUPS_MAX) {
                fprintf(stderr, "vmstatectl: too many follow-ups\n");
                return EXIT_USAGE;
            }
            followups[n_followups++] = (struct vmstate_followup){"hostinfo", 0};
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        case 'V':
            printf("vmstatectl %s\n", PACKAGE_VERSION);
            return EXIT_OK;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    cmd = argv[optind++];
    needs_arg = !strcmp(cmd, "save") || !strcmp(cmd, "restore") || !strcmp(cmd, "delete") ||
                !strcmp(cmd, "set-memory");
    if (!strcmp(cmd, "inhibit"))
        needs_arg = 2;
    if (needs_arg) {
        if (argc - optind < needs_arg) {
            fprintf(stderr, "vmstatectl: %s needs %s (see --help)\n", cmd,
                    needs_arg == 1 ? "an argument" : "REQUEST_ID and REASON");
            return EXIT_USAGE;
        }
        arg = argv[optind++];
        if (needs_arg == 2)
            arg2 = argv[optind++];
    } else if (strcmp(cmd, "list") && strcmp(cmd, "hostinfo") && strcmp(cmd, "watch") &&
               strcmp(cmd, "suspend")) {
        fprintf(stderr, "vmstatectl: unknown command '%s' (see --help)\n", cmd);
        return EXIT_USAGE;
    }
    if (optind < argc) {
        fprintf(stderr, "vmstatectl: unexpected argument '%s'\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (offline && strcmp(cmd, "set-memory") != 0) {
        fprintf(stderr, "vmstatectl: --offline goes with set-memory\n");
        return EXIT_USAGE;
    }
    if (n_followups && strcmp(cmd, "restore") != 0) {
        fprintf(stderr, "vmstatectl: --then-set-memory and --then-hostinfo go with restore\n");
        return EXIT_USAGE;
    }
    if (o.tree && strcmp(cmd, "list")) {
        fprintf(stderr, "vmstatectl: --tree is for list\n");
        return EXIT_USAGE;
    }
    list_as_tree = o.tree;
    if (!strcmp(cmd, "set-memory") && parse_bytes(arg, &bytes) < 0) {
        fprintf(stderr, "vmstatectl: bad size '%s' (e.g. 1073741824, 512M, 2G)\n", arg);
        return EXIT_USAGE;
    }
    if (o.data && o.data_file) {
        fprintf(stderr, "vmstatectl: --data and --data-file exclude each other\n");
        return EXIT_USAGE;
    }
    if (o.data) {
        data_len = strlen(o.data);
        if (data_len > sizeof(data)) {
            fprintf(stderr, "vmstatectl: --data is over %d bytes\n", VMSTATE_APP_DATA_MAX);
            return EXIT_USAGE;
        }
        memcpy(data, o.data, data_len);
    } else if (o.data_file && read_file(o.data_file, data, sizeof(data), &data_len) < 0) {
        fprintf(stderr, "vmstatectl: %s: %s\n", o.data_file, strerror(errno));
        return EXIT_USAGE;
    }
    if (!o.app_id)
        o.app_id = getenv("VMSTATE_APP_ID") ? getenv("VMSTATE_APP_ID") : "vmstatectl";
    if (!o.address)
        o.address = getenv("VMSTATE_BUS_ADDRESS");
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    rc = vmstate_open(o.address, o.app_id, &v);
    if (rc == VMSTATE_E_CONNECT) {
        fprintf(stderr,
                "vmstatectl: cannot connect to the D-Bus %sbus%s%s: is dbus-daemon running?\n"
                "  Start it (`systemctl start dbus`, or your init's dbus service) and try "
                "again.\n",
                o.address ? "" : "system ", o.address ? " at " : "", o.address ? o.address : "");
        return EXIT_NO_BUS;
    }
    if (rc < 0) {
        fprintf(stderr, "vmstatectl: %s%s\n", vmstate_strerror(rc),
                rc == VMSTATE_E_INVALID ? " (bad --app-id)" : "");
        return rc == VMSTATE_E_INVALID ? EXIT_USAGE : EXIT_REFUSED;
    }
    if (!strcmp(cmd, "watch")) {
        int json = o.json;
        rc = vmstate_listen(v, print_event_cb, &json);
        rc = rc < 0 ? cannot(v, "watch", rc) : watch(v, &o);
        goto out;
    }
    if (!strcmp(cmd, "inhibit")) {
        rc = inhibit(v, arg, arg2, &o);
        goto out;
    }
    if (set_credentials(v, &o) < 0) {
        rc = EXIT_USAGE;
        goto out;
    }
    w.json = o.json;
    if ((rc = bridge_away(v, cmd, &o)) >= 0)
        goto out;
    vmstate_listen(v, on_event, &w); /* errors surface with the request below */
    if (!strcmp(cmd, "save"))
        rc = vmstate_save(v, arg, data, data_len, rid);
    else if (!strcmp(cmd, "restore") && n_followups)
        rc = vmstate_restore_with(v, arg, data, data_len, followups, n_followups, rid);
    else if (!strcmp(cmd, "restore"))
        rc = vmstate_restore(v, arg, data, data_len, rid);
    else if (!strcmp(cmd, "delete"))
        rc = vmstate_delete(v, arg, rid);
    else if (!strcmp(cmd, "set-memory") && offline)
        rc = vmstate_set_memory_offline(v, bytes, rid);
    else if (!strcmp(cmd, "set-memory"))
        rc = vmstate_set_memory(v, bytes, rid);
    else if (!strcmp(cmd, "list"))
        rc = vmstate_list(v, rid), must_wait = 1;
    else if (!strcmp(cmd, "suspend"))
        rc = vmstate_suspend(v, rid);
    else
        rc = vmstate_hostinfo(v, rid), must_wait = 1;
    if (rc < 0) {
        rc = cannot(v, cmd, rc);
        goto out;
    }
    if (o.wait || must_wait) {
        rc = follow(v, cmd, rid, &o, &w);
    } else {
        if (o.json)
            printf("{\"request_id\":\"%s\",\"operation\":\"%s\"}\n", rid, cmd);
        else
            printf("%s\n", rid);
        rc = EXIT_QUEUED; /* accepted, not done: --wait tells how it ends */
    }
out:
    vmstate_close(v);
    return rc;
}
