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

/* Members, quorum, slots and every HA VM's placement, for vmstate-admin cluster. */
json_object *bridge_cluster_status(struct bridge *br);

#endif
