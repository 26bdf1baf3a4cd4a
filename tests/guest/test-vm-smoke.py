#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""System smoke test of the guest image and the vmstest harness: boot, run, files, snapshot round trip.

    python3 tests/guest/test-vm-smoke.py --image DIR [--workdir DIR] [--keep]

Needs (Debian packages): python3 qemu-system-x86 qemu-utils; an image from build-image.sh.
"""
import argparse
import os
import shutil
import socket
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from vmstest import VM, AgentLost, check, choose_accel, results  # noqa: E402


def ports_round_trip(vm):
    """Bytes go host -> port B -> guest and guest -> port A -> host."""
    with socket.socket(socket.AF_UNIX) as a, socket.socket(socket.AF_UNIX) as b:
        a.connect(vm.a_sock)
        b.connect(vm.b_sock)
        b.sendall(b"ping\n")
        pa, pb = vm.port_device("org.vmstate.request.0"), vm.port_device("org.vmstate.event.0")
        rc, out = vm.run(f"timeout 5 head -n1 {pb} && echo pong >{pa}", timeout=10)
        a.settimeout(5)
        check((rc, out, a.recv(16)) == (0, "ping\n", b"pong\n"), f"port B -> {pb}, {pa} -> port A")


def in_flight(vm):
    """The agent across restores with a command running in another thread."""
    def bg(cmd, out):
        try:
            out.append(vm.run(cmd, timeout=20))
        except AgentLost as e:
            out.append(e)
    vm.snapshot_save("idle")
    out = []
    t = threading.Thread(target=bg, args=("sleep 5; echo late", out))
    t.start()
    time.sleep(0.5)
    vm.snapshot_load("idle")
    t.join(5)
    check(out and isinstance(out[0], AgentLost), f"command in flight at load: AgentLost ({out})")
    check(vm.run("echo ok") == (0, "ok\n"), "run works after a load that cut a command short")
    out = []
    t = threading.Thread(target=bg, args=("sleep 1.5; echo once >>/tmp/replayed", out))
    t.start()
    time.sleep(0.5)
    vm.snapshot_save("busy")  # taken while the command runs
    t.join(10)
    vm.write_file("/tmp/replayed", "")
    vm.snapshot_load("busy")  # the command goes on from where it was, and answers again
    rc, text = vm.run("cat /tmp/replayed")
    check(out == [(0, "")] and text == "once\n", "command running at save time finishes after load")
    vm.snapshot_delete("idle")
    vm.snapshot_delete("busy")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True, help="directory made by build-image.sh")
    ap.add_argument("--workdir", help="VM work directory (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    workdir = a.workdir or tempfile.mkdtemp(prefix="vmh-smoke-")
    t0 = time.monotonic()
    accel = choose_accel(a.image)
    print(f"accelerator: {accel} (chosen in {time.monotonic() - t0:.2f}s)")
    try:
        with VM(workdir, a.image, append="vmstate.nohelper") as vm:  # the test opens the ports itself
            boot = vm.wait_ready(timeout=60)
            print(f"boot to agent ready: {boot:.2f}s")

            rc, out = vm.run("echo hello; uname -r; echo oops >&2; exit 3")
            check(rc == 3 and out.startswith("hello\n") and "oops" in out, f"run: rc {rc}")
            check(vm.image["kernel_release"] in out, "guest runs the image's kernel")

            names = vm.check("cat /sys/class/virtio-ports/*/name").split()
            check({"org.vmstate.request.0", "org.vmstate.event.0"} <= set(names),
                  f"vmstate ports in the guest: {names}")
            check(vm.run("test -S /run/dbus/system_bus_socket")[0] == 0, "system bus is up")
            ports_round_trip(vm)

            blob = bytes(range(256)) * 400  # binary, > one write_file chunk
            vm.write_file("/tmp/blob", blob)
            check(vm.read_file("/tmp/blob") == blob, "write_file/read_file round trip (100 KiB)")

            vm.write_file("/tmp/state", "before\n")
            pid = vm.spawn("while :; do date +%s >>/tmp/ticks; sleep 1; done", "/tmp/ticker.log")
            check(vm.run(f"kill -0 {pid}")[0] == 0, f"spawned process {pid} runs")

            t_save = vm.snapshot_save("smoke")
            print(f"snapshot-save: {t_save:.2f}s")
            vm.write_file("/tmp/state", "after\n")
            check(vm.read_file("/tmp/state") == b"after\n", "file overwritten after the save")

            t_load = vm.snapshot_load("smoke")
            print(f"snapshot-load: {t_load:.2f}s")
            check(vm.read_file("/tmp/state") == b"before\n", "snapshot-load restored the file")
            rc, out = vm.run("echo still here")
            check((rc, out) == (0, "still here\n"), "run works after the load")
            check(vm.run(f"kill -0 {pid}")[0] == 0, "spawned process survives the load")

            t_load2 = vm.snapshot_load("smoke")  # a second restore of the same state
            check(vm.read_file("/tmp/state") == b"before\n", "second load of the same snapshot")
            print(f"snapshot-load (again): {t_load2:.2f}s")
            vm.snapshot_delete("smoke")
            check(all(s["name"] != "smoke" for s in vm.qmp("query-block")[0]["inserted"]
                      .get("image", {}).get("snapshots", [])), "snapshot deleted")

            in_flight(vm)
            check("vmstate-init: " in vm.console_log(), "console log has the init's lines")
            print(f"agent answers dropped (late boot pings, replays after loads): "
                  f"{len(vm.agent.ignored)}")
    except Exception:
        print(f"--- console ({workdir}/console.log) tail:")
        try:
            with open(os.path.join(workdir, "console.log"), errors="replace") as f:
                print(f.read()[-2000:])
        except OSError:
            pass
        raise
    finally:
        if not a.keep and not a.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"total: {time.monotonic() - t0:.2f}s")
    return results.summary()


if __name__ == "__main__":
    sys.exit(main())
