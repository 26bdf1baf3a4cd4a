#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmarks 3, 4 and 5 in one VM: throughput, fan-out, memory.

  throughput  K concurrent apps (guest processes, one handle each; 1, 4, 16, 64), each doing
              hostinfo requests back to back: completed requests per second, and the
              per-request round trip under that load (median, p99)
  fan-out     one hostinfo completion to L registered listeners (1, 10, 100, 1000 D-Bus
              connections of one app id in one guest process): time from the call to the
              first and to the last listener receiving it (median, p99 over rounds)
  memory      RSS of vmstate-helperd and qemu-ga (same guest), vmstate-bridged + its reader
              (host): idle after start, and the peak (VmHWM) after the load above

Prints three Markdown tables. Usage: bench-load.py --image DIR --builddir BUILD
  [--apps 1,4,16,64] [--requests 400] [--listeners 1,10,100,1000] [--rounds 20]
"""
import json
import sys

import benchlib as bl
import vmstate_path as vp


def rss_row(name, where, idle, peak):
    def f(d, k):
        return f"{d[k] / 1024:.1f} MiB" if d and k in d else "—"
    return (f"| {name} | {where} | {f(idle, 'VmRSS')} (anon {f(idle, 'RssAnon')}) | "
            f"{f(peak, 'VmHWM')} | {f(peak, 'VmRSS')} |")


def main():
    ap = bl.common_args(__doc__.splitlines()[0])
    ap.add_argument("--apps", default="1,4,16,64")
    ap.add_argument("--requests", type=int, default=400, help="total requests per K")
    ap.add_argument("--listeners", default="1,10,100,1000")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--mem", default="256M")
    ap.add_argument("--cost", default="test")
    ap.add_argument("--json", help="also write the figures to this file")
    a = ap.parse_args()
    wd = bl.workdir(a, "load")
    qga_sock, qga_extra = bl.qga_args(wd)
    tput, fan, mem = [], [], {}
    with bl.VM(wd, a.image, mem=a.mem, extra_args=qga_extra) as vm:
        bl.log(f"boot {vm.wait_ready():.1f} s")
        qga = vm.spawn(f"exec qemu-ga -m virtio-serial -p {vm.port_device(bl.QGA_PORT)} -t /run",
                       log="/tmp/qga.log")
        with vp.Path(a.builddir, wd, {"vm1": vm}, cost=a.cost) as path:
            helper = vp.start_guest(vm)
            vm.check("vsbench-app rtt 20")  # warm
            bpids = path.pids()
            mem["idle"] = {"helper": bl.guest_rss_kib(vm, helper),
                           "qga": bl.guest_rss_kib(vm, qga),
                           "bridge": bl.host_rss_kib(bpids[0]),
                           "reader": bl.host_rss_kib(bpids[1]) if len(bpids) > 1 else None}
            for k in [int(x) for x in a.apps.split(",")]:
                m = max(5, a.requests // k)
                bl.log(f"throughput: {k} apps x {m} requests")
                out = vm.check(f"vsbench-app tput {k} {m}", timeout=600)
                head = dict(kv.split("=") for kv in out.splitlines()[0].split())
                tput.append((k, head, bl.stats_after(out)))
            for n in [int(x) for x in a.listeners.split(",")]:
                r = a.rounds if n < 1000 else max(5, a.rounds // 2)
                bl.log(f"fan-out: {n} listeners x {r} rounds")
                rc, out = vm.run(f"vsbench-app fanout {n} {r} 2>&1", timeout=900)
                if rc != 0:
                    fan.append((n, None, out.strip()[-300:]))
                    continue
                first = bl.stats_after(out, "first: ")
                last = bl.stats_after(out, "last: ")
                fan.append((n, (first, last), out.splitlines()[0]))
            bpids = path.pids()
            mem["peak"] = {"helper": bl.guest_rss_kib(vm, helper) | _hwm_guest(vm, helper),
                           "qga": bl.guest_rss_kib(vm, qga) | _hwm_guest(vm, qga),
                           "bridge": bl.host_rss_kib(bpids[0]),
                           "reader": bl.host_rss_kib(bpids[1]) if len(bpids) > 1 else None}
    print(f"Argon2id cost `{a.cost}`; guest {a.mem}, 1 vCPU.\n")
    print("| concurrent apps | requests | requests/s | round trip median | p99 | "
          "BUSY retries | calls timed out (5 s) |")
    print("|---|---|---|---|---|---|---|")
    for k, head, s in tput:
        print(f"| {k} | {head['requests']} | {float(head['per_s']):.0f} | "
              f"{bl.fmt_us(s['median'])} | {bl.fmt_us(s['p99'])} | {head['busy']} | "
              f"{head['call_timeouts']} |")
    print("\n| listeners | rounds | first receives: median | p99 | last receives: median | "
          "p99 | registration |")
    print("|---|---|---|---|---|---|---|")
    for n, fl, note in fan:
        if fl is None:
            print(f"| {n} | — | failed: {note} | | | | |")
            continue
        first, last = fl
        print(f"| {n} | {last['n']} | {bl.fmt_us(first['median'])} | {bl.fmt_us(first['p99'])} |"
              f" {bl.fmt_us(last['median'])} | {bl.fmt_us(last['p99'])} | "
              f"{note.replace('vsbench-app: ', '')} |")
    print("\n| process | where | idle RSS | peak RSS (VmHWM) after the load | RSS after |")
    print("|---|---|---|---|---|")
    print(rss_row("vmstate-helperd", "guest", mem["idle"]["helper"], mem["peak"]["helper"]))
    print(rss_row("qemu-ga (idle, same guest)", "guest", mem["idle"]["qga"], mem["peak"]["qga"]))
    print(rss_row("vmstate-bridged", "host", mem["idle"]["bridge"], mem["peak"]["bridge"]))
    print(rss_row("vmstate-bridged-reader (1 per VM)", "host", mem["idle"]["reader"],
                  mem["peak"]["reader"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"tput": [[k, h, s] for k, h, s in tput],
                       "fanout": [[n, fl] for n, fl, _ in fan], "mem": mem}, f, indent=1)
    return 0


def _hwm_guest(vm, pid):
    out = vm.check(f"grep -E '^VmHWM:' /proc/{int(pid)}/status")
    return {"VmHWM": int(out.split()[1])}


if __name__ == "__main__":
    sys.exit(main())
