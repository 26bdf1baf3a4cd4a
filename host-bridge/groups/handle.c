/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * handle.c — see handle.h.
 */
#include "config.h"
#include "handle.h"

#include <sodium.h>
#include <string.h>

static void digest_of(const unsigned char key[GROUP_HANDLE_BYTES], const char *binding,
                      unsigned char out[32])
{
    crypto_generichash(out, 32, (const unsigned char *)binding, strlen(binding), key,
                       GROUP_HANDLE_BYTES);
}

int group_handle_expire(struct group_handles *h, int64_t now_ns)
{
    int n = 0;
    for (int i = 0; i < GROUP_HANDLES_MAX; i++) {
        struct group_handle_slot *s = &h->s[i];
        if (s->state == GH_FREE || s->state == GH_ARMED || s->expires_ns > now_ns)
            continue;
        if (s->state == GH_PREPARED) {
            s->state = GH_EXPIRED;
            s->expires_ns = now_ns + GROUP_HANDLE_TOMBSTONE_NS;
        } else {
            sodium_memzero(s, sizeof(*s));
        }
        n++;
    }
    return n;
}

int group_handle_issue(struct group_handles *h, const char *binding, int64_t now_ns,
                       int64_t expires_ns, char out[GROUP_HANDLE_HEX])
{
    unsigned char key[GROUP_HANDLE_BYTES];
    int slot = -1;

    group_handle_expire(h, now_ns);
    for (int i = 0; i < GROUP_HANDLES_MAX && slot < 0; i++)
        if (h->s[i].state == GH_FREE)
            slot = i;
    for (int i = 0; i < GROUP_HANDLES_MAX && slot < 0; i++)
        if (h->s[i].state == GH_EXPIRED || h->s[i].state == GH_USED)
            slot = i; /* a tombstone gives way */
    if (slot < 0)
        return -1;
    randombytes_buf(key, sizeof(key));
    digest_of(key, binding, h->s[slot].digest);
    sodium_bin2hex(out, GROUP_HANDLE_HEX, key, sizeof(key));
    sodium_memzero(key, sizeof(key));
    h->s[slot].expires_ns = expires_ns;
    h->s[slot].state = GH_PREPARED;
    return slot;
}

int group_handle_find(struct group_handles *h, const char *hex, const char *binding, int64_t now_ns,
                      enum group_handle_state want, const char **why)
{
    unsigned char key[GROUP_HANDLE_BYTES], d[32];
    size_t len = 0;
    int slot = -1;

    if (!hex || strlen(hex) != 2 * GROUP_HANDLE_BYTES ||
        strspn(hex, "0123456789abcdef") != 2 * GROUP_HANDLE_BYTES ||
        sodium_hex2bin(key, sizeof(key), hex, strlen(hex), NULL, &len, NULL) < 0 ||
        len != sizeof(key)) {
        *why = "malformed handle (32 lowercase hex digits expected)";
        return -1;
    }
    digest_of(key, binding, d);
    sodium_memzero(key, sizeof(key));
    /* every slot is compared, whatever matches first: the time says nothing */
    for (int i = 0; i < GROUP_HANDLES_MAX; i++) {
        int eq = sodium_memcmp(d, h->s[i].digest, sizeof(d)) == 0;
        if (eq && h->s[i].state != GH_FREE)
            slot = i;
    }
    if (slot < 0) {
        *why = "unknown handle: wrong, bound to another group, time or VM set, or issued "
               "before this bridge restarted";
        return -1;
    }
    if (h->s[slot].state == GH_EXPIRED ||
        (h->s[slot].state == GH_PREPARED && h->s[slot].expires_ns <= now_ns)) {
        if (h->s[slot].state == GH_PREPARED)
            h->s[slot].expires_ns = now_ns + GROUP_HANDLE_TOMBSTONE_NS;
        h->s[slot].state = GH_EXPIRED;
        *why = "handle expired";
        return -1;
    }
    if (h->s[slot].state != want) {
        *why = h->s[slot].state == GH_USED || h->s[slot].state == GH_ARMED ? "handle already used"
                                                                           : "handle not committed";
        return -1;
    }
    return slot;
}
