#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Whole-path system tests on a real VM (issue 5): guest apps -> libvmstate / vmstatectl /
dbus-send -> D-Bus -> vmstate-helperd -> port A -> vmstate-bridged -> QEMU -> port B -> apps.

    python3 tests/system/test-wholepath.py --image DIR --builddir BUILDDIR [--only 1,2] [--keep]

 1 save: completion with the app data; list shows the state, its label and creating app
 2 restore with app data: the restored instance receives it; another app registered in both
   timelines gets Restored and no completion; the creating save resolves in the new timeline
 3 two apps race a save and a restore: both complete, one at a time, nothing lost
 4 wrong secret, missing right, over quota (and a refused uid): errors through D-Bus
   (Completed status/message, D-Bus error) and through vmstatectl (exit code and message)
 5 the bridge SIGKILLed in the middle of a save and restarted: delivered exactly once
 6 the helper killed and restarted in the guest: the app's listener re-registers, the event
   produced while no helper ran is delivered once
 7 the virtio-serial ports unplugged and re-plugged (QMP device_del/device_add): the helper
   finds the new ports and requests work again; again with no hot-plug event reaching the
   helper (its own fallback checks)
 8 a shell script (examples/vmstate-script.sh) saves, lists and restores with dbus-send only
 9 set-memory through the virtio balloon: the completion reports the size the guest reached,
   the guest's MemTotal follows; a size outside mem_min..mem_max is refused
Tests 1-6, 8 and 9 share one VM (each starts its own apps); 7 boots its own.
"""
import argparse
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
from vmstest import BACKEND, VMError, check, field, results  # noqa: E402
from vmstest.proxy import QmpHoldProxy  # noqa: E402
from vmstest.wholepath import App, WholePath  # noqa: E402

results.indent = "  "  # under each test's heading
VM_OPTIONS = {"max_states": 16, "max_pending": 8, "max_app_data_bytes": "48K",
              "rate_requests": 1000, "auth_fail_max": 50, "mem_min": "64M", "mem_max": "128M"}
# a balloon for set-memory (test 9); the guest image loads virtio_balloon
VM_EXTRA = ["-device", "virtio-balloon-pci,id=balloon0"]


def hexs(text):
    return text.encode().hex()


def bridge_events(wp, rid):
    """Rows (epoch, seq, op, status, reason, acked, superseded) of the bridge's journal."""
    return [r for r in wp.bridge.table("events") if len(r) > 8 and r[3] == rid]


def request_row(wp, rid):
    rows = [r for r in wp.bridge.table("requests") if len(r) > 5 and r[1] == rid]
    return rows[0] if rows else None


# ---------------------------------------------------------------------------------------
def t1_save_list(wp, ctx):
    a = App(wp, "t1", "org.test.Notes")
    rid = a.request("save t1-label hello-t1")
    ev = a.wait_event(rid)
    state = field(ev, "state")
    check(field(ev, "status") == "0" and state.startswith("st-"), f"1: save completed ok ({ev})")
    check(field(ev, "data") == hexs("hello-t1"), "1: the completion carries the app data")
    check(field(ev, "label") == "t1-label" and field(ev, "app") == "org.test.Notes",
          "1: the completion names the label and the app")
    check(state in wp.vm.snapshots(), f"1: QEMU holds snapshot {state}")
    lid = a.request("list")
    ev = a.wait_event(lid)
    check(field(ev, "status") == "0" and f"{state}|t1-label|org.test.Notes" in field(ev, "states"),
          f"1: list (libvmstate) shows {state} with label t1-label, created by org.test.Notes")
    rc, out = wp.sh(f"{wp.env()}vmstatectl list")
    check(rc == 0 and re.search(rf"{state}\s+\S+\s+t1-label\s+org\.test\.Notes", out) is not None,
          f"1: vmstatectl list shows it too (exit {rc})")
    a.cmd("quit")
    ctx["t1_state"] = state


def t2_restore(wp, ctx):
    a = App(wp, "t2a", "org.test.Notes")       # requests save + restore
    c = App(wp, "t2c", "org.test.Other")       # another app, alive in both timelines
    rid_s = a.request("save t2-state saved-by-t2")
    ev = a.wait_event(rid_s)
    state = field(ev, "state")
    check(field(ev, "status") == "0", f"2: save of the state to restore ok ({state})")
    late = App(wp, "t2late", "org.test.Notes")  # registered only after the state was taken
    wp.sh("echo after-the-save > /tmp/t2-value")
    epoch0 = wp.epoch()
    a.cmd(f"restore {state} message-to-the-past", background=True)
    # the guest is rewound: a's log is back to its content at save time, then grows
    ev_r = a.wait_event(op="restore", timeout=90)
    check(field(ev_r, "status") == "0" and field(ev_r, "data") == hexs("message-to-the-past"),
          f"2: the restored instance got the restore's completion with the app data ({ev_r})")
    check(field(ev_r, "pid") == str(a.pid) and int(field(ev_r, "epoch")) == epoch0 + 1,
          f"2: ... in the instance that ran before the save (pid {a.pid}), epoch {epoch0 + 1}")
    ev_c = a.wait_event(rid_s, timeout=30, count=1)
    check(field(ev_c, "reason") == "restored-copy" and field(ev_c, "status") == "0" and
          field(ev_c, "state") == state and field(ev_c, "data") == hexs("saved-by-t2"),
          f"2: the save that created the state resolved in the restored timeline ({ev_c})")
    check(len(a.events(rid_s)) == 1, "2: that save's completion delivered once in this timeline")
    time.sleep(1)
    clog = c.log()
    check(re.search(rf"^RESTORED pid={c.pid} state={state} epoch={epoch0 + 1}", clog, re.M)
          is not None, "2: the other app (registered in both timelines) got Restored")
    check(not c.events(op="restore") and not c.events(rid_s),
          "2: ... and no completion of the Notes app's requests")
    rc, _ = wp.sh("test -e /tmp/t2-value")
    check(rc != 0, "2: the file written after the save is gone")
    rc, _ = wp.sh(f"test -e {late.log_path} || kill -0 {late.pid}")
    check(rc != 0, "2: the app registered only after the save does not exist in the restored "
                   "timeline (no process, no log)")
    hlog = wp.read("/var/log/vmstate-helperd.log")
    check(not re.search(r"holding restore completion", hlog),
          "2: the restore's completion went to the live listener, not held for a late one")
    ctx["t2_state"] = state
    ctx["t2_apps"] = (a, c)


def t3_race(wp, ctx):
    state = ctx.get("t2_state") or ctx.get("t1_state")
    a = App(wp, "t3a", "org.test.Racer1")
    b = App(wp, "t3b", "org.test.Racer2")
    # the state to restore must contain both apps: take it now; b, which restores it, owns it
    # (another app's state needs the right restore-any, issue 13)
    rid0 = b.request("save t3-base")
    state = field(b.wait_event(rid0), "state")
    nlog = len(wp.bridge.log())
    # Both apps send at once. A restore takes effect within milliseconds, so a request the
    # guest had not yet written out when the VM was rewound never existed; to race the two
    # *in the bridge*, the bridge is paused (SIGSTOP) until both apps have sent, then it
    # finds both requests on the port together.
    na, nb = len(re.findall("^SENT", a.log(), re.M)), len(re.findall("^SENT", b.log(), re.M))
    wp.bridge.proc.send_signal(signal.SIGSTOP)
    try:
        wp.sh(f"printf 'save t3-race race-save\\n' > {a.fifo} & "
              f"printf 'restore {state} race-restore\\n' > {b.fifo}; wait")
        wp.wait_for(a.log_path, r"^SENT .*$", 20, na + 1)
        wp.wait_for(b.log_path, r"^SENT .*$", 20, nb + 1)
    finally:
        wp.bridge.proc.send_signal(signal.SIGCONT)
    t0 = time.monotonic()
    deadline = t0 + 120
    ids = {}
    while time.monotonic() < deadline:
        blog = wp.bridge.log()[nlog:]
        for m in re.finditer(r"req=(\w+): accepted (save|restore) from app (org\.test\.Racer\d)",
                             blog):
            ids[m.group(2)] = m.group(1)
        if len(ids) == 2 and all((request_row(wp, r) or [""] * 7)[5] == "done"
                                 for r in ids.values()):
            break
        time.sleep(0.3)
    took = time.monotonic() - t0
    check(len(ids) == 2, f"3: both requests accepted by the bridge ({ids})")
    if len(ids) != 2:
        return
    rows = {op: request_row(wp, r) for op, r in ids.items()}
    check(all(r and r[5] == "done" and r[6] == "0" for r in rows.values()),
          f"3: both completed ok within {took:.1f} s (no deadlock)")
    blog = wp.bridge.log()[nlog:]
    # one at a time, in arrival order: the order of "accepted" equals that of "running", and
    # the second runs only after the first completed
    acc = [m.group(1) for m in re.finditer(r"req=(\w+): accepted", blog)]
    run = [m.group(1) for m in re.finditer(r"req=(\w+): running", blog)]
    check(acc == run == [r for r in acc if r in ids.values()] and len(run) == 2,
          f"3: run in arrival order ({[k for r in run for k, v in ids.items() if v == r]})")
    first, second = run
    end_first = max(blog.find(f"req={first}: completed"), blog.find(f"req={first}: restored state"))
    check(0 <= end_first < blog.find(f"req={second}: running"),
          "3: the second started only after the first completed")
    # nothing lost: the restore's completion reached b's restored instance, and every event
    # of the current timeline was acked by the helper
    ev = b.wait_event(ids["restore"], timeout=60)
    check(field(ev, "status") == "0" and field(ev, "data") == hexs("race-restore"),
          f"3: the restoring app's restored instance got its completion ({ev})")
    time.sleep(1.5)
    epoch = wp.epoch()
    for op, r in ids.items():
        evs = bridge_events(wp, r)
        cur = [e for e in evs if int(e[1]) == epoch]
        if op == "save" and run[0] == ids["save"]:
            # the save came first: its timeline was then replaced; its event was delivered
            # (acked) there or superseded with that timeline, never lost silently
            check(evs and all(e[7] == "1" or e[8] == "1" for e in evs),
                  f"3: save (first) event acked in its timeline or superseded by the restore "
                  f"({evs})")
        else:
            check(cur and all(e[7] == "1" for e in cur),
                  f"3: {op} event of the current epoch {epoch} acked by the helper ({cur})")
            if op == "save":
                check(a.events(r) and field(a.events(r)[0], "status") == "0",
                      "3: the save (run after the restore) reached the saving app's listener")
    lid = a.request("list")
    check(field(a.wait_event(lid), "status") == "0", "3: the path still works afterwards")


def t4_errors(wp, ctx):
    wp.bridge.admin("principal-add", "reader", "--cost", "test", secret="reader-secret\n")
    wp.bridge.admin("grant", "reader", "vm1", "list")
    wp.vm.write_file("/root/reader-secret", "reader-secret\n", mode=0o600)
    wp.vm.write_file("/root/wrong-secret", "not-the-secret\n", mode=0o600)
    wp.sh("head -c 60000 /dev/zero | tr '\\0' q > /tmp/big-data")
    # through D-Bus (libvmstate: the Completed signal)
    bad = App(wp, "t4bad", "org.test.Bad", secret_file="/root/wrong-secret")
    rid = bad.request("save t4-bad")
    ev = bad.wait_event(rid)
    check(field(ev, "status") == "2" and "msg=-" not in ev,
          f"4: D-Bus: wrong secret -> Completed status 2 (auth) with a message ({ev})")
    rd = App(wp, "t4reader", "org.test.Reader", principal="reader",
             secret_file="/root/reader-secret")
    rid = rd.request("save t4-denied")
    ev = rd.wait_event(rid)
    check(field(ev, "status") == "3", f"4: D-Bus: principal without the save right -> status 3 "
                                      f"(denied) ({ev})")
    rid = rd.request("list")
    check(field(rd.wait_event(rid), "status") == "0", "4: ... while its list right works")
    q = App(wp, "t4quota", "org.test.Quota")
    rid = q.request("save t4-quota @60000")
    ev = q.wait_event(rid)
    check(field(ev, "status") == "4" and "max_app_data_bytes" in ev,
          f"4: D-Bus: 60000 bytes of app data over the 48K quota -> status 4 (quota) ({ev[-160:]})")
    # through vmstatectl: exit code 1 and the status name + message
    rc, out = wp.sh(f"{wp.env(secret_file='/root/wrong-secret')}vmstatectl -q --wait save x")
    check(rc == 1 and re.search(r"auth", out, re.I) is not None,
          f"4: vmstatectl: wrong secret -> exit 1: {out.strip()[:150]!r}")
    rc, out = wp.sh(f"{wp.env('reader', '/root/reader-secret')}vmstatectl -q --wait save x")
    check(rc == 1 and re.search(r"denied", out, re.I) is not None,
          f"4: vmstatectl: missing right -> exit 1: {out.strip()[:150]!r}")
    rc, out = wp.sh(f"{wp.env()}vmstatectl -q --wait --data-file /tmp/big-data save x")
    check(rc == 1 and re.search(r"quota", out, re.I) is not None,
          f"4: vmstatectl: over quota -> exit 1: {out.strip()[:150]!r}")
    # the helper's own uid check: a D-Bus error at once, exit 3
    rc, out = wp.sh("su -s /bin/sh nobody -c "
                    "'VMSTATE_PRINCIPAL=app VMSTATE_SECRET=x vmstatectl save x'")
    check(rc == 3 and re.search(r"permi|not allowed", out, re.I) is not None,
          f"4: vmstatectl as uid nobody -> exit 3, D-Bus error from the helper: {out.strip()!r}")
    rc, out = wp.sh(f"{wp.env()}vmstatectl --wait restore st-does-not-exist")
    check(rc == 1 and re.search(r"not.found", out, re.I) is not None,
          f"4: vmstatectl: unknown state -> exit 1: {out.strip()[:150]!r}")
    rows = [r for r in wp.bridge.table("requests") if r[3] in ("org.test.Bad", "org.test.Quota")]
    check(not any(r[5] == "done" and r[6] == "0" for r in rows), "4: nothing refused was run")


def t5_bridge_kill(wp, ctx):
    a = App(wp, "t5", "org.test.Crash")
    # Kill the bridge after QEMU got the save's snapshot-save and before the bridge can
    # have seen the job end. A QMP proxy between the bridge and QEMU forwards snapshot-save
    # and from then on keeps everything QEMU says from the bridge, so this is not a race
    # against the job's few hundred milliseconds (freezing the bridge with SIGSTOP when it
    # logged the command came too late on a loaded 2-core CI machine). QEMU's monitor is
    # busy while it writes the state, so the job has usually concluded when we can ask.
    # On libvirt the proxy sits on libvirtd's socket and holds after the snapshot-create
    # call (its XML carries the job id): libvirtd finishes the snapshot for a dead client,
    # and the restarted bridge judges it from the snapshot list.
    if BACKEND == "libvirt":
        sock = wp.vm.uri.split("socket=", 1)[1]
        hold_on = rb"<description>vms-(\w+)</description>"
    else:
        sock, hold_on = wp.vm.qmp_sock, rb'"snapshot-save".*?"job-id":\s*"vms-(\w+)"'
    wp.bridge.stop()
    with QmpHoldProxy(sock, hold_on) as proxy:
        wp.bridge.start()
        wp.wait_connected()
        a.cmd("save t5-crash crash-data", background=True)  # the guest pauses for it
        held = proxy.held.wait(60)
        if not check(held, "5: the bridge started the save's snapshot job (through the proxy)"):
            return
        rid = proxy.match.group(1).decode()
        job, deadline = [], time.monotonic() + 30
        while BACKEND != "libvirt" and not job and time.monotonic() < deadline:
            job = [j for j in wp.vm.qmp("query-jobs") if j["id"] == f"vms-{rid}"]
        wp.bridge.kill9()
    seen_end = re.search(rf"vms-{rid} (-> concluded|\(save \S+\) concluded)|req={rid}: completed",
                         wp.bridge.log())
    check((job or BACKEND == "libvirt") and not seen_end,
          f"5: bridge SIGKILLed while the hypervisor's job was "
          f"{job[0]['status'] if job else 'running'} and before it saw it end")
    time.sleep(0.5)
    wp.bridge.start()
    ev = a.wait_event(rid, timeout=120)
    check(field(ev, "status") == "0" and field(ev, "data") == hexs("crash-data") and
          field(ev, "state") in wp.vm.snapshots(),
          f"5: after the restart the save completed, with its data and snapshot ({ev})")
    time.sleep(4)  # time for any duplicate to arrive
    evs = a.events(rid)
    check(len(evs) == 1, f"5: delivered exactly once to the app ({len(evs)} completion(s))")
    row = request_row(wp, rid)
    check(row and row[5] == "done", "5: journaled once, done")
    n = wp.vm.snapshots().count(field(ev, "state"))
    check(n == 1, f"5: one snapshot for it in QEMU ({n})")


def t6_helper_restart(wp, ctx):
    a = App(wp, "t6", "org.test.Survivor")
    old = wp.helper_pid()
    # Stop the bridge (SIGSTOP) so that the save's completion is produced only after the
    # helper that sent the request is dead: the old helper can never have seen or acked it.
    wp.bridge.proc.send_signal(signal.SIGSTOP)
    try:
        rid = a.request("save t6-save helper-restart")
        wp.restart_helper("KILL")
        new = wp.helper_pid()
        check(new and new != old, f"6: helper killed (pid {old}) and restarted (pid {new})")
    finally:
        wp.bridge.proc.send_signal(signal.SIGCONT)
    ev = a.wait_event(rid, timeout=90)
    check(field(ev, "status") == "0" and field(ev, "data") == hexs("helper-restart"),
          f"6: the completion reached the same app through the new helper ({ev})")
    check(field(ev, "pid") == str(a.pid), "6: ... its listener re-registered by itself")
    time.sleep(2)
    check(len(a.events(rid)) == 1, "6: delivered once")
    evs = bridge_events(wp, rid)
    check(evs and all(e[7] == "1" for e in evs), f"6: the bridge saw it acked ({evs})")
    hlog = wp.read("/var/log/vmstate-helperd.log")
    check(re.search(rf"listener \S+ registered for app org.test.Survivor", hlog.split(
        "on the bus as")[-1]) is not None, "6: the new helper logged the re-registration")


def mem_total(wp):
    _, out = wp.sh("grep MemTotal /proc/meminfo")
    return int(re.search(r"(\d+) kB", out).group(1)) << 10


def t9_set_memory(wp, ctx):
    before = mem_total(wp)
    rc, out = wp.sh(f"{wp.env()}vmstatectl --wait --json set-memory 96M", timeout=120)
    m = re.search(r'"mem_bytes":\s*(\d+)', out)
    reached = int(m.group(1)) if m else 0
    actual = wp.vm.qmp("query-balloon")["actual"]
    check(rc == 0 and abs(reached - (96 << 20)) < (1 << 20) and reached == actual,
          f"9: set-memory 96M completed with the size reached: {reached} bytes, QEMU's balloon "
          f"says {actual} ({out.strip()[-200:]!r})")
    after = mem_total(wp)
    check(before - after > (28 << 20),
          f"9: the guest's MemTotal went from {before >> 20} to {after >> 20} MiB")
    rc, out = wp.sh(f"{wp.env()}vmstatectl --wait set-memory 32M")
    check(rc == 1 and "mem_min" in out,
          f"9: 32M is below mem_min: refused with the bounds: {out.strip()[-160:]!r}")
    rc, out = wp.sh(f"{wp.env()}vmstatectl --wait set-memory 128M", timeout=120)
    check(rc == 0 and re.search(r"memory: 134217728 bytes", out) is not None and
          mem_total(wp) >= before - (1 << 20),
          f"9: back to 128M, the guest has its memory again: {out.strip()[-120:]!r}")


def t8_script(wp, ctx):
    env = wp.env() + "VMSTATE_APP_ID=org.test.Script "
    rc, out = wp.sh(f"{env}vmstate-script.sh save t8-script")
    check(rc == 0 and re.search(r"save requested: [0-9a-f]{32}$", out.strip()) is not None,
          f"8: dbus-send Save returned a request id at once ({out.strip()})")
    state, deadline = None, time.monotonic() + 60
    while not state and time.monotonic() < deadline:
        rc, out = wp.sh(f"{env}VMSTATE_LIST_WAIT=1 vmstate-script.sh list")
        m = re.search(r"(st-\w+)\s+t8-script\s+org\.test\.Script", out)
        state = m and m.group(1)
    check(state is not None, f"8: dbus-send ListStates + States shows the saved state ({state})")
    if not state:
        return
    _, st = wp.sh(f"{env}vmstate-script.sh status")
    epoch0 = int(re.search(r"uint64 (\d+)", st).group(1))
    wp.sh("echo after > /tmp/t8-value")
    wp.vm.spawn(f"sleep 0.3; {env}vmstate-script.sh restore {state} from-a-script",
                "/tmp/t8-restore.out")
    deadline, epoch = time.monotonic() + 60, epoch0
    while epoch == epoch0 and time.monotonic() < deadline:
        time.sleep(0.5)
        epoch = wp.epoch() or epoch0
    check(epoch == epoch0 + 1, f"8: dbus-send Restore moved the guest to epoch {epoch}")
    rc, _ = wp.sh("test -e /tmp/t8-value")
    check(rc != 0, "8: the restored guest does not have the file written after the save")
    rc, _ = wp.sh("command -v busctl")
    check(rc != 0, "8: the guest has no busctl: the script used dbus-send")


def replug(wp, tag):
    """device_del both vmstate ports, then device_add them again (same chardevs)."""
    vm = wp.vm
    if BACKEND == "libvirt":  # libvirt owns the devices: virsh detach-device / attach-device
        vm.ports_unplug()
    else:
        for pid in ("porta", "portb"):
            vm.qmp("device_del", id=pid)
        for pid in ("porta", "portb"):
            vm.wait_event("DEVICE_DELETED", 30, lambda e, p=pid: e["data"].get("device") == p)
    time.sleep(1)
    rc, names = wp.query("cat /sys/class/virtio-ports/*/name")
    check("org.vmstate.request.0" not in names, f"{tag}: ports gone in the guest ({names.split()})")
    deadline, conn = time.monotonic() + 10, None
    while time.monotonic() < deadline:
        conn = wp.helper_property("BridgeConnected")
        if conn and "boolean false" in conn:
            break
        time.sleep(0.3)
    check(conn and "boolean false" in conn, f"{tag}: the helper noticed: BridgeConnected false")
    hellos = wp.read("/var/log/vmstate-helperd.log").count("sending Hello")
    rc, out = wp.sh(f"{wp.env()}vmstatectl save {tag}-unplugged")
    check(rc == 5 and re.search(r"[0-9a-f]{32}", out) is not None,
          f"{tag}: a request while the ports are gone returns an id at once, exit 5 (queued): "
          f"{out.strip()}")
    # (through HMP: the harness's qmp() takes the command as its own `name` argument)
    for cid, pid, name in (("cha", "porta", "org.vmstate.request.0"),
                           ("chb", "portb", "org.vmstate.event.0")):
        if BACKEND == "libvirt":
            vm.ports_plug()
            break
        out = vm.qmp("human-monitor-command", **{"command-line": (
            f"device_add virtserialport,bus=vser0.0,chardev={cid},id={pid},name={name}")})
        check(not out.strip(), f"{tag}: QMP device_add {pid} ({name}) {out.strip()}")
    t0 = time.monotonic()
    try:
        wp.wait_connected(30)
        ok = True
    except VMError as e:
        ok = False
        print(e)
    check(ok, f"{tag}: the helper found the re-plugged ports and the bridge again "
              f"({time.monotonic() - t0:.1f} s)")
    hlog = wp.read("/var/log/vmstate-helperd.log")
    check(hlog.count("sending Hello") > hellos,
          f"{tag}: the helper reopened the new ports and said Hello again (its log)")


def t7_ports(wp, ctx):
    a = App(wp, "t7", "org.test.Plug")
    rid = a.request("save t7-before")
    check(field(a.wait_event(rid), "status") == "0", "7: works before the unplug")
    replug(wp, "7")
    rid = a.request("save t7-after replugged")
    ev = a.wait_event(rid, timeout=60)
    check(field(ev, "status") == "0" and field(ev, "data") == hexs("replugged"),
          f"7: a save after the re-plug completes ({ev})")
    rows = [r for r in wp.bridge.table("requests") if r[3] == "vmstatectl"]
    check(rows and rows[-1][5] == "done", "7: the request queued while unplugged was run too")
    # The fallback: no hot-plug event reaches the helper. With /run/udev/control present it
    # listens for udevd's events, and no udevd runs here: only its own checks remain.
    wp.sh("mkdir -p /run/udev && touch /run/udev/control")
    wp.restart_helper("TERM")
    wp.wait_connected(30)
    check("watching udev events" in wp.read("/var/log/vmstate-helperd.log").split(
        "on the bus as")[-1], "7b: the helper now waits for udevd events that never come")
    replug(wp, "7b")
    rid = a.request("save t7b-after replugged-again")
    ev = a.wait_event(rid, timeout=60)
    check(field(ev, "status") == "0", f"7b: without hot-plug events too, a save after the "
                                      f"re-plug completes ({ev})")


SHARED = [(1, t1_save_list), (2, t2_restore), (3, t3_race), (5, t5_bridge_kill),
          (6, t6_helper_restart), (8, t8_script), (4, t4_errors), (9, t9_set_memory)]
OWN_VM = [(7, t7_ports)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--builddir", required=True)
    ap.add_argument("--workdir")
    ap.add_argument("--only", help="comma-separated test numbers")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    only = {int(x) for x in a.only.split(",")} if a.only else None
    workdir = a.workdir or tempfile.mkdtemp(prefix="vmswp-test-")
    t_all = time.monotonic()
    durations = {}

    def run_group(name, tests):
        tests = [(n, f) for n, f in tests if not only or n in only]
        if not tests:
            return
        wp = WholePath(a.image, a.builddir, os.path.join(workdir, name), vm_options=VM_OPTIONS,
                       extra_args=VM_EXTRA)
        ctx = {}
        try:
            t0 = time.monotonic()
            wp.start()
            print(f"[{name}] VM + bridge + helper connected in {time.monotonic() - t0:.1f} s",
                  flush=True)
            for n, f in tests:
                print(f"test {n}: {f.__doc__ or f.__name__}", flush=True)
                t0 = time.monotonic()
                nfail = len(results.failures)
                try:
                    f(wp, ctx)
                except Exception as e:  # noqa: BLE001
                    traceback.print_exc()
                    check(False, f"{n}: exception: {e}")
                durations[n] = (time.monotonic() - t0, len(results.failures) == nfail)
                print(f"test {n}: {'PASS' if durations[n][1] else 'FAIL'} "
                      f"({durations[n][0]:.1f} s)", flush=True)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            check(False, f"[{name}] setup: {e}")
        finally:
            rc = wp.stop()
            check(rc == 0, f"[{name}] bridge exits 0 on SIGTERM (status {rc})")
            if len(results.failures):
                print(f"--- [{name}] bridge log (tail) ---\n{wp.bridge.log()[-3000:]}")

    try:
        run_group("shared", SHARED)
        run_group("ports", OWN_VM)
    except KeyboardInterrupt:
        check(False, "interrupted")
    results.summary(f"(whole path, {time.monotonic() - t_all:.0f} s): " +
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
