# SPDX-License-Identifier: GPL-2.0-or-later
"""vmstest.cluster: N hosts on this machine, each a network namespace with its own corosync 3
(knet, votequorum), for the cluster (HA failover) suites.

    with Cluster(os.path.join(workdir, "cluster"), hosts=3, token=500) as c:
        c.start(); c.wait_quorate()           # every host quorate, seeing all members
        h2 = c.host(2)                        # 1-based: host(i).name == f"h{i}", nodeid == i
        h2.run(["corosync-quorumtool", "-s"]) # any command inside h2 (its netns, its /run)
        b = Bridge(builddir, h2.workdir, vms, host=h2)   # the bridge (and its QEMUs) in h2
        h2.kill()                             # SIGKILL everything in h2's netns (a crash)
        c.wait_view([1, 3], members=[1, 3], quorate=True)   # {host: seconds}
        c.partition(3); c.heal(3); h2.restart_corosync()

Layout (cluster-notes.md): one netns `<prefix>-br` holds a Linux bridge br0; each host's netns
`<prefix>-hI` has eth0 = ADDR_PREFIX.(10+I)/24, a veth whose peer `hI` is a port of br0.
The root namespace's network is never touched (the veths are created inside the
namespaces). prefix = `vmsc<pid>-<n>`, so parallel runs and several Cluster objects in one
run do not collide.

Every process of a host runs as `ip netns exec NETNS sh -c 'mount --bind RUN /run && exec
ARGV'`: `ip netns exec` gives it a new (slave) mount namespace, where the host's private
run directory is bound on /run (corosync's fixed /run/corosync.pid), and both execs keep
the PID, so Popen.pid is the program's own PID. Clients of corosync (libcpg, libquorum)
must run in the host's netns: libqb's IPC sockets are abstract, per network namespace.

Processes are tracked by network namespace: Host.pids() are the PIDs whose
/proc/PID/ns/net is the host's netns, which catches every descendant (a bridge's QEMUs,
its privsep readers) without knowing it. Host.kill() SIGKILLs them until none is left, then
removes exactly the /dev/shm files libqb leaves behind for the killed corosync PIDs
(qb-corosync-PID-* and qb-PID-*). Teardown (close(), the with block, atexit, SIGINT/SIGTERM
through vm.on_exit) kills every host and deletes the namespaces; Cluster.start() first
removes the namespaces of earlier runs whose creating PID is gone.
"""
import os
import re
import shutil
import signal
import subprocess
import threading
import time

from .bridge import pids_where
from .vm import VMError, child_setup, on_exit

ADDR_PREFIX = "10.77.0"
COROSYNC = "corosync"
QUORUMTOOL = "corosync-quorumtool"
NETNS_DIR = "/run/netns"
NS_PREFIX = "vmsc"
# PIDs of the corosyncs of each Cluster (REGISTRY/PREFIX.pids, in the root namespace's /run),
# so that a later run can clean the /dev/shm files of a run that was SIGKILLed
REGISTRY = "/run/vmstest-cluster"

_clusters = set()
_counter = [0]


def _kill_clusters():
    for c in list(_clusters):
        c.close()


on_exit(_kill_clusters)


class ClusterError(VMError):
    """A cluster host or its corosync failed."""


def _ip(*args):
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise ClusterError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def _ns_inode(name):
    """The nsfs inode of a named network namespace (None if it is gone)."""
    try:
        return os.stat(os.path.join(NETNS_DIR, name)).st_ino
    except OSError:
        return None


def _pids_in_netns(inode):
    """PIDs of the processes whose network namespace has nsfs inode @inode (not zombies:
    an exited process has no namespaces)."""
    return pids_where(lambda pid: os.stat(f"/proc/{pid}/ns/net").st_ino == inode)


def _corosync_runs(pid):
    """Whether @pid is a live (not zombie) corosync."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat.split(" (", 1)[1].startswith("corosync)") and \
        stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _remove_qb_files(pid):
    """What libqb leaves in /dev/shm when corosync @pid is SIGKILLed: its 8 MiB blackbox
    (qb-corosync-PID-blackbox-*) and one directory of IPC rings per client connection
    (qb-PID-CLIENTPID-FD-RANDOM/); exactly those of that PID. How many were removed."""
    removed = 0
    for f in os.listdir("/dev/shm"):
        if f.startswith(f"qb-corosync-{pid}-") or f.startswith(f"qb-{pid}-"):
            path = os.path.join("/dev/shm", f)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            removed += 1
    return removed


def parse_quorumtool(text):
    """`corosync-quorumtool -s` output as {"quorate": bool, "members": [nodeid...],
    "expected_votes": int, "total_votes": int, "nodeid": int, "ring_id": str,
    "names": {nodeid: name}}."""
    q = {"quorate": False, "members": [], "expected_votes": None, "total_votes": None,
         "nodeid": None, "ring_id": None, "names": {}}
    in_members = False
    for line in text.splitlines():
        if in_members:
            m = re.match(r"\s*(\d+)\s+(\d+)\s+(\S+)", line)
            if m:
                q["members"].append(int(m.group(1)))
                q["names"][int(m.group(1))] = m.group(3)
            continue
        key, sep, value = line.partition(":")
        value = value.strip()
        if re.match(r"\s*Nodeid\s+Votes", line):
            in_members = True
        elif not sep:
            continue
        elif key == "Quorate":
            q["quorate"] = value == "Yes"
        elif key == "Expected votes":
            q["expected_votes"] = int(value)
        elif key == "Total votes":
            q["total_votes"] = int(value)
        elif key == "Node ID":
            q["nodeid"] = int(value)
        elif key == "Ring ID":
            q["ring_id"] = value
    q["members"].sort()
    return q


class QuorumMonitor:
    """`corosync-quorumtool -m` in a host: corosync prints the quorum status on every
    membership or quorum change (votequorum's notification), so the time a view arrives is
    the time the host's clients learn it (no polling delay). views: [(time.monotonic() of
    the block's first line, parsed view)]. It ends when the host's corosync does."""

    def __init__(self, host):
        self.views = []
        self.ended = False   # its output ended (corosync refused it, or went away)
        self.cond = threading.Condition()
        self.proc = host.popen(["stdbuf", "-oL", QUORUMTOOL, "-m"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
        self.thread = threading.Thread(target=self._read, name=f"quorum-{host.name}",
                                       daemon=True)
        self.thread.start()

    def _read(self):
        block, t, in_members = [], None, False
        for line in self.proc.stdout:
            if line.startswith("Quorum information"):
                block, t, in_members = [], time.monotonic(), False
            block.append(line)
            if re.match(r"\s*Nodeid\s+Votes", line):
                in_members = True
            elif in_members and not line.strip() and t is not None:
                with self.cond:
                    self.views.append((t, parse_quorumtool("".join(block))))
                    self.cond.notify_all()
                block, t, in_members = [], None, False
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def alive(self):
        return not self.ended and self.proc.poll() is None

    def latest(self):
        with self.cond:
            return self.views[-1] if self.views else (None, None)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.thread.join(5)   # it reads to EOF; then the pipe can be closed
        self.proc.stdout.close()


class Host:
    """One cluster host: a network namespace, its private /run, its corosync."""

    def __init__(self, cluster, index):
        self.cluster, self.index = cluster, index
        self.name = f"h{index}"
        self.nodeid = index
        self.addr = f"{ADDR_PREFIX}.{10 + index}"
        self.netns = f"{cluster.prefix}-{self.name}"
        self.workdir = os.path.join(cluster.workdir, self.name)
        self.run_dir = os.path.join(self.workdir, "run")    # bound on /run in the host
        self.state_dir = os.path.join(self.workdir, "corosync-state")
        self.conf = os.path.join(self.workdir, "corosync.conf")
        self.logfile = os.path.join(self.workdir, "corosync.log")
        self.corosync = None           # Popen of the current corosync
        self.corosync_pids = []        # every corosync this host ran
        self.killed_corosyncs = []     # ... whose /dev/shm files are not removed yet
        self.procs = []                # every Popen started through popen()
        self.monitor = None            # QuorumMonitor of the current corosync (watch())

    # ---- running things in the host ----
    def prefix(self):
        """argv prefix that runs a program inside this host (netns + private /run); the
        program keeps the PID of the process started with it."""
        return ["ip", "netns", "exec", self.netns, "sh", "-c",
                'mount --bind "$0" /run && exec "$@"', self.run_dir]

    def popen(self, argv, **kw):
        """subprocess.Popen of argv inside the host (PR_SET_PDEATHSIG unless preexec_fn is
        given); tracked: kill() ends it and everything it started."""
        kw.setdefault("preexec_fn", child_setup)
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(self.prefix() + list(argv), **kw)
        self.procs.append(p)
        return p

    def run(self, argv, timeout=30, check=False, **kw):
        """Run argv inside the host and wait; a CompletedProcess (text, output captured
        unless stdout/stderr are given)."""
        kw.setdefault("text", True)
        if "stdout" not in kw and "stderr" not in kw:
            kw["capture_output"] = True
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.prefix() + list(argv), timeout=timeout, check=check,
                              preexec_fn=child_setup, **kw)

    def pids(self):
        """PIDs of every process in this host's network namespace ([] once it is deleted:
        its inode number may be reused; close() kills before it deletes)."""
        inode = _ns_inode(self.netns)
        return _pids_in_netns(inode) if inode else []

    # ---- corosync ----
    def write_conf(self):
        c = self.cluster
        nodes = "".join(f"    node {{\n        ring0_addr: {h.addr}\n        nodeid: {h.nodeid}\n"
                        f"        name: {h.name}\n    }}\n" for h in c.hosts)
        text = (f"# written by tests/harness/vmstest/cluster.py\n"
                f"totem {{\n    version: 2\n    cluster_name: {c.prefix}\n"
                f"    transport: knet\n    crypto_cipher: none\n    crypto_hash: none\n"
                f"    token: {c.token}\n    token_coefficient: 0\n}}\n"
                f"nodelist {{\n{nodes}}}\n"
                f"quorum {{\n    provider: corosync_votequorum\n{c.quorum_options}}}\n"
                f"logging {{\n    to_logfile: yes\n    logfile: {self.logfile}\n"
                f"    to_stderr: no\n    to_syslog: no\n    timestamp: hires\n"
                f"    debug: {'on' if c.debug else 'off'}\n}}\n"
                f"system {{\n    state_dir: {self.state_dir}\n    move_to_root_cgroup: no\n}}\n")
        with open(self.conf, "w") as f:
            f.write(text)

    def start_corosync(self):
        """Start this host's corosync (foreground, its log in corosync.log); its PID."""
        if self.corosync_alive():
            raise ClusterError(f"{self.name}: corosync already runs (pid {self.corosync.pid})")
        self.write_conf()
        out = open(os.path.join(self.workdir, "corosync.out"), "a")
        self.corosync = self.popen([COROSYNC, "-f", "-c", self.conf], stdout=out,
                                   stderr=subprocess.STDOUT)
        out.close()
        self.killed_corosyncs.append(self.corosync.pid)
        self.corosync_pids.append(self.corosync.pid)
        os.makedirs(REGISTRY, exist_ok=True)
        with open(os.path.join(REGISTRY, f"{self.cluster.prefix}.pids"), "a") as f:
            f.write(f"{self.corosync.pid}\n")
        return self.corosync.pid

    def watch(self, timeout=10):
        """Start (again) a QuorumMonitor on this host's corosync once it answers; the
        monitor. Cluster.wait_view() uses it for its times."""
        if self.monitor and self.monitor.alive():
            return self.monitor
        if self.monitor:
            self.monitor.stop()
        deadline = time.monotonic() + timeout
        while True:
            self.monitor = QuorumMonitor(self)
            with self.monitor.cond:
                self.monitor.cond.wait_for(lambda: self.monitor.views or not self.monitor.alive(),
                                           max(0.1, deadline - time.monotonic()))
            if self.monitor.views:
                return self.monitor
            self.monitor.stop()
            self.monitor = None
            if time.monotonic() > deadline or not self.corosync_alive():
                raise ClusterError(f"{self.name}: corosync-quorumtool -m does not start:\n"
                                   + self.log()[-2000:])
            time.sleep(0.1)   # corosync not ready for clients yet

    def corosync_alive(self):
        return self.corosync is not None and self.corosync.poll() is None

    def stop_corosync(self, sig=signal.SIGTERM, timeout=10):
        """Signal corosync and wait for it (SIGKILL after timeout); SIGTERM is a clean leave
        (the others see procdown), SIGKILL a crash (nodedown)."""
        p = self.corosync
        if p is None:
            return None
        if self.monitor:
            self.monitor.stop()
            self.monitor = None
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._clean_shm()
        return p.returncode

    def restart_corosync(self, sig=signal.SIGTERM):
        """Stop corosync if it runs (sig), start it again; the new PID."""
        self.stop_corosync(sig)
        return self.start_corosync()

    def kill(self, timeout=10):
        """SIGKILL every process in the host's netns (corosync, bridges, their QEMUs), until
        none is left; then remove the killed corosyncs' /dev/shm files. The namespace and its
        link stay: restart_corosync() brings the host back."""
        deadline = time.monotonic() + timeout
        while True:
            pids = [p for p in self.pids() if p != os.getpid()]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for p in self.procs:   # reap our own children (they would stay zombies)
                try:
                    p.wait(0.05)
                except subprocess.TimeoutExpired:
                    pass
            if time.monotonic() > deadline:
                raise ClusterError(f"{self.name}: processes survive SIGKILL: {pids}")
            time.sleep(0.01)
        for p in self.procs:
            p.poll()
        self.procs = [p for p in self.procs if p.returncode is None]
        self._clean_shm()

    def _clean_shm(self):
        for pid in list(self.killed_corosyncs):
            if _corosync_runs(pid):   # ours, still running (or the PID was reused)
                continue
            _remove_qb_files(pid)
            self.killed_corosyncs.remove(pid)

    # ---- what it sees ----
    def quorum(self, timeout=10):
        """`corosync-quorumtool -s` in this host, parsed (see parse_quorumtool); with
        "error" set (and quorate False) when corosync does not answer."""
        try:
            r = self.run([QUORUMTOOL, "-s"], timeout=timeout)
        except subprocess.TimeoutExpired:
            return {**parse_quorumtool(""), "error": "timeout"}
        q = parse_quorumtool(r.stdout)
        if q["nodeid"] is None:
            q["error"] = (r.stderr or r.stdout).strip() or f"exit {r.returncode}"
        return q

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def __repr__(self):
        return f"<Host {self.name} {self.netns} {self.addr}>"


class Cluster:
    """N hosts (default 3) in network namespaces, each with its own corosync; a shared
    directory (shared storage) all of them see. Hosts are numbered from 1."""

    def __init__(self, workdir, hosts=3, token=500, debug=False, quorum_options=""):
        _counter[0] += 1
        self.workdir = os.path.abspath(workdir)
        self.prefix = f"{NS_PREFIX}{os.getpid()}-{_counter[0]}"
        self.bridge_netns = f"{self.prefix}-br"
        self.token, self.debug = token, debug
        self.quorum_options = quorum_options   # more `key: value` lines for quorum { }
        self.shared_dir = os.path.join(self.workdir, "shared")
        self.hosts = [Host(self, i) for i in range(1, hosts + 1)]
        self.started = False
        self._lock = threading.Lock()

    def host(self, i):
        """Host number i (1-based: host(1).name == "h1", nodeid 1)."""
        if not 1 <= i <= len(self.hosts):
            raise IndexError(f"no host {i} (hosts 1..{len(self.hosts)})")
        return self.hosts[i - 1]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- bring-up ----
    def start(self, corosync=True):
        """Create the namespaces and links, then start every host's corosync (unless
        corosync=False)."""
        reap_stale()
        os.makedirs(self.shared_dir, exist_ok=True)
        _clusters.add(self)
        self.started = True
        _ip("netns", "add", self.bridge_netns)
        br = ["-n", self.bridge_netns]
        _ip(*br, "link", "add", "br0", "type", "bridge")
        _ip(*br, "link", "set", "br0", "up")
        for h in self.hosts:
            for d in (h.workdir, h.run_dir, h.state_dir):
                os.makedirs(d, exist_ok=True)
            _ip("netns", "add", h.netns)
            _ip(*br, "link", "add", h.name, "type", "veth", "peer", "name", "eth0",
                "netns", h.netns)
            _ip(*br, "link", "set", h.name, "master", "br0", "up")
            hn = ["-n", h.netns]
            _ip(*hn, "addr", "add", f"{h.addr}/24", "dev", "eth0")
            _ip(*hn, "link", "set", "eth0", "up")
            _ip(*hn, "link", "set", "lo", "up")
        if corosync:
            for h in self.hosts:
                h.start_corosync()
        return self

    def wait_view(self, hosts=None, members=None, quorate=True, timeout=15, since=None):
        """Wait until each host of `hosts` (numbers; default all) reports quorate == quorate
        (None: either) and, unless members is None, exactly `members` (host numbers) as
        its members. {host: seconds from `since` (time.monotonic(), default now) until the
        host's corosync reported that view} (0 if it did before `since`); ClusterError with
        every host's view on timeout. The times come from each host's QuorumMonitor
        (watch(), started here if needed: start it before the action to time it)."""
        since = time.monotonic() if since is None else since
        hosts = list(hosts) if hosts is not None else [h.index for h in self.hosts]
        want = None if members is None else sorted(self.host(m).nodeid for m in members)
        deadline = time.monotonic() + timeout

        def matches(q):
            return q is not None and "error" not in q and \
                (quorate is None or q["quorate"] == quorate) and \
                (want is None or q["members"] == want)
        seen, last = {}, {}
        while True:
            for i in hosts:
                h = self.host(i)
                if i in seen:
                    continue
                try:
                    mon = h.watch(timeout=max(0.5, deadline - time.monotonic()))
                except ClusterError as e:
                    last[i] = {**parse_quorumtool(""), "error": str(e).splitlines()[0]}
                    continue
                with mon.cond:
                    views = list(mon.views)
                last[i] = views[-1][1]
                if matches(views[-1][1]):
                    # the first view of the current run of matching ones
                    k = len(views) - 1
                    while k > 0 and matches(views[k - 1][1]):
                        k -= 1
                    seen[i] = max(0.0, views[k][0] - since)
            if len(seen) == len(hosts):
                return seen
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"hosts {hosts}: not quorate={quorate} members={members} within "
                    f"{timeout}s; views: " +
                    "; ".join(f"h{i}: quorate={q['quorate']} members={q['members']}"
                              f"{' ' + q['error'] if 'error' in q else ''}"
                              for i, q in sorted(last.items())))
            time.sleep(0.01)

    def watch(self, hosts=None):
        """Start the QuorumMonitor of each host (default: every host whose corosync runs)."""
        for i in hosts if hosts is not None else \
                [h.index for h in self.hosts if h.corosync_alive()]:
            self.host(i).watch()

    def wait_quorate(self, hosts=None, timeout=15):
        """Wait until every host of `hosts` (default all) is quorate and sees exactly those
        hosts as members; the seconds it took (the slowest host)."""
        hosts = list(hosts) if hosts is not None else [h.index for h in self.hosts]
        return max(self.wait_view(hosts, members=hosts, quorate=True, timeout=timeout).values())

    def members_seen_by(self, i):
        """The host numbers host i's corosync reports as members ([] if it does not answer)."""
        return [self._index_of(n) for n in self.host(i).quorum()["members"]]

    def _index_of(self, nodeid):
        return next((h.index for h in self.hosts if h.nodeid == nodeid), nodeid)

    # ---- faults ----
    def partition(self, i):
        """Cut host i off from every other host: its port on the bridge goes down (a pulled
        cable: the host's own eth0 stays configured, its packets go nowhere)."""
        _ip("-n", self.bridge_netns, "link", "set", self.host(i).name, "down")

    def heal(self, i):
        """Undo partition(i)."""
        _ip("-n", self.bridge_netns, "link", "set", self.host(i).name, "up")

    # ---- teardown ----
    def close(self):
        """Kill every host's processes, remove the /dev/shm files of the killed corosyncs,
        delete the namespaces. Idempotent."""
        with self._lock:
            if not self.started:
                return
            self.started = False
            _clusters.discard(self)
            for h in self.hosts:
                try:
                    h.kill()
                except ClusterError as e:
                    print(f"cluster teardown: {e}")
            for ns in [h.netns for h in self.hosts] + [self.bridge_netns]:
                if _ns_inode(ns) is not None:
                    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            try:
                os.unlink(os.path.join(REGISTRY, f"{self.prefix}.pids"))
            except OSError:
                pass


def reap_stale():
    """Clean up after Cluster runs whose creating process is gone (a test that was
    SIGKILLed): kill what still runs in their namespaces, delete the namespaces, remove the
    /dev/shm files of their corosyncs (REGISTRY)."""
    def stale(name):
        m = re.match(rf"{NS_PREFIX}(\d+)-\d+(-h\d+|-br|\.pids)$", name)
        return m and not os.path.exists(f"/proc/{m.group(1)}")
    for ns in (n for n in (os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else [])
               if stale(n)):
        inode = _ns_inode(ns)
        for pid in _pids_in_netns(inode) if inode else []:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    for reg in (n for n in (os.listdir(REGISTRY) if os.path.isdir(REGISTRY) else [])
                if stale(n)):
        path = os.path.join(REGISTRY, reg)
        with open(path) as f:
            pids = [int(w) for w in f.read().split() if w.isdigit()]
        deadline = time.monotonic() + 2
        while any(_corosync_runs(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.02)   # just SIGKILLed above
        for pid in pids:
            if not _corosync_runs(pid):
                _remove_qb_files(pid)
        os.unlink(path)
