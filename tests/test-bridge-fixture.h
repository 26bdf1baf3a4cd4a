/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * test-bridge-fixture.h — the bridge unit tests' shared fixture: a real
 * SQLite file in a temporary directory, a fake backend whose operations the
 * test completes by hand, two configured VMs (vm1, vm2) whose port B is a
 * socketpair the test decodes, and principals "app" (all rights on vm1 and
 * vm2) and "saver" (save on vm1), both with secret "s3cret".
 */
#ifndef TEST_BRIDGE_FIXTURE_H
#define TEST_BRIDGE_FIXTURE_H

#include <criterion/criterion.h>

#include "auth.h"
#include "bridge.h"
#include "queue.h"
#include "vms-log.h"

/* The fake backend: the last operation asked for, and how to finish it. */
struct bridge_backend {
    bridge_backend_done_fn done;
    void *opaque;
    enum vms_op last_op;
    char last_tag[VMS_STR_MAX + 1];
    int calls, ready;
    /* list_snapshots, kept apart: it runs beside the other operations */
    bridge_backend_done_fn list_done;
    void *list_opaque;
    int lists;
    /* restore_paused and cont: the guest is held paused in between; last_paused: it was when
     * the last operation was asked for */
    int paused, last_paused, paused_loads;
};
extern struct bridge_backend fake;
/* Complete the pending backend operation with @st. */
void fake_finish(enum vms_status st);
/* Answer the pending list_snapshots with @names (0 if none was pending, else 1). */
int fake_list_finish(const char *const *names, unsigned n);
/* Complete a pending recover as the hypervisor would for a command it never received. */
void fake_finish_never_started(void);

extern char dir[256];
extern struct bridge_config cfg;
extern struct bridge br;
extern struct bridge_vm vm1, vm2;
extern int peer1, peer2;
extern struct vms_channel in1, in2;

#define MAXMSG 64
extern struct vms_msg got[MAXMSG]; /* what drain() read from a port B */
extern int n_got;
extern int id_counter;

/* Build everything from @conf_text (INI with [vm vm1] and [vm vm2]); criterion .init. */
void bfx_setup(const char *conf_text);
void bfx_teardown(void);

/* Give @vm's port B a socketpair; the test reads the far end through @in. */
void attach_peer(struct bridge_vm *vm, int *peer, struct vms_channel *in);
void clear_got(void);
/* Read everything the bridge sent on a port B into got[]; returns how many. */
int drain(struct vms_channel *in);
/* The guest uid the next request()s name (-1: none, the default). */
extern int64_t request_uid;
/* Send a Request into @vm (a fresh id in @id unless @id is set). */
void request(struct bridge_vm *vm, char id[VMS_REQUEST_ID_LEN + 1], const char *op,
             const char *principal, const char *secret, const char *state, const char *data);
/* The first message of type @t (and request id @id, if given) in got[]. */
const struct vms_msg *find(enum vms_msg_type t, const char *id);
/* What answered request @id among the messages got: its Reply, or for a read-only request
 * answered at once (no Reply) its Event. NULL if neither. */
const struct vms_msg *answer_of(const char *id);
/* How many messages of type @t are in got[]. */
int count_got(enum vms_msg_type t);
/* Send @vm an Ack on port A, as the guest does, for the event (@request_id, @epoch, @seq). */
void send_ack(struct bridge_vm *vm, const char *request_id, uint64_t epoch, uint64_t seq);
/* Acknowledge event @ev (one that drain() read) to @vm. */
void ack(struct bridge_vm *vm, const struct vms_msg *ev);
/* Send @vm a Hello (version 1) with @nonce, announcing @caps, as a guest does. */
void send_hello(struct bridge_vm *vm, uint64_t nonce, uint32_t caps);
/* The same with nonce 42. */
void hello_caps(struct bridge_vm *vm, uint32_t caps);

#endif
