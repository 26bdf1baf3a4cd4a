/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * handle.h — the handles of the two-phase group protocol (groups.c).
 *
 * A bridge that agrees to suspend or resume some of its VMs at a time T answers with a
 * handle: 16 bytes from getrandom (libsodium), sent as 32 lowercase hex digits. The bridge
 * keeps only a keyed hash of the binding (operation, group, T, VMs) under the handle, the
 * expiry and the state, never the handle itself: whoever reads the bridge's memory cannot
 * forge a commit, and a handle presented for another group, time or VM set does not match.
 * Lookups compare every slot in constant time.
 *
 * States: PREPARED (issued) -> ARMED (committed; an abort still disarms it) -> USED (the
 * operation ran; kept a while so a reuse is named as such) -> free. A PREPARED handle past
 * its expiry becomes an EXPIRED tombstone for a while. Tombstones give way to new handles
 * when no slot is free.
 */
#ifndef BRIDGE_GROUP_HANDLE_H
#define BRIDGE_GROUP_HANDLE_H

#include <stddef.h>
#include <stdint.h>

#define GROUP_HANDLE_BYTES 16
#define GROUP_HANDLE_HEX   (2 * GROUP_HANDLE_BYTES + 1)
#define GROUP_HANDLES_MAX  32

enum group_handle_state {
    GH_FREE = 0,
    GH_PREPARED,
    GH_ARMED,
    GH_USED,
    GH_EXPIRED, /* a tombstone, so that a late commit hears "expired" */
};

#define GROUP_HANDLE_TOMBSTONE_NS (60ll * 1000000000ll)

struct group_handle_slot {
    unsigned char digest[32]; /* BLAKE2b keyed by the handle, over the binding */
    int64_t expires_ns;       /* CLOCK_REALTIME */
    enum group_handle_state state;
};

struct group_handles {
    struct group_handle_slot s[GROUP_HANDLES_MAX];
};

/*
 * Issue a handle for @binding (any text naming op, group, T and VMs), valid until
 * @expires_ns. Writes the hex handle to @out. Returns the slot, or -1 when every slot is
 * taken by a handle that has not expired at @now_ns (expired ones are reclaimed).
 */
int group_handle_issue(struct group_handles *h, const char *binding, int64_t now_ns,
                       int64_t expires_ns, char out[GROUP_HANDLE_HEX]);

/*
 * Find the slot of handle @hex bound to @binding, expecting state @want. Returns the slot,
 * or -1 with @why set: malformed, unknown (wrong handle, wrong binding, or issued by a
 * bridge that has restarted since), expired (the slot is freed), or already used / not
 * in the state @want.
 */
int group_handle_find(struct group_handles *h, const char *hex, const char *binding, int64_t now_ns,
                      enum group_handle_state want, const char **why);

/* Expire PREPARED handles past their time (tombstones) and free old tombstones (@now_ns).
 * Returns how many slots changed. */
int group_handle_expire(struct group_handles *h, int64_t now_ns);

#endif
