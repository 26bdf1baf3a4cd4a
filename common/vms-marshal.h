/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vms-marshal.h — D-Bus marshalling written directly (little-endian), for the messages this
 * project sends: the wire messages (vms-proto.c) and the helper's signals (helper-bus.c);
 * and a bounded reader of message bodies (below), for the messages it receives.
 *
 * Why: libdbus's writer validates the contained signature of every variant on a stack of
 * list nodes allocated under its global lock, and rewrites the header's signature field
 * after every top-level argument. For a hostinfo's answer that was half of the bridge's
 * instructions, and for a Completed signal 190 k of the helper's 438 k per request
 * (callgrind, bench/RESULTS.md §15, §18). What is written here is what libdbus writes for the
 * same arguments and header fields in the same order, byte for byte: test-proto,
 * test-helper-bus and fuzz-message compare it with libdbus's own marshalling. A message
 * built here that goes onto a bus is demarshalled by libdbus first, which validates it.
 *
 * A writer writes only what fits below w->cap and counts the rest: vms_wb_build runs it once
 * into a buffer on the stack, and a second time into one of the counted size only when the
 * message did not fit; either way a secret is never left in a reallocated buffer.
 */
#ifndef VMS_MARSHAL_H
#define VMS_MARSHAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct vms_wbuf {
    uint8_t *p;
    size_t len; /* what the message needs so far, written or not */
    size_t cap; /* bytes at @p: what does not fit is counted, not written (0: count only) */
};

/* The primitives are inline: a message is a few hundred calls of them. */
static inline void vms_wb_bytes(struct vms_wbuf *w, const void *data, size_t n)
{
    if (n && w->len + n <= w->cap)
        memcpy(w->p + w->len, data, n);
    w->len += n;
}

static inline void vms_wb_pad(struct vms_wbuf *w, size_t align) /* align: 1, 2, 4 or 8 */
{
    size_t n = (0 - w->len) & (align - 1);

    if (w->len + n <= w->cap)
        for (size_t i = 0; i < n; i++)
            w->p[w->len + i] = 0;
    w->len += n;
}

static inline void vms_wb_u8(struct vms_wbuf *w, uint8_t v)
{
    if (w->len < w->cap)
        w->p[w->len] = v;
    w->len++;
}

static inline void vms_wb_u32_at(struct vms_wbuf *w, size_t at, uint32_t v)
{
    if (at + 4 <= w->cap)
        for (int i = 0; i < 4; i++)
            w->p[at + (size_t)i] = (uint8_t)(v >> (8 * i));
}

static inline void vms_wb_u32(struct vms_wbuf *w, uint32_t v)
{
    vms_wb_pad(w, 4);
    vms_wb_u32_at(w, w->len, v);
    w->len += 4;
}

static inline void vms_wb_u64(struct vms_wbuf *w, uint64_t v)
{
    vms_wb_pad(w, 8);
    if (w->len + 8 <= w->cap)
        for (int i = 0; i < 8; i++)
            w->p[w->len + (size_t)i] = (uint8_t)(v >> (8 * i));
    w->len += 8;
}

/* a string or an object path: length, bytes, NUL */
static inline void vms_wb_str(struct vms_wbuf *w, const char *str)
{
    size_t n = strlen(str);

    vms_wb_u32(w, (uint32_t)n);
    vms_wb_bytes(w, str, n + 1);
}

/* a signature: one length byte, bytes, NUL */
static inline void vms_wb_sig(struct vms_wbuf *w, const char *sig)
{
    size_t n = strlen(sig);

    vms_wb_u8(w, (uint8_t)n);
    vms_wb_bytes(w, sig, n + 1);
}

/* An array: vms_wb_array_begin writes its length's place and the padding to its elements'
 * alignment (there even when it is empty); vms_wb_array_end writes the length: the
 * elements' bytes, without that padding. */
struct vms_wb_array {
    size_t len_at, start;
};

static inline struct vms_wb_array vms_wb_array_begin(struct vms_wbuf *w, size_t elem_align)
{
    struct vms_wb_array a;

    vms_wb_u32(w, 0);
    a.len_at = w->len - 4;
    vms_wb_pad(w, elem_align);
    a.start = w->len;
    return a;
}

static inline void vms_wb_array_end(struct vms_wbuf *w, struct vms_wb_array a)
{
    vms_wb_u32_at(w, a.len_at, (uint32_t)(w->len - a.start));
}

/* A signal's header with serial 1 and the fields in libdbus's order when a signal is made
 * with dbus_message_new_signal() and given its destination before its arguments: path,
 * interface, member, destination (none when NULL), signature. vms_wb_signal_end writes the
 * body's length once the arguments are written. */
struct vms_wb_signal {
    size_t body_len_at, body;
};
struct vms_wb_signal vms_wb_signal_begin(struct vms_wbuf *w, const char *path,
                                         const char *interface, const char *member,
                                         const char *destination, const char *signature);
void vms_wb_signal_end(struct vms_wbuf *w, struct vms_wb_signal s);

/* Run @write(w, @ctx) into a new buffer of the message's size: *@out (free()) and *@out_len.
 * Returns 0; -1 when out of memory; -2 when the message is over @max bytes (*@out_len then
 * holds its size, *@out NULL). */
typedef void vms_wb_writer(struct vms_wbuf *w, const void *ctx);
#define VMS_WB_STACK_BYTES 4096 /* a hostinfo's answer is ~1 KiB; app data may take 64 KiB */
int vms_wb_build(vms_wb_writer *write, const void *ctx, size_t max, uint8_t **out, size_t *out_len);

/* ---- reading ------------------------------------------------------------------------ *
 *
 * A bounded reader of a D-Bus message's body, in either byte order: every read is checked
 * against the body's end. On bytes libdbus validated (a message it received or demarshalled)
 * that is all it needs; with @strict it also checks what that validation would have (zero
 * padding, strings terminated with no NUL inside), for bytes nobody validated
 * (vms_msg_decode_canonical). Each read returns 0, or -1 (nothing to trust after it).
 */
struct vms_rbuf {
    const uint8_t *p;
    size_t len, pos; /* pos from the body's start, which is 8-aligned in the message */
    int big;         /* 'B': big-endian */
    int strict;
};

/* Where the body of the validated message @msg (@len bytes) is: @r reads it, not strict.
 * Returns 0, or -1 when @len cannot hold the body its header announces. */
int vms_rb_body(const uint8_t *msg, size_t len, struct vms_rbuf *r);

/* Past the padding to @align, then @n bytes. */
static inline int vms_rb_skip_to(struct vms_rbuf *r, size_t align, size_t n)
{
    size_t at = r->pos + ((0 - r->pos) & (align - 1));

    if (at > r->len || n > r->len - at)
        return -1;
    if (r->strict)
        for (size_t i = r->pos; i < at; i++)
            if (r->p[i])
                return -1;
    r->pos = at + n;
    return 0;
}

static inline uint64_t vms_rb_int(const struct vms_rbuf *r, size_t at, size_t n)
{
    uint64_t v = 0;

    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)r->p[at + i] << (8 * (r->big ? n - 1 - i : i));
    return v;
}

static inline int vms_rb_u32(struct vms_rbuf *r, uint32_t *v)
{
    if (vms_rb_skip_to(r, 4, 4) < 0)
        return -1;
    *v = (uint32_t)vms_rb_int(r, r->pos - 4, 4);
    return 0;
}

static inline int vms_rb_u64(struct vms_rbuf *r, uint64_t *v)
{
    if (vms_rb_skip_to(r, 8, 8) < 0)
        return -1;
    *v = vms_rb_int(r, r->pos - 8, 8);
    return 0;
}

/* A string or object path, NUL-terminated in place: *@s points into the bytes. */
static inline int vms_rb_str(struct vms_rbuf *r, const char **s, size_t *n)
{
    uint32_t len;

    if (vms_rb_u32(r, &len) < 0 || vms_rb_skip_to(r, 1, (size_t)len + 1) < 0)
        return -1;
    *s = (const char *)r->p + r->pos - len - 1;
    *n = len;
    if (r->strict && memchr(*s, 0, (size_t)len + 1) != *s + len)
        return -1;
    return 0;
}

/* A signature, NUL-terminated in place. */
static inline int vms_rb_sig(struct vms_rbuf *r, const char **s)
{
    size_t len;

    if (r->pos >= r->len)
        return -1;
    len = r->p[r->pos];
    if (vms_rb_skip_to(r, 1, len + 2) < 0)
        return -1;
    *s = (const char *)r->p + r->pos - len - 1;
    if (r->strict && memchr(*s, 0, len + 1) != *s + len)
        return -1;
    return 0;
}

/* An array's bounds: its elements (aligned to @elem_align) from r->pos to *@end. */
static inline int vms_rb_array(struct vms_rbuf *r, size_t elem_align, size_t *end)
{
    uint32_t n;

    if (vms_rb_u32(r, &n) < 0 || vms_rb_skip_to(r, elem_align, 0) < 0 || n > r->len - r->pos)
        return -1;
    *end = r->pos + n;
    return 0;
}

/* Skip one value of the complete type at *@sig, and *@sig past it (an unknown field or
 * detail). Only for validated bytes: the nesting is bounded by libdbus's validation (64
 * levels), which strict reading does not have. */
int vms_rb_skip_value(struct vms_rbuf *r, const char **sig);

#endif
