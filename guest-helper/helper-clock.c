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
 * is ignored), so a replayed message cannot move the clock back.
 *
 * Latency: the host reads its clock just before it writes the message. The
 * message then needs the one-way trip host -> QEMU -> guest -> helper; we add
 * half the round trip of our last Hello -> Welcome (measured with
 * CLOCK_MONOTONIC; ~0.4 ms under TCG here), capped at 20 ms.
 */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "helper-bus.h"
#include "helper-hooks.h"
#include "helper.h"
#include "vms-log.h"

#define CLOCK_DELAY_CAP_NS 20000000ll

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

void helper_clock_sync(struct helper *h, uint64_t host_ns, const char *reason, int allow_backward,
                       const char *request_id)
{
    uint64_t delay = h->hooks.clock_delay_ns;
    int64_t target, guest, corr;
    struct timespec ts;

    if (h->cfg.clock_sync == HELPER_CLOCK_OFF) {
        vms_debug(NULL, request_id, "clock (%s): clock_sync = no, not set", reason);
        return;
    }
    if (host_ns == 0 || host_ns > (uint64_t)INT64_MAX / 2) {
        vms_warn(NULL, request_id, "clock (%s): implausible host time %llu ignored", reason,
                 (unsigned long long)host_ns);
        return;
    }
    if (delay > (uint64_t)CLOCK_DELAY_CAP_NS)
        delay = CLOCK_DELAY_CAP_NS;
    target = (int64_t)host_ns + (int64_t)delay;
    guest = realtime_ns();
    corr = target - guest;
    switch (helper_clock_plan(corr, allow_backward, (int64_t)h->cfg.clock_min_step_ms * 1000000)) {
    case CLOCK_SKIP_SMALL:
        vms_debug(NULL, request_id, "clock (%s): guest off by %+.6f s, under clock_min_step_ms",
                  reason, corr / 1e9);
        return;
    case CLOCK_REFUSE_BACKWARD:
        vms_warn(NULL, request_id,
                 "clock (%s): guest is %.6f s AHEAD of the host; not moving time backwards "
                 "(only a restore may)",
                 reason, -corr / 1e9);
        return;
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
            return;
        }
    }
    h->hooks.clock_steps++;
    h->hooks.last_correction_ns = corr;
    vms_info(NULL, request_id, "clock (%s): %s guest clock by %+.6f s (one-way delay %.3f ms)",
             reason, h->cfg.clock_sync == HELPER_CLOCK_ON ? "stepped" : "dry-run: would step",
             corr / 1e9, delay / 1e6);
    helper_bus_emit_clock_corrected(h, corr, reason);
}
