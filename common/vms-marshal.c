/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vms-marshal.c — see vms-marshal.h.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "vms-marshal.h"

/* D-Bus's message header: its fixed part and the codes of its fields */
#define DBUS_WIRE_LITTLE_ENDIAN     'l'
#define DBUS_WIRE_SIGNAL            4
#define DBUS_WIRE_NO_REPLY_EXPECTED 0x1
#define DBUS_WIRE_VERSION           1
#define DBUS_WIRE_FIELD_PATH        1
#define DBUS_WIRE_FIELD_INTERFACE   2
#define DBUS_WIRE_FIELD_MEMBER      3
#define DBUS_WIRE_FIELD_DESTINATION 6
#define DBUS_WIRE_FIELD_SIGNATURE   8

/* one header field: (code, variant) */
static void wb_header_field(struct vms_wbuf *w, uint8_t code, const char *sig, const char *value)
{
    vms_wb_pad(w, 8);
    vms_wb_u8(w, code);
    vms_wb_sig(w, sig);
    if (sig[0] == 'g')
        vms_wb_sig(w, value);
    else
        vms_wb_str(w, value);
}

struct vms_wb_signal vms_wb_signal_begin(struct vms_wbuf *w, const char *path,
                                         const char *interface, const char *member,
                                         const char *destination, const char *signature)
{
    struct vms_wb_signal s;
    struct vms_wb_array fields;

    vms_wb_u8(w, DBUS_WIRE_LITTLE_ENDIAN);
    vms_wb_u8(w, DBUS_WIRE_SIGNAL);
    vms_wb_u8(w, DBUS_WIRE_NO_REPLY_EXPECTED); /* a signal's, as libdbus sets it */
    vms_wb_u8(w, DBUS_WIRE_VERSION);
    s.body_len_at = w->len;
    vms_wb_u32(w, 0);
    vms_wb_u32(w, 1); /* serial */
    fields = vms_wb_array_begin(w, 8);
    wb_header_field(w, DBUS_WIRE_FIELD_PATH, "o", path);
    wb_header_field(w, DBUS_WIRE_FIELD_INTERFACE, "s", interface);
    wb_header_field(w, DBUS_WIRE_FIELD_MEMBER, "s", member);
    if (destination)
        wb_header_field(w, DBUS_WIRE_FIELD_DESTINATION, "s", destination);
    wb_header_field(w, DBUS_WIRE_FIELD_SIGNATURE, "g", signature);
    vms_wb_array_end(w, fields);
    vms_wb_pad(w, 8); /* the body starts 8-aligned */
    s.body = w->len;
    return s;
}

void vms_wb_signal_end(struct vms_wbuf *w, struct vms_wb_signal s)
{
    vms_wb_u32_at(w, s.body_len_at, (uint32_t)(w->len - s.body));
}

int vms_wb_build(vms_wb_writer *write, const void *ctx, size_t max, uint8_t **out, size_t *out_len)
{
    /* most messages fit here: one pass instead of a count and a write */
    uint8_t stack[VMS_WB_STACK_BYTES];
    struct vms_wbuf w = {stack, 0, sizeof(stack)};
    int rc = 0;

    *out = NULL;
    write(&w, ctx);
    *out_len = w.len;
    if (w.len > max) {
        rc = -2;
        goto out;
    }
    *out = malloc(w.len);
    if (!*out) {
        rc = -1;
        goto out;
    }
    if (w.len <= sizeof(stack)) {
        memcpy(*out, stack, w.len);
        goto out;
    }
    w = (struct vms_wbuf){*out, 0, *out_len};
    write(&w, ctx);
out:
    explicit_bzero(stack, w.len < sizeof(stack) ? w.len : sizeof(stack)); /* it may hold a secret */
    return rc;
}

int vms_rb_body(const uint8_t *msg, size_t len, struct vms_rbuf *r)
{
    uint32_t body_len;

    r->big = len > 0 && msg[0] == 'B';
    r->strict = 0;
    r->p = msg;
    r->len = len < 8 ? 0 : 8;
    r->pos = 4;
    if (vms_rb_u32(r, &body_len) < 0 || body_len > len)
        return -1;
    r->p = msg + len - body_len;
    r->len = body_len;
    r->pos = 0;
    return 0;
}

/* D-Bus alignment of a value of type @t */
static size_t type_align(char t)
{
    switch (t) {
    case 'y':
    case 'g':
    case 'v':
        return 1;
    case 'n':
    case 'q':
        return 2;
    case 'x':
    case 't':
    case 'd':
    case '(':
    case '{':
        return 8;
    default:
        return 4;
    }
}

/* Past one complete type in the signature @sig (validated by libdbus). */
static const char *sig_next(const char *sig)
{
    int depth = 0;

    do {
        if (*sig == '(' || *sig == '{')
            depth++;
        else if (*sig == ')' || *sig == '}')
            depth--;
        else if (*sig == 'a') {
            sig++;
            continue;
        }
        sig++;
    } while (depth > 0 && *sig);
    return sig;
}

int vms_rb_skip_value(struct vms_rbuf *r, const char **sig)
{
    char t = *(*sig)++;
    uint32_t n;
    const char *inner;

    switch (t) {
    case 's':
    case 'o': {
        const char *s;
        size_t len;
        return vms_rb_str(r, &s, &len);
    }
    case 'g':
        return vms_rb_sig(r, &inner);
    case 'v':
        return vms_rb_sig(r, &inner) < 0 ? -1 : vms_rb_skip_value(r, &inner);
    case 'a':
        if (vms_rb_u32(r, &n) < 0 || vms_rb_skip_to(r, type_align(**sig), n) < 0)
            return -1;
        *sig = sig_next(*sig);
        return 0;
    case '(':
    case '{':
        if (vms_rb_skip_to(r, 8, 0) < 0)
            return -1;
        while (**sig != ')' && **sig != '}')
            if (!**sig || vms_rb_skip_value(r, sig) < 0)
                return -1;
        (*sig)++;
        return 0;
    default: /* a fixed-size type, as long as its alignment */
        return vms_rb_skip_to(r, type_align(t), type_align(t));
    }
}
