/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * reach.c — see reach.h. One thread for every HA VM's probes: a probe may block for its
 * timeouts (2 s) when a path is cut, which the bridge's loop must never do.
 */
#include "config.h"
#include "reach.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DETAIL_MAX 200

struct cl_reach_entry {
    const struct bridge_ioe_config *cfg;
    int ok; /* -1 unknown */
    char detail[DETAIL_MAX];
};

struct cl_reach {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop, kicked;
    double interval;
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

static void *reach_thread(void *arg)
{
    struct cl_reach *r = arg;

    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        struct timespec until;
        r->kicked = 0;
        for (size_t i = 0; i < r->n && !r->stop; i++) {
            char detail[DETAIL_MAX];
            int ok;
            if (!r->e[i].cfg->n_probes)
                continue;
            pthread_mutex_unlock(&r->mu);
            ok = probe_all(r->e[i].cfg, detail, sizeof(detail));
            pthread_mutex_lock(&r->mu);
            r->e[i].ok = ok;
            snprintf(r->e[i].detail, sizeof(r->e[i].detail), "%s", detail);
        }
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += (time_t)r->interval;
        until.tv_nsec += (long)((r->interval - (double)(time_t)r->interval) * 1e9);
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!r->stop && !r->kicked &&
               pthread_cond_timedwait(&r->cv, &r->mu, &until) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

struct cl_reach *cl_reach_start(const struct bridge_ioe_config *const *cfgs, size_t n,
                                double interval)
{
    struct cl_reach *r = calloc(1, sizeof(*r) + n * sizeof(r->e[0]));

    if (!r)
        return NULL;
    r->n = n;
    r->interval = interval > 0.05 ? interval : 0.05;
    for (size_t i = 0; i < n; i++) {
        r->e[i].cfg = cfgs[i];
        r->e[i].ok = -1;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    if (pthread_create(&r->th, NULL, reach_thread, r) != 0) {
        pthread_cond_destroy(&r->cv);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return NULL;
    }
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
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->kicked = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

void cl_reach_stop(struct cl_reach *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->th, NULL);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
