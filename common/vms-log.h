/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vms-log.h — one log format for every vmstate daemon and tool.
 *
 * Lines go to stderr. Under systemd (JOURNAL_STREAM set) they carry a
 * "<N>" priority prefix that journald understands; otherwise a timestamp
 * and level. Every line about a VM or request names them, so one grep
 * follows a request across the helper, the bridge and the backend.
 * Never pass a secret to these functions.
 */
#ifndef VMS_LOG_H
#define VMS_LOG_H

#include <stddef.h>
#include <syslog.h>

/* Program name shown in each line, and the most verbose level printed (LOG_INFO by default). */
void vms_log_init(const char *progname, int max_level);
int vms_log_level(void);
/* From now on, send lines to syslog (@facility, e.g. LOG_DAEMON) instead of stderr: for
 * daemons started without systemd (--syslog, --daemon). Call after vms_log_init. */
void vms_log_to_syslog(int facility);

/*
 * Log one line at @level (LOG_ERR .. LOG_DEBUG). @vm and @request_id may be
 * NULL; when given they prefix the message as "vm=NAME req=ID".
 */
void vms_log(int level, const char *vm, const char *request_id, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * Escape untrusted text for a log line: printable ASCII (0x20..0x7e) is kept,
 * every other byte and the backslash become "\xNN", at most VMS_LOG_ESC_MAX
 * input bytes are shown ("..." marks the cut). The result never holds a
 * newline, so guest text can never start a line of its own or forge a
 * journald "<N>" prefix. Returns one of a small ring of per-thread buffers:
 * valid until VMS_LOG_ESC_RING later calls, enough for one log call's
 * arguments. NULL becomes "(null)".
 */
#define VMS_LOG_ESC_MAX  96
#define VMS_LOG_ESC_RING 8
const char *vms_esc(const char *s);

/* The same into @out (@outlen >= 4 * @in_max + 4 shows all @in_max bytes). */
void vms_escape(char *out, size_t outlen, const char *in, size_t in_max);

/*
 * Log rate limiting for one (source, reason): at most VMS_LOG_BURST lines per
 * VMS_LOG_WINDOW seconds; beyond that lines are counted, not printed, and
 * the next line allowed (or vms_log_limit_flush()) first logs
 * "N similar messages (WHAT) suppressed in the last S s". A hostile peer
 * can then cost a bounded number of lines per window, whatever it sends.
 */
#define VMS_LOG_BURST  10
#define VMS_LOG_WINDOW 10.0
struct vms_log_limit {
    double window_start;
    unsigned in_window;
    unsigned long long suppressed;
};

/* 1 if the caller may log a line now (at monotonic time @now), 0 if it is counted as suppressed. */
int vms_log_allow_at(struct vms_log_limit *l, double now, const char *vm, const char *what);
/* vms_log_allow_at() with the monotonic clock. */
int vms_log_allow(struct vms_log_limit *l, const char *vm, const char *what);
/* At a tick: the summary of a window that has ended with lines suppressed. */
void vms_log_limit_flush(struct vms_log_limit *l, double now, const char *vm, const char *what);

/* vms_log() through limit @l (reason text @what). */
#define vms_log_limited(l, what, level, vm, req, ...)                                              \
    do {                                                                                           \
        if (vms_log_level() >= (level) && vms_log_allow((l), (vm), (what)))                        \
            vms_log((level), (vm), (req), __VA_ARGS__);                                            \
    } while (0)

#define vms_err(vm, req, ...)   vms_log(LOG_ERR, vm, req, __VA_ARGS__)
#define vms_warn(vm, req, ...)  vms_log(LOG_WARNING, vm, req, __VA_ARGS__)
#define vms_info(vm, req, ...)  vms_log(LOG_INFO, vm, req, __VA_ARGS__)
#define vms_debug(vm, req, ...) vms_log(LOG_DEBUG, vm, req, __VA_ARGS__)

#endif
