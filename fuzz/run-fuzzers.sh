#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Run every libFuzzer target for SECONDS (default 60) each, under ASan+UBSan.
# Usage: fuzz/run-fuzzers.sh BUILDDIR [SECONDS [RUNS]]   (BUILDDIR configured with
#   CC=clang --enable-fuzzing). With RUNS, each target runs RUNS executions
#   instead (SECONDS is ignored; `make fuzz-long`). New corpus entries go to a
#   scratch dir, so the committed seeds stay small; a crash leaves its input in
#   BUILDDIR/fuzz/.
set -eu
builddir=${1:?builddir}
secs=${2:-60}
runs=${3:-}
if [ -n "$runs" ]; then limit="-runs=$runs"; what="$runs executions"; else
    limit="-max_total_time=$secs"; what="${secs}s"; fi
srcdir=$(cd "$(dirname "$0")/.." && pwd)
rc=0
for t in "$builddir"/fuzz/fuzz-*; do
    case "$t" in *.o|*.c|*.log) continue;; esac
    [ -x "$t" ] || continue
    name=$(basename "$t"); name=${name#fuzz-}
    scratch=$(mktemp -d)
    echo "== fuzzing $name for $what"
    if ! (cd "$builddir/fuzz" && "$t" "$limit" -max_len=140000 \
            -rss_limit_mb=1024 -print_final_stats=1 "$scratch" "$srcdir/fuzz/corpus/$name" \
            >"$builddir/fuzz/fuzz-$name.log" 2>&1); then
        echo "FINDING in $name:"; tail -40 "$builddir/fuzz/fuzz-$name.log"; rc=1
    else
        grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' "$builddir/fuzz/fuzz-$name.log" | tr '\n' ' '; echo
    fi
    rm -rf "$scratch"
done
exit $rc
