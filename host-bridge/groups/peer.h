/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * peer.h — how a group's control instance reaches the bridges of the group (itself
 * included). One request, one reply, both JSON objects.
 *
 * The transport is behind this interface. A peer is named
 *   - "self": this bridge's own admin socket (the control instance talks to itself exactly
 *     as to the others);
 *   - a [peer NAME] section: a bridge on this host, over its admin_socket;
 *   - the node name of another host of the cluster ([cluster] node there): over the
 *     cluster's CPG group (peer-cpg.c, cluster/rpc.h), no configuration needed. A call to a
 *     node fails as soon as its bridge leaves the CPG group or this host loses quorum; a
 *     [peer NAME] section wins over a node of the same name.
 */
#ifndef BRIDGE_GROUP_PEER_H
#define BRIDGE_GROUP_PEER_H

#include <json-c/json.h>

struct bridge;
struct group_peer_call;

/* The reply to a call: @reply (borrowed for the call), or NULL with @why when the peer could
 * not be reached, went away before replying, or did not reply within the call's timeout. */
typedef void (*group_peer_reply_fn)(void *opaque, json_object *reply, const char *why);

/*
 * Send @req (not consumed) to @peer ("self" or a [peer NAME]) and call @fn exactly once,
 * later, from the loop (never from inside this call) — unless the call is cancelled.
 * @timeout_s bounds the wait for the reply. Returns the call, or NULL (no memory).
 */
struct group_peer_call *group_peer_send(struct bridge *br, const char *peer, json_object *req,
                                        double timeout_s, group_peer_reply_fn fn, void *opaque);

/* Forget @c: its @fn is never called. */
void group_peer_cancel(struct group_peer_call *c);

/* Timeouts of the calls in flight; @now monotonic seconds. */
void group_peer_tick(struct bridge *br, double now);

/* Drop every call (bridge exit). */
void group_peer_close_all(struct bridge *br);

/* 1 if @peer is "self", configured, or a node of this bridge's cluster. */
int group_peer_known(struct bridge *br, const char *peer);

/* ---- fed by the cluster room (cluster.c) ---- */
struct cl_rpc;

/* An rpc message addressed to this node, from node @m->from (the caller checked that the
 * message came from that node): a request is served (group-prepare, -commit, -abort) and
 * answered over CPG; a reply completes the call it names (or is dropped). */
void group_peer_cpg_deliver(struct bridge *br, const struct cl_rpc *m);

/* The CPG membership or the quorum changed: calls to nodes that left (every call, when this
 * host is no longer quorate) fail, and group operations this bridge prepared for a control
 * instance that left are aborted (groups.h). */
void group_peer_cpg_membership(struct bridge *br);

#endif
