"""Helpers for the I/O-error system tests and benchmark: the bridge as a child process,
a qemu-nbd server that can be killed and restarted, the bridge's io event socket.
Python 3 stdlib only; the VM harness is tests/guest/vmharness.py."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "guest"))
from vmharness import VM, VMError  # noqa: E402,F401


class Bridge:
    """vmstate-bridged with one [vm] section per VM; extra per-VM config lines in vm_conf."""

    def __init__(self, builddir, workdir, vms, vm_conf):
        self.exe = os.path.join(builddir, "host-bridge", "vmstate-bridged")
        self.workdir = workdir
        self.conf = os.path.join(workdir, "bridge.conf")
        self.db = os.path.join(workdir, "bridge.db")
        self.log_path = os.path.join(workdir, "bridge.log")
        self.events_sock = os.path.join(workdir, "io-events.sock")
        self.proc = None
        with open(self.conf, "w") as f:
            f.write(f"[bridge]\ndatabase = {self.db}\nlog_level = debug\n"
                    f"reconnect_min_ms = 50\nreconnect_max_ms = 500\nprivsep = no\n"
                    f"io_event_socket = {self.events_sock}\n")
            for name, vm in vms.items():
                f.write(f"\n[vm {name}]\nport_a = {vm.a_sock}\nport_b = {vm.b_sock}\n"
                        f"qmp = {vm.qmp_sock}\nnodes = disk0\nstate_dir = {vm.workdir}\n")
                f.write("".join(line + "\n" for line in vm_conf.get(name, [])))

    def start(self, vms=()):
        self.logf = open(self.log_path, "a")
        self.proc = subprocess.Popen([self.exe, "-c", self.conf], stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            log = self.log()
            if all(f"[{n}] qmp: connected" in log or f"{n}: qmp: connected" in log or
                   self._connected(log, n) for n in vms):
                break
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("bridge did not connect:\n" + log[-3000:])
            time.sleep(0.05)
        self.events = EventStream(self.events_sock)

    @staticmethod
    def _connected(log, name):
        return any(name in line and "qmp: connected" in line for line in log.splitlines())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except FileNotFoundError:
            return ""


class EventStream:
    """Reads the bridge's io event socket (JSON lines) in a thread."""

    def __init__(self, path, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.events, self.cond = [], threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        for line in self.sock.makefile("rb"):
            ev = json.loads(line)
            ev["_rx"] = time.time()
            with self.cond:
                self.events.append(ev)
                self.cond.notify_all()

    def wait(self, vm, kind, timeout=30, after=0.0):
        """The first event of `kind` for `vm` received at/after time.time() value `after`."""
        def find():
            for ev in self.events:
                if ev["vm"] == vm and ev["kind"] == kind and ev["_rx"] >= after:
                    return ev
            return None
        with self.cond:
            if not self.cond.wait_for(lambda: find() is not None, timeout):
                raise TimeoutError(f"no io event {kind} for {vm} within {timeout}s; got "
                                   f"{[(e['vm'], e['kind']) for e in self.events]}")
            return find()

    def of(self, vm, kind=None):
        with self.cond:
            return [e for e in self.events if e["vm"] == vm and (kind is None or e["kind"] == kind)]


class NBDServer:
    """qemu-nbd serving a raw file on a UNIX socket; kill() and start() by PID."""

    def __init__(self, image, sock):
        self.image, self.sock, self.proc = image, sock, None

    def start(self):
        if os.path.lexists(self.sock):
            os.unlink(self.sock)
        self.proc = subprocess.Popen(["qemu-nbd", "-f", "raw", "-k", self.sock, "--persistent",
                                      "--shared=8", "--cache=writethrough", self.image],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:  # healthy = accepting connections
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.sock)
                s.close()
                return time.time()
            except OSError:
                s.close()
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("qemu-nbd did not start")
                time.sleep(0.005)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def blockdev_args(self, node, dev_id):
        return ["-blockdev", f"driver=nbd,server.type=unix,server.path={self.sock},node-name={node}",
                "-device", f"virtio-blk-pci,drive={node},id={dev_id},werror=stop,rerror=stop"]


def blkdebug_args(path, node, dev_id, once, errno_=5):
    """A raw file behind blkdebug failing write_aio with errno_ (once or always)."""
    spec = {"driver": "raw", "node-name": node,
            "file": {"driver": "blkdebug",
                     "inject-error": [{"event": "write_aio", "errno": errno_, "once": once}],
                     "image": {"driver": "file", "filename": path}}}
    return ["-blockdev", json.dumps(spec),
            "-device", f"virtio-blk-pci,drive={node},id={dev_id},werror=stop,rerror=stop"]


def file_args(path, node, dev_id):
    return ["-blockdev", f"driver=file,filename={path},node-name={node}-file",
            "-blockdev", f"driver=raw,file={node}-file,node-name={node}",
            "-device", f"virtio-blk-pci,drive={node},id={dev_id},werror=stop,rerror=stop"]


def guest_dev(vm, sectors):
    """The guest block device (/dev/vdX) of the given size in 512-byte sectors."""
    out = vm.check("for d in /sys/block/vd*; do echo $d $(cat $d/size); done")
    for line in out.split("\n"):
        f = line.split()
        if len(f) == 2 and int(f[1]) == sectors:
            return "/dev/" + f[0].rsplit("/", 1)[1]
    raise VMError(f"no guest disk of {sectors} sectors: {out}")


def writer_script(dev, src, chunks, log, bs="64k", loop=False):
    """Guest shell: copy `chunks` blocks of `bs` from src to dev, one O_DIRECT dd per block;
    log FAIL/DONE. loop=True repeats until /tmp/stop exists."""
    body = (f"i=0; while [ $i -lt {chunks} ]; do "
            f"dd if={src} of={dev} bs={bs} count=1 skip=$i seek=$i oflag=direct 2>>{log}.err "
            f"|| {{ echo FAIL $i >>{log}; exit 1; }}; i=$((i+1)); done")
    if loop:
        return f"while [ ! -e /tmp/stop ]; do {body}; done; echo DONE >>{log}"
    return f"{body}; echo DONE >>{log}"
