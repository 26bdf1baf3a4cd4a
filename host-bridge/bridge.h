/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * bridge.h — the bridge's state: the daemon-wide struct bridge and one
 * struct bridge_vm per configured VM (its two port connections, its backend,
 * its session with the guest helper, its queue).
 *
 * Rooms (one folder each, headers included by name):
 *   guest/    what a guest says and is told: guest.c bridge_guest_input()
 *             (handshake, requests: validate, authenticate, quotas, journal,
 *             reply; acks; the only code that sees guest bytes' meaning),
 *             auth (principals, rights, rate limits), privsep (port A reader),
 *             prepare (Prepare/Ready, clock)
 *   journal/  durable state: db (SQLite), queue (per-VM request queue)
 *   backend/  hypervisors behind backend.h (QMP today)
 *   vm/       vm.c: port connections, running queued requests on the backend,
 *             completions, events, timelines after a restore
 *   ioerror/  auto-resume after storage errors (policy state machine, probes)
 *   admin/    vmstate-admin
 *   cluster/  HA on Corosync: CPG membership and the replicated table, failover,
 *             admission, leases, self-fence
 */
#ifndef BRIDGE_BRIDGE_H
#define BRIDGE_BRIDGE_H

#include <stdint.h>
#include <sys/types.h>

#include "auth.h"
#include "backend.h"
#include "bridge-config.h"
#include "db.h"
#include "ioerror.h"
#include "loop.h"
#include "prepare.h"
#include "queue.h"
#include "vms-channel.h"

struct bridge;

/* Hellos (each answered with a Welcome and a resend, bounded per loop turn) allowed per
 * VM: 30 per 10 s. A helper says Hello once per restore, twice when the restore replaces
 * QEMU (libvirt's revert: the ports reconnect, then the Timeline), ~0.7 s apart in a loop;
 * one ignored costs it hello_retry_ms (5 s). */
#define BRIDGE_HELLO_BURST  30
#define BRIDGE_HELLO_WINDOW 10
/* TimeProbes (each answered with one Time, nothing stored): 40 per 10 s; a helper sends at
 * most 5 per resume or restore. */
#define BRIDGE_PROBE_BURST  40
#define BRIDGE_PROBE_WINDOW 10

/* Why the bridge logs about a VM's guest: each reason has its own log rate limit. */
enum bridge_log_reason {
    BRIDGE_LOG_REFUSED,    /* a request refused */
    BRIDGE_LOG_UNEXPECTED, /* a message the guest should not send */
    BRIDGE_LOG_DUPLICATE,  /* a request id seen before */
    BRIDGE_LOG_IGNORED,    /* Hello/Request/Ready ignored */
    BRIDGE_LOG_JOURNAL,    /* the journal refused a write (disk full, ...) */
    BRIDGE_LOG__COUNT
};
extern const char *const bridge_log_reason_name[BRIDGE_LOG__COUNT];

/* Log about @vm's guest through the per-VM, per-reason rate limit. */
#define bridge_vm_log(vm, reason, level, req, ...)                                                 \
    vms_log_limited(&(vm)->logl[reason], bridge_log_reason_name[reason], level, (vm)->cfg->name,   \
                    req, __VA_ARGS__)

/* Seconds between attempts to journal again after the journal refused a write. */
#define BRIDGE_JOURNAL_RETRY 1.0

/* Guest uids whose request rate is tracked per VM (least recently used recycled). */
#define BRIDGE_UID_SLOTS 64
/* How long the backend's memory figures answer hostinfo (events invalidate them sooner). */
#define BRIDGE_MEM_KNOWN_SECONDS 5.0
/* Host figures for hostinfo (free space, host memory, load) are sampled this often at most. */
#define BRIDGE_SAMPLE_SECONDS 1.0
/* After a list, the catalogue is compared with the hypervisor's at most this often. */
#define BRIDGE_RECONCILE_READ_ONLY_SECONDS 2.0
/* Replies a VM may owe at once (group commit: accepts of one loop turn share an fsync). */
#define BRIDGE_OWED_MAX 16
/* Messages of a VM held while one of its secrets is verified off the loop (then refused). */
#define BRIDGE_HELD_MAX     64
#define BRIDGE_HELD_MAX_STR "64"
/* Unacked events resent per VM per loop turn (the rest when port B drains). */
#define BRIDGE_RESEND_PER_TURN 16

struct bridge_port {
    struct vms_channel ch;
    struct bridge_watch watch;
    char path[BRIDGE_PATH_MAX]; /* "" until known (libvirt: from the domain XML) */
    struct bridge_watch listen; /* ports = listen: the socket QEMU dials (fd -1 if none) */
    double retry_at;
    unsigned backoff_ms;
    pid_t reader; /* port A with privsep: the reader process, 0 if none */
    /*
     * QEMU may have missed this port's last hang-up: virtio-serial drops a chardev's
     * CLOSED event while the VM is stopped, so the port stays "host connected"; guest
     * writes then fail on the dead chardev and throttle it for good, and a new connection
     * does not unthrottle it. Set for port A at start (a previous bridge may have gone
     * while the VM was paused); the next connection is closed once the VM runs
     * (a bounce: QEMU then resets the port), and QEMU dials again.
     */
    int stale;
    int bounced;        /* closed by a bounce, not connected again yet */
    int stale_query;    /* a run-state query for the bounce is on its way */
    unsigned conn_gen;  /* counts connections: an answer for an older one is dropped */
    unsigned stale_gen; /* the connection that query is about */
    double stale_next;  /* when to ask the run state (again) */
    /* After a bounce, port B's Clock (connect) asks the guest to Hello again on port A; it
     * can reach the guest before QEMU has taken our new connection to port A, and the
     * guest's bytes written meanwhile are dropped. Asked again, at growing intervals,
     * until port A carries bytes. */
    double prompt_next; /* 0: not asking */
    unsigned prompts_left;
};

struct bridge_vm {
    struct bridge *br;
    const struct bridge_vm_config *cfg;
    struct bridge_port a, b;              /* a: requests in, b: events out */
    const struct bridge_backend_ops *ops; /* the VM's backend (its config's backend key) */
    struct bridge_backend *backend;
    struct bridge_ioe *ioe; /* I/O-error pause policy (ioerror.c) */
    /* resumed by a group with clock policy "preserve": the guest keeps its own clock, the
     * bridge sends it no time (prepare.c) until its next start or resume */
    int clock_preserve;
    /* session with the guest helper */
    uint64_t host_nonce;
    int version_refused; /* last Hello had no common version */
    uint32_t caps;
    /* protection */
    struct bridge_auth_limiter auth;
    struct bridge_bucket rate;       /* requests: rate_requests per rate_window */
    struct bridge_bucket hello_rate; /* Hellos: BRIDGE_HELLO_BURST per BRIDGE_HELLO_WINDOW */
    struct bridge_bucket probe_rate; /* TimeProbes: BRIDGE_PROBE_BURST per BRIDGE_PROBE_WINDOW */
    /* a request whose secret the verifier checks (NULL: none), and the VM's messages that came
     * after it, held in order until it is answered (guest.c) */
    /* the Reply{ok}s owed to accepted requests until their journal rows are on the disk
     * (bridge_guest_settle()), in order; sync_failed: the last fsync failed (no accept until
     * one succeeds) */
    char reply_owed[BRIDGE_OWED_MAX][VMS_REQUEST_ID_LEN + 1];
    unsigned n_owed;
    int sync_failed;
    struct vms_msg *verifying;
    struct vms_msg *held[BRIDGE_HELD_MAX];
    unsigned n_held;
    struct bridge_uid_rate {
        int64_t uid; /* -1: requests that named no uid */
        struct bridge_bucket bucket;
        double used;              /* 0: free slot */
    } uid_rate[BRIDGE_UID_SLOTS]; /* each uid's share of rate_requests */
    struct vms_log_limit logl[BRIDGE_LOG__COUNT];
    /* resending unacked events, a few per loop turn: the next seq after @resend_after */
    int resend_active;
    /* the journal refused a write: the backend's outcome kept, tried again at journal_retry_at */
    struct bridge_backend_result unjournaled;
    int unjournaled_pending;
    double journal_retry_at; /* 0: nothing to retry */
    uint64_t resend_epoch, resend_after, resend_until;
    /* execution */
    struct bridge_queue queue;
    int busy;         /* a request is running */
    int need_recover; /* it was running when the bridge last stopped */
    int restoring;    /* the running request is a restore: the guest's timeline is changing */
    char running[VMS_REQUEST_ID_LEN + 1];
    struct bridge_prepare hx;   /* Prepare/Ready and clock state (prepare.c) */
    struct bridge_managed *mgd; /* managed VMs: the bridge runs QEMU (vm/managed.c); else NULL */
    double now;
    double next_prune;           /* when to drop old finished requests from the journal */
    struct bridge_followups *fu; /* follow-ups of the restore that runs (vm.c), or NULL */
    int reconciling;             /* a snapshot list for the catalogue is on its way */
    double reconciled_at;        /* when the last one was asked (bridge_now()) */
    enum vms_op running_op;      /* the running request's operation (UNKNOWN: not a guest's) */
    /* hostinfo without a hypervisor round trip (issue 18): the backend's last memory figures
     * (kept until a backend event, an operation other than hostinfo/list, a reconnect, or
     * BRIDGE_MEM_KNOWN_SECONDS), and the state storage's free space, sampled */
    struct bridge_backend_result mem_known;
    double mem_known_at; /* bridge_now() when learnt; 0: nothing known */
    uint64_t free_bytes;
    double free_at; /* 0: not sampled */
    uint64_t stat_requests, stat_refused;
};

struct bridge {
    struct bridge_config *cfg;
    struct bridge_db db;
    struct bridge_loop loop;
    const struct bridge_backend_ops *backend;
    struct bridge_vm *vms;
    size_t n_vms;
    double lc_next_start;           /* the host-wide suspend/resume pace (vm/managed.c) */
    struct bridge_admin *admin;     /* the admin socket (admin/ctl.c), NULL if none */
    struct bridge_cluster *cluster; /* HA cluster membership (cluster/), NULL if none */
    struct bridge_groups *groups;   /* group operations (groups/groups.c), NULL if none */
    struct bridge_clones *clones;   /* group clones (groups/clone.c), NULL if none */
    /* secrets verified off the loop (guest/verify.h); NULL: verified on it (unit tests) */
    struct bridge_verifier *verifier;
    /* group commit: the Replies owed for accepted requests wait for the end of the loop turn
     * (bridge_guest_settle_all()), so that the accepts of a turn share one fsync; 0: each
     * accept is settled at once (unit tests) */
    int group_commit;
};

/* ---- vm.c ---- */

/*
 * Prepare @vm for @cfg (no I/O yet). Returns 0 or -1. @br must outlive it.
 */
int bridge_vm_init(struct bridge_vm *vm, struct bridge *br, const struct bridge_vm_config *cfg);
void bridge_vm_free(struct bridge_vm *vm);

/*
 * Read @vm's journal (queue accepted requests; note a request that was
 * running when the bridge stopped, to be re-judged by the backend), open the
 * backend and start connecting the ports. Returns 0 or -1.
 */
int bridge_vm_start(struct bridge_vm *vm);

/* Reconnects, timeouts, backend tick. @now: monotonic seconds. */
void bridge_vm_tick(struct bridge_vm *vm, double now);

/* Send @m on port B if it is connected (events are journaled and resent anyway). */
void bridge_vm_send(struct bridge_vm *vm, const struct vms_msg *m);

/*
 * Resend every unacked event of the VM's current epoch, in seq order. Only
 * starts the resend: at most BRIDGE_RESEND_PER_TURN events go now, and only
 * while port B's queue has room; bridge_vm_resend_pump() (port B drained,
 * every tick) continues it, so a long backlog never blocks the loop.
 */
void bridge_vm_resend_unacked(struct bridge_vm *vm);
/* Continue a resend started by bridge_vm_resend_unacked(). Returns events sent. */
int bridge_vm_resend_pump(struct bridge_vm *vm);

/*
 * Compare the catalogue with the hypervisor's snapshot list (on connect and after every
 * operation): states the hypervisor lacks become "lost", lost ones that are back "ok", and
 * snapshots the bridge did not make are listed as "foreign". Asynchronous; does nothing when
 * the backend cannot list snapshots or a list is already on its way.
 */
void bridge_vm_reconcile(struct bridge_vm *vm);

/* The hooks vm.c gives the backend (managed.c reopens the backend for a new QEMU). */
const struct bridge_backend_hooks *bridge_vm_backend_hooks(void);

/* Connect both ports at the next tick, not after their backoff (a new QEMU listens). */
void bridge_vm_ports_retry_now(struct bridge_vm *vm);

/* Run queued requests if the backend is ready and nothing runs. */
void bridge_vm_kick(struct bridge_vm *vm);

/*
 * 1 for the operations that change nothing (list, hostinfo): their journal
 * writes need not be durable (bridge_db_relaxed_begin()).
 */
int bridge_op_read_only(enum vms_op op);
/*
 * 1 if read-only request @op can be answered at once, unjournaled: nothing runs or waits on
 * @vm (so the answer is what a queued one would get) and, for a hostinfo, the bridge knows
 * fresh figures (no hypervisor round trip). The answer needs no journal because the helper
 * holds a request until its Event comes and sends it again to a restarted bridge: a lost
 * answer is asked again, and asking again changes nothing (design.md, invariant 4).
 */
int bridge_vm_can_answer_now(const struct bridge_vm *vm, enum vms_op op);
/* Answer @r (bridge_vm_can_answer_now() said 1) with an Event of seq 0, no Reply: the Event
 * is the one message the helper waits for, so no half-answered request is left. */
void bridge_vm_answer_now(struct bridge_vm *vm, const struct bridge_request *r);
/* The level of a request's routine log lines (accepted, running, completed): debug for the
 * read-only operations, which a busy guest may ask for thousands of times a second. */
#define BRIDGE_OP_LOG_LEVEL(op) (bridge_op_read_only(op) ? LOG_DEBUG : LOG_INFO)

/*
 * Build the Event completing @r with @status/@message (not journaled yet):
 * op, app_id, app_data, label and state_id of the request.
 */
void bridge_event_for_request(struct vms_msg *ev, const struct bridge_request *r,
                              enum vms_status status, const char *message);

/*
 * Journal the completion of request @r: mark it done with @status and add
 * @ev (already built) as an unacked event in the current epoch, in one
 * transaction; then send it. Returns 0 or -1.
 */
int bridge_vm_complete(struct bridge_vm *vm, const struct bridge_request *r, enum vms_status status,
                       struct vms_msg *ev);

/*
 * The timeline step after restore request @r loaded state @state_id: in one
 * transaction, epoch + 1 (older unacked events superseded), current state =
 * S, @r done with its event in the new epoch, and a copy in the new epoch,
 * reason "restored-copy", of the latest event of every request that was
 * pending inside S and has completed. Then sends Timeline and the new
 * epoch's unacked events. Returns 0 or -1.
 */
int bridge_vm_restored(struct bridge_vm *vm, const struct bridge_request *r, const char *state_id,
                       const struct vms_msg *results);
/* (@results, when not NULL: the follow-ups' outcomes and values, copied into the restore's
 * completion: results, bytes, mem_bytes and the hostinfo fields.) */

/*
 * Fill @ev with host information for request @r of @vm (issue 14: host memory and CPUs,
 * load, the VM's memory bounds, free space of its state storage, versions, the operations
 * the principal may request for r's uid and the VM's quotas with their use); @mem: the
 * backend's query_memory answer (the guest's memory, its boot size, vCPUs and the
 * hypervisor's version when the backend knows them).
 */
struct bridge_backend_result;
void bridge_hostinfo_fill(struct bridge_vm *vm, const struct bridge_request *r,
                          const struct bridge_backend_result *mem, struct vms_msg *ev);

/* ---- guest.c ---- */

/*
 * The guest-facing entry point (a vms_channel_msg_fn for port A): @opaque is
 * the struct bridge_vm, @m one decoded message. Handles Hello (Welcome and
 * resend), Request (rate limit, validation, duplicate check, auth, rights,
 * quotas, journal, Reply, queue) and Ack. Never blocks on the hypervisor.
 */
void bridge_guest_input(void *opaque, struct vms_channel *c, struct vms_msg *m);

/*
 * The verifier's answer for the request @owner (a struct bridge_vm) was holding: the request
 * goes on (rights, quotas, journal, Reply), then the VM's held messages, in order (a
 * bridge_verify_done_fn).
 */
struct bridge_auth_verify;
void bridge_guest_verified(void *owner, struct bridge_auth_verify *v);

/*
 * Make @vm's accepted request durable (bridge_db_barrier(): one fsync for every journal
 * commit deferred so far, the VM's and others') and send the Reply{ok} it is owed. Returns 0,
 * or -1 if the fsync failed (the Reply stays owed, tried again at the VM's next tick, and the
 * VM runs nothing meanwhile).
 */
int bridge_guest_settle(struct bridge_vm *vm);
/* End of a loop turn (group commit): settle every VM that owes Replies (one fsync for all). */
void bridge_guest_settle_all(struct bridge *br);

/* Drop @vm's pending verification and held messages (the VM goes away). */
void bridge_guest_forget(struct bridge_vm *vm);

/*
 * Whether @r may be accepted for @vm given its quotas (pending requests,
 * states, app data bytes): VMS_STATUS_OK or VMS_STATUS_ERR_QUOTA with @why.
 */
enum vms_status bridge_quota_check(struct bridge_vm *vm, const struct bridge_request *r, char *why,
                                   size_t whylen);

#endif
