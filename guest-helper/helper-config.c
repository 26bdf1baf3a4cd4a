/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * helper-config.c — see helper-config.h.
 */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <ini.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "helper-config.h"
#include "vms-proto.h"

_Static_assert(HELPER_APP_ID_LEN == VMS_STR_MAX, "an app id is a protocol string");

void helper_config_defaults(struct helper_config *c)
{
    memset(c, 0, sizeof(*c));
    c->allow_uids[0] = 0;
    c->n_allow_uids = 1;
    c->grace_period_ms = 10000;
    c->queue_max = 32;
    c->queue_when_disconnected = 1;
    c->queue_timeout_ms = 60000;
    c->recheck_interval_ms = 1000;
    c->hello_retry_ms = 5000;
    c->max_listeners = 256;
    c->max_listeners_per_uid = 32;
    c->max_held = 256;
    c->max_held_bytes = 1024 * 1024;
    c->log_level = LOG_INFO;
    c->clock_sync = HELPER_CLOCK_ON;
    c->clock_min_step_ms = 10;
    snprintf(c->hooks_dir, sizeof(c->hooks_dir), "%s", SYSCONFDIR "/vmstate");
    c->hook_timeout_ms = 10000;
    c->prepare_window_ms = 500;
}

struct parse_state {
    struct helper_config *c;
    char why[256]; /* first error; ini_parse returns its line */
};

static int parse_uint(const char *v, unsigned long max, unsigned *out)
{
    char *end;
    unsigned long n;

    errno = 0;
    n = strtoul(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-' || n > max)
        return -1;
    *out = (unsigned)n;
    return 0;
}

static int parse_bool(const char *v, int *out)
{
    if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1"))
        *out = 1;
    else if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0"))
        *out = 0;
    else
        return -1;
    return 0;
}

/* Where parse_ids stores what it reads: up to @max uids and up to @max gids. */
struct id_lists {
    uid_t *uids;
    size_t *n_uids;
    gid_t *gids;
    size_t *n_gids;
    size_t max;
};

enum { IDS_USERS, IDS_GROUPS, IDS_MIXED /* "@name" or "@gid" is a group, others users */ };

/* Comma/space separated list; each item a number or a name looked up in passwd/group. */
static int parse_ids(const char *v, int kind, const struct id_lists *l, char *why, size_t whylen)
{
    char buf[1024], *save = NULL, *tok;

    if (strlen(v) >= sizeof(buf)) {
        snprintf(why, whylen, "list too long");
        return -1;
    }
    snprintf(buf, sizeof(buf), "%s", v);
    for (tok = strtok_r(buf, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
        unsigned n;
        int group = kind == IDS_GROUPS || (kind == IDS_MIXED && tok[0] == '@');
        size_t *count = group ? l->n_gids : l->n_uids;

        if (kind == IDS_MIXED && tok[0] == '@')
            tok++;
        if (*count >= l->max) {
            snprintf(why, whylen, "more than %zu %s", l->max, group ? "groups" : "users");
            return -1;
        }
        if (parse_uint(tok, 0xfffffffeul, &n) < 0) {
            if (group) {
                struct group *g = getgrnam(tok);
                if (!g) {
                    snprintf(why, whylen, "unknown group '%.64s'", tok);
                    return -1;
                }
                n = g->gr_gid;
            } else {
                struct passwd *p = getpwnam(tok);
                if (!p) {
                    snprintf(why, whylen, "unknown user '%.64s'", tok);
                    return -1;
                }
                n = p->pw_uid;
            }
        }
        if (group)
            l->gids[(*count)++] = n;
        else
            l->uids[(*count)++] = n;
    }
    return 0;
}

/* A key of [apps]: @key is an app id, @value the users and @groups that may use it. */
static int on_app(struct parse_state *ps, const char *key, const char *value)
{
    struct helper_config *c = ps->c;
    struct helper_app *a;
    struct id_lists l;
    char why[200] = "";

    if (!vms_valid_id(key)) {
        snprintf(ps->why, sizeof(ps->why),
                 "key '%.64s': bad app id in [apps] (1-255 of [A-Za-z0-9._:@-]%s)", key,
                 strcmp(key, "*") ? "" : "; '*' is watch_users in [helper]");
        return 0;
    }
    for (size_t i = 0; i < c->n_apps; i++)
        if (!strcmp(c->apps[i].app_id, key)) {
            snprintf(ps->why, sizeof(ps->why), "key '%.64s': app id listed twice in [apps]", key);
            return 0;
        }
    if (c->n_apps >= HELPER_APPS_MAX) {
        snprintf(ps->why, sizeof(ps->why), "key '%.64s': more than %d app ids in [apps]", key,
                 HELPER_APPS_MAX);
        return 0;
    }
    a = &c->apps[c->n_apps];
    memset(a, 0, sizeof(*a));
    snprintf(a->app_id, sizeof(a->app_id), "%s", key);
    l = (struct id_lists){a->uids, &a->n_uids, a->gids, &a->n_gids, HELPER_APP_IDS_MAX};
    if (parse_ids(value, IDS_MIXED, &l, why, sizeof(why)) < 0) {
        snprintf(ps->why, sizeof(ps->why), "key '%.64s': bad value '%.40s': %s", key, value, why);
        return 0;
    }
    c->n_apps++;
    return 1;
}

static int set_port(char *dst, const char *v, char *why, size_t whylen)
{
    if (strlen(v) >= PATH_MAX) {
        snprintf(why, whylen, "path too long");
        return -1;
    }
    if (!strcmp(v, "udev"))
        v = "";
    snprintf(dst, PATH_MAX, "%s", v);
    return 0;
}

static int on_key(void *user, const char *section, const char *key, const char *value)
{
    struct parse_state *ps = user;
    struct helper_config *c = ps->c;
    char why[200] = "";
    int rc = 0;

    if (ps->why[0])
        return 1; /* keep the first error only */
    if (!strcmp(section, "apps"))
        return on_app(ps, key, value);
    if (strcmp(section, "helper") != 0) {
        snprintf(ps->why, sizeof(ps->why), "key '%s': unknown section [%s]", key, section);
        return 0;
    }
    if (!strcmp(key, "allow_users") || !strcmp(key, "allow_groups")) {
        struct id_lists l = {c->allow_uids, &c->n_allow_uids, c->allow_gids, &c->n_allow_gids,
                             HELPER_ALLOW_MAX};
        rc = parse_ids(value, !strcmp(key, "allow_users") ? IDS_USERS : IDS_GROUPS, &l, why,
                       sizeof(why));
    } else if (!strcmp(key, "watch_users")) {
        struct id_lists l = {c->watch_uids, &c->n_watch_uids, c->watch_gids, &c->n_watch_gids,
                             HELPER_ALLOW_MAX};
        rc = parse_ids(value, IDS_MIXED, &l, why, sizeof(why));
    } else if (!strcmp(key, "strict_app_ids"))
        rc = parse_bool(value, &c->strict_app_ids);
    else if (!strcmp(key, "grace_period_ms"))
        rc = parse_uint(value, 3600000, &c->grace_period_ms);
    else if (!strcmp(key, "queue_max"))
        rc = parse_uint(value, 4096, &c->queue_max);
    else if (!strcmp(key, "queue_when_disconnected"))
        rc = parse_bool(value, &c->queue_when_disconnected);
    else if (!strcmp(key, "queue_timeout_ms"))
        rc = parse_uint(value, 86400000, &c->queue_timeout_ms);
    else if (!strcmp(key, "recheck_interval_ms"))
        rc = parse_uint(value, 600000, &c->recheck_interval_ms);
    else if (!strcmp(key, "hello_retry_ms"))
        rc = parse_uint(value, 600000, &c->hello_retry_ms);
    else if (!strcmp(key, "max_listeners"))
        rc = parse_uint(value, 65536, &c->max_listeners);
    else if (!strcmp(key, "max_listeners_per_uid"))
        rc = parse_uint(value, 65536, &c->max_listeners_per_uid);
    else if (!strcmp(key, "max_held"))
        rc = parse_uint(value, 65536, &c->max_held);
    else if (!strcmp(key, "max_held_bytes")) {
        unsigned n;
        rc = parse_uint(value, 256u * 1024 * 1024, &n);
        if (rc == 0)
            c->max_held_bytes = n;
    } else if (!strcmp(key, "request_port"))
        rc = set_port(c->request_port, value, why, sizeof(why));
    else if (!strcmp(key, "event_port"))
        rc = set_port(c->event_port, value, why, sizeof(why));
    else if (!strcmp(key, "clock_sync")) {
        if (!strcmp(value, "dry-run"))
            c->clock_sync = HELPER_CLOCK_DRY_RUN;
        else if (parse_bool(value, &c->clock_sync) < 0) {
            rc = -1;
            snprintf(why, sizeof(why), "expected yes|no|dry-run");
        }
    } else if (!strcmp(key, "clock_min_step_ms"))
        rc = parse_uint(value, 3600000, &c->clock_min_step_ms);
    else if (!strcmp(key, "hooks_dir")) {
        if (value[0] != '/' || strlen(value) >= sizeof(c->hooks_dir)) {
            rc = -1;
            snprintf(why, sizeof(why), "expected an absolute path");
        } else
            snprintf(c->hooks_dir, sizeof(c->hooks_dir), "%s", value);
    } else if (!strcmp(key, "hook_timeout_ms"))
        rc = parse_uint(value, 3600000, &c->hook_timeout_ms);
    else if (!strcmp(key, "prepare_window_ms"))
        rc = parse_uint(value, 600000, &c->prepare_window_ms);
    else if (!strcmp(key, "log_level")) {
        static const char *const names[] = {"error", "warning", "notice", "info", "debug"};
        rc = -1;
        for (unsigned i = 0; i < 5; i++)
            if (!strcmp(value, names[i])) {
                c->log_level = LOG_ERR + (int)i;
                rc = 0;
            }
        if (rc)
            snprintf(why, sizeof(why), "expected error|warning|notice|info|debug");
    } else {
        snprintf(ps->why, sizeof(ps->why), "key '%s': unknown key", key);
        return 0;
    }
    if (rc == 0 && !strcmp(key, "recheck_interval_ms") && c->recheck_interval_ms < 10) {
        snprintf(why, sizeof(why), "must be at least 10");
        rc = -1;
    }
    if (rc < 0) {
        snprintf(ps->why, sizeof(ps->why), "key '%s': bad value '%.40s'%s%s", key, value,
                 why[0] ? ": " : "", why);
        return 0;
    }
    return 1;
}

/* An allow-list in the file replaces the default (root only) instead of adding to it. */
static void load_begin(struct helper_config *c)
{
    c->n_allow_uids = 0;
    c->n_allow_gids = 0;
    c->n_watch_uids = 0;
    c->n_watch_gids = 0;
    c->n_apps = 0;
}

/* After ini_parse*() returned @line (0, -1 cannot open, -2 no memory, else the bad line). */
static int load_finish(struct helper_config *c, const struct parse_state *ps, const char *name,
                       int line, char *err, size_t errlen)
{
    if (line == -1) {
        snprintf(err, errlen, "%s: cannot open: %s", name, strerror(errno));
        return -1;
    }
    if (line == -2) {
        snprintf(err, errlen, "%s: out of memory", name);
        return -1;
    }
    if (line != 0) {
        snprintf(err, errlen, "%s:%d: %s", name, line, ps->why[0] ? ps->why : "syntax error");
        return -1;
    }
    if (c->n_allow_uids == 0 && c->n_allow_gids == 0) {
        c->allow_uids[0] = 0; /* root is always allowed when nothing is said */
        c->n_allow_uids = 1;
    }
    snprintf(c->path, sizeof(c->path), "%s", name);
    return 0;
}

int helper_config_load(struct helper_config *c, const char *path, int must_exist, char *err,
                       size_t errlen)
{
    struct parse_state ps = {.c = c};

    if (access(path, F_OK) < 0 && errno == ENOENT && !must_exist)
        return 0;
    load_begin(c);
    return load_finish(c, &ps, path, ini_parse(path, on_key, &ps), err, errlen);
}

int helper_config_load_string(struct helper_config *c, const char *name, const char *text,
                              char *err, size_t errlen)
{
    struct parse_state ps = {.c = c};

    load_begin(c);
    return load_finish(c, &ps, name, ini_parse_string(text, on_key, &ps), err, errlen);
}

/* 1 when @uid is one of @uids or a member of one of @gids. */
static int uid_in(uid_t uid, const uid_t *uids, size_t n_uids, const gid_t *gids, size_t n_gids)
{
    for (size_t i = 0; i < n_uids; i++)
        if (uids[i] == uid)
            return 1;
    if (n_gids) {
        struct passwd *pw = getpwuid(uid);
        gid_t groups[64];
        int n = 64;

        if (!pw)
            return 0;
        if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &n) < 0)
            n = 64; /* more groups than we look at: check the first 64 */
        for (int i = 0; i < n; i++)
            for (size_t j = 0; j < n_gids; j++)
                if (groups[i] == gids[j])
                    return 1;
    }
    return 0;
}

int helper_config_uid_allowed(const struct helper_config *c, uid_t uid)
{
    return uid_in(uid, c->allow_uids, c->n_allow_uids, c->allow_gids, c->n_allow_gids);
}

int helper_config_app_allowed(const struct helper_config *c, const char *app_id, uid_t uid,
                              const char **why)
{
    const char *dummy;

    if (!why)
        why = &dummy;
    *why = "";
    if (uid == 0)
        return 1;
    if (!strcmp(app_id, "*")) {
        if (uid_in(uid, c->watch_uids, c->n_watch_uids, c->watch_gids, c->n_watch_gids))
            return 1;
        *why = "watching every app needs root or watch_users";
        return 0;
    }
    for (size_t i = 0; i < c->n_apps; i++) {
        const struct helper_app *a = &c->apps[i];
        if (strcmp(a->app_id, app_id) != 0)
            continue;
        if (uid_in(uid, a->uids, a->n_uids, a->gids, a->n_gids))
            return 1;
        *why = "the app id is bound to other users in [apps]";
        return 0;
    }
    if (!c->strict_app_ids)
        return 1;
    *why = "the app id is not listed in [apps] and strict_app_ids is on";
    return 0;
}
