/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vsbench-dbus — D-Bus floors for the native bench bed (bench/bench-native.py): a trivial
 * service and its client, libdbus like the helper and libvmstate, no vmstate code.
 *
 *   vsbench-dbus serve NAME      own NAME on the bus and serve org.vmstate.Bench1 at
 *                                /org/vmstate/Bench1: Ping() returns at once; Subscribe()
 *                                records the caller; Fire() returns, then sends one unicast
 *                                Tick signal to every subscriber (as the helper's Completed
 *                                goes to each listener); Ack() returns, then sends the same
 *                                Tick to its caller only (an asynchronous request with no
 *                                work: the helper's pattern). Prints "ready" once the name
 *                                is owned
 *   vsbench-dbus call NAME N     N Ping round trips on one connection (after 10 untimed);
 *                                prints the statistics line
 *   vsbench-dbus async NAME N    N Ack round trips, each timed from the call to its Tick
 *                                (the reply read on the way, after 10 untimed): the floor of
 *                                any API that answers at once and reports later; prints the
 *                                statistics line
 *   vsbench-dbus tput NAME K M   K processes (a connection each) × M Ping calls back to back;
 *                                prints "clients=K calls=.. seconds=.. per_s=.."
 *   vsbench-dbus fanout NAME L R L connections, each Subscribe()s once (the registration floor:
 *                                prints "register: n=L connect_s=.. calls_s=.. total_s=.."),
 *                                then R rounds (after 2 untimed) of Fire() from connection 0;
 *                                prints "first: ", "last: " (from the call to the first/last
 *                                connection receiving its Tick) and "spread: " (last - first,
 *                                per round) statistics lines
 *   vsbench-dbus relay NAME A B  a save's design floor in the guest, for bench-saverestore.py
 *                                --floor=design (see do_relay): Save() over D-Bus, ports A/B
 *                                to the host, the PrepareSave/Proceed handshake, the answer
 *                                as a signal; no vmstate code. A and B: device paths, or
 *                                unix:PATH (the native bed's relay)
 *   vsbench-dbus saves NAME N MARK  N saves in a row through relay NAME, with the marks of
 *                                vsbench-app saves ('s' before the call, 'e' at the answer,
 *                                'q' at the end) on the device MARK
 *   vsbench-dbus design NAME N   N Save round trips through relay NAME, each timed from the
 *                                call to its Tick (after 10 untimed), the host side echoing
 *                                port A to port B: a hostinfo's design floor on the native bed
 *                                (bench-native.py), every hop of vmstate's and none of its work
 *
 * The bus is $DBUS_SYSTEM_BUS_ADDRESS (the system bus). Experiments: VSBENCH_BODY=N gives Tick an
 * N-byte body; VSBENCH_SHAPE=completed gives Fire's Tick the body of the helper's Completed for a
 * hostinfo (ten arguments, the details a{sv} with 16 of a hostinfo's entries, not its quotas);
 * VSBENCH_MATCH=RULE makes every fan-out connection add that match rule; VSBENCH_MATCHES=1 makes
 * it add, before its Subscribe, the three rules a libvmstate handle adds (the service's name
 * owner, its broadcast interface, its PropertiesChanged), sent at once and their answers read
 * after, as libvmstate does (a registration's design floor, with VSBENCH_UID); VSBENCH_UID=1 makes
 * serve ask the bus for each subscriber's uid before it answers; VSBENCH_CPU_PIDS=PID,..
 * prints those processes' CPU per timed fan-out round ("cpu_ms_per_round: PID=MS .."). Statistics
 * line: "n=N median_us=M p99_us=P min_us=A max_us=B mean_us=C" (p99 nearest rank).
 */
#define _GNU_SOURCE
#include <dbus/dbus.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vsbench-common.h"

#define PATH  "/org/vmstate/Bench1"
#define IFACE "org.vmstate.Bench1"

static void die(const char *what, DBusError *err)
{
    fprintf(stderr, "vsbench-dbus: %s: %s\n", what, err && err->message ? err->message : "failed");
    exit(1);
}

static DBusConnection *connect_bus(void)
{
    DBusError err;
    dbus_error_init(&err);
    DBusConnection *c = dbus_bus_get_private(DBUS_BUS_SYSTEM, &err);
    if (!c)
        die("connect", &err);
    dbus_connection_set_exit_on_disconnect(c, FALSE);
    return c;
}

/* ---- the trivial service ------------------------------------------------ */

static char **subs;
static size_t n_subs, cap_subs;

/* The body of a hostinfo's Completed (guest-helper/org.vmstate.Helper1.xml) but its quotas, typical
 * values: what the helper's fan-out sends, from a trivial emitter. */
static int append_completed_shape(DBusMessage *sig)
{
    static const char *const str_keys[] = {"hostname", "bridge_version", "hypervisor_version",
                                           "ops", "mode"};
    static const char *const str_vals[] = {"host1", "0.9.0", "7.2.0",
                                           "save,restore,list,delete,hostinfo", "qmp"};
    static const char *const u64_keys[] = {
        "free_bytes", "mem_bytes",       "seq",   "host_mem_total", "host_mem_available",
        "host_cpus",  "host_load_milli", "vcpus", "mem_boot",       "mem_min",
        "mem_max"};
    const char *rid = "5cd3465a962ccab32c73eed4b22f4732", *op = "hostinfo", *empty = "",
               *app = "org.vmstate.Bench";
    dbus_uint32_t status = 0;
    dbus_uint64_t epoch = 3, v = 134217728;
    const unsigned char *data = (const unsigned char *)"";
    DBusMessageIter it, arr, dict, ent, var;
    int ok;

    dbus_message_iter_init_append(sig, &it);
    ok = dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &rid) &&
         dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &op) &&
         dbus_message_iter_append_basic(&it, DBUS_TYPE_UINT32, &status) &&
         dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &empty) &&
         dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &empty) &&
         dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &empty) &&
         dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &app) &&
         dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "y", &arr) &&
         dbus_message_iter_append_fixed_array(&arr, DBUS_TYPE_BYTE, &data, 0) &&
         dbus_message_iter_close_container(&it, &arr) &&
         dbus_message_iter_append_basic(&it, DBUS_TYPE_UINT64, &epoch) &&
         dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &dict);
    for (size_t i = 0; ok && i < 16; i++) {
        int is_str = i < 5;
        const char *key = is_str ? str_keys[i] : u64_keys[i - 5];
        ok = dbus_message_iter_open_container(&dict, DBUS_TYPE_DICT_ENTRY, NULL, &ent) &&
             dbus_message_iter_append_basic(&ent, DBUS_TYPE_STRING, &key) &&
             dbus_message_iter_open_container(&ent, DBUS_TYPE_VARIANT, is_str ? "s" : "t", &var) &&
             (is_str ? dbus_message_iter_append_basic(&var, DBUS_TYPE_STRING, &str_vals[i])
                     : dbus_message_iter_append_basic(&var, DBUS_TYPE_UINT64, &v)) &&
             dbus_message_iter_close_container(&ent, &var) &&
             dbus_message_iter_close_container(&dict, &ent);
    }
    return ok && dbus_message_iter_close_container(&it, &dict);
}

/* The Tick signal, without a destination: a 4-byte string, or the body VSBENCH_BODY or
 * VSBENCH_SHAPE ask for. Built body first, then named, as the helper builds its signals: with
 * the header's signature its only field while the body grows, libdbus rewrites less per
 * argument (common/vms-dbus.h), and a floor must not pay more than the code it measures. */
static DBusMessage *tick_new(void)
{
    DBusMessage *sig = dbus_message_new(DBUS_MESSAGE_TYPE_SIGNAL);
    /* VSBENCH_BODY=N: a body of N bytes (the helper's Completed is ~300-600) */
    static char big[4096];
    const char *body = "tick";
    if (getenv("VSBENCH_BODY")) {
        size_t len = strtoul(getenv("VSBENCH_BODY"), NULL, 10);
        len = len < sizeof(big) ? len : sizeof(big) - 1;
        memset(big, 'x', len);
        big[len] = 0;
        body = big;
    }
    const char *shape = getenv("VSBENCH_SHAPE");
    if (!sig ||
        !(shape && !strcmp(shape, "completed")
              ? (dbus_bool_t)append_completed_shape(sig)
              : dbus_message_append_args(sig, DBUS_TYPE_STRING, &body, DBUS_TYPE_INVALID)) ||
        !dbus_message_set_path(sig, PATH) || !dbus_message_set_interface(sig, IFACE) ||
        !dbus_message_set_member(sig, "Tick"))
        die("signal", NULL);
    return sig;
}

static void serve_one(DBusConnection *c, DBusMessage *m)
{
    if (dbus_message_get_type(m) != DBUS_MESSAGE_TYPE_METHOD_CALL ||
        strcmp(dbus_message_get_interface(m) ? dbus_message_get_interface(m) : "", IFACE) != 0)
        return;
    const char *member = dbus_message_get_member(m);
    int fire = 0, ack = 0;
    if (!strcmp(member, "Subscribe")) {
        if (n_subs == cap_subs) {
            cap_subs = cap_subs ? 2 * cap_subs : 64;
            subs = realloc(subs, cap_subs * sizeof(*subs));
            if (!subs)
                die("realloc", NULL);
        }
        subs[n_subs++] = strdup(dbus_message_get_sender(m));
        /* VSBENCH_UID=1: a service that knows its subscriber's uid (the helper's rights are
         * per uid) asks the bus once per new caller: dbus-daemon sends no credentials */
        if (getenv("VSBENCH_UID")) {
            DBusError err;
            dbus_error_init(&err);
            if (dbus_bus_get_unix_user(c, dbus_message_get_sender(m), &err) == (unsigned long)-1)
                die("GetConnectionUnixUser", &err);
        }
    } else if (!strcmp(member, "Fire")) {
        fire = 1;
    } else if (!strcmp(member, "Ack")) {
        ack = 1;
    } else if (strcmp(member, "Ping") != 0) {
        return;
    }
    DBusMessage *r = dbus_message_new_method_return(m);
    if (!r || !dbus_connection_send(c, r, NULL))
        die("reply", NULL);
    dbus_message_unref(r);
    if (!fire && !ack)
        return;
    DBusMessage *sig = tick_new();
    if (ack) {
        if (!dbus_message_set_destination(sig, dbus_message_get_sender(m)) ||
            !dbus_connection_send(c, sig, NULL))
            die("send signal", NULL);
        dbus_message_unref(sig);
        return;
    }
    /* One unicast signal per subscriber, the body marshalled once (as the helper does). */
    for (size_t i = 0; i < n_subs; i++) {
        DBusMessage *s = dbus_message_copy(sig);
        if (!s || !dbus_message_set_destination(s, subs[i]) || !dbus_connection_send(c, s, NULL))
            die("send signal", NULL);
        dbus_message_unref(s);
    }
    dbus_message_unref(sig);
}

static int do_serve(const char *name)
{
    DBusConnection *c = connect_bus();
    DBusError err;
    dbus_error_init(&err);
    if (dbus_bus_request_name(c, name, DBUS_NAME_FLAG_DO_NOT_QUEUE, &err) !=
        DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER)
        die("request name", &err);
    printf("ready\n");
    fflush(stdout);
    while (dbus_connection_read_write(c, -1)) {
        DBusMessage *m;
        while ((m = dbus_connection_pop_message(c))) {
            serve_one(c, m);
            dbus_message_unref(m);
        }
    }
    return 0;
}

/* ---- clients ------------------------------------------------------------ */

static void call_method(DBusConnection *c, const char *name, const char *member)
{
    DBusError err;
    dbus_error_init(&err);
    DBusMessage *m = dbus_message_new_method_call(name, PATH, IFACE, member);
    if (!m)
        die("new call", NULL);
    DBusMessage *r = dbus_connection_send_with_reply_and_block(c, m, 30000, &err);
    dbus_message_unref(m);
    if (!r)
        die(member, &err);
    dbus_message_unref(r);
}

static void send_proceed(DBusConnection *c, const char *name);

/* Wait for the Tick that Ack sends after its reply (unicast: no match rule needed); with
 * @relay, answer its PrepareSave signals with Proceed meanwhile. */
static void wait_tick(DBusConnection *c, const char *relay)
{
    for (;;) {
        DBusMessage *m = dbus_connection_pop_message(c);
        if (!m) {
            if (!dbus_connection_read_write(c, -1))
                die("read", NULL);
            continue;
        }
        int tick = dbus_message_is_signal(m, IFACE, "Tick");
        if (relay && dbus_message_is_signal(m, IFACE, "PrepareSave"))
            send_proceed(c, relay);
        dbus_message_unref(m);
        if (tick)
            return;
    }
}

/* N timed round trips after 10 untimed of @member: until its reply, or with @async until
 * its Tick too. */
static int do_call(const char *name, size_t n, const char *member, int async)
{
    DBusConnection *c = connect_bus();
    uint64_t *s = calloc(n, sizeof(*s));
    if (!s)
        die("calloc", NULL);
    for (size_t i = 0; i < 10 + n; i++) {
        uint64_t t0 = vsbench_now_ns();
        call_method(c, name, member);
        if (async)
            wait_tick(c, NULL);
        if (i >= 10)
            s[i - 10] = vsbench_now_ns() - t0;
    }
    vsbench_report("", s, n);
    return 0;
}

/* The match rules of a libvmstate handle (libvmstate/vmstate.c add_matches), for this service:
 * sent at once; their answers read after the handle's first call (handle_rules_collect). */
#define N_HANDLE_RULES 3

static void handle_rules_send(DBusConnection *c, const char *name,
                              DBusPendingCall *pc[N_HANDLE_RULES])
{
    char rules[N_HANDLE_RULES][256];

    snprintf(rules[0], sizeof(rules[0]),
             "type='signal',sender='" DBUS_SERVICE_DBUS "',interface='" DBUS_INTERFACE_DBUS
             "',member='NameOwnerChanged',arg0='%s'",
             name);
    snprintf(rules[1], sizeof(rules[1]),
             "type='signal',interface='" IFACE ".Broadcast',path='" PATH "'");
    snprintf(rules[2], sizeof(rules[2]),
             "type='signal',interface='" DBUS_INTERFACE_PROPERTIES
             "',member='PropertiesChanged',path='" PATH "'");
    for (int i = 0; i < N_HANDLE_RULES; i++) {
        const char *rule = rules[i];
        DBusMessage *m = dbus_message_new_method_call(DBUS_SERVICE_DBUS, DBUS_PATH_DBUS,
                                                      DBUS_INTERFACE_DBUS, "AddMatch");
        if (!m || !dbus_message_append_args(m, DBUS_TYPE_STRING, &rule, DBUS_TYPE_INVALID) ||
            !dbus_connection_send_with_reply(c, m, &pc[i], 30000) || !pc[i])
            die("AddMatch", NULL);
        dbus_message_unref(m);
    }
}

static void handle_rules_collect(DBusPendingCall *pc[N_HANDLE_RULES])
{
    for (int i = 0; i < N_HANDLE_RULES; i++) {
        if (!pc[i])
            continue;
        dbus_pending_call_block(pc[i]);
        DBusMessage *r = dbus_pending_call_steal_reply(pc[i]);
        if (!r || dbus_message_get_type(r) == DBUS_MESSAGE_TYPE_ERROR)
            die("AddMatch reply", NULL);
        dbus_message_unref(r);
        dbus_pending_call_unref(pc[i]);
    }
}

/* K processes, each its own connection, M Ping calls back to back: the bus's throughput
 * for one trivial call per request, the floor of vsbench-app tput. */
static int do_tput(const char *name, int k, size_t m)
{
    int go[2];
    if (pipe(go) < 0)
        return 1;
    pid_t *pids = calloc((size_t)k, sizeof(*pids));
    for (int i = 0; i < k; i++) {
        pids[i] = fork();
        if (pids[i] < 0)
            return 1;
        if (pids[i] == 0) {
            close(go[1]);
            DBusConnection *c = connect_bus();
            call_method(c, name, "Ping"); /* connected and warm before the start */
            char ch;
            if (read(go[0], &ch, 1) != 0) /* released when the parent closes go[1] */
                _exit(1);
            for (size_t j = 0; j < m; j++)
                call_method(c, name, "Ping");
            _exit(0);
        }
    }
    close(go[0]);
    usleep(500000); /* every child connected (a slow one only lowers the figure) */
    uint64_t ns;
    int bad = vsbench_release_and_reap(go[1], pids, k, &ns);
    double secs = ns / 1e9;
    if (bad)
        return 1;
    printf("clients=%d calls=%zu seconds=%.3f per_s=%.1f\n", k, (size_t)k * m, secs,
           (double)k * m / secs);
    return 0;
}

static int do_fanout(const char *name, size_t l, size_t rounds)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < l + 64) {
        rl.rlim_cur = rl.rlim_max > l + 64 ? rl.rlim_max : l + 64;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            perror("setrlimit");
    }
    DBusConnection **c = calloc(l, sizeof(*c));
    struct pollfd *pfd = calloc(l, sizeof(*pfd));
    uint64_t *got = calloc(l, sizeof(*got)), *first = calloc(rounds, sizeof(*first)),
             *last = calloc(rounds, sizeof(*last)), *spread = calloc(rounds, sizeof(*spread));
    if (!c || !pfd || !got || !first || !last || !spread)
        die("calloc", NULL);
    /* The registration floor: what a listener needs at least, a connection and one call. */
    vsbench_cpu_mark(NULL, 0);
    uint64_t t0 = vsbench_now_ns(), t_conn = 0;
    for (size_t i = 0; i < l; i++) {
        uint64_t a = vsbench_now_ns();
        c[i] = connect_bus();
        /* VSBENCH_MATCH=RULE: each connection also adds this match rule (what does a
         * per-listener rule cost the fan-out?) */
        if (getenv("VSBENCH_MATCH"))
            dbus_bus_add_match(c[i], getenv("VSBENCH_MATCH"), NULL);
        t_conn += vsbench_now_ns() - a;
        DBusPendingCall *pc[N_HANDLE_RULES] = {NULL};
        if (getenv("VSBENCH_MATCHES"))
            handle_rules_send(c[i], name, pc);
        call_method(c[i], name, "Subscribe");
        handle_rules_collect(pc);
        int fd;
        if (!dbus_connection_get_unix_fd(c[i], &fd))
            die("get fd", NULL);
        pfd[i] = (struct pollfd){.fd = fd, .events = POLLIN};
    }
    uint64_t total = vsbench_now_ns() - t0;
    printf("register: n=%zu connect_s=%.4f calls_s=%.4f total_s=%.4f\n", l, t_conn / 1e9,
           (total - t_conn) / 1e9, total / 1e9);
    vsbench_cpu_mark("cpu_ms_register", 1);
    for (size_t r = 0; r < rounds + 2; r++) {
        if (r == 2)
            vsbench_cpu_mark(NULL, 0);
        memset(got, 0, l * sizeof(*got));
        size_t n_got = 0;
        uint64_t start = vsbench_now_ns();
        call_method(c[0], name, "Fire");
        uint64_t deadline = start + 60 * 1000000000ull;
        while (n_got < l) {
            if (vsbench_now_ns() > deadline) {
                fprintf(stderr, "vsbench-dbus: only %zu of %zu connections got the signal\n", n_got,
                        l);
                return 1;
            }
            /* The Tick may already sit in connection 0's queue (read with the reply). */
            for (size_t i = 0; i < l; i++) {
                if (i != 0 && !pfd[i].revents)
                    continue;
                dbus_connection_read_write(c[i], 0);
                DBusMessage *m;
                while ((m = dbus_connection_pop_message(c[i]))) {
                    if (dbus_message_is_signal(m, IFACE, "Tick") && !got[i]) {
                        got[i] = vsbench_now_ns();
                        n_got++;
                    }
                    dbus_message_unref(m);
                }
            }
            if (n_got < l && poll(pfd, l, 1000) < 0)
                return 1;
        }
        if (r >= 2) {
            vsbench_fanout_round(got, l, start, &first[r - 2], &last[r - 2], &spread[r - 2]);
        }
    }
    vsbench_cpu_mark("cpu_ms_per_round", rounds);
    vsbench_report("first: ", first, rounds);
    vsbench_report("last: ", last, rounds);
    vsbench_report("spread: ", spread, rounds);
    for (size_t i = 0; i < l; i++) {
        dbus_connection_close(c[i]);
        dbus_connection_unref(c[i]);
    }
    return 0;
}

/* ---- design floors: a save's (bench-saverestore.py), a hostinfo's (bench-native, -tcg) -- */

/* A port: a device path, or unix:PATH (connect; the native bed's relay, vsbench-relay). */
static int open_dev(const char *path)
{
    int fd;

    if (strncmp(path, "unix:", 5) == 0) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && strlen(path + 5) < sizeof(sa.sun_path)) {
            strcpy(sa.sun_path, path + 5);
            if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                return fd;
        }
        fprintf(stderr, "vsbench-dbus: %s: %s\n", path, strerror(errno));
        exit(1);
    }
    fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        fprintf(stderr, "vsbench-dbus: %s: %s\n", path, strerror(errno));
        exit(1);
    }
    return fd;
}

static void write_byte(int fd, char c)
{
    while (write(fd, &c, 1) != 1)
        if (errno != EINTR && errno != EAGAIN)
            die("write", NULL);
}

static void send_to(DBusConnection *c, DBusMessage *m, const char *dest)
{
    if (!m || !dbus_message_set_destination(m, dest) || !dbus_connection_send(c, m, NULL))
        die("send", NULL);
    dbus_message_unref(m);
    dbus_connection_flush(c);
}

/*
 * The least a save through this design costs in the guest, with nothing of vmstate's code:
 * the app's Save() is answered at once and 'S' goes out on port A; the host (FloorHost in
 * design mode) commits the request, writes 'P' on port B, and the app gets a PrepareSave
 * signal; its Proceed() sends 'R' on port A; the host saves, commits the completion and
 * writes 'S' on port B, which reaches the app as a Tick signal. The same hops as the helper's
 * (request, Prepare/Ready with one listener, completion), each as bare as libdbus allows.
 */
static int do_relay(const char *name, const char *a, const char *b)
{
    DBusConnection *c = connect_bus();
    DBusError err;
    char caller[256] = "";
    int fa = open_dev(a), fb = open_dev(b);
    int cfd;

    dbus_error_init(&err);
    if (dbus_bus_request_name(c, name, DBUS_NAME_FLAG_DO_NOT_QUEUE, &err) !=
            DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER ||
        !dbus_connection_get_unix_fd(c, &cfd))
        die("request name", &err);
    printf("ready\n");
    for (;;) {
        struct pollfd p[2] = {{cfd, POLLIN, 0}, {fb, POLLIN, 0}};
        DBusMessage *m;

        if (dbus_connection_get_dispatch_status(c) != DBUS_DISPATCH_DATA_REMAINS &&
            poll(p, 2, -1) < 0 && errno != EINTR)
            die("poll", NULL);
        if (p[0].revents && !dbus_connection_read_write(c, 0))
            return 0;
        while ((m = dbus_connection_pop_message(c))) {
            if (dbus_message_is_method_call(m, IFACE, "Save")) {
                /* the port first, then the reply: the helper's order (bench/RESULTS.md
                 * §19; for this relay either order measured the same, §21) */
                snprintf(caller, sizeof(caller), "%s", dbus_message_get_sender(m));
                write_byte(fa, 'S');
                send_to(c, dbus_message_new_method_return(m), caller);
            } else if (dbus_message_is_method_call(m, IFACE, "Proceed")) {
                write_byte(fa, 'R');
            }
            dbus_message_unref(m);
        }
        if (p[1].revents & POLLIN) {
            char ch;
            ssize_t n = read(fb, &ch, 1);
            if (n == 1 && ch == 'P')
                send_to(c, dbus_message_new_signal(PATH, IFACE, "PrepareSave"), caller);
            else if (n == 1 && ch == 'S')
                send_to(c, tick_new(), caller);
            else if (n == 1)
                fprintf(stderr, "vsbench-dbus: relay: unexpected %c on port B\n", ch);
        }
    }
}

/* Proceed() to the relay, no reply asked (as libvmstate's). */
static void send_proceed(DBusConnection *c, const char *name)
{
    DBusMessage *pr = dbus_message_new_method_call(name, PATH, IFACE, "Proceed");

    if (!pr)
        die("new call", NULL);
    dbus_message_set_no_reply(pr, TRUE);
    if (!dbus_connection_send(c, pr, NULL))
        die("send", NULL);
    dbus_message_unref(pr);
    dbus_connection_flush(c);
}

/* N saves through the relay, marked like vsbench-app saves; Proceed at each PrepareSave. */
static int do_relay_saves(const char *name, size_t n, const char *mark)
{
    DBusConnection *c = connect_bus();
    int fm = open_dev(mark);

    for (size_t i = 0; i < n; i++) {
        write_byte(fm, 's');
        call_method(c, name, "Save");
        wait_tick(c, name);
        write_byte(fm, 'e');
    }
    write_byte(fm, 'q');
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && !strcmp(argv[1], "serve"))
        return do_serve(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "call") && strtoul(argv[3], NULL, 10) > 0)
        return do_call(argv[2], strtoul(argv[3], NULL, 10), "Ping", 0);
    if (argc == 4 && !strcmp(argv[1], "async") && strtoul(argv[3], NULL, 10) > 0)
        return do_call(argv[2], strtoul(argv[3], NULL, 10), "Ack", 1);
    if (argc == 4 && !strcmp(argv[1], "design") && strtoul(argv[3], NULL, 10) > 0)
        return do_call(argv[2], strtoul(argv[3], NULL, 10), "Save", 1);
    if (argc == 5 && !strcmp(argv[1], "tput") && atoi(argv[3]) > 0)
        return do_tput(argv[2], atoi(argv[3]), strtoul(argv[4], NULL, 10));
    if (argc == 5 && !strcmp(argv[1], "fanout") && strtoul(argv[3], NULL, 10) > 0 &&
        strtoul(argv[4], NULL, 10) > 0)
        return do_fanout(argv[2], strtoul(argv[3], NULL, 10), strtoul(argv[4], NULL, 10));
    if (argc == 5 && !strcmp(argv[1], "relay"))
        return do_relay(argv[2], argv[3], argv[4]);
    if (argc == 5 && !strcmp(argv[1], "saves") && strtoul(argv[3], NULL, 10) > 0)
        return do_relay_saves(argv[2], strtoul(argv[3], NULL, 10), argv[4]);
    fprintf(stderr, "usage: vsbench-dbus serve NAME | call NAME N | async NAME N | tput NAME K M | "
                    "fanout NAME L R | relay NAME A B | saves NAME N MARK | design NAME N\n");
    return 2;
}
