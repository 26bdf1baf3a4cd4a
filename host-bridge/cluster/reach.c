/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * reach.c — see reach.h. One thread for every HA VM's probes: a probe may block for its
 * timeouts (2 s) when a path is cut, which the bridge's loop must never do.
 */
#include "config.h"
#include "reach.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker.h"

#define DETAIL_MAX 200

struct cl_reach_entry {
    const struct bridge_ioe_config *cfg;
    int ok; /* -1 unknown */
    char detail[DETAIL_MAX];
};

struct cl_reach {
    struct bridge_worker *worker; /* one thread: a pass every interval, or when kicked */
    pthread_mutex_t mu;           /* guards e[].ok and e[].detail */
    size_t n;
    struct cl_reach_entry e[];
};

/* Every probe of @cfg must answer: one storage target unreachable is a failed path. */
static int probe_all(const struct bridge_ioe_config *cfg, char *detail, size_t len)
{
    int ok = 1;

    snprintf(detail, len, "no probe");
    for (unsigned k = 0; k < cfg->n_probes && ok; k++)
        ok = bridge_ioe_probe_run(&cfg->probes[k], cfg->min_free_bytes, detail, len);
    return ok;
}

/* The worker's run: one pass over every probed storage. */
static void probe_pass(struct bridge_worker *w, unsigned index, void *arg)
{
    struct cl_reach *r = arg;

    (void)index;
    for (size_t i = 0; i < r->n && !bridge_worker_stopping(w); i++) {
        char detail[DETAIL_MAX];
        int ok;
        if (!r->e[i].cfg->n_probes)
            continue;
        ok = probe_all(r->e[i].cfg, detail, sizeof(detail)); /* may block: no lock held */
        pthread_mutex_lock(&r->mu);
        r->e[i].ok = ok;
        snprintf(r->e[i].detail, sizeof(r->e[i].detail), "%s", detail);
        pthread_mutex_unlock(&r->mu);
    }
}

struct cl_reach *cl_reach_start(const struct bridge_ioe_config *const *cfgs, size_t n,
                                double interval)
{
    struct cl_reach *r = calloc(1, sizeof(*r) + n * sizeof(r->e[0]));

    if (!r)
        return NULL;
    r->n = n;
    for (size_t i = 0; i < n; i++) {
        r->e[i].cfg = cfgs[i];
        r->e[i].ok = -1;
    }
    pthread_mutex_init(&r->mu, NULL);
    r->worker = bridge_worker_start(1, interval > 0.05 ? interval : 0.05, 0, probe_pass, r);
    if (!r->worker) {
        pthread_mutex_destroy(&r->mu);
        free(r);
        return NULL;
    }
    bridge_worker_wake(r->worker); /* the first pass at once */
    return r;
}

int cl_reach_get(struct cl_reach *r, size_t i, char *detail, size_t len)
{
    int ok;

    if (!r || i >= r->n)
        return -1;
    pthread_mutex_lock(&r->mu);
    ok = r->e[i].ok;
    if (detail && len)
        snprintf(detail, len, "%s", r->e[i].detail);
    pthread_mutex_unlock(&r->mu);
    return ok;
}

void cl_reach_kick(struct cl_reach *r)
{
    if (r)
        bridge_worker_wake(r->worker);
}

void cl_reach_stop(struct cl_reach *r)
{
    if (!r)
        return;
    bridge_worker_stop(r->worker);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
