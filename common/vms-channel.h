/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vms-channel.h — a thin channel: one file descriptor (a virtio-serial port
 * in the guest, a QEMU chardev socket on the host, a socketpair in tests),
 * a frame reader, and a bounded non-blocking output queue.
 *
 * Reading never trusts the peer: frames are capped (vms-wire.h), payloads go
 * through vms_msg_decode() (or the canonical decoder, where the peer is our own
 * encoder), and the work done per vms_channel_read() call is bounded so one
 * noisy peer cannot starve an event loop serving many.
 */
#ifndef VMS_CHANNEL_H
#define VMS_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include "vms-log.h"
#include "vms-proto.h"
#include "vms-wire.h"

/* How a channel decodes its payloads (vms-proto.h). */
enum vms_channel_decode {
    VMS_CHANNEL_DECODE_ANY,        /* any peer: vms_msg_decode (libdbus validates) */
    VMS_CHANNEL_DECODE_OURS,       /* our encoder only: vms_msg_decode_canonical (the privsep
                                    * reader's output, which the bridge reads) */
    VMS_CHANNEL_DECODE_OURS_FIRST, /* canonical, and what it refuses through the full decoder:
                                    * the bridge's answers to the helper (a bridge of another
                                    * version may add fields; the result is the same) */
};

struct vms_channel {
    int fd;                         /* -1 when detached */
    enum vms_channel_decode decode; /* VMS_CHANNEL_DECODE_ANY unless set after init */
    char name[64];                  /* for log lines, e.g. "vm1/port-a" */
    const char *vm;                 /* VM name for log lines, may be NULL */
    struct vms_deframer rx;
    uint8_t *tx; /* encoded frames not yet written */
    size_t tx_len;
    size_t tx_cap;
    size_t tx_max; /* queue cap; send fails beyond it */
    uint64_t msgs_in, msgs_bad, msgs_unknown;
    uint64_t bytes_in; /* read from fd so far */
    /* during a vms_channel_msg_fn call: the message's payload, when the canonical decoder took
     * it (so it is what vms_msg_encode writes for the message); else NULL */
    const uint8_t *canonical;
    size_t canonical_len;
    /* the peer's bad input and our full output queue each log a bounded number of lines */
    struct vms_log_limit log_input, log_output;
};

/*
 * Prepare @c (no fd yet). @tx_max caps queued output (0: 1 MiB).
 * Returns 0 or -1 on allocation failure.
 */
int vms_channel_init(struct vms_channel *c, const char *name, const char *vm, size_t tx_max);
void vms_channel_free(struct vms_channel *c); /* closes the fd too */

/* Take ownership of @fd (made non-blocking). Forgets partial input, keeps queued output. */
void vms_channel_attach(struct vms_channel *c, int fd);
/* Close the fd, forget partial input. Queued output is kept unless @drop_output. */
void vms_channel_detach(struct vms_channel *c, int drop_output);

/*
 * Encode @m and queue it, then try to write. Returns 0 when queued (written or
 * pending), -1 when it cannot be encoded or the queue is full (the error is
 * logged; nothing is queued).
 */
int vms_channel_send(struct vms_channel *c, const struct vms_msg *m);

/*
 * Queue @frame (@len bytes, from vms_msg_encode_frame) as it is, then try to write: for a
 * message kept encoded because it is sent more than once. @what and @request_id (or NULL)
 * name it in the log. Returns as vms_channel_send; the caller keeps @frame.
 */
int vms_channel_send_frame(struct vms_channel *c, const uint8_t *frame, size_t len,
                           const char *what, const char *request_id);

/*
 * Frame and queue @payload (@len bytes: a message as vms_msg_encode writes it), then try to
 * write: for a message passed on as it came (c->canonical). @what and @request_id as for
 * vms_channel_send_frame. Returns as vms_channel_send.
 */
int vms_channel_send_payload(struct vms_channel *c, const uint8_t *payload, size_t len,
                             const char *what, const char *request_id);

/*
 * Write queued bytes. Returns 1 when the queue is empty, 0 when bytes remain
 * (wait for POLLOUT), -1 on a write error other than EAGAIN (peer gone).
 */
int vms_channel_flush(struct vms_channel *c);
static inline int vms_channel_wants_write(const struct vms_channel *c)
{
    return c->tx_len > 0;
}

/* Called for each decoded message; @m is cleared by the channel after the call. */
typedef void (*vms_channel_msg_fn)(void *opaque, struct vms_channel *c, struct vms_msg *m);

/*
 * Read what is available (at most @budget bytes; 0 means 64 KiB) and call
 * @fn for each good message. Bad frames and bad messages are logged and
 * skipped. Returns 1 if the fd is still open (more may come), 0 on
 * end-of-file/hangup (a guest port whose host side is closed reads 0: the
 * caller must stop polling for input, not spin), -1 on a read error.
 * A short read ends the call: wait for input level-triggered (poll, epoll
 * without EPOLLET, or a blocking fd), never edge-triggered.
 */
int vms_channel_read(struct vms_channel *c, size_t budget, vms_channel_msg_fn fn, void *opaque);

/*
 * Feed bytes that were read some other way (tests, fuzzing). Same handling
 * as vms_channel_read().
 */
void vms_channel_feed(struct vms_channel *c, const uint8_t *data, size_t len, vms_channel_msg_fn fn,
                      void *opaque);

#endif
