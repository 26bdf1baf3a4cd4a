/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of what issue 14 and issue 13 (items 12) added to the bridge core, with a real
 * SQLite file and the fake backend: rights limited to a guest uid (and the uid journaled),
 * states owned by their app (restore-any, delete-any), follow-ups inside a restore, delete
 * completions that name the state, richer host info, and the catalogue reconciled with the
 * hypervisor's snapshot list (lost, foreign, restore-foreign).
 */
#include "config.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "rights.h"
#include "test-bridge-fixture.h"

static const char *conf_text =
    "[vm vm1]\nport_a=/nonexistent/a\nport_b=/nonexistent/b\nqmp=/nonexistent/q\nnodes=disk0\n"
    "max_states=8\nmax_pending=4\nmem_max=1G\nmem_min=64M\n"
    "[vm vm2]\nport_a=/nonexistent/a2\nport_b=/nonexistent/b2\nqmp=/nonexistent/q2\nnodes=disk0\n";

static void setup(void)
{
    bfx_setup(conf_text);
}

static void teardown(void)
{
    bfx_teardown();
}

TestSuite(rights, .init = setup, .fini = teardown);

struct req {
    const char *op, *principal, *app_id, *state;
    long uid; /* -1: no uid field (an older helper) */
    const struct vms_followup *followups;
    size_t n_followups;
    const char *mode; /* set-memory */
};

/* Send @q into vm1 with a fresh id (written to @id). */
static void send_req(char id[VMS_REQUEST_ID_LEN + 1], const struct req *q)
{
    struct vms_msg m;

    snprintf(id, VMS_REQUEST_ID_LEN + 1, "%032x", ++id_counter);
    vms_msg_init(&m, VMS_MSG_REQUEST);
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, id);
    vms_msg_set_str(&m, VMS_F_OP, q->op);
    vms_msg_set_str(&m, VMS_F_APP_ID, q->app_id ? q->app_id : "org.example.A");
    vms_msg_set_str(&m, VMS_F_PRINCIPAL, q->principal ? q->principal : "app");
    vms_msg_set_str(&m, VMS_F_SECRET, "s3cret");
    if (q->state)
        vms_msg_set_str(&m, VMS_F_STATE_ID, q->state);
    if (q->uid >= 0)
        vms_msg_set_u64(&m, VMS_F_UID, (uint64_t)q->uid);
    if (!strcmp(q->op, "set-memory"))
        vms_msg_set_u64(&m, VMS_F_BYTES, 128u << 20);
    if (q->mode)
        vms_msg_set_str(&m, VMS_F_MODE, q->mode);
    for (size_t i = 0; i < q->n_followups; i++)
        cr_assert_eq(vms_msg_add_followup(&m, q->followups[i].op, q->followups[i].arg), 0);
    bridge_guest_input(&vm1, &vm1.a.ch, &m);
    vms_msg_clear(&m);
}

/* The status of @id's Reply, or Event when answered at once (after draining port B). */
static uint32_t reply_status(const char *id)
{
    const struct vms_msg *r;

    drain(&in1);
    r = answer_of(id);
    cr_assert_not_null(r, "no answer for %s", id);
    return r->status;
}

/* App org.example.A saves through principal "app"; returns the new state's id. */
static void save_state(char *state, size_t len)
{
    char id[VMS_REQUEST_ID_LEN + 1];
    const struct vms_msg *ev;

    send_req(id, &(struct req){.op = "save", .uid = 1000});
    cr_assert_eq(reply_status(id), 0);
    fake_finish(VMS_STATUS_OK);
    drain(&in1);
    ev = find(VMS_MSG_EVENT, id);
    cr_assert_not_null(ev);
    cr_assert_eq(ev->status, 0);
    cr_assert(vms_msg_has(ev, VMS_F_CREATOR), "a save's completion names its creator");
    cr_assert_str_eq(ev->creator, "org.example.A");
    snprintf(state, len, "%s", ev->state_id);
}

Test(rights, right_limited_to_a_guest_uid)
{
    char id[VMS_REQUEST_ID_LEN + 1], hash[crypto_pwhash_STRBYTES];
    struct bridge_request r;
    const struct vms_msg *rep;

    cr_assert_eq(bridge_secret_hash("s3cret", BRIDGE_PWHASH_OPS_TEST, BRIDGE_PWHASH_MEM_TEST, hash),
                 0);
    cr_assert_eq(bridge_db_principal_add(&br.db, "u1000", hash), 0);
    cr_assert_eq(bridge_db_right_grant_uid(&br.db, "u1000", "vm1", "save", 1000), 0);
    send_req(id, &(struct req){.op = "save", .principal = "u1000", .uid = 1000});
    cr_assert_eq(reply_status(id), 0, "the uid the right names is refused");
    cr_assert_eq(bridge_db_request_find(&br.db, "vm1", id, &r), 1);
    cr_assert_eq(r.uid, 1000, "the uid is journaled with the request");
    bridge_request_clear(&r);
    fake_finish(VMS_STATUS_OK);
    send_req(id, &(struct req){.op = "save", .principal = "u1000", .uid = 0});
    cr_assert_eq(reply_status(id), VMS_STATUS_ERR_DENIED, "uid 0 used a right limited to 1000");
    rep = find(VMS_MSG_REPLY, id);
    cr_assert(strstr(rep->message, "limited to other guest uids"), "%s", rep->message);
    send_req(id, &(struct req){.op = "save", .principal = "u1000", .uid = -1});
    cr_assert_eq(reply_status(id), VMS_STATUS_ERR_DENIED, "a request without a uid matched");
    cr_assert_eq(bridge_db_request_find(&br.db, "vm1", id, &r), 1);
    cr_assert_eq(r.uid, -1);
    bridge_request_clear(&r);
}

/* Issue 13, item 12: one app cannot restore or delete another app's state without the
 * explicit right ("all" does not include it). */
Test(rights, another_apps_state_needs_restore_any_or_delete_any)
{
    char state[VMS_STR_MAX + 1], id[VMS_REQUEST_ID_LEN + 1];
    struct bridge_state_owner owner;
    const struct vms_msg *rep;

    save_state(state, sizeof(state));
    cr_assert_eq(bridge_db_state_owner(&br.db, "vm1", state, &owner), 1);
    cr_assert_str_eq(owner.app_id, "org.example.A");
    cr_assert_str_eq(owner.principal, "app");
    cr_assert_str_eq(owner.status, "ok");

    send_req(id,
             &(struct req){.op = "delete", .app_id = "org.example.B", .state = state, .uid = 1000});
    cr_assert_eq(reply_status(id), VMS_STATUS_ERR_DENIED);
    rep = find(VMS_MSG_REPLY, id);
    cr_assert(strstr(rep->message, "delete-any"), "%s", rep->message);
    send_req(
        id, &(struct req){.op = "restore", .app_id = "org.example.B", .state = state, .uid = 1000});
    cr_assert_eq(reply_status(id), VMS_STATUS_ERR_DENIED);
    cr_assert(strstr(find(VMS_MSG_REPLY, id)->message, "restore-any"));
    cr_assert_eq(fake.calls, 1, "a refused request reached the hypervisor");

    cr_assert_eq(bridge_db_right_grant(&br.db, "app", "vm1", BRIDGE_RIGHT_RESTORE_ANY), 0);
    send_req(
        id, &(struct req){.op = "restore", .app_id = "org.example.B", .state = state, .uid = 1000});
    cr_assert_eq(reply_status(id), 0, "restore-any granted but refused");
    fake_finish(VMS_STATUS_OK);
    cr_assert_eq(bridge_db_right_grant(&br.db, "app", "vm1", BRIDGE_RIGHT_DELETE_ANY), 0);
    send_req(id,
             &(struct req){.op = "delete", .app_id = "org.example.B", .state = state, .uid = 1000});
    cr_assert_eq(reply_status(id), 0);
    fake_finish(VMS_STATUS_OK);
    drain(&in1);
    {
        const struct vms_msg *ev = find(VMS_MSG_EVENT, id);
        cr_assert_not_null(ev);
        cr_assert_eq(ev->status, 0);
        /* the delete's completion describes the state for StateDeleted */
        cr_assert_str_eq(ev->creator, "org.example.A");
        cr_assert_str_eq(ev->state_id, state);
    }
}

Test(rights, followups_checked_before_anything_runs_then_run_inside_the_restore)
{
    char state[VMS_STR_MAX + 1], id[VMS_REQUEST_ID_LEN + 1];
    const struct vms_followup fu[] = {{"set-memory", 256u << 20}, {"hostinfo", 0}};
    const struct vms_followup too_big[] = {{"set-memory", 4ull << 30}};
    const struct vms_followup not_here[] = {{"save", 0}};
    const struct vms_msg *ev;
    struct bridge_request r;
    int calls;

    save_state(state, sizeof(state));
    calls = fake.calls;
    /* "saver" may save but not set-memory: the whole restore is refused, nothing runs */
    cr_assert_eq(bridge_db_right_grant(&br.db, "saver", "vm1", "restore"), 0);
    send_req(id, &(struct req){.op = "restore",
                               .principal = "saver",
                               .state = state,
                               .uid = 1000,
                               .followups = fu,
                               .n_followups = 2});
    cr_assert_eq(reply_status(id), VMS_STATUS_ERR_DENIED);
    cr_assert(strstr(find(VMS_MSG_REPLY, id)->message, "set-memory"));
    send_req(
        id,
        &(struct req){
            .op = "restore", .state = state, .uid = 1000, .followups = too_big, .n_followups = 1});
    cr_assert_eq(reply_status(id), VMS_STATUS_ERR_INVALID, "set-memory beyond mem_max");
    send_req(
        id,
        &(struct req){
            .op = "restore", .state = state, .uid = 1000, .followups = not_here, .n_followups = 1});
    cr_assert_eq(reply_status(id), VMS_STATUS_ERR_INVALID, "a save inside a restore");
    send_req(id, &(struct req){.op = "list", .uid = 1000, .followups = fu, .n_followups = 1});
    cr_assert_eq(reply_status(id), VMS_STATUS_ERR_INVALID, "follow-ups outside a restore");
    cr_assert_eq(fake.calls, calls, "a refused restore reached the hypervisor");

    send_req(id,
             &(struct req){
                 .op = "restore", .state = state, .uid = 1000, .followups = fu, .n_followups = 2});
    cr_assert_eq(reply_status(id), 0);
    cr_assert_eq(bridge_db_request_find(&br.db, "vm1", id, &r), 1);
    cr_assert_str_eq(r.followups, "set-memory=268435456 hostinfo=0");
    bridge_request_clear(&r);
    cr_assert_eq(fake.last_op, VMS_OP_RESTORE);
    cr_assert_eq(fake.paused_loads, 1, "a restore with follow-ups loads with the guest paused");
    fake_finish(VMS_STATUS_OK); /* the state is loaded */
    drain(&in1);
    cr_assert_null(find(VMS_MSG_TIMELINE, NULL), "timeline before the follow-ups ran");
    cr_assert_eq(fake.last_op, VMS_OP_SET_MEMORY, "set-memory did not run after the load");
    cr_assert(fake.last_paused, "set-memory ran after the guest resumed");
    fake_finish(VMS_STATUS_ERR_BACKEND); /* an error in a follow-up does not undo the restore */
    cr_assert_eq(fake.last_op, VMS_OP_HOSTINFO);
    cr_assert(fake.last_paused, "hostinfo ran after the guest resumed");
    fake_finish(VMS_STATUS_OK);
    cr_assert_str_eq(fake.last_tag, "cont", "the guest is resumed once the follow-ups ran");
    drain(&in1);
    cr_assert_null(find(VMS_MSG_TIMELINE, NULL), "timeline before the guest resumed");
    fake_finish(VMS_STATUS_OK); /* resumed; the failed set-memory is not followed again */
    drain(&in1);
    cr_assert_not_null(find(VMS_MSG_TIMELINE, NULL));
    ev = find(VMS_MSG_EVENT, id);
    cr_assert_not_null(ev);
    cr_assert_eq(ev->status, 0, "the restore itself succeeded");
    cr_assert_eq(ev->n_results, 2);
    cr_assert_str_eq(ev->results[0].op, "set-memory");
    cr_assert_eq(ev->results[0].status, VMS_STATUS_ERR_BACKEND);
    cr_assert_str_eq(ev->results[1].op, "hostinfo");
    cr_assert_eq(ev->results[1].status, 0);
    cr_assert(vms_msg_has(ev, VMS_F_MEM_BYTES));
    cr_assert(vms_msg_has(ev, VMS_F_BRIDGE_VERSION));
    cr_assert(vms_msg_has(ev, VMS_F_QUOTAS));
    cr_assert(vms_msg_has(ev, VMS_F_MEM_MAX));
    cr_assert_eq(ev->mem_max, 1ull << 30);
}

Test(rights, hostinfo_says_what_the_principal_may_do_and_the_quotas)
{
    char id[VMS_REQUEST_ID_LEN + 1];
    const struct vms_msg *ev;
    int states = -1;

    send_req(id, &(struct req){.op = "hostinfo", .principal = "app", .uid = 7});
    cr_assert_eq(reply_status(id), 0);
    fake_finish(VMS_STATUS_OK);
    drain(&in1);
    ev = find(VMS_MSG_EVENT, id);
    cr_assert_not_null(ev);
    cr_assert_str_eq(ev->ops, "save restore list delete hostinfo set-memory suspend");
    cr_assert(vms_msg_has(ev, VMS_F_HOST_MEM_TOTAL) && ev->host_mem_total > 0);
    cr_assert(vms_msg_has(ev, VMS_F_HOST_CPUS) && ev->host_cpus > 0);
    /* the VM as the backend describes it */
    cr_assert(vms_msg_has(ev, VMS_F_VCPUS) && ev->vcpus == 2);
    cr_assert(vms_msg_has(ev, VMS_F_MEM_BOOT) && ev->mem_boot == 128u << 20);
    cr_assert_str_eq(ev->hypervisor_version, "QEMU 7.2.0");
    cr_assert_eq(ev->mem_min, 64u << 20);
    for (size_t i = 0; i < ev->n_quotas; i++)
        if (!strcmp(ev->quotas[i].name, "states")) {
            cr_assert_eq(ev->quotas[i].limit, 8);
            states = (int)ev->quotas[i].used;
        }
    cr_assert_eq(states, 0);
}

/* A hostinfo answered at once (its figures known) lists the operations its principal may ask
 * for the request's uid, read once with the right it was judged on, and the VM's usage. */
Test(rights, hostinfo_answered_at_once_lists_the_rights_of_its_uid_and_the_usage)
{
    char id[VMS_REQUEST_ID_LEN + 1], state[VMS_STR_MAX + 1], hash[crypto_pwhash_STRBYTES];
    const struct vms_msg *ev, *rep;
    int seen = 0;

    save_state(state, sizeof(state));
    send_req(id, &(struct req){.op = "hostinfo", .uid = 7}); /* the figures, from the backend */
    cr_assert_eq(reply_status(id), 0);
    fake_finish(VMS_STATUS_OK);
    cr_assert_eq(bridge_secret_hash("s3cret", BRIDGE_PWHASH_OPS_TEST, BRIDGE_PWHASH_MEM_TEST, hash),
                 0);
    cr_assert_eq(bridge_db_principal_add(&br.db, "u7", hash), 0);
    cr_assert_eq(bridge_db_right_grant_uid(&br.db, "u7", "vm1", "hostinfo", 7), 0);
    cr_assert_eq(bridge_db_right_grant_uid(&br.db, "u7", "vm1", "restore", 7), 0);
    cr_assert_eq(bridge_db_right_grant_uid(&br.db, "u7", "vm1", "list", -1), 0);
    cr_assert_eq(bridge_db_right_grant_uid(&br.db, "u7", "vm1", "save", 8), 0);

    send_req(id, &(struct req){.op = "hostinfo", .principal = "u7", .uid = 7});
    drain(&in1);
    cr_assert_null(find(VMS_MSG_REPLY, id), "not answered at once");
    ev = find(VMS_MSG_EVENT, id);
    cr_assert_not_null(ev);
    cr_assert_eq(ev->status, 0);
    cr_assert_eq(ev->seq, 0, "not answered at once");
    cr_assert_str_eq(ev->ops, "restore list hostinfo", "uid 8's save was listed, or a right lost");
    for (size_t i = 0; i < ev->n_quotas; i++) {
        const struct vms_quota *q = &ev->quotas[i];
        int bit = !strcmp(q->name, "states")           ? 1
                  : !strcmp(q->name, "pending")        ? 2
                  : !strcmp(q->name, "app-data-bytes") ? 4
                                                       : 0;

        seen |= bit;
        cr_assert(bit != 1 || (q->limit == 8 && q->used == 1), "states %llu/%llu",
                  (unsigned long long)q->used, (unsigned long long)q->limit);
        cr_assert(bit != 2 || (q->limit == 4 && q->used == 0), "pending %llu/%llu",
                  (unsigned long long)q->used, (unsigned long long)q->limit);
        cr_assert(bit != 4 || q->used == 0, "app data %llu", (unsigned long long)q->used);
    }
    cr_assert_eq(seen, 7, "a quota is missing");

    send_req(id, &(struct req){.op = "hostinfo", .principal = "u7", .uid = 8});
    cr_assert_eq(reply_status(id), VMS_STATUS_ERR_DENIED, "uid 8 used uid 7's hostinfo");
    rep = answer_of(id);
    cr_assert(strstr(rep->message, "limited to other guest uids"), "%s", rep->message);
}

/* Issue 14: the catalogue against the hypervisor's snapshot list. */
Test(rights, catalogue_reconciled_lost_and_foreign)
{
    char state[VMS_STR_MAX + 1], id[VMS_REQUEST_ID_LEN + 1];
    struct bridge_state_owner owner;
    const char *names[] = {"made-in-qemu"};

    save_state(state, sizeof(state));
    cr_assert(fake.lists > 0, "no reconciliation after the save");
    /* the hypervisor lost our state and holds one we did not make */
    cr_assert_eq(fake_list_finish(names, 1), 1);
    cr_assert_eq(bridge_db_state_owner(&br.db, "vm1", state, &owner), 1);
    cr_assert_str_eq(owner.status, "lost");
    cr_assert_eq(bridge_db_state_owner(&br.db, "vm1", "made-in-qemu", &owner), 1);
    cr_assert_str_eq(owner.status, "foreign");

    send_req(id, &(struct req){.op = "restore", .state = state, .uid = 1000});
    cr_assert_eq(reply_status(id), VMS_STATUS_ERR_NOT_FOUND);
    cr_assert(strstr(find(VMS_MSG_REPLY, id)->message, "lost"), "%s",
              find(VMS_MSG_REPLY, id)->message);
    send_req(id, &(struct req){.op = "restore", .state = "made-in-qemu", .uid = 1000});
    cr_assert_eq(reply_status(id), VMS_STATUS_ERR_DENIED,
                 "a foreign snapshot restored without "
                 "restore-foreign");
    cr_assert_eq(bridge_db_right_grant(&br.db, "app", "vm1", BRIDGE_RIGHT_RESTORE_FOREIGN), 0);
    send_req(id, &(struct req){.op = "restore", .state = "made-in-qemu", .uid = 1000});
    cr_assert_eq(reply_status(id), 0);
    cr_assert_str_eq(fake.last_tag, "made-in-qemu");
    fake_finish(VMS_STATUS_OK);
    /* a lost state is deleted from the list without asking the hypervisor */
    send_req(id, &(struct req){.op = "delete", .state = state, .uid = 1000});
    cr_assert_eq(reply_status(id), 0);
    drain(&in1);
    cr_assert_eq(bridge_db_state_owner(&br.db, "vm1", state, &owner), 0);
}

/* Issue 14: a set-memory whose target the guest's driver reaches only once it runs is given
 * while paused, then followed again after the resume for the size reached. */
Test(rights, set_memory_followup_given_while_paused_then_followed_after_the_resume)
{
    char state[VMS_STR_MAX + 1], id[VMS_REQUEST_ID_LEN + 1];
    const struct vms_followup fu[] = {{"set-memory", 256u << 20}};
    const struct vms_msg *ev;

    save_state(state, sizeof(state));
    send_req(id,
             &(struct req){
                 .op = "restore", .state = state, .uid = 1000, .followups = fu, .n_followups = 1});
    cr_assert_eq(reply_status(id), 0);
    fake_finish(VMS_STATUS_OK); /* loaded, paused */
    cr_assert(fake.last_op == VMS_OP_SET_MEMORY && fake.last_paused);
    fake_finish(VMS_STATUS_OK); /* the target is given */
    cr_assert_str_eq(fake.last_tag, "cont");
    fake_finish(VMS_STATUS_OK);
    cr_assert(fake.last_op == VMS_OP_SET_MEMORY && !fake.last_paused,
              "the accepted target is followed after the resume");
    drain(&in1);
    cr_assert_null(find(VMS_MSG_EVENT, id), "completion before the size was reached");
    fake_finish(VMS_STATUS_OK);
    drain(&in1);
    ev = find(VMS_MSG_EVENT, id);
    cr_assert_not_null(ev);
    cr_assert_eq(ev->n_results, 1);
    cr_assert_eq(ev->results[0].status, 0);
    cr_assert_eq(ev->bytes, 256u << 20);
    cr_assert_eq(ev->mem_bytes, 128u << 20, "the size reached, as the backend said");
}

/* Issue 14: the offline mode needs a managed VM; an unknown mode is invalid. Neither reaches
 * the hypervisor. */
Test(rights, offline_set_memory_refused_on_an_attached_vm)
{
    char id[VMS_REQUEST_ID_LEN + 1];
    int calls = fake.calls;

    send_req(id, &(struct req){.op = "set-memory", .uid = 0, .mode = "offline"});
    cr_assert_eq(reply_status(id), VMS_STATUS_ERR_UNSUPPORTED);
    cr_assert(strstr(find(VMS_MSG_REPLY, id)->message, "managed = yes"));
    send_req(id, &(struct req){.op = "set-memory", .uid = 0, .mode = "sideways"});
    cr_assert_eq(reply_status(id), VMS_STATUS_ERR_INVALID);
    send_req(id, &(struct req){.op = "set-memory", .uid = 0, .mode = "online"});
    cr_assert_eq(reply_status(id), 0, "online is the default mode");
    cr_assert_eq(fake.calls, calls + 1, "only the online set-memory reached the hypervisor");
    cr_assert_eq(fake.last_op, VMS_OP_SET_MEMORY);
}
