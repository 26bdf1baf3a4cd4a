#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Run every vmstate benchmark in one go and write RESULTS.md (what `make bench` does).

Usage: run-all.py --image DIR --builddir BUILD [-n 1000] [--out bench/RESULTS.md]
                  [--only rtt,saverestore,load,scale,profile,lifecycle] [--quick]
Each benchmark runs as its own script (runnable alone, see bench/README.md); its Markdown
rows go into RESULTS.md, its progress into BUILD/bench/run-all.log. A benchmark that fails
is marked "not measured" with the reason; the others still run. Never gates CI.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import benchlib as bl

ALL = ["rtt", "saverestore", "load", "scale", "profile", "lifecycle"]  # profile: + native runs


def run(name, argv, logf):
    bl.log(f"running {name}: {' '.join(argv[1:])}")
    logf.write(f"\n==== {name}: {' '.join(argv)}\n")
    logf.flush()
    t0 = time.monotonic()
    p = subprocess.run([sys.executable] + argv, stdout=subprocess.PIPE, stderr=logf, text=True,
                       cwd=bl.HERE, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    dt = time.monotonic() - t0
    bl.log(f"{name}: rc {p.returncode} in {dt:.0f} s")
    if p.returncode != 0:
        return None, dt
    return p.stdout.rstrip() + "\n", dt


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--builddir", required=True)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--out", default=os.path.join(bl.HERE, "RESULTS.md"))
    ap.add_argument("--only", default=",".join(ALL))
    ap.add_argument("--quick", action="store_true", help="small N everywhere (a smoke run)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the VM work directories (disks with snapshots: several GiB)")
    a = ap.parse_args()
    only = a.only.split(",")
    n = 100 if a.quick else a.n
    tmp = tempfile.mkdtemp(prefix="vsb-all-")
    common = ["--image", a.image, "--builddir", a.builddir, "--workdir", tmp]
    log_path = os.path.join(os.path.abspath(a.builddir), "bench", "run-all.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    started = time.time()
    out = ["# vmstate benchmark results", "",
           f"Written by `make bench` (`bench/run-all.py`) on "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}. Every figure below "
           "comes from this one run; ratios compare figures measured in the same VM in the "
           "same run. Statistics: median and p99 (nearest rank). Benchmarks never gate CI.",
           "", "## Machine", ""] + bl.machine() + [
           "- guests: Debian cloud kernel (tests/guest image + bench programs + Debian's "
           "qemu-guest-agent 7.2), TCG, 1 vCPU (`-cpu qemu64,+rdrand`)",
           "- bridge: vmstate-bridged as built, privsep on, SQLite journal on the host disk "
           "(ext4, `synchronous=FULL`), rate limits and quotas off, log level warning; "
           "principal with Argon2id cost `test` unless a row says otherwise "
           "(the bridge remembers a verified secret for 300 s, so the cost is paid once "
           "per principal and VM, not per request)", ""]
    verdicts, shm_dirs = [], []
    with open(log_path, "a") as logf:
        if "rtt" in only:
            j = os.path.join(tmp, "rtt.json")
            text, dt = run("rtt", ["bench-rtt.py", *common, "-n", str(n), "--json", j,
                                   "--n-default", "20" if a.quick else "100"], logf)
            out += ["## 1. Round trip of a no-op request (hostinfo)", "",
                    "Floor: 1 byte through the same two virtio-serial ports, both directions "
                    "(`vsbench-port`, C on both sides). Anchor: qemu-ga `guest-ping` on its own "
                    "virtio-serial port, host-originated (that is how qemu-ga works). vmstate: "
                    "guest-originated, timed in the app (`vsbench-app rtt`), one request at a "
                    "time. All in one VM (128 MiB).", "",
                    text or "not measured: the benchmark failed (see run-all.log)", ""]
        if "saverestore" in only:
            j = os.path.join(tmp, "sr.json")
            cfgs = "128M:idle:3,128M:filled:3" if a.quick else None
            argv = ["bench-saverestore.py", *common, "--json", j]
            if cfgs:
                argv += ["--configs", cfgs]
            text, dt = run("saverestore", argv, logf)
            out += ["## 2. Save and restore breakdown", "",
                    "App time: host timestamps of mark bytes the app writes on an extra "
                    "virtio-serial port before the call and when the completion arrives (the "
                    "restore's completion is received by the instance in the restored state). "
                    "QEMU time: the bridge's `snapshot-save`/`snapshot-load` job, "
                    "JOB_STATUS_CHANGE `created` → `concluded` (QMP timestamps). Overhead = "
                    "app − QEMU per request. Filled: random bytes in tmpfs (64 MiB of 128, "
                    "352 MiB of 512).", "", text or "not measured: the benchmark failed", ""]
            sr = load_json(j)
            if sr:
                for mem, mode, res in sr:
                    for op in ("save", "restore"):
                        p99 = res[op][2]["p99"]
                        verdicts.append(f"- overhead {op} {mem} {mode}: p99 {bl.fmt_us(p99)} — "
                                        f"target < 2 ms {'met' if p99 < 2000 else 'MISSED'}")
        if "load" in only:
            j = os.path.join(tmp, "load.json")
            argv = ["bench-load.py", *common, "--json", j]
            if a.quick:
                argv += ["--requests", "40", "--listeners", "1,10,100", "--rounds", "5"]
            text, dt = run("load", argv, logf)
            out += ["## 3. Throughput, 4. fan-out, 5. memory", "",
                    "Throughput: K guest processes, one libvmstate handle each, hostinfo back "
                    "to back. Fan-out: L handles (each its own D-Bus connection, registered "
                    "for one app id) in one guest process polling them all; handle 0 makes "
                    "the request. Memory: /proc VmRSS (RssAnon = private heap) and VmHWM.", "",
                    text or "not measured: the benchmark failed", ""]
            ld = load_json(j)
            if ld:
                best = max(float(h["per_s"]) for _, h, _ in ld["tput"])
                verdicts.append(f"- throughput: best {best:.0f} requests/s — target ≥ 5,000/s "
                                f"{'met' if best >= 5000 else 'MISSED'}")
                fo = [(nl, fl) for nl, fl in ld["fanout"] if fl]
                if fo:
                    nl, (first, last) = max(fo, key=lambda x: x[0])
                    verdicts.append(f"- fan-out at {nl} listeners: last receives after "
                                    f"{bl.fmt_us(last['median'])} median, "
                                    f"{bl.fmt_us(last['p99'])} p99 — target < 50 ms at 1000 "
                                    + ("met" if nl >= 1000 and last["p99"] < 50000 else
                                       "MISSED" if last["p99"] >= 50000 else
                                       "not reached (1000 not measured)"))
        if "scale" in only:
            argv = ["bench-scale.py", *common, "-n", "30" if a.quick else "200"]
            text, dt = run("scale", argv, logf)
            out += ["## 6. Bridge scale: one bridge, 8 VMs", "",
                    text or "not measured: the benchmark failed", ""]
        if "profile" in only:
            out += ["## Profile: where a round trip goes", "",
                    "CPU time per hostinfo request of each process on the path "
                    "(`bench/profile-rtt.py`, /proc utime+stime over N sequential requests). "
                    "Guest CPU is TCG-emulated: every guest µs costs host QEMU time.", ""]
            for label, wd in (("bridge database on the host disk (ext4)", tmp),
                              ("bridge database on tmpfs (/dev/shm): no fsync cost", None)):
                w = wd or tempfile.mkdtemp(prefix="vsb-prof-", dir="/dev/shm")
                if not wd:
                    shm_dirs.append(w)
                argv = ["profile-rtt.py", "--image", a.image, "--builddir", a.builddir,
                        "--workdir", w, "-n", "100" if a.quick else "500"]
                text, dt = run("profile", argv, logf)
                out += [f"### {label}", "", text or "not measured: failed", ""]
            out += ["### The same path natively on the host (no TCG)", "",
                    "`bench/profile-native.py`: app, private dbus-daemon, helper and bridge as "
                    "host processes; a Python relay stands in for the virtio-serial ports; "
                    "hostinfo still asks a (booted, idle) QEMU over QMP, so QEMU's CPU "
                    "includes its idle TCG guest. Then the bridge and the helper each under "
                    "callgrind (instructions; slows that process ~50×, so only the function "
                    "shares matter).", ""]
            for flag in ([], ["--callgrind-bridge"], ["--callgrind"]):
                argv = ["profile-native.py", *common, "-n",
                        ("300" if flag else "2000") if not a.quick else "100"] + flag
                text, dt = run("native", argv, logf)
                out += [text or "not measured: failed", ""]
        if "lifecycle" in only:
            j = os.path.join(tmp, "lifecycle.json")
            argv = ["bench-lifecycle.py", *common, "--json", j]
            if a.quick:
                argv += ["--reps", "1", "--sizes", "256M,1G"]
            text, dt = run("lifecycle", argv, logf)
            out += ["## 7. Managed VMs: suspend and resume (issue 12)", "",
                    "`bench/bench-lifecycle.py`: one bridge with managed VMs (the lifecycle "
                    "suite's wiring), one VM at a time per path and size; each guest first "
                    "fills about half its RAM with a non-zero pattern. Times are the bridge's "
                    "own (`vmstate-admin -j`: total_ms, checkpoint_ms); dd is "
                    "`dd if=/dev/zero bs=1M conv=fdatasync` of the checkpoint's size to the "
                    "same tier in the same run.", "",
                    text or "not measured: the benchmark failed (see run-all.log)", ""]
            lc = load_json(j)
            if lc:
                verdicts += lc["verdicts"]
    if verdicts:
        out[out.index("## Machine"):out.index("## Machine")] = ["## Targets", ""] + verdicts + [
            "", "(what the profile shows about each miss: see the Profile section and "
            "bench/README.md)", ""]
    out += [f"Total run time: {(time.time() - started) / 60:.1f} min.", ""]
    analysis = os.path.join(bl.HERE, "ANALYSIS.md")
    if os.path.exists(analysis):  # hand-written reading of a run: says which run it is about
        with open(analysis) as f:
            out += ["---", "", f.read()]
    with open(a.out, "w") as f:
        f.write("\n".join(out))
    bl.log(f"wrote {a.out}")
    for d in [tmp] + shm_dirs:
        if a.keep:
            bl.log(f"kept {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
