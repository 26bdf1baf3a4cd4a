/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * config.h — vmstate-bridged's INI configuration (inih).
 *
 * [bridge] holds daemon-wide keys, one [vm NAME] section per VM. Every key,
 * its meaning and its default are documented in vmstate-bridged.conf.example.
 * Rights are not configured here: they live in the database (vmstate-admin).
 */
#ifndef BRIDGE_CONFIG_H
#define BRIDGE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "ioerror.h"

#define BRIDGE_VM_NAME_MAX   64
#define BRIDGE_PATH_MAX      512
#define BRIDGE_NODES_MAX     8
#define BRIDGE_NODE_NAME_MAX 64
#define BRIDGE_VMS_MAX       256

#define BRIDGE_DOMAIN_MAX 256

/* Which hypervisor interface runs a VM's snapshots (backend.h). */
enum bridge_backend_kind {
    BRIDGE_BACKEND_QMP = 0, /* QEMU's monitor socket (qmp = PATH) */
    BRIDGE_BACKEND_LIBVIRT, /* a libvirt domain (uri = URI, domain = NAME) */
};

#define BRIDGE_TIER_NAME_MAX 32
#define BRIDGE_TIERS_MAX     16
#define BRIDGE_QEMU_ARGS_MAX 4096

#define BRIDGE_HA_HOSTS_MAX 8

/* rapid = off | on | best-effort: where a managed VM's RAM and checkpoints live */
enum bridge_rapid { BRIDGE_RAPID_OFF = 0, BRIDGE_RAPID_ON, BRIDGE_RAPID_BEST_EFFORT };

/* One [tier NAME] section: a directory that holds checkpoints (and zero-copy RAM files). */
struct bridge_tier_config {
    char name[BRIDGE_TIER_NAME_MAX];
    char path[BRIDGE_PATH_MAX];
    uint64_t capacity; /* bytes the bridge may reserve in it */
    int fast;          /* class: fast (tmpfs, NVMe) or slow */
    int shared;        /* reachable from other hosts (a later HA feature) */
};

struct bridge_vm_config {
    char name[BRIDGE_VM_NAME_MAX];
    enum bridge_backend_kind backend;
    char uri[BRIDGE_PATH_MAX];      /* libvirt: connection URI (default qemu:///system) */
    char domain[BRIDGE_DOMAIN_MAX]; /* libvirt: domain name (default: the VM's name) */
    /* port sockets; with libvirt they may be left empty: read from the domain's XML */
    char port_a[BRIDGE_PATH_MAX]; /* chardev socket of the request port (guest -> host) */
    char port_b[BRIDGE_PATH_MAX]; /* chardev socket of the event port (host -> guest) */
    /* 1: the bridge listens on port_a/port_b and QEMU dials it (a chardev with reconnect;
     * survives QEMU being replaced, as libvirt's revert does); 0: the bridge connects */
    unsigned ports_listen;
    char qmp[BRIDGE_PATH_MAX];               /* QMP socket */
    char state_dir[BRIDGE_PATH_MAX];         /* where the VM's states live (hostinfo free space) */
    char vmstate_node[BRIDGE_NODE_NAME_MAX]; /* node holding the RAM state */
    char nodes[BRIDGE_NODES_MAX][BRIDGE_NODE_NAME_MAX]; /* qcow2 nodes snapshotted */
    unsigned n_nodes;
    unsigned max_states;
    unsigned max_pending;
    uint64_t max_app_data_bytes;    /* app data in requests and unacked events */
    uint64_t max_journal_bytes;     /* everything the VM makes the bridge store (0: unlimited) */
    unsigned rate_requests;         /* requests allowed per rate_window seconds (0: unlimited) */
    unsigned rate_requests_per_uid; /* one guest uid's share of rate_requests (0: half) */
    unsigned max_pending_per_uid;   /* one guest uid's share of max_pending (0: half) */
    unsigned rate_window;
    unsigned auth_fail_max; /* auth failures per principal per auth_fail_window seconds */
    unsigned auth_fail_window;
    uint64_t mem_min_bytes; /* set-memory bounds; max 0 = set-memory disabled */
    uint64_t mem_max_bytes;
    /* qdev id of a virtio-mem device: set-memory above the boot size plugs memory there */
    char virtio_mem[BRIDGE_NODE_NAME_MAX];
    unsigned job_timeout;        /* seconds a snapshot job may take */
    unsigned command_timeout;    /* seconds a plain QMP command may take */
    unsigned clock_sync;         /* 1: send the host's time to the guest on timeline changes */
    unsigned prepare_timeout_ms; /* max wait for the helper's Ready before a save; 0: none */
    unsigned seen;               /* bit set of keys given, for the checks after parsing */
    /* I/O-error pauses: io_* keys and stateless (ioerror.h) */
    struct bridge_ioe_config ioe;
    /* managed VMs: the bridge runs QEMU (vm/managed.c) */
    int managed;
    char qemu[BRIDGE_PATH_MAX];           /* binary */
    char qemu_args[BRIDGE_QEMU_ARGS_MAX]; /* template; {run} and {name} substituted */
    char run_dir[BRIDGE_PATH_MAX];        /* sockets, pidfile, log of the QEMU process */
    char qemu_user[64];                   /* -runas, "" = the bridge's user */
    uint64_t memory_bytes;                /* guest RAM */
    enum bridge_rapid rapid;              /* checkpoint placement */
    char fast_tier[BRIDGE_TIER_NAME_MAX]; /* rapid on/best-effort: the tier to reserve */
    char slow_tier[BRIDGE_TIER_NAME_MAX]; /* fallback and demotion target */
    unsigned stop_timeout;                /* s between ACPI powerdown and quit */
    unsigned idle_suspend_s;              /* suspend after this long idle; 0 = never */
    unsigned idle_cpu_percent;            /* "idle" = QEMU below this much of a core */
    int console;                          /* a console socket the bridge holds */
    int autostart;                        /* start when the bridge starts */
    /* HA (cluster/): the cluster restarts the VM on another host when its host dies */
    int ha;
    unsigned ha_priority; /* higher restarts first when capacity is short */
    unsigned vcpus;       /* what the VM needs of a host (admission), default 1 */
    char ha_hosts[BRIDGE_HA_HOSTS_MAX][BRIDGE_NODE_NAME_MAX]; /* preferred host, then alternates */
    unsigned n_ha_hosts;
};

/* [cluster]: this host's part in an HA cluster on Corosync (cluster/). */
struct bridge_cluster_config {
    int enabled;
    char node[BRIDGE_NODE_NAME_MAX];  /* this host's name in the cluster (default: hostname) */
    char group[BRIDGE_NODE_NAME_MAX]; /* CPG group name, default "vmstate" */
    char shared_dir[BRIDGE_PATH_MAX]; /* shared storage: leases/ and vms/ (HA VM definitions) */
    unsigned host_vcpus;              /* what this host offers HA VMs (admission slots) */
    uint64_t host_memory;
    unsigned failures_tolerated;  /* admission: host failures the cluster must survive */
    unsigned checkpoint_interval; /* s between HA checkpoints of a running VM; 0 = guest saves */
    unsigned bridge_grace;        /* s a host whose bridge left (its node still up) keeps its VMs */
};

struct bridge_config {
    char path[BRIDGE_PATH_MAX]; /* file it was read from */
    char database[BRIDGE_PATH_MAX];
    int log_level; /* syslog level */
    unsigned reconnect_min_ms, reconnect_max_ms;
    int privsep;                 /* read port A in an unprivileged reader process (default yes) */
    int reader_sandbox_required; /* 1: no confined reader, no port (default); 0: best effort */
    char io_event_socket[BRIDGE_PATH_MAX]; /* I/O-error events, JSON lines ("" = none) */
    unsigned journal_keep_days; /* finished requests and their events kept this long; 0: ever */
    struct bridge_vm_config *vms;
    size_t n_vms;
    /* lifecycle (vm/managed.c, vm/tier.c) */
    char admin_socket[BRIDGE_PATH_MAX]; /* vmstate-admin's control socket ("" = none) */
    struct bridge_tier_config tiers[BRIDGE_TIERS_MAX];
    size_t n_tiers;
    uint64_t state_margin;         /* device state reserved beside RAM in a tier */
    unsigned lifecycle_per_minute; /* suspends + resumes started per minute; 0 = no limit */
    uint64_t lifecycle_bandwidth;  /* bytes/s per copy-path checkpoint; 0 = unlimited */
    struct bridge_cluster_config cluster;
};

/* The tier named @name, or NULL. */
const struct bridge_tier_config *bridge_config_tier(const struct bridge_config *cfg,
                                                    const char *name);

/*
 * Read @path into @cfg (zeroed first, defaults applied). Returns 0, or -1 with
 * @err holding "FILE:LINE: [SECTION] KEY: why" (or "FILE: why" for errors
 * not tied to a line). Release with bridge_config_free() in both cases.
 */
int bridge_config_load(struct bridge_config *cfg, const char *path, char *err, size_t errlen);

/* Same as bridge_config_load() over a string; @name is used in messages. */
int bridge_config_load_string(struct bridge_config *cfg, const char *name, const char *text,
                              char *err, size_t errlen);

void bridge_config_free(struct bridge_config *cfg);

/* The VM named @name, or NULL. */
const struct bridge_vm_config *bridge_config_vm(const struct bridge_config *cfg, const char *name);

/* Defaults of one [vm] section (exported for tests and the fuzz target). */
void bridge_vm_config_defaults(struct bridge_vm_config *vm);

#endif
