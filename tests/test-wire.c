/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * test-wire.c — framing: round trips, caps, truncation, garbage and resync.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "vms-wire.h"

struct collected {
    int frames;
    int errors[VMS_WIRE_ERR__COUNT];
    size_t last_len;
    uint8_t last[VMS_WIRE_PAYLOAD_MAX];
};

static void feed_all(struct vms_deframer *d, const uint8_t *data, size_t len, struct collected *c)
{
    while (len) {
        const uint8_t *p = NULL;
        size_t used = 0, plen = 0;
        enum vms_wire_error e;
        enum vms_deframe_result r = vms_deframer_feed(d, data, len, &used, &p, &plen, &e);
        cr_assert(used > 0 || r == VMS_DEFRAME_NEED_MORE);
        data += used;
        len -= used;
        if (r == VMS_DEFRAME_FRAME) {
            c->frames++;
            c->last_len = plen;
            memcpy(c->last, p, plen);
        } else if (r == VMS_DEFRAME_ERROR) {
            c->errors[e]++;
        } else {
            break;
        }
    }
}

static size_t encode(const uint8_t *p, size_t n, uint8_t *out)
{
    return vms_wire_encode(p, n, out, VMS_WIRE_FRAME_MAX_ENCODED);
}

static struct vms_deframer d;
static struct collected *col;
static uint8_t *out;

static void setup(void)
{
    cr_assert_eq(vms_deframer_init(&d), 0);
    col = calloc(1, sizeof(*col));
    out = malloc(2 * VMS_WIRE_FRAME_MAX_ENCODED);
}
static void teardown(void)
{
    vms_deframer_free(&d);
    free(col);
    free(out);
}

TestSuite(wire, .init = setup, .fini = teardown);

Test(wire, crc32c_known_vector)
{
    /* RFC 3720 test vector: "123456789" -> 0xE3069283 */
    cr_assert_eq(vms_crc32c(0, "123456789", 9), 0xE3069283u);
}

/* The polynomial bit by bit: what any implementation vms_crc32c() picks must agree with. */
static uint32_t crc32c_bitwise(uint32_t crc, const uint8_t *p, size_t len)
{
    crc = ~crc;
    while (len--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
    return ~crc;
}

Test(wire, crc32c_matches_the_polynomial_at_every_length_and_alignment)
{
    uint8_t buf[200];

    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 131u + 7u);
    for (size_t off = 0; off < 8; off++)
        for (size_t len = 0; len + off <= 72; len++) {
            uint32_t want = crc32c_bitwise(0, buf + off, len);
            cr_assert_eq(vms_crc32c(0, buf + off, len), want, "offset %zu length %zu", off, len);
            /* continued in two parts, as the framer sums header then payload */
            cr_assert_eq(
                vms_crc32c(vms_crc32c(0, buf + off, len / 3), buf + off + len / 3, len - len / 3),
                want, "offset %zu length %zu in two parts", off, len);
        }
    cr_assert_eq(vms_crc32c(0, buf, sizeof(buf)), crc32c_bitwise(0, buf, sizeof(buf)));
}

Test(wire, round_trip_with_escapes)
{
    uint8_t payload[512];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)i; /* includes 0xFE and 0xFF */
    size_t n = encode(payload, sizeof(payload), out);
    cr_assert_gt(n, sizeof(payload));
    for (size_t i = 1; i < n; i++)
        cr_assert_neq(out[i], 0xFF, "sync byte inside frame at %zu", i);
    feed_all(&d, out, n, col);
    cr_assert_eq(col->frames, 1);
    cr_assert_eq(col->last_len, sizeof(payload));
    cr_assert_arr_eq(col->last, payload, sizeof(payload));
}

Test(wire, empty_payload)
{
    size_t n = encode(NULL, 0, out);
    cr_assert_gt(n, 0);
    feed_all(&d, out, n, col);
    cr_assert_eq(col->frames, 1);
    cr_assert_eq(col->last_len, 0);
}

Test(wire, byte_by_byte)
{
    const uint8_t payload[] = {1, 0xFF, 2, 0xFE, 3};
    size_t n = encode(payload, sizeof(payload), out);
    for (size_t i = 0; i < n; i++)
        feed_all(&d, out + i, 1, col);
    cr_assert_eq(col->frames, 1);
    cr_assert_arr_eq(col->last, payload, sizeof(payload));
}

Test(wire, cap_at_limit_and_one_over)
{
    uint8_t *big = calloc(1, VMS_WIRE_PAYLOAD_MAX + 1);
    memset(big, 0xAB, VMS_WIRE_PAYLOAD_MAX + 1);
    size_t n = encode(big, VMS_WIRE_PAYLOAD_MAX, out);
    cr_assert_gt(n, 0);
    feed_all(&d, out, n, col);
    cr_assert_eq(col->frames, 1);
    cr_assert_eq(col->last_len, VMS_WIRE_PAYLOAD_MAX);
    /* the encoder refuses one byte over */
    cr_assert_eq(encode(big, VMS_WIRE_PAYLOAD_MAX + 1, out), 0);
    free(big);
}

/* The buffer starts small and grows to a frame's declared size: small, big,
 * small again, each byte by byte too, all come out whole. */
Test(wire, buffer_grows_on_demand)
{
    size_t sizes[] = {10, 5000, VMS_WIRE_PAYLOAD_MAX, 3, 70000};
    uint8_t *p = malloc(VMS_WIRE_PAYLOAD_MAX);

    for (size_t i = 0; i < VMS_WIRE_PAYLOAD_MAX; i++)
        p[i] = (uint8_t)(i * 7 + 1);
    cr_assert_lt(d.cap, VMS_WIRE_PAYLOAD_MAX, "an idle deframer holds %zu bytes", d.cap);
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t n = encode(p, sizes[k], out);
        int before = col->frames;
        if (k % 2)
            feed_all(&d, out, n, col);
        else
            for (size_t i = 0; i < n; i++)
                feed_all(&d, out + i, 1, col);
        cr_assert_eq(col->frames, before + 1);
        cr_assert_eq(col->last_len, sizes[k]);
        cr_assert_arr_eq(col->last, p, sizes[k]);
    }
    cr_assert_leq(d.cap, VMS_WIRE_HEADER_LEN + VMS_WIRE_PAYLOAD_MAX + VMS_WIRE_TRAILER_LEN);
    free(p);
}

Test(wire, reader_rejects_declared_length_over_cap)
{
    /* hand-made header claiming cap+1 bytes, then a good frame */
    uint8_t bad[] = {0xFF, 1, 0x01, 0x00, 0x02, 0x00}; /* 0x00020001 = 128 KiB + 1 */
    feed_all(&d, bad, sizeof(bad), col);
    cr_assert_eq(col->errors[VMS_WIRE_ERR_TOO_LONG], 1);
    const uint8_t ok[] = "ok";
    size_t n = encode(ok, 2, out);
    feed_all(&d, out, n, col);
    cr_assert_eq(col->frames, 1);
}

Test(wire, truncated_frame_then_good_frame)
{
    const uint8_t a[] = "first frame, cut short";
    const uint8_t b[] = "second";
    size_t na = encode(a, sizeof(a), out);
    size_t nb = encode(b, sizeof(b), out + na / 2);
    /* only half of frame a, then all of frame b */
    feed_all(&d, out, na / 2 + nb, col);
    cr_assert_eq(col->errors[VMS_WIRE_ERR_TRUNCATED], 1);
    cr_assert_eq(col->frames, 1);
    cr_assert_arr_eq(col->last, b, sizeof(b));
}

Test(wire, truncated_at_end_waits)
{
    const uint8_t a[] = "payload";
    size_t n = encode(a, sizeof(a), out);
    feed_all(&d, out, n - 1, col);
    cr_assert_eq(col->frames, 0);
    feed_all(&d, out + n - 1, 1, col);
    cr_assert_eq(col->frames, 1);
}

Test(wire, garbage_before_between_and_inside)
{
    const uint8_t p[] = "hello";
    const uint8_t junk[] = "\x01\x02garbage\xFE\x07";
    uint8_t buf[512];
    size_t pos = 0, n;

    memcpy(buf + pos, junk, sizeof(junk)); /* before */
    pos += sizeof(junk);
    n = encode(p, sizeof(p), buf + pos);
    pos += n;
    memcpy(buf + pos, junk, sizeof(junk)); /* between */
    pos += sizeof(junk);
    n = encode(p, sizeof(p), buf + pos);
    buf[pos + n / 2] ^= 0x5A; /* inside: corrupt a byte of this frame */
    if (buf[pos + n / 2] == 0xFF || buf[pos + n / 2] == 0xFE)
        buf[pos + n / 2] = 0x42;
    pos += n;
    n = encode(p, sizeof(p), buf + pos); /* a good frame after all that */
    pos += n;
    feed_all(&d, buf, pos, col);
    cr_assert_eq(col->frames, 2, "frames=%d", col->frames);
    cr_assert_geq(col->errors[VMS_WIRE_ERR_GARBAGE], 2);
    cr_assert_eq(col->errors[VMS_WIRE_ERR_CRC], 1);
    cr_assert_arr_eq(col->last, p, sizeof(p));
}

Test(wire, bad_escape_then_resync)
{
    uint8_t bad[] = {0xFF, 1, 0xFE, 0x09};
    feed_all(&d, bad, sizeof(bad), col);
    cr_assert_eq(col->errors[VMS_WIRE_ERR_BAD_ESCAPE], 1);
    const uint8_t p[] = "x";
    size_t n = encode(p, 1, out);
    feed_all(&d, out, n, col);
    cr_assert_eq(col->frames, 1);
}

Test(wire, wrong_frame_version)
{
    const uint8_t p[] = "v";
    size_t n = encode(p, 1, out);
    out[1] = 2; /* version byte */
    feed_all(&d, out, n, col);
    cr_assert_eq(col->errors[VMS_WIRE_ERR_VERSION], 1);
    cr_assert_eq(col->frames, 0);
    n = encode(p, 1, out);
    feed_all(&d, out, n, col);
    cr_assert_eq(col->frames, 1);
}

Test(wire, random_garbage_never_yields_bad_frames)
{
    uint8_t junk[4096];
    unsigned seed = 12345;
    for (size_t i = 0; i < sizeof(junk); i++) {
        seed = seed * 1103515245u + 12345u;
        junk[i] = (uint8_t)(seed >> 16);
    }
    feed_all(&d, junk, sizeof(junk), col);
    const uint8_t p[] = "after the storm";
    size_t n = encode(p, sizeof(p), out);
    feed_all(&d, out, n, col);
    cr_assert_eq(col->last_len, sizeof(p));
    cr_assert_arr_eq(col->last, p, sizeof(p));
}

Test(wire, reset_forgets_partial)
{
    const uint8_t p[] = "abc";
    size_t n = encode(p, sizeof(p), out);
    feed_all(&d, out, n - 2, col);
    vms_deframer_reset(&d);
    feed_all(&d, out + n - 2, 2, col); /* tail alone is garbage */
    cr_assert_eq(col->frames, 0);
    feed_all(&d, out, n, col);
    cr_assert_eq(col->frames, 1);
}

/* The escaping as the format states it, a byte at a time: the encoder's run-by-run copy
 * must give exactly this. */
static size_t reference_escape(const uint8_t *src, size_t n, uint8_t *dst)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == VMS_WIRE_SYNC || src[i] == VMS_WIRE_ESC) {
            dst[k++] = VMS_WIRE_ESC;
            dst[k++] = src[i] == VMS_WIRE_SYNC ? 0x01 : 0x00;
        } else {
            dst[k++] = src[i];
        }
    }
    return k;
}

static unsigned next_random(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return *seed >> 16;
}

Test(wire, encoder_matches_bytewise_escaping)
{
    static uint8_t payload[8192], want[1 + 2 * (VMS_WIRE_HEADER_LEN + sizeof(payload) + 4)];
    unsigned seed = 7;

    for (int round = 0; round < 300; round++) {
        size_t n = next_random(&seed) % sizeof(payload);
        unsigned density = next_random(&seed) % 4; /* none, few, many, all special bytes */
        uint8_t header[VMS_WIRE_HEADER_LEN] = {VMS_WIRE_VERSION, n & 0xFF, (n >> 8) & 0xFF, 0, 0};
        uint8_t trailer[4];
        uint32_t crc;
        size_t k = 1, got;

        for (size_t i = 0; i < n; i++) {
            unsigned r = next_random(&seed);
            int special =
                density == 3 || (density == 2 && r % 3 == 0) || (density == 1 && r % 97 == 0);
            payload[i] = special ? (r & 1 ? VMS_WIRE_SYNC : VMS_WIRE_ESC) : (uint8_t)(r % 0xFE);
        }
        crc = vms_crc32c(vms_crc32c(0, header, sizeof(header)), payload, n);
        for (int b = 0; b < 4; b++)
            trailer[b] = (crc >> (8 * b)) & 0xFF;
        want[0] = VMS_WIRE_SYNC;
        k += reference_escape(header, sizeof(header), want + k);
        k += reference_escape(payload, n, want + k);
        k += reference_escape(trailer, sizeof(trailer), want + k);
        got = encode(payload, n, out);
        cr_assert_eq(got, k, "round %d: %zu bytes, want %zu", round, got, k);
        cr_assert_arr_eq(out, want, k, "round %d", round);
        /* one byte short of what it needs, the encoder refuses */
        cr_assert_eq(vms_wire_encode(payload, n, out, k - 1), 0, "round %d", round);
    }
}

/* Frames, garbage, corrupt and truncated frames in one stream give the same frames and
 * errors whether the stream comes whole, in random chunks or a byte at a time (the reader
 * copies plain runs at once, and a run may end at any chunk boundary). */
Test(wire, same_result_whole_in_chunks_and_bytewise)
{
    static uint8_t stream[1 << 18];
    static uint8_t payload[3000];
    unsigned seed = 99;
    size_t len = 0;

    while (len + VMS_WIRE_FRAME_MAX_ENCODED / 40 < sizeof(stream)) {
        size_t n = next_random(&seed) % sizeof(payload), k;
        for (size_t i = 0; i < n; i++) {
            unsigned r = next_random(&seed);
            payload[i] = r % 11 == 0 ? (r & 1 ? VMS_WIRE_SYNC : VMS_WIRE_ESC) : (uint8_t)r;
        }
        k = encode(payload, n, stream + len);
        switch (next_random(&seed) % 6) {
        case 0: /* a flipped byte: checksum, escape or version error */
            stream[len + 1 + next_random(&seed) % (k - 1)] ^= 0x5A;
            break;
        case 1: /* cut short: the next sync truncates it */
            k = 1 + next_random(&seed) % k;
            break;
        case 2: /* garbage after it */
            for (unsigned g = next_random(&seed) % 50; g; g--)
                stream[len + k++] = (uint8_t)next_random(&seed);
            break;
        }
        len += k;
    }
    for (int how = 0; how < 3; how++) {
        struct vms_deframer dd;
        struct collected *c = calloc(1, sizeof(*c));
        cr_assert_eq(vms_deframer_init(&dd), 0);
        if (how == 0) {
            feed_all(&dd, stream, len, c);
        } else {
            for (size_t at = 0; at < len;) {
                size_t step = how == 1 ? 1 + next_random(&seed) % 700 : 1;
                step = step > len - at ? len - at : step;
                feed_all(&dd, stream + at, step, c);
                at += step;
            }
        }
        vms_deframer_free(&dd);
        if (how == 0) {
            cr_assert_gt(c->frames, 20);
            cr_assert_gt(c->errors[VMS_WIRE_ERR_CRC] + c->errors[VMS_WIRE_ERR_BAD_ESCAPE], 0);
            cr_assert_gt(c->errors[VMS_WIRE_ERR_TRUNCATED], 0);
            cr_assert_gt(c->errors[VMS_WIRE_ERR_GARBAGE], 0);
            memcpy(col, c, sizeof(*c));
        } else {
            cr_assert_eq(c->frames, col->frames, "feeding %d: %d frames, whole %d", how, c->frames,
                         col->frames);
            cr_assert_arr_eq(c->errors, col->errors, sizeof(c->errors), "feeding %d", how);
            cr_assert_eq(c->last_len, col->last_len);
            cr_assert_arr_eq(c->last, col->last, c->last_len);
        }
        free(c);
    }
}
