/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vmstate.c — libvmstate, see vmstate.h.
 *
 * One private libdbus connection per handle. The pollable fd is an epoll
 * set holding the bus socket and an eventfd: libdbus may read signals into
 * its queue during a blocking method call, when the socket is no longer
 * readable, so the library raises the eventfd whenever messages wait.
 */
#include "config.h"

#include <dbus/dbus.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "vms-dbus.h"
#include "vms-marshal.h"
#include "vms-proto.h"
#include "vmstate.h"

#define CALL_TIMEOUT_MS 5000

struct event_priv {
    struct vmstate_event pub; /* first: vmstate_event_free() casts back */
    DBusMessage *msg;         /* strings point into it */
    char *raw;                /* or into these bytes (Completed; dbus_free) */
    struct vmstate_state *states;
    struct vmstate_followup_result results[VMSTATE_FOLLOWUPS_MAX];
    struct vmstate_quota quotas[8];
};

#define N_MATCH_RULES 3 /* see add_matches */

struct vmstate {
    DBusConnection *bus;
    int epfd, evfd, bus_fd;
    char app_id[VMS_STR_MAX + 1];
    char principal[VMS_STR_MAX + 1];
    char secret[VMS_STR_MAX + 1];
    int have_credentials;
    int registered;
    char helper_owner[VMS_STR_MAX + 1]; /* unique name of the helper we registered with */
    vmstate_event_fn fn;
    void *userdata;
    /* vmstate_wait */
    const char *waiting_for;
    struct event_priv *waited;
    int delivered;                              /* events delivered in the current dispatch */
    char inhibited[VMSTATE_REQUEST_ID_LEN + 1]; /* the save this handle vetoed last */
    /* the bus's answers to the match rules, read by the first call (see add_matches) */
    DBusPendingCall *match_pc[N_MATCH_RULES];
    int rules_refused; /* every call fails: the handle would miss signals */
    char error[512];
};

static const char *const error_text[] = {
    [0] = "success",
    [1] = "invalid argument",
    [2] = "out of memory",
    [3] = "cannot connect to the D-Bus bus",
    [4] = "vmstate-helperd is not running",
    [5] = "permission denied",
    [6] = "the host bridge is unreachable",
    [7] = "too many requests waiting; retry later",
    [8] = "timed out",
    [9] = "the bus connection was lost",
    [10] = "no credentials set",
    [11] = "unexpected answer from the helper",
    [12] = "the helper reported an error",
    [13] = "the helper's listener table is full",
    [14] = "no such request (or too late for it)",
};

const char *vmstate_strerror(int code)
{
    int i = -code;
    if (i < 0 || i >= (int)(sizeof(error_text) / sizeof(*error_text)))
        return "unknown error";
    return error_text[i];
}

const char *vmstate_status_name(uint32_t status)
{
    return vms_status_name((enum vms_status)status);
}

static int fail(vmstate *v, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(vmstate *v, int code, const char *fmt, ...)
{
    va_list ap;

    if (v) {
        va_start(ap, fmt);
        vsnprintf(v->error, sizeof(v->error), fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *vmstate_last_error(const vmstate *v)
{
    return v ? v->error : "no handle";
}

/* Raise the eventfd when libdbus holds messages the socket will not announce. */
static void update_wakeup(vmstate *v)
{
    if (dbus_connection_get_dispatch_status(v->bus) == DBUS_DISPATCH_DATA_REMAINS) {
        uint64_t one = 1;
        if (write(v->evfd, &one, sizeof(one)) < 0) {
            /* counter saturated: it is readable anyway */
        }
    }
}

/* ---- events ------------------------------------------------------------ */

static void event_free_priv(struct event_priv *e)
{
    if (!e)
        return;
    if (e->msg)
        dbus_message_unref(e->msg);
    dbus_free(e->raw);
    free(e->states);
    free(e);
}

void vmstate_event_free(struct vmstate_event *ev)
{
    event_free_priv((struct event_priv *)ev);
}

/* A new event of @type holding a reference to @m (may be NULL); strings are "". */
static struct event_priv *event_new(enum vmstate_event_type type, DBusMessage *m)
{
    struct event_priv *e = calloc(1, sizeof(*e));

    if (!e)
        return NULL;
    e->pub.type = type;
    e->pub.request_id = e->pub.operation = e->pub.message = e->pub.state_id = e->pub.label =
        e->pub.app_id = e->pub.reason = e->pub.parent_id = e->pub.hostname = e->pub.bridge_version =
            e->pub.creator = e->pub.hypervisor_version = e->pub.ops = e->pub.mode = "";
    if (m)
        e->msg = dbus_message_ref(m);
    return e;
}

/*
 * Completed is read from its bytes (dbus_message_marshal: libdbus validated them when they
 * arrived) with common/'s bounded reader: through libdbus's iterators, its ten arguments and
 * the details cost each app 45 k instructions per request (callgrind, bench/RESULTS.md §19).
 * The event keeps the bytes; its strings point into them.
 */

/* details["states"] a(ssssx); an allocation that fails leaves the list short. */
static int read_states(struct vms_rbuf *r, struct event_priv *e)
{
    size_t n = 0, cap = 0, end, len;

    if (vms_rb_array(r, 8, &end) < 0)
        return -1;
    while (r->pos < end) {
        struct vmstate_state *s, scratch;
        uint64_t created;
        if (n == cap) {
            struct vmstate_state *g = realloc(e->states, (cap ? cap * 2 : 8) * sizeof(*g));
            if (g) {
                e->states = g;
                cap = cap ? cap * 2 : 8;
            }
        }
        s = n < cap ? &e->states[n++] : &scratch;
        if (vms_rb_skip_to(r, 8, 0) < 0 || vms_rb_str(r, &s->id, &len) < 0 ||
            vms_rb_str(r, &s->label, &len) < 0 || vms_rb_str(r, &s->app_id, &len) < 0 ||
            vms_rb_str(r, &s->parent, &len) < 0 || vms_rb_u64(r, &created) < 0)
            return -1;
        s->created = (int64_t)created;
    }
    e->pub.states = e->states;
    e->pub.n_states = n;
    return 0;
}

/* details["results"] a(sus); entries beyond VMSTATE_FOLLOWUPS_MAX are skipped. */
static int read_results(struct vms_rbuf *r, struct event_priv *e)
{
    size_t end, len;

    if (vms_rb_array(r, 8, &end) < 0)
        return -1;
    while (r->pos < end) {
        struct vmstate_followup_result scratch, *f = e->pub.n_results < VMSTATE_FOLLOWUPS_MAX
                                                         ? &e->results[e->pub.n_results++]
                                                         : &scratch;
        if (vms_rb_skip_to(r, 8, 0) < 0 || vms_rb_str(r, &f->operation, &len) < 0 ||
            vms_rb_u32(r, &f->status) < 0 || vms_rb_str(r, &f->message, &len) < 0)
            return -1;
    }
    e->pub.results = e->results;
    return 0;
}

/* details["quotas"] a(stt); entries beyond the room for them are skipped. */
static int read_quotas(struct vms_rbuf *r, struct event_priv *e)
{
    size_t end, len, cap = sizeof(e->quotas) / sizeof(e->quotas[0]);

    if (vms_rb_array(r, 8, &end) < 0)
        return -1;
    while (r->pos < end) {
        struct vmstate_quota scratch,
            *q = e->pub.n_quotas < cap ? &e->quotas[e->pub.n_quotas++] : &scratch;
        if (vms_rb_skip_to(r, 8, 0) < 0 || vms_rb_str(r, &q->name, &len) < 0 ||
            vms_rb_u64(r, &q->limit) < 0 || vms_rb_u64(r, &q->used) < 0)
            return -1;
    }
    e->pub.quotas = e->quotas;
    return 0;
}

/* The detail @key of type "s" */
static void detail_string(struct event_priv *e, const char *key, const char *s)
{
    static const struct {
        const char *key;
        size_t offset;
    } strs[] = {
#define STR(k) {#k, offsetof(struct vmstate_event, k)}
        STR(parent_id),          STR(reason), STR(hostname), STR(bridge_version), STR(creator),
        STR(hypervisor_version), STR(ops),    STR(mode),
#undef STR
    };

    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        if (!strcmp(key, strs[i].key))
            *(const char **)(void *)((char *)&e->pub + strs[i].offset) = s;
}

/* The detail @key of type "t" */
static void detail_u64(struct event_priv *e, const char *key, uint64_t x)
{
    static const struct {
        const char *key;
        size_t offset;
    } u64s[] = {
#define U64(k) {#k, offsetof(struct vmstate_event, k)}
        U64(bytes),
        U64(free_bytes),
        U64(mem_bytes),
        U64(host_mem_total),
        U64(host_mem_available),
        U64(host_cpus),
        U64(host_load_milli),
        U64(vcpus),
        U64(mem_boot),
        U64(mem_min),
        U64(mem_max),
#undef U64
    };

    for (size_t i = 0; i < sizeof(u64s) / sizeof(u64s[0]); i++)
        if (!strcmp(key, u64s[i].key))
            *(uint64_t *)(void *)((char *)&e->pub + u64s[i].offset) = x;
}

/* The details a{sv}: what this library knows is taken, the rest (a newer helper's) skipped. */
static int read_details(struct vms_rbuf *r, struct event_priv *e)
{
    size_t end;

    if (vms_rb_array(r, 8, &end) < 0)
        return -1;
    while (r->pos < end) {
        const char *key, *sig, *s;
        size_t len;
        uint64_t x;
        int rc;

        if (vms_rb_skip_to(r, 8, 0) < 0 || vms_rb_str(r, &key, &len) < 0 || vms_rb_sig(r, &sig) < 0)
            return -1;
        if (!strcmp(sig, "s")) {
            rc = vms_rb_str(r, &s, &len);
            if (rc == 0)
                detail_string(e, key, s);
        } else if (!strcmp(sig, "t")) {
            rc = vms_rb_u64(r, &x);
            if (rc == 0)
                detail_u64(e, key, x);
        } else if (!strcmp(key, "states") && !strcmp(sig, "a(ssssx)")) {
            rc = read_states(r, e);
        } else if (!strcmp(key, "results") && !strcmp(sig, "a(sus)")) {
            rc = read_results(r, e);
        } else if (!strcmp(key, "quotas") && !strcmp(sig, "a(stt)")) {
            rc = read_quotas(r, e);
        } else {
            rc = vms_rb_skip_value(r, &sig);
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Parse a Completed signal; NULL when malformed or out of memory. */
static struct event_priv *parse_completed(DBusMessage *m)
{
    struct event_priv *e;
    struct vms_rbuf r;
    char *raw = NULL;
    int raw_len = 0;
    size_t len, end;

    if (!dbus_message_has_signature(m, "ssussssayta{sv}") ||
        !dbus_message_marshal(m, &raw, &raw_len))
        return NULL;
    e = event_new(VMSTATE_EVENT_COMPLETED, NULL);
    if (!e) {
        dbus_free(raw);
        return NULL;
    }
    e->raw = raw;
    if (vms_rb_body((const uint8_t *)raw, (size_t)raw_len, &r) < 0 ||
        vms_rb_str(&r, &e->pub.request_id, &len) < 0 ||
        vms_rb_str(&r, &e->pub.operation, &len) < 0 || vms_rb_u32(&r, &e->pub.status) < 0 ||
        vms_rb_str(&r, &e->pub.message, &len) < 0 || vms_rb_str(&r, &e->pub.state_id, &len) < 0 ||
        vms_rb_str(&r, &e->pub.label, &len) < 0 || vms_rb_str(&r, &e->pub.app_id, &len) < 0 ||
        vms_rb_array(&r, 1, &end) < 0)
        goto bad;
    e->pub.app_data = r.p + r.pos;
    e->pub.app_data_len = end - r.pos;
    r.pos = end;
    if (vms_rb_u64(&r, &e->pub.epoch) < 0 || read_details(&r, e) < 0)
        goto bad;
    return e;
bad:
    event_free_priv(e);
    return NULL;
}

/*
 * Parse a signal of the helper's interface; NULL when unknown, malformed or
 * out of memory. The signature is checked first, so the reads cannot fail.
 */
static struct event_priv *parse_helper_signal(DBusMessage *m)
{
    struct event_priv *e = NULL;
    dbus_uint64_t epoch;
    dbus_int64_t ns;
    double seconds;

    if (dbus_message_is_signal(m, VMS_DBUS_IFACE, "Completed"))
        return parse_completed(m);
    if (dbus_message_is_signal(m, VMS_DBUS_BROADCAST_IFACE, "Restored") &&
        dbus_message_has_signature(m, "st") && (e = event_new(VMSTATE_EVENT_RESTORED, m))) {
        dbus_message_get_args(m, NULL, DBUS_TYPE_STRING, &e->pub.state_id, DBUS_TYPE_UINT64, &epoch,
                              DBUS_TYPE_INVALID);
        e->pub.epoch = epoch;
    } else if (dbus_message_is_signal(m, VMS_DBUS_BROADCAST_IFACE, "PrepareSave") &&
               dbus_message_has_signature(m, "ss") &&
               (e = event_new(VMSTATE_EVENT_PREPARE_SAVE, m))) {
        dbus_message_get_args(m, NULL, DBUS_TYPE_STRING, &e->pub.request_id, DBUS_TYPE_STRING,
                              &e->pub.label, DBUS_TYPE_INVALID);
        if (!vms_valid_request_id(e->pub.request_id)) {
            event_free_priv(e);
            e = NULL;
        }
    } else if (dbus_message_is_signal(m, VMS_DBUS_BROADCAST_IFACE, "ClockCorrected") &&
               dbus_message_has_signature(m, "dxs") &&
               (e = event_new(VMSTATE_EVENT_CLOCK_CORRECTED, m))) {
        dbus_message_get_args(m, NULL, DBUS_TYPE_DOUBLE, &seconds, DBUS_TYPE_INT64, &ns,
                              DBUS_TYPE_STRING, &e->pub.reason, DBUS_TYPE_INVALID);
        e->pub.clock_correction_ns = ns;
    } else if ((dbus_message_is_signal(m, VMS_DBUS_IFACE, "StateSaved") ||
                dbus_message_is_signal(m, VMS_DBUS_IFACE, "StateDeleted")) &&
               dbus_message_has_signature(m, "sssst") &&
               (e = event_new(dbus_message_is_signal(m, VMS_DBUS_IFACE, "StateSaved")
                                  ? VMSTATE_EVENT_STATE_SAVED
                                  : VMSTATE_EVENT_STATE_DELETED,
                              m))) {
        dbus_message_get_args(m, NULL, DBUS_TYPE_STRING, &e->pub.state_id, DBUS_TYPE_STRING,
                              &e->pub.label, DBUS_TYPE_STRING, &e->pub.creator, DBUS_TYPE_STRING,
                              &e->pub.parent_id, DBUS_TYPE_UINT64, &epoch, DBUS_TYPE_INVALID);
        e->pub.epoch = epoch;
    } else if (dbus_message_is_signal(m, VMS_DBUS_BROADCAST_IFACE, "Notice") &&
               dbus_message_has_signature(m, "ss") && (e = event_new(VMSTATE_EVENT_NOTICE, m))) {
        dbus_message_get_args(m, NULL, DBUS_TYPE_STRING, &e->pub.reason, DBUS_TYPE_STRING,
                              &e->pub.message, DBUS_TYPE_INVALID);
    }
    return e;
}

static void send_async(vmstate *v, const char *method, const char *arg);

static void deliver(vmstate *v, struct event_priv *e)
{
    v->delivered++;
    if (v->fn)
        v->fn(v, &e->pub, v->userdata);
    /* the app had its chance to flush or veto: tell the helper not to wait for us */
    if (e->pub.type == VMSTATE_EVENT_PREPARE_SAVE && strcmp(v->inhibited, e->pub.request_id))
        send_async(v, "Proceed", e->pub.request_id);
    if (v->waiting_for && !v->waited && e->pub.type == VMSTATE_EVENT_COMPLETED &&
        !strcmp(e->pub.request_id, v->waiting_for)) {
        v->waited = e; /* handed to vmstate_wait's caller */
        return;
    }
    event_free_priv(e);
}

static void register_async(vmstate *v);

static DBusHandlerResult on_filter(DBusConnection *c, DBusMessage *m, void *data)
{
    vmstate *v = data;
    const char *sender = dbus_message_get_sender(m);

    (void)c;
    if (dbus_message_get_type(m) != DBUS_MESSAGE_TYPE_SIGNAL)
        return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
    if (dbus_message_is_signal(m, DBUS_INTERFACE_DBUS, "NameOwnerChanged")) {
        const char *name, *old_owner, *new_owner;
        if (dbus_message_get_args(m, NULL, DBUS_TYPE_STRING, &name, DBUS_TYPE_STRING, &old_owner,
                                  DBUS_TYPE_STRING, &new_owner, DBUS_TYPE_INVALID) &&
            !strcmp(name, VMS_DBUS_NAME)) {
            snprintf(v->helper_owner, sizeof(v->helper_owner), "%s", new_owner);
            if (new_owner[0] && v->registered)
                register_async(v); /* the helper restarted: register again */
        }
        return DBUS_HANDLER_RESULT_HANDLED;
    }
    /* Only the helper's signals; a unicast Completed from anyone else is ignored. */
    if (!sender || !v->helper_owner[0] || strcmp(sender, v->helper_owner) != 0)
        return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
    if (dbus_message_has_interface(m, VMS_DBUS_IFACE) ||
        dbus_message_has_interface(m, VMS_DBUS_BROADCAST_IFACE)) {
        struct event_priv *e = parse_helper_signal(m);
        if (e)
            deliver(v, e);
        return DBUS_HANDLER_RESULT_HANDLED;
    }
    if (dbus_message_is_signal(m, DBUS_INTERFACE_PROPERTIES, "PropertiesChanged")) {
        DBusMessageIter it, dict;
        const char *iface;
        if (!dbus_message_has_signature(m, "sa{sv}as"))
            return DBUS_HANDLER_RESULT_HANDLED;
        dbus_message_iter_init(m, &it);
        dbus_message_iter_get_basic(&it, &iface);
        dbus_message_iter_next(&it);
        dbus_message_iter_recurse(&it, &dict);
        while (dbus_message_iter_get_arg_type(&dict) == DBUS_TYPE_DICT_ENTRY) {
            DBusMessageIter ent, var;
            const char *key;
            dbus_message_iter_recurse(&dict, &ent);
            dbus_message_iter_get_basic(&ent, &key);
            dbus_message_iter_next(&ent);
            dbus_message_iter_recurse(&ent, &var);
            if (!strcmp(key, "BridgeConnected") &&
                dbus_message_iter_get_arg_type(&var) == DBUS_TYPE_BOOLEAN) {
                dbus_bool_t b;
                struct event_priv *e = event_new(VMSTATE_EVENT_BRIDGE, NULL);
                dbus_message_iter_get_basic(&var, &b);
                if (e) {
                    e->pub.bridge_connected = b ? 1 : 0;
                    deliver(v, e);
                }
            }
            dbus_message_iter_next(&dict);
        }
        return DBUS_HANDLER_RESULT_HANDLED;
    }
    return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
}

/* ---- open/close ---------------------------------------------------------- */

/*
 * The match rules of a handle, sent at once; their answers are read by the handle's first
 * call (collect_matches), which waits anyway: opening and registering a handle then waits
 * for the bus as often as the registration floor does (Hello, one call), not once more
 * (bench-tcg, bench-native). The bus takes a connection's messages in order, so the rules
 * are in place before the helper sees that call. dbus-daemon tests every rule of every
 * connection against each signal in the rule's bucket (by interface; rules without one
 * against all), so with 1000 listening handles each rule in the bucket of the helper's
 * unicast Completed costs each of its 1000 signals 1000 tests (bench-native: +50 ms of
 * dbus-daemon CPU per fan-out for a rule naming a sender, +5-10 ms for a path-only rule).
 * Hence every rule names an interface that no unicast signal uses: NameOwnerChanged, the
 * helper's broadcasts (their own interface, org.vmstate.Helper1.Broadcast) and
 * PropertiesChanged. Completed, StateSaved and StateDeleted reach us without a rule (a
 * unicast is delivered to its destination); on_filter drops signals from anyone but the
 * helper's unique name.
 */

static int add_matches(vmstate *v)
{
    static const char *const rules[N_MATCH_RULES] = {
        "type='signal',sender='" DBUS_SERVICE_DBUS "',interface='" DBUS_INTERFACE_DBUS
        "',member='NameOwnerChanged',arg0='" VMS_DBUS_NAME "'",
        "type='signal',interface='" VMS_DBUS_BROADCAST_IFACE "',path='" VMS_DBUS_PATH "'",
        "type='signal',interface='" DBUS_INTERFACE_PROPERTIES "',member='PropertiesChanged',"
        "path='" VMS_DBUS_PATH "'"};

    for (int i = 0; i < N_MATCH_RULES; i++) {
        DBusMessage *m = dbus_message_new_method_call(DBUS_SERVICE_DBUS, DBUS_PATH_DBUS,
                                                      DBUS_INTERFACE_DBUS, "AddMatch");
        int ok = m && dbus_message_append_args(m, DBUS_TYPE_STRING, &rules[i], DBUS_TYPE_INVALID);

        if (ok && (!dbus_connection_send_with_reply(v->bus, m, &v->match_pc[i], CALL_TIMEOUT_MS) ||
                   !v->match_pc[i]))
            ok = -1;
        if (m)
            dbus_message_unref(m);
        if (ok < 0)
            return fail(v, VMSTATE_E_CONNECT, "cannot add the match rules: the bus is gone");
        if (!ok)
            return fail(v, VMSTATE_E_NO_MEMORY, "out of memory");
    }
    return 0;
}

/* Read the bus's answers to the match rules add_matches sent (at once: they came before the
 * reply the caller just waited for). 0, or VMSTATE_E_CONNECT with the first refusal in
 * v->error when @report, else -1. */
static int collect_matches(vmstate *v, int report)
{
    DBusError err;
    int rc = 0;

    dbus_error_init(&err);
    for (int i = 0; i < N_MATCH_RULES; i++) {
        DBusMessage *r;

        if (!v->match_pc[i])
            continue;
        dbus_pending_call_block(v->match_pc[i]);
        r = dbus_pending_call_steal_reply(v->match_pc[i]);
        dbus_pending_call_unref(v->match_pc[i]);
        v->match_pc[i] = NULL;
        if (!rc && (!r || dbus_set_error_from_message(&err, r))) {
            v->rules_refused = 1;
            rc = !report ? -1
                         : fail(v, VMSTATE_E_CONNECT, "cannot add the match rules: %s",
                                !r            ? "no reply from the bus"
                                : err.message ? err.message
                                              : err.name);
            dbus_error_free(&err);
        }
        if (r)
            dbus_message_unref(r);
    }
    return rc;
}

int vmstate_open(const char *bus_address, const char *app_id, vmstate **out)
{
    vmstate *v;
    DBusError err;
    struct epoll_event ev = {.events = EPOLLIN};
    int rc;

    if (!out)
        return VMSTATE_E_INVALID;
    *out = NULL;
    if (!app_id || (!vms_valid_id(app_id) && strcmp(app_id, "*") != 0))
        return VMSTATE_E_INVALID;
    v = calloc(1, sizeof(*v));
    if (!v)
        return VMSTATE_E_NO_MEMORY;
    v->epfd = v->evfd = v->bus_fd = -1;
    snprintf(v->app_id, sizeof(v->app_id), "%s", app_id);
    dbus_threads_init_default(); /* handles may live in different threads */
    dbus_error_init(&err);
    if (bus_address) {
        v->bus = dbus_connection_open_private(bus_address, &err);
        if (v->bus && !dbus_bus_register(v->bus, &err)) {
            dbus_connection_close(v->bus);
            dbus_connection_unref(v->bus);
            v->bus = NULL;
        }
    } else {
        v->bus = dbus_bus_get_private(DBUS_BUS_SYSTEM, &err);
    }
    if (!v->bus) {
        rc = VMSTATE_E_CONNECT;
        goto fail;
    }
    dbus_connection_set_exit_on_disconnect(v->bus, FALSE);
    if (!dbus_connection_add_filter(v->bus, on_filter, v, NULL)) {
        rc = VMSTATE_E_NO_MEMORY;
        goto fail;
    }
    v->epfd = epoll_create1(EPOLL_CLOEXEC);
    v->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (v->epfd < 0 || v->evfd < 0 || !dbus_connection_get_unix_fd(v->bus, &v->bus_fd) ||
        epoll_ctl(v->epfd, EPOLL_CTL_ADD, v->evfd, &ev) < 0 ||
        epoll_ctl(v->epfd, EPOLL_CTL_ADD, v->bus_fd, &ev) < 0) {
        rc = VMSTATE_E_NO_MEMORY;
        goto fail;
    }
    rc = add_matches(v);
    if (rc < 0)
        goto fail;
    *out = v;
    return 0;
fail:
    dbus_error_free(&err);
    vmstate_close(v);
    return rc;
}

void vmstate_close(vmstate *v)
{
    if (!v)
        return;
    if (v->bus) {
        if (v->registered && dbus_connection_get_is_connected(v->bus)) {
            send_async(v, "UnregisterListener", v->app_id);
            dbus_connection_flush(v->bus);
        }
        for (int i = 0; i < N_MATCH_RULES; i++)
            if (v->match_pc[i]) {
                dbus_pending_call_cancel(v->match_pc[i]);
                dbus_pending_call_unref(v->match_pc[i]);
            }
        dbus_connection_remove_filter(v->bus, on_filter, v);
        dbus_connection_close(v->bus);
        dbus_connection_unref(v->bus);
    }
    if (v->epfd >= 0)
        close(v->epfd);
    if (v->evfd >= 0)
        close(v->evfd);
    event_free_priv(v->waited);
    explicit_bzero(v->secret, sizeof(v->secret));
    free(v);
}

int vmstate_set_credentials(vmstate *v, const char *principal, const char *secret)
{
    if (!v)
        return VMSTATE_E_INVALID;
    if (!principal || !vms_valid_id(principal))
        return fail(v, VMSTATE_E_INVALID, "bad principal (1-255 of [A-Za-z0-9._:@-])");
    if (!secret || strnlen(secret, VMS_STR_MAX + 1) > VMS_STR_MAX)
        return fail(v, VMSTATE_E_INVALID, "secret missing or longer than 255 bytes");
    snprintf(v->principal, sizeof(v->principal), "%s", principal);
    explicit_bzero(v->secret, sizeof(v->secret));
    snprintf(v->secret, sizeof(v->secret), "%s", secret);
    v->have_credentials = 1;
    return 0;
}

/* ---- calls ------------------------------------------------------------- */

static int map_error(vmstate *v, const DBusError *err)
{
    static const struct {
        const char *name;
        int code;
    } map[] = {
        {VMS_DBUS_ERR_PERMISSION, VMSTATE_E_PERMISSION},
        {VMS_DBUS_ERR_UNAVAILABLE, VMSTATE_E_UNAVAILABLE},
        {VMS_DBUS_ERR_BUSY, VMSTATE_E_BUSY},
        {VMS_DBUS_ERR_INVALID, VMSTATE_E_INVALID},
        {VMS_DBUS_ERR_LIMIT, VMSTATE_E_LIMIT},
        {VMS_DBUS_ERR_NOT_FOUND, VMSTATE_E_NOT_FOUND},
        /* the names of helpers before 0.1.0 (errors not yet scoped under the interface) */
        {"org.vmstate.Error.Permission", VMSTATE_E_PERMISSION},
        {"org.vmstate.Error.Unavailable", VMSTATE_E_UNAVAILABLE},
        {"org.vmstate.Error.Busy", VMSTATE_E_BUSY},
        {"org.vmstate.Error.InvalidArgs", VMSTATE_E_INVALID},
        {"org.vmstate.Error.LimitReached", VMSTATE_E_LIMIT},
        {"org.vmstate.Error.NotFound", VMSTATE_E_NOT_FOUND},
        {DBUS_ERROR_SERVICE_UNKNOWN, VMSTATE_E_NO_HELPER},
        {DBUS_ERROR_NAME_HAS_NO_OWNER, VMSTATE_E_NO_HELPER},
        {DBUS_ERROR_NO_REPLY, VMSTATE_E_TIMEOUT},
        {DBUS_ERROR_TIMEOUT, VMSTATE_E_TIMEOUT},
        {DBUS_ERROR_DISCONNECTED, VMSTATE_E_DISCONNECTED},
        {DBUS_ERROR_ACCESS_DENIED, VMSTATE_E_PERMISSION},
        {DBUS_ERROR_NO_MEMORY, VMSTATE_E_NO_MEMORY},
    };
    int code = VMSTATE_E_HELPER;

    for (size_t i = 0; i < sizeof(map) / sizeof(*map); i++)
        if (!strcmp(err->name, map[i].name))
            code = map[i].code;
    if (code == VMSTATE_E_HELPER && !dbus_connection_get_is_connected(v->bus))
        code = VMSTATE_E_DISCONNECTED;
    return fail(v, code, "%s (%s)", err->message ? err->message : vmstate_strerror(code),
                err->name);
}

/* Send @m (consumed), wait for the reply. Returns 0 with *reply set, or an error. */
static int call(vmstate *v, DBusMessage *m, DBusMessage **reply)
{
    DBusError err;
    int rc = 0;

    if (v->rules_refused) {
        *reply = NULL;
        dbus_message_unref(m);
        return fail(v, VMSTATE_E_CONNECT, "the bus refused this handle's match rules: close it");
    }
    dbus_error_init(&err);
    *reply = dbus_connection_send_with_reply_and_block(v->bus, m, CALL_TIMEOUT_MS, &err);
    dbus_message_unref(m);
    if (!*reply) {
        rc = map_error(v, &err);
        dbus_error_free(&err);
    }
    /* a handle without its rules is not usable; an error of the call itself comes first */
    if (collect_matches(v, rc == 0) < 0 && rc == 0) {
        dbus_message_unref(*reply);
        *reply = NULL;
        rc = VMSTATE_E_CONNECT;
    }
    update_wakeup(v);
    return rc;
}

/* Call @method of @iface on the helper with the arguments (as for dbus_message_append_args).
 * Returns 0 with *reply set, or an error. */
static int call_helper(vmstate *v, const char *iface, const char *method, DBusMessage **reply,
                       int first_type, ...)
{
    DBusMessage *m = dbus_message_new_method_call(VMS_DBUS_NAME, VMS_DBUS_PATH, iface, method);
    va_list ap;
    int ok;

    if (!m)
        return fail(v, VMSTATE_E_NO_MEMORY, "out of memory");
    va_start(ap, first_type);
    ok = dbus_message_append_args_valist(m, first_type, ap);
    va_end(ap);
    if (!ok) {
        dbus_message_unref(m);
        return fail(v, VMSTATE_E_NO_MEMORY, "out of memory");
    }
    return call(v, m, reply);
}

/* Call @method(@arg) on the helper without waiting for (or wanting) a reply. */
static void send_async(vmstate *v, const char *method, const char *arg)
{
    DBusMessage *m =
        dbus_message_new_method_call(VMS_DBUS_NAME, VMS_DBUS_PATH, VMS_DBUS_IFACE, method);

    if (m && dbus_message_append_args(m, DBUS_TYPE_STRING, &arg, DBUS_TYPE_INVALID)) {
        dbus_message_set_no_reply(m, TRUE);
        dbus_connection_send(v->bus, m, NULL);
    }
    if (m)
        dbus_message_unref(m);
}

static void register_async(vmstate *v)
{
    send_async(v, "RegisterListener", v->app_id);
}

static int ensure_registered(vmstate *v)
{
    DBusMessage *m, *r;
    const char *app = v->app_id, *owner;
    int rc;

    if (v->registered)
        return 0;
    m = dbus_message_new_method_call(VMS_DBUS_NAME, VMS_DBUS_PATH, VMS_DBUS_IFACE,
                                     "RegisterListener");
    if (!m || !dbus_message_append_args(m, DBUS_TYPE_STRING, &app, DBUS_TYPE_INVALID)) {
        if (m)
            dbus_message_unref(m);
        return fail(v, VMSTATE_E_NO_MEMORY, "out of memory");
    }
    /* An absent helper is an error here, not started by the registration (the bus would
     * activate it otherwise). */
    dbus_message_set_auto_start(m, FALSE);
    rc = call(v, m, &r);
    if (rc < 0)
        return rc;
    /* The reply's sender is the helper's unique name, set by the bus: signals from anyone
     * else are ignored. (A GetNameOwner call cost the bus one more call per listener.) */
    owner = dbus_message_get_sender(r);
    if (!owner || owner[0] != ':') {
        dbus_message_unref(r);
        return fail(v, VMSTATE_E_PROTOCOL, "RegisterListener reply without a unique sender");
    }
    snprintf(v->helper_owner, sizeof(v->helper_owner), "%s", owner);
    dbus_message_unref(r);
    v->registered = 1;
    return 0;
}

int vmstate_listen(vmstate *v, vmstate_event_fn fn, void *userdata)
{
    if (!v)
        return VMSTATE_E_INVALID;
    v->fn = fn;
    v->userdata = userdata;
    return ensure_registered(v);
}

static int append_credentials(vmstate *v, DBusMessage *m)
{
    DBusMessageIter it, dict, e;
    const char *kp = "principal", *ks = "secret", *p = v->principal, *s = v->secret;

    dbus_message_iter_init_append(m, &it);
    return dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{ss}", &dict) &&
           dbus_message_iter_open_container(&dict, DBUS_TYPE_DICT_ENTRY, NULL, &e) &&
           dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &kp) &&
           dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &p) &&
           dbus_message_iter_close_container(&dict, &e) &&
           dbus_message_iter_open_container(&dict, DBUS_TYPE_DICT_ENTRY, NULL, &e) &&
           dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &ks) &&
           dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &s) &&
           dbus_message_iter_close_container(&dict, &e) &&
           dbus_message_iter_close_container(&it, &dict);
}

/* Common tail of every request begun by begin(): credentials, the address (@method), call,
 * read the id. Consumes @m. */
static int request(vmstate *v, DBusMessage *m, const char *method,
                   char request_id[VMSTATE_REQUEST_ID_LEN + 1])
{
    DBusMessage *r;
    const char *id;
    int rc;

    if (!append_credentials(v, m) ||
        !vms_dbus_address(m, VMS_DBUS_NAME, VMS_DBUS_PATH, VMS_DBUS_IFACE, method)) {
        dbus_message_unref(m);
        return fail(v, VMSTATE_E_NO_MEMORY, "out of memory");
    }
    rc = call(v, m, &r);
    if (rc < 0)
        return rc;
    if (!dbus_message_get_args(r, NULL, DBUS_TYPE_STRING, &id, DBUS_TYPE_INVALID) ||
        !vms_valid_request_id(id)) {
        dbus_message_unref(r);
        return fail(v, VMSTATE_E_PROTOCOL, "the helper returned no valid request id");
    }
    memcpy(request_id, id, VMSTATE_REQUEST_ID_LEN + 1);
    dbus_message_unref(r);
    v->error[0] = '\0';
    return 0;
}

/* Checks shared by every request; returns a new method call or NULL with the error in *rc. */
static DBusMessage *begin(vmstate *v, char *request_id, int *rc)
{
    DBusMessage *m;

    *rc = 0;
    if (!v)
        *rc = VMSTATE_E_INVALID;
    else if (!request_id)
        *rc = fail(v, VMSTATE_E_INVALID, "request_id buffer is NULL");
    else if (!v->have_credentials)
        *rc = fail(v, VMSTATE_E_NO_CREDENTIALS, "call vmstate_set_credentials() first");
    if (*rc)
        return NULL;
    *rc = ensure_registered(v);
    if (*rc)
        return NULL;
    m = dbus_message_new(DBUS_MESSAGE_TYPE_METHOD_CALL); /* addressed by request(): vms-dbus.h */
    if (!m)
        *rc = fail(v, VMSTATE_E_NO_MEMORY, "out of memory");
    return m;
}

static int save_or_restore(vmstate *v, const char *method, const char *first, const void *app_data,
                           size_t len, char *request_id)
{
    DBusMessage *m;
    const uint8_t *data = app_data ? app_data : (const uint8_t *)"";
    const char *app;
    int rc;

    if (v && (!first || len > VMSTATE_APP_DATA_MAX || (len && !app_data)))
        return fail(v, VMSTATE_E_INVALID, "%s: bad %s or app data over %d bytes", method,
                    strcmp(method, "Save") ? "state id" : "label", VMSTATE_APP_DATA_MAX);
    if (v && !strcmp(method, "Save") && !vms_valid_text(first))
        return fail(v, VMSTATE_E_INVALID, "bad label (255 bytes of UTF-8, no control chars)");
    if (v && strcmp(method, "Save") && !vms_valid_id(first))
        return fail(v, VMSTATE_E_INVALID, "bad state id");
    m = begin(v, request_id, &rc);
    if (!m)
        return rc;
    app = v->app_id;
    if (!dbus_message_append_args(m, DBUS_TYPE_STRING, &first, DBUS_TYPE_STRING, &app,
                                  DBUS_TYPE_ARRAY, DBUS_TYPE_BYTE, &data, (int)len,
                                  DBUS_TYPE_INVALID)) {
        dbus_message_unref(m);
        return fail(v, VMSTATE_E_NO_MEMORY, "out of memory");
    }
    return request(v, m, method, request_id);
}

int vmstate_save(vmstate *v, const char *label, const void *app_data, size_t len,
                 char request_id[VMSTATE_REQUEST_ID_LEN + 1])
{
    return save_or_restore(v, "Save", label, app_data, len, request_id);
}

int vmstate_restore(vmstate *v, const char *state_id, const void *app_data, size_t len,
                    char request_id[VMSTATE_REQUEST_ID_LEN + 1])
{
    return save_or_restore(v, "Restore", state_id, app_data, len, request_id);
}

int vmstate_restore_with(vmstate *v, const char *state_id, const void *app_data, size_t len,
                         const struct vmstate_followup *followups, size_t n,
                         char request_id[VMSTATE_REQUEST_ID_LEN + 1])
{
    DBusMessage *m;
    DBusMessageIter it, arr, st;
    const uint8_t *data = app_data ? app_data : (const uint8_t *)"";
    const char *app;
    int rc, ok;

    if (v && (!state_id || !vms_valid_id(state_id) || len > VMSTATE_APP_DATA_MAX ||
              (len && !app_data) || n > VMSTATE_FOLLOWUPS_MAX || (n && !followups)))
        return fail(v, VMSTATE_E_INVALID,
                    "RestoreWith: bad state id, app data over %d bytes, or over %d follow-ups",
                    VMSTATE_APP_DATA_MAX, VMSTATE_FOLLOWUPS_MAX);
    for (size_t i = 0; v && i < n; i++)
        if (!followups[i].operation || !vms_valid_id(followups[i].operation))
            return fail(v, VMSTATE_E_INVALID, "RestoreWith: follow-up %zu has a bad operation", i);
    m = begin(v, request_id, &rc);
    if (!m)
        return rc;
    app = v->app_id;
    ok = dbus_message_append_args(m, DBUS_TYPE_STRING, &state_id, DBUS_TYPE_STRING, &app,
                                  DBUS_TYPE_ARRAY, DBUS_TYPE_BYTE, &data, (int)len,
                                  DBUS_TYPE_INVALID);
    dbus_message_iter_init_append(m, &it);
    ok = ok && dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "(st)", &arr);
    for (size_t i = 0; ok && i < n; i++) {
        dbus_uint64_t arg = followups[i].arg;
        ok = dbus_message_iter_open_container(&arr, DBUS_TYPE_STRUCT, NULL, &st) &&
             dbus_message_iter_append_basic(&st, DBUS_TYPE_STRING, &followups[i].operation) &&
             dbus_message_iter_append_basic(&st, DBUS_TYPE_UINT64, &arg) &&
             dbus_message_iter_close_container(&arr, &st);
    }
    if (!ok || !dbus_message_iter_close_container(&it, &arr)) {
        dbus_message_unref(m);
        return fail(v, VMSTATE_E_NO_MEMORY, "out of memory");
    }
    return request(v, m, "RestoreWith", request_id);
}

static int simple_request(vmstate *v, const char *method, char *request_id)
{
    int rc;
    DBusMessage *m = begin(v, request_id, &rc);
    const char *app;

    if (!m)
        return rc;
    app = v->app_id;
    if (!dbus_message_append_args(m, DBUS_TYPE_STRING, &app, DBUS_TYPE_INVALID)) {
        dbus_message_unref(m);
        return fail(v, VMSTATE_E_NO_MEMORY, "out of memory");
    }
    return request(v, m, method, request_id);
}

int vmstate_list(vmstate *v, char request_id[VMSTATE_REQUEST_ID_LEN + 1])
{
    return simple_request(v, "ListStates", request_id);
}

int vmstate_hostinfo(vmstate *v, char request_id[VMSTATE_REQUEST_ID_LEN + 1])
{
    return simple_request(v, "HostInfo", request_id);
}

int vmstate_suspend(vmstate *v, char request_id[VMSTATE_REQUEST_ID_LEN + 1])
{
    return simple_request(v, "Suspend", request_id);
}

int vmstate_delete(vmstate *v, const char *state_id, char request_id[VMSTATE_REQUEST_ID_LEN + 1])
{
    DBusMessage *m;
    const char *app;
    int rc;

    if (v && (!state_id || !vms_valid_id(state_id)))
        return fail(v, VMSTATE_E_INVALID, "bad state id");
    m = begin(v, request_id, &rc);
    if (!m)
        return rc;
    app = v->app_id;
    if (!dbus_message_append_args(m, DBUS_TYPE_STRING, &state_id, DBUS_TYPE_STRING, &app,
                                  DBUS_TYPE_INVALID)) {
        dbus_message_unref(m);
        return fail(v, VMSTATE_E_NO_MEMORY, "out of memory");
    }
    return request(v, m, "DeleteState", request_id);
}

/* SetMemory, or SetMemoryMode when @mode is not NULL. */
static int set_memory(vmstate *v, uint64_t bytes, const char *mode,
                      char request_id[VMSTATE_REQUEST_ID_LEN + 1])
{
    DBusMessage *m;
    const char *app, *method;
    dbus_uint64_t b = bytes;
    int rc, ok;

    if (v && bytes == 0)
        return fail(v, VMSTATE_E_INVALID, "bytes must be greater than 0");
    method = mode ? "SetMemoryMode" : "SetMemory";
    m = begin(v, request_id, &rc);
    if (!m)
        return rc;
    app = v->app_id;
    ok = dbus_message_append_args(m, DBUS_TYPE_UINT64, &b, DBUS_TYPE_INVALID) &&
         (!mode || dbus_message_append_args(m, DBUS_TYPE_STRING, &mode, DBUS_TYPE_INVALID)) &&
         dbus_message_append_args(m, DBUS_TYPE_STRING, &app, DBUS_TYPE_INVALID);
    if (!ok) {
        dbus_message_unref(m);
        return fail(v, VMSTATE_E_NO_MEMORY, "out of memory");
    }
    return request(v, m, method, request_id);
}

int vmstate_set_memory(vmstate *v, uint64_t bytes, char request_id[VMSTATE_REQUEST_ID_LEN + 1])
{
    return set_memory(v, bytes, NULL, request_id);
}

int vmstate_set_memory_offline(vmstate *v, uint64_t bytes,
                               char request_id[VMSTATE_REQUEST_ID_LEN + 1])
{
    return set_memory(v, bytes, "offline", request_id);
}

int vmstate_inhibit(vmstate *v, const char *request_id, const char *reason)
{
    DBusMessage *r;
    int rc;

    if (!v)
        return VMSTATE_E_INVALID;
    if (!request_id || !vms_valid_request_id(request_id))
        return fail(v, VMSTATE_E_INVALID, "bad request id (%d lowercase hex characters)",
                    VMSTATE_REQUEST_ID_LEN);
    if (!reason || strnlen(reason, VMSTATE_INHIBIT_REASON_MAX + 1) > VMSTATE_INHIBIT_REASON_MAX ||
        !vms_valid_text(reason))
        return fail(v, VMSTATE_E_INVALID,
                    "bad reason (text of at most %d bytes without control characters)",
                    VMSTATE_INHIBIT_REASON_MAX);
    rc = call_helper(v, VMS_DBUS_IFACE, "Inhibit", &r, DBUS_TYPE_STRING, &request_id,
                     DBUS_TYPE_STRING, &reason, DBUS_TYPE_INVALID);
    if (rc < 0)
        return rc;
    dbus_message_unref(r);
    memcpy(v->inhibited, request_id, VMSTATE_REQUEST_ID_LEN + 1);
    v->error[0] = '\0';
    return 0;
}

/* ---- event loop ---------------------------------------------------------- */

int vmstate_get_fd(const vmstate *v)
{
    return v ? v->epfd : -1;
}

int vmstate_dispatch(vmstate *v)
{
    uint64_t n;

    if (!v)
        return VMSTATE_E_INVALID;
    while (read(v->evfd, &n, sizeof(n)) == sizeof(n))
        ;
    v->delivered = 0;
    if (!dbus_connection_read_write(v->bus, 0) || !dbus_connection_get_is_connected(v->bus))
        return fail(v, VMSTATE_E_DISCONNECTED, "the bus connection was lost");
    while (dbus_connection_dispatch(v->bus) == DBUS_DISPATCH_DATA_REMAINS)
        ;
    update_wakeup(v);
    return v->delivered;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int vmstate_wait(vmstate *v, const char *request_id, int timeout_ms, struct vmstate_event **out)
{
    uint64_t until = timeout_ms < 0 ? UINT64_MAX : now_ms() + (uint64_t)timeout_ms;
    int rc = VMSTATE_E_TIMEOUT;

    if (!v)
        return VMSTATE_E_INVALID;
    if (!out || !request_id || !vms_valid_request_id(request_id))
        return fail(v, VMSTATE_E_INVALID, "bad request id or NULL out");
    *out = NULL;
    v->waiting_for = request_id;
    for (;;) {
        struct pollfd p = {.fd = v->epfd, .events = POLLIN};
        uint64_t now;
        int d = vmstate_dispatch(v);

        if (d < 0) {
            rc = d;
            break;
        }
        if (v->waited) {
            *out = &v->waited->pub;
            v->waited = NULL;
            rc = 0;
            break;
        }
        now = now_ms();
        if (now >= until)
            break;
        if (poll(&p, 1, until == UINT64_MAX ? -1 : (int)(until - now)) < 0 && errno != EINTR) {
            rc = fail(v, VMSTATE_E_DISCONNECTED, "poll: %s", strerror(errno));
            break;
        }
    }
    v->waiting_for = NULL;
    if (rc == VMSTATE_E_TIMEOUT)
        fail(v, rc, "no completion for %s within %d ms", request_id, timeout_ms);
    return rc;
}

/* Get the helper's property @prop; on success *reply holds the answer and *value is set on
 * its variant's contents, of D-Bus type @type. */
static int get_property(vmstate *v, const char *prop, int type, DBusMessage **reply,
                        DBusMessageIter *value)
{
    const char *iface = VMS_DBUS_IFACE;
    DBusMessageIter it;
    int rc;

    if (!v)
        return VMSTATE_E_INVALID;
    rc = call_helper(v, DBUS_INTERFACE_PROPERTIES, "Get", reply, DBUS_TYPE_STRING, &iface,
                     DBUS_TYPE_STRING, &prop, DBUS_TYPE_INVALID);
    if (rc < 0)
        return rc;
    if (dbus_message_has_signature(*reply, "v")) {
        dbus_message_iter_init(*reply, &it);
        dbus_message_iter_recurse(&it, value);
        if (dbus_message_iter_get_arg_type(value) == type)
            return 0;
    }
    dbus_message_unref(*reply);
    *reply = NULL;
    return fail(v, VMSTATE_E_PROTOCOL, "the helper's %s property has an unexpected type", prop);
}

int vmstate_bridge_connected(vmstate *v)
{
    DBusMessage *r;
    DBusMessageIter var;
    dbus_bool_t b;
    int rc = get_property(v, "BridgeConnected", DBUS_TYPE_BOOLEAN, &r, &var);

    if (rc < 0)
        return rc;
    dbus_message_iter_get_basic(&var, &b);
    dbus_message_unref(r);
    return b ? 1 : 0;
}

int vmstate_cached_list(vmstate *v, struct vmstate_event **out)
{
    DBusMessage *r;
    DBusMessageIter var;
    struct event_priv *e;
    struct vms_rbuf rb;
    const char *sig;
    int rc, raw_len = 0;

    if (!out)
        return VMSTATE_E_INVALID;
    *out = NULL;
    rc = get_property(v, "States", DBUS_TYPE_ARRAY, &r, &var);
    if (rc < 0)
        return rc;
    e = event_new(VMSTATE_EVENT_COMPLETED, NULL);
    /* the states point into the reply's bytes, read as Completed's are */
    if (e && !dbus_message_marshal(r, &e->raw, &raw_len))
        e->raw = NULL;
    dbus_message_unref(r);
    if (!e || !e->raw) {
        event_free_priv(e);
        return fail(v, VMSTATE_E_NO_MEMORY, "out of memory");
    }
    e->pub.operation = "list";
    if (vms_rb_body((const uint8_t *)e->raw, (size_t)raw_len, &rb) < 0 ||
        vms_rb_sig(&rb, &sig) < 0 || strcmp(sig, "a(ssssx)") != 0 || read_states(&rb, e) < 0) {
        event_free_priv(e);
        return fail(v, VMSTATE_E_PROTOCOL, "the helper's States property is not a(ssssx)");
    }
    *out = &e->pub;
    return 0;
}
