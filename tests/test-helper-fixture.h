/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * test-helper-fixture.h — component-test rig for vmstate-helperd: a private
 * dbus-daemon, the real helper binary, a fake host bridge written with
 * common/ (listening unix sockets stand in for the two virtio-serial ports),
 * and D-Bus test clients.
 *
 * Every wait has a timeout: a broken helper fails a test, never hangs it.
 */
#ifndef TEST_HELPER_FIXTURE_H
#define TEST_HELPER_FIXTURE_H

#include <dbus/dbus.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "vms-channel.h"
#include "vms-proto.h"

#define FX_MSGQ 256

struct fx {
    char dir[256];
    char bus_address[512];
    pid_t dbus_pid;
    pid_t helper_pid;
    char helper_log[300];
    /* fake bridge */
    int listen_a, listen_b;
    struct vms_channel a; /* reads what the helper sends on port A */
    struct vms_channel b; /* writes what the bridge sends on port B */
    struct vms_msg *rxq[FX_MSGQ];
    unsigned rx_n;
    uint64_t epoch;
    uint64_t seq;
};

struct fx_opts {
    const char *extra_config; /* appended to [helper] */
    int allow_me;             /* put the test's uid in allow_users (default 1 via fx_start) */
    int no_ports;             /* do not configure ports */
};

/* Start dbus-daemon, the fake bridge's sockets and the helper; wait until it owns its name. */
void fx_start(struct fx *f, const struct fx_opts *o);
void fx_stop(struct fx *f);
/* Start only the bus (libvmstate tests against a fake or no helper). */
void fx_start_bus(struct fx *f);
/* The same with @extra inside <busconfig> (e.g. a <limit>). */
void fx_start_bus_with(struct fx *f, const char *extra);
/* Start (again) the helper with @o; fx_start does this. */
void fx_start_helper(struct fx *f, const struct fx_opts *o);

/* Fake bridge. */
void fx_bridge_accept(struct fx *f, int timeout_ms);
void fx_bridge_hangup(struct fx *f);
/* Wait for the next message of @type from the helper (others are kept in order). NULL on timeout.
 */
struct vms_msg *fx_bridge_expect(struct fx *f, enum vms_msg_type type, int timeout_ms);
/* Count messages of @type received so far (pumps for @wait_ms first). */
unsigned fx_bridge_count(struct fx *f, enum vms_msg_type type, int wait_ms);
void fx_bridge_send(struct fx *f, const struct vms_msg *m);
void fx_bridge_send_raw(struct fx *f, const void *data, size_t len);
/* Accept, read Hello, answer Welcome with @epoch (caps VMS_CAP_ALL). */
void fx_bridge_handshake(struct fx *f, uint64_t epoch);
/* The same with the Welcome announcing @caps (e.g. VMS_CAP_KNOWN for clock and prepare). */
void fx_bridge_handshake_caps(struct fx *f, uint64_t epoch, uint32_t caps);
/* Prepare{request_id, label, timeout_ms = 10000}: a save is about to start. */
void fx_bridge_prepare(struct fx *f, const char *request_id, const char *label);
/* Clock{time_ns = CLOCK_REALTIME now + @offset_ns, reason}. */
void fx_bridge_clock(struct fx *f, int64_t offset_ns, const char *reason);
/* Notice{reason, message}. */
void fx_bridge_notice(struct fx *f, const char *reason, const char *message);
/* Send an Event for @request_id with the fields a completion carries. */
void fx_bridge_event(struct fx *f, const char *request_id, const char *op, uint32_t status,
                     const char *app_id, const char *app_data, const char *state_id, uint64_t seq);
void fx_msg_free(struct vms_msg *m);

/* D-Bus clients. */
DBusConnection *fx_client(struct fx *f);
/* A client whose bus credentials say @uid (the test must run as root unless @uid is its own). */
DBusConnection *fx_client_as(struct fx *f, uid_t uid);
void fx_client_close(DBusConnection *c);
/* The match rules of every connection on @c's bus (Debug.Stats.GetAllMatchRules, dbus-daemon
 * built with --enable-stats): "unique-name<TAB>rule" lines in @out. */
void fx_match_rules(DBusConnection *c, char *out, size_t size);
/* The unique name that owns @name on @c's bus (GetNameOwner), in @out; asserts it has one. */
void fx_name_owner(DBusConnection *c, const char *name, char *out, size_t len);
/* Call a request method; returns the reply or NULL with *err_name set (static storage) and
 * the error's text in fx_error_message. */
extern char fx_error_message[512];
DBusMessage *fx_call(DBusConnection *c, const char *member, int timeout_ms, const char **err_name,
                     int first_type, ...);
/* Save(label, app_id, data, {principal, secret}) → request id (static buffer) or NULL + err. */
const char *fx_save(DBusConnection *c, const char *label, const char *app_id, const char *data,
                    const char **err_name);
int fx_register(DBusConnection *c, const char *app_id);
/* Wait for signal @member of the helper; NULL on timeout. Caller unrefs. */
DBusMessage *fx_wait_signal(DBusConnection *c, const char *member, int timeout_ms);
/* The member of the next signal of the helper's on @c, which stays queued for fx_wait_signal:
 * what order the signals came in. NULL when none comes within @timeout_ms. */
const char *fx_peek_signal(DBusConnection *c, int timeout_ms);
/* Completed's request id, op, status, app_id, app_data (as a string) */
void fx_completed_args(DBusMessage *m, const char **request_id, const char **op, uint32_t *status,
                       const char **app_id, char *app_data, size_t cap, uint64_t *epoch);

/* ms monotonic */
uint64_t fx_now_ms(void);
/* ns since the Unix epoch (CLOCK_REALTIME), what the bridge sends in its time fields */
uint64_t fx_realtime_ns(void);
/* @ms, or 3 times it when the helper runs under valgrind (VMSTATE_TEST_VALGRIND), which
 * makes it that much slower. For waits and for upper bounds on how long the helper takes;
 * under valgrind those bounds check less (the plain run checks the timing). */
uint64_t fx_ms(uint64_t ms);
/* How late (s) a time the helper reads may be: 0.1, or 1.0 under valgrind. */
double fx_late_s(void);

#endif
