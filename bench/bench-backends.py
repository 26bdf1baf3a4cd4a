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
Median and max over the rounds.

Then the same guest as a managed VM (the bridge runs it; copy-path checkpoints in a slow
tier on the same file system for both): QMP (the bridge's own QEMU) and libvirt (a
persistent domain the bridge starts with virDomainCreate). For N rounds `vmstate-admin
suspend`, then `resume`; the times are the bridge's own (the answers' total_ms):
  suspend              request -> the checkpoint on disk (fdatasync'ed) and QEMU gone
  resume               request -> a new QEMU has loaded it, the ports are back, the guest runs
Each against this run's floor for the same bytes in the same tier: dd writing the
checkpoint's size with conv=fdatasync (suspend), dd reading the checkpoint file back
(resume; it is in the page cache, as it is for the resume).
Prints a Markdown table (for bench/RESULTS.md).

    tests/libvirt/run-suite.sh python3 bench/bench-backends.py --image DIR --builddir DIR
(`make bench-backends` does this; without $LV_URI only the QMP column is measured.)
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "harness"))
from vmstest import Bridge  # noqa: E402
from vmstest.managed import ManagedVM  # noqa: E402
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
            # --wait: vmstatectl listens for its completion; without it nobody does, and the
            # helper holds the completion for a late listener (grace_period_ms, 10 s) before
            # its ack: the round trip measured that grace
            rc, out = wp.sh(f"{env}vmstatectl --wait save bench-{i}")
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


def dd_seconds(args):
    t0 = time.monotonic()
    subprocess.run(["dd", "bs=1M", *args], capture_output=True, check=True)
    return time.monotonic() - t0


def run_managed(backend, a, workdir):
    """suspend/resume rounds of a managed 128 MiB guest: {row: [s]}, and the floors."""
    wd = os.path.join(workdir, "managed-" + backend)
    slow = os.path.join(wd, "slow")
    os.makedirs(slow, exist_ok=True)
    if backend == "libvirt":
        from vmstest.libvirt import ManagedLibvirtVM
        vm = ManagedLibvirtVM(os.path.join(wd, "m1"), a.image, a.builddir, mem="128M")
        vm.define()
        keys = {"managed": "yes", "memory": "128M", "slow_tier": "slow", "stop_timeout": 5}
    else:
        vm = ManagedVM(os.path.join(wd, "m1"), a.image, mem="128M")
        keys = {**vm.section(rapid="off", slow_tier="slow"), "stop_timeout": 5}
    sock = os.path.join(wd, "admin.sock")
    bridge = Bridge(a.builddir, wd, {"m1": vm}, per_vm={"m1": keys},
                    bridge_options={"admin_socket": sock, "state_margin": "64M"},
                    sections={"tier slow": {"path": slow, "capacity": "8G", "class": "slow"}})
    out = {"suspend": [], "resume": [], "floor suspend": [], "floor resume": []}

    def lc(cmd):
        ok, ans = bridge.ctl(cmd, "m1", sock=sock, timeout=180)
        if not ok:
            raise RuntimeError(f"{backend}: {cmd}: {ans}")
        return ans
    try:
        bridge.start()
        lc("start")
        vm.attach()
        vm.wait_ready(120)
        vm.detach()
        for _ in range(a.rounds):
            out["suspend"].append(lc("suspend")["total_ms"] / 1000)
            _, st = bridge.ctl("status", "m1", sock=sock)
            path = st["vms"][0]["checkpoint"]["state_file"]
            mib = max(1, os.path.getsize(path) >> 20)
            floor = os.path.join(slow, "dd-floor")
            out["floor suspend"].append(dd_seconds(["if=/dev/zero", f"of={floor}",
                                                    f"count={mib}", "conv=fdatasync"]))
            os.unlink(floor)
            out["floor resume"].append(dd_seconds([f"if={path}", "of=/dev/null"]))
            out["resume"].append(lc("resume")["total_ms"] / 1000)
        lc("stop")
    finally:
        bridge.stop()
        vm.kill()
        if backend == "libvirt":
            vm.undefine()
    return out


def fmt_ratio(samples, floor):
    if not samples or not floor:
        return "—"
    med, fl = statistics.median(samples), statistics.median(floor)
    return (f"{med * 1000:.0f} ms (max {max(samples) * 1000:.0f}, n={len(samples)}); "
            f"×{med / fl:.1f} the floor")


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
    managed = {b: run_managed(b, a, workdir) for b in a.backends.split(",")}
    rows = ["save", "restore", "save round trip", "restore round trip"]
    print(f"Per-operation times by backend ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"test image, 128 MiB, TCG; median of {a.rounds} rounds; from the bridge's log)\n")
    print("| operation | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for r in rows:
        print(f"| {r} | " + " | ".join(fmt(results[b][r]) for b in results) + " |")
    for r in ("suspend", "resume"):
        print(f"| {r} (managed, copy path) | " +
              " | ".join(fmt_ratio(managed[b][r], managed[b]["floor " + r]) for b in managed) +
              " |")
    for r in ("suspend", "resume"):
        print(f"| floor: dd {'write+fdatasync' if r == 'suspend' else 'read'} of the "
              "checkpoint's bytes, same tier | " +
              " | ".join(fmt(managed[b]["floor " + r]) for b in managed) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
