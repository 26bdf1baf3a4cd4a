#!/usr/bin/env python3
"""The whole vmstate path on one real VM: QEMU guest (tests/guest harness) + vmstate-bridged.

    python3 tests/system/wholepath.py --image DIR --builddir BUILDDIR [--workdir DIR]

boots a VM, starts the bridge with a generated config and principal, and waits (Ctrl-C ends
it) — for poking at it by hand. The demo (demo.py) and the system tests (test-wholepath.py)
use the classes below.

Layout of a work directory: vm/ (the harness: sockets, disk.qcow2, console.log, qemu.log),
bridge.conf, bridge.db, bridge.log. The principal's secret goes to vmstate-admin on stdin
and into the guest as /root/vmstate-secret (mode 0600) through the agent, never on argv.
Everything (QEMU, the bridge) is stopped on exit, on Ctrl-C/SIGTERM and on failure: QEMU
and the bridge get PR_SET_PDEATHSIG, the harness's handlers and atexit kill QEMU, and
WholePath is a context manager.
"""
import argparse
import atexit
import ctypes
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "guest"))
sys.path.insert(0, os.path.join(HERE, "..", "libvirt"))
from vmharness import VM, AgentLost, VMError  # noqa: E402,F401

# The hypervisor interface the suites run on: qmp (QEMU run by the harness) or libvirt (a
# domain on the private libvirtd of tests/libvirt/run-suite.sh, $LV_URI).
BACKEND = os.environ.get("VMSTATE_TEST_BACKEND", "qmp")


def make_vm(workdir, image, builddir, **kw):
    """The harness VM for BACKEND."""
    if BACKEND == "libvirt":
        from lvvm import LibvirtVM
        return LibvirtVM(workdir, image, builddir, **kw)
    return VM(workdir, image, **kw)

_libc = ctypes.CDLL(None, use_errno=True)
_bridges = set()


def _pdeathsig():
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@atexit.register
def _kill_bridges():
    for b in list(_bridges):
        b.kill9()


class Bridge:
    """vmstate-bridged as a child process; config, database and log in workdir."""

    def __init__(self, builddir, workdir, vms, vm_options=""):
        self.exe = os.path.join(builddir, "host-bridge", "vmstate-bridged")
        self.admin_exe = os.path.join(builddir, "host-bridge", "vmstate-admin")
        self.conf = os.path.join(workdir, "bridge.conf")
        self.db = os.path.join(workdir, "bridge.db")
        self.log_path = os.path.join(workdir, "bridge.log")
        self.proc = None
        with open(self.conf, "w") as f:
            f.write(f"[bridge]\ndatabase = {self.db}\nlog_level = debug\n"
                    "reconnect_min_ms = 50\nreconnect_max_ms = 500\n")
            for name, vm in vms.items():
                if getattr(vm, "backend", "qmp") == "libvirt":  # ports from the domain XML
                    f.write(f"\n[vm {name}]\nbackend = libvirt\nuri = {vm.uri}\n"
                            f"domain = {vm.domain}\n")
                else:
                    f.write(f"\n[vm {name}]\nport_a = {vm.a_sock}\nport_b = {vm.b_sock}\n"
                            f"qmp = {vm.qmp_sock}\nnodes = disk0\n")
                f.write(f"state_dir = {vm.workdir}\njob_timeout = 120\n{vm_options}")

    def admin(self, *args, secret=None):
        r = subprocess.run([self.admin_exe, "-c", self.conf, *args], input=secret, text=True,
                           capture_output=True, timeout=60)
        if r.returncode != 0:
            raise VMError(f"vmstate-admin {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def start(self):
        argv = [self.exe, "-c", self.conf]
        if os.environ.get("WHOLEPATH_VALGRIND"):  # errors make the SIGTERM exit status 99
            argv = ["valgrind", "--error-exitcode=99", "--leak-check=full",
                    "--errors-for-leak-kinds=definite", f"--log-file={self.log_path}.vg.%p"] + argv
        self.logf = open(self.log_path, "a")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=subprocess.STDOUT,
                                     preexec_fn=_pdeathsig)
        _bridges.add(self)
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        _bridges.discard(self)

    def stop(self):
        """SIGTERM; returns the exit status (None if it never ran)."""
        _bridges.discard(self)
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def table(self, what, vm="vm1"):
        """vmstate-admin states|requests|events VM, as lists of tab-separated fields."""
        return [line.split("\t") for line in self.admin(what, vm).splitlines() if line.strip()]


class QmpHoldProxy:
    """Sits between the bridge and QEMU's QMP socket (qmp.sock is renamed aside while it
    runs) and forwards both ways until the bridge sends a command matching HOLD_ON; from
    then on nothing more reaches the bridge. So a test can let QEMU start a job and know,
    without racing the clock, that the bridge never saw it end. Context manager; on exit
    the real socket is back at its path."""

    def __init__(self, sock_path, hold_on):
        self.path, self.real = sock_path, sock_path + ".real"
        self.pattern = re.compile(hold_on)
        self.held = threading.Event()
        self.match = None
        os.rename(self.path, self.real)  # QEMU's listener follows the inode, not the name
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(4)
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.real)
            self.conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False),
                             daemon=True).start()

    def _pump(self, src, dst, from_bridge):
        buf = b""
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                return
            if from_bridge and not self.held.is_set():
                buf = (buf + data)[-65536:]
                m = self.pattern.search(buf)
                if m:
                    self.match = m
                    self.held.set()  # before QEMU can answer: the bridge sees nothing more
            elif not from_bridge and self.held.is_set():
                continue
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread
        except OSError:
            pass
        self.listener.close()
        for c in self.conns:
            try:  # shutdown first: a close() does not end another thread's blocked recv()
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        os.unlink(self.path)
        os.rename(self.real, self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class WholePath:
    """One VM named vm1, the bridge, principal `app` with every right on vm1; the guest's
    helper connected to the bridge. Context manager."""

    PRINCIPAL = "app"
    APP_BIN = "/usr/bin/vmstate-testapp"

    def __init__(self, image, builddir, workdir=None, mem="128M", append="", vm_options="",
                 cost="test", log=None, extra_args=()):
        self.workdir = workdir or tempfile.mkdtemp(prefix="vmswp-")
        os.makedirs(self.workdir, exist_ok=True)
        self.image, self.builddir, self.cost = image, builddir, cost
        self.vm = make_vm(os.path.join(self.workdir, "vm"), image, builddir, mem=mem,
                          append=append, extra_args=extra_args)
        self.bridge = Bridge(builddir, self.workdir, {"vm1": self.vm}, vm_options)
        self.secret = secrets.token_urlsafe(24)
        self.log = log or (lambda *a: None)
        self.boot_s = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self, helper=True):
        t0 = time.monotonic()
        self.vm.start()
        self.boot_s = self.vm.wait_ready(120)
        self.log(f"VM booted in {time.monotonic() - t0:.1f} s")
        self.bridge.admin("principal-add", self.PRINCIPAL, "--cost", self.cost,
                          secret=self.secret + "\n")
        self.bridge.admin("grant", self.PRINCIPAL, "vm1", "all")
        self.vm.write_file("/root/vmstate-secret", self.secret + "\n", mode=0o600)
        self.bridge.start()
        if helper:
            self.wait_connected()

    def stop(self):
        rc = self.bridge.stop()
        try:
            self.vm.stop()
        except Exception:  # noqa: BLE001
            self.vm.kill()
        return rc

    # ---- guest helpers ------------------------------------------------------------------
    def env(self, principal=None, secret_file="/root/vmstate-secret"):
        """Shell prefix that puts the credentials in the environment (read from a file in the
        guest: the secret never appears on a command line)."""
        return (f"VMSTATE_PRINCIPAL={principal or self.PRINCIPAL} "
                f"VMSTATE_SECRET=$(cat {secret_file}) ")

    def sh(self, cmd, timeout=60):
        """Run cmd in the guest; retries while the guest is restored under the command."""
        for _ in range(5):
            try:
                return self.vm.run(cmd, timeout=timeout)
            except AgentLost:
                time.sleep(0.2)
        raise VMError(f"guest agent lost 5 times running {cmd!r}")

    def query(self, cmd, timeout=20, wait=5, tries=10):
        """Run a command without side effects: (rc, text). A restore by the bridge can swallow
        a command in flight (the restored agent never received it, and the harness cannot
        know), so wait briefly and ask again."""
        for _ in range(tries):
            try:
                rc, out = self.vm.agent.exec(cmd, timeout=timeout, wait=wait)
                return rc, out.decode("utf-8", "replace")
            except (TimeoutError, AgentLost):
                continue
        raise VMError(f"no answer to {cmd!r} in {tries} tries")

    def read(self, path):
        rc, out = self.query(f"cat {shlex.quote(path)} 2>/dev/null")
        return out if rc == 0 else ""

    def wait_for(self, path, pattern, timeout=60, count=1):
        """Wait until guest file `path` has `count` lines matching regex; the matches."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            text = self.read(path)
            found = [m.group(0) for m in rx.finditer(text)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise VMError(f"timed out ({timeout} s) waiting for /{pattern}/ x{count} in "
                              f"{path}:\n{text[-2500:]}")
            time.sleep(0.2)

    def helper_property(self, name):
        rc, out = self.query("dbus-send --system --print-reply --dest=org.vmstate.Helper1 "
                          "/org/vmstate/Helper1 org.freedesktop.DBus.Properties.Get "
                          f"string:org.vmstate.Helper1 string:{name}")
        return out if rc == 0 else None

    def wait_connected(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.helper_property("BridgeConnected")
            if out and "boolean true" in out:
                return
            time.sleep(0.3)
        raise VMError("the guest helper did not report BridgeConnected within "
                      f"{timeout} s:\n{self.read('/var/log/vmstate-helperd.log')[-2000:]}\n"
                      f"--- bridge log ---\n{self.bridge.log()[-2000:]}")

    def epoch(self):
        out = self.helper_property("Epoch") or ""
        m = re.search(r"uint64 (\d+)", out)
        return int(m.group(1)) if m else None

    def helper_pid(self):
        rc, out = self.query("pidof vmstate-helperd")
        return [int(p) for p in out.split()] if rc == 0 else []

    def restart_helper(self, sig="KILL"):
        self.sh(f"kill -{sig} $(pidof vmstate-helperd) 2>/dev/null; "
                "while pidof vmstate-helperd >/dev/null; do sleep 0.05; done; "
                "/etc/vmstate/init.d/50-vmstate-helper")


class App:
    """vmstate-testapp in the guest: log /tmp/NAME.log, commands through FIFO /tmp/NAME.in."""

    def __init__(self, wp, name, app_id, principal=None, secret_file="/root/vmstate-secret"):
        self.wp, self.name, self.app_id = wp, name, app_id
        self.log_path, self.fifo = f"/tmp/{name}.log", f"/tmp/{name}.in"
        wp.sh(f"rm -f {self.log_path} {self.fifo}; mkfifo {self.fifo}")
        self.pid = wp.vm.spawn(f"{wp.env(principal, secret_file)}exec {wp.APP_BIN} -a {app_id} "
                               f"-l {self.log_path} -c {self.fifo}", f"/tmp/{name}.out")
        wp.wait_for(self.log_path, r"^(READY|FATAL).*$", 30)
        if "FATAL" in self.log():
            raise VMError(f"{name}: {self.log()}")

    def cmd(self, line, background=False):
        """Send a command; background: the agent returns before the app reads it (use when
        the command may restore the guest under the agent)."""
        q = shlex.quote(line + "\n")
        if background:
            self.wp.sh(f"(sleep 0.3; printf %s {q} > {self.fifo}) >/dev/null 2>&1 &")
        else:
            self.wp.sh(f"printf %s {q} > {self.fifo}")

    def log(self):
        return self.wp.read(self.log_path)

    def request(self, line, timeout=30):
        """Send a request command and return its request id (or raise with the refusal)."""
        n = len(re.findall(r"^(SENT|REFUSED) ", self.log(), re.M))
        self.cmd(line)
        lines = self.wp.wait_for(self.log_path, r"^(SENT|REFUSED) .*$", timeout, n + 1)
        if lines[n].startswith("REFUSED"):
            raise VMError(f"{self.name}: {lines[n]}")
        return field(lines[n], "id")

    def events(self, rid=None, op=None):
        out = []
        for line in re.findall(r"^EVENT .*$", self.log(), re.M):
            if (rid is None or field(line, "id") == rid) and (op is None or field(line, "op") == op):
                out.append(line)
        return out

    def wait_event(self, rid=None, op=None, timeout=60, count=1):
        deadline = time.monotonic() + timeout
        while True:
            evs = self.events(rid, op)
            if len(evs) >= count:
                return evs[count - 1]
            if time.monotonic() > deadline:
                raise VMError(f"{self.name}: no event id={rid} op={op} within {timeout} s:\n"
                              f"{self.log()[-2500:]}")
            time.sleep(0.2)


def field(line, name):
    m = re.search(rf"(?:^|\s){name}=(\S*)", line)
    return m.group(1) if m else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--builddir", required=True)
    ap.add_argument("--workdir")
    a = ap.parse_args()
    wp = WholePath(a.image, a.builddir, a.workdir, log=print)
    try:
        wp.start()
        print(f"workdir {wp.workdir}: bridge.log, vm/console.log; principal {wp.PRINCIPAL}, "
              "secret in the guest at /root/vmstate-secret; Ctrl-C stops everything")
        while wp.bridge.alive() and wp.vm.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        print("interrupted")
    finally:
        wp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
