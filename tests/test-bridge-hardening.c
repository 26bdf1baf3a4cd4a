/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of what a hostile guest (one that writes its own frames on port
 * A) must not be able to do to the host or to other VMs and apps: grow the
 * journal past its VM's quotas, store app data through refusals, flood the
 * log, block the loop with a backlog resend, lock another app's principal
 * out, use up the VM's rate or pending share, or learn which principal
 * names exist. Real SQLite file, fake backend (test-bridge-fixture.h).
 */
#include "config.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "privsep.h"
#include "test-bridge-fixture.h"
#include "test-log-capture.h"

/* vm1: no request rate limit, for volume; vm2: a small one, shared by uids. */
static const char *conf_text =
    "[vm vm1]\nport_a=/nonexistent/a\nport_b=/nonexistent/b\nqmp=/nonexistent/q\nnodes=disk0\n"
    "rate_requests=0\nmax_pending=4\nauth_fail_max=3\nauth_fail_window=600\n"
    "max_app_data_bytes=1M\n"
    "[vm vm2]\nport_a=/nonexistent/a2\nport_b=/nonexistent/b2\nqmp=/nonexistent/q2\nnodes=disk0\n"
    "rate_requests=10\nrate_window=600\n";

static void setup(void)
{
    bfx_setup(conf_text);
}

static void teardown(void)
{
    bfx_teardown();
}

TestSuite(hardening, .init = setup, .fini = teardown);

/* One integer from the journal (the test's own view, not the bridge's counters). */
static long long sql_int(const char *sql)
{
    sqlite3_stmt *st;
    long long v;
    cr_assert_eq(sqlite3_prepare_v2(br.db.h, sql, -1, &st, NULL), SQLITE_OK, "%s", sql);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Bytes of every row vm1 has in the journal (all tables), counted the way the bridge counts them.
 */
static long long vm1_stored_bytes(void)
{
    return sql_int("SELECT (SELECT coalesce(sum(64 + length(id) + length(op) + length(app_id) + "
                   "length(principal) + coalesce(length(app_data), 0) + length(label) + "
                   "length(state_id) + length(message)), 0) FROM requests WHERE vm = 'vm1') + "
                   "(SELECT coalesce(sum(64 + length(payload) + length(request_id) + length(op) + "
                   "length(reason)), 0) FROM events WHERE vm = 'vm1') + "
                   "(SELECT coalesce(sum(64 + length(id) + length(label) + length(request_id) + "
                   "length(app_id) + length(parent)), 0) FROM states WHERE vm = 'vm1') + "
                   "(SELECT coalesce(sum(32 + length(state_id) + length(request_id)), 0) FROM "
                   "state_pending WHERE vm = 'vm1')");
}

static char *data_of(size_t n, char c)
{
    char *d = malloc(n + 1);
    memset(d, c, n);
    d[n] = '\0';
    return d;
}

/* A fresh request of @op into @vm: the status of its Reply, or of its Event when it was
 * answered at once (read from @vm's port B via @in). */
static uint32_t ask(struct bridge_vm *vm, struct vms_channel *in, const char *op,
                    const char *principal, const char *secret, const char *data)
{
    char id[VMS_REQUEST_ID_LEN + 1] = "";
    const struct vms_msg *reply;

    request(vm, id, op, principal, secret, NULL, data);
    drain(in);
    reply = answer_of(id);
    cr_assert_not_null(reply, "no answer to %s", op);
    return reply->status;
}

/*
 * A request that is journaled and completes at once, its event left unacked: a hostinfo
 * whose figures a balloon event made stale, so the (fake) backend is asked. (A list, or a
 * hostinfo the bridge knows the figures for, is answered without the journal.) Returns the
 * status of its Reply.
 */
static uint32_t journaled_request(struct bridge_vm *vm, struct vms_channel *in,
                                  char id[VMS_REQUEST_ID_LEN + 1], const char *data)
{
    bridge_vm_backend_hooks()->event(vm, "BALLOON_CHANGE");
    id[0] = '\0';
    request(vm, id, "hostinfo", "app", "s3cret", NULL, data);
    if (fake.done)
        fake_finish(VMS_STATUS_OK);
    drain(in);
    cr_assert_not_null(find(VMS_MSG_REPLY, id), "no Reply to a journaled hostinfo");
    return find(VMS_MSG_REPLY, id)->status;
}

Test(hardening, refusals_store_no_app_data)
{
    char *data = data_of(4000, 'd');

    /* "saver" may only save on vm1: each list is denied after authentication */
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(ask(&vm1, &in1, "list", "saver", "s3cret", data), VMS_STATUS_ERR_DENIED);
    }
    free(data);
    cr_assert_eq(sql_int("SELECT count(*) FROM requests WHERE vm = 'vm1' AND status = 'refused'"),
                 20);
    cr_assert_eq(sql_int("SELECT coalesce(max(length(app_data)), 0) FROM requests"), 0);
    cr_assert_lt(sql_int("SELECT max(length(payload)) FROM events WHERE vm = 'vm1'"), 1000,
                 "a refusal's event kept the app data");
}

Test(hardening, app_data_quota_counts_unacked_events)
{
    char id[VMS_REQUEST_ID_LEN + 1];
    char *data = data_of(60000, 'e');
    int accepted = 0;

    /* journaled requests that complete at once; their events (with the app data) stay
     * unacked */
    for (int i = 0; i < 40; i++)
        accepted += journaled_request(&vm1, &in1, id, data) == VMS_STATUS_OK;
    free(data);
    /* 1 MiB: the request rows and the events each hold 60000 bytes until acked */
    cr_assert_leq(accepted, 9, "%d accepted", accepted);
    cr_assert_geq(accepted, 8, "%d accepted", accepted);
}

Test(hardening, per_vm_byte_counter_matches_the_tables)
{
    char id[VMS_REQUEST_ID_LEN + 1];

    for (int i = 0; i < 5; i++) {
        id[0] = '\0';
        request(&vm1, id, "list", "app", "s3cret", NULL, "some app data");
        drain(&in1);
        id[0] = '\0';
        request(&vm1, id, "list", "saver", "s3cret", NULL, "denied");
        drain(&in1);
    }
    cr_assert_eq(bridge_db_journal_bytes(&br.db, "vm1"), vm1_stored_bytes());
    cr_assert_gt(vm1_stored_bytes(), 0);
}

Test(hardening, backlog_resend_is_bounded_per_turn)
{
    char id[VMS_REQUEST_ID_LEN + 1];
    uint64_t last_seq = 0;
    int events = 0, total = 0, turns = 0;

    for (int i = 0; i < 40; i++)
        journaled_request(&vm1, &in1, id, NULL); /* never acked */
    send_hello(&vm1, 7, 0);
    drain(&in1);
    events = count_got(VMS_MSG_EVENT);
    cr_assert_leq(events, 16, "a Hello resent %d events in one turn", events);
    cr_assert_gt(events, 0);
    /* the rest follows, a few per loop turn, in order */
    total = events;
    for (int i = 0; i < n_got; i++)
        if (got[i].type == VMS_MSG_EVENT) {
            cr_assert_gt(got[i].seq, last_seq);
            last_seq = got[i].seq;
        }
    while (total < 40 && turns++ < 20) {
        bridge_vm_tick(&vm1, vm1.now);
        drain(&in1);
        for (int i = 0; i < n_got; i++) {
            cr_assert_eq(got[i].type, VMS_MSG_EVENT);
            cr_assert_gt(got[i].seq, last_seq);
            last_seq = got[i].seq;
            total++;
        }
        cr_assert_leq(n_got, 16);
    }
    cr_assert_eq(total, 40);
}

Test(hardening, guest_cannot_flood_the_log)
{
    struct log_capture cap;
    char id[VMS_REQUEST_ID_LEN + 1], *text;
    size_t lines;

    vms_log_init("test", LOG_INFO);
    log_capture_start(&cap);
    for (int i = 0; i < 3000; i++) {
        struct vms_msg m;
        vms_msg_init(&m, VMS_MSG_WELCOME); /* a host-to-guest message on port A */
        bridge_guest_input(&vm2, &vm2.a.ch, &m);
        vms_msg_clear(&m);
    }
    for (int i = 0; i < 3000; i++) {
        id[0] = '\0';
        request(&vm2, id, "list", "app", "s3cret", NULL, NULL);
        drain(&in2);
    }
    for (int i = 0; i < 300; i++) { /* refusals after authentication: journaled */
        id[0] = '\0';
        request(&vm1, id, "list", "saver", "s3cret", NULL, NULL);
        drain(&in1);
    }
    text = log_capture_stop(&cap, &lines);
    cr_assert_lt(lines, 100, "%zu lines for 6300 hostile messages", lines);
    free(text);
    /* after the window, one summary per reason */
    log_capture_start(&cap);
    bridge_vm_tick(&vm2, vm2.now + VMS_LOG_WINDOW + 1);
    text = log_capture_stop(&cap, &lines);
    vms_log_init("test", LOG_ERR);
    cr_assert_not_null(strstr(text, "similar messages (unexpected messages) suppressed"), "%s",
                       text);
    cr_assert_not_null(strstr(text, "similar messages (refused requests) suppressed"), "%s", text);
    free(text);
}

Test(hardening, wrong_secrets_from_one_uid_do_not_lock_out_another)
{

    fake.ready = 0;
    request_uid = 1001;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(ask(&vm1, &in1, "list", "app", "guess", NULL), VMS_STATUS_ERR_AUTH);
    }
    cr_assert_eq(ask(&vm1, &in1, "list", "app", "s3cret", NULL), VMS_STATUS_ERR_RATE_LIMITED);
    /* the app that owns the principal runs as another uid: not locked out */
    request_uid = 1000;
    cr_assert_eq(ask(&vm1, &in1, "list", "app", "s3cret", NULL), VMS_STATUS_OK);
}

Test(hardening, unknown_and_known_principals_answer_alike)
{
    static const char *const names[] = {"app", "ghost1", "ghost2", "saver"};
    uint32_t answers[4][5];

    fake.ready = 0;
    for (int n = 0; n < 4; n++)
        for (int i = 0; i < 5; i++) {
            answers[n][i] = ask(&vm1, &in1, "save", names[n], "guess", NULL);
        }
    for (int n = 1; n < 4; n++)
        for (int i = 0; i < 5; i++)
            cr_assert_eq(answers[n][i], answers[0][i], "%s attempt %d: %u, app: %u", names[n], i,
                         answers[n][i], answers[0][i]);
    cr_assert_eq(answers[0][0], VMS_STATUS_ERR_AUTH);
    cr_assert_eq(answers[0][4], VMS_STATUS_ERR_RATE_LIMITED);
}

Test(hardening, one_uid_gets_a_share_of_pending_and_rate)
{
    int ok = 0;

    /* vm1: max_pending 4, so 2 per uid */
    fake.ready = 0;
    request_uid = 1000;
    for (int i = 0; i < 4; i++) {
        ok += ask(&vm1, &in1, "hostinfo", "app", "s3cret", NULL) == VMS_STATUS_OK;
    }
    cr_assert_eq(ok, 2, "uid 1000 got %d of 4 pending slots", ok);
    request_uid = 1001;
    cr_assert_eq(ask(&vm1, &in1, "hostinfo", "app", "s3cret", NULL), VMS_STATUS_OK);
    /* vm2: 10 requests per window, 5 per uid */
    fake.ready = 1;
    ok = 0;
    request_uid = 1000;
    for (int i = 0; i < 10; i++) {
        ok += ask(&vm2, &in2, "list", "app", "s3cret", NULL) == VMS_STATUS_OK;
    }
    cr_assert_eq(ok, 5, "uid 1000 got %d of 10", ok);
    request_uid = 1001;
    cr_assert_eq(ask(&vm2, &in2, "list", "app", "s3cret", NULL), VMS_STATUS_OK);
}

/* ---- the hard per-VM journal cap ---- */

static const char *cap_conf_text =
    "[vm vm1]\nport_a=/nonexistent/a\nport_b=/nonexistent/b\nqmp=/nonexistent/q\nnodes=disk0\n"
    "rate_requests=0\nmax_journal_bytes=100K\nmax_app_data_bytes=0\n"
    "[vm vm2]\nport_a=/nonexistent/a2\nport_b=/nonexistent/b2\nqmp=/nonexistent/q2\nnodes=disk0\n";

static void cap_setup(void)
{
    bfx_setup(cap_conf_text);
}

TestSuite(journal_cap, .init = cap_setup, .fini = teardown);

Test(journal_cap, a_vm_cannot_grow_the_journal_past_its_cap)
{
    char id[VMS_REQUEST_ID_LEN + 1];
    char *data = data_of(8000, 'f');
    int quota = 0;

    for (int i = 0; i < 400; i++) {
        /* denied refusals, then journaled requests with app data, never acked */
        if (i % 2) {
            id[0] = '\0';
            request(&vm1, id, "list", "saver", "s3cret", NULL, NULL);
            drain(&in1);
            quota += find(VMS_MSG_REPLY, id)->status == VMS_STATUS_ERR_QUOTA;
        } else {
            quota += journaled_request(&vm1, &in1, id, data) == VMS_STATUS_ERR_QUOTA;
        }
    }
    free(data);
    cr_assert_gt(quota, 0);
    cr_assert_leq(vm1_stored_bytes(), 100 * 1024, "%lld bytes", vm1_stored_bytes());
    cr_assert_eq(bridge_db_journal_bytes(&br.db, "vm1"), vm1_stored_bytes());
    /* the other VM is not affected */
    cr_assert_eq(ask(&vm2, &in2, "list", "app", "s3cret", "x"), VMS_STATUS_OK);
}

/* ---- opening the journal: permissions, and files the bridge must not touch ---- */

static char open_dir[64];

static void open_setup(void)
{
    vms_log_init("test", LOG_ERR);
    snprintf(open_dir, sizeof(open_dir), "/tmp/test-db-open-XXXXXX");
    cr_assert_not_null(mkdtemp(open_dir));
}

static void open_teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", open_dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(db_open, .init = open_setup, .fini = open_teardown);

static void path_in_dir(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", open_dir, name);
}

static unsigned mode_of(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "%s", path);
    return (unsigned)(st.st_mode & 0777);
}

Test(db_open, database_wal_and_shm_are_private_whatever_the_umask)
{
    char path[128], side[160], err[512];
    struct bridge_db db;
    mode_t old = umask(022);

    path_in_dir(path, sizeof(path), "j.db");
    cr_assert_eq(bridge_db_open(&db, path, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(bridge_db_principal_add(&db, "p", "hash"), 0); /* the WAL gets written */
    cr_assert_eq(mode_of(path), 0600, "database %03o", mode_of(path));
    snprintf(side, sizeof(side), "%s-wal", path);
    cr_assert_eq(mode_of(side), 0600, "WAL %03o", mode_of(side));
    snprintf(side, sizeof(side), "%s-shm", path);
    cr_assert_eq(mode_of(side), 0600, "SHM %03o", mode_of(side));
    bridge_db_close(&db);
    umask(old);
}

/* Read all of @path (at most 64 KiB) into @buf; its length. */
static size_t slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    size_t n;
    cr_assert_not_null(f, "%s", path);
    n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

Test(db_open, corrupt_file_refused_untouched_with_advice)
{
    static char before[65536], after[65536];
    char path[128], err[512];
    struct bridge_db db;
    size_t n, m;
    FILE *f;

    path_in_dir(path, sizeof(path), "j.db");
    /* a real journal whose pages are then overwritten */
    cr_assert_eq(bridge_db_open(&db, path, err, sizeof(err)), 0, "%s", err);
    bridge_db_close(&db);
    f = fopen(path, "r+b");
    cr_assert_not_null(f);
    fseek(f, 4096, SEEK_SET);
    for (int i = 0; i < 4096; i++)
        fputc(0x5a, f);
    fclose(f);
    n = slurp(path, before, sizeof(before));
    cr_assert_eq(bridge_db_open(&db, path, err, sizeof(err)), -1, "a corrupt journal was opened");
    cr_assert_not_null(strstr(err, path), "%s", err);
    cr_assert_not_null(strstr(err, "corrupt"), "%s", err);
    cr_assert_not_null(strstr(err, "restore it from a backup"), "%s", err);
    m = slurp(path, after, sizeof(after));
    cr_assert(n == m && !memcmp(before, after, n), "the corrupt file was changed");

    /* not a database at all */
    f = fopen(path, "wb");
    cr_assert_not_null(f);
    fputs("this is a text file, not a journal\n", f);
    fclose(f);
    cr_assert_eq(bridge_db_open(&db, path, err, sizeof(err)), -1);
    cr_assert_not_null(strstr(err, "not a vmstate database"), "%s", err);
    n = slurp(path, after, sizeof(after));
    cr_assert_eq(n, strlen("this is a text file, not a journal\n"), "the file was changed");
}

Test(db_open, newer_schema_refused_untouched_with_advice)
{
    static char before[65536], after[65536];
    char path[128], err[512];
    struct bridge_db db;
    size_t n, m;

    path_in_dir(path, sizeof(path), "j.db");
    cr_assert_eq(bridge_db_open(&db, path, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(sqlite3_exec(db.h, "PRAGMA user_version=9999; PRAGMA journal_mode=DELETE", NULL,
                              NULL, NULL),
                 SQLITE_OK);
    bridge_db_close(&db);
    n = slurp(path, before, sizeof(before));
    cr_assert_eq(bridge_db_open(&db, path, err, sizeof(err)), -1);
    cr_assert_not_null(strstr(err, path), "%s", err);
    cr_assert_not_null(strstr(err, "newer"), "%s", err);
    cr_assert_not_null(strstr(err, "run that version"), "%s", err);
    m = slurp(path, after, sizeof(after));
    cr_assert(n == m && !memcmp(before, after, n), "the newer journal was changed");
}

Test(db_open, journal_locked_by_another_process_refused_with_advice, .timeout = 30)
{
    char path[128], err[512];
    struct bridge_db db;
    sqlite3 *other;

    path_in_dir(path, sizeof(path), "j.db");
    cr_assert_eq(bridge_db_open(&db, path, err, sizeof(err)), 0, "%s", err);
    bridge_db_close(&db);
    /* another process (here: another connection) keeps the write lock */
    cr_assert_eq(sqlite3_open(path, &other), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    cr_assert_eq(bridge_db_open(&db, path, err, sizeof(err)), -1, "opened a locked journal");
    cr_assert_not_null(strstr(err, path), "%s", err);
    cr_assert_not_null(strstr(err, "locked by another process"), "%s", err);
    sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(other);
    cr_assert_eq(bridge_db_open(&db, path, err, sizeof(err)), 0, "%s", err);
    bridge_db_close(&db);
}

/* ---- the guest reader's confinement ---- */

/*
 * In a child (running as @uid if not -1, like a bridge not started as root):
 * confine like a reader into @root, then try to open a file.
 */
static void confined_open(const char *root, int required, int uid, int *sig, int *code)
{
    int status;
    pid_t pid = fork();

    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int fd;
        if (uid >= 0 && (setresgid(uid, uid, uid) < 0 || setresuid(uid, uid, uid) < 0))
            _exit(4);
        if (bridge_privsep_sandbox("vm1", root, required) < 0)
            _exit(2);
        if (getuid() == 0)
            _exit(3); /* still root */
        fd = open("/etc/passwd", O_RDONLY);
        _exit(fd >= 0 ? 1 : 0);
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    *sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    *code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

Test(db_open, reader_cannot_open_a_file)
{
    char root[128];
    int sig, code;

    path_in_dir(root, sizeof(root), "empty");
    cr_assert_eq(mkdir(root, 0555), 0);
    cr_assert_eq(chmod(open_dir, 0755), 0);
    /* as root (uid nobody after), and as another user (a user namespace) */
    for (int as_user = 0; as_user < 2; as_user++) {
        if (as_user && geteuid() != 0)
            break; /* already the other user: the first round was it */
        confined_open(root, 1, as_user ? 65534 : -1, &sig, &code);
        if (bridge_privsep_seccomp_built())
            cr_assert_eq(sig, SIGSYS, "open() was not killed by seccomp (signal %d, exit %d)", sig,
                         code);
        else
            cr_assert_eq(code, 0, "a confined reader opened a file (signal %d, exit %d)", sig,
                         code);
    }
}

Test(db_open, reader_fails_closed_without_its_empty_root)
{
    int sig, code;

    confined_open("/nonexistent/empty", 1, -1, &sig, &code);
    cr_assert_eq(code, 2, "an unconfinable reader went on (signal %d, exit %d)", sig, code);
}

/* A bridge killed with SIGKILL leaves its readers' empty root behind: the next bridge
 * removes the empty ones no live bridge holds, whatever PID namespace that bridge is in. */
Test(db_open, stale_empty_roots_of_dead_bridges_removed)
{
    char base[] = "/tmp/vms-roots-XXXXXX", stale[128], full[128], held[128], file[160];
    int go[2], fd;
    pid_t live;
    char c;

    cr_assert_not_null(mkdtemp(base));
    snprintf(stale, sizeof(stale), "%s/vmstate-bridged-empty.dead01", base);
    snprintf(full, sizeof(full), "%s/vmstate-bridged-empty.full01", base);
    snprintf(held, sizeof(held), "%s/vmstate-bridged-empty.live01", base);
    snprintf(file, sizeof(file), "%s/something", full);
    cr_assert(mkdir(stale, 0555) == 0 && mkdir(full, 0755) == 0 && mkdir(held, 0555) == 0);
    fd = open(file, O_CREAT | O_WRONLY, 0600);
    cr_assert_geq(fd, 0);
    close(fd);
    /* a live bridge: holds its root's lock as bridge_privsep_prepare() does */
    cr_assert_eq(pipe(go), 0);
    live = fork();
    cr_assert_geq(live, 0);
    if (live == 0) {
        int h = open(held, O_RDONLY | O_DIRECTORY);
        if (h < 0 || flock(h, LOCK_SH) < 0)
            _exit(1);
        close(go[0]);
        if (write(go[1], "x", 1) != 1)
            _exit(1);
        pause();
        _exit(0);
    }
    close(go[1]);
    cr_assert_eq(read(go[0], &c, 1), 1, "the live bridge's stand-in did not lock");
    close(go[0]);

    setenv("RUNTIME_DIRECTORY", base, 1);
    cr_assert_eq(bridge_privsep_prepare(1), 0);
    cr_assert_eq(access(stale, F_OK), -1, "a dead bridge's empty root was left");
    cr_assert_eq(access(held, F_OK), 0, "a live bridge's root was removed");
    cr_assert_eq(access(file, F_OK), 0, "a root that is not empty was touched");
    kill(live, SIGKILL);
    waitpid(live, NULL, 0);
    /* its own is made and held: another bridge's sweep leaves it */
    {
        int n = 0;
        DIR *d = opendir(base);
        struct dirent *e;

        while ((e = readdir(d)))
            if (!strncmp(e->d_name, "vmstate-bridged-empty.", 22) &&
                strcmp(e->d_name, "vmstate-bridged-empty.live01") &&
                strcmp(e->d_name, "vmstate-bridged-empty.full01")) {
                char path[300];
                int h;

                n++;
                snprintf(path, sizeof(path), "%s/%s", base, e->d_name);
                h = open(path, O_RDONLY | O_DIRECTORY);
                cr_assert_geq(h, 0);
                cr_assert_neq(flock(h, LOCK_EX | LOCK_NB), 0, "the bridge does not hold its root");
                close(h);
            }
        closedir(d);
        cr_assert_eq(n, 1, "%d roots of this bridge", n);
    }
    bridge_privsep_cleanup();
    unlink(file);
    rmdir(full);
    rmdir(held);
    cr_assert_eq(rmdir(base), 0, "the bridge's own root was left at its exit");
    unsetenv("RUNTIME_DIRECTORY");
}

/* ---- disk full while journaling (SQLite's size limit stands for the disk) ---- */

TestSuite(journal_full, .init = setup, .fini = teardown);

/* No page more for the journal: what a full disk does to SQLite (SQLITE_FULL). */
static void journal_disk_full(int full)
{
    char sql[96];
    snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %lld",
             full ? sql_int("PRAGMA page_count") : 1000000LL);
    cr_assert_eq(sqlite3_exec(br.db.h, sql, NULL, NULL, NULL), SQLITE_OK);
}

Test(journal_full, disk_full_fails_clearly_keeps_accepted_work_and_recovers)
{
    char save_id[VMS_REQUEST_ID_LEN + 1] = "", id[VMS_REQUEST_ID_LEN + 1] = "";
    char *data = data_of(8000, 's');
    const struct vms_msg *rep, *ev;
    char integrity[64];
    sqlite3_stmt *st;

    request(&vm1, save_id, "save", "app", "s3cret", NULL, data); /* accepted, running */
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_REPLY, save_id)->status, VMS_STATUS_OK);
    cr_assert_eq(fake.last_op, VMS_OP_SAVE);
    journal_disk_full(1);
    /* a new request cannot be journaled: refused, with a Reply and an Event that say why */
    request(&vm1, id, "hostinfo", "app", "s3cret", NULL, data);
    drain(&in1);
    rep = find(VMS_MSG_REPLY, id);
    ev = find(VMS_MSG_EVENT, id);
    cr_assert_not_null(rep);
    cr_assert_neq(rep->status, VMS_STATUS_OK);
    cr_assert_not_null(ev, "no event for a request the full journal refused");
    cr_assert_not_null(strstr(ev->message, "disk full"), "%s", ev->message);
    /* the accepted save completes on the hypervisor: its completion cannot be journaled yet */
    fake_finish(VMS_STATUS_OK);
    drain(&in1);
    cr_assert_null(find(VMS_MSG_EVENT, save_id), "an event was sent that the journal lacks");
    bridge_vm_tick(&vm1, vm1.now + 2 * BRIDGE_JOURNAL_RETRY);
    drain(&in1);
    cr_assert_null(find(VMS_MSG_EVENT, save_id));
    /* space comes back: the kept completion is journaled and sent; new requests work */
    journal_disk_full(0);
    bridge_vm_tick(&vm1, vm1.now + 2 * BRIDGE_JOURNAL_RETRY);
    drain(&in1);
    ev = find(VMS_MSG_EVENT, save_id);
    cr_assert_not_null(ev, "the accepted save's completion was lost");
    cr_assert_eq(ev->status, VMS_STATUS_OK);
    cr_assert_eq(sql_int("SELECT count(*) FROM states WHERE vm = 'vm1'"), 1);
    id[0] = '\0';
    request(&vm1, id, "list", "app", "s3cret", NULL, NULL);
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_EVENT, id)->status, VMS_STATUS_OK);
    cr_assert_eq(sqlite3_prepare_v2(br.db.h, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    snprintf(integrity, sizeof(integrity), "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    cr_assert_str_eq(integrity, "ok");
    cr_assert_eq(bridge_db_journal_bytes(&br.db, "vm1"), vm1_stored_bytes());
    free(data);
}

/* Each Hello costs a Welcome and a resend of what is unacked: a guest gets
 * BRIDGE_HELLO_BURST of them per BRIDGE_HELLO_WINDOW, the rest unanswered; the bucket refills
 * with time. (The helper's clock rounds use TimeProbes, not Hellos, to stay well inside.) */
Test(hardening, hello_flood_answered_up_to_the_bucket)
{
    int welcomes = 0;

    vm1.now = 1000.0;
    for (int i = 0; i < 3 * BRIDGE_HELLO_BURST; i++) {
        send_hello(&vm1, 100 + (uint64_t)i, 0);
        drain(&in1);
        welcomes += count_got(VMS_MSG_WELCOME);
    }
    cr_assert_eq(welcomes, BRIDGE_HELLO_BURST, "%d of %d Hellos welcomed", welcomes,
                 3 * BRIDGE_HELLO_BURST);
    /* one window later the guest is welcomed again */
    vm1.now += BRIDGE_HELLO_WINDOW;
    send_hello(&vm1, 9, 0);
    drain(&in1);
    cr_assert(n_got >= 1 && got[0].type == VMS_MSG_WELCOME && got[0].nonce == 9);
}
