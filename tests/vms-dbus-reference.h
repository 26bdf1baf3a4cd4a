/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vms-dbus-reference.h — libdbus's own marshalling of a wire message, the
 * reference vms_msg_encode() is held to (test-proto, fuzz-message): the
 * message is demarshalled, its arguments copied one by one through libdbus's
 * writer into a new signal of the same member, serial 1, and marshalled.
 * Header only: the tests and the fuzz targets are built apart.
 */
#ifndef VMS_DBUS_REFERENCE_H
#define VMS_DBUS_REFERENCE_H

#include <dbus/dbus.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vms-proto.h"

/* Copy the arguments from @src on into @dst with libdbus's writer. 1, or 0 on failure. */
static inline int vms_reference_copy(DBusMessageIter *src, DBusMessageIter *dst)
{
    for (int t; (t = dbus_message_iter_get_arg_type(src)) != DBUS_TYPE_INVALID;
         dbus_message_iter_next(src)) {
        DBusMessageIter s, d;
        char *sig = NULL;
        int ok;

        if (dbus_type_is_basic(t)) {
            DBusBasicValue v;
            dbus_message_iter_get_basic(src, &v);
            if (!dbus_message_iter_append_basic(dst, t, &v))
                return 0;
            continue;
        }
        dbus_message_iter_recurse(src, &s);
        if (t == DBUS_TYPE_VARIANT)
            sig = dbus_message_iter_get_signature(&s);
        else if (t == DBUS_TYPE_ARRAY)
            sig = dbus_message_iter_get_signature(src);
        ok = dbus_message_iter_open_container(dst, t, t == DBUS_TYPE_ARRAY ? sig + 1 : sig, &d) &&
             vms_reference_copy(&s, &d) && dbus_message_iter_close_container(dst, &d);
        dbus_free(sig);
        if (!ok)
            return 0;
    }
    return 1;
}

/* libdbus's marshalling of the wire message @bytes into *@out (free()), or -1 when libdbus
 * does not take @bytes. */
static inline int vms_reference_marshal(const uint8_t *bytes, size_t len, uint8_t **out,
                                        size_t *out_len)
{
    DBusMessage *in = dbus_message_demarshal((const char *)bytes, (int)len, NULL), *copy = NULL;
    DBusMessageIter src, dst;
    char *raw = NULL;
    int raw_len = 0, rc = -1;

    if (!in)
        return -1;
    copy = dbus_message_new_signal(VMS_WIRE_PATH, VMS_WIRE_INTERFACE, dbus_message_get_member(in));
    if (!copy)
        goto out;
    dbus_message_iter_init_append(copy, &dst);
    if (dbus_message_iter_init(in, &src) && !vms_reference_copy(&src, &dst))
        goto out;
    dbus_message_set_serial(copy, 1);
    if (!dbus_message_marshal(copy, &raw, &raw_len))
        goto out;
    *out = malloc((size_t)raw_len);
    if (!*out)
        goto out;
    memcpy(*out, raw, (size_t)raw_len);
    *out_len = (size_t)raw_len;
    rc = 0;
out:
    dbus_free(raw);
    if (copy)
        dbus_message_unref(copy);
    dbus_message_unref(in);
    return rc;
}

#endif
