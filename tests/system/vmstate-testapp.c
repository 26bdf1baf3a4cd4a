/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vmstate-testapp — a guest app for the whole-path system tests.
 *
 * Registers as a listener for one app id with libvmstate and logs, one line
 * each (flushed at once), everything it sees:
 *
 *   READY pid=P app=ID
 *   SENT op=OP id=REQUEST_ID
 *   REFUSED op=OP rc=CODE err=NAME msg=TEXT        (the call itself failed)
 *   EVENT pid=P id=.. op=.. status=N state=.. label=.. app=.. data=HEX reason=.. epoch=E
 *         states=ID|LABEL|APP,ID|LABEL|APP...
 *   RESTORED pid=P state=S epoch=E
 *   BRIDGE pid=P connected=0|1
 *
 * Commands, one per line, from the FIFO given with --cmd (opened read-write so
 * writers come and go): "save LABEL [DATA]", "restore STATE [DATA]", "list",
 * (DATA "@N": N bytes of 'q'),
 * "quit". Credentials: VMSTATE_PRINCIPAL, VMSTATE_SECRET.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vmstate.h>

static FILE *out;

__attribute__((format(printf, 1, 2))) static void logf_(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(out, fmt, ap);
    va_end(ap);
    fputc('\n', out);
    fflush(out);
}

static void hex(char *dst, size_t cap, const uint8_t *p, size_t n)
{
    size_t i;
    dst[0] = '\0';
    for (i = 0; i < n && 2 * i + 3 <= cap; i++)
        sprintf(dst + 2 * i, "%02x", p[i]);
    if (n == 0)
        snprintf(dst, cap, "-");
}

static const char *or_dash(const char *s)
{
    return s && *s ? s : "-";
}

static void on_event(vmstate *v, const struct vmstate_event *ev, void *userdata)
{
    static char data[2 * 4096 + 4], states[8192];
    size_t i, off = 0;
    (void)v;
    (void)userdata;

    if (ev->type == VMSTATE_EVENT_RESTORED) {
        logf_("RESTORED pid=%d state=%s epoch=%llu", (int)getpid(), or_dash(ev->state_id),
              (unsigned long long)ev->epoch);
        return;
    }
    if (ev->type == VMSTATE_EVENT_BRIDGE) {
        logf_("BRIDGE pid=%d connected=%d", (int)getpid(), ev->bridge_connected);
        return;
    }
    if (ev->type == VMSTATE_EVENT_PREPARE_SAVE) {
        logf_("PREPARE pid=%d id=%s label=%s", (int)getpid(), ev->request_id, or_dash(ev->label));
        return;
    }
    if (ev->type == VMSTATE_EVENT_STATE_SAVED || ev->type == VMSTATE_EVENT_STATE_DELETED) {
        /* another app's (or our own) state changed: never any app data here */
        logf_("STATE pid=%d change=%s state=%s creator=%s parent=%s epoch=%llu label=%s",
              (int)getpid(), ev->type == VMSTATE_EVENT_STATE_SAVED ? "saved" : "deleted",
              or_dash(ev->state_id), or_dash(ev->creator), or_dash(ev->parent_id),
              (unsigned long long)ev->epoch, or_dash(ev->label));
        return;
    }
    if (ev->type != VMSTATE_EVENT_COMPLETED)
        return; /* clock corrections, notices: not this app's business */
    hex(data, sizeof(data), ev->app_data, ev->app_data_len);
    states[0] = '\0';
    for (i = 0; i < ev->n_states && off + 600 < sizeof(states); i++)
        off += (size_t)snprintf(states + off, sizeof(states) - off, "%s%s|%s|%s", i ? "," : "",
                                ev->states[i].id, ev->states[i].label, ev->states[i].app_id);
    {
        /* follow-ups inside a restore: op:status,... */
        char results[256] = "";
        size_t roff = 0;
        for (i = 0; i < ev->n_results && roff + 40 < sizeof(results); i++)
            roff += (size_t)snprintf(results + roff, sizeof(results) - roff, "%s%s:%u",
                                     i ? "," : "", ev->results[i].operation, ev->results[i].status);
        /* labels may hold spaces: they are the last free-text field but one; message last */
        logf_("EVENT pid=%d id=%s op=%s status=%u state=%s app=%s data=%s reason=%s epoch=%llu "
              "n_states=%zu states=%s creator=%s results=%s bytes=%llu mem=%llu free=%llu "
              "host=%s hostmem=%llu cpus=%llu ops=%s label=%s msg=%s",
              (int)getpid(), ev->request_id, ev->operation, ev->status, or_dash(ev->state_id),
              or_dash(ev->app_id), data, or_dash(ev->reason), (unsigned long long)ev->epoch,
              ev->n_states, states[0] ? states : "-", or_dash(ev->creator),
              results[0] ? results : "-", (unsigned long long)ev->bytes,
              (unsigned long long)ev->mem_bytes, (unsigned long long)ev->free_bytes,
              or_dash(ev->hostname), (unsigned long long)ev->host_mem_total,
              (unsigned long long)ev->host_cpus, ev->ops[0] ? ev->ops : "-", or_dash(ev->label),
              or_dash(ev->message));
    }
}

static void command(vmstate *v, char *line)
{
    char id[VMSTATE_REQUEST_ID_LEN + 1], *op, *arg, *data;
    int rc;

    line[strcspn(line, "\r\n")] = '\0';
    op = strtok(line, " ");
    if (!op)
        return;
    arg = strtok(NULL, " ");
    data = strtok(NULL, "");
    if (!data)
        data = "";
    if (data[0] == '@') { /* "@N": N bytes of 'q' */
        static char big[VMSTATE_APP_DATA_MAX + 2];
        size_t n = strtoul(data + 1, NULL, 10);
        if (n > sizeof(big) - 1)
            n = sizeof(big) - 1;
        memset(big, 'q', n);
        big[n] = '\0';
        data = big;
    }
    if (!strcmp(op, "save") && arg)
        rc = vmstate_save(v, arg, data, strlen(data), id);
    else if (!strcmp(op, "restore") && arg)
        rc = vmstate_restore(v, arg, data, strlen(data), id);
    else if (!strcmp(op, "restorewith") && arg) {
        /* "restorewith STATE BYTES [DATA]": restore, then set-memory BYTES and hostinfo */
        char *bytes = strtok(data, " "), *rest = strtok(NULL, "");
        struct vmstate_followup fu[2] = {{"set-memory", bytes ? strtoull(bytes, NULL, 10) : 0},
                                         {"hostinfo", 0}};
        rest = rest ? rest : "";
        rc = vmstate_restore_with(v, arg, rest, strlen(rest), fu, 2, id);
    } else if (!strcmp(op, "delete") && arg)
        rc = vmstate_delete(v, arg, id);
    else if (!strcmp(op, "hostinfo"))
        rc = vmstate_hostinfo(v, id);
    else if (!strcmp(op, "list"))
        rc = vmstate_list(v, id);
    else if (!strcmp(op, "quit"))
        exit(0);
    else {
        logf_("BADCMD %s", op);
        return;
    }
    if (rc < 0)
        logf_("REFUSED op=%s rc=%d err=%s msg=%s", op, rc, vmstate_strerror(rc),
              vmstate_last_error(v));
    else
        logf_("SENT op=%s id=%s", op, id);
}

int main(int argc, char **argv)
{
    const char *app_id = "org.vmstate.Test", *log_path = NULL, *cmd_path = NULL;
    const char *principal = getenv("VMSTATE_PRINCIPAL"), *secret = getenv("VMSTATE_SECRET");
    char buf[4096];
    size_t have = 0;
    vmstate *v;
    int c, cmd_fd = -1, rc;

    while ((c = getopt(argc, argv, "a:l:c:")) != -1) {
        switch (c) {
        case 'a':
            app_id = optarg;
            break;
        case 'l':
            log_path = optarg;
            break;
        case 'c':
            cmd_path = optarg;
            break;
        default:
            fprintf(stderr, "usage: vmstate-testapp [-a APP_ID] [-l LOG] [-c FIFO]\n");
            return 2;
        }
    }
    out = log_path ? fopen(log_path, "a") : stdout;
    if (!out)
        return 1;
    if (cmd_path && (cmd_fd = open(cmd_path, O_RDWR | O_NONBLOCK)) < 0) {
        logf_("FATAL open %s: %s", cmd_path, strerror(errno));
        return 1;
    }
    if ((rc = vmstate_open(NULL, app_id, &v)) < 0) {
        logf_("FATAL vmstate_open: %s", vmstate_strerror(rc));
        return 1;
    }
    if (principal && secret && vmstate_set_credentials(v, principal, secret) < 0) {
        logf_("FATAL credentials: %s", vmstate_last_error(v));
        return 1;
    }
    if ((rc = vmstate_listen(v, on_event, NULL)) < 0) {
        logf_("FATAL listen: %s: %s", vmstate_strerror(rc), vmstate_last_error(v));
        return 1;
    }
    logf_("READY pid=%d app=%s", (int)getpid(), app_id);
    for (;;) {
        struct pollfd p[2] = {{.fd = vmstate_get_fd(v), .events = POLLIN},
                              {.fd = cmd_fd, .events = POLLIN}};
        if (poll(p, cmd_fd >= 0 ? 2 : 1, 1000) < 0 && errno != EINTR)
            return 1;
        if (vmstate_dispatch(v) < 0) {
            logf_("FATAL dispatch: %s", vmstate_last_error(v));
            return 1;
        }
        if (cmd_fd >= 0 && (p[1].revents & POLLIN)) {
            ssize_t n = read(cmd_fd, buf + have, sizeof(buf) - 1 - have);
            char *nl;
            if (n > 0)
                have += (size_t)n;
            buf[have] = '\0';
            while ((nl = memchr(buf, '\n', have))) {
                size_t len = (size_t)(nl - buf) + 1;
                char line[4096];
                memcpy(line, buf, len);
                line[len] = '\0';
                memmove(buf, buf + len, have - len);
                have -= len;
                command(v, line);
            }
            if (have == sizeof(buf) - 1)
                have = 0; /* an overlong line: drop it */
        }
    }
}
