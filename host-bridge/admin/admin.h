/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * admin.h — vmstate-admin's commands that live in their own files.
 */
#ifndef BRIDGE_ADMIN_H
#define BRIDGE_ADMIN_H

/*
 * libvirt-setup DOMAIN [--uri URI] [--dir DIR] [--apply] (@argv[0] is the command):
 * print the domain XML with the bridge's two port channels, or define it. Exit code.
 */
int admin_libvirt_setup(int argc, char **argv);

#endif
