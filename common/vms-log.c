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

void vms_log(int level, const char *vm, const char *request_id, const char *fmt, ...)
{
    char msg[1024], ctx[600] = "";
    va_list ap;

    if (level > log_max)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (vm && request_id)
        snprintf(ctx, sizeof(ctx), "vm=%s req=%s: ", vm, request_id);
    else if (vm)
        snprintf(ctx, sizeof(ctx), "vm=%s: ", vm);
    else if (request_id)
        snprintf(ctx, sizeof(ctx), "req=%s: ", request_id);

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
