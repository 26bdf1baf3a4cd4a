/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vms-daemon.c — see vms-daemon.h.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vms-daemon.h"

static int ready_fd = -1;
static char pid_path[4096];

/* A pidfile that names a live process: another instance runs. */
static int pidfile_in_use(const char *path)
{
    FILE *f = fopen(path, "r");
    long pid = 0;

    if (!f)
        return 0;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = 0;
    fclose(f);
    return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

static int write_pidfile(const char *path)
{
    char line[32];
    int fd, n;

    unlink(path); /* stale: checked by pidfile_in_use */
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    n = snprintf(line, sizeof(line), "%ld\n", (long)getpid());
    if (write(fd, line, (size_t)n) != n) {
        close(fd);
        unlink(path);
        return -1;
    }
    close(fd);
    snprintf(pid_path, sizeof(pid_path), "%s", path);
    return 0;
}

int vms_daemonize(const char *pidfile)
{
    int pipefd[2], null_fd;
    char status = 0;
    pid_t pid;

    if (pidfile && pidfile_in_use(pidfile)) {
        fprintf(stderr, "already running: %s names a live process\n", pidfile);
        return -1;
    }
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        perror("pipe");
        return -1;
    }
    pid = fork();
    if (pid < 0) {
        perror("fork");
        return -1;
    }
    if (pid > 0) { /* the original process: exit with the daemon's start-up verdict */
        close(pipefd[1]);
        if (read(pipefd[0], &status, 1) != 1)
            status = 0;
        waitpid(pid, NULL, 0);
        _exit(status == 1 ? 0 : 1);
    }
    close(pipefd[0]);
    setsid();
    pid = fork(); /* not a session leader: never gets a controlling terminal again */
    if (pid < 0)
        _exit(1);
    if (pid > 0)
        _exit(0);
    ready_fd = pipefd[1];
    if (chdir("/") < 0)
        return -1;
    umask(022);
    null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd >= 0) {
        dup2(null_fd, 0);
        dup2(null_fd, 1);
        dup2(null_fd, 2);
        if (null_fd > 2)
            close(null_fd);
    }
    if (pidfile && write_pidfile(pidfile) < 0) {
        vms_daemon_ready(0);
        return -1;
    }
    return 0;
}

void vms_daemon_ready(int ok)
{
    char status = ok ? 1 : 2;

    if (ready_fd < 0)
        return;
    if (!ok) /* before the parent hears it: its caller may look for the pidfile at once */
        vms_daemon_cleanup();
    if (write(ready_fd, &status, 1) != 1) {
        /* the parent is gone: nobody to tell */
    }
    close(ready_fd);
    ready_fd = -1;
}

void vms_daemon_cleanup(void)
{
    if (pid_path[0])
        unlink(pid_path);
    pid_path[0] = '\0';
}
