/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * managed.h — VMs the bridge runs: it starts QEMU from the VM's template,
 * stops it, suspends it to a checkpoint in a tier and resumes it, and re-adopts
 * every QEMU it finds alive after a restart (a bridge restart never stops a VM).
 *
 * QEMU runs in its own session (setsid) with a pidfile; the bridge follows it
 * through a pidfd and the journal (db-lifecycle.h) records its pid and start
 * time, so a restarted bridge tells "still the same process" from a reused pid.
 *
 * Checkpoints:
 *   zero-copy  the VM's RAM is a file in a fast tier (memory-backend-file,
 *              share=on); a suspend writes only the device state (x-ignore-shared)
 *              and the RAM file stays. Valid once, with the RAM file as it was:
 *              a fingerprint taken at suspend is checked before a resume, and a
 *              resumed checkpoint is consumed.
 *   copy       RAM and devices migrate into one file in the tier, fdatasync'ed
 *              before the checkpoint counts.
 * The RAM file carries an OFD write lock for as long as a QEMU or a suspended
 * checkpoint may use it (held by QEMU through an inherited fd while it runs, by
 * the bridge while the VM is suspended): a second start or resume is refused.
 *
 * Tiers: a VM holds one reservation (RAM + state_margin) from power-on to
 * power-off in the tier where its RAM file or checkpoint lives. rapid = on
 * needs the fast tier; best-effort falls back to the slow tier, saying so.
 * When the fast tier is short, the least recently used unpinned checkpoints are
 * demoted to the slow tier (copy, fsync, journal, delete: a crash leaves one
 * valid copy). A rapid = on VM's checkpoint is pinned (never demoted); admins
 * pin and unpin with vmstate-admin.
 *
 * Suspends and resumes go through one host-wide queue: at most
 * lifecycle_per_minute started per minute, resumes before suspends.
 */
#ifndef BRIDGE_MANAGED_H
#define BRIDGE_MANAGED_H

#include <json-c/json.h>

#include "vms-proto.h"

struct bridge;
struct bridge_vm;

enum bridge_lc_op {
    BRIDGE_LC_NONE = 0,
    BRIDGE_LC_START,
    BRIDGE_LC_STOP,
    BRIDGE_LC_SUSPEND,
    BRIDGE_LC_RESUME,
};

/*
 * How an admin request ends: @ok, and @result (owned by the callee; a JSON object with
 * "error" when !ok, else the operation's figures). Called exactly once per accepted
 * request, possibly before bridge_managed_request() returns.
 */
typedef void (*bridge_lc_done_fn)(void *opaque, int ok, json_object *result);

/* Set up @vm's managed state (no I/O). Returns 0 or -1. No-op for attached VMs. */
int bridge_managed_init(struct bridge_vm *vm);
void bridge_managed_free(struct bridge_vm *vm);

/*
 * After the journal is read: re-adopt a live QEMU, finish or roll back an
 * operation a previous bridge left half done (suspend, resume, tier move),
 * re-lock suspended RAM files, start autostart VMs. Returns 0 or -1.
 */
int bridge_managed_start(struct bridge_vm *vm);

/* Timeouts, the host-wide queue, idle detection. @now: monotonic seconds. */
void bridge_managed_tick(struct bridge *br, double now);

/*
 * Ask for @op on @vm. Refusals (wrong state, no room in the tier, locked RAM file) call
 * @done at once with a message that names the numbers. @done may be NULL.
 */
void bridge_managed_request(struct bridge_vm *vm, enum bridge_lc_op op, bridge_lc_done_fn done,
                            void *opaque);

/*
 * Start HA VM @vm for the cluster (cluster/): QEMU inherits @lease_fd (the VM's lease,
 * lease.h; the caller keeps and later closes its own fd) and boots from snapshot @loadvm
 * ("" = a cold boot). Otherwise as bridge_managed_request(START).
 */
void bridge_managed_start_ha(struct bridge_vm *vm, int lease_fd, const char *loadvm,
                             bridge_lc_done_fn done, void *opaque);

/* Self-fence: SIGKILL @vm's QEMU now (this host lost quorum). 1 if a QEMU was signalled. */
int bridge_managed_fence(struct bridge_vm *vm);

/* Forget every pending @done for @opaque (its admin connection went away). */
void bridge_managed_forget(struct bridge *br, void *opaque);

/* The guest's answer to the Prepare before a suspend (prepare.c): OK goes on, INHIBITED
 * refuses the suspend with @message. */
void bridge_managed_prepared(struct bridge_vm *vm, enum vms_status status, const char *message);

/* 1 while a lifecycle operation holds @vm: its queued requests wait (vm.c). */
int bridge_managed_holds(const struct bridge_vm *vm);

/* The backend of @vm is connected (vm.c's ready hook). */
void bridge_managed_backend_ready(struct bridge_vm *vm);

/* 1 while @vm is a managed VM that is not running (requests wait, ports stay quiet). */
int bridge_managed_is_down(const struct bridge_vm *vm);

/* @vm's lifecycle as a JSON object (run state, pid, reservation, checkpoint). */
json_object *bridge_managed_status(struct bridge_vm *vm);

/* Every tier: capacity, reserved, free, checkpoints. */
json_object *bridge_managed_tiers(struct bridge *br);

/* Pin (@pin 1) or unpin @vm's checkpoint. 0, or -1 with @why. */
int bridge_managed_pin(struct bridge_vm *vm, int pin, char *why, size_t whylen);

/*
 * Resume suspended @vm at @at (unix seconds; 0 cancels). When its checkpoint was demoted,
 * it is promoted back to the fast tier ahead of time if there is room. 0, or -1 with @why.
 */
int bridge_managed_schedule_resume(struct bridge_vm *vm, int64_t at, char *why, size_t whylen);

/* Demote (@to_fast 0) or promote (1) @vm's checkpoint now. @done as for requests. */
void bridge_managed_move(struct bridge_vm *vm, int to_fast, bridge_lc_done_fn done, void *opaque);

#endif
