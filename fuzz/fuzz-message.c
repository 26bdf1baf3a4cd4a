/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fuzz-message — the message decoder (libdbus demarshal + schema checks)
 * over arbitrary payloads. A decoded message must re-encode: decode accepts
 * nothing that encode would refuse. What the encoder writes must be what
 * libdbus writes for the same message (it marshals by hand), and decode again.
 * What the decoder read (from the bytes, after libdbus validated them) must be what
 * libdbus reads: every entry re-encoded has the value libdbus reads for that key in the
 * payload, and every entry of the payload was either taken or counted as unknown.
 * The canonical decoder (no libdbus: the privsep reader's frames, the bridge's answers)
 * runs on the same bytes: whatever it accepts, the full decoder read as the same message,
 * and it accepts whatever our encoder wrote.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "vms-dbus-reference.h"
#include "vms-proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ENTRIES_MAX 256

/* Every entry of @out is in @in with the same value (but caps, which decode keeps as the
 * bits of the names it knows); @in has @unknown entries more. */
static void check_as_libdbus_reads(const uint8_t *in, size_t in_len, const uint8_t *out,
                                   size_t out_len, unsigned unknown)
{
    static struct vms_reference_entry a[ENTRIES_MAX], b[ENTRIES_MAX];
    int na = vms_reference_entries(in, in_len, a, ENTRIES_MAX);
    int nb = vms_reference_entries(out, out_len, b, ENTRIES_MAX);

    if (na < 0) { /* more entries than this check keeps: nothing to compare */
        vms_reference_entries_free(b, nb);
        return;
    }
    if (nb < 0 || na != nb + (int)unknown)
        abort();
    for (int i = 0; i < nb; i++) {
        int found = 0;
        for (int j = 0; j < na && !found; j++)
            found = !strcmp(a[j].key, b[i].key) &&
                    (!strcmp(b[i].key, "caps") ||
                     (a[j].len == b[i].len && !memcmp(a[j].value, b[i].value, b[i].len)));
        if (!found)
            abort();
    }
    vms_reference_entries_free(a, na);
    vms_reference_entries_free(b, nb);
}

/* What vms_msg_decode_canonical accepts of @data, the full decoder accepted (@full) as the
 * same message @m: equal re-encodings. */
static void check_canonical(const uint8_t *data, size_t size, enum vms_decode_result full,
                            const struct vms_msg *m)
{
    struct vms_msg c;
    uint8_t *a = NULL, *b = NULL;
    size_t a_len = 0, b_len = 0;
    char err[256];

    if (vms_msg_decode_canonical(data, size, &c, NULL) != VMS_DECODE_OK) {
        if (c.fields || c.app_data)
            abort(); /* a refused message is left cleared */
        return;
    }
    /* and only what our encoder writes: re-encoded, it is the input itself */
    if (full != VMS_DECODE_OK || vms_msg_encode(m, &a, &a_len, err, sizeof(err)) < 0 ||
        vms_msg_encode(&c, &b, &b_len, err, sizeof(err)) < 0 || a_len != b_len ||
        memcmp(a, b, a_len) != 0 || b_len != size || memcmp(b, data, size) != 0)
        abort();
    free(a);
    free(b);
    vms_msg_clear(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vms_msg m;
    struct vms_decode_report rep;
    enum vms_decode_result full = vms_msg_decode(data, size, &m, &rep);

    /* the canonical decoder reads any bytes safely, and accepts only what the full one reads
     * the same way */
    check_canonical(data, size, full, &m);
    if (full == VMS_DECODE_OK) {
        uint8_t *out;
        size_t len;
        char err[256];
        uint8_t *ref;
        size_t ref_len;
        struct vms_msg again;
        if (vms_msg_encode(&m, &out, &len, err, sizeof(err)) < 0)
            abort();
        if (vms_reference_marshal(out, len, &ref, &ref_len) < 0 || ref_len != len ||
            memcmp(ref, out, len) != 0)
            abort();
        check_as_libdbus_reads(data, size, out, len, rep.unknown_fields);
        /* what our encoder writes, the canonical decoder takes as the full one does */
        if (vms_msg_decode_canonical(out, len, &again, NULL) != VMS_DECODE_OK)
            abort();
        vms_msg_clear(&again);
        check_canonical(out, len, VMS_DECODE_OK, &m);
        if (vms_msg_decode(out, len, &again, &rep) != VMS_DECODE_OK || again.fields != m.fields)
            abort();
        vms_msg_clear(&again);
        free(ref);
        free(out);
    }
    vms_msg_clear(&m);
    return 0;
}
