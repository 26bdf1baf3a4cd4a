/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fuzz-helper-events — vmstate-helperd's host-facing input path: bytes as
 * they arrive on port B go through the channel (deframe + decode) into the
 * helper core (Welcome/Reply/Event/Timeline handling, dedup, listener
 * delivery, held events, acks). No bus: D-Bus emission is skipped; port A
 * has no fd, so what the helper writes stays in its bounded queue.
 *
 * Seeds (fuzz/corpus/helper-events/) are framed port-B streams: single
 * messages and sequences (Welcome, Events incl. duplicates and lists,
 * Timeline, Replies, garbage between frames).
 *
 * Speed: struct helper is ~190 KiB; allocating it per input made ASan map,
 * fault in and unmap it every time (~1 ms). It is now one static object:
 * helper_init() zeroes all of it and helper_free() releases everything it
 * owns, so each input still starts from the same fresh helper.
 */
#include "config.h"

#include <stdio.h>

#include <stdint.h>
#include <stdlib.h>

#include "helper.h"
#include "vms-log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SEED_NONCE 12345 /* the seeds' Welcome echoes this nonce */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int logging_off;
    static struct helper helper;
    struct helper_config cfg;
    struct helper *h = &helper;

    if (!logging_off) {
        vms_log_init("fuzz-helper-events", LOG_EMERG); /* quiet: a line per bad frame */
        logging_off = 1;
    }
    helper_config_defaults(&cfg);
    cfg.max_held = 8;
    cfg.max_listeners = 4;
    /* never touch the host's clock (fuzzers may run as root) and never run hooks */
    cfg.clock_sync = HELPER_CLOCK_DRY_RUN;
    snprintf(cfg.hooks_dir, sizeof(cfg.hooks_dir), "/nonexistent/vmstate-fuzz");
    if (helper_init(h, &cfg) < 0)
        goto out;
    h->ports = PORTS_UP;
    h->session = SESSION_HELLO_SENT;
    h->hello_nonce = SEED_NONCE;
    helper_listener_add(h, "org.ex.app", ":1.1", 1000);
    helper_listener_add(h, "*", ":1.2", 0);
    vms_channel_feed(&h->port_b, data, size, helper_on_port_b_msg, h);
    helper_deliver_held(h, "org.ex.other");
    helper_listener_owner_gone(h, ":1.1");
    helper_timers(h);
out:
    helper_free(h);
    return 0;
}
