/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vms-proto.c — schema, encoder and decoder of the wire messages.
 */
#include "config.h"

#include <dbus/dbus.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "vms-marshal.h"
#include "vms-proto.h"
#include "vms-wire.h"

/* ---- the schema ------------------------------------------------------- */

enum field_kind {
    FK_U32,       /* "u" */
    FK_U64,       /* "t" */
    FK_ID,        /* "s", vms_valid_id */
    FK_REQID,     /* "s", vms_valid_request_id */
    FK_TEXT,      /* "s", vms_valid_text */
    FK_SECRET,    /* "s", any valid UTF-8 up to VMS_STR_MAX */
    FK_BYTES,     /* "ay", up to VMS_APP_DATA_MAX */
    FK_CAPS,      /* "as", known names mapped to VMS_CAP_* bits */
    FK_STATES,    /* "a(ssssx)": id, label, app_id, parent, created */
    FK_FOLLOWUPS, /* "a(st)": op, argument */
    FK_RESULTS,   /* "a(sus)": op, status, message */
    FK_QUOTAS,    /* "a(stt)": name, limit, used */
};

struct field_desc {
    const char *key;
    enum field_kind kind;
    size_t offset; /* into struct vms_msg; unused for FK_BYTES/FK_STATES */
};

#define FIELD(f, key, kind, member) [f] = {key, kind, offsetof(struct vms_msg, member)}
static const struct field_desc field_table[VMS_F__COUNT] = {
    FIELD(VMS_F_VERSION, "version", FK_U32, version),
    FIELD(VMS_F_MIN_VERSION, "min_version", FK_U32, min_version),
    FIELD(VMS_F_CAPS, "caps", FK_CAPS, caps),
    FIELD(VMS_F_NONCE, "nonce", FK_U64, nonce),
    FIELD(VMS_F_HOST_NONCE, "host_nonce", FK_U64, host_nonce),
    FIELD(VMS_F_EPOCH, "epoch", FK_U64, epoch),
    FIELD(VMS_F_SEQ, "seq", FK_U64, seq),
    FIELD(VMS_F_REQUEST_ID, "request_id", FK_REQID, request_id),
    FIELD(VMS_F_OP, "op", FK_ID, op),
    FIELD(VMS_F_APP_ID, "app_id", FK_ID, app_id),
    FIELD(VMS_F_PRINCIPAL, "principal", FK_ID, principal),
    FIELD(VMS_F_SECRET, "secret", FK_SECRET, secret),
    FIELD(VMS_F_UID, "uid", FK_U32, uid),
    FIELD(VMS_F_APP_DATA, "app_data", FK_BYTES, app_data),
    FIELD(VMS_F_LABEL, "label", FK_TEXT, label),
    FIELD(VMS_F_STATE_ID, "state_id", FK_ID, state_id),
    FIELD(VMS_F_BYTES, "bytes", FK_U64, bytes),
    FIELD(VMS_F_STATUS, "status", FK_U32, status),
    FIELD(VMS_F_MESSAGE, "message", FK_TEXT, message),
    FIELD(VMS_F_STATES, "states", FK_STATES, states),
    FIELD(VMS_F_FREE_BYTES, "free_bytes", FK_U64, free_bytes),
    FIELD(VMS_F_MEM_BYTES, "mem_bytes", FK_U64, mem_bytes),
    FIELD(VMS_F_HOSTNAME, "hostname", FK_TEXT, hostname),
    FIELD(VMS_F_BRIDGE_VERSION, "bridge_version", FK_TEXT, bridge_version),
    FIELD(VMS_F_REASON, "reason", FK_TEXT, reason),
    FIELD(VMS_F_PARENT_ID, "parent_id", FK_ID, parent_id),
    FIELD(VMS_F_TIME_NS, "time_ns", FK_U64, time_ns),
    FIELD(VMS_F_TIMEOUT_MS, "timeout_ms", FK_U32, timeout_ms),
    FIELD(VMS_F_CREATOR, "creator", FK_ID, creator),
    FIELD(VMS_F_FOLLOWUPS, "followups", FK_FOLLOWUPS, followups),
    FIELD(VMS_F_RESULTS, "results", FK_RESULTS, results),
    FIELD(VMS_F_HOST_MEM_TOTAL, "host_mem_total", FK_U64, host_mem_total),
    FIELD(VMS_F_HOST_MEM_AVAILABLE, "host_mem_available", FK_U64, host_mem_available),
    FIELD(VMS_F_HOST_CPUS, "host_cpus", FK_U32, host_cpus),
    FIELD(VMS_F_HOST_LOAD_MILLI, "host_load_milli", FK_U32, host_load_milli),
    FIELD(VMS_F_VCPUS, "vcpus", FK_U32, vcpus),
    FIELD(VMS_F_MEM_BOOT, "mem_boot", FK_U64, mem_boot),
    FIELD(VMS_F_MEM_MIN, "mem_min", FK_U64, mem_min),
    FIELD(VMS_F_MEM_MAX, "mem_max", FK_U64, mem_max),
    FIELD(VMS_F_HYPERVISOR_VERSION, "hypervisor_version", FK_TEXT, hypervisor_version),
    FIELD(VMS_F_OPS, "ops", FK_TEXT, ops),
    FIELD(VMS_F_QUOTAS, "quotas", FK_QUOTAS, quotas),
    FIELD(VMS_F_MODE, "mode", FK_ID, mode),
};

static const char *const kind_signature[] = {
    [FK_U32] = "u",           [FK_U64] = "t",          [FK_ID] = "s",
    [FK_REQID] = "s",         [FK_TEXT] = "s",         [FK_SECRET] = "s",
    [FK_BYTES] = "ay",        [FK_CAPS] = "as",        [FK_STATES] = "a(ssssx)",
    [FK_FOLLOWUPS] = "a(st)", [FK_RESULTS] = "a(sus)", [FK_QUOTAS] = "a(stt)",
};

struct msg_desc {
    const char *name;  /* D-Bus member name on the wire */
    uint64_t required; /* VMS_BIT()s a valid message must carry */
};

static const struct msg_desc msg_table[VMS_MSG__COUNT] = {
    [VMS_MSG_UNKNOWN] = {"Unknown", 0},
    [VMS_MSG_HELLO] = {"Hello", VMS_BIT(VMS_F_VERSION) | VMS_BIT(VMS_F_NONCE)},
    [VMS_MSG_WELCOME] = {"Welcome",
                         VMS_BIT(VMS_F_VERSION) | VMS_BIT(VMS_F_NONCE) | VMS_BIT(VMS_F_EPOCH)},
    [VMS_MSG_REQUEST] = {"Request", VMS_BIT(VMS_F_REQUEST_ID) | VMS_BIT(VMS_F_OP) |
                                        VMS_BIT(VMS_F_APP_ID) | VMS_BIT(VMS_F_PRINCIPAL) |
                                        VMS_BIT(VMS_F_SECRET)},
    [VMS_MSG_REPLY] = {"Reply", VMS_BIT(VMS_F_REQUEST_ID) | VMS_BIT(VMS_F_STATUS)},
    [VMS_MSG_EVENT] = {"Event", VMS_BIT(VMS_F_REQUEST_ID) | VMS_BIT(VMS_F_OP) |
                                    VMS_BIT(VMS_F_STATUS) | VMS_BIT(VMS_F_EPOCH) |
                                    VMS_BIT(VMS_F_SEQ)},
    [VMS_MSG_ACK] = {"Ack", VMS_BIT(VMS_F_REQUEST_ID) | VMS_BIT(VMS_F_EPOCH) | VMS_BIT(VMS_F_SEQ)},
    [VMS_MSG_TIMELINE] = {"Timeline", VMS_BIT(VMS_F_EPOCH)},
    [VMS_MSG_CLOCK] = {"Clock", VMS_BIT(VMS_F_REASON)}, /* time_ns optional (connect) */
    [VMS_MSG_PREPARE] = {"Prepare", VMS_BIT(VMS_F_REQUEST_ID) | VMS_BIT(VMS_F_TIMEOUT_MS)},
    [VMS_MSG_READY] = {"Ready", VMS_BIT(VMS_F_REQUEST_ID) | VMS_BIT(VMS_F_STATUS)},
    [VMS_MSG_NOTICE] = {"Notice", VMS_BIT(VMS_F_REASON) | VMS_BIT(VMS_F_MESSAGE)},
    [VMS_MSG_TIME_PROBE] = {"TimeProbe", VMS_BIT(VMS_F_NONCE)},
    [VMS_MSG_TIME] = {"Time", VMS_BIT(VMS_F_NONCE)}, /* time_ns absent: the host does not sync */
};

static const char *const op_names[VMS_OP__COUNT] = {
    [VMS_OP_UNKNOWN] = "unknown",       [VMS_OP_SAVE] = "save",
    [VMS_OP_RESTORE] = "restore",       [VMS_OP_LIST] = "list",
    [VMS_OP_DELETE] = "delete",         [VMS_OP_HOSTINFO] = "hostinfo",
    [VMS_OP_SET_MEMORY] = "set-memory", [VMS_OP_SUSPEND] = "suspend",
};

static const struct {
    const char *name;
    const char *text;
} status_table[VMS_STATUS__COUNT] = {
    [VMS_STATUS_OK] = {"ok", "success"},
    [VMS_STATUS_ERR_INVALID] = {"invalid", "the request is malformed"},
    [VMS_STATUS_ERR_AUTH] = {"auth", "unknown principal or wrong secret"},
    [VMS_STATUS_ERR_DENIED] = {"denied", "the principal has no right to do this on this VM"},
    [VMS_STATUS_ERR_QUOTA] = {"quota", "a quota of this VM is exhausted"},
    [VMS_STATUS_ERR_RATE_LIMITED] = {"rate-limited", "too many attempts; try again later"},
    [VMS_STATUS_ERR_NOT_FOUND] = {"not-found", "no such state for this VM"},
    [VMS_STATUS_ERR_BACKEND] = {"backend", "the hypervisor failed the operation"},
    [VMS_STATUS_ERR_UNSUPPORTED] = {"unsupported", "operation not supported"},
    [VMS_STATUS_ERR_VERSION] = {"version", "no common protocol version"},
    [VMS_STATUS_ERR_BUSY] = {"busy", "busy; try again later"},
    [VMS_STATUS_ERR_UNAVAILABLE] = {"unavailable", "the host bridge is not reachable"},
    [VMS_STATUS_ERR_ABORTED] = {"aborted", "the operation was interrupted"},
    [VMS_STATUS_ERR_PERMISSION] = {"permission", "this user may not use vmstate"},
    [VMS_STATUS_ERR_INHIBITED] = {"inhibited", "an application vetoed the operation"},
    [VMS_STATUS_ERR_TIMEOUT] = {"timeout", "the operation timed out"},
    [VMS_STATUS_ERR_INTERNAL] = {"internal", "internal error"},
};

static const struct {
    const char *name;
    uint32_t bit;
} cap_table[] = {
    /* clang-format off */
    {"timeline", VMS_CAP_TIMELINE},
    {"ack", VMS_CAP_ACK},
    {"hostinfo", VMS_CAP_HOSTINFO},
    {"clock", VMS_CAP_CLOCK},
    {"prepare", VMS_CAP_PREPARE},
    {"time-probe", VMS_CAP_TIME_PROBE},
    /* clang-format on */
};

#define CAPS_MAX_ENTRIES 64 /* bound the work on a hostile caps list */

/* ---- names ------------------------------------------------------------ */

const char *vms_msg_type_name(enum vms_msg_type t)
{
    return (unsigned)t < VMS_MSG__COUNT ? msg_table[t].name : "Unknown";
}

const char *vms_op_name(enum vms_op op)
{
    return (unsigned)op < VMS_OP__COUNT ? op_names[op] : "unknown";
}

enum vms_op vms_op_from_name(const char *name)
{
    for (int i = 1; i < VMS_OP__COUNT; i++)
        if (name && strcmp(name, op_names[i]) == 0)
            return (enum vms_op)i;
    return VMS_OP_UNKNOWN;
}

const char *vms_status_name(enum vms_status s)
{
    return (unsigned)s < VMS_STATUS__COUNT ? status_table[s].name : "unknown";
}

const char *vms_status_str(enum vms_status s)
{
    return (unsigned)s < VMS_STATUS__COUNT ? status_table[s].text : "unknown status";
}

/* ---- validation ------------------------------------------------------- */

int vms_valid_id(const char *s)
{
    size_t n = 0;

    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == ':' || c == '@'))
            return 0;
        if (n >= VMS_STR_MAX)
            return 0;
    }
    return n > 0;
}

int vms_valid_request_id(const char *s)
{
    size_t n = 0;

    for (; s[n]; n++) {
        if (n >= VMS_REQUEST_ID_LEN)
            return 0;
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return 0;
    }
    return n == VMS_REQUEST_ID_LEN;
}

/* Valid UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF: libdbus's rule for a
 * string) of at most VMS_STR_MAX bytes; with @text, no C0/C1 controls or DEL either. */
static int valid_utf8(const char *s, int text)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strnlen(s, VMS_STR_MAX + 1);

    if (n > VMS_STR_MAX)
        return 0;
    while (*p) {
        unsigned c = *p;
        unsigned cp, len;

        if (c < 0x80) {
            if (text && (c < 0x20 || c == 0x7F))
                return 0;
            p++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            cp = c & 0x1F;
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            cp = c & 0x0F;
            len = 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            cp = c & 0x07;
            len = 4;
        } else {
            return 0;
        }
        for (unsigned i = 1; i < len; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF) || (text && cp >= 0x80 && cp < 0xA0))
            return 0;
        p += len;
    }
    return 1;
}

int vms_valid_text(const char *s)
{
    return valid_utf8(s, 1);
}

static int valid_for_kind(enum field_kind kind, const char *s)
{
    switch (kind) {
    case FK_ID:
        return vms_valid_id(s);
    case FK_REQID:
        return vms_valid_request_id(s);
    case FK_TEXT:
        return vms_valid_text(s);
    case FK_SECRET:
        return valid_utf8(s, 0); /* the peer's libdbus refuses a string that is not UTF-8 */
    default:
        return 0;
    }
}

/* ---- message construction -------------------------------------------- */

void vms_msg_init(struct vms_msg *m, enum vms_msg_type t)
{
    memset(m, 0, sizeof(*m));
    m->type = t;
}

void vms_msg_clear(struct vms_msg *m)
{
    enum vms_msg_type t = m->type;

    free(m->app_data);
    free(m->states);
    explicit_bzero(m->secret, sizeof(m->secret));
    vms_msg_init(m, t);
}

static char *field_str(struct vms_msg *m, enum vms_field f)
{
    return (char *)m + field_table[f].offset;
}

int vms_msg_set_str(struct vms_msg *m, enum vms_field f, const char *value)
{
    size_t n;

    if ((unsigned)f >= VMS_F__COUNT || field_table[f].kind < FK_ID ||
        field_table[f].kind > FK_SECRET || !value)
        return -1;
    n = strnlen(value, VMS_STR_MAX + 1);
    if (n > VMS_STR_MAX)
        return -1;
    memcpy(field_str(m, f), value, n + 1);
    m->fields |= VMS_BIT(f);
    return 0;
}

void vms_msg_set_u64(struct vms_msg *m, enum vms_field f, uint64_t value)
{
    char *p;

    if ((unsigned)f >= VMS_F__COUNT)
        return;
    p = field_str(m, f);
    switch (field_table[f].kind) {
    case FK_U32:
    case FK_CAPS:
        *(uint32_t *)(void *)p = (uint32_t)value;
        break;
    case FK_U64:
        *(uint64_t *)(void *)p = value;
        break;
    default:
        return;
    }
    m->fields |= VMS_BIT(f);
}

int vms_msg_set_app_data(struct vms_msg *m, const void *data, size_t len)
{
    uint8_t *copy = NULL;

    if (len > VMS_APP_DATA_MAX || (len && !data))
        return -1;
    if (len) {
        copy = malloc(len);
        if (!copy)
            return -1;
        memcpy(copy, data, len);
    }
    free(m->app_data);
    m->app_data = copy;
    m->app_data_len = len;
    m->fields |= VMS_BIT(VMS_F_APP_DATA);
    return 0;
}

int vms_msg_add_state(struct vms_msg *m, const struct vms_state_info *st)
{
    struct vms_state_info *grown;

    if (m->n_states >= VMS_STATES_MAX)
        return -1;
    grown = realloc(m->states, (m->n_states + 1) * sizeof(*grown));
    if (!grown)
        return -1;
    m->states = grown;
    m->states[m->n_states++] = *st;
    m->fields |= VMS_BIT(VMS_F_STATES);
    return 0;
}

/* An operation or quota name in a list: an id of at most VMS_NAME_MAX bytes. */
static int name_ok(const char *name)
{
    return name && strnlen(name, VMS_NAME_MAX + 1) <= VMS_NAME_MAX && vms_valid_id(name);
}

int vms_msg_add_followup(struct vms_msg *m, const char *op, uint64_t arg)
{
    struct vms_followup *f;

    if (m->n_followups >= VMS_FOLLOWUPS_MAX || !name_ok(op))
        return -1;
    f = &m->followups[m->n_followups++];
    snprintf(f->op, sizeof(f->op), "%s", op);
    f->arg = arg;
    m->fields |= VMS_BIT(VMS_F_FOLLOWUPS);
    return 0;
}

int vms_msg_add_result(struct vms_msg *m, const char *op, uint32_t status, const char *message)
{
    struct vms_followup_result *r;

    if (m->n_results >= VMS_FOLLOWUPS_MAX || !name_ok(op) || !message || !vms_valid_text(message))
        return -1;
    r = &m->results[m->n_results++];
    snprintf(r->op, sizeof(r->op), "%s", op);
    r->status = status;
    snprintf(r->message, sizeof(r->message), "%s", message);
    m->fields |= VMS_BIT(VMS_F_RESULTS);
    return 0;
}

int vms_msg_add_quota(struct vms_msg *m, const char *name, uint64_t limit, uint64_t used)
{
    struct vms_quota *q;

    if (m->n_quotas >= VMS_QUOTAS_MAX || !name_ok(name))
        return -1;
    q = &m->quotas[m->n_quotas++];
    snprintf(q->name, sizeof(q->name), "%s", name);
    q->limit = limit;
    q->used = used;
    m->fields |= VMS_BIT(VMS_F_QUOTAS);
    return 0;
}

uint32_t vms_proto_negotiate(uint32_t peer_version, uint32_t peer_min_version)
{
    uint32_t v = peer_version < VMS_PROTO_VERSION ? peer_version : VMS_PROTO_VERSION;

    if (peer_min_version == 0)
        peer_min_version = peer_version;
    if (v < VMS_PROTO_MIN_VERSION || v < peer_min_version)
        return 0;
    return v;
}

int vms_request_id_new(char out[VMS_REQUEST_ID_LEN + 1], uint64_t epoch)
{
    static uint64_t counter;
    uint8_t raw[16];
    uint64_t mix[2];
    struct timespec ts;
    size_t got = 0;

    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t)n;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    mix[0] = (epoch * 0x9E3779B97F4A7C15ull) ^ ++counter;
    mix[1] = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    for (int i = 0; i < 16; i++)
        raw[i] ^= (uint8_t)(mix[i / 8] >> (8 * (i % 8)));
    for (int i = 0; i < 16; i++) {
        out[2 * i] = "0123456789abcdef"[raw[i] >> 4];
        out[2 * i + 1] = "0123456789abcdef"[raw[i] & 15];
    }
    out[VMS_REQUEST_ID_LEN] = '\0';
    return 0;
}

/* ---- encode ----------------------------------------------------------- */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/*
 * The encoder writes D-Bus marshalling itself (vms-marshal.h): a signal with the path,
 * interface and member below and a body of signature a{sv}. The decoder stays libdbus's
 * demarshal, which validates every byte a peer sends.
 */
void vms_wb_msg_field(struct vms_wbuf *w, const struct vms_msg *m, enum vms_field f)
{
    const struct field_desc *fd = &field_table[f];
    const char *p = (const char *)m + fd->offset;
    struct vms_wb_array arr;

    vms_wb_pad(w, 8);
    vms_wb_str(w, fd->key);
    vms_wb_sig(w, kind_signature[fd->kind]);
    switch (fd->kind) {
    case FK_U32:
        vms_wb_u32(w, *(const uint32_t *)(const void *)p);
        break;
    case FK_U64:
        vms_wb_u64(w, *(const uint64_t *)(const void *)p);
        break;
    case FK_ID:
    case FK_REQID:
    case FK_TEXT:
    case FK_SECRET:
        vms_wb_str(w, p);
        break;
    case FK_BYTES:
        arr = vms_wb_array_begin(w, 1);
        vms_wb_bytes(w, m->app_data, m->app_data_len);
        vms_wb_array_end(w, arr);
        break;
    case FK_CAPS:
        arr = vms_wb_array_begin(w, 4);
        for (size_t i = 0; i < sizeof(cap_table) / sizeof(cap_table[0]); i++)
            if (m->caps & cap_table[i].bit)
                vms_wb_str(w, cap_table[i].name);
        vms_wb_array_end(w, arr);
        break;
    case FK_STATES:
        arr = vms_wb_array_begin(w, 8);
        for (size_t i = 0; i < m->n_states; i++) {
            const struct vms_state_info *s = &m->states[i];
            vms_wb_pad(w, 8);
            vms_wb_str(w, s->id);
            vms_wb_str(w, s->label);
            vms_wb_str(w, s->app_id);
            vms_wb_str(w, s->parent);
            vms_wb_u64(w, (uint64_t)s->created);
        }
        vms_wb_array_end(w, arr);
        break;
    case FK_FOLLOWUPS:
        arr = vms_wb_array_begin(w, 8);
        for (size_t i = 0; i < m->n_followups; i++) {
            vms_wb_pad(w, 8);
            vms_wb_str(w, m->followups[i].op);
            vms_wb_u64(w, m->followups[i].arg);
        }
        vms_wb_array_end(w, arr);
        break;
    case FK_RESULTS:
        arr = vms_wb_array_begin(w, 8);
        for (size_t i = 0; i < m->n_results; i++) {
            vms_wb_pad(w, 8);
            vms_wb_str(w, m->results[i].op);
            vms_wb_u32(w, m->results[i].status);
            vms_wb_str(w, m->results[i].message);
        }
        vms_wb_array_end(w, arr);
        break;
    case FK_QUOTAS:
        arr = vms_wb_array_begin(w, 8);
        for (size_t i = 0; i < m->n_quotas; i++) {
            vms_wb_pad(w, 8);
            vms_wb_str(w, m->quotas[i].name);
            vms_wb_u64(w, m->quotas[i].limit);
            vms_wb_u64(w, m->quotas[i].used);
        }
        vms_wb_array_end(w, arr);
        break;
    }
}

/* The whole message of @m into @w (what fits below w->cap; the rest counted). */
static void wb_message(struct vms_wbuf *w, const void *ctx)
{
    const struct vms_msg *m = ctx;
    struct vms_wb_signal sig = vms_wb_signal_begin(w, VMS_WIRE_PATH, VMS_WIRE_INTERFACE,
                                                   msg_table[m->type].name, NULL, "a{sv}");
    struct vms_wb_array dict = vms_wb_array_begin(w, 8);

    for (int f = 0; f < VMS_F__COUNT; f++)
        if (m->fields & VMS_BIT(f))
            vms_wb_msg_field(w, m, (enum vms_field)f);
    vms_wb_array_end(w, dict);
    vms_wb_signal_end(w, sig);
}

static int state_valid(const struct vms_state_info *s)
{
    return vms_valid_id(s->id) && vms_valid_text(s->label) &&
           (!s->app_id[0] || vms_valid_id(s->app_id)) && (!s->parent[0] || vms_valid_id(s->parent));
}

/* 1 if the follow-up, result or quota list of @m breaks the schema (@kind says which). */
static int list_invalid(const struct vms_msg *m, enum field_kind kind)
{
    switch (kind) {
    case FK_FOLLOWUPS:
        if (m->n_followups > VMS_FOLLOWUPS_MAX)
            return 1;
        for (size_t i = 0; i < m->n_followups; i++)
            if (!name_ok(m->followups[i].op))
                return 1;
        return 0;
    case FK_RESULTS:
        if (m->n_results > VMS_FOLLOWUPS_MAX)
            return 1;
        for (size_t i = 0; i < m->n_results; i++)
            if (!name_ok(m->results[i].op) || !vms_valid_text(m->results[i].message))
                return 1;
        return 0;
    case FK_QUOTAS:
        if (m->n_quotas > VMS_QUOTAS_MAX)
            return 1;
        for (size_t i = 0; i < m->n_quotas; i++)
            if (!name_ok(m->quotas[i].name))
                return 1;
        return 0;
    default:
        return 0;
    }
}

/* The checks decode applies, so that we never send what the peer must refuse. */
static int msg_check(const struct vms_msg *m, char *err, size_t errlen)
{
    uint64_t missing;

    if (m->type <= VMS_MSG_UNKNOWN || m->type >= VMS_MSG__COUNT) {
        seterr(err, errlen, "unknown message type %d", (int)m->type);
        return -1;
    }
    missing = msg_table[m->type].required & ~m->fields;
    for (int f = 0; f < VMS_F__COUNT; f++) {
        const struct field_desc *fd = &field_table[f];
        if (missing & VMS_BIT(f)) {
            seterr(err, errlen, "%s: required field '%s' missing", msg_table[m->type].name,
                   fd->key);
            return -1;
        }
        if (!(m->fields & VMS_BIT(f)))
            continue;
        if (fd->kind >= FK_ID && fd->kind <= FK_SECRET &&
            !valid_for_kind(fd->kind, (const char *)m + fd->offset)) {
            seterr(err, errlen, "field '%s': invalid value", fd->key);
            return -1;
        }
        if (fd->kind == FK_BYTES && m->app_data_len > VMS_APP_DATA_MAX) {
            seterr(err, errlen, "field '%s': %zu bytes, over the %u byte cap", fd->key,
                   m->app_data_len, VMS_APP_DATA_MAX);
            return -1;
        }
        if (fd->kind == FK_STATES) {
            for (size_t i = 0; i < m->n_states; i++)
                if (!state_valid(&m->states[i])) {
                    seterr(err, errlen, "field 'states': entry %zu invalid", i);
                    return -1;
                }
        }
        if (list_invalid(m, fd->kind)) {
            seterr(err, errlen, "field '%s': an entry is invalid or there are too many", fd->key);
            return -1;
        }
    }
    return 0;
}

int vms_msg_encode(const struct vms_msg *m, uint8_t **out, size_t *out_len, char *err,
                   size_t errlen)
{
    size_t len = 0;
    int rc;

    *out = NULL;
    *out_len = 0;
    if (msg_check(m, err, errlen) < 0)
        return -1;
    rc = vms_wb_build(wb_message, m, VMS_WIRE_PAYLOAD_MAX, out, &len);
    if (rc == -2)
        seterr(err, errlen, "%s: %zu bytes, over the %u byte frame cap", msg_table[m->type].name,
               len, VMS_WIRE_PAYLOAD_MAX);
    else if (rc < 0)
        seterr(err, errlen, "out of memory");
    if (rc < 0)
        return -1;
    *out_len = len;
    return 0;
}

int vms_msg_encode_frame(const struct vms_msg *m, uint8_t **out, size_t *out_len, char *err,
                         size_t errlen)
{
    uint8_t *payload = NULL;
    size_t plen = 0;
    int rc;

    *out = NULL;
    *out_len = 0;
    if (vms_msg_encode(m, &payload, &plen, err, errlen) < 0)
        return -1;
    rc = vms_wire_frame(payload, plen, out, out_len);
    if (rc < 0)
        seterr(err, errlen, "%s", rc == -1 ? "out of memory" : "framing failed");
    explicit_bzero(payload, plen);
    free(payload);
    return rc < 0 ? -1 : 0;
}

/* ---- decode ----------------------------------------------------------- */

/* The field named @key, looked for from @from on first: our encoder writes the fields in
 * their order, so the next one is usually the first tried. */
static int lookup_field(const char *key, int from)
{
    /* the first byte first: a message's ~25 keys against ~40 names were 600 strcmp calls */
    for (int i = 0; i < VMS_F__COUNT; i++) {
        int f = (from + i) % VMS_F__COUNT;
        if (field_table[f].key[0] == key[0] && strcmp(field_table[f].key, key) == 0)
            return f;
    }
    return -1;
}

/*
 * The body is read from the bytes themselves (vms-marshal.h's reader), once libdbus's
 * demarshal has validated them, or strictly (vms_msg_decode_canonical): libdbus's iterators
 * cost as much again as its validation, about 60 k instructions per hostinfo answer in the
 * helper and the bridge (callgrind, bench/RESULTS.md §18). Each read is bounded by the
 * body's end. fuzz-message holds the reader to libdbus's: every entry it takes, libdbus
 * reads the same.
 */

/* Copy a string out of @r; -1 if it breaks @kind (an empty one is allowed when @optional). */
static int take_string(struct vms_rbuf *r, enum field_kind kind, int optional, char *dst)
{
    const char *s;
    size_t n;

    if (vms_rb_str(r, &s, &n) < 0)
        return -1;
    if (n > VMS_STR_MAX || ((!optional || n) && !valid_for_kind(kind, s)))
        return -1;
    memcpy(dst, s, n + 1);
    return 0;
}

static int decode_states(struct vms_rbuf *r, struct vms_msg *m, char *why, size_t whylen)
{
    struct vms_state_info info;
    size_t end;

    if (vms_rb_array(r, 8, &end) < 0)
        goto bad;
    while (r->pos < end) {
        uint64_t created;

        if (m->n_states >= VMS_STATES_MAX) {
            seterr(why, whylen, "more than %d states", VMS_STATES_MAX);
            return -1;
        }
        memset(&info, 0, sizeof(info));
        if (vms_rb_skip_to(r, 8, 0) < 0 || take_string(r, FK_ID, 0, info.id) < 0 ||
            take_string(r, FK_TEXT, 0, info.label) < 0 ||
            take_string(r, FK_ID, 1, info.app_id) < 0 ||
            take_string(r, FK_ID, 1, info.parent) < 0 || vms_rb_u64(r, &created) < 0)
            goto bad;
        info.created = (int64_t)created;
        if (vms_msg_add_state(m, &info) < 0) {
            seterr(why, whylen, "out of memory");
            return -1;
        }
    }
    if (r->pos != end)
        goto bad;
    return 0;
bad:
    seterr(why, whylen, "state entry %zu has an invalid string", m->n_states);
    return -1;
}

/* Follow-ups a(st), results a(sus), quotas a(stt): at most VMS_FOLLOWUPS_MAX /
 * VMS_QUOTAS_MAX entries, strings validated like every other field. */
static int decode_list(struct vms_rbuf *r, struct vms_msg *m, enum field_kind kind, char *why,
                       size_t whylen)
{
    size_t end;

    if (vms_rb_array(r, 8, &end) < 0) {
        seterr(why, whylen, "truncated list");
        return -1;
    }
    while (r->pos < end) {
        char name[VMS_STR_MAX + 1], text[VMS_STR_MAX + 1] = "";
        uint64_t a = 0, b = 0;
        uint32_t status = 0;
        int rc;

        if (vms_rb_skip_to(r, 8, 0) < 0 || take_string(r, FK_ID, 0, name) < 0) {
            seterr(why, whylen, "entry with an invalid name");
            return -1;
        }
        if (kind == FK_RESULTS) {
            if (vms_rb_u32(r, &status) < 0 || take_string(r, FK_TEXT, 0, text) < 0) {
                seterr(why, whylen, "entry with an invalid message");
                return -1;
            }
            rc = vms_msg_add_result(m, name, status, text);
        } else if (kind == FK_QUOTAS) {
            rc = vms_rb_u64(r, &a) < 0 || vms_rb_u64(r, &b) < 0 ? -1
                                                                : vms_msg_add_quota(m, name, a, b);
        } else {
            rc = vms_rb_u64(r, &a) < 0 ? -1 : vms_msg_add_followup(m, name, a);
        }
        if (rc < 0) {
            seterr(why, whylen, "more than %d entries, or a name over %d bytes",
                   kind == FK_QUOTAS ? VMS_QUOTAS_MAX : VMS_FOLLOWUPS_MAX, VMS_NAME_MAX);
            return -1;
        }
    }
    if (r->pos != end) {
        seterr(why, whylen, "entry past the list's end");
        return -1;
    }
    return 0;
}

static int decode_field(struct vms_rbuf *r, struct vms_msg *m, enum vms_field f, char *why,
                        size_t whylen)
{
    const struct field_desc *fd = &field_table[f];
    char *p = (char *)m + fd->offset;
    size_t end;

    switch (fd->kind) {
    case FK_U32: {
        uint32_t v;
        if (vms_rb_u32(r, &v) < 0)
            break;
        *(uint32_t *)(void *)p = v;
        return 0;
    }
    case FK_U64: {
        uint64_t v;
        if (vms_rb_u64(r, &v) < 0)
            break;
        *(uint64_t *)(void *)p = v;
        return 0;
    }
    case FK_ID:
    case FK_REQID:
    case FK_TEXT:
    case FK_SECRET:
        if (take_string(r, fd->kind, 0, p) < 0) {
            seterr(why, whylen, "invalid characters or over %d bytes", VMS_STR_MAX);
            return -1;
        }
        return 0;
    case FK_BYTES:
        if (vms_rb_array(r, 1, &end) < 0)
            break;
        if (end - r->pos > VMS_APP_DATA_MAX) {
            seterr(why, whylen, "%zu bytes, over the %u byte cap", end - r->pos, VMS_APP_DATA_MAX);
            return -1;
        }
        if (vms_msg_set_app_data(m, r->p + r->pos, end - r->pos) < 0) {
            seterr(why, whylen, "out of memory");
            return -1;
        }
        r->pos = end;
        return 0;
    case FK_CAPS: {
        int entries = 0, last = -1;
        if (vms_rb_array(r, 4, &end) < 0)
            break;
        m->caps = 0;
        while (r->pos < end) {
            const char *name;
            size_t n;
            if (++entries > CAPS_MAX_ENTRIES) {
                seterr(why, whylen, "more than %d capabilities", CAPS_MAX_ENTRIES);
                return -1;
            }
            uint32_t bit = 0;
            int at = -1;
            if (vms_rb_str(r, &name, &n) < 0)
                goto truncated; /* not a break: that would leave the loop as if at its end */
            for (size_t i = 0; i < sizeof(cap_table) / sizeof(cap_table[0]); i++)
                if (strcmp(name, cap_table[i].name) == 0) {
                    bit = cap_table[i].bit;
                    at = (int)i;
                }
            /* our encoder writes the names it knows, each once, in the table's order: anything
             * else is not its output */
            if ((!bit || at <= last) && r->strict) {
                seterr(why, whylen, "%s",
                       !bit ? "a capability that is not ours"
                            : "capabilities repeated or out of our order");
                return -1;
            }
            last = at;
            m->caps |= bit;
        }
        if (r->pos != end)
            break;
        return 0;
    }
    case FK_STATES:
        return decode_states(r, m, why, whylen);
    case FK_FOLLOWUPS:
    case FK_RESULTS:
    case FK_QUOTAS:
        return decode_list(r, m, fd->kind, why, whylen);
    }
truncated:
    seterr(why, whylen, "truncated");
    return -1;
}

static enum vms_decode_result decode_fail(struct vms_msg *m, struct vms_decode_report *rep,
                                          const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum vms_decode_result decode_fail(struct vms_msg *m, struct vms_decode_report *rep,
                                          const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(rep->error, sizeof(rep->error), fmt, ap);
    va_end(ap);
    m->type = VMS_MSG_UNKNOWN;
    vms_msg_clear(m);
    return VMS_DECODE_INVALID;
}

/*
 * The body's a{sv} from @r into @m (its type set, @member its name for errors): known
 * fields checked against the schema, unknown ones skipped (refused when @r is strict: our
 * encoder writes none, and writes the known ones in their order), required ones present,
 * nothing after the dictionary.
 */
static enum vms_decode_result decode_body(struct vms_rbuf *r, struct vms_msg *m, const char *member,
                                          struct vms_decode_report *rep)
{
    size_t dict_end;
    int last = -1;

    if (vms_rb_array(r, 8, &dict_end) < 0)
        return decode_fail(m, rep, "%s: truncated body", member);
    while (r->pos < dict_end) {
        const char *key, *vsig;
        size_t key_len;
        int f;
        char why[160] = "";

        if (vms_rb_skip_to(r, 8, 0) < 0 || vms_rb_str(r, &key, &key_len) < 0 ||
            vms_rb_sig(r, &vsig) < 0)
            return decode_fail(m, rep, "%s: truncated body", member);
        f = lookup_field(key, last + 1);
        if (f < 0 && r->strict)
            return decode_fail(m, rep, "%s: field '%.*s' is not ours", member, VMS_STR_MAX, key);
        if (f < 0) {
            if (!rep->unknown_fields++)
                snprintf(rep->first_unknown_field, sizeof(rep->first_unknown_field), "%.*s",
                         VMS_STR_MAX, key);
            if (vms_rb_skip_value(r, &vsig) < 0)
                return decode_fail(m, rep, "%s: truncated body", member);
            continue;
        }
        if (m->fields & VMS_BIT(f))
            return decode_fail(m, rep, "%s: field '%s' appears twice", member, key);
        if (f < last && r->strict)
            return decode_fail(m, rep, "%s: field '%s' is out of our encoder's order", member, key);
        last = f;
        if (strcmp(vsig, kind_signature[field_table[f].kind]) != 0)
            return decode_fail(m, rep, "%s: field '%s' has type '%.*s', expected '%s'", member, key,
                               VMS_STR_MAX, vsig, kind_signature[field_table[f].kind]);
        if (decode_field(r, m, (enum vms_field)f, why, sizeof(why)) < 0)
            return decode_fail(m, rep, "%s: field '%s': %s", member, key, why);
        m->fields |= VMS_BIT(f);
    }
    for (int f = 0; f < VMS_F__COUNT; f++)
        if ((msg_table[m->type].required & ~m->fields) & VMS_BIT(f))
            return decode_fail(m, rep, "%s: required field '%s' missing", member,
                               field_table[f].key);
    if (r->pos != dict_end || r->pos != r->len)
        return decode_fail(m, rep, "%s: bytes after the body's dictionary", member);
    return VMS_DECODE_OK;
}

enum vms_decode_result vms_msg_decode(const uint8_t *payload, size_t len, struct vms_msg *m,
                                      struct vms_decode_report *report)
{
    struct vms_decode_report scratch;
    struct vms_decode_report *rep = report ? report : &scratch;
    enum vms_decode_result res = VMS_DECODE_INVALID;
    DBusMessage *dm = NULL;
    DBusError derr;
    const char *member, *iface;
    struct vms_rbuf r;
    int need;

    memset(rep, 0, sizeof(*rep));
    vms_msg_init(m, VMS_MSG_UNKNOWN);
    dbus_error_init(&derr);

    if (len < 16 || len > VMS_WIRE_PAYLOAD_MAX)
        return decode_fail(m, rep, "payload of %zu bytes is not a message", len);
    /* demarshal ignores trailing bytes; a frame must hold exactly one message. */
    need = dbus_message_demarshal_bytes_needed((const char *)payload, (int)len);
    if (need != (int)len)
        return decode_fail(m, rep, "payload length %zu does not match the message (%d)", len, need);
    dm = dbus_message_demarshal((const char *)payload, (int)len, &derr);
    if (!dm) {
        res =
            decode_fail(m, rep, "not a valid message: %s", derr.message ? derr.message : "unknown");
        dbus_error_free(&derr);
        return res;
    }
    iface = dbus_message_get_interface(dm);
    member = dbus_message_get_member(dm);
    if (dbus_message_get_type(dm) != DBUS_MESSAGE_TYPE_SIGNAL || !iface || !member ||
        strcmp(iface, VMS_WIRE_INTERFACE) != 0) {
        res = decode_fail(m, rep, "not a vmstate wire message");
        goto out;
    }
    for (int t = 1; t < VMS_MSG__COUNT && m->type == VMS_MSG_UNKNOWN; t++)
        if (strcmp(member, msg_table[t].name) == 0)
            m->type = (enum vms_msg_type)t;
    if (m->type == VMS_MSG_UNKNOWN) {
        snprintf(rep->unknown_type, sizeof(rep->unknown_type), "%s", member);
        res = VMS_DECODE_UNKNOWN_TYPE;
        goto out;
    }
    if (!dbus_message_has_signature(dm, "a{sv}")) {
        res = decode_fail(m, rep, "%s: body signature '%s', expected 'a{sv}'", member,
                          dbus_message_get_signature(dm));
        goto out;
    }
    /* validated: the body is the message's last body-length bytes, after an 8-aligned
     * header */
    (void)vms_rb_body(payload, len, &r);
    res = decode_body(&r, m, member, rep);
out:
    if (res == VMS_DECODE_UNKNOWN_TYPE)
        vms_msg_clear(m);
    dbus_message_unref(dm);
    return res;
}

/* The header our encoder writes for a message of type @t and a body of @body_len bytes, into
 * @out (@cap bytes); its length, or 0 when it does not fit. */
static size_t canonical_header(enum vms_msg_type t, uint32_t body_len, uint8_t *out, size_t cap)
{
    struct vms_wbuf w = {out, 0, cap};
    struct vms_wb_signal sig = vms_wb_signal_begin(&w, VMS_WIRE_PATH, VMS_WIRE_INTERFACE,
                                                   msg_table[t].name, NULL, "a{sv}");

    if (w.len > cap)
        return 0;
    vms_wb_u32_at(&w, sig.body_len_at, body_len);
    return w.len;
}

/* Where the member's string starts in our header: the fixed 16 bytes, then the path's and
 * the interface's fields (each 8-aligned: code, signature "o"/"s", length, string, NUL),
 * then the member's code, signature and length. */
#define CANONICAL_ALIGN8(n)    (((n) + 7) & ~(size_t)7)
#define CANONICAL_FIELD(at, s) (CANONICAL_ALIGN8(at) + 8 + sizeof(s))
#define CANONICAL_MEMBER_AT                                                                        \
    (CANONICAL_ALIGN8(CANONICAL_FIELD(CANONICAL_FIELD(16, VMS_WIRE_PATH), VMS_WIRE_INTERFACE)) + 8)

enum vms_decode_result vms_msg_decode_canonical(const uint8_t *payload, size_t len,
                                                struct vms_msg *m, struct vms_decode_report *report)
{
    struct vms_decode_report scratch;
    struct vms_decode_report *rep = report ? report : &scratch;
    uint8_t header[256];
    size_t header_len = 0;
    uint32_t body_len, member_len;
    struct vms_rbuf r = {payload, len, 0, 0, 1}; /* little-endian, as our encoder writes */

    memset(rep, 0, sizeof(*rep));
    vms_msg_init(m, VMS_MSG_UNKNOWN);
    if (len < CANONICAL_MEMBER_AT + 1 || len > VMS_WIRE_PAYLOAD_MAX)
        return decode_fail(m, rep, "payload of %zu bytes is not our encoder's", len);
    body_len = (uint32_t)vms_rb_int(&r, 4, 4);
    member_len = (uint32_t)vms_rb_int(&r, CANONICAL_MEMBER_AT - 4, 4);
    /* the type by its member name, then the whole header byte for byte as we write it */
    for (int t = 1; t < VMS_MSG__COUNT && m->type == VMS_MSG_UNKNOWN; t++)
        if (strlen(msg_table[t].name) == member_len && member_len < len - CANONICAL_MEMBER_AT &&
            memcmp(payload + CANONICAL_MEMBER_AT, msg_table[t].name, member_len) == 0)
            m->type = (enum vms_msg_type)t;
    if (m->type != VMS_MSG_UNKNOWN)
        header_len = canonical_header(m->type, body_len, header, sizeof(header));
    if (!header_len || header_len > len || len - header_len != body_len ||
        memcmp(payload, header, header_len) != 0)
        return decode_fail(m, rep, "not a message of our encoder");
    r.p = payload + header_len; /* the same strict little-endian reader, over the body */
    r.len = body_len;
    r.pos = 0;
    return decode_body(&r, m, msg_table[m->type].name, rep);
}
