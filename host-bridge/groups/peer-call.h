/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * peer-call.h — a call to a peer as both transports see it (peer-admin.c keeps the calls
 * and their timeouts; peer-cpg.c carries some of them over the cluster's CPG group).
 * Private to host-bridge/groups/.
 */
#ifndef BRIDGE_GROUP_PEER_CALL_H
#define BRIDGE_GROUP_PEER_CALL_H

#include <stdint.h>

#include "bridge-config.h"
#include "loop.h"
#include "peer.h"

#define PEER_CALLS_MAX 64

struct group_peer_call {
    struct bridge *br;
    struct bridge_watch w; /* admin socket: the connection */
    char *out;
    size_t out_len, out_off;
    char *in;
    size_t in_len;
    double deadline;
    char why[512]; /* set: fail at the next tick (never from inside group_peer_send) */
    group_peer_reply_fn fn;
    void *opaque;
    /* CPG: the request's id and the node asked ("" for an admin socket) */
    uint64_t rpc_id;
    char node[BRIDGE_NODE_NAME_MAX];
};

/* The table of calls in flight (PEER_CALLS_MAX slots, NULL = free). */
struct group_peer_call **group_peer_calls(void);

/* Free @c and call its reply function (@reply borrowed, or NULL with @why). */
void group_peer_call_finish(struct group_peer_call *c, json_object *reply, const char *why);

/* ---- peer-cpg.c ---- */

/* 1 if @peer names a node of this bridge's cluster (peer.h: no [peer] section needed). */
int group_peer_cpg_known(struct bridge *br, const char *peer);

/* Send @req to node @node as call @c; on failure @c->why says why (it fails at the tick). */
void group_peer_cpg_start(struct group_peer_call *c, const char *node, json_object *req);

/* Drop the requests being served for other hosts (bridge exit). */
void group_peer_cpg_close(struct bridge *br);

#endif
