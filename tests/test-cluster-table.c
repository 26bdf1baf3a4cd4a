/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * test-cluster-table.c — the cluster table's pure decisions (host-bridge/cluster/table.c):
 * the same messages give the same table, claims win once per generation, failover places
 * VMs by priority on alternates with free slots, admission's maxSlot, bridge-only departures
 * wait for the grace period, lease exclusion.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bridge-config.h"
#include "lease.h"
#include "table.h"

#define GIB (1024ull * 1024 * 1024)

/* 3 hosts with 2 slots each (2 vCPUs, 2 GiB; box 1 vCPU 1 GiB), 4 HA VMs. */
static const char *conf = "[cluster]\n"
                          "enabled = yes\nnode = h1\nshared_dir = /tmp\nhost_vcpus = 2\n"
                          "host_memory = 2G\nfailures_tolerated = 1\n"
                          "[vm a]\nmanaged = yes\nmemory = 1G\nslow_tier = s\nnodes = d\n"
                          "ha = yes\nha_hosts = h1, h2, h3\nha_priority = 10\n"
                          "[vm b]\nmanaged = yes\nmemory = 1G\nslow_tier = s\nnodes = d\n"
                          "ha = yes\nha_hosts = h2, h3, h1\nha_priority = 5\n"
                          "[vm c]\nmanaged = yes\nmemory = 1G\nslow_tier = s\nnodes = d\n"
                          "ha = yes\nha_hosts = h2, h1, h3\nha_priority = 1\n"
                          "[vm d]\nmanaged = yes\nmemory = 512M\nslow_tier = s\nnodes = d\n"
                          "ha = yes\nha_hosts = h3, h1, h2\n"
                          "[tier s]\npath = /tmp\ncapacity = 100G\n";

static struct bridge_config cfg;
static struct cl_table t;

static void apply_ok(uint32_t nodeid, const char *msg, struct cl_applied *a)
{
    char why[200];
    struct cl_applied dummy;
    int rc = cl_table_apply(&t, nodeid, msg, strlen(msg), a ? a : &dummy, why, sizeof(why));
    cr_assert_eq(rc, 1, "not applied: %s (%s)", msg, why);
}

static void hello(uint32_t nodeid, const char *name, const char *run)
{
    char msg[512];
    snprintf(msg, sizeof(msg),
             "{\"t\":\"hello\",\"node\":\"%s\",\"vcpus\":2,\"memory\":%llu,\"run\":[%s]}", name,
             2 * GIB, run);
    apply_ok(nodeid, msg, NULL);
}

static void members(const uint32_t *ids, size_t n, const uint32_t *left, const int *down, size_t nl,
                    double now)
{
    cl_table_membership(&t, ids, n, left, down, nl, now);
}

static void setup(void)
{
    char err[512];
    static const uint32_t all[] = {1, 2, 3};
    cr_assert_eq(bridge_config_load_string(&cfg, "test", conf, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(cl_table_init(&t, &cfg), 0);
    cr_assert_eq(t.n_vms, 4);
    members(all, 3, NULL, NULL, 0, 1.0);
    hello(1, "h1", "{\"vm\":\"a\",\"gen\":1,\"ck\":\"s1\"}");
    hello(2, "h2", "{\"vm\":\"b\",\"gen\":1,\"ck\":\"\"},{\"vm\":\"c\",\"gen\":1,\"ck\":\"\"}");
    hello(3, "h3", "{\"vm\":\"d\",\"gen\":1,\"ck\":\"\"}");
}

static void teardown(void)
{
    cl_table_free(&t);
    bridge_config_free(&cfg);
}

TestSuite(cluster_table, .init = setup, .fini = teardown);

Test(cluster_table, hellos_fill_the_table)
{
    cr_assert(cl_table_synced(&t));
    cr_assert_str_eq(t.vms[cl_table_vm(&t, "a")].host, "h1");
    cr_assert_str_eq(t.vms[cl_table_vm(&t, "a")].ck, "s1");
    cr_assert_str_eq(t.vms[cl_table_vm(&t, "c")].host, "h2");
    cr_assert_eq(t.vms[cl_table_vm(&t, "d")].state, CL_VM_RUNNING);
}

Test(cluster_table, slots_and_max_slot)
{
    struct cl_slots s;
    cl_table_slots(&t, &s);
    cr_assert_eq(s.box_vcpus, 1);
    cr_assert_eq(s.box_memory, GIB);
    cr_assert_eq(s.total, 6);
    cr_assert_eq(s.max_slot, 4, "6 slots minus the largest host's 2");
    cr_assert_eq(s.admitted, 4);
}

Test(cluster_table, node_down_fails_over_by_priority_to_free_alternates)
{
    static const uint32_t two[] = {1, 3}, gone[] = {2};
    static const int down[] = {1};
    struct cl_move mv[8];
    size_t n;

    members(two, 2, gone, down, 1, 10.0);
    cr_assert_not(cl_table_synced(&t), "no decisions before every member's hello");
    cr_assert_eq(cl_table_plan(&t, 10.0, 10, mv, 8), 0);
    hello(1, "h1", "{\"vm\":\"a\",\"gen\":1,\"ck\":\"s1\"}");
    hello(3, "h3", "{\"vm\":\"d\",\"gen\":1,\"ck\":\"\"}");
    cr_assert(cl_table_synced(&t));
    /* b (priority 5) before c (1): b -> h3 (its first alternate), c -> h1 */
    n = cl_table_plan(&t, 10.0, 10, mv, 8);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(t.vms[mv[0].vm].name, "b");
    cr_assert_str_eq(t.hosts[mv[0].host].name, "h3");
    cr_assert_str_eq(t.vms[mv[1].vm].name, "c");
    cr_assert_str_eq(t.hosts[mv[1].host].name, "h1");
}

Test(cluster_table, capacity_short_high_priority_first_rest_waits)
{
    static const uint32_t one[] = {1}, gone[] = {2, 3};
    static const int down[] = {1, 1};
    struct cl_move mv[8];
    size_t n;

    /* only h1 is left, with 2 slots; a runs there: one slot for b, c and d */
    members(one, 1, gone, down, 2, 10.0);
    hello(1, "h1", "{\"vm\":\"a\",\"gen\":1,\"ck\":\"s1\"}");
    n = cl_table_plan(&t, 10.0, 10, mv, 8);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(t.vms[mv[0].vm].name, "b", "the highest priority restarts first");
    cr_assert(cl_table_waiting(&t, cl_table_vm(&t, "c"), 10.0, 10));
    cr_assert(cl_table_waiting(&t, cl_table_vm(&t, "d"), 10.0, 10));
    cr_assert_not(cl_table_waiting(&t, cl_table_vm(&t, "b"), 10.0, 10));
}

Test(cluster_table, a_claim_applies_once_per_generation)
{
    struct cl_applied a;
    char why[200];
    const char *claim2 = "{\"t\":\"claim\",\"vm\":\"b\",\"node\":\"h1\",\"gen\":1}";
    int b = cl_table_vm(&t, "b");

    apply_ok(3, "{\"t\":\"claim\",\"vm\":\"b\",\"node\":\"h3\",\"gen\":1}", &a);
    cr_assert(a.claimed);
    cr_assert_str_eq(a.host, "h3");
    cr_assert_str_eq(t.vms[b].host, "h3");
    cr_assert_eq(t.vms[b].state, CL_VM_STARTING);
    cr_assert_eq(t.vms[b].gen, 2);
    /* a second claim of the same generation, ordered after the first: stale */
    cr_assert_eq(cl_table_apply(&t, 1, claim2, strlen(claim2), &a, why, sizeof(why)), 0);
    cr_assert_not(a.claimed);
    cr_assert(strstr(why, "stale"), "%s", why);
    cr_assert_str_eq(t.vms[b].host, "h3");
}

Test(cluster_table, stopped_only_from_the_host_it_is_on)
{
    struct cl_applied a;
    char why[200];
    const char *late = "{\"t\":\"state\",\"vm\":\"a\",\"node\":\"h2\",\"state\":\"stopped\"}";
    cr_assert_eq(cl_table_apply(&t, 2, late, strlen(late), &a, why, sizeof(why)), 0);
    cr_assert_eq(t.vms[cl_table_vm(&t, "a")].state, CL_VM_RUNNING);
    apply_ok(1, "{\"t\":\"state\",\"vm\":\"a\",\"node\":\"h1\",\"state\":\"stopped\"}", NULL);
    cr_assert_eq(t.vms[cl_table_vm(&t, "a")].state, CL_VM_STOPPED);
}

Test(cluster_table, bridge_gone_waits_for_the_grace_period)
{
    static const uint32_t two[] = {1, 3}, gone[] = {2};
    static const int procdown[] = {0};
    struct cl_move mv[8];

    members(two, 2, gone, procdown, 1, 100.0);
    hello(1, "h1", "{\"vm\":\"a\",\"gen\":1,\"ck\":\"s1\"}");
    hello(3, "h3", "{\"vm\":\"d\",\"gen\":1,\"ck\":\"\"}");
    cr_assert_eq(cl_table_plan(&t, 105.0, 10, mv, 8), 0, "its QEMUs may still run");
    cr_assert_eq(cl_table_plan(&t, 111.0, 10, mv, 8), 2);
    /* it comes back before: its hello keeps its VMs where they are */
    {
        static const uint32_t all[] = {1, 2, 3};
        members(all, 3, NULL, NULL, 0, 106.0);
        hello(1, "h1", "{\"vm\":\"a\",\"gen\":1,\"ck\":\"s1\"}");
        hello(2, "h2", "{\"vm\":\"b\",\"gen\":1,\"ck\":\"\"},{\"vm\":\"c\",\"gen\":1,\"ck\":\"\"}");
        hello(3, "h3", "{\"vm\":\"d\",\"gen\":1,\"ck\":\"\"}");
        cr_assert_eq(cl_table_plan(&t, 200.0, 10, mv, 8), 0);
    }
}

Test(cluster_table, a_vm_missing_from_its_hosts_hello_needs_a_place)
{
    struct cl_move mv[8];
    /* h2's bridge restarted and its QEMU for c is gone */
    hello(2, "h2", "{\"vm\":\"b\",\"gen\":1,\"ck\":\"\"}");
    cr_assert_str_eq(t.vms[cl_table_vm(&t, "c")].host, "");
    cr_assert_eq(cl_table_plan(&t, 10.0, 10, mv, 8), 1);
    cr_assert_str_eq(t.vms[mv[0].vm].name, "c");
}

Test(cluster_table, malformed_messages_change_nothing)
{
    static const char *bad[] = {
        "",
        "{",
        "[]",
        "{\"t\":\"claim\"}",
        "{\"t\":\"claim\",\"vm\":\"zz\",\"node\":\"h1\",\"gen\":1}",
        "{\"t\":\"hello\",\"node\":\"h\\n1\",\"vcpus\":1,\"memory\":1,\"run\":[]}",
        "{\"t\":\"ck\",\"vm\":\"a\",\"node\":\"h1\",\"ck\":\"../x\"}",
        "{\"t\":\"nope\",\"vm\":\"a\",\"node\":\"h1\"}"};
    struct cl_applied a;
    char why[200];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(cl_table_apply(&t, 1, bad[i], strlen(bad[i]), &a, why, sizeof(why)), 0, "%s",
                     bad[i]);
    cr_assert_str_eq(t.vms[cl_table_vm(&t, "a")].ck, "s1");
}

Test(cluster_table, messages_round_trip)
{
    char buf[CL_MSG_MAX];
    int run[] = {0};
    cr_assert_gt(cl_msg_hello(buf, sizeof(buf), "h1", 2, 2 * GIB, &t, run, 1), 0);
    apply_ok(1, buf, NULL);
    cr_assert_gt(cl_msg_ck(buf, sizeof(buf), "a", "h1", "s2"), 0);
    apply_ok(1, buf, NULL);
    cr_assert_str_eq(t.vms[0].ck, "s2");
    cr_assert_eq(cl_msg_claim(buf, 8, "a", "h1", 1), -1, "does not fit: refused, not cut");
}

Test(cluster_table, lease_excludes_a_second_holder)
{
    char dir[] = "/tmp/vms-lease-XXXXXX", held[128];
    int fd, fd2;
    cr_assert_not_null(mkdtemp(dir));
    fd = bridge_lease_acquire(dir, "a", "h1", held, sizeof(held));
    cr_assert_geq(fd, 0);
    fd2 = bridge_lease_acquire(dir, "a", "h2", held, sizeof(held));
    cr_assert_eq(fd2, -1);
    cr_assert_eq(errno, EAGAIN);
    cr_assert(strstr(held, "h1"), "the holder is named: %s", held);
    cr_assert_eq(bridge_lease_probe(dir, "a", held, sizeof(held)), 1);
    close(fd);
    cr_assert_eq(bridge_lease_probe(dir, "a", held, sizeof(held)), 0);
    fd2 = bridge_lease_acquire(dir, "a", "h2", held, sizeof(held));
    cr_assert_geq(fd2, 0, "free once its holder is gone");
    close(fd2);
    {
        char p[256];
        snprintf(p, sizeof(p), "%s/leases/a.lease", dir);
        unlink(p);
        snprintf(p, sizeof(p), "%s/leases", dir);
        rmdir(p);
        rmdir(dir);
    }
}

/* ---- the [cluster] configuration ---- */

static int load(const char *text, char *err, size_t errlen)
{
    struct bridge_config c;
    int rc = bridge_config_load_string(&c, "t", text, err, errlen);
    bridge_config_free(&c);
    return rc;
}

#define MANAGED "managed = yes\nmemory = 128M\nslow_tier = s\nnodes = d\n"
#define TIER    "[tier s]\npath = /tmp\ncapacity = 1G\n"

Test(cluster_config, refusals_name_the_key)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"[cluster]\nenabled = yes\nhost_vcpus = 2\nhost_memory = 1G\n", "shared_dir"},
        {"[cluster]\nenabled = yes\nshared_dir = /tmp\nhost_memory = 1G\n", "host_vcpus"},
        {"[cluster]\nenabled = maybe\n", "enabled"},
        {"[cluster]\nnode = a b\n", "node"},
        {"[cluster]\nbogus = 1\n", "bogus"},
        {"[vm v]\n" MANAGED "ha = yes\nha_hosts = h1\n" TIER, "[cluster] enabled"},
        {"[cluster]\nenabled = yes\nshared_dir = /tmp\nhost_vcpus = 2\nhost_memory = 1G\n"
         "[vm v]\n" MANAGED "ha = yes\n" TIER,
         "ha_hosts"},
        {"[cluster]\nenabled = yes\nshared_dir = /tmp\nhost_vcpus = 2\nhost_memory = 1G\n"
         "[vm v]\n" MANAGED "ha = yes\nha_hosts = h1, h/2\n" TIER,
         "ha_hosts"},
        {"[cluster]\nenabled = yes\nshared_dir = /tmp\nhost_vcpus = 2\nhost_memory = 1G\n"
         "[vm v]\nport_a = /a\nport_b = /b\nqmp = /q\nnodes = d\nha = yes\nha_hosts = h1\n",
         "managed = yes"},
    };
    char err[512];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cr_assert_eq(load(cases[i].text, err, sizeof(err)), -1, "accepted: %s", cases[i].text);
        cr_assert(strstr(err, cases[i].want), "'%s' does not name %s", err, cases[i].want);
    }
}

Test(cluster_config, shared_definitions_and_node_substitution)
{
    char dir[] = "/tmp/vms-shared-XXXXXX", path[256], err[512], text[1024];
    struct bridge_config c;
    const struct bridge_vm_config *v;
    FILE *f;

    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/vms", dir);
    cr_assert_eq(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/vms/web1.conf", dir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "[vm web1]\n" MANAGED "ha = yes\nha_hosts = h2, h1\nrun_dir = /run/x/{node}/web1\n"
               "qemu_args = -name-ignored {node}\n");
    fclose(f);
    snprintf(text, sizeof(text),
             "[cluster]\nenabled = yes\nnode = h1\nshared_dir = %s\nhost_vcpus = 2\n"
             "host_memory = 1G\n" TIER,
             dir);
    cr_assert_eq(bridge_config_load_string(&c, "t", text, err, sizeof(err)), 0, "%s", err);
    v = bridge_config_vm(&c, "web1");
    cr_assert_not_null(v, "the shared definition is read");
    cr_assert(v->ha);
    cr_assert_eq(v->n_ha_hosts, 2);
    cr_assert_str_eq(v->ha_hosts[0], "h2");
    cr_assert_str_eq(v->run_dir, "/run/x/h1/web1");
    cr_assert(strstr(v->qemu_args, "-name-ignored h1"), "%s", v->qemu_args);
    cr_assert_str_eq(v->qmp, "/run/x/h1/web1/qmp.sock");
    bridge_config_free(&c);
    /* only [vm] sections on the shared storage: a host's keys stay the host's */
    f = fopen(path, "a");
    fprintf(f, "[bridge]\ndatabase = /tmp/x.db\n");
    fclose(f);
    cr_assert_eq(bridge_config_load_string(&c, "t", text, err, sizeof(err)), -1);
    cr_assert(strstr(err, "only [vm NAME]"), "%s", err);
    bridge_config_free(&c);
    unlink(path);
    snprintf(path, sizeof(path), "%s/vms", dir);
    rmdir(path);
    rmdir(dir);
}
