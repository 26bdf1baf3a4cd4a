/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * qemu-proc.c — a managed VM's QEMU process: its command line (the bridge's devices, then
 * the admin's template), the detached start, and the files it uses: the RAM file's lock and
 * fingerprint, /proc for its start time and CPU. See managed.h.
 */
#include "config.h"
#include "managed-int.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vms-log.h"

/* ---- files and locks ---- */

/* Take an OFD write lock on @path (opened O_RDWR). Returns the fd, or -1 (errno EAGAIN: held). */
int lc_ofd_lock(const char *path, int create, uint64_t size)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    int fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);

    if (fd < 0)
        return -1;
    if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
        int e = errno;
        close(fd);
        errno = e == EACCES ? EAGAIN : e;
        return -1;
    }
    if (create) {
        /* reserve every page now: tmpfs would otherwise run out under a running guest
         * and QEMU dies of SIGBUS */
        if (ftruncate(fd, 0) < 0 || fallocate(fd, 0, 0, (off_t)size) < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
    }
    return fd;
}

/* Fingerprint of a RAM file: identity, size and change times. */
int lc_ram_fingerprint(const char *path, char *out, size_t len)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return -1;
    snprintf(out, len, "%llu:%llu:%lld:%lld.%09ld:%lld.%09ld", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino, (long long)st.st_size, (long long)st.st_mtim.tv_sec,
             st.st_mtim.tv_nsec, (long long)st.st_ctim.tv_sec, st.st_ctim.tv_nsec);
    return 0;
}

/* /proc/PID/stat field 22: when the process started (ticks since boot); 0 if gone. */
long long lc_proc_start_time(pid_t pid, unsigned long long *cpu_ticks)
{
    char path[64], buf[1024], *p;
    unsigned long long utime = 0, stime = 0, start = 0;
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    p = strrchr(buf, ')');
    if (!p)
        return 0;
    /* after ")": state(3) ... utime(14) stime(15) ... starttime(22) */
    if (p[2] == 'Z' || p[2] == 'X')
        return 0; /* exited, not yet reaped */
    if (sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
               "%*d %llu",
               &utime, &stime, &start) != 3)
        return 0;
    if (cpu_ticks)
        *cpu_ticks = utime + stime;
    return (long long)start;
}

/*
 * Split the template into @argv (at @*argc): words are separated by blanks, a double-quoted
 * part keeps its blanks (-append "console=ttyS0 quiet"), {run} and {name} are substituted.
 */
static int template_args(const struct bridge_vm_config *c, char **argv, int *argc, int max)
{
    const char *s = c->qemu_args;

    for (;;) {
        char out[2048];
        size_t o = 0;
        int quoted = 0;

        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s)
            return 0;
        while (*s && (quoted || (*s != ' ' && *s != '\t'))) {
            const char *sub = NULL;
            if (*s == '"') {
                quoted = !quoted;
                s++;
                continue;
            }
            if (!strncmp(s, "{run}", 5)) {
                sub = c->run_dir;
                s += 5;
            } else if (!strncmp(s, "{name}", 6)) {
                sub = c->name;
                s += 6;
            }
            if (sub)
                o += (size_t)snprintf(out + o, sizeof(out) - o, "%s", sub);
            else
                out[o++] = *s++;
            if (o >= sizeof(out) - 1)
                return -1;
        }
        if (quoted)
            return -1;
        out[o] = '\0';
        if (*argc >= max - 1 || !(argv[(*argc)++] = strdup(out)))
            return -1;
    }
}

static int add_arg(char **argv, int *argc, int max, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int add_arg(char **argv, int *argc, int max, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    int rc;

    va_start(ap, fmt);
    rc = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (rc < 0 || *argc >= max - 1) {
        free(s);
        return -1;
    }
    argv[(*argc)++] = s;
    return 0;
}

/*
 * The command line: what the bridge owns (QMP, the virtio-serial bus vms-vser with the two
 * ports, the RAM backend in the tier for zero-copy), the admin's template, the console
 * socket, and for a resume
 * -incoming defer -S (the VM waits paused for its checkpoint and for cont).
 */
static char **build_argv(struct bridge_managed *m, int incoming)
{
    const struct bridge_vm_config *c = m->vm->cfg;
    char **argv = calloc(ARGV_MAX, sizeof(char *));
    int n = 0, bad = 0;

    if (!argv)
        return NULL;
    bad |= add_arg(argv, &n, ARGV_MAX, "%s", c->qemu);
    bad |= add_arg(argv, &n, ARGV_MAX, "-name");
    bad |= add_arg(argv, &n, ARGV_MAX, "%s,debug-threads=on", c->name);
    bad |= add_arg(argv, &n, ARGV_MAX, "-pidfile");
    bad |= add_arg(argv, &n, ARGV_MAX, "%s/qemu.pid", c->run_dir);
    bad |= add_arg(argv, &n, ARGV_MAX, "-m");
    bad |= add_arg(argv, &n, ARGV_MAX, "%lluM", (unsigned long long)(lc_memory_bytes(m->vm) >> 20));
    if (m->row.ram_file[0]) {
        bad |= add_arg(argv, &n, ARGV_MAX, "-object");
        bad |= add_arg(argv, &n, ARGV_MAX,
                       "memory-backend-file,id=vms-ram,size=%llu,mem-path=%s,share=on",
                       (unsigned long long)lc_memory_bytes(m->vm), m->row.ram_file);
        bad |= add_arg(argv, &n, ARGV_MAX, "-machine");
        bad |= add_arg(argv, &n, ARGV_MAX, "memory-backend=vms-ram");
    }
    bad |= add_arg(argv, &n, ARGV_MAX, "-chardev");
    bad |= add_arg(argv, &n, ARGV_MAX, "socket,id=vms-qmp,path=%s,server=on,wait=off", c->qmp);
    bad |= add_arg(argv, &n, ARGV_MAX, "-mon");
    bad |= add_arg(argv, &n, ARGV_MAX, "chardev=vms-qmp,mode=control");
    bad |= add_arg(argv, &n, ARGV_MAX, "-device");
    /* no ioeventfds: QEMU tears down one per virtqueue (64 here) at every stop, ~0.6 ms of a
     * group's stop at T (bench/RESULTS.md §10); two low-rate ports do not need them. Not in
     * the migration stream: checkpoints load either way. */
    bad |= add_arg(argv, &n, ARGV_MAX, "virtio-serial-pci,id=vms-vser,ioeventfd=off");
    bad |= add_arg(argv, &n, ARGV_MAX, "-chardev");
    bad |= add_arg(argv, &n, ARGV_MAX, "socket,id=vms-a,path=%s,server=on,wait=off", c->port_a);
    bad |= add_arg(argv, &n, ARGV_MAX, "-device");
    bad |= add_arg(argv, &n, ARGV_MAX,
                   "virtserialport,bus=vms-vser.0,chardev=vms-a,id=vms-porta,name=%s",
                   "org.vmstate.request.0");
    bad |= add_arg(argv, &n, ARGV_MAX, "-chardev");
    bad |= add_arg(argv, &n, ARGV_MAX, "socket,id=vms-b,path=%s,server=on,wait=off", c->port_b);
    bad |= add_arg(argv, &n, ARGV_MAX, "-device");
    bad |= add_arg(argv, &n, ARGV_MAX,
                   "virtserialport,bus=vms-vser.0,chardev=vms-b,id=vms-portb,name=%s",
                   "org.vmstate.event.0");
    /* the template after the bridge's devices, so that it can add ports on vms-vser.0 */
    bad |= template_args(c, argv, &n, ARGV_MAX);
    if (m->console_fd >= 0) {
        bad |= add_arg(argv, &n, ARGV_MAX, "-chardev");
        bad |= add_arg(argv, &n, ARGV_MAX, "socket,id=vms-console,fd=%d,server=on,wait=off",
                       FD_CONSOLE);
        bad |= add_arg(argv, &n, ARGV_MAX, "-serial");
        bad |= add_arg(argv, &n, ARGV_MAX, "chardev:vms-console");
    }
    if (c->qemu_user[0]) {
        bad |= add_arg(argv, &n, ARGV_MAX, "-runas");
        bad |= add_arg(argv, &n, ARGV_MAX, "%s", c->qemu_user);
    }
    if (m->loadvm[0] && !incoming) {
        /* an HA restart from the VM's latest snapshot on the shared disk */
        bad |= add_arg(argv, &n, ARGV_MAX, "-loadvm");
        bad |= add_arg(argv, &n, ARGV_MAX, "%s", m->loadvm);
    }
    if (incoming) {
        bad |= add_arg(argv, &n, ARGV_MAX, "-incoming");
        bad |= add_arg(argv, &n, ARGV_MAX, "defer");
        bad |= add_arg(argv, &n, ARGV_MAX, "-S");
    }
    if (bad) {
        for (int i = 0; i < n; i++)
            free(argv[i]);
        free(argv);
        return NULL;
    }
    return argv;
}

static void free_argv(char **argv)
{
    for (int i = 0; argv && argv[i]; i++)
        free(argv[i]);
    free(argv);
}

/*
 * Start QEMU detached (own session; its stdout/stderr to run_dir/qemu.log). The RAM file's
 * lock fd becomes QEMU's fd 3, so QEMU holds the lock for as long as it lives. Returns the
 * pid, or -1.
 */
pid_t lc_spawn_qemu(struct bridge_managed *m, int incoming)
{
    const struct bridge_vm_config *c = m->vm->cfg;
    char **argv = build_argv(m, incoming), log[BRIDGE_PATH_MAX + 16];
    pid_t pid;
    int logfd;

    if (!argv)
        return -1;
    snprintf(log, sizeof(log), "%s/qemu.log", c->run_dir);
    logfd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (logfd < 0) {
        vms_err(vmname(m->vm), NULL, "lifecycle: %s: %s", log, strerror(errno));
        free_argv(argv);
        return -1;
    }
    pid = fork();
    if (pid == 0) {
        sigset_t none;
        int devnull = open("/dev/null", O_RDONLY);
        int ram = m->ram_lock_fd >= 0 ? fcntl(m->ram_lock_fd, F_DUPFD, 64) : -1;
        int con = m->console_fd >= 0 ? fcntl(m->console_fd, F_DUPFD, 64) : -1;
        int lease = m->lease_fd >= 0 ? fcntl(m->lease_fd, F_DUPFD, 64) : -1;

        setsid(); /* a bridge restart or a signal to its group never reaches QEMU */
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        dup2(devnull, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        if (ram >= 0)
            dup2(ram, FD_RAM);
        if (con >= 0)
            dup2(con, FD_CONSOLE);
        if (lease >= 0)
            dup2(lease, FD_LEASE);
        /* QEMU gets exactly the fds it is told about */
        if (ram < 0)
            close(FD_RAM);
        if (con < 0)
            close(FD_CONSOLE);
        closefrom(lease >= 0 ? FD_LEASE + 1 : FD_CONSOLE + 1);
        execvp(argv[0], argv);
        dprintf(2, "vmstate-bridged: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(logfd);
    free_argv(argv);
    if (pid < 0)
        return -1;
    return pid;
}
