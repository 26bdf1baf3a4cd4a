/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * make-bridge-seeds — writes fuzz/corpus/bridge-request/: byte streams a
 * guest could send on port A (framed Hello, Requests of every operation with
 * good and bad credentials, Acks, garbage in between). Run by
 * `make fuzz-bridge-seeds`; the output is committed.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vms-proto.h"
#include "vms-wire.h"

static uint8_t buf[1 << 20];
static size_t len;

static void add_msg(const struct vms_msg *m)
{
    uint8_t *f;
    size_t n;
    char err[256];
    if (vms_msg_encode_frame(m, &f, &n, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    if (len + n > sizeof(buf))
        exit(1);
    memcpy(buf + len, f, n);
    len += n;
    free(f);
}

static void add_request(const char *id, const char *op, const char *principal, const char *secret,
                        const char *state, const char *data)
{
    struct vms_msg m;
    vms_msg_init(&m, VMS_MSG_REQUEST);
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, id);
    vms_msg_set_str(&m, VMS_F_OP, op);
    vms_msg_set_str(&m, VMS_F_APP_ID, "org.example.App");
    vms_msg_set_str(&m, VMS_F_PRINCIPAL, principal);
    vms_msg_set_str(&m, VMS_F_SECRET, secret);
    vms_msg_set_u64(&m, VMS_F_UID, 1000);
    if (state)
        vms_msg_set_str(&m, VMS_F_STATE_ID, state);
    if (data)
        vms_msg_set_app_data(&m, data, strlen(data));
    if (!strcmp(op, "set-memory"))
        vms_msg_set_u64(&m, VMS_F_BYTES, 256u << 20);
    if (!strcmp(op, "save"))
        vms_msg_set_str(&m, VMS_F_LABEL, "before upgrade");
    add_msg(&m);
    vms_msg_clear(&m);
}

static void add_hello_caps(uint32_t caps)
{
    struct vms_msg m;
    vms_msg_init(&m, VMS_MSG_HELLO);
    vms_msg_set_u64(&m, VMS_F_VERSION, 1);
    vms_msg_set_u64(&m, VMS_F_NONCE, 7);
    vms_msg_set_u64(&m, VMS_F_CAPS, caps);
    add_msg(&m);
    vms_msg_clear(&m);
}

static void add_hello(void)
{
    add_hello_caps(VMS_CAP_ALL);
}

/* The helper's clock rounds (capability time-probe) */
static void add_time_probe(uint64_t nonce)
{
    struct vms_msg m;
    vms_msg_init(&m, VMS_MSG_TIME_PROBE);
    vms_msg_set_u64(&m, VMS_F_NONCE, nonce);
    add_msg(&m);
    vms_msg_clear(&m);
}

static void add_ack(const char *id, uint64_t epoch, uint64_t seq)
{
    struct vms_msg m;
    vms_msg_init(&m, VMS_MSG_ACK);
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, id);
    vms_msg_set_u64(&m, VMS_F_EPOCH, epoch);
    vms_msg_set_u64(&m, VMS_F_SEQ, seq);
    add_msg(&m);
    vms_msg_clear(&m);
}

static void flush(const char *dir, const char *name)
{
    char path[512];
    FILE *f;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len) {
        perror(path);
        exit(1);
    }
    fclose(f);
    len = 0;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "fuzz/corpus/bridge-request";
    const char *r1 = "00000000000000000000000000000001", *r2 = "00000000000000000000000000000002",
               *r3 = "00000000000000000000000000000003";

    add_hello();
    add_request(r1, "save", "app", "s3cret", NULL, "app-data");
    add_ack(r1, 1, 1);
    flush(dir, "hello-save-ack");

    add_request(r1, "save", "app", "s3cret", NULL, "x");
    add_request(r2, "list", "app", "s3cret", NULL, NULL);
    add_request(r3, "restore", "app", "s3cret", "st-000000000000000000000000", "r");
    flush(dir, "save-list-restore");

    add_request(r1, "save", "app", "wrong", NULL, NULL);
    add_request(r2, "restore", "saver", "s3cret", "st-1", NULL);
    add_request(r3, "frobnicate", "app", "s3cret", NULL, NULL);
    flush(dir, "refusals");

    add_request(r1, "hostinfo", "app", "s3cret", NULL, NULL);
    add_request(r2, "set-memory", "app", "s3cret", NULL, NULL);
    add_request(r3, "delete", "app", "s3cret", "st-1", NULL);
    flush(dir, "hostinfo-setmem-delete");

    add_request(r1, "save", "app", "s3cret", NULL, "a");
    add_request(r1, "save", "app", "s3cret", NULL, "a"); /* duplicate */
    buf[len++] = 0x41;                                   /* garbage between frames */
    buf[len++] = 0xFF;
    add_hello();
    flush(dir, "duplicate-garbage-hello");

    add_time_probe(1); /* before the capability: ignored */
    add_hello_caps(VMS_CAP_KNOWN);
    add_time_probe(2);
    add_request(r1, "hostinfo", "app", "s3cret", NULL, NULL);
    add_time_probe(3);
    add_ack(r1, 1, 1);
    flush(dir, "hello-timeprobe-hostinfo");
    return 0;
}
