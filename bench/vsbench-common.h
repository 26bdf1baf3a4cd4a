/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vsbench-common.h — what the vsbench programs share: the clock they time with, the
 * statistics line they print, and the CPU accounting of other processes around the fan-out
 * rounds. Statistics line: "n=N median_us=M p99_us=P min_us=A max_us=B mean_us=C p90_us=D"
 * (percentiles by nearest rank).
 */
#ifndef VSBENCH_COMMON_H
#define VSBENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* CLOCK_MONOTONIC now, in nanoseconds. */
uint64_t vsbench_now_ns(void);

/*
 * Print one statistics line of @n samples (nanoseconds, shown in µs) on stdout, after
 * @prefix ("" for none). Sorts @samples in place. @n must be at least 1.
 */
void vsbench_report(const char *prefix, uint64_t *samples, size_t n);

/*
 * VSBENCH_CPU_PIDS=PID,PID.. (up to 8): the CPU those processes (the bus daemon, the
 * service) spend between two marks, printed as "LABEL: PID=MS .." per round: less noisy than
 * wall time on a shared host. vsbench_cpu_mark(NULL, 0) starts (reads the counters);
 * vsbench_cpu_mark(LABEL, rounds) prints the milliseconds since divided by @rounds. Does
 * nothing without the variable. Not thread-safe (one set of counters per process).
 */
void vsbench_cpu_mark(const char *label, size_t rounds);

/*
 * One fan-out round: @got[0..n-1] the times (vsbench_now_ns) each of @n receivers got the
 * message sent at @start. Sets @first and @last (from @start to the first and to the last
 * receiver) and @spread (last - first). @n must be at least 1.
 */
void vsbench_fanout_round(const uint64_t *got, size_t n, uint64_t start, uint64_t *first,
                          uint64_t *last, uint64_t *spread);

/*
 * Start @k child processes at once and wait for them all: each blocks reading the pipe whose
 * write end is @go until it reads end of file; this closes @go. Sets @ns to the time from
 * the release until the last child exited. Returns how many failed (killed, or an exit
 * status other than 0).
 */
int vsbench_release_and_reap(int go, const pid_t *pids, int k, uint64_t *ns);

#endif
