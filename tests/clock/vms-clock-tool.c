/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vms-clock-tool — guest-side probe for the clock/hooks system tests (tests/clock).
 * Talks to vmstate-helperd on the system bus with plain libdbus.
 *
 *   vms-clock-tool listen LOG [--inhibit REASON]
 *       Register for app org.vmstate.ClockTest, then append one line per signal to LOG
 *       (O_APPEND, so lines of hooks writing to the same file keep their order):
 *         <guest realtime> ClockCorrected seconds=S ns=N reason=R
 *         <guest realtime> PrepareSave id=ID label=L [inhibit=ok|ERROR]
 *         <guest realtime> Restored state=S epoch=E
 *         <guest realtime> Completed id=ID op=OP status=N state=S message=M
 *       With --inhibit, answer every PrepareSave with Inhibit(id, REASON).
 *   vms-clock-tool save LABEL PRINCIPAL SECRET      prints the request id
 *   vms-clock-tool restore STATE PRINCIPAL SECRET   prints the request id
 *   vms-clock-tool now          prints CLOCK_REALTIME and CLOCK_MONOTONIC (s.ns s.ns)
 */
#include "config.h"

#include <dbus/dbus.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vms-dbus.h"

#define APP "org.vmstate.ClockTest"

static int logfd = -1;

static void logline(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logline(const char *fmt, ...)
{
    char buf[1024];
    struct timespec ts;
    int n;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    n = snprintf(buf, sizeof(buf), "%lld.%09ld ", (long long)ts.tv_sec, ts.tv_nsec);
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(buf) - 2)
        n = (int)sizeof(buf) - 2;
    buf[n++] = '\n';
    if (write(logfd, buf, (size_t)n) < 0)
        exit(3);
}

static DBusConnection *connect_bus(void)
{
    DBusError err;
    DBusConnection *c;

    dbus_error_init(&err);
    c = dbus_bus_get(DBUS_BUS_SYSTEM, &err);
    if (!c) {
        fprintf(stderr, "system bus: %s\n", err.message);
        exit(2);
    }
    return c;
}

static DBusMessage *call(DBusConnection *c, DBusMessage *m)
{
    DBusError err;
    DBusMessage *r;

    dbus_error_init(&err);
    r = dbus_connection_send_with_reply_and_block(c, m, 10000, &err);
    dbus_message_unref(m);
    if (!r) {
        fprintf(stderr, "%s: %s\n", err.name, err.message);
        dbus_error_free(&err);
    }
    return r;
}

static int request(DBusConnection *c, const char *method, const char *arg, const char *principal,
                   const char *secret)
{
    DBusMessage *m = dbus_message_new_method_call(VMS_DBUS_NAME, VMS_DBUS_PATH, VMS_DBUS_IFACE,
                                                  method),
                *r;
    DBusMessageIter it, arr, dict, e;
    const char *app = APP, *kp = "principal", *ks = "secret", *id;
    const unsigned char *data = (const unsigned char *)"";

    dbus_message_iter_init_append(m, &it);
    dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &arg);
    dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &app);
    dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "y", &arr);
    dbus_message_iter_append_fixed_array(&arr, DBUS_TYPE_BYTE, &data, 0);
    dbus_message_iter_close_container(&it, &arr);
    dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{ss}", &dict);
    dbus_message_iter_open_container(&dict, DBUS_TYPE_DICT_ENTRY, NULL, &e);
    dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &kp);
    dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &principal);
    dbus_message_iter_close_container(&dict, &e);
    dbus_message_iter_open_container(&dict, DBUS_TYPE_DICT_ENTRY, NULL, &e);
    dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &ks);
    dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &secret);
    dbus_message_iter_close_container(&dict, &e);
    dbus_message_iter_close_container(&it, &dict);
    r = call(c, m);
    if (!r || !dbus_message_get_args(r, NULL, DBUS_TYPE_STRING, &id, DBUS_TYPE_INVALID))
        return 1;
    printf("%s\n", id);
    dbus_message_unref(r);
    return 0;
}

static int listen_loop(DBusConnection *c, const char *inhibit)
{
    DBusMessage *m, *r;
    const char *app = APP;

    /* Completed is unicast (no rule needed); the broadcasts have their own interface */
    dbus_bus_add_match(c, "type='signal',interface='" VMS_DBUS_BROADCAST_IFACE "'", NULL);
    m = dbus_message_new_method_call(VMS_DBUS_NAME, VMS_DBUS_PATH, VMS_DBUS_IFACE,
                                     "RegisterListener");
    dbus_message_append_args(m, DBUS_TYPE_STRING, &app, DBUS_TYPE_INVALID);
    r = call(c, m);
    if (!r)
        return 1;
    dbus_message_unref(r);
    logline("LISTENING pid=%d", (int)getpid());
    while (dbus_connection_read_write(c, -1)) {
        while ((m = dbus_connection_pop_message(c))) {
            if (dbus_message_is_signal(m, VMS_DBUS_BROADCAST_IFACE, "ClockCorrected")) {
                double s;
                dbus_int64_t ns;
                const char *reason;
                if (dbus_message_get_args(m, NULL, DBUS_TYPE_DOUBLE, &s, DBUS_TYPE_INT64, &ns,
                                          DBUS_TYPE_STRING, &reason, DBUS_TYPE_INVALID))
                    logline("ClockCorrected seconds=%+.6f ns=%lld reason=%s", s, (long long)ns,
                            reason);
            } else if (dbus_message_is_signal(m, VMS_DBUS_BROADCAST_IFACE, "PrepareSave")) {
                const char *id, *label, *res = "-";
                if (dbus_message_get_args(m, NULL, DBUS_TYPE_STRING, &id, DBUS_TYPE_STRING, &label,
                                          DBUS_TYPE_INVALID)) {
                    if (inhibit) {
                        DBusMessage *q = dbus_message_new_method_call(VMS_DBUS_NAME, VMS_DBUS_PATH,
                                                                      VMS_DBUS_IFACE, "Inhibit");
                        dbus_message_append_args(q, DBUS_TYPE_STRING, &id, DBUS_TYPE_STRING,
                                                 &inhibit, DBUS_TYPE_INVALID);
                        r = call(c, q);
                        res = r ? "ok" : "ERROR";
                        if (r)
                            dbus_message_unref(r);
                    }
                    logline("PrepareSave id=%s label=%s inhibit=%s", id, label, res);
                }
            } else if (dbus_message_is_signal(m, VMS_DBUS_BROADCAST_IFACE, "Restored")) {
                const char *sid;
                dbus_uint64_t ep;
                if (dbus_message_get_args(m, NULL, DBUS_TYPE_STRING, &sid, DBUS_TYPE_UINT64, &ep,
                                          DBUS_TYPE_INVALID))
                    logline("Restored state=%s epoch=%llu", sid, (unsigned long long)ep);
            } else if (dbus_message_is_signal(m, VMS_DBUS_IFACE, "Completed")) {
                DBusMessageIter it;
                const char *id, *op, *msg, *sid;
                dbus_uint32_t st;
                dbus_message_iter_init(m, &it);
                dbus_message_iter_get_basic(&it, &id);
                dbus_message_iter_next(&it);
                dbus_message_iter_get_basic(&it, &op);
                dbus_message_iter_next(&it);
                dbus_message_iter_get_basic(&it, &st);
                dbus_message_iter_next(&it);
                dbus_message_iter_get_basic(&it, &msg);
                dbus_message_iter_next(&it);
                dbus_message_iter_get_basic(&it, &sid);
                logline("Completed id=%s op=%s status=%u state=%s message=%s", id, op, st, sid,
                        msg);
            }
            dbus_message_unref(m);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "now")) {
        struct timespec ts, mono;
        clock_gettime(CLOCK_REALTIME, &ts);
        clock_gettime(CLOCK_MONOTONIC, &mono);
        printf("%lld.%09ld %lld.%09ld\n", (long long)ts.tv_sec, ts.tv_nsec, (long long)mono.tv_sec,
               mono.tv_nsec);
        return 0;
    }
    if (argc >= 3 && !strcmp(argv[1], "listen")) {
        const char *inhibit = argc >= 5 && !strcmp(argv[3], "--inhibit") ? argv[4] : NULL;
        logfd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (logfd < 0)
            return 2;
        return listen_loop(connect_bus(), inhibit);
    }
    if (argc == 5 && !strcmp(argv[1], "save"))
        return request(connect_bus(), "Save", argv[2], argv[3], argv[4]);
    if (argc == 5 && !strcmp(argv[1], "restore"))
        return request(connect_bus(), "Restore", argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: vms-clock-tool listen LOG [--inhibit REASON] | save LABEL P S | "
                    "restore STATE P S | now\n");
    return 2;
}
