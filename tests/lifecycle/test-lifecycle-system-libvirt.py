#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Managed VMs on the libvirt backend: the bridge runs a persistent libvirt domain.

Against a real private libvirtd (tests/libvirt/run-suite.sh, $LV_URI) and a TCG guest, one
domain "lv1" defined by the test (the same guest as the libvirt system suite, ports added
by `vmstate-admin libvirt-setup --apply`) and `managed = yes, backend = libvirt`:
  1 start: the bridge boots the defined domain (virDomainCreate); a guest app's save works
  2 suspend to the slow tier (virDomainSaveFlags): the domain is shut off, its QEMU process
    gone, the checkpoint file in the tier; a save whose event the guest had not taken yet
    (its helper stopped) is owed across the suspend
  3 resume (virDomainRestoreFlags, paused until the ports are back, then resumed): the guest
    continues (uptime and a counter go on), its app hears "resumed", the owed event reaches
    the app exactly once, the checkpoint is consumed (a second resume is refused)
  4 bridge restart while the domain runs: re-adopted, the same QEMU, a save still works;
    the bridge SIGKILLed in a suspend before libvirt's save (the domain runs on, the
    checkpoint is discarded) and after it (the domain is suspended; it resumes)
  5 stop: ACPI shutdown (destroy after stop_timeout), the domain is shut off, not undefined
"""
import argparse
import json
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
from vmstest import Bridge, VMError, check, results, wait_until  # noqa: E402
from vmstest.libvirt import ManagedLibvirtVM, virsh  # noqa: E402

SECRET = "lifecycle-lv-s3cret"
ENV = "VMSTATE_PRINCIPAL=app VMSTATE_SECRET=$(cat /root/vmstate-secret)"


class Suite:
    def __init__(self, image, builddir, workdir):
        self.workdir = workdir
        self.slow = os.path.join(workdir, "slow")
        os.makedirs(self.slow, exist_ok=True)
        self.vm = ManagedLibvirtVM(os.path.join(workdir, "lv1"), image, builddir, mem="256M")
        self.admin_sock = os.path.join(workdir, "admin.sock")
        self.bridge = Bridge(
            builddir, workdir, {"lv1": self.vm},
            per_vm={"lv1": {"managed": "yes", "memory": "256M", "slow_tier": "slow",
                            "stop_timeout": 5, "job_timeout": 120,
                            # no Prepare: the stopped helper could not answer it
                            "prepare_timeout_ms": 0}},
            bridge_options={"admin_socket": self.admin_sock, "state_margin": "64M"},
            sections={"tier slow": {"path": self.slow, "capacity": "8G", "class": "slow"}})

    def lc(self, cmd, vm="lv1", timeout=180):
        return self.bridge.ctl(cmd, vm, sock=self.admin_sock, timeout=timeout)

    def status(self):
        ok, ans = self.bridge.ctl("status", "lv1", sock=self.admin_sock)
        return ans["vms"][0] if ok and ans.get("vms") else {}

    def wait_helper(self, timeout=60):
        def connected():
            rc, out = self.vm.run("dbus-send --system --print-reply --dest=org.vmstate.Helper1 "
                                  "/org/vmstate/Helper1 org.freedesktop.DBus.Properties.Get "
                                  "string:org.vmstate.Helper1 string:BridgeConnected")
            return rc == 0 and "boolean true" in out
        wait_until(connected, timeout, "the guest helper connected to the bridge")

    def save_works(self, label, what):
        """A guest app's save (vmstatectl -w save LABEL) completes: checked as @what."""
        self.wait_helper()
        rc, out = self.vm.run(f"{ENV} VMSTATE_APP_ID=org.test.Lv vmstatectl -w -t 90 "
                              f"save {label}", timeout=120)
        check(rc == 0, f"{what}: {out.strip()[-200:]}")

    def uptime(self):
        return float(self.vm.check("cut -d' ' -f1 /proc/uptime"))


def test_start_and_save(s):
    print("== 1. start: the bridge boots the defined domain; a guest app's save works")
    check(s.vm.state() == "shut off", "the domain is defined and shut off before the start")
    ok, ans = s.lc("start")
    check(ok and ans.get("tier") == "slow" and ans.get("zero_copy") is False,
          f"vmstate-admin start: {ans}")
    results.numbers["lv_start_ms"] = ans.get("total_ms", -1)
    check(s.vm.state() == "running", "libvirt runs the domain")
    s.vm.attach(120)
    s.bridge.admin("grant", "app", "lv1", "all")
    s.vm.write_file("/root/vmstate-secret", SECRET + "\n", mode=0o600)
    s.save_works("before-suspend", "a guest app's save completes (a libvirt snapshot)")
    st = s.status()
    check(st.get("run_state") == "running" and st.get("reserved") == (256 + 64) << 20,
          f"running, {256 + 64} MiB reserved in tier slow: {st.get('reserved')}")


def test_suspend_resume(s):
    print("== 2/3. suspend to the tier with an event owed; resume: the guest goes on")
    vm = s.vm
    vm.spawn("i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done")
    vm.spawn("VMSTATE_APP_ID=org.test.Owed vmstatectl --json watch", "/tmp/owed.log")
    vm.spawn("VMSTATE_APP_ID=org.test.Watcher vmstatectl watch", "/tmp/watch.log")
    time.sleep(1)
    # a save whose completion the guest has not taken when the VM is suspended: the helper
    # is stopped right after it sent the request, so the event waits, unacknowledged
    rc, out = vm.run(f"{ENV} VMSTATE_APP_ID=org.test.Owed vmstatectl save owed; "
                     "kill -STOP $(pidof vmstate-helperd)", timeout=60)
    m = re.search(r"[0-9a-f]{32}", out)
    check(m is not None, f"the owed save was accepted: {out.strip()!r}")
    rid = m.group(0) if m else "-"
    try:
        wait_until(lambda: any(rid in r and "done" in r for r in s.bridge.table("requests", "lv1")),
                   90, "the owed save done on the host")
        check(True, "the save is done on the host, its event not taken by the stopped helper")
    except TimeoutError:
        check(False, f"the owed save done: {s.bridge.table('requests', 'lv1')}")
    up0, c0 = s.uptime(), int(vm.check("cat /tmp/counter"))
    pid0 = vm.qemu_pid()
    vm.detach()
    ok, ans = s.lc("suspend")
    check(ok and ans.get("tier") == "slow", f"suspend: {ans}")
    results.numbers["lv_suspend_ms"] = ans.get("total_ms", -1)
    st = s.status()
    ck = st.get("checkpoint", {})
    check(st.get("run_state") == "suspended" and vm.state() == "shut off",
          f"suspended: the domain is shut off ({vm.state()})")
    check(pid0 and not os.path.exists(f"/proc/{pid0}"), f"its QEMU (pid {pid0}) is gone")
    path = ck.get("state_file", "")
    check(path.startswith(s.slow + "/") and os.path.getsize(path) > 16 << 20,
          f"the checkpoint is a file in tier slow ({os.path.getsize(path) >> 20 if os.path.exists(path) else -1} MiB)")
    ok, ans = s.lc("suspend")
    check(not ok, f"a second suspend is refused: {ans.get('error')}")
    time.sleep(1)
    ok, ans = s.lc("resume")
    check(ok, f"resume: {ans}")
    results.numbers["lv_resume_ms"] = ans.get("total_ms", -1)
    check(vm.state() == "running" and vm.qemu_pid() not in (None, pid0),
          f"a new QEMU runs the domain (pid {pid0} -> {vm.qemu_pid()})")
    vm.attach(60)
    vm.run("kill -CONT $(pidof vmstate-helperd)")
    up1, c1 = s.uptime(), int(vm.check("cat /tmp/counter"))
    time.sleep(0.6)
    c2 = int(vm.check("cat /tmp/counter"))
    check(up1 >= up0 and up1 - up0 < 60 and c2 > c1 >= c0,
          f"the guest continued: uptime {up0:.1f} -> {up1:.1f} s, counter {c0} -> {c1} -> {c2}")
    try:
        wait_until(lambda: "resumed" in vm.run("cat /tmp/watch.log")[1], 20, "the notice")
        check(True, "a guest app heard 'resumed'")
    except TimeoutError:
        check(False, "a guest app heard 'resumed': " + vm.run("cat /tmp/watch.log")[1][-300:])
    try:
        wait_until(lambda: rid in vm.run("cat /tmp/owed.log")[1], 30, "the owed event")
    except TimeoutError:
        pass
    time.sleep(3)  # a duplicate would come now (the bridge's resend, the guest's buffer)
    lines = [ln for ln in vm.run("cat /tmp/owed.log")[1].splitlines()
             if ln.startswith("{") and rid in ln]
    evs = [json.loads(ln) for ln in lines]
    done = [e for e in evs if e.get("event") == "completed" and e.get("request_id") == rid]
    check(len(done) == 1, f"the event owed across the suspend reached the app exactly once "
          f"({len(lines)} line(s)): {lines[:3]}")
    check(not os.path.exists(path), "the consumed checkpoint file is removed")
    ok, ans = s.lc("resume")
    check(not ok and "one-shot" in ans.get("error", ""), f"a second resume is refused: {ans.get('error')}")
    s.save_works("after-resume", "a save after the resume works")


def test_restart_adopts(s):
    print("== 4. bridge restart while the domain runs: re-adopted, never stopped")
    vm = s.vm
    pid0, up0 = vm.qemu_pid(), s.uptime()
    s.bridge.restart()
    try:
        wait_until(lambda: s.status().get("run_state") == "running" and
                   s.status().get("op") == "none", 30, "re-adoption")
    except TimeoutError:
        pass
    st = s.status()
    check(st.get("run_state") == "running" and vm.qemu_pid() == pid0 and vm.state() == "running",
          f"re-adopted: running, the same QEMU (pid {pid0}): {st.get('run_state')}")
    check(re.search(r"journal says running, libvirt's domain \S+ is running", s.bridge.log()),
          "the bridge judged from the journal and libvirt's state")
    check(s.uptime() > up0, "the guest did not reboot")
    s.save_works("after-restart", "a save after the restart works")


def test_crash_in_suspend(s):
    print("== 4b. bridge SIGKILLed inside a suspend: before and after libvirt's save")
    vm = s.vm
    for point, want in (("suspend-journaled", "running"), ("suspend-written", "suspended")):
        up0 = s.uptime()
        os.environ["VMSTATE_BRIDGE_CRASH_AT"] = point
        s.bridge.restart()
        del os.environ["VMSTATE_BRIDGE_CRASH_AT"]
        wait_until(lambda: s.status().get("run_state") == "running", 30, "re-adoption")
        vm.detach()
        ok, _ = s.lc("suspend", timeout=60)
        wait_until(lambda: not s.bridge.alive(), 30, "the bridge's crash")
        check(not ok, f"the bridge died at {point}")
        s.bridge.stop()
        s.bridge.start()
        try:
            wait_until(lambda: s.status().get("run_state") == want and
                       s.status().get("op") == "none", 60, f"lv1 {want}")
        except TimeoutError:
            pass
        st = s.status()
        ck = st.get("checkpoint", {})
        check(st.get("run_state") == want and vm.state() == ("running" if want == "running"
                                                              else "shut off"),
              f"after a crash at {point}: {st.get('run_state')}, the domain {vm.state()}")
        if want == "running":
            check(ck.get("phase") in (None, "discarded") and
                  not [f for f in os.listdir(s.slow) if f.endswith(".state")],
                  f"the unwritten checkpoint is discarded, no file left: {ck}")
        else:
            check(ck.get("phase") == "valid" and os.path.exists(ck.get("state_file", "/-")),
                  f"libvirt's completed save is the valid checkpoint: {ck}")
            ok, ans = s.lc("resume")
            check(ok, f"it resumes: {ans}")
        vm.attach(60)
        check(s.uptime() > up0, "the guest did not reboot")
        s.save_works(f"after-{point}", f"a save works after the crash at {point}")


def test_stop(s):
    print("== 5. stop: ACPI shutdown, then destroy after stop_timeout")
    vm = s.vm
    pid0 = vm.qemu_pid()
    vm.detach()
    t0 = time.monotonic()
    ok, ans = s.lc("stop", timeout=90)
    took = time.monotonic() - t0
    check(ok, f"stop: {ans}")
    results.numbers["lv_stop_ms"] = ans.get("total_ms", -1)
    destroyed = "no shutdown after" in s.bridge.log()
    print(f"   stopped in {took:.1f} s ({'destroyed after stop_timeout' if destroyed else 'ACPI shutdown'})")
    st = s.status()
    check(st.get("run_state") == "stopped" and vm.state() == "shut off" and
          pid0 and not os.path.exists(f"/proc/{pid0}"),
          f"stopped: the domain is shut off, its QEMU gone ({st.get('run_state')})")
    check(vm.domain in virsh("list", "--all", "--name").split(), "the domain stays defined")
    check(st.get("reserved") == 0, "the tier reservation is released")


TESTS = {1: test_start_and_save, 2: test_suspend_resume, 4: test_restart_adopts,
         "4b": test_crash_in_suspend, 5: test_stop}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--builddir", required=True)
    ap.add_argument("--workdir")
    a = ap.parse_args()
    if not os.environ.get("LV_URI"):
        print("LV_URI not set: run under tests/libvirt/run-suite.sh")
        return 77
    workdir = a.workdir or tempfile.mkdtemp(prefix="vmslv-", dir="/tmp")
    t0 = time.monotonic()
    s = Suite(a.image, a.builddir, workdir)
    try:
        s.vm.define()
        s.bridge.add_principal("app", SECRET, {})
        s.bridge.start()
        for n, fn in TESTS.items():
            try:
                fn(s)
            except (Exception, VMError) as e:  # noqa: BLE001 (report, go on to the teardown)
                check(False, f"test {n} raised {type(e).__name__}: {e}")
                break
    finally:
        rc = s.bridge.stop()
        check(rc == 0, f"the bridge exits 0 on SIGTERM ({rc})")
        s.vm.undefine()
        results.workdir_done(workdir, made_here=not a.workdir)
    return results.summary(f"in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
