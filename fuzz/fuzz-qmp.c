/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fuzz-qmp — the host bridge's QMP backend (backend-qmp.c) reading what
 * "QEMU" sends on the monitor socket: the greeting, the capabilities reply,
 * id-matched replies (query-jobs, query-named-block-nodes, query-balloon,
 * query-memory-size-summary, query-status, query-block, errors with their
 * desc), and events (JOB_STATUS_CHANGE, BLOCK_IO_ERROR, anything else).
 * Some of those strings (job and I/O error texts) can be influenced by the
 * guest, and the backend passes them on: every text it hands to the bridge
 * must be printable ASCII, which the target checks.
 *
 * The backend connects to a listening UNIX socket in a private directory;
 * the target accepts and plays the monitor. The first input byte is a mode:
 *   bit 0     the target sends a valid greeting and answers qmp_capabilities
 *             itself (on every connection) before it sends the input;
 *             otherwise the input has to do it (the capabilities id is 1)
 *   bits 1-2  the snapshot operation started once QMP is ready: save,
 *             restore, delete, or recover of a save (a query-jobs first)
 *   bit 3     at the end, let every deadline pass (command and job timeouts)
 * Once ready, the target starts, in this order (ids 2..8 on a first
 * connection): the snapshot operation, has_snapshot, query_memory,
 * query_status, query_block, set_balloon, cont. Later commands (query-jobs,
 * job-dismiss, the memory summary, the recovery's block-node query) take
 * the next ids. If the rest of the input holds "\n#reconnect\n", the part
 * after it is sent on a second connection, after the target has closed the
 * first one (a lost connection mid-job, re-judged once QMP is back: the
 * capabilities command there takes the next id).
 *
 * Everything is non-blocking with zero timeouts and a bounded number of loop
 * turns. Seeds: fuzz/corpus/qmp/.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "backend.h"
#include "bridge-config.h"
#include "loop.h"
#include "vms-log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TURNS 24 /* loop turns per phase */

static const char greeting[] =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, "
    "\"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n";
static const char separator[] = "\n#reconnect\n";

static char dir[32], sock_path[64];
static int lfd = -1;
static struct bridge_loop loop;
static struct bridge_vm_config cfg;

/* One run's state. */
static struct bridge_backend *be;
static int sfd = -1;
static double now;
static const uint8_t *out; /* what is left to send on sfd */
static size_t out_len;
static int started;
static int awaiting_caps; /* greeted mode: the greeting is out, capabilities not answered */
static char cmdbuf[512];  /* the start of what the backend sent on this connection */
static size_t cmdlen;

static void cleanup(void)
{
    if (lfd >= 0)
        close(lfd);
    unlink(sock_path);
    rmdir(dir);
}

static void init_once(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};

    vms_log_init("fuzz-qmp", getenv("FUZZ_LOG") ? LOG_DEBUG : -1);
    signal(SIGPIPE, SIG_IGN); /* writes to a closed monitor: EPIPE, as in the daemon */
    snprintf(dir, sizeof(dir), "/tmp/fuzz-qmp-XXXXXX");
    if (!mkdtemp(dir))
        abort();
    snprintf(sock_path, sizeof(sock_path), "%s/qmp.sock", dir);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 8) < 0)
        abort();
    atexit(cleanup);
    if (bridge_loop_init(&loop) < 0)
        abort();
    bridge_vm_config_defaults(&cfg);
    snprintf(cfg.name, sizeof(cfg.name), "vmq");
    snprintf(cfg.qmp, sizeof(cfg.qmp), "%s", sock_path);
    snprintf(cfg.nodes[0], sizeof(cfg.nodes[0]), "disk0");
    snprintf(cfg.nodes[1], sizeof(cfg.nodes[1]), "disk1");
    snprintf(cfg.vmstate_node, sizeof(cfg.vmstate_node), "disk0");
    cfg.n_nodes = 2;
}

/* Texts the backend hands on must be sanitized: printable ASCII only. */
static void check_text(const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    if (n == max)
        abort(); /* not terminated */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
            abort();
}

static void on_done(void *opaque, const struct bridge_backend_result *r)
{
    (void)opaque;
    check_text(r->message, sizeof(r->message));
    check_text(r->run_status, sizeof(r->run_status));
    if (r->n_io > 4)
        abort();
    for (unsigned i = 0; i < r->n_io; i++) {
        check_text(r->io_node[i], sizeof(r->io_node[i]));
        check_text(r->io_status[i], sizeof(r->io_status[i]));
    }
}

static void on_event(void *opaque, const char *name)
{
    (void)opaque;
    if (!name)
        abort();
}

static void on_io_error(void *opaque, const char *node, const char *operation, const char *reason,
                        int nospace, const char *action)
{
    (void)opaque;
    (void)nospace;
    check_text(node, BRIDGE_NODE_NAME_MAX);
    check_text(operation, 16);
    check_text(reason, VMS_STR_MAX + 1);
    check_text(action, 16);
}

static const struct bridge_backend_hooks hooks = {.event = on_event, .io_error = on_io_error};

static void start_operations(unsigned mode)
{
    const struct bridge_backend_ops *o = &bridge_backend_qmp;

    switch ((mode >> 1) & 3) {
    case 0:
        o->save(be, "st-1", "vms-job1", on_done, NULL);
        break;
    case 1:
        o->restore(be, "st-1", "vms-job1", on_done, NULL);
        break;
    case 2:
        o->delete (be, "st-1", "vms-job1", on_done, NULL);
        break;
    default:
        o->recover(be, VMS_OP_SAVE, "st-1", "vms-job1", on_done, NULL);
        break;
    }
    o->has_snapshot(be, "st-1", on_done, NULL);
    o->query_memory(be, on_done, NULL);
    o->query_status(be, on_done, NULL);
    o->query_block(be, on_done, NULL);
    o->set_balloon(be, 1u << 30, on_done, NULL);
    o->cont(be, on_done, NULL);
}

/* Accept the backend's connection (it connects on a tick when down); greet in mode bit 0. */
static void accept_monitor(unsigned mode)
{
    for (int i = 0; i < 4 && sfd < 0; i++) {
        bridge_backend_qmp.tick(be, now);
        sfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    }
    cmdlen = 0;
    awaiting_caps = 0;
    if (sfd >= 0 && (mode & 1) &&
        write(sfd, greeting, sizeof(greeting) - 1) == (ssize_t)sizeof(greeting) - 1)
        awaiting_caps = 1;
}

/* Greeted mode: answer qmp_capabilities (the first command on a connection) by its id. */
static void answer_caps(void)
{
    char line[96], *c, *id;
    int n;

    cmdbuf[cmdlen] = '\0';
    if (!(c = strstr(cmdbuf, "\"qmp_capabilities\"")) || !(id = strstr(c, "\"id\":")) ||
        !strchr(id, '}'))
        return;
    n = snprintf(line, sizeof(line), "{\"return\": {}, \"id\": %llu}\r\n",
                 strtoull(id + 5, NULL, 10));
    if (write(sfd, line, (size_t)n) == n)
        awaiting_caps = 0;
}

/* Send what is left, read and drop the commands, run the backend up to @turns
 * times. Two turns in a row in which nothing moved (nothing sent, nothing read,
 * nothing started) end it early: with the clock fixed, more turns cannot change
 * anything, and each costs a handful of system calls. */
static void pump(unsigned mode, int turns)
{
    char sink[4096];
    ssize_t got;
    int idle = 0;

    for (int i = 0; i < turns && idle < 2; i++) {
        int moved = 0;

        /* greeted: the input goes once QMP is ready and the operations started */
        if (sfd >= 0 && out_len && (!(mode & 1) || bridge_backend_qmp.is_ready(be))) {
            ssize_t n = write(sfd, out, out_len);
            if (n > 0) {
                out += n;
                out_len -= (size_t)n;
                moved = 1;
            }
        }
        bridge_backend_qmp.tick(be, now);
        bridge_loop_run_once(&loop, 0);
        while (sfd >= 0 && (got = read(sfd, sink, sizeof(sink))) > 0) {
            moved = 1;
            size_t k = (size_t)got < sizeof(cmdbuf) - 1 - cmdlen ? (size_t)got
                                                                 : sizeof(cmdbuf) - 1 - cmdlen;
            memcpy(cmdbuf + cmdlen, sink, k);
            cmdlen += k;
        }
        if (awaiting_caps)
            answer_caps();
        if (!started && bridge_backend_qmp.is_ready(be)) {
            started = 1;
            start_operations(mode);
            moved = 1;
        }
        idle = moved || out_len ? 0 : idle + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    unsigned mode;
    const uint8_t *rest, *second = NULL, *sep;
    size_t first_len, second_len = 0;
    int fd;

    if (!ready) {
        init_once();
        ready = 1;
    }
    if (size < 1)
        return 0;
    mode = data[0];
    rest = data + 1;
    first_len = size - 1;
    /* one memmem, not a memcmp per position: libFuzzer hooks each call */
    if ((sep = memmem(rest, first_len, separator, sizeof(separator) - 1))) {
        size_t i = (size_t)(sep - rest);
        second = sep + sizeof(separator) - 1;
        second_len = first_len - i - (sizeof(separator) - 1);
        first_len = i;
    }

    now = 1000.0;
    started = 0;
    sfd = -1;
    be = bridge_backend_qmp.open(&cfg, &loop, 10, 20, &hooks, NULL);
    if (!be)
        return 0;
    accept_monitor(mode);
    out = rest;
    out_len = first_len;
    pump(mode, TURNS);
    out_len = 0;

    if (second) {
        /* QEMU goes away mid-conversation, then comes back */
        if (sfd >= 0)
            close(sfd);
        sfd = -1;
        pump(mode, 2);
        now += 1;
        accept_monitor(mode);
        out = second;
        out_len = second_len;
        pump(mode, TURNS);
        out_len = 0;
    }
    if (mode & 8) {
        now += 100000; /* past every command and job deadline */
        pump(mode, 2);
    }

    bridge_backend_qmp.close(be);
    be = NULL;
    if (sfd >= 0)
        close(sfd);
    sfd = -1;
    while ((fd = accept(lfd, NULL, NULL)) >= 0) /* a reconnect nobody accepted */
        close(fd);
    return 0;
}
