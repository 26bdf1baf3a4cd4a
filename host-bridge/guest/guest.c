/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * guest.c — bridge_guest_input(): what the bridge does with each message a
 * guest sends on port A. Everything here treats the guest as hostile: the
 * message was already decoded and schema-checked by common/ (caps on every
 * field); this file adds the per-operation checks, a per-VM request rate
 * limit, authentication with a per-principal failure limit, rights, quotas,
 * and duplicate recognition, then journals before it replies.
 *
 * Refusals before authentication succeeded (invalid, rate-limited, auth) are
 * answered (Reply + Event, seq 0) but not journaled, so a hostile guest
 * cannot grow the database. Refusals after it (denied, quota, not-found,
 * unsupported) are journaled like any completion.
 *
 * With privsep (the default), the bytes were deframed and decoded by an
 * unprivileged reader process (privsep.c) and re-encoded by it: this
 * function then sees only messages our own encoder wrote, and runs in the
 * parent, which holds the database.
 */
#include "config.h"
#include "bridge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "vms-log.h"

static const char *vmname(const struct bridge_vm *vm)
{
    return vm->cfg->name;
}

static void send_reply(struct bridge_vm *vm, const char *request_id, enum vms_status status,
                       const char *message)
{
    struct vms_msg m;

    vms_msg_init(&m, VMS_MSG_REPLY);
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, request_id);
    vms_msg_set_u64(&m, VMS_F_STATUS, status);
    if (message && message[0])
        vms_msg_set_str(&m, VMS_F_MESSAGE, message);
    bridge_vm_send(vm, &m);
    vms_msg_clear(&m);
}

static uint64_t current_epoch(struct bridge_vm *vm)
{
    struct bridge_db_vm row;
    return bridge_db_vm_ensure(&vm->br->db, vmname(vm), &row) == 0 ? row.epoch : 1;
}

/* A refusal that is not journaled: Reply + Event (seq 0, never resent). */
static void refuse_unjournaled(struct bridge_vm *vm, const struct vms_msg *req,
                               enum vms_status status, const char *why)
{
    struct vms_msg ev;

    vm->stat_refused++;
    vms_warn(vmname(vm), req->request_id, "refused %s from app %s principal %s: %s (%s)", req->op,
             req->app_id, req->principal, vms_status_name(status), why);
    send_reply(vm, req->request_id, status, why);
    vms_msg_init(&ev, VMS_MSG_EVENT);
    vms_msg_set_str(&ev, VMS_F_REQUEST_ID, req->request_id);
    vms_msg_set_str(&ev, VMS_F_OP, req->op);
    vms_msg_set_u64(&ev, VMS_F_STATUS, status);
    vms_msg_set_str(&ev, VMS_F_MESSAGE, why);
    vms_msg_set_str(&ev, VMS_F_APP_ID, req->app_id);
    if (req->app_data_len)
        vms_msg_set_app_data(&ev, req->app_data, req->app_data_len);
    vms_msg_set_u64(&ev, VMS_F_EPOCH, current_epoch(vm));
    vms_msg_set_u64(&ev, VMS_F_SEQ, 0);
    bridge_vm_send(vm, &ev);
    vms_msg_clear(&ev);
}

/* A refusal after authentication: journaled as refused, with its event. */
static void refuse_journaled(struct bridge_vm *vm, struct bridge_request *r, enum vms_status status,
                             const char *why)
{
    struct vms_msg ev;
    size_t data_len;
    int rc;

    vm->stat_refused++;
    vms_warn(vmname(vm), r->id, "refused %s from app %s principal %s: %s (%s)", vms_op_name(r->op),
             r->app_id, r->principal, vms_status_name(status), why);
    r->status = BRIDGE_REQ_REFUSED;
    r->result = status;
    snprintf(r->message, sizeof(r->message), "%s", why);
    /* the refused request's app data goes back in its event only: it does not count as kept */
    data_len = r->app_data_len;
    r->app_data_len = 0;
    rc = bridge_db_request_insert(&vm->br->db, r);
    r->app_data_len = data_len;
    if (rc < 0) {
        send_reply(vm, r->id, VMS_STATUS_ERR_INTERNAL, "journal failed");
        return;
    }
    send_reply(vm, r->id, status, why);
    bridge_event_for_request(&ev, r, status, why);
    bridge_vm_complete(vm, r, status, &ev);
    vms_msg_clear(&ev);
}

/* Resend, in the current epoch, the event of an already completed request. */
static void resend_completion(struct bridge_vm *vm, const struct bridge_request *r)
{
    struct vms_msg ev;
    uint64_t epoch = current_epoch(vm);

    vms_msg_init(&ev, VMS_MSG_EVENT);
    if (bridge_db_event_latest(&vm->br->db, vmname(vm), r->id, &ev) != 1) {
        vms_msg_clear(&ev);
        return;
    }
    if (ev.epoch == epoch) {
        bridge_vm_send(vm, &ev);
    } else {
        /* completed in an older timeline: this guest's timeline has not seen it */
        vms_msg_set_str(&ev, VMS_F_REASON, "restored-copy");
        if (bridge_db_event_add(&vm->br->db, vmname(vm), &ev) == 0)
            bridge_vm_send(vm, &ev);
    }
    vms_msg_clear(&ev);
}

enum vms_status bridge_quota_check(struct bridge_vm *vm, const struct bridge_request *r, char *why,
                                   size_t whylen)
{
    const struct bridge_vm_config *cfg = vm->cfg;
    struct bridge_db *db = &vm->br->db;
    int pending = 0;
    int64_t bytes;

    /* each count is a query on the hot path: ask only for the limits that are on */
    if ((cfg->max_pending || (r->op == VMS_OP_SAVE && cfg->max_states)) &&
        (pending = bridge_db_count_pending(db, vmname(vm))) < 0)
        goto internal;
    if (cfg->max_pending && (unsigned)pending >= cfg->max_pending) {
        snprintf(why, whylen, "%d requests pending, the most this VM may have (max_pending)",
                 pending);
        return VMS_STATUS_ERR_QUOTA;
    }
    if (r->op == VMS_OP_SAVE && cfg->max_states) {
        int states = bridge_db_state_count(db, vmname(vm));
        if (states < 0)
            goto internal;
        /* pending saves may each add a state */
        if ((unsigned)(states + pending) >= cfg->max_states) {
            snprintf(why, whylen, "%d states (+%d pending), the most this VM may keep (max_states)",
                     states, pending);
            return VMS_STATUS_ERR_QUOTA;
        }
    }
    if (!cfg->max_app_data_bytes)
        return VMS_STATUS_OK;
    bytes = bridge_db_app_data_bytes(db, vmname(vm));
    if (bytes < 0)
        goto internal;
    if ((uint64_t)bytes + r->app_data_len > cfg->max_app_data_bytes) {
        snprintf(why, whylen, "%lld bytes of app data kept, +%zu is over max_app_data_bytes",
                 (long long)bytes, r->app_data_len);
        return VMS_STATUS_ERR_QUOTA;
    }
    return VMS_STATUS_OK;
internal:
    snprintf(why, whylen, "database error");
    return VMS_STATUS_ERR_INTERNAL;
}

static int new_state_id(char *out, size_t len)
{
    uint8_t rnd[12];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return -1;
    snprintf(out, len, "st-");
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(out + 3 + 2 * i, len - 3 - 2 * i, "%02x", rnd[i]);
    return 0;
}

static void on_request(struct bridge_vm *vm, struct vms_msg *m)
{
    struct bridge_db *db = &vm->br->db;
    struct bridge_request r;
    enum vms_status st;
    enum vms_op op = vms_op_from_name(m->op);
    char why[VMS_STR_MAX + 1];
    int found;

    memset(&r, 0, sizeof(r));
    vm->stat_requests++;
    if (vm->version_refused) {
        vms_warn(vmname(vm), m->request_id, "request ignored: no common protocol version");
        return;
    }
    if (!bridge_bucket_take(&vm->rate, vm->cfg->rate_requests, vm->cfg->rate_window, vm->now)) {
        refuse_unjournaled(vm, m, VMS_STATUS_ERR_RATE_LIMITED,
                           "too many requests from this VM (rate_requests)");
        return;
    }
    /* duplicates first: a replayed request must not be judged (or run) again */
    found = bridge_db_request_find(db, vmname(vm), m->request_id, &r);
    if (found < 0) {
        send_reply(vm, m->request_id, VMS_STATUS_ERR_INTERNAL, "journal unavailable");
        return;
    }
    if (found) {
        vms_info(vmname(vm), r.id, "duplicate %s request (status %d): not run again",
                 vms_op_name(r.op), (int)r.status);
        send_reply(vm, r.id, VMS_STATUS_OK, "duplicate");
        if (r.status == BRIDGE_REQ_DONE || r.status == BRIDGE_REQ_REFUSED)
            resend_completion(vm, &r);
        goto out;
    }
    if (op == VMS_OP_UNKNOWN) {
        refuse_unjournaled(vm, m, VMS_STATUS_ERR_UNSUPPORTED, "unknown operation");
        return;
    }
    if ((op == VMS_OP_RESTORE || op == VMS_OP_DELETE) && !vms_msg_has(m, VMS_F_STATE_ID)) {
        refuse_unjournaled(vm, m, VMS_STATUS_ERR_INVALID, "state_id is required");
        return;
    }
    if (op == VMS_OP_SET_MEMORY && !vms_msg_has(m, VMS_F_BYTES)) {
        refuse_unjournaled(vm, m, VMS_STATUS_ERR_INVALID, "bytes is required");
        return;
    }
    st = bridge_auth_check(db, &vm->auth, vmname(vm), m->principal, m->secret, m->op, vm->now);
    explicit_bzero(m->secret, sizeof(m->secret));
    if (st == VMS_STATUS_ERR_AUTH || st == VMS_STATUS_ERR_RATE_LIMITED ||
        st == VMS_STATUS_ERR_INTERNAL) {
        refuse_unjournaled(vm, m, st, vms_status_str(st));
        return;
    }

    /* authenticated: from here on refusals are journaled */
    snprintf(r.vm, sizeof(r.vm), "%s", vmname(vm));
    memcpy(r.id, m->request_id, sizeof(r.id));
    r.op = op;
    snprintf(r.app_id, sizeof(r.app_id), "%s", m->app_id);
    snprintf(r.principal, sizeof(r.principal), "%s", m->principal);
    r.app_data = m->app_data; /* borrowed from @m: not freed here */
    r.app_data_len = m->app_data_len;
    if (vms_msg_has(m, VMS_F_LABEL))
        snprintf(r.label, sizeof(r.label), "%s", m->label);
    if (vms_msg_has(m, VMS_F_STATE_ID) && op != VMS_OP_SAVE)
        snprintf(r.state_id, sizeof(r.state_id), "%s", m->state_id);
    r.bytes = m->bytes;
    r.epoch = current_epoch(vm);

    if (st == VMS_STATUS_ERR_DENIED) {
        snprintf(why, sizeof(why), "principal %.64s has no right '%s' on VM %.64s", r.principal,
                 vms_op_name(op), vmname(vm));
        refuse_journaled(vm, &r, st, why);
        goto borrowed;
    }
    st = bridge_quota_check(vm, &r, why, sizeof(why));
    if (st != VMS_STATUS_OK) {
        refuse_journaled(vm, &r, st, why);
        goto borrowed;
    }
    if ((op == VMS_OP_RESTORE || op == VMS_OP_DELETE) &&
        bridge_db_state_find(db, vmname(vm), r.state_id, NULL) != 1) {
        /* filtered by VM: another VM's state is "not found" here, like a made-up one */
        refuse_journaled(vm, &r, VMS_STATUS_ERR_NOT_FOUND, "no such state for this VM");
        goto borrowed;
    }
    if (op == VMS_OP_SET_MEMORY) {
        if (!vm->cfg->mem_max_bytes) {
            refuse_journaled(vm, &r, VMS_STATUS_ERR_UNSUPPORTED,
                             "set-memory is not enabled for this VM (mem_max)");
            goto borrowed;
        }
        if (r.bytes < vm->cfg->mem_min_bytes || r.bytes > vm->cfg->mem_max_bytes) {
            snprintf(why, sizeof(why), "bytes must be within %llu..%llu (mem_min..mem_max)",
                     (unsigned long long)vm->cfg->mem_min_bytes,
                     (unsigned long long)vm->cfg->mem_max_bytes);
            refuse_journaled(vm, &r, VMS_STATUS_ERR_INVALID, why);
            goto borrowed;
        }
    }
    if (op == VMS_OP_SAVE && new_state_id(r.state_id, sizeof(r.state_id)) < 0) {
        send_reply(vm, r.id, VMS_STATUS_ERR_INTERNAL, "no randomness");
        goto borrowed;
    }
    r.status = BRIDGE_REQ_ACCEPTED;
    if (bridge_db_request_insert(db, &r) < 0) {
        send_reply(vm, r.id, VMS_STATUS_ERR_INTERNAL, "journal failed");
        goto borrowed;
    }
    /* journaled (durable): now it may be acknowledged */
    vms_info(vmname(vm), r.id, "accepted %s from app %s principal %s%s%s", vms_op_name(op),
             r.app_id, r.principal, r.state_id[0] ? " state " : "", r.state_id);
    send_reply(vm, r.id, VMS_STATUS_OK, NULL);
    bridge_queue_push(&vm->queue, r.id);
    bridge_vm_kick(vm);
borrowed:
    r.app_data = NULL;
    r.app_data_len = 0;
out:
    bridge_request_clear(&r);
}

static void on_hello(struct bridge_vm *vm, struct vms_msg *m)
{
    struct vms_msg w;
    uint32_t min = vms_msg_has(m, VMS_F_MIN_VERSION) ? m->min_version : m->version;
    uint32_t version = vms_proto_negotiate(m->version, min);
    uint64_t nonce;

    if (!bridge_bucket_take(&vm->hello_rate, BRIDGE_HELLO_BURST, BRIDGE_HELLO_WINDOW, vm->now)) {
        vms_debug(vmname(vm), NULL, "hello ignored: more than %d in %d s", BRIDGE_HELLO_BURST,
                  BRIDGE_HELLO_WINDOW);
        return;
    }
    if (getrandom(&nonce, sizeof(nonce), 0) == (ssize_t)sizeof(nonce))
        vm->host_nonce = nonce;
    vms_msg_init(&w, VMS_MSG_WELCOME);
    vms_msg_set_u64(&w, VMS_F_NONCE, m->nonce);
    vms_msg_set_u64(&w, VMS_F_HOST_NONCE, vm->host_nonce);
    vms_msg_set_u64(&w, VMS_F_EPOCH, current_epoch(vm));
    if (!version) {
        vm->version_refused = 1;
        vms_msg_set_u64(&w, VMS_F_VERSION, VMS_PROTO_VERSION);
        vms_msg_set_u64(&w, VMS_F_STATUS, VMS_STATUS_ERR_VERSION);
        vms_msg_set_str(&w, VMS_F_MESSAGE, "no common protocol version");
        vms_warn(vmname(vm), NULL, "hello: guest speaks %u..%u, we %u..%u: refused", min,
                 m->version, VMS_PROTO_MIN_VERSION, VMS_PROTO_VERSION);
        bridge_vm_send(vm, &w);
        vms_msg_clear(&w);
        return;
    }
    vm->version_refused = 0;
    vm->caps = (vms_msg_has(m, VMS_F_CAPS) ? m->caps : 0) & VMS_CAP_KNOWN;
    vms_msg_set_u64(&w, VMS_F_VERSION, version);
    vms_msg_set_u64(&w, VMS_F_CAPS, vm->caps);
    vms_info(vmname(vm), NULL, "hello: version %u, guest epoch %llu, bridge epoch %llu", version,
             (unsigned long long)(vms_msg_has(m, VMS_F_EPOCH) ? m->epoch : 0),
             (unsigned long long)w.epoch);
    bridge_clock_stamp(vm, &w); /* helper connect: a timeline change for the clock */
    bridge_vm_send(vm, &w);
    vms_msg_clear(&w);
    bridge_vm_resend_unacked(vm);
}

static void on_ack(struct bridge_vm *vm, struct vms_msg *m)
{
    int rc = bridge_db_event_ack(&vm->br->db, vmname(vm), m->epoch, m->seq, m->request_id);

    if (rc == 1) {
        vms_debug(vmname(vm), m->request_id, "event epoch %llu seq %llu acked",
                  (unsigned long long)m->epoch, (unsigned long long)m->seq);
        bridge_db_request_release_app_data(&vm->br->db, vmname(vm), m->request_id);
    }
}

void bridge_guest_input(void *opaque, struct vms_channel *c, struct vms_msg *m)
{
    struct bridge_vm *vm = opaque;
    (void)c;

    switch (m->type) {
    case VMS_MSG_HELLO:
        on_hello(vm, m);
        break;
    case VMS_MSG_REQUEST:
        on_request(vm, m);
        break;
    case VMS_MSG_ACK:
        on_ack(vm, m);
        break;
    case VMS_MSG_READY:
        bridge_prepare_ready(vm, m);
        break;
    default:
        vms_warn(vmname(vm), NULL, "port A: unexpected %s from the guest: ignored",
                 vms_msg_type_name(m->type));
        break;
    }
    explicit_bzero(m->secret, sizeof(m->secret));
}
