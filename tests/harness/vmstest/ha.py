# SPDX-License-Identifier: GPL-2.0-or-later
"""vmstest.ha: HA VMs on a vmstest.cluster.Cluster — every host runs a bridge with [cluster]
enabled, HA VM definitions and disks live on the cluster's shared directory.

    t = HACluster(image, builddir, workdir, slots={1: 2, 2: 2, 3: 2}, tolerate=1,
                  vms={"a": (["h1", "h2", "h3"], 10)})   # name: (ha_hosts, ha_priority)
    t.setup([1, 3])              # corosync + bridge on hosts 1 and 3
    t.start_vm(1, "a")           # vmstate-admin start a on h1 (admission, claim), agent ready
    t.placement(3)               # {vm: (host, state)} as h3's bridge sees the table
    t.host_up(2); t.c.host(2).kill(); t.c.partition(3)
    t.close()
"""
import os
import threading
import time

from .bridge import Bridge
from .checks import wait_until
from .cluster import Cluster
from .managed import ManagedVM, _Pid

CHECKPOINT_S = 6   # ha_checkpoint_interval of the bridges HACluster configures
GRACE_S = 10       # bridge_grace


class HAVM(ManagedVM):
    """An HA VM: its disk, console and the test's sockets live on the shared directory (one
    QEMU at a time uses them: the lease), the bridge's run_dir is per host ({node})."""

    def __init__(self, shared, hosts_root, name, image, **kw):
        super().__init__(os.path.join(shared, name), image, **kw)
        self.name, self.hosts_root = name, hosts_root

    def run_dir(self, node):
        return os.path.join(self.hosts_root, node, self.name)

    def pid(self):
        for node in os.listdir(self.hosts_root):
            try:
                with open(os.path.join(self.run_dir(node), "qemu.pid")) as f:
                    pid = int(f.read().strip())
            except (OSError, ValueError):
                continue
            if _Pid(pid).poll() is None:
                return pid
        return None

    def definition(self, hosts, priority=0, **extra):
        """Its shared [vm] section; extra: more keys (io_probe, io_escalate_after, ...)."""
        keys = self.section(run_dir=os.path.join(self.hosts_root, "{node}", self.name),
                            slow_tier="local", nodes="disk0", ha="yes",
                            ha_hosts=", ".join(hosts), ha_priority=priority, vcpus=1, **extra)
        return f"[vm {self.name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())


def qemu_instances():
    """{VM name: [pids]} of every QEMU on this machine started as -name NAME,debug-threads."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if not argv or b"qemu-system" not in argv[0] or b"-name" not in argv:
            continue
        name = argv[argv.index(b"-name") + 1].split(b",")[0].decode()
        out.setdefault(name, []).append(int(pid))
    return out


class DoubleWatch:
    """Samples every QEMU every 50 ms: a VM name seen in two processes at once is a
    failure of 'never two instances'."""

    def __init__(self, names):
        self.names, self.doubles, self.samples = set(names), [], 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            for name, pids in qemu_instances().items():
                if name in self.names and len(pids) > 1:
                    # a QEMU being reaped may still be listed: count it only if both live
                    live = [p for p in pids if _Pid(p).poll() is None]
                    if len(live) > 1:
                        self.doubles.append((time.monotonic(), name, live))
            self.samples += 1
            time.sleep(0.05)

    def stop(self):
        self._stop.set()
        self._t.join(5)
        return self.doubles


class HACluster:
    def __init__(self, image, builddir, workdir, slots, tolerate, vms, token=500, mem="128M",
                 checkpoint_s=CHECKPOINT_S, vm_args=None, vm_keys=None, io_events=False):
        """slots: {host number: host_vcpus}; vms: {name: (hosts, priority)}; token:
        corosync's token timeout (ms); mem: each VM's RAM; checkpoint_s: the bridges'
        ha_checkpoint_interval (0: guest saves only); vm_args: {name: extra QEMU arguments};
        vm_keys: {name: {more [vm] keys}}; io_events: each bridge gets an io event socket
        (Bridge.events)."""
        self.vm_args, self.vm_keys, self.io_events = vm_args or {}, vm_keys or {}, io_events
        self.image, self.builddir, self.workdir = image, builddir, workdir
        self.mem, self.checkpoint_s = mem, checkpoint_s
        self.c = Cluster(os.path.join(workdir, "cluster"), hosts=len(slots), token=token)
        self.hosts_root = os.path.join(workdir, "hosts")
        self.slots, self.tolerate = slots, tolerate
        self.vms, self.bridges = {}, {}
        self.spec = vms

    def setup(self, corosync_hosts):
        self.c.start(corosync=False)
        shared = self.c.shared_dir
        os.makedirs(os.path.join(shared, "vms"), exist_ok=True)
        for name, (hosts, prio) in self.spec.items():
            vm = HAVM(shared, self.hosts_root, name, self.image, mem=self.mem,
                      extra_args=self.vm_args.get(name, ()))
            self.vms[name] = vm
            with open(os.path.join(shared, "vms", f"{name}.conf"), "w") as f:
                f.write(vm.definition(hosts, prio, **self.vm_keys.get(name, {})))
        for i in self.slots:
            h = self.c.host(i)
            hdir = os.path.join(self.hosts_root, h.name)
            os.makedirs(os.path.join(hdir, "tier"), exist_ok=True)
            options = {"admin_socket": os.path.join(hdir, "admin.sock")}
            if self.io_events:
                options["io_event_socket"] = os.path.join(hdir, "io-events.sock")
            self.bridges[i] = Bridge(
                self.builddir, hdir, {}, host=h, bridge_options=options,
                sections={"tier local": {"path": os.path.join(hdir, "tier"), "capacity": "10G"},
                          "cluster": {"enabled": "yes", "node": h.name, "shared_dir": shared,
                                      "host_vcpus": self.slots[i], "host_memory": "4G",
                                      "failures_tolerated": self.tolerate,
                                      "ha_checkpoint_interval": self.checkpoint_s,
                                      "bridge_grace": GRACE_S}})
        for i in corosync_hosts:  # quorum needs a majority: every corosync first
            self.c.host(i).start_corosync()
        for i in corosync_hosts:
            self.host_up(i)

    def host_up(self, i, timeout=30):
        """Start host i's corosync (if not running) and bridge; wait until the bridge says
        the cluster is quorate and synced."""
        h = self.c.host(i)
        if not h.corosync_alive():
            h.start_corosync()
        self.bridges[i].start()
        return wait_until(lambda: (lambda s: s if s.get("quorate") and s.get("synced") else None)(
            self.cluster(i)), timeout, f"h{i}'s bridge quorate and synced")

    def admin(self, i, *args, timeout=120):
        """vmstate-admin -j ARGS asked of host i's bridge: (ok, answer)."""
        return self.bridges[i].ctl(*args, timeout=timeout)

    def cluster(self, i):
        ok, ans = self.admin(i, "cluster", timeout=10)
        return ans if ok else {}

    def placement(self, i):
        return {v["vm"]: (v["host"], v["state"]) for v in self.cluster(i).get("vms", [])}

    def start_vm(self, i, name):
        ok, ans = self.admin(i, "start", name)
        if ok:
            vm = self.vms[name]
            vm.attach()
            vm.wait_ready(120)
        return ok, ans

    def close(self):
        for b in self.bridges.values():
            if b.alive():
                b.stop()
        for vm in self.vms.values():
            vm.kill()
        self.c.close()


def wait_running_on(t, observer, want, timeout, since):
    """Wait until observer's table shows each VM of want ({vm: host}) running there."""
    def ok():
        p = t.placement(observer)
        return all(p.get(v) == (h, "running") for v, h in want.items()) and p
    wait_until(ok, timeout, f"{want} running", interval=0.05)
    return time.monotonic() - since
