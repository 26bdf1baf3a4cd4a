#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Replay each fuzz target's committed corpus (regression check in make check).
# Under --enable-fuzzing the targets are libFuzzer binaries: -runs=0 replays.
set -e
rc=0
for t in $FUZZ_TARGETS; do
    name=${t#fuzz/fuzz-}
    corpus="$top_srcdir/fuzz/corpus/$name"
    if "$top_builddir/$t" -help=1 >/dev/null 2>&1; then
        "$top_builddir/$t" -runs=0 "$corpus" >/dev/null 2>&1 || { echo "FAIL: $t on corpus"; rc=1; }
    else
        "$top_builddir/$t" "$corpus" || { echo "FAIL: $t on corpus"; rc=1; }
    fi
done
exit $rc
