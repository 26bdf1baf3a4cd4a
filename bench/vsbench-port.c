/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vsbench-port — the physical floor and the qemu-ga anchor, one small program used on both
 * sides of the VM (no vmstate code involved).
 *
 *   vsbench-port echo IN OUT             copy bytes from IN to OUT until EOF (the far end)
 *   vsbench-port ping OUT IN N [SIZE]    N round trips: write SIZE bytes (default 1) on OUT,
 *                                        wait for SIZE bytes on IN; prints the statistics
 *   vsbench-port qga SOCK N              N qemu-ga guest-ping round trips on SOCK
 *   vsbench-port saveloop N A B MARK     the floor of a save and a restore (see do_saveloop)
 *   vsbench-port saves N A B MARK        the floor of N saves in a row (no restore between)
 *
 * IN/OUT/SOCK: a path to open (a /dev/vportNpM device in the guest), unix:PATH (connect to
 * QEMU's chardev socket on the host; the same socket may be both IN and OUT) or fd:N (a
 * descriptor inherited open, e.g. one end of a socketpair between two echoes). Output of ping
 * and qga: one line "n=N median_us=M p99_us=P min_us=A max_us=B mean_us=C", and with
 * VSBENCH_SAMPLES=FILE every sample (ns, one per line) written to FILE.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "vsbench-common.h"

static void die(const char *what)
{
    fprintf(stderr, "vsbench-port: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int open_end(const char *spec)
{
    if (strncmp(spec, "fd:", 3) == 0)
        return atoi(spec + 3);
    if (strncmp(spec, "unix:", 5) == 0) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(spec + 5) >= sizeof(sa.sun_path)) {
            errno = ENAMETOOLONG;
            die(spec);
        }
        strcpy(sa.sun_path, spec + 5);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            die("socket");
        for (int i = 0; connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0; i++) {
            if (i > 500)
                die(spec);
            usleep(10000);
        }
        return fd;
    }
    int fd = open(spec, O_RDWR | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        die(spec);
    return fd;
}

/* Open IN and OUT; one connection when both name the same socket. */
static void open_pair(const char *in, const char *out, int *fin, int *fout)
{
    *fin = open_end(in);
    *fout = strcmp(in, out) == 0 ? *fin : open_end(out);
}

static void write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die("write");
        p += n;
        len -= (size_t)n;
    }
}

static void read_exact(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("read");
        if (n == 0) {
            errno = EPIPE;
            die("read: end of file");
        }
        p += n;
        len -= (size_t)n;
    }
}

/* The statistics line; with VSBENCH_SAMPLES=FILE every sample (ns, one per line) first. */
static void report(uint64_t *s, size_t n)
{
    const char *path = getenv("VSBENCH_SAMPLES");
    if (path && *path) {
        FILE *f = fopen(path, "w");
        if (!f)
            die(path);
        for (size_t i = 0; i < n; i++)
            fprintf(f, "%llu\n", (unsigned long long)s[i]);
        fclose(f);
    }
    vsbench_report("", s, n);
}

static int do_echo(const char *in, const char *out)
{
    int fin, fout;
    open_pair(in, out, &fin, &fout);
    char buf[4096];
    int seen = 0, waited = 0;
    for (;;) {
        ssize_t n = read(fin, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("read");
        if (n == 0) {
            /* A virtio port whose host side is not connected yet reads 0 at once: before the
             * first byte, wait for it (up to 30 s) without spinning; afterwards EOF ends. */
            if (seen || waited++ > 3000)
                return 0;
            usleep(10000);
            continue;
        }
        seen = 1;
        write_all(fout, buf, (size_t)n);
    }
}

static int do_ping(const char *out, const char *in, size_t n, size_t size)
{
    int fin, fout;
    open_pair(in, out, &fin, &fout);
    char *buf = malloc(size), *got = malloc(size);
    uint64_t *s = calloc(n, sizeof(*s));
    if (!buf || !got || !s)
        die("malloc");
    for (size_t i = 0; i < size; i++)
        buf[i] = (char)('a' + i % 26);
    /* warm-up: 10 untimed round trips */
    for (size_t i = 0; i < 10 + n; i++) {
        uint64_t t0 = vsbench_now_ns();
        write_all(fout, buf, size);
        read_exact(fin, got, size);
        if (i >= 10)
            s[i - 10] = vsbench_now_ns() - t0;
        if (memcmp(buf, got, size) != 0) {
            fprintf(stderr, "vsbench-port: echo returned other bytes\n");
            return 1;
        }
    }
    report(s, n);
    return 0;
}

/* Read one line (qemu-ga answers one JSON object per line). */
static size_t read_line(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    for (;;) {
        if (len + 1 >= cap) {
            errno = EMSGSIZE;
            die("qga answer too long");
        }
        ssize_t n = read(fd, buf + len, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die("read qga");
        if (buf[len] == '\n') {
            buf[len] = 0;
            return len;
        }
        len++;
    }
}

static int do_qga(const char *sock, size_t n)
{
    int fd = open_end(sock);
    char line[4096];
    /* Sync first: the agent may hold a half-read command from an earlier client. */
    char sync[128];
    long id = (long)(vsbench_now_ns() % 1000000000);
    int len =
        snprintf(sync, sizeof(sync),
                 "\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":%ld}}\n", id);
    write_all(fd, sync, (size_t)len);
    char want[32];
    snprintf(want, sizeof(want), "%ld", id);
    for (;;) {
        read_line(fd, line, sizeof(line));
        if (strstr(line, want))
            break;
    }
    static const char ping[] = "{\"execute\":\"guest-ping\"}\n";
    uint64_t *s = calloc(n, sizeof(*s));
    if (!s)
        die("malloc");
    for (size_t i = 0; i < 10 + n; i++) {
        uint64_t t0 = vsbench_now_ns();
        write_all(fd, ping, sizeof(ping) - 1);
        read_line(fd, line, sizeof(line));
        if (i >= 10)
            s[i - 10] = vsbench_now_ns() - t0;
        if (!strstr(line, "\"return\"")) {
            fprintf(stderr, "vsbench-port: qga answered: %s\n", line);
            return 1;
        }
    }
    report(s, n);
    return 0;
}

/* One answer byte from the host on @fd. A port whose host side is reconnecting reads 0:
 * wait for the byte (up to 60 s) instead of taking that for the end. */
static char read_answer(int fd)
{
    for (int waited = 0;; waited++) {
        char c;
        ssize_t n = read(fd, &c, 1);
        if (n == 1)
            return c;
        if (n < 0 && errno != EINTR)
            die("read");
        if (n == 0 && waited > 60000) {
            errno = EPIPE;
            die("read: no answer");
        }
        if (n == 0)
            usleep(1000);
    }
}

/*
 * The floor of bench-saverestore's figures: what one guest process pays around QEMU's own
 * snapshot jobs with nothing of vmstate's in the way. The host side (bench-saverestore.py
 * --floor) runs snapshot-save on 'S' from port A and snapshot-load of that state on 'L',
 * and writes the same byte on port B once the job has concluded. Per round, the marks of
 * vsbench-app saveloop: 's', ask for a save, 'e' at its answer, 'R', ask for the restore;
 * this instance is then replaced by the restored one, which was waiting for the save's
 * answer and reads 'L' instead: 'r', and on to the next round. Without @restore ("saves"):
 * 's' and 'e' only, the saves in a row, as vsbench-app saves.
 */
static int do_saveloop(size_t n, const char *a, const char *b, const char *mark, int restore)
{
    int fa = open_end(a), fb = open_end(b), fm = open_end(mark);

    for (size_t i = 0; i < n; i++) {
        write_all(fm, "s", 1);
        write_all(fa, "S", 1);
        char c = read_answer(fb);
        if (c == 'L') { /* the restored instance */
            write_all(fm, "r", 1);
            continue;
        }
        if (c != 'S') {
            fprintf(stderr, "vsbench-port: save answered %c\n", c);
            return 1;
        }
        write_all(fm, "e", 1);
        if (!restore)
            continue;
        write_all(fm, "R", 1);
        write_all(fa, "L", 1);
        c = read_answer(fb);
        fprintf(stderr, "vsbench-port: the restore returned here (%c)\n", c);
        return 1;
    }
    write_all(fm, "q", 1);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 4 && strcmp(argv[1], "echo") == 0)
        return do_echo(argv[2], argv[3]);
    if ((argc == 5 || argc == 6) && strcmp(argv[1], "ping") == 0) {
        size_t n = strtoul(argv[4], NULL, 10), size = argc == 6 ? strtoul(argv[5], NULL, 10) : 1;
        if (n == 0 || size == 0 || size > 65536)
            return 2;
        return do_ping(argv[2], argv[3], n, size);
    }
    if (argc == 4 && strcmp(argv[1], "qga") == 0) {
        size_t n = strtoul(argv[3], NULL, 10);
        if (n == 0)
            return 2;
        return do_qga(argv[2], n);
    }
    if (argc == 6 && (!strcmp(argv[1], "saveloop") || !strcmp(argv[1], "saves"))) {
        size_t n = strtoul(argv[2], NULL, 10);
        if (n == 0)
            return 2;
        return do_saveloop(n, argv[3], argv[4], argv[5], !strcmp(argv[1], "saveloop"));
    }
    fprintf(stderr, "usage: vsbench-port echo IN OUT | ping OUT IN N [SIZE] | qga SOCK N | "
                    "saveloop N A B MARK | saves N A B MARK\n");
    return 2;
}
