/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * verify.c — see verify.h.
 */
#include "config.h"
#include "verify.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "vms-log.h"
#include "worker.h"

struct job {
    struct job *next;
    void *owner; /* NULL: cancelled, dropped when it comes back */
    struct bridge_auth_verify v;
};

/* A FIFO of jobs. */
struct jobs {
    struct job *head, *tail;
};

struct bridge_verifier {
    struct bridge_worker *worker; /* its threads run verify_queued(); its eventfd wakes the loop */
    pthread_mutex_t lock;         /* guards the job lists */
    struct jobs queued, done;
    struct job *running[BRIDGE_VERIFY_THREADS * 4]; /* by worker thread */
    bridge_verify_done_fn done_fn;
};

static void jobs_push(struct jobs *q, struct job *j)
{
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
}

static struct job *jobs_pop(struct jobs *q)
{
    struct job *j = q->head;

    if (j) {
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
    }
    return j;
}

static void job_free(struct job *j)
{
    bridge_auth_verify_clear(&j->v);
    free(j);
}

/* A worker thread's run: verify the queued jobs one by one until none is left. */
static void verify_queued(struct bridge_worker *w, unsigned index, void *opaque)
{
    struct bridge_verifier *vf = opaque;

    while (!bridge_worker_stopping(w)) {
        struct job *j;

        pthread_mutex_lock(&vf->lock);
        j = jobs_pop(&vf->queued);
        vf->running[index] = j;
        pthread_mutex_unlock(&vf->lock);
        if (!j)
            break;
        bridge_auth_verify(&j->v); /* the slow part, outside the lock */
        pthread_mutex_lock(&vf->lock);
        vf->running[index] = NULL;
        jobs_push(&vf->done, j);
        pthread_mutex_unlock(&vf->lock);
        bridge_worker_notify(w);
    }
}

struct bridge_verifier *bridge_verifier_new(unsigned threads, bridge_verify_done_fn done)
{
    struct bridge_verifier *vf = calloc(1, sizeof(*vf));

    if (!vf)
        return NULL;
    if (!threads)
        threads = BRIDGE_VERIFY_THREADS;
    if (threads > sizeof(vf->running) / sizeof(vf->running[0]))
        threads = sizeof(vf->running) / sizeof(vf->running[0]);
    vf->done_fn = done;
    pthread_mutex_init(&vf->lock, NULL);
    vf->worker = bridge_worker_start(threads, 0, BRIDGE_WORKER_NOTIFY, verify_queued, vf);
    if (!vf->worker) {
        vms_err(NULL, NULL, "secret verifier: cannot start: %s", strerror(errno));
        bridge_verifier_free(vf);
        return NULL;
    }
    return vf;
}

void bridge_verifier_free(struct bridge_verifier *vf)
{
    struct job *j;

    if (!vf)
        return;
    bridge_worker_stop(vf->worker); /* waits for the verifications running */
    while ((j = jobs_pop(&vf->queued)))
        job_free(j);
    while ((j = jobs_pop(&vf->done)))
        job_free(j);
    for (size_t i = 0; i < sizeof(vf->running) / sizeof(vf->running[0]); i++)
        if (vf->running[i]) /* a run ended between taking a job and finishing it: none */
            job_free(vf->running[i]);
    pthread_mutex_destroy(&vf->lock);
    free(vf);
}

int bridge_verifier_fd(const struct bridge_verifier *vf)
{
    return bridge_worker_fd(vf->worker);
}

int bridge_verifier_submit(struct bridge_verifier *vf, void *owner,
                           const struct bridge_auth_verify *v)
{
    struct job *j = calloc(1, sizeof(*j));

    if (!j)
        return -1;
    j->owner = owner;
    j->v = *v;
    pthread_mutex_lock(&vf->lock);
    jobs_push(&vf->queued, j);
    pthread_mutex_unlock(&vf->lock);
    bridge_worker_wake(vf->worker);
    return 0;
}

int bridge_verifier_collect(struct bridge_verifier *vf)
{
    struct jobs done;
    struct job *j;
    int n = 0;

    if (bridge_worker_clear(vf->worker) < 0)
        vms_warn(NULL, NULL, "secret verifier: %s", strerror(errno));
    pthread_mutex_lock(&vf->lock);
    done = vf->done;
    vf->done.head = vf->done.tail = NULL;
    pthread_mutex_unlock(&vf->lock);
    /* the owners run request code (and may submit again): outside the lock */
    while ((j = jobs_pop(&done))) {
        if (j->owner) {
            vf->done_fn(j->owner, &j->v);
            n++;
        }
        job_free(j);
    }
    return n;
}

void bridge_verifier_cancel(struct bridge_verifier *vf, void *owner)
{
    struct jobs keep = {NULL, NULL};
    struct job *j;

    if (!vf)
        return;
    pthread_mutex_lock(&vf->lock);
    while ((j = jobs_pop(&vf->queued))) {
        if (j->owner == owner)
            job_free(j);
        else
            jobs_push(&keep, j);
    }
    vf->queued = keep;
    for (unsigned i = 0; i < bridge_worker_threads(vf->worker); i++)
        if (vf->running[i] && vf->running[i]->owner == owner)
            vf->running[i]->owner = NULL;
    for (j = vf->done.head; j; j = j->next)
        if (j->owner == owner)
            j->owner = NULL;
    pthread_mutex_unlock(&vf->lock);
}
