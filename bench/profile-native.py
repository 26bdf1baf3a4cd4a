#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The vmstate path natively on the host (no TCG): what our code costs without emulation.

app (vsbench-app rtt) -> private dbus-daemon -> vmstate-helperd -> relay -> vmstate-bridged
-> relay -> helper -> dbus-daemon -> app, all host processes. The relay (Python, in this
script) stands in for QEMU's virtio-serial chardevs: the helper and the bridge both connect
to it as clients, as they do to QEMU. hostinfo still asks a real QEMU over QMP (a booted
harness VM) for the memory size. Reports the round trip and CPU time per request of each
process; with --callgrind, runs the helper (or --callgrind-bridge: the bridge,
--callgrind-app: the app and libvmstate) under callgrind and prints its top functions by
instructions.

Usage: profile-native.py --image DIR --builddir BUILD [-n 2000] [--callgrind]
"""
import os
import selectors
import shutil
import socket
import subprocess
import sys
import threading

import benchlib as bl
import vmstate_path as vp


class Relay:
    """Two byte pipes between unix-socket clients: helper_a -> bridge_a, bridge_b -> helper_b.
    Bytes for a side not connected yet are kept (like QEMU's chardev before the guest opens)."""

    def __init__(self, wd):
        self.paths = {k: os.path.join(wd, f"relay-{k}.sock") for k in ("ha", "ba", "hb", "bb")}
        self.peer = {"ha": "ba", "bb": "hb"}  # source -> destination
        self.conn, self.pending = {}, {"ba": b"", "hb": b""}
        self.sel = selectors.DefaultSelector()
        for k, p in self.paths.items():
            if os.path.exists(p):
                os.unlink(p)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(p)
            s.listen(4)
            self.sel.register(s, selectors.EVENT_READ, ("listen", k))
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            for key, _ in self.sel.select():
                kind, k = key.data
                if kind == "listen":
                    c, _ = key.fileobj.accept()
                    if k in self.conn:
                        self.sel.unregister(self.conn[k])
                        self.conn[k].close()
                    self.conn[k] = c
                    self.sel.register(c, selectors.EVENT_READ, ("data", k))
                    if k in self.pending and self.pending[k]:
                        c.sendall(self.pending[k])
                        self.pending[k] = b""
                    continue
                data = key.fileobj.recv(65536)
                if not data:
                    self.sel.unregister(key.fileobj)
                    key.fileobj.close()
                    self.conn.pop(k, None)
                    continue
                dst = self.peer.get(k)
                if dst is None:
                    continue  # the helper/bridge never send on their input side
                if dst in self.conn:
                    self.conn[dst].sendall(data)
                else:
                    self.pending[dst] += data


class FakeVM:
    def __init__(self, vm, relay):
        self.a_sock, self.b_sock = relay.paths["ba"], relay.paths["bb"]
        self.qmp_sock, self.workdir = vm.qmp_sock, vm.workdir


def main():
    ap = bl.common_args(__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--callgrind-bridge", action="store_true")
    ap.add_argument("--callgrind-app", action="store_true",
                    help="run the measured app (vsbench-app, libvmstate) under callgrind")
    a = ap.parse_args()
    wd = bl.workdir(a, "native")
    bus = os.path.join(wd, "bus.sock")
    with open(os.path.join(wd, "bus.conf"), "w") as f:
        f.write(f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>custom</type><listen>unix:path={bus}</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/>
<allow receive_sender="*"/></policy></busconfig>
""")
    relay = Relay(wd)
    with open(os.path.join(wd, "helper.conf"), "w") as f:
        f.write(vp.HELPER_CONF + f"request_port = unix:{relay.paths['ha']}\n"
                f"event_port = unix:{relay.paths['hb']}\n")
    procs = []
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={bus}")
    app = bl.host_prog(a, "vsbench-app")
    with bl.VM(os.path.join(wd, "vm"), a.image, ports=False) as vm:
        vm.wait_ready()
        dbus = subprocess.Popen(["dbus-daemon", "--nofork", "--config-file",
                                 os.path.join(wd, "bus.conf")], preexec_fn=bl.harness.child_setup)
        procs.append(dbus)
        cg = []
        if a.callgrind:
            cg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={wd}/cg.helper"]
        helper = subprocess.Popen(cg + [os.path.join(os.path.abspath(a.builddir), "guest-helper",
                                                     "vmstate-helperd"), "--config",
                                        os.path.join(wd, "helper.conf"), "--address",
                                        f"unix:path={bus}"],
                                  stdout=open(os.path.join(wd, "helper.log"), "w"),
                                  stderr=subprocess.STDOUT, preexec_fn=bl.harness.child_setup)
        procs.append(helper)
        try:
            with vp.Path(a.builddir, wd, {"vm1": FakeVM(vm, relay)}, cost="test") as path:
                if a.callgrind_bridge:
                    path.stop()
                    path.wrapper = ["valgrind", "--tool=callgrind",
                                    f"--callgrind-out-file={wd}/cg.bridge"]
                    path.start()
                r = subprocess.run([app, "wait-bridge", "60"], env=env)
                if r.returncode != 0:
                    raise SystemExit("native helper never saw the bridge")
                subprocess.run([app, "rtt", "50"], env=env, check=True, capture_output=True)
                pids = {"vmstate-bridged (main)": path.proc.pid, "vmstate-helperd": helper.pid,
                        "dbus-daemon": dbus.pid, "QEMU (answers query-memory)": vm.proc.pid}
                for p in path.pids()[1:]:
                    pids["vmstate-bridged-reader"] = p
                c0 = {k: bl.process_cpu_s(p) for k, p in pids.items()}
                t0 = os.times()
                cg_app = (["valgrind", "--tool=callgrind", f"--callgrind-out-file={wd}/cg.app"]
                          if a.callgrind_app else [])
                out = subprocess.run(cg_app + [app, "rtt", str(a.n)], env=env, check=True,
                                     capture_output=True, text=True).stdout
                t1 = os.times()
                c1 = {k: bl.process_cpu_s(p) for k, p in pids.items()}
        finally:
            for p in reversed(procs):
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
    total = bl.stats_after(out)
    call = bl.stats_after(out, "call: ")
    app_cpu = (t1.children_user + t1.children_system - t0.children_user - t0.children_system)
    print(f"Native (host processes, no TCG; the relay is Python), {a.n} sequential hostinfo "
          "requests, Argon2id cost `test`" + (" — helper under callgrind" if a.callgrind else "")
          + (" — bridge under callgrind" if a.callgrind_bridge else "")
          + (" — app under callgrind" if a.callgrind_app else "") + ".\n")
    print("| process | CPU time per request |")
    print("|---|---|")
    for k in pids:
        print(f"| {k} | {(c1[k] - c0[k]) / a.n * 1e6:.0f} µs |")
    print(f"| vsbench-app (the app, incl. libvmstate) | {app_cpu / a.n * 1e6:.0f} µs |")
    print(f"| **round trip** | median {bl.fmt_us(total['median'])}, p99 "
          f"{bl.fmt_us(total['p99'])} |")
    print(f"| of which the D-Bus call (until the id returns) | median "
          f"{bl.fmt_us(call['median'])}, p99 {bl.fmt_us(call['p99'])} |")
    for tag in ("helper", "bridge", "app"):
        f = os.path.join(wd, f"cg.{tag}")
        if os.path.exists(f) and shutil.which("callgrind_annotate"):
            for incl in ("no", "yes"):
                ann = subprocess.run(["callgrind_annotate", f"--inclusive={incl}", f],
                                     capture_output=True, text=True).stdout.splitlines()
                rows = [ln[:150] for ln in ann if "(" in ln and ":" in ln
                        and ln.strip()[:1].isdigit() and "below main" not in ln][:40]
                what = "inclusive (with callees)" if incl == "yes" else "own instructions"
                print(f"\ncallgrind, {tag}: top functions, {what}\n\n```")
                print("\n".join(rows))
                print("```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
