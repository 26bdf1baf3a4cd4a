/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * helper-clock.c — set the guest's wall clock from the host's (issue 8).
 *
 * Why a step and not a slew: the guest's CLOCK_REALTIME falls behind by the
 * whole pause after stop/cont or a save, and a restore rewinds it to the
 * snapshot's moment; nothing in the guest fixes that (qemu-notes "Clocks").
 * adjtimex/adjtime slew at most 500 ppm (0.5 ms per second), so 5 s of error
 * would take ~2.8 hours to absorb, during which TLS, tokens and schedulers see
 * the wrong time. We step with clock_settime(CLOCK_REALTIME) (CAP_SYS_TIME).
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
 * by at most 0.5 s outside a restore (at boot the RTC gives whole seconds) is
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
/* A guest AHEAD of the host by at most this much (typically at boot: the RTC has whole
 * seconds) is slewed back with adjtime() — time slows down, it never goes back. */
#define CLOCK_SLEW_MAX_NS 500000000ll
/* Right after a restore the guest is slow (libvirt's revert even starts a new QEMU, whose TCG
 * translates all guest code again): the first round trip can take hundreds of ms, and its half
 * (capped above) is then a poor bound — measured under libvirt: 380 ms, the guest left 55 ms
 * behind. While the best round trip of the restore is over twice the cap, Hello again after
 * a short gap, at most this many times within RESTORE_WELCOME_WAIT_MS. */
#define RESTORE_REFINE_ROUNDS 4
#define RESTORE_REFINE_GAP_MS 100

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

/* Step the clock; returns the correction applied (0: none). Signals it when @emit. */
static int64_t clock_step(struct helper *h, uint64_t host_ns, const char *reason,
                          int allow_backward, const char *request_id, int emit)
{
    uint64_t delay = h->hooks.clock_delay_ns;
    int64_t target, guest, corr;
    struct timespec ts;

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
        (uint64_t)(h->hooks.restore_refining ? CLOCK_DELAY_CAP_NS : CLOCK_DELAY_STEADY_CAP_NS))
        delay = h->hooks.restore_refining ? CLOCK_DELAY_CAP_NS : CLOCK_DELAY_STEADY_CAP_NS;
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
        /* apply the correction to a fresh reading: the computation above took time */
        int64_t now = realtime_ns() + corr;
        ts.tv_sec = (time_t)(now / 1000000000ll);
        ts.tv_nsec = (long)(now % 1000000000ll);
        if (clock_settime(CLOCK_REALTIME, &ts) < 0) {
            vms_err(NULL, request_id, "clock (%s): cannot step by %+.6f s: %s%s", reason,
                    corr / 1e9, strerror(errno),
                    errno == EPERM ? " (needs CAP_SYS_TIME: run the helper as root)" : "");
            return 0;
        }
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

void helper_restore_begin(struct helper *h, const char *state_id, uint64_t epoch,
                          const char *request_id, uint64_t time_ns)
{
    struct helper_hooks *k = &h->hooks;

    if (k->restore_pending)
        helper_restore_finish(h); /* an older restore never got its Welcome */
    k->restore_pending = 1;
    snprintf(k->restore_state, sizeof(k->restore_state), "%s", state_id ? state_id : "");
    snprintf(k->restore_request, sizeof(k->restore_request), "%s", request_id ? request_id : "");
    k->restore_epoch = epoch;
    k->restore_corr_ns = 0;
    k->restore_deadline_ms = helper_now_ms() + RESTORE_WELCOME_WAIT_MS;
    k->restore_best_rtt_ns = UINT64_MAX;
    k->restore_rounds = 0;
    k->restore_rehello_ms = 0;
    if (time_ns)
        k->restore_corr_ns += clock_step(h, time_ns, "restore", 1,
                                         k->restore_request[0] ? k->restore_request : NULL, 0);
}

int helper_restore_welcome(struct helper *h, const struct vms_msg *w)
{
    struct helper_hooks *k = &h->hooks;

    if (!k->restore_pending)
        return 0;
    if (vms_msg_has(w, VMS_F_TIME_NS)) {
        uint64_t rtt = helper_mono_ns() - k->hello_sent_ns;

        if (rtt < k->restore_best_rtt_ns) {
            /* this Welcome's delay is bounded by the round trip just measured: use it, not
             * the session's best (the restored guest is slow for a while). A shorter round
             * trip is a tighter bound: its step replaces what the earlier ones guessed. */
            uint64_t best = k->clock_delay_ns;
            k->restore_best_rtt_ns = rtt;
            k->clock_delay_ns = rtt / 2;
            k->restore_refining = 1;
            k->restore_corr_ns += clock_step(h, w->time_ns, "restore", 1,
                                             k->restore_request[0] ? k->restore_request : NULL, 0);
            k->restore_refining = 0;
            k->clock_delay_ns = best;
        }
        if (k->restore_best_rtt_ns > 2 * (uint64_t)CLOCK_DELAY_CAP_NS &&
            k->restore_rounds < RESTORE_REFINE_ROUNDS &&
            helper_now_ms() + RESTORE_REFINE_GAP_MS < k->restore_deadline_ms) {
            k->restore_rounds++;
            k->restore_rehello_ms = helper_now_ms() + RESTORE_REFINE_GAP_MS;
            vms_debug(NULL, k->restore_request[0] ? k->restore_request : NULL,
                      "clock (restore): round trip %.1f ms; asking again in %d ms", rtt / 1e6,
                      RESTORE_REFINE_GAP_MS);
            return 1;
        }
    }
    helper_restore_finish(h);
    return 1;
}

void helper_restore_finish(struct helper *h)
{
    struct helper_hooks *k = &h->hooks;

    if (!k->restore_pending)
        return;
    k->restore_pending = 0;
    if (k->restore_corr_ns) {
        vms_info(NULL, k->restore_request[0] ? k->restore_request : NULL,
                 "clock (restore): corrected by %+.6f s in all", k->restore_corr_ns / 1e9);
        helper_bus_emit_clock_corrected(h, k->restore_corr_ns, "restore");
    }
    helper_hooks_restored(h, k->restore_state, k->restore_epoch,
                          k->restore_request[0] ? k->restore_request : NULL);
}
