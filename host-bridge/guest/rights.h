/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * rights.h — what an authenticated request may do beyond "the principal has the right for
 * this operation on this VM" (auth.c): rights limited to a guest uid, follow-ups inside a
 * restore, and states that belong to another app, are lost, or were not made by the bridge.
 */
#ifndef BRIDGE_RIGHTS_H
#define BRIDGE_RIGHTS_H

#include <stddef.h>

#include "db.h"
#include "vms-proto.h"

struct bridge_vm;

/* Rights beyond the operations (vmstate-admin grant): restore or delete a state another app
 * created, restore a snapshot the bridge did not make. "all" does not include them. */
#define BRIDGE_RIGHT_RESTORE_ANY     "restore-any"
#define BRIDGE_RIGHT_DELETE_ANY      "delete-any"
#define BRIDGE_RIGHT_RESTORE_FOREIGN "restore-foreign"

/* 1 if @name is one of the rights above. */
int bridge_right_is_extra(const char *name);

/*
 * Judge request @r (already authenticated, with the right for its operation for some guest
 * uid), decoded from @m, for @vm, before anything runs:
 *   - the right must hold for the request's guest uid (r->uid; -1 = not given matches only
 *     rights without a uid): else ERR_DENIED;
 *   - a restore's follow-ups (m->followups): each a known operation allowed inside a restore
 *     (set-memory within mem_min..mem_max, hostinfo) for which the principal has the right
 *     for that uid; serialised into r->followups. Any other operation carrying follow-ups is
 *     ERR_INVALID;
 *   - restore/delete of a state: it exists for this VM (else ERR_NOT_FOUND); a lost state
 *     cannot be restored (ERR_NOT_FOUND, saying it is lost); a foreign one needs
 *     restore-foreign (restore) or delete-any (delete); another app's state needs
 *     restore-any / delete-any.
 * Returns VMS_STATUS_OK, or the refusal's status with @why (a sentence for the Event).
 */
enum vms_status bridge_rights_judge(struct bridge_vm *vm, const struct vms_msg *m,
                                    struct bridge_request *r, char *why, size_t whylen);

/*
 * Parse r->followups ("op=arg op=arg"): fills @ops and @args, at most @max; returns the count.
 */
int bridge_followups_parse(const char *text, char (*ops)[16], uint64_t *args, int max);

#endif
