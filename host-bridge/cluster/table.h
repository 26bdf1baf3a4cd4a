/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * table.h — the cluster table: where every HA VM runs, and the decisions every bridge
 * computes from it.
 *
 * Every bridge applies the same messages (delivered by Corosync CPG in one total order)
 * to its copy of the table, so every bridge reaches the same table. Decisions (where a VM
 * whose host is gone restarts, whether a power-on is admitted) are pure functions of the
 * table and the membership: no leader, no vote of our own. Nothing here does I/O; the
 * cluster room (cluster.c) feeds it messages and membership and acts on its answers.
 *
 * Messages (JSON objects, "t" names the kind):
 *   hello  {"t":"hello","node":N,"vcpus":C,"memory":B,"run":[{"vm":V,"gen":G,"ck":S}..]}
 *          a bridge's capacity and the HA VMs it runs now (facts: their QEMU holds the
 *          lease); sent by every member after each membership change
 *   claim  {"t":"claim","vm":V,"node":N,"gen":G}   N will start V; applies only if G is
 *          V's current generation (the first claim wins, later ones are stale)
 *   state  {"t":"state","vm":V,"node":N,"state":"running"|"stopped","ck":S}   N's VM V
 *   ck     {"t":"ck","vm":V,"node":N,"ck":S}       V's latest checkpoint (a snapshot tag)
 */
#ifndef BRIDGE_CLUSTER_TABLE_H
#define BRIDGE_CLUSTER_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "bridge-config.h"

#define CL_HOSTS_MAX 32
#define CL_NAME_MAX  BRIDGE_NODE_NAME_MAX
#define CL_CK_MAX    64
#define CL_MSG_MAX   8192 /* a message on the CPG group (a hello of 256 VMs fits) */

enum cl_vm_state { CL_VM_STOPPED = 0, CL_VM_STARTING, CL_VM_RUNNING };

struct cl_host {
    char name[CL_NAME_MAX];
    uint32_t nodeid; /* Corosync node id its bridge speaks from */
    int member;      /* its bridge is in the CPG group now */
    int hello_seen;  /* a hello arrived since the last membership change */
    int node_down;   /* left with its node (crash, partition), not only its bridge */
    double left_at;  /* monotonic time it left (0: never seen leaving) */
    unsigned vcpus;  /* capacity it offers HA VMs */
    uint64_t memory;
};

struct cl_vm {
    /* from the VM's definition (the same on every host) */
    char name[CL_NAME_MAX];
    unsigned priority, vcpus;
    uint64_t memory;
    char hosts[BRIDGE_HA_HOSTS_MAX][CL_NAME_MAX]; /* preferred host, then alternates */
    unsigned n_hosts;
    /* replicated */
    char host[CL_NAME_MAX]; /* where it runs or starts ("" = nowhere) */
    enum cl_vm_state state;
    uint64_t gen; /* + 1 at every applied claim */
    char ck[CL_CK_MAX];
};

struct cl_table {
    struct cl_host hosts[CL_HOSTS_MAX];
    size_t n_hosts;
    struct cl_vm *vms; /* one per HA VM of the configuration */
    size_t n_vms;
    unsigned tolerate; /* host failures admission must survive */
};

/* What applying a message changed, for the caller to act on. */
struct cl_applied {
    int claimed;            /* a claim applied: vm started on host */
    int vm;                 /* index of the VM concerned, -1 for none */
    char host[CL_NAME_MAX]; /* the claimed or reporting host */
};

/* Admission figures (the seed's slot policy). */
struct cl_slots {
    unsigned box_vcpus; /* boxCapacity: the largest per-VM needs */
    uint64_t box_memory;
    unsigned slots[CL_HOSTS_MAX]; /* slotCount per host (members with a hello) */
    unsigned total, max_slot;     /* maxSlot: total minus the @tolerate largest hosts */
    unsigned admitted;            /* HA VMs starting or running (on any host) */
};

/* One placement decision: VM @vm restarts on host @host (indices into the table). */
struct cl_move {
    int vm, host;
};

/* Set up @t for the HA VMs of @cfg (no hosts yet). 0 or -1 (out of memory). */
int cl_table_init(struct cl_table *t, const struct bridge_config *cfg);
void cl_table_free(struct cl_table *t);

/* The VM or host named @name: its index, or -1. */
int cl_table_vm(const struct cl_table *t, const char *name);
int cl_table_host(const struct cl_table *t, const char *name);
/* The host entry for Corosync node @nodeid, or -1. */
int cl_table_host_by_nodeid(const struct cl_table *t, uint32_t nodeid);

/*
 * A membership change: @members (@n node ids) are the bridges in the group now; @left
 * those that left, with @node_down[i] 1 when their node went too (nodedown) rather than
 * only their bridge (procdown, leave). Hellos seen are reset: plan only after each member
 * said hello again. @now: monotonic seconds.
 */
void cl_table_membership(struct cl_table *t, const uint32_t *members, size_t n,
                         const uint32_t *left, const int *node_down, size_t n_left, double now);

/*
 * Apply one message @msg (@len bytes) from @nodeid. Unknown VMs, stale claims and
 * malformed messages change nothing (0 with @why). 1 when applied, @out says what.
 */
int cl_table_apply(struct cl_table *t, uint32_t nodeid, const char *msg, size_t len,
                   struct cl_applied *out, char *why, size_t whylen);

/* 1 when every member's hello arrived since the last membership change. */
int cl_table_synced(const struct cl_table *t);

/* Whether host @h counts as gone for its VMs at @now (its bridge left more than @grace
 * seconds ago, or its node went down). */
int cl_table_host_gone(const struct cl_table *t, int h, double now, double grace);

/* Admission figures for the current members. */
void cl_table_slots(const struct cl_table *t, struct cl_slots *s);

/*
 * Where the VMs of gone hosts restart: in priority order (then name), each on the first
 * of its hosts that is a member with a free slot. Fills up to @max moves; returns how
 * many. VMs that do not fit are not in @moves (they wait; cl_table_waiting counts them).
 */
size_t cl_table_plan(const struct cl_table *t, double now, double grace, struct cl_move *moves,
                     size_t max);

/* 1 when VM @v runs (or starts) on a gone host and has no place yet at @now. */
int cl_table_waiting(const struct cl_table *t, int v, double now, double grace);

/* Build messages (NUL-terminated JSON in @buf). Each returns its length, or -1 if it does
 * not fit. @run: the VMs this host runs (indices), @n_run of them. */
int cl_msg_hello(char *buf, size_t len, const char *node, unsigned vcpus, uint64_t memory,
                 const struct cl_table *t, const int *run, size_t n_run);
int cl_msg_claim(char *buf, size_t len, const char *vm, const char *node, uint64_t gen);
int cl_msg_state(char *buf, size_t len, const char *vm, const char *node, const char *state,
                 const char *ck);
int cl_msg_ck(char *buf, size_t len, const char *vm, const char *node, const char *ck);

const char *cl_vm_state_name(enum cl_vm_state s);

#endif
