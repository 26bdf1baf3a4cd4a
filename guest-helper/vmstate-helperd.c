/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vmstate-helperd — the guest half of vmstate: serves org.vmstate.Helper1 on
 * the system bus and talks to the host bridge over two virtio-serial ports.
 *
 * One thread, one poll() loop: the bus connection, the two ports, the udev
 * monitor and a signalfd. Nothing here waits on the host.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <libudev.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "helper-bus.h"
#include "helper.h"
#include "vms-daemon.h"
#include "vms-log.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: vmstate-helperd [OPTIONS]\n"
            "Serve org.vmstate.Helper1 on the system bus and relay requests to the host.\n\n"
            "  -c, --config FILE    configuration (default %s)\n"
            "      --address ADDR   D-Bus address to use instead of the system bus (tests)\n"
            "  -v, --verbose        log debug lines (also --debug)\n"
            "      --daemon         detach (for init scripts without systemd); implies --syslog\n"
            "      --pidfile FILE   write the daemon's pid to FILE (removed at exit)\n"
            "      --syslog         log to syslog (facility daemon) instead of stderr\n"
            "  -h, --help           this text\n"
            "  -V, --version        print the version\n"
            "Under systemd it runs in the foreground (Type=dbus) and logs to the journal.\n",
            HELPER_CONFIG_DEFAULT);
}

/* Watch for port hot-plug: udevd's events when it runs, the kernel's uevents otherwise
 * (busybox guests have no udevd). The recheck timer covers everything else. */
static void setup_udev_monitor(struct helper *h)
{
    const char *source = access("/run/udev/control", F_OK) == 0 ? "udev" : "kernel";

    if (h->cfg.request_port[0] && h->cfg.event_port[0])
        return; /* ports named by path: nothing to hot-plug */
    if (!h->udev && !(h->udev = udev_new()))
        return;
    h->udev_mon = udev_monitor_new_from_netlink(h->udev, source);
    if (!h->udev_mon ||
        udev_monitor_filter_add_match_subsystem_devtype(h->udev_mon, "virtio-ports", NULL) < 0 ||
        udev_monitor_enable_receiving(h->udev_mon) < 0) {
        vms_info(NULL, NULL,
                 "no %s hot-plug events; rescanning every %u ms while ports are missing", source,
                 h->cfg.recheck_interval_ms);
        if (h->udev_mon)
            udev_monitor_unref(h->udev_mon);
        h->udev_mon = NULL;
        return;
    }
    vms_debug(NULL, NULL, "watching %s events for virtio-ports", source);
}

static void bus_io(DBusConnection *bus)
{
    dbus_connection_read_write(bus, 0);
    while (dbus_connection_dispatch(bus) == DBUS_DISPATCH_DATA_REMAINS)
        ;
}

int main(int argc, char **argv)
{
    enum { OPT_ADDRESS = 256, OPT_DAEMON, OPT_PIDFILE, OPT_SYSLOG };
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"address", required_argument, NULL, OPT_ADDRESS},
                                         {"verbose", no_argument, NULL, 'v'},
                                         {"debug", no_argument, NULL, 'v'},
                                         {"daemon", no_argument, NULL, OPT_DAEMON},
                                         {"pidfile", required_argument, NULL, OPT_PIDFILE},
                                         {"syslog", no_argument, NULL, OPT_SYSLOG},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    const char *config_path = NULL, *address = NULL, *pidfile = NULL;
    int daemonize = 0, use_syslog = 0;
    /* The config is read into pages given back once the helper holds its copy: ~120 KiB,
     * most of it room for [apps], would otherwise stay in the helper's RSS for its life, on
     * the stack (bench/RESULTS.md §18). */
    struct helper_config *cfg;
    static struct helper helper; /* static: keeps the stack small */
    struct helper *h = &helper;
    char err[512];
    int debug = 0, c, sfd = -1, rc = 1, quit = 0, init_rc;
    sigset_t mask;

    while ((c = getopt_long(argc, argv, "c:vhV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case OPT_ADDRESS:
            address = optarg;
            break;
        case 'v':
            debug = 1;
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
            printf("vmstate-helperd %s\n", PACKAGE_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "vmstate-helperd: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if (pidfile && !daemonize) {
        fprintf(stderr, "vmstate-helperd: --pidfile goes with --daemon\n");
        return 2;
    }
    vms_log_init("vmstate-helperd", LOG_INFO);
    cfg = mmap(NULL, sizeof(*cfg), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (cfg == MAP_FAILED) {
        vms_err(NULL, NULL, "out of memory");
        return 1;
    }
    helper_config_defaults(cfg);
    if (helper_config_load(cfg, config_path ? config_path : HELPER_CONFIG_DEFAULT,
                           config_path != NULL, err, sizeof(err)) < 0) {
        vms_err(NULL, NULL, "configuration: %s", err);
        return 2;
    }
    vms_log_init("vmstate-helperd", debug ? LOG_DEBUG : cfg->log_level);
    if (daemonize && vms_daemonize(pidfile) < 0)
        return 1;
    if (use_syslog)
        vms_log_to_syslog(LOG_DAEMON);
    if (!address)
        address = getenv("VMSTATE_HELPER_BUS_ADDRESS");

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGIO);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGCHLD); /* hooks (helper-hooks.c) */
    sigprocmask(SIG_BLOCK, &mask, NULL);
    sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        vms_err(NULL, NULL, "signalfd: %s", strerror(errno));
        return 1;
    }
    init_rc = helper_init(h, cfg);
    munmap(cfg, sizeof(*cfg)); /* the helper has its copy */
    if (init_rc < 0) {
        vms_err(NULL, NULL, "out of memory");
        goto out;
    }
    if (helper_bus_open(h, address) < 0)
        goto out;
    vms_daemon_ready(1); /* owns its name: the init script may go on */
    setup_udev_monitor(h);
    helper_ports_check(h);
    h->next_recheck_ms = helper_now_ms() + h->cfg.recheck_interval_ms;

    while (!quit) {
        struct pollfd p[5 + HOOK__COUNT];
        int n = 0, bus_i, sig_i, mon_i = -1, a_i = -1, b_i = -1, timeout, bus_fd = -1;
        int hook_i, hook_fds[HOOK__COUNT], n_hooks;

        timeout = helper_timers(h);
        if (dbus_connection_get_dispatch_status(h->bus) == DBUS_DISPATCH_DATA_REMAINS)
            timeout = 0;
        dbus_connection_get_unix_fd(h->bus, &bus_fd);
        bus_i = n;
        p[n++] = (struct pollfd){
            .fd = bus_fd,
            .events = POLLIN | (dbus_connection_has_messages_to_send(h->bus) ? POLLOUT : 0)};
        sig_i = n;
        p[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
        if (h->udev_mon) {
            mon_i = n;
            p[n++] = (struct pollfd){.fd = udev_monitor_get_fd(h->udev_mon), .events = POLLIN};
        }
        if (h->ports == PORTS_UP) {
            b_i = n;
            p[n++] = (struct pollfd){.fd = h->port_b.fd, .events = POLLIN};
            a_i = n;
            p[n++] = (struct pollfd){.fd = h->port_a.fd,
                                     .events = vms_channel_wants_write(&h->port_a) ? POLLOUT : 0};
        }
        hook_i = n;
        n_hooks = helper_hooks_fds(h, hook_fds);
        for (int i = 0; i < n_hooks; i++)
            p[n++] = (struct pollfd){.fd = hook_fds[i], .events = POLLIN};
        if (poll(p, (nfds_t)n, timeout) < 0) {
            if (errno == EINTR)
                continue;
            vms_err(NULL, NULL, "poll: %s", strerror(errno));
            goto out;
        }
        if (p[sig_i].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
                if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
                    vms_info(NULL, NULL, "signal %u: exiting", si.ssi_signo);
                    quit = 1;
                } else if (si.ssi_signo == SIGIO) {
                    helper_sigio(h);
                } else if (si.ssi_signo == SIGCHLD) {
                    helper_hooks_sigchld(h);
                }
            }
        }
        if (b_i >= 0 && h->ports == PORTS_UP) {
            if (p[b_i].revents & POLLIN)
                helper_port_b_readable(h);
            else if (p[b_i].revents & (POLLHUP | POLLERR | POLLNVAL))
                helper_ports_hangup(h, "event port hung up");
        }
        if (a_i >= 0 && h->ports == PORTS_UP) {
            if (p[a_i].revents & (POLLHUP | POLLERR | POLLNVAL))
                helper_ports_hangup(h, "request port hung up");
            else if (p[a_i].revents & POLLOUT)
                helper_port_a_writable(h);
        }
        for (int i = 0; i < n_hooks; i++)
            if (p[hook_i + i].revents)
                helper_hooks_output(h, p[hook_i + i].fd);
        if (mon_i >= 0 && (p[mon_i].revents & POLLIN))
            helper_udev_event(h);
        if (p[bus_i].revents || timeout == 0)
            bus_io(h->bus);
        if (!dbus_connection_get_is_connected(h->bus)) {
            vms_err(NULL, NULL, "lost the D-Bus connection");
            goto out;
        }
    }
    rc = 0;
out:
    vms_daemon_ready(0); /* start-up failed (no-op once ready) */
    vms_daemon_cleanup();
    helper_bus_close(h);
    helper_free(h);
    if (sfd >= 0)
        close(sfd);
    return rc;
}
