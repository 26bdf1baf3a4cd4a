#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Run the I/O-error auto-resume system tests (tests/ioerror/test-ioerror-system.py).
# Exit 77 (skipped) when QEMU, qemu-nbd, qemu-storage-daemon, python3 or the guest harness
# is missing.
# Environment: top_srcdir, top_builddir (set by make).
set -e
srcdir=${top_srcdir:-.}
builddir=${top_builddir:-.}
builddir=$(cd "$builddir" && pwd)
for c in qemu-system-x86_64 qemu-img qemu-nbd qemu-storage-daemon python3; do
    command -v $c >/dev/null 2>&1 || { echo "SKIP: $c not found (apt-get install qemu-system-x86 qemu-utils python3)"; exit 77; }
done
[ -x "$srcdir/tests/guest/build-image.sh" ] && [ -f "$srcdir/tests/harness/vmstest/vm.py" ] ||
    { echo "SKIP: the guest harness (tests/guest, tests/harness) is not in this tree"; exit 77; }
image=$builddir/tests/ioerror/image
"$srcdir/tests/guest/build-image.sh" "$image" >/dev/null
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the source tree
exec python3 "$srcdir/tests/ioerror/test-ioerror-system.py" --image "$image" --builddir "$builddir"
