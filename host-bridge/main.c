/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vmstate-bridged — the host bridge: serves guest requests arriving on each
 * configured VM's port A, runs them on the hypervisor, and reports on port B.
 *
 * Usage: vmstate-bridged [OPTIONS] (see usage() and vmstate-bridged(8))
 * Runs in the foreground (systemd Type=simple) and logs to stderr, or detaches with --daemon.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bridge.h"
#include "cluster.h"
#include "ctl.h"
#include "clone.h"
#include "groups.h"
#include "managed.h"
#include "privsep.h"
#include "verify.h"
#include "vms-daemon.h"
#include "vms-log.h"

#define DEFAULT_CONFIG SYSCONFDIR "/vmstate/vmstate-bridged.conf"
#define LOOP_TICK_MS   100

static int stop_requested;
static int children_exited = 1; /* a SIGCHLD came: reap (and once at start) */

/* Secrets verified by the verifier's threads: the requests that waited go on. */
static void on_verified(struct bridge_watch *w, uint32_t revents)
{
    struct bridge *br = w->opaque;
    (void)revents;
    bridge_verifier_collect(br->verifier);
}

static void on_signal(struct bridge_watch *w, uint32_t revents)
{
    struct signalfd_siginfo si;
    (void)revents;
    if (read(w->fd, &si, sizeof(si)) != (ssize_t)sizeof(si))
        return;
    if (si.ssi_signo == SIGCHLD) {
        children_exited = 1;
        return;
    }
    vms_info(NULL, NULL, "signal %u: stopping", si.ssi_signo);
    stop_requested = 1;
}

/* The VM whose port A reader is @pid (the reader was already forgotten if its port closed). */
static const char *vm_of_reader(pid_t pid, void *opaque)
{
    struct bridge *br = opaque;
    for (size_t i = 0; i < br->n_vms; i++)
        if (br->vms[i].a.reader == pid)
            return br->vms[i].cfg->name;
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: vmstate-bridged [OPTIONS]\n"
            "Serve the guests' requests of the VMs in the configuration (run them on QEMU).\n\n"
            "  -c, --config FILE      configuration (default %s)\n"
            "  -D, --database FILE    override [bridge] database\n"
            "  -n, --check            check the configuration and exit\n"
            "  -v, --verbose          log at debug level\n"
            "      --daemon           detach (init scripts without systemd); implies --syslog\n"
            "      --pidfile FILE     write the daemon's pid to FILE (removed at exit)\n"
            "      --syslog           log to syslog (facility daemon) instead of stderr\n"
            "  -h, --help             this text\n"
            "  -V, --version          print the version\n",
            DEFAULT_CONFIG);
}

int main(int argc, char **argv)
{
    const char *config_path = DEFAULT_CONFIG, *db_override = NULL;
    struct bridge_config cfg;
    struct bridge br;
    struct bridge_watch sigw, verifyw;
    sigset_t mask;
    char err[1024];
    int opt, verbose = 0, check_only = 0, rc = 1, sfd = -1, reader_level = LOG_INFO;
    const char *reader_vm = NULL, *reader_root = NULL, *pidfile = NULL;
    long reader_parent = 0;
    int reader_required = 1, daemonize = 0, use_syslog = 0;
    enum { OPT_DAEMON = 256, OPT_PIDFILE, OPT_SYSLOG };
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"database", required_argument, NULL, 'D'},
                                         {"check", no_argument, NULL, 'n'},
                                         {"verbose", no_argument, NULL, 'v'},
                                         {"daemon", no_argument, NULL, OPT_DAEMON},
                                         {"pidfile", required_argument, NULL, OPT_PIDFILE},
                                         {"syslog", no_argument, NULL, OPT_SYSLOG},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};

    /* whatever the caller's umask: the journal, its WAL/SHM and sockets are ours alone */
    umask(077);
    memset(&br, 0, sizeof(br));
    memset(&cfg, 0, sizeof(cfg));
    br.loop.epfd = -1;
    /* -R -L -P -E -S: internal, the privsep reader's re-exec (privsep.c) */
    while ((opt = getopt_long(argc, argv, "c:D:nvhVR:L:P:E:S:", opts, NULL)) != -1) {
        switch (opt) {
        case 'R':
            reader_vm = optarg;
            break; /* internal: privsep reader */
        case 'L':
            reader_level = atoi(optarg);
            break;
        case 'P':
            reader_parent = atol(optarg);
            break;
        case 'E':
            reader_root = optarg;
            break;
        case 'S':
            reader_required = atoi(optarg) != 0;
            break;
        case 'c':
            config_path = optarg;
            break;
        case 'D':
            db_override = optarg;
            break;
        case 'v':
            verbose = 1;
            break;
        case 'n':
            check_only = 1;
            break;
        case OPT_DAEMON:
            daemonize = use_syslog = 1;
            break;
        case OPT_PIDFILE:
            pidfile = optarg;
            break;
        case OPT_SYSLOG:
            use_syslog = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("vmstate-bridged %s\n", PACKAGE_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "vmstate-bridged: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if (pidfile && !daemonize) {
        fprintf(stderr, "vmstate-bridged: --pidfile goes with --daemon\n");
        return 2;
    }
    if (reader_vm) {
        vms_log_init("vmstate-bridged[reader]", reader_level);
        bridge_privsep_reader_main(reader_vm, reader_parent, reader_root, reader_required);
    }
    vms_log_init("vmstate-bridged", LOG_INFO);
    bridge_privsep_init(argv[0]);
    if (bridge_config_load(&cfg, config_path, err, sizeof(err)) < 0) {
        vms_err(NULL, NULL, "configuration: %s", err);
        goto out;
    }
    if (db_override)
        snprintf(cfg.database, sizeof(cfg.database), "%s", db_override);
    vms_log_init("vmstate-bridged", verbose ? LOG_DEBUG : cfg.log_level);
    if (check_only) {
        /* a backend's module is loaded as the VM would load it (a missing one fails here) */
        for (size_t i = 0; i < cfg.n_vms; i++)
            if (!bridge_backend_for(&cfg.vms[i], &bridge_backend_qmp)) {
                fprintf(stderr, "%s: [vm %s] its backend cannot be loaded\n", config_path,
                        cfg.vms[i].name);
                goto out;
            }
        printf("%s: OK, %zu VM(s)\n", config_path, cfg.n_vms);
        rc = 0;
        goto out;
    }
    if (cfg.privsep && bridge_privsep_prepare(cfg.reader_sandbox_required) < 0 &&
        cfg.reader_sandbox_required)
        goto out;
    if (daemonize && vms_daemonize(pidfile) < 0)
        return 1;
    if (use_syslog)
        vms_log_to_syslog(LOG_DAEMON);
    if (sodium_init() < 0) {
        vms_err(NULL, NULL, "libsodium cannot initialise");
        goto out;
    }
    br.cfg = &cfg;
    br.backend = &bridge_backend_qmp;
    br.group_commit = 1;
    if (bridge_db_open(&br.db, cfg.database, err, sizeof(err)) < 0) {
        vms_err(NULL, NULL, "database: %s", err);
        goto out;
    }
    if (bridge_loop_init(&br.loop) < 0)
        goto out;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGCHLD); /* a reader's exit: reaped when it comes, not every loop turn */
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    bridge_watch_init(&sigw, on_signal, NULL);
    if (sfd < 0 || bridge_watch_add(&br.loop, &sigw, sfd, EPOLLIN) < 0)
        goto out;
    /* after the signal mask: its threads take no signal */
    if (bridge_db_checkpointer_start(&br.db) < 0)
        vms_warn(NULL, NULL, "database: WAL checkpoints stay on the event loop (no thread)");
    br.verifier = bridge_verifier_new(0, bridge_guest_verified);
    bridge_watch_init(&verifyw, on_verified, &br);
    if (!br.verifier ||
        bridge_watch_add(&br.loop, &verifyw, bridge_verifier_fd(br.verifier), EPOLLIN) < 0)
        goto out;

    /* room for the clones a group clone adds while the bridge runs (groups/clone.h): no VM
     * moves once set up */
    br.vms = calloc(BRIDGE_VMS_MAX, sizeof(*br.vms));
    if (!br.vms || bridge_clones_reserve(&cfg) < 0)
        goto out;
    for (size_t i = 0; i < cfg.n_vms; i++) {
        if (bridge_vm_init(&br.vms[i], &br, &cfg.vms[i]) < 0)
            goto out;
        br.n_vms++;
        if (bridge_vm_start(&br.vms[i]) < 0) {
            vms_err(cfg.vms[i].name, NULL, "cannot start");
            goto out;
        }
    }
    if (bridge_clones_load(&br) < 0 || bridge_groups_init(&br) < 0 ||
        bridge_admin_listen(&br, cfg.admin_socket) < 0)
        goto out;
    if (bridge_cluster_open(&br) < 0)
        goto out;
    vms_daemon_ready(1);
    vms_info(NULL, NULL, "vmstate-bridged %s: serving %zu VM(s), database %s", PACKAGE_VERSION,
             cfg.n_vms, cfg.database);
    while (!stop_requested) {
        double now = bridge_now();
        int busy = 0;
        for (size_t i = 0; i < br.n_vms; i++) {
            bridge_vm_tick(&br.vms[i], now);
            /* more backlog to send and room on port B: come back at once */
            busy |= br.vms[i].resend_active && br.vms[i].b.ch.fd >= 0 &&
                    !vms_channel_wants_write(&br.vms[i].b.ch);
        }
        bridge_managed_tick(&br, now);
        bridge_groups_tick(&br, now);
        bridge_cluster_tick(&br, now);
        if (children_exited) {
            children_exited = 0;
            bridge_privsep_reap(vm_of_reader, &br);
        }
        if (bridge_loop_run_once(&br.loop, busy ? 0 : LOOP_TICK_MS) < 0) {
            vms_err(NULL, NULL, "event loop: %s", strerror(errno));
            goto out;
        }
        bridge_guest_settle_all(&br); /* the turn's accepts: one fsync, then their Replies */
    }
    rc = 0;
out:
    vms_daemon_ready(0); /* start-up failed (no-op once ready) */
    vms_daemon_cleanup();
    bridge_admin_close(&br);
    bridge_clones_free(&br); /* first: it cancels its calls to the peers */
    bridge_groups_free(&br);
    bridge_cluster_close(&br);
    for (size_t i = 0; i < br.n_vms; i++)
        bridge_vm_free(&br.vms[i]);
    free(br.vms);
    br.vms = NULL;
    br.n_vms = 0;
    bridge_verifier_free(br.verifier); /* after the VMs: each cancelled its own job */
    br.verifier = NULL;
    bridge_privsep_reap(NULL,
                        NULL); /* readers just sent SIGTERM may not be gone yet: best effort */
    if (sfd >= 0)
        close(sfd);
    bridge_loop_free(&br.loop);
    bridge_privsep_cleanup();
    bridge_db_close(&br.db);
    bridge_config_free(&cfg);
    return rc;
}
