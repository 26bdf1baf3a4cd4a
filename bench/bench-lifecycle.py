#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Lifecycle benchmark (issue 12): managed-VM suspend and resume vs RAM size, copy path
against dd, zero-copy resume breakdown, a storm of 4 suspends with and without throttling.

Usage: bench-lifecycle.py --image DIR --builddir BUILD [--workdir DIR] [--reps 3]
                          [--sizes 256M,512M,1G,2G] [--json F] [--plot PNG] [--no-storm]

Drives vmstate-bridged's managed VMs exactly as the lifecycle system suite does (it imports
tests/lifecycle/test-lifecycle-system.py's Lifecycle helpers and vmstest.managed.ManagedVM):
one bridge, one VM at a time per (path, size), `vmstate-admin -j suspend|resume` timings.
Paths: zero-copy (rapid = on, RAM file in a fast tier on /dev/shm), copy to disk
(rapid = off, slow tier on the host disk) and copy to tmpfs (rapid = off, slow tier on
/dev/shm). Each guest first fills about half its RAM with a non-zero pattern (tmpfs file)
so that the copy path copies real data. Markdown rows on stdout, progress on stderr.
"""
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import benchlib as bl
from vmstest import QMP, Bridge, wait_until
from vmstest.managed import ManagedVM


def _lifecycle_suite():
    """The lifecycle system suite as a module (its Lifecycle helpers and dd_mib_s)."""
    path = os.path.join(bl.SRCDIR, "tests", "lifecycle", "test-lifecycle-system.py")
    spec = importlib.util.spec_from_file_location("lifecycle_suite", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


lcs = _lifecycle_suite()

PATHS = {  # label: (VM name prefix, section keys)
    "zero-copy": ("zc", {"rapid": "on", "fast_tier": "fast", "slow_tier": "disk"}),
    "copy, disk tier": ("cd", {"rapid": "off", "slow_tier": "disk"}),
    "copy, tmpfs tier": ("cm", {"rapid": "off", "slow_tier": "shm"}),
}
STORM_VMS = 4
STORM_MEM = "512M"
# throttled storm: one start per 2 s, copy at 256 MiB/s each
THROTTLE = {"lifecycle_per_minute": 30, "lifecycle_bandwidth": "256M"}


def mib(size):
    """'512M' / '2G' -> MiB."""
    n, unit = int(size[:-1]), size[-1].upper()
    return n * 1024 if unit == "G" else n


class Bench(lcs.Lifecycle):
    """The suite's Lifecycle helpers (lc, status, start_vm, suspend, resume, stop_vm,
    pattern) over this benchmark's own VMs and tiers."""

    def __init__(self, image, builddir, workdir, sizes):
        self.image, self.builddir, self.workdir = image, builddir, workdir
        self.fast = tempfile.mkdtemp(prefix="vsb-lc-fast-", dir="/dev/shm")
        self.shm = tempfile.mkdtemp(prefix="vsb-lc-shm-", dir="/dev/shm")
        self.disk = os.path.join(workdir, "disk")
        os.makedirs(self.disk, exist_ok=True)
        spec = {}
        for size in sizes:
            for prefix, keys in PATHS.values():
                spec[f"{prefix}{mib(size)}"] = (size, keys)
        for i in range(1, STORM_VMS + 1):
            spec[f"st{i}"] = (STORM_MEM, PATHS["copy, disk tier"][1])
        spec["probe"] = ("256M", PATHS["copy, disk tier"][1])
        self.vms = {n: ManagedVM(os.path.join(workdir, n), image, mem=m)
                    for n, (m, _) in spec.items()}
        # stop_timeout: the test guest ignores ACPI powerdown; quit after 2 s, not 30
        per_vm = {n: self.vms[n].section(stop_timeout=2, **keys) for n, (_, keys) in spec.items()}
        self.admin_sock = os.path.join(workdir, "admin.sock")
        self.bridge = Bridge(
            builddir, workdir, self.vms, per_vm=per_vm,
            bridge_options={"admin_socket": self.admin_sock, "state_margin": "64M"},
            sections={"tier fast": {"path": self.fast, "capacity": "8G", "class": "fast"},
                      "tier shm": {"path": self.shm, "capacity": "8G", "class": "slow"},
                      "tier disk": {"path": self.disk, "capacity": "32G", "class": "slow"}})

    def fill(self, name, fraction):
        """fraction of the guest's RAM (at most half less 32 MiB: the guest's tmpfs holds at
        most half of RAM) in a tmpfs file of random bytes: a 1 MiB random seed written N
        times by one cat (the cheapest way under TCG), so every page is a real page for the
        copy path. The MiB written."""
        size = mib(self.vms[name].mem)
        fill = max(1, min(int(size * fraction), size // 2 - 32))
        self.vms[name].check(
            "head -c 1048576 /dev/urandom > /tmp/seed && set -- && i=0 && "
            f'while [ $i -lt {fill} ]; do set -- "$@" /tmp/seed; i=$((i+1)); done && '
            'cat "$@" > /tmp/fill && rm /tmp/seed', timeout=1800)
        return fill

    def cleanup(self):
        for vm in self.vms.values():
            vm.kill()
        for d in (self.fast, self.shm):
            shutil.rmtree(d, ignore_errors=True)


# ---- the bridge log: where a resume's time goes ----

STEP_PATTERNS = [  # (step name, regex on the message) in the order a resume passes them
    ("queued", re.compile(r"lifecycle: resume starts")),
    ("spawned", re.compile(r"lifecycle: QEMU started, pid \d+ \(waiting")),
    ("qmp", re.compile(r"qmp: connected")),
    ("loaded", re.compile(r"lifecycle: checkpoint \S+ loaded")),
    ("resumed", re.compile(r"lifecycle: resumed from")),
]
TS = re.compile(r"^(\d+):(\d+):(\d+(?:\.\d+)?) ")


def resume_steps(log_text, name):
    """Milliseconds between the steps of the last resume of VM name in the bridge log:
    {start: spawn, spawn: qmp, qmp: load done, load done: cont done} (keys below)."""
    marks = {}
    for line in log_text.splitlines():
        if f"vm={name}:" not in line and f"vm={name} " not in line:
            continue
        m = TS.match(line)
        if not m:
            continue
        t = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
        for step, rx in STEP_PATTERNS:
            if rx.search(line):
                if step == "queued":
                    marks = {}
                marks[step] = t
    order = [s for s, _ in STEP_PATTERNS]
    if not all(s in marks for s in order):
        return None
    names = ["start QEMU", "QMP connect", "load", "ports + cont"]
    return {n: (marks[b] - marks[a]) * 1000 for n, a, b in zip(names, order, order[1:])}


# ---- QEMU's own view of a copy-path checkpoint ----

class MigrationWatch:
    """Polls query-migrate on the VM's test monitor (qmp-test.sock, not the bridge's) while
    the bridge suspends it: QEMU's own total-time, setup-time, throughput and page counts,
    to tell the bridge's share of checkpoint_ms from QEMU's."""

    def __init__(self, vm):
        self.qmp = QMP(vm.qmp_test_sock, timeout=10)
        self.last, self.stop = {}, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                info = self.qmp.cmd("query-migrate", _timeout=5)
            except Exception:  # noqa: BLE001 (QEMU quits after the checkpoint)
                return
            if info.get("status"):
                self.last = info
            if info.get("status") in ("completed", "failed", "cancelled"):
                return
            time.sleep(0.02)

    def result(self):
        self.stop.set()
        self.thread.join(10)
        self.qmp.close()
        ram = self.last.get("ram", {})
        return {"status": self.last.get("status"), "total_ms": self.last.get("total-time"),
                "setup_ms": self.last.get("setup-time"), "mbps": ram.get("mbps"),
                "transferred": ram.get("transferred"), "normal": ram.get("normal"),
                "duplicate": ram.get("duplicate"), "dirty_syncs": ram.get("dirty-sync-count"),
                "pages_per_s": ram.get("pages-per-second")}


# ---- 1/2: suspend and resume vs RAM size ----

def measure_size_path(b, label, prefix, size, reps, log_mark, fill, watch_rep=0):
    name = f"{prefix}{mib(size)}"
    bl.log(f"{label} {size}: start {name}")
    b.start_vm(name)
    filled = b.fill(name, fill)
    rows = {"suspend": [], "resume": [], "checkpoint_ms": [], "bytes": [], "steps": []}
    floor = None
    rows["qemu_migrate"] = None
    for rep in range(reps):
        b.vms[name].detach()  # the test monitor takes one client at a time
        watch = MigrationWatch(b.vms[name]) if rep == watch_rep else None
        ok, ans = b.suspend(name)
        if watch:
            rows["qemu_migrate"], rows["qemu_migrate_rep"] = watch.result(), rep
            bl.log(f"  QEMU's view: {rows['qemu_migrate']}")
        if not ok:
            raise RuntimeError(f"suspend {name}: {ans}")
        rows["suspend"].append(ans["total_ms"])
        rows["checkpoint_ms"].append(ans.get("checkpoint_ms", 0))
        st = b.status(name)
        ck = st.get("checkpoint", {})
        rows["bytes"].append(os.path.getsize(ck["state_file"]) if ck.get("state_file") else 0)
        if rep == 0 and not ans.get("zero_copy"):
            # dd to the same tier, same size as the checkpoint, in this run, VM suspended
            tier_dir = os.path.dirname(ck["state_file"])
            floor = lcs.dd_mib_s(tier_dir, max(64, rows["bytes"][0] >> 20))
        ok, ans = b.resume(name)
        if not ok:
            raise RuntimeError(f"resume {name}: {ans}")
        rows["resume"].append(ans["total_ms"])
        rows["steps"].append(resume_steps(b.bridge.log()[log_mark():], name))
        bl.log(f"  rep {rep + 1}: suspend {rows['suspend'][-1]:.0f} ms, resume "
               f"{rows['resume'][-1]:.0f} ms")
    b.stop_vm(name)
    rows["filled_mib"] = filled
    rows["dd_mib_s"] = floor
    return rows


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ---- 3: storm ----

def probe_rtts(vm, stop, out):
    """Agent round trips (`true` in the guest) back to back until stop is set, ms."""
    while not stop.is_set():
        t0 = time.monotonic()
        vm.check("true")
        out.append((time.monotonic() - t0) * 1000)


def storm(b, names, label):
    """Suspend all names at once while the probe VM measures its round trip; then resume
    them. {span_s, per_vm_ms, rtt_ms}."""
    stop, rtts, answers = threading.Event(), [], {}
    probe = threading.Thread(target=probe_rtts, args=(b.vms["probe"], stop, rtts))
    for n in names:
        b.vms[n].detach()

    def go(n):
        answers[n] = b.lc("suspend", n, timeout=600)
    threads = [threading.Thread(target=go, args=(n,)) for n in names]
    probe.start()
    time.sleep(1)
    t0 = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    span = time.monotonic() - t0
    stop.set()
    probe.join()
    bad = {n: a for n, (ok, a) in answers.items() if not ok}
    if bad:
        raise RuntimeError(f"storm {label}: suspends failed: {bad}")
    bl.log(f"storm {label}: {span:.1f} s, probe {len(rtts)} round trips, median "
           f"{median(rtts):.0f} ms")
    for n in names:
        ok, ans = b.resume(n)
        if not ok:
            raise RuntimeError(f"resume {n} after the storm: {ans}")
    return {"span_s": span, "per_vm_ms": [answers[n][1]["total_ms"] for n in names],
            "rtt_ms": rtts}


def baseline(b, seconds=6):
    stop, rtts = threading.Event(), []
    th = threading.Thread(target=probe_rtts, args=(b.vms["probe"], stop, rtts))
    th.start()
    time.sleep(seconds)
    stop.set()
    th.join()
    return rtts


def measure_storm(b, fill):
    names = [f"st{i}" for i in range(1, STORM_VMS + 1)]
    for n in names + ["probe"]:
        bl.log(f"storm: start {n}")
        b.start_vm(n)
    for n in names:
        b.fill(n, fill)
    res = {"baseline": baseline(b)}
    res["unthrottled"] = storm(b, names, "unthrottled")
    res["baseline2"] = baseline(b)
    b.bridge.bridge_options.update(THROTTLE)
    for n in names + ["probe"]:
        b.vms[n].detach()
    b.bridge.restart()
    wait_until(lambda: all(b.status(n).get("qmp") for n in names + ["probe"]), 60, "QMP")
    for n in names + ["probe"]:
        b.vms[n].attach()
        b.vms[n].wait_ready(60)
    res["throttled"] = storm(b, names, "throttled")
    for k in THROTTLE:
        b.bridge.bridge_options.pop(k)
    for n in names + ["probe"]:
        b.stop_vm(n)
    return res


# ---- output ----

def fmt_ms(ms):
    return f"{ms:.0f}" if ms >= 10 else f"{ms:.1f}"


def markdown(sizes, data, storm_res, reps):
    out = [f"### Suspend and resume vs RAM size (median of {reps}; `vmstate-admin -j` "
           "total_ms)", "",
           "| path | RAM | filled | suspend ms | checkpoint ms (median; each rep) | checkpoint size | "
           "resume ms | copy MiB/s | dd MiB/s (same tier) | ratio |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for label in PATHS:
        for size in sizes:
            r = data.get((label, size))
            if r is None:
                out.append(f"| {label} | {size} | not measured | | | | | | | |")
                continue
            ck = median(r["checkpoint_ms"])
            size_mib = median(r["bytes"]) / (1 << 20)
            size_txt = f"{size_mib:.0f} MiB" if size_mib >= 10 else f"{median(r['bytes']) / 1024:.0f} KiB"
            rate = size_mib / (ck / 1000) if label != "zero-copy" and ck else None
            ratio = rate / r["dd_mib_s"] if rate and r["dd_mib_s"] else None
            r["copy_mib_s"], r["ratio"] = rate, ratio
            dd = r["dd_mib_s"]
            out.append(
                f"| {label} | {size} | {r['filled_mib']} MiB | {fmt_ms(median(r['suspend']))} | "
                f"{fmt_ms(ck)}; {' / '.join(fmt_ms(x) for x in r['checkpoint_ms'])} | {size_txt} | {fmt_ms(median(r['resume']))} | "
                f"{f'{rate:.0f}' if rate else '—'} | "
                f"{f'{dd:.0f}' if dd else '—'} | "
                f"{f'{ratio:.2f}' if ratio else '—'} |")
    out += ["", "### Where a resume goes (median ms per step, bridge log timestamps)", "",
            "| path | RAM | start QEMU | QMP connect | load | ports + cont | total |",
            "|---|---|---|---|---|---|---|"]
    for label in PATHS:
        for size in sizes:
            r = data.get((label, size))
            steps = [s for s in (r or {}).get("steps", []) if s]
            if not steps:
                continue
            cells = [fmt_ms(median([s[k] for s in steps])) for k in steps[0]]
            out.append(f"| {label} | {size} | " + " | ".join(cells) +
                       f" | {fmt_ms(median(r['resume']))} |")
    out += ["", "### QEMU's own view of the first checkpoint (query-migrate on the test monitor)", "",
            "| path | RAM | checkpoint ms (bridge) | QEMU migration ms | QEMU setup ms | "
            "QEMU MiB/s (its mbps) | normal pages | zero pages | dirty syncs |",
            "|---|---|---|---|---|---|---|---|---|"]
    for label in PATHS:
        for size in sizes:
            q = (data.get((label, size)) or {}).get("qemu_migrate")
            if not q or q.get("status") != "completed":
                continue
            ck_ms = data[(label, size)]["checkpoint_ms"][data[(label, size)].get("qemu_migrate_rep", 0)]
            out.append(f"| {label} | {size} | {fmt_ms(ck_ms)} | "
                       f"{q['total_ms'] or '—'} | {q['setup_ms']} | {q['mbps'] / 8.388608:.0f} | "
                       f"{q['normal']} | {q['duplicate']} | {q['dirty_syncs']} |")
    zc = [(s, median(data[("zero-copy", s)]["resume"])) for s in sizes
          if ("zero-copy", s) in data]
    if zc:
        worst = max(zc, key=lambda x: x[1])
        verdicts.append(f"- zero-copy resume < 50 ms at every size: "
                        f"{'met' if worst[1] < 50 else 'MISSED'} (worst {worst[1]:.0f} ms "
                        f"at {worst[0]}; " + ", ".join(f"{s} {v:.0f}" for s, v in zc) + ")")
    for label in ("copy, disk tier", "copy, tmpfs tier"):
        ratios = [(s, data[(label, s)].get("ratio")) for s in sizes if (label, s) in data]
        ratios = [(s, r) for s, r in ratios if r]
        if ratios:
            worst = min(ratios, key=lambda x: x[1])
            verdicts.append(f"- {label}: copy MiB/s ÷ dd MiB/s ≥ 0.8: "
                            f"{'met' if worst[1] >= 0.8 else 'MISSED'} (worst {worst[1]:.2f} at "
                            f"{worst[0]}; " + ", ".join(f"{s} {r:.2f}" for s, r in ratios) + ")")
    if storm_res:
        base = median(storm_res["baseline"] + storm_res["baseline2"])
        out += ["", f"### Storm: {STORM_VMS} × {STORM_MEM} copy-path suspends to the disk tier "
                "at once", "",
                "Probe: a running 256 MiB guest, test-agent round trip (`true` in the guest, "
                "timed on the host) back to back during the storm; baseline: the same with "
                "every VM idle, in the same run. Throttled: "
                + ", ".join(f"`{k} = {v}`" for k, v in THROTTLE.items()) + ".", "",
                "| storm | span s | suspend ms (per VM, median / max) | probe round trips | "
                "probe median ms | probe p99 ms | slowdown (median) |",
                "|---|---|---|---|---|---|---|",
                f"| none (baseline) | — | — | {len(storm_res['baseline']) + len(storm_res['baseline2'])} "
                f"| {fmt_ms(base)} | "
                f"{fmt_ms(bl.pct(storm_res['baseline'] + storm_res['baseline2'], 99))} | 1.00 |"]
        for kind in ("unthrottled", "throttled"):
            s = storm_res[kind]
            rt = s["rtt_ms"] or [float("nan")]
            out.append(f"| {kind} | {s['span_s']:.1f} | {fmt_ms(median(s['per_vm_ms']))} / "
                       f"{fmt_ms(max(s['per_vm_ms']))} | {len(s['rtt_ms'])} | "
                       f"{fmt_ms(median(rt))} | {fmt_ms(bl.pct(rt, 99))} | "
                       f"{median(rt) / base:.2f} |")
            s["slowdown"] = median(rt) / base
        verdicts.append(f"- storm slowdown of a running guest's round trip: unthrottled "
                        f"{storm_res['unthrottled']['slowdown']:.2f}×, throttled "
                        f"{storm_res['throttled']['slowdown']:.2f}× (no target; reported)")
    return out, verdicts


def plot(json_path, png):
    """bench/plot-lifecycle.py on the results; with Debian's python3 if ours lacks matplotlib."""
    script = os.path.join(bl.HERE, "plot-lifecycle.py")
    for py in dict.fromkeys([sys.executable, "/usr/bin/python3"]):
        if not os.access(py, os.X_OK):
            continue
        r = subprocess.run([py, script, json_path, png], capture_output=True, text=True)
        if r.returncode == 0:
            return True
        if r.returncode != 2:
            bl.log(f"plot failed: {r.stderr.strip()}")
            return False
    bl.log("no matplotlib (apt-get install python3-matplotlib): no plot")
    return False


def save(path, sizes, reps, fill, data, storm_res, verdicts=None):
    with open(path, "w") as f:
        json.dump({"sizes": sizes, "reps": reps, "fill": fill, "verdicts": verdicts or [],
                   "title": "vmstate managed VM resume vs RAM (TCG)",
                   "data": {f"{k[0]}|{k[1]}": v for k, v in data.items()},
                   "storm": storm_res}, f)


def main():
    ap = bl.common_args(__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sizes", default="256M,512M,1G,2G")
    ap.add_argument("--fill", type=float, default=0.5,
                    help="fraction of each guest's RAM filled before measuring (0.5)")
    ap.add_argument("--json", help="results as JSON (rewritten after each measurement)")
    ap.add_argument("--report", metavar="JSON",
                    help="only print the tables and plot from a (possibly partial) JSON")
    ap.add_argument("--plot", default=os.path.join(bl.HERE, "lifecycle-resume.png"))
    ap.add_argument("--no-storm", action="store_true")
    ap.add_argument("--paths", default=",".join(p for p, _ in PATHS.values()),
                    help="which paths, by VM prefix: zc (zero-copy), cd (copy, disk), cm "
                         "(copy, tmpfs)")
    ap.add_argument("--watch-rep", type=int, default=0,
                    help="the repetition (0-based) whose checkpoint QEMU's query-migrate is "
                         "polled for (every 20 ms); -1: none")
    a = ap.parse_args()
    t0 = time.monotonic()
    if a.report:
        with open(a.report) as f:
            res = json.load(f)
        sizes, reps, fill = res["sizes"], res["reps"], res["fill"]
        data = {tuple(k.split("|")): v for k, v in res["data"].items()}
        storm_res, wd, json_path = res["storm"], None, a.report
    else:
        sizes, reps, fill = a.sizes.split(","), a.reps, a.fill
        wd = bl.workdir(a, "lifecycle")
        json_path = a.json or os.path.join(wd, "lifecycle.json")
        data, storm_res = run_all(a, sizes, wd, json_path)
    rows, verdicts = markdown(sizes, data, storm_res, reps)
    save(json_path, sizes, reps, fill, data, storm_res, verdicts)
    if data and plot(json_path, a.plot):
        rows += ["", f"Plot: `bench/{os.path.basename(a.plot)}` (resume ms vs RAM, log-log)."]
    print("\n".join([f"Each guest filled {fill:.0%} of its RAM (capped at half less 32 MiB) "
                     "with random bytes before measuring.", ""] + rows +
                    ["", "Targets:", ""] + verdicts +
                    ["", f"(lifecycle benchmark: {(time.monotonic() - t0) / 60:.1f} min)"]))
    if wd and not a.workdir:
        shutil.rmtree(wd, ignore_errors=True)
    return 0 if data else 1


def run_all(a, sizes, wd, json_path):
    """Every measurement, the JSON saved after each (a killed run leaves what it got)."""
    b = Bench(a.image, a.builddir, wd, sizes)
    data, storm_res = {}, None
    mark = [0]
    try:
        b.bridge.start()
        for label, (prefix, _) in PATHS.items():
            for size in sizes if prefix in a.paths.split(",") else []:
                mark[0] = len(b.bridge.log())
                try:
                    data[(label, size)] = measure_size_path(b, label, prefix, size, a.reps,
                                                            lambda: mark[0], a.fill,
                                                            a.watch_rep)
                except Exception as e:  # noqa: BLE001 (one size failing leaves the others)
                    bl.log(f"{label} {size} failed: {type(e).__name__}: {e}")
                    b.vms[f"{prefix}{mib(size)}"].kill()
                save(json_path, sizes, a.reps, a.fill, data, storm_res)
        if not a.no_storm:
            try:
                storm_res = measure_storm(b, a.fill)
            except Exception as e:  # noqa: BLE001
                bl.log(f"storm failed: {type(e).__name__}: {e}")
    finally:
        b.bridge.stop()
        b.cleanup()
    return data, storm_res


if __name__ == "__main__":
    sys.exit(main())
