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
 * The encoder writes D-Bus marshalling itself (little-endian, a signal with the path,
 * interface and member below and a body of signature a{sv}). Through libdbus each variant's
 * contained signature is validated on a stack of list nodes allocated under libdbus's global
 * lock: 92 k of the bridge's 307 k instructions per hostinfo (bench/RESULTS.md §15). What is
 * written is what libdbus writes for the same message, byte for byte: test-proto and
 * fuzz-message check it against libdbus's own marshalling. The decoder stays libdbus's
 * demarshal, which validates every byte a peer sends.
 *
 * Two passes: the first (w->p == NULL) only counts, so the buffer is allocated once at its
 * size and a secret is never left behind in a freed, reallocated buffer.
 */
struct wbuf {
    uint8_t *p; /* NULL: count only */
    size_t len;
};

static void wb_bytes(struct wbuf *w, const void *data, size_t n)
{
    if (w->p && n)
        memcpy(w->p + w->len, data, n);
    w->len += n;
}

static void wb_pad(struct wbuf *w, size_t align)
{
    while (w->len % align) {
        if (w->p)
            w->p[w->len] = 0;
        w->len++;
    }
}

static void wb_u8(struct wbuf *w, uint8_t v)
{
    wb_bytes(w, &v, 1);
}

static void wb_u32_at(struct wbuf *w, size_t at, uint32_t v)
{
    if (w->p)
        for (int i = 0; i < 4; i++)
            w->p[at + (size_t)i] = (uint8_t)(v >> (8 * i));
}

static void wb_u32(struct wbuf *w, uint32_t v)
{
    wb_pad(w, 4);
    wb_u32_at(w, w->len, v);
    w->len += 4;
}

static void wb_u64(struct wbuf *w, uint64_t v)
{
    wb_pad(w, 8);
    if (w->p)
        for (int i = 0; i < 8; i++)
            w->p[w->len + (size_t)i] = (uint8_t)(v >> (8 * i));
    w->len += 8;
}

/* a string or object path: length, bytes, NUL */
static void wb_str(struct wbuf *w, const char *str)
{
    size_t n = strlen(str);

    wb_u32(w, (uint32_t)n);
    wb_bytes(w, str, n + 1);
}

/* a signature: one length byte, bytes, NUL */
static void wb_sig(struct wbuf *w, const char *sig)
{
    size_t n = strlen(sig);

    wb_u8(w, (uint8_t)n);
    wb_bytes(w, sig, n + 1);
}

/* An array: its length, the padding to its elements' alignment (there even when it is empty),
 * the elements. wb_array_begin returns where the length goes; wb_array_end writes it: the
 * elements' bytes, without that padding. */
struct wb_array {
    size_t len_at, start;
};

static struct wb_array wb_array_begin(struct wbuf *w, size_t elem_align)
{
    struct wb_array a;

    wb_u32(w, 0);
    a.len_at = w->len - 4;
    wb_pad(w, elem_align);
    a.start = w->len;
    return a;
}

static void wb_array_end(struct wbuf *w, struct wb_array a)
{
    wb_u32_at(w, a.len_at, (uint32_t)(w->len - a.start));
}

/* one header field: (code, variant) */
static void wb_header_field(struct wbuf *w, uint8_t code, const char *sig, const char *value)
{
    wb_pad(w, 8);
    wb_u8(w, code);
    wb_sig(w, sig);
    if (sig[0] == 'g')
        wb_sig(w, value);
    else
        wb_str(w, value);
}

/* one entry {sv} of the body's dict */
static void wb_field(struct wbuf *w, const struct vms_msg *m, enum vms_field f)
{
    const struct field_desc *fd = &field_table[f];
    const char *p = (const char *)m + fd->offset;
    struct wb_array arr;

    wb_pad(w, 8);
    wb_str(w, fd->key);
    wb_sig(w, kind_signature[fd->kind]);
    switch (fd->kind) {
    case FK_U32:
        wb_u32(w, *(const uint32_t *)(const void *)p);
        break;
    case FK_U64:
        wb_u64(w, *(const uint64_t *)(const void *)p);
        break;
    case FK_ID:
    case FK_REQID:
    case FK_TEXT:
    case FK_SECRET:
        wb_str(w, p);
        break;
    case FK_BYTES:
        arr = wb_array_begin(w, 1);
        wb_bytes(w, m->app_data, m->app_data_len);
        wb_array_end(w, arr);
        break;
    case FK_CAPS:
        arr = wb_array_begin(w, 4);
        for (size_t i = 0; i < sizeof(cap_table) / sizeof(cap_table[0]); i++)
            if (m->caps & cap_table[i].bit)
                wb_str(w, cap_table[i].name);
        wb_array_end(w, arr);
        break;
    case FK_STATES:
        arr = wb_array_begin(w, 8);
        for (size_t i = 0; i < m->n_states; i++) {
            const struct vms_state_info *s = &m->states[i];
            wb_pad(w, 8);
            wb_str(w, s->id);
            wb_str(w, s->label);
            wb_str(w, s->app_id);
            wb_str(w, s->parent);
            wb_u64(w, (uint64_t)s->created);
        }
        wb_array_end(w, arr);
        break;
    case FK_FOLLOWUPS:
        arr = wb_array_begin(w, 8);
        for (size_t i = 0; i < m->n_followups; i++) {
            wb_pad(w, 8);
            wb_str(w, m->followups[i].op);
            wb_u64(w, m->followups[i].arg);
        }
        wb_array_end(w, arr);
        break;
    case FK_RESULTS:
        arr = wb_array_begin(w, 8);
        for (size_t i = 0; i < m->n_results; i++) {
            wb_pad(w, 8);
            wb_str(w, m->results[i].op);
            wb_u32(w, m->results[i].status);
            wb_str(w, m->results[i].message);
        }
        wb_array_end(w, arr);
        break;
    case FK_QUOTAS:
        arr = wb_array_begin(w, 8);
        for (size_t i = 0; i < m->n_quotas; i++) {
            wb_pad(w, 8);
            wb_str(w, m->quotas[i].name);
            wb_u64(w, m->quotas[i].limit);
            wb_u64(w, m->quotas[i].used);
        }
        wb_array_end(w, arr);
        break;
    }
}

/* D-Bus's message header: its fixed part and the codes of its fields */
#define DBUS_WIRE_LITTLE_ENDIAN     'l'
#define DBUS_WIRE_SIGNAL            4
#define DBUS_WIRE_NO_REPLY_EXPECTED 0x1
#define DBUS_WIRE_VERSION           1
#define DBUS_WIRE_FIELD_PATH        1
#define DBUS_WIRE_FIELD_INTERFACE   2
#define DBUS_WIRE_FIELD_MEMBER      3
#define DBUS_WIRE_FIELD_SIGNATURE   8

/* The whole message of @m into @w (counting only when w->p is NULL). */
static void wb_message(struct wbuf *w, const struct vms_msg *m)
{
    struct wb_array fields, dict;
    size_t body_len_at, body;

    wb_u8(w, DBUS_WIRE_LITTLE_ENDIAN);
    wb_u8(w, DBUS_WIRE_SIGNAL);
    wb_u8(w, DBUS_WIRE_NO_REPLY_EXPECTED); /* a signal's, as libdbus sets it */
    wb_u8(w, DBUS_WIRE_VERSION);
    body_len_at = w->len;
    wb_u32(w, 0);
    wb_u32(w, 1); /* serial */
    fields = wb_array_begin(w, 8);
    wb_header_field(w, DBUS_WIRE_FIELD_PATH, "o", VMS_WIRE_PATH);
    wb_header_field(w, DBUS_WIRE_FIELD_INTERFACE, "s", VMS_WIRE_INTERFACE);
    wb_header_field(w, DBUS_WIRE_FIELD_MEMBER, "s", msg_table[m->type].name);
    wb_header_field(w, DBUS_WIRE_FIELD_SIGNATURE, "g", "a{sv}");
    wb_array_end(w, fields);
    wb_pad(w, 8); /* the body starts 8-aligned */
    body = w->len;
    dict = wb_array_begin(w, 8);
    for (int f = 0; f < VMS_F__COUNT; f++)
        if (m->fields & VMS_BIT(f))
            wb_field(w, m, (enum vms_field)f);
    wb_array_end(w, dict);
    wb_u32_at(w, body_len_at, (uint32_t)(w->len - body));
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
    struct wbuf w = {NULL, 0};

    *out = NULL;
    *out_len = 0;
    if (msg_check(m, err, errlen) < 0)
        return -1;
    wb_message(&w, m);
    if (w.len > VMS_WIRE_PAYLOAD_MAX) {
        seterr(err, errlen, "%s: %zu bytes, over the %u byte frame cap", msg_table[m->type].name,
               w.len, VMS_WIRE_PAYLOAD_MAX);
        return -1;
    }
    w.p = malloc(w.len);
    if (!w.p) {
        seterr(err, errlen, "out of memory");
        return -1;
    }
    *out_len = w.len;
    w.len = 0;
    wb_message(&w, m);
    *out = w.p;
    return 0;
}

int vms_msg_encode_frame(const struct vms_msg *m, uint8_t **out, size_t *out_len, char *err,
                         size_t errlen)
{
    uint8_t *payload = NULL, *frame = NULL;
    size_t plen = 0, cap, n;

    *out = NULL;
    *out_len = 0;
    if (vms_msg_encode(m, &payload, &plen, err, errlen) < 0)
        return -1;
    cap = 1 + 2 * (VMS_WIRE_HEADER_LEN + plen + VMS_WIRE_TRAILER_LEN);
    frame = malloc(cap);
    if (!frame) {
        seterr(err, errlen, "out of memory");
        goto fail;
    }
    n = vms_wire_encode(payload, plen, frame, cap);
    if (!n) {
        seterr(err, errlen, "framing failed");
        goto fail;
    }
    explicit_bzero(payload, plen);
    free(payload);
    *out = frame;
    *out_len = n;
    return 0;
fail:
    explicit_bzero(payload, plen);
    free(payload);
    free(frame);
    return -1;
}

/* ---- decode ----------------------------------------------------------- */

static int lookup_field(const char *key)
{
    /* the first byte first: a message's ~25 keys against ~40 names were 600 strcmp calls */
    for (int f = 0; f < VMS_F__COUNT; f++)
        if (field_table[f].key[0] == key[0] && strcmp(field_table[f].key, key) == 0)
            return f;
    return -1;
}

/* Whether the variant @var holds exactly kind_signature[@kind]; if not, what it holds goes to
 * @got. A basic type is told by its type code; only a container's signature is spelled out
 * by libdbus, which allocates it (that was a tenth of decoding a hostinfo's answer). */
static int variant_holds(DBusMessageIter *var, enum field_kind kind, char *got, size_t gotlen)
{
    const char *want = kind_signature[kind];
    char *sig;
    int ok;

    if (want[1] == '\0' && dbus_message_iter_get_arg_type(var) == want[0])
        return 1;
    sig = dbus_message_iter_get_signature(var);
    ok = sig && strcmp(sig, want) == 0;
    snprintf(got, gotlen, "%s", sig ? sig : "?");
    dbus_free(sig);
    return ok;
}

/* Copy a validated string out of @it; -1 if it breaks @kind. */
static int take_string(DBusMessageIter *it, enum field_kind kind, char *dst)
{
    const char *s = NULL;
    size_t n;

    dbus_message_iter_get_basic(it, &s);
    n = strnlen(s, VMS_STR_MAX + 1);
    if (n > VMS_STR_MAX || !valid_for_kind(kind, s))
        return -1;
    memcpy(dst, s, n + 1);
    return 0;
}

static int take_optional_id(DBusMessageIter *it, char *dst)
{
    const char *s = NULL;

    dbus_message_iter_get_basic(it, &s);
    if (s[0] == '\0') {
        dst[0] = '\0';
        return 0;
    }
    return take_string(it, FK_ID, dst);
}

static int decode_states(DBusMessageIter *var, struct vms_msg *m, char *why, size_t whylen)
{
    DBusMessageIter arr, st;
    struct vms_state_info info;

    dbus_message_iter_recurse(var, &arr);
    while (dbus_message_iter_get_arg_type(&arr) == DBUS_TYPE_STRUCT) {
        dbus_int64_t created;

        if (m->n_states >= VMS_STATES_MAX) {
            seterr(why, whylen, "more than %d states", VMS_STATES_MAX);
            return -1;
        }
        memset(&info, 0, sizeof(info));
        dbus_message_iter_recurse(&arr, &st); /* signature already checked: ssssx */
        if (take_string(&st, FK_ID, info.id) < 0)
            goto bad;
        dbus_message_iter_next(&st);
        if (take_string(&st, FK_TEXT, info.label) < 0)
            goto bad;
        dbus_message_iter_next(&st);
        if (take_optional_id(&st, info.app_id) < 0)
            goto bad;
        dbus_message_iter_next(&st);
        if (take_optional_id(&st, info.parent) < 0)
            goto bad;
        dbus_message_iter_next(&st);
        dbus_message_iter_get_basic(&st, &created);
        info.created = created;
        if (vms_msg_add_state(m, &info) < 0) {
            seterr(why, whylen, "out of memory");
            return -1;
        }
        dbus_message_iter_next(&arr);
    }
    return 0;
bad:
    seterr(why, whylen, "state entry %zu has an invalid string", m->n_states);
    return -1;
}

/* Follow-ups a(st), results a(sus), quotas a(stt): signature already checked; at most
 * VMS_FOLLOWUPS_MAX / VMS_QUOTAS_MAX entries, strings validated like every other field. */
static int decode_list(DBusMessageIter *var, struct vms_msg *m, enum field_kind kind, char *why,
                       size_t whylen)
{
    DBusMessageIter arr, st;

    dbus_message_iter_recurse(var, &arr);
    while (dbus_message_iter_get_arg_type(&arr) == DBUS_TYPE_STRUCT) {
        char name[VMS_STR_MAX + 1], text[VMS_STR_MAX + 1] = "";
        dbus_uint64_t a = 0, b = 0;
        dbus_uint32_t status = 0;
        int rc;

        dbus_message_iter_recurse(&arr, &st);
        if (take_string(&st, FK_ID, name) < 0) {
            seterr(why, whylen, "entry with an invalid name");
            return -1;
        }
        dbus_message_iter_next(&st);
        if (kind == FK_RESULTS) {
            dbus_message_iter_get_basic(&st, &status);
            dbus_message_iter_next(&st);
            if (take_string(&st, FK_TEXT, text) < 0) {
                seterr(why, whylen, "entry with an invalid message");
                return -1;
            }
            rc = vms_msg_add_result(m, name, status, text);
        } else {
            dbus_message_iter_get_basic(&st, &a);
            if (kind == FK_QUOTAS) {
                dbus_message_iter_next(&st);
                dbus_message_iter_get_basic(&st, &b);
                rc = vms_msg_add_quota(m, name, a, b);
            } else {
                rc = vms_msg_add_followup(m, name, a);
            }
        }
        if (rc < 0) {
            seterr(why, whylen, "more than %d entries, or a name over %d bytes",
                   kind == FK_QUOTAS ? VMS_QUOTAS_MAX : VMS_FOLLOWUPS_MAX, VMS_NAME_MAX);
            return -1;
        }
        dbus_message_iter_next(&arr);
    }
    return 0;
}

static int decode_field(DBusMessageIter *var, struct vms_msg *m, enum vms_field f, char *why,
                        size_t whylen)
{
    const struct field_desc *fd = &field_table[f];
    char *p = (char *)m + fd->offset;
    DBusMessageIter arr;

    switch (fd->kind) {
    case FK_U32: {
        dbus_uint32_t v;
        dbus_message_iter_get_basic(var, &v);
        *(uint32_t *)(void *)p = v;
        return 0;
    }
    case FK_U64: {
        dbus_uint64_t v;
        dbus_message_iter_get_basic(var, &v);
        *(uint64_t *)(void *)p = v;
        return 0;
    }
    case FK_ID:
    case FK_REQID:
    case FK_TEXT:
    case FK_SECRET:
        if (take_string(var, fd->kind, p) < 0) {
            seterr(why, whylen, "invalid characters or over %d bytes", VMS_STR_MAX);
            return -1;
        }
        return 0;
    case FK_BYTES: {
        const uint8_t *data = NULL;
        int n = 0;
        dbus_message_iter_recurse(var, &arr);
        dbus_message_iter_get_fixed_array(&arr, &data, &n);
        if (n < 0 || (size_t)n > VMS_APP_DATA_MAX) {
            seterr(why, whylen, "%d bytes, over the %u byte cap", n, VMS_APP_DATA_MAX);
            return -1;
        }
        if (vms_msg_set_app_data(m, data, (size_t)n) < 0) {
            seterr(why, whylen, "out of memory");
            return -1;
        }
        return 0;
    }
    case FK_CAPS: {
        int entries = 0;
        dbus_message_iter_recurse(var, &arr);
        m->caps = 0;
        while (dbus_message_iter_get_arg_type(&arr) == DBUS_TYPE_STRING) {
            const char *name;
            if (++entries > CAPS_MAX_ENTRIES) {
                seterr(why, whylen, "more than %d capabilities", CAPS_MAX_ENTRIES);
                return -1;
            }
            dbus_message_iter_get_basic(&arr, &name);
            for (size_t i = 0; i < sizeof(cap_table) / sizeof(cap_table[0]); i++)
                if (strcmp(name, cap_table[i].name) == 0)
                    m->caps |= cap_table[i].bit;
            dbus_message_iter_next(&arr);
        }
        return 0;
    }
    case FK_STATES:
        return decode_states(var, m, why, whylen);
    case FK_FOLLOWUPS:
    case FK_RESULTS:
    case FK_QUOTAS:
        return decode_list(var, m, fd->kind, why, whylen);
    }
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

enum vms_decode_result vms_msg_decode(const uint8_t *payload, size_t len, struct vms_msg *m,
                                      struct vms_decode_report *report)
{
    struct vms_decode_report scratch;
    struct vms_decode_report *rep = report ? report : &scratch;
    enum vms_decode_result res = VMS_DECODE_INVALID;
    DBusMessage *dm = NULL;
    DBusError derr;
    DBusMessageIter it, dict;
    const char *member, *iface;
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
    dbus_message_iter_init(dm, &it);
    dbus_message_iter_recurse(&it, &dict);
    while (dbus_message_iter_get_arg_type(&dict) == DBUS_TYPE_DICT_ENTRY) {
        DBusMessageIter entry, var;
        const char *key;
        int f;
        char why[160] = "", got[VMS_STR_MAX + 1];

        dbus_message_iter_recurse(&dict, &entry);
        dbus_message_iter_get_basic(&entry, &key);
        dbus_message_iter_next(&entry);
        f = lookup_field(key);
        if (f < 0) {
            if (!rep->unknown_fields++)
                snprintf(rep->first_unknown_field, sizeof(rep->first_unknown_field), "%.*s",
                         VMS_STR_MAX, key);
            dbus_message_iter_next(&dict);
            continue;
        }
        if (m->fields & VMS_BIT(f)) {
            res = decode_fail(m, rep, "%s: field '%s' appears twice", member, key);
            goto out;
        }
        dbus_message_iter_recurse(&entry, &var);
        if (!variant_holds(&var, field_table[f].kind, got, sizeof(got))) {
            res = decode_fail(m, rep, "%s: field '%s' has type '%s', expected '%s'", member, key,
                              got, kind_signature[field_table[f].kind]);
            goto out;
        }
        if (decode_field(&var, m, (enum vms_field)f, why, sizeof(why)) < 0) {
            res = decode_fail(m, rep, "%s: field '%s': %s", member, key, why);
            goto out;
        }
        m->fields |= VMS_BIT(f);
        dbus_message_iter_next(&dict);
    }
    for (int f = 0; f < VMS_F__COUNT; f++)
        if ((msg_table[m->type].required & ~m->fields) & VMS_BIT(f)) {
            res =
                decode_fail(m, rep, "%s: required field '%s' missing", member, field_table[f].key);
            goto out;
        }
    res = VMS_DECODE_OK;
out:
    if (res == VMS_DECODE_UNKNOWN_TYPE)
        vms_msg_clear(m);
    dbus_message_unref(dm);
    return res;
}
