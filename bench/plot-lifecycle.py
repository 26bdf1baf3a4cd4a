#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Plot resume time vs RAM size for each lifecycle path from bench-lifecycle.py's JSON.

Usage: plot-lifecycle.py RESULTS.json OUT.png
Exit status 2 when this Python has no matplotlib (bench-lifecycle.py then tries Debian's
/usr/bin/python3, where python3-matplotlib installs).
"""
import json
import statistics
import sys

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
except ImportError:
    sys.exit(2)


def mib(size):
    return int(size[:-1]) * (1024 if size[-1].upper() == "G" else 1)


def main():
    with open(sys.argv[1]) as f:
        res = json.load(f)
    lines = {}
    for key, row in res["data"].items():
        label, size = key.split("|")
        lines.setdefault(label, []).append((mib(size), size, statistics.median(row["resume"])))
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ticks = {}
    for (label, pts), marker in zip(sorted(lines.items()), "osd^"):
        pts.sort()
        ticks.update({m: s for m, s, _ in pts})
        ax.plot([p[0] for p in pts], [p[2] for p in pts], marker=marker, label=label)
    ax.axhline(50, color="grey", linestyle="--", linewidth=0.8, label="zero-copy target 50 ms")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())  # 100, not 10^2
    ax.set_xticks(sorted(ticks), [ticks[m] for m in sorted(ticks)])
    ax.set_xlabel("guest RAM")
    ax.set_ylabel("resume time, ms (median)")
    ax.set_title(res.get("title", "managed VM resume time vs RAM size"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(sys.argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
