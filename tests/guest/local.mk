# SPDX-License-Identifier: GPL-2.0-or-later
# tests/guest: the test guest image builder and its smoke test; tests/harness: vmstest, the
# Python harness every system suite and benchmark imports (tests/harness/README.md).
# Needs (Debian packages): see the header of tests/guest/build-image.sh and vmstest/vm.py.
#
#   make guest-image          build (or reuse) the image in $(GUEST_IMAGE_DIR)
#   make check-system-smoke   build the image and run tests/guest/test-vm-smoke.py
GUEST_IMAGE_DIR = $(abs_builddir)/tests/guest/image
# Extra build-image.sh arguments (--add HOST[:GUEST], --add-dir HOST:GUEST); components
# append their binaries, policy files and /etc/vmstate/init.d start scripts here.
GUEST_IMAGE_ARGS =
# ... and the files those arguments name, so that the image follows them.
GUEST_IMAGE_DEPS =
PYTHON3 = python3

guest-image: $(GUEST_IMAGE_DEPS)
	$(AM_V_GEN)$(SHELL) $(abs_top_srcdir)/tests/guest/build-image.sh $(GUEST_IMAGE_DIR) $(GUEST_IMAGE_ARGS)

check-system-smoke: guest-image
	PYTHONDONTWRITEBYTECODE=1 $(PYTHON3) $(abs_top_srcdir)/tests/guest/test-vm-smoke.py --image $(GUEST_IMAGE_DIR)

.PHONY: guest-image check-system-smoke
SYSTEM_CHECKS += check-system-smoke

EXTRA_DIST += tests/guest/build-image.sh tests/guest/guest-init.sh tests/guest/guest-agent.sh \
	tests/guest/test-vm-smoke.py tests/guest/README.md
EXTRA_DIST += tests/harness/README.md tests/harness/vmstest/__init__.py \
	tests/harness/vmstest/vm.py tests/harness/vmstest/bridge.py tests/harness/vmstest/proxy.py \
	tests/harness/vmstest/checks.py tests/harness/vmstest/wholepath.py \
	tests/harness/vmstest/libvirt.py \
	tests/harness/vmstest/disks.py tests/harness/vmstest/managed.py \
	tests/harness/vmstest/wireclient.py tests/harness/vmstest/cluster.py \
	tests/harness/vmstest/ha.py

clean-local: clean-guest-image
clean-guest-image:
	rm -rf $(GUEST_IMAGE_DIR)
.PHONY: clean-guest-image
