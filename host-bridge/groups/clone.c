/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * clone.c — see clone.h. The copy, then a bridge's own clones (group-clone-local), then
 * the control instance's run over the bridges (group-clone), then the start-up load.
 */
#include "config.h"
#include "clone.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "bridge.h"
#include "clone-id.h"
#include "db-lifecycle.h"
#include "group-db.h"
#include "groups.h"
#include "peer.h"
#include "vms-log.h"

#define CLONE_RUNS_MAX  4
#define CLONE_TIMEOUT_S 900.0 /* a bridge copying its VMs' disks and checkpoints */
#define CLONE_GROUP_MAX 64
#define CLONE_FILES_MAX (CLONE_DISKS_MAX + 2)
#define CLONE_LOCAL_VMS 16

struct clone_run;

struct clone_bridge {
    struct clone_run *run;
    char name[BRIDGE_VM_NAME_MAX];
    json_object *vms; /* the originals on this bridge */
    struct group_peer_call *call;
    json_object *reply;
    char why[400];
    int ok;
};

struct clone_run {
    struct bridge_clones *cl;
    int in_use;
    char group[CLONE_GROUP_MAX], new_group[CLONE_GROUP_MAX], policy[16];
    int64_t at_ns; /* 0: no resume */
    size_t n, pending;
    struct clone_bridge b[BRIDGE_PEERS_MAX + 1];
    json_object *clones; /* what was made, for the answer */
    bridge_lc_done_fn done;
    void *opaque;
};

struct bridge_clones {
    struct bridge *br;
    struct clone_run runs[CLONE_RUNS_MAX];
};

static void answer_error(bridge_lc_done_fn done, void *opaque, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void answer_error(bridge_lc_done_fn done, void *opaque, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    json_object *o = json_object_new_object();

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_object_object_add(o, "error", json_object_new_string(msg));
    if (done)
        done(opaque, 0, o);
    else
        json_object_put(o);
}

int clone_copy_file(const char *from, const char *to, int *reflinked)
{
    int in = -1, out = -1, rc = -1, e;
    struct stat st;
    off_t left;

    *reflinked = 0;
    in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0 || fstat(in, &st) < 0)
        goto out;
    out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0)
        goto out;
    if (ioctl(out, FICLONE, in) == 0) {
        *reflinked = 1;
    } else {
        /* no shared extents here (tmpfs, ext4, another file system): a real copy, which
         * the kernel still does without the data crossing into this process */
        for (left = st.st_size; left > 0;) {
            ssize_t n = copy_file_range(in, NULL, out, NULL, (size_t)left, 0);
            if (n <= 0) {
                if (n == 0)
                    errno = EIO;
                goto out;
            }
            left -= n;
        }
    }
    if (fsync(out) < 0)
        goto out;
    rc = 0;
out:
    e = errno;
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    if (rc < 0 && out >= 0)
        unlink(to);
    errno = e;
    return rc;
}

/* ---- a bridge's own clones ---- */

struct local_clone {
    struct bridge_vm *src;
    struct clone_identity id;
    struct bridge_db_managed row;
    struct bridge_db_checkpoint ck;
    char files[CLONE_FILES_MAX][BRIDGE_PATH_MAX]; /* made so far: removed on failure */
    size_t n_files;
    int made_dir, reflinks, copies;
};

static struct bridge_vm *vm_by_name(struct bridge *br, const char *name)
{
    for (size_t i = 0; i < br->n_vms; i++)
        if (!strcmp(br->vms[i].cfg->name, name))
            return &br->vms[i];
    return NULL;
}

/*
 * A clone's configuration: the original's, with the clone's name, run_dir, template and
 * sockets, never autostarted nor HA. Appended to the configuration and to br->vms, set up
 * and started (a suspended managed VM: its RAM file locked). 0, or -1.
 */
static int add_vm(struct bridge *br, const struct bridge_vm_config *src, const char *name,
                  const char *run_dir, const char *qemu_args)
{
    struct bridge_config *cfg = br->cfg;
    struct bridge_vm_config *c;
    struct bridge_vm *vm;

    if (cfg->n_vms >= BRIDGE_VMS_MAX || br->n_vms >= BRIDGE_VMS_MAX) {
        vms_err(name, NULL, "clone: more than %d VMs on this bridge", BRIDGE_VMS_MAX);
        return -1;
    }
    c = &cfg->vms[cfg->n_vms];
    *c = *src;
    snprintf(c->name, sizeof(c->name), "%s", name);
    snprintf(c->run_dir, sizeof(c->run_dir), "%s", run_dir);
    snprintf(c->qemu_args, sizeof(c->qemu_args), "%s", qemu_args);
    if (!strcmp(src->state_dir, src->run_dir))
        snprintf(c->state_dir, sizeof(c->state_dir), "%s", run_dir);
    snprintf(c->qmp, sizeof(c->qmp), "%.100s/qmp.sock", run_dir);
    snprintf(c->port_a, sizeof(c->port_a), "%.100s/a.sock", run_dir);
    snprintf(c->port_b, sizeof(c->port_b), "%.100s/b.sock", run_dir);
    c->autostart = 0;
    c->ha = 0;
    vm = &br->vms[br->n_vms];
    if (bridge_vm_init(vm, br, c) < 0)
        return -1;
    cfg->n_vms++;
    br->n_vms++;
    if (bridge_vm_start(vm) < 0) {
        vms_err(name, NULL, "clone: cannot start its VM state");
        return -1;
    }
    return 0;
}

/* Copy @from into @to for @lc (noted for the clean-up, and in the journal's garbage until
 * the clone is journaled: a crash leaves no orphan). 0, or -1 with @why. */
static int copy_one(struct bridge *br, struct local_clone *lc, const char *from, const char *to,
                    char *why, size_t whylen)
{
    int reflinked;

    if (bridge_db_garbage_add(&br->db, to) < 0) {
        snprintf(why, whylen, "journal error");
        return -1;
    }
    if (clone_copy_file(from, to, &reflinked) < 0) {
        snprintf(why, whylen, "cannot copy %.200s to %.200s: %s", from, to, strerror(errno));
        return -1;
    }
    snprintf(lc->files[lc->n_files++], BRIDGE_PATH_MAX, "%s", to);
    if (reflinked)
        lc->reflinks++;
    else
        lc->copies++;
    return 0;
}

/* Check @name, derive its identity, read its checkpoint. 0, or -1 with @why. */
static int plan_one(struct bridge *br, struct local_clone *lc, const char *new_group,
                    const char *name, char *why, size_t whylen)
{
    char w[320];
    struct stat st;

    lc->src = vm_by_name(br, name);
    if (!lc->src) {
        snprintf(why, whylen, "no VM named '%.64s' on this bridge", name);
        return -1;
    }
    if (bridge_managed_group_check(lc->src, BRIDGE_LC_RESUME, w, sizeof(w)) < 0) {
        snprintf(why, whylen, "cannot clone: %s (a clone copies a suspended VM)", w);
        return -1;
    }
    if (bridge_db_checkpoint_current(&br->db, name, &lc->ck) != 1 ||
        strcmp(lc->ck.phase, "valid")) {
        snprintf(why, whylen, "cannot clone: %s has no valid checkpoint", name);
        return -1;
    }
    if (bridge_db_managed_get(&br->db, name, &lc->row) < 0) {
        snprintf(why, whylen, "journal error");
        return -1;
    }
    if (clone_derive(lc->src->cfg, new_group, &lc->id, w, sizeof(w)) < 0) {
        snprintf(why, whylen, "cannot clone %s: %s", name, w);
        return -1;
    }
    if (vm_by_name(br, lc->id.name)) {
        snprintf(why, whylen, "a VM named %s exists already", lc->id.name);
        return -1;
    }
    if (stat(lc->id.run_dir, &st) == 0) {
        snprintf(why, whylen, "%s exists already: the clone's run_dir must be new", lc->id.run_dir);
        return -1;
    }
    return 0;
}

/* Make @lc's files: run_dir, disks, the checkpoint's state (and RAM) file. 0, or -1. */
static int make_one(struct bridge *br, struct local_clone *lc, char *why, size_t whylen)
{
    const struct bridge_tier_config *t = bridge_config_tier(br->cfg, lc->ck.tier);
    struct bridge_db_checkpoint *ck = &lc->ck;
    char from_state[BRIDGE_PATH_MAX], from_ram[BRIDGE_PATH_MAX];
    unsigned char rnd[8];

    if (!t) {
        snprintf(why, whylen, "checkpoint of %s is in tier %s, not configured", lc->src->cfg->name,
                 ck->tier);
        return -1;
    }
    if (mkdir(lc->id.run_dir, 0700) < 0) {
        snprintf(why, whylen, "cannot create %s: %s", lc->id.run_dir, strerror(errno));
        return -1;
    }
    lc->made_dir = 1;
    for (size_t i = 0; i < lc->id.n_disks; i++)
        if (copy_one(br, lc, lc->id.disk_from[i], lc->id.disk_to[i], why, whylen) < 0)
            return -1;
    snprintf(from_state, sizeof(from_state), "%s", ck->state_file);
    snprintf(from_ram, sizeof(from_ram), "%s", ck->ram_file);
    randombytes_buf(rnd, sizeof(rnd));
    snprintf(ck->id, sizeof(ck->id), "ck-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
             rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    snprintf(ck->vm, sizeof(ck->vm), "%s", lc->id.name);
    snprintf(ck->state_file, sizeof(ck->state_file), "%.400s/%.60s-%.39s.state", t->path,
             lc->id.name, ck->id);
    if (copy_one(br, lc, from_state, ck->state_file, why, whylen) < 0)
        return -1;
    if (ck->ram_file[0]) {
        snprintf(ck->ram_file, sizeof(ck->ram_file), "%.400s/%.60s.ram", t->path, lc->id.name);
        if (copy_one(br, lc, from_ram, ck->ram_file, why, whylen) < 0)
            return -1;
    }
    ck->created = ck->last_used = (int64_t)time(NULL);
    ck->fp[0] = '\0'; /* taken when the clone's VM state starts (bridge_managed_start) */
    ck->resume_at = 0;
    snprintf(ck->phase, sizeof(ck->phase), "valid");
    snprintf(lc->row.vm, sizeof(lc->row.vm), "%s", lc->id.name);
    snprintf(lc->row.run_state, sizeof(lc->row.run_state), "suspended");
    snprintf(lc->row.ram_file, sizeof(lc->row.ram_file), "%s", ck->ram_file);
    lc->row.pid = lc->row.pid_start = 0;
    return 0;
}

static void unmake(struct local_clone *lc)
{
    for (size_t i = 0; i < lc->n_files; i++)
        unlink(lc->files[i]);
    if (lc->made_dir)
        rmdir(lc->id.run_dir);
}

static int journal_clone(struct bridge *br, const struct local_clone *lc, const char *group,
                         const char *new_group)
{
    sqlite3_stmt *st = NULL;
    char macs[CLONE_NICS_MAX * CLONE_MAC_LEN + 1] = "";
    int rc;

    for (size_t i = 0; i < lc->id.n_macs; i++) {
        if (i)
            strcat(macs, ",");
        strcat(macs, lc->id.macs[i]);
    }
    if (sqlite3_prepare_v2(br->db.h,
                           "INSERT INTO clones (vm, source, grp, source_group, run_dir, qemu_args, "
                           "macs, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, lc->id.name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, lc->src->cfg->name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, new_group, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, group, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, lc->id.run_dir, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, lc->id.qemu_args, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 7, macs, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)time(NULL));
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    sqlite3_finalize(st);
    if (rc < 0)
        return -1;
    if (bridge_db_managed_put(&br->db, &lc->row) < 0 ||
        bridge_db_checkpoint_put(&br->db, &lc->ck) < 0)
        return -1;
    for (size_t i = 0; i < lc->n_files; i++) {
        if (sqlite3_prepare_v2(br->db.h, "DELETE FROM tier_garbage WHERE path = ?1", -1, &st,
                               NULL) != SQLITE_OK)
            return -1;
        sqlite3_bind_text(st, 1, lc->files[i], -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
        sqlite3_finalize(st);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* The tiers can hold every clone's reservation (@lcs, @n) beside what is reserved. */
static int check_room(struct bridge *br, struct local_clone *lcs, size_t n, char *why,
                      size_t whylen)
{
    for (size_t i = 0; i < n; i++) {
        const struct bridge_tier_config *t = bridge_config_tier(br->cfg, lcs[i].ck.tier);
        uint64_t need = 0;
        int64_t reserved;
        if (!t)
            continue; /* make_one names it */
        for (size_t k = 0; k < n; k++)
            if (!strcmp(lcs[k].ck.tier, t->name))
                need += lcs[k].row.res_bytes;
        reserved = bridge_db_tier_reserved(&br->db, t->name, NULL);
        if (reserved < 0) {
            snprintf(why, whylen, "journal error");
            return -1;
        }
        if ((uint64_t)reserved + need > t->capacity) {
            snprintf(why, whylen,
                     "no room in tier %s for the clones: they need %llu MiB, %llu MiB of %llu MiB "
                     "are free",
                     t->name, (unsigned long long)(need >> 20),
                     (unsigned long long)((t->capacity - (uint64_t)reserved) >> 20),
                     (unsigned long long)(t->capacity >> 20));
            return -1;
        }
    }
    return 0;
}

static void clone_local(struct bridge *br, json_object *req, bridge_lc_done_fn done, void *opaque)
{
    struct local_clone *lcs = NULL;
    json_object *vms, *v, *o = NULL, *a;
    const char *group, *new_group;
    char why[512] = "";
    size_t n = 0;
    struct timespec ts0, ts1;

    clock_gettime(CLOCK_MONOTONIC, &ts0);
    if (!json_object_object_get_ex(req, "group", &v) ||
        !vms_valid_id(group = json_object_get_string(v)) ||
        !json_object_object_get_ex(req, "new", &v) ||
        !vms_valid_id(new_group = json_object_get_string(v)) ||
        strlen(new_group) >= CLONE_GROUP_MAX || !json_object_object_get_ex(req, "vms", &vms) ||
        !json_object_is_type(vms, json_type_array) || !json_object_array_length(vms) ||
        json_object_array_length(vms) > CLONE_LOCAL_VMS) {
        answer_error(done, opaque,
                     "group-clone-local: needs \"group\", \"new\" and \"vms\" (1..%d)",
                     CLONE_LOCAL_VMS);
        return;
    }
    n = json_object_array_length(vms);
    lcs = calloc(n, sizeof(*lcs));
    if (!lcs) {
        answer_error(done, opaque, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        v = json_object_array_get_idx(vms, i);
        if (!json_object_is_type(v, json_type_string) ||
            plan_one(br, &lcs[i], new_group, json_object_get_string(v), why, sizeof(why)) < 0) {
            if (!why[0])
                snprintf(why, sizeof(why), "\"vms\" must hold VM names");
            goto fail;
        }
    }
    if (check_room(br, lcs, n, why, sizeof(why)) < 0)
        goto fail;
    for (size_t i = 0; i < n; i++)
        if (make_one(br, &lcs[i], why, sizeof(why)) < 0)
            goto fail;
    if (bridge_db_begin(&br->db) < 0) {
        snprintf(why, sizeof(why), "journal error");
        goto fail;
    }
    for (size_t i = 0; i < n; i++)
        if (journal_clone(br, &lcs[i], group, new_group) < 0) {
            bridge_db_rollback(&br->db);
            snprintf(why, sizeof(why), "journal error: %s", sqlite3_errmsg(br->db.h));
            goto fail;
        }
    if (bridge_db_commit(&br->db) < 0) {
        bridge_db_rollback(&br->db);
        snprintf(why, sizeof(why), "journal error");
        goto fail;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts1);
    o = json_object_new_object();
    a = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        struct local_clone *lc = &lcs[i];
        json_object *e = json_object_new_object(), *m = json_object_new_array();
        /* journaled: the clone exists, and is rebuilt at every start even if this fails */
        if (add_vm(br, lc->src->cfg, lc->id.name, lc->id.run_dir, lc->id.qemu_args) < 0)
            json_object_object_add(e, "error",
                                   json_object_new_string("journaled, but its VM state could "
                                                          "not be set up: restart the bridge"));
        for (size_t k = 0; k < lc->id.n_macs; k++)
            json_object_array_add(m, json_object_new_string(lc->id.macs[k]));
        json_object_object_add(e, "vm", json_object_new_string(lc->src->cfg->name));
        json_object_object_add(e, "clone", json_object_new_string(lc->id.name));
        json_object_object_add(e, "run_dir", json_object_new_string(lc->id.run_dir));
        json_object_object_add(e, "macs", m);
        json_object_object_add(e, "checkpoint", json_object_new_string(lc->ck.id));
        json_object_object_add(e, "reflinked_files", json_object_new_int(lc->reflinks));
        json_object_object_add(e, "copied_files", json_object_new_int(lc->copies));
        json_object_array_add(a, e);
        vms_info(lc->id.name, NULL, "clone of %s (group %s -> %s): %d file(s) reflinked, %d copied",
                 lc->src->cfg->name, group, new_group, lc->reflinks, lc->copies);
    }
    json_object_object_add(o, "vms", a);
    json_object_object_add(o, "copy_ms",
                           json_object_new_double((double)(ts1.tv_sec - ts0.tv_sec) * 1e3 +
                                                  (double)(ts1.tv_nsec - ts0.tv_nsec) / 1e6));
    free(lcs);
    done(opaque, 1, o);
    return;
fail:
    for (size_t i = 0; i < n; i++)
        unmake(&lcs[i]);
    free(lcs);
    answer_error(done, opaque, "refused: %s", why);
}

/* ---- the control instance ---- */

static void run_free(struct clone_run *run)
{
    for (size_t i = 0; i < run->n; i++) {
        group_peer_cancel(run->b[i].call);
        json_object_put(run->b[i].vms);
        json_object_put(run->b[i].reply);
    }
    json_object_put(run->clones);
    memset(run, 0, sizeof(*run));
}

static void run_answer(struct clone_run *run, int ok, json_object *o)
{
    if (run->done)
        run->done(run->opaque, ok, o);
    else
        json_object_put(o);
    run_free(run);
}

/* The resume of the new group ended: its answer, with the clones added. */
static void on_resumed(void *opaque, int ok, json_object *result)
{
    struct clone_run *run = opaque;

    if (!result)
        result = json_object_new_object();
    json_object_object_add(result, "clones", json_object_get(run->clones));
    json_object_object_add(result, "from", json_object_new_string(run->group));
    run_answer(run, ok, result);
}

/* Every bridge answered: the new group of the clones made, its history, then the resume. */
static void run_finish(struct clone_run *run)
{
    struct bridge *br = run->cl->br;
    json_object *detail = json_object_new_object(), *o, *req;
    size_t n_ok = 0, n_made = 0;
    char msg[1024] = "";
    size_t off = 0;
    const char *outcome;

    run->clones = json_object_new_array();
    for (size_t i = 0; i < run->n; i++) {
        struct clone_bridge *b = &run->b[i];
        json_object *vms;
        n_ok += (size_t)b->ok;
        if (!b->ok || !json_object_object_get_ex(b->reply, "vms", &vms))
            continue;
        for (size_t k = 0; k < json_object_array_length(vms); k++) {
            json_object *e = json_object_array_get_idx(vms, k), *c;
            json_object_object_add(e, "bridge", json_object_new_string(b->name));
            json_object_array_add(run->clones, json_object_get(e));
            if (json_object_object_get_ex(e, "clone", &c))
                n_made++;
        }
    }
    outcome = n_ok == run->n ? "done" : n_made ? "half" : "refused";
    if (n_made && group_db_create(&br->db, run->new_group) < 0)
        vms_err(NULL, NULL, "group %s: cannot journal the clone group", run->new_group);
    for (size_t i = 0; i < json_object_array_length(run->clones); i++) {
        json_object *e = json_object_array_get_idx(run->clones, i), *bn, *cn;
        if (json_object_object_get_ex(e, "bridge", &bn) &&
            json_object_object_get_ex(e, "clone", &cn) &&
            group_db_add(&br->db, run->new_group, json_object_get_string(bn),
                         json_object_get_string(cn)) < 0)
            vms_err(NULL, NULL, "group %s: cannot journal member %s", run->new_group,
                    json_object_get_string(cn));
    }
    json_object_object_add(detail, "from", json_object_new_string(run->group));
    json_object_object_add(detail, "to", json_object_new_string(run->new_group));
    json_object_object_add(detail, "clones", json_object_get(run->clones));
    for (size_t i = 0; i < run->n; i++)
        if (run->b[i].why[0])
            off += (size_t)snprintf(msg + off, off < sizeof(msg) ? sizeof(msg) - off : 0,
                                    "%s%s: %s", off ? "; " : "", run->b[i].name, run->b[i].why);
    if (off)
        json_object_object_add(detail, "error", json_object_new_string(msg));
    if (n_made)
        group_db_history_add(&br->db, run->new_group, "clone", 0, outcome,
                             json_object_to_json_string_ext(detail, JSON_C_TO_STRING_PLAIN));
    group_db_history_add(&br->db, run->group, "clone", 0, outcome,
                         json_object_to_json_string_ext(detail, JSON_C_TO_STRING_PLAIN));
    json_object_put(detail);
    if (strcmp(outcome, "done")) {
        vms_warn(NULL, NULL, "group %s: clone into %s %s: %s", run->group, run->new_group, outcome,
                 msg);
        answer_error(run->done, run->opaque, "group %s clone %s: %s%s", run->group, outcome, msg,
                     n_made ? " (the clones made are in the new group: see group show)" : "");
        run->done = NULL;
        run_free(run);
        return;
    }
    vms_info(NULL, NULL, "group %s: cloned into %s (%zu VM(s))", run->group, run->new_group,
             n_made);
    if (!run->at_ns) {
        o = json_object_new_object();
        json_object_object_add(o, "group", json_object_new_string(run->new_group));
        json_object_object_add(o, "from", json_object_new_string(run->group));
        json_object_object_add(o, "clones", json_object_get(run->clones));
        run_answer(run, 1, o);
        return;
    }
    /* the clones resume like any group: prepare at every bridge, commit, cont at T */
    req = json_object_new_object();
    json_object_object_add(req, "group", json_object_new_string(run->new_group));
    json_object_object_add(req, "at_ns", json_object_new_int64(run->at_ns));
    json_object_object_add(req, "policy", json_object_new_string(run->policy));
    bridge_groups_command(br, "group-resume", req, on_resumed, run);
    json_object_put(req);
}

static void on_local_reply(void *opaque, json_object *reply, const char *why)
{
    struct clone_bridge *b = opaque;
    struct clone_run *run = b->run;
    json_object *v;

    b->call = NULL;
    b->reply = reply ? json_object_get(reply) : NULL;
    b->ok = reply && json_object_object_get_ex(reply, "ok", &v) && json_object_get_boolean(v);
    if (!reply)
        snprintf(b->why, sizeof(b->why), "%s", why ? why : "no reply");
    else if (!b->ok)
        snprintf(b->why, sizeof(b->why), "%s",
                 json_object_object_get_ex(reply, "error", &v) ? json_object_get_string(v)
                                                               : "refused");
    if (--run->pending == 0)
        run_finish(run);
}

/* A group name of @req's @key into @out (CLONE_GROUP_MAX). 0, or -1 (answered). */
static int group_name(json_object *req, const char *key, char *out, bridge_lc_done_fn done,
                      void *opaque)
{
    json_object *v;
    const char *s;

    if (!json_object_object_get_ex(req, key, &v) || !json_object_is_type(v, json_type_string) ||
        strlen(s = json_object_get_string(v)) >= CLONE_GROUP_MAX || !vms_valid_id(s)) {
        answer_error(done, opaque, "\"%s\" must be a group name of 1..63 of [A-Za-z0-9._:@-]", key);
        return -1;
    }
    snprintf(out, CLONE_GROUP_MAX, "%s", s);
    return 0;
}

static void clone_start(struct bridge_clones *cl, json_object *req, bridge_lc_done_fn done,
                        void *opaque)
{
    struct bridge *br = cl->br;
    struct clone_run *run = NULL;
    char group[CLONE_GROUP_MAX], new_group[CLONE_GROUP_MAX];
    const char *policy = "preserve";
    int64_t at_ns = 0;
    json_object *members, *v;

    if (group_name(req, "group", group, done, opaque) < 0 ||
        group_name(req, "new", new_group, done, opaque) < 0)
        return;
    if (json_object_object_get_ex(req, "at_ns", &v) &&
        (!json_object_is_type(v, json_type_int) || (at_ns = json_object_get_int64(v)) <= 0)) {
        answer_error(done, opaque, "\"at_ns\" must be a time (ns since the epoch)");
        return;
    }
    if (json_object_object_get_ex(req, "policy", &v))
        policy = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
    if (strcmp(policy, "preserve") && strcmp(policy, "host")) {
        answer_error(done, opaque, "\"policy\" must be preserve or host");
        return;
    }
    if (group_db_exists(&br->db, group) != 1) {
        answer_error(done, opaque, "no group named '%s'", group);
        return;
    }
    if (group_db_exists(&br->db, new_group) != 0) {
        answer_error(done, opaque, "refused: group %s exists already: a clone makes a new group",
                     new_group);
        return;
    }
    for (int i = 0; i < CLONE_RUNS_MAX; i++) {
        if (cl->runs[i].in_use &&
            (!strcmp(cl->runs[i].group, group) || !strcmp(cl->runs[i].new_group, new_group))) {
            answer_error(done, opaque, "refused: a clone of %s or into %s is in progress", group,
                         new_group);
            return;
        }
        if (!run && !cl->runs[i].in_use)
            run = &cl->runs[i];
    }
    if (!run) {
        answer_error(done, opaque, "refused: too many clones in progress (%d)", CLONE_RUNS_MAX);
        return;
    }
    members = group_db_members(&br->db, group);
    if (!members || !json_object_array_length(members)) {
        json_object_put(members);
        answer_error(done, opaque, "group %s has no members", group);
        return;
    }
    memset(run, 0, sizeof(*run));
    run->cl = cl;
    snprintf(run->group, sizeof(run->group), "%s", group);
    snprintf(run->new_group, sizeof(run->new_group), "%s", new_group);
    snprintf(run->policy, sizeof(run->policy), "%s", policy);
    run->at_ns = at_ns;
    for (size_t i = 0; i < json_object_array_length(members); i++) {
        json_object *m = json_object_array_get_idx(members, i), *bn, *vn;
        struct clone_bridge *b = NULL;
        json_object_object_get_ex(m, "bridge", &bn);
        json_object_object_get_ex(m, "vm", &vn);
        for (size_t k = 0; k < run->n && !b; k++)
            if (!strcmp(run->b[k].name, json_object_get_string(bn)))
                b = &run->b[k];
        if (!b) {
            if (run->n >= BRIDGE_PEERS_MAX + 1 ||
                !group_peer_known(br, json_object_get_string(bn))) {
                answer_error(done, opaque, "group %s: bridge '%s' is not a [peer] of this bridge",
                             group, json_object_get_string(bn));
                json_object_put(members);
                run_free(run);
                return;
            }
            b = &run->b[run->n++];
            b->run = run;
            snprintf(b->name, sizeof(b->name), "%s", json_object_get_string(bn));
            b->vms = json_object_new_array();
        }
        json_object_array_add(b->vms, json_object_get(vn));
    }
    json_object_put(members);
    run->in_use = 1;
    run->done = done;
    run->opaque = opaque;
    run->pending = run->n;
    vms_info(NULL, NULL, "group %s: clone into %s over %zu bridge(s)", group, new_group, run->n);
    for (size_t i = 0; i < run->n; i++) {
        json_object *lreq = json_object_new_object();
        json_object_object_add(lreq, "cmd", json_object_new_string("group-clone-local"));
        json_object_object_add(lreq, "group", json_object_new_string(group));
        json_object_object_add(lreq, "new", json_object_new_string(new_group));
        json_object_object_add(lreq, "vms", json_object_get(run->b[i].vms));
        run->b[i].call =
            group_peer_send(br, run->b[i].name, lreq, CLONE_TIMEOUT_S, on_local_reply, &run->b[i]);
        json_object_put(lreq);
        if (!run->b[i].call) {
            snprintf(run->b[i].why, sizeof(run->b[i].why), "out of memory");
            run->pending--;
        }
    }
    if (!run->pending)
        run_finish(run);
}

int bridge_clones_command(struct bridge *br, const char *cmd, json_object *req,
                          bridge_lc_done_fn done, void *opaque)
{
    if (strcmp(cmd, "group-clone") && strcmp(cmd, "group-clone-local"))
        return 0;
    if (!br->clones) {
        answer_error(done, opaque, "clones are not set up on this bridge");
        return 1;
    }
    if (!strcmp(cmd, "group-clone"))
        clone_start(br->clones, req, done, opaque);
    else
        clone_local(br, req, done, opaque);
    return 1;
}

void bridge_clones_forget(struct bridge *br, void *opaque)
{
    if (!br->clones)
        return;
    for (int i = 0; i < CLONE_RUNS_MAX; i++)
        if (br->clones->runs[i].opaque == opaque)
            br->clones->runs[i].done = NULL;
}

/* ---- start-up ---- */

int bridge_clones_reserve(struct bridge_config *cfg)
{
    /* calloc, not realloc + memset: 256 configs are 3 MiB, which fresh zero pages keep out
     * of the RSS until a clone uses its slot */
    struct bridge_vm_config *v = calloc(BRIDGE_VMS_MAX, sizeof(*v));

    if (!v)
        return -1;
    if (cfg->n_vms)
        memcpy(v, cfg->vms, cfg->n_vms * sizeof(*v));
    free(cfg->vms);
    cfg->vms = v;
    return 0;
}

int bridge_clones_load(struct bridge *br)
{
    sqlite3_stmt *st = NULL;
    int rc;

    br->clones = calloc(1, sizeof(*br->clones));
    if (!br->clones)
        return -1;
    br->clones->br = br;
    if (sqlite3_prepare_v2(br->db.h,
                           "SELECT vm, source, run_dir, qemu_args FROM clones ORDER BY rowid", -1,
                           &st, NULL) != SQLITE_OK) {
        vms_err(NULL, NULL, "database: clones: %s", sqlite3_errmsg(br->db.h));
        return -1;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        const char *source = (const char *)sqlite3_column_text(st, 1);
        const struct bridge_vm_config *src = bridge_config_vm(br->cfg, source);
        if (!src || !src->managed) {
            vms_err(name, NULL,
                    "clone of %s: no managed VM %s in the configuration any more: "
                    "the clone is not served",
                    source, source);
            continue;
        }
        if (add_vm(br, src, name, (const char *)sqlite3_column_text(st, 2),
                   (const char *)sqlite3_column_text(st, 3)) < 0) {
            sqlite3_finalize(st);
            return -1;
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

void bridge_clones_free(struct bridge *br)
{
    if (!br->clones)
        return;
    for (int i = 0; i < CLONE_RUNS_MAX; i++)
        if (br->clones->runs[i].in_use)
            run_free(&br->clones->runs[i]);
    free(br->clones);
    br->clones = NULL;
}
