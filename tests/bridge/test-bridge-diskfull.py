#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Disk full while QEMU writes a snapshot (issue 13, item 13): a clear failure, then recovery.

    python3 tests/bridge/test-bridge-diskfull.py --image DIR --builddir BUILDDIR

The guest's qcow2 lives on a small tmpfs (root is needed to mount it; exit 77 otherwise)
that is nearly full. A save then fails in QEMU (ENOSPC): the guest gets one event with a
failure status and the hypervisor's reason, the journal records it (no state in the
catalogue, integrity ok), the bridge keeps serving. When space returns (the tmpfs grows),
the next save succeeds. The journal-side disk full is tests/test-bridge-hardening.c's
journal_full suite. Needs what test-bridge-system.py needs.
"""
import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
from vmstest import VM, Bridge, check, field, results  # noqa: E402
from vmstest.wireclient import WireClient  # noqa: E402

numbers = results.numbers


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--builddir", required=True)
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("SKIP: mounting the small tmpfs needs root")
        return 77
    workdir = tempfile.mkdtemp(prefix="vmsd-")
    small = os.path.join(workdir, "small")
    os.makedirs(small)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24M", "tmpfs", small], check=True)
    vm, bridge = None, None
    try:
        disk = os.path.join(small, "disk.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "64M"], check=True)
        vm = VM(os.path.join(workdir, "vm1"), a.image, disk=disk)
        vm.start()
        vm.wait_ready(90)
        bridge = Bridge(a.builddir, workdir, {"vm1": vm}, {"job_timeout": 120},
                        log_level="info")
        bridge.add_principal("app", "s3cret", {"vm1": ["all"]})
        bridge.start()
        c = WireClient(vm)
        c.wait(r"^WELCOME version=1", 60)
        # leave ~1 MiB: the RAM of the guest does not fit
        filler = os.path.join(small, "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, free_bytes(small) - (1 << 20)))
        numbers["free_before_save_bytes"] = free_bytes(small)
        rid = c.request("save org.example.Notes app s3cret label=full data=kept")
        ev = c.event(rid, timeout=180)
        st = field(ev, "status")
        check(st not in ("0", None), f"the save on a full disk failed ({ev})")
        msg = ev.split("message=", 1)[1] if "message=" in ev else ""
        check(msg != "", f"its event says why: {msg!r}")
        check(field(ev, "data") == b"kept".hex(), "the failed save's event carries its app data")
        check(bridge.alive(), "the bridge is still running")
        states = bridge.table("states", "vm1")[1:]  # below the header line
        check(states == [], f"no state in the catalogue for the failed save ({states})")
        with sqlite3.connect(f"file:{bridge.db}?mode=ro", uri=True) as db:
            check(db.execute("PRAGMA integrity_check").fetchone()[0] == "ok",
                  "the journal is consistent")
            row = db.execute("SELECT status, result FROM requests WHERE id = ?",
                             (rid,)).fetchone()
        check(row is not None and row[0] == "done" and str(row[1]) == st,
              f"the journal has the save done with status {st} ({row})")

        # ---- space returns ----
        os.unlink(filler)
        subprocess.run(["mount", "-o", "remount,size=512M", small], check=True)
        if vm.qmp("query-status")["status"] != "running":
            vm.qmp("cont")  # a guest write that hit the full disk paused the VM (werror=stop)
        time.sleep(1)
        t0 = time.monotonic()
        rid = c.request("save org.example.Notes app s3cret label=room data=again")
        ev = c.event(rid, timeout=180)
        numbers["save_after_s"] = round(time.monotonic() - t0, 2)
        state = field(ev, "state")
        check(field(ev, "status") == "0" and state in vm.snapshots(),
              f"with space back the next save succeeds ({ev})")
    finally:
        if bridge:
            check(bridge.stop() == 0, "bridge exits 0 on SIGTERM")
        if vm:
            vm.stop()
        subprocess.run(["umount", small], check=False)
        shutil.rmtree(workdir, ignore_errors=True)
    return results.summary()


if __name__ == "__main__":
    sys.exit(main())
