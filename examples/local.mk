# SPDX-License-Identifier: GPL-2.0-or-later
# examples: a C program using libvmstate across a restore, and a busctl script.
noinst_PROGRAMS += examples/vmstate-example
examples_vmstate_example_SOURCES = examples/vmstate-example.c
examples_vmstate_example_CFLAGS = $(AM_CFLAGS)
examples_vmstate_example_LDADD = libvmstate/libvmstate.la
dist_noinst_SCRIPTS += examples/vmstate-script.sh

# vmstatectl, the example and the script run as programs against the helper.
TESTS += tests/test-helper-tools
check_PROGRAMS += tests/test-helper-tools
tests_test_helper_tools_SOURCES = tests/test-helper-tools.c \
	tests/test-helper-fixture.c tests/test-helper-fixture.h
tests_test_helper_tools_CFLAGS = $(HELPER_TEST_CFLAGS) \
	-DVMSTATECTL_PATH='"$(abs_top_builddir)/libvmstate/vmstatectl"' \
	-DEXAMPLE_PATH='"$(abs_top_builddir)/examples/vmstate-example"' \
	-DSCRIPT_PATH='"$(abs_top_srcdir)/examples/vmstate-script.sh"'
tests_test_helper_tools_LDADD = $(TEST_COMMON_LDADD)
# -no-install: a real binary (no libtool wrapper), so the test guest image can hold it.
examples_vmstate_example_LDFLAGS = $(AM_LDFLAGS) -no-install
GUEST_IMAGE_ARGS += --add $(abs_top_builddir)/examples/vmstate-example:/usr/bin/vmstate-example \
	--add $(abs_top_srcdir)/examples/vmstate-script.sh:/usr/bin/vmstate-script.sh
GUEST_IMAGE_DEPS += examples/vmstate-example $(top_srcdir)/examples/vmstate-script.sh
