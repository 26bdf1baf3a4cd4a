/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vms-daemon.h — the classic Unix daemon start, for systems without systemd (an init
 * script starts the daemon with --daemon --pidfile FILE).
 */
#ifndef VMS_DAEMON_H
#define VMS_DAEMON_H

/*
 * Detach from the terminal: fork twice (the parent exits 0 only once the child is
 * ready, see vms_daemon_ready), setsid, chdir /, stdin/stdout/stderr on /dev/null.
 * When @pidfile is not NULL it is created (mode 0644) with the daemon's pid, and
 * refused when it names a running process. Returns 0 in the daemon; on failure
 * prints why on stderr and returns -1 (in the original process, nothing detached).
 */
int vms_daemonize(const char *pidfile);

/*
 * Tell the waiting parent that start-up succeeded (it exits 0), or failed (@ok == 0: it
 * exits 1, so the init script sees the failure; the pidfile is gone by then). Does nothing
 * without vms_daemonize.
 */
void vms_daemon_ready(int ok);

/* Remove the pidfile written by vms_daemonize (at exit). */
void vms_daemon_cleanup(void);

#endif
