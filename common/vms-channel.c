/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vms-channel.c — see vms-channel.h.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vms-channel.h"
#include "vms-log.h"

#define CHANNEL_TX_DEFAULT  (1024u * 1024u)
#define CHANNEL_READ_CHUNK  4096
#define CHANNEL_READ_BUDGET (64u * 1024u)

int vms_channel_init(struct vms_channel *c, const char *name, const char *vm, size_t tx_max)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->vm = vm;
    snprintf(c->name, sizeof(c->name), "%s", name ? name : "channel");
    c->tx_max = tx_max ? tx_max : CHANNEL_TX_DEFAULT;
    return vms_deframer_init(&c->rx);
}

void vms_channel_free(struct vms_channel *c)
{
    vms_channel_detach(c, 1);
    vms_deframer_free(&c->rx);
    free(c->tx);
    c->tx = NULL;
    c->tx_cap = 0;
}

void vms_channel_attach(struct vms_channel *c, int fd)
{
    int flags;

    if (c->fd >= 0 && c->fd != fd)
        close(c->fd);
    c->fd = fd;
    flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    vms_deframer_reset(&c->rx);
}

void vms_channel_detach(struct vms_channel *c, int drop_output)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    vms_deframer_reset(&c->rx);
    if (drop_output)
        c->tx_len = 0;
}

int vms_channel_send_frame(struct vms_channel *c, const uint8_t *frame, size_t len,
                           const char *what, const char *request_id)
{
    if (c->tx_len + len > c->tx_max) {
        vms_log_limited(&c->log_output, "output queue full", LOG_WARNING, c->vm, request_id,
                        "%s: output queue full (%zu bytes), %s not sent", c->name, c->tx_len, what);
        return -1;
    }
    if (c->tx_len + len > c->tx_cap) {
        size_t cap = c->tx_cap ? c->tx_cap : 4096;
        uint8_t *grown;
        while (cap < c->tx_len + len)
            cap *= 2;
        grown = realloc(c->tx, cap);
        if (!grown)
            return -1;
        c->tx = grown;
        c->tx_cap = cap;
    }
    memcpy(c->tx + c->tx_len, frame, len);
    c->tx_len += len;
    if (c->fd >= 0)
        vms_channel_flush(c);
    return 0;
}

int vms_channel_send(struct vms_channel *c, const struct vms_msg *m)
{
    uint8_t *frame = NULL;
    size_t len = 0;
    char err[256];
    const char *rid = m->request_id[0] ? m->request_id : NULL;
    int rc;

    if (vms_msg_encode_frame(m, &frame, &len, err, sizeof(err)) < 0) {
        vms_err(c->vm, rid, "%s: cannot encode %s: %s", c->name, vms_msg_type_name(m->type), err);
        return -1;
    }
    rc = vms_channel_send_frame(c, frame, len, vms_msg_type_name(m->type), rid);
    explicit_bzero(frame, len); /* may hold a secret */
    free(frame);
    return rc;
}

int vms_channel_send_payload(struct vms_channel *c, const uint8_t *payload, size_t len,
                             const char *what, const char *request_id)
{
    uint8_t *frame;
    size_t n;
    int rc;

    if (vms_wire_frame(payload, len, &frame, &n) < 0) {
        vms_err(c->vm, request_id, "%s: cannot frame %s", c->name, what);
        return -1;
    }
    rc = vms_channel_send_frame(c, frame, n, what, request_id);
    explicit_bzero(frame, n); /* may hold a secret */
    free(frame);
    return rc;
}

int vms_channel_flush(struct vms_channel *c)
{
    size_t off = 0;
    int rc = 1;

    if (c->fd < 0)
        return c->tx_len ? 0 : 1;
    while (off < c->tx_len) {
        ssize_t n = write(c->fd, c->tx + off, c->tx_len - off);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            rc = 0;
            break;
        }
        rc = -1;
        break;
    }
    memmove(c->tx, c->tx + off, c->tx_len - off);
    c->tx_len -= off;
    if (rc == 1 && c->tx_len)
        rc = 0;
    return rc;
}

/*
 * Whether to log the peer's latest input error. A hostile peer can send
 * thousands of bad frames a second; logging each would flood the journal
 * (and journald's rate limit would then drop other VMs' lines): a bounded
 * number of lines per window, then a count of the suppressed ones.
 */
static int log_input_error(struct vms_channel *c, uint64_t *total)
{
    uint64_t n = c->msgs_bad + c->msgs_unknown;
    for (int i = 0; i < VMS_WIRE_ERR__COUNT; i++)
        n += c->rx.errors[i];
    *total = n;
    return vms_log_level() >= LOG_INFO && vms_log_allow(&c->log_input, c->vm, "bad input");
}

/* Decode @payload into @m; c->canonical set to it when the canonical decoder took it. */
static enum vms_decode_result channel_decode(struct vms_channel *c, const uint8_t *payload,
                                             size_t len, struct vms_msg *m,
                                             struct vms_decode_report *rep)
{
    enum vms_decode_result r;

    if (c->decode == VMS_CHANNEL_DECODE_ANY)
        return vms_msg_decode(payload, len, m, rep);
    /* without libdbus's validation: the bridge's decoding of a hostinfo went from 58 k to
     * 7 k instructions (bench/RESULTS.md §19) */
    r = vms_msg_decode_canonical(payload, len, m, rep);
    if (r == VMS_DECODE_OK) {
        c->canonical = payload;
        c->canonical_len = len;
    }
    if (r == VMS_DECODE_OK || c->decode == VMS_CHANNEL_DECODE_OURS)
        return r;
    return vms_msg_decode(payload, len, m, rep);
}

void vms_channel_feed(struct vms_channel *c, const uint8_t *data, size_t len, vms_channel_msg_fn fn,
                      void *opaque)
{
    uint64_t total;

    while (len > 0) {
        const uint8_t *payload = NULL;
        size_t used = 0, plen = 0;
        enum vms_wire_error werr;
        enum vms_deframe_result r;
        struct vms_decode_report rep;
        struct vms_msg m;

        r = vms_deframer_feed(&c->rx, data, len, &used, &payload, &plen, &werr);
        data += used;
        len -= used;
        if (r == VMS_DEFRAME_ERROR) {
            if (log_input_error(c, &total))
                vms_warn(c->vm, NULL, "%s: dropped bytes: %s (input error %llu)", c->name,
                         vms_wire_error_str(werr), (unsigned long long)total);
            continue;
        }
        if (r != VMS_DEFRAME_FRAME)
            break;
        switch (channel_decode(c, payload, plen, &m, &rep)) {
        case VMS_DECODE_OK:
            c->msgs_in++;
            if (rep.unknown_fields)
                vms_log_limited(&c->log_input, "bad input", LOG_INFO, c->vm,
                                m.request_id[0] ? m.request_id : NULL,
                                "%s: %s: skipped %u unknown field(s), e.g. '%s'", c->name,
                                vms_msg_type_name(m.type), rep.unknown_fields,
                                vms_esc(rep.first_unknown_field));
            fn(opaque, c, &m);
            vms_msg_clear(&m);
            c->canonical = NULL; /* it points into the deframer's buffer */
            break;
        case VMS_DECODE_UNKNOWN_TYPE:
            c->msgs_unknown++;
            if (log_input_error(c, &total))
                vms_info(c->vm, NULL, "%s: skipped unknown message type '%s' (input error %llu)",
                         c->name, vms_esc(rep.unknown_type), (unsigned long long)total);
            break;
        case VMS_DECODE_INVALID:
            c->msgs_bad++;
            if (log_input_error(c, &total))
                vms_warn(c->vm, NULL, "%s: rejected message: %s (input error %llu)", c->name,
                         vms_esc(rep.error), (unsigned long long)total);
            break;
        }
    }
}

int vms_channel_read(struct vms_channel *c, size_t budget, vms_channel_msg_fn fn, void *opaque)
{
    uint8_t buf[CHANNEL_READ_CHUNK];
    size_t total = 0;

    if (c->fd < 0)
        return 0;
    if (!budget)
        budget = CHANNEL_READ_BUDGET;
    while (total < budget) {
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n > 0) {
            total += (size_t)n;
            c->bytes_in += (uint64_t)n;
            vms_channel_feed(c, buf, (size_t)n, fn, opaque);
            /* a short read took all there was: callers wait level-triggered (poll, epoll
             * without EPOLLET, a blocking read), so more data wakes them again; the read
             * that would only say EAGAIN is a system call per message saved */
            if ((size_t)n < sizeof(buf))
                return 1;
            continue;
        }
        if (n == 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 1;
        return -1;
    }
    return 1;
}
