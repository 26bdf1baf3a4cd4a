#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The guest-initiated core, complete (issue 14), on a real VM: acceptance 1, 2, 4, 5, 6.

    python3 tests/system/test-core.py --image DIR --builddir BUILDDIR [--only 1,2] [--keep]

 1 two apps: A saves, B (a listener of another app id) receives StateSaved without A's data,
   `vmstatectl watch` shows it; a uid outside the helper's allow-list cannot listen and so
   receives nothing
 2 restore with follow-ups set-memory and hostinfo: the restored instance gets the restore's
   completion with both results; the guest's MemTotal matches the size reached (192 MiB of a
   128 MiB VM: plugged through virtio-mem inside the restore)
 4 a snapshot deleted behind the bridge's back (QMP delvm) is listed as lost and its restore
   is refused clearly; one created behind its back (savevm) is listed as foreign
 5 a right limited to guest uid 1000 refuses the same principal used by uid 0 and works for
   uid 1000; the uid is journaled and `vmstate-admin requests` shows it
 6 HostInfo and DeleteState end to end through dbus-send, libvmstate and vmstatectl
 3 set-memory above the boot size: virtio-mem plugs the difference, the guest sees it
   (MemTotal), and set-memory back to the boot size unplugs it; the offline mode is refused
   on this attached VM (the lifecycle suite's test 9 runs it on a managed VM)
All tests share one VM (128 MiB at boot, up to 640 MiB).
"""
import argparse
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
from vmstest import VMError, check, field, results  # noqa: E402
from vmstest.wholepath import App, WholePath  # noqa: E402

results.indent = "  "
VM_OPTIONS = {"max_states": 32, "max_pending": 8, "rate_requests": 1000, "auth_fail_max": 50,
              "mem_min": "64M", "mem_max": "384M", "virtio_mem": "vmem0dev"}
# a balloon below the boot size, virtio-mem above it (the guest image loads both drivers)
VM_MEM = "128M,maxmem=640M"
VM_EXTRA = ["-device", "virtio-balloon-pci,id=balloon0",
            "-object", "memory-backend-ram,id=vmem0,size=512M",
            "-device", "virtio-mem-pci,id=vmem0dev,memdev=vmem0,requested-size=0"]
MIB = 1 << 20


def hexs(text):
    return text.encode().hex()


def mem_total(wp):
    _, out = wp.sh("grep MemTotal /proc/meminfo")
    return int(re.search(r"(\d+) kB", out).group(1)) << 10


def log_time(hms):
    """A bridge log line's time (HH:MM:SS.mmm, UTC) as seconds into the day."""
    h, m, sec = hms.split(":")
    return int(h) * 3600 + int(m) * 60 + float(sec)


def qmp_time(ev):
    ts = ev.get("timestamp", {})
    return ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6


def day_diff(day_seconds, unix_time):
    """@day_seconds (UTC, seconds into a day) minus @unix_time, across midnight."""
    d = (day_seconds - unix_time % 86400) % 86400
    return d - 86400 if d > 43200 else d


def state_row(wp, state):
    """vmstate-admin states vm1: (vm, id, label, app_id, request_id, parent, created, status,
    principal) of @state, or None."""
    for r in wp.bridge.table("states"):
        if len(r) > 8 and r[1] == state:
            return r
    return None


def wait_reconciled(wp, state, status, timeout=30):
    """An operation makes the bridge compare its catalogue with QEMU's: wait for @status."""
    deadline = time.monotonic() + timeout
    row = None
    while time.monotonic() < deadline:
        wp.sh(f"{wp.env()}vmstatectl -q --wait list >/dev/null")
        row = state_row(wp, state)
        if row and row[7] == status:
            return row
        time.sleep(0.5)
    return row


def save(app, label, data=""):
    rid = app.request(f"save {label} {data}".strip())
    ev = app.wait_event(rid)
    check(field(ev, "status") == "0", f"save {label} by {app.app_id} ok ({field(ev, 'state')})")
    return field(ev, "state"), rid


# ---------------------------------------------------------------------------------------
def t1_state_saved(wp, ctx):
    """StateSaved to every listener, never with another app's data"""
    a = App(wp, "c1a", "org.test.A")
    b = App(wp, "c1b", "org.test.B")
    wp.vm.spawn("exec vmstatectl -a org.test.Watch watch", "/tmp/c1-watch.out")
    # uid nobody is not in allow_users: it cannot register, so no signal is ever addressed to it
    wp.vm.spawn("exec su -s /bin/sh nobody -c 'vmstatectl -a org.test.B watch'",
                "/tmp/c1-nobody.out")
    time.sleep(1.5)
    state, rid = save(a, "c1-label", "secret-of-A")
    line = wp.wait_for(b.log_path, rf"^STATE .*change=saved state={state} .*$", 30)[0]
    check(field(line, "creator") == "org.test.A" and field(line, "label") == "c1-label",
          f"1: B (app org.test.B) got StateSaved naming the state, label and creator: {line}")
    blog = b.log()
    check(not b.events(rid) and hexs("secret-of-A") not in blog,
          "1: ... and neither A's completion nor A's data")
    line = wp.wait_for(a.log_path, rf"^STATE .*change=saved state={state} .*$", 30)[0]
    check(field(line, "creator") == "org.test.A", "1: A hears it too (every listener)")
    watch = wp.wait_for("/tmp/c1-watch.out", rf"^state-saved {state}: .*$", 30)[0]
    check("app: org.test.A" in watch, f"1: vmstatectl watch shows it: {watch}")
    nobody = wp.read("/tmp/c1-nobody.out")
    check(state not in nobody and re.search(r"not allowed|ermission", nobody) is not None,
          f"1: uid nobody (outside the allow-list) could not listen and heard nothing: "
          f"{nobody.strip()[:160]!r}")
    wp.sh("kill $(pidof vmstatectl) 2>/dev/null; true")
    ctx["c1"] = (a, b, state)


def t2_followups(wp, ctx):
    """restore with follow-ups set-memory and hostinfo"""
    a = App(wp, "c2a", "org.test.Restorer")
    state, _ = save(a, "c2-base")
    before = mem_total(wp)
    # above the boot size (128M): virtio-mem plugs 64M inside the restore (the balloon's
    # way down is test 9 of test-wholepath; with maxmem the guest has too little to give)
    target = 192 * MIB
    epoch0 = wp.epoch()
    log_from, t_start = len(wp.bridge.log()), time.time()
    a.cmd(f"restorewith {state} {target} to-the-past", background=True)
    ev = a.wait_event(op="restore", timeout=120)
    check(field(ev, "status") == "0" and field(ev, "data") == hexs("to-the-past") and
          field(ev, "pid") == str(a.pid) and int(field(ev, "epoch")) == epoch0 + 1,
          f"2: the restored instance got the restore's completion ({ev[:200]})")
    check(field(ev, "results") == "set-memory:0,hostinfo:0",
          f"2: ... with both follow-ups' results: {field(ev, 'results')}")
    reached = int(field(ev, "mem") or 0)
    check(reached == target and int(field(ev, "bytes") or 0) == target,
          f"2: set-memory inside the restore reached {reached >> 20} MiB (target 192)")
    check(int(field(ev, "hostmem") or 0) > 0 and int(field(ev, "cpus") or 0) > 0 and
          (field(ev, "host") or "-") != "-",
          f"2: hostinfo inside the restore: host {field(ev, 'host')}, "
          f"{int(field(ev, 'hostmem') or 0) >> 20} MiB, {field(ev, 'cpus')} CPUs")
    added = target - 128 * MIB
    deadline, after = time.monotonic() + 30, mem_total(wp)
    while abs((after - before) - added) > 4 * MIB and time.monotonic() < deadline:
        time.sleep(0.5)
        after = mem_total(wp)
    check(abs((after - before) - added) <= 4 * MIB,
          f"2: the guest's MemTotal went from {before >> 20} to {after >> 20} MiB: the "
          f"{added >> 20} MiB plugged for the 192 MiB target")
    # the follow-ups ran after the load and before the guest resumed: the bridge held the VM
    # paused (QMP STOP ... RESUME on the test's monitor) and logged them in between
    log = wp.bridge.log()[log_from:]
    steps = [(log_time(m.group(1)), m.group(2)) for m in re.finditer(
        r"^(\d\d:\d\d:\d\d\.\d{3}) .*(follow-up \S+ inside the restore: \w+ \([^)]*\)|"
        r"follow-ups done: resuming the guest)", log, re.M)]
    names = [n for _, n in steps]
    check(names == ["follow-up set-memory inside the restore: ok (guest paused)",
                    "follow-up hostinfo inside the restore: ok (guest paused)",
                    "follow-ups done: resuming the guest",
                    "follow-up set-memory inside the restore: ok (followed after the resume)"],
          f"2: the bridge ran the follow-ups with the guest paused, then resumed it: {names}")
    stops = [qmp_time(e) for e in wp.vm.events if e.get("event") == "STOP" and
             qmp_time(e) >= t_start]
    resumes = [qmp_time(e) for e in wp.vm.events if e.get("event") == "RESUME" and
               qmp_time(e) >= t_start]
    paused_steps = [t for t, n in steps if "(guest paused)" in n]
    check(len(stops) == 1 and len(resumes) == 1 and len(paused_steps) == 2 and
          all(day_diff(t, stops[0]) >= -0.001 and day_diff(t, resumes[0]) <= 0
              for t in paused_steps),
          f"2: ... QEMU's STOP and RESUME ({len(stops)}, {len(resumes)}) enclose them: "
          f"{[round(day_diff(t, resumes[0]) if resumes else 0, 3) for t in paused_steps]} s "
          f"before the resume")
    rows = [r for r in wp.bridge.table("requests") if len(r) > 12 and r[2] == "restore" and
            r[3] == "org.test.Restorer"]
    check(rows and rows[-1][12] == f"set-memory={target} hostinfo=0",
          f"2: the follow-ups are journaled with the request ({rows[-1][12] if rows else None})")
    rc, out = wp.sh(f"{wp.env()}vmstatectl --wait set-memory 128M", timeout=120)
    check(rc == 0, "2: memory back to 128M")


def t3_hotplug(wp, ctx):
    """memory beyond the boot size through virtio-mem"""
    before = mem_total(wp)
    t0 = time.monotonic()
    rc, out = wp.sh(f"{wp.env()}vmstatectl --wait --json set-memory 256M", timeout=180)
    took = time.monotonic() - t0
    m = re.search(r'"mem_bytes":\s*(\d+)', out)
    reached = int(m.group(1)) if m else 0
    check(rc == 0 and reached == 256 * MIB,
          f"3: set-memory 256M (boot 128M) completed with {reached >> 20} MiB in {took:.1f} s "
          f"({out.strip()[-160:]!r})")
    plugged = wp.vm.qmp("qom-get", path="/machine/peripheral/vmem0dev", property="size")
    check(plugged == 128 * MIB, f"3: QEMU's virtio-mem device holds {plugged >> 20} MiB")
    after = mem_total(wp)
    check(abs((after - before) - 128 * MIB) <= 4 * MIB,
          f"3: the guest sees it: MemTotal {before >> 20} -> {after >> 20} MiB")
    rc, out = wp.sh(f"{wp.env()}vmstatectl --wait --json set-memory 400M")
    check(rc == 1 and "mem_max" in out, "3: above mem_max (384M) refused with the bounds")
    rc, out = wp.sh(f"{wp.env()}vmstatectl --wait set-memory --offline 256M")
    check(rc == 1 and "unsupported" in out and "managed = yes" in out,
          f"3: offline set-memory is refused on a VM the bridge does not run: {out.strip()[-160:]!r}")
    rc, out = wp.sh(f"{wp.env()}vmstatectl --wait --json set-memory 128M", timeout=180)
    plugged = wp.vm.qmp("qom-get", path="/machine/peripheral/vmem0dev", property="size")
    back = mem_total(wp)
    check(rc == 0 and plugged <= 8 * MIB and back < after - 100 * MIB,
          f"3: set-memory 128M unplugs it: device {plugged >> 20} MiB, MemTotal {back >> 20} MiB")


def t4_catalogue(wp, ctx):
    """lost and foreign snapshots"""
    a = App(wp, "c4a", "org.test.Cat")
    victim, _ = save(a, "c4-victim")
    out = wp.vm.qmp("human-monitor-command", **{"command-line": f"delvm {victim}"})
    check(not out.strip(), f"4: QMP delvm {victim} behind the bridge's back {out.strip()}")
    row = wait_reconciled(wp, victim, "lost")
    check(row is not None and row[7] == "lost",
          f"4: vmstate-admin states lists {victim} as lost ({row})")
    rid = a.request(f"restore {victim}")
    ev = a.wait_event(rid)
    check(field(ev, "status") == "6" and "lost" in ev,
          f"4: its restore is refused clearly: {ev[ev.find('msg='):][:160]}")
    rc, out = wp.sh(f"{wp.env()}vmstatectl list")
    check(victim in out, "4: the lost state is still listed in the guest")
    out = wp.vm.qmp("human-monitor-command", **{"command-line": "savevm c4-foreign"}, _timeout=120)
    check("Error" not in out, f"4: QMP savevm c4-foreign behind the bridge's back {out.strip()}")
    row = wait_reconciled(wp, "c4-foreign", "foreign")
    check(row is not None and row[7] == "foreign" and row[3] == "",
          f"4: vmstate-admin states lists c4-foreign as foreign, with no creating app ({row})")
    rid = a.request("restore c4-foreign")
    ev = a.wait_event(rid)
    check(field(ev, "status") == "3" and "restore-foreign" in ev,
          f"4: restoring it needs the admin-granted right: {ev[ev.find('msg='):][:160]}")
    rid = a.request(f"delete {victim}")
    ev = a.wait_event(rid)
    check(field(ev, "status") == "0" and state_row(wp, victim) is None,
          "4: a lost state is deleted from the list")


def t5_uid_rights(wp, ctx):
    """a right limited to guest uid 1000"""
    secret = "uid-1000-only-secret"
    wp.bridge.admin("principal-add", "u1000", "--cost", "test", secret=secret + "\n")
    wp.bridge.admin("grant", "u1000", "vm1", "save", "list", "--uid", "1000")
    rights = wp.bridge.admin("rights")
    check(re.search(r"^u1000\tvm1\tsave\t1000$", rights, re.M) is not None,
          "5: vmstate-admin rights shows the uid")
    wp.vm.write_file("/tmp/u1000-secret", secret + "\n", mode=0o644)
    env = "VMSTATE_PRINCIPAL=u1000 VMSTATE_SECRET=$(cat /tmp/u1000-secret) VMSTATE_APP_ID=org.test.U"
    rc, out = wp.sh(f"{env} vmstatectl -q --wait save c5-as-root")
    check(rc == 1 and "denied" in out and "limited" in out,
          f"5: uid 0 with principal u1000 is refused: {out.strip()[:200]!r}")
    rc, out = wp.sh(f"su -s /bin/sh vmtest -c {shlex.quote(env + ' vmstatectl -q --wait save c5-as-1000')}",
                    timeout=120)
    check(rc == 0 and re.search(r"save \w+: ok", out) is not None,
          f"5: uid 1000 with the same principal saves: {out.strip()[:200]!r}")
    rows = [r for r in wp.bridge.table("requests") if len(r) > 11 and r[4] == "u1000"]
    uids = sorted({r[11] for r in rows})
    check(uids == ["0", "1000"], f"5: vmstate-admin requests shows each request's uid: {uids}")


def t6_end_to_end(wp, ctx):
    """HostInfo and DeleteState through dbus-send, libvmstate and vmstatectl"""
    d = App(wp, "c6d", "org.test.Dbus")  # listens for what dbus-send asks for org.test.Dbus
    creds = (f"dict:string:string:principal,{wp.PRINCIPAL},secret,$(cat /root/vmstate-secret)")
    dsend = ("dbus-send --system --print-reply=literal --dest=org.vmstate.Helper1 "
             "/org/vmstate/Helper1 org.vmstate.Helper1.")
    # HostInfo
    rc, out = wp.sh(f"{dsend}HostInfo string:org.test.Dbus {creds}")
    rid = out.strip()
    check(rc == 0 and re.fullmatch(r"[0-9a-f]{32}", rid) is not None,
          f"6: dbus-send HostInfo returned a request id ({out.strip()[:80]})")
    ev = d.wait_event(rid)
    check(field(ev, "op") == "hostinfo" and field(ev, "status") == "0" and
          int(field(ev, "hostmem")) > 0 and int(field(ev, "free")) > 0,
          f"6: ... its completion reached the app's listener with host info ({ev[:160]})")
    rid = d.request("hostinfo")
    ev = d.wait_event(rid)
    check(field(ev, "status") == "0" and int(field(ev, "mem")) > 0 and
          "save" in (field(ev, "ops") or ""),
          f"6: libvmstate hostinfo: mem {field(ev, 'mem')}, allowed ops {field(ev, 'ops')}")
    rc, out = wp.sh(f"{wp.env()}vmstatectl --json hostinfo")
    check(rc == 0 and re.search(r'"host_mem_total":\s*[1-9]', out) is not None and
          '"quotas"' in out and '"mem_max"' in out,
          f"6: vmstatectl hostinfo: {out.strip()[:200]}")
    js = json.loads(out[out.find("{"):]) if "{" in out else {}
    vcpus = len(wp.vm.qmp("query-cpus-fast"))
    ver = wp.vm.qmp("query-version")["qemu"]
    check(js.get("vcpus") == vcpus and js.get("mem_boot") == 128 * MIB and
          js.get("mem_min") == 64 * MIB and js.get("mem_max") == 384 * MIB and
          js.get("mem_bytes", 0) > 0 and
          js.get("hypervisor_version") == f"QEMU {ver['major']}.{ver['minor']}.{ver['micro']}",
          f"6: hostinfo names the VM's vCPUs ({js.get('vcpus')} of {vcpus}), memory boot "
          f"{js.get('mem_boot', 0) >> 20} MiB (current {js.get('mem_bytes', 0) >> 20}, bounds "
          f"{js.get('mem_min', 0) >> 20}..{js.get('mem_max', 0) >> 20}) and the hypervisor "
          f"({js.get('hypervisor_version')!r})")
    # DeleteState: one state each
    s_d, _ = save(d, "c6-dbus")
    s_l, _ = save(d, "c6-lib")
    rc, out = wp.sh(f"{wp.env()}VMSTATE_APP_ID=org.test.Dbus vmstatectl -q --wait save c6-ctl")
    m = re.search(r"state: (st-\w+)", out)
    s_c = m and m.group(1)
    check(rc == 0 and s_c, f"6: a third state saved with vmstatectl ({s_c})")
    rc, out = wp.sh(f"{dsend}DeleteState string:{s_d} string:org.test.Dbus {creds}")
    rid = out.strip()
    ev = d.wait_event(rid)
    check(field(ev, "op") == "delete" and field(ev, "status") == "0",
          f"6: dbus-send DeleteState {s_d} completed ({ev[:120]})")
    rid = d.request(f"delete {s_l}")
    ev = d.wait_event(rid)
    check(field(ev, "status") == "0" and field(ev, "creator") == "org.test.Dbus",
          f"6: libvmstate delete {s_l} completed, naming the state's creator")
    rc, out = wp.sh(f"{wp.env()}VMSTATE_APP_ID=org.test.Dbus vmstatectl --wait delete {s_c}")
    check(rc == 0, f"6: vmstatectl delete {s_c}: {out.strip()[:120]!r}")
    snaps = wp.vm.snapshots()
    check(all(s not in snaps for s in (s_d, s_l, s_c)),
          "6: QEMU no longer holds any of the three snapshots")
    lines = wp.wait_for(d.log_path, r"^STATE .*change=deleted .*$", 30, count=3)
    check(all(any(f"state={s} " in l for l in lines) for s in (s_d, s_l, s_c)),
          "6: the listener got StateDeleted for each")
    # another app's state: refused without delete-any (issue 13, item 12)
    a, b, state = ctx.get("c1", (None, None, None))
    if b:
        rid = b.request(f"delete {state}")
        ev = b.wait_event(rid)
        check(field(ev, "status") == "3" and "delete-any" in ev,
              f"6: app B cannot delete app A's state: {ev[ev.find('msg='):][:140]}")


TESTS = [(1, t1_state_saved), (2, t2_followups), (3, t3_hotplug), (4, t4_catalogue),
         (5, t5_uid_rights), (6, t6_end_to_end)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--builddir", required=True)
    ap.add_argument("--workdir")
    ap.add_argument("--only", help="comma-separated test numbers")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    only = {int(x) for x in a.only.split(",")} if a.only else None
    workdir = a.workdir or tempfile.mkdtemp(prefix="vmscore-test-")
    t_all = time.monotonic()
    durations = {}
    tests = [(n, f) for n, f in TESTS if not only or n in only]
    wp = WholePath(a.image, a.builddir, os.path.join(workdir, "core"), mem=VM_MEM,
                   vm_options=VM_OPTIONS, extra_args=VM_EXTRA)
    ctx = {}
    try:
        t0 = time.monotonic()
        wp.start()
        print(f"VM + bridge + helper connected in {time.monotonic() - t0:.1f} s", flush=True)
        for n, f in tests:
            print(f"test {n}: {f.__doc__}", flush=True)
            t0 = time.monotonic()
            nfail = len(results.failures)
            try:
                f(wp, ctx)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                check(False, f"{n}: exception: {e}")
            durations[n] = (time.monotonic() - t0, len(results.failures) == nfail)
            print(f"test {n}: {'PASS' if durations[n][1] else 'FAIL'} ({durations[n][0]:.1f} s)",
                  flush=True)
    except KeyboardInterrupt:
        check(False, "interrupted")
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        check(False, f"setup: {e}")
    finally:
        rc = wp.stop()
        check(rc == 0, f"bridge exits 0 on SIGTERM (status {rc})")
        if results.failures:
            print(f"--- bridge log (tail) ---\n{wp.bridge.log()[-3000:]}")
    results.summary(f"(core, {time.monotonic() - t_all:.0f} s): " +
                    ", ".join(f"test {n} {'PASS' if ok else 'FAIL'} {d:.1f}s"
                              for n, (d, ok) in sorted(durations.items())))
    for f in results.failures:
        print(f"FAILED: {f}")
    if not a.keep and not results.failures:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print("workdir:", workdir)
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main())
