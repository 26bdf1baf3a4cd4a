/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fuzz-message — the message decoder (libdbus demarshal + schema checks)
 * over arbitrary payloads. A decoded message must re-encode: decode accepts
 * nothing that encode would refuse. What the encoder writes must be what
 * libdbus writes for the same message (it marshals by hand), and decode again.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "vms-dbus-reference.h"
#include "vms-proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vms_msg m;
    struct vms_decode_report rep;

    if (vms_msg_decode(data, size, &m, &rep) == VMS_DECODE_OK) {
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
        if (vms_msg_decode(out, len, &again, &rep) != VMS_DECODE_OK || again.fields != m.fields)
            abort();
        vms_msg_clear(&again);
        free(ref);
        free(out);
    }
    vms_msg_clear(&m);
    return 0;
}
