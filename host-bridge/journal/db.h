/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * db.h — the bridge's durable state: one SQLite file in WAL mode.
 *
 * Tables (see migrations[] in db.c; bridge_db_schema_latest() is the newest version):
 *   vms        (name, epoch, next_seq, current_state, created)
 *   requests   (vm, id, op, app_id, principal, app_data, label, state_id, bytes,
 *               epoch, status accepted|running|done|refused, result, message,
 *               accepted_at, started_at, done_at)
 *   states     (vm, id, label, request_id, app_id, created, parent)
 *   state_pending (vm, state_id, request_id): requests pending inside a state
 *   events     (vm, seq, epoch, request_id, op, status, reason, acked, superseded,
 *               created, payload = the marshalled Event)
 *   principals (name, hash = crypto_pwhash_str, created)
 *   rights     (principal, vm, op, uid; op "all" grants every operation; uid -1: any guest
 *               uid, else only requests made by that guest uid)
 * The issue-14 migration adds requests.uid (-1 unknown) and requests.followups, states.principal
 * (the owner) and states.status ('ok', 'lost', 'foreign').
 * Every query about states, requests and events takes the VM name: nothing
 * reads across VMs.
 *
 * All functions return -1 on an SQLite error (logged), unless said otherwise.
 */
#ifndef BRIDGE_DB_H
#define BRIDGE_DB_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "vms-log.h"
#include "vms-proto.h"

/* How long a statement waits for another process's lock before failing. */
#define BRIDGE_DB_BUSY_MS 5000

enum bridge_req_status {
    BRIDGE_REQ_ACCEPTED = 0, /* journaled, queued, not started */
    BRIDGE_REQ_RUNNING,      /* handed to the backend */
    BRIDGE_REQ_DONE,         /* finished (result = vms_status) */
    BRIDGE_REQ_REFUSED,      /* refused after authentication (denied, quota, not-found) */
};

#define BRIDGE_DB_STMT_CACHE 64
/* WAL pages after which a commit asks for a checkpoint (SQLite's own default) */
#define BRIDGE_DB_CHECKPOINT_PAGES 1000

struct bridge_db {
    int last_failure_full; /* the last failed statement failed for lack of space */
    /* a guest can make writes fail again and again (disk full): bounded error lines */
    struct vms_log_limit log_errors;
    sqlite3 *h;
    /*
     * Prepared statements, kept for the life of the connection and keyed by
     * their SQL text's address (db.c passes string literals). Preparing on
     * every call was ~46% of the bridge's instructions per request.
     */
    struct {
        const char *sql;
        sqlite3_stmt *st;
    } stmts[BRIDGE_DB_STMT_CACHE];
    unsigned n_stmts;
    unsigned relaxed;                    /* depth of bridge_db_relaxed_begin() scopes */
    int deferred;                        /* relaxed commits wait for bridge_db_barrier() */
    int reads;                           /* bridge_db_reads_begin()'s transaction is open */
    struct bridge_db_checkpointer *ckpt; /* WAL checkpoints off the loop (NULL: SQLite's own) */
};

/* One journaled request. app_data is heap-owned: bridge_request_clear(). */
struct bridge_request {
    char vm[VMS_STR_MAX + 1];
    char id[VMS_REQUEST_ID_LEN + 1];
    enum vms_op op;
    char app_id[VMS_STR_MAX + 1];
    char principal[VMS_STR_MAX + 1];
    uint8_t *app_data;
    size_t app_data_len;
    char label[VMS_STR_MAX + 1];
    char state_id[VMS_STR_MAX + 1]; /* save: the id the bridge chose; restore/delete: the target */
    uint64_t bytes;
    uint64_t epoch; /* epoch when accepted */
    enum bridge_req_status status;
    uint32_t result;
    char message[VMS_STR_MAX + 1];
    int64_t uid;                     /* the guest uid that asked (-1: not given) */
    char followups[VMS_STR_MAX + 1]; /* restore: "op=arg op=arg" run inside it, "" if none */
    char mode[16];                   /* set-memory: "offline", or "" (online) */
    /* not journaled: bridge_db_rights() for the request's uid, read once when it is
     * authenticated and reused by its judge and its answer in the same read transaction;
     * 0 = not read */
    int64_t ops_allowed;
};

void bridge_request_clear(struct bridge_request *r);

/*
 * Open (creating if needed) the database at @path, enable WAL, and migrate
 * the schema to bridge_db_schema_latest(), one transaction per step. The file
 * is created 0600 (its -wal and -shm files follow its mode). Refuses, with an
 * @err naming the file and what to do, and without writing to it: a newer
 * schema, a file that is not a database or fails SQLite's quick_check, and a
 * database another process keeps write-locked. Returns 0 or -1.
 */
int bridge_db_open(struct bridge_db *db, const char *path, char *err, size_t errlen);
void bridge_db_close(struct bridge_db *db);

/*
 * Move WAL checkpoints off the caller's thread (the daemon's event loop). SQLite's
 * automatic checkpoint runs inside the commit that crosses BRIDGE_DB_CHECKPOINT_PAGES:
 * copying ~4 MiB into the database file and fsyncing it, on the loop, stalling every VM.
 * Instead the commit's WAL hook wakes a thread that runs a PASSIVE checkpoint on a second
 * connection to the same file (it never blocks the loop's writer; frames a reader still
 * needs wait for the next one). Call after the process's signal mask is set (the thread
 * inherits it). Returns 0, or -1 with SQLite's automatic checkpoint left in place.
 * bridge_db_close() stops the thread (after a last checkpoint).
 */
int bridge_db_checkpointer_start(struct bridge_db *db);
/* Checkpoints the thread has run (tests, logs). */
unsigned long bridge_db_checkpoints_done(const struct bridge_db *db);
int bridge_db_schema_version(struct bridge_db *db);

/* The schema version this bridge writes (the number of migrations it knows). */
int bridge_db_schema_latest(void);

int bridge_db_begin(struct bridge_db *db);

/*
 * Reads until bridge_db_reads_end() share one read transaction: the WAL is locked once for
 * them all, not once per statement (two fcntl calls each, here most of a hostinfo's system
 * calls). Anything in db.c that writes ends it first (a statement that writes,
 * bridge_db_begin(), a change of durability level), so nothing is written from its
 * snapshot; a caller ends it before it calls code that writes through its own statements.
 * Does nothing inside a transaction.
 */
void bridge_db_reads_begin(struct bridge_db *db);
void bridge_db_reads_end(struct bridge_db *db);
/* 1 if the last failure was the disk (or the database's size limit) being full. */
int bridge_db_full(struct bridge_db *db);
int bridge_db_commit(struct bridge_db *db);
void bridge_db_rollback(struct bridge_db *db);

/*
 * Durability. The journal commits with synchronous=FULL: a commit has reached
 * the disk (the WAL fsynced) when it returns. Between bridge_db_relaxed_begin()
 * and bridge_db_relaxed_end() commits use synchronous=NORMAL instead: no fsync,
 * safe against a bridge crash (the WAL is in the kernel's page cache) but not
 * against the host losing power, until the next FULL commit or checkpoint
 * (which makes every earlier commit durable too: one fsync of the WAL).
 * For writes whose loss costs nothing but a repeat: read-only requests
 * (list, hostinfo: the guest asks again, duplicates are recognised either
 * way), acks (an unacked event is resent and the guest ignores the copy).
 * Scopes nest; call both outside a transaction (SQLite cannot change the
 * level inside one). Each switch is one PRAGMA, no I/O.
 */
void bridge_db_relaxed_begin(struct bridge_db *db);
void bridge_db_relaxed_end(struct bridge_db *db);

/*
 * Deferred durability, for writes that must reach the disk before the bridge acts on them
 * but may share one fsync: commit them relaxed, call bridge_db_defer(), and
 * bridge_db_barrier() before acting (a Reply{ok}, a hypervisor command). The barrier fsyncs
 * the WAL once for every commit before it (nothing if none was deferred since the last one).
 * Returns 0, or -1 (the fsync failed: the deferred commits stay deferred; try again later).
 */
void bridge_db_defer(struct bridge_db *db);
int bridge_db_barrier(struct bridge_db *db);

/* ---- VMs ---- */
struct bridge_db_vm {
    uint64_t epoch;
    uint64_t next_seq;
    char current_state[VMS_STR_MAX + 1]; /* the state the VM runs from, "" if none */
};
/* Create the VM's row (epoch 1) if missing, and read it into @out (may be NULL). */
int bridge_db_vm_ensure(struct bridge_db *db, const char *vm, struct bridge_db_vm *out);
int bridge_db_vm_set_current_state(struct bridge_db *db, const char *vm, const char *state_id);
/*
 * Start a new timeline: epoch + 1, and every unacked event of older epochs
 * marked superseded (never resent). Sets *epoch to the new epoch.
 */
int bridge_db_vm_new_epoch(struct bridge_db *db, const char *vm, uint64_t *epoch);

/* ---- requests ---- */
/* 1 and @out filled if (@vm, @id) is journaled, 0 if not. */
int bridge_db_request_find(struct bridge_db *db, const char *vm, const char *id,
                           struct bridge_request *out);
/* Journal @r (its status as given). Durable when this returns 0 outside a transaction. */
int bridge_db_request_insert(struct bridge_db *db, const struct bridge_request *r);
int bridge_db_request_set_status(struct bridge_db *db, const char *vm, const char *id,
                                 enum bridge_req_status status, uint32_t result,
                                 const char *message);
/* Requests in @status for @vm, oldest first; @fn gets each (cleared after). */
int bridge_db_requests_in_status(struct bridge_db *db, const char *vm,
                                 enum bridge_req_status status,
                                 void (*fn)(void *opaque, struct bridge_request *r), void *opaque);
/* Accepted or running requests of @vm. */
int bridge_db_count_pending(struct bridge_db *db, const char *vm);
/* Bytes of app data kept for @vm. */
int64_t bridge_db_app_data_bytes(struct bridge_db *db, const char *vm);
/* What @vm holds against its quotas, in one statement (hostinfo answers with all three). */
struct bridge_vm_usage {
    uint64_t states;         /* bridge_db_state_count() */
    uint64_t pending;        /* bridge_db_count_pending() */
    uint64_t app_data_bytes; /* bridge_db_app_data_bytes() */
};
/* Fills @u; returns 0, or -1 (no such VM, or the database failed). */
int bridge_db_vm_usage(struct bridge_db *db, const char *vm, struct bridge_vm_usage *u);
/* Requests of @vm from guest uid @uid still accepted or running; -1 on error. */
int bridge_db_count_pending_uid(struct bridge_db *db, const char *vm, int64_t uid);
/* Everything @vm has made the bridge store, in bytes (all tables); -1 on error. */
int64_t bridge_db_journal_bytes(struct bridge_db *db, const char *vm);
/* Forget the app data of a delivered request no state refers to (quota accounting). */
int bridge_db_request_release_app_data(struct bridge_db *db, const char *vm, const char *id);
/*
 * Delete @vm's finished requests (done or refused before @cutoff, unix
 * seconds) whose events are all acknowledged or superseded, with their
 * events — except those a restore may still need: the request that created a
 * state, one pending inside a state, and any accepted within
 * BRIDGE_DB_PRUNE_MARGIN seconds of a state's creation (the restored guest
 * may send it again; the journal is what recognises it). Returns the number
 * of requests deleted, or -1 (nothing deleted).
 */
#define BRIDGE_DB_PRUNE_MARGIN 86400
int bridge_db_prune(struct bridge_db *db, const char *vm, int64_t cutoff);

/* ---- states catalogue ---- */
int bridge_db_state_insert(struct bridge_db *db, const char *vm, const struct vms_state_info *st,
                           const char *request_id);
/* 1 and @out filled (may be NULL) if @vm has state @id, 0 if not. */
int bridge_db_state_find(struct bridge_db *db, const char *vm, const char *id,
                         struct vms_state_info *out);
int bridge_db_state_delete(struct bridge_db *db, const char *vm, const char *id);
/* Who owns state @id and where it stands. */
struct bridge_state_owner {
    char app_id[VMS_STR_MAX + 1];    /* the creating app ("" for a foreign snapshot) */
    char principal[VMS_STR_MAX + 1]; /* the principal that saved it ("" if unknown) */
    char status[8];                  /* "ok", "lost" (gone from the hypervisor), "foreign" */
};
/* 1 and @out filled if @vm has state @id, 0 if not. */
int bridge_db_state_owner(struct bridge_db *db, const char *vm, const char *id,
                          struct bridge_state_owner *out);
/* Set state @id's owning @principal (when not NULL), else its @status. Returns rows changed. */
int bridge_db_state_set(struct bridge_db *db, const char *vm, const char *id, const char *principal,
                        const char *status);
/* Ids and statuses of @vm's states, oldest first; returns how many (<= @max) or -1. */
int bridge_db_state_ids(struct bridge_db *db, const char *vm, char (*ids)[VMS_STR_MAX + 1],
                        char (*statuses)[8], int max);
int bridge_db_state_count(struct bridge_db *db, const char *vm);
/* Append @vm's states (newest last, at most VMS_STATES_MAX) to @m. */
int bridge_db_state_list(struct bridge_db *db, const char *vm, struct vms_msg *m);
/*
 * Record which requests are pending inside state @state_id now: those of @vm
 * accepted or running, and those done whose event in the current epoch is
 * not acked yet. Requests recorded before stay (recording again adds only the
 * new ones). Returns how many were added, or -1.
 */
int bridge_db_state_pending_record(struct bridge_db *db, const char *vm, const char *state_id);
/* Request ids pending inside @state_id; returns how many were written (<= @max). */
int bridge_db_state_pending_list(struct bridge_db *db, const char *vm, const char *state_id,
                                 char (*ids)[VMS_REQUEST_ID_LEN + 1], int max);

/* ---- events ---- */
/*
 * Journal @ev (type Event) as unacked in @vm's current epoch with the next
 * seq; sets ev->epoch and ev->seq. Returns 0 or -1.
 */
int bridge_db_event_add(struct bridge_db *db, const char *vm, struct vms_msg *ev);
/* Mark the event acked. Returns 1 if an unacked event matched, 0 if none. */
int bridge_db_event_ack(struct bridge_db *db, const char *vm, uint64_t epoch, uint64_t seq,
                        const char *request_id);
/*
 * Unacked, unsuperseded events of @vm in @epoch with @after_seq < seq <=
 * @until_seq, in seq order, at most @max: @fn gets each decoded and may stop
 * the walk by returning < 0 (that event does not count). Returns how many
 * events @fn took, or -1.
 */
int bridge_db_events_unacked(struct bridge_db *db, const char *vm, uint64_t epoch,
                             uint64_t after_seq, uint64_t until_seq, int max,
                             int (*fn)(void *opaque, struct vms_msg *ev), void *opaque);
/* The latest event of request @id (decoded into @out, cleared first). 1 found, 0 none. */
int bridge_db_event_latest(struct bridge_db *db, const char *vm, const char *id,
                           struct vms_msg *out);
/* Count of events for (vm, request id) in @epoch (tests, duplicate handling). */
int bridge_db_event_count(struct bridge_db *db, const char *vm, const char *id, uint64_t epoch);

/* ---- principals and rights ---- */
int bridge_db_principal_add(struct bridge_db *db, const char *name, const char *hash);
/* Returns 1 if removed (and its rights), 0 if it did not exist. */
int bridge_db_principal_remove(struct bridge_db *db, const char *name);
/* 1 and @hash filled if @name exists, 0 if not. */
int bridge_db_principal_hash(struct bridge_db *db, const char *name, char *hash, size_t len);
/* @op is an operation name or "all". */
int bridge_db_right_grant(struct bridge_db *db, const char *principal, const char *vm,
                          const char *op);
int bridge_db_right_revoke(struct bridge_db *db, const char *principal, const char *vm,
                           const char *op);
/* Grant @op limited to guest uid @uid (-1: any uid). */
int bridge_db_right_grant_uid(struct bridge_db *db, const char *principal, const char *vm,
                              const char *op, int64_t uid);
/* 1 if @principal may do @op on @vm for guest uid @uid (a right naming that uid or none; @uid
 * -1 = unknown matches only rights without a uid), 0 if not. */
int bridge_db_right_check_uid(struct bridge_db *db, const char *principal, const char *vm,
                              const char *op, int64_t uid);
/*
 * The operations @principal may request on @vm, in one query, as bits (1 << op) of enum vms_op
 * ("all" grants every operation): *@for_uid those bridge_db_right_check_uid() allows guest uid
 * @uid, with BRIDGE_OPS_READ set (so a mask of 0 means "not read"); *@any_uid (may be NULL)
 * those it allows for some uid (a right for the operation or "all", naming any uid or none).
 * Returns 0, or -1.
 */
#define BRIDGE_OPS_READ ((int64_t)1 << VMS_OP_UNKNOWN) /* never an operation's bit */
int bridge_db_rights(struct bridge_db *db, const char *principal, const char *vm, int64_t uid,
                     int64_t *for_uid, int64_t *any_uid);
/* 1 if a mask of bridge_db_rights() allows @op, 0 if not. */
static inline int bridge_ops_allow(int64_t mask, enum vms_op op)
{
    return op != VMS_OP_UNKNOWN && (mask & ((int64_t)1 << op)) != 0;
}

#endif
