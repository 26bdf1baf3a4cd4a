/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * loop.c — see loop.h.
 */
#include "config.h"
#include "loop.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "vms-log.h"

#define LOOP_MAX_EVENTS 64

int bridge_loop_init(struct bridge_loop *l)
{
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    return l->epfd < 0 ? -1 : 0;
}

void bridge_loop_free(struct bridge_loop *l)
{
    if (l->epfd >= 0)
        close(l->epfd);
    l->epfd = -1;
}

void bridge_watch_init(struct bridge_watch *w, bridge_watch_fn fn, void *opaque)
{
    w->fd = -1;
    w->events = 0;
    w->fn = fn;
    w->opaque = opaque;
}

int bridge_watch_add(struct bridge_loop *l, struct bridge_watch *w, int fd, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};

    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        vms_err(NULL, NULL, "epoll_ctl add fd %d: %s", fd, strerror(errno));
        return -1;
    }
    w->fd = fd;
    w->events = events;
    return 0;
}

void bridge_watch_set(struct bridge_loop *l, struct bridge_watch *w, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};

    if (w->fd < 0 || w->events == events)
        return;
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, w->fd, &ev) == 0)
        w->events = events;
}

void bridge_watch_del(struct bridge_loop *l, struct bridge_watch *w)
{
    if (w->fd < 0)
        return;
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->fd = -1;
    w->events = 0;
}

int bridge_loop_run_once(struct bridge_loop *l, int timeout_ms)
{
    struct epoll_event evs[LOOP_MAX_EVENTS];
    int n = epoll_wait(l->epfd, evs, LOOP_MAX_EVENTS, timeout_ms);

    if (n < 0)
        return errno == EINTR ? 0 : -1;
    for (int i = 0; i < n; i++) {
        struct bridge_watch *w = evs[i].data.ptr;
        /* a callback earlier in this batch may have unregistered it */
        if (w->fd >= 0)
            w->fn(w, evs[i].events);
    }
    return 0;
}
