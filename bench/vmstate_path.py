# SPDX-License-Identifier: GPL-2.0-or-later
"""vmstate_path: the whole vmstate path for the benchmarks — vmstate-bridged on the host
serving one or more harness VMs, vmstate-helperd in each guest, a principal with rights.

Bench-local wiring, like vmstest.wholepath (tests/harness) but tuned for measuring (that runner logs
at debug level and keeps the default quotas and rate limits, which would be measured too):
    with Path(builddir, workdir, {"vm1": vm}, cost="test") as p:
        p.start_guest(vm)           # helper.conf, vmstate-helperd, waits for the bridge
        vm.check("vsbench-app rtt 1000")

Bridge settings for benchmarking: rate limits and quotas off (rate_requests = 0,
max_pending = 0, max_states = 0, auth_fail_max = 0), log_level = warning, privsep as
shipped (yes), command_timeout = 120 (see the note in VM_OPTIONS below). The principal's
Argon2id cost is a parameter: 'test' (1 pass, 8 KiB) or 'default' (2 passes, 16 MiB) — it
is paid on every request.
"""
import os

import benchlib as bl
from vmstest import Bridge

PRINCIPAL, SECRET = "bench", "bench-secret"

# max_listeners_per_uid = 0: the fan-out benchmarks open every listener from one root
# process; the per-uid share (a guard between guest users) is not what they measure.
HELPER_CONF = """[helper]
allow_users = root
max_listeners = 4096
max_listeners_per_uid = 0
max_held = 256
queue_max = 1024
"""
HELPER_CONF += f"log_level = {os.environ.get('VSBENCH_HELPER_LOG', 'warning')}\n"
# extra helper.conf lines for an A/B run, e.g. VSBENCH_HELPER_CONF="clock_sync = no"
HELPER_CONF += "".join(f"{line.strip()}\n" for line in
                       os.environ.get("VSBENCH_HELPER_CONF", "").split(";") if line.strip())

VM_OPTIONS = {"max_states": 0, "max_pending": 0, "max_app_data_bytes": 0, "rate_requests": 0,
              "auth_fail_max": 0, "job_timeout": 600,
              # the reply to snapshot-save itself comes only after QEMU's save of a large
              # guest ran (it blocks the main loop): the default 10 s made 512 MiB filled
              # saves fail with status 15 (timeout) on this host
              "command_timeout": 120}


class Path(Bridge):
    """A vmstest Bridge with the bench settings and a fresh database; entering it adds the
    principal (rights on every VM) and starts the bridge."""

    def __init__(self, builddir, workdir, vms, cost="test",
                 log_level=os.environ.get("VSBENCH_BRIDGE_LOG", "warning")):
        super().__init__(builddir, workdir, vms, VM_OPTIONS, log_level=log_level,
                         valgrind=False, fresh_db=True)
        for p in (self.exe, self.admin_exe):
            if not os.access(p, os.X_OK):
                raise SystemExit(f"{p} missing: build the bridge (make) first")
        self.cost = cost

    def __enter__(self):
        self.add_principal(PRINCIPAL, SECRET, {name: ["all"] for name in self.vms}, self.cost)
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def pids(self):
        """The bridge and its privsep reader processes."""
        return [self.proc.pid] + self.children()


def start_guest(vm, timeout=60):
    """Configure and start vmstate-helperd in the guest; wait until it has the bridge.
    Returns the helper's guest pid."""
    vm.check("mkdir -p /etc/vmstate")
    vm.write_file("/etc/vmstate/helper.conf", HELPER_CONF)
    pid = vm.spawn("exec vmstate-helperd --config /etc/vmstate/helper.conf",
                   log="/tmp/helperd.log")
    rc, out = vm.run(f"vsbench-app wait-bridge {timeout}", timeout=timeout + 10)
    if rc != 0:
        raise bl.harness.VMError(f"helper never saw the bridge: {out}\n"
                                   f"{vm.read_file('/tmp/helperd.log').decode(errors='replace')}")
    return pid
