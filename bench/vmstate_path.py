"""vmstate_path: the whole vmstate path for the benchmarks — vmstate-bridged on the host
serving one or more harness VMs, vmstate-helperd in each guest, a principal with rights.

Bench-local wiring, like tests/system/wholepath.py but tuned for measuring (that runner logs
at debug level and keeps the default quotas and rate limits, which would be measured too):
    with Path(builddir, workdir, {"vm1": vm}, cost="test") as p:
        p.start_guest(vm)           # helper.conf, vmstate-helperd, waits for the bridge
        vm.check("vsbench-app rtt 1000")

Bridge settings for benchmarking: rate limits and quotas off (rate_requests = 0,
max_pending = 0, max_states = 0, auth_fail_max = 0), log_level = warning, privsep as
shipped (yes), command_timeout = 120 (see the note in the config below). The principal's Argon2id cost is a parameter: 'test' (1 pass, 8 KiB) or
'default' (2 passes, 16 MiB) — it is paid on every request.
"""
import os
import signal
import subprocess

import benchlib as bl

PRINCIPAL, SECRET = "bench", "bench-secret"

HELPER_CONF = """[helper]
allow_users = root
max_listeners = 4096
max_held = 256
queue_max = 1024
log_level = warning
"""


class Path:
    def __init__(self, builddir, workdir, vms, cost="test",
                 log_level=os.environ.get("VSBENCH_BRIDGE_LOG", "warning")):
        b = os.path.abspath(builddir)
        self.exe = os.path.join(b, "host-bridge", "vmstate-bridged")
        self.admin_exe = os.path.join(b, "host-bridge", "vmstate-admin")
        for p in (self.exe, self.admin_exe):
            if not os.access(p, os.X_OK):
                raise SystemExit(f"{p} missing: build the bridge (make) first")
        self.workdir, self.vms, self.cost = workdir, vms, cost
        self.conf = os.path.join(workdir, "bridge.conf")
        self.db = os.path.join(workdir, "bridge.db")
        self.log_path = os.path.join(workdir, "bridge.log")
        self.proc = None
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.db + suffix):
                os.unlink(self.db + suffix)
        with open(self.conf, "w") as f:
            f.write(f"[bridge]\ndatabase = {self.db}\nlog_level = {log_level}\n"
                    "reconnect_min_ms = 50\nreconnect_max_ms = 500\n")
            for name, vm in vms.items():
                f.write(f"\n[vm {name}]\nport_a = {vm.a_sock}\nport_b = {vm.b_sock}\n"
                        f"qmp = {vm.qmp_sock}\nnodes = disk0\nstate_dir = {vm.workdir}\n"
                        "max_states = 0\nmax_pending = 0\nmax_app_data_bytes = 0\n"
                        "rate_requests = 0\nauth_fail_max = 0\njob_timeout = 600\n"
                        # the reply to snapshot-save itself comes only after QEMU's save of a
                        # large guest ran (it blocks the main loop): the default 10 s made
                        # 512 MiB filled saves fail with status 15 (timeout) on this host
                        "command_timeout = 120\n")

    def admin(self, *args, secret=None):
        r = subprocess.run([self.admin_exe, "-c", self.conf, *args], input=secret, text=True,
                           capture_output=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"vmstate-admin {args}: {r.stderr}")
        return r.stdout

    def __enter__(self):
        self.admin("principal-add", PRINCIPAL, "--cost", self.cost, secret=SECRET + "\n")
        for name in self.vms:
            self.admin("grant", PRINCIPAL, name, "all")
        self.logf = open(self.log_path, "a")
        self.proc = subprocess.Popen([self.exe, "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=subprocess.STDOUT,
                                     preexec_fn=bl.vmharness._child_setup)  # dies with us
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def pids(self):
        """The bridge and its privsep reader processes."""
        found = [self.proc.pid]
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == self.proc.pid:
                found.append(int(d))
        return found

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()


def start_guest(vm, timeout=60):
    """Configure and start vmstate-helperd in the guest; wait until it has the bridge.
    Returns the helper's guest pid."""
    vm.check("mkdir -p /etc/vmstate")
    vm.write_file("/etc/vmstate/helper.conf", HELPER_CONF)
    pid = vm.spawn("exec vmstate-helperd --config /etc/vmstate/helper.conf",
                   log="/tmp/helperd.log")
    rc, out = vm.run(f"vsbench-app wait-bridge {timeout}", timeout=timeout + 10)
    if rc != 0:
        raise bl.vmharness.VMError(f"helper never saw the bridge: {out}\n"
                                   f"{vm.read_file('/tmp/helperd.log').decode(errors='replace')}")
    return pid
