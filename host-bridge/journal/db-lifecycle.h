/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * db-lifecycle.h — the journal's part of managed VMs: run state and QEMU
 * process, the VM's one reservation in a tier, checkpoints (suspends), moves
 * between tiers and files left to delete. Tables in db.c's migrations:
 *   managed      (vm, run_state, pid, pid_start, ram_file, res_tier, res_bytes, updated)
 *   checkpoints  (id, vm, tier, zero_copy, state_file, ram_file, bytes, created,
 *                 last_used, pinned, phase writing|valid|loading|consumed|discarded,
 *                 fp = fingerprint of the RAM file at suspend, resume_at)
 *   tier_moves   (checkpoint, to_tier, new_state_file, new_ram_file, started)
 *   tier_garbage (path): files whose deletion must survive a crash
 * A tier's usage is the sum of the reservations in it: a VM's reservation is
 * where its RAM file or checkpoint lives, and moves with it.
 * Lifecycle operations are rare (seconds apart): statements are prepared per call.
 * All functions return -1 on an SQLite error (logged).
 */
#ifndef BRIDGE_DB_LIFECYCLE_H
#define BRIDGE_DB_LIFECYCLE_H

#include <stdint.h>

#include "bridge-config.h"
#include "db.h"

struct bridge_db_managed {
    char vm[BRIDGE_VM_NAME_MAX];
    char run_state[16]; /* stopped, starting, running, suspending, suspended, resuming, stopping */
    int64_t pid, pid_start; /* QEMU's pid and its start time (/proc/PID/stat field 22) */
    char ram_file[BRIDGE_PATH_MAX];
    char res_tier[BRIDGE_TIER_NAME_MAX];
    uint64_t res_bytes;
};

struct bridge_db_checkpoint {
    char id[40];
    char vm[BRIDGE_VM_NAME_MAX];
    char tier[BRIDGE_TIER_NAME_MAX];
    int zero_copy;
    char state_file[BRIDGE_PATH_MAX];
    char ram_file[BRIDGE_PATH_MAX]; /* zero-copy: the RAM file that goes with it */
    uint64_t bytes;
    int64_t created, last_used;
    int pinned;
    char phase[12];
    char fp[96];
    int64_t resume_at; /* scheduled resume (unix seconds), 0 = none */
};

struct bridge_db_move {
    char checkpoint[40];
    char to_tier[BRIDGE_TIER_NAME_MAX];
    char new_state_file[BRIDGE_PATH_MAX];
    char new_ram_file[BRIDGE_PATH_MAX];
};

/* @vm's row (a "stopped" one is created if there is none). */
int bridge_db_managed_get(struct bridge_db *db, const char *vm, struct bridge_db_managed *out);
int bridge_db_managed_put(struct bridge_db *db, const struct bridge_db_managed *m);

/* Bytes reserved in @tier by every VM (@except: a VM not to count, or NULL). */
int64_t bridge_db_tier_reserved(struct bridge_db *db, const char *tier, const char *except);

int bridge_db_checkpoint_put(struct bridge_db *db, const struct bridge_db_checkpoint *c);
/* 1 found, 0 not found. */
int bridge_db_checkpoint_find(struct bridge_db *db, const char *id,
                              struct bridge_db_checkpoint *out);
/* @vm's newest checkpoint that is writing, valid or loading: 1 found, 0 none. */
int bridge_db_checkpoint_current(struct bridge_db *db, const char *vm,
                                 struct bridge_db_checkpoint *out);
/* The least recently used valid, unpinned checkpoint in @tier: 1 found, 0 none. */
int bridge_db_checkpoint_lru(struct bridge_db *db, const char *tier,
                             struct bridge_db_checkpoint *out);
/* Call @fn for every checkpoint in phase @phase ("" = every phase not consumed/discarded). */
int bridge_db_checkpoints_each(struct bridge_db *db, const char *phase,
                               void (*fn)(void *opaque, const struct bridge_db_checkpoint *c),
                               void *opaque);

int bridge_db_move_put(struct bridge_db *db, const struct bridge_db_move *m);
/* 1 found, 0 none. */
int bridge_db_move_get(struct bridge_db *db, const char *checkpoint, struct bridge_db_move *out);
int bridge_db_move_delete(struct bridge_db *db, const char *checkpoint);

int bridge_db_garbage_add(struct bridge_db *db, const char *path);
/* Delete each listed file (a missing one is fine) and forget it. Returns files removed. */
int bridge_db_garbage_collect(struct bridge_db *db);

/* ---- the cluster table (cluster/table.h): this bridge's copy, kept across restarts ---- */

struct bridge_db_cluster_vm {
    char vm[BRIDGE_VM_NAME_MAX];
    char host[BRIDGE_NODE_NAME_MAX];
    char state[16];
    uint64_t gen;
    char ck[64];
};

/* Insert or replace @row. */
int bridge_db_cluster_put(struct bridge_db *db, const struct bridge_db_cluster_vm *row);
/* @row->vm's row: 1 found, 0 none. */
int bridge_db_cluster_get(struct bridge_db *db, struct bridge_db_cluster_vm *row);

#endif
