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

int bridge_queue_push(struct bridge_queue *q, const char *id)
{
    struct bridge_queue_item *it;

    if (!vms_valid_request_id(id))
        return -1;
    if (bridge_queue_contains(q, id))
        return 1;
    it = calloc(1, sizeof(*it));
    if (!it)
        return -1;
    memcpy(it->id, id, VMS_REQUEST_ID_LEN + 1);
    if (q->tail)
        q->tail->next = it;
    else
        q->head = it;
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
