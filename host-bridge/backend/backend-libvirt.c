/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * backend-libvirt.c — the libvirt backend (backend.h): a VM that libvirt owns.
 *
 * libvirt's C API blocks (a revert takes most of a second), the bridge's loop
 * must not: every call runs on one worker thread per VM, in order, and its
 * result comes back to the loop through an eventfd; the done callbacks run on
 * the loop. Domain events (lifecycle, I/O errors) and the connection's close
 * callback come from libvirt's event loop, which is the bridge's own
 * (libvirt-loop.c).
 *
 * Snapshots are libvirt's internal ones (RAM + every qcow2 disk, named by the
 * state id). A revert replaces the QEMU process: it runs paused, the bridge
 * waits (hooks.ports_connected) until the new QEMU has dialled the guest
 * ports, then resumes the guest, so the Timeline meets the restored guest.
 * The domain XML names the port sockets (<channel> with the two port names).
 *
 * Managed VMs (vm/managed.c): libvirt is the lifecycle engine. The bridge boots the
 * persistent domain (virDomainCreate), asks for an ACPI shutdown, then a destroy,
 * suspends it to a file in the VM's tier (virDomainSaveFlags: libvirtd writes it and ends
 * QEMU) and resumes it paused from that file (virDomainRestoreFlags), the guest running
 * only once the new QEMU has dialled the ports, as after a revert.
 */
#include "config.h"
#include "backend.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "libvirt-loop.h"
#include "libvirt-xml.h"
#include "vms-log.h"

/* How long a restored guest stays paused waiting for QEMU to dial its ports (it dials
 * within 0.3 s here; past this the guest runs and the Timeline reaches it on reconnect). */
#define REVERT_PORTS_WAIT_S 5.0
#define BALLOON_POLL_S      0.5
#define JOB_POLL_US         100000

enum lv_kind {
    LV_CONNECT,
    LV_SAVE,
    LV_RESTORE, /* revert, paused */
    LV_RESUME_RESTORED,
    LV_DELETE,
    LV_HAS,
    LV_RECOVER,
    LV_MEMORY,
    LV_SET_MEMORY,
    LV_BALLOON_READ,
    LV_STATUS,
    LV_DISK_ERRORS,
    LV_CONT,
    LV_KILL,
    LV_CREATE,       /* managed: boot the domain */
    LV_SHUTDOWN,     /* managed: ACPI power button */
    LV_PAUSE,        /* pause now (a group's stop at a time) */
    LV_SAVE_FILE,    /* managed: suspend to a file, the domain ends */
    LV_RESTORE_FILE, /* managed: resume from a file, paused */
};

struct lv_job {
    enum lv_kind kind;
    enum vms_op op; /* recover */
    char tag[VMS_STR_MAX + 1];
    char job_id[VMS_STR_MAX + 1];
    char path[BRIDGE_PATH_MAX]; /* save/restore file */
    uint64_t bytes;
    int force;
    bridge_backend_done_fn done;
    void *opaque;
    struct bridge_backend_result res;
    int conn_lost;                 /* the call failed because the connection went away */
    struct bridge_libvirt_xml xml; /* connect: what the domain XML says */
    struct lv_job *next;
};

struct job_list {
    struct lv_job *head, *tail;
};

struct bridge_backend {
    const struct bridge_vm_config *cfg;
    struct bridge_loop *loop;
    const struct bridge_backend_hooks *hooks;
    void *opaque;
    double now;

    /* worker: todo in, done out, under mu */
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job_list todo, finished;
    int stop;
    struct bridge_watch done_watch; /* eventfd: a job finished, or the connection closed */

    /* the connection: conn/dom are the worker's (and close()'s after the join) */
    virConnectPtr conn;
    virDomainPtr dom;
    int cb_lifecycle, cb_ioerr;
    atomic_int closed; /* libvirt's close callback ran */
    int ready;
    int connecting;
    double retry_at;
    unsigned backoff_ms, backoff_min_ms, backoff_max_ms;
    struct bridge_libvirt_xml xml; /* ports and disk aliases, from the last connect */

    int snapshot_busy;       /* save/restore/delete/recover: one at a time */
    struct lv_job *restored; /* reverted, paused, waiting for the ports */
    double restored_deadline;
    struct lv_job *lost_job; /* a snapshot call cut off by a lost connection */

    struct {
        bridge_backend_done_fn done; /* NULL: not following */
        void *opaque;
        uint64_t target, actual;
        double last_change, deadline, next_read;
        int reading;
    } bal;
};

static const char *vmname(const struct bridge_backend *b)
{
    return b->cfg->name;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void list_push(struct job_list *l, struct lv_job *j)
{
    j->next = NULL;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
}

static struct lv_job *list_pop(struct job_list *l)
{
    struct lv_job *j = l->head;
    if (j) {
        l->head = j->next;
        if (!l->head)
            l->tail = NULL;
    }
    return j;
}

static void list_free(struct job_list *l)
{
    struct lv_job *j;
    while ((j = list_pop(l)))
        free(j);
}

static void wake_loop(struct bridge_backend *b)
{
    uint64_t one = 1;
    if (write(b->done_watch.fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        vms_warn(vmname(b), NULL, "libvirt: wakeup: %s", strerror(errno));
}

/* ---- the worker: libvirt calls ---- */

/* The last libvirt error as the result (and whether it means the connection is gone). */
static void fail_from_libvirt(struct lv_job *j, enum vms_status st, const char *what)
{
    virErrorPtr e = virGetLastError();

    j->res.status = st;
    snprintf(j->res.message, sizeof(j->res.message), "%s: %s", what,
             e && e->message ? e->message : "unknown libvirt error");
    /* the guest gets this text: plain ASCII (libvirt quotes with UTF-8, and the cut at
     * VMS_STR_MAX could split a character) */
    for (char *c = j->res.message; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7F)
            *c = (unsigned char)*c >= 0x80 ? '?' : ' ';
    if (e && (e->domain == VIR_FROM_RPC || e->domain == VIR_FROM_REMOTE ||
              e->code == VIR_ERR_INVALID_CONN || e->code == VIR_ERR_NO_CONNECT))
        j->conn_lost = 1;
    if (e && (e->code == VIR_ERR_NO_DOMAIN_SNAPSHOT))
        j->res.status = VMS_STATUS_ERR_NOT_FOUND;
}

static void on_close(virConnectPtr conn, int reason, void *opaque)
{
    struct bridge_backend *b = opaque;
    (void)conn;
    (void)reason;
    /* may run on any thread: the loop handles it */
    atomic_store(&b->closed, 1);
    wake_loop(b);
}

static int on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque);
static void on_io_error(virConnectPtr conn, virDomainPtr dom, const char *src, const char *alias,
                        int action, const char *reason, void *opaque);

static void worker_disconnect(struct bridge_backend *b)
{
    if (!b->conn)
        return;
    if (b->cb_lifecycle >= 0)
        virConnectDomainEventDeregisterAny(b->conn, b->cb_lifecycle);
    if (b->cb_ioerr >= 0)
        virConnectDomainEventDeregisterAny(b->conn, b->cb_ioerr);
    virConnectUnregisterCloseCallback(b->conn, on_close);
    b->cb_lifecycle = b->cb_ioerr = -1;
    if (b->dom)
        virDomainFree(b->dom);
    b->dom = NULL;
    virConnectClose(b->conn);
    b->conn = NULL;
}

static void do_connect(struct bridge_backend *b, struct lv_job *j)
{
    char *xml = NULL;

    worker_disconnect(b);
    b->conn = virConnectOpen(b->cfg->uri);
    if (!b->conn) {
        fail_from_libvirt(j, VMS_STATUS_ERR_UNAVAILABLE, "connect");
        return;
    }
    b->dom = virDomainLookupByName(b->conn, b->cfg->domain);
    if (!b->dom) {
        fail_from_libvirt(j, VMS_STATUS_ERR_UNAVAILABLE, "domain");
        goto fail;
    }
    xml = virDomainGetXMLDesc(b->dom, 0);
    if (!xml) {
        fail_from_libvirt(j, VMS_STATUS_ERR_UNAVAILABLE, "domain XML");
        goto fail;
    }
    bridge_libvirt_xml_parse(xml, &j->xml);
    free(xml);
    virConnectSetKeepAlive(b->conn, 5, 3); /* a vanished daemon shows as a close */
    if (virConnectRegisterCloseCallback(b->conn, on_close, b, NULL) < 0)
        goto fail_events;
    b->cb_lifecycle =
        virConnectDomainEventRegisterAny(b->conn, b->dom, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                         VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), b, NULL);
    b->cb_ioerr =
        virConnectDomainEventRegisterAny(b->conn, b->dom, VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON,
                                         VIR_DOMAIN_EVENT_CALLBACK(on_io_error), b, NULL);
    if (b->cb_lifecycle < 0 || b->cb_ioerr < 0)
        goto fail_events;
    j->res.status = VMS_STATUS_OK;
    return;
fail_events:
    fail_from_libvirt(j, VMS_STATUS_ERR_UNAVAILABLE, "events");
fail:
    worker_disconnect(b);
}

static virDomainSnapshotPtr snapshot_lookup(struct bridge_backend *b, struct lv_job *j)
{
    virDomainSnapshotPtr s = virDomainSnapshotLookupByName(b->dom, j->tag, 0);
    if (!s)
        fail_from_libvirt(j, VMS_STATUS_ERR_BACKEND, "snapshot");
    return s;
}

static void do_save(struct bridge_backend *b, struct lv_job *j)
{
    char xml[3 * VMS_STR_MAX + 256];
    virDomainSnapshotPtr s;

    /* tag and job id are vms_valid_id (no XML metacharacters): checked in save() */
    snprintf(xml, sizeof(xml),
             "<domainsnapshot><name>%s</name><description>%s</description>"
             "<memory snapshot='internal'/></domainsnapshot>",
             j->tag, j->job_id);
    s = virDomainSnapshotCreateXML(b->dom, xml, 0);
    if (!s) {
        fail_from_libvirt(j, VMS_STATUS_ERR_BACKEND, "snapshot create");
        return;
    }
    virDomainSnapshotFree(s);
    j->res.status = VMS_STATUS_OK;
}

static void do_restore(struct bridge_backend *b, struct lv_job *j)
{
    virDomainSnapshotPtr s = snapshot_lookup(b, j);

    if (!s)
        return;
    /* paused: the guest runs only once its ports are back (see the file comment) */
    if (virDomainRevertToSnapshot(s, VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED) < 0)
        fail_from_libvirt(j, VMS_STATUS_ERR_BACKEND, "revert");
    else
        j->res.status = VMS_STATUS_OK;
    virDomainSnapshotFree(s);
}

static void do_delete(struct bridge_backend *b, struct lv_job *j)
{
    virDomainSnapshotPtr s = snapshot_lookup(b, j);

    if (!s)
        return;
    if (virDomainSnapshotDelete(s, 0) < 0)
        fail_from_libvirt(j, VMS_STATUS_ERR_BACKEND, "snapshot delete");
    else
        j->res.status = VMS_STATUS_OK;
    virDomainSnapshotFree(s);
}

/* 1 if the domain has snapshot @tag, 0 if not, -1 on error (in @j). */
static int snapshot_exists(struct bridge_backend *b, struct lv_job *j)
{
    virDomainSnapshotPtr s = virDomainSnapshotLookupByName(b->dom, j->tag, 0);
    virErrorPtr e;

    if (s) {
        virDomainSnapshotFree(s);
        return 1;
    }
    e = virGetLastError();
    if (e && e->code == VIR_ERR_NO_DOMAIN_SNAPSHOT)
        return 0;
    fail_from_libvirt(j, VMS_STATUS_ERR_BACKEND, "snapshot lookup");
    return -1;
}

static void do_has(struct bridge_backend *b, struct lv_job *j)
{
    int r = snapshot_exists(b, j);
    if (r >= 0)
        j->res.status = r ? VMS_STATUS_OK : VMS_STATUS_ERR_NOT_FOUND;
    if (r == 0)
        snprintf(j->res.message, sizeof(j->res.message), "no such snapshot");
}

/*
 * A previous bridge started @j->op and died: libvirtd finishes what it was
 * asked even when its client is gone. Wait for the domain's job to end, then
 * judge from the snapshot list; a revert leaves no trace that tells it ran,
 * so it runs again (loading the same state twice is the same state).
 */
static void do_recover(struct bridge_backend *b, struct lv_job *j)
{
    double deadline = mono_now() + (b->cfg->job_timeout ? b->cfg->job_timeout : 600);
    virDomainJobInfo info;
    int exists;

    for (;;) {
        memset(&info, 0, sizeof(info));
        if (virDomainGetJobInfo(b->dom, &info) < 0) {
            fail_from_libvirt(j, VMS_STATUS_ERR_ABORTED, "job info");
            return;
        }
        if (info.type == VIR_DOMAIN_JOB_NONE)
            break;
        if (mono_now() > deadline) {
            j->res.status = VMS_STATUS_ERR_TIMEOUT;
            snprintf(j->res.message, sizeof(j->res.message), "libvirt's job did not end");
            return;
        }
        usleep(JOB_POLL_US);
    }
    if (j->op == VMS_OP_RESTORE) {
        j->res.status = VMS_STATUS_ERR_ABORTED;
        j->res.never_started = 1;
        return;
    }
    exists = snapshot_exists(b, j);
    if (exists < 0)
        return;
    if ((j->op == VMS_OP_SAVE) == (exists == 1)) {
        j->res.status = VMS_STATUS_OK; /* saved and there, or deleted and gone */
    } else {
        j->res.status = VMS_STATUS_ERR_ABORTED;
        j->res.never_started = 1;
    }
}

static void do_memory(struct bridge_backend *b, struct lv_job *j)
{
    virDomainMemoryStatStruct st[VIR_DOMAIN_MEMORY_STAT_NR];
    virDomainInfo info;
    unsigned long hv = 0;
    const char *type;
    int n = virDomainMemoryStats(b->dom, st, VIR_DOMAIN_MEMORY_STAT_NR, 0);

    if (virDomainGetInfo(b->dom, &info) < 0) {
        fail_from_libvirt(j, VMS_STATUS_ERR_BACKEND, "domain info");
        return;
    }
    /* hostinfo: the domain's vCPUs, its configured (boot) memory, the hypervisor's version
     * (libvirt encodes it as major * 1000000 + minor * 1000 + micro) */
    j->res.vcpus = info.nrVirtCpu;
    j->res.base_bytes = (uint64_t)info.maxMem * 1024u;
    type = virConnectGetType(b->conn);
    if (virConnectGetVersion(b->conn, &hv) == 0 && hv)
        snprintf(j->res.hypervisor_version, sizeof(j->res.hypervisor_version), "%s %lu.%lu.%lu",
                 type ? type : "hypervisor", hv / 1000000, hv / 1000 % 1000, hv % 1000);
    j->res.mem_bytes = (uint64_t)info.memory * 1024u;
    for (int i = 0; i < n; i++)
        if (st[i].tag == VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON)
            j->res.mem_bytes = (uint64_t)st[i].val * 1024u;
    j->res.status = VMS_STATUS_OK;
}

static void do_set_memory(struct bridge_backend *b, struct lv_job *j)
{
    if (virDomainSetMemoryFlags(b->dom, (unsigned long)(j->bytes / 1024u), VIR_DOMAIN_AFFECT_LIVE) <
        0)
        fail_from_libvirt(j, VMS_STATUS_ERR_BACKEND, "set memory");
    else
        do_memory(b, j);
}

/* QEMU's run-state names (what query-status says), from libvirt's state and reason. */
static const char *run_status_name(int state, int reason)
{
    switch (state) {
    case VIR_DOMAIN_RUNNING:
    case VIR_DOMAIN_BLOCKED:
        return "running";
    case VIR_DOMAIN_PAUSED:
        return reason == VIR_DOMAIN_PAUSED_IOERROR    ? "io-error"
               : reason == VIR_DOMAIN_PAUSED_SNAPSHOT ? "save-vm"
               : reason == VIR_DOMAIN_PAUSED_SAVE     ? "finish-migrate" /* virDomainSave */
               : reason == VIR_DOMAIN_PAUSED_CRASHED  ? "guest-panicked"
                                                      : "paused";
    case VIR_DOMAIN_SHUTDOWN:
    case VIR_DOMAIN_SHUTOFF:
        return "shutdown";
    case VIR_DOMAIN_CRASHED:
        return "guest-panicked";
    case VIR_DOMAIN_PMSUSPENDED:
        return "suspended";
    default:
        return "unknown";
    }
}

static void do_status(struct bridge_backend *b, struct lv_job *j)
{
    int state = 0, reason = 0;

    if (virDomainGetState(b->dom, &state, &reason, 0) < 0) {
        fail_from_libvirt(j, VMS_STATUS_ERR_BACKEND, "domain state");
        return;
    }
    snprintf(j->res.run_status, sizeof(j->res.run_status), "%s", run_status_name(state, reason));
    j->res.status = VMS_STATUS_OK;
}

static void do_disk_errors(struct bridge_backend *b, struct lv_job *j)
{
    virDomainDiskError errs[4];
    int n = virDomainGetDiskErrors(b->dom, errs, 4, 0);

    if (n < 0) {
        fail_from_libvirt(j, VMS_STATUS_ERR_BACKEND, "disk errors");
        return;
    }
    for (int i = 0; i < n; i++) {
        if (errs[i].error != VIR_DOMAIN_DISK_ERROR_NONE && j->res.n_io < 4) {
            unsigned k = j->res.n_io++;
            snprintf(j->res.io_node[k], sizeof(j->res.io_node[k]), "%s", errs[i].disk);
            snprintf(j->res.io_status[k], sizeof(j->res.io_status[k]), "%s",
                     errs[i].error == VIR_DOMAIN_DISK_ERROR_NO_SPACE ? "nospace" : "failed");
        }
        free(errs[i].disk);
    }
    j->res.status = VMS_STATUS_OK;
}

/* The domain's id now, -1 when inactive or gone: each QEMU start gets a new one (the
 * virDomainPtr we hold keeps the id it was looked up with). */
static int current_id(struct bridge_backend *b)
{
    unsigned char uuid[VIR_UUID_BUFLEN];
    virDomainPtr d;
    int id = -1;

    if (!b->dom || virDomainGetUUID(b->dom, uuid) < 0)
        return -1;
    d = virDomainLookupByUUID(b->conn, uuid);
    if (d) {
        unsigned int v = virDomainGetID(d);
        id = v == (unsigned int)-1 ? -1 : (int)v;
        virDomainFree(d);
    }
    return id;
}

/*
 * A snapshot call that failed because QEMU went away under it (invariant 4): aborted. The
 * call can fail on the dead monitor before libvirt has noticed the process is gone: give
 * it a moment when the error came from the monitor. @id0: the domain's id when the call
 * began (-1: not known): libvirt may return the error only once the domain runs again, in
 * a new QEMU with a new id (seen: 2 s after the kill, the domain restarted meanwhile).
 */
static void judge_vm_gone(struct bridge_backend *b, struct lv_job *j, int id0)
{
    int tries = strstr(j->res.message, "monitor") ? 20 : 1;

    if (j->res.status != VMS_STATUS_ERR_BACKEND || j->conn_lost || !b->dom)
        return;
    for (int i = 0; i < tries; i++) {
        int id = current_id(b);
        if (virDomainIsActive(b->dom) == 0 || (id0 >= 0 && id != id0)) {
            j->res.status = VMS_STATUS_ERR_ABORTED;
            snprintf(j->res.message, sizeof(j->res.message), "the VM stopped during the operation");
            return;
        }
        if (i + 1 < tries)
            usleep(JOB_POLL_US);
    }
}

static int64_t realtime_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The lifecycle calls of a managed VM: each one blocking libvirt call, ok or its error. */
static void do_lifecycle(struct bridge_backend *b, struct lv_job *j)
{
    int rc = -1;
    const char *what = "";

    switch (j->kind) {
    case LV_CREATE:
        what = "start";
        rc = virDomainCreateWithFlags(b->dom, 0);
        break;
    case LV_SHUTDOWN:
        what = "shutdown";
        rc = virDomainShutdown(b->dom);
        break;
    case LV_PAUSE:
        what = "suspend";
        rc = virDomainSuspend(b->dom);
        /* libvirt gives no timestamp of QEMU's STOP: the moment the call returned */
        j->res.event_us = rc == 0 ? realtime_us() : 0;
        break;
    case LV_SAVE_FILE:
        /* PAUSED: a restore without flags would leave the guest paused too (the bridge
         * restores paused anyway, see LV_RESTORE_FILE) */
        what = "save";
        rc = virDomainSaveFlags(b->dom, j->path, NULL, VIR_DOMAIN_SAVE_PAUSED);
        break;
    case LV_RESTORE_FILE:
        /* paused: the guest runs only once the new QEMU has dialled its ports */
        what = "restore";
        rc = virDomainRestoreFlags(b->conn, j->path, NULL, VIR_DOMAIN_SAVE_PAUSED);
        break;
    default:
        break;
    }
    if (rc < 0)
        fail_from_libvirt(j, VMS_STATUS_ERR_BACKEND, what);
    else
        j->res.status = VMS_STATUS_OK;
}

static void do_job(struct bridge_backend *b, struct lv_job *j)
{
    j->res.status = VMS_STATUS_ERR_INTERNAL;
    if (j->kind != LV_CONNECT && !b->dom) {
        j->res.status = VMS_STATUS_ERR_UNAVAILABLE;
        snprintf(j->res.message, sizeof(j->res.message), "not connected to libvirt");
        return;
    }
    switch (j->kind) {
    case LV_CONNECT:
        do_connect(b, j);
        break;
    case LV_SAVE: {
        int id0 = current_id(b);
        do_save(b, j);
        judge_vm_gone(b, j, id0);
        break;
    }
    case LV_RESTORE:
        do_restore(b, j); /* a revert starts a new QEMU: its id changes anyway */
        judge_vm_gone(b, j, -1);
        break;
    case LV_RESUME_RESTORED:
    case LV_CONT:
        if (virDomainResume(b->dom) < 0)
            fail_from_libvirt(j, VMS_STATUS_ERR_BACKEND, "resume");
        else
            j->res.status = VMS_STATUS_OK;
        break;
    case LV_DELETE:
        do_delete(b, j);
        break;
    case LV_HAS:
        do_has(b, j);
        break;
    case LV_RECOVER:
        do_recover(b, j);
        break;
    case LV_MEMORY:
    case LV_BALLOON_READ:
        do_memory(b, j);
        break;
    case LV_SET_MEMORY:
        do_set_memory(b, j);
        break;
    case LV_STATUS:
        do_status(b, j);
        break;
    case LV_DISK_ERRORS:
        do_disk_errors(b, j);
        break;
    case LV_KILL:
        if ((j->force ? virDomainDestroy(b->dom)
                      : virDomainDestroyFlags(b->dom, VIR_DOMAIN_DESTROY_GRACEFUL)) < 0)
            fail_from_libvirt(j, VMS_STATUS_ERR_BACKEND, "destroy");
        else
            j->res.status = VMS_STATUS_OK;
        break;
    case LV_CREATE:
    case LV_SHUTDOWN:
    case LV_PAUSE:
    case LV_SAVE_FILE:
    case LV_RESTORE_FILE:
        do_lifecycle(b, j);
        break;
    }
}

static void *worker_main(void *arg)
{
    struct bridge_backend *b = arg;

    pthread_mutex_lock(&b->mu);
    for (;;) {
        struct lv_job *j;
        while (!b->stop && !b->todo.head)
            pthread_cond_wait(&b->cv, &b->mu);
        if (b->stop)
            break;
        j = list_pop(&b->todo);
        pthread_mutex_unlock(&b->mu);
        do_job(b, j);
        pthread_mutex_lock(&b->mu);
        list_push(&b->finished, j);
        wake_loop(b);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* ---- the loop side ---- */

static struct lv_job *job_new(enum lv_kind kind, bridge_backend_done_fn done, void *opaque)
{
    struct lv_job *j = calloc(1, sizeof(*j));
    if (j) {
        j->kind = kind;
        j->done = done;
        j->opaque = opaque;
    }
    return j;
}

static void job_queue(struct bridge_backend *b, struct lv_job *j)
{
    pthread_mutex_lock(&b->mu);
    list_push(&b->todo, j);
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* Start a job of @kind; -1 (no callback) when not connected or out of memory. */
static int job_start(struct bridge_backend *b, enum lv_kind kind, bridge_backend_done_fn done,
                     void *opaque, struct lv_job **out)
{
    struct lv_job *j;

    if (!b->ready)
        return -1;
    j = job_new(kind, done, opaque);
    if (!j)
        return -1;
    if (out)
        *out = j; /* the caller fills in the arguments before it is queued */
    else
        job_queue(b, j);
    return 0;
}

static void job_finish(struct lv_job *j)
{
    if (j->done)
        j->done(j->opaque, &j->res);
    free(j);
}

static void schedule_reconnect(struct bridge_backend *b)
{
    b->retry_at = b->now + b->backoff_ms / 1000.0;
    b->backoff_ms = b->backoff_ms * 2 > b->backoff_max_ms ? b->backoff_max_ms : b->backoff_ms * 2;
}

static void went_down(struct bridge_backend *b, const char *why)
{
    if (b->ready) {
        vms_warn(vmname(b), NULL, "libvirt: connection lost: %s", why);
        b->ready = 0;
        b->hooks->lost(b->opaque);
    }
    schedule_reconnect(b);
}

static void balloon_finish(struct bridge_backend *b, const char *why)
{
    struct bridge_backend_result r = {.status = VMS_STATUS_OK, .bytes = b->bal.target};
    bridge_backend_done_fn done = b->bal.done;

    if (!done)
        return;
    b->bal.done = NULL;
    r.mem_bytes = b->bal.actual;
    bridge_balloon_message(r.message, sizeof(r.message), why, b->bal.actual, b->bal.target);
    vms_info(vmname(b), NULL, "libvirt: balloon settled at %llu bytes (target %llu)%s%s",
             (unsigned long long)b->bal.actual, (unsigned long long)b->bal.target,
             r.message[0] ? ": " : "", r.message);
    done(b->bal.opaque, &r);
}

static void balloon_read(struct bridge_backend *b, const struct bridge_backend_result *r)
{
    b->bal.reading = 0;
    if (!b->bal.done || r->status != VMS_STATUS_OK)
        return;
    if (r->mem_bytes != b->bal.actual)
        b->bal.last_change = b->now;
    b->bal.actual = r->mem_bytes;
    if (bridge_balloon_near(b->bal.actual, b->bal.target))
        balloon_finish(b, NULL);
}

static void resume_restored(struct bridge_backend *b)
{
    struct lv_job *j = b->restored;

    b->restored = NULL;
    j->kind = LV_RESUME_RESTORED;
    memset(&j->res, 0, sizeof(j->res));
    job_queue(b, j);
}

/* A finished job, on the loop thread. */
static void job_done(struct bridge_backend *b, struct lv_job *j)
{
    switch (j->kind) {
    case LV_CONNECT:
        b->connecting = 0;
        if (j->res.status != VMS_STATUS_OK) {
            vms_debug(vmname(b), NULL, "libvirt: %s", j->res.message);
            schedule_reconnect(b);
            break;
        }
        b->xml = j->xml;
        b->ready = 1;
        b->backoff_ms = b->backoff_min_ms;
        atomic_store(&b->closed, 0);
        vms_info(vmname(b), NULL, "libvirt: connected to %s, domain %s (ports %s, %s)", b->cfg->uri,
                 b->cfg->domain, b->xml.port_a[0] ? b->xml.port_a : "-",
                 b->xml.port_b[0] ? b->xml.port_b : "-");
        if (b->lost_job) { /* cut off by the lost connection: judge it now */
            struct lv_job *r = b->lost_job;
            b->lost_job = NULL;
            r->kind = LV_RECOVER;
            memset(&r->res, 0, sizeof(r->res));
            job_queue(b, r);
        }
        b->hooks->ready(b->opaque);
        break;
    case LV_SAVE:
    case LV_RESTORE:
    case LV_DELETE:
    case LV_RECOVER:
        if (j->conn_lost && j->kind != LV_RECOVER) {
            vms_warn(vmname(b), NULL, "libvirt: %s cut off (%s): judged when back",
                     j->kind == LV_SAVE      ? "save"
                     : j->kind == LV_RESTORE ? "restore"
                                             : "delete",
                     j->res.message);
            j->op = j->kind == LV_SAVE      ? VMS_OP_SAVE
                    : j->kind == LV_RESTORE ? VMS_OP_RESTORE
                                            : VMS_OP_DELETE;
            b->lost_job = j;
            went_down(b, "call failed");
            return;
        }
        if (j->kind == LV_RESTORE && j->res.status == VMS_STATUS_OK) {
            b->restored = j;
            b->restored_deadline = b->now + REVERT_PORTS_WAIT_S;
            return; /* resumed from tick once the ports are back */
        }
        b->snapshot_busy = 0;
        if (j->res.status != VMS_STATUS_OK && !j->res.never_started)
            vms_warn(vmname(b), NULL, "libvirt: %s", j->res.message);
        job_finish(j);
        return;
    case LV_RESUME_RESTORED:
        b->snapshot_busy = 0;
        job_finish(j);
        return;
    case LV_SET_MEMORY:
        if (j->res.status == VMS_STATUS_OK) {
            balloon_finish(b, "superseded by a newer set-memory");
            b->bal.done = j->done;
            b->bal.opaque = j->opaque;
            b->bal.target = j->bytes;
            b->bal.actual = j->res.mem_bytes;
            b->bal.last_change = b->now;
            b->bal.deadline = b->now + BRIDGE_BALLOON_MAX_S;
            b->bal.next_read = b->now + BALLOON_POLL_S;
            if (bridge_balloon_near(b->bal.actual, b->bal.target))
                balloon_finish(b, NULL);
            free(j);
            return;
        }
        break;
    case LV_BALLOON_READ:
        balloon_read(b, &j->res);
        free(j);
        return;
    default:
        break;
    }
    if (j->conn_lost)
        went_down(b, j->res.message);
    job_finish(j);
}

static void on_done_watch(struct bridge_watch *w, uint32_t revents)
{
    struct bridge_backend *b = w->opaque;
    struct job_list done = {0};
    struct lv_job *j;
    uint64_t n;

    (void)revents;
    if (read(w->fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        vms_warn(vmname(b), NULL, "libvirt: read: %s", strerror(errno));
    b->now = mono_now();
    pthread_mutex_lock(&b->mu);
    done = b->finished;
    b->finished.head = b->finished.tail = NULL;
    pthread_mutex_unlock(&b->mu);
    while ((j = list_pop(&done)))
        job_done(b, j);
    if (atomic_exchange(&b->closed, 0))
        went_down(b, "libvirt closed the connection");
}

/* ---- domain events (libvirt's event loop = the bridge's loop thread) ---- */

static int on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque)
{
    struct bridge_backend *b = opaque;
    const char *name = event == VIR_DOMAIN_EVENT_SUSPENDED ? "STOP"
                       : event == VIR_DOMAIN_EVENT_RESUMED ? "RESUME"
                       : event == VIR_DOMAIN_EVENT_STOPPED ? "SHUTDOWN"
                                                           : NULL;
    (void)conn;
    (void)dom;
    vms_debug(vmname(b), NULL, "libvirt: lifecycle event %d detail %d", event, detail);
    /* a revert's own stop/start is not the guest's doing: it is a restore */
    if (name && !(b->snapshot_busy && event == VIR_DOMAIN_EVENT_STOPPED)) {
        b->hooks->event(b->opaque, name);
        if (event == VIR_DOMAIN_EVENT_STOPPED) /* libvirt says so once QEMU has exited */
            b->hooks->event(b->opaque, "GONE");
    }
    return 0;
}

static void on_io_error(virConnectPtr conn, virDomainPtr dom, const char *src, const char *alias,
                        int action, const char *reason, void *opaque)
{
    struct bridge_backend *b = opaque;
    const char *node = bridge_libvirt_xml_disk_target(&b->xml, alias);
    const char *act = action == VIR_DOMAIN_EVENT_IO_ERROR_PAUSE    ? "stop"
                      : action == VIR_DOMAIN_EVENT_IO_ERROR_REPORT ? "report"
                                                                   : "ignore";
    (void)conn;
    (void)dom;
    vms_debug(vmname(b), NULL, "libvirt: I/O error on %s (%s, %s): %s, action %d",
              node ? node : "?", alias ? alias : "", src ? src : "", reason ? reason : "", action);
    /* libvirt does not say whether it was a read or a write */
    b->hooks->io_error(b->opaque, node ? node : (alias ? alias : ""), "", reason ? reason : "",
                       reason && !strcmp(reason, "enospc"), act);
    b->hooks->event(b->opaque, "BLOCK_IO_ERROR");
}

/* ---- ops ---- */

static struct bridge_backend *lv_open(const struct bridge_vm_config *cfg, struct bridge_loop *loop,
                                      unsigned reconnect_min_ms, unsigned reconnect_max_ms,
                                      const struct bridge_backend_hooks *hooks, void *opaque)
{
    struct bridge_backend *b;
    int efd;

    if (bridge_libvirt_loop_register(loop) < 0)
        return NULL;
    b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->cfg = cfg;
    b->loop = loop;
    b->hooks = hooks;
    b->opaque = opaque;
    b->cb_lifecycle = b->cb_ioerr = -1;
    b->backoff_min_ms = b->backoff_ms = reconnect_min_ms ? reconnect_min_ms : 200;
    b->backoff_max_ms = reconnect_max_ms > b->backoff_min_ms ? reconnect_max_ms : b->backoff_min_ms;
    b->now = mono_now();
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    bridge_watch_init(&b->done_watch, on_done_watch, b);
    efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0 || bridge_watch_add(loop, &b->done_watch, efd, EPOLLIN) < 0)
        goto fail;
    if (pthread_create(&b->thread, NULL, worker_main, b) != 0)
        goto fail;
    b->thread_started = 1;
    return b;
fail:
    if (efd >= 0)
        close(efd);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b);
    return NULL;
}

static void lv_close(struct bridge_backend *b)
{
    if (!b)
        return;
    if (b->thread_started) {
        pthread_mutex_lock(&b->mu);
        b->stop = 1;
        pthread_cond_signal(&b->cv);
        pthread_mutex_unlock(&b->mu);
        pthread_join(b->thread, NULL);
    }
    worker_disconnect(b);
    list_free(&b->todo);
    list_free(&b->finished);
    free(b->restored);
    free(b->lost_job);
    bridge_watch_del(b->loop, &b->done_watch);
    close(b->done_watch.fd);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b);
}

static int lv_is_ready(struct bridge_backend *b)
{
    return b->ready;
}

static void lv_tick(struct bridge_backend *b, double now)
{
    b->now = now;
    if (!b->ready && !b->connecting && now >= b->retry_at) {
        struct lv_job *j = job_new(LV_CONNECT, NULL, NULL);
        if (j) {
            b->connecting = 1;
            job_queue(b, j);
        }
    }
    if (b->restored && ((b->hooks->ports_connected && b->hooks->ports_connected(b->opaque)) ||
                        now >= b->restored_deadline)) {
        if (now >= b->restored_deadline)
            vms_warn(vmname(b), NULL,
                     "libvirt: the restored QEMU did not dial the ports in %.0f s; "
                     "resuming the guest anyway",
                     REVERT_PORTS_WAIT_S);
        resume_restored(b);
    }
    if (b->bal.done) {
        if (now >= b->bal.deadline)
            balloon_finish(b, "the balloon did not settle in time");
        else if (now - b->bal.last_change >= BRIDGE_BALLOON_SETTLE_S)
            balloon_finish(b, NULL);
        else if (!b->bal.reading && now >= b->bal.next_read && b->ready) {
            b->bal.next_read = now + BALLOON_POLL_S;
            if (job_start(b, LV_BALLOON_READ, NULL, NULL, NULL) == 0)
                b->bal.reading = 1;
        }
    }
}

/* save/restore/delete/recover: one at a time, with a tag libvirt and XML can take as is. */
static int snapshot_op(struct bridge_backend *b, enum lv_kind kind, enum vms_op op, const char *tag,
                       const char *job_id, bridge_backend_done_fn done, void *opaque)
{
    struct lv_job *j;

    if (b->snapshot_busy || !vms_valid_id(tag) || (job_id && !vms_valid_id(job_id)) ||
        job_start(b, kind, done, opaque, &j) < 0)
        return -1;
    snprintf(j->tag, sizeof(j->tag), "%s", tag);
    snprintf(j->job_id, sizeof(j->job_id), "%s", job_id ? job_id : "");
    j->op = op;
    b->snapshot_busy = 1;
    job_queue(b, j);
    return 0;
}

static int lv_save(struct bridge_backend *b, const char *tag, const char *job_id,
                   bridge_backend_done_fn done, void *opaque)
{
    return snapshot_op(b, LV_SAVE, VMS_OP_SAVE, tag, job_id, done, opaque);
}

static int lv_restore(struct bridge_backend *b, const char *tag, const char *job_id,
                      bridge_backend_done_fn done, void *opaque)
{
    return snapshot_op(b, LV_RESTORE, VMS_OP_RESTORE, tag, job_id, done, opaque);
}

static int lv_delete(struct bridge_backend *b, const char *tag, const char *job_id,
                     bridge_backend_done_fn done, void *opaque)
{
    return snapshot_op(b, LV_DELETE, VMS_OP_DELETE, tag, job_id, done, opaque);
}

static int lv_recover(struct bridge_backend *b, enum vms_op op, const char *tag, const char *job_id,
                      bridge_backend_done_fn done, void *opaque)
{
    return snapshot_op(b, LV_RECOVER, op, tag, job_id, done, opaque);
}

static int lv_has_snapshot(struct bridge_backend *b, const char *tag, bridge_backend_done_fn done,
                           void *opaque)
{
    struct lv_job *j;

    if (!vms_valid_id(tag) || job_start(b, LV_HAS, done, opaque, &j) < 0)
        return -1;
    snprintf(j->tag, sizeof(j->tag), "%s", tag);
    job_queue(b, j);
    return 0;
}

static int lv_query_memory(struct bridge_backend *b, bridge_backend_done_fn done, void *opaque)
{
    return job_start(b, LV_MEMORY, done, opaque, NULL);
}

static int lv_set_balloon(struct bridge_backend *b, uint64_t bytes, bridge_backend_done_fn done,
                          void *opaque)
{
    struct lv_job *j;

    if (job_start(b, LV_SET_MEMORY, done, opaque, &j) < 0)
        return -1;
    j->bytes = j->res.bytes = bytes;
    job_queue(b, j);
    return 0;
}

static int lv_query_status(struct bridge_backend *b, bridge_backend_done_fn done, void *opaque)
{
    return job_start(b, LV_STATUS, done, opaque, NULL);
}

static int lv_query_block(struct bridge_backend *b, bridge_backend_done_fn done, void *opaque)
{
    return job_start(b, LV_DISK_ERRORS, done, opaque, NULL);
}

static int lv_cont(struct bridge_backend *b, bridge_backend_done_fn done, void *opaque)
{
    return job_start(b, LV_CONT, done, opaque, NULL);
}

static int lv_kill(struct bridge_backend *b, int force)
{
    struct lv_job *j;

    if (job_start(b, LV_KILL, NULL, NULL, &j) < 0)
        return -1;
    j->force = force;
    job_queue(b, j);
    return 0;
}

static int lv_stop(struct bridge_backend *b, bridge_backend_done_fn done, void *opaque)
{
    return job_start(b, LV_PAUSE, done, opaque, NULL);
}

static int lv_powerdown(struct bridge_backend *b, bridge_backend_done_fn done, void *opaque)
{
    return job_start(b, LV_SHUTDOWN, done, opaque, NULL);
}

static int lv_vm_create(struct bridge_backend *b, bridge_backend_done_fn done, void *opaque)
{
    return job_start(b, LV_CREATE, done, opaque, NULL);
}

/* save/restore to a file: a path libvirt takes as is (absolute, and it fits). */
static int file_op(struct bridge_backend *b, enum lv_kind kind, const char *path,
                   bridge_backend_done_fn done, void *opaque)
{
    struct lv_job *j;

    if (path[0] != '/' || strlen(path) >= sizeof(j->path) ||
        job_start(b, kind, done, opaque, &j) < 0)
        return -1;
    snprintf(j->path, sizeof(j->path), "%s", path);
    job_queue(b, j);
    return 0;
}

static int lv_vm_save_file(struct bridge_backend *b, const char *path, bridge_backend_done_fn done,
                           void *opaque)
{
    return file_op(b, LV_SAVE_FILE, path, done, opaque);
}

static int lv_vm_restore_file(struct bridge_backend *b, const char *path,
                              bridge_backend_done_fn done, void *opaque)
{
    return file_op(b, LV_RESTORE_FILE, path, done, opaque);
}

static void lv_reconnect_policy(struct bridge_backend *b, unsigned min_ms, unsigned max_ms)
{
    /* the connection is to libvirtd, which outlives every QEMU: only the backoff changes */
    b->backoff_min_ms = min_ms ? min_ms : 200;
    b->backoff_max_ms = max_ms > b->backoff_min_ms ? max_ms : b->backoff_min_ms;
    if (b->backoff_ms < b->backoff_min_ms || b->backoff_ms > b->backoff_max_ms)
        b->backoff_ms = b->backoff_min_ms;
}

static int lv_ports(struct bridge_backend *b, char *port_a, char *port_b, size_t len)
{
    if (!b->ready || !b->xml.port_a[0] || !b->xml.port_b[0])
        return -1;
    snprintf(port_a, len, "%s", b->xml.port_a);
    snprintf(port_b, len, "%s", b->xml.port_b);
    return 0;
}

const struct bridge_backend_ops bridge_backend_libvirt = {
    .name = "libvirt",
    .open = lv_open,
    .close = lv_close,
    .is_ready = lv_is_ready,
    .tick = lv_tick,
    .save = lv_save,
    .restore = lv_restore,
    .delete = lv_delete,
    .recover = lv_recover,
    .has_snapshot = lv_has_snapshot,
    .query_memory = lv_query_memory,
    .set_balloon = lv_set_balloon,
    .query_status = lv_query_status,
    .query_block = lv_query_block,
    .cont = lv_cont,
    .kill = lv_kill,
    .ports = lv_ports,
    .stop = lv_stop,
    .powerdown = lv_powerdown,
    .reconnect_policy = lv_reconnect_policy,
    .vm_create = lv_vm_create,
    .vm_save_file = lv_vm_save_file,
    .vm_restore_file = lv_vm_restore_file,
};
