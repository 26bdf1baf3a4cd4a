/*
 * vmstate-admin — manage the bridge's principals and rights, and inspect its
 * journal. Secrets are read from stdin or a file, never from the command line.
 *
 * usage: vmstate-admin [-c CONFIG | -d DATABASE] COMMAND ...
 *   principal-add NAME [--secret-file FILE] [--cost default|interactive|test]
 *   principal-remove NAME
 *   grant PRINCIPAL VM OP...      OP: save restore list delete hostinfo set-memory all
 *   revoke PRINCIPAL VM OP...
 *   principals | rights | states [VM] | requests [VM] | events [VM]
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "bridge-config.h"
#include "ctl.h"
#include "db.h"
#include "vms-log.h"

#define DEFAULT_CONFIG SYSCONFDIR "/vmstate/vmstate-bridged.conf"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vmstate-admin [-c CONFIG | -d DATABASE] COMMAND ...\n"
            "  principal-add NAME [--secret-file FILE] [--cost default|interactive|test]\n"
            "                 the secret is read from FILE or stdin (first line)\n"
            "  principal-remove NAME\n"
            "  grant PRINCIPAL VM OP...     OP: save restore list delete hostinfo set-memory all\n"
            "  revoke PRINCIPAL VM OP...\n"
            "  principals | rights | states [VM] | requests [VM] | events [VM]\n"
            "Asked of the running bridge (admin socket: -S SOCKET, or admin_socket in CONFIG;\n"
            "-j prints JSON, -t SECONDS bounds the wait):\n"
            "  status [VM] | tiers\n"
            "  start VM | stop VM | suspend VM | resume VM   (managed VMs)\n"
            "  pin VM | unpin VM | demote VM | promote VM     (the VM's checkpoint)\n"
            "  schedule VM resume AT|+SECONDS|none           (promotes ahead of time)\n"
            "Costs (Argon2id): default = 2 passes, 16 MiB; interactive = libsodium's\n"
            "INTERACTIVE (2 passes, 64 MiB); test = the minimum (1 pass, 8 KiB; tests only).\n");
}

static int read_secret(const char *file, char *out, size_t len)
{
    FILE *f = file ? fopen(file, "r") : stdin;
    size_t n;

    if (!f) {
        perror(file);
        return -1;
    }
    if (!fgets(out, (int)len, f)) {
        fprintf(stderr, "vmstate-admin: no secret given\n");
        if (file)
            fclose(f);
        return -1;
    }
    if (file)
        fclose(f);
    n = strlen(out);
    while (n && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        out[--n] = '\0';
    if (!n || n > VMS_STR_MAX) {
        fprintf(stderr, "vmstate-admin: the secret must be 1..255 bytes\n");
        return -1;
    }
    return 0;
}

static int valid_op(const char *op)
{
    return !strcmp(op, "all") || vms_op_from_name(op) != VMS_OP_UNKNOWN;
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

int main(int argc, char **argv)
{
    const char *config_path = NULL, *db_path = NULL, *cmd;
    struct bridge_config cfg;
    struct bridge_db db = {0};
    char err[1024], dbfile[BRIDGE_PATH_MAX];
    int opt, rc = 1, json = 0;
    const char *ctl_socket = NULL;
    double ctl_timeout = 0;

    memset(&cfg, 0, sizeof(cfg));
    vms_log_init("vmstate-admin", LOG_WARNING);
    while ((opt = getopt(argc, argv, "+c:d:S:jt:h")) != -1) {
        switch (opt) {
        case 'S':
            ctl_socket = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 't':
            ctl_timeout = atof(optarg);
            break;
        case 'c':
            config_path = optarg;
            break;
        case 'd':
            db_path = optarg;
            break;
        case 'h':
            usage(stdout);
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
        rc = bridge_admin_ctl_main(ctl_socket, cmd, argc - optind, argv + optind, json,
                                   ctl_timeout > 0 ? ctl_timeout : 600);
        goto out;
    }
    if (!db_path) {
        if (bridge_config_load(&cfg, config_path ? config_path : DEFAULT_CONFIG, err, sizeof(err)) <
            0) {
            fprintf(stderr, "vmstate-admin: %s\n", err);
            goto out;
        }
        snprintf(dbfile, sizeof(dbfile), "%s", cfg.database);
        db_path = dbfile;
    }
    if (bridge_db_open(&db, db_path, err, sizeof(err)) < 0) {
        fprintf(stderr, "vmstate-admin: %s\n", err);
        goto out;
    }

    if (!strcmp(cmd, "principal-add")) {
        const char *name = NULL, *file = NULL, *cost = "default";
        char secret[VMS_STR_MAX + 2], hash[crypto_pwhash_STRBYTES];
        unsigned long long ops = BRIDGE_PWHASH_OPS_DEFAULT;
        size_t mem = BRIDGE_PWHASH_MEM_DEFAULT;

        for (int i = optind; i < argc; i++) {
            if (!strcmp(argv[i], "--secret-file") && i + 1 < argc)
                file = argv[++i];
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
        if (read_secret(file, secret, sizeof(secret)) < 0)
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
        if (optind + 1 != argc)
            goto bad_usage;
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
        if (argc - optind < 3)
            goto bad_usage;
        principal = argv[optind];
        vm = argv[optind + 1];
        if (bridge_db_principal_hash(&db, principal, hash, sizeof(hash)) != 1) {
            fprintf(stderr, "vmstate-admin: no principal %s\n", principal);
            goto out;
        }
        for (int i = optind + 2; i < argc; i++)
            if (!valid_op(argv[i])) {
                fprintf(stderr, "vmstate-admin: unknown operation '%s'\n", argv[i]);
                goto out;
            }
        for (int i = optind + 2; i < argc; i++)
            if ((!strcmp(cmd, "grant") ? bridge_db_right_grant
                                       : bridge_db_right_revoke)(&db, principal, vm, argv[i]) < 0)
                goto out;
        rc = 0;
    } else if (!strcmp(cmd, "principals")) {
        rc = print_query(&db,
                         "SELECT name, datetime(created,'unixepoch') AS created FROM "
                         "principals ORDER BY name",
                         NULL);
    } else if (!strcmp(cmd, "rights")) {
        rc = print_query(&db, "SELECT principal, vm, op FROM rights ORDER BY 1,2,3", NULL);
    } else if (!strcmp(cmd, "states") || !strcmp(cmd, "requests") || !strcmp(cmd, "events")) {
        const char *vm = optind < argc ? argv[optind] : NULL;
        const char *sql;
        if (!strcmp(cmd, "states"))
            sql = vm ? "SELECT vm, id, label, app_id, request_id, parent, "
                       "datetime(created,'unixepoch') AS created FROM states WHERE vm = ? ORDER "
                       "BY rowid"
                     : "SELECT vm, id, label, app_id, request_id, parent, "
                       "datetime(created,'unixepoch') AS created FROM states ORDER BY rowid";
        else if (!strcmp(cmd, "requests"))
            sql = vm ? "SELECT vm, id, op, app_id, principal, status, result, message, state_id, "
                       "length(app_data) AS app_data_bytes, epoch FROM requests WHERE vm = ? "
                       "ORDER BY rowid"
                     : "SELECT vm, id, op, app_id, principal, status, result, message, state_id, "
                       "length(app_data) AS app_data_bytes, epoch FROM requests ORDER BY rowid";
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
    bridge_db_close(&db);
    bridge_config_free(&cfg);
    return rc;
}
