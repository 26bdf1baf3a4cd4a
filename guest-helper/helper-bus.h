/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * helper-bus.h — the org.vmstate.Helper1 D-Bus object.
 *
 * guest-helper/org.vmstate.Helper1.xml is the interface's documentation and
 * is compiled in (helper-introspect.c) to answer Introspect.
 */
#ifndef HELPER_BUS_H
#define HELPER_BUS_H

#include <dbus/dbus.h>

#include "helper.h"
#include "vms-dbus.h"

extern const char helper_introspect_xml[];

/*
 * Connect to @address (NULL: the system bus), own VMS_DBUS_NAME, and
 * export the object. Returns 0 or -1 (logged).
 */
int helper_bus_open(struct helper *h, const char *address);
void helper_bus_close(struct helper *h);

/* Emit Completed for @ev to each of the @n listener connections @owners (unicast: app data
 * is for its app's listeners only). */
void helper_bus_emit_completed(struct helper *h, const char *const *owners, unsigned n,
                               const struct vms_msg *ev);
/* Emit @member (StateSaved or StateDeleted)(state_id, label, creator app id, parent id, epoch)
 * for @ev to each of the @n connections @owners; never any app data. */
void helper_bus_emit_state_change(struct helper *h, const char *member, const char *const *owners,
                                  unsigned n, const struct vms_msg *ev);
/* Broadcast Restored(state_id, epoch). */
void helper_bus_emit_restored(struct helper *h, const char *state_id, uint64_t epoch);
/* Broadcast ClockCorrected(seconds, nanoseconds, reason): the guest clock was stepped. */
void helper_bus_emit_clock_corrected(struct helper *h, int64_t correction_ns, const char *reason);
/* Broadcast PrepareSave(request_id, label): a save starts soon; Inhibit may veto it. */
void helper_bus_emit_prepare_save(struct helper *h, const char *request_id, const char *label);
/* Broadcast Notice(reason, message): host information (e.g. a storage-error pause ended). */
void helper_bus_emit_notice(struct helper *h, const char *reason, const char *message);
/* Broadcast PropertiesChanged for @property ("BridgeConnected", "States" or "Epoch"). */
void helper_bus_property_changed(struct helper *h, const char *property);

#endif
