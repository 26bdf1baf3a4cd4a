/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * test-bridge-verify.c — secrets verified off the event loop (guest/verify.c, issue 18): one
 * VM's slow verification does not delay another VM's request; a VM's messages that arrive
 * while its verification runs are held and run in order afterwards, at most BRIDGE_HELD_MAX
 * of them; unknown principals and wrong secrets take the same road (decoy, failure bucket).
 * The fixture's bridge with a real verifier; the test plays the loop (poll on its eventfd).
 */
#include "config.h"

#include <criterion/criterion.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "test-bridge-fixture.h"
#include "verify.h"

/* "slow": a principal hashed at a high cost (3 passes, 32 MiB: ~100 ms or more to verify). */
#define SLOW_OPS 3
#define SLOW_MEM (32u << 20)

static const char *conf_text =
    "[vm vm1]\nport_a=/nonexistent/a\nport_b=/nonexistent/b\nqmp=/nonexistent/q\nnodes=disk0\n"
    "rate_requests=1000\nrate_requests_per_uid=1000\nauth_fail_max=3\nauth_fail_window=60\n"
    "[vm vm2]\nport_a=/nonexistent/a2\nport_b=/nonexistent/b2\nqmp=/nonexistent/q2\nnodes=disk0\n";

static void setup(void)
{
    char hash[crypto_pwhash_STRBYTES];

    bfx_setup(conf_text);
    cr_assert_eq(bridge_secret_hash("s3cret", SLOW_OPS, SLOW_MEM, hash), 0);
    cr_assert_eq(bridge_db_principal_add(&br.db, "slow", hash), 0);
    cr_assert_eq(bridge_db_right_grant(&br.db, "slow", "vm1", "all"), 0);
    br.verifier = bridge_verifier_new(0, bridge_guest_verified);
    cr_assert_not_null(br.verifier);
}

static void teardown(void)
{
    struct bridge_verifier *vf = br.verifier;
    bfx_teardown();
    bridge_verifier_free(vf);
}

TestSuite(verify, .init = setup, .fini = teardown);

/* Play the loop: wait for the verifier's answers (up to @ms) and hand them over. */
static int settle(int ms)
{
    struct pollfd p = {.fd = bridge_verifier_fd(br.verifier), .events = POLLIN};
    if (poll(&p, 1, ms) <= 0)
        return 0;
    return bridge_verifier_collect(br.verifier);
}

/* A list request on @vm, answered (verified first if need be): its reply's status. */
static int list_now(struct bridge_vm *vm, struct vms_channel *in, const char *principal)
{
    char id[VMS_REQUEST_ID_LEN + 1] = "";
    request(vm, id, "list", principal, "s3cret", NULL, NULL);
    for (int i = 0; i < 100 && vm->verifying; i++)
        settle(100);
    cr_assert_null(vm->verifying, "verification never answered");
    drain(in);
    cr_assert_not_null(answer_of(id));
    return (int)answer_of(id)->status;
}

static double since(double t0)
{
    return (bridge_now() - t0) * 1e3;
}

Test(verify, slow_verification_of_one_vm_does_not_delay_another)
{
    char slow[VMS_REQUEST_ID_LEN + 1] = "", quick[VMS_REQUEST_ID_LEN + 1] = "";
    struct bridge_auth_limiter lim;
    double t0, stall, quick_ms, slow_ms;

    /* before: the same verification on the loop (what bridge_auth_check() costs it) */
    bridge_auth_limiter_init(&lim, 3, 60);
    t0 = bridge_now();
    cr_assert_eq(bridge_auth_check(&br.db, &lim, "vm1", "slow", -1, "s3cret", "list", 0), 0);
    stall = since(t0);

    cr_assert_eq(list_now(&vm2, &in2, "app"), 0); /* app's secret verified once on vm2 */
    t0 = bridge_now();
    request(&vm1, slow, "list", "slow", "s3cret", NULL, NULL);
    cr_assert_not_null(vm1.verifying, "the slow secret is verified off the loop");
    cr_assert(since(t0) < stall / 2, "submitting took %.1f ms (a verification: %.1f ms)", since(t0),
              stall);
    t0 = bridge_now();
    request(&vm2, quick, "list", "app", "s3cret", NULL, NULL);
    quick_ms = since(t0);
    drain(&in2);
    cr_assert_not_null(answer_of(quick), "vm2 waited for vm1's verification");
    cr_assert_eq(answer_of(quick)->status, 0);
    cr_assert_not_null(find(VMS_MSG_EVENT, quick));
    drain(&in1);
    cr_assert_null(answer_of(slow), "vm1 answered before its secret was verified");
    cr_assert_not_null(vm1.verifying, "vm2's request came after vm1's verification ended");
    for (int i = 0; i < 100 && vm1.verifying; i++)
        settle(100);
    slow_ms = since(t0);
    drain(&in1);
    cr_assert_not_null(answer_of(slow));
    cr_assert_eq(answer_of(slow)->status, 0);
    fprintf(stderr,
            "verify: slow secret on the loop stalled it %.1f ms; off the loop, vm2's request "
            "took %.2f ms while vm1's verification ran (%.1f ms)\n",
            stall, quick_ms, slow_ms);
}

Test(verify, held_messages_run_in_order_and_are_bounded)
{
    char first[VMS_REQUEST_ID_LEN + 1] = "", second[VMS_REQUEST_ID_LEN + 1] = "";
    char extra[VMS_REQUEST_ID_LEN + 1];
    int i_first = -1, i_second = -1, replies = 0;

    cr_assert_eq(list_now(&vm1, &in1, "app"), 0); /* remembered: app needs no verification */
    request(&vm1, first, "list", "slow", "s3cret", NULL, NULL);
    cr_assert_not_null(vm1.verifying);
    request(&vm1, second, "list", "app", "s3cret", NULL, NULL); /* held behind */
    cr_assert_eq(vm1.n_held, 1);
    for (int k = 1; k < BRIDGE_HELD_MAX; k++) /* acks fill the rest (they answer nothing) */
        send_ack(&vm1, second, 1, 1000 + (uint64_t)k);
    cr_assert_eq(vm1.n_held, BRIDGE_HELD_MAX);
    drain(&in1);
    cr_assert_eq(n_got, 0, "nothing answered while the verification runs");
    /* one more: refused at once, saying why */
    extra[0] = '\0';
    request(&vm1, extra, "list", "app", "s3cret", NULL, NULL);
    drain(&in1);
    cr_assert_not_null(find(VMS_MSG_REPLY, extra));
    cr_assert_eq(find(VMS_MSG_REPLY, extra)->status, VMS_STATUS_ERR_RATE_LIMITED);
    cr_assert(strstr(find(VMS_MSG_REPLY, extra)->message, "verification"), "%s",
              find(VMS_MSG_REPLY, extra)->message);

    for (int i = 0; i < 100 && vm1.verifying; i++)
        settle(100);
    cr_assert_null(vm1.verifying);
    cr_assert_eq(vm1.n_held, 0);
    drain(&in1);
    for (int i = 0; i < n_got; i++) {
        if (&got[i] != answer_of(got[i].request_id))
            continue; /* the answer: a Reply, or a list's Event when answered at once */
        replies++;
        if (!strcmp(got[i].request_id, first))
            i_first = i;
        if (!strcmp(got[i].request_id, second))
            i_second = i;
    }
    cr_assert(i_first >= 0 && i_second > i_first, "order: first at %d, second at %d", i_first,
              i_second);
    cr_assert_eq(replies, 2);
}

Test(verify, unknown_principal_and_wrong_secret_take_the_same_road)
{
    char id[VMS_REQUEST_ID_LEN + 1] = "";

    request(&vm1, id, "list", "nobody", "s3cret", NULL, NULL);
    cr_assert_not_null(vm1.verifying, "an unknown principal is verified (decoy) like the others");
    for (int i = 0; i < 100 && vm1.verifying; i++)
        settle(100);
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_REPLY, id)->status, VMS_STATUS_ERR_AUTH);
    cr_assert(vm1.auth.decoy[0], "the decoy made off the loop is kept");
    /* wrong secrets: auth_fail_max (3) failures, then rate-limited without a verification */
    for (int k = 0; k < 3; k++) {
        id[0] = '\0';
        request(&vm1, id, "list", "app", "wrong", NULL, NULL);
        cr_assert_not_null(vm1.verifying);
        for (int i = 0; i < 100 && vm1.verifying; i++)
            settle(100);
        drain(&in1);
        cr_assert_eq(find(VMS_MSG_REPLY, id)->status, VMS_STATUS_ERR_AUTH);
    }
    id[0] = '\0';
    request(&vm1, id, "list", "app", "s3cret", NULL, NULL);
    cr_assert_null(vm1.verifying, "a rate-limited principal is not verified");
    drain(&in1);
    cr_assert_eq(find(VMS_MSG_REPLY, id)->status, VMS_STATUS_ERR_RATE_LIMITED);
}
