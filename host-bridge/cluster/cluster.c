/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cluster.c — see cluster.h. The Corosync side (CPG for membership and ordered
 * messages, votequorum for quorum) and what the bridge does with the table's decisions.
 */
#include "config.h"
#include "cluster.h"

#include <corosync/cpg.h>
#include <corosync/votequorum.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bridge.h"
#include "db-lifecycle.h"
#include "ioerror.h"
#include "lease.h"
#include "peer.h"
#include "reach.h"
#include "rpc.h"
#include "table.h"
#include "vms-log.h"

#define RECONNECT_MIN_S 0.2
#define RECONNECT_MAX_S 5.0
#define PLAN_EVERY_S    0.25
#define LEASE_RETRY_S   0.25
#define OUTQ_MAX        64
#define REACH_EVERY_S   1.0 /* storage probes of every HA VM */
#define STORAGE_RETRY_S 1.0 /* a paused VM with no place yet: decide again */

/* An HA VM as this bridge follows it (index = the table's VM index). */
struct cl_local {
    struct bridge_vm *vm;
    uint64_t claimed_gen;  /* a claim sent for this generation (0: none in flight) */
    int starting;          /* a start of ours runs (lease + QEMU) */
    int lease_fd;          /* held during our start, then QEMU's copy holds it */
    double lease_retry_at; /* waiting for the lease (the old QEMU still holds it) */
    char lease_holder[128];
    char start_ck[CL_CK_MAX]; /* the snapshot this start boots from */
    bridge_lc_done_fn done;   /* an admin's power-on waiting for its claim/start */
    void *opaque;
    double claimed_at; /* monotonic: when our claim was applied (failover timing) */
    double next_ck;    /* HA checkpoint schedule */
    int ck_running;
    char ck_prev[CL_CK_MAX]; /* the previous HA checkpoint, deleted after the next one */
    char ck_tag[CL_CK_MAX];
    /* storage-fault moves */
    enum cl_how how;     /* our claimed start: restart, cold, or from a migration stream */
    int reach_sent;      /* the reach answer last published (-1: none) */
    int storage_pending; /* paused on a storage fault, escalated, no move yet */
    int stateless;
    double storage_next;   /* next decision while pending */
    char storage_last[64]; /* the last decision published (events only on changes) */
    int sending;           /* its state is being written for the host that claimed it */
    int detached;          /* its failed disk node was taken out of the QEMU here */
    char failed_node[64];  /* the block node whose I/O error paused it */
    int send_fd;
    double send_t0, escalated_at;
    char send_tmp[BRIDGE_PATH_MAX + 64];
};

struct bridge_cluster {
    struct bridge *br;
    const struct bridge_cluster_config *cfg;
    struct cl_table t;
    struct cl_local *local;
    cpg_handle_t cpg;
    votequorum_handle_t vq;
    int connected;
    struct bridge_watch cpgw, vqw;
    uint32_t nodeid;
    int quorate;
    double now, retry_at, backoff, next_plan;
    /* not quorate since then (bridge start, or quorum/corosync lost): HA VMs still running
     * here after bridge_grace are fenced (a bridge that starts cut off from the majority) */
    double unquorate_since;
    int fenced, warned_connect;
    /* messages CPG asked us to retry (CS_ERR_TRY_AGAIN) */
    char *outq[OUTQ_MAX];
    size_t outq_len;
    uint64_t sent, delivered, confchgs;
    struct cl_reach *reach; /* this host's probes of its HA VMs' storage */
    int republish;          /* send every reach answer again (a membership change) */
};

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct bridge_cluster *of(struct bridge_vm *vm)
{
    return vm && vm->br ? vm->br->cluster : NULL;
}

static int vm_index(struct bridge_cluster *c, struct bridge_vm *vm)
{
    return vm->cfg->ha ? cl_table_vm(&c->t, vm->cfg->name) : -1;
}

/* ---- sending ---- */

static int mcast_now(struct bridge_cluster *c, const char *msg)
{
    struct iovec iov = {.iov_base = (void *)msg, .iov_len = strlen(msg)};
    cs_error_t e = cpg_mcast_joined(c->cpg, CPG_TYPE_AGREED, &iov, 1);
    if (e == CS_OK)
        c->sent++;
    return e == CS_OK ? 0 : e == CS_ERR_TRY_AGAIN ? 1 : -1;
}

/* Send @msg to the group (ordered); kept and retried when Corosync says "try again". */
static void send_msg(struct bridge_cluster *c, const char *msg)
{
    if (!c->connected)
        return;
    if (c->outq_len == 0 && mcast_now(c, msg) != 1)
        return;
    if (c->outq_len < OUTQ_MAX) {
        c->outq[c->outq_len] = strdup(msg);
        if (c->outq[c->outq_len])
            c->outq_len++;
    } else {
        vms_warn(NULL, NULL, "cluster: outgoing queue full, a message is dropped");
    }
}

static void flush_outq(struct bridge_cluster *c)
{
    size_t done = 0;
    while (done < c->outq_len && mcast_now(c, c->outq[done]) == 0)
        free(c->outq[done++]);
    memmove(c->outq, c->outq + done, (c->outq_len - done) * sizeof(c->outq[0]));
    c->outq_len -= done;
}

/* The HA VMs running here: QEMU alive (it holds their lease). */
static void send_hello(struct bridge_cluster *c)
{
    char buf[CL_MSG_MAX];
    int run[BRIDGE_VMS_MAX];
    size_t n = 0;

    for (size_t i = 0; i < c->t.n_vms; i++) {
        struct bridge_vm *vm = c->local[i].vm;
        json_object *st;
        const char *rs = "";
        if (!vm || !vm->mgd)
            continue;
        st = bridge_managed_status(vm);
        {
            json_object *v;
            if (json_object_object_get_ex(st, "run_state", &v))
                rs = json_object_get_string(v);
            if (!strcmp(rs, "running") || !strcmp(rs, "stopping"))
                run[n++] = (int)i;
        }
        json_object_put(st);
    }
    if (cl_msg_hello(buf, sizeof(buf), c->cfg->node, c->cfg->host_vcpus, c->cfg->host_memory, &c->t,
                     run, n) > 0)
        send_msg(c, buf);
}

/* ---- the journal's copy ---- */

static void journal_vm(struct bridge_cluster *c, int v)
{
    struct bridge_db_cluster_vm row;
    const struct cl_vm *x = &c->t.vms[v];

    memset(&row, 0, sizeof(row));
    snprintf(row.vm, sizeof(row.vm), "%s", x->name);
    snprintf(row.host, sizeof(row.host), "%s", x->host);
    snprintf(row.state, sizeof(row.state), "%s", cl_vm_state_name(x->state));
    row.gen = x->gen;
    snprintf(row.ck, sizeof(row.ck), "%s", x->ck);
    bridge_db_cluster_put(&c->br->db, &row);
}

static void journal_load(struct bridge_cluster *c)
{
    for (size_t i = 0; i < c->t.n_vms; i++) {
        struct bridge_db_cluster_vm row;
        struct cl_vm *x = &c->t.vms[i];
        memset(&row, 0, sizeof(row));
        snprintf(row.vm, sizeof(row.vm), "%s", x->name);
        if (bridge_db_cluster_get(&c->br->db, &row) != 1)
            continue;
        snprintf(x->host, sizeof(x->host), "%s", row.host);
        x->state = !strcmp(row.state, "running")    ? CL_VM_RUNNING
                   : !strcmp(row.state, "starting") ? CL_VM_STARTING
                                                    : CL_VM_STOPPED;
        x->gen = row.gen;
        snprintf(x->ck, sizeof(x->ck), "%s", row.ck);
    }
}

/* ---- starting a VM this host claimed ---- */

static void on_started(void *opaque, int ok, json_object *result);
static int start_incoming(struct bridge_cluster *c, int v);
static void storage_send(struct bridge_cluster *c, int v);
static void send_state(struct bridge_cluster *c, int v);
static void on_node_detached(void *opaque, const struct bridge_backend_result *r);
static void storage_tick(struct bridge_cluster *c);

/* Answer the admin waiting for @l's start (if any) with @msg. */
static void reply_error(struct cl_local *l, const char *msg)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "error", json_object_new_string(msg));
    if (l->done)
        l->done(l->opaque, 0, o);
    else
        json_object_put(o);
    l->done = NULL;
}

/* Take the lease and start; without the lease, try again shortly (the old QEMU may not be
 * gone yet: a partitioned host fences itself, a dead host's locks go with its processes). */
static void start_claimed(struct bridge_cluster *c, int v)
{
    struct cl_local *l = &c->local[v];
    char held[128] = "";

    if (!l->vm || !l->starting)
        return;
    if (strcmp(c->t.vms[v].host, c->cfg->node)) {
        /* a migration whose source kept the VM (its state could not be sent) */
        vms_warn(l->vm->cfg->name, NULL, "cluster: no longer ours (on %s): start abandoned",
                 c->t.vms[v].host[0] ? c->t.vms[v].host : "no host");
        l->starting = 0;
        reply_error(l, "the VM stayed on its host");
        return;
    }
    l->lease_fd = bridge_lease_acquire(c->cfg->shared_dir, l->vm->cfg->name, c->cfg->node, held,
                                       sizeof(held));
    if (l->lease_fd < 0) {
        if (errno == EAGAIN) {
            if (strcmp(held, l->lease_holder))
                vms_info(l->vm->cfg->name, NULL,
                         "cluster: waiting for the lease (held by %s): another QEMU still runs it",
                         held[0] ? held : "?");
            snprintf(l->lease_holder, sizeof(l->lease_holder), "%s", held);
            l->lease_retry_at = c->now + LEASE_RETRY_S;
            return;
        }
        vms_err(l->vm->cfg->name, NULL, "cluster: lease in %s: %s", c->cfg->shared_dir,
                strerror(errno));
        l->starting = 0;
        reply_error(l, "cannot take the VM's lease on the shared storage");
        return;
    }
    l->lease_retry_at = 0;
    l->lease_holder[0] = '\0';
    if (l->how == CL_HOW_MIGRATE && start_incoming(c, v))
        return;
    vms_info(l->vm->cfg->name, NULL, "cluster: lease taken; starting %s%s",
             l->start_ck[0] ? "from checkpoint " : "cold", l->start_ck);
    bridge_managed_start_ha(l->vm, l->lease_fd, l->start_ck, on_started, l);
}

static void on_started(void *opaque, int ok, json_object *result)
{
    struct cl_local *l = opaque;
    struct bridge_cluster *c = of(l->vm);
    bridge_lc_done_fn done = l->done;
    void *dop = l->opaque;

    if (l->lease_fd >= 0) {
        close(l->lease_fd); /* QEMU holds its own copy while it runs */
        l->lease_fd = -1;
    }
    if (!ok && l->start_ck[0] && c) {
        /* the checkpoint would not load (gone, or not from this disk): boot cold */
        vms_warn(l->vm->cfg->name, NULL,
                 "cluster: start from checkpoint %s failed; booting from the disk", l->start_ck);
        json_object_put(result);
        l->start_ck[0] = '\0';
        start_claimed(c, (int)(l - c->local));
        return;
    }
    l->starting = 0;
    l->done = NULL;
    if (ok && c && result) {
        json_object_object_add(result, "since_claim_ms",
                               json_object_new_double((mono() - l->claimed_at) * 1000));
    }
    if (ok)
        vms_info(l->vm->cfg->name, NULL, "cluster: running here %.0f ms after the claim",
                 (mono() - l->claimed_at) * 1000);
    if (done)
        done(dop, ok, result);
    else
        json_object_put(result);
    if (c && !ok)
        bridge_cluster_run_state(l->vm, "stopped");
}

/* ---- CPG and votequorum callbacks ---- */

static void fence_all(struct bridge_cluster *c, const char *why)
{
    for (size_t i = 0; i < c->t.n_vms; i++)
        if (c->local[i].vm && bridge_managed_fence(c->local[i].vm))
            vms_err(c->local[i].vm->cfg->name, NULL, "cluster: self-fence (%s)", why);
}

static void answer_claim_lost(struct cl_local *l, const char *host)
{
    char msg[160];
    snprintf(msg, sizeof(msg), "%s was claimed by %s first", l->vm->cfg->name, host);
    reply_error(l, msg);
}

/* An rpc message (rpc.h) goes to the groups' transport when it is for this node and comes
 * from the node it names. 1 when @msg was an rpc message (used or dropped), 0 when not. */
static int deliver_rpc(struct bridge_cluster *c, uint32_t nodeid, const char *msg, size_t len)
{
    struct cl_rpc m;
    char why[200];
    int h, rc = cl_rpc_parse(msg, len, &m, why, sizeof(why));

    if (rc == 0)
        return 0;
    if (rc < 0) {
        vms_debug(NULL, NULL, "cluster: message from node %u dropped: %s", nodeid, why);
        return 1;
    }
    h = cl_table_host_by_nodeid(&c->t, nodeid);
    if (h < 0 || strcmp(c->t.hosts[h].name, m.from))
        vms_debug(NULL, NULL, "cluster: rpc from node %u names %s as its sender: dropped", nodeid,
                  m.from);
    else if (!strcmp(m.to, c->cfg->node))
        group_peer_cpg_deliver(c->br, &m);
    cl_rpc_clear(&m);
    return 1;
}

static void on_deliver(cpg_handle_t h, const struct cpg_name *group, uint32_t nodeid, uint32_t pid,
                       void *msg, size_t len)
{
    struct bridge_cluster *c = NULL;
    struct cl_applied a;
    char why[200];
    (void)group;
    (void)pid;

    if (cpg_context_get(h, (void **)&c) != CS_OK || !c)
        return;
    c->delivered++;
    if (deliver_rpc(c, nodeid, msg, len))
        return;
    if (!cl_table_apply(&c->t, nodeid, msg, len, &a, why, sizeof(why))) {
        if (why[0])
            vms_debug(NULL, NULL, "cluster: message from node %u not applied: %s", nodeid, why);
        return;
    }
    /* one transaction (one fsync) per delivered message, whatever it changed */
    if (bridge_db_begin(&c->br->db) == 0) {
        if (a.vm >= 0)
            journal_vm(c, a.vm);
        else
            for (size_t i = 0; i < c->t.n_vms; i++)
                journal_vm(c, (int)i);
        if (bridge_db_commit(&c->br->db) < 0)
            bridge_db_rollback(&c->br->db);
    }
    if (a.claimed) {
        struct cl_local *l = &c->local[a.vm];
        vms_info(c->t.vms[a.vm].name, NULL, "cluster: claimed by %s (generation %" PRIu64 ")",
                 a.host, c->t.vms[a.vm].gen);
        if (!strcmp(a.host, c->cfg->node) && l->vm) {
            l->starting = 1;
            l->claimed_at = mono();
            l->how = a.how;
            snprintf(l->start_ck, sizeof(l->start_ck), "%s",
                     a.how == CL_HOW_COLD ? "" : c->t.vms[a.vm].ck);
            start_claimed(c, a.vm);
        } else if (a.how == CL_HOW_MIGRATE && !strcmp(a.from, c->cfg->node) && l->vm) {
            storage_send(c, a.vm);
        } else if (l->done) {
            answer_claim_lost(l, a.host);
        }
    }
}

static void on_confchg(cpg_handle_t h, const struct cpg_name *group,
                       const struct cpg_address *members, size_t n_members,
                       const struct cpg_address *left, size_t n_left,
                       const struct cpg_address *joined, size_t n_joined)
{
    struct bridge_cluster *c = NULL;
    uint32_t ids[CL_HOSTS_MAX], lids[CL_HOSTS_MAX];
    int down[CL_HOSTS_MAX];
    size_t n = 0, nl = 0;
    (void)group;
    (void)joined;

    if (cpg_context_get(h, (void **)&c) != CS_OK || !c)
        return;
    c->confchgs++;
    for (size_t i = 0; i < n_members && n < CL_HOSTS_MAX; i++)
        ids[n++] = members[i].nodeid;
    for (size_t i = 0; i < n_left && nl < CL_HOSTS_MAX; i++) {
        lids[nl] = left[i].nodeid;
        /* a crash or a partition takes the node; a stopped or killed bridge leaves its
         * node (and its QEMUs, which hold their leases) behind */
        down[nl++] = left[i].reason == CPG_REASON_NODEDOWN;
        vms_info(NULL, NULL, "cluster: node %u left (%s)", left[i].nodeid,
                 left[i].reason == CPG_REASON_NODEDOWN   ? "node down"
                 : left[i].reason == CPG_REASON_PROCDOWN ? "bridge gone"
                                                         : "left");
    }
    for (size_t i = 0; i < n_joined; i++)
        vms_info(NULL, NULL, "cluster: node %u joined", joined[i].nodeid);
    cl_table_membership(&c->t, ids, n, lids, down, nl, mono());
    c->republish = 1; /* a joining bridge knows no host's reach yet */
    send_hello(c);    /* every member says hello again: the table syncs before anyone acts */
    group_peer_cpg_membership(c->br);
}

static void on_quorum(votequorum_handle_t h, uint64_t context, uint32_t quorate, uint32_t n_nodes,
                      votequorum_node_t nodes[])
{
    struct bridge_cluster *c = NULL;
    (void)context;
    (void)n_nodes;
    (void)nodes;

    if (votequorum_context_get(h, (void **)&c) != CS_OK || !c)
        return;
    if (quorate && !c->quorate) {
        vms_info(NULL, NULL, "cluster: quorate (%u nodes)", n_nodes);
        c->quorate = 1;
        send_hello(c);
    } else if (!quorate && c->quorate) {
        c->quorate = 0;
        c->unquorate_since = c->now;
        vms_err(NULL, NULL, "cluster: quorum lost: stopping this host's HA VMs");
        fence_all(c, "quorum lost");
        group_peer_cpg_membership(c->br);
    }
    if (quorate)
        c->fenced = 0;
}

/* ---- connection ---- */

static void disconnect(struct bridge_cluster *c, const char *why)
{
    if (!c->connected)
        return;
    vms_err(NULL, NULL, "cluster: Corosync connection lost (%s)", why);
    bridge_watch_del(&c->br->loop, &c->cpgw);
    bridge_watch_del(&c->br->loop, &c->vqw);
    cpg_finalize(c->cpg);
    votequorum_finalize(c->vq);
    c->connected = 0;
    for (size_t i = 0; i < c->outq_len; i++)
        free(c->outq[i]);
    c->outq_len = 0;
    if (c->quorate) {
        c->quorate = 0;
        c->unquorate_since = c->now;
        fence_all(c, "Corosync gone");
    }
    group_peer_cpg_membership(c->br);
    c->retry_at = c->now + c->backoff;
}

static void on_cpg_fd(struct bridge_watch *w, uint32_t revents)
{
    struct bridge_cluster *c = w->opaque;
    cs_error_t e = cpg_dispatch(c->cpg, CS_DISPATCH_ALL);
    (void)revents;
    if (e != CS_OK && e != CS_ERR_TRY_AGAIN)
        disconnect(c, "CPG dispatch failed");
}

static void on_vq_fd(struct bridge_watch *w, uint32_t revents)
{
    struct bridge_cluster *c = w->opaque;
    cs_error_t e = votequorum_dispatch(c->vq, CS_DISPATCH_ALL);
    (void)revents;
    if (e != CS_OK && e != CS_ERR_TRY_AGAIN)
        disconnect(c, "votequorum dispatch failed");
}

static int try_connect(struct bridge_cluster *c)
{
    cpg_model_v1_data_t model = {
        .model = CPG_MODEL_V1, .cpg_deliver_fn = on_deliver, .cpg_confchg_fn = on_confchg};
    votequorum_callbacks_t vcb = {.votequorum_quorum_notify_fn = on_quorum};
    struct cpg_name name;
    int cfd = -1, vfd = -1;
    int have_cpg = 0, have_vq = 0;

    if (cpg_model_initialize(&c->cpg, CPG_MODEL_V1, (cpg_model_data_t *)&model, c) != CS_OK)
        goto fail;
    have_cpg = 1;
    if (votequorum_initialize(&c->vq, &vcb) != CS_OK)
        goto fail;
    have_vq = 1;
    votequorum_context_set(c->vq, c);
    memset(&name, 0, sizeof(name));
    name.length = (uint32_t)strlen(c->cfg->group);
    memcpy(name.value, c->cfg->group, name.length);
    if (cpg_local_get(c->cpg, &c->nodeid) != CS_OK || cpg_join(c->cpg, &name) != CS_OK ||
        cpg_fd_get(c->cpg, &cfd) != CS_OK || votequorum_fd_get(c->vq, &vfd) != CS_OK ||
        votequorum_trackstart(c->vq, 0, CS_TRACK_CHANGES | CS_TRACK_CURRENT) != CS_OK)
        goto fail;
    if (bridge_watch_add(&c->br->loop, &c->cpgw, cfd, EPOLLIN) < 0 ||
        bridge_watch_add(&c->br->loop, &c->vqw, vfd, EPOLLIN) < 0) {
        bridge_watch_del(&c->br->loop, &c->cpgw);
        goto fail;
    }
    c->connected = 1;
    c->warned_connect = 0;
    c->backoff = RECONNECT_MIN_S;
    vms_info(NULL, NULL, "cluster: joined CPG group %s as node %u (%s)", c->cfg->group, c->nodeid,
             c->cfg->node);
    return 0;
fail:
    if (!c->warned_connect) {
        vms_warn(NULL, NULL, "cluster: cannot reach corosync on this host (retrying)");
        c->warned_connect = 1;
    }
    if (have_cpg)
        cpg_finalize(c->cpg);
    if (have_vq)
        votequorum_finalize(c->vq);
    c->retry_at = c->now + c->backoff;
    c->backoff = c->backoff * 2 > RECONNECT_MAX_S ? RECONNECT_MAX_S : c->backoff * 2;
    return -1;
}

/* ---- API ---- */

static int reach_open(struct bridge_cluster *c);

int bridge_cluster_open(struct bridge *br)
{
    struct bridge_cluster *c;

    if (!br->cfg->cluster.enabled)
        return 0;
    c = calloc(1, sizeof(*c));
    if (!c)
        return -1;
    c->br = br;
    c->cfg = &br->cfg->cluster;
    if (cl_table_init(&c->t, br->cfg) < 0) {
        free(c);
        return -1;
    }
    c->local = calloc(c->t.n_vms ? c->t.n_vms : 1, sizeof(*c->local));
    if (!c->local) {
        cl_table_free(&c->t);
        free(c);
        return -1;
    }
    for (size_t i = 0; i < c->t.n_vms; i++) {
        c->local[i].lease_fd = c->local[i].send_fd = -1;
        c->local[i].reach_sent = -1;
        for (size_t k = 0; k < br->n_vms; k++)
            if (!strcmp(br->vms[k].cfg->name, c->t.vms[i].name))
                c->local[i].vm = &br->vms[k];
    }
    if (reach_open(c) < 0) {
        cl_table_free(&c->t);
        free(c->local);
        free(c);
        return -1;
    }
    bridge_watch_init(&c->cpgw, on_cpg_fd, c);
    bridge_watch_init(&c->vqw, on_vq_fd, c);
    c->backoff = RECONNECT_MIN_S;
    journal_load(c);
    br->cluster = c;
    vms_info(NULL, NULL, "cluster: node %s, %zu HA VM(s), shared storage %s", c->cfg->node,
             c->t.n_vms, c->cfg->shared_dir);
    return 0;
}

void bridge_cluster_close(struct bridge *br)
{
    struct bridge_cluster *c = br->cluster;

    if (!c)
        return;
    if (c->connected) {
        bridge_watch_del(&br->loop, &c->cpgw);
        bridge_watch_del(&br->loop, &c->vqw);
        cpg_finalize(c->cpg);
        votequorum_finalize(c->vq);
    }
    for (size_t i = 0; i < c->outq_len; i++)
        free(c->outq[i]);
    cl_reach_stop(c->reach);
    for (size_t i = 0; i < c->t.n_vms; i++) {
        if (c->local[i].lease_fd >= 0)
            close(c->local[i].lease_fd);
        if (c->local[i].send_fd >= 0)
            close(c->local[i].send_fd);
    }
    cl_table_free(&c->t);
    free(c->local);
    free(c);
    br->cluster = NULL;
}

static void on_ha_checkpoint(void *opaque, const struct bridge_backend_result *r);

/* A periodic HA checkpoint: an internal snapshot of RAM and disk on the shared disk, taken
 * when no guest request runs; the previous one is deleted once the new one exists. */
static void checkpoint_tick(struct bridge_cluster *c, int v)
{
    struct cl_local *l = &c->local[v];
    struct bridge_vm *vm = l->vm;

    if (!c->cfg->checkpoint_interval || !vm || l->ck_running || c->now < l->next_ck ||
        strcmp(c->t.vms[v].host, c->cfg->node) || c->t.vms[v].state != CL_VM_RUNNING)
        return;
    if (!vm->backend || !vm->ops->is_ready(vm->backend) || vm->busy || vm->queue.len ||
        bridge_managed_holds(vm) || bridge_managed_is_down(vm)) {
        l->next_ck = c->now + 1;
        return;
    }
    snprintf(l->ck_tag, sizeof(l->ck_tag), "ha-%lld", (long long)time(NULL));
    vm->busy = 1; /* guest requests wait for the snapshot, as for one of theirs */
    if (vm->ops->save(vm->backend, l->ck_tag, l->ck_tag, on_ha_checkpoint, l) < 0) {
        vm->busy = 0;
        l->next_ck = c->now + 1;
        return;
    }
    l->ck_running = 1;
}

static void on_ha_ck_deleted(void *opaque, const struct bridge_backend_result *r)
{
    struct cl_local *l = opaque;
    (void)r;
    l->ck_running = 0;
    l->vm->busy = 0;
    bridge_vm_kick(l->vm);
}

static void on_ha_checkpoint(void *opaque, const struct bridge_backend_result *r)
{
    struct cl_local *l = opaque;
    struct bridge_cluster *c = of(l->vm);

    if (!c)
        return;
    l->next_ck = c->now + c->cfg->checkpoint_interval;
    if (r->status == VMS_STATUS_OK) {
        char prev[CL_CK_MAX];
        bridge_cluster_checkpoint(l->vm, l->ck_tag);
        snprintf(prev, sizeof(prev), "%s", l->ck_prev);
        snprintf(l->ck_prev, sizeof(l->ck_prev), "%s", l->ck_tag);
        if (prev[0] && l->vm->ops->delete (l->vm->backend, prev, prev, on_ha_ck_deleted, l) == 0)
            return;
    } else {
        vms_warn(l->vm->cfg->name, NULL, "cluster: HA checkpoint failed: %s", r->message);
    }
    on_ha_ck_deleted(l, r);
}

void bridge_cluster_tick(struct bridge *br, double now)
{
    struct bridge_cluster *c = br->cluster;
    struct cl_move moves[BRIDGE_VMS_MAX];
    size_t n;

    if (!c)
        return;
    c->now = now;
    if (!c->unquorate_since)
        c->unquorate_since = now;
    if (!c->quorate && !c->fenced && now - c->unquorate_since >= c->cfg->bridge_grace) {
        /* started (or stayed) cut off from the majority: the others may restart our VMs */
        c->fenced = 1;
        fence_all(c, "no quorum since the bridge started");
    }
    if (!c->connected) {
        if (now >= c->retry_at)
            try_connect(c);
        return;
    }
    flush_outq(c);
    storage_tick(c);
    for (size_t i = 0; i < c->t.n_vms; i++) {
        if (c->local[i].starting && c->local[i].lease_retry_at && now >= c->local[i].lease_retry_at)
            start_claimed(c, (int)i);
        checkpoint_tick(c, (int)i);
    }
    if (now < c->next_plan || !c->quorate || !cl_table_synced(&c->t))
        return;
    c->next_plan = now + PLAN_EVERY_S;
    n = cl_table_plan(&c->t, mono(), c->cfg->bridge_grace, moves, BRIDGE_VMS_MAX);
    for (size_t i = 0; i < n; i++) {
        const struct cl_vm *v = &c->t.vms[moves[i].vm];
        char buf[256];
        if (strcmp(c->t.hosts[moves[i].host].name, c->cfg->node) ||
            c->local[moves[i].vm].claimed_gen == v->gen + 1)
            continue;
        /* ours to restart: claim it for this generation (once) */
        c->local[moves[i].vm].claimed_gen = v->gen + 1;
        vms_info(v->name, NULL, "cluster: its host %s is gone: claiming it (priority %u)",
                 v->host[0] ? v->host : "(none)", v->priority);
        if (cl_msg_claim(buf, sizeof(buf), v->name, c->cfg->node, v->gen) > 0)
            send_msg(c, buf);
    }
}

int bridge_cluster_start(struct bridge_vm *vm, bridge_lc_done_fn done, void *opaque)
{
    struct bridge_cluster *c = of(vm);
    struct cl_slots s;
    char msg[400], buf[256];
    int v, me;

    if (!c || (v = vm_index(c, vm)) < 0)
        return 0;
    msg[0] = '\0';
    cl_table_slots(&c->t, &s);
    me = cl_table_host(&c->t, c->cfg->node);
    if (!c->connected || !c->quorate)
        snprintf(msg, sizeof(msg), "cannot start HA VM %s: this host is not in a quorate cluster",
                 vm->cfg->name);
    else if (!cl_table_synced(&c->t))
        snprintf(msg, sizeof(msg), "cannot start %s now: the cluster table is syncing, try again",
                 vm->cfg->name);
    else if (c->t.vms[v].state != CL_VM_STOPPED)
        snprintf(msg, sizeof(msg), "%s is already %s on %s", vm->cfg->name,
                 cl_vm_state_name(c->t.vms[v].state),
                 c->t.vms[v].host[0] ? c->t.vms[v].host : "(no host yet)");
    else if (c->local[v].done || c->local[v].starting)
        snprintf(msg, sizeof(msg), "%s: a start is in progress", vm->cfg->name);
    else if (s.admitted + 1 > s.max_slot)
        snprintf(msg, sizeof(msg),
                 "admission: %u HA VM(s) admitted, maxSlot %u (%u slots in %zu host(s), "
                 "tolerating %u host failure(s); box %u vCPU, %" PRIu64 " MiB): power-on refused",
                 s.admitted, s.max_slot, s.total, c->t.n_hosts, c->t.tolerate, s.box_vcpus,
                 s.box_memory >> 20);
    else if (me >= 0) {
        unsigned used = 0;
        for (size_t i = 0; i < c->t.n_vms; i++)
            used += c->t.vms[i].state != CL_VM_STOPPED && !strcmp(c->t.vms[i].host, c->cfg->node);
        if (used >= s.slots[me])
            snprintf(msg, sizeof(msg), "this host's %u slot(s) are all used", s.slots[me]);
    }
    if (msg[0]) {
        json_object *o = json_object_new_object();
        vms_warn(vm->cfg->name, NULL, "cluster: %s", msg);
        json_object_object_add(o, "error", json_object_new_string(msg));
        if (done)
            done(opaque, 0, o);
        else
            json_object_put(o);
        return 1;
    }
    c->local[v].done = done;
    c->local[v].opaque = opaque;
    c->local[v].claimed_gen = c->t.vms[v].gen + 1;
    if (cl_msg_claim(buf, sizeof(buf), vm->cfg->name, c->cfg->node, c->t.vms[v].gen) > 0)
        send_msg(c, buf);
    return 1;
}

void bridge_cluster_forget(struct bridge *br, void *opaque)
{
    struct bridge_cluster *c = br->cluster;
    for (size_t i = 0; c && i < c->t.n_vms; i++)
        if (c->local[i].opaque == opaque)
            c->local[i].done = NULL;
}

void bridge_cluster_run_state(struct bridge_vm *vm, const char *state)
{
    struct bridge_cluster *c = of(vm);
    char buf[256];
    int v;

    if (!c || (v = vm_index(c, vm)) < 0 || !c->connected || !c->quorate)
        return;
    if (!strcmp(state, "running")) {
        c->local[v].next_ck = c->now + c->cfg->checkpoint_interval;
        c->local[v].ck_prev[0] = '\0';
        cl_msg_state(buf, sizeof(buf), vm->cfg->name, c->cfg->node, "running", c->t.vms[v].ck);
    } else if (!strcmp(state, "stopped") && !c->local[v].starting) {
        cl_msg_state(buf, sizeof(buf), vm->cfg->name, c->cfg->node, "stopped", NULL);
    } else {
        return;
    }
    send_msg(c, buf);
}

void bridge_cluster_checkpoint(struct bridge_vm *vm, const char *tag)
{
    struct bridge_cluster *c = of(vm);
    char buf[256];

    if (!c || vm_index(c, vm) < 0 || !c->connected)
        return;
    if (cl_msg_ck(buf, sizeof(buf), vm->cfg->name, c->cfg->node, tag) > 0)
        send_msg(c, buf);
}

const char *bridge_cluster_node(struct bridge *br)
{
    return br->cluster ? br->cluster->cfg->node : NULL;
}

int bridge_cluster_quorate(struct bridge *br)
{
    return br->cluster && br->cluster->connected && br->cluster->quorate;
}

int bridge_cluster_node_state(struct bridge *br, const char *name)
{
    struct bridge_cluster *c = br->cluster;
    int h;

    if (!c || !name[0] || (h = cl_table_host(&c->t, name)) < 0)
        return -1;
    return c->t.hosts[h].member;
}

int bridge_cluster_send(struct bridge *br, const char *msg)
{
    struct bridge_cluster *c = br->cluster;

    if (!c || !c->connected || !c->quorate)
        return -1;
    send_msg(c, msg);
    return 0;
}

json_object *bridge_cluster_status(struct bridge *br)
{
    struct bridge_cluster *c = br->cluster;
    json_object *o = json_object_new_object(), *hosts, *vms, *slots;
    struct cl_slots s;
    double now = mono();

    if (!c) {
        json_object_object_add(o, "enabled", json_object_new_boolean(0));
        return o;
    }
    cl_table_slots(&c->t, &s);
    json_object_object_add(o, "enabled", json_object_new_boolean(1));
    json_object_object_add(o, "node", json_object_new_string(c->cfg->node));
    json_object_object_add(o, "nodeid", json_object_new_int64(c->nodeid));
    json_object_object_add(o, "connected", json_object_new_boolean(c->connected));
    json_object_object_add(o, "quorate", json_object_new_boolean(c->quorate));
    json_object_object_add(o, "synced", json_object_new_boolean(cl_table_synced(&c->t)));
    json_object_object_add(o, "messages_sent", json_object_new_int64((int64_t)c->sent));
    json_object_object_add(o, "messages_delivered", json_object_new_int64((int64_t)c->delivered));
    hosts = json_object_new_array();
    for (size_t h = 0; h < c->t.n_hosts; h++) {
        const struct cl_host *x = &c->t.hosts[h];
        json_object *e = json_object_new_object();
        json_object_object_add(e, "name", json_object_new_string(x->name));
        json_object_object_add(e, "nodeid", json_object_new_int64(x->nodeid));
        json_object_object_add(e, "member", json_object_new_boolean(x->member));
        json_object_object_add(e, "vcpus", json_object_new_int64(x->vcpus));
        json_object_object_add(e, "memory", json_object_new_int64((int64_t)x->memory));
        json_object_object_add(e, "slots", json_object_new_int64(s.slots[h]));
        json_object_array_add(hosts, e);
    }
    json_object_object_add(o, "hosts", hosts);
    slots = json_object_new_object();
    json_object_object_add(slots, "box_vcpus", json_object_new_int64(s.box_vcpus));
    json_object_object_add(slots, "box_memory", json_object_new_int64((int64_t)s.box_memory));
    json_object_object_add(slots, "total", json_object_new_int64(s.total));
    json_object_object_add(slots, "max_slot", json_object_new_int64(s.max_slot));
    json_object_object_add(slots, "admitted", json_object_new_int64(s.admitted));
    json_object_object_add(slots, "failures_tolerated", json_object_new_int64(c->t.tolerate));
    json_object_object_add(o, "slots", slots);
    vms = json_object_new_array();
    for (size_t i = 0; i < c->t.n_vms; i++) {
        const struct cl_vm *v = &c->t.vms[i];
        json_object *e = json_object_new_object(), *alts = json_object_new_array();
        char held[128] = "";
        json_object_object_add(e, "vm", json_object_new_string(v->name));
        json_object_object_add(e, "host", json_object_new_string(v->host));
        json_object_object_add(e, "state", json_object_new_string(cl_vm_state_name(v->state)));
        json_object_object_add(
            e, "waiting",
            json_object_new_boolean(cl_table_waiting(&c->t, (int)i, now, c->cfg->bridge_grace)));
        json_object_object_add(e, "gen", json_object_new_int64((int64_t)v->gen));
        json_object_object_add(e, "checkpoint", json_object_new_string(v->ck));
        json_object_object_add(e, "priority", json_object_new_int64(v->priority));
        for (unsigned k = 0; k < v->n_hosts; k++)
            json_object_array_add(alts, json_object_new_string(v->hosts[k]));
        json_object_object_add(e, "hosts", alts);
        json_object_object_add(e, "from", json_object_new_string(v->from));
        {
            /* which hosts' probes reach its storage (known answers only) */
            json_object *reach = json_object_new_object();
            for (size_t h = 0; h < c->t.n_hosts; h++)
                if ((v->reach_known >> h) & 1 && c->t.hosts[h].name[0])
                    json_object_object_add(reach, c->t.hosts[h].name,
                                           json_object_new_boolean((v->reach_ok >> h) & 1));
            json_object_object_add(e, "reach", reach);
        }
        if (bridge_lease_probe(c->cfg->shared_dir, v->name, held, sizeof(held)) == 1)
            json_object_object_add(e, "lease", json_object_new_string(held));
        json_object_array_add(vms, e);
    }
    json_object_object_add(o, "vms", vms);
    return o;
}

/* ---- storage-fault moves ---- */

static int reach_open(struct bridge_cluster *c)
{
    const struct bridge_ioe_config *cfgs[BRIDGE_VMS_MAX];
    size_t n = 0;

    for (size_t i = 0; i < c->t.n_vms && n < BRIDGE_VMS_MAX; i++) {
        static const struct bridge_ioe_config none; /* no io_probe: never probed */
        cfgs[n++] = c->local[i].vm ? &c->local[i].vm->cfg->ioe : &none;
    }
    c->reach = cl_reach_start(cfgs, n, REACH_EVERY_S);
    return c->reach ? 0 : -1;
}

/* SHARED/migrate/VM.GEN[suffix]: the migration stream of one move (generation @gen). */
static void stream_path(struct bridge_cluster *c, int v, const char *suffix, char *out, size_t len)
{
    int n = snprintf(out, len, "%s/migrate/%s.%" PRIu64 "%s", c->cfg->shared_dir, c->t.vms[v].name,
                     c->t.vms[v].gen, suffix);
    if (n < 0 || (size_t)n >= len)
        out[0] = '\0'; /* too long: opening "" fails and says so */
}

/* Publish this host's changed probe answers (all of them after a membership change). */
static void reach_publish(struct bridge_cluster *c)
{
    int all = c->republish;

    if (!c->quorate)
        return;
    c->republish = 0;
    for (size_t i = 0; i < c->t.n_vms; i++) {
        struct cl_local *l = &c->local[i];
        char buf[256], detail[200];
        int ok = cl_reach_get(c->reach, i, detail, sizeof(detail));
        if (ok < 0 || (ok == l->reach_sent && !all))
            continue;
        if (ok != l->reach_sent)
            vms_info(c->t.vms[i].name, NULL, "cluster: its storage %s from here (%s)",
                     ok ? "answers" : "does not answer", detail);
        l->reach_sent = ok;
        if (cl_msg_reach(buf, sizeof(buf), c->t.vms[i].name, c->cfg->node, ok) > 0)
            send_msg(c, buf);
    }
}

static json_object *decision(const char *what, const char *target, const char *why)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "decision", json_object_new_string(what));
    json_object_object_add(o, "target", json_object_new_string(target));
    json_object_object_add(o, "why", json_object_new_string(why));
    return o;
}

/* Decide where paused VM @v goes, act on it, and say so. */
static json_object *storage_decide(struct bridge_cluster *c, int v)
{
    struct cl_local *l = &c->local[v];
    const struct cl_vm *x = &c->t.vms[v];
    char why[400], buf[300];
    const char *target;
    int h;
    enum cl_store r;

    if (!c->connected || !c->quorate || !cl_table_synced(&c->t))
        return decision("stay-paused", "",
                        "this host is not in a quorate, synced cluster: it stays paused here");
    if (strcmp(x->host, c->cfg->node) || x->state != CL_VM_RUNNING) {
        l->storage_pending = 0;
        return decision("stay-paused", "", "the cluster table does not place it here");
    }
    if (cl_reach_get(c->reach, (size_t)v, NULL, 0) == 1)
        return decision("stay-paused", "",
                        "this host reaches its storage again: the I/O-error policy resumes it "
                        "here");
    r = cl_table_storage_target(&c->t, v, c->cfg->node, mono(), c->cfg->bridge_grace, &h);
    if (r != CL_STORE_MOVE) {
        snprintf(why, sizeof(why), "%s",
                 r == CL_STORE_EVERYWHERE
                     ? "the store failed everywhere: no member of the cluster reaches it; it "
                       "stays paused here"
                 : r == CL_STORE_NO_PLACE
                     ? "this host's path to its storage failed; other hosts reach it, but none "
                       "of its ha_hosts has a free slot: it stays paused here"
                     : "this host's path to its storage failed, or the store did: no other "
                       "host has probed it yet; it stays paused here");
        return decision(r == CL_STORE_EVERYWHERE ? "stay-paused-store-failed" : "stay-paused", "",
                        why);
    }
    target = c->t.hosts[h].name;
    l->storage_pending = 0;
    l->claimed_gen = x->gen + 1;
    if (l->stateless) {
        snprintf(why, sizeof(why),
                 "this host's path to its storage failed; %s reaches it: a stateless VM is "
                 "stopped here and started there from its template",
                 target);
        cl_msg_claim_how(buf, sizeof(buf), x->name, target, x->gen, CL_HOW_COLD, NULL);
    } else {
        snprintf(why, sizeof(why),
                 "this host's path to its storage failed; %s reaches it: the stateful VM "
                 "migrates there still paused and resumes there",
                 target);
        cl_msg_claim_how(buf, sizeof(buf), x->name, target, x->gen, CL_HOW_MIGRATE, c->cfg->node);
    }
    vms_warn(x->name, NULL, "cluster: %s", why);
    send_msg(c, buf);
    return decision(l->stateless ? "restart-there" : "migrate", target, why);
}

json_object *bridge_cluster_storage_escalated(struct bridge_vm *vm, int stateless, const char *node)
{
    struct bridge_cluster *c = of(vm);
    json_object *d;
    int v;

    if (!c || (v = vm_index(c, vm)) < 0)
        return NULL;
    c->local[v].stateless = stateless;
    snprintf(c->local[v].failed_node, sizeof(c->local[v].failed_node), "%s", node ? node : "");
    c->local[v].storage_pending = !stateless; /* a stateless VM is killed here right after */
    c->local[v].escalated_at = mono();
    c->local[v].storage_next = c->now + STORAGE_RETRY_S;
    cl_reach_kick(c->reach);
    d = storage_decide(c, v);
    {
        json_object *w;
        if (json_object_object_get_ex(d, "decision", &w))
            snprintf(c->local[v].storage_last, sizeof(c->local[v].storage_last), "%s",
                     json_object_get_string(w));
    }
    return d;
}

void bridge_cluster_storage_resumed(struct bridge_vm *vm)
{
    struct bridge_cluster *c = of(vm);
    int v;

    if (c && (v = vm_index(c, vm)) >= 0) {
        c->local[v].storage_pending = 0;
        c->local[v].storage_last[0] = '\0';
    }
}

int bridge_cluster_storage_moving(struct bridge_vm *vm)
{
    struct bridge_cluster *c = of(vm);
    int v;

    if (!c || (v = vm_index(c, vm)) < 0)
        return 0;
    /* from our migrate claim until the QEMU here quits */
    return c->local[v].sending ||
           (!strcmp(c->t.vms[v].from, c->cfg->node) && c->t.vms[v].state == CL_VM_STARTING);
}

static void send_failed(struct bridge_cluster *c, int v, const char *what)
{
    struct cl_local *l = &c->local[v];
    char buf[256], text[400];

    snprintf(text, sizeof(text),
             "sending the paused VM's state to %s failed (%s): it stays paused here",
             c->t.vms[v].host, what);
    vms_err(c->t.vms[v].name, NULL, "cluster: %s", text);
    if (l->send_fd >= 0)
        close(l->send_fd);
    l->send_fd = -1;
    unlink(l->send_tmp);
    l->sending = 0;
    if (l->vm->busy)
        l->vm->busy = 0;
    if (l->detached) {
        /* its disk is gone from this QEMU: it must never run here again. Without a stream
         * the claimant restarts it (from its checkpoint, else cold) */
        l->detached = 0;
        vms_err(c->t.vms[v].name, NULL, "cluster: its disk was detached here: stopping it");
        bridge_ioe_publish(c->t.vms[v].name, "storage-move-failed", text,
                           decision("restart-there", c->t.vms[v].host, text));
        l->vm->ops->kill(l->vm->backend, 1);
        return;
    }
    /* the VM is still here: say so, the claimant gives up (its start checks the table) */
    if (cl_msg_state(buf, sizeof(buf), c->t.vms[v].name, c->cfg->node, "running", c->t.vms[v].ck) >
        0)
        send_msg(c, buf);
    bridge_ioe_publish(c->t.vms[v].name, "storage-move-failed", text,
                       decision("stay-paused", "", text));
    bridge_vm_kick(l->vm);
}

static void on_state_sent(void *opaque, const struct bridge_backend_result *r)
{
    struct cl_local *l = opaque;
    struct bridge_cluster *c = of(l->vm);
    char final[BRIDGE_PATH_MAX + 64], text[400];
    struct stat st;
    int v;

    if (!c)
        return;
    v = (int)(l - c->local);
    if (r->status != VMS_STATUS_OK) {
        send_failed(c, v, r->message);
        return;
    }
    /* durable and complete before the claimant may load it (it loads after our QEMU quits) */
    if (fdatasync(l->send_fd) < 0 || fstat(l->send_fd, &st) < 0) {
        send_failed(c, v, strerror(errno));
        return;
    }
    close(l->send_fd);
    l->send_fd = -1;
    stream_path(c, v, ".state", final, sizeof(final));
    if (rename(l->send_tmp, final) < 0) {
        send_failed(c, v, strerror(errno));
        return;
    }
    l->sending = 0;
    l->detached = 0;
    l->vm->busy = 0;
    snprintf(text, sizeof(text),
             "the paused VM's state (%lld bytes) is on the shared storage for %s after %.0f ms; "
             "its QEMU here quits and frees the lease",
             (long long)st.st_size, c->t.vms[v].host, (mono() - l->send_t0) * 1000);
    vms_info(l->vm->cfg->name, NULL, "cluster: %s", text);
    {
        json_object *d = decision("migrate", c->t.vms[v].host, text);
        json_object_object_add(d, "bytes", json_object_new_int64((int64_t)st.st_size));
        json_object_object_add(d, "send_ms", json_object_new_double((mono() - l->send_t0) * 1000));
        bridge_ioe_publish(l->vm->cfg->name, "storage-moved", text, d);
    }
    l->vm->ops->kill(l->vm->backend, 0); /* quit: the lease goes with the process */
}

/*
 * The source side of a migrate claim: write the paused VM's migration stream into
 * SHARED/migrate (a temporary name, renamed when complete and durable), then quit QEMU,
 * which frees the lease for the claimant. The stream carries the guest's failed requests,
 * which the new QEMU retries when it runs.
 */
static void storage_send(struct bridge_cluster *c, int v)
{
    struct cl_local *l = &c->local[v];
    struct bridge_vm *vm = l->vm;
    char dir[BRIDGE_PATH_MAX + 16];

    l->storage_pending = 0;
    l->send_t0 = mono();
    stream_path(c, v, ".tmp", l->send_tmp, sizeof(l->send_tmp));
    snprintf(dir, sizeof(dir), "%s/migrate", c->cfg->shared_dir);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        send_failed(c, v, strerror(errno));
        return;
    }
    l->send_fd = open(l->send_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (l->send_fd < 0) {
        send_failed(c, v, strerror(errno));
        return;
    }
    l->sending = 1;
    if (!vm->backend || vm->busy) {
        send_failed(c, v, vm->busy ? "a snapshot runs" : "QMP not ready");
        return;
    }
    vm->busy = 1; /* guest requests wait (and then find the VM gone from this host) */
    if (l->failed_node[0] && vm->ops->detach_node) {
        /* QEMU flushes every disk to complete a migration: the one this host cannot reach
         * goes first (its failed requests stay in the device's state) */
        if (vm->ops->detach_node(vm->backend, l->failed_node, on_node_detached, l) < 0)
            send_failed(c, v, "QMP not ready");
        return;
    }
    send_state(c, v);
}

static void on_node_detached(void *opaque, const struct bridge_backend_result *r)
{
    struct cl_local *l = opaque;
    struct bridge_cluster *c = of(l->vm);
    char what[400];

    if (!c)
        return;
    if (r->status != VMS_STATUS_OK) {
        snprintf(what, sizeof(what), "detaching disk node %s: %s", l->failed_node, r->message);
        send_failed(c, (int)(l - c->local), what);
        return;
    }
    l->detached = 1;
    vms_info(l->vm->cfg->name, NULL, "cluster: disk node %s detached from the QEMU here",
             l->failed_node);
    send_state(c, (int)(l - c->local));
}

static void send_state(struct bridge_cluster *c, int v)
{
    struct cl_local *l = &c->local[v];
    struct bridge_vm *vm = l->vm;

    if (vm->ops->checkpoint(vm->backend, l->send_fd, 0, 0, on_state_sent, l) < 0) {
        send_failed(c, v, "QMP not ready");
        return;
    }
    vms_info(vm->cfg->name, NULL, "cluster: sending the paused VM's state to %s", c->t.vms[v].host);
}

/*
 * The claimant of a migrate claim, with the lease (the source's QEMU quit): start from the
 * stream when it is there and complete. 1 when started; 0 when there is none (the source died
 * before finishing it): the caller restarts it as after a host failure.
 */
static int start_incoming(struct bridge_cluster *c, int v)
{
    struct cl_local *l = &c->local[v];
    char path[BRIDGE_PATH_MAX + 64];

    stream_path(c, v, ".state", path, sizeof(path));
    if (access(path, R_OK) < 0) {
        vms_warn(l->vm->cfg->name, NULL,
                 "cluster: no migration stream %s (%s): its source did not finish; restarting "
                 "it instead",
                 path, strerror(errno));
        l->how = CL_HOW_RESTART;
        return 0;
    }
    vms_info(l->vm->cfg->name, NULL, "cluster: lease taken; loading the migration stream %s", path);
    bridge_managed_start_ha_incoming(l->vm, l->lease_fd, path, on_started, l);
    return 1;
}

static void storage_tick(struct bridge_cluster *c)
{
    reach_publish(c);
    for (size_t i = 0; i < c->t.n_vms; i++) {
        struct cl_local *l = &c->local[i];
        json_object *d, *w;
        const char *what;
        if (!l->storage_pending || c->now < l->storage_next || !l->vm)
            continue;
        l->storage_next = c->now + STORAGE_RETRY_S;
        d = storage_decide(c, (int)i);
        what = json_object_object_get_ex(d, "decision", &w) ? json_object_get_string(w) : "";
        if (strcmp(what, l->storage_last)) {
            json_object *t;
            snprintf(l->storage_last, sizeof(l->storage_last), "%s", what);
            json_object_object_get_ex(d, "why", &t);
            bridge_ioe_publish(l->vm->cfg->name, "storage-decision", json_object_get_string(t),
                               json_object_get(d));
        }
        json_object_put(d);
    }
}
