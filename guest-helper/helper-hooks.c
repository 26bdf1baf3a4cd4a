/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * helper-hooks.c — pre-save.d / post-restore.d hooks and the Prepare/Ready
 * exchange (helper-hooks.h).
 *
 * Save:    Prepare{request_id, label, timeout_ms} from the bridge → broadcast
 *          PrepareSave(request_id, label) and start pre-save.d → Ready{status 0}
 *          once the hooks are done and prepare_window_ms has passed (no wait
 *          when no listener is registered: nobody could inhibit; the window
 *          ends early once every listener connection said Proceed), or at once
 *          Ready{status 14 inhibited, message = reason} when a listener calls
 *          Inhibit(request_id, reason). A hook that outlives hook_timeout_ms is
 *          killed (SIGKILL to its process group) and the next one runs: the
 *          save goes on. The bridge itself never waits longer than its
 *          prepare_timeout_ms.
 * Restore: Timeline → (clock stepped by the caller) → post-restore.d → Restored.
 *
 * One thread: children are started with fork/exec, their output read from a
 * pipe in the daemon's poll loop, their exit seen through SIGCHLD (signalfd)
 * and the timers. Nothing here blocks.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper-bus.h"
#include "helper-hooks.h"
#include "helper.h"
#include "vms-log.h"

static const char *const kind_dir[HOOK__COUNT] = {"pre-save.d", "post-restore.d"};
static const char *const kind_name[HOOK__COUNT] = {"pre-save", "post-restore"};

void helper_hooks_init(struct helper *h)
{
    memset(&h->hooks, 0, sizeof(h->hooks));
    for (int k = 0; k < HOOK__COUNT; k++)
        h->hooks.run[k].out_fd = -1;
}

static void run_close_pipe(struct helper_hookrun *r)
{
    if (r->out_fd >= 0)
        close(r->out_fd);
    r->out_fd = -1;
}

static void prepare_forget_waiting(struct helper_prepare *p)
{
    free(p->waiting);
    p->waiting = NULL;
    p->n_waiting = 0;
}

/* The host has its Ready: no save is being prepared any more. */
static void prepare_end(struct helper_prepare *p)
{
    p->active = 0;
    prepare_forget_waiting(p);
}

void helper_hooks_free(struct helper *h)
{
    prepare_forget_waiting(&h->hooks.prep);
    for (int k = 0; k < HOOK__COUNT; k++) {
        struct helper_hookrun *r = &h->hooks.run[k];
        if (r->pid > 0) {
            kill(-r->pid, SIGKILL);
            waitpid(r->pid, NULL, 0);
        }
        run_close_pipe(r);
        free(r->names);
        r->names = NULL;
    }
}

/* run-parts rules: [A-Za-z0-9_.-], not starting with '.', not ending in '~'. */
static int hook_name_ok(const char *n)
{
    size_t len = strlen(n);

    if (!len || n[0] == '.' || len >= 256)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = n[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* Collect the executables of @dir, sorted. Returns their count (0 if none or no dir). */
static unsigned scan_dir(const char *dir, char (**out)[256])
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char(*names)[256] = NULL;
    unsigned n = 0;

    *out = NULL;
    if (!d)
        return 0;
    while ((e = readdir(d)) && n < HOOKS_MAX) {
        char path[PATH_MAX + 300];
        struct stat st;
        if (!hook_name_ok(e->d_name))
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode) || access(path, X_OK) < 0)
            continue;
        if (!names && !(names = calloc(HOOKS_MAX, sizeof(*names))))
            break;
        snprintf(names[n++], 256, "%s", e->d_name);
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof(*names), cmp_name);
    *out = names;
    return n;
}

static void log_line(struct helper_hookrun *r, int kind)
{
    r->line[r->line_len] = '\0';
    if (r->line_len)
        vms_info(NULL, r->request_id[0] ? r->request_id : NULL, "%s hook %s: %s", kind_name[kind],
                 r->names[r->next], r->line);
    r->line_len = 0;
}

/* Read what the hook wrote; at EOF close the pipe. */
static void run_read(struct helper_hookrun *r, int kind)
{
    char buf[1024];
    ssize_t n;

    while (r->out_fd >= 0) {
        n = read(r->out_fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            log_line(r, kind);
            run_close_pipe(r);
            return;
        }
        for (ssize_t i = 0; i < n; i++) {
            char c = buf[i];
            if (c == '\n' || r->line_len >= HOOK_LINE_MAX - 1) {
                log_line(r, kind);
                if (c == '\n')
                    continue;
            }
            r->line[r->line_len++] = (c < 0x20 && c != '\t') || c == 0x7f ? '?' : c;
        }
    }
}

static void run_finished(struct helper *h, int kind);

/* Start the next hook of @r; at the end of the list, finish the run. */
static void run_next(struct helper *h, int kind)
{
    struct helper_hookrun *r = &h->hooks.run[kind];

    while (r->next < r->n) {
        char path[PATH_MAX + 256], epoch[32];
        int p[2];
        pid_t pid;

        snprintf(path, sizeof(path), "%s/%s/%s", h->cfg.hooks_dir, kind_dir[kind],
                 r->names[r->next]);
        if (pipe2(p, O_CLOEXEC) < 0) {
            vms_err(NULL, r->request_id, "%s hook %s: pipe: %s", kind_name[kind], r->names[r->next],
                    strerror(errno));
            r->failed++;
            r->next++;
            continue;
        }
        snprintf(epoch, sizeof(epoch), "%llu", (unsigned long long)r->epoch);
        pid = fork();
        if (pid == 0) {
            sigset_t none;
            int devnull = open("/dev/null", O_RDONLY);
            /* the daemon blocks signals for its signalfd and ignores SIGPIPE: undo both */
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, NULL);
            signal(SIGPIPE, SIG_DFL);
            setpgid(0, 0); /* a timeout kills the hook and whatever it started */
            if (chdir("/") < 0)
                _exit(126);
            if (devnull >= 0)
                dup2(devnull, 0);
            dup2(p[1], 1);
            dup2(p[1], 2);
            setenv("VMSTATE_HOOK", kind_name[kind], 1);
            setenv("VMSTATE_REQUEST_ID", r->request_id, 1);
            if (kind == HOOK_PRE_SAVE) {
                setenv("VMSTATE_LABEL", r->label, 1);
            } else {
                setenv("VMSTATE_STATE_ID", r->state_id, 1);
                setenv("VMSTATE_EPOCH", epoch, 1);
            }
            execl(path, path, kind_name[kind], (char *)NULL);
            dprintf(2, "cannot execute %s: %s\n", path, strerror(errno));
            _exit(127);
        }
        close(p[1]);
        if (pid < 0) {
            vms_err(NULL, r->request_id, "%s hook %s: fork: %s", kind_name[kind], r->names[r->next],
                    strerror(errno));
            close(p[0]);
            r->failed++;
            r->next++;
            continue;
        }
        setpgid(pid, pid); /* also here: no race with the kill at the timeout */
        fcntl(p[0], F_SETFL, fcntl(p[0], F_GETFL) | O_NONBLOCK);
        r->pid = pid;
        r->out_fd = p[0];
        r->line_len = 0;
        r->killed = 0;
        r->deadline_ms = helper_now_ms() + h->cfg.hook_timeout_ms;
        vms_info(NULL, r->request_id[0] ? r->request_id : NULL, "%s hook %s started (pid %d)",
                 kind_name[kind], r->names[r->next], (int)pid);
        return;
    }
    run_finished(h, kind);
}

static void run_start(struct helper *h, int kind, const char *request_id, const char *label,
                      const char *state_id, uint64_t epoch)
{
    struct helper_hookrun *r = &h->hooks.run[kind];
    char dir[PATH_MAX + 32];

    if (r->active) {
        /* the previous run is superseded: stop its hook, do not wait for it */
        vms_warn(NULL, r->request_id, "%s hooks superseded by a new %s", kind_name[kind],
                 kind == HOOK_PRE_SAVE ? "save" : "restore");
        if (r->pid > 0)
            kill(-r->pid, SIGKILL); /* reaped by helper_hooks_sigchld (unknown pid) */
        run_close_pipe(r);
        r->pid = 0;
    }
    free(r->names);
    memset(r, 0, sizeof(*r));
    r->out_fd = -1;
    r->active = 1;
    snprintf(r->request_id, sizeof(r->request_id), "%s", request_id ? request_id : "");
    snprintf(r->label, sizeof(r->label), "%s", label ? label : "");
    snprintf(r->state_id, sizeof(r->state_id), "%s", state_id ? state_id : "");
    r->epoch = epoch;
    snprintf(dir, sizeof(dir), "%s/%s", h->cfg.hooks_dir, kind_dir[kind]);
    r->n = scan_dir(dir, &r->names);
    if (r->n)
        vms_info(NULL, r->request_id[0] ? r->request_id : NULL, "running %u %s hook(s) from %s",
                 r->n, kind_name[kind], dir);
    run_next(h, kind);
}

/* ---- Prepare / Ready ---- */

static void send_ready(struct helper *h, const char *request_id, uint32_t status, const char *msg)
{
    struct vms_msg m;

    vms_msg_init(&m, VMS_MSG_READY);
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, request_id);
    vms_msg_set_u64(&m, VMS_F_STATUS, status);
    if (msg && msg[0] && vms_valid_text(msg))
        vms_msg_set_str(&m, VMS_F_MESSAGE, msg);
    {
        /* our clock as we answer: a group suspend records the guest's time at its stop
         * from it (the stopped guest cannot be asked) */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        vms_msg_set_u64(&m, VMS_F_TIME_NS,
                        (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
    }
    vms_channel_send(&h->port_a, &m);
    vms_msg_clear(&m);
}

/* Ready when the pre-save hooks are done and the listeners' window has passed. */
static void prepare_maybe_ready(struct helper *h)
{
    struct helper_prepare *p = &h->hooks.prep;
    struct helper_hookrun *r = &h->hooks.run[HOOK_PRE_SAVE];
    char msg[128];

    if (!p->active || (r->active && !strcmp(r->request_id, p->request_id)) ||
        helper_now_ms() < p->window_end_ms)
        return;
    snprintf(msg, sizeof(msg), "pre-save hooks: %u ok, %u failed, %u killed at the timeout", r->ok,
             r->failed, r->timed_out);
    vms_info(NULL, p->request_id, "ready for the save (%s)", msg);
    send_ready(h, p->request_id, VMS_STATUS_OK, msg);
    prepare_end(p);
}

/* The distinct listener connections, to wait for their Proceed. */
static void prepare_collect_waiting(struct helper *h, struct helper_prepare *p)
{
    prepare_forget_waiting(p);
    p->waiting = calloc(h->n_listeners ? h->n_listeners : 1, sizeof(*p->waiting));
    if (!p->waiting)
        return; /* then the window runs its full length */
    for (unsigned i = 0; i < h->n_listeners; i++) {
        unsigned k = 0;
        while (k < p->n_waiting && strcmp(p->waiting[k], h->listeners[i].owner))
            k++;
        if (k == p->n_waiting)
            snprintf(p->waiting[p->n_waiting++], VMS_STR_MAX + 1, "%s", h->listeners[i].owner);
    }
}

/* Stop waiting for @owner; 1 if it was waited for. */
static int prepare_unwait(struct helper *h, const char *owner)
{
    struct helper_prepare *p = &h->hooks.prep;

    for (unsigned k = 0; p->active && p->waiting && k < p->n_waiting; k++) {
        if (strcmp(p->waiting[k], owner))
            continue;
        memcpy(p->waiting[k], p->waiting[--p->n_waiting], sizeof(*p->waiting));
        if (p->n_waiting == 0) {
            vms_debug(NULL, p->request_id, "every listener is ready: the window ends");
            p->window_end_ms = helper_now_ms();
        }
        return 1;
    }
    return 0;
}

void helper_hooks_prepare(struct helper *h, const struct vms_msg *m)
{
    struct helper_prepare *p = &h->hooks.prep;
    unsigned window = h->cfg.prepare_window_ms;

    if (p->active && strcmp(p->request_id, m->request_id) != 0)
        vms_warn(NULL, p->request_id, "save preparation superseded by %s", m->request_id);
    if (p->active && !strcmp(p->request_id, m->request_id)) {
        vms_debug(NULL, m->request_id, "duplicate Prepare ignored");
        return;
    }
    /*
     * Only a registered listener can be told to inhibit in time, so with none
     * registered there is nobody to wait for: the save is not slowed down.
     */
    if (h->n_listeners == 0)
        window = 0;
    /* leave the host time to act on our Ready before it gives up on us */
    if (m->timeout_ms && window > m->timeout_ms / 2)
        window = m->timeout_ms / 2;
    p->active = 1;
    prepare_collect_waiting(h, p);
    memcpy(p->request_id, m->request_id, VMS_REQUEST_ID_LEN); /* validated by decode */
    p->request_id[VMS_REQUEST_ID_LEN] = '\0';
    p->window_end_ms = helper_now_ms() + window;
    p->host_deadline_ms = helper_now_ms() + (m->timeout_ms ? m->timeout_ms : UINT32_MAX);
    vms_info(NULL, m->request_id, "save '%s' is about to start: PrepareSave (host waits %u ms)",
             m->label, m->timeout_ms);
    helper_bus_emit_prepare_save(h, m->request_id, m->label);
    run_start(h, HOOK_PRE_SAVE, m->request_id, m->label, NULL, h->epoch);
    prepare_maybe_ready(h);
}

int helper_hooks_inhibit(struct helper *h, const char *request_id, const char *reason, long uid)
{
    struct helper_prepare *p = &h->hooks.prep;
    char msg[VMS_STR_MAX + 1];

    if (!p->active || strcmp(p->request_id, request_id) != 0)
        return -1;
    if (helper_now_ms() >= p->host_deadline_ms) {
        vms_warn(NULL, request_id, "Inhibit after the host's prepare timeout: too late, refused");
        return -1;
    }
    snprintf(msg, sizeof(msg), "%.200s (uid %ld)", reason, uid);
    vms_info(NULL, request_id, "save inhibited: %s", msg);
    send_ready(h, request_id, VMS_STATUS_ERR_INHIBITED, msg);
    prepare_end(p);
    return 0;
}

void helper_hooks_owner_gone(struct helper *h, const char *owner)
{
    if (prepare_unwait(h, owner))
        prepare_maybe_ready(h);
}

int helper_hooks_proceed(struct helper *h, const char *request_id, const char *owner)
{
    struct helper_prepare *p = &h->hooks.prep;

    if (!p->active || strcmp(p->request_id, request_id) != 0)
        return -1;
    helper_hooks_owner_gone(h, owner); /* for this save, the same as having gone */
    return 0;
}

/* ---- post-restore ---- */

void helper_hooks_restored(struct helper *h, const char *state_id, uint64_t epoch,
                           const char *request_id)
{
    run_start(h, HOOK_POST_RESTORE, request_id, NULL, state_id, epoch);
}

static void run_finished(struct helper *h, int kind)
{
    struct helper_hookrun *r = &h->hooks.run[kind];

    if (r->n)
        vms_info(NULL, r->request_id[0] ? r->request_id : NULL,
                 "%s hooks done: %u ok, %u failed, %u killed at the timeout", kind_name[kind],
                 r->ok, r->failed, r->timed_out);
    r->active = 0;
    if (kind == HOOK_POST_RESTORE) {
        helper_bus_emit_restored(h, r->state_id, r->epoch);
        helper_deliver_deferred(h);
    } else
        prepare_maybe_ready(h);
}

/* ---- children ---- */

void helper_hooks_sigchld(struct helper *h)
{
    int st;
    pid_t pid;

    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        for (int k = 0; k < HOOK__COUNT; k++) {
            struct helper_hookrun *r = &h->hooks.run[k];
            if (!r->active || r->pid != pid)
                continue;
            run_read(r, k); /* what is left in the pipe */
            run_close_pipe(r);
            r->pid = 0;
            if (r->killed) {
                r->timed_out++;
                vms_warn(NULL, r->request_id[0] ? r->request_id : NULL,
                         "%s hook %s killed after %u ms (hook_timeout_ms); going on", kind_name[k],
                         r->names[r->next], h->cfg.hook_timeout_ms);
            } else if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
                r->ok++;
                vms_info(NULL, r->request_id[0] ? r->request_id : NULL, "%s hook %s: exit 0",
                         kind_name[k], r->names[r->next]);
            } else {
                r->failed++;
                vms_warn(NULL, r->request_id[0] ? r->request_id : NULL, "%s hook %s failed: %s %d",
                         kind_name[k], r->names[r->next], WIFEXITED(st) ? "exit" : "signal",
                         WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
            }
            r->next++;
            run_next(h, k);
        }
    }
}

void helper_hooks_output(struct helper *h, int fd)
{
    for (int k = 0; k < HOOK__COUNT; k++)
        if (h->hooks.run[k].out_fd == fd && fd >= 0)
            run_read(&h->hooks.run[k], k);
}

int helper_hooks_fds(struct helper *h, int *fds)
{
    int n = 0;

    for (int k = 0; k < HOOK__COUNT; k++)
        if (h->hooks.run[k].out_fd >= 0)
            fds[n++] = h->hooks.run[k].out_fd;
    return n;
}

int helper_hooks_timers(struct helper *h)
{
    uint64_t now = helper_now_ms();
    int64_t next = -1;
    int children = 0;

    for (int k = 0; k < HOOK__COUNT; k++) {
        struct helper_hookrun *r = &h->hooks.run[k];
        if (!r->active || r->pid <= 0)
            continue;
        children = 1;
        if (!r->killed && now >= r->deadline_ms) {
            vms_warn(NULL, r->request_id[0] ? r->request_id : NULL,
                     "%s hook %s still running after %u ms: killing it", kind_name[k],
                     r->names[r->next], h->cfg.hook_timeout_ms);
            kill(-r->pid, SIGKILL);
            r->killed = 1;
        }
        if (!r->killed && (next < 0 || (int64_t)(r->deadline_ms - now) < next))
            next = (int64_t)(r->deadline_ms - now);
        if (r->killed && (next < 0 || next > 50))
            next = 50; /* reap it soon even if SIGCHLD was missed */
    }
    /* The safety net for a missed SIGCHLD, only while a hook runs: it ran every loop turn,
     * 3 failing wait4() per request (bench-native --strace); the signalfd reaps the rest. */
    if (children)
        helper_hooks_sigchld(h);
    if (h->hooks.refine.active) {
        if (now >= h->hooks.refine.deadline_ms) {
            if (h->hooks.refine.best_rtt_ns == UINT64_MAX)
                vms_info(NULL, NULL, "clock (%s): no Welcome in time: finishing with what we have",
                         h->hooks.refine.reason);
            helper_clock_refine_finish(h);
        } else if (next < 0 || (int64_t)(h->hooks.refine.deadline_ms - now) < next) {
            next = (int64_t)(h->hooks.refine.deadline_ms - now);
        }
    }
    if (h->hooks.prep.active) {
        prepare_maybe_ready(h);
        /* still active: the window is open (wake at its end) or hooks run (their exit
         * or deadline wakes us) */
        if (h->hooks.prep.active && h->hooks.prep.window_end_ms > now) {
            int64_t in = (int64_t)(h->hooks.prep.window_end_ms - now);
            if (next < 0 || in < next)
                next = in;
        }
    }
    return next > INT32_MAX ? INT32_MAX : (int)next;
}
