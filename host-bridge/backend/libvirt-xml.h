/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libvirt-xml.h — what the bridge reads from (and adds to) a libvirt domain XML.
 *
 * Not a general XML parser: libvirt writes its own XML in one regular shape
 * (one element per tag, attributes in single quotes), and only a few
 * elements matter: the <channel>s carrying the two guest ports, the
 * <disk>s' target and alias (I/O-error events name a disk by alias) and
 * whether the guest has ACPI (libvirt-setup warns: its clock).
 */
#ifndef BRIDGE_LIBVIRT_XML_H
#define BRIDGE_LIBVIRT_XML_H

#include <stddef.h>

#include "bridge-config.h"

#define BRIDGE_LIBVIRT_DISKS_MAX 16

struct bridge_libvirt_xml {
    /* the unix sockets of the request and event channels ("" if absent) */
    char port_a[BRIDGE_PATH_MAX];
    char port_b[BRIDGE_PATH_MAX];
    int port_a_connect, port_b_connect;     /* source mode='connect' (QEMU dials) */
    int port_a_reconnect, port_b_reconnect; /* <reconnect enabled='yes'> */
    unsigned n_disks;
    char disk_target[BRIDGE_LIBVIRT_DISKS_MAX][BRIDGE_NODE_NAME_MAX];
    char disk_alias[BRIDGE_LIBVIRT_DISKS_MAX][BRIDGE_NODE_NAME_MAX];
    int acpi; /* <features><acpi/>: without it libvirt runs QEMU with -no-acpi */
};

/* Read @xml into @out (zeroed first). Values with XML entities are ignored. */
void bridge_libvirt_xml_parse(const char *xml, struct bridge_libvirt_xml *out);

/* The target (e.g. "vda") of the disk with @alias, or NULL. */
const char *bridge_libvirt_xml_disk_target(const struct bridge_libvirt_xml *x, const char *alias);

/*
 * @xml with the two port channels replaced (or added before </devices>): unix
 * sockets @port_a and @port_b, source mode='connect' with reconnect, so QEMU
 * dials the bridge. Everything else is kept byte for byte. Returns a
 * malloc'd string, or NULL (no </devices>, paths with XML metacharacters).
 */
char *bridge_libvirt_xml_with_ports(const char *xml, const char *port_a, const char *port_b);

#endif
