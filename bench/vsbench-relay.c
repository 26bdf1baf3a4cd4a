/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vsbench-relay — stands in for QEMU's two virtio-serial ports in the native bench bed
 * (bench/bench-native.py): the guest side (vmstate-helperd) and the host side
 * (vmstate-bridged) both connect to it as clients, as they connect to the port device and
 * to QEMU's chardev socket.
 *
 *   vsbench-relay DIR     listens on DIR/ha.sock DIR/ba.sock (port A: ha -> ba) and
 *                         DIR/hb.sock DIR/bb.sock (port B: bb -> hb); prints "ready" once
 *                         listening; runs until killed
 *
 * Semantics kept from virtio-serial + a chardev socket: bytes written while the other side is
 * not connected are held and delivered when it connects (as the virtqueue and QEMU's chardev
 * hold them); past HOLD_MAX held bytes the writer is no longer read (backpressure, as a full
 * virtqueue stalls the guest's write). A new client on an endpoint replaces the old one (a
 * reconnect). Bytes read on a direction's receiving end are discarded: neither side writes
 * there. One thread, epoll, non-blocking sockets: the relay adds two copies per hop and no
 * wake-up latency of its own.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define HOLD_MAX (1u << 20)

enum { HA, BA, HB, BB, NEP };
static const char *const ep_name[NEP] = {"ha", "ba", "hb", "bb"};

struct dir {
    int src, dst; /* endpoints */
    char *buf;    /* held bytes: [off, len) not yet written to dst */
    size_t off, len;
};

static struct {
    int lfd, cfd;
    uint32_t armed; /* the events cfd is watched for: epoll_ctl only when they change */
} ep[NEP];
static struct dir dirs[2] = {{HA, BA, NULL, 0, 0}, {BB, HB, NULL, 0, 0}};
static int epfd;

/* epoll data: endpoint index, +NEP for its listening socket */
static void watch(int fd, uint32_t events, int tag, int op)
{
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)tag};
    if (epoll_ctl(epfd, op, fd, &ev) < 0) {
        perror("epoll_ctl");
        exit(1);
    }
}

static struct dir *dir_from(int e)
{
    for (int i = 0; i < 2; i++)
        if (dirs[i].src == e)
            return &dirs[i];
    return NULL;
}

static struct dir *dir_to(int e)
{
    for (int i = 0; i < 2; i++)
        if (dirs[i].dst == e)
            return &dirs[i];
    return NULL;
}

/* The events an endpoint's connection is watched for: input unless its direction's hold
 * is full, output while held bytes wait for it. */
static void rearm(int e)
{
    if (ep[e].cfd < 0)
        return;
    struct dir *in = dir_from(e), *out = dir_to(e);
    uint32_t evs = EPOLLRDHUP;
    if (!in || in->len < HOLD_MAX)
        evs |= EPOLLIN;
    if (out && out->off < out->len)
        evs |= EPOLLOUT;
    if (evs != ep[e].armed)
        watch(ep[e].cfd, evs, e, EPOLL_CTL_MOD);
    ep[e].armed = evs;
}

static void drop_conn(int e)
{
    if (ep[e].cfd < 0)
        return;
    epoll_ctl(epfd, EPOLL_CTL_DEL, ep[e].cfd, NULL);
    close(ep[e].cfd);
    ep[e].cfd = -1;
}

/* Write what is held for d->dst; keeps the rest (and watches for EPOLLOUT) on EAGAIN. */
static void flush(struct dir *d)
{
    int fd = ep[d->dst].cfd;
    while (fd >= 0 && d->off < d->len) {
        ssize_t n = send(fd, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0) {
            drop_conn(d->dst); /* the held bytes stay for its next connection */
            break;
        }
        d->off += (size_t)n;
    }
    if (d->off == d->len)
        d->off = d->len = 0;
    rearm(d->dst);
    rearm(d->src);
}

static void on_input(int e)
{
    struct dir *d = dir_from(e);
    char scratch[4096];
    for (;;) {
        char *p = scratch;
        size_t room = sizeof(scratch);
        if (d) {
            if (d->off > 0 && d->len == HOLD_MAX) { /* compact before refusing input */
                memmove(d->buf, d->buf + d->off, d->len - d->off);
                d->len -= d->off;
                d->off = 0;
            }
            if (d->len == HOLD_MAX)
                break;
            p = d->buf + d->len;
            room = HOLD_MAX - d->len;
        }
        ssize_t n = recv(ep[e].cfd, p, room, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) {
            drop_conn(e);
            break;
        }
        if (d)
            d->len += (size_t)n;
    }
    if (d)
        flush(d);
}

static void on_accept(int e)
{
    int fd = accept4(ep[e].lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    drop_conn(e);
    ep[e].cfd = fd;
    ep[e].armed = EPOLLIN | EPOLLRDHUP;
    watch(fd, ep[e].armed, e, EPOLL_CTL_ADD);
    struct dir *out = dir_to(e);
    if (out)
        flush(out); /* what was written while nobody listened */
    rearm(e);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: vsbench-relay DIR\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        perror("epoll_create1");
        return 1;
    }
    for (int i = 0; i < 2; i++)
        if (!(dirs[i].buf = malloc(HOLD_MAX))) {
            perror("malloc");
            return 1;
        }
    for (int e = 0; e < NEP; e++) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if ((size_t)snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s.sock", argv[1], ep_name[e]) >=
            sizeof(sa.sun_path)) {
            fprintf(stderr, "vsbench-relay: %s: path too long\n", argv[1]);
            return 1;
        }
        unlink(sa.sun_path);
        ep[e].cfd = -1;
        ep[e].lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (ep[e].lfd < 0 || bind(ep[e].lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
            listen(ep[e].lfd, 4) < 0) {
            perror(sa.sun_path);
            return 1;
        }
        watch(ep[e].lfd, EPOLLIN, e + NEP, EPOLL_CTL_ADD);
    }
    printf("ready\n");
    for (;;) {
        struct epoll_event evs[8];
        int n = epoll_wait(epfd, evs, 8, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int tag = (int)evs[i].data.u32;
            if (tag >= NEP) {
                on_accept(tag - NEP);
                continue;
            }
            if (ep[tag].cfd < 0)
                continue; /* dropped earlier in this batch */
            if (evs[i].events & EPOLLOUT) {
                struct dir *out = dir_to(tag);
                if (out)
                    flush(out);
            }
            if (ep[tag].cfd >= 0 && (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
                on_input(tag);
        }
    }
}
