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
