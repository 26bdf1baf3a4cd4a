/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * make-seeds.c — writes the seed corpus (one valid frame/payload per message
 * type, plus edge cases) into fuzz/corpus/. Run by `make fuzz-seeds` when
 * the protocol changes; the output is committed.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vms-proto.h"
#include "vms-wire.h"

static void write_file(const char *dir, const char *name, const uint8_t *p, size_t n)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

static void emit(const char *corpus, const char *name, const struct vms_msg *m)
{
    char dir[512], err[256];
    uint8_t *payload, *frame;
    size_t plen, flen;

    if (vms_msg_encode(m, &payload, &plen, err, sizeof(err)) < 0 ||
        vms_msg_encode_frame(m, &frame, &flen, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s: %s\n", name, err);
        exit(1);
    }
    snprintf(dir, sizeof(dir), "%s/message", corpus);
    write_file(dir, name, payload, plen);
    snprintf(dir, sizeof(dir), "%s/deframe", corpus);
    write_file(dir, name, frame, flen);
    free(payload);
    free(frame);
}

int main(int argc, char **argv)
{
    const char *corpus = argc > 1 ? argv[1] : "fuzz/corpus";
    const char *rid = "0123456789abcdef0123456789abcdef";
    struct vms_msg m;
    struct vms_state_info st = {.id = "s-1",
                                .label = "before-upgrade",
                                .app_id = "org.ex.app",
                                .parent = "",
                                .created = 1700000000};

    vms_msg_init(&m, VMS_MSG_HELLO);
    vms_msg_set_u64(&m, VMS_F_VERSION, 1);
    vms_msg_set_u64(&m, VMS_F_MIN_VERSION, 1);
    vms_msg_set_u64(&m, VMS_F_NONCE, 12345);
    vms_msg_set_u64(&m, VMS_F_EPOCH, 1);
    vms_msg_set_u64(&m, VMS_F_CAPS, VMS_CAP_ALL);
    emit(corpus, "hello", &m);

    vms_msg_init(&m, VMS_MSG_WELCOME);
    vms_msg_set_u64(&m, VMS_F_VERSION, 1);
    vms_msg_set_u64(&m, VMS_F_NONCE, 12345);
    vms_msg_set_u64(&m, VMS_F_HOST_NONCE, 999);
    vms_msg_set_u64(&m, VMS_F_EPOCH, 2);
    vms_msg_set_u64(&m, VMS_F_CAPS, VMS_CAP_ALL);
    emit(corpus, "welcome", &m);

    vms_msg_init(&m, VMS_MSG_REQUEST);
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, rid);
    vms_msg_set_str(&m, VMS_F_OP, "restore");
    vms_msg_set_str(&m, VMS_F_APP_ID, "org.ex.app");
    vms_msg_set_str(&m, VMS_F_PRINCIPAL, "alice");
    vms_msg_set_str(&m, VMS_F_SECRET, "secret");
    vms_msg_set_str(&m, VMS_F_STATE_ID, "s-1");
    vms_msg_set_str(&m, VMS_F_LABEL, "before-upgrade");
    vms_msg_set_u64(&m, VMS_F_UID, 0);
    vms_msg_set_u64(&m, VMS_F_BYTES, 1 << 27);
    vms_msg_set_app_data(&m, "hello from the future", 21);
    emit(corpus, "request", &m);
    vms_msg_clear(&m);

    vms_msg_init(&m, VMS_MSG_REPLY);
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, rid);
    vms_msg_set_u64(&m, VMS_F_STATUS, VMS_STATUS_ERR_AUTH);
    vms_msg_set_str(&m, VMS_F_MESSAGE, "unknown principal or wrong secret");
    emit(corpus, "reply", &m);

    vms_msg_init(&m, VMS_MSG_EVENT);
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, rid);
    vms_msg_set_str(&m, VMS_F_OP, "list");
    vms_msg_set_u64(&m, VMS_F_STATUS, 0);
    vms_msg_set_u64(&m, VMS_F_EPOCH, 2);
    vms_msg_set_u64(&m, VMS_F_SEQ, 7);
    vms_msg_set_str(&m, VMS_F_APP_ID, "org.ex.app");
    vms_msg_set_str(&m, VMS_F_HOSTNAME, "host");
    vms_msg_set_str(&m, VMS_F_BRIDGE_VERSION, "0.1.0");
    vms_msg_set_u64(&m, VMS_F_FREE_BYTES, 1ull << 34);
    vms_msg_set_u64(&m, VMS_F_MEM_BYTES, 1ull << 27);
    vms_msg_add_state(&m, &st);
    strcpy(st.id, "s-2");
    strcpy(st.parent, "s-1");
    vms_msg_add_state(&m, &st);
    vms_msg_set_app_data(&m, "\xff\xfe\x00", 3);
    emit(corpus, "event", &m);
    vms_msg_clear(&m);

    vms_msg_init(&m, VMS_MSG_ACK);
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, rid);
    vms_msg_set_u64(&m, VMS_F_EPOCH, 2);
    vms_msg_set_u64(&m, VMS_F_SEQ, 7);
    emit(corpus, "ack", &m);

    vms_msg_init(&m, VMS_MSG_TIMELINE);
    vms_msg_set_u64(&m, VMS_F_EPOCH, 3);
    vms_msg_set_str(&m, VMS_F_STATE_ID, "s-1");
    vms_msg_set_str(&m, VMS_F_REASON, "restore");
    emit(corpus, "timeline", &m);

    vms_msg_init(&m, VMS_MSG_TIME_PROBE);
    vms_msg_set_u64(&m, VMS_F_NONCE, 4242);
    emit(corpus, "time-probe", &m);

    vms_msg_init(&m, VMS_MSG_TIME);
    vms_msg_set_u64(&m, VMS_F_NONCE, 4242);
    vms_msg_set_u64(&m, VMS_F_TIME_NS, 1796000000000000000ull);
    emit(corpus, "time", &m);
    return 0;
}
