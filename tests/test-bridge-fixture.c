/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * test-bridge-fixture.c — see test-bridge-fixture.h.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test-bridge-fixture.h"

/* ---- a fake backend: records the callback, the test decides the outcome ---- */
struct bridge_backend fake;

static struct bridge_backend *fake_open(const struct bridge_vm_config *vmcfg, struct bridge_loop *l,
                                        unsigned a, unsigned b,
                                        const struct bridge_backend_hooks *h, void *o)
{
    (void)vmcfg;
    (void)l;
    (void)a;
    (void)b;
    (void)h;
    (void)o;
    return &fake;
}
static void fake_close(struct bridge_backend *b)
{
    (void)b;
}
static int fake_is_ready(struct bridge_backend *b)
{
    return b->ready;
}
static void fake_tick(struct bridge_backend *b, double now)
{
    (void)b;
    (void)now;
}
static int fake_record(struct bridge_backend *b, enum vms_op op, const char *tag,
                       bridge_backend_done_fn done, void *opaque)
{
    b->last_paused = b->paused;
    b->done = done;
    b->opaque = opaque;
    b->last_op = op;
    snprintf(b->last_tag, sizeof(b->last_tag), "%s", tag ? tag : "");
    b->calls++;
    return 0;
}
static int fake_save(struct bridge_backend *b, const char *tag, const char *job,
                     bridge_backend_done_fn d, void *o)
{
    (void)job;
    return fake_record(b, VMS_OP_SAVE, tag, d, o);
}
static int fake_restore(struct bridge_backend *b, const char *tag, const char *job,
                        bridge_backend_done_fn d, void *o)
{
    (void)job;
    return fake_record(b, VMS_OP_RESTORE, tag, d, o);
}
static int fake_delete(struct bridge_backend *b, const char *tag, const char *job,
                       bridge_backend_done_fn d, void *o)
{
    (void)job;
    return fake_record(b, VMS_OP_DELETE, tag, d, o);
}
static int fake_recover(struct bridge_backend *b, enum vms_op op, const char *tag, const char *job,
                        bridge_backend_done_fn d, void *o)
{
    (void)job;
    return fake_record(b, op, tag, d, o);
}
static int fake_has(struct bridge_backend *b, const char *tag, bridge_backend_done_fn d, void *o)
{
    return fake_record(b, VMS_OP_UNKNOWN, tag, d, o);
}
static int fake_mem(struct bridge_backend *b, bridge_backend_done_fn d, void *o)
{
    return fake_record(b, VMS_OP_HOSTINFO, NULL, d, o);
}
static int fake_balloon(struct bridge_backend *b, uint64_t bytes, bridge_backend_done_fn d, void *o)
{
    (void)bytes;
    return fake_record(b, VMS_OP_SET_MEMORY, NULL, d, o);
}
/* restore_paused: a restore that leaves the guest paused (QMP's stop + snapshot-load) */
static int fake_restore_paused(struct bridge_backend *b, const char *tag, const char *job,
                               bridge_backend_done_fn d, void *o)
{
    (void)job;
    b->paused_loads++;
    b->paused = 1;
    return fake_record(b, VMS_OP_RESTORE, tag, d, o);
}
static int fake_cont(struct bridge_backend *b, bridge_backend_done_fn d, void *o)
{
    b->paused = 0;
    return fake_record(b, VMS_OP_UNKNOWN, "cont", d, o);
}
static int fake_list(struct bridge_backend *b, bridge_backend_done_fn d, void *o)
{
    b->list_done = d;
    b->list_opaque = o;
    b->lists++;
    return 0;
}

int fake_list_finish(const char *const *names, unsigned n)
{
    struct bridge_backend_result r = {
        .status = VMS_STATUS_OK, .snapshots = names, .n_snapshots = n};
    bridge_backend_done_fn done = fake.list_done;

    if (!done)
        return 0;
    fake.list_done = NULL;
    done(fake.list_opaque, &r);
    return 1;
}

static const struct bridge_backend_ops fake_ops = {
    .name = "fake",
    .open = fake_open,
    .close = fake_close,
    .is_ready = fake_is_ready,
    .tick = fake_tick,
    .save = fake_save,
    .restore = fake_restore,
    .delete = fake_delete,
    .recover = fake_recover,
    .has_snapshot = fake_has,
    .query_memory = fake_mem,
    .set_balloon = fake_balloon,
    .list_snapshots = fake_list,
    .restore_paused = fake_restore_paused,
    .cont = fake_cont,
};

static void fake_complete(const struct bridge_backend_result *r)
{
    bridge_backend_done_fn done = fake.done;
    cr_assert_not_null(done, "no backend operation pending");
    fake.done = NULL;
    done(fake.opaque, r);
}

void fake_finish(enum vms_status st)
{
    /* query_memory's extras too (the bridge reads them for hostinfo only) */
    struct bridge_backend_result r = {
        .status = st, .mem_bytes = 128u << 20, .base_bytes = 128u << 20, .vcpus = 2};
    snprintf(r.hypervisor_version, sizeof(r.hypervisor_version), "QEMU 7.2.0");
    fake_complete(&r);
}

void fake_finish_never_started(void)
{
    struct bridge_backend_result r = {.status = VMS_STATUS_ERR_ABORTED, .never_started = 1};
    fake_complete(&r);
}

/* ---- fixture ---- */
char dir[256];
struct bridge_config cfg;
struct bridge br;
struct bridge_vm vm1, vm2;
int peer1 = -1, peer2 = -1;
struct vms_channel in1, in2;

struct vms_msg got[MAXMSG];
int n_got;

static void collect(void *opaque, struct vms_channel *c, struct vms_msg *m)
{
    (void)opaque;
    (void)c;
    cr_assert_lt(n_got, MAXMSG);
    got[n_got] = *m;          /* take ownership of heap members */
    vms_msg_init(m, m->type); /* so the channel's clear frees nothing */
    n_got++;
}

void clear_got(void)
{
    for (int i = 0; i < n_got; i++)
        vms_msg_clear(&got[i]);
    n_got = 0;
}

/* Read everything the bridge sent on @peer's port B into got[]. */
int drain(struct vms_channel *in)
{
    clear_got();
    vms_channel_read(in, 1u << 20, collect, NULL);
    return n_got;
}

void attach_peer(struct bridge_vm *vm, int *peer, struct vms_channel *in)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    vms_channel_attach(&vm->b.ch, sv[0]);
    *peer = sv[1];
    cr_assert_eq(vms_channel_init(in, "peer", NULL, 0), 0);
    vms_channel_attach(in, sv[1]);
}

void bfx_setup(const char *conf_text)
{
    char err[512], dbpath[300], hash[crypto_pwhash_STRBYTES];

    vms_log_init("test", LOG_ERR);
    request_uid = -1;
    snprintf(dir, sizeof(dir), "/tmp/test-bridge-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_eq(bridge_config_load_string(&cfg, "t.conf", conf_text, err, sizeof(err)), 0, "%s",
                 err);
    memset(&br, 0, sizeof(br));
    br.cfg = &cfg;
    br.backend = &fake_ops;
    br.loop.epfd = -1;
    snprintf(dbpath, sizeof(dbpath), "%s/bridge.db", dir);
    cr_assert_eq(bridge_db_open(&br.db, dbpath, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(bridge_secret_hash("s3cret", BRIDGE_PWHASH_OPS_TEST, BRIDGE_PWHASH_MEM_TEST, hash),
                 0);
    cr_assert_eq(bridge_db_principal_add(&br.db, "app", hash), 0);
    cr_assert_eq(bridge_db_principal_add(&br.db, "saver", hash), 0);
    cr_assert_eq(bridge_db_right_grant(&br.db, "app", "vm1", "all"), 0);
    cr_assert_eq(bridge_db_right_grant(&br.db, "app", "vm2", "all"), 0);
    cr_assert_eq(bridge_db_right_grant(&br.db, "saver", "vm1", "save"), 0);
    memset(&fake, 0, sizeof(fake));
    fake.ready = 1;
    cr_assert_eq(bridge_vm_init(&vm1, &br, &cfg.vms[0]), 0);
    cr_assert_eq(bridge_vm_init(&vm2, &br, &cfg.vms[1]), 0);
    cr_assert_eq(bridge_vm_start(&vm1), 0);
    cr_assert_eq(bridge_vm_start(&vm2), 0);
    attach_peer(&vm1, &peer1, &in1);
    attach_peer(&vm2, &peer2, &in2);
}

void bfx_teardown(void)
{
    char cmd[300];
    clear_got();
    bridge_vm_free(&vm1);
    bridge_vm_free(&vm2);
    vms_channel_free(&in1);
    vms_channel_free(&in2);
    bridge_db_close(&br.db);
    bridge_config_free(&cfg);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

int id_counter;

int64_t request_uid = -1;

/* Send a Request into @vm; returns its id in @id. */
void request(struct bridge_vm *vm, char id[VMS_REQUEST_ID_LEN + 1], const char *op,
             const char *principal, const char *secret, const char *state, const char *data)
{
    struct vms_msg m;

    if (!id[0])
        snprintf(id, VMS_REQUEST_ID_LEN + 1, "%032x", ++id_counter);
    vms_msg_init(&m, VMS_MSG_REQUEST);
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, id);
    vms_msg_set_str(&m, VMS_F_OP, op);
    vms_msg_set_str(&m, VMS_F_APP_ID, "org.example.App");
    vms_msg_set_str(&m, VMS_F_PRINCIPAL, principal);
    vms_msg_set_str(&m, VMS_F_SECRET, secret);
    if (state)
        vms_msg_set_str(&m, VMS_F_STATE_ID, state);
    if (data)
        vms_msg_set_app_data(&m, data, strlen(data));
    if (!strcmp(op, "set-memory"))
        vms_msg_set_u64(&m, VMS_F_BYTES, 128u << 20);
    if (request_uid >= 0)
        vms_msg_set_u64(&m, VMS_F_UID, (uint64_t)request_uid);
    bridge_guest_input(vm, &vm->a.ch, &m);
    vms_msg_clear(&m);
}

const struct vms_msg *find(enum vms_msg_type t, const char *id)
{
    for (int i = 0; i < n_got; i++)
        if (got[i].type == t && (!id || !strcmp(got[i].request_id, id)))
            return &got[i];
    return NULL;
}

const struct vms_msg *answer_of(const char *id)
{
    const struct vms_msg *r = find(VMS_MSG_REPLY, id);
    return r ? r : find(VMS_MSG_EVENT, id);
}

void send_ack(struct bridge_vm *vm, const char *request_id, uint64_t epoch, uint64_t seq)
{
    struct vms_msg a;

    vms_msg_init(&a, VMS_MSG_ACK);
    vms_msg_set_str(&a, VMS_F_REQUEST_ID, request_id);
    vms_msg_set_u64(&a, VMS_F_EPOCH, epoch);
    vms_msg_set_u64(&a, VMS_F_SEQ, seq);
    bridge_guest_input(vm, &vm->a.ch, &a);
    vms_msg_clear(&a);
}

void ack(struct bridge_vm *vm, const struct vms_msg *ev)
{
    send_ack(vm, ev->request_id, ev->epoch, ev->seq);
}

void send_hello(struct bridge_vm *vm, uint64_t nonce, uint32_t caps)
{
    struct vms_msg h;
    vms_msg_init(&h, VMS_MSG_HELLO);
    vms_msg_set_u64(&h, VMS_F_VERSION, 1);
    vms_msg_set_u64(&h, VMS_F_NONCE, nonce);
    vms_msg_set_u64(&h, VMS_F_CAPS, caps);
    bridge_guest_input(vm, &vm->a.ch, &h);
    vms_msg_clear(&h);
}

int count_got(enum vms_msg_type t)
{
    int n = 0;
    for (int i = 0; i < n_got; i++)
        n += got[i].type == t;
    return n;
}

void hello_caps(struct bridge_vm *vm, uint32_t caps)
{
    send_hello(vm, 42, caps);
}
