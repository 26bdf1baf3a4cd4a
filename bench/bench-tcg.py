#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Issue 18's TCG targets: the real path in a TCG guest, each figure against its floor
measured in the same guest in the same run.

Floors, all inside one guest (1 vCPU, TCG), on the guest's own system bus:
  port      guest -> port A -> host echo -> port B -> guest, 1 byte (bench-rtt's floor/guest)
  call      a D-Bus method call round trip to a trivial service (vsbench-dbus serve/call)
  async     the same service answers at once, then sends a unicast signal to the caller:
            call -> signal (vsbench-dbus async), the floor of any API that answers at once
            and reports later; (port + async) / (port + call) is that design's own ratio
  design    a hostinfo's design floor in one chain (vsbench-dbus relay and design, the host
            side two echoes standing in for the privsep reader and the bridge): every hop of
            vmstate's round trip with no work in any; measured once, before the blocks
  signals   L unicast signals from a trivial emitter to L connections (vsbench-dbus fanout):
            last - first per round; again with the body of a hostinfo's Completed
            (VSBENCH_SHAPE=completed): the message's own cost, without vmstate's code
  register  L connections x one trivial call (the same run's "register" line); again with a
            service that asks the bus for each caller's uid first (VSBENCH_UID=1), as the
            helper must; and with its subscribers also adding a libvmstate handle's three
            match rules (VSBENCH_MATCHES=1): a registration's design floor
vmstate, same guest:
  hostinfo  app -> helper -> bridge -> helper -> app (vsbench-app rtt); target <= 1.5x
            (port + call)
  fan-out   L libvmstate handles listening, one hostinfo (vsbench-app fanout): last - first
            <= 1.3x the signal floor; L registrations <= 1.3x the registration floor
save and restore overhead with no hooks (app time - QEMU's job, bench-saverestore's method,
a guest of its own booted from the same image right after): save <= 1.5x and restore <= 2x
the hostinfo round trip median above; and their floor, the same rounds with vmstate out of
the way (bench-saverestore's run_floor: one byte each way around the same QMP jobs, in a
third guest), as a ratio to the same hostinfo round trip. Each of those saves follows a
restore, which leaves the guest's code to be translated again: "warm save" is the same
number of saves in a row (vsbench-app saves), with its own floor, and with the design's
floor measured in one chain (run_floor design: `vsbench-dbus relay` in the guest, the same
hops as vmstate's around the same job, two durable commits on the host, no vmstate code).

Prints Markdown (floors, figures, targets with their ratios). Usage:
bench-tcg.py --image DIR --builddir BUILD [-n 500] [--listeners 1000] [--rounds 5]
             [--blocks 5] [--fan-blocks 2] [--save-rounds 10]
The floors and vmstate's figures alternate in blocks, each ratio to its own block's floor
(the port echo's floor comes first: the vmstate path then holds the ports).
"""
import importlib.util
import os
import statistics
import subprocess
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


def register_s(text):
    for line in text.splitlines():
        if line.startswith("register:"):
            return float(dict(kv.split("=") for kv in line.split()[1:])["total_s"])
    raise RuntimeError(f"no register line in {text!r}")


def ratio_blocks(pairs):
    """[(ours, floor)] per block -> {"ratio": median ratio, "lo": min, "hi": max}."""
    rs = sorted(o / f for o, f in pairs)
    return {"ratio": statistics.median(rs), "lo": rs[0], "hi": rs[-1], "n": len(rs)}


def floor_service(vm, old=None, env=""):
    """Start the trivial floor service in the guest (after stopping @old, a pid), with @env
    ("VAR=value ") before it; its pid once it owns its name."""
    if old:
        vm.run(f"kill {old}; while kill -0 {old} 2>/dev/null; do sleep 0.05; done")
    pid = vm.spawn(f"{env}exec vsbench-dbus serve {FLOOR_NAME}", log="/tmp/floor-svc.log")
    bl.wait_guest_file(vm, "/tmp/floor-svc.log", "ready")
    return pid


def design_floor_guest(a, vm, dev_a, dev_b, n):
    """A hostinfo's design floor in one chain, in the guest (bench-native's, with the guest's
    real ports): `vsbench-dbus relay` (Completed's body) between the guest's bus and the
    ports, the host side two echoes (the privsep reader's and the bridge's stand-ins) joined
    by a socketpair; `vsbench-dbus design` timed in the guest. Needs the ports free and
    FLOOR_NAME unowned."""
    with bl.design_floor_host(bl.host_prog(a, "vsbench-port"), f"unix:{vm.a_sock}",
                              f"unix:{vm.b_sock}"):
        pid = vm.spawn(f"VSBENCH_SHAPE=completed exec vsbench-dbus relay {FLOOR_NAME} {dev_a} "
                       f"{dev_b}", log="/tmp/design-relay.log")
        bl.wait_guest_file(vm, "/tmp/design-relay.log", "ready")
        out = vm.check(f"vsbench-dbus design {FLOOR_NAME} {n}", timeout=60 + n * 0.1)
        vm.run(f"kill {pid}; while kill -0 {pid} 2>/dev/null; do sleep 0.05; done")
    return bl.stats_after(out)


def settle(vm, timeout=60):
    """Wait until the guest's CPU is idle for a second (/proc/stat: idle ticks ≥ 90 %)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc, out = vm.run("head -1 /proc/stat; sleep 1; head -1 /proc/stat")
        t0, t1 = ([int(x) for x in ln.split()[1:]] for ln in out.strip().splitlines()[:2])
        d = [y - x for x, y in zip(t0, t1)]
        if sum(d) and d[3] / sum(d) >= 0.9:
            return
    bl.log("warning: the guest stayed busy")


def measure(a):
    """The floors and vmstate's figures alternate in blocks (this host's speed drifts over
    minutes: a floor measured once, minutes before the figure, gave ratios 2x apart from run
    to run); each block's ratio uses that block's floor."""
    rtt = sibling("bench-rtt")
    res = {"rtt_blocks": [], "fan_blocks": [], "reg_blocks": [], "reg_uid_blocks": [],
           "reg_to_uid_blocks": [], "reg_design_blocks": [], "reg_to_design_blocks": []}
    wd = bl.workdir(a, "tcg")
    per = max(20, a.n // a.blocks)
    with bl.VM(wd, a.image, mem=a.mem) as vm:
        bl.log(f"boot {vm.wait_ready():.1f} s")
        dev_a, dev_b = vm.port_device(bl.harness.PORT_A), vm.port_device(bl.harness.PORT_B)
        # the ports are the vmstate path's once it runs: their floor comes first
        bl.log("floor: guest-originated port echo")
        res["port"] = rtt.floor_guest(vm, bl.host_prog(a, "vsbench-port"), dev_a, dev_b, a.n)
        bl.log("floor: a hostinfo's design floor in one chain")
        res["design"] = design_floor_guest(a, vm, dev_a, dev_b, a.n)
        svc = floor_service(vm)
        with vp.Path(a.builddir, wd, {"vm1": vm}, cost="test"):
            vp.start_guest(vm)
            vm.check("vsbench-app rtt 20", timeout=120)  # warm: secret verified, caches
            calls, asyncs, rtts = [], [], []
            res["async_blocks"], res["rtt_async_blocks"] = [], []
            res["shaped_blocks"], res["fan_shaped_blocks"] = [], []
            for b in range(a.blocks):
                bl.log(f"block {b + 1}/{a.blocks}: D-Bus call and async floors, hostinfo x {per}")
                calls.append(bl.stats_after(
                    vm.check(f"vsbench-dbus call {FLOOR_NAME} {per}", timeout=60 + per * 0.1)))
                asyncs.append(bl.stats_after(
                    vm.check(f"vsbench-dbus async {FLOOR_NAME} {per}", timeout=60 + per * 0.1)))
                rtts.append(bl.stats_after(
                    vm.check(f"vsbench-app rtt {per}", timeout=120 + per * 0.2)))
                floor = res["port"]["median"] + calls[-1]["median"]
                res["rtt_blocks"].append((rtts[-1]["median"], floor))
                floor_async = res["port"]["median"] + asyncs[-1]["median"]
                res["async_blocks"].append((floor_async, floor))
                res["rtt_async_blocks"].append((rtts[-1]["median"], floor_async))
            res["call"], res["async"], res["rtt"] = pool(calls), pool(asyncs), pool(rtts)
            sigs, shaped, fans = [], [], []
            for b in range(a.fan_blocks):
                bl.log(f"block {b + 1}/{a.fan_blocks}: signal floor, fan-out to {a.listeners}")
                # a fresh service: it never forgets a subscriber, and the last block's 1000
                # (gone) would be sent to before this block's first
                svc = floor_service(vm, svc)
                out = vm.check(f"vsbench-dbus fanout {FLOOR_NAME} {a.listeners} {a.rounds} 2>&1",
                               timeout=900)
                sigs.append(({k: bl.stats_after(out, k + ": ") for k in ("first", "last", "spread")},
                             register_s(out)))
                # the same emitter with the body of a hostinfo's Completed: the message's own
                # cost in this guest, without vmstate's code
                settle(vm)
                svc = floor_service(vm, svc, "VSBENCH_SHAPE=completed ")
                out = vm.check(f"vsbench-dbus fanout {FLOOR_NAME} {a.listeners} {a.rounds} 2>&1",
                               timeout=900)
                shaped.append(bl.stats_after(out, "spread: "))
                settle(vm)
                # the registration floor of a service that knows its listener's uid, as the
                # helper must (rights are per uid; dbus-daemon sends no credentials)
                svc = floor_service(vm, svc, "VSBENCH_UID=1 ")
                uid_reg = register_s(vm.check(f"vsbench-dbus fanout {FLOOR_NAME} {a.listeners} "
                                              f"1 2>&1", timeout=900))
                settle(vm)
                # ... whose subscribers also add a libvmstate handle's three match rules (the
                # helper's restarts, its broadcasts, its properties: PrepareSave, Restored and
                # the States property reach every listener that way): a registration's design
                # floor
                svc = floor_service(vm, svc, "VSBENCH_UID=1 ")
                design_reg = register_s(vm.check(f"VSBENCH_MATCHES=1 vsbench-dbus fanout "
                                                 f"{FLOOR_NAME} {a.listeners} 1 2>&1",
                                                 timeout=900))
                settle(vm)
                out = vm.check(f"vsbench-app fanout {a.listeners} {a.rounds} 2>&1", timeout=900)
                fans.append(({k: bl.stats_after(out, k + ": ") for k in ("first", "last", "spread")},
                             register_s(out)))
                # the bus and the helper drop 1000 listeners after the fan-out: not on the
                # next block's floor
                settle(vm)
                res["fan_blocks"].append((fans[-1][0]["spread"]["median"],
                                          sigs[-1][0]["spread"]["median"]))
                res["shaped_blocks"].append((shaped[-1]["median"], sigs[-1][0]["spread"]["median"]))
                res["fan_shaped_blocks"].append((fans[-1][0]["spread"]["median"],
                                                 shaped[-1]["median"]))
                res["reg_blocks"].append((fans[-1][1], sigs[-1][1]))
                res["reg_uid_blocks"].append((uid_reg, sigs[-1][1]))
                res["reg_to_uid_blocks"].append((fans[-1][1], uid_reg))
                res["reg_design_blocks"].append((design_reg, sigs[-1][1]))
                res["reg_to_design_blocks"].append((fans[-1][1], design_reg))
                bl.log(f"  spread {res['fan_blocks'][-1][0] / 1e3:.1f} ms / floor "
                       f"{res['fan_blocks'][-1][1] / 1e3:.1f} ms; registrations "
                       f"{fans[-1][1]:.2f} s / floor {sigs[-1][1]:.2f} s")
            res["sig"] = {k: pool([x[0][k] for x in sigs]) for k in ("first", "last", "spread")}
            res["sig_shaped"] = pool(shaped)
            res["fan"] = {k: pool([x[0][k] for x in fans]) for k in ("first", "last", "spread")}
            res["reg_floor"] = statistics.median(x[1] for x in sigs)
            res["reg"] = statistics.median(x[1] for x in fans)
            res["reg_uid_floor"] = statistics.median(x[0] for x in res["reg_uid_blocks"])
            res["reg_design_floor"] = statistics.median(x[0] for x in res["reg_design_blocks"])
    for k in ("rtt", "async", "rtt_async", "fan", "shaped", "fan_shaped", "reg", "reg_uid",
              "reg_to_uid", "reg_design", "reg_to_design"):
        res[k + "_ratio"] = ratio_blocks(res[k + "_blocks"])
    if a.save_rounds:
        bl.log(f"save/restore overhead: 128M idle x {a.save_rounds}")
        srmod = sibling("bench-saverestore")
        sr = srmod.run_config(a, "128M", "idle", a.save_rounds)
        res["save"], res["restore"] = sr["save"], sr["restore"]
        res["save_stages"], res["restore_stages"] = sr["save_stages"], sr["restore_stages"]
        bl.log(f"save/restore floor (no vmstate): 128M idle x {a.save_rounds}")
        fl = srmod.run_floor(a, "128M", "idle", a.save_rounds)
        res["save_floor"], res["restore_floor"] = fl["save"], fl["restore"]
        # each save above follows a restore, which leaves the guest's code untranslated: the
        # same saves in a row in a warm guest, and their floor
        bl.log(f"saves in a row, and their floor: 128M idle x {a.save_rounds}")
        sw = srmod.run_config(a, "128M", "idle", a.save_rounds, saves_only=True)
        res["warm save"], res["warm save_stages"] = sw["save"], sw["save_stages"]
        res["warm save_floor"] = srmod.run_floor(a, "128M", "idle", a.save_rounds,
                                                 saves_only=True)["save"]
        # the design's floor measured in one chain, not summed from floors measured warm:
        # the D-Bus hops after the resume run in a guest whose code and TLB went cold
        bl.log(f"saves in a row through a bare relay (the design floor): 128M idle x "
               f"{a.save_rounds}")
        dz = srmod.run_floor(a, "128M", "idle", a.save_rounds, saves_only=True, design=True)
        res["warm save_design"], res["warm save_design_stages"] = dz["save"], dz["save_stages"]
        # what the bridge must write durably per save, at the least: the accepted request
        # and its completion (a restart loses neither), each a commit like this one
        out = subprocess.run(
            [bl.host_prog(a, "vsbench-sqlite"), os.path.join(wd, "floor.db"), "200"],
            capture_output=True, text=True, check=True, timeout=600).stdout
        res["durable_row"] = bl.stats_after(out, "row: ")
    return res


def pool(stats):
    """Blocks' statistics lines as one: n summed, the median of the medians, the largest p99."""
    return {"n": sum(s["n"] for s in stats),
            "median": statistics.median(s["median"] for s in stats),
            "p99": max(s["p99"] for s in stats)}


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
    print(f"| … answered at once, then a unicast signal to the caller: call → signal | "
          f"{r['async']['n']} | {us(r['async']['median'])} | {us(r['async']['p99'])} |")
    for k in ("first", "last", "spread"):
        s = r["sig"][k]
        print(f"| {a.listeners} unicast signals to {a.listeners} connections: {k} | {s['n']} | "
              f"{us(s['median'])} | {us(s['p99'])} |")
    s = r["sig_shaped"]
    print(f"| … spread, each signal with the body of a hostinfo's Completed | {s['n']} | "
          f"{us(s['median'])} | {us(s['p99'])} |")
    print(f"| a hostinfo's design floor in one chain: call → bare service → port A → reader "
          f"stand-in → bridge stand-in → port B → Completed's body (`vsbench-dbus design`) | "
          f"{r['design']['n']} | {us(r['design']['median'])} | {us(r['design']['p99'])} |")
    print(f"| {a.listeners} connections × one trivial call (registration) | 1 | "
          f"{r['reg_floor'] * 1e3:.0f} ms | |")
    if "durable_row" in r:
        d = r["durable_row"]
        print(f"| a durable SQLite commit of one row, the journal's settings, on the host "
              f"(vsbench-sqlite) | {d['n']} | {us(d['median'])} | {us(d['p99'])} |")
    floor_rtt = r["port"]["median"] + r["call"]["median"]
    rtt = r["rtt"]["median"]

    def rat(k):
        x = r[k + "_ratio"]
        return f"{x['ratio']:.2f}× ({x['lo']:.2f}–{x['hi']:.2f}, {x['n']} blocks)"
    print(f"\n**vmstate in the same guest** (median of the blocks' medians; the ratio is the "
          f"median of the blocks' ratios, each to its own block's floor, with their range)\n")
    print("| figure | median | p99 | floor (median) | ratio |")
    print("|---|---|---|---|---|")
    print(f"| hostinfo round trip ({r['rtt']['n']}) | {us(rtt)} | {us(r['rtt']['p99'])} | "
          f"port + call {us(floor_rtt)} | {rat('rtt')} |")
    print(f"| the asynchronous floor: port + (call → signal) | "
          f"{us(r['port']['median'] + r['async']['median'])} | | port + call {us(floor_rtt)} | "
          f"{rat('async')} |")
    print(f"| hostinfo round trip ÷ the asynchronous floor | {us(rtt)} | | "
          f"{us(r['port']['median'] + r['async']['median'])} | {rat('rtt_async')} |")
    # measured once, before the blocks (it needs the ports): against the blocks' pooled call
    hi_design = r["design"]["median"]
    print(f"| a hostinfo's design floor in one chain (measured before the blocks) | "
          f"{us(hi_design)} | | port + call {us(floor_rtt)} | {hi_design / floor_rtt:.2f}× |")
    print(f"| hostinfo round trip ÷ the design floor | {us(rtt)} | | {us(hi_design)} | "
          f"{rtt / hi_design:.2f}× |")
    fs, ss = r["fan"]["spread"]["median"], r["sig"]["spread"]["median"]
    print(f"| fan-out to {a.listeners}: last − first ({r['fan']['spread']['n']} rounds) | "
          f"{us(fs)} | {us(r['fan']['spread']['p99'])} | signals {us(ss)} | {rat('fan')} |")
    print(f"| the signal floor with Completed's body (same emitter) | {us(r['sig_shaped']['median'])} "
          f"| | signals {us(ss)} | {rat('shaped')} |")
    print(f"| fan-out ÷ the signal floor with Completed's body | {us(fs)} | | "
          f"{us(r['sig_shaped']['median'])} | {rat('fan_shaped')} |")
    print(f"| fan-out: request → first listener | {us(r['fan']['first']['median'])} | "
          f"{us(r['fan']['first']['p99'])} | hostinfo {us(rtt)} | "
          f"{r['fan']['first']['median'] / rtt:.2f}× |")
    print(f"| {a.listeners} registrations (connect + RegisterListener) | "
          f"{r['reg'] * 1e3:.0f} ms | | {r['reg_floor'] * 1e3:.0f} ms | {rat('reg')} |")
    uid = r["reg_uid_floor"] * 1e3
    print(f"| the registration floor of a service that asks each caller's uid (VSBENCH_UID) | "
          f"{uid:.0f} ms | | {r['reg_floor'] * 1e3:.0f} ms | {rat('reg_uid')} |")
    print(f"| registrations ÷ that floor | {r['reg'] * 1e3:.0f} ms | | {uid:.0f} ms | "
          f"{rat('reg_to_uid')} |")
    design = r["reg_design_floor"] * 1e3
    print(f"| the registration's design floor: that service, each subscriber adding a libvmstate "
          f"handle's three match rules (VSBENCH_MATCHES) | {design:.0f} ms | | "
          f"{r['reg_floor'] * 1e3:.0f} ms | {rat('reg_design')} |")
    print(f"| registrations ÷ the design floor | {r['reg'] * 1e3:.0f} ms | | {design:.0f} ms | "
          f"{rat('reg_to_design')} |")
    t = [("hostinfo round trip ≤ 1.5× (port echo + D-Bus call, in the guest)",
          f"{rat('rtt')}; the design floor {hi_design / floor_rtt:.2f}×, vmstate "
          f"{rtt / hi_design:.2f}× that", r["rtt_ratio"]["ratio"] <= 1.5),
         (f"fan-out to {a.listeners} ≤ 1.3× the signal floor", rat("fan"),
          r["fan_ratio"]["ratio"] <= 1.3),
         (f"{a.listeners} registrations ≤ 1.3× the registration floor",
          f"{rat('reg')}; the design floor (uid, match rules) {rat('reg_design')}; vmstate "
          f"{rat('reg_to_design')} that", r["reg_ratio"]["ratio"] <= 1.3)]
    if "save" in r:
        print(f"\n**Save and restore overhead, no hooks** (128M idle guest of its own, "
              f"{a.save_rounds} rounds; app time − QEMU's job)\n")
        print("| op | app: request → event (median) | QEMU job (median) | overhead median | "
              "p99 | ÷ hostinfo round trip |")
        print("|---|---|---|---|---|---|")
        for op, lim in (("save", 1.5), ("warm save", 1.5), ("restore", 2.0)):
            if op not in r:
                continue
            app, job, ovh = r[op]
            label = {"save": "save (each after a restore)",
                     "warm save": "save, warm (saves in a row)"}.get(op, op)
            print(f"| {label} | {us(app['median'])} | {us(job['median'])} | {us(ovh['median'])} | "
                  f"{us(ovh['p99'])} | {ovh['median'] / rtt:.2f}× |")
            got = f"{ovh['median'] / rtt:.2f}× ({us(ovh['median'])})"
            if op + "_floor" in r:
                app, job, fov = r[op + "_floor"]
                print(f"| {label}, floor: no vmstate (1 byte each way, the same QMP job) | "
                      f"{us(app['median'])} | {us(job['median'])} | {us(fov['median'])} | "
                      f"{us(fov['p99'])} | {fov['median'] / rtt:.2f}× |")
                if op + "_design" in r:
                    app, job, dov = r[op + "_design"]
                    print(f"| {label}, design floor: a bare D-Bus relay and the ports, one "
                          f"listener's handshake, two durable commits (vsbench-dbus relay) | "
                          f"{us(app['median'])} | {us(job['median'])} | {us(dov['median'])} | "
                          f"{us(dov['p99'])} | {dov['median'] / rtt:.2f}× |")
                # a request through any D-Bus API that answers at once also pays the
                # asynchronous floor (call -> signal) on top of the ports' and QEMU's
                api = fov["median"] + r["async"]["median"]
                got += (f"; the floor alone {fov['median'] / rtt:.2f}×, with the asynchronous "
                        f"D-Bus floor {api / rtt:.2f}×")
                if "save" in op and "durable_row" in r:
                    # ... and a save asks its listeners first (PrepareSave, #8: one round
                    # trip at the least) and is journaled twice (accepted, completed)
                    design = api + r["call"]["median"] + 2 * r["durable_row"]["median"]
                    got += (f", with a listener's round trip and two durable commits "
                            f"{design / rtt:.2f}×")
                    api = design
                if op + "_design" in r:
                    api = r[op + "_design"][2]["median"]
                    got += f"; the design floor measured in one chain {api / rtt:.2f}×"
                got += f"; vmstate {ovh['median'] / api:.2f}× that"
            t.append((f"{label} overhead ≤ {lim}× the hostinfo round trip", got,
                      ovh["median"] / rtt <= lim))
        for op in ("save", "warm save", "restore"):
            if not r.get(op + "_stages"):
                continue
            design = r.get(op + "_design_stages", {})
            print(f"\nWhere a {op} goes (the bridge's log, ms resolution, between the app's "
                  f"marks{'; beside it, the design floor’s same stages' if design else ''}):\n")
            print("| stage | median | p99 |" + (" design floor: median | p99 |" if design else ""))
            print("|---|---|---|" + ("---|---|" if design else ""))
            for k, s in r[op + "_stages"].items():
                d = design.get(k)
                print(f"| {k} | {us(s['median'])} | {us(s['p99'])} |" +
                      (f" {us(d['median'])} | {us(d['p99'])} |" if d else ""))
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
    ap.add_argument("--rounds", type=int, default=5, help="fan-out rounds per block")
    ap.add_argument("--blocks", type=int, default=5,
                    help="blocks of (D-Bus call floor, hostinfo), n round trips in all")
    ap.add_argument("--fan-blocks", type=int, default=2,
                    help="blocks of (signal floor, fan-out), each with its registrations")
    ap.add_argument("--save-rounds", type=int, default=10, help="save+restore rounds (0: skip)")
    a = ap.parse_args()
    machine = bl.machine()
    t0 = time.time()
    res = measure(a)
    report(a, res, machine, time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
