/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vsbench-app — the guest side of the vmstate benchmarks, a libvmstate app.
 *
 *   vsbench-app rtt N                 N hostinfo round trips, one at a time (after 10
 *                                     untimed ones); prints the statistics line, then
 *                                     "call: " and the statistics of the D-Bus call alone
 *   vsbench-app tput K M              K concurrent apps (processes, one handle and app id
 *                                     APP.appI each), each
 *                                     doing M hostinfo requests back to back; prints
 *                                     "apps=K requests=.. seconds=.. per_s=.. busy=.." and the
 *                                     per-request statistics line
 *   vsbench-app fanout L R            L handles of one app id, each a D-Bus connection and a
 *                                     registered listener; handle 0 asks hostinfo R times;
 *                                     per round: time from the call to the first and to the
 *                                     last handle receiving the completion, and the
 *                                     spread (last - first); "register: n=L total_s=.."
 *                                     first (opening and registering the L handles)
 *   vsbench-app saveloop N MARK       N rounds of save then restore of that state; writes
 *                                     one mark byte to the device MARK at each step
 *                                     ('s' save called, 'e' save completed, 'R' restore
 *                                     called, 'r' restore completion received by the
 *                                     restored instance) for the host to timestamp
 *   vsbench-app saves N MARK          N saves in a row, no restore between them (a warm
 *                                     guest: a restore makes the next save run cold code);
 *                                     marks 's' and 'e' as saveloop
 *   vsbench-app wait-bridge SECONDS   exit 0 once the helper reports the bridge connected
 *
 * Environment: VSBENCH_PRINCIPAL, VSBENCH_SECRET (default bench / bench-secret),
 * VSBENCH_APP (app id, default org.vmstate.Bench), VSBENCH_CPU_PIDS=PID,.. (fanout: print
 * those processes' CPU per timed round, "cpu_ms_per_round: PID=MS ..").
 * Statistics line: "n=N median_us=M p99_us=P min_us=A max_us=B mean_us=C" (p99 nearest rank).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vmstate.h"
#include "vsbench-common.h"

static const char *principal, *secret, *app_id;

static void fail(const char *what, vmstate *v, int rc)
{
    fprintf(stderr, "vsbench-app: %s: %s (%s)\n", what, vmstate_strerror(rc),
            v ? vmstate_last_error(v) : "");
    exit(1);
}

static vmstate *open_handle(void)
{
    vmstate *v;
    int rc = vmstate_open(NULL, app_id, &v);
    if (rc < 0)
        fail("vmstate_open", NULL, rc);
    rc = vmstate_set_credentials(v, principal, secret);
    if (rc < 0)
        fail("vmstate_set_credentials", v, rc);
    return v;
}

/* One hostinfo round trip; returns its duration in ns. BUSY and a call that timed out
 * (libvmstate waits 5 s for the helper's answer) are retried and counted. */
static uint64_t last_call_ns; /* duration of the last vmstate_hostinfo() call itself */
static unsigned call_timeouts;

static uint64_t hostinfo_once(vmstate *v, unsigned *busy)
{
    char id[VMSTATE_REQUEST_ID_LEN + 1];
    uint64_t t0 = vsbench_now_ns();
    int rc;
    while ((rc = vmstate_hostinfo(v, id)) == VMSTATE_E_BUSY || rc == VMSTATE_E_TIMEOUT) {
        if (rc == VMSTATE_E_TIMEOUT) {
            call_timeouts++;
            continue;
        }
        if (busy)
            (*busy)++;
        usleep(500);
    }
    if (rc < 0)
        fail("vmstate_hostinfo", v, rc);
    last_call_ns = vsbench_now_ns() - t0;
    struct vmstate_event *ev;
    rc = vmstate_wait(v, id, 30000, &ev);
    if (rc < 0)
        fail("vmstate_wait", v, rc);
    uint64_t dt = vsbench_now_ns() - t0;
    if (ev->status != 0) {
        fprintf(stderr, "vsbench-app: hostinfo completed with status %u (%s): %s\n", ev->status,
                vmstate_status_name(ev->status), ev->message);
        exit(1);
    }
    vmstate_event_free(ev);
    return dt;
}

static int do_rtt(size_t n)
{
    vmstate *v = open_handle();
    uint64_t *s = calloc(n, sizeof(*s)), *c = calloc(n, sizeof(*c));
    for (size_t i = 0; i < 10; i++)
        hostinfo_once(v, NULL);
    for (size_t i = 0; i < n; i++) {
        s[i] = hostinfo_once(v, NULL);
        c[i] = last_call_ns;
    }
    vsbench_report("", s, n);
    vsbench_report("call: ", c, n); /* the D-Bus call to the helper until it returned the id */
    vmstate_close(v);
    return 0;
}

static int do_tput(int k, size_t m)
{
    int ready[2], go[2];
    if (pipe(ready) < 0 || pipe(go) < 0)
        return 1;
    pid_t *pids = calloc((size_t)k, sizeof(*pids));
    for (int i = 0; i < k; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            close(ready[0]);
            close(go[1]);
            /* K different apps: each its own app id, so a completion goes to its app only */
            static char own_id[128];
            snprintf(own_id, sizeof(own_id), "%s.app%d", app_id, i);
            app_id = own_id;
            vmstate *v = open_handle();
            hostinfo_once(v, NULL); /* registered, connected, warm */
            uint64_t *s = calloc(m, sizeof(*s));
            unsigned busy = 0;
            char c = 'r';
            if (write(ready[1], &c, 1) != 1)
                _exit(1);
            if (read(go[0], &c, 1) != 0) /* released when the parent closes go[1] */
                _exit(1);
            for (size_t j = 0; j < m; j++)
                s[j] = hostinfo_once(v, &busy);
            char path[64];
            snprintf(path, sizeof(path), "/tmp/vsb-tput.%d", i);
            FILE *f = fopen(path, "w");
            if (!f)
                _exit(1);
            fprintf(f, "%u %u\n", busy, call_timeouts);
            for (size_t j = 0; j < m; j++)
                fprintf(f, "%llu\n", (unsigned long long)s[j]);
            fclose(f);
            vmstate_close(v);
            _exit(0);
        }
        pids[i] = pid;
    }
    close(ready[1]);
    close(go[0]);
    for (int i = 0; i < k; i++) {
        char c;
        if (read(ready[0], &c, 1) != 1) {
            fprintf(stderr, "vsbench-app: a worker failed before the start\n");
            return 1;
        }
    }
    uint64_t ns;
    int bad = vsbench_release_and_reap(go[1], pids, k, &ns);
    if (bad) {
        fprintf(stderr, "vsbench-app: %d workers failed\n", bad);
        return 1;
    }
    size_t total = (size_t)k * m, at = 0;
    uint64_t *s = calloc(total, sizeof(*s));
    unsigned busy = 0, timeouts = 0;
    for (int i = 0; i < k; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/tmp/vsb-tput.%d", i);
        FILE *f = fopen(path, "r");
        unsigned b = 0, t = 0;
        unsigned long long x;
        if (!f || fscanf(f, "%u %u", &b, &t) != 2)
            return 1;
        busy += b;
        timeouts += t;
        while (at < total && fscanf(f, "%llu", &x) == 1)
            s[at++] = x;
        fclose(f);
        unlink(path);
    }
    double secs = ns / 1e9;
    printf("apps=%d requests=%zu seconds=%.3f per_s=%.1f busy=%u call_timeouts=%u\n", k, total,
           secs, total / secs, busy, timeouts);
    vsbench_report("", s, at);
    return 0;
}

struct fan {
    uint64_t t0, *got;
    const char *id;
    size_t n_got;
};
struct fan_slot {
    struct fan *f;
    size_t idx;
};

static void fan_cb(vmstate *v, const struct vmstate_event *ev, void *ud)
{
    (void)v;
    struct fan_slot *slot = ud;
    struct fan *f = slot->f;
    if (ev->type != VMSTATE_EVENT_COMPLETED || !f->id || strcmp(ev->request_id, f->id) != 0)
        return;
    if (f->got[slot->idx] == 0) {
        f->got[slot->idx] = vsbench_now_ns();
        f->n_got++;
    }
}

static int do_fanout(size_t l, size_t rounds)
{
    /* each handle holds 3 descriptors (bus socket, epoll, eventfd) */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 3 * l + 64) {
        rl.rlim_cur = rl.rlim_max = 3 * l + 64;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            perror("setrlimit");
    }
    vmstate **h = calloc(l, sizeof(*h));
    struct fan f = {.got = calloc(l, sizeof(uint64_t))};
    struct fan_slot *slots = calloc(l, sizeof(*slots));
    struct pollfd *pfd = calloc(l, sizeof(*pfd));
    vsbench_cpu_mark(NULL, 0);
    uint64_t t_reg = vsbench_now_ns();
    for (size_t i = 0; i < l; i++) {
        h[i] = open_handle();
        slots[i] = (struct fan_slot){&f, i};
        int rc = vmstate_listen(h[i], fan_cb, &slots[i]);
        if (rc < 0)
            fail("vmstate_listen", h[i], rc);
        pfd[i].fd = vmstate_get_fd(h[i]);
        pfd[i].events = POLLIN;
    }
    printf("register: n=%zu total_s=%.4f\n", l, (vsbench_now_ns() - t_reg) / 1e9);
    vsbench_cpu_mark("cpu_ms_register", 1);
    uint64_t *first = calloc(rounds, sizeof(uint64_t)), *last = calloc(rounds, sizeof(uint64_t)),
             *spread = calloc(rounds, sizeof(uint64_t));
    char id[VMSTATE_REQUEST_ID_LEN + 1];
    for (size_t r = 0; r < rounds + 2; r++) { /* 2 untimed warm-up rounds */
        if (r == 2)
            vsbench_cpu_mark(NULL, 0);
        memset(f.got, 0, l * sizeof(uint64_t));
        f.n_got = 0;
        f.id = id;
        id[0] = 0;
        f.t0 = vsbench_now_ns();
        int rc = vmstate_hostinfo(h[0], id);
        if (rc < 0)
            fail("vmstate_hostinfo", h[0], rc);
        uint64_t deadline = f.t0 + 60 * 1000000000ull;
        while (f.n_got < l) {
            if (vsbench_now_ns() > deadline) {
                fprintf(stderr, "vsbench-app: only %zu of %zu listeners got the completion\n",
                        f.n_got, l);
                return 1;
            }
            if (poll(pfd, l, 1000) < 0 && errno != EINTR)
                return 1;
            for (size_t i = 0; i < l; i++)
                if (pfd[i].revents) {
                    if (vmstate_dispatch(h[i]) < 0)
                        fail("vmstate_dispatch", h[i], VMSTATE_E_DISCONNECTED);
                }
        }
        if (r >= 2) {
            vsbench_fanout_round(f.got, l, f.t0, &first[r - 2], &last[r - 2], &spread[r - 2]);
        }
    }
    vsbench_cpu_mark("cpu_ms_per_round", rounds);
    vsbench_report("first: ", first, rounds);
    vsbench_report("last: ", last, rounds);
    vsbench_report("spread: ", spread, rounds);
    for (size_t i = 0; i < l; i++)
        vmstate_close(h[i]);
    return 0;
}

static int mark_fd = -1;
static void mark(char c)
{
    if (write(mark_fd, &c, 1) != 1)
        perror("mark");
}

struct sl {
    char restore_id[VMSTATE_REQUEST_ID_LEN + 1];
    int restored;
};

static void sl_cb(vmstate *v, const struct vmstate_event *ev, void *ud)
{
    (void)v;
    struct sl *s = ud;
    /* In the restored instance: the restore's completion arrives (its id is not ours: the
     * requester was the other instance); mark it at once. */
    if (ev->type == VMSTATE_EVENT_COMPLETED && strcmp(ev->operation, "restore") == 0 &&
        !s->restored) {
        mark('r');
        s->restored = 1;
        if (ev->status != 0)
            fprintf(stderr, "vsbench-app: restore status %u: %s\n", ev->status, ev->message);
    }
}

/* The mark device opened and a listening handle (PrepareSave comes to it, as to an app that
 * needs its restore's data); exits on failure. */
static vmstate *open_marked_listener(const char *mark_dev, struct sl *s)
{
    mark_fd = open(mark_dev, O_WRONLY | O_CLOEXEC);
    if (mark_fd < 0) {
        perror(mark_dev);
        exit(1);
    }
    vmstate *v = open_handle();
    int rc = vmstate_listen(v, sl_cb, s);
    if (rc < 0)
        fail("vmstate_listen", v, rc);
    return v;
}

/* Mark 's', save, wait for the save's completion; exits unless it succeeded. */
static struct vmstate_event *save_waited(vmstate *v)
{
    char id[VMSTATE_REQUEST_ID_LEN + 1];
    struct vmstate_event *ev;
    int rc;

    mark('s');
    if ((rc = vmstate_save(v, "bench", NULL, 0, id)) < 0)
        fail("vmstate_save", v, rc);
    if ((rc = vmstate_wait(v, id, 600000, &ev)) < 0)
        fail("vmstate_wait save", v, rc);
    if (ev->status != 0) {
        fprintf(stderr, "vsbench-app: save status %u: %s\n", ev->status, ev->message);
        exit(1);
    }
    return ev;
}

static int do_saveloop(int n, const char *mark_dev)
{
    struct sl s = {0};
    vmstate *v = open_marked_listener(mark_dev, &s);
    int rc;
    for (int i = 0; i < n; i++) {
        char id[VMSTATE_REQUEST_ID_LEN + 1];
        struct vmstate_event *ev;
        s.restored = 0;
        ev = save_waited(v);
        if (s.restored || strcmp(ev->reason, "restored-copy") == 0) {
            /* We are the restored instance: the restore completion may follow the copy. */
            uint64_t dl = vsbench_now_ns() + 60000000000ull;
            while (!s.restored && vsbench_now_ns() < dl) {
                struct pollfd p = {vmstate_get_fd(v), POLLIN, 0};
                poll(&p, 1, 1000);
                vmstate_dispatch(v);
            }
            vmstate_event_free(ev);
            continue;
        }
        mark('e');
        char state[256];
        snprintf(state, sizeof(state), "%s", ev->state_id);
        vmstate_event_free(ev);
        mark('R');
        if ((rc = vmstate_restore(v, state, "x", 1, id)) < 0)
            fail("vmstate_restore", v, rc);
        /* This instance is replaced by the restored one; only a failure lands here. */
        if ((rc = vmstate_wait(v, id, 600000, &ev)) < 0)
            fail("vmstate_wait restore", v, rc);
        fprintf(stderr, "vsbench-app: restore returned here: status %u %s\n", ev->status,
                ev->message);
        return 1;
    }
    mark('q');
    vmstate_close(v);
    return 0;
}

static int do_saves(int n, const char *mark_dev)
{
    struct sl s = {0};
    vmstate *v = open_marked_listener(mark_dev, &s);
    for (int i = 0; i < n; i++) {
        vmstate_event_free(save_waited(v));
        mark('e');
    }
    mark('q');
    vmstate_close(v);
    return 0;
}

static int do_wait_bridge(int secs)
{
    vmstate *v = open_handle();
    for (int i = 0; i < secs * 10; i++) {
        if (vmstate_bridge_connected(v) == 1)
            return 0;
        usleep(100000);
    }
    return 1;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    principal = getenv("VSBENCH_PRINCIPAL") ? getenv("VSBENCH_PRINCIPAL") : "bench";
    secret = getenv("VSBENCH_SECRET") ? getenv("VSBENCH_SECRET") : "bench-secret";
    app_id = getenv("VSBENCH_APP") ? getenv("VSBENCH_APP") : "org.vmstate.Bench";
    if (argc == 3 && !strcmp(argv[1], "rtt"))
        return do_rtt(strtoul(argv[2], NULL, 10));
    if (argc == 4 && !strcmp(argv[1], "tput"))
        return do_tput(atoi(argv[2]), strtoul(argv[3], NULL, 10));
    if (argc == 4 && !strcmp(argv[1], "fanout"))
        return do_fanout(strtoul(argv[2], NULL, 10), strtoul(argv[3], NULL, 10));
    if (argc == 4 && !strcmp(argv[1], "saveloop"))
        return do_saveloop(atoi(argv[2]), argv[3]);
    if (argc == 4 && !strcmp(argv[1], "saves"))
        return do_saves(atoi(argv[2]), argv[3]);
    if (argc == 3 && !strcmp(argv[1], "wait-bridge"))
        return do_wait_bridge(atoi(argv[2]));
    fprintf(stderr, "usage: vsbench-app rtt N | tput K M | fanout L R | saveloop N MARKDEV | "
                    "saves N MARKDEV | "
                    "wait-bridge SECONDS\n");
    return 2;
}
