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
 * unsupported) are journaled like any completion, without their app data,
 * and only while the VM is under max_journal_bytes.
 *
 * Every string the guest chose goes through vms_esc() before a log line, and
 * every line a guest can cause at will goes through the VM's per-reason log
 * rate limit (bridge_vm_log).
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

#include "managed.h"
#include "rights.h"
#include "verify.h"
#include "vms-log.h"

const char *const bridge_log_reason_name[BRIDGE_LOG__COUNT] = {
    [BRIDGE_LOG_REFUSED] = "refused requests",     [BRIDGE_LOG_UNEXPECTED] = "unexpected messages",
    [BRIDGE_LOG_DUPLICATE] = "duplicate requests", [BRIDGE_LOG_IGNORED] = "ignored messages",
    [BRIDGE_LOG_JOURNAL] = "journal failures",
};

static const char *vmname(const struct bridge_vm *vm)
{
    return vm->cfg->name;
}

/* Why a request could not be journaled, for the guest's Reply and Event. */
static const char *journal_failure(struct bridge_vm *vm)
{
    return bridge_db_full(&vm->br->db)
               ? "the host's journal is full (disk full): nothing was done; try again later"
               : "the host's journal failed: nothing was done; try again later";
}

/* What one more request with @app_data_len bytes may add to the journal: its row and event. */
#define JOURNAL_REQUEST_COST(app_data_len) (2 * (uint64_t)(app_data_len) + 4096)

/* 1 if @vm's journal has room for a request of @app_data_len bytes (max_journal_bytes). */
static int journal_has_room(struct bridge_vm *vm, size_t app_data_len, int64_t *used)
{
    *used = 0;
    if (!vm->cfg->max_journal_bytes)
        return 1;
    *used = bridge_db_journal_bytes(&vm->br->db, vmname(vm));
    return *used >= 0 &&
           (uint64_t)*used + JOURNAL_REQUEST_COST(app_data_len) <= vm->cfg->max_journal_bytes;
}

static void send_reply(struct bridge_vm *vm, const char *request_id, enum vms_status status,
                       const char *message)
{
    struct vms_msg m;

    /* Replies go out in the order of the requests: the owed ones first */
    if (vm->n_owed)
        bridge_guest_settle(vm);

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
    bridge_vm_log(vm, BRIDGE_LOG_REFUSED, LOG_WARNING, req->request_id,
                  "refused %s from app %s principal %s: %s (%s)", vms_esc(req->op),
                  vms_esc(req->app_id), vms_esc(req->principal), vms_status_name(status),
                  vms_esc(why));
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

/*
 * A refusal after authentication: journaled as refused, with its event, so a
 * replay of the same id gets the same answer. Neither keeps the app data (a
 * refusal must not let a guest store anything it could not store by being
 * accepted). Over max_journal_bytes it is answered without being journaled.
 */
static void refuse_journaled(struct bridge_vm *vm, struct bridge_request *r, enum vms_status status,
                             const char *why, const struct vms_msg *req)
{
    struct vms_msg ev;
    int64_t used;

    if (!journal_has_room(vm, 0, &used)) {
        refuse_unjournaled(vm, req, status, why);
        return;
    }
    vm->stat_refused++;
    bridge_vm_log(vm, BRIDGE_LOG_REFUSED, LOG_WARNING, r->id,
                  "refused %s from app %s principal %s: %s (%s)", vms_op_name(r->op),
                  vms_esc(r->app_id), vms_esc(r->principal), vms_status_name(status), vms_esc(why));
    r->status = BRIDGE_REQ_REFUSED;
    r->result = status;
    snprintf(r->message, sizeof(r->message), "%s", why);
    r->app_data = NULL; /* borrowed from the message: the caller does not free it */
    r->app_data_len = 0;
    if (bridge_db_request_insert(&vm->br->db, r) < 0) {
        refuse_unjournaled(vm, req, VMS_STATUS_ERR_INTERNAL, journal_failure(vm));
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
    unsigned uid_share = cfg->max_pending_per_uid
                             ? cfg->max_pending_per_uid
                             : (cfg->max_pending > 1 ? cfg->max_pending / 2 : cfg->max_pending);
    int pending = 0;
    int64_t bytes;

    if (!journal_has_room(vm, r->app_data_len, &bytes)) {
        if (bytes < 0)
            goto internal;
        snprintf(why, whylen,
                 "journal holds %lld bytes for this VM, the most it may (max_journal_bytes)",
                 (long long)bytes);
        return VMS_STATUS_ERR_QUOTA;
    }
    if (uid_share) {
        int mine = bridge_db_count_pending_uid(db, vmname(vm), r->uid);
        if (mine < 0)
            goto internal;
        if ((unsigned)mine >= uid_share) {
            snprintf(why, whylen,
                     "%d requests pending from this guest user, its share of the VM's "
                     "(max_pending_per_uid)",
                     mine);
            return VMS_STATUS_ERR_QUOTA;
        }
    }

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
    if (!cfg->max_app_data_bytes || !r->app_data_len)
        return VMS_STATUS_OK; /* a request without app data adds none */
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

/* The rate bucket of guest uid @uid in @vm (least recently used slot recycled). */
static struct bridge_bucket *uid_bucket(struct bridge_vm *vm, int64_t uid)
{
    struct bridge_uid_rate *oldest = &vm->uid_rate[0];

    for (int i = 0; i < BRIDGE_UID_SLOTS; i++) {
        struct bridge_uid_rate *s = &vm->uid_rate[i];
        if (s->used > 0 && s->uid == uid) {
            s->used = vm->now > 0 ? vm->now : 1e-9;
            return &s->bucket;
        }
        if (s->used < oldest->used)
            oldest = s;
    }
    memset(oldest, 0, sizeof(*oldest));
    oldest->uid = uid;
    oldest->used = vm->now > 0 ? vm->now : 1e-9;
    return &oldest->bucket;
}

/*
 * Take a request token from the VM's bucket and from the guest uid's share of
 * it, so one app cannot use up the VM's rate. Returns NULL or why not.
 */
static const char *take_rate(struct bridge_vm *vm, int64_t uid)
{
    const struct bridge_vm_config *cfg = vm->cfg;
    unsigned share = cfg->rate_requests_per_uid
                         ? cfg->rate_requests_per_uid
                         : (cfg->rate_requests > 1 ? cfg->rate_requests / 2 : cfg->rate_requests);
    struct bridge_bucket *mine = uid_bucket(vm, uid);

    if (!bridge_bucket_peek(mine, share, cfg->rate_window, vm->now))
        return "too many requests from this guest user (rate_requests_per_uid)";
    if (!bridge_bucket_take(&vm->rate, cfg->rate_requests, cfg->rate_window, vm->now))
        return "too many requests from this VM (rate_requests)";
    bridge_bucket_take(mine, share, cfg->rate_window, vm->now);
    return NULL;
}

/*
 * set-memory's mode: online (absent) or offline, which only a managed VM can do (shut down,
 * resize, boot again) and only to a size a tier it may reserve in can hold. Sets r->mode.
 */
static enum vms_status judge_memory_mode(struct bridge_vm *vm, const struct vms_msg *m,
                                         struct bridge_request *r, char *why, size_t whylen)
{
    int fits;

    if (!vms_msg_has(m, VMS_F_MODE) || !strcmp(m->mode, VMS_MEM_MODE_ONLINE))
        return VMS_STATUS_OK;
    if (strcmp(m->mode, VMS_MEM_MODE_OFFLINE) != 0) {
        snprintf(why, whylen, "set-memory mode '%.32s' unknown (online, offline)", m->mode);
        return VMS_STATUS_ERR_INVALID;
    }
    if (!vm->mgd) {
        snprintf(why, whylen,
                 "offline set-memory needs a VM the host bridge runs (managed = yes): VM %.64s "
                 "is attached, its QEMU is started elsewhere",
                 vmname(vm));
        return VMS_STATUS_ERR_UNSUPPORTED;
    }
    if (vm->ops->vm_create) { /* libvirt's domain XML holds the size, not the bridge */
        snprintf(why, whylen,
                 "offline set-memory is not supported for VM %.64s: libvirt runs it (its "
                 "domain's <memory> says the size)",
                 vmname(vm));
        return VMS_STATUS_ERR_UNSUPPORTED;
    }
    fits = bridge_managed_fits(vm, r->bytes, why, whylen);
    if (fits < 0) {
        snprintf(why, whylen, "database error");
        return VMS_STATUS_ERR_INTERNAL;
    }
    if (!fits)
        return VMS_STATUS_ERR_QUOTA;
    snprintf(r->mode, sizeof(r->mode), "%s", VMS_MEM_MODE_OFFLINE);
    return VMS_STATUS_OK;
}

static void request_authenticated(struct bridge_vm *vm, struct vms_msg *m, enum vms_status st,
                                  int64_t ops_allowed);

/* The guest uid a request names (-1: none). */
static int64_t request_uid(const struct vms_msg *m)
{
    return vms_msg_has(m, VMS_F_UID) ? (int64_t)m->uid : -1;
}

/*
 * Hand @m (a Request whose secret @v is to be verified) to the verifier: the VM then holds
 * its later messages until bridge_guest_verified(). Takes @m's contents (it is left empty).
 * Returns 0, or -1 (no verifier, or it failed: the caller verifies on the loop).
 */
static int verify_off_loop(struct bridge_vm *vm, struct vms_msg *m, struct bridge_auth_verify *v)
{
    struct bridge_verifier *vf = vm->br->verifier;
    struct vms_msg *held;

    if (!vf || !(held = malloc(sizeof(*held))))
        return -1;
    if (bridge_verifier_submit(vf, vm, v) < 0) {
        free(held);
        return -1;
    }
    *held = *m;               /* takes the heap members */
    vms_msg_init(m, m->type); /* so that the caller's clear frees nothing */
    vm->verifying = held;
    return 0;
}

static void judge_request(struct bridge_vm *vm, struct vms_msg *m)
{
    struct bridge_db *db = &vm->br->db;
    struct bridge_request r;
    struct bridge_auth_verify v;
    enum vms_status st;
    enum vms_op op = vms_op_from_name(m->op);
    int64_t uid = request_uid(m), ops_allowed = 0;
    const char *limited;
    int found, pending;

    memset(&r, 0, sizeof(r));
    vm->stat_requests++;
    if (vm->version_refused) {
        bridge_vm_log(vm, BRIDGE_LOG_IGNORED, LOG_WARNING, m->request_id,
                      "request ignored: no common protocol version");
        return;
    }
    limited = take_rate(vm, uid);
    if (limited) {
        refuse_unjournaled(vm, m, VMS_STATUS_ERR_RATE_LIMITED, limited);
        return;
    }
    /* duplicates first: a replayed request must not be judged (or run) again */
    found = bridge_db_request_find(db, vmname(vm), m->request_id, &r);
    if (found < 0) {
        send_reply(vm, m->request_id, VMS_STATUS_ERR_INTERNAL, "journal unavailable");
        return;
    }
    if (found) {
        bridge_vm_log(vm, BRIDGE_LOG_DUPLICATE, LOG_INFO, r.id,
                      "duplicate %s request (status %d): not run again", vms_op_name(r.op),
                      (int)r.status);
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
    /* a secret not verified recently is verified off the loop (verify.h): Argon2id takes
     * ~20 ms, which on the loop would stall every VM */
    st = bridge_auth_start(db, &vm->auth, vmname(vm), m->principal, uid, m->secret, m->op, vm->now,
                           &v, &pending, &ops_allowed);
    explicit_bzero(m->secret, sizeof(m->secret));
    if (pending) {
        if (verify_off_loop(vm, m, &v) == 0) {
            bridge_auth_verify_clear(&v);
            goto out; /* bridge_guest_verified() goes on */
        }
        bridge_auth_verify(&v);
        st = bridge_auth_finish(db, &vm->auth, vmname(vm), m->principal, uid, m->op, vm->now, &v,
                                &ops_allowed);
    }
    request_authenticated(vm, m, st, ops_allowed);
out:
    bridge_request_clear(&r);
}

/* The rest of a request once its secret is judged (@st: bridge_auth_finish()'s answer;
 * @ops_allowed: what it read of the principal's rights for the request's uid, 0 if nothing). */
static void request_authenticated(struct bridge_vm *vm, struct vms_msg *m, enum vms_status st,
                                  int64_t ops_allowed)
{
    struct bridge_db *db = &vm->br->db;
    struct bridge_request r;
    enum vms_op op = vms_op_from_name(m->op);
    char why[VMS_STR_MAX + 1];
    int64_t uid = request_uid(m);
    int rc, answer_now;

    memset(&r, 0, sizeof(r));
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
    r.uid = uid;
    r.ops_allowed = ops_allowed; /* read in this read transaction */

    if (st == VMS_STATUS_ERR_DENIED) {
        snprintf(why, sizeof(why), "principal %.64s has no right '%s' on VM %.64s", r.principal,
                 vms_op_name(op), vmname(vm));
        refuse_journaled(vm, &r, st, why, m);
        goto borrowed;
    }
    /* an answer at once stores nothing and leaves nothing pending: no quota to judge */
    answer_now = bridge_vm_can_answer_now(vm, op);
    st = answer_now ? VMS_STATUS_OK : bridge_quota_check(vm, &r, why, sizeof(why));
    if (st != VMS_STATUS_OK) {
        refuse_journaled(vm, &r, st, why, m);
        goto borrowed;
    }
    /* the uid's share of the right, follow-ups, the state's owner (rights.c) */
    st = bridge_rights_judge(vm, m, &r, why, sizeof(why));
    if (st != VMS_STATUS_OK) {
        refuse_journaled(vm, &r, st, why, m);
        goto borrowed;
    }
    if (answer_now) {
        bridge_vm_answer_now(vm, &r);
        goto borrowed;
    }
    if (op == VMS_OP_SET_MEMORY) {
        if (!vm->cfg->mem_max_bytes) {
            refuse_journaled(vm, &r, VMS_STATUS_ERR_UNSUPPORTED,
                             "set-memory is not enabled for this VM (mem_max)", m);
            goto borrowed;
        }
        if (r.bytes < vm->cfg->mem_min_bytes || r.bytes > vm->cfg->mem_max_bytes) {
            snprintf(why, sizeof(why), "bytes must be within %llu..%llu (mem_min..mem_max)",
                     (unsigned long long)vm->cfg->mem_min_bytes,
                     (unsigned long long)vm->cfg->mem_max_bytes);
            refuse_journaled(vm, &r, VMS_STATUS_ERR_INVALID, why, m);
            goto borrowed;
        }
        st = judge_memory_mode(vm, m, &r, why, sizeof(why));
        if (st != VMS_STATUS_OK) {
            refuse_journaled(vm, &r, st, why, m);
            goto borrowed;
        }
    }
    if (op == VMS_OP_SAVE && new_state_id(r.state_id, sizeof(r.state_id)) < 0) {
        send_reply(vm, r.id, VMS_STATUS_ERR_INTERNAL, "no randomness");
        goto borrowed;
    }
    r.status = BRIDGE_REQ_ACCEPTED;
    bridge_db_reads_end(db); /* it is journaled and queued: the queue may run anything */
    if (!bridge_op_read_only(op) &&
        (vm->sync_failed || (vm->n_owed == BRIDGE_OWED_MAX && bridge_guest_settle(vm) < 0))) {
        /* the journal could not sync the last ones: accept nothing more until it can */
        refuse_unjournaled(vm, m, VMS_STATUS_ERR_INTERNAL, journal_failure(vm));
        goto borrowed;
    }
    /*
     * Committed without an fsync: a read-only request need not survive the host's power loss
     * (the guest asks again); a mutating one reaches the disk before its Reply{ok}, with the
     * journal writes that start it when it runs at once: one fsync (bridge_guest_settle()).
     */
    bridge_db_relaxed_begin(db);
    rc = bridge_db_request_insert(db, &r);
    bridge_db_relaxed_end(db);
    if (rc < 0) {
        /* not accepted, nothing done: the guest is told why, and may try again */
        refuse_unjournaled(vm, m, VMS_STATUS_ERR_INTERNAL, journal_failure(vm));
        goto borrowed;
    }
    /* journaled: a read-only request is answered now, a mutating one once its row is on the
     * disk (bridge_guest_settle()) */
    vms_log(BRIDGE_OP_LOG_LEVEL(op), vmname(vm), r.id,
            "accepted %s from app %s principal %s uid %lld%s%s%s%s", vms_op_name(op),
            vms_esc(r.app_id), vms_esc(r.principal), (long long)r.uid,
            r.state_id[0] ? " state " : "", vms_esc(r.state_id), r.followups[0] ? " then " : "",
            vms_esc(r.followups));
    if (bridge_op_read_only(op)) {
        send_reply(vm, r.id, VMS_STATUS_OK, NULL);
    } else {
        bridge_db_defer(db);
        memcpy(vm->reply_owed[vm->n_owed++], r.id, sizeof(vm->reply_owed[0]));
    }
    bridge_queue_push(&vm->queue, r.id);
    bridge_vm_kick(vm); /* settles the Replies before it starts anything */
    if (!vm->br->group_commit)
        bridge_guest_settle(vm); /* else (queued behind another) now, or at the turn's end */
borrowed:
    r.app_data = NULL;
    r.app_data_len = 0;
    bridge_request_clear(&r);
}

static void on_hello(struct bridge_vm *vm, struct vms_msg *m)
{
    struct vms_msg w;
    uint32_t min = vms_msg_has(m, VMS_F_MIN_VERSION) ? m->min_version : m->version;
    uint32_t version = vms_proto_negotiate(m->version, min);
    uint64_t nonce;

    if (vm->restoring) {
        /* a guest that runs during a restore is the restored one (libvirt's revert starts a
         * new QEMU): a Welcome now would carry the old epoch. The Timeline that ends the
         * restore makes its helper say Hello again. */
        vms_debug(vmname(vm), vm->running, "hello during a restore: answered after it");
        return;
    }
    if (!bridge_bucket_take(&vm->hello_rate, BRIDGE_HELLO_BURST, BRIDGE_HELLO_WINDOW, vm->now)) {
        bridge_vm_log(vm, BRIDGE_LOG_IGNORED, LOG_DEBUG, NULL,
                      "hello ignored: more than %d in %d s", BRIDGE_HELLO_BURST,
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

/*
 * A TimeProbe: the host's real time, for the helper's clock refinement. Nothing is stored
 * or resent (what a Hello would do); a guest that probes too often gets no answer (its
 * refinement ends at its own deadline).
 */
static void on_time_probe(struct bridge_vm *vm, struct vms_msg *m)
{
    struct vms_msg t;

    if (!(vm->caps & VMS_CAP_TIME_PROBE)) {
        bridge_vm_log(vm, BRIDGE_LOG_UNEXPECTED, LOG_WARNING, NULL,
                      "port A: TimeProbe from a session that did not announce it: ignored");
        return;
    }
    if (!bridge_bucket_take(&vm->probe_rate, BRIDGE_PROBE_BURST, BRIDGE_PROBE_WINDOW, vm->now)) {
        bridge_vm_log(vm, BRIDGE_LOG_IGNORED, LOG_DEBUG, NULL,
                      "time probe ignored: more than %d in %d s", BRIDGE_PROBE_BURST,
                      BRIDGE_PROBE_WINDOW);
        return;
    }
    vms_msg_init(&t, VMS_MSG_TIME);
    vms_msg_set_u64(&t, VMS_F_NONCE, m->nonce);
    bridge_clock_stamp(vm, &t); /* last: the guest adds half the round trip to it */
    bridge_vm_send(vm, &t);
    vms_msg_clear(&t);
}

/*
 * An ack needs no fsync: if the host loses it, the event is resent and the guest ignores the
 * copy (epoch, seq). The ack and the release of the request's app data: one transaction.
 */
static void on_ack(struct bridge_vm *vm, struct vms_msg *m)
{
    struct bridge_db *db = &vm->br->db;
    int rc;

    if (!m->seq)
        return; /* an unjournaled event's (older helpers ack them): nothing to mark */
    bridge_db_relaxed_begin(db);
    if (bridge_db_begin(db) < 0)
        goto out;
    rc = bridge_db_event_ack(db, vmname(vm), m->epoch, m->seq, m->request_id);
    if (rc == 1 && bridge_db_request_release_app_data(db, vmname(vm), m->request_id) < 0)
        rc = -1;
    if (rc < 0 || bridge_db_commit(db) < 0) {
        bridge_db_rollback(db);
        goto out;
    }
    if (rc == 1)
        vms_debug(vmname(vm), m->request_id, "event epoch %llu seq %llu acked",
                  (unsigned long long)m->epoch, (unsigned long long)m->seq);
out:
    bridge_db_relaxed_end(db);
}

/* Hold @m (its contents taken) until the VM's pending verification is done. */
static void hold(struct bridge_vm *vm, struct vms_msg *m)
{
    struct vms_msg *h;

    if (vm->n_held >= BRIDGE_HELD_MAX || !(h = malloc(sizeof(*h)))) {
        if (m->type == VMS_MSG_REQUEST) {
            explicit_bzero(m->secret, sizeof(m->secret));
            refuse_unjournaled(vm, m, VMS_STATUS_ERR_RATE_LIMITED,
                               "too many messages wait for this VM's secret verification "
                               "(" BRIDGE_HELD_MAX_STR " at most): try again");
        } else {
            bridge_vm_log(vm, BRIDGE_LOG_IGNORED, LOG_WARNING, m->request_id,
                          "%s dropped: " BRIDGE_HELD_MAX_STR
                          " messages already wait for a secret verification",
                          vms_msg_type_name(m->type));
        }
        return;
    }
    *h = *m;
    vms_msg_init(m, m->type);
    vm->held[vm->n_held++] = h;
}

static void dispatch(struct bridge_vm *vm, struct vms_msg *m)
{
    switch (m->type) {
    case VMS_MSG_HELLO:
        on_hello(vm, m);
        break;
    case VMS_MSG_REQUEST:
        /* a read-only request reads the journal ~9 times and, answered at once, writes
         * nothing: one read transaction for all (db.c ends it before a write of its own;
         * request_authenticated() before what writes through other statements) */
        if (bridge_op_read_only(vms_op_from_name(m->op)))
            bridge_db_reads_begin(&vm->br->db);
        judge_request(vm, m);
        bridge_db_reads_end(&vm->br->db);
        break;
    case VMS_MSG_ACK:
        on_ack(vm, m);
        break;
    case VMS_MSG_READY:
        bridge_prepare_ready(vm, m);
        break;
    case VMS_MSG_TIME_PROBE:
        on_time_probe(vm, m);
        break;
    default:
        bridge_vm_log(vm, BRIDGE_LOG_UNEXPECTED, LOG_WARNING, NULL,
                      "port A: unexpected %s from the guest: ignored", vms_msg_type_name(m->type));
        break;
    }
    explicit_bzero(m->secret, sizeof(m->secret));
}

/* Run the held messages in order, until one starts a verification again. */
static void release_held(struct bridge_vm *vm)
{
    while (!vm->verifying && vm->n_held) {
        struct vms_msg *m = vm->held[0];

        memmove(&vm->held[0], &vm->held[1], (vm->n_held - 1) * sizeof(vm->held[0]));
        vm->held[--vm->n_held] = NULL;
        dispatch(vm, m);
        vms_msg_clear(m);
        free(m);
    }
}

void bridge_guest_verified(void *owner, struct bridge_auth_verify *v)
{
    struct bridge_vm *vm = owner;
    struct vms_msg *m = vm->verifying;
    enum vms_status st;
    int64_t ops_allowed = 0;

    vm->verifying = NULL;
    if (!m) {
        bridge_auth_verify_clear(v);
        return;
    }
    st = bridge_auth_finish(&vm->br->db, &vm->auth, vmname(vm), m->principal, request_uid(m), m->op,
                            vm->now, v, &ops_allowed);
    request_authenticated(vm, m, st, ops_allowed);
    vms_msg_clear(m);
    free(m);
    release_held(vm);
}

int bridge_guest_settle(struct bridge_vm *vm)
{
    unsigned n = vm->n_owed;

    if (!n)
        return 0;
    if (bridge_db_barrier(&vm->br->db) < 0) {
        bridge_vm_log(vm, BRIDGE_LOG_JOURNAL, LOG_ERR, vm->reply_owed[0],
                      "cannot sync the journal: %u Replies wait, retried every %.0f s", n,
                      BRIDGE_JOURNAL_RETRY);
        vm->sync_failed = 1;
        if (!vm->journal_retry_at)
            vm->journal_retry_at = vm->now + BRIDGE_JOURNAL_RETRY;
        return -1;
    }
    vm->sync_failed = 0;
    vm->n_owed = 0; /* first: send_reply() settles what is owed */
    for (unsigned i = 0; i < n; i++)
        send_reply(vm, vm->reply_owed[i], VMS_STATUS_OK, NULL);
    return 0;
}

void bridge_guest_settle_all(struct bridge *br)
{
    for (size_t i = 0; i < br->n_vms; i++)
        if (br->vms[i].n_owed)
            bridge_guest_settle(&br->vms[i]);
}

void bridge_guest_forget(struct bridge_vm *vm)
{
    vm->n_owed = 0;
    bridge_verifier_cancel(vm->br ? vm->br->verifier : NULL, vm);
    if (vm->verifying) {
        vms_msg_clear(vm->verifying);
        free(vm->verifying);
        vm->verifying = NULL;
    }
    while (vm->n_held) {
        vms_msg_clear(vm->held[--vm->n_held]);
        free(vm->held[vm->n_held]);
        vm->held[vm->n_held] = NULL;
    }
}

void bridge_guest_input(void *opaque, struct vms_channel *c, struct vms_msg *m)
{
    struct bridge_vm *vm = opaque;
    (void)c;

    /* a request of this VM waits for its secret's verification: the rest waits behind it
     * (not a time probe: its round trip is the measurement, and order does not matter) */
    if (vm->verifying && m->type != VMS_MSG_TIME_PROBE)
        hold(vm, m);
    else
        dispatch(vm, m);
    explicit_bzero(m->secret, sizeof(m->secret));
}
