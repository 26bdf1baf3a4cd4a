# SPDX-License-Identifier: GPL-2.0-or-later
"""vmstest.vm: boot the vmstate test guest in QEMU and drive it. Python 3 stdlib only.

    with VM(workdir, image_dir) as vm:
        vm.wait_ready()
        rc, out = vm.run("uname -a")
        vm.snapshot_save("s1"); vm.snapshot_load("s1")

Needs (Debian packages): python3 qemu-system-x86 qemu-utils; the image from
tests/guest/build-image.sh. See tests/guest/README.md for the agent protocol and the caveats
across restores. extra_args= appends QEMU arguments (disks, devices) to the command line.
"""
import atexit
import base64
import ctypes
import functools
import itertools
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

QEMU = os.environ.get("VMSTATE_QEMU", "qemu-system-x86_64")
QEMU_IMG = os.environ.get("VMSTATE_QEMU_IMG", "qemu-img")
CACHE = os.environ.get("VMSTATE_CACHE") or os.path.expanduser("~/.cache/vmstate")
PORT_A, PORT_B, PORT_T = "org.vmstate.request.0", "org.vmstate.event.0", "org.vmstate.test.0"


class VMError(Exception):
    """The VM, QEMU or the guest agent failed."""


class QMPError(VMError):
    def __init__(self, cmd, error):
        self.cmd, self.error = cmd, error
        super().__init__(f"QMP {cmd}: {error.get('class')}: {error.get('desc')}")


class AgentLost(VMError):
    """The guest was restored while a command was running: its answer will not come."""


def connect_unix(path, timeout=10, alive=lambda: True, interval=0.02):
    """A connected AF_UNIX stream socket; retries (VMError after timeout s, or at once when
    alive() turns false) while nobody listens there yet."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            if time.monotonic() > deadline or not alive():
                raise VMError(f"cannot connect to {path}")
            time.sleep(interval)


class LineReader:
    """A socket read line by line in a thread; subclasses handle lines under self.cond."""

    def __init__(self, sock):
        self.sock, self.cond, self.closed = sock, threading.Condition(), False
        self._send_lock = threading.Lock()

    def start_reader(self, name):
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self):
        try:
            for line in self.sock.makefile("rb"):
                with self.cond:
                    self.handle(line)
                    self.cond.notify_all()
        except (OSError, ValueError):  # ValueError: a line handle() cannot parse
            pass
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def send(self, data):
        with self._send_lock:
            try:
                self.sock.sendall(data)
            except OSError as e:
                raise VMError(f"cannot send (QEMU gone?): {e}") from None

    def wait_for(self, pred, timeout, what):
        """Wait (holding self.cond) until pred() is true; errors on timeout or EOF."""
        if not self.cond.wait_for(lambda: pred() or self.closed, timeout):
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        if not pred():
            raise VMError(f"connection closed (QEMU gone?) while waiting for {what}")

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class QMP(LineReader):
    """A QMP client: id-tagged commands; events kept apart in self.events."""

    def __init__(self, path, timeout=10, alive=lambda: True):
        super().__init__(connect_unix(path, timeout, alive))
        self.greeting, self.events, self._replies = None, [], {}
        self._ids = itertools.count(1)
        self.start_reader("qmp")
        with self.cond:
            self.wait_for(lambda: self.greeting, timeout, "the QMP greeting")
        self.cmd("qmp_capabilities")

    def handle(self, line):
        msg = json.loads(line)
        if "QMP" in msg:
            self.greeting = msg["QMP"]
        elif "event" in msg:
            self.events.append(msg)
        elif "id" in msg:
            self._replies[msg["id"]] = msg

    def cmd(self, name, _timeout=30, **args):
        mid = f"vmh-{next(self._ids)}"
        msg = {"execute": name, "id": mid}
        if args:
            msg["arguments"] = args
        self.send(json.dumps(msg).encode() + b"\n")
        with self.cond:
            self.wait_for(lambda: mid in self._replies, _timeout, f"the reply to {name}")
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise QMPError(name, reply["error"])
        return reply["return"]

    def wait_event(self, name, timeout=30, predicate=None):
        """Remove and return the oldest queued event NAME that satisfies predicate."""
        def find():
            for i, ev in enumerate(self.events):
                if ev["event"] == name and (predicate is None or predicate(ev)):
                    return i
            return None
        with self.cond:
            self.wait_for(lambda: find() is not None, timeout, f"event {name}")
            return self.events.pop(find())


class Agent(LineReader):
    """Client of the guest agent (guest-agent.sh) on the test port."""

    def __init__(self, path, timeout=10, alive=lambda: True):
        super().__init__(connect_unix(path, timeout, alive))
        self.hellos, self.ignored = [], []  # agent (re)starts; answers nobody waited for
        self.last_heard = None  # monotonic time of the last hello or answer
        self._prefix = f"{os.getpid():x}{int(time.time() * 1000) % 0xFFFFFF:x}"
        self._ids = itertools.count(1)
        self._pending, self._results, self._epoch = set(), {}, 0
        self._cur, self._lines = None, []
        self.start_reader("agent")

    def handle(self, line):
        line = line.rstrip(b"\r\n")
        at = line.rfind(b"@@")
        if at < 0:  # a base64 line of the current answer
            if self._cur is not None:
                self._lines.append(line)
            return
        f = line[at:].decode("ascii", "replace").split()
        if f[0] == "@@H" and len(f) == 3 and f[1].isdigit():
            self.hellos.append((int(f[1]), f[2], time.monotonic()))
            self.last_heard = time.monotonic()
        elif f[0] == "@@B" and len(f) == 2:
            self._cur, self._lines = f[1], []
        elif f[0] == "@@E" and len(f) == 4 and f[1] == self._cur and f[2].isdigit() and f[3].isdigit():
            self._cur, self.last_heard = None, time.monotonic()
            try:
                data = base64.b64decode(b"".join(self._lines), validate=True)
            except ValueError:
                data = None
            if data is None or len(data) != int(f[3]):
                self.ignored.append((f[1], "damaged"))
            elif f[1] in self._pending:
                self._results[f[1]] = (int(f[2]), data)
            else:
                self.ignored.append((f[1], "unexpected"))
        else:  # a damaged line: drop the answer being collected
            self._cur = None

    def restored(self):
        """The guest was restored: commands in flight now will never be answered."""
        with self.cond:
            self._epoch += 1
            self.cond.notify_all()

    def exec(self, script, timeout=30, wait=None, input=None):
        """Run a shell script in the guest: (rc, output bytes); `input` (bytes) is its stdin.
        The guest kills it after `timeout` s (rc 137); the host waits `wait` s (default:
        timeout + 10)."""
        cid = f"{self._prefix}-{next(self._ids)}"
        payload = base64.b64encode((script or ":").encode()).decode()
        with self.cond:
            self._pending.add(cid)
            epoch = self._epoch
        try:
            line = f"\n@@C {cid} {math.ceil(timeout) if timeout else 0} {payload} {len(payload)}"
            self.send(f"{line} {len(input)}\n".encode() + input if input else f"{line}\n".encode())
            if wait is None:
                wait = (timeout or 3600) + 10
            with self.cond:
                self.wait_for(lambda: cid in self._results or self._epoch != epoch, wait,
                              f"guest command {cid} {script[:60]!r}")
                if cid not in self._results:
                    raise AgentLost(f"guest restored while {script[:60]!r} ran; no answer")
                return self._results.pop(cid)
        finally:
            with self.cond:
                self._pending.discard(cid)
                self._results.pop(cid, None)


# ---- process hygiene: QEMU never outlives us ---------------------------------------------
_live = set()
_libc = ctypes.CDLL(None, use_errno=True)
_cleanups = []  # more things to end with the VMs (bridges, servers): callables
_prev_handlers = {}


def _kill_all():
    for cleanup in list(_cleanups):
        cleanup()
    for vm in list(_live):
        vm.kill()


def _on_signal(signum, frame):
    _kill_all()
    prev = _prev_handlers.get(signum)
    if callable(prev):
        return prev(signum, frame)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _install_handlers():
    if _prev_handlers or threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        _prev_handlers[sig] = signal.signal(sig, _on_signal)


atexit.register(_kill_all)


def on_exit(cleanup):
    """Call cleanup() on exit, on SIGINT/SIGTERM, before the VMs are killed (a bridge
    stops before its QEMU). Also installs the signal handlers."""
    _install_handlers()
    _cleanups.append(cleanup)


def child_setup():
    """preexec_fn for helper processes: PR_SET_PDEATHSIG, they die with the thread that
    started them (QEMU, the bridge, qemu-nbd never outlive the test)."""
    _libc.prctl(1, signal.SIGKILL)


# ---- accelerator and device probes --------------------------------------------------------
def _which(prog, package):
    path = shutil.which(prog)
    if not path:
        raise VMError(f"{prog} not found: apt-get install {package}")
    return path


_vmgenid = {}


def _has_vmgenid():
    if QEMU not in _vmgenid:
        out = subprocess.run([QEMU, "-device", "help"], capture_output=True, text=True).stdout
        _vmgenid[QEMU] = re.search(r'name "vmgenid"', out) is not None
    return _vmgenid[QEMU]


def choose_accel(image_dir, accel=None):
    """'tcg' or 'kvm'. Auto ($VMSTATE_ACCEL unset or 'auto') uses KVM only when a probe
    boot with it worked; the probe's result is cached per host kernel and QEMU binary."""
    accel = accel or os.environ.get("VMSTATE_ACCEL", "auto")
    if accel != "auto":
        return accel
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    qemu = _which(QEMU, "qemu-system-x86")
    key = f"{os.uname().release} {qemu} {os.stat(qemu).st_mtime_ns}"
    path = os.path.join(CACHE, "kvm-probe.json")
    try:
        with open(path) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        VM("/nonexistent", image_dir)  # a missing image raises here, not as "KVM failed"
        ok = False
        try:
            with tempfile.TemporaryDirectory(prefix="vmh-kvm-") as d:
                with VM(d, image_dir, accel="kvm", ports=False) as vm:
                    vm.wait_ready(timeout=10)  # a working KVM boots in ~1 s
                    ok = vm.run("echo ok", timeout=10) == (0, "ok\n")
        except (VMError, TimeoutError, OSError):
            ok = False
        cache[key] = "kvm" if ok else "tcg"
        os.makedirs(CACHE, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(cache, f, indent=1)
        os.replace(path + ".tmp", path)
    return cache[key]


# ---- the VM -------------------------------------------------------------------------------
class VM:
    """One QEMU guest. Socket paths: qmp_sock (reserved for host-bridge), qmp_test_sock (this
    harness), a_sock (port A, org.vmstate.request.0), b_sock (port B, org.vmstate.event.0),
    t_sock (the test agent); console_path, disk_path."""

    def __init__(self, workdir, image_dir, mem="128M", extra_args=(), ports=True, append="",
                 accel=None, smp=1, disk=None, disk_size="64M", paused=False, vser_opts=""):
        self.workdir, self.image_dir = os.path.abspath(workdir), os.path.abspath(image_dir)
        try:
            with open(os.path.join(self.image_dir, "image.json")) as f:
                self.image = json.load(f)
        except OSError as e:
            raise VMError(f"no guest image in {image_dir} (run build-image.sh): {e}") from None
        self.mem, self.extra_args, self.ports, self.append = mem, list(extra_args), ports, append
        self.accel, self.smp, self.paused, self.disk_size = accel, smp, paused, disk_size
        self.vser_opts = vser_opts  # e.g. "ioeventfd=off", as the bridge's managed VMs have
        p = functools.partial(os.path.join, self.workdir)
        self.qmp_sock, self.qmp_test_sock = p("qmp.sock"), p("qmp-test.sock")
        self.a_sock, self.b_sock, self.t_sock = p("a.sock"), p("b.sock"), p("t.sock")
        self.console_path, self.qemu_log_path = p("console.log"), p("qemu.log")
        self.disk_path = os.path.abspath(disk) if disk else p("disk.qcow2")
        self._fresh_disk = not disk
        self.proc = self._qmp = self.agent = None
        self.boot_time = None
        self._jobs, self._t_cont = itertools.count(1), None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def _argv(self, accel):
        def esc(path):  # QEMU option values double their commas
            return path.replace(",", ",,")

        def chardev(cid, path):
            return ["-chardev", f"socket,id={cid},path={esc(path)},server=on,wait=off"]

        def port(cid, pid, name):
            return ["-device", f"virtserialport,bus=vser0.0,chardev={cid},id={pid},name={name}"]

        nports = 3 if self.ports else 1
        # TCG: offer RDRAND so the guest's crng is ready at once (else getrandom() and
        # /dev/urandom users such as dbus-daemon wait ~1 s at boot).
        cpu = ["-cpu", "qemu64,+rdrand"] if accel == "tcg" else []
        argv = [QEMU, "-accel", accel, *cpu, "-m", self.mem, "-smp", str(self.smp), "-nodefaults",
                "-no-user-config", "-display", "none", "-no-reboot", "-S",
                "-kernel", os.path.join(self.image_dir, self.image["kernel"]),
                "-initrd", os.path.join(self.image_dir, self.image["initrd"]),
                "-append", f"{self.image['append']} vmstate.ports={nports} {self.append}".strip(),
                "-chardev", f"file,id=ser0,path={esc(self.console_path)},append=on",
                "-serial", "chardev:ser0"]
        argv += chardev("qmp0", self.qmp_sock) + ["-mon", "chardev=qmp0,mode=control"]
        argv += chardev("qmp1", self.qmp_test_sock) + ["-mon", "chardev=qmp1,mode=control"]
        argv += ["-device", ",".join(filter(None, ["virtio-serial-pci,id=vser0", self.vser_opts]))]
        if self.ports:
            argv += chardev("cha", self.a_sock) + port("cha", "porta", PORT_A)
            argv += chardev("chb", self.b_sock) + port("chb", "portb", PORT_B)
        argv += chardev("cht", self.t_sock) + port("cht", "portt", PORT_T)
        argv += ["-blockdev", f"driver=file,filename={esc(self.disk_path)},node-name=file0",
                 "-blockdev", "driver=qcow2,file=file0,node-name=disk0",
                 "-device", "virtio-blk-pci,drive=disk0,id=vblk0,werror=stop,rerror=stop"]
        if _has_vmgenid():
            argv += ["-device", "vmgenid,id=vmgenid0"]
        return argv + self.extra_args

    def start(self):
        """Start QEMU. After kill() or stop(), start() again boots the same disk (its
        snapshots kept) and appends to console.log: a restart of the VM."""
        os.makedirs(self.workdir, exist_ok=True)
        if len(self.qmp_test_sock.encode()) > 107:
            raise VMError(f"workdir {self.workdir} too long for unix socket paths (max ~90 chars)")
        for s in (self.qmp_sock, self.qmp_test_sock, self.a_sock, self.b_sock, self.t_sock):
            if os.path.lexists(s):
                os.unlink(s)
        _which(QEMU, "qemu-system-x86")
        if self._fresh_disk or not os.path.exists(self.disk_path):
            qemu_img = _which(QEMU_IMG, "qemu-utils")
            subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", self.disk_path, self.disk_size],
                           check=True)
            open(self.console_path, "wb").close()
        self._fresh_disk, self.boot_time, self._t_cont = False, None, None
        accel = choose_accel(self.image_dir, self.accel)
        _install_handlers()
        with open(self.qemu_log_path, "wb") as log:
            self.proc = subprocess.Popen(self._argv(accel), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, preexec_fn=child_setup)
        _live.add(self)
        try:
            def alive():
                return self.proc.poll() is None
            self._qmp = QMP(self.qmp_test_sock, alive=alive)
            self.agent = Agent(self.t_sock, alive=alive)
            if not self.paused:
                self.cont()
        except Exception as e:
            self.kill()
            raise VMError(f"QEMU failed to start: {e}\n{self.qemu_log()}") from e
        except BaseException:
            self.kill()
            raise

    def cont(self):
        self._t_cont = time.monotonic()
        self.qmp("cont")

    def stop(self, timeout=3):
        """Quit QEMU (QMP quit, then SIGKILL by PID after `timeout` s)."""
        if self.proc and self.proc.poll() is None and self._qmp and not self._qmp.closed:
            try:
                self._qmp.cmd("quit", _timeout=timeout)
                self.proc.wait(timeout)
            except (VMError, OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def kill(self):
        """SIGKILL QEMU (an unclean exit) and close our connections."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait()
        for conn in (self._qmp, self.agent):
            if conn:
                conn.close()
        _live.discard(self)

    # ---- QMP ----
    def qmp(self, cmd, _timeout=30, **args):
        """Run a QMP command on qmp-test.sock; args with dashes: **{"job-id": ...}."""
        return self._qmp.cmd(cmd, _timeout, **args)

    def wait_event(self, name, timeout=30, predicate=None):
        return self._qmp.wait_event(name, timeout, predicate)

    @property
    def events(self):
        """Events received and not yet consumed by wait_event (a copy)."""
        with self._qmp.cond:
            return list(self._qmp.events)

    def clear_events(self):
        with self._qmp.cond:
            self._qmp.events.clear()

    def _job(self, cmd, timeout, **args):
        job = f"vmh-{cmd}-{next(self._jobs)}"
        t0 = time.monotonic()
        self.qmp(cmd, **{"job-id": job}, **args)
        self.wait_event("JOB_STATUS_CHANGE", timeout,
                        lambda e: e["data"]["id"] == job and e["data"]["status"] == "concluded")
        elapsed = time.monotonic() - t0
        err = [j.get("error") for j in self.qmp("query-jobs") if j["id"] == job]
        self.qmp("job-dismiss", id=job)
        with self._qmp.cond:
            self._qmp.events[:] = [e for e in self._qmp.events if not (
                e["event"] == "JOB_STATUS_CHANGE" and e["data"]["id"] == job)]
        if err and err[0]:
            raise VMError(f"{cmd} {args.get('tag')}: {err[0]}")
        return elapsed

    def snapshot_save(self, tag, timeout=120):
        """Save RAM + disk as internal qcow2 snapshot TAG; returns the seconds it took."""
        return self._job("snapshot-save", timeout, tag=tag, vmstate="disk0", devices=["disk0"])

    def snapshot_load(self, tag, timeout=120):
        """Load snapshot TAG; commands in flight get AgentLost. Returns the seconds it took."""
        try:
            return self._job("snapshot-load", timeout, tag=tag, vmstate="disk0", devices=["disk0"])
        finally:
            self.agent.restored()

    def snapshot_delete(self, tag, timeout=60):
        return self._job("snapshot-delete", timeout, tag=tag, devices=["disk0"])

    # ---- guest ----
    def wait_ready(self, timeout=60):
        """Wait until the guest agent answers; sets self.boot_time (s from cont to the
        agent's first word). Pings sent before the agent opened its port may be lost."""
        deadline = time.monotonic() + timeout
        while self.agent.last_heard is None:
            try:
                self.agent.exec("true", timeout=5, wait=1)
            except (TimeoutError, AgentLost):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise VMError(f"guest agent not ready after {timeout}s\n--- console:\n"
                                  f"{self.console_log()[-3000:]}\n--- qemu:\n{self.qemu_log()}") from None
        if self._t_cont is not None and self.boot_time is None:
            self.boot_time = max(0.0, self.agent.last_heard - self._t_cont)
        self.agent.exec("true", timeout=10)  # answers in order: the agent is now idle
        return self.boot_time

    def _exec(self, script, timeout, **kw):
        if self.agent.last_heard is None:  # never talk to an agent that may not listen yet
            self.wait_ready()
        return self.agent.exec(script, timeout, **kw)

    def run(self, cmd, timeout=30):
        """Run a shell command in the guest: (rc, output text; stdout and stderr merged)."""
        rc, out = self._exec(cmd, timeout)
        return rc, out.decode("utf-8", "replace")

    def check(self, cmd, timeout=30):
        """run() that raises VMError unless rc is 0; returns the output."""
        rc, out = self.run(cmd, timeout)
        if rc != 0:
            raise VMError(f"guest command {cmd!r} exited {rc}: {out}")
        return out

    def port_device(self, name):
        """The guest device of the virtio-serial port named name, e.g. /dev/vport0p1."""
        out = self.check(f"grep -l -x {shlex.quote(name)} /sys/class/virtio-ports/*/name")
        return "/dev/" + out.split()[0].split("/")[-2]

    def spawn(self, cmd, log="/dev/null"):
        """Start cmd in the background in its own session, output to guest file log; pid."""
        script = f"setsid sh -c {shlex.quote(cmd)} >{shlex.quote(log)} 2>&1 </dev/null & echo $!"
        return int(self.check(script).strip())

    def read_file(self, path, timeout=30):
        rc, out = self._exec(f"cat -- {shlex.quote(path)}", timeout)
        if rc != 0:
            raise VMError(f"read_file {path}: {out.decode(errors='replace').strip()}")
        return out

    def write_file(self, path, data, mode=None, timeout=60):
        """Write bytes (or str, as UTF-8) to a guest file; mode e.g. 0o755."""
        if isinstance(data, str):
            data = data.encode()
        script = f"cat >{shlex.quote(path)}"
        if mode is not None:
            script += f" && chmod {mode:o} {shlex.quote(path)}"
        rc, out = self._exec(script, timeout, input=data)
        if rc != 0:
            raise VMError(f"write_file {path}: {out.decode(errors='replace').strip()}")

    # ---- logs ----
    def console_log(self):
        try:
            with open(self.console_path, "rb") as f:
                return f.read().decode("utf-8", "replace").replace("\r\n", "\n")
        except FileNotFoundError:
            return ""

    def wait_console(self, pattern, timeout=30):
        """Wait until regex pattern matches the console text; returns the match."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.console_log(), re.M)
            if m or time.monotonic() > deadline:
                if not m:
                    raise TimeoutError(f"console did not show {pattern!r} within {timeout}s")
                return m
            time.sleep(0.05)

    def snapshots(self):
        """QEMU's `info snapshots` table (text)."""
        return self.qmp("human-monitor-command", **{"command-line": "info snapshots"})

    def qemu_log(self):
        return read_log(self.qemu_log_path)


def read_log(path):
    """The text of a log file ("" while it does not exist)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""

