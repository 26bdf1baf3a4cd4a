/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libvirt-loop.c — see libvirt-loop.h.
 */
#include "config.h"
#include "libvirt-loop.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "vms-log.h"

struct lv_handle {
    struct bridge_watch watch; /* on a dup() of libvirt's fd: libvirt may watch one fd twice */
    int id;
    int fd;       /* libvirt's own fd, passed back to its callback */
    int events;   /* libvirt's VIR_EVENT_HANDLE_* asked for */
    int in_epoll; /* registered (not while events == 0: HUP/ERR would spin) */
    int removed;  /* freed by the loop thread after dispatch */
    virEventHandleCallback cb;
    void *opaque;
    virFreeCallback ff;
    struct lv_handle *next;
};

struct lv_timeout {
    int id;
    int period_ms; /* -1 disabled, 0 every loop turn */
    uint64_t due_ms;
    int removed;
    virEventTimeoutCallback cb;
    void *opaque;
    virFreeCallback ff;
    struct lv_timeout *next;
};

static struct {
    pthread_mutex_t mu;
    struct bridge_loop *loop;
    struct bridge_watch wake, timer; /* eventfd (any thread changed something), timerfd */
    struct lv_handle *handles;
    struct lv_timeout *timeouts;
    int next_id;
} lv = {.mu = PTHREAD_MUTEX_INITIALIZER};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Wake the loop so it re-reads the lists (from any thread). */
static void lv_wake(void)
{
    uint64_t one = 1;
    if (write(lv.wake.fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        vms_warn(NULL, NULL, "libvirt loop: wakeup: %s", strerror(errno));
}

static uint32_t to_epoll(int events)
{
    uint32_t e = 0;
    if (events & VIR_EVENT_HANDLE_READABLE)
        e |= EPOLLIN;
    if (events & VIR_EVENT_HANDLE_WRITABLE)
        e |= EPOLLOUT;
    return e;
}

static int from_epoll(uint32_t e)
{
    int events = 0;
    if (e & EPOLLIN)
        events |= VIR_EVENT_HANDLE_READABLE;
    if (e & EPOLLOUT)
        events |= VIR_EVENT_HANDLE_WRITABLE;
    if (e & EPOLLERR)
        events |= VIR_EVENT_HANDLE_ERROR;
    if (e & EPOLLHUP)
        events |= VIR_EVENT_HANDLE_HANGUP;
    return events;
}

/* With lv.mu held: make epoll match h->events. */
static void handle_sync_epoll(struct lv_handle *h)
{
    struct epoll_event ev = {.events = to_epoll(h->events), .data.ptr = &h->watch};
    int want = h->events != 0 && !h->removed;

    if (want && !h->in_epoll) {
        if (epoll_ctl(lv.loop->epfd, EPOLL_CTL_ADD, h->watch.fd, &ev) == 0)
            h->in_epoll = 1;
        else
            vms_err(NULL, NULL, "libvirt loop: epoll add fd %d: %s", h->watch.fd, strerror(errno));
    } else if (want) {
        epoll_ctl(lv.loop->epfd, EPOLL_CTL_MOD, h->watch.fd, &ev);
    } else if (h->in_epoll) {
        epoll_ctl(lv.loop->epfd, EPOLL_CTL_DEL, h->watch.fd, NULL);
        h->in_epoll = 0;
    }
}

static struct lv_handle *handle_find(int id)
{
    for (struct lv_handle *h = lv.handles; h; h = h->next)
        if (h->id == id && !h->removed)
            return h;
    return NULL;
}

static struct lv_timeout *timeout_find(int id)
{
    for (struct lv_timeout *t = lv.timeouts; t; t = t->next)
        if (t->id == id && !t->removed)
            return t;
    return NULL;
}

static void handle_io(struct bridge_watch *w, uint32_t revents)
{
    struct lv_handle *h = w->opaque;
    virEventHandleCallback cb = NULL;
    void *opaque = NULL;
    int id = 0, fd = -1, events = 0;

    pthread_mutex_lock(&lv.mu);
    if (!h->removed) {
        cb = h->cb;
        opaque = h->opaque;
        id = h->id;
        fd = h->fd; /* libvirt's callbacks get the fd they registered, not our dup */
        events =
            from_epoll(revents) & (h->events | VIR_EVENT_HANDLE_ERROR | VIR_EVENT_HANDLE_HANGUP);
    }
    pthread_mutex_unlock(&lv.mu);
    if (cb && events)
        cb(id, fd, events, opaque);
}

static int lv_add_handle(int fd, int events, virEventHandleCallback cb, void *opaque,
                         virFreeCallback ff)
{
    struct lv_handle *h = calloc(1, sizeof(*h));
    int dupfd;

    if (!h)
        return -1;
    dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dupfd < 0) {
        free(h);
        return -1;
    }
    bridge_watch_init(&h->watch, handle_io, h);
    h->watch.fd = dupfd;
    h->fd = fd;
    h->events = events;
    h->cb = cb;
    h->opaque = opaque;
    h->ff = ff;
    pthread_mutex_lock(&lv.mu);
    h->id = ++lv.next_id;
    handle_sync_epoll(h);
    h->next = lv.handles;
    lv.handles = h;
    pthread_mutex_unlock(&lv.mu);
    return h->id;
}

static void lv_update_handle(int id, int events)
{
    struct lv_handle *h;

    pthread_mutex_lock(&lv.mu);
    h = handle_find(id);
    if (h) {
        h->events = events;
        handle_sync_epoll(h);
    }
    pthread_mutex_unlock(&lv.mu);
}

static int lv_remove_handle(int id)
{
    struct lv_handle *h;

    pthread_mutex_lock(&lv.mu);
    h = handle_find(id);
    if (h) {
        h->removed = 1;
        handle_sync_epoll(h);
    }
    pthread_mutex_unlock(&lv.mu);
    if (!h)
        return -1;
    lv_wake(); /* the loop thread frees it */
    return 0;
}

static int lv_add_timeout(int period_ms, virEventTimeoutCallback cb, void *opaque,
                          virFreeCallback ff)
{
    struct lv_timeout *t = calloc(1, sizeof(*t));
    int id;

    if (!t)
        return -1;
    t->period_ms = period_ms;
    t->due_ms = mono_ms() + (period_ms > 0 ? (uint64_t)period_ms : 0);
    t->cb = cb;
    t->opaque = opaque;
    t->ff = ff;
    pthread_mutex_lock(&lv.mu);
    id = t->id = ++lv.next_id;
    t->next = lv.timeouts;
    lv.timeouts = t;
    pthread_mutex_unlock(&lv.mu);
    lv_wake();
    return id;
}

static void lv_update_timeout(int id, int period_ms)
{
    struct lv_timeout *t;

    pthread_mutex_lock(&lv.mu);
    t = timeout_find(id);
    if (t) {
        t->period_ms = period_ms;
        t->due_ms = mono_ms() + (period_ms > 0 ? (uint64_t)period_ms : 0);
    }
    pthread_mutex_unlock(&lv.mu);
    lv_wake();
}

static int lv_remove_timeout(int id)
{
    struct lv_timeout *t;

    pthread_mutex_lock(&lv.mu);
    t = timeout_find(id);
    if (t)
        t->removed = 1;
    pthread_mutex_unlock(&lv.mu);
    if (!t)
        return -1;
    lv_wake();
    return 0;
}

/* Run the due timeouts, one at a time, the lock released around each callback. */
static void run_timeouts(void)
{
    for (;;) {
        struct lv_timeout *t, *due = NULL;
        virEventTimeoutCallback cb;
        void *opaque;
        int id;
        uint64_t now = mono_ms();

        pthread_mutex_lock(&lv.mu);
        for (t = lv.timeouts; t && !due; t = t->next)
            if (!t->removed && t->period_ms >= 0 && t->due_ms <= now)
                due = t;
        if (!due) {
            pthread_mutex_unlock(&lv.mu);
            return;
        }
        /* next due after this turn (a 0-period timeout: the next loop turn) */
        due->due_ms = now + (due->period_ms > 0 ? (uint64_t)due->period_ms : 1);
        cb = due->cb;
        opaque = due->opaque;
        id = due->id;
        pthread_mutex_unlock(&lv.mu);
        cb(id, opaque);
    }
}

/* Free what was removed (free callbacks outside the lock: they may call back into libvirt). */
static void reap_removed(void)
{
    struct lv_handle *hgone = NULL, **hp;
    struct lv_timeout *tgone = NULL, **tp;

    pthread_mutex_lock(&lv.mu);
    for (hp = &lv.handles; *hp;) {
        struct lv_handle *h = *hp;
        if (h->removed) {
            *hp = h->next;
            h->next = hgone;
            hgone = h;
        } else {
            hp = &h->next;
        }
    }
    for (tp = &lv.timeouts; *tp;) {
        struct lv_timeout *t = *tp;
        if (t->removed) {
            *tp = t->next;
            t->next = tgone;
            tgone = t;
        } else {
            tp = &t->next;
        }
    }
    pthread_mutex_unlock(&lv.mu);
    while (hgone) {
        struct lv_handle *h = hgone;
        hgone = h->next;
        close(h->watch.fd);
        if (h->ff)
            h->ff(h->opaque);
        free(h);
    }
    while (tgone) {
        struct lv_timeout *t = tgone;
        tgone = t->next;
        if (t->ff)
            t->ff(t->opaque);
        free(t);
    }
}

/* Arm the timerfd for the earliest enabled timeout (0-period ones: at once). */
static void rearm(void)
{
    struct itimerspec its = {0};
    uint64_t earliest = UINT64_MAX;

    pthread_mutex_lock(&lv.mu);
    for (struct lv_timeout *t = lv.timeouts; t; t = t->next)
        if (!t->removed && t->period_ms >= 0 && t->due_ms < earliest)
            earliest = t->due_ms;
    pthread_mutex_unlock(&lv.mu);
    if (earliest != UINT64_MAX) {
        if (earliest == 0)
            earliest = 1; /* an all-zero it_value disarms */
        its.it_value.tv_sec = (time_t)(earliest / 1000u);
        its.it_value.tv_nsec = (long)(earliest % 1000u) * 1000000L;
    }
    timerfd_settime(lv.timer.fd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void on_wake_or_timer(struct bridge_watch *w, uint32_t revents)
{
    uint64_t n;

    (void)revents;
    if (read(w->fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        vms_warn(NULL, NULL, "libvirt loop: read: %s", strerror(errno));
    run_timeouts();
    reap_removed();
    rearm();
}

static void quiet_errors(void *opaque, virErrorPtr e)
{
    (void)opaque;
    (void)e;
}

int bridge_libvirt_loop_register(struct bridge_loop *loop)
{
    int efd = -1, tfd = -1;

    if (lv.loop)
        return lv.loop == loop ? 0 : -1;
    efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (efd < 0 || tfd < 0)
        goto fail;
    bridge_watch_init(&lv.wake, on_wake_or_timer, NULL);
    bridge_watch_init(&lv.timer, on_wake_or_timer, NULL);
    if (bridge_watch_add(loop, &lv.wake, efd, EPOLLIN) < 0)
        goto fail;
    if (bridge_watch_add(loop, &lv.timer, tfd, EPOLLIN) < 0) {
        bridge_watch_del(loop, &lv.wake);
        goto fail;
    }
    lv.loop = loop;
    virSetErrorFunc(NULL, quiet_errors); /* the backend logs what matters, not libvirt */
    virEventRegisterImpl(lv_add_handle, lv_update_handle, lv_remove_handle, lv_add_timeout,
                         lv_update_timeout, lv_remove_timeout);
    return 0;
fail:
    vms_err(NULL, NULL, "libvirt loop: cannot set up: %s", strerror(errno));
    if (efd >= 0)
        close(efd);
    if (tfd >= 0)
        close(tfd);
    return -1;
}
