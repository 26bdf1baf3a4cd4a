#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""VM groups across hosts over the cluster's CPG group: 2 cluster hosts (network namespaces,
one corosync each), a bridge on each with 2 managed VMs (real QEMU, TCG).

h1's bridge is the control instance; the group names g1, g2 on "self" and g3, g4 on node
"h2" — no [peer] section anywhere: h2 is reached by its cluster node name over CPG.
  1 suspend the 4 VMs at T over CPG: all stopped at T (QEMU's STOP timestamps, skew
    reported), checkpoints saved, history done; then resume them at T2 (policy host)
  2 h2's bridge killed between prepare and commit: h1 sees it leave the CPG group and
    aborts the group before T; nothing is suspended (g1, g2 run on; h2's restarted bridge
    finds g3, g4 running), the history says so
  3 the control's bridge (h1) killed after h2 committed: h2 sees its control instance leave
    the CPG group and disarms its part before T; nothing is suspended on either host
"""
import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
from vmstest import Bridge, Cluster, check, results, wait_until  # noqa: E402
from vmstest.managed import ManagedVM  # noqa: E402

# the one-host suite's helpers (admin requests, skew of an answer)
_spec = importlib.util.spec_from_file_location("groups_system",
                                               os.path.join(HERE, "test-groups-system.py"))
gs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gs)

LEAD_S = 5.0  # T this far ahead: prepare and commit go over CPG (ms), TCG is slow


class CpgGroups:
    def __init__(self, image, builddir, workdir):
        self.workdir = workdir
        self.c = Cluster(os.path.join(workdir, "cluster"), hosts=2, token=500)
        self.layout = {1: ["g1", "g2"], 2: ["g3", "g4"]}
        self.fast = tempfile.mkdtemp(prefix="vmsgc-fast-", dir="/dev/shm")
        self.vms, self.bridges, self.socks = {}, {}, {}
        for i, names in self.layout.items():
            h = self.c.host(i)
            hdir = os.path.join(workdir, h.name)
            slow = os.path.join(hdir, "slow")
            os.makedirs(slow, exist_ok=True)
            vms = {n: ManagedVM(os.path.join(workdir, n), image, mem="128M") for n in names}
            self.vms.update(vms)
            self.socks[i] = os.path.join(hdir, "admin.sock")
            self.bridges[i] = Bridge(
                builddir, hdir, vms, host=h,
                per_vm={n: vms[n].section(rapid="on", fast_tier="fast", slow_tier="slow")
                        for n in names},
                bridge_options={"admin_socket": self.socks[i], "state_margin": "64M",
                                "group_require_clock_sync": "no", "group_min_lead_ms": 500},
                sections={"tier fast": {"path": os.path.join(self.fast, h.name),
                                        "capacity": "2G", "class": "fast"},
                          "tier slow": {"path": slow, "capacity": "8G", "class": "slow"},
                          "cluster": {"enabled": "yes", "node": h.name,
                                      "shared_dir": self.c.shared_dir, "host_vcpus": 2,
                                      "host_memory": "4G", "bridge_grace": 10}})
            os.makedirs(os.path.join(self.fast, h.name), exist_ok=True)

    def host_of(self, vm):
        return next(i for i, names in self.layout.items() if vm in names)

    def cluster(self, i):
        ok, ans = self.bridges[i].ctl("cluster", timeout=10)
        return ans if ok else {}

    def wait_synced(self, i, timeout=30):
        wait_until(lambda: (lambda s: s.get("quorate") and s.get("synced") and
                            sum(h["member"] for h in s.get("hosts", [])) == 2)(self.cluster(i)),
                   timeout, f"h{i}'s bridge quorate and synced with both hosts")

    def start(self):
        self.c.start()
        self.c.wait_quorate(timeout=30)
        for b in self.bridges.values():
            b.start()
        for i in self.bridges:
            self.wait_synced(i)
        for n in self.vms:
            ok, ans = self.bridges[self.host_of(n)].ctl("start", n, timeout=120)
            if not ok:
                raise RuntimeError(f"start {n}: {ans}")
        for vm in self.vms.values():
            vm.attach()
            vm.wait_ready(120)

    def admin(self, *args, timeout=300):
        return self.bridges[1].ctl(*args, timeout=timeout, retry=False)

    def status(self, vm):
        ans = gs.ask(self.socks[self.host_of(vm)], {"cmd": "status", "vm": vm}, 30)
        return ans["vms"][0] if ans.get("ok") and ans.get("vms") else {}

    def states(self, names=None):
        return {n: self.status(n).get("run_state") for n in names or self.vms}

    def close(self):
        for b in self.bridges.values():
            if b.alive():
                b.stop()
        for vm in self.vms.values():
            vm.kill()
        self.c.close()
        shutil.rmtree(self.fast, ignore_errors=True)


def test_suspend(t):
    print("== 1. suspend 4 VMs on 2 cluster hosts at T over CPG")
    sent0 = t.cluster(2).get("messages_sent", 0)
    at = time.time() + LEAD_S
    for vm in t.vms.values():
        vm.detach()
    ok, ans = t.admin("group", "suspend", "grp", f"{at:.6f}")
    check(ok and ans.get("outcome") == "done",
          f"group suspend at T done: {ans.get('outcome')} {ans.get('error', '')}")
    skew, ts = gs.skews_ms(ans, "stop_event_us")
    check(len(ts) == 4, f"4 STOP timestamps ({sorted(ts)})")
    if skew is not None:
        late = [(us / 1e6 - at) * 1000 for us in ts.values()]
        print(f"   STOP skew across the 2 hosts {skew:.3f} ms; stops {min(late):+.2f}.."
              f"{max(late):+.2f} ms after T")
        check(min(late) >= 0, f"no VM stopped before T ({min(late):+.3f} ms)")
        gs.timing(skew < gs.SKEW_P99_MS, f"STOP skew {skew:.3f} ms < {gs.SKEW_P99_MS} ms")
    bridges = {b["bridge"]: b for b in ans.get("bridges", [])}
    check(set(bridges) == {"self", "h2"} and all(b["ok"] for b in bridges.values()),
          f"h1 (self) and node h2 both did it: {sorted(bridges)}")
    sent = t.cluster(2).get("messages_sent", 0) - sent0
    check(sent >= 2, f"h2 answered over CPG (its bridge multicast {sent} messages: the "
          f"answers to prepare and commit)")
    st = t.states()
    check(all(s == "suspended" for s in st.values()), f"all suspended: {st}")
    cks = {n: t.status(n).get("checkpoint", {}) for n in t.vms}
    check(all(c.get("phase") == "valid" and os.path.exists(c.get("state_file", "/-"))
              for c in cks.values()), "4 valid checkpoints saved")
    ok, show = t.admin("group", "show", "grp")
    hist = show.get("history", [{}])
    check(ok and hist[0].get("outcome") == "done", f"the history records it: {hist[:1]}")

    at2 = time.time() + LEAD_S + 4
    ok, ans = t.admin("group", "resume", "grp", f"{at2:.6f}", "host")
    check(ok and ans.get("outcome") == "done",
          f"group resume at T2 over CPG done: {ans.get('outcome')} {ans.get('error', '')}")
    skew, ts = gs.skews_ms(ans, "resume_event_us")
    if skew is not None:
        print(f"   RESUME skew across the 2 hosts {skew:.3f} ms")
    st = t.states()
    check(all(s == "running" for s in st.values()), f"all running again: {st}")
    for vm in t.vms.values():
        vm.attach()
        vm.wait_ready(120)


def test_bridge_killed(t):
    print("== 2. h2's bridge killed between prepare and commit: abort, nothing suspended")
    b2 = t.bridges[2]
    log0 = len(b2.log())
    killed = {}

    def kill_after_prepare():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if "grp: prepared to suspend" in b2.log()[log0:]:
                break
            time.sleep(0.002)
        b2.kill9()
        killed["at"] = time.time()
    th = threading.Thread(target=kill_after_prepare)
    at = time.time() + LEAD_S + 3
    for n in ("g1", "g2"):
        t.vms[n].detach()
    th.start()
    ok, ans = t.admin("group", "suspend", "grp", f"{at:.6f}")
    answered = time.time()
    th.join()
    err = ans.get("error", "")
    check(not ok and ans.get("outcome") in ("aborted", "refused"),
          f"the control aborts the group: {ans.get('outcome')}: {err}")
    check("left the cluster's CPG group" in err, "... because h2 left the CPG group")
    if "at" in killed:
        print(f"   kill -> control's answer {(answered - killed['at']) * 1000:.0f} ms "
              f"({at - answered:.1f} s before T)")
        check(answered < at, "the abort came before T")
    time.sleep(max(0, at - time.time()) + 2)
    st = t.states(["g1", "g2"])
    check(all(s == "running" for s in st.values()), f"h1's VMs were not suspended at T: {st}")
    b2.start()
    t.wait_synced(1)
    t.wait_synced(2)
    st = t.states(["g3", "g4"])
    check(all(s == "running" for s in st.values()),
          f"h2's restarted bridge finds its VMs running (not suspended): {st}")
    ok, show = t.admin("group", "show", "grp")
    h0 = show.get("history", [{}])[0]
    check(h0.get("outcome") in ("aborted", "refused") and h0.get("op") == "suspend",
          f"the history records it for an admin: {h0.get('outcome')}")
    for n in ("g1", "g2"):
        t.vms[n].attach()


def test_control_killed(t):
    print("== 3. the control's bridge killed after h2's commit: h2 disarms, nothing suspended")
    b1, b2 = t.bridges[1], t.bridges[2]
    log0 = len(b2.log())
    at = time.time() + LEAD_S + 3
    for vm in t.vms.values():
        vm.detach()
    # the admin's command runs in a thread: its bridge dies under it
    th = threading.Thread(target=lambda: t.admin("group", "suspend", "grp", f"{at:.6f}",
                                                 timeout=30))
    th.start()
    try:
        wait_until(lambda: "grp: committed: suspend" in b2.log()[log0:], 20, "h2's commit")
    except TimeoutError:
        check(False, "h2 committed: " + b2.log()[log0:][-1500:])
        th.join()
        return
    b1.kill9()
    th.join()
    try:
        wait_until(lambda: "its control instance's bridge left" in b2.log()[log0:], 10,
                   "h2 disarms")
        check(time.time() < at, "h2 disarmed its part before T (its control instance left "
              "the CPG group)")
    except TimeoutError:
        check(False, "h2 disarmed: " + b2.log()[log0:][-1500:])
    time.sleep(max(0, at - time.time()) + 2)
    st = t.states(["g3", "g4"])
    check(all(s == "running" for s in st.values()), f"h2's VMs were not suspended at T: {st}")
    b1.start()
    t.wait_synced(1)
    st = t.states(["g1", "g2"])
    check(all(s == "running" for s in st.values()),
          f"h1's restarted bridge finds its VMs running (its timer died with it): {st}")
    for vm in t.vms.values():
        vm.attach()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--builddir", required=True)
    ap.add_argument("--workdir")
    ap.add_argument("--only", type=int, action="append")
    ap.add_argument("--strict-timing", action="store_true")
    a = ap.parse_args()
    gs.STRICT_TIMING[0] = gs.STRICT_TIMING[0] or a.strict_timing
    if os.geteuid() != 0:
        print("SKIP: needs root (network namespaces)")
        return 77
    workdir = a.workdir or tempfile.mkdtemp(prefix="vmsgc-", dir="/tmp")
    t0 = time.monotonic()
    t = CpgGroups(a.image, a.builddir, workdir)
    want = set(a.only or [1, 2, 3])
    try:
        t.start()
        ok, ans = t.admin("group", "create", "grp")
        check(ok, f"group create: {ans}")
        for n in t.vms:
            ok, ans = t.admin("group", "add", "grp", n, *(["h2"] if t.host_of(n) == 2 else []))
            check(ok, f"group add {n}{' on node h2' if t.host_of(n) == 2 else ''}: "
                      f"{ans.get('error', 'ok')}")
        ok, ans = t.admin("group", "add", "grp", "g9", "h7")
        check(not ok and "h7" in ans.get("error", ""),
              f"an unknown node is refused: {ans.get('error')}")
        for n, fn in ((1, test_suspend), (2, test_bridge_killed), (3, test_control_killed)):
            if n in want:
                try:
                    fn(t)
                except Exception as e:  # noqa: BLE001
                    check(False, f"test {n} raised {type(e).__name__}: {e}")
    finally:
        for i, b in t.bridges.items():
            if b.alive():
                rc = b.stop()
                check(rc == 0, f"h{i}'s bridge exits 0 on SIGTERM ({rc})")
        t.close()
        results.workdir_done(workdir, made_here=not a.workdir)
    return results.summary(f"in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
