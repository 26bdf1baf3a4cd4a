#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Flood acceptance of issue 13: one guest floods port A while another saves, lists and restores.

    python3 tests/bridge/test-bridge-flood.py --image DIR --builddir BUILDDIR [--seconds 60]

Two VMs on one bridge. vm2 runs save/list/restore/delete cycles twice, for --seconds each:
first while vm1 only burns CPU (the baseline), then while vm1's wire client floods its
port A (vms-wire-client "flood": hostile frames, then well-formed requests from unknown
principals, then requests with 64 KiB of app data from a principal without the right).
Checks: vm2's operations take no more than 1.1x the baseline (median per operation,
summed over a cycle); the bridge's log grows by less than 1 MiB during the flood, its
journal (database + WAL) by less than vm1's max_journal_bytes; its RSS stays flat; the
flooding VM still gets answers afterwards. Needs what test-bridge-system.py needs.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
from vmstest import VM, Bridge, check, field, results, rss_kib  # noqa: E402
from vmstest.wireclient import WireClient  # noqa: E402

numbers = results.numbers
FLOODER_QUOTA = 4 << 20  # vm1's max_journal_bytes
OPS = ("save", "list", "restore", "delete")


def victim_cycles(c2, seconds, tag):
    """save, list, restore, delete on vm2 until @seconds have passed; each op's durations."""
    times = {op: [] for op in OPS}
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline or n == 0:
        n += 1
        t0 = time.monotonic()
        rid = c2.request(f"save org.example.Victim app s3cret label={tag}{n}")
        ev = c2.event(rid)
        times["save"].append(time.monotonic() - t0)
        state = field(ev, "state")
        if not check(field(ev, "status") == "0", f"{tag}: vm2 save {n} ok ({ev})"):
            break
        t0 = time.monotonic()
        rid = c2.request("list org.example.Victim app s3cret")
        ev = c2.event(rid)
        times["list"].append(time.monotonic() - t0)
        check(field(ev, "status") == "0", f"{tag}: vm2 list {n} ok")
        t0 = time.monotonic()
        c2.request(f"restore org.example.Victim app s3cret state={state}", restore=True)
        ev = c2.event(r"\w+", extra=f"op=restore status=\\d+ .*state={state}")
        times["restore"].append(time.monotonic() - t0)
        check(field(ev, "status") == "0", f"{tag}: vm2 restore {n} ok")
        t0 = time.monotonic()
        rid = c2.request(f"delete org.example.Victim app s3cret state={state}")
        ev = c2.event(rid)
        times["delete"].append(time.monotonic() - t0)
        check(field(ev, "status") == "0", f"{tag}: vm2 delete {n} ok")
    return times


def journal_size(bridge):
    return sum(os.path.getsize(p) for p in (bridge.db, bridge.db + "-wal")
               if os.path.exists(p))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--builddir", required=True)
    ap.add_argument("--seconds", type=float,
                    default=float(os.environ.get("FLOOD_SECONDS", "60")))
    # the acceptance figure is 1.1; on 2 shared cores one run's ratio moves by ~+-0.1 with no
    # flood at all (measured 1.02, 1.10 on the same code), so CI gates at FLOOD_MAX_RATIO
    ap.add_argument("--max-ratio", type=float,
                    default=float(os.environ.get("FLOOD_MAX_RATIO", "1.1")))
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    workdir = a.workdir or tempfile.mkdtemp(prefix="vmsf-")
    t_all = time.monotonic()
    vm1 = VM(os.path.join(workdir, "vm1"), a.image)
    vm2 = VM(os.path.join(workdir, "vm2"), a.image)
    bridge = None
    try:
        vm1.start()
        vm2.start()
        vm1.wait_ready(90)
        vm2.wait_ready(90)
        # production defaults (rate limits, log level info) except vm1's journal quota and
        # vm2's own request rate: its back-to-back cycles (~40 requests a minute on an idle
        # host) would otherwise meet its own per-uid share, which is not what this measures
        bridge = Bridge(a.builddir, workdir, {"vm1": vm1, "vm2": vm2},
                        {"job_timeout": 120, "max_states": 64},
                        per_vm={"vm1": {"max_journal_bytes": FLOODER_QUOTA},
                                "vm2": {"rate_requests": 1200}}, log_level="info")
        bridge.add_principal("app", "s3cret", {"vm2": ["all"]})
        bridge.add_principal("flooder", "flood", {"vm1": ["save"]})  # its lists are denied
        bridge.start()
        c1, c2 = WireClient(vm1), WireClient(vm2)
        c1.wait(r"^WELCOME version=1", 60)
        c2.wait(r"^WELCOME version=1", 60)

        # ---- baseline: vm1 only burns CPU ----
        vm1.check(f"(timeout {int(a.seconds) + 5} sh -c 'while :; do :; done') "
                  ">/dev/null 2>&1 &")
        base = victim_cycles(c2, a.seconds, "baseline")
        time.sleep(5)  # the burner ends

        # ---- flood ----
        log0, db0, rss0 = len(bridge.log()), journal_size(bridge), rss_kib(bridge.proc.pid)
        c1.cmd(f"flood {a.seconds:.0f} flooder flood")
        rss_max = rss0
        t_flood = time.monotonic()
        flood = victim_cycles(c2, a.seconds, "flood")
        rss_max = max(rss_max, rss_kib(bridge.proc.pid))
        done = c1.wait(r"^FLOODED .*$", a.seconds + 120).group(0)
        rss_max = max(rss_max, rss_kib(bridge.proc.pid))
        numbers["flood_s"] = time.monotonic() - t_flood
        time.sleep(2)  # what the bridge still had to read
        log1, db1, rss1 = len(bridge.log()), journal_size(bridge), rss_kib(bridge.proc.pid)
        for k in ("garbage", "unknown", "bigdata", "bytes"):
            numbers[f"flood_{k}"] = int(field(done, k) or 0)
        check(int(field(done, "bytes") or 0) > 0, f"vm1 flooded its port A ({done})")

        ratio_parts = []
        for op in OPS:
            b, f = statistics.median(base[op]), statistics.median(flood[op])
            numbers[f"{op}_base_s"], numbers[f"{op}_flood_s"] = round(b, 3), round(f, 3)
            ratio_parts.append((b, f))
        numbers["cycles_base"], numbers["cycles_flood"] = len(base["save"]), len(flood["save"])
        ratio = sum(f for _, f in ratio_parts) / sum(b for b, _ in ratio_parts)
        numbers["cycle_ratio"] = round(ratio, 3)
        print(f"   acceptance figure: {ratio:.3f}x the baseline ({'met' if ratio <= 1.1 else 'missed'}"
              " at 1.1)")
        check(ratio <= a.max_ratio, f"vm2's save+list+restore+delete take {ratio:.2f}x the "
                                    f"baseline while vm1 floods (<= {a.max_ratio})")
        numbers["log_growth_bytes"] = log1 - log0
        check(log1 - log0 < 1 << 20, f"the bridge's log grew {log1 - log0} bytes (< 1 MiB)")
        numbers["journal_growth_bytes"] = db1 - db0
        check(db1 - db0 < FLOODER_QUOTA,
              f"the journal grew {db1 - db0} bytes (< vm1's quota {FLOODER_QUOTA})")
        numbers["rss_before_kib"], numbers["rss_max_kib"], numbers["rss_after_kib"] = \
            rss0, rss_max, rss1
        check(rss_max - rss0 < 4096, f"the bridge's RSS stayed flat ({rss0} -> max {rss_max} KiB)")
        check("suppressed" in bridge.log()[log0:],
              "the flood's log lines were summarised ('similar messages ... suppressed')")

        # ---- the flooder is still served (once its rate limit refills) ----
        bridge.add_principal("app1", "s3cret", {"vm1": ["list"]})
        time.sleep(3)
        c1.cmd("hello")
        c1.wait(r"^WELCOME version=1 .*$", 60)
        rid = c1.request("list org.example.Flood app1 s3cret")
        ev = c1.event(rid, timeout=90)
        check(field(ev, "status") in ("0", "5"),  # ok, or still rate-limited (5): answered
              f"vm1 is answered after its flood ({ev})")
    finally:
        if bridge:
            check(bridge.stop() == 0, "bridge exits 0 on SIGTERM")
        vm1.stop()
        vm2.stop()
        numbers["total_s"] = round(time.monotonic() - t_all, 1)
        if not a.keep and not a.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return results.summary()


if __name__ == "__main__":
    sys.exit(main())
