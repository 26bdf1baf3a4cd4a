/* SPDX-License-Identifier: GPL-2.0-or-later */
/* vms-dbus.c — D-Bus message helpers shared by the helper and libvmstate (vms-dbus.h). */
#include "config.h"

#include "vms-dbus.h"

dbus_bool_t vms_dbus_address(DBusMessage *m, const char *destination, const char *path,
                             const char *interface, const char *member)
{
    return (!destination || dbus_message_set_destination(m, destination)) &&
           dbus_message_set_path(m, path) &&
           (!interface || dbus_message_set_interface(m, interface)) &&
           dbus_message_set_member(m, member);
}
