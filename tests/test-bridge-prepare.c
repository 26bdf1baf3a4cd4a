/*
 * Unit tests of issue 8 in the bridge (host-bridge/prepare.c): Prepare/Ready
 * before a save (go, inhibited, timeout, old helpers without the "prepare"
 * capability, stray Ready), and the host time on Welcome, Timeline and QMP
 * RESUME (reasons, clock_sync = no). Same fixture as test-bridge-core.c: a
 * real SQLite file, a fake backend, port B a socketpair decoded by the test.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "bridge.h"
#include "queue.h"
#include "vms-log.h"

/* ---- a fake backend: records the callback, the test decides the outcome ---- */
struct bridge_backend {
    bridge_backend_done_fn done;
    void *opaque;
    enum vms_op last_op;
    char last_tag[VMS_STR_MAX + 1];
    int calls, ready;
};
static struct bridge_backend fake;

static struct bridge_backend *fake_open(const struct bridge_vm_config *cfg, struct bridge_loop *l,
                                        unsigned a, unsigned b,
                                        const struct bridge_backend_hooks *h, void *o)
{
    (void)cfg;
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
};

static void fake_finish(enum vms_status st)
{
    struct bridge_backend_result r = {.status = st, .mem_bytes = 128u << 20};
    bridge_backend_done_fn done = fake.done;
    cr_assert_not_null(done, "no backend operation pending");
    fake.done = NULL;
    done(fake.opaque, &r);
}

/* ---- fixture ---- */
static char dir[256];
static struct bridge_config cfg;
static struct bridge br;
static struct bridge_vm vm1, vm2;
static int peer1 = -1, peer2 = -1;
static struct vms_channel in1, in2;

#define MAXMSG 64
static struct vms_msg got[MAXMSG];
static int n_got;

static void collect(void *opaque, struct vms_channel *c, struct vms_msg *m)
{
    (void)opaque;
    (void)c;
    cr_assert_lt(n_got, MAXMSG);
    got[n_got] = *m;          /* take ownership of heap members */
    vms_msg_init(m, m->type); /* so the channel's clear frees nothing */
    n_got++;
}

static void clear_got(void)
{
    for (int i = 0; i < n_got; i++)
        vms_msg_clear(&got[i]);
    n_got = 0;
}

/* Read everything the bridge sent on @peer's port B into got[]. */
static int drain(struct vms_channel *in)
{
    clear_got();
    vms_channel_read(in, 1u << 20, collect, NULL);
    return n_got;
}

static const char *conf_text =
    "[vm vm1]\nport_a=/nonexistent/a\nport_b=/nonexistent/b\nqmp=/nonexistent/q\nnodes=disk0\n"
    "max_states=3\nmax_pending=4\nmax_app_data_bytes=100\nauth_fail_max=3\nauth_fail_window=60\n"
    "mem_max=1G\nmem_min=64M\nprepare_timeout_ms=3000\n"
    "[vm vm2]\nport_a=/nonexistent/a2\nport_b=/nonexistent/b2\nqmp=/nonexistent/q2\nnodes=disk0\n"
    "clock_sync=no\n";

static void attach_peer(struct bridge_vm *vm, int *peer, struct vms_channel *in)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    vms_channel_attach(&vm->b.ch, sv[0]);
    *peer = sv[1];
    cr_assert_eq(vms_channel_init(in, "peer", NULL, 0), 0);
    vms_channel_attach(in, sv[1]);
}

static void setup(void)
{
    char err[512], dbpath[300], hash[crypto_pwhash_STRBYTES];

    vms_log_init("test", LOG_ERR);
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

static void teardown(void)
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

static int id_counter;

/* Send a Request into @vm; returns its id in @id. */
static void request(struct bridge_vm *vm, char id[VMS_REQUEST_ID_LEN + 1], const char *op,
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
    bridge_guest_input(vm, &vm->a.ch, &m);
    vms_msg_clear(&m);
}

static const struct vms_msg *find(enum vms_msg_type t, const char *id)
{
    for (int i = 0; i < n_got; i++)
        if (got[i].type == t && (!id || !strcmp(got[i].request_id, id)))
            return &got[i];
    return NULL;
}

static void hello_caps(struct bridge_vm *vm, uint32_t caps)
{
    struct vms_msg h;
    vms_msg_init(&h, VMS_MSG_HELLO);
    vms_msg_set_u64(&h, VMS_F_VERSION, 1);
    vms_msg_set_u64(&h, VMS_F_NONCE, 42);
    vms_msg_set_u64(&h, VMS_F_CAPS, caps);
    bridge_guest_input(vm, &vm->a.ch, &h);
    vms_msg_clear(&h);
}

#define CAPS_NEW (VMS_CAP_ALL | VMS_CAP_CLOCK | VMS_CAP_PREPARE)

TestSuite(prepare, .init = setup, .fini = teardown);

static uint64_t now_ns(void)
{
    return bridge_clock_realtime_ns();
}

static void ready(struct bridge_vm *vm, const char *id, uint32_t status, const char *msg)
{
    struct vms_msg m;
    vms_msg_init(&m, VMS_MSG_READY);
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, id);
    vms_msg_set_u64(&m, VMS_F_STATUS, status);
    if (msg)
        vms_msg_set_str(&m, VMS_F_MESSAGE, msg);
    bridge_guest_input(vm, &vm->a.ch, &m);
    vms_msg_clear(&m);
}

Test(prepare, save_waits_for_ready_then_runs)
{
    char id[VMS_REQUEST_ID_LEN + 1] = "";
    const struct vms_msg *p, *ev;

    hello_caps(&vm1, CAPS_NEW);
    request(&vm1, id, "save", "app", "s3cret", NULL, "d");
    cr_assert_eq(fake.calls, 0, "the snapshot must wait for the guest's Ready");
    drain(&in1);
    p = find(VMS_MSG_PREPARE, id);
    cr_assert_not_null(p, "Prepare sent");
    cr_assert_eq(p->timeout_ms, 3000);
    ready(&vm1, id, VMS_STATUS_OK, "pre-save hooks: 1 ok");
    cr_assert_eq(fake.calls, 1);
    cr_assert_eq(fake.last_op, VMS_OP_SAVE);
    fake_finish(VMS_STATUS_OK);
    drain(&in1);
    ev = find(VMS_MSG_EVENT, id);
    cr_assert_not_null(ev);
    cr_assert_eq(ev->status, VMS_STATUS_OK);
}

Test(prepare, inhibited_save_fails_with_the_reason)
{
    char id[VMS_REQUEST_ID_LEN + 1] = "", id2[VMS_REQUEST_ID_LEN + 1] = "";
    const struct vms_msg *ev;

    hello_caps(&vm1, CAPS_NEW);
    request(&vm1, id, "save", "app", "s3cret", NULL, NULL);
    ready(&vm1, id, VMS_STATUS_ERR_INHIBITED, "unsaved work (uid 1000)");
    cr_assert_eq(fake.calls, 0, "no snapshot for an inhibited save");
    drain(&in1);
    ev = find(VMS_MSG_EVENT, id);
    cr_assert_not_null(ev);
    cr_assert_eq(ev->status, VMS_STATUS_ERR_INHIBITED);
    cr_assert(strstr(ev->message, "unsaved work (uid 1000)") != NULL, "%s", ev->message);
    cr_assert_eq(bridge_db_state_count(&br.db, "vm1"), 0);
    /* the queue goes on */
    request(&vm1, id2, "save", "app", "s3cret", NULL, NULL);
    drain(&in1);
    cr_assert_not_null(find(VMS_MSG_PREPARE, id2));
}

Test(prepare, timeout_saves_anyway)
{
    char id[VMS_REQUEST_ID_LEN + 1] = "";

    hello_caps(&vm1, CAPS_NEW);
    request(&vm1, id, "save", "app", "s3cret", NULL, NULL);
    bridge_prepare_tick(&vm1, vm1.now + 2.9);
    cr_assert_eq(fake.calls, 0, "still waiting before prepare_timeout_ms");
    bridge_prepare_tick(&vm1, vm1.now + 3.1);
    cr_assert_eq(fake.calls, 1, "saved after prepare_timeout_ms without a Ready");
    cr_assert_eq(fake.last_op, VMS_OP_SAVE);
    ready(&vm1, id, VMS_STATUS_ERR_INHIBITED, "too late"); /* ignored */
    fake_finish(VMS_STATUS_OK);
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_EVENT, id)->status, VMS_STATUS_OK);
}

Test(prepare, stray_ready_is_ignored)
{
    char id[VMS_REQUEST_ID_LEN + 1] = "";

    hello_caps(&vm1, CAPS_NEW);
    request(&vm1, id, "save", "app", "s3cret", NULL, NULL);
    ready(&vm1, "0123456789abcdef0123456789abcdef", VMS_STATUS_OK, NULL);
    cr_assert_eq(fake.calls, 0, "a Ready for another request must not start the save");
    ready(&vm1, id, VMS_STATUS_OK, NULL);
    cr_assert_eq(fake.calls, 1);
}

Test(prepare, old_helper_gets_no_prepare)
{
    char id[VMS_REQUEST_ID_LEN + 1] = "";

    hello_caps(&vm1, VMS_CAP_ALL); /* no "prepare": do not make it wait for a timeout */
    request(&vm1, id, "save", "app", "s3cret", NULL, NULL);
    cr_assert_eq(fake.calls, 1);
    drain(&in1);
    cr_assert_null(find(VMS_MSG_PREPARE, NULL));
    cr_assert_null(find(VMS_MSG_CLOCK, NULL));
    cr_assert(!vms_msg_has(find(VMS_MSG_WELCOME, NULL), VMS_F_TIME_NS));
}

Test(prepare, welcome_carries_host_time)
{
    const struct vms_msg *w;
    uint64_t before = now_ns(), after;

    hello_caps(&vm1, CAPS_NEW);
    after = now_ns();
    drain(&in1);
    w = find(VMS_MSG_WELCOME, NULL);
    cr_assert_not_null(w);
    cr_assert(vms_msg_has(w, VMS_F_TIME_NS));
    cr_assert(w->time_ns >= before && w->time_ns <= after);
    cr_assert(w->caps & VMS_CAP_CLOCK);
    cr_assert(w->caps & VMS_CAP_PREPARE);
}

Test(prepare, clock_reasons_on_resume)
{
    const struct vms_msg *c;
    char id[VMS_REQUEST_ID_LEN + 1] = "";

    hello_caps(&vm1, CAPS_NEW);
    drain(&in1);
    bridge_clock_on_event(&vm1, "STOP");
    bridge_clock_on_event(&vm1, "RESUME");
    drain(&in1);
    c = find(VMS_MSG_CLOCK, NULL);
    cr_assert_not_null(c);
    cr_assert_str_eq(c->reason, "resume");
    cr_assert(c->time_ns > 0);
    bridge_clock_on_event(&vm1, "BLOCK_IO_ERROR");
    bridge_clock_on_event(&vm1, "STOP");
    bridge_clock_on_event(&vm1, "RESUME");
    drain(&in1);
    cr_assert_str_eq(find(VMS_MSG_CLOCK, NULL)->reason, "io-error");
    /* the pause of our own snapshot */
    request(&vm1, id, "save", "app", "s3cret", NULL, NULL);
    ready(&vm1, id, VMS_STATUS_OK, NULL);
    bridge_clock_on_event(&vm1, "RESUME");
    drain(&in1);
    cr_assert_str_eq(find(VMS_MSG_CLOCK, NULL)->reason, "save");
    fake_finish(VMS_STATUS_OK);
}

Test(prepare, restore_time_goes_with_the_timeline)
{
    char id[VMS_REQUEST_ID_LEN + 1] = "", rid[VMS_REQUEST_ID_LEN + 1] = "", state[VMS_STR_MAX + 1];
    const struct vms_msg *t;

    hello_caps(&vm1, CAPS_NEW);
    request(&vm1, id, "save", "app", "s3cret", NULL, NULL);
    ready(&vm1, id, VMS_STATUS_OK, NULL);
    fake_finish(VMS_STATUS_OK);
    drain(&in1);
    snprintf(state, sizeof(state), "%s", find(VMS_MSG_EVENT, id)->state_id);
    request(&vm1, rid, "restore", "app", "s3cret", state, NULL);
    bridge_clock_on_event(&vm1, "STOP");
    bridge_clock_on_event(&vm1, "RESUME"); /* snapshot-load resumes before the job ends */
    drain(&in1);
    cr_assert_null(find(VMS_MSG_CLOCK, NULL), "no Clock during a restore");
    fake_finish(VMS_STATUS_OK);
    drain(&in1);
    t = find(VMS_MSG_TIMELINE, NULL);
    cr_assert_not_null(t);
    cr_assert(vms_msg_has(t, VMS_F_TIME_NS));
    cr_assert_str_eq(t->request_id, rid);
}

Test(prepare, clock_sync_no_sends_no_time)
{
    hello_caps(&vm2, CAPS_NEW); /* vm2 has clock_sync=no */
    bridge_clock_on_event(&vm2, "RESUME");
    drain(&in2);
    cr_assert(!vms_msg_has(find(VMS_MSG_WELCOME, NULL), VMS_F_TIME_NS));
    cr_assert_null(find(VMS_MSG_CLOCK, NULL));
}

Test(prepare, config_keys)
{
    struct bridge_config c;
    char err[512];

    cr_assert_eq(vm1.cfg->prepare_timeout_ms, 3000);
    cr_assert_eq(vm1.cfg->clock_sync, 1);
    cr_assert_eq(vm2.cfg->clock_sync, 0);
    cr_assert_eq(bridge_config_load_string(&c, "t.conf",
                                           "[vm x]\nport_a=/a\nport_b=/b\nqmp=/q\nnodes=d\n"
                                           "clock_sync=maybe\n",
                                           err, sizeof(err)),
                 -1);
    cr_assert(strstr(err, "clock_sync") != NULL, "%s", err);
    bridge_config_free(&c);
}
