/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ioerror.h — auto-resume of VMs paused by storage I/O errors (issue 6).
 *
 * Three layers, so the policy can be unit-tested without QEMU:
 *   1. struct bridge_ioe_config: the per-VM keys of [vm NAME] (io_* and stateless),
 *      parsed by bridge_ioe_config_key() which bridge-config.c calls.
 *   2. struct bridge_ioe_sm: the policy state machine. Pure: it is fed
 *      events (BLOCK_IO_ERROR, STOP, RESUME, query-status answers, probe results,
 *      cont results, clock ticks) and acts only through struct bridge_ioe_actions.
 *   3. struct bridge_ioe (ioerror.c): the glue for one bridge_vm — QMP via the
 *      backend ops, probes in a helper thread (file: open/read + write/unlink a
 *      probe file beside it + free space; NBD: connect and read the greeting),
 *      notifications (log line, JSON line on the admin socket, guest notice).
 *
 * Episode: from the first I/O-error pause until the VM has run io_settle_ms
 * without pausing again. A pause within an episode is a "repause".
 */
#ifndef BRIDGE_IOERROR_H
#define BRIDGE_IOERROR_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#define BRIDGE_IOE_PROBES_MAX 8
#define BRIDGE_IOE_NODE_MAX   64
#define BRIDGE_IOE_TARGET_MAX 256
/* Repauses retried at io_retry_min_ms before the delay doubles (NBD clients reconnect). */
#define BRIDGE_IOE_FAST_RETRIES 12

enum bridge_ioe_policy { BRIDGE_IOE_AUTO_RESUME = 0, BRIDGE_IOE_LEAVE_PAUSED, BRIDGE_IOE_KILL };

enum bridge_ioe_probe_kind {
    BRIDGE_IOE_PROBE_NONE = 0,
    BRIDGE_IOE_PROBE_FILE,
    BRIDGE_IOE_PROBE_TCP,
    BRIDGE_IOE_PROBE_UNIX
};

struct bridge_ioe_probe_cfg {
    char node[BRIDGE_IOE_NODE_MAX]; /* QMP node-name of the drive (BLOCK_IO_ERROR node-name) */
    enum bridge_ioe_probe_kind kind;
    char target[BRIDGE_IOE_TARGET_MAX]; /* file path, "host:port" or a UNIX socket path */
};

struct bridge_ioe_config {
    enum bridge_ioe_policy policy; /* io_error_policy */
    int stateless;                 /* stateless */
    unsigned probe_interval_ms;    /* io_probe_interval_ms: first probe delay after a failed one */
    unsigned probe_max_ms;         /* io_probe_max_ms: backoff cap (probes and resume retries) */
    unsigned resume_delay_ms;      /* io_resume_delay_ms: unknown condition: resume timer */
    unsigned retry_min_ms;         /* io_retry_min_ms: first delay before a cont after a repause */
    unsigned retry_limit;      /* io_retry_limit: unknown condition: repauses before escalation */
    unsigned settle_ms;        /* io_settle_ms: running this long ends the episode */
    unsigned kill_timeout_s;   /* io_kill_timeout: policy kill: seconds paused before quit */
    unsigned escalate_after_s; /* io_escalate_after: paused this long: escalate (0 = never) */
    uint64_t min_free_bytes;   /* io_probe_min_free: a file probe needs this much free space */
    struct bridge_ioe_probe_cfg probes[BRIDGE_IOE_PROBES_MAX]; /* io_probe (repeatable) */
    char restart_command[512]; /* io_restart_command: run (sh -c) once a killed VM's QEMU is gone */
    unsigned n_probes;
};

void bridge_ioe_config_defaults(struct bridge_ioe_config *c);
/*
 * One [vm] key: 0 = not an io key (caller goes on), 1 = taken, -1 = bad value
 * (@why says why).
 */
int bridge_ioe_config_key(struct bridge_ioe_config *c, const char *key, const char *value,
                          char *why, size_t whylen);
const char *bridge_ioe_policy_name(enum bridge_ioe_policy p);
/* The probe configured for @node, or NULL (unknown condition: the resume timer). */
const struct bridge_ioe_probe_cfg *bridge_ioe_probe_for(const struct bridge_ioe_config *c,
                                                        const char *node);

/* ---- the policy state machine ---- */

enum bridge_ioe_state {
    BRIDGE_IOE_RUNNING = 0, /* running (an episode may still be settling) */
    BRIDGE_IOE_USER_PAUSED, /* stopped, not by an I/O error: never auto-resumed */
    BRIDGE_IOE_CHECKING,    /* STOP seen, query-status asked */
    BRIDGE_IOE_IO_PAUSED,   /* paused by an I/O error, waiting for probe / timer */
    BRIDGE_IOE_RESUMING,    /* cont asked, waiting for its answer / RESUME */
    BRIDGE_IOE_GAVE_UP,     /* escalated, stays paused (stateful, unknown condition) */
    BRIDGE_IOE_KILLED,      /* quit asked */
};

struct bridge_ioe_sm;

/* What the machine asks of its driver. Every call may be answered later through the
 * bridge_ioe_on_* functions (never re-entrantly needed). */
struct bridge_ioe_actions {
    void (*query_status)(void *opaque);
    void (*probe)(void *opaque, const struct bridge_ioe_probe_cfg *p);
    void (*cont)(void *opaque);
    void (*kill)(void *opaque, const char *why);
    /* kind: "paused", "repaused", "healthy", "resumed", "escalated", "killed",
     * "user-paused";
     * @sm holds the details (node, reason, since, counters). */
    void (*notify)(void *opaque, const char *kind, const struct bridge_ioe_sm *sm,
                   const char *text);
};

struct bridge_ioe_sm {
    const struct bridge_ioe_config *cfg;
    const struct bridge_ioe_actions *act;
    void *opaque;
    enum bridge_ioe_state state;
    /* last BLOCK_IO_ERROR not yet confirmed by a STOP + query-status */
    int error_seen;
    /* the episode */
    int episode; /* an episode is open */
    char node[BRIDGE_IOE_NODE_MAX];
    char operation[16];
    char reason[128];
    int nospace;
    double since;        /* first pause of the episode */
    double paused_at;    /* the current pause */
    double paused_total; /* seconds paused in this episode, closed pauses */
    double resumed_at;   /* last RESUME */
    unsigned pauses;     /* pauses in this episode (1 = the first) */
    unsigned conts;      /* cont commands sent in this episode */
    int escalated;
    const struct bridge_ioe_probe_cfg *probe; /* NULL: unknown condition */
    int probing;                              /* a probe is running */
    int healthy;                              /* the last probe said healthy */
    double healthy_at;    /* when the probe first said healthy since the last pause */
    double last_probe_ok; /* the last healthy probe */
    double requery_at;    /* CHECKING: ask query-status again (the last query failed) */
    double next_probe;
    unsigned probe_delay_ms;
    double next_cont; /* not before (rate limit / resume timer) */
    unsigned retry_delay_ms;
    double kill_at;
    /* stats */
    double cont_after_healthy;      /* first cont after healthy_at */
    double last_healthy_to_running; /* s, from the probe's healthy to RESUME of the last episode */
    double last_healthy_to_cont;    /* s, from the probe's healthy to the bridge's first cont */
    double last_pause_len;
};

void bridge_ioe_sm_init(struct bridge_ioe_sm *sm, const struct bridge_ioe_config *cfg,
                        const struct bridge_ioe_actions *act, void *opaque);
const char *bridge_ioe_state_name(enum bridge_ioe_state s);
/* QMP BLOCK_IO_ERROR (only action "stop" pauses; others are ignored by the caller). */
void bridge_ioe_on_io_error(struct bridge_ioe_sm *sm, const char *node, const char *operation,
                            const char *reason, int nospace, double now);
/* QMP STOP: the machine asks query-status. */
void bridge_ioe_on_stop(struct bridge_ioe_sm *sm, double now);
/* QMP RESUME. */
void bridge_ioe_on_resume(struct bridge_ioe_sm *sm, double now);
/* query-status answer ("running", "paused", "io-error", ...); NULL = the query failed. */
void bridge_ioe_on_status(struct bridge_ioe_sm *sm, const char *status, double now);
/* A probe's answer. */
void bridge_ioe_on_probe(struct bridge_ioe_sm *sm, int healthy, const char *detail, double now);
/* The cont command's answer: @ok 0 with @err, or 1. */
void bridge_ioe_on_cont(struct bridge_ioe_sm *sm, int ok, const char *err, double now);
/* The hypervisor connection came (back): re-read the status. */
void bridge_ioe_on_ready(struct bridge_ioe_sm *sm, double now);
/* Timers. */
void bridge_ioe_tick(struct bridge_ioe_sm *sm, double now);

/* ---- probes (blocking; ioerror.c runs them in a thread) ---- */

/* 1 healthy, 0 not; @detail says what was seen. @min_free for file probes. */
int bridge_ioe_probe_run(const struct bridge_ioe_probe_cfg *p, uint64_t min_free, char *detail,
                         size_t len);

/* ---- the glue for one VM (ioerror.c) ---- */

struct bridge_vm;
struct bridge_ioe;

struct bridge_ioe *bridge_ioe_new(struct bridge_vm *vm);
void bridge_ioe_free(struct bridge_ioe *e);
/* Backend hooks, forwarded by vm.c. */
void bridge_ioe_event(struct bridge_ioe *e, const char *name);
void bridge_ioe_io_error(struct bridge_ioe *e, const char *node, const char *operation,
                         const char *reason, int nospace);
void bridge_ioe_ready(struct bridge_ioe *e);
void bridge_ioe_lost(struct bridge_ioe *e);
void bridge_ioe_tick_vm(struct bridge_ioe *e, double now);

/* An event about @vm on the admin event socket, not from the state machine (the cluster's
 * storage moves): {"time","vm","kind","text","cluster": @cluster}; @cluster (may be NULL)
 * reference is taken. */
void bridge_ioe_publish(const char *vm, const char *kind, const char *text, json_object *cluster);

/* The admin event socket (one per bridge): JSON lines to every client. */
int bridge_ioe_admin_open(const char *path, void *loop);
void bridge_ioe_admin_close(void);

#endif
