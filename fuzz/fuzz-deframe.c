/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fuzz-deframe — the frame reader over arbitrary port bytes. Checks that it
 * never overruns its fixed buffer, that every frame it yields fits the cap,
 * and that a good frame after any input is still found (resync).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "vms-wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct vms_deframer d;
    static int ready;
    static const uint8_t probe[] = "resync-probe";
    uint8_t frame[64];
    int found = 0;

    if (!ready) {
        if (vms_deframer_init(&d) < 0)
            abort();
        ready = 1;
    }
    vms_deframer_reset(&d);
    size_t flen = vms_wire_encode(probe, sizeof(probe), frame, sizeof(frame));
    for (int pass = 0; pass < 2; pass++) {
        const uint8_t *p = pass ? frame : data;
        size_t n = pass ? flen : size;
        while (n) {
            const uint8_t *out;
            size_t used, olen;
            enum vms_wire_error e;
            enum vms_deframe_result r = vms_deframer_feed(&d, p, n, &used, &out, &olen, &e);
            if (used > n)
                abort();
            p += used;
            n -= used;
            if (r == VMS_DEFRAME_FRAME) {
                if (olen > VMS_WIRE_PAYLOAD_MAX)
                    abort();
                if (pass && olen == sizeof(probe) && memcmp(out, probe, olen) == 0)
                    found = 1;
            } else if (r == VMS_DEFRAME_NEED_MORE) {
                break;
            }
        }
    }
    if (!found)
        abort(); /* a sync byte must always let the reader recover */
    return 0;
}
