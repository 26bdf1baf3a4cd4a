/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * test-bridge-clone.c — the identity of a group clone (host-bridge/groups/clone-id.c): its
 * name, run_dir, MACs, UUID, the rewritten QEMU template and the disks to copy; and the
 * file copy (clone.c).
 */
#include "config.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge-config.h"
#include "clone-id.h"
#include "clone.h"

static void init(void)
{
    cr_assert_geq(sodium_init(), 0);
}

TestSuite(clone_id, .init = init);

static struct bridge_vm_config src_vm(const char *args)
{
    struct bridge_vm_config v;

    memset(&v, 0, sizeof(v));
    snprintf(v.name, sizeof(v.name), "g1");
    snprintf(v.run_dir, sizeof(v.run_dir), "/run/vms/g1");
    snprintf(v.qemu_args, sizeof(v.qemu_args), "%s", args);
    v.managed = 1;
    return v;
}

Test(clone_id, name_is_group_dot_vm_and_bounded)
{
    char out[BRIDGE_VM_NAME_MAX], why[256], long_group[60];

    cr_assert_eq(clone_vm_name("lab2", "g1", out, sizeof(out), why, sizeof(why)), 0);
    cr_assert_str_eq(out, "lab2.g1");
    memset(long_group, 'x', sizeof(long_group) - 1);
    long_group[sizeof(long_group) - 1] = '\0';
    cr_assert_eq(clone_vm_name(long_group, "vm-name", out, sizeof(out), why, sizeof(why)), -1);
    cr_assert(strstr(why, "longer than 63"), "%s", why);
    cr_assert_eq(clone_vm_name("lab 2", "g1", out, sizeof(out), why, sizeof(why)), -1);
}

Test(clone_id, mac_is_stable_local_unicast_and_differs)
{
    char a[CLONE_MAC_LEN], b[CLONE_MAC_LEN], c[CLONE_MAC_LEN], d[CLONE_MAC_LEN];
    unsigned first;

    clone_mac("lab2.g1", 0, a);
    clone_mac("lab2.g1", 0, b);
    clone_mac("lab2.g1", 1, c);
    clone_mac("lab3.g1", 0, d);
    cr_assert_str_eq(a, b, "derived, not random: a restart gives the same MAC");
    cr_assert_str_neq(a, c, "each NIC its own");
    cr_assert_str_neq(a, d, "each clone its own");
    cr_assert_eq(strlen(a), 17);
    cr_assert_eq(sscanf(a, "%x:", &first), 1);
    cr_assert_eq(first & 0x02, 0x02, "locally administered");
    cr_assert_eq(first & 0x01, 0, "unicast");
}

Test(clone_id, derive_moves_paths_names_nics_and_disks)
{
    struct bridge_vm_config v = src_vm(
        "-accel tcg -kernel /img/vmlinuz -append \"console=ttyS0 root=/run/vms/g1x\"\n"
        "  -chardev file,id=ser0,path=/run/vms/g1/console.log,append=on\n"
        "  -blockdev driver=file,filename=/run/vms/g1/disk.qcow2,node-name=file0\n"
        "  -blockdev driver=qcow2,file=file0,node-name=disk0\n"
        "  -netdev user,id=n0 -device virtio-net-pci,netdev=n0,id=nic0,mac=52:54:00:12:34:01\n"
        "  -device e1000,netdev=n1 -device virtio-blk-pci,drive=disk0 -uuid "
        "11111111-2222-4333-8444-555555555555");
    struct clone_identity id;
    char why[512], mac0[CLONE_MAC_LEN], mac1[CLONE_MAC_LEN], want[64];

    cr_assert_eq(clone_derive(&v, "lab2", &id, why, sizeof(why)), 0, "%s", why);
    cr_assert_str_eq(id.name, "lab2.g1");
    cr_assert_str_eq(id.run_dir, "/run/vms/lab2.g1");
    cr_assert(strstr(id.qemu_args, "path=/run/vms/lab2.g1/console.log,append=on"), "%s",
              id.qemu_args);
    cr_assert(strstr(id.qemu_args, "filename=/run/vms/lab2.g1/disk.qcow2,"), "%s", id.qemu_args);
    /* a longer name that merely starts like the run_dir is not a path under it */
    cr_assert(strstr(id.qemu_args, "root=/run/vms/g1x\""), "%s", id.qemu_args);
    cr_assert(strstr(id.qemu_args, "-kernel /img/vmlinuz"), "shared read-only files stay");
    cr_assert(!strstr(id.qemu_args, "/run/vms/g1/"), "%s", id.qemu_args);
    /* NICs: mac= replaced, or added where QEMU would have used its default */
    clone_mac("lab2.g1", 0, mac0);
    clone_mac("lab2.g1", 1, mac1);
    cr_assert_eq(id.n_macs, 2);
    cr_assert_str_eq(id.macs[0], mac0);
    cr_assert_str_eq(id.macs[1], mac1);
    snprintf(want, sizeof(want), "virtio-net-pci,netdev=n0,id=nic0,mac=%s\n", mac0);
    cr_assert(strstr(id.qemu_args, want), "%s", id.qemu_args);
    snprintf(want, sizeof(want), "e1000,netdev=n1,mac=%s ", mac1);
    cr_assert(strstr(id.qemu_args, want), "%s", id.qemu_args);
    cr_assert(!strstr(id.qemu_args, "52:54:00:12:34:01"));
    cr_assert(strstr(id.qemu_args, "-device virtio-blk-pci,drive=disk0 "), "not a NIC: kept");
    /* a new SMBIOS UUID */
    cr_assert(!strstr(id.qemu_args, "11111111-2222"), "%s", id.qemu_args);
    cr_assert(strstr(id.qemu_args, "-uuid "), "%s", id.qemu_args);
    /* the disk to copy; the qcow2 node's file=file0 is a node name, not a path */
    cr_assert_eq(id.n_disks, 1);
    cr_assert_str_eq(id.disk_from[0], "/run/vms/g1/disk.qcow2");
    cr_assert_str_eq(id.disk_to[0], "/run/vms/lab2.g1/disk.qcow2");
    /* the original's own line breaks and spacing are kept */
    cr_assert(strstr(id.qemu_args, "\n  -blockdev driver=qcow2,file=file0,node-name=disk0\n"));
}

Test(clone_id, derive_is_deterministic)
{
    struct bridge_vm_config v = src_vm("-nic user,model=virtio-net-pci -uuid x");
    struct clone_identity a, b;
    char why[256];

    cr_assert_eq(clone_derive(&v, "lab2", &a, why, sizeof(why)), 0, "%s", why);
    cr_assert_eq(clone_derive(&v, "lab2", &b, why, sizeof(why)), 0, "%s", why);
    cr_assert_str_eq(a.qemu_args, b.qemu_args);
    cr_assert_eq(a.n_macs, 1, "-nic is a NIC");
    cr_assert(strstr(a.qemu_args, ",mac=52:54:"), "%s", a.qemu_args);
}

Test(clone_id, run_placeholder_and_escaped_commas)
{
    struct bridge_vm_config v =
        src_vm("-drive if=none,id=d0,file={run}/a,,b.qcow2,format=qcow2 -nic none");
    struct clone_identity id;
    char why[256];

    cr_assert_eq(clone_derive(&v, "lab2", &id, why, sizeof(why)), 0, "%s", why);
    cr_assert_eq(id.n_disks, 1);
    cr_assert_str_eq(id.disk_from[0], "/run/vms/g1/a,b.qcow2");
    cr_assert_str_eq(id.disk_to[0], "/run/vms/lab2.g1/a,b.qcow2");
    cr_assert_eq(id.n_macs, 0, "-nic none is no NIC");
    cr_assert(strstr(id.qemu_args, "-nic none"));
}

Test(clone_id, disk_outside_run_dir_refused_unless_read_only)
{
    struct bridge_vm_config v =
        src_vm("-blockdev driver=file,filename=/var/lib/disks/g1.qcow2,node-name=f0");
    struct bridge_vm_config ro =
        src_vm("-blockdev driver=file,filename=/var/lib/iso/tools.iso,node-name=f1,read-only=on");
    struct clone_identity id;
    char why[512];

    cr_assert_eq(clone_derive(&v, "lab2", &id, why, sizeof(why)), -1);
    cr_assert(strstr(why, "outside the VM's run_dir"), "%s", why);
    cr_assert_eq(clone_derive(&ro, "lab2", &id, why, sizeof(why)), 0, "%s", why);
    cr_assert_eq(id.n_disks, 0, "a read-only disk is shared, not copied");
}

Test(clone_id, limits)
{
    struct bridge_vm_config v = src_vm("");
    struct clone_identity id;
    char why[512], *p = v.qemu_args;

    /* a run_dir too long once renamed (sockets must fit sun_path) */
    snprintf(v.run_dir, sizeof(v.run_dir), "/%085d/g1", 0);
    cr_assert_eq(clone_derive(&v, "lab2", &id, why, sizeof(why)), -1);
    cr_assert(strstr(why, "longer than 90"), "%s", why);
    /* more NICs than a clone gets MACs for */
    v = src_vm("");
    for (int i = 0; i < CLONE_NICS_MAX + 1; i++)
        p += sprintf(p, "-device e1000 ");
    cr_assert_eq(clone_derive(&v, "lab2", &id, why, sizeof(why)), -1);
    cr_assert(strstr(why, "NICs"), "%s", why);
    /* a template that no longer fits once every path grew */
    v = src_vm("");
    p = v.qemu_args;
    while (p - v.qemu_args < (long)sizeof(v.qemu_args) - 40)
        p += sprintf(p, "path=/run/vms/g1 ");
    cr_assert_eq(clone_derive(&v, "lab2", &id, why, sizeof(why)), -1);
    cr_assert(strstr(why, "too long"), "%s", why);
}

Test(clone_copy, copies_content_and_refuses_an_existing_target)
{
    char dir[] = "/tmp/test-clone-XXXXXX", from[128], to[128], buf[64];
    int fd, reflinked = -1;
    ssize_t n;

    cr_assert_not_null(mkdtemp(dir));
    snprintf(from, sizeof(from), "%s/from", dir);
    snprintf(to, sizeof(to), "%s/to", dir);
    fd = open(from, O_WRONLY | O_CREAT, 0600);
    cr_assert_eq(write(fd, "checkpoint bytes", 16), 16);
    close(fd);
    cr_assert_eq(clone_copy_file(from, to, &reflinked), 0);
    cr_assert(reflinked == 0 || reflinked == 1);
    fd = open(to, O_RDONLY);
    n = read(fd, buf, sizeof(buf));
    close(fd);
    cr_assert_eq(n, 16);
    cr_assert_eq(memcmp(buf, "checkpoint bytes", 16), 0);
    cr_assert_eq(clone_copy_file(from, to, &reflinked), -1, "never over an existing file");
    unlink(to);
    cr_assert_eq(clone_copy_file("/nonexistent/x", to, &reflinked), -1);
    cr_assert_eq(access(to, F_OK), -1, "nothing left behind");
    unlink(from);
    rmdir(dir);
}
