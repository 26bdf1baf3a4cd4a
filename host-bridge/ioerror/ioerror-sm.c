/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ioerror-sm.c — the I/O-error policy: per-VM config keys, the state machine
 * and the (blocking) storage probes. No bridge state here: see ioerror.h.
 */
#include "config.h"
#include "ioerror.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- config ---- */

void bridge_ioe_config_defaults(struct bridge_ioe_config *c)
{
    memset(c, 0, sizeof(*c));
    c->policy = BRIDGE_IOE_AUTO_RESUME;
    c->probe_interval_ms = 1000;
    c->probe_max_ms = 8000;
    c->resume_delay_ms = 5000;
    c->retry_min_ms = 250;
    c->retry_limit = 3;
    c->settle_ms = 2000;
    c->kill_timeout_s = 60;
    c->escalate_after_s = 300;
    c->min_free_bytes = 1u << 20;
}

const char *bridge_ioe_policy_name(enum bridge_ioe_policy p)
{
    switch (p) {
    case BRIDGE_IOE_AUTO_RESUME:
        return "auto-resume";
    case BRIDGE_IOE_LEAVE_PAUSED:
        return "leave-paused";
    case BRIDGE_IOE_KILL:
        return "kill";
    }
    return "?";
}

static int ioe_uint(const char *s, unsigned max, unsigned *out)
{
    char *end;
    unsigned long v;

    if (!*s || *s == '-' || *s == '+')
        return -1;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || *end || v > max)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static int ioe_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    uint64_t mult = 1;

    if (!*s || *s == '-' || *s == '+')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    if (*end == 'K' || *end == 'k')
        mult = 1ull << 10;
    else if (*end == 'M' || *end == 'm')
        mult = 1ull << 20;
    else if (*end == 'G' || *end == 'g')
        mult = 1ull << 30;
    if (mult > 1)
        end++;
    if (*end || (v && mult > UINT64_MAX / v))
        return -1;
    *out = v * mult;
    return 0;
}

static int valid_node(const char *s, size_t n)
{
    if (n == 0 || n >= BRIDGE_IOE_NODE_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-' || ch == ':' || ch == '@'))
            return 0;
    }
    return 1;
}

/* "NODE=TARGET": TARGET none | file:PATH | /PATH | nbd://HOST[:PORT] | nbd+unix:///?socket=PATH
 * | unix:PATH */
static int parse_probe(struct bridge_ioe_probe_cfg *p, const char *value, char *why, size_t wl)
{
    const char *eq = strchr(value, '='), *t;
    size_t n;

    memset(p, 0, sizeof(*p));
    if (!eq || !valid_node(value, (size_t)(eq - value))) {
        snprintf(why, wl, "'%s' is not NODE=TARGET (NODE a block node name)", value);
        return -1;
    }
    memcpy(p->node, value, (size_t)(eq - value));
    t = eq + 1;
    if (!strcmp(t, "none")) {
        p->kind = BRIDGE_IOE_PROBE_NONE;
        return 0;
    }
    if (!strncmp(t, "file:", 5)) {
        p->kind = BRIDGE_IOE_PROBE_FILE;
        t += 5;
    } else if (t[0] == '/') {
        p->kind = BRIDGE_IOE_PROBE_FILE;
    } else if (!strncmp(t, "nbd+unix:///", 12) && strstr(t, "socket=")) {
        p->kind = BRIDGE_IOE_PROBE_UNIX;
        t = strstr(t, "socket=") + 7;
    } else if (!strncmp(t, "unix:", 5)) {
        p->kind = BRIDGE_IOE_PROBE_UNIX;
        t += 5;
    } else if (!strncmp(t, "nbd://", 6)) {
        const char *colon, *slash;
        p->kind = BRIDGE_IOE_PROBE_TCP;
        t += 6;
        slash = strchr(t, '/');
        n = slash ? (size_t)(slash - t) : strlen(t);
        if (n == 0 || n >= sizeof(p->target)) {
            snprintf(why, wl, "'%s': no host in the nbd:// URI", value);
            return -1;
        }
        memcpy(p->target, t, n);
        p->target[n] = '\0';
        colon = strrchr(p->target, ':');
        if (!colon && n + 6 < sizeof(p->target))
            strcat(p->target, ":10809");
        return 0;
    } else {
        snprintf(why, wl,
                 "'%s': target must be none, file:PATH, /PATH, nbd://HOST[:PORT], "
                 "nbd+unix:///?socket=PATH or unix:PATH",
                 value);
        return -1;
    }
    n = strlen(t);
    if (n == 0 || n >= sizeof(p->target) || (p->kind == BRIDGE_IOE_PROBE_UNIX && n >= 108)) {
        snprintf(why, wl, "'%s': empty or too long path", value);
        return -1;
    }
    memcpy(p->target, t, n + 1);
    return 0;
}

int bridge_ioe_config_key(struct bridge_ioe_config *c, const char *key, const char *value,
                          char *why, size_t wl)
{
    struct {
        const char *key;
        unsigned *field;
        unsigned max;
    } uints[] = {
        {"io_probe_interval_ms", &c->probe_interval_ms, 3600000},
        {"io_probe_max_ms", &c->probe_max_ms, 3600000},
        {"io_resume_delay_ms", &c->resume_delay_ms, 3600000},
        {"io_retry_min_ms", &c->retry_min_ms, 3600000},
        {"io_retry_limit", &c->retry_limit, 1000000},
        {"io_settle_ms", &c->settle_ms, 3600000},
        {"io_kill_timeout", &c->kill_timeout_s, 86400},
        {"io_escalate_after", &c->escalate_after_s, 86400 * 7},
    };

    for (size_t i = 0; i < sizeof(uints) / sizeof(uints[0]); i++) {
        if (strcmp(key, uints[i].key))
            continue;
        if (ioe_uint(value, uints[i].max, uints[i].field) < 0) {
            snprintf(why, wl, "'%s' is not a number in 0..%u", value, uints[i].max);
            return -1;
        }
        if ((uints[i].field == &c->probe_interval_ms || uints[i].field == &c->probe_max_ms ||
             uints[i].field == &c->retry_min_ms) &&
            *uints[i].field == 0) {
            snprintf(why, wl, "must be > 0");
            return -1;
        }
        return 1;
    }
    if (!strcmp(key, "io_error_policy")) {
        if (!strcmp(value, "auto-resume"))
            c->policy = BRIDGE_IOE_AUTO_RESUME;
        else if (!strcmp(value, "leave-paused"))
            c->policy = BRIDGE_IOE_LEAVE_PAUSED;
        else if (!strcmp(value, "kill"))
            c->policy = BRIDGE_IOE_KILL;
        else {
            snprintf(why, wl, "'%s' is not auto-resume, leave-paused or kill", value);
            return -1;
        }
        return 1;
    }
    if (!strcmp(key, "stateless")) {
        if (!strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "1"))
            c->stateless = 1;
        else if (!strcmp(value, "no") || !strcmp(value, "false") || !strcmp(value, "0"))
            c->stateless = 0;
        else {
            snprintf(why, wl, "'%s' is not yes or no", value);
            return -1;
        }
        return 1;
    }
    if (!strcmp(key, "io_restart_command")) {
        if (!value[0] || strlen(value) >= sizeof(c->restart_command)) {
            snprintf(why, wl, "empty or longer than %zu bytes", sizeof(c->restart_command) - 1);
            return -1;
        }
        strcpy(c->restart_command, value);
        return 1;
    }
    if (!strcmp(key, "io_probe_min_free")) {
        if (ioe_size(value, &c->min_free_bytes) < 0) {
            snprintf(why, wl, "'%s' is not a size (number, optional K/M/G)", value);
            return -1;
        }
        return 1;
    }
    if (!strcmp(key, "io_probe")) {
        struct bridge_ioe_probe_cfg p;
        if (parse_probe(&p, value, why, wl) < 0)
            return -1;
        for (unsigned i = 0; i < c->n_probes; i++)
            if (!strcmp(c->probes[i].node, p.node)) {
                snprintf(why, wl, "node '%s' has two probes", p.node);
                return -1;
            }
        if (c->n_probes >= BRIDGE_IOE_PROBES_MAX) {
            snprintf(why, wl, "more than %d probes", BRIDGE_IOE_PROBES_MAX);
            return -1;
        }
        c->probes[c->n_probes++] = p;
        return 1;
    }
    return 0;
}

const struct bridge_ioe_probe_cfg *bridge_ioe_probe_for(const struct bridge_ioe_config *c,
                                                        const char *node)
{
    for (unsigned i = 0; i < c->n_probes; i++)
        if (!strcmp(c->probes[i].node, node))
            return c->probes[i].kind == BRIDGE_IOE_PROBE_NONE ? NULL : &c->probes[i];
    return NULL;
}

/* ---- state machine ---- */

const char *bridge_ioe_state_name(enum bridge_ioe_state s)
{
    static const char *const names[] = {"running",  "user-paused", "checking", "io-paused",
                                        "resuming", "gave-up",     "killed"};
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

void bridge_ioe_sm_init(struct bridge_ioe_sm *sm, const struct bridge_ioe_config *cfg,
                        const struct bridge_ioe_actions *act, void *opaque)
{
    memset(sm, 0, sizeof(*sm));
    sm->cfg = cfg;
    sm->act = act;
    sm->opaque = opaque;
    sm->state = BRIDGE_IOE_RUNNING;
    sm->last_healthy_to_running = -1;
    sm->last_healthy_to_cont = -1;
}

static void notify(struct bridge_ioe_sm *sm, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void notify(struct bridge_ioe_sm *sm, const char *kind, const char *fmt, ...)
{
    char text[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (sm->act->notify)
        sm->act->notify(sm->opaque, kind, sm, text);
}

static unsigned dbl(unsigned ms, unsigned max)
{
    return ms > max / 2 ? max : ms * 2;
}

static const char *err_name(const struct bridge_ioe_sm *sm)
{
    return sm->nospace ? "ENOSPC" : "EIO";
}

static void do_kill(struct bridge_ioe_sm *sm, const char *why)
{
    sm->state = BRIDGE_IOE_KILLED;
    notify(sm, "killed", "killing the VM: %s", why);
    sm->act->kill(sm->opaque, why);
}

static void escalate(struct bridge_ioe_sm *sm, double now, const char *why)
{
    sm->escalated = 1;
    if (sm->cfg->stateless) {
        notify(sm, "escalated", "escalation (%s): stateless VM, killing it", why);
        do_kill(sm, why);
        return;
    }
    if (!sm->probe) {
        sm->state = BRIDGE_IOE_GAVE_UP;
        notify(sm, "escalated",
               "escalation (%s): stateful VM stays paused on node %s after %.1f s; it needs a "
               "host that can reach its storage",
               why, sm->node[0] ? sm->node : "?", now - sm->since);
        return;
    }
    notify(sm, "escalated",
           "escalation (%s): stateful VM paused %.1f s on node %s; still probing, it needs a "
           "host that can reach its storage",
           why, now - sm->since, sm->node);
}

static void do_cont(struct bridge_ioe_sm *sm, double now)
{
    if (sm->healthy_at > 0 && sm->cont_after_healthy == 0)
        sm->cont_after_healthy = now;
    sm->state = BRIDGE_IOE_RESUMING;
    sm->conts++;
    sm->act->cont(sm->opaque);
}

/* query-status said io-error */
static void io_paused(struct bridge_ioe_sm *sm, double now)
{
    const struct bridge_ioe_config *c = sm->cfg;
    int first = !sm->episode;

    sm->error_seen = 0;
    if (first) {
        sm->episode = 1;
        sm->since = now;
        sm->pauses = 0;
        sm->conts = 0;
        sm->escalated = 0;
        sm->paused_total = 0;
        sm->probe = bridge_ioe_probe_for(c, sm->node);
        sm->retry_delay_ms = c->retry_min_ms;
        sm->probe_delay_ms = c->probe_interval_ms;
        sm->kill_at = now + c->kill_timeout_s;
        sm->healthy_at = 0;
    }
    sm->pauses++;
    sm->paused_at = now;
    /* a probe said healthy less than a probe interval ago: cont again without re-probing */
    sm->healthy =
        sm->healthy && sm->probe && now - sm->last_probe_ok < c->probe_interval_ms / 1000.0;
    sm->state = BRIDGE_IOE_IO_PAUSED;
    if (first)
        notify(sm, "paused", "paused by a storage error (%s) on node %s: %s %s; policy %s, %s",
               err_name(sm), sm->node[0] ? sm->node : "?", sm->operation, sm->reason,
               bridge_ioe_policy_name(c->policy),
               c->policy != BRIDGE_IOE_AUTO_RESUME ? "no auto-resume"
               : sm->probe                         ? "probing the store"
                                                   : "unknown condition: resume timer");
    else
        notify(sm, "repaused", "paused again (%u) by %s on node %s after %u resume(s)", sm->pauses,
               err_name(sm), sm->node[0] ? sm->node : "?", sm->conts);
    if (c->policy != BRIDGE_IOE_AUTO_RESUME)
        return;
    if (sm->escalated && !sm->probe) {
        sm->state = BRIDGE_IOE_GAVE_UP;
        return;
    }
    if (sm->probe) {
        if (first) {
            sm->next_probe = now;
            sm->next_cont = now;
        } else {
            /* the store looked healthy and the VM paused again at once: QEMU's client may
             * still be reconnecting (NBD: ~1-2 s). Retry at the minimum pace a few times,
             * then back off. */
            sm->next_probe = sm->next_cont = now + sm->retry_delay_ms / 1000.0;
            if (sm->pauses > BRIDGE_IOE_FAST_RETRIES + 1)
                sm->retry_delay_ms = dbl(sm->retry_delay_ms, c->probe_max_ms);
        }
        return;
    }
    if (sm->pauses > c->retry_limit + 1) {
        char why[96];
        snprintf(why, sizeof(why), "paused again after %u timed resumes", sm->pauses - 1);
        escalate(sm, now, why);
        return;
    }
    sm->next_cont = now + c->resume_delay_ms / 1000.0;
}

void bridge_ioe_on_io_error(struct bridge_ioe_sm *sm, const char *node, const char *operation,
                            const char *reason, int nospace, double now)
{
    (void)now;
    sm->error_seen = 1;
    if (!sm->episode || (node && node[0])) {
        snprintf(sm->node, sizeof(sm->node), "%s", node ? node : "");
        if (sm->episode && !sm->probe)
            sm->probe = bridge_ioe_probe_for(sm->cfg, sm->node);
    }
    snprintf(sm->operation, sizeof(sm->operation), "%s", operation ? operation : "");
    snprintf(sm->reason, sizeof(sm->reason), "%s", reason ? reason : "");
    sm->nospace = nospace;
}

void bridge_ioe_on_stop(struct bridge_ioe_sm *sm, double now)
{
    (void)now;
    if (sm->state == BRIDGE_IOE_KILLED)
        return;
    sm->state = BRIDGE_IOE_CHECKING;
    sm->requery_at = 0;
    sm->act->query_status(sm->opaque);
}

void bridge_ioe_on_ready(struct bridge_ioe_sm *sm, double now)
{
    (void)now;
    if (sm->state == BRIDGE_IOE_KILLED) { /* a new QEMU behind the socket */
        sm->state = BRIDGE_IOE_RUNNING;
        sm->episode = 0;
        sm->escalated = 0;
    }
    if (sm->state == BRIDGE_IOE_RESUMING)
        sm->state = BRIDGE_IOE_IO_PAUSED;
    sm->probing = 0; /* a probe result still coming is ignored unless paused */
    sm->act->query_status(sm->opaque);
}

static void close_episode(struct bridge_ioe_sm *sm)
{
    sm->episode = 0;
    sm->last_pause_len = sm->paused_total;
    sm->last_healthy_to_running = sm->healthy_at > 0 ? sm->resumed_at - sm->healthy_at : -1;
    sm->last_healthy_to_cont = sm->healthy_at > 0 && sm->cont_after_healthy > 0
                                   ? sm->cont_after_healthy - sm->healthy_at
                                   : -1;
    notify(sm, "resumed",
           "resumed: paused %.1f s by a storage error (%s) on disk %s; %u pause(s), %u resume "
           "attempt(s)",
           sm->paused_total, err_name(sm), sm->node[0] ? sm->node : "?", sm->pauses, sm->conts);
}

void bridge_ioe_on_resume(struct bridge_ioe_sm *sm, double now)
{
    if (sm->state == BRIDGE_IOE_KILLED)
        return;
    if (sm->episode && sm->state != BRIDGE_IOE_RUNNING)
        sm->paused_total += now - sm->paused_at;
    sm->state = BRIDGE_IOE_RUNNING;
    sm->resumed_at = now;
    sm->error_seen = 0;
    if (sm->episode && sm->cfg->settle_ms == 0)
        close_episode(sm);
}

void bridge_ioe_on_status(struct bridge_ioe_sm *sm, const char *status, double now)
{
    if (sm->state == BRIDGE_IOE_KILLED)
        return;
    if (!status) { /* query failed: ask again at the next tick */
        if (sm->state == BRIDGE_IOE_CHECKING || sm->state == BRIDGE_IOE_RESUMING) {
            sm->state = BRIDGE_IOE_CHECKING;
            sm->requery_at = now + 0.5;
        }
        return;
    }
    if (!strcmp(status, "running")) {
        if (sm->state != BRIDGE_IOE_RUNNING)
            bridge_ioe_on_resume(sm, now);
        return;
    }
    if (!strcmp(status, "io-error")) {
        if (sm->state == BRIDGE_IOE_CHECKING || sm->state == BRIDGE_IOE_RUNNING ||
            sm->state == BRIDGE_IOE_USER_PAUSED || sm->state == BRIDGE_IOE_RESUMING)
            io_paused(sm, now);
        return;
    }
    /* paused on purpose (or saving, migrating...): never resumed by us */
    if (sm->state != BRIDGE_IOE_USER_PAUSED) {
        /* an open episode stays open; it closes after a resume */
        sm->state = BRIDGE_IOE_USER_PAUSED;
        if (!strcmp(status, "paused")) /* not save-vm, finish-migrate, ...: the bridge's own */
            notify(sm, "user-paused", "stopped (status %s), not by an I/O error: not auto-resumed",
                   status);
    }
    sm->error_seen = 0;
}

void bridge_ioe_on_probe(struct bridge_ioe_sm *sm, int healthy, const char *detail, double now)
{
    sm->probing = 0;
    if (sm->state != BRIDGE_IOE_IO_PAUSED)
        return;
    if (!healthy) {
        sm->healthy = 0;
        sm->healthy_at = 0;
        sm->next_probe = now + sm->probe_delay_ms / 1000.0;
        sm->probe_delay_ms = dbl(sm->probe_delay_ms, sm->cfg->probe_max_ms);
        return;
    }
    if (!sm->healthy_at) {
        sm->healthy_at = now;
        sm->cont_after_healthy = 0;
        notify(sm, "healthy", "store of node %s healthy: %s", sm->node, detail ? detail : "");
    }
    sm->healthy = 1;
    sm->last_probe_ok = now;
    sm->probe_delay_ms = sm->cfg->probe_interval_ms;
    if (now >= sm->next_cont)
        do_cont(sm, now);
}

void bridge_ioe_on_cont(struct bridge_ioe_sm *sm, int ok, const char *err, double now)
{
    (void)err;
    if (sm->state != BRIDGE_IOE_RESUMING || ok)
        return;
    sm->state = BRIDGE_IOE_IO_PAUSED;
    sm->healthy = 0;
    sm->next_cont = sm->next_probe = now + sm->retry_delay_ms / 1000.0;
    sm->retry_delay_ms = dbl(sm->retry_delay_ms, sm->cfg->probe_max_ms);
}

void bridge_ioe_tick(struct bridge_ioe_sm *sm, double now)
{
    const struct bridge_ioe_config *c = sm->cfg;

    switch (sm->state) {
    case BRIDGE_IOE_RUNNING:
        if (sm->episode && now - sm->resumed_at >= c->settle_ms / 1000.0)
            close_episode(sm);
        return;
    case BRIDGE_IOE_CHECKING:
        if (sm->requery_at > 0 && now >= sm->requery_at) {
            sm->requery_at = 0;
            sm->act->query_status(sm->opaque);
        }
        return;
    case BRIDGE_IOE_IO_PAUSED:
        break;
    default:
        return;
    }
    if (c->policy == BRIDGE_IOE_LEAVE_PAUSED)
        return;
    if (c->policy == BRIDGE_IOE_KILL) {
        if (now >= sm->kill_at) {
            char why[96];
            snprintf(why, sizeof(why), "policy kill: paused %.1f s by an I/O error",
                     now - sm->since);
            do_kill(sm, why);
        }
        return;
    }
    if (!sm->escalated && c->escalate_after_s && now >= sm->since + c->escalate_after_s) {
        char why[96];
        snprintf(why, sizeof(why), "paused longer than io_escalate_after=%u s",
                 c->escalate_after_s);
        escalate(sm, now, why);
        if (sm->state != BRIDGE_IOE_IO_PAUSED)
            return;
    }
    if (sm->probe) {
        if (sm->healthy) {
            if (now >= sm->next_cont)
                do_cont(sm, now);
        } else if (!sm->probing && now >= sm->next_probe) {
            sm->probing = 1;
            sm->act->probe(sm->opaque, sm->probe);
        }
        return;
    }
    if (now >= sm->next_cont)
        do_cont(sm, now);
}

/* ---- probes ---- */

static int probe_file(const char *path, uint64_t min_free, char *detail, size_t len)
{
    char dir[BRIDGE_IOE_TARGET_MAX + 64], probe[BRIDGE_IOE_TARGET_MAX + 96], buf[4096];
    struct statvfs sv;
    const char *slash;
    int fd;
    ssize_t n;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(detail, len, "open %s: %s", path, strerror(errno));
        return 0;
    }
    n = pread(fd, buf, sizeof(buf), 0);
    close(fd);
    if (n < 0) {
        snprintf(detail, len, "read %s: %s", path, strerror(errno));
        return 0;
    }
    slash = strrchr(path, '/');
    if (slash && slash != path)
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    else
        snprintf(dir, sizeof(dir), "%s", slash ? "/" : ".");
    if (statvfs(dir, &sv) < 0) {
        snprintf(detail, len, "statvfs %s: %s", dir, strerror(errno));
        return 0;
    }
    if ((uint64_t)sv.f_bavail * sv.f_frsize < min_free) {
        snprintf(detail, len, "%s: %llu bytes free, below %llu", dir,
                 (unsigned long long)sv.f_bavail * sv.f_frsize, (unsigned long long)min_free);
        return 0;
    }
    snprintf(probe, sizeof(probe), "%s/.vmstate-io-probe.%ld", dir, (long)getpid());
    fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EACCES || errno == EROFS || errno == EPERM) {
            snprintf(detail, len, "readable, %llu bytes free (no write probe: %s)",
                     (unsigned long long)sv.f_bavail * sv.f_frsize, strerror(errno));
            return 1;
        }
        snprintf(detail, len, "create %s: %s", probe, strerror(errno));
        return 0;
    }
    memset(buf, 0x5a, sizeof(buf));
    n = write(fd, buf, sizeof(buf));
    if (n != (ssize_t)sizeof(buf) || fsync(fd) < 0) {
        snprintf(detail, len, "write probe in %s: %s", dir,
                 n < 0 ? strerror(errno) : "short write");
        close(fd);
        unlink(probe);
        return 0;
    }
    close(fd);
    unlink(probe);
    snprintf(detail, len, "readable, writable, %llu bytes free",
             (unsigned long long)sv.f_bavail * sv.f_frsize);
    return 1;
}

static void set_timeouts(int fd, int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)); /* bounds connect() too */
}

/* Connected: the NBD server must greet with "NBDMAGIC". */
static int nbd_greeting(int fd, const char *what, char *detail, size_t len)
{
    char magic[8];
    size_t got = 0;

    while (got < sizeof(magic)) {
        ssize_t n = read(fd, magic + got, sizeof(magic) - got);
        if (n <= 0) {
            snprintf(detail, len, "%s: no NBD greeting (%s)", what,
                     n == 0 ? "closed" : strerror(errno));
            return 0;
        }
        got += (size_t)n;
    }
    if (memcmp(magic, "NBDMAGIC", 8)) {
        snprintf(detail, len, "%s: not an NBD server", what);
        return 0;
    }
    snprintf(detail, len, "%s: NBD server answers", what);
    return 1;
}

static int probe_unix(const char *path, char *detail, size_t len)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd, ok;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(detail, len, "socket path too long");
        return 0;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(detail, len, "socket: %s", strerror(errno));
        return 0;
    }
    set_timeouts(fd, 2000);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        snprintf(detail, len, "connect %s: %s", path, strerror(errno));
        close(fd);
        return 0;
    }
    ok = nbd_greeting(fd, path, detail, len);
    close(fd);
    return ok;
}

static int probe_tcp(const char *hostport, char *detail, size_t len)
{
    char host[BRIDGE_IOE_TARGET_MAX];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
    char *colon;
    int rc, ok = 0;

    snprintf(host, sizeof(host), "%s", hostport);
    colon = strrchr(host, ':');
    if (!colon) {
        snprintf(detail, len, "%s: no port", hostport);
        return 0;
    }
    *colon = '\0';
    if (host[0] == '[' && colon > host && colon[-1] == ']') { /* [v6]:port */
        colon[-1] = '\0';
        memmove(host, host + 1, strlen(host));
    }
    rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc) {
        snprintf(detail, len, "%s: %s", hostport, gai_strerror(rc));
        return 0;
    }
    snprintf(detail, len, "%s: no address", hostport);
    for (ai = res; ai && !ok; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        set_timeouts(fd, 2000);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0)
            snprintf(detail, len, "connect %s: %s", hostport, strerror(errno));
        else
            ok = nbd_greeting(fd, hostport, detail, len);
        close(fd);
    }
    freeaddrinfo(res);
    return ok;
}

int bridge_ioe_probe_run(const struct bridge_ioe_probe_cfg *p, uint64_t min_free, char *detail,
                         size_t len)
{
    switch (p->kind) {
    case BRIDGE_IOE_PROBE_FILE:
        return probe_file(p->target, min_free, detail, len);
    case BRIDGE_IOE_PROBE_TCP:
        return probe_tcp(p->target, detail, len);
    case BRIDGE_IOE_PROBE_UNIX:
        return probe_unix(p->target, detail, len);
    default:
        snprintf(detail, len, "no probe");
        return 0;
    }
}
