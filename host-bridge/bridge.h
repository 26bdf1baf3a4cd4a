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

/* Hellos (each answered with a Welcome and a resend) allowed per VM: 10 per 10 s. */
#define BRIDGE_HELLO_BURST  10
#define BRIDGE_HELLO_WINDOW 10

struct bridge_port {
    struct vms_channel ch;
    struct bridge_watch watch;
    const char *path;
    double retry_at;
    unsigned backoff_ms;
    pid_t reader; /* port A with privsep: the reader process, 0 if none */
};

struct bridge_vm {
    struct bridge *br;
    const struct bridge_vm_config *cfg;
    struct bridge_port a, b; /* a: requests in, b: events out */
    struct bridge_backend *backend;
    struct bridge_ioe *ioe; /* I/O-error pause policy (ioerror.c) */
    /* session with the guest helper */
    uint64_t host_nonce;
    int version_refused; /* last Hello had no common version */
    uint32_t caps;
    /* protection */
    struct bridge_auth_limiter auth;
    struct bridge_bucket rate;       /* requests: rate_requests per rate_window */
    struct bridge_bucket hello_rate; /* Hellos: BRIDGE_HELLO_BURST per BRIDGE_HELLO_WINDOW */
    /* execution */
    struct bridge_queue queue;
    int busy;         /* a request is running */
    int need_recover; /* it was running when the bridge last stopped */
    char running[VMS_REQUEST_ID_LEN + 1];
    struct bridge_prepare hx;   /* Prepare/Ready and clock state (prepare.c) */
    struct bridge_managed *mgd; /* managed VMs: the bridge runs QEMU (vm/managed.c); else NULL */
    double now;
    double next_prune; /* when to drop old finished requests from the journal */
    uint64_t stat_requests, stat_refused;
};

struct bridge {
    struct bridge_config *cfg;
    struct bridge_db db;
    struct bridge_loop loop;
    const struct bridge_backend_ops *backend;
    struct bridge_vm *vms;
    size_t n_vms;
    double lc_next_start;       /* the host-wide suspend/resume pace (vm/managed.c) */
    struct bridge_admin *admin; /* the admin socket (admin/ctl.c), NULL if none */
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

/* Resend every unacked event of the VM's current epoch, in seq order. */
void bridge_vm_resend_unacked(struct bridge_vm *vm);

/* The hooks vm.c gives the backend (managed.c reopens the backend for a new QEMU). */
const struct bridge_backend_hooks *bridge_vm_backend_hooks(void);

/* Connect both ports at the next tick, not after their backoff (a new QEMU listens). */
void bridge_vm_ports_retry_now(struct bridge_vm *vm);

/* Run queued requests if the backend is ready and nothing runs. */
void bridge_vm_kick(struct bridge_vm *vm);

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
int bridge_vm_restored(struct bridge_vm *vm, const struct bridge_request *r, const char *state_id);

/* ---- guest.c ---- */

/*
 * The guest-facing entry point (a vms_channel_msg_fn for port A): @opaque is
 * the struct bridge_vm, @m one decoded message. Handles Hello (Welcome and
 * resend), Request (rate limit, validation, duplicate check, auth, rights,
 * quotas, journal, Reply, queue) and Ack. Never blocks on the hypervisor.
 */
void bridge_guest_input(void *opaque, struct vms_channel *c, struct vms_msg *m);

/*
 * Whether @r may be accepted for @vm given its quotas (pending requests,
 * states, app data bytes): VMS_STATUS_OK or VMS_STATUS_ERR_QUOTA with @why.
 */
enum vms_status bridge_quota_check(struct bridge_vm *vm, const struct bridge_request *r, char *why,
                                   size_t whylen);

#endif
