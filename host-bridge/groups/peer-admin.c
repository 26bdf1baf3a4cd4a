/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * peer-admin.c — group_peer_send() (peer.h): the calls in flight, their timeouts, and the
 * transport to "self" and to the [peer NAME] sections, over their admin sockets. A peer
 * that is neither but a node of the cluster goes over CPG (peer-cpg.c).
 */
#include "config.h"
#include "peer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "bridge.h"
#include "peer-call.h"
#include "vms-log.h"

#define PEER_REPLY_MAX (1 << 16)

/* The calls in flight; a bridge has few (one per peer per group operation). */
static struct group_peer_call *calls[PEER_CALLS_MAX];

struct group_peer_call **group_peer_calls(void)
{
    return calls;
}

static void call_free(struct group_peer_call *c)
{
    for (int i = 0; i < PEER_CALLS_MAX; i++)
        if (calls[i] == c)
            calls[i] = NULL;
    if (c->w.fd >= 0) {
        int fd = c->w.fd;
        bridge_watch_del(&c->br->loop, &c->w);
        close(fd);
    }
    free(c->out);
    free(c->in);
    free(c);
}

void group_peer_call_finish(struct group_peer_call *c, json_object *reply, const char *why)
{
    group_peer_reply_fn fn = c->fn;
    void *opaque = c->opaque;

    c->fn = NULL;
    call_free(c);
    if (fn)
        fn(opaque, reply, why);
}

static const char *peer_path(struct bridge *br, const char *peer)
{
    if (!strcmp(peer, "self"))
        return br->cfg->admin_socket[0] ? br->cfg->admin_socket : NULL;
    for (size_t i = 0; i < br->cfg->n_peers; i++)
        if (!strcmp(br->cfg->peers[i].name, peer))
            return br->cfg->peers[i].admin_socket;
    return NULL;
}

int group_peer_known(struct bridge *br, const char *peer)
{
    return peer_path(br, peer) != NULL || group_peer_cpg_known(br, peer);
}

static void call_io(struct bridge_watch *w, uint32_t revents)
{
    struct group_peer_call *c = w->opaque;
    char *nl;
    ssize_t n;

    if (revents & EPOLLOUT) {
        while (c->out_off < c->out_len) {
            n = write(w->fd, c->out + c->out_off, c->out_len - c->out_off);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno == EAGAIN)
                return;
            if (n <= 0) {
                group_peer_call_finish(c, NULL, "the peer closed its admin socket");
                return;
            }
            c->out_off += (size_t)n;
        }
        bridge_watch_set(&c->br->loop, w, EPOLLIN);
    }
    if (!(revents & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        return;
    n = read(w->fd, c->in + c->in_len, PEER_REPLY_MAX - 1 - c->in_len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        group_peer_call_finish(c, NULL, "the peer went away before replying");
        return;
    }
    c->in_len += (size_t)n;
    c->in[c->in_len] = '\0';
    nl = strchr(c->in, '\n');
    if (nl) {
        json_object *o;
        *nl = '\0';
        o = json_tokener_parse(c->in);
        if (!o || !json_object_is_type(o, json_type_object))
            group_peer_call_finish(c, NULL, "the peer's reply is not a JSON object");
        else
            group_peer_call_finish(c, o, NULL);
        json_object_put(o);
    } else if (c->in_len >= PEER_REPLY_MAX - 1) {
        group_peer_call_finish(c, NULL, "the peer's reply is too long");
    }
}

struct group_peer_call *group_peer_send(struct bridge *br, const char *peer, json_object *req,
                                        double timeout_s, group_peer_reply_fn fn, void *opaque)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct group_peer_call *c = calloc(1, sizeof(*c));
    const char *path = peer_path(br, peer);
    int slot = -1, fd = -1;

    if (!c)
        return NULL;
    for (int i = 0; i < PEER_CALLS_MAX && slot < 0; i++)
        if (!calls[i])
            slot = i;
    c->br = br;
    c->fn = fn;
    c->opaque = opaque;
    c->deadline = bridge_now() + timeout_s;
    bridge_watch_init(&c->w, call_io, c);
    c->in = path ? malloc(PEER_REPLY_MAX) : NULL;
    if (slot < 0 || (path && !c->in) ||
        asprintf(&c->out, "%s\n", json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN)) <
            0) {
        c->out = NULL;
        free(c->in);
        free(c);
        return NULL;
    }
    calls[slot] = c;
    c->out_len = strlen(c->out);
    if (!path) {
        if (group_peer_cpg_known(br, peer))
            group_peer_cpg_start(c, peer, req);
        else
            snprintf(c->why, sizeof(c->why),
                     "no [peer %.64s] in the configuration, nor a cluster node of that name", peer);
        return c;
    }
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    /* a UNIX connect completes at once or fails (EAGAIN: the listener's backlog is full) */
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        snprintf(c->why, sizeof(c->why), "peer %.64s unreachable on %.200s: %s", peer, path,
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        return c;
    }
    if (bridge_watch_add(&br->loop, &c->w, fd, EPOLLOUT) < 0) {
        close(fd);
        snprintf(c->why, sizeof(c->why), "peer %.64s: cannot watch the connection", peer);
    }
    return c;
}

void group_peer_cancel(struct group_peer_call *c)
{
    if (c)
        call_free(c);
}

void group_peer_tick(struct bridge *br, double now)
{
    for (int i = 0; i < PEER_CALLS_MAX; i++) {
        struct group_peer_call *c = calls[i];
        if (!c || c->br != br)
            continue;
        if (c->why[0]) {
            char why[sizeof(c->why)];
            snprintf(why, sizeof(why), "%s", c->why);
            group_peer_call_finish(c, NULL, why);
        } else if (now >= c->deadline) {
            group_peer_call_finish(c, NULL, "the peer did not reply in time");
        }
    }
}

void group_peer_close_all(struct bridge *br)
{
    group_peer_cpg_close(br);
    for (int i = 0; i < PEER_CALLS_MAX; i++)
        if (calls[i] && calls[i]->br == br)
            call_free(calls[i]);
}
