/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vms-dedup.c — see vms-dedup.h. A linear scan over 1024 keys keeps the code obvious; each
 * key's hash is compared before its id, because ids that share their first characters made
 * the scan's strcmp calls 18 k of the helper's instructions per request (callgrind,
 * bench/RESULTS.md §18).
 */
#include "config.h"

#include <string.h>

#include "vms-dedup.h"

/* FNV-1a of the id, seeded with the epoch */
static uint64_t key_hash(uint64_t epoch, const char *request_id)
{
    uint64_t h = 0xcbf29ce484222325ull ^ epoch;

    for (const char *c = request_id; *c; c++)
        h = (h ^ (uint8_t)*c) * 0x100000001b3ull;
    return h;
}

static int key_is(const struct vms_dedup_key *k, uint64_t hash, uint64_t epoch,
                  const char *request_id)
{
    return k->hash == hash && k->epoch == epoch && strcmp(k->request_id, request_id) == 0;
}

void vms_dedup_init(struct vms_dedup *d)
{
    memset(d, 0, sizeof(*d));
}

int vms_dedup_seen(const struct vms_dedup *d, uint64_t epoch, const char *request_id)
{
    uint64_t hash = key_hash(epoch, request_id);

    for (unsigned i = 0; i < d->count; i++)
        if (key_is(&d->keys[i], hash, epoch, request_id))
            return 1;
    return 0;
}

void vms_dedup_forget(struct vms_dedup *d, uint64_t epoch, const char *request_id)
{
    uint64_t hash = key_hash(epoch, request_id);

    for (unsigned i = 0; i < d->count; i++)
        if (key_is(&d->keys[i], hash, epoch, request_id))
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
    k->hash = key_hash(epoch, request_id);
    memcpy(k->request_id, request_id, VMS_REQUEST_ID_LEN + 1);
    d->next = (d->next + 1) % VMS_DEDUP_CAPACITY;
    if (d->count < VMS_DEDUP_CAPACITY)
        d->count++;
    return 1;
}
