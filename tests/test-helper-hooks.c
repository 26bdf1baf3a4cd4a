/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Component tests of issue 8 in vmstate-helperd: the real daemon against a
 * private dbus-daemon and the fake bridge (test-helper-fixture.h).
 *  - clock: ClockCorrected for Clock messages (forward only), a restore's
 *    correction (Timeline refined by the next Welcome, backward allowed) in
 *    one signal before Restored; clock_sync = dry-run (the test is not root,
 *    so the helper computes and signals but does not call clock_settime);
 *    the pure decision helper_clock_plan();
 *  - hooks: pre-save.d in name order with the environment, PrepareSave,
 *    Ready after the hooks, Inhibit -> Ready(inhibited, reason), a hung hook
 *    killed at hook_timeout_ms while the bus stays responsive, post-restore.d
 *    before Restored.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "helper-hooks.h"
#include "test-helper-fixture.h"

static struct fx F;
static char hooks[300];

static void stop(void)
{
    fx_stop(&F);
}

TestSuite(hooks, .fini = stop, .timeout = 60);

static int log_contains(const char *needle)
{
    static char buf[1 << 18];
    FILE *fp = fopen(F.helper_log, "r");
    size_t n;

    if (!fp)
        return 0;
    n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

static void write_hook(const char *sub, const char *name, const char *body)
{
    char path[600];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", hooks, sub);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/%s/%s", hooks, sub, name);
    fp = fopen(path, "w");
    cr_assert_not_null(fp);
    /* hooks run in "/": "../../" in @body stands for the test directory */
    fprintf(fp, "#!/bin/sh\nD=%s\n", F.dir);
    for (const char *p = body; *p; p++) {
        if (!strncmp(p, "../../", 6)) {
            fputs("$D/", fp);
            p += 5;
        } else {
            fputc(*p, fp);
        }
    }
    fputc('\n', fp);
    fclose(fp);
    cr_assert_eq(chmod(path, 0755), 0);
}

static char *slurp(const char *name)
{
    static char buf[4096];
    char path[600];
    FILE *fp;
    size_t n;

    snprintf(path, sizeof(path), "%s/%s", F.dir, name);
    fp = fopen(path, "r");
    if (!fp)
        return NULL;
    n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    return buf;
}

/* Bus + helper with the hooks directory in the test dir and @extra config. */
static void start(const char *extra)
{
    char conf[1024];
    struct fx_opts o = {0};

    fx_start_bus(&F);
    snprintf(hooks, sizeof(hooks), "%s/hooks", F.dir);
    mkdir(hooks, 0755);
    snprintf(conf, sizeof(conf),
             "clock_sync = dry-run\nclock_min_step_ms = 10\nhooks_dir = %s\n"
             "hook_timeout_ms = 700\nprepare_window_ms = 100\n%s",
             hooks, extra ? extra : "");
    o.extra_config = conf;
    fx_start_helper(&F, &o);
}

/* Handshake whose Welcome announces clock and prepare (the fixture's does not). */
/* Welcome the helper's Hello as a bridge that knows @caps. */
static void handshake_caps(uint64_t epoch, uint64_t time_ns, uint32_t caps)
{
    struct vms_msg *hello, w;

    fx_bridge_accept(&F, 5000);
    hello = fx_bridge_expect(&F, VMS_MSG_HELLO, 5000);
    cr_assert_not_null(hello);
    cr_assert(hello->caps & VMS_CAP_CLOCK, "the helper announces 'clock'");
    cr_assert(hello->caps & VMS_CAP_PREPARE, "the helper announces 'prepare'");
    F.epoch = epoch;
    vms_msg_init(&w, VMS_MSG_WELCOME);
    vms_msg_set_u64(&w, VMS_F_VERSION, 1);
    vms_msg_set_u64(&w, VMS_F_NONCE, hello->nonce);
    vms_msg_set_u64(&w, VMS_F_EPOCH, epoch);
    vms_msg_set_u64(&w, VMS_F_CAPS, caps);
    if (time_ns)
        vms_msg_set_u64(&w, VMS_F_TIME_NS, time_ns);
    fx_bridge_send(&F, &w);
    fx_msg_free(hello);
}

static void handshake(uint64_t epoch, uint64_t time_ns)
{
    handshake_caps(epoch, time_ns, VMS_CAP_KNOWN);
}

static double clock_corrected(DBusMessage *m, const char **reason)
{
    double s;
    dbus_int64_t ns;
    const char *r;

    cr_assert(dbus_message_get_args(m, NULL, DBUS_TYPE_DOUBLE, &s, DBUS_TYPE_INT64, &ns,
                                    DBUS_TYPE_STRING, &r, DBUS_TYPE_INVALID),
              "ClockCorrected signature %s", dbus_message_get_signature(m));
    cr_assert(s * 1e9 - (double)ns < 1e3 && (double)ns - s * 1e9 < 1e3);
    if (reason)
        *reason = r;
    return s;
}

Test(hooks, clock_plan_is_forward_only_except_restore)
{
    cr_assert_eq(helper_clock_plan(5000000000ll, 0, 10000000), CLOCK_APPLY);
    cr_assert_eq(helper_clock_plan(-5000000000ll, 0, 10000000), CLOCK_REFUSE_BACKWARD);
    cr_assert_eq(helper_clock_plan(-5000000000ll, 1, 10000000), CLOCK_APPLY);
    cr_assert_eq(helper_clock_plan(9000000, 0, 10000000), CLOCK_SKIP_SMALL);
    cr_assert_eq(helper_clock_plan(-9000000, 1, 10000000), CLOCK_SKIP_SMALL);
    cr_assert_eq(helper_clock_plan(0, 1, 0), CLOCK_SKIP_SMALL);
}

Test(hooks, clock_messages_signal_forward_corrections)
{
    DBusConnection *c;
    DBusMessage *m;
    const char *reason;
    double s;
    /* the correction is the host time sent minus the guest time when the helper reads it:
     * smaller by the helper's delay, which valgrind stretches */
    double late = fx_late_s();

    start(NULL);
    c = fx_client(&F);
    handshake(1, fx_realtime_ns() + 3000000000ull); /* connect: guest 3 s behind */
    m = fx_wait_signal(c, "ClockCorrected", 3000);
    cr_assert_not_null(m, "ClockCorrected after the Welcome");
    s = clock_corrected(m, &reason);
    cr_assert_str_eq(reason, "connect");
    cr_assert(s > 3.0 - late && s < 3.1, "%f", s);
    dbus_message_unref(m);

    /* 5 s pause; dry-run keeps the guest at its own time plus the first correction, so
     * this one also gives back what the first lost to the helper's delay */
    fx_bridge_clock(&F, 5000000000ll + 3000000000ll, "resume");
    m = fx_wait_signal(c, "ClockCorrected", 3000);
    cr_assert_not_null(m);
    s = clock_corrected(m, &reason);
    cr_assert_str_eq(reason, "resume");
    cr_assert(s > 5.0 - late && s < 5.1 + late, "%f", s);
    dbus_message_unref(m);

    fx_bridge_clock(&F, 0, "resume"); /* guest now 8 s ahead: never stepped back */
    m = fx_wait_signal(c, "ClockCorrected", 700);
    cr_assert_null(m, "no backward step outside a restore");
    cr_assert(log_contains("AHEAD of the host"));
    fx_client_close(c);
}

/* After a resume the Clock can reach a slow guest late (a checkpoint restored into a fresh
 * QEMU translates all guest code again): the helper asks for a round trip and follows the
 * answer, without leaving the session (requests keep flowing), and says it once. A bridge
 * without "time-probe" is asked with a Hello, one with it with a TimeProbe (no Hello: a
 * Hello makes the bridge resend and counts against its Hello rate limit). */
static void resume_step_refined(int time_probe)
{
    DBusConnection *c;
    DBusMessage *m;
    struct vms_msg *q, w;
    const char *reason;
    double s;
    int rounds = 0;
    enum vms_msg_type asked = time_probe ? VMS_MSG_TIME_PROBE : VMS_MSG_HELLO;

    start(NULL);
    c = fx_client(&F);
    handshake_caps(1, 0, time_probe ? VMS_CAP_KNOWN : VMS_CAP_KNOWN & ~VMS_CAP_TIME_PROBE);
    /* the host is 5 s ahead; its Clock waited 60 ms on the way in */
    fx_bridge_clock(&F, 5000000000ll - 60000000ll, "resume");
    cr_assert_null(fx_wait_signal(c, "ClockCorrected", 100), "one signal, after the refinement");
    while ((q = fx_bridge_expect(&F, asked, rounds ? 400 : 3000)) != NULL) {
        rounds++;
        vms_msg_init(&w, time_probe ? VMS_MSG_TIME : VMS_MSG_WELCOME);
        vms_msg_set_u64(&w, VMS_F_NONCE, q->nonce);
        if (!time_probe) {
            vms_msg_set_u64(&w, VMS_F_VERSION, 1);
            vms_msg_set_u64(&w, VMS_F_EPOCH, 1);
            vms_msg_set_u64(&w, VMS_F_CAPS, VMS_CAP_KNOWN & ~VMS_CAP_TIME_PROBE);
        }
        vms_msg_set_u64(&w, VMS_F_TIME_NS, fx_realtime_ns() + 5000000000ull);
        fx_bridge_send(&F, &w);
        vms_msg_clear(&w);
        fx_msg_free(q);
        m = fx_wait_signal(c, "ClockCorrected", 300);
        if (m)
            break;
    }
    cr_assert_geq(rounds, 1, "a %s after the resume's Clock", time_probe ? "TimeProbe" : "Hello");
    if (!m)
        m = fx_wait_signal(c, "ClockCorrected", 3000);
    cr_assert_not_null(m);
    s = clock_corrected(m, &reason);
    cr_assert_str_eq(reason, "resume");
    cr_assert(s > 4.99 - fx_late_s() && s < 5.03 + fx_late_s(),
              "the round trip refined the 60 ms the Clock lost: %f", s);
    dbus_message_unref(m);
    cr_assert(log_contains("clock (resume): corrected by"));
    if (time_probe)
        cr_assert_null(fx_bridge_expect(&F, VMS_MSG_HELLO, 300), "no Hello for the clock");
    fx_client_close(c);
}

Test(hooks, resume_step_refined_by_a_clock_hello)
{
    resume_step_refined(0);
}

Test(hooks, resume_step_refined_by_a_time_probe)
{
    resume_step_refined(1);
}

Test(hooks, restore_corrects_backward_then_hooks_then_restored)
{
    DBusConnection *c;
    DBusMessage *m;
    struct vms_msg t, *hello, w;
    const char *reason, *sid;
    dbus_uint64_t ep;
    double s;
    char *out;

    start(NULL);
    write_hook("post-restore.d", "10-note",
               "echo \"$VMSTATE_EPOCH $VMSTATE_STATE_ID $VMSTATE_REQUEST_ID\" >> ../../post.txt\n"
               "sleep 0.2");
    c = fx_client(&F);
    handshake(1, 0);
    /* the restored state's clock is 4 s AHEAD (e.g. the host's clock was set back) */
    vms_msg_init(&t, VMS_MSG_TIMELINE);
    vms_msg_set_u64(&t, VMS_F_EPOCH, 2);
    vms_msg_set_str(&t, VMS_F_STATE_ID, "st-1");
    vms_msg_set_str(&t, VMS_F_REASON, "restore");
    vms_msg_set_str(&t, VMS_F_REQUEST_ID, "0123456789abcdef0123456789abcdef");
    vms_msg_set_u64(&t, VMS_F_TIME_NS, fx_realtime_ns() - 4000000000ull);
    fx_bridge_send(&F, &t);
    vms_msg_clear(&t);
    hello = fx_bridge_expect(&F, VMS_MSG_HELLO, 3000);
    cr_assert_not_null(hello, "Hello after the Timeline");
    cr_assert_null(fx_wait_signal(c, "Restored", 300), "Restored waits for the Welcome and hooks");
    vms_msg_init(&w, VMS_MSG_WELCOME);
    vms_msg_set_u64(&w, VMS_F_VERSION, 1);
    vms_msg_set_u64(&w, VMS_F_NONCE, hello->nonce);
    vms_msg_set_u64(&w, VMS_F_EPOCH, 2);
    vms_msg_set_u64(&w, VMS_F_TIME_NS, fx_realtime_ns() - 4000000000ull - 100000000ull);
    fx_bridge_send(&F, &w);
    vms_msg_clear(&w);
    fx_msg_free(hello);
    /* that round trip took over 300 ms (a slow restored guest): the helper asks again, and
     * the quick answer to that Hello is the one its clock follows */
    hello = fx_bridge_expect(&F, VMS_MSG_HELLO, 3000);
    cr_assert_not_null(hello, "Hello again: the first round trip was too long to trust");
    cr_assert_null(fx_wait_signal(c, "Restored", 0), "Restored waits for the refinement");
    vms_msg_init(&w, VMS_MSG_WELCOME);
    vms_msg_set_u64(&w, VMS_F_VERSION, 1);
    vms_msg_set_u64(&w, VMS_F_NONCE, hello->nonce);
    vms_msg_set_u64(&w, VMS_F_EPOCH, 2);
    vms_msg_set_u64(&w, VMS_F_TIME_NS, fx_realtime_ns() - 4000000000ull);
    fx_bridge_send(&F, &w);
    vms_msg_clear(&w);
    fx_msg_free(hello);
    m = fx_wait_signal(c, "ClockCorrected", 3000);
    cr_assert_not_null(m);
    s = clock_corrected(m, &reason);
    cr_assert_str_eq(reason, "restore");
    cr_assert(s < -3.97 && s > -4.0 - fx_late_s(),
              "one restore correction, refined by the quickest Welcome: %f", s);
    dbus_message_unref(m);
    m = fx_wait_signal(c, "Restored", 3000);
    cr_assert_not_null(m);
    cr_assert(dbus_message_get_args(m, NULL, DBUS_TYPE_STRING, &sid, DBUS_TYPE_UINT64, &ep,
                                    DBUS_TYPE_INVALID));
    cr_assert_str_eq(sid, "st-1");
    cr_assert_eq(ep, 2);
    dbus_message_unref(m);
    out = slurp("post.txt");
    cr_assert_not_null(out, "post-restore.d ran before Restored");
    cr_assert_str_eq(out, "2 st-1 0123456789abcdef0123456789abcdef\n");
    /* a replayed Timeline changes nothing: no second run */
    vms_msg_init(&t, VMS_MSG_TIMELINE);
    vms_msg_set_u64(&t, VMS_F_EPOCH, 2);
    vms_msg_set_u64(&t, VMS_F_TIME_NS, fx_realtime_ns() - 60000000000ull);
    fx_bridge_send(&F, &t);
    vms_msg_clear(&t);
    cr_assert_null(fx_wait_signal(c, "Restored", 700));
    cr_assert_str_eq(slurp("post.txt"), "2 st-1 0123456789abcdef0123456789abcdef\n");
    fx_client_close(c);
}

#define RID "00112233445566778899aabbccddeeff"

Test(hooks, pre_save_hooks_in_order_then_ready)
{
    DBusConnection *c;
    DBusMessage *m;
    struct vms_msg *r;
    const char *id, *label;

    start(NULL);
    write_hook("pre-save.d", "20-second", "echo \"2 $VMSTATE_HOOK\" >> ../../order.txt");
    write_hook("pre-save.d", "10-first",
               "echo \"1 $VMSTATE_REQUEST_ID $VMSTATE_LABEL\" >> ../../order.txt; echo hello-log");
    write_hook("pre-save.d", ".hidden", "echo hidden >> ../../order.txt");
    write_hook("pre-save.d", "30-fails", "exit 3");
    c = fx_client(&F);
    handshake(1, 0);
    fx_bridge_prepare(&F, RID, "before upgrade");
    m = fx_wait_signal(c, "PrepareSave", 3000);
    cr_assert_not_null(m, "PrepareSave broadcast");
    cr_assert(dbus_message_get_args(m, NULL, DBUS_TYPE_STRING, &id, DBUS_TYPE_STRING, &label,
                                    DBUS_TYPE_INVALID));
    cr_assert_str_eq(id, RID);
    cr_assert_str_eq(label, "before upgrade");
    dbus_message_unref(m);
    r = fx_bridge_expect(&F, VMS_MSG_READY, 5000);
    cr_assert_not_null(r, "Ready after the hooks");
    cr_assert_str_eq(r->request_id, RID);
    cr_assert_eq(r->status, VMS_STATUS_OK);
    cr_assert(strstr(r->message, "2 ok, 1 failed") != NULL, "%s", r->message);
    fx_msg_free(r);
    cr_assert_str_eq(slurp("order.txt"), "1 " RID " before upgrade\n2 pre-save\n");
    cr_assert(log_contains("req=" RID ": pre-save hook 10-first: hello-log"));
    fx_client_close(c);
}

Test(hooks, no_listener_no_wait)
{
    struct vms_msg *r;
    uint64_t t0;

    start("prepare_window_ms = 3000\n");
    handshake(1, 0);
    t0 = fx_now_ms();
    fx_bridge_prepare(&F, RID, "x");
    r = fx_bridge_expect(&F, VMS_MSG_READY, 2000);
    cr_assert_not_null(r, "with no listener registered, Ready must not wait for the window");
    cr_assert_eq(r->status, VMS_STATUS_OK);
    cr_assert_lt(fx_now_ms() - t0, fx_ms(2000));
    fx_msg_free(r);
}

static void call_proceed(DBusConnection *c, const char *id, const char *want_error)
{
    DBusMessage *call, *reply;
    DBusError e;

    call = dbus_message_new_method_call("org.vmstate.Helper1", "/org/vmstate/Helper1",
                                        "org.vmstate.Helper1", "Proceed");
    dbus_message_append_args(call, DBUS_TYPE_STRING, &id, DBUS_TYPE_INVALID);
    dbus_error_init(&e);
    reply = dbus_connection_send_with_reply_and_block(c, call, 3000, &e);
    dbus_message_unref(call);
    if (want_error) {
        cr_assert_null(reply);
        cr_assert_str_eq(e.name, want_error);
        dbus_error_free(&e);
        return;
    }
    cr_assert_not_null(reply, "Proceed: %s", e.message ? e.message : "");
    dbus_message_unref(reply);
}

/* The window waits for each listener connection until it says Proceed (or goes). */
Test(hooks, window_ends_once_every_listener_proceeds)
{
    DBusConnection *a, *b;
    DBusMessage *m;
    struct vms_msg *r;
    uint64_t t0;

    start("prepare_window_ms = 8000\n");
    a = fx_client(&F);
    b = fx_client(&F);
    cr_assert_eq(fx_register(a, "org.example.Notes"), 0);
    cr_assert_eq(fx_register(a, "org.example.Other"), 0); /* one connection, two app ids */
    cr_assert_eq(fx_register(b, "org.example.Db"), 0);
    handshake(1, 0);
    t0 = fx_now_ms();
    fx_bridge_prepare(&F, RID, "x");
    m = fx_wait_signal(a, "PrepareSave", 3000);
    cr_assert_not_null(m);
    dbus_message_unref(m);
    call_proceed(a, RID, NULL);
    r = fx_bridge_expect(&F, VMS_MSG_READY, 500);
    cr_assert_null(r, "b has not proceeded: still waiting");
    call_proceed(a, "ffffffffffffffffffffffffffffffff", "org.vmstate.Helper1.Error.NotFound");
    fx_client_close(b); /* a connection that goes is not waited for */
    r = fx_bridge_expect(&F, VMS_MSG_READY, 3000);
    cr_assert_not_null(r, "Ready once every listener proceeded or went");
    cr_assert_eq(r->status, VMS_STATUS_OK);
    cr_assert_lt(fx_now_ms() - t0, fx_ms(6000), "well before the 8 s window");
    fx_msg_free(r);
    call_proceed(a, RID, "org.vmstate.Helper1.Error.NotFound"); /* over */
    fx_client_close(a);
}

Test(hooks, inhibit_vetoes_the_save)
{
    DBusConnection *c;
    DBusMessage *m, *call, *reply;
    struct vms_msg *r;
    const char *id = RID, *reason = "unsaved work", *err = NULL;
    DBusError e;

    start("prepare_window_ms = 2000\n");
    c = fx_client(&F);
    cr_assert_eq(fx_register(c, "org.example.Notes"), 0); /* inhibitors are listeners */
    handshake(1, 0);
    fx_bridge_prepare(&F, RID, "x");
    m = fx_wait_signal(c, "PrepareSave", 3000);
    cr_assert_not_null(m);
    dbus_message_unref(m);
    call = dbus_message_new_method_call("org.vmstate.Helper1", "/org/vmstate/Helper1",
                                        "org.vmstate.Helper1", "Inhibit");
    dbus_message_append_args(call, DBUS_TYPE_STRING, &id, DBUS_TYPE_STRING, &reason,
                             DBUS_TYPE_INVALID);
    dbus_error_init(&e);
    reply = dbus_connection_send_with_reply_and_block(c, call, 3000, &e);
    cr_assert_not_null(reply, "Inhibit: %s", e.message ? e.message : "");
    dbus_message_unref(reply);
    r = fx_bridge_expect(&F, VMS_MSG_READY, 1000);
    cr_assert_not_null(r, "Ready at once when inhibited, before the window ends");
    cr_assert_eq(r->status, VMS_STATUS_ERR_INHIBITED);
    cr_assert(strstr(r->message, "unsaved work") != NULL, "%s", r->message);
    fx_msg_free(r);
    /* too late now */
    reply = dbus_connection_send_with_reply_and_block(c, call, 3000, &e);
    cr_assert_null(reply);
    err = e.name;
    cr_assert_str_eq(err, "org.vmstate.Helper1.Error.NotFound");
    dbus_error_free(&e);
    dbus_message_unref(call);
    fx_client_close(c);
}

Test(hooks, hung_hook_is_killed_and_the_bus_stays_responsive)
{
    DBusConnection *c;
    DBusMessage *call, *reply;
    struct vms_msg *r;
    uint64_t t0, t1;
    const char *iface = "org.vmstate.Helper1", *prop = "Epoch";

    start(NULL);
    write_hook("pre-save.d", "50-hang", "echo $$ > ../../hang.pid; sleep 30");
    c = fx_client(&F);
    handshake(1, 0);
    t0 = fx_now_ms();
    fx_bridge_prepare(&F, RID, "x");
    usleep(200000);
    /* the D-Bus loop answers while the hook runs */
    call = dbus_message_new_method_call("org.vmstate.Helper1", "/org/vmstate/Helper1",
                                        "org.freedesktop.DBus.Properties", "Get");
    dbus_message_append_args(call, DBUS_TYPE_STRING, &iface, DBUS_TYPE_STRING, &prop,
                             DBUS_TYPE_INVALID);
    t1 = fx_now_ms();
    reply = dbus_connection_send_with_reply_and_block(c, call, 3000, NULL);
    cr_assert_not_null(reply);
    cr_assert_lt(fx_now_ms() - t1, fx_ms(300), "the bus call waited for the hook");
    dbus_message_unref(reply);
    dbus_message_unref(call);
    r = fx_bridge_expect(&F, VMS_MSG_READY, 5000);
    cr_assert_not_null(r);
    cr_assert_eq(r->status, VMS_STATUS_OK);
    cr_assert(strstr(r->message, "1 killed") != NULL, "%s", r->message);
    cr_assert_geq(fx_now_ms() - t0, 650);
    cr_assert_lt(fx_now_ms() - t0, fx_ms(3000));
    fx_msg_free(r);
    cr_assert(log_contains("pre-save hook 50-hang killed after 700 ms"));
    {
        char *pid = slurp("hang.pid");
        char path[64];
        cr_assert_not_null(pid);
        snprintf(path, sizeof(path), "/proc/%d", atoi(pid));
        usleep(100000);
        cr_assert_neq(access(path, F_OK), 0, "the hook's shell is gone");
    }
    fx_client_close(c);
}

Test(hooks, completions_after_a_timeline_wait_for_restored)
{
    DBusConnection *c;
    DBusMessage *m;
    struct vms_msg t, *hello, w;
    uint64_t t0;

    start(NULL);
    write_hook("post-restore.d", "10-slow", "sleep 0.5");
    c = fx_client(&F);
    cr_assert_eq(fx_register(c, "org.example.Notes"), 0);
    handshake(1, 0);
    vms_msg_init(&t, VMS_MSG_TIMELINE);
    vms_msg_set_u64(&t, VMS_F_EPOCH, 2);
    vms_msg_set_str(&t, VMS_F_STATE_ID, "st-9");
    fx_bridge_send(&F, &t);
    vms_msg_clear(&t);
    F.epoch = 2;
    t0 = fx_now_ms();
    fx_bridge_event(&F, "0123456789abcdef0123456789abcdef", "restore", 0, "org.example.Notes", "hi",
                    "st-9", 1);
    hello = fx_bridge_expect(&F, VMS_MSG_HELLO, 3000);
    cr_assert_not_null(hello);
    cr_assert_not_null(fx_bridge_expect(&F, VMS_MSG_ACK, 3000), "the event is acked at once");
    vms_msg_init(&w, VMS_MSG_WELCOME);
    vms_msg_set_u64(&w, VMS_F_VERSION, 1);
    vms_msg_set_u64(&w, VMS_F_NONCE, hello->nonce);
    vms_msg_set_u64(&w, VMS_F_EPOCH, 2);
    fx_bridge_send(&F, &w);
    fx_msg_free(hello);
    /* the post-restore hook takes 0.5 s: Restored after it, the completion after Restored */
    m = fx_wait_signal(c, "Restored", 3000);
    cr_assert_not_null(m);
    dbus_message_unref(m);
    cr_assert_geq(fx_now_ms() - t0, 450);
    m = fx_wait_signal(c, "Completed", 3000);
    cr_assert_not_null(m, "the deferred completion follows Restored");
    dbus_message_unref(m);
    cr_assert(log_contains("restore completion deferred until Restored"));
    fx_client_close(c);
}

Test(hooks, clock_connect_makes_a_welcomed_helper_say_hello)
{
    struct vms_msg c, *hello;

    start(NULL);
    handshake(1, 0);
    vms_msg_init(&c, VMS_MSG_CLOCK);
    vms_msg_set_str(&c, VMS_F_REASON, "connect"); /* no time: clock_sync = no on the host */
    fx_bridge_send(&F, &c);
    vms_msg_clear(&c);
    hello = fx_bridge_expect(&F, VMS_MSG_HELLO, 3000);
    cr_assert_not_null(hello, "a restarted bridge learns our capabilities");
    cr_assert(hello->caps & VMS_CAP_PREPARE);
    fx_msg_free(hello);
}
