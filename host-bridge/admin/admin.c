/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vmstate-admin — manage the bridge's principals and rights, and inspect its
 * journal. Secrets are read from stdin or a file, never from the command line.
 *
 * usage: see usage() and vmstate-admin(8).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "admin.h"
#include "auth.h"
#include "bridge-config.h"
#include "ctl.h"
#include "db.h"
#include "rights.h"
#include "vms-log.h"

#define DEFAULT_CONFIG SYSCONFDIR "/vmstate/vmstate-bridged.conf"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: vmstate-admin [OPTIONS] COMMAND [ARG...]\n"
            "Manage vmstate-bridged's principals and rights; read its journal.\n\n"
            "Commands:\n"
            "  principal-add NAME [--secret-file FILE] [--cost default|interactive|test]\n"
            "                 the secret is read from FILE, or stdin (first line; asked for\n"
            "                 twice, without echo, on a terminal); never from the command line\n"
            "  principal-remove NAME\n"
            "  grant [--force] PRINCIPAL VM OP... [--uid UID]\n"
            "                 OP: save restore list delete hostinfo set-memory suspend all, and\n"
            "                 the rights \"all\" does not include: restore-any delete-any\n"
            "                 (another app's states), restore-foreign (snapshots vmstate did not\n"
            "                 make). VM must be a [vm NAME] of the configuration (--force:\n"
            "                 grant it anyway). --uid: only for requests made by that guest uid\n"
            "  revoke PRINCIPAL VM OP...    (every uid's grant of OP)\n"
            "  principals | rights | states [VM] | requests [VM] | events [VM]\n"
            "  libvirt-setup DOMAIN [--uri URI] [--dir DIR] [--apply]\n"
            "                 the domain XML with the bridge's two port channels (printed,\n"
            "                 or defined with --apply; effective at the next start)\n"
            "Asked of the running bridge on its admin socket (admin_socket in CONFIG, or -S;\n"
            "-j prints JSON, -t SECONDS bounds the wait):\n"
            "  status [VM] | tiers\n"
            "  start VM | stop VM | suspend VM | resume VM   (managed VMs)\n"
            "  pin VM | unpin VM | demote VM | promote VM     (the VM's checkpoint)\n"
            "  schedule VM resume AT|+SECONDS|none           (promotes ahead of time)\n"
            "  group create G | group add G VM [BRIDGE] | group show G\n"
            "  group suspend G AT | group resume G AT [preserve|host]\n"
            "  group clone G NEW [--at AT] [--policy preserve|host]\n"
            "                 VMs on this bridge and its [peer]s stopped or resumed together\n"
            "                 at AT (+SECONDS or unix seconds, fractions allowed)\n\n"
            "Options:\n"
            "  -c, --config FILE    the bridge's configuration (default %s)\n"
            "  -D, --database FILE  the journal (default: [bridge] database of the config)\n"
            "  -S, --socket FILE    the bridge's admin socket (default: admin_socket of CONFIG)\n"
            "  -j, --json           admin socket answers as JSON\n"
            "  -t, --timeout SEC    wait at most SEC seconds for the bridge (default 600)\n"
            "  -h, --help           this text\n"
            "  -V, --version        print the version\n\n"
            "Costs (Argon2id): default = 2 passes, 16 MiB; interactive = libsodium's\n"
            "INTERACTIVE (2 passes, 64 MiB); test = the minimum (1 pass, 8 KiB; tests only).\n"
            "Exit status: 0 ok; 1 failed (message on stderr); 2 usage error; 3 the bridge is\n"
            "not running (no admin socket to talk to).\n",
            DEFAULT_CONFIG);
}

/* One line from @f into @out (newline stripped); 0, or -1 at end of file. */
static int read_line(FILE *f, char *out, size_t len)
{
    size_t n;

    if (!fgets(out, (int)len, f))
        return -1;
    n = strlen(out);
    while (n && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        out[--n] = '\0';
    return 0;
}

/* Ask for the secret on the terminal, twice, without echo. */
static int prompt_secret(const char *name, char *out, size_t len)
{
    struct termios old, quiet;
    char again[VMS_STR_MAX + 2];
    int rc = -1;

    if (tcgetattr(0, &old) < 0)
        return -1;
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    quiet.c_lflag |= ECHONL;
    if (tcsetattr(0, TCSAFLUSH, &quiet) < 0)
        return -1;
    fprintf(stderr, "Secret for principal %s: ", name);
    if (read_line(stdin, out, len) == 0) {
        fprintf(stderr, "Again: ");
        if (read_line(stdin, again, sizeof(again)) == 0) {
            rc = strcmp(out, again) ? -2 : 0;
        }
    }
    tcsetattr(0, TCSAFLUSH, &old);
    sodium_memzero(again, sizeof(again));
    if (rc == -2)
        fprintf(stderr, "vmstate-admin: the two secrets differ\n");
    return rc == 0 ? 0 : -1;
}

/* The secret from @f (--secret-file), or stdin: asked for on a terminal. */
static int read_secret(const char *name, FILE *f, char *out, size_t len)
{
    int rc;

    if (!f && isatty(0))
        rc = prompt_secret(name, out, len);
    else
        rc = read_line(f ? f : stdin, out, len);
    if (rc < 0) {
        if (!out[0])
            fprintf(stderr, "vmstate-admin: no secret given\n");
        return -1;
    }
    if (!out[0] || strlen(out) > VMS_STR_MAX) {
        fprintf(stderr, "vmstate-admin: the secret must be 1..255 bytes\n");
        return -1;
    }
    return 0;
}

static int valid_op(const char *op)
{
    return !strcmp(op, "all") || vms_op_from_name(op) != VMS_OP_UNKNOWN ||
           bridge_right_is_extra(op);
}

static int print_query(struct bridge_db *db, const char *sql, const char *vm)
{
    sqlite3_stmt *st;
    int rc, cols;

    if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "vmstate-admin: %s\n", sqlite3_errmsg(db->h));
        return 1;
    }
    if (vm)
        sqlite3_bind_text(st, 1, vm, -1, SQLITE_TRANSIENT);
    cols = sqlite3_column_count(st);
    for (int i = 0; i < cols; i++)
        printf("%s%s", i ? "\t" : "", sqlite3_column_name(st, i));
    printf("\n");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int i = 0; i < cols; i++) {
            const unsigned char *t = sqlite3_column_text(st, i);
            printf("%s%s", i ? "\t" : "", t ? (const char *)t : "");
        }
        printf("\n");
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : 1;
}

/* Run as the journal's owner when root: the files SQLite creates beside it (-wal, -shm, the
 * journal itself) must stay the bridge's (user vmstate), or the bridge cannot open them. */
static int become_journal_owner(const char *db_path)
{
    char dir[BRIDGE_PATH_MAX];
    struct stat st;

    if (geteuid() != 0)
        return 0;
    snprintf(dir, sizeof(dir), "%s", db_path);
    if (stat(dirname(dir), &st) < 0 || st.st_uid == 0)
        return 0;
    if (setgroups(0, NULL) < 0 || setgid(st.st_gid) < 0 || setuid(st.st_uid) < 0) {
        fprintf(stderr, "vmstate-admin: cannot become the journal's owner (uid %u): %s\n",
                (unsigned)st.st_uid, strerror(errno));
        return -1;
    }
    return 0;
}

/* The commands, with how many arguments each takes (checked before anything is opened). */
static const struct command {
    const char *name;
    int min_args, max_args; /* -1: any number */
} commands[] = {
    {"principal-add", 1, 5}, {"principal-remove", 1, 1}, {"grant", 3, -1},
    {"revoke", 3, -1},       {"principals", 0, 0},       {"rights", 0, 0},
    {"states", 0, 1},        {"requests", 0, 1},         {"events", 0, 1},
};

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(*commands); i++)
        if (!strcmp(commands[i].name, name))
            return &commands[i];
    return NULL;
}

/* grant: @vm must be a VM of the configuration, so a typo does not grant into the void. */
static int check_vm(const struct bridge_config *cfg, const char *config_path, const char *vm)
{
    if (!cfg) {
        fprintf(stderr,
                "vmstate-admin: cannot check that VM '%s' exists: no configuration (%s). Use "
                "-c CONFIG, or grant --force for a VM the bridge does not serve yet.\n",
                vm, config_path);
        return -1;
    }
    if (bridge_config_vm(cfg, vm))
        return 0;
    fprintf(stderr, "vmstate-admin: no VM '%s' in %s (its VMs:", vm, config_path);
    for (size_t i = 0; i < cfg->n_vms; i++)
        fprintf(stderr, " %s", cfg->vms[i].name);
    fprintf(stderr, "%s). Add a [vm %s] section first, or grant --force.\n",
            cfg->n_vms ? "" : " none", vm);
    return -1;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},  {"database", required_argument, NULL, 'D'},
        {"socket", required_argument, NULL, 'S'},  {"json", no_argument, NULL, 'j'},
        {"timeout", required_argument, NULL, 't'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},       {NULL, 0, NULL, 0}};
    const char *config_path = NULL, *db_path = NULL, *cmd;
    const struct command *command;
    struct bridge_config cfg;
    struct bridge_db db = {0};
    char err[1024], dbfile[BRIDGE_PATH_MAX];
    int opt, rc = 1, have_cfg = 0, force = 0, n_args, json = 0;
    long long uid = -1; /* grant --uid */
    FILE *secret_stream = NULL;
    const char *ctl_socket = NULL;
    double ctl_timeout = 600;

    memset(&cfg, 0, sizeof(cfg));
    vms_log_init("vmstate-admin", LOG_WARNING);
    while ((opt = getopt_long(argc, argv, "+c:D:S:jt:hV", opts, NULL)) != -1) {
        char *end;
        switch (opt) {
        case 'S':
            ctl_socket = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 't':
            errno = 0;
            ctl_timeout = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(ctl_timeout > 0)) {
                fprintf(stderr,
                        "vmstate-admin: --timeout needs a positive number of seconds, "
                        "not '%s'\n",
                        optarg);
                return 2;
            }
            break;
        case 'c':
            config_path = optarg;
            break;
        case 'D':
            db_path = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("vmstate-admin %s\n", PACKAGE_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    cmd = argv[optind++];
    if (!strcmp(cmd, "libvirt-setup")) /* libvirt's business: no database */
        return admin_libvirt_setup(argc - optind + 1, argv + optind - 1);
    if (bridge_admin_is_ctl_command(cmd)) {
        /* lifecycle and status: the running bridge answers on its admin socket */
        if (!ctl_socket) {
            if (bridge_config_load(&cfg, config_path ? config_path : DEFAULT_CONFIG, err,
                                   sizeof(err)) < 0) {
                fprintf(stderr, "vmstate-admin: %s (or give the admin socket with -S)\n", err);
                goto out;
            }
            if (!cfg.admin_socket[0]) {
                fprintf(stderr, "vmstate-admin: %s has no admin_socket in [bridge]\n", cfg.path);
                goto out;
            }
            ctl_socket = cfg.admin_socket;
        }
        rc =
            bridge_admin_ctl_main(ctl_socket, cmd, argc - optind, argv + optind, json, ctl_timeout);
        goto out;
    }
    command = find_command(cmd);
    if (!command) {
        fprintf(stderr, "vmstate-admin: unknown command '%s' (see --help)\n", cmd);
        return 2;
    }
    if (!strcmp(cmd, "grant") && optind < argc && !strcmp(argv[optind], "--force")) {
        force = 1;
        optind++;
    }
    if (!strcmp(cmd, "grant") && argc - optind >= 2 && !strcmp(argv[argc - 2], "--uid")) {
        char *end;
        uid = strtoll(argv[argc - 1], &end, 10);
        if (!argv[argc - 1][0] || *end || uid < 0 || uid > 0xffffffffLL) {
            fprintf(stderr, "vmstate-admin: --uid takes a guest uid\n");
            return 2;
        }
        argc -= 2;
    }
    n_args = argc - optind;
    if (n_args < command->min_args || (command->max_args >= 0 && n_args > command->max_args)) {
        fprintf(stderr, "vmstate-admin: %s: wrong number of arguments (see --help)\n", cmd);
        return 2;
    }
    /* The configuration names the database and the VMs; with -D it is optional. */
    if (bridge_config_load(&cfg, config_path ? config_path : DEFAULT_CONFIG, err, sizeof(err)) ==
        0) {
        have_cfg = 1;
    } else if (config_path || !db_path) {
        fprintf(stderr, "vmstate-admin: %s\n", err);
        goto out;
    }
    if (!config_path)
        config_path = DEFAULT_CONFIG;
    if (!db_path) {
        snprintf(dbfile, sizeof(dbfile), "%s", cfg.database);
        db_path = dbfile;
    }
    /* --secret-file is opened with the caller's rights, before acting as the journal's owner */
    for (int i = optind; !strcmp(cmd, "principal-add") && i + 1 < argc; i++)
        if (!strcmp(argv[i], "--secret-file") && !(secret_stream = fopen(argv[i + 1], "r"))) {
            fprintf(stderr, "vmstate-admin: %s: %s\n", argv[i + 1], strerror(errno));
            goto out;
        }
    if (become_journal_owner(db_path) < 0)
        goto out;
    /* Only principal-add starts a journal: anything else on a missing file is a typo. */
    if (strcmp(cmd, "principal-add") && access(db_path, F_OK) < 0) {
        fprintf(stderr,
                "vmstate-admin: no journal at %s (vmstate-bridged creates it when it starts; "
                "principal-add too)\n",
                db_path);
        goto out;
    }
    if (bridge_db_open(&db, db_path, err, sizeof(err)) < 0) {
        fprintf(stderr, "vmstate-admin: %s\n", err);
        goto out;
    }

    if (!strcmp(cmd, "principal-add")) {
        const char *name = NULL, *cost = "default";
        char secret[VMS_STR_MAX + 2] = "", hash[crypto_pwhash_STRBYTES];
        unsigned long long ops = BRIDGE_PWHASH_OPS_DEFAULT;
        size_t mem = BRIDGE_PWHASH_MEM_DEFAULT;

        for (int i = optind; i < argc; i++) {
            if (!strcmp(argv[i], "--secret-file") && i + 1 < argc)
                i++; /* opened above */
            else if (!strcmp(argv[i], "--cost") && i + 1 < argc)
                cost = argv[++i];
            else if (!name)
                name = argv[i];
            else
                goto bad_usage;
        }
        if (!name || !vms_valid_id(name)) {
            fprintf(stderr, "vmstate-admin: principal name must be 1..255 of [A-Za-z0-9._:@-]\n");
            goto out;
        }
        if (!strcmp(cost, "interactive")) {
            ops = crypto_pwhash_OPSLIMIT_INTERACTIVE;
            mem = crypto_pwhash_MEMLIMIT_INTERACTIVE;
        } else if (!strcmp(cost, "test")) {
            ops = BRIDGE_PWHASH_OPS_TEST;
            mem = BRIDGE_PWHASH_MEM_TEST;
        } else if (strcmp(cost, "default")) {
            goto bad_usage;
        }
        if (read_secret(name, secret_stream, secret, sizeof(secret)) < 0)
            goto out;
        if (bridge_secret_hash(secret, ops, mem, hash) < 0) {
            sodium_memzero(secret, sizeof(secret));
            fprintf(stderr, "vmstate-admin: hashing failed (out of memory?)\n");
            goto out;
        }
        sodium_memzero(secret, sizeof(secret));
        if (bridge_db_principal_add(&db, name, hash) < 0)
            goto out;
        printf("principal %s stored\n", name);
        rc = 0;
    } else if (!strcmp(cmd, "principal-remove")) {
        int n;
        n = bridge_db_principal_remove(&db, argv[optind]);
        if (n < 0)
            goto out;
        if (n == 0) {
            fprintf(stderr, "vmstate-admin: no principal %s\n", argv[optind]);
            goto out;
        }
        rc = 0;
    } else if (!strcmp(cmd, "grant") || !strcmp(cmd, "revoke")) {
        const char *principal, *vm;
        char hash[crypto_pwhash_STRBYTES + 1];
        int last = argc; /* a trailing --uid was taken off argc above */
        principal = argv[optind];
        vm = argv[optind + 1];
        if (!strcmp(cmd, "grant") && !force &&
            check_vm(have_cfg ? &cfg : NULL, config_path, vm) < 0)
            goto out;
        if (bridge_db_principal_hash(&db, principal, hash, sizeof(hash)) != 1) {
            fprintf(stderr, "vmstate-admin: no principal %s\n", principal);
            goto out;
        }
        for (int i = optind + 2; i < last; i++)
            if (!valid_op(argv[i])) {
                fprintf(stderr, "vmstate-admin: unknown operation '%s'\n", argv[i]);
                goto out;
            }
        for (int i = optind + 2; i < last; i++)
            if ((!strcmp(cmd, "grant")
                     ? bridge_db_right_grant_uid(&db, principal, vm, argv[i], (int64_t)uid)
                     : bridge_db_right_revoke(&db, principal, vm, argv[i])) < 0)
                goto out;
        rc = 0;
    } else if (!strcmp(cmd, "principals")) {
        rc = print_query(&db,
                         "SELECT name, datetime(created,'unixepoch') AS created FROM "
                         "principals ORDER BY name",
                         NULL);
    } else if (!strcmp(cmd, "rights")) {
        rc = print_query(&db,
                         "SELECT principal, vm, op, CASE uid WHEN -1 THEN 'any' ELSE uid END AS "
                         "uid FROM rights ORDER BY 1,2,3,4",
                         NULL);
    } else if (!strcmp(cmd, "states") || !strcmp(cmd, "requests") || !strcmp(cmd, "events")) {
        const char *vm = optind < argc ? argv[optind] : NULL;
        const char *sql;
        if (!strcmp(cmd, "states"))
            sql = vm ? "SELECT vm, id, label, app_id, request_id, parent, "
                       "datetime(created,'unixepoch') AS created, status, principal FROM states "
                       "WHERE vm = ? ORDER BY rowid"
                     : "SELECT vm, id, label, app_id, request_id, parent, "
                       "datetime(created,'unixepoch') AS created, status, principal FROM states "
                       "ORDER BY rowid";
        else if (!strcmp(cmd, "requests"))
            /* new columns last: scripts index the older ones */
            sql = vm ? "SELECT vm, id, op, app_id, principal, status, result, message, state_id, "
                       "length(app_data) AS app_data_bytes, epoch, CASE uid WHEN -1 THEN '-' "
                       "ELSE uid END AS uid, followups, mode FROM requests WHERE vm = ? ORDER BY "
                       "rowid"
                     : "SELECT vm, id, op, app_id, principal, status, result, message, state_id, "
                       "length(app_data) AS app_data_bytes, epoch, CASE uid WHEN -1 THEN '-' "
                       "ELSE uid END AS uid, followups, mode FROM requests ORDER BY rowid";
        else
            sql = vm ? "SELECT vm, epoch, seq, request_id, op, status, reason, acked, superseded "
                       "FROM events WHERE vm = ? ORDER BY seq"
                     : "SELECT vm, epoch, seq, request_id, op, status, reason, acked, superseded "
                       "FROM events ORDER BY vm, seq";
        rc = print_query(&db, sql, vm);
    } else {
        goto bad_usage;
    }
    goto out;
bad_usage:
    usage(stderr);
    rc = 2;
out:
    if (secret_stream)
        fclose(secret_stream);
    bridge_db_close(&db);
    bridge_config_free(&cfg);
    return rc;
}
