/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vmstate-example — an app that talks to its own past.
 *
 *   1. registers under its app id and writes a file ("before the save");
 *   2. asks for a save, and waits for the save's completion on its event fd;
 *   3. when the save completes: changes the file, then asks to restore the
 *      saved state, sending a message as the restore's app data.
 *
 * The restore replaces the whole guest by the saved one. In it, this program
 * is the process image of step 2: it was waiting for the save's completion
 * when the snapshot was taken, so it resumes in that same wait. The helper
 * then delivers to it (the listener registered under this app id *now*):
 * Restored, the restore's completion carrying the message, and the save's
 * completion replayed into the new timeline. It prints the message and shows
 * that the file is back to what it was before the save.
 *
 * Build: cc vmstate-example.c $(pkg-config --cflags --libs libvmstate)
 * Run:   VMSTATE_PRINCIPAL=alice VMSTATE_SECRET=... vmstate-example [OPTIONS]
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <vmstate.h>

struct app {
    vmstate *v;
    const char *file;
    const char *message;
    char save_id[VMSTATE_REQUEST_ID_LEN + 1];
    char restore_id[VMSTATE_REQUEST_ID_LEN + 1];
    int restored; /* we run in a restored timeline */
    int got_message;
    int save_done; /* the save's completion reached this instance */
    int exit_code; /* -1 while running */
};

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
}

static void show_file(const char *path)
{
    char buf[256] = "";
    FILE *f = fopen(path, "r");
    if (f) {
        if (!fgets(buf, sizeof(buf), f))
            buf[0] = '\0';
        fclose(f);
    }
    buf[strcspn(buf, "\n")] = '\0';
    printf("  %s says: \"%s\"\n", path, buf);
}

static void on_event(vmstate *v, const struct vmstate_event *ev, void *userdata)
{
    struct app *a = userdata;
    int rc;

    if (ev->type == VMSTATE_EVENT_RESTORED) {
        a->restored = 1;
        printf("restored: this instance now runs in state %s (epoch %llu)\n", ev->state_id,
               (unsigned long long)ev->epoch);
        return;
    }
    if (ev->type == VMSTATE_EVENT_BRIDGE) {
        printf("host bridge %s\n", ev->bridge_connected ? "connected" : "disconnected");
        return;
    }
    if (ev->type != VMSTATE_EVENT_COMPLETED)
        return; /* PREPARE_SAVE (it carries our save's request id too), clock, notices */
    if (!strcmp(ev->operation, "restore")) {
        if (ev->status != 0) {
            printf("restore failed: %s: %s\n", vmstate_status_name(ev->status), ev->message);
            a->exit_code = 1;
            return;
        }
        /* In the restored state: the data the *other* instance sent with its restore. */
        printf("message from my other instance: \"%.*s\"\n", (int)ev->app_data_len,
               (const char *)ev->app_data);
        show_file(a->file);
        a->got_message = 1;
        /* The instance that waited in the saved state still expects its save's completion,
         * replayed into this timeline; one that already saw it (no rewind) is done. */
        if (a->save_done)
            a->exit_code = 0;
        return;
    }
    if (strcmp(ev->request_id, a->save_id) != 0)
        return; /* some other request of this app id */
    if (ev->status != 0) {
        printf("save failed: %s: %s\n", vmstate_status_name(ev->status), ev->message);
        a->exit_code = 1;
        return;
    }
    if (a->restored || a->got_message || !strcmp(ev->reason, "restored-copy")) {
        /* The save this instance was waiting for, completed in the restored timeline. */
        printf("my save completed too (state %s%s%s)\n", ev->state_id, ev->reason[0] ? ", " : "",
               ev->reason);
        a->save_done = 1;
        if (a->got_message)
            a->exit_code = 0;
        return;
    }
    /* The original timeline: the save is done. Change something, then go back. */
    a->save_done = 1;
    printf("saved state %s\n", ev->state_id);
    write_file(a->file, "changed after the save\n");
    show_file(a->file);
    rc = vmstate_restore(v, ev->state_id, a->message, strlen(a->message), a->restore_id);
    if (rc < 0) {
        printf("cannot ask for the restore: %s\n", vmstate_last_error(v));
        a->exit_code = 1;
        return;
    }
    printf("asked to restore %s (request %s) with message \"%s\";\n"
           "this instance will be replaced by the one that is waiting in the saved state\n",
           ev->state_id, a->restore_id, a->message);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"address", required_argument, NULL, 'A'}, {"app-id", required_argument, NULL, 'a'},
        {"file", required_argument, NULL, 'f'},    {"label", required_argument, NULL, 'l'},
        {"message", required_argument, NULL, 'm'}, {"timeout", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    struct app a = {
        .file = "/tmp/vmstate-example.txt", .message = "hello from the future", .exit_code = -1};
    const char *address = getenv("VMSTATE_BUS_ADDRESS"), *app_id = "org.vmstate.Example";
    const char *label = "vmstate-example", *principal, *secret;
    int timeout_s = 300, c, rc;
    time_t deadline;

    while ((c = getopt_long(argc, argv, "a:f:l:m:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'A':
            address = optarg;
            break;
        case 'a':
            app_id = optarg;
            break;
        case 'f':
            a.file = optarg;
            break;
        case 'l':
            label = optarg;
            break;
        case 'm':
            a.message = optarg;
            break;
        case 't':
            timeout_s = atoi(optarg);
            break;
        default:
            printf("Usage: vmstate-example [--app-id ID] [--file PATH] [--label L] "
                   "[--message TEXT] [--timeout SEC] [--address DBUS_ADDRESS]\n"
                   "Credentials from VMSTATE_PRINCIPAL and VMSTATE_SECRET.\n");
            return c == 'h' ? 0 : 2;
        }
    }
    principal = getenv("VMSTATE_PRINCIPAL");
    secret = getenv("VMSTATE_SECRET");
    if (!principal || !secret) {
        fprintf(stderr, "set VMSTATE_PRINCIPAL and VMSTATE_SECRET\n");
        return 2;
    }
    rc = vmstate_open(address, app_id, &a.v);
    if (rc < 0) {
        fprintf(stderr, "vmstate_open: %s\n", vmstate_strerror(rc));
        return 1;
    }
    if (vmstate_set_credentials(a.v, principal, secret) < 0 ||
        vmstate_listen(a.v, on_event, &a) < 0) {
        fprintf(stderr, "%s\n", vmstate_last_error(a.v));
        vmstate_close(a.v);
        return 1;
    }
    write_file(a.file, "written before the save\n");
    show_file(a.file);
    if (vmstate_save(a.v, label, NULL, 0, a.save_id) < 0) {
        fprintf(stderr, "save: %s\n", vmstate_last_error(a.v));
        vmstate_close(a.v);
        return 1;
    }
    printf("asked to save (request %s); waiting for it\n", a.save_id);
    fflush(stdout);

    /* The app's own main loop: poll the library's fd, dispatch when it is readable. */
    deadline = time(NULL) + timeout_s;
    while (a.exit_code < 0 && time(NULL) < deadline) {
        struct pollfd p = {.fd = vmstate_get_fd(a.v), .events = POLLIN};
        if (poll(&p, 1, 1000) < 0 && errno != EINTR)
            break;
        if (vmstate_dispatch(a.v) < 0) {
            fprintf(stderr, "%s\n", vmstate_last_error(a.v));
            a.exit_code = 1;
        }
        fflush(stdout);
    }
    if (a.exit_code < 0) {
        fprintf(stderr, "gave up after %d s\n", timeout_s);
        a.exit_code = 1;
    }
    vmstate_close(a.v);
    return a.exit_code;
}
