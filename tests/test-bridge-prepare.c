/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of issue 8 in the bridge (host-bridge/guest/prepare.c): Prepare/Ready
 * before a save (go, inhibited, timeout, old helpers without the "prepare"
 * capability, stray Ready), and the host time on Welcome, Timeline and QMP
 * RESUME (reasons, clock_sync = no). Same fixture as test-bridge-core.c: a
 * real SQLite file, a fake backend, port B a socketpair decoded by the test.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test-bridge-fixture.h"

static const char *conf_text =
    "[vm vm1]\nport_a=/nonexistent/a\nport_b=/nonexistent/b\nqmp=/nonexistent/q\nnodes=disk0\n"
    "max_states=3\nmax_pending=4\nmax_app_data_bytes=100\nauth_fail_max=3\nauth_fail_window=60\n"
    "mem_max=1G\nmem_min=64M\nprepare_timeout_ms=3000\n"
    "[vm vm2]\nport_a=/nonexistent/a2\nport_b=/nonexistent/b2\nqmp=/nonexistent/q2\nnodes=disk0\n"
    "clock_sync=no\n";

static void setup(void)
{
    bfx_setup(conf_text);
}

static void teardown(void)
{
    bfx_teardown();
}

#define CAPS_NEW (VMS_CAP_ALL | VMS_CAP_CLOCK | VMS_CAP_PREPARE)

TestSuite(prepare, .init = setup, .fini = teardown);

static uint64_t now_ns(void)
{
    return bridge_clock_realtime_ns();
}

static void ready(struct bridge_vm *vm, const char *id, uint32_t status, const char *msg)
{
    struct vms_msg m;
    vms_msg_init(&m, VMS_MSG_READY);
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, id);
    vms_msg_set_u64(&m, VMS_F_STATUS, status);
    if (msg)
        vms_msg_set_str(&m, VMS_F_MESSAGE, msg);
    bridge_guest_input(vm, &vm->a.ch, &m);
    vms_msg_clear(&m);
}

/* How many requests are recorded as pending inside a state of vm1 (@request_id: that one). */
static int pending_rows(const char *request_id)
{
    sqlite3_stmt *st;
    int n = -1;

    cr_assert_eq(sqlite3_prepare_v2(br.db.h,
                                    "SELECT count(*) FROM state_pending WHERE vm = 'vm1' AND "
                                    "(?1 IS NULL OR request_id = ?1)",
                                    -1, &st, NULL),
                 SQLITE_OK);
    sqlite3_bind_text(st, 1, request_id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
}

Test(prepare, save_waits_for_ready_then_runs)
{
    char id[VMS_REQUEST_ID_LEN + 1] = "";
    const struct vms_msg *p, *ev;

    hello_caps(&vm1, CAPS_NEW);
    request(&vm1, id, "save", "app", "s3cret", NULL, "d");
    cr_assert_eq(fake.calls, 0, "the snapshot must wait for the guest's Ready");
    cr_assert_eq(pending_rows(id), 1, "the save is recorded inside its state when it starts");
    drain(&in1);
    p = find(VMS_MSG_PREPARE, id);
    cr_assert_not_null(p, "Prepare sent");
    cr_assert_eq(p->timeout_ms, 3000);
    ready(&vm1, id, VMS_STATUS_OK, "pre-save hooks: 1 ok");
    cr_assert_eq(fake.calls, 1);
    cr_assert_eq(fake.last_op, VMS_OP_SAVE);
    fake_finish(VMS_STATUS_OK);
    drain(&in1);
    ev = find(VMS_MSG_EVENT, id);
    cr_assert_not_null(ev);
    cr_assert_eq(ev->status, VMS_STATUS_OK);
}

Test(prepare, inhibited_save_fails_with_the_reason)
{
    char id[VMS_REQUEST_ID_LEN + 1] = "", id2[VMS_REQUEST_ID_LEN + 1] = "";
    const struct vms_msg *ev;

    hello_caps(&vm1, CAPS_NEW);
    request(&vm1, id, "save", "app", "s3cret", NULL, NULL);
    ready(&vm1, id, VMS_STATUS_ERR_INHIBITED, "unsaved work (uid 1000)");
    cr_assert_eq(fake.calls, 0, "no snapshot for an inhibited save");
    drain(&in1);
    ev = find(VMS_MSG_EVENT, id);
    cr_assert_not_null(ev);
    cr_assert_eq(ev->status, VMS_STATUS_ERR_INHIBITED);
    cr_assert(strstr(ev->message, "unsaved work (uid 1000)") != NULL, "%s", ev->message);
    cr_assert_eq(bridge_db_state_count(&br.db, "vm1"), 0);
    cr_assert_eq(pending_rows(NULL), 0, "no state, no records of what it would have held");
    /* the queue goes on */
    request(&vm1, id2, "save", "app", "s3cret", NULL, NULL);
    drain(&in1);
    cr_assert_not_null(find(VMS_MSG_PREPARE, id2));
}

/* A request accepted while the guest prepares is inside the state too: recorded at the Ready. */
Test(prepare, request_during_the_window_is_recorded_inside_the_state)
{
    char id[VMS_REQUEST_ID_LEN + 1] = "", info[VMS_REQUEST_ID_LEN + 1] = "";

    hello_caps(&vm1, CAPS_NEW);
    request(&vm1, id, "save", "app", "s3cret", NULL, NULL);
    request(&vm1, info, "hostinfo", "app", "s3cret", NULL, NULL);
    cr_assert_eq(pending_rows(info), 0, "accepted after the save started");
    ready(&vm1, id, VMS_STATUS_OK, NULL);
    cr_assert_eq(fake.calls, 1);
    cr_assert_eq(pending_rows(info), 1, "recorded before the snapshot was asked for");
    cr_assert_eq(pending_rows(id), 1);
}

Test(prepare, timeout_saves_anyway)
{
    char id[VMS_REQUEST_ID_LEN + 1] = "";

    hello_caps(&vm1, CAPS_NEW);
    request(&vm1, id, "save", "app", "s3cret", NULL, NULL);
    bridge_prepare_tick(&vm1, vm1.now + 2.9);
    cr_assert_eq(fake.calls, 0, "still waiting before prepare_timeout_ms");
    bridge_prepare_tick(&vm1, vm1.now + 3.1);
    cr_assert_eq(fake.calls, 1, "saved after prepare_timeout_ms without a Ready");
    cr_assert_eq(fake.last_op, VMS_OP_SAVE);
    ready(&vm1, id, VMS_STATUS_ERR_INHIBITED, "too late"); /* ignored */
    fake_finish(VMS_STATUS_OK);
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_EVENT, id)->status, VMS_STATUS_OK);
}

Test(prepare, stray_ready_is_ignored)
{
    char id[VMS_REQUEST_ID_LEN + 1] = "";

    hello_caps(&vm1, CAPS_NEW);
    request(&vm1, id, "save", "app", "s3cret", NULL, NULL);
    ready(&vm1, "0123456789abcdef0123456789abcdef", VMS_STATUS_OK, NULL);
    cr_assert_eq(fake.calls, 0, "a Ready for another request must not start the save");
    ready(&vm1, id, VMS_STATUS_OK, NULL);
    cr_assert_eq(fake.calls, 1);
}

Test(prepare, old_helper_gets_no_prepare)
{
    char id[VMS_REQUEST_ID_LEN + 1] = "";

    hello_caps(&vm1, VMS_CAP_ALL); /* no "prepare": do not make it wait for a timeout */
    request(&vm1, id, "save", "app", "s3cret", NULL, NULL);
    cr_assert_eq(fake.calls, 1);
    drain(&in1);
    cr_assert_null(find(VMS_MSG_PREPARE, NULL));
    cr_assert_null(find(VMS_MSG_CLOCK, NULL));
    cr_assert(!vms_msg_has(find(VMS_MSG_WELCOME, NULL), VMS_F_TIME_NS));
}

Test(prepare, welcome_carries_host_time)
{
    const struct vms_msg *w;
    uint64_t before = now_ns(), after;

    hello_caps(&vm1, CAPS_NEW);
    after = now_ns();
    drain(&in1);
    w = find(VMS_MSG_WELCOME, NULL);
    cr_assert_not_null(w);
    cr_assert(vms_msg_has(w, VMS_F_TIME_NS));
    cr_assert(w->time_ns >= before && w->time_ns <= after);
    cr_assert(w->caps & VMS_CAP_CLOCK);
    cr_assert(w->caps & VMS_CAP_PREPARE);
}

Test(prepare, clock_reasons_on_resume)
{
    const struct vms_msg *c;
    char id[VMS_REQUEST_ID_LEN + 1] = "";

    hello_caps(&vm1, CAPS_NEW);
    drain(&in1);
    bridge_clock_on_event(&vm1, "STOP");
    bridge_clock_on_event(&vm1, "RESUME");
    drain(&in1);
    c = find(VMS_MSG_CLOCK, NULL);
    cr_assert_not_null(c);
    cr_assert_str_eq(c->reason, "resume");
    cr_assert(c->time_ns > 0);
    bridge_clock_on_event(&vm1, "BLOCK_IO_ERROR");
    bridge_clock_on_event(&vm1, "STOP");
    bridge_clock_on_event(&vm1, "RESUME");
    drain(&in1);
    cr_assert_str_eq(find(VMS_MSG_CLOCK, NULL)->reason, "io-error");
    /* the pause of our own snapshot */
    request(&vm1, id, "save", "app", "s3cret", NULL, NULL);
    ready(&vm1, id, VMS_STATUS_OK, NULL);
    bridge_clock_on_event(&vm1, "RESUME");
    drain(&in1);
    cr_assert_str_eq(find(VMS_MSG_CLOCK, NULL)->reason, "save");
    fake_finish(VMS_STATUS_OK);
}

Test(prepare, restore_time_goes_with_the_timeline)
{
    char id[VMS_REQUEST_ID_LEN + 1] = "", rid[VMS_REQUEST_ID_LEN + 1] = "", state[VMS_STR_MAX + 1];
    const struct vms_msg *t;

    hello_caps(&vm1, CAPS_NEW);
    request(&vm1, id, "save", "app", "s3cret", NULL, NULL);
    ready(&vm1, id, VMS_STATUS_OK, NULL);
    fake_finish(VMS_STATUS_OK);
    drain(&in1);
    snprintf(state, sizeof(state), "%s", find(VMS_MSG_EVENT, id)->state_id);
    request(&vm1, rid, "restore", "app", "s3cret", state, NULL);
    bridge_clock_on_event(&vm1, "STOP");
    bridge_clock_on_event(&vm1, "RESUME"); /* snapshot-load resumes before the job ends */
    drain(&in1);
    cr_assert_null(find(VMS_MSG_CLOCK, NULL), "no Clock during a restore");
    fake_finish(VMS_STATUS_OK);
    drain(&in1);
    t = find(VMS_MSG_TIMELINE, NULL);
    cr_assert_not_null(t);
    cr_assert(vms_msg_has(t, VMS_F_TIME_NS));
    cr_assert_str_eq(t->request_id, rid);
}

Test(prepare, clock_sync_no_sends_no_time)
{
    hello_caps(&vm2, CAPS_NEW); /* vm2 has clock_sync=no */
    bridge_clock_on_event(&vm2, "RESUME");
    drain(&in2);
    cr_assert(!vms_msg_has(find(VMS_MSG_WELCOME, NULL), VMS_F_TIME_NS));
    cr_assert_null(find(VMS_MSG_CLOCK, NULL));
}

Test(prepare, config_keys)
{
    struct bridge_config c;
    char err[512];

    cr_assert_eq(vm1.cfg->prepare_timeout_ms, 3000);
    cr_assert_eq(vm1.cfg->clock_sync, 1);
    cr_assert_eq(vm2.cfg->clock_sync, 0);
    cr_assert_eq(bridge_config_load_string(&c, "t.conf",
                                           "[vm x]\nport_a=/a\nport_b=/b\nqmp=/q\nnodes=d\n"
                                           "clock_sync=maybe\n",
                                           err, sizeof(err)),
                 -1);
    cr_assert(strstr(err, "clock_sync") != NULL, "%s", err);
    bridge_config_free(&c);
}
