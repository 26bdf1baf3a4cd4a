/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * worker.c — see worker.h.
 */
#include "config.h"
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

struct worker_thread {
    struct bridge_worker *w;
    unsigned index;
    pthread_t id;
};

struct bridge_worker {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* on CLOCK_MONOTONIC: a period does not jump with the wall clock */
    unsigned pending;    /* runs asked for and not started (at most n_threads) */
    int stop;
    unsigned long runs;
    double period;
    int efd;
    bridge_worker_fn run;
    void *opaque;
    unsigned n_threads;
    struct worker_thread threads[];
};

/* CLOCK_MONOTONIC now + @secs, for pthread_cond_timedwait */
static struct timespec deadline_after(double secs)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += (time_t)secs;
    t.tv_nsec += (long)((secs - (double)(time_t)secs) * 1e9);
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

static void *worker_main(void *arg)
{
    struct worker_thread *t = arg;
    struct bridge_worker *w = t->w;

    pthread_mutex_lock(&w->lock);
    for (;;) {
        struct timespec until;
        int timed_out = 0;

        if (w->period > 0)
            until = deadline_after(w->period);
        while (!w->pending && !w->stop && !timed_out) {
            if (w->period > 0)
                timed_out = pthread_cond_timedwait(&w->wake, &w->lock, &until) == ETIMEDOUT;
            else
                pthread_cond_wait(&w->wake, &w->lock);
        }
        if (w->pending)
            w->pending--; /* a run asked for before a stop still happens */
        else if (w->stop)
            break;
        pthread_mutex_unlock(&w->lock);
        w->run(w, t->index, w->opaque);
        pthread_mutex_lock(&w->lock);
        w->runs++;
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* Free what bridge_worker_start() made; the threads are joined already (or none started). */
static void worker_free(struct bridge_worker *w)
{
    if (w->efd >= 0)
        close(w->efd);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

struct bridge_worker *bridge_worker_start(unsigned threads, double period, unsigned flags,
                                          bridge_worker_fn run, void *opaque)
{
    struct bridge_worker *w;
    pthread_condattr_t attr;
    sigset_t all, old;
    int rc = 0;

    if (!threads)
        threads = 1;
    w = calloc(1, sizeof(*w) + threads * sizeof(w->threads[0]));
    if (!w)
        return NULL;
    w->period = period;
    w->run = run;
    w->opaque = opaque;
    w->efd = -1;
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->wake, &attr);
    pthread_condattr_destroy(&attr);
    if (flags & BRIDGE_WORKER_NOTIFY) {
        w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (w->efd < 0)
            goto fail;
    }
    /* the threads inherit a full mask: the loop's signalfd gets every signal */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (; w->n_threads < threads; w->n_threads++) {
        struct worker_thread *t = &w->threads[w->n_threads];

        t->w = w;
        t->index = w->n_threads;
        rc = pthread_create(&t->id, NULL, worker_main, t);
        if (rc != 0)
            break;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!w->n_threads) {
        errno = rc;
        goto fail;
    }
    return w;
fail:
    rc = errno;
    worker_free(w);
    errno = rc;
    return NULL;
}

unsigned bridge_worker_threads(const struct bridge_worker *w)
{
    return w->n_threads;
}

void bridge_worker_wake(struct bridge_worker *w)
{
    pthread_mutex_lock(&w->lock);
    if (w->pending < w->n_threads)
        w->pending++;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
}

int bridge_worker_stopping(struct bridge_worker *w)
{
    int stop;

    pthread_mutex_lock(&w->lock);
    stop = w->stop;
    pthread_mutex_unlock(&w->lock);
    return stop;
}

unsigned long bridge_worker_runs(struct bridge_worker *w)
{
    unsigned long n;

    pthread_mutex_lock(&w->lock);
    n = w->runs;
    pthread_mutex_unlock(&w->lock);
    return n;
}

int bridge_worker_fd(const struct bridge_worker *w)
{
    return w->efd;
}

void bridge_worker_notify(struct bridge_worker *w)
{
    const uint64_t one = 1;

    /* an eventfd counter does not overflow from a few runs; no log from a worker thread: a
     * failed write (cannot happen) only delays the results to the loop's next wake-up */
    if (write(w->efd, &one, sizeof(one)) < 0)
        return;
}

int bridge_worker_clear(struct bridge_worker *w)
{
    uint64_t count;

    if (read(w->efd, &count, sizeof(count)) < 0 && errno != EAGAIN)
        return -1;
    return 0;
}

void bridge_worker_stop(struct bridge_worker *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stop = 1;
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->lock);
    for (unsigned i = 0; i < w->n_threads; i++)
        pthread_join(w->threads[i].id, NULL);
    worker_free(w);
}
