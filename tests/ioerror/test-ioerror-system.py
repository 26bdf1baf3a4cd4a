#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""System tests of the bridge's I/O-error auto-resume (issue 6, acceptance 1-5), real QEMU.

    python3 tests/ioerror/test-ioerror-system.py --image DIR --builddir BUILDDIR

Four TCG guests, one bridge:
  nbd   extra disk served by qemu-nbd (UNIX socket), policy auto-resume, NBD probe  (1, 2)
  dbg   blkdebug disks (EIO once / EIO always, no probe: the resume timer) and a raw
        file on a 24 MiB tmpfs (ENOSPC, file probe); user stop                   (3, 4, 5)
  lp    blkdebug EIO once, policy leave-paused                                    (3)
  kill  blkdebug EIO always, policy kill, io_kill_timeout = 2                     (3)
Needs: python3, qemu-system-x86, qemu-utils (qemu-nbd); root for the tmpfs (else 5 skips).

On libvirt (VMSTATE_TEST_BACKEND=libvirt, tests/libvirt/run-suite.sh) each VM is a domain and
its extra disks are libvirt's own NBD disks: the qemu-nbd one as is, the blkdebug and tmpfs
nodes served by one qemu-storage-daemon (vmstest.disks.StorageDaemon). The bridge then names
a disk by its target (vdb, vdc, ...), not by a node name: node() maps them.
"""
import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
from vmstest import BACKEND, Bridge, check, make_vm, results  # noqa: E402
from vmstest.disks import (NBDServer, StorageDaemon, blkdebug_args, blkdebug_spec,  # noqa: E402
                           file_args, file_spec, guest_dev, io_bridge_options, writer_script)

numbers = results.numbers
MiB = 1 << 20
LIBVIRT = BACKEND == "libvirt"
# libvirt: the disks' targets, in the order each VM's extra disks are given below
TARGETS = {"nbd": {"nbd1": "vdb"}, "dbg": {"eio1": "vdb", "eio2": "vdc", "full1": "vdd"},
           "lp": {"eio1": "vdb"}, "kill": {"eio1": "vdb"}}


def node(vm_name, node_name):
    """How the bridge names the disk: its node name on QMP, its target on libvirt."""
    return TARGETS[vm_name][node_name] if LIBVIRT else node_name


def status(vm):
    return vm.qmp("query-status")["status"]


def wait_status(vm, want, timeout):
    deadline = time.monotonic() + timeout
    while True:
        st = status(vm)
        if st == want or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


def guest_clean(vm, log):
    """The writer finished without a failed dd and the kernel logged no I/O error."""
    out = vm.run(f"cat {log} {log}.err 2>/dev/null | grep -v records; dmesg | grep -i -E 'I/O error|blk_update|"
                 "critical' || true")[1]
    return "DONE" in out and "FAIL" not in out and "error" not in out.lower(), out


def wait_guest_file(vm, path, word, timeout):
    deadline = time.monotonic() + timeout
    while True:
        rc, out = vm.run(f"cat {path} 2>/dev/null")
        if word in out or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--builddir", required=True)
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    workdir = a.workdir or tempfile.mkdtemp(prefix="vmsio-")
    t_all = time.monotonic()
    rnd = random.Random(6)
    tmpfs = os.path.join(workdir, "tmpfs")
    os.makedirs(tmpfs, exist_ok=True)  # also creates workdir
    have_tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", tmpfs],
                                capture_output=True).returncode == 0
    # disks (sizes tell them apart in the guest)
    nbd_img = os.path.join(workdir, "nbd.raw")
    sizes = {"nbd": 24 * MiB, "eio1": 17 * MiB, "eio2": 18 * MiB, "full": 32 * MiB,
             "lp": 19 * MiB, "kill": 20 * MiB}
    paths = {k: os.path.join(workdir, f"{k}.raw") for k in sizes}
    paths["nbd"] = nbd_img
    paths["full"] = os.path.join(tmpfs if have_tmpfs else workdir, "full.raw")
    for k, size in sizes.items():
        with open(paths[k], "wb") as f:
            f.truncate(size)
    nbd = NBDServer(nbd_img, os.path.join(workdir, "nbd.sock"))
    nbd.start()
    qsd = StorageDaemon(os.path.join(workdir, "qsd.sock")) if LIBVIRT else None

    def vm_with_disks(name, *disks):
        """The VM @name with extra disks (kind, path, node[, once]): QEMU arguments on QMP,
        NBD disks on libvirt (served by qsd, exported as NAME-NODE)."""
        if not LIBVIRT:
            args = []
            for i, (kind, path, nd, *once) in enumerate(disks):
                dev = f"vblk{i + 1}"
                args += (nbd.blockdev_args(nd, dev) if kind == "nbd" else
                         blkdebug_args(path, nd, dev, *once) if kind == "blkdebug" else
                         file_args(path, nd, dev))
            return make_vm(os.path.join(workdir, name), a.image, extra_args=args)
        nbd_disks = []
        for kind, path, nd, *once in disks:
            if kind == "nbd":
                nbd_disks.append((nbd.sock, "", TARGETS[name][nd]))
                continue
            export = f"{name}-{nd}"
            qsd.add(blkdebug_spec(path, export, *once) if kind == "blkdebug" else
                    file_spec(path, export))
            nbd_disks.append((qsd.sock, export, TARGETS[name][nd]))
        return make_vm(os.path.join(workdir, name), a.image, a.builddir, nbd_disks=nbd_disks)

    vms = {
        "nbd": vm_with_disks("nbd", ("nbd", nbd_img, "nbd1")),
        "dbg": vm_with_disks("dbg", ("blkdebug", paths["eio1"], "eio1", True),
                             ("blkdebug", paths["eio2"], "eio2", False),
                             ("file", paths["full"], "full1")),
        "lp": vm_with_disks("lp", ("blkdebug", paths["lp"], "eio1", True)),
        "kill": vm_with_disks("kill", ("blkdebug", paths["kill"], "eio1", False)),
    }
    if qsd:
        qsd.start()
    conf = {
        "nbd": {"io_error_policy": "auto-resume",
                "io_probe": f"{node('nbd', 'nbd1')}=nbd+unix:///?socket={nbd.sock}",
                "io_probe_interval_ms": 1000, "io_probe_max_ms": 1000, "io_retry_min_ms": 250,
                "io_settle_ms": 1000, "io_escalate_after": 120},
        "dbg": {"io_error_policy": "auto-resume", "io_resume_delay_ms": 1000, "io_retry_limit": 2,
                "io_settle_ms": 1000, "io_probe": f"{node('dbg', 'full1')}={paths['full']}",
                "io_probe_interval_ms": 500, "io_probe_max_ms": 1000, "io_probe_min_free": "2M",
                "io_escalate_after": 120},
        "lp": {"io_error_policy": "leave-paused"},
        "kill": {"io_error_policy": "kill", "io_kill_timeout": 2,
                 "io_restart_command": f"echo restart $VMSTATE_VM $VMSTATE_EVENT > "
                                       f"{workdir}/restart.out"},
    }
    bridge = None
    try:
        for vm in vms.values():
            vm.start()
        for vm in vms.values():
            vm.wait_ready(120)
        print(f"booted {len(vms)} VMs in {time.monotonic() - t_all:.1f}s", flush=True)
        bridge = Bridge(a.builddir, workdir, vms, per_vm=conf,
                        bridge_options=io_bridge_options(workdir))
        bridge.start(wait_connected=vms)
        ev = bridge.events

        # ---- 1. NBD server killed mid-write, restarted: resume, bytes intact, no guest error ----
        vm = vms["nbd"]
        dev = guest_dev(vm, sizes["nbd"] // 512)
        pattern = rnd.randbytes(8 * MiB)
        vm.write_file("/tmp/pat", pattern)
        portb = vm.port_device("org.vmstate.event.0")
        # no helper in this image: catch the Notice. virtio-serial gives a reader EOF while
        # the host end is not connected (the bridge's QMP/libvirt connection, which start()
        # waits for, can come before its port B connection): read again until it is
        vm.spawn(f"while :; do cat {portb} >> /tmp/portb.bin; sleep 0.1; done")
        vm.clear_events()
        vm.run("rm -f /tmp/stop")
        vm.spawn(writer_script(dev, "/tmp/pat", 128, "/tmp/w1.log", loop=True))
        time.sleep(0.5)
        nbd.kill()
        t_kill = time.time()
        vm.wait_event("STOP", 15)
        check(status(vm) == "io-error", "1: the VM paused with io-error when the NBD server died")
        paused = ev.wait("nbd", "paused", 10)
        check(paused["node"] == node("nbd", "nbd1") and paused["error"] == "EIO",
              f"1: bridge reported the pause on disk {node('nbd', 'nbd1')} ({paused['text']})")
        time.sleep(max(0.0, t_kill + 2.5 - time.time()))
        check(status(vm) == "io-error", "1: still paused while the store is down")
        t_up = nbd.start()
        healthy = ev.wait("nbd", "healthy", 10, after=t_up - 0.01)
        resumed = ev.wait("nbd", "resumed", 30, after=t_up)
        h2c, h2r = resumed["healthy_to_cont_s"], resumed["healthy_to_running_s"]
        numbers["1_probe_lag_s"] = healthy["time"] - t_up
        numbers["1_healthy_to_cont_s"], numbers["1_healthy_to_running_s"] = h2c, h2r
        check(0 <= h2c <= 1.0, f"1: the bridge resumed (cont) {h2c:.3f}s after its probe saw the "
              f"store healthy (<= 1 s)")
        check(status(vm) == "running" and 0 <= h2r <= 1.0, f"1: running again; probe healthy -> VM running "
              f"{h2r:.2f}s ({resumed['pauses']} pause(s), {resumed['conts']} cont(s); QEMU's NBD "
              "client reconnects on its own 1-2-4 s backoff)")
        vm.run("touch /tmp/stop")  # the writer ends after its current pass
        out = wait_guest_file(vm, "/tmp/w1.log", "DONE", 60)
        ok, text = guest_clean(vm, "/tmp/w1.log")
        check(ok, f"1: the guest's writes all completed, no I/O error seen in the guest ({text.strip()[:200]})")
        # the Notice is written to port B as the bridge reports "resumed"; the guest's reader
        # gets it from QEMU when it is scheduled: poll for it, do not sleep a guess
        deadline = time.time() + 10
        while True:
            notice = vm.run("cat /tmp/portb.bin")[1]
            ok_notice = "io-resumed" in notice and f"on disk {node('nbd', 'nbd1')}" in notice
            if ok_notice or time.time() > deadline:
                break
            time.sleep(0.2)
        check(ok_notice, "1: the guest received a Notice (io-resumed, 'paused N s ... on disk "
              f"{node('nbd', 'nbd1')}') on port B" + ("" if ok_notice else
              f": port B gave {notice[-300:]!r}; its reader: "
              f"{vm.run('ps | grep -c [c]at.*vport')[1].strip()} running"))
        with open(nbd_img, "rb") as f:
            on_disk = f.read(len(pattern))
        check(on_disk == pattern, "1: the bytes on the NBD disk are the guest's pattern")

        # ---- 2. outage shorter than the probe interval ----
        vm.clear_events()
        vm.run("rm -f /tmp/w2.log /tmp/stop")
        vm.spawn(writer_script(dev, "/tmp/pat", 128, "/tmp/w2.log", loop=True))
        time.sleep(0.4)
        nbd.kill()
        t_kill = time.time()
        time.sleep(0.3)
        t_up = nbd.start()
        numbers["2_outage_s"] = t_up - t_kill
        time.sleep(1)
        vm.run("touch /tmp/stop")
        out = wait_guest_file(vm, "/tmp/w2.log", "DONE", 60)
        paused_2 = any(e["event"] == "STOP" for e in vm.events)
        st = wait_status(vm, "running", 15)
        ok, text = guest_clean(vm, "/tmp/w2.log")
        check(st == "running" and ok, f"2: outage of {t_up - t_kill:.2f}s (< probe interval 1 s; "
              f"VM {'paused' if paused_2 else 'did not pause'}) ends with the VM running and the "
              f"writes complete ({text.strip()[:120]})")
        with open(nbd_img, "rb") as f:
            check(f.read(len(pattern)) == pattern, "2: the bytes on the NBD disk are intact")

        # ---- 3. user-paused VM is never resumed ----
        vm = vms["dbg"]
        vm.qmp("stop")
        ev.wait("dbg", "user-paused", 10)
        time.sleep(3)  # 3x the resume timer
        check(status(vm) == "paused", "3: a VM stopped by a user (QMP stop) is not auto-resumed")
        vm.qmp("cont")

        # ---- 3. leave-paused ----
        vm = vms["lp"]
        dev = guest_dev(vm, sizes["lp"] // 512)
        vm.spawn(f"sleep 0.5; dd if=/dev/urandom of={dev} bs=64k count=4 oflag=direct 2>/tmp/lp.err; "
                 "echo rc=$? >/tmp/lp.log")
        vm.wait_event("STOP", 15)
        p = ev.wait("lp", "paused", 10)
        time.sleep(3)
        check(status(vm) == "io-error" and p["policy"] == "leave-paused",
              "3: policy leave-paused: still paused (io-error) 3 s later, pause reported")
        vm.qmp("cont")  # the admin resumes it; blkdebug failed only once

        # ---- 3. kill ----
        vm = vms["kill"]
        dev = guest_dev(vm, sizes["kill"] // 512)
        vm.spawn(f"sleep 0.5; dd if=/dev/urandom of={dev} bs=64k count=4 oflag=direct")
        vm.wait_event("STOP", 15)
        t_stop = time.time()
        try:
            vm.proc.wait(timeout=15)
            gone = time.time() - t_stop
        except subprocess.TimeoutExpired:
            gone = None
        k = ev.of("kill", "killed")
        time.sleep(0.5)
        try:
            with open(os.path.join(workdir, "restart.out")) as f:
                restart = f.read().strip()
        except OSError:
            restart = None
        check(restart == "restart kill io-killed",
              f"3: io_restart_command ran once QEMU was gone ({restart!r})")
        check(gone is not None and 2 <= gone + 0.3 and gone <= 9 and k,
              f"3: policy kill: QEMU gone {gone if gone is None else round(gone, 2)}s after the "
              "pause (io_kill_timeout = 2), 'killed' reported")
        vm.kill()

        # ---- 4a. unknown condition (blkdebug EIO once): resume on the timer ----
        vm = vms["dbg"]
        t0 = time.time()
        dev1 = guest_dev(vm, sizes["eio1"] // 512)
        vm.spawn(f"sleep 0.5; dd if=/dev/urandom of={dev1} bs=64k count=4 oflag=direct 2>/tmp/e1.err; "
                 "echo rc=$? >/tmp/e1.log")
        p = ev.wait("dbg", "paused", 15, after=t0)
        r = ev.wait("dbg", "resumed", 15, after=t0)
        out = wait_guest_file(vm, "/tmp/e1.log", "rc=", 20)
        err = vm.run("cat /tmp/e1.err")[1]
        check(p["node"] == node("dbg", "eio1") and r["pauses"] == 1 and "rc=0" in out and "rror" not in err,
              f"4: blkdebug EIO (no probe): resumed on the timer after {r['paused_s']:.2f}s "
              f"(io_resume_delay_ms = 1000); the guest's dd succeeded ({out.strip()})")

        # ---- 5. ENOSPC on a full file system, then space freed ----
        if have_tmpfs:
            filler = os.path.join(tmpfs, "filler")
            with open(filler, "wb") as f:
                f.write(b"\1" * (10 * MiB))
            t0 = time.time()
            dev3 = guest_dev(vm, sizes["full"] // 512)
            vm.write_file("/tmp/pat5", pattern[:4 * MiB])
            # 20 MiB into a 24 MiB tmpfs holding 10 MiB: ENOSPC around 14 MiB
            vm.spawn("i=0; while [ $i -lt 5 ]; do dd if=/tmp/pat5 of=%s bs=1M count=4 "
                     "seek=$((i*4)) oflag=direct 2>>/tmp/f.err || { echo FAIL $i >>/tmp/f.log; "
                     "exit 1; }; i=$((i+1)); done; echo DONE >>/tmp/f.log" % dev3)
            p = ev.wait("dbg", "paused", 60, after=t0)
            check(p["error"] == "ENOSPC" and p["node"] == node("dbg", "full1") and
                  status(vm) == "io-error",
                  f"5: paused by ENOSPC on {node('dbg', 'full1')} ({p['text']})")
            time.sleep(2)
            check(status(vm) == "io-error", "5: stays paused while the file system is full "
                  "(file probe: free space below io_probe_min_free)")
            t_r = time.time()
            check(bridge.stop() == 0, "5: bridge stopped while the VM is paused")
            bridge.start(wait_connected=vms)  # a new bridge must find the paused VM by itself
            ev = bridge.events
            p2 = ev.wait("dbg", "paused", 20, after=t_r)
            check(p2["node"] == node("dbg", "full1") and p2["error"] == "ENOSPC" and
                  status(vm) == "io-error",
                  "5: a restarted bridge found the paused VM (run state io-error, the disk's "
                  f"io-status nospace on {node('dbg', 'full1')}): {p2['text']}")
            time.sleep(1)
            t_free = time.time()
            os.unlink(filler)
            r = ev.wait("dbg", "resumed", 20, after=t_free)
            numbers["5_free_to_running_s"] = r["time"] - t_free - 1.0  # minus io_settle_ms
            out = wait_guest_file(vm, "/tmp/f.log", "DONE", 60)
            ok, text = guest_clean(vm, "/tmp/f.log")
            with open(paths["full"], "rb") as f:
                data = f.read(20 * MiB)
            check(ok and all(data[i * 4 * MiB:(i + 1) * 4 * MiB] == pattern[:4 * MiB]
                             for i in range(5)),
                  f"5: resumed after space was freed; the guest's 20 MiB are on disk, no guest "
                  f"error ({text.strip()[:120]})")
        else:
            print("SKIP: 5 (cannot mount a tmpfs: not root?)")

        # ---- 4b. EIO every time: N timed resumes, then escalation ----
        t0 = time.time()
        dev2 = guest_dev(vm, sizes["eio2"] // 512)
        vm.spawn(f"sleep 0.5; dd if=/dev/urandom of={dev2} bs=64k count=4 oflag=direct")
        esc = ev.wait("dbg", "escalated", 30, after=t0)
        time.sleep(2.5)
        reps = ev.of("dbg", "repaused")
        check(esc["pauses"] == 4 and esc["state"] == "gave-up" and status(vm) == "io-error" and
              "stays paused" in esc["text"],
              f"4: after {esc['pauses'] - 1} timed resumes (1 + io_retry_limit = 2 retries) it escalated and "
              f"said so: {esc['text']!r}; still paused 2.5 s later")
        check(len([r for r in reps if r["_rx"] >= t0]) == 3, "4: exactly 3 repauses reported")
        log = bridge.log()
        lines = [l for l in log.splitlines() if "dbg" in l]
        check(any("io: paused by a storage error" in l for l in lines) and
              any("io: resumed: paused" in l for l in lines) and
              any("io: escalation" in l for l in lines),
              "notify: pause, resume and escalation are logged with the VM's name")
    except Exception as e:  # report, then clean up
        import traceback
        traceback.print_exc()
        check(False, f"unexpected error: {e}")
    finally:
        for vm in vms.values():
            vm.stop()
            if LIBVIRT:
                vm.undefine()
        nbd.kill()
        if qsd:
            qsd.kill()
        if bridge:
            rc = bridge.stop()
            check(rc == 0, f"the bridge exited cleanly ({rc})")
            if results.failures:
                print("--- bridge log (tail) ---\n" + bridge.log()[-4000:])
        if have_tmpfs:
            subprocess.run(["umount", tmpfs])
    exit_status = results.summary(f"in {time.monotonic() - t_all:.1f}s")
    if not exit_status and not a.keep and not a.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return exit_status


if __name__ == "__main__":
    sys.exit(main())
