/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * groups.h — VM groups suspended and resumed together at a chosen time (issue 16).
 *
 * The bridge that receives a group command from an admin is the group's control instance:
 * the group (its members: a VM on this bridge, "self", or on a [peer NAME]) and its history
 * live in its journal. An operation runs in two phases over group_peer_send() (peer.h),
 * itself included:
 *   prepare  {"cmd":"group-prepare","group","op":"suspend"|"resume","at_ns","policy","vms"}
 *            each bridge checks its VMs (not busy, in the right state, room in the tier),
 *            the time (in the future by at least group_min_lead_ms) and its clock (the
 *            kernel's STA_UNSYNC and maximum error, unless group_require_clock_sync = no),
 *            and answers a handle (handle.h), or refuses with the reason.
 *   commit   {"cmd":"group-commit", the same binding, "handle"} when every bridge agreed:
 *            the bridge arms a timerfd on CLOCK_REALTIME at T (TFD_TIMER_ABSTIME) and
 *            answers when its VMs are done: at T it sends QMP stop to all of them back to
 *            back, records QEMU's STOP timestamp, then suspends each (checkpoint + quit).
 *            A resume loads each checkpoint at commit time, holds the VMs paused, and
 *            sends cont at T; clock policy "preserve" keeps each guest's own clock (no
 *            time is sent, the helper says ClockCorrected(0, "preserve")), "host" steps
 *            it to the host's time as a single VM's resume does.
 *   abort    {"cmd":"group-abort", binding, "handle"}: any refusal, unreachable peer or
 *            failed commit makes the control abort the others (an armed suspend is
 *            disarmed; a committed resume cannot be taken back and goes on).
 * Across hosts the same messages travel over the cluster's CPG group (peer.h); a bridge that
 * leaves the group (or a host that loses quorum) before T fails its call, and the control
 * aborts the others; a participant whose control instance left aborts its part itself.
 * Every outcome, a half-done one included, is in the group's history (group show).
 */
#ifndef BRIDGE_GROUPS_H
#define BRIDGE_GROUPS_H

#include <json-c/json.h>

#include "managed.h"

struct bridge;

/* Set up @br's groups (no I/O). 0, or -1. */
int bridge_groups_init(struct bridge *br);
void bridge_groups_free(struct bridge *br);

/* Calls in flight to peers: timeouts. @now monotonic seconds. */
void bridge_groups_tick(struct bridge *br, double now);

/*
 * An admin-socket command: group-create, group-add, group-show, group-suspend, group-resume
 * (control) and group-prepare, group-commit, group-abort (between bridges). Returns 1 when
 * @cmd is one of them (@done is then called exactly once, maybe later), 0 when not.
 */
int bridge_groups_command(struct bridge *br, const char *cmd, json_object *req,
                          bridge_lc_done_fn done, void *opaque);

/*
 * The same for a request that came from another host's bridge, cluster node @origin (over
 * CPG, peer.h): only group-prepare, group-commit and group-abort. An operation prepared for
 * @origin is aborted here when @origin's bridge leaves the CPG group or this host loses
 * quorum before T (bridge_groups_origins_check).
 */
int bridge_groups_command_from(struct bridge *br, const char *origin, const char *cmd,
                               json_object *req, bridge_lc_done_fn done, void *opaque);

/* The cluster's membership or quorum changed: abort the operations prepared or armed (a
 * suspend before T) for a control instance whose bridge left, or all of them when this host
 * is not quorate. */
void bridge_groups_origins_check(struct bridge *br);

/* Forget every pending @done for @opaque (its admin connection went away). */
void bridge_groups_forget(struct bridge *br, void *opaque);

/*
 * The host clock as the kernel sees it (adjtimex): 0 synchronised within @max_error_ms, or
 * -1 with @why ("unsynchronised": STA_UNSYNC, or the maximum error above the bound).
 */
int bridge_groups_clock_check(unsigned max_error_ms, char *why, size_t whylen);

#endif
