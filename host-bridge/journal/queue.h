/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * queue.h — a VM's FIFO of accepted request ids waiting to run.
 *
 * The journal is the truth (requests in status "accepted"); this queue is
 * the in-memory order, rebuilt from the journal at start. Requests of one VM
 * run one at a time in arrival order.
 */
#ifndef BRIDGE_QUEUE_H
#define BRIDGE_QUEUE_H

#include <stddef.h>

#include "vms-proto.h"

struct bridge_queue_item {
    char id[VMS_REQUEST_ID_LEN + 1];
    struct bridge_queue_item *next;
};

struct bridge_queue {
    struct bridge_queue_item *head, *tail;
    size_t len;
};

void bridge_queue_init(struct bridge_queue *q);
void bridge_queue_free(struct bridge_queue *q);
/* Append @id (a valid request id). Returns 0, 1 if already queued (not added), -1 on error. */
int bridge_queue_push(struct bridge_queue *q, const char *id);
/* Put @id (a valid request id) first: a request that was running and must run again goes
 * before everything that arrived after it. Returns 0, 1 if already queued, -1 on error. */
int bridge_queue_push_front(struct bridge_queue *q, const char *id);
/* Remove the oldest id into @out. Returns 1, or 0 when empty. */
int bridge_queue_pop(struct bridge_queue *q, char out[VMS_REQUEST_ID_LEN + 1]);
int bridge_queue_contains(const struct bridge_queue *q, const char *id);

#endif
