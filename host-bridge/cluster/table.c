/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * table.c — see table.h. Pure: no I/O, no clock (times come in as arguments), so every
 * bridge that applies the same messages reaches the same table and the same decisions.
 */
#include "config.h"
#include "table.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vms-proto.h"

const char *cl_vm_state_name(enum cl_vm_state s)
{
    return s == CL_VM_RUNNING ? "running" : s == CL_VM_STARTING ? "starting" : "stopped";
}

int cl_table_init(struct cl_table *t, const struct bridge_config *cfg)
{
    size_t n = 0;

    memset(t, 0, sizeof(*t));
    t->tolerate = cfg->cluster.failures_tolerated;
    for (size_t i = 0; i < cfg->n_vms; i++)
        n += cfg->vms[i].ha != 0;
    t->vms = calloc(n ? n : 1, sizeof(*t->vms));
    if (!t->vms)
        return -1;
    for (size_t i = 0; i < cfg->n_vms; i++) {
        const struct bridge_vm_config *c = &cfg->vms[i];
        struct cl_vm *v;
        if (!c->ha)
            continue;
        v = &t->vms[t->n_vms++];
        snprintf(v->name, sizeof(v->name), "%s", c->name);
        v->priority = c->ha_priority;
        v->vcpus = c->vcpus ? c->vcpus : 1;
        v->memory = c->memory_bytes;
        for (unsigned k = 0; k < c->n_ha_hosts; k++)
            snprintf(v->hosts[k], sizeof(v->hosts[k]), "%s", c->ha_hosts[k]);
        v->n_hosts = c->n_ha_hosts;
    }
    return 0;
}

void cl_table_free(struct cl_table *t)
{
    free(t->vms);
    t->vms = NULL;
    t->n_vms = 0;
}

int cl_table_vm(const struct cl_table *t, const char *name)
{
    for (size_t i = 0; i < t->n_vms; i++)
        if (!strcmp(t->vms[i].name, name))
            return (int)i;
    return -1;
}

int cl_table_host(const struct cl_table *t, const char *name)
{
    for (size_t i = 0; i < t->n_hosts; i++)
        if (!strcmp(t->hosts[i].name, name))
            return (int)i;
    return -1;
}

int cl_table_host_by_nodeid(const struct cl_table *t, uint32_t nodeid)
{
    for (size_t i = 0; i < t->n_hosts; i++)
        if (t->hosts[i].nodeid == nodeid)
            return (int)i;
    return -1;
}

void cl_table_membership(struct cl_table *t, const uint32_t *members, size_t n,
                         const uint32_t *left, const int *node_down, size_t n_left, double now)
{
    for (size_t i = 0; i < t->n_hosts; i++) {
        struct cl_host *h = &t->hosts[i];
        int was = h->member;
        h->member = 0;
        for (size_t k = 0; k < n; k++)
            if (members[k] == h->nodeid)
                h->member = 1;
        for (size_t k = 0; k < n_left; k++)
            if (left[k] == h->nodeid && was) {
                h->left_at = now;
                h->node_down = node_down[k];
            }
        if (h->member) {
            h->left_at = 0;
            h->node_down = 0;
        }
        h->hello_seen = 0;
    }
    /* members not known by name yet: remembered by node id until their hello names them */
    for (size_t k = 0; k < n; k++) {
        if (cl_table_host_by_nodeid(t, members[k]) >= 0 || t->n_hosts >= CL_HOSTS_MAX)
            continue;
        memset(&t->hosts[t->n_hosts], 0, sizeof(t->hosts[0]));
        t->hosts[t->n_hosts].nodeid = members[k];
        t->hosts[t->n_hosts].member = 1;
        t->n_hosts++;
    }
}

int cl_table_synced(const struct cl_table *t)
{
    int any = 0;
    for (size_t i = 0; i < t->n_hosts; i++) {
        if (!t->hosts[i].member)
            continue;
        any = 1;
        if (!t->hosts[i].hello_seen)
            return 0;
    }
    return any;
}

int cl_table_host_gone(const struct cl_table *t, int h, double now, double grace)
{
    const struct cl_host *x;

    if (h < 0)
        return 1;
    x = &t->hosts[h];
    if (x->member)
        return 0;
    return x->node_down || x->left_at == 0 || now - x->left_at >= grace;
}

/* ---- messages ---- */

static const char *str_field(json_object *o, const char *key)
{
    json_object *v;
    const char *s;

    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    s = json_object_get_string(v);
    return strlen(s) < CL_NAME_MAX && vms_valid_id(s) ? s : NULL;
}

/* "" is a valid checkpoint (none yet); otherwise a state id */
static const char *ck_field(json_object *o)
{
    json_object *v;
    const char *s;

    if (!json_object_object_get_ex(o, "ck", &v))
        return "";
    if (!json_object_is_type(v, json_type_string))
        return NULL;
    s = json_object_get_string(v);
    return !*s || (strlen(s) < CL_CK_MAX && vms_valid_id(s)) ? s : NULL;
}

static int64_t int_field(json_object *o, const char *key)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
        return -1;
    return json_object_get_int64(v);
}

/* The host entry for @name speaking from @nodeid (created or renamed as needed). */
static int host_for(struct cl_table *t, const char *name, uint32_t nodeid)
{
    int h = cl_table_host(t, name), byid = cl_table_host_by_nodeid(t, nodeid);

    if (byid >= 0 && byid != h) {
        if (h < 0 && !t->hosts[byid].name[0]) {
            /* a member known by node id until now: its name arrives */
            snprintf(t->hosts[byid].name, sizeof(t->hosts[byid].name), "%s", name);
            return byid;
        }
        t->hosts[byid].nodeid = 0; /* the node id moved to another name */
    }
    if (h < 0) {
        if (t->n_hosts >= CL_HOSTS_MAX)
            return -1;
        h = (int)t->n_hosts++;
        memset(&t->hosts[h], 0, sizeof(t->hosts[h]));
        snprintf(t->hosts[h].name, sizeof(t->hosts[h].name), "%s", name);
        t->hosts[h].member = byid >= 0 ? t->hosts[byid].member : 0;
    }
    t->hosts[h].nodeid = nodeid;
    return h;
}

static int apply_hello(struct cl_table *t, uint32_t nodeid, json_object *o, struct cl_applied *out,
                       char *why, size_t whylen)
{
    const char *node = str_field(o, "node");
    json_object *run;
    int64_t vcpus = int_field(o, "vcpus"), mem = int_field(o, "memory");
    int h;

    if (!node || vcpus < 0 || mem < 0 || !json_object_object_get_ex(o, "run", &run) ||
        !json_object_is_type(run, json_type_array)) {
        snprintf(why, whylen, "malformed hello");
        return 0;
    }
    h = host_for(t, node, nodeid);
    if (h < 0) {
        snprintf(why, whylen, "more than %d hosts", CL_HOSTS_MAX);
        return 0;
    }
    t->hosts[h].vcpus = (unsigned)vcpus;
    t->hosts[h].memory = (uint64_t)mem;
    t->hosts[h].hello_seen = 1;
    /* what the table says runs there and the hello does not list is no longer there (its
     * QEMU died while its bridge was away): it needs a place again. One pass over the list,
     * then one over the VMs: a hello of n VMs costs O(n) lookups, not O(n^2) */
    {
        unsigned char listed[BRIDGE_VMS_MAX] = {0};
        for (size_t k = 0; k < json_object_array_length(run); k++) {
            const char *n = str_field(json_object_array_get_idx(run, k), "vm");
            int v = n ? cl_table_vm(t, n) : -1;
            if (v >= 0 && v < BRIDGE_VMS_MAX)
                listed[v] = 1;
        }
        for (size_t i = 0; i < t->n_vms && i < BRIDGE_VMS_MAX; i++) {
            struct cl_vm *v = &t->vms[i];
            if (!listed[i] && v->state == CL_VM_RUNNING && !strcmp(v->host, node))
                v->host[0] = '\0';
        }
    }
    for (size_t k = 0; k < json_object_array_length(run); k++) {
        json_object *e = json_object_array_get_idx(run, k);
        const char *n = str_field(e, "vm"), *ck = ck_field(e);
        int64_t gen = int_field(e, "gen");
        int v = n ? cl_table_vm(t, n) : -1;
        if (v < 0 || !ck || gen < 0)
            continue;
        snprintf(t->vms[v].host, sizeof(t->vms[v].host), "%s", node);
        t->vms[v].state = CL_VM_RUNNING;
        if (*ck)
            snprintf(t->vms[v].ck, sizeof(t->vms[v].ck), "%s", ck);
        if ((uint64_t)gen > t->vms[v].gen)
            t->vms[v].gen = (uint64_t)gen;
    }
    snprintf(out->host, sizeof(out->host), "%s", node);
    return 1;
}

int cl_table_apply(struct cl_table *t, uint32_t nodeid, const char *msg, size_t len,
                   struct cl_applied *out, char *why, size_t whylen)
{
    struct json_tokener *tok;
    json_object *o = NULL;
    const char *kind, *vmn, *node, *ck;
    int v, rc = 0;

    memset(out, 0, sizeof(*out));
    out->vm = -1;
    why[0] = '\0';
    if (len == 0 || len > CL_MSG_MAX) {
        snprintf(why, whylen, "message of %zu bytes", len);
        return 0;
    }
    tok = json_tokener_new_ex(8);
    if (!tok) {
        snprintf(why, whylen, "out of memory");
        return 0;
    }
    o = json_tokener_parse_ex(tok, msg, (int)len);
    json_tokener_free(tok);
    if (!o || !json_object_is_type(o, json_type_object) || !(kind = str_field(o, "t"))) {
        snprintf(why, whylen, "not a cluster message");
        goto out;
    }
    if (!strcmp(kind, "hello")) {
        rc = apply_hello(t, nodeid, o, out, why, whylen);
        goto out;
    }
    vmn = str_field(o, "vm");
    node = str_field(o, "node");
    ck = ck_field(o);
    if (!vmn || !node || !ck) {
        snprintf(why, whylen, "malformed %s", kind);
        goto out;
    }
    v = cl_table_vm(t, vmn);
    if (v < 0) {
        snprintf(why, whylen, "no HA VM %s here", vmn);
        goto out;
    }
    out->vm = v;
    snprintf(out->host, sizeof(out->host), "%s", node);
    if (!strcmp(kind, "claim")) {
        int64_t gen = int_field(o, "gen");
        if (gen < 0 || (uint64_t)gen != t->vms[v].gen) {
            snprintf(why, whylen,
                     "stale claim of %s by %s (generation %" PRId64 ", now %" PRIu64 ")", vmn, node,
                     gen, t->vms[v].gen);
            goto out;
        }
        snprintf(t->vms[v].host, sizeof(t->vms[v].host), "%s", node);
        t->vms[v].state = CL_VM_STARTING;
        t->vms[v].gen++;
        out->claimed = 1;
        rc = 1;
    } else if (!strcmp(kind, "state")) {
        const char *st = str_field(o, "state");
        if (st && !strcmp(st, "running")) {
            snprintf(t->vms[v].host, sizeof(t->vms[v].host), "%s", node);
            t->vms[v].state = CL_VM_RUNNING;
            if (*ck)
                snprintf(t->vms[v].ck, sizeof(t->vms[v].ck), "%s", ck);
            rc = 1;
        } else if (st && !strcmp(st, "stopped")) {
            /* only the host it is on may say it stopped (a late word from a host it left
             * must not stop it where it runs now) */
            if (!strcmp(t->vms[v].host, node)) {
                t->vms[v].state = CL_VM_STOPPED;
                rc = 1;
            } else {
                snprintf(why, whylen, "%s is not on %s", vmn, node);
            }
        } else {
            snprintf(why, whylen, "malformed state");
        }
    } else if (!strcmp(kind, "ck")) {
        if (!strcmp(t->vms[v].host, node) && *ck) {
            snprintf(t->vms[v].ck, sizeof(t->vms[v].ck), "%s", ck);
            rc = 1;
        } else {
            snprintf(why, whylen, "checkpoint of %s from %s, where it does not run", vmn, node);
        }
    } else {
        snprintf(why, whylen, "unknown message kind %s", kind);
    }
out:
    json_object_put(o);
    return rc;
}

/* ---- decisions ---- */

void cl_table_slots(const struct cl_table *t, struct cl_slots *s)
{
    unsigned sorted[CL_HOSTS_MAX];
    size_t n = 0;

    memset(s, 0, sizeof(*s));
    s->box_vcpus = 1;
    for (size_t i = 0; i < t->n_vms; i++) {
        if (t->vms[i].vcpus > s->box_vcpus)
            s->box_vcpus = t->vms[i].vcpus;
        if (t->vms[i].memory > s->box_memory)
            s->box_memory = t->vms[i].memory;
        s->admitted += t->vms[i].state != CL_VM_STOPPED;
    }
    for (size_t h = 0; h < t->n_hosts; h++) {
        const struct cl_host *x = &t->hosts[h];
        unsigned by_cpu, by_mem;
        if (!x->member || !x->name[0] || !x->vcpus)
            continue;
        by_cpu = x->vcpus / s->box_vcpus;
        by_mem = s->box_memory ? (unsigned)(x->memory / s->box_memory) : by_cpu;
        s->slots[h] = by_cpu < by_mem ? by_cpu : by_mem;
        s->total += s->slots[h];
        sorted[n++] = s->slots[h];
    }
    /* maxSlot: what is left when the @tolerate largest hosts fail */
    for (size_t i = 1; i < n; i++)
        for (size_t k = i; k > 0 && sorted[k] > sorted[k - 1]; k--) {
            unsigned x = sorted[k];
            sorted[k] = sorted[k - 1];
            sorted[k - 1] = x;
        }
    s->max_slot = s->total;
    for (size_t i = 0; i < n && i < t->tolerate; i++)
        s->max_slot -= sorted[i];
    if (t->tolerate >= n)
        s->max_slot = 0;
}

/* VM @v must find a place: it is meant to run and its host is gone. */
static int needs_place(const struct cl_table *t, size_t v, double now, double grace)
{
    const struct cl_vm *x = &t->vms[v];
    if (x->state == CL_VM_STOPPED)
        return 0;
    return !x->host[0] || cl_table_host_gone(t, cl_table_host(t, x->host), now, grace);
}

/* priority first, then name: every bridge sorts the same way */
static int before(const struct cl_vm *a, const struct cl_vm *b)
{
    if (a->priority != b->priority)
        return a->priority > b->priority;
    return strcmp(a->name, b->name) < 0;
}

static size_t plan(const struct cl_table *t, double now, double grace, struct cl_move *moves,
                   size_t max, int *unplaced, size_t n_unplaced)
{
    struct cl_slots s;
    unsigned used[CL_HOSTS_MAX] = {0};
    int order[BRIDGE_VMS_MAX];
    size_t n = 0, m = 0;

    cl_table_slots(t, &s);
    for (size_t i = 0; i < t->n_vms; i++) {
        int h = cl_table_host(t, t->vms[i].host);
        if (t->vms[i].state != CL_VM_STOPPED && h >= 0 && !cl_table_host_gone(t, h, now, grace))
            used[h]++;
    }
    for (size_t i = 0; i < t->n_vms && n < BRIDGE_VMS_MAX; i++)
        if (needs_place(t, i, now, grace))
            order[n++] = (int)i;
    for (size_t i = 1; i < n; i++)
        for (size_t k = i; k > 0 && before(&t->vms[order[k]], &t->vms[order[k - 1]]); k--) {
            int x = order[k];
            order[k] = order[k - 1];
            order[k - 1] = x;
        }
    for (size_t i = 0; i < n; i++) {
        const struct cl_vm *v = &t->vms[order[i]];
        int placed = 0;
        for (unsigned k = 0; k < v->n_hosts && !placed; k++) {
            int h = cl_table_host(t, v->hosts[k]);
            if (h < 0 || !t->hosts[h].member || !t->hosts[h].hello_seen || used[h] >= s.slots[h])
                continue;
            used[h]++;
            placed = 1;
            if (m < max)
                moves[m++] = (struct cl_move){order[i], h};
        }
        if (!placed && unplaced && (size_t)order[i] < n_unplaced)
            unplaced[order[i]] = 1;
    }
    return m;
}

size_t cl_table_plan(const struct cl_table *t, double now, double grace, struct cl_move *moves,
                     size_t max)
{
    return plan(t, now, grace, moves, max, NULL, 0);
}

int cl_table_waiting(const struct cl_table *t, int v, double now, double grace)
{
    int unplaced[BRIDGE_VMS_MAX] = {0};
    struct cl_move moves[1];

    if (v < 0 || (size_t)v >= t->n_vms || !needs_place(t, (size_t)v, now, grace))
        return 0;
    plan(t, now, grace, moves, 0, unplaced, BRIDGE_VMS_MAX);
    return unplaced[v];
}

/* ---- building messages ---- */

static int fitted(int n, size_t len)
{
    return n < 0 || (size_t)n >= len ? -1 : n;
}

int cl_msg_hello(char *buf, size_t len, const char *node, unsigned vcpus, uint64_t memory,
                 const struct cl_table *t, const int *run, size_t n_run)
{
    int n = snprintf(
        buf, len, "{\"t\":\"hello\",\"node\":\"%s\",\"vcpus\":%u,\"memory\":%" PRIu64 ",\"run\":[",
        node, vcpus, memory);
    for (size_t i = 0; i < n_run && n >= 0 && (size_t)n < len; i++) {
        const struct cl_vm *v = &t->vms[run[i]];
        n += snprintf(buf + n, len - (size_t)n,
                      "%s{\"vm\":\"%s\",\"gen\":%" PRIu64 ",\"ck\":\"%s\"}", i ? "," : "", v->name,
                      v->gen, v->ck);
    }
    if (n >= 0 && (size_t)n < len)
        n += snprintf(buf + n, len - (size_t)n, "]}");
    return fitted(n, len);
}

int cl_msg_claim(char *buf, size_t len, const char *vm, const char *node, uint64_t gen)
{
    return fitted(snprintf(buf, len,
                           "{\"t\":\"claim\",\"vm\":\"%s\",\"node\":\"%s\",\"gen\":%" PRIu64 "}",
                           vm, node, gen),
                  len);
}

int cl_msg_state(char *buf, size_t len, const char *vm, const char *node, const char *state,
                 const char *ck)
{
    return fitted(snprintf(buf, len,
                           "{\"t\":\"state\",\"vm\":\"%s\",\"node\":\"%s\",\"state\":\"%s\","
                           "\"ck\":\"%s\"}",
                           vm, node, state, ck ? ck : ""),
                  len);
}

int cl_msg_ck(char *buf, size_t len, const char *vm, const char *node, const char *ck)
{
    return fitted(snprintf(buf, len, "{\"t\":\"ck\",\"vm\":\"%s\",\"node\":\"%s\",\"ck\":\"%s\"}",
                           vm, node, ck),
                  len);
}
