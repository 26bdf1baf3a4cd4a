# SPDX-License-Identifier: GPL-2.0-or-later
# I/O-error auto-resume (issue 6): unit tests of the policy and real-QEMU system tests.
TESTS += tests/test-bridge-ioerror
check_PROGRAMS += tests/test-bridge-ioerror
tests_test_bridge_ioerror_SOURCES = tests/test-bridge-ioerror.c
tests_test_bridge_ioerror_CFLAGS = $(AM_CFLAGS) $(CRITERION_CFLAGS) $(BRIDGE_DEP_CFLAGS)
tests_test_bridge_ioerror_LDADD = host-bridge/libbridge.la $(CRITERION_LIBS)

# Acceptance 1-5 of issue 6: four TCG guests, qemu-nbd, blkdebug, a tmpfs (root), ~50 s.
# `make check-ioerror-system` (exit 77 = skipped without QEMU / qemu-nbd).
SYSTEM_CHECKS += check-ioerror-system
dist_noinst_SCRIPTS += tests/ioerror/run-system.sh
EXTRA_DIST += tests/ioerror/test-ioerror-system.py bench/ioerror-resume.py
check-ioerror-system: host-bridge/vmstate-bridged
	top_srcdir='$(top_srcdir)' top_builddir='$(top_builddir)' $(top_srcdir)/tests/ioerror/run-system.sh
.PHONY: check-ioerror-system
# the same suite with each VM a libvirt domain (issue 17): its extra disks are libvirt NBD
# disks (qemu-nbd, and qemu-storage-daemon serving the blkdebug and tmpfs nodes)
if HAVE_LIBVIRT
check-ioerror-system-libvirt: host-bridge/vmstate-bridged $(BRIDGE_MODULES) host-bridge/vmstate-admin
	top_srcdir='$(top_srcdir)' top_builddir='$(top_builddir)' $(top_srcdir)/tests/libvirt/run-suite.sh \
		$(top_srcdir)/tests/ioerror/run-system.sh
SYSTEM_CHECKS += check-ioerror-system-libvirt
endif
.PHONY: check-ioerror-system-libvirt
clean-local: clean-ioerror-image
clean-ioerror-image:
	rm -rf tests/ioerror/image
.PHONY: clean-ioerror-image
