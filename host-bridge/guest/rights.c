/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * rights.c — see rights.h.
 */
#include "config.h"
#include "rights.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge.h"

int bridge_right_is_extra(const char *name)
{
    return !strcmp(name, BRIDGE_RIGHT_RESTORE_ANY) || !strcmp(name, BRIDGE_RIGHT_DELETE_ANY) ||
           !strcmp(name, BRIDGE_RIGHT_RESTORE_FOREIGN);
}

/* 1 if the request's principal has @right on the VM for the request's uid, 0 if not, -1. */
static int has_right(struct bridge_vm *vm, const struct bridge_request *r, const char *right)
{
    return bridge_db_right_check_uid(&vm->br->db, r->principal, vm->cfg->name, right, r->uid);
}

/*
 * has_right() for an operation: one query reads every operation the principal may ask for
 * this uid (r->ops_allowed, unless authentication read it), which the request's follow-ups
 * and a hostinfo's answer reuse.
 */
static int has_op_right(struct bridge_vm *vm, struct bridge_request *r, enum vms_op op)
{
    if (!r->ops_allowed && bridge_db_rights(&vm->br->db, r->principal, vm->cfg->name, r->uid,
                                            &r->ops_allowed, NULL) < 0)
        return -1;
    return bridge_ops_allow(r->ops_allowed, op);
}

static enum vms_status judge_followups(struct bridge_vm *vm, const struct vms_msg *m,
                                       struct bridge_request *r, char *why, size_t whylen)
{
    size_t used = 0;

    if (m->n_followups && r->op != VMS_OP_RESTORE) {
        snprintf(why, whylen, "follow-ups are only allowed inside a restore");
        return VMS_STATUS_ERR_INVALID;
    }
    for (size_t i = 0; i < m->n_followups; i++) {
        const struct vms_followup *f = &m->followups[i];
        enum vms_op op = vms_op_from_name(f->op);
        int right;

        if (op != VMS_OP_SET_MEMORY && op != VMS_OP_HOSTINFO) {
            snprintf(why, whylen, "follow-up %zu: '%.32s' cannot run inside a restore", i + 1,
                     f->op);
            return VMS_STATUS_ERR_INVALID;
        }
        if (op == VMS_OP_SET_MEMORY &&
            (!vm->cfg->mem_max_bytes || f->arg < vm->cfg->mem_min_bytes ||
             f->arg > vm->cfg->mem_max_bytes)) {
            snprintf(why, whylen,
                     "follow-up %zu: set-memory bytes must be within %" PRIu64 "..%" PRIu64
                     " (mem_min..mem_max; 0 = set-memory disabled)",
                     i + 1, vm->cfg->mem_min_bytes, vm->cfg->mem_max_bytes);
            return VMS_STATUS_ERR_INVALID;
        }
        right = has_op_right(vm, r, op);
        if (right < 0)
            goto internal;
        if (!right) {
            snprintf(why, whylen, "follow-up %zu: principal %.64s has no right '%s' on VM %.64s",
                     i + 1, r->principal, f->op, vm->cfg->name);
            return VMS_STATUS_ERR_DENIED;
        }
        used += (size_t)snprintf(r->followups + used, sizeof(r->followups) - used, "%s%s=%" PRIu64,
                                 used ? " " : "", f->op, f->arg);
        if (used >= sizeof(r->followups)) {
            snprintf(why, whylen, "too many follow-ups");
            return VMS_STATUS_ERR_INVALID;
        }
    }
    return VMS_STATUS_OK;
internal:
    snprintf(why, whylen, "database error");
    return VMS_STATUS_ERR_INTERNAL;
}

static enum vms_status judge_state(struct bridge_vm *vm, struct bridge_request *r, char *why,
                                   size_t whylen)
{
    struct bridge_state_owner owner;
    const char *need = NULL;
    int found = bridge_db_state_owner(&vm->br->db, vm->cfg->name, r->state_id, &owner), right;

    if (found < 0)
        goto internal;
    if (!found) {
        /* filtered by VM: another VM's state is "not found" here, like a made-up one */
        snprintf(why, whylen, "no such state for this VM");
        return VMS_STATUS_ERR_NOT_FOUND;
    }
    if (r->op == VMS_OP_RESTORE && !strcmp(owner.status, "lost")) {
        snprintf(why, whylen,
                 "state %.64s is lost: the hypervisor no longer holds it (deleted outside "
                 "vmstate, or its disk was replaced); delete it to drop it from the list",
                 r->state_id);
        return VMS_STATUS_ERR_NOT_FOUND;
    }
    if (!strcmp(owner.status, "foreign"))
        need = r->op == VMS_OP_RESTORE ? BRIDGE_RIGHT_RESTORE_FOREIGN : BRIDGE_RIGHT_DELETE_ANY;
    else if (strcmp(owner.app_id, r->app_id) != 0)
        need = r->op == VMS_OP_RESTORE ? BRIDGE_RIGHT_RESTORE_ANY : BRIDGE_RIGHT_DELETE_ANY;
    if (!need)
        return VMS_STATUS_OK;
    right = has_right(vm, r, need);
    if (right < 0)
        goto internal;
    if (right)
        return VMS_STATUS_OK;
    if (!strcmp(owner.status, "foreign"))
        snprintf(why, whylen,
                 "state %.64s was not made by vmstate (a foreign snapshot): %s needs the right "
                 "'%s'",
                 r->state_id, vms_op_name(r->op), need);
    else
        snprintf(why, whylen,
                 "state %.64s belongs to app %.64s: %s of another app's state needs the right "
                 "'%s'",
                 r->state_id, owner.app_id, vms_op_name(r->op), need);
    return VMS_STATUS_ERR_DENIED;
internal:
    snprintf(why, whylen, "database error");
    return VMS_STATUS_ERR_INTERNAL;
}

enum vms_status bridge_rights_judge(struct bridge_vm *vm, const struct vms_msg *m,
                                    struct bridge_request *r, char *why, size_t whylen)
{
    enum vms_status st;
    int right = has_op_right(vm, r, r->op);

    if (right < 0) {
        snprintf(why, whylen, "database error");
        return VMS_STATUS_ERR_INTERNAL;
    }
    if (!right) {
        if (r->uid >= 0)
            snprintf(why, whylen,
                     "principal %.64s's right '%s' on VM %.64s is limited to other guest uids "
                     "(this request came from uid %lld)",
                     r->principal, vms_op_name(r->op), vm->cfg->name, (long long)r->uid);
        else
            snprintf(why, whylen,
                     "principal %.64s's right '%s' on VM %.64s is limited to guest uids, and "
                     "the request names none",
                     r->principal, vms_op_name(r->op), vm->cfg->name);
        return VMS_STATUS_ERR_DENIED;
    }
    st = judge_followups(vm, m, r, why, whylen);
    if (st != VMS_STATUS_OK)
        return st;
    if (r->op == VMS_OP_RESTORE || r->op == VMS_OP_DELETE)
        return judge_state(vm, r, why, whylen);
    return VMS_STATUS_OK;
}

int bridge_followups_parse(const char *text, char (*ops)[16], uint64_t *args, int max)
{
    int n = 0;
    const char *p = text;

    while (*p && n < max) {
        const char *eq = strchr(p, '='), *end;
        size_t len;

        if (!eq)
            break;
        len = (size_t)(eq - p);
        if (len >= sizeof(ops[0]))
            break;
        memcpy(ops[n], p, len);
        ops[n][len] = '\0';
        args[n] = strtoull(eq + 1, NULL, 10);
        n++;
        end = strchr(eq, ' ');
        if (!end)
            break;
        p = end + 1;
    }
    return n;
}
