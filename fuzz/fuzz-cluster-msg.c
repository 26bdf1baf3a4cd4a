/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fuzz-cluster-msg — the cluster table's message parser and decisions (cluster/table.c), and
 * the groups' rpc messages (cluster/rpc.c), routed as cluster.c routes them: what another
 * bridge multicasts on the CPG group. Peers are hosts of the same cluster, not
 * guests, but a broken or hostile peer must not crash every bridge at once: malformed
 * messages change nothing, and the decisions stay within the table.
 *
 * Input: lines. A line "M n1 n2 ...|l1 ..." is a membership change (member node ids, then
 * the ones that left); any other line is one message from node (first byte % 4) + 1, the
 * rest of the line its bytes. After each line the plan, slots and sync state are computed
 * and checked: moves name existing VMs and member hosts, claims only ever raise a VM's
 * generation. An rpc message that parses names valid nodes, a positive id, an allowed
 * command (request) or a boolean "ok" (reply), and formats back to a message that parses
 * to the same. Seeds (fuzz/corpus/cluster-msg/): the unit tests' messages.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge-config.h"
#include "rpc.h"
#include "table.h"
#include "vms-proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char conf[] = "[cluster]\nenabled = yes\nnode = h1\nshared_dir = /tmp\n"
                           "host_vcpus = 2\nhost_memory = 2G\n[tier s]\npath = /tmp\n"
                           "capacity = 1G\n"
                           "[vm a]\nmanaged = yes\nmemory = 1G\nslow_tier = s\nnodes = d\n"
                           "ha = yes\nha_hosts = h1, h2, h3\nha_priority = 3\n"
                           "[vm b]\nmanaged = yes\nmemory = 512M\nslow_tier = s\nnodes = d\n"
                           "ha = yes\nha_hosts = h2, h3\n"
                           "[vm c]\nmanaged = yes\nmemory = 256M\nslow_tier = s\nnodes = d\n"
                           "ha = yes\nha_hosts = h3, h1\nvcpus = 2\n";

static struct bridge_config cfg;

static void membership(struct cl_table *t, const char *line)
{
    uint32_t members[CL_HOSTS_MAX], left[CL_HOSTS_MAX];
    int down[CL_HOSTS_MAX];
    size_t n = 0, nl = 0;
    int in_left = 0;
    const char *p = line + 1;

    while (*p) {
        char *end;
        unsigned long v;
        if (*p == '|') {
            in_left = 1;
            p++;
            continue;
        }
        v = strtoul(p, &end, 10);
        if (end == p) {
            p++;
            continue;
        }
        p = end;
        if (!in_left && n < CL_HOSTS_MAX)
            members[n++] = (uint32_t)v;
        else if (in_left && nl < CL_HOSTS_MAX) {
            down[nl] = (int)(v & 1);
            left[nl++] = (uint32_t)v;
        }
    }
    cl_table_membership(t, members, n, left, down, nl, 100.0);
}

static void check(const struct cl_table *t, const uint64_t *gen_before)
{
    struct cl_move moves[BRIDGE_VMS_MAX];
    struct cl_slots s;
    size_t n = cl_table_plan(t, 200.0, 10.0, moves, BRIDGE_VMS_MAX);

    for (size_t i = 0; i < n; i++)
        if (moves[i].vm < 0 || (size_t)moves[i].vm >= t->n_vms || moves[i].host < 0 ||
            (size_t)moves[i].host >= t->n_hosts || !t->hosts[moves[i].host].member)
            abort();
    for (size_t i = 0; i < t->n_vms; i++) {
        if (t->vms[i].gen < gen_before[i])
            abort();
        (void)cl_table_waiting(t, (int)i, 200.0, 10.0);
    }
    cl_table_slots(t, &s);
    if (s.max_slot > s.total || t->n_hosts > CL_HOSTS_MAX)
        abort();
    (void)cl_table_synced(t);
}

/* A parsed rpc is within its contract, and survives a round trip. */
static void check_rpc(const struct cl_rpc *m)
{
    struct cl_rpc again;
    json_object *v;
    char why[200], *text;

    if ((m->kind != CL_RPC_REQUEST && m->kind != CL_RPC_REPLY) || !m->id ||
        m->id >= (uint64_t)INT64_MAX || !vms_valid_id(m->from) || !vms_valid_id(m->to) ||
        strlen(m->from) >= CL_NAME_MAX || strlen(m->to) >= CL_NAME_MAX ||
        !json_object_is_type(m->body, json_type_object))
        abort();
    if (m->kind == CL_RPC_REQUEST && (!json_object_object_get_ex(m->body, "cmd", &v) ||
                                      !cl_rpc_cmd_allowed(json_object_get_string(v))))
        abort();
    if (m->kind == CL_RPC_REPLY && (!json_object_object_get_ex(m->body, "ok", &v) ||
                                    !json_object_is_type(v, json_type_boolean)))
        abort();
    text = cl_rpc_format(m->kind, m->id, m->from, m->to, m->body);
    if (!text)
        return; /* re-serialised longer than the limit (escapes): refused, fine */
    if (cl_rpc_parse(text, strlen(text), &again, why, sizeof(why)) != 1 || again.kind != m->kind ||
        again.id != m->id || strcmp(again.from, m->from) || strcmp(again.to, m->to))
        abort();
    cl_rpc_clear(&again);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int loaded;
    struct cl_table t;
    char *text, *line, *save = NULL;

    if (!loaded) {
        char err[256];
        if (bridge_config_load_string(&cfg, "fuzz", conf, err, sizeof(err)) < 0)
            abort();
        loaded = 1;
    }
    if (size > 64 * 1024 || cl_table_init(&t, &cfg) < 0)
        return 0;
    text = malloc(size + 1);
    if (!text) {
        cl_table_free(&t);
        return 0;
    }
    memcpy(text, data, size);
    text[size] = '\0';
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        uint64_t gen[8] = {0};
        for (size_t i = 0; i < t.n_vms && i < 8; i++)
            gen[i] = t.vms[i].gen;
        if (line[0] == 'M') {
            membership(&t, line);
        } else {
            struct cl_applied a;
            struct cl_rpc m;
            char why[200];
            uint32_t node = (uint32_t)((unsigned char)line[0] % 4) + 1;
            size_t len = strlen(line + 1);
            int rc = cl_rpc_parse(line + 1, len, &m, why, sizeof(why));
            if (rc == 1) {
                check_rpc(&m);
                cl_rpc_clear(&m);
                continue;
            }
            if (rc < 0 && m.body)
                abort(); /* a refused rpc holds nothing */
            if (rc < 0)
                continue;
            if (cl_table_apply(&t, node, line + 1, len, &a, why, sizeof(why)) != 1 && a.claimed)
                abort(); /* a refused message claims nothing */
        }
        check(&t, gen);
    }
    free(text);
    cl_table_free(&t);
    return 0;
}
