#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Storage-fault migration across hosts: 3 hosts in network namespaces (vmstest.cluster), an
HA VM whose data disk is served over NBD from a server every host reaches over the cluster
network; one host's path to it is cut.

Acceptance 5 of the cluster issue (--only N runs some):
  5 h1's path to the NBD server cut (a blackhole route in h1 only): the VM pauses on the
    I/O error (werror=stop), its escalation fires, the table says h2 and h3 reach the
    storage, the VM migrates still paused to h2 and resumes there; its guest's write loop
    saw no I/O error and lost no write (every block on the disk holds the last sequence
    number written there); the admin events say "migrate" and "this host's path failed",
    the table and the lease say h2; time from the cut to running on h2
  7 then every host's path cut: the escalation says "the store failed everywhere" and the VM
    stays paused on h2; paths back: it resumes there, still no guest error
  8 a stateless VM (stateless = yes) on h3, h3's path cut: its escalation stops it there and
    it starts on h1 from its template
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
from vmstest import check, results, wait_until  # noqa: E402
from vmstest.cluster import ADDR_PREFIX  # noqa: E402
from vmstest.disks import guest_dev  # noqa: E402
from vmstest.ha import HACluster  # noqa: E402

MiB = 1 << 20
NBD_ADDR = f"{ADDR_PREFIX}.2"   # the storage server, on the cluster's bridge namespace
NBD_PORT = 10809
DISK = 32 * MiB
BLOCK = 64 * 1024
SLOTS = DISK // BLOCK
ESCALATE_S = 3


def nbd_args(port=NBD_PORT):
    return ["-blockdev", f"driver=nbd,server.type=inet,server.host={NBD_ADDR},"
            f"server.port={port},node-name=nbd1-path",
            "-blockdev", "driver=raw,file=nbd1-path,node-name=nbd1",
            "-device", "virtio-blk-pci,drive=nbd1,id=vblk1,werror=stop,rerror=stop"]


class Storage:
    """qemu-nbd serving a raw file inside the cluster's bridge namespace (br0 gets
    NBD_ADDR), reached by every host over the cluster network; cut(i) / restore(i) fail and
    restore host i's path only."""

    def __init__(self, cluster, path, port=NBD_PORT):
        self.c, self.path, self.proc, self.port = cluster, path, None, port

    def start(self):
        with open(self.path, "wb") as f:
            f.truncate(DISK)
        ns = self.c.bridge_netns
        subprocess.run(["ip", "-n", ns, "addr", "replace", f"{NBD_ADDR}/24", "dev", "br0"],
                       check=True)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "qemu-nbd", "-f", "raw", "-b", NBD_ADDR, "-p",
             str(self.port), "--persistent", "--shared=8", "--cache=writethrough", self.path],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._answers, 10, "qemu-nbd answering")

    def _answers(self):
        r = self.c.host(1).run(["python3", "-c", (
            "import socket,sys; s=socket.create_connection(('%s',%d),2); "
            "sys.exit(0 if s.recv(8)==b'NBDMAGIC' else 1)") % (NBD_ADDR, self.port)], timeout=10)
        return r.returncode == 0

    def cut(self, i):
        """A path failure: no new connection from host i (blackhole route: connect fails at
        once) and its open ones reset (ss -K: QEMU's NBD client sees the error now rather
        than after TCP's retransmission timeout)."""
        ns = self.c.host(i).netns
        subprocess.run(["ip", "-n", ns, "route", "add", "blackhole", f"{NBD_ADDR}/32"],
                       check=True)
        subprocess.run(["ip", "netns", "exec", ns, "ss", "-K", "dst", NBD_ADDR],
                       check=True, capture_output=True)

    def restore(self, i):
        subprocess.run(["ip", "-n", self.c.host(i).netns, "route", "del", "blackhole",
                        f"{NBD_ADDR}/32"], check=True)

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# The guest's writer: block i (64 KiB of the text "i") goes to slot i % SLOTS, O_DIRECT;
# /tmp/seq holds the last i that completed. FAIL and dd's errors are logged.
WRITER = (f"i=0; while [ ! -e /tmp/stop ]; do yes $i | head -c {BLOCK} > /tmp/b; "
          "dd if=/tmp/b of=DEV bs=64k count=1 seek=$((i % " + str(SLOTS) + ")) oflag=direct "
          "2>>/tmp/w.err || { echo FAIL $i >> /tmp/w.log; exit 1; }; echo $i > /tmp/seq; "
          "i=$((i+1)); done; echo DONE $i >> /tmp/w.log")


def guest_clean(vm):
    out = vm.run("cat /tmp/w.log /tmp/w.err 2>/dev/null | grep -v records; "
                 "dmesg | grep -i -E 'I/O error|blk_update|critical' || true")[1]
    return "DONE" in out and "FAIL" not in out and "error" not in out.lower(), out


def disk_holds_every_write(path, last):
    """Each slot holds the last sequence number written to it (none lost, none torn)."""
    with open(path, "rb") as f:
        data = f.read(DISK)
    bad = []
    for slot in range(min(SLOTS, last + 1)):
        i = last - ((last - slot) % SLOTS)
        want = (f"{i}\n" * BLOCK).encode()[:BLOCK]
        if data[slot * BLOCK:(slot + 1) * BLOCK] != want:
            bad.append((slot, i, data[slot * BLOCK:slot * BLOCK + 12]))
    return bad


def seq(vm):
    rc, out = vm.run("cat /tmp/seq 2>/dev/null")
    return int(out.strip()) if rc == 0 and out.strip().isdigit() else -1


def events_of(t, i, kind):
    ev = t.bridges[i].events
    return ev.of("s", kind) if ev else []


def test_path_cut(t, store):
    print("== 5. h1's path to the storage cut: the paused VM migrates to h2 and resumes there")
    vm = t.vms["s"]
    wait_until(lambda: all(v["vm"] != "s" or all(v["reach"].get(h) for h in ("h1", "h2", "h3"))
                           for v in t.cluster(1)["vms"]), 20, "every host reaches s's storage")
    dev = guest_dev(vm, DISK // 512)
    vm.run("rm -f /tmp/stop /tmp/w.log /tmp/w.err /tmp/seq")
    vm.spawn(WRITER.replace("DEV", dev))
    wait_until(lambda: seq(vm) >= 20, 60, "the writer going")
    before = seq(vm)
    pid1 = vm.pid()
    t0, w0 = time.monotonic(), time.time()
    store.cut(1)
    vm.detach()
    esc = t.bridges[1].events.wait("s", "escalated", ESCALATE_S + 60, after=w0)
    cl = esc.get("cluster", {})
    check(cl.get("decision") == "migrate" and cl.get("target") == "h2" and
          "this host's path" in cl.get("why", ""),
          f"h1's escalation event: {cl.get('decision')} to {cl.get('target')}: {cl.get('why')}")
    try:
        moved = t.bridges[1].events.wait("s", "storage-moved", 60, after=w0)
    except TimeoutError:
        vm.attach()
        print("   h1's QEMU says:", vm.qmp("query-migrate"))
        raise
    print(f"   state sent: {moved['cluster'].get('bytes')} bytes in "
          f"{moved['cluster'].get('send_ms', 0):.0f} ms")

    def on_h2():
        p = t.placement(3)
        return p.get("s") == ("h2", "running") and p
    wait_until(on_h2, 90, "s running on h2", interval=0.05)
    took = time.monotonic() - t0
    t_esc = esc["_rx"] - w0
    results.numbers["5_cut_to_running_s"] = took
    results.numbers["5_escalation_to_running_s"] = took - t_esc
    results.numbers["5_state_send_ms"] = moved["cluster"].get("send_ms", 0)
    check(True, f"s runs on h2 {took:.2f} s after the cut (escalation at {t_esc:.2f} s: "
                f"io_escalate_after {ESCALATE_S}; migration {took - t_esc:.2f} s)")
    s1 = next(v for v in t.cluster(1)["vms"] if v["vm"] == "s")
    check(s1.get("lease", "").startswith("h2") and s1["reach"].get("h1") is False,
          f"the lease is h2's ({s1.get('lease')}), the table says h1 does not reach the "
          f"storage ({s1['reach']})")
    check(pid1 not in (vm.pid(),) and not os.path.exists(f"/proc/{pid1}"),
          f"h1's QEMU (pid {pid1}) is gone, s runs as pid {vm.pid()}")
    vm.attach()
    vm.wait_ready(120)
    wait_until(lambda: seq(vm) > before + 20, 60, "the writer going on h2")
    check(vm.qmp("query-status")["status"] == "running", "the guest runs on h2")
    return before


def test_store_everywhere(t, store):
    print("== 7. every host's path cut: 'the store failed everywhere', it stays paused on h2")
    vm = t.vms["s"]
    w0 = time.time()
    for i in (1, 2, 3):
        if i != 1:
            store.cut(i)
    wait_until(lambda: [v for v in t.cluster(2)["vms"] if v["vm"] == "s"
                        and not any(v["reach"].values())], 20, "no host reaches the storage")
    esc = t.bridges[2].events.wait("s", "escalated", ESCALATE_S + 60, after=w0)
    cl = esc.get("cluster", {})
    check(cl.get("decision") == "stay-paused-store-failed" and
          "failed everywhere" in cl.get("why", ""),
          f"h2's escalation event: {cl.get('decision')}: {cl.get('why')}")
    check(vm.qmp("query-status")["status"] == "io-error" and t.placement(3)["s"] ==
          ("h2", "running"), "s stays paused on h2 (the table keeps it there)")
    t1 = time.time()
    for i in (1, 2, 3):
        store.restore(i)
    t.bridges[2].events.wait("s", "resumed", 60, after=t1)
    check(vm.qmp("query-status")["status"] == "running", "paths back: s resumed on h2")


def test_stateless(t, store):
    print("== 8. a stateless VM on h3, h3's path cut: stopped there, started on h1 from its "
          "template")
    ok, ans = t.start_vm(3, "sl")
    check(ok, f"power on sl on h3: {ans.get('error', 'ok')}")
    vm = t.vms["sl"]
    dev = guest_dev(vm, DISK // 512)
    vm.spawn(f"while true; do dd if=/dev/urandom of={dev} bs=64k count=1 oflag=direct; done")
    pid3 = vm.pid()
    t0, w0 = time.monotonic(), time.time()
    store.cut(3)
    vm.detach()
    esc = t.bridges[3].events.wait("sl", "escalated", ESCALATE_S + 60, after=w0)
    cl = esc.get("cluster", {})
    check(cl.get("decision") == "restart-there" and cl.get("target") == "h1" and
          "stateless" in cl.get("why", ""),
          f"h3's escalation event: {cl.get('decision')} on {cl.get('target')}: {cl.get('why')}")
    wait_until(lambda: t.placement(2).get("sl") == ("h1", "running"), 90, "sl running on h1",
               interval=0.05)
    took = time.monotonic() - t0
    results.numbers["8_cut_to_running_s"] = took
    vm.attach()
    vm.wait_ready(120)
    check(vm.pid() != pid3 and not os.path.exists(f"/proc/{pid3}"),
          f"sl runs on h1 {took:.2f} s after the cut, booted from its template (pid {vm.pid()}; "
          f"h3's QEMU {pid3} gone)")
    store.restore(3)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--builddir", required=True)
    ap.add_argument("--workdir")
    ap.add_argument("--only", type=int, action="append")
    ap.add_argument("--mem", default="128M", help="each VM's RAM (the migration benchmark)")
    a = ap.parse_args()
    workdir = a.workdir or tempfile.mkdtemp(prefix="vmscs-", dir="/tmp")
    t0 = time.monotonic()
    keys = {"io_probe": f"nbd1=nbd://{NBD_ADDR}:{NBD_PORT}",
            "io_escalate_after": ESCALATE_S, "io_probe_interval_ms": 200}
    t = HACluster(a.image, a.builddir, os.path.join(workdir, "st"), {1: 2, 2: 2, 3: 2}, 1,
                  {"s": (["h1", "h2", "h3"], 10), "sl": (["h3", "h1", "h2"], 5)},
                  vm_args={"s": nbd_args(), "sl": nbd_args(NBD_PORT + 1)},
                  vm_keys={"s": keys, "sl": dict(keys, stateless="yes",
                                                 io_probe=f"nbd1=nbd://{NBD_ADDR}:{NBD_PORT + 1}")},
                  checkpoint_s=0, io_events=True, mem=a.mem)
    store = Storage(t.c, os.path.join(workdir, "nbd.raw"))
    store2 = Storage(t.c, os.path.join(workdir, "nbd2.raw"), NBD_PORT + 1)
    try:
        t.setup([1, 2, 3])
        store.start()
        ok, ans = t.start_vm(1, "s")
        check(ok, f"power on s on h1: {ans.get('error', 'ok')}")
        last = None
        try:
            test_path_cut(t, store)
            if not a.only or 7 in a.only:
                test_store_everywhere(t, store)
            if not a.only or 8 in a.only:
                store2.start()
                test_stateless(t, store2)
            vm = t.vms["s"]
            vm.run("touch /tmp/stop")
            wait_until(lambda: "DONE" in vm.run("cat /tmp/w.log 2>/dev/null")[1], 60,
                       "the writer done")
            ok, text = guest_clean(vm)
            check(ok, f"the guest's writes all completed, no I/O error in the guest "
                      f"({text.strip()[:200]})")
            last = seq(vm)
            bad = disk_holds_every_write(store.path, last)
            check(last > 0 and not bad, f"no write lost: every slot of the disk holds the last "
                                        f"of {last + 1} writes ({len(bad)} wrong: {bad[:3]})")
        except Exception as e:  # noqa: BLE001
            check(False, f"raised {type(e).__name__}: {e}")
    finally:
        t.close()
        store.close()
        store2.close()
    results.workdir_done(workdir, made_here=not a.workdir)
    return results.summary(f"in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
