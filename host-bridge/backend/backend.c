/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * backend.c — what the backends share (backend.h): the choice per VM, set-memory's message.
 */
#include "config.h"
#include "backend.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vms-log.h"

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

#ifdef HAVE_LIBVIRT
/* Where backend-libvirt.so is: $VMSTATE_BRIDGE_MODULE_DIR; else .libs beside the running
 * executable, which only a build tree has (libtool puts the module there, and a build must
 * not load an older installed one); else the installed BRIDGE_MODULE_DIR. */
static void libvirt_module_path(char *path, size_t len)
{
    const char *dir = secure_getenv("VMSTATE_BRIDGE_MODULE_DIR");
    char exe[PATH_MAX];
    ssize_t n;

    if (dir && dir[0]) {
        snprintf(path, len, "%s/backend-libvirt.so", dir);
        return;
    }
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        char *slash;
        exe[n] = '\0';
        slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(path, len, "%s/.libs/backend-libvirt.so", exe);
            if (access(path, R_OK) == 0)
                return;
        }
    }
    snprintf(path, len, "%s/backend-libvirt.so", BRIDGE_MODULE_DIR);
}

const struct bridge_backend_ops *bridge_backend_libvirt_load(void)
{
    static const struct bridge_backend_ops *ops;
    char path[PATH_MAX + 32];
    void *h;

    if (ops)
        return ops;
    libvirt_module_path(path, sizeof(path));
    h = dlopen(path, RTLD_NOW | RTLD_LOCAL); /* NOW: a missing symbol fails here, not mid-job */
    if (!h) {
        vms_err(NULL, NULL, "backend libvirt: cannot load the module: %s", dlerror());
        return NULL;
    }
    ops = dlsym(h, "bridge_backend_libvirt");
    if (!ops) {
        vms_err(NULL, NULL, "backend libvirt: %s has no bridge_backend_libvirt", path);
        dlclose(h);
        return NULL;
    }
    vms_debug(NULL, NULL, "backend libvirt: loaded %s", path);
    return ops; /* stays loaded: the ops and their threads live as long as the bridge */
}
#endif

const struct bridge_backend_ops *bridge_backend_for(const struct bridge_vm_config *cfg,
                                                    const struct bridge_backend_ops *fallback)
{
#ifdef HAVE_LIBVIRT
    if (cfg->backend == BRIDGE_BACKEND_LIBVIRT)
        return bridge_backend_libvirt_load();
#endif
    return fallback;
}
