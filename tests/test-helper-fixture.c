/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * test-helper-fixture.c — see test-helper-fixture.h.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test-helper-fixture.h"
#include "vms-dbus.h"

#define SECRET_PRINCIPAL "alice"
#define SECRET_VALUE     "correct horse"

uint64_t fx_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    cr_assert_not_null(fp, "cannot write %s", path);
    fputs(text, fp);
    fclose(fp);
}

static int listen_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    cr_assert_geq(fd, 0);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    unlink(path);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "bind %s: %s", path,
                 strerror(errno));
    cr_assert_eq(listen(fd, 4), 0);
    return fd;
}

/* The helper runs under valgrind (VMSTATE_TEST_VALGRIND): slower, and checked at exit. */
static int under_valgrind(void)
{
    return getenv("VMSTATE_TEST_VALGRIND") != NULL;
}

void fx_start_bus(struct fx *f)
{
    fx_start_bus_with(f, "");
}

void fx_start_bus_with(struct fx *f, const char *extra)
{
    char conf[512], text[2048], fdarg[32];
    int pipefd[2];
    ssize_t n;
    size_t got = 0;

    memset(f, 0, sizeof(*f));
    f->listen_a = f->listen_b = -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/vmstate-test-XXXXXX");
    cr_assert_not_null(mkdtemp(f->dir));
    chmod(f->dir, 0711); /* fx_client_as: other uids reach the bus socket */
    snprintf(conf, sizeof(conf), "%s/bus.conf", f->dir);
    snprintf(text, sizeof(text),
             "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\"\n"
             " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
             "<busconfig><type>session</type><listen>unix:path=%s/bus</listen>"
             "<auth>EXTERNAL</auth><policy context=\"default\"><allow user=\"*\"/>"
             "<allow send_destination=\"*\" eavesdrop=\"true\"/><allow eavesdrop=\"true\"/>"
             "<allow own=\"*\"/></policy>%s</busconfig>\n",
             f->dir, extra);
    write_file(conf, text);
    cr_assert_eq(pipe(pipefd), 0);
    f->dbus_pid = fork();
    cr_assert_geq(f->dbus_pid, 0);
    if (f->dbus_pid == 0) {
        char cf[600], logp[300];
        int fd;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(pipefd[0]);
        snprintf(logp, sizeof(logp), "%s/dbus.log", f->dir);
        fd = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        snprintf(fdarg, sizeof(fdarg), "--print-address=%d", pipefd[1]);
        snprintf(cf, sizeof(cf), "--config-file=%s", conf);
        execl(DBUS_DAEMON_PATH, DBUS_DAEMON_PATH, cf, "--nofork", fdarg, (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    while (got < sizeof(f->bus_address) - 1 &&
           (n = read(pipefd[0], f->bus_address + got, sizeof(f->bus_address) - 1 - got)) > 0) {
        got += (size_t)n;
        if (memchr(f->bus_address, '\n', got))
            break;
    }
    close(pipefd[0]);
    f->bus_address[got] = '\0';
    f->bus_address[strcspn(f->bus_address, "\n")] = '\0';
    cr_assert(f->bus_address[0], "dbus-daemon printed no address");
    cr_assert_eq(vms_channel_init(&f->a, "fake-bridge/a", NULL, 0), 0);
    cr_assert_eq(vms_channel_init(&f->b, "fake-bridge/b", NULL, 0), 0);
    f->epoch = 1;
}

static int name_has_owner(DBusConnection *c, const char *name)
{
    return dbus_bus_name_has_owner(c, name, NULL) ? 1 : 0;
}

void fx_match_rules(DBusConnection *c, char *out, size_t size)
{
    DBusMessage *m, *r;
    DBusMessageIter it, dict, ent, rules;
    size_t len = 0;

    m = dbus_message_new_method_call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                     "org.freedesktop.DBus.Debug.Stats", "GetAllMatchRules");
    r = dbus_connection_send_with_reply_and_block(c, m, 5000, NULL);
    dbus_message_unref(m);
    cr_assert_not_null(r, "dbus-daemon answers GetAllMatchRules (built with --enable-stats)");
    cr_assert(dbus_message_has_signature(r, "a{sas}"));
    out[0] = '\0';
    dbus_message_iter_init(r, &it);
    dbus_message_iter_recurse(&it, &dict);
    for (; dbus_message_iter_get_arg_type(&dict) == DBUS_TYPE_DICT_ENTRY;
         dbus_message_iter_next(&dict)) {
        const char *name, *rule;
        dbus_message_iter_recurse(&dict, &ent);
        dbus_message_iter_get_basic(&ent, &name);
        dbus_message_iter_next(&ent);
        for (dbus_message_iter_recurse(&ent, &rules);
             dbus_message_iter_get_arg_type(&rules) == DBUS_TYPE_STRING;
             dbus_message_iter_next(&rules)) {
            dbus_message_iter_get_basic(&rules, &rule);
            len += (size_t)snprintf(out + len, size - len, "%s\t%s\n", name, rule);
            cr_assert_lt(len, size, "rules fit the buffer");
        }
    }
    dbus_message_unref(r);
}

void fx_name_owner(DBusConnection *c, const char *name, char *out, size_t len)
{
    DBusMessage *m, *r;
    const char *owner = NULL;

    m = dbus_message_new_method_call(DBUS_SERVICE_DBUS, DBUS_PATH_DBUS, DBUS_INTERFACE_DBUS,
                                     "GetNameOwner");
    cr_assert(m && dbus_message_append_args(m, DBUS_TYPE_STRING, &name, DBUS_TYPE_INVALID));
    r = dbus_connection_send_with_reply_and_block(c, m, 5000, NULL);
    dbus_message_unref(m);
    cr_assert(r && dbus_message_get_args(r, NULL, DBUS_TYPE_STRING, &owner, DBUS_TYPE_INVALID),
              "%s has an owner", name);
    snprintf(out, len, "%s", owner);
    dbus_message_unref(r);
}

void fx_start_helper(struct fx *f, const struct fx_opts *o)
{
    char conf[512], text[4096], sa[300], sb[300];
    DBusConnection *c;
    uint64_t until;

    if (f->listen_a < 0 && !(o && o->no_ports)) {
        snprintf(sa, sizeof(sa), "%s/a.sock", f->dir);
        snprintf(sb, sizeof(sb), "%s/b.sock", f->dir);
        f->listen_a = listen_unix(sa);
        f->listen_b = listen_unix(sb);
    }
    snprintf(conf, sizeof(conf), "%s/helper.conf", f->dir);
    snprintf(text, sizeof(text),
             "[helper]\n"
             "%s%u\n"
             "request_port = unix:%s/a.sock\n"
             "event_port = unix:%s/b.sock\n"
             "recheck_interval_ms = 50\n"
             "hello_retry_ms = 1000\n"
             "grace_period_ms = 1500\n"
             "%s\n",
             "allow_users = 4242,", /* an arbitrary uid that is not the test's */
             (o && o->allow_me == -1) ? 4243u : (unsigned)getuid(), f->dir, f->dir,
             o && o->extra_config ? o->extra_config : "");
    write_file(conf, text);
    snprintf(f->helper_log, sizeof(f->helper_log), "%s/helper.log", f->dir);
    f->helper_pid = fork();
    cr_assert_geq(f->helper_pid, 0);
    if (f->helper_pid == 0) {
        int fd = open(f->helper_log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        if (under_valgrind())
            execl("/usr/bin/valgrind", "valgrind", "--leak-check=full", "--error-exitcode=99", "-q",
                  HELPERD_PATH, "--config", conf, "--address", f->bus_address, "--debug",
                  (char *)NULL);
        execl(HELPERD_PATH, HELPERD_PATH, "--config", conf, "--address", f->bus_address, "--debug",
              (char *)NULL);
        _exit(127);
    }
    c = fx_client(f);
    until = fx_now_ms() + 10000;
    while (!name_has_owner(c, VMS_DBUS_NAME)) {
        int st;
        cr_assert_eq(waitpid(f->helper_pid, &st, WNOHANG), 0, "helper exited early (log %s)",
                     f->helper_log);
        cr_assert_lt(fx_now_ms(), until, "helper did not take its name");
        usleep(10000);
    }
    fx_client_close(c);
}

void fx_start(struct fx *f, const struct fx_opts *o)
{
    fx_start_bus(f);
    fx_start_helper(f, o);
}

/* Returns the exit status (-1: killed after the grace period, or no process). */
static int kill_wait(pid_t pid, int sig)
{
    /* valgrind's leak check runs at exit and takes its time */
    uint64_t until = fx_now_ms() + (under_valgrind() ? 30000 : 5000);
    int st;

    if (pid <= 0)
        return -1;
    kill(pid, sig);
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (fx_now_ms() > until) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        usleep(5000);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void fx_stop(struct fx *f)
{
    char cmd[400];

    int helper_status = kill_wait(f->helper_pid, SIGTERM);

    /* under valgrind (--error-exitcode=99) a memory error or leak fails the test */
    if (under_valgrind() && f->helper_pid > 0 && helper_status == 99) {
        /* an assertion in a fini does not fail the test; a crash of its process does */
        fprintf(stderr, "valgrind found errors in the helper: see %s\n", f->helper_log);
        abort();
    }
    f->helper_pid = 0;
    kill_wait(f->dbus_pid, SIGTERM);
    f->dbus_pid = 0;
    for (unsigned i = 0; i < f->rx_n; i++)
        fx_msg_free(f->rxq[i]);
    f->rx_n = 0;
    vms_channel_free(&f->a);
    vms_channel_free(&f->b);
    if (f->listen_a >= 0)
        close(f->listen_a);
    if (f->listen_b >= 0)
        close(f->listen_b);
    if (getenv("VMSTATE_TEST_KEEP")) {
        fprintf(stderr, "kept %s\n", f->dir);
        return;
    }
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", f->dir);
}

/* ---- fake bridge ---------------------------------------------------------- */

/* Waits for something that must happen are 3x longer when the helper runs under valgrind
 * (VMSTATE_TEST_VALGRIND): it is that much slower, and a wait that ends early fails a test
 * that has nothing to do with memory errors. Waits for what must not happen just get longer. */
uint64_t fx_realtime_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t fx_ms(uint64_t ms)
{
    return ms * (under_valgrind() ? 3 : 1);
}

double fx_late_s(void)
{
    return under_valgrind() ? 1.0 : 0.1;
}

static uint64_t scaled_wait_ms(int timeout_ms)
{
    return fx_ms((uint64_t)(timeout_ms < 0 ? 0 : timeout_ms));
}

static int accept_timeout(int lfd, int timeout_ms)
{
    struct pollfd p = {.fd = lfd, .events = POLLIN};

    if (poll(&p, 1, timeout_ms) <= 0)
        return -1;
    return accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
}

void fx_bridge_accept(struct fx *f, int timeout_ms)
{
    int fa = accept_timeout(f->listen_a, (int)scaled_wait_ms(timeout_ms));
    int fb = accept_timeout(f->listen_b, (int)scaled_wait_ms(timeout_ms));

    cr_assert_geq(fa, 0, "helper did not connect port A");
    cr_assert_geq(fb, 0, "helper did not connect port B");
    vms_channel_attach(&f->a, fa);
    vms_channel_attach(&f->b, fb);
}

void fx_bridge_hangup(struct fx *f)
{
    vms_channel_detach(&f->a, 1);
    vms_channel_detach(&f->b, 1);
}

void fx_msg_free(struct vms_msg *m)
{
    if (!m)
        return;
    vms_msg_clear(m);
    free(m);
}

static void on_rx(void *opaque, struct vms_channel *c, struct vms_msg *m)
{
    struct fx *f = opaque;
    struct vms_msg *copy;

    (void)c;
    cr_assert_lt(f->rx_n, FX_MSGQ, "fake bridge queue overflow");
    copy = malloc(sizeof(*copy));
    cr_assert_not_null(copy);
    *copy = *m;
    m->app_data = NULL;
    m->app_data_len = 0;
    m->states = NULL;
    m->n_states = 0;
    f->rxq[f->rx_n++] = copy;
}

static void pump(struct fx *f, int timeout_ms)
{
    struct pollfd p = {.fd = f->a.fd, .events = POLLIN};

    if (f->a.fd < 0) {
        if (timeout_ms > 0)
            usleep((useconds_t)timeout_ms * 1000);
        return;
    }
    if (poll(&p, 1, timeout_ms) > 0)
        vms_channel_read(&f->a, 0, on_rx, f);
}

struct vms_msg *fx_bridge_expect(struct fx *f, enum vms_msg_type type, int timeout_ms)
{
    uint64_t until = fx_now_ms() + scaled_wait_ms(timeout_ms);

    for (;;) {
        for (unsigned i = 0; i < f->rx_n; i++)
            if (f->rxq[i]->type == type) {
                struct vms_msg *m = f->rxq[i];
                memmove(&f->rxq[i], &f->rxq[i + 1], (f->rx_n - i - 1) * sizeof(*f->rxq));
                f->rx_n--;
                return m;
            }
        uint64_t now = fx_now_ms();
        if (now >= until)
            return NULL;
        pump(f, (int)(until - now));
    }
}

unsigned fx_bridge_count(struct fx *f, enum vms_msg_type type, int wait_ms)
{
    uint64_t until = fx_now_ms() + (uint64_t)wait_ms;
    unsigned n = 0;

    while (fx_now_ms() < until)
        pump(f, (int)(until - fx_now_ms()));
    for (unsigned i = 0; i < f->rx_n; i++)
        if (f->rxq[i]->type == type)
            n++;
    return n;
}

void fx_bridge_send(struct fx *f, const struct vms_msg *m)
{
    cr_assert_eq(vms_channel_send(&f->b, m), 0);
    cr_assert_eq(vms_channel_flush(&f->b), 1);
}

void fx_bridge_send_raw(struct fx *f, const void *data, size_t len)
{
    cr_assert_eq(write(f->b.fd, data, len), (ssize_t)len);
}

static int get_bridge_connected(DBusConnection *c)
{
    const char *iface = VMS_DBUS_IFACE, *prop = "BridgeConnected";
    DBusMessage *m, *r;
    DBusMessageIter it, v;
    dbus_bool_t b = FALSE;

    m = dbus_message_new_method_call(VMS_DBUS_NAME, VMS_DBUS_PATH,
                                     "org.freedesktop.DBus.Properties", "Get");
    dbus_message_append_args(m, DBUS_TYPE_STRING, &iface, DBUS_TYPE_STRING, &prop,
                             DBUS_TYPE_INVALID);
    r = dbus_connection_send_with_reply_and_block(c, m, 2000, NULL);
    dbus_message_unref(m);
    if (r && dbus_message_has_signature(r, "v")) {
        dbus_message_iter_init(r, &it);
        dbus_message_iter_recurse(&it, &v);
        if (dbus_message_iter_get_arg_type(&v) == DBUS_TYPE_BOOLEAN)
            dbus_message_iter_get_basic(&v, &b);
    }
    if (r)
        dbus_message_unref(r);
    return b ? 1 : 0;
}

/* The helper handles the Welcome asynchronously: wait until it says so, so that tests
 * start from a known state. */
static void wait_bridge_connected(struct fx *f)
{
    DBusConnection *c = fx_client(f);
    uint64_t until = fx_now_ms() + 5000;

    while (!get_bridge_connected(c)) {
        cr_assert_lt(fx_now_ms(), until, "helper did not take the Welcome (see %s)", f->helper_log);
        usleep(5000);
    }
    fx_client_close(c);
}

void fx_bridge_handshake(struct fx *f, uint64_t epoch)
{
    fx_bridge_handshake_caps(f, epoch, VMS_CAP_ALL);
}

void fx_bridge_handshake_caps(struct fx *f, uint64_t epoch, uint32_t caps)
{
    struct vms_msg *hello, w;

    fx_bridge_accept(f, 5000);
    hello = fx_bridge_expect(f, VMS_MSG_HELLO, 5000);
    cr_assert_not_null(hello, "no Hello from the helper");
    f->epoch = epoch;
    vms_msg_init(&w, VMS_MSG_WELCOME);
    vms_msg_set_u64(&w, VMS_F_VERSION, 1);
    vms_msg_set_u64(&w, VMS_F_NONCE, hello->nonce);
    vms_msg_set_u64(&w, VMS_F_EPOCH, epoch);
    vms_msg_set_u64(&w, VMS_F_CAPS, caps);
    fx_bridge_send(f, &w);
    fx_msg_free(hello);
    wait_bridge_connected(f);
}

void fx_bridge_prepare(struct fx *f, const char *request_id, const char *label)
{
    struct vms_msg p;

    vms_msg_init(&p, VMS_MSG_PREPARE);
    vms_msg_set_str(&p, VMS_F_REQUEST_ID, request_id);
    vms_msg_set_str(&p, VMS_F_LABEL, label);
    vms_msg_set_u64(&p, VMS_F_TIMEOUT_MS, 10000);
    fx_bridge_send(f, &p);
    vms_msg_clear(&p);
}

void fx_bridge_clock(struct fx *f, int64_t offset_ns, const char *reason)
{
    struct vms_msg c;

    vms_msg_init(&c, VMS_MSG_CLOCK);
    vms_msg_set_u64(&c, VMS_F_TIME_NS, (uint64_t)((int64_t)fx_realtime_ns() + offset_ns));
    vms_msg_set_str(&c, VMS_F_REASON, reason);
    fx_bridge_send(f, &c);
    vms_msg_clear(&c);
}

void fx_bridge_notice(struct fx *f, const char *reason, const char *message)
{
    struct vms_msg n;

    vms_msg_init(&n, VMS_MSG_NOTICE);
    vms_msg_set_str(&n, VMS_F_REASON, reason);
    vms_msg_set_str(&n, VMS_F_MESSAGE, message);
    fx_bridge_send(f, &n);
    vms_msg_clear(&n);
}

void fx_bridge_event(struct fx *f, const char *request_id, const char *op, uint32_t status,
                     const char *app_id, const char *app_data, const char *state_id, uint64_t seq)
{
    struct vms_msg e;

    vms_msg_init(&e, VMS_MSG_EVENT);
    vms_msg_set_str(&e, VMS_F_REQUEST_ID, request_id);
    vms_msg_set_str(&e, VMS_F_OP, op);
    vms_msg_set_u64(&e, VMS_F_STATUS, status);
    vms_msg_set_u64(&e, VMS_F_EPOCH, f->epoch);
    vms_msg_set_u64(&e, VMS_F_SEQ, seq);
    if (app_id)
        vms_msg_set_str(&e, VMS_F_APP_ID, app_id);
    if (app_data)
        vms_msg_set_app_data(&e, app_data, strlen(app_data));
    if (state_id)
        vms_msg_set_str(&e, VMS_F_STATE_ID, state_id);
    fx_bridge_send(f, &e);
    vms_msg_clear(&e);
}

/* ---- D-Bus clients -------------------------------------------------------- */

#define PENDING_MAX 512
static struct {
    DBusConnection *c;
    DBusMessage *m;
} pending[PENDING_MAX];
static unsigned n_pending;

DBusConnection *fx_client(struct fx *f)
{
    DBusError err;
    DBusConnection *c;

    dbus_error_init(&err);
    c = dbus_connection_open_private(f->bus_address, &err);
    cr_assert_not_null(c, "connect: %s", err.message);
    cr_assert(dbus_bus_register(c, &err), "register: %s", err.message);
    dbus_connection_set_exit_on_disconnect(c, FALSE);
    dbus_bus_add_match(c, "type='signal',sender='org.vmstate.Helper1'", &err);
    cr_assert(!dbus_error_is_set(&err), "match: %s", err.message);
    return c;
}

DBusConnection *fx_client_as(struct fx *f, uid_t uid)
{
    DBusConnection *c;

    if (uid == geteuid())
        return fx_client(f);
    cr_assert_eq(geteuid(), 0, "only root can connect as uid %u", (unsigned)uid);
    /* The bus takes the peer's credentials when it connects and authenticates (EXTERNAL). */
    cr_assert_eq(seteuid(uid), 0, "seteuid(%u): %s", (unsigned)uid, strerror(errno));
    c = fx_client(f);
    cr_assert_eq(seteuid(0), 0);
    return c;
}

void fx_client_close(DBusConnection *c)
{
    for (unsigned i = 0; i < n_pending;)
        if (pending[i].c == c) {
            dbus_message_unref(pending[i].m);
            pending[i] = pending[--n_pending];
        } else {
            i++;
        }
    dbus_connection_close(c);
    dbus_connection_unref(c);
}

static int append_creds(DBusMessage *m)
{
    DBusMessageIter it, dict, e;
    const char *kp = "principal", *vp = SECRET_PRINCIPAL, *ks = "secret", *vs = SECRET_VALUE;

    dbus_message_iter_init_append(m, &it);
    return dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{ss}", &dict) &&
           dbus_message_iter_open_container(&dict, DBUS_TYPE_DICT_ENTRY, NULL, &e) &&
           dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &kp) &&
           dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &vp) &&
           dbus_message_iter_close_container(&dict, &e) &&
           dbus_message_iter_open_container(&dict, DBUS_TYPE_DICT_ENTRY, NULL, &e) &&
           dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &ks) &&
           dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &vs) &&
           dbus_message_iter_close_container(&dict, &e) &&
           dbus_message_iter_close_container(&it, &dict);
}

char fx_error_message[512];

DBusMessage *fx_call(DBusConnection *c, const char *member, int timeout_ms, const char **err_name,
                     int first_type, ...)
{
    static char errbuf[256];
    DBusMessage *m, *r;
    DBusError err;
    va_list ap;
    int with_creds = strcmp(member, "RegisterListener") && strcmp(member, "UnregisterListener");

    m = dbus_message_new_method_call(VMS_DBUS_NAME, VMS_DBUS_PATH, VMS_DBUS_IFACE, member);
    cr_assert_not_null(m);
    va_start(ap, first_type);
    cr_assert(dbus_message_append_args_valist(m, first_type, ap));
    va_end(ap);
    if (with_creds)
        cr_assert(append_creds(m));
    dbus_error_init(&err);
    r = dbus_connection_send_with_reply_and_block(
        c, m, timeout_ms < 0 ? timeout_ms : (int)scaled_wait_ms(timeout_ms), &err);
    dbus_message_unref(m);
    if (err_name)
        *err_name = NULL;
    if (!r) {
        snprintf(errbuf, sizeof(errbuf), "%s", err.name ? err.name : "?");
        snprintf(fx_error_message, sizeof(fx_error_message), "%s", err.message ? err.message : "");
        if (err_name)
            *err_name = errbuf;
        dbus_error_free(&err);
    }
    return r;
}

const char *fx_save(DBusConnection *c, const char *label, const char *app_id, const char *data,
                    const char **err_name)
{
    static char id[64];
    const unsigned char *bytes = (const unsigned char *)data;
    const char *rid;
    DBusMessage *r =
        fx_call(c, "Save", 2000, err_name, DBUS_TYPE_STRING, &label, DBUS_TYPE_STRING, &app_id,
                DBUS_TYPE_ARRAY, DBUS_TYPE_BYTE, &bytes, (int)strlen(data), DBUS_TYPE_INVALID);
    if (!r)
        return NULL;
    cr_assert(dbus_message_get_args(r, NULL, DBUS_TYPE_STRING, &rid, DBUS_TYPE_INVALID));
    snprintf(id, sizeof(id), "%s", rid);
    dbus_message_unref(r);
    return id;
}

int fx_register(DBusConnection *c, const char *app_id)
{
    const char *e;
    DBusMessage *r =
        fx_call(c, "RegisterListener", 2000, &e, DBUS_TYPE_STRING, &app_id, DBUS_TYPE_INVALID);
    if (!r)
        return -1;
    dbus_message_unref(r);
    return 0;
}

/* The interface the helper sends @member in: its broadcasts have their own. */
static const char *signal_interface(const char *member)
{
    static const char *const broadcast[] = {"Restored", "PrepareSave", "ClockCorrected", "Notice"};

    for (size_t i = 0; i < sizeof(broadcast) / sizeof(*broadcast); i++)
        if (!strcmp(member, broadcast[i]))
            return VMS_DBUS_BROADCAST_IFACE;
    return VMS_DBUS_IFACE;
}

static int is_helper_signal(DBusMessage *m)
{
    return dbus_message_has_interface(m, VMS_DBUS_IFACE) ||
           dbus_message_has_interface(m, VMS_DBUS_BROADCAST_IFACE);
}

const char *fx_peek_signal(DBusConnection *c, int timeout_ms)
{
    uint64_t until = fx_now_ms() + scaled_wait_ms(timeout_ms);

    for (;;) {
        DBusMessage *m;
        for (unsigned i = 0; i < n_pending; i++)
            if (pending[i].c == c && is_helper_signal(pending[i].m))
                return dbus_message_get_member(pending[i].m);
        while (n_pending < PENDING_MAX && (m = dbus_connection_pop_message(c))) {
            if (dbus_message_get_type(m) != DBUS_MESSAGE_TYPE_SIGNAL) {
                dbus_message_unref(m);
                continue;
            }
            pending[n_pending].c = c;
            pending[n_pending++].m = m;
            if (is_helper_signal(m))
                return dbus_message_get_member(m);
        }
        uint64_t now = fx_now_ms();
        if (now >= until || n_pending == PENDING_MAX)
            return NULL;
        dbus_connection_read_write(c, (int)(until - now));
    }
}

DBusMessage *fx_wait_signal(DBusConnection *c, const char *member, int timeout_ms)
{
    const char *iface = signal_interface(member);
    uint64_t until = fx_now_ms() + scaled_wait_ms(timeout_ms);

    for (;;) {
        DBusMessage *m;
        for (unsigned i = 0; i < n_pending; i++)
            if (pending[i].c == c && dbus_message_is_signal(pending[i].m, iface, member)) {
                m = pending[i].m;
                memmove(&pending[i], &pending[i + 1], (n_pending - i - 1) * sizeof(*pending));
                n_pending--;
                return m;
            }
        while ((m = dbus_connection_pop_message(c))) {
            if (dbus_message_get_type(m) == DBUS_MESSAGE_TYPE_SIGNAL &&
                dbus_message_is_signal(m, iface, member))
                return m;
            if (dbus_message_get_type(m) == DBUS_MESSAGE_TYPE_SIGNAL && n_pending < PENDING_MAX) {
                pending[n_pending].c = c;
                pending[n_pending++].m = m;
            } else {
                dbus_message_unref(m);
            }
        }
        uint64_t now = fx_now_ms();
        if (now >= until)
            return NULL;
        dbus_connection_read_write(c, (int)(until - now));
    }
}

void fx_completed_args(DBusMessage *m, const char **request_id, const char **op, uint32_t *status,
                       const char **app_id, char *app_data, size_t cap, uint64_t *epoch)
{
    DBusMessageIter it, arr;
    const char *s;
    const uint8_t *data;
    int len;
    dbus_uint32_t st;
    dbus_uint64_t ep;

    cr_assert(dbus_message_has_signature(m, "ssussssayta{sv}"), "Completed signature %s",
              dbus_message_get_signature(m));
    dbus_message_iter_init(m, &it);
    dbus_message_iter_get_basic(&it, &s);
    if (request_id)
        *request_id = s;
    dbus_message_iter_next(&it);
    dbus_message_iter_get_basic(&it, &s);
    if (op)
        *op = s;
    dbus_message_iter_next(&it);
    dbus_message_iter_get_basic(&it, &st);
    if (status)
        *status = st;
    dbus_message_iter_next(&it); /* message */
    dbus_message_iter_next(&it); /* state_id */
    dbus_message_iter_next(&it); /* label */
    dbus_message_iter_next(&it);
    dbus_message_iter_get_basic(&it, &s);
    if (app_id)
        *app_id = s;
    dbus_message_iter_next(&it);
    dbus_message_iter_recurse(&it, &arr);
    dbus_message_iter_get_fixed_array(&arr, &data, &len);
    if (app_data) {
        size_t n = (size_t)len < cap - 1 ? (size_t)len : cap - 1;
        if (n)
            memcpy(app_data, data, n);
        app_data[n] = '\0';
    }
    dbus_message_iter_next(&it);
    dbus_message_iter_get_basic(&it, &ep);
    if (epoch)
        *epoch = ep;
}
