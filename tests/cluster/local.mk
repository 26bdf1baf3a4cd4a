# SPDX-License-Identifier: GPL-2.0-or-later
# tests/cluster: HA across hosts on Corosync — 3 hosts as network namespaces on this machine
# (vmstest.cluster), each with its own corosync and bridge, HA VMs on real QEMU guests with
# their disks and definitions on a shared directory: admission, failover from checkpoints,
# bridge restart, partition and self-fence, priorities.
#
#   make check-cluster   (part of make check-system; ~3 min on 2 cores, TCG; needs root:
#                         network namespaces)
# CLUSTER_FLAGS: e.g. --only 4 --workdir DIR
check-cluster: guest-image host-bridge/vmstate-bridged host-bridge/vmstate-admin
	PYTHONDONTWRITEBYTECODE=1 $(PYTHON3) $(abs_top_srcdir)/tests/cluster/test-cluster-system.py \
		--image $(GUEST_IMAGE_DIR) --builddir $(abs_top_builddir) $(CLUSTER_FLAGS)
SYSTEM_CHECKS += check-cluster
.PHONY: check-cluster
EXTRA_DIST += tests/cluster/test-cluster-system.py tests/cluster/cluster-shell.py
