/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * helper-hooks.h — consistent guest state across timeline changes (issue 8):
 * the guest clock (helper-clock.c) and the pre-save / post-restore hooks
 * (helper-hooks.c).
 *
 * Hooks run as child processes (fork/exec, own process group, output on a
 * pipe); the daemon's poll loop watches their pipes and reaps them on
 * SIGCHLD (signalfd), so the D-Bus loop never waits for a hook.
 */
#ifndef HELPER_HOOKS_H
#define HELPER_HOOKS_H

#include <stdint.h>
#include <sys/types.h>

#include "vms-proto.h"

struct helper;

enum helper_hook_kind { HOOK_PRE_SAVE = 0, HOOK_POST_RESTORE = 1, HOOK__COUNT };

#define HOOKS_MAX     64  /* executables run per directory */
#define HOOK_LINE_MAX 512 /* a longer output line is logged in pieces */

/* One directory's run: its executables, one at a time. */
struct helper_hookrun {
    int active;
    char request_id[VMS_STR_MAX + 1];
    char label[VMS_STR_MAX + 1];
    char state_id[VMS_STR_MAX + 1];
    uint64_t epoch;
    char (*names)[256]; /* sorted executable names */
    unsigned n, next;
    pid_t pid;  /* running hook, 0 if none */
    int out_fd; /* its stdout+stderr, -1 if none */
    char line[HOOK_LINE_MAX];
    size_t line_len;
    uint64_t deadline_ms;
    int killed;
    unsigned ok, failed, timed_out;
};

/* The save being prepared (Prepare received, Ready not sent yet). */
struct helper_prepare {
    int active;
    char request_id[VMS_REQUEST_ID_LEN + 1];
    uint64_t window_end_ms;    /* Inhibit accepted at least until then */
    uint64_t host_deadline_ms; /* the host saves anyway after this: Inhibit is too late */
    /* listener connections told by PrepareSave that have not said Proceed (nor gone):
     * when none is left the window ends early */
    char (*waiting)[VMS_STR_MAX + 1];
    unsigned n_waiting;
};

struct helper_hooks {
    struct helper_hookrun run[HOOK__COUNT];
    struct helper_prepare prep;
    /* clock */
    uint64_t clock_delay_ns; /* estimated one-way host->guest delay (Hello/Welcome RTT / 2) */
    uint64_t hello_sent_ns;  /* CLOCK_MONOTONIC of the last Hello */
    uint64_t clock_steps;    /* corrections applied (or signalled in dry-run) */
    int64_t last_correction_ns;
    int64_t dry_offset_ns; /* clock_sync = dry-run: the steps we would have made */
    /* a restore in progress: Timeline seen; Restored is emitted when its clock is refined */
    int restore_pending;
    char restore_state[VMS_STR_MAX + 1];
    char restore_request[VMS_STR_MAX + 1];
    uint64_t restore_epoch;
    /* a clock step being refined by Hello -> Welcome round trips (after a restore, or a
     * resume that stepped the clock: the guest is slow for a while after both, so the delay
     * of the message that carried the host's time is unknown; a round trip bounds it) */
    struct helper_clock_refine {
        int active;
        int stepping;       /* clock_step from a refining Welcome: its round trip caps the delay */
        int allow_backward; /* a restore only */
        char reason[16];    /* restore, resume, save, io-error */
        char request[VMS_STR_MAX + 1];
        int64_t corr_ns;           /* total stepped so far */
        uint64_t deadline_ms;      /* then finish with what we have */
        uint64_t best_rtt_ns;      /* shortest Hello -> Welcome round trip seen */
        uint64_t rehello_above_ns; /* Hello again while the best round trip is longer */
        unsigned rounds;           /* Hellos sent again */
        uint64_t rehello_ms;       /* when to send the next of them (0: none due) */
        int probe_outstanding;     /* a Hello or TimeProbe sent while welcomed, for the clock */
        uint64_t probe_nonce;      /* that TimeProbe's nonce */
        uint64_t probe_sent_ns;    /* when it was sent (helper_mono_ns) */
    } refine;
};

#define RESTORE_WELCOME_WAIT_MS 2000 /* then finish the restore without the Welcome */
/* a resume's refinement ends sooner: its first step was already close */
#define RESUME_REFINE_WAIT_MS 1000

void helper_hooks_init(struct helper *h);
void helper_hooks_free(struct helper *h);

/* ---- clock (helper-clock.c) ---- */

enum helper_clock_action {
    CLOCK_APPLY,           /* step by the correction */
    CLOCK_SKIP_SMALL,      /* |correction| under clock_min_step_ms */
    CLOCK_REFUSE_BACKWARD, /* negative and backward steps are not allowed here */
};

/* What to do with a correction of @correction_ns (host - guest). Pure: unit-tested. */
enum helper_clock_action helper_clock_plan(int64_t correction_ns, int allow_backward,
                                           int64_t min_step_ns);

/*
 * The host said its CLOCK_REALTIME was @host_ns when it sent a message
 * (@reason: connect, resume, save, io-error, restore). Add the estimated
 * one-way delay, compare with the guest's clock, and step it if the plan says
 * so (backward only with @allow_backward: restore). Logs, emits ClockCorrected.
 */
void helper_clock_sync(struct helper *h, uint64_t host_ns, const char *reason, int allow_backward,
                       const char *request_id);

/*
 * A restore (Timeline, or a Welcome with a newer epoch): step the clock now
 * from @time_ns (0: none; coarse: the restored guest is slow to read its
 * port, so the message may have waited), then refine it from the Welcomes
 * that answer our next Hellos (helper_clock_welcome); then emit one
 * ClockCorrected(total, "restore"), run post-restore.d and emit Restored.
 */
void helper_restore_begin(struct helper *h, const char *state_id, uint64_t epoch,
                          const char *request_id, uint64_t time_ns);
/* Finish a pending restore: ClockCorrected, post-restore.d, Restored. */
void helper_restore_finish(struct helper *h);

/*
 * The host's Clock after a pause (@reason: resume, save, io-error) said its
 * CLOCK_REALTIME was @host_ns: step forward now with the steady delay
 * estimate, then refine with Hello -> Welcome round trips (a resumed guest,
 * above all one restored from a checkpoint into a fresh QEMU, is slow for a
 * while, so the Clock's delay can be tens of ms against the steady 2 ms cap);
 * one ClockCorrected(total, @reason) when done. Without a refinement (clock
 * sync off, or a restore refining already) it is helper_clock_sync().
 * Returns 1 when the caller must send a clock-only Hello now.
 */
int helper_clock_resume(struct helper *h, uint64_t host_ns, const char *reason);

/*
 * A Welcome answered our Hello, or a Time our TimeProbe (@w carries the host's
 * time_ns; the question left at @sent_ns, helper_mono_ns). While a refinement
 * is active: when its round trip is the shortest so far, step from
 * its time with half that round trip as the delay (capped at 20 ms); while the
 * best round trip is over refine.rehello_above_ns, ask again (sets
 * refine.rehello_ms, at most RESTORE_REFINE_ROUNDS times before the
 * deadline), else finish (helper_clock_refine_finish). Returns 1 when a
 * refinement took the Welcome, 0 when none is active.
 */
int helper_clock_welcome(struct helper *h, const struct vms_msg *w, uint64_t sent_ns);
/* End the active refinement (its Welcome, or its deadline): one ClockCorrected with
 * the total, then the restore's hooks and Restored when it was a restore. */
void helper_clock_refine_finish(struct helper *h);

/* CLOCK_MONOTONIC in ns. */
uint64_t helper_mono_ns(void);

/* ---- hooks (helper-hooks.c) ---- */

/* Prepare from the bridge: emit PrepareSave, run pre-save.d, then send Ready. */
void helper_hooks_prepare(struct helper *h, const struct vms_msg *m);
/*
 * A listener vetoes the save @request_id with @reason. Returns 0 (Ready with
 * status inhibited sent) or -1 when no save with that id is being prepared.
 */
int helper_hooks_inhibit(struct helper *h, const char *request_id, const char *reason, long uid);
/*
 * Listener connection @owner has nothing to veto for the save @request_id
 * (it flushed what it needed): the prepare window stops waiting for it, and
 * ends as soon as no listener connection is left to wait for. Returns 0, or
 * -1 when no save with that id is being prepared.
 */
int helper_hooks_proceed(struct helper *h, const char *request_id, const char *owner);
/* @owner's connection closed: a save being prepared no longer waits for it. */
void helper_hooks_owner_gone(struct helper *h, const char *owner);
/* A new timeline: run post-restore.d, then emit Restored(state_id, epoch). */
void helper_hooks_restored(struct helper *h, const char *state_id, uint64_t epoch,
                           const char *request_id);

/* SIGCHLD: reap hooks. */
void helper_hooks_sigchld(struct helper *h);
/* A hook's output pipe is readable (or hung up). */
void helper_hooks_output(struct helper *h, int fd);
/* Pipes to poll (up to HOOK__COUNT); returns how many were written to @fds. */
int helper_hooks_fds(struct helper *h, int *fds);
/* Timeouts; returns ms until the next deadline (-1 none). */
int helper_hooks_timers(struct helper *h);

#endif
