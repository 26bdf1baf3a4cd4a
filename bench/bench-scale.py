#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark 6: one bridge serving 8 VMs — per-VM hostinfo round trip, alone and with all
VMs asking at once.

Boots V guests (default 8 x 96 MiB, the smallest that boots reliably with the cloud kernel;
64 MiB does not boot), one vmstate-bridged for all of them, a helper in each. Then:
  alone   vm1 runs `vsbench-app rtt N` while the other guests idle
  all     every guest runs `vsbench-app rtt N` at the same time
Prints a Markdown table: one row per VM under load, plus the solo baseline and the pooled
figures. Usage: bench-scale.py --image DIR --builddir BUILD [--vms 8] [--mem 96M] [-n 200]
"""
import sys
import threading

import benchlib as bl
import vmstate_path as vp


def main():
    ap = bl.common_args(__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=8)
    ap.add_argument("--mem", default="96M")
    ap.add_argument("-n", type=int, default=200)
    a = ap.parse_args()
    vms = {}
    try:
        # One boot at a time: 8 TCG boots at once on a busy 2-core host made a guest panic
        # ("IO-APIC + timer doesn't work") in one run. A failed boot is retried once.
        for i in range(1, a.vms + 1):
            wd = bl.workdir(a, f"scale-vm{i}")
            for attempt in (1, 2):
                vm = bl.VM(wd, a.image, mem=a.mem)
                try:
                    vm.start()
                    vm.wait_ready(timeout=180)
                    break
                except bl.harness.VMError as e:
                    vm.kill()
                    if attempt == 2:
                        raise
                    bl.log(f"vm{i}: boot failed, retrying: {str(e)[:200]}")
            vms[f"vm{i}"] = vm
            bl.log(f"vm{i} ready, boot {vm.boot_time:.1f} s")
        with vp.Path(a.builddir, bl.workdir(a, "scale-bridge"), vms, cost="test") as path:
            for vm in vms.values():
                vp.start_guest(vm, timeout=120)
            for vm in vms.values():
                vm.check("vsbench-app rtt 10", timeout=120)
            bl.log(f"alone: vm1 x {a.n}")
            solo = bl.stats_after(vms["vm1"].check(f"vsbench-app rtt {a.n}", timeout=900))
            res, errs = {}, {}

            def go(name, vm):
                try:
                    res[name] = bl.stats_after(
                        vm.check(f"vsbench-app rtt {a.n}", timeout=1800))
                except Exception as e:  # reported in the table
                    errs[name] = str(e)[:200]
            bl.log(f"all {len(vms)} VMs at once x {a.n}")
            threads = [threading.Thread(target=go, args=kv) for kv in vms.items()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rss = bl.host_rss_kib(path.proc.pid)
            readers = len(path.pids()) - 1
    finally:
        for vm in vms.values():
            vm.stop()
    print(f"{len(vms)} guests of {a.mem}, 1 vCPU each, one bridge (RSS "
          f"{rss['VmRSS'] / 1024:.1f} MiB, peak {rss['VmHWM'] / 1024:.1f} MiB, {readers} reader "
          "processes); Argon2id cost `test`.\n")
    print("| VM | load | N | round trip median | p99 | vs. alone (median) |")
    print("|---|---|---|---|---|---|")
    print(f"| vm1 | alone (others idle) | {solo['n']} | {bl.fmt_us(solo['median'])} | "
          f"{bl.fmt_us(solo['p99'])} | 1.00× |")
    for name in vms:
        if name in errs:
            print(f"| {name} | all at once | — | failed: {errs[name]} | | |")
            continue
        s = res[name]
        print(f"| {name} | all {len(vms)} at once | {s['n']} | {bl.fmt_us(s['median'])} | "
              f"{bl.fmt_us(s['p99'])} | {s['median'] / solo['median']:.2f}× |")
    if res:
        meds = [s["median"] for s in res.values()]
        p99s = [s["p99"] for s in res.values()]
        print(f"| all | per-VM medians: median {bl.fmt_us(bl.pct(meds, 50))}; per-VM p99s: "
              f"worst {bl.fmt_us(max(p99s))} | | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
