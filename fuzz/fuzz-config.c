/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fuzz-config — the INI configuration parsers: the first byte of the input
 * selects the parser (bit 0x08 clear, e.g. 'b': vmstate-bridged's
 * bridge_config_load_string; set, e.g. 'h': vmstate-helperd's
 * helper_config_load_string), the rest is the file's text. Config files are admin input: the point
 * is a clear error, never a crash, on whatever they hold. Both results are then used a little (VM
 * lookups, the helper's access checks) to touch what the parser filled in.
 *
 * Seeds (fuzz/corpus/config/): the two shipped examples prefixed with their
 * selector byte ('b' or 'h'), and broken files.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge-config.h"
#include "helper-config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* FUZZ_LOG=1: print each input's verdict (to check what the seeds reach). */
static void verdict(const char *which, int rc, const char *err)
{
    if (getenv("FUZZ_LOG"))
        fprintf(stderr, "%s: %s\n", which, rc == 0 ? "ok" : err);
}

static void fuzz_bridge(const char *text)
{
    struct bridge_config cfg;
    char err[512];

    int rc;

    memset(&cfg, 0, sizeof(cfg));
    err[0] = '\0';
    rc = bridge_config_load_string(&cfg, "fuzz.conf", text, err, sizeof(err));
    verdict("bridge", rc, err);
    if (rc == 0) {
        for (size_t i = 0; i < cfg.n_vms; i++)
            if (!bridge_config_vm(&cfg, cfg.vms[i].name))
                abort();
    } else if (!err[0]) {
        abort(); /* a failure always says why */
    }
    bridge_config_free(&cfg);
}

static void fuzz_helper(const char *text)
{
    static struct helper_config cfg; /* ~100 KiB: not on the stack */
    char err[512] = "";
    int rc;

    helper_config_defaults(&cfg);
    rc = helper_config_load_string(&cfg, "fuzz.conf", text, err, sizeof(err));
    verdict("helper", rc, err);
    if (rc == 0) {
        const char *why = NULL;
        (void)helper_config_uid_allowed(&cfg, 1000);
        for (size_t i = 0; i < cfg.n_apps; i++)
            (void)helper_config_app_allowed(&cfg, cfg.apps[i].app_id, 1000, &why);
        (void)helper_config_app_allowed(&cfg, "*", 1000, &why);
    } else if (!err[0]) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text;

    if (size < 1)
        return 0;
    text = malloc(size);
    if (!text)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    if (data[0] & 0x08)
        fuzz_helper(text);
    else
        fuzz_bridge(text);
    free(text);
    return 0;
}
