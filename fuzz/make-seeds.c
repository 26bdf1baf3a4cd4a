/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * make-seeds.c — writes the seed corpus (one valid frame/payload per message
 * type, plus edge cases) into fuzz/corpus/, and the helper's signals as an app
 * receives them into fuzz/corpus/app-signal/. Run by `make fuzz-seeds` when
 * the protocol changes; the output is committed.
 */
#include "config.h"

#include <dbus/dbus.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vms-dbus.h"
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

/* @m (a signal of the helper's, as libdbus marshals it) into corpus/app-signal/@name */
static void emit_signal(const char *corpus, const char *name, DBusMessage *m)
{
    char dir[512], *raw;
    int len;

    dbus_message_set_serial(m, 1);
    if (!dbus_message_marshal(m, &raw, &len)) {
        fprintf(stderr, "%s: cannot marshal\n", name);
        exit(1);
    }
    snprintf(dir, sizeof(dir), "%s/app-signal", corpus);
    write_file(dir, name, (const uint8_t *)raw, (size_t)len);
    dbus_free(raw);
    dbus_message_unref(m);
}

/* details[@key] = the basic value at @value, of D-Bus type @type */
static void detail(DBusMessageIter *dict, const char *key, int type, const void *value)
{
    DBusMessageIter e, v;
    const char sig[2] = {(char)type, 0};

    dbus_message_iter_open_container(dict, DBUS_TYPE_DICT_ENTRY, NULL, &e);
    dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &key);
    dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, sig, &v);
    dbus_message_iter_append_basic(&v, type, value);
    dbus_message_iter_close_container(&e, &v);
    dbus_message_iter_close_container(dict, &e);
}

/* details[@key] = a(@sig) of one struct of the strings @s (NULL-ended) and the numbers @n */
static void detail_list(DBusMessageIter *dict, const char *key, const char *sig,
                        const char *const *s, const dbus_uint64_t *n)
{
    DBusMessageIter e, v, a, st;
    char asig[32];

    snprintf(asig, sizeof(asig), "a%s", sig);
    dbus_message_iter_open_container(dict, DBUS_TYPE_DICT_ENTRY, NULL, &e);
    dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &key);
    dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, asig, &v);
    dbus_message_iter_open_container(&v, DBUS_TYPE_ARRAY, sig, &a);
    dbus_message_iter_open_container(&a, DBUS_TYPE_STRUCT, NULL, &st);
    for (const char *t = sig + 1; *t != ')'; t++) {
        if (*t == 's')
            dbus_message_iter_append_basic(&st, DBUS_TYPE_STRING, s++);
        else if (*t == 'u') {
            dbus_uint32_t u = (dbus_uint32_t)*n++;
            dbus_message_iter_append_basic(&st, DBUS_TYPE_UINT32, &u);
        } else
            dbus_message_iter_append_basic(&st, *t, n++);
    }
    dbus_message_iter_close_container(&a, &st);
    dbus_message_iter_close_container(&v, &a);
    dbus_message_iter_close_container(&e, &v);
    dbus_message_iter_close_container(dict, &e);
}

/* The helper's signals, as libvmstate reads them (fuzz-app-signal). */
static void emit_app_signals(const char *corpus)
{
    const char *rid = "0123456789abcdef0123456789abcdef", *op = "hostinfo", *msg = "",
               *state = "s-1", *label = "before", *app = "org.ex.app", *reason = "restore",
               *host = "host-a";
    const unsigned char data[] = {0xff, 0, 1};
    const unsigned char *dp = data;
    dbus_uint32_t status = 0;
    dbus_uint64_t epoch = 2, mem = 1u << 27;
    dbus_int64_t ns = -1500;
    double seconds = -1.5e-6;
    const char *st[] = {"s-1", "first", "org.ex.app", "", NULL};
    const char *res[] = {"set-memory", "ok", NULL};
    const char *quota[] = {"states", NULL};
    const dbus_uint64_t created[] = {1700000000}, rstatus[] = {0}, limits[] = {10, 2};
    DBusMessageIter it, arr, dict;
    DBusMessage *m = dbus_message_new_signal(VMS_DBUS_PATH, VMS_DBUS_IFACE, "Completed");

    dbus_message_append_args(m, DBUS_TYPE_STRING, &rid, DBUS_TYPE_STRING, &op, DBUS_TYPE_UINT32,
                             &status, DBUS_TYPE_STRING, &msg, DBUS_TYPE_STRING, &state,
                             DBUS_TYPE_STRING, &label, DBUS_TYPE_STRING, &app, DBUS_TYPE_INVALID);
    dbus_message_iter_init_append(m, &it);
    dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "y", &arr);
    dbus_message_iter_append_fixed_array(&arr, DBUS_TYPE_BYTE, &dp, (int)sizeof(data));
    dbus_message_iter_close_container(&it, &arr);
    dbus_message_iter_append_basic(&it, DBUS_TYPE_UINT64, &epoch);
    dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &dict);
    detail(&dict, "hostname", DBUS_TYPE_STRING, &host);
    detail(&dict, "mem_bytes", DBUS_TYPE_UINT64, &mem);
    detail_list(&dict, "states", "(ssssx)", st, (const dbus_uint64_t *)created);
    detail_list(&dict, "results", "(sus)", res, rstatus);
    detail_list(&dict, "quotas", "(stt)", quota, limits);
    detail_list(&dict, "future", "(st)", quota, limits); /* a detail this library skips */
    dbus_message_iter_close_container(&it, &dict);
    emit_signal(corpus, "completed", m);

    m = dbus_message_new_signal(VMS_DBUS_PATH, VMS_DBUS_BROADCAST_IFACE, "Restored");
    dbus_message_append_args(m, DBUS_TYPE_STRING, &state, DBUS_TYPE_UINT64, &epoch,
                             DBUS_TYPE_INVALID);
    emit_signal(corpus, "restored", m);
    m = dbus_message_new_signal(VMS_DBUS_PATH, VMS_DBUS_BROADCAST_IFACE, "PrepareSave");
    dbus_message_append_args(m, DBUS_TYPE_STRING, &rid, DBUS_TYPE_STRING, &label,
                             DBUS_TYPE_INVALID);
    emit_signal(corpus, "prepare-save", m);
    m = dbus_message_new_signal(VMS_DBUS_PATH, VMS_DBUS_BROADCAST_IFACE, "ClockCorrected");
    dbus_message_append_args(m, DBUS_TYPE_DOUBLE, &seconds, DBUS_TYPE_INT64, &ns, DBUS_TYPE_STRING,
                             &reason, DBUS_TYPE_INVALID);
    emit_signal(corpus, "clock-corrected", m);
    m = dbus_message_new_signal(VMS_DBUS_PATH, VMS_DBUS_IFACE, "StateSaved");
    dbus_message_append_args(m, DBUS_TYPE_STRING, &state, DBUS_TYPE_STRING, &label,
                             DBUS_TYPE_STRING, &app, DBUS_TYPE_STRING, &msg, DBUS_TYPE_UINT64,
                             &epoch, DBUS_TYPE_INVALID);
    emit_signal(corpus, "state-saved", m);
    m = dbus_message_new_signal(VMS_DBUS_PATH, VMS_DBUS_BROADCAST_IFACE, "Notice");
    dbus_message_append_args(m, DBUS_TYPE_STRING, &reason, DBUS_TYPE_STRING, &label,
                             DBUS_TYPE_INVALID);
    emit_signal(corpus, "notice", m);
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

    emit_app_signals(corpus);
    return 0;
}
