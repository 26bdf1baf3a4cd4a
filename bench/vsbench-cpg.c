/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vsbench-cpg — CPG throughput of the cluster table's messages (bench/bench-cluster.py).
 *
 *   vsbench-cpg [--send N] [--expect N] [--vms V] [--raw] [--group G]
 *
 * Joins CPG group G (default vmstate-bench) on the local corosync. With --send, multicasts
 * N table messages (AGREED, as the bridge does): every 10th a hello listing V running VMs,
 * the others claims, each built by the bridge's own cluster/table.c. Every instance counts
 * the messages it is delivered until --expect N arrived (default: --send), applying each to
 * a table of V HA VMs with cl_table_apply() unless --raw (the floor: the same bytes,
 * delivered but not applied). Prints one JSON line: messages, bytes, seconds from the first
 * delivery to the last, messages/s, µs of CPU per applied message.
 */
#include "config.h"

#include <corosync/cpg.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bridge-config.h"
#include "table.h"

static struct cl_table table;
static long delivered, expect;
static unsigned long long bytes;
static double t_first, t_last, apply_cpu;
static int raw;

static double now_s(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_deliver(cpg_handle_t h, const struct cpg_name *group, uint32_t nodeid, uint32_t pid,
                       void *msg, size_t len)
{
    (void)h;
    (void)group;
    (void)pid;
    if (!delivered)
        t_first = now_s(CLOCK_MONOTONIC);
    delivered++;
    bytes += len;
    if (!raw) {
        struct cl_applied a;
        char why[200];
        double c0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
        cl_table_apply(&table, nodeid, msg, len, &a, why, sizeof(why));
        apply_cpu += now_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    }
    t_last = now_s(CLOCK_MONOTONIC);
}

/* A configuration text with @n HA VMs (the table's shape at @n VMs). */
static char *config_text(int n)
{
    size_t cap = 256 + (size_t)n * 160, len = 0;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    len += (size_t)snprintf(s, cap,
                            "[cluster]\nenabled = yes\nnode = h1\nshared_dir = /tmp\n"
                            "host_vcpus = 64\nhost_memory = 256G\n[tier t]\npath = /tmp\n"
                            "capacity = 1T\n");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len,
                                "[vm vm%03d]\nmanaged = yes\nmemory = 1G\nslow_tier = t\n"
                                "nodes = d\nha = yes\nha_hosts = h1, h2, h3\n",
                                i);
    return s;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"send", required_argument, NULL, 's'},  {"expect", required_argument, NULL, 'e'},
        {"vms", required_argument, NULL, 'v'},   {"raw", no_argument, NULL, 'r'},
        {"group", required_argument, NULL, 'g'}, {NULL, 0, NULL, 0}};
    cpg_model_v1_data_t model = {.model = CPG_MODEL_V1, .cpg_deliver_fn = on_deliver};
    struct bridge_config cfg;
    struct cpg_name name;
    cpg_handle_t h;
    const char *group = "vmstate-bench";
    char err[256], *text;
    long send = 0, sent = 0;
    int vms = 100, fd, opt;
    double c0;
    uint32_t me = 0;

    while ((opt = getopt_long(argc, argv, "s:e:v:rg:", opts, NULL)) != -1) {
        if (opt == 's')
            send = atol(optarg);
        else if (opt == 'e')
            expect = atol(optarg);
        else if (opt == 'v')
            vms = atoi(optarg);
        else if (opt == 'r')
            raw = 1;
        else if (opt == 'g')
            group = optarg;
        else
            return 2;
    }
    if (!expect)
        expect = send;
    if (expect <= 0 || vms <= 0 || vms > BRIDGE_VMS_MAX) {
        fprintf(stderr, "vsbench-cpg: --send or --expect N > 0, --vms 1..%d\n", BRIDGE_VMS_MAX);
        return 2;
    }
    text = config_text(vms);
    if (!text || bridge_config_load_string(&cfg, "bench", text, err, sizeof(err)) < 0 ||
        cl_table_init(&table, &cfg) < 0) {
        fprintf(stderr, "vsbench-cpg: %s\n", err);
        return 1;
    }
    free(text);
    if (cpg_model_initialize(&h, CPG_MODEL_V1, (cpg_model_data_t *)&model, NULL) != CS_OK) {
        fprintf(stderr, "vsbench-cpg: no corosync here (cpg_initialize)\n");
        return 1;
    }
    memset(&name, 0, sizeof(name));
    name.length = (uint32_t)strlen(group);
    memcpy(name.value, group, name.length);
    if (cpg_join(h, &name) != CS_OK || cpg_fd_get(h, &fd) != CS_OK ||
        cpg_local_get(h, &me) != CS_OK)
        return 1;
    /* the other instances join first (the script starts them earlier): a moment for the
     * membership to settle before the first message */
    if (send) {
        struct timespec ts = {0, 300 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    c0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    while (delivered < expect) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        while (sent < send) {
            char buf[CL_MSG_MAX];
            int run[BRIDGE_VMS_MAX], n;
            struct iovec iov;
            cs_error_t e;
            if (sent % 10 == 0) {
                for (int i = 0; i < vms; i++)
                    run[i] = i;
                n = cl_msg_hello(buf, sizeof(buf), "h1", 64, 256ull << 30, &table, run,
                                 (size_t)vms);
            } else {
                char vm[16];
                snprintf(vm, sizeof(vm), "vm%03ld", sent % vms);
                n = cl_msg_claim(buf, sizeof(buf), vm, "h1", (uint64_t)sent);
            }
            if (n < 0)
                return 1;
            iov.iov_base = buf;
            iov.iov_len = (size_t)n;
            e = cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1);
            if (e == CS_ERR_TRY_AGAIN)
                break; /* flow control: deliver some first */
            if (e != CS_OK)
                return 1;
            sent++;
        }
        if (poll(&p, 1, 10000) <= 0) {
            fprintf(stderr, "vsbench-cpg: stalled at %ld of %ld\n", delivered, expect);
            return 1;
        }
        if (cpg_dispatch(h, CS_DISPATCH_ALL) != CS_OK)
            return 1;
    }
    printf("{\"node\": %u, \"vms\": %d, \"raw\": %s, \"messages\": %ld, \"bytes\": %llu, "
           "\"seconds\": %.4f, \"per_second\": %.0f, \"apply_us\": %.2f, \"cpu_us_per_msg\": "
           "%.2f}\n",
           me, vms, raw ? "true" : "false", delivered, bytes, t_last - t_first,
           delivered / (t_last - t_first > 0 ? t_last - t_first : 1e-9),
           raw ? 0.0 : apply_cpu * 1e6 / delivered,
           (now_s(CLOCK_PROCESS_CPUTIME_ID) - c0) * 1e6 / delivered);
    cpg_finalize(h);
    cl_table_free(&table);
    bridge_config_free(&cfg);
    return 0;
}
