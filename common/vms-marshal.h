/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vms-marshal.h — D-Bus marshalling written directly (little-endian), for the messages this
 * project sends: the wire messages (vms-proto.c) and the helper's signals (helper-bus.c).
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
 * Every writer runs twice: first with w->p == NULL, counting only, then into a buffer of
 * exactly that size (vms_wb_build), so a secret is never left in a reallocated buffer.
 */
#ifndef VMS_MARSHAL_H
#define VMS_MARSHAL_H

#include <stddef.h>
#include <stdint.h>

struct vms_wbuf {
    uint8_t *p; /* NULL: count only */
    size_t len;
};

void vms_wb_bytes(struct vms_wbuf *w, const void *data, size_t n);
void vms_wb_pad(struct vms_wbuf *w, size_t align);
void vms_wb_u8(struct vms_wbuf *w, uint8_t v);
void vms_wb_u32(struct vms_wbuf *w, uint32_t v);
void vms_wb_u64(struct vms_wbuf *w, uint64_t v);
void vms_wb_str(struct vms_wbuf *w, const char *str); /* a string or an object path */
void vms_wb_sig(struct vms_wbuf *w, const char *sig); /* a signature */

/* An array: vms_wb_array_begin writes its length's place and the padding to its elements'
 * alignment (there even when it is empty); vms_wb_array_end writes the length: the
 * elements' bytes, without that padding. */
struct vms_wb_array {
    size_t len_at, start;
};
struct vms_wb_array vms_wb_array_begin(struct vms_wbuf *w, size_t elem_align);
void vms_wb_array_end(struct vms_wbuf *w, struct vms_wb_array a);

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

/* Run @write(w, @ctx) to count, then into a new buffer of that size: *@out (free()) and
 * *@out_len. Returns 0; -1 when out of memory; -2 when the message is over @max bytes
 * (*@out_len then holds its size, *@out NULL). */
typedef void vms_wb_writer(struct vms_wbuf *w, const void *ctx);
int vms_wb_build(vms_wb_writer *write, const void *ctx, size_t max, uint8_t **out, size_t *out_len);

#endif
