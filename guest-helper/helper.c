/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * helper.c — see helper.h. Protocol handling follows doc/protocol.md.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <libudev.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "helper-bus.h"
#include "helper.h"
#include "vms-log.h"

#define DEDUP_EPOCH 0 /* completions are deduplicated by request id alone (protocol.md, life 6) */

uint64_t helper_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Zero *@h and copy @cfg into it, but for the room of the [apps] entries @cfg does not use
 * (~100 KiB): left alone, those pages of the daemon's static helper are never touched and
 * stay out of its RSS (bench/RESULTS.md §18). Entries past n_apps are never read. */
static void helper_init_memory(struct helper *h, const struct helper_config *cfg)
{
    char *apps = (char *)h->cfg.apps, *apps_end = apps + sizeof(h->cfg.apps);

    memset(h, 0, (size_t)(apps - (char *)h));
    memset(apps_end, 0, (size_t)((char *)(h + 1) - apps_end));
    memcpy(&h->cfg, cfg, offsetof(struct helper_config, apps));
    memcpy(h->cfg.apps, cfg->apps, cfg->n_apps * sizeof(cfg->apps[0]));
    memcpy(&h->cfg.n_apps, &cfg->n_apps, sizeof(*cfg) - offsetof(struct helper_config, n_apps));
}

int helper_init(struct helper *h, const struct helper_config *cfg)
{
    helper_init_memory(h, cfg);
    h->ports = PORTS_DOWN;
    h->session = SESSION_NONE;
    vms_dedup_init(&h->delivered);
    vms_msg_init(&h->last_list, VMS_MSG_EVENT);
    helper_hooks_init(h);
    h->listeners =
        calloc(cfg->max_listeners + cfg->max_listeners_per_uid + 1, sizeof(*h->listeners));
    if (!h->listeners)
        return -1;
    if (vms_channel_init(&h->port_a, "port-a", NULL, 0) < 0 ||
        vms_channel_init(&h->port_b, "port-b", NULL, 0) < 0)
        return -1;
    /* the bridge writes with our encoder: its answers are read without libdbus, and what
     * the canonical decoder refuses (a bridge of another version) by the full one */
    h->port_b.decode = VMS_CHANNEL_DECODE_OURS_FIRST;
    return 0;
}

static void request_free(struct helper_request *r)
{
    vms_msg_clear(&r->msg); /* wipes the secret */
    free(r);
}

static size_t held_cost(const struct vms_msg *ev)
{
    return sizeof(struct helper_held) + ev->app_data_len + ev->n_states * sizeof(*ev->states);
}

static void held_free(struct helper_held *e)
{
    vms_msg_clear(&e->ev);
    free(e);
}

/* Unlink *pp from the held list and free it. */
static void held_remove(struct helper *h, struct helper_held **pp)
{
    struct helper_held *e = *pp;

    *pp = e->next;
    h->n_held--;
    h->held_bytes -= held_cost(&e->ev);
    held_free(e);
}

void helper_free(struct helper *h)
{
    while (h->requests) {
        struct helper_request *r = h->requests;
        h->requests = r->next;
        request_free(r);
    }
    while (h->held)
        held_remove(h, &h->held);
    while (h->deferred) {
        struct helper_held *e = h->deferred;
        h->deferred = e->next;
        held_free(e);
    }
    helper_hooks_free(h);
    for (unsigned i = 0; h->listeners && i < h->n_listeners; i++) {
        free(h->listeners[i].app_id);
        free(h->listeners[i].owner);
    }
    free(h->listeners);
    vms_msg_clear(&h->last_list);
    vms_channel_free(&h->port_a);
    vms_channel_free(&h->port_b);
    if (h->udev_mon)
        udev_monitor_unref(h->udev_mon);
    if (h->udev)
        udev_unref(h->udev);
}

/* ---- bridge connection state ----------------------------------------- */

static void set_bridge_connected(struct helper *h, int connected)
{
    if (h->bridge_connected == connected)
        return;
    h->bridge_connected = connected;
    vms_info(NULL, NULL, "bridge %s", connected ? "connected" : "disconnected");
    helper_bus_property_changed(h, "BridgeConnected");
}

static void send_hello(struct helper *h)
{
    struct vms_msg m;

    if (getrandom(&h->hello_nonce, sizeof(h->hello_nonce), GRND_NONBLOCK) != sizeof(h->hello_nonce))
        h->hello_nonce = helper_now_ms() ^ ((uint64_t)getpid() << 32);
    vms_msg_init(&m, VMS_MSG_HELLO);
    vms_msg_set_u64(&m, VMS_F_VERSION, VMS_PROTO_VERSION);
    vms_msg_set_u64(&m, VMS_F_MIN_VERSION, VMS_PROTO_MIN_VERSION);
    vms_msg_set_u64(&m, VMS_F_CAPS, VMS_CAP_KNOWN);
    vms_msg_set_u64(&m, VMS_F_NONCE, h->hello_nonce);
    if (h->epoch)
        vms_msg_set_u64(&m, VMS_F_EPOCH, h->epoch);
    h->session = SESSION_HELLO_SENT;
    h->hello_sent_ms = helper_now_ms();
    h->hooks.hello_sent_ns = helper_mono_ns();
    vms_channel_send(&h->port_a, &m);
    vms_msg_clear(&m);
    vms_debug(NULL, NULL, "Hello sent (epoch %llu)", (unsigned long long)h->epoch);
}

/* Measure the round trip for the clock (helper-clock.c) while requests keep flowing: a
 * TimeProbe when the bridge takes them (nothing else happens on the host), else a Hello that
 * leaves the session welcomed, its Welcome taken like any other. */
static void send_clock_probe(struct helper *h)
{
    struct helper_clock_refine *r = &h->hooks.refine;
    struct vms_msg m;

    if (!(h->host_caps & VMS_CAP_TIME_PROBE)) {
        send_hello(h);
        h->session = SESSION_WELCOMED;
        r->probe_outstanding = 1;
        return;
    }
    if (getrandom(&r->probe_nonce, sizeof(r->probe_nonce), GRND_NONBLOCK) != sizeof(r->probe_nonce))
        r->probe_nonce = helper_mono_ns() ^ ((uint64_t)getpid() << 32);
    vms_msg_init(&m, VMS_MSG_TIME_PROBE);
    vms_msg_set_u64(&m, VMS_F_NONCE, r->probe_nonce);
    r->probe_outstanding = 1;
    r->probe_sent_ns = helper_mono_ns();
    vms_debug(NULL, NULL, "TimeProbe sent");
    vms_channel_send(&h->port_a, &m);
    vms_msg_clear(&m);
}

static void on_time(struct helper *h, const struct vms_msg *m)
{
    struct helper_clock_refine *r = &h->hooks.refine;

    if (!r->probe_outstanding || !r->probe_nonce || m->nonce != r->probe_nonce) {
        vms_debug(NULL, NULL, "ignored a stale Time (nonce does not match our TimeProbe)");
        return;
    }
    r->probe_outstanding = 0;
    r->probe_nonce = 0;
    helper_clock_welcome(h, m, r->probe_sent_ns);
}

/* Write requests not yet sent in this session, in order, while the channel takes them. @fresh
 * (or NULL) was just encoded as @frame by helper_submit: those bytes are written as they are. */
static void send_requests_with(struct helper *h, const struct helper_request *fresh,
                               const uint8_t *frame, size_t frame_len)
{
    if (h->session != SESSION_WELCOMED)
        return;
    for (struct helper_request *r = h->requests; r; r = r->next) {
        int rc;

        if (r->sent)
            continue;
        rc = r == fresh ? vms_channel_send_frame(&h->port_a, frame, frame_len, "Request",
                                                 r->msg.request_id)
                        : vms_channel_send(&h->port_a, &r->msg);
        if (rc < 0)
            break; /* output queue full: retried when port A drains */
        r->sent = 1;
        vms_debug(NULL, r->msg.request_id, "Request %s sent", r->msg.op);
    }
}

static void send_pending_requests(struct helper *h)
{
    send_requests_with(h, NULL, NULL, 0);
}

/* ---- ports ------------------------------------------------------------ */

static int port_is_device_spec(const char *spec)
{
    return strncmp(spec, "unix:", 5) != 0 && strncmp(spec, "fd:", 3) != 0;
}

/* Find the virtio-serial port called @name; fills @devnode and @syspath. */
static int udev_find_port(struct helper *h, const char *name, char *devnode, size_t devlen,
                          char *syspath, size_t syslen)
{
    struct udev_enumerate *en;
    struct udev_list_entry *e;
    int found = 0;

    if (!h->udev && !(h->udev = udev_new()))
        return 0;
    en = udev_enumerate_new(h->udev);
    if (!en)
        return 0;
    udev_enumerate_add_match_subsystem(en, "virtio-ports");
    udev_enumerate_scan_devices(en);
    udev_list_entry_foreach(e, udev_enumerate_get_list_entry(en))
    {
        struct udev_device *d = udev_device_new_from_syspath(h->udev, udev_list_entry_get_name(e));
        const char *n, *node;

        if (!d)
            continue;
        n = udev_device_get_sysattr_value(d, "name");
        node = udev_device_get_devnode(d);
        if (n && node && !strcmp(n, name)) {
            snprintf(devnode, devlen, "%s", node);
            snprintf(syspath, syslen, "%s", udev_device_get_syspath(d));
            found = 1;
        }
        udev_device_unref(d);
        if (found)
            break;
    }
    udev_enumerate_unref(en);
    return found;
}

/* Open one port from its configured spec. Returns an fd or -1 (errno set). */
static int port_open(struct helper *h, const char *spec, const char *name, char *syspath,
                     size_t syslen)
{
    char devnode[PATH_MAX];
    int fd;

    syspath[0] = '\0';
    if (!spec[0]) {
        if (!udev_find_port(h, name, devnode, sizeof(devnode), syspath, syslen)) {
            errno = ENOENT;
            return -1;
        }
        spec = devnode;
    }
    if (!strncmp(spec, "unix:", 5)) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(spec + 5) >= sizeof(sa.sun_path)) {
            errno = ENAMETOOLONG;
            return -1;
        }
        strcpy(sa.sun_path, spec + 5);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            return -1;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        return fd;
    }
    if (!strncmp(spec, "fd:", 3)) {
        /* An inherited fd (tests): usable once; after a hang-up it stays down. */
        int n = atoi(spec + 3);
        struct stat st;
        if (n < 3 || fstat(n, &st) < 0) {
            errno = EBADF;
            return -1;
        }
        fd = fcntl(n, F_DUPFD_CLOEXEC, 3);
        close(n);
        return fd;
    }
    /* A device node (virtio-serial), FIFO or pty: O_NONBLOCK, since a write to a
     * virtio port whose host side is closed blocks otherwise. */
    return open(spec, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
}

/* SIGIO on host connect/disconnect (virtio-serial), so a hang-up ends without waiting for the
 * timer. */
static void port_enable_sigio(int fd)
{
    int flags = fcntl(fd, F_GETFL);

    if (flags >= 0 && fcntl(fd, F_SETOWN, getpid()) == 0)
        fcntl(fd, F_SETFL, flags | O_ASYNC);
}

/* 1 when the host side of port B is there (no POLLHUP). */
static int port_host_present(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};

    if (poll(&p, 1, 0) < 0)
        return 0;
    return !(p.revents & (POLLHUP | POLLERR | POLLNVAL));
}

/* 1 when fd is a device node that has been deleted (its port was unplugged). */
static int port_node_deleted(int fd)
{
    struct stat st;

    return fd >= 0 && fstat(fd, &st) == 0 && st.st_nlink == 0;
}

static void ports_up(struct helper *h)
{
    h->ports = PORTS_UP;
    vms_info(NULL, NULL, "ports open and host side present; sending Hello");
    send_hello(h);
}

void helper_ports_check(struct helper *h)
{
    static int logged_missing;
    int fa, fb;

    if (h->ports == PORTS_UP)
        return;
    if (h->ports == PORTS_HUNG) {
        if (!h->ports_are_devices ||
            !(port_node_deleted(h->port_a.fd) || port_node_deleted(h->port_b.fd))) {
            if (port_host_present(h->port_b.fd) && port_host_present(h->port_a.fd))
                ports_up(h);
            return;
        }
        /* Unplugged without a hot-plug event reaching us (no udevd, or a missed uevent):
         * the device node we hold was deleted. Let go and look for the ports again. */
        vms_info(NULL, NULL, "ports: device node gone (hot-unplug); looking for the ports again");
        vms_channel_detach(&h->port_a, 1);
        vms_channel_detach(&h->port_b, 1);
        h->ports = PORTS_DOWN;
    }
    fa = port_open(h, h->cfg.request_port, VMS_PORT_REQUEST_NAME, h->port_a_syspath,
                   sizeof(h->port_a_syspath));
    if (fa < 0) {
        if (!logged_missing++)
            vms_info(NULL, NULL, "request port %s not available yet: %s",
                     h->cfg.request_port[0] ? h->cfg.request_port : VMS_PORT_REQUEST_NAME,
                     strerror(errno));
        return;
    }
    fb = port_open(h, h->cfg.event_port, VMS_PORT_EVENT_NAME, h->port_b_syspath,
                   sizeof(h->port_b_syspath));
    if (fb < 0) {
        if (!logged_missing++)
            vms_info(NULL, NULL, "event port %s not available yet: %s",
                     h->cfg.event_port[0] ? h->cfg.event_port : VMS_PORT_EVENT_NAME,
                     strerror(errno));
        close(fa);
        return;
    }
    logged_missing = 0;
    h->ports_are_devices =
        port_is_device_spec(h->cfg.request_port) && port_is_device_spec(h->cfg.event_port);
    vms_channel_attach(&h->port_a, fa);
    vms_channel_attach(&h->port_b, fb);
    if (h->ports_are_devices) {
        port_enable_sigio(fa);
        port_enable_sigio(fb);
    }
    if (port_host_present(fb) && port_host_present(fa)) {
        ports_up(h);
    } else {
        h->ports = PORTS_HUNG;
        vms_info(NULL, NULL, "ports open; host side not connected yet");
    }
}

void helper_ports_hangup(struct helper *h, const char *why)
{
    if (h->ports == PORTS_DOWN)
        return;
    vms_info(NULL, NULL, "ports: %s", why);
    set_bridge_connected(h, 0);
    h->session = SESSION_NONE;
    /* Nothing written for the old session matters now: the next Hello starts
     * over and requests are resent from our own list. */
    h->port_a.tx_len = 0;
    for (struct helper_request *r = h->requests; r; r = r->next)
        r->sent = 0;
    if (h->ports_are_devices && h->port_a.fd >= 0 && h->port_b.fd >= 0) {
        /* A virtio port stays ours while the host is away: wait for SIGIO or the timer. */
        vms_deframer_reset(&h->port_b.rx);
        h->ports = PORTS_HUNG;
    } else {
        vms_channel_detach(&h->port_a, 1);
        vms_channel_detach(&h->port_b, 1);
        h->ports = PORTS_DOWN;
    }
    h->next_recheck_ms = helper_now_ms() + h->cfg.recheck_interval_ms;
}

static void ports_removed(struct helper *h, const char *why)
{
    helper_ports_hangup(h, why);
    vms_channel_detach(&h->port_a, 1);
    vms_channel_detach(&h->port_b, 1);
    h->ports = PORTS_DOWN;
}

void helper_port_b_readable(struct helper *h)
{
    int r = vms_channel_read(&h->port_b, 0, helper_on_port_b_msg, h);

    if (r == 0)
        helper_ports_hangup(h, "event port: host side closed");
    else if (r < 0)
        helper_ports_hangup(h, strerror(errno));
}

void helper_port_a_writable(struct helper *h)
{
    int r = vms_channel_flush(&h->port_a);

    if (r < 0) {
        helper_ports_hangup(h, "request port: write failed");
        return;
    }
    if (r == 1)
        send_pending_requests(h);
}

void helper_udev_event(struct helper *h)
{
    struct udev_device *d;

    if (!h->udev_mon)
        return;
    while ((d = udev_monitor_receive_device(h->udev_mon))) {
        const char *action = udev_device_get_action(d);
        const char *sys = udev_device_get_syspath(d);

        if (action && sys && !strcmp(action, "remove") &&
            (!strcmp(sys, h->port_a_syspath) || !strcmp(sys, h->port_b_syspath))) {
            ports_removed(h, "port removed (hot-unplug)");
        } else if (action && !strcmp(action, "add")) {
            vms_debug(NULL, NULL, "udev: %s added", sys ? sys : "?");
            helper_ports_check(h);
        }
        udev_device_unref(d);
    }
}

void helper_sigio(struct helper *h)
{
    if (h->ports == PORTS_HUNG) {
        helper_ports_check(h);
    } else if (h->ports == PORTS_UP && h->ports_are_devices &&
               (!port_host_present(h->port_b.fd) || !port_host_present(h->port_a.fd))) {
        helper_ports_hangup(h, "host side disconnected");
    }
}

/* ---- delivery --------------------------------------------------------- */

#define HELPER_TRIM_AFTER_FANOUT 64   /* signals in one delivery */
#define HELPER_TRIM_DELAY_MS     1000 /* time for libdbus to write them out */

/* 1 if @owner is registered for exactly @app_id. */
static int has_exact(const struct helper *h, const char *owner, const char *app_id)
{
    for (unsigned i = 0; i < h->n_listeners; i++)
        if (!strcmp(h->listeners[i].owner, owner) && !strcmp(h->listeners[i].app_id, app_id))
            return 1;
    return 0;
}

/* Emit to the listeners of ev->app_id (and to "*" watchers, once per connection). Returns
 * the number of exact listeners. */
static int deliver_now(struct helper *h, const struct vms_msg *ev, int include_watchers)
{
    const char **owners;
    unsigned n = 0;
    int exact = 0;

    if (h->n_listeners == 0)
        return 0;
    owners = malloc(h->n_listeners * sizeof(*owners));
    if (!owners) {
        vms_err(NULL, ev->request_id, "out of memory delivering a completion");
        return 0;
    }
    for (unsigned i = 0; i < h->n_listeners; i++) {
        const struct helper_listener *l = &h->listeners[i];
        if (!strcmp(l->app_id, ev->app_id)) {
            exact++;
            owners[n++] = l->owner;
        } else if (include_watchers && !strcmp(l->app_id, "*") &&
                   !has_exact(h, l->owner, ev->app_id)) {
            owners[n++] = l->owner;
        }
    }
    helper_bus_emit_completed(h, owners, n, ev);
    free(owners);
    if (n >= HELPER_TRIM_AFTER_FANOUT && !h->trim_at_ms)
        h->trim_at_ms = helper_now_ms() + HELPER_TRIM_DELAY_MS;
    return exact;
}

static int msg_copy(struct vms_msg *dst, const struct vms_msg *src)
{
    *dst = *src;
    dst->app_data = NULL;
    dst->states = NULL;
    if (src->app_data_len) {
        dst->app_data = malloc(src->app_data_len);
        if (!dst->app_data)
            return -1;
        memcpy(dst->app_data, src->app_data, src->app_data_len);
    }
    if (src->n_states) {
        dst->states = malloc(src->n_states * sizeof(*src->states));
        if (!dst->states) {
            free(dst->app_data);
            dst->app_data = NULL;
            return -1;
        }
        memcpy(dst->states, src->states, src->n_states * sizeof(*src->states));
    }
    return 0;
}

static void send_ack(struct helper *h, const struct vms_msg *ev);

/* 1 if a registration for @app_id was refused for the listener limits within the grace
 * period. */
static int app_refused_recently(const struct helper *h, const char *app_id)
{
    uint64_t now = helper_now_ms();

    for (unsigned i = 0; i < HELPER_REFUSED_MAX; i++)
        if (h->refused[i].until_ms > now && !strcmp(h->refused[i].app_id, app_id))
            return 1;
    return 0;
}

/*
 * A completion leaves without reaching a listener: ack it (processed), unless its app's
 * registration was refused for the limits: then it was not delivered through no fault of the
 * app, so it stays unacked in the bridge's journal and is resent in the next session (and
 * forgotten here, so that the resend is delivered, not dropped as a duplicate).
 */
static void drop_completion(struct helper *h, const struct vms_msg *ev, int acked, int refused,
                            const char *why)
{
    h->events_dropped++;
    if (acked || ev->seq == 0) {
        vms_info(NULL, ev->request_id, "dropped %s completion for app %s: %s", ev->op, ev->app_id,
                 why);
        return;
    }
    if (refused || app_refused_recently(h, ev->app_id)) {
        vms_warn(NULL, ev->request_id,
                 "%s completion for app %s not delivered (%s; its listener was refused for the "
                 "listener limits): not acked, the bridge sends it again next session",
                 ev->op, ev->app_id, why);
        vms_dedup_forget(&h->delivered, DEDUP_EPOCH, ev->request_id);
        return;
    }
    vms_info(NULL, ev->request_id, "dropped %s completion for app %s: %s", ev->op, ev->app_id, why);
    send_ack(h, ev);
}

/* Hold @ev for a late listener; @acked: it was acked already (else it is when it leaves). */
static void hold_event(struct helper *h, const struct vms_msg *ev, int acked)
{
    struct helper_held *e, **tail;

    if (h->cfg.grace_period_ms == 0 || h->cfg.max_held == 0) {
        drop_completion(h, ev, acked, 0, "no listener");
        return;
    }
    while (h->held && (h->n_held >= h->cfg.max_held ||
                       h->held_bytes + held_cost(ev) > h->cfg.max_held_bytes)) {
        vms_warn(NULL, h->held->ev.request_id,
                 "held events over max_held=%u or max_held_bytes=%zu: the oldest goes",
                 h->cfg.max_held, h->cfg.max_held_bytes);
        drop_completion(h, &h->held->ev, h->held->acked, h->held->refused, "held too long");
        held_remove(h, &h->held);
    }
    e = calloc(1, sizeof(*e));
    if (!e || msg_copy(&e->ev, ev) < 0) {
        free(e);
        vms_err(NULL, ev->request_id, "out of memory holding an event");
        if (!acked)
            send_ack(h, ev); /* processed: we cannot keep it */
        return;
    }
    e->acked = acked;
    e->refused = app_refused_recently(h, ev->app_id);
    e->deadline_ms = helper_now_ms() + h->cfg.grace_period_ms;
    for (tail = &h->held; *tail; tail = &(*tail)->next)
        ;
    *tail = e;
    h->n_held++;
    h->held_bytes += held_cost(&e->ev);
    vms_info(NULL, ev->request_id, "holding %s completion for app %s for %u ms (no listener yet)",
             ev->op, ev->app_id, h->cfg.grace_period_ms);
}

/* StateSaved / StateDeleted for a successful save or delete, to every registered listener
 * (each passed the allow-list and its app id's binding); no app data. */
static void announce_state_change(struct helper *h, const struct vms_msg *ev)
{
    const char *member;
    const char **owners;
    unsigned n = 0;

    if (ev->status != VMS_STATUS_OK || !ev->state_id[0] || h->n_listeners == 0)
        return;
    if (!strcmp(ev->op, "save"))
        member = "StateSaved";
    else if (!strcmp(ev->op, "delete"))
        member = "StateDeleted";
    else
        return;
    owners = malloc(h->n_listeners * sizeof(*owners));
    if (!owners) {
        vms_err(NULL, ev->request_id, "out of memory announcing %s", member);
        return;
    }
    for (unsigned i = 0; i < h->n_listeners; i++) {
        unsigned j = 0;
        while (j < n && strcmp(owners[j], h->listeners[i].owner) != 0)
            j++;
        if (j == n) /* once per connection */
            owners[n++] = h->listeners[i].owner;
    }
    helper_bus_emit_state_change(h, member, owners, n, ev);
    free(owners);
}

/*
 * Deliver @ev to its app's listeners now, defer it until Restored, or hold it for a late
 * listener. @acked: the caller acked it already. Returns 1 when the hold took charge of the
 * ack (sent when the completion leaves the hold, or not at all, see drop_completion): the
 * caller must not ack it; 0 when the caller acks it.
 */
static int deliver(struct helper *h, const struct vms_msg *ev, int acked)
{
    int delivered;

    if (h->hooks.restore_pending || h->hooks.run[HOOK_POST_RESTORE].active) {
        /* a restore is being finished: Restored goes out first (helper-hooks.c) */
        struct helper_held *e = calloc(1, sizeof(*e)), **tail;
        if (e && msg_copy(&e->ev, ev) == 0) {
            for (tail = &h->deferred; *tail; tail = &(*tail)->next)
                ;
            *tail = e;
            vms_debug(NULL, ev->request_id, "%s completion deferred until Restored", ev->op);
            return 0;
        }
        free(e);
    }
    if (!ev->app_id[0]) {
        announce_state_change(h, ev);
        vms_warn(NULL, ev->request_id, "dropped %s event without an app id", ev->op);
        h->events_dropped++;
        return 0;
    }
    /* Completed first, to the app that waits for it; then StateSaved to every listener. The
     * other order made the requester wait for each listener's wake-up on a guest's one vCPU
     * (bench-tcg: 3-10 ms of a save's overhead). */
    delivered = deliver_now(h, ev, 1);
    announce_state_change(h, ev);
    if (delivered > 0)
        return 0;
    hold_event(h, ev, acked);
    return 1;
}

void helper_deliver_deferred(struct helper *h)
{
    while (h->deferred) {
        struct helper_held *e = h->deferred;
        h->deferred = e->next;
        deliver(h, &e->ev, 1); /* acked when it arrived */
        held_free(e);
    }
}

/* 1 if request @id waits in the hold, not acked yet. */
static int held_unacked(const struct helper *h, const char *id)
{
    for (const struct helper_held *e = h->held; e; e = e->next)
        if (!e->acked && !strcmp(e->ev.request_id, id))
            return 1;
    return 0;
}

void helper_deliver_held(struct helper *h, const char *app_id)
{
    struct helper_held **pp = &h->held;

    while (*pp) {
        struct helper_held *e = *pp;
        if (!strcmp(e->ev.app_id, app_id)) {
            vms_info(NULL, e->ev.request_id, "delivering held %s completion to app %s", e->ev.op,
                     app_id);
            deliver_now(h, &e->ev, 0);
            if (!e->acked)
                send_ack(h, &e->ev);
            held_remove(h, pp);
        } else {
            pp = &e->next;
        }
    }
}

/* ---- port B messages --------------------------------------------------- */

static struct helper_request *request_take(struct helper *h, const char *request_id)
{
    for (struct helper_request **pp = &h->requests; *pp; pp = &(*pp)->next) {
        struct helper_request *r = *pp;
        if (!strcmp(r->msg.request_id, request_id)) {
            *pp = r->next;
            h->n_requests--;
            return r;
        }
    }
    return NULL;
}

static void on_welcome(struct helper *h, const struct vms_msg *m)
{
    uint32_t v;

    if ((h->session != SESSION_HELLO_SENT &&
         !(h->hooks.refine.probe_outstanding && !h->hooks.refine.probe_nonce)) ||
        m->nonce != h->hello_nonce) {
        vms_debug(NULL, NULL, "ignored a stale Welcome (nonce does not match our Hello)");
        return;
    }
    if (vms_msg_has(m, VMS_F_STATUS) && m->status != VMS_STATUS_OK) {
        vms_err(NULL, NULL, "bridge refused our Hello: %s: %s", vms_status_name(m->status),
                m->message[0] ? m->message : vms_status_str(m->status));
        return; /* Hello is retried on the timer */
    }
    v = m->version;
    if (v < VMS_PROTO_MIN_VERSION || v > VMS_PROTO_VERSION) {
        vms_err(NULL, NULL, "bridge chose protocol version %u, we speak %u..%u", v,
                VMS_PROTO_MIN_VERSION, VMS_PROTO_VERSION);
        return;
    }
    if (!h->hooks.refine.probe_nonce)
        h->hooks.refine.probe_outstanding = 0; /* a TimeProbe's Time may still come */
    h->version = v;
    h->host_caps = vms_msg_has(m, VMS_F_CAPS) ? m->caps : 0;
    h->session = SESSION_WELCOMED;
    /* one-way delay estimate for the host's clock readings: half the smallest Hello ->
     * Welcome round trip seen (larger ones include the bridge's own work) */
    {
        uint64_t half = (helper_mono_ns() - h->hooks.hello_sent_ns) / 2;
        if (!h->hooks.clock_delay_ns || half < h->hooks.clock_delay_ns)
            h->hooks.clock_delay_ns = half;
    }
    if (h->epoch && m->epoch > h->epoch) {
        /* The timeline moved without us seeing its Timeline message. */
        vms_info(NULL, NULL, "epoch %llu -> %llu (from Welcome)", (unsigned long long)h->epoch,
                 (unsigned long long)m->epoch);
        h->epoch = m->epoch;
        /* a restore: the clock may go back; this Welcome is the precise time source */
        helper_restore_begin(h, "", h->epoch, NULL, 0);
        helper_clock_welcome(h, m, h->hooks.hello_sent_ns);
        helper_bus_property_changed(h, "Epoch");
    } else {
        if (m->epoch != h->epoch) {
            h->epoch = m->epoch;
            helper_bus_property_changed(h, "Epoch");
        }
        if (!helper_clock_welcome(h, m, h->hooks.hello_sent_ns) && vms_msg_has(m, VMS_F_TIME_NS))
            helper_clock_sync(h, m->time_ns, "connect", 0, NULL);
    }
    vms_info(NULL, NULL, "Welcome: protocol %u, epoch %llu", v, (unsigned long long)h->epoch);
    set_bridge_connected(h, 1);
    send_pending_requests(h);
}

static void on_reply(struct helper *h, const struct vms_msg *m)
{
    struct helper_request *r = request_take(h, m->request_id);

    if (!r) {
        vms_debug(NULL, m->request_id, "Reply for a request we no longer hold");
        return;
    }
    if (m->status != VMS_STATUS_OK)
        vms_info(NULL, m->request_id, "bridge refused %s: %s: %s", r->msg.op,
                 vms_status_name(m->status), m->message[0] ? m->message : "");
    else
        vms_debug(NULL, m->request_id, "bridge accepted %s", r->msg.op);
    request_free(r);
}

static void send_ack(struct helper *h, const struct vms_msg *ev)
{
    struct vms_msg a;

    if (!ev->seq)
        return; /* not journaled on the host (a refusal, a read-only answer): nothing to ack */
    vms_msg_init(&a, VMS_MSG_ACK);
    vms_msg_set_str(&a, VMS_F_REQUEST_ID, ev->request_id);
    vms_msg_set_u64(&a, VMS_F_EPOCH, ev->epoch);
    vms_msg_set_u64(&a, VMS_F_SEQ, ev->seq);
    if (vms_channel_send(&h->port_a, &a) == 0)
        h->acks_sent++;
    vms_msg_clear(&a);
}

static void on_event(struct helper *h, const struct vms_msg *m)
{
    struct helper_request *r;

    h->events_in++;
    if (vms_dedup_check_and_add(&h->delivered, DEDUP_EPOCH, m->request_id) != 1) {
        h->events_dup++;
        if (held_unacked(h, m->request_id)) { /* acked when it leaves the hold */
            vms_info(NULL, m->request_id, "duplicate %s event of a held completion dropped", m->op);
            return;
        }
        vms_info(NULL, m->request_id, "duplicate %s event (epoch %llu seq %llu) acked and dropped",
                 m->op, (unsigned long long)m->epoch, (unsigned long long)m->seq);
        send_ack(h, m);
        return;
    }
    r = request_take(h, m->request_id);
    if (r)
        request_free(r);
    vms_info(NULL, m->request_id, "%s completed: %s%s%s (app %s, epoch %llu)", m->op,
             vms_status_name(m->status), m->message[0] ? ": " : "", m->message,
             m->app_id[0] ? m->app_id : "-", (unsigned long long)m->epoch);
    if (!strcmp(m->op, "list") && m->status == VMS_STATUS_OK) {
        vms_msg_clear(&h->last_list);
        if (msg_copy(&h->last_list, m) == 0)
            helper_bus_property_changed(h, "States");
        else
            vms_msg_init(&h->last_list, VMS_MSG_EVENT);
    }
    /* after delivery: an ack means "processed" (delivered or dropped); a held completion is
     * acked when it leaves the hold */
    if (!deliver(h, m, 0))
        send_ack(h, m);
}

static void on_timeline(struct helper *h, const struct vms_msg *m)
{
    if (m->epoch <= h->epoch) {
        vms_info(NULL, NULL, "ignored Timeline to epoch %llu (we are in %llu)",
                 (unsigned long long)m->epoch, (unsigned long long)h->epoch);
        return;
    }
    /* Hello first, so the bridge's Welcome is on its way while we log, step the clock and
     * tell D-Bus: a restored TCG guest runs cold code, ~35 ms of it here (bench-tcg.py). The
     * Welcome is read after we return, so the restore below is begun by then. */
    uint64_t from = h->epoch;
    h->epoch = m->epoch;
    if (h->ports == PORTS_UP)
        send_hello(h);
    vms_info(NULL, NULL, "new timeline: epoch %llu -> %llu (%s %s)", (unsigned long long)from,
             (unsigned long long)m->epoch, m->reason[0] ? m->reason : "restore",
             m->state_id[0] ? m->state_id : "");
    /* Requests pending in this memory may never have left it: resend after the Welcome (the bridge
     * recognises duplicates by request id). */
    for (struct helper_request *r = h->requests; r; r = r->next)
        r->sent = 0;
    /* clock (backward allowed only here), refined by the Welcome that answers the Hello
     * above; then post-restore.d, then Restored (helper-clock.c, helper-hooks.c) */
    helper_restore_begin(h, m->state_id, h->epoch, m->request_id,
                         vms_msg_has(m, VMS_F_TIME_NS) ? m->time_ns : 0);
    helper_bus_property_changed(h, "Epoch");
}

void helper_on_port_b_msg(void *opaque, struct vms_channel *c, struct vms_msg *m)
{
    struct helper *h = opaque;

    (void)c;
    switch (m->type) {
    case VMS_MSG_WELCOME:
        on_welcome(h, m);
        break;
    case VMS_MSG_REPLY:
        on_reply(h, m);
        break;
    case VMS_MSG_EVENT:
        on_event(h, m);
        break;
    case VMS_MSG_TIMELINE:
        on_timeline(h, m);
        break;
    case VMS_MSG_CLOCK:
        if (vms_msg_has(m, VMS_F_TIME_NS) && strcmp(m->reason, "connect") != 0) {
            /* after a pause: refined by a clock-only Hello (helper-clock.c) */
            if (helper_clock_resume(h, m->time_ns, m->reason) && h->ports == PORTS_UP &&
                h->session == SESSION_WELCOMED)
                send_clock_probe(h);
        } else if (vms_msg_has(m, VMS_F_TIME_NS)) {
            helper_clock_sync(h, m->time_ns, m->reason, 0, NULL);
        } else if (!strcmp(m->reason, "preserve")) {
            /* a group resumed with clock policy "preserve": the guest keeps its own time,
             * continuous from the stop; apps hear that nothing was stepped */
            vms_info(NULL, NULL, "clock: preserved by the host's group policy (not stepped)");
            helper_bus_emit_clock_corrected(h, 0, "preserve");
        }
        if (!strcmp(m->reason, "connect") && h->session == SESSION_WELCOMED &&
            h->ports == PORTS_UP) {
            /* a bridge (re)connected to our port, maybe a new process: let it learn our
             * capabilities (helper_ports_hangup covers the bounces we do notice) */
            vms_info(NULL, NULL, "bridge (re)connected: sending Hello");
            send_hello(h);
        }
        break;
    case VMS_MSG_PREPARE:
        helper_hooks_prepare(h, m);
        break;
    case VMS_MSG_TIME:
        on_time(h, m);
        break;
    case VMS_MSG_NOTICE:
        vms_info(NULL, NULL, "host notice (%s): %s", m->reason, m->message);
        helper_bus_emit_notice(h, m->reason, m->message);
        break;
    default:
        vms_warn(NULL, NULL, "ignored %s on the event port", vms_msg_type_name(m->type));
        break;
    }
}

/* ---- requests --------------------------------------------------------- */

int helper_submit(struct helper *h, struct vms_msg *req)
{
    struct helper_request *r, **tail;
    char err[256];
    uint8_t *frame;
    size_t frame_len;

    if (h->n_requests >= h->cfg.queue_max)
        return h->session == SESSION_WELCOMED ? VMS_STATUS_ERR_BUSY : VMS_STATUS_ERR_UNAVAILABLE;
    if (h->session != SESSION_WELCOMED && !h->cfg.queue_when_disconnected)
        return VMS_STATUS_ERR_UNAVAILABLE;
    if (vms_request_id_new(req->request_id, h->epoch) < 0)
        return VMS_STATUS_ERR_INTERNAL;
    req->fields |= VMS_BIT(VMS_F_REQUEST_ID);
    /* Encoded here: what does not encode is refused now, and these bytes are what is sent when
     * the request can go at once (a later send, after a wait, encodes it again: a request
     * holds no second copy of its app data). */
    if (vms_msg_encode_frame(req, &frame, &frame_len, err, sizeof(err)) < 0) {
        vms_warn(NULL, req->request_id, "request does not encode: %s", err);
        return VMS_STATUS_ERR_INVALID;
    }
    r = calloc(1, sizeof(*r));
    if (!r) {
        explicit_bzero(frame, frame_len);
        free(frame);
        return VMS_STATUS_ERR_INTERNAL;
    }
    r->msg = *req; /* moved: heap members now belong to r */
    vms_msg_init(req, VMS_MSG_REQUEST);
    memcpy(req->request_id, r->msg.request_id, sizeof(req->request_id));
    r->deadline_ms = helper_now_ms() + h->cfg.queue_timeout_ms;
    for (tail = &h->requests; *tail; tail = &(*tail)->next)
        ;
    *tail = r;
    h->n_requests++;
    vms_info(NULL, r->msg.request_id, "%s for app %s (uid %u) %s", r->msg.op, r->msg.app_id,
             r->msg.uid, h->session == SESSION_WELCOMED ? "sent" : "queued: bridge not connected");
    send_requests_with(h, r, frame, frame_len);
    explicit_bzero(frame, frame_len); /* holds the secret */
    free(frame);
    return 0;
}

/* A request that never reached the bridge in time: complete it here with an error. */
static void fail_request(struct helper *h, struct helper_request *r)
{
    struct vms_msg ev;

    vms_msg_init(&ev, VMS_MSG_EVENT);
    vms_msg_set_str(&ev, VMS_F_REQUEST_ID, r->msg.request_id);
    vms_msg_set_str(&ev, VMS_F_OP, r->msg.op);
    vms_msg_set_str(&ev, VMS_F_APP_ID, r->msg.app_id);
    vms_msg_set_u64(&ev, VMS_F_STATUS, VMS_STATUS_ERR_UNAVAILABLE);
    vms_msg_set_u64(&ev, VMS_F_EPOCH, h->epoch);
    vms_msg_set_u64(&ev, VMS_F_SEQ, 0);
    if (r->msg.app_data_len)
        vms_msg_set_app_data(&ev, r->msg.app_data, r->msg.app_data_len);
    if (r->msg.label[0])
        vms_msg_set_str(&ev, VMS_F_LABEL, r->msg.label);
    if (r->msg.state_id[0])
        vms_msg_set_str(&ev, VMS_F_STATE_ID, r->msg.state_id);
    snprintf(ev.message, sizeof(ev.message), "bridge unreachable for %u ms: request not sent",
             h->cfg.queue_timeout_ms);
    ev.fields |= VMS_BIT(VMS_F_MESSAGE);
    vms_warn(NULL, r->msg.request_id, "%s failed: %s", r->msg.op, ev.message);
    vms_dedup_check_and_add(&h->delivered, DEDUP_EPOCH, ev.request_id);
    deliver(h, &ev, 1); /* made here: nothing to ack */
    vms_msg_clear(&ev);
}

/* ---- listeners --------------------------------------------------------- */

/* Remember that @app_id could not register, and mark its held completions. */
static void note_refused(struct helper *h, const char *app_id)
{
    struct helper_refused *r = &h->refused[h->refused_next];

    h->refused_next = (h->refused_next + 1) % HELPER_REFUSED_MAX;
    snprintf(r->app_id, sizeof(r->app_id), "%s", app_id);
    r->until_ms = helper_now_ms() + h->cfg.grace_period_ms;
    for (struct helper_held *e = h->held; e; e = e->next)
        if (!strcmp(e->ev.app_id, app_id))
            e->refused = 1;
}

int helper_listener_add(struct helper *h, const char *app_id, const char *owner, uid_t uid)
{
    unsigned mine = 0, pool = 0, share = h->cfg.max_listeners_per_uid;

    for (unsigned i = 0; i < h->n_listeners; i++) {
        const struct helper_listener *l = &h->listeners[i];
        if (!strcmp(l->app_id, app_id) && !strcmp(l->owner, owner))
            return 0;
        mine += l->uid == uid;
        pool += l->uid != 0;
    }
    if (share && mine >= share) {
        note_refused(h, app_id);
        return -2;
    }
    /* root's registrations have their own share outside the pool (the table holds both) */
    if (uid != 0 ? pool >= h->cfg.max_listeners
                 : !share && h->n_listeners >= h->cfg.max_listeners) {
        note_refused(h, app_id);
        return -1;
    }
    {
        struct helper_listener *l = &h->listeners[h->n_listeners];
        l->app_id = strdup(app_id);
        l->owner = strdup(owner);
        if (!l->app_id || !l->owner) {
            free(l->app_id);
            free(l->owner);
            l->app_id = l->owner = NULL;
            vms_err(NULL, NULL, "out of memory registering a listener for app %s", app_id);
            return -1;
        }
        l->uid = uid;
        h->n_listeners++;
    }
    vms_info(NULL, NULL, "listener %s registered for app %s", owner, app_id);
    return 0;
}

static int listener_remove_if(struct helper *h, const char *app_id, const char *owner)
{
    int removed = 0;

    for (unsigned i = 0; i < h->n_listeners;) {
        struct helper_listener *l = &h->listeners[i];
        if (!strcmp(l->owner, owner) && (!app_id || !strcmp(l->app_id, app_id))) {
            vms_info(NULL, NULL, "listener %s for app %s removed", owner, l->app_id);
            free(l->app_id);
            free(l->owner);
            h->listeners[i] = h->listeners[--h->n_listeners];
            removed++;
        } else {
            i++;
        }
    }
    return removed;
}

int helper_listener_registered(const struct helper *h, const char *owner)
{
    for (unsigned i = 0; i < h->n_listeners; i++)
        if (!strcmp(h->listeners[i].owner, owner))
            return 1;
    return 0;
}

int helper_listener_remove(struct helper *h, const char *app_id, const char *owner)
{
    return listener_remove_if(h, app_id, owner);
}

void helper_listener_owner_gone(struct helper *h, const char *owner)
{
    listener_remove_if(h, NULL, owner);
    helper_hooks_owner_gone(h, owner);
}

/* ---- timers ------------------------------------------------------------ */

static void consider(int64_t *next, uint64_t deadline, uint64_t now)
{
    int64_t in = deadline > now ? (int64_t)(deadline - now) : 0;

    if (*next < 0 || in < *next)
        *next = in;
}

int helper_timers(struct helper *h)
{
    uint64_t now = helper_now_ms();
    int64_t next = -1;

    /* ports down or host away: look again, at a fixed pace (never spin) */
    if (h->ports != PORTS_UP) {
        if (now >= h->next_recheck_ms) {
            helper_ports_check(h);
            h->next_recheck_ms = now + h->cfg.recheck_interval_ms;
        }
        if (h->ports != PORTS_UP)
            consider(&next, h->next_recheck_ms, now);
    }
    /* a restore or a resume refining the guest's clock: Hello again (helper-clock.c) */
    if (h->hooks.refine.active && h->hooks.refine.rehello_ms && h->ports == PORTS_UP &&
        h->session == SESSION_WELCOMED) {
        if (now >= h->hooks.refine.rehello_ms) {
            h->hooks.refine.rehello_ms = 0;
            if (h->hooks.restore_pending && !(h->host_caps & VMS_CAP_TIME_PROBE))
                send_hello(h);
            else
                send_clock_probe(h);
        } else {
            consider(&next, h->hooks.refine.rehello_ms, now);
        }
    }
    /* no Welcome: say Hello again */
    if (h->ports == PORTS_UP && h->session == SESSION_HELLO_SENT) {
        if (now >= h->hello_sent_ms + h->cfg.hello_retry_ms) {
            vms_info(NULL, NULL, "no Welcome after %u ms; sending Hello again",
                     h->cfg.hello_retry_ms);
            send_hello(h);
        }
        consider(&next, h->hello_sent_ms + h->cfg.hello_retry_ms, now);
    }
    /* a large fan-out queued one signal per listener: once they are written, glibc keeps the
     * freed heap; give it back (the guest's RAM is the apps') */
    if (h->trim_at_ms) {
        if (now >= h->trim_at_ms) {
            h->trim_at_ms = 0;
            malloc_trim(0);
        } else {
            consider(&next, h->trim_at_ms, now);
        }
    }
    /* requests that never left the guest */
    for (struct helper_request **pp = &h->requests; *pp;) {
        struct helper_request *r = *pp;
        if (!r->sent && now >= r->deadline_ms) {
            *pp = r->next;
            h->n_requests--;
            fail_request(h, r);
            request_free(r);
            continue;
        }
        if (!r->sent)
            consider(&next, r->deadline_ms, now);
        pp = &r->next;
    }
    /* held events whose grace period ended */
    for (struct helper_held **pp = &h->held; *pp;) {
        struct helper_held *e = *pp;
        if (now >= e->deadline_ms) {
            char why[64];
            snprintf(why, sizeof(why), "no listener registered within %u ms",
                     h->cfg.grace_period_ms);
            drop_completion(h, &e->ev, e->acked, e->refused, why);
            held_remove(h, pp);
            continue;
        }
        consider(&next, e->deadline_ms, now);
        pp = &e->next;
    }
    {
        int hk = helper_hooks_timers(h);
        if (hk >= 0)
            consider(&next, now + (uint64_t)hk, now);
    }
    return next > INT32_MAX ? INT32_MAX : (int)next;
}
