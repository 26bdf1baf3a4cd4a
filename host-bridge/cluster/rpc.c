/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * rpc.c — see rpc.h. Strict: a message from another host is checked key by key before
 * anything acts on it; a malformed one is dropped with a reason.
 */
#include "config.h"
#include "rpc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vms-proto.h"

#define RPC_PREFIX "{\"t\":\"rpc"

static const char *const allowed_cmds[] = {"group-prepare", "group-commit", "group-abort"};

int cl_rpc_cmd_allowed(const char *cmd)
{
    for (size_t i = 0; i < sizeof(allowed_cmds) / sizeof(allowed_cmds[0]); i++)
        if (!strcmp(cmd, allowed_cmds[i]))
            return 1;
    return 0;
}

void cl_rpc_clear(struct cl_rpc *m)
{
    json_object_put(m->body);
    memset(m, 0, sizeof(*m));
}

/* A node name field: 1..CL_NAME_MAX-1 of the id alphabet, into @out. */
static int name_field(json_object *o, const char *key, char *out)
{
    json_object *v;
    const char *s;

    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return -1;
    s = json_object_get_string(v);
    if ((size_t)json_object_get_string_len(v) != strlen(s) || strlen(s) >= CL_NAME_MAX ||
        !vms_valid_id(s))
        return -1;
    memcpy(out, s, strlen(s) + 1);
    return 0;
}

/* The checks after JSON parsing; 0, or -1 with @why. */
static int check_rpc(json_object *o, struct cl_rpc *out, char *why, size_t whylen)
{
    json_object *v;
    const char *t;
    int64_t id;
    size_t n_keys = 0;

    json_object_object_foreach(o, key, val)
    {
        (void)val;
        n_keys++;
        if (strcmp(key, "t") && strcmp(key, "id") && strcmp(key, "from") && strcmp(key, "to") &&
            strcmp(key, "body")) {
            snprintf(why, whylen, "rpc: unknown key");
            return -1;
        }
    }
    if (!json_object_object_get_ex(o, "t", &v) || !json_object_is_type(v, json_type_string)) {
        snprintf(why, whylen, "rpc: no kind");
        return -1;
    }
    t = json_object_get_string(v);
    if (!strcmp(t, "rpc"))
        out->kind = CL_RPC_REQUEST;
    else if (!strcmp(t, "rpc-reply"))
        out->kind = CL_RPC_REPLY;
    else {
        snprintf(why, whylen, "rpc: unknown kind");
        return -1;
    }
    if (n_keys != 5 || !json_object_object_get_ex(o, "id", &v) ||
        !json_object_is_type(v, json_type_int) || (id = json_object_get_int64(v)) <= 0 ||
        id == INT64_MAX) {
        snprintf(why, whylen, "rpc: \"id\" must be an integer in 1..2^63-2");
        return -1;
    }
    out->id = (uint64_t)id;
    if (name_field(o, "from", out->from) < 0 || name_field(o, "to", out->to) < 0) {
        snprintf(why, whylen, "rpc: \"from\" and \"to\" must be node names");
        return -1;
    }
    if (!json_object_object_get_ex(o, "body", &v) || !json_object_is_type(v, json_type_object)) {
        snprintf(why, whylen, "rpc: \"body\" must be an object");
        return -1;
    }
    if (out->kind == CL_RPC_REQUEST) {
        json_object *c;
        if (!json_object_object_get_ex(v, "cmd", &c) || !json_object_is_type(c, json_type_string) ||
            !cl_rpc_cmd_allowed(json_object_get_string(c))) {
            snprintf(why, whylen,
                     "rpc: a request's \"cmd\" must be group-prepare, group-commit or "
                     "group-abort");
            return -1;
        }
    } else {
        json_object *ok;
        if (!json_object_object_get_ex(v, "ok", &ok) ||
            !json_object_is_type(ok, json_type_boolean)) {
            snprintf(why, whylen, "rpc: a reply needs a boolean \"ok\"");
            return -1;
        }
    }
    out->body = json_object_get(v);
    return 0;
}

int cl_rpc_parse(const char *msg, size_t len, struct cl_rpc *out, char *why, size_t whylen)
{
    struct json_tokener *tok;
    json_object *o = NULL;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    why[0] = '\0';
    if (len < sizeof(RPC_PREFIX) - 1 || memcmp(msg, RPC_PREFIX, sizeof(RPC_PREFIX) - 1))
        return 0;
    if (len > CL_RPC_MAX || memchr(msg, '\0', len)) {
        snprintf(why, whylen, "rpc: %zu bytes, or a NUL inside", len);
        return -1;
    }
    tok = json_tokener_new_ex(CL_RPC_DEPTH);
    if (!tok) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    o = json_tokener_parse_ex(tok, msg, (int)len);
    /* one object, nothing after it */
    if (!o || !json_object_is_type(o, json_type_object) || json_tokener_get_parse_end(tok) != len) {
        snprintf(why, whylen, "rpc: not one JSON object of at most %d levels", CL_RPC_DEPTH);
        goto out;
    }
    if (check_rpc(o, out, why, whylen) < 0) {
        cl_rpc_clear(out);
        goto out;
    }
    rc = 1;
out:
    json_tokener_free(tok);
    json_object_put(o);
    return rc;
}

char *cl_rpc_format(enum cl_rpc_kind kind, uint64_t id, const char *from, const char *to,
                    json_object *body)
{
    json_object *o = json_object_new_object();
    char *s = NULL;
    const char *text;

    if (!o)
        return NULL;
    /* "t" first: how the receiver tells an rpc from a table message (rpc.h) */
    json_object_object_add(o, "t",
                           json_object_new_string(kind == CL_RPC_REQUEST ? "rpc" : "rpc-reply"));
    json_object_object_add(o, "id", json_object_new_int64((int64_t)id));
    json_object_object_add(o, "from", json_object_new_string(from));
    json_object_object_add(o, "to", json_object_new_string(to));
    json_object_object_add(o, "body", json_object_get(body));
    text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    if (text && strlen(text) <= CL_RPC_MAX)
        s = strdup(text);
    json_object_put(o);
    return s;
}
