/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * prepare.h — the bridge's side of issue 8: consistent guest state across
 * timeline changes.
 *
 *  - Prepare/Ready: before a save, the bridge sends Prepare{request_id,
 *    label, timeout_ms} to the guest helper (when it announced the
 *    "prepare" capability and prepare_timeout_ms > 0) and starts the
 *    snapshot on the matching Ready, or after prepare_timeout_ms without
 *    one: a guest can delay a save by at most that long, never block it.
 *    Ready{status=14 inhibited, message} fails the save with that status and
 *    the listener's reason.
 *  - Clock: the host's CLOCK_REALTIME goes to the guest on every timeline
 *    change — time_ns on Welcome (helper connect) and Timeline (restore),
 *    and a Clock{time_ns, reason} message on QMP RESUME (reason "resume",
 *    "save" when the pause was our own snapshot, "io-error" after a
 *    BLOCK_IO_ERROR pause). Per VM: clock_sync = no turns it off.
 */
#ifndef BRIDGE_PREPARE_H
#define BRIDGE_PREPARE_H

#include <stdint.h>

#include "vms-proto.h"

struct bridge_vm;
struct bridge_request;

struct bridge_prepare {
    int active;                              /* waiting for Ready */
    char request_id[VMS_REQUEST_ID_LEN + 1]; /* the save being prepared */
    double started, deadline;                /* monotonic seconds */
    int io_error;                            /* a BLOCK_IO_ERROR since the last RESUME */
    uint64_t clocks_sent;                    /* Clock messages sent (tests, logs) */
    int for_suspend;                         /* prepared for a suspend (vm/managed.c) */
    /* the guest's CLOCK_REALTIME as its last Ready said (0: none), and the host's when that
     * Ready arrived: a group's clock state at the stop extrapolates from them (groups.c) */
    uint64_t ready_guest_ns, ready_host_ns;
};

/* Host CLOCK_REALTIME in nanoseconds. */
uint64_t bridge_clock_realtime_ns(void);

/* Set time_ns on @m (Welcome, Timeline) when clock sync applies to @vm. */
void bridge_clock_stamp(struct bridge_vm *vm, struct vms_msg *m);

/* Send Clock{time_ns, reason} when clock sync applies to @vm. Returns 1 if sent. */
int bridge_clock_send(struct bridge_vm *vm, const char *reason);

/*
 * Port B (re)connected: send Clock{reason "connect"} (with time_ns when
 * clock_sync = yes) unless the helper is known not to speak "clock". A helper
 * that is already welcomed answers with a Hello, so a restarted bridge learns
 * its capabilities (prepare, clock) without waiting for the helper to notice.
 */
void bridge_clock_port_connected(struct bridge_vm *vm);

/* Backend event hook (backend.h: event): RESUME, BLOCK_IO_ERROR. @opaque is the VM. */
void bridge_clock_on_event(void *opaque, const char *name);

/*
 * Before running save @r: send Prepare and return 1 (the save starts later
 * through bridge_vm_save_go), or return 0 when no Prepare applies (the
 * caller starts the save now).
 */
int bridge_prepare_start(struct bridge_vm *vm, const struct bridge_request *r);
/* 1 if bridge_prepare_start() would send a Prepare now (the guest takes them). */
int bridge_prepare_wanted(const struct bridge_vm *vm);

/*
 * Before a suspend of a managed VM: send Prepare for @prepare_id (a request id the guest
 * has never seen) and return 1 (bridge_managed_prepared() is called when the guest is
 * ready, or vetoes, or at the deadline), or 0 when no Prepare applies.
 */
int bridge_prepare_start_suspend(struct bridge_vm *vm, const char *prepare_id);

/* A Ready from the guest (port A). Ignored unless it matches the save being prepared. */
void bridge_prepare_ready(struct bridge_vm *vm, const struct vms_msg *m);

/* Give up waiting at the deadline. */
void bridge_prepare_tick(struct bridge_vm *vm, double now);

/*
 * vm.c: the prepare phase of the running save ended: @status OK starts the
 * snapshot, ERR_INHIBITED completes the save with @message.
 */
void bridge_vm_save_go(struct bridge_vm *vm, enum vms_status status, const char *message);

#endif
