#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Where a hostinfo round trip's time goes: CPU time per request of each process on the path
(host: bridge + readers, QEMU; guest: helper, dbus-daemon, the app) over N sequential
requests, with the bridge database on the given directory's file system.

Prints Markdown rows: | process | CPU per request | share of the round trip |
Usage: profile-rtt.py --image DIR --builddir BUILD [-n 500] [--workdir DIR]
(--workdir on a tmpfs such as /dev/shm takes fsync out of the picture.)
"""
import sys

import benchlib as bl
import vmstate_path as vp


def guest_cpu(vm, pids):
    out = vm.check("for p in " + " ".join(str(p) for p in pids) +
                   "; do echo $p $(cut -d')' -f2 /proc/$p/stat); done")
    hz = 100  # USER_HZ: /proc ticks are always 1/100 s on Linux x86
    res = {}
    for ln in out.splitlines():
        f = ln.split()
        if len(f) > 14:
            res[int(f[0])] = (int(f[12]) + int(f[13])) / hz
    return res


def main():
    ap = bl.common_args(__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=500)
    a = ap.parse_args()
    wd = bl.workdir(a, "prof")
    with bl.VM(wd, a.image) as vm:
        vm.wait_ready()
        with vp.Path(a.builddir, wd, {"vm1": vm}, cost="test") as path:
            helper = vp.start_guest(vm)
            dbus = int(vm.check("pidof dbus-daemon").split()[0])
            vm.check("vsbench-app rtt 20")
            hpids = path.pids() + [vm.proc.pid]
            h0 = {p: bl.process_cpu_s(p) for p in hpids}
            g0 = guest_cpu(vm, [helper, dbus])
            out = vm.check(f"time vsbench-app rtt {a.n}", timeout=600)
            h1 = {p: bl.process_cpu_s(p) for p in hpids}
            g1 = guest_cpu(vm, [helper, dbus])
    total = bl.stats_after(out)
    call = bl.stats_after(out, "call: ")
    n = a.n
    print(f"<!-- {out.strip()} -->")
    print("| process | CPU time per request | vs. median round trip |")
    print("|---|---|---|")
    names = {hpids[0]: "host: vmstate-bridged (main)", vm.proc.pid: "host: QEMU (TCG: all guest "
             "work, incl. the rows below)"}
    for p in hpids:
        us = (h1[p] - h0[p]) / n * 1e6
        print(f"| {names.get(p, 'host: vmstate-bridged-reader')} | {us:.0f} µs | "
              f"{us / total['median'] * 100:.0f}% |")
    for p, name in ((helper, "guest: vmstate-helperd"), (dbus, "guest: dbus-daemon")):
        us = (g1[p] - g0[p]) / n * 1e6
        print(f"| {name} | {us:.0f} µs | {us / total['median'] * 100:.0f}% |")
    print(f"| round trip (app) | median {bl.fmt_us(total['median'])}, p99 "
          f"{bl.fmt_us(total['p99'])} | 100% |")
    print(f"| of which the D-Bus call to the helper (until the id returns) | median "
          f"{bl.fmt_us(call['median'])}, p99 {bl.fmt_us(call['p99'])} | "
          f"{call['median'] / total['median'] * 100:.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
