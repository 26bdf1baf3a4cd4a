/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * clone-id.h — the identity of a clone of a managed VM (issue 16, group clone): what must
 * differ from the original so that both run side by side on one host. Pure functions (no
 * I/O), unit-tested in tests/test-bridge-clone.c.
 *
 *   name      CLONEGROUP.VM ("lab2.g1" for VM g1 cloned into group lab2)
 *   run_dir   the original's run_dir with its last component replaced by the clone's name:
 *             sockets, pidfile, console, QEMU log, and the disks that live there
 *   qemu_args the original's template with every path under its run_dir moved to the
 *             clone's, every NIC given a MAC derived from the clone's name (mac= replaced or
 *             added: QEMU's default MAC is the same in every VM), -uuid derived likewise
 *   disks     the files named by -blockdev filename= and -drive file= under the run_dir:
 *             copied for the clone. A disk outside the run_dir is refused: the clone would
 *             write the original's disk.
 * The MAC and UUID are derived (BLAKE2b of the clone's name and the NIC's index), not
 * random: the same clone gets the same identity when the bridge rebuilds it from the
 * journal after a restart. MACs are locally administered unicast, 52:54:xx:xx:xx:xx.
 */
#ifndef BRIDGE_CLONE_ID_H
#define BRIDGE_CLONE_ID_H

#include <stddef.h>

#include "bridge-config.h"

#define CLONE_NICS_MAX  8
#define CLONE_DISKS_MAX 8
#define CLONE_MAC_LEN   18 /* "52:54:xx:xx:xx:xx" + NUL */

struct clone_identity {
    char name[BRIDGE_VM_NAME_MAX];
    char run_dir[BRIDGE_PATH_MAX];
    char qemu_args[BRIDGE_QEMU_ARGS_MAX];
    size_t n_macs;
    char macs[CLONE_NICS_MAX][CLONE_MAC_LEN];
    size_t n_disks;
    char disk_from[CLONE_DISKS_MAX][BRIDGE_PATH_MAX]; /* the original's file */
    char disk_to[CLONE_DISKS_MAX][BRIDGE_PATH_MAX];   /* the clone's copy */
};

/*
 * The clone of VM @vm in group @clone_group: "@clone_group.@vm" into @out (@len >=
 * BRIDGE_VM_NAME_MAX). 0, or -1 with @why (too long, invalid characters).
 */
int clone_vm_name(const char *clone_group, const char *vm, char *out, size_t len, char *why,
                  size_t whylen);

/* The MAC of NIC number @nic (0, 1, ... in command-line order) of the clone named @name. */
void clone_mac(const char *name, unsigned nic, char out[CLONE_MAC_LEN]);

/*
 * Derive the identity of the clone of managed VM @src (its configuration) in group
 * @clone_group into @id. 0, or -1 with @why (the name, a run_dir too long once renamed, a
 * disk outside the run_dir, too many NICs or disks, a template too long once rewritten).
 */
int clone_derive(const struct bridge_vm_config *src, const char *clone_group,
                 struct clone_identity *id, char *why, size_t whylen);

/*
 * Rewrite @args (a qemu_args template) for a clone: paths under @from_dir to @to_dir, NIC
 * MACs and -uuid from @name. Writes @out (@outlen) and the MACs into @id (n_macs, macs),
 * the disks under @from_dir into @id (n_disks, disk_from, disk_to). 0, or -1 with @why.
 * (clone_derive's core, exposed for the tests.)
 */
int clone_rewrite_args(const char *args, const char *from_dir, const char *to_dir, const char *name,
                       char *out, size_t outlen, struct clone_identity *id, char *why,
                       size_t whylen);

#endif
