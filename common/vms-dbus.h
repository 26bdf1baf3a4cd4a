/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vms-dbus.h — the helper's D-Bus names, one definition for both ends: the helper
 * (guest-helper/helper-bus.c), libvmstate and the tests. The interface itself is documented
 * in guest-helper/org.vmstate.Helper1.xml. Also how both ends build their messages
 * (vms_dbus_address, below).
 */
#ifndef VMS_DBUS_H
#define VMS_DBUS_H

#include <dbus/dbus.h>

#define VMS_DBUS_NAME  "org.vmstate.Helper1"
#define VMS_DBUS_PATH  "/org/vmstate/Helper1"
#define VMS_DBUS_IFACE "org.vmstate.Helper1"
/* Broadcast signals (Restored, PrepareSave, ClockCorrected, Notice) have their own
 * interface, so that a listener's match rule for them is never tested against the unicast
 * Completed signals of a fan-out (libvmstate's add_matches). */
#define VMS_DBUS_BROADCAST_IFACE VMS_DBUS_IFACE ".Broadcast"

/* The helper's error names (a method call's D-Bus error reply) */
#define VMS_DBUS_ERR_PERMISSION  VMS_DBUS_IFACE ".Error.Permission"
#define VMS_DBUS_ERR_UNAVAILABLE VMS_DBUS_IFACE ".Error.Unavailable"
#define VMS_DBUS_ERR_BUSY        VMS_DBUS_IFACE ".Error.Busy"
#define VMS_DBUS_ERR_INVALID     VMS_DBUS_IFACE ".Error.InvalidArgs"
#define VMS_DBUS_ERR_LIMIT       VMS_DBUS_IFACE ".Error.LimitReached"
#define VMS_DBUS_ERR_INTERNAL    VMS_DBUS_IFACE ".Error.Internal"
#define VMS_DBUS_ERR_NOT_FOUND   VMS_DBUS_IFACE ".Error.NotFound"

/*
 * A message built body first: dbus_message_new(type), append the arguments, then
 * vms_dbus_address() it (a NULL @destination or @interface is left unset).
 *
 * Why: libdbus rewrites the header's signature field after every top-level argument
 * appended, and each rewrite walks and re-marshals the header fields already there. Built
 * after path, interface and member, a ten-argument Completed spent more instructions on
 * those rewrites than on everything else it holds; with the signature as the header's only
 * field they cost half as much (callgrind, bench/RESULTS.md §14). The message on the bus is
 * the same but for the order of its header fields, which D-Bus leaves free.
 *
 * Returns TRUE, or FALSE when out of memory (@m is then to be dropped).
 */
dbus_bool_t vms_dbus_address(DBusMessage *m, const char *destination, const char *path,
                             const char *interface, const char *member);

#endif
