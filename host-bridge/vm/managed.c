/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * managed.c — see managed.h.
 */
#include "config.h"
#include "managed-int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <stdarg.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bridge.h"
#include "cluster.h"
#include "db-lifecycle.h"
#include "vms-log.h"

/*
 * Fault injection for the crash tests: with VMSTATE_BRIDGE_CRASH_AT=NAME in its environment
 * the bridge SIGKILLs itself at point NAME, exactly as an outside kill -9 would, but at a
 * known step (a timed kill races the operation and proves less).
 */
void lc_crash_point(const char *name)
{
    const char *at = getenv("VMSTATE_BRIDGE_CRASH_AT");
    if (at && !strcmp(at, name)) {
        vms_warn(NULL, NULL, "VMSTATE_BRIDGE_CRASH_AT=%s: SIGKILL", name);
        kill(getpid(), SIGKILL);
    }
}

double lc_mono(void)
{
    return bridge_now();
}

/* ---- replies ---- */

void lc_reply(bridge_lc_done_fn done, void *opaque, int ok, json_object *o)
{
    if (done)
        done(opaque, ok, o);
    else
        json_object_put(o);
}

void lc_refuse(bridge_lc_done_fn done, void *opaque, struct bridge_vm *vm, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void lc_refuse(bridge_lc_done_fn done, void *opaque, struct bridge_vm *vm, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    json_object *o = json_object_new_object();

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    vms_warn(vmname(vm), NULL, "lifecycle: %s", msg);
    json_object_object_add(o, "error", json_object_new_string(msg));
    lc_reply(done, opaque, 0, o);
}

/* End the operation in progress with @ok and @o. */
static void op_end(struct bridge_managed *m, int ok, json_object *o)
{
    bridge_lc_done_fn done = m->done;
    void *opaque = m->opaque;
    int op_was_start = m->op == BRIDGE_LC_START;

    m->op = BRIDGE_LC_NONE;
    m->phase = P_IDLE;
    m->done = NULL;
    m->opaque = NULL;
    m->lease_fd = -1; /* the cluster's, used at the spawn only */
    m->loadvm[0] = '\0';
    m->incoming[0] = '\0';
    if (m->state_fd >= 0 && op_was_start) {
        close(m->state_fd); /* an HA incoming start that ended before loading */
        m->state_fd = -1;
    }
    lc_reply(done, opaque, ok, o);
    bridge_vm_kick(m->vm); /* guest requests that waited for the operation */
}

static void op_fail(struct bridge_managed *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void op_fail(struct bridge_managed *m, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    json_object *o = json_object_new_object();

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    vms_err(vmname(m->vm), NULL, "lifecycle: %s", msg);
    json_object_object_add(o, "error", json_object_new_string(msg));
    op_end(m, 0, o);
}

static int journal_row(struct bridge_managed *m, const char *state)
{
    int rc;
    snprintf(m->row.run_state, sizeof(m->row.run_state), "%s", state);
    rc = bridge_db_managed_put(&m->vm->br->db, &m->row);
    bridge_cluster_run_state(m->vm, state);
    return rc;
}

/* ---- the QEMU process ---- */

static void on_pidfd(struct bridge_watch *w, uint32_t revents);

static void watch_pid(struct bridge_managed *m, pid_t pid)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);

    if (m->pidfd >= 0) {
        bridge_watch_del(&m->vm->br->loop, &m->pidw);
        close(m->pidfd);
        m->pidfd = -1;
    }
    m->pid_polled = 0;
    if (fd < 0 && errno == ENOSYS) {
        /* valgrind does not know the call, nor do kernels before 5.3: the exit is found by
         * vm_tick's poll instead (a loop turn late) */
        static int said;
        if (!said++)
            vms_info(NULL, NULL, "lifecycle: no pidfd_open here: QEMU's exit is polled");
        m->pid_polled = 1;
        return;
    }
    if (fd < 0) {
        vms_warn(vmname(m->vm), NULL, "lifecycle: pidfd_open %d: %s", (int)pid, strerror(errno));
        return;
    }
    m->pidfd = fd;
    bridge_watch_add(&m->vm->br->loop, &m->pidw, fd, EPOLLIN);
}

/* Point the backend and the ports at the new QEMU now, not after their backoff. */
static void reconnect_now(struct bridge_vm *vm)
{
    struct bridge *br = vm->br;
    if (vm->backend)
        vm->ops->close(vm->backend);
    /* a fresh QEMU opens its monitor within tens of ms: look every 10 ms until it answers
     * (bridge_managed_backend_ready restores the configured backoff) */
    vm->backend = vm->ops->open(vm->cfg, &br->loop, QMP_FIRST_RETRY_MS, QMP_FIRST_RETRY_MS,
                                bridge_vm_backend_hooks(), vm);
    bridge_vm_ports_retry_now(vm);
}

/* Spawn QEMU for a start (@incoming 0) or a resume (1); the journal says where it runs. */
static int launch(struct bridge_managed *m, int incoming)
{
    pid_t pid;

    if (mkdir(m->vm->cfg->run_dir, 0700) < 0 && errno != EEXIST) {
        op_fail(m, "cannot create %s: %s", m->vm->cfg->run_dir, strerror(errno));
        return -1;
    }
    pid = lc_spawn_qemu(m, incoming);
    if (pid < 0) {
        op_fail(m, "cannot start QEMU: %s", strerror(errno));
        return -1;
    }
    /* QEMU holds the RAM lock now (its fd 3): the bridge's copy goes */
    if (m->ram_lock_fd >= 0) {
        close(m->ram_lock_fd);
        m->ram_lock_fd = -1;
    }
    m->row.pid = pid;
    m->row.pid_start = 0;
    for (int i = 0; i < 50 && !m->row.pid_start; i++) {
        m->row.pid_start = lc_proc_start_time(pid, NULL);
        if (!m->row.pid_start)
            usleep(1000);
    }
    watch_pid(m, pid);
    reconnect_now(m->vm);
    m->phase = P_WAIT_READY;
    m->deadline = lc_mono() + START_READY_S;
    vms_info(vmname(m->vm), NULL, "lifecycle: QEMU started, pid %d%s", (int)pid,
             incoming ? " (waiting for its checkpoint)" : "");
    return 0;
}

/* ---- start ---- */

/*
 * Choose where @m's RAM (zero-copy) or checkpoints (copy) live and reserve it. Returns 1
 * reserved, 0 waiting for a demotion to make room (phase P_WAIT_MOVE), -1 refused (the op
 * has ended).
 */
static int reserve(struct bridge_managed *m)
{
    struct bridge_vm *vm = m->vm;
    const struct bridge_vm_config *c = vm->cfg;
    const struct bridge_tier_config *fast = lc_tier_of(vm, c->fast_tier),
                                    *slow = lc_tier_of(vm, c->slow_tier), *use = NULL;
    uint64_t need = lc_need_bytes(vm);
    int64_t ffree = fast ? lc_tier_free(vm, fast) : -1;

    if (c->rapid != BRIDGE_RAPID_OFF && fast) {
        if (ffree >= (int64_t)need) {
            use = fast;
        } else if (lc_demote_one(vm->br, fast) || lc_moves_running(vm->br)) {
            m->phase = P_WAIT_MOVE;
            m->deadline = lc_mono() + 1;
            return 0;
        } else if (c->rapid == BRIDGE_RAPID_ON) {
            op_fail(m,
                    "tier %s cannot reserve %llu bytes (RAM %llu + margin %llu): capacity %llu, "
                    "reserved %llu, free %lld, missing %lld",
                    fast->name, (unsigned long long)need, (unsigned long long)lc_memory_bytes(vm),
                    (unsigned long long)vm->br->cfg->state_margin,
                    (unsigned long long)fast->capacity,
                    (unsigned long long)((int64_t)fast->capacity - ffree), (long long)ffree,
                    (long long)((int64_t)need - ffree));
            return -1;
        } else {
            vms_warn(vmname(vm), NULL,
                     "lifecycle: tier %s has %lld bytes free, %llu needed: rapid = best-effort "
                     "falls back to tier %s (copy path)",
                     fast->name, (long long)ffree, (unsigned long long)need, slow->name);
        }
    }
    if (!use)
        use = slow ? slow : fast;
    if (lc_tier_free(vm, use) < (int64_t)need) {
        op_fail(m, "tier %s cannot reserve %llu bytes: capacity %llu, free %lld", use->name,
                (unsigned long long)need, (unsigned long long)use->capacity,
                (long long)lc_tier_free(vm, use));
        return -1;
    }
    snprintf(m->row.res_tier, sizeof(m->row.res_tier), "%s", use->name);
    m->row.res_bytes = need;
    m->row.ram_file[0] = '\0';
    /* zero-copy needs the bridge's own QEMU (its memory-backend-file): not under libvirt */
    if (use->fast && c->rapid != BRIDGE_RAPID_OFF && !engine_runs(m))
        snprintf(m->row.ram_file, sizeof(m->row.ram_file), "%.400s/%.60s.ram", use->path,
                 vmname(vm));
    return 1;
}

/* The VM runs: the start's answer. */
static void start_done(struct bridge_managed *m)
{
    json_object *o = json_object_new_object();

    journal_row(m, "running");
    json_object_object_add(o, "pid", json_object_new_int64(m->row.pid));
    json_object_object_add(o, "tier", json_object_new_string(m->row.res_tier));
    json_object_object_add(o, "zero_copy", json_object_new_boolean(m->row.ram_file[0] != 0));
    json_object_object_add(o, "total_ms", json_object_new_double((lc_mono() - m->t0) * 1000));
    vms_info(vmname(m->vm), NULL, "lifecycle: running (tier %s%s)", m->row.res_tier,
             m->row.ram_file[0] ? ", RAM in the tier" : "");
    op_end(m, 1, o);
}

static void on_engine_created(void *opaque, const struct bridge_backend_result *r)
{
    struct bridge_managed *m = opaque;

    if (m->op != BRIDGE_LC_START)
        return;
    if (r->status != VMS_STATUS_OK) {
        m->row.res_tier[0] = '\0';
        m->row.res_bytes = 0;
        journal_row(m, "stopped");
        op_fail(m, "libvirt cannot start domain %s: %s", m->vm->cfg->domain, r->message);
        return;
    }
    start_done(m);
}

/* libvirt: boot the defined domain (its ports dial the bridge's listening sockets). */
static void engine_create(struct bridge_managed *m)
{
    struct bridge_vm *vm = m->vm;

    m->phase = P_WAIT_READY; /* libvirt's call ends it, not a deadline (see vm_tick) */
    if (!vm->backend || vm->ops->vm_create(vm->backend, on_engine_created, m) < 0) {
        m->row.res_tier[0] = '\0';
        m->row.res_bytes = 0;
        journal_row(m, "stopped");
        op_fail(m, "not connected to libvirt");
        return;
    }
    bridge_vm_ports_retry_now(vm);
}

static void start_go(struct bridge_managed *m)
{
    int r = reserve(m);

    if (r <= 0)
        return;
    if (m->row.ram_file[0]) {
        m->ram_lock_fd = lc_ofd_lock(m->row.ram_file, 1, lc_memory_bytes(m->vm));
        if (m->ram_lock_fd < 0) {
            op_fail(m, "RAM file %s: %s", m->row.ram_file,
                    errno == EAGAIN ? "locked by another process (a QEMU or a suspended checkpoint)"
                                    : strerror(errno));
            m->row.res_tier[0] = '\0';
            m->row.res_bytes = 0;
            return;
        }
    }
    if (journal_row(m, "starting") < 0) {
        op_fail(m, "cannot journal the start");
        return;
    }
    if (m->incoming[0]) {
        m->state_fd = open(m->incoming, O_RDONLY | O_CLOEXEC);
        if (m->state_fd < 0) {
            op_fail(m, "migration stream %s: %s", m->incoming, strerror(errno));
            m->row.res_tier[0] = '\0';
            m->row.res_bytes = 0;
            journal_row(m, "stopped");
            return;
        }
    }
    if (engine_runs(m)) {
        engine_create(m);
        return;
    }
    if (launch(m, m->incoming[0] != 0) < 0) {
        m->row.res_tier[0] = '\0';
        m->row.res_bytes = 0;
        journal_row(m, "stopped");
        return;
    }
    journal_row(m, "starting");
}

/* ---- suspend ---- */

static void on_checkpoint_written(void *opaque, const struct bridge_backend_result *r);
static void checkpoint_go(struct bridge_managed *m);
static void suspend_done(struct bridge_managed *m);

/*
 * Suspend: wait for the guest request in flight (a snapshot job and a checkpoint must not
 * overlap), let guest apps prepare (PrepareSave, pre-save hooks), then checkpoint.
 */
/* Send Prepare under a fresh request id (one the guest has never seen). 1 sent, 0 when no
 * Prepare applies (no helper that speaks it, or prepare_timeout_ms = 0). */
static int send_prepare(struct bridge_vm *vm)
{
    unsigned char rnd[16];
    char id[VMS_REQUEST_ID_LEN + 1];

    randombytes_buf(rnd, sizeof(rnd));
    for (int i = 0; i < 16; i++)
        snprintf(id + 2 * i, 3, "%02x", rnd[i]);
    return bridge_prepare_start_suspend(vm, id);
}

static void suspend_go(struct bridge_managed *m)
{
    struct bridge_vm *vm = m->vm;

    if (vm->busy) {
        m->phase = P_WAIT_IDLE;
        m->deadline = lc_mono() + 0.05;
        return;
    }
    m->phase = P_PREPARE;
    if (!send_prepare(vm))
        checkpoint_go(m);
}

void bridge_managed_prepared(struct bridge_vm *vm, enum vms_status status, const char *message)
{
    struct bridge_managed *m = vm->mgd;

    if (m && m->op == BRIDGE_LC_NONE) {
        /* a group's Prepare (bridge_managed_group_prepare): its time is binding */
        vms_info(vmname(vm), NULL, "group: the guest answered Prepare: %s%s%s",
                 status == VMS_STATUS_ERR_INHIBITED ? "it inhibits (the group's time is binding: "
                                                      "the suspend goes on)"
                                                    : "ready",
                 message ? ": " : "", message ? message : "");
        return;
    }
    if (!m || m->op != BRIDGE_LC_SUSPEND || m->phase != P_PREPARE)
        return;
    if (status == VMS_STATUS_ERR_INHIBITED) {
        op_fail(m, "suspend refused: %s", message ? message : "inhibited by the guest");
        return;
    }
    checkpoint_go(m);
}

int bridge_managed_holds(const struct bridge_vm *vm)
{
    return vm->mgd && (vm->mgd->op == BRIDGE_LC_SUSPEND || vm->mgd->op == BRIDGE_LC_STOP ||
                       vm->mgd->op == BRIDGE_LC_RESUME);
}

static void checkpoint_go(struct bridge_managed *m)
{
    struct bridge_vm *vm = m->vm;
    const struct bridge_tier_config *t = lc_tier_of(vm, m->row.res_tier);
    unsigned char rnd[8];
    struct bridge_db_checkpoint *ck = &m->ck;

    if (!t) {
        op_fail(m, "no tier reserved (was the VM started by this bridge?)");
        return;
    }
    memset(ck, 0, sizeof(*ck));
    randombytes_buf(rnd, sizeof(rnd));
    snprintf(ck->id, sizeof(ck->id), "ck-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
             rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    snprintf(ck->vm, sizeof(ck->vm), "%s", vmname(vm));
    snprintf(ck->tier, sizeof(ck->tier), "%s", t->name);
    ck->zero_copy = m->row.ram_file[0] != '\0';
    snprintf(ck->state_file, sizeof(ck->state_file), "%.400s/%.60s-%.39s.state", t->path,
             vmname(vm), ck->id);
    snprintf(ck->ram_file, sizeof(ck->ram_file), "%s", m->row.ram_file);
    ck->bytes = m->row.res_bytes;
    ck->created = ck->last_used = (int64_t)time(NULL);
    ck->pinned = vm->cfg->rapid == BRIDGE_RAPID_ON;
    snprintf(ck->phase, sizeof(ck->phase), "writing");
    if (bridge_db_checkpoint_put(&vm->br->db, ck) < 0 || journal_row(m, "suspending") < 0) {
        op_fail(m, "cannot journal the suspend");
        return;
    }
    m->state_fd = open(ck->state_file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (m->state_fd < 0) {
        op_fail(m, "checkpoint file %s: %s", ck->state_file, strerror(errno));
        snprintf(ck->phase, sizeof(ck->phase), "discarded");
        bridge_db_checkpoint_put(&vm->br->db, ck);
        journal_row(m, "running");
        return;
    }
    m->phase = P_CHECKPOINT;
    m->t_mark = lc_mono();
    lc_crash_point("suspend-journaled");
    /* libvirt: libvirtd writes the file it opens itself (O_TRUNC: the inode the bridge
     * created and fdatasyncs afterwards) and ends the domain */
    if ((engine_runs(m)
             ? vm->ops->vm_save_file(vm->backend, ck->state_file, on_checkpoint_written, m)
             : vm->ops->checkpoint(vm->backend, m->state_fd, ck->zero_copy,
                                   ck->zero_copy ? 0 : vm->br->cfg->lifecycle_bandwidth,
                                   on_checkpoint_written, m)) < 0) {
        close(m->state_fd);
        m->state_fd = -1;
        unlink(ck->state_file);
        snprintf(ck->phase, sizeof(ck->phase), "discarded");
        bridge_db_checkpoint_put(&vm->br->db, ck);
        journal_row(m, "running");
        op_fail(m, "the hypervisor is not ready for a checkpoint");
    }
}

static void on_cont_after_failed_suspend(void *opaque, const struct bridge_backend_result *r)
{
    struct bridge_managed *m = opaque;
    if (r->status != VMS_STATUS_OK)
        vms_err(vmname(m->vm), NULL, "lifecycle: cont after a failed suspend: %s", r->message);
}

static void on_checkpoint_written(void *opaque, const struct bridge_backend_result *r)
{
    struct bridge_managed *m = opaque;
    struct bridge_vm *vm = m->vm;
    struct stat st;

    if (r->status != VMS_STATUS_OK) {
        close(m->state_fd);
        m->state_fd = -1;
        unlink(m->ck.state_file);
        snprintf(m->ck.phase, sizeof(m->ck.phase), "discarded");
        bridge_db_checkpoint_put(&vm->br->db, &m->ck);
        journal_row(m, "running");
        if (!engine_runs(m)) /* libvirt resumes a domain whose save failed itself */
            vm->ops->cont(vm->backend, on_cont_after_failed_suspend, m);
        op_fail(m, "checkpoint failed: %s", r->message);
        return;
    }
    /* durable before it counts: the journal says "valid" only for bytes on disk */
    if (fdatasync(m->state_fd) < 0 || fstat(m->state_fd, &st) < 0) {
        close(m->state_fd);
        m->state_fd = -1;
        vm->ops->cont(vm->backend, on_cont_after_failed_suspend, m);
        op_fail(m, "checkpoint file %s: %s", m->ck.state_file, strerror(errno));
        return;
    }
    close(m->state_fd);
    m->state_fd = -1;
    snprintf(m->ck.phase, sizeof(m->ck.phase), "valid");
    if (bridge_db_checkpoint_put(&vm->br->db, &m->ck) < 0) {
        vm->ops->cont(vm->backend, on_cont_after_failed_suspend, m);
        op_fail(m, "cannot journal the checkpoint");
        return;
    }
    vms_info(vmname(vm), NULL, "lifecycle: checkpoint %s written (%lld bytes, %.0f ms), %s",
             m->ck.id, (long long)st.st_size, (lc_mono() - m->t_mark) * 1000,
             engine_runs(m) ? "the domain has ended" : "quitting QEMU");
    lc_crash_point("suspend-written");
    m->t_mark = lc_mono() - m->t_mark; /* checkpoint seconds, reported */
    if (engine_runs(m)) {              /* libvirt's save has ended the domain already */
        suspend_done(m);
        return;
    }
    m->phase = P_QUIT;
    m->quit_sent = lc_mono();
    m->deadline = m->quit_sent + QUIT_GRACE_S;
    vm->ops->kill(vm->backend, 0);
}

/* QEMU exited after a suspend's checkpoint: the VM is suspended. */
static void suspend_done(struct bridge_managed *m)
{
    struct bridge_db *db = &m->vm->br->db;
    json_object *o = json_object_new_object();

    if (m->ck.ram_file[0]) {
        int fd = open(m->ck.ram_file, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            fdatasync(fd); /* a RAM file on a disk tier: its pages reach the disk */
            close(fd);
        }
        lc_ram_fingerprint(m->ck.ram_file, m->ck.fp, sizeof(m->ck.fp));
        m->ram_lock_fd = lc_ofd_lock(m->ck.ram_file, 0, 0);
        if (m->ram_lock_fd < 0)
            vms_warn(vmname(m->vm), NULL, "lifecycle: cannot lock %s: %s", m->ck.ram_file,
                     strerror(errno));
    }
    m->row.pid = m->row.pid_start = 0;
    if (bridge_db_begin(db) < 0 || bridge_db_checkpoint_put(db, &m->ck) < 0 ||
        journal_row(m, "suspended") < 0 || bridge_db_commit(db) < 0) {
        bridge_db_rollback(db);
        op_fail(m, "cannot journal the suspended state");
        return;
    }
    vms_info(vmname(m->vm), NULL, "lifecycle: suspended to %s in tier %s (%s, %.0f ms in all)",
             m->ck.id, m->ck.tier, m->ck.zero_copy ? "zero-copy" : "copy",
             (lc_mono() - m->t0) * 1000);
    json_object_object_add(o, "checkpoint", json_object_new_string(m->ck.id));
    json_object_object_add(o, "tier", json_object_new_string(m->ck.tier));
    json_object_object_add(o, "zero_copy", json_object_new_boolean(m->ck.zero_copy));
    json_object_object_add(o, "checkpoint_ms", json_object_new_double(m->t_mark * 1000));
    json_object_object_add(o, "total_ms", json_object_new_double((lc_mono() - m->t0) * 1000));
    op_end(m, 1, o);
}

/* ---- resume ---- */

static void on_checkpoint_loaded(void *opaque, const struct bridge_backend_result *r);

/* libvirt: a new QEMU loads the checkpoint, paused; cont once the ports are back. */
static void engine_restore(struct bridge_managed *m)
{
    struct bridge_vm *vm = m->vm;

    m->phase = P_LOADING;
    m->t_mark = lc_mono();
    bridge_vm_ports_retry_now(vm);
    if (!vm->backend ||
        vm->ops->vm_restore_file(vm->backend, m->ck.state_file, on_checkpoint_loaded, m) < 0) {
        snprintf(m->ck.phase, sizeof(m->ck.phase), "valid");
        bridge_db_checkpoint_put(&vm->br->db, &m->ck);
        journal_row(m, "suspended");
        op_fail(m, "not connected to libvirt");
    }
}

static void resume_go(struct bridge_managed *m)
{
    struct bridge_vm *vm = m->vm;
    struct bridge_db *db = &vm->br->db;
    char fp[96];

    if (bridge_db_checkpoint_current(db, vmname(vm), &m->ck) != 1 || strcmp(m->ck.phase, "valid")) {
        op_fail(m, "no valid checkpoint to resume from");
        return;
    }
    if (m->move.running) {
        m->phase = P_WAIT_MOVE;
        m->deadline = lc_mono() + 1;
        return;
    }
    if (m->ck.ram_file[0]) {
        if (lc_ram_fingerprint(m->ck.ram_file, fp, sizeof(fp)) < 0 || strcmp(fp, m->ck.fp)) {
            op_fail(m,
                    "checkpoint %s is one-shot and its RAM file %s changed since the suspend "
                    "(or is gone): refusing to resume from it; `vmstate-admin stop %s` discards it",
                    m->ck.id, m->ck.ram_file, vmname(vm));
            return;
        }
        if (m->ram_lock_fd < 0)
            m->ram_lock_fd = lc_ofd_lock(m->ck.ram_file, 0, 0);
        if (m->ram_lock_fd < 0) {
            op_fail(m, "RAM file %s is locked by another process", m->ck.ram_file);
            return;
        }
    }
    if (engine_runs(m) ? access(m->ck.state_file, R_OK) < 0
                       : (m->state_fd = open(m->ck.state_file, O_RDONLY | O_CLOEXEC)) < 0) {
        op_fail(m, "checkpoint file %s: %s", m->ck.state_file, strerror(errno));
        return;
    }
    /* one-shot: from here on, this checkpoint is never handed to a second QEMU */
    snprintf(m->ck.phase, sizeof(m->ck.phase), "loading");
    m->ck.last_used = (int64_t)time(NULL);
    snprintf(m->row.ram_file, sizeof(m->row.ram_file), "%s", m->ck.ram_file);
    if (bridge_db_checkpoint_put(db, &m->ck) < 0 || journal_row(m, "resuming") < 0) {
        op_fail(m, "cannot journal the resume");
        return;
    }
    if (engine_runs(m)) {
        engine_restore(m);
        return;
    }
    launch(m, 1);
}

static void load_when_ready(struct bridge_managed *m)
{
    struct bridge_vm *vm = m->vm;

    m->phase = P_LOADING;
    m->t_mark = lc_mono();
    if (vm->ops->load_checkpoint(vm->backend, m->state_fd, m->ck.zero_copy, on_checkpoint_loaded,
                                 m) < 0)
        op_fail(m, "the hypervisor cannot load the checkpoint");
}

static void on_resumed_cont(void *opaque, const struct bridge_backend_result *r);

/* The checkpoint is consumed before the guest runs a single instruction: a crash after this
 * point never resumes the same checkpoint again. 0, or -1 (the op has failed). */
static int resume_consume(struct bridge_managed *m)
{
    struct bridge_db *db = &m->vm->br->db;

    snprintf(m->ck.phase, sizeof(m->ck.phase), "consumed");
    if (bridge_db_begin(db) < 0 || bridge_db_checkpoint_put(db, &m->ck) < 0 ||
        bridge_db_garbage_add(db, m->ck.state_file) < 0 || journal_row(m, "running") < 0 ||
        bridge_db_commit(db) < 0) {
        bridge_db_rollback(db);
        op_fail(m, "cannot journal the resume");
        return -1;
    }
    return 0;
}

/* A group's resume: loaded, journaled, paused; the group's timer sends cont. */
static void resume_hold(struct bridge_managed *m)
{
    json_object *o;

    if (resume_consume(m) < 0)
        return;
    m->hold_cont = 0;
    o = json_object_new_object();
    json_object_object_add(o, "held", json_object_new_boolean(1));
    json_object_object_add(o, "checkpoint", json_object_new_string(m->ck.id));
    json_object_object_add(o, "load_ms", json_object_new_double((lc_mono() - m->t0) * 1000));
    vms_info(vmname(m->vm), NULL, "lifecycle: checkpoint %s loaded, paused for its group",
             m->ck.id);
    op_end(m, 1, o);
}

static void resume_cont(struct bridge_managed *m)
{
    struct bridge_vm *vm = m->vm;

    if (m->hold_cont) {
        resume_hold(m);
        return;
    }
    if (resume_consume(m) < 0)
        return;
    m->phase = P_CONT;
    m->t_mark = lc_mono();
    if (vm->ops->cont(vm->backend, on_resumed_cont, m) < 0)
        op_fail(m, "cont failed: QMP not ready");
}

static void on_checkpoint_loaded(void *opaque, const struct bridge_backend_result *r)
{
    struct bridge_managed *m = opaque;

    m->state_fd = -1; /* the backend closed its copy; ours was passed */
    if (r->status != VMS_STATUS_OK) {
        /* QEMU never ran the guest: the checkpoint is still good */
        snprintf(m->ck.phase, sizeof(m->ck.phase), "valid");
        bridge_db_checkpoint_put(&m->vm->br->db, &m->ck);
        if (engine_runs(m)) /* libvirt leaves no domain running after a failed restore */
            journal_row(m, "suspended");
        else
            m->vm->ops->kill(m->vm->backend, 1);
        op_fail(m, "loading checkpoint %s failed: %s", m->ck.id, r->message);
        return;
    }
    vms_info(vmname(m->vm), NULL, "lifecycle: checkpoint %s loaded in %.0f ms", m->ck.id,
             (lc_mono() - m->t_mark) * 1000);
    lc_crash_point("resume-loaded");
    m->phase = P_PORTS;
    m->deadline = lc_mono() + PORTS_WAIT_S;
}

static void on_resumed_cont(void *opaque, const struct bridge_backend_result *r)
{
    struct bridge_managed *m = opaque;
    struct vms_msg n;
    json_object *o;

    if (r->status != VMS_STATUS_OK) {
        op_fail(m, "cont: %s", r->message);
        return;
    }
    bridge_db_garbage_collect(&m->vm->br->db);
    /* apps hear of it (the clock fix-up follows QEMU's RESUME event) */
    vms_msg_init(&n, VMS_MSG_NOTICE);
    vms_msg_set_str(&n, VMS_F_REASON, "resumed");
    vms_msg_set_str(&n, VMS_F_MESSAGE, "the VM was suspended by the host and has resumed");
    bridge_vm_send(m->vm, &n);
    vms_msg_clear(&n);
    vms_info(vmname(m->vm), NULL, "lifecycle: resumed from %s (%.0f ms in all)", m->ck.id,
             (lc_mono() - m->t0) * 1000);
    o = json_object_new_object();
    json_object_object_add(o, "checkpoint", json_object_new_string(m->ck.id));
    json_object_object_add(o, "tier", json_object_new_string(m->ck.tier));
    json_object_object_add(o, "zero_copy", json_object_new_boolean(m->ck.zero_copy));
    json_object_object_add(o, "total_ms", json_object_new_double((lc_mono() - m->t0) * 1000));
    json_object_object_add(o, "resume_event_us", json_object_new_int64(r->event_us));
    op_end(m, 1, o);
}

/* ---- groups (host-bridge/groups/) ---- */

static const char *op_name(enum bridge_lc_op op);
static void op_begin(struct bridge_managed *m, enum bridge_lc_op op, bridge_lc_done_fn done,
                     void *opaque);

int bridge_managed_group_check(struct bridge_vm *vm, enum bridge_lc_op op, char *why, size_t whylen)
{
    struct bridge_managed *m = vm->mgd;
    const char *want = op == BRIDGE_LC_SUSPEND ? "running" : "suspended";

    if (!m) {
        snprintf(why, whylen, "%s is not a managed VM", vmname(vm));
        return -1;
    }
    if (m->op != BRIDGE_LC_NONE || m->queued != BRIDGE_LC_NONE || m->move.running) {
        snprintf(why, whylen, "%s is busy: %s in progress", vmname(vm),
                 m->move.running ? "a tier move" : op_name(m->op ? m->op : m->queued));
        return -1;
    }
    if (op == BRIDGE_LC_SUSPEND && vm->busy) {
        snprintf(why, whylen, "%s is busy: a guest request (%s) is running", vmname(vm),
                 vm->running);
        return -1;
    }
    if (strcmp(m->row.run_state, want)) {
        snprintf(why, whylen, "%s is %s, not %s", vmname(vm), m->row.run_state, want);
        return -1;
    }
    if (op == BRIDGE_LC_SUSPEND) {
        const struct bridge_tier_config *t = lc_tier_of(vm, m->row.res_tier);
        struct statvfs sv;
        uint64_t need = m->row.ram_file[0] ? vm->br->cfg->state_margin : lc_need_bytes(vm);
        if (!vm->backend || !vm->ops->is_ready(vm->backend) || !vm->ops->stop) {
            snprintf(why, whylen, "%s: %s", vmname(vm),
                     !vm->ops->stop ? "its backend cannot stop the VM at a time"
                                    : "QMP is not connected");
            return -1;
        }
        if (!t || statvfs(t->path, &sv) < 0 || (uint64_t)sv.f_bavail * sv.f_frsize < need) {
            snprintf(why, whylen,
                     "%s: tier %s cannot hold the checkpoint: %llu bytes free on its file "
                     "system, %llu needed",
                     vmname(vm), t ? t->name : "(none)",
                     t ? (unsigned long long)sv.f_bavail * sv.f_frsize : 0ull,
                     (unsigned long long)need);
            return -1;
        }
    }
    return 0;
}

void bridge_managed_group_suspend(struct bridge_vm *vm, bridge_lc_done_fn done, void *opaque)
{
    struct bridge_managed *m = vm->mgd;
    char why[256];

    if (bridge_managed_group_check(vm, BRIDGE_LC_SUSPEND, why, sizeof(why)) < 0) {
        lc_refuse(done, opaque, vm, "%s", why);
        return;
    }
    /* the VM is stopped already (the group's timer): its apps were prepared at commit
     * (bridge_managed_group_prepare), and the group's time comes before the host's pace */
    m->op = BRIDGE_LC_SUSPEND;
    m->done = done;
    m->opaque = opaque;
    m->t0 = lc_mono();
    m->deadline = 0;
    checkpoint_go(m);
}

int bridge_managed_group_prepare(struct bridge_vm *vm)
{
    return send_prepare(vm);
}

void bridge_managed_group_cancelled(struct bridge_vm *vm)
{
    struct vms_msg n;

    vms_msg_init(&n, VMS_MSG_NOTICE);
    vms_msg_set_str(&n, VMS_F_REASON, "save-cancelled");
    vms_msg_set_str(&n, VMS_F_MESSAGE,
                    "the group suspend announced by PrepareSave was aborted: the VM runs on");
    bridge_vm_send(vm, &n);
    vms_msg_clear(&n);
}

void bridge_managed_group_resume(struct bridge_vm *vm, int preserve_clock, bridge_lc_done_fn done,
                                 void *opaque)
{
    struct bridge_managed *m = vm->mgd;
    char why[256];

    if (bridge_managed_group_check(vm, BRIDGE_LC_RESUME, why, sizeof(why)) < 0) {
        lc_refuse(done, opaque, vm, "%s", why);
        return;
    }
    vm->clock_preserve = preserve_clock;
    m->hold_cont = 1;
    op_begin(m, BRIDGE_LC_RESUME, done, opaque);
}

int bridge_managed_group_cont(struct bridge_vm *vm, bridge_lc_done_fn done, void *opaque,
                              int primed)
{
    struct bridge_managed *m = vm->mgd;
    int rc;

    if (!m || m->op != BRIDGE_LC_NONE || strcmp(m->row.run_state, "running") || !vm->backend ||
        (primed && !vm->ops->prime_run_state))
        return -1;
    m->op = BRIDGE_LC_RESUME;
    m->phase = P_CONT;
    m->done = done;
    m->opaque = opaque;
    m->t_mark = lc_mono();
    rc = primed ? vm->ops->prime_run_state(vm->backend, 0, on_resumed_cont, m)
                : vm->ops->cont(vm->backend, on_resumed_cont, m);
    if (rc < 0) {
        m->op = BRIDGE_LC_NONE;
        m->phase = P_IDLE;
        m->done = NULL;
        m->opaque = NULL;
        return -1;
    }
    return 0;
}

/* ---- stop ---- */

static void on_powerdown_sent(void *opaque, const struct bridge_backend_result *r)
{
    struct bridge_managed *m = opaque;
    if (r->status != VMS_STATUS_OK && m->phase == P_POWERDOWN)
        m->deadline = 0; /* quit at the next tick */
}

/* A suspended VM's checkpoint is discarded: the VM is off. */
static void discard_checkpoint(struct bridge_managed *m)
{
    struct bridge_db *db = &m->vm->br->db;
    struct bridge_db_checkpoint ck;

    if (bridge_db_checkpoint_current(db, vmname(m->vm), &ck) == 1) {
        snprintf(ck.phase, sizeof(ck.phase), "discarded");
        bridge_db_checkpoint_put(db, &ck);
        bridge_db_garbage_add(db, ck.state_file);
    }
}

/* QEMU is gone after a stop (or unexpectedly): release everything. */
static void stopped(struct bridge_managed *m)
{
    struct bridge_db *db = &m->vm->br->db;

    if (m->ram_lock_fd >= 0) {
        close(m->ram_lock_fd);
        m->ram_lock_fd = -1;
    }
    bridge_db_garbage_add(db, m->row.ram_file);
    m->row.ram_file[0] = '\0';
    m->row.res_tier[0] = '\0';
    m->row.res_bytes = 0;
    m->row.pid = m->row.pid_start = 0;
    journal_row(m, "stopped");
    bridge_db_garbage_collect(db);
}

/* ---- process exit ---- */

/* The VM's QEMU has ended (its pidfd, or libvirt's report): what that means now. */
static void vm_exited(struct bridge_managed *m)
{
    if (m->op == BRIDGE_LC_SUSPEND && m->phase == P_QUIT) {
        suspend_done(m);
        return;
    }
    if (m->op == BRIDGE_LC_STOP) {
        json_object *o = json_object_new_object();
        stopped(m);
        vms_info(vmname(m->vm), NULL, "lifecycle: stopped (%.0f ms)", (lc_mono() - m->t0) * 1000);
        json_object_object_add(o, "total_ms", json_object_new_double((lc_mono() - m->t0) * 1000));
        op_end(m, 1, o);
        return;
    }
    if (m->op == BRIDGE_LC_RESUME && m->phase != P_CONT) {
        /* died before cont: the guest never ran from the checkpoint, which stays good */
        snprintf(m->ck.phase, sizeof(m->ck.phase), "valid");
        bridge_db_checkpoint_put(&m->vm->br->db, &m->ck);
        m->ram_lock_fd = m->ck.ram_file[0] ? lc_ofd_lock(m->ck.ram_file, 0, 0) : -1;
        m->row.pid = m->row.pid_start = 0;
        journal_row(m, "suspended");
        op_fail(m, "QEMU exited while resuming (see %s/qemu.log)", m->vm->cfg->run_dir);
        return;
    }
    vms_err(vmname(m->vm), NULL, "lifecycle: QEMU (pid %lld) exited unexpectedly",
            (long long)m->row.pid);
    stopped(m);
    if (m->op != BRIDGE_LC_NONE)
        op_fail(m, "QEMU exited (see %s/qemu.log)", m->vm->cfg->run_dir);
}

/* Without a pidfd: has the QEMU of pid m->row.pid (started at m->row.pid_start, when known)
 * ended? Our child: when waitpid reaps it (all its threads gone, so its fds and locks are
 * released; /proc shows the leader a zombie before that). Adopted: when the pid is gone or
 * is another process. */
static int polled_pid_gone(struct bridge_managed *m)
{
    pid_t pid = (pid_t)m->row.pid, r;
    long long start;
    int status;

    if (pid <= 0)
        return 1;
    r = waitpid(pid, &status, WNOHANG);
    if (r == pid)
        return 1;
    if (r == 0 || errno != ECHILD)
        return 0;
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return 1;
    start = lc_proc_start_time(pid, NULL); /* 0 for a zombie: its parent reaps it soon */
    return start && m->row.pid_start && start != m->row.pid_start;
}

/* 1 if the journaled pid is still the QEMU that started at m->row.pid_start (a reused pid
 * is another process). */
static int qemu_is_ours(const struct bridge_managed *m)
{
    return m->row.pid > 0 && m->row.pid_start &&
           lc_proc_start_time((pid_t)m->row.pid, NULL) == m->row.pid_start;
}

/* SIGKILL to the VM's QEMU: through its pidfd, or (polled) to its pid while it is still ours.
 * 1 if sent. */
static int kill_qemu(struct bridge_managed *m)
{
    if (m->pidfd >= 0)
        return syscall(SYS_pidfd_send_signal, m->pidfd, SIGKILL, NULL, 0) == 0;
    if (m->pid_polled && qemu_is_ours(m))
        return kill((pid_t)m->row.pid, SIGKILL) == 0;
    return 0;
}

static void on_pidfd(struct bridge_watch *w, uint32_t revents)
{
    struct bridge_managed *m = w->opaque;
    int status = 0;
    (void)revents;

    bridge_watch_del(&m->vm->br->loop, &m->pidw);
    close(m->pidfd);
    m->pidfd = -1;
    waitpid((pid_t)m->row.pid, &status, WNOHANG); /* ECHILD for an adopted QEMU: fine */
    vm_exited(m);
}

/*
 * libvirt says the domain ended (its STOPPED event, or a state poll). Reported twice at
 * times (event and poll), and also for the domain libvirt ends itself inside a save or
 * before a restore: those are the operation's own, its completion says how it went.
 */
static void engine_gone(struct bridge_managed *m)
{
    if (m->adopt_pending || (m->op == BRIDGE_LC_SUSPEND && m->phase == P_CHECKPOINT) ||
        (m->op == BRIDGE_LC_RESUME && m->phase == P_LOADING) ||
        (m->op == BRIDGE_LC_START && m->phase == P_WAIT_READY) ||
        (m->op == BRIDGE_LC_NONE && strcmp(m->row.run_state, "running")))
        return;
    vm_exited(m);
}

void bridge_managed_backend_event(struct bridge_vm *vm, const char *name)
{
    struct bridge_managed *m = vm->mgd;

    if (m && engine_runs(m) && !strcmp(name, "GONE"))
        engine_gone(m);
}

/* ---- requests and the host-wide queue ---- */

static void op_begin(struct bridge_managed *m, enum bridge_lc_op op, bridge_lc_done_fn done,
                     void *opaque)
{
    m->op = op;
    m->done = done;
    m->opaque = opaque;
    m->t0 = lc_mono();
    m->deadline = 0;
    switch (op) {
    case BRIDGE_LC_START:
        start_go(m);
        break;
    case BRIDGE_LC_SUSPEND:
        suspend_go(m);
        break;
    case BRIDGE_LC_RESUME:
        resume_go(m);
        break;
    case BRIDGE_LC_STOP:
        if (!strcmp(m->row.run_state, "suspended")) {
            json_object *o = json_object_new_object();
            discard_checkpoint(m);
            stopped(m);
            json_object_object_add(o, "discarded", json_object_new_boolean(1));
            op_end(m, 1, o);
            break;
        }
        m->phase = P_POWERDOWN;
        m->deadline = lc_mono() + m->vm->cfg->stop_timeout;
        if (!m->vm->backend || m->vm->ops->powerdown(m->vm->backend, on_powerdown_sent, m) < 0)
            m->deadline = 0;
        journal_row(m, "stopping");
        break;
    default:
        op_end(m, 0, NULL);
    }
}

static const char *op_name(enum bridge_lc_op op)
{
    static const char *const names[] = {"none", "start", "stop", "suspend", "resume"};
    return names[op];
}

void bridge_managed_request(struct bridge_vm *vm, enum bridge_lc_op op, bridge_lc_done_fn done,
                            void *opaque)
{
    struct bridge_managed *m = vm->mgd;
    const char *st;

    if (!m) {
        lc_refuse(done, opaque, vm, "%s is not a managed VM (managed = yes in its section)",
                  vmname(vm));
        return;
    }
    st = m->row.run_state;
    if (m->op != BRIDGE_LC_NONE || m->queued != BRIDGE_LC_NONE) {
        lc_refuse(done, opaque, vm, "busy: %s in progress",
                  op_name(m->op != BRIDGE_LC_NONE ? m->op : m->queued));
        return;
    }
    if (m->adopt_pending) {
        /* libvirt has not said yet what runs: judged again once it has (on_engine_state) */
        m->queued = op;
        m->queued_at = lc_mono();
        m->queued_done = done;
        m->queued_opaque = opaque;
        return;
    }
    if ((op == BRIDGE_LC_START && strcmp(st, "stopped")) ||
        (op == BRIDGE_LC_SUSPEND && strcmp(st, "running")) ||
        (op == BRIDGE_LC_RESUME && strcmp(st, "suspended")) ||
        (op == BRIDGE_LC_STOP && !strcmp(st, "stopped"))) {
        if (op == BRIDGE_LC_RESUME && !strcmp(st, "running")) {
            lc_refuse(done, opaque, vm,
                      "%s is running: its last checkpoint was consumed by the resume that started "
                      "it (checkpoints are one-shot)",
                      vmname(vm));
            return;
        }
        lc_refuse(done, opaque, vm, "cannot %s: the VM is %s", op_name(op), st);
        return;
    }
    if (op == BRIDGE_LC_SUSPEND && (!vm->backend || !vm->ops->is_ready(vm->backend))) {
        lc_refuse(done, opaque, vm, "cannot suspend: QMP is not connected");
        return;
    }
    if (op == BRIDGE_LC_START || op == BRIDGE_LC_RESUME)
        vm->clock_preserve = 0; /* the host's time again */
    if (op == BRIDGE_LC_SUSPEND || op == BRIDGE_LC_RESUME) {
        m->queued = op;
        m->queued_at = lc_mono();
        m->queued_done = done;
        m->queued_opaque = opaque;
        return; /* bridge_managed_tick starts it when the host's pace allows */
    }
    op_begin(m, op, done, opaque);
}

void bridge_managed_start_ha(struct bridge_vm *vm, int lease_fd, const char *loadvm,
                             bridge_lc_done_fn done, void *opaque)
{
    struct bridge_managed *m = vm->mgd;

    if (m && m->op == BRIDGE_LC_NONE && m->queued == BRIDGE_LC_NONE &&
        !strcmp(m->row.run_state, "stopped")) {
        m->lease_fd = lease_fd;
        snprintf(m->loadvm, sizeof(m->loadvm), "%s", loadvm ? loadvm : "");
    }
    bridge_managed_request(vm, BRIDGE_LC_START, done, opaque);
}

int bridge_managed_fence(struct bridge_vm *vm)
{
    struct bridge_managed *m = vm->mgd;

    if (m && engine_runs(m) && m->vm->backend) {
        vms_warn(vmname(vm), NULL, "lifecycle: fencing domain %s (virDomainDestroy)",
                 vm->cfg->domain);
        return vm->ops->kill(vm->backend, 1) == 0;
    }
    if (!m || (m->pidfd < 0 && !m->pid_polled))
        return 0;
    vms_warn(vmname(vm), NULL, "lifecycle: fencing QEMU pid %lld (SIGKILL)", (long long)m->row.pid);
    return kill_qemu(m);
}

void bridge_managed_forget(struct bridge *br, void *opaque)
{
    for (size_t i = 0; i < br->n_vms; i++) {
        struct bridge_managed *m = br->vms[i].mgd;
        if (!m)
            continue;
        if (m->opaque == opaque)
            m->done = NULL;
        if (m->queued_opaque == opaque)
            m->queued_done = NULL;
        if (m->move.opaque == opaque)
            m->move.done = NULL;
    }
}

/* Start the next queued suspend or resume (resumes first, then the oldest). */
static void queue_run(struct bridge *br, double now)
{
    struct bridge_managed *pick = NULL;
    unsigned per_min = br->cfg->lifecycle_per_minute;

    if (per_min && now < br->lc_next_start)
        return;
    for (size_t i = 0; i < br->n_vms; i++) {
        struct bridge_managed *m = br->vms[i].mgd;
        if (!m || m->queued == BRIDGE_LC_NONE || m->op != BRIDGE_LC_NONE || m->adopt_pending)
            continue;
        if (!pick || (m->queued == BRIDGE_LC_RESUME && pick->queued != BRIDGE_LC_RESUME) ||
            (m->queued == pick->queued && m->queued_at < pick->queued_at))
            pick = m;
    }
    if (!pick)
        return;
    if (per_min)
        br->lc_next_start = now + 60.0 / per_min;
    {
        enum bridge_lc_op op = pick->queued;
        bridge_lc_done_fn done = pick->queued_done;
        void *opaque = pick->queued_opaque;
        pick->queued = BRIDGE_LC_NONE;
        pick->queued_done = NULL;
        pick->queued_opaque = NULL;
        vms_info(vmname(pick->vm), NULL, "lifecycle: %s starts (waited %.0f ms in the queue)",
                 op_name(op), (now - pick->queued_at) * 1000);
        op_begin(pick, op, done, opaque);
    }
    if (!per_min)
        queue_run(br, now); /* no pace: everything queued starts now */
}

/* ---- idle auto-suspend ---- */

static void on_console_state(void *opaque, const struct bridge_backend_result *r)
{
    struct bridge_managed *m = opaque;
    if (r->status == VMS_STATUS_OK)
        m->console_client = r->connected;
}

static void idle_tick(struct bridge_managed *m, double now)
{
    struct bridge_vm *vm = m->vm;
    unsigned long long ticks = 0;
    int idle;

    if (!vm->cfg->idle_suspend_s || strcmp(m->row.run_state, "running") || m->op || m->queued ||
        now < m->next_sample)
        return;
    m->next_sample = now + IDLE_SAMPLE_S;
    if (m->console_fd >= 0) {
        if (vm->backend && vm->ops->is_ready(vm->backend))
            vm->ops->query_chardev(vm->backend, "vms-console", on_console_state, m);
        idle = !m->console_client;
    } else {
        long hz = sysconf(_SC_CLK_TCK);
        lc_proc_start_time((pid_t)m->row.pid, &ticks);
        idle = m->cpu_ticks && ticks >= m->cpu_ticks &&
               (double)(ticks - m->cpu_ticks) / (double)hz * 100.0 / IDLE_SAMPLE_S <
                   vm->cfg->idle_cpu_percent;
        m->cpu_ticks = ticks;
    }
    if (!idle) {
        m->idle_since = 0;
        return;
    }
    if (!m->idle_since)
        m->idle_since = now;
    if (now - m->idle_since >= vm->cfg->idle_suspend_s) {
        vms_info(vmname(vm), NULL, "lifecycle: idle for %.0f s: suspending", now - m->idle_since);
        m->idle_since = 0;
        bridge_managed_request(vm, BRIDGE_LC_SUSPEND, NULL, NULL);
    }
}

/* A client knocks on a suspended VM's console: resume it (QEMU accepts the connection). */
static void on_console(struct bridge_watch *w, uint32_t revents)
{
    struct bridge_managed *m = w->opaque;
    (void)revents;
    if (!strcmp(m->row.run_state, "suspended") && !m->op && !m->queued) {
        vms_info(vmname(m->vm), NULL, "lifecycle: a client connected to the console: resuming");
        bridge_managed_request(m->vm, BRIDGE_LC_RESUME, NULL, NULL);
    }
}

static void console_watch(struct bridge_managed *m)
{
    int want = !strcmp(m->row.run_state, "suspended") && !m->op;
    if (m->console_fd < 0)
        return;
    if (want && m->conw.fd < 0)
        bridge_watch_add(&m->vm->br->loop, &m->conw, m->console_fd, EPOLLIN);
    else if (!want && m->conw.fd >= 0)
        bridge_watch_del(&m->vm->br->loop, &m->conw);
}

/*
 * The console socket, listened on by the bridge and handed to every QEMU of the VM. QEMU
 * unlinks the path it finds with getsockname() when it exits, so the socket is bound under
 * a private name and clients use a hard link to it (console.sock), which outlives QEMUs.
 */
static int console_open(struct bridge_managed *m)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char public_path[sizeof(sa.sun_path)];
    int fd;

    snprintf(sa.sun_path, sizeof(sa.sun_path), "%.80s/.console-listen.sock", m->vm->cfg->run_dir);
    snprintf(public_path, sizeof(public_path), "%.80s/console.sock", m->vm->cfg->run_dir);
    if (mkdir(m->vm->cfg->run_dir, 0700) < 0 && errno != EEXIST)
        return -1;
    unlink(sa.sun_path);
    unlink(public_path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0 ||
        link(sa.sun_path, public_path) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    m->console_fd = fd;
    return 0;
}

/* ---- libvirt: the domain's state ---- */

static void engine_adopt(struct bridge_managed *m, const char *status);

static void on_engine_state(void *opaque, const struct bridge_backend_result *r)
{
    struct bridge_managed *m = opaque;

    m->state_asked = 0;
    if (r->status != VMS_STATUS_OK) {
        vms_warn(vmname(m->vm), NULL, "lifecycle: libvirt's domain state: %s", r->message);
        return;
    }
    if (m->adopt_pending) {
        enum bridge_lc_op op = m->queued;
        bridge_lc_done_fn done = m->queued_done;
        void *done_opaque = m->queued_opaque;
        m->adopt_pending = 0;
        m->queued = BRIDGE_LC_NONE;
        m->queued_done = NULL;
        m->queued_opaque = NULL;
        engine_adopt(m, r->run_status);
        if (m->adopt_pending) { /* still saving: the request waits on */
            m->queued = op;
            m->queued_done = done;
            m->queued_opaque = done_opaque;
        } else if (op != BRIDGE_LC_NONE) { /* asked for meanwhile: judged against the state */
            bridge_managed_request(m->vm, op, done, done_opaque);
        }
    } else if (!strcmp(r->run_status, "shutdown")) {
        engine_gone(m);
    }
}

/*
 * Ask libvirt for the domain's state: once connected after a bridge start (re-adoption),
 * and every second while a stop waits for the domain to end, in case its event was lost
 * with a libvirtd connection.
 */
static void engine_state_tick(struct bridge_managed *m, double now)
{
    struct bridge_vm *vm = m->vm;
    int stopping = m->op == BRIDGE_LC_STOP && (m->phase == P_POWERDOWN || m->phase == P_QUIT);

    if (m->state_asked || !(m->adopt_pending || stopping) || now < m->next_state_poll ||
        !vm->backend || !vm->ops->is_ready(vm->backend))
        return;
    m->next_state_poll = now + 1.0;
    if (vm->ops->query_status(vm->backend, on_engine_state, m) == 0)
        m->state_asked = 1;
}

/* ---- per-loop tick ---- */

static void vm_tick(struct bridge_managed *m, double now)
{
    struct bridge_vm *vm = m->vm;

    if (m->pid_polled && polled_pid_gone(m)) {
        m->pid_polled = 0;
        vm_exited(m);
        return;
    }

    switch (m->phase) {
    case P_WAIT_READY:
        if (!engine_runs(m) && now >= m->deadline) {
            vm->ops->kill(vm->backend, 1);
            op_fail(m, "QEMU did not answer on QMP within %.0f s (see %s/qemu.log)", START_READY_S,
                    vm->cfg->run_dir);
        }
        break;
    case P_POWERDOWN:
        if (now >= m->deadline) {
            vms_warn(vmname(vm), NULL, "lifecycle: no shutdown after %u s: quit",
                     vm->cfg->stop_timeout);
            m->phase = P_QUIT;
            m->deadline = now + QUIT_GRACE_S;
            if (!vm->backend || vm->ops->kill(vm->backend, 0) < 0)
                m->deadline = 0;
        }
        break;
    case P_QUIT:
        if (now >= m->deadline && engine_runs(m)) {
            vms_warn(vmname(vm), NULL, "lifecycle: domain still there: virDomainDestroy");
            if (vm->backend)
                vm->ops->kill(vm->backend, 1);
            m->deadline = now + QUIT_GRACE_S; /* again, if libvirt was not reachable */
        } else if (now >= m->deadline && m->row.pid > 0) {
            vms_warn(vmname(vm), NULL, "lifecycle: QEMU still there: SIGKILL");
            kill_qemu(m);
            m->deadline = now + 3600;
        }
        break;
    case P_PORTS:
        if ((vm->a.ch.fd >= 0 && vm->b.ch.fd >= 0) || now >= m->deadline) {
            if (now >= m->deadline)
                vms_warn(vmname(vm), NULL,
                         "lifecycle: ports not connected after %.0f s: cont anyway", PORTS_WAIT_S);
            resume_cont(m);
        }
        break;
    case P_WAIT_IDLE:
        if (now >= m->deadline) {
            m->phase = P_IDLE;
            suspend_go(m);
        }
        break;
    case P_WAIT_MOVE:
        if (now >= m->deadline && !lc_moves_running(vm->br)) {
            m->phase = P_IDLE;
            if (m->op == BRIDGE_LC_START)
                start_go(m);
            else if (m->op == BRIDGE_LC_RESUME)
                resume_go(m);
        }
        break;
    default:
        break;
    }
    if (engine_runs(m))
        engine_state_tick(m, now);
    idle_tick(m, now);
    lc_schedule_tick(m, now);
    console_watch(m);
}

void bridge_managed_tick(struct bridge *br, double now)
{
    queue_run(br, now);
    for (size_t i = 0; i < br->n_vms; i++)
        if (br->vms[i].mgd)
            vm_tick(br->vms[i].mgd, now);
}

static void on_incoming_loaded(void *opaque, const struct bridge_backend_result *r);

void bridge_managed_backend_ready(struct bridge_vm *vm)
{
    struct bridge_managed *m = vm->mgd;

    if (!m)
        return;
    vm->ops->reconnect_policy(vm->backend, vm->br->cfg->reconnect_min_ms,
                              vm->br->cfg->reconnect_max_ms);
    /* libvirt: the connection is to libvirtd, not to a QEMU: nothing starts with it (the
     * re-adoption asks for the domain's state from vm_tick) */
    if (engine_runs(m))
        return;
    if (m->cont_on_ready) {
        m->cont_on_ready = 0;
        vms_warn(vmname(vm), NULL,
                 "lifecycle: the last bridge stopped mid-suspend: resuming "
                 "the VM in place");
        vm->ops->cont(vm->backend, on_cont_after_failed_suspend, m);
    }
    if (m->quit_on_ready) {
        m->quit_on_ready = 0;
        vm->ops->kill(vm->backend, 0);
    }
    if (m->phase != P_WAIT_READY)
        return;
    if (m->op == BRIDGE_LC_RESUME) {
        load_when_ready(m);
    } else if (m->op == BRIDGE_LC_START && m->incoming[0]) {
        m->phase = P_LOADING;
        m->t_mark = lc_mono();
        if (vm->ops->load_checkpoint(vm->backend, m->state_fd, 0, on_incoming_loaded, m) < 0) {
            vm->ops->kill(vm->backend, 1);
            op_fail(m, "the hypervisor cannot load the migration stream");
        } else {
            close(m->state_fd); /* the backend keeps its own copy */
            m->state_fd = -1;
        }
    } else if (m->op == BRIDGE_LC_START) {
        start_done(m);
    }
}

/* ---- HA start from another host's migration stream ---- */

static void on_incoming_cont(void *opaque, const struct bridge_backend_result *r)
{
    struct bridge_managed *m = opaque;
    json_object *o;

    if (r->status != VMS_STATUS_OK) {
        m->vm->ops->kill(m->vm->backend, 1);
        op_fail(m, "cont after the migration: %s", r->message);
        return;
    }
    if (unlink(m->incoming) < 0)
        vms_warn(vmname(m->vm), NULL, "lifecycle: cannot remove %s: %s", m->incoming,
                 strerror(errno));
    journal_row(m, "running");
    vms_info(vmname(m->vm), NULL, "lifecycle: running from the migration stream (%.0f ms in all)",
             (lc_mono() - m->t0) * 1000);
    o = json_object_new_object();
    json_object_object_add(o, "pid", json_object_new_int64(m->row.pid));
    json_object_object_add(o, "migrated", json_object_new_boolean(1));
    json_object_object_add(o, "load_ms", json_object_new_double(m->t_mark * 1000));
    json_object_object_add(o, "total_ms", json_object_new_double((lc_mono() - m->t0) * 1000));
    op_end(m, 1, o);
}

static void on_incoming_loaded(void *opaque, const struct bridge_backend_result *r)
{
    struct bridge_managed *m = opaque;

    if (r->status != VMS_STATUS_OK) {
        m->vm->ops->kill(m->vm->backend, 1);
        op_fail(m, "loading the migration stream %s failed: %s", m->incoming, r->message);
        return;
    }
    m->t_mark = lc_mono() - m->t_mark; /* load time, reported */
    vms_info(vmname(m->vm), NULL, "lifecycle: migration stream loaded in %.0f ms",
             m->t_mark * 1000);
    m->phase = P_CONT;
    if (m->vm->ops->cont(m->vm->backend, on_incoming_cont, m) < 0) {
        m->vm->ops->kill(m->vm->backend, 1);
        op_fail(m, "cont failed: QMP not ready");
    }
}

void bridge_managed_start_ha_incoming(struct bridge_vm *vm, int lease_fd, const char *state_file,
                                      bridge_lc_done_fn done, void *opaque)
{
    struct bridge_managed *m = vm->mgd;

    if (m && m->op == BRIDGE_LC_NONE && m->queued == BRIDGE_LC_NONE &&
        !strcmp(m->row.run_state, "stopped")) {
        m->lease_fd = lease_fd;
        snprintf(m->incoming, sizeof(m->incoming), "%s", state_file);
    }
    bridge_managed_request(vm, BRIDGE_LC_START, done, opaque);
}

int bridge_managed_is_down(const struct bridge_vm *vm)
{
    return vm->mgd && (!strcmp(vm->mgd->row.run_state, "stopped") ||
                       !strcmp(vm->mgd->row.run_state, "suspended"));
}

/* ---- setup, adoption ---- */

int bridge_managed_init(struct bridge_vm *vm)
{
    struct bridge_managed *m;

    if (!vm->cfg->managed)
        return 0;
    m = calloc(1, sizeof(*m));
    if (!m)
        return -1;
    m->vm = vm;
    m->pidfd = m->ram_lock_fd = m->console_fd = m->state_fd = m->move.efd = m->lease_fd = -1;
    bridge_watch_init(&m->pidw, on_pidfd, m);
    bridge_watch_init(&m->conw, on_console, m);
    vm->mgd = m;
    return 0;
}

void bridge_managed_free(struct bridge_vm *vm)
{
    struct bridge_managed *m = vm->mgd;

    if (!m)
        return;
    if (m->move.running) {
        pthread_join(m->move.thread, NULL);
        bridge_watch_del(&vm->br->loop, &m->move.w);
        close(m->move.efd);
    }
    if (m->pidfd >= 0) {
        bridge_watch_del(&vm->br->loop, &m->pidw);
        close(m->pidfd);
    }
    if (m->conw.fd >= 0)
        bridge_watch_del(&vm->br->loop, &m->conw);
    if (m->console_fd >= 0)
        close(m->console_fd);
    if (m->ram_lock_fd >= 0)
        close(m->ram_lock_fd);
    if (m->state_fd >= 0)
        close(m->state_fd);
    lc_reply(m->done, m->opaque, 0, NULL);
    lc_reply(m->queued_done, m->queued_opaque, 0, NULL);
    free(m);
    vm->mgd = NULL;
}

int bridge_managed_start(struct bridge_vm *vm)
{
    struct bridge_managed *m = vm->mgd;
    struct bridge_db *db;
    struct bridge_db_checkpoint ck;
    const char *st;
    int alive, have_ck;

    if (!m)
        return 0;
    db = &vm->br->db;
    if (bridge_db_managed_get(db, vmname(vm), &m->row) < 0)
        return -1;
    if (vm->cfg->console && console_open(m) < 0)
        vms_warn(vmname(vm), NULL, "lifecycle: console socket in %s: %s", vm->cfg->run_dir,
                 strerror(errno));
    lc_move_rollback_at_start(m);
    bridge_db_garbage_collect(db);
    st = m->row.run_state;
    if (engine_runs(m)) {
        /* libvirt: the journal and the domain's state decide, once libvirt answers */
        m->adopt_pending = 1;
        return 0;
    }
    alive = qemu_is_ours(m);
    have_ck = bridge_db_checkpoint_current(db, vmname(vm), &ck) == 1;
    if (alive) {
        watch_pid(m, (pid_t)m->row.pid);
        vms_info(vmname(vm), NULL, "lifecycle: re-adopted QEMU pid %lld (%s)",
                 (long long)m->row.pid, st);
        if (!strcmp(st, "suspending") && have_ck && !strcmp(ck.phase, "writing")) {
            /* the checkpoint may be incomplete: the VM goes on running where it is */
            unlink(ck.state_file);
            snprintf(ck.phase, sizeof(ck.phase), "discarded");
            bridge_db_checkpoint_put(db, &ck);
            m->cont_on_ready = 1;
            journal_row(m, "running");
        } else if (!strcmp(st, "suspending") && have_ck) {
            /* the checkpoint is on disk: finish the suspend */
            m->ck = ck;
            m->op = BRIDGE_LC_SUSPEND;
            m->phase = P_QUIT;
            m->t0 = lc_mono();
            m->deadline = lc_mono() + START_READY_S;
            m->quit_on_ready = 1;
        } else if (!strcmp(st, "resuming") && have_ck) {
            /* never cont'ed: the guest did not run; start over from the checkpoint */
            snprintf(ck.phase, sizeof(ck.phase), "valid");
            bridge_db_checkpoint_put(db, &ck);
            syscall(SYS_pidfd_send_signal, m->pidfd, SIGKILL, NULL, 0);
            m->op = BRIDGE_LC_RESUME;
            m->phase = P_QUIT;
            m->ck = ck;
            m->deadline = lc_mono() + 3600;
        } else if (!strcmp(st, "stopping")) {
            m->op = BRIDGE_LC_STOP;
            m->phase = P_POWERDOWN;
            m->t0 = lc_mono();
            m->deadline = lc_mono() + vm->cfg->stop_timeout;
        } else {
            journal_row(m, "running");
        }
        return 0;
    }
    if (!strcmp(st, "running") || !strcmp(st, "starting") || !strcmp(st, "stopping")) {
        if (strcmp(st, "stopping"))
            vms_err(vmname(vm), NULL, "lifecycle: QEMU (pid %lld) is gone since the last bridge",
                    (long long)m->row.pid);
        stopped(m);
    } else if ((!strcmp(st, "suspending") || !strcmp(st, "resuming") || !strcmp(st, "suspended")) &&
               have_ck && strcmp(ck.phase, "writing")) {
        if (strcmp(ck.phase, "valid")) {
            snprintf(ck.phase, sizeof(ck.phase), "valid");
            bridge_db_checkpoint_put(db, &ck);
        }
        if (!ck.fp[0] && ck.ram_file[0]) {
            lc_ram_fingerprint(ck.ram_file, ck.fp, sizeof(ck.fp));
            bridge_db_checkpoint_put(db, &ck);
        }
        if (ck.ram_file[0]) {
            m->ram_lock_fd = lc_ofd_lock(ck.ram_file, 0, 0);
            if (m->ram_lock_fd < 0)
                vms_warn(vmname(vm), NULL, "lifecycle: cannot lock %s: %s", ck.ram_file,
                         strerror(errno));
        }
        m->row.pid = m->row.pid_start = 0;
        journal_row(m, "suspended");
        vms_info(vmname(vm), NULL, "lifecycle: suspended in %s (checkpoint %s)", ck.tier, ck.id);
    } else if (strcmp(st, "stopped")) {
        vms_err(vmname(vm), NULL, "lifecycle: left %s with no usable checkpoint: stopped", st);
        if (have_ck) {
            unlink(ck.state_file);
            snprintf(ck.phase, sizeof(ck.phase), "discarded");
            bridge_db_checkpoint_put(db, &ck);
        }
        stopped(m);
    }
    if (vm->cfg->autostart && !strcmp(m->row.run_state, "stopped"))
        bridge_managed_request(vm, BRIDGE_LC_START, NULL, NULL);
    return 0;
}

/* libvirt: a checkpoint file libvirtd completed before the bridge went: durable, valid. */
static void adopt_saved_checkpoint(struct bridge_managed *m, struct bridge_db_checkpoint *ck)
{
    int fd = open(ck->state_file, O_RDONLY | O_CLOEXEC);

    if (fd >= 0) {
        fdatasync(fd);
        close(fd);
    }
    snprintf(ck->phase, sizeof(ck->phase), "valid");
    bridge_db_checkpoint_put(&m->vm->br->db, ck);
    m->row.pid = m->row.pid_start = 0;
    journal_row(m, "suspended");
    vms_info(vmname(m->vm), NULL, "lifecycle: suspended in %s (checkpoint %s)", ck->tier, ck->id);
}

enum lc_adopt lc_adopt_plan(const char *st, int have_ck, const char *status)
{
    int active = strcmp(status, "shutdown") != 0;
    int running = !strcmp(status, "running");

    if (!strcmp(st, "running") || !strcmp(st, "starting"))
        return active ? LC_ADOPT_RUNNING : LC_ADOPT_GONE;
    if (!strcmp(st, "stopping"))
        return active ? LC_ADOPT_FINISH_STOP : LC_ADOPT_GONE;
    if (!strcmp(st, "suspending")) {
        /* libvirtd finishes a save whose client went away and ends the domain only once
         * its file is whole; a failed save leaves the domain running */
        if (!strcmp(status, "finish-migrate"))
            return LC_ADOPT_SAVING;
        if (!active)
            return have_ck ? LC_ADOPT_SAVED : LC_ADOPT_LOST;
        return LC_ADOPT_NOT_SAVED;
    }
    if (!strcmp(st, "resuming") && have_ck && active)
        return running ? LC_ADOPT_RESUMED : LC_ADOPT_FINISH_RESUME;
    if ((!strcmp(st, "resuming") || !strcmp(st, "suspended")) && !active)
        return have_ck ? LC_ADOPT_SAVED : LC_ADOPT_LOST;
    if (active)
        return LC_ADOPT_FOREIGN;
    return strcmp(st, "stopped") ? LC_ADOPT_LOST : LC_ADOPT_KEEP;
}

/*
 * libvirt: re-adopt after a bridge start (lc_adopt_plan decides). A bridge restart never
 * stops a domain. @status: libvirt's state of the domain (backend.h run_status).
 */
static void engine_adopt(struct bridge_managed *m, const char *status)
{
    struct bridge_vm *vm = m->vm;
    struct bridge_db *db = &vm->br->db;
    struct bridge_db_checkpoint ck;
    const char *st = m->row.run_state;
    int have_ck = bridge_db_checkpoint_current(db, vmname(vm), &ck) == 1;
    enum lc_adopt plan = lc_adopt_plan(st, have_ck, status);

    vms_info(vmname(vm), NULL, "lifecycle: journal says %s, libvirt's domain %s is %s", st,
             vm->cfg->domain, strcmp(status, "shutdown") ? status : "shut off");
    switch (plan) {
    case LC_ADOPT_KEEP:
        break;
    case LC_ADOPT_RUNNING:
        journal_row(m, "running");
        break;
    case LC_ADOPT_GONE:
        if (strcmp(st, "stopping"))
            vms_err(vmname(vm), NULL, "lifecycle: the domain ended since the last bridge");
        stopped(m);
        break;
    case LC_ADOPT_FINISH_STOP:
        m->op = BRIDGE_LC_STOP;
        m->phase = P_POWERDOWN;
        m->t0 = lc_mono();
        m->deadline = lc_mono() + vm->cfg->stop_timeout;
        vm->ops->powerdown(vm->backend, on_powerdown_sent, m);
        break;
    case LC_ADOPT_SAVED:
        adopt_saved_checkpoint(m, &ck);
        break;
    case LC_ADOPT_SAVING:
        m->adopt_pending = 1; /* asked again in a second (engine_state_tick) */
        return;
    case LC_ADOPT_NOT_SAVED:
        if (have_ck) {
            unlink(ck.state_file);
            snprintf(ck.phase, sizeof(ck.phase), "discarded");
            bridge_db_checkpoint_put(db, &ck);
        }
        journal_row(m, "running");
        if (strcmp(status, "running"))
            vm->ops->cont(vm->backend, on_cont_after_failed_suspend, m);
        break;
    case LC_ADOPT_FINISH_RESUME: /* the guest has not run from the checkpoint yet */
        m->ck = ck;
        m->op = BRIDGE_LC_RESUME;
        m->t0 = lc_mono();
        m->phase = P_PORTS;
        m->deadline = lc_mono() + PORTS_WAIT_S;
        break;
    case LC_ADOPT_RESUMED:
        m->ck = ck;
        resume_consume(m);
        break;
    case LC_ADOPT_FOREIGN:
        /* started behind the bridge's back: its checkpoint (if any) cannot be resumed
         * beside it; no tier is reserved, so it cannot be suspended until stopped once */
        vms_warn(vmname(vm), NULL,
                 "lifecycle: the domain runs though the journal says %s: adopted as running", st);
        if (have_ck) {
            snprintf(ck.phase, sizeof(ck.phase), "discarded");
            bridge_db_checkpoint_put(db, &ck);
            bridge_db_garbage_add(db, ck.state_file);
        }
        journal_row(m, "running");
        break;
    case LC_ADOPT_LOST:
        vms_err(vmname(vm), NULL, "lifecycle: left %s with no usable checkpoint: stopped", st);
        if (have_ck) {
            snprintf(ck.phase, sizeof(ck.phase), "discarded");
            bridge_db_checkpoint_put(db, &ck);
            bridge_db_garbage_add(db, ck.state_file);
        }
        stopped(m);
        break;
    }
    if (vm->cfg->autostart && !strcmp(m->row.run_state, "stopped") && m->op == BRIDGE_LC_NONE)
        bridge_managed_request(vm, BRIDGE_LC_START, NULL, NULL);
}

/* ---- admin views ---- */

json_object *bridge_managed_status(struct bridge_vm *vm)
{
    struct bridge_managed *m = vm->mgd;
    json_object *o = json_object_new_object();
    struct bridge_db_checkpoint ck;

    json_object_object_add(o, "vm", json_object_new_string(vmname(vm)));
    json_object_object_add(o, "managed", json_object_new_boolean(m != NULL));
    json_object_object_add(o, "qmp",
                           json_object_new_boolean(vm->backend && vm->ops->is_ready(vm->backend)));
    json_object_object_add(o, "port_a", json_object_new_boolean(vm->a.ch.fd >= 0));
    json_object_object_add(o, "port_b", json_object_new_boolean(vm->b.ch.fd >= 0));
    json_object_object_add(o, "queued_requests", json_object_new_int64((int64_t)vm->queue.len));
    if (!m)
        return o;
    json_object_object_add(o, "run_state", json_object_new_string(m->row.run_state));
    json_object_object_add(o, "pid", json_object_new_int64(m->row.pid));
    json_object_object_add(o, "tier", json_object_new_string(m->row.res_tier));
    json_object_object_add(o, "reserved", json_object_new_int64((int64_t)m->row.res_bytes));
    json_object_object_add(o, "memory", json_object_new_int64((int64_t)lc_memory_bytes(vm)));
    json_object_object_add(o, "ram_file", json_object_new_string(m->row.ram_file));
    json_object_object_add(o, "op", json_object_new_string(op_name(m->op ? m->op : m->queued)));
    if (bridge_db_checkpoint_current(&vm->br->db, vmname(vm), &ck) == 1) {
        json_object *c = json_object_new_object();
        json_object_object_add(c, "id", json_object_new_string(ck.id));
        json_object_object_add(c, "tier", json_object_new_string(ck.tier));
        json_object_object_add(c, "phase", json_object_new_string(ck.phase));
        json_object_object_add(c, "zero_copy", json_object_new_boolean(ck.zero_copy));
        json_object_object_add(c, "pinned", json_object_new_boolean(ck.pinned));
        json_object_object_add(c, "state_file", json_object_new_string(ck.state_file));
        json_object_object_add(c, "last_used", json_object_new_int64(ck.last_used));
        json_object_object_add(c, "resume_at", json_object_new_int64(ck.resume_at));
        json_object_object_add(o, "checkpoint", c);
    }
    return o;
}
