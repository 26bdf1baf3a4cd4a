/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * backend-qmp.c — the QMP backend (backend.h) over QEMU's UNIX monitor socket.
 *
 * Protocol handling: read the greeting, send qmp_capabilities, then tag
 * every command with a numeric "id" and match replies by it; lines without
 * an id are events, dispatched apart (JOB_STATUS_CHANGE drives snapshot jobs).
 * Each command has a deadline; a lost connection fails every pending command
 * and schedules a reconnect with exponential backoff. JSON is parsed with
 * json-c, one document per line (QMP terminates each with CRLF).
 *
 * Snapshot jobs (snapshot-save/-load/-delete, QEMU >= 6.0) are followed to
 * "concluded", then dismissed. A job whose every status change we saw and
 * that never went through "aborting" succeeded; any other is judged by
 * query-jobs, which also has a failed job's error (job_judge). If the
 * connection drops while a job runs, the job is re-judged when QMP is back
 * (still running: keep following; gone: decide from the disk's snapshot list).
 */
#include "config.h"
#include "backend.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "vms-log.h"

#define QMP_RX_MAX (4u * 1024u * 1024u) /* one reply line, e.g. query-named-block-nodes */

typedef void (*qmp_reply_fn)(struct bridge_backend *q, json_object *ret, const char *err,
                             void *arg);

struct qmp_cmd {
    uint64_t id;
    double deadline;
    unsigned timeout_s;
    int waiting; /* primed or held behind a primed command: its time counts from the release */
    qmp_reply_fn fn;
    void *arg;
    struct qmp_cmd *next;
};

enum qmp_state { Q_DOWN, Q_GREETING, Q_CAPS, Q_READY };

enum job_phase { J_IDLE, J_START, J_WAIT, J_QUERY, J_RECOVER };

struct qmp_job {
    enum job_phase phase;
    enum vms_op op;
    char tag[VMS_STR_MAX + 1];
    char job_id[VMS_STR_MAX + 1];
    bridge_backend_done_fn done;
    void *opaque;
    int concluded;    /* JOB_STATUS_CHANGE concluded seen */
    int watched;      /* its "created" came on this connection: we see all its changes */
    int aborting;     /* it went through "aborting": it failed */
    int need_recover; /* the connection dropped while it ran */
    double deadline;
};

/* A small asynchronous request that is not a job (memory queries, has_snapshot). */
struct qmp_call {
    bridge_backend_done_fn done;
    void *opaque;
    char tag[VMS_STR_MAX + 1];
    uint64_t bytes;
};

struct bridge_backend {
    const struct bridge_vm_config *cfg;
    struct bridge_loop *loop;
    const struct bridge_backend_hooks *hooks;
    void *opaque;
    enum qmp_state state;
    struct bridge_watch watch;
    char *rx;
    size_t rx_len, rx_cap;
    char *tx;
    size_t tx_len, tx_cap;
    uint64_t next_id;
    struct qmp_cmd *cmds;
    double now, retry_at;
    double greet_deadline; /* a monitor held by another client accepts but never greets */
    unsigned backoff_ms, backoff_min, backoff_max;
    int broken; /* a write failed: disconnect at the next tick */
    /* QEMU's timestamps (us since the epoch) on the last STOP and RESUME events: when the
     * guest really stopped or went on, not when the bridge heard of it */
    int64_t stop_event_us, resume_event_us;
    struct qmp_job job;
    /* A job given up at its deadline and reported as timed out, which QEMU may still finish
     * (a snapshot runs in one go on QEMU's main loop; it cannot be cancelled midway): followed
     * to its end so that it is dismissed, and a save's snapshot deleted, since the guest was
     * told the save failed and no catalogue entry points to it. One slot: a job that overruns
     * stalls QEMU's monitor, so a second cannot start until the first ends. */
    struct {
        int active;
        enum vms_op op;
        char tag[VMS_STR_MAX + 1];
        char job_id[VMS_STR_MAX + 1];
    } orphan;
    /* set-memory in progress: after `balloon` is accepted the guest's driver moves the
     * size page by page (BALLOON_CHANGE events); the request ends when the target is
     * reached or the size stops moving, and reports the size reached */
    /* a checkpoint written to (out) or loaded from (in) an fd by migration: a chain of
     * commands (getfd, capabilities, parameters, [stop,] migrate) then the MIGRATION event */
    struct {
        int active, incoming, zero_copy, step, fd;
        uint64_t max_bandwidth;
        bridge_backend_done_fn done;
        void *opaque;
        double deadline;
    } mig;
    /* set-memory through virtio-mem: requested-size is set, then `size` is polled */
    struct {
        struct qmp_call *c; /* c->bytes: the plugged size asked for; c->tag: the device */
        uint64_t base, size;
        double last_change, deadline, next_poll;
        int asking;
    } hp;
    struct {
        struct qmp_call *c;
        uint64_t actual;
        double last_change, deadline;
        int asking; /* the last query-balloon before it is reported is in flight */
    } bal;
    /* what hostinfo reports about the VM: from the greeting and query-cpus-fast on connect */
    char hv_version[64];
    unsigned vcpus;
    /* a primed stop/cont (prime_run_state): all of it but its closing brace is written, and
     * the commands sent meanwhile wait in @held, since they would land inside it */
    struct {
        int active;
        uint64_t id;
        char *held;
        size_t held_len, held_cap;
    } primed;
};

static void qmp_disconnect(struct bridge_backend *q, const char *why);
static void job_recover_start(struct bridge_backend *q);
static void orphan_adopt(struct bridge_backend *q);

static const char *vmname(struct bridge_backend *q)
{
    return q->cfg->name;
}

/* ---- output ---- */

/* Append @n bytes of @s to the buffer @buf (@len, @cap). */
static int buf_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : 4096;
        char *g;
        while (c < *len + n)
            c *= 2;
        g = realloc(*buf, c);
        if (!g)
            return -1;
        *buf = g;
        *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    return 0;
}

static int tx_append(struct bridge_backend *q, const char *s, size_t n)
{
    return buf_append(&q->tx, &q->tx_len, &q->tx_cap, s, n);
}

static void tx_flush(struct bridge_backend *q)
{
    size_t off = 0;

    while (off < q->tx_len && q->watch.fd >= 0) {
        ssize_t n = write(q->watch.fd, q->tx + off, q->tx_len - off);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        q->broken = 1;
        break;
    }
    memmove(q->tx, q->tx + off, q->tx_len - off);
    q->tx_len -= off;
    if (q->watch.fd >= 0)
        bridge_watch_set(q->loop, &q->watch, EPOLLIN | (q->tx_len ? EPOLLOUT : 0));
}

/*
 * The timeout for a command sent now. While a snapshot job runs, QEMU's main
 * loop is busy writing the VM state for as long as that takes (seconds for a
 * large, dirty guest on a loaded host), and the monitor answers nothing until
 * it is done — the job's own start command included. Judging such a command
 * by command_timeout would fail a save that QEMU then completes; the job's
 * timeout bounds it instead.
 */
static unsigned qmp_timeout(const struct bridge_backend *q)
{
    return q->job.phase != J_IDLE ? q->cfg->job_timeout : q->cfg->command_timeout;
}

/*
 * Send command @name with @args (owned, may be NULL) and call @fn with the
 * reply's "return" value, or with @err set ("timeout", "lost" or the QMP
 * error's desc). Returns 0 or -1 (not connected / no memory; @fn not called).
 */
enum qmp_send_mode { SEND_NOW, SEND_PRIMED };

static int qmp_command_ex(struct bridge_backend *q, const char *name, json_object *args,
                          unsigned timeout_s, qmp_reply_fn fn, void *arg, int pass_fd,
                          enum qmp_send_mode mode);

static int qmp_command_fd(struct bridge_backend *q, const char *name, json_object *args,
                          unsigned timeout_s, qmp_reply_fn fn, void *arg, int pass_fd)
{
    return qmp_command_ex(q, name, args, timeout_s, fn, arg, pass_fd, SEND_NOW);
}

static int qmp_command(struct bridge_backend *q, const char *name, json_object *args,
                       unsigned timeout_s, qmp_reply_fn fn, void *arg)
{
    return qmp_command_ex(q, name, args, timeout_s, fn, arg, -1, SEND_NOW);
}

/*
 * Write @text, its first byte carrying @fd as SCM_RIGHTS (QMP getfd/add-fd take the fd
 * that arrives with the command). Needs an empty output buffer, so that the fd travels
 * with this command and no other; what the socket does not take now is buffered.
 */
static int send_with_fd(struct bridge_backend *q, const char *text, size_t len, int fd)
{
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {.iov_base = (void *)text, .iov_len = len};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
    struct cmsghdr *cm;
    ssize_t n;

    if (q->tx_len)
        return -1;
    memset(cbuf, 0, sizeof(cbuf));
    cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    do
        n = sendmsg(q->watch.fd, &mh, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return -1; /* nothing sent (a full socket buffer here means QEMU is stuck) */
    return tx_append(q, text + n, len - (size_t)n);
}

/*
 * SEND_PRIMED writes all of the command but its closing brace: QEMU's JSON streamer holds
 * the incomplete object, and release_run_state's one byte completes it. While a command is
 * primed, later ones wait in primed.held (written after it at release), and those passing an
 * fd are refused (their fd must travel with their first byte).
 */
static int qmp_command_ex(struct bridge_backend *q, const char *name, json_object *args,
                          unsigned timeout_s, qmp_reply_fn fn, void *arg, int pass_fd,
                          enum qmp_send_mode mode)
{
    json_object *o = NULL;
    struct qmp_cmd *c = NULL, **tail;
    const char *text;
    size_t len;
    int rc = -1;

    if (q->watch.fd < 0 || q->broken || (q->state != Q_READY && strcmp(name, "qmp_capabilities")))
        goto out;
    if (q->primed.active && (pass_fd >= 0 || mode == SEND_PRIMED))
        goto out;
    c = calloc(1, sizeof(*c));
    o = json_object_new_object();
    if (!c || !o)
        goto out;
    c->id = ++q->next_id;
    c->timeout_s = timeout_s ? timeout_s : 10;
    c->deadline = q->now + c->timeout_s;
    c->waiting = mode == SEND_PRIMED || q->primed.active;
    c->fn = fn;
    c->arg = arg;
    json_object_object_add(o, "execute", json_object_new_string(name));
    if (args) {
        json_object_object_add(o, "arguments", args);
        args = NULL;
    }
    json_object_object_add(o, "id", json_object_new_int64((int64_t)c->id));
    text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    len = strlen(text);
    if (mode == SEND_PRIMED) {
        if (len < 2 || text[len - 1] != '}' || tx_append(q, text, len - 1) < 0)
            goto out;
        q->primed.active = 1;
        q->primed.id = c->id;
    } else if (q->primed.active) {
        if (buf_append(&q->primed.held, &q->primed.held_len, &q->primed.held_cap, text, len) < 0 ||
            buf_append(&q->primed.held, &q->primed.held_len, &q->primed.held_cap, "\n", 1) < 0)
            goto out;
    } else if (pass_fd >= 0) {
        char *line = NULL;
        int sent;
        if (asprintf(&line, "%s\n", text) < 0)
            goto out;
        sent = send_with_fd(q, line, strlen(line), pass_fd);
        free(line);
        if (sent < 0)
            goto out;
    } else if (tx_append(q, text, len) < 0 || tx_append(q, "\n", 1) < 0) {
        goto out;
    }
    vms_debug(vmname(q), NULL, "qmp -> %s%s", text,
              mode == SEND_PRIMED ? " (primed: all but its last byte)"
              : q->primed.active  ? " (held behind the primed command)"
                                  : "");
    for (tail = &q->cmds; *tail; tail = &(*tail)->next)
        ;
    *tail = c;
    c = NULL;
    tx_flush(q);
    rc = 0;
out:
    free(c);
    json_object_put(o);
    json_object_put(args);
    return rc;
}

static void ignore_reply(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    if (err)
        vms_debug(vmname(q), NULL, "qmp: %s: %s", (const char *)arg, err);
}

/* ---- jobs ---- */

static void job_finish_as(struct bridge_backend *q, enum vms_status status, const char *msg,
                          int never_started)
{
    struct bridge_backend_result r = {.status = status, .never_started = never_started};
    bridge_backend_done_fn done = q->job.done;
    void *opaque = q->job.opaque;

    snprintf(r.message, sizeof(r.message), "%s", msg ? msg : "");
    memset(&q->job, 0, sizeof(q->job));
    q->job.phase = J_IDLE;
    if (done)
        done(opaque, &r);
}

static void job_finish(struct bridge_backend *q, enum vms_status status, const char *msg)
{
    job_finish_as(q, status, msg, 0);
}

/* Copy @s into @dst keeping only characters allowed in a protocol text field. */
static void sanitize_text(char *dst, size_t len, const char *s)
{
    size_t j = 0;
    for (; s && *s && j + 1 < len; s++)
        dst[j++] = ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f) ? ' ' : *s;
    dst[j] = '\0';
}

/*
 * What QEMU sends may have any JSON type where a string or an array is
 * expected, or null (a NULL json_object, whose json_object_get_string() is
 * NULL and whose json_object_array_length() aborts): read values only
 * through these.
 */
static const char *jstr(json_object *o)
{
    const char *s = json_object_get_string(o);
    return s ? s : "";
}

static size_t jarray_len(json_object *a)
{
    return json_object_is_type(a, json_type_array) ? json_object_array_length(a) : 0;
}

/* The string value of member @key of @o; "" when absent, null, or @o is not an object. */
static const char *str_member(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) ? jstr(v) : "";
}

static json_object *find_job(json_object *jobs, const char *job_id)
{
    size_t n = jarray_len(jobs);
    for (size_t i = 0; i < n; i++) {
        json_object *j = json_object_array_get_idx(jobs, i), *id;
        if (json_object_object_get_ex(j, "id", &id) && !strcmp(jstr(id), job_id))
            return j;
    }
    return NULL;
}

static void on_job_dismissed(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    (void)ret;
    if (err)
        vms_warn(vmname(q), NULL, "qmp: job-dismiss %s: %s", (const char *)arg, err);
    free(arg);
}

/* Remove concluded job @job_id from QEMU (it stays until dismissed). */
static void job_dismiss(struct bridge_backend *q, const char *job_id)
{
    json_object *args = json_object_new_object();
    char *id = strdup(job_id); /* for the warning: the job record may be reused by then */

    json_object_object_add(args, "id", json_object_new_string(job_id));
    if (qmp_command(q, "job-dismiss", args, qmp_timeout(q), on_job_dismissed, id) < 0)
        free(id);
}

/*
 * @j is the job's query-jobs entry, concluded: read its error, finish, then
 * dismiss it. The dismiss goes after @done has journalled the result: a bridge
 * killed in between finds the concluded job again on restart, where a job
 * already dismissed would look like one that never started.
 */
static void job_conclude(struct bridge_backend *q, json_object *j)
{
    json_object *e;
    char msg[VMS_STR_MAX + 1] = "";
    enum vms_status status = VMS_STATUS_OK;
    char job_id[VMS_STR_MAX + 1];

    if (j && json_object_object_get_ex(j, "error", &e)) {
        sanitize_text(msg, sizeof(msg), json_object_get_string(e));
        status = VMS_STATUS_ERR_BACKEND;
    }
    snprintf(job_id, sizeof(job_id), "%s", q->job.job_id); /* job_finish clears the record */
    vms_info(vmname(q), NULL, "qmp: job %s (%s %s) concluded: %s", q->job.job_id,
             vms_op_name(q->job.op), q->job.tag, status ? msg : "ok");
    job_finish(q, status, msg);
    job_dismiss(q, job_id);
}

static void on_has_snapshot_for_recovery(void *opaque, const struct bridge_backend_result *r);

static void on_query_jobs(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    json_object *j;
    (void)arg;

    if (q->job.phase != J_QUERY && q->job.phase != J_RECOVER)
        return;
    if (err) {
        if (!strcmp(err, "lost"))
            return; /* re-judged when QMP is back */
        orphan_adopt(q);
        job_finish(q, VMS_STATUS_ERR_BACKEND, err);
        return;
    }
    j = find_job(ret, q->job.job_id);
    if (j && !strcmp(str_member(j, "status"), "concluded")) {
        job_conclude(q, j);
        return;
    }
    if (j) { /* still running: follow its events */
        q->job.phase = J_WAIT;
        return;
    }
    if (q->job.phase == J_QUERY) {
        job_finish(q, VMS_STATUS_ERR_BACKEND, "job vanished before it could be read");
        return;
    }
    /* recovering, and QEMU has no such job. Concluded jobs stay until dismissed, and we
     * dismiss only after journalling, so the command never reached this QEMU (the bridge
     * died first, or QEMU restarted). A restore is then simply not done yet; a save or
     * delete is judged by the snapshot list. */
    if (q->job.op == VMS_OP_RESTORE) {
        job_finish_as(q, VMS_STATUS_ERR_ABORTED,
                      "interrupted: the bridge or QEMU restarted before the restore ran", 1);
        return;
    }
    if (bridge_backend_qmp.has_snapshot(q, q->job.tag, on_has_snapshot_for_recovery, q) < 0)
        job_finish(q, VMS_STATUS_ERR_ABORTED, "interrupted; QMP unavailable to check");
}

static void on_has_snapshot_for_recovery(void *opaque, const struct bridge_backend_result *r)
{
    struct bridge_backend *q = opaque;
    int present = r->status == VMS_STATUS_OK;

    if (q->job.phase != J_RECOVER)
        return;
    if (r->status != VMS_STATUS_OK && r->status != VMS_STATUS_ERR_NOT_FOUND) {
        if (q->state != Q_READY)
            return; /* lost again: retried on reconnect */
        job_finish(q, VMS_STATUS_ERR_ABORTED, r->message);
        return;
    }
    if (q->job.op == VMS_OP_SAVE)
        job_finish_as(q, present ? VMS_STATUS_OK : VMS_STATUS_ERR_ABORTED,
                      present ? ""
                              : "interrupted: QEMU or the bridge restarted before the snapshot "
                                "was taken",
                      !present);
    else
        job_finish_as(q, present ? VMS_STATUS_ERR_ABORTED : VMS_STATUS_OK,
                      present ? "interrupted: the snapshot was not deleted" : "", present);
}

static void job_query(struct bridge_backend *q)
{
    q->job.phase = q->job.phase == J_RECOVER ? J_RECOVER : J_QUERY;
    if (qmp_command(q, "query-jobs", NULL, qmp_timeout(q), on_query_jobs, NULL) < 0)
        q->job.need_recover = 1;
}

/*
 * The job has concluded: did it fail? QEMU sends JOB_STATUS_CHANGE for every
 * transition of a job with an id, in order, as it happens, and a job that
 * fails (or is cancelled) always passes through "aborting" on its way to
 * "concluded" (job_update_rc in QEMU's job.c; "aborting" is only too brief
 * for query-jobs to show). So when we saw its "created" on this connection
 * and no "aborting", it succeeded, without a query-jobs round trip: 1-5 ms
 * under TCG, where QEMU's main loop competes with the guest just resumed.
 * Otherwise query-jobs decides, and has the failed job's error text.
 */
static void job_judge(struct bridge_backend *q)
{
    if (q->job.watched && !q->job.aborting)
        job_conclude(q, NULL);
    else
        job_query(q);
}

static void job_recover_start(struct bridge_backend *q)
{
    q->job.need_recover = 0;
    q->job.phase = J_RECOVER;
    vms_info(vmname(q), NULL, "qmp: re-judging job %s (%s %s)", q->job.job_id,
             vms_op_name(q->job.op), q->job.tag);
    job_query(q);
}

static void on_job_started(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    (void)ret;
    (void)arg;
    if (q->job.phase != J_START)
        return;
    if (err) {
        if (!strcmp(err, "lost"))
            return; /* need_recover is set: re-judged on reconnect */
        if (!strcmp(err, "timeout"))
            orphan_adopt(q); /* QEMU may have started it all the same */
        job_finish(q, !strcmp(err, "timeout") ? VMS_STATUS_ERR_TIMEOUT : VMS_STATUS_ERR_BACKEND,
                   err);
        return;
    }
    q->job.phase = J_WAIT;
    if (q->job.concluded)
        job_judge(q);
}

static void orphan_adopt(struct bridge_backend *q)
{
    if (q->orphan.active)
        vms_warn(vmname(q), NULL, "qmp: no longer following job %s (a newer one timed out)",
                 q->orphan.job_id);
    q->orphan.active = 1;
    q->orphan.op = q->job.op;
    snprintf(q->orphan.tag, sizeof(q->orphan.tag), "%s", q->job.tag);
    snprintf(q->orphan.job_id, sizeof(q->orphan.job_id), "%s", q->job.job_id);
    vms_warn(vmname(q), NULL,
             "qmp: job %s (%s %s) reported as timed out; if QEMU still finishes it, it is "
             "dismissed%s",
             q->orphan.job_id, vms_op_name(q->orphan.op), q->orphan.tag,
             q->orphan.op == VMS_OP_SAVE ? " and its snapshot deleted" : "");
}

static void on_orphan_snapshot_deleted(struct bridge_backend *q, json_object *ret, const char *err,
                                       void *arg)
{
    const char *out = json_object_is_type(ret, json_type_string) ? jstr(ret) : "";
    (void)arg;
    /* HMP reports its errors as text in the return value */
    if (err || out[0])
        vms_err(vmname(q), NULL, "qmp: could not delete the timed-out save's snapshot: %s",
                err ? err : out);
    else
        vms_info(vmname(q), NULL, "qmp: deleted the timed-out save's snapshot");
}

static void on_orphan_jobs(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    json_object *j, *e, *args;
    (void)arg;

    if (!q->orphan.active)
        return;
    if (err)
        return; /* asked again on reconnect or at its next event */
    j = find_job(ret, q->orphan.job_id);
    if (!j) { /* the command never started a job */
        q->orphan.active = 0;
        return;
    }
    if (strcmp(str_member(j, "status"), "concluded"))
        return; /* still running: its concluded event brings us back */
    q->orphan.active = 0;
    job_dismiss(q, q->orphan.job_id);
    if (json_object_object_get_ex(j, "error", &e)) {
        vms_info(vmname(q), NULL, "qmp: timed-out job %s ended with an error: %s", q->orphan.job_id,
                 jstr(e));
        return;
    }
    /* only a plain id goes into an HMP command line (no space: one argument) */
    if (q->orphan.op == VMS_OP_SAVE && vms_valid_id(q->orphan.tag)) {
        char line[VMS_STR_MAX + 16];
        snprintf(line, sizeof(line), "delvm %s", q->orphan.tag);
        args = json_object_new_object();
        json_object_object_add(args, "command-line", json_object_new_string(line));
        vms_info(vmname(q), NULL, "qmp: timed-out save %s finished after all; deleting snapshot %s",
                 q->orphan.job_id, q->orphan.tag);
        qmp_command(q, "human-monitor-command", args, qmp_timeout(q), on_orphan_snapshot_deleted,
                    NULL);
    } else if (q->orphan.op == VMS_OP_RESTORE) {
        vms_err(vmname(q), NULL,
                "qmp: timed-out restore %s finished after all: the VM now runs state %s",
                q->orphan.job_id, q->orphan.tag);
    } else {
        vms_info(vmname(q), NULL, "qmp: timed-out job %s finished after all", q->orphan.job_id);
    }
}

static void orphan_query(struct bridge_backend *q)
{
    if (q->orphan.active)
        qmp_command(q, "query-jobs", NULL, qmp_timeout(q), on_orphan_jobs, NULL);
}

static void on_job_event(struct bridge_backend *q, json_object *data)
{
    json_object *id, *status;

    if (!json_object_object_get_ex(data, "id", &id) ||
        !json_object_object_get_ex(data, "status", &status))
        return;
    if (q->orphan.active && !strcmp(jstr(id), q->orphan.job_id) &&
        !strcmp(jstr(status), "concluded")) {
        orphan_query(q);
        return;
    }
    if (q->job.phase == J_IDLE || strcmp(jstr(id), q->job.job_id))
        return;
    vms_debug(vmname(q), NULL, "qmp: job %s -> %s", q->job.job_id, jstr(status));
    if (!strcmp(jstr(status), "created"))
        q->job.watched = 1;
    else if (!strcmp(jstr(status), "aborting"))
        q->job.aborting = 1;
    if (strcmp(jstr(status), "concluded"))
        return;
    q->job.concluded = 1;
    if (q->job.phase == J_WAIT)
        job_judge(q);
}

static int job_begin(struct bridge_backend *q, enum vms_op op, const char *tag, const char *job_id,
                     bridge_backend_done_fn done, void *opaque)
{
    if (q->state != Q_READY || q->job.phase != J_IDLE || strlen(tag) > VMS_STR_MAX ||
        strlen(job_id) > VMS_STR_MAX)
        return -1;
    memset(&q->job, 0, sizeof(q->job));
    q->job.op = op;
    snprintf(q->job.tag, sizeof(q->job.tag), "%s", tag);
    snprintf(q->job.job_id, sizeof(q->job.job_id), "%s", job_id);
    q->job.done = done;
    q->job.opaque = opaque;
    q->job.deadline = q->now + q->cfg->job_timeout;
    return 0;
}

static json_object *devices_array(const struct bridge_vm_config *cfg)
{
    json_object *a = json_object_new_array();
    for (unsigned i = 0; i < cfg->n_nodes; i++)
        json_object_array_add(a, json_object_new_string(cfg->nodes[i]));
    return a;
}

static int job_command(struct bridge_backend *q, enum vms_op op, const char *cmd, const char *tag,
                       const char *job_id, bridge_backend_done_fn done, void *opaque)
{
    json_object *args;

    if (job_begin(q, op, tag, job_id, done, opaque) < 0)
        return -1;
    args = json_object_new_object();
    json_object_object_add(args, "job-id", json_object_new_string(job_id));
    json_object_object_add(args, "tag", json_object_new_string(tag));
    if (op != VMS_OP_DELETE)
        json_object_object_add(args, "vmstate", json_object_new_string(q->cfg->vmstate_node));
    json_object_object_add(args, "devices", devices_array(q->cfg));
    q->job.phase = J_START;
    if (qmp_command(q, cmd, args, qmp_timeout(q), on_job_started, NULL) < 0) {
        memset(&q->job, 0, sizeof(q->job));
        return -1;
    }
    vms_info(vmname(q), NULL, "qmp: %s tag=%s job=%s", cmd, tag, job_id);
    return 0;
}

static int qmp_save(struct bridge_backend *q, const char *tag, const char *job_id,
                    bridge_backend_done_fn done, void *opaque)
{
    return job_command(q, VMS_OP_SAVE, "snapshot-save", tag, job_id, done, opaque);
}

static int qmp_restore(struct bridge_backend *q, const char *tag, const char *job_id,
                       bridge_backend_done_fn done, void *opaque)
{
    return job_command(q, VMS_OP_RESTORE, "snapshot-load", tag, job_id, done, opaque);
}

static enum vms_status err_status(const char *err);

/* restore_paused: `stop` first; snapshot-load then leaves a stopped VM stopped (QEMU resumes
 * after the load only a VM that was running when it began). */
struct paused_load {
    char tag[VMS_STR_MAX + 1], job_id[VMS_STR_MAX + 1];
    bridge_backend_done_fn done;
    void *opaque;
};

static void on_stopped_for_load(struct bridge_backend *q, json_object *ret, const char *err,
                                void *arg)
{
    struct paused_load *p = arg;
    struct bridge_backend_result r = {.status = VMS_STATUS_OK};
    (void)ret;

    if (!err && job_command(q, VMS_OP_RESTORE, "snapshot-load", p->tag, p->job_id, p->done,
                            p->opaque) == 0) {
        free(p);
        return;
    }
    r.status = err ? err_status(err) : VMS_STATUS_ERR_UNAVAILABLE;
    snprintf(r.message, sizeof(r.message), "%s", err ? err : "cannot start snapshot-load");
    p->done(p->opaque, &r);
    free(p);
}

static int qmp_restore_paused(struct bridge_backend *q, const char *tag, const char *job_id,
                              bridge_backend_done_fn done, void *opaque)
{
    struct paused_load *p;

    if (q->state != Q_READY || q->job.phase != J_IDLE || strlen(tag) > VMS_STR_MAX ||
        strlen(job_id) > VMS_STR_MAX || !(p = calloc(1, sizeof(*p))))
        return -1;
    snprintf(p->tag, sizeof(p->tag), "%s", tag);
    snprintf(p->job_id, sizeof(p->job_id), "%s", job_id);
    p->done = done;
    p->opaque = opaque;
    if (qmp_command(q, "stop", NULL, qmp_timeout(q), on_stopped_for_load, p) < 0) {
        free(p);
        return -1;
    }
    return 0;
}

static int qmp_delete(struct bridge_backend *q, const char *tag, const char *job_id,
                      bridge_backend_done_fn done, void *opaque)
{
    return job_command(q, VMS_OP_DELETE, "snapshot-delete", tag, job_id, done, opaque);
}

static int qmp_recover(struct bridge_backend *q, enum vms_op op, const char *tag,
                       const char *job_id, bridge_backend_done_fn done, void *opaque)
{
    if (job_begin(q, op, tag, job_id, done, opaque) < 0)
        return -1;
    job_recover_start(q);
    return 0;
}

/* ---- plain calls ---- */

/* The status for a failed command: its QMP error, a timeout, or the connection lost. */
static enum vms_status err_status(const char *err)
{
    if (!strcmp(err, "timeout"))
        return VMS_STATUS_ERR_TIMEOUT;
    if (!strcmp(err, "lost"))
        return VMS_STATUS_ERR_UNAVAILABLE;
    return VMS_STATUS_ERR_BACKEND;
}

static void call_finish(struct qmp_call *c, enum vms_status st, const char *msg, uint64_t mem)
{
    struct bridge_backend_result r = {.status = st, .mem_bytes = mem, .bytes = c->bytes};
    snprintf(r.message, sizeof(r.message), "%s", msg ? msg : "");
    c->done(c->opaque, &r);
    free(c);
}

/* The snapshot list (a JSON array, or NULL) of the first snapshotted node in a
 * query-named-block-nodes answer: internal snapshots span the VM's disks, and the first
 * holds the VM state. */
static json_object *first_node_snapshots(struct bridge_backend *q, json_object *ret)
{
    for (size_t i = 0; i < jarray_len(ret); i++) {
        json_object *node = json_object_array_get_idx(ret, i), *name, *image, *snaps;
        if (!json_object_object_get_ex(node, "node-name", &name) ||
            strcmp(jstr(name), q->cfg->nodes[0]) ||
            !json_object_object_get_ex(node, "image", &image))
            continue;
        return json_object_object_get_ex(image, "snapshots", &snaps) ? snaps : NULL;
    }
    return NULL;
}

static void on_block_nodes(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    struct qmp_call *c = arg;
    json_object *snaps;

    if (err) {
        call_finish(c, err_status(err), err, 0);
        return;
    }
    snaps = first_node_snapshots(q, ret);
    for (size_t k = 0; snaps && k < jarray_len(snaps); k++) {
        json_object *s = json_object_array_get_idx(snaps, k), *sn;
        if (json_object_object_get_ex(s, "name", &sn) && !strcmp(jstr(sn), c->tag)) {
            call_finish(c, VMS_STATUS_OK, "", 0);
            return;
        }
    }
    call_finish(c, VMS_STATUS_ERR_NOT_FOUND, "no such snapshot", 0);
}

/* query-named-block-nodes for list_snapshots: the first snapshotted node's snapshot names. */
static void on_block_nodes_list(struct bridge_backend *q, json_object *ret, const char *err,
                                void *arg)
{
    struct qmp_call *c = arg;
    struct bridge_backend_result r = {.status = VMS_STATUS_OK};
    const char *names[VMS_STATES_MAX];
    unsigned n_names = 0;
    json_object *snaps;

    if (err) {
        call_finish(c, err_status(err), err, 0);
        return;
    }
    snaps = first_node_snapshots(q, ret);
    for (size_t k = 0; snaps && k < jarray_len(snaps) && n_names < VMS_STATES_MAX; k++) {
        json_object *s = json_object_array_get_idx(snaps, k), *sn;
        if (json_object_object_get_ex(s, "name", &sn))
            names[n_names++] = jstr(sn);
    }
    r.snapshots = names;
    r.n_snapshots = n_names;
    c->done(c->opaque, &r);
    free(c);
}

static struct qmp_call *call_new(bridge_backend_done_fn done, void *opaque)
{
    struct qmp_call *c = calloc(1, sizeof(*c));
    if (c) {
        c->done = done;
        c->opaque = opaque;
    }
    return c;
}

static int qmp_has_snapshot(struct bridge_backend *q, const char *tag, bridge_backend_done_fn done,
                            void *opaque)
{
    struct qmp_call *c = call_new(done, opaque);

    if (!c)
        return -1;
    snprintf(c->tag, sizeof(c->tag), "%s", tag);
    if (qmp_command(q, "query-named-block-nodes", NULL, qmp_timeout(q), on_block_nodes, c) < 0) {
        free(c);
        return -1;
    }
    return 0;
}

/* ---- memory hotplug (virtio-mem) ---- */

#define HOTPLUG_POLL_S   0.2
#define HOTPLUG_SETTLE_S 3.0
#define HOTPLUG_BLOCK    (2ull << 20) /* virtio-mem's default block size on x86-64 */

static void hotplug_finish(struct bridge_backend *q, enum vms_status st, const char *why)
{
    struct qmp_call *c = q->hp.c;
    struct bridge_backend_result r = {.status = st, .base_bytes = q->hp.base};

    if (!c)
        return;
    q->hp.c = NULL;
    r.mem_bytes = q->hp.base + q->hp.size;
    r.bytes = c->bytes;
    snprintf(r.message, sizeof(r.message), "%s", why ? why : "");
    vms_info(vmname(q), NULL, "qmp: %s plugged %llu of %llu bytes (boot %llu)%s%s", c->tag,
             (unsigned long long)q->hp.size, (unsigned long long)c->bytes,
             (unsigned long long)q->hp.base, why ? ": " : "", why ? why : "");
    c->done(c->opaque, &r);
    free(c);
}

static void on_hotplug_size(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    uint64_t size;
    (void)arg;

    q->hp.asking = 0;
    if (!q->hp.c)
        return;
    if (err) {
        hotplug_finish(q, err_status(err), err);
        return;
    }
    size = (uint64_t)json_object_get_int64(ret);
    if (size != q->hp.size) {
        q->hp.size = size;
        q->hp.last_change = q->now;
    }
    if (size == q->hp.c->bytes)
        hotplug_finish(q, VMS_STATUS_OK, NULL);
}

static void hotplug_poll(struct bridge_backend *q)
{
    json_object *args;

    if (q->hp.asking)
        return;
    if (q->now - q->hp.last_change >= HOTPLUG_SETTLE_S || q->now >= q->hp.deadline) {
        /* the guest plugs what it can (it may lack memory for its memmap): report that */
        hotplug_finish(q, VMS_STATUS_OK, "the guest stopped short of the requested size");
        return;
    }
    q->hp.next_poll = q->now + HOTPLUG_POLL_S;
    args = json_object_new_object();
    json_object_object_add(args, "path", json_object_new_string(q->hp.c->tag));
    json_object_object_add(args, "property", json_object_new_string("size"));
    if (qmp_command(q, "qom-get", args, qmp_timeout(q), on_hotplug_size, NULL) == 0)
        q->hp.asking = 1;
}

static void on_hotplug_set(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    (void)ret;
    (void)arg;
    if (!q->hp.c)
        return;
    if (err) {
        hotplug_finish(q, err_status(err), err);
        return;
    }
    q->hp.last_change = q->now;
    hotplug_poll(q);
}

static void on_hotplug_base(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    struct qmp_call *c = q->hp.c;
    json_object *base, *args;
    uint64_t total = c ? c->bytes : 0; /* until now: the total size asked for */
    (void)arg;

    if (!c)
        return;
    if (err || !json_object_object_get_ex(ret, "base-memory", &base)) {
        hotplug_finish(q, err ? err_status(err) : VMS_STATUS_ERR_BACKEND,
                       err ? err : "no base-memory in query-memory-size-summary");
        return;
    }
    q->hp.base = (uint64_t)json_object_get_int64(base);
    c->bytes = total > q->hp.base
                   ? (total - q->hp.base + HOTPLUG_BLOCK - 1) / HOTPLUG_BLOCK * HOTPLUG_BLOCK
                   : 0;
    args = json_object_new_object();
    json_object_object_add(args, "path", json_object_new_string(c->tag));
    json_object_object_add(args, "property", json_object_new_string("requested-size"));
    json_object_object_add(args, "value", json_object_new_int64((int64_t)c->bytes));
    if (qmp_command(q, "qom-set", args, qmp_timeout(q), on_hotplug_set, NULL) < 0)
        hotplug_finish(q, VMS_STATUS_ERR_UNAVAILABLE, "QMP unavailable");
}

static int qmp_set_hotplug(struct bridge_backend *q, const char *device, uint64_t bytes,
                           bridge_backend_done_fn done, void *opaque)
{
    struct qmp_call *c;

    if (q->hp.c || strlen(device) + sizeof("/machine/peripheral/") > sizeof(c->tag))
        return -1;
    c = call_new(done, opaque);
    if (!c)
        return -1;
    snprintf(c->tag, sizeof(c->tag), "/machine/peripheral/%s", device);
    c->bytes = bytes;
    q->hp.c = c;
    q->hp.size = 0;
    q->hp.asking = 0;
    q->hp.last_change = 0; /* no polling until requested-size is set */
    q->hp.deadline = q->now + (q->cfg->job_timeout ? q->cfg->job_timeout : 120);
    if (qmp_command(q, "query-memory-size-summary", NULL, qmp_timeout(q), on_hotplug_base, NULL) <
        0) {
        q->hp.c = NULL;
        free(c);
        return -1;
    }
    return 0;
}

static int qmp_list_snapshots(struct bridge_backend *q, bridge_backend_done_fn done, void *opaque)
{
    struct qmp_call *c = call_new(done, opaque);

    if (!c)
        return -1;
    if (qmp_command(q, "query-named-block-nodes", NULL, qmp_timeout(q), on_block_nodes_list, c) <
        0) {
        free(c);
        return -1;
    }
    return 0;
}

/* query_memory's answer: @mem, with the boot size (query-memory-size-summary @summary, may be
 * NULL), the vCPUs and the version learnt on connect. */
static void memory_finish(struct bridge_backend *q, struct qmp_call *c, uint64_t mem,
                          json_object *summary)
{
    struct bridge_backend_result r = {.status = VMS_STATUS_OK, .mem_bytes = mem, .vcpus = q->vcpus};
    json_object *base;

    if (summary && json_object_object_get_ex(summary, "base-memory", &base))
        r.base_bytes = (uint64_t)json_object_get_int64(base);
    snprintf(r.hypervisor_version, sizeof(r.hypervisor_version), "%s", q->hv_version);
    c->done(c->opaque, &r);
    free(c);
}

static void on_memory_summary(struct bridge_backend *q, json_object *ret, const char *err,
                              void *arg)
{
    struct qmp_call *c = arg;
    json_object *base, *plugged;
    uint64_t mem = 0;

    if (err) {
        call_finish(c, err_status(err), err, 0);
        return;
    }
    if (json_object_object_get_ex(ret, "base-memory", &base))
        mem += (uint64_t)json_object_get_int64(base);
    if (json_object_object_get_ex(ret, "plugged-memory", &plugged))
        mem += (uint64_t)json_object_get_int64(plugged);
    memory_finish(q, c, mem, ret);
}

/* query_memory with a balloon: its actual size (c->bytes) plus the hot-plugged memory. */
static void on_memory_plugged(struct bridge_backend *q, json_object *ret, const char *err,
                              void *arg)
{
    struct qmp_call *c = arg;
    json_object *plugged;
    uint64_t mem = c->bytes;

    if (!err && json_object_object_get_ex(ret, "plugged-memory", &plugged))
        mem += (uint64_t)json_object_get_int64(plugged);
    memory_finish(q, c, mem, err ? NULL : ret);
}

static void on_query_balloon(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    struct qmp_call *c = arg;
    json_object *actual;

    if (!err && json_object_object_get_ex(ret, "actual", &actual)) {
        /* the balloon covers the boot memory; hot-plugged memory (virtio-mem) comes on top */
        c->bytes = (uint64_t)json_object_get_int64(actual);
        if (qmp_command(q, "query-memory-size-summary", NULL, qmp_timeout(q), on_memory_plugged,
                        c) < 0)
            memory_finish(q, c, c->bytes, NULL);
        return;
    }
    if (err && (!strcmp(err, "lost") || !strcmp(err, "timeout"))) {
        call_finish(c, err_status(err), err, 0);
        return;
    }
    /* no balloon device: the base size */
    if (qmp_command(q, "query-memory-size-summary", NULL, qmp_timeout(q), on_memory_summary, c) < 0)
        call_finish(c, VMS_STATUS_ERR_UNAVAILABLE, "QMP unavailable", 0);
}

static int qmp_query_memory(struct bridge_backend *q, bridge_backend_done_fn done, void *opaque)
{
    struct qmp_call *c = call_new(done, opaque);

    if (!c)
        return -1;
    if (qmp_command(q, "query-balloon", NULL, qmp_timeout(q), on_query_balloon, c) < 0) {
        free(c);
        return -1;
    }
    return 0;
}

static void balloon_finish(struct bridge_backend *q, const char *why)
{
    struct qmp_call *c = q->bal.c;
    char msg[VMS_STR_MAX + 1] = "";

    if (!c)
        return;
    q->bal.c = NULL;
    bridge_balloon_message(msg, sizeof(msg), why, q->bal.actual, c->bytes);
    vms_info(vmname(q), NULL, "qmp: balloon settled at %llu bytes (target %llu)%s%s",
             (unsigned long long)q->bal.actual, (unsigned long long)c->bytes, msg[0] ? ": " : "",
             msg);
    call_finish(c, VMS_STATUS_OK, msg, q->bal.actual);
}

static void balloon_moved(struct bridge_backend *q, uint64_t actual)
{
    if (!q->bal.c)
        return;
    if (actual != q->bal.actual)
        q->bal.last_change = q->now;
    q->bal.actual = actual;
    if (bridge_balloon_near(actual, q->bal.c->bytes))
        balloon_finish(q, NULL);
}

static void on_balloon_now(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    json_object *actual;
    (void)arg;
    if (!err && json_object_object_get_ex(ret, "actual", &actual))
        balloon_moved(q, (uint64_t)json_object_get_int64(actual));
}

/* QEMU sends BALLOON_CHANGE at most once a second: read the size itself before reporting */
static void on_balloon_last(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    on_balloon_now(q, ret, err, arg);
    balloon_finish(q, NULL);
}

static void balloon_settle(struct bridge_backend *q)
{
    if (q->bal.asking)
        return;
    q->bal.asking = 1;
    if (qmp_command(q, "query-balloon", NULL, qmp_timeout(q), on_balloon_last, NULL) < 0)
        balloon_finish(q, NULL);
}

static void on_balloon(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    struct qmp_call *c = arg;
    (void)ret;
    if (err) {
        call_finish(c, err_status(err), err, 0);
        return;
    }
    balloon_finish(q, "superseded by a newer set-memory"); /* requests run one at a time */
    q->bal.c = c;
    q->bal.asking = 0;
    q->bal.actual = 0;
    q->bal.last_change = q->now;
    q->bal.deadline = q->now + BRIDGE_BALLOON_MAX_S;
    qmp_command(q, "query-balloon", NULL, qmp_timeout(q), on_balloon_now, NULL);
}

static int qmp_set_balloon(struct bridge_backend *q, uint64_t bytes, bridge_backend_done_fn done,
                           void *opaque)
{
    struct qmp_call *c = call_new(done, opaque);
    json_object *args;

    if (!c)
        return -1;
    c->bytes = bytes;
    args = json_object_new_object();
    json_object_object_add(args, "value", json_object_new_int64((int64_t)bytes));
    if (qmp_command(q, "balloon", args, qmp_timeout(q), on_balloon, c) < 0) {
        free(c);
        return -1;
    }
    return 0;
}

/* ---- run state (I/O-error pauses, ioerror.c) ---- */

static void on_block_io_error(struct bridge_backend *q, json_object *data)
{
    char node[BRIDGE_NODE_NAME_MAX], reason[VMS_STR_MAX + 1], op[16], action[16];
    json_object *ns;
    const char *n = str_member(data, "node-name");

    if (!n[0])
        n = str_member(data, "device");
    sanitize_text(node, sizeof(node), n);
    sanitize_text(reason, sizeof(reason), str_member(data, "reason"));
    sanitize_text(op, sizeof(op), str_member(data, "operation"));
    sanitize_text(action, sizeof(action), str_member(data, "action"));
    vms_info(vmname(q), NULL, "qmp: BLOCK_IO_ERROR node=%s op=%s reason=%s action=%s", node, op,
             reason, action);
    if (q->hooks->io_error)
        q->hooks->io_error(
            q->opaque, node, op, reason,
            json_object_object_get_ex(data, "nospace", &ns) && json_object_get_boolean(ns), action);
}

static void on_query_status(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    struct qmp_call *c = arg;
    struct bridge_backend_result r = {.status = err ? VMS_STATUS_ERR_BACKEND : VMS_STATUS_OK};
    (void)q;

    if (err)
        snprintf(r.message, sizeof(r.message), "%s", err);
    else
        sanitize_text(r.run_status, sizeof(r.run_status), str_member(ret, "status"));
    c->done(c->opaque, &r);
    free(c);
}

static int qmp_query_status(struct bridge_backend *q, bridge_backend_done_fn done, void *opaque)
{
    struct qmp_call *c = call_new(done, opaque);

    if (!c)
        return -1;
    if (qmp_command(q, "query-status", NULL, qmp_timeout(q), on_query_status, c) < 0) {
        free(c);
        return -1;
    }
    return 0;
}

static void on_query_block(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    struct qmp_call *c = arg;
    struct bridge_backend_result r = {.status = err ? VMS_STATUS_ERR_BACKEND : VMS_STATUS_OK};
    size_t n = err ? 0 : jarray_len(ret);
    (void)q;

    if (err)
        snprintf(r.message, sizeof(r.message), "%s", err);
    for (size_t i = 0; i < n && r.n_io < 4; i++) {
        json_object *dev = json_object_array_get_idx(ret, i), *ins;
        const char *st = str_member(dev, "io-status"), *node = "";
        if (!st[0] || !strcmp(st, "ok"))
            continue;
        if (json_object_object_get_ex(dev, "inserted", &ins))
            node = str_member(ins, "node-name");
        if (!node[0])
            node = str_member(dev, "device");
        sanitize_text(r.io_node[r.n_io], sizeof(r.io_node[0]), node);
        sanitize_text(r.io_status[r.n_io], sizeof(r.io_status[0]), st);
        r.n_io++;
    }
    c->done(c->opaque, &r);
    free(c);
}

static int qmp_query_block(struct bridge_backend *q, bridge_backend_done_fn done, void *opaque)
{
    struct qmp_call *c = call_new(done, opaque);

    if (!c)
        return -1;
    if (qmp_command(q, "query-block", NULL, qmp_timeout(q), on_query_block, c) < 0) {
        free(c);
        return -1;
    }
    return 0;
}

/* stop/cont answered: QEMU emits the STOP/RESUME event before the command's reply, so the
 * event's timestamp is known here (0 when the VM was already in that state). */
static void on_run_state(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    struct qmp_call *c = arg;
    struct bridge_backend_result r = {.status = err ? VMS_STATUS_ERR_BACKEND : VMS_STATUS_OK};
    (void)ret;
    snprintf(r.message, sizeof(r.message), "%s", err ? err : "");
    r.event_us = c->bytes ? q->stop_event_us : q->resume_event_us;
    c->done(c->opaque, &r);
    free(c);
}

/* Send stop (@stop 1) or cont (@mode SEND_PRIMED: all but its last byte); the reply carries
 * the event's timestamp. */
static int run_state_command(struct bridge_backend *q, int stop, bridge_backend_done_fn done,
                             void *opaque, enum qmp_send_mode mode)
{
    struct qmp_call *c = call_new(done, opaque);

    if (!c)
        return -1;
    c->bytes = (uint64_t)stop;
    if (stop)
        q->stop_event_us = 0;
    else
        q->resume_event_us = 0;
    if (qmp_command_ex(q, stop ? "stop" : "cont", NULL, qmp_timeout(q), on_run_state, c, -1, mode) <
        0) {
        free(c);
        return -1;
    }
    return 0;
}

static int qmp_cont(struct bridge_backend *q, bridge_backend_done_fn done, void *opaque)
{
    return run_state_command(q, 0, done, opaque, SEND_NOW);
}

static int qmp_stop(struct bridge_backend *q, bridge_backend_done_fn done, void *opaque)
{
    return run_state_command(q, 1, done, opaque, SEND_NOW);
}

static int qmp_prime_run_state(struct bridge_backend *q, int stop, bridge_backend_done_fn done,
                               void *opaque)
{
    return run_state_command(q, stop, done, opaque, SEND_PRIMED);
}

/* A withdrawn command's refusal: its caller was told it would hear nothing. */
static void on_withdrawn(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    (void)ret;
    vms_debug(vmname(q), NULL, "qmp: the withdrawn command was refused as meant (%s)",
              err ? err : "no error?");
    free(arg);
}

static int qmp_release_run_state(struct bridge_backend *q, int go)
{
    /* withdrawn: an argument stop and cont do not take, so QEMU refuses the command */
    static const char withdraw[] = ",\"arguments\":{\"vmstate-withdrawn\":true}}\n";
    struct qmp_cmd *c;
    int rc;

    if (!q->primed.active)
        return -1;
    for (c = q->cmds; c; c = c->next) {
        if (c->waiting)
            c->deadline = q->now + c->timeout_s;
        c->waiting = 0;
        if (c->id == q->primed.id && !go)
            c->fn = on_withdrawn;
    }
    rc = go ? tx_append(q, "}\n", 2) : tx_append(q, withdraw, sizeof(withdraw) - 1);
    if (rc == 0 && q->primed.held_len)
        rc = tx_append(q, q->primed.held, q->primed.held_len);
    q->primed.active = 0;
    q->primed.held_len = 0;
    if (rc < 0) {
        q->broken = 1; /* the monitor holds half a command: start over */
        return -1;
    }
    tx_flush(q);
    return 0;
}

static int qmp_kill(struct bridge_backend *q, int force)
{
    struct ucred cr;
    socklen_t len = sizeof(cr);

    if (!force)
        return qmp_command(q, "quit", NULL, qmp_timeout(q), ignore_reply, "quit");
    if (q->watch.fd < 0 || getsockopt(q->watch.fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0 ||
        cr.pid <= 0)
        return -1;
    vms_warn(vmname(q), NULL, "qmp: SIGKILL to QEMU pid %ld", (long)cr.pid);
    return kill(cr.pid, SIGKILL);
}

/* ---- checkpoints: migration to and from an fd ---- */

#define MIG_FDNAME "vms-ckpt"

static void mig_finish(struct bridge_backend *q, enum vms_status st, const char *msg)
{
    struct bridge_backend_result r = {.status = st};
    bridge_backend_done_fn done = q->mig.done;
    void *opaque = q->mig.opaque;

    snprintf(r.message, sizeof(r.message), "%s", msg ? msg : "");
    if (q->mig.fd >= 0)
        close(q->mig.fd);
    memset(&q->mig, 0, sizeof(q->mig));
    q->mig.fd = -1;
    if (done)
        done(opaque, &r);
}

static void mig_step(struct bridge_backend *q, json_object *ret, const char *err, void *arg);

/* Send the chain's next command; the last one (migrate) leaves us waiting for the event. */
static void mig_next(struct bridge_backend *q)
{
    json_object *a = NULL, *caps, *c;
    const char *cmd = NULL;
    int fd = -1;
    int rc;

    switch (q->mig.step) {
    case 0:
        cmd = "getfd";
        a = json_object_new_object();
        json_object_object_add(a, "fdname", json_object_new_string(MIG_FDNAME));
        fd = q->mig.fd;
        break;
    case 1:
        cmd = "migrate-set-capabilities";
        a = json_object_new_object();
        caps = json_object_new_array();
        c = json_object_new_object();
        json_object_object_add(c, "capability", json_object_new_string("events"));
        json_object_object_add(c, "state", json_object_new_boolean(1));
        json_object_array_add(caps, c);
        /* RAM in a shared file stays where it is: only device state travels */
        c = json_object_new_object();
        json_object_object_add(c, "capability", json_object_new_string("x-ignore-shared"));
        json_object_object_add(c, "state", json_object_new_boolean(q->mig.zero_copy));
        json_object_array_add(caps, c);
        json_object_object_add(a, "capabilities", caps);
        break;
    case 2:
        if (q->mig.incoming) {
            cmd = "migrate-incoming";
            a = json_object_new_object();
            json_object_object_add(a, "uri", json_object_new_string("fd:" MIG_FDNAME));
        } else {
            /* the default 128 MiB/s would make a copy suspend crawl */
            cmd = "migrate-set-parameters";
            a = json_object_new_object();
            json_object_object_add(
                a, "max-bandwidth",
                json_object_new_int64(
                    (int64_t)(q->mig.max_bandwidth ? q->mig.max_bandwidth : (1ull << 40))));
        }
        break;
    case 3:
        cmd = "stop"; /* a checkpoint of a stopped VM: nothing dirties RAM while it is written */
        break;
    case 4:
        cmd = "migrate";
        a = json_object_new_object();
        json_object_object_add(a, "uri", json_object_new_string("fd:" MIG_FDNAME));
        break;
    default:
        return; /* waiting for MIGRATION */
    }
    rc = qmp_command_fd(q, cmd, a, q->cfg->job_timeout, mig_step, NULL, fd);
    if (fd >= 0 && rc == 0) {
        close(q->mig.fd); /* QEMU has its own copy now */
        q->mig.fd = -1;
    }
    if (rc < 0)
        mig_finish(q, VMS_STATUS_ERR_UNAVAILABLE, "cannot send to QEMU");
}

static void mig_step(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    (void)ret;
    (void)arg;
    if (!q->mig.active)
        return;
    if (err) {
        char msg[VMS_STR_MAX + 1];
        snprintf(msg, sizeof(msg), "checkpoint step %d: %s", q->mig.step, err);
        mig_finish(q, err_status(err), msg);
        return;
    }
    q->mig.step++;
    if (q->mig.incoming && q->mig.step > 2)
        q->mig.step = 5; /* loading: migrate-incoming was the last command */
    mig_next(q);
}

static void on_migration_event(struct bridge_backend *q, json_object *data)
{
    const char *st = str_member(data, "status");

    if (!q->mig.active || q->mig.step < 5)
        return;
    if (!strcmp(st, "completed"))
        mig_finish(q, VMS_STATUS_OK, "");
    else if (!strcmp(st, "failed") || !strcmp(st, "cancelled"))
        mig_finish(q, VMS_STATUS_ERR_BACKEND,
                   q->mig.incoming ? "loading the checkpoint failed"
                                   : "writing the checkpoint failed");
}

static int mig_begin(struct bridge_backend *q, int fd, int incoming, int zero_copy,
                     uint64_t max_bandwidth, bridge_backend_done_fn done, void *opaque)
{
    int own;

    if (q->state != Q_READY || q->mig.active || q->job.phase != J_IDLE || q->tx_len)
        return -1;
    own = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (own < 0)
        return -1;
    memset(&q->mig, 0, sizeof(q->mig));
    q->mig.active = 1;
    q->mig.incoming = incoming;
    q->mig.zero_copy = zero_copy;
    q->mig.max_bandwidth = max_bandwidth;
    q->mig.fd = own;
    q->mig.done = done;
    q->mig.opaque = opaque;
    q->mig.deadline = q->now + q->cfg->job_timeout;
    mig_next(q);
    return 0;
}

static int qmp_checkpoint(struct bridge_backend *q, int fd, int zero_copy, uint64_t max_bandwidth,
                          bridge_backend_done_fn done, void *opaque)
{
    return mig_begin(q, fd, 0, zero_copy, max_bandwidth, done, opaque);
}

static int qmp_load_checkpoint(struct bridge_backend *q, int fd, int zero_copy,
                               bridge_backend_done_fn done, void *opaque)
{
    return mig_begin(q, fd, 1, zero_copy, 0, done, opaque);
}

static void on_powerdown(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    (void)q;
    (void)ret;
    call_finish(arg, err ? err_status(err) : VMS_STATUS_OK, err, 0);
}

static int qmp_powerdown(struct bridge_backend *q, bridge_backend_done_fn done, void *opaque)
{
    struct qmp_call *c = call_new(done, opaque);

    if (!c)
        return -1;
    if (qmp_command(q, "system_powerdown", NULL, qmp_timeout(q), on_powerdown, c) < 0) {
        free(c);
        return -1;
    }
    return 0;
}

/* query-chardev: a server socket without a client is named "disconnected:..." */
static void on_query_chardev(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    struct qmp_call *c = arg;
    struct bridge_backend_result r = {.status = VMS_STATUS_ERR_NOT_FOUND};
    (void)q;

    if (err) {
        call_finish(c, err_status(err), err, 0);
        return;
    }
    for (size_t i = 0; i < jarray_len(ret); i++) {
        json_object *ch = json_object_array_get_idx(ret, i);
        if (strcmp(str_member(ch, "label"), c->tag))
            continue;
        r.status = VMS_STATUS_OK;
        r.connected = strncmp(str_member(ch, "filename"), "disconnected:", 13) != 0;
        break;
    }
    c->done(c->opaque, &r);
    free(c);
}

static int qmp_query_chardev(struct bridge_backend *q, const char *id, bridge_backend_done_fn done,
                             void *opaque)
{
    struct qmp_call *c = call_new(done, opaque);

    if (!c)
        return -1;
    snprintf(c->tag, sizeof(c->tag), "%s", id);
    if (qmp_command(q, "query-chardev", NULL, qmp_timeout(q), on_query_chardev, c) < 0) {
        free(c);
        return -1;
    }
    return 0;
}

/* qom-get /machine rtc-time: a struct tm (QEMU's own, from a device the guest programs),
 * each field checked before it becomes a time */
static void on_query_rtc(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    static const struct {
        const char *key;
        int lo, hi;
    } fields[] = {{"tm_year", 70, 1100}, {"tm_mon", 0, 11}, {"tm_mday", 1, 31},
                  {"tm_hour", 0, 23},    {"tm_min", 0, 59}, {"tm_sec", 0, 60}};
    struct qmp_call *c = arg;
    struct bridge_backend_result r = {.status = VMS_STATUS_OK};
    int v[6];
    struct tm tm;
    (void)q;

    if (err) {
        call_finish(c, err_status(err), err, 0);
        return;
    }
    for (size_t i = 0; i < 6; i++) {
        json_object *f;
        if (!json_object_is_type(ret, json_type_object) ||
            !json_object_object_get_ex(ret, fields[i].key, &f) ||
            !json_object_is_type(f, json_type_int) || json_object_get_int64(f) < fields[i].lo ||
            json_object_get_int64(f) > fields[i].hi) {
            call_finish(c, VMS_STATUS_ERR_INTERNAL, "rtc-time: not a time", 0);
            return;
        }
        v[i] = (int)json_object_get_int64(f);
    }
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = v[0];
    tm.tm_mon = v[1];
    tm.tm_mday = v[2];
    tm.tm_hour = v[3];
    tm.tm_min = v[4];
    tm.tm_sec = v[5];
    r.rtc_s = (int64_t)timegm(&tm);
    c->done(c->opaque, &r);
    free(c);
}

static int qmp_query_rtc(struct bridge_backend *q, bridge_backend_done_fn done, void *opaque)
{
    struct qmp_call *c = call_new(done, opaque);
    json_object *args = json_object_new_object();

    if (!c) {
        json_object_put(args);
        return -1;
    }
    json_object_object_add(args, "path", json_object_new_string("/machine"));
    json_object_object_add(args, "property", json_object_new_string("rtc-time"));
    if (qmp_command(q, "qom-get", args, qmp_timeout(q), on_query_rtc, c) < 0) {
        free(c);
        return -1;
    }
    return 0;
}

/* ---- input ---- */

/* query-cpus-fast on connect: one entry per vCPU (hostinfo's vcpus). */
static void on_cpus(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    (void)arg;
    q->vcpus = !err && json_object_is_type(ret, json_type_array)
                   ? (unsigned)json_object_array_length(ret)
                   : 0;
}

static void on_capabilities(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    (void)ret;
    (void)arg;
    if (err) {
        vms_err(vmname(q), NULL, "qmp: qmp_capabilities failed: %s", err);
        q->broken = 1;
        return;
    }
    q->state = Q_READY;
    q->backoff_ms = q->backoff_min;
    vms_info(vmname(q), NULL, "qmp: connected to %s", q->cfg->qmp);
    if (qmp_command(q, "query-cpus-fast", NULL, qmp_timeout(q), on_cpus, NULL) < 0)
        q->vcpus = 0;
    if (q->job.phase != J_IDLE)
        job_recover_start(q);
    orphan_query(q); /* it may have ended while QMP was away */
    if (q->hooks->ready)
        q->hooks->ready(q->opaque);
}

static void handle_reply(struct bridge_backend *q, json_object *o, uint64_t id)
{
    struct qmp_cmd **pp, *c;
    json_object *ret = NULL, *error, *desc;
    char err[VMS_STR_MAX + 1];

    for (pp = &q->cmds; *pp && (*pp)->id != id; pp = &(*pp)->next)
        ;
    if (!*pp) {
        vms_debug(vmname(q), NULL, "qmp: reply to unknown id %llu", (unsigned long long)id);
        return;
    }
    c = *pp;
    *pp = c->next;
    if (json_object_object_get_ex(o, "error", &error)) {
        if (!json_object_object_get_ex(error, "desc", &desc))
            desc = NULL;
        sanitize_text(err, sizeof(err), desc ? json_object_get_string(desc) : "QMP error");
        if (!err[0])
            strcpy(err, "QMP error");
        c->fn(q, NULL, err, c->arg);
    } else {
        json_object_object_get_ex(o, "return", &ret);
        c->fn(q, ret, NULL, c->arg);
    }
    free(c);
}

/* The greeting's version ({"qemu": {major, minor, micro}, "package"}) as "QEMU M.m.u". */
static void greeting_version(struct bridge_backend *q, json_object *greeting)
{
    json_object *version, *qemu, *part;
    long long n[3] = {0, 0, 0};
    static const char *const keys[] = {"major", "minor", "micro"};

    q->hv_version[0] = '\0';
    if (!json_object_object_get_ex(greeting, "version", &version) ||
        !json_object_object_get_ex(version, "qemu", &qemu))
        return;
    for (int i = 0; i < 3; i++)
        if (json_object_object_get_ex(qemu, keys[i], &part))
            n[i] = json_object_get_int64(part);
    snprintf(q->hv_version, sizeof(q->hv_version), "QEMU %lld.%lld.%lld", n[0], n[1], n[2]);
}

static void handle_line(struct bridge_backend *q, const char *line)
{
    json_object *o = json_tokener_parse(line), *v;

    if (!o || !json_object_is_type(o, json_type_object)) {
        vms_warn(vmname(q), NULL, "qmp: unparsable line dropped");
        json_object_put(o);
        return;
    }
    if (q->state == Q_GREETING) {
        if (json_object_object_get_ex(o, "QMP", &v)) {
            greeting_version(q, v);
            q->state = Q_CAPS;
            if (qmp_command(q, "qmp_capabilities", NULL, qmp_timeout(q), on_capabilities, NULL) < 0)
                q->broken = 1;
        }
    } else if (json_object_object_get_ex(o, "event", &v)) {
        const char *name = jstr(v);
        json_object *data = NULL;
        json_object_object_get_ex(o, "data", &data);
        vms_debug(vmname(q), NULL, "qmp: event %s", name);
        if (!strcmp(name, "JOB_STATUS_CHANGE"))
            on_job_event(q, data);
        if (!strcmp(name, "MIGRATION"))
            on_migration_event(q, data);
        if (!strcmp(name, "BLOCK_IO_ERROR"))
            on_block_io_error(q, data);
        if (!strcmp(name, "STOP") || !strcmp(name, "RESUME")) {
            json_object *ts, *sec, *usec;
            int64_t us = 0;
            if (json_object_object_get_ex(o, "timestamp", &ts) &&
                json_object_object_get_ex(ts, "seconds", &sec) &&
                json_object_object_get_ex(ts, "microseconds", &usec)) {
                int64_t s = json_object_get_int64(sec), u = json_object_get_int64(usec);
                /* QEMU's wall-clock stamp; anything out of range is not one (0: unknown) */
                if (s >= 0 && s < ((int64_t)1 << 40) && u >= 0 && u < 1000000)
                    us = s * 1000000 + u;
            }
            if (name[0] == 'S')
                q->stop_event_us = us;
            else
                q->resume_event_us = us;
        }
        if (!strcmp(name, "BALLOON_CHANGE") && json_object_object_get_ex(data, "actual", &v))
            balloon_moved(q, (uint64_t)json_object_get_int64(v));
        if (q->hooks->event)
            q->hooks->event(q->opaque, name);
    } else if (json_object_object_get_ex(o, "id", &v)) {
        handle_reply(q, o, (uint64_t)json_object_get_int64(v));
    }
    json_object_put(o);
}

static void qmp_readable(struct bridge_backend *q)
{
    for (int rounds = 0; rounds < 16; rounds++) {
        char *nl;
        ssize_t n;

        if (q->rx_cap - q->rx_len < 4096) {
            size_t cap = q->rx_cap ? q->rx_cap * 2 : 16384;
            char *g;
            if (cap > QMP_RX_MAX + 1) {
                qmp_disconnect(q, "a QMP line is over the size cap");
                return;
            }
            g = realloc(q->rx, cap);
            if (!g) {
                qmp_disconnect(q, "out of memory");
                return;
            }
            q->rx = g;
            q->rx_cap = cap;
        }
        n = read(q->watch.fd, q->rx + q->rx_len, q->rx_cap - q->rx_len - 1);
        if (n == 0) {
            qmp_disconnect(q, "QEMU closed the QMP socket");
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                qmp_disconnect(q, strerror(errno));
            return;
        }
        q->rx_len += (size_t)n;
        q->rx[q->rx_len] = '\0';
        while ((nl = memchr(q->rx, '\n', q->rx_len))) {
            size_t used = (size_t)(nl - q->rx) + 1;
            *nl = '\0';
            handle_line(q, q->rx);
            if (q->watch.fd < 0) /* disconnected by a handler */
                return;
            memmove(q->rx, q->rx + used, q->rx_len - used);
            q->rx_len -= used;
            q->rx[q->rx_len] = '\0';
        }
    }
}

static void qmp_io(struct bridge_watch *w, uint32_t revents)
{
    struct bridge_backend *q = w->opaque;

    if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))
        qmp_readable(q);
    if (q->watch.fd >= 0 && (revents & EPOLLOUT))
        tx_flush(q);
}

/* ---- connection ---- */

static void fail_commands(struct bridge_backend *q, const char *why)
{
    while (q->cmds) {
        struct qmp_cmd *c = q->cmds;
        q->cmds = c->next;
        c->fn(q, NULL, why, c->arg);
        free(c);
    }
}

static void qmp_disconnect(struct bridge_backend *q, const char *why)
{
    int was_ready = q->state == Q_READY;

    if (q->watch.fd >= 0) {
        int fd = q->watch.fd;
        bridge_watch_del(q->loop, &q->watch);
        close(fd);
        vms_warn(vmname(q), NULL, "qmp: disconnected: %s", why);
    }
    q->state = Q_DOWN;
    q->rx_len = 0;
    q->tx_len = 0;
    q->primed.active = 0; /* a new connection starts with a clean monitor */
    q->primed.held_len = 0;
    q->broken = 0;
    q->retry_at = q->now + q->backoff_ms / 1000.0;
    q->backoff_ms = q->backoff_ms * 2 > q->backoff_max ? q->backoff_max : q->backoff_ms * 2;
    if (q->job.phase != J_IDLE) {
        q->job.need_recover = 1;
        q->job.watched = 0; /* changes while we were away are lost: query-jobs judges */
    }
    fail_commands(q, "lost");
    if (q->mig.active) /* QEMU quits after a checkpoint only when told: this is a failure */
        mig_finish(q, VMS_STATUS_ERR_UNAVAILABLE, "QMP lost during the checkpoint");
    balloon_finish(q, "QMP lost while the balloon moved");
    hotplug_finish(q, VMS_STATUS_ERR_UNAVAILABLE, "QMP lost while memory was plugged");
    if (was_ready && q->hooks->lost)
        q->hooks->lost(q->opaque);
}

static void qmp_connect(struct bridge_backend *q)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd;

    if (strlen(q->cfg->qmp) >= sizeof(sa.sun_path)) {
        vms_err(vmname(q), NULL, "qmp: socket path too long: %s", q->cfg->qmp);
        q->retry_at = q->now + 3600;
        return;
    }
    strcpy(sa.sun_path, q->cfg->qmp);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        bridge_watch_add(q->loop, &q->watch, fd, EPOLLIN) < 0) {
        vms_debug(vmname(q), NULL, "qmp: connect %s: %s", q->cfg->qmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        q->retry_at = q->now + q->backoff_ms / 1000.0;
        q->backoff_ms = q->backoff_ms * 2 > q->backoff_max ? q->backoff_max : q->backoff_ms * 2;
        return;
    }
    q->state = Q_GREETING;
    q->greet_deadline = q->now + (q->cfg->command_timeout ? q->cfg->command_timeout : 10);
}

static void qmp_tick(struct bridge_backend *q, double now)
{
    struct qmp_cmd **pp;

    q->now = now;
    if (q->broken) {
        qmp_disconnect(q, "write failed");
        return;
    }
    if (q->state == Q_DOWN) {
        if (now >= q->retry_at)
            qmp_connect(q);
        return;
    }
    if (q->state == Q_GREETING && now >= q->greet_deadline) {
        /* QEMU's monitor serves one client; it queues the next without a word */
        qmp_disconnect(q, "no greeting from QEMU (is another client holding the monitor?)");
        return;
    }
    for (pp = &q->cmds; *pp;) {
        struct qmp_cmd *c = *pp;
        if (now < c->deadline || c->waiting) {
            pp = &c->next;
            continue;
        }
        *pp = c->next;
        vms_warn(vmname(q), NULL, "qmp: command %llu timed out", (unsigned long long)c->id);
        c->fn(q, NULL, "timeout", c->arg);
        free(c);
        pp = &q->cmds; /* the callback may have changed the list */
    }
    if (q->bal.c && (now - q->bal.last_change >= BRIDGE_BALLOON_SETTLE_S || now >= q->bal.deadline))
        balloon_settle(q);
    if (q->hp.c && q->hp.last_change > 0 && now >= q->hp.next_poll)
        hotplug_poll(q);
    if (q->mig.active && now >= q->mig.deadline)
        mig_finish(q, VMS_STATUS_ERR_TIMEOUT, "the checkpoint did not finish in time");
    if (q->job.phase != J_IDLE && now >= q->job.deadline) {
        vms_err(vmname(q), NULL, "qmp: job %s timed out after %u s", q->job.job_id,
                q->cfg->job_timeout);
        orphan_adopt(q);
        job_finish(q, VMS_STATUS_ERR_TIMEOUT, "the hypervisor did not finish in time");
    }
}

static struct bridge_backend *qmp_open(const struct bridge_vm_config *cfg, struct bridge_loop *loop,
                                       unsigned reconnect_min_ms, unsigned reconnect_max_ms,
                                       const struct bridge_backend_hooks *hooks, void *opaque)
{
    struct bridge_backend *q = calloc(1, sizeof(*q));

    if (!q)
        return NULL;
    q->cfg = cfg;
    q->loop = loop;
    q->hooks = hooks;
    q->opaque = opaque;
    q->backoff_min = q->backoff_ms = reconnect_min_ms ? reconnect_min_ms : 200;
    q->backoff_max = reconnect_max_ms ? reconnect_max_ms : 5000;
    q->now = bridge_now();
    q->mig.fd = -1;
    bridge_watch_init(&q->watch, qmp_io, q);
    return q;
}

static void qmp_close(struct bridge_backend *q)
{
    if (!q)
        return;
    q->job.done = NULL;
    q->hooks = &(const struct bridge_backend_hooks){0};
    if (q->watch.fd >= 0) {
        int fd = q->watch.fd;
        bridge_watch_del(q->loop, &q->watch);
        close(fd);
    }
    while (q->cmds) { /* drop, without callbacks that would touch the caller */
        struct qmp_cmd *c = q->cmds;
        q->cmds = c->next;
        if (c->fn != ignore_reply && c->fn != on_job_started && c->fn != on_query_jobs &&
            c->fn != on_capabilities && c->fn != on_balloon_now && c->fn != on_balloon_last &&
            c->fn != mig_step && c->arg)
            free(c->arg); /* a struct qmp_call */
        free(c);
    }
    free(q->bal.c);
    free(q->hp.c);
    if (q->mig.fd >= 0)
        close(q->mig.fd);
    free(q->rx);
    free(q->tx);
    free(q->primed.held);
    free(q);
}

static void qmp_reconnect_policy(struct bridge_backend *q, unsigned min_ms, unsigned max_ms)
{
    q->backoff_min = min_ms ? min_ms : 200;
    q->backoff_max = max_ms > q->backoff_min ? max_ms : q->backoff_min;
    if (q->backoff_ms < q->backoff_min || q->backoff_ms > q->backoff_max)
        q->backoff_ms = q->backoff_min;
    if (q->state == Q_DOWN && q->retry_at > q->now + q->backoff_ms / 1000.0)
        q->retry_at = q->now;
}

static int qmp_is_ready(struct bridge_backend *q)
{
    return q->state == Q_READY;
}

/* ---- detaching a failed disk path (a storage-fault move) ---- */

#define DETACH_CHILDREN_MAX 8
#define DETACH_POLLS_MAX    2000

/* One detach: the node, its size, the nodes under it, the chain's step. */
struct qmp_detach {
    bridge_backend_done_fn done;
    void *opaque;
    char node[BRIDGE_NODE_NAME_MAX], ghost[BRIDGE_NODE_NAME_MAX + 8], job[BRIDGE_NODE_NAME_MAX + 8];
    char children[DETACH_CHILDREN_MAX][BRIDGE_NODE_NAME_MAX];
    unsigned n_children, next_child, polls;
    int64_t size;
    int step;
};

static void detach_step(struct bridge_backend *q, json_object *ret, const char *err, void *arg);

static void detach_finish(struct qmp_detach *d, enum vms_status st, const char *msg)
{
    struct bridge_backend_result r = {.status = st};
    snprintf(r.message, sizeof(r.message), "%s", msg ? msg : "");
    d->done(d->opaque, &r);
    free(d);
}

static int64_t int_of(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : -1;
}

/* The name of node @id in x-debug-query-block-graph's @nodes, or NULL. */
static const char *graph_name(json_object *nodes, int64_t id)
{
    for (size_t i = 0; i < json_object_array_length(nodes); i++) {
        json_object *n = json_object_array_get_idx(nodes, i);
        if (int_of(n, "id") == id)
            return str_member(n, "name");
    }
    return NULL;
}

/* x-debug-query-block-graph: the named nodes under @d->node (breadth first). */
static void detach_children(struct qmp_detach *d, json_object *graph)
{
    json_object *nodes, *edges;
    int64_t ids[DETACH_CHILDREN_MAX + 1];
    unsigned n_ids = 0;

    if (!graph || !json_object_object_get_ex(graph, "nodes", &nodes) ||
        !json_object_object_get_ex(graph, "edges", &edges))
        return;
    for (size_t i = 0; i < json_object_array_length(nodes) && !n_ids; i++) {
        json_object *n = json_object_array_get_idx(nodes, i);
        const char *name = str_member(n, "name");
        if (name && !strcmp(name, d->node))
            ids[n_ids++] = int_of(n, "id");
    }
    for (unsigned k = 0; k < n_ids; k++)
        for (size_t e = 0; e < json_object_array_length(edges); e++) {
            json_object *x = json_object_array_get_idx(edges, e);
            const char *name;
            if (int_of(x, "parent") != ids[k] || n_ids > DETACH_CHILDREN_MAX)
                continue;
            name = graph_name(nodes, int_of(x, "child"));
            ids[n_ids++] = int_of(x, "child");
            if (name && *name && d->n_children < DETACH_CHILDREN_MAX)
                snprintf(d->children[d->n_children++], sizeof(d->children[0]), "%s", name);
        }
}

/* query-named-block-nodes (flat): @d->node's virtual size. */
static void detach_size(struct qmp_detach *d, json_object *list)
{
    for (size_t i = 0; list && i < json_object_array_length(list); i++) {
        json_object *n = json_object_array_get_idx(list, i), *img;
        const char *name = str_member(n, "node-name");
        if (name && !strcmp(name, d->node) && json_object_object_get_ex(n, "image", &img))
            d->size = int_of(img, "virtual-size");
    }
}

/* query-block-jobs: 1 when job @name is listed, with @ready. */
static int detach_job(json_object *jobs, const char *name, int *ready)
{
    for (size_t i = 0; jobs && i < json_object_array_length(jobs); i++) {
        json_object *j = json_object_array_get_idx(jobs, i), *r;
        const char *dev = str_member(j, "device");
        if (dev && !strcmp(dev, name)) {
            *ready = json_object_object_get_ex(j, "ready", &r) && json_object_get_boolean(r);
            return 1;
        }
    }
    return 0;
}

/*
 * The chain: 0 graph (the nodes under it) -> 1 its size -> 2 blockdev-add a null-co node
 * -> 3 blockdev-mirror sync=none onto it -> 4 poll until ready -> 5 block-job-complete (the
 * device now uses the null node) -> 6 poll until the job is gone -> 7 blockdev-del the node,
 * then the nodes under it (deleting does not need a flush that succeeds; a node still in use
 * elsewhere is left).
 */
static void detach_next(struct bridge_backend *q, struct qmp_detach *d)
{
    json_object *a = NULL;
    const char *cmd;

    switch (d->step) {
    case 0:
        cmd = "x-debug-query-block-graph";
        break;
    case 1:
        cmd = "query-named-block-nodes";
        a = json_object_new_object();
        json_object_object_add(a, "flat", json_object_new_boolean(1));
        break;
    case 2:
        cmd = "blockdev-add";
        a = json_object_new_object();
        json_object_object_add(a, "driver", json_object_new_string("null-co"));
        json_object_object_add(a, "node-name", json_object_new_string(d->ghost));
        json_object_object_add(a, "size", json_object_new_int64(d->size));
        break;
    case 3:
        cmd = "blockdev-mirror";
        a = json_object_new_object();
        json_object_object_add(a, "job-id", json_object_new_string(d->job));
        json_object_object_add(a, "device", json_object_new_string(d->node));
        json_object_object_add(a, "target", json_object_new_string(d->ghost));
        json_object_object_add(a, "sync", json_object_new_string("none"));
        break;
    case 4:
    case 6:
        cmd = "query-block-jobs";
        break;
    case 5:
        cmd = "block-job-complete";
        a = json_object_new_object();
        json_object_object_add(a, "device", json_object_new_string(d->job));
        break;
    case 7:
        cmd = "blockdev-del";
        a = json_object_new_object();
        json_object_object_add(
            a, "node-name",
            json_object_new_string(d->next_child ? d->children[d->next_child - 1] : d->node));
        break;
    default:
        detach_finish(d, VMS_STATUS_OK, "");
        return;
    }
    if (qmp_command(q, cmd, a, qmp_timeout(q), detach_step, d) < 0)
        detach_finish(d, VMS_STATUS_ERR_UNAVAILABLE, "QMP not ready");
}

static void detach_step(struct bridge_backend *q, json_object *ret, const char *err, void *arg)
{
    struct qmp_detach *d = arg;
    char msg[VMS_STR_MAX + 1];
    int ready = 0, listed;

    if (err && d->step != 0 && d->step != 7) {
        snprintf(msg, sizeof(msg), "detaching %s, step %d: %s", d->node, d->step, err);
        detach_finish(d, err_status(err), msg);
        return;
    }
    switch (d->step) {
    case 0:
        if (!err) /* without the graph, only the node itself goes */
            detach_children(d, ret);
        break;
    case 1:
        detach_size(d, ret);
        if (d->size <= 0) {
            detach_finish(d, VMS_STATUS_ERR_NOT_FOUND, "no such block node");
            return;
        }
        break;
    case 4:
    case 6:
        listed = detach_job(ret, d->job, &ready);
        if (d->step == 4 && !listed) {
            detach_finish(d, VMS_STATUS_ERR_BACKEND, "the swap job ended early");
            return;
        }
        if ((d->step == 4 && !ready) || (d->step == 6 && listed)) {
            if (++d->polls > DETACH_POLLS_MAX) {
                detach_finish(d, VMS_STATUS_ERR_TIMEOUT, "the swap job did not finish");
                return;
            }
            detach_next(q, d); /* ask again: a sync=none mirror is ready at once */
            return;
        }
        break;
    case 7:
        if (++d->next_child <= d->n_children) {
            detach_next(q, d);
            return;
        }
        break;
    default:
        break;
    }
    d->step++;
    detach_next(q, d);
}

static int qmp_detach_node(struct bridge_backend *q, const char *node, bridge_backend_done_fn done,
                           void *opaque)
{
    struct qmp_detach *d;

    if (q->state != Q_READY || strlen(node) >= BRIDGE_NODE_NAME_MAX)
        return -1;
    d = calloc(1, sizeof(*d));
    if (!d)
        return -1;
    d->done = done;
    d->opaque = opaque;
    snprintf(d->node, sizeof(d->node), "%s", node);
    snprintf(d->ghost, sizeof(d->ghost), "%s-gone", node);
    snprintf(d->job, sizeof(d->job), "%s-swap", node);
    detach_next(q, d);
    return 0;
}

const struct bridge_backend_ops bridge_backend_qmp = {
    .name = "qmp",
    .open = qmp_open,
    .close = qmp_close,
    .is_ready = qmp_is_ready,
    .tick = qmp_tick,
    .save = qmp_save,
    .restore = qmp_restore,
    .delete = qmp_delete,
    .recover = qmp_recover,
    .has_snapshot = qmp_has_snapshot,
    .list_snapshots = qmp_list_snapshots,
    .set_hotplug = qmp_set_hotplug,
    .query_memory = qmp_query_memory,
    .set_balloon = qmp_set_balloon,
    .query_status = qmp_query_status,
    .query_block = qmp_query_block,
    .cont = qmp_cont,
    .restore_paused = qmp_restore_paused,
    .stop = qmp_stop,
    .prime_run_state = qmp_prime_run_state,
    .release_run_state = qmp_release_run_state,
    .kill = qmp_kill,
    .checkpoint = qmp_checkpoint,
    .load_checkpoint = qmp_load_checkpoint,
    .reconnect_policy = qmp_reconnect_policy,
    .powerdown = qmp_powerdown,
    .query_chardev = qmp_query_chardev,
    .detach_node = qmp_detach_node,
    .query_rtc = qmp_query_rtc,
};
