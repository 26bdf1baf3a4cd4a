/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * loop.h — the bridge's one epoll event loop.
 *
 * A watch is an fd plus a callback; callers embed struct bridge_watch in
 * their own structs. Timers are not registered: every turn of the loop
 * calls the owner's tick (bridge_loop_run_once returns after at most
 * @timeout_ms), which is enough for reconnect backoff and command timeouts.
 */
#ifndef BRIDGE_LOOP_H
#define BRIDGE_LOOP_H

#include <stdint.h>

struct bridge_watch;
typedef void (*bridge_watch_fn)(struct bridge_watch *w, uint32_t revents);

struct bridge_watch {
    int fd;          /* -1 when not registered */
    uint32_t events; /* EPOLLIN / EPOLLOUT currently asked for */
    bridge_watch_fn fn;
    void *opaque;
};

struct bridge_loop {
    int epfd;
};

int bridge_loop_init(struct bridge_loop *l);
void bridge_loop_free(struct bridge_loop *l);

void bridge_watch_init(struct bridge_watch *w, bridge_watch_fn fn, void *opaque);
/* Register @w for @fd and @events (EPOLLIN|EPOLLOUT). Returns 0 or -1. */
int bridge_watch_add(struct bridge_loop *l, struct bridge_watch *w, int fd, uint32_t events);
/* Change the events of a registered watch (no-op if unchanged or unregistered). */
void bridge_watch_set(struct bridge_loop *l, struct bridge_watch *w, uint32_t events);
/* Unregister (the fd is not closed). Safe on an unregistered watch. */
void bridge_watch_del(struct bridge_loop *l, struct bridge_watch *w);

/* Wait up to @timeout_ms and dispatch ready watches. Returns 0, or -1 on an epoll error. */
int bridge_loop_run_once(struct bridge_loop *l, int timeout_ms);

#endif
