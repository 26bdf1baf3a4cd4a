/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * lease.h — a VM's right to run, on shared storage: at most one holder in the cluster.
 *
 * The lease is an OFD write lock on SHARED/leases/VM.lease. Its fd goes to the VM's QEMU
 * (inherited), so the lease lives exactly as long as the QEMU that uses the VM's disk and
 * checkpoint: a bridge restart keeps it, a dead host (QEMU gone) frees it, and another host
 * cannot start the VM before. OFD locks are only as good as the shared file system's lock
 * manager (local and NFSv4 are; the tests share one local directory between namespaces);
 * in production the same interface maps onto sanlock (disk paxos leases with a watchdog),
 * which survives hosts that hang instead of dying.
 */
#ifndef BRIDGE_CLUSTER_LEASE_H
#define BRIDGE_CLUSTER_LEASE_H

#include <stddef.h>

/*
 * Take @vm's lease in @shared_dir for @holder (written into the lease file for admins).
 * The locked fd (close-on-exec not set: hand it to QEMU), or -1 with errno (EAGAIN: someone
 * holds it; @held_by then names the holder as written in the file).
 */
int bridge_lease_acquire(const char *shared_dir, const char *vm, const char *holder, char *held_by,
                         size_t held_len);

/* Who holds @vm's lease: 1 held (@held_by filled), 0 free, -1 error. */
int bridge_lease_probe(const char *shared_dir, const char *vm, char *held_by, size_t held_len);

#endif
