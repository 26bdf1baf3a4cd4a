/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of managed VMs' logic that needs no QEMU: the configuration of managed VMs and
 * tiers (defaults, refusals naming the key), and the journal's part (reservations per tier,
 * the least recently used demotable checkpoint, moves, garbage) on a real SQLite file.
 * The lifecycle against a real QEMU is tests/lifecycle/test-lifecycle-system.py.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge-config.h"
#include "db-lifecycle.h"
#include "managed-int.h"

static const char managed_conf[] = "[bridge]\n"
                                   "admin_socket = /run/vmstate/admin.sock\n"
                                   "lifecycle_per_minute = 30\n"
                                   "lifecycle_bandwidth = 256M\n"
                                   "[tier fast]\n"
                                   "path = /dev/shm/t\n"
                                   "capacity = 4G\n"
                                   "class = fast\n"
                                   "[tier slow]\n"
                                   "path = /var/lib/t\n"
                                   "capacity = 100G\n"
                                   "class = slow\n"
                                   "shared = yes\n"
                                   "[vm m1]\n"
                                   "managed = yes\n"
                                   "memory = 512M\n"
                                   "rapid = best-effort\n"
                                   "fast_tier = fast\n"
                                   "slow_tier = slow\n"
                                   "run_dir = /run/vmstate/m1\n"
                                   "nodes = disk0\n"
                                   "qemu_args = -accel tcg -display none\n"
                                   "  -append \"console=ttyS0 quiet\"\n"
                                   "  -drive file={run}/d.qcow2,if=virtio\n";

Test(lifecycle, managed_config_defaults_and_template)
{
    struct bridge_config cfg;
    char err[512] = "";
    const struct bridge_vm_config *vm;
    const struct bridge_tier_config *t;

    cr_assert_eq(bridge_config_load_string(&cfg, "m.conf", managed_conf, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_str_eq(cfg.admin_socket, "/run/vmstate/admin.sock");
    cr_assert_eq(cfg.lifecycle_per_minute, 30);
    cr_assert_eq(cfg.lifecycle_bandwidth, 256ull << 20);
    cr_assert_eq(cfg.state_margin, 64ull << 20, "default margin");
    cr_assert_eq(cfg.n_tiers, 2);
    t = bridge_config_tier(&cfg, "slow");
    cr_assert(t && !t->fast && t->shared && t->capacity == 100ull << 30);
    vm = bridge_config_vm(&cfg, "m1");
    cr_assert(vm && vm->managed && vm->rapid == BRIDGE_RAPID_BEST_EFFORT);
    cr_assert_eq(vm->memory_bytes, 512ull << 20);
    cr_assert_str_eq(vm->qmp, "/run/vmstate/m1/qmp.sock", "sockets default to run_dir");
    cr_assert_str_eq(vm->port_a, "/run/vmstate/m1/a.sock");
    cr_assert_str_eq(vm->qemu, "qemu-system-x86_64");
    cr_assert_eq(vm->stop_timeout, 30);
    /* continuation lines are joined with one blank */
    cr_assert_str_eq(vm->qemu_args, "-accel tcg -display none -append \"console=ttyS0 quiet\" "
                                    "-drive file={run}/d.qcow2,if=virtio");
    bridge_config_free(&cfg);
}

static void expect_error(const char *text, const char *want)
{
    struct bridge_config cfg;
    char err[512] = "";

    cr_assert_eq(bridge_config_load_string(&cfg, "bad.conf", text, err, sizeof(err)), -1,
                 "accepted: %s", text);
    cr_assert(strstr(err, want) != NULL, "error '%s' does not contain '%s'", err, want);
    bridge_config_free(&cfg);
}

Test(lifecycle, managed_config_refusals_name_the_key)
{
    expect_error("[vm a]\nmanaged = yes\nnodes = d\nslow_tier = s\n", "memory: required");
    expect_error("[vm a]\nmanaged = yes\nmemory = 1G\nnodes = d\nrapid = on\n",
                 "rapid: needs fast_tier");
    expect_error("[vm a]\nmanaged = yes\nmemory = 1G\nnodes = d\nfast_tier = nope\n",
                 "fast_tier: no [tier nope]");
    expect_error("[tier f]\npath = /x\ncapacity = 1G\n[vm a]\nmanaged = yes\nmemory = 1G\n"
                 "nodes = d\nrapid = best-effort\nfast_tier = f\n",
                 "best-effort needs one to fall back to");
    expect_error("[vm a]\nmanaged = yes\nmemory = 1G\nnodes = d\n", "needs a tier");
    expect_error("[vm a]\nrapid = sometimes\n", "not on, off or best-effort");
    expect_error("[vm a]\nmemory = 1M\n", "at least 16M");
    expect_error("[tier f]\npath = relative\n", "not an absolute path");
    expect_error("[tier f]\nclass = medium\n", "not fast or slow");
    expect_error("[tier f]\ncapacity = 1G\n", "[tier f] path: required key missing");
    expect_error("[tier f]\nsize = 1G\n", "unknown key");
}

#define LV_MANAGED                                                                                 \
    "[tier slow]\npath = /var/lib/t\ncapacity = 10G\n[vm lv]\nbackend = libvirt\n"                 \
    "managed = yes\nmemory = 256M\nslow_tier = slow\n"

/* managed = yes with backend = libvirt: libvirt's domain replaces the bridge's QEMU */
Test(lifecycle, managed_libvirt_config)
{
    struct bridge_config cfg;
    char err[512] = "";
    const struct bridge_vm_config *vm;
    int rc = bridge_config_load_string(&cfg, "lv.conf", LV_MANAGED "domain = guest-7\n", err,
                                       sizeof(err));

#ifdef HAVE_LIBVIRT
    cr_assert_eq(rc, 0, "%s", err);
    vm = bridge_config_vm(&cfg, "lv");
    cr_assert(vm && vm->managed && vm->backend == BRIDGE_BACKEND_LIBVIRT);
    cr_assert_str_eq(vm->domain, "guest-7");
    cr_assert_str_empty(vm->qemu, "no QEMU binary: libvirt starts QEMU");
    cr_assert_str_empty(vm->qmp, "no QMP socket under run_dir");
    cr_assert_str_empty(vm->port_a, "the ports come from the domain XML");
    cr_assert_eq(vm->ports_listen, 1, "the restored QEMU dials the bridge");
    cr_assert_eq(vm->stop_timeout, 30);
#else
    cr_assert_eq(rc, -1);
    cr_assert(strstr(err, "built without libvirt"), "%s", err);
    (void)vm;
#endif
    bridge_config_free(&cfg);
}

Test(lifecycle, managed_libvirt_refuses_what_does_not_apply)
{
#ifdef HAVE_LIBVIRT
    expect_error(LV_MANAGED "qemu = /usr/bin/qemu-system-x86_64\n",
                 "[vm lv] qemu: libvirt starts QEMU from the domain's XML");
    expect_error(LV_MANAGED "qemu_args = -accel tcg\n", "[vm lv] qemu_args: libvirt starts QEMU");
    expect_error(LV_MANAGED "qemu_user = nobody\n", "[vm lv] qemu_user:");
    expect_error(LV_MANAGED "qmp = /run/q.sock\n", "[vm lv] qmp:");
    expect_error(LV_MANAGED "console = yes\n", "[vm lv] console: not supported");
    expect_error(LV_MANAGED "idle_suspend = 60\n", "[vm lv] idle_suspend: not supported");
    expect_error("[tier fast]\npath = /dev/shm/f\ncapacity = 1G\nclass = fast\n" LV_MANAGED
                 "fast_tier = fast\nrapid = on\n",
                 "[vm lv] rapid: zero-copy needs the bridge's own QEMU");
    /* the rules every managed VM has still hold */
    expect_error("[vm lv]\nbackend = libvirt\nmanaged = yes\nslow_tier = s\n", "memory: required");
#else
    cr_skip_test("built without libvirt");
#endif
}

/* A bridge start with a libvirt domain: the journal's state x libvirt's (never a stop of a
 * domain that runs; an inactive domain left "suspending" was saved whole) */
Test(lifecycle, libvirt_adoption_plan)
{
    static const struct {
        const char *journal;
        int have_ck;
        const char *domain;
        enum lc_adopt want;
    } cases[] = {
        {"stopped", 0, "shutdown", LC_ADOPT_KEEP},
        {"running", 0, "running", LC_ADOPT_RUNNING},
        {"running", 0, "paused", LC_ADOPT_RUNNING},
        {"starting", 0, "running", LC_ADOPT_RUNNING},
        {"running", 0, "shutdown", LC_ADOPT_GONE},
        {"stopping", 0, "running", LC_ADOPT_FINISH_STOP},
        {"stopping", 0, "shutdown", LC_ADOPT_GONE},
        {"suspending", 1, "finish-migrate", LC_ADOPT_SAVING},
        {"suspending", 1, "shutdown", LC_ADOPT_SAVED},
        {"suspending", 1, "running", LC_ADOPT_NOT_SAVED},
        {"suspending", 1, "paused", LC_ADOPT_NOT_SAVED},
        {"suspending", 0, "shutdown", LC_ADOPT_LOST},
        {"suspended", 1, "shutdown", LC_ADOPT_SAVED},
        {"suspended", 1, "running", LC_ADOPT_FOREIGN},
        {"suspended", 0, "shutdown", LC_ADOPT_LOST},
        {"resuming", 1, "paused", LC_ADOPT_FINISH_RESUME},
        {"resuming", 1, "running", LC_ADOPT_RESUMED},
        {"resuming", 1, "shutdown", LC_ADOPT_SAVED},
        {"resuming", 0, "shutdown", LC_ADOPT_LOST},
        {"stopped", 0, "running", LC_ADOPT_FOREIGN},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_expect_eq(lc_adopt_plan(cases[i].journal, cases[i].have_ck, cases[i].domain),
                     cases[i].want, "journal %s, checkpoint %d, domain %s: got %d, want %d",
                     cases[i].journal, cases[i].have_ck, cases[i].domain,
                     lc_adopt_plan(cases[i].journal, cases[i].have_ck, cases[i].domain),
                     cases[i].want);
}

static char dir[] = "/tmp/vms-lc-XXXXXX";
static struct bridge_db db;

static void setup(void)
{
    char path[300], err[512];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/j.db", dir);
    cr_assert_eq(bridge_db_open(&db, path, err, sizeof(err)), 0, "%s", err);
}

static void teardown(void)
{
    char cmd[400];
    bridge_db_close(&db);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

static void put_vm(const char *vm, const char *tier, uint64_t bytes)
{
    struct bridge_db_managed m;
    cr_assert_eq(bridge_db_managed_get(&db, vm, &m), 0);
    cr_assert_str_eq(m.run_state, "stopped", "a new VM row is stopped");
    snprintf(m.res_tier, sizeof(m.res_tier), "%s", tier);
    m.res_bytes = bytes;
    snprintf(m.run_state, sizeof(m.run_state), "running");
    cr_assert_eq(bridge_db_managed_put(&db, &m), 0);
}

static void put_ck(const char *id, const char *vm, const char *tier, int64_t last_used, int pinned,
                   const char *phase)
{
    struct bridge_db_checkpoint c;
    memset(&c, 0, sizeof(c));
    snprintf(c.id, sizeof(c.id), "%s", id);
    snprintf(c.vm, sizeof(c.vm), "%s", vm);
    snprintf(c.tier, sizeof(c.tier), "%s", tier);
    snprintf(c.phase, sizeof(c.phase), "%s", phase);
    snprintf(c.state_file, sizeof(c.state_file), "/x/%s", id);
    c.created = c.last_used = last_used;
    c.pinned = pinned;
    cr_assert_eq(bridge_db_checkpoint_put(&db, &c), 0);
}

Test(lifecycle, reservations_sum_per_tier, .init = setup, .fini = teardown)
{
    put_vm("a", "fast", 100);
    put_vm("b", "fast", 50);
    put_vm("c", "slow", 7);
    cr_assert_eq(bridge_db_tier_reserved(&db, "fast", NULL), 150);
    cr_assert_eq(bridge_db_tier_reserved(&db, "fast", "a"), 50, "a VM's own reservation aside");
    cr_assert_eq(bridge_db_tier_reserved(&db, "slow", NULL), 7);
    cr_assert_eq(bridge_db_tier_reserved(&db, "none", NULL), 0);
}

Test(lifecycle, lru_skips_pinned_moving_and_invalid, .init = setup, .fini = teardown)
{
    struct bridge_db_checkpoint c;
    struct bridge_db_move mv = {.checkpoint = "ck-old"};

    put_ck("ck-pinned", "p", "fast", 10, 1, "valid");
    put_ck("ck-old", "o", "fast", 20, 0, "valid");
    put_ck("ck-new", "n", "fast", 30, 0, "valid");
    put_ck("ck-used", "u", "fast", 5, 0, "consumed");
    put_ck("ck-slow", "s", "slow", 1, 0, "valid");
    cr_assert_eq(bridge_db_checkpoint_lru(&db, "fast", &c), 1);
    cr_assert_str_eq(c.id, "ck-old", "oldest unpinned valid checkpoint of the tier");
    snprintf(mv.to_tier, sizeof(mv.to_tier), "slow");
    cr_assert_eq(bridge_db_move_put(&db, &mv), 0);
    cr_assert_eq(bridge_db_checkpoint_lru(&db, "fast", &c), 1);
    cr_assert_str_eq(c.id, "ck-new", "a checkpoint being moved is not picked again");
    cr_assert_eq(bridge_db_move_get(&db, "ck-old", &mv), 1);
    cr_assert_eq(bridge_db_move_delete(&db, "ck-old"), 0);
    cr_assert_eq(bridge_db_move_get(&db, "ck-old", &mv), 0);
    cr_assert_eq(bridge_db_checkpoint_current(&db, "u", &c), 0, "a consumed checkpoint is gone");
    cr_assert_eq(bridge_db_checkpoint_current(&db, "o", &c), 1);
}

Test(lifecycle, garbage_is_deleted_once, .init = setup, .fini = teardown)
{
    char f[400];
    FILE *fp;

    snprintf(f, sizeof(f), "%s/old.state", dir);
    fp = fopen(f, "w");
    cr_assert_not_null(fp);
    fclose(fp);
    cr_assert_eq(bridge_db_garbage_add(&db, f), 0);
    cr_assert_eq(bridge_db_garbage_add(&db, f), 0, "listed twice is fine");
    cr_assert_eq(bridge_db_garbage_collect(&db), 1);
    cr_assert_neq(access(f, F_OK), 0, "deleted");
    cr_assert_eq(bridge_db_garbage_collect(&db), 0, "and forgotten");
}

/* Issue 14: an offline set-memory's size is journaled with the VM's row (kept by a restart). */
Test(lifecycle, memory_set_offline_is_journaled, .init = setup, .fini = teardown)
{
    struct bridge_db_managed m;

    cr_assert_eq(bridge_db_managed_get(&db, "a", &m), 0);
    cr_assert_eq(m.memory_bytes, 0, "a new VM runs with its configured memory");
    m.memory_bytes = 192u << 20;
    cr_assert_eq(bridge_db_managed_put(&db, &m), 0);
    memset(&m, 0, sizeof(m));
    cr_assert_eq(bridge_db_managed_get(&db, "a", &m), 0);
    cr_assert_eq(m.memory_bytes, 192u << 20);
}
