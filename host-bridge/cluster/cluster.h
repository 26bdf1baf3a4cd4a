/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cluster.h — the bridge as a member of an HA cluster on Corosync.
 *
 * Each host's bridge joins the CPG group ([cluster] group, default "vmstate") and follows
 * votequorum. It acts on the cluster only while quorate and synced (every member's hello
 * seen since the last membership change): CPG alone does not enforce quorum. Decisions are
 * the cluster table's pure functions (table.h), so every bridge agrees without a leader:
 *   - failover: the VMs of a host that is gone (node down: at once; only its bridge gone:
 *     after bridge_grace) restart on their first alternate with a free slot, in priority
 *     order, from their latest checkpoint (a guest save or an HA checkpoint taken every
 *     ha_checkpoint_interval), else cold; the chosen host claims each VM with an ordered
 *     claim message (the first claim of a generation wins: restarted once, never twice);
 *   - never two instances: a VM starts only with its lease (lease.h), which its QEMU holds;
 *     a host that loses quorum (or its Corosync) kills its HA VMs at once (self-fence);
 *   - admission: powering on an HA VM beyond maxSlot is refused with the numbers.
 * Corosync is reconnected with backoff, like QEMU. The table is journaled (cluster_vms).
 */
#ifndef BRIDGE_CLUSTER_H
#define BRIDGE_CLUSTER_H

#include <json-c/json.h>

#include "managed.h"

struct bridge;
struct bridge_vm;
struct bridge_cluster;

/* Join the cluster if [cluster] enabled (connecting happens in the tick). 0 or -1. */
int bridge_cluster_open(struct bridge *br);
void bridge_cluster_close(struct bridge *br);

/* Reconnects, failover planning, lease retries, HA checkpoints. @now: monotonic seconds. */
void bridge_cluster_tick(struct bridge *br, double now);

/*
 * An admin's power-on of HA VM @vm: admission (quorum, slots), then an ordered claim; the
 * start runs when the claim is applied. 1 handled (@done is called), 0 not an HA VM (the
 * caller starts it as a plain managed VM).
 */
int bridge_cluster_start(struct bridge_vm *vm, bridge_lc_done_fn done, void *opaque);

/* Forget every pending @done for @opaque (its admin connection went away). */
void bridge_cluster_forget(struct bridge *br, void *opaque);

/* Managed VM @vm's journaled run state changed (vm/managed.c). No-op outside a cluster. */
void bridge_cluster_run_state(struct bridge_vm *vm, const char *state);

/* A guest save of @vm completed: snapshot @tag is its latest checkpoint. */
void bridge_cluster_checkpoint(struct bridge_vm *vm, const char *tag);

/*
 * Storage-fault moves. HA VM @vm paused on an I/O error and its escalation fired
 * (ioerror/): ask the table which hosts reach its storage (every bridge probes its HA VMs'
 * io_probe targets and publishes changes, reach.h). One of its hosts reaches it with a free
 * slot: a stateful VM migrates there still paused (@node is detached from the QEMU here,
 * which could not flush it; its state goes through the shared directory, the lease follows
 * its QEMU) and runs there; a stateless one (@stateless) is
 * stopped here and started there from its template. Otherwise it stays paused here and the
 * answer says why ("this host's path failed" vs "the store failed everywhere"); the
 * decision is retried while it stays paused. Returns the decision for the admin event
 * ({"decision","target","why"}; the caller owns it), NULL when @vm is no HA VM in a cluster.
 */
json_object *bridge_cluster_storage_escalated(struct bridge_vm *vm, int stateless,
                                              const char *node);
/* @vm's storage answers this host's probe again, or it runs again: no move. */
void bridge_cluster_storage_resumed(struct bridge_vm *vm);
/* 1 while @vm's state is being sent to another host: its QEMU here must not run it. */
int bridge_cluster_storage_moving(struct bridge_vm *vm);

/* ---- for the groups' transport across hosts (groups/peer-cpg.c, rpc.h) ---- */

/* This host's node name, or NULL outside a cluster. */
const char *bridge_cluster_node(struct bridge *br);
/* 1 when this bridge is connected to Corosync and its host is quorate. */
int bridge_cluster_quorate(struct bridge *br);
/* Node @name: 1 its bridge is in the CPG group now, 0 known (its bridge said hello once) but
 * gone now, -1 unknown (or no cluster). */
int bridge_cluster_node_state(struct bridge *br, const char *name);
/* Multicast @msg on the CPG group (agreed order; kept and retried when Corosync says "try
 * again"). 0, or -1 when not connected or not quorate (CPG alone does not enforce quorum). */
int bridge_cluster_send(struct bridge *br, const char *msg);

/* Members, quorum, slots and every HA VM's placement, for vmstate-admin cluster. */
json_object *bridge_cluster_status(struct bridge *br);

#endif
