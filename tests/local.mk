# SPDX-License-Identifier: GPL-2.0-or-later
# Unit tests (criterion) for the shared protocol code.
TESTS += tests/test-wire tests/test-proto
check_PROGRAMS += tests/test-wire tests/test-proto
TEST_COMMON_LDADD = common/libvmscommon.la $(CRITERION_LIBS) $(DBUS_LIBS)
TEST_COMMON_CFLAGS = $(AM_CFLAGS) $(CRITERION_CFLAGS) $(DBUS_CFLAGS)
tests_test_wire_SOURCES = tests/test-wire.c
tests_test_wire_CFLAGS = $(TEST_COMMON_CFLAGS)
tests_test_wire_LDADD = $(TEST_COMMON_LDADD)
tests_test_proto_SOURCES = tests/test-proto.c tests/test-log-capture.h tests/vms-dbus-reference.h
tests_test_proto_CFLAGS = $(TEST_COMMON_CFLAGS)
tests_test_proto_LDADD = $(TEST_COMMON_LDADD)
# Packaging: a default configure installs integration files where the system reads them
# (pkg-config's directories), and every source file git tracks carries an SPDX line.
TESTS += tests/install/test-install-paths.sh tests/install/test-spdx.sh tests/install/test-cli.sh tests/install/test-dbus-docs.sh
dist_noinst_SCRIPTS += tests/install/test-install-paths.sh tests/install/test-spdx.sh tests/install/test-cli.sh tests/install/test-dbus-docs.sh
# Debian packages (`make deb`: dpkg-buildpackage -us -uc, lintian clean of errors) and the
# acceptance test that installs them into a fresh Debian 12 root and follows the admin guide
# (`make check-debs`; needs root, debootstrap and the Debian mirror; see tests/packaging/).
EXTRA_DIST += debian tests/packaging/deb-guide-test.py
dist_noinst_SCRIPTS += tests/packaging/build-debs.sh tests/packaging/check-debs.sh
deb:
	DEB_BUILD_OPTIONS='$(DEB_BUILD_OPTIONS)' $(top_srcdir)/tests/packaging/build-debs.sh $(top_srcdir) debs
check-debs: deb guest-image
	top_srcdir='$(top_srcdir)' top_builddir='$(top_builddir)' $(top_srcdir)/tests/packaging/check-debs.sh debs
.PHONY: deb check-debs
