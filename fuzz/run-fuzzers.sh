#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Run every libFuzzer target for SECONDS (default 60) each, under ASan+UBSan.
# Usage: fuzz/run-fuzzers.sh BUILDDIR [SECONDS [RUNS]]   (BUILDDIR configured with
#   CC=clang --enable-fuzzing). With RUNS, each target runs RUNS executions
#   instead (SECONDS is ignored; `make fuzz-long`). FUZZ_ONLY="qmp config"
#   limits the run to those targets (one at a time, as always). New corpus
#   entries go to a scratch dir, so the committed seeds stay small; a crash
#   leaves its input in BUILDDIR/fuzz/. Each target's log is
#   BUILDDIR/fuzz/fuzz-NAME.log; a summary line per target says executions,
#   exec/s, wall time, the corpus size at the end and peak RSS.
#   With RUNS the new entries are kept in BUILDDIR/fuzz/long-corpus/NAME, and
#   FUZZ_REPLAY_WITH=ASAN_BUILDDIR replays each of them (and the seeds) once
#   through that tree's ASan+UBSan build of the target: the long run can use a
#   UBSan-only tree (--enable-fuzzing=ubsan, about twice the executions per
#   second here) without leaving a memory error it reached unseen.
set -eu
builddir=${1:?builddir}
secs=${2:-60}
runs=${3:-}
if [ -n "$runs" ]; then limit="-runs=$runs"; what="$runs executions"; else
    limit="-max_total_time=$secs"; what="${secs}s"; fi
srcdir=$(cd "$(dirname "$0")/.." && pwd)
only=${FUZZ_ONLY:-}
rc=0
for t in "$builddir"/fuzz/fuzz-*; do
    case "$t" in *.o|*.c|*.log) continue;; esac
    [ -x "$t" ] || continue
    name=$(basename "$t"); name=${name#fuzz-}
    if [ -n "$only" ]; then
        case " $only " in *" $name "*) ;; *) continue;; esac
    fi
    if [ -n "$runs" ]; then
        scratch="$builddir/fuzz/long-corpus/$name"
        rm -rf "$scratch"; mkdir -p "$scratch"
    else
        scratch=$(mktemp -d)
    fi
    log="$builddir/fuzz/fuzz-$name.log"
    echo "== fuzzing $name for $what ($(date -u +%H:%M:%S) UTC)"
    start=$(date +%s)
    if ! (cd "$builddir/fuzz" && "$t" "$limit" -max_len=140000 \
            -rss_limit_mb=1024 -print_final_stats=1 "$scratch" "$srcdir/fuzz/corpus/$name" \
            >"$log" 2>&1); then
        echo "FINDING in $name:"; tail -40 "$log"; rc=1
    else
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
        rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
        corp=$(grep -E '^#[0-9]+.*DONE' "$log" | sed -n 's/.*corp: \([^ ]*\).*/\1/p')
        echo "$name: executions=$execs exec/s=$rate wall=$(($(date +%s) - start))s" \
            "corpus=$corp peak_rss_mb=$rss no finding"
        if [ -n "$runs" ] && [ -n "${FUZZ_REPLAY_WITH:-}" ]; then
            replay="$FUZZ_REPLAY_WITH/fuzz/fuzz-$name"
            kept=$(find "$scratch" -type f | wc -l)
            if ! (cd "$FUZZ_REPLAY_WITH/fuzz" && "$replay" -runs=0 -max_len=140000 \
                    -rss_limit_mb=1024 "$scratch" "$srcdir/fuzz/corpus/$name" \
                    >"$log.replay" 2>&1); then
                echo "FINDING in $name (replay under $replay):"; tail -40 "$log.replay"; rc=1
            else
                echo "$name: replayed $kept kept inputs and the seeds under $replay: no finding"
            fi
        fi
    fi
    [ -n "$runs" ] || rm -rf "$scratch"
done
exit $rc
