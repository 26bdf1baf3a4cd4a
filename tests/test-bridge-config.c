/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests: vmstate-bridged's INI configuration (defaults, errors naming
 * file, line and key), and that the shipped example parses.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge-config.h"

static const char good[] = "[bridge]\n"
                           "database = /tmp/x.db\n"
                           "log_level = debug\n"
                           "[vm alpha]\n"
                           "port_a = /run/a.sock\n"
                           "port_b = /run/b.sock\n"
                           "qmp = /run/vm/qmp.sock\n"
                           "nodes = disk0, disk1\n"
                           "max_app_data_bytes = 2M\n"
                           "mem_min = 64M\n"
                           "mem_max = 1G\n";

Test(config, good_file_and_defaults)
{
    struct bridge_config cfg;
    char err[512] = "";
    const struct bridge_vm_config *vm;

    cr_assert_eq(bridge_config_load_string(&cfg, "t.conf", good, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(cfg.database, "/tmp/x.db");
    cr_assert_eq(cfg.log_level, 7);
    cr_assert_eq(cfg.privsep, 1, "privsep is on by default");
    cr_assert_eq(cfg.journal_keep_days, 30);
    cr_assert_eq(cfg.n_vms, 1);
    vm = bridge_config_vm(&cfg, "alpha");
    cr_assert_not_null(vm);
    cr_assert_eq(vm->n_nodes, 2);
    cr_assert_str_eq(vm->nodes[1], "disk1");
    cr_assert_str_eq(vm->vmstate_node, "disk0");
    cr_assert_str_eq(vm->state_dir, "/run/vm");
    cr_assert_eq(vm->max_app_data_bytes, 2u << 20);
    cr_assert_eq(vm->mem_max_bytes, 1ull << 30);
    cr_assert_eq(vm->max_states, 32);
    cr_assert_eq(vm->max_pending, 16);
    cr_assert_eq(vm->auth_fail_max, 5);
    cr_assert_null(bridge_config_vm(&cfg, "beta"));
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

Test(config, errors_name_file_line_and_key)
{
    expect_error("[bridge]\nlog_level = info\nbogus = 1\n",
                 "bad.conf:3: [bridge] bogus: unknown key");
    expect_error("[bridge]\nlog_level = loud\n", "bad.conf:2: [bridge] log_level: 'loud'");
    expect_error("[bridge]\njournal_keep_days = forever\n",
                 "bad.conf:2: [bridge] journal_keep_days: 'forever' is not a number in 0..36500");
    expect_error("[bridge]\nprivsep = maybe\n",
                 "bad.conf:2: [bridge] privsep: 'maybe' is not yes or no");
    expect_error("[vm a]\nport_a = x\nmax_states = -1\n", "bad.conf:3: [vm a] max_states:");
    expect_error("[vm a]\nport_a = x\nmax_app_data_bytes = 12Q\n",
                 "bad.conf:3: [vm a] max_app_data_bytes: '12Q' is not a size");
    expect_error("[vm a]\nport_a = x\nnodes = bad/node\n", "bad.conf:3: [vm a] nodes:");
    expect_error("[vm bad/name]\nport_a = x\n", "bad.conf:2: [vm bad/name] port_a: VM name");
    expect_error("[vm a]\nport_a = x\n[vm b]\nport_a = y\n[vm a]\nport_b = z\n",
                 "bad.conf:6: [vm a] port_b: VM 'a' is defined twice");
    expect_error("[wrong]\nkey = 1\n", "bad.conf:2: [wrong] key: unknown section");
    expect_error("[bridge]\nthis line has no equals sign\n", "bad.conf:2: syntax error");
    expect_error("[vm a]\nport_a = x\nport_b = y\nqmp = z\n", "[vm a] nodes: required key missing");
    expect_error("[vm a]\nport_a = x\nqmp = z\nnodes = d\n", "[vm a] port_b: required key missing");
    expect_error("[vm a]\nport_a=x\nport_b=y\nqmp=z\nnodes=d\nmem_min=2G\nmem_max=1G\n",
                 "[vm a] mem_min: greater than mem_max");
}

Test(config, missing_file)
{
    struct bridge_config cfg;
    char err[512] = "";
    cr_assert_eq(bridge_config_load(&cfg, "/nonexistent/x.conf", err, sizeof(err)), -1);
    cr_assert(strstr(err, "/nonexistent/x.conf: cannot open") != NULL, "%s", err);
    bridge_config_free(&cfg);
}

Test(config, shipped_example_parses)
{
    struct bridge_config cfg;
    char err[512] = "", path[1024];
    const char *src = getenv("top_srcdir");

    snprintf(path, sizeof(path), "%s/host-bridge/vmstate-bridged.conf.example", src ? src : ".");
    cr_assert_eq(bridge_config_load(&cfg, path, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(cfg.n_vms, 1);
    bridge_config_free(&cfg);
}

Test(config, libvirt_vm_keys_and_defaults)
{
    struct bridge_config cfg;
    char err[512] = "";
    const struct bridge_vm_config *vm;
    static const char text[] = "[vm lv1]\n"
                               "backend = libvirt\n"
                               "[vm lv2]\n"
                               "backend = libvirt\n"
                               "uri = qemu+unix:///system?socket=/tmp/s\n"
                               "domain = guest-2\n"
                               "ports = connect\n"
                               "port_a = /run/a.sock\n"
                               "port_b = /run/b.sock\n"
                               "[vm q]\n"
                               "port_a = /run/qa\nport_b = /run/qb\nqmp = /run/q/qmp\nnodes = d0\n"
                               "ports = listen\n";
    int rc = bridge_config_load_string(&cfg, "t.conf", text, err, sizeof(err));

#ifdef HAVE_LIBVIRT
    cr_assert_eq(rc, 0, "%s", err);
    vm = bridge_config_vm(&cfg, "lv1");
    cr_assert_eq(vm->backend, BRIDGE_BACKEND_LIBVIRT);
    cr_assert_str_eq(vm->uri, "qemu:///system");
    cr_assert_str_eq(vm->domain, "lv1", "the domain defaults to the VM's name");
    cr_assert_eq(vm->ports_listen, 1, "libvirt VMs listen by default (a revert replaces QEMU)");
    cr_assert_str_empty(vm->port_a, "ports come from the domain XML");
    vm = bridge_config_vm(&cfg, "lv2");
    cr_assert_str_eq(vm->uri, "qemu+unix:///system?socket=/tmp/s");
    cr_assert_str_eq(vm->domain, "guest-2");
    cr_assert_eq(vm->ports_listen, 0);
    cr_assert_str_eq(vm->port_b, "/run/b.sock");
    vm = bridge_config_vm(&cfg, "q");
    cr_assert_eq(vm->backend, BRIDGE_BACKEND_QMP);
    cr_assert_eq(vm->ports_listen, 1);
#else
    cr_assert_eq(rc, -1);
    cr_assert(strstr(err, "built without libvirt"), "%s", err);
    (void)vm;
#endif
    bridge_config_free(&cfg);
}

Test(config, libvirt_key_errors)
{
    expect_error("[vm a]\nbackend = xen\n", "[vm a] backend: 'xen' is not qmp or libvirt");
    expect_error("[vm a]\nbackend = libvirt\ndomain = a<b\n", "[vm a] domain:");
    expect_error("[vm a]\nbackend = libvirt\nports = maybe\n", "ports: 'maybe' is not listen");
#ifdef HAVE_LIBVIRT
    expect_error("[vm a]\nbackend = libvirt\nport_a = /x\n", "[vm a] port_b: give both ports");
#endif
    /* a QMP VM still needs its monitor and nodes */
    expect_error("[vm a]\nport_a = /a\nport_b = /b\nnodes = d\n", "qmp: required key missing");
}
