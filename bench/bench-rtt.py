#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark 1: round trip of a no-op request, against the floor and the anchor, in one VM.

  floor/host   host writes 1 byte on port B, a guest echo (vsbench-port) reads B and writes
               it to port A, the host reads it: timed on the host (CLOCK_MONOTONIC).
  floor/guest  guest writes 1 byte on port A, a host echo writes it back on port B, the
               guest reads it: timed in the guest. Same direction as an app's request.
  qga          host sends qemu-ga `guest-ping` on the org.qemu.guest_agent.0 port, reads the
               answer: timed on the host (Debian's qemu-ga 7.2 running in the guest).
  vmstate      app -> libvmstate -> D-Bus -> helper -> port A -> bridge -> port B -> helper
               -> D-Bus -> app, a hostinfo request, timed in the guest app (vsbench-app);
               needs the whole-path runner (bench/vmstate_path.py): "not yet measured" if
               it is missing.

Prints Markdown rows: | path | timed in | N | median | p99 | median ratio | p99 ratio |
Ratios are to floor/guest for vmstate (same direction and clock) and to floor/host for qga.
Usage: bench-rtt.py --image DIR --builddir BUILD [-n 1000] [--rounds 1]
"""
import json
import os
import subprocess
import sys

import benchlib as bl


def host_run(argv, timeout):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{argv}: rc {p.returncode}: {p.stderr.strip()}")
    return bl.stats_after(p.stdout)


def floor_host(vm, prog, dev_a, dev_b, n):
    host = subprocess.Popen([prog, "ping", f"unix:{vm.b_sock}", f"unix:{vm.a_sock}", str(n)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = vm.spawn(f"exec vsbench-port echo {dev_b} {dev_a}", log="/tmp/echo.log")
    try:
        out, err = host.communicate(timeout=60 + n * 0.05)
    finally:
        host.kill()
        vm.run(f"kill {pid} 2>/dev/null; while kill -0 {pid} 2>/dev/null; do sleep 0.01; done")
    if host.returncode != 0:
        raise RuntimeError(f"floor/host: {err.strip()} / guest: {vm.read_file('/tmp/echo.log')!r}")
    return bl.stats_after(out)


def floor_guest(vm, prog, dev_a, dev_b, n):
    host = subprocess.Popen([prog, "echo", f"unix:{vm.a_sock}", f"unix:{vm.b_sock}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        out = vm.check(f"vsbench-port ping {dev_a} {dev_b} {n}", timeout=60 + n * 0.05)
    finally:
        host.kill()
        host.wait()
    return bl.stats_after(out)


def start_qga(vm, dev_q):
    pid = vm.spawn(f"exec qemu-ga -m virtio-serial -p {dev_q} -t /run", log="/tmp/qga.log")
    return pid


def qga_ping(prog, qga_sock, n):
    return host_run([prog, "qga", f"unix:{qga_sock}", str(n)], timeout=60 + n * 0.1)


def row(name, where, s, ref=None):
    r = (f"| {name} | {where} | {s['n']} | {bl.fmt_us(s['median'])} | {bl.fmt_us(s['p99'])} |")
    if ref:
        r += f" {s['median'] / ref['median']:.2f}× | {s['p99'] / ref['p99']:.2f}× |"
    else:
        r += " — | — |"
    return r


HEADER = ["| path | timed in | N | median | p99 | ratio (median) | ratio (p99) |",
          "|---|---|---|---|---|---|---|"]


def main():
    ap = bl.common_args(__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--mem", default="128M")
    ap.add_argument("--no-header", action="store_true")
    ap.add_argument("--no-vmstate", action="store_true", help="floor and anchor only")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--n-default", type=int, default=100,
                    help="round trips with the default Argon2id cost (0: skip)")
    a = ap.parse_args()
    prog = bl.host_prog(a, "vsbench-port")
    wd = bl.workdir(a, "rtt")
    qga_sock, qga_extra = bl.qga_args(wd)
    res = {}
    with bl.VM(wd, a.image, mem=a.mem, extra_args=qga_extra) as vm:
        bl.log(f"boot {vm.wait_ready():.1f} s")
        dev_a, dev_b = vm.port_device(bl.harness.PORT_A), vm.port_device(bl.harness.PORT_B)
        dev_q = vm.port_device(bl.QGA_PORT)
        bl.log("floor: host-originated echo")
        res["floor_host"] = floor_host(vm, prog, dev_a, dev_b, a.n)
        bl.log("floor: guest-originated echo")
        res["floor_guest"] = floor_guest(vm, prog, dev_a, dev_b, a.n)
        bl.log("qemu-ga guest-ping")
        start_qga(vm, dev_q)
        res["qga"] = qga_ping(prog, qga_sock, a.n)
        res["vmstate"] = res["vmstate_default"] = None
        if not a.no_vmstate:
            import vmstate_path as vp
            with vp.Path(a.builddir, wd, {"vm1": vm}, cost="test") as path:
                vp.start_guest(vm)
                bl.log("vmstate hostinfo round trips (Argon2id cost 'test')")
                res["vmstate"] = bl.stats_after(
                    vm.check(f"vsbench-app rtt {a.n}", timeout=120 + a.n * 0.2))
                if a.n_default:
                    path.admin("principal-remove", vp.PRINCIPAL)
                    path.admin("principal-add", vp.PRINCIPAL, "--cost", "default",
                               secret=vp.SECRET + "\n")
                    path.admin("grant", vp.PRINCIPAL, "vm1", "all")
                    bl.log("vmstate hostinfo round trips (Argon2id cost 'default')")
                    res["vmstate_default"] = bl.stats_after(
                        vm.check(f"vsbench-app rtt {a.n_default}", timeout=120 + a.n * 0.5))
    if not a.no_header:
        print("\n".join(HEADER))
    print(row("floor: host → port B → guest echo → port A → host (1 byte)", "host",
              res["floor_host"]))
    print(row("floor: guest → port A → host echo → port B → guest (1 byte)", "guest",
              res["floor_guest"]))
    print(row("anchor: qemu-ga `guest-ping` (host → qga port → qemu-ga → host); ratio to the "
              "host-originated floor", "host", res["qga"], res["floor_host"]))
    if res["vmstate"]:
        print(row("vmstate hostinfo: app → helper → bridge → helper → app (Argon2id cost "
                  "`test`); ratio to the guest-originated floor", "guest", res["vmstate"],
                  res["floor_guest"]))
        print(row("vmstate hostinfo (cost `test`); ratio to qemu-ga guest-ping", "guest",
                  res["vmstate"], res["qga"]))
    if res["vmstate_default"]:
        print(row("vmstate hostinfo with the default Argon2id cost (2 passes, 16 MiB); ratio "
                  "to qemu-ga guest-ping", "guest", res["vmstate_default"], res["qga"]))
    if not res["vmstate"]:
        print("| vmstate hostinfo: app → helper → bridge → helper → app | guest | — | "
              "not yet measured | not yet measured | — | — |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
