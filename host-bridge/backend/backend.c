/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * backend.c — what the backends share (backend.h): the choice per VM, set-memory's message.
 */
#include "config.h"
#include "backend.h"

#include <stdio.h>

void bridge_balloon_message(char *out, size_t len, const char *why, uint64_t actual,
                            uint64_t target)
{
    if (why)
        snprintf(out, len, "%s; memory %llu MiB, target %llu MiB", why,
                 (unsigned long long)(actual >> 20), (unsigned long long)(target >> 20));
    else if (!bridge_balloon_near(actual, target))
        snprintf(out, len,
                 "the guest stopped at %llu MiB of the %llu MiB target (it gave what it could)",
                 (unsigned long long)(actual >> 20), (unsigned long long)(target >> 20));
    else if (len)
        out[0] = '\0';
}

const struct bridge_backend_ops *bridge_backend_for(const struct bridge_vm_config *cfg,
                                                    const struct bridge_backend_ops *fallback)
{
#ifdef HAVE_LIBVIRT
    if (cfg->backend == BRIDGE_BACKEND_LIBVIRT)
        return &bridge_backend_libvirt;
#endif
    return fallback;
}
