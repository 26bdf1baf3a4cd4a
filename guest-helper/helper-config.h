/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * helper-config.h — vmstate-helperd's configuration (INI, read with inih).
 *
 * Default file: SYSCONFDIR/vmstate/helper.conf (a missing default file means
 * built-in defaults; a missing file named with --config is an error). Every
 * key is documented in guest-helper/helper.conf.example. A bad value is an
 * error naming the file, the line and the key.
 */
#ifndef HELPER_CONFIG_H
#define HELPER_CONFIG_H

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

#define HELPER_CONFIG_DEFAULT SYSCONFDIR "/vmstate/helper.conf"
#define HELPER_ALLOW_MAX      64
#define HELPER_APPS_MAX       256 /* entries of [apps] */
#define HELPER_APP_IDS_MAX    16  /* users, and groups, per [apps] entry */
#define HELPER_APP_ID_LEN     255 /* an app id is 1..255 of [A-Za-z0-9._:@-] */

/* One [apps] entry: @app_id may be used only by these uids and members of these gids. */
struct helper_app {
    char app_id[HELPER_APP_ID_LEN + 1];
    uid_t uids[HELPER_APP_IDS_MAX];
    size_t n_uids;
    gid_t gids[HELPER_APP_IDS_MAX];
    size_t n_gids;
};

struct helper_config {
    char path[PATH_MAX];                /* file that was read ("" for built-in defaults) */
    uid_t allow_uids[HELPER_ALLOW_MAX]; /* callers allowed to use the helper */
    size_t n_allow_uids;
    gid_t allow_gids[HELPER_ALLOW_MAX]; /* members of these groups are allowed too */
    size_t n_allow_gids;
    uid_t watch_uids[HELPER_ALLOW_MAX]; /* may register "*" (root always may) */
    size_t n_watch_uids;
    gid_t watch_gids[HELPER_ALLOW_MAX];
    size_t n_watch_gids;
    struct helper_app apps[HELPER_APPS_MAX]; /* [apps]: app ids bound to users */
    size_t n_apps;
    int strict_app_ids;             /* 1: app ids not in [apps] are root's only */
    unsigned grace_period_ms;       /* hold events for an app id with no listener */
    unsigned queue_max;             /* requests kept while waiting for the bridge */
    int queue_when_disconnected;    /* 0: refuse at once when the bridge is unreachable */
    unsigned queue_timeout_ms;      /* a queued request fails after this long unsent */
    unsigned recheck_interval_ms;   /* look at ports again when down or hung up */
    unsigned hello_retry_ms;        /* resend Hello while no Welcome came */
    unsigned max_listeners;         /* registrations of all non-root uids together */
    unsigned max_listeners_per_uid; /* one uid's share (root has its own, outside the pool) */
    unsigned max_held;              /* events held for late listeners */
    size_t max_held_bytes;          /* and their memory */
    char request_port[PATH_MAX];    /* "" = find by name with libudev */
    char event_port[PATH_MAX];      /* or a device/FIFO path, "unix:/path", "fd:N" */
    int log_level;                  /* LOG_ERR .. LOG_DEBUG */
    /* issue 8: clock and hooks (helper-hooks.h) */
    int clock_sync;             /* HELPER_CLOCK_* */
    unsigned clock_min_step_ms; /* smaller corrections are not applied */
    char hooks_dir[PATH_MAX];   /* holds pre-save.d/ and post-restore.d/ */
    unsigned hook_timeout_ms;   /* each hook is killed after this long */
    unsigned prepare_window_ms; /* listeners may Inhibit at least this long */
};

enum { HELPER_CLOCK_OFF = 0, HELPER_CLOCK_ON = 1, HELPER_CLOCK_DRY_RUN = 2 };

/* Fill @c with built-in defaults (allow uid 0 only). */
void helper_config_defaults(struct helper_config *c);

/*
 * Read @path over the current values of @c. When @path does not exist and
 * @must_exist is 0, keep @c and return 0. On error return -1 with @err set to
 * "FILE:LINE: key 'K': why".
 */
int helper_config_load(struct helper_config *c, const char *path, int must_exist, char *err,
                       size_t errlen);

/* Same as helper_config_load() over @text (must exist); @name is used in messages and path. */
int helper_config_load_string(struct helper_config *c, const char *name, const char *text,
                              char *err, size_t errlen);

/* 1 when @uid (or one of its groups) is allowed by @c. */
int helper_config_uid_allowed(const struct helper_config *c, uid_t uid);

/*
 * 1 when @uid may use @app_id (register or unregister a listener for it, or
 * name it in a request); 0 otherwise, with *@why (when @why is not NULL) set
 * to a static phrase saying why, for an error message that names the app id.
 * Does not check the allow-list (helper_config_uid_allowed does) nor the
 * app id's syntax. Rules:
 *   - uid 0 may use every app id, "*" included;
 *   - "*" (watch every app, and so read every app's app data): uids and
 *     members of groups in watch_users;
 *   - an app id listed in [apps]: its listed uids and members of its groups;
 *   - any other app id: every uid, unless strict_app_ids is on.
 */
int helper_config_app_allowed(const struct helper_config *c, const char *app_id, uid_t uid,
                              const char **why);

#endif
