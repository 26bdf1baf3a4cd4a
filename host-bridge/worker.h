/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * worker.h — threads that do the bridge's blocking work off the event loop.
 *
 * The loop must never block (every VM of the host waits behind it), yet some work does: a
 * secret's Argon2id verification, a storage probe cut off by a network fault, a WAL
 * checkpoint's fsyncs. A worker is one or a few threads that sleep until woken (or until a
 * period passes) and then call the owner's run function with no lock held. The owner keeps
 * its own data (job queues, results) under its own lock; the worker only decides when a
 * thread runs, and stops and joins the threads. A worker started with BRIDGE_WORKER_NOTIFY
 * also has an eventfd the loop watches, which a run sets to hand results back to the loop.
 *
 * Users: guest/verify.c (secrets), cluster/reach.c (storage probes), journal/db.c (WAL
 * checkpoints).
 */
#ifndef BRIDGE_WORKER_H
#define BRIDGE_WORKER_H

struct bridge_worker;

/*
 * What a thread does when it runs: blocking work, called with no lock held, on thread @index
 * (0 to bridge_worker_threads() - 1) of @w. A run that goes through a list of jobs checks
 * bridge_worker_stopping() between them.
 */
typedef void (*bridge_worker_fn)(struct bridge_worker *w, unsigned index, void *opaque);

/* bridge_worker_start() flag: the worker has an eventfd (bridge_worker_fd, _notify, _clear) */
#define BRIDGE_WORKER_NOTIFY 1u

/*
 * Start up to @threads threads (1 if 0) that each run @run(w, index, @opaque) when woken by
 * bridge_worker_wake() and, if @period > 0, also @period seconds after their last run ended.
 * The threads take no signals (the loop's signalfd gets them all). @flags: 0 or
 * BRIDGE_WORKER_NOTIFY. Returns NULL (errno set, nothing left running) when no thread or the
 * eventfd could be started; fewer threads than asked when only some could
 * (bridge_worker_threads says how many).
 */
struct bridge_worker *bridge_worker_start(unsigned threads, double period, unsigned flags,
                                          bridge_worker_fn run, void *opaque);

/* How many threads @w runs. */
unsigned bridge_worker_threads(const struct bridge_worker *w);

/*
 * Ask for a run, from any thread; never waits for one. Wakes are counted up to the number of
 * threads, so that as many jobs as threads run side by side; wakes beyond that coalesce into
 * the runs already asked for (a run must therefore do all the work it finds, not one piece).
 */
void bridge_worker_wake(struct bridge_worker *w);

/* From a run: 1 once bridge_worker_stop() was called (finish quickly), else 0. */
int bridge_worker_stopping(struct bridge_worker *w);

/* How many runs have finished (a progress count for tests and statistics). */
unsigned long bridge_worker_runs(struct bridge_worker *w);

/*
 * The eventfd the loop watches (EPOLLIN) for a worker started with BRIDGE_WORKER_NOTIFY, -1
 * for one without. bridge_worker_notify() (from a run) makes it readable;
 * bridge_worker_clear() (on the loop, before collecting what the runs left) resets it, so
 * that a notify during the collection is seen at the next turn, not lost.
 */
int bridge_worker_fd(const struct bridge_worker *w);
void bridge_worker_notify(struct bridge_worker *w);
/* Returns 0, or -1 (errno) on a read error other than "nothing to read". */
int bridge_worker_clear(struct bridge_worker *w);

/*
 * Stop and free @w (NULL: nothing): the runs that wakes before this call asked for still
 * happen (bridge_worker_stopping() tells them to be quick), then the threads end and are
 * joined, and the eventfd is closed. Blocks until the runs in flight have returned. The
 * owner's data is the owner's to free afterwards.
 */
void bridge_worker_stop(struct bridge_worker *w);

#endif
