/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * privsep.c — see privsep.h.
 */
#include "config.h"
#include "privsep.h"

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
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <linux/audit.h>
#endif

#include "vms-channel.h"
#include "vms-log.h"

#define READER_IN_FD  3
#define READER_OUT_FD 4
#define NOBODY_ID     65534

static char self_exe[PATH_MAX];

void bridge_privsep_init(const char *argv0)
{
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
    if (n > 0)
        self_exe[n] = '\0';
    else
        snprintf(self_exe, sizeof(self_exe), "%s", argv0);
}

int bridge_privsep_spawn(int fd, const char *vm, pid_t *pid)
{
    int sp[2];
    pid_t child;
    int log_level = vms_log_level();

    if (!self_exe[0] || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
        return -1;
    child = fork();
    if (child < 0) {
        close(sp[0]);
        close(sp[1]);
        return -1;
    }
    if (child == 0) {
        char level[16], ppid[32];
        /* move the two fds above the ones we want, then into place; close the rest */
        int in = fcntl(fd, F_DUPFD, 10), out = fcntl(sp[1], F_DUPFD, 10);
        if (in < 0 || out < 0 || dup2(in, READER_IN_FD) < 0 || dup2(out, READER_OUT_FD) < 0)
            _exit(127);
        close_range(READER_OUT_FD + 1, ~0u, 0);
        snprintf(level, sizeof(level), "%d", log_level);
        snprintf(ppid, sizeof(ppid), "%ld", (long)getppid());
        execl(self_exe, "vmstate-bridged-reader", "-R", vm, "-L", level, "-P", ppid, (char *)NULL);
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

static void drop_privileges(const char *vm)
{
    if (geteuid() == 0) {
        /* an empty root if the system has one (best effort) */
        if (chroot("/var/empty") == 0 && chdir("/") < 0)
            _exit(126);
        if (setgroups(0, NULL) < 0 || setresgid(NOBODY_ID, NOBODY_ID, NOBODY_ID) < 0 ||
            setresuid(NOBODY_ID, NOBODY_ID, NOBODY_ID) < 0) {
            vms_err(vm, NULL, "guest reader: cannot drop privileges: %s", strerror(errno));
            _exit(126);
        }
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        _exit(126);
}

#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(BRIDGE_NO_SECCOMP)
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BRIDGE_NO_SECCOMP 1
#endif
#endif
#endif

#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(BRIDGE_NO_SECCOMP)
#define ALLOW(name)                                                                                \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_##name, 0, 1),                                        \
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

static void enter_seccomp(void)
{
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
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
        ALLOW(getpid),
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

    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
        vms_warn(NULL, NULL, "guest reader: seccomp unavailable: %s", strerror(errno));
}
#else
static void enter_seccomp(void)
{
}
#endif

static int reader_failed;

static void forward(void *opaque, struct vms_channel *c, struct vms_msg *m)
{
    struct vms_channel *out = opaque;
    (void)c;
    if (vms_channel_send(out, m) < 0 || vms_channel_flush(out) < 0)
        reader_failed = 1;
}

void bridge_privsep_reader_main(const char *vm, long parent)
{
    static char name[96];
    struct vms_channel in, out;

    snprintf(name, sizeof(name), "%.60s/port-a", vm);
    signal(SIGPIPE, SIG_DFL);
    drop_privileges(vm);
    /* after the credential change (which clears it): die with the bridge */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != (pid_t)parent)
        _exit(0);
    if (vms_channel_init(&in, name, vm, 0) < 0 || vms_channel_init(&out, "reader-out", vm, 0) < 0)
        _exit(1);
    vms_channel_attach(&in, READER_IN_FD);
    vms_channel_attach(&out, READER_OUT_FD);
    /* blocking I/O: this process has nothing else to do */
    fcntl(READER_IN_FD, F_SETFL, fcntl(READER_IN_FD, F_GETFL) & ~O_NONBLOCK);
    fcntl(READER_OUT_FD, F_SETFL, fcntl(READER_OUT_FD, F_GETFL) & ~O_NONBLOCK);
    tzset(); /* log timestamps: read the zone file now, not under seccomp */
    enter_seccomp();
    for (;;) {
        int rc = vms_channel_read(&in, 0, forward, &out);
        if (rc <= 0 || reader_failed)
            _exit(0);
    }
}
