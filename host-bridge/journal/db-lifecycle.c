/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * db-lifecycle.c — see db-lifecycle.h.
 */
#include "config.h"
#include "db-lifecycle.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vms-log.h"

static sqlite3_stmt *lc_prep(struct bridge_db *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK) {
        vms_err(NULL, NULL, "database: prepare: %s", sqlite3_errmsg(db->h));
        return NULL;
    }
    return st;
}

static void lc_text(sqlite3_stmt *st, int i, const char *s)
{
    sqlite3_bind_text(st, i, s ? s : "", -1, SQLITE_TRANSIENT);
}

static void lc_col(sqlite3_stmt *st, int i, char *dst, size_t len)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    snprintf(dst, len, "%s", s ? (const char *)s : "");
}

/* Step a statement that returns no rows, then finalize it. */
static int lc_done(struct bridge_db *db, sqlite3_stmt *st, const char *what)
{
    int rc;
    if (!st)
        return -1;
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        vms_err(NULL, NULL, "database: %s: %s", what, sqlite3_errmsg(db->h));
        return -1;
    }
    return 0;
}

int bridge_db_managed_get(struct bridge_db *db, const char *vm, struct bridge_db_managed *out)
{
    sqlite3_stmt *st;
    int rc;

    st = lc_prep(db, "INSERT OR IGNORE INTO managed (vm, updated) VALUES (?1, ?2)");
    if (!st)
        return -1;
    lc_text(st, 1, vm);
    sqlite3_bind_int64(st, 2, (int64_t)time(NULL));
    if (lc_done(db, st, "managed row") < 0)
        return -1;
    st = lc_prep(db, "SELECT run_state, pid, pid_start, ram_file, res_tier, res_bytes FROM managed "
                     "WHERE vm = ?1");
    if (!st)
        return -1;
    lc_text(st, 1, vm);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof(*out));
        snprintf(out->vm, sizeof(out->vm), "%s", vm);
        lc_col(st, 0, out->run_state, sizeof(out->run_state));
        out->pid = sqlite3_column_int64(st, 1);
        out->pid_start = sqlite3_column_int64(st, 2);
        lc_col(st, 3, out->ram_file, sizeof(out->ram_file));
        lc_col(st, 4, out->res_tier, sizeof(out->res_tier));
        out->res_bytes = (uint64_t)sqlite3_column_int64(st, 5);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : -1;
}

int bridge_db_managed_put(struct bridge_db *db, const struct bridge_db_managed *m)
{
    sqlite3_stmt *st = lc_prep(
        db, "INSERT OR REPLACE INTO managed (vm, run_state, pid, pid_start, ram_file, res_tier, "
            "res_bytes, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    if (!st)
        return -1;
    lc_text(st, 1, m->vm);
    lc_text(st, 2, m->run_state);
    sqlite3_bind_int64(st, 3, m->pid);
    sqlite3_bind_int64(st, 4, m->pid_start);
    lc_text(st, 5, m->ram_file);
    lc_text(st, 6, m->res_tier);
    sqlite3_bind_int64(st, 7, (int64_t)m->res_bytes);
    sqlite3_bind_int64(st, 8, (int64_t)time(NULL));
    return lc_done(db, st, "managed update");
}

int64_t bridge_db_tier_reserved(struct bridge_db *db, const char *tier, const char *except)
{
    sqlite3_stmt *st =
        lc_prep(db, "SELECT COALESCE(SUM(res_bytes), 0) FROM managed WHERE res_tier = ?1 "
                    "AND vm != ?2");
    int64_t v = -1;

    if (!st)
        return -1;
    lc_text(st, 1, tier);
    lc_text(st, 2, except ? except : "");
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

#define CK_COLS                                                                                    \
    "id, vm, tier, zero_copy, state_file, ram_file, bytes, created, last_used, pinned, phase, "    \
    "fp, resume_at"

static void ck_from_row(sqlite3_stmt *st, struct bridge_db_checkpoint *c)
{
    memset(c, 0, sizeof(*c));
    lc_col(st, 0, c->id, sizeof(c->id));
    lc_col(st, 1, c->vm, sizeof(c->vm));
    lc_col(st, 2, c->tier, sizeof(c->tier));
    c->zero_copy = sqlite3_column_int(st, 3);
    lc_col(st, 4, c->state_file, sizeof(c->state_file));
    lc_col(st, 5, c->ram_file, sizeof(c->ram_file));
    c->bytes = (uint64_t)sqlite3_column_int64(st, 6);
    c->created = sqlite3_column_int64(st, 7);
    c->last_used = sqlite3_column_int64(st, 8);
    c->pinned = sqlite3_column_int(st, 9);
    lc_col(st, 10, c->phase, sizeof(c->phase));
    lc_col(st, 11, c->fp, sizeof(c->fp));
    c->resume_at = sqlite3_column_int64(st, 12);
}

int bridge_db_checkpoint_put(struct bridge_db *db, const struct bridge_db_checkpoint *c)
{
    sqlite3_stmt *st = lc_prep(db, "INSERT OR REPLACE INTO checkpoints (" CK_COLS
                                   ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)");
    if (!st)
        return -1;
    lc_text(st, 1, c->id);
    lc_text(st, 2, c->vm);
    lc_text(st, 3, c->tier);
    sqlite3_bind_int(st, 4, c->zero_copy);
    lc_text(st, 5, c->state_file);
    lc_text(st, 6, c->ram_file);
    sqlite3_bind_int64(st, 7, (int64_t)c->bytes);
    sqlite3_bind_int64(st, 8, c->created);
    sqlite3_bind_int64(st, 9, c->last_used);
    sqlite3_bind_int(st, 10, c->pinned);
    lc_text(st, 11, c->phase);
    lc_text(st, 12, c->fp);
    sqlite3_bind_int64(st, 13, c->resume_at);
    return lc_done(db, st, "checkpoint");
}

/* One row of @st (bound by the caller) into @out: 1 found, 0 none, -1 error. */
static int ck_one(struct bridge_db *db, sqlite3_stmt *st, struct bridge_db_checkpoint *out)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        ck_from_row(st, out);
    else if (rc != SQLITE_DONE)
        vms_err(NULL, NULL, "database: checkpoint: %s", sqlite3_errmsg(db->h));
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

int bridge_db_checkpoint_find(struct bridge_db *db, const char *id,
                              struct bridge_db_checkpoint *out)
{
    sqlite3_stmt *st = lc_prep(db, "SELECT " CK_COLS " FROM checkpoints WHERE id = ?1");
    if (!st)
        return -1;
    lc_text(st, 1, id);
    return ck_one(db, st, out);
}

int bridge_db_checkpoint_current(struct bridge_db *db, const char *vm,
                                 struct bridge_db_checkpoint *out)
{
    sqlite3_stmt *st = lc_prep(db, "SELECT " CK_COLS " FROM checkpoints WHERE vm = ?1 AND phase "
                                   "IN ('writing','valid','loading') ORDER BY created DESC, rowid "
                                   "DESC LIMIT 1");
    if (!st)
        return -1;
    lc_text(st, 1, vm);
    return ck_one(db, st, out);
}

int bridge_db_checkpoint_lru(struct bridge_db *db, const char *tier,
                             struct bridge_db_checkpoint *out)
{
    sqlite3_stmt *st =
        lc_prep(db, "SELECT " CK_COLS " FROM checkpoints WHERE tier = ?1 AND phase = 'valid' AND "
                    "pinned = 0 AND id NOT IN (SELECT checkpoint FROM tier_moves) "
                    "ORDER BY last_used, rowid LIMIT 1");
    if (!st)
        return -1;
    lc_text(st, 1, tier);
    return ck_one(db, st, out);
}

int bridge_db_checkpoints_each(struct bridge_db *db, const char *phase,
                               void (*fn)(void *opaque, const struct bridge_db_checkpoint *c),
                               void *opaque)
{
    sqlite3_stmt *st = lc_prep(db, "SELECT " CK_COLS " FROM checkpoints WHERE (?1 = '' AND phase "
                                   "NOT IN ('consumed','discarded')) OR phase = ?1 ORDER BY vm");
    int rc;

    if (!st)
        return -1;
    lc_text(st, 1, phase);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct bridge_db_checkpoint c;
        ck_from_row(st, &c);
        fn(opaque, &c);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int bridge_db_move_put(struct bridge_db *db, const struct bridge_db_move *m)
{
    sqlite3_stmt *st =
        lc_prep(db, "INSERT OR REPLACE INTO tier_moves (checkpoint, to_tier, "
                    "new_state_file, new_ram_file, started) VALUES (?1,?2,?3,?4,?5)");
    if (!st)
        return -1;
    lc_text(st, 1, m->checkpoint);
    lc_text(st, 2, m->to_tier);
    lc_text(st, 3, m->new_state_file);
    lc_text(st, 4, m->new_ram_file);
    sqlite3_bind_int64(st, 5, (int64_t)time(NULL));
    return lc_done(db, st, "tier move");
}

int bridge_db_move_get(struct bridge_db *db, const char *checkpoint, struct bridge_db_move *out)
{
    sqlite3_stmt *st = lc_prep(db, "SELECT checkpoint, to_tier, new_state_file, new_ram_file FROM "
                                   "tier_moves WHERE checkpoint = ?1 OR ?1 = '' LIMIT 1");
    int rc;

    if (!st)
        return -1;
    lc_text(st, 1, checkpoint);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof(*out));
        lc_col(st, 0, out->checkpoint, sizeof(out->checkpoint));
        lc_col(st, 1, out->to_tier, sizeof(out->to_tier));
        lc_col(st, 2, out->new_state_file, sizeof(out->new_state_file));
        lc_col(st, 3, out->new_ram_file, sizeof(out->new_ram_file));
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

int bridge_db_move_delete(struct bridge_db *db, const char *checkpoint)
{
    sqlite3_stmt *st = lc_prep(db, "DELETE FROM tier_moves WHERE checkpoint = ?1");
    if (!st)
        return -1;
    lc_text(st, 1, checkpoint);
    return lc_done(db, st, "tier move done");
}

int bridge_db_garbage_add(struct bridge_db *db, const char *path)
{
    sqlite3_stmt *st;
    if (!path || !*path)
        return 0;
    st = lc_prep(db, "INSERT OR IGNORE INTO tier_garbage (path) VALUES (?1)");
    if (!st)
        return -1;
    lc_text(st, 1, path);
    return lc_done(db, st, "garbage");
}

int bridge_db_garbage_collect(struct bridge_db *db)
{
    sqlite3_stmt *st = lc_prep(db, "SELECT path FROM tier_garbage");
    int n = 0;

    if (!st)
        return -1;
    while (sqlite3_step(st) == SQLITE_ROW) {
        char path[BRIDGE_PATH_MAX];
        sqlite3_stmt *del;
        lc_col(st, 0, path, sizeof(path));
        if (unlink(path) == 0)
            n++;
        else if (errno != ENOENT)
            vms_warn(NULL, NULL, "cannot delete %s: %s", path, strerror(errno));
        del = lc_prep(db, "DELETE FROM tier_garbage WHERE path = ?1");
        if (del) {
            lc_text(del, 1, path);
            lc_done(db, del, "garbage done");
        }
    }
    sqlite3_finalize(st);
    return n;
}

int bridge_db_cluster_put(struct bridge_db *db, const struct bridge_db_cluster_vm *row)
{
    sqlite3_stmt *st = lc_prep(db, "INSERT OR REPLACE INTO cluster_vms (vm, host, state, gen, ck, "
                                   "updated) VALUES (?1, ?2, ?3, ?4, ?5, strftime('%s','now'))");
    if (!st)
        return -1;
    lc_text(st, 1, row->vm);
    lc_text(st, 2, row->host);
    lc_text(st, 3, row->state);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)row->gen);
    lc_text(st, 5, row->ck);
    return lc_done(db, st, "cluster table");
}

int bridge_db_cluster_get(struct bridge_db *db, struct bridge_db_cluster_vm *row)
{
    sqlite3_stmt *st = lc_prep(db, "SELECT host, state, gen, ck FROM cluster_vms WHERE vm = ?1");
    int rc;

    if (!st)
        return -1;
    lc_text(st, 1, row->vm);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        lc_col(st, 0, row->host, sizeof(row->host));
        lc_col(st, 1, row->state, sizeof(row->state));
        row->gen = (uint64_t)sqlite3_column_int64(st, 2);
        lc_col(st, 3, row->ck, sizeof(row->ck));
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}
