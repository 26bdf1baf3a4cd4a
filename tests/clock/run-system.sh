#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Run the clock/hooks real-QEMU system tests (tests/clock/test-clock-system.py): build the
# guest image with vmstate-helperd, its D-Bus policy, hooks and the probe tool, boot a VM,
# check acceptance 1-4 of issue 8. Exit 77 (skipped) without QEMU or python3.
# Environment: top_srcdir, top_builddir (set by make), CLOCK_SYSTEM_FLAGS.
set -e
srcdir=${top_srcdir:-.}
builddir=${top_builddir:-.}
srcdir=$(cd "$srcdir" && pwd)
builddir=$(cd "$builddir" && pwd)
for c in qemu-system-x86_64 qemu-img python3; do
    command -v $c >/dev/null 2>&1 || { echo "SKIP: $c not found (apt-get install qemu-system-x86 qemu-utils python3)"; exit 77; }
done
image=$builddir/tests/clock/image
"$srcdir/tests/guest/build-image.sh" "$image" \
    --add "$builddir/guest-helper/vmstate-helperd:/usr/sbin/vmstate-helperd" \
    --add "$builddir/tests/clock/vms-clock-tool:/usr/bin/vms-clock-tool" \
    --add "$srcdir/guest-helper/org.vmstate.Helper1.conf:/etc/dbus-1/system.d/org.vmstate.Helper1.conf" \
    --add-dir "$srcdir/tests/clock/guest/etc-vmstate:/etc/vmstate" >/dev/null
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the source tree
exec python3 "$srcdir/tests/clock/test-clock-system.py" --image "$image" --builddir "$builddir" \
    ${CLOCK_SYSTEM_FLAGS:-}
