/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * test-bridge-groups.c — the group handles (host-bridge/groups/handle.c), the peer
 * configuration, the host clock check, the group tables of the journal, and the rpc messages
 * that carry group calls across hosts (host-bridge/cluster/rpc.c).
 */
#include "config.h"

#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge-config.h"
#include "db.h"
#include "group-db.h"
#include "groups.h"
#include "handle.h"
#include "rpc.h"

#define S 1000000000ll

static const char *B1 = "suspend|grp|1000000000000|preserve|g1,g2,";

static void init(void)
{
    cr_assert_geq(sodium_init(), 0);
}

TestSuite(group_handle, .init = init);

Test(group_handle, issue_and_commit_once)
{
    struct group_handles h;
    char hex[GROUP_HANDLE_HEX];
    const char *why = NULL;
    int slot;

    memset(&h, 0, sizeof(h));
    slot = group_handle_issue(&h, B1, 0, 10 * S, hex);
    cr_assert_geq(slot, 0);
    cr_assert_eq(strlen(hex), 32);
    cr_assert_eq(strspn(hex, "0123456789abcdef"), 32);
    cr_assert_eq(group_handle_find(&h, hex, B1, 1 * S, GH_PREPARED, &why), slot);
    h.s[slot].state = GH_ARMED; /* what a commit does */
    cr_assert_eq(group_handle_find(&h, hex, B1, 2 * S, GH_PREPARED, &why), -1);
    cr_assert_str_eq(why, "handle already used");
    /* an armed handle does not expire (the operation is under way) */
    cr_assert_eq(group_handle_expire(&h, 100 * S), 0);
    cr_assert_eq(group_handle_find(&h, hex, B1, 100 * S, GH_ARMED, &why), slot);
}

Test(group_handle, stores_no_handle)
{
    struct group_handles h;
    char hex[GROUP_HANDLE_HEX];
    unsigned char key[GROUP_HANDLE_BYTES];
    size_t len;

    memset(&h, 0, sizeof(h));
    group_handle_issue(&h, B1, 0, 10 * S, hex);
    cr_assert_eq(sodium_hex2bin(key, sizeof(key), hex, 32, NULL, &len, NULL), 0);
    /* the key bytes appear nowhere in the table */
    for (size_t off = 0; off + sizeof(key) <= sizeof(h); off++)
        cr_assert_neq(memcmp((unsigned char *)&h + off, key, sizeof(key)), 0);
}

Test(group_handle, wrong_or_rebound_handles_are_unknown)
{
    struct group_handles h;
    char hex[GROUP_HANDLE_HEX], other[GROUP_HANDLE_HEX];
    const char *why = NULL;

    memset(&h, 0, sizeof(h));
    group_handle_issue(&h, B1, 0, 10 * S, hex);
    snprintf(other, sizeof(other), "%s", hex);
    other[0] = other[0] == '0' ? '1' : '0';
    cr_assert_eq(group_handle_find(&h, other, B1, 1, GH_PREPARED, &why), -1);
    cr_assert(strstr(why, "unknown handle"));
    /* the right handle bound to another time, group or VM set */
    cr_assert_eq(group_handle_find(&h, hex, "suspend|grp|1000000000001|preserve|g1,g2,", 1,
                                   GH_PREPARED, &why),
                 -1);
    cr_assert_eq(
        group_handle_find(&h, hex, "suspend|grp|1000000000000|preserve|g1,", 1, GH_PREPARED, &why),
        -1);
    cr_assert_eq(group_handle_find(&h, hex, "resume|grp|1000000000000|preserve|g1,g2,", 1,
                                   GH_PREPARED, &why),
                 -1);
    cr_assert(strstr(why, "unknown handle"));
}

Test(group_handle, malformed)
{
    struct group_handles h;
    const char *why = NULL;

    memset(&h, 0, sizeof(h));
    cr_assert_eq(group_handle_find(&h, NULL, B1, 0, GH_PREPARED, &why), -1);
    cr_assert(strstr(why, "malformed"));
    cr_assert_eq(
        group_handle_find(&h, "ABCDEF0123456789ABCDEF0123456789", B1, 0, GH_PREPARED, &why), -1);
    cr_assert(strstr(why, "malformed"));
    cr_assert_eq(group_handle_find(&h, "00", B1, 0, GH_PREPARED, &why), -1);
    /* a free slot's zero digest never matches the all-zero handle */
    cr_assert_eq(
        group_handle_find(&h, "00000000000000000000000000000000", B1, 0, GH_PREPARED, &why), -1);
    cr_assert(strstr(why, "unknown"));
}

Test(group_handle, expiry_leaves_a_tombstone)
{
    struct group_handles h;
    char hex[GROUP_HANDLE_HEX];
    const char *why = NULL;
    int slot;

    memset(&h, 0, sizeof(h));
    slot = group_handle_issue(&h, B1, 0, 5 * S, hex);
    /* at the expiry itself: refused */
    cr_assert_eq(group_handle_find(&h, hex, B1, 5 * S, GH_PREPARED, &why), -1);
    cr_assert_str_eq(why, "handle expired");
    cr_assert_eq(h.s[slot].state, GH_EXPIRED);
    /* a sweep keeps the tombstone, then frees it */
    group_handle_expire(&h, 6 * S);
    cr_assert_eq(group_handle_find(&h, hex, B1, 6 * S, GH_PREPARED, &why), -1);
    cr_assert_str_eq(why, "handle expired");
    group_handle_expire(&h, 6 * S + GROUP_HANDLE_TOMBSTONE_NS);
    cr_assert_eq(h.s[slot].state, GH_FREE);
    cr_assert_eq(
        group_handle_find(&h, hex, B1, 7 * S + GROUP_HANDLE_TOMBSTONE_NS, GH_PREPARED, &why), -1);
    cr_assert(strstr(why, "unknown"));
}

Test(group_handle, full_table)
{
    struct group_handles h;
    char hex[GROUP_HANDLE_HEX], b[64];
    int seen[GROUP_HANDLES_MAX] = {0};

    memset(&h, 0, sizeof(h));
    for (int i = 0; i < GROUP_HANDLES_MAX; i++) {
        int slot;
        snprintf(b, sizeof(b), "suspend|g%d|1|preserve|v,", i);
        slot = group_handle_issue(&h, b, 0, 10 * S, hex);
        cr_assert(slot >= 0 && !seen[slot]);
        seen[slot] = 1;
    }
    cr_assert_eq(group_handle_issue(&h, B1, 1 * S, 10 * S, hex), -1);
    /* once they expire, their tombstones give way */
    cr_assert_geq(group_handle_issue(&h, B1, 11 * S, 20 * S, hex), 0);
}

Test(group_handle, distinct_random_handles)
{
    struct group_handles h;
    char a[GROUP_HANDLE_HEX], b[GROUP_HANDLE_HEX];

    memset(&h, 0, sizeof(h));
    group_handle_issue(&h, B1, 0, 10 * S, a);
    group_handle_issue(&h, B1, 0, 10 * S, b);
    cr_assert_str_neq(a, b);
}

Test(group_config, peers_and_keys)
{
    struct bridge_config cfg;
    char err[512] = "";
    const char *text = "[bridge]\ndatabase = /tmp/x.db\ngroup_min_lead_ms = 250\n"
                       "group_require_clock_sync = no\ngroup_handle_ttl_s = 9\n"
                       "[peer b]\nadmin_socket = /run/b.sock\n";

    cr_assert_eq(bridge_config_load_string(&cfg, "t", text, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(cfg.n_peers, 1);
    cr_assert_str_eq(cfg.peers[0].name, "b");
    cr_assert_str_eq(cfg.peers[0].admin_socket, "/run/b.sock");
    cr_assert_eq(cfg.group_min_lead_ms, 250);
    cr_assert_eq(cfg.group_require_clock_sync, 0);
    cr_assert_eq(cfg.group_handle_ttl_s, 9);
    bridge_config_free(&cfg);
    cr_assert_eq(
        bridge_config_load_string(&cfg, "t", "[peer self]\nadmin_socket = /a\n", err, sizeof(err)),
        -1);
    cr_assert(strstr(err, "self"), "%s", err);
    bridge_config_free(&cfg);
    cr_assert_eq(
        bridge_config_load_string(&cfg, "t", "[peer c]\nadmin_socket = rel\n", err, sizeof(err)),
        -1);
    bridge_config_free(&cfg);
    cr_assert_eq(
        bridge_config_load_string(&cfg, "t", "[bridge]\ndatabase = /tmp/x.db\n", err, sizeof(err)),
        0, "%s", err);
    cr_assert_eq(cfg.group_require_clock_sync, 1, "required by default");
    cr_assert_eq(cfg.group_min_lead_ms, 1000);
    bridge_config_free(&cfg);
}

Test(group_clock, check_says_why)
{
    char why[256] = "";
    int r = bridge_groups_clock_check(0, why, sizeof(why));

    /* whatever this host's state: a refusal names the reason, and with a bound of 0 ms an
     * unsynchronised or imprecise clock is refused */
    if (r < 0)
        cr_assert(strstr(why, "not synchronised") || strstr(why, "maximum error"), "%s", why);
}

Test(group_db, members_and_history)
{
    char dir[] = "/tmp/vmsgroups-XXXXXX", path[64];
    struct bridge_db db;
    json_object *m, *h;

    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/j.db", dir);
    char err[256];
    cr_assert_eq(bridge_db_open(&db, path, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(group_db_exists(&db, "grp"), 0);
    cr_assert_eq(group_db_create(&db, "grp"), 0);
    cr_assert_eq(group_db_create(&db, "grp"), 1);
    cr_assert_eq(group_db_add(&db, "grp", "self", "g1"), 0);
    cr_assert_eq(group_db_add(&db, "grp", "b", "g3"), 0);
    cr_assert_eq(group_db_add(&db, "grp", "b", "g3"), 0); /* twice: once */
    m = group_db_members(&db, "grp");
    cr_assert_eq(json_object_array_length(m), 2);
    json_object_put(m);
    cr_assert_eq(group_db_history_add(&db, "grp", "suspend", 5, "half", "{\"skew_us\":3}"), 0);
    cr_assert_eq(group_db_history_add(&db, "grp", "resume", 6, "done", "{}"), 0);
    h = group_db_history(&db, "grp", 10);
    cr_assert_eq(json_object_array_length(h), 2);
    cr_assert_str_eq(
        json_object_get_string(json_object_object_get(json_object_array_get_idx(h, 1), "outcome")),
        "half");
    json_object_put(h);
    bridge_db_close(&db);
    unlink(path);
    rmdir(dir);
}

/* ---- rpc messages over CPG (cluster/rpc.c) ---- */

Test(group_rpc, round_trip_request_and_reply)
{
    json_object *body = json_tokener_parse("{\"cmd\":\"group-prepare\",\"group\":\"grp\"}");
    char *text = cl_rpc_format(CL_RPC_REQUEST, 42, "h1", "h2", body), why[200];
    struct cl_rpc m;
    json_object *v;

    cr_assert_not_null(text);
    cr_assert_eq(strncmp(text, "{\"t\":\"rpc\"", 10), 0, "%s", text);
    cr_assert_eq(cl_rpc_parse(text, strlen(text), &m, why, sizeof(why)), 1, "%s", why);
    cr_assert_eq(m.kind, CL_RPC_REQUEST);
    cr_assert_eq(m.id, 42);
    cr_assert_str_eq(m.from, "h1");
    cr_assert_str_eq(m.to, "h2");
    cr_assert(json_object_object_get_ex(m.body, "group", &v));
    cl_rpc_clear(&m);
    free(text);
    json_object_put(body);

    body = json_tokener_parse("{\"ok\":false,\"error\":\"refused: x\"}");
    text = cl_rpc_format(CL_RPC_REPLY, 42, "h2", "h1", body);
    cr_assert_eq(cl_rpc_parse(text, strlen(text), &m, why, sizeof(why)), 1, "%s", why);
    cr_assert_eq(m.kind, CL_RPC_REPLY);
    cl_rpc_clear(&m);
    free(text);
    json_object_put(body);
}

Test(group_rpc, table_messages_are_not_rpcs)
{
    const char *hello = "{\"t\":\"hello\",\"node\":\"h1\",\"vcpus\":2,\"memory\":1,\"run\":[]}";
    struct cl_rpc m;
    char why[200];

    cr_assert_eq(cl_rpc_parse(hello, strlen(hello), &m, why, sizeof(why)), 0);
    cr_assert_eq(cl_rpc_parse("", 0, &m, why, sizeof(why)), 0);
}

Test(group_rpc, malformed_are_refused)
{
    static const char *bad[] = {
        /* a command other hosts may not ask */
        "{\"t\":\"rpc\",\"id\":1,\"from\":\"h1\",\"to\":\"h2\",\"body\":{\"cmd\":\"start\"}}",
        "{\"t\":\"rpc\",\"id\":1,\"from\":\"h1\",\"to\":\"h2\",\"body\":{}}",
        /* ids */
        "{\"t\":\"rpc\",\"id\":0,\"from\":\"h1\",\"to\":\"h2\",\"body\":{\"cmd\":\"group-abort\"}}",
        "{\"t\":\"rpc\",\"id\":-3,\"from\":\"h1\",\"to\":\"h2\",\"body\":{\"cmd\":\"group-abort\"}"
        "}",
        "{\"t\":\"rpc\",\"id\":\"1\",\"from\":\"h1\",\"to\":\"h2\",\"body\":{\"cmd\":\"group-"
        "abort\"}}",
        /* names */
        "{\"t\":\"rpc\",\"id\":1,\"from\":\"h "
        "1\",\"to\":\"h2\",\"body\":{\"cmd\":\"group-abort\"}}",
        "{\"t\":\"rpc\",\"id\":1,\"from\":\"\",\"to\":\"h2\",\"body\":{\"cmd\":\"group-abort\"}}",
        "{\"t\":\"rpc\",\"id\":1,\"from\":\"h1\",\"body\":{\"cmd\":\"group-abort\"}}",
        /* keys, kinds, shape */
        "{\"t\":\"rpc\",\"id\":1,\"from\":\"h1\",\"to\":\"h2\",\"body\":{\"cmd\":\"group-abort\"},"
        "\"x\":1}",
        "{\"t\":\"rpcz\",\"id\":1,\"from\":\"h1\",\"to\":\"h2\",\"body\":{\"ok\":true}}",
        "{\"t\":\"rpc\",\"id\":1,\"from\":\"h1\",\"to\":\"h2\",\"body\":{\"cmd\":\"group-abort\"}}"
        "x",
        "{\"t\":\"rpc\",\"id\":1,\"from\":\"h1\",\"to\":\"h2\",\"body\":[1]}",
        "{\"t\":\"rpc\",\"id\":1,\"from\":\"h1\",\"to\":\"h2\",\"body\":{\"cmd\":\"group-abort\","
        "\"a\":[[[[[[[[1]]]]]]]]}}",
        /* a reply without a boolean ok */
        "{\"t\":\"rpc-reply\",\"id\":1,\"from\":\"h1\",\"to\":\"h2\",\"body\":{\"ok\":1}}",
        "{\"t\":\"rpc-reply\",\"id\":1,\"from\":\"h1\",\"to\":\"h2\",\"body\":{}}",
    };
    struct cl_rpc m;
    char why[200];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(cl_rpc_parse(bad[i], strlen(bad[i]), &m, why, sizeof(why)), -1, "%s", bad[i]);
        cr_assert(why[0], "a reason for %s", bad[i]);
        cr_assert_null(m.body);
    }
}

Test(group_rpc, size_bound)
{
    size_t n = CL_RPC_MAX + 16;
    char *big = malloc(n + 1), why[200];
    struct cl_rpc m;

    memset(big, ' ', n);
    memcpy(big, "{\"t\":\"rpc\"", 10);
    big[n] = '\0';
    cr_assert_eq(cl_rpc_parse(big, n, &m, why, sizeof(why)), -1);
    free(big);
}
