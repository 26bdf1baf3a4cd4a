/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vms-wire.c — resynchronising framing (see vms-wire.h for the format).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "vms-wire.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))

static uint32_t crc32c_table[256];
static int crc32c_ready;
static uint32_t (*crc32c_run)(uint32_t crc, const uint8_t *p, size_t len);

static uint32_t crc32c_by_table(uint32_t crc, const uint8_t *p, size_t len)
{
    while (len--)
        crc = crc32c_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* SSE 4.2's crc32 instruction computes this very polynomial, 8 bytes a step: every frame is
 * summed at least twice on its way (the sender, the reader, the re-encoding), and the table
 * loop was ~2 % of each daemon's time per request and more of the fuzzers'. */
__attribute__((target("sse4.2"))) static uint32_t crc32c_by_sse42(uint32_t crc, const uint8_t *p,
                                                                  size_t len)
{
    uint64_t c = crc;

    for (; len >= 8; p += 8, len -= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
    }
    crc = (uint32_t)c;
    while (len--)
        crc = __builtin_ia32_crc32qi(crc, *p++);
    return crc;
}
#endif

static void crc32c_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc32c_table[i] = c;
    }
    crc32c_run = crc32c_by_table;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (__builtin_cpu_supports("sse4.2"))
        crc32c_run = crc32c_by_sse42;
#endif
    crc32c_ready = 1;
}

uint32_t vms_crc32c(uint32_t crc, const void *data, size_t len)
{
    if (!crc32c_ready)
        crc32c_init();
    return ~crc32c_run(~crc, data, len);
}

/* The two bytes that need escaping are the top two byte values: a byte needs it iff >= ESC. */
_Static_assert(VMS_WIRE_ESC == 0xFE && VMS_WIRE_SYNC == 0xFF, "escaped bytes are 0xFE and 0xFF");

/* Length of the run at @p (@n bytes) before the first byte that needs escaping. Frames are
 * copied run by run (memcpy), not a byte a step: app data of 64 KiB is mostly runs, and the
 * byte loop was most of a frame's cost. One pass, 16 bytes a step: two memchr() would rescan
 * the rest of a frame for a sync byte it never holds (quadratic in the frame's length). */
static size_t plain_run(const uint8_t *p, size_t n)
{
    size_t i = 0;

#if defined(__SSE2__)
    const __m128i esc = _mm_set1_epi8((char)VMS_WIRE_ESC);

    for (; i + 16 <= n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
        /* v >= 0xFE, unsigned: max(v, 0xFE) == v */
        unsigned hit = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(v, esc), v));
        if (hit)
            return i + (size_t)__builtin_ctz(hit);
    }
#endif
    for (; i < n; i++)
        if (p[i] >= VMS_WIRE_ESC)
            return i;
    return n;
}

static size_t put_escaped(uint8_t *out, size_t pos, size_t cap, const uint8_t *src, size_t n)
{
    while (n && pos) {
        size_t run = plain_run(src, n);

        if (pos + run > cap)
            return 0;
        memcpy(out + pos, src, run);
        pos += run;
        src += run;
        n -= run;
        if (!n)
            break;
        if (pos + 2 > cap)
            return 0;
        out[pos++] = VMS_WIRE_ESC;
        out[pos++] = *src == VMS_WIRE_SYNC ? 0x01 : 0x00;
        src++;
        n--;
    }
    return pos;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = v & 0xFF;
    p[1] = (v >> 8) & 0xFF;
    p[2] = (v >> 16) & 0xFF;
    p[3] = (v >> 24) & 0xFF;
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

size_t vms_wire_encode(const uint8_t *payload, size_t len, uint8_t *out, size_t out_cap)
{
    uint8_t header[VMS_WIRE_HEADER_LEN], trailer[VMS_WIRE_TRAILER_LEN];
    uint32_t crc;
    size_t pos;

    if (len > VMS_WIRE_PAYLOAD_MAX || out_cap < 1 || (len && !payload))
        return 0;
    header[0] = VMS_WIRE_VERSION;
    put_le32(header + 1, (uint32_t)len);
    crc = vms_crc32c(0, header, sizeof(header));
    crc = vms_crc32c(crc, payload, len);
    put_le32(trailer, crc);

    out[0] = VMS_WIRE_SYNC;
    pos = put_escaped(out, 1, out_cap, header, sizeof(header));
    pos = put_escaped(out, pos, out_cap, payload, len);
    pos = put_escaped(out, pos, out_cap, trailer, sizeof(trailer));
    return pos;
}

const char *vms_wire_error_str(enum vms_wire_error err)
{
    switch (err) {
    case VMS_WIRE_ERR_NONE:
        return "no error";
    case VMS_WIRE_ERR_GARBAGE:
        return "garbage outside a frame";
    case VMS_WIRE_ERR_TRUNCATED:
        return "truncated frame (new sync byte inside a frame)";
    case VMS_WIRE_ERR_BAD_ESCAPE:
        return "invalid escape sequence";
    case VMS_WIRE_ERR_VERSION:
        return "unknown frame version";
    case VMS_WIRE_ERR_TOO_LONG:
        return "frame longer than 128 KiB";
    case VMS_WIRE_ERR_CRC:
        return "checksum mismatch";
    case VMS_WIRE_ERR__COUNT:
        break;
    }
    return "unknown error";
}

/* Most frames are small: start with this much and grow to what a frame's header
 * declares (at most the cap), so an idle channel does not hold 128 KiB. */
#define DEFRAMER_INITIAL_CAP 4096u

int vms_deframer_init(struct vms_deframer *d)
{
    memset(d, 0, sizeof(*d));
    d->buf = malloc(DEFRAMER_INITIAL_CAP);
    d->cap = d->buf ? DEFRAMER_INITIAL_CAP : 0;
    return d->buf ? 0 : -1;
}

void vms_deframer_free(struct vms_deframer *d)
{
    free(d->buf);
    d->buf = NULL;
    d->cap = 0;
}

void vms_deframer_reset(struct vms_deframer *d)
{
    d->len = 0;
    d->need = 0;
    d->in_frame = 0;
    d->escaped = 0;
    d->garbage = 0;
}

static enum vms_deframe_result deframe_fail(struct vms_deframer *d, enum vms_wire_error why,
                                            enum vms_wire_error *error)
{
    d->errors[why]++;
    *error = why;
    d->in_frame = 0;
    d->escaped = 0;
    d->len = 0;
    d->need = 0;
    return VMS_DEFRAME_ERROR;
}

/* The buffer holds a whole frame (d->len == d->need): check its sum, hand out its payload. */
static enum vms_deframe_result frame_complete(struct vms_deframer *d, const uint8_t **payload,
                                              size_t *payload_len, enum vms_wire_error *error)
{
    size_t plen = d->need - VMS_WIRE_HEADER_LEN - VMS_WIRE_TRAILER_LEN;
    uint32_t want = get_le32(d->buf + d->need - VMS_WIRE_TRAILER_LEN);
    uint32_t got = vms_crc32c(0, d->buf, d->need - VMS_WIRE_TRAILER_LEN);

    if (want != got)
        return deframe_fail(d, VMS_WIRE_ERR_CRC, error);
    d->in_frame = 0;
    d->len = 0;
    d->need = 0;
    d->frames_ok++;
    *payload = d->buf + VMS_WIRE_HEADER_LEN;
    *payload_len = plen;
    return VMS_DEFRAME_FRAME;
}

enum vms_deframe_result vms_deframer_feed(struct vms_deframer *d, const uint8_t *data, size_t len,
                                          size_t *consumed, const uint8_t **payload,
                                          size_t *payload_len, enum vms_wire_error *error)
{
    size_t i = 0;

    *error = VMS_WIRE_ERR_NONE;
    while (i < len) {
        uint8_t b;

        if (d->in_frame && !d->escaped && d->need) {
            /* inside a frame whose length is known: take the plain run at once */
            size_t run = plain_run(data + i, MIN(len - i, d->need - d->len));

            memcpy(d->buf + d->len, data + i, run);
            d->len += run;
            i += run;
            if (d->len == d->need) {
                *consumed = i;
                return frame_complete(d, payload, payload_len, error);
            }
            if (i == len)
                break;
        } else if (!d->in_frame) {
            /* outside a frame everything up to the next sync byte is garbage */
            const uint8_t *sync = memchr(data + i, VMS_WIRE_SYNC, len - i);
            size_t run = sync ? (size_t)(sync - (data + i)) : len - i;

            d->garbage += run;
            i += run;
            if (i == len)
                break;
        }
        b = data[i++];

        if (b == VMS_WIRE_SYNC) {
            int was_in_frame = d->in_frame && (d->len > 0 || d->escaped);
            size_t garbage = d->garbage;

            d->in_frame = 1;
            d->escaped = 0;
            d->len = 0;
            d->need = 0;
            d->garbage = 0;
            if (was_in_frame) {
                *consumed = i;
                d->errors[VMS_WIRE_ERR_TRUNCATED]++;
                *error = VMS_WIRE_ERR_TRUNCATED;
                return VMS_DEFRAME_ERROR;
            }
            if (garbage) {
                *consumed = i;
                d->errors[VMS_WIRE_ERR_GARBAGE]++;
                *error = VMS_WIRE_ERR_GARBAGE;
                return VMS_DEFRAME_ERROR;
            }
            continue;
        }
        if (!d->in_frame) {
            d->garbage++;
            continue;
        }
        if (d->escaped) {
            d->escaped = 0;
            if (b > 0x01) {
                *consumed = i;
                return deframe_fail(d, VMS_WIRE_ERR_BAD_ESCAPE, error);
            }
            b = b == 0x01 ? VMS_WIRE_SYNC : VMS_WIRE_ESC;
        } else if (b == VMS_WIRE_ESC) {
            d->escaped = 1;
            continue;
        }
        d->buf[d->len++] = b;

        if (d->len == VMS_WIRE_HEADER_LEN) {
            uint32_t plen = get_le32(d->buf + 1);
            if (d->buf[0] != VMS_WIRE_VERSION) {
                *consumed = i;
                return deframe_fail(d, VMS_WIRE_ERR_VERSION, error);
            }
            if (plen > VMS_WIRE_PAYLOAD_MAX) {
                *consumed = i;
                return deframe_fail(d, VMS_WIRE_ERR_TOO_LONG, error);
            }
            d->need = VMS_WIRE_HEADER_LEN + plen + VMS_WIRE_TRAILER_LEN;
            if (d->need > d->cap) {
                uint8_t *g = realloc(d->buf, d->need);
                if (!g) { /* no memory for a frame this size: drop it like an oversized one */
                    *consumed = i;
                    return deframe_fail(d, VMS_WIRE_ERR_TOO_LONG, error);
                }
                d->buf = g;
                d->cap = d->need;
            }
        }
        if (d->need && d->len == d->need) {
            *consumed = i;
            return frame_complete(d, payload, payload_len, error);
        }
    }
    *consumed = i;
    return VMS_DEFRAME_NEED_MORE;
}

int vms_wire_frame(const uint8_t *payload, size_t len, uint8_t **out, size_t *out_len)
{
    size_t cap = VMS_WIRE_ENCODED_MAX(len);
    uint8_t *frame;

    *out = NULL;
    *out_len = 0;
    if (len > VMS_WIRE_PAYLOAD_MAX)
        return -2;
    frame = malloc(cap);
    if (!frame)
        return -1;
    *out_len = vms_wire_encode(payload, len, frame, cap);
    if (!*out_len) {
        free(frame);
        return -2;
    }
    *out = frame;
    return 0;
}
