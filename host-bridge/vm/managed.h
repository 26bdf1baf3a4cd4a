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

/*
 * Start HA VM @vm from the migration stream in @state_file (written by another host's
 * checkpoint of the paused VM, cluster/): QEMU inherits @lease_fd, waits for the stream
 * (-incoming defer), loads it, and runs (cont): a failed guest write the source QEMU kept
 * is retried here. The file is removed once the VM runs. Otherwise as START.
 */
void bridge_managed_start_ha_incoming(struct bridge_vm *vm, int lease_fd, const char *state_file,
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

/* An event of @vm's backend (vm.c's event hook): for a VM libvirt runs, "GONE" means the
 * domain has ended (stopped, saved, crashed), as QEMU's exit does for the bridge's own. */
void bridge_managed_backend_event(struct bridge_vm *vm, const char *name);

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

/*
 * Could @vm start with @bytes of RAM: does a tier it may reserve in hold @bytes + the state
 * margin beside the other VMs' reservations? 1 yes, 0 no (@why names the numbers), -1 on a
 * journal error.
 */
int bridge_managed_fits(struct bridge_vm *vm, uint64_t bytes, char *why, size_t whylen);

/* Journal @bytes as @vm's RAM from its next start (the offline set-memory; the configured
 * size clears the override). 0, or -1 (not managed, journal error). */
int bridge_managed_set_memory(struct bridge_vm *vm, uint64_t bytes);

/* @vm's guest RAM for its next start (0 when @vm is not managed). */
uint64_t bridge_managed_memory(const struct bridge_vm *vm);

/* Demote (@to_fast 0) or promote (1) @vm's checkpoint now. @done as for requests. */
void bridge_managed_move(struct bridge_vm *vm, int to_fast, bridge_lc_done_fn done, void *opaque);

/* ---- for groups (host-bridge/groups/) ---- */

/*
 * Could @vm take part in a group's @op (SUSPEND: running, not busy, QMP up, a backend that
 * stops on demand, room for the checkpoint; RESUME: suspended, not busy)? 0, or -1 with @why.
 */
int bridge_managed_group_check(struct bridge_vm *vm, enum bridge_lc_op op, char *why,
                               size_t whylen);

/*
 * A group's suspend of @vm is committed for a time T: tell its guest apps now, as a single
 * VM's suspend does (Prepare: PrepareSave to the apps, the pre-save hooks). The group's time
 * is binding: the answer is logged, not waited for. 1 sent, 0 when no Prepare applies (no
 * helper that speaks it, or prepare_timeout_ms = 0).
 */
int bridge_managed_group_prepare(struct bridge_vm *vm);

/* The group suspend announced to @vm's guest was aborted before T: Notice "save-cancelled". */
void bridge_managed_group_cancelled(struct bridge_vm *vm);

/* Suspend @vm, which the group's timer has just stopped: checkpoint and quit at once (its
 * guest was prepared at commit, bridge_managed_group_prepare; not paced by the host-wide
 * queue). @done as for requests. */
void bridge_managed_group_suspend(struct bridge_vm *vm, bridge_lc_done_fn done, void *opaque);

/*
 * Resume @vm from its checkpoint up to the point before cont: QEMU has loaded it, the ports
 * are connected, the checkpoint is consumed, the VM is paused; @done then says "held".
 * @preserve_clock: the bridge sends the guest no time after the cont (the clock policy
 * "preserve"), until the VM's next ordinary start or resume.
 */
void bridge_managed_group_resume(struct bridge_vm *vm, int preserve_clock, bridge_lc_done_fn done,
                                 void *opaque);

/* cont a VM held by bridge_managed_group_resume; @done gets "resume_event_us". @primed: only
 * primed (the backend's prime_run_state); the backend's release_run_state sends it. 0, or -1
 * (not held, QMP not ready, or it cannot prime: @done not called). */
int bridge_managed_group_cont(struct bridge_vm *vm, bridge_lc_done_fn done, void *opaque,
                              int primed);

#endif
