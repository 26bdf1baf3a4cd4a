# SPDX-License-Identifier: GPL-2.0-or-later
# Shared transport: framing, the one protocol definition, the channel, logging.
# Linked by both daemons, libvmstate's tools, the tests and the fuzz targets.
noinst_LTLIBRARIES += common/libvmscommon.la
common_libvmscommon_la_SOURCES = \
	common/vms-wire.c common/vms-wire.h \
	common/vms-proto.c common/vms-proto.h common/vms-dbus.c common/vms-dbus.h \
	common/vms-marshal.c common/vms-marshal.h \
	common/vms-channel.c common/vms-channel.h \
	common/vms-dedup.c common/vms-dedup.h \
	common/vms-log.c common/vms-log.h \
	common/vms-daemon.c common/vms-daemon.h
common_libvmscommon_la_CFLAGS = $(AM_CFLAGS) $(DBUS_CFLAGS)
common_libvmscommon_la_LIBADD = $(DBUS_LIBS)
