#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Run the bridge's real-QEMU system tests (tests/bridge/test-bridge-system.py):
# build the guest image with the wire client, boot two VMs, check acceptance 1-5.
# Exit 77 (skipped) when QEMU, python3 or the guest harness (tests/guest) is missing.
# Environment: top_srcdir, top_builddir (set by make), BRIDGE_SYSTEM_FLAGS (e.g. --valgrind),
# BRIDGE_SUITE (default test-bridge-system.py; test-bridge-flood.py for the flood suite).
set -e
srcdir=${top_srcdir:-.}
builddir=${top_builddir:-.}
builddir=$(cd "$builddir" && pwd)
for c in qemu-system-x86_64 qemu-img python3; do
    command -v $c >/dev/null 2>&1 || { echo "SKIP: $c not found (apt-get install qemu-system-x86 qemu-utils python3)"; exit 77; }
done
[ -x "$srcdir/tests/guest/build-image.sh" ] && [ -f "$srcdir/tests/harness/vmstest/vm.py" ] ||
    { echo "SKIP: the guest harness (tests/guest, tests/harness) is not in this tree"; exit 77; }
image=$builddir/tests/bridge/image
"$srcdir/tests/guest/build-image.sh" "$image" \
    --add "$builddir/tests/bridge/vms-wire-client:/usr/bin/vms-wire-client" >/dev/null
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the source tree
exec python3 "$srcdir/tests/bridge/${BRIDGE_SUITE:-test-bridge-system.py}" --image "$image" --builddir "$builddir" \
    ${BRIDGE_SYSTEM_FLAGS:-}
