# SPDX-License-Identifier: GPL-2.0-or-later
"""LibvirtVM: the harness's VM (vm.VM) run by libvirt instead of by the harness.

The same guest (kernel + initrd of the test image, the qcow2 disk, the serial console to a
file, the test agent's port org.vmstate.test.0 and the test's own QMP monitor) as a libvirt
domain on the private libvirtd of tests/libvirt/libvirtd-private.sh (URI in $LV_URI). The
bridge's two ports are added the product's way: `vmstate-admin libvirt-setup --apply`
(unix channels QEMU dials; the bridge listens). What libvirt cannot express natively (the
tests' QMP monitor, extra devices) goes through <qemu:commandline>.

A revert replaces QEMU: the test agent's and the test monitor's connections drop. This
class reconnects them on the next use; a command that was in flight raises AgentLost, as a
restore under it does with the QMP backend.
"""
import hashlib
import os
import subprocess
import time
from xml.sax.saxutils import quoteattr

from .vm import QMP, Agent, AgentLost, VM, VMError, _has_vmgenid, _install_handlers, _live

VIRSH = os.environ.get("VMSTATE_VIRSH", "virsh")


def lv_uri():
    uri = os.environ.get("LV_URI")
    if not uri:
        raise VMError("LV_URI not set: run under tests/libvirt/run-suite.sh")
    return uri


def virsh(*args, check=True, uri=None):
    r = subprocess.run([VIRSH, "-q", "-c", uri or lv_uri(), *args], capture_output=True,
                       text=True)
    if check and r.returncode != 0:
        raise VMError(f"virsh {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


class _DomainProc:
    """Stands in for the Popen of a harness-run QEMU: alive while the domain is active."""

    def __init__(self, vm):
        self.vm = vm

    def poll(self):
        return None if self.vm.active() else 0

    def kill(self):
        virsh("destroy", self.vm.domain, check=False)

    def wait(self, timeout=None):
        deadline = time.monotonic() + (timeout or 30)
        while self.vm.active() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.vm.active():
            raise subprocess.TimeoutExpired("virsh", timeout)
        return 0


class _Agent(Agent):
    """The test agent; its connection ending under a command means a revert replaced QEMU
    (a new connection follows): AgentLost, as a restore under a command is on QMP."""

    def exec(self, script, timeout=30, wait=None, input=None):
        try:
            return super().exec(script, timeout, wait, input)
        except VMError as e:
            if self.closed and not isinstance(e, AgentLost):
                raise AgentLost(f"QEMU replaced while {script[:60]!r} ran") from None
            raise


class LibvirtVM(VM):
    backend = "libvirt"
    _agent = None

    @property
    def agent(self):
        """The test agent's connection, made again when a revert replaced QEMU."""
        if self._agent is not None and self._agent.closed and self.active():
            self._reconnect()
        return self._agent

    @agent.setter
    def agent(self, value):
        self._agent = value

    def __init__(self, workdir, image_dir, builddir, domain=None, nbd_disks=(), **kw):
        """nbd_disks: [(socket, export name or "", target dev)], disks served over NBD (a
        qemu-nbd or vmstest.disks.StorageDaemon), stopping the VM on errors."""
        super().__init__(workdir, image_dir, **kw)
        self.builddir, self.nbd_disks = builddir, list(nbd_disks)
        self.domain = domain or "vms-" + hashlib.sha1(self.workdir.encode()).hexdigest()[:10]
        self.uri = lv_uri()
        # the bridge's ports: QEMU dials them (libvirt-setup names them DIR/DOMAIN.*.sock)
        self.a_sock = os.path.join(self.workdir, f"{self.domain}.request.sock")
        self.b_sock = os.path.join(self.workdir, f"{self.domain}.event.sock")

    def active(self):
        r = subprocess.run([VIRSH, "-q", "-c", self.uri, "domstate", self.domain],
                           capture_output=True, text=True)
        return r.returncode == 0 and r.stdout.strip() not in ("shut off", "crashed", "")

    def _domain_xml(self):
        mib = int(self.mem[:-1]) * (1024 if self.mem.endswith("G") else 1) \
            if self.mem[-1] in "MG" else int(self.mem) >> 20
        extra = list(self.extra_args)
        balloon = any("virtio-balloon" in a for a in extra)
        # libvirt's own balloon (virDomainSetMemory needs it), not a second one from argv
        if balloon:
            i = next(i for i, a in enumerate(extra) if "virtio-balloon" in a)
            del extra[i - 1:i + 1]
        # PCI devices passed through must not take the slots libvirt assigns (from 0x2 up)
        slot = 0x10
        for i, arg in enumerate(extra):
            if i and extra[i - 1] == "-device" and "-pci" in arg.split(",")[0] and \
                    "addr=" not in arg:
                extra[i] = f"{arg},bus=pci.0,addr={slot:#x}"
                slot += 1
        img = self.image
        cmdline = f"{img['append']} vmstate.ports={3 if self.ports else 1} {self.append}".strip()
        args = ["-chardev", f"socket,id=qmptest,path={self.qmp_test_sock},server=on,wait=off",
                "-mon", "chardev=qmptest,mode=control", *extra]
        # VMSTEST_QEMU_TRACE=ev1,ev2*: QEMU trace events into the domain's log (debugging)
        for ev in filter(None, os.environ.get("VMSTEST_QEMU_TRACE", "").split(",")):
            args += ["-trace", ev]
        q = quoteattr
        return f"""<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{self.domain}</name>
  <memory unit='MiB'>{mib}</memory>
  <vcpu>{self.smp}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{os.path.join(self.image_dir, img['kernel'])}</kernel>
    <initrd>{os.path.join(self.image_dir, img['initrd'])}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features>
    <acpi/>
  </features>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='allow'>qemu64</model>
    <feature policy='require' name='rdrand'/>
  </cpu>
  <clock offset='utc'>
    <timer name='hpet' present='yes'/>
  </clock>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>{subprocess.run(['sh', '-c', 'command -v qemu-system-x86_64'],
                              capture_output=True, text=True).stdout.strip()}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' error_policy='stop' rerror_policy='stop'/>
      <source file={q(self.disk_path)}/>
      <target dev='vda' bus='virtio'/>
    </disk>
{"".join(self._nbd_disk_xml(*d) for d in self.nbd_disks)}    <controller type='virtio-serial' index='0'/>
    <serial type='file'>
      <source path={q(self.console_path)} append='on'/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <source mode='bind' path={q(self.t_sock)}/>
      <target type='virtio' name='org.vmstate.test.0'/>
    </channel>
    <memballoon model='{"virtio" if balloon else "none"}'/>
    {"<genid/>" if _has_vmgenid() else ""}
  </devices>
  <qemu:commandline>
{chr(10).join(f"    <qemu:arg value={q(a)}/>" for a in args)}
  </qemu:commandline>
</domain>
"""

    @staticmethod
    def _nbd_disk_xml(sock, export, target):
        q = quoteattr
        name = f" name={q(export)}" if export else ""
        return f"""    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' error_policy='stop' rerror_policy='stop'/>
      <source protocol='nbd'{name}><host transport='unix' socket={q(sock)}/></source>
      <target dev={q(target)} bus='virtio'/>
    </disk>
"""

    def start(self):
        os.makedirs(self.workdir, exist_ok=True)
        for s in (self.qmp_test_sock, self.t_sock):
            if os.path.lexists(s):
                os.unlink(s)
        if self._fresh_disk or not os.path.exists(self.disk_path):
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", self.disk_path,
                            self.disk_size], check=True)
            open(self.console_path, "wb").close()
        self._fresh_disk, self.boot_time, self._t_cont = False, None, None
        if not virsh("list", "--all", "--name").split().count(self.domain):
            xml = os.path.join(self.workdir, "domain.xml")
            with open(xml, "w") as f:
                f.write(self._domain_xml())
            virsh("define", xml)
            if self.ports:
                subprocess.run([os.path.join(self.builddir, "host-bridge", "vmstate-admin"),
                                "libvirt-setup", self.domain, "--uri", self.uri,
                                "--dir", self.workdir, "--apply"], check=True,
                               capture_output=True)
        virsh("start", "--paused", self.domain)
        self.proc = _DomainProc(self)
        _install_handlers()
        _live.add(self)
        try:
            self._connect_test_sockets()
            if not self.paused:
                self.cont()
        except Exception as e:
            self.kill()
            raise VMError(f"the domain failed to start: {e}\n{self.qemu_log()}") from e

    def _connect_test_sockets(self):
        alive = self.active
        self._qmp = QMP(self.qmp_test_sock, alive=alive)
        self._agent = _Agent(self.t_sock, alive=alive)

    def _reconnect(self):
        """After a revert (a new QEMU): the test monitor and agent again."""
        for conn in (self._qmp, self._agent):
            if conn:
                conn.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                self._connect_test_sockets()
                return
            except VMError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def cont(self):
        self._t_cont = time.monotonic()
        virsh("resume", self.domain)

    def stop(self, timeout=3):
        self.kill()

    def kill(self):
        if self.active():
            virsh("destroy", self.domain, check=False)
        for conn in (self._qmp, self._agent):
            if conn:
                conn.close()
        _live.discard(self)

    def undefine(self):
        self.kill()
        for snap in virsh("snapshot-list", "--name", self.domain, check=False).split():
            virsh("snapshot-delete", self.domain, snap, "--metadata", check=False)
        virsh("undefine", self.domain, check=False)

    def qmp(self, cmd, _timeout=30, **args):
        if self._qmp is None or self._qmp.closed:
            self._reconnect()
        return self._qmp.cmd(cmd, _timeout, **args)

    def qemu_pid(self):
        """The domain's QEMU process id (libvirt's pid file), None when it has none."""
        try:
            with open(os.path.join(os.environ["LV_DIR"], "run", "qemu", self.domain + ".pid")) as f:
                return int(f.read().strip())
        except (KeyError, OSError, ValueError):
            return None

    def wait_replaced(self, timeout=120):
        """Wait until a new QEMU runs the domain (a revert replaced the process), then
        connect the test monitor and agent to it at once: the bridge resumes the restored
        guest as soon as its ports are back, and the monitor is to see that RESUME."""
        pid0, deadline = self.qemu_pid(), time.monotonic() + timeout
        while not (self.qemu_pid() not in (None, pid0) and self.active()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no new QEMU for {self.domain} within {timeout} s")
            time.sleep(0.01)
        self._reconnect()

    def wait_event(self, name, timeout=30, predicate=None):
        if self._qmp is None or self._qmp.closed:
            self._reconnect()
        return super().wait_event(name, timeout, predicate)

    def _port_xml(self, path, name):
        xml = os.path.join(self.workdir, f"port-{name}.xml")
        with open(xml, "w") as f:
            f.write(f"<channel type='unix'><source mode='connect' path={quoteattr(path)}>"
                    f"<reconnect enabled='yes' timeout='1'/></source>"
                    f"<target type='virtio' name='{name}'/></channel>")
        return xml

    def ports_unplug(self):
        """Hot-unplug both vmstate ports the libvirt way (detach-device waits for the guest)."""
        for path, name in ((self.a_sock, "org.vmstate.request.0"),
                           (self.b_sock, "org.vmstate.event.0")):
            virsh("detach-device", self.domain, self._port_xml(path, name), "--live")

    def ports_plug(self):
        for path, name in ((self.a_sock, "org.vmstate.request.0"),
                           (self.b_sock, "org.vmstate.event.0")):
            virsh("attach-device", self.domain, self._port_xml(path, name), "--live")

    def qemu_log(self):
        try:
            log = os.path.join(os.environ.get("LV_DIR", ""), "log", "qemu", self.domain + ".log")
            with open(log, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""


class ManagedLibvirtVM(LibvirtVM):
    """The same guest as a domain the bridge runs (managed = yes, backend = libvirt): the test
    defines it (persistent, the bridge's ports added by libvirt-setup) and the bridge starts,
    suspends, resumes and stops it. attach() connects the test monitor and agent to the QEMU
    libvirt runs now (after a start or a resume: a new QEMU)."""

    def define(self):
        """Define the domain with a fresh disk and the bridge's ports; do not start it."""
        os.makedirs(self.workdir, exist_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", self.disk_path,
                        self.disk_size], check=True)
        open(self.console_path, "wb").close()
        self._fresh_disk = False
        if self.domain in virsh("list", "--all", "--name").split():
            self.undefine()
        xml = os.path.join(self.workdir, "domain.xml")
        with open(xml, "w") as f:
            f.write(self._domain_xml())
        virsh("define", xml)
        subprocess.run([os.path.join(self.builddir, "host-bridge", "vmstate-admin"),
                        "libvirt-setup", self.domain, "--uri", self.uri, "--dir", self.workdir,
                        "--apply"], check=True, capture_output=True)

    def start(self):
        raise VMError("a managed domain is started by the bridge (vmstate-admin start)")

    def attach(self, timeout=60):
        self.detach()
        self.proc = _DomainProc(self)
        self._reconnect()
        _live.add(self)
        self.wait_ready(timeout)

    def detach(self):
        """Close the test's connections (before a suspend or stop ends the QEMU)."""
        for conn in (self._qmp, self._agent):
            if conn:
                conn.close()

    def state(self):
        return virsh("domstate", self.domain).strip()
