/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * clone.h — group clone (issue 16): a suspended group's checkpoints and disks copied into a
 * new group of new managed VMs, resumed (optionally) at their own T alongside the
 * originals, which stay suspended.
 *
 *   group-clone {"group","new","at_ns"?,"policy"?}   (the control instance)
 *     sends group-clone-local to every bridge of the group (group_peer_send, peer.h), makes
 *     group NEW of the clones in its journal (history "clone" in both groups), then, with
 *     at_ns, resumes NEW through the ordinary two-phase group-resume.
 *   group-clone-local {"group","new","vms":[...]}     (each bridge, for its own VMs)
 *     every VM must be suspended with a valid checkpoint and not busy. Each gets a clone
 *     identity (clone-id.h); its disks, checkpoint state file and RAM file are copied
 *     (FICLONE reflink where the file system shares extents, else copy_file_range), the
 *     tier is charged the clone's reservation, and one journal transaction records the
 *     clone (table clones), its managed row (suspended) and checkpoint (valid). The
 *     clone then is a managed VM like the others (status, resume, stop, ...), rebuilt
 *     from the journal at every bridge start (bridge_clones_load).
 * The copies are made inside the loop (the bridge does nothing else meanwhile): a reflink
 * is instant, a full copy costs the file's size at the disk's speed.
 */
#ifndef BRIDGE_CLONE_H
#define BRIDGE_CLONE_H

#include <json-c/json.h>

#include "managed.h"

struct bridge;
struct bridge_config;

/* Before any VM is set up: give @cfg's VM array room for clones (BRIDGE_VMS_MAX), so that
 * a clone added later moves no VM's configuration. 0, or -1 (no memory). */
int bridge_clones_reserve(struct bridge_config *cfg);

/* After the configured VMs: set up @br's clone state and every clone the journal records
 * (a clone whose original left the configuration is skipped, with an error logged). The
 * caller allocated br->vms for BRIDGE_VMS_MAX. 0, or -1. */
int bridge_clones_load(struct bridge *br);
void bridge_clones_free(struct bridge *br);

/* group-clone and group-clone-local: 1 when @cmd is one of them (@done is then called
 * exactly once, maybe later), 0 when not. */
int bridge_clones_command(struct bridge *br, const char *cmd, json_object *req,
                          bridge_lc_done_fn done, void *opaque);

/* Forget every pending @done for @opaque (its admin connection went away). */
void bridge_clones_forget(struct bridge *br, void *opaque);

/* Copy @from to @to (created, 0600, not there before): FICLONE when the file system can,
 * else copy_file_range; fsync'ed. @reflinked: 1 if it was a reflink. 0, or -1 with errno. */
int clone_copy_file(const char *from, const char *to, int *reflinked);

#endif
