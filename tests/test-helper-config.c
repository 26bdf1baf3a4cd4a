/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * test-helper-config.c — unit tests of helper-config.c: [apps], strict_app_ids and
 * watch_users (helper_config_app_allowed), and their parse errors.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helper-config.h"

static char dir[64];
static struct helper_config cfg; /* static: over 100 KiB */

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/vmstate-config-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

TestSuite(config, .init = setup, .fini = teardown, .timeout = 30);

/* Load @text over the defaults; 0, or -1 with the error in @err. @path gets the file name. */
static int load(const char *text, char *path, size_t pathlen, char *err, size_t errlen)
{
    FILE *f;

    snprintf(path, pathlen, "%s/helper.conf", dir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    helper_config_defaults(&cfg);
    err[0] = '\0';
    return helper_config_load(&cfg, path, 1, err, errlen);
}

static void load_ok(const char *text)
{
    char path[128], err[512];

    cr_assert_eq(load(text, path, sizeof(path), err, sizeof(err)), 0, "%s", err);
}

/* Loading @text fails with "FILE:@line: key '@key'..." containing @why. */
static void load_fails(const char *text, int line, const char *key, const char *why)
{
    char path[128], err[512], want[300];

    cr_assert_eq(load(text, path, sizeof(path), err, sizeof(err)), -1, "accepted: %s", text);
    snprintf(want, sizeof(want), "%s:%d: key '%s'", path, line, key);
    cr_assert(strstr(err, want), "want '%s' in: %s", want, err);
    cr_assert(strstr(err, why), "want '%s' in: %s", why, err);
}

/* A user with a passwd entry, not root: its uid and primary gid. Skips when there is none. */
static void some_user(uid_t *uid, gid_t *gid)
{
    struct passwd *pw;

    setpwent();
    while ((pw = getpwent()) && pw->pw_uid == 0)
        ;
    if (!pw) {
        endpwent();
        cr_skip_test("no non-root user in passwd");
    }
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    endpwent();
}

Test(config, defaults_leave_app_ids_open_and_star_to_root)
{
    const char *why = NULL;

    helper_config_defaults(&cfg);
    cr_assert(helper_config_app_allowed(&cfg, "org.example.Notes", 1000, NULL));
    cr_assert(helper_config_app_allowed(&cfg, "org.example.Notes", 0, NULL));
    cr_assert(helper_config_app_allowed(&cfg, "*", 0, NULL));
    cr_assert_not(helper_config_app_allowed(&cfg, "*", 1000, &why));
    cr_assert(strstr(why, "watch_users"), "%s", why);
}

Test(config, bound_app_id_only_for_its_uids)
{
    const char *why = NULL;

    load_ok("[helper]\nallow_users = root, 1000, 1001, 1002\n"
            "[apps]\norg.example.Notes = 1000, 1001\norg.example.Root =\n");
    cr_assert_eq(cfg.n_apps, 2);
    cr_assert(helper_config_app_allowed(&cfg, "org.example.Notes", 1000, NULL));
    cr_assert(helper_config_app_allowed(&cfg, "org.example.Notes", 1001, NULL));
    cr_assert(helper_config_app_allowed(&cfg, "org.example.Notes", 0, NULL), "root always may");
    cr_assert_not(helper_config_app_allowed(&cfg, "org.example.Notes", 1002, &why));
    cr_assert(strstr(why, "bound to other users"), "%s", why);
    /* an empty list leaves the app id to root */
    cr_assert_not(helper_config_app_allowed(&cfg, "org.example.Root", 1000, NULL));
    cr_assert(helper_config_app_allowed(&cfg, "org.example.Root", 0, NULL));
    /* exact match only, and unlisted app ids stay open */
    cr_assert(helper_config_app_allowed(&cfg, "org.example.Notes2", 1002, NULL));
    cr_assert(helper_config_app_allowed(&cfg, "org.example", 1002, NULL));
    /* "*" is not an app id of [apps]: watch_users decides */
    cr_assert_not(helper_config_app_allowed(&cfg, "*", 1000, NULL));
}

Test(config, bound_by_group_and_by_name)
{
    uid_t uid;
    gid_t gid;
    char text[300];
    struct passwd *pw;

    some_user(&uid, &gid);
    pw = getpwuid(uid);
    cr_assert_not_null(pw);
    snprintf(text, sizeof(text), "[apps]\norg.example.ByGid = @%u\norg.example.ByName = %s\n",
             (unsigned)gid, pw->pw_name);
    load_ok(text);
    cr_assert_eq(cfg.apps[0].n_gids, 1);
    cr_assert_eq(cfg.apps[0].n_uids, 0);
    cr_assert(helper_config_app_allowed(&cfg, "org.example.ByGid", uid, NULL));
    cr_assert_not(helper_config_app_allowed(&cfg, "org.example.ByGid", 4242, NULL),
                  "a uid without a passwd entry is in no group");
    cr_assert(helper_config_app_allowed(&cfg, "org.example.ByName", uid, NULL));
    cr_assert_not(helper_config_app_allowed(&cfg, "org.example.ByName", 4242, NULL));
    load_ok("[apps]\norg.example.RootGroup = @root\n");
    cr_assert_eq(cfg.apps[0].gids[0], 0);
}

Test(config, strict_app_ids_refuses_unlisted_for_non_root)
{
    const char *why = NULL;

    load_ok("[helper]\nstrict_app_ids = yes\n[apps]\norg.example.Notes = 1000\n");
    cr_assert(cfg.strict_app_ids);
    cr_assert(helper_config_app_allowed(&cfg, "org.example.Notes", 1000, NULL));
    cr_assert_not(helper_config_app_allowed(&cfg, "org.example.Other", 1000, &why));
    cr_assert(strstr(why, "strict_app_ids"), "%s", why);
    cr_assert(helper_config_app_allowed(&cfg, "org.example.Other", 0, NULL));
    load_ok("[helper]\nstrict_app_ids = no\n");
    cr_assert(helper_config_app_allowed(&cfg, "org.example.Other", 1000, NULL));
}

Test(config, watch_users_by_uid_and_group)
{
    uid_t uid;
    gid_t gid;
    char text[200];

    load_ok("[helper]\nwatch_users = 1000, 1001\n");
    cr_assert(helper_config_app_allowed(&cfg, "*", 1000, NULL));
    cr_assert(helper_config_app_allowed(&cfg, "*", 1001, NULL));
    cr_assert(helper_config_app_allowed(&cfg, "*", 0, NULL));
    cr_assert_not(helper_config_app_allowed(&cfg, "*", 1002, NULL));
    some_user(&uid, &gid);
    snprintf(text, sizeof(text), "[helper]\nwatch_users = @%u\n", (unsigned)gid);
    load_ok(text);
    cr_assert(helper_config_app_allowed(&cfg, "*", uid, NULL));
    cr_assert_not(helper_config_app_allowed(&cfg, "*", 4242, NULL));
}

Test(config, bad_apps_entries_name_file_line_and_key)
{
    char text[2048];
    size_t n;

    load_fails("[apps]\n# c\norg.example.Notes = alice-no-such-user-zz\n", 3, "org.example.Notes",
               "unknown user 'alice-no-such-user-zz'");
    load_fails("[apps]\norg.example.Notes = @no-such-group-zz\n", 2, "org.example.Notes",
               "unknown group 'no-such-group-zz'");
    load_fails("[apps]\nnot an id! = root\n", 2, "not an id!", "bad app id");
    load_fails("[apps]\n* = root\n", 2, "*", "watch_users");
    load_fails("[apps]\norg.example.A = root\norg.example.A = 1000\n", 3, "org.example.A",
               "listed twice");
    load_fails("[helper]\nwatch_users = no-such-user-zz\n", 2, "watch_users", "unknown user");
    load_fails("[helper]\nstrict_app_ids = maybe\n", 2, "strict_app_ids", "bad value");
    /* at most HELPER_APP_IDS_MAX users, and as many groups, per app id */
    n = (size_t)snprintf(text, sizeof(text), "[apps]\norg.example.Many = ");
    for (int i = 0; i <= HELPER_APP_IDS_MAX; i++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "%d,", 1000 + i);
    snprintf(text + n, sizeof(text) - n, "\n");
    load_fails(text, 2, "org.example.Many", "more than 16 users");
    n = (size_t)snprintf(text, sizeof(text), "[apps]\norg.example.Many = ");
    for (int i = 0; i <= HELPER_APP_IDS_MAX; i++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "@%d,", 1000 + i);
    snprintf(text + n, sizeof(text) - n, "\n");
    load_fails(text, 2, "org.example.Many", "more than 16 groups");
}

Test(config, at_most_apps_max_app_ids)
{
    static char text[HELPER_APPS_MAX * 40 + 100];
    size_t n = (size_t)snprintf(text, sizeof(text), "[apps]\n");

    for (int i = 0; i < HELPER_APPS_MAX; i++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "org.example.App%d = %d\n", i, 1000 + i);
    load_ok(text);
    cr_assert_eq(cfg.n_apps, HELPER_APPS_MAX);
    cr_assert(helper_config_app_allowed(&cfg, "org.example.App255", 1255, NULL));
    cr_assert_not(helper_config_app_allowed(&cfg, "org.example.App255", 1254, NULL));
    snprintf(text + n, sizeof(text) - n, "org.example.OneTooMany = 1\n");
    load_fails(text, HELPER_APPS_MAX + 2, "org.example.OneTooMany", "more than 256 app ids");
}
