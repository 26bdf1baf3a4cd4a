/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vsbench-common.c — see vsbench-common.h.
 */
#define _GNU_SOURCE
#include "vsbench-common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

uint64_t vsbench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void vsbench_report(const char *prefix, uint64_t *s, size_t n)
{
    qsort(s, n, sizeof(*s), cmp_u64);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)s[i];
    size_t p99 = (n * 99 + 99) / 100; /* nearest rank: ceil(0.99 n) */
    size_t p90 = (n * 90 + 99) / 100, med = (n + 1) / 2;
    printf("%sn=%zu median_us=%.1f p99_us=%.1f min_us=%.1f max_us=%.1f mean_us=%.1f p90_us=%.1f\n",
           prefix, n, s[med - 1] / 1e3, s[p99 - 1] / 1e3, s[0] / 1e3, s[n - 1] / 1e3, sum / n / 1e3,
           s[p90 - 1] / 1e3);
}

/* CPU time (user + system, clock ticks) of process @pid from /proc/PID/stat; 0 if unknown */
static unsigned long long proc_ticks(long pid)
{
    char path[64], buf[1024];
    unsigned long long ut = 0, st = 0;
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* comm may hold spaces */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return ut + st;
}

void vsbench_cpu_mark(const char *label, size_t rounds)
{
    static long pids[8];
    static unsigned long long t0[8];
    static size_t n;
    const char *env = getenv("VSBENCH_CPU_PIDS");
    if (!env)
        return;
    if (rounds == 0) {
        char *end;
        for (n = 0; n < 8 && *env; env = *end ? end + 1 : end) {
            pids[n] = strtol(env, &end, 10);
            t0[n] = proc_ticks(pids[n]);
            n++;
        }
        return;
    }
    printf("%s:", label);
    for (size_t i = 0; i < n; i++)
        printf(" %ld=%.1f", pids[i],
               (proc_ticks(pids[i]) - t0[i]) * 1e3 / sysconf(_SC_CLK_TCK) / (double)rounds);
    printf("\n");
}

void vsbench_fanout_round(const uint64_t *got, size_t n, uint64_t start, uint64_t *first,
                          uint64_t *last, uint64_t *spread)
{
    uint64_t lo = UINT64_MAX, hi = 0;
    for (size_t i = 0; i < n; i++) {
        lo = got[i] < lo ? got[i] : lo;
        hi = got[i] > hi ? got[i] : hi;
    }
    *first = lo - start;
    *last = hi - start;
    *spread = hi - lo;
}

int vsbench_release_and_reap(int go, const pid_t *pids, int k, uint64_t *ns)
{
    uint64_t t0 = vsbench_now_ns();
    int bad = 0;
    close(go);
    for (int i = 0; i < k; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        bad += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    }
    *ns = vsbench_now_ns() - t0;
    return bad;
}
