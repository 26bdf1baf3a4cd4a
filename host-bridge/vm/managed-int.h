/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * managed-int.h — what the parts of the managed-VM code share (not an API): the per-VM
 * state, and the functions managed.c (the state machine), qemu-proc.c (the QEMU process,
 * its files and locks) and tier.c (tiers: reservations, moves, scheduled resumes) call
 * in each other.
 */
#ifndef BRIDGE_MANAGED_INT_H
#define BRIDGE_MANAGED_INT_H

#include <json-c/json.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "bridge.h"
#include "db-lifecycle.h"
#include "managed.h"

#define PORTS_WAIT_S       10.0 /* resume: wait this long for both ports before cont */
#define START_READY_S      30.0 /* start/resume: QMP must answer within this */
#define QUIT_GRACE_S       5.0  /* after quit, SIGKILL */
#define IDLE_SAMPLE_S      2.0
#define ARGV_MAX           512
#define QMP_FIRST_RETRY_MS 10
#define FD_RAM             3
#define FD_CONSOLE         4
#define FD_LEASE           5 /* HA VMs: the cluster lease (cluster/lease.h) */

#define PROMOTE_LEAD_S 30 /* a scheduled resume promotes its checkpoint this long ahead */

enum lc_phase {
    P_IDLE = 0,
    P_WAIT_READY, /* QEMU spawned, waiting for QMP */
    P_CHECKPOINT, /* suspend: writing the checkpoint */
    P_QUIT,       /* waiting for QEMU to exit (suspend or stop) */
    P_POWERDOWN,  /* stop: ACPI powerdown sent */
    P_LOADING,    /* resume: loading the checkpoint */
    P_PORTS,      /* resume: waiting for the ports before cont */
    P_CONT,       /* resume: cont sent */
    P_WAIT_MOVE,  /* waiting for a tier move (demotion to make room, or of this checkpoint) */
    P_WAIT_IDLE,  /* suspend: waiting for the guest request in flight to finish */
    P_PREPARE,    /* suspend: guest apps are preparing (Prepare sent) */
};

struct lc_move {
    pthread_t thread;
    int running, failed;
    int efd; /* the copy thread's "done" */
    struct bridge_watch w;
    struct bridge_db_checkpoint ck;
    struct bridge_db_move mv;
    char err[160];
    int to_fast;
    bridge_lc_done_fn done;
    void *opaque;
};

struct bridge_managed {
    struct bridge_vm *vm;
    struct bridge_db_managed row;
    int pidfd;
    int pid_polled; /* no pidfd (ENOSYS: valgrind, a kernel before 5.3): vm_tick polls */
    struct bridge_watch pidw;
    int ram_lock_fd; /* the bridge's OFD lock on the RAM file (-1 when QEMU holds it) */
    int console_fd;  /* listening console socket, handed to every QEMU */
    int lease_fd;    /* HA start: the cluster's lease fd, inherited by QEMU (not owned) */
    char loadvm[64]; /* HA start: the snapshot to boot from ("" = a cold boot) */
    char incoming[BRIDGE_PATH_MAX]; /* HA start: a migration stream to load ("" = none) */
    struct bridge_watch conw;
    /* the operation in progress */
    enum bridge_lc_op op;
    enum lc_phase phase;
    double deadline, t0, t_mark;
    bridge_lc_done_fn done;
    void *opaque;
    enum bridge_lc_op queued; /* waiting in the host-wide queue */
    double queued_at;
    bridge_lc_done_fn queued_done;
    void *queued_opaque;
    struct bridge_db_checkpoint ck; /* suspend/resume: the checkpoint */
    int state_fd;
    int cont_on_ready, quit_on_ready; /* adoption: finish what the last bridge left */
    int hold_cont;                    /* a group's resume: stay paused after the load */
    double quit_sent;
    struct lc_move move;
    /* idle auto-suspend */
    double idle_since, next_sample;
    unsigned long long cpu_ticks;
    int console_client;
    /* scheduled resume */
    double next_schedule_check;
    int promote_tried;
    /* libvirt (engine_runs): the domain's state is asked once the backend is connected,
     * to re-adopt it after a bridge restart; stop/suspend poll it in case an event is lost */
    int adopt_pending;
    int state_asked;
    double next_state_poll;
};

/* The hypervisor's manager runs the VM (libvirt, backend.h vm_create): the bridge asks it
 * to boot, save and restore the domain instead of spawning QEMU, and has no pid. */
static inline int engine_runs(const struct bridge_managed *m)
{
    return m->vm->ops->vm_create != NULL;
}

static inline const char *vmname(const struct bridge_vm *vm)
{
    return vm->cfg->name;
}

/* managed.c */
double lc_mono(void);
void lc_crash_point(const char *name);
/* Answer @done (or drop @o when @done is NULL). */
void lc_reply(bridge_lc_done_fn done, void *opaque, int ok, json_object *o);
/* Answer @done with {"error": message} and log it. */
void lc_refuse(bridge_lc_done_fn done, void *opaque, struct bridge_vm *vm, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * What a bridge start does with a managed VM libvirt runs (engine_runs), from the journal's
 * @run_state, whether a checkpoint is current (@have_ck) and libvirt's state of the domain
 * as backend.h's run_status ("shutdown": no QEMU; "finish-migrate": libvirtd is saving it;
 * "running"; anything else: QEMU is there, the guest paused). No I/O.
 */
enum lc_adopt {
    LC_ADOPT_KEEP,          /* stopped and shut off: nothing to do */
    LC_ADOPT_RUNNING,       /* it runs: journal running */
    LC_ADOPT_GONE,          /* it ended while no bridge ran: stopped */
    LC_ADOPT_FINISH_STOP,   /* a stop was under way: power it down again */
    LC_ADOPT_SAVED,         /* its save completed: suspended, the checkpoint valid */
    LC_ADOPT_SAVING,        /* libvirtd is still saving it: ask again */
    LC_ADOPT_NOT_SAVED,     /* the save did not happen: discard the checkpoint, run on */
    LC_ADOPT_FINISH_RESUME, /* restored, paused: wait for the ports, consume, cont */
    LC_ADOPT_RESUMED,       /* restored and running: consume the checkpoint */
    LC_ADOPT_FOREIGN,       /* runs though the journal says it does not: adopted as running */
    LC_ADOPT_LOST,          /* left mid-operation with no usable checkpoint: stopped */
};
enum lc_adopt lc_adopt_plan(const char *run_state, int have_ck, const char *domain_status);

/* qemu-proc.c */
/* OFD write lock on @path (@create: also create and fallocate it to @size). The fd, or -1
 * (errno EAGAIN: someone holds it). */
int lc_ofd_lock(const char *path, int create, uint64_t size);
/* Identity, size and change times of a RAM file, as text. 0 or -1. */
int lc_ram_fingerprint(const char *path, char *out, size_t len);
/* When @pid started (/proc/PID/stat field 22), 0 if gone or a zombie; @cpu_ticks: its
 * utime + stime when not NULL. */
long long lc_proc_start_time(pid_t pid, unsigned long long *cpu_ticks);
/* Start @m's QEMU detached (a resume: @incoming); the pid, or -1. */
pid_t lc_spawn_qemu(struct bridge_managed *m, int incoming);

/* tier.c */
const struct bridge_tier_config *lc_tier_of(struct bridge_vm *vm, const char *name);
/* @vm's guest RAM: as an offline set-memory left it (journaled), else as configured. */
uint64_t lc_memory_bytes(const struct bridge_vm *vm);
/* RAM + state margin: what @vm reserves. */
uint64_t lc_need_bytes(struct bridge_vm *vm);
/* Capacity minus every other VM's reservation in @t (-1 on a journal error). */
int64_t lc_tier_free(struct bridge_vm *vm, const struct bridge_tier_config *t);
/* Demote fast tier @t's least recently used unpinned checkpoint: 1 started, 0 none. */
int lc_demote_one(struct bridge *br, const struct bridge_tier_config *t);
/* Any tier move running on this host? */
int lc_moves_running(struct bridge *br);
/* Bridge start: a move cut short by a crash is rolled back (the old copy stays). */
void lc_move_rollback_at_start(struct bridge_managed *m);
/* A scheduled resume: promote ahead of time, resume at the time. */
void lc_schedule_tick(struct bridge_managed *m, double now);

#endif
