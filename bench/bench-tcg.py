#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Issue 18's TCG targets: the real path in a TCG guest, each figure against its floor
measured in the same guest in the same run.

Floors, all inside one guest (1 vCPU, TCG), on the guest's own system bus:
  port      guest -> port A -> host echo -> port B -> guest, 1 byte (bench-rtt's floor/guest)
  call      a D-Bus method call round trip to a trivial service (vsbench-dbus serve/call)
  signals   L unicast signals from a trivial emitter to L connections (vsbench-dbus fanout):
            last - first per round
  register  L connections x one trivial call (the same run's "register" line)
vmstate, same guest:
  hostinfo  app -> helper -> bridge -> helper -> app (vsbench-app rtt); target <= 1.5x
            (port + call)
  fan-out   L libvmstate handles listening, one hostinfo (vsbench-app fanout): last - first
            <= 1.3x the signal floor; L registrations <= 1.3x the registration floor
save and restore overhead with no hooks (app time - QEMU's job, bench-saverestore's method,
a guest of its own booted from the same image right after): save <= 1.5x and restore <= 2x
the hostinfo round trip median above.

Prints Markdown (floors, figures, targets with their ratios). Usage:
bench-tcg.py --image DIR --builddir BUILD [-n 500] [--listeners 1000] [--rounds 5]
             [--save-rounds 10]
"""
import importlib.util
import os
import sys
import time

import benchlib as bl
import vmstate_path as vp

FLOOR_NAME = "org.vmstate.BenchFloor"  # allowed by bench/guest-dbus-limits.conf


def sibling(name):
    """Import bench/NAME.py (a file name with dashes) as a module."""
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"),
                                                  os.path.join(bl.HERE, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def after(text, prefix):
    """The statistics line that starts with prefix, parsed."""
    for line in text.splitlines():
        if line.startswith(prefix):
            return bl.parse_stats_line(line[len(prefix):])
    raise RuntimeError(f"no {prefix!r} line in {text!r}")


def register_s(text):
    for line in text.splitlines():
        if line.startswith("register:"):
            return float(dict(kv.split("=") for kv in line.split()[1:])["total_s"])
    raise RuntimeError(f"no register line in {text!r}")


def wait_guest_file(vm, path, word, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc, out = vm.run(f"cat {path} 2>/dev/null")
        if word in out:
            return
        time.sleep(0.2)
    raise bl.harness.VMError(f"{path}: no {word!r} after {timeout} s")


def measure(a):
    rtt = sibling("bench-rtt")
    res = {}
    wd = bl.workdir(a, "tcg")
    with bl.VM(wd, a.image, mem=a.mem) as vm:
        bl.log(f"boot {vm.wait_ready():.1f} s")
        dev_a, dev_b = vm.port_device(bl.harness.PORT_A), vm.port_device(bl.harness.PORT_B)
        bl.log("floor: guest-originated port echo")
        res["port"] = rtt.floor_guest(vm, bl.host_prog(a, "vsbench-port"), dev_a, dev_b, a.n)
        bl.log("floor: D-Bus call, signals, registrations (trivial service in the guest)")
        svc = vm.spawn(f"exec vsbench-dbus serve {FLOOR_NAME}", log="/tmp/floor-svc.log")
        wait_guest_file(vm, "/tmp/floor-svc.log", "ready")
        res["call"] = bl.parse_stats_line(
            vm.check(f"vsbench-dbus call {FLOOR_NAME} {a.n}", timeout=60 + a.n * 0.1))
        out = vm.check(f"vsbench-dbus fanout {FLOOR_NAME} {a.listeners} {a.rounds} 2>&1",
                       timeout=900)
        res["sig"] = {k: after(out, k + ": ") for k in ("first", "last", "spread")}
        res["reg_floor"] = register_s(out)
        vm.run(f"kill {svc}")
        with vp.Path(a.builddir, wd, {"vm1": vm}, cost="test"):
            vp.start_guest(vm)
            vm.check("vsbench-app rtt 20", timeout=120)  # warm: secret verified, caches
            bl.log(f"vmstate hostinfo x {a.n}")
            res["rtt"] = bl.parse_stats_line(
                vm.check(f"vsbench-app rtt {a.n}", timeout=120 + a.n * 0.2))
            bl.log(f"vmstate fan-out to {a.listeners} x {a.rounds}")
            out = vm.check(f"vsbench-app fanout {a.listeners} {a.rounds} 2>&1", timeout=900)
            res["fan"] = {k: after(out, k + ": ") for k in ("first", "last", "spread")}
            res["reg"] = register_s(out)
    if a.save_rounds:
        bl.log(f"save/restore overhead: 128M idle x {a.save_rounds}")
        sr = sibling("bench-saverestore").run_config(a, "128M", "idle", a.save_rounds)
        res["save"], res["restore"] = sr["save"], sr["restore"]
        res["restore_stages"] = sr["restore_stages"]
    return res


def report(a, r, machine, took):
    us = bl.fmt_us
    print(f"TCG guest ({a.mem}, 1 vCPU), the bench image; Argon2id cost `test`; bridge journal "
          f"on disk. Run took {took:.0f} s.\n")
    print("\n".join(machine))
    print("\n**Floors (in the guest, same run)**\n")
    print("| floor | N | median | p99 |")
    print("|---|---|---|---|")
    print(f"| port echo, guest → port A → host → port B → guest (1 byte) | {r['port']['n']} | "
          f"{us(r['port']['median'])} | {us(r['port']['p99'])} |")
    print(f"| D-Bus method call round trip, trivial service, guest system bus | "
          f"{r['call']['n']} | {us(r['call']['median'])} | {us(r['call']['p99'])} |")
    for k in ("first", "last", "spread"):
        s = r["sig"][k]
        print(f"| {a.listeners} unicast signals to {a.listeners} connections: {k} | {s['n']} | "
              f"{us(s['median'])} | {us(s['p99'])} |")
    print(f"| {a.listeners} connections × one trivial call (registration) | 1 | "
          f"{r['reg_floor'] * 1e3:.0f} ms | |")
    floor_rtt = r["port"]["median"] + r["call"]["median"]
    rtt = r["rtt"]["median"]
    print("\n**vmstate in the same guest**\n")
    print("| figure | median | p99 | floor (median) | ratio |")
    print("|---|---|---|---|---|")
    print(f"| hostinfo round trip ({r['rtt']['n']}) | {us(rtt)} | {us(r['rtt']['p99'])} | "
          f"port + call {us(floor_rtt)} | {rtt / floor_rtt:.2f}× |")
    fs, ss = r["fan"]["spread"]["median"], r["sig"]["spread"]["median"]
    print(f"| fan-out to {a.listeners}: last − first ({r['fan']['spread']['n']} rounds) | "
          f"{us(fs)} | {us(r['fan']['spread']['p99'])} | signals {us(ss)} | {fs / ss:.2f}× |")
    print(f"| fan-out: request → first listener | {us(r['fan']['first']['median'])} | "
          f"{us(r['fan']['first']['p99'])} | hostinfo {us(rtt)} | "
          f"{r['fan']['first']['median'] / rtt:.2f}× |")
    print(f"| {a.listeners} registrations (connect + RegisterListener) | "
          f"{r['reg'] * 1e3:.0f} ms | | {r['reg_floor'] * 1e3:.0f} ms | "
          f"{r['reg'] / r['reg_floor']:.2f}× |")
    t = [("hostinfo round trip ≤ 1.5× (port echo + D-Bus call, in the guest)",
          f"{rtt / floor_rtt:.2f}×", rtt / floor_rtt <= 1.5),
         (f"fan-out to {a.listeners} ≤ 1.3× the signal floor", f"{fs / ss:.2f}×", fs / ss <= 1.3),
         (f"{a.listeners} registrations ≤ 1.3× the registration floor",
          f"{r['reg'] / r['reg_floor']:.2f}×", r["reg"] / r["reg_floor"] <= 1.3)]
    if "save" in r:
        print(f"\n**Save and restore overhead, no hooks** (128M idle guest of its own, "
              f"{a.save_rounds} rounds; app time − QEMU's job)\n")
        print("| op | app: request → event (median) | QEMU job (median) | overhead median | "
              "p99 | ÷ hostinfo round trip |")
        print("|---|---|---|---|---|---|")
        for op, lim in (("save", 1.5), ("restore", 2.0)):
            app, job, ovh = r[op]
            print(f"| {op} | {us(app['median'])} | {us(job['median'])} | {us(ovh['median'])} | "
                  f"{us(ovh['p99'])} | {ovh['median'] / rtt:.2f}× |")
            t.append((f"{op} overhead ≤ {lim}× the hostinfo round trip",
                      f"{ovh['median'] / rtt:.2f}× ({us(ovh['median'])})",
                      ovh["median"] / rtt <= lim))
        if r["restore_stages"]:
            print("\nWhere a restore goes (the bridge's log, ms resolution, between the app's "
                  "marks):\n")
            print("| stage | median | p99 |")
            print("|---|---|---|")
            for k, s in r["restore_stages"].items():
                print(f"| {k} | {us(s['median'])} | {us(s['p99'])} |")
    print("\n**Targets (issue 18, TCG guest)**\n")
    print("| target | measured | verdict |")
    print("|---|---|---|")
    for what, got, ok in t:
        print(f"| {what} | {got} | {'**met**' if ok else '**missed**'} |")


def main():
    ap = bl.common_args(__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=500, help="round trips per latency figure")
    ap.add_argument("--mem", default="128M")
    ap.add_argument("--listeners", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5, help="fan-out rounds")
    ap.add_argument("--save-rounds", type=int, default=10, help="save+restore rounds (0: skip)")
    a = ap.parse_args()
    machine = bl.machine()
    t0 = time.time()
    res = measure(a)
    report(a, res, machine, time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
