/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Component test of the QMP backend against a fake QEMU monitor played by
 * the test on a UNIX socket: greeting and capabilities, id-matched replies,
 * snapshot jobs followed through JOB_STATUS_CHANGE (a watched success needs
 * no query-jobs) and query-jobs (the job's error text), command timeouts,
 * balloon fallback for memory, and a connection lost mid-job: reconnect,
 * then the job re-judged from query-jobs and the disk's snapshot list.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "auth.h"
#include "backend.h"
#include "bridge-config.h"
#include "loop.h"
#include "vms-log.h"

static char dir[128], path[200];
static int lfd = -1, sfd = -1; /* listening socket, accepted connection */
static struct bridge_loop loop;
static struct bridge_vm_config cfg;
static struct bridge_backend *be;
static double now;
static int ready_calls, lost_calls, done_calls;
static struct bridge_backend_result last;
static char rxbuf[65536];
static size_t rxlen;

static void on_ready(void *o)
{
    (void)o;
    ready_calls++;
}
static void on_lost(void *o)
{
    (void)o;
    lost_calls++;
}
static const struct bridge_backend_hooks hooks = {.ready = on_ready, .lost = on_lost};

static void on_done(void *o, const struct bridge_backend_result *r)
{
    (void)o;
    done_calls++;
    last = *r;
}

/* Run the bridge side a little: the loop and the backend's tick. */
static void pump(int rounds)
{
    for (int i = 0; i < rounds; i++) {
        bridge_backend_qmp.tick(be, now);
        bridge_loop_run_once(&loop, 10);
    }
}

static void server_send(const char *line)
{
    size_t n = strlen(line);
    cr_assert_eq(write(sfd, line, n), (ssize_t)n);
    cr_assert_eq(write(sfd, "\r\n", 2), 2);
}

/* Read one command from the bridge (pumping it meanwhile); returns it parsed (put it). */
static json_object *server_read(void)
{
    for (int tries = 0; tries < 300; tries++) {
        char *nl = memchr(rxbuf, '\n', rxlen);
        if (nl) {
            json_object *o;
            *nl = '\0';
            o = json_tokener_parse(rxbuf);
            rxlen -= (size_t)(nl - rxbuf) + 1;
            memmove(rxbuf, nl + 1, rxlen);
            cr_assert_not_null(o);
            return o;
        }
        struct pollfd p = {.fd = sfd, .events = POLLIN};
        if (poll(&p, 1, 0) > 0) {
            ssize_t n = read(sfd, rxbuf + rxlen, sizeof(rxbuf) - rxlen - 1);
            cr_assert_gt(n, 0, "bridge closed the QMP connection");
            rxlen += (size_t)n;
            continue;
        }
        pump(1);
    }
    cr_assert_fail("no command from the bridge");
    return NULL;
}

static const char *cmd_name(json_object *o)
{
    json_object *v;
    return json_object_object_get_ex(o, "execute", &v) ? json_object_get_string(v) : "";
}

static long cmd_id(json_object *o)
{
    json_object *v;
    cr_assert(json_object_object_get_ex(o, "id", &v));
    return (long)json_object_get_int64(v);
}

/* Expect command @name; reply with the JSON text @ret ("return" value), or NULL for none. */
static json_object *expect(const char *name, const char *ret)
{
    json_object *o = server_read();
    char line[8192];
    cr_assert_str_eq(cmd_name(o), name);
    if (ret) {
        snprintf(line, sizeof(line), "{\"return\": %s, \"id\": %ld}", ret, cmd_id(o));
        server_send(line);
    }
    return o;
}

static void accept_and_greet(void)
{
    for (int i = 0; i < 300 && sfd < 0; i++) {
        pump(1);
        sfd = accept(lfd, NULL, NULL);
    }
    cr_assert_geq(sfd, 0, "the backend did not connect");
    rxlen = 0;
    server_send("{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 1, \"minor\": 2, \"major\": 7}, "
                "\"package\": \"\"}, \"capabilities\": [\"oob\"]}}");
    json_object_put(expect("qmp_capabilities", "{}"));
    /* hostinfo's vCPU count, asked once per connection */
    json_object_put(expect("query-cpus-fast", "[{\"cpu-index\": 0}, {\"cpu-index\": 1}]"));
    for (int i = 0; i < 50 && !bridge_backend_qmp.is_ready(be); i++)
        pump(1);
    cr_assert(bridge_backend_qmp.is_ready(be));
}

static void setup(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};

    vms_log_init("test", LOG_ERR);
    snprintf(dir, sizeof(dir), "/tmp/test-qmp-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/qmp.sock", dir);
    strcpy(sa.sun_path, path);
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    cr_assert_eq(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(lfd, 4), 0);
    bridge_vm_config_defaults(&cfg);
    strcpy(cfg.name, "vmq");
    strcpy(cfg.qmp, path);
    strcpy(cfg.nodes[0], "disk0");
    strcpy(cfg.vmstate_node, "disk0");
    cfg.n_nodes = 1;
    cfg.command_timeout = 2;
    cr_assert_eq(bridge_loop_init(&loop), 0);
    now = bridge_now();
    ready_calls = lost_calls = done_calls = 0;
    be = bridge_backend_qmp.open(&cfg, &loop, 10, 20, &hooks, NULL);
    cr_assert_not_null(be);
    accept_and_greet();
    cr_assert_eq(ready_calls, 1);
}

static void teardown(void)
{
    char cmd[200];
    bridge_backend_qmp.close(be);
    if (sfd >= 0)
        close(sfd);
    close(lfd);
    sfd = -1;
    bridge_loop_free(&loop);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* QEMU sends event @name with @data (a JSON object's text). */
static void server_event(const char *name, const char *data)
{
    char line[1024];
    snprintf(line, sizeof(line),
             "{\"event\": \"%s\", \"data\": %s, \"timestamp\": {\"seconds\": 1, "
             "\"microseconds\": 2}}",
             name, data);
    server_send(line);
}

static void job_event(const char *job, const char *status)
{
    char data[512];
    snprintf(data, sizeof(data), "{\"status\": \"%s\", \"id\": \"%s\"}", status, job);
    server_event("JOB_STATUS_CHANGE", data);
}

static void wait_done(int n)
{
    for (int i = 0; i < 300 && done_calls < n; i++)
        pump(1);
    cr_assert_eq(done_calls, n);
}

/* Job @job concludes: the backend reads query-jobs (answered with @jobs), dismisses it, and
 * reports the @n-th result. */
static void conclude_job(const char *job, const char *jobs, int n)
{
    job_event(job, "concluded");
    json_object_put(expect("query-jobs", jobs));
    json_object_put(expect("job-dismiss", "{}"));
    wait_done(n);
}

TestSuite(qmp, .init = setup, .fini = teardown);

/* QEMU's monitor goes away (e.g. QEMU restarted) while a job runs, and comes back: the loss is
 * reported, the job is not failed meanwhile, and the backend greets the new monitor. */
static void monitor_drops_and_returns(void)
{
    close(sfd);
    sfd = -1;
    for (int i = 0; i < 50 && !lost_calls; i++)
        pump(1);
    cr_assert_eq(lost_calls, 1);
    cr_assert_eq(done_calls, 0, "the job is not failed while QMP is away");
    now += 1; /* past the reconnect backoff */
    accept_and_greet();
}

Test(qmp, save_job_followed_to_concluded)
{
    json_object *o, *args, *v;

    cr_assert_eq(bridge_backend_qmp.save(be, "st-1", "vms-job1", on_done, NULL), 0);
    cr_assert_eq(bridge_backend_qmp.save(be, "st-2", "vms-job2", on_done, NULL), -1,
                 "one snapshot job at a time");
    o = expect("snapshot-save", "{}");
    cr_assert(json_object_object_get_ex(o, "arguments", &args));
    cr_assert(json_object_object_get_ex(args, "tag", &v));
    cr_assert_str_eq(json_object_get_string(v), "st-1");
    cr_assert(json_object_object_get_ex(args, "vmstate", &v));
    cr_assert_str_eq(json_object_get_string(v), "disk0");
    json_object_put(o);
    job_event("vms-job1", "running");
    job_event("other-job", "concluded"); /* not ours */
    pump(5);
    cr_assert_eq(done_calls, 0);
    conclude_job("vms-job1",
                 "[{\"id\": \"vms-job1\", \"status\": \"concluded\", "
                 "\"type\": \"snapshot-save\"}]",
                 1);
    cr_assert_eq(last.status, VMS_STATUS_OK);
}

/* QEMU's own sequence for a job it started, from "created": one that never went through
 * "aborting" succeeded, so the backend dismisses it without asking query-jobs. */
Test(qmp, watched_job_without_aborting_needs_no_query)
{
    json_object *o;
    char line[256];

    cr_assert_eq(bridge_backend_qmp.save(be, "st-1", "vms-w", on_done, NULL), 0);
    o = expect("snapshot-save", NULL);
    job_event("vms-w", "created");
    job_event("vms-w", "running");
    job_event("vms-w", "waiting");
    job_event("vms-w", "pending");
    job_event("vms-w", "concluded");
    pump(5);
    cr_assert_eq(done_calls, 0, "judged before QEMU answered the command");
    snprintf(line, sizeof(line), "{\"return\": {}, \"id\": %ld}", cmd_id(o));
    json_object_put(o);
    server_send(line); /* the reply comes last: QEMU saved in its main loop */
    o = server_read();
    cr_assert_str_eq(cmd_name(o), "job-dismiss", "no query-jobs for a watched success");
    json_object_put(o);
    wait_done(1);
    cr_assert_eq(last.status, VMS_STATUS_OK);

    /* the reply before the events: judged at "concluded" */
    cr_assert_eq(bridge_backend_qmp.restore(be, "st-1", "vms-w2", on_done, NULL), 0);
    json_object_put(expect("snapshot-load", "{}"));
    job_event("vms-w2", "created");
    job_event("vms-w2", "running");
    job_event("vms-w2", "waiting");
    job_event("vms-w2", "pending");
    job_event("vms-w2", "concluded");
    json_object_put(expect("job-dismiss", "{}"));
    wait_done(2);
    cr_assert_eq(last.status, VMS_STATUS_OK);
}

/* A failure passes through "aborting": query-jobs has its error text. */
Test(qmp, watched_job_that_aborted_is_read_from_query_jobs)
{
    cr_assert_eq(bridge_backend_qmp.save(be, "st-1", "vms-a", on_done, NULL), 0);
    json_object_put(expect("snapshot-save", "{}"));
    job_event("vms-a", "created");
    job_event("vms-a", "running");
    job_event("vms-a", "aborting");
    conclude_job("vms-a",
                 "[{\"id\": \"vms-a\", \"status\": \"concluded\", "
                 "\"error\": \"No space left on device\"}]",
                 1);
    cr_assert_eq(last.status, VMS_STATUS_ERR_BACKEND);
    cr_assert_str_eq(last.message, "No space left on device");
}

/* Changes made while QMP was away are unseen: after a reconnect, query-jobs judges. */
Test(qmp, job_watched_before_a_reconnect_is_judged_by_query_jobs)
{
    cr_assert_eq(bridge_backend_qmp.save(be, "st-9", "vms-j9", on_done, NULL), 0);
    json_object_put(expect("snapshot-save", "{}"));
    job_event("vms-j9", "created");
    job_event("vms-j9", "running");
    pump(5);
    monitor_drops_and_returns();
    json_object_put(expect("query-jobs", "[{\"id\": \"vms-j9\", \"status\": \"running\"}]"));
    pump(5);
    cr_assert_eq(done_calls, 0);
    conclude_job("vms-j9",
                 "[{\"id\": \"vms-j9\", \"status\": \"concluded\", "
                 "\"error\": \"Input/output error\"}]",
                 1);
    cr_assert_eq(last.status, VMS_STATUS_ERR_BACKEND);
}

Test(qmp, monitor_silent_while_saving_is_not_a_timeout)
{
    json_object *o;
    char line[256];

    /* a big, dirty guest: QEMU answers snapshot-save only after writing the VM state */
    cr_assert_eq(bridge_backend_qmp.save(be, "st-1", "vms-big", on_done, NULL), 0);
    o = expect("snapshot-save", NULL);
    now += 3 * cfg.command_timeout; /* far past command_timeout, within job_timeout */
    pump(5);
    cr_assert_eq(done_calls, 0, "a save QEMU is still writing was failed as a timeout");
    snprintf(line, sizeof(line), "{\"return\": {}, \"id\": %ld}", cmd_id(o));
    json_object_put(o);
    server_send(line);
    conclude_job("vms-big", "[{\"id\": \"vms-big\", \"status\": \"concluded\"}]", 1);
    cr_assert_eq(last.status, VMS_STATUS_OK);
}

Test(qmp, job_error_text_reported)
{
    cr_assert_eq(bridge_backend_qmp.restore(be, "st-1", "vms-j", on_done, NULL), 0);
    json_object_put(expect("snapshot-load", "{}"));
    conclude_job("vms-j",
                 "[{\"id\": \"vms-j\", \"status\": \"concluded\", "
                 "\"error\": \"Snapshot 'st-1' does not exist\"}]",
                 1);
    cr_assert_eq(last.status, VMS_STATUS_ERR_BACKEND);
    cr_assert_str_eq(last.message, "Snapshot 'st-1' does not exist");
}

/* A restore with follow-ups (issue 14): stop first, so that snapshot-load leaves the guest
 * paused; a refused stop ends it before anything is loaded. */
Test(qmp, restore_paused_stops_before_the_load)
{
    json_object *o;
    char line[256];

    cr_assert_eq(bridge_backend_qmp.restore_paused(be, "st-1", "vms-p", on_done, NULL), 0);
    json_object_put(expect("stop", "{}"));
    o = expect("snapshot-load", "{}");
    json_object_put(o);
    conclude_job("vms-p", "[{\"id\": \"vms-p\", \"status\": \"concluded\"}]", 1);
    cr_assert_eq(last.status, VMS_STATUS_OK);

    cr_assert_eq(bridge_backend_qmp.restore_paused(be, "st-1", "vms-q", on_done, NULL), 0);
    o = expect("stop", NULL);
    snprintf(line, sizeof(line),
             "{\"error\": {\"class\": \"GenericError\", \"desc\": \"cannot stop\"}, \"id\": %ld}",
             cmd_id(o));
    json_object_put(o);
    server_send(line);
    wait_done(2);
    cr_assert_eq(last.status, VMS_STATUS_ERR_BACKEND);
    cr_assert_str_eq(last.message, "cannot stop");
}

Test(qmp, command_error_and_timeout)
{
    json_object *o;
    char line[256];

    cr_assert_eq(bridge_backend_qmp.delete(be, "st-1", "vms-d", on_done, NULL), 0);
    o = expect("snapshot-delete", NULL);
    snprintf(line, sizeof(line),
             "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no such node\"}, \"id\": %ld}",
             cmd_id(o));
    json_object_put(o);
    server_send(line);
    wait_done(1);
    cr_assert_eq(last.status, VMS_STATUS_ERR_BACKEND);
    cr_assert_str_eq(last.message, "no such node");

    /* no balloon: falls back to the memory summary */
    cr_assert_eq(bridge_backend_qmp.query_memory(be, on_done, NULL), 0);
    o = expect("query-balloon", NULL);
    snprintf(line, sizeof(line),
             "{\"error\": {\"class\": \"DeviceNotActive\", \"desc\": \"No balloon device has been "
             "activated\"}, \"id\": %ld}",
             cmd_id(o));
    json_object_put(o);
    server_send(line);
    json_object_put(expect("query-memory-size-summary", "{\"base-memory\": 134217728}"));
    wait_done(2);
    cr_assert_eq(last.status, VMS_STATUS_OK);
    cr_assert_eq(last.mem_bytes, 134217728);
    /* hostinfo's view of the VM: boot size, vCPUs (connect), the greeting's version */
    cr_assert_eq(last.base_bytes, 134217728);
    cr_assert_eq(last.vcpus, 2);
    cr_assert_str_eq(last.hypervisor_version, "QEMU 7.2.1");

    /* QEMU does not answer: the command times out */
    cr_assert_eq(bridge_backend_qmp.set_balloon(be, 1u << 27, on_done, NULL), 0);
    json_object_put(expect("balloon", NULL));
    now += 3;
    wait_done(3);
    cr_assert_eq(last.status, VMS_STATUS_ERR_TIMEOUT);
    cr_assert_str_eq(last.message, "timeout");
}

Test(qmp, connection_lost_mid_job_rejudged_after_reconnect)
{
    cr_assert_eq(bridge_backend_qmp.save(be, "st-9", "vms-j9", on_done, NULL), 0);
    json_object_put(expect("snapshot-save", "{}"));
    monitor_drops_and_returns();
    cr_assert_eq(ready_calls, 2);
    /* re-judged: the job is gone, the snapshot exists -> the save happened */
    json_object_put(expect("query-jobs", "[]"));
    json_object_put(expect("query-named-block-nodes",
                           "[{\"node-name\": \"file0\"}, {\"node-name\": \"disk0\", \"image\": "
                           "{\"snapshots\": [{\"name\": \"other\"}, {\"name\": \"st-9\"}]}}]"));
    wait_done(1);
    cr_assert_eq(last.status, VMS_STATUS_OK);
}

Test(qmp, monitor_that_never_greets_is_left_and_retried)
{
    int held;

    close(sfd); /* QEMU goes away; the next connection is accepted but never greeted, as */
    sfd = -1;   /* when another client holds QEMU's one monitor connection */
    for (int i = 0; i < 50 && !lost_calls; i++)
        pump(1);
    cr_assert_eq(lost_calls, 1);
    now += 1;
    for (int i = 0; i < 300 && sfd < 0; i++) {
        pump(1);
        sfd = accept(lfd, NULL, NULL);
    }
    cr_assert_geq(sfd, 0);
    held = sfd;
    now += cfg.command_timeout + 1;
    pump(3);
    {
        char c;
        struct pollfd p = {.fd = held, .events = POLLIN};
        cr_assert_eq(poll(&p, 1, 1000), 1);
        cr_assert_eq(read(held, &c, 1), 0, "the backend gave up on the silent monitor");
    }
    close(held);
    sfd = -1;
    now += 1; /* past the backoff: it connects again, and this time QEMU greets */
    accept_and_greet();
    cr_assert_eq(ready_calls, 2);
}

Test(qmp, save_that_outlives_its_timeout_is_dismissed_and_its_snapshot_deleted)
{
    json_object *o, *args, *line;

    cfg.job_timeout = 5;
    cr_assert_eq(bridge_backend_qmp.save(be, "st-late", "vms-late", on_done, NULL), 0);
    json_object_put(expect("snapshot-save", "{}"));
    now += 6; /* QEMU is still writing the state */
    wait_done(1);
    cr_assert_eq(last.status, VMS_STATUS_ERR_TIMEOUT);
    /* it ends after all: dismissed, and the snapshot the guest was told failed is deleted */
    job_event("vms-late", "concluded");
    json_object_put(expect("query-jobs", "[{\"id\": \"vms-late\", \"status\": \"concluded\"}]"));
    json_object_put(expect("job-dismiss", "{}"));
    o = expect("human-monitor-command", "\"\"");
    cr_assert(json_object_object_get_ex(o, "arguments", &args));
    cr_assert(json_object_object_get_ex(args, "command-line", &line));
    cr_assert_str_eq(json_object_get_string(line), "delvm st-late");
    json_object_put(o);
    /* the next job runs as usual */
    cr_assert_eq(bridge_backend_qmp.save(be, "st-next", "vms-next", on_done, NULL), 0);
    json_object_put(expect("snapshot-save", "{}"));
    conclude_job("vms-next", "[{\"id\": \"vms-next\", \"status\": \"concluded\"}]", 2);
    cr_assert_eq(last.status, VMS_STATUS_OK);
}

Test(qmp, failed_save_that_outlives_its_timeout_deletes_nothing)
{
    cfg.job_timeout = 5;
    cr_assert_eq(bridge_backend_qmp.save(be, "st-late", "vms-late", on_done, NULL), 0);
    json_object_put(expect("snapshot-save", "{}"));
    now += 6;
    wait_done(1);
    job_event("vms-late", "concluded");
    json_object_put(expect("query-jobs", "[{\"id\": \"vms-late\", \"status\": \"concluded\", "
                                         "\"error\": \"No space left on device\"}]"));
    json_object_put(expect("job-dismiss", "{}"));
    /* nothing else is sent: the next command the fake sees is the next job's */
    cr_assert_eq(bridge_backend_qmp.save(be, "st-next", "vms-next", on_done, NULL), 0);
    json_object_put(expect("snapshot-save", NULL));
}

static void balloon_event(uint64_t actual)
{
    char data[64];
    snprintf(data, sizeof(data), "{\"actual\": %llu}", (unsigned long long)actual);
    server_event("BALLOON_CHANGE", data);
}

Test(qmp, set_memory_reports_the_size_the_guest_reached)
{
    /* the guest's driver gives the memory back page by page: done at the target */
    cr_assert_eq(bridge_backend_qmp.set_balloon(be, 64u << 20, on_done, NULL), 0);
    json_object_put(expect("balloon", "{}"));
    json_object_put(expect("query-balloon", "{\"actual\": 134217728}"));
    balloon_event(96u << 20);
    pump(5);
    cr_assert_eq(done_calls, 0, "not done while the balloon moves");
    balloon_event(64u << 20);
    wait_done(1);
    cr_assert_eq(last.status, VMS_STATUS_OK);
    cr_assert_eq(last.mem_bytes, 64u << 20);
    cr_assert_str_eq(last.message, "");

    /* the guest stops short of the target: reported once the size stops moving */
    cr_assert_eq(bridge_backend_qmp.set_balloon(be, 16u << 20, on_done, NULL), 0);
    json_object_put(expect("balloon", "{}"));
    json_object_put(expect("query-balloon", "{\"actual\": 67108864}"));
    balloon_event(40u << 20);
    pump(5);
    cr_assert_eq(done_calls, 1);
    now += 4;
    /* the size is read once more (BALLOON_CHANGE is rate-limited): it moved a little */
    json_object_put(expect("query-balloon", "{\"actual\": 37748736}"));
    wait_done(2);
    cr_assert_eq(last.status, VMS_STATUS_OK);
    cr_assert_eq(last.mem_bytes, 36u << 20);
    cr_assert(strstr(last.message, "36 MiB of the 16 MiB target") != NULL, "%s", last.message);
}

Test(qmp, recover_running_job_follows_it)
{
    /* a previous bridge started vms-r; QEMU still runs it */
    cr_assert_eq(bridge_backend_qmp.recover(be, VMS_OP_SAVE, "st-r", "vms-r", on_done, NULL), 0);
    json_object_put(expect("query-jobs", "[{\"id\": \"vms-r\", \"status\": \"running\"}]"));
    pump(5);
    cr_assert_eq(done_calls, 0);
    conclude_job("vms-r", "[{\"id\": \"vms-r\", \"status\": \"concluded\"}]", 1);
    cr_assert_eq(last.status, VMS_STATUS_OK);
}

Test(qmp, recover_vanished_job_is_marked_never_started)
{
    cr_assert_eq(bridge_backend_qmp.recover(be, VMS_OP_SAVE, "st-x", "vms-x", on_done, NULL), 0);
    json_object_put(expect("query-jobs", "[]"));
    json_object_put(expect("query-named-block-nodes",
                           "[{\"node-name\": \"disk0\", \"image\": {\"snapshots\": []}}]"));
    wait_done(1);
    cr_assert_eq(last.status, VMS_STATUS_ERR_ABORTED);
    cr_assert(last.never_started, "no job, no snapshot: it may run again");
    /* a restore with no job (we dismiss only after journalling) never ran */
    cr_assert_eq(bridge_backend_qmp.recover(be, VMS_OP_RESTORE, "st-x", "vms-y", on_done, NULL), 0);
    json_object_put(expect("query-jobs", "[]"));
    wait_done(2);
    cr_assert_eq(last.status, VMS_STATUS_ERR_ABORTED);
    cr_assert(last.never_started);
}

Test(qmp, null_and_mistyped_values_are_empty_strings)
{
    /* json-c hands a JSON null as NULL: strcmp(NULL) and array_length(non-array) crashed */
    server_send("{\"event\": null}");
    server_send(
        "{\"event\": \"BLOCK_IO_ERROR\", \"data\": {\"node-name\": null, \"reason\": null}}");
    cr_assert_eq(bridge_backend_qmp.save(be, "st-1", "vms-n", on_done, NULL), 0);
    json_object_put(expect("snapshot-save", "{}"));
    job_event("vms-n", "running");
    server_send("{\"event\": \"JOB_STATUS_CHANGE\", \"data\": {\"id\": null, \"status\": null}}");
    server_send(
        "{\"event\": \"JOB_STATUS_CHANGE\", \"data\": {\"id\": \"vms-n\", \"status\": null}}");
    conclude_job("vms-n",
                 "[null, {\"id\": null}, {\"id\": \"vms-n\", \"status\": "
                 "\"concluded\", \"error\": null}]",
                 1);
    cr_assert_eq(last.status, VMS_STATUS_ERR_BACKEND);

    cr_assert_eq(bridge_backend_qmp.has_snapshot(be, "st-1", on_done, NULL), 0);
    json_object_put(expect("query-named-block-nodes",
                           "[{\"node-name\": null}, {\"node-name\": \"disk0\", \"image\": "
                           "{\"snapshots\": {\"name\": \"st-1\"}}}]"));
    wait_done(2);
    cr_assert_eq(last.status, VMS_STATUS_ERR_NOT_FOUND);

    cr_assert_eq(bridge_backend_qmp.query_status(be, on_done, NULL), 0);
    json_object_put(expect("query-status", "{\"status\": null}"));
    wait_done(3);
    cr_assert_eq(last.status, VMS_STATUS_OK);
    cr_assert_str_eq(last.run_status, "");
}

/* What the bridge has written so far without a newline: pumps, then takes it all. */
static size_t server_read_raw(char *out, size_t len)
{
    for (int i = 0; i < 20; i++) {
        struct pollfd p = {.fd = sfd, .events = POLLIN};
        pump(1);
        if (poll(&p, 1, 0) > 0) {
            ssize_t n = read(sfd, rxbuf + rxlen, sizeof(rxbuf) - rxlen - 1);
            cr_assert_gt(n, 0);
            rxlen += (size_t)n;
        }
    }
    cr_assert_lt(rxlen, len);
    memcpy(out, rxbuf, rxlen);
    out[rxlen] = '\0';
    return rxlen;
}

Test(qmp, primed_stop_sends_its_last_byte_at_the_release)
{
    char raw[512], line[256];
    json_object *o;

    cr_assert_eq(bridge_backend_qmp.prime_run_state(be, 1, on_done, NULL), 0);
    cr_assert_eq(bridge_backend_qmp.prime_run_state(be, 1, on_done, NULL), -1, "one at a time");
    /* a command asked meanwhile waits: it would land inside the primed object */
    cr_assert_eq(bridge_backend_qmp.query_status(be, on_done, NULL), 0);
    server_read_raw(raw, sizeof(raw));
    cr_assert_null(strchr(raw, '\n'), "only the primed command, unfinished: %s", raw);
    cr_assert(!strncmp(raw, "{\"execute\":\"stop\",\"id\":", 23), "%s", raw);
    cr_assert_neq(raw[strlen(raw) - 1], '}');
    /* neither is judged while primed: their time counts from the release */
    now += 5;
    pump(5);
    cr_assert_eq(done_calls, 0);

    cr_assert_eq(bridge_backend_qmp.release_run_state(be, 1), 0);
    cr_assert_eq(bridge_backend_qmp.release_run_state(be, 1), -1, "nothing primed any more");
    o = server_read(); /* the primed bytes plus the release's "}" */
    cr_assert_str_eq(cmd_name(o), "stop");
    server_send("{\"event\": \"STOP\", \"data\": {}, \"timestamp\": {\"seconds\": 7, "
                "\"microseconds\": 5}}");
    snprintf(line, sizeof(line), "{\"return\": {}, \"id\": %ld}", cmd_id(o));
    json_object_put(o);
    server_send(line);
    wait_done(1);
    cr_assert_eq(last.status, VMS_STATUS_OK);
    cr_assert_eq(last.event_us, 7000005);
    json_object_put(expect("query-status", "{\"status\": \"paused\", \"running\": false}"));
    wait_done(2);
}

Test(qmp, withdrawn_primed_command_is_refused_by_qemu_and_reports_nothing)
{
    char line[512];
    json_object *o, *args, *v;

    cr_assert_eq(bridge_backend_qmp.prime_run_state(be, 0, on_done, NULL), 0);
    cr_assert_eq(bridge_backend_qmp.release_run_state(be, 0), 0);
    o = server_read();
    cr_assert_str_eq(cmd_name(o), "cont");
    cr_assert(json_object_object_get_ex(o, "arguments", &args));
    cr_assert(json_object_object_get_ex(args, "vmstate-withdrawn", &v), "an argument cont refuses");
    snprintf(line, sizeof(line),
             "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Parameter 'vmstate-withdrawn' "
             "is unexpected\"}, \"id\": %ld}",
             cmd_id(o));
    json_object_put(o);
    server_send(line);
    pump(10);
    cr_assert_eq(done_calls, 0, "a withdrawn command reports nothing");
    /* the monitor is whole again: the next command goes out as usual */
    cr_assert_eq(bridge_backend_qmp.stop(be, on_done, NULL), 0);
    json_object_put(expect("stop", "{}"));
    wait_done(1);
}

Test(qmp, primed_command_reported_lost_with_the_connection)
{
    cr_assert_eq(bridge_backend_qmp.prime_run_state(be, 1, on_done, NULL), 0);
    server_read_raw((char[512]){0}, 512);
    close(sfd);
    sfd = -1;
    wait_done(1);
    cr_assert_eq(last.status, VMS_STATUS_ERR_BACKEND);
    cr_assert_str_eq(last.message, "lost");
    now += 1;           /* past the reconnect backoff */
    accept_and_greet(); /* the new connection starts unprimed */
    cr_assert_eq(bridge_backend_qmp.stop(be, on_done, NULL), 0);
    json_object_put(expect("stop", "{}"));
    wait_done(2);
}
