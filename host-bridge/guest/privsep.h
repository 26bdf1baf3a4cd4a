/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * privsep.h — the guest-facing reader in its own unprivileged process
 * (OpenBSD privsep style).
 *
 * For each port A connection the bridge forks and re-executes itself as a
 * reader (a fresh address space: no database, no secrets' hashes, no QMP
 * socket). The reader is confined before it reads a byte: chroot into an
 * empty directory the bridge created (as root, then uid/gid nobody; as
 * another user, inside a new user namespace, then without capabilities),
 * no_new_privs, and on x86-64 and aarch64 a seccomp allow-list (read, write,
 * memory management, exit). It fails closed: a reader that cannot be
 * confined exits, so the port is not read at all, unless the configuration
 * says reader_sandbox = best-effort (sanitizer builds, which cannot run under
 * the allow-list, skip seccomp with a warning). It deframes and decodes what the
 * guest sends with common/ and writes each good message, as our own encoder
 * writes it, to a socketpair: re-encoded, or passed on as it came when the
 * canonical decoder took it, which it does only for exactly those bytes
 * (test-proto and fuzz-message hold it to that). The parent reads that
 * socketpair with the same channel code, so it only ever parses frames our
 * encoder would write, and accepts nothing else: it decodes them with the
 * canonical decoder, which refuses any frame our encoder would not have
 * written (a reader taken over by its guest can write anything). A
 * memory-safety bug in the decoders is then confined to the reader.
 */
#ifndef BRIDGE_PRIVSEP_H
#define BRIDGE_PRIVSEP_H

#include <sys/types.h>

/*
 * What one guest may make its reader read: BRIDGE_READER_RATE bytes per
 * second, in bursts of up to BRIDGE_READER_BURST. Requests need far less
 * (rate_requests x 64 KiB); beyond it the reader waits, the guest's writes
 * block in virtio-serial, and a flooding guest costs the host a bounded
 * amount of CPU instead of a core.
 */
#define BRIDGE_READER_RATE  (1024.0 * 1024.0)
#define BRIDGE_READER_BURST (4.0 * 1024.0 * 1024.0)

/* Remember the executable to re-execute (call early in main; argv0 as fallback). */
void bridge_privsep_init(const char *argv0);

/*
 * Create the readers' empty root directory (under $RUNTIME_DIRECTORY, else
 * /tmp; mode 0555) and remember whether confinement is @required. Call
 * before the first spawn. The bridge holds a shared flock() on it while it
 * lives; first it removes the empty roots there that no bridge holds (a bridge
 * killed with SIGKILL leaves its own behind). Returns 0 or -1 (logged; with
 * @required no reader will start).
 */
int bridge_privsep_prepare(int required);
/* Remove the empty root directory (at exit). */
void bridge_privsep_cleanup(void);

/*
 * Confine the calling process as a reader (see above) with root @root.
 * Returns 0, or -1 when @required and a step failed (logged). Exported for
 * the test that checks a confined process cannot open a file.
 */
int bridge_privsep_sandbox(const char *vm, const char *root, int required);
/* 1 if this build has a seccomp filter (x86-64 or aarch64, no sanitizer). */
int bridge_privsep_seccomp_built(void);

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
 * The reader's main: confines itself to @root (@required: fail closed),
 * decodes fd 3 (the guest connection), forwards on fd 4. Never returns.
 * Called by main() when started with "-R VM -P PARENT_PID -E ROOT -S 0|1".
 */
void bridge_privsep_reader_main(const char *vm, long parent, const char *root, int required)
    __attribute__((noreturn));

#endif
