/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * group-db.c — see group-db.h.
 */
#include "config.h"
#include "group-db.h"

#include <sqlite3.h>
#include <string.h>
#include <time.h>

#include "vms-log.h"

static sqlite3_stmt *prep(struct bridge_db *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK) {
        vms_err(NULL, NULL, "database: groups: %s", sqlite3_errmsg(db->h));
        return NULL;
    }
    return st;
}

/* Step @st (no rows expected) and finalize it. 0, or -1. */
static int run(struct bridge_db *db, sqlite3_stmt *st)
{
    int rc;
    if (!st)
        return -1;
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        vms_err(NULL, NULL, "database: groups: %s", sqlite3_errmsg(db->h));
        return -1;
    }
    return 0;
}

int group_db_exists(struct bridge_db *db, const char *name)
{
    sqlite3_stmt *st = prep(db, "SELECT 1 FROM groups WHERE name = ?1");
    int rc;
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

int group_db_create(struct bridge_db *db, const char *name)
{
    sqlite3_stmt *st;
    int ex = group_db_exists(db, name);

    if (ex != 0)
        return ex;
    st = prep(db, "INSERT INTO groups (name, created) VALUES (?1, ?2)");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)time(NULL));
    return run(db, st);
}

int group_db_add(struct bridge_db *db, const char *group, const char *bridge, const char *vm)
{
    sqlite3_stmt *st =
        prep(db, "INSERT OR IGNORE INTO group_members (grp, bridge, vm) VALUES (?1, ?2, ?3)");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, group, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, bridge, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, vm, -1, SQLITE_TRANSIENT);
    return run(db, st);
}

json_object *group_db_members(struct bridge_db *db, const char *group)
{
    sqlite3_stmt *st =
        prep(db, "SELECT bridge, vm FROM group_members WHERE grp = ?1 ORDER BY bridge, vm");
    json_object *a;
    int rc;

    if (!st)
        return NULL;
    a = json_object_new_array();
    sqlite3_bind_text(st, 1, group, -1, SQLITE_TRANSIENT);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_object *m = json_object_new_object();
        json_object_object_add(m, "bridge",
                               json_object_new_string((const char *)sqlite3_column_text(st, 0)));
        json_object_object_add(m, "vm",
                               json_object_new_string((const char *)sqlite3_column_text(st, 1)));
        json_object_array_add(a, m);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        json_object_put(a);
        return NULL;
    }
    return a;
}

int group_db_history_add(struct bridge_db *db, const char *group, const char *op, int64_t target_ns,
                         const char *outcome, const char *detail)
{
    sqlite3_stmt *st = prep(db, "INSERT INTO group_history (grp, at, op, target_ns, outcome, "
                                "detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, group, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)time(NULL));
    sqlite3_bind_text(st, 3, op, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, target_ns);
    sqlite3_bind_text(st, 5, outcome, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, detail ? detail : "", -1, SQLITE_TRANSIENT);
    return run(db, st);
}

json_object *group_db_history(struct bridge_db *db, const char *group, int limit)
{
    sqlite3_stmt *st = prep(db, "SELECT at, op, target_ns, outcome, detail FROM group_history "
                                "WHERE grp = ?1 ORDER BY id DESC LIMIT ?2");
    json_object *a;

    if (!st)
        return NULL;
    a = json_object_new_array();
    sqlite3_bind_text(st, 1, group, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, limit);
    while (sqlite3_step(st) == SQLITE_ROW) {
        json_object *e = json_object_new_object(), *d;
        json_object_object_add(e, "at", json_object_new_int64(sqlite3_column_int64(st, 0)));
        json_object_object_add(e, "op",
                               json_object_new_string((const char *)sqlite3_column_text(st, 1)));
        json_object_object_add(e, "target_ns", json_object_new_int64(sqlite3_column_int64(st, 2)));
        json_object_object_add(e, "outcome",
                               json_object_new_string((const char *)sqlite3_column_text(st, 3)));
        d = json_tokener_parse((const char *)sqlite3_column_text(st, 4));
        if (d)
            json_object_object_add(e, "detail", d);
        json_object_array_add(a, e);
    }
    sqlite3_finalize(st);
    return a;
}
