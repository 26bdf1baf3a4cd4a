/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vm.c — one VM: its port connections (client of QEMU's chardev sockets,
 * reconnecting with backoff), its backend, and the execution of its queued
 * requests, one at a time, with their completions journaled as events.
 */
#include "config.h"
#include "bridge.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "managed.h"
#include "privsep.h"
#include "vms-log.h"

#define PORT_READ_BUDGET     (64u * 1024u)
#define PENDING_IN_STATE_MAX 1024

static const char *vmname(const struct bridge_vm *vm)
{
    return vm->cfg->name;
}

static void port_schedule_retry(struct bridge_vm *vm, struct bridge_port *p)
{
    unsigned max = vm->br->cfg->reconnect_max_ms;
    p->retry_at = vm->now + p->backoff_ms / 1000.0;
    p->backoff_ms = p->backoff_ms * 2 > max ? max : p->backoff_ms * 2;
}

static void port_stop_reader(struct bridge_port *p)
{
    if (p->reader > 0)
        kill(p->reader, SIGTERM); /* reaped by bridge_privsep_reap() */
    p->reader = 0;
}

static void port_close(struct bridge_vm *vm, struct bridge_port *p, const char *why)
{
    port_stop_reader(p);
    if (p->ch.fd >= 0) {
        vms_warn(vmname(vm), NULL, "%s: disconnected: %s", p->ch.name, why);
        bridge_watch_del(&vm->br->loop, &p->watch);
        /* events are journaled and resent on reconnect: drop what was queued */
        vms_channel_detach(&p->ch, 1);
    }
    port_schedule_retry(vm, p);
}

static void port_update_events(struct bridge_vm *vm, struct bridge_port *p)
{
    uint32_t ev = EPOLLIN;
    if (vms_channel_wants_write(&p->ch))
        ev |= EPOLLOUT;
    bridge_watch_set(&vm->br->loop, &p->watch, ev);
}

/* Placeholder until a port is connected (port_connect installs the real one). */
static void port_io(struct bridge_watch *w, uint32_t revents)
{
    (void)w;
    (void)revents;
}

static void port_a_io(struct bridge_watch *w, uint32_t revents)
{
    struct bridge_vm *vm = w->opaque;
    int rc;

    if (!(revents & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        return;
    rc = vms_channel_read(&vm->a.ch, PORT_READ_BUDGET, bridge_guest_input, vm);
    if (rc <= 0)
        port_close(vm, &vm->a, rc == 0 ? "QEMU closed the socket" : strerror(errno));
    if (vm->b.ch.fd >= 0)
        port_update_events(vm, &vm->b);
}

static void port_b_io(struct bridge_watch *w, uint32_t revents)
{
    struct bridge_vm *vm = w->opaque;
    char buf[512];

    if (revents & EPOLLIN) {
        /* nothing is expected from the guest on port B: drain and ignore */
        ssize_t n = read(vm->b.ch.fd, buf, sizeof(buf));
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            port_close(vm, &vm->b, n == 0 ? "QEMU closed the socket" : strerror(errno));
            return;
        }
    }
    if (revents & (EPOLLHUP | EPOLLERR)) {
        port_close(vm, &vm->b, "hangup");
        return;
    }
    if (revents & EPOLLOUT) {
        if (vms_channel_flush(&vm->b.ch) < 0) {
            port_close(vm, &vm->b, "write failed");
            return;
        }
    }
    port_update_events(vm, &vm->b);
}

static int port_connect(struct bridge_vm *vm, struct bridge_port *p, bridge_watch_fn fn)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd;

    if (strlen(p->path) >= sizeof(sa.sun_path))
        return -1;
    strcpy(sa.sun_path, p->path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        vms_debug(vmname(vm), NULL, "%s: connect %s: %s", p->ch.name, p->path, strerror(errno));
        close(fd);
        return -1;
    }
    if (p == &vm->a && vm->br->cfg->privsep) {
        /* the guest's bytes are parsed by an unprivileged reader; we read its output */
        int sp = bridge_privsep_spawn(fd, vmname(vm), &p->reader);
        if (sp < 0) {
            vms_err(vmname(vm), NULL, "%s: cannot start the guest reader: %s", p->ch.name,
                    strerror(errno));
            close(fd);
            return -1;
        }
        fd = sp;
    }
    vms_channel_attach(&p->ch, fd);
    bridge_watch_init(&p->watch, fn, vm);
    if (bridge_watch_add(&vm->br->loop, &p->watch, fd, EPOLLIN) < 0) {
        vms_channel_detach(&p->ch, 1);
        return -1;
    }
    p->backoff_ms = vm->br->cfg->reconnect_min_ms;
    vms_info(vmname(vm), NULL, "%s: connected to %s", p->ch.name, p->path);
    return 0;
}

void bridge_vm_send(struct bridge_vm *vm, const struct vms_msg *m)
{
    if (vm->b.ch.fd < 0) {
        vms_debug(vmname(vm), m->request_id[0] ? m->request_id : NULL,
                  "port B not connected: %s not sent now", vms_msg_type_name(m->type));
        return;
    }
    if (vms_channel_send(&vm->b.ch, m) == 0)
        port_update_events(vm, &vm->b);
}

static void resend_one(void *opaque, struct vms_msg *ev)
{
    bridge_vm_send(opaque, ev);
}

void bridge_vm_resend_unacked(struct bridge_vm *vm)
{
    struct bridge_db_vm row;

    if (vm->b.ch.fd < 0 || bridge_db_vm_ensure(&vm->br->db, vmname(vm), &row) < 0)
        return;
    bridge_db_events_unacked(&vm->br->db, vmname(vm), row.epoch, resend_one, vm);
}

/* ---- completions ---- */

void bridge_event_for_request(struct vms_msg *ev, const struct bridge_request *r,
                              enum vms_status status, const char *message)
{
    vms_msg_init(ev, VMS_MSG_EVENT);
    vms_msg_set_str(ev, VMS_F_REQUEST_ID, r->id);
    vms_msg_set_str(ev, VMS_F_OP, vms_op_name(r->op));
    vms_msg_set_u64(ev, VMS_F_STATUS, status);
    if (message && message[0] && vms_valid_text(message))
        vms_msg_set_str(ev, VMS_F_MESSAGE, message);
    else if (status != VMS_STATUS_OK)
        vms_msg_set_str(ev, VMS_F_MESSAGE, vms_status_str(status));
    vms_msg_set_str(ev, VMS_F_APP_ID, r->app_id);
    if (r->app_data_len)
        vms_msg_set_app_data(ev, r->app_data, r->app_data_len);
    if (r->label[0])
        vms_msg_set_str(ev, VMS_F_LABEL, r->label);
    if (r->state_id[0])
        vms_msg_set_str(ev, VMS_F_STATE_ID, r->state_id);
}

/* The journal part of a completion, inside the caller's transaction. */
static int complete_in_tx(struct bridge_vm *vm, const struct bridge_request *r,
                          enum vms_status status, struct vms_msg *ev)
{
    enum bridge_req_status final =
        r->status == BRIDGE_REQ_REFUSED ? BRIDGE_REQ_REFUSED : BRIDGE_REQ_DONE;

    if (bridge_db_request_set_status(&vm->br->db, vmname(vm), r->id, final, status,
                                     vms_msg_has(ev, VMS_F_MESSAGE) ? ev->message : "") < 0 ||
        bridge_db_event_add(&vm->br->db, vmname(vm), ev) < 0)
        return -1;
    return 0;
}

/* After the commit: log and send. */
static void completed(struct bridge_vm *vm, const struct bridge_request *r, enum vms_status status,
                      const struct vms_msg *ev)
{
    vms_info(vmname(vm), r->id, "%s %s: %s%s%s (event epoch %llu seq %llu)",
             r->status == BRIDGE_REQ_REFUSED ? "refused" : "completed", vms_op_name(r->op),
             vms_status_name(status), vms_msg_has(ev, VMS_F_MESSAGE) ? ": " : "",
             vms_msg_has(ev, VMS_F_MESSAGE) ? ev->message : "", (unsigned long long)ev->epoch,
             (unsigned long long)ev->seq);
    bridge_vm_send(vm, ev);
}

int bridge_vm_complete(struct bridge_vm *vm, const struct bridge_request *r, enum vms_status status,
                       struct vms_msg *ev)
{
    struct bridge_db *db = &vm->br->db;

    if (bridge_db_begin(db) < 0)
        return -1;
    if (complete_in_tx(vm, r, status, ev) < 0 || bridge_db_commit(db) < 0) {
        bridge_db_rollback(db);
        return -1;
    }
    completed(vm, r, status, ev);
    return 0;
}

static void send_timeline(struct bridge_vm *vm, uint64_t epoch, const char *state_id,
                          const char *request_id)
{
    struct vms_msg t;
    vms_msg_init(&t, VMS_MSG_TIMELINE);
    vms_msg_set_u64(&t, VMS_F_EPOCH, epoch);
    vms_msg_set_str(&t, VMS_F_STATE_ID, state_id);
    vms_msg_set_str(&t, VMS_F_REASON, "restore");
    vms_msg_set_str(&t, VMS_F_REQUEST_ID, request_id);
    bridge_clock_stamp(vm, &t); /* the restored guest's clock is at snapshot time */
    bridge_vm_send(vm, &t);
    vms_msg_clear(&t);
}

int bridge_vm_restored(struct bridge_vm *vm, const struct bridge_request *r, const char *state_id)
{
    struct bridge_db *db = &vm->br->db;
    static char ids[PENDING_IN_STATE_MAX][VMS_REQUEST_ID_LEN + 1];
    struct vms_msg ev;
    uint64_t epoch = 0;
    int n, copies = 0;

    vms_msg_init(&ev, VMS_MSG_EVENT);
    if (bridge_db_begin(db) < 0)
        return -1;
    if (bridge_db_vm_new_epoch(db, vmname(vm), &epoch) < 0 ||
        bridge_db_vm_set_current_state(db, vmname(vm), state_id) < 0 ||
        bridge_db_request_set_status(db, vmname(vm), r->id, BRIDGE_REQ_DONE, VMS_STATUS_OK, "") < 0)
        goto fail;
    bridge_event_for_request(&ev, r, VMS_STATUS_OK, NULL);
    if (bridge_db_event_add(db, vmname(vm), &ev) < 0)
        goto fail;
    n = bridge_db_state_pending_list(db, vmname(vm), state_id, ids, PENDING_IN_STATE_MAX);
    for (int i = 0; i < n; i++) {
        struct bridge_request p;
        int found;

        if (!strcmp(ids[i], r->id))
            continue;
        found = bridge_db_request_find(db, vmname(vm), ids[i], &p);
        if (found == 1 && (p.status == BRIDGE_REQ_DONE || p.status == BRIDGE_REQ_REFUSED) &&
            bridge_db_event_latest(db, vmname(vm), ids[i], &ev) == 1) {
            vms_msg_set_str(&ev, VMS_F_REASON, "restored-copy");
            if (bridge_db_event_add(db, vmname(vm), &ev) < 0) {
                bridge_request_clear(&p);
                goto fail;
            }
            copies++;
        }
        /* still queued or running: its completion will come in the new epoch */
        bridge_request_clear(&p);
    }
    if (bridge_db_commit(db) < 0)
        goto fail;
    vms_msg_clear(&ev);
    vms_info(vmname(vm), r->id,
             "restored state %s: timeline epoch %llu, %d completion(s) copied into it", state_id,
             (unsigned long long)epoch, copies);
    send_timeline(vm, epoch, state_id, r->id);
    bridge_vm_resend_unacked(vm);
    return 0;
fail:
    vms_msg_clear(&ev);
    bridge_db_rollback(db);
    return -1;
}

/* ---- running requests ---- */

static void finish_running(struct bridge_vm *vm)
{
    vm->busy = 0;
    vm->need_recover = 0;
    vm->running[0] = '\0';
}

static void complete_simple(struct bridge_vm *vm, struct bridge_request *r, enum vms_status st,
                            const char *message)
{
    struct vms_msg ev;
    bridge_event_for_request(&ev, r, st, message);
    if (bridge_vm_complete(vm, r, st, &ev) < 0)
        vms_err(vmname(vm), r->id, "cannot journal the completion");
    vms_msg_clear(&ev);
}

/*
 * @r was "running" when the bridge stopped, and the hypervisor has no trace of
 * it (the bridge died between journalling "running" and sending the command).
 * It was accepted, so it must not be lost: back to "accepted", first in line,
 * and it runs again from the start (a save's prepare window included).
 */
static int rerun_request(struct bridge_vm *vm, const struct bridge_request *r)
{
    struct bridge_db *db = &vm->br->db;

    if (bridge_db_request_set_status(db, vmname(vm), r->id, BRIDGE_REQ_ACCEPTED, 0, "") < 0 ||
        bridge_queue_push_front(&vm->queue, r->id) < 0)
        return -1;
    vms_warn(vmname(vm), r->id,
             "%s never reached the hypervisor before the bridge stopped: running it again",
             vms_op_name(r->op));
    return 0;
}

static void on_backend_done(void *opaque, const struct bridge_backend_result *res)
{
    struct bridge_vm *vm = opaque;
    struct bridge_db *db = &vm->br->db;
    struct bridge_request r;
    struct vms_msg ev;

    if (bridge_db_request_find(db, vmname(vm), vm->running, &r) != 1) {
        vms_err(vmname(vm), vm->running, "running request vanished from the journal");
        finish_running(vm);
        bridge_vm_kick(vm);
        return;
    }
    if (res->never_started && rerun_request(vm, &r) == 0) {
        bridge_request_clear(&r);
        finish_running(vm);
        bridge_vm_kick(vm);
        return;
    }
    vms_msg_init(&ev, VMS_MSG_EVENT);
    switch (r.op) {
    case VMS_OP_SAVE:
        if (res->status == VMS_STATUS_OK) {
            /* catalogue entry and completion in one transaction: a crash between them
             * would leave a state without its request's completion */
            struct vms_state_info s;
            struct bridge_db_vm row;

            memset(&s, 0, sizeof(s));
            snprintf(s.id, sizeof(s.id), "%s", r.state_id);
            snprintf(s.label, sizeof(s.label), "%s", r.label);
            snprintf(s.app_id, sizeof(s.app_id), "%s", r.app_id);
            s.created = (int64_t)time(NULL);
            bridge_event_for_request(&ev, &r, VMS_STATUS_OK, NULL);
            if (bridge_db_begin(db) < 0)
                goto journal_failed;
            if (bridge_db_vm_ensure(db, vmname(vm), &row) < 0)
                goto rollback;
            snprintf(s.parent, sizeof(s.parent), "%s", row.current_state);
            if (s.parent[0])
                vms_msg_set_str(&ev, VMS_F_PARENT_ID, s.parent);
            if (bridge_db_state_insert(db, vmname(vm), &s, r.id) < 0 ||
                bridge_db_vm_set_current_state(db, vmname(vm), s.id) < 0 ||
                complete_in_tx(vm, &r, VMS_STATUS_OK, &ev) < 0 || bridge_db_commit(db) < 0)
                goto rollback;
            completed(vm, &r, VMS_STATUS_OK, &ev);
        } else {
            bridge_event_for_request(&ev, &r, res->status, res->message);
            if (bridge_db_begin(db) < 0)
                goto journal_failed;
            if (bridge_db_state_delete(db, vmname(vm), r.state_id) < 0 || /* pending records */
                complete_in_tx(vm, &r, res->status, &ev) < 0 || bridge_db_commit(db) < 0)
                goto rollback;
            completed(vm, &r, res->status, &ev);
        }
        break;
    case VMS_OP_RESTORE:
        if (res->status == VMS_STATUS_OK) {
            if (bridge_vm_restored(vm, &r, r.state_id) < 0)
                vms_err(vmname(vm), r.id, "cannot journal the restore's timeline");
        } else {
            bridge_event_for_request(&ev, &r, res->status, res->message);
            bridge_vm_complete(vm, &r, res->status, &ev);
        }
        break;
    case VMS_OP_DELETE:
        bridge_event_for_request(&ev, &r, res->status, res->message);
        if (bridge_db_begin(db) < 0)
            goto journal_failed;
        if ((res->status == VMS_STATUS_OK &&
             bridge_db_state_delete(db, vmname(vm), r.state_id) < 0) ||
            complete_in_tx(vm, &r, res->status, &ev) < 0 || bridge_db_commit(db) < 0)
            goto rollback;
        completed(vm, &r, res->status, &ev);
        break;
    case VMS_OP_HOSTINFO: {
        struct statvfs sv;
        char host[256] = "";

        bridge_event_for_request(&ev, &r, res->status, res->message);
        if (res->status == VMS_STATUS_OK) {
            if (statvfs(vm->cfg->state_dir, &sv) == 0)
                vms_msg_set_u64(&ev, VMS_F_FREE_BYTES, (uint64_t)sv.f_bavail * sv.f_frsize);
            vms_msg_set_u64(&ev, VMS_F_MEM_BYTES, res->mem_bytes);
            if (gethostname(host, sizeof(host) - 1) == 0 && vms_valid_text(host))
                vms_msg_set_str(&ev, VMS_F_HOSTNAME, host);
            vms_msg_set_str(&ev, VMS_F_BRIDGE_VERSION, PACKAGE_VERSION);
        }
        bridge_vm_complete(vm, &r, res->status, &ev);
        break;
    }
    case VMS_OP_SET_MEMORY:
        bridge_event_for_request(&ev, &r, res->status, res->message);
        if (res->status == VMS_STATUS_OK) {
            vms_msg_set_u64(&ev, VMS_F_BYTES, r.bytes);            /* the target */
            vms_msg_set_u64(&ev, VMS_F_MEM_BYTES, res->mem_bytes); /* the size reached */
        }
        bridge_vm_complete(vm, &r, res->status, &ev);
        break;
    default:
        complete_simple(vm, &r, VMS_STATUS_ERR_INTERNAL, "unexpected operation");
        break;
    }
    goto out;
rollback:
    bridge_db_rollback(db);
journal_failed:
    /* the journal refused the completion: the request stays "running" and is re-judged by
     * the next start; stop this VM's queue rather than run later requests out of order */
    vms_err(vmname(vm), r.id, "cannot journal the completion of %s; the VM's queue is stopped",
            vms_op_name(r.op));
    vms_msg_clear(&ev);
    bridge_request_clear(&r);
    return;
out:
    vms_msg_clear(&ev);
    bridge_request_clear(&r);
    finish_running(vm);
    bridge_vm_kick(vm);
}

static void job_id_for(const struct bridge_request *r, char *out, size_t len)
{
    snprintf(out, len, "vms-%s", r->id);
}

/* Start @r (status running, durable). Returns 1 if it completed synchronously, 0 if started. */
static int run_request(struct bridge_vm *vm, struct bridge_request *r)
{
    const struct bridge_backend_ops *ops = vm->br->backend;
    struct bridge_db *db = &vm->br->db;
    char job[VMS_STR_MAX + 1];
    int rc = -1;

    if (bridge_db_request_set_status(db, vmname(vm), r->id, BRIDGE_REQ_RUNNING, 0, "") < 0)
        return 1;
    vm->busy = 1;
    memcpy(vm->running, r->id, sizeof(vm->running));
    vms_info(vmname(vm), r->id, "running %s%s%s", vms_op_name(r->op), r->state_id[0] ? " " : "",
             r->state_id);
    job_id_for(r, job, sizeof(job));
    switch (r->op) {
    case VMS_OP_LIST: {
        struct vms_msg ev;
        bridge_event_for_request(&ev, r, VMS_STATUS_OK, NULL);
        bridge_db_state_list(db, vmname(vm), &ev);
        bridge_vm_complete(vm, r, VMS_STATUS_OK, &ev);
        vms_msg_clear(&ev);
        finish_running(vm);
        return 1;
    }
    case VMS_OP_SAVE:
        if (bridge_prepare_start(vm, r))
            return 0; /* the guest prepares; bridge_vm_save_go() starts the snapshot */
        if (bridge_db_state_pending_record(db, vmname(vm), r->state_id) < 0)
            break;
        rc = ops->save(vm->backend, r->state_id, job, on_backend_done, vm);
        break;
    case VMS_OP_RESTORE:
    case VMS_OP_DELETE:
        if (bridge_db_state_find(db, vmname(vm), r->state_id, NULL) != 1) {
            complete_simple(vm, r, VMS_STATUS_ERR_NOT_FOUND, "no such state for this VM");
            finish_running(vm);
            return 1;
        }
        rc = (r->op == VMS_OP_RESTORE ? ops->restore : ops->delete)(vm->backend, r->state_id, job,
                                                                    on_backend_done, vm);
        break;
    case VMS_OP_HOSTINFO:
        rc = ops->query_memory(vm->backend, on_backend_done, vm);
        break;
    case VMS_OP_SET_MEMORY:
        rc = ops->set_balloon(vm->backend, r->bytes, on_backend_done, vm);
        break;
    default:
        break;
    }
    if (rc < 0) {
        complete_simple(vm, r, VMS_STATUS_ERR_UNAVAILABLE, "the hypervisor is not reachable");
        finish_running(vm);
        return 1;
    }
    return 0;
}

void bridge_vm_save_go(struct bridge_vm *vm, enum vms_status status, const char *message)
{
    const struct bridge_backend_ops *ops = vm->br->backend;
    struct bridge_request r;
    char job[VMS_STR_MAX + 1];
    int rc = -1;

    if (!vm->busy || bridge_db_request_find(&vm->br->db, vmname(vm), vm->running, &r) != 1) {
        finish_running(vm);
        bridge_vm_kick(vm);
        return;
    }
    if (status != VMS_STATUS_OK) {
        complete_simple(vm, &r, status, message);
        goto done;
    }
    job_id_for(&r, job, sizeof(job));
    if (vm->backend && bridge_db_state_pending_record(&vm->br->db, vmname(vm), r.state_id) == 0)
        rc = ops->save(vm->backend, r.state_id, job, on_backend_done, vm);
    if (rc == 0) {
        bridge_request_clear(&r);
        return; /* on_backend_done completes it */
    }
    complete_simple(vm, &r, VMS_STATUS_ERR_UNAVAILABLE, "the hypervisor is not reachable");
done:
    bridge_request_clear(&r);
    finish_running(vm);
    bridge_vm_kick(vm);
}

static void recover_running(struct bridge_vm *vm)
{
    const struct bridge_backend_ops *ops = vm->br->backend;
    struct bridge_request r;
    char job[VMS_STR_MAX + 1];

    if (bridge_db_request_find(&vm->br->db, vmname(vm), vm->running, &r) != 1) {
        finish_running(vm);
        return;
    }
    job_id_for(&r, job, sizeof(job));
    vms_warn(vmname(vm), r.id, "%s was running when the bridge stopped: asking the hypervisor",
             vms_op_name(r.op));
    if (ops->recover(vm->backend, r.op, r.state_id, job, on_backend_done, vm) == 0)
        vm->need_recover = 0;
    bridge_request_clear(&r);
}

void bridge_vm_kick(struct bridge_vm *vm)
{
    const struct bridge_backend_ops *ops = vm->br->backend;
    char id[VMS_REQUEST_ID_LEN + 1];

    if (!vm->backend || !ops->is_ready(vm->backend) || bridge_managed_holds(vm))
        return;
    if (vm->busy) {
        if (vm->need_recover)
            recover_running(vm);
        return;
    }
    while (!vm->busy && bridge_queue_pop(&vm->queue, id)) {
        struct bridge_request r;
        if (bridge_db_request_find(&vm->br->db, vmname(vm), id, &r) != 1)
            continue;
        if (r.status == BRIDGE_REQ_ACCEPTED)
            run_request(vm, &r);
        bridge_request_clear(&r);
    }
}

/* ---- backend hooks ---- */

static void on_backend_ready(void *opaque)
{
    struct bridge_vm *vm = opaque;
    bridge_managed_backend_ready(vm);
    bridge_ioe_ready(vm->ioe);
    bridge_vm_kick(vm);
}

static void on_backend_event(void *opaque, const char *name)
{
    struct bridge_vm *vm = opaque;
    bridge_ioe_event(vm->ioe, name);
    bridge_clock_on_event(vm, name); /* RESUME: the guest's clock (prepare.c) */
}

static void on_backend_io_error(void *opaque, const char *node, const char *operation,
                                const char *reason, int nospace, const char *action)
{
    struct bridge_vm *vm = opaque;
    if (!strcmp(action, "stop"))
        bridge_ioe_io_error(vm->ioe, node, operation, reason, nospace);
}

static void on_backend_lost(void *opaque)
{
    struct bridge_vm *vm = opaque;
    vms_warn(vmname(vm), NULL, "hypervisor connection lost; requests wait for it");
    bridge_ioe_lost(vm->ioe);
}

static const struct bridge_backend_hooks backend_hooks = {
    .ready = on_backend_ready,
    .lost = on_backend_lost,
    .event = on_backend_event,
    .io_error = on_backend_io_error,
};

const struct bridge_backend_hooks *bridge_vm_backend_hooks(void)
{
    return &backend_hooks;
}

void bridge_vm_ports_retry_now(struct bridge_vm *vm)
{
    vm->a.retry_at = vm->b.retry_at = vm->now;
    vm->a.backoff_ms = vm->b.backoff_ms = 10; /* doubles up to reconnect_max_ms */
}

/* ---- setup ---- */

int bridge_vm_init(struct bridge_vm *vm, struct bridge *br, const struct bridge_vm_config *cfg)
{
    char name[64];

    memset(vm, 0, sizeof(*vm));
    vm->br = br;
    vm->cfg = cfg;
    snprintf(name, sizeof(name), "%.48s/port-a", cfg->name);
    if (vms_channel_init(&vm->a.ch, name, cfg->name, 0) < 0)
        return -1;
    snprintf(name, sizeof(name), "%.48s/port-b", cfg->name);
    if (vms_channel_init(&vm->b.ch, name, cfg->name, 0) < 0)
        return -1;
    vm->a.path = cfg->port_a;
    vm->b.path = cfg->port_b;
    vm->a.backoff_ms = vm->b.backoff_ms = br->cfg->reconnect_min_ms;
    bridge_watch_init(&vm->a.watch, port_io, &vm->a);
    bridge_watch_init(&vm->b.watch, port_io, &vm->b);
    bridge_auth_limiter_init(&vm->auth, cfg->auth_fail_max, cfg->auth_fail_window);
    bridge_queue_init(&vm->queue);
    vm->now = bridge_now();
    return bridge_managed_init(vm);
}

void bridge_vm_free(struct bridge_vm *vm)
{
    bridge_managed_free(vm);
    if (vm->backend)
        vm->br->backend->close(vm->backend);
    vm->backend = NULL;
    bridge_ioe_free(vm->ioe);
    vm->ioe = NULL;
    port_stop_reader(&vm->a);
    if (vm->a.ch.fd >= 0)
        bridge_watch_del(&vm->br->loop, &vm->a.watch);
    if (vm->b.ch.fd >= 0)
        bridge_watch_del(&vm->br->loop, &vm->b.watch);
    vms_channel_free(&vm->a.ch);
    vms_channel_free(&vm->b.ch);
    bridge_queue_free(&vm->queue);
}

static void queue_accepted(void *opaque, struct bridge_request *r)
{
    struct bridge_vm *vm = opaque;
    bridge_queue_push(&vm->queue, r->id);
}

static void note_running(void *opaque, struct bridge_request *r)
{
    struct bridge_vm *vm = opaque;
    struct bridge_db *db = &vm->br->db;

    if (r->op == VMS_OP_SAVE || r->op == VMS_OP_RESTORE || r->op == VMS_OP_DELETE) {
        if (vm->busy) { /* only one can have been running; be safe */
            complete_simple(vm, r, VMS_STATUS_ERR_ABORTED, "interrupted by a bridge restart");
            return;
        }
        vm->busy = 1;
        vm->need_recover = 1;
        memcpy(vm->running, r->id, sizeof(vm->running));
    } else {
        /* list, hostinfo, set-memory change nothing that a rerun would repeat harmfully */
        bridge_db_request_set_status(db, vmname(vm), r->id, BRIDGE_REQ_ACCEPTED, 0, "");
        bridge_queue_push(&vm->queue, r->id);
    }
}

#define BRIDGE_PRUNE_INTERVAL 3600.0

/* Bound the journal: finished, acknowledged requests older than journal_keep_days go. */
static void prune_journal(struct bridge_vm *vm)
{
    unsigned days = vm->br->cfg->journal_keep_days;
    int n;

    vm->next_prune = vm->now + BRIDGE_PRUNE_INTERVAL;
    if (!days)
        return;
    n = bridge_db_prune(&vm->br->db, vmname(vm), (int64_t)time(NULL) - (int64_t)days * 86400);
    if (n > 0)
        vms_info(vmname(vm), NULL, "journal: %d finished request(s) older than %u days deleted", n,
                 days);
}

int bridge_vm_start(struct bridge_vm *vm)
{
    struct bridge_db *db = &vm->br->db;
    struct bridge_db_vm row;

    if (bridge_db_vm_ensure(db, vmname(vm), &row) < 0)
        return -1;
    if (bridge_db_requests_in_status(db, vmname(vm), BRIDGE_REQ_RUNNING, note_running, vm) < 0 ||
        bridge_db_requests_in_status(db, vmname(vm), BRIDGE_REQ_ACCEPTED, queue_accepted, vm) < 0)
        return -1;
    vms_info(vmname(vm), NULL, "epoch %llu, %zu request(s) queued%s", (unsigned long long)row.epoch,
             vm->queue.len, vm->need_recover ? ", 1 to re-judge" : "");
    prune_journal(vm);
    vm->ioe = bridge_ioe_new(vm);
    if (!vm->ioe)
        return -1;
    vm->backend = vm->br->backend->open(vm->cfg, &vm->br->loop, vm->br->cfg->reconnect_min_ms,
                                        vm->br->cfg->reconnect_max_ms, &backend_hooks, vm);
    if (!vm->backend)
        return -1;
    return bridge_managed_start(vm);
}

void bridge_vm_tick(struct bridge_vm *vm, double now)
{
    vm->now = now;
    if (vm->a.ch.fd < 0 && now >= vm->a.retry_at) {
        if (port_connect(vm, &vm->a, port_a_io) < 0)
            port_schedule_retry(vm, &vm->a);
    }
    if (vm->b.ch.fd < 0 && now >= vm->b.retry_at) {
        if (port_connect(vm, &vm->b, port_b_io) < 0) {
            port_schedule_retry(vm, &vm->b);
        } else {
            bridge_clock_port_connected(vm); /* time, and a Hello from a welcomed helper */
            bridge_vm_resend_unacked(vm);
        }
    }
    if (vm->backend)
        vm->br->backend->tick(vm->backend, now);
    bridge_prepare_tick(vm, now);
    bridge_ioe_tick_vm(vm->ioe, now);
    if (now >= vm->next_prune)
        prune_journal(vm);
}
