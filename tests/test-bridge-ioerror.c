/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the I/O-error policy (host-bridge/ioerror/ioerror-sm.c): config keys,
 * the state machine driven with mock actions, and the probes.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "bridge-config.h"
#include "ioerror.h"
#include "vms-proto.h"

/* ---- mock actions ---- */

struct mock {
    int query, probe, cont, kill;
    char kinds[64][16];
    int n_kinds;
    char last_text[512];
};

static void m_query(void *o)
{
    ((struct mock *)o)->query++;
}
static void m_probe(void *o, const struct bridge_ioe_probe_cfg *p)
{
    (void)p;
    ((struct mock *)o)->probe++;
}
static void m_cont(void *o)
{
    ((struct mock *)o)->cont++;
}
static void m_kill(void *o, const char *why)
{
    (void)why;
    ((struct mock *)o)->kill++;
}
static void m_notify(void *o, const char *kind, const struct bridge_ioe_sm *sm, const char *text)
{
    struct mock *m = o;
    (void)sm;
    if (m->n_kinds < 64)
        snprintf(m->kinds[m->n_kinds++], sizeof(m->kinds[0]), "%s", kind);
    snprintf(m->last_text, sizeof(m->last_text), "%s", text);
}

static const struct bridge_ioe_actions mock_actions = {m_query, m_probe, m_cont, m_kill, m_notify};

static int count_kind(const struct mock *m, const char *kind)
{
    int n = 0;
    for (int i = 0; i < m->n_kinds; i++)
        n += !strcmp(m->kinds[i], kind);
    return n;
}

static struct bridge_ioe_config cfg;
static struct bridge_ioe_sm sm;
static struct mock mk;

static void setup(void)
{
    char why[160];
    bridge_ioe_config_defaults(&cfg);
    cr_assert_eq(bridge_ioe_config_key(&cfg, "io_probe", "nbd1=nbd+unix:///?socket=/tmp/x.sock",
                                       why, sizeof(why)),
                 1);
    cfg.probe_interval_ms = 1000;
    cfg.probe_max_ms = 4000;
    cfg.resume_delay_ms = 2000;
    cfg.retry_min_ms = 250;
    cfg.retry_limit = 2;
    cfg.settle_ms = 1000;
    cfg.kill_timeout_s = 10;
    cfg.escalate_after_s = 100;
    memset(&mk, 0, sizeof(mk));
    bridge_ioe_sm_init(&sm, &cfg, &mock_actions, &mk);
}

/* BLOCK_IO_ERROR + STOP + query-status io-error at @now */
static void io_pause(const char *node, int nospace, double now)
{
    bridge_ioe_on_io_error(&sm, node, "write",
                           nospace ? "No space left on device" : "Input/output error", nospace,
                           now);
    bridge_ioe_on_stop(&sm, now);
    bridge_ioe_on_status(&sm, "io-error", now);
}

TestSuite(ioe, .init = setup);

/* ---- config ---- */

Test(ioe, config_keys)
{
    struct bridge_ioe_config c;
    char why[160];

    bridge_ioe_config_defaults(&c);
    cr_assert_eq(c.policy, BRIDGE_IOE_AUTO_RESUME);
    cr_assert_eq(bridge_ioe_config_key(&c, "io_error_policy", "leave-paused", why, sizeof(why)), 1);
    cr_assert_eq(c.policy, BRIDGE_IOE_LEAVE_PAUSED);
    cr_assert_eq(bridge_ioe_config_key(&c, "io_error_policy", "kill", why, sizeof(why)), 1);
    cr_assert_eq(c.policy, BRIDGE_IOE_KILL);
    cr_assert_eq(bridge_ioe_config_key(&c, "io_error_policy", "maybe", why, sizeof(why)), -1);
    cr_assert_eq(bridge_ioe_config_key(&c, "stateless", "yes", why, sizeof(why)), 1);
    cr_assert_eq(c.stateless, 1);
    cr_assert_eq(bridge_ioe_config_key(&c, "io_retry_limit", "7", why, sizeof(why)), 1);
    cr_assert_eq(c.retry_limit, 7);
    cr_assert_eq(bridge_ioe_config_key(&c, "io_probe_interval_ms", "0", why, sizeof(why)), -1);
    cr_assert_eq(bridge_ioe_config_key(&c, "io_probe_min_free", "16M", why, sizeof(why)), 1);
    cr_assert_eq(c.min_free_bytes, 16u << 20);
    cr_assert_eq(bridge_ioe_config_key(&c, "max_states", "3", why, sizeof(why)), 0);
    cr_assert_eq(
        bridge_ioe_config_key(&c, "io_restart_command", "start-vm $VMSTATE_VM", why, sizeof(why)),
        1);
    cr_assert_str_eq(c.restart_command, "start-vm $VMSTATE_VM");
    /* probes */
    cr_assert_eq(bridge_ioe_config_key(&c, "io_probe", "a=/var/lib/a.qcow2", why, sizeof(why)), 1);
    cr_assert_eq(bridge_ioe_config_key(&c, "io_probe", "b=nbd://10.0.0.1", why, sizeof(why)), 1);
    cr_assert_eq(bridge_ioe_config_key(&c, "io_probe", "c=unix:/run/n.sock", why, sizeof(why)), 1);
    cr_assert_eq(bridge_ioe_config_key(&c, "io_probe", "d=none", why, sizeof(why)), 1);
    cr_assert_eq(bridge_ioe_config_key(&c, "io_probe", "a=/other", why, sizeof(why)), -1);
    cr_assert_eq(bridge_ioe_config_key(&c, "io_probe", "e=ftp://x", why, sizeof(why)), -1);
    cr_assert_eq(bridge_ioe_config_key(&c, "io_probe", "no-equals", why, sizeof(why)), -1);
    cr_assert_eq(bridge_ioe_probe_for(&c, "a")->kind, BRIDGE_IOE_PROBE_FILE);
    cr_assert_str_eq(bridge_ioe_probe_for(&c, "b")->target, "10.0.0.1:10809");
    cr_assert_eq(bridge_ioe_probe_for(&c, "b")->kind, BRIDGE_IOE_PROBE_TCP);
    cr_assert_str_eq(bridge_ioe_probe_for(&c, "c")->target, "/run/n.sock");
    cr_assert_null(bridge_ioe_probe_for(&c, "d"));
    cr_assert_null(bridge_ioe_probe_for(&c, "zz"));
}

Test(ioe, config_file)
{
    struct bridge_config bc;
    char err[512];
    const char *text = "[bridge]\ndatabase=/tmp/x.db\nio_event_socket=/tmp/io.sock\n"
                       "[vm v]\nport_a=/a\nport_b=/b\nqmp=/q\nnodes=disk0\n"
                       "io_error_policy=kill\nio_kill_timeout=5\nio_probe=disk1=/d/disk1.raw\n";

    cr_assert_eq(bridge_config_load_string(&bc, "t.conf", text, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(bc.io_event_socket, "/tmp/io.sock");
    cr_assert_eq(bc.vms[0].ioe.policy, BRIDGE_IOE_KILL);
    cr_assert_eq(bc.vms[0].ioe.kill_timeout_s, 5);
    cr_assert_eq(bc.vms[0].ioe.n_probes, 1);
    bridge_config_free(&bc);
    cr_assert_eq(bridge_config_load_string(&bc, "t.conf",
                                           "[vm v]\nport_a=/a\nport_b=/b\nqmp=/q\nnodes=d\n"
                                           "io_error_policy=sometimes\n",
                                           err, sizeof(err)),
                 -1);
    cr_assert(strstr(err, "io_error_policy"), "%s", err);
    bridge_config_free(&bc);
}

/* ---- state machine ---- */

Test(ioe, user_stop_is_never_resumed)
{
    bridge_ioe_on_stop(&sm, 10);
    cr_assert_eq(mk.query, 1);
    bridge_ioe_on_status(&sm, "paused", 10);
    cr_assert_eq(sm.state, BRIDGE_IOE_USER_PAUSED);
    for (double t = 10; t < 500; t += 0.5)
        bridge_ioe_tick(&sm, t);
    cr_assert_eq(mk.cont, 0);
    cr_assert_eq(mk.probe, 0);
    cr_assert_eq(count_kind(&mk, "user-paused"), 1);
    bridge_ioe_on_resume(&sm, 600); /* the user's cont */
    cr_assert_eq(sm.state, BRIDGE_IOE_RUNNING);
}

Test(ioe, known_condition_probes_then_resumes)
{
    io_pause("nbd1", 0, 10);
    cr_assert_eq(sm.state, BRIDGE_IOE_IO_PAUSED);
    cr_assert_eq(count_kind(&mk, "paused"), 1);
    bridge_ioe_tick(&sm, 10);
    cr_assert_eq(mk.probe, 1); /* at once */
    bridge_ioe_tick(&sm, 10.1);
    cr_assert_eq(mk.probe, 1); /* one at a time */
    bridge_ioe_on_probe(&sm, 0, "refused", 10.2);
    bridge_ioe_tick(&sm, 11.0);
    cr_assert_eq(mk.probe, 1); /* interval 1 s */
    bridge_ioe_tick(&sm, 11.2);
    cr_assert_eq(mk.probe, 2);
    bridge_ioe_on_probe(&sm, 0, "refused", 11.2);
    bridge_ioe_tick(&sm, 12.3);
    cr_assert_eq(mk.probe, 2); /* backoff: 2 s now */
    bridge_ioe_tick(&sm, 13.2);
    cr_assert_eq(mk.probe, 3);
    cr_assert_eq(mk.cont, 0);
    bridge_ioe_on_probe(&sm, 1, "ok", 13.3);
    cr_assert_eq(mk.cont, 1, "cont as soon as healthy");
    cr_assert_eq(count_kind(&mk, "healthy"), 1);
    cr_assert_eq(sm.state, BRIDGE_IOE_RESUMING);
    bridge_ioe_on_resume(&sm, 13.31);
    bridge_ioe_on_cont(&sm, 1, NULL, 13.31);
    cr_assert_eq(sm.state, BRIDGE_IOE_RUNNING);
    bridge_ioe_tick(&sm, 14.0);
    cr_assert_eq(count_kind(&mk, "resumed"), 0, "not before it settled");
    bridge_ioe_tick(&sm, 14.4);
    cr_assert_eq(count_kind(&mk, "resumed"), 1);
    cr_assert_float_eq(sm.last_pause_len, 3.31, 1e-6);
    cr_assert_float_eq(sm.last_healthy_to_cont, 0.0, 1e-9);
    cr_assert_float_eq(sm.last_healthy_to_running, 0.01, 1e-6);
    cr_assert_eq(sm.episode, 0);
}

Test(ioe, repause_after_cont_retries_fast_then_backs_off)
{
    double t = 10;
    io_pause("nbd1", 0, t);
    bridge_ioe_tick(&sm, t);
    bridge_ioe_on_probe(&sm, 1, "ok", t);
    cr_assert_eq(mk.cont, 1);
    for (int i = 0; i < BRIDGE_IOE_FAST_RETRIES; i++) {
        bridge_ioe_on_resume(&sm, t);
        io_pause("nbd1", 0, t); /* QEMU's client still reconnecting */
        cr_assert_eq(sm.state, BRIDGE_IOE_IO_PAUSED);
        bridge_ioe_tick(&sm, t + 0.2);
        cr_assert_eq(mk.cont, i + 1, "rate limited");
        t += 0.25;
        bridge_ioe_tick(&sm, t);
        if (sm.probing) /* re-probed only when the last healthy probe is over 1 s old */
            bridge_ioe_on_probe(&sm, 1, "ok", t);
        cr_assert_eq(mk.cont, i + 2);
    }
    cr_assert(mk.probe >= 3 && mk.probe < BRIDGE_IOE_FAST_RETRIES, "probes: %d", mk.probe);
    cr_assert_eq(count_kind(&mk, "paused"), 1, "one episode");
    cr_assert_eq(count_kind(&mk, "repaused"), BRIDGE_IOE_FAST_RETRIES);
    /* after the fast retries the delay doubles */
    bridge_ioe_on_resume(&sm, t);
    io_pause("nbd1", 0, t);
    {
        int c0 = mk.cont;
        bridge_ioe_tick(&sm, t + 0.26);
        if (sm.probing)
            bridge_ioe_on_probe(&sm, 1, "ok", t + 0.26);
        cr_assert_eq(mk.cont, c0 + 1);
        bridge_ioe_on_resume(&sm, t + 0.27);
        io_pause("nbd1", 0, t + 0.27);
        bridge_ioe_tick(&sm, t + 0.27 + 0.3);
        cr_assert_eq(mk.cont, c0 + 1, "0.5 s now, not 0.25");
        bridge_ioe_tick(&sm, t + 0.27 + 0.5);
        if (sm.probing)
            bridge_ioe_on_probe(&sm, 1, "ok", t + 0.77);
        cr_assert_eq(mk.cont, c0 + 2);
    }
}

Test(ioe, unknown_condition_timer_then_escalates_stateful)
{
    io_pause("disk9", 0, 10); /* no probe for disk9 */
    cr_assert_eq(sm.probe, NULL);
    bridge_ioe_tick(&sm, 11.9);
    cr_assert_eq(mk.cont, 0);
    bridge_ioe_tick(&sm, 12.0);
    cr_assert_eq(mk.cont, 1, "resume timer 2 s");
    for (int i = 0; i < 2; i++) { /* N = 2 retries */
        bridge_ioe_on_resume(&sm, 12 + 3 * i);
        io_pause("disk9", 0, 12.1 + 3 * i);
        bridge_ioe_tick(&sm, 14.1 + 3 * i);
        cr_assert_eq(mk.cont, 2 + i);
    }
    bridge_ioe_on_resume(&sm, 20);
    io_pause("disk9", 0, 20.1);
    cr_assert_eq(sm.state, BRIDGE_IOE_GAVE_UP);
    cr_assert_eq(count_kind(&mk, "escalated"), 1);
    cr_assert(strstr(mk.last_text, "stays paused"), "%s", mk.last_text);
    for (double t = 20; t < 400; t += 1)
        bridge_ioe_tick(&sm, t);
    cr_assert_eq(mk.cont, 3);
    cr_assert_eq(mk.kill, 0);
}

Test(ioe, pause_after_settling_is_a_new_episode)
{
    io_pause("disk9", 0, 10);
    bridge_ioe_tick(&sm, 12);
    bridge_ioe_on_resume(&sm, 12);
    bridge_ioe_tick(&sm, 13.5); /* settled */
    cr_assert_eq(count_kind(&mk, "resumed"), 1);
    io_pause("disk9", 0, 50);
    cr_assert_eq(sm.pauses, 1);
    cr_assert_eq(count_kind(&mk, "paused"), 2);
}

Test(ioe, stateless_escalation_kills)
{
    cfg.stateless = 1;
    cfg.retry_limit = 0;
    io_pause("disk9", 0, 10);
    bridge_ioe_tick(&sm, 12);
    bridge_ioe_on_resume(&sm, 12);
    io_pause("disk9", 0, 12.1);
    cr_assert_eq(mk.kill, 1);
    cr_assert_eq(sm.state, BRIDGE_IOE_KILLED);
    cr_assert_eq(count_kind(&mk, "killed"), 1);
}

Test(ioe, escalation_timer_known_condition_keeps_probing)
{
    cfg.escalate_after_s = 30;
    io_pause("nbd1", 0, 10);
    for (double t = 10; t < 45; t += 0.1) {
        bridge_ioe_tick(&sm, t);
        if (sm.probing)
            bridge_ioe_on_probe(&sm, 0, "down", t);
    }
    cr_assert_eq(count_kind(&mk, "escalated"), 1);
    cr_assert_eq(mk.kill, 0);
    cr_assert_eq(sm.state, BRIDGE_IOE_IO_PAUSED);
    bridge_ioe_tick(&sm, 50);
    cr_assert(sm.probing);
    bridge_ioe_on_probe(&sm, 1, "up", 50);
    cr_assert_eq(mk.cont, 1);
}

Test(ioe, leave_paused_never_acts)
{
    cfg.policy = BRIDGE_IOE_LEAVE_PAUSED;
    io_pause("nbd1", 0, 10);
    for (double t = 10; t < 1000; t += 1)
        bridge_ioe_tick(&sm, t);
    cr_assert_eq(mk.cont + mk.probe + mk.kill, 0);
    cr_assert_eq(count_kind(&mk, "paused"), 1);
    cr_assert(strstr(mk.last_text, "leave-paused"), "%s", mk.last_text);
}

Test(ioe, kill_policy_after_timeout)
{
    cfg.policy = BRIDGE_IOE_KILL;
    io_pause("nbd1", 1, 10);
    bridge_ioe_tick(&sm, 19.9);
    cr_assert_eq(mk.kill, 0);
    bridge_ioe_tick(&sm, 20.0);
    cr_assert_eq(mk.kill, 1);
    cr_assert_eq(mk.cont, 0);
    bridge_ioe_on_stop(&sm, 20.1); /* late events change nothing */
    bridge_ioe_tick(&sm, 40);
    cr_assert_eq(mk.kill, 1);
    bridge_ioe_on_ready(&sm, 60); /* a new QEMU */
    cr_assert_eq(sm.state, BRIDGE_IOE_RUNNING);
}

Test(ioe, cont_failure_and_user_stop_while_resuming)
{
    io_pause("disk9", 0, 10);
    bridge_ioe_tick(&sm, 12);
    cr_assert_eq(mk.cont, 1);
    bridge_ioe_on_cont(&sm, 0, "timeout", 12.1);
    cr_assert_eq(sm.state, BRIDGE_IOE_IO_PAUSED);
    bridge_ioe_tick(&sm, 12.2);
    cr_assert_eq(mk.cont, 1);
    bridge_ioe_tick(&sm, 12.36);
    cr_assert_eq(mk.cont, 2);
    /* the glue re-reads the status before cont: a user stopped it meanwhile */
    bridge_ioe_on_status(&sm, "paused", 12.4);
    cr_assert_eq(sm.state, BRIDGE_IOE_USER_PAUSED);
    bridge_ioe_tick(&sm, 100);
    cr_assert_eq(mk.cont, 2);
}

Test(ioe, stop_without_error_then_status_io_error_on_reconnect)
{
    /* bridge (re)connects to a VM already paused by an I/O error: unknown node */
    bridge_ioe_on_ready(&sm, 5);
    cr_assert_eq(mk.query, 1);
    bridge_ioe_on_status(&sm, "io-error", 5);
    cr_assert_eq(sm.state, BRIDGE_IOE_IO_PAUSED);
    cr_assert_null(sm.probe);
    bridge_ioe_tick(&sm, 7);
    cr_assert_eq(mk.cont, 1, "unknown condition: the timer");
}

Test(ioe, failed_status_query_is_retried)
{
    bridge_ioe_on_io_error(&sm, "nbd1", "write", "x", 0, 1);
    bridge_ioe_on_stop(&sm, 1);
    bridge_ioe_on_status(&sm, NULL, 1);
    cr_assert_eq(sm.state, BRIDGE_IOE_CHECKING);
    bridge_ioe_tick(&sm, 1.6);
    cr_assert_eq(mk.query, 2);
    bridge_ioe_on_status(&sm, "io-error", 1.6);
    cr_assert_eq(sm.state, BRIDGE_IOE_IO_PAUSED);
    cr_assert_str_eq(sm.node, "nbd1");
}

/* ---- probes ---- */

Test(ioe, probe_file)
{
    char dir[] = "/tmp/ioe-probe-XXXXXX", path[128], detail[256];
    struct bridge_ioe_probe_cfg p = {.kind = BRIDGE_IOE_PROBE_FILE};
    FILE *f;

    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/disk.raw", dir);
    snprintf(p.target, sizeof(p.target), "%s", path);
    cr_assert_eq(bridge_ioe_probe_run(&p, 0, detail, sizeof(detail)), 0, "missing file");
    f = fopen(path, "w");
    fputs("data", f);
    fclose(f);
    cr_assert_eq(bridge_ioe_probe_run(&p, 4096, detail, sizeof(detail)), 1, "%s", detail);
    cr_assert_eq(bridge_ioe_probe_run(&p, UINT64_MAX, detail, sizeof(detail)), 0);
    cr_assert(strstr(detail, "free"), "%s", detail);
    unlink(path);
    rmdir(dir);
}

Test(ioe, probe_unix_nbd)
{
    char path[] = "/tmp/ioe-nbd-XXXXXX", detail[256];
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct bridge_ioe_probe_cfg p = {.kind = BRIDGE_IOE_PROBE_UNIX};
    int fd = mkstemp(path), ls, c;

    close(fd);
    unlink(path);
    snprintf(p.target, sizeof(p.target), "%s", path);
    cr_assert_eq(bridge_ioe_probe_run(&p, 0, detail, sizeof(detail)), 0, "no server");
    ls = socket(AF_UNIX, SOCK_STREAM, 0);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    cr_assert_eq(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(ls, 4), 0);
    if (fork() == 0) {
        c = accept(ls, NULL, NULL);
        (void)!write(c, "NBDMAGICIHAVEOPT", 16);
        sleep(1);
        _exit(0);
    }
    cr_assert_eq(bridge_ioe_probe_run(&p, 0, detail, sizeof(detail)), 1, "%s", detail);
    close(ls);
    unlink(path);
}

/* ---- the guest notice (protocol addition) ---- */

Test(ioe, notice_roundtrip)
{
    struct vms_msg n, d;
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[256];

    vms_msg_init(&n, VMS_MSG_NOTICE);
    vms_msg_set_str(&n, VMS_F_REASON, "io-resumed");
    vms_msg_set_str(&n, VMS_F_MESSAGE, "paused 3.2 s by a storage error (EIO) on disk nbd1");
    cr_assert_eq(vms_msg_encode(&n, &buf, &len, err, sizeof(err)), 0, "%s", err);
    vms_msg_init(&d, VMS_MSG_UNKNOWN);
    cr_assert_eq(vms_msg_decode(buf, len, &d, NULL), VMS_DECODE_OK);
    cr_assert_eq(d.type, VMS_MSG_NOTICE);
    cr_assert_str_eq(d.reason, "io-resumed");
    cr_assert_str_eq(vms_msg_type_name(d.type), "Notice");
    free(buf);
    vms_msg_clear(&d);
    vms_msg_clear(&n);
    /* the message is required */
    vms_msg_init(&n, VMS_MSG_NOTICE);
    vms_msg_set_str(&n, VMS_F_REASON, "io-resumed");
    cr_assert_eq(vms_msg_encode(&n, &buf, &len, err, sizeof(err)), -1);
    vms_msg_clear(&n);
}

Test(ioe, bridge_snapshot_stop_is_neither_resumed_nor_reported)
{
    bridge_ioe_on_stop(&sm, 1);
    bridge_ioe_on_status(&sm, "save-vm", 1);
    cr_assert_eq(sm.state, BRIDGE_IOE_USER_PAUSED);
    cr_assert_eq(mk.n_kinds, 0);
    bridge_ioe_tick(&sm, 100);
    cr_assert_eq(mk.cont, 0);
    bridge_ioe_on_resume(&sm, 101);
    cr_assert_eq(sm.state, BRIDGE_IOE_RUNNING);
}

Test(ioe, checking_asks_query_status_once)
{
    io_pause("disk9", 0, 10);
    bridge_ioe_tick(&sm, 12);
    cr_assert_eq(mk.cont, 1);
    bridge_ioe_on_resume(&sm, 12);
    bridge_ioe_on_io_error(&sm, "disk9", "write", "x", 0, 12.1);
    bridge_ioe_on_stop(&sm, 12.1);
    cr_assert_eq(mk.query, 2);
    bridge_ioe_tick(&sm, 12.5);
    bridge_ioe_tick(&sm, 15);
    cr_assert_eq(mk.query, 2, "no second query while the first is pending");
}
