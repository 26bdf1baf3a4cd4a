/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * auth.h — principals' secrets, rights, and rate limits.
 *
 * Secrets are stored as libsodium crypto_pwhash_str() strings (Argon2id,
 * salted; the cost parameters are inside the string). The bridge verifies
 * with crypto_pwhash_str_verify() (constant time in the secret) and never
 * logs a secret. Failures are rate-limited per (VM, principal, guest uid)
 * with a token bucket: auth_fail_max failures per auth_fail_window seconds,
 * after which that principal gets VMS_STATUS_ERR_RATE_LIMITED from that VM
 * for that uid without its secret even being checked, until tokens refill.
 * Keyed by uid too, so one guest user guessing another app's secret does not
 * lock that app out; names that exist and names that do not are limited the
 * same way (own bucket each), so the answers reveal nothing about which exist.
 */
#ifndef BRIDGE_AUTH_H
#define BRIDGE_AUTH_H

#include <sodium.h>
#include <stddef.h>

#include "db.h"
#include "vms-proto.h"

/* Hash costs. "default" is below libsodium's INTERACTIVE (2 passes, 64 MiB). */
#define BRIDGE_PWHASH_OPS_DEFAULT 2
#define BRIDGE_PWHASH_MEM_DEFAULT (16u * 1024u * 1024u)
/* The cheapest libsodium accepts: for tests only. */
#define BRIDGE_PWHASH_OPS_TEST crypto_pwhash_OPSLIMIT_MIN
#define BRIDGE_PWHASH_MEM_TEST crypto_pwhash_MEMLIMIT_MIN

/* A token bucket: @capacity tokens, refilled at capacity/window per second. */
struct bridge_bucket {
    double tokens;
    double last; /* time of the last refill, seconds */
    int primed;
};

/*
 * Take one token if there is one: 1 taken, 0 empty. A capacity of 0 means
 * unlimited (always 1). @now is a monotonic time in seconds.
 */
int bridge_bucket_take(struct bridge_bucket *b, unsigned capacity, unsigned window, double now);
/* 1 if at least one token is available (does not take it). */
int bridge_bucket_peek(struct bridge_bucket *b, unsigned capacity, unsigned window, double now);

#define BRIDGE_AUTH_SLOTS 64
/*
 * How long a successful Argon2id verification is remembered. Argon2id costs
 * ~20 ms by design and runs on the event loop; without this every request
 * would pay it and one VM's stream of requests would stall all VMs. What is
 * remembered is a keyed BLAKE2b MAC of the secret (random key per process,
 * never stored) and a digest of the stored hash (so a changed secret or a
 * removed principal invalidates it at once); comparison is constant time.
 */
#define BRIDGE_AUTH_CACHE_SECONDS 300.0

/*
 * Per-VM failure buckets, one per (principal name, guest uid), whether the
 * name exists or not. When all slots are taken, a slot without recent
 * failures is recycled first, so a flood of fresh names cannot wipe the
 * failures counted against a name being guessed.
 */
struct bridge_auth_limiter {
    unsigned max, window; /* auth_fail_max, auth_fail_window */
    unsigned char mac_key[crypto_generichash_KEYBYTES];
    struct bridge_auth_slot {
        char principal[VMS_STR_MAX + 1];
        int64_t uid;
        struct bridge_bucket bucket;
        double used;
        double verified_until; /* 0: nothing remembered */
        unsigned char secret_mac[crypto_generichash_BYTES];
        unsigned char hash_digest[crypto_generichash_BYTES];
    } slots[BRIDGE_AUTH_SLOTS];
    /*
     * A copy of the last stored hash this limiter verified against. An
     * unknown principal's secret is verified against it (and fails), so that
     * "no such principal" costs as much time as "wrong secret" and a guest
     * cannot learn which principals exist by timing.
     */
    char decoy[crypto_pwhash_STRBYTES + 1];
};

void bridge_auth_limiter_init(struct bridge_auth_limiter *l, unsigned max, unsigned window);

/*
 * Hash @secret for storage into @out (crypto_pwhash_STRBYTES). Returns 0 or -1
 * (out of memory for the chosen cost).
 */
int bridge_secret_hash(const char *secret, unsigned long long ops, size_t mem,
                       char out[crypto_pwhash_STRBYTES]);

/*
 * Decide whether @principal with @secret, asked by guest uid @uid (-1: none
 * named), may do @op on @vm: VMS_STATUS_OK, ERR_RATE_LIMITED (too many recent
 * failures of this principal for this uid; the secret is not checked), ERR_AUTH (unknown principal
 * or wrong secret; counts as a failure), ERR_DENIED (no right), or ERR_INTERNAL (database error).
 * @now is monotonic seconds. The secret is not copied or logged.
 */
enum vms_status bridge_auth_check(struct bridge_db *db, struct bridge_auth_limiter *lim,
                                  const char *vm, const char *principal, int64_t uid,
                                  const char *secret, const char *op, double now);

/*
 * bridge_auth_check() in three steps, so that the slow one (Argon2id, ~20 ms at the default
 * cost) can run off the event loop (verify.h):
 *   bridge_auth_start()   on the loop: looks the principal up, applies its failure bucket, and
 *                         answers at once when the secret was verified recently; else fills @v
 *                         with what to verify and sets *@pending.
 *   bridge_auth_verify()  anywhere (any thread): the verification itself; touches only @v.
 *   bridge_auth_finish()  on the loop: counts a failure, remembers a success, and checks rights.
 * An unknown principal's secret is verified against the decoy (made by bridge_auth_verify()
 * when there is none yet), the same work as a wrong secret. @v holds a copy of the secret:
 * bridge_auth_verify_clear() wipes it.
 */
struct bridge_auth_verify {
    char hash[crypto_pwhash_STRBYTES + 1]; /* the stored hash, or the decoy; "" = make a decoy */
    char secret[VMS_STR_MAX + 1];
    int found; /* the principal exists */
    int ok;    /* bridge_auth_verify()'s answer */
    unsigned char mac[crypto_generichash_BYTES], digest[crypto_generichash_BYTES];
};

/*
 * Returns VMS_STATUS_OK with *@pending = 1 (verify @v, then bridge_auth_finish()), or a final
 * answer with *@pending = 0: ERR_RATE_LIMITED, ERR_INTERNAL, or — the secret remembered —
 * OK, ERR_DENIED (rights checked). When rights were checked and @ops_allowed is not NULL,
 * *@ops_allowed gets what the same query said of @uid (bridge_db_rights()'s @for_uid).
 */
enum vms_status bridge_auth_start(struct bridge_db *db, struct bridge_auth_limiter *lim,
                                  const char *vm, const char *principal, int64_t uid,
                                  const char *secret, const char *op, double now,
                                  struct bridge_auth_verify *v, int *pending, int64_t *ops_allowed);
/* Verify @v's secret against its hash (sets v->ok; makes the decoy first if v->hash is ""). */
void bridge_auth_verify(struct bridge_auth_verify *v);
/* The answer for @v, verified: OK, ERR_AUTH (a failure counted), ERR_DENIED, ERR_INTERNAL;
 * *@ops_allowed as for bridge_auth_start(). */
enum vms_status bridge_auth_finish(struct bridge_db *db, struct bridge_auth_limiter *lim,
                                   const char *vm, const char *principal, int64_t uid,
                                   const char *op, double now, struct bridge_auth_verify *v,
                                   int64_t *ops_allowed);
/* Wipe @v (its secret and MAC). */
void bridge_auth_verify_clear(struct bridge_auth_verify *v);

/* Monotonic clock in seconds. */
double bridge_now(void);

#endif
