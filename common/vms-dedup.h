/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vms-dedup.h — recognise events already acted on.
 *
 * An event is identified by (epoch, request id) (design invariant 3). After
 * a snapshot restore QEMU may replay bytes the guest had not read, and after
 * a bridge restart unacked events are resent: both arrive as duplicates.
 * The set remembers the last VMS_DEDUP_CAPACITY keys (oldest forgotten
 * first), so memory is fixed.
 *
 * The helper delivers at most one completion per request id per guest
 * memory (doc/protocol.md, "A request's life" step 6), so it keys by request
 * id alone and passes epoch 0; the bridge-side identity of an event stays
 * (epoch, request id).
 */
#ifndef VMS_DEDUP_H
#define VMS_DEDUP_H

#include <stdint.h>

#include "vms-proto.h"

#define VMS_DEDUP_CAPACITY 1024

struct vms_dedup_key {
    uint64_t epoch;
    uint64_t hash; /* of epoch and request id: compared before the id */
    char request_id[VMS_REQUEST_ID_LEN + 1];
};

struct vms_dedup {
    struct vms_dedup_key keys[VMS_DEDUP_CAPACITY];
    unsigned next;  /* slot the next insert overwrites */
    unsigned count; /* filled slots, <= capacity */
};

void vms_dedup_init(struct vms_dedup *d);

/*
 * Record (@epoch, @request_id). Returns 1 if it was new, 0 if already seen
 * (a duplicate: do not act on it again), -1 if @request_id is not a valid id.
 */
int vms_dedup_check_and_add(struct vms_dedup *d, uint64_t epoch, const char *request_id);

/* Forget (@epoch, @request_id), so that it is new again (an event that was not acted on). */
void vms_dedup_forget(struct vms_dedup *d, uint64_t epoch, const char *request_id);

/* 1 if seen, without recording. */
int vms_dedup_seen(const struct vms_dedup *d, uint64_t epoch, const char *request_id);

#endif
