# SPDX-License-Identifier: GPL-2.0-or-later
"""vmstest: the harness of vmstate's system tests and benchmarks (Python 3 stdlib only).

    vm         VM (one QEMU guest: QMP, test agent, snapshots), QMP, Agent, choose_accel
    bridge     Bridge (vmstate-bridged + config + vmstate-admin), EventStream (io events)
    proxy      QmpHoldProxy (hold QEMU's answers back from the bridge)
    checks     check(), field(), results (passed/failed/numbers, summary())
    wholepath  WholePath (one VM + bridge + principal + guest helper), App (vmstate-testapp)
    disks      NBDServer, blockdev arguments, guest_dev(), writer_script()
    libvirt    LibvirtVM (the same guest as a libvirt domain; VMSTATE_TEST_BACKEND=libvirt)
    wireclient WireClient (tests/bridge/vms-wire-client in a guest: raw frames on the ports)
    cluster    Cluster, Host (N hosts in network namespaces, one corosync each; kill, partition)

A suite puts tests/harness on sys.path from its own location (works in the source tree
and in a VPATH build, which runs the scripts from $(srcdir)):

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
    from vmstest import VM, Bridge, check, field, results

See tests/harness/README.md.
"""
import os

from .bridge import Bridge, BridgeError, EventStream, proc_status, rss_kib
from .cluster import Cluster, ClusterError, Host
from .checks import Results, check, field, results, wait_until
from .vm import QMP, Agent, AgentLost, QMPError, VM, VMError, choose_accel

# The hypervisor interface the suites run on: qmp (QEMU run by the harness, the bridge on
# its QMP socket) or libvirt (each VM a domain on the private libvirtd that
# tests/libvirt/run-suite.sh starts, $LV_URI; the bridge a libvirt client).
BACKEND = os.environ.get("VMSTATE_TEST_BACKEND", "qmp")


def make_vm(workdir, image_dir, builddir=None, backend=None, **kw):
    """A VM for @backend (default BACKEND): VM, or LibvirtVM (which needs builddir for
    vmstate-admin libvirt-setup)."""
    if (backend or BACKEND) == "libvirt":
        from .libvirt import LibvirtVM
        return LibvirtVM(workdir, image_dir, builddir, **kw)
    return VM(workdir, image_dir, **kw)

__all__ = ["BACKEND", "make_vm", "Agent", "AgentLost", "Bridge", "BridgeError", "Cluster",
           "ClusterError", "Host", "EventStream", "QMP", "QMPError",
           "Results", "VM", "VMError", "check", "choose_accel", "field", "proc_status",
           "results", "rss_kib", "wait_until"]
