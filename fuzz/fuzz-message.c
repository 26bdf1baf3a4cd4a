/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fuzz-message — the message decoder (libdbus demarshal + schema checks)
 * over arbitrary payloads. A decoded message must re-encode: decode accepts
 * nothing that encode would refuse.
 */
#include "config.h"

#include <stdlib.h>

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
        if (vms_msg_encode(&m, &out, &len, err, sizeof(err)) < 0)
            abort();
        free(out);
    }
    vms_msg_clear(&m);
    return 0;
}
