/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * rpc.h — one bridge asking another over the cluster's CPG group (the groups' transport
 * across hosts, groups/peer-cpg.c). Pure: no I/O.
 *
 * Messages (JSON objects on the CPG group, beside the table's, table.h):
 *   rpc        {"t":"rpc","id":I,"from":N,"to":M,"body":{"cmd":C,...}}
 *              N asks M; C is one of group-prepare, group-commit, group-abort (nothing else
 *              is ever served from another host)
 *   rpc-reply  {"t":"rpc-reply","id":I,"from":M,"to":N,"body":{"ok":true|false,...}}
 *              M's answer to N's request I
 * Every member receives every message (CPG multicasts); only "to" acts on it. "from" must be
 * the name of the node the message came from (the caller checks it against the table).
 * Every bridge writes "t" first: a message is an rpc exactly when it starts with {"t":"rpc
 * (the rest goes to the table), so the table's messages are parsed once.
 */
#ifndef BRIDGE_CLUSTER_RPC_H
#define BRIDGE_CLUSTER_RPC_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "table.h"

#define CL_RPC_MAX   (64 * 1024) /* an rpc message, bytes (a commit's answer for 16 VMs fits) */
#define CL_RPC_DEPTH 8           /* JSON nesting of an rpc message */

enum cl_rpc_kind { CL_RPC_REQUEST = 1, CL_RPC_REPLY };

struct cl_rpc {
    enum cl_rpc_kind kind;
    uint64_t id; /* 1..2^63-1 */
    char from[CL_NAME_MAX], to[CL_NAME_MAX];
    json_object *body; /* owned: json_object_put() it (cl_rpc_clear) */
};

/*
 * Parse @msg (@len bytes). 0: not an rpc message (the table's); 1: a valid rpc in @out
 * (clear it with cl_rpc_clear); -1: an rpc message that is malformed (@why; @out empty):
 * more than CL_RPC_MAX bytes or CL_RPC_DEPTH levels, a key missing, unknown or of the
 * wrong type, a node name that is not 1..63 of [A-Za-z0-9._:@-], an id out of range, a
 * request whose "cmd" is not one of the three, a reply without a boolean "ok".
 */
int cl_rpc_parse(const char *msg, size_t len, struct cl_rpc *out, char *why, size_t whylen);
void cl_rpc_clear(struct cl_rpc *m);

/* The message for @kind, @id, @from, @to, @body (not consumed): a malloc'd string, or NULL
 * when it would not fit CL_RPC_MAX (or no memory). */
char *cl_rpc_format(enum cl_rpc_kind kind, uint64_t id, const char *from, const char *to,
                    json_object *body);

/* 1 if @cmd may be asked of a bridge from another host. */
int cl_rpc_cmd_allowed(const char *cmd);

#endif
