/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * tier.c — tiers of managed VMs: what a VM may reserve where, moves of checkpoints between
 * tiers (demotion when a fast tier is short, promotion before a scheduled resume), and the
 * admin's views and commands on them. See managed.h.
 */
#include "config.h"
#include "managed-int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "vms-log.h"

const struct bridge_tier_config *lc_tier_of(struct bridge_vm *vm, const char *name)
{
    return name && *name ? bridge_config_tier(vm->br->cfg, name) : NULL;
}

uint64_t lc_memory_bytes(const struct bridge_vm *vm)
{
    return vm->mgd && vm->mgd->row.memory_bytes ? vm->mgd->row.memory_bytes : vm->cfg->memory_bytes;
}

uint64_t lc_need_bytes(struct bridge_vm *vm)
{
    return lc_memory_bytes(vm) + vm->br->cfg->state_margin;
}

int64_t lc_tier_free(struct bridge_vm *vm, const struct bridge_tier_config *t)
{
    int64_t used = bridge_db_tier_reserved(&vm->br->db, t->name, vmname(vm));
    return used < 0 ? -1 : (int64_t)t->capacity - used;
}

/* ---- tier moves (demotion, promotion) ---- */

static int copy_file(const char *src, const char *dst, char *err, size_t errlen)
{
    int in = open(src, O_RDONLY | O_CLOEXEC), out = -1, rc = -1;
    /* on the heap for the copy's time: as a __thread array it was 1 MiB of TLS that every
     * thread of the bridge zeroed and kept (4 MiB of its RSS) */
    enum { COPY_CHUNK = 1 << 20 };
    uint64_t *buf = malloc(COPY_CHUNK); /* uint64_t: the hole test reads it 8 bytes a step */
    ssize_t n;

    if (in < 0 || !buf) {
        snprintf(err, errlen, "%s: %s", src, strerror(in < 0 ? errno : ENOMEM));
        if (in >= 0)
            close(in);
        free(buf);
        return -1;
    }
    out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) {
        snprintf(err, errlen, "%s: %s", dst, strerror(errno));
        goto out;
    }
    while ((n = read(in, buf, COPY_CHUNK)) > 0) {
        /* a zero-copy RAM file is mostly holes: keep them holes */
        int zero = n == COPY_CHUNK;
        for (size_t i = 0; zero && i < COPY_CHUNK / sizeof(*buf); i++)
            zero = buf[i] == 0;
        if (zero) {
            if (lseek(out, n, SEEK_CUR) < 0)
                goto werr;
            continue;
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, (const char *)buf + off, (size_t)(n - off));
            if (w < 0)
                goto werr;
            off += w;
        }
    }
    if (n < 0) {
        snprintf(err, errlen, "%s: %s", src, strerror(errno));
        goto out;
    }
    if (ftruncate(out, lseek(out, 0, SEEK_CUR)) < 0 || fdatasync(out) < 0)
        goto werr;
    rc = 0;
    goto out;
werr:
    snprintf(err, errlen, "%s: %s", dst, strerror(errno));
out:
    close(in);
    if (out >= 0)
        close(out);
    free(buf);
    return rc;
}

static void *move_thread(void *arg)
{
    struct lc_move *mv = arg;
    uint64_t one = 1;

    mv->failed = copy_file(mv->ck.state_file, mv->mv.new_state_file, mv->err, sizeof(mv->err));
    if (!mv->failed && mv->ck.ram_file[0])
        mv->failed = copy_file(mv->ck.ram_file, mv->mv.new_ram_file, mv->err, sizeof(mv->err));
    if (write(mv->efd, &one, sizeof(one)) < 0) {
        /* the loop polls mv->running too */
    }
    return NULL;
}

static void move_finished(struct bridge_managed *m);

static void on_move_done(struct bridge_watch *w, uint32_t revents)
{
    struct bridge_managed *m = w->opaque;
    uint64_t v;
    (void)revents;
    if (read(m->move.efd, &v, sizeof(v)) < 0 && errno == EAGAIN)
        return;
    move_finished(m);
}

/*
 * Move @m's checkpoint to tier @to: files copied and fdatasync'ed off the loop, then the
 * journal switches to the copies (checkpoint, reservation, old files listed as garbage) in
 * one transaction, then the old files go. A crash before the switch leaves the old copy
 * valid (the new files are deleted at start); after it, the new one.
 */
static int move_start(struct bridge_managed *m, const struct bridge_db_checkpoint *ck,
                      const struct bridge_tier_config *to, bridge_lc_done_fn done, void *opaque)
{
    struct lc_move *mv = &m->move;
    struct bridge_db *db = &m->vm->br->db;

    if (mv->running)
        return -1;
    memset(&mv->mv, 0, sizeof(mv->mv));
    mv->ck = *ck;
    snprintf(mv->mv.checkpoint, sizeof(mv->mv.checkpoint), "%s", ck->id);
    snprintf(mv->mv.to_tier, sizeof(mv->mv.to_tier), "%s", to->name);
    snprintf(mv->mv.new_state_file, sizeof(mv->mv.new_state_file), "%.400s/%.60s-%.39s.state",
             to->path, ck->vm, ck->id);
    if (ck->ram_file[0])
        snprintf(mv->mv.new_ram_file, sizeof(mv->mv.new_ram_file), "%.400s/%.60s.ram", to->path,
                 ck->vm);
    if (bridge_db_move_put(db, &mv->mv) < 0)
        return -1;
    mv->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (mv->efd < 0)
        goto fail;
    bridge_watch_init(&mv->w, on_move_done, m);
    if (bridge_watch_add(&m->vm->br->loop, &mv->w, mv->efd, EPOLLIN) < 0)
        goto fail;
    mv->done = done;
    mv->opaque = opaque;
    mv->to_fast = to->fast;
    mv->failed = 0;
    mv->running = 1;
    if (pthread_create(&mv->thread, NULL, move_thread, mv) != 0) {
        mv->running = 0;
        bridge_watch_del(&m->vm->br->loop, &mv->w);
        goto fail;
    }
    vms_info(vmname(m->vm), NULL, "tier: moving checkpoint %s from %s to %s", ck->id, ck->tier,
             to->name);
    return 0;
fail:
    if (mv->efd >= 0)
        close(mv->efd);
    mv->efd = -1;
    bridge_db_move_delete(db, ck->id);
    return -1;
}

static void move_finished(struct bridge_managed *m)
{
    struct lc_move *mv = &m->move;
    struct bridge_db *db = &m->vm->br->db;
    struct bridge_db_checkpoint ck;
    json_object *o = json_object_new_object();
    int ok = 0;

    pthread_join(mv->thread, NULL);
    mv->running = 0;
    bridge_watch_del(&m->vm->br->loop, &mv->w);
    close(mv->efd);
    mv->efd = -1;
    if (mv->failed || bridge_db_checkpoint_find(db, mv->ck.id, &ck) != 1 ||
        strcmp(ck.phase, "valid")) {
        vms_err(vmname(m->vm), NULL, "tier: move of %s failed: %s", mv->ck.id,
                mv->failed ? mv->err : "the checkpoint changed meanwhile");
        unlink(mv->mv.new_state_file);
        if (mv->mv.new_ram_file[0])
            unlink(mv->mv.new_ram_file);
        bridge_db_move_delete(db, mv->ck.id);
        json_object_object_add(o, "error",
                               json_object_new_string(mv->failed ? mv->err : "checkpoint changed"));
        goto out;
    }
    lc_crash_point("move-copied");
    if (bridge_db_begin(db) < 0)
        goto out;
    if (bridge_db_garbage_add(db, ck.state_file) < 0 ||
        (ck.ram_file[0] && bridge_db_garbage_add(db, ck.ram_file) < 0))
        goto rollback;
    snprintf(ck.tier, sizeof(ck.tier), "%s", mv->mv.to_tier);
    snprintf(ck.state_file, sizeof(ck.state_file), "%s", mv->mv.new_state_file);
    if (ck.ram_file[0]) {
        snprintf(ck.ram_file, sizeof(ck.ram_file), "%s", mv->mv.new_ram_file);
        lc_ram_fingerprint(ck.ram_file, ck.fp, sizeof(ck.fp));
        snprintf(m->row.ram_file, sizeof(m->row.ram_file), "%s", ck.ram_file);
    }
    snprintf(m->row.res_tier, sizeof(m->row.res_tier), "%s", mv->mv.to_tier);
    if (bridge_db_checkpoint_put(db, &ck) < 0 || bridge_db_managed_put(db, &m->row) < 0 ||
        bridge_db_move_delete(db, ck.id) < 0 || bridge_db_commit(db) < 0)
        goto rollback;
    /* the lock follows the RAM file */
    if (ck.ram_file[0]) {
        if (m->ram_lock_fd >= 0)
            close(m->ram_lock_fd);
        m->ram_lock_fd = lc_ofd_lock(ck.ram_file, 0, 0);
    }
    lc_crash_point("move-switched");
    bridge_db_garbage_collect(db);
    vms_info(vmname(m->vm), NULL, "tier: checkpoint %s now in %s", ck.id, ck.tier);
    json_object_object_add(o, "tier", json_object_new_string(ck.tier));
    ok = 1;
    goto out;
rollback:
    bridge_db_rollback(db);
out:
    lc_reply(mv->done, mv->opaque, ok, o);
    mv->done = NULL;
    if (m->phase == P_WAIT_MOVE)
        m->deadline = 0; /* re-evaluate the waiting operation at the next tick */
}

/* A crash during a move: the journal still names the old copy; the new one goes. */
void lc_move_rollback_at_start(struct bridge_managed *m)
{
    struct bridge_db *db = &m->vm->br->db;
    struct bridge_db_checkpoint ck;
    struct bridge_db_move mv;

    if (bridge_db_checkpoint_current(db, vmname(m->vm), &ck) != 1 ||
        bridge_db_move_get(db, ck.id, &mv) != 1)
        return;
    vms_warn(vmname(m->vm), NULL, "tier: a move of %s to %s was cut short; %s stays in %s", ck.id,
             mv.to_tier, ck.id, ck.tier);
    unlink(mv.new_state_file);
    if (mv.new_ram_file[0] && strcmp(mv.new_ram_file, ck.ram_file))
        unlink(mv.new_ram_file);
    bridge_db_move_delete(db, ck.id);
}

/* Demote the least recently used unpinned checkpoint of fast tier @t. 1 started, 0 none. */
int lc_demote_one(struct bridge *br, const struct bridge_tier_config *t)
{
    struct bridge_db_checkpoint ck;
    struct bridge_vm *owner = NULL;
    const struct bridge_tier_config *slow;

    if (bridge_db_checkpoint_lru(&br->db, t->name, &ck) != 1)
        return 0;
    for (size_t i = 0; i < br->n_vms; i++)
        if (!strcmp(br->vms[i].cfg->name, ck.vm))
            owner = &br->vms[i];
    if (!owner || !owner->mgd || owner->mgd->move.running)
        return 0;
    slow = lc_tier_of(owner, owner->cfg->slow_tier);
    if (!slow || slow == t || lc_tier_free(owner, slow) < (int64_t)owner->mgd->row.res_bytes) {
        vms_warn(ck.vm, NULL, "tier: cannot demote %s: no room in its slow tier", ck.id);
        return 0;
    }
    return move_start(owner->mgd, &ck, slow, NULL, NULL) == 0;
}

/* Any move running on this host? */
int lc_moves_running(struct bridge *br)
{
    for (size_t i = 0; i < br->n_vms; i++)
        if (br->vms[i].mgd && br->vms[i].mgd->move.running)
            return 1;
    return 0;
}

/*
 * A scheduled resume: promote the checkpoint to the fast tier ahead of time (when it was
 * demoted and there is room), then resume at the time given. Checked every tick: cheap,
 * one indexed row per suspended VM once a second.
 */
void lc_schedule_tick(struct bridge_managed *m, double now)
{
    struct bridge_vm *vm = m->vm;
    struct bridge_db_checkpoint ck;
    const struct bridge_tier_config *fast;
    int64_t wall = (int64_t)time(NULL);

    if (strcmp(m->row.run_state, "suspended") || m->op || m->queued || m->move.running ||
        now < m->next_schedule_check)
        return;
    m->next_schedule_check = now + 1;
    if (bridge_db_checkpoint_current(&vm->br->db, vmname(vm), &ck) != 1 || !ck.resume_at ||
        strcmp(ck.phase, "valid"))
        return;
    fast = lc_tier_of(vm, vm->cfg->fast_tier);
    if (fast && strcmp(ck.tier, fast->name) && wall >= ck.resume_at - PROMOTE_LEAD_S &&
        !m->promote_tried && lc_tier_free(vm, fast) >= (int64_t)m->row.res_bytes) {
        m->promote_tried = 1; /* once: a failed promotion leaves the resume to the slow tier */
        vms_info(vmname(vm), NULL, "tier: resume scheduled in %lld s: promoting %s to %s",
                 (long long)(ck.resume_at - wall), ck.id, fast->name);
        move_start(m, &ck, fast, NULL, NULL);
        return;
    }
    if (wall >= ck.resume_at) {
        ck.resume_at = 0;
        bridge_db_checkpoint_put(&vm->br->db, &ck);
        m->promote_tried = 0;
        vms_info(vmname(vm), NULL, "lifecycle: scheduled resume");
        bridge_managed_request(vm, BRIDGE_LC_RESUME, NULL, NULL);
    }
}

int bridge_managed_schedule_resume(struct bridge_vm *vm, int64_t at, char *why, size_t whylen)
{
    struct bridge_db_checkpoint ck;

    if (!vm->mgd || strcmp(vm->mgd->row.run_state, "suspended") ||
        bridge_db_checkpoint_current(&vm->br->db, vmname(vm), &ck) != 1) {
        snprintf(why, whylen, "%s is not suspended", vmname(vm));
        return -1;
    }
    ck.resume_at = at;
    vm->mgd->promote_tried = 0;
    return bridge_db_checkpoint_put(&vm->br->db, &ck);
}

json_object *bridge_managed_tiers(struct bridge *br)
{
    json_object *a = json_object_new_array();

    for (size_t i = 0; i < br->cfg->n_tiers; i++) {
        const struct bridge_tier_config *t = &br->cfg->tiers[i];
        json_object *o = json_object_new_object(), *vms = json_object_new_array();
        int64_t used = bridge_db_tier_reserved(&br->db, t->name, NULL);
        json_object_object_add(o, "name", json_object_new_string(t->name));
        json_object_object_add(o, "path", json_object_new_string(t->path));
        json_object_object_add(o, "class", json_object_new_string(t->fast ? "fast" : "slow"));
        json_object_object_add(o, "shared", json_object_new_boolean(t->shared));
        json_object_object_add(o, "capacity", json_object_new_int64((int64_t)t->capacity));
        json_object_object_add(o, "reserved", json_object_new_int64(used));
        json_object_object_add(o, "free", json_object_new_int64((int64_t)t->capacity - used));
        for (size_t k = 0; k < br->n_vms; k++) {
            struct bridge_managed *m = br->vms[k].mgd;
            if (m && !strcmp(m->row.res_tier, t->name))
                json_object_array_add(vms, json_object_new_string(br->vms[k].cfg->name));
        }
        json_object_object_add(o, "vms", vms);
        json_object_array_add(a, o);
    }
    return a;
}

int bridge_managed_pin(struct bridge_vm *vm, int pin, char *why, size_t whylen)
{
    struct bridge_db_checkpoint ck;

    if (!vm->mgd || bridge_db_checkpoint_current(&vm->br->db, vmname(vm), &ck) != 1) {
        snprintf(why, whylen, "%s has no checkpoint", vmname(vm));
        return -1;
    }
    ck.pinned = pin;
    return bridge_db_checkpoint_put(&vm->br->db, &ck);
}

void bridge_managed_move(struct bridge_vm *vm, int to_fast, bridge_lc_done_fn done, void *opaque)
{
    struct bridge_db_checkpoint ck;
    const struct bridge_tier_config *to;

    if (!vm->mgd || bridge_db_checkpoint_current(&vm->br->db, vmname(vm), &ck) != 1 ||
        strcmp(ck.phase, "valid")) {
        lc_refuse(done, opaque, vm, "%s has no valid checkpoint to move", vmname(vm));
        return;
    }
    to = lc_tier_of(vm, to_fast ? vm->cfg->fast_tier : vm->cfg->slow_tier);
    if (!to || !strcmp(to->name, ck.tier)) {
        lc_refuse(done, opaque, vm, "checkpoint %s is already in %s", ck.id, ck.tier);
        return;
    }
    if (lc_tier_free(vm, to) < (int64_t)vm->mgd->row.res_bytes) {
        lc_refuse(done, opaque, vm, "tier %s has %lld bytes free, %llu needed", to->name,
                  (long long)lc_tier_free(vm, to), (unsigned long long)vm->mgd->row.res_bytes);
        return;
    }
    if (move_start(vm->mgd, &ck, to, done, opaque) < 0)
        lc_refuse(done, opaque, vm, "a move of this VM's checkpoint is already running");
}

int bridge_managed_fits(struct bridge_vm *vm, uint64_t bytes, char *why, size_t whylen)
{
    const struct bridge_vm_config *c = vm->cfg;
    const struct bridge_tier_config *fast = lc_tier_of(vm, c->fast_tier),
                                    *slow = lc_tier_of(vm, c->slow_tier);
    /* where a start may reserve (managed.c's reserve()): rapid = on only the fast tier, off
     * the slow one, best-effort either */
    const struct bridge_tier_config *where[2] = {
        c->rapid != BRIDGE_RAPID_OFF && fast ? fast : (slow ? slow : fast),
        c->rapid == BRIDGE_RAPID_BEST_EFFORT ? slow : NULL};
    uint64_t need = bytes + vm->br->cfg->state_margin;
    int64_t free = -1;

    if (!vm->mgd) {
        snprintf(why, whylen, "%s is not a managed VM", vmname(vm));
        return 0;
    }
    for (int i = 0; i < 2; i++) {
        if (!where[i])
            continue;
        free = lc_tier_free(vm, where[i]); /* this VM's own reservation does not count */
        if (free < 0)
            return -1;
        if ((uint64_t)free >= need)
            return 1;
    }
    snprintf(why, whylen,
             "tier %s cannot hold %llu bytes (RAM %llu + margin %llu): capacity %llu, free "
             "%lld besides this VM",
             where[0] ? where[0]->name : "-", (unsigned long long)need, (unsigned long long)bytes,
             (unsigned long long)vm->br->cfg->state_margin,
             where[0] ? (unsigned long long)where[0]->capacity : 0ull, (long long)free);
    return 0;
}

int bridge_managed_set_memory(struct bridge_vm *vm, uint64_t bytes)
{
    struct bridge_managed *m = vm->mgd;
    uint64_t before;

    if (!m)
        return -1;
    before = m->row.memory_bytes;
    m->row.memory_bytes = bytes == vm->cfg->memory_bytes ? 0 : bytes;
    if (bridge_db_managed_put(&vm->br->db, &m->row) < 0) {
        m->row.memory_bytes = before;
        return -1;
    }
    vms_info(vmname(vm), NULL, "lifecycle: memory %llu bytes from the next start%s",
             (unsigned long long)bytes, m->row.memory_bytes ? "" : " (as configured)");
    return 0;
}

uint64_t bridge_managed_memory(const struct bridge_vm *vm)
{
    return vm->mgd ? lc_memory_bytes(vm) : 0;
}
