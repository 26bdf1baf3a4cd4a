/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vms-dedup.c — see vms-dedup.h. A linear scan over 1024 keys costs a few
 * microseconds, far below one port round trip, and keeps the code obvious.
 */
#include "config.h"

#include <string.h>

#include "vms-dedup.h"

void vms_dedup_init(struct vms_dedup *d)
{
    memset(d, 0, sizeof(*d));
}

int vms_dedup_seen(const struct vms_dedup *d, uint64_t epoch, const char *request_id)
{
    for (unsigned i = 0; i < d->count; i++)
        if (d->keys[i].epoch == epoch && strcmp(d->keys[i].request_id, request_id) == 0)
            return 1;
    return 0;
}

void vms_dedup_forget(struct vms_dedup *d, uint64_t epoch, const char *request_id)
{
    for (unsigned i = 0; i < d->count; i++)
        if (d->keys[i].epoch == epoch && strcmp(d->keys[i].request_id, request_id) == 0)
            d->keys[i].request_id[0] = '\0'; /* matches no valid id again */
}

int vms_dedup_check_and_add(struct vms_dedup *d, uint64_t epoch, const char *request_id)
{
    struct vms_dedup_key *k;

    if (!vms_valid_request_id(request_id))
        return -1;
    if (vms_dedup_seen(d, epoch, request_id))
        return 0;
    k = &d->keys[d->next];
    k->epoch = epoch;
    memcpy(k->request_id, request_id, VMS_REQUEST_ID_LEN + 1);
    d->next = (d->next + 1) % VMS_DEDUP_CAPACITY;
    if (d->count < VMS_DEDUP_CAPACITY)
        d->count++;
    return 1;
}
