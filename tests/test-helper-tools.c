/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * test-helper-tools.c — vmstatectl, examples/vmstate-example and
 * examples/vmstate-script.sh run as programs against the real helper, a
 * private bus and the fake bridge (which also plays a restore).
 */
#include "config.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test-helper-fixture.h"

static struct fx F;
static int started;

static void stop(void)
{
    if (started)
        fx_stop(&F);
    started = 0;
}

TestSuite(tools, .fini = stop, .timeout = 60);

struct proc {
    pid_t pid;
    char out[300];
};

/* Run @argv in the background with env for the test bus; stdout+stderr go to a file. */
static void spawn(struct proc *p, char *const argv[], int with_secret)
{
    static unsigned n;
    snprintf(p->out, sizeof(p->out), "%s/out-%u.txt", F.dir, n++);
    p->pid = fork();
    cr_assert_geq(p->pid, 0);
    if (p->pid == 0) {
        int fd = open(p->out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        setenv("VMSTATE_BUS_ADDRESS", F.bus_address, 1);
        setenv("BUSCTL_ADDRESS", F.bus_address, 1);
        setenv("VMSTATE_PRINCIPAL", "alice", 1);
        if (with_secret)
            setenv("VMSTATE_SECRET", "correct horse", 1);
        else
            unsetenv("VMSTATE_SECRET");
        execv(argv[0], argv);
        _exit(127);
    }
}

static int finish(struct proc *p, int timeout_ms)
{
    uint64_t until = fx_now_ms() + (uint64_t)timeout_ms;
    int st;
    while (waitpid(p->pid, &st, WNOHANG) == 0) {
        if (fx_now_ms() > until) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &st, 0);
            cr_assert_fail("%s did not finish", p->out);
        }
        usleep(10000);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static char *output(const struct proc *p)
{
    static char buf[8192];
    FILE *f = fopen(p->out, "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    return buf;
}

static int run(char *const argv[], int with_secret, int timeout_ms, char **out)
{
    struct proc p;
    int rc;
    spawn(&p, argv, with_secret);
    rc = finish(&p, timeout_ms);
    *out = output(&p);
    return rc;
}

static void event_for(const struct vms_msg *req, uint32_t status, const char *state,
                      const char *reason, uint64_t seq)
{
    struct vms_msg e;
    vms_msg_init(&e, VMS_MSG_EVENT);
    vms_msg_set_str(&e, VMS_F_REQUEST_ID, req->request_id);
    vms_msg_set_str(&e, VMS_F_OP, req->op);
    vms_msg_set_u64(&e, VMS_F_STATUS, status);
    vms_msg_set_u64(&e, VMS_F_EPOCH, F.epoch);
    vms_msg_set_u64(&e, VMS_F_SEQ, seq);
    vms_msg_set_str(&e, VMS_F_APP_ID, req->app_id);
    if (req->app_data_len)
        vms_msg_set_app_data(&e, req->app_data, req->app_data_len);
    if (state)
        vms_msg_set_str(&e, VMS_F_STATE_ID, state);
    if (reason)
        vms_msg_set_str(&e, VMS_F_REASON, reason);
    if (status)
        vms_msg_set_str(&e, VMS_F_MESSAGE, "no such state");
    fx_bridge_send(&F, &e);
    vms_msg_clear(&e);
}

#define CTL VMSTATECTL_PATH

Test(tools, vmstatectl_usage_and_credentials)
{
    char *out;

    fx_start(&F, NULL);
    started = 1;
    cr_assert_eq(run((char *[]){CTL, "--help", NULL}, 1, 5000, &out), 0);
    cr_assert(strstr(out, "Exit status"));
    cr_assert_eq(run((char *[]){CTL, NULL}, 1, 5000, &out), 2);
    cr_assert_eq(run((char *[]){CTL, "frobnicate", NULL}, 1, 5000, &out), 2);
    cr_assert_eq(run((char *[]){CTL, "save", NULL}, 1, 5000, &out), 2);
    cr_assert_eq(run((char *[]){CTL, "set-memory", "lots", NULL}, 1, 5000, &out), 2);
    cr_assert_eq(run((char *[]){CTL, "save", "x", NULL}, 0, 5000, &out), 2, "%s", out);
    cr_assert(strstr(out, "no secret"), "%s", out);
    cr_assert_eq(run((char *[]){CTL, "--version", NULL}, 1, 5000, &out), 0, "%s", out);
    cr_assert(strstr(out, "vmstatectl " PACKAGE_VERSION), "%s", out);
    /* numbers are numbers: no trailing garbage, no zero */
    cr_assert_eq(run((char *[]){CTL, "-t", "5x", "list", NULL}, 1, 5000, &out), 2, "%s", out);
    cr_assert(strstr(out, "not '5x'"), "%s", out);
    cr_assert_eq(run((char *[]){CTL, "--timeout", "0", "list", NULL}, 1, 5000, &out), 2, "%s", out);
    cr_assert_eq(run((char *[]){CTL, "--tree", "save", "x", NULL}, 1, 5000, &out), 2, "%s", out);
}

/* Each part that may be missing has its own message (which part, what to do) and exit status,
 * and nothing waits for an answer that cannot come. */
Test(tools, vmstatectl_no_bus_exits_6)
{
    char *out, addr[400];
    char *argv[] = {CTL, "--address", addr, "list", NULL};

    fx_start_bus(&F); /* only for F.dir; the address below has no bus behind it */
    started = 1;
    snprintf(addr, sizeof(addr), "unix:path=%s/no-bus-here", F.dir);
    cr_assert_eq(run(argv, 1, 5000, &out), 6, "%s", out);
    cr_assert(strstr(out, "cannot connect to the D-Bus bus at unix:path="), "%s", out);
    cr_assert(strstr(out, "is dbus-daemon running?"), "%s", out);
}

Test(tools, vmstatectl_no_helper_exits_7)
{
    char *out;

    fx_start_bus(&F); /* a bus, but no vmstate-helperd on it */
    started = 1;
    cr_assert_eq(run((char *[]){CTL, "save", "x", NULL}, 1, 5000, &out), 7, "%s", out);
    cr_assert(strstr(out, "vmstate-helperd is not running"), "%s", out);
    cr_assert(strstr(out, "systemctl status vmstate-helperd"), "%s", out);
    cr_assert(!strstr(out, "NameHasNoOwner") && !strstr(out, "ServiceUnknown"), "%s", out);
    cr_assert_eq(run((char *[]){CTL, "list", NULL}, 1, 5000, &out), 7, "%s", out);
    cr_assert(strstr(out, "vmstate-helperd is not running"), "%s", out);
    cr_assert_eq(run((char *[]){CTL, "watch", NULL}, 1, 5000, &out), 7, "%s", out);
}

Test(tools, vmstatectl_no_bridge_list_answers_from_the_cache)
{
    struct proc p;
    struct vms_msg *req, e;
    struct vms_state_info st = {
        .id = "s1", .label = "base", .app_id = "vmstatectl", .created = 1700000000};
    /* one Hello only: the late handshake below answers the first one */
    struct fx_opts o = {.extra_config = "hello_retry_ms = 60000", .allow_me = 1};
    uint64_t t0;
    char *out;

    fx_start(&F, &o);
    started = 1;
    /* bridge never connected: list does not wait, it says so; the cache is still empty */
    t0 = fx_now_ms();
    cr_assert_eq(run((char *[]){CTL, "list", NULL}, 1, 5000, &out), 8, "%s", out);
    cr_assert_lt(fx_now_ms() - t0, 4000);
    cr_assert(strstr(out, "the host bridge is not connected"), "%s", out);
    cr_assert(strstr(out, "last known list; it may be stale"), "%s", out);
    /* hostinfo is held by the helper: it says so and waits (here: -t 1, exit 4) */
    cr_assert_eq(run((char *[]){CTL, "-t", "1", "hostinfo", NULL}, 1, 20000, &out), 4, "%s", out);
    cr_assert(strstr(out, "the helper holds hostinfo until the bridge is back; waiting"), "%s",
              out);
    /* a request without the bridge is queued in the helper: exit 5, and a note why */
    cr_assert_eq(run((char *[]){CTL, "save", "later", NULL}, 1, 5000, &out), 5, "%s", out);
    cr_assert(strstr(out, "the helper holds save until the bridge is back"), "%s", out);

    /* with the bridge: a real list (s1 and its child s2) fills the helper's cache */
    fx_bridge_handshake(&F, 1);
    for (int i = 0; i < 2; i++) { /* the queued hostinfo and save */
        req = fx_bridge_expect(&F, VMS_MSG_REQUEST, 3000);
        cr_assert_not_null(req);
        fx_msg_free(req);
    }
    spawn(&p, (char *[]){CTL, "list", NULL}, 1);
    req = fx_bridge_expect(&F, VMS_MSG_REQUEST, 3000);
    cr_assert_not_null(req);
    vms_msg_init(&e, VMS_MSG_EVENT);
    vms_msg_set_str(&e, VMS_F_REQUEST_ID, req->request_id);
    vms_msg_set_str(&e, VMS_F_OP, "list");
    vms_msg_set_u64(&e, VMS_F_STATUS, 0);
    vms_msg_set_u64(&e, VMS_F_EPOCH, 1);
    vms_msg_set_u64(&e, VMS_F_SEQ, 1);
    vms_msg_set_str(&e, VMS_F_APP_ID, req->app_id);
    cr_assert_eq(vms_msg_add_state(&e, &st), 0);
    snprintf(st.id, sizeof(st.id), "s2");
    snprintf(st.label, sizeof(st.label), "upgrade");
    snprintf(st.parent, sizeof(st.parent), "s1");
    cr_assert_eq(vms_msg_add_state(&e, &st), 0);
    fx_bridge_send(&F, &e);
    vms_msg_clear(&e);
    fx_msg_free(req);
    cr_assert_eq(finish(&p, 5000), 0, "%s", output(&p));
    cr_assert(strstr(output(&p), "s2"), "%s", output(&p));

    /* bridge gone: list --tree shows the cached states, s2 under s1, and exits 8 */
    fx_bridge_hangup(&F);
    for (int i = 0; i < 50; i++) {
        if (run((char *[]){CTL, "list", "--tree", NULL}, 1, 5000, &out) == 8)
            break;
        usleep(100000);
    }
    cr_assert_eq(run((char *[]){CTL, "list", "--tree", NULL}, 1, 5000, &out), 8, "%s", out);
    cr_assert(strstr(out, "may be stale"), "%s", out);
    cr_assert(strstr(out, "└─ s1"), "%s", out);
    cr_assert(strstr(out, "   └─ s2"), "%s", out);
    cr_assert(strstr(out, "upgrade"), "%s", out);
}

Test(tools, vmstatectl_submit_wait_json_and_exit_codes)
{
    struct proc p;
    struct vms_msg *req;
    char *out;

    fx_start(&F, NULL);
    started = 1;
    fx_bridge_handshake(&F, 1);
    /* no --wait: prints the id at once, and exits 5: queued, not completed */
    cr_assert_eq(run((char *[]){CTL, "save", "quick", NULL}, 1, 5000, &out), 5, "%s", out);
    req = fx_bridge_expect(&F, VMS_MSG_REQUEST, 3000);
    cr_assert_not_null(req);
    cr_assert_str_eq(req->label, "quick");
    cr_assert_str_eq(req->app_id, "vmstatectl");
    cr_assert(strstr(out, req->request_id), "%s", out);
    fx_msg_free(req);

    /* the secret from a file (no env) */
    {
        char sf[300];
        FILE *f;
        snprintf(sf, sizeof(sf), "%s/secret", F.dir);
        f = fopen(sf, "w");
        cr_assert_not_null(f);
        fputs("from a file\n", f);
        fclose(f);
        cr_assert_eq(run((char *[]){CTL, "--secret-file", sf, "-p", "bob", "delete", "s2", NULL}, 0,
                         5000, &out),
                     5, "%s", out);
        req = fx_bridge_expect(&F, VMS_MSG_REQUEST, 3000);
        cr_assert_not_null(req);
        cr_assert_str_eq(req->secret, "from a file");
        cr_assert_str_eq(req->principal, "bob");
        cr_assert_str_eq(req->state_id, "s2");
        fx_msg_free(req);
    }

    /* --wait --json: follows to the completion */
    spawn(&p, (char *[]){CTL, "--wait", "--json", "--data", "note", "save", "slow", NULL}, 1);
    req = fx_bridge_expect(&F, VMS_MSG_REQUEST, 3000);
    cr_assert_not_null(req);
    usleep(300000);
    event_for(req, 0, "s7", NULL, 1);
    cr_assert_eq(finish(&p, 5000), 0, "%s", output(&p));
    out = output(&p);
    cr_assert(strstr(out, "\"status\":0"), "%s", out);
    cr_assert(strstr(out, "\"state_id\":\"s7\""), "%s", out);
    cr_assert(strstr(out, "\"app_data\":\"note\""), "%s", out);
    fx_msg_free(req);

    /* a failed completion exits 1 */
    spawn(&p, (char *[]){CTL, "--wait", "restore", "nope", NULL}, 1);
    req = fx_bridge_expect(&F, VMS_MSG_REQUEST, 3000);
    cr_assert_not_null(req);
    event_for(req, 6, NULL, NULL, 2);
    cr_assert_eq(finish(&p, 5000), 1, "%s", output(&p));
    cr_assert(strstr(output(&p), "not-found"), "%s", output(&p));
    fx_msg_free(req);

    /* no completion within --timeout exits 4 */
    cr_assert_eq(
        run((char *[]){CTL, "--wait", "--timeout", "1", "delete", "s1", NULL}, 1, 5000, &out), 4,
        "%s", out);
}

Test(tools, vmstatectl_refused_exits_3)
{
    char *out;
    struct fx_opts o = {.allow_me = -1};

    fx_start(&F, &o);
    started = 1;
    cr_assert_eq(run((char *[]){CTL, "save", "x", NULL}, 1, 5000, &out), 3, "%s", out);
    cr_assert(strstr(out, "not allowed"), "%s", out);
}

Test(tools, example_receives_the_message_in_the_restored_state)
{
    struct proc p;
    struct vms_msg *save, *restore, t;
    char file[300];
    char *out;

    fx_start(&F, NULL);
    started = 1;
    fx_bridge_handshake(&F, 1);
    snprintf(file, sizeof(file), "%s/example.txt", F.dir);
    spawn(
        &p,
        (char *[]){EXAMPLE_PATH, "--file", file, "--message", "it worked", "--timeout", "20", NULL},
        1);
    save = fx_bridge_expect(&F, VMS_MSG_REQUEST, 5000);
    cr_assert_not_null(save, "%s", output(&p));
    cr_assert_str_eq(save->op, "save");
    event_for(save, 0, "s1", NULL, 1);
    restore = fx_bridge_expect(&F, VMS_MSG_REQUEST, 5000);
    cr_assert_not_null(restore, "%s", output(&p));
    cr_assert_str_eq(restore->op, "restore");
    cr_assert_str_eq(restore->state_id, "s1");
    cr_assert_eq(restore->app_data_len, strlen("it worked"));
    /* Play the restore as the bridge does: new timeline, the restore's completion with the
     * requester's data, then the save replayed into the new timeline. (The process is not
     * really rewound here; on a VM it is the instance that waited for the save.) */
    vms_msg_init(&t, VMS_MSG_TIMELINE);
    vms_msg_set_u64(&t, VMS_F_EPOCH, 2);
    vms_msg_set_str(&t, VMS_F_STATE_ID, "s1");
    vms_msg_set_str(&t, VMS_F_REASON, "restore");
    fx_bridge_send(&F, &t);
    F.epoch = 2;
    event_for(restore, 0, "s1", NULL, 1);
    event_for(save, 0, "s1", "restored-copy", 2);
    cr_assert_eq(finish(&p, 10000), 0, "%s", output(&p));
    out = output(&p);
    cr_assert(strstr(out, "message from my other instance: \"it worked\""), "%s", out);
    cr_assert(strstr(out, "restored: this instance now runs in state s1"), "%s", out);
    fx_msg_free(save);
    fx_msg_free(restore);
}

Test(tools, busctl_script_save_list_restore)
{
    struct vms_msg *req;
    char *out;

    if (access("/usr/bin/busctl", X_OK) != 0)
        cr_skip_test("busctl not installed");
    fx_start(&F, NULL);
    started = 1;
    fx_bridge_handshake(&F, 1);
    cr_assert_eq(
        run((char *[]){"/bin/sh", SCRIPT_PATH, "save", "from script", NULL}, 1, 10000, &out), 0,
        "%s", out);
    req = fx_bridge_expect(&F, VMS_MSG_REQUEST, 3000);
    cr_assert_not_null(req);
    cr_assert_str_eq(req->op, "save");
    cr_assert_str_eq(req->label, "from script");
    cr_assert_str_eq(req->principal, "alice");
    fx_msg_free(req);
    cr_assert_eq(
        run((char *[]){"/bin/sh", SCRIPT_PATH, "restore", "s1", "hi there", NULL}, 1, 10000, &out),
        0, "%s", out);
    req = fx_bridge_expect(&F, VMS_MSG_REQUEST, 3000);
    cr_assert_not_null(req);
    cr_assert_str_eq(req->op, "restore");
    cr_assert_eq(req->app_data_len, 8);
    cr_assert_eq(memcmp(req->app_data, "hi there", 8), 0);
    fx_msg_free(req);
    setenv("VMSTATE_LIST_WAIT", "0", 1);
    cr_assert_eq(run((char *[]){"/bin/sh", SCRIPT_PATH, "list", NULL}, 1, 10000, &out), 0, "%s",
                 out);
    cr_assert(strstr(out, "a(ssssx)"), "%s", out);
}

Test(tools, vmstatectl_watch_prints_events_until_interrupted)
{
    struct proc p;
    struct vms_msg t;
    char *out;
    uint64_t until;

    fx_start(&F, NULL);
    started = 1;
    fx_bridge_handshake(&F, 1);
    spawn(&p, (char *[]){CTL, "--json", "--app-id", "org.example.W", "watch", NULL}, 0);
    until = fx_now_ms() + 5000; /* until it has registered */
    while (fx_now_ms() < until) {
        FILE *f = fopen(F.helper_log, "r");
        char buf[1 << 15];
        size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
        if (f)
            fclose(f);
        buf[n] = '\0';
        if (strstr(buf, "registered for app org.example.W"))
            break;
        usleep(20000);
    }
    fx_bridge_event(&F, "0123456789abcdef0123456789abcdef", "save", 0, "org.example.W", "w", "s3",
                    1);
    fx_bridge_notice(&F, "io-resumed", "paused 2 s by a storage error on disk vda");
    vms_msg_init(&t, VMS_MSG_TIMELINE);
    vms_msg_set_u64(&t, VMS_F_EPOCH, 2);
    vms_msg_set_str(&t, VMS_F_STATE_ID, "s3");
    fx_bridge_send(&F, &t);
    until = fx_now_ms() + 3000;
    while (!strstr(output(&p), "\"restored\"") && fx_now_ms() < until)
        usleep(20000);
    kill(p.pid, SIGINT);
    cr_assert_eq(finish(&p, 3000), 0, "%s", output(&p));
    out = output(&p);
    cr_assert(strstr(out, "\"event\":\"completed\""), "%s", out);
    cr_assert(strstr(out, "\"state_id\":\"s3\""), "%s", out);
    cr_assert(strstr(out, "\"event\":\"restored\""), "%s", out);
    cr_assert(strstr(out,
                     "{\"event\":\"notice\",\"reason\":\"io-resumed\",\"message\":\"paused 2 s "
                     "by a storage error on disk vda\"}"),
              "%s", out);
}

Test(tools, vmstatectl_inhibit_exit_codes)
{
    char *out;

    fx_start(&F, NULL);
    started = 1;
    cr_assert_eq(
        run((char *[]){CTL, "inhibit", "00112233445566778899aabbccddeeff", NULL}, 0, 5000, &out), 2,
        "%s", out);
    cr_assert(strstr(out, "needs REQUEST_ID and REASON"), "%s", out);
    /* needs no credentials (no secret here) */
    cr_assert_eq(run((char *[]){CTL, "inhibit", "not-an-id", "busy", NULL}, 0, 5000, &out), 2, "%s",
                 out);
    cr_assert(strstr(out, "inhibit: bad request id"), "%s", out);
    cr_assert_eq(run((char *[]){CTL, "inhibit", "00112233445566778899aabbccddeeff", "busy", NULL},
                     0, 5000, &out),
                 3, "%s", out);
    cr_assert(strstr(out, "no save 00112233445566778899aabbccddeeff is being prepared"), "%s", out);
}
