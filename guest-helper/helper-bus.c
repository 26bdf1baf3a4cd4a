/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * helper-bus.c — the org.vmstate.Helper1 object on the system bus (libdbus).
 *
 * Method handlers check the caller's uid, validate arguments, build a
 * Request and hand it to the core, and reply with the request id at once.
 * Completed is unicast to each registered listener's unique name.
 */
#include "config.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helper-bus.h"
#include "vms-log.h"
#include "vms-marshal.h"

/* Departures only (new owner ""): the helper ends a gone listener's registrations and
 * forgets its uid, and has nothing to do when a connection joins. Without arg2 every client
 * that connects to the guest's bus, vmstate's or not, woke the helper with a signal. */
#define NOC_MATCH                                                                                  \
    "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"                    \
    "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg2=''"

/* ---- small helpers ---------------------------------------------------- */

static void reply_error(DBusConnection *c, DBusMessage *call, const char *name, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));
static void reply_error(DBusConnection *c, DBusMessage *call, const char *name, const char *fmt,
                        ...)
{
    char text[512];
    DBusMessage *r;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    r = dbus_message_new_error(call, name, text);
    if (r) {
        dbus_connection_send(c, r, NULL);
        dbus_message_unref(r);
    }
}

static void reply_empty(DBusConnection *c, DBusMessage *call)
{
    DBusMessage *r = dbus_message_new_method_return(call);

    if (r) {
        dbus_connection_send(c, r, NULL);
        dbus_message_unref(r);
    }
}

/* Callers' uids, by unique name. Unique names are never reused on a bus, so an entry stays
 * true; the cache only saves a GetConnectionUnixUser round trip per call. Unique names are
 * short (":1.12345"): an entry needs no VMS_STR_MAX. */
#define UID_CACHE_SIZE 256
#define UID_NAME_MAX   32
static struct {
    char name[UID_NAME_MAX];
    unsigned long uid;
} uid_cache[UID_CACHE_SIZE];
static unsigned uid_cache_next;

/*
 * A caller's uid is asked once, on its first call, without waiting (GetConnectionUnixUser):
 * its calls wait in arrival order and are handled when the answer comes, while the helper
 * goes on with everyone else. Asking when a connection joins the bus instead (the prefetch
 * this replaced) made every bus client of the guest, vmstate's or not, cost the helper a
 * wakeup and the bus a round trip (bench-tcg: a trivial emitter's first signal came 15 ->
 * 455 ms late while 1000 connections joined). Bounded: UID_ASK_MAX callers asked at once,
 * UID_ASK_CALLS calls queued each; past that a call waits for its caller's answer (the
 * blocking way), after the calls queued before it.
 */
#define UID_ASK_MAX   64
#define UID_ASK_CALLS 16
static struct {
    char name[UID_NAME_MAX];
    DBusPendingCall *pending;
    DBusMessage *calls[UID_ASK_CALLS];
    unsigned n_calls;
} uid_ask[UID_ASK_MAX];
static struct helper *uid_ask_helper; /* the calls' handler runs for this helper */

static void uid_cache_put(const char *name, unsigned long uid)
{
    snprintf(uid_cache[uid_cache_next].name, sizeof(uid_cache[0].name), "%s", name);
    uid_cache[uid_cache_next].uid = uid;
    uid_cache_next = (uid_cache_next + 1) % UID_CACHE_SIZE;
}

static int uid_cache_get(const char *name, unsigned long *uid)
{
    for (unsigned i = 0; i < UID_CACHE_SIZE; i++)
        if (uid_cache[i].name[0] && !strcmp(uid_cache[i].name, name)) {
            *uid = uid_cache[i].uid;
            return 1;
        }
    return 0;
}

static DBusHandlerResult on_object_message(DBusConnection *c, DBusMessage *m, void *data);

/* Slot @i's answer came (libdbus calls this from dispatch, or from dbus_pending_call_block):
 * cache it, free the slot, then handle its calls in order — refused if the bus could not say
 * (the caller left). */
static void on_uid_answer(DBusPendingCall *pending, void *data)
{
    unsigned i = (unsigned)(uintptr_t)data;
    DBusMessage *reply = dbus_pending_call_steal_reply(pending);
    DBusMessage *calls[UID_ASK_CALLS];
    unsigned n = uid_ask[i].n_calls;
    dbus_uint32_t uid;
    int known = 0;

    if (reply && dbus_message_get_type(reply) == DBUS_MESSAGE_TYPE_METHOD_RETURN &&
        dbus_message_get_args(reply, NULL, DBUS_TYPE_UINT32, &uid, DBUS_TYPE_INVALID)) {
        uid_cache_put(uid_ask[i].name, uid);
        known = 1;
    }
    if (reply)
        dbus_message_unref(reply);
    /* free the slot first: a call handled below may ask for another caller */
    memcpy(calls, uid_ask[i].calls, n * sizeof(*calls));
    dbus_pending_call_unref(uid_ask[i].pending);
    uid_ask[i].pending = NULL;
    uid_ask[i].name[0] = '\0';
    uid_ask[i].n_calls = 0;
    for (unsigned k = 0; k < n; k++) {
        if (known)
            on_object_message(uid_ask_helper->bus, calls[k], uid_ask_helper);
        else if (!dbus_message_get_no_reply(calls[k]))
            reply_error(uid_ask_helper->bus, calls[k], DBUS_ERROR_ACCESS_DENIED,
                        "the bus could not tell the caller's uid");
        dbus_message_unref(calls[k]);
    }
}

/* 1 if @call waits for its caller's uid (queued, or its question just sent), 0 if it is to
 * be handled now: the uid is cached, or the tables are full (the blocking way then). */
static int uid_ask_defer(DBusConnection *c, DBusMessage *call)
{
    const char *sender = dbus_message_get_sender(call);
    DBusMessage *q;
    unsigned long uid;
    int slot = -1;

    if (!sender || strlen(sender) >= UID_NAME_MAX || uid_cache_get(sender, &uid))
        return 0;
    for (unsigned i = 0; i < UID_ASK_MAX; i++) {
        if (uid_ask[i].pending && !strcmp(uid_ask[i].name, sender)) {
            if (uid_ask[i].n_calls < UID_ASK_CALLS) {
                uid_ask[i].calls[uid_ask[i].n_calls++] = dbus_message_ref(call);
                return 1;
            }
            /* full: the answer now (its calls are handled first), then this call */
            DBusPendingCall *p = dbus_pending_call_ref(uid_ask[i].pending);
            dbus_pending_call_block(p);
            dbus_pending_call_unref(p);
            return 0;
        }
        if (!uid_ask[i].pending && slot < 0)
            slot = (int)i;
    }
    if (slot < 0)
        return 0;
    q = dbus_message_new_method_call(DBUS_SERVICE_DBUS, DBUS_PATH_DBUS, DBUS_INTERFACE_DBUS,
                                     "GetConnectionUnixUser");
    if (!q || !dbus_message_append_args(q, DBUS_TYPE_STRING, &sender, DBUS_TYPE_INVALID) ||
        !dbus_connection_send_with_reply(c, q, &uid_ask[slot].pending, -1) ||
        !uid_ask[slot].pending) {
        uid_ask[slot].pending = NULL;
        goto out;
    }
    if (!dbus_pending_call_set_notify(uid_ask[slot].pending, on_uid_answer, (void *)(uintptr_t)slot,
                                      NULL)) {
        dbus_pending_call_cancel(uid_ask[slot].pending);
        dbus_pending_call_unref(uid_ask[slot].pending);
        uid_ask[slot].pending = NULL;
        goto out;
    }
    snprintf(uid_ask[slot].name, sizeof(uid_ask[0].name), "%s", sender);
    uid_ask[slot].calls[0] = dbus_message_ref(call);
    uid_ask[slot].n_calls = 1;
    dbus_message_unref(q);
    return 1;
out:
    if (q)
        dbus_message_unref(q);
    return 0;
}

static void uid_ask_free_all(void)
{
    for (unsigned i = 0; i < UID_ASK_MAX; i++) {
        if (uid_ask[i].pending) {
            dbus_pending_call_cancel(uid_ask[i].pending);
            dbus_pending_call_unref(uid_ask[i].pending);
            uid_ask[i].pending = NULL;
        }
        for (unsigned k = 0; k < uid_ask[i].n_calls; k++)
            dbus_message_unref(uid_ask[i].calls[k]);
        uid_ask[i].n_calls = 0;
        uid_ask[i].name[0] = '\0';
    }
}

/* The caller's uid: cached (uid_ask_defer held its calls until it was), else via a blocking
 * GetConnectionUnixUser; -1 if the bus cannot say. */
static long caller_uid(DBusConnection *c, DBusMessage *call)
{
    DBusError err;
    unsigned long uid;
    const char *sender = dbus_message_get_sender(call);

    if (!sender || strlen(sender) >= UID_NAME_MAX)
        return -1;
    if (uid_cache_get(sender, &uid))
        return (long)uid;
    dbus_error_init(&err);
    uid = dbus_bus_get_unix_user(c, sender, &err);
    if (dbus_error_is_set(&err)) {
        vms_warn(NULL, NULL, "cannot get the uid of %s: %s", sender, err.message);
        dbus_error_free(&err);
        return -1;
    }
    uid_cache_put(sender, uid);
    return (long)uid;
}

static void uid_cache_forget(const char *name)
{
    for (unsigned i = 0; i < UID_CACHE_SIZE; i++)
        if (!strcmp(uid_cache[i].name, name))
            uid_cache[i].name[0] = '\0';
}

/* Check the caller against the allow-list; replies with an error and returns -1 if refused. */
static long check_caller(struct helper *h, DBusMessage *call)
{
    long uid = caller_uid(h->bus, call);

    if (uid < 0) {
        reply_error(h->bus, call, VMS_DBUS_ERR_PERMISSION, "cannot determine the caller's uid");
        return -1;
    }
    if (!helper_config_uid_allowed(&h->cfg, (uid_t)uid)) {
        vms_warn(NULL, NULL, "refused %s from uid %ld (%s): not in the allow-list",
                 dbus_message_get_member(call), uid, dbus_message_get_sender(call));
        reply_error(h->bus, call, VMS_DBUS_ERR_PERMISSION,
                    "uid %ld is not allowed to use vmstate (allow_users/allow_groups in %s)", uid,
                    h->cfg.path[0] ? h->cfg.path : HELPER_CONFIG_DEFAULT);
        return -1;
    }
    return uid;
}

/* Check that @uid may use @app_id ([apps], strict_app_ids, watch_users); replies with an error
 * naming the app id and returns -1 if not. */
static int check_app(struct helper *h, DBusMessage *call, const char *app_id, long uid)
{
    const char *why;

    if (helper_config_app_allowed(&h->cfg, app_id, (uid_t)uid, &why))
        return 0;
    vms_warn(NULL, NULL, "refused %s for app id '%s' from uid %ld (%s): %s",
             dbus_message_get_member(call), app_id, uid, dbus_message_get_sender(call), why);
    reply_error(h->bus, call, VMS_DBUS_ERR_PERMISSION,
                "uid %ld may not use app id '%.255s': %s (%s)", uid, app_id, why,
                h->cfg.path[0] ? h->cfg.path : HELPER_CONFIG_DEFAULT);
    return -1;
}

/* Read an a{ss} credentials dict into @req. Returns 0 or -1 with @why. */
static int read_credentials(DBusMessageIter *it, struct vms_msg *req, char *why, size_t whylen)
{
    DBusMessageIter dict;
    int have_principal = 0, have_secret = 0;

    dbus_message_iter_recurse(it, &dict);
    while (dbus_message_iter_get_arg_type(&dict) == DBUS_TYPE_DICT_ENTRY) {
        DBusMessageIter e;
        const char *k, *v;

        dbus_message_iter_recurse(&dict, &e);
        dbus_message_iter_get_basic(&e, &k);
        dbus_message_iter_next(&e);
        dbus_message_iter_get_basic(&e, &v);
        if (!strcmp(k, "principal")) {
            if (!vms_valid_id(v)) {
                snprintf(why, whylen, "credentials: bad principal (1-255 of [A-Za-z0-9._:@-])");
                return -1;
            }
            vms_msg_set_str(req, VMS_F_PRINCIPAL, v);
            have_principal = 1;
        } else if (!strcmp(k, "secret")) {
            if (vms_msg_set_str(req, VMS_F_SECRET, v) < 0) {
                snprintf(why, whylen, "credentials: secret longer than 255 bytes");
                return -1;
            }
            have_secret = 1;
        } else {
            snprintf(why, whylen, "credentials: unknown key '%.64s' (expected principal, secret)",
                     k);
            return -1;
        }
        dbus_message_iter_next(&dict);
    }
    if (!have_principal || !have_secret) {
        snprintf(why, whylen, "credentials need 'principal' and 'secret'");
        return -1;
    }
    return 0;
}

static int take_id(DBusMessageIter *it, struct vms_msg *req, enum vms_field f, const char *what,
                   char *why, size_t whylen)
{
    const char *v;

    dbus_message_iter_get_basic(it, &v);
    dbus_message_iter_next(it);
    if (!vms_valid_id(v)) {
        snprintf(why, whylen, "bad %s '%.64s' (1-255 of [A-Za-z0-9._:@-])", what, v);
        return -1;
    }
    vms_msg_set_str(req, f, v);
    return 0;
}

/* ---- request methods -------------------------------------------------- */

struct request_method {
    const char *name;
    const char *signature;
    enum vms_op op;
};

static const struct request_method request_methods[] = {
    {"Save", "ssaya{ss}", VMS_OP_SAVE},
    {"Restore", "ssaya{ss}", VMS_OP_RESTORE},
    {"ListStates", "sa{ss}", VMS_OP_LIST},
    {"DeleteState", "ssa{ss}", VMS_OP_DELETE},
    {"HostInfo", "sa{ss}", VMS_OP_HOSTINFO},
    {"SetMemory", "tsa{ss}", VMS_OP_SET_MEMORY},
    {"Suspend", "sa{ss}", VMS_OP_SUSPEND},
    {"RestoreWith", "ssaya(st)a{ss}", VMS_OP_RESTORE},
    {"SetMemoryMode", "tssa{ss}", VMS_OP_SET_MEMORY},
};

/* RestoreWith's follow-ups a(st) into @req: known operations that make sense inside a
 * restore, at most VMS_FOLLOWUPS_MAX. Returns 0 or -1 with @why. */
static int take_followups(DBusMessageIter *it, struct vms_msg *req, char *why, size_t whylen)
{
    DBusMessageIter arr, st;

    dbus_message_iter_recurse(it, &arr);
    dbus_message_iter_next(it);
    while (dbus_message_iter_get_arg_type(&arr) == DBUS_TYPE_STRUCT) {
        const char *op;
        dbus_uint64_t arg;

        dbus_message_iter_recurse(&arr, &st);
        dbus_message_iter_get_basic(&st, &op);
        dbus_message_iter_next(&st);
        dbus_message_iter_get_basic(&st, &arg);
        if (strcmp(op, "set-memory") != 0 && strcmp(op, "hostinfo") != 0) {
            snprintf(why, whylen, "follow-up '%.64s' unknown (set-memory, hostinfo)", op);
            return -1;
        }
        if (!strcmp(op, "set-memory") && arg == 0) {
            snprintf(why, whylen, "follow-up set-memory needs bytes greater than 0");
            return -1;
        }
        if (vms_msg_add_followup(req, op, arg) < 0) {
            snprintf(why, whylen, "at most %d follow-ups", VMS_FOLLOWUPS_MAX);
            return -1;
        }
        dbus_message_iter_next(&arr);
    }
    return 0;
}

static const char *status_error_name(int status)
{
    switch (status) {
    case VMS_STATUS_ERR_UNAVAILABLE:
        return VMS_DBUS_ERR_UNAVAILABLE;
    case VMS_STATUS_ERR_BUSY:
        return VMS_DBUS_ERR_BUSY;
    case VMS_STATUS_ERR_INVALID:
        return VMS_DBUS_ERR_INVALID;
    default:
        return VMS_DBUS_ERR_INTERNAL;
    }
}

static void handle_request(struct helper *h, DBusMessage *call, const struct request_method *rm)
{
    struct vms_msg req;
    DBusMessageIter it;
    char why[300] = "";
    long uid;
    int status;
    DBusMessage *reply;
    const char *id;

    vms_msg_init(&req, VMS_MSG_REQUEST);
    if (!dbus_message_has_signature(call, rm->signature)) {
        reply_error(h->bus, call, VMS_DBUS_ERR_INVALID, "%s takes (%s), got (%s)", rm->name,
                    rm->signature, dbus_message_get_signature(call));
        goto out;
    }
    uid = check_caller(h, call);
    if (uid < 0)
        goto out;
    vms_msg_set_str(&req, VMS_F_OP, vms_op_name(rm->op));
    vms_msg_set_u64(&req, VMS_F_UID, (uint64_t)uid);
    dbus_message_iter_init(call, &it);
    switch (rm->op) {
    case VMS_OP_SAVE:
    case VMS_OP_RESTORE: {
        const char *first;
        DBusMessageIter arr;
        const uint8_t *data;
        int len;

        dbus_message_iter_get_basic(&it, &first);
        dbus_message_iter_next(&it);
        if (rm->op == VMS_OP_SAVE) {
            if (!vms_valid_text(first)) {
                snprintf(why, sizeof(why),
                         "bad label: at most 255 bytes of UTF-8 without control characters");
                break;
            }
            vms_msg_set_str(&req, VMS_F_LABEL, first);
        } else {
            if (!vms_valid_id(first)) {
                snprintf(why, sizeof(why), "bad state id '%.64s'", first);
                break;
            }
            vms_msg_set_str(&req, VMS_F_STATE_ID, first);
        }
        if (take_id(&it, &req, VMS_F_APP_ID, "app id", why, sizeof(why)) < 0)
            break;
        dbus_message_iter_recurse(&it, &arr);
        dbus_message_iter_get_fixed_array(&arr, &data, &len);
        dbus_message_iter_next(&it);
        if ((size_t)len > VMS_APP_DATA_MAX) {
            snprintf(why, sizeof(why), "app data is %d bytes; at most %u", len, VMS_APP_DATA_MAX);
            break;
        }
        if (len > 0 && vms_msg_set_app_data(&req, data, (size_t)len) < 0) {
            snprintf(why, sizeof(why), "out of memory");
            break;
        }
        if (dbus_message_iter_get_arg_type(&it) == DBUS_TYPE_ARRAY &&
            dbus_message_iter_get_element_type(&it) == DBUS_TYPE_STRUCT)
            take_followups(&it, &req, why, sizeof(why));
        break;
    }
    case VMS_OP_DELETE:
        if (take_id(&it, &req, VMS_F_STATE_ID, "state id", why, sizeof(why)) < 0)
            break;
        take_id(&it, &req, VMS_F_APP_ID, "app id", why, sizeof(why));
        break;
    case VMS_OP_SET_MEMORY: {
        dbus_uint64_t bytes;
        dbus_message_iter_get_basic(&it, &bytes);
        dbus_message_iter_next(&it);
        if (bytes == 0) {
            snprintf(why, sizeof(why), "bytes must be greater than 0");
            break;
        }
        vms_msg_set_u64(&req, VMS_F_BYTES, bytes);
        if (!strcmp(rm->name, "SetMemoryMode")) { /* (bytes, mode, app_id, credentials) */
            const char *mode;
            dbus_message_iter_get_basic(&it, &mode);
            dbus_message_iter_next(&it);
            if (strcmp(mode, VMS_MEM_MODE_ONLINE) && strcmp(mode, VMS_MEM_MODE_OFFLINE)) {
                snprintf(why, sizeof(why), "mode '%.32s' unknown (online, offline)", mode);
                break;
            }
            vms_msg_set_str(&req, VMS_F_MODE, mode);
        }
        take_id(&it, &req, VMS_F_APP_ID, "app id", why, sizeof(why));
        break;
    }
    default: /* list, hostinfo */
        take_id(&it, &req, VMS_F_APP_ID, "app id", why, sizeof(why));
        break;
    }
    if (!why[0])
        read_credentials(&it, &req, why, sizeof(why));
    if (why[0]) {
        reply_error(h->bus, call, VMS_DBUS_ERR_INVALID, "%s: %s", rm->name, why);
        goto out;
    }
    if (check_app(h, call, req.app_id, uid) < 0)
        goto out;
    status = helper_submit(h, &req);
    if (status != 0) {
        if (status == VMS_STATUS_ERR_UNAVAILABLE)
            reply_error(h->bus, call, VMS_DBUS_ERR_UNAVAILABLE,
                        "the host bridge is not connected and %s",
                        h->cfg.queue_when_disconnected ? "the request queue is full"
                                                       : "queueing is disabled");
        else if (status == VMS_STATUS_ERR_BUSY)
            reply_error(h->bus, call, VMS_DBUS_ERR_BUSY,
                        "%u requests are already waiting for the host bridge", h->n_requests);
        else
            reply_error(h->bus, call, status_error_name(status), "%s: %s", rm->name,
                        vms_status_str(status));
        goto out;
    }
    reply = dbus_message_new_method_return(call);
    id = req.request_id;
    if (reply && dbus_message_append_args(reply, DBUS_TYPE_STRING, &id, DBUS_TYPE_INVALID))
        dbus_connection_send(h->bus, reply, NULL);
    if (reply)
        dbus_message_unref(reply);
out:
    vms_msg_clear(&req); /* wipes the secret */
}

/* ---- listeners -------------------------------------------------------- */

static void handle_listener(struct helper *h, DBusMessage *call, int add)
{
    const char *app_id = NULL;
    const char *sender = dbus_message_get_sender(call);
    long uid;

    if (!dbus_message_get_args(call, NULL, DBUS_TYPE_STRING, &app_id, DBUS_TYPE_INVALID)) {
        reply_error(h->bus, call, VMS_DBUS_ERR_INVALID, "expected (s app_id)");
        return;
    }
    uid = check_caller(h, call);
    if (uid < 0)
        return;
    if (!(vms_valid_id(app_id) || (!strcmp(app_id, "*")))) {
        reply_error(h->bus, call, VMS_DBUS_ERR_INVALID, "bad app id '%.64s'", app_id);
        return;
    }
    if (check_app(h, call, app_id, uid) < 0)
        return;
    if (!add) {
        helper_listener_remove(h, app_id, sender);
        reply_empty(h->bus, call);
        return;
    }
    switch (helper_listener_add(h, app_id, sender, (uid_t)uid)) {
    case -1:
        vms_warn(NULL, NULL, "RegisterListener for app %s by uid %ld refused: max_listeners",
                 app_id, uid);
        reply_error(h->bus, call, VMS_DBUS_ERR_LIMIT, "too many listeners (max_listeners=%u)",
                    h->cfg.max_listeners);
        return;
    case -2:
        vms_warn(NULL, NULL,
                 "RegisterListener for app %s by uid %ld refused: max_listeners_per_uid", app_id,
                 uid);
        reply_error(h->bus, call, VMS_DBUS_ERR_LIMIT,
                    "uid %ld has too many listeners (max_listeners_per_uid=%u)", uid,
                    h->cfg.max_listeners_per_uid);
        return;
    default:
        break;
    }
    reply_empty(h->bus, call); /* the reply goes out before any held completion */
    if (strcmp(app_id, "*") != 0)
        helper_deliver_held(h, app_id);
}

/* ---- properties ------------------------------------------------------- */

static int append_states(DBusMessageIter *it, const struct vms_msg *list)
{
    DBusMessageIter arr;
    int ok = dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "(ssssx)", &arr);

    for (size_t i = 0; ok && i < list->n_states; i++) {
        const struct vms_state_info *s = &list->states[i];
        DBusMessageIter st;
        const char *id = s->id, *label = s->label, *app = s->app_id, *parent = s->parent;
        dbus_int64_t created = s->created;

        ok = dbus_message_iter_open_container(&arr, DBUS_TYPE_STRUCT, NULL, &st) &&
             dbus_message_iter_append_basic(&st, DBUS_TYPE_STRING, &id) &&
             dbus_message_iter_append_basic(&st, DBUS_TYPE_STRING, &label) &&
             dbus_message_iter_append_basic(&st, DBUS_TYPE_STRING, &app) &&
             dbus_message_iter_append_basic(&st, DBUS_TYPE_STRING, &parent) &&
             dbus_message_iter_append_basic(&st, DBUS_TYPE_INT64, &created) &&
             dbus_message_iter_close_container(&arr, &st);
    }
    return ok && dbus_message_iter_close_container(it, &arr);
}

/* 1 if property @name tells about apps' states: readable only by allowed callers, like
 * ListStates (issue 13, item 10), and never carried by the broadcast PropertiesChanged. */
static int property_is_private(const char *name)
{
    return !strcmp(name, "States");
}

/* Append property @name as a variant. Returns 1, 0 on OOM, -1 if unknown. */
static int append_property(struct helper *h, DBusMessageIter *it, const char *name)
{
    DBusMessageIter v;

    if (!strcmp(name, "BridgeConnected")) {
        dbus_bool_t b = h->bridge_connected ? TRUE : FALSE;
        return dbus_message_iter_open_container(it, DBUS_TYPE_VARIANT, "b", &v) &&
               dbus_message_iter_append_basic(&v, DBUS_TYPE_BOOLEAN, &b) &&
               dbus_message_iter_close_container(it, &v);
    }
    if (!strcmp(name, "Epoch")) {
        dbus_uint64_t e = h->epoch;
        return dbus_message_iter_open_container(it, DBUS_TYPE_VARIANT, "t", &v) &&
               dbus_message_iter_append_basic(&v, DBUS_TYPE_UINT64, &e) &&
               dbus_message_iter_close_container(it, &v);
    }
    if (!strcmp(name, "States")) {
        return dbus_message_iter_open_container(it, DBUS_TYPE_VARIANT, "a(ssssx)", &v) &&
               append_states(&v, &h->last_list) && dbus_message_iter_close_container(it, &v);
    }
    return -1;
}

static const char *const property_names[] = {"BridgeConnected", "States", "Epoch"};

static int append_property_entry(struct helper *h, DBusMessageIter *dict, const char *name)
{
    DBusMessageIter e;

    return dbus_message_iter_open_container(dict, DBUS_TYPE_DICT_ENTRY, NULL, &e) &&
           dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &name) &&
           append_property(h, &e, name) == 1 && dbus_message_iter_close_container(dict, &e);
}

static void handle_properties(struct helper *h, DBusMessage *call, const char *member)
{
    const char *iface = NULL, *name = NULL;
    DBusMessage *reply = NULL;
    DBusMessageIter it, dict;

    if (!strcmp(member, "Set")) {
        reply_error(h->bus, call, DBUS_ERROR_PROPERTY_READ_ONLY, "properties are read-only");
        return;
    }
    if (!strcmp(member, "Get")) {
        if (!dbus_message_get_args(call, NULL, DBUS_TYPE_STRING, &iface, DBUS_TYPE_STRING, &name,
                                   DBUS_TYPE_INVALID)) {
            reply_error(h->bus, call, DBUS_ERROR_INVALID_ARGS, "expected (ss)");
            return;
        }
        if (!strcmp(iface, VMS_DBUS_IFACE) && property_is_private(name) &&
            check_caller(h, call) < 0)
            return;
        reply = dbus_message_new_method_return(call);
        if (!reply)
            return;
        dbus_message_iter_init_append(reply, &it);
        if (strcmp(iface, VMS_DBUS_IFACE) != 0 || append_property(h, &it, name) != 1) {
            dbus_message_unref(reply);
            reply_error(h->bus, call, DBUS_ERROR_UNKNOWN_PROPERTY, "no property %s.%s", iface,
                        name);
            return;
        }
    } else if (!strcmp(member, "GetAll")) {
        if (!dbus_message_get_args(call, NULL, DBUS_TYPE_STRING, &iface, DBUS_TYPE_INVALID)) {
            reply_error(h->bus, call, DBUS_ERROR_INVALID_ARGS, "expected (s)");
            return;
        }
        long uid = caller_uid(h->bus, call);
        int allowed = uid >= 0 && helper_config_uid_allowed(&h->cfg, (uid_t)uid);

        reply = dbus_message_new_method_return(call);
        if (!reply)
            return;
        dbus_message_iter_init_append(reply, &it);
        dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &dict);
        if (!strcmp(iface, VMS_DBUS_IFACE))
            for (size_t i = 0; i < sizeof(property_names) / sizeof(*property_names); i++)
                if (allowed || !property_is_private(property_names[i]))
                    append_property_entry(h, &dict, property_names[i]);
        dbus_message_iter_close_container(&it, &dict);
    } else {
        reply_error(h->bus, call, DBUS_ERROR_UNKNOWN_METHOD, "no method %s", member);
        return;
    }
    dbus_connection_send(h->bus, reply, NULL);
    dbus_message_unref(reply);
}

void helper_bus_property_changed(struct helper *h, const char *property)
{
    DBusMessage *sig;
    DBusMessageIter it, dict, inval;
    const char *iface = VMS_DBUS_IFACE;

    if (!h->bus)
        return;
    sig = dbus_message_new_signal(VMS_DBUS_PATH, DBUS_INTERFACE_PROPERTIES, "PropertiesChanged");
    if (!sig)
        return;
    dbus_message_iter_init_append(sig, &it);
    /* a broadcast reaches every connection: a private property is only named as invalidated,
     * and its value is read with Get, which checks the caller */
    if (dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &iface) &&
        dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &dict) &&
        (property_is_private(property) || append_property_entry(h, &dict, property)) &&
        dbus_message_iter_close_container(&it, &dict) &&
        dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "s", &inval) &&
        (!property_is_private(property) ||
         dbus_message_iter_append_basic(&inval, DBUS_TYPE_STRING, &property)) &&
        dbus_message_iter_close_container(&it, &inval))
        dbus_connection_send(h->bus, sig, NULL);
    dbus_message_unref(sig);
}

/* ---- signals ---------------------------------------------------------- */

/*
 * The signals are marshalled here (vms-marshal.h) and handed to libdbus with
 * dbus_message_demarshal(), which validates them as it validates a peer's. Built through
 * libdbus's writer, a hostinfo's Completed cost the helper 190 k of its 438 k instructions
 * per request: the signature check of every variant and a rewrite of the header's
 * signature field after every argument (callgrind, bench/RESULTS.md §18).
 */

/* The signal @write(@ctx) marshals, ready to send, or NULL (logged). A demarshalled message
 * keeps the serial it was written with; the copy returned has none, so the connection
 * gives it the next one. */
static DBusMessage *signal_marshalled(vms_wb_writer *write, const void *ctx, const char *member,
                                      const char *request_id)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    DBusMessage *in, *out = NULL;
    DBusError err;

    if (vms_wb_build(write, ctx, DBUS_MAXIMUM_MESSAGE_LENGTH, &bytes, &len) < 0) {
        vms_err(NULL, request_id, "out of memory building %s", member);
        return NULL;
    }
    dbus_error_init(&err);
    in = dbus_message_demarshal((const char *)bytes, (int)len, &err);
    free(bytes);
    if (!in) {
        vms_err(NULL, request_id, "%s refused by libdbus: %s", member,
                err.message ? err.message : "out of memory");
        dbus_error_free(&err);
        return NULL;
    }
    out = dbus_message_copy(in);
    dbus_message_unref(in);
    if (!out)
        vms_err(NULL, request_id, "out of memory building %s", member);
    return out;
}

/* A signal whose arguments are all basic: its signature (of s, u, t, x and d only) and
 * one value per type code, in order. */
struct basic_signal {
    const char *interface, *member, *signature;
    struct {
        const char *s;
        uint64_t u; /* u, t; x as its two's complement */
        double d;
    } args[5];
};

static void wb_basic_signal(struct vms_wbuf *w, const void *ctx)
{
    const struct basic_signal *b = ctx;
    struct vms_wb_signal sig =
        vms_wb_signal_begin(w, VMS_DBUS_PATH, b->interface, b->member, NULL, b->signature);

    for (int i = 0; b->signature[i]; i++) {
        uint64_t bits;
        switch (b->signature[i]) {
        case 's':
            vms_wb_str(w, b->args[i].s);
            break;
        case 'u':
            vms_wb_u32(w, (uint32_t)b->args[i].u);
            break;
        case 'd':
            memcpy(&bits, &b->args[i].d, sizeof(bits));
            vms_wb_u64(w, bits);
            break;
        default: /* t, x */
            vms_wb_u64(w, b->args[i].u);
        }
    }
    vms_wb_signal_end(w, sig);
}

/* Completed's details a{sv}, in the order org.vmstate.Helper1.xml gives them. The wire
 * fields go as the wire has them, but for three counts the API gives as t. */
static void wb_details(struct vms_wbuf *w, const struct vms_msg *ev)
{
    static const enum vms_field details[] = {
        VMS_F_PARENT_ID,
        VMS_F_REASON,
        VMS_F_HOSTNAME,
        VMS_F_BRIDGE_VERSION,
        VMS_F_BYTES,
        VMS_F_FREE_BYTES,
        VMS_F_MEM_BYTES,
        VMS_F_SEQ,
        VMS_F_CREATOR,
        VMS_F_HOST_MEM_TOTAL,
        VMS_F_HOST_MEM_AVAILABLE,
        VMS_F_HOST_CPUS,
        VMS_F_HOST_LOAD_MILLI,
        VMS_F_VCPUS,
        VMS_F_MEM_BOOT,
        VMS_F_MEM_MIN,
        VMS_F_MEM_MAX,
        VMS_F_HYPERVISOR_VERSION,
        VMS_F_OPS,
        VMS_F_MODE,
        VMS_F_RESULTS,
        VMS_F_QUOTAS,
        VMS_F_STATES,
    };
    struct vms_wb_array dict = vms_wb_array_begin(w, 8);

    for (size_t i = 0; i < sizeof(details) / sizeof(details[0]); i++) {
        enum vms_field f = details[i];
        const char *key = NULL;
        uint64_t widened = 0;

        if (!vms_msg_has(ev, f))
            continue;
        if (f == VMS_F_HOST_CPUS)
            key = "host_cpus", widened = ev->host_cpus;
        else if (f == VMS_F_HOST_LOAD_MILLI)
            key = "host_load_milli", widened = ev->host_load_milli;
        else if (f == VMS_F_VCPUS)
            key = "vcpus", widened = ev->vcpus;
        if (!key) {
            vms_wb_msg_field(w, ev, f);
            continue;
        }
        vms_wb_pad(w, 8);
        vms_wb_str(w, key);
        vms_wb_sig(w, "t");
        vms_wb_u64(w, widened);
    }
    vms_wb_array_end(w, dict);
}

/* Completed(request_id, operation, status, message, state_id, label, app_id, app_data,
 * epoch, details), without a destination */
static void wb_completed(struct vms_wbuf *w, const void *ctx)
{
    const struct vms_msg *ev = ctx;
    const char *msg = ev->message[0] || ev->status == 0 ? ev->message : vms_status_str(ev->status);
    struct vms_wb_signal sig =
        vms_wb_signal_begin(w, VMS_DBUS_PATH, VMS_DBUS_IFACE, "Completed", NULL, "ssussssayta{sv}");
    struct vms_wb_array data;

    vms_wb_str(w, ev->request_id);
    vms_wb_str(w, ev->op);
    vms_wb_u32(w, ev->status);
    vms_wb_str(w, msg);
    vms_wb_str(w, ev->state_id);
    vms_wb_str(w, ev->label);
    vms_wb_str(w, ev->app_id);
    data = vms_wb_array_begin(w, 1);
    vms_wb_bytes(w, ev->app_data, ev->app_data_len);
    vms_wb_array_end(w, data);
    vms_wb_u64(w, ev->epoch);
    wb_details(w, ev);
    vms_wb_signal_end(w, sig);
}

/* A fan-out queues one signal per listener, and dbus-daemon takes them slower than the
 * helper makes them: with 1000 listeners the queue (~0.7 MiB) was the helper's peak memory.
 * Past FANOUT_QUEUE_HIGH bytes waiting, wait for the bus to take them down to
 * FANOUT_QUEUE_LOW; dbus-daemon is the bottleneck either way, so the last listener hears no
 * later. The whole fan-out waits at most FANOUT_WAIT_MS: a bus that stalls gets the queue
 * back, not the helper stuck. */
#define FANOUT_QUEUE_HIGH (64 * 1024)
#define FANOUT_QUEUE_LOW  (16 * 1024)
#define FANOUT_WAIT_MS    1000

/* 1 if it waited for the bus */
static int fanout_pace(struct helper *h, uint64_t deadline_ms)
{
    int waited = 0;

    if (dbus_connection_get_outgoing_size(h->bus) <= FANOUT_QUEUE_HIGH)
        return 0;
    while (dbus_connection_get_outgoing_size(h->bus) > FANOUT_QUEUE_LOW &&
           dbus_connection_get_is_connected(h->bus)) {
        uint64_t now = helper_now_ms();
        if (now >= deadline_ms)
            break;
        /* writes what the socket takes, else polls until it can (reads are queued, not
         * dispatched: this may run inside a handler) */
        dbus_connection_read_write(h->bus, (int)(deadline_ms - now));
        waited = 1;
    }
    return waited;
}

/* Send @sig to each of @owners (a copy with its own destination each; @sig itself to the
 * last, consumed), pacing the queue to the bus. Returns how many times it waited. */
static unsigned send_to_each(struct helper *h, DBusMessage *sig, const char *const *owners,
                             unsigned n, const char *request_id, const char *member)
{
    uint64_t deadline = helper_now_ms() + FANOUT_WAIT_MS;
    unsigned waits = 0;

    for (unsigned i = 0; i < n; i++) {
        DBusMessage *m = i + 1 < n ? dbus_message_copy(sig) : sig;
        if (!m || !dbus_message_set_destination(m, owners[i]) ||
            !dbus_connection_send(h->bus, m, NULL))
            vms_err(NULL, request_id, "out of memory sending %s to %s", member, owners[i]);
        if (m && m != sig)
            dbus_message_unref(m);
        waits += (unsigned)fanout_pace(h, deadline);
    }
    dbus_message_unref(sig);
    return waits;
}

void helper_bus_emit_completed(struct helper *h, const char *const *owners, unsigned n,
                               const struct vms_msg *ev)
{
    DBusMessage *sig;
    unsigned waits;

    if (!h->bus || n == 0)
        return;
    /* Marshal the body once: with many listeners, building each copy from the
     * event was most of the helper's work (callgrind, bench/ANALYSIS.md); a
     * copy with its own destination costs a memcpy and a header field. */
    sig = signal_marshalled(wb_completed, ev, "Completed", ev->request_id);
    if (!sig)
        return;
    waits = send_to_each(h, sig, owners, n, ev->request_id, "Completed");
    if (waits)
        vms_debug(NULL, ev->request_id, "Completed to %u listeners: waited %u times for the bus", n,
                  waits);
}

void helper_bus_emit_state_change(struct helper *h, const char *member, const char *const *owners,
                                  unsigned n, const struct vms_msg *ev)
{
    DBusMessage *sig;
    const char *sid = ev->state_id, *label = ev->label, *parent = ev->parent_id;
    /* a save's creator is its requester; a delete names the state's creator */
    const char *creator = vms_msg_has(ev, VMS_F_CREATOR) ? ev->creator
                          : !strcmp(ev->op, "save")      ? ev->app_id
                                                         : "";
    struct basic_signal b = {
        VMS_DBUS_IFACE,
        member,
        "sssst",
        {{.s = sid}, {.s = label}, {.s = creator}, {.s = parent}, {.u = ev->epoch}}};

    if (!h->bus || n == 0)
        return;
    sig = signal_marshalled(wb_basic_signal, &b, member, ev->request_id);
    if (!sig)
        return;
    (void)send_to_each(h, sig, owners, n, ev->request_id, member);
}

/* Send the broadcast signal @b (org.vmstate.Helper1.Broadcast, no destination). */
static void emit_broadcast(struct helper *h, struct basic_signal *b)
{
    DBusMessage *sig;

    if (!h->bus)
        return;
    b->interface = VMS_DBUS_BROADCAST_IFACE;
    sig = signal_marshalled(wb_basic_signal, b, b->member, NULL);
    if (!sig)
        return;
    dbus_connection_send(h->bus, sig, NULL);
    dbus_message_unref(sig);
}

void helper_bus_emit_restored(struct helper *h, const char *state_id, uint64_t epoch)
{
    struct basic_signal b = {NULL, "Restored", "st", {{.s = state_id}, {.u = epoch}}};

    emit_broadcast(h, &b);
}

void helper_bus_emit_clock_corrected(struct helper *h, int64_t correction_ns, const char *reason)
{
    struct basic_signal b = {
        NULL,
        "ClockCorrected",
        "dxs",
        {{.d = correction_ns / 1e9}, {.u = (uint64_t)correction_ns}, {.s = reason}}};

    emit_broadcast(h, &b);
}

void helper_bus_emit_prepare_save(struct helper *h, const char *request_id, const char *label)
{
    struct basic_signal b = {NULL, "PrepareSave", "ss", {{.s = request_id}, {.s = label}}};

    emit_broadcast(h, &b);
}

void helper_bus_emit_notice(struct helper *h, const char *reason, const char *message)
{
    struct basic_signal b = {NULL, "Notice", "ss", {{.s = reason}, {.s = message}}};

    emit_broadcast(h, &b);
}

/* Inhibit(request_id, reason): veto the save being prepared (helper-hooks.c). */
static void handle_inhibit(struct helper *h, DBusMessage *call)
{
    const char *id, *reason;
    long uid;

    if (!dbus_message_get_args(call, NULL, DBUS_TYPE_STRING, &id, DBUS_TYPE_STRING, &reason,
                               DBUS_TYPE_INVALID)) {
        reply_error(h->bus, call, VMS_DBUS_ERR_INVALID, "Inhibit takes (ss)");
        return;
    }
    uid = check_caller(h, call);
    if (uid < 0)
        return;
    if (!vms_valid_request_id(id) || !vms_valid_text(reason) || strlen(reason) > 200) {
        reply_error(h->bus, call, VMS_DBUS_ERR_INVALID,
                    "bad request id or reason (text of at most 200 bytes, no control characters)");
        return;
    }
    /* a save affects every app of the VM, but only an app that listens (or root) may veto
     * it: otherwise any allowed user could veto every save (issue 13, item 11) */
    if (uid != 0 && !helper_listener_registered(h, dbus_message_get_sender(call))) {
        vms_warn(NULL, id, "Inhibit refused: uid %ld (%s) holds no listener registration", uid,
                 dbus_message_get_sender(call));
        reply_error(h->bus, call, VMS_DBUS_ERR_PERMISSION,
                    "only a registered listener (RegisterListener) or root may inhibit a save");
        return;
    }
    vms_info(NULL, id, "Inhibit by uid %ld (%s)", uid, dbus_message_get_sender(call));
    if (helper_hooks_inhibit(h, id, reason, uid) < 0) {
        reply_error(h->bus, call, VMS_DBUS_ERR_NOT_FOUND,
                    "no save %s is being prepared (too late, or never announced)", id);
        return;
    }
    reply_empty(h->bus, call);
}

/* Proceed(request_id): this listener has nothing to veto; do not wait for it. */
static void handle_proceed(struct helper *h, DBusMessage *call)
{
    const char *id;

    if (!dbus_message_get_args(call, NULL, DBUS_TYPE_STRING, &id, DBUS_TYPE_INVALID) ||
        !vms_valid_request_id(id)) {
        reply_error(h->bus, call, VMS_DBUS_ERR_INVALID, "Proceed takes a request id (s)");
        return;
    }
    if (check_caller(h, call) < 0)
        return;
    if (helper_hooks_proceed(h, id, dbus_message_get_sender(call)) < 0) {
        reply_error(h->bus, call, VMS_DBUS_ERR_NOT_FOUND,
                    "no save %s is being prepared (too late, or never announced)", id);
        return;
    }
    reply_empty(h->bus, call);
}

/* GetRequest(request_id) -> (status, operation, app_id): where a request stands in this helper:
 * "queued" (waiting for the bridge), "sent" (the host has it), "completed" (its completion is
 * held for a listener) or "delivered"; NotFound if the helper never saw it (or forgot it). */
static void handle_get_request(struct helper *h, DBusMessage *call)
{
    const char *id, *status = NULL, *op = "", *app = "";
    DBusMessage *r;
    long uid;

    if (!dbus_message_get_args(call, NULL, DBUS_TYPE_STRING, &id, DBUS_TYPE_INVALID) ||
        !vms_valid_request_id(id)) {
        reply_error(h->bus, call, VMS_DBUS_ERR_INVALID, "GetRequest takes a request id (s)");
        return;
    }
    uid = check_caller(h, call);
    if (uid < 0)
        return;
    for (struct helper_request *q = h->requests; q && !status; q = q->next)
        if (!strcmp(q->msg.request_id, id))
            status = q->sent ? "sent" : "queued", op = q->msg.op, app = q->msg.app_id;
    for (int list = 0; list < 2 && !status; list++)
        for (struct helper_held *e = list ? h->deferred : h->held; e && !status; e = e->next)
            if (!strcmp(e->ev.request_id, id))
                status = "completed", op = e->ev.op, app = e->ev.app_id;
    if (!status && vms_dedup_seen(&h->delivered, 0, id))
        status = "delivered";
    if (!status) {
        reply_error(h->bus, call, VMS_DBUS_ERR_NOT_FOUND, "no request %s in this helper", id);
        return;
    }
    if (app[0] && check_app(h, call, app, uid) < 0) /* another app's request: not yours */
        return;
    r = dbus_message_new_method_return(call);
    if (r && dbus_message_append_args(r, DBUS_TYPE_STRING, &status, DBUS_TYPE_STRING, &op,
                                      DBUS_TYPE_STRING, &app, DBUS_TYPE_INVALID))
        dbus_connection_send(h->bus, r, NULL);
    if (r)
        dbus_message_unref(r);
}

/* ---- dispatch --------------------------------------------------------- */

static DBusHandlerResult on_object_message(DBusConnection *c, DBusMessage *m, void *data)
{
    struct helper *h = data;
    const char *iface = dbus_message_get_interface(m);
    const char *member = dbus_message_get_member(m);

    (void)c;
    if (dbus_message_get_type(m) != DBUS_MESSAGE_TYPE_METHOD_CALL || !member)
        return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
    if (uid_ask_defer(h->bus, m))
        return DBUS_HANDLER_RESULT_HANDLED; /* on_uid_answer handles it */
    if (iface && !strcmp(iface, DBUS_INTERFACE_INTROSPECTABLE) && !strcmp(member, "Introspect")) {
        DBusMessage *r = dbus_message_new_method_return(m);
        const char *xml = helper_introspect_xml;
        if (r && dbus_message_append_args(r, DBUS_TYPE_STRING, &xml, DBUS_TYPE_INVALID))
            dbus_connection_send(h->bus, r, NULL);
        if (r)
            dbus_message_unref(r);
        return DBUS_HANDLER_RESULT_HANDLED;
    }
    if (iface && !strcmp(iface, DBUS_INTERFACE_PROPERTIES)) {
        handle_properties(h, m, member);
        return DBUS_HANDLER_RESULT_HANDLED;
    }
    if (iface && strcmp(iface, VMS_DBUS_IFACE) != 0)
        return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
    for (size_t i = 0; i < sizeof(request_methods) / sizeof(*request_methods); i++)
        if (!strcmp(member, request_methods[i].name)) {
            handle_request(h, m, &request_methods[i]);
            return DBUS_HANDLER_RESULT_HANDLED;
        }
    if (!strcmp(member, "RegisterListener")) {
        handle_listener(h, m, 1);
        return DBUS_HANDLER_RESULT_HANDLED;
    }
    if (!strcmp(member, "Inhibit")) {
        handle_inhibit(h, m);
        return DBUS_HANDLER_RESULT_HANDLED;
    }
    if (!strcmp(member, "Proceed")) {
        handle_proceed(h, m);
        return DBUS_HANDLER_RESULT_HANDLED;
    }
    if (!strcmp(member, "GetRequest")) {
        handle_get_request(h, m);
        return DBUS_HANDLER_RESULT_HANDLED;
    }
    if (!strcmp(member, "UnregisterListener")) {
        handle_listener(h, m, 0);
        return DBUS_HANDLER_RESULT_HANDLED;
    }
    reply_error(h->bus, m, DBUS_ERROR_UNKNOWN_METHOD, "no method %s on %s", member, VMS_DBUS_IFACE);
    return DBUS_HANDLER_RESULT_HANDLED;
}

/* A listener's connection closed: its registrations end (NameOwnerChanged name, old, ""). */
static DBusHandlerResult on_filter(DBusConnection *c, DBusMessage *m, void *data)
{
    struct helper *h = data;
    const char *name, *old_owner, *new_owner;

    (void)c;
    if (dbus_message_is_signal(m, DBUS_INTERFACE_DBUS, "NameOwnerChanged") &&
        dbus_message_get_args(m, NULL, DBUS_TYPE_STRING, &name, DBUS_TYPE_STRING, &old_owner,
                              DBUS_TYPE_STRING, &new_owner, DBUS_TYPE_INVALID) &&
        name[0] == ':') {
        if (!new_owner[0]) {
            helper_listener_owner_gone(h, name);
            uid_cache_forget(name);
        }
    }
    return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
}

int helper_bus_open(struct helper *h, const char *address)
{
    static const DBusObjectPathVTable vtable = {.message_function = on_object_message};
    DBusError err;
    int r;

    dbus_error_init(&err);
    if (address) {
        h->bus = dbus_connection_open_private(address, &err);
        if (h->bus && !dbus_bus_register(h->bus, &err)) {
            dbus_connection_close(h->bus);
            dbus_connection_unref(h->bus);
            h->bus = NULL;
        }
    } else {
        h->bus = dbus_bus_get_private(DBUS_BUS_SYSTEM, &err);
    }
    if (!h->bus) {
        vms_err(NULL, NULL, "cannot connect to the %s bus: %s", address ? address : "system",
                err.message);
        goto fail;
    }
    dbus_connection_set_exit_on_disconnect(h->bus, FALSE);
    uid_ask_helper = h;
    if (!dbus_connection_register_object_path(h->bus, VMS_DBUS_PATH, &vtable, h) ||
        !dbus_connection_add_filter(h->bus, on_filter, h, NULL)) {
        vms_err(NULL, NULL, "out of memory setting up D-Bus");
        goto fail;
    }
    dbus_bus_add_match(h->bus, NOC_MATCH, &err);
    if (dbus_error_is_set(&err)) {
        vms_err(NULL, NULL, "cannot watch NameOwnerChanged: %s", err.message);
        goto fail;
    }
    r = dbus_bus_request_name(h->bus, VMS_DBUS_NAME, DBUS_NAME_FLAG_DO_NOT_QUEUE, &err);
    if (r != DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER) {
        vms_err(NULL, NULL, "cannot own %s: %s", VMS_DBUS_NAME,
                dbus_error_is_set(&err) ? err.message : "another helper owns it");
        goto fail;
    }
    vms_info(NULL, NULL, "on the bus as %s (%s)", VMS_DBUS_NAME, dbus_bus_get_unique_name(h->bus));
    return 0;
fail:
    dbus_error_free(&err);
    helper_bus_close(h);
    return -1;
}

void helper_bus_close(struct helper *h)
{
    if (!h->bus)
        return;
    uid_ask_free_all();
    dbus_connection_close(h->bus);
    dbus_connection_unref(h->bus);
    h->bus = NULL;
}
