# SPDX-License-Identifier: GPL-2.0-or-later
"""vmstest.bridge: vmstate-bridged as a child process of a test, with its config file,
database and log in a work directory; vmstate-admin on the same config; the bridge's io
event socket.

    b = Bridge(builddir, workdir, {"vm1": vm},
               vm_options={"job_timeout": 120},                 # every [vm NAME] section
               per_vm={"vm1": {"clock_sync": "yes"}},            # one VM's section
               bridge_options={"privsep": "no"},                 # the [bridge] section
               sections={"managed m1": {"image": "/x.qcow2"}})   # any further section
    b.add_principal("app", "s3cret", {"vm1": ["all"]})   # vmstate-admin, secret on stdin
    b.start()
    ...
    b.per_vm["vm1"]["clock_sync"] = "no"; b.restart()   # config rewritten, same database

Options are dicts of INI keys (str(value) is written; None leaves a key out); each section
starts with the keys the suites always need (database, log level, reconnect timing; the
VM's sockets, nodes = disk0 and state_dir) and then the given ones, which override them.
write_config() writes the file again from the dicts: change them, then restart().

host=H (a vmstest.cluster.Host) runs the bridge and vmstate-admin inside that cluster host
(its network namespace and private /run): the QEMUs the bridge starts are there too.

valgrind=True (or $WHOLEPATH_VALGRIND / $VMSTATE_BRIDGE_VALGRIND set) runs the bridge under
valgrind: errors and definite leaks make its SIGTERM exit status 99; the reports go to
bridge.log.vg.PID (valgrind_summary()). The bridge dies with the test (PR_SET_PDEATHSIG)
and is SIGKILLed on exit or Ctrl-C, before the VMs.
"""
import json
import os
import signal
import subprocess
import time

from .vm import LineReader, VMError, child_setup, connect_unix, on_exit, read_log


class BridgeError(VMError):
    """vmstate-bridged or vmstate-admin failed."""


_bridges = set()


def _kill_bridges():
    for b in list(_bridges):
        b.kill9()


on_exit(_kill_bridges)


def proc_status(pid):
    """/proc/PID/status as {key: [words]}."""
    with open(f"/proc/{int(pid)}/status") as f:
        return {k: v.split() for k, v in (line.split(":", 1) for line in f if ":" in line)}


def rss_kib(pid):
    """Resident set size of a host process, KiB."""
    return int(proc_status(pid)["VmRSS"][0])


class Bridge:
    """One vmstate-bridged serving the VMs of `vms` ({name: vmstest.VM})."""

    def __init__(self, builddir, workdir, vms, vm_options=None, per_vm=None,
                 bridge_options=None, sections=None, valgrind=None, log_level="debug",
                 fresh_db=False, host=None):
        b = os.path.abspath(builddir)
        # a vmstest.cluster.Host: the bridge (and the QEMUs it starts) run in that host's
        # network namespace with its private /run, next to its corosync; None: here
        self.host = host
        self.exe = os.path.join(b, "host-bridge", "vmstate-bridged")
        self.admin_exe = os.path.join(b, "host-bridge", "vmstate-admin")
        self.workdir, self.vms = os.path.abspath(workdir), dict(vms)
        self.conf = os.path.join(self.workdir, "bridge.conf")
        self.db = os.path.join(self.workdir, "bridge.db")
        self.log_path = os.path.join(self.workdir, "bridge.log")
        self.vm_options = dict(vm_options or {})
        self.per_vm = {name: dict((per_vm or {}).get(name, {})) for name in self.vms}
        self.bridge_options = {"database": self.db, "log_level": log_level,
                               "reconnect_min_ms": 50, "reconnect_max_ms": 500,
                               **(bridge_options or {})}
        self.sections = {name: dict(keys) for name, keys in (sections or {}).items()}
        if valgrind is None:
            valgrind = bool(os.environ.get("WHOLEPATH_VALGRIND") or
                            os.environ.get("VMSTATE_BRIDGE_VALGRIND"))
        # argv before the bridge's own (a tool such as valgrind); start() uses it
        self.wrapper = ["valgrind", "--error-exitcode=99", "--leak-check=full",
                        "--errors-for-leak-kinds=definite",
                        f"--log-file={self.log_path}.vg.%p"] if valgrind else []
        self.proc = self.logf = self.events = None
        os.makedirs(self.workdir, exist_ok=True)
        if fresh_db:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.db + suffix):
                    os.unlink(self.db + suffix)
        self.write_config()

    # ---- configuration ----
    def vm_section(self, name):
        """The keys of section [vm NAME]: the VM's sockets, then vm_options, then per_vm."""
        vm = self.vms[name]
        if getattr(vm, "backend", "qmp") == "libvirt":  # its ports: from the domain XML
            keys = {"backend": "libvirt", "uri": vm.uri, "domain": vm.domain}
        else:
            keys = {"port_a": vm.a_sock, "port_b": vm.b_sock, "qmp": vm.qmp_sock,
                    "nodes": "disk0"}
        return {**keys, "state_dir": vm.workdir, **self.vm_options, **self.per_vm.get(name, {})}

    def config_text(self):
        def section(title, keys):
            return f"[{title}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()
                                             if v is not None)
        parts = [section("bridge", self.bridge_options)]
        parts += [section(f"vm {name}", self.vm_section(name)) for name in self.vms]
        parts += [section(title, keys) for title, keys in self.sections.items()]
        return "\n".join(parts)

    def write_config(self):
        with open(self.conf, "w") as f:
            f.write(self.config_text())

    def prefix(self):
        """argv prefix of the bridge and vmstate-admin: the host's (see host=), or none."""
        return self.host.prefix() if self.host is not None else []

    # ---- vmstate-admin ----
    def admin(self, *args, secret=None, timeout=120):
        """Run vmstate-admin -c CONF ARGS (secret: its stdin); its stdout. With host=, in
        that host (its netns: vmstate-admin cluster reaches the host's corosync)."""
        r = subprocess.run(self.prefix() + [self.admin_exe, "-c", self.conf, *args],
                           input=secret, text=True,
                           capture_output=True, timeout=timeout)
        if r.returncode != 0:
            raise BridgeError(f"vmstate-admin {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def ctl(self, *args, sock=None, timeout=120, retry=True):
        """vmstate-admin -S SOCK -j -t TIMEOUT ARGS, asked of the running bridge over its admin
        socket (default: bridge_options["admin_socket"]): (ok, the answer as a dict). retry:
        while the socket is not bound yet (exit 3) and the bridge lives, try again (10 s)."""
        sock = sock or self.bridge_options["admin_socket"]
        argv = [self.admin_exe, "-S", sock, "-j", "-t", str(timeout), *args]
        for _ in range(100 if retry else 1):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 10)
            if r.returncode != 3 or not self.alive():
                break
            time.sleep(0.1)
        try:
            ans = json.loads(r.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            ans = {"error": (r.stdout + r.stderr).strip(), "rc": r.returncode}
        return r.returncode == 0 and ans.get("ok") is True, ans

    def table(self, what, vm="vm1"):
        """vmstate-admin states|requests|events VM, as lists of tab-separated fields."""
        return [line.split("\t") for line in self.admin(what, vm).splitlines() if line.strip()]

    def add_principal(self, name, secret, grants, cost="test"):
        """principal-add NAME (secret on stdin, never on argv), then grant VM RIGHTS... for
        each (vm, rights) of grants, e.g. {"vm1": ["all"]}."""
        self.admin("principal-add", name, "--cost", cost, secret=secret + "\n")
        for vm, rights in grants.items():
            self.admin("grant", name, vm, *rights)

    # ---- the process ----
    def start(self, wait_connected=()):
        """Start the bridge (log appended to bridge.log); its PID. wait_connected: VM names
        whose QMP connection to wait for (30 s). With io_event_socket in bridge_options,
        self.events then reads that socket (an EventStream)."""
        argv = self.prefix() + self.wrapper + [self.exe, "-c", self.conf]
        self.logf = open(self.log_path, "a")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT, preexec_fn=child_setup)
        _bridges.add(self)
        if wait_connected:
            self.wait_connected(wait_connected)
        if self.bridge_options.get("io_event_socket"):
            self.events = EventStream(self.bridge_options["io_event_socket"], alive=self.alive)
        return self.proc.pid

    def wait_connected(self, names, timeout=30):
        """Wait until the log shows the QMP connection of each VM in names."""
        def connected(log, name):
            return any(name in line and ("qmp: connected" in line or "libvirt: connected" in line)
                       for line in log.splitlines())
        deadline = time.monotonic() + timeout
        while not all(connected(self.log(), n) for n in names):
            if time.monotonic() > deadline or not self.alive():
                raise BridgeError("bridge did not connect:\n" + self.log()[-3000:])
            time.sleep(0.05)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=60):
        """SIGTERM, wait (SIGKILL after timeout s); the exit status (None if never started;
        99 under valgrind = valgrind found errors)."""
        _bridges.discard(self)
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close()
        return self.proc.returncode

    def kill9(self):
        """SIGKILL (a crash: nothing is flushed or cleaned up by the bridge)."""
        _bridges.discard(self)
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._close()

    def restart(self, wait_connected=()):
        """stop(), write the config again from the option dicts, start(); the stop's status."""
        rc = self.stop()
        self.write_config()
        self.start(wait_connected)
        return rc

    def _close(self):
        if self.events:  # its events stay readable; start() makes a new one
            self.events.close()
        if self.logf:
            self.logf.close()
            self.logf = None

    # ---- what it did ----
    def log(self):
        return read_log(self.log_path)

    def valgrind_summary(self):
        """One line per valgrind report (bridge.log.vg.PID): error summary and leaks."""
        lines = []
        for vg in sorted(f for f in os.listdir(self.workdir) if f.startswith("bridge.log.vg.")):
            with open(os.path.join(self.workdir, vg), errors="replace") as f:
                summary = [l.split("== ", 1)[-1].strip() for l in f
                           if "ERROR SUMMARY" in l or "definitely lost" in l or
                           "indirectly lost" in l or "possibly lost" in l]
            lines.append(f"valgrind {vg}: " + "; ".join(summary))
        return lines

    def children(self, parents=None):
        """PIDs of the processes whose parent is the bridge (or one of `parents`)."""
        parents = {int(p) for p in (parents or [self.proc.pid])}

        def child(pid):
            with open(f"/proc/{pid}/stat") as f:
                return int(f.read().rsplit(")", 1)[1].split()[1]) in parents
        return pids_where(child)

    def readers(self, parents=None):
        """PIDs of the privsep guest readers of this bridge (or of the given bridge PIDs):
        found by their argv (-P PARENT), so also after the parent died."""
        parents = {str(p).encode() for p in (parents or [self.proc.pid])}

        def reader(pid):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            return argv[0] == b"vmstate-bridged-reader" and b"-P" in argv and \
                argv[argv.index(b"-P") + 1] in parents
        return pids_where(reader)


def pids_where(test):
    """PIDs of the host processes for which test(pid) is true; a process that ends while
    test reads its /proc files is left out."""
    found = []
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and test(int(d)):
                found.append(int(d))
        except (OSError, ValueError, IndexError):
            continue
    return found


class EventStream(LineReader):
    """Reads the bridge's io event socket (JSON lines) in a thread; each event gets _rx, the
    time.time() it arrived."""

    def __init__(self, path, timeout=10, alive=lambda: True):
        super().__init__(connect_unix(path, timeout, alive))
        self.events = []
        self.start_reader("io-events")

    def handle(self, line):
        ev = json.loads(line)
        ev["_rx"] = time.time()
        self.events.append(ev)

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
