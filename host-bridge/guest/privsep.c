/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * privsep.c — see privsep.h.
 */
#include "config.h"
#include "privsep.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <sched.h>
#include <sys/stat.h>

#include "vms-channel.h"
#include "vms-log.h"

#define READER_IN_FD  3
#define READER_OUT_FD 4
#define NOBODY_ID     65534

#define EMPTY_ROOT_PREFIX "vmstate-bridged-empty."

static char self_exe[PATH_MAX];
static char empty_dir[PATH_MAX]; /* the readers' root: created empty by the bridge */
static int empty_fd = -1;        /* it, open and flock()ed shared while the bridge lives */
static int sandbox_required = 1;

void bridge_privsep_init(const char *argv0)
{
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
    if (n > 0)
        self_exe[n] = '\0';
    else
        snprintf(self_exe, sizeof(self_exe), "%s", argv0);
}

/*
 * Remove the empty roots in @dir that no bridge holds: a bridge killed with SIGKILL leaves
 * its own behind. A live bridge holds its root's lock (LOCK_SH) for its whole life, in any PID
 * namespace that shares @dir; only empty directories of ours go (rmdir).
 */
static void sweep_stale_roots(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (!d)
        return;
    while ((e = readdir(d))) {
        struct stat st;
        int fd;

        if (strncmp(e->d_name, EMPTY_ROOT_PREFIX, strlen(EMPTY_ROOT_PREFIX)) != 0)
            continue;
        fd = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (fstat(fd, &st) == 0 && st.st_uid == geteuid() && flock(fd, LOCK_EX | LOCK_NB) == 0)
            unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR);
        close(fd);
    }
    closedir(d);
}

int bridge_privsep_prepare(int required)
{
    const char *base = getenv("RUNTIME_DIRECTORY"); /* systemd's, if any */
    char dir[PATH_MAX - 64];                        /* room for the name after it */
    struct stat st;
    size_t len;

    sandbox_required = required;
    if (empty_dir[0])
        return 0;
    if (!base || !base[0] || base[0] != '/')
        base = "/tmp";
    /* RUNTIME_DIRECTORY may list several: the first */
    len = strcspn(base, ":");
    if (len >= sizeof(dir)) {
        vms_err(NULL, NULL, "guest reader: runtime directory path too long");
        return -1;
    }
    memcpy(dir, base, len);
    dir[len] = '\0';
    sweep_stale_roots(dir);
    for (int tries = 0; tries < 3; tries++) {
        snprintf(empty_dir, sizeof(empty_dir), "%s/" EMPTY_ROOT_PREFIX "XXXXXX", dir);
        if (!mkdtemp(empty_dir))
            goto fail;
        /* mkdtemp makes it 0700 and ours; then r-x for all: a reader may enter, no one may
         * write */
        empty_fd = open(empty_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (empty_fd < 0 && errno == ENOENT)
            continue; /* another bridge's sweep took it before we opened it */
        if (empty_fd < 0 || chmod(empty_dir, 0555) < 0 || flock(empty_fd, LOCK_SH) < 0) {
            int saved = errno;
            rmdir(empty_dir);
            errno = saved;
            goto fail;
        }
        /* another bridge's sweep may have taken it between mkdtemp and the lock */
        if (fstat(empty_fd, &st) == 0 && st.st_nlink > 0)
            return 0;
        close(empty_fd);
        empty_fd = -1;
        errno = ENOENT;
    }
fail:
    vms_err(NULL, NULL, "guest reader: cannot create an empty root directory %s: %s", empty_dir,
            strerror(errno));
    if (empty_fd >= 0)
        close(empty_fd);
    empty_fd = -1;
    empty_dir[0] = '\0';
    return -1;
}

void bridge_privsep_cleanup(void)
{
    if (empty_dir[0])
        rmdir(empty_dir);
    empty_dir[0] = '\0';
    if (empty_fd >= 0)
        close(empty_fd);
    empty_fd = -1;
}

int bridge_privsep_spawn(int fd, const char *vm, pid_t *pid)
{
    int sp[2];
    pid_t child;
    int log_level = vms_log_level();

    if (!self_exe[0] || (sandbox_required && !empty_dir[0])) {
        errno = ENOENT; /* no empty root to confine the reader in: no reader, no port */
        return -1;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
        return -1;
    child = fork();
    if (child < 0) {
        close(sp[0]);
        close(sp[1]);
        return -1;
    }
    if (child == 0) {
        char level[16], ppid[32], strict[4];
        sigset_t none;
        /* the bridge blocks SIGTERM for its signalfd and execve keeps the mask: unblocked,
         * or port_close()'s SIGTERM never ends the reader and QEMU's connection stays open */
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        /* move the two fds above the ones we want, then into place; close the rest */
        int in = fcntl(fd, F_DUPFD, 10), out = fcntl(sp[1], F_DUPFD, 10);
        if (in < 0 || out < 0 || dup2(in, READER_IN_FD) < 0 || dup2(out, READER_OUT_FD) < 0)
            _exit(127);
        close_range(READER_OUT_FD + 1, ~0u, 0);
        snprintf(level, sizeof(level), "%d", log_level);
        snprintf(ppid, sizeof(ppid), "%ld", (long)getppid());
        snprintf(strict, sizeof(strict), "%d", sandbox_required);
        execl(self_exe, "vmstate-bridged-reader", "-R", vm, "-L", level, "-P", ppid, "-E",
              empty_dir, "-S", strict, (char *)NULL);
        _exit(127);
    }
    close(sp[1]);
    close(fd);
    *pid = child;
    return sp[0];
}

void bridge_privsep_reap(const char *(*vm_of)(pid_t pid, void *opaque), void *opaque)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        const char *vm = vm_of ? vm_of(pid, opaque) : NULL;
        if (WIFSIGNALED(status))
            vms_warn(vm, NULL, "guest reader %ld killed by signal %d%s", (long)pid,
                     WTERMSIG(status),
                     WTERMSIG(status) == SIGSYS ? " (a system call outside its seccomp list)" : "");
        else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
            vms_warn(vm, NULL, "guest reader %ld exited with status %d", (long)pid,
                     WEXITSTATUS(status));
        else
            vms_debug(vm, NULL, "guest reader %ld exited", (long)pid);
    }
}

/* ---- the reader ---- */

/* Drop every capability (those a new user namespace gave us included). */
static int drop_capabilities(void)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

    memset(data, 0, sizeof(data));
    return (int)syscall(SYS_capset, &hdr, data);
}

/*
 * Root into @root, an empty directory no one may write. As root: chroot,
 * then uid/gid nobody. Otherwise chroot with CAP_SYS_CHROOT if the unit gave
 * it, else inside a new user namespace; then every capability is dropped.
 */
static int confine(const char *root, const char **what)
{
    if (!root || !root[0]) {
        *what = "no empty root directory";
        errno = ENOENT;
        return -1;
    }
    /* without the right to chroot (not root, no CAP_SYS_CHROOT): a user namespace gives it */
    if (chroot(root) < 0 && (errno != EPERM || unshare(CLONE_NEWUSER) < 0 || chroot(root) < 0)) {
        *what = errno == EPERM ? "chroot (and no user namespace)" : "chroot";
        return -1;
    }
    if (chdir("/") < 0) {
        *what = "chdir /";
        return -1;
    }
    if (geteuid() == 0 && getuid() == 0) { /* real root (in a new user namespace we are not) */
        if (setgroups(0, NULL) < 0 || setresgid(NOBODY_ID, NOBODY_ID, NOBODY_ID) < 0 ||
            setresuid(NOBODY_ID, NOBODY_ID, NOBODY_ID) < 0) {
            *what = "setresuid nobody";
            return -1;
        }
    }
    if (drop_capabilities() < 0) {
        *what = "capset";
        return -1;
    }
    return 0;
}

#if defined(__SANITIZE_ADDRESS__)
#define BRIDGE_NO_SECCOMP 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BRIDGE_NO_SECCOMP 1
#endif
#endif

#if defined(__x86_64__)
#define READER_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define READER_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#define BRIDGE_NO_SECCOMP 1
#endif

#if !defined(BRIDGE_NO_SECCOMP)
#define ALLOW(name)                                                                                \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_##name, 0, 1),                                        \
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

/*
 * The reader's allow-list: reading and writing its two fds, memory, time,
 * randomness, the identity queries libdbus makes, signals' return, exit.
 * Everything else (open, socket, exec, ...) kills it. Same list on x86-64
 * and aarch64 (both have these calls; aarch64 has no legacy open() anyway).
 */
static int enter_seccomp(void)
{
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, READER_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        ALLOW(read),
        ALLOW(write),
        ALLOW(writev),
        ALLOW(close),
        ALLOW(brk),
        ALLOW(mmap),
        ALLOW(munmap),
        ALLOW(mremap),
        ALLOW(madvise),
        ALLOW(futex),
        ALLOW(clock_gettime),
        ALLOW(gettimeofday),
        ALLOW(getrandom),
        ALLOW(nanosleep), /* the input rate limit */
        ALLOW(clock_nanosleep),
        ALLOW(getpid),
        ALLOW(getppid),
        ALLOW(getuid),
        ALLOW(geteuid),
        ALLOW(getgid),
        ALLOW(getegid),
        ALLOW(getresuid), /* libdbus checks whether it runs setuid */
        ALLOW(getresgid),
        ALLOW(fstat),
        ALLOW(newfstatat),
        ALLOW(rt_sigreturn),
        ALLOW(rt_sigprocmask),
        ALLOW(exit),
        ALLOW(exit_group),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    };
    struct sock_fprog prog = {.len = sizeof(filter) / sizeof(filter[0]), .filter = filter};

    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}
#define SECCOMP_BUILT 1
#else
static int enter_seccomp(void)
{
    errno = ENOSYS;
    return -1;
}
#define SECCOMP_BUILT 0
#endif

int bridge_privsep_seccomp_built(void)
{
    return SECCOMP_BUILT;
}

int bridge_privsep_sandbox(const char *vm, const char *root, int required)
{
    const char *what = "";

    if (confine(root, &what) < 0) {
        vms_log(required ? LOG_ERR : LOG_WARNING, vm, NULL, "guest reader: %s: %s%s", what,
                strerror(errno), required ? "; refusing to read the guest unconfined" : "");
        if (required)
            return -1;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -1;
    /* after the credential change (which clears it): die with the bridge */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    tzset(); /* log timestamps: read the zone file now, not under seccomp */
    if (enter_seccomp() < 0) {
        int sanitizer = !SECCOMP_BUILT && errno == ENOSYS;
        /* sanitizer builds cannot run under the allow-list: they are for tests, said once */
        vms_log(required && !sanitizer ? LOG_ERR : LOG_WARNING, vm, NULL,
                "guest reader: seccomp: %s%s", strerror(errno),
                required && !sanitizer ? "; refusing to read the guest unconfined" : "");
        if (required && !sanitizer)
            return -1;
    }
    return 0;
}

static int reader_failed;

/* Wait as long as the bytes read so far (@total) exceed the reader's byte budget. */
static void reader_throttle(uint64_t total)
{
    static double tokens = BRIDGE_READER_BURST, last;
    static uint64_t counted;
    struct timespec ts;
    double now, wait;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    if (last > 0)
        tokens += (now - last) * BRIDGE_READER_RATE;
    if (tokens > BRIDGE_READER_BURST)
        tokens = BRIDGE_READER_BURST;
    last = now;
    tokens -= (double)(total - counted);
    counted = total;
    if (tokens >= 0)
        return;
    wait = -tokens / BRIDGE_READER_RATE;
    ts.tv_sec = (time_t)wait;
    ts.tv_nsec = (long)((wait - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);
}

static void forward(void *opaque, struct vms_channel *c, struct vms_msg *m)
{
    struct vms_channel *out = opaque;
    const char *rid = m->request_id[0] ? m->request_id : NULL;
    /* what the canonical decoder took is what our encoder writes for @m: passed on as it came,
     * not encoded again */
    int rc = c->canonical ? vms_channel_send_payload(out, c->canonical, c->canonical_len,
                                                     vms_msg_type_name(m->type), rid)
                          : vms_channel_send(out, m);

    if (rc < 0 || vms_channel_flush(out) < 0)
        reader_failed = 1;
}

void bridge_privsep_reader_main(const char *vm, long parent, const char *root, int required)
{
    static char name[96];
    struct vms_channel in, out;

    snprintf(name, sizeof(name), "%.60s/port-a", vm);
    signal(SIGPIPE, SIG_DFL);
    if (vms_channel_init(&in, name, vm, 0) < 0 || vms_channel_init(&out, "reader-out", vm, 0) < 0)
        _exit(1);
    /* the helper writes with our encoder: its frames are read without libdbus's validation
     * (the canonical decoder takes any bytes and only what the full one reads the same way);
     * the rest, a helper of another version's, through the full decoder. Either way the
     * parent gets our encoder's frames. */
    in.decode = VMS_CHANNEL_DECODE_OURS_FIRST;
    vms_channel_attach(&in, READER_IN_FD);
    vms_channel_attach(&out, READER_OUT_FD);
    /* blocking I/O: this process has nothing else to do */
    fcntl(READER_IN_FD, F_SETFL, fcntl(READER_IN_FD, F_GETFL) & ~O_NONBLOCK);
    fcntl(READER_OUT_FD, F_SETFL, fcntl(READER_OUT_FD, F_GETFL) & ~O_NONBLOCK);
    /* fail closed: a reader that cannot be confined does not read (the port stays down) */
    if (bridge_privsep_sandbox(vm, root, required) < 0)
        _exit(126);
    if (getppid() != (pid_t)parent)
        _exit(0);
    for (;;) {
        int rc = vms_channel_read(&in, 0, forward, &out);
        if (rc <= 0 || reader_failed)
            _exit(0);
        reader_throttle(in.bytes_in);
    }
}
