/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of host-bridge/worker.c: runs on a wake and on a period, wakes counted up to the
 * number of threads, a wake before a stop honoured, the eventfd a run sets for the loop; and
 * one of its users, cluster/reach.c (a pass at the start and on a kick).
 */
#include "config.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "reach.h"
#include "worker.h"

struct probe {
    pthread_mutex_t lock;
    int running, most_running; /* runs side by side, now and at most */
    unsigned runs;
    useconds_t sleep_us;
};

static void probe_run(struct bridge_worker *w, unsigned index, void *opaque)
{
    struct probe *p = opaque;

    cr_assert_lt(index, bridge_worker_threads(w));
    pthread_mutex_lock(&p->lock);
    p->running++;
    if (p->running > p->most_running)
        p->most_running = p->running;
    pthread_mutex_unlock(&p->lock);
    usleep(p->sleep_us);
    pthread_mutex_lock(&p->lock);
    p->running--;
    p->runs++;
    pthread_mutex_unlock(&p->lock);
    if (bridge_worker_fd(w) >= 0)
        bridge_worker_notify(w);
}

/* A worker whose threads run probe_run() on @p; fails the test when it cannot start. */
static struct bridge_worker *probe_worker(struct probe *p, unsigned threads, double period,
                                          unsigned flags)
{
    struct bridge_worker *w = bridge_worker_start(threads, period, flags, probe_run, p);

    cr_assert_not_null(w, "worker: %s", strerror(errno));
    return w;
}

/* Wait up to 5 s for @w to have finished @n runs. */
static void wait_runs(struct bridge_worker *w, unsigned long n)
{
    for (int i = 0; i < 500 && bridge_worker_runs(w) < n; i++)
        usleep(10000);
    cr_assert_geq(bridge_worker_runs(w), n, "%lu runs, %lu expected", bridge_worker_runs(w), n);
}

Test(worker, runs_when_woken_and_notifies_the_loop)
{
    struct probe p = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0};
    struct bridge_worker *w = probe_worker(&p, 1, 0, BRIDGE_WORKER_NOTIFY);
    struct pollfd pfd;

    pfd = (struct pollfd){.fd = bridge_worker_fd(w), .events = POLLIN};
    cr_assert_geq(pfd.fd, 0);
    usleep(50000);
    cr_assert_eq(bridge_worker_runs(w), 0, "ran without a wake (no period)");
    bridge_worker_wake(w);
    cr_assert_eq(poll(&pfd, 1, 5000), 1, "the run did not wake the loop");
    cr_assert_eq(bridge_worker_clear(w), 0);
    cr_assert_eq(poll(&pfd, 1, 0), 0, "still readable after clear");
    wait_runs(w, 1);
    bridge_worker_stop(w);
}

Test(worker, wakes_run_side_by_side_up_to_the_threads)
{
    struct probe p = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 200000};
    struct bridge_worker *w = probe_worker(&p, 2, 0, 0);

    cr_assert_eq(bridge_worker_threads(w), 2);
    cr_assert_eq(bridge_worker_fd(w), -1);
    for (int i = 0; i < 5; i++) /* counted up to 2, the rest coalesce */
        bridge_worker_wake(w);
    wait_runs(w, 2);
    usleep(300000);
    cr_assert_eq(p.most_running, 2, "%d runs side by side", p.most_running);
    cr_assert_leq(bridge_worker_runs(w), 4, "%lu runs for 5 wakes on 2 threads",
                  bridge_worker_runs(w));
    bridge_worker_stop(w);
}

Test(worker, runs_every_period)
{
    struct probe p = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0};
    struct bridge_worker *w = probe_worker(&p, 1, 0.05, 0);

    wait_runs(w, 3);
    bridge_worker_stop(w);
}

Test(worker, a_wake_before_the_stop_still_runs)
{
    struct probe p = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 50000};
    struct bridge_worker *w = probe_worker(&p, 1, 0, 0);

    bridge_worker_wake(w);
    wait_runs(w, 1);
    bridge_worker_wake(w);
    bridge_worker_stop(w); /* joins: the run asked for has happened */
    cr_assert_eq(p.running, 0);
    cr_assert_eq(p.runs, 2, "%u runs, the one asked for before the stop lost", p.runs);
}

/* Wait up to 5 s for storage @i's answer to become @want. */
static int reach_wait(struct cl_reach *r, size_t i, int want, char *detail, size_t len)
{
    int ok = cl_reach_get(r, i, detail, len);

    for (int k = 0; k < 500 && ok != want; k++) {
        usleep(10000);
        ok = cl_reach_get(r, i, detail, len);
    }
    return ok;
}

Test(worker, reach_probes_at_start_and_when_kicked)
{
    char dir[] = "/tmp/vms-reach-XXXXXX", disk[64], detail[200];
    struct bridge_ioe_config probed, unprobed;
    const struct bridge_ioe_config *cfgs[] = {&probed, &unprobed};
    struct cl_reach *r;
    int fd;

    cr_assert_not_null(mkdtemp(dir));
    snprintf(disk, sizeof(disk), "%s/disk", dir);
    fd = open(disk, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "x", 1), 1);
    close(fd);
    bridge_ioe_config_defaults(&probed);
    bridge_ioe_config_defaults(&unprobed);
    probed.min_free_bytes = 0;
    probed.probes[0].kind = BRIDGE_IOE_PROBE_FILE;
    snprintf(probed.probes[0].target, sizeof(probed.probes[0].target), "%s", disk);
    probed.n_probes = 1;

    r = cl_reach_start(cfgs, 2, 3600); /* no periodic pass within the test: only kicks */
    cr_assert_not_null(r);
    cr_assert_eq(reach_wait(r, 0, 1, detail, sizeof(detail)), 1, "first pass: %s", detail);
    cr_assert_eq(cl_reach_get(r, 1, NULL, 0), -1, "a VM without io_probe was probed");
    cr_assert_eq(cl_reach_get(r, 2, NULL, 0), -1);
    unlink(disk);
    cl_reach_kick(r);
    cr_assert_eq(reach_wait(r, 0, 0, detail, sizeof(detail)), 0, "kick: %s", detail);
    cr_assert(strstr(detail, "open"), "%s", detail);
    cl_reach_stop(r);
    cl_reach_stop(NULL);
    rmdir(dir);
}
