# SPDX-License-Identifier: GPL-2.0-or-later
# tests/cluster: HA across hosts on Corosync — 3 hosts as network namespaces on this machine
# (vmstest.cluster, tests/harness/README.md), each with its own corosync and bridge, HA VMs
# on real QEMU guests with their disks and definitions on a shared directory: admission,
# failover from checkpoints, bridge restart, partition and self-fence, priorities.
# Both suites need root (network namespaces) and corosync.
#
#   make check-cluster-harness   the harness's smoke suite: 3 hosts quorate, kill, partition,
#                                heal, restart, a bridge and its managed QEMU inside a host;
#                                ~20 s (CLUSTER_HARNESS_FLAGS: e.g. --token 1000 --workdir DIR)
#   make check-cluster           the HA acceptance suite (part of make check-system; ~3 min
#                                on 2 cores, TCG) (CLUSTER_FLAGS: e.g. --only 4 --workdir DIR)
check-cluster-harness: guest-image host-bridge/vmstate-bridged host-bridge/vmstate-admin
	PYTHONDONTWRITEBYTECODE=1 $(PYTHON3) $(abs_top_srcdir)/tests/cluster/test-cluster-harness.py \
		--builddir $(abs_top_builddir) --image $(GUEST_IMAGE_DIR) $(CLUSTER_HARNESS_FLAGS)
SYSTEM_CHECKS += check-cluster-harness
check-cluster: guest-image host-bridge/vmstate-bridged host-bridge/vmstate-admin
	PYTHONDONTWRITEBYTECODE=1 $(PYTHON3) $(abs_top_srcdir)/tests/cluster/test-cluster-system.py \
		--image $(GUEST_IMAGE_DIR) --builddir $(abs_top_builddir) $(CLUSTER_FLAGS)
SYSTEM_CHECKS += check-cluster
.PHONY: check-cluster-harness check-cluster
EXTRA_DIST += tests/cluster/test-cluster-harness.py tests/cluster/test-cluster-system.py \
	tests/cluster/cluster-shell.py
