#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Managed VMs on a real QEMU: the bridge starts, suspends, resumes, stops and re-adopts them.

Acceptance of the lifecycle issue, one test each (--only N runs one):
  1 zero-copy suspend + resume of a 512 MiB guest (RAM in a fast tier): memory pattern,
    running app, ports and D-Bus API, clock, the app's "resumed" notice; times reported
  2 the same on the copy path, suspend MiB/s against dd to the same tier
  3 power-on refused when the fast tier cannot reserve the VM (the numbers named);
    rapid = best-effort falls back to the slow tier
  4 one-shot checkpoints: a second resume is refused, a changed RAM file is refused, the
    RAM file carries an OFD lock while suspended and while QEMU runs
  5 fast tier full: the least recently used unpinned checkpoint is demoted and its VM
    resumes from the slow tier; a pinned (rapid = on) checkpoint is never touched; a
    scheduled resume promotes the checkpoint back ahead of time
  6 bridge SIGKILLed while VMs run, in the middle of a suspend and of a demotion: VMs run
    or are cleanly suspended, re-adopted, nothing lost or doubled
  7 storm: 4 suspends at once are spaced by lifecycle_per_minute; a resume goes first
  8 idle auto-suspend (no console client) and resume when a client connects
  9 offline set-memory (issue 14): refused when the tier cannot hold the new size; else the
    guest is shut down, its memory changed (journaled: kept across a bridge restart and a
    stop/start), booted again, and the request's completion reaches the app in the new boot
"""
import argparse
import fcntl
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
from vmstest import Bridge, VMError, check, results, wait_until  # noqa: E402
from vmstest.managed import ManagedVM  # noqa: E402

F_OFD_SETLK = 37
SECRET = "lifecycle-s3cret-for-tests"


class Lifecycle:
    def __init__(self, image, builddir, workdir):
        self.image, self.builddir, self.workdir = image, builddir, workdir
        self.fast = tempfile.mkdtemp(prefix="vmslc-fast-", dir="/dev/shm")
        self.slow = os.path.join(workdir, "slow")
        self.tiny = tempfile.mkdtemp(prefix="vmslc-tiny-", dir="/dev/shm")
        self.small = tempfile.mkdtemp(prefix="vmslc-small-", dir="/dev/shm")
        self.otier = tempfile.mkdtemp(prefix="vmslc-otier-", dir="/dev/shm")
        os.makedirs(self.slow, exist_ok=True)
        spec = {  # name: (memory, section keys)
            "m1": ("512M", {"rapid": "on", "fast_tier": "fast", "slow_tier": "slow",
                            "qemu_user": "nobody"}),
            "m2": ("512M", {"rapid": "off", "slow_tier": "slow"}),
            "m3": ("512M", {"rapid": "on", "fast_tier": "tiny"}),
            "m4": ("512M", {"rapid": "best-effort", "fast_tier": "tiny", "slow_tier": "slow"}),
            "m5": ("128M", {"rapid": "best-effort", "fast_tier": "small", "slow_tier": "slow"}),
            "m6": ("128M", {"rapid": "on", "fast_tier": "small", "slow_tier": "slow"}),
            "m7": ("128M", {"rapid": "on", "fast_tier": "small", "slow_tier": "slow"}),
            "i1": ("128M", {"rapid": "on", "fast_tier": "fast", "slow_tier": "slow",
                            "console": "yes", "idle_suspend": 6}),
            # offline set-memory: 128M + the 64M margin in a 320M tier; 192M fits, 288M not
            "o1": ("128M", {"rapid": "on", "fast_tier": "otier", "mem_min": "64M",
                            "mem_max": "512M", "stop_timeout": 5}),
        }
        for i in range(1, 5):
            spec[f"s{i}"] = ("128M", {"rapid": "on", "fast_tier": "fast", "slow_tier": "slow"})
        self.vms = {n: ManagedVM(os.path.join(workdir, n), image, mem=m) for n, (m, _) in spec.items()}
        per_vm = {n: self.vms[n].section(**keys) for n, (_, keys) in spec.items()}
        self.admin_sock = os.path.join(workdir, "admin.sock")
        self.bridge = Bridge(
            builddir, workdir, self.vms, per_vm=per_vm,
            bridge_options={"admin_socket": self.admin_sock, "state_margin": "64M"},
            sections={"tier fast": {"path": self.fast, "capacity": "4G", "class": "fast"},
                      "tier slow": {"path": self.slow, "capacity": "16G", "class": "slow"},
                      "tier tiny": {"path": self.tiny, "capacity": "256M", "class": "fast"},
                      "tier small": {"path": self.small, "capacity": "200M", "class": "fast"},
                      "tier otier": {"path": self.otier, "capacity": "320M", "class": "fast"}})

    # ---- the bridge's admin socket ----
    def lc(self, cmd, vm=None, timeout=180):
        """vmstate-admin -j CMD [VM]: (ok, the answer as a dict)."""
        return self.bridge.ctl(cmd, *([vm] if vm else []), sock=self.admin_sock, timeout=timeout)

    def status(self, vm):
        ok, ans = self.lc("status", vm)
        return ans["vms"][0] if ok and ans.get("vms") else {}

    def start_vm(self, name):
        ok, ans = self.lc("start", name)
        if not ok:
            raise VMError(f"start {name}: {ans}")
        vm = self.vms[name]
        vm.attach()
        vm.wait_ready(120)
        return ans

    def wait_helper(self, name, timeout=60):
        """The guest helper reports BridgeConnected (ports up, Welcome received)."""
        vm = self.vms[name]

        def connected():
            rc, out = vm.run("dbus-send --system --print-reply --dest=org.vmstate.Helper1 "
                             "/org/vmstate/Helper1 org.freedesktop.DBus.Properties.Get "
                             "string:org.vmstate.Helper1 string:BridgeConnected")
            return rc == 0 and "boolean true" in out
        wait_until(connected, timeout, f"{name}'s helper connected")

    def grant(self, name):
        self.bridge.admin("grant", "app", name, "all")
        self.vms[name].write_file("/root/vmstate-secret", SECRET + "\n", mode=0o600)

    def hostinfo(self, name):
        rc, out = self.vms[name].run("VMSTATE_PRINCIPAL=app VMSTATE_SECRET=$(cat /root/vmstate-secret)"
                                     " vmstatectl -t 30 hostinfo", timeout=60)
        return rc, out

    def pattern(self, name, mib=48):
        """Fill guest memory with random bytes; their md5."""
        return self.vms[name].check(f"dd if=/dev/urandom of=/tmp/pattern bs=1M count={mib} "
                                    "2>/dev/null; md5sum /tmp/pattern").split()[0]

    def md5(self, name):
        return self.vms[name].check("md5sum /tmp/pattern").split()[0]

    def qemus(self, name):
        """QEMU processes running this VM (by its -name)."""
        out = subprocess.run(["pgrep", "-f", f"[-]name {name},debug-threads"], capture_output=True,
                             text=True).stdout
        return [int(p) for p in out.split()]

    def suspend(self, name):
        self.vms[name].detach()
        return self.lc("suspend", name)

    def resume(self, name, attach=True):
        ok, ans = self.lc("resume", name)
        if ok and attach:
            self.vms[name].attach()
            self.vms[name].wait_ready(60)
        return ok, ans

    def stop_vm(self, name):
        self.vms[name].detach()
        return self.lc("stop", name, timeout=60)

    def cleanup(self):
        for vm in self.vms.values():
            vm.kill()
        for d in (self.fast, self.tiny, self.small, self.otier):
            shutil.rmtree(d, ignore_errors=True)


def ofd_locked(path):
    """True if another open file description holds a lock on path (F_OFD_SETLK fails)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.fcntl(fd, F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def dd_mib_s(directory, mib=512):
    """The tier's floor: dd of mib MiB with fdatasync, MiB/s."""
    path = os.path.join(directory, "dd-floor")
    t0 = time.monotonic()
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}",
                    "conv=fdatasync"], capture_output=True, check=True)
    dt = time.monotonic() - t0
    os.unlink(path)
    return mib / dt


# ---- the tests ----

def test_zero_copy(t):
    print("== 1. zero-copy suspend and resume (512 MiB, RAM in the fast tier)")
    ans = t.start_vm("m1")
    check(ans.get("zero_copy") is True and ans.get("tier") == "fast", f"m1 runs with its RAM in tier fast: {ans}")
    ram = os.path.join(t.fast, "m1.ram")
    check(os.path.exists(ram) and os.stat(ram).st_size == 512 << 20, "the RAM file has the full size")
    check(os.stat(ram).st_blocks * 512 >= 512 << 20, "the RAM file is allocated (fallocate), not sparse")
    t.grant("m1")
    t.wait_helper("m1")
    vm = t.vms["m1"]
    h1 = t.pattern("m1", 64)
    vm.spawn("i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done")
    vm.spawn("VMSTATE_APP_ID=org.test.Watcher vmstatectl watch", "/tmp/watch.log")
    time.sleep(1)
    ok, ans = t.suspend("m1")
    check(ok and ans.get("zero_copy") is True, f"suspend (zero-copy): {ans}")
    results.numbers["zc_suspend_ms"] = ans.get("total_ms", -1)
    st = t.status("m1")
    check(st.get("run_state") == "suspended" and not t.qemus("m1"), "m1 is suspended, no QEMU runs it")
    ck = st.get("checkpoint", {})
    check(ck.get("zero_copy") and os.path.getsize(ck.get("state_file", "/")) < 8 << 20,
          "the checkpoint holds only device state (< 8 MiB)")
    check(ofd_locked(ram), "the suspended VM's RAM file is locked (OFD) against a second QEMU")
    time.sleep(2.5)  # the guest clock falls behind by the pause unless the bridge fixes it
    ok, ans = t.resume("m1")
    check(ok, f"resume: {ans}")
    results.numbers["zc_resume_ms"] = ans.get("total_ms", -1)
    check(ofd_locked(ram), "the running QEMU holds the RAM file's lock")
    check(t.md5("m1") == h1, "the memory pattern is intact after the resume")
    c1 = int(vm.check("cat /tmp/counter"))
    time.sleep(0.6)
    c2 = int(vm.check("cat /tmp/counter"))
    check(c2 > c1, f"the app kept running ({c1} -> {c2})")
    rc, out = t.hostinfo("m1")
    check(rc == 0 and "bridge" in out.lower(), f"ports and D-Bus API work: vmstatectl hostinfo ({rc})")
    # issue 14: a managed VM's hostinfo names its tiers and what they can still take
    tiers = {m.group(1): (int(m.group(2)), int(m.group(3)))
             for m in re.finditer(r"^\s*tier (\S+): (\d+) bytes free of (\d+)$", out, re.M)}
    check(set(tiers) == {"fast", "slow"} and tiers["fast"][0] < tiers["fast"][1] and
          tiers["fast"][1] - tiers["fast"][0] >= 512 << 20,
          f"hostinfo shows the VM's tiers with free space (m1's 512 MiB reserved in fast): {tiers}")
    check(re.search(r"vm: \d+ vCPUs, memory boot 536870912 ", out) is not None and
          re.search(r"hypervisor: QEMU \d+\.\d+\.\d+", out) is not None,
          "hostinfo shows the VM's vCPUs, boot memory and the hypervisor's version")
    t0 = time.time()
    guest = float(vm.check("vms-clock-tool now").split()[0])  # CLOCK_REALTIME, ns resolution
    skew = abs(guest - (t0 + time.time()) / 2)
    check(skew < 1.0, f"the guest clock was corrected (off by {skew * 1000:.0f} ms after a 2.5 s suspend)")
    results.numbers["zc_clock_skew_ms"] = skew * 1000
    try:
        wait_until(lambda: "resumed" in vm.run("cat /tmp/watch.log")[1], 10, "the notice")
        check(True, "a guest app heard 'resumed' (vmstatectl watch)")
    except TimeoutError:
        check(False, "a guest app heard 'resumed': " + vm.run("cat /tmp/watch.log")[1][-500:])
    test_guest_suspend(t)


def test_guest_suspend(t):
    print("== 1b. a guest app asks for the suspend (operation suspend, its own right)")
    vm = t.vms["m1"]
    vm.spawn("VMSTATE_PRINCIPAL=app VMSTATE_SECRET=$(cat /root/vmstate-secret) "
             "vmstatectl -w -t 120 suspend; echo rc=$?", "/tmp/suspend.out")
    try:
        wait_until(lambda: t.status("m1").get("run_state") == "suspended", 60, "the guest's suspend")
        check(True, "vmstatectl suspend in the guest suspended the VM")
    except TimeoutError:
        check(False, f"vmstatectl suspend in the guest suspended the VM: {t.status('m1')}")
        return
    vm.detach()
    ok, ans = t.resume("m1")
    check(ok, f"the admin resumes it: {ans}")
    try:
        out = wait_until(lambda: (lambda o: o if "rc=" in o else None)(vm.run("cat /tmp/suspend.out")[1]),
                         30, "vmstatectl's answer")
        check("rc=0" in out and "ok" in out,
              f"the app's suspend request completed, in the resumed guest: {out.strip()[-200:]}")
    except TimeoutError:
        check(False, "the app's suspend request completed: " + vm.run("cat /tmp/suspend.out")[1])
    rows = [r for r in t.bridge.table("requests", "m1") if "suspend" in r]
    check(len(rows) == 1, f"one suspend request in the journal ({len(rows)})")


def test_one_shot(t):
    print("== 4. one-shot checkpoints and locks")
    ok, ans = t.lc("resume", "m1")
    check(not ok and "one-shot" in ans.get("error", ""), f"a second resume is refused: {ans.get('error')}")
    ok, ans = t.suspend("m1")
    check(ok, "suspend m1 again")
    ram = os.path.join(t.fast, "m1.ram")
    fd = os.open(ram, os.O_WRONLY)
    os.pwrite(fd, b"\x5a", 1 << 20)  # what a stray second QEMU would do to the guest's RAM
    os.close(fd)
    ok, ans = t.lc("resume", "m1")
    check(not ok and "changed" in ans.get("error", ""), f"resume after the RAM file changed is refused: {ans.get('error')}")
    check(t.status("m1").get("run_state") == "suspended" and not t.qemus("m1"), "m1 stays suspended, no QEMU started")
    ok, ans = t.stop_vm("m1")
    check(ok and ans.get("discarded"), "stop discards the checkpoint")
    check(not os.path.exists(ram) and not os.listdir(t.fast), "the RAM file and the state file are gone")
    check(t.status("m1").get("run_state") == "stopped", "m1 is stopped")


def test_copy_path(t):
    print("== 2. copy-path suspend and resume (512 MiB, checkpoint file in the slow tier)")
    ans = t.start_vm("m2")
    check(ans.get("zero_copy") is False and ans.get("tier") == "slow", f"m2 runs with anonymous RAM: {ans}")
    h = t.pattern("m2", 160)
    ok, ans = t.suspend("m2")
    check(ok and ans.get("zero_copy") is False, f"suspend (copy): {ans}")
    st = t.status("m2")
    size = os.path.getsize(st.get("checkpoint", {}).get("state_file", "/dev/null"))
    ms = ans.get("checkpoint_ms", 0) or 1
    mib_s = size / (1 << 20) / (ms / 1000)
    floor = dd_mib_s(t.slow)
    check(size > 160 << 20, f"the checkpoint holds the guest's RAM ({size >> 20} MiB)")
    print(f"   copy suspend: {size >> 20} MiB in {ms:.0f} ms = {mib_s:.0f} MiB/s; dd to the same "
          f"tier {floor:.0f} MiB/s; ratio {mib_s / floor:.2f}")
    results.numbers["copy_suspend_ms"] = ans.get("total_ms", -1)
    results.numbers["copy_mib_s"] = mib_s
    results.numbers["copy_vs_dd"] = mib_s / floor
    ok, ans = t.resume("m2")
    check(ok, f"resume from the copy: {ans}")
    results.numbers["copy_resume_ms"] = ans.get("total_ms", -1)
    check(t.md5("m2") == h, "the memory pattern is intact")
    ok, _ = t.stop_vm("m2")
    check(ok and not t.qemus("m2"), "stop m2 (ACPI powerdown, then quit)")


def test_reservation(t):
    print("== 3. reservation at power-on")
    ok, ans = t.lc("start", "m3")
    err = ans.get("error", "")
    check(not ok and "tier tiny" in err and "capacity" in err and "free" in err and "missing" in err,
          f"rapid = on refused with the numbers: {err}")
    check(not t.qemus("m3") and t.status("m3").get("run_state") == "stopped", "no QEMU started for m3")
    ans = t.start_vm("m4")
    check(ans.get("tier") == "slow" and ans.get("zero_copy") is False,
          f"rapid = best-effort falls back to the slow tier: {ans}")
    check("falls back to tier slow" in t.bridge.log(), "the bridge says so in its log")
    ok, _ = t.stop_vm("m4")
    check(ok, "stop m4")


def test_demotion(t):
    print("== 5. fast tier full: demotion of the least recently used unpinned checkpoint")
    ans = t.start_vm("m5")
    check(ans.get("tier") == "small" and ans.get("zero_copy"), f"m5 (best-effort) runs in tier small: {ans}")
    h = t.pattern("m5", 32)
    ok, ans = t.suspend("m5")
    ck = t.status("m5").get("checkpoint", {})
    check(ok and ck.get("tier") == "small" and not ck.get("pinned"), "m5 suspended in small, unpinned")
    ans = t.start_vm("m6")
    check(ans.get("tier") == "small", f"m6 (rapid = on) starts in small after a demotion: {ans}")
    ck = t.status("m5").get("checkpoint", {})
    check(ck.get("tier") == "slow", f"m5's checkpoint was demoted to slow: {ck}")
    check(os.path.exists(os.path.join(t.slow, "m5.ram")) and not os.path.exists(os.path.join(t.small, "m5.ram")),
          "the RAM file moved (one copy left)")
    ok, ans = t.resume("m5")
    check(ok and ans.get("tier") == "slow", f"m5 resumes from the slow tier: {ans}")
    check(t.md5("m5") == h, "m5's memory pattern is intact")
    ok, ans = t.suspend("m6")
    ck = t.status("m6").get("checkpoint", {})
    check(ok and ck.get("pinned") and ck.get("tier") == "small", "m6 suspended, its checkpoint pinned in small")
    ok, ans = t.lc("start", "m7")
    check(not ok and "tier small" in ans.get("error", ""), f"m7 refused: the pinned checkpoint is not evicted: {ans.get('error')}")
    ck2 = t.status("m6").get("checkpoint", {})
    check(ck2.get("tier") == "small" and ck2.get("id") == ck.get("id"), "m6's checkpoint was not touched")
    ok, ans = t.resume("m6")
    check(ok, "m6 resumes")
    t.stop_vm("m6")
    # a scheduled resume promotes a demoted checkpoint back to the fast tier ahead of time
    ok, _ = t.suspend("m5")
    check(ok and t.status("m5").get("checkpoint", {}).get("tier") == "slow", "m5 suspended in slow")
    r = subprocess.run([t.bridge.admin_exe, "-S", t.admin_sock, "schedule", "m5", "resume", "+8"],
                       capture_output=True, text=True)
    check(r.returncode == 0, f"vmstate-admin schedule m5 resume +8 ({r.stderr.strip()})")
    try:
        wait_until(lambda: t.status("m5").get("checkpoint", {}).get("tier") == "small", 20,
                   "promotion")
        check(t.status("m5").get("run_state") == "suspended", "promoted to small before the resume time")
        wait_until(lambda: t.status("m5").get("run_state") == "running", 30, "scheduled resume")
        check(t.status("m5").get("tier") == "small", "resumed at the scheduled time, from the fast tier")
        t.vms["m5"].attach()
        t.vms["m5"].wait_ready(60)
        check(t.md5("m5") == h, "m5's memory pattern is intact after promotion")
    except TimeoutError as e:
        check(False, f"scheduled resume with promotion: {e}: {t.status('m5')}")
    t.stop_vm("m5")


def test_crashes(t):
    print("== 6. bridge SIGKILLed: while VMs run, mid-suspend, mid-demotion")
    t.start_vm("m1")
    t.grant("m1")
    t.wait_helper("m1")
    h = t.pattern("m1", 16)
    pid = t.vms["m1"].pid()
    t.bridge.kill9()
    check(t.vms["m1"].alive(), "QEMU survives the bridge's SIGKILL")
    t.bridge.start()
    wait_until(lambda: t.status("m1").get("qmp"), 30, "QMP re-adopted")
    st = t.status("m1")
    check(st.get("run_state") == "running" and st.get("pid") == pid and t.qemus("m1") == [pid],
          f"the restarted bridge re-adopted the same QEMU (one process: {pid} {st.get('pid')} "
          f"{t.qemus('m1')})")
    t.wait_helper("m1")
    rc, _ = t.hostinfo("m1")
    check(rc == 0, "requests work after the re-adoption")

    for point, want in (("suspend-journaled", "running"), ("suspend-written", "suspended")):
        os.environ["VMSTATE_BRIDGE_CRASH_AT"] = point
        t.bridge.restart()
        del os.environ["VMSTATE_BRIDGE_CRASH_AT"]
        wait_until(lambda: t.status("m1").get("qmp"), 30, "QMP")
        t.vms["m1"].detach()
        ok, _ = t.lc("suspend", "m1", timeout=60)
        wait_until(lambda: not t.bridge.alive(), 30, "the bridge's crash")
        check(not ok, f"the bridge died at {point}")
        t.bridge.stop()
        t.bridge.start()
        wait_until(lambda: (lambda st: st.get("run_state") == want and st.get("op") == "none")(
            t.status("m1")), 60, f"m1 {want}")
        st = t.status("m1")
        check(st.get("run_state") == want, f"after a crash at {point}, m1 is {want}")
        if want == "running":
            t.vms["m1"].attach()
            t.vms["m1"].wait_ready(60)
            check(len(t.qemus("m1")) == 1 and t.md5("m1") == h,
                  f"one QEMU ({t.qemus('m1')}), the guest runs on, memory intact")
        else:
            check(not t.qemus("m1") and len([f for f in os.listdir(t.fast) if f.endswith(".state")]) == 1,
                  "QEMU is gone, one checkpoint file")
            ok, _ = t.resume("m1")
            check(ok and t.md5("m1") == h, "the finished suspend resumes with memory intact")

    # mid-demotion: m5 suspended in small (unpinned), its demotion cut at two points
    t.start_vm("m5")
    h5 = t.pattern("m5", 16)
    t.suspend("m5")
    for point, tier in (("move-copied", "small"), ("move-switched", "slow")):
        os.environ["VMSTATE_BRIDGE_CRASH_AT"] = point
        t.bridge.restart()
        del os.environ["VMSTATE_BRIDGE_CRASH_AT"]
        t.lc("demote", "m5", timeout=60)
        wait_until(lambda: not t.bridge.alive(), 30, "the bridge's crash")
        t.bridge.stop()
        t.bridge.start()
        wait_until(lambda: t.status("m5").get("run_state") == "suspended", 30, "m5 suspended")
        ck = t.status("m5").get("checkpoint", {})
        check(ck.get("tier") == tier, f"after a crash at {point} the checkpoint is in {tier}")
        other = t.small if tier == "slow" else t.slow
        check(not [f for f in os.listdir(other) if f.startswith("m5")],
              f"no second copy left in {os.path.basename(other)}")
    ok, _ = t.resume("m5")
    check(ok and t.md5("m5") == h5, "m5 resumes from its one copy, memory intact")
    for n in ("m1", "m5"):
        t.stop_vm(n)


def test_storm(t):
    print("== 7. storm: 4 suspends at once, throttled; a resume goes first")
    names = [f"s{i}" for i in range(1, 5)]
    for n in names + ["m6"]:
        t.start_vm(n)
    t.suspend("m6")
    t.bridge.bridge_options["lifecycle_per_minute"] = 60
    t.bridge.restart()
    wait_until(lambda: all(t.status(n).get("qmp") for n in names), 30, "QMP")
    mark = len(t.bridge.log())
    answers = {}

    def go(cmd, n):
        answers[n] = t.lc(cmd, n)
    threads = [threading.Thread(target=go, args=("suspend", n)) for n in names]
    for n in names:
        t.vms[n].detach()
    for th in threads:
        th.start()
    time.sleep(0.3)
    threads.append(threading.Thread(target=go, args=("resume", "m6")))
    threads[-1].start()
    for th in threads:
        th.join()
    check(all(answers[n][0] for n in names + ["m6"]), "every operation of the storm succeeded")
    starts = []
    for line in t.bridge.log()[mark:].splitlines():
        m = re.match(r"(\d+):(\d+):([\d.]+) .*vm=(\S+): lifecycle: (suspend|resume) starts", line)
        if m:
            starts.append((int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)),
                           m.group(4), m.group(5)))
    order = [f"{op} {vm}" for _, vm, op in starts]
    gaps = [b[0] - a[0] for a, b in zip(starts, starts[1:])]
    print(f"   order: {order}; gaps: {[f'{g:.2f}' for g in gaps]} s")
    check(len(starts) == 5 and order[1] == "resume m6",
          "the resume issued during the storm ran before the queued suspends")
    check(gaps and min(gaps) >= 0.95, "operations started at least 1 s apart (60 per minute)")
    results.numbers["storm_span_s"] = starts[-1][0] - starts[0][0] if starts else -1
    t.bridge.bridge_options["lifecycle_per_minute"] = 0
    t.bridge.restart()
    t.vms["m6"].attach()
    for n in names + ["m6"]:
        t.stop_vm(n)


def test_idle(t):
    print("== 8. idle auto-suspend and connect-to-resume on the console socket")
    t0 = time.monotonic()
    ok, ans = t.lc("start", "i1")
    check(ok, f"start i1 (console = yes, idle_suspend = 6 s): {ans}")
    try:
        wait_until(lambda: t.status("i1").get("run_state") == "suspended", 60, "idle suspend")
        idle = time.monotonic() - t0
        check(idle >= 6, f"i1 suspended itself {idle:.1f} s after its start with no console client")
    except TimeoutError:
        check(False, f"i1 suspended itself when idle: {t.status('i1')}")
        return
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.path.join(t.vms["i1"].workdir, "console.sock"))
    t1 = time.monotonic()
    try:
        wait_until(lambda: t.status("i1").get("run_state") == "running", 30, "resume on connect")
        check(True, f"a console client woke it up ({(time.monotonic() - t1) * 1000:.0f} ms)")
        s.sendall(b"\n")
        time.sleep(8)
        check(t.status("i1").get("run_state") == "running",
              "it stays running while the client is connected (not idle)")
    except TimeoutError:
        check(False, f"resume on connect: {t.status('i1')}")
    s.close()
    t.stop_vm("i1")


def mem_total(vm):
    return int(re.search(r"MemTotal:\s+(\d+) kB", vm.check("cat /proc/meminfo")).group(1)) << 10


def test_offline_memory(t):
    print("== 9. offline set-memory: shut down, resize, boot again; the answer in the new boot")
    mib = 1 << 20
    ans = t.start_vm("o1")
    check(ans.get("tier") == "otier", f"o1 runs with 128 MiB reserved in tier otier: {ans}")
    t.grant("o1")
    t.wait_helper("o1")
    vm = t.vms["o1"]
    env = ("VMSTATE_PRINCIPAL=app VMSTATE_SECRET=$(cat /root/vmstate-secret) "
           "VMSTATE_APP_ID=org.test.Offline")
    before, pid0 = mem_total(vm), t.status("o1").get("pid")
    rc, out = vm.run(f"{env} vmstatectl -w -t 60 set-memory --offline 288M", timeout=90)
    check(rc != 0 and "tier otier cannot hold" in out and "capacity 335544320" in out,
          f"288 MiB refused: the tier cannot hold it (numbers named): {out.strip()[-200:]!r}")
    check(t.status("o1").get("pid") == pid0, "... and the VM was not touched")
    # without --wait: it prints the request id (the shutdown may cut the agent's answer short)
    rc, out = vm.run(f"{env} vmstatectl set-memory --offline 192M", timeout=30)
    m = re.search(r"[0-9a-f]{32}", out)
    check(m is not None and rc == 5, f"set-memory --offline 192M accepted and queued (exit 5): "
          f"{out.strip()!r} (rc {rc})")
    if not m:
        return
    rid = m.group(0)
    vm.detach()
    t0 = time.monotonic()
    try:
        wait_until(lambda: t.status("o1").get("pid") not in (None, 0, pid0) and
                   t.status("o1").get("run_state") == "running", 120, "o1 running again")
    except TimeoutError:
        check(False, f"o1 runs again: {t.status('o1')}")
        return
    vm.attach()
    vm.wait_ready(120)
    t.wait_helper("o1")
    took = time.monotonic() - t0
    vm.spawn(f"{env} vmstatectl --json watch", "/tmp/offline-watch.out")
    try:
        out = wait_until(lambda: (lambda o: o if rid in o else None)(
            vm.run("cat /tmp/offline-watch.out")[1]), 60, "the completion in the new boot")
    except TimeoutError:
        out = vm.run("cat /tmp/offline-watch.out")[1]
    ev = next((json.loads(l) for l in out.splitlines() if rid in l and l.startswith("{")), {})
    check(ev.get("status") == 0 and ev.get("mode") == "offline" and ev.get("bytes") == 192 * mib
          and ev.get("mem_bytes") == 192 * mib,
          f"the app got the completion in the new boot (mode offline, 192 MiB; down and up "
          f"again in {took:.0f} s): {ev}")
    results.numbers["offline_set_memory_s"] = took
    base = vm.qmp("query-memory-size-summary").get("base-memory")
    after = mem_total(vm)
    check(base == 192 * mib and abs((after - before) - 64 * mib) <= 8 * mib,
          f"QEMU runs with 192 MiB and the guest sees it: MemTotal {before >> 20} -> "
          f"{after >> 20} MiB")
    st = t.status("o1")
    check(st.get("memory") == 192 * mib and st.get("reserved") == (192 + 64) * mib,
          f"the tier reservation follows the new size: {st.get('reserved', 0) >> 20} MiB")
    rows = [r for r in t.bridge.table("requests", "o1") if rid in r]
    check(len(rows) == 1 and "offline" in rows[0] and "done" in rows[0],
          f"the request is journaled with its mode and done: {rows}")
    vm.detach()
    t.bridge.restart()
    check(t.status("o1").get("memory") == 192 * mib, "a bridge restart keeps the new size")
    ok, _ = t.stop_vm("o1")
    ans = t.start_vm("o1")
    base = vm.qmp("query-memory-size-summary").get("base-memory")
    check(ok and base == 192 * mib, f"... and so does a stop and start ({base})")
    t.stop_vm("o1")


TESTS = {1: test_zero_copy, 4: test_one_shot, 2: test_copy_path, 3: test_reservation,
         5: test_demotion, 6: test_crashes, 7: test_storm, 8: test_idle, 9: test_offline_memory}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--builddir", required=True)
    ap.add_argument("--workdir")
    ap.add_argument("--only", type=int, action="append")
    a = ap.parse_args()
    workdir = a.workdir or tempfile.mkdtemp(prefix="vmslc-", dir="/tmp")
    t0 = time.monotonic()
    t = Lifecycle(a.image, a.builddir, workdir)
    try:
        t.bridge.add_principal("app", SECRET, {})
        t.bridge.start()
        for n, fn in TESTS.items():
            if a.only and n not in a.only:
                continue
            if n == 4 and a.only and 1 not in a.only:
                test_zero_copy(t)
            try:
                fn(t)
            except Exception as e:  # noqa: BLE001 (one test failing must not stop the others)
                check(False, f"test {n} raised {type(e).__name__}: {e}")
    finally:
        rc = t.bridge.stop()
        check(rc == 0, f"the bridge exits 0 on SIGTERM ({rc})")
        t.cleanup()
        results.workdir_done(workdir, made_here=not a.workdir)
    return results.summary(f"in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
