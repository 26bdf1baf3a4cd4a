# SPDX-License-Identifier: GPL-2.0-or-later
# guest-helper: vmstate-helperd, the in-guest D-Bus service.
# The core (everything but main) is a convenience library so the component
# tests and the fuzz target drive the same code the daemon runs.
noinst_LTLIBRARIES += guest-helper/libhelpercore.la
guest_helper_libhelpercore_la_SOURCES = \
	guest-helper/helper.c guest-helper/helper.h \
	guest-helper/helper-bus.c guest-helper/helper-bus.h \
	guest-helper/helper-config.c guest-helper/helper-config.h \
	guest-helper/helper-clock.c guest-helper/helper-hooks.c guest-helper/helper-hooks.h
nodist_guest_helper_libhelpercore_la_SOURCES = guest-helper/helper-introspect.c
guest_helper_libhelpercore_la_CFLAGS = $(AM_CFLAGS) $(DBUS_CFLAGS) $(UDEV_CFLAGS) $(INIH_CFLAGS)
guest_helper_libhelpercore_la_LIBADD = common/libvmscommon.la $(DBUS_LIBS) $(UDEV_LIBS) $(INIH_LIBS)
HELPER_CORE_LIBS = guest-helper/libhelpercore.la $(DBUS_LIBS) $(UDEV_LIBS) $(INIH_LIBS)

# The introspection XML is the interface's documentation; compile it in for Introspect.
guest-helper/helper-introspect.c: $(top_srcdir)/guest-helper/org.vmstate.Helper1.xml
	$(AM_V_GEN)$(MKDIR_P) guest-helper && { \
	  echo '/* generated from org.vmstate.Helper1.xml */'; \
	  echo 'extern const char helper_introspect_xml[];'; \
	  echo 'const char helper_introspect_xml[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $<; \
	  echo ';'; } > $@.tmp && mv $@.tmp $@
CLEANFILES += guest-helper/helper-introspect.c

sbin_PROGRAMS += guest-helper/vmstate-helperd
guest_helper_vmstate_helperd_SOURCES = guest-helper/vmstate-helperd.c
guest_helper_vmstate_helperd_CFLAGS = $(AM_CFLAGS) $(DBUS_CFLAGS) $(UDEV_CFLAGS)
guest_helper_vmstate_helperd_LDADD = $(HELPER_CORE_LIBS)

# Installed integration files.
# One interface per installed file: the standard interfaces the introspection data also
# lists (Introspectable, Properties, Peer) are left out of the installed copy.
# org.vmstate.Helper1.Broadcast (the broadcast signals) gets a file of its own.
nodist_dbusinterfaces_DATA = guest-helper/interfaces/org.vmstate.Helper1.xml \
	guest-helper/interfaces/org.vmstate.Helper1.Broadcast.xml
guest-helper/interfaces/org.vmstate.Helper1.xml: $(top_srcdir)/guest-helper/org.vmstate.Helper1.xml
	$(AM_V_GEN)$(MKDIR_P) guest-helper/interfaces && \
	  sed -e '/<interface name="org\.freedesktop\./,/<\/interface>/d' \
	      -e '/<!--$$/{N;/\n      org\.vmstate\.Helper1\.Broadcast:/{:c;N;/<\/interface>/!bc;d}}' \
	      $< >$@.tmp && mv $@.tmp $@
guest-helper/interfaces/org.vmstate.Helper1.Broadcast.xml: $(top_srcdir)/guest-helper/org.vmstate.Helper1.xml
	$(AM_V_GEN)$(MKDIR_P) guest-helper/interfaces && \
	  sed -e '/<interface name="org\.freedesktop\./,/<\/interface>/d' \
	      -e '/<!--$$/{N;/\n      org\.vmstate\.Helper1:/{:c;N;/<\/interface>/!bc;d}}' \
	      $< >$@.tmp && mv $@.tmp $@
CLEANFILES += guest-helper/interfaces/org.vmstate.Helper1.xml \
	guest-helper/interfaces/org.vmstate.Helper1.Broadcast.xml
EXTRA_DIST += guest-helper/org.vmstate.Helper1.xml
dist_dbussystembus_DATA = guest-helper/org.vmstate.Helper1.conf
dist_udevrules_DATA = guest-helper/70-vmstate-helperd.rules
systemdsystemunit_DATA = guest-helper/vmstate-helperd.service
helperexampledir = $(docdir)/examples
dist_helperexample_DATA = guest-helper/helper.conf.example
EXTRA_DIST += guest-helper/README.md
EXTRA_DIST += guest-helper/vmstate-helperd.service.in

guest-helper/vmstate-helperd.service: $(top_srcdir)/guest-helper/vmstate-helperd.service.in Makefile
	$(AM_V_GEN)$(MKDIR_P) guest-helper && $(vms_subst) $< >$@.tmp && mv $@.tmp $@
CLEANFILES += guest-helper/vmstate-helperd.service
# Guests without systemd: a sysvinit script and an OpenRC service, installed with
# --with-initddir=DIR (e.g. /etc/init.d); both use --daemon --pidfile and syslog.
guest-helper/vmstate-helperd.init: $(top_srcdir)/guest-helper/vmstate-helperd.init.in Makefile
	$(AM_V_GEN)$(MKDIR_P) guest-helper && $(vms_subst) $< >$@.tmp && chmod +x $@.tmp && mv $@.tmp $@
guest-helper/vmstate-helperd.openrc: $(top_srcdir)/guest-helper/vmstate-helperd.openrc.in Makefile
	$(AM_V_GEN)$(MKDIR_P) guest-helper && $(vms_subst) $< >$@.tmp && chmod +x $@.tmp && mv $@.tmp $@
noinst_SCRIPTS = guest-helper/vmstate-helperd.init
helperexample_SCRIPTS = guest-helper/vmstate-helperd.openrc
CLEANFILES += guest-helper/vmstate-helperd.init guest-helper/vmstate-helperd.openrc
EXTRA_DIST += guest-helper/vmstate-helperd.init.in guest-helper/vmstate-helperd.openrc.in
install-data-local: install-helper-initd
uninstall-local: uninstall-helper-initd
install-helper-initd: guest-helper/vmstate-helperd.init
	if test '$(initddir)' != no; then \
	  $(MKDIR_P) '$(DESTDIR)$(initddir)' && \
	  $(INSTALL_SCRIPT) guest-helper/vmstate-helperd.init '$(DESTDIR)$(initddir)/vmstate-helperd'; \
	fi
uninstall-helper-initd:
	if test '$(initddir)' != no; then rm -f '$(DESTDIR)$(initddir)/vmstate-helperd'; fi
.PHONY: install-helper-initd uninstall-helper-initd

# Component tests: the real daemon against a private dbus-daemon and a fake bridge.
TESTS += tests/test-helper-bus
check_PROGRAMS += tests/test-helper-bus
HELPER_TEST_CFLAGS = $(TEST_COMMON_CFLAGS) \
	-DHELPERD_PATH='"$(abs_top_builddir)/guest-helper/vmstate-helperd"'
tests_test_helper_bus_SOURCES = tests/test-helper-bus.c \
	tests/test-helper-fixture.c tests/test-helper-fixture.h
tests_test_helper_bus_CFLAGS = $(HELPER_TEST_CFLAGS)
tests_test_helper_bus_LDADD = $(TEST_COMMON_LDADD)
TESTS += tests/test-helper-hooks
check_PROGRAMS += tests/test-helper-hooks
tests_test_helper_hooks_SOURCES = tests/test-helper-hooks.c \
	tests/test-helper-fixture.c tests/test-helper-fixture.h
tests_test_helper_hooks_CFLAGS = $(HELPER_TEST_CFLAGS) -I$(top_srcdir)/guest-helper $(UDEV_CFLAGS)
tests_test_helper_hooks_LDADD = $(HELPER_CORE_LIBS) $(TEST_COMMON_LDADD)
TESTS += tests/test-helper-config
check_PROGRAMS += tests/test-helper-config
tests_test_helper_config_SOURCES = tests/test-helper-config.c
tests_test_helper_config_CFLAGS = $(TEST_COMMON_CFLAGS) -I$(top_srcdir)/guest-helper
tests_test_helper_config_LDADD = $(HELPER_CORE_LIBS) $(TEST_COMMON_LDADD)

# Fuzz target over the helper's port-B input path (see fuzz/local.mk for the pattern).
FUZZ_TARGETS += fuzz/fuzz-helper-events
fuzz_fuzz_helper_events_SOURCES = fuzz/fuzz-helper-events.c
fuzz_fuzz_helper_events_CFLAGS = $(AM_CFLAGS) -I$(top_srcdir)/guest-helper $(DBUS_CFLAGS) $(UDEV_CFLAGS)
fuzz_fuzz_helper_events_LDADD = $(HELPER_CORE_LIBS) $(FUZZ_LDADD)
if !ENABLE_FUZZING
fuzz_fuzz_helper_events_SOURCES += fuzz/standalone.c
endif
fuzz_fuzz_helper_events_LDFLAGS = $(AM_LDFLAGS) $(FUZZ_LINK_FLAGS)
EXTRA_DIST += fuzz/corpus/helper-events

# Fuzz target over both INI parsers (bridge and helper config; first byte selects).
FUZZ_TARGETS += fuzz/fuzz-config
fuzz_fuzz_config_SOURCES = fuzz/fuzz-config.c
fuzz_fuzz_config_CFLAGS = $(AM_CFLAGS) -I$(top_srcdir)/guest-helper $(BRIDGE_ROOMS_CPPFLAGS)
fuzz_fuzz_config_LDADD = $(HELPER_CORE_LIBS) host-bridge/libbridge.la $(FUZZ_LDADD)
if !ENABLE_FUZZING
fuzz_fuzz_config_SOURCES += fuzz/standalone.c
endif
fuzz_fuzz_config_LDFLAGS = $(AM_LDFLAGS) $(FUZZ_LINK_FLAGS)
EXTRA_DIST += fuzz/corpus/config
dist_man8_MANS = guest-helper/vmstate-helperd.8

# The test guest (tests/guest image builder): the daemon, its bus policy, and the test
# configuration + start script from tests/system/guest.
GUEST_IMAGE_ARGS += \
	--add $(abs_top_builddir)/guest-helper/vmstate-helperd:/usr/sbin/vmstate-helperd \
	--add $(abs_top_srcdir)/guest-helper/org.vmstate.Helper1.conf:/etc/dbus-1/system.d/org.vmstate.Helper1.conf \
	--add $(abs_top_srcdir)/tests/system/guest/helper.conf:/etc/vmstate/helper.conf \
	--add $(abs_top_srcdir)/tests/system/guest/50-vmstate-helper:/etc/vmstate/init.d/50-vmstate-helper
GUEST_IMAGE_DEPS += guest-helper/vmstate-helperd \
	$(top_srcdir)/guest-helper/org.vmstate.Helper1.conf \
	$(top_srcdir)/tests/system/guest/helper.conf $(top_srcdir)/tests/system/guest/50-vmstate-helper
