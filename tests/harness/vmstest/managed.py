# SPDX-License-Identifier: GPL-2.0-or-later
"""vmstest.managed: a guest that vmstate-bridged runs itself (a managed VM).

    vm = ManagedVM(os.path.join(workdir, "m1"), image, mem="512M")
    bridge = Bridge(builddir, workdir, {"m1": vm}, per_vm={"m1": vm.section(rapid="on",
                    fast_tier="fast", slow_tier="slow")}, bridge_options={...},
                    sections={"tier fast": {...}})
    bridge.start(); bridge.lc("start", "m1")   # vmstate-admin start m1
    vm.attach(); vm.wait_ready(120)            # the test's QMP monitor and agent

The bridge starts QEMU from the template (section()["qemu_args"]): the test's own QMP
monitor (qmp-test.sock), the serial console file and the test agent's port on the
bridge's virtio-serial bus (vms-vser.0), the disk. After a suspend the QEMU process is gone:
detach() first; after a resume attach() again (a new QEMU, the same guest).
"""
import os
import signal
import subprocess

from .vm import PORT_T, QEMU_IMG, VM, VMError, _which, choose_accel

INI_CHUNK = 150  # inih reads lines of at most 200 bytes: long values go on continuation lines


class _Pid:
    """Stands in for subprocess.Popen where VM expects self.proc: QEMU is the bridge's child."""

    def __init__(self, pid):
        self.pid = pid

    def poll(self):
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            return None if state not in ("Z", "X") else 0
        except OSError:
            return 0

    def kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self, timeout=None):
        import time
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("qemu", timeout)
            time.sleep(0.02)
        return 0


class ManagedVM(VM):
    """A VM whose QEMU the bridge starts; workdir is its run_dir (sockets, pidfile, log)."""

    def template(self, accel="tcg"):
        """The qemu_args template: everything but what the bridge adds itself (memory, QMP,
        ports A and B, the RAM backend, the console)."""
        def esc(path):
            return path.replace(",", ",,")
        img = self.image_dir
        cpu = "-cpu qemu64,+rdrand " if accel == "tcg" else ""
        append = f"{self.image['append']} vmstate.ports=3 {self.append}".strip()
        args = [f"-accel {accel} {cpu}-smp {self.smp} -nodefaults -no-user-config",
                "-display none -no-reboot",
                f"-kernel {os.path.join(img, self.image['kernel'])}",
                f"-initrd {os.path.join(img, self.image['initrd'])}",
                f'-append "{append}"',
                f"-chardev file,id=ser0,path={esc(self.console_path)},append=on",
                "-serial chardev:ser0",
                f"-chardev socket,id=qmp1,path={esc(self.qmp_test_sock)},server=on,wait=off",
                "-mon chardev=qmp1,mode=control",
                f"-chardev socket,id=cht,path={esc(self.t_sock)},server=on,wait=off",
                f"-device virtserialport,bus=vms-vser.0,chardev=cht,id=portt,name={PORT_T}",
                f"-blockdev driver=file,filename={esc(self.disk_path)},node-name=file0",
                "-blockdev driver=qcow2,file=file0,node-name=disk0",
                "-device virtio-blk-pci,drive=disk0,id=vblk0,werror=stop,rerror=stop"]
        args += [" ".join(self.extra_args[i:i + 2]) for i in range(0, len(self.extra_args), 2)]
        for a in args:
            if len(a) > INI_CHUNK:
                raise VMError(f"template line too long for the INI reader: {a}")
        return "\n  ".join(args)

    def section(self, **keys):
        """The [vm NAME] keys of this managed VM (add rapid, tiers, ... as keyword args)."""
        self.prepare()
        mem = self.mem.upper()
        return {"managed": "yes", "memory": mem, "run_dir": self.workdir,
                "qemu_args": self.template(choose_accel(self.image_dir, self.accel)),
                "job_timeout": 120, **keys}

    def prepare(self):
        """The run directory and a fresh disk (once)."""
        os.makedirs(self.workdir, exist_ok=True)
        if len(self.qmp_test_sock.encode()) > 100:
            raise VMError(f"run_dir {self.workdir} too long for unix socket paths")
        if self._fresh_disk or not os.path.exists(self.disk_path):
            subprocess.run([_which(QEMU_IMG, "qemu-utils"), "create", "-q", "-f", "qcow2",
                            self.disk_path, self.disk_size], check=True)
            open(self.console_path, "wb").close()
            self._fresh_disk = False

    def pid(self):
        """QEMU's pid from its pidfile (None if absent)."""
        try:
            with open(os.path.join(self.workdir, "qemu.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def start(self):
        raise VMError("a managed VM is started by the bridge (vmstate-admin start), then attach()")

    def attach(self, timeout=30):
        """Connect the test's QMP monitor and agent to the QEMU the bridge runs now."""
        from . import vm as vmmod
        self.detach()
        pid = self.pid()
        if not pid:
            # QEMU removes its pidfile when it exits: say why it did
            raise VMError(f"no qemu.pid in {self.workdir} (QEMU exited?)\n--- qemu.log:\n"
                          f"{self.qemu_log()[-2000:]}\n--- console:\n"
                          f"{self.console_log()[-3000:]}")
        self.proc = _Pid(pid)

        def alive():
            return self.proc.poll() is None
        self._qmp = vmmod.QMP(self.qmp_test_sock, timeout=timeout, alive=alive)
        self.agent = vmmod.Agent(self.t_sock, timeout=timeout, alive=alive)
        vmmod._live.add(self)
        return pid

    def detach(self):
        """Close the test's connections (before a suspend or stop takes QEMU away)."""
        for conn in (self._qmp, self.agent):
            if conn:
                conn.close()
        self._qmp = self.agent = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=3):
        self.kill()

    def kill(self):
        """SIGKILL the QEMU the bridge runs (test teardown)."""
        from . import vm as vmmod
        self.detach()
        pid = self.pid()
        if pid and _Pid(pid).poll() is None:
            _Pid(pid).kill()
            _Pid(pid).wait(5)
        vmmod._live.discard(self)
