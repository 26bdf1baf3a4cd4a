/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vms-wire.h — resynchronising framing for the virtio-serial ports.
 *
 * Both ends (guest-helper and host-bridge) use this code; nothing else
 * frames bytes on the ports.
 *
 * A frame on the wire is
 *
 *     0xFF  ESC(version:u8 | length:u32le | payload[length] | crc32c:u32le)
 *
 * ESC() replaces 0xFE by {0xFE,0x00} and 0xFF by {0xFE,0x01}, so 0xFF never
 * appears inside a frame: it always starts one. A reader that sees 0xFF drops
 * whatever partial frame it held and starts again. This is what lets a reader
 * resynchronise after garbage, after a host reconnect, and after the guest's
 * memory is restored from a snapshot (the restored guest may hold a half
 * written frame, and QEMU may replay bytes the guest had not read).
 *
 * The CRC (Castagnoli) covers version, length and payload, so a frame whose
 * bytes were damaged is dropped rather than misparsed.
 */
#ifndef VMS_WIRE_H
#define VMS_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define VMS_WIRE_SYNC    0xFF
#define VMS_WIRE_ESC     0xFE
#define VMS_WIRE_VERSION 1
/* Hard cap on a frame's payload: 128 KiB. Larger frames are rejected, never truncated. */
#define VMS_WIRE_PAYLOAD_MAX (128u * 1024u)
/* Unescaped header (version + length) and trailer (crc). */
#define VMS_WIRE_HEADER_LEN  5
#define VMS_WIRE_TRAILER_LEN 4
/* Worst case on the wire for a @len-byte payload: sync byte plus every byte escaped. */
#define VMS_WIRE_ENCODED_MAX(len)  (1 + 2 * (VMS_WIRE_HEADER_LEN + (len) + VMS_WIRE_TRAILER_LEN))
#define VMS_WIRE_FRAME_MAX_ENCODED VMS_WIRE_ENCODED_MAX(VMS_WIRE_PAYLOAD_MAX)

/*
 * crc32c of @len bytes at @data, continuing from @crc (start with 0).
 */
uint32_t vms_crc32c(uint32_t crc, const void *data, size_t len);

/*
 * Encode one frame holding @payload (@len bytes, at most VMS_WIRE_PAYLOAD_MAX)
 * into @out, which has room for @out_cap bytes.
 * Returns the number of bytes written, or 0 if @len is over the cap or @out is
 * too small (VMS_WIRE_FRAME_MAX_ENCODED always suffices).
 */
size_t vms_wire_encode(const uint8_t *payload, size_t len, uint8_t *out, size_t out_cap);

/*
 * vms_wire_encode into a new buffer of the frame's size bound: *@out (free() it; it may hold
 * a secret, so wipe it first) and *@out_len. Returns 0, -1 when out of memory, -2 when
 * @len is over the cap.
 */
int vms_wire_frame(const uint8_t *payload, size_t len, uint8_t **out, size_t *out_len);

/* Why a reader dropped bytes; counted per reader and logged by callers. */
enum vms_wire_error {
    VMS_WIRE_ERR_NONE = 0,
    VMS_WIRE_ERR_GARBAGE,    /* bytes outside any frame (before a sync byte) */
    VMS_WIRE_ERR_TRUNCATED,  /* a sync byte arrived inside a frame: partial frame dropped */
    VMS_WIRE_ERR_BAD_ESCAPE, /* 0xFE followed by something other than 0x00/0x01 */
    VMS_WIRE_ERR_VERSION,    /* unknown frame version */
    VMS_WIRE_ERR_TOO_LONG,   /* declared length over VMS_WIRE_PAYLOAD_MAX */
    VMS_WIRE_ERR_CRC,        /* checksum mismatch */
    VMS_WIRE_ERR__COUNT
};

const char *vms_wire_error_str(enum vms_wire_error err);

/*
 * Streaming frame reader. Memory is fixed at init (one payload buffer of
 * VMS_WIRE_PAYLOAD_MAX + overhead), whatever the peer sends.
 */
struct vms_deframer {
    uint8_t *buf;   /* unescaped version|length|payload|crc */
    size_t cap;     /* bytes allocated at buf: grows to the frame's size on demand */
    size_t len;     /* bytes in buf */
    size_t need;    /* total unescaped bytes this frame needs, 0 until the header is in */
    int in_frame;   /* a sync byte was seen and no error since */
    int escaped;    /* the previous byte was VMS_WIRE_ESC */
    size_t garbage; /* garbage bytes in the current run (reported once per run) */
    uint64_t frames_ok;
    uint64_t errors[VMS_WIRE_ERR__COUNT];
};

/* Returns 0, or -1 if the buffer cannot be allocated. */
int vms_deframer_init(struct vms_deframer *d);
void vms_deframer_free(struct vms_deframer *d);
/* Forget any partial frame (e.g. after the peer hung up). */
void vms_deframer_reset(struct vms_deframer *d);

enum vms_deframe_result {
    VMS_DEFRAME_NEED_MORE, /* all input consumed, no complete frame */
    VMS_DEFRAME_FRAME,     /* *payload / *payload_len hold a frame, valid until the next call */
    VMS_DEFRAME_ERROR,     /* bytes were dropped; *error says why; reading continues */
};

/*
 * Consume bytes from @data (@len bytes) until a frame completes, an error is
 * detected, or input runs out. *consumed is set to the bytes used; call again
 * with the rest. Never fails hard: after an error the reader is hunting for
 * the next sync byte.
 */
enum vms_deframe_result vms_deframer_feed(struct vms_deframer *d, const uint8_t *data, size_t len,
                                          size_t *consumed, const uint8_t **payload,
                                          size_t *payload_len, enum vms_wire_error *error);

#endif
