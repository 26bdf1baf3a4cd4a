/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * db.c — see db.h.
 */
#include "config.h"
#include "db.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vms-log.h"
#include "worker.h"

/*
 * Bytes a row costs its VM in the journal (its columns plus a fixed overhead),
 * and the app data it holds (events: only until acknowledged). Triggers keep
 * vms.journal_bytes and vms.app_data_bytes up to date on every insert,
 * update and delete, so no write path can forget to count.
 */
#define REQ_BYTES(R)                                                                               \
    "(64 + length(" R ".id) + length(" R ".op) + length(" R ".app_id) + length(" R                 \
    ".principal) + coalesce(length(" R ".app_data), 0) + length(" R ".label) + length(" R          \
    ".state_id) + length(" R ".message))"
#define REQ_DATA(R) "coalesce(length(" R ".app_data), 0)"
#define EV_BYTES(E)                                                                                \
    "(64 + length(" E ".payload) + length(" E ".request_id) + length(" E ".op) + length(" E        \
    ".reason))"
#define EV_DATA(E) "(CASE WHEN " E ".acked = 0 THEN " E ".data_bytes ELSE 0 END)"
#define ST_BYTES(S)                                                                                \
    "(64 + length(" S ".id) + length(" S ".label) + length(" S ".request_id) + length(" S          \
    ".app_id) + length(" S ".parent))"
#define SP_BYTES(P) "(32 + length(" P ".state_id) + length(" P ".request_id))"
#define ACCOUNT(TABLE, BYTES, DATA)                                                                \
    "CREATE TRIGGER " TABLE "_bytes_ins AFTER INSERT ON " TABLE " BEGIN UPDATE vms SET "           \
    "journal_bytes = journal_bytes + " BYTES("NEW") ", app_data_bytes = app_data_bytes + " DATA(   \
        "NEW") " WHERE name = NEW.vm; END;"                                                        \
               "CREATE TRIGGER " TABLE "_bytes_del AFTER DELETE ON " TABLE                         \
               " BEGIN UPDATE vms SET "                                                            \
               "journal_bytes = journal_bytes - " BYTES(                                           \
                   "OLD") ", app_data_bytes = "                                                    \
                          "app_data_bytes - " DATA(                                                \
                              "OLD") " WHERE name = OLD.vm; "                                      \
                                     "END;"                                                        \
                                     "CREATE TRIGGER " TABLE "_bytes_upd AFTER "                   \
                                     "UPDATE ON " TABLE " BEGIN UPDATE vms SET "                   \
                                     "journal_bytes = "                                            \
                                     "journal_bytes "                                              \
                                     "+ " BYTES(                                                   \
                                         "NEW") " -"                                               \
                                                " " BYTES(                                         \
                                                    "OLD") ", app_data_bytes = "                   \
                                                           "app_data_bytes + " DATA(               \
                                                               "NEW") " - " DATA("OLD") " WHERE "  \
                                                                                        "name = "  \
                                                                                        "NEW.vm; " \
                                                                                        "END;"
#define NO_DATA(X) "0"

/* Migration N takes the schema from version N to N+1. Never edit a shipped one: append. */
static const char *const migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE vms ("
    "  name TEXT PRIMARY KEY,"
    "  epoch INTEGER NOT NULL DEFAULT 1,"
    "  next_seq INTEGER NOT NULL DEFAULT 1,"
    "  current_state TEXT NOT NULL DEFAULT '',"
    "  created INTEGER NOT NULL);"
    "CREATE TABLE requests ("
    "  vm TEXT NOT NULL, id TEXT NOT NULL, op TEXT NOT NULL, app_id TEXT NOT NULL,"
    "  principal TEXT NOT NULL, app_data BLOB, label TEXT NOT NULL DEFAULT '',"
    "  state_id TEXT NOT NULL DEFAULT '', bytes INTEGER NOT NULL DEFAULT 0,"
    "  epoch INTEGER NOT NULL,"
    "  status TEXT NOT NULL CHECK (status IN ('accepted','running','done','refused')),"
    "  result INTEGER NOT NULL DEFAULT 0, message TEXT NOT NULL DEFAULT '',"
    "  accepted_at INTEGER NOT NULL, started_at INTEGER, done_at INTEGER,"
    "  PRIMARY KEY (vm, id));"
    "CREATE INDEX requests_status ON requests(vm, status);"
    "CREATE TABLE states ("
    "  vm TEXT NOT NULL, id TEXT NOT NULL, label TEXT NOT NULL, request_id TEXT NOT NULL,"
    "  app_id TEXT NOT NULL, created INTEGER NOT NULL, parent TEXT NOT NULL DEFAULT '',"
    "  PRIMARY KEY (vm, id));"
    "CREATE TABLE state_pending ("
    "  vm TEXT NOT NULL, state_id TEXT NOT NULL, request_id TEXT NOT NULL,"
    "  PRIMARY KEY (vm, state_id, request_id));"
    "CREATE TABLE events ("
    "  vm TEXT NOT NULL, seq INTEGER NOT NULL, epoch INTEGER NOT NULL,"
    "  request_id TEXT NOT NULL, op TEXT NOT NULL, status INTEGER NOT NULL,"
    "  reason TEXT NOT NULL DEFAULT '', acked INTEGER NOT NULL DEFAULT 0,"
    "  superseded INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL,"
    "  payload BLOB NOT NULL, PRIMARY KEY (vm, seq));"
    "CREATE INDEX events_req ON events(vm, request_id);"
    "CREATE TABLE principals ("
    "  name TEXT PRIMARY KEY, hash TEXT NOT NULL, created INTEGER NOT NULL);"
    "CREATE TABLE rights ("
    "  principal TEXT NOT NULL REFERENCES principals(name) ON DELETE CASCADE,"
    "  vm TEXT NOT NULL, op TEXT NOT NULL, PRIMARY KEY (principal, vm, op));",
    /* lifecycle of managed VMs (db-lifecycle.c): run state and process, the VM's one
     * reservation in a tier, its checkpoints, moves between tiers and files to delete */
    "CREATE TABLE managed ("
    "  vm TEXT PRIMARY KEY, run_state TEXT NOT NULL DEFAULT 'stopped',"
    "  pid INTEGER NOT NULL DEFAULT 0, pid_start INTEGER NOT NULL DEFAULT 0,"
    "  ram_file TEXT NOT NULL DEFAULT '', res_tier TEXT NOT NULL DEFAULT '',"
    "  res_bytes INTEGER NOT NULL DEFAULT 0, updated INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE checkpoints ("
    "  id TEXT PRIMARY KEY, vm TEXT NOT NULL, tier TEXT NOT NULL,"
    "  zero_copy INTEGER NOT NULL, state_file TEXT NOT NULL, ram_file TEXT NOT NULL,"
    "  bytes INTEGER NOT NULL, created INTEGER NOT NULL, last_used INTEGER NOT NULL,"
    "  pinned INTEGER NOT NULL DEFAULT 0,"
    "  phase TEXT NOT NULL CHECK (phase IN ('writing','valid','loading','consumed','discarded')),"
    "  fp TEXT NOT NULL DEFAULT '', resume_at INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX checkpoints_vm ON checkpoints(vm, phase);"
    "CREATE TABLE tier_moves ("
    "  checkpoint TEXT PRIMARY KEY, to_tier TEXT NOT NULL, new_state_file TEXT NOT NULL,"
    "  new_ram_file TEXT NOT NULL, started INTEGER NOT NULL);"
    "CREATE TABLE tier_garbage (path TEXT PRIMARY KEY);",
    /* issue 14 and 13 (guest side): the guest uid of each request and rights limited to one;
     * follow-ups inside a restore; each state's owning principal and its standing in the
     * hypervisor ('ok', 'lost': gone from the hypervisor, 'foreign': made behind our back) */
    "ALTER TABLE requests ADD COLUMN uid INTEGER NOT NULL DEFAULT -1;"
    "ALTER TABLE requests ADD COLUMN followups TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE states ADD COLUMN principal TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE states ADD COLUMN status TEXT NOT NULL DEFAULT 'ok' "
    "  CHECK (status IN ('ok','lost','foreign'));"
    "CREATE TABLE rights_by_uid ("
    "  principal TEXT NOT NULL REFERENCES principals(name) ON DELETE CASCADE,"
    "  vm TEXT NOT NULL, op TEXT NOT NULL, uid INTEGER NOT NULL DEFAULT -1,"
    "  PRIMARY KEY (principal, vm, op, uid));"
    "INSERT INTO rights_by_uid(principal, vm, op, uid) SELECT principal, vm, op, -1 FROM rights;"
    "DROP TABLE rights;"
    "ALTER TABLE rights_by_uid RENAME TO rights;",
    /* per-VM byte accounting of every table a guest can make the bridge write (kept by
     * triggers, so no write path can forget it); the uid column comes with the migration above */
    // clang-format off
    "ALTER TABLE vms ADD COLUMN journal_bytes INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE vms ADD COLUMN app_data_bytes INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE events ADD COLUMN data_bytes INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX requests_uid ON requests(vm, uid, status);"
    ACCOUNT("requests", REQ_BYTES, REQ_DATA)
    ACCOUNT("events", EV_BYTES, EV_DATA)
    ACCOUNT("states", ST_BYTES, NO_DATA)
    ACCOUNT("state_pending", SP_BYTES, NO_DATA)
    "UPDATE vms SET journal_bytes ="
    " (SELECT coalesce(sum(" REQ_BYTES("r") "), 0) FROM requests r WHERE r.vm = vms.name) +"
    " (SELECT coalesce(sum(" EV_BYTES("e") "), 0) FROM events e WHERE e.vm = vms.name) +"
    " (SELECT coalesce(sum(" ST_BYTES("s") "), 0) FROM states s WHERE s.vm = vms.name) +"
    " (SELECT coalesce(sum(" SP_BYTES("p") "), 0) FROM state_pending p WHERE p.vm = vms.name),"
    " app_data_bytes ="
    " (SELECT coalesce(sum(" REQ_DATA("r") "), 0) FROM requests r WHERE r.vm = vms.name);",
    // clang-format on
    /* issue 15: this bridge's copy of the cluster table (cluster/table.h), kept across
     * restarts: where each HA VM runs, its claim generation and latest checkpoint */
    "CREATE TABLE cluster_vms (vm TEXT PRIMARY KEY, host TEXT NOT NULL, state TEXT NOT NULL,"
    "  gen INTEGER NOT NULL, ck TEXT NOT NULL, updated INTEGER NOT NULL);",
    /* issue 14: set-memory's mode ('' online, 'offline': shut down, resize, boot again), and a
     * managed VM's memory as set by an offline set-memory (0: as configured) */
    "ALTER TABLE requests ADD COLUMN mode TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE managed ADD COLUMN memory_bytes INTEGER NOT NULL DEFAULT 0;",
    /* issue 16: groups of VMs suspended and resumed together (host-bridge/groups/); the
     * members may live on other bridges; history keeps every group operation's outcome
     * (and a half-done one, for an admin to resolve) */
    "CREATE TABLE groups (name TEXT PRIMARY KEY, created INTEGER NOT NULL);"
    "CREATE TABLE group_members ("
    "  grp TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE,"
    "  bridge TEXT NOT NULL, vm TEXT NOT NULL, PRIMARY KEY (grp, bridge, vm));"
    "CREATE TABLE group_history ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT, grp TEXT NOT NULL, at INTEGER NOT NULL,"
    "  op TEXT NOT NULL, target_ns INTEGER NOT NULL, outcome TEXT NOT NULL,"
    "  detail TEXT NOT NULL DEFAULT '');",
    /* issue 16: clones of a suspended group's VMs (host-bridge/groups/clone.c): each a managed
     * VM with the configuration of its original (source) but its own name, run_dir, QEMU
     * template (paths, MACs, UUID) — rebuilt from here at every bridge start */
    "CREATE TABLE clones (vm TEXT PRIMARY KEY, source TEXT NOT NULL, grp TEXT NOT NULL,"
    "  source_group TEXT NOT NULL, run_dir TEXT NOT NULL, qemu_args TEXT NOT NULL,"
    "  macs TEXT NOT NULL, created INTEGER NOT NULL);",
    /* issue 18: the events still owed to a guest, indexed apart (partial index): resending
     * them, superseding them and recording what a save leaves pending read only those,
     * not every event the VM ever had (a save cost 5 ms at 5,000 journaled requests) */
    "CREATE INDEX events_pending ON events(vm, epoch, seq) WHERE acked = 0 AND superseded = 0;",
};

static const char *const status_names[] = {"accepted", "running", "done", "refused"};

static enum bridge_req_status status_from_name(const char *s)
{
    for (unsigned i = 0; i < 4; i++)
        if (s && !strcmp(s, status_names[i]))
            return (enum bridge_req_status)i;
    return BRIDGE_REQ_DONE;
}

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

/* Remember whether the statement that just failed did so for lack of space. */
static void note_failure(struct bridge_db *db)
{
    db->last_failure_full = db->h && ((sqlite3_extended_errcode(db->h) & 0xff) == SQLITE_FULL ||
                                      sqlite3_system_errno(db->h) == ENOSPC);
}

static void db_error(struct bridge_db *db, const char *vm, const char *what)
{
    note_failure(db);
    vms_log_limited(&db->log_errors, "database errors", LOG_ERR, vm, NULL, "database: %s: %s", what,
                    sqlite3_errmsg(db->h));
}

/* A ready statement for @sql (a string literal): cached, or prepared now. Release with unprep(). */
static sqlite3_stmt *prep_cached(struct bridge_db *db, const char *vm, const char *sql)
{
    sqlite3_stmt *st = NULL;

    for (unsigned i = 0; i < db->n_stmts; i++)
        if (db->stmts[i].sql == sql) {
            sqlite3_reset(db->stmts[i].st); /* in case a path returned without unprep() */
            sqlite3_clear_bindings(db->stmts[i].st);
            return db->stmts[i].st;
        }
    if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK) {
        db_error(db, vm, "prepare");
        return NULL;
    }
    if (db->n_stmts < BRIDGE_DB_STMT_CACHE) {
        db->stmts[db->n_stmts].sql = sql;
        db->stmts[db->n_stmts].st = st;
        db->n_stmts++;
    }
    return st;
}

/* A ready statement for @sql (prep_cached()); one that writes ends a shared read
 * transaction first (bridge_db_reads_begin()). Release with unprep(). */
static sqlite3_stmt *prep(struct bridge_db *db, const char *vm, const char *sql)
{
    sqlite3_stmt *st = prep_cached(db, vm, sql);

    if (st && db->reads && !sqlite3_stmt_readonly(st))
        bridge_db_reads_end(db);
    return st;
}

/*
 * Done with @st: reset it at once (a statement left mid-SELECT holds a read
 * transaction open, which would pin the WAL) and clear its bindings (they may
 * hold app data); finalize it if it is not cached.
 */
static void unprep(struct bridge_db *db, sqlite3_stmt *st)
{
    if (!st)
        return;
    for (unsigned i = 0; i < db->n_stmts; i++)
        if (db->stmts[i].st == st) {
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            return;
        }
    sqlite3_finalize(st); /* the cache was full when it was prepared */
}

static void stmts_finalize(struct bridge_db *db)
{
    for (unsigned i = 0; i < db->n_stmts; i++)
        sqlite3_finalize(db->stmts[i].st);
    db->n_stmts = 0;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    sqlite3_bind_text(st, i, s ? s : "", -1, SQLITE_TRANSIENT);
}

static void copy_col(sqlite3_stmt *st, int i, char *dst, size_t len)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    snprintf(dst, len, "%s", s ? (const char *)s : "");
}

/* Run a statement that returns no rows. Returns changes() or -1. */
static int step_done(struct bridge_db *db, const char *vm, sqlite3_stmt *st, const char *what)
{
    int rc;
    if (!st)
        return -1;
    rc = sqlite3_step(st);
    unprep(db, st);
    if (rc != SQLITE_DONE) {
        db_error(db, vm, what);
        return -1;
    }
    return sqlite3_changes(db->h);
}

/* Step @st to its first row: 1 a row (read it, then unprep), 0 none, -1 error (logged). */
static int step_row(struct bridge_db *db, const char *vm, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);

    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    db_error(db, vm, what);
    return -1;
}

static int exec(struct bridge_db *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db->h, sql, NULL, NULL, &msg) != SQLITE_OK) {
        note_failure(db);
        vms_log_limited(&db->log_errors, "database errors", LOG_ERR, NULL, NULL, "database: %s",
                        msg ? msg : "error");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

int bridge_db_full(struct bridge_db *db)
{
    return db->last_failure_full;
}

int bridge_db_begin(struct bridge_db *db)
{
    bridge_db_reads_end(db);
    return exec(db, "BEGIN IMMEDIATE");
}

/* Run a cached transaction-control statement (BEGIN, COMMIT, ROLLBACK). */
static int step_control(struct bridge_db *db, const char *sql)
{
    sqlite3_stmt *st = prep_cached(db, NULL, sql);
    int rc = st ? sqlite3_step(st) : SQLITE_ERROR;

    unprep(db, st);
    return rc == SQLITE_DONE ? 0 : -1;
}

void bridge_db_reads_begin(struct bridge_db *db)
{
    /* BEGIN (deferred) takes no lock: the first read does, and keeps it until COMMIT */
    if (!db->reads && db->h && sqlite3_get_autocommit(db->h) && step_control(db, "BEGIN") == 0)
        db->reads = 1;
}

void bridge_db_reads_end(struct bridge_db *db)
{
    if (!db->reads)
        return;
    db->reads = 0;
    if (step_control(db, "COMMIT") < 0) /* nothing written: releases the read lock */
        step_control(db, "ROLLBACK");
}

int bridge_db_commit(struct bridge_db *db)
{
    return exec(db, "COMMIT");
}

void bridge_db_rollback(struct bridge_db *db)
{
    exec(db, "ROLLBACK");
}

/* Set the connection's sync level (a cached PRAGMA: no I/O). */
static void set_synchronous(struct bridge_db *db, int full)
{
    sqlite3_stmt *st;

    bridge_db_reads_end(db); /* not inside a transaction */
    st = prep(db, NULL, full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");

    if (st && sqlite3_step(st) != SQLITE_DONE)
        db_error(db, NULL, "set synchronous");
    unprep(db, st);
}

void bridge_db_relaxed_begin(struct bridge_db *db)
{
    if (db->relaxed++ == 0 && db->h)
        set_synchronous(db, 0);
}

void bridge_db_relaxed_end(struct bridge_db *db)
{
    if (db->relaxed && --db->relaxed == 0 && db->h)
        set_synchronous(db, 1);
}

void bridge_db_defer(struct bridge_db *db)
{
    db->deferred = 1;
}

int bridge_db_barrier(struct bridge_db *db)
{
    sqlite3_file *wal = NULL;
    int rc;

    const char *file;

    if (!db->deferred || !db->h)
        return 0;
    file = sqlite3_db_filename(db->h, "main");
    if (!file || !file[0]) {
        db->deferred = 0; /* an in-memory database (fuzzing): nothing reaches a disk */
        return 0;
    }
    /* in WAL mode the "journal" is the WAL: every commit so far is in it */
    rc = sqlite3_file_control(db->h, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal);
    if (rc == SQLITE_OK && wal && wal->pMethods && wal->pMethods->xSync)
        rc = wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL);
    else if (rc == SQLITE_OK)
        rc = SQLITE_ERROR; /* no WAL open: the commits cannot be where we think */
    if (rc != SQLITE_OK) {
        note_failure(db);
        vms_log_limited(&db->log_errors, "database errors", LOG_ERR, NULL, NULL,
                        "database: cannot sync the journal: %s", sqlite3_errstr(rc));
        return -1;
    }
    db->deferred = 0;
    return 0;
}

int bridge_db_schema_latest(void)
{
    return (int)(sizeof(migrations) / sizeof(migrations[0]));
}

int bridge_db_schema_version(struct bridge_db *db)
{
    sqlite3_stmt *st = prep(db, NULL, "PRAGMA user_version");
    int v = -1;
    if (st && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    unprep(db, st);
    return v;
}

/*
 * Create @path 0600 if it is missing, and take group/other bits off an
 * existing one, before SQLite opens it: its -wal and -shm files are created
 * with the database file's mode, and they all hold secrets' hashes and app
 * data. Returns 0 or -1 with @err filled.
 */
static int db_file_private(const char *path, char *err, size_t errlen)
{
    struct stat st;
    int fd;

    if (!strcmp(path, ":memory:"))
        return 0;
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open the database: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) == 0 && (st.st_mode & 077)) {
        vms_warn(NULL, NULL, "database %s: mode %03o opened to others: made 0600", path,
                 (unsigned)(st.st_mode & 0777));
        if (fchmod(fd, st.st_mode & 0700) < 0) {
            snprintf(err, errlen, "%s: cannot make the database private (chmod 600): %s", path,
                     strerror(errno));
            close(fd);
            return -1;
        }
    }
    close(fd);
    return 0;
}

/* What the operator should do about SQLite error @rc on the journal at @path. */
static void explain_open_error(struct bridge_db *db, int rc, const char *path, const char *what,
                               char *err, size_t errlen)
{
    const char *msg = db->h ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc);

    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        snprintf(err, errlen,
                 "%s: the database is locked by another process (%s; %s): stop the other "
                 "vmstate-bridged, vmstate-admin or sqlite3 using it (fuser %s), then start again",
                 path, what, msg, path);
        break;
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
        snprintf(err, errlen,
                 "%s: not a vmstate database, or corrupt (%s; %s). It was left as it is: restore "
                 "it from a backup, or move it away to start with an empty journal",
                 path, what, msg);
        break;
    case SQLITE_FULL:
        snprintf(err, errlen, "%s: the disk is full (%s; %s): free space, then start again", path,
                 what, msg);
        break;
    default:
        snprintf(err, errlen, "%s: %s: %s", path, what, msg);
        break;
    }
}

/* Run @sql (no rows wanted); SQLite's result code. */
static int exec_rc(struct bridge_db *db, const char *sql)
{
    return sqlite3_exec(db->h, sql, NULL, NULL, NULL);
}

/* The first column of the one row @sql gives, as text into @out; SQLite's result code. */
static int query_text(struct bridge_db *db, const char *sql, char *out, size_t len)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->h, sql, -1, &st, NULL);

    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            copy_col(st, 0, out, len);
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

int bridge_db_open(struct bridge_db *db, const char *path, char *err, size_t errlen)
{
    int rc, version, n_mig = bridge_db_schema_latest();
    char text[256];

    memset(db, 0, sizeof(*db));
    if (db_file_private(path, err, errlen) < 0)
        return -1;
    /* one thread uses this connection (the checkpointer has its own): no mutex per call;
     * nor a global one per allocation for statistics nobody reads (a no-op once SQLite
     * is initialised) */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    rc = sqlite3_open_v2(path, &db->h,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        explain_open_error(db, rc, path, "open", err, errlen);
        goto fail;
    }
    sqlite3_busy_timeout(db->h, BRIDGE_DB_BUSY_MS);
    /* read before anything writes: a file that is not ours, or too new, stays untouched */
    rc = query_text(db, "PRAGMA user_version", text, sizeof(text));
    if (rc != SQLITE_OK) {
        explain_open_error(db, rc, path, "reading the schema version", err, errlen);
        goto fail;
    }
    version = atoi(text);
    if (version < 0 || version > n_mig) {
        snprintf(err, errlen,
                 "%s: schema version %d is newer than this bridge (%d): it was written by a newer "
                 "vmstate; run that version (or newer), or restore a backup made for this one. "
                 "The file was left as it is",
                 path, version, n_mig);
        goto fail;
    }
    rc = query_text(db, "PRAGMA quick_check", text, sizeof(text));
    if (rc == SQLITE_OK && strcmp(text, "ok"))
        rc = SQLITE_CORRUPT;
    if (rc != SQLITE_OK) {
        explain_open_error(db, rc, path, rc == SQLITE_CORRUPT ? text : "integrity check", err,
                           errlen);
        goto fail;
    }
    if ((rc = exec_rc(db, "PRAGMA journal_mode=WAL")) != SQLITE_OK ||
        (rc = exec_rc(db, "PRAGMA synchronous=FULL")) != SQLITE_OK ||
        (rc = exec_rc(db, "PRAGMA foreign_keys=ON")) != SQLITE_OK) {
        explain_open_error(db, rc, path, "setting WAL mode", err, errlen);
        goto fail;
    }
    /* another process holding the write lock would stall every request: say so now */
    if ((rc = exec_rc(db, "BEGIN IMMEDIATE")) != SQLITE_OK) {
        explain_open_error(db, rc, path, "taking the write lock", err, errlen);
        goto fail;
    }
    exec_rc(db, "COMMIT");
    for (; version < n_mig; version++) {
        char sql[64];
        /* one transaction per step: a failed step leaves the file at the previous version */
        if ((rc = exec_rc(db, "BEGIN IMMEDIATE")) != SQLITE_OK)
            goto mig_fail;
        snprintf(sql, sizeof(sql), "PRAGMA user_version=%d", version + 1);
        if ((rc = exec_rc(db, migrations[version])) != SQLITE_OK ||
            (rc = exec_rc(db, sql)) != SQLITE_OK || (rc = exec_rc(db, "COMMIT")) != SQLITE_OK) {
            exec_rc(db, "ROLLBACK");
            goto mig_fail;
        }
        vms_info(NULL, NULL, "database %s: migrated schema to version %d", path, version + 1);
    }
    return 0;
mig_fail:
    snprintf(text, sizeof(text), "migrating schema %d to %d (the file stays at %d)", version,
             version + 1, version);
    explain_open_error(db, rc, path, text, err, errlen);
fail:
    stmts_finalize(db);
    sqlite3_close(db->h);
    db->h = NULL;
    return -1;
}

/* ---- checkpoints off the loop ---- */

struct bridge_db_checkpointer {
    struct bridge_worker *worker; /* one thread, woken by the commit that crosses the mark */
    sqlite3 *h;                   /* the thread's own connection */
};

static void checkpoint_run(struct bridge_worker *w, unsigned index, void *arg)
{
    struct bridge_db_checkpointer *c = arg;

    (void)w;
    (void)index;
    /* PASSIVE: copies what no reader needs, never waits for the writer; a failure (busy,
     * disk full) leaves the frames in the WAL for the next one: nothing is lost */
    sqlite3_wal_checkpoint_v2(c->h, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
}

/* sqlite3_wal_hook: after each commit, with the WAL's size in pages */
static int on_wal_commit(void *arg, sqlite3 *h, const char *schema, int pages)
{
    struct bridge_db_checkpointer *c = arg;

    (void)h;
    (void)schema;
    if (pages >= BRIDGE_DB_CHECKPOINT_PAGES)
        bridge_worker_wake(c->worker); /* the commits while one runs ask for one more */
    return SQLITE_OK;
}

int bridge_db_checkpointer_start(struct bridge_db *db)
{
    struct bridge_db_checkpointer *c;
    const char *file;

    if (!db->h || db->ckpt)
        return -1;
    file = sqlite3_db_filename(db->h, "main");
    if (!file || !file[0])
        return -1; /* in memory: no WAL */
    c = calloc(1, sizeof(*c));
    if (!c)
        return -1;
    if (sqlite3_open_v2(file, &c->h, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_busy_timeout(c->h, BRIDGE_DB_BUSY_MS);
    /* a connection learns the file is in WAL mode when it first reads it; a checkpoint
     * before that does nothing */
    if (sqlite3_exec(c->h, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    c->worker = bridge_worker_start(1, 0, 0, checkpoint_run, c);
    if (!c->worker)
        goto fail;
    db->ckpt = c;
    /* replaces SQLite's automatic checkpoint, which is itself a WAL hook */
    sqlite3_wal_hook(db->h, on_wal_commit, c);
    return 0;
fail:
    if (c->h)
        sqlite3_close(c->h);
    free(c);
    return -1;
}

unsigned long bridge_db_checkpoints_done(const struct bridge_db *db)
{
    return db->ckpt ? bridge_worker_runs(db->ckpt->worker) : 0;
}

static void checkpointer_stop(struct bridge_db *db)
{
    struct bridge_db_checkpointer *c = db->ckpt;

    if (!c)
        return;
    sqlite3_wal_hook(db->h, NULL, NULL);
    bridge_worker_wake(c->worker); /* a last one: the WAL left behind is small */
    bridge_worker_stop(c->worker);
    sqlite3_close(c->h);
    free(c);
    db->ckpt = NULL;
}

void bridge_db_close(struct bridge_db *db)
{
    bridge_db_reads_end(db);
    checkpointer_stop(db);
    stmts_finalize(db);
    if (db->h)
        sqlite3_close(db->h);
    db->h = NULL;
}

void bridge_request_clear(struct bridge_request *r)
{
    free(r->app_data);
    memset(r, 0, sizeof(*r));
}

/* ---- VMs ---- */

/* Read @vm's row: 1 found, 0 missing, -1 error. */
static int vm_read(struct bridge_db *db, const char *vm, struct bridge_db_vm *out)
{
    sqlite3_stmt *st =
        prep(db, vm, "SELECT epoch, next_seq, current_state FROM vms WHERE name = ?");
    int rc;

    if (!st)
        return -1;
    bind_text(st, 1, vm);
    rc = step_row(db, vm, st, "read vm");
    if (rc == 1) {
        out->epoch = (uint64_t)sqlite3_column_int64(st, 0);
        out->next_seq = (uint64_t)sqlite3_column_int64(st, 1);
        copy_col(st, 2, out->current_state, sizeof(out->current_state));
    }
    unprep(db, st);
    return rc;
}

int bridge_db_vm_ensure(struct bridge_db *db, const char *vm, struct bridge_db_vm *out)
{
    struct bridge_db_vm row;
    sqlite3_stmt *st;
    int rc;

    if (!out)
        out = &row;
    rc = vm_read(db, vm, out); /* a read only: callers on the guest path stay cheap */
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    st = prep(db, vm, "INSERT OR IGNORE INTO vms(name, created) VALUES (?, ?)");
    if (!st)
        return -1;
    bind_text(st, 1, vm);
    sqlite3_bind_int64(st, 2, now_s());
    if (step_done(db, vm, st, "insert vm") < 0)
        return -1;
    return vm_read(db, vm, out) == 1 ? 0 : -1;
}

int bridge_db_vm_set_current_state(struct bridge_db *db, const char *vm, const char *state_id)
{
    sqlite3_stmt *st = prep(db, vm, "UPDATE vms SET current_state = ? WHERE name = ?");
    if (!st)
        return -1;
    bind_text(st, 1, state_id);
    bind_text(st, 2, vm);
    return step_done(db, vm, st, "set current state") < 0 ? -1 : 0;
}

int bridge_db_vm_new_epoch(struct bridge_db *db, const char *vm, uint64_t *epoch)
{
    struct bridge_db_vm row;
    sqlite3_stmt *st;

    if (bridge_db_vm_ensure(db, vm, &row) < 0)
        return -1;
    st = prep(db, vm, "UPDATE vms SET epoch = epoch + 1 WHERE name = ?");
    if (!st)
        return -1;
    bind_text(st, 1, vm);
    if (step_done(db, vm, st, "new epoch") < 0)
        return -1;
    st = prep(db, vm,
              "UPDATE events SET superseded = 1 WHERE vm = ? AND epoch <= ? AND acked = 0 "
              "AND superseded = 0");
    if (!st)
        return -1;
    bind_text(st, 1, vm);
    sqlite3_bind_int64(st, 2, (int64_t)row.epoch);
    if (step_done(db, vm, st, "supersede events") < 0)
        return -1;
    *epoch = row.epoch + 1;
    return 0;
}

/* ---- requests ---- */

#define REQ_COLS                                                                                   \
    "vm, id, op, app_id, principal, app_data, label, state_id, bytes, epoch, status, result, "     \
    "message, uid, followups, mode"

static void request_from_row(sqlite3_stmt *st, struct bridge_request *r)
{
    const void *blob;
    int n;

    memset(r, 0, sizeof(*r));
    copy_col(st, 0, r->vm, sizeof(r->vm));
    copy_col(st, 1, r->id, sizeof(r->id));
    r->op = vms_op_from_name((const char *)sqlite3_column_text(st, 2));
    copy_col(st, 3, r->app_id, sizeof(r->app_id));
    copy_col(st, 4, r->principal, sizeof(r->principal));
    blob = sqlite3_column_blob(st, 5);
    n = sqlite3_column_bytes(st, 5);
    if (blob && n > 0) {
        r->app_data = malloc((size_t)n);
        if (r->app_data) {
            memcpy(r->app_data, blob, (size_t)n);
            r->app_data_len = (size_t)n;
        }
    }
    copy_col(st, 6, r->label, sizeof(r->label));
    copy_col(st, 7, r->state_id, sizeof(r->state_id));
    r->bytes = (uint64_t)sqlite3_column_int64(st, 8);
    r->epoch = (uint64_t)sqlite3_column_int64(st, 9);
    r->status = status_from_name((const char *)sqlite3_column_text(st, 10));
    r->result = (uint32_t)sqlite3_column_int(st, 11);
    copy_col(st, 12, r->message, sizeof(r->message));
    r->uid = sqlite3_column_int64(st, 13);
    copy_col(st, 14, r->followups, sizeof(r->followups));
    copy_col(st, 15, r->mode, sizeof(r->mode));
}

int bridge_db_request_find(struct bridge_db *db, const char *vm, const char *id,
                           struct bridge_request *out)
{
    sqlite3_stmt *st = prep(db, vm, "SELECT " REQ_COLS " FROM requests WHERE vm = ? AND id = ?");
    int rc;

    if (!st)
        return -1;
    bind_text(st, 1, vm);
    bind_text(st, 2, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        if (out)
            request_from_row(st, out);
        rc = 1;
    } else if (rc == SQLITE_DONE) {
        rc = 0;
    } else {
        db_error(db, vm, "find request");
        rc = -1;
    }
    unprep(db, st);
    return rc;
}

int bridge_db_request_insert(struct bridge_db *db, const struct bridge_request *r)
{
    sqlite3_stmt *st = prep(db, r->vm,
                            "INSERT INTO requests(" REQ_COLS ", accepted_at, done_at) VALUES "
                            "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
    int64_t now = now_s();

    if (!st)
        return -1;
    bind_text(st, 1, r->vm);
    bind_text(st, 2, r->id);
    bind_text(st, 3, vms_op_name(r->op));
    bind_text(st, 4, r->app_id);
    bind_text(st, 5, r->principal);
    if (r->app_data_len)
        sqlite3_bind_blob(st, 6, r->app_data, (int)r->app_data_len, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, 6);
    bind_text(st, 7, r->label);
    bind_text(st, 8, r->state_id);
    sqlite3_bind_int64(st, 9, (int64_t)r->bytes);
    sqlite3_bind_int64(st, 10, (int64_t)r->epoch);
    bind_text(st, 11, status_names[r->status]);
    sqlite3_bind_int(st, 12, (int)r->result);
    bind_text(st, 13, r->message);
    sqlite3_bind_int64(st, 14, r->uid);
    bind_text(st, 15, r->followups);
    bind_text(st, 16, r->mode);
    sqlite3_bind_int64(st, 17, now);
    if (r->status >= BRIDGE_REQ_DONE)
        sqlite3_bind_int64(st, 18, now);
    else
        sqlite3_bind_null(st, 18);
    return step_done(db, r->vm, st, "journal request") < 0 ? -1 : 0;
}

int bridge_db_request_set_status(struct bridge_db *db, const char *vm, const char *id,
                                 enum bridge_req_status status, uint32_t result,
                                 const char *message)
{
    sqlite3_stmt *st = prep(db, vm,
                            "UPDATE requests SET status = ?1, result = ?2, message = ?3,"
                            " started_at = CASE WHEN ?4 = 'running' THEN ?5 ELSE started_at END,"
                            " done_at = CASE WHEN ?6 = 'done' OR ?6 = 'refused' THEN ?7"
                            " ELSE done_at END WHERE vm = ?8 AND id = ?9");
    int64_t now = now_s();

    if (!st)
        return -1;
    bind_text(st, 1, status_names[status]);
    sqlite3_bind_int(st, 2, (int)result);
    bind_text(st, 3, message);
    bind_text(st, 4, status_names[status]);
    sqlite3_bind_int64(st, 5, now);
    bind_text(st, 6, status_names[status]);
    sqlite3_bind_int64(st, 7, now);
    bind_text(st, 8, vm);
    bind_text(st, 9, id);
    return step_done(db, vm, st, "update request") < 0 ? -1 : 0;
}

int bridge_db_requests_in_status(struct bridge_db *db, const char *vm,
                                 enum bridge_req_status status,
                                 void (*fn)(void *opaque, struct bridge_request *r), void *opaque)
{
    sqlite3_stmt *st = prep(
        db, vm, "SELECT " REQ_COLS " FROM requests WHERE vm = ? AND status = ? ORDER BY rowid");
    int rc;

    if (!st)
        return -1;
    bind_text(st, 1, vm);
    bind_text(st, 2, status_names[status]);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct bridge_request r;
        request_from_row(st, &r);
        fn(opaque, &r);
        bridge_request_clear(&r);
    }
    unprep(db, st);
    if (rc != SQLITE_DONE) {
        db_error(db, vm, "list requests");
        return -1;
    }
    return 0;
}

static int64_t query_int(struct bridge_db *db, const char *vm, const char *sql, const char *a2)
{
    sqlite3_stmt *st = prep(db, vm, sql);
    int64_t v = -1;

    if (!st)
        return -1;
    bind_text(st, 1, vm);
    if (a2)
        bind_text(st, 2, a2);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    else
        db_error(db, vm, "count");
    unprep(db, st);
    return v;
}

/*
 * Per-request statements spell a list of constants as separate terms: SQLite runs `x IN
 * ('a','b')` (and NOT IN of three) through an ephemeral b-tree, whose page it allocates and
 * zeroes each time; that was a quarter of the bridge's instructions per hostinfo
 * (callgrind, bench/RESULTS.md §13.2). Two index lookups summed cost a fraction of it.
 */
#define PENDING_COUNT(uid_term)                                                                    \
    "SELECT (SELECT count(*) FROM requests WHERE vm = ?1" uid_term " AND status = 'accepted')"     \
    " + (SELECT count(*) FROM requests WHERE vm = ?1" uid_term " AND status = 'running')"

int bridge_db_count_pending(struct bridge_db *db, const char *vm)
{
    return (int)query_int(db, vm, PENDING_COUNT(""), NULL);
}

int bridge_db_count_pending_uid(struct bridge_db *db, const char *vm, int64_t uid)
{
    sqlite3_stmt *st = prep(db, vm, PENDING_COUNT(" AND uid = ?2"));
    int n = -1;

    if (!st)
        return -1;
    bind_text(st, 1, vm);
    sqlite3_bind_int64(st, 2, uid);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0);
    else
        db_error(db, vm, "count");
    unprep(db, st);
    return n;
}

int64_t bridge_db_app_data_bytes(struct bridge_db *db, const char *vm)
{
    return query_int(db, vm, "SELECT app_data_bytes FROM vms WHERE name = ?", NULL);
}

int bridge_db_vm_usage(struct bridge_db *db, const char *vm, struct bridge_vm_usage *u)
{
    sqlite3_stmt *st = prep(db, vm,
                            "SELECT (SELECT count(*) FROM states WHERE vm = ?1), (" PENDING_COUNT(
                                "") "), app_data_bytes FROM vms WHERE name = ?1");
    int rc;

    if (!st)
        return -1;
    bind_text(st, 1, vm);
    rc = step_row(db, vm, st, "usage");
    if (rc == 1) {
        u->states = (uint64_t)sqlite3_column_int64(st, 0);
        u->pending = (uint64_t)sqlite3_column_int64(st, 1);
        u->app_data_bytes = (uint64_t)sqlite3_column_int64(st, 2);
    }
    unprep(db, st);
    return rc == 1 ? 0 : -1;
}

int64_t bridge_db_journal_bytes(struct bridge_db *db, const char *vm)
{
    return query_int(db, vm, "SELECT journal_bytes FROM vms WHERE name = ?", NULL);
}

int bridge_db_request_release_app_data(struct bridge_db *db, const char *vm, const char *id)
{
    sqlite3_stmt *st = prep(db, vm,
                            "UPDATE requests SET app_data = NULL WHERE vm = ?1 AND id = ?2 AND "
                            "status IN ('done','refused') AND NOT EXISTS (SELECT 1 FROM "
                            "state_pending WHERE vm = ?1 AND request_id = ?2)");
    if (!st)
        return -1;
    bind_text(st, 1, vm);
    bind_text(st, 2, id);
    return step_done(db, vm, st, "release app data") < 0 ? -1 : 0;
}

/* The requests bridge_db_prune() may delete: ?1 vm, ?2 cutoff, ?3 margin (see db.h). */
#define PRUNABLE_REQUESTS                                                                          \
    "SELECT r.id FROM requests r WHERE r.vm = ?1 AND r.status IN ('done','refused') AND "          \
    "COALESCE(r.done_at, r.accepted_at) < ?2 AND "                                                 \
    "NOT EXISTS (SELECT 1 FROM events e WHERE e.vm = ?1 AND e.request_id = r.id AND "              \
    "e.acked = 0 AND e.superseded = 0) AND "                                                       \
    "NOT EXISTS (SELECT 1 FROM states s WHERE s.vm = ?1 AND (s.request_id = r.id OR "              \
    "r.accepted_at BETWEEN s.created - ?3 AND s.created + ?3)) AND "                               \
    "NOT EXISTS (SELECT 1 FROM state_pending p WHERE p.vm = ?1 AND p.request_id = r.id)"

static int prune_step(struct bridge_db *db, const char *vm, const char *sql, int64_t cutoff)
{
    sqlite3_stmt *st = prep(db, vm, sql);
    if (!st)
        return -1;
    bind_text(st, 1, vm);
    sqlite3_bind_int64(st, 2, cutoff);
    sqlite3_bind_int64(st, 3, BRIDGE_DB_PRUNE_MARGIN);
    return step_done(db, vm, st, "prune the journal");
}

int bridge_db_prune(struct bridge_db *db, const char *vm, int64_t cutoff)
{
    int n;

    if (bridge_db_begin(db) < 0)
        return -1;
    /* events first: the request rows are what selects them */
    if (prune_step(db, vm,
                   "DELETE FROM events WHERE vm = ?1 AND request_id IN (" PRUNABLE_REQUESTS ")",
                   cutoff) < 0 ||
        (n = prune_step(db, vm,
                        "DELETE FROM requests WHERE vm = ?1 AND id IN (" PRUNABLE_REQUESTS ")",
                        cutoff)) < 0 ||
        bridge_db_commit(db) < 0) {
        bridge_db_rollback(db);
        return -1;
    }
    return n;
}

/* ---- states ---- */

int bridge_db_state_insert(struct bridge_db *db, const char *vm, const struct vms_state_info *s,
                           const char *request_id)
{
    sqlite3_stmt *st =
        prep(db, vm,
             "INSERT OR IGNORE INTO states(vm, id, label, request_id, app_id, created, "
             "parent) VALUES (?,?,?,?,?,?,?)");
    if (!st)
        return -1;
    bind_text(st, 1, vm);
    bind_text(st, 2, s->id);
    bind_text(st, 3, s->label);
    bind_text(st, 4, request_id);
    bind_text(st, 5, s->app_id);
    sqlite3_bind_int64(st, 6, s->created);
    bind_text(st, 7, s->parent);
    return step_done(db, vm, st, "insert state") < 0 ? -1 : 0;
}

static void state_from_row(sqlite3_stmt *st, struct vms_state_info *s)
{
    memset(s, 0, sizeof(*s));
    copy_col(st, 0, s->id, sizeof(s->id));
    copy_col(st, 1, s->label, sizeof(s->label));
    copy_col(st, 2, s->app_id, sizeof(s->app_id));
    copy_col(st, 3, s->parent, sizeof(s->parent));
    s->created = sqlite3_column_int64(st, 4);
}

int bridge_db_state_find(struct bridge_db *db, const char *vm, const char *id,
                         struct vms_state_info *out)
{
    sqlite3_stmt *st = prep(db, vm,
                            "SELECT id, label, app_id, parent, created FROM states WHERE vm = ? "
                            "AND id = ?");
    int rc;

    if (!st)
        return -1;
    bind_text(st, 1, vm);
    bind_text(st, 2, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        if (out)
            state_from_row(st, out);
        rc = 1;
    } else {
        rc = rc == SQLITE_DONE ? 0 : -1;
        if (rc < 0)
            db_error(db, vm, "find state");
    }
    unprep(db, st);
    return rc;
}

int bridge_db_state_owner(struct bridge_db *db, const char *vm, const char *id,
                          struct bridge_state_owner *out)
{
    sqlite3_stmt *st =
        prep(db, vm, "SELECT app_id, principal, status FROM states WHERE vm = ? AND id = ?");
    int rc;

    if (!st)
        return -1;
    bind_text(st, 1, vm);
    bind_text(st, 2, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        copy_col(st, 0, out->app_id, sizeof(out->app_id));
        copy_col(st, 1, out->principal, sizeof(out->principal));
        copy_col(st, 2, out->status, sizeof(out->status));
        rc = 1;
    } else {
        rc = rc == SQLITE_DONE ? 0 : -1;
        if (rc < 0)
            db_error(db, vm, "find state owner");
    }
    unprep(db, st);
    return rc;
}

int bridge_db_state_set(struct bridge_db *db, const char *vm, const char *id, const char *principal,
                        const char *status)
{
    sqlite3_stmt *st = prep(db, vm,
                            principal ? "UPDATE states SET principal = ?3 WHERE vm = ?1 AND id = ?2"
                                      : "UPDATE states SET status = ?4 WHERE vm = ?1 AND id = ?2");
    if (!st)
        return -1;
    bind_text(st, 1, vm);
    bind_text(st, 2, id);
    if (principal)
        bind_text(st, 3, principal);
    else
        bind_text(st, 4, status);
    return step_done(db, vm, st, "update state");
}

int bridge_db_state_ids(struct bridge_db *db, const char *vm, char (*ids)[VMS_STR_MAX + 1],
                        char (*statuses)[8], int max)
{
    sqlite3_stmt *st =
        prep(db, vm, "SELECT id, status FROM states WHERE vm = ? ORDER BY rowid LIMIT ?");
    int n = 0, rc;

    if (!st)
        return -1;
    bind_text(st, 1, vm);
    sqlite3_bind_int(st, 2, max);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < max) {
        copy_col(st, 0, ids[n], VMS_STR_MAX + 1);
        copy_col(st, 1, statuses[n], 8);
        n++;
    }
    unprep(db, st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? n : -1;
}

int bridge_db_state_delete(struct bridge_db *db, const char *vm, const char *id)
{
    sqlite3_stmt *st = prep(db, vm, "DELETE FROM state_pending WHERE vm = ? AND state_id = ?");
    if (!st)
        return -1;
    bind_text(st, 1, vm);
    bind_text(st, 2, id);
    if (step_done(db, vm, st, "delete state_pending") < 0)
        return -1;
    st = prep(db, vm, "DELETE FROM states WHERE vm = ? AND id = ?");
    if (!st)
        return -1;
    bind_text(st, 1, vm);
    bind_text(st, 2, id);
    return step_done(db, vm, st, "delete state");
}

int bridge_db_state_count(struct bridge_db *db, const char *vm)
{
    return (int)query_int(db, vm, "SELECT count(*) FROM states WHERE vm = ?", NULL);
}

int bridge_db_state_list(struct bridge_db *db, const char *vm, struct vms_msg *m)
{
    sqlite3_stmt *st = prep(db, vm,
                            "SELECT id, label, app_id, parent, created FROM (SELECT rowid AS r, * "
                            "FROM states WHERE vm = ? ORDER BY rowid DESC LIMIT ?) ORDER BY r");
    int rc;

    if (!st)
        return -1;
    bind_text(st, 1, vm);
    sqlite3_bind_int(st, 2, VMS_STATES_MAX);
    m->fields |= VMS_BIT(VMS_F_STATES);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct vms_state_info s;
        state_from_row(st, &s);
        if (vms_msg_add_state(m, &s) < 0)
            break;
    }
    unprep(db, st);
    return 0;
}

int bridge_db_state_pending_record(struct bridge_db *db, const char *vm, const char *state_id)
{
    sqlite3_stmt *st =
        prep(db, vm,
             /* two indexed halves (requests_status, events_pending), not one OR that walks every
              * request of the VM */
             "INSERT OR IGNORE INTO state_pending(vm, state_id, request_id) "
             "SELECT ?1, ?2, id FROM requests WHERE vm = ?1 AND status IN ('accepted','running') "
             "UNION SELECT ?1, ?2, e.request_id FROM events e WHERE e.vm = ?1 AND e.acked = 0 AND "
             "e.superseded = 0 AND e.epoch = (SELECT epoch FROM vms WHERE name = ?1) AND EXISTS "
             "(SELECT 1 FROM requests r WHERE r.vm = ?1 AND r.id = e.request_id AND r.status IN "
             "('done','refused'))");
    if (!st)
        return -1;
    bind_text(st, 1, vm);
    bind_text(st, 2, state_id);
    return step_done(db, vm, st, "record pending requests");
}

int bridge_db_state_pending_list(struct bridge_db *db, const char *vm, const char *state_id,
                                 char (*ids)[VMS_REQUEST_ID_LEN + 1], int max)
{
    sqlite3_stmt *st = prep(db, vm,
                            "SELECT p.request_id FROM state_pending p JOIN requests r ON r.vm = "
                            "p.vm AND r.id = p.request_id WHERE p.vm = ? AND p.state_id = ? "
                            "ORDER BY r.rowid");
    int n = 0;

    if (!st)
        return -1;
    bind_text(st, 1, vm);
    bind_text(st, 2, state_id);
    while (n < max && sqlite3_step(st) == SQLITE_ROW)
        copy_col(st, 0, ids[n++], VMS_REQUEST_ID_LEN + 1);
    unprep(db, st);
    return n;
}

/* ---- events ---- */

int bridge_db_event_add(struct bridge_db *db, const char *vm, struct vms_msg *ev)
{
    struct bridge_db_vm row;
    uint8_t *payload = NULL;
    size_t len = 0;
    char err[256];
    sqlite3_stmt *st;
    int rc = -1;

    if (bridge_db_vm_ensure(db, vm, &row) < 0)
        return -1;
    vms_msg_set_u64(ev, VMS_F_EPOCH, row.epoch);
    vms_msg_set_u64(ev, VMS_F_SEQ, row.next_seq);
    if (vms_msg_encode(ev, &payload, &len, err, sizeof(err)) < 0) {
        vms_err(vm, ev->request_id, "cannot encode event: %s", err);
        return -1;
    }
    st = prep(db, vm, "UPDATE vms SET next_seq = next_seq + 1 WHERE name = ?");
    if (!st)
        goto out;
    bind_text(st, 1, vm);
    if (step_done(db, vm, st, "next seq") < 0)
        goto out;
    st = prep(db, vm,
              "INSERT INTO events(vm, seq, epoch, request_id, op, status, reason, created, "
              "payload, data_bytes) VALUES (?,?,?,?,?,?,?,?,?,?)");
    if (!st)
        goto out;
    bind_text(st, 1, vm);
    sqlite3_bind_int64(st, 2, (int64_t)row.next_seq);
    sqlite3_bind_int64(st, 3, (int64_t)row.epoch);
    bind_text(st, 4, ev->request_id);
    bind_text(st, 5, ev->op);
    sqlite3_bind_int(st, 6, (int)ev->status);
    bind_text(st, 7, vms_msg_has(ev, VMS_F_REASON) ? ev->reason : "");
    sqlite3_bind_int64(st, 8, now_s());
    sqlite3_bind_blob(st, 9, payload, (int)len, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 10, (int64_t)ev->app_data_len);
    if (step_done(db, vm, st, "journal event") < 0)
        goto out;
    rc = 0;
out:
    free(payload);
    return rc;
}

int bridge_db_event_ack(struct bridge_db *db, const char *vm, uint64_t epoch, uint64_t seq,
                        const char *request_id)
{
    sqlite3_stmt *st = prep(db, vm,
                            "UPDATE events SET acked = 1 WHERE vm = ? AND epoch = ? AND seq = ? "
                            "AND request_id = ? AND acked = 0");
    if (!st)
        return -1;
    bind_text(st, 1, vm);
    sqlite3_bind_int64(st, 2, (int64_t)epoch);
    sqlite3_bind_int64(st, 3, (int64_t)seq);
    bind_text(st, 4, request_id);
    return step_done(db, vm, st, "ack event") > 0 ? 1 : 0;
}

static int decode_payload(sqlite3_stmt *st, int col, struct vms_msg *m)
{
    const void *blob = sqlite3_column_blob(st, col);
    int n = sqlite3_column_bytes(st, col);
    if (!blob || n <= 0)
        return -1;
    return vms_msg_decode(blob, (size_t)n, m, NULL) == VMS_DECODE_OK ? 0 : -1;
}

int bridge_db_events_unacked(struct bridge_db *db, const char *vm, uint64_t epoch,
                             uint64_t after_seq, uint64_t until_seq, int max,
                             int (*fn)(void *opaque, struct vms_msg *ev), void *opaque)
{
    sqlite3_stmt *st = prep(db, vm,
                            "SELECT payload FROM events WHERE vm = ? AND epoch = ? AND acked = 0 "
                            "AND superseded = 0 AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?");
    int rc, n = 0;

    if (!st)
        return -1;
    bind_text(st, 1, vm);
    sqlite3_bind_int64(st, 2, (int64_t)epoch);
    sqlite3_bind_int64(st, 3, (int64_t)after_seq);
    sqlite3_bind_int64(st, 4, (int64_t)until_seq);
    sqlite3_bind_int(st, 5, max);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct vms_msg m;
        int stop = 0;
        vms_msg_init(&m, VMS_MSG_EVENT);
        if (decode_payload(st, 0, &m) == 0)
            stop = fn(opaque, &m) < 0;
        vms_msg_clear(&m);
        if (stop) {
            rc = SQLITE_DONE;
            break;
        }
        n++;
    }
    unprep(db, st);
    return rc == SQLITE_DONE ? n : -1;
}

int bridge_db_event_latest(struct bridge_db *db, const char *vm, const char *id,
                           struct vms_msg *out)
{
    sqlite3_stmt *st = prep(db, vm,
                            "SELECT payload FROM events WHERE vm = ? AND request_id = ? ORDER BY "
                            "seq DESC LIMIT 1");
    int rc = 0;

    if (!st)
        return -1;
    bind_text(st, 1, vm);
    bind_text(st, 2, id);
    vms_msg_clear(out);
    if (sqlite3_step(st) == SQLITE_ROW)
        rc = decode_payload(st, 0, out) == 0 ? 1 : -1;
    unprep(db, st);
    return rc;
}

int bridge_db_event_count(struct bridge_db *db, const char *vm, const char *id, uint64_t epoch)
{
    sqlite3_stmt *st = prep(db, vm,
                            "SELECT count(*) FROM events WHERE vm = ? AND request_id = ? AND "
                            "epoch = ?");
    int n = -1;
    if (!st)
        return -1;
    bind_text(st, 1, vm);
    bind_text(st, 2, id);
    sqlite3_bind_int64(st, 3, (int64_t)epoch);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0);
    unprep(db, st);
    return n;
}

/* ---- principals and rights ---- */

int bridge_db_principal_add(struct bridge_db *db, const char *name, const char *hash)
{
    sqlite3_stmt *st = prep(db, NULL,
                            "INSERT INTO principals(name, hash, created) VALUES (?,?,?) ON "
                            "CONFLICT(name) DO UPDATE SET hash = excluded.hash");
    if (!st)
        return -1;
    bind_text(st, 1, name);
    bind_text(st, 2, hash);
    sqlite3_bind_int64(st, 3, now_s());
    return step_done(db, NULL, st, "add principal") < 0 ? -1 : 0;
}

int bridge_db_principal_remove(struct bridge_db *db, const char *name)
{
    sqlite3_stmt *st = prep(db, NULL, "DELETE FROM principals WHERE name = ?");
    int n;
    if (!st)
        return -1;
    bind_text(st, 1, name);
    n = step_done(db, NULL, st, "remove principal");
    return n < 0 ? -1 : n > 0;
}

int bridge_db_principal_hash(struct bridge_db *db, const char *name, char *hash, size_t len)
{
    sqlite3_stmt *st = prep(db, NULL, "SELECT hash FROM principals WHERE name = ?");
    int rc;
    if (!st)
        return -1;
    bind_text(st, 1, name);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        copy_col(st, 0, hash, len);
        rc = 1;
    } else {
        rc = rc == SQLITE_DONE ? 0 : -1;
    }
    unprep(db, st);
    return rc;
}

int bridge_db_right_grant(struct bridge_db *db, const char *principal, const char *vm,
                          const char *op)
{
    return bridge_db_right_grant_uid(db, principal, vm, op, -1);
}

int bridge_db_right_grant_uid(struct bridge_db *db, const char *principal, const char *vm,
                              const char *op, int64_t uid)
{
    sqlite3_stmt *st =
        prep(db, vm, "INSERT OR IGNORE INTO rights(principal, vm, op, uid) VALUES (?,?,?,?)");
    if (!st)
        return -1;
    bind_text(st, 1, principal);
    bind_text(st, 2, vm);
    bind_text(st, 3, op);
    sqlite3_bind_int64(st, 4, uid < 0 ? -1 : uid);
    return step_done(db, vm, st, "grant") < 0 ? -1 : 0;
}

int bridge_db_right_check_uid(struct bridge_db *db, const char *principal, const char *vm,
                              const char *op, int64_t uid)
{
    sqlite3_stmt *st = prep(db, vm,
                            "SELECT 1 FROM rights WHERE principal = ?1 AND vm = ?2 AND (op = ?3 OR "
                            "(op = 'all' AND ?3 <> 'restore-any' AND ?3 <> 'delete-any' AND "
                            "?3 <> 'restore-foreign')) AND uid IN (-1, ?4)");
    int rc;
    if (!st)
        return -1;
    bind_text(st, 1, principal);
    bind_text(st, 2, vm);
    bind_text(st, 3, op);
    /* an unknown uid (an older helper) matches only rights that name no uid */
    sqlite3_bind_int64(st, 4, uid < 0 ? -1 : uid);
    rc = sqlite3_step(st);
    unprep(db, st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

int bridge_db_rights(struct bridge_db *db, const char *principal, const char *vm, int64_t uid,
                     int64_t *for_uid, int64_t *any_uid)
{
    sqlite3_stmt *st = prep(db, vm, "SELECT op, uid FROM rights WHERE principal = ? AND vm = ?");
    int64_t mine = BRIDGE_OPS_READ, any = 0;
    int rc;

    if (!st)
        return -1;
    bind_text(st, 1, principal);
    bind_text(st, 2, vm);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *op = (const char *)sqlite3_column_text(st, 0);
        int64_t right_uid = sqlite3_column_int64(st, 1);
        enum vms_op o = vms_op_from_name(op);
        int64_t bits = op && !strcmp(op, "all") ? ((int64_t)1 << VMS_OP__COUNT) - 2 /* not 0 */
                       : o != VMS_OP_UNKNOWN    ? (int64_t)1 << o
                                                : 0;

        any |= bits;
        /* an unknown uid (an older helper) matches only rights that name no uid */
        if (right_uid == -1 || (uid >= 0 && right_uid == uid))
            mine |= bits;
    }
    unprep(db, st);
    if (rc != SQLITE_DONE) {
        db_error(db, vm, "rights");
        return -1;
    }
    *for_uid = mine;
    if (any_uid)
        *any_uid = any;
    return 0;
}

int bridge_db_right_revoke(struct bridge_db *db, const char *principal, const char *vm,
                           const char *op)
{
    sqlite3_stmt *st =
        prep(db, vm,
             !strcmp(op, "all") ? "DELETE FROM rights WHERE principal = ? AND vm = ?"
                                : "DELETE FROM rights WHERE principal = ? AND vm = ? AND op = ?");
    if (!st)
        return -1;
    bind_text(st, 1, principal);
    bind_text(st, 2, vm);
    if (strcmp(op, "all"))
        bind_text(st, 3, op);
    return step_done(db, vm, st, "revoke") < 0 ? -1 : 0;
}
