/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * test-helper-bus.c — vmstate-helperd component tests: the real daemon on a
 * private dbus-daemon, unix sockets for its two ports, and a fake bridge
 * built from common/ (issue 4 acceptance).
 */
#include "config.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "test-helper-fixture.h"
#include "vms-dbus-reference.h"
#include "vms-wire.h"

#define APP "org.example.Notes"

static struct fx F;

static void stop(void)
{
    fx_stop(&F);
}

TestSuite(helper, .fini = stop, .timeout = 60);

static int log_contains(const char *needle)
{
    char buf[1 << 16];
    FILE *fp = fopen(F.helper_log, "r");
    size_t n;

    if (!fp)
        return 0;
    n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

/* The next Request on port A from @uid; checks it carries what the bridge needs. */
static struct vms_msg *expect_request_from(const char *op, uid_t uid)
{
    struct vms_msg *r = fx_bridge_expect(&F, VMS_MSG_REQUEST, 3000);
    cr_assert_not_null(r, "no Request reached the bridge");
    cr_assert_str_eq(r->op, op);
    cr_assert_str_eq(r->principal, "alice");
    cr_assert_str_eq(r->secret, "correct horse");
    cr_assert(vms_msg_has(r, VMS_F_UID));
    cr_assert_eq(r->uid, uid);
    return r;
}

static struct vms_msg *expect_request(const char *op)
{
    return expect_request_from(op, getuid());
}

static void reply_ok(const char *request_id)
{
    struct vms_msg m;
    vms_msg_init(&m, VMS_MSG_REPLY);
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, request_id);
    vms_msg_set_u64(&m, VMS_F_STATUS, 0);
    fx_bridge_send(&F, &m);
}

static void assert_completed(DBusConnection *c, const char *request_id, const char *data)
{
    DBusMessage *s = fx_wait_signal(c, "Completed", 3000);
    const char *rid, *op, *app;
    uint32_t status;
    char buf[256];

    cr_assert_not_null(s, "no Completed for %s", request_id);
    fx_completed_args(s, &rid, &op, &status, &app, buf, sizeof(buf), NULL);
    cr_assert_str_eq(rid, request_id);
    cr_assert_str_eq(app, APP);
    if (data)
        cr_assert_str_eq(buf, data);
    dbus_message_unref(s);
}

static void assert_no_completed(DBusConnection *c, int ms)
{
    DBusMessage *s = fx_wait_signal(c, "Completed", ms);
    if (s) {
        const char *rid;
        fx_completed_args(s, &rid, NULL, NULL, NULL, NULL, 0, NULL);
        cr_assert_fail("unexpected Completed for %s", rid);
    }
}

static int bridge_connected(DBusConnection *c)
{
    const char *iface = "org.vmstate.Helper1", *prop = "BridgeConnected";
    DBusMessage *m, *r;
    DBusMessageIter it, v;
    dbus_bool_t b;

    m = dbus_message_new_method_call("org.vmstate.Helper1", "/org/vmstate/Helper1",
                                     "org.freedesktop.DBus.Properties", "Get");
    dbus_message_append_args(m, DBUS_TYPE_STRING, &iface, DBUS_TYPE_STRING, &prop,
                             DBUS_TYPE_INVALID);
    r = dbus_connection_send_with_reply_and_block(c, m, 2000, NULL);
    dbus_message_unref(m);
    cr_assert_not_null(r);
    cr_assert(dbus_message_has_signature(r, "v"));
    dbus_message_iter_init(r, &it);
    dbus_message_iter_recurse(&it, &v);
    dbus_message_iter_get_basic(&v, &b);
    dbus_message_unref(r);
    return b ? 1 : 0;
}

Test(helper, save_returns_id_at_once_and_completes)
{
    DBusConnection *c;
    const char *id, *err;
    char rid[64];
    uint64_t t0;
    struct vms_msg *req, *ack;

    fx_start(&F, NULL);
    fx_bridge_handshake(&F, 1);
    c = fx_client(&F);
    cr_assert_eq(fx_register(c, APP), 0);
    t0 = fx_now_ms();
    id = fx_save(c, "before upgrade", APP, "hello", &err);
    cr_assert_not_null(id, "Save failed: %s", err);
    cr_assert_lt(fx_now_ms() - t0, fx_ms(500), "Save took %llu ms",
                 (unsigned long long)(fx_now_ms() - t0));
    cr_assert(vms_valid_request_id(id));
    snprintf(rid, sizeof(rid), "%s", id);
    req = expect_request("save");
    cr_assert_str_eq(req->request_id, rid);
    cr_assert_str_eq(req->label, "before upgrade");
    cr_assert_eq(req->app_data_len, 5);
    reply_ok(rid);
    fx_bridge_event(&F, rid, "save", 0, APP, "hello", "s1", 1);
    assert_completed(c, rid, "hello");
    ack = fx_bridge_expect(&F, VMS_MSG_ACK, 3000);
    cr_assert_not_null(ack, "event not acked");
    cr_assert_str_eq(ack->request_id, rid);
    cr_assert_eq(ack->seq, 1);
    cr_assert_eq(ack->epoch, 1);
    fx_msg_free(req);
    fx_msg_free(ack);
    fx_client_close(c);
}

Test(helper, request_id_returned_at_once_while_bridge_is_absent)
{
    DBusConnection *c;
    const char *id, *err;
    uint64_t t0;
    char rid[64];
    struct vms_msg *req;

    fx_start(&F, NULL); /* nobody accepts on the port sockets */
    c = fx_client(&F);
    t0 = fx_now_ms();
    id = fx_save(c, "x", APP, "", &err);
    cr_assert_not_null(id, "Save refused: %s", err);
    cr_assert_lt(fx_now_ms() - t0, fx_ms(500));
    snprintf(rid, sizeof(rid), "%s", id);
    /* queued: goes out after the handshake */
    fx_bridge_handshake(&F, 1);
    req = expect_request("save");
    cr_assert_str_eq(req->request_id, rid);
    fx_msg_free(req);
    fx_client_close(c);
}

Test(helper, fan_out_to_every_listener_of_the_app_only)
{
    DBusConnection *l[3], *other, *c;
    const char *id, *err;
    char rid[64];

    fx_start(&F, NULL);
    fx_bridge_handshake(&F, 1);
    for (int i = 0; i < 3; i++) {
        l[i] = fx_client(&F);
        cr_assert_eq(fx_register(l[i], APP), 0);
    }
    other = fx_client(&F);
    cr_assert_eq(fx_register(other, "org.example.Other"), 0);
    c = fx_client(&F);
    id = fx_save(c, "x", APP, "data", &err);
    cr_assert_not_null(id, "%s", err);
    snprintf(rid, sizeof(rid), "%s", id);
    fx_msg_free(expect_request("save"));
    fx_bridge_event(&F, rid, "save", 0, APP, "data", "s1", 7);
    for (int i = 0; i < 3; i++)
        assert_completed(l[i], rid, "data");
    assert_no_completed(other, 300);
    assert_no_completed(c, 10); /* the caller did not register: unicast, not broadcast */
    for (int i = 0; i < 3; i++)
        fx_client_close(l[i]);
    fx_client_close(other);
    fx_client_close(c);
}

/* A fan-out whose queue to the bus passes 64 KiB waits for dbus-daemon to take it (the queue
 * was the helper's peak memory), and every listener still gets its completion. dbus-daemon is
 * stopped while the event arrives, so the queue fills whatever the helper's speed (under
 * valgrind the bus kept up and nothing queued); the helper waits at most 1 s, then queues. */
Test(helper, large_fan_out_waits_for_the_bus_and_loses_nothing)
{
    enum { N = 24 };
    DBusConnection *l[N], *c;
    static char data[60001];
    const char *id, *err;
    char rid[64];

    memset(data, 'd', sizeof(data) - 1);
    fx_start(&F, NULL);
    fx_bridge_handshake(&F, 1);
    for (int i = 0; i < N; i++) {
        l[i] = fx_client(&F);
        cr_assert_eq(fx_register(l[i], APP), 0);
    }
    c = fx_client(&F);
    id = fx_save(c, "x", APP, "small", &err);
    cr_assert_not_null(id, "%s", err);
    snprintf(rid, sizeof(rid), "%s", id);
    fx_msg_free(expect_request("save"));
    cr_assert_eq(kill(F.dbus_pid, SIGSTOP), 0);
    fx_bridge_event(&F, rid, "save", 0, APP, data, "s1", 7);
    usleep(1500000);
    cr_assert_eq(kill(F.dbus_pid, SIGCONT), 0);
    for (int i = 0; i < N; i++) {
        DBusMessage *s = fx_wait_signal(l[i], "Completed", 10000);
        const char *got_rid, *op, *app;
        static char got[sizeof(data)];
        uint32_t status;

        cr_assert_not_null(s, "listener %d: no Completed", i);
        fx_completed_args(s, &got_rid, &op, &status, &app, got, sizeof(got), NULL);
        cr_assert_str_eq(got_rid, rid);
        cr_assert_str_eq(got, data, "listener %d: app data differs", i);
        dbus_message_unref(s);
    }
    cr_assert(log_contains("waited"), "the fan-out never waited for the bus (see %s)",
              F.helper_log);
    for (int i = 0; i < N; i++)
        fx_client_close(l[i]);
    fx_client_close(c);
}

Test(helper, listener_dropped_with_its_connection)
{
    DBusConnection *gone, *late;
    char rid[] = "00112233445566778899aabbccddeeff";

    fx_start(&F, NULL);
    fx_bridge_handshake(&F, 1);
    gone = fx_client(&F);
    cr_assert_eq(fx_register(gone, APP), 0);
    fx_client_close(gone);
    usleep(200000); /* NameOwnerChanged reaches the helper */
    cr_assert(log_contains("removed"), "registration not removed (see %s)", F.helper_log);
    /* With no listener left the event is held, and a late listener still gets it. */
    fx_bridge_event(&F, rid, "save", 0, APP, "kept", "s1", 1);
    usleep(300000);
    cr_assert(log_contains("holding save completion"));
    late = fx_client(&F);
    cr_assert_eq(fx_register(late, APP), 0);
    assert_completed(late, rid, "kept");
    fx_msg_free(fx_bridge_expect(&F, VMS_MSG_ACK, 3000)); /* acked once delivered */
    fx_client_close(late);
}

/*
 * The helper needs NameOwnerChanged only for departures (listener_dropped_with_its_connection
 * above): its rule must not match a connection joining the bus, or every client of the
 * guest's bus, vmstate's or not, wakes the helper with a signal it has no use for.
 */
Test(helper, watches_departures_only)
{
    static char rules[16384];
    char helper[64];
    const char *line;
    DBusConnection *c;
    int n = 0;

    fx_start(&F, NULL);
    c = fx_client(&F);
    fx_name_owner(c, "org.vmstate.Helper1", helper, sizeof(helper));
    fx_match_rules(c, rules, sizeof(rules));
    for (line = rules; (line = strstr(line, helper)); line++) {
        const char *end = strchr(line, '\n');
        char rule[1024];

        if (line != rules && line[-1] != '\n')
            continue;
        snprintf(rule, sizeof(rule), "%.*s", (int)(end ? end - line : (long)strlen(line)), line);
        if (!strstr(rule, "member='NameOwnerChanged'"))
            continue;
        n++;
        cr_assert(strstr(rule, "arg2=''"), "the helper's rule matches joins too: %s", rule);
    }
    cr_assert_eq(n, 1, "the helper watches NameOwnerChanged once (%d rules):\n%s", n, rules);
    fx_client_close(c);
}

Test(helper, grace_period_then_drop)
{
    DBusConnection *c;
    char r1[] = "0000000000000000000000000000aaaa";
    char r2[] = "0000000000000000000000000000bbbb";

    fx_start(&F, NULL); /* grace_period_ms = 1500 */
    fx_bridge_handshake(&F, 1);
    fx_bridge_event(&F, r1, "restore", 0, APP, "message from the other instance", "s1", 1);
    /* held, not acked yet: acked when it leaves the hold */
    cr_assert_eq(fx_bridge_count(&F, VMS_MSG_ACK, 500), 0);
    c = fx_client(&F);
    cr_assert_eq(fx_register(c, APP), 0); /* within the grace period */
    assert_completed(c, r1, "message from the other instance");
    fx_msg_free(fx_bridge_expect(&F, VMS_MSG_ACK, 3000)); /* delivered: acked */
    fx_client_close(c);
    usleep(200000); /* its registration ends (NameOwnerChanged) */

    fx_bridge_event(&F, r2, "save", 0, APP, "late", "s2", 2);
    usleep(2200000); /* past the grace period */
    cr_assert(log_contains("no listener registered within 1500 ms"));
    fx_msg_free(fx_bridge_expect(&F, VMS_MSG_ACK, 3000)); /* dropped: acked (processed) */
    c = fx_client(&F);
    cr_assert_eq(fx_register(c, APP), 0);
    assert_no_completed(c, 300);
    fx_client_close(c);
}

Test(helper, resync_after_garbage)
{
    DBusConnection *c;
    char rid[] = "0123456789abcdef0123456789abcdef";
    uint8_t junk[300];
    uint8_t *frame;
    size_t len;
    char err[128];
    struct vms_msg e;

    fx_start(&F, NULL);
    fx_bridge_handshake(&F, 1);
    c = fx_client(&F);
    cr_assert_eq(fx_register(c, APP), 0);
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (uint8_t)(i * 37 + 11);
    fx_bridge_send_raw(&F, junk, sizeof(junk));
    /* and a half frame: a sync byte and a header, then the real frame */
    vms_msg_init(&e, VMS_MSG_EVENT);
    vms_msg_set_str(&e, VMS_F_REQUEST_ID, rid);
    vms_msg_set_str(&e, VMS_F_OP, "save");
    vms_msg_set_u64(&e, VMS_F_STATUS, 0);
    vms_msg_set_u64(&e, VMS_F_EPOCH, 1);
    vms_msg_set_u64(&e, VMS_F_SEQ, 3);
    vms_msg_set_str(&e, VMS_F_APP_ID, APP);
    cr_assert_eq(vms_msg_encode_frame(&e, &frame, &len, err, sizeof(err)), 0);
    fx_bridge_send_raw(&F, frame, len / 2);
    fx_bridge_send_raw(&F, frame, len);
    free(frame);
    assert_completed(c, rid, NULL);
    fx_client_close(c);
}

Test(helper, resync_after_hangup_resends_and_says_hello_again)
{
    DBusConnection *c, *w;
    const char *id, *err;
    char rid[64];
    struct vms_msg *req;

    fx_start(&F, NULL);
    fx_bridge_handshake(&F, 3);
    c = fx_client(&F);
    w = fx_client(&F);
    cr_assert_eq(fx_register(w, APP), 0);
    cr_assert_eq(bridge_connected(c), 1);
    fx_bridge_hangup(&F);
    usleep(200000);
    cr_assert_eq(bridge_connected(c), 0);
    id = fx_save(c, "during hangup", APP, "q", &err); /* queued */
    cr_assert_not_null(id, "%s", err);
    snprintf(rid, sizeof(rid), "%s", id);
    fx_bridge_handshake(&F, 3); /* the helper reconnects and says Hello */
    req = expect_request("save");
    cr_assert_str_eq(req->request_id, rid);
    cr_assert_eq(bridge_connected(c), 1);
    reply_ok(rid);
    fx_bridge_event(&F, rid, "save", 0, APP, "q", "s9", 4);
    assert_completed(w, rid, "q");
    cr_assert(log_contains("bridge disconnected"));
    fx_msg_free(req);
    fx_client_close(c);
    fx_client_close(w);
}

/*
 * A read-only request the bridge answers at once gets no Reply and no journal row (issue 18):
 * the helper holds it until its Event, so a bridge that went away before answering is asked
 * again after the new Welcome; the Event (seq 0) is delivered and not acked.
 */
Test(helper, unanswered_read_only_request_is_asked_again_after_hangup)
{
    DBusConnection *c, *w;
    const char *app = APP, *err, *rid;
    char id[64];
    struct vms_msg *req;
    DBusMessage *r;

    fx_start(&F, NULL);
    fx_bridge_handshake(&F, 3);
    c = fx_client(&F);
    w = fx_client(&F);
    cr_assert_eq(fx_register(w, APP), 0);
    r = fx_call(c, "HostInfo", 2000, &err, DBUS_TYPE_STRING, &app, DBUS_TYPE_INVALID);
    cr_assert_not_null(r, "%s", err);
    cr_assert(dbus_message_get_args(r, NULL, DBUS_TYPE_STRING, &rid, DBUS_TYPE_INVALID));
    snprintf(id, sizeof(id), "%s", rid);
    dbus_message_unref(r);
    req = expect_request("hostinfo");
    cr_assert_str_eq(req->request_id, id);
    fx_msg_free(req);
    fx_bridge_hangup(&F); /* the bridge dies before it answers */
    usleep(200000);
    fx_bridge_handshake(&F, 3);
    req = expect_request("hostinfo");
    cr_assert_str_eq(req->request_id, id, "the held request is asked again");
    fx_msg_free(req);
    fx_bridge_event(&F, id, "hostinfo", 0, APP, NULL, NULL, 0);
    assert_completed(w, id, NULL);
    cr_assert_eq(fx_bridge_count(&F, VMS_MSG_ACK, 300), 0, "an Event of seq 0 was acked");
    fx_client_close(c);
    fx_client_close(w);
}

Test(helper, duplicate_events_dropped_and_acked)
{
    DBusConnection *c;
    char rid[] = "feedfacefeedfacefeedfacefeedface";

    fx_start(&F, NULL);
    fx_bridge_handshake(&F, 1);
    c = fx_client(&F);
    cr_assert_eq(fx_register(c, APP), 0);
    fx_bridge_event(&F, rid, "save", 0, APP, "once", "s1", 1);
    fx_bridge_event(&F, rid, "save", 0, APP, "once", "s1", 1); /* resent */
    F.epoch = 2; /* the same completion again in a new timeline (replay after restore) */
    fx_bridge_event(&F, rid, "save", 0, APP, "once", "s1", 1);
    assert_completed(c, rid, "once");
    assert_no_completed(c, 400);
    cr_assert_eq(fx_bridge_count(&F, VMS_MSG_ACK, 200), 3, "every copy must be acked");
    fx_client_close(c);
}

Test(helper, uid_not_allowed_gets_permission_error)
{
    DBusConnection *c;
    const char *err = NULL;
    struct fx_opts o = {.allow_me = -1};

    fx_start(&F, &o);
    c = fx_client(&F);
    cr_assert_null(fx_save(c, "x", APP, "", &err));
    cr_assert_str_eq(err, "org.vmstate.Helper1.Error.Permission");
    cr_assert_neq(fx_register(c, APP), 0);
    fx_client_close(c);
}

/* A caller that is neither root nor bound to anything: the test's own uid, or nobody's when
 * the tests run as root (the bus refuses a uid without a passwd entry). Tests add it to
 * allow_users. */
static uid_t plain_uid(void)
{
    struct passwd *pw;

    if (getuid() != 0)
        return getuid();
    pw = getpwnam("nobody");
    if (!pw)
        cr_skip_test("no user 'nobody' to call as");
    return pw->pw_uid;
}

/* RegisterListener(@app_id) is refused with Permission and a message naming the app id. */
static void assert_register_refused(DBusConnection *c, const char *app_id)
{
    const char *err = NULL;

    cr_assert_null(
        fx_call(c, "RegisterListener", 2000, &err, DBUS_TYPE_STRING, &app_id, DBUS_TYPE_INVALID));
    cr_assert_str_eq(err, "org.vmstate.Helper1.Error.Permission");
    cr_assert(strstr(fx_error_message, app_id), "message does not name %s: %s", app_id,
              fx_error_message);
}

Test(helper, app_bound_to_another_uid_is_refused)
{
    DBusConnection *c, *root;
    const char *err = NULL;
    char extra[200];
    struct fx_opts o = {.extra_config = extra};

    snprintf(extra, sizeof(extra), "allow_users = %u\n[apps]\n%s = 4243\n", (unsigned)plain_uid(),
             APP);
    fx_start(&F, &o);
    c = fx_client_as(&F, plain_uid());
    assert_register_refused(c, APP);
    cr_assert_null(fx_save(c, "x", APP, "", &err));
    cr_assert_str_eq(err, "org.vmstate.Helper1.Error.Permission");
    cr_assert(strstr(fx_error_message, "app id '" APP "'"), "%s", fx_error_message);
    cr_assert(strstr(fx_error_message, "[apps]"), "%s", fx_error_message);
    {
        const char *app = APP;
        cr_assert_null(fx_call(c, "UnregisterListener", 2000, &err, DBUS_TYPE_STRING, &app,
                               DBUS_TYPE_INVALID));
        cr_assert_str_eq(err, "org.vmstate.Helper1.Error.Permission");
    }
    cr_assert_eq(fx_register(c, "org.example.Other"), 0, "an unbound app id stays open");
    cr_assert(log_contains("refused RegisterListener for app id '" APP "'"));
    if (getuid() == 0) { /* root always may */
        root = fx_client(&F);
        cr_assert_eq(fx_register(root, APP), 0);
        cr_assert_not_null(fx_save(root, "x", APP, "", &err), "%s", err);
        fx_client_close(root);
    }
    fx_client_close(c);
}

Test(helper, app_bound_to_the_caller_works)
{
    DBusConnection *c;
    const char *id, *err = NULL;
    char extra[200], rid[64];
    struct fx_opts o = {.extra_config = extra};

    snprintf(extra, sizeof(extra), "allow_users = %u\n[apps]\n%s = 4243, %u\n",
             (unsigned)plain_uid(), APP, (unsigned)plain_uid());
    fx_start(&F, &o);
    fx_bridge_handshake(&F, 1);
    c = fx_client_as(&F, plain_uid());
    cr_assert_eq(fx_register(c, APP), 0, "%s", fx_error_message);
    id = fx_save(c, "mine", APP, "private", &err);
    cr_assert_not_null(id, "%s: %s", err, fx_error_message);
    snprintf(rid, sizeof(rid), "%s", id);
    fx_msg_free(expect_request_from("save", plain_uid()));
    fx_bridge_event(&F, rid, "save", 0, APP, "private", "s1", 1);
    assert_completed(c, rid, "private");
    fx_client_close(c);
}

Test(helper, strict_app_ids_refuses_unlisted_app_ids)
{
    DBusConnection *c, *root;
    const char *err = NULL;
    char extra[200];
    struct fx_opts o = {.extra_config = extra};

    snprintf(extra, sizeof(extra),
             "allow_users = %u\nstrict_app_ids = yes\n[apps]\norg.example.Listed = %u\n",
             (unsigned)plain_uid(), (unsigned)plain_uid());
    fx_start(&F, &o);
    c = fx_client_as(&F, plain_uid());
    assert_register_refused(c, APP);
    cr_assert(strstr(fx_error_message, "strict_app_ids"), "%s", fx_error_message);
    cr_assert_null(fx_save(c, "x", APP, "", &err));
    cr_assert_str_eq(err, "org.vmstate.Helper1.Error.Permission");
    cr_assert_eq(fx_register(c, "org.example.Listed"), 0, "%s", fx_error_message);
    cr_assert_not_null(fx_save(c, "x", "org.example.Listed", "", &err), "%s", err);
    if (getuid() == 0) {
        root = fx_client(&F);
        cr_assert_eq(fx_register(root, APP), 0, "%s", fx_error_message);
        cr_assert_not_null(fx_save(root, "x", APP, "", &err), "%s", err);
        fx_client_close(root);
    }
    fx_client_close(c);
}

Test(helper, watch_all_refused_outside_watch_users)
{
    DBusConnection *c;
    char extra[100];
    struct fx_opts o = {.extra_config = extra};

    snprintf(extra, sizeof(extra), "allow_users = %u\n", (unsigned)plain_uid());
    fx_start(&F, &o); /* no watch_users: root only */
    c = fx_client_as(&F, plain_uid());
    assert_register_refused(c, "*");
    cr_assert(strstr(fx_error_message, "watch_users"), "%s", fx_error_message);
    fx_client_close(c);
}

Test(helper, watch_users_may_watch_all)
{
    DBusConnection *w;
    char extra[200];
    const char *rid = "0123456789abcdef0123456789abcdef";
    struct fx_opts o = {.extra_config = extra};

    snprintf(extra, sizeof(extra), "allow_users = %u\nwatch_users = %u\n[apps]\n%s = 4243\n",
             (unsigned)plain_uid(), (unsigned)plain_uid(), APP);
    fx_start(&F, &o);
    fx_bridge_handshake(&F, 1);
    w = fx_client_as(&F, plain_uid());
    cr_assert_eq(fx_register(w, "*"), 0, "%s", fx_error_message);
    /* documented: a watcher sees every app's completions, bound app ids included */
    fx_bridge_event(&F, rid, "save", 0, APP, "seen", "s1", 1);
    assert_completed(w, rid, "seen");
    fx_client_close(w);
}

Test(helper, bridge_unreachable_refused_when_queueing_is_off)
{
    DBusConnection *c;
    const char *err = NULL;
    uint64_t t0;
    struct fx_opts o = {.extra_config = "queue_when_disconnected = false"};

    fx_start(&F, &o);
    c = fx_client(&F);
    t0 = fx_now_ms();
    cr_assert_null(fx_save(c, "x", APP, "", &err));
    cr_assert_str_eq(err, "org.vmstate.Helper1.Error.Unavailable");
    cr_assert_lt(fx_now_ms() - t0, fx_ms(500));
    fx_client_close(c);
}

Test(helper, bridge_unreachable_queue_bounded_then_times_out)
{
    DBusConnection *c;
    const char *err = NULL, *id;
    char first[64];
    DBusMessage *s;
    const char *rid;
    uint32_t status;
    struct fx_opts o = {.extra_config = "queue_max = 2\nqueue_timeout_ms = 800"};

    fx_start(&F, &o);
    c = fx_client(&F);
    cr_assert_eq(fx_register(c, APP), 0);
    id = fx_save(c, "1", APP, "", &err);
    cr_assert_not_null(id);
    snprintf(first, sizeof(first), "%s", id);
    cr_assert_not_null(fx_save(c, "2", APP, "", &err));
    cr_assert_null(fx_save(c, "3", APP, "", &err)); /* queue full */
    cr_assert_str_eq(err, "org.vmstate.Helper1.Error.Unavailable");
    s = fx_wait_signal(c, "Completed", 3000); /* queue timeout: fails with status 11 */
    cr_assert_not_null(s);
    fx_completed_args(s, &rid, NULL, &status, NULL, NULL, 0, NULL);
    cr_assert_str_eq(rid, first);
    cr_assert_eq(status, 11);
    dbus_message_unref(s);
    fx_client_close(c);
}

Test(helper, timeline_emits_restored_and_hello)
{
    DBusConnection *c;
    DBusMessage *s;
    const char *sid;
    dbus_uint64_t epoch;
    struct vms_msg t, *hello;
    char rid[] = "abababababababababababababababab";

    fx_start(&F, NULL);
    fx_bridge_handshake(&F, 1);
    c = fx_client(&F);
    cr_assert_eq(fx_register(c, APP), 0);
    vms_msg_init(&t, VMS_MSG_TIMELINE);
    vms_msg_set_u64(&t, VMS_F_EPOCH, 2);
    vms_msg_set_str(&t, VMS_F_STATE_ID, "s1");
    vms_msg_set_str(&t, VMS_F_REASON, "restore");
    fx_bridge_send(&F, &t);
    F.epoch = 2;
    fx_bridge_event(&F, rid, "restore", 0, APP, "note from the future", "s1", 1);
    s = fx_wait_signal(c, "Restored", 3000);
    cr_assert_not_null(s);
    cr_assert(dbus_message_get_args(s, NULL, DBUS_TYPE_STRING, &sid, DBUS_TYPE_UINT64, &epoch,
                                    DBUS_TYPE_INVALID));
    cr_assert_str_eq(sid, "s1");
    cr_assert_eq(epoch, 2);
    dbus_message_unref(s);
    assert_completed(c, rid, "note from the future");
    hello = fx_bridge_expect(&F, VMS_MSG_HELLO, 3000);
    cr_assert_not_null(hello, "no Hello after Timeline");
    cr_assert_eq(hello->epoch, 2);
    fx_msg_free(hello);
    fx_bridge_send(&F, &t); /* a stale replay of the Timeline: ignored */
    cr_assert_null(fx_wait_signal(c, "Restored", 300));
    fx_client_close(c);
}

Test(helper, invalid_arguments_are_refused_clearly)
{
    DBusConnection *c;
    const char *err = NULL;
    const char *bad_app = "not an id!";
    const char *label = "x";
    const unsigned char *data = (const unsigned char *)"";
    DBusMessage *r;

    fx_start(&F, NULL);
    c = fx_client(&F);
    r = fx_call(c, "Save", 2000, &err, DBUS_TYPE_STRING, &label, DBUS_TYPE_STRING, &bad_app,
                DBUS_TYPE_ARRAY, DBUS_TYPE_BYTE, &data, 0, DBUS_TYPE_INVALID);
    cr_assert_null(r);
    cr_assert_str_eq(err, "org.vmstate.Helper1.Error.InvalidArgs");
    r = fx_call(c, "Save", 2000, &err, DBUS_TYPE_STRING, &label, DBUS_TYPE_INVALID);
    cr_assert_null(r);
    cr_assert_str_eq(err, "org.vmstate.Helper1.Error.InvalidArgs");
    fx_client_close(c);
}

Test(helper, introspect_and_properties)
{
    DBusConnection *c;
    DBusMessage *m, *r;
    DBusError e;
    const char *xml, *iface = "org.vmstate.Helper1";

    fx_start(&F, NULL);
    c = fx_client(&F);
    dbus_error_init(&e);
    m = dbus_message_new_method_call("org.vmstate.Helper1", "/org/vmstate/Helper1",
                                     "org.freedesktop.DBus.Introspectable", "Introspect");
    r = dbus_connection_send_with_reply_and_block(c, m, 2000, &e);
    dbus_message_unref(m);
    cr_assert_not_null(r, "%s", e.message);
    cr_assert(dbus_message_get_args(r, NULL, DBUS_TYPE_STRING, &xml, DBUS_TYPE_INVALID));
    cr_assert_not_null(strstr(xml, "<signal name=\"Completed\">"));
    dbus_message_unref(r);
    m = dbus_message_new_method_call("org.vmstate.Helper1", "/org/vmstate/Helper1",
                                     "org.freedesktop.DBus.Properties", "GetAll");
    dbus_message_append_args(m, DBUS_TYPE_STRING, &iface, DBUS_TYPE_INVALID);
    r = dbus_connection_send_with_reply_and_block(c, m, 2000, &e);
    dbus_message_unref(m);
    cr_assert_not_null(r, "%s", e.message);
    cr_assert(dbus_message_has_signature(r, "a{sv}"));
    dbus_message_unref(r);
    fx_client_close(c);
}

/* Run the helper on a config file holding @text; its output in @out, its exit status back.
 * @conf receives the file's path. Needs fx_start_bus. */
static int run_helper_with(const char *text, char *conf, size_t conflen, char *out, size_t outlen)
{
    char cmd[1024];
    FILE *p;
    size_t n;

    snprintf(conf, conflen, "%s/bad.conf", F.dir);
    p = fopen(conf, "w");
    cr_assert_not_null(p);
    fputs(text, p);
    fclose(p);
    snprintf(cmd, sizeof(cmd), "%s --config %s --address '%s' 2>&1", HELPERD_PATH, conf,
             F.bus_address);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    return WEXITSTATUS(pclose(p));
}

Test(helper, bad_config_names_file_line_and_key)
{
    char conf[300], want[400], out[1024];

    fx_start_bus(&F);
    cr_assert_eq(run_helper_with("[helper]\n# comment\ngrace_period_ms = soon\n", conf,
                                 sizeof(conf), out, sizeof(out)),
                 2, "%s", out);
    snprintf(want, sizeof(want), "%s:3: key 'grace_period_ms': bad value 'soon'", conf);
    cr_assert(strstr(out, want), "%s", out);
    run_helper_with("[helper]\nallow_users = root\nno_such_key = 1\n", conf, sizeof(conf), out,
                    sizeof(out));
    cr_assert(strstr(out, ":3: key 'no_such_key': unknown key"), "%s", out);
}

/* [apps] entries are checked when the helper starts: file, line and key (the app id). */
Test(helper, bad_apps_config_names_file_line_and_key)
{
    char conf[300], want[400], out[1024];

    fx_start_bus(&F);
    cr_assert_eq(run_helper_with("[helper]\nallow_users = root\n[apps]\norg.example.Ok = root\n"
                                 "org.example.Notes = root, no-such-user-zz\n",
                                 conf, sizeof(conf), out, sizeof(out)),
                 2, "%s", out);
    snprintf(want, sizeof(want),
             "%s:5: key 'org.example.Notes': bad value 'root, no-such-user-zz': unknown user "
             "'no-such-user-zz'",
             conf);
    cr_assert(strstr(out, want), "%s", out);
    run_helper_with("[apps]\nbad app! = root\n", conf, sizeof(conf), out, sizeof(out));
    cr_assert(strstr(out, ":2: key 'bad app!': bad app id"), "%s", out);
    run_helper_with("[helper]\nwatch_users = @no-such-group-zz\n", conf, sizeof(conf), out,
                    sizeof(out));
    cr_assert(strstr(out, ":2: key 'watch_users': bad value '@no-such-group-zz': unknown group"),
              "%s", out);
}

/* CPU time (ms) the helper has used so far. */
static long helper_cpu_ms(void)
{
    char path[64], buf[1024];
    unsigned long ut = 0, stt = 0;
    FILE *f;
    char *p;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)F.helper_pid);
    f = fopen(path, "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(buf, sizeof(buf), f));
    fclose(f);
    p = strrchr(buf, ')');
    cr_assert_not_null(p);
    /* fields after the command: state ppid pgrp session tty tpgid flags minflt cminflt majflt
     * cmajflt utime stime */
    cr_assert_eq(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &stt),
                 2);
    return (long)((ut + stt) * 1000 / (unsigned long)sysconf(_SC_CLK_TCK));
}

static int open_raw_pty(char *slave_path, size_t len, int *slave_fd)
{
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC); /* the helper must not inherit it */
    struct termios t;

    cr_assert_geq(m, 0);
    cr_assert_eq(grantpt(m), 0);
    cr_assert_eq(unlockpt(m), 0);
    cr_assert_eq(ptsname_r(m, slave_path, len), 0);
    *slave_fd = open(slave_path, O_RDWR | O_NOCTTY | O_CLOEXEC);
    cr_assert_geq(*slave_fd, 0);
    cr_assert_eq(tcgetattr(*slave_fd, &t), 0);
    cfmakeraw(&t);
    cr_assert_eq(tcsetattr(*slave_fd, TCSANOW, &t), 0);
    return m;
}

/* Ports as device nodes (ptys stand in for virtio-serial): the host side going away leaves the
 * helper waiting without spinning, requests queue, and nothing blocks. */
Test(helper, device_ports_host_gone_no_spin)
{
    char sa[128], sb[128], extra[400];
    int ma, mb, ka, kb;
    struct fx_opts o = {.extra_config = extra};
    DBusConnection *c;
    const char *id, *err;
    struct vms_msg *hello, w;
    long cpu0, cpu1;

    fx_start_bus(&F);
    ma = open_raw_pty(sa, sizeof(sa), &ka);
    mb = open_raw_pty(sb, sizeof(sb), &kb);
    /* later keys override the fixture's unix: ports */
    snprintf(extra, sizeof(extra), "request_port = %s\nevent_port = %s\n", sa, sb);
    F.listen_a = F.listen_b = -1;
    o.no_ports = 1;
    fx_start_helper(&F, &o);
    vms_channel_attach(&F.a, ma);
    vms_channel_attach(&F.b, mb);
    hello = fx_bridge_expect(&F, VMS_MSG_HELLO, 5000);
    cr_assert_not_null(hello, "no Hello over the pty (see %s)", F.helper_log);
    vms_msg_init(&w, VMS_MSG_WELCOME);
    vms_msg_set_u64(&w, VMS_F_VERSION, 1);
    vms_msg_set_u64(&w, VMS_F_NONCE, hello->nonce);
    vms_msg_set_u64(&w, VMS_F_EPOCH, 1);
    fx_bridge_send(&F, &w);
    fx_msg_free(hello);
    c = fx_client(&F);
    usleep(200000);
    cr_assert_eq(bridge_connected(c), 1);
    fx_bridge_hangup(&F); /* closes the masters: the "host side" is gone */
    usleep(300000);
    cr_assert_eq(bridge_connected(c), 0);
    cpu0 = helper_cpu_ms();
    usleep(1500000);
    cpu1 = helper_cpu_ms();
    cr_assert_lt(cpu1 - cpu0, 150, "helper used %ld ms CPU in 1.5 s with the host gone",
                 cpu1 - cpu0);
    id = fx_save(c, "while the host is away", APP, "", &err);
    cr_assert_not_null(id, "%s", err);
    fx_client_close(c);
    close(ka);
    close(kb);
}

/* A list completion updates the States property (and announces it with PropertiesChanged). */
/* @e: an ok Event for @rid (op, app id, epoch 1, @seq) for the test to complete and send. */
static void event_init(struct vms_msg *e, const char *rid, const char *op, const char *app,
                       uint64_t seq)
{
    vms_msg_init(e, VMS_MSG_EVENT);
    vms_msg_set_str(e, VMS_F_REQUEST_ID, rid);
    vms_msg_set_str(e, VMS_F_OP, op);
    vms_msg_set_u64(e, VMS_F_STATUS, 0);
    vms_msg_set_u64(e, VMS_F_EPOCH, 1);
    vms_msg_set_u64(e, VMS_F_SEQ, seq);
    vms_msg_set_str(e, VMS_F_APP_ID, app);
}

/* @m's body as received, and as libdbus's writer marshals the same arguments: the helper
 * marshals its signals itself (vms-marshal.h), and dbus-daemon passes a body on unchanged. */
static void assert_body_as_libdbus_writes_it(DBusMessage *m)
{
    DBusMessage *ref = dbus_message_new_signal("/r", "org.example.Reference", "R");
    DBusMessageIter src, dst;
    char *got = NULL, *want = NULL;
    int got_len = 0, want_len = 0;
    uint32_t got_body, want_body;

    cr_assert_not_null(ref);
    dbus_message_iter_init(m, &src);
    dbus_message_iter_init_append(ref, &dst);
    cr_assert(vms_reference_copy(&src, &dst));
    cr_assert(dbus_message_marshal(m, &got, &got_len));
    cr_assert(dbus_message_marshal(ref, &want, &want_len));
    cr_assert_eq(got[0], 'l');
    memcpy(&got_body, got + 4, 4);
    memcpy(&want_body, want + 4, 4);
    cr_assert_eq(got_body, want_body, "body of %u bytes, libdbus writes %u", got_body, want_body);
    cr_assert(!memcmp(got + got_len - got_body, want + want_len - want_body, got_body),
              "the body differs from libdbus's marshalling");
    dbus_free(got);
    dbus_free(want);
    dbus_message_unref(ref);
}

/* Completed's details: every one the API names, with its type, as libdbus would marshal
 * them; the three counts the wire carries as u are t in the API. */
Test(helper, completed_carries_every_detail_as_libdbus_marshals_it)
{
    static const struct {
        const char *key, *sig;
    } want[] = {
        {"parent_id", "s"},
        {"reason", "s"},
        {"hostname", "s"},
        {"bridge_version", "s"},
        {"bytes", "t"},
        {"free_bytes", "t"},
        {"mem_bytes", "t"},
        {"seq", "t"},
        {"creator", "s"},
        {"host_mem_total", "t"},
        {"host_mem_available", "t"},
        {"host_cpus", "t"},
        {"host_load_milli", "t"},
        {"vcpus", "t"},
        {"mem_boot", "t"},
        {"mem_min", "t"},
        {"mem_max", "t"},
        {"hypervisor_version", "s"},
        {"ops", "s"},
        {"mode", "s"},
        {"results", "a(sus)"},
        {"quotas", "a(stt)"},
        {"states", "a(ssssx)"},
    };
    struct vms_state_info s1 = {.id = "s1", .label = "one", .app_id = APP, .created = -5},
                          s2 = {.id = "s2", .label = "twö", .parent = "s1", .created = 7};
    DBusConnection *c;
    DBusMessage *s;
    DBusMessageIter it, dict;
    struct vms_msg e;
    const char *rid = "0000000000000000000000000000dd77", *msg;
    uint32_t status;
    size_t n = 0;

    fx_start(&F, NULL);
    fx_bridge_handshake(&F, 1);
    c = fx_client(&F);
    cr_assert_eq(fx_register(c, APP), 0);
    event_init(&e, rid, "hostinfo", APP, 1);
    vms_msg_set_u64(&e, VMS_F_STATUS, 7); /* no message: the status's sentence */
    vms_msg_set_app_data(&e, "d\0ta", 4);
    vms_msg_set_str(&e, VMS_F_PARENT_ID, "p1");
    vms_msg_set_str(&e, VMS_F_REASON, "why");
    vms_msg_set_str(&e, VMS_F_HOSTNAME, "host-1");
    vms_msg_set_str(&e, VMS_F_BRIDGE_VERSION, "9.9");
    vms_msg_set_u64(&e, VMS_F_BYTES, 1ull << 40);
    vms_msg_set_u64(&e, VMS_F_FREE_BYTES, 2);
    vms_msg_set_u64(&e, VMS_F_MEM_BYTES, 3);
    vms_msg_set_str(&e, VMS_F_CREATOR, "org.example.Creator");
    vms_msg_set_u64(&e, VMS_F_HOST_MEM_TOTAL, 4);
    vms_msg_set_u64(&e, VMS_F_HOST_MEM_AVAILABLE, 5);
    vms_msg_set_u64(&e, VMS_F_HOST_CPUS, 6);
    vms_msg_set_u64(&e, VMS_F_HOST_LOAD_MILLI, 4000000000u);
    vms_msg_set_u64(&e, VMS_F_VCPUS, 8);
    vms_msg_set_u64(&e, VMS_F_MEM_BOOT, 9);
    vms_msg_set_u64(&e, VMS_F_MEM_MIN, 10);
    vms_msg_set_u64(&e, VMS_F_MEM_MAX, 11);
    vms_msg_set_str(&e, VMS_F_HYPERVISOR_VERSION, "QEMU 7.2");
    vms_msg_set_str(&e, VMS_F_OPS, "save,restore");
    vms_msg_set_str(&e, VMS_F_MODE, "managed");
    cr_assert_eq(vms_msg_add_result(&e, "save", 0, ""), 0);
    cr_assert_eq(vms_msg_add_result(&e, "restore", 8, "no such state"), 0);
    cr_assert_eq(vms_msg_add_quota(&e, "states", 10, 3), 0);
    cr_assert_eq(vms_msg_add_state(&e, &s1), 0);
    cr_assert_eq(vms_msg_add_state(&e, &s2), 0);
    fx_bridge_send(&F, &e);
    vms_msg_clear(&e);

    s = fx_wait_signal(c, "Completed", 3000);
    cr_assert_not_null(s);
    assert_body_as_libdbus_writes_it(s);
    dbus_message_iter_init(s, &it);
    dbus_message_iter_next(&it);
    dbus_message_iter_next(&it);
    dbus_message_iter_get_basic(&it, &status);
    dbus_message_iter_next(&it);
    dbus_message_iter_get_basic(&it, &msg);
    cr_assert_eq(status, 7);
    cr_assert_str_eq(msg, vms_status_str(7));
    while (dbus_message_iter_get_arg_type(&it) != DBUS_TYPE_ARRAY ||
           dbus_message_iter_get_element_type(&it) != DBUS_TYPE_DICT_ENTRY)
        dbus_message_iter_next(&it);
    dbus_message_iter_recurse(&it, &dict);
    for (; dbus_message_iter_get_arg_type(&dict) == DBUS_TYPE_DICT_ENTRY;
         dbus_message_iter_next(&dict), n++) {
        DBusMessageIter entry, v;
        const char *key;
        char *sig;

        cr_assert_lt(n, sizeof(want) / sizeof(want[0]), "more details than the API names");
        dbus_message_iter_recurse(&dict, &entry);
        dbus_message_iter_get_basic(&entry, &key);
        dbus_message_iter_next(&entry);
        dbus_message_iter_recurse(&entry, &v);
        sig = dbus_message_iter_get_signature(&v);
        cr_assert_str_eq(key, want[n].key);
        cr_assert_str_eq(sig, want[n].sig, "%s: %s", key, sig);
        dbus_free(sig);
        if (!strcmp(key, "host_load_milli")) {
            dbus_uint64_t x;
            dbus_message_iter_get_basic(&v, &x);
            cr_assert_eq(x, 4000000000u);
        }
    }
    cr_assert_eq(n, sizeof(want) / sizeof(want[0]));
    dbus_message_unref(s);
    fx_client_close(c);
}

Test(helper, list_updates_states_property)
{
    DBusConnection *c;
    DBusMessage *m, *r;
    DBusMessageIter it, v, arr, st;
    const char *iface = "org.vmstate.Helper1", *prop = "States", *id;
    char *sig;
    struct vms_msg e;
    struct vms_state_info s1 = {.id = "s1", .label = "one", .app_id = APP, .created = 5};
    int n = 0;

    fx_start(&F, NULL);
    fx_bridge_handshake(&F, 1);
    c = fx_client(&F);
    event_init(&e, "0000000000000000000000000000cccc", "list", APP, 1);
    cr_assert_eq(vms_msg_add_state(&e, &s1), 0);
    fx_bridge_send(&F, &e);
    vms_msg_clear(&e);
    fx_msg_free(fx_bridge_expect(&F, VMS_MSG_ACK, 3000));
    m = dbus_message_new_method_call("org.vmstate.Helper1", "/org/vmstate/Helper1",
                                     "org.freedesktop.DBus.Properties", "Get");
    dbus_message_append_args(m, DBUS_TYPE_STRING, &iface, DBUS_TYPE_STRING, &prop,
                             DBUS_TYPE_INVALID);
    r = dbus_connection_send_with_reply_and_block(c, m, 2000, NULL);
    dbus_message_unref(m);
    cr_assert_not_null(r);
    dbus_message_iter_init(r, &it);
    dbus_message_iter_recurse(&it, &v);
    sig = dbus_message_iter_get_signature(&v);
    cr_assert_str_eq(sig, "a(ssssx)");
    dbus_free(sig);
    dbus_message_iter_recurse(&v, &arr);
    while (dbus_message_iter_get_arg_type(&arr) == DBUS_TYPE_STRUCT) {
        dbus_message_iter_recurse(&arr, &st);
        dbus_message_iter_get_basic(&st, &id);
        cr_assert_str_eq(id, "s1");
        n++;
        dbus_message_iter_next(&arr);
    }
    cr_assert_eq(n, 1);
    dbus_message_unref(r);
    fx_client_close(c);
}

static void send_welcome(uint64_t nonce, uint64_t epoch, uint32_t status)
{
    struct vms_msg w;
    vms_msg_init(&w, VMS_MSG_WELCOME);
    vms_msg_set_u64(&w, VMS_F_VERSION, 1);
    vms_msg_set_u64(&w, VMS_F_NONCE, nonce);
    vms_msg_set_u64(&w, VMS_F_EPOCH, epoch);
    if (status) {
        vms_msg_set_u64(&w, VMS_F_STATUS, status);
        vms_msg_set_str(&w, VMS_F_MESSAGE, "no common version");
    }
    fx_bridge_send(&F, &w);
}

/* Stale Welcome (wrong nonce) and a refusing Welcome leave the session closed; the helper
 * says Hello again on its timer; a Welcome with a newer epoch than the helper knew is a
 * restore it missed: Restored("", epoch). */
Test(helper, handshake_edge_cases)
{
    DBusConnection *c;
    DBusMessage *s;
    struct vms_msg *h1, *h2, *h3;
    const char *sid;
    dbus_uint64_t epoch;

    fx_start(&F, NULL); /* hello_retry_ms = 1000 */
    fx_bridge_accept(&F, 5000);
    c = fx_client(&F);
    h1 = fx_bridge_expect(&F, VMS_MSG_HELLO, 3000);
    cr_assert_not_null(h1);
    cr_assert(!vms_msg_has(h1, VMS_F_EPOCH) || h1->epoch == 0);
    send_welcome(h1->nonce + 1, 1, 0); /* stale: ignored */
    send_welcome(h1->nonce, 1, 9);     /* refused: version */
    usleep(300000);
    cr_assert_eq(bridge_connected(c), 0);
    cr_assert(log_contains("bridge refused our Hello: version"));
    h2 = fx_bridge_expect(&F, VMS_MSG_HELLO, 3000); /* retried */
    cr_assert_not_null(h2, "no Hello retry");
    cr_assert_neq(h2->nonce, h1->nonce);
    send_welcome(h2->nonce, 4, 0);
    usleep(200000);
    cr_assert_eq(bridge_connected(c), 1);
    fx_bridge_hangup(&F);
    fx_bridge_accept(&F, 5000);
    h3 = fx_bridge_expect(&F, VMS_MSG_HELLO, 3000);
    cr_assert_not_null(h3);
    cr_assert_eq(h3->epoch, 4, "Hello must carry the epoch the helper believes");
    send_welcome(h3->nonce, 6, 0); /* the VM was restored while we were not listening */
    s = fx_wait_signal(c, "Restored", 3000);
    cr_assert_not_null(s);
    cr_assert(dbus_message_get_args(s, NULL, DBUS_TYPE_STRING, &sid, DBUS_TYPE_UINT64, &epoch,
                                    DBUS_TYPE_INVALID));
    cr_assert_str_eq(sid, "");
    cr_assert_eq(epoch, 6);
    dbus_message_unref(s);
    fx_msg_free(h1);
    fx_msg_free(h2);
    fx_msg_free(h3);
    fx_client_close(c);
}

/* libudev lookup with no such ports on this machine: the helper waits (rescans on its
 * timer, watches hot-plug) without spinning, and requests queue. */
Test(helper, udev_ports_missing_no_spin)
{
    struct fx_opts o = {.extra_config = "request_port = udev\nevent_port = udev\n"
                                        "recheck_interval_ms = 100"};
    DBusConnection *c;
    const char *id, *err;
    long cpu0, cpu1;

    fx_start(&F, &o);
    cpu0 = helper_cpu_ms();
    usleep(1500000);
    cpu1 = helper_cpu_ms();
    cr_assert_lt(cpu1 - cpu0, 150, "helper used %ld ms CPU in 1.5 s without ports", cpu1 - cpu0);
    cr_assert(log_contains("org.vmstate.request.0 not available yet"));
    c = fx_client(&F);
    id = fx_save(c, "no ports yet", APP, "", &err);
    cr_assert_not_null(id, "%s", err);
    cr_assert_eq(bridge_connected(c), 0);
    fx_client_close(c);
}

/* ---- issue 14: state changes reach every listener; issue 13 items 9-11 ---- */

/* The next StateSaved/StateDeleted on @c: checks its arguments. */
static void assert_state_signal(DBusConnection *c, const char *member, const char *state_id,
                                const char *creator)
{
    DBusMessage *s = fx_wait_signal(c, member, 3000);
    const char *sid, *label, *app, *parent;
    dbus_uint64_t epoch;

    cr_assert_not_null(s, "no %s for %s", member, state_id);
    cr_assert(dbus_message_get_args(s, NULL, DBUS_TYPE_STRING, &sid, DBUS_TYPE_STRING, &label,
                                    DBUS_TYPE_STRING, &app, DBUS_TYPE_STRING, &parent,
                                    DBUS_TYPE_UINT64, &epoch, DBUS_TYPE_INVALID),
              "%s has signature %s", member, dbus_message_get_signature(s));
    cr_assert_str_eq(sid, state_id);
    cr_assert_str_eq(app, creator);
    cr_assert_str_eq(label, "before upgrade");
    cr_assert_eq(epoch, 1);
    assert_body_as_libdbus_writes_it(s);
    /* unicast: addressed to this listener, not broadcast to the bus */
    cr_assert_not_null(dbus_message_get_destination(s));
    dbus_message_unref(s);
}

Test(helper, state_saved_and_deleted_reach_every_listener_without_app_data)
{
    DBusConnection *a, *b, *outsider;
    const char *err = NULL, *other = "org.example.Other", *first;
    char extra[200];
    struct fx_opts o = {.extra_config = extra};
    struct vms_msg e;

    snprintf(extra, sizeof(extra), "allow_users = %u\n", (unsigned)getuid());
    fx_start(&F, &o);
    fx_bridge_handshake(&F, 1);
    a = fx_client(&F);
    b = fx_client(&F);
    cr_assert_eq(fx_register(a, APP), 0);
    cr_assert_eq(fx_register(b, other), 0);
    outsider = fx_client_as(&F, plain_uid()); /* not in allow_users */
    cr_assert_null(fx_call(outsider, "RegisterListener", 2000, &err, DBUS_TYPE_STRING, &other,
                           DBUS_TYPE_INVALID));
    cr_assert_str_eq(err, "org.vmstate.Helper1.Error.Permission");

    event_init(&e, "0000000000000000000000000000dd01", "save", APP, 1);
    vms_msg_set_str(&e, VMS_F_STATE_ID, "st-1");
    vms_msg_set_str(&e, VMS_F_LABEL, "before upgrade");
    vms_msg_set_app_data(&e, "A's secret data", 15);
    fx_bridge_send(&F, &e);
    /* the requester's Completed first: on one vCPU, StateSaved's listeners would run first */
    first = fx_peek_signal(a, 3000);
    cr_assert(first && !strcmp(first, "Completed"), "A's first signal: %s", first ? first : "none");
    assert_completed(a, e.request_id, "A's secret data");
    assert_state_signal(a, "StateSaved", "st-1", APP);
    assert_state_signal(b, "StateSaved", "st-1", APP); /* another app's listener hears it */
    assert_no_completed(b, 200);                       /* ... but never A's data */
    cr_assert_null(fx_wait_signal(outsider, "StateSaved", 300), "an outsider heard StateSaved");

    /* B deletes it: the event names the state's creator, A */
    vms_msg_clear(&e);
    event_init(&e, "0000000000000000000000000000dd02", "delete", other, 2);
    vms_msg_set_str(&e, VMS_F_STATE_ID, "st-1");
    vms_msg_set_str(&e, VMS_F_LABEL, "before upgrade");
    vms_msg_set_str(&e, VMS_F_CREATOR, APP);
    fx_bridge_send(&F, &e);
    vms_msg_clear(&e);
    assert_state_signal(a, "StateDeleted", "st-1", APP);
    assert_state_signal(b, "StateDeleted", "st-1", APP);
    cr_assert_null(fx_wait_signal(outsider, "StateDeleted", 300));
    fx_client_close(a);
    fx_client_close(b);
    fx_client_close(outsider);
}

/* Issue 13, item 9: one uid cannot take every listener slot, and a completion whose app could
 * not register is not acked as delivered. */
Test(helper, listener_shares_per_uid_and_no_ack_for_refused_listener)
{
    DBusConnection *hog, *root;
    char extra[200];
    struct fx_opts o = {.extra_config = extra};
    const char *err = NULL, *third = "org.example.Third";
    char rid[] = "0000000000000000000000000000ee01";

    if (getuid() != 0)
        cr_skip_test("needs root to call as another uid");
    snprintf(extra, sizeof(extra),
             "allow_users = %u\nmax_listeners = 4\nmax_listeners_per_uid = 2\n",
             (unsigned)plain_uid());
    fx_start(&F, &o);
    fx_bridge_handshake(&F, 1);
    hog = fx_client_as(&F, plain_uid());
    cr_assert_eq(fx_register(hog, "org.example.A"), 0);
    cr_assert_eq(fx_register(hog, "org.example.B"), 0);
    cr_assert_null(
        fx_call(hog, "RegisterListener", 2000, &err, DBUS_TYPE_STRING, &third, DBUS_TYPE_INVALID));
    cr_assert_str_eq(err, "org.vmstate.Helper1.Error.LimitReached");
    cr_assert(strstr(fx_error_message, "max_listeners_per_uid"), "%s", fx_error_message);

    /* the refused app's completion: held, and when the grace period ends not acked */
    fx_bridge_event(&F, rid, "save", 0, third, "for the third app", "s9", 1);
    usleep(2000000); /* grace_period_ms = 1500 */
    cr_assert(log_contains("not acked"), "see %s", F.helper_log);
    cr_assert_eq(fx_bridge_count(&F, VMS_MSG_ACK, 200), 0, "an undelivered completion was acked");

    /* root's own app still registers: the other uid could not fill the table */
    root = fx_client(&F);
    cr_assert_eq(fx_register(root, third), 0);
    /* the bridge resends the unacked event (next session): now it is delivered and acked */
    fx_bridge_event(&F, rid, "save", 0, third, "for the third app", "s9", 1);
    {
        DBusMessage *s = fx_wait_signal(root, "Completed", 3000);
        cr_assert_not_null(s, "the resent completion was not delivered");
        dbus_message_unref(s);
    }
    fx_msg_free(fx_bridge_expect(&F, VMS_MSG_ACK, 3000));
    fx_client_close(hog);
    fx_client_close(root);
}

/* Get(States) for @c: 1 if answered, 0 if refused with Permission. */
static int get_states(DBusConnection *c)
{
    const char *iface = "org.vmstate.Helper1", *prop = "States";
    DBusMessage *m, *r;
    DBusError e;
    int ok;

    m = dbus_message_new_method_call("org.vmstate.Helper1", "/org/vmstate/Helper1",
                                     "org.freedesktop.DBus.Properties", "Get");
    dbus_message_append_args(m, DBUS_TYPE_STRING, &iface, DBUS_TYPE_STRING, &prop,
                             DBUS_TYPE_INVALID);
    dbus_error_init(&e);
    r = dbus_connection_send_with_reply_and_block(c, m, 2000, &e);
    dbus_message_unref(m);
    ok = r != NULL;
    if (!ok)
        cr_assert_str_eq(e.name, "org.vmstate.Helper1.Error.Permission");
    dbus_error_free(&e);
    if (r)
        dbus_message_unref(r);
    return ok;
}

/* 1 if GetAll for @c lists States. */
static int getall_has_states(DBusConnection *c)
{
    const char *iface = "org.vmstate.Helper1";
    DBusMessage *m, *r;
    DBusMessageIter it, dict;
    int found = 0;

    m = dbus_message_new_method_call("org.vmstate.Helper1", "/org/vmstate/Helper1",
                                     "org.freedesktop.DBus.Properties", "GetAll");
    dbus_message_append_args(m, DBUS_TYPE_STRING, &iface, DBUS_TYPE_INVALID);
    r = dbus_connection_send_with_reply_and_block(c, m, 2000, NULL);
    dbus_message_unref(m);
    cr_assert_not_null(r);
    dbus_message_iter_init(r, &it);
    dbus_message_iter_recurse(&it, &dict);
    while (dbus_message_iter_get_arg_type(&dict) == DBUS_TYPE_DICT_ENTRY) {
        DBusMessageIter ent;
        const char *key;
        dbus_message_iter_recurse(&dict, &ent);
        dbus_message_iter_get_basic(&ent, &key);
        found |= !strcmp(key, "States");
        dbus_message_iter_next(&dict);
    }
    dbus_message_unref(r);
    return found;
}

/* Issue 13, item 10: the States property follows ListStates' allow-list. */
Test(helper, states_property_only_for_allowed_callers)
{
    DBusConnection *outsider, *insider;
    DBusMessage *pc = NULL;
    struct vms_msg e;
    struct vms_state_info s1 = {.id = "s1", .label = "one", .app_id = APP, .created = 5};
    uint64_t until;

    if (getuid() != 0)
        cr_skip_test("needs root to call as another uid");
    fx_start(&F, NULL); /* allow_users: 4242 and root */
    fx_bridge_handshake(&F, 1);
    outsider = fx_client_as(&F, plain_uid());
    insider = fx_client(&F);
    dbus_bus_add_match(outsider, "type='signal',interface='org.freedesktop.DBus.Properties'", NULL);
    cr_assert_eq(get_states(outsider), 0, "States readable outside the allow-list");
    cr_assert_eq(getall_has_states(outsider), 0, "GetAll shows States outside the allow-list");
    cr_assert_eq(get_states(insider), 1);
    cr_assert_eq(getall_has_states(insider), 1);

    event_init(&e, "0000000000000000000000000000cc01", "list", APP, 1);
    cr_assert_eq(vms_msg_add_state(&e, &s1), 0);
    fx_bridge_send(&F, &e);
    vms_msg_clear(&e);
    /* PropertiesChanged reaches the outsider too (a broadcast): it must not carry the list */
    until = fx_now_ms() + fx_ms(3000);
    while (!pc && fx_now_ms() < until) {
        DBusMessage *m;
        dbus_connection_read_write(outsider, 100);
        while ((m = dbus_connection_pop_message(outsider))) {
            if (!pc &&
                dbus_message_is_signal(m, "org.freedesktop.DBus.Properties", "PropertiesChanged"))
                pc = m;
            else
                dbus_message_unref(m);
        }
    }
    cr_assert_not_null(pc, "no PropertiesChanged for States");
    {
        DBusMessageIter it, dict, inval;
        const char *name = "";
        dbus_message_iter_init(pc, &it);
        dbus_message_iter_next(&it);
        dbus_message_iter_recurse(&it, &dict);
        cr_assert_neq(dbus_message_iter_get_arg_type(&dict), DBUS_TYPE_DICT_ENTRY,
                      "PropertiesChanged carries the States value");
        dbus_message_iter_next(&it);
        dbus_message_iter_recurse(&it, &inval);
        cr_assert_eq(dbus_message_iter_get_arg_type(&inval), DBUS_TYPE_STRING);
        dbus_message_iter_get_basic(&inval, &name);
        cr_assert_str_eq(name, "States");
    }
    dbus_message_unref(pc);
    fx_client_close(outsider);
    fx_client_close(insider);
}

/* Inhibit(@id) from @c: NULL if accepted, else the error name. */
static const char *inhibit(DBusConnection *c, const char *id)
{
    const char *reason = "busy writing", *err = NULL;
    DBusMessage *r = fx_call(c, "Inhibit", 2000, &err, DBUS_TYPE_STRING, &id, DBUS_TYPE_STRING,
                             &reason, DBUS_TYPE_INVALID);
    if (r) {
        dbus_message_unref(r);
        return NULL;
    }
    return err;
}

/* Issue 13, item 11: only a registered listener (or root) may veto a save; the veto is logged
 * with the caller. */
Test(helper, inhibit_only_by_a_registered_listener)
{
    DBusConnection *c, *keep;
    char extra[200];
    struct fx_opts o = {.extra_config = extra};
    const char *id = "0000000000000000000000000000ff01", *err;
    struct vms_msg *ready;

    if (getuid() != 0)
        cr_skip_test("needs root to call as another uid");
    snprintf(extra, sizeof(extra), "allow_users = %u\nprepare_window_ms = 3000\n",
             (unsigned)plain_uid());
    fx_start(&F, &o);
    fx_bridge_handshake_caps(&F, 1, VMS_CAP_KNOWN);
    keep = fx_client(&F); /* a listener, so that the prepare window is open */
    cr_assert_eq(fx_register(keep, "org.example.Keep"), 0);
    c = fx_client_as(&F, plain_uid());
    fx_bridge_prepare(&F, id, "nightly");
    usleep(100000);
    err = inhibit(c, id);
    cr_assert_not_null(err, "an allowed uid without a listener vetoed the save");
    cr_assert_str_eq(err, "org.vmstate.Helper1.Error.Permission");
    cr_assert(log_contains("Inhibit refused"));
    cr_assert_eq(fx_register(c, APP), 0);
    err = inhibit(c, id);
    cr_assert_null(err, "a registered listener could not inhibit: %s", err);
    ready = fx_bridge_expect(&F, VMS_MSG_READY, 3000);
    cr_assert_not_null(ready);
    cr_assert_eq(ready->status, VMS_STATUS_ERR_INHIBITED);
    cr_assert(log_contains("Inhibit by uid"));
    fx_msg_free(ready);
    fx_client_close(c);
    fx_client_close(keep);
}

/* GetRequest(id): (status, operation, app_id) — "queued" while the bridge is away, "sent"
 * once it has the request, "completed" while the completion waits for a listener,
 * "delivered" after; NotFound for an id the helper never saw. */
static const char *get_request(DBusConnection *c, const char *id, const char **op, const char **app,
                               const char **err)
{
    static char status[32], op_buf[32], app_buf[256];
    const char *s, *o, *a;
    DBusMessage *r = fx_call(c, "GetRequest", 3000, err, DBUS_TYPE_STRING, &id, DBUS_TYPE_INVALID);

    if (!r)
        return NULL;
    cr_assert(dbus_message_get_args(r, NULL, DBUS_TYPE_STRING, &s, DBUS_TYPE_STRING, &o,
                                    DBUS_TYPE_STRING, &a, DBUS_TYPE_INVALID));
    snprintf(status, sizeof(status), "%s", s);
    snprintf(op_buf, sizeof(op_buf), "%s", o);
    snprintf(app_buf, sizeof(app_buf), "%s", a);
    dbus_message_unref(r);
    *op = op_buf;
    *app = app_buf;
    return status;
}

Test(helper, get_request_follows_a_request)
{
    DBusConnection *c;
    const char *id, *err, *op, *app, *st;
    char rid[64];
    struct vms_msg *req;

    fx_start(&F, NULL);
    c = fx_client(&F);
    id = fx_save(c, "later", APP, "x", &err);
    cr_assert_not_null(id, "Save failed: %s", err);
    snprintf(rid, sizeof(rid), "%s", id);
    st = get_request(c, rid, &op, &app, &err);
    cr_assert_not_null(st, "GetRequest: %s", err);
    cr_assert_str_eq(st, "queued");
    cr_assert_str_eq(op, "save");
    cr_assert_str_eq(app, APP);

    fx_bridge_handshake(&F, 1);
    req = expect_request("save");
    cr_assert_str_eq(req->request_id, rid);
    fx_msg_free(req);
    st = get_request(c, rid, &op, &app, &err);
    cr_assert_str_eq(st, "sent");

    /* no listener yet: the completion is held */
    fx_bridge_event(&F, rid, "save", 0, APP, "x", "s1", 1);
    for (int i = 0; i < 100 && strcmp(st, "completed"); i++) {
        usleep(20000);
        st = get_request(c, rid, &op, &app, &err);
    }
    cr_assert_str_eq(st, "completed");
    cr_assert_eq(fx_register(c, APP), 0);
    assert_completed(c, rid, "x");
    st = get_request(c, rid, &op, &app, &err);
    cr_assert_str_eq(st, "delivered");

    cr_assert_null(get_request(c, "00112233445566778899aabbccddeeff", &op, &app, &err));
    cr_assert_str_eq(err, "org.vmstate.Helper1.Error.NotFound");
    cr_assert_null(get_request(c, "not-an-id", &op, &app, &err));
    cr_assert_str_eq(err, "org.vmstate.Helper1.Error.InvalidArgs");
    fx_client_close(c);
}
