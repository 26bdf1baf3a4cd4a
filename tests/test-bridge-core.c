/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the bridge core with a real SQLite file in a temporary
 * directory and a fake backend: auth and rate limits, the journal and its
 * migrations, the queue, the request flow (accept, duplicate, complete, ack,
 * resend), quotas, VM isolation, and the timeline reconciliation after a
 * restore. Port B is a socketpair whose far end the test decodes.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "test-bridge-fixture.h"

static const char *conf_text =
    "[vm vm1]\nport_a=/nonexistent/a\nport_b=/nonexistent/b\nqmp=/nonexistent/q\nnodes=disk0\n"
    "max_states=3\nmax_pending=4\nmax_pending_per_uid=4\nmax_app_data_bytes=100\nauth_fail_max="
    "3\nauth_fail_window=60\n"
    "mem_max=1G\nmem_min=64M\n"
    "[vm vm2]\nport_a=/nonexistent/a2\nport_b=/nonexistent/b2\nqmp=/nonexistent/q2\nnodes=disk0\n"
    "rate_requests_per_uid=60\n";

static void setup(void)
{
    bfx_setup(conf_text);
}

static void teardown(void)
{
    bfx_teardown();
}

static void hello(struct bridge_vm *vm)
{
    hello_caps(vm, VMS_CAP_ALL);
}

/* Save through the whole path, backend ok; returns the state id. */
static void do_save(char state[VMS_STR_MAX + 1], char id[VMS_REQUEST_ID_LEN + 1], const char *data)
{
    const struct vms_msg *ev;
    id[0] = '\0';
    request(&vm1, id, "save", "app", "s3cret", NULL, data);
    cr_assert_eq(fake.last_op, VMS_OP_SAVE);
    fake_finish(VMS_STATUS_OK);
    drain(&in1);
    ev = find(VMS_MSG_EVENT, id);
    cr_assert_not_null(ev);
    cr_assert_eq(ev->status, 0);
    snprintf(state, VMS_STR_MAX + 1, "%s", ev->state_id);
}

TestSuite(bridge, .init = setup, .fini = teardown);

Test(bridge, queue_order_and_dedup)
{
    struct bridge_queue q;
    char out[VMS_REQUEST_ID_LEN + 1];
    bridge_queue_init(&q);
    cr_assert_eq(bridge_queue_push(&q, "00000000000000000000000000000001"), 0);
    cr_assert_eq(bridge_queue_push(&q, "00000000000000000000000000000002"), 0);
    cr_assert_eq(bridge_queue_push(&q, "00000000000000000000000000000001"), 1);
    cr_assert_eq(bridge_queue_push(&q, "not-an-id"), -1);
    cr_assert_eq(q.len, 2);
    cr_assert_eq(bridge_queue_pop(&q, out), 1);
    cr_assert_str_eq(out, "00000000000000000000000000000001");
    cr_assert_eq(bridge_queue_pop(&q, out), 1);
    cr_assert_str_eq(out, "00000000000000000000000000000002");
    cr_assert_eq(bridge_queue_pop(&q, out), 0);
    /* push_front: first out, also into an empty queue; tail stays right */
    cr_assert_eq(bridge_queue_push_front(&q, "00000000000000000000000000000003"), 0);
    cr_assert_eq(bridge_queue_push(&q, "00000000000000000000000000000004"), 0);
    cr_assert_eq(bridge_queue_push_front(&q, "00000000000000000000000000000005"), 0);
    cr_assert_eq(bridge_queue_push_front(&q, "00000000000000000000000000000004"), 1);
    cr_assert_eq(bridge_queue_push_front(&q, "bad"), -1);
    const char *want[] = {"00000000000000000000000000000005", "00000000000000000000000000000003",
                          "00000000000000000000000000000004"};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(bridge_queue_pop(&q, out), 1);
        cr_assert_str_eq(out, want[i]);
    }
    cr_assert_eq(q.len, 0);
    bridge_queue_free(&q);
}

Test(bridge, migrations_and_newer_schema_refused)
{
    char err[512], path[300];
    struct bridge_db db;
    cr_assert_eq(bridge_db_schema_version(&br.db), bridge_db_schema_latest());
    snprintf(path, sizeof(path), "%s/bridge.db", dir);
    cr_assert_eq(bridge_db_open(&db, path, err, sizeof(err)), 0, "%s", err); /* reopen: no-op */
    cr_assert_eq(sqlite3_exec(db.h, "PRAGMA user_version=99", NULL, NULL, NULL), SQLITE_OK);
    bridge_db_close(&db);
    cr_assert_eq(bridge_db_open(&db, path, err, sizeof(err)), -1);
    cr_assert(strstr(err, "schema version 99 is newer") != NULL, "%s", err);
}

/* Checkpoints run on the journal's own thread: a commit that fills the WAL past
 * BRIDGE_DB_CHECKPOINT_PAGES only wakes it, and the data reaches the database file. */
Test(bridge, wal_checkpoint_on_its_own_thread)
{
    char err[512], path[300];
    struct bridge_db db;
    struct stat st;
    char *blob = calloc(1, 64 * 1024);
    sqlite3_stmt *ins;

    cr_assert_not_null(blob);
    snprintf(path, sizeof(path), "%s/ckpt.db", dir);
    cr_assert_eq(bridge_db_open(&db, path, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(bridge_db_checkpointer_start(&db), 0);
    cr_assert_eq(sqlite3_exec(db.h, "CREATE TABLE t(x BLOB)", NULL, NULL, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(db.h, "INSERT INTO t VALUES (?)", -1, &ins, NULL), SQLITE_OK);
    /* 96 commits of 64 KiB: ~1,600 pages of 4 KiB, past the 1,000 that ask for one */
    for (int i = 0; i < 96; i++) {
        memset(blob, i, 64 * 1024);
        sqlite3_bind_blob(ins, 1, blob, 64 * 1024, SQLITE_STATIC);
        cr_assert_eq(sqlite3_step(ins), SQLITE_DONE);
        sqlite3_reset(ins);
    }
    sqlite3_finalize(ins);
    for (int i = 0; i < 500 && bridge_db_checkpoints_done(&db) == 0; i++)
        usleep(10000);
    cr_assert_gt(bridge_db_checkpoints_done(&db), 0, "the thread ran no checkpoint");
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_gt(st.st_size, 4 * 1024 * 1024, "the database file holds the WAL's pages: %lld",
                 (long long)st.st_size);
    bridge_db_close(&db); /* stops the thread */
    cr_assert_eq(bridge_db_open(&db, path, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(sqlite3_exec(db.h, "SELECT count(*) FROM t", NULL, NULL, NULL), SQLITE_OK);
    bridge_db_close(&db);
    free(blob);
}

Test(bridge, auth_secret_rights_and_rate_limit)
{
    struct bridge_auth_limiter lim;
    bridge_auth_limiter_init(&lim, 3, 60);
    cr_assert_eq(bridge_auth_check(&br.db, &lim, "vm1", "app", -1, "s3cret", "restore", 0), 0);
    cr_assert_eq(bridge_auth_check(&br.db, &lim, "vm1", "saver", -1, "s3cret", "save", 0), 0);
    cr_assert_eq(bridge_auth_check(&br.db, &lim, "vm1", "saver", -1, "s3cret", "restore", 0),
                 VMS_STATUS_ERR_DENIED);
    cr_assert_eq(bridge_auth_check(&br.db, &lim, "vm2", "saver", -1, "s3cret", "save", 0),
                 VMS_STATUS_ERR_DENIED);
    cr_assert_eq(bridge_auth_check(&br.db, &lim, "vm1", "nobody", -1, "s3cret", "save", 0),
                 VMS_STATUS_ERR_AUTH);
    /* 3 failures in the window, then rate-limited even with the right secret */
    for (int i = 0; i < 3; i++)
        cr_assert_eq(bridge_auth_check(&br.db, &lim, "vm1", "app", -1, "wrong", "save", 1),
                     VMS_STATUS_ERR_AUTH);
    cr_assert_eq(bridge_auth_check(&br.db, &lim, "vm1", "app", -1, "s3cret", "save", 2),
                 VMS_STATUS_ERR_RATE_LIMITED);
    /* another principal is not affected */
    cr_assert_eq(bridge_auth_check(&br.db, &lim, "vm1", "saver", -1, "s3cret", "save", 2), 0);
    /* a token refills after window/max = 20 s */
    cr_assert_eq(bridge_auth_check(&br.db, &lim, "vm1", "app", -1, "s3cret", "save", 25), 0);
}

Test(bridge, unknown_principal_costs_a_verification)
{
    struct bridge_auth_limiter lim;
    bridge_auth_limiter_init(&lim, 3, 60);
    /* no hash seen yet: an unknown principal still pays for a (decoy) verification */
    cr_assert_eq(bridge_auth_check(&br.db, &lim, "vm1", "nobody", -1, "x", "save", 0),
                 VMS_STATUS_ERR_AUTH);
    cr_assert(lim.decoy[0] != '\0', "no decoy hash to verify against");
    cr_assert(strncmp(lim.decoy, "$argon2id$", 10) == 0, "%s", lim.decoy);
    /* after a real principal, the decoy has that hash's cost parameters */
    cr_assert_eq(bridge_auth_check(&br.db, &lim, "vm1", "app", -1, "s3cret", "restore", 0), 0);
    cr_assert_eq(bridge_auth_check(&br.db, &lim, "vm1", "nobody", -1, "s3cret", "save", 0),
                 VMS_STATUS_ERR_AUTH, "the decoy must never authenticate");
}

Test(bridge, verified_secret_remembered_until_it_changes)
{
    struct bridge_auth_limiter lim;
    char hash[crypto_pwhash_STRBYTES];
    bridge_auth_limiter_init(&lim, 3, 60);
    cr_assert_eq(bridge_auth_check(&br.db, &lim, "vm1", "app", -1, "s3cret", "save", 0), 0);
    cr_assert_eq(bridge_auth_check(&br.db, &lim, "vm1", "app", -1, "s3cret", "save", 1), 0);
    cr_assert_eq(bridge_auth_check(&br.db, &lim, "vm1", "app", -1, "wrong", "save", 1),
                 VMS_STATUS_ERR_AUTH, "a remembered secret must not admit another one");
    /* the admin changes app's secret: the remembered one stops working at once */
    cr_assert_eq(bridge_db_principal_remove(&br.db, "app"), 1);
    cr_assert_eq(bridge_secret_hash("n3w", BRIDGE_PWHASH_OPS_TEST, BRIDGE_PWHASH_MEM_TEST, hash),
                 0);
    cr_assert_eq(bridge_db_principal_add(&br.db, "app", hash), 0);
    cr_assert_eq(bridge_auth_check(&br.db, &lim, "vm1", "app", -1, "s3cret", "save", 2),
                 VMS_STATUS_ERR_AUTH);
    /* and it expires */
    cr_assert_eq(bridge_auth_check(&br.db, &lim, "vm1", "saver", -1, "s3cret", "save", 3), 0);
    for (int i = 0; i < BRIDGE_AUTH_SLOTS; i++)
        if (!strcmp(lim.slots[i].principal, "saver"))
            cr_assert_eq(lim.slots[i].verified_until, 3 + BRIDGE_AUTH_CACHE_SECONDS);
}

Test(bridge, save_flow_reply_event_ack_and_resend)
{
    char id[VMS_REQUEST_ID_LEN + 1] = "", state[VMS_STR_MAX + 1];
    const struct vms_msg *ev;
    struct vms_msg copy;

    request(&vm1, id, "save", "app", "s3cret", NULL, "my-data");
    drain(&in1);
    cr_assert_not_null(find(VMS_MSG_REPLY, id));
    cr_assert_eq(find(VMS_MSG_REPLY, id)->status, 0);
    cr_assert_null(find(VMS_MSG_EVENT, id), "no completion before the backend finished");
    cr_assert_eq(fake.calls, 1);
    /* duplicate while running: accepted again, not run again */
    request(&vm1, id, "save", "app", "s3cret", NULL, "my-data");
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_REPLY, id)->status, 0);
    cr_assert_eq(fake.calls, 1);
    fake_finish(VMS_STATUS_OK);
    drain(&in1);
    ev = find(VMS_MSG_EVENT, id);
    cr_assert_not_null(ev);
    cr_assert_eq(ev->status, 0);
    cr_assert_str_eq(ev->op, "save");
    cr_assert_eq(ev->app_data_len, 7);
    cr_assert_eq(memcmp(ev->app_data, "my-data", 7), 0);
    cr_assert_eq(ev->epoch, 1);
    snprintf(state, sizeof(state), "%s", ev->state_id);
    cr_assert_eq(bridge_db_state_find(&br.db, "vm1", state, NULL), 1);
    /* Hello: Welcome then the unacked event again */
    copy = *ev;
    hello(&vm1);
    drain(&in1);
    cr_assert_not_null(find(VMS_MSG_WELCOME, NULL));
    cr_assert_eq(find(VMS_MSG_WELCOME, NULL)->nonce, 42);
    cr_assert_not_null(find(VMS_MSG_EVENT, id), "unacked event resent after Welcome");
    ack(&vm1, find(VMS_MSG_EVENT, id));
    hello(&vm1);
    drain(&in1);
    cr_assert_null(find(VMS_MSG_EVENT, id), "acked event not resent");
    /* duplicate after completion: its event is sent again, nothing runs */
    request(&vm1, id, "save", "app", "s3cret", NULL, "my-data");
    drain(&in1);
    cr_assert_not_null(find(VMS_MSG_EVENT, id));
    cr_assert_eq(fake.calls, 1);
    (void)copy;
}

Test(bridge, refusals_get_reply_and_event)
{
    char id[VMS_REQUEST_ID_LEN + 1] = "";
    request(&vm1, id, "save", "app", "wrong", NULL, "d");
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_REPLY, id)->status, VMS_STATUS_ERR_AUTH);
    cr_assert_eq(find(VMS_MSG_EVENT, id)->status, VMS_STATUS_ERR_AUTH);
    cr_assert_eq(fake.calls, 0, "nothing runs");
    cr_assert_eq(bridge_db_request_find(&br.db, "vm1", id, NULL), 0, "auth failures not journaled");
    id[0] = '\0';
    request(&vm1, id, "restore", "saver", "s3cret", "st-x", NULL);
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_EVENT, id)->status, VMS_STATUS_ERR_DENIED);
    id[0] = '\0';
    request(&vm1, id, "restore", "app", "s3cret", NULL, NULL);
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_EVENT, id)->status, VMS_STATUS_ERR_INVALID);
    id[0] = '\0';
    request(&vm1, id, "frobnicate", "app", "s3cret", NULL, NULL);
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_EVENT, id)->status, VMS_STATUS_ERR_UNSUPPORTED);
    cr_assert_eq(fake.calls, 0);
}

Test(bridge, vm_cannot_touch_another_vms_state)
{
    char id[VMS_REQUEST_ID_LEN + 1], state[VMS_STR_MAX + 1];
    do_save(state, id, NULL);
    id[0] = '\0';
    request(&vm2, id, "restore", "app", "s3cret", state, NULL);
    drain(&in2);
    cr_assert_eq(find(VMS_MSG_EVENT, id)->status, VMS_STATUS_ERR_NOT_FOUND);
    id[0] = '\0';
    request(&vm2, id, "delete", "app", "s3cret", state, NULL);
    drain(&in2);
    cr_assert_eq(find(VMS_MSG_EVENT, id)->status, VMS_STATUS_ERR_NOT_FOUND);
    id[0] = '\0';
    request(&vm2, id, "list", "app", "s3cret", NULL, NULL);
    drain(&in2);
    cr_assert_eq(find(VMS_MSG_EVENT, id)->n_states, 0);
    id[0] = '\0';
    request(&vm1, id, "list", "app", "s3cret", NULL, NULL);
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_EVENT, id)->n_states, 1);
    cr_assert_eq(fake.calls, 1, "only vm1's save reached the backend");
}

Test(bridge, quotas)
{
    char id[VMS_REQUEST_ID_LEN + 1], state[VMS_STR_MAX + 1];
    const struct vms_msg *ev;

    /* app data: max 100 bytes kept */
    char big[101];
    memset(big, 'x', 100);
    big[100] = '\0';
    id[0] = '\0';
    fake.ready = 0; /* keep requests pending */
    request(&vm1, id, "list", "app", "s3cret", NULL, big);
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_REPLY, id)->status, 0);
    id[0] = '\0';
    request(&vm1, id, "list", "app", "s3cret", NULL, "y");
    drain(&in1);
    ev = find(VMS_MSG_EVENT, id);
    cr_assert_eq(ev->status, VMS_STATUS_ERR_QUOTA, "app data quota");
    /* pending: max 4 */
    for (int i = 0; i < 3; i++) {
        id[0] = '\0';
        request(&vm1, id, "hostinfo", "app", "s3cret", NULL, NULL);
    }
    id[0] = '\0';
    request(&vm1, id, "hostinfo", "app", "s3cret", NULL, NULL);
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_EVENT, id)->status, VMS_STATUS_ERR_QUOTA, "pending quota");
    /* run them all: the first hostinfo asks the backend, the others are answered from what
     * it said (issue 18: no hypervisor round trip per hostinfo) */
    fake.ready = 1;
    bridge_vm_kick(&vm1);
    fake_finish(VMS_STATUS_OK);
    cr_assert_null(fake.done, "a hostinfo asked the backend again");
    cr_assert_eq(bridge_db_count_pending(&br.db, "vm1"), 0);
    /* states: max 3 */
    for (int i = 0; i < 3; i++)
        do_save(state, id, NULL);
    id[0] = '\0';
    request(&vm1, id, "save", "app", "s3cret", NULL, NULL);
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_EVENT, id)->status, VMS_STATUS_ERR_QUOTA, "states quota");
}

Test(bridge, restore_timeline_reconciliation)
{
    char save_id[VMS_REQUEST_ID_LEN + 1], id[VMS_REQUEST_ID_LEN + 1] = "", state[VMS_STR_MAX + 1];
    const struct vms_msg *t, *rev, *copy, *old;
    int i_t = -1, i_r = -1, i_c = -1;

    do_save(state, save_id, "saved-data");
    /* an unrelated journaled event of epoch 1 (a refusal: "saver" may not list) left
     * unacked: superseded by the restore */
    request(&vm1, id, "list", "saver", "s3cret", NULL, NULL);
    drain(&in1);
    old = find(VMS_MSG_EVENT, id);
    cr_assert_not_null(old);
    cr_assert_gt(old->seq, 0, "the refusal is journaled");
    char old_id[VMS_REQUEST_ID_LEN + 1];
    snprintf(old_id, sizeof(old_id), "%s", id);

    id[0] = '\0';
    request(&vm1, id, "restore", "app", "s3cret", state, "restore-data");
    cr_assert_eq(fake.last_op, VMS_OP_RESTORE);
    cr_assert_str_eq(fake.last_tag, state);
    fake_finish(VMS_STATUS_OK);
    drain(&in1);
    for (int i = 0; i < n_got; i++) {
        if (got[i].type == VMS_MSG_TIMELINE && i_t < 0)
            i_t = i;
        if (got[i].type == VMS_MSG_EVENT && !strcmp(got[i].request_id, id) && i_r < 0)
            i_r = i;
        if (got[i].type == VMS_MSG_EVENT && !strcmp(got[i].request_id, save_id) && i_c < 0)
            i_c = i;
    }
    cr_assert(i_t >= 0 && i_r > i_t && i_c > i_r, "Timeline, then restore event, then copy");
    t = &got[i_t];
    rev = &got[i_r];
    copy = &got[i_c];
    cr_assert_eq(t->epoch, 2);
    cr_assert_str_eq(t->state_id, state);
    cr_assert_str_eq(t->reason, "restore");
    cr_assert_eq(rev->epoch, 2);
    cr_assert_eq(rev->status, 0);
    cr_assert_eq(rev->app_data_len, strlen("restore-data"));
    cr_assert_eq(memcmp(rev->app_data, "restore-data", rev->app_data_len), 0);
    cr_assert_eq(copy->epoch, 2);
    cr_assert_str_eq(copy->reason, "restored-copy");
    cr_assert_str_eq(copy->state_id, state);
    cr_assert_eq(copy->app_data_len, strlen("saved-data"));
    cr_assert_null(find(VMS_MSG_EVENT, old_id), "the refused list was not pending inside S");
    /* epoch 1's unacked refusal event is superseded: a Hello resends only epoch 2's */
    hello(&vm1);
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_WELCOME, NULL)->epoch, 2);
    cr_assert_null(find(VMS_MSG_EVENT, old_id));
    cr_assert_not_null(find(VMS_MSG_EVENT, save_id));
    cr_assert_not_null(find(VMS_MSG_EVENT, id));
    /* the restored guest replays the save request: not run again */
    int calls = fake.calls;
    request(&vm1, save_id, "save", "app", "s3cret", NULL, "saved-data");
    cr_assert_eq(fake.calls, calls);
}

/* "Crash" vm1: forget its in-memory state and the backend's, start again from the journal. */
static void restart_vm1(void)
{
    bridge_vm_free(&vm1);
    memset(&fake, 0, sizeof(fake));
    fake.ready = 1;
    cr_assert_eq(bridge_vm_init(&vm1, &br, &cfg.vms[0]), 0);
    cr_assert_eq(bridge_vm_start(&vm1), 0);
    vms_channel_free(&in1);
    attach_peer(&vm1, &peer1, &in1);
}

Test(bridge, restart_requeues_and_rejudges)
{
    char id1[VMS_REQUEST_ID_LEN + 1] = "", id2[VMS_REQUEST_ID_LEN + 1] = "";
    request(&vm1, id1, "save", "app", "s3cret", NULL, "a");
    request(&vm1, id2, "save", "app", "s3cret", NULL, "b");
    cr_assert_eq(fake.calls, 1);
    restart_vm1();
    cr_assert(vm1.need_recover);
    cr_assert_eq(vm1.queue.len, 1);
    bridge_vm_kick(&vm1);
    cr_assert_eq(fake.calls, 1, "the running save is re-judged, not re-run");
    fake_finish(VMS_STATUS_OK); /* the hypervisor says it happened */
    cr_assert_eq(fake.calls, 2, "then the queued one runs");
    cr_assert_eq(fake.last_op, VMS_OP_SAVE);
    fake_finish(VMS_STATUS_OK);
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_EVENT, id1)->status, 0);
    cr_assert_eq(find(VMS_MSG_EVENT, id2)->status, 0);
    cr_assert_eq(bridge_db_event_count(&br.db, "vm1", id1, 1), 1);
    cr_assert_eq(bridge_db_event_count(&br.db, "vm1", id2, 1), 1);
}

/* SIGKILL after the journal said "running" but before QEMU got the command: the
 * hypervisor has no trace of it, so it runs again, before the requests behind it */
Test(bridge, restart_reruns_a_request_that_never_reached_the_hypervisor)
{
    char id1[VMS_REQUEST_ID_LEN + 1] = "", id2[VMS_REQUEST_ID_LEN + 1] = "";
    request(&vm1, id1, "save", "app", "s3cret", NULL, "a");
    request(&vm1, id2, "save", "app", "s3cret", NULL, "b");
    cr_assert_eq(fake.calls, 1);
    char tag1[VMS_STR_MAX + 1];
    snprintf(tag1, sizeof(tag1), "%s", fake.last_tag);
    restart_vm1();
    bridge_vm_kick(&vm1);
    cr_assert_eq(fake.calls, 1, "re-judged first");
    fake_finish_never_started();
    cr_assert_eq(fake.calls, 2, "then run again");
    cr_assert_eq(fake.last_op, VMS_OP_SAVE);
    cr_assert_str_eq(fake.last_tag, tag1, "the first save, not the one queued behind it");
    fake_finish(VMS_STATUS_OK);
    cr_assert_eq(fake.calls, 3);
    cr_assert_neq(strcmp(fake.last_tag, tag1), 0);
    fake_finish(VMS_STATUS_OK);
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_EVENT, id1)->status, 0);
    cr_assert_eq(find(VMS_MSG_EVENT, id2)->status, 0);
    cr_assert_eq(bridge_db_event_count(&br.db, "vm1", id1, 1), 1, "delivered exactly once");
    cr_assert_eq(bridge_db_event_count(&br.db, "vm1", id2, 1), 1);
}

Test(bridge, version_mismatch_refused_until_next_hello)
{
    struct vms_msg h;
    char id[VMS_REQUEST_ID_LEN + 1] = "";

    vms_msg_init(&h, VMS_MSG_HELLO);
    vms_msg_set_u64(&h, VMS_F_VERSION, 99);
    vms_msg_set_u64(&h, VMS_F_MIN_VERSION, 50);
    vms_msg_set_u64(&h, VMS_F_NONCE, 7);
    bridge_guest_input(&vm1, &vm1.a.ch, &h);
    vms_msg_clear(&h);
    drain(&in1);
    cr_assert_not_null(find(VMS_MSG_WELCOME, NULL));
    cr_assert_eq(find(VMS_MSG_WELCOME, NULL)->status, VMS_STATUS_ERR_VERSION);
    cr_assert_eq(find(VMS_MSG_WELCOME, NULL)->nonce, 7);
    request(&vm1, id, "save", "app", "s3cret", NULL, NULL);
    drain(&in1);
    cr_assert_eq(n_got, 0, "requests ignored after a refused Hello");
    cr_assert_eq(fake.calls, 0);
    hello(&vm1);
    id[0] = '\0';
    request(&vm1, id, "list", "app", "s3cret", NULL, NULL);
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_WELCOME, NULL)->version, 1);
    cr_assert_eq(find(VMS_MSG_EVENT, id)->status, 0);
}

Test(bridge, request_rate_limit_per_vm)
{
    char id[VMS_REQUEST_ID_LEN + 1];
    int limited = 0;

    /* vm2 has the default 60 requests per 60 s */
    for (int i = 0; i < 70; i++) {
        id[0] = '\0';
        request(&vm2, id, "list", "app", "s3cret", NULL, NULL);
        drain(&in2);
        if (find(VMS_MSG_EVENT, id)->status == VMS_STATUS_ERR_RATE_LIMITED)
            limited++;
    }
    cr_assert_eq(limited, 10, "%d refused", limited);
    /* vm1 is not affected */
    id[0] = '\0';
    request(&vm1, id, "list", "app", "s3cret", NULL, NULL);
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_EVENT, id)->status, 0);
}

Test(bridge, hostile_bytes_then_valid_request)
{
    uint8_t junk[4096];
    char id[VMS_REQUEST_ID_LEN + 1] = "";

    for (int round = 0; round < 200; round++) {
        for (size_t i = 0; i < sizeof(junk); i++)
            junk[i] = (uint8_t)(i * 31 + round * 7);
        junk[0] = 0xFF; /* a sync byte, then nonsense */
        vms_channel_feed(&vm1.a.ch, junk, sizeof(junk), bridge_guest_input, &vm1);
    }
    cr_assert_eq(fake.calls, 0);
    request(&vm1, id, "list", "app", "s3cret", NULL, NULL);
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_EVENT, id)->status, 0);
}

/* A finished, journaled request of @vm through the whole guest path (a delete of a state
 * that does not exist: it completes at once; a list would not be journaled); acked when
 * @do_ack. */
static void finished_request(struct bridge_vm *vm, struct vms_channel *in,
                             char id[VMS_REQUEST_ID_LEN + 1], int do_ack)
{
    id[0] = '\0';
    request(vm, id, "delete", "app", "s3cret", "no-such-state", "x");
    drain(in);
    cr_assert_not_null(find(VMS_MSG_EVENT, id));
    if (do_ack)
        ack(vm, find(VMS_MSG_EVENT, id));
}

static int journalled(const char *vm, const char *id)
{
    struct bridge_request r;
    int rc = bridge_db_request_find(&br.db, vm, id, &r);
    if (rc == 1)
        bridge_request_clear(&r);
    return rc;
}

Test(bridge, journal_prune_keeps_what_a_restore_or_a_resend_needs)
{
    char acked[VMS_REQUEST_ID_LEN + 1], unacked[VMS_REQUEST_ID_LEN + 1];
    char save_id[VMS_REQUEST_ID_LEN + 1], near[VMS_REQUEST_ID_LEN + 1], state[VMS_STR_MAX + 1];
    int64_t later = (int64_t)time(NULL) + 10;

    /* vm2 has no state: acked and finished before the cutoff goes, unacked stays */
    finished_request(&vm2, &in2, acked, 1);
    finished_request(&vm2, &in2, unacked, 0);
    cr_assert_eq(bridge_db_prune(&br.db, "vm2", later - 3600), 0, "nothing old enough");
    cr_assert_eq(bridge_db_prune(&br.db, "vm2", later), 1);
    cr_assert_eq(journalled("vm2", acked), 0);
    cr_assert_eq(bridge_db_event_count(&br.db, "vm2", acked, 1), 0, "its events go with it");
    cr_assert_eq(journalled("vm2", unacked), 1, "an undelivered event is never dropped");

    /* vm1: a state, its creating request, and a request from around its time */
    do_save(state, save_id, "keep-me");
    ack(&vm1, find(VMS_MSG_EVENT, save_id));
    finished_request(&vm1, &in1, near, 1);
    cr_assert_eq(bridge_db_prune(&br.db, "vm1", later), 0,
                 "a restore to the state could replay both");
    /* the state is now old: the request from long after it may go, its creator stays */
    cr_assert_eq(
        sqlite3_exec(br.db.h, "UPDATE states SET created = created - 3 * 86400", NULL, NULL, NULL),
        SQLITE_OK);
    cr_assert_eq(bridge_db_prune(&br.db, "vm1", later), 1);
    cr_assert_eq(journalled("vm1", near), 0);
    cr_assert_eq(journalled("vm1", save_id), 1);
    cr_assert_eq(bridge_db_state_find(&br.db, "vm1", state, NULL), 1);
}
