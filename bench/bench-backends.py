#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Per-operation times on both hypervisor backends: the same guest (the test image, 128 MiB,
TCG) behind the bridge, once run by the harness over QMP and once as a libvirt domain.

For N rounds: `vmstatectl save` in the guest, then `vmstatectl restore` of that state. The
times come from the bridge's own log (millisecond timestamps, one clock):
  save, restore        the backend's part: "running OP" -> "completed OP" (the snapshot or
                       revert, plus journalling the completion)
  save round trip      request accepted -> the helper acknowledged its completion
  restore round trip   request accepted -> the *restored* guest's helper acknowledged the
                       restore's completion (for libvirt: a new QEMU, its ports dialled back)
Median and max over the rounds. Prints a Markdown table (for bench/RESULTS.md).

    tests/libvirt/run-suite.sh python3 bench/bench-backends.py --image DIR --builddir DIR
(`make bench-backends` does this; without $LV_URI only the QMP column is measured.)
"""
import argparse
import os
import re
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "harness"))
from vmstest.wholepath import WholePath  # noqa: E402

LINE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \S+ vm=vm1 req=(\w+): (.*)$", re.M)


def log_times(text):
    """{request id: {what: seconds of day}} from the bridge log."""
    out = {}
    for m in LINE.finditer(text):
        t = int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]) + int(m[4]) / 1000
        what = m[6]
        key = ("accepted" if what.startswith("accepted ") else
               "running" if what.startswith("running ") else
               "completed" if what.startswith(("completed ", "restored state ")) else
               "acked" if what.endswith(" acked") else None)
        if key:
            out.setdefault(m[5], {}).setdefault(key, t)  # the first of each (copies ack later)
    return out


def wait_log(wp, pattern, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.findall(pattern, wp.bridge.log(), re.M)
        if m:
            return m
        time.sleep(0.05)
    raise TimeoutError(f"bridge log never showed {pattern!r}")


def run_backend(backend, a, workdir):
    wp = WholePath(a.image, a.builddir, os.path.join(workdir, backend), backend=backend)
    saves, restores = [], []
    try:
        wp.start()
        env = wp.env()
        for i in range(a.rounds):
            rc, out = wp.sh(f"{env}vmstatectl save bench-{i}")
            rid = re.search(r"[0-9a-f]{32}", out).group(0)
            wait_log(wp, rf"req={rid}: event epoch \d+ seq \d+ acked")
            state = wait_log(wp, rf"req={rid}: accepted save .* state (\S+)")[0]
            saves.append(rid)
            n_before = len(re.findall(r"accepted restore", wp.bridge.log()))
            # the guest is restored under the command: start it in the background
            wp.sh(f"({env}vmstatectl restore {state} >/dev/null 2>&1 &)")
            rrid = None
            deadline = time.monotonic() + 60
            while rrid is None and time.monotonic() < deadline:
                ids = re.findall(r"req=(\w+): accepted restore", wp.bridge.log())
                rrid = ids[n_before] if len(ids) > n_before else None
                time.sleep(0.05)
            wait_log(wp, rf"req={rrid}: event epoch \d+ seq \d+ acked")
            restores.append(rrid)
            wp.sh(f"{env}vmstatectl delete {state} >/dev/null")  # keep the disk small
        times = log_times(wp.bridge.log())
    finally:
        wp.stop()

    def spans(ids, a_key, b_key):
        return [times[r][b_key] - times[r][a_key] for r in ids
                if a_key in times.get(r, {}) and b_key in times.get(r, {})]
    return {"save": spans(saves, "running", "completed"),
            "restore": spans(restores, "running", "completed"),
            "save round trip": spans(saves, "accepted", "acked"),
            "restore round trip": spans(restores, "accepted", "acked")}


def fmt(samples):
    if not samples:
        return "—"
    return (f"{statistics.median(samples) * 1000:.0f} ms (max {max(samples) * 1000:.0f}, "
            f"n={len(samples)})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--builddir", required=True)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--backends", default="qmp,libvirt" if os.environ.get("LV_URI") else "qmp")
    a = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="vmsbench-backends-")
    results = {b: run_backend(b, a, workdir) for b in a.backends.split(",")}
    rows = ["save", "restore", "save round trip", "restore round trip"]
    print(f"Per-operation times by backend ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"test image, 128 MiB, TCG; median of {a.rounds} rounds; from the bridge's log)\n")
    print("| operation | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for r in rows:
        print(f"| {r} | " + " | ".join(fmt(results[b][r]) for b in results) + " |")
    print("\nsuspend / resume: not measured (the lifecycle ops are not in backend.h yet)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
