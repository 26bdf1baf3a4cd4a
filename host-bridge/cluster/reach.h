/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * reach.h — this host's view of its HA VMs' storage: a thread probes every HA VM's
 * io_probe targets (ioerror.h's probes: a file beside the disk, an NBD server's greeting)
 * every @interval seconds, so the cluster table knows which hosts reach which storage
 * before a VM pauses on it. The cluster room publishes changes as reach messages.
 */
#ifndef BRIDGE_CLUSTER_REACH_H
#define BRIDGE_CLUSTER_REACH_H

#include <stddef.h>

#include "ioerror.h"

struct cl_reach;

/*
 * Start probing @n storages, @cfgs[i] the io_* configuration of the i-th HA VM (kept by the
 * caller while the prober runs; a VM without io_probe keys is never probed: unknown).
 * NULL when the thread cannot start.
 */
struct cl_reach *cl_reach_start(const struct bridge_ioe_config *const *cfgs, size_t n,
                                double interval);
/* The last answer for storage @i: 1 reached, 0 not, -1 not probed (yet). @detail (may be
 * NULL) gets what the probe saw. Never blocks on a probe. */
int cl_reach_get(struct cl_reach *r, size_t i, char *detail, size_t len);
/* Probe storage @i again as soon as possible (after an I/O-error pause). */
void cl_reach_kick(struct cl_reach *r);
/* Stop the thread (waits for the probe in flight, bounded by the probes' timeouts). */
void cl_reach_stop(struct cl_reach *r);

#endif
