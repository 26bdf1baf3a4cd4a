/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vmstate.h — libvmstate: ask the host to save, list and restore this VM's
 * own state, through vmstate-helperd (D-Bus name org.vmstate.Helper1).
 *
 * Model. Every request function returns a request id at once; the host does
 * the work later and the outcome arrives as an event (Completed) carrying
 * that id. Events are delivered to the app id the handle was opened with:
 * after a restore, the instance of your program that runs in the restored
 * state receives the restore's completion with the app data the requesting
 * instance sent. Receive events either
 *   - from your own main loop: poll vmstate_get_fd() for POLLIN and call
 *     vmstate_dispatch(), which runs your callback (vmstate_listen()); or
 *   - by blocking: vmstate_wait() for one request's completion.
 *
 * Errors. Functions return 0 (or a non-negative count) on success and a
 * negative enum vmstate_error on failure; vmstate_strerror() names the code
 * and vmstate_last_error() gives the sentence for the handle's last failure
 * (e.g. the helper's D-Bus error message).
 *
 * Threads. A handle is not thread-safe: use it from one thread at a time
 * (or lock around every call). Different handles are independent and may be
 * used from different threads at once. Callbacks run in the thread that
 * calls vmstate_dispatch() or vmstate_wait().
 *
 * Memory. Strings in a struct vmstate_event passed to a callback are valid
 * during the callback only; vmstate_wait() hands out an event you own and
 * release with vmstate_event_free().
 */
#ifndef VMSTATE_H
#define VMSTATE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VMSTATE_REQUEST_ID_LEN     32    /* lowercase hex characters */
#define VMSTATE_APP_DATA_MAX       65536 /* bytes of app data per request */
#define VMSTATE_INHIBIT_REASON_MAX 200   /* bytes of a vmstate_inhibit() reason */

typedef struct vmstate vmstate;

enum vmstate_error {
    VMSTATE_OK = 0,
    VMSTATE_E_INVALID = -1, /* bad argument: NULL, over a cap, bad characters */
    VMSTATE_E_NO_MEMORY = -2,
    VMSTATE_E_CONNECT = -3,         /* cannot connect to the D-Bus bus */
    VMSTATE_E_NO_HELPER = -4,       /* vmstate-helperd is not running */
    VMSTATE_E_PERMISSION = -5,      /* the helper (or the bus) refused this user */
    VMSTATE_E_UNAVAILABLE = -6,     /* the host bridge is unreachable and the helper refused */
    VMSTATE_E_BUSY = -7,            /* too many requests waiting for the host; retry later */
    VMSTATE_E_TIMEOUT = -8,         /* nothing within the timeout */
    VMSTATE_E_DISCONNECTED = -9,    /* the bus connection was lost; close the handle */
    VMSTATE_E_NO_CREDENTIALS = -10, /* vmstate_set_credentials() was not called */
    VMSTATE_E_PROTOCOL = -11,       /* the helper answered something unexpected */
    VMSTATE_E_HELPER = -12,         /* another error from the helper: see vmstate_last_error() */
    VMSTATE_E_LIMIT = -13,          /* the helper's listener table is full */
    VMSTATE_E_NOT_FOUND = -14,      /* no such request (vmstate_inhibit: too late) */
};

/* Short English description of an enum vmstate_error. Never NULL. */
const char *vmstate_strerror(int code);

/*
 * Open a handle for application @app_id (1-255 of [A-Za-z0-9._:@-], e.g.
 * "org.example.Notes"; "*" opens a watch-only handle that, for root and the helper's watch_users,
 * receives every app's completions — its requests fail with VMSTATE_E_INVALID). @bus_address NULL
 * means the system bus; tests pass a private bus address. Does not contact the helper (it may start
 * later). On success returns 0 and sets *out; on failure returns VMSTATE_E_INVALID,
 * VMSTATE_E_NO_MEMORY or VMSTATE_E_CONNECT and sets *out to NULL. The handle's match rules
 * are sent here and their answers read by its first call to the bus (vmstate_listen or a
 * request): a bus that refuses them fails that call with VMSTATE_E_CONNECT.
 */
int vmstate_open(const char *bus_address, const char *app_id, vmstate **out);

/* Close the handle (NULL is allowed): unregisters, wipes the secret, frees everything. */
void vmstate_close(vmstate *v);

/*
 * The message for the last failure on @v ("" if none). Valid until the next
 * call on @v. Never contains the secret.
 */
const char *vmstate_last_error(const vmstate *v);

/*
 * Credentials the host bridge checks for every request: @principal (an id)
 * and @secret (at most 255 bytes). Copied; the copy is wiped on close.
 * Returns 0 or VMSTATE_E_INVALID / VMSTATE_E_NO_MEMORY.
 */
int vmstate_set_credentials(vmstate *v, const char *principal, const char *secret);

/*
 * Requests. Each returns 0 at once (never waiting for the host) and writes
 * the request id (VMSTATE_REQUEST_ID_LEN chars + NUL) to @request_id, or a
 * negative error: VMSTATE_E_INVALID (bad argument), VMSTATE_E_NO_CREDENTIALS,
 * VMSTATE_E_NO_HELPER, VMSTATE_E_PERMISSION, VMSTATE_E_UNAVAILABLE,
 * VMSTATE_E_BUSY, VMSTATE_E_TIMEOUT (the helper did not answer within 5 s),
 * VMSTATE_E_DISCONNECTED, VMSTATE_E_HELPER. Before the first request the
 * handle registers as a listener for its app id, so the completion cannot be
 * missed; it is delivered through vmstate_dispatch() or vmstate_wait().
 *
 * @app_data (may be NULL when @len is 0; at most VMSTATE_APP_DATA_MAX bytes)
 * is kept by the host and returned with the completion. For a restore it is
 * how this instance talks to the instance that runs in the restored state.
 */
int vmstate_save(vmstate *v, const char *label, const void *app_data, size_t len,
                 char request_id[VMSTATE_REQUEST_ID_LEN + 1]);
int vmstate_restore(vmstate *v, const char *state_id, const void *app_data, size_t len,
                    char request_id[VMSTATE_REQUEST_ID_LEN + 1]);
/* A follow-up operation inside a restore (vmstate_restore_with): "set-memory" with @arg bytes,
 * or "hostinfo" (arg 0). */
struct vmstate_followup {
    const char *operation;
    uint64_t arg;
};
#define VMSTATE_FOLLOWUPS_MAX 8

/*
 * Restore @state_id and have the host run @followups (@n at most VMSTATE_FOLLOWUPS_MAX) inside
 * the restore, once the state is loaded. Every follow-up is checked against the principal's
 * rights before anything runs; their outcomes arrive in the restore's completion (results,
 * n_results, and their values: bytes/mem_bytes, the hostinfo fields), delivered to the
 * instance in the restored state. A failed follow-up does not undo the restore.
 */
int vmstate_restore_with(vmstate *v, const char *state_id, const void *app_data, size_t len,
                         const struct vmstate_followup *followups, size_t n,
                         char request_id[VMSTATE_REQUEST_ID_LEN + 1]);
/* The list arrives in the completion's states/n_states. */
int vmstate_list(vmstate *v, char request_id[VMSTATE_REQUEST_ID_LEN + 1]);
int vmstate_delete(vmstate *v, const char *state_id, char request_id[VMSTATE_REQUEST_ID_LEN + 1]);
/* free_bytes, mem_bytes, hostname, bridge_version arrive in the completion. */
int vmstate_hostinfo(vmstate *v, char request_id[VMSTATE_REQUEST_ID_LEN + 1]);
/*
 * Ask the host to suspend this VM (one the host bridge manages). Apps get PREPARE_SAVE
 * first; the completion arrives after the host resumed the VM, in the resumed VM.
 */
int vmstate_suspend(vmstate *v, char request_id[VMSTATE_REQUEST_ID_LEN + 1]);
/* @bytes > 0. The completion carries the target in bytes and the size the guest reached in
 * mem_bytes: a guest may stop short (it gave back what it could; message says so). */
int vmstate_set_memory(vmstate *v, uint64_t bytes, char request_id[VMSTATE_REQUEST_ID_LEN + 1]);
/*
 * vmstate_set_memory with @offline 1: on a VM the host bridge manages, the host shuts the
 * guest down, sets its memory to @bytes and boots it again; the completion (mode "offline")
 * reaches this app id's listeners in the new boot. Other VMs refuse it (status 8).
 */
int vmstate_set_memory_offline(vmstate *v, uint64_t bytes,
                               char request_id[VMSTATE_REQUEST_ID_LEN + 1]);

enum vmstate_event_type {
    VMSTATE_EVENT_COMPLETED = 1, /* a request of this app id finished (status 0 = ok) */
    VMSTATE_EVENT_RESTORED,      /* the VM now runs in a restored state (state_id, epoch) */
    VMSTATE_EVENT_BRIDGE,        /* bridge_connected changed */
    /* Broadcast to every listening handle, whatever its app id: the host is about to save this
     * VM (request_id, label). See vmstate_inhibit(). */
    VMSTATE_EVENT_PREPARE_SAVE,
    /* The guest clock was stepped by clock_correction_ns (negative only after a restore);
     * reason: "connect", "resume", "save", "io-error" or "restore". */
    VMSTATE_EVENT_CLOCK_CORRECTED,
    /* Information from the host, best effort (reason, e.g. "io-resumed"; message). */
    VMSTATE_EVENT_NOTICE,
    /* A state of this VM was saved / deleted, by any app (state_id, label, creator = the app
     * that created it, parent_id, epoch). Sent to every listening handle, whatever its app id;
     * never carries app data. */
    VMSTATE_EVENT_STATE_SAVED,
    VMSTATE_EVENT_STATE_DELETED,
};

/* A follow-up's outcome, in a restore's completion (results/n_results). */
struct vmstate_followup_result {
    const char *operation;
    uint32_t status; /* 0 ok, else the protocol's status code */
    const char *message;
};

/* One of the VM's quotas in a hostinfo completion (quotas/n_quotas). */
struct vmstate_quota {
    const char *name; /* "states", "pending", "app-data-bytes" */
    uint64_t limit;   /* 0: no limit */
    uint64_t used;
};

struct vmstate_state {
    const char *id;
    const char *label;
    const char *app_id; /* the app that saved it */
    const char *parent; /* "" for a root state */
    int64_t created;    /* unix seconds */
};

struct vmstate_event {
    enum vmstate_event_type type;
    /* COMPLETED; PREPARE_SAVE: the save's request id */
    const char *request_id;
    const char *operation; /* save, restore, list, delete, hostinfo, set-memory */
    uint32_t status;       /* 0 ok; else the protocol's status code (doc/protocol.md) */
    const char *message;   /* human sentence ("" when ok); NOTICE: the notice */
    const char *state_id;  /* save/restore: the state */
    const char *label;     /* also PREPARE_SAVE */
    const char *app_id;
    const uint8_t *app_data; /* the request's app data (restore: the requester's) */
    size_t app_data_len;
    const char *reason; /* "restored-copy" when replayed into a restored timeline, or "";
                         * CLOCK_CORRECTED and NOTICE: why (see the event types) */
    const char *parent_id;
    const struct vmstate_state *states; /* list */
    size_t n_states;
    uint64_t bytes, free_bytes, mem_bytes; /* set-memory, hostinfo */
    const char *hostname, *bridge_version; /* hostinfo */
    /* COMPLETED and RESTORED */
    uint64_t epoch;
    /* BRIDGE */
    int bridge_connected;
    /* CLOCK_CORRECTED: the correction in nanoseconds (with the helper's clock_sync = dry-run,
     * the step it would have applied). Added at the end of the struct: ABI. */
    int64_t clock_correction_ns;
    /* Added at the end for issue 14 (ABI). STATE_SAVED, STATE_DELETED, and save/delete
     * completions from a newer host: the app that created the state ("" if unknown). */
    const char *creator;
    /* a restore's completion: the follow-ups' outcomes, in the order asked */
    const struct vmstate_followup_result *results;
    size_t n_results;
    /* hostinfo (each 0 / "" when the host did not say) */
    uint64_t host_mem_total, host_mem_available, host_cpus, host_load_milli;
    uint64_t vcpus, mem_boot, mem_min, mem_max;
    const char *hypervisor_version;
    const char *ops; /* space-separated operations this VM's principal may request */
    const struct vmstate_quota *quotas;
    size_t n_quotas;
    /* set-memory: "online", "offline", or "" (an older host) */
    const char *mode;
};

/*
 * An event carries the fields listed for its type; its other string fields are "" and its
 * other numbers 0. Check ev->type and ignore types you do not know: new versions add types
 * (PREPARE_SAVE, CLOCK_CORRECTED and NOTICE were added without changing the soname). Note that
 * a PREPARE_SAVE carries the request id of a save that has not completed yet.
 */
typedef void (*vmstate_event_fn)(vmstate *v, const struct vmstate_event *ev, void *userdata);

/*
 * Register with the helper as a listener for the handle's app id and call
 * @fn (may be NULL: events are then only seen by vmstate_wait()) for each
 * event from vmstate_dispatch()/vmstate_wait(). The registration ends with
 * vmstate_close() or when the process exits; if the helper restarts, the
 * handle registers again by itself. Returns 0 or a negative error
 * (VMSTATE_E_NO_HELPER, VMSTATE_E_PERMISSION, VMSTATE_E_LIMIT, ...).
 */
int vmstate_listen(vmstate *v, vmstate_event_fn fn, void *userdata);

/*
 * The pre-save window. Before the host saves the VM, the helper broadcasts
 * VMSTATE_EVENT_PREPARE_SAVE to every listening handle (every app, not only
 * the one that asked for the save) and waits a short window (the helper's
 * prepare_window_ms, 500 ms by default; no wait while nobody listens). An
 * app that must flush something into the saved state does it in its
 * callback and returns promptly: when the callback returns without having
 * inhibited, the library tells the helper this handle is ready (Proceed),
 * and once every listening connection is ready the save goes on without
 * waiting out the window; it never waits for a callback beyond the window.
 * An app that must not be saved now calls vmstate_inhibit() with the
 * event's request_id from the callback (later, the save may already have
 * started); the requester's completion then has status 14 (inhibited) and a
 * message naming @reason and this process's uid. Events arrive only through
 * vmstate_dispatch()/vmstate_wait(): dispatch promptly while listening.
 *
 * @request_id: VMSTATE_REQUEST_ID_LEN lowercase hex characters; @reason:
 * text of at most VMSTATE_INHIBIT_REASON_MAX bytes without control
 * characters. Needs no credentials and no vmstate_listen(), but the helper's
 * allow-list applies as for requests. Blocks for the helper's answer (at
 * most 5 s). Returns 0 when the save was vetoed, or VMSTATE_E_INVALID (bad
 * argument, checked before calling), VMSTATE_E_NOT_FOUND (no save with that
 * id is being prepared: too late, already inhibited, or never announced),
 * VMSTATE_E_PERMISSION, VMSTATE_E_NO_HELPER, VMSTATE_E_TIMEOUT,
 * VMSTATE_E_DISCONNECTED or VMSTATE_E_HELPER; vmstate_last_error() has the
 * helper's message. Like every call, not thread-safe on one handle; it may
 * be called from the handle's own callback.
 */
int vmstate_inhibit(vmstate *v, const char *request_id, const char *reason);

/*
 * A file descriptor that becomes readable (POLLIN) when vmstate_dispatch()
 * has work. Owned by the handle: do not read or close it. Never fails on an
 * open handle.
 */
int vmstate_get_fd(const vmstate *v);

/*
 * Process what is pending without blocking: calls the callback for each
 * event. Returns the number of events delivered (0 is normal: spurious
 * wake-ups happen), or VMSTATE_E_DISCONNECTED.
 */
int vmstate_dispatch(vmstate *v);

/*
 * Block until the completion of @request_id arrives, at most @timeout_ms
 * (-1: no limit). Other events received meanwhile still go to the callback.
 * On success returns 0 and *out holds the completion (free it with
 * vmstate_event_free()); otherwise VMSTATE_E_TIMEOUT, VMSTATE_E_INVALID (bad
 * id) or VMSTATE_E_DISCONNECTED. A completion already received by a previous
 * vmstate_dispatch() is not kept: wait before dispatching, or use the
 * callback.
 */
int vmstate_wait(vmstate *v, const char *request_id, int timeout_ms, struct vmstate_event **out);

void vmstate_event_free(struct vmstate_event *ev);

/* 1 if the helper reports the host bridge connected, 0 if not, or a negative error. */
int vmstate_bridge_connected(vmstate *v);

/*
 * The helper's last known list of saved states (its States property: the answer to the
 * last ListStates of any caller), without asking the host: what to show while the bridge
 * is unreachable. It may be stale, or empty if nobody listed since the helper started.
 * On success returns 0 and sets *out to a COMPLETED event (operation "list", status 0,
 * no request id) to free with vmstate_event_free(); otherwise *out is NULL and the
 * result is VMSTATE_E_INVALID, VMSTATE_E_NO_HELPER, VMSTATE_E_PERMISSION,
 * VMSTATE_E_TIMEOUT, VMSTATE_E_DISCONNECTED or VMSTATE_E_PROTOCOL.
 */
int vmstate_cached_list(vmstate *v, struct vmstate_event **out);

/* Name of a completion status code (e.g. 6 -> "not-found"). Never NULL. */
const char *vmstate_status_name(uint32_t status);

#ifdef __cplusplus
}
#endif

#endif
