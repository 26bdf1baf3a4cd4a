/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * helper.h — vmstate-helperd's core: the two ports, the session with the
 * bridge, the request queue, listeners by app id, events held for late
 * listeners, and the epoch across restores.
 *
 * The core is driven by its owner's event loop (vmstate-helperd.c, or a
 * test/fuzz harness): it never blocks and never sleeps. D-Bus output goes
 * through helper-bus.c; with no bus connection (fuzzing) it is skipped.
 */
#ifndef HELPER_H
#define HELPER_H

#include <dbus/dbus.h>
#include <stdint.h>
#include <sys/types.h>

#include "helper-config.h"
#include "helper-hooks.h"
#include "vms-channel.h"
#include "vms-dedup.h"
#include "vms-proto.h"

struct udev;
struct udev_monitor;

enum helper_port_state {
    PORTS_DOWN, /* not found or not open: rescan/reconnect on the recheck timer */
    PORTS_HUNG, /* open, but the host side is closed: not polled for input */
    PORTS_UP,   /* open and the host side is there */
};

enum helper_session {
    SESSION_NONE,       /* ports not usable */
    SESSION_HELLO_SENT, /* waiting for the Welcome matching hello_nonce */
    SESSION_WELCOMED,   /* requests flow */
};

/* A request not yet answered by the bridge (Reply or Event). */
struct helper_request {
    struct helper_request *next;
    struct vms_msg msg;   /* the Request, secret included (wiped when freed) */
    int sent;             /* written in the current session */
    uint64_t deadline_ms; /* while unsent: fail it at this time */
};

/* Strings allocated to size: 1,000 listeners held 512 KiB of fixed 256-byte fields. */
struct helper_listener {
    char *app_id; /* "*" = every app (root, watch_users) */
    char *owner;  /* D-Bus unique name */
    uid_t uid;    /* its caller's uid: the per-uid share it counts against */
};

/* An Event for an app id with no listener, kept for the grace period. It is acked when it
 * leaves the hold (delivered, or dropped), not before: an app whose registration was refused
 * for the listener limits must not lose its completion to an ack (issue 13, item 9). */
struct helper_held {
    struct helper_held *next;
    struct vms_msg ev;
    uint64_t deadline_ms;
    int acked;   /* already acked (it came through the restore's deferral) */
    int refused; /* a registration for its app id was refused while it waited */
};

/* App ids whose RegisterListener was refused for the limits, remembered for a grace period. */
#define HELPER_REFUSED_MAX 16
struct helper_refused {
    char app_id[VMS_STR_MAX + 1];
    uint64_t until_ms;
};

struct helper {
    struct helper_config cfg;
    DBusConnection *bus; /* NULL when fuzzing */

    /* ports */
    struct vms_channel port_a; /* Request/Hello/Ack out */
    struct vms_channel port_b; /* Welcome/Reply/Event/Timeline in */
    enum helper_port_state ports;
    int ports_are_devices; /* hang-up: keep open and wait (virtio) vs close and reconnect */
    char port_a_syspath[PATH_MAX], port_b_syspath[PATH_MAX];
    struct udev *udev;
    struct udev_monitor *udev_mon;
    uint64_t next_recheck_ms;
    uint64_t trim_at_ms; /* give the heap of a large fan-out back (helper_timers), 0: none */

    /* session */
    enum helper_session session;
    uint64_t hello_nonce;
    uint64_t hello_sent_ms;
    uint32_t version; /* negotiated */
    uint32_t host_caps;
    uint64_t epoch;       /* 0 until the first Welcome */
    int bridge_connected; /* the BridgeConnected property */

    /* requests */
    struct helper_request *requests;
    unsigned n_requests;

    /* listeners and events */
    struct helper_listener *listeners; /* max_listeners + root's share */
    unsigned n_listeners;
    struct helper_refused refused[HELPER_REFUSED_MAX];
    unsigned refused_next;
    struct helper_held *held;
    unsigned n_held;
    size_t held_bytes;
    struct vms_dedup delivered; /* request ids delivered in this memory (key epoch 0) */
    struct vms_msg last_list;   /* the States property */

    /* clock and pre-save/post-restore hooks (helper-hooks.h) */
    struct helper_hooks hooks;
    /* completions that arrived while a restore was being finished (clock, post-restore.d):
     * delivered right after Restored, so listeners see Restored first */
    struct helper_held *deferred;

    /* counters for tests and logs */
    uint64_t events_in, events_dup, events_dropped, acks_sent;
};

/* Monotonic milliseconds. */
uint64_t helper_now_ms(void);

/* Set up @h with @cfg (copied); no ports yet, no bus. Returns 0 or -1. */
int helper_init(struct helper *h, const struct helper_config *cfg);
void helper_free(struct helper *h);

/*
 * Try to find and open the ports (udev or the configured paths). Sends Hello
 * when they open. Safe to call any time; does nothing when they are up.
 */
void helper_ports_check(struct helper *h);
/* The host side went away or an error happened on a port. */
void helper_ports_hangup(struct helper *h, const char *why);
/* Handle readable data on port B (bounded work). */
void helper_port_b_readable(struct helper *h);
/* Port A is writable: flush queued output. */
void helper_port_a_writable(struct helper *h);
/* udev monitor fd is readable. */
void helper_udev_event(struct helper *h);
/* SIGIO: a port's host side connected or disconnected. */
void helper_sigio(struct helper *h);

/* Timers: run what is due, and return ms until the next deadline (-1: none). */
int helper_timers(struct helper *h);

/* Process one decoded message from port B (exported for the fuzz target). */
void helper_on_port_b_msg(void *opaque, struct vms_channel *c, struct vms_msg *m);

/*
 * Submit a Request (@req is moved: the caller must not clear it). The
 * request id is filled in. Returns 0, or a vms_status explaining the
 * refusal (UNAVAILABLE: bridge unreachable and queueing is off or full;
 * BUSY: too many requests outstanding; INVALID: does not encode).
 */
int helper_submit(struct helper *h, struct vms_msg *req);

/*
 * Register @owner (a D-Bus unique name whose caller is @uid) for @app_id. Returns 0, -1 when
 * the non-root pool (max_listeners) is full, or -2 when @uid used its max_listeners_per_uid
 * share (root has its own share outside the pool, so no other uid can starve root's apps). A
 * refusal marks @app_id's held and coming completions as not to be acked when dropped.
 */
int helper_listener_add(struct helper *h, const char *app_id, const char *owner, uid_t uid);
/* 1 if @owner holds at least one registration. */
int helper_listener_registered(const struct helper *h, const char *owner);
/* Returns the number removed. */
int helper_listener_remove(struct helper *h, const char *app_id, const char *owner);
/* A D-Bus unique name went away: drop all its registrations. */
void helper_listener_owner_gone(struct helper *h, const char *owner);
/* Deliver the completions deferred during a restore (after Restored). */
void helper_deliver_deferred(struct helper *h);

/* Deliver events held for @app_id (after a listener registered). */
void helper_deliver_held(struct helper *h, const char *app_id);

#endif
