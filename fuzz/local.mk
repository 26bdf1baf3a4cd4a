# SPDX-License-Identifier: GPL-2.0-or-later
# Fuzz targets: fuzz/fuzz-<name>.c, seed corpus in fuzz/corpus/<name>/.
# With --enable-fuzzing (CC=clang) they link libFuzzer; otherwise they link
# standalone.c and `make check` replays the committed corpus through them.
FUZZ_TARGETS = fuzz/fuzz-deframe fuzz/fuzz-message
FUZZ_LDADD = common/libvmscommon.la $(DBUS_LIBS)
fuzz_fuzz_deframe_SOURCES = fuzz/fuzz-deframe.c
fuzz_fuzz_deframe_LDADD = $(FUZZ_LDADD)
fuzz_fuzz_message_SOURCES = fuzz/fuzz-message.c tests/vms-dbus-reference.h
fuzz_fuzz_message_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests $(DBUS_CFLAGS)
fuzz_fuzz_message_LDADD = $(FUZZ_LDADD)
if ENABLE_FUZZING
FUZZ_LINK_FLAGS = -fsanitize=fuzzer
else
FUZZ_LINK_FLAGS =
fuzz_fuzz_deframe_SOURCES += fuzz/standalone.c
fuzz_fuzz_message_SOURCES += fuzz/standalone.c
endif
fuzz_fuzz_deframe_LDFLAGS = $(AM_LDFLAGS) $(FUZZ_LINK_FLAGS)
fuzz_fuzz_message_LDFLAGS = $(AM_LDFLAGS) $(FUZZ_LINK_FLAGS)
check_PROGRAMS += $(FUZZ_TARGETS)
TESTS += fuzz/run-corpus.sh
TESTS_ENVIRONMENT = FUZZ_TARGETS='$(FUZZ_TARGETS)' top_srcdir='$(top_srcdir)' top_builddir='$(top_builddir)'
dist_noinst_SCRIPTS += fuzz/run-corpus.sh fuzz/run-fuzzers.sh
EXTRA_DIST += fuzz/corpus fuzz/standalone.c

noinst_PROGRAMS += fuzz/make-seeds
fuzz_make_seeds_SOURCES = fuzz/make-seeds.c
fuzz_make_seeds_CFLAGS = $(AM_CFLAGS) $(DBUS_CFLAGS)
fuzz_make_seeds_LDADD = $(FUZZ_LDADD)
fuzz-seeds: fuzz/make-seeds
	mkdir -p $(top_srcdir)/fuzz/corpus/message $(top_srcdir)/fuzz/corpus/deframe \
	  $(top_srcdir)/fuzz/corpus/app-signal
	fuzz/make-seeds $(top_srcdir)/fuzz/corpus
.PHONY: fuzz-seeds

# Every fuzz target to FUZZ_LONG_RUNS executions (default 10^7), one at a time; not in CI.
# FUZZ_ONLY="deframe qmp" runs only those targets.
# Needs a tree configured with CC=clang --enable-fuzzing (e.g. quickstart's _build/fuzz).
# Faster: a tree configured with CC=clang --enable-fuzzing=ubsan, and
# FUZZ_REPLAY_WITH=/path/to/_build/fuzz to replay what the run kept under ASan+UBSan.
FUZZ_LONG_RUNS = 10000000
fuzz-long: $(FUZZ_TARGETS)
if ENABLE_FUZZING
	FUZZ_ONLY='$(FUZZ_ONLY)' FUZZ_REPLAY_WITH='$(FUZZ_REPLAY_WITH)' $(top_srcdir)/fuzz/run-fuzzers.sh $(abs_top_builddir) 0 $(FUZZ_LONG_RUNS)
else
	@echo "fuzz-long: configure this tree with CC=clang --enable-fuzzing"; exit 1
endif
.PHONY: fuzz-long
clean-local: clean-fuzz-long
clean-fuzz-long:
	rm -rf fuzz/long-corpus fuzz/fuzz-*.log fuzz/fuzz-*.log.replay
.PHONY: clean-fuzz-long
