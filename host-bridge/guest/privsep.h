/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * privsep.h — the guest-facing reader in its own unprivileged process
 * (OpenBSD privsep style).
 *
 * For each port A connection the bridge forks and re-executes itself as a
 * reader (a fresh address space: no database, no secrets' hashes, no QMP
 * socket). The reader drops to "nobody" when started as root, sets
 * no_new_privs and, on x86-64 without sanitizers, a seccomp allow-list
 * (read, write, memory management, exit). It deframes and decodes what the
 * guest sends with common/ and writes each good message, re-encoded by our
 * own encoder, to a socketpair. The parent reads that socketpair with the
 * same channel code, so it only ever parses frames this code produced. A
 * memory-safety bug in the decoder is then confined to the reader.
 */
#ifndef BRIDGE_PRIVSEP_H
#define BRIDGE_PRIVSEP_H

#include <sys/types.h>

/* Remember the executable to re-execute (call early in main; argv0 as fallback). */
void bridge_privsep_init(const char *argv0);

/*
 * Start a reader for the guest connection @fd of VM @vm. On success returns
 * the parent's end of the socketpair (non-blocking use is the caller's), sets
 * *pid, and closes @fd in the parent. Returns -1 on failure (@fd untouched).
 */
int bridge_privsep_spawn(int fd, const char *vm, pid_t *pid);

/*
 * Reap exited readers (non-blocking); logs abnormal ends with the VM name
 * @vm_of returns for the pid (may be NULL, or return NULL).
 */
void bridge_privsep_reap(const char *(*vm_of)(pid_t pid, void *opaque), void *opaque);

/*
 * The reader's main: decodes fd 3 (the guest connection), forwards on fd 4.
 * Never returns. Called by main() when started with "-R VM -P PARENT_PID".
 */
void bridge_privsep_reader_main(const char *vm, long parent) __attribute__((noreturn));

#endif
