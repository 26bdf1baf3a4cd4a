/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * peer.h — how a group's control instance reaches the bridges of the group (itself
 * included). One request, one reply, both JSON objects.
 *
 * The transport is behind this interface: today the bridges share a host and each peer is
 * an admin socket ([peer NAME] admin_socket = PATH; the peer "self" is this bridge's own
 * admin socket, so the control instance talks to itself exactly as to the others);
 * across hosts the cluster's CPG group will carry the same messages.
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

/* 1 if @peer is "self" or configured. */
int group_peer_known(struct bridge *br, const char *peer);

#endif
