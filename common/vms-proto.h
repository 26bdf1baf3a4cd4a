/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vms-proto.h — the one definition of the guest-helper <-> host-bridge
 * messages. Both daemons encode and decode with this code only.
 *
 * Port A (guest -> host) carries Hello, Request, Ack, Ready.
 * Port B (host -> guest) carries Welcome, Reply, Event, Timeline, Clock, Prepare.
 *
 * Each message is a D-Bus message (type SIGNAL, path /org/vmstate/Wire,
 * interface org.vmstate.Wire1, member = the message type's name) whose only
 * argument is a dictionary a{sv} of named fields, marshalled (by hand, as
 * libdbus would: see vms-proto.c) and framed by vms-wire.h. On decode libdbus
 * validates the bytes exactly as dbus-daemon validates untrusted clients; this file then
 * checks every field against the schema below (type, size cap, characters).
 * Unknown message types and unknown fields are reported, never fatal: that is
 * how newer peers add things. doc/protocol.md documents every field.
 */
#ifndef VMS_PROTO_H
#define VMS_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define VMS_PROTO_VERSION     1 /* what this code speaks */
#define VMS_PROTO_MIN_VERSION 1 /* oldest peer it accepts */

#define VMS_STR_MAX        255           /* every string field, in bytes */
#define VMS_APP_DATA_MAX   (64u * 1024u) /* opaque app data */
#define VMS_STATES_MAX     256           /* entries in one list reply */
#define VMS_REQUEST_ID_LEN 32            /* lowercase hex chars, see vms_request_id_new */

#define VMS_WIRE_PATH      "/org/vmstate/Wire"
#define VMS_WIRE_INTERFACE "org.vmstate.Wire1"

/* Port names the helper looks for (udev attribute "name"). */
#define VMS_PORT_REQUEST_NAME "org.vmstate.request.0"
#define VMS_PORT_EVENT_NAME   "org.vmstate.event.0"

enum vms_msg_type {
    VMS_MSG_UNKNOWN = 0,
    VMS_MSG_HELLO,      /* A: guest announces itself; starts every session */
    VMS_MSG_WELCOME,    /* B: bridge answers a Hello: negotiated version, current epoch */
    VMS_MSG_REQUEST,    /* A: an operation asked for by an app */
    VMS_MSG_REPLY,      /* B: immediate accept (status 0) or refusal of a Request */
    VMS_MSG_EVENT,      /* B: the completion of a request, acked by the guest */
    VMS_MSG_ACK,        /* A: the guest delivered an Event */
    VMS_MSG_TIMELINE,   /* B: the guest now runs in a new timeline (after a restore) */
    VMS_MSG_CLOCK,      /* B: the host's real time after the VM was paused (resume, save) */
    VMS_MSG_PREPARE,    /* B: a save of this VM is about to start: run pre-save hooks */
    VMS_MSG_READY,      /* A: answer to Prepare: go ahead (status 0) or inhibited (14) */
    VMS_MSG_NOTICE,     /* B: host information for guest listeners, not acked (e.g. io-resumed) */
    VMS_MSG_TIME_PROBE, /* A: the guest asks the host's real time (nonce); cap "time-probe" */
    VMS_MSG_TIME,       /* B: answer to a TimeProbe: its nonce and the host's time_ns */
    VMS_MSG__COUNT
};

enum vms_op {
    VMS_OP_UNKNOWN = 0,
    VMS_OP_SAVE,
    VMS_OP_RESTORE,
    VMS_OP_LIST,
    VMS_OP_DELETE,
    VMS_OP_HOSTINFO,
    VMS_OP_SET_MEMORY,
    VMS_OP_SUSPEND, /* a managed VM: the host suspends it; completes once it has resumed */
    VMS_OP__COUNT
};

/* Status of a Reply or Event. Values are part of the wire format: never renumber. */
enum vms_status {
    VMS_STATUS_OK = 0,
    VMS_STATUS_ERR_INVALID = 1,      /* the request was malformed */
    VMS_STATUS_ERR_AUTH = 2,         /* unknown principal or wrong secret */
    VMS_STATUS_ERR_DENIED = 3,       /* principal lacks the right for this VM/operation */
    VMS_STATUS_ERR_QUOTA = 4,        /* a per-VM quota is exhausted */
    VMS_STATUS_ERR_RATE_LIMITED = 5, /* too many failures or requests, retry later */
    VMS_STATUS_ERR_NOT_FOUND = 6,    /* no such state in this VM's catalogue */
    VMS_STATUS_ERR_BACKEND = 7,      /* the hypervisor failed the operation */
    VMS_STATUS_ERR_UNSUPPORTED = 8,  /* unknown operation or capability */
    VMS_STATUS_ERR_VERSION = 9,      /* no common protocol version */
    VMS_STATUS_ERR_BUSY = 10,        /* the peer cannot take it now */
    VMS_STATUS_ERR_UNAVAILABLE = 11, /* bridge or hypervisor unreachable */
    VMS_STATUS_ERR_ABORTED = 12,     /* interrupted, e.g. QEMU exited mid-operation */
    VMS_STATUS_ERR_PERMISSION = 13,  /* the caller's uid is not allowed (helper) */
    VMS_STATUS_ERR_INHIBITED = 14,   /* an app vetoed the save */
    VMS_STATUS_ERR_TIMEOUT = 15,
    VMS_STATUS_ERR_INTERNAL = 16,
    VMS_STATUS__COUNT
};

/* Capabilities exchanged in Hello/Welcome ("caps" field, by name). */
#define VMS_CAP_TIMELINE (1u << 0) /* "timeline": Timeline messages and epochs */
#define VMS_CAP_ACK      (1u << 1) /* "ack": events are acked and resent until acked */
#define VMS_CAP_HOSTINFO (1u << 2) /* "hostinfo" */
#define VMS_CAP_ALL      (VMS_CAP_TIMELINE | VMS_CAP_ACK | VMS_CAP_HOSTINFO)
/* Later capabilities; a peer only gets these messages after announcing them. */
#define VMS_CAP_CLOCK   (1u << 3) /* "clock": time_ns on Welcome/Timeline, Clock messages */
#define VMS_CAP_PREPARE (1u << 4) /* "prepare": Prepare/Ready around a save */
/* "time-probe": TimeProbe/Time measure the round trip for the clock without a new session
 * (a Hello makes the bridge resend what is unacked, and Hellos are rate-limited) */
#define VMS_CAP_TIME_PROBE (1u << 5)
#define VMS_CAP_KNOWN      (VMS_CAP_ALL | VMS_CAP_CLOCK | VMS_CAP_PREPARE | VMS_CAP_TIME_PROBE)

/* Field presence bits (struct vms_msg.fields). */
enum vms_field {
    VMS_F_VERSION,
    VMS_F_MIN_VERSION,
    VMS_F_CAPS,
    VMS_F_NONCE,
    VMS_F_HOST_NONCE,
    VMS_F_EPOCH,
    VMS_F_SEQ,
    VMS_F_REQUEST_ID,
    VMS_F_OP,
    VMS_F_APP_ID,
    VMS_F_PRINCIPAL,
    VMS_F_SECRET,
    VMS_F_UID,
    VMS_F_APP_DATA,
    VMS_F_LABEL,
    VMS_F_STATE_ID,
    VMS_F_BYTES,
    VMS_F_STATUS,
    VMS_F_MESSAGE,
    VMS_F_STATES,
    VMS_F_FREE_BYTES,
    VMS_F_MEM_BYTES,
    VMS_F_HOSTNAME,
    VMS_F_BRIDGE_VERSION,
    VMS_F_REASON,
    VMS_F_PARENT_ID,
    VMS_F_TIME_NS,    /* host CLOCK_REALTIME in ns when the message was built */
    VMS_F_TIMEOUT_MS, /* Prepare: how long the bridge waits for Ready */
    /* issue 14 */
    VMS_F_CREATOR,            /* save/delete Event: the app that created the state */
    VMS_F_FOLLOWUPS,          /* restore Request: operations run inside the restore */
    VMS_F_RESULTS,            /* restore Event: the follow-ups' outcomes, in order */
    VMS_F_HOST_MEM_TOTAL,     /* hostinfo: host RAM, bytes */
    VMS_F_HOST_MEM_AVAILABLE, /* hostinfo: host RAM available (MemAvailable), bytes */
    VMS_F_HOST_CPUS,          /* hostinfo: online CPUs of the host */
    VMS_F_HOST_LOAD_MILLI,    /* hostinfo: 1-minute load average x 1000 */
    VMS_F_VCPUS,              /* hostinfo: the VM's vCPUs */
    VMS_F_MEM_BOOT,           /* hostinfo: the VM's boot memory, bytes */
    VMS_F_MEM_MIN,            /* hostinfo: set-memory lower bound */
    VMS_F_MEM_MAX,            /* hostinfo: set-memory upper bound (0: set-memory off) */
    VMS_F_HYPERVISOR_VERSION, /* hostinfo: e.g. "QEMU 7.2.0" */
    VMS_F_OPS,                /* hostinfo: operations this principal may request here */
    VMS_F_QUOTAS,             /* hostinfo: (name, limit, used) per quota */
    VMS_F_MODE,               /* set-memory Request/Event: "online" (default) or "offline" */
    VMS_F__COUNT
};
#define VMS_BIT(f) (1ull << (f))

/* set-memory's "mode": online (balloon / hotplug in the running guest; the default when
 * absent) or offline (a managed VM: shut down, change its memory, boot again). */
#define VMS_MEM_MODE_ONLINE  "online"
#define VMS_MEM_MODE_OFFLINE "offline"

/* A follow-up operation inside a restore (Request "followups", a(st)): op and its argument
 * (set-memory: bytes; hostinfo: 0). */
#define VMS_FOLLOWUPS_MAX 8
#define VMS_NAME_MAX      31 /* operation and quota names in these lists (ids, <= 31 bytes) */
struct vms_followup {
    char op[VMS_NAME_MAX + 1];
    uint64_t arg;
};
/* Its outcome (Event "results", a(sus)): op, status, message. */
struct vms_followup_result {
    char op[VMS_NAME_MAX + 1];
    uint32_t status;
    char message[VMS_STR_MAX + 1];
};
/* One quota in a hostinfo answer (Event "quotas", a(stt)): name, limit (0: none), used. */
#define VMS_QUOTAS_MAX 8
struct vms_quota {
    char name[VMS_NAME_MAX + 1];
    uint64_t limit;
    uint64_t used;
};

struct vms_state_info {
    char id[VMS_STR_MAX + 1];
    char label[VMS_STR_MAX + 1];
    char app_id[VMS_STR_MAX + 1];
    char parent[VMS_STR_MAX + 1]; /* "" for a root state */
    int64_t created;              /* unix seconds */
};

/*
 * One decoded or to-be-encoded message. Only fields whose bit is set in
 * .fields are meaningful. Strings are NUL-terminated and at most VMS_STR_MAX
 * bytes. app_data and states are heap-owned: release with vms_msg_clear().
 */
struct vms_msg {
    enum vms_msg_type type;
    uint64_t fields;

    uint32_t version;     /* highest protocol version the sender speaks */
    uint32_t min_version; /* lowest it accepts */
    uint32_t caps;        /* VMS_CAP_* */
    uint64_t nonce;       /* Hello: random per session; Welcome: echoed */
    uint64_t host_nonce;  /* Welcome: random per bridge session */
    uint64_t epoch;       /* timeline epoch (bridge-assigned, grows on every restore) */
    uint64_t seq;         /* Event/Ack: bridge's event sequence for this VM */
    uint32_t status;      /* enum vms_status */
    uint32_t uid;         /* Request: D-Bus caller's uid in the guest */
    uint64_t bytes;       /* Request set-memory: target size */
    uint64_t free_bytes;  /* hostinfo */
    uint64_t mem_bytes;   /* hostinfo */
    uint64_t time_ns;     /* Welcome/Timeline/Clock: host real time, ns since the epoch */
    uint32_t timeout_ms;  /* Prepare: the bridge's wait for Ready */
    uint64_t host_mem_total, host_mem_available, mem_boot, mem_min, mem_max; /* hostinfo */
    uint32_t host_cpus, host_load_milli, vcpus;                              /* hostinfo */

    char request_id[VMS_STR_MAX + 1];
    char op[VMS_STR_MAX + 1];
    char app_id[VMS_STR_MAX + 1];
    char principal[VMS_STR_MAX + 1];
    char secret[VMS_STR_MAX + 1]; /* wiped by vms_msg_clear(); never log */
    char label[VMS_STR_MAX + 1];
    char state_id[VMS_STR_MAX + 1];
    char parent_id[VMS_STR_MAX + 1];
    char message[VMS_STR_MAX + 1];
    char hostname[VMS_STR_MAX + 1];
    char bridge_version[VMS_STR_MAX + 1];
    char reason[VMS_STR_MAX + 1];
    char creator[VMS_STR_MAX + 1];
    char hypervisor_version[VMS_STR_MAX + 1];
    char ops[VMS_STR_MAX + 1];  /* space-separated operation names */
    char mode[VMS_STR_MAX + 1]; /* set-memory: VMS_MEM_MODE_* */

    struct vms_followup followups[VMS_FOLLOWUPS_MAX];
    size_t n_followups;
    struct vms_followup_result results[VMS_FOLLOWUPS_MAX];
    size_t n_results;
    struct vms_quota quotas[VMS_QUOTAS_MAX];
    size_t n_quotas;

    uint8_t *app_data;
    size_t app_data_len;
    struct vms_state_info *states;
    size_t n_states;
};

/* What decode saw besides the message itself (for the caller's log line). */
struct vms_decode_report {
    unsigned unknown_fields;                   /* skipped */
    char first_unknown_field[VMS_STR_MAX + 1]; /* name of one, for logging */
    char unknown_type[VMS_STR_MAX + 1];        /* member name when type is unknown */
    char error[256];                           /* why decode failed */
};

struct vms_wbuf;
/* The entry {sv} of field @f of @m, as a wire message's body carries it, into @w
 * (vms-marshal.h): for the helper's signals that repeat wire fields (Completed's details). */
void vms_wb_msg_field(struct vms_wbuf *w, const struct vms_msg *m, enum vms_field f);

enum vms_decode_result {
    VMS_DECODE_OK = 0,
    VMS_DECODE_UNKNOWN_TYPE, /* well-formed, but a message type we do not know: skip it */
    VMS_DECODE_INVALID,      /* rejected; report.error says why */
};

/* Names used on the wire and in logs. *_name() never returns NULL. */
const char *vms_msg_type_name(enum vms_msg_type t);
const char *vms_op_name(enum vms_op op);
enum vms_op vms_op_from_name(const char *name); /* VMS_OP_UNKNOWN if not an operation */
const char *vms_status_name(enum vms_status s); /* e.g. "denied" */
const char *vms_status_str(enum vms_status s);  /* human sentence */

/* Zero-initialise @m as a message of type @t. */
void vms_msg_init(struct vms_msg *m, enum vms_msg_type t);
/* Free heap members, wipe the secret, and leave @m empty (type kept). */
void vms_msg_clear(struct vms_msg *m);

/*
 * Setters mark the field present. String setters return -1 (and set
 * nothing) when the value is over VMS_STR_MAX; vms_msg_set_app_data returns -1
 * over VMS_APP_DATA_MAX or on allocation failure. Values are validated again
 * by encode.
 */
int vms_msg_set_str(struct vms_msg *m, enum vms_field f, const char *value);
void vms_msg_set_u64(struct vms_msg *m, enum vms_field f, uint64_t value);
int vms_msg_set_app_data(struct vms_msg *m, const void *data, size_t len);
/* Appends one state (list replies); -1 over VMS_STATES_MAX or on allocation failure. */
int vms_msg_add_state(struct vms_msg *m, const struct vms_state_info *st);
/* Append a follow-up (@op a valid id of at most VMS_NAME_MAX bytes), a follow-up's result, or
 * a quota; -1 when full or @op/@name/@message break the schema. */
int vms_msg_add_followup(struct vms_msg *m, const char *op, uint64_t arg);
int vms_msg_add_result(struct vms_msg *m, const char *op, uint32_t status, const char *message);
int vms_msg_add_quota(struct vms_msg *m, const char *name, uint64_t limit, uint64_t used);
static inline int vms_msg_has(const struct vms_msg *m, enum vms_field f)
{
    return (m->fields & VMS_BIT(f)) != 0;
}

/*
 * Marshal @m into a payload (not yet framed). On success returns 0 and sets
 * *out (free() it) and *out_len. Returns -1 with @err filled when a field
 * breaks the schema (over a cap, bad characters, required field missing):
 * encode refuses what decode would refuse.
 */
int vms_msg_encode(const struct vms_msg *m, uint8_t **out, size_t *out_len, char *err,
                   size_t errlen);

/*
 * Marshal and frame @m in one go (vms_msg_encode + vms_wire_encode).
 * *out is malloc()ed; returns 0 or -1 with @err filled.
 */
int vms_msg_encode_frame(const struct vms_msg *m, uint8_t **out, size_t *out_len, char *err,
                         size_t errlen);

/*
 * Decode one payload (@len bytes, untrusted) into @m, which must not hold a
 * message (vms_msg_clear it first). Bounded work and memory in @len. On
 * VMS_DECODE_INVALID and VMS_DECODE_UNKNOWN_TYPE, @m is left cleared.
 * @report may be NULL.
 */
enum vms_decode_result vms_msg_decode(const uint8_t *payload, size_t len, struct vms_msg *m,
                                      struct vms_decode_report *report);

/*
 * Decode a payload our own encoder wrote (vms_msg_encode), without libdbus: the privsep
 * reader's frames to the bridge, the bridge's answers to the helper. Safe on any bytes (a
 * compromised reader writes what it likes) and strict: the header must be byte for byte
 * the one vms_msg_encode writes, little-endian; padding zero; strings terminated, of the
 * schema's characters; fields in the encoder's order; no unknown field, type or capability.
 * So it accepts exactly what vms_msg_encode writes: re-encoding what it decoded gives back
 * @payload byte for byte, and vms_msg_decode reads it with the same result (test-proto and
 * fuzz-message hold it to both). Anything else is VMS_DECODE_INVALID, and @m is left
 * cleared. @report may be NULL.
 */
enum vms_decode_result vms_msg_decode_canonical(const uint8_t *payload, size_t len,
                                                struct vms_msg *m,
                                                struct vms_decode_report *report);

/*
 * Version negotiation: given the peer's (version, min_version), the version
 * both speak, or 0 when there is none.
 */
uint32_t vms_proto_negotiate(uint32_t peer_version, uint32_t peer_min_version);

/* Validators used by decode, exported for config and D-Bus input checks. */
int vms_valid_id(const char *s);         /* 1..255 of [A-Za-z0-9._:@-] */
int vms_valid_text(const char *s);       /* <= 255 bytes, valid UTF-8, no control chars */
int vms_valid_request_id(const char *s); /* exactly VMS_REQUEST_ID_LEN lowercase hex */

/*
 * Fill @out (VMS_REQUEST_ID_LEN + 1 bytes) with a fresh request id: 128
 * random bits from getrandom(), so ids stay unique across restored timelines
 * (a counter that a restore rewinds would repeat). Callers that know the
 * current epoch pass it to be mixed in too: the restored guest's kernel RNG
 * state is restored with it, and the epoch is what differs. Returns 0 or -1.
 */
int vms_request_id_new(char out[VMS_REQUEST_ID_LEN + 1], uint64_t epoch);

#endif
