/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * queue.c — see queue.h.
 */
#include "config.h"
#include "queue.h"

#include <stdlib.h>
#include <string.h>

void bridge_queue_init(struct bridge_queue *q)
{
    memset(q, 0, sizeof(*q));
}

void bridge_queue_free(struct bridge_queue *q)
{
    char id[VMS_REQUEST_ID_LEN + 1];
    while (bridge_queue_pop(q, id))
        ;
}

int bridge_queue_contains(const struct bridge_queue *q, const char *id)
{
    for (const struct bridge_queue_item *it = q->head; it; it = it->next)
        if (!strcmp(it->id, id))
            return 1;
    return 0;
}

static struct bridge_queue_item *item_new(const struct bridge_queue *q, const char *id, int *rc)
{
    struct bridge_queue_item *it;

    *rc = -1;
    if (!vms_valid_request_id(id))
        return NULL;
    if (bridge_queue_contains(q, id)) {
        *rc = 1;
        return NULL;
    }
    it = calloc(1, sizeof(*it));
    if (!it)
        return NULL;
    memcpy(it->id, id, VMS_REQUEST_ID_LEN + 1);
    *rc = 0;
    return it;
}

int bridge_queue_push(struct bridge_queue *q, const char *id)
{
    int rc;
    struct bridge_queue_item *it = item_new(q, id, &rc);

    if (!it)
        return rc;
    if (q->tail)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    q->len++;
    return 0;
}

int bridge_queue_push_front(struct bridge_queue *q, const char *id)
{
    int rc;
    struct bridge_queue_item *it = item_new(q, id, &rc);

    if (!it)
        return rc;
    it->next = q->head;
    q->head = it;
    if (!q->tail)
        q->tail = it;
    q->len++;
    return 0;
}

int bridge_queue_pop(struct bridge_queue *q, char out[VMS_REQUEST_ID_LEN + 1])
{
    struct bridge_queue_item *it = q->head;

    if (!it)
        return 0;
    q->head = it->next;
    if (!q->head)
        q->tail = NULL;
    q->len--;
    memcpy(out, it->id, VMS_REQUEST_ID_LEN + 1);
    free(it);
    return 1;
}
