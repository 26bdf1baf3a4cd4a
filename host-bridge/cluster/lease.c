/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * lease.c — see lease.h.
 */
#define _GNU_SOURCE
#include "config.h"
#include "lease.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vms-log.h"

static int lease_path(const char *shared_dir, const char *vm, char *path, size_t len, int mkdirs)
{
    int n = snprintf(path, len, "%s/leases", shared_dir);
    if (n < 0 || (size_t)n >= len)
        return -1;
    if (mkdirs && mkdir(path, 0700) < 0 && errno != EEXIST)
        return -1;
    n = snprintf(path, len, "%s/leases/%s.lease", shared_dir, vm);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

static void read_holder(int fd, char *held_by, size_t held_len)
{
    ssize_t n;
    if (!held_by || !held_len)
        return;
    n = pread(fd, held_by, held_len - 1, 0);
    held_by[n > 0 ? n : 0] = '\0';
    held_by[strcspn(held_by, "\n")] = '\0';
}

int bridge_lease_acquire(const char *shared_dir, const char *vm, const char *holder, char *held_by,
                         size_t held_len)
{
    char path[1024], line[160];
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    int fd, n;

    if (held_by && held_len)
        held_by[0] = '\0';
    if (lease_path(shared_dir, vm, path, sizeof(path), 1) < 0)
        return -1;
    /* no O_CLOEXEC: the fd is meant for QEMU (the spawner picks it by number) */
    fd = open(path, O_RDWR | O_CREAT, 0600);
    if (fd < 0)
        return -1;
    if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
        int e = errno == EACCES ? EAGAIN : errno;
        read_holder(fd, held_by, held_len);
        close(fd);
        errno = e;
        return -1;
    }
    n = snprintf(line, sizeof(line), "%s since %lld\n", holder, (long long)time(NULL));
    /* the holder's name is for admins only: the lock is what counts */
    if (ftruncate(fd, 0) < 0 || pwrite(fd, line, (size_t)n, 0) != n)
        vms_warn(vm, NULL, "cluster: cannot write the lease holder: %s", strerror(errno));
    return fd;
}

int bridge_lease_probe(const char *shared_dir, const char *vm, char *held_by, size_t held_len)
{
    char path[1024];
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    int fd, rc;

    if (lease_path(shared_dir, vm, path, sizeof(path), 0) < 0)
        return -1;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    rc = fcntl(fd, F_OFD_GETLK, &fl);
    if (rc == 0 && fl.l_type != F_UNLCK)
        read_holder(fd, held_by, held_len);
    close(fd);
    return rc < 0 ? -1 : fl.l_type != F_UNLCK;
}
