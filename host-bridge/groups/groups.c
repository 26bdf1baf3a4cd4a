/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * groups.c — see groups.h. The participant's side (prepare, commit, the timer at T, abort)
 * comes first, then the control instance's (running the two phases over the peers).
 */
#include "config.h"
#include "groups.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <sys/timex.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "bridge.h"
#include "cluster.h"
#include "group-db.h"
#include "handle.h"
#include "peer.h"
#include "vms-log.h"

#define GROUP_VMS_MAX     16
#define GROUP_RUNS_MAX    8
#define PREPARE_TIMEOUT_S 15.0
#define COMMIT_SLACK_S    600.0 /* after T: the suspends or resumes themselves */
#define GROUP_NAME_MAX    64
/* how long before T each VM's stop/cont is primed (all but its last byte written): QEMU's
 * monitor reads a byte per main-loop turn, ~30 bytes in a few ms on a busy host */
#define GROUP_PRIME_LEAD_NS 50000000ll
/* the timer wakes the loop this much before T, and the loop waits out the rest on the clock:
 * a sleeping process woken at T on a busy host runs a scheduler slice late, unevenly across
 * the group's bridges (bench/RESULTS.md §10) */
#define GROUP_SPIN_NS 1500000ll
/* a suspend's checkpoints start when every VM of this bridge has stopped and no sooner than
 * this after T: a checkpoint's migration thread would take the CPU that another VM's stop,
 * here or at another bridge of the group, needs then */
#define GROUP_SETTLE_NS 10000000ll
#define BINDING_MAX     (GROUP_VMS_MAX * BRIDGE_VM_NAME_MAX + 256)

/* ---- the participant: one operation per handle slot ---- */

struct local_vm {
    struct local_op *op;
    struct bridge_vm *vm;
    int done, ok, held, cont_sent;
    int primed;       /* its stop/cont is primed: T sends the last byte */
    int stopped;      /* a suspend: stopped at T, its checkpoint not started (stops_settled) */
    int prepare_sent; /* its guest apps were told before T (PrepareSave) */
    int64_t rtc_s;    /* a suspend: the guest's RTC read while stopped at T (0: none) */
    char rtc_why[128];
    /* a suspend: the guest's clock at the stop from its helper's Ready to this commit's
     * Prepare, carried forward to the stop at the host's rate (0: no such Ready) */
    int64_t helper_guest_ns, helper_span_ns;
    int64_t stop_us; /* QEMU's STOP (suspend) or RESUME (resume) timestamp */
    int64_t sent_ns; /* when the bridge sent stop/cont */
    json_object *result;
};

struct local_op {
    struct bridge_groups *g;
    int in_use, armed, fired;
    int priming;  /* the timer is set to T - GROUP_PRIME_LEAD_NS, not to T yet */
    int spinning; /* the timer is set to T - GROUP_SPIN_NS: wait the rest on the clock */
    int settling; /* a suspend after T: the timer is set to T + GROUP_SETTLE_NS */
    enum bridge_lc_op op;
    char group[GROUP_NAME_MAX];
    char origin[BRIDGE_NODE_NAME_MAX]; /* the control's cluster node ("": the admin socket) */
    int64_t at_ns, fired_ns;
    int64_t committed_ns; /* CLOCK_REALTIME of the commit (a Ready older is not this one's) */
    int preserve;
    size_t n, pending;
    struct local_vm v[GROUP_VMS_MAX];
    int tfd;
    struct bridge_watch tw;
    bridge_lc_done_fn done; /* the commit's answer */
    void *opaque;
};

/* ---- the control instance: one run per group operation ---- */

enum run_phase { R_PREPARE, R_COMMIT, R_DONE };

struct run_bridge {
    struct control_run *run;
    char name[BRIDGE_VM_NAME_MAX];
    json_object *vms; /* array of names */
    struct group_peer_call *call;
    int replied, ok;
    char handle[GROUP_HANDLE_HEX];
    char why[320];
    json_object *reply;
};

struct control_run {
    struct bridge_groups *g;
    int in_use;
    enum run_phase phase;
    enum bridge_lc_op op;
    char group[GROUP_NAME_MAX];
    char policy[16];
    int64_t at_ns;
    size_t n, pending;
    int aborted;
    struct run_bridge b[BRIDGE_PEERS_MAX + 1];
    bridge_lc_done_fn done;
    void *opaque;
};

struct bridge_groups {
    struct bridge *br;
    struct group_handles handles;
    struct local_op ops[GROUP_HANDLES_MAX]; /* by handle slot */
    struct control_run runs[GROUP_RUNS_MAX];
};

static int64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static void answer_error(bridge_lc_done_fn done, void *opaque, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void answer_error(bridge_lc_done_fn done, void *opaque, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    json_object *o = json_object_new_object();

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_object_object_add(o, "error", json_object_new_string(msg));
    if (done)
        done(opaque, 0, o);
    else
        json_object_put(o);
}

int bridge_groups_clock_check(unsigned max_error_ms, char *why, size_t whylen)
{
    struct timex tx;
    int st;

    memset(&tx, 0, sizeof(tx));
    st = adjtimex(&tx);
    if (st < 0) {
        snprintf(why, whylen, "cannot read the host clock's state: %s", strerror(errno));
        return -1;
    }
    if (st == TIME_ERROR || (tx.status & STA_UNSYNC)) {
        snprintf(why, whylen,
                 "host clock not synchronised (the kernel says STA_UNSYNC: no NTP or PTP "
                 "daemon disciplines it; maximum error %ld us)",
                 tx.maxerror);
        return -1;
    }
    if (tx.maxerror > (long)max_error_ms * 1000) {
        snprintf(why, whylen,
                 "host clock's maximum error is %ld us, above group_max_clock_error_ms = %u",
                 tx.maxerror, max_error_ms);
        return -1;
    }
    return 0;
}

static const char *op_word(enum bridge_lc_op op)
{
    return op == BRIDGE_LC_SUSPEND ? "suspend" : "resume";
}

/*
 * Parse the binding of a prepare, commit or abort: group, op, T, policy, VMs (this bridge's
 * own). Fills @lo's group, op, at_ns, preserve, n and vms, and @binding. 0, or -1 with @why.
 */
static int parse_binding(struct bridge *br, json_object *req, struct local_op *lo, char *binding,
                         size_t blen, char *why, size_t whylen)
{
    json_object *v, *vms;
    const char *s, *policy = "preserve";
    size_t off;

    if (!json_object_object_get_ex(req, "group", &v) || !json_object_is_type(v, json_type_string) ||
        strlen(s = json_object_get_string(v)) >= GROUP_NAME_MAX || !vms_valid_id(s)) {
        snprintf(why, whylen, "\"group\" must be a name of 1..63 of [A-Za-z0-9._:@-]");
        return -1;
    }
    snprintf(lo->group, sizeof(lo->group), "%s", s);
    if (!json_object_object_get_ex(req, "op", &v) || !json_object_is_type(v, json_type_string) ||
        (strcmp(json_object_get_string(v), "suspend") &&
         strcmp(json_object_get_string(v), "resume"))) {
        snprintf(why, whylen, "\"op\" must be suspend or resume");
        return -1;
    }
    lo->op = !strcmp(json_object_get_string(v), "suspend") ? BRIDGE_LC_SUSPEND : BRIDGE_LC_RESUME;
    if (!json_object_object_get_ex(req, "at_ns", &v) || !json_object_is_type(v, json_type_int) ||
        (lo->at_ns = json_object_get_int64(v)) <= 0) {
        snprintf(why, whylen, "\"at_ns\" must be a time (ns since the epoch)");
        return -1;
    }
    if (json_object_object_get_ex(req, "policy", &v)) {
        policy = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
        if (strcmp(policy, "preserve") && strcmp(policy, "host")) {
            snprintf(why, whylen, "\"policy\" must be preserve or host");
            return -1;
        }
    }
    lo->preserve = !strcmp(policy, "preserve");
    if (!json_object_object_get_ex(req, "vms", &vms) ||
        !json_object_is_type(vms, json_type_array) || !json_object_array_length(vms) ||
        json_object_array_length(vms) > GROUP_VMS_MAX) {
        snprintf(why, whylen, "\"vms\" must be an array of 1..%d VM names", GROUP_VMS_MAX);
        return -1;
    }
    off = (size_t)snprintf(binding, blen, "%s|%s|%lld|%s|", op_word(lo->op), lo->group,
                           (long long)lo->at_ns, policy);
    lo->n = 0;
    for (size_t i = 0; i < json_object_array_length(vms); i++) {
        struct bridge_vm *vm = NULL;
        v = json_object_array_get_idx(vms, i);
        s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
        for (size_t k = 0; k < br->n_vms && !vm; k++)
            if (!strcmp(br->vms[k].cfg->name, s))
                vm = &br->vms[k];
        if (!vm) {
            snprintf(why, whylen, "no VM named '%.64s' on this bridge", s);
            return -1;
        }
        for (size_t k = 0; k < lo->n; k++)
            if (lo->v[k].vm == vm) {
                snprintf(why, whylen, "VM '%.64s' is named twice", s);
                return -1;
            }
        lo->v[lo->n++].vm = vm;
        if (off < blen)
            off += (size_t)snprintf(binding + off, blen - off, "%s,", s);
    }
    if (off >= blen) {
        snprintf(why, whylen, "binding too long");
        return -1;
    }
    return 0;
}

static void local_op_free(struct local_op *lo)
{
    for (size_t i = 0; i < lo->n; i++) /* aborted between priming and T */
        if (lo->v[i].primed && !lo->fired && lo->v[i].vm->backend &&
            lo->v[i].vm->ops->release_run_state)
            lo->v[i].vm->ops->release_run_state(lo->v[i].vm->backend, 0);
    if (lo->tfd >= 0) {
        bridge_watch_del(&lo->g->br->loop, &lo->tw);
        close(lo->tfd);
    }
    for (size_t i = 0; i < lo->n; i++)
        json_object_put(lo->v[i].result);
    memset(lo->v, 0, sizeof(lo->v));
    lo->in_use = lo->armed = lo->fired = lo->priming = lo->spinning = lo->settling = 0;
    lo->n = lo->pending = 0;
    lo->tfd = -1;
    lo->done = NULL;
    lo->opaque = NULL;
}

/* Drop prepared operations whose handle expired or was freed. */
static void sweep(struct bridge_groups *g)
{
    int64_t now = realtime_ns();

    group_handle_expire(&g->handles, now);
    for (int i = 0; i < GROUP_HANDLES_MAX; i++)
        if (g->ops[i].in_use && !g->ops[i].armed && g->handles.s[i].state != GH_PREPARED) {
            vms_info(NULL, NULL, "group %s: prepared %s expired without a commit", g->ops[i].group,
                     op_word(g->ops[i].op));
            local_op_free(&g->ops[i]);
        }
}

/* Is @vm in a prepared or armed operation of this bridge? */
static int vm_in_op(struct bridge_groups *g, struct bridge_vm *vm)
{
    sweep(g);
    for (int i = 0; i < GROUP_HANDLES_MAX; i++)
        if (g->ops[i].in_use)
            for (size_t k = 0; k < g->ops[i].n; k++)
                if (g->ops[i].v[k].vm == vm)
                    return 1;
    return 0;
}

static void do_prepare(struct bridge_groups *g, const char *origin, json_object *req,
                       bridge_lc_done_fn done, void *opaque)
{
    struct bridge *br = g->br;
    struct local_op tmp;
    char binding[BINDING_MAX], why[320], hex[GROUP_HANDLE_HEX];
    int64_t now = realtime_ns(), lead, expires;
    int slot;
    json_object *o;

    memset(&tmp, 0, sizeof(tmp));
    if (parse_binding(br, req, &tmp, binding, sizeof(binding), why, sizeof(why)) < 0) {
        answer_error(done, opaque, "%s", why);
        return;
    }
    lead = tmp.at_ns - now;
    if (lead <= 0) {
        answer_error(done, opaque, "refused: T is past (%.3f s ago)", -lead / 1e9);
        return;
    }
    if (lead < (int64_t)br->cfg->group_min_lead_ms * 1000000ll) {
        answer_error(done, opaque, "refused: T is too near: %.0f ms ahead, group_min_lead_ms = %u",
                     lead / 1e6, br->cfg->group_min_lead_ms);
        return;
    }
    if (br->cfg->group_require_clock_sync &&
        bridge_groups_clock_check(br->cfg->group_max_clock_error_ms, why, sizeof(why)) < 0) {
        answer_error(done, opaque, "refused: %s", why);
        return;
    }
    for (size_t i = 0; i < tmp.n; i++) {
        if (vm_in_op(g, tmp.v[i].vm)) {
            answer_error(done, opaque, "refused: %s is busy in another group operation",
                         tmp.v[i].vm->cfg->name);
            return;
        }
        if (bridge_managed_group_check(tmp.v[i].vm, tmp.op, why, sizeof(why)) < 0) {
            answer_error(done, opaque, "refused: %s", why);
            return;
        }
    }
    expires = now + (int64_t)br->cfg->group_handle_ttl_s * 1000000000ll;
    if (expires > tmp.at_ns)
        expires = tmp.at_ns; /* a commit after T cannot be honoured */
    slot = group_handle_issue(&g->handles, binding, now, expires, hex);
    if (slot < 0) {
        answer_error(done, opaque, "refused: too many group operations in flight (%d)",
                     GROUP_HANDLES_MAX);
        return;
    }
    local_op_free(&g->ops[slot]);
    g->ops[slot] = tmp;
    g->ops[slot].g = g;
    g->ops[slot].tfd = -1;
    g->ops[slot].in_use = 1;
    snprintf(g->ops[slot].origin, sizeof(g->ops[slot].origin), "%s", origin ? origin : "");
    bridge_watch_init(&g->ops[slot].tw, NULL, NULL);
    vms_info(NULL, NULL, "group %s: prepared to %s %zu VM(s) at %lld (in %.0f ms)", tmp.group,
             op_word(tmp.op), tmp.n, (long long)tmp.at_ns, lead / 1e6);
    o = json_object_new_object();
    json_object_object_add(o, "handle", json_object_new_string(hex));
    json_object_object_add(o, "expires_ns", json_object_new_int64(expires));
    sodium_memzero(hex, sizeof(hex));
    done(opaque, 1, o);
}

/* @v's clock state at the stop: host time (QEMU's STOP timestamp) and guest time. The guest
 * is stopped, so its helper cannot be asked then: the guest time comes from the helper's
 * Ready to the commit's Prepare (its clock then, carried to the stop at the host's rate: off
 * by the port's one-way delay and the clocks' rate difference over span_ms), else from its
 * RTC (1 s resolution; QEMU's RTC keeps the time the guest set it to, moving with the host
 * while it runs), which is kept beside the helper's figure either way. */
static json_object *clock_at_stop(const struct local_vm *v)
{
    json_object *c = json_object_new_object();

    json_object_object_add(c, "host_ns", json_object_new_int64(v->stop_us * 1000));
    if (v->rtc_s)
        json_object_object_add(c, "rtc_ns", json_object_new_int64(v->rtc_s * 1000000000ll));
    if (v->helper_guest_ns) {
        json_object_object_add(c, "guest_ns", json_object_new_int64(v->helper_guest_ns));
        json_object_object_add(
            c, "guest_minus_host_ms",
            json_object_new_double((v->helper_guest_ns - v->stop_us * 1e3) / 1e6));
        json_object_object_add(c, "span_ms", json_object_new_double(v->helper_span_ns / 1e6));
        json_object_object_add(c, "source", json_object_new_string("helper"));
    } else if (v->rtc_s) {
        json_object_object_add(c, "guest_ns", json_object_new_int64(v->rtc_s * 1000000000ll));
        json_object_object_add(c, "guest_minus_host_ms",
                               json_object_new_double((v->rtc_s * 1e9 - v->stop_us * 1e3) / 1e6));
        json_object_object_add(c, "resolution_ms", json_object_new_int(1000));
        json_object_object_add(c, "source", json_object_new_string("rtc"));
    } else {
        json_object_object_add(c, "source", json_object_new_string("none"));
        json_object_object_add(c, "error", json_object_new_string(v->rtc_why));
    }
    return c;
}

/* Every VM of @lo is done: answer the commit, keep the handle as used until it expires. */
static void local_finish(struct local_op *lo)
{
    json_object *o = json_object_new_object(), *a = json_object_new_array();
    int all_ok = 1;
    int64_t lo_us = 0, hi_us = 0;

    for (size_t i = 0; i < lo->n; i++) {
        struct local_vm *v = &lo->v[i];
        json_object *r = v->result ? json_object_get(v->result) : json_object_new_object();
        json_object_object_add(r, "vm", json_object_new_string(v->vm->cfg->name));
        json_object_object_add(r, "ok", json_object_new_boolean(v->ok));
        json_object_object_add(r, lo->op == BRIDGE_LC_SUSPEND ? "stop_event_us" : "resume_event_us",
                               json_object_new_int64(v->stop_us));
        json_object_object_add(r, "sent_ns", json_object_new_int64(v->sent_ns));
        if (lo->op == BRIDGE_LC_SUSPEND) {
            json_object_object_add(r, "prepare_sent", json_object_new_boolean(v->prepare_sent));
            json_object_object_add(r, "clock", clock_at_stop(v));
        }
        json_object_array_add(a, r);
        all_ok &= v->ok;
        if (v->stop_us && (!lo_us || v->stop_us < lo_us))
            lo_us = v->stop_us;
        if (v->stop_us > hi_us)
            hi_us = v->stop_us;
    }
    json_object_object_add(o, "group", json_object_new_string(lo->group));
    json_object_object_add(o, "op", json_object_new_string(op_word(lo->op)));
    json_object_object_add(o, "at_ns", json_object_new_int64(lo->at_ns));
    json_object_object_add(o, "fired_ns", json_object_new_int64(lo->fired_ns));
    json_object_object_add(o, "skew_us", json_object_new_int64(hi_us - lo_us));
    json_object_object_add(o, "vms", a);
    if (!all_ok)
        json_object_object_add(o, "error", json_object_new_string("some VMs failed (see \"vms\")"));
    vms_info(NULL, NULL, "group %s: %s at T done on this bridge (%s, skew %lld us)", lo->group,
             op_word(lo->op), all_ok ? "all ok" : "FAILURES", (long long)(hi_us - lo_us));
    if (lo->done)
        lo->done(lo->opaque, all_ok, o);
    else
        json_object_put(o);
    lo->done = NULL;
    /* the slot stays USED (so a reuse is named) until the handle's expiry */
    for (int i = 0; i < GROUP_HANDLES_MAX; i++)
        if (&lo->g->ops[i] == lo) {
            lo->g->handles.s[i].state = GH_USED;
            lo->g->handles.s[i].expires_ns = realtime_ns() + GROUP_HANDLE_TOMBSTONE_NS;
        }
    local_op_free(lo);
}

static void vm_settled(struct local_vm *v, int ok, json_object *result)
{
    struct local_op *lo = v->op;

    if (v->done) {
        json_object_put(result);
        return;
    }
    v->done = 1;
    v->ok = ok;
    json_object_put(v->result);
    v->result = result;
    if (--lo->pending == 0)
        local_finish(lo);
}

static void on_vm_suspended(void *opaque, int ok, json_object *result)
{
    vm_settled(opaque, ok, result);
}

/* The guest's RTC at the stop (clock_at_stop), then the suspend. */
static void on_vm_rtc(void *opaque, const struct bridge_backend_result *r)
{
    struct local_vm *v = opaque;

    if (r->status == VMS_STATUS_OK)
        v->rtc_s = r->rtc_s;
    else
        snprintf(v->rtc_why, sizeof(v->rtc_why), "the guest's RTC: %.100s", r->message);
    bridge_managed_group_suspend(v->vm, on_vm_suspended, v);
}

/* Every VM of a suspend stopped (or failed) and T + GROUP_SETTLE_NS passed: the RTC reads and
 * checkpoints begin. */
static void stops_settled(struct local_op *lo)
{
    if (lo->settling || !lo->fired)
        return;
    for (size_t i = 0; i < lo->n; i++)
        if (!lo->v[i].done && !lo->v[i].stopped)
            return;
    for (size_t i = 0; i < lo->n; i++) {
        struct local_vm *v = &lo->v[i];
        if (!v->stopped)
            continue;
        v->stopped = 0;
        if (v->vm->ops->query_rtc && v->vm->ops->query_rtc(v->vm->backend, on_vm_rtc, v) == 0)
            continue;
        snprintf(v->rtc_why, sizeof(v->rtc_why), "its backend cannot read the guest's RTC");
        bridge_managed_group_suspend(v->vm, on_vm_suspended, v);
    }
}

static void on_vm_stopped(void *opaque, const struct bridge_backend_result *r)
{
    struct local_vm *v = opaque;
    struct local_op *lo = v->op;

    v->stop_us = r->event_us;
    if (r->status == VMS_STATUS_OK && v->vm->hx.ready_guest_ns &&
        (int64_t)v->vm->hx.ready_host_ns >= v->op->committed_ns &&
        v->stop_us * 1000 >= (int64_t)v->vm->hx.ready_host_ns) {
        v->helper_span_ns = v->stop_us * 1000 - (int64_t)v->vm->hx.ready_host_ns;
        v->helper_guest_ns = (int64_t)v->vm->hx.ready_guest_ns + v->helper_span_ns;
    }
    if (r->status != VMS_STATUS_OK) {
        json_object *o = json_object_new_object();
        char msg[VMS_STR_MAX + 64];
        snprintf(msg, sizeof(msg), "stop at T failed: %s", r->message);
        json_object_object_add(o, "error", json_object_new_string(msg));
        vms_err(v->vm->cfg->name, NULL, "group %s: %s", v->op->group, msg);
        vm_settled(v, 0, o);
        if (lo->in_use) /* others may wait for this one */
            stops_settled(lo);
        return;
    }
    v->stopped = 1;
    stops_settled(lo);
}

static void on_vm_resumed(void *opaque, int ok, json_object *result)
{
    struct local_vm *v = opaque;
    json_object *ts;

    if (ok && json_object_object_get_ex(result, "resume_event_us", &ts))
        v->stop_us = json_object_get_int64(ts);
    vm_settled(v, ok, result);
}

static void send_cont(struct local_vm *v)
{
    v->cont_sent = 1;
    v->sent_ns = realtime_ns();
    if (bridge_managed_group_cont(v->vm, on_vm_resumed, v, 0) < 0) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "error", json_object_new_string("cont at T: QMP not ready"));
        vm_settled(v, 0, o);
    }
}

static void on_vm_held(void *opaque, int ok, json_object *result)
{
    struct local_vm *v = opaque;

    if (!ok) {
        vm_settled(v, 0, result);
        return;
    }
    json_object_put(v->result);
    v->result = result;
    v->held = 1;
    if (v->op->fired && !v->cont_sent) {
        vms_warn(v->vm->cfg->name, NULL, "group %s: loaded after T: cont now (late)", v->op->group);
        send_cont(v);
    }
}

static int arm_timer(struct local_op *lo, int64_t at_ns)
{
    struct itimerspec its;

    memset(&its, 0, sizeof(its));
    its.it_value.tv_sec = (time_t)(at_ns / 1000000000ll);
    its.it_value.tv_nsec = (long)(at_ns % 1000000000ll);
    return timerfd_settime(lo->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* T - GROUP_PRIME_LEAD_NS: prime each VM's stop (or, if loaded, cont), so that at T one byte
 * per VM crosses its monitor instead of a whole command (bench/RESULTS.md §10). A VM whose
 * backend cannot prime, or not yet loaded, gets the whole command at T. */
static void prime_all(struct local_op *lo)
{
    size_t primed = 0;

    for (size_t i = 0; i < lo->n; i++) {
        struct local_vm *v = &lo->v[i];
        struct bridge_vm *vm = v->vm;
        if (v->done || !vm->backend || !vm->ops->prime_run_state || !vm->ops->release_run_state)
            continue;
        if (lo->op == BRIDGE_LC_SUSPEND)
            v->primed = vm->ops->prime_run_state(vm->backend, 1, on_vm_stopped, v) == 0;
        else if (v->held && !v->cont_sent &&
                 bridge_managed_group_cont(vm, on_vm_resumed, v, 1) == 0)
            v->primed = v->cont_sent = 1;
        primed += (size_t)v->primed;
    }
    vms_debug(NULL, NULL, "group %s: %zu of %zu VM(s) primed for T", lo->group, primed, lo->n);
}

/* T: stop (or cont) every VM back to back; nothing else runs in between. */
static void on_timer(struct bridge_watch *w, uint32_t revents)
{
    struct local_op *lo = w->opaque;
    uint64_t expirations;
    (void)revents;

    if (read(lo->tfd, &expirations, sizeof(expirations)) != sizeof(expirations))
        return;
    if (lo->settling) {
        lo->settling = 0;
        bridge_watch_del(&lo->g->br->loop, &lo->tw);
        close(lo->tfd);
        lo->tfd = -1;
        stops_settled(lo);
        return;
    }
    if (lo->priming) {
        lo->priming = 0;
        prime_all(lo);
        lo->spinning = 1;
        if (arm_timer(lo, lo->at_ns - GROUP_SPIN_NS) == 0)
            return;
        vms_warn(NULL, NULL, "group %s: cannot re-arm the timer for T: %s; going now", lo->group,
                 strerror(errno));
    }
    if (lo->spinning) { /* bounded on the monotonic clock: a realtime step cannot stall it */
        struct timespec t0, t;
        lo->spinning = 0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do
            clock_gettime(CLOCK_MONOTONIC, &t);
        while (realtime_ns() < lo->at_ns &&
               (t.tv_sec - t0.tv_sec) * 1000000000ll + (t.tv_nsec - t0.tv_nsec) <
                   2 * GROUP_SPIN_NS);
    }
    lo->fired = 1;
    lo->fired_ns = realtime_ns();
    for (size_t i = 0; i < lo->n; i++) { /* the primed first: one byte each */
        struct local_vm *v = &lo->v[i];
        if (v->primed && !v->done) {
            v->sent_ns = realtime_ns();
            v->vm->ops->release_run_state(v->vm->backend, 1);
        }
    }
    for (size_t i = 0; i < lo->n; i++) {
        struct local_vm *v = &lo->v[i];
        struct bridge_vm *vm = v->vm;
        if (v->done || v->primed)
            continue;
        if (lo->op == BRIDGE_LC_SUSPEND) {
            v->sent_ns = realtime_ns();
            if (!vm->backend || vm->ops->stop(vm->backend, on_vm_stopped, v) < 0) {
                json_object *o = json_object_new_object();
                json_object_object_add(o, "error",
                                       json_object_new_string("stop at T: QMP not ready"));
                vm_settled(v, 0, o);
            }
        } else if (v->held && !v->cont_sent) {
            send_cont(v);
        }
    }
    if (lo->in_use && lo->tfd >= 0 && lo->op == BRIDGE_LC_SUSPEND &&
        arm_timer(lo, lo->at_ns + GROUP_SETTLE_NS) == 0) {
        lo->settling = 1;
    } else if (lo->tfd >= 0) {
        bridge_watch_del(&lo->g->br->loop, &lo->tw);
        close(lo->tfd);
        lo->tfd = -1;
    }
    vms_info(NULL, NULL, "group %s: T reached (%+.3f ms late): %s sent", lo->group,
             (lo->fired_ns - lo->at_ns) / 1e6, lo->op == BRIDGE_LC_SUSPEND ? "stop" : "cont");
}

/* Look the handle of @req up in state @want: the operation, or NULL (answered). */
static struct local_op *find_op(struct bridge_groups *g, json_object *req,
                                enum group_handle_state want, bridge_lc_done_fn done, void *opaque)
{
    struct local_op tmp;
    char binding[BINDING_MAX], why[320];
    const char *hex = NULL, *hwhy = NULL;
    json_object *v;
    int slot;

    memset(&tmp, 0, sizeof(tmp));
    if (parse_binding(g->br, req, &tmp, binding, sizeof(binding), why, sizeof(why)) < 0) {
        answer_error(done, opaque, "%s", why);
        return NULL;
    }
    if (json_object_object_get_ex(req, "handle", &v) && json_object_is_type(v, json_type_string))
        hex = json_object_get_string(v);
    slot = group_handle_find(&g->handles, hex, binding, realtime_ns(), want, &hwhy);
    if (slot < 0) {
        answer_error(done, opaque, "refused: %s", hwhy);
        return NULL;
    }
    return &g->ops[slot];
}

static void do_commit(struct bridge_groups *g, json_object *req, bridge_lc_done_fn done,
                      void *opaque)
{
    struct local_op *lo = find_op(g, req, GH_PREPARED, done, opaque);
    int slot;

    if (!lo)
        return;
    slot = (int)(lo - g->ops);
    if (realtime_ns() >= lo->at_ns) {
        g->handles.s[slot].state = GH_EXPIRED;
        g->handles.s[slot].expires_ns = realtime_ns() + GROUP_HANDLE_TOMBSTONE_NS;
        local_op_free(lo);
        answer_error(done, opaque, "refused: handle expired (T has passed)");
        return;
    }
    lo->tfd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC);
    lo->priming = lo->at_ns - GROUP_PRIME_LEAD_NS > realtime_ns() + 1000000;
    lo->spinning = 0;
    bridge_watch_init(&lo->tw, on_timer, lo);
    if (lo->tfd < 0 ||
        arm_timer(lo, lo->priming ? lo->at_ns - GROUP_PRIME_LEAD_NS : lo->at_ns) < 0 ||
        bridge_watch_add(&g->br->loop, &lo->tw, lo->tfd, EPOLLIN) < 0) {
        answer_error(done, opaque, "refused: cannot arm the timer: %s", strerror(errno));
        local_op_free(lo);
        memset(&g->handles.s[slot], 0, sizeof(g->handles.s[slot]));
        return;
    }
    g->handles.s[slot].state = GH_ARMED;
    lo->armed = 1;
    lo->committed_ns = realtime_ns();
    lo->done = done;
    lo->opaque = opaque;
    lo->pending = lo->n;
    for (size_t i = 0; i < lo->n; i++)
        lo->v[i].op = lo;
    vms_info(NULL, NULL, "group %s: committed: %s of %zu VM(s) at T (in %.0f ms)", lo->group,
             op_word(lo->op), lo->n, (lo->at_ns - realtime_ns()) / 1e6);
    if (lo->op == BRIDGE_LC_RESUME) /* load now, cont at T */
        for (size_t i = 0; i < lo->n; i++)
            bridge_managed_group_resume(lo->v[i].vm, lo->preserve, on_vm_held, &lo->v[i]);
    else /* guest apps hear of it before T (the resume's cont sends them Resumed) */
        for (size_t i = 0; i < lo->n; i++)
            lo->v[i].prepare_sent = bridge_managed_group_prepare(lo->v[i].vm);
}

/* A suspend is disarmed until T; a committed resume cannot be taken back (its VMs load). */
static int abortable(const struct local_op *lo)
{
    return !(lo->armed && (lo->fired || lo->op == BRIDGE_LC_RESUME));
}

/* Drop operation @slot before T, answering a waiting commit. */
static void local_abort(struct bridge_groups *g, int slot, const char *who)
{
    struct local_op *lo = &g->ops[slot];

    if (lo->armed && lo->done)
        answer_error(lo->done, lo->opaque, "aborted %s before T", who);
    for (size_t i = 0; i < lo->n; i++)
        if (lo->v[i].prepare_sent)
            bridge_managed_group_cancelled(lo->v[i].vm);
    lo->done = NULL;
    vms_warn(NULL, NULL, "group %s: aborted %s%s", lo->group, who, lo->armed ? " (disarmed)" : "");
    memset(&g->handles.s[slot], 0, sizeof(g->handles.s[slot]));
    local_op_free(lo);
}

void bridge_groups_origins_check(struct bridge *br)
{
    struct bridge_groups *g = br->groups;
    int quorate = bridge_cluster_quorate(br);

    for (int i = 0; g && i < GROUP_HANDLES_MAX; i++) {
        struct local_op *lo = &g->ops[i];
        char who[BRIDGE_NODE_NAME_MAX + 96];
        if (!lo->in_use || !lo->origin[0] || !abortable(lo))
            continue;
        if (quorate && bridge_cluster_node_state(br, lo->origin) == 1)
            continue;
        /* the control instance cannot commit, or abort, what it cannot reach: nothing is
         * left armed to stop VMs alone at T */
        snprintf(who, sizeof(who), "here: %s",
                 quorate ? "its control instance's bridge left the cluster's CPG group"
                         : "this host lost quorum");
        local_abort(g, i, who);
    }
}

static void do_abort(struct bridge_groups *g, json_object *req, bridge_lc_done_fn done,
                     void *opaque)
{
    struct local_op tmp;
    char binding[BINDING_MAX], why[320];
    const char *hex = NULL, *hwhy = NULL;
    json_object *v, *o;
    struct local_op *lo;
    int slot;

    memset(&tmp, 0, sizeof(tmp));
    if (parse_binding(g->br, req, &tmp, binding, sizeof(binding), why, sizeof(why)) < 0) {
        answer_error(done, opaque, "%s", why);
        return;
    }
    if (json_object_object_get_ex(req, "handle", &v) && json_object_is_type(v, json_type_string))
        hex = json_object_get_string(v);
    slot = group_handle_find(&g->handles, hex, binding, realtime_ns(), GH_PREPARED, &hwhy);
    if (slot < 0 && hwhy && !strcmp(hwhy, "handle already used"))
        slot = group_handle_find(&g->handles, hex, binding, realtime_ns(), GH_ARMED, &hwhy);
    if (slot < 0) {
        answer_error(done, opaque, "refused: %s", hwhy);
        return;
    }
    lo = &g->ops[slot];
    if (!abortable(lo)) {
        answer_error(done, opaque, "refused: too late to abort: the %s has started on this bridge",
                     op_word(lo->op));
        return;
    }
    local_abort(g, slot, "by the control instance");
    o = json_object_new_object();
    json_object_object_add(o, "aborted", json_object_new_boolean(1));
    done(opaque, 1, o);
}

/* ---- the control instance ---- */

static void run_request(struct control_run *run, struct run_bridge *b, const char *cmd,
                        json_object *out)
{
    json_object_object_add(out, "cmd", json_object_new_string(cmd));
    json_object_object_add(out, "group", json_object_new_string(run->group));
    json_object_object_add(out, "op", json_object_new_string(op_word(run->op)));
    json_object_object_add(out, "at_ns", json_object_new_int64(run->at_ns));
    json_object_object_add(out, "policy", json_object_new_string(run->policy));
    json_object_object_add(out, "vms", json_object_get(b->vms));
    if (b->handle[0])
        json_object_object_add(out, "handle", json_object_new_string(b->handle));
}

static void on_abort_reply(void *opaque, json_object *reply, const char *why)
{
    json_object *e;
    (void)opaque;
    if (!reply)
        vms_warn(NULL, NULL, "group: abort not delivered: %s", why);
    else if (json_object_object_get_ex(reply, "error", &e))
        vms_warn(NULL, NULL, "group: abort refused: %s", json_object_get_string(e));
}

/* Abort @b's handle (fire and forget: a peer that is gone has nothing armed to honour). */
static void send_abort(struct control_run *run, struct run_bridge *b)
{
    json_object *req = json_object_new_object();
    run_request(run, b, "group-abort", req);
    group_peer_send(run->g->br, b->name, req, PREPARE_TIMEOUT_S, on_abort_reply, NULL);
    json_object_put(req);
}

static void run_free(struct control_run *run)
{
    for (size_t i = 0; i < run->n; i++) {
        group_peer_cancel(run->b[i].call);
        json_object_put(run->b[i].vms);
        json_object_put(run->b[i].reply);
    }
    memset(run, 0, sizeof(*run));
}

/* The bridges' answers, for the admin and the history. */
static json_object *run_report(struct control_run *run, int64_t *skew_us)
{
    json_object *a = json_object_new_array();
    int64_t lo = 0, hi = 0;

    for (size_t i = 0; i < run->n; i++) {
        struct run_bridge *b = &run->b[i];
        json_object *e = json_object_new_object(), *vms;
        json_object_object_add(e, "bridge", json_object_new_string(b->name));
        json_object_object_add(e, "ok", json_object_new_boolean(b->ok));
        if (b->why[0])
            json_object_object_add(e, "error", json_object_new_string(b->why));
        if (b->reply && json_object_object_get_ex(b->reply, "vms", &vms)) {
            json_object_object_add(e, "vms", json_object_get(vms));
            for (size_t k = 0; k < json_object_array_length(vms); k++) {
                json_object *ts, *vm = json_object_array_get_idx(vms, k);
                int64_t us = 0;
                if (json_object_object_get_ex(vm, "stop_event_us", &ts) ||
                    json_object_object_get_ex(vm, "resume_event_us", &ts))
                    us = json_object_get_int64(ts);
                if (us && (!lo || us < lo))
                    lo = us;
                if (us > hi)
                    hi = us;
            }
        }
        json_object_array_add(a, e);
    }
    *skew_us = hi - lo;
    return a;
}

static void run_end(struct control_run *run, const char *outcome)
{
    struct bridge *br = run->g->br;
    int64_t skew = 0;
    json_object *o = json_object_new_object(), *detail = json_object_new_object();
    json_object *bridges = run_report(run, &skew);
    int ok = !strcmp(outcome, "done");

    json_object_object_add(detail, "bridges", json_object_get(bridges));
    json_object_object_add(detail, "skew_us", json_object_new_int64(skew));
    json_object_object_add(detail, "policy", json_object_new_string(run->policy));
    if (group_db_history_add(&br->db, run->group, op_word(run->op), run->at_ns, outcome,
                             json_object_to_json_string_ext(detail, JSON_C_TO_STRING_PLAIN)) < 0)
        vms_err(NULL, NULL, "group %s: cannot journal the outcome (%s)", run->group, outcome);
    json_object_put(detail);
    json_object_object_add(o, "group", json_object_new_string(run->group));
    json_object_object_add(o, "op", json_object_new_string(op_word(run->op)));
    json_object_object_add(o, "at_ns", json_object_new_int64(run->at_ns));
    json_object_object_add(o, "outcome", json_object_new_string(outcome));
    json_object_object_add(o, "skew_us", json_object_new_int64(skew));
    json_object_object_add(o, "bridges", bridges);
    if (!ok) {
        char msg[1024];
        size_t off = (size_t)snprintf(msg, sizeof(msg), "group %s %s: %s", run->group,
                                      op_word(run->op), outcome);
        for (size_t i = 0; i < run->n && off < sizeof(msg); i++)
            if (run->b[i].why[0])
                off += (size_t)snprintf(msg + off, sizeof(msg) - off, "; %s: %s", run->b[i].name,
                                        run->b[i].why);
        json_object_object_add(o, "error", json_object_new_string(msg));
    }
    if (ok)
        vms_info(NULL, NULL, "group %s: %s %s (skew %lld us)", run->group, op_word(run->op),
                 outcome, (long long)skew);
    else
        vms_warn(NULL, NULL, "group %s: %s %s", run->group, op_word(run->op), outcome);
    if (run->done)
        run->done(run->opaque, ok, o);
    else
        json_object_put(o);
    run_free(run);
}

/* Note @b's reply: ok, or the reason (its own, or why it could not answer). */
/* A bridge's answer as the report reads it: "vms", when there, an array of at most
 * GROUP_VMS_MAX objects whose "clock", when there, is an object (another host's answer is
 * checked before the report walks it). */
static int reply_valid(json_object *reply)
{
    json_object *vms, *c;

    if (!json_object_object_get_ex(reply, "vms", &vms))
        return 1;
    if (!json_object_is_type(vms, json_type_array) || json_object_array_length(vms) > GROUP_VMS_MAX)
        return 0;
    for (size_t i = 0; i < json_object_array_length(vms); i++) {
        json_object *vm = json_object_array_get_idx(vms, i);
        if (!json_object_is_type(vm, json_type_object) ||
            (json_object_object_get_ex(vm, "clock", &c) &&
             !json_object_is_type(c, json_type_object)))
            return 0;
    }
    return 1;
}

static void take_reply(struct run_bridge *b, json_object *reply, const char *why)
{
    json_object *v;

    if (reply && !reply_valid(reply)) {
        reply = NULL;
        why = "its answer is malformed (\"vms\")";
    }
    b->call = NULL;
    b->replied = 1;
    json_object_put(b->reply);
    b->reply = reply ? json_object_get(reply) : NULL;
    b->ok = reply && json_object_object_get_ex(reply, "ok", &v) && json_object_get_boolean(v);
    if (!reply)
        snprintf(b->why, sizeof(b->why), "%s", why ? why : "no reply");
    else if (!b->ok)
        snprintf(b->why, sizeof(b->why), "%s",
                 json_object_object_get_ex(reply, "error", &v) ? json_object_get_string(v)
                                                               : "refused");
}

static void on_commit_reply(void *opaque, json_object *reply, const char *why)
{
    struct run_bridge *b = opaque;
    struct control_run *run = b->run;
    size_t n_ok = 0;

    take_reply(b, reply, why);
    if (!b->ok && !run->aborted && realtime_ns() < run->at_ns) {
        /* a bridge that cannot honour its commit (restarted, gone): the others stop too */
        run->aborted = 1;
        vms_warn(NULL, NULL, "group %s: %s failed its commit (%s): aborting the others", run->group,
                 b->name, b->why);
        for (size_t i = 0; i < run->n; i++)
            if (!run->b[i].replied)
                send_abort(run, &run->b[i]);
    }
    if (--run->pending)
        return;
    for (size_t i = 0; i < run->n; i++)
        n_ok += (size_t)run->b[i].ok;
    /* "half": some bridges did it and some did not — the history says which */
    run_end(run, n_ok == run->n ? "done"
                 : n_ok == 0    ? (run->aborted ? "aborted" : "failed")
                                : "half");
}

static void on_prepare_reply(void *opaque, json_object *reply, const char *why)
{
    struct run_bridge *b = opaque;
    struct control_run *run = b->run;
    int all_ok = 1;
    json_object *h;

    take_reply(b, reply, why);
    if (b->ok && json_object_object_get_ex(reply, "handle", &h) &&
        json_object_is_type(h, json_type_string))
        snprintf(b->handle, sizeof(b->handle), "%s", json_object_get_string(h));
    if (--run->pending)
        return;
    for (size_t i = 0; i < run->n; i++)
        all_ok &= run->b[i].ok;
    if (!all_ok) {
        for (size_t i = 0; i < run->n; i++)
            if (run->b[i].ok)
                send_abort(run, &run->b[i]);
        run_end(run, "refused");
        return;
    }
    run->phase = R_COMMIT;
    run->pending = run->n;
    for (size_t i = 0; i < run->n; i++) {
        struct run_bridge *rb = &run->b[i];
        json_object *req = json_object_new_object();
        double wait = (double)(run->at_ns - realtime_ns()) / 1e9 + COMMIT_SLACK_S;
        run_request(run, rb, "group-commit", req);
        json_object_put(rb->reply);
        rb->reply = NULL;
        rb->replied = rb->ok = 0;
        rb->call = group_peer_send(run->g->br, rb->name, req, wait, on_commit_reply, rb);
        json_object_put(req);
        if (!rb->call)
            snprintf(rb->why, sizeof(rb->why), "out of memory");
    }
}

static int parse_group_name(json_object *req, char *out, bridge_lc_done_fn done, void *opaque)
{
    json_object *v;
    const char *s;

    if (!json_object_object_get_ex(req, "group", &v) || !json_object_is_type(v, json_type_string) ||
        strlen(s = json_object_get_string(v)) >= GROUP_NAME_MAX || !vms_valid_id(s)) {
        answer_error(done, opaque, "\"group\" must be a name of 1..63 of [A-Za-z0-9._:@-]");
        return -1;
    }
    strcpy(out, s);
    return 0;
}

static void control_start(struct bridge_groups *g, enum bridge_lc_op op, json_object *req,
                          bridge_lc_done_fn done, void *opaque)
{
    struct bridge *br = g->br;
    struct control_run *run = NULL;
    char group[GROUP_NAME_MAX];
    json_object *members, *v;
    const char *policy = "preserve";
    int64_t at_ns;

    if (parse_group_name(req, group, done, opaque) < 0)
        return;
    if (!json_object_object_get_ex(req, "at_ns", &v) || !json_object_is_type(v, json_type_int) ||
        (at_ns = json_object_get_int64(v)) <= 0) {
        answer_error(done, opaque, "\"at_ns\" must be a time (ns since the epoch)");
        return;
    }
    if (json_object_object_get_ex(req, "policy", &v))
        policy = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
    if (strcmp(policy, "preserve") && strcmp(policy, "host")) {
        answer_error(done, opaque, "\"policy\" must be preserve or host");
        return;
    }
    for (int i = 0; i < GROUP_RUNS_MAX && !run; i++)
        if (!g->runs[i].in_use)
            run = &g->runs[i];
    for (int i = 0; i < GROUP_RUNS_MAX; i++)
        if (g->runs[i].in_use && !strcmp(g->runs[i].group, group)) {
            answer_error(done, opaque, "group %s: an operation is in progress", group);
            return;
        }
    if (!run) {
        answer_error(done, opaque, "too many group operations in progress (%d)", GROUP_RUNS_MAX);
        return;
    }
    members = group_db_members(&br->db, group);
    if (!members || !json_object_array_length(members)) {
        json_object_put(members);
        answer_error(done, opaque, "group %s has no members (group create, group add)", group);
        return;
    }
    memset(run, 0, sizeof(*run));
    run->g = g;
    run->op = op;
    run->at_ns = at_ns;
    snprintf(run->group, sizeof(run->group), "%s", group);
    snprintf(run->policy, sizeof(run->policy), "%s", op == BRIDGE_LC_RESUME ? policy : "preserve");
    for (size_t i = 0; i < json_object_array_length(members); i++) {
        json_object *m = json_object_array_get_idx(members, i), *bn, *vn;
        struct run_bridge *b = NULL;
        json_object_object_get_ex(m, "bridge", &bn);
        json_object_object_get_ex(m, "vm", &vn);
        for (size_t k = 0; k < run->n && !b; k++)
            if (!strcmp(run->b[k].name, json_object_get_string(bn)))
                b = &run->b[k];
        if (!b) {
            if (run->n >= BRIDGE_PEERS_MAX + 1 ||
                !group_peer_known(br, json_object_get_string(bn))) {
                answer_error(done, opaque,
                             "group %s: bridge '%s' is neither a [peer] nor a cluster node", group,
                             json_object_get_string(bn));
                json_object_put(members);
                run_free(run);
                return;
            }
            b = &run->b[run->n++];
            b->run = run;
            snprintf(b->name, sizeof(b->name), "%s", json_object_get_string(bn));
            b->vms = json_object_new_array();
        }
        json_object_array_add(b->vms, json_object_get(vn));
    }
    json_object_put(members);
    run->in_use = 1;
    run->done = done;
    run->opaque = opaque;
    run->phase = R_PREPARE;
    run->pending = run->n;
    vms_info(NULL, NULL, "group %s: %s at %lld over %zu bridge(s): prepare", group, op_word(op),
             (long long)at_ns, run->n);
    for (size_t i = 0; i < run->n; i++) {
        json_object *preq = json_object_new_object();
        run_request(run, &run->b[i], "group-prepare", preq);
        run->b[i].call = group_peer_send(br, run->b[i].name, preq, PREPARE_TIMEOUT_S,
                                         on_prepare_reply, &run->b[i]);
        json_object_put(preq);
    }
}

/* Each VM's clock state at the latest suspend that stopped VMs (history, newest first):
 * [{"vm","bridge","host_ns","guest_ns","source",...}], [] when none. */
static json_object *clocks_at_stop(json_object *hist)
{
    json_object *out = json_object_new_array();

    for (size_t i = 0; hist && i < json_object_array_length(hist); i++) {
        json_object *e = json_object_array_get_idx(hist, i), *v, *d, *bridges;
        if (!json_object_object_get_ex(e, "op", &v) ||
            strcmp(json_object_get_string(v), "suspend") ||
            !json_object_object_get_ex(e, "detail", &d) ||
            !json_object_object_get_ex(d, "bridges", &bridges) ||
            !json_object_is_type(bridges, json_type_array))
            continue;
        for (size_t b = 0; b < json_object_array_length(bridges); b++) {
            json_object *br = json_object_array_get_idx(bridges, b), *vms, *name;
            if (!json_object_object_get_ex(br, "vms", &vms) ||
                !json_object_is_type(vms, json_type_array))
                continue;
            json_object_object_get_ex(br, "bridge", &name);
            for (size_t k = 0; k < json_object_array_length(vms); k++) {
                json_object *vm = json_object_array_get_idx(vms, k), *clock, *x;
                if (!json_object_object_get_ex(vm, "clock", &clock) ||
                    !json_object_is_type(clock, json_type_object))
                    continue;
                x = json_object_new_object();
                json_object_object_add(x, "vm", json_object_get(json_object_object_get(vm, "vm")));
                json_object_object_add(x, "bridge", json_object_get(name));
                json_object_object_foreach(clock, key, val)
                    json_object_object_add(x, key, json_object_get(val));
                json_object_array_add(out, x);
            }
        }
        if (json_object_array_length(out))
            break;
    }
    return out;
}

static void group_show(struct bridge_groups *g, json_object *req, bridge_lc_done_fn done,
                       void *opaque)
{
    char group[GROUP_NAME_MAX];
    json_object *o, *hist;
    int ex;

    if (parse_group_name(req, group, done, opaque) < 0)
        return;
    ex = group_db_exists(&g->br->db, group);
    if (ex != 1) {
        answer_error(done, opaque, ex < 0 ? "journal error" : "no group named '%s'", group);
        return;
    }
    o = json_object_new_object();
    hist = group_db_history(&g->br->db, group, 20);
    json_object_object_add(o, "group", json_object_new_string(group));
    json_object_object_add(o, "members", group_db_members(&g->br->db, group));
    json_object_object_add(o, "clocks_at_stop", clocks_at_stop(hist));
    json_object_object_add(o, "history", hist);
    done(opaque, 1, o);
}

static void group_edit(struct bridge_groups *g, int create, json_object *req,
                       bridge_lc_done_fn done, void *opaque)
{
    struct bridge *br = g->br;
    char group[GROUP_NAME_MAX];
    const char *bridge = "self", *vm;
    json_object *v;
    int rc;

    if (parse_group_name(req, group, done, opaque) < 0)
        return;
    if (create) {
        rc = group_db_create(&br->db, group);
        if (rc < 0)
            answer_error(done, opaque, "journal error");
        else if (rc == 1)
            answer_error(done, opaque, "group %s exists already", group);
        else
            done(opaque, 1, NULL);
        return;
    }
    if (group_db_exists(&br->db, group) != 1) {
        answer_error(done, opaque, "no group named '%s' (group create first)", group);
        return;
    }
    if (json_object_object_get_ex(req, "bridge", &v) && json_object_is_type(v, json_type_string))
        bridge = json_object_get_string(v);
    if (!group_peer_known(br, bridge)) {
        answer_error(done, opaque,
                     "no [peer %.64s] in this bridge's configuration, nor a node of its cluster",
                     bridge);
        return;
    }
    if (!json_object_object_get_ex(req, "vm", &v) || !json_object_is_type(v, json_type_string) ||
        !vms_valid_id(vm = json_object_get_string(v)) || strlen(vm) >= BRIDGE_VM_NAME_MAX) {
        answer_error(done, opaque, "\"vm\" must be a VM name");
        return;
    }
    if (!strcmp(bridge, "self") && !bridge_config_vm(br->cfg, vm)) {
        answer_error(done, opaque, "no VM named '%s' on this bridge", vm);
        return;
    }
    if (group_db_add(&br->db, group, bridge, vm) < 0)
        answer_error(done, opaque, "journal error");
    else
        done(opaque, 1, NULL);
}

int bridge_groups_command(struct bridge *br, const char *cmd, json_object *req,
                          bridge_lc_done_fn done, void *opaque)
{
    return bridge_groups_command_from(br, NULL, cmd, req, done, opaque);
}

int bridge_groups_command_from(struct bridge *br, const char *origin, const char *cmd,
                               json_object *req, bridge_lc_done_fn done, void *opaque)
{
    struct bridge_groups *g = br->groups;

    if (strncmp(cmd, "group-", 6))
        return 0;
    if (!g) {
        answer_error(done, opaque, "groups are not set up on this bridge");
        return 1;
    }
    cmd += 6;
    if (origin && strcmp(cmd, "prepare") && strcmp(cmd, "commit") && strcmp(cmd, "abort")) {
        answer_error(done, opaque, "only group-prepare, -commit and -abort from another host");
        return 1;
    }
    if (!strcmp(cmd, "create") || !strcmp(cmd, "add"))
        group_edit(g, cmd[0] == 'c', req, done, opaque);
    else if (!strcmp(cmd, "show"))
        group_show(g, req, done, opaque);
    else if (!strcmp(cmd, "suspend") || !strcmp(cmd, "resume"))
        control_start(g, cmd[0] == 's' ? BRIDGE_LC_SUSPEND : BRIDGE_LC_RESUME, req, done, opaque);
    else if (!strcmp(cmd, "prepare"))
        do_prepare(g, origin, req, done, opaque);
    else if (!strcmp(cmd, "commit"))
        do_commit(g, req, done, opaque);
    else if (!strcmp(cmd, "abort"))
        do_abort(g, req, done, opaque);
    else
        answer_error(done, opaque, "unknown group command");
    return 1;
}

void bridge_groups_forget(struct bridge *br, void *opaque)
{
    struct bridge_groups *g = br->groups;

    if (!g)
        return;
    for (int i = 0; i < GROUP_HANDLES_MAX; i++)
        if (g->ops[i].opaque == opaque)
            g->ops[i].done = NULL;
    for (int i = 0; i < GROUP_RUNS_MAX; i++)
        if (g->runs[i].opaque == opaque)
            g->runs[i].done = NULL;
}

void bridge_groups_tick(struct bridge *br, double now)
{
    if (!br->groups)
        return;
    group_peer_tick(br, now);
    sweep(br->groups);
}

int bridge_groups_init(struct bridge *br)
{
    struct bridge_groups *g = calloc(1, sizeof(*g));

    if (!g)
        return -1;
    g->br = br;
    for (int i = 0; i < GROUP_HANDLES_MAX; i++) {
        g->ops[i].g = g;
        g->ops[i].tfd = -1;
    }
    br->groups = g;
    return 0;
}

void bridge_groups_free(struct bridge *br)
{
    struct bridge_groups *g = br->groups;

    if (!g)
        return;
    for (int i = 0; i < GROUP_RUNS_MAX; i++)
        if (g->runs[i].in_use)
            run_free(&g->runs[i]);
    group_peer_close_all(br);
    for (int i = 0; i < GROUP_HANDLES_MAX; i++) {
        if (!g->ops[i].in_use)
            continue;
        /* a suspend or resume still running answers its VM's op later (or at the VM's
         * teardown): it must not reach this freed operation */
        for (size_t k = 0; k < g->ops[i].n; k++)
            bridge_managed_forget(br, &g->ops[i].v[k]);
        local_op_free(&g->ops[i]);
    }
    free(g);
    br->groups = NULL;
}
