# SPDX-License-Identifier: GPL-2.0-or-later
# tests/cluster: the HA cluster (issue 15). vmstest.cluster brings up N hosts in network
# namespaces, one corosync 3 each (tests/harness/README.md); needs root and corosync.
#
#   make check-cluster-harness   the harness's smoke suite: 3 hosts quorate, kill, partition,
#                                heal, restart, a bridge and its managed QEMU inside a host; ~20 s
# CLUSTER_HARNESS_FLAGS: e.g. --token 1000 --workdir DIR
check-cluster-harness: guest-image host-bridge/vmstate-bridged host-bridge/vmstate-admin
	PYTHONDONTWRITEBYTECODE=1 $(PYTHON3) $(abs_top_srcdir)/tests/cluster/test-cluster-harness.py \
		--builddir $(abs_top_builddir) --image $(GUEST_IMAGE_DIR) $(CLUSTER_HARNESS_FLAGS)
SYSTEM_CHECKS += check-cluster-harness
.PHONY: check-cluster-harness
EXTRA_DIST += tests/cluster/test-cluster-harness.py
