# SPDX-License-Identifier: GPL-2.0-or-later
# bench: measure vmstate against its physical floor and its anchor (qemu-ga). Never part
# of `make check`; see bench/README.md.
#
#   make bench            build the programs and the bench image, run every benchmark,
#                         write $(BENCH_RESULTS) (default: bench/RESULTS.md in the source tree)
#   make bench-programs   the host and guest programs only
#   make bench-image      the bench guest image ($(BENCH_IMAGE_DIR)): the test image plus
#                         the bench programs and Debian's qemu-guest-agent
BENCH_IMAGE_DIR = $(abs_builddir)/bench/image
BENCH_RESULTS = $(abs_top_srcdir)/bench/RESULTS.md
BENCH_CACHE = $${VMSTATE_CACHE:-$$HOME/.cache/vmstate}
# N round trips per latency figure; BENCH_ARGS are passed to bench/run-all.py.
BENCH_N = 1000
BENCH_ARGS =

# Built on demand only (EXTRA_PROGRAMS): benchmarks never gate the build or CI.
EXTRA_PROGRAMS = bench/vsbench-port bench/vsbench-app bench/vsbench-cpg bench/vsbench-relay \
	bench/vsbench-dbus bench/vsbench-sqlite
bench_vsbench_relay_SOURCES = bench/vsbench-relay.c
# the clock, the statistics line and the CPU marks the timing programs share
VSBENCH_COMMON = bench/vsbench-common.c bench/vsbench-common.h
bench_vsbench_dbus_SOURCES = bench/vsbench-dbus.c $(VSBENCH_COMMON)
bench_vsbench_dbus_CFLAGS = $(AM_CFLAGS) $(DBUS_CFLAGS)
bench_vsbench_dbus_LDADD = $(DBUS_LIBS)
bench_vsbench_sqlite_SOURCES = bench/vsbench-sqlite.c $(VSBENCH_COMMON)
bench_vsbench_sqlite_CFLAGS = $(AM_CFLAGS) $(SQLITE_CFLAGS)
bench_vsbench_sqlite_LDADD = $(SQLITE_LIBS)
bench_vsbench_cpg_SOURCES = bench/vsbench-cpg.c
bench_vsbench_cpg_CFLAGS = $(BRIDGE_INTERNAL_CFLAGS)
bench_vsbench_cpg_LDADD = host-bridge/libbridge.la
bench_vsbench_port_SOURCES = bench/vsbench-port.c $(VSBENCH_COMMON)
bench_vsbench_app_SOURCES = bench/vsbench-app.c $(VSBENCH_COMMON)
bench_vsbench_app_LDADD = libvmstate/libvmstate.la
# -no-install: a real binary (no libtool wrapper) that finds libvmstate through its RUNPATH,
# in the guest too (build-image.sh copies libraries to their host paths)
bench_vsbench_app_LDFLAGS = $(AM_LDFLAGS) -no-install
BENCH_PROGS = bench/vsbench-port bench/vsbench-app bench/vsbench-cpg
BENCH_NATIVE_PROGS = bench/vsbench-port bench/vsbench-app bench/vsbench-relay \
	bench/vsbench-dbus bench/vsbench-sqlite
CLEANFILES += bench/vsbench-relay bench/vsbench-dbus bench/vsbench-sqlite
CLEANFILES += $(BENCH_PROGS)

bench-programs: $(BENCH_PROGS)

# Debian's qemu-guest-agent binary, fetched once into the cache (apt-get download).
bench/qemu-ga:
	$(AM_V_GEN)set -e; c=$(BENCH_CACHE)/debs; mkdir -p "$$c" bench; \
	  f=$$(ls "$$c"/qemu-guest-agent_*_amd64.deb 2>/dev/null | sort -V | tail -n1); \
	  if [ -z "$$f" ]; then (cd "$$c" && apt-get download -q qemu-guest-agent >&2); \
	    f=$$(ls "$$c"/qemu-guest-agent_*_amd64.deb | sort -V | tail -n1); fi; \
	  rm -rf bench/qga.tmp; dpkg-deb -x "$$f" bench/qga.tmp; \
	  cp bench/qga.tmp/usr/sbin/qemu-ga $@.tmp; rm -rf bench/qga.tmp; mv $@.tmp $@
CLEANFILES += bench/qemu-ga

BENCH_IMAGE_ARGS = $(GUEST_IMAGE_ARGS) \
	--add $(abs_builddir)/bench/vsbench-port:/usr/bin/vsbench-port \
	--add $(abs_builddir)/bench/qemu-ga:/usr/sbin/qemu-ga \
	--add $(abs_builddir)/bench/vsbench-app:/usr/bin/vsbench-app \
	--add $(abs_builddir)/bench/vsbench-dbus:/usr/bin/vsbench-dbus \
	--add $(abs_top_srcdir)/bench/guest-dbus-limits.conf:/etc/dbus-1/system.d/zz-vsbench-limits.conf

bench-image: $(GUEST_IMAGE_DEPS) $(BENCH_PROGS) bench/vsbench-dbus bench/qemu-ga \
	guest-helper/vmstate-helperd \
	host-bridge/vmstate-bridged host-bridge/vmstate-admin
	$(AM_V_GEN)$(SHELL) $(abs_top_srcdir)/tests/guest/build-image.sh $(BENCH_IMAGE_DIR) \
	  $(BENCH_IMAGE_ARGS)

bench: bench-programs bench-image
	PYTHONDONTWRITEBYTECODE=1 $(PYTHON3) $(abs_top_srcdir)/bench/run-all.py \
	  --image $(BENCH_IMAGE_DIR) --builddir $(abs_builddir) -n $(BENCH_N) \
	  --out $(BENCH_RESULTS) $(BENCH_ARGS)

clean-local: clean-bench-image
clean-bench-image:
	rm -rf $(BENCH_IMAGE_DIR)

# Lifecycle benchmark alone (issue 12): managed-VM suspend/resume vs RAM size, copy path
# against dd, a storm with and without throttling; Markdown to $(BENCH_LIFECYCLE_OUT), the
# plot to bench/lifecycle-resume.png in the source tree. `make bench` runs it too.
BENCH_LIFECYCLE_OUT = $(abs_builddir)/bench/lifecycle.md
BENCH_LIFECYCLE_ARGS =
bench-lifecycle: guest-image host-bridge/vmstate-bridged host-bridge/vmstate-admin
	@mkdir -p bench
	PYTHONDONTWRITEBYTECODE=1 $(PYTHON3) $(abs_top_srcdir)/bench/bench-lifecycle.py \
	  --image $(GUEST_IMAGE_DIR) --builddir $(abs_builddir) \
	  --json $(abs_builddir)/bench/lifecycle.json $(BENCH_LIFECYCLE_ARGS) > $(BENCH_LIFECYCLE_OUT)
	@cat $(BENCH_LIFECYCLE_OUT)

# Cluster benchmark alone (issue 15): HA failover time vs token timeout and RAM size against
# corosync's detection, CPG throughput of the table's messages at 100 VMs against raw CPG.
# Needs root (network namespaces); Markdown to $(BENCH_CLUSTER_OUT).
BENCH_CLUSTER_OUT = $(abs_builddir)/bench/cluster.md
BENCH_CLUSTER_ARGS =
bench-cluster: guest-image host-bridge/vmstate-bridged host-bridge/vmstate-admin bench/vsbench-cpg
	@mkdir -p bench
	PYTHONDONTWRITEBYTECODE=1 $(PYTHON3) $(abs_top_srcdir)/bench/bench-cluster.py \
	  --image $(GUEST_IMAGE_DIR) --builddir $(abs_builddir) \
	  --json $(abs_builddir)/bench/cluster.json $(BENCH_CLUSTER_ARGS) > $(BENCH_CLUSTER_OUT)
	@cat $(BENCH_CLUSTER_OUT)

.PHONY: bench bench-programs bench-image clean-bench-image bench-lifecycle bench-cluster
EXTRA_DIST += bench/README.md bench/RESULTS.md bench/ANALYSIS.md bench/benchlib.py \
	bench/run-all.py bench/vmstate_path.py bench/guest-dbus-limits.conf bench/bench-rtt.py \
	bench/bench-saverestore.py bench/bench-load.py bench/bench-scale.py bench/profile-rtt.py \
	bench/profile-native.py bench/bench-lifecycle.py bench/plot-lifecycle.py \
	bench/lifecycle-resume.png bench/bench-cluster.py

# Per-operation times on the QMP and libvirt backends (issue 17): prints a Markdown table
# for bench/RESULTS.md. Needs the test guest image; the libvirt column a private libvirtd
# (tests/libvirt/run-suite.sh starts one). BENCH_BACKENDS_ROUNDS rounds of save + restore,
# then as many of suspend + resume of a managed VM (QMP and libvirt).
BENCH_BACKENDS_ROUNDS = 10
bench-backends: guest-image host-bridge/vmstate-bridged host-bridge/vmstate-admin
	top_srcdir='$(top_srcdir)' top_builddir='$(top_builddir)' PYTHONDONTWRITEBYTECODE=1 \
		$(top_srcdir)/tests/libvirt/run-suite.sh $(PYTHON3) $(abs_top_srcdir)/bench/bench-backends.py \
		--image $(GUEST_IMAGE_DIR) --builddir $(abs_top_builddir) --rounds $(BENCH_BACKENDS_ROUNDS)
.PHONY: bench-backends
EXTRA_DIST += bench/bench-backends.py

# Group benchmark alone (issue 16): STOP/RESUME skew of a group of 2, 4, 8 VMs (idle and busy
# guests) against bare QEMUs sent stop/cont at one deadline, and T -> all suspended;
# Markdown to $(BENCH_GROUPS_OUT). BENCH_GROUPS_ARGS: e.g. --sizes 2,4 --reps 3
BENCH_GROUPS_OUT = $(abs_builddir)/bench/groups.md
BENCH_GROUPS_ARGS =
bench-groups: guest-image host-bridge/vmstate-bridged host-bridge/vmstate-admin
	@mkdir -p bench
	PYTHONDONTWRITEBYTECODE=1 $(PYTHON3) $(abs_top_srcdir)/bench/bench-groups.py \
	  --image $(GUEST_IMAGE_DIR) --builddir $(abs_builddir) \
	  --json $(abs_builddir)/bench/groups.json $(BENCH_GROUPS_ARGS) > $(BENCH_GROUPS_OUT)
	@cat $(BENCH_GROUPS_OUT)
.PHONY: bench-groups
EXTRA_DIST += bench/bench-groups.py

# Issue 18's TCG targets (the real path): hostinfo, fan-out and registrations in one TCG
# guest against D-Bus and port floors measured in that guest, then save/restore overhead;
# Markdown to $(BENCH_TCG_OUT). BENCH_TCG_ARGS: e.g. -n 200 --listeners 200 --save-rounds 5
BENCH_TCG_OUT = $(abs_builddir)/bench/tcg.md
BENCH_TCG_ARGS =
bench-tcg: bench-programs bench-image bench/vsbench-sqlite
	@mkdir -p bench
	PYTHONDONTWRITEBYTECODE=1 $(PYTHON3) $(abs_top_srcdir)/bench/bench-tcg.py \
	  --image $(BENCH_IMAGE_DIR) --builddir $(abs_builddir) $(BENCH_TCG_ARGS) \
	  > $(BENCH_TCG_OUT)
	@cat $(BENCH_TCG_OUT)
.PHONY: bench-tcg
EXTRA_DIST += bench/bench-tcg.py

# Native bench bed (issue 18): the guest stack (app, private dbus-daemon, helper) as host
# processes joined to the bridge by bench/vsbench-relay, floors measured in the same run;
# the bridge asks a real QEMU (the test guest image) over QMP. Markdown to
# $(BENCH_NATIVE_OUT). BENCH_NATIVE_ARGS: e.g. -n 200 --listeners 200 --rounds 3
BENCH_NATIVE_OUT = $(abs_builddir)/bench/native.md
BENCH_NATIVE_ARGS =
bench-native: guest-image $(BENCH_NATIVE_PROGS) guest-helper/vmstate-helperd \
	host-bridge/vmstate-bridged host-bridge/vmstate-admin
	@mkdir -p bench
	PYTHONDONTWRITEBYTECODE=1 $(PYTHON3) $(abs_top_srcdir)/bench/bench-native.py \
	  --image $(GUEST_IMAGE_DIR) --builddir $(abs_builddir) $(BENCH_NATIVE_ARGS) \
	  > $(BENCH_NATIVE_OUT)
	@cat $(BENCH_NATIVE_OUT)
.PHONY: bench-native
EXTRA_DIST += bench/bench-native.py
