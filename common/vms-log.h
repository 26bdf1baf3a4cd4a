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

#define vms_err(vm, req, ...)   vms_log(LOG_ERR, vm, req, __VA_ARGS__)
#define vms_warn(vm, req, ...)  vms_log(LOG_WARNING, vm, req, __VA_ARGS__)
#define vms_info(vm, req, ...)  vms_log(LOG_INFO, vm, req, __VA_ARGS__)
#define vms_debug(vm, req, ...) vms_log(LOG_DEBUG, vm, req, __VA_ARGS__)

#endif
