# SPDX-License-Identifier: GPL-2.0-or-later
# libvmstate: the C client library (public API in vmstate.h), and vmstatectl on top of it.
lib_LTLIBRARIES += libvmstate/libvmstate.la
include_HEADERS += libvmstate/vmstate.h
libvmstate_libvmstate_la_SOURCES = libvmstate/vmstate.c libvmstate/vmstate.h
libvmstate_libvmstate_la_CFLAGS = $(AM_CFLAGS) $(DBUS_CFLAGS)
# common/ is linked in for the validators; only vmstate_* is exported.
libvmstate_libvmstate_la_LIBADD = common/libvmscommon.la $(DBUS_LIBS)
libvmstate_libvmstate_la_LDFLAGS = $(AM_LDFLAGS) -version-info $(LIBVMSTATE_LT_VERSION) \
	-export-symbols-regex '^vmstate_'
pkgconfig_DATA += libvmstate/libvmstate.pc
DISTCLEANFILES += libvmstate/libvmstate.pc
EXTRA_DIST += libvmstate/libvmstate.pc.in

bin_PROGRAMS += libvmstate/vmstatectl
libvmstate_vmstatectl_SOURCES = libvmstate/vmstatectl.c
libvmstate_vmstatectl_CFLAGS = $(AM_CFLAGS) $(JSONC_CFLAGS)
libvmstate_vmstatectl_LDADD = libvmstate/libvmstate.la $(JSONC_LIBS)
dist_man1_MANS = libvmstate/vmstatectl.1

# Fuzz target over the library's reading of the helper's signals (see fuzz/local.mk).
FUZZ_TARGETS += fuzz/fuzz-app-signal
fuzz_fuzz_app_signal_SOURCES = fuzz/fuzz-app-signal.c
fuzz_fuzz_app_signal_CFLAGS = $(AM_CFLAGS) -I$(top_srcdir)/libvmstate $(DBUS_CFLAGS)
fuzz_fuzz_app_signal_LDADD = $(FUZZ_LDADD)
if !ENABLE_FUZZING
fuzz_fuzz_app_signal_SOURCES += fuzz/standalone.c
endif
fuzz_fuzz_app_signal_LDFLAGS = $(AM_LDFLAGS) $(FUZZ_LINK_FLAGS)
EXTRA_DIST += fuzz/corpus/app-signal

# libvmstate tests: the library against the real helper and a fake bridge.
TESTS += tests/test-libvmstate
check_PROGRAMS += tests/test-libvmstate
tests_test_libvmstate_SOURCES = tests/test-libvmstate.c \
	tests/test-helper-fixture.c tests/test-helper-fixture.h
tests_test_libvmstate_CFLAGS = $(HELPER_TEST_CFLAGS)
tests_test_libvmstate_LDADD = libvmstate/libvmstate.la $(TEST_COMMON_LDADD)

# The test guest runs vmstatectl from the build tree: a copy linked -no-install (a real
# binary with the uninstalled libvmstate in its RUNPATH, not a libtool wrapper script).
noinst_PROGRAMS += libvmstate/vmstatectl-guest
libvmstate_vmstatectl_guest_SOURCES = libvmstate/vmstatectl.c
libvmstate_vmstatectl_guest_CFLAGS = $(AM_CFLAGS) $(JSONC_CFLAGS)
libvmstate_vmstatectl_guest_LDADD = libvmstate/libvmstate.la $(JSONC_LIBS)
libvmstate_vmstatectl_guest_LDFLAGS = $(AM_LDFLAGS) -no-install
GUEST_IMAGE_ARGS += --add $(abs_top_builddir)/libvmstate/vmstatectl-guest:/usr/bin/vmstatectl
GUEST_IMAGE_DEPS += libvmstate/vmstatectl-guest
