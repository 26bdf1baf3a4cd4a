#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Cluster benchmark (issue 15): HA failover time against Corosync's own detection, and the
CPG throughput of the cluster table's messages against raw CPG.

Usage: bench-cluster.py --image DIR --builddir BUILD [--workdir DIR] [--tokens 500,1000]
                        [--sizes 128M,512M] [--messages 20000] [--vms 100] [--json F]

Failover: 3 hosts (vmstest.cluster, network namespaces with their own corosync), one HA VM
on h2 with h1 as its alternate (vmstest.ha, as the cluster suite runs it); the guest writes
a marker, an HA checkpoint is taken, h2 is SIGKILLed (corosync, bridge, QEMU). Measured in
the same run: kill -> h1's corosync sees the new membership (the floor: detection, token +
consensus), kill -> the VM running on h1 (the table), kill -> the guest agent answering
(the app's view). Ratio = failover / detection.
CPG: vsbench-cpg on the 3 hosts; h1 multicasts N table messages (every 10th a hello
listing every VM, the rest claims, built by cluster/table.c); each host counts and applies
them to a table of --vms VMs. Floor: the same messages with --raw (delivered, not applied).
Markdown on stdout, progress on stderr.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib as bl
from vmstest import wait_until
from vmstest.cluster import Cluster
from vmstest.ha import HACluster


def failover(args, token, mem, wd):
    t = HACluster(args.image, args.builddir, wd, {1: 2, 2: 2, 3: 2}, 1,
                  {"f": (["h2", "h1"], 1)}, token=token, mem=mem, checkpoint_s=4)
    try:
        t.setup([1, 2, 3])
        ok, ans = t.start_vm(2, "f")
        if not ok:
            raise RuntimeError(f"start f: {ans}")
        vm = t.vms["f"]
        vm.check("echo before > /tmp/appdata")
        ck0 = t.cluster(1)["vms"][0]["checkpoint"]
        wait_until(lambda: t.cluster(1)["vms"][0]["checkpoint"] not in ("", ck0), 60,
                   "an HA checkpoint")
        vm.detach()
        for i in (1, 3):
            t.c.host(i).watch()
        t0 = time.monotonic()
        t.c.host(2).kill()
        seen = t.c.wait_view([1], members=[1, 3], quorate=True, timeout=30, since=t0)
        wait_until(lambda: t.placement(1).get("f") == ("h1", "running"), 60, "f on h1",
                   interval=0.02)
        running = time.monotonic() - t0
        vm.attach()
        vm.wait_ready(120)
        answering = time.monotonic() - t0
        data = vm.check("cat /tmp/appdata").strip()
        return {"token_ms": token, "mem": mem, "detect_s": seen[1], "running_s": running,
                "answering_s": answering, "data_ok": data == "before"}
    finally:
        t.close()


def cpg(args, wd, n, vms):
    c = Cluster(os.path.join(wd, "cpg"), hosts=3, token=500)
    prog = os.path.join(os.path.abspath(args.builddir), "bench", "vsbench-cpg")
    out = {}
    try:
        c.start()
        c.wait_quorate()
        for raw in (True, False):
            group = f"bench-{'raw' if raw else 'table'}"
            flags = ["--vms", str(vms), "--group", group] + (["--raw"] if raw else [])
            recv = [c.host(i).popen([prog, "--expect", str(n), *flags], stdout=subprocess.PIPE,
                                    text=True) for i in (2, 3)]
            time.sleep(0.5)
            sender = c.host(1).popen([prog, "--send", str(n), *flags], stdout=subprocess.PIPE,
                                     text=True)
            res = [json.loads(p.communicate(timeout=300)[0]) for p in [sender] + recv]
            out["raw" if raw else "table"] = res
            bl.log(f"cpg {'raw' if raw else 'table'}: "
                   f"{[round(r['per_second']) for r in res]} msg/s")
    finally:
        c.close()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--builddir", required=True)
    ap.add_argument("--workdir")
    ap.add_argument("--tokens", default="500,1000")
    ap.add_argument("--sizes", default="128M,512M")
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--vms", type=int, default=100)
    ap.add_argument("--json")
    ap.add_argument("--cpg-only", action="store_true", help="only the CPG throughput part")
    a = ap.parse_args()
    wd = a.workdir or tempfile.mkdtemp(prefix="vmsbcl-", dir="/tmp")
    rows = []
    for token in [] if a.cpg_only else [int(x) for x in a.tokens.split(",")]:
        for mem in a.sizes.split(","):
            bl.log(f"failover: token {token} ms, {mem}")
            r = failover(a, token, mem, os.path.join(wd, f"f-{token}-{mem}"))
            bl.log(json.dumps(r))
            rows.append(r)
    cp = cpg(a, wd, a.messages, a.vms)
    print("\n".join(bl.machine()) + "\n")
    print("### HA failover (3 hosts in network namespaces, TCG guests)\n")
    print("| token | guest RAM | detection (floor) | VM running | guest agent answering | "
          "running / detection | app data from checkpoint |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['token_ms']} ms | {r['mem']} | {r['detect_s']:.2f} s | {r['running_s']:.2f} s"
              f" | {r['answering_s']:.2f} s | {r['running_s'] / r['detect_s']:.2f}x | "
              f"{'yes' if r['data_ok'] else 'NO'} |")
    raw = statistics.median(r["per_second"] for r in cp["raw"])
    tab = statistics.median(r["per_second"] for r in cp["table"])
    apply_us = statistics.median(r["apply_us"] for r in cp["table"])
    size = cp["table"][0]["bytes"] / cp["table"][0]["messages"]
    print(f"\n### CPG: the cluster table's messages at {a.vms} VMs "
          f"({a.messages} messages from h1, every 10th a {a.vms}-VM hello; median of 3 hosts)\n")
    print("| | messages/s | mean size | apply µs/message |")
    print("|---|---|---|---|")
    print(f"| raw CPG (floor) | {raw:.0f} | {size:.0f} B | - |")
    print(f"| applied to the table | {tab:.0f} | {size:.0f} B | {apply_us:.1f} |")
    print(f"\nratio table / raw: {tab / raw:.2f}. Steady state at {a.vms} VMs with "
          f"ha_checkpoint_interval = 60 s: {a.vms / 60:.1f} checkpoint messages/s "
          f"({a.vms / 60 / tab * 100:.3f} % of what the table absorbs); a failover of "
          f"{a.vms} VMs: {2 * a.vms} messages (claim + running each).")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"failover": rows, "cpg": cp}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
