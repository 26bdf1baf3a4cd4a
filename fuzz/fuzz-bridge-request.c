/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fuzz-bridge-request — the bridge's whole guest-facing path: bytes as a
 * guest writes them on port A go through the channel (deframe, decode,
 * schema checks) into bridge_guest_input() (per-op validation, duplicate
 * check, Argon2id authentication, rights, quotas, journal in SQLite, Reply
 * and Event encoding onto port B), and accepted requests are completed by a
 * fake backend (the save/restore/timeline journal paths).
 *
 * The database is in memory, opened once; the principal "app" (secret
 * "s3cret", minimum hash cost) may do everything on VM "vm1", "saver" only
 * save. Between inputs every table but those two fixture tables (principals,
 * rights: only the admin path writes them) is emptied, so each input starts
 * from the same journal: the tables are read from sqlite_master once (a table
 * added by a later migration is emptied too) and their DELETEs prepared once
 * (parsing them per input cost more than the input itself). The VM is
 * initialised, started (journal recovery included) and freed per input.
 * Pruning is off at start (journal_keep_days=0: at start the journal is empty
 * here, so it only cost time, ~35% of it); instead, after an input that
 * journaled something, bridge_db_prune() runs over what that input made, with
 * every finished request old enough to go.
 * Seeds: fuzz/corpus/bridge-request/ (tests/bridge/make-bridge-seeds.c writes
 * them).
 */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "bridge.h"
#include "vms-log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct bridge_backend {
    bridge_backend_done_fn done;
    void *opaque;
};
static struct bridge_backend fake;

static struct bridge_backend *f_open(const struct bridge_vm_config *c, struct bridge_loop *l,
                                     unsigned a, unsigned b, const struct bridge_backend_hooks *h,
                                     void *o)
{
    (void)c;
    (void)l;
    (void)a;
    (void)b;
    (void)h;
    (void)o;
    return &fake;
}
static void f_close(struct bridge_backend *b)
{
    (void)b;
}
static int f_ready(struct bridge_backend *b)
{
    (void)b;
    return 1;
}
static void f_tick(struct bridge_backend *b, double n)
{
    (void)b;
    (void)n;
}
static int f_rec(struct bridge_backend *b, bridge_backend_done_fn d, void *o)
{
    if (b->done)
        return -1;
    b->done = d;
    b->opaque = o;
    return 0;
}
static int f_job(struct bridge_backend *b, const char *t, const char *j, bridge_backend_done_fn d,
                 void *o)
{
    (void)t;
    (void)j;
    return f_rec(b, d, o);
}
static int f_recover(struct bridge_backend *b, enum vms_op op, const char *t, const char *j,
                     bridge_backend_done_fn d, void *o)
{
    (void)op;
    (void)t;
    (void)j;
    return f_rec(b, d, o);
}
static int f_has(struct bridge_backend *b, const char *t, bridge_backend_done_fn d, void *o)
{
    (void)t;
    return f_rec(b, d, o);
}
static int f_mem(struct bridge_backend *b, bridge_backend_done_fn d, void *o)
{
    return f_rec(b, d, o);
}
static int f_balloon(struct bridge_backend *b, uint64_t n, bridge_backend_done_fn d, void *o)
{
    (void)n;
    return f_rec(b, d, o);
}
static const struct bridge_backend_ops fake_ops = {
    .name = "fuzz",
    .open = f_open,
    .close = f_close,
    .is_ready = f_ready,
    .tick = f_tick,
    .save = f_job,
    .restore = f_job,
    .delete = f_job,
    .recover = f_recover,
    .has_snapshot = f_has,
    .query_memory = f_mem,
    .set_balloon = f_balloon,
};

static struct bridge_config cfg;
static struct bridge br;
static int devnull = -1;

#define MAX_TABLES 32
static sqlite3_stmt *empty_table[MAX_TABLES]; /* DELETE FROM each non-fixture table */
static unsigned n_tables;

/* Prepare one DELETE per table an input may have written (all but the fixture's). */
static void prepare_reset(void)
{
    sqlite3_stmt *list;

    if (sqlite3_prepare_v2(br.db.h,
                           "SELECT name FROM sqlite_master WHERE type = 'table' AND "
                           "name NOT IN ('principals', 'rights') AND name NOT LIKE 'sqlite_%'",
                           -1, &list, NULL) != SQLITE_OK)
        abort();
    while (sqlite3_step(list) == SQLITE_ROW) {
        char sql[128];
        if (n_tables == MAX_TABLES)
            abort();
        snprintf(sql, sizeof(sql), "DELETE FROM \"%s\"", sqlite3_column_text(list, 0));
        if (sqlite3_prepare_v2(br.db.h, sql, -1, &empty_table[n_tables++], NULL) != SQLITE_OK)
            abort();
    }
    sqlite3_finalize(list);
}

static void reset_journal(void)
{
    for (unsigned i = 0; i < n_tables; i++)
        if (sqlite3_step(empty_table[i]) != SQLITE_DONE ||
            sqlite3_reset(empty_table[i]) != SQLITE_OK)
            abort();
}

static void init_once(void)
{
    char err[512], hash[crypto_pwhash_STRBYTES];
    static const char conf[] =
        "[bridge]\njournal_keep_days=0\n[vm vm1]\nport_a=/nonexistent/a\nport_b=/nonexistent/b\n"
        "qmp=/nonexistent/q\nnodes=disk0\nmax_states=4\nmax_pending=4\n"
        "max_app_data_bytes=200000\nmem_max=1G\nrate_requests=0\n";

    vms_log_init("fuzz", getenv("FUZZ_LOG") ? LOG_DEBUG : -1);
    if (bridge_config_load_string(&cfg, "fuzz.conf", conf, err, sizeof(err)) < 0)
        abort();
    br.cfg = &cfg;
    br.backend = &fake_ops;
    br.loop.epfd = -1;
    if (bridge_db_open(&br.db, ":memory:", err, sizeof(err)) < 0)
        abort();
    if (bridge_secret_hash("s3cret", BRIDGE_PWHASH_OPS_TEST, BRIDGE_PWHASH_MEM_TEST, hash) < 0 ||
        bridge_db_principal_add(&br.db, "app", hash) < 0 ||
        bridge_db_principal_add(&br.db, "saver", hash) < 0 ||
        bridge_db_right_grant(&br.db, "app", "vm1", "all") < 0 ||
        bridge_db_right_grant(&br.db, "saver", "vm1", "save") < 0)
        abort();
    prepare_reset();
    devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    struct bridge_vm vm;
    int changes;

    if (!ready) {
        init_once();
        ready = 1;
    }
    reset_journal();
    memset(&fake, 0, sizeof(fake));
    if (bridge_vm_init(&vm, &br, &cfg.vms[0]) < 0 || bridge_vm_start(&vm) < 0)
        abort();
    vms_channel_attach(&vm.b.ch, dup(devnull));
    changes = sqlite3_total_changes(br.db.h);
    vms_channel_feed(&vm.a.ch, data, size, bridge_guest_input, &vm);
    /* complete what the input started (each completion may start the next) */
    for (int i = 0; i < 16 && fake.done; i++) {
        struct bridge_backend_result r = {.status = (i & 1) ? VMS_STATUS_ERR_BACKEND : 0,
                                          .mem_bytes = 1u << 27};
        bridge_backend_done_fn done = fake.done;
        fake.done = NULL;
        done(fake.opaque, &r);
    }
    if (sqlite3_total_changes(br.db.h) != changes && bridge_db_prune(&br.db, "vm1", INT64_MAX) < 0)
        abort();
    bridge_vm_free(&vm);
    return 0;
}
