/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vsbench-sqlite — the journal's floor for the native bench bed (bench/bench-native.py):
 * SQLite transactions with the bridge journal's durability settings (host-bridge/journal/db.c:
 * journal_mode=WAL, synchronous=FULL, BEGIN IMMEDIATE), no vmstate code.
 *
 *   vsbench-sqlite DB N      N empty transactions (BEGIN IMMEDIATE; COMMIT: SQLite writes
 *                            nothing, so no fsync), then N transactions that insert one small
 *                            row (a durable commit: WAL append + fsync); prints "empty: " and
 *                            "row: " statistics lines (after 10 untimed of each)
 *
 * DB should sit on the file system the bridge's journal uses (fsync cost differs by medium).
 */
#define _GNU_SOURCE
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "vsbench-common.h"

static sqlite3 *db;

static void exec(const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "vsbench-sqlite: %s: %s\n", sql, msg ? msg : sqlite3_errmsg(db));
        exit(1);
    }
}

int main(int argc, char **argv)
{
    size_t n = argc == 3 ? strtoul(argv[2], NULL, 10) : 0;
    if (n == 0) {
        fprintf(stderr, "usage: vsbench-sqlite DB N\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (sqlite3_open(argv[1], &db) != SQLITE_OK) {
        fprintf(stderr, "vsbench-sqlite: %s: %s\n", argv[1], sqlite3_errmsg(db));
        return 1;
    }
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=FULL");
    exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)");
    sqlite3_stmt *ins;
    if (sqlite3_prepare_v2(db, "INSERT INTO t (v) VALUES ('x')", -1, &ins, NULL) != SQLITE_OK)
        return 1;
    uint64_t *s = calloc(n, sizeof(*s));
    if (!s)
        return 1;
    for (int row = 0; row < 2; row++) {
        for (size_t i = 0; i < 10 + n; i++) {
            uint64_t t0 = vsbench_now_ns();
            exec("BEGIN IMMEDIATE");
            if (row && (sqlite3_step(ins) != SQLITE_DONE || sqlite3_reset(ins) != SQLITE_OK)) {
                fprintf(stderr, "vsbench-sqlite: insert: %s\n", sqlite3_errmsg(db));
                return 1;
            }
            exec("COMMIT");
            if (i >= 10)
                s[i - 10] = vsbench_now_ns() - t0;
        }
        vsbench_report(row ? "row: " : "empty: ", s, n);
    }
    sqlite3_finalize(ins);
    sqlite3_close(db);
    return 0;
}
