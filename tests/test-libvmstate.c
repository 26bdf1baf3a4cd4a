/*
 * test-libvmstate.c — libvmstate against the real helper on a private bus
 * with a fake bridge: every function's error path, the blocking wait, and
 * the pollable fd with poll().
 */
#include "config.h"

#include <criterion/criterion.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test-helper-fixture.h"
#include "vmstate.h"

#define APP "org.example.Lib"

static struct fx F;
static int started;

static void stop(void)
{
    if (started)
        fx_stop(&F);
    started = 0;
}

TestSuite(libvmstate, .fini = stop, .timeout = 60);

static void start(const char *extra, int handshake)
{
    struct fx_opts o = {.extra_config = extra};
    fx_start(&F, &o);
    started = 1;
    if (handshake)
        fx_bridge_handshake(&F, 1);
}

static vmstate *open_handle(const char *app)
{
    vmstate *v = NULL;
    cr_assert_eq(vmstate_open(F.bus_address, app, &v), 0);
    cr_assert_eq(vmstate_set_credentials(v, "alice", "correct horse"), 0);
    return v;
}

/* The bridge's side of one request: read it, accept it, complete it. */
static void bridge_complete(const char *op, const char *data, uint64_t seq)
{
    struct vms_msg *r = fx_bridge_expect(&F, VMS_MSG_REQUEST, 3000), reply;
    cr_assert_not_null(r);
    cr_assert_str_eq(r->op, op);
    vms_msg_init(&reply, VMS_MSG_REPLY);
    vms_msg_set_str(&reply, VMS_F_REQUEST_ID, r->request_id);
    vms_msg_set_u64(&reply, VMS_F_STATUS, 0);
    fx_bridge_send(&F, &reply);
    fx_bridge_event(&F, r->request_id, op, 0, r->app_id, data, "s1", seq);
    fx_msg_free(r);
}

Test(libvmstate, open_errors)
{
    vmstate *v = (vmstate *)1;

    cr_assert_eq(vmstate_open(NULL, APP, NULL), VMSTATE_E_INVALID);
    cr_assert_eq(vmstate_open("unix:path=/nonexistent/bus", APP, &v), VMSTATE_E_CONNECT);
    cr_assert_null(v);
    cr_assert_eq(vmstate_open("unix:path=/nonexistent/bus", "bad app id", &v), VMSTATE_E_INVALID);
    cr_assert_eq(vmstate_open("unix:path=/nonexistent/bus", NULL, &v), VMSTATE_E_INVALID);
    vmstate_close(NULL);
    cr_assert_str_eq(vmstate_strerror(VMSTATE_E_NO_HELPER), "vmstate-helperd is not running");
    cr_assert_str_eq(vmstate_strerror(-999), "unknown error");
    cr_assert_str_eq(vmstate_status_name(6), "not-found");
}

Test(libvmstate, argument_errors)
{
    vmstate *v = NULL;
    char rid[VMSTATE_REQUEST_ID_LEN + 1];
    static char big[VMSTATE_APP_DATA_MAX + 1];
    struct vmstate_event *ev;
    char long_secret[300];

    fx_start_bus(&F);
    started = 1;
    cr_assert_eq(vmstate_open(F.bus_address, APP, &v), 0);
    cr_assert_eq(vmstate_save(v, "x", NULL, 0, rid), VMSTATE_E_NO_CREDENTIALS);
    cr_assert_eq(vmstate_set_credentials(v, "bad principal", "s"), VMSTATE_E_INVALID);
    memset(long_secret, 'x', sizeof(long_secret) - 1);
    long_secret[sizeof(long_secret) - 1] = '\0';
    cr_assert_eq(vmstate_set_credentials(v, "alice", long_secret), VMSTATE_E_INVALID);
    cr_assert_eq(vmstate_set_credentials(v, "alice", NULL), VMSTATE_E_INVALID);
    cr_assert_eq(vmstate_set_credentials(NULL, "alice", "s"), VMSTATE_E_INVALID);
    cr_assert_eq(vmstate_set_credentials(v, "alice", "s"), 0);
    cr_assert_eq(vmstate_save(v, "bad\nlabel", NULL, 0, rid), VMSTATE_E_INVALID);
    cr_assert_eq(vmstate_save(v, NULL, NULL, 0, rid), VMSTATE_E_INVALID);
    cr_assert_eq(vmstate_save(v, "x", big, sizeof(big), rid), VMSTATE_E_INVALID);
    cr_assert_eq(vmstate_save(v, "x", NULL, 3, rid), VMSTATE_E_INVALID);
    cr_assert_eq(vmstate_save(v, "x", NULL, 0, NULL), VMSTATE_E_INVALID);
    cr_assert_eq(vmstate_save(NULL, "x", NULL, 0, rid), VMSTATE_E_INVALID);
    cr_assert_eq(vmstate_restore(v, "bad id!", NULL, 0, rid), VMSTATE_E_INVALID);
    cr_assert_eq(vmstate_delete(v, "", rid), VMSTATE_E_INVALID);
    cr_assert_eq(vmstate_set_memory(v, 0, rid), VMSTATE_E_INVALID);
    cr_assert_eq(vmstate_wait(v, "not-an-id", 10, &ev), VMSTATE_E_INVALID);
    cr_assert_eq(vmstate_wait(NULL, "0123456789abcdef0123456789abcdef", 10, &ev),
                 VMSTATE_E_INVALID);
    cr_assert_eq(vmstate_dispatch(NULL), VMSTATE_E_INVALID);
    cr_assert_eq(vmstate_get_fd(NULL), -1);
    cr_assert_eq(vmstate_listen(NULL, NULL, NULL), VMSTATE_E_INVALID);
    cr_assert_eq(vmstate_bridge_connected(NULL), VMSTATE_E_INVALID);
    /* no helper on this bus */
    cr_assert_eq(vmstate_save(v, "x", NULL, 0, rid), VMSTATE_E_NO_HELPER);
    cr_assert_eq(vmstate_list(v, rid), VMSTATE_E_NO_HELPER);
    cr_assert_eq(vmstate_hostinfo(v, rid), VMSTATE_E_NO_HELPER);
    cr_assert_eq(vmstate_delete(v, "s1", rid), VMSTATE_E_NO_HELPER);
    cr_assert_eq(vmstate_restore(v, "s1", "m", 1, rid), VMSTATE_E_NO_HELPER);
    cr_assert_eq(vmstate_set_memory(v, 1 << 20, rid), VMSTATE_E_NO_HELPER);
    cr_assert_eq(vmstate_listen(v, NULL, NULL), VMSTATE_E_NO_HELPER);
    cr_assert_eq(vmstate_bridge_connected(v), VMSTATE_E_NO_HELPER);
    cr_assert(strlen(vmstate_last_error(v)) > 0);
    vmstate_close(v);
}

Test(libvmstate, permission_error)
{
    vmstate *v;
    char rid[VMSTATE_REQUEST_ID_LEN + 1];
    struct fx_opts o = {.allow_me = -1};

    fx_start(&F, &o);
    started = 1;
    v = open_handle(APP);
    cr_assert_eq(vmstate_save(v, "x", NULL, 0, rid), VMSTATE_E_PERMISSION);
    cr_assert(strstr(vmstate_last_error(v), "not allowed"), "%s", vmstate_last_error(v));
    cr_assert_eq(vmstate_listen(v, NULL, NULL), VMSTATE_E_PERMISSION);
    vmstate_close(v);
}

Test(libvmstate, unavailable_and_busy)
{
    vmstate *v;
    char rid[VMSTATE_REQUEST_ID_LEN + 1];

    start("queue_when_disconnected = false", 0);
    v = open_handle(APP);
    cr_assert_eq(vmstate_save(v, "x", NULL, 0, rid), VMSTATE_E_UNAVAILABLE);
    cr_assert_eq(vmstate_bridge_connected(v), 0);
    vmstate_close(v);
    fx_stop(&F);
    start("queue_max = 1", 1); /* connected, but the bridge never replies */
    v = open_handle(APP);
    cr_assert_eq(vmstate_save(v, "x", NULL, 0, rid), 0);
    cr_assert_eq(vmstate_save(v, "y", NULL, 0, rid), VMSTATE_E_BUSY);
    cr_assert_eq(vmstate_bridge_connected(v), 1);
    vmstate_close(v);
}

Test(libvmstate, listener_limit)
{
    vmstate *a, *b;

    start("max_listeners = 1", 0);
    a = open_handle(APP);
    b = open_handle("org.example.Other");
    cr_assert_eq(vmstate_listen(a, NULL, NULL), 0);
    cr_assert_eq(vmstate_listen(b, NULL, NULL), VMSTATE_E_LIMIT);
    vmstate_close(a);
    vmstate_close(b);
}

Test(libvmstate, save_then_blocking_wait)
{
    vmstate *v;
    char rid[VMSTATE_REQUEST_ID_LEN + 1];
    struct vmstate_event *ev;

    start(NULL, 1);
    v = open_handle(APP);
    cr_assert_eq(vmstate_save(v, "label", "payload", 7, rid), 0, "%s", vmstate_last_error(v));
    cr_assert_eq(vmstate_wait(v, rid, 200, &ev), VMSTATE_E_TIMEOUT);
    bridge_complete("save", "payload", 1);
    cr_assert_eq(vmstate_wait(v, rid, 3000, &ev), 0, "%s", vmstate_last_error(v));
    cr_assert_eq(ev->type, VMSTATE_EVENT_COMPLETED);
    cr_assert_str_eq(ev->request_id, rid);
    cr_assert_str_eq(ev->operation, "save");
    cr_assert_eq(ev->status, 0);
    cr_assert_eq(ev->app_data_len, 7);
    cr_assert_eq(memcmp(ev->app_data, "payload", 7), 0);
    cr_assert_str_eq(ev->state_id, "s1");
    vmstate_event_free(ev);
    vmstate_close(v);
}

Test(libvmstate, list_carries_states)
{
    vmstate *v;
    char rid[VMSTATE_REQUEST_ID_LEN + 1];
    struct vmstate_event *ev;
    struct vms_msg *r, e;
    struct vms_state_info st = {.id = "s1", .label = "first", .app_id = APP, .created = 1700000000};

    start(NULL, 1);
    v = open_handle(APP);
    cr_assert_eq(vmstate_list(v, rid), 0);
    r = fx_bridge_expect(&F, VMS_MSG_REQUEST, 3000);
    cr_assert_not_null(r);
    vms_msg_init(&e, VMS_MSG_EVENT);
    vms_msg_set_str(&e, VMS_F_REQUEST_ID, r->request_id);
    vms_msg_set_str(&e, VMS_F_OP, "list");
    vms_msg_set_u64(&e, VMS_F_STATUS, 0);
    vms_msg_set_u64(&e, VMS_F_EPOCH, 1);
    vms_msg_set_u64(&e, VMS_F_SEQ, 1);
    vms_msg_set_str(&e, VMS_F_APP_ID, APP);
    cr_assert_eq(vms_msg_add_state(&e, &st), 0);
    snprintf(st.id, sizeof(st.id), "s2");
    snprintf(st.parent, sizeof(st.parent), "s1");
    cr_assert_eq(vms_msg_add_state(&e, &st), 0);
    fx_bridge_send(&F, &e);
    vms_msg_clear(&e);
    fx_msg_free(r);
    cr_assert_eq(vmstate_wait(v, rid, 3000, &ev), 0);
    cr_assert_eq(ev->n_states, 2);
    cr_assert_str_eq(ev->states[1].id, "s2");
    cr_assert_str_eq(ev->states[1].parent, "s1");
    cr_assert_eq(ev->states[0].created, 1700000000);
    vmstate_event_free(ev);
    vmstate_close(v);
}

struct seen {
    int completed, restored, bridge;
    char data[64];
};

static void on_event(vmstate *v, const struct vmstate_event *ev, void *userdata)
{
    struct seen *s = userdata;
    (void)v;
    if (ev->type == VMSTATE_EVENT_COMPLETED) {
        s->completed++;
        snprintf(s->data, sizeof(s->data), "%.*s", (int)ev->app_data_len,
                 (const char *)ev->app_data);
    } else if (ev->type == VMSTATE_EVENT_RESTORED) {
        s->restored++;
    } else {
        s->bridge++;
    }
}

static int poll_fd(vmstate *v, int ms)
{
    struct pollfd p = {.fd = vmstate_get_fd(v), .events = POLLIN};
    return poll(&p, 1, ms) > 0 && (p.revents & POLLIN);
}

Test(libvmstate, pollable_fd_with_poll)
{
    vmstate *v;
    struct seen s = {0};
    struct vms_msg t;
    uint64_t until;

    start(NULL, 1);
    v = open_handle(APP);
    cr_assert_eq(vmstate_listen(v, on_event, &s), 0);
    cr_assert_geq(vmstate_get_fd(v), 0);
    while (poll_fd(v, 50)) /* bus housekeeping (NameAcquired...) may wake it once */
        cr_assert_geq(vmstate_dispatch(v), 0); /* BridgeConnected may still arrive */
    cr_assert_eq(poll_fd(v, 100), 0, "fd readable with nothing pending");
    cr_assert_eq(s.completed, 0);
    fx_bridge_event(&F, "0123456789abcdef0123456789abcdef", "restore", 0, APP, "hi there", "s1", 1);
    until = fx_now_ms() + 3000;
    while (!s.completed && fx_now_ms() < until)
        if (poll_fd(v, 3000))
            cr_assert_geq(vmstate_dispatch(v), 0);
    cr_assert_eq(s.completed, 1);
    cr_assert_str_eq(s.data, "hi there");
    /* A Restored broadcast also wakes the fd. */
    vms_msg_init(&t, VMS_MSG_TIMELINE);
    vms_msg_set_u64(&t, VMS_F_EPOCH, 2);
    fx_bridge_send(&F, &t);
    until = fx_now_ms() + 3000;
    while (!s.restored && fx_now_ms() < until)
        if (poll_fd(v, 3000))
            cr_assert_geq(vmstate_dispatch(v), 0);
    cr_assert_eq(s.restored, 1);
    /* Signals read during a blocking call must still wake the fd (eventfd path). */
    fx_bridge_event(&F, "1123456789abcdef0123456789abcdef", "save", 0, APP, "x", "s1", 2);
    usleep(200000);
    cr_assert_eq(vmstate_bridge_connected(v), 1); /* a blocking call that reads the signal */
    cr_assert(poll_fd(v, 1000), "fd not readable although an event is queued");
    cr_assert_eq(vmstate_dispatch(v), 1);
    cr_assert_eq(s.completed, 2);
    vmstate_close(v);
}

Test(libvmstate, disconnected_bus)
{
    vmstate *v;
    char rid[VMSTATE_REQUEST_ID_LEN + 1];
    struct vmstate_event *ev;

    start(NULL, 0);
    v = open_handle(APP);
    cr_assert_eq(vmstate_listen(v, NULL, NULL), 0);
    kill(F.dbus_pid, SIGKILL);
    waitpid(F.dbus_pid, NULL, 0);
    F.dbus_pid = 0;
    usleep(100000);
    poll_fd(v, 1000);
    cr_assert_eq(vmstate_dispatch(v), VMSTATE_E_DISCONNECTED);
    cr_assert_eq(vmstate_wait(v, "0123456789abcdef0123456789abcdef", 100, &ev),
                 VMSTATE_E_DISCONNECTED);
    cr_assert_eq(vmstate_save(v, "x", NULL, 0, rid), VMSTATE_E_DISCONNECTED);
    vmstate_close(v);
}

Test(libvmstate, reregisters_after_helper_restart)
{
    vmstate *v;
    struct seen s = {0};
    uint64_t until;

    start(NULL, 1);
    v = open_handle(APP);
    cr_assert_eq(vmstate_listen(v, on_event, &s), 0);
    kill(F.helper_pid, SIGTERM);
    waitpid(F.helper_pid, NULL, 0);
    fx_bridge_hangup(&F);
    fx_start_helper(&F, NULL);
    fx_bridge_handshake(&F, 1);
    until = fx_now_ms() + 1000; /* let the handle see NameOwnerChanged and register again */
    while (fx_now_ms() < until)
        if (poll_fd(v, 100))
            vmstate_dispatch(v);
    fx_bridge_event(&F, "2123456789abcdef0123456789abcdef", "save", 0, APP, "again", "s1", 1);
    until = fx_now_ms() + 3000;
    while (!s.completed && fx_now_ms() < until)
        if (poll_fd(v, 3000))
            vmstate_dispatch(v);
    cr_assert_eq(s.completed, 1);
    cr_assert_str_eq(s.data, "again");
    vmstate_close(v);
}
