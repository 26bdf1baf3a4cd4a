/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * auth.c — see auth.h.
 */
#include "config.h"
#include "auth.h"

#include <string.h>
#include <time.h>

#include "vms-log.h"

double bridge_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bucket_refill(struct bridge_bucket *b, unsigned capacity, unsigned window, double now)
{
    if (!b->primed) {
        b->tokens = capacity;
        b->last = now;
        b->primed = 1;
        return;
    }
    if (now > b->last) {
        b->tokens += (now - b->last) * (double)capacity / (double)(window ? window : 1);
        if (b->tokens > capacity)
            b->tokens = capacity;
    }
    b->last = now;
}

int bridge_bucket_peek(struct bridge_bucket *b, unsigned capacity, unsigned window, double now)
{
    if (!capacity)
        return 1;
    bucket_refill(b, capacity, window, now);
    return b->tokens >= 1.0;
}

int bridge_bucket_take(struct bridge_bucket *b, unsigned capacity, unsigned window, double now)
{
    if (!bridge_bucket_peek(b, capacity, window, now))
        return 0;
    if (capacity)
        b->tokens -= 1.0;
    return 1;
}

void bridge_auth_limiter_init(struct bridge_auth_limiter *l, unsigned max, unsigned window)
{
    memset(l, 0, sizeof(*l));
    l->max = max;
    l->window = window;
    if (sodium_init() >= 0)
        randombytes_buf(l->mac_key, sizeof(l->mac_key));
}

/*
 * The slot of (@principal, @uid). A new one recycles, in order: a free slot,
 * the least recently used slot whose bucket is full again (no failures to
 * remember), the least recently used slot.
 */
static struct bridge_auth_slot *principal_slot(struct bridge_auth_limiter *l, const char *principal,
                                               int64_t uid, double now)
{
    struct bridge_auth_slot *idle = NULL, *oldest = &l->slots[0];

    for (int i = 0; i < BRIDGE_AUTH_SLOTS; i++) {
        struct bridge_auth_slot *s = &l->slots[i];
        if (s->principal[0] && s->uid == uid && !strcmp(s->principal, principal)) {
            s->used = now;
            return s;
        }
        if (!s->principal[0]) {
            idle = s;
            oldest = s;
            break;
        }
        if (s->used < oldest->used)
            oldest = s;
        if (bridge_bucket_peek(&s->bucket, l->max, l->window, now) &&
            s->bucket.tokens >= (double)l->max && (!idle || s->used < idle->used))
            idle = s;
    }
    if (!idle)
        idle = oldest;
    memset(idle, 0, sizeof(*idle));
    snprintf(idle->principal, sizeof(idle->principal), "%s", principal);
    idle->uid = uid;
    idle->used = now;
    return idle;
}

int bridge_secret_hash(const char *secret, unsigned long long ops, size_t mem,
                       char out[crypto_pwhash_STRBYTES])
{
    if (sodium_init() < 0)
        return -1;
    return crypto_pwhash_str(out, secret, strlen(secret), ops, mem);
}

/* Rights of an authenticated @principal: @op for some uid; *@ops_allowed (if not NULL) gets
 * the operations allowed for @uid, read by the same query. */
static enum vms_status auth_rights(struct bridge_db *db, const char *vm, const char *principal,
                                   int64_t uid, const char *op, int64_t *ops_allowed)
{
    int64_t mine, any;

    if (bridge_db_rights(db, principal, vm, uid, &mine, &any) < 0)
        return VMS_STATUS_ERR_INTERNAL;
    if (ops_allowed)
        *ops_allowed = mine;
    return bridge_ops_allow(any, vms_op_from_name(op)) ? VMS_STATUS_OK : VMS_STATUS_ERR_DENIED;
}

void bridge_auth_verify_clear(struct bridge_auth_verify *v)
{
    sodium_memzero(v, sizeof(*v));
}

enum vms_status bridge_auth_start(struct bridge_db *db, struct bridge_auth_limiter *lim,
                                  const char *vm, const char *principal, int64_t uid,
                                  const char *secret, const char *op, double now,
                                  struct bridge_auth_verify *v, int *pending, int64_t *ops_allowed)
{
    struct bridge_auth_slot *slot;
    int found;

    *pending = 0;
    memset(v, 0, sizeof(*v));
    found = bridge_db_principal_hash(db, principal, v->hash, sizeof(v->hash));
    if (found < 0)
        goto internal;
    /* known or not, the same kind of bucket: the answers must not tell them apart */
    slot = principal_slot(lim, principal, uid, now);
    if (!bridge_bucket_peek(&slot->bucket, lim->max, lim->window, now)) {
        bridge_auth_verify_clear(v);
        return VMS_STATUS_ERR_RATE_LIMITED;
    }
    if (sodium_init() < 0)
        goto internal;
    v->found = found;
    if (found) {
        crypto_generichash(v->mac, sizeof(v->mac), (const unsigned char *)secret, strlen(secret),
                           lim->mac_key, sizeof(lim->mac_key));
        crypto_generichash(v->digest, sizeof(v->digest), (const unsigned char *)v->hash,
                           strlen(v->hash), NULL, 0);
        if (slot->verified_until > now &&
            sodium_memcmp(slot->secret_mac, v->mac, sizeof(v->mac)) == 0 &&
            sodium_memcmp(slot->hash_digest, v->digest, sizeof(v->digest)) == 0) {
            /* verified recently with this very secret and stored hash */
            bridge_auth_verify_clear(v);
            return auth_rights(db, vm, principal, uid, op, ops_allowed);
        }
        memcpy(lim->decoy, v->hash, sizeof(lim->decoy));
    } else {
        /* same work as a wrong secret; the result is ignored */
        memcpy(v->hash, lim->decoy, sizeof(v->hash));
    }
    snprintf(v->secret, sizeof(v->secret), "%s", secret);
    *pending = 1;
    return VMS_STATUS_OK;
internal:
    bridge_auth_verify_clear(v);
    return VMS_STATUS_ERR_INTERNAL;
}

void bridge_auth_verify(struct bridge_auth_verify *v)
{
    v->ok = 0;
    if (sodium_init() < 0)
        return;
    if (!v->hash[0]) {
        char decoy[crypto_pwhash_STRBYTES];
        if (bridge_secret_hash("decoy", BRIDGE_PWHASH_OPS_DEFAULT, BRIDGE_PWHASH_MEM_DEFAULT,
                               decoy) < 0)
            return;
        snprintf(v->hash, sizeof(v->hash), "%s", decoy);
    }
    v->ok = crypto_pwhash_str_verify(v->hash, v->secret, strlen(v->secret)) == 0;
    sodium_memzero(v->secret, sizeof(v->secret));
}

enum vms_status bridge_auth_finish(struct bridge_db *db, struct bridge_auth_limiter *lim,
                                   const char *vm, const char *principal, int64_t uid,
                                   const char *op, double now, struct bridge_auth_verify *v,
                                   int64_t *ops_allowed)
{
    struct bridge_auth_slot *slot = principal_slot(lim, principal, uid, now);
    int ok = v->found && v->ok;

    if (!v->found) {
        if (v->ok)
            vms_debug(vm, NULL, "secret matched the decoy hash; refused anyway");
        if (!lim->decoy[0] && v->hash[0])
            memcpy(lim->decoy, v->hash, sizeof(lim->decoy)); /* made by bridge_auth_verify() */
    } else if (ok) {
        memcpy(slot->secret_mac, v->mac, sizeof(v->mac));
        memcpy(slot->hash_digest, v->digest, sizeof(v->digest));
        slot->verified_until = now + BRIDGE_AUTH_CACHE_SECONDS;
    }
    bridge_auth_verify_clear(v);
    if (!ok) {
        bridge_bucket_take(&slot->bucket, lim->max, lim->window, now);
        return VMS_STATUS_ERR_AUTH;
    }
    return auth_rights(db, vm, principal, uid, op, ops_allowed);
}

enum vms_status bridge_auth_check(struct bridge_db *db, struct bridge_auth_limiter *lim,
                                  const char *vm, const char *principal, int64_t uid,
                                  const char *secret, const char *op, double now)
{
    struct bridge_auth_verify v;
    enum vms_status st;
    int pending;

    st = bridge_auth_start(db, lim, vm, principal, uid, secret, op, now, &v, &pending, NULL);
    if (!pending)
        return st;
    bridge_auth_verify(&v);
    return bridge_auth_finish(db, lim, vm, principal, uid, op, now, &v, NULL);
}
