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
#include <stdio.h>
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
        ok = dbus_message_iter_open_container(dst, t, t == DBUS_TYPE_ARRAY ? sig + 1 : sig, &d);
        dbus_free(sig);
        if (!ok)
            return 0;
        /* a value libdbus's writer refuses (a unix fd 'h' without a real fd): the container
         * opened for it is abandoned, or libdbus keeps what it allocated for it */
        if (!vms_reference_copy(&s, &d)) {
            dbus_message_iter_abandon_container(dst, &d);
            return 0;
        }
        if (!dbus_message_iter_close_container(dst, &d))
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

/* The body of the one-argument message @m as libdbus marshals it, into *@out (free()). */
static inline int vms_reference_body(DBusMessage *m, uint8_t **out, size_t *out_len)
{
    char *raw = NULL;
    int raw_len = 0;
    uint32_t body;

    dbus_message_set_serial(m, 1);
    if (!dbus_message_marshal(m, &raw, &raw_len))
        return -1;
    memcpy(&body, raw + 4, 4); /* libdbus marshals in the host's order */
    *out = malloc(body ? body : 1);
    if (*out)
        memcpy(*out, raw + raw_len - body, body);
    *out_len = body;
    dbus_free(raw);
    return *out ? 0 : -1;
}

/* One entry of a wire message's a{sv}, as libdbus reads it: its key, and its value alone
 * marshalled by libdbus's writer. */
struct vms_reference_entry {
    char key[256];
    uint8_t *value;
    size_t len;
};

/* The entries of the wire message @bytes as libdbus reads them, into @out (at most @max;
 * vms_reference_entries_free()). Returns how many, or -1 when libdbus does not take @bytes
 * or there are more than @max. */
static inline int vms_reference_entries(const uint8_t *bytes, size_t len,
                                        struct vms_reference_entry *out, int max)
{
    DBusMessage *in = dbus_message_demarshal((const char *)bytes, (int)len, NULL);
    DBusMessageIter it, dict;
    int n = 0;

    if (!in)
        return -1;
    dbus_message_iter_init(in, &it);
    dbus_message_iter_recurse(&it, &dict);
    for (; dbus_message_iter_get_arg_type(&dict) == DBUS_TYPE_DICT_ENTRY;
         dbus_message_iter_next(&dict)) {
        DBusMessageIter entry, dst;
        DBusMessage *one;
        const char *key;
        int ok;

        if (n == max) {
            n = -1;
            break;
        }
        dbus_message_iter_recurse(&dict, &entry);
        dbus_message_iter_get_basic(&entry, &key);
        dbus_message_iter_next(&entry); /* the variant, the entry's last item */
        snprintf(out[n].key, sizeof(out[n].key), "%s", key);
        one = dbus_message_new_signal("/r", "org.example.Reference", "R");
        dbus_message_iter_init_append(one, &dst);
        ok = one && vms_reference_copy(&entry, &dst) &&
             vms_reference_body(one, &out[n].value, &out[n].len) == 0;
        if (one)
            dbus_message_unref(one);
        if (!ok) {
            n = -1;
            break;
        }
        n++;
    }
    if (n < 0) /* what was taken is freed */
        for (int i = 0; i < max && out[i].value; i++) {
            free(out[i].value);
            out[i].value = NULL;
        }
    dbus_message_unref(in);
    return n;
}

static inline void vms_reference_entries_free(struct vms_reference_entry *e, int n)
{
    for (int i = 0; i < n; i++) {
        free(e[i].value);
        e[i].value = NULL;
    }
}

#endif
