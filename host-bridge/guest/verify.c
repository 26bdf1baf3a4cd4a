/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * verify.c — see verify.h.
 */
#include "config.h"
#include "verify.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "vms-log.h"

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
    pthread_mutex_t lock;
    pthread_cond_t work;
    struct jobs queued, done;
    struct job *running[BRIDGE_VERIFY_THREADS * 4];
    unsigned n_threads;
    pthread_t threads[BRIDGE_VERIFY_THREADS * 4];
    int stop;
    int efd;
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

struct worker_arg {
    struct bridge_verifier *vf;
    unsigned index;
};

static void *worker(void *opaque)
{
    struct bridge_verifier *vf = ((struct worker_arg *)opaque)->vf;
    unsigned index = ((struct worker_arg *)opaque)->index;
    const uint64_t one = 1;

    free(opaque);
    pthread_mutex_lock(&vf->lock);
    for (;;) {
        struct job *j;

        while (!vf->stop && !vf->queued.head)
            pthread_cond_wait(&vf->work, &vf->lock);
        if (vf->stop)
            break;
        j = jobs_pop(&vf->queued);
        vf->running[index] = j;
        pthread_mutex_unlock(&vf->lock);
        bridge_auth_verify(&j->v); /* the slow part, outside the lock */
        pthread_mutex_lock(&vf->lock);
        vf->running[index] = NULL;
        jobs_push(&vf->done, j);
        /* an eventfd counter cannot overflow from a handful of jobs; no log from a worker */
        if (write(vf->efd, &one, sizeof(one)) < 0)
            continue; /* (cannot happen) the loop collects at its next wake-up anyway */
    }
    pthread_mutex_unlock(&vf->lock);
    return NULL;
}

struct bridge_verifier *bridge_verifier_new(unsigned threads, bridge_verify_done_fn done)
{
    struct bridge_verifier *vf = calloc(1, sizeof(*vf));
    sigset_t all, old;

    if (!vf)
        return NULL;
    if (!threads)
        threads = BRIDGE_VERIFY_THREADS;
    if (threads > sizeof(vf->threads) / sizeof(vf->threads[0]))
        threads = sizeof(vf->threads) / sizeof(vf->threads[0]);
    vf->done_fn = done;
    pthread_mutex_init(&vf->lock, NULL);
    pthread_cond_init(&vf->work, NULL);
    vf->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (vf->efd < 0)
        goto fail;
    /* the workers take no signals: the loop's signalfd gets them all */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (; vf->n_threads < threads; vf->n_threads++) {
        struct worker_arg *arg = malloc(sizeof(*arg));
        if (!arg)
            break;
        arg->vf = vf;
        arg->index = vf->n_threads;
        if (pthread_create(&vf->threads[vf->n_threads], NULL, worker, arg) != 0) {
            free(arg);
            break;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!vf->n_threads)
        goto fail;
    return vf;
fail:
    vms_err(NULL, NULL, "secret verifier: cannot start: %s", strerror(errno));
    bridge_verifier_free(vf);
    return NULL;
}

void bridge_verifier_free(struct bridge_verifier *vf)
{
    struct job *j;

    if (!vf)
        return;
    pthread_mutex_lock(&vf->lock);
    vf->stop = 1;
    pthread_cond_broadcast(&vf->work);
    pthread_mutex_unlock(&vf->lock);
    for (unsigned i = 0; i < vf->n_threads; i++)
        pthread_join(vf->threads[i], NULL);
    while ((j = jobs_pop(&vf->queued)))
        job_free(j);
    while ((j = jobs_pop(&vf->done)))
        job_free(j);
    for (unsigned i = 0; i < vf->n_threads; i++)
        if (vf->running[i]) /* a worker stopped between taking a job and finishing it: none */
            job_free(vf->running[i]);
    if (vf->efd >= 0)
        close(vf->efd);
    pthread_cond_destroy(&vf->work);
    pthread_mutex_destroy(&vf->lock);
    free(vf);
}

int bridge_verifier_fd(const struct bridge_verifier *vf)
{
    return vf->efd;
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
    pthread_cond_signal(&vf->work);
    pthread_mutex_unlock(&vf->lock);
    return 0;
}

int bridge_verifier_collect(struct bridge_verifier *vf)
{
    uint64_t count;
    struct jobs done;
    struct job *j;
    int n = 0;

    if (read(vf->efd, &count, sizeof(count)) < 0 && errno != EAGAIN)
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
    for (unsigned i = 0; i < vf->n_threads; i++)
        if (vf->running[i] && vf->running[i]->owner == owner)
            vf->running[i]->owner = NULL;
    for (j = vf->done.head; j; j = j->next)
        if (j->owner == owner)
            j->owner = NULL;
    pthread_mutex_unlock(&vf->lock);
}
