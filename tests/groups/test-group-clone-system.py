#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Group clone on a real QEMU (issue 16, acceptance 5): a suspended group of 2 managed VMs
over 2 bridges is cloned into a new group, the clones resume at their own T through the
group protocol while the originals stay suspended, then the originals resume too and all
four run side by side, each with its own identity.

  - a clone of a running group is refused, saying why (suspend it first)
  - the clones: new names (CLONE.VM), their own run_dir, QEMU process, disk and checkpoint
    copies, MACs (the QEMU command line and the NIC's qdev property), SMBIOS UUID; the
    guest in each clone answers and holds the state the original had at the suspend
  - originals and clones diverge afterwards (a file written in one is not in the other)
  - the clones are in the journal: a restarted bridge serves them again (re-adopted QEMU)
"""
import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
from vmstest import Bridge, check, results  # noqa: E402
from vmstest.managed import ManagedVM  # noqa: E402

LEAD_S = 4.0
ORIG_MAC = "52:54:00:ab:cd:01"  # c1's NIC has one; c2's has none (QEMU would pick its default)


class Setup:
    def __init__(self, image, builddir, workdir):
        self.workdir = workdir
        self.fast = tempfile.mkdtemp(prefix="vmscl-fast-", dir="/dev/shm")
        self.slow = os.path.join(workdir, "slow")
        os.makedirs(self.slow, exist_ok=True)
        self.layout = {"a": ["c1"], "b": ["c2"]}
        self.socks = {b: os.path.join(workdir, f"admin-{b}.sock") for b in self.layout}
        self.vms, self.bridges, self.clones = {}, {}, {}
        self.image = image
        for b, names in self.layout.items():
            vms = {}
            for n in names:
                mac = f",mac={ORIG_MAC}" if n == "c1" else ""
                vms[n] = ManagedVM(os.path.join(workdir, n), image, mem="128M", extra_args=[
                    "-netdev", "user,id=n0,restrict=on",
                    "-device", f"virtio-net-pci,netdev=n0,id=nic0{mac}",
                    "-uuid", "0b0e5a1e-0000-4000-8000-00000000000" + n[-1]])
            self.vms.update(vms)
            per_vm = {n: vms[n].section(rapid="on", fast_tier="fast", slow_tier="slow")
                      for n in names}
            sections = {"tier fast": {"path": self.fast, "capacity": "2G", "class": "fast"},
                        "tier slow": {"path": self.slow, "capacity": "8G", "class": "slow"}}
            if b == "a":
                sections["peer b"] = {"admin_socket": self.socks["b"]}
            self.bridges[b] = Bridge(
                builddir, os.path.join(workdir, f"bridge-{b}"), vms, per_vm=per_vm,
                bridge_options={"admin_socket": self.socks[b], "state_margin": "64M",
                                "group_require_clock_sync": "no", "group_min_lead_ms": 500},
                sections=sections)

    def ctl(self, b, *args, timeout=300):
        return self.bridges[b].ctl(*args, sock=self.socks[b], timeout=timeout)

    def bridge_of(self, vm):
        return next(b for b, names in self.layout.items() if vm in names or
                    any(vm.endswith("." + n) for n in names))

    def status(self, vm):
        ok, ans = self.ctl(self.bridge_of(vm), "status", vm)
        return ans["vms"][0] if ok and ans.get("vms") else {}

    def cleanup(self):
        for vm in list(self.vms.values()) + list(self.clones.values()):
            vm.kill()
        shutil.rmtree(self.fast, ignore_errors=True)


def cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]


def nic_mac(args):
    """The mac= of the virtio-net-pci device in a QEMU argv."""
    for a in args:
        if a.startswith("virtio-net-pci"):
            return next((f[4:] for f in a.split(",") if f.startswith("mac=")), None)
    return None


def uuid_of(args):
    return args[args.index("-uuid") + 1] if "-uuid" in args else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--builddir", required=True)
    ap.add_argument("--workdir")
    a = ap.parse_args()
    workdir = a.workdir or tempfile.mkdtemp(prefix="vmscl-", dir="/tmp")
    t0 = time.monotonic()
    t = Setup(a.image, a.builddir, workdir)
    try:
        for b in t.bridges.values():
            b.start()
        for n, vm in t.vms.items():
            ok, ans = t.ctl(t.bridge_of(n), "start", n)
            check(ok, f"start {n}: {ans.get('error', 'ok')}")
        for vm in t.vms.values():
            vm.attach()
            vm.wait_ready(180)
        ok, _ = t.ctl("a", "group", "create", "lab")
        check(ok, "group create lab")
        check(t.ctl("a", "group", "add", "lab", "c1")[0] and
              t.ctl("a", "group", "add", "lab", "c2", "b")[0], "group add c1 (a), c2 (b)")

        print("== clone of a running group: refused")
        ok, ans = t.ctl("a", "group", "clone", "lab", "lab2")
        err = ans.get("error", "")
        check(not ok and "running, not suspended" in err and "c1" in err and "c2" in err,
              f"refused, each bridge saying why: {err}")
        ok, show = t.ctl("a", "group", "show", "lab2")
        check(not ok, f"no group lab2 was made: {show.get('error')}")
        check(not os.path.exists(os.path.join(workdir, "lab2.c1")), "no clone run_dir was made")

        print("== suspend the group, then clone it with a resume at T")
        marks = {n: secrets.token_hex(8) for n in t.vms}
        for n, vm in t.vms.items():
            rc, _ = vm.run(f"echo {marks[n]} > /root/mark && sync")
            check(rc == 0, f"{n}: a mark written in the guest before the suspend")
            vm.detach()
        ok, ans = t.ctl("a", "group", "suspend", "lab", f"+{LEAD_S}")
        check(ok and ans.get("outcome") == "done", f"group suspend lab: {ans.get('error', 'done')}")
        ok, ans = t.ctl("a", "group", "clone", "lab", "lab2", "--at", f"+{LEAD_S + 4}",
                        "--policy", "preserve")
        check(ok and ans.get("outcome") == "done",
              f"group clone lab lab2 --at T: resumed {ans.get('outcome')} {ans.get('error', '')}")
        clones = {c["vm"]: c for c in ans.get("clones", [])}
        check(set(clones) == {"c1", "c2"} and clones["c1"]["clone"] == "lab2.c1" and
              clones["c2"]["clone"] == "lab2.c2" and clones["c2"]["bridge"] == "b",
              f"one clone per VM, named lab2.VM, made on the VM's bridge: "
              f"{[(c.get('bridge'), c.get('clone')) for c in clones.values()]}")
        for c in clones.values():
            print(f"   {c.get('clone')}: run_dir {c.get('run_dir')}, MACs {c.get('macs')}, "
                  f"{c.get('reflinked_files')} file(s) reflinked, {c.get('copied_files')} copied")
        results.numbers["copied_files"] = sum(c.get("copied_files", 0) for c in clones.values())
        results.numbers["reflinked_files"] = sum(c.get("reflinked_files", 0)
                                                 for c in clones.values())
        st = {n: t.status(n).get("run_state") for n in ["c1", "c2", "lab2.c1", "lab2.c2"]}
        check(st == {"c1": "suspended", "c2": "suspended", "lab2.c1": "running",
                     "lab2.c2": "running"},
              f"the clones run, the originals stay suspended: {st}")
        ok, show = t.ctl("a", "group", "show", "lab2")
        members = sorted((m["bridge"], m["vm"]) for m in show.get("members", []))
        check(ok and members == [("b", "lab2.c2"), ("self", "lab2.c1")],
              f"group lab2 holds the clones: {members}")
        hist = [h["op"] for h in show.get("history", [])]
        check(hist[:2] == ["resume", "clone"], f"lab2's history: clone, then resume: {hist}")
        ok, show = t.ctl("a", "group", "show", "lab")
        check(show.get("history", [{}])[0].get("op") == "clone",
              "lab's history records the clone too")

        for n in t.vms:
            cname = f"lab2.{n}"
            cvm = ManagedVM(clones[n]["run_dir"], t.image, mem="128M")
            t.clones[cname] = cvm
            cvm.attach()
            cvm.wait_ready(120)
            rc, out = cvm.run("cat /root/mark")
            check(rc == 0 and out.strip() == marks[n],
                  f"{cname}'s guest answers and holds {n}'s state at the suspend "
                  f"(mark {out.strip()!r})")

        print("== the originals resume too: all four run side by side")
        ok, ans = t.ctl("a", "group", "resume", "lab", f"+{LEAD_S + 2}", "preserve")
        check(ok and ans.get("outcome") == "done", f"group resume lab: {ans.get('error', 'done')}")
        for vm in t.vms.values():
            vm.attach()
            vm.wait_ready(120)
        everyone = {**t.vms, **t.clones}
        st = {n: t.status(n).get("run_state") for n in everyone}
        check(all(s == "running" for s in st.values()), f"all four running: {st}")
        pids = {n: t.status(n).get("pid") for n in everyone}
        check(len(set(pids.values())) == 4 and all(pids.values()), f"four QEMU processes: {pids}")
        args = {n: cmdline(p) for n, p in pids.items()}
        macs = {n: nic_mac(a) for n, a in args.items()}
        print(f"   NIC MACs on the QEMU command lines: {macs}")
        check(macs["c1"] == ORIG_MAC and macs["c2"] is None,
              "the originals' command lines are as configured (c2: no mac=, QEMU's default)")
        check(macs["lab2.c1"] == clones["c1"]["macs"][0] and
              macs["lab2.c2"] == clones["c2"]["macs"][0] and
              len({macs["lab2.c1"], macs["lab2.c2"], ORIG_MAC}) == 3,
              "each clone's NIC has its own MAC on its command line (mac= replaced, or added)")
        qmacs = {n: v.qmp("qom-get", path="/machine/peripheral/nic0", property="mac")
                 for n, v in everyone.items()}
        print(f"   NIC MACs as QEMU reports them (qom-get nic0 mac): {qmacs}")
        check(len(set(qmacs.values())) == 4, "four distinct NIC MACs in QEMU")
        # what the guest sees: virtio-net's device state in the checkpoint carries the MAC the
        # original had (the guest's driver read it at boot), so a clone's NIC filters and sends
        # with it until the guest sets the new one (admin guide 11 tells the user to)
        rx = {n: v.qmp("query-rx-filter")[0].get("main-mac") for n, v in everyone.items()}
        print(f"   guest-visible MAC (query-rx-filter main-mac): {rx}")
        check(rx["lab2.c1"] == ORIG_MAC,
              "inside a clone the NIC keeps the original's MAC until the guest sets the new one "
              "(documented)")
        uuids = {n: uuid_of(a) for n, a in args.items()}
        check(len(set(uuids.values())) == 4, f"four distinct SMBIOS UUIDs (-uuid): {uuids}")
        run_dirs = {n: os.path.dirname(next(f[5:] for x in a for f in x.split(",")
                                            if f.startswith("path=") and
                                            f.endswith("qmp-test.sock"))) for n, a in args.items()}
        check(len(set(run_dirs.values())) == 4, f"four run_dirs (sockets, console): {run_dirs}")
        disks = {n: next((f.split("=", 1)[1] for x in a for f in x.split(",")
                          if f.startswith("filename=")), None) for n, a in args.items()}
        check(len(set(disks.values())) == 4 and all(os.path.exists(d) for d in disks.values()),
              f"four disk files: {disks}")
        for n, vm in everyone.items():
            rc, _ = vm.run(f"echo {n} > /root/who && sync")
            check(rc == 0, f"{n}: its guest answers")
        for n, vm in everyone.items():
            rc, out = vm.run("cat /root/who")
            check(out.strip() == n, f"{n}: what it wrote is its own ({out.strip()!r}): the "
                  "clones and originals diverge")

        print("== the clones are durable: bridge b restarts and serves its clone again")
        t.clones["lab2.c2"].detach()
        b = t.bridges["b"]
        check(b.stop() == 0, "bridge b exits 0 on SIGTERM")
        b.start()
        ok, ans = (False, {})
        for _ in range(100):
            ok, ans = t.ctl("b", "status", "lab2.c2")
            if ok:
                break
            time.sleep(0.1)
        s = ans.get("vms", [{}])[0]
        check(ok and s.get("run_state") == "running" and s.get("pid") == pids["lab2.c2"],
              f"lab2.c2 re-adopted from the journal: {s.get('run_state')} pid {s.get('pid')}")
        t.clones["lab2.c2"].attach()
        rc, out = t.clones["lab2.c2"].run("cat /root/who")
        check(rc == 0 and out.strip() == "lab2.c2", "lab2.c2's guest still answers")
        ok, ans = t.ctl("a", "group", "clone", "lab", "lab2")
        check(not ok and "exists already" in ans.get("error", ""),
              f"a clone into an existing group is refused: {ans.get('error')}")
    finally:
        for n in list(t.vms) + list(t.clones):
            try:
                t.clones.get(n, t.vms.get(n)).detach()
            except Exception:  # noqa: BLE001
                pass
        for b in t.bridges.values():
            rc = b.stop()
            check(rc == 0, f"bridge exits 0 on SIGTERM ({rc})")
        t.cleanup()
        results.workdir_done(workdir, made_here=not a.workdir)
    return results.summary(f"in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
