/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * verify.h — secrets verified off the event loop (issue 18).
 *
 * An Argon2id verification costs ~20 ms at the default cost (more for a
 * principal hashed at a higher one): on the loop it would stall every VM of
 * the host. The verifier runs them on a few worker threads: the loop submits
 * a job (a struct bridge_auth_verify: hash and a copy of the secret) for an
 * owner (a VM), a worker verifies it, and an eventfd tells the loop, which
 * collects the answers in the order they finished and hands each to the
 * owner. Nothing else crosses threads: the workers touch only their job.
 *
 * Each owner has at most one job at a time (guest.c holds that VM's later
 * messages meanwhile), so the jobs waiting never outnumber the VMs.
 */
#ifndef BRIDGE_VERIFY_H
#define BRIDGE_VERIFY_H

#include "auth.h"

/* Worker threads: a slow verification of one VM does not hold up another VM's. */
#define BRIDGE_VERIFY_THREADS 2

struct bridge_verifier;

/* Called on the loop with a finished job of @owner (@v is wiped after it returns). */
typedef void (*bridge_verify_done_fn)(void *owner, struct bridge_auth_verify *v);

/*
 * Start @threads workers (BRIDGE_VERIFY_THREADS if 0); @done gets each finished job. Returns
 * NULL on failure (no threads, no eventfd).
 */
struct bridge_verifier *bridge_verifier_new(unsigned threads, bridge_verify_done_fn done);

/* Stop the workers (waiting for the running verifications to end) and free everything. */
void bridge_verifier_free(struct bridge_verifier *vf);

/* The eventfd the loop watches (EPOLLIN): readable when answers wait for bridge_verifier_collect.
 */
int bridge_verifier_fd(const struct bridge_verifier *vf);

/*
 * Queue @v for @owner (copied; the caller wipes its own copy). Returns 0, or -1 (out of
 * memory: nothing queued).
 */
int bridge_verifier_submit(struct bridge_verifier *vf, void *owner,
                           const struct bridge_auth_verify *v);

/* On the loop: hand every finished job to the done function. Returns how many. */
int bridge_verifier_collect(struct bridge_verifier *vf);

/* Forget @owner's jobs (it goes away): queued ones are dropped, running ones not handed back. */
void bridge_verifier_cancel(struct bridge_verifier *vf, void *owner);

#endif
