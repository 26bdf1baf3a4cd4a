/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * test-proto.c — messages: round trip of every type, caps, unknown types and
 * fields, bad types, version negotiation, duplicates, and the channel over a
 * socketpair.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <dbus/dbus.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vms-channel.h"
#include "vms-dbus-reference.h"
#include "vms-marshal.h"
#include "test-log-capture.h"
#include "vms-dedup.h"
#include "vms-log.h"
#include "vms-proto.h"
#include "vms-wire.h"

#define REQ_ID "0123456789abcdef0123456789abcdef"

static void fill_request(struct vms_msg *m)
{
    vms_msg_init(m, VMS_MSG_REQUEST);
    cr_assert_eq(vms_msg_set_str(m, VMS_F_REQUEST_ID, REQ_ID), 0);
    cr_assert_eq(vms_msg_set_str(m, VMS_F_OP, "save"), 0);
    cr_assert_eq(vms_msg_set_str(m, VMS_F_APP_ID, "org.example.app"), 0);
    cr_assert_eq(vms_msg_set_str(m, VMS_F_PRINCIPAL, "alice"), 0);
    cr_assert_eq(vms_msg_set_str(m, VMS_F_SECRET, "s3cret with spaces ✓"), 0);
    cr_assert_eq(vms_msg_set_str(m, VMS_F_LABEL, "before-upgrade"), 0);
    vms_msg_set_u64(m, VMS_F_UID, 1000);
    cr_assert_eq(vms_msg_set_app_data(m, "\0\xff\xfe data", 9), 0);
}

/* The message @m re-encoded (NULL when the encoder refuses it): two decodings agree when
 * these bytes do. */
static uint8_t *encoded(const struct vms_msg *m, size_t *len)
{
    uint8_t *buf;
    char err[256];

    return vms_msg_encode(m, &buf, len, err, sizeof(err)) == 0 ? buf : NULL;
}

/*
 * vms_msg_decode_canonical on @buf against vms_msg_decode's @full result @want and message
 * @got: whatever it accepts, the full decoder accepted as the same message. Returns its
 * result.
 */
static enum vms_decode_result canonical_agrees(const uint8_t *buf, size_t len,
                                               enum vms_decode_result want,
                                               const struct vms_msg *got)
{
    struct vms_msg c;
    struct vms_decode_report rep;
    enum vms_decode_result r = vms_msg_decode_canonical(buf, len, &c, &rep);

    if (r != VMS_DECODE_OK) {
        cr_assert_eq(c.fields, 0, "a refused message is left cleared");
        return r;
    }
    cr_assert_eq(want, VMS_DECODE_OK, "canonical accepts a %s that libdbus's reading refuses",
                 vms_msg_type_name(c.type));
    size_t a_len, b_len;
    uint8_t *a = encoded(got, &a_len), *b = encoded(&c, &b_len);
    cr_assert(a && b && a_len == b_len && memcmp(a, b, a_len) == 0,
              "canonical and full decoding differ on a %s", vms_msg_type_name(c.type));
    /* what it accepts is what our encoder writes: the bytes it was given */
    cr_assert(b_len == len && memcmp(b, buf, len) == 0,
              "canonical accepted a %s our encoder would write otherwise",
              vms_msg_type_name(c.type));
    free(a);
    free(b);
    vms_msg_clear(&c);
    return r;
}

static enum vms_decode_result round_trip(const struct vms_msg *in, struct vms_msg *out,
                                         struct vms_decode_report *rep)
{
    uint8_t *buf;
    size_t len;
    char err[256];
    uint8_t *ref;
    size_t ref_len;
    cr_assert_eq(vms_msg_encode(in, &buf, &len, err, sizeof(err)), 0, "encode: %s", err);
    /* what the encoder writes is libdbus's marshalling of the same message, byte for byte */
    cr_assert_eq(vms_reference_marshal(buf, len, &ref, &ref_len), 0, "libdbus refuses it");
    cr_assert_eq(ref_len, len, "%zu bytes, libdbus's %zu", len, ref_len);
    cr_assert_arr_eq(ref, buf, len, "the bytes differ from libdbus's");
    free(ref);
    enum vms_decode_result r = vms_msg_decode(buf, len, out, rep);
    /* what our encoder writes, the canonical decoder reads as the full one does */
    cr_assert_eq(canonical_agrees(buf, len, r, out), r);
    free(buf);
    return r;
}

Test(proto, request_round_trip)
{
    struct vms_msg in, out;
    struct vms_decode_report rep;
    fill_request(&in);
    cr_assert_eq(round_trip(&in, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
    cr_assert_eq(out.type, VMS_MSG_REQUEST);
    cr_assert_eq(out.fields, in.fields);
    cr_assert_str_eq(out.request_id, REQ_ID);
    cr_assert_str_eq(out.op, "save");
    cr_assert_str_eq(out.app_id, "org.example.app");
    cr_assert_str_eq(out.principal, "alice");
    cr_assert_str_eq(out.secret, "s3cret with spaces ✓");
    cr_assert_str_eq(out.label, "before-upgrade");
    cr_assert_eq(out.uid, 1000);
    cr_assert_eq(out.app_data_len, 9);
    cr_assert_arr_eq(out.app_data, "\0\xff\xfe data", 9);
    vms_msg_clear(&in);
    vms_msg_clear(&out);
    cr_assert_eq(out.secret[0], 0);
}

Test(proto, every_type_round_trips)
{
    struct vms_msg m, out;
    struct vms_decode_report rep;

    vms_msg_init(&m, VMS_MSG_HELLO);
    vms_msg_set_u64(&m, VMS_F_VERSION, 1);
    vms_msg_set_u64(&m, VMS_F_MIN_VERSION, 1);
    vms_msg_set_u64(&m, VMS_F_NONCE, 0xdeadbeefcafef00dull);
    vms_msg_set_u64(&m, VMS_F_EPOCH, 7);
    vms_msg_set_u64(&m, VMS_F_CAPS, VMS_CAP_ALL);
    cr_assert_eq(round_trip(&m, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
    cr_assert_eq(out.type, VMS_MSG_HELLO);
    cr_assert_eq(out.nonce, 0xdeadbeefcafef00dull);
    cr_assert_eq(out.caps, VMS_CAP_ALL);
    cr_assert_eq(out.epoch, 7);
    vms_msg_clear(&out);

    vms_msg_init(&m, VMS_MSG_WELCOME);
    vms_msg_set_u64(&m, VMS_F_VERSION, 1);
    vms_msg_set_u64(&m, VMS_F_NONCE, 42);
    vms_msg_set_u64(&m, VMS_F_HOST_NONCE, 43);
    vms_msg_set_u64(&m, VMS_F_EPOCH, 3);
    vms_msg_set_u64(&m, VMS_F_CAPS, VMS_CAP_TIMELINE);
    cr_assert_eq(round_trip(&m, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
    cr_assert_eq(out.type, VMS_MSG_WELCOME);
    cr_assert_eq(out.host_nonce, 43);
    cr_assert_eq(out.caps, VMS_CAP_TIMELINE);
    vms_msg_clear(&out);

    vms_msg_init(&m, VMS_MSG_REPLY);
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, REQ_ID);
    vms_msg_set_u64(&m, VMS_F_STATUS, VMS_STATUS_ERR_DENIED);
    vms_msg_set_str(&m, VMS_F_MESSAGE, "principal 'bob' may not restore on vm1");
    cr_assert_eq(round_trip(&m, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
    cr_assert_eq(out.status, VMS_STATUS_ERR_DENIED);
    cr_assert_str_eq(out.message, "principal 'bob' may not restore on vm1");
    vms_msg_clear(&out);

    vms_msg_init(&m, VMS_MSG_EVENT);
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, REQ_ID);
    vms_msg_set_str(&m, VMS_F_OP, "list");
    vms_msg_set_u64(&m, VMS_F_STATUS, 0);
    vms_msg_set_u64(&m, VMS_F_EPOCH, 2);
    vms_msg_set_u64(&m, VMS_F_SEQ, 99);
    vms_msg_set_str(&m, VMS_F_STATE_ID, "s-1");
    vms_msg_set_str(&m, VMS_F_LABEL, "snap");
    vms_msg_set_str(&m, VMS_F_APP_ID, "org.example.app");
    vms_msg_set_str(&m, VMS_F_HOSTNAME, "host1");
    vms_msg_set_u64(&m, VMS_F_FREE_BYTES, 1ull << 40);
    struct vms_state_info st = {.id = "s-1",
                                .label = "snap",
                                .app_id = "org.example.app",
                                .parent = "",
                                .created = 1700000000};
    cr_assert_eq(vms_msg_add_state(&m, &st), 0);
    st.created++;
    strcpy(st.id, "s-2");
    strcpy(st.parent, "s-1");
    cr_assert_eq(vms_msg_add_state(&m, &st), 0);
    cr_assert_eq(round_trip(&m, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
    cr_assert_eq(out.seq, 99);
    cr_assert_eq(out.n_states, 2);
    cr_assert_str_eq(out.states[1].id, "s-2");
    cr_assert_str_eq(out.states[1].parent, "s-1");
    cr_assert_eq(out.states[1].created, 1700000001);
    cr_assert_eq(out.free_bytes, 1ull << 40);
    vms_msg_clear(&m);
    vms_msg_clear(&out);

    vms_msg_init(&m, VMS_MSG_ACK);
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, REQ_ID);
    vms_msg_set_u64(&m, VMS_F_EPOCH, 2);
    vms_msg_set_u64(&m, VMS_F_SEQ, 99);
    cr_assert_eq(round_trip(&m, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
    cr_assert_eq(out.type, VMS_MSG_ACK);
    vms_msg_clear(&out);

    vms_msg_init(&m, VMS_MSG_TIMELINE);
    vms_msg_set_u64(&m, VMS_F_EPOCH, 5);
    vms_msg_set_str(&m, VMS_F_STATE_ID, "s-1");
    vms_msg_set_str(&m, VMS_F_REASON, "restore");
    cr_assert_eq(round_trip(&m, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
    cr_assert_eq(out.type, VMS_MSG_TIMELINE);
    cr_assert_str_eq(out.reason, "restore");
    vms_msg_clear(&out);
}

/* The encoder writes the marshalling itself (vms-proto.c): what libdbus refused on append it
 * must refuse too, and empty arrays and odd alignments must come out as libdbus writes them. */
Test(proto, encoder_edges_match_libdbus)
{
    struct vms_msg m, out;
    struct vms_decode_report rep;
    uint8_t *buf;
    size_t len;
    char err[256];

    fill_request(&m);
    cr_assert_eq(vms_msg_set_str(&m, VMS_F_SECRET, "tab\there\x01 and \xc3\xa9"), 0);
    cr_assert_eq(round_trip(&m, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
    cr_assert_str_eq(out.secret, "tab\there\x01 and \xc3\xa9", "a secret may hold controls");
    vms_msg_clear(&out);
    const char *not_utf8[] = {"\xff", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "a\xc3"};
    for (size_t i = 0; i < sizeof(not_utf8) / sizeof(not_utf8[0]); i++) {
        cr_assert_eq(vms_msg_set_str(&m, VMS_F_SECRET, not_utf8[i]), 0);
        cr_assert_eq(vms_msg_encode(&m, &buf, &len, err, sizeof(err)), -1, "secret %zu", i);
        cr_assert(strstr(err, "secret"), "%s", err);
    }
    cr_assert_eq(vms_msg_set_app_data(&m, NULL, 0), 0); /* an empty ay */
    cr_assert_eq(vms_msg_set_str(&m, VMS_F_SECRET, "x"), 0);
    cr_assert_eq(vms_msg_set_str(&m, VMS_F_LABEL, "odd"), 0); /* strings that end unaligned */
    cr_assert_eq(round_trip(&m, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
    cr_assert_eq(out.app_data_len, 0);
    vms_msg_clear(&out);
    vms_msg_clear(&m);

    /* empty lists: their padding is there, their length 0 */
    vms_msg_init(&m, VMS_MSG_WELCOME);
    vms_msg_set_u64(&m, VMS_F_VERSION, 1);
    vms_msg_set_u64(&m, VMS_F_NONCE, 1);
    vms_msg_set_u64(&m, VMS_F_EPOCH, 1);
    vms_msg_set_u64(&m, VMS_F_CAPS, 0);
    m.fields |= VMS_BIT(VMS_F_STATES) | VMS_BIT(VMS_F_FOLLOWUPS) | VMS_BIT(VMS_F_RESULTS) |
                VMS_BIT(VMS_F_QUOTAS);
    cr_assert_eq(round_trip(&m, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
    cr_assert_eq(out.n_states + out.n_followups + out.n_results + out.n_quotas, 0);
    vms_msg_clear(&out);
}

/* vms_wb_build writes a message in one pass when it fits its stack buffer, in a second pass
 * when it does not: every size around that edge comes out as libdbus writes it. */
Test(proto, encoder_stack_buffer_edge_matches_libdbus)
{
    uint8_t data[VMS_WB_STACK_BYTES + 64];
    struct vms_msg m, out;
    struct vms_decode_report rep;

    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 7 + 1);
    fill_request(&m);
    for (size_t n = VMS_WB_STACK_BYTES - 600; n <= sizeof(data); n += 3) {
        cr_assert_eq(vms_msg_set_app_data(&m, data, n), 0);
        cr_assert_eq(round_trip(&m, &out, &rep), VMS_DECODE_OK, "%zu bytes: %s", n, rep.error);
        cr_assert_eq(out.app_data_len, n);
        cr_assert_arr_eq(out.app_data, data, n);
        vms_msg_clear(&out);
    }
    vms_msg_clear(&m);
}

Test(proto, string_cap_at_limit_and_one_over)
{
    struct vms_msg m, out;
    struct vms_decode_report rep;
    char s[VMS_STR_MAX + 2];
    memset(s, 'a', sizeof(s));
    s[VMS_STR_MAX] = 0;
    fill_request(&m);
    cr_assert_eq(vms_msg_set_str(&m, VMS_F_LABEL, s), 0);
    cr_assert_eq(round_trip(&m, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
    cr_assert_eq(strlen(out.label), VMS_STR_MAX);
    vms_msg_clear(&out);
    s[VMS_STR_MAX] = 'a';
    s[VMS_STR_MAX + 1] = 0;
    cr_assert_eq(vms_msg_set_str(&m, VMS_F_LABEL, s), -1);
    vms_msg_clear(&m);
}

/* Build a raw wire message with arbitrary dict entries, bypassing the encoder's checks. */
struct raw_field {
    const char *key;
    int type; /* DBUS_TYPE_STRING, _UINT32, _UINT64, or 'a' for ay */
    const void *val;
    int len;
};

static uint8_t *raw_message(const char *member, const struct raw_field *f, int n, size_t *len)
{
    DBusMessage *dm = dbus_message_new_signal(VMS_WIRE_PATH, VMS_WIRE_INTERFACE, member);
    DBusMessageIter it, dict, entry, var, arr;
    char sig[2] = {0, 0};
    dbus_message_iter_init_append(dm, &it);
    dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &dict);
    for (int i = 0; i < n; i++) {
        dbus_message_iter_open_container(&dict, DBUS_TYPE_DICT_ENTRY, NULL, &entry);
        dbus_message_iter_append_basic(&entry, DBUS_TYPE_STRING, &f[i].key);
        if (f[i].type == 'a') {
            const uint8_t *p = f[i].val;
            dbus_message_iter_open_container(&entry, DBUS_TYPE_VARIANT, "ay", &var);
            dbus_message_iter_open_container(&var, DBUS_TYPE_ARRAY, "y", &arr);
            dbus_message_iter_append_fixed_array(&arr, DBUS_TYPE_BYTE, &p, f[i].len);
            dbus_message_iter_close_container(&var, &arr);
        } else {
            sig[0] = (char)f[i].type;
            dbus_message_iter_open_container(&entry, DBUS_TYPE_VARIANT, sig, &var);
            if (f[i].type == DBUS_TYPE_STRING)
                dbus_message_iter_append_basic(&var, f[i].type, &f[i].val);
            else
                dbus_message_iter_append_basic(&var, f[i].type, f[i].val);
        }
        dbus_message_iter_close_container(&entry, &var);
        dbus_message_iter_close_container(&dict, &entry);
    }
    dbus_message_iter_close_container(&it, &dict);
    dbus_message_set_serial(dm, 1);
    char *raw;
    int rlen;
    cr_assert(dbus_message_marshal(dm, &raw, &rlen));
    uint8_t *copy = malloc((size_t)rlen);
    memcpy(copy, raw, (size_t)rlen);
    *len = (size_t)rlen;
    dbus_free(raw);
    dbus_message_unref(dm);
    return copy;
}

static const dbus_uint64_t one = 1;
static const dbus_uint32_t v1 = 1;

Test(proto, app_data_cap_at_limit_and_one_over)
{
    uint8_t *data = calloc(1, VMS_APP_DATA_MAX + 1);
    struct vms_msg m, out;
    struct vms_decode_report rep;
    fill_request(&m);
    cr_assert_eq(vms_msg_set_app_data(&m, data, VMS_APP_DATA_MAX), 0);
    cr_assert_eq(round_trip(&m, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
    cr_assert_eq(out.app_data_len, VMS_APP_DATA_MAX);
    vms_msg_clear(&out);
    cr_assert_eq(vms_msg_set_app_data(&m, data, VMS_APP_DATA_MAX + 1), -1);
    vms_msg_clear(&m);

    /* a hostile peer sends one byte over: rejected with a clear error */
    struct raw_field f[] = {
        {"request_id", DBUS_TYPE_STRING, REQ_ID, 0}, {"op", DBUS_TYPE_STRING, "save", 0},
        {"app_id", DBUS_TYPE_STRING, "a", 0},        {"principal", DBUS_TYPE_STRING, "p", 0},
        {"secret", DBUS_TYPE_STRING, "s", 0},        {"app_data", 'a', data, VMS_APP_DATA_MAX + 1},
    };
    size_t len;
    uint8_t *raw = raw_message("Request", f, 6, &len);
    cr_assert_eq(vms_msg_decode(raw, len, &out, &rep), VMS_DECODE_INVALID);
    cr_assert(strstr(rep.error, "app_data"), "%s", rep.error);
    cr_assert(strstr(rep.error, "cap"), "%s", rep.error);
    free(raw);
    free(data);
}

Test(proto, hostile_string_over_cap_rejected)
{
    char big[VMS_STR_MAX + 2];
    memset(big, 'x', sizeof(big));
    big[VMS_STR_MAX + 1] = 0;
    struct raw_field f[] = {{"epoch", DBUS_TYPE_UINT64, &one, 0},
                            {"reason", DBUS_TYPE_STRING, big, 0}};
    size_t len;
    struct vms_msg out;
    struct vms_decode_report rep;
    uint8_t *raw = raw_message("Timeline", f, 2, &len);
    cr_assert_eq(vms_msg_decode(raw, len, &out, &rep), VMS_DECODE_INVALID);
    cr_assert(strstr(rep.error, "reason"), "%s", rep.error);
    free(raw);
    big[VMS_STR_MAX] = 0;
    raw = raw_message("Timeline", f, 2, &len);
    cr_assert_eq(vms_msg_decode(raw, len, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
    free(raw);
}

Test(proto, frame_cap_enforced_by_encoder)
{
    struct vms_msg m;
    uint8_t *buf;
    size_t len;
    char err[256];
    uint8_t *data = calloc(1, VMS_APP_DATA_MAX);
    fill_request(&m);
    vms_msg_set_app_data(&m, data, VMS_APP_DATA_MAX);
    /* 256 states of ~1 KiB push the message over 128 KiB */
    vms_msg_init(&m, VMS_MSG_EVENT);
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, REQ_ID);
    vms_msg_set_str(&m, VMS_F_OP, "list");
    vms_msg_set_u64(&m, VMS_F_STATUS, 0);
    vms_msg_set_u64(&m, VMS_F_EPOCH, 1);
    vms_msg_set_u64(&m, VMS_F_SEQ, 1);
    struct vms_state_info st;
    memset(&st, 0, sizeof(st));
    memset(st.id, 'i', VMS_STR_MAX);
    memset(st.label, 'l', VMS_STR_MAX);
    memset(st.app_id, 'a', VMS_STR_MAX);
    memset(st.parent, 'p', VMS_STR_MAX);
    for (int i = 0; i < VMS_STATES_MAX; i++)
        cr_assert_eq(vms_msg_add_state(&m, &st), 0);
    cr_assert_eq(vms_msg_add_state(&m, &st), -1, "more than VMS_STATES_MAX accepted");
    cr_assert_eq(vms_msg_encode(&m, &buf, &len, err, sizeof(err)), -1);
    cr_assert(strstr(err, "frame cap"), "%s", err);
    vms_msg_clear(&m);
    free(data);
}

Test(proto, unknown_type_skipped)
{
    struct raw_field f[] = {{"epoch", DBUS_TYPE_UINT64, &one, 0}};
    size_t len;
    struct vms_msg out;
    struct vms_decode_report rep;
    uint8_t *raw = raw_message("FutureThing", f, 1, &len);
    cr_assert_eq(vms_msg_decode(raw, len, &out, &rep), VMS_DECODE_UNKNOWN_TYPE);
    cr_assert_str_eq(rep.unknown_type, "FutureThing");
    free(raw);
}

Test(proto, unknown_field_skipped)
{
    struct raw_field f[] = {{"epoch", DBUS_TYPE_UINT64, &one, 0},
                            {"colour", DBUS_TYPE_STRING, "blue", 0},
                            {"weight", DBUS_TYPE_UINT32, &v1, 0}};
    size_t len;
    struct vms_msg out;
    struct vms_decode_report rep;
    uint8_t *raw = raw_message("Timeline", f, 3, &len);
    cr_assert_eq(vms_msg_decode(raw, len, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
    cr_assert_eq(rep.unknown_fields, 2);
    cr_assert_str_eq(rep.first_unknown_field, "colour");
    cr_assert_eq(out.epoch, 1);
    free(raw);
}

/* Our encoder writes the fields in their order: the canonical decoder refuses another order,
 * which the full decoder takes (a peer of another implementation may write it). */
Test(proto, canonical_refuses_fields_out_of_order)
{
    static const dbus_uint64_t t = 5;
    struct raw_field ours[] = {{"epoch", DBUS_TYPE_UINT64, &one, 0},
                               {"time_ns", DBUS_TYPE_UINT64, &t, 0}},
                     swapped[] = {{"time_ns", DBUS_TYPE_UINT64, &t, 0},
                                  {"epoch", DBUS_TYPE_UINT64, &one, 0}};
    struct vms_msg out;
    struct vms_decode_report rep;
    size_t len;
    uint8_t *raw = raw_message("Timeline", ours, 2, &len);

    cr_assert_eq(vms_msg_decode_canonical(raw, len, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
    cr_assert(out.epoch == 1 && out.time_ns == 5);
    vms_msg_clear(&out);
    free(raw);
    raw = raw_message("Timeline", swapped, 2, &len);
    cr_assert_eq(vms_msg_decode_canonical(raw, len, &out, &rep), VMS_DECODE_INVALID);
    cr_assert(strstr(rep.error, "order"), "%s", rep.error);
    cr_assert_eq(vms_msg_decode(raw, len, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
    cr_assert(out.epoch == 1 && out.time_ns == 5);
    vms_msg_clear(&out);
    free(raw);
}

/* A tiny D-Bus writer in either byte order: libdbus's writer only makes the host's order,
 * and a peer may send either. */
struct bw {
    uint8_t b[1024];
    size_t n;
    int big;
};

static void bw_pad(struct bw *w, size_t align)
{
    while (w->n % align)
        w->b[w->n++] = 0;
}

static void bw_int(struct bw *w, uint64_t v, size_t size)
{
    bw_pad(w, size);
    for (size_t i = 0; i < size; i++)
        w->b[w->n + i] = (uint8_t)(v >> (8 * (w->big ? size - 1 - i : i)));
    w->n += size;
}

static void bw_put(struct bw *w, size_t at, uint32_t v)
{
    size_t n = w->n;

    w->n = at;
    bw_int(w, v, 4);
    w->n = n;
}

static void bw_str(struct bw *w, const char *s)
{
    bw_int(w, strlen(s), 4);
    memcpy(w->b + w->n, s, strlen(s) + 1);
    w->n += strlen(s) + 1;
}

static void bw_sig(struct bw *w, const char *s)
{
    w->b[w->n++] = (uint8_t)strlen(s);
    memcpy(w->b + w->n, s, strlen(s) + 1);
    w->n += strlen(s) + 1;
}

/* an array's length goes at *len_at, counted from *start */
static void bw_array(struct bw *w, size_t align, size_t *len_at, size_t *start)
{
    bw_int(w, 0, 4);
    *len_at = w->n - 4;
    bw_pad(w, align);
    *start = w->n;
}

static void bw_entry(struct bw *w, const char *key, const char *sig)
{
    bw_pad(w, 8);
    bw_str(w, key);
    bw_sig(w, sig);
}

/* A Hello in the order @big, with unknown fields of nested types around the known ones. */
static size_t hello_in_order(struct bw *w, int big)
{
    size_t body_len_at, fields_at, fields, body, dict_at, dict, arr_at, arr;

    memset(w, 0, sizeof(*w));
    w->big = big;
    w->b[w->n++] = big ? 'B' : 'l';
    w->b[w->n++] = 4; /* signal */
    w->b[w->n++] = 1;
    w->b[w->n++] = 1;
    body_len_at = w->n;
    bw_int(w, 0, 4);
    bw_int(w, 1, 4); /* serial */
    bw_array(w, 8, &fields_at, &fields);
    bw_pad(w, 8), w->b[w->n++] = 1, bw_sig(w, "o"), bw_str(w, VMS_WIRE_PATH);
    bw_pad(w, 8), w->b[w->n++] = 2, bw_sig(w, "s"), bw_str(w, VMS_WIRE_INTERFACE);
    bw_pad(w, 8), w->b[w->n++] = 3, bw_sig(w, "s"), bw_str(w, "Hello");
    bw_pad(w, 8), w->b[w->n++] = 8, bw_sig(w, "g"), bw_sig(w, "a{sv}");
    bw_put(w, fields_at, (uint32_t)(w->n - fields));
    bw_pad(w, 8);
    body = w->n;
    bw_array(w, 8, &dict_at, &dict);
    bw_entry(w, "zz_list", "a(st)");
    bw_array(w, 8, &arr_at, &arr);
    bw_pad(w, 8), bw_str(w, "x"), bw_int(w, 5, 8);
    bw_pad(w, 8), bw_str(w, "yy"), bw_int(w, 6, 8);
    bw_put(w, arr_at, (uint32_t)(w->n - arr));
    bw_entry(w, "version", "u");
    bw_int(w, 1, 4);
    bw_entry(w, "zz_nested", "v");
    bw_sig(w, "a{sv}");
    bw_array(w, 8, &arr_at, &arr);
    bw_entry(w, "k", "t");
    bw_int(w, 9, 8);
    bw_put(w, arr_at, (uint32_t)(w->n - arr));
    bw_entry(w, "nonce", "t");
    bw_int(w, 0x0102030405060708ull, 8);
    bw_entry(w, "caps", "as");
    bw_array(w, 4, &arr_at, &arr);
    bw_str(w, "ack");
    bw_str(w, "hostinfo");
    bw_put(w, arr_at, (uint32_t)(w->n - arr));
    bw_entry(w, "zz_tail", "(ybnqd)");
    bw_pad(w, 8), bw_int(w, 1, 1), bw_int(w, 1, 4), bw_int(w, 2, 2), bw_int(w, 3, 2);
    bw_int(w, 0, 8);
    bw_put(w, dict_at, (uint32_t)(w->n - dict));
    bw_put(w, body_len_at, (uint32_t)(w->n - body));
    return w->n;
}

/* The decoder reads the validated bytes itself: either byte order, and unknown fields of any
 * type skipped whole, wherever they are. */
Test(proto, either_byte_order_and_nested_unknown_fields)
{
    for (int big = 0; big <= 1; big++) {
        struct bw w;
        size_t len = hello_in_order(&w, big);
        struct vms_msg out;
        struct vms_decode_report rep;
        DBusMessage *dm = dbus_message_demarshal((const char *)w.b, (int)len, NULL);

        cr_assert_not_null(dm, "libdbus refuses the %s message",
                           big ? "big-endian" : "little-endian");
        dbus_message_unref(dm);
        cr_assert_eq(vms_msg_decode(w.b, len, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
        cr_assert_eq(out.type, VMS_MSG_HELLO);
        cr_assert_eq(out.version, 1);
        cr_assert_eq(out.nonce, 0x0102030405060708ull);
        cr_assert_eq(out.caps, VMS_CAP_ACK | VMS_CAP_HOSTINFO);
        cr_assert_eq(rep.unknown_fields, 3);
        cr_assert_str_eq(rep.first_unknown_field, "zz_list");
        vms_msg_clear(&out);
    }
}

Test(proto, wrong_field_type_missing_field_duplicate_field)
{
    size_t len;
    struct vms_msg out;
    struct vms_decode_report rep;
    struct raw_field wrong[] = {{"epoch", DBUS_TYPE_STRING, "1", 0}};
    uint8_t *raw = raw_message("Timeline", wrong, 1, &len);
    cr_assert_eq(vms_msg_decode(raw, len, &out, &rep), VMS_DECODE_INVALID);
    cr_assert(strstr(rep.error, "expected 't'"), "%s", rep.error);
    free(raw);

    raw = raw_message("Timeline", NULL, 0, &len);
    cr_assert_eq(vms_msg_decode(raw, len, &out, &rep), VMS_DECODE_INVALID);
    cr_assert(strstr(rep.error, "required field 'epoch'"), "%s", rep.error);
    free(raw);

    struct raw_field dup[] = {{"epoch", DBUS_TYPE_UINT64, &one, 0},
                              {"epoch", DBUS_TYPE_UINT64, &one, 0}};
    raw = raw_message("Timeline", dup, 2, &len);
    cr_assert_eq(vms_msg_decode(raw, len, &out, &rep), VMS_DECODE_INVALID);
    cr_assert(strstr(rep.error, "twice"), "%s", rep.error);
    free(raw);
}

Test(proto, bad_characters_rejected)
{
    struct vms_msg m, out;
    struct vms_decode_report rep;
    size_t len;
    /* ids: no spaces or slashes; text: no control characters (log injection) */
    struct raw_field f[] = {{"epoch", DBUS_TYPE_UINT64, &one, 0},
                            {"state_id", DBUS_TYPE_STRING, "../etc/passwd", 0}};
    uint8_t *raw = raw_message("Timeline", f, 2, &len);
    cr_assert_eq(vms_msg_decode(raw, len, &out, &rep), VMS_DECODE_INVALID);
    free(raw);
    struct raw_field g[] = {{"epoch", DBUS_TYPE_UINT64, &one, 0},
                            {"reason", DBUS_TYPE_STRING, "line\nforged log line", 0}};
    raw = raw_message("Timeline", g, 2, &len);
    cr_assert_eq(vms_msg_decode(raw, len, &out, &rep), VMS_DECODE_INVALID);
    free(raw);
    /* the encoder refuses the same */
    fill_request(&m);
    vms_msg_set_str(&m, VMS_F_APP_ID, "has space");
    uint8_t *buf;
    char err[128];
    cr_assert_eq(vms_msg_encode(&m, &buf, &len, err, sizeof(err)), -1);
    vms_msg_set_str(&m, VMS_F_APP_ID, "ok");
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, "NOTHEX");
    cr_assert_eq(vms_msg_encode(&m, &buf, &len, err, sizeof(err)), -1);
    vms_msg_clear(&m);
    cr_assert(vms_valid_text("héllo wörld"));
    cr_assert_not(vms_valid_text("\xc0\xaf"));     /* overlong */
    cr_assert_not(vms_valid_text("\xed\xa0\x80")); /* surrogate */
}

Test(proto, garbage_and_trailing_bytes_rejected)
{
    struct vms_msg m, out;
    struct vms_decode_report rep;
    uint8_t junk[64];
    memset(junk, 'l', sizeof(junk));
    cr_assert_eq(vms_msg_decode(junk, sizeof(junk), &out, &rep), VMS_DECODE_INVALID);
    cr_assert_eq(vms_msg_decode(junk, 3, &out, &rep), VMS_DECODE_INVALID);

    uint8_t *buf;
    size_t len;
    char err[128];
    fill_request(&m);
    cr_assert_eq(vms_msg_encode(&m, &buf, &len, err, sizeof(err)), 0);
    uint8_t *longer = malloc(len + 4);
    memcpy(longer, buf, len);
    memset(longer + len, 0, 4);
    cr_assert_eq(vms_msg_decode(longer, len + 4, &out, &rep), VMS_DECODE_INVALID);
    cr_assert_eq(vms_msg_decode(buf, len - 1, &out, &rep), VMS_DECODE_INVALID);
    free(longer);
    free(buf);
    vms_msg_clear(&m);
}

/* Every message our encoder did not write, the canonical decoder refuses: another byte
 * order, an unknown type, field or capability, bytes after the message; and no single
 * byte changed in an encoded message makes it accept what the full decoder reads
 * differently or refuses. */
Test(proto, canonical_refuses_what_our_encoder_does_not_write)
{
    struct vms_msg m, out;
    struct vms_decode_report rep;
    struct bw w;
    size_t len;
    uint8_t *raw;

    for (int big = 0; big <= 1; big++) {
        len = hello_in_order(&w, big);
        cr_assert_eq(vms_msg_decode(w.b, len, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
        vms_msg_clear(&out);
        cr_assert_eq(vms_msg_decode_canonical(w.b, len, &out, &rep), VMS_DECODE_INVALID);
    }
    struct raw_field unknown[] = {{"epoch", DBUS_TYPE_UINT64, &one, 0},
                                  {"colour", DBUS_TYPE_STRING, "blue", 0}};
    raw = raw_message("Timeline", unknown, 2, &len);
    cr_assert_eq(vms_msg_decode_canonical(raw, len, &out, &rep), VMS_DECODE_INVALID);
    cr_assert(strstr(rep.error, "'colour' is not ours"), "%s", rep.error);
    free(raw);
    raw = raw_message("Timeline", unknown, 1, &len); /* libdbus's bytes, as ours */
    cr_assert_eq(vms_msg_decode_canonical(raw, len, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
    cr_assert_eq(out.epoch, 1);
    vms_msg_clear(&out);
    free(raw);
    raw = raw_message("FutureThing", unknown, 1, &len);
    cr_assert_eq(vms_msg_decode_canonical(raw, len, &out, &rep), VMS_DECODE_INVALID);
    free(raw);
    struct raw_field caps[] = {{"version", DBUS_TYPE_UINT32, &v1, 0},
                               {"min_version", DBUS_TYPE_UINT32, &v1, 0},
                               {"nonce", DBUS_TYPE_UINT64, &one, 0}};
    raw = raw_message("Hello", caps, 3, &len);
    cr_assert_eq(vms_msg_decode_canonical(raw, len, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
    vms_msg_clear(&out);
    free(raw);

    fill_request(&m);
    uint8_t *buf = encoded(&m, &len);
    cr_assert_not_null(buf);
    uint8_t *longer = calloc(1, len + 8);
    memcpy(longer, buf, len);
    cr_assert_eq(vms_msg_decode_canonical(longer, len + 8, &out, &rep), VMS_DECODE_INVALID);
    cr_assert_eq(vms_msg_decode_canonical(buf, len - 1, &out, &rep), VMS_DECODE_INVALID);
    cr_assert_eq(vms_msg_decode_canonical(buf, 3, &out, &rep), VMS_DECODE_INVALID);
    free(longer);

    /* every byte of the request, and of a Hello with capabilities, changed in four ways */
    struct vms_msg hello;
    vms_msg_init(&hello, VMS_MSG_HELLO);
    vms_msg_set_u64(&hello, VMS_F_VERSION, 1);
    vms_msg_set_u64(&hello, VMS_F_MIN_VERSION, 1);
    vms_msg_set_u64(&hello, VMS_F_NONCE, 5);
    vms_msg_set_u64(&hello, VMS_F_CAPS, VMS_CAP_ALL);
    size_t hlen;
    uint8_t *hbuf = encoded(&hello, &hlen);
    cr_assert_not_null(hbuf);
    const uint8_t *msgs[] = {buf, hbuf};
    const size_t lens[] = {len, hlen};
    const uint8_t delta[] = {0x01, 0x20, 0x80, 0xff};
    unsigned refused = 0, accepted = 0;
    for (int k = 0; k < 2; k++) {
        uint8_t *b = malloc(lens[k]);
        for (size_t i = 0; i < lens[k]; i++)
            for (size_t d = 0; d < sizeof(delta); d++) {
                enum vms_decode_result full;
                memcpy(b, msgs[k], lens[k]);
                b[i] ^= delta[d];
                full = vms_msg_decode(b, lens[k], &out, &rep);
                if (canonical_agrees(b, lens[k], full, &out) == VMS_DECODE_OK)
                    accepted++;
                else
                    refused++;
                vms_msg_clear(&out);
            }
        free(b);
    }
    /* changed bytes inside the app data, a string's characters or an integer still read */
    cr_assert_gt(accepted, 0);
    cr_assert_gt(refused, accepted);
    free(hbuf);
    free(buf);
    vms_msg_clear(&m);
}

Test(proto, version_negotiation)
{
    cr_assert_eq(vms_proto_negotiate(1, 1), 1);
    cr_assert_eq(vms_proto_negotiate(5, 1), 1); /* newer peer that still speaks 1 */
    cr_assert_eq(vms_proto_negotiate(5, 3), 0); /* newer peer that dropped 1 */
    cr_assert_eq(vms_proto_negotiate(0, 0), 0); /* older than anything we speak */
}

Test(proto, request_ids_unique_and_valid)
{
    char a[VMS_REQUEST_ID_LEN + 1], b[VMS_REQUEST_ID_LEN + 1];
    cr_assert_eq(vms_request_id_new(a, 1), 0);
    cr_assert_eq(vms_request_id_new(b, 1), 0);
    cr_assert(vms_valid_request_id(a));
    cr_assert_str_neq(a, b);
}

Test(proto, replayed_event_recognised)
{
    static struct vms_dedup d;
    vms_dedup_init(&d);
    cr_assert_eq(vms_dedup_check_and_add(&d, 1, REQ_ID), 1);
    cr_assert_eq(vms_dedup_check_and_add(&d, 1, REQ_ID), 0, "replay not recognised");
    /* the same request in another timeline is a different event */
    cr_assert_eq(vms_dedup_check_and_add(&d, 2, REQ_ID), 1);
    cr_assert_eq(vms_dedup_check_and_add(&d, 1, "bogus"), -1);
    /* bounded: the oldest key is forgotten after capacity inserts */
    char id[VMS_REQUEST_ID_LEN + 1];
    for (int i = 0; i < VMS_DEDUP_CAPACITY; i++) {
        vms_request_id_new(id, 9);
        cr_assert_eq(vms_dedup_check_and_add(&d, 9, id), 1);
    }
    cr_assert_eq(d.count, VMS_DEDUP_CAPACITY);
    cr_assert_not(vms_dedup_seen(&d, 1, REQ_ID));
}

/* ---- channel over a socketpair ---- */

struct got {
    int n;
    struct vms_msg last;
};

static void on_msg(void *opaque, struct vms_channel *c, struct vms_msg *m)
{
    struct got *g = opaque;
    (void)c;
    g->n++;
    vms_msg_clear(&g->last);
    g->last = *m; /* take ownership of heap members */
    vms_msg_init(m, m->type);
}

Test(proto, channel_socketpair_with_garbage_and_hangup)
{
    int sv[2];
    struct vms_channel a, b;
    struct got g;
    struct vms_msg m;

    memset(&g, 0, sizeof(g));
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_assert_eq(vms_channel_init(&a, "a", "vm1", 0), 0);
    cr_assert_eq(vms_channel_init(&b, "b", "vm1", 0), 0);
    vms_channel_attach(&a, sv[0]);
    vms_channel_attach(&b, sv[1]);

    cr_assert_eq(write(sv[0], "\x01\x02junk", 6), 6);
    fill_request(&m);
    cr_assert_eq(vms_channel_send(&a, &m), 0);
    cr_assert_eq(vms_channel_send(&a, &m), 0);
    cr_assert_eq(vms_channel_flush(&a), 1);
    cr_assert_eq(vms_channel_read(&b, 0, on_msg, &g), 1);
    cr_assert_eq(g.n, 2);
    cr_assert_str_eq(g.last.principal, "alice");
    cr_assert_arr_eq(g.last.app_data, "\0\xff\xfe data", 9);
    cr_assert_eq(b.rx.errors[VMS_WIRE_ERR_GARBAGE], 1);

    vms_channel_detach(&a, 1);
    cr_assert_eq(vms_channel_read(&b, 0, on_msg, &g), 0, "hangup not reported");
    vms_msg_clear(&m);
    vms_msg_clear(&g.last);
    vms_channel_free(&a);
    vms_channel_free(&b);
}

/* A channel that reads our encoder's output only (the bridge reading its privsep reader)
 * refuses a frame libdbus would take but our encoder never writes, as a reader taken over
 * by its guest might send; one that tries ours first (the helper reading the bridge)
 * takes it through the full decoder. */
Test(proto, channel_of_our_encoder_refuses_other_frames)
{
    struct raw_field f[] = {{"epoch", DBUS_TYPE_UINT64, &one, 0},
                            {"colour", DBUS_TYPE_STRING, "blue", 0}};
    const enum vms_channel_decode modes[] = {VMS_CHANNEL_DECODE_OURS,
                                             VMS_CHANNEL_DECODE_OURS_FIRST};

    for (int k = 0; k < 2; k++) {
        int sv[2];
        struct vms_channel a, b;
        struct got g;
        struct vms_msg m;
        size_t len, flen;
        uint8_t *raw = raw_message("Timeline", f, 2, &len);
        uint8_t *frame = malloc(VMS_WIRE_ENCODED_MAX(len));

        memset(&g, 0, sizeof(g));
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        cr_assert_eq(vms_channel_init(&a, "a", "vm1", 0), 0);
        cr_assert_eq(vms_channel_init(&b, "b", "vm1", 0), 0);
        b.decode = modes[k];
        vms_channel_attach(&a, sv[0]);
        vms_channel_attach(&b, sv[1]);
        flen = vms_wire_encode(raw, len, frame, VMS_WIRE_ENCODED_MAX(len));
        cr_assert_gt(flen, 0);
        cr_assert_eq(write(sv[0], frame, flen), (ssize_t)flen);
        fill_request(&m);
        cr_assert_eq(vms_channel_send(&a, &m), 0);
        cr_assert_eq(vms_channel_flush(&a), 1);
        cr_assert_eq(vms_channel_read(&b, 0, on_msg, &g), 1);
        if (modes[k] == VMS_CHANNEL_DECODE_OURS) {
            cr_assert_eq(g.n, 1, "only our encoder's request is taken");
            cr_assert_eq(b.msgs_bad, 1);
        } else {
            cr_assert_eq(g.n, 2, "both are taken");
            cr_assert_eq(b.msgs_bad, 0);
        }
        cr_assert_str_eq(g.last.principal, "alice");
        vms_msg_clear(&m);
        vms_msg_clear(&g.last);
        vms_channel_free(&a);
        vms_channel_free(&b);
        free(frame);
        free(raw);
    }
}

/* What the privsep reader does with each message: pass on as it came what the canonical
 * decoder took (c->canonical), re-encode the rest. */
static void relay_msg(void *opaque, struct vms_channel *c, struct vms_msg *m)
{
    struct vms_channel *out = opaque;
    uint8_t *enc;
    size_t len;
    char err[256];

    if (m->type == VMS_MSG_TIMELINE) { /* the frame with a field our encoder does not write */
        cr_assert_null(c->canonical, "the canonical decoder took a field it does not know");
        cr_assert_eq(vms_channel_send(out, m), 0);
        return;
    }
    cr_assert_not_null(c->canonical, "our encoder's %s was not taken canonically",
                       vms_msg_type_name(m->type));
    cr_assert_eq(vms_msg_encode(m, &enc, &len, err, sizeof(err)), 0, "%s", err);
    cr_assert(len == c->canonical_len && memcmp(enc, c->canonical, len) == 0,
              "the bytes passed on are not what our encoder writes");
    free(enc);
    cr_assert_eq(vms_channel_send_payload(out, c->canonical, c->canonical_len, "request", NULL), 0);
}

Test(proto, channel_passes_our_encoders_payload_on_as_it_came)
{
    struct raw_field f[] = {{"epoch", DBUS_TYPE_UINT64, &one, 0},
                            {"colour", DBUS_TYPE_STRING, "blue", 0}};
    int in[2], out[2];
    struct vms_channel guest, reader_in, reader_out, parent;
    struct got g;
    struct vms_msg m;
    size_t len;
    uint8_t *raw = raw_message("Timeline", f, 2, &len);
    size_t cap = VMS_WIRE_ENCODED_MAX(len), flen;
    uint8_t *frame = malloc(cap);

    memset(&g, 0, sizeof(g));
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, in), 0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, out), 0);
    cr_assert_eq(vms_channel_init(&guest, "guest", "vm1", 0), 0);
    cr_assert_eq(vms_channel_init(&reader_in, "reader-in", "vm1", 0), 0);
    cr_assert_eq(vms_channel_init(&reader_out, "reader-out", "vm1", 0), 0);
    cr_assert_eq(vms_channel_init(&parent, "parent", "vm1", 0), 0);
    reader_in.decode = VMS_CHANNEL_DECODE_OURS_FIRST;
    parent.decode = VMS_CHANNEL_DECODE_OURS;
    vms_channel_attach(&guest, in[0]);
    vms_channel_attach(&reader_in, in[1]);
    vms_channel_attach(&reader_out, out[0]);
    vms_channel_attach(&parent, out[1]);
    flen = vms_wire_encode(raw, len, frame, cap);
    cr_assert_gt(flen, 0);
    cr_assert_eq(write(in[0], frame, flen), (ssize_t)flen);
    fill_request(&m);
    cr_assert_eq(vms_msg_set_app_data(&m, (const uint8_t *)"data", 4), 0);
    cr_assert_eq(vms_channel_send(&guest, &m), 0);
    cr_assert_eq(vms_channel_flush(&guest), 1);
    cr_assert_eq(vms_channel_read(&reader_in, 0, relay_msg, &reader_out), 1);
    cr_assert_null(reader_in.canonical, "left pointing into the deframer's buffer");
    cr_assert_eq(vms_channel_flush(&reader_out), 1);
    cr_assert_eq(vms_channel_read(&parent, 0, on_msg, &g), 1);
    cr_assert_eq(g.n, 2, "the parent took %d of the 2 messages", g.n);
    cr_assert_eq(parent.msgs_bad, 0);
    cr_assert_str_eq(g.last.principal, "alice");
    cr_assert(g.last.app_data_len == 4 && memcmp(g.last.app_data, "data", 4) == 0);
    vms_msg_clear(&m);
    vms_msg_clear(&g.last);
    vms_channel_free(&guest);
    vms_channel_free(&reader_in);
    vms_channel_free(&reader_out);
    vms_channel_free(&parent);
    free(frame);
    free(raw);
}

Test(proto, channel_output_queue_bounded)
{
    struct vms_channel a;
    struct vms_msg m;
    int sent = 0;
    cr_assert_eq(vms_channel_init(&a, "a", NULL, 4096), 0);
    fill_request(&m);
    /* no fd: nothing drains; the queue must refuse instead of growing */
    for (int i = 0; i < 100; i++)
        if (vms_channel_send(&a, &m) == 0)
            sent++;
    cr_assert_lt(sent, 100);
    cr_assert_leq(a.tx_len, 4096);
    vms_msg_clear(&m);
    vms_channel_free(&a);
}

/* Issue 14: follow-ups, their results, quotas and the hostinfo fields round-trip; the lists
 * are capped and their names checked like every other id. */
Test(proto, issue14_lists_round_trip_and_caps)
{
    struct vms_msg m, out;

    fill_request(&m);
    cr_assert_eq(vms_msg_add_followup(&m, "set-memory", 256u << 20), 0);
    cr_assert_eq(vms_msg_add_followup(&m, "hostinfo", 0), 0);
    cr_assert_eq(round_trip(&m, &out, NULL), VMS_DECODE_OK);
    cr_assert_eq(out.n_followups, 2);
    cr_assert_str_eq(out.followups[0].op, "set-memory");
    cr_assert_eq(out.followups[0].arg, 256u << 20);
    vms_msg_clear(&out);
    for (int i = 2; i < VMS_FOLLOWUPS_MAX; i++)
        cr_assert_eq(vms_msg_add_followup(&m, "hostinfo", 0), 0);
    cr_assert_eq(vms_msg_add_followup(&m, "hostinfo", 0), -1, "over VMS_FOLLOWUPS_MAX");
    cr_assert_eq(vms_msg_add_followup(&m, "bad name", 0), -1);
    cr_assert_eq(vms_msg_add_followup(&m, "a-name-of-thirty-two-bytes-abcde", 0), -1);
    vms_msg_clear(&m);

    vms_msg_init(&m, VMS_MSG_EVENT);
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, "0123456789abcdef0123456789abcdef");
    vms_msg_set_str(&m, VMS_F_OP, "restore");
    vms_msg_set_u64(&m, VMS_F_STATUS, 0);
    vms_msg_set_u64(&m, VMS_F_EPOCH, 2);
    vms_msg_set_u64(&m, VMS_F_SEQ, 9);
    vms_msg_set_str(&m, VMS_F_CREATOR, "org.example.A");
    cr_assert_eq(vms_msg_add_result(&m, "set-memory", 7, "the hypervisor failed"), 0);
    cr_assert_eq(vms_msg_add_result(&m, "hostinfo", 0, ""), 0);
    cr_assert_eq(vms_msg_add_result(&m, "hostinfo", 0, "bad\ntext"), -1);
    cr_assert_eq(vms_msg_add_quota(&m, "states", 16, 3), 0);
    vms_msg_set_u64(&m, VMS_F_HOST_MEM_TOTAL, 1ull << 34);
    vms_msg_set_u64(&m, VMS_F_HOST_CPUS, 8);
    vms_msg_set_str(&m, VMS_F_OPS, "save restore list");
    cr_assert_eq(round_trip(&m, &out, NULL), VMS_DECODE_OK);
    cr_assert_str_eq(out.creator, "org.example.A");
    cr_assert_eq(out.n_results, 2);
    cr_assert_eq(out.results[0].status, 7);
    cr_assert_str_eq(out.results[0].message, "the hypervisor failed");
    cr_assert_eq(out.n_quotas, 1);
    cr_assert_eq(out.quotas[0].used, 3);
    cr_assert_eq(out.host_mem_total, 1ull << 34);
    cr_assert_eq(out.host_cpus, 8);
    cr_assert_str_eq(out.ops, "save restore list");
    vms_msg_clear(&out);
    vms_msg_clear(&m);
}

/* ---- what a hostile peer's text can do to the log ---- */

Test(proto, guest_text_in_logs_is_escaped_and_capped)
{
    static const char evil_key[] = "x\n<0>vm=vm2: forged line\x1b[31m\\";
    struct raw_field f[] = {{"epoch", DBUS_TYPE_UINT64, &one, 0},
                            {evil_key, DBUS_TYPE_STRING, "blue", 0}};
    struct vms_channel c;
    struct log_capture cap;
    uint8_t frame[4096], long_key[300];
    size_t len, flen, lines;
    uint8_t *raw;
    char *text;
    struct got g;

    memset(&g, 0, sizeof(g));
    vms_log_init("test", LOG_DEBUG);
    cr_assert_eq(vms_channel_init(&c, "vm1/port-a", "vm1", 0), 0);
    log_capture_start(&cap);
    raw = raw_message("Timeline", f, 2, &len);
    flen = vms_wire_encode(raw, len, frame, sizeof(frame));
    cr_assert_gt(flen, 0);
    vms_channel_feed(&c, frame, flen, on_msg, &g);
    free(raw);
    /* a long key: shown capped */
    memset(long_key, 'k', sizeof(long_key) - 1);
    long_key[sizeof(long_key) - 1] = 0;
    f[1].key = (const char *)long_key;
    raw = raw_message("Timeline", f, 2, &len);
    flen = vms_wire_encode(raw, len, frame, sizeof(frame));
    vms_channel_feed(&c, frame, flen, on_msg, &g);
    free(raw);
    text = log_capture_stop(&cap, &lines);
    vms_log_init("test", LOG_ERR);
    cr_assert_eq(g.n, 2);
    cr_assert_eq(lines, 2, "one line per message, got:\n%s", text);
    cr_assert_null(strstr(text, "\n<0>"), "a forged line: %s", text);
    cr_assert_null(strchr(text, '\x1b'), "raw ESC logged: %s", text);
    cr_assert_not_null(strstr(text, "x\\x0a<0>vm=vm2: forged line\\x1b[31m\\x5c"), "%s", text);
    cr_assert_null(strstr(text, (const char *)long_key + 200), "key not capped: %s", text);
    cr_assert_not_null(strstr(text, "kkk..."), "%s", text);
    free(text);
    vms_msg_clear(&g.last);
    vms_channel_free(&c);
}

Test(proto, vms_esc_keeps_printable_ascii_only)
{
    cr_assert_str_eq(vms_esc("plain text-1.2:@"), "plain text-1.2:@");
    cr_assert_str_eq(vms_esc("a\nb"), "a\\x0ab");
    cr_assert_str_eq(vms_esc("\xc3\xa9"), "\\xc3\\xa9");
    cr_assert_str_eq(vms_esc("back\\slash"), "back\\x5cslash");
    cr_assert_str_eq(vms_esc(NULL), "(null)");
}

Test(proto, log_limit_bursts_then_summarises)
{
    struct vms_log_limit l;
    struct log_capture cap;
    size_t lines;
    char *text;
    int allowed = 0;

    memset(&l, 0, sizeof(l));
    vms_log_init("test", LOG_DEBUG);
    log_capture_start(&cap);
    for (int i = 0; i < 10000; i++)
        allowed += vms_log_allow_at(&l, 100.0 + i * 1e-4, "vm1", "flood");
    cr_assert_eq(allowed, VMS_LOG_BURST);
    vms_log_limit_flush(&l, 100.0 + VMS_LOG_WINDOW, "vm1", "flood");
    text = log_capture_stop(&cap, &lines);
    vms_log_init("test", LOG_ERR);
    cr_assert_eq(lines, 1, "%s", text);
    cr_assert_not_null(strstr(text, "vm=vm1: 9990 similar messages (flood) suppressed"), "%s",
                       text);
    free(text);
    /* the next window allows a burst again */
    cr_assert(vms_log_allow_at(&l, 100.0 + VMS_LOG_WINDOW + 0.5, "vm1", "flood"));
}

/* Issue 14: set-memory's mode travels as an id; a mode with characters outside the id
 * alphabet is refused by the encoder (and so never reaches the bridge). */
Test(proto, set_memory_mode_round_trips)
{
    struct vms_msg in, out;
    struct vms_decode_report rep;
    uint8_t *buf = NULL;
    size_t len;
    char err[256];

    fill_request(&in);
    cr_assert_eq(vms_msg_set_str(&in, VMS_F_OP, "set-memory"), 0);
    vms_msg_set_u64(&in, VMS_F_BYTES, 192u << 20);
    cr_assert_eq(vms_msg_set_str(&in, VMS_F_MODE, VMS_MEM_MODE_OFFLINE), 0);
    cr_assert_eq(round_trip(&in, &out, &rep), VMS_DECODE_OK, "%s", rep.error);
    cr_assert(vms_msg_has(&out, VMS_F_MODE));
    cr_assert_str_eq(out.mode, "offline");
    cr_assert_eq(out.bytes, 192u << 20);
    vms_msg_clear(&out);
    cr_assert_eq(vms_msg_set_str(&in, VMS_F_MODE, "off line"), 0);
    cr_assert_eq(vms_msg_encode(&in, &buf, &len, err, sizeof(err)), -1, "a mode that is no id");
    free(buf);
    vms_msg_clear(&in);
}
