# SPDX-License-Identifier: GPL-2.0-or-later
# tests/clock: guest clock fix-up and pre-save/post-restore hooks on a real VM (issue 8).
#
#   make check-clock-system   image + vmstate-bridged + vmstate-helperd in the guest,
#                             acceptance 1-4 (~1-2 min, TCG); exit 77 without QEMU
# CLOCK_SYSTEM_FLAGS: e.g. --keep --workdir DIR
noinst_PROGRAMS += tests/clock/vms-clock-tool
tests_clock_vms_clock_tool_SOURCES = tests/clock/vms-clock-tool.c
tests_clock_vms_clock_tool_CFLAGS = $(AM_CFLAGS) $(DBUS_CFLAGS)
tests_clock_vms_clock_tool_LDADD = $(DBUS_LIBS)
# in the shared test image too: suites read the guest's CLOCK_REALTIME with it
GUEST_IMAGE_ARGS += --add $(abs_top_builddir)/tests/clock/vms-clock-tool:/usr/bin/vms-clock-tool
GUEST_IMAGE_DEPS += tests/clock/vms-clock-tool

check-clock-system: host-bridge/vmstate-bridged host-bridge/vmstate-admin \
		guest-helper/vmstate-helperd tests/clock/vms-clock-tool
	top_srcdir='$(top_srcdir)' top_builddir='$(top_builddir)' $(top_srcdir)/tests/clock/run-system.sh
SYSTEM_CHECKS += check-clock-system
.PHONY: check-clock-system
# the same suite with the VM a libvirt domain (issue 17; ~1.5 min: a private libvirtd, the
# image is shared with check-clock-system)
if HAVE_LIBVIRT
check-clock-system-libvirt: host-bridge/vmstate-bridged $(BRIDGE_MODULES) host-bridge/vmstate-admin \
		guest-helper/vmstate-helperd tests/clock/vms-clock-tool
	top_srcdir='$(top_srcdir)' top_builddir='$(top_builddir)' $(top_srcdir)/tests/libvirt/run-suite.sh \
		$(top_srcdir)/tests/clock/run-system.sh
SYSTEM_CHECKS += check-clock-system-libvirt
endif
.PHONY: check-clock-system-libvirt
dist_noinst_SCRIPTS += tests/clock/run-system.sh
EXTRA_DIST += tests/clock/test-clock-system.py tests/clock/guest tests/clock/README.md
clean-local: clean-clock-image
clean-clock-image:
	rm -rf tests/clock/image
.PHONY: clean-clock-image
