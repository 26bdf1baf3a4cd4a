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
clean-local: clean-ioerror-image
clean-ioerror-image:
	rm -rf tests/ioerror/image
.PHONY: clean-ioerror-image
