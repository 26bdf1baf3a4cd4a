/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Component test: the libvirt backend (backend-libvirt.c, libvirt-loop.c) against a real
 * libvirtd and a real QEMU (TCG). tests/libvirt/run-backend-test.sh starts a private
 * libvirtd, defines a domain (a blank qcow2 disk, a balloon, the two port channels set up by
 * `vmstate-admin libvirt-setup --apply`) and runs this with VMSTATE_LIBVIRT_URI and
 * VMSTATE_LIBVIRT_DOMAIN set. The test plays the bridge's part for the ports: it listens
 * where the domain XML says and accepts what QEMU dials.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "bridge-config.h"
#include "loop.h"
#include "vms-log.h"

static const struct bridge_backend_ops *ops = &bridge_backend_libvirt;
static struct bridge_loop loop;
static struct bridge_vm_config cfg;
static struct bridge_backend *be;

static struct {
    int ready, lost;
    char events[64][24];
    unsigned n_events;
} seen;

/* the test's side of the two ports */
static struct port {
    char path[BRIDGE_PATH_MAX];
    int listen_fd, conn_fd;
    unsigned accepted;
} ports[2];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Accept what QEMU dialled; a new connection replaces the old (a new QEMU). */
static void ports_poll(void)
{
    for (int i = 0; i < 2; i++) {
        struct port *p = &ports[i];
        int fd;
        if (p->listen_fd < 0)
            continue;
        while ((fd = accept4(p->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
            if (p->conn_fd >= 0)
                close(p->conn_fd);
            p->conn_fd = fd;
            p->accepted++;
        }
        if (p->conn_fd >= 0) {
            char buf[256];
            ssize_t n = read(p->conn_fd, buf, sizeof(buf));
            if (n == 0 || (n < 0 && errno != EAGAIN)) {
                close(p->conn_fd);
                p->conn_fd = -1;
            }
        }
    }
}

static void on_ready(void *o)
{
    (void)o;
    seen.ready++;
}

static void on_lost(void *o)
{
    (void)o;
    seen.lost++;
}

static void on_event(void *o, const char *name)
{
    (void)o;
    if (seen.n_events < 64)
        snprintf(seen.events[seen.n_events++], sizeof(seen.events[0]), "%s", name);
}

static void on_io_error(void *o, const char *node, const char *op, const char *reason, int nospace,
                        const char *action)
{
    (void)o, (void)node, (void)op, (void)reason, (void)nospace, (void)action;
}

static int on_ports_connected(void *o)
{
    (void)o;
    ports_poll();
    return ports[0].conn_fd >= 0 && ports[1].conn_fd >= 0;
}

static const struct bridge_backend_hooks hooks = {
    .ready = on_ready,
    .lost = on_lost,
    .event = on_event,
    .io_error = on_io_error,
    .ports_connected = on_ports_connected,
};

/* Turn the loop (backend tick included) until *@flag or @timeout_s. */
static int run_until(const int *flag, double timeout_s)
{
    double end = now_s() + timeout_s;
    while (!*flag && now_s() < end) {
        bridge_loop_run_once(&loop, 20);
        ops->tick(be, now_s());
        ports_poll();
    }
    return *flag;
}

static struct {
    int done;
    struct bridge_backend_result r;
} call;

static void on_done(void *opaque, const struct bridge_backend_result *r)
{
    (void)opaque;
    cr_assert(!call.done, "done called twice");
    call.done = 1;
    call.r = *r;
}

/* Finish the operation that @rc says was started; the result is in call.r. */
static const struct bridge_backend_result *wait_done(int rc, double timeout_s)
{
    cr_assert_eq(rc, 0, "the operation did not start");
    cr_assert(!call.done, "done called from inside the call");
    cr_assert(run_until(&call.done, timeout_s), "no result in %.0f s", timeout_s);
    call.done = 0;
    return &call.r;
}

static void listen_on(struct port *p, const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};

    snprintf(p->path, sizeof(p->path), "%s", path);
    cr_assert_lt(strlen(path), sizeof(sa.sun_path));
    strcpy(sa.sun_path, path);
    unlink(path);
    p->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    cr_assert_geq(p->listen_fd, 0);
    cr_assert_eq(bind(p->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "bind %s: %s", path,
                 strerror(errno));
    cr_assert_eq(listen(p->listen_fd, 4), 0);
    p->conn_fd = -1;
}

static void setup(void)
{
    const char *uri = getenv("VMSTATE_LIBVIRT_URI"), *dom = getenv("VMSTATE_LIBVIRT_DOMAIN");
    char a[BRIDGE_PATH_MAX], b[BRIDGE_PATH_MAX];

    if (!uri || !dom)
        cr_skip_test("VMSTATE_LIBVIRT_URI/DOMAIN not set: run tests/libvirt/run-backend-test.sh");
    vms_log_init("test-bridge-libvirt", getenv("VMSTATE_TEST_DEBUG") ? LOG_DEBUG : LOG_WARNING);
    memset(&seen, 0, sizeof(seen));
    memset(&call, 0, sizeof(call));
    for (int i = 0; i < 2; i++)
        ports[i].listen_fd = ports[i].conn_fd = -1;
    cr_assert_eq(bridge_loop_init(&loop), 0);
    bridge_vm_config_defaults(&cfg);
    snprintf(cfg.name, sizeof(cfg.name), "lvtest");
    cfg.backend = BRIDGE_BACKEND_LIBVIRT;
    snprintf(cfg.uri, sizeof(cfg.uri), "%s", uri);
    snprintf(cfg.domain, sizeof(cfg.domain), "%s", dom);
    be = ops->open(&cfg, &loop, 100, 1000, &hooks, NULL);
    cr_assert_not_null(be);
    cr_assert(run_until(&seen.ready, 20), "the backend never became ready");
    cr_assert(ops->is_ready(be));
    /* the domain XML names the port sockets: listen there, QEMU dials within its 1 s retry */
    cr_assert_eq(ops->ports(be, a, b, sizeof(a)), 0, "no port channels in the domain XML");
    listen_on(&ports[0], a);
    listen_on(&ports[1], b);
    {
        int both = 0;
        double end = now_s() + 5;
        while (!(both = on_ports_connected(NULL)) && now_s() < end)
            usleep(20000);
        cr_assert(both, "QEMU did not dial the ports");
    }
}

static void teardown(void)
{
    if (be)
        ops->close(be);
    be = NULL;
    for (int i = 0; i < 2; i++) {
        if (ports[i].conn_fd >= 0)
            close(ports[i].conn_fd);
        if (ports[i].listen_fd >= 0) {
            close(ports[i].listen_fd);
            unlink(ports[i].path);
        }
        ports[i].listen_fd = ports[i].conn_fd = -1;
    }
    bridge_loop_free(&loop);
}

TestSuite(libvirt_backend, .init = setup, .fini = teardown, .timeout = 120);

static const struct bridge_backend_result *status_now(void)
{
    return wait_done(ops->query_status(be, on_done, NULL), 10);
}

Test(libvirt_backend, save_restore_delete_list)
{
    const struct bridge_backend_result *r;
    unsigned accepted_before;

    r = wait_done(ops->save(be, "lvt-s1", "vms-req1", on_done, NULL), 60);
    cr_assert_eq(r->status, VMS_STATUS_OK, "save: %s", r->message);
    r = wait_done(ops->has_snapshot(be, "lvt-s1", on_done, NULL), 10);
    cr_assert_eq(r->status, VMS_STATUS_OK);
    r = wait_done(ops->save(be, "lvt-s2", "vms-req2", on_done, NULL), 60);
    cr_assert_eq(r->status, VMS_STATUS_OK, "save 2: %s", r->message);
    /* one snapshot operation at a time */
    cr_assert_eq(ops->save(be, "lvt-s3", "vms-req3", on_done, NULL), 0);
    cr_assert_eq(ops->delete (be, "lvt-s2", "vms-req4", on_done, NULL), -1);
    r = wait_done(0, 60);
    cr_assert_eq(r->status, VMS_STATUS_OK);

    /* revert replaces QEMU: the guest stays paused until the new QEMU has dialled both ports */
    accepted_before = ports[0].accepted + ports[1].accepted;
    r = wait_done(ops->restore(be, "lvt-s1", "vms-req5", on_done, NULL), 60);
    cr_assert_eq(r->status, VMS_STATUS_OK, "restore: %s", r->message);
    cr_assert_geq(ports[0].accepted + ports[1].accepted, accepted_before + 2,
                  "the restored QEMU did not dial both ports before the restore completed");
    cr_assert(ports[0].conn_fd >= 0 && ports[1].conn_fd >= 0);
    r = status_now();
    cr_assert_str_eq(r->run_status, "running", "after the restore: %s", r->run_status);

    r = wait_done(ops->delete (be, "lvt-s2", "vms-req6", on_done, NULL), 30);
    cr_assert_eq(r->status, VMS_STATUS_OK, "delete: %s", r->message);
    r = wait_done(ops->has_snapshot(be, "lvt-s2", on_done, NULL), 10);
    cr_assert_eq(r->status, VMS_STATUS_ERR_NOT_FOUND);
    r = wait_done(ops->restore(be, "lvt-nope", "vms-req7", on_done, NULL), 30);
    cr_assert_eq(r->status, VMS_STATUS_ERR_NOT_FOUND, "restore of a missing snapshot: %d %s",
                 r->status, r->message);
    for (const char *t = "lvt-s1"; t; t = strcmp(t, "lvt-s1") ? NULL : "lvt-s3") {
        r = wait_done(ops->delete (be, t, "vms-req8", on_done, NULL), 30);
        cr_assert_eq(r->status, VMS_STATUS_OK, "delete %s: %s", t, r->message);
    }
    /* a tag that could break the snapshot XML is refused before libvirt sees it */
    cr_assert_eq(ops->save(be, "a<b", "vms-req9", on_done, NULL), -1);
}

Test(libvirt_backend, recover_judges_from_the_snapshot_list)
{
    const struct bridge_backend_result *r;

    r = wait_done(ops->save(be, "lvt-r1", "vms-r1", on_done, NULL), 60);
    cr_assert_eq(r->status, VMS_STATUS_OK, "save: %s", r->message);
    /* a save whose snapshot exists happened; one whose snapshot is absent never started */
    r = wait_done(ops->recover(be, VMS_OP_SAVE, "lvt-r1", "vms-r1", on_done, NULL), 30);
    cr_assert_eq(r->status, VMS_STATUS_OK);
    cr_assert_eq(r->never_started, 0);
    r = wait_done(ops->recover(be, VMS_OP_SAVE, "lvt-r2", "vms-r2", on_done, NULL), 30);
    cr_assert_eq(r->never_started, 1);
    /* a delete whose snapshot is still there never ran; a restore is always run again */
    r = wait_done(ops->recover(be, VMS_OP_DELETE, "lvt-r1", "vms-r3", on_done, NULL), 30);
    cr_assert_eq(r->never_started, 1);
    r = wait_done(ops->recover(be, VMS_OP_RESTORE, "lvt-r1", "vms-r4", on_done, NULL), 30);
    cr_assert_eq(r->never_started, 1);
    r = wait_done(ops->delete (be, "lvt-r1", "vms-r5", on_done, NULL), 30);
    cr_assert_eq(r->status, VMS_STATUS_OK);
    r = wait_done(ops->recover(be, VMS_OP_DELETE, "lvt-r1", "vms-r5", on_done, NULL), 30);
    cr_assert_eq(r->status, VMS_STATUS_OK);
    cr_assert_eq(r->never_started, 0);
}

Test(libvirt_backend, memory_status_block_cont_and_events)
{
    const struct bridge_backend_result *r;
    uint64_t mem;
    int saw_stop = 0, saw_resume = 0;

    r = wait_done(ops->query_memory(be, on_done, NULL), 10);
    cr_assert_eq(r->status, VMS_STATUS_OK);
    mem = r->mem_bytes;
    cr_assert_eq(mem, 96ull << 20, "memory %llu", (unsigned long long)mem);
    /* no balloon driver in this guest (it has no OS): the balloon does not move, and the
     * completion says so after it settled */
    r = wait_done(ops->set_balloon(be, 64ull << 20, on_done, NULL), 30);
    cr_assert_eq(r->status, VMS_STATUS_OK, "%s", r->message);
    cr_assert_eq(r->bytes, 64ull << 20);
    cr_assert_eq(r->mem_bytes, mem);
    cr_assert(strstr(r->message, "stopped at 96 MiB"), "message: %s", r->message);
    r = wait_done(ops->set_balloon(be, mem, on_done, NULL), 30);
    cr_assert_eq(r->status, VMS_STATUS_OK);
    cr_assert_str_empty(r->message);

    r = status_now();
    cr_assert_str_eq(r->run_status, "running");
    r = wait_done(ops->query_block(be, on_done, NULL), 10);
    cr_assert_eq(r->status, VMS_STATUS_OK);
    cr_assert_eq(r->n_io, 0);

    /* a pause from outside (an admin's virsh suspend): STOP, then cont → RESUME */
    cr_assert_eq(system("virsh -q -c \"$VMSTATE_LIBVIRT_URI\" suspend \"$VMSTATE_LIBVIRT_DOMAIN\" "
                        ">/dev/null"),
                 0);
    r = status_now();
    cr_assert_str_eq(r->run_status, "paused");
    r = wait_done(ops->cont(be, on_done, NULL), 10);
    cr_assert_eq(r->status, VMS_STATUS_OK, "%s", r->message);
    r = status_now();
    cr_assert_str_eq(r->run_status, "running");
    /* events arrive through libvirt's loop, which is ours */
    for (double end = now_s() + 5; now_s() < end && !(saw_stop && saw_resume);) {
        bridge_loop_run_once(&loop, 20);
        ops->tick(be, now_s());
        for (unsigned i = 0; i < seen.n_events; i++) {
            saw_stop |= !strcmp(seen.events[i], "STOP");
            saw_resume |= saw_stop && !strcmp(seen.events[i], "RESUME");
        }
    }
    cr_assert(saw_stop && saw_resume, "STOP then RESUME not seen (%u events)", seen.n_events);
}
