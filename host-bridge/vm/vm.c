/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vm.c — one VM: its port connections (client of QEMU's chardev sockets,
 * reconnecting with backoff), its backend, and the execution of its queued
 * requests, one at a time, with their completions journaled as events.
 */
#include "config.h"
#include "bridge.h"
#include "cluster.h"

#include <errno.h>
#include <stddef.h>
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

#include "db-lifecycle.h"
#include "managed.h"
#include "privsep.h"
#include "rights.h"
#include "vms-log.h"

#define PORT_READ_BUDGET     (64u * 1024u)
#define PENDING_IN_STATE_MAX 1024
#define STALE_GRACE_S        1.0 /* a stale port A silent this long is bounced */
#define PROMPT_FIRST_S       0.5 /* after a bounce, a silent port A is prompted again after */
#define PROMPT_MAX           5   /* ... this many times, each interval twice the last */

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
    if (rc > 0) {
        vm->a.stale = 0; /* bytes from the guest: QEMU's port is not stuck */
        vm->a.prompt_next = 0;
    }
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
        bridge_vm_resend_pump(vm); /* drained: the next few of a backlog */
    }
    port_update_events(vm, &vm->b);
}

/* Take @fd (connected to QEMU's end of @p) as the port's connection. Returns 0 or -1. */
static int port_attach(struct bridge_vm *vm, struct bridge_port *p, int fd, bridge_watch_fn fn)
{
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
    /* the reader writes with our encoder, so its frames need no libdbus validation; they
     * are still checked byte for byte, as a reader taken over by its guest writes anything */
    p->ch.decode =
        p == &vm->a && vm->br->cfg->privsep ? VMS_CHANNEL_DECODE_OURS : VMS_CHANNEL_DECODE_ANY;
    vms_channel_attach(&p->ch, fd);
    bridge_watch_init(&p->watch, fn, vm);
    if (bridge_watch_add(&vm->br->loop, &p->watch, fd, EPOLLIN) < 0) {
        vms_channel_detach(&p->ch, 1);
        return -1;
    }
    p->backoff_ms = vm->br->cfg->reconnect_min_ms;
    p->conn_gen++;
    p->prompt_next = 0;
    if (p->bounced && p == &vm->a && vm->b.ch.fd >= 0 && !vm->restoring) {
        /* what the guest wrote before the bounce is gone, and a quick bounce (we dial) can
         * pass unseen: Clock (connect) on B has a helper say Hello again */
        bridge_clock_port_connected(vm);
        p->prompt_next = vm->now + PROMPT_FIRST_S;
        p->prompts_left = PROMPT_MAX;
    }
    p->bounced = 0;
    /* stale: a guest that writes (a helper answers port B's Clock with a Hello) shows the
     * port works before this; only a silent port is bounced */
    p->stale_next = vm->now + STALE_GRACE_S;
    return 0;
}

/* ---- a port QEMU may hold stale (struct bridge_port.stale) ---- */

static void port_bounce(struct bridge_vm *vm, struct bridge_port *p)
{
    p->stale = 0;
    vms_info(vmname(vm), NULL,
             "%s: closing the new connection once: QEMU may hold the port from before it "
             "(a hang-up while the VM was stopped is lost to virtio-serial); it dials again",
             p->ch.name);
    port_close(vm, p, "bounced (the VM is running: QEMU resets the port)");
    p->bounced = 1;
    if (!vm->cfg->ports_listen)
        p->retry_at = vm->now; /* we dial: again at once */
}

static void on_stale_status(void *opaque, const struct bridge_backend_result *r)
{
    struct bridge_vm *vm = opaque;
    struct bridge_port *p = &vm->a;

    p->stale_query = 0;
    if (!p->stale || p->ch.fd < 0 || p->stale_gen != p->conn_gen || vm->busy || vm->restoring)
        return;
    if (r->status != VMS_STATUS_OK || strcmp(r->run_status, "running")) {
        /* stopped, QEMU would lose this hang-up too: once it runs */
        p->stale_next = vm->now + 0.5;
        return;
    }
    port_bounce(vm, p);
}

/* Port A connected, maybe stale and silent so far: bounce it when the VM runs and nothing of
 * ours can stop it meanwhile (a save pauses the VM). A bounce drops what the guest has in
 * flight on the port: the helper sends its Hello and pending requests again. */
static void stale_tick(struct bridge_vm *vm, double now)
{
    struct bridge_port *p = &vm->a;
    const struct bridge_backend_ops *ops = vm->ops;

    if (!p->stale || p->ch.fd < 0 || now < p->stale_next)
        return;
    p->stale_query = 0; /* an answer not back in time: ask again */
    p->stale_next = now + 0.5;
    if (vm->busy || vm->restoring || !vm->backend || !ops->query_status ||
        !ops->is_ready(vm->backend))
        return;
    p->stale_query = 1;
    p->stale_gen = p->conn_gen;
    p->stale_next = now + 2.0;
    if (ops->query_status(vm->backend, on_stale_status, vm) < 0) {
        p->stale_query = 0;
        p->stale_next = now + 0.5;
    }
}

/* Port A bounced and connected again, silent since: the guest's Hello may have reached
 * QEMU before QEMU took the connection (dropped); ask for it again (struct
 * bridge_port.prompt_next). */
static void prompt_tick(struct bridge_vm *vm, double now)
{
    struct bridge_port *p = &vm->a;

    if (!p->prompt_next || now < p->prompt_next)
        return;
    if (!p->prompts_left || p->ch.fd < 0 || vm->b.ch.fd < 0 || vm->restoring) {
        p->prompt_next = 0;
        return;
    }
    p->prompts_left--;
    p->prompt_next = now + (PROMPT_FIRST_S * (1u << (PROMPT_MAX - p->prompts_left)));
    vms_debug(vmname(vm), NULL, "%s: silent since the bounce: asking for a Hello again",
              p->ch.name);
    bridge_clock_port_connected(vm);
}

static int port_connect(struct bridge_vm *vm, struct bridge_port *p, bridge_watch_fn fn)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd;

    if (!p->path[0] || strlen(p->path) >= sizeof(sa.sun_path))
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
    if (port_attach(vm, p, fd, fn) < 0)
        return -1;
    vms_info(vmname(vm), NULL, "%s: connected to %s", p->ch.name, p->path);
    return 0;
}

/* Port B reached a (maybe new) guest: its clock, and what it has not acknowledged. */
static void port_b_up(struct bridge_vm *vm)
{
    if (vm->restoring) {
        /* a restore replacing QEMU: the restored guest hears of its timeline first
         * (Timeline, then the new epoch's events, from bridge_vm_restored) */
        vms_debug(vmname(vm), vm->running, "port B back during a restore: it speaks after it");
        return;
    }
    bridge_clock_port_connected(vm); /* time, and a Hello from a welcomed helper */
    bridge_vm_resend_unacked(vm);
}

/* ---- ports = listen: QEMU dials the bridge (a chardev with reconnect) ---- */

static void port_accept(struct bridge_watch *w, uint32_t revents)
{
    struct bridge_vm *vm = w->opaque;
    struct bridge_port *p = w == &vm->a.listen ? &vm->a : &vm->b;
    int fd;

    (void)revents;
    fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    if (p->ch.fd >= 0) {
        /* a new QEMU dialled before the old connection's EOF reached us: the old one is gone */
        port_stop_reader(p);
        vms_warn(vmname(vm), NULL, "%s: replaced by a new connection", p->ch.name);
        bridge_watch_del(&vm->br->loop, &p->watch);
        vms_channel_detach(&p->ch, 1);
    }
    if (port_attach(vm, p, fd, p == &vm->a ? port_a_io : port_b_io) < 0)
        return;
    vms_info(vmname(vm), NULL, "%s: QEMU connected to %s", p->ch.name, p->path);
    if (p == &vm->b)
        port_b_up(vm);
}

/* Listen on @p's path (a stale socket file is replaced). Returns 0 or -1. */
static int port_listen(struct bridge_vm *vm, struct bridge_port *p)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd;

    if (!p->path[0] || strlen(p->path) >= sizeof(sa.sun_path))
        return -1;
    strcpy(sa.sun_path, p->path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    unlink(p->path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0) {
        vms_err(vmname(vm), NULL, "%s: listen on %s: %s", p->ch.name, p->path, strerror(errno));
        close(fd);
        return -1;
    }
    bridge_watch_init(&p->listen, port_accept, vm);
    if (bridge_watch_add(&vm->br->loop, &p->listen, fd, EPOLLIN) < 0) {
        close(fd);
        unlink(p->path);
        return -1;
    }
    vms_info(vmname(vm), NULL, "%s: listening on %s", p->ch.name, p->path);
    return 0;
}

static void port_unlisten(struct bridge_vm *vm, struct bridge_port *p)
{
    int fd = p->listen.fd;

    if (fd < 0)
        return;
    bridge_watch_del(&vm->br->loop, &p->listen);
    close(fd);
    unlink(p->path);
}

/* Ports the config leaves out: the paths the backend learnt (libvirt: the domain XML). */
static void ports_from_backend(struct bridge_vm *vm)
{
    char a[BRIDGE_PATH_MAX], b[BRIDGE_PATH_MAX];

    if (vm->cfg->port_a[0] || !vm->ops->ports || !vm->backend ||
        vm->ops->ports(vm->backend, a, b, sizeof(a)) < 0)
        return;
    if (!strcmp(a, vm->a.path) && !strcmp(b, vm->b.path))
        return;
    vms_info(vmname(vm), NULL, "ports from the hypervisor: %s, %s", a, b);
    port_unlisten(vm, &vm->a);
    port_unlisten(vm, &vm->b);
    snprintf(vm->a.path, sizeof(vm->a.path), "%s", a);
    snprintf(vm->b.path, sizeof(vm->b.path), "%s", b);
    vm->a.retry_at = vm->b.retry_at = 0;
}

static int ports_connected(void *opaque)
{
    struct bridge_vm *vm = opaque;
    return vm->a.ch.fd >= 0 && vm->b.ch.fd >= 0;
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

/* Port B can take another event now: connected and its queue empty (the socket took all). */
static int port_b_has_room(const struct bridge_vm *vm)
{
    return vm->b.ch.fd >= 0 && !vms_channel_wants_write(&vm->b.ch);
}

static int resend_one(void *opaque, struct vms_msg *ev)
{
    struct bridge_vm *vm = opaque;

    if (!port_b_has_room(vm))
        return -1; /* continue when port B drains */
    bridge_vm_send(vm, ev);
    vm->resend_after = ev->seq;
    return 0;
}

int bridge_vm_resend_pump(struct bridge_vm *vm)
{
    int n;

    if (!vm->resend_active || !port_b_has_room(vm))
        return 0;
    n = bridge_db_events_unacked(&vm->br->db, vmname(vm), vm->resend_epoch, vm->resend_after,
                                 vm->resend_until, BRIDGE_RESEND_PER_TURN, resend_one, vm);
    /* fewer than asked and not stopped by a full port: the backlog is through */
    if (n < 0 || (n < BRIDGE_RESEND_PER_TURN && port_b_has_room(vm)))
        vm->resend_active = 0;
    return n < 0 ? 0 : n;
}

void bridge_vm_resend_unacked(struct bridge_vm *vm)
{
    struct bridge_db_vm row;

    if (vm->b.ch.fd < 0 || bridge_db_vm_ensure(&vm->br->db, vmname(vm), &row) < 0)
        return;
    /* from the start of the epoch, up to what exists now: later events are sent as they come */
    vm->resend_active = 1;
    vm->resend_epoch = row.epoch;
    vm->resend_after = 0;
    vm->resend_until = row.next_seq ? row.next_seq - 1 : 0;
    bridge_vm_resend_pump(vm);
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
    const char *message = vms_msg_has(ev, VMS_F_MESSAGE) ? vms_esc(ev->message) : "";

    /* refusals come at the guest's pace: through the VM's log rate limit */
    if (r->status == BRIDGE_REQ_REFUSED)
        bridge_vm_log(vm, BRIDGE_LOG_REFUSED, LOG_INFO, r->id,
                      "refused %s: %s%s%s (event epoch %llu seq %llu)", vms_op_name(r->op),
                      vms_status_name(status), message[0] ? ": " : "", message,
                      (unsigned long long)ev->epoch, (unsigned long long)ev->seq);
    else
        vms_log(BRIDGE_OP_LOG_LEVEL(r->op), vmname(vm), r->id,
                "completed %s: %s%s%s (event epoch %llu seq %llu)", vms_op_name(r->op),
                vms_status_name(status), message[0] ? ": " : "", message,
                (unsigned long long)ev->epoch, (unsigned long long)ev->seq);
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

/* Copy the follow-ups' outcomes and values from @from into the restore's completion @ev. */
static void merge_results(struct vms_msg *ev, const struct vms_msg *from)
{
    static const enum vms_field u64s[] = {
        VMS_F_BYTES,
        VMS_F_MEM_BYTES,
        VMS_F_FREE_BYTES,
        VMS_F_HOST_MEM_TOTAL,
        VMS_F_HOST_CPUS,
        VMS_F_HOST_LOAD_MILLI,
        VMS_F_HOST_MEM_AVAILABLE,
        VMS_F_VCPUS,
        VMS_F_MEM_BOOT,
        VMS_F_MEM_MIN,
        VMS_F_MEM_MAX,
    };
    static const struct {
        enum vms_field f;
        size_t offset;
    } strs[] = {
        {VMS_F_HOSTNAME, offsetof(struct vms_msg, hostname)},
        {VMS_F_BRIDGE_VERSION, offsetof(struct vms_msg, bridge_version)},
        {VMS_F_HYPERVISOR_VERSION, offsetof(struct vms_msg, hypervisor_version)},
        {VMS_F_OPS, offsetof(struct vms_msg, ops)},
    };
    const uint64_t values[] = {
        from->bytes,
        from->mem_bytes,
        from->free_bytes,
        from->host_mem_total,
        from->host_cpus,
        from->host_load_milli,
        from->host_mem_available,
        from->vcpus,
        from->mem_boot,
        from->mem_min,
        from->mem_max,
    };

    for (size_t i = 0; i < sizeof(u64s) / sizeof(u64s[0]); i++)
        if (vms_msg_has(from, u64s[i]))
            vms_msg_set_u64(ev, u64s[i], values[i]);
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        if (vms_msg_has(from, strs[i].f))
            vms_msg_set_str(ev, strs[i].f, (const char *)from + strs[i].offset);
    for (size_t i = 0; i < from->n_results; i++)
        vms_msg_add_result(ev, from->results[i].op, from->results[i].status,
                           from->results[i].message);
    for (size_t i = 0; i < from->n_quotas; i++)
        vms_msg_add_quota(ev, from->quotas[i].name, from->quotas[i].limit, from->quotas[i].used);
}

int bridge_vm_restored(struct bridge_vm *vm, const struct bridge_request *r, const char *state_id,
                       const struct vms_msg *results)
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
    if (results)
        merge_results(&ev, results);
    if (bridge_db_event_add(db, vmname(vm), &ev) < 0)
        goto fail;
    vms_msg_clear(&ev); /* the copies below decode into it */
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

/* What the bridge knows of @vm's memory may have changed (an operation, an event, QEMU). */
static void mem_forget(struct bridge_vm *vm)
{
    vm->mem_known_at = 0;
    vm->free_at = 0; /* a save or delete moved the free space too */
}

/* 1 if what the bridge knows of @vm's memory is recent enough to answer a hostinfo with. */
static int mem_figures_fresh(const struct bridge_vm *vm)
{
    return vm->mem_known_at > 0 && bridge_now() - vm->mem_known_at < BRIDGE_MEM_KNOWN_SECONDS;
}

/* A list is how a guest sees snapshots deleted behind the bridge's back: now and then, the
 * catalogue is compared with the hypervisor's after one. */
static void reconcile_after_list(struct bridge_vm *vm)
{
    if (!vm->reconciled_at ||
        bridge_now() - vm->reconciled_at >= BRIDGE_RECONCILE_READ_ONLY_SECONDS)
        bridge_vm_reconcile(vm);
}

static void finish_running(struct bridge_vm *vm)
{
    enum vms_op op = vm->running_op;

    vm->busy = 0;
    vm->restoring = 0;
    vm->need_recover = 0;
    vm->running[0] = '\0';
    vm->running_op = VMS_OP_UNKNOWN;
    /* the catalogue against the hypervisor after every operation that may change it; after a
     * list now and then (it is how a guest sees snapshots deleted behind the bridge's back);
     * a hostinfo changes nothing and costs no hypervisor round trip */
    if (op == VMS_OP_HOSTINFO)
        return;
    if (op != VMS_OP_LIST) {
        mem_forget(vm);
        bridge_vm_reconcile(vm);
    } else {
        reconcile_after_list(vm);
    }
}

/* Complete @r with @ev, and in the same transaction drop what the journal holds of the state
 * @r names (its catalogue entry, its records of pending requests). */
static void complete_dropping_state(struct bridge_vm *vm, const struct bridge_request *r,
                                    enum vms_status status, struct vms_msg *ev)
{
    struct bridge_db *db = &vm->br->db;

    if (bridge_db_begin(db) < 0 || bridge_db_state_delete(db, vmname(vm), r->state_id) < 0 ||
        complete_in_tx(vm, r, status, ev) < 0 || bridge_db_commit(db) < 0) {
        bridge_db_rollback(db);
        vms_err(vmname(vm), r->id, "cannot journal the completion (and the state's removal)");
    } else {
        completed(vm, r, status, ev);
    }
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

/* A delete's completion names the state it removed: label, parent, creating app (for the
 * guest's StateDeleted, issue 14). */
static void describe_state(struct bridge_vm *vm, const struct bridge_request *r, struct vms_msg *ev)
{
    struct vms_state_info s;

    if (bridge_db_state_find(&vm->br->db, vmname(vm), r->state_id, &s) != 1)
        return;
    if (s.label[0] && vms_valid_text(s.label))
        vms_msg_set_str(ev, VMS_F_LABEL, s.label);
    if (s.parent[0])
        vms_msg_set_str(ev, VMS_F_PARENT_ID, s.parent);
    if (s.app_id[0])
        vms_msg_set_str(ev, VMS_F_CREATOR, s.app_id);
}

/* Host memory from /proc/meminfo (kB lines): total and available, in bytes. */
static void host_memory(uint64_t *total, uint64_t *available)
{
    FILE *f = fopen("/proc/meminfo", "re");
    char line[128];
    unsigned long long kb;

    *total = *available = 0;
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
            *total = kb * 1024ull;
        else if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            *available = kb * 1024ull;
    }
    fclose(f);
}

/*
 * A managed VM's tiers as quotas "tier:NAME" (limit: the tier's capacity, used: what every
 * VM reserves in it, so limit - used is what the tier can still take). A name too long for a
 * quota name is left out.
 */
static void hostinfo_tiers(struct bridge_vm *vm, struct vms_msg *ev)
{
    const char *names[] = {vm->cfg->fast_tier, vm->cfg->slow_tier};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const struct bridge_tier_config *t = bridge_config_tier(vm->br->cfg, names[i]);
        char name[VMS_STR_MAX + 1];
        int64_t reserved;

        if (!t || (i == 1 && !strcmp(names[0], names[1])))
            continue;
        reserved = bridge_db_tier_reserved(&vm->br->db, t->name, NULL);
        snprintf(name, sizeof(name), "tier:%s", t->name);
        if (reserved >= 0)
            vms_msg_add_quota(ev, name, t->capacity, (uint64_t)reserved);
    }
}

void bridge_hostinfo_fill(struct bridge_vm *vm, const struct bridge_request *r,
                          const struct bridge_backend_result *mem, struct vms_msg *ev)
{
    static const enum vms_op ops[] = {VMS_OP_SAVE,   VMS_OP_RESTORE,  VMS_OP_LIST,
                                      VMS_OP_DELETE, VMS_OP_HOSTINFO, VMS_OP_SET_MEMORY,
                                      VMS_OP_SUSPEND};
    static struct {
        double at; /* 0: never sampled */
        char name[256];
        uint64_t total, available;
        long cpus;
        double load;
        int has_load;
    } host;
    struct bridge_db *db = &vm->br->db;
    struct statvfs sv;
    char allowed[VMS_STR_MAX + 1] = "";
    double now = bridge_now();
    struct bridge_vm_usage usage;
    size_t used = 0;
    int64_t rights;

    if (!vm->free_at || now - vm->free_at >= BRIDGE_SAMPLE_SECONDS) {
        vm->free_at = now;
        vm->free_bytes = statvfs(vm->cfg->state_dir, &sv) == 0
                             ? (uint64_t)sv.f_bavail * sv.f_frsize
                             : UINT64_MAX; /* unknown: not reported */
    }
    if (vm->free_bytes != UINT64_MAX)
        vms_msg_set_u64(ev, VMS_F_FREE_BYTES, vm->free_bytes);
    vms_msg_set_u64(ev, VMS_F_MEM_BYTES, mem->mem_bytes);
    if (mem->vcpus)
        vms_msg_set_u64(ev, VMS_F_VCPUS, mem->vcpus);
    if (mem->base_bytes)
        vms_msg_set_u64(ev, VMS_F_MEM_BOOT, mem->base_bytes);
    if (mem->hypervisor_version[0] && vms_valid_text(mem->hypervisor_version))
        vms_msg_set_str(ev, VMS_F_HYPERVISOR_VERSION, mem->hypervisor_version);
    if (!host.at || now - host.at >= BRIDGE_SAMPLE_SECONDS) {
        /* the host's figures, shared by every VM: /proc/meminfo costs more than the rest */
        host.at = now;
        if (gethostname(host.name, sizeof(host.name) - 1) != 0 || !vms_valid_text(host.name))
            host.name[0] = '\0';
        host_memory(&host.total, &host.available);
        host.cpus = sysconf(_SC_NPROCESSORS_ONLN);
        host.has_load = getloadavg(&host.load, 1) == 1;
    }
    if (host.name[0])
        vms_msg_set_str(ev, VMS_F_HOSTNAME, host.name);
    vms_msg_set_str(ev, VMS_F_BRIDGE_VERSION, PACKAGE_VERSION);
    if (host.total) {
        vms_msg_set_u64(ev, VMS_F_HOST_MEM_TOTAL, host.total);
        vms_msg_set_u64(ev, VMS_F_HOST_MEM_AVAILABLE, host.available);
    }
    if (host.cpus > 0)
        vms_msg_set_u64(ev, VMS_F_HOST_CPUS, (uint64_t)host.cpus);
    if (host.has_load)
        vms_msg_set_u64(ev, VMS_F_HOST_LOAD_MILLI, (uint64_t)(host.load * 1000.0));
    vms_msg_set_u64(ev, VMS_F_MEM_MIN, vm->cfg->mem_min_bytes);
    vms_msg_set_u64(ev, VMS_F_MEM_MAX, vm->cfg->mem_max_bytes);
    rights = r->ops_allowed;
    if (!rights && bridge_db_rights(db, r->principal, vmname(vm), r->uid, &rights, NULL) < 0)
        rights = 0;
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        const char *name = vms_op_name(ops[i]);
        size_t len = strlen(name);

        if (!bridge_ops_allow(rights, ops[i]) || used + len + 2 > sizeof(allowed))
            continue;
        if (used)
            allowed[used++] = ' ';
        memcpy(allowed + used, name, len + 1);
        used += len;
    }
    vms_msg_set_str(ev, VMS_F_OPS, allowed);
    if (bridge_db_vm_usage(db, vmname(vm), &usage) == 0) {
        vms_msg_add_quota(ev, "states", vm->cfg->max_states, usage.states);
        vms_msg_add_quota(ev, "pending", vm->cfg->max_pending, usage.pending);
        vms_msg_add_quota(ev, "app-data-bytes", vm->cfg->max_app_data_bytes, usage.app_data_bytes);
    }
    if (vm->cfg->managed)
        hostinfo_tiers(vm, ev);
}

/* ---- follow-ups inside a restore (issue 14) ----
 *
 * With a backend that can hold the VM paused across the load (restore_paused), the follow-ups
 * run after the load and before the guest resumes: hostinfo is read, set-memory's targets are
 * given to the hypervisor (virtio-mem requested-size, balloon). The guest's driver moves the
 * memory only once it runs, so after `cont` each set-memory that was accepted is followed
 * again (same target) to report the size reached. Without restore_paused they run after the
 * backend resumed the guest. Either way the Timeline and the completion come after them.
 */

struct bridge_followups {
    struct bridge_request r; /* the restore (its app data owned here) */
    char ops[VMS_FOLLOWUPS_MAX][16];
    uint64_t args[VMS_FOLLOWUPS_MAX];
    int n, next;
    int paused;  /* the guest is held paused: the first pass runs, then cont */
    int resumed; /* second pass: following the set-memory targets given while paused */
    struct {
        uint32_t status;
        char message[VMS_STR_MAX + 1];
        uint64_t mem_bytes;
    } res[VMS_FOLLOWUPS_MAX];
    struct vms_msg out; /* hostinfo values, then results, merged into the completion */
};

static void finish_running(struct bridge_vm *vm);
static void followup_next(struct bridge_vm *vm);
static int set_memory(struct bridge_vm *vm, uint64_t bytes, bridge_backend_done_fn done,
                      void *opaque);

static int is_set_memory(const struct bridge_followups *fu, int i)
{
    return !strcmp(fu->ops[i], "set-memory");
}

static void followup_done(void *opaque, const struct bridge_backend_result *res)
{
    struct bridge_vm *vm = opaque;
    struct bridge_followups *fu = vm->fu;
    int i = fu->next;

    fu->res[i].status = res->status;
    snprintf(fu->res[i].message, sizeof(fu->res[i].message), "%s",
             res->status == VMS_STATUS_OK
                 ? ""
                 : (res->message[0] && vms_valid_text(res->message) ? res->message
                                                                    : vms_status_str(res->status)));
    fu->res[i].mem_bytes = res->mem_bytes;
    if (res->status == VMS_STATUS_OK && !is_set_memory(fu, i))
        bridge_hostinfo_fill(vm, &fu->r, res, &fu->out);
    vms_info(vmname(vm), fu->r.id, "follow-up %s inside the restore: %s (%s)", fu->ops[i],
             vms_status_name(res->status),
             fu->resumed  ? "followed after the resume"
             : fu->paused ? "guest paused"
                          : "guest running");
    fu->next++;
    followup_next(vm);
}

static void followups_resumed(void *opaque, const struct bridge_backend_result *res)
{
    struct bridge_vm *vm = opaque;
    struct bridge_followups *fu = vm->fu;

    if (res->status != VMS_STATUS_OK)
        vms_err(vmname(vm), fu->r.id, "cannot resume the guest after the follow-ups: %s",
                res->message);
    fu->paused = 0;
    fu->resumed = 1;
    fu->next = 0;
    followup_next(vm);
}

/* The completion's values: each follow-up's result in order; bytes and mem_bytes of the last
 * set-memory that succeeded (the size it reached). */
static void followups_results(struct bridge_followups *fu)
{
    for (int i = 0; i < fu->n; i++) {
        vms_msg_add_result(&fu->out, fu->ops[i], fu->res[i].status, fu->res[i].message);
        if (is_set_memory(fu, i) && fu->res[i].status == VMS_STATUS_OK) {
            vms_msg_set_u64(&fu->out, VMS_F_BYTES, fu->args[i]);
            vms_msg_set_u64(&fu->out, VMS_F_MEM_BYTES, fu->res[i].mem_bytes);
        }
    }
}

/* Run the next follow-up; when a pass ends, resume the guest or take the timeline step. */
static void followup_next(struct bridge_vm *vm)
{
    const struct bridge_backend_ops *ops = vm->ops;
    struct bridge_followups *fu = vm->fu;

    for (; fu->next < fu->n; fu->next++) {
        int i = fu->next, rc;

        if (fu->resumed && (!is_set_memory(fu, i) || fu->res[i].status != VMS_STATUS_OK))
            continue; /* the second pass follows only the accepted set-memory targets */
        rc = is_set_memory(fu, i) ? set_memory(vm, fu->args[i], followup_done, vm)
                                  : ops->query_memory(vm->backend, followup_done, vm);
        if (rc == 0)
            return; /* followup_done continues */
        /* an error in a follow-up does not undo the restore: it is reported */
        fu->res[i].status = VMS_STATUS_ERR_UNAVAILABLE;
        snprintf(fu->res[i].message, sizeof(fu->res[i].message), "%s",
                 "the hypervisor is not reachable");
    }
    if (fu->paused) {
        vms_info(vmname(vm), fu->r.id, "follow-ups done: resuming the guest");
        if (ops->cont(vm->backend, followups_resumed, vm) == 0)
            return;
        vms_err(vmname(vm), fu->r.id, "cannot resume the guest: the hypervisor is not reachable");
    }
    followups_results(fu);
    if (bridge_vm_restored(vm, &fu->r, fu->r.state_id, &fu->out) < 0)
        vms_err(vmname(vm), fu->r.id, "cannot journal the restore's timeline");
    vm->fu = NULL;
    vms_msg_clear(&fu->out);
    bridge_request_clear(&fu->r);
    free(fu);
    finish_running(vm);
    bridge_vm_kick(vm);
}

/* Start @r's follow-ups (the state is loaded; @paused: the guest is held paused). Takes @r's
 * app data. Returns 0 or -1. */
static int followups_start(struct bridge_vm *vm, struct bridge_request *r, int paused)
{
    struct bridge_followups *fu = calloc(1, sizeof(*fu));

    if (!fu)
        return -1;
    fu->n = bridge_followups_parse(r->followups, fu->ops, fu->args, VMS_FOLLOWUPS_MAX);
    fu->paused = paused;
    fu->r = *r;
    fu->r.ops_allowed = 0; /* read again when a hostinfo runs: rights may change meanwhile */
    r->app_data = NULL;    /* moved */
    r->app_data_len = 0;
    vms_msg_init(&fu->out, VMS_MSG_EVENT);
    vm->fu = fu;
    vms_info(vmname(vm), fu->r.id, "restore loaded%s; running %d follow-up(s): %s",
             paused ? ", guest paused" : "", fu->n, fu->r.followups);
    followup_next(vm);
    return 0;
}

/* A restore with follow-ups holds the guest paused across the load when the backend can. */
static int restore_held_paused(const struct bridge_vm *vm, const struct bridge_request *r)
{
    return r->op == VMS_OP_RESTORE && r->followups[0] && vm->ops->restore_paused;
}

static void ignore_result(void *opaque, const struct bridge_backend_result *res)
{
    (void)opaque;
    (void)res;
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
            vms_msg_set_str(&ev, VMS_F_CREATOR, r.app_id);
            if (bridge_db_state_insert(db, vmname(vm), &s, r.id) < 0 ||
                bridge_db_state_set(db, vmname(vm), s.id, r.principal, NULL) < 0 ||
                bridge_db_vm_set_current_state(db, vmname(vm), s.id) < 0 ||
                complete_in_tx(vm, &r, VMS_STATUS_OK, &ev) < 0 || bridge_db_commit(db) < 0)
                goto rollback;
            completed(vm, &r, VMS_STATUS_OK, &ev);
            bridge_cluster_checkpoint(vm, s.id); /* an HA VM restarts from its latest save */
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
        if (res->status == VMS_STATUS_OK && r.followups[0] &&
            followups_start(vm, &r, restore_held_paused(vm, &r)) == 0) {
            /* the state is loaded: the follow-ups run, then the timeline step (followup_done) */
            vms_msg_clear(&ev);
            bridge_request_clear(&r);
            return;
        }
        if (res->status == VMS_STATUS_OK) {
            if (bridge_vm_restored(vm, &r, r.state_id, NULL) < 0)
                goto journal_failed;
        } else {
            /* a failed load leaves a paused guest paused: it runs on in its own timeline */
            if (restore_held_paused(vm, &r) && vm->ops->cont(vm->backend, ignore_result, vm) < 0)
                vms_err(vmname(vm), r.id, "cannot resume the guest after the failed restore");
            bridge_event_for_request(&ev, &r, res->status, res->message);
            if (bridge_vm_complete(vm, &r, res->status, &ev) < 0)
                goto journal_failed;
        }
        break;
    case VMS_OP_DELETE:
        bridge_event_for_request(&ev, &r, res->status, res->message);
        describe_state(vm, &r, &ev);
        if (bridge_db_begin(db) < 0)
            goto journal_failed;
        if ((res->status == VMS_STATUS_OK &&
             bridge_db_state_delete(db, vmname(vm), r.state_id) < 0) ||
            complete_in_tx(vm, &r, res->status, &ev) < 0 || bridge_db_commit(db) < 0)
            goto rollback;
        completed(vm, &r, res->status, &ev);
        break;
    case VMS_OP_HOSTINFO: {
        int rc;
        bridge_event_for_request(&ev, &r, res->status, res->message);
        if (res->status == VMS_STATUS_OK) {
            bridge_hostinfo_fill(vm, &r, res, &ev);
            vm->mem_known = *res; /* the next hostinfos are answered from it */
            vm->mem_known.snapshots = NULL;
            vm->mem_known.n_snapshots = 0;
            vm->mem_known_at = bridge_now();
        }
        bridge_db_relaxed_begin(db); /* read-only: no fsync */
        rc = bridge_vm_complete(vm, &r, res->status, &ev);
        bridge_db_relaxed_end(db);
        if (rc < 0)
            goto journal_failed;
        break;
    }
    case VMS_OP_SET_MEMORY:
        bridge_event_for_request(&ev, &r, res->status, res->message);
        if (res->status == VMS_STATUS_OK) {
            vms_msg_set_u64(&ev, VMS_F_BYTES, r.bytes);            /* the target */
            vms_msg_set_u64(&ev, VMS_F_MEM_BYTES, res->mem_bytes); /* the size reached */
        }
        if (bridge_vm_complete(vm, &r, res->status, &ev) < 0)
            goto journal_failed;
        break;
    default:
        complete_simple(vm, &r, VMS_STATUS_ERR_INTERNAL, "unexpected operation");
        break;
    }
    goto out;
rollback:
    bridge_db_rollback(db);
journal_failed:
    /*
     * The journal refused the completion (disk full, ...): the outcome is kept
     * and journaled again every BRIDGE_JOURNAL_RETRY s, and this VM's queue
     * waits meanwhile rather than run later requests out of order. Until then
     * the request stays "running" (a restart re-judges it on the hypervisor).
     */
    bridge_vm_log(vm, BRIDGE_LOG_JOURNAL, LOG_ERR, r.id,
                  "cannot journal the completion of %s (%s): kept, retried every %.0f s; the "
                  "VM's queue waits",
                  vms_op_name(r.op), bridge_db_full(db) ? "disk full" : "database error",
                  BRIDGE_JOURNAL_RETRY);
    vm->unjournaled = *res;
    vm->unjournaled_pending = 1;
    vm->journal_retry_at = vm->now + BRIDGE_JOURNAL_RETRY;
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

/* Delete of a lost state: nothing to ask the hypervisor; drop the catalogue entry. */
static void forget_lost_state(struct bridge_vm *vm, const struct bridge_request *r)
{
    struct vms_msg ev;

    bridge_event_for_request(&ev, r, VMS_STATUS_OK, "the state was lost; removed from the list");
    describe_state(vm, r, &ev);
    complete_dropping_state(vm, r, VMS_STATUS_OK, &ev);
    vms_msg_clear(&ev);
}

/*
 * set-memory: with a virtio-mem device (virtio_mem), plug what goes beyond the boot size;
 * then the balloon takes the guest to min(bytes, boot size) (back to the boot size when
 * memory was plugged). Without one, the balloon alone. @done gets the size reached.
 */
struct set_memory_ctx {
    struct bridge_vm *vm;
    uint64_t bytes, plugged_total; /* plugged_total: boot + plugged, 0 if none */
    bridge_backend_done_fn done;
    void *opaque;
};

static void set_memory_balloon_done(void *opaque, const struct bridge_backend_result *res)
{
    struct set_memory_ctx *c = opaque;
    struct bridge_backend_result r = *res;

    if (c->plugged_total) {
        /* above the boot size the balloon only had to give back what it held */
        r.status = VMS_STATUS_OK;
        r.message[0] = '\0';
        r.mem_bytes = c->plugged_total;
    }
    c->done(c->opaque, &r);
    free(c);
}

static void set_memory_hotplug_done(void *opaque, const struct bridge_backend_result *res)
{
    struct set_memory_ctx *c = opaque;
    const struct bridge_backend_ops *ops = c->vm->ops;
    uint64_t balloon = c->bytes;

    if (res->status != VMS_STATUS_OK) {
        c->done(c->opaque, res);
        free(c);
        return;
    }
    if (c->bytes > res->base_bytes) {
        c->plugged_total = res->mem_bytes;
        balloon = res->base_bytes;
    }
    if (ops->set_balloon(c->vm->backend, balloon, set_memory_balloon_done, c) < 0) {
        /* no way to reach the balloon: what was plugged is the answer */
        struct bridge_backend_result r = *res;
        if (!c->plugged_total)
            r.status = VMS_STATUS_ERR_UNAVAILABLE;
        c->done(c->opaque, &r);
        free(c);
    }
}

static int set_memory(struct bridge_vm *vm, uint64_t bytes, bridge_backend_done_fn done,
                      void *opaque)
{
    const struct bridge_backend_ops *ops = vm->ops;
    struct set_memory_ctx *c;

    if (!vm->cfg->virtio_mem[0] || !ops->set_hotplug)
        return ops->set_balloon(vm->backend, bytes, done, opaque);
    c = calloc(1, sizeof(*c));
    if (!c)
        return -1;
    *c = (struct set_memory_ctx){.vm = vm, .bytes = bytes, .done = done, .opaque = opaque};
    if (ops->set_hotplug(vm->backend, vm->cfg->virtio_mem, bytes, set_memory_hotplug_done, c) < 0) {
        free(c);
        return -1;
    }
    return 0;
}

/* A suspend a guest app asked for, waiting for the lifecycle operation (vm/managed.c). */
struct guest_suspend {
    struct bridge_vm *vm;
    char id[VMS_REQUEST_ID_LEN + 1];
};

/*
 * The suspend ended. On success QEMU is gone by now: the completion is journaled unacked
 * and reaches the guest when port B is back after the resume — in the resumed guest, where
 * the request is still pending.
 */
static void on_guest_suspend_done(void *opaque, int ok, json_object *result)
{
    struct guest_suspend *gs = opaque;
    struct bridge_vm *vm = gs->vm;
    struct bridge_request r;
    json_object *err = NULL;
    const char *msg = NULL;
    enum vms_status st = VMS_STATUS_OK;

    if (!ok) {
        msg = result && json_object_object_get_ex(result, "error", &err)
                  ? json_object_get_string(err)
                  : "the bridge stopped before the suspend ended";
        st = strstr(msg, "inhibited")                               ? VMS_STATUS_ERR_INHIBITED
             : strstr(msg, "busy") || strstr(msg, "cannot suspend") ? VMS_STATUS_ERR_BUSY
                                                                    : VMS_STATUS_ERR_BACKEND;
    }
    if (bridge_db_request_find(&vm->br->db, vmname(vm), gs->id, &r) == 1) {
        complete_simple(vm, &r, st, msg);
        bridge_request_clear(&r);
    }
    json_object_put(result);
    free(gs);
}

/* Run a guest's suspend request: only a managed VM can be suspended by its bridge. */
static void guest_suspend(struct bridge_vm *vm, struct bridge_request *r)
{
    struct guest_suspend *gs;

    finish_running(vm); /* the suspend waits for no running request: this one waits for it */
    if (!vm->mgd) {
        complete_simple(vm, r, VMS_STATUS_ERR_UNSUPPORTED,
                        "this VM is not managed by the host bridge: it cannot be suspended");
        return;
    }
    gs = calloc(1, sizeof(*gs));
    if (!gs) {
        complete_simple(vm, r, VMS_STATUS_ERR_INTERNAL, "out of memory");
        return;
    }
    gs->vm = vm;
    memcpy(gs->id, r->id, sizeof(gs->id));
    bridge_managed_request(vm, BRIDGE_LC_SUSPEND, on_guest_suspend_done, gs);
}

/*
 * Offline set-memory of a managed VM (issue 14): the lifecycle stop (ACPI powerdown, then
 * quit), the new size journaled (a restarted bridge keeps it), the lifecycle start with it.
 * The completion is journaled once QEMU runs again: the guest is booting then, so it stays
 * unacked until the new boot's helper says Hello and gets it resent, and reaches the app's
 * listeners in the new boot.
 */
struct offline_memory {
    struct bridge_vm *vm;
    char id[VMS_REQUEST_ID_LEN + 1];
    uint64_t bytes;
};

static void offline_complete(struct bridge_vm *vm, const char *id, enum vms_status st,
                             const char *message)
{
    struct bridge_request r;
    struct vms_msg ev;

    if (bridge_db_request_find(&vm->br->db, vmname(vm), id, &r) != 1)
        return;
    bridge_event_for_request(&ev, &r, st, message);
    vms_msg_set_str(&ev, VMS_F_MODE, VMS_MEM_MODE_OFFLINE);
    vms_msg_set_u64(&ev, VMS_F_BYTES, r.bytes);
    if (st == VMS_STATUS_OK)
        vms_msg_set_u64(&ev, VMS_F_MEM_BYTES, bridge_managed_memory(vm));
    if (bridge_vm_complete(vm, &r, st, &ev) < 0)
        vms_err(vmname(vm), r.id, "cannot journal the completion of the offline set-memory");
    vms_msg_clear(&ev);
    bridge_request_clear(&r);
}

/* The lifecycle's error text from @result (owned by the caller), or @fallback. */
static const char *lc_error(json_object *result, const char *fallback)
{
    json_object *err;
    return result && json_object_object_get_ex(result, "error", &err) ? json_object_get_string(err)
                                                                      : fallback;
}

static void on_offline_started(void *opaque, int ok, json_object *result)
{
    struct offline_memory *om = opaque;
    char msg[VMS_STR_MAX + 1];

    if (ok) {
        vms_info(vmname(om->vm), om->id, "offline set-memory: running again with %llu bytes",
                 (unsigned long long)om->bytes);
        offline_complete(om->vm, om->id, VMS_STATUS_OK, NULL);
    } else {
        snprintf(msg, sizeof(msg),
                 "the VM was shut down and set to %llu bytes, but did not start: %.120s",
                 (unsigned long long)om->bytes, lc_error(result, "the bridge stopped"));
        offline_complete(om->vm, om->id, VMS_STATUS_ERR_BACKEND, msg);
    }
    json_object_put(result);
    free(om);
}

static void on_offline_stopped(void *opaque, int ok, json_object *result)
{
    struct offline_memory *om = opaque;
    char msg[VMS_STR_MAX + 1];

    if (!ok) {
        snprintf(msg, sizeof(msg), "cannot shut the VM down to change its memory: %.160s",
                 lc_error(result, "the bridge stopped"));
        offline_complete(om->vm, om->id, VMS_STATUS_ERR_BUSY, msg);
        json_object_put(result);
        free(om);
        return;
    }
    json_object_put(result);
    if (bridge_managed_set_memory(om->vm, om->bytes) < 0)
        vms_err(vmname(om->vm), om->id,
                "offline set-memory: cannot journal the new size; the VM starts as before");
    bridge_managed_request(om->vm, BRIDGE_LC_START, on_offline_started, om);
}

/* Run offline set-memory @r on managed @vm (judged by guest.c: managed, a tier holds it). */
static void offline_set_memory(struct bridge_vm *vm, struct bridge_request *r)
{
    struct offline_memory *om;

    finish_running(vm); /* the lifecycle holds the VM: later requests wait for it */
    om = calloc(1, sizeof(*om));
    if (!om) {
        complete_simple(vm, r, VMS_STATUS_ERR_INTERNAL, "out of memory");
        return;
    }
    om->vm = vm;
    memcpy(om->id, r->id, sizeof(om->id));
    om->bytes = r->bytes;
    vms_info(vmname(vm), r->id, "offline set-memory to %llu bytes: shutting the VM down",
             (unsigned long long)r->bytes);
    bridge_managed_request(vm, BRIDGE_LC_STOP, on_offline_stopped, om);
}

/*
 * The journal could not take @r's start (or a list's completion): @r goes back
 * to the front of the queue, tried again in BRIDGE_JOURNAL_RETRY s. Returns 1.
 */
static int run_later(struct bridge_vm *vm, const struct bridge_request *r)
{
    bridge_vm_log(vm, BRIDGE_LOG_JOURNAL, LOG_ERR, r->id,
                  "cannot journal %s (%s): it waits, retried every %.0f s", vms_op_name(r->op),
                  bridge_db_full(&vm->br->db) ? "disk full" : "database error",
                  BRIDGE_JOURNAL_RETRY);
    bridge_queue_push_front(&vm->queue, r->id);
    vm->journal_retry_at = vm->now + BRIDGE_JOURNAL_RETRY;
    return 1;
}

int bridge_op_read_only(enum vms_op op)
{
    return op == VMS_OP_LIST || op == VMS_OP_HOSTINFO;
}

/* 1 if the hypervisor can be asked for @vm: a managed VM that is down has no guest to act on
 * (libvirt stays connected then), and one in a lifecycle operation holds requests back. */
static int backend_reachable(const struct bridge_vm *vm)
{
    return vm->backend && vm->ops->is_ready(vm->backend) && !bridge_managed_holds(vm) &&
           !bridge_managed_is_down(vm);
}

/* The Event answering read-only request @r (status ok) from what the bridge knows: the
 * catalogue for a list, the known memory figures for a hostinfo. */
static void known_answer(struct bridge_vm *vm, const struct bridge_request *r, struct vms_msg *ev)
{
    bridge_event_for_request(ev, r, VMS_STATUS_OK, NULL);
    if (r->op == VMS_OP_LIST)
        bridge_db_state_list(&vm->br->db, vmname(vm), ev);
    else
        bridge_hostinfo_fill(vm, r, &vm->mem_known, ev);
}

int bridge_vm_can_answer_now(const struct bridge_vm *vm, enum vms_op op)
{
    if (!bridge_op_read_only(op) || vm->busy || vm->queue.len || vm->unjournaled_pending ||
        vm->now < vm->journal_retry_at || !backend_reachable(vm))
        return 0;
    /* a hostinfo without fresh figures asks the hypervisor: queued, like any request */
    return op == VMS_OP_LIST || mem_figures_fresh(vm);
}

void bridge_vm_answer_now(struct bridge_vm *vm, const struct bridge_request *r)
{
    struct vms_msg ev;

    known_answer(vm, r, &ev);
    /* seq 0: not journaled, never resent, not acked */
    vms_msg_set_u64(&ev, VMS_F_EPOCH, r->epoch);
    vms_msg_set_u64(&ev, VMS_F_SEQ, 0);
    vms_debug(vmname(vm), r->id, "answered %s at once (not journaled)", vms_op_name(r->op));
    bridge_vm_send(vm, &ev);
    vms_msg_clear(&ev);
    if (r->op == VMS_OP_LIST)
        reconcile_after_list(vm);
}

/*
 * Journal @r running — and, for a save, the requests pending inside its state — in one
 * transaction, then make it durable with the accepts deferred before it (one fsync), then send
 * the Reply the VM owes. A save that first prepares the guest adds at its Ready only what was
 * accepted meanwhile (record_pending_at_ready): that is nothing, and no fsync, unless the guest
 * asked for more during the window. Returns 1 if the pending requests were recorded, 0 if not,
 * -1 if nothing may start (the journal failed; @r stays accepted).
 */
static int journal_start(struct bridge_vm *vm, const struct bridge_request *r)
{
    struct bridge_db *db = &vm->br->db;
    int record = r->op == VMS_OP_SAVE;
    int rc = -1;

    bridge_db_relaxed_begin(db);
    if (bridge_db_begin(db) < 0)
        goto out;
    if (bridge_db_request_set_status(db, vmname(vm), r->id, BRIDGE_REQ_RUNNING, 0, "") < 0 ||
        (record && bridge_db_state_pending_record(db, vmname(vm), r->state_id) < 0) ||
        bridge_db_commit(db) < 0) {
        bridge_db_rollback(db);
        goto out;
    }
    bridge_db_defer(db);
    rc = record;
out:
    bridge_db_relaxed_end(db);
    if (rc >= 0 && bridge_db_barrier(db) < 0) {
        /* not on the disk: the hypervisor must not start it */
        bridge_db_request_set_status(db, vmname(vm), r->id, BRIDGE_REQ_ACCEPTED, 0, "");
        rc = -1;
    }
    if (rc >= 0)
        bridge_guest_settle(vm); /* nothing deferred is left: no second fsync */
    return rc;
}

/* Start @r (status running, durable). Returns 1 if it completed synchronously, 0 if started. */
static int run_request_now(struct bridge_vm *vm, struct bridge_request *r)
{
    const struct bridge_backend_ops *ops = vm->ops;
    struct bridge_db *db = &vm->br->db;
    char job[VMS_STR_MAX + 1];
    int rc = -1, recorded = 0;

    /* a read-only request stays "accepted" while it runs: after a restart it is queued and
     * run again, which is what "running" would get it too, without a write */
    if (!bridge_op_read_only(r->op) && (recorded = journal_start(vm, r)) < 0)
        return run_later(vm, r);
    vm->busy = 1;
    vm->running_op = r->op;
    memcpy(vm->running, r->id, sizeof(vm->running));
    vms_log(BRIDGE_OP_LOG_LEVEL(r->op), vmname(vm), r->id, "running %s%s%s", vms_op_name(r->op),
            r->state_id[0] ? " " : "", r->state_id);
    job_id_for(r, job, sizeof(job));
    switch (r->op) {
    case VMS_OP_LIST: {
        struct vms_msg ev;
        known_answer(vm, r, &ev);
        rc = bridge_vm_complete(vm, r, VMS_STATUS_OK, &ev);
        vms_msg_clear(&ev);
        finish_running(vm);
        return rc < 0 ? run_later(vm, r) : 1; /* a list changes nothing: run it again */
    }
    case VMS_OP_SAVE:
        if (bridge_prepare_start(vm, r))
            return 0; /* the guest prepares; bridge_vm_save_go() starts the snapshot */
        if (!recorded && bridge_db_state_pending_record(db, vmname(vm), r->state_id) < 0)
            break;
        rc = ops->save(vm->backend, r->state_id, job, on_backend_done, vm);
        break;
    case VMS_OP_RESTORE:
    case VMS_OP_DELETE: {
        struct bridge_state_owner owner;
        if (bridge_db_state_owner(db, vmname(vm), r->state_id, &owner) != 1) {
            complete_simple(vm, r, VMS_STATUS_ERR_NOT_FOUND, "no such state for this VM");
            finish_running(vm);
            return 1;
        }
        if (!strcmp(owner.status, "lost")) {
            /* the hypervisor no longer has it (found when the catalogue was reconciled) */
            if (r->op == VMS_OP_DELETE)
                forget_lost_state(vm, r);
            else
                complete_simple(vm, r, VMS_STATUS_ERR_NOT_FOUND,
                                "the state is lost: the hypervisor no longer holds it");
            finish_running(vm);
            return 1;
        }
    }
        vm->restoring = r->op == VMS_OP_RESTORE;
        rc = (restore_held_paused(vm, r) ? ops->restore_paused
              : r->op == VMS_OP_RESTORE
                  ? ops->restore
                  : ops->delete)(vm->backend, r->state_id, job, on_backend_done, vm);
        break;
    case VMS_OP_HOSTINFO:
        if (mem_figures_fresh(vm)) {
            /* answered from what the bridge knows: no hypervisor round trip */
            struct vms_msg ev;
            known_answer(vm, r, &ev);
            bridge_db_relaxed_begin(db);
            rc = bridge_vm_complete(vm, r, VMS_STATUS_OK, &ev);
            bridge_db_relaxed_end(db);
            vms_msg_clear(&ev);
            finish_running(vm);
            return rc < 0 ? run_later(vm, r) : 1;
        }
        rc = ops->query_memory(vm->backend, on_backend_done, vm);
        break;
    case VMS_OP_SET_MEMORY:
        if (r->mode[0]) {
            offline_set_memory(vm, r);
            return 1;
        }
        rc = set_memory(vm, r->bytes, on_backend_done, vm);
        break;
    case VMS_OP_SUSPEND:
        guest_suspend(vm, r);
        return 1;
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

/*
 * run_request_now(); a list's completion (it completes here) without an fsync: lost with the
 * host's power, the guest asks again. (A hostinfo's is in on_backend_done().)
 */
static int run_request(struct bridge_vm *vm, struct bridge_request *r)
{
    int rc, relaxed = r->op == VMS_OP_LIST;

    if (relaxed)
        bridge_db_relaxed_begin(&vm->br->db);
    rc = run_request_now(vm, r);
    if (relaxed)
        bridge_db_relaxed_end(&vm->br->db);
    return rc;
}

/* A save that ends before its snapshot was asked for: its records of pending requests go with
 * its completion (complete_dropping_state). */
static void complete_unsaved(struct bridge_vm *vm, const struct bridge_request *r,
                             enum vms_status status, const char *message)
{
    struct vms_msg ev;

    bridge_event_for_request(&ev, r, status, message);
    complete_dropping_state(vm, r, status, &ev);
    vms_msg_clear(&ev);
}

/* At the guest's Ready: the requests accepted during the Prepare window are inside the state
 * too. They join the record made when the save started (journal_start) and reach the disk
 * before the hypervisor is asked; with none, nothing is written and nothing synced. 0 or -1. */
static int record_pending_at_ready(struct bridge_vm *vm, const struct bridge_request *r)
{
    struct bridge_db *db = &vm->br->db;
    int added;

    bridge_db_relaxed_begin(db);
    added = bridge_db_state_pending_record(db, vmname(vm), r->state_id);
    bridge_db_relaxed_end(db);
    if (added > 0)
        bridge_db_defer(db);
    return added < 0 || bridge_db_barrier(db) < 0 ? -1 : 0;
}

void bridge_vm_save_go(struct bridge_vm *vm, enum vms_status status, const char *message)
{
    const struct bridge_backend_ops *ops = vm->ops;
    struct bridge_request r;
    char job[VMS_STR_MAX + 1];
    int rc = -1;

    if (!vm->busy || bridge_db_request_find(&vm->br->db, vmname(vm), vm->running, &r) != 1) {
        finish_running(vm);
        bridge_vm_kick(vm);
        return;
    }
    if (status != VMS_STATUS_OK) {
        complete_unsaved(vm, &r, status, message);
        goto done;
    }
    job_id_for(&r, job, sizeof(job));
    if (vm->backend && record_pending_at_ready(vm, &r) == 0)
        rc = ops->save(vm->backend, r.state_id, job, on_backend_done, vm);
    if (rc == 0) {
        bridge_request_clear(&r);
        return; /* on_backend_done completes it */
    }
    complete_unsaved(vm, &r, VMS_STATUS_ERR_UNAVAILABLE, "the hypervisor is not reachable");
done:
    bridge_request_clear(&r);
    finish_running(vm);
    bridge_vm_kick(vm);
}

static void recover_running(struct bridge_vm *vm)
{
    const struct bridge_backend_ops *ops = vm->ops;
    struct bridge_request r;
    char job[VMS_STR_MAX + 1];

    if (bridge_db_request_find(&vm->br->db, vmname(vm), vm->running, &r) != 1) {
        finish_running(vm);
        return;
    }
    if (r.op == VMS_OP_SET_MEMORY && r.mode[0]) {
        /* the VM runs again (QMP answers): it has the new size iff it was journaled */
        int done = bridge_managed_memory(vm) == r.bytes;
        vms_warn(vmname(vm), r.id, "offline set-memory was running when the bridge stopped: %s",
                 done ? "the VM runs with the new size" : "the VM kept its size");
        finish_running(vm);
        offline_complete(vm, r.id, done ? VMS_STATUS_OK : VMS_STATUS_ERR_ABORTED,
                         done ? NULL : "the host bridge restarted before the memory changed");
        bridge_request_clear(&r);
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
    char id[VMS_REQUEST_ID_LEN + 1];

    if (!backend_reachable(vm))
        return;
    if (vm->busy) {
        if (vm->need_recover)
            recover_running(vm);
        return;
    }
    /* after a journal failure, wait for bridge_vm_tick() to come back (not a busy loop); a
     * request that began a lifecycle operation (offline set-memory) holds the rest back */
    while (!vm->busy && !bridge_managed_holds(vm) && vm->now >= vm->journal_retry_at &&
           bridge_queue_pop(&vm->queue, id)) {
        struct bridge_request r;
        if (bridge_db_request_find(&vm->br->db, vmname(vm), id, &r) != 1)
            continue;
        if (r.status == BRIDGE_REQ_ACCEPTED)
            run_request(vm, &r);
        bridge_request_clear(&r);
    }
}

/* ---- the catalogue against the hypervisor (issue 14) ---- */

#define FOREIGN_LABEL "snapshot not made by vmstate"

static void on_snapshot_list(void *opaque, const struct bridge_backend_result *res)
{
    struct bridge_vm *vm = opaque;
    struct bridge_db *db = &vm->br->db;
    static char ids[VMS_STATES_MAX][VMS_STR_MAX + 1];
    static char statuses[VMS_STATES_MAX][8];
    char running_state[VMS_STR_MAX + 1] = "";
    int n, lost = 0, back = 0, foreign = 0, tx = 0;

    vm->reconciling = 0;
    if (res->status != VMS_STATUS_OK) {
        vms_debug(vmname(vm), NULL, "catalogue not reconciled: %s", res->message);
        return;
    }
    if (vm->busy && vm->running[0]) {
        /* the running operation's state may be half made or half gone: judged next time */
        struct bridge_request r;
        if (bridge_db_request_find(db, vmname(vm), vm->running, &r) == 1) {
            snprintf(running_state, sizeof(running_state), "%s", r.state_id);
            bridge_request_clear(&r);
        }
    }
    n = bridge_db_state_ids(db, vmname(vm), ids, statuses, VMS_STATES_MAX);
    if (n < 0)
        return;
/* the transaction starts with the first change: most lists change nothing, and cost no commit */
#define RECONCILE_TX()                                                                             \
    do {                                                                                           \
        if (!tx && bridge_db_begin(db) < 0)                                                        \
            return;                                                                                \
        tx = 1;                                                                                    \
    } while (0)
    for (int i = 0; i < n; i++) {
        int held = 0;
        for (unsigned k = 0; k < res->n_snapshots && !held; k++)
            held = !strcmp(res->snapshots[k], ids[i]);
        if (!strcmp(ids[i], running_state))
            continue;
        if (!held && strcmp(statuses[i], "lost") != 0) {
            vms_warn(vmname(vm), NULL,
                     "state %s is lost: the hypervisor no longer holds it (deleted outside "
                     "vmstate?)",
                     ids[i]);
            RECONCILE_TX();
            bridge_db_state_set(db, vmname(vm), ids[i], NULL, "lost");
            lost++;
        } else if (held && !strcmp(statuses[i], "lost")) {
            vms_info(vmname(vm), NULL, "state %s is back in the hypervisor", ids[i]);
            RECONCILE_TX();
            bridge_db_state_set(db, vmname(vm), ids[i], NULL, "ok");
            back++;
        }
    }
    for (unsigned k = 0; k < res->n_snapshots; k++) {
        const char *name = res->snapshots[k];
        int known = 0;
        struct vms_state_info s;

        for (int i = 0; i < n && !known; i++)
            known = !strcmp(ids[i], name);
        if (known || !vms_valid_id(name) || !strcmp(name, running_state))
            continue; /* a name outside the id alphabet cannot be offered to the guest; a
                       * save in progress is the bridge's own */
        memset(&s, 0, sizeof(s));
        snprintf(s.id, sizeof(s.id), "%s", name);
        snprintf(s.label, sizeof(s.label), "%s", FOREIGN_LABEL);
        s.created = (int64_t)time(NULL);
        RECONCILE_TX();
        if (bridge_db_state_insert(db, vmname(vm), &s, "") == 0 &&
            bridge_db_state_set(db, vmname(vm), s.id, NULL, "foreign") >= 0) {
            vms_warn(vmname(vm), NULL,
                     "snapshot %s was not made by vmstate: listed as foreign (restore needs "
                     "the right restore-foreign)",
                     name);
            foreign++;
        }
    }
#undef RECONCILE_TX
    if (tx && bridge_db_commit(db) < 0) {
        bridge_db_rollback(db);
        return;
    }
    if (lost || back || foreign)
        vms_info(vmname(vm), NULL, "catalogue reconciled: %d lost, %d back, %d foreign", lost, back,
                 foreign);
}

void bridge_vm_reconcile(struct bridge_vm *vm)
{
    const struct bridge_backend_ops *ops = vm->ops;

    if (vm->reconciling || !vm->backend || !ops->list_snapshots || !ops->is_ready(vm->backend))
        return;
    if (ops->list_snapshots(vm->backend, on_snapshot_list, vm) == 0) {
        vm->reconciling = 1;
        vm->reconciled_at = bridge_now();
    }
}

/* ---- backend hooks ---- */

static void on_backend_ready(void *opaque)
{
    struct bridge_vm *vm = opaque;
    mem_forget(vm); /* perhaps another QEMU */
    ports_from_backend(vm);
    vm->reconciling = 0; /* a list asked on the previous connection is gone with it */
    bridge_vm_reconcile(vm);
    bridge_managed_backend_ready(vm);
    bridge_ioe_ready(vm->ioe);
    bridge_vm_kick(vm);
}

static void on_backend_event(void *opaque, const char *name)
{
    struct bridge_vm *vm = opaque;
    mem_forget(vm); /* BALLOON_CHANGE, a virtio-mem resize, a stop... */
    /* stopped before QEMU saw the bounce's hang-up: it may have lost it */
    if (!strcmp(name, "STOP") && vm->a.bounced && vm->a.ch.fd < 0)
        vm->a.stale = 1;
    else if (!strcmp(name, "GONE")) /* QEMU ended: the next one starts with fresh ports */
        vm->a.stale = 0;
    bridge_ioe_event(vm->ioe, name);
    bridge_clock_on_event(vm, name);        /* RESUME: the guest's clock (prepare.c) */
    bridge_managed_backend_event(vm, name); /* libvirt: GONE ends a managed domain */
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
    mem_forget(vm);
    bridge_ioe_lost(vm->ioe);
}

static const struct bridge_backend_hooks backend_hooks = {
    .ready = on_backend_ready,
    .lost = on_backend_lost,
    .event = on_backend_event,
    .io_error = on_backend_io_error,
    .ports_connected = ports_connected,
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
    vm->ops = bridge_backend_for(cfg, br->backend);
    if (!vm->ops)
        return -1;
    snprintf(name, sizeof(name), "%.48s/port-a", cfg->name);
    if (vms_channel_init(&vm->a.ch, name, cfg->name, 0) < 0)
        return -1;
    snprintf(name, sizeof(name), "%.48s/port-b", cfg->name);
    if (vms_channel_init(&vm->b.ch, name, cfg->name, 0) < 0)
        return -1;
    snprintf(vm->a.path, sizeof(vm->a.path), "%s", cfg->port_a);
    snprintf(vm->b.path, sizeof(vm->b.path), "%s", cfg->port_b);
    vm->a.backoff_ms = vm->b.backoff_ms = br->cfg->reconnect_min_ms;
    /* a previous bridge may have gone while the VM was stopped (port B only carries
     * host->guest bytes: a stale "connected" there does no harm) */
    vm->a.stale = 1;
    bridge_watch_init(&vm->a.watch, port_io, &vm->a);
    bridge_watch_init(&vm->b.watch, port_io, &vm->b);
    bridge_watch_init(&vm->a.listen, port_io, vm);
    bridge_watch_init(&vm->b.listen, port_io, vm);
    bridge_auth_limiter_init(&vm->auth, cfg->auth_fail_max, cfg->auth_fail_window);
    bridge_queue_init(&vm->queue);
    vm->now = bridge_now();
    return bridge_managed_init(vm);
}

void bridge_vm_free(struct bridge_vm *vm)
{
    bridge_guest_forget(vm); /* a verification on its way, held messages */
    if (vm->fu) {
        vms_msg_clear(&vm->fu->out);
        bridge_request_clear(&vm->fu->r);
        free(vm->fu);
        vm->fu = NULL;
    }
    bridge_managed_free(vm);
    if (vm->backend)
        vm->ops->close(vm->backend);
    vm->backend = NULL;
    bridge_ioe_free(vm->ioe);
    vm->ioe = NULL;
    port_stop_reader(&vm->a);
    if (vm->a.ch.fd >= 0)
        bridge_watch_del(&vm->br->loop, &vm->a.watch);
    if (vm->b.ch.fd >= 0)
        bridge_watch_del(&vm->br->loop, &vm->b.watch);
    port_unlisten(vm, &vm->a);
    port_unlisten(vm, &vm->b);
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
        vm->restoring = r->op == VMS_OP_RESTORE;
        memcpy(vm->running, r->id, sizeof(vm->running));
    } else if (r->op == VMS_OP_SUSPEND) {
        /* its checkpoint may or may not have been taken: never suspend twice for it */
        complete_simple(vm, r, VMS_STATUS_ERR_ABORTED,
                        "interrupted by a bridge restart (the VM may have been suspended)");
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
    vm->backend = vm->ops->open(vm->cfg, &vm->br->loop, vm->br->cfg->reconnect_min_ms,
                                vm->br->cfg->reconnect_max_ms, &backend_hooks, vm);
    if (!vm->backend)
        return -1;
    return bridge_managed_start(vm);
}

/* ports = listen: keep both listening sockets up (QEMU dials them). */
static void ports_listen_tick(struct bridge_vm *vm, double now)
{
    struct bridge_port *ports[2] = {&vm->a, &vm->b};

    for (int i = 0; i < 2; i++) {
        struct bridge_port *p = ports[i];
        if (p->listen.fd < 0 && p->path[0] && now >= p->retry_at && port_listen(vm, p) < 0)
            port_schedule_retry(vm, p);
    }
}

void bridge_vm_tick(struct bridge_vm *vm, double now)
{
    vm->now = now;
    stale_tick(vm, now);
    prompt_tick(vm, now);
    if (vm->cfg->ports_listen) {
        ports_listen_tick(vm, now);
    } else {
        if (vm->a.ch.fd < 0 && now >= vm->a.retry_at) {
            if (port_connect(vm, &vm->a, port_a_io) < 0)
                port_schedule_retry(vm, &vm->a);
        }
        if (vm->b.ch.fd < 0 && now >= vm->b.retry_at) {
            if (port_connect(vm, &vm->b, port_b_io) < 0)
                port_schedule_retry(vm, &vm->b);
            else
                port_b_up(vm);
        }
    }
    if (vm->backend)
        vm->ops->tick(vm->backend, now);
    if (vm->n_owed && now >= vm->journal_retry_at)
        bridge_guest_settle(vm); /* the journal could not sync: again */
    if (vm->journal_retry_at && now >= vm->journal_retry_at) {
        /* space may be back: journal the kept completion, or start the queue again */
        vm->journal_retry_at = 0;
        if (vm->unjournaled_pending) {
            struct bridge_backend_result res = vm->unjournaled;
            vm->unjournaled_pending = 0;
            on_backend_done(vm, &res);
        } else {
            bridge_vm_kick(vm);
        }
    }
    bridge_vm_resend_pump(vm);
    for (int i = 0; i < BRIDGE_LOG__COUNT; i++)
        vms_log_limit_flush(&vm->logl[i], now, vmname(vm), bridge_log_reason_name[i]);
    bridge_prepare_tick(vm, now);
    bridge_ioe_tick_vm(vm->ioe, now);
    if (now >= vm->next_prune)
        prune_journal(vm);
}
