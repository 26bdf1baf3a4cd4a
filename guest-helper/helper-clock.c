/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * helper-clock.c — set the guest's wall clock from the host's (issue 8).
 *
 * Why a step and not a slew: the guest's CLOCK_REALTIME falls behind by the
 * whole pause after stop/cont or a save, and a restore rewinds it to the
 * snapshot's moment; nothing in the guest fixes that (qemu-notes "Clocks").
 * adjtimex/adjtime slew at most 500 ppm (0.5 ms per second), so 5 s of error
 * would take ~2.8 hours to absorb, during which TLS, tokens and schedulers see
 * the wrong time. We step with clock_settime(CLOCK_REALTIME) (CAP_SYS_TIME), measure the
 * step against CLOCK_MONOTONIC and report what the clock moved (step_realtime).
 * CLOCK_MONOTONIC is not touched, so timers and timeouts are unaffected.
 *
 * Direction: forward only, except on a restore (Timeline). After a pause the
 * guest is behind, so the step is forward; a negative correction there means
 * the guest runs ahead of the host (or a stale message), and moving wall time
 * backwards breaks programs that assume it grows, so it is refused and
 * logged. After a restore the guest's clock is a copy of the snapshot's
 * moment: it is normally far behind (positive step), and whatever the sign,
 * the host is the reference — the restored timeline continues from the
 * host's now. Timelines are replay-proof (a Timeline whose epoch is not newer
 * is ignored), so a replayed message cannot move the clock back. A guest ahead
 * by at most 1 s outside a restore (at boot: see CLOCK_SLEW_MAX_NS) is
 * slewed back with adjtime(): the wall clock slows, it never jumps back.
 *
 * Latency: the host reads its clock just before it writes the message. The
 * message then needs the one-way trip host -> QEMU -> guest -> helper; we add
 * half the smallest Hello -> Welcome round trip (CLOCK_MONOTONIC), capped at
 * 2 ms (that round trip includes both daemons' work; the port's own round trip
 * is ~0.9 ms under TCG here). For the Welcome that refines a restore we use
 * half of that very round trip, capped at 20 ms: the restored guest is slow.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "helper-bus.h"
#include "helper-hooks.h"
#include "helper.h"
#include "vms-log.h"

#define CLOCK_DELAY_CAP_NS 20000000ll
/* Steady state: half the Hello -> Welcome round trip over-estimates the one-way delay (it
 * includes both daemons' work; the bare port round trip is ~0.9 ms under TCG here), so cap
 * it lower. Right after a restore the guest itself is slow and the round trip is the bound. */
#define CLOCK_DELAY_STEADY_CAP_NS 2000000ll
/* A guest AHEAD of the host by at most this much is slewed back with adjtime() — time slows
 * down, it never goes back. Typically at boot: the RTC has whole seconds and the kernel sets
 * the clock to the RTC's second + 0.5 s, so a booted guest is up to ~0.5 s ahead; 0.51 s was
 * seen under TCG (bench-saverestore), left uncorrected by the 0.5 s this cap used to be. */
#define CLOCK_SLEW_MAX_NS 1000000000ll
/* Right after a restore the guest is slow (libvirt's revert even starts a new QEMU, whose TCG
 * translates all guest code again): the first round trip can take hundreds of ms, and its half
 * (capped above) is then a poor bound — measured under libvirt: 380 ms, the guest left 55 ms
 * behind. While the best round trip of the restore is over twice the cap, Hello again after
 * a short gap, at most this many times within RESTORE_WELCOME_WAIT_MS. The gap is short:
 * Restored and the restored apps' completions wait for the refinement, and the first round
 * trip is what warms the code the next one runs (a 100 ms gap was 100 ms of every such
 * restore; the second round trip took 2 ms, bench-tcg.py). */
#define RESTORE_REFINE_ROUNDS 8
#define RESTORE_REFINE_GAP_MS 10

uint64_t helper_mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

enum helper_clock_action helper_clock_plan(int64_t correction_ns, int allow_backward,
                                           int64_t min_step_ns)
{
    int64_t mag = correction_ns < 0 ? -correction_ns : correction_ns;

    if (mag < min_step_ns || correction_ns == 0)
        return CLOCK_SKIP_SMALL;
    if (correction_ns < 0 && !allow_backward)
        return CLOCK_REFUSE_BACKWARD;
    return CLOCK_APPLY;
}

static int64_t realtime_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* CLOCK_REALTIME - CLOCK_MONOTONIC: what a step moves, and nothing else does (a slew moves
 * it by 0.5 ms/s at most). Read between two monotonic readings, the closest pair of a few
 * tries, so a vCPU descheduled between the readings does not count. */
static int64_t wall_minus_mono_ns(void)
{
    int64_t best = 0, best_spread = INT64_MAX;

    for (int i = 0; i < 4 && best_spread > 20000; i++) {
        int64_t m0 = (int64_t)helper_mono_ns();
        int64_t w = realtime_ns();
        int64_t m1 = (int64_t)helper_mono_ns();

        if (m1 - m0 < best_spread) {
            best_spread = m1 - m0;
            best = w - (m0 + (m1 - m0) / 2);
        }
    }
    return best;
}

#define CLOCK_STEP_TOLERANCE_NS 1000000ll
#define CLOCK_STEP_TRIES        3

/* Move CLOCK_REALTIME by @corr ns (see the top of the file); *@applied is how far it moved.
 * clock_settime sets a value computed from a reading: a vCPU descheduled between the two
 * shortens the step by the time it was away (10.9 ms seen under libvirt, CI on d901655), so
 * the step is measured against CLOCK_MONOTONIC and the shortfall stepped again.
 * (clock_adjtime(ADJ_SETOFFSET) has no such window, but in the TCG guests of check-groups
 * their clocks then read 0.7-0.84 s ahead of the host for seconds at a time; 06a1e00.)
 * 0, or -1 with errno set (nothing moved, or *@applied says how far). */
static int step_realtime(int64_t corr, int64_t *applied)
{
    int64_t base = wall_minus_mono_ns();
    struct timespec ts;

    *applied = 0;
    for (int i = 0; i < CLOCK_STEP_TRIES; i++) {
        int64_t now = realtime_ns() + (corr - *applied);

        ts.tv_sec = (time_t)(now / 1000000000ll);
        ts.tv_nsec = (long)(now % 1000000000ll);
        if (clock_settime(CLOCK_REALTIME, &ts) < 0)
            return -1;
        *applied = wall_minus_mono_ns() - base;
        if (llabs(corr - *applied) < CLOCK_STEP_TOLERANCE_NS)
            break;
    }
    return 0;
}

/* Step the clock; returns the correction applied (0: none). Signals it when @emit. */
static int64_t clock_step(struct helper *h, uint64_t host_ns, const char *reason,
                          int allow_backward, const char *request_id, int emit)
{
    uint64_t delay = h->hooks.clock_delay_ns;
    int64_t target, guest, corr;

    if (h->cfg.clock_sync == HELPER_CLOCK_OFF) {
        vms_debug(NULL, request_id, "clock (%s): clock_sync = no, not set", reason);
        return 0;
    }
    if (host_ns == 0 || host_ns > (uint64_t)INT64_MAX / 2) {
        vms_warn(NULL, request_id, "clock (%s): implausible host time %llu ignored", reason,
                 (unsigned long long)host_ns);
        return 0;
    }
    if (delay >
        (uint64_t)(h->hooks.refine.stepping ? CLOCK_DELAY_CAP_NS : CLOCK_DELAY_STEADY_CAP_NS))
        delay = h->hooks.refine.stepping ? CLOCK_DELAY_CAP_NS : CLOCK_DELAY_STEADY_CAP_NS;
    target = (int64_t)host_ns + (int64_t)delay;
    guest = realtime_ns() + h->hooks.dry_offset_ns; /* dry-run: as if we had stepped */
    corr = target - guest;
    switch (helper_clock_plan(corr, allow_backward, (int64_t)h->cfg.clock_min_step_ms * 1000000)) {
    case CLOCK_SKIP_SMALL:
        vms_debug(NULL, request_id, "clock (%s): guest off by %+.6f s, under clock_min_step_ms",
                  reason, corr / 1e9);
        return 0;
    case CLOCK_REFUSE_BACKWARD:
        if (-corr <= CLOCK_SLEW_MAX_NS && h->cfg.clock_sync == HELPER_CLOCK_ON) {
            struct timeval tv = {.tv_sec = 0, .tv_usec = (suseconds_t)(corr / 1000)};
            if (adjtime(&tv, NULL) == 0) {
                vms_info(NULL, request_id,
                         "clock (%s): guest is %.6f s ahead of the host; slewing it back "
                         "(adjtime, at most 0.5 ms/s): time never steps backwards here",
                         reason, -corr / 1e9);
                return 0;
            }
        }
        vms_warn(NULL, request_id,
                 "clock (%s): guest is %.6f s AHEAD of the host; not moving time backwards "
                 "(only a restore may)",
                 reason, -corr / 1e9);
        return 0;
    case CLOCK_APPLY:
        break;
    }
    if (h->cfg.clock_sync == HELPER_CLOCK_ON) {
        int64_t applied;

        if (step_realtime(corr, &applied) < 0) {
            vms_err(NULL, request_id, "clock (%s): cannot step by %+.6f s: %s%s", reason,
                    corr / 1e9, strerror(errno),
                    errno == EPERM ? " (needs CAP_SYS_TIME: run the helper as root)" : "");
            if (applied == 0)
                return 0;
        }
        if (llabs(applied - corr) >= CLOCK_STEP_TOLERANCE_NS)
            vms_warn(NULL, request_id, "clock (%s): stepped by %+.6f s, not %+.6f s", reason,
                     applied / 1e9, corr / 1e9);
        corr = applied; /* what the clock moved is what the apps are told */
    } else {
        h->hooks.dry_offset_ns += corr;
    }
    h->hooks.clock_steps++;
    h->hooks.last_correction_ns = corr;
    vms_info(NULL, request_id, "clock (%s): %s guest clock by %+.6f s (one-way delay %.3f ms)",
             reason, h->cfg.clock_sync == HELPER_CLOCK_ON ? "stepped" : "dry-run: would step",
             corr / 1e9, delay / 1e6);
    if (emit)
        helper_bus_emit_clock_corrected(h, corr, reason);
    return corr;
}

void helper_clock_sync(struct helper *h, uint64_t host_ns, const char *reason, int allow_backward,
                       const char *request_id)
{
    clock_step(h, host_ns, reason, allow_backward, request_id, 1);
}

static const char *refine_request(const struct helper_clock_refine *r)
{
    return r->request[0] ? r->request : NULL;
}

static void refine_start(struct helper *h, const char *reason, const char *request_id,
                         int allow_backward, uint64_t wait_ms, uint64_t rehello_above_ns)
{
    struct helper_clock_refine *r = &h->hooks.refine;

    memset(r, 0, sizeof(*r));
    r->active = 1;
    r->allow_backward = allow_backward;
    snprintf(r->reason, sizeof(r->reason), "%s", reason);
    snprintf(r->request, sizeof(r->request), "%s", request_id ? request_id : "");
    r->deadline_ms = helper_now_ms() + wait_ms;
    r->best_rtt_ns = UINT64_MAX;
    r->rehello_above_ns = rehello_above_ns;
}

void helper_restore_begin(struct helper *h, const char *state_id, uint64_t epoch,
                          const char *request_id, uint64_t time_ns)
{
    struct helper_hooks *k = &h->hooks;

    if (k->restore_pending)
        helper_restore_finish(h); /* an older restore never got its Welcome */
    else if (k->refine.active)
        helper_clock_refine_finish(h); /* a resume's refinement: this restore supersedes it */
    k->restore_pending = 1;
    snprintf(k->restore_state, sizeof(k->restore_state), "%s", state_id ? state_id : "");
    snprintf(k->restore_request, sizeof(k->restore_request), "%s", request_id ? request_id : "");
    k->restore_epoch = epoch;
    refine_start(h, "restore", request_id, 1, RESTORE_WELCOME_WAIT_MS, 2 * CLOCK_DELAY_CAP_NS);
    if (time_ns)
        k->refine.corr_ns += clock_step(h, time_ns, "restore", 1, refine_request(&k->refine), 0);
}

int helper_clock_resume(struct helper *h, uint64_t host_ns, const char *reason)
{
    struct helper_hooks *k = &h->hooks;

    if (h->cfg.clock_sync == HELPER_CLOCK_OFF || k->refine.active) {
        /* nothing to refine, or a restore's refinement owns the Hellos: one plain step */
        helper_clock_sync(h, host_ns, reason, 0, NULL);
        return 0;
    }
    /* re-Hello while the round trip is over twice the steady cap: the bound is then worse
     * than what the steady state promises */
    refine_start(h, reason, NULL, 0, RESUME_REFINE_WAIT_MS, 2 * CLOCK_DELAY_STEADY_CAP_NS);
    k->refine.corr_ns += clock_step(h, host_ns, reason, 0, NULL, 0);
    return 1;
}

int helper_clock_welcome(struct helper *h, const struct vms_msg *w, uint64_t sent_ns)
{
    struct helper_hooks *k = &h->hooks;
    struct helper_clock_refine *r = &k->refine;

    if (!r->active)
        return 0;
    if (vms_msg_has(w, VMS_F_TIME_NS)) {
        uint64_t rtt = helper_mono_ns() - sent_ns;

        if (rtt < r->best_rtt_ns) {
            /* this Welcome's delay is bounded by the round trip just measured: use it, not
             * the session's best (the guest is slow for a while). A shorter round trip is a
             * tighter bound: its step replaces what the earlier ones guessed. */
            uint64_t best = k->clock_delay_ns;
            r->best_rtt_ns = rtt;
            k->clock_delay_ns = rtt / 2;
            r->stepping = 1;
            r->corr_ns +=
                clock_step(h, w->time_ns, r->reason, r->allow_backward, refine_request(r), 0);
            r->stepping = 0;
            k->clock_delay_ns = best;
        }
        if (r->best_rtt_ns > r->rehello_above_ns && r->rounds < RESTORE_REFINE_ROUNDS &&
            helper_now_ms() + RESTORE_REFINE_GAP_MS < r->deadline_ms) {
            r->rounds++;
            r->rehello_ms = helper_now_ms() + RESTORE_REFINE_GAP_MS;
            vms_debug(NULL, refine_request(r),
                      "clock (%s): round trip %.1f ms; asking again in %d ms", r->reason, rtt / 1e6,
                      RESTORE_REFINE_GAP_MS);
            return 1;
        }
    }
    helper_clock_refine_finish(h);
    return 1;
}

void helper_clock_refine_finish(struct helper *h)
{
    struct helper_clock_refine *r = &h->hooks.refine;

    if (!r->active)
        return;
    r->active = 0;
    r->rehello_ms = 0;
    if (r->corr_ns) {
        vms_info(NULL, refine_request(r),
                 "clock (%s): corrected by %+.6f s in all (best round "
                 "trip %.1f ms)",
                 r->reason, r->corr_ns / 1e9,
                 r->best_rtt_ns == UINT64_MAX ? -1.0 : r->best_rtt_ns / 1e6);
        helper_bus_emit_clock_corrected(h, r->corr_ns, r->reason);
    }
    if (h->hooks.restore_pending)
        helper_restore_finish(h);
}

void helper_restore_finish(struct helper *h)
{
    struct helper_hooks *k = &h->hooks;

    if (!k->restore_pending)
        return;
    if (k->refine.active) {
        helper_clock_refine_finish(h); /* comes back here with the clock settled */
        return;
    }
    k->restore_pending = 0;
    helper_hooks_restored(h, k->restore_state, k->restore_epoch,
                          k->restore_request[0] ? k->restore_request : NULL);
}
