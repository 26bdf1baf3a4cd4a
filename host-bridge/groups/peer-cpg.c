/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * peer-cpg.c — group calls to the bridges of other hosts over the cluster's CPG group
 * (peer.h, cluster/rpc.h). A request is multicast with a fresh id, the node asked answers
 * with the same id; a call whose node leaves the group, or any call when this host loses
 * quorum, fails at once (the control instance then aborts the group, groups.c). Requests
 * from other hosts are served here: only group-prepare, -commit and -abort, and prepare and
 * commit only while this host is quorate.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "bridge.h"
#include "cluster.h"
#include "groups.h"
#include "peer-call.h"
#include "rpc.h"
#include "vms-log.h"

/* A request of another host being served: its answer goes back over CPG. */
struct served {
    struct bridge *br;
    uint64_t id;
    char from[BRIDGE_NODE_NAME_MAX];
    struct served *next;
};

static struct served *serving;
static uint64_t next_id;

int group_peer_cpg_known(struct bridge *br, const char *peer)
{
    return bridge_cluster_node_state(br, peer) >= 0;
}

void group_peer_cpg_start(struct group_peer_call *c, const char *node, json_object *req)
{
    struct bridge *br = c->br;
    char *msg;

    snprintf(c->node, sizeof(c->node), "%s", node);
    if (!bridge_cluster_quorate(br)) {
        snprintf(c->why, sizeof(c->why), "node %.64s: this host is not in a quorate cluster", node);
        return;
    }
    if (bridge_cluster_node_state(br, node) != 1) {
        snprintf(c->why, sizeof(c->why), "node %.64s: its bridge is not in the cluster's CPG group",
                 node);
        return;
    }
    if (!next_id) {
        /* from a random point: a restarted bridge does not take a late reply to its previous
         * life's request for one of its own */
        randombytes_buf(&next_id, sizeof(next_id));
        next_id = (next_id >> 2) + 1;
    }
    c->rpc_id = next_id++;
    msg = cl_rpc_format(CL_RPC_REQUEST, c->rpc_id, bridge_cluster_node(br), node, req);
    if (!msg || bridge_cluster_send(br, msg) < 0)
        snprintf(c->why, sizeof(c->why), "node %.64s: %s", node,
                 msg ? "cannot send on the cluster's CPG group" : "request too long");
    free(msg);
}

static void served_unlink(struct served *s)
{
    for (struct served **p = &serving; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            return;
        }
}

static void on_served(void *opaque, int ok, json_object *result)
{
    struct served *s = opaque;
    char *msg;

    if (!result)
        result = json_object_new_object();
    json_object_object_add(result, "ok", json_object_new_boolean(ok));
    msg = cl_rpc_format(CL_RPC_REPLY, s->id, bridge_cluster_node(s->br), s->from, result);
    if (!msg || bridge_cluster_send(s->br, msg) < 0)
        vms_warn(NULL, NULL, "group: the answer to %s's request could not be sent (%s)", s->from,
                 msg ? "not quorate, or Corosync gone" : "too long");
    free(msg);
    json_object_put(result);
    served_unlink(s);
    free(s);
}

static void serve(struct bridge *br, const struct cl_rpc *m)
{
    json_object *cmd;
    const char *name;
    struct served *s;

    json_object_object_get_ex(m->body, "cmd", &cmd); /* there and allowed: cl_rpc_parse */
    name = json_object_get_string(cmd);
    s = calloc(1, sizeof(*s));
    if (!s)
        return; /* the caller's call times out */
    s->br = br;
    s->id = m->id;
    snprintf(s->from, sizeof(s->from), "%s", m->from);
    s->next = serving;
    serving = s;
    if (strcmp(name, "group-abort") && !bridge_cluster_quorate(br)) {
        json_object *o = json_object_new_object();
        json_object_object_add(
            o, "error", json_object_new_string("refused: this host is not in a quorate cluster"));
        on_served(s, 0, o);
        return;
    }
    bridge_groups_command_from(br, m->from, name, m->body, on_served, s);
}

void group_peer_cpg_deliver(struct bridge *br, const struct cl_rpc *m)
{
    struct group_peer_call **calls = group_peer_calls();

    if (m->kind == CL_RPC_REQUEST) {
        serve(br, m);
        return;
    }
    for (int i = 0; i < PEER_CALLS_MAX; i++) {
        struct group_peer_call *c = calls[i];
        /* the id, and the node it asked: another node cannot answer for it */
        if (c && c->br == br && c->rpc_id == m->id && !strcmp(c->node, m->from) && !c->why[0]) {
            group_peer_call_finish(c, m->body, NULL);
            return;
        }
    }
    vms_debug(NULL, NULL, "group: a reply from %s to no call of ours (id %llu): dropped", m->from,
              (unsigned long long)m->id);
}

void group_peer_cpg_membership(struct bridge *br)
{
    struct group_peer_call **calls = group_peer_calls();
    int quorate = bridge_cluster_quorate(br);

    for (int i = 0; i < PEER_CALLS_MAX; i++) {
        struct group_peer_call *c = calls[i];
        if (!c || c->br != br || !c->node[0] || c->why[0])
            continue;
        /* failed at the next tick: never from inside Corosync's callback */
        if (!quorate)
            snprintf(c->why, sizeof(c->why),
                     "node %.64s: this host lost quorum (or Corosync) before it answered", c->node);
        else if (bridge_cluster_node_state(br, c->node) != 1)
            snprintf(c->why, sizeof(c->why),
                     "node %.64s: its bridge left the cluster's CPG group before it answered",
                     c->node);
    }
    bridge_groups_origins_check(br);
}

void group_peer_cpg_close(struct bridge *br)
{
    struct served **p = &serving;

    while (*p) {
        struct served *s = *p;
        if (s->br != br) {
            p = &s->next;
            continue;
        }
        *p = s->next;
        bridge_groups_forget(br, s);
        free(s);
    }
}
