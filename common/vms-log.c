/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vms-log.c — see vms-log.h.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vms-log.h"

static const char *log_prog = "vmstate";
static int log_max = LOG_INFO;
static int log_syslog;

void vms_log_init(const char *progname, int max_level)
{
    if (progname)
        log_prog = progname;
    log_max = max_level;
}

void vms_log_to_syslog(int facility)
{
    openlog(log_prog, LOG_PID | LOG_NDELAY, facility);
    log_syslog = 1;
}

int vms_log_level(void)
{
    return log_max;
}

static const char *level_name(int level)
{
    static const char *const names[] = {"emerg", "alert", "crit", "error",
                                        "warn",  "note",  "info", "debug"};
    return level >= 0 && level <= LOG_DEBUG ? names[level] : "?";
}

void vms_escape(char *out, size_t outlen, const char *in, size_t in_max)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i;

    if (!outlen)
        return;
    if (!in)
        in = "(null)";
    for (i = 0; in[i] && i < in_max; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            if (o + 1 >= outlen)
                break;
            out[o++] = (char)c;
        } else {
            if (o + 4 >= outlen)
                break;
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    if (in[i] && o + 3 < outlen) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

const char *vms_esc(const char *s)
{
    static _Thread_local char ring[VMS_LOG_ESC_RING][4 * VMS_LOG_ESC_MAX + 4];
    static _Thread_local unsigned next;
    char *out = ring[next++ % VMS_LOG_ESC_RING];

    vms_escape(out, sizeof(ring[0]), s, VMS_LOG_ESC_MAX);
    return out;
}

static double monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void vms_log_limit_flush(struct vms_log_limit *l, double now, const char *vm, const char *what)
{
    if (now - l->window_start < VMS_LOG_WINDOW)
        return;
    if (l->suppressed)
        vms_log(LOG_WARNING, vm, NULL, "%llu similar messages (%s) suppressed in the last %.0f s",
                l->suppressed, what, now - l->window_start);
    l->suppressed = 0;
    l->in_window = 0;
    l->window_start = now;
}

int vms_log_allow_at(struct vms_log_limit *l, double now, const char *vm, const char *what)
{
    if (l->window_start == 0 && l->in_window == 0 && l->suppressed == 0)
        l->window_start = now;
    vms_log_limit_flush(l, now, vm, what);
    if (l->in_window < VMS_LOG_BURST) {
        l->in_window++;
        return 1;
    }
    l->suppressed++;
    return 0;
}

int vms_log_allow(struct vms_log_limit *l, const char *vm, const char *what)
{
    return vms_log_allow_at(l, monotonic_now(), vm, what);
}

/* Control bytes left in a formatted line (from any caller) become \xNN: one line stays one. */
static void defang(char *s, size_t size)
{
    char tmp[1024];
    size_t n = strlen(s);

    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7f) {
            size_t len = size < sizeof(tmp) ? size : sizeof(tmp);
            /* vms_escape also turns backslashes and non-ASCII into \xNN: fine for a broken line */
            vms_escape(tmp, len, s, len);
            memcpy(s, tmp, strlen(tmp) + 1);
            return;
        }
}

void vms_log(int level, const char *vm, const char *request_id, const char *fmt, ...)
{
    char msg[1024], ctx[600] = "";
    va_list ap;

    if (level > log_max)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    defang(msg, sizeof(msg));
    if (vm && request_id)
        snprintf(ctx, sizeof(ctx), "vm=%s req=%s: ", vm, request_id);
    else if (vm)
        snprintf(ctx, sizeof(ctx), "vm=%s: ", vm);
    else if (request_id)
        snprintf(ctx, sizeof(ctx), "req=%s: ", request_id);
    defang(ctx, sizeof(ctx));

    if (log_syslog) {
        syslog(level, "%s%s", ctx, msg);
    } else if (getenv("JOURNAL_STREAM")) {
        fprintf(stderr, "<%d>%s%s\n", level, ctx, msg);
    } else {
        struct timespec ts;
        struct tm tm;
        char when[32];

        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        strftime(when, sizeof(when), "%H:%M:%S", &tm);
        fprintf(stderr, "%s.%03ld %s[%s] %s%s\n", when, ts.tv_nsec / 1000000, log_prog,
                level_name(level), ctx, msg);
    }
}
