#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark (not a test): time from "store healthy" to "VM running" over N NBD outages.

    python3 bench/ioerror-resume.py --image DIR --builddir BUILDDIR [--outages 20]

One TCG guest writes to a disk served by qemu-nbd (UNIX socket) in a loop; the bridge has
policy auto-resume with an NBD probe. Each round kills qemu-nbd, waits for the pause,
keeps the store down 1.0-2.0 s, restarts it. "healthy" = the restarted server accepts
connections (measured by this script); "running" = QEMU's last RESUME of the episode (QMP
event timestamp, host clock). Also reported: the bridge's own view (its probe's healthy
verdict -> its first cont, and -> running). Prints a Markdown table row.
Image: tests/guest/build-image.sh DIR (no extra files needed).
"""
import argparse
import os
import random
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "harness"))
from vmstest import VM, Bridge  # noqa: E402
from vmstest.disks import NBDServer, guest_dev, io_bridge_options, writer_script  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--builddir", required=True)
    ap.add_argument("--outages", type=int, default=20)
    ap.add_argument("--probe-ms", type=int, default=500, help="io_probe_interval_ms (and max)")
    ap.add_argument("--workdir")
    a = ap.parse_args()
    workdir = a.workdir or tempfile.mkdtemp(prefix="vmsio-bench-")
    os.makedirs(workdir, exist_ok=True)
    rnd = random.Random(20)
    img = os.path.join(workdir, "nbd.raw")
    with open(img, "wb") as f:
        f.truncate(24 << 20)
    nbd = NBDServer(img, os.path.join(workdir, "nbd.sock"))
    nbd.start()
    vm = VM(os.path.join(workdir, "vm"), a.image, extra_args=nbd.blockdev_args("nbd1", "vblk1"))
    bridge = None
    lat, b_cont, b_run, conts = [], [], [], []
    try:
        vm.start()
        vm.wait_ready(120)
        bridge = Bridge(a.builddir, workdir, {"bench": vm}, bridge_options=io_bridge_options(workdir),
                        vm_options={"io_probe": f"nbd1=nbd+unix:///?socket={nbd.sock}",
                                    "io_probe_interval_ms": a.probe_ms,
                                    "io_probe_max_ms": a.probe_ms, "io_retry_min_ms": 250,
                                    "io_settle_ms": 1000, "io_escalate_after": 0})
        bridge.start(wait_connected=["bench"])
        dev = guest_dev(vm, (24 << 20) // 512)
        vm.check("dd if=/dev/urandom of=/tmp/pat bs=64k count=64 2>/dev/null")
        vm.spawn(writer_script(dev, "/tmp/pat", 64, "/tmp/w.log", loop=True))
        time.sleep(0.5)
        for i in range(a.outages):
            vm.clear_events()
            nbd.kill()
            vm.wait_event("STOP", 20)
            time.sleep(rnd.uniform(1.0, 2.0))
            t_h = nbd.start()
            ev = bridge.events.wait("bench", "resumed", 60, after=t_h)
            resumes = [e for e in vm.events if e["event"] == "RESUME"]
            ts = resumes[-1]["timestamp"]
            t_run = ts["seconds"] + ts["microseconds"] / 1e6
            lat.append(t_run - t_h)
            b_cont.append(ev["healthy_to_cont_s"])
            b_run.append(ev["healthy_to_running_s"])
            conts.append(ev["conts"])
            print(f"outage {i + 1}: healthy->running {lat[-1]:.3f}s (bridge: probe healthy->cont "
                  f"{b_cont[-1]:.3f}s, ->running {b_run[-1]:.3f}s, {conts[-1]} cont(s))",
                  file=sys.stderr, flush=True)
            time.sleep(0.3)
        vm.run("touch /tmp/stop")
        out = vm.run("sleep 1; cat /tmp/w.log /tmp/w.log.err 2>/dev/null | grep -v records")[1]
        guest_ok = "FAIL" not in out and "error" not in out.lower()
    finally:
        vm.stop()
        nbd.kill()
        if bridge:
            bridge.stop()
    print("| benchmark | outages | store healthy → VM running, median | p99 | max | bridge: "
          "probe healthy → cont, median | bridge: probe healthy → running, median | conts per "
          "outage, median | guest I/O errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| ioerror-resume (NBD kill/restart, probe {a.probe_ms} ms, TCG) | {len(lat)} | "
          f"{statistics.median(lat):.3f} s | {pct(lat, 99):.3f} s | {max(lat):.3f} s | "
          f"{statistics.median(b_cont):.3f} s | {statistics.median(b_run):.3f} s | "
          f"{statistics.median(conts):g} | {'none' if guest_ok else 'SEEN'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
