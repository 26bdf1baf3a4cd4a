/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * prepare.c — Prepare/Ready before a save and the guest clock (prepare.h).
 */
#include "config.h"
#include "bridge.h"
#include "managed.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "vms-log.h"

static const char *vmname(const struct bridge_vm *vm)
{
    return vm->cfg->name;
}

uint64_t bridge_clock_realtime_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int clock_applies(const struct bridge_vm *vm)
{
    return vm->cfg->clock_sync && !vm->clock_preserve && (vm->caps & VMS_CAP_CLOCK);
}

void bridge_clock_stamp(struct bridge_vm *vm, struct vms_msg *m)
{
    if (clock_applies(vm))
        vms_msg_set_u64(m, VMS_F_TIME_NS, bridge_clock_realtime_ns());
}

int bridge_clock_send(struct bridge_vm *vm, const char *reason)
{
    struct vms_msg m;

    if (!clock_applies(vm) || vm->b.ch.fd < 0) {
        vms_debug(vmname(vm), NULL, "clock (%s) not sent: %s", reason,
                  !vm->cfg->clock_sync          ? "clock_sync = no"
                  : !(vm->caps & VMS_CAP_CLOCK) ? "the helper did not announce 'clock'"
                                                : "port B not connected");
        return 0;
    }
    vms_msg_init(&m, VMS_MSG_CLOCK);
    vms_msg_set_str(&m, VMS_F_REASON, reason);
    /* read as late as possible: the guest adds its estimate of the one-way delay */
    vms_msg_set_u64(&m, VMS_F_TIME_NS, bridge_clock_realtime_ns());
    bridge_vm_send(vm, &m);
    vms_msg_clear(&m);
    vm->hx.clocks_sent++;
    vms_info(vmname(vm), NULL, "clock sent to the guest (%s)", reason);
    return 1;
}

void bridge_clock_port_connected(struct bridge_vm *vm)
{
    struct vms_msg m;

    if (vm->caps && !(vm->caps & VMS_CAP_CLOCK))
        return; /* this session's helper does not take Clock */
    vms_msg_init(&m, VMS_MSG_CLOCK);
    vms_msg_set_str(&m, VMS_F_REASON, "connect");
    if (vm->cfg->clock_sync && !vm->clock_preserve)
        vms_msg_set_u64(&m, VMS_F_TIME_NS, bridge_clock_realtime_ns());
    bridge_vm_send(vm, &m);
    vms_msg_clear(&m);
    vm->hx.clocks_sent++;
    vms_debug(vmname(vm), NULL, "port B connected: Clock (connect%s) sent",
              vm->cfg->clock_sync ? "" : ", no time: clock_sync = no");
}

/* The op of the request running now, VMS_OP_UNKNOWN if none. */
static enum vms_op running_op(struct bridge_vm *vm)
{
    struct bridge_request r;
    enum vms_op op = VMS_OP_UNKNOWN;

    if (!vm->busy || !vm->running[0])
        return op;
    if (bridge_db_request_find(&vm->br->db, vmname(vm), vm->running, &r) == 1)
        op = r.op;
    bridge_request_clear(&r);
    return op;
}

void bridge_clock_on_event(void *opaque, const char *name)
{
    struct bridge_vm *vm = opaque;
    enum vms_op op;

    if (!strcmp(name, "BLOCK_IO_ERROR")) {
        vm->hx.io_error = 1;
        return;
    }
    if (strcmp(name, "RESUME") != 0)
        return;
    op = running_op(vm);
    if (vm->clock_preserve && (vm->caps & VMS_CAP_CLOCK) && vm->b.ch.fd >= 0) {
        /* a group's "preserve" resume: no time, the helper says the clock was kept */
        struct vms_msg m;
        vms_msg_init(&m, VMS_MSG_CLOCK);
        vms_msg_set_str(&m, VMS_F_REASON, "preserve");
        bridge_vm_send(vm, &m);
        vms_msg_clear(&m);
        vm->hx.clocks_sent++;
        return;
    }
    if (op == VMS_OP_RESTORE) {
        /* snapshot-load resumes the VM before its job concludes: the Timeline that
         * follows carries the time (the only message allowed to move it back) */
        vms_debug(vmname(vm), vm->running, "RESUME during a restore: time goes with the Timeline");
        vm->hx.io_error = 0;
        return;
    }
    bridge_clock_send(vm, vm->hx.io_error ? "io-error" : op == VMS_OP_SAVE ? "save" : "resume");
    vm->hx.io_error = 0;
}

/* ---- Prepare / Ready ---- */

int bridge_prepare_wanted(const struct bridge_vm *vm)
{
    return vm->cfg->prepare_timeout_ms && (vm->caps & VMS_CAP_PREPARE) && vm->b.ch.fd >= 0;
}

/* Send Prepare for @id and wait for Ready: 1, or 0 when the guest takes no Prepare. */
static int prepare_send(struct bridge_vm *vm, const char *id, const char *label, int for_suspend)
{
    struct vms_msg m;

    if (!bridge_prepare_wanted(vm))
        return 0;
    vms_msg_init(&m, VMS_MSG_PREPARE);
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, id);
    if (label && label[0])
        vms_msg_set_str(&m, VMS_F_LABEL, label);
    vms_msg_set_u64(&m, VMS_F_TIMEOUT_MS, vm->cfg->prepare_timeout_ms);
    bridge_vm_send(vm, &m);
    vms_msg_clear(&m);
    vm->hx.active = 1;
    vm->hx.for_suspend = for_suspend;
    snprintf(vm->hx.request_id, sizeof(vm->hx.request_id), "%s", id);
    vm->hx.started = vm->now;
    vm->hx.deadline = vm->now + vm->cfg->prepare_timeout_ms / 1000.0;
    vms_info(vmname(vm), id, "%s: Prepare sent; waiting up to %u ms for the guest's Ready",
             for_suspend ? "suspend" : "save", vm->cfg->prepare_timeout_ms);
    return 1;
}

int bridge_prepare_start(struct bridge_vm *vm, const struct bridge_request *r)
{
    return prepare_send(vm, r->id, r->label, 0);
}

int bridge_prepare_start_suspend(struct bridge_vm *vm, const char *prepare_id)
{
    return prepare_send(vm, prepare_id, "suspend", 1);
}

static void prepare_end(struct bridge_vm *vm, enum vms_status status, const char *message)
{
    int for_suspend = vm->hx.for_suspend;

    vm->hx.active = 0;
    vm->hx.for_suspend = 0;
    vm->hx.request_id[0] = '\0';
    if (for_suspend)
        bridge_managed_prepared(vm, status, message);
    else
        bridge_vm_save_go(vm, status, message);
}

void bridge_prepare_ready(struct bridge_vm *vm, const struct vms_msg *m)
{
    char why[VMS_STR_MAX + 1];

    if (!vm->hx.active || strcmp(m->request_id, vm->hx.request_id) != 0) {
        bridge_vm_log(vm, BRIDGE_LOG_IGNORED, LOG_DEBUG, m->request_id,
                      "Ready for no save being prepared: ignored");
        return;
    }
    /* guest-controlled: only recorded (a group's clock state), bounded like the host's */
    if (vms_msg_has(m, VMS_F_TIME_NS) && m->time_ns && m->time_ns < (uint64_t)INT64_MAX / 2) {
        vm->hx.ready_guest_ns = m->time_ns;
        vm->hx.ready_host_ns = bridge_clock_realtime_ns();
    }
    if (m->status == VMS_STATUS_ERR_INHIBITED) {
        snprintf(why, sizeof(why), "inhibited by the guest: %.200s",
                 m->message[0] ? m->message : "no reason given");
        vms_info(vmname(vm), m->request_id, "save %s after %.0f ms", vms_esc(why),
                 (vm->now - vm->hx.started) * 1000);
        prepare_end(vm, VMS_STATUS_ERR_INHIBITED, why);
        return;
    }
    /* any other status (hooks failed, ...) is the guest's business: the save goes on */
    vms_info(vmname(vm), m->request_id, "guest ready for the save after %.0f ms (status %s%s%s)",
             (bridge_now() - vm->hx.started) * 1000, vms_status_name(m->status),
             m->message[0] ? ": " : "", vms_esc(m->message));
    prepare_end(vm, VMS_STATUS_OK, NULL);
}

void bridge_prepare_tick(struct bridge_vm *vm, double now)
{
    if (!vm->hx.active || now < vm->hx.deadline)
        return;
    vms_warn(vmname(vm), vm->hx.request_id,
             "no Ready from the guest within %u ms (prepare_timeout_ms): saving anyway",
             vm->cfg->prepare_timeout_ms);
    prepare_end(vm, VMS_STATUS_OK, NULL);
}
