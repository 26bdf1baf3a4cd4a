/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * bridge-config.c — see bridge-config.h.
 */
#include "config.h"
#include "bridge-config.h"

#include <dirent.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "vms-proto.h"

struct parse_ctx {
    struct bridge_config *cfg;
    struct bridge_vm_config *vm; /* section being read, NULL in [bridge] */
    int in_bridge;
    int shared_defs; /* reading shared_dir/vms/: only [vm NAME] sections */
    char why[256];   /* first error: "[SECTION] KEY: why" */
    int failed;
};

enum vm_key_bit {
    K_PORT_A = 1u << 0,
    K_PORT_B = 1u << 1,
    K_QMP = 1u << 2,
    K_NODES = 1u << 3,
    K_PORTS = 1u << 4,
};

void bridge_vm_config_defaults(struct bridge_vm_config *vm)
{
    memset(vm, 0, sizeof(*vm));
    vm->max_states = 32;
    vm->max_pending = 16;
    vm->max_app_data_bytes = 4u * 1024u * 1024u;
    vm->max_journal_bytes = 32u * 1024u * 1024u;
    vm->rate_requests = 60;
    vm->rate_window = 60;
    vm->auth_fail_max = 5;
    vm->auth_fail_window = 60;
    vm->job_timeout = 600;
    vm->command_timeout = 10;
    vm->clock_sync = 1;
    vm->prepare_timeout_ms = 15000;
    bridge_ioe_config_defaults(&vm->ioe);
}

static int fail(struct parse_ctx *ctx, const char *section, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(struct parse_ctx *ctx, const char *section, const char *key, const char *fmt, ...)
{
    char why[160];
    va_list ap;

    if (ctx->failed)
        return 0;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    snprintf(ctx->why, sizeof(ctx->why), "[%s] %s: %s", section, key, why);
    ctx->failed = 1;
    return 0;
}

/* Unsigned integer with an optional K/M/G/T suffix (powers of 1024). */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    uint64_t mult = 1;

    if (!*s || *s == '-' || *s == '+')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    switch (*end) {
    case '\0':
        break;
    case 'k':
    case 'K':
        mult = 1ull << 10;
        end++;
        break;
    case 'm':
    case 'M':
        mult = 1ull << 20;
        end++;
        break;
    case 'g':
    case 'G':
        mult = 1ull << 30;
        end++;
        break;
    case 't':
    case 'T':
        mult = 1ull << 40;
        end++;
        break;
    default:
        return -1;
    }
    if (*end || (v && mult > UINT64_MAX / v))
        return -1;
    *out = v * mult;
    return 0;
}

static int parse_uint(const char *s, unsigned max, unsigned *out)
{
    char *end;
    unsigned long v;

    if (!*s || *s == '-' || *s == '+')
        return -1;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || *end || v > max)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static int set_path(char *dst, const char *value)
{
    size_t n = strlen(value);
    if (n == 0 || n >= BRIDGE_PATH_MAX)
        return -1;
    memcpy(dst, value, n + 1);
    return 0;
}

static int parse_log_level(const char *v)
{
    static const char *const names[] = {"emerg",   "alert",  "crit", "error",
                                        "warning", "notice", "info", "debug"};
    for (int i = 0; i < 8; i++)
        if (!strcmp(v, names[i]))
            return i;
    if (!strcmp(v, "err"))
        return LOG_ERR;
    if (!strcmp(v, "warn"))
        return LOG_WARNING;
    return -1;
}

static int bridge_key(struct parse_ctx *ctx, const char *key, const char *value)
{
    struct bridge_config *cfg = ctx->cfg;
    unsigned u;

    if (!strcmp(key, "database")) {
        if (set_path(cfg->database, value) < 0)
            return fail(ctx, "bridge", key, "empty or longer than %s bytes", "511");
    } else if (!strcmp(key, "log_level")) {
        int l = parse_log_level(value);
        if (l < 0)
            return fail(ctx, "bridge", key,
                        "'%s' is not one of error, warning, notice, info, debug", value);
        cfg->log_level = l;
    } else if (!strcmp(key, "privsep")) {
        if (!strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "1"))
            cfg->privsep = 1;
        else if (!strcmp(value, "no") || !strcmp(value, "false") || !strcmp(value, "0"))
            cfg->privsep = 0;
        else
            return fail(ctx, "bridge", key, "'%s' is not yes or no", value);
    } else if (!strcmp(key, "reader_sandbox")) {
        if (!strcmp(value, "required"))
            cfg->reader_sandbox_required = 1;
        else if (!strcmp(value, "best-effort"))
            cfg->reader_sandbox_required = 0;
        else
            return fail(ctx, "bridge", key, "'%s' is not required or best-effort", value);
    } else if (!strcmp(key, "io_event_socket")) {
        if (set_path(cfg->io_event_socket, value) < 0 || strlen(value) >= 108)
            return fail(ctx, "bridge", key, "empty or longer than %s bytes", "107");
    } else if (!strcmp(key, "reconnect_min_ms")) {
        if (parse_uint(value, 600000, &u) < 0 || u == 0)
            return fail(ctx, "bridge", key, "'%s' is not a number in 1..600000", value);
        cfg->reconnect_min_ms = u;
    } else if (!strcmp(key, "reconnect_max_ms")) {
        if (parse_uint(value, 600000, &u) < 0 || u == 0)
            return fail(ctx, "bridge", key, "'%s' is not a number in 1..600000", value);
        cfg->reconnect_max_ms = u;
    } else if (!strcmp(key, "admin_socket")) {
        if (set_path(cfg->admin_socket, value) < 0 || strlen(value) >= 108)
            return fail(ctx, "bridge", key, "empty or longer than %s bytes", "107");
    } else if (!strcmp(key, "state_margin")) {
        if (parse_size(value, &cfg->state_margin) < 0)
            return fail(ctx, "bridge", key, "'%s' is not a size", value);
    } else if (!strcmp(key, "lifecycle_bandwidth")) {
        if (parse_size(value, &cfg->lifecycle_bandwidth) < 0)
            return fail(ctx, "bridge", key, "'%s' is not a size (bytes per second)", value);
    } else if (!strcmp(key, "lifecycle_per_minute")) {
        if (parse_uint(value, 100000, &u) < 0)
            return fail(ctx, "bridge", key, "'%s' is not a number in 0..100000", value);
        cfg->lifecycle_per_minute = u;
    } else if (!strcmp(key, "group_min_lead_ms")) {
        if (parse_uint(value, 3600000, &u) < 0)
            return fail(ctx, "bridge", key, "'%s' is not a number in 0..3600000", value);
        cfg->group_min_lead_ms = u;
    } else if (!strcmp(key, "group_handle_ttl_s")) {
        if (parse_uint(value, 86400, &u) < 0 || u == 0)
            return fail(ctx, "bridge", key, "'%s' is not a number in 1..86400", value);
        cfg->group_handle_ttl_s = u;
    } else if (!strcmp(key, "group_max_clock_error_ms")) {
        if (parse_uint(value, 3600000, &u) < 0)
            return fail(ctx, "bridge", key, "'%s' is not a number in 0..3600000", value);
        cfg->group_max_clock_error_ms = u;
    } else if (!strcmp(key, "group_require_clock_sync")) {
        if (!strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "1"))
            cfg->group_require_clock_sync = 1;
        else if (!strcmp(value, "no") || !strcmp(value, "false") || !strcmp(value, "0"))
            cfg->group_require_clock_sync = 0;
        else
            return fail(ctx, "bridge", key, "'%s' is not yes or no", value);
    } else if (!strcmp(key, "journal_keep_days")) {
        if (parse_uint(value, 36500, &u) < 0)
            return fail(ctx, "bridge", key, "'%s' is not a number in 0..36500", value);
        cfg->journal_keep_days = u;
    } else {
        return fail(ctx, "bridge", key, "unknown key%s", "");
    }
    return 1;
}

static int parse_nodes(struct bridge_vm_config *vm, const char *value)
{
    char buf[BRIDGE_NODES_MAX * BRIDGE_NODE_NAME_MAX];
    char *save = NULL, *tok;

    if (strlen(value) >= sizeof(buf))
        return -1;
    strcpy(buf, value);
    vm->n_nodes = 0;
    for (tok = strtok_r(buf, " ,\t", &save); tok; tok = strtok_r(NULL, " ,\t", &save)) {
        if (vm->n_nodes >= BRIDGE_NODES_MAX || strlen(tok) >= BRIDGE_NODE_NAME_MAX ||
            !vms_valid_id(tok))
            return -1;
        strcpy(vm->nodes[vm->n_nodes++], tok);
    }
    return vm->n_nodes ? 0 : -1;
}

static int parse_bool(const char *value, int *out)
{
    if (!strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "1"))
        *out = 1;
    else if (!strcmp(value, "no") || !strcmp(value, "false") || !strcmp(value, "0"))
        *out = 0;
    else
        return -1;
    return 0;
}

static int tier_name_ok(const char *s)
{
    return *s && strlen(s) < BRIDGE_TIER_NAME_MAX && vms_valid_id(s);
}

/* The keys of a managed VM: 1 taken, 0 not one of them, -1 bad value (@why says why). */
static int managed_key(struct bridge_vm_config *vm, const char *key, const char *value, char *why,
                       size_t whylen)
{
    unsigned u;

    if (!strcmp(key, "managed") || !strcmp(key, "console") || !strcmp(key, "autostart")) {
        int b;
        if (parse_bool(value, &b) < 0)
            goto not_bool;
        if (key[0] == 'm')
            vm->managed = b;
        else if (key[0] == 'c')
            vm->console = b;
        else
            vm->autostart = b;
    } else if (!strcmp(key, "qemu")) {
        if (set_path(vm->qemu, value) < 0)
            goto too_long;
    } else if (!strcmp(key, "run_dir")) {
        if (set_path(vm->run_dir, value) < 0 || strlen(value) > 90)
            goto too_long;
    } else if (!strcmp(key, "qemu_args")) {
        /* inih hands each continuation line of a multi-line value apart: join them */
        size_t have = strlen(vm->qemu_args);
        if (have + 1 + strlen(value) >= sizeof(vm->qemu_args)) {
            snprintf(why, whylen, "the template is longer than %d bytes", BRIDGE_QEMU_ARGS_MAX - 1);
            return -1;
        }
        snprintf(vm->qemu_args + have, sizeof(vm->qemu_args) - have, "%s%s", have ? " " : "",
                 value);
    } else if (!strcmp(key, "qemu_user")) {
        if (strlen(value) >= sizeof(vm->qemu_user) || !vms_valid_id(value)) {
            snprintf(why, whylen, "'%s' is not a user name", value);
            return -1;
        }
        strcpy(vm->qemu_user, value);
    } else if (!strcmp(key, "memory")) {
        if (parse_size(value, &vm->memory_bytes) < 0 || vm->memory_bytes < (16u << 20)) {
            snprintf(why, whylen, "'%s' is not a size of at least 16M", value);
            return -1;
        }
    } else if (!strcmp(key, "rapid")) {
        if (!strcmp(value, "on") || !strcmp(value, "yes"))
            vm->rapid = BRIDGE_RAPID_ON;
        else if (!strcmp(value, "off") || !strcmp(value, "no"))
            vm->rapid = BRIDGE_RAPID_OFF;
        else if (!strcmp(value, "best-effort"))
            vm->rapid = BRIDGE_RAPID_BEST_EFFORT;
        else {
            snprintf(why, whylen, "'%s' is not on, off or best-effort", value);
            return -1;
        }
    } else if (!strcmp(key, "fast_tier") || !strcmp(key, "slow_tier")) {
        if (!tier_name_ok(value)) {
            snprintf(why, whylen, "'%s' is not a tier name", value);
            return -1;
        }
        strcpy(key[0] == 'f' ? vm->fast_tier : vm->slow_tier, value);
    } else if (!strcmp(key, "stop_timeout") || !strcmp(key, "idle_suspend") ||
               !strcmp(key, "idle_cpu_percent")) {
        if (parse_uint(value, key[1] == 'd' && key[5] == 'c' ? 100 : 86400 * 7, &u) < 0) {
            snprintf(why, whylen, "'%s' is not a number in range", value);
            return -1;
        }
        if (key[0] == 's')
            vm->stop_timeout = u;
        else if (key[5] == 's')
            vm->idle_suspend_s = u;
        else
            vm->idle_cpu_percent = u;
    } else {
        return 0;
    }
    return 1;
not_bool:
    snprintf(why, whylen, "'%s' is not yes or no", value);
    return -1;
too_long:
    snprintf(why, whylen, "empty or too long");
    return -1;
}

/* One key of the [cluster] section. */
static int cluster_key(struct parse_ctx *ctx, const char *key, const char *value)
{
    struct bridge_cluster_config *cl = &ctx->cfg->cluster;
    unsigned u;

    if (!strcmp(key, "enabled")) {
        if (parse_bool(value, &cl->enabled) < 0)
            return fail(ctx, "cluster", key, "'%s' is not yes or no", value);
    } else if (!strcmp(key, "node") || !strcmp(key, "group")) {
        if (strlen(value) >= BRIDGE_NODE_NAME_MAX || !vms_valid_id(value))
            return fail(ctx, "cluster", key, "'%s' is not a name ([A-Za-z0-9._:@-], < 64 bytes)",
                        value);
        strcpy(key[0] == 'n' ? cl->node : cl->group, value);
    } else if (!strcmp(key, "shared_dir")) {
        if (set_path(cl->shared_dir, value) < 0 || strlen(value) > 300)
            return fail(ctx, "cluster", key, "empty or longer than %s bytes", "300");
    } else if (!strcmp(key, "host_memory")) {
        if (parse_size(value, &cl->host_memory) < 0)
            return fail(ctx, "cluster", key, "'%s' is not a size", value);
    } else if (!strcmp(key, "host_vcpus") || !strcmp(key, "failures_tolerated") ||
               !strcmp(key, "ha_checkpoint_interval") || !strcmp(key, "bridge_grace")) {
        if (parse_uint(value, 86400, &u) < 0)
            return fail(ctx, "cluster", key, "'%s' is not a number in 0..86400", value);
        if (key[0] == 'h' && key[1] == 'o')
            cl->host_vcpus = u;
        else if (key[0] == 'f')
            cl->failures_tolerated = u;
        else if (key[0] == 'h')
            cl->checkpoint_interval = u;
        else
            cl->bridge_grace = u;
    } else {
        return fail(ctx, "cluster", key, "unknown key%s", "");
    }
    return 1;
}

/* The HA keys of a [vm NAME] section: 1 taken, 0 not one of them, -1 bad value. */
static int ha_key(struct bridge_vm_config *vm, const char *key, const char *value, char *why,
                  size_t whylen)
{
    if (!strcmp(key, "ha")) {
        if (parse_bool(value, &vm->ha) < 0) {
            snprintf(why, whylen, "'%s' is not yes or no", value);
            return -1;
        }
    } else if (!strcmp(key, "ha_priority") || !strcmp(key, "vcpus")) {
        if (parse_uint(value, key[0] == 'v' ? 1024 : 1000000,
                       key[0] == 'v' ? &vm->vcpus : &vm->ha_priority) < 0) {
            snprintf(why, whylen, "'%s' is not a number in range", value);
            return -1;
        }
    } else if (!strcmp(key, "ha_hosts")) {
        char buf[BRIDGE_HA_HOSTS_MAX * BRIDGE_NODE_NAME_MAX], *save = NULL, *tok;
        if (strlen(value) >= sizeof(buf))
            goto bad_list;
        strcpy(buf, value);
        vm->n_ha_hosts = 0;
        for (tok = strtok_r(buf, " ,\t", &save); tok; tok = strtok_r(NULL, " ,\t", &save)) {
            if (vm->n_ha_hosts >= BRIDGE_HA_HOSTS_MAX || strlen(tok) >= BRIDGE_NODE_NAME_MAX ||
                !vms_valid_id(tok))
                goto bad_list;
            strcpy(vm->ha_hosts[vm->n_ha_hosts++], tok);
        }
        if (!vm->n_ha_hosts)
            goto bad_list;
    } else {
        return 0;
    }
    return 1;
bad_list:
    snprintf(why, whylen, "'%s' is not a list of 1..8 host names", value);
    return -1;
}

/* One key of a [tier NAME] section. */
static int tier_key(struct parse_ctx *ctx, const char *section, const char *key, const char *value)
{
    struct bridge_config *cfg = ctx->cfg;
    const char *name = section + 5;
    struct bridge_tier_config *t = NULL;

    for (size_t i = 0; i < cfg->n_tiers; i++)
        if (!strcmp(cfg->tiers[i].name, name))
            t = &cfg->tiers[i];
    if (!t) {
        if (!tier_name_ok(name))
            return fail(ctx, section, key, "tier name '%s' must be 1..31 of [A-Za-z0-9._:@-]",
                        name);
        if (cfg->n_tiers >= BRIDGE_TIERS_MAX)
            return fail(ctx, section, key, "more than %d tiers", BRIDGE_TIERS_MAX);
        t = &cfg->tiers[cfg->n_tiers++];
        memset(t, 0, sizeof(*t));
        strcpy(t->name, name);
    }
    if (!strcmp(key, "path")) {
        if (set_path(t->path, value) < 0 || value[0] != '/')
            return fail(ctx, section, key, "'%s' is not an absolute path", value);
    } else if (!strcmp(key, "capacity")) {
        if (parse_size(value, &t->capacity) < 0 || !t->capacity)
            return fail(ctx, section, key, "'%s' is not a size > 0", value);
    } else if (!strcmp(key, "class")) {
        if (strcmp(value, "fast") && strcmp(value, "slow"))
            return fail(ctx, section, key, "'%s' is not fast or slow", value);
        t->fast = !strcmp(value, "fast");
    } else if (!strcmp(key, "shared")) {
        if (parse_bool(value, &t->shared) < 0)
            return fail(ctx, section, key, "'%s' is not yes or no", value);
    } else {
        return fail(ctx, section, key, "unknown key%s", "");
    }
    return 1;
}

/* One key of a [peer NAME] section: another bridge, for groups. */
static int peer_key(struct parse_ctx *ctx, const char *section, const char *key, const char *value)
{
    struct bridge_config *cfg = ctx->cfg;
    const char *name = section + 5;
    struct bridge_peer_config *p = NULL;

    for (size_t i = 0; i < cfg->n_peers; i++)
        if (!strcmp(cfg->peers[i].name, name))
            p = &cfg->peers[i];
    if (!p) {
        if (!*name || strlen(name) >= BRIDGE_VM_NAME_MAX || !vms_valid_id(name) ||
            !strcmp(name, "self"))
            return fail(ctx, section, key,
                        "peer name '%s' must be 1..63 of [A-Za-z0-9._:@-], not \"self\"", name);
        if (cfg->n_peers >= BRIDGE_PEERS_MAX)
            return fail(ctx, section, key, "more than %d peers", BRIDGE_PEERS_MAX);
        p = &cfg->peers[cfg->n_peers++];
        memset(p, 0, sizeof(*p));
        strcpy(p->name, name);
    }
    if (!strcmp(key, "admin_socket")) {
        if (set_path(p->admin_socket, value) < 0 || value[0] != '/' || strlen(value) >= 108)
            return fail(ctx, section, key, "'%s' is not an absolute path under 108 bytes", value);
    } else {
        return fail(ctx, section, key, "unknown key%s", "");
    }
    return 1;
}

const struct bridge_tier_config *bridge_config_tier(const struct bridge_config *cfg,
                                                    const char *name)
{
    for (size_t i = 0; i < cfg->n_tiers; i++)
        if (!strcmp(cfg->tiers[i].name, name))
            return &cfg->tiers[i];
    return NULL;
}

static int vm_key(struct parse_ctx *ctx, const char *section, const char *key, const char *value)
{
    struct bridge_vm_config *vm = ctx->vm;
    uint64_t sz;
    char why[160];
    int r;

#define UINT_KEY(k, field, max)                                                                    \
    if (!strcmp(key, k)) {                                                                         \
        if (parse_uint(value, max, &vm->field) < 0)                                                \
            return fail(ctx, section, key, "'%s' is not a number in 0.." #max, value);             \
        return 1;                                                                                  \
    }
#define SIZE_KEY(k, field)                                                                         \
    if (!strcmp(key, k)) {                                                                         \
        if (parse_size(value, &sz) < 0)                                                            \
            return fail(ctx, section, key, "'%s' is not a size (number, optional K/M/G/T)",        \
                        value);                                                                    \
        vm->field = sz;                                                                            \
        return 1;                                                                                  \
    }
#define PATH_KEY(k, field, bit)                                                                    \
    if (!strcmp(key, k)) {                                                                         \
        if (set_path(vm->field, value) < 0)                                                        \
            return fail(ctx, section, key, "empty or longer than %s bytes", "511");                \
        vm->seen |= (bit);                                                                         \
        return 1;                                                                                  \
    }
    PATH_KEY("port_a", port_a, K_PORT_A)
    PATH_KEY("port_b", port_b, K_PORT_B)
    PATH_KEY("qmp", qmp, K_QMP)
    PATH_KEY("state_dir", state_dir, 0)
    PATH_KEY("uri", uri, 0)
    if (!strcmp(key, "backend")) {
        if (!strcmp(value, "qmp"))
            vm->backend = BRIDGE_BACKEND_QMP;
        else if (!strcmp(value, "libvirt"))
            vm->backend = BRIDGE_BACKEND_LIBVIRT;
        else
            return fail(ctx, section, key, "'%s' is not qmp or libvirt", value);
        return 1;
    }
    if (!strcmp(key, "domain")) {
        /* libvirt names are free text; ours go into XML and logs: keep them plain */
        if (strlen(value) >= BRIDGE_DOMAIN_MAX || !vms_valid_id(value))
            return fail(ctx, section, key, "'%s' is not a domain name ([A-Za-z0-9._:@-])", value);
        strcpy(vm->domain, value);
        return 1;
    }
    if (!strcmp(key, "ports")) {
        if (!strcmp(value, "listen"))
            vm->ports_listen = 1;
        else if (!strcmp(value, "connect"))
            vm->ports_listen = 0;
        else
            return fail(ctx, section, key, "'%s' is not listen or connect", value);
        vm->seen |= K_PORTS;
        return 1;
    }
    if (!strcmp(key, "nodes")) {
        if (parse_nodes(vm, value) < 0)
            return fail(ctx, section, key,
                        "'%s' is not a list of 1..8 node names ([A-Za-z0-9._:@-], < 64 bytes)",
                        value);
        vm->seen |= K_NODES;
        return 1;
    }
    if (!strcmp(key, "virtio_mem")) {
        if (strlen(value) >= BRIDGE_NODE_NAME_MAX || !vms_valid_id(value))
            return fail(ctx, section, key, "'%s' is not a device id", value);
        strcpy(vm->virtio_mem, value);
        return 1;
    }
    if (!strcmp(key, "vmstate_node")) {
        if (strlen(value) >= BRIDGE_NODE_NAME_MAX || !vms_valid_id(value))
            return fail(ctx, section, key, "'%s' is not a node name", value);
        strcpy(vm->vmstate_node, value);
        return 1;
    }
    UINT_KEY("max_states", max_states, 100000)
    UINT_KEY("max_pending", max_pending, 10000)
    SIZE_KEY("max_app_data_bytes", max_app_data_bytes)
    SIZE_KEY("max_journal_bytes", max_journal_bytes)
    UINT_KEY("rate_requests", rate_requests, 1000000)
    UINT_KEY("rate_requests_per_uid", rate_requests_per_uid, 1000000)
    UINT_KEY("max_pending_per_uid", max_pending_per_uid, 10000)
    UINT_KEY("rate_window", rate_window, 86400)
    UINT_KEY("auth_fail_max", auth_fail_max, 1000000)
    UINT_KEY("auth_fail_window", auth_fail_window, 86400)
    SIZE_KEY("mem_min", mem_min_bytes)
    SIZE_KEY("mem_max", mem_max_bytes)
    UINT_KEY("job_timeout", job_timeout, 86400)
    UINT_KEY("command_timeout", command_timeout, 3600)
    UINT_KEY("prepare_timeout_ms", prepare_timeout_ms, 600000)
    if (!strcmp(key, "clock_sync")) {
        if (!strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "1"))
            vm->clock_sync = 1;
        else if (!strcmp(value, "no") || !strcmp(value, "false") || !strcmp(value, "0"))
            vm->clock_sync = 0;
        else
            return fail(ctx, section, key, "'%s' is not yes or no", value);
        return 1;
    }
    r = managed_key(vm, key, value, why, sizeof(why));
    if (r == 0)
        r = ha_key(vm, key, value, why, sizeof(why));
    if (r != 0)
        return r > 0 ? 1 : fail(ctx, section, key, "%s", why);
    r = bridge_ioe_config_key(&vm->ioe, key, value, why, sizeof(why));
    if (r != 0)
        return r > 0 ? 1 : fail(ctx, section, key, "%s", why);
#undef UINT_KEY
#undef SIZE_KEY
#undef PATH_KEY
    return fail(ctx, section, key, "unknown key%s", "");
}

static int on_key(void *user, const char *section, const char *key, const char *value)
{
    struct parse_ctx *ctx = user;
    struct bridge_config *cfg = ctx->cfg;

    if (ctx->failed)
        return 0;
    if (ctx->shared_defs && strncmp(section, "vm ", 3))
        return fail(ctx, section, key, "only [vm NAME] sections in shared definitions%s", "");
    if (!strcmp(section, "bridge"))
        return bridge_key(ctx, key, value);
    if (!strcmp(section, "cluster"))
        return cluster_key(ctx, key, value);
    if (!strncmp(section, "vm ", 3)) {
        const char *name = section + 3;
        if (!ctx->vm || strcmp(ctx->vm->name, name)) {
            struct bridge_vm_config *grown;
            if (strlen(name) >= BRIDGE_VM_NAME_MAX || !vms_valid_id(name))
                return fail(ctx, section, key,
                            "VM name '%s' must be 1..63 characters of [A-Za-z0-9._:@-]", name);
            if (bridge_config_vm(cfg, name))
                return fail(ctx, section, key, "VM '%s' is defined twice", name);
            if (cfg->n_vms >= BRIDGE_VMS_MAX)
                return fail(ctx, section, key, "more than %s VMs", "256");
            grown = realloc(cfg->vms, (cfg->n_vms + 1) * sizeof(*cfg->vms));
            if (!grown)
                return fail(ctx, section, key, "out of memory%s", "");
            cfg->vms = grown;
            ctx->vm = &cfg->vms[cfg->n_vms++];
            bridge_vm_config_defaults(ctx->vm);
            strcpy(ctx->vm->name, name);
        }
        return vm_key(ctx, section, key, value);
    }
    if (!strncmp(section, "tier ", 5))
        return tier_key(ctx, section, key, value);
    if (!strncmp(section, "peer ", 5))
        return peer_key(ctx, section, key, value);
    return fail(
        ctx, section, key,
        "unknown section (expected [bridge], [vm NAME], [tier NAME], [peer NAME] or [cluster])%s",
        "");
}

static void config_defaults(struct bridge_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->database, sizeof(cfg->database), "%s/lib/vmstate/bridge.db", LOCALSTATEDIR);
    cfg->log_level = LOG_INFO;
    cfg->group_min_lead_ms = 1000;
    cfg->group_handle_ttl_s = 60;
    cfg->group_require_clock_sync = 1;
    cfg->group_max_clock_error_ms = 100;
    cfg->reconnect_min_ms = 200;
    cfg->reconnect_max_ms = 5000;
    cfg->journal_keep_days = 30;
    cfg->privsep = 1;
    cfg->reader_sandbox_required = 1;
    cfg->state_margin = 64ull << 20;
    strcpy(cfg->cluster.group, "vmstate");
    cfg->cluster.failures_tolerated = 1;
    cfg->cluster.bridge_grace = 10;
}

/* Replace every "{node}" in @s (capacity @cap) by @node. -1 if it does not fit. */
static int subst_node(char *s, size_t cap, const char *node)
{
    char out[BRIDGE_QEMU_ARGS_MAX], *at;
    const char *from = s;
    size_t n = 0;

    while ((at = strstr(from, "{node}"))) {
        int w = snprintf(out + n, sizeof(out) - n, "%.*s%s", (int)(at - from), from, node);
        if (w < 0 || (size_t)w >= sizeof(out) - n)
            return -1;
        n += (size_t)w;
        from = at + 6;
    }
    if (from == s)
        return 0;
    if (n + strlen(from) >= cap || n + strlen(from) >= sizeof(out))
        return -1;
    strcpy(out + n, from);
    strcpy(s, out);
    return 0;
}

/*
 * The cluster's HA VM definitions on shared storage: every shared_dir/vms/NAME.conf holds
 * [vm NAME] sections every host reads the same way. 0, or -1 with @err.
 */
static int load_shared_defs(struct bridge_config *cfg, struct parse_ctx *ctx, char *err,
                            size_t errlen)
{
    char dir[BRIDGE_PATH_MAX + 8], path[2 * BRIDGE_PATH_MAX];
    struct dirent **names = NULL;
    int n, rc = 0;

    if (!cfg->cluster.enabled || !cfg->cluster.shared_dir[0])
        return 0;
    snprintf(dir, sizeof(dir), "%s/vms", cfg->cluster.shared_dir);
    n = scandir(dir, &names, NULL, alphasort);
    if (n < 0)
        return errno == ENOENT ? 0 : (snprintf(err, errlen, "%s: %s", dir, strerror(errno)), -1);
    for (int i = 0; i < n; i++) {
        size_t len = strlen(names[i]->d_name);
        if (!rc && len > 5 && !strcmp(names[i]->d_name + len - 5, ".conf")) {
            int r;
            snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
            ctx->vm = NULL;
            ctx->shared_defs = 1;
            r = ini_parse(path, on_key, ctx);
            if (r != 0) {
                snprintf(err, errlen, "%s:%d: %s", path, r,
                         ctx->failed ? ctx->why
                         : r < 0     ? strerror(errno)
                                     : "syntax error");
                rc = -1;
            }
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

/*
 * A managed VM: its sockets default to files in run_dir (the bridge starts QEMU with them),
 * its tiers must exist and be of the right class.
 */
/*
 * A managed VM on libvirt: libvirt starts QEMU from the domain it has defined, so what
 * describes the bridge's own QEMU does not apply and is refused by name rather than
 * ignored; so are the features that need the bridge's QEMU (zero-copy RAM in a tier, the
 * console socket handed to QEMU, idle detection from its pid, HA's lease fd).
 */
static int managed_libvirt_check(struct bridge_config *cfg, struct bridge_vm_config *vm, char *err,
                                 size_t errlen)
{
    const char *key = vm->qemu[0]                     ? "qemu"
                      : vm->qemu_args[0]              ? "qemu_args"
                      : vm->qemu_user[0]              ? "qemu_user"
                      : (vm->seen & K_QMP)            ? "qmp"
                      : vm->console                   ? "console"
                      : vm->idle_suspend_s            ? "idle_suspend"
                      : vm->ha                        ? "ha"
                      : vm->rapid != BRIDGE_RAPID_OFF ? "rapid"
                                                      : NULL;
    const char *why = !key                           ? NULL
                      : !strcmp(key, "rapid")        ? "zero-copy needs the bridge's own QEMU; "
                                                       "checkpoints of libvirt domains are copies "
                                                       "(rapid = off, a slow_tier or fast_tier)"
                      : !strcmp(key, "console")      ? "not supported: use the domain's console"
                      : !strcmp(key, "idle_suspend") ? "not supported on libvirt"
                      : !strcmp(key, "ha")           ? "HA VMs need backend = qmp"
                                           : "libvirt starts QEMU from the domain's XML, not "
                                             "the bridge: leave it out";

    if (!key)
        return 0;
    snprintf(err, errlen, "%s: [vm %s] %s: %s (managed = yes, backend = libvirt)", cfg->path,
             vm->name, key, why);
    return -1;
}

static int managed_check(struct bridge_config *cfg, struct bridge_vm_config *vm, char *err,
                         size_t errlen)
{
    const struct bridge_tier_config *fast = NULL, *slow = NULL;
    int lv = vm->backend == BRIDGE_BACKEND_LIBVIRT;

    if (!vm->memory_bytes) {
        snprintf(err, errlen, "%s: [vm %s] memory: required for a managed VM", cfg->path, vm->name);
        return -1;
    }
    if (!vm->run_dir[0])
        snprintf(vm->run_dir, sizeof(vm->run_dir), "%s/run/vmstate/%.60s", LOCALSTATEDIR, vm->name);
    if (lv && managed_libvirt_check(cfg, vm, err, errlen) < 0)
        return -1;
    if (!vm->qemu[0] && !lv)
        strcpy(vm->qemu, "qemu-system-x86_64");
#define RUN_SOCK(field, bit, file)                                                                 \
    if (!(vm->seen & (bit))) {                                                                     \
        snprintf(vm->field, sizeof(vm->field), "%.100s/" file, vm->run_dir);                       \
        vm->seen |= (bit);                                                                         \
    }
    if (!lv) { /* libvirt: no QMP; the ports come from the domain XML unless given */
        RUN_SOCK(qmp, K_QMP, "qmp.sock")
        RUN_SOCK(port_a, K_PORT_A, "a.sock")
        RUN_SOCK(port_b, K_PORT_B, "b.sock")
    }
#undef RUN_SOCK
    if (vm->fast_tier[0] && !(fast = bridge_config_tier(cfg, vm->fast_tier))) {
        snprintf(err, errlen, "%s: [vm %s] fast_tier: no [tier %s]", cfg->path, vm->name,
                 vm->fast_tier);
        return -1;
    }
    if (vm->slow_tier[0] && !(slow = bridge_config_tier(cfg, vm->slow_tier))) {
        snprintf(err, errlen, "%s: [vm %s] slow_tier: no [tier %s]", cfg->path, vm->name,
                 vm->slow_tier);
        return -1;
    }
    if (vm->rapid != BRIDGE_RAPID_OFF && !fast) {
        snprintf(err, errlen, "%s: [vm %s] rapid: needs fast_tier", cfg->path, vm->name);
        return -1;
    }
    if (!fast && !slow) {
        snprintf(err, errlen,
                 "%s: [vm %s] slow_tier: a managed VM needs a tier for its checkpoints", cfg->path,
                 vm->name);
        return -1;
    }
    if (vm->rapid == BRIDGE_RAPID_BEST_EFFORT && !slow) {
        snprintf(err, errlen,
                 "%s: [vm %s] slow_tier: rapid = best-effort needs one to fall back to", cfg->path,
                 vm->name);
        return -1;
    }
    if (!vm->stop_timeout)
        vm->stop_timeout = 30;
    if (!vm->idle_cpu_percent)
        vm->idle_cpu_percent = 5;
    return 0;
}

/* Checks that need the whole file: required keys, consistent bounds. */
static int config_check(struct bridge_config *cfg, char *err, size_t errlen)
{
    struct bridge_cluster_config *cl = &cfg->cluster;

    if (cl->enabled && !cl->node[0] && gethostname(cl->node, sizeof(cl->node) - 1) < 0)
        strcpy(cl->node, "localhost");
    if (cl->enabled && (!cl->shared_dir[0] || !cl->host_vcpus || !cl->host_memory)) {
        snprintf(err, errlen, "%s: [cluster] %s: required key missing", cfg->path,
                 !cl->shared_dir[0] ? "shared_dir"
                 : !cl->host_vcpus  ? "host_vcpus"
                                    : "host_memory");
        return -1;
    }
    for (size_t i = 0; i < cfg->n_vms; i++) {
        struct bridge_vm_config *vm = &cfg->vms[i];
        if (!vm->vcpus)
            vm->vcpus = 1;
        if (!vm->ha)
            continue;
        if (!cl->enabled || !vm->managed) {
            snprintf(err, errlen, "%s: [vm %s] ha: needs %s", cfg->path, vm->name,
                     !cl->enabled ? "[cluster] enabled = yes" : "managed = yes");
            return -1;
        }
        if (!vm->n_ha_hosts) {
            snprintf(err, errlen, "%s: [vm %s] ha_hosts: required for an HA VM", cfg->path,
                     vm->name);
            return -1;
        }
    }
    for (size_t i = 0; cl->enabled && i < cfg->n_vms; i++) {
        struct bridge_vm_config *vm = &cfg->vms[i];
        if (subst_node(vm->run_dir, sizeof(vm->run_dir), cl->node) < 0 ||
            subst_node(vm->qemu_args, sizeof(vm->qemu_args), cl->node) < 0) {
            snprintf(err, errlen, "%s: [vm %s] run_dir: too long once {node} is substituted",
                     cfg->path, vm->name);
            return -1;
        }
    }
    for (size_t i = 0; i < cfg->n_peers; i++)
        if (!cfg->peers[i].admin_socket[0]) {
            snprintf(err, errlen, "%s: [peer %s] admin_socket: required key missing", cfg->path,
                     cfg->peers[i].name);
            return -1;
        }
    for (size_t i = 0; i < cfg->n_tiers; i++) {
        if (!cfg->tiers[i].path[0] || !cfg->tiers[i].capacity) {
            snprintf(err, errlen, "%s: [tier %s] %s: required key missing", cfg->path,
                     cfg->tiers[i].name, cfg->tiers[i].path[0] ? "capacity" : "path");
            return -1;
        }
    }
    for (size_t i = 0; i < cfg->n_vms; i++) {
        struct bridge_vm_config *vm = &cfg->vms[i];
        if (vm->managed && managed_check(cfg, vm, err, errlen) < 0)
            return -1;
    }
    for (size_t i = 0; i < cfg->n_vms; i++) {
        struct bridge_vm_config *vm = &cfg->vms[i];
        int lv = vm->backend == BRIDGE_BACKEND_LIBVIRT;
        /* libvirt: the ports may come from the domain XML, snapshots cover every disk */
        const char *missing = lv                       ? NULL
                              : !(vm->seen & K_PORT_A) ? "port_a"
                              : !(vm->seen & K_PORT_B) ? "port_b"
                              : !(vm->seen & K_QMP)    ? "qmp"
                              : !(vm->seen & K_NODES)  ? "nodes"
                                                       : NULL;
        if (lv) {
#ifndef HAVE_LIBVIRT
            snprintf(err, errlen, "%s: [vm %s] backend: built without libvirt (--with-libvirt)",
                     cfg->path, vm->name);
            return -1;
#endif
            if (!vm->uri[0])
                strcpy(vm->uri, "qemu:///system");
            if (!vm->domain[0])
                strcpy(vm->domain, vm->name);
            if (!(vm->seen & K_PORTS))
                vm->ports_listen = 1; /* a revert replaces QEMU: let the new one dial us */
            if (!vm->state_dir[0])
                snprintf(vm->state_dir, sizeof(vm->state_dir), "%s/lib/libvirt/qemu",
                         LOCALSTATEDIR);
            if (!!vm->port_a[0] != !!vm->port_b[0]) {
                snprintf(err, errlen, "%s: [vm %s] %s: give both ports or neither", cfg->path,
                         vm->name, vm->port_a[0] ? "port_b" : "port_a");
                return -1;
            }
        }
        if (missing) {
            snprintf(err, errlen, "%s: [vm %s] %s: required key missing", cfg->path, vm->name,
                     missing);
            return -1;
        }
        if (!vm->vmstate_node[0] && vm->n_nodes)
            strcpy(vm->vmstate_node, vm->nodes[0]);
        if (!vm->state_dir[0]) {
            /* default: the directory of the QMP socket */
            const char *slash = strrchr(vm->qmp, '/');
            if (slash && slash != vm->qmp)
                snprintf(vm->state_dir, sizeof(vm->state_dir), "%.*s", (int)(slash - vm->qmp),
                         vm->qmp);
            else
                strcpy(vm->state_dir, slash ? "/" : ".");
        }
        if (vm->mem_max_bytes && vm->mem_min_bytes > vm->mem_max_bytes) {
            snprintf(err, errlen, "%s: [vm %s] mem_min: greater than mem_max", cfg->path, vm->name);
            return -1;
        }
        if (vm->rate_requests && !vm->rate_window) {
            snprintf(err, errlen, "%s: [vm %s] rate_window: must be > 0 when rate_requests is set",
                     cfg->path, vm->name);
            return -1;
        }
        if (vm->auth_fail_max && !vm->auth_fail_window) {
            snprintf(err, errlen,
                     "%s: [vm %s] auth_fail_window: must be > 0 when auth_fail_max is set",
                     cfg->path, vm->name);
            return -1;
        }
    }
    if (cfg->reconnect_min_ms > cfg->reconnect_max_ms) {
        snprintf(err, errlen, "%s: [bridge] reconnect_min_ms: greater than reconnect_max_ms",
                 cfg->path);
        return -1;
    }
    return 0;
}

static int finish(struct bridge_config *cfg, struct parse_ctx *ctx, int rc, char *err,
                  size_t errlen)
{
    if (rc == -1) {
        snprintf(err, errlen, "%s: cannot open: %s", cfg->path, strerror(errno));
        return -1;
    }
    if (rc == -2) {
        snprintf(err, errlen, "%s: out of memory", cfg->path);
        return -1;
    }
    if (rc > 0) {
        if (ctx->failed)
            snprintf(err, errlen, "%s:%d: %s", cfg->path, rc, ctx->why);
        else
            snprintf(err, errlen, "%s:%d: syntax error (expected [section] or key = value)",
                     cfg->path, rc);
        return -1;
    }
    if (load_shared_defs(cfg, ctx, err, errlen) < 0)
        return -1;
    return config_check(cfg, err, errlen);
}

int bridge_config_load(struct bridge_config *cfg, const char *path, char *err, size_t errlen)
{
    struct parse_ctx ctx = {.cfg = cfg};
    int rc;

    config_defaults(cfg);
    snprintf(cfg->path, sizeof(cfg->path), "%s", path);
    rc = ini_parse(path, on_key, &ctx);
    return finish(cfg, &ctx, rc, err, errlen);
}

int bridge_config_load_string(struct bridge_config *cfg, const char *name, const char *text,
                              char *err, size_t errlen)
{
    struct parse_ctx ctx = {.cfg = cfg};
    int rc;

    config_defaults(cfg);
    snprintf(cfg->path, sizeof(cfg->path), "%s", name);
    rc = ini_parse_string(text, on_key, &ctx);
    return finish(cfg, &ctx, rc, err, errlen);
}

void bridge_config_free(struct bridge_config *cfg)
{
    free(cfg->vms);
    cfg->vms = NULL;
    cfg->n_vms = 0;
}

const struct bridge_vm_config *bridge_config_vm(const struct bridge_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_vms; i++)
        if (!strcmp(cfg->vms[i].name, name))
            return &cfg->vms[i];
    return NULL;
}
