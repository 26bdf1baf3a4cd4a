#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Group benchmark (issue 16): stop and resume skew of a group of 2, 4 and 8 VMs, idle and
busy guests, and the time from T to all suspended — against the floor measured in the same
run.

Usage: bench-groups.py --image DIR --builddir BUILD [--sizes 2,4,8] [--reps 5]
                       [--modes idle,busy] [--workdir DIR] [--json F]

Floor: N bare QEMUs (the test image, no bridge), each with its QMP socket connected by this
script; at one CLOCK_REALTIME deadline it sends `stop` to all of them back to back, then
(next deadline) `cont`: the skew of QEMU's own STOP / RESUME event timestamps is what any
coordinator on this host gets at best. As the bridge does, each command is primed (written
but its closing brace ahead of the deadline: QEMU's monitor reads a byte per main-loop turn)
and the virtio-serial bus has no ioeventfds (QEMU tears one down per virtqueue at a stop).
The plain floor (whole commands at the deadline, QEMU's default devices: what the bridge did
before) is measured too, for the gain. vmstate: the same N guests as managed VMs over 2
bridges (N/2 each; bridge A the control instance, B its [peer]); `vmstate-admin group
suspend G T` then `group resume G T2 preserve`: the skew of the STOP / RESUME timestamps
the bridges report, and T -> all suspended (the stop, then every VM's checkpoint written
and its QEMU gone: the answer's arrival minus T). Busy guests run `while :; do :; done` (one
vCPU each, TCG). Guests have 128 MiB, zero-copy checkpoints on /dev/shm.

Markdown on stdout, progress on stderr.
"""
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time

import benchlib as bl
from vmstest import Bridge
from vmstest.managed import ManagedVM

MEM = "128M"
LEAD_S = 3.0        # T ahead of the command (prepare and commit take ms)
RESUME_LEAD_S = 5.0  # resume: every QEMU loads its checkpoint before T2


class RawQMP:
    """A minimal QMP client: commands without waiting, events with QEMU's timestamps."""

    def __init__(self, path, timeout=30):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.buf = b""
        self.events = []
        self.read_msg()  # greeting
        self.cmd("qmp_capabilities")

    def read_msg(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("QMP closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        msg = json.loads(line)
        if "event" in msg:
            self.events.append(msg)
        return msg

    def send(self, cmd):
        self.s.sendall(json.dumps({"execute": cmd}).encode() + b"\n")

    def cmd(self, cmd):
        self.send(cmd)
        while True:
            m = self.read_msg()
            if "return" in m or "error" in m:
                return m

    def wait_event(self, name):
        """QEMU's timestamp of event @name (µs since the epoch)."""
        while True:
            for i, e in enumerate(self.events):
                if e["event"] == name:
                    del self.events[: i + 1]
                    ts = e["timestamp"]
                    return ts["seconds"] * 1_000_000 + ts["microseconds"]
            self.read_msg()

    def close(self):
        self.s.close()


def sleep_until(t):
    """Sleep to about 2 ms before CLOCK_REALTIME @t, then spin (as a timerfd would wake)."""
    while True:
        left = t - time.time()
        if left <= 0:
            return
        time.sleep(left - 0.002 if left > 0.003 else 0)


def summary(samples_ms):
    if not samples_ms:
        return {}
    return {"n": len(samples_ms), "median": statistics.median(samples_ms),
            "p90": bl.pct(samples_ms, 90), "p99": bl.pct(samples_ms, 99),
            "max": max(samples_ms)}


def make_busy(vms):
    for vm in vms:
        vm.spawn("sh -c 'while :; do :; done'")


def floor(image, wd, n, modes, reps, primed=True):
    """Bare QEMUs: skews of stop and cont sent at one deadline, {mode: (stops, conts)} (ms).
    One boot for every mode: idle first, then the guests are made busy. @primed: commands
    primed and no ioeventfds on the virtio-serial bus, as the bridge does; else whole
    commands at the deadline and QEMU's default devices."""
    vms = [bl.harness.VM(os.path.join(wd, f"f{n}-{i}{'' if primed else 'p'}"), image, mem=MEM,
                         vser_opts="ioeventfd=off" if primed else "")
           for i in range(n)]
    out = {}
    try:
        for vm in vms:  # one boot at a time: 8 TCG boots at once on 2 cores time out
            vm.start()
            vm.wait_ready(300)
        qmps = [RawQMP(vm.qmp_sock) for vm in vms]
        for mode in modes:
            if mode == "busy":
                make_busy(vms)
            stops, conts = out.setdefault(mode, ([], []))
            for r in range(reps):
                for what, event, lst in (("stop", "STOP", stops), ("cont", "RESUME", conts)):
                    at = time.time() + 1.0
                    if primed:
                        for q in qmps:
                            q.s.sendall(json.dumps({"execute": what}).encode()[:-1])
                    sleep_until(at)
                    for q in qmps:
                        if primed:
                            q.s.sendall(b"}\n")
                        else:
                            q.send(what)
                    ts = [q.wait_event(event) for q in qmps]
                    lst.append((max(ts) - min(ts)) / 1000.0)
                    time.sleep(0.5)
                bl.log(f"floor n={n} {mode} rep {r + 1}: STOP skew {stops[-1]:.3f} ms, "
                       f"RESUME skew {conts[-1]:.3f} ms")
        for q in qmps:
            q.close()
    finally:
        for vm in vms:
            vm.kill()
    return out


def ask_ctl(bridge, sock, *args, timeout=600):
    return bridge.ctl(*args, sock=sock, timeout=timeout, retry=False)


def event_skew(ans, key):
    ts = [v[key] for b in ans.get("bridges", []) for v in b.get("vms", []) if v.get(key)]
    return (max(ts) - min(ts)) / 1000.0 if ts else None, len(ts)


def vmstate(image, builddir, wd, n, modes, reps):
    """N managed VMs over 2 bridges: skews of group suspend and resume, T -> all suspended,
    {mode: (stops, conts, to_suspended)} (ms). One boot for every mode, as floor()."""
    fast = tempfile.mkdtemp(prefix="vmsbg-", dir="/dev/shm")
    names = {"a": [f"v{n}-{i}" for i in range(0, n, 2)],
             "b": [f"v{n}-{i}" for i in range(1, n, 2)]}
    socks = {b: os.path.join(wd, f"adm-{n}-{b}.sock") for b in names}
    vms, bridges, out = {}, {}, {}
    try:
        for b, ns in names.items():
            mvs = {x: ManagedVM(os.path.join(wd, x), image, mem=MEM) for x in ns}
            vms.update(mvs)
            per_vm = {x: mvs[x].section(rapid="on", fast_tier="fast") for x in ns}
            sections = {"tier fast": {"path": fast, "capacity": "4G", "class": "fast"}}
            if b == "a":
                sections["peer b"] = {"admin_socket": socks["b"]}
            bridges[b] = Bridge(builddir, os.path.join(wd, f"bridge-{n}-{b}"), mvs,
                                per_vm=per_vm, log_level="info",
                                bridge_options={"admin_socket": socks[b], "state_margin": "64M",
                                                "group_require_clock_sync": "no",
                                                "group_min_lead_ms": 500},
                                sections=sections)
            bridges[b].start()
        for b, ns in names.items():
            for x in ns:  # one boot at a time (as the floor's)
                ok, ans = bridges[b].ctl("start", x, sock=socks[b], timeout=300)
                if not ok:
                    raise RuntimeError(f"start {x}: {ans}")
                vms[x].attach()
                vms[x].wait_ready(300)
        a = bridges["a"]
        ask_ctl(a, socks["a"], "group", "create", "bg")
        for b, ns in names.items():
            for x in ns:
                ask_ctl(a, socks["a"], "group", "add", "bg", x, *(["b"] if b == "b" else []))
        for mode in modes:
            if mode == "busy":  # the loops go on across suspend/resume: they are in the state
                for vm in vms.values():
                    vm.attach()
                make_busy(vms.values())
            stops, conts, to_suspended = out.setdefault(mode, ([], [], []))
            for r in range(reps):
                for vm in vms.values():
                    vm.detach()
                at = time.time() + LEAD_S
                ok, ans = ask_ctl(a, socks["a"], "group", "suspend", "bg", f"{at:.6f}")
                done = time.time()
                if not ok:
                    raise RuntimeError(f"group suspend: {ans.get('error')}")
                skew, k = event_skew(ans, "stop_event_us")
                stops.append(skew)
                to_suspended.append((done - at) * 1000.0)
                at2 = time.time() + RESUME_LEAD_S
                ok, ans = ask_ctl(a, socks["a"], "group", "resume", "bg", f"{at2:.6f}",
                                  "preserve")
                if not ok:
                    raise RuntimeError(f"group resume: {ans.get('error')}")
                skew2, k2 = event_skew(ans, "resume_event_us")
                conts.append(skew2)
                bl.log(f"n={n} {mode} rep {r + 1}: STOP skew {skew:.3f} ms ({k} VMs), "
                       f"T -> all suspended {to_suspended[-1]:.0f} ms, RESUME skew "
                       f"{skew2:.3f} ms")
                time.sleep(0.5)
    finally:
        for vm in vms.values():
            vm.kill()
        for b in bridges.values():
            b.stop()
        shutil.rmtree(fast, ignore_errors=True)
    return out


def fmt(s):
    return (f"{s['median']:.3f} / {s['p90']:.3f} / {s['p99']:.3f} / {s['max']:.3f}"
            if s else "-")


def ratio(a, b):
    return f"{a['median'] / b['median']:.1f}x" if a and b and b["median"] > 0 else "-"


def main():
    ap = bl.common_args(__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2,4,8")
    ap.add_argument("--modes", default="idle,busy")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    wd = args.workdir or tempfile.mkdtemp(prefix="vmsbg-", dir="/tmp")
    os.makedirs(wd, exist_ok=True)
    rows, raw = [], {}
    load0 = os.getloadavg()
    print("\n".join(bl.machine()))
    print(f"- guests: {MEM}, 1 vCPU, TCG; {args.reps} runs per row; bridges: 2 (N/2 VMs each)")
    print()
    modes = args.modes.split(",")
    for n in [int(x) for x in args.sizes.split(",")]:
        try:
            bl.log(f"floor: {n} bare QEMUs, {modes}")
            fl = floor(args.image, wd, n, modes, args.reps)
            bl.log(f"plain floor: {n} bare QEMUs, whole commands, default devices")
            fp = floor(args.image, wd, n, modes, args.reps, primed=False)
            bl.log(f"vmstate: {n} managed VMs, {modes}")
            vs = vmstate(args.image, args.builddir, wd, n, modes, args.reps)
        except Exception as e:  # noqa: BLE001 (a size that fails leaves the others' rows)
            bl.log(f"{n} VMs: {type(e).__name__}: {e}")
            print(f"- {n} VMs: not measured: {type(e).__name__}: {e}")
            continue
        for mode in modes:
            (f_stop, f_cont), (v_stop, v_cont, v_susp) = fl[mode], vs[mode]
            p_stop, p_cont = fp[mode]
            s = {"floor_stop": summary(f_stop), "floor_cont": summary(f_cont),
                 "plain_stop": summary(p_stop), "plain_cont": summary(p_cont),
                 "stop": summary(v_stop), "resume": summary(v_cont),
                 "t_to_suspended": summary(v_susp)}
            raw[f"{n}-{mode}"] = {"floor_stop": f_stop, "floor_cont": f_cont,
                                  "plain_stop": p_stop, "plain_cont": p_cont, "stop": v_stop,
                                  "resume": v_cont, "t_to_suspended": v_susp, **s}
            rows.append((n, mode, s))
    print("STOP and RESUME skew: max - min of QEMU's event timestamps over the group's VMs, "
          "ms, as median / p90 / p99 / max over the runs; floor = bare QEMUs sent primed "
          "stop/cont at one deadline by one process, no bridge; plain floor = whole commands, "
          "QEMU's default devices.")
    print()
    print("| VMs | guests | STOP skew plain floor | STOP skew floor | STOP skew vmstate | ratio "
          "| RESUME skew plain floor | RESUME skew floor | RESUME skew vmstate | ratio "
          "| T -> all suspended (median / max) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n, mode, s in rows:
        ts = s["t_to_suspended"]
        print(f"| {n} | {mode} | {fmt(s['plain_stop'])} | {fmt(s['floor_stop'])} | "
              f"{fmt(s['stop'])} | "
              f"{ratio(s['stop'], s['floor_stop'])} | {fmt(s['plain_cont'])} | "
              f"{fmt(s['floor_cont'])} | "
              f"{fmt(s['resume'])} | {ratio(s['resume'], s['floor_cont'])} | "
              f"{ts['median']:.0f} / {ts['max']:.0f} ms |")
    print()
    print(f"- load average at start {' '.join(f'{x:.2f}' for x in load0)}, at the end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)
    if not args.workdir:
        shutil.rmtree(wd, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
