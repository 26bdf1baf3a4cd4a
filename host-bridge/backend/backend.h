/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * backend.h — what the bridge needs from a hypervisor, per VM.
 *
 * The QMP backend (backend-qmp.c) is the first; a libvirt backend can
 * implement the same ops. Every operation is asynchronous: it returns 0
 * when started, and then calls @done exactly once, later (never from inside
 * the call), with the result; or returns -1 when it cannot start (not
 * connected, or another snapshot operation is running) and never calls
 * @done. One snapshot operation (save/restore/delete/recover) runs at a time
 * per VM; the bridge's queue guarantees that.
 */
#ifndef BRIDGE_BACKEND_H
#define BRIDGE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "bridge-config.h"
#include "loop.h"
#include "vms-proto.h"

struct bridge_backend; /* one per VM, private to the implementation */

struct bridge_backend_result {
    enum vms_status status;        /* VMS_STATUS_OK or the reason it failed */
    char message[VMS_STR_MAX + 1]; /* the hypervisor's error text, "" on success */
    uint64_t mem_bytes;            /* query_memory: the guest's current memory */
    uint64_t bytes;                /* set_balloon: the target set */
    char run_status[32];           /* query_status: QEMU's status, e.g. "running", "io-error" */
    /* query_block: drives whose io-status is not "ok" (QEMU does not reset it on cont for
     * -blockdev devices, so an entry may be stale) */
    unsigned n_io;
    char io_node[4][BRIDGE_NODE_NAME_MAX];
    char io_status[4][16]; /* "failed", "nospace" */
    int connected;         /* query_chardev: a client is connected to the chardev */
    /* stop/cont: the hypervisor's timestamp of the VM's STOP/RESUME (us since the epoch),
     * 0 if it gave none */
    int64_t event_us;
    /* query_rtc: the guest's RTC (s since the epoch, read as UTC) */
    int64_t rtc_s;
    /* recover: the hypervisor has no trace of the operation (no job, and for a
     * save no snapshot): it never started, and may be run again */
    int never_started;
    /* set_hotplug, query_memory: the VM's boot memory (set-memory at or below it is the
     * balloon's); 0 when the hypervisor did not say */
    uint64_t base_bytes;
    /* query_memory: the VM's vCPUs and the hypervisor's name and version (e.g. "QEMU 7.2.0"),
     * 0 / "" when unknown (hostinfo, issue 14) */
    unsigned vcpus;
    char hypervisor_version[64];
    /* list_snapshots: the snapshot names the hypervisor holds (valid during the callback) */
    const char *const *snapshots;
    unsigned n_snapshots;
};

typedef void (*bridge_backend_done_fn)(void *opaque, const struct bridge_backend_result *r);

struct bridge_backend_hooks {
    /* Connected (again) and usable. */
    void (*ready)(void *opaque);
    /* The connection to the hypervisor is gone (a reconnect is scheduled). */
    void (*lost)(void *opaque);
    /* An asynchronous hypervisor event, by name (for logs and later features): QMP's names,
     * and "GONE" when the VM's QEMU has ended while the hypervisor connection stays (libvirt:
     * the domain stopped; on QMP the connection ends with QEMU: the lost hook). */
    void (*event)(void *opaque, const char *name);
    /* A drive's I/O failed (QMP BLOCK_IO_ERROR): @node (node-name, or the device name),
     * @operation "read"/"write", @reason the error text, @nospace ENOSPC, @action what the
     * hypervisor did ("stop", "report", "ignore"). Called before the event hook. */
    void (*io_error)(void *opaque, const char *node, const char *operation, const char *reason,
                     int nospace, const char *action);
    /* 1 when both guest ports are connected. A backend whose restore replaces the QEMU
     * process (libvirt's revert) keeps the new one paused until then, so what the bridge
     * sends after the restore reaches the restored guest. May be NULL. */
    int (*ports_connected)(void *opaque);
};

struct bridge_backend_ops {
    const char *name;
    /* Start connecting for @cfg; hooks are called with @opaque. NULL on allocation failure. */
    struct bridge_backend *(*open)(const struct bridge_vm_config *cfg, struct bridge_loop *loop,
                                   unsigned reconnect_min_ms, unsigned reconnect_max_ms,
                                   const struct bridge_backend_hooks *hooks, void *opaque);
    /* Disconnect and free; pending operations are dropped without their callback. */
    void (*close)(struct bridge_backend *b);
    /* 1 when connected and usable. */
    int (*is_ready)(struct bridge_backend *b);
    /* Timeouts and reconnects; called every loop turn with monotonic seconds. */
    void (*tick)(struct bridge_backend *b, double now);

    /* Internal snapshot @tag of the running VM (RAM + the configured disks). */
    int (*save)(struct bridge_backend *b, const char *tag, const char *job_id,
                bridge_backend_done_fn done, void *opaque);
    /* Load snapshot @tag. */
    int (*restore)(struct bridge_backend *b, const char *tag, const char *job_id,
                   bridge_backend_done_fn done, void *opaque);
    /* Pause the VM, then load snapshot @tag and leave it paused, success or not: the caller
     * resumes it with cont (a restore's follow-ups run in between, issue 14). Optional (NULL:
     * restore resumes the guest itself). */
    int (*restore_paused)(struct bridge_backend *b, const char *tag, const char *job_id,
                          bridge_backend_done_fn done, void *opaque);
    /* Delete snapshot @tag from the configured disks. */
    int (*delete)(struct bridge_backend *b, const char *tag, const char *job_id,
                  bridge_backend_done_fn done, void *opaque);
    /*
     * Judge an operation (@op of save/restore/delete, @tag, @job_id) that a
     * previous bridge process started and did not see finish: follow the job
     * if it still runs, else decide from the hypervisor's snapshot list.
     * ok = it happened; ERR_ABORTED = it did not or cannot be known.
     */
    int (*recover)(struct bridge_backend *b, enum vms_op op, const char *tag, const char *job_id,
                   bridge_backend_done_fn done, void *opaque);
    /* Does the hypervisor hold snapshot @tag? ok = yes, ERR_NOT_FOUND = no. */
    int (*has_snapshot)(struct bridge_backend *b, const char *tag, bridge_backend_done_fn done,
                        void *opaque);
    /* The snapshot names the hypervisor holds for the VM (result.snapshots), to reconcile the
     * bridge's catalogue with. Optional (NULL: the catalogue is not reconciled). */
    int (*list_snapshots)(struct bridge_backend *b, bridge_backend_done_fn done, void *opaque);
    /* The guest's memory size (balloon actual if there is a balloon, else the base size, plus
     * hot-plugged memory); also base_bytes, vcpus and hypervisor_version when known. */
    int (*query_memory)(struct bridge_backend *b, bridge_backend_done_fn done, void *opaque);
    /* Ask the balloon for @bytes of guest memory. */
    int (*set_balloon)(struct bridge_backend *b, uint64_t bytes, bridge_backend_done_fn done,
                       void *opaque);
    /*
     * Memory beyond the boot size through the virtio-mem device @device (its qdev id): plug
     * max(0, @bytes - boot size) and follow the device's size until it is reached or stops
     * moving. result: mem_bytes = boot + plugged, base_bytes = boot. Optional (NULL: no
     * hotplug).
     */
    int (*set_hotplug)(struct bridge_backend *b, const char *device, uint64_t bytes,
                       bridge_backend_done_fn done, void *opaque);
    /* The VM's run state (result.run_status). */
    int (*query_status)(struct bridge_backend *b, bridge_backend_done_fn done, void *opaque);
    /* The drives in an I/O-error state (result.n_io, io_node, io_status). */
    int (*query_block)(struct bridge_backend *b, bridge_backend_done_fn done, void *opaque);
    /* Resume a paused VM (QMP cont). */
    int (*cont)(struct bridge_backend *b, bridge_backend_done_fn done, void *opaque);
    /* Pause the VM now (QMP stop), for a group's stop at a time; result.event_us says when
     * it stopped. NULL: the backend cannot (groups refuse its VMs). */
    int (*stop)(struct bridge_backend *b, bridge_backend_done_fn done, void *opaque);
    /* A stop (@stop 1) or cont to run at a moment: written now, all but its last byte, so that
     * at the moment release_run_state sends one byte. QEMU reads its monitor a byte per
     * main-loop turn, so a whole command costs ~1 ms more there (bench/RESULTS.md §10).
     * Until the release, commands sent meanwhile wait behind it and fd-passing ones fail.
     * @done as stop/cont, after the release. Returns 0 or -1 (not ready, or one is already
     * primed). NULL: send stop/cont at the moment instead. */
    int (*prime_run_state)(struct bridge_backend *b, int stop, bridge_backend_done_fn done,
                           void *opaque);
    /* The primed command: @go 1 runs it now; @go 0 withdraws it (the hypervisor refuses it
     * unrun and its done is never called). Returns 0, or -1 if none is primed. */
    int (*release_run_state)(struct bridge_backend *b, int go);
    /* Stop the hypervisor process: @force 0 = ask it to quit (QMP quit), 1 = SIGKILL the
     * process at the other end of the monitor socket. Returns 0 or -1. */
    int (*kill)(struct bridge_backend *b, int force);
    /* The guest ports' socket paths as the hypervisor's configuration names them (libvirt:
     * the domain XML's channels), for a VM whose config leaves them out. 0 with both
     * filled, -1 if not known (yet). NULL: the VM's config always gives them. */
    int (*ports)(struct bridge_backend *b, char *port_a, char *port_b, size_t len);

    /* ---- lifecycle of managed VMs (vm/managed.c) ---- */
    /*
     * Stop the VM and write its checkpoint to @fd (the backend keeps its own copy of the
     * fd). @zero_copy: the VM's RAM lives in a shared file that stays in place, and only
     * the device state is written. @max_bandwidth: bytes/s, 0 = unlimited. ok when the
     * hypervisor says the checkpoint is complete; the VM is then stopped, not yet gone.
     */
    int (*checkpoint)(struct bridge_backend *b, int fd, int zero_copy, uint64_t max_bandwidth,
                      bridge_backend_done_fn done, void *opaque);
    /* Load a checkpoint from @fd into a hypervisor started to wait for one; the VM stays
     * paused until cont. @zero_copy as for checkpoint. */
    int (*load_checkpoint)(struct bridge_backend *b, int fd, int zero_copy,
                           bridge_backend_done_fn done, void *opaque);
    /* Reconnect with backoff from @min_ms doubling to @max_ms (a new QEMU: retry often). */
    void (*reconnect_policy)(struct bridge_backend *b, unsigned min_ms, unsigned max_ms);
    /* Press the VM's power button (ACPI). */
    int (*powerdown)(struct bridge_backend *b, bridge_backend_done_fn done, void *opaque);
    /* Whether a client is connected to chardev @id (result.connected). */
    int (*query_chardev)(struct bridge_backend *b, const char *id, bridge_backend_done_fn done,
                         void *opaque);
    /*
     * Take block node @node (a disk whose path to its storage failed) out of the paused VM:
     * its device is switched onto an empty node of the same size, and @node and the nodes
     * under it are deleted, so that a checkpoint (migration) of the VM need not flush a
     * storage it cannot reach (QEMU flushes every disk to complete a migration). The guest's
     * failed requests stay in the device's state and are retried where the checkpoint is
     * loaded. The VM must not run here afterwards. Optional (NULL: not supported).
     */
    int (*detach_node)(struct bridge_backend *b, const char *node, bridge_backend_done_fn done,
                       void *opaque);
    /* The guest's real-time clock (result.rtc_s; 1 s resolution), e.g. at a group's stop,
     * when no guest helper can say the guest's time. Optional (NULL: not supported). */
    int (*query_rtc)(struct bridge_backend *b, bridge_backend_done_fn done, void *opaque);

    /* ---- managed VMs whose hypervisor manager runs the VM (libvirt, vm/managed.c) ----
     * The VM is defined in the manager (a persistent libvirt domain): the bridge asks it to
     * boot, save and restore the VM instead of spawning QEMU, and learns that the VM ended
     * from the event hook ("GONE") or from query_status ("shutdown"). All three are NULL for
     * a backend whose QEMU the bridge starts itself (QMP: checkpoint/load_checkpoint). */
    /* Boot the defined, inactive VM (libvirt: virDomainCreate); ok once it runs. */
    int (*vm_create)(struct bridge_backend *b, bridge_backend_done_fn done, void *opaque);
    /*
     * Write the running or paused VM's RAM and device state to @path and end the VM
     * (libvirt: virDomainSaveFlags). The manager, not the bridge, opens @path (libvirtd runs
     * as another user and takes no fd), so the checkpoint op's fd contract does not fit;
     * the caller fdatasyncs @path afterwards. ok = the file is complete and the VM is gone;
     * on failure the VM runs on as it was (libvirt resumes it).
     */
    int (*vm_save_file)(struct bridge_backend *b, const char *path, bridge_backend_done_fn done,
                        void *opaque);
    /* Start the VM from the file @path wrote by vm_save_file, left paused (the caller resumes
     * it with cont once the guest ports are back). The file is not removed. */
    int (*vm_restore_file)(struct bridge_backend *b, const char *path, bridge_backend_done_fn done,
                           void *opaque);
};

extern const struct bridge_backend_ops bridge_backend_qmp;
#ifdef HAVE_LIBVIRT
/* Defined in the module backend-libvirt.so (and linked into its unit test). */
extern const struct bridge_backend_ops bridge_backend_libvirt;

/* The libvirt backend's ops from its module, loaded on first use (a bridge of QMP VMs and
 * its privsep reader never map libvirt and what it pulls in); NULL if the module cannot be
 * loaded (logged, with the reason). */
const struct bridge_backend_ops *bridge_backend_libvirt_load(void);
#endif

/* The ops for @cfg's backend key; @fallback for QMP (tests pass a fake). NULL when the
 * backend's module cannot be loaded (logged). */
const struct bridge_backend_ops *bridge_backend_for(const struct bridge_vm_config *cfg,
                                                    const struct bridge_backend_ops *fallback);

/* set-memory follows the balloon: a balloon that has not moved for SETTLE seconds is where
 * the guest will leave it (it gave what it could, or has no driver); MAX bounds the wait. */
#define BRIDGE_BALLOON_SETTLE_S 3.0
#define BRIDGE_BALLOON_MAX_S    60.0

/* The driver moves whole pages: 1 MiB from the target counts as reached. */
static inline int bridge_balloon_near(uint64_t actual, uint64_t target)
{
    return (actual > target ? actual - target : target - actual) < (1u << 20);
}

/*
 * The completion message of a set-memory that reached @actual of @target: "" when it
 * got there, else @why (or "stopped short") with both sizes.
 */
void bridge_balloon_message(char *out, size_t len, const char *why, uint64_t actual,
                            uint64_t target);

#endif
