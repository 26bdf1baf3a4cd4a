# SPDX-License-Identifier: GPL-2.0-or-later
# tests/lifecycle: managed VMs on a real QEMU — the bridge starts, suspends (zero-copy and
# copy path), resumes, stops and re-adopts them; tiers, reservations, one-shot checkpoints,
# demotion, crashes, storm throttling, idle auto-suspend.
#
#   make check-lifecycle-system   (part of make check-system; ~2-3 min on 2 cores, TCG)
# LIFECYCLE_FLAGS: e.g. --only 1 --only 4 --workdir DIR
check-lifecycle-system: guest-image host-bridge/vmstate-bridged host-bridge/vmstate-admin
	PYTHONDONTWRITEBYTECODE=1 $(PYTHON3) $(abs_top_srcdir)/tests/lifecycle/test-lifecycle-system.py \
		--image $(GUEST_IMAGE_DIR) --builddir $(abs_top_builddir) $(LIFECYCLE_FLAGS)
SYSTEM_CHECKS += check-lifecycle-system
.PHONY: check-lifecycle-system
EXTRA_DIST += tests/lifecycle/test-lifecycle-system.py

# Managed VMs on the libvirt backend: a persistent domain on a private libvirtd that the bridge
# starts, suspends to a tier (virDomainSaveFlags), resumes (virDomainRestoreFlags), re-adopts
# after a restart and a crash inside a suspend, and stops (~50 s on 2 cores, TCG; green in
# every run here; exit 77 without libvirtd/tini).
if HAVE_LIBVIRT
check-lifecycle-system-libvirt: guest-image host-bridge/vmstate-bridged $(BRIDGE_MODULES) host-bridge/vmstate-admin
	top_srcdir='$(top_srcdir)' top_builddir='$(top_builddir)' $(top_srcdir)/tests/libvirt/run-suite.sh \
		env PYTHONDONTWRITEBYTECODE=1 $(PYTHON3) $(abs_top_srcdir)/tests/lifecycle/test-lifecycle-system-libvirt.py \
		--image $(GUEST_IMAGE_DIR) --builddir $(abs_top_builddir) $(LIFECYCLE_FLAGS)
SYSTEM_CHECKS += check-lifecycle-system-libvirt
endif
.PHONY: check-lifecycle-system-libvirt
EXTRA_DIST += tests/lifecycle/test-lifecycle-system-libvirt.py
