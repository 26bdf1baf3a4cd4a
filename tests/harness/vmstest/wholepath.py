# SPDX-License-Identifier: GPL-2.0-or-later
"""vmstest.wholepath: the whole vmstate path on one real VM — a vmstest VM, vmstate-bridged
with a generated config and a principal, the guest's vmstate-helperd connected to it.

    with WholePath(image, builddir) as wp:
        app = App(wp, "a1", "org.example.A")
        rid = app.request("save label=x")

Layout of a work directory: vm/ (the VM: sockets, disk.qcow2, console.log, qemu.log),
bridge.conf, bridge.db, bridge.log. The principal's secret goes to vmstate-admin on stdin
and into the guest as /root/vmstate-secret (mode 0600) through the agent, never on argv.
Everything (QEMU, the bridge) is stopped on exit, on Ctrl-C/SIGTERM and on failure.
tests/system/wholepath.py runs one by hand.
"""
import argparse
import re
import secrets
import shlex
import os
import tempfile
import time

from .bridge import Bridge
from .checks import field
from . import make_vm
from .vm import AgentLost, VMError


class WholePath:
    """One VM named vm1, the bridge, principal `app` with every right on vm1; the guest's
    helper connected to the bridge. Context manager."""

    PRINCIPAL = "app"
    APP_BIN = "/usr/bin/vmstate-testapp"

    def __init__(self, image, builddir, workdir=None, mem="128M", append="", vm_options=None,
                 cost="test", log=None, extra_args=(), backend=None, **bridge_kw):
        """vm_options: INI keys of [vm vm1] (over job_timeout = 120); backend: qmp or libvirt
        (default: vmstest.BACKEND); bridge_kw: more vmstest.Bridge arguments
        (bridge_options, sections, valgrind...)."""
        self.workdir = workdir or tempfile.mkdtemp(prefix="vmswp-")
        os.makedirs(self.workdir, exist_ok=True)
        self.image, self.builddir, self.cost = image, builddir, cost
        self.vm = make_vm(os.path.join(self.workdir, "vm"), image, builddir, backend, mem=mem,
                          append=append, extra_args=extra_args)
        self.bridge = Bridge(builddir, self.workdir, {"vm1": self.vm},
                             vm_options={"job_timeout": 120, **(vm_options or {})}, **bridge_kw)
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
        self.bridge.add_principal(self.PRINCIPAL, self.secret, {"vm1": ["all"]}, self.cost)
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


def main():
    """The CLI of tests/system/wholepath.py: boot a VM and the bridge, wait for Ctrl-C."""
    ap = argparse.ArgumentParser(description="boot one VM and vmstate-bridged, wait for Ctrl-C")
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
