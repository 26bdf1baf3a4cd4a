# SPDX-License-Identifier: GPL-2.0-or-later
"""vmstest.disks: storage for the VMs of the I/O-error tests and benchmark — a qemu-nbd
server that can be killed and restarted, QEMU -blockdev/-device arguments (a file, a
blkdebug that fails writes), the guest's view of a disk, a guest writer script.

    nbd = NBDServer(raw_path, sock); nbd.start()
    vm = VM(workdir, image, extra_args=nbd.blockdev_args("nbd0", "vblk1"))

On libvirt a domain's disks are libvirt's: no blkdebug, and the private libvirtd's mount
namespace does not see a tmpfs mounted after it started. StorageDaemon serves such nodes
(blkdebug_spec, file_spec) over NBD from a qemu-storage-daemon on the host, and
LibvirtVM(nbd_disks=[(socket, export, target)]) attaches them as <disk type='network'>.
"""
import json
import os
import subprocess
import time

from .vm import VMError, connect_unix


def io_bridge_options(workdir):
    """[bridge] keys of the I/O-error suites: the io event socket in workdir (Bridge.events
    reads it) and privsep = no."""
    return {"privsep": "no", "io_event_socket": os.path.join(workdir, "io-events.sock")}


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
        try:  # healthy = accepting connections
            connect_unix(self.sock, 10, lambda: self.proc.poll() is None, 0.005).close()
        except VMError:
            raise VMError("qemu-nbd did not start") from None
        return time.time()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def blockdev_args(self, node, dev_id):
        return ["-blockdev", f"driver=nbd,server.type=unix,server.path={self.sock},node-name={node}",
                "-device", f"virtio-blk-pci,drive={node},id={dev_id},werror=stop,rerror=stop"]


class StorageDaemon:
    """qemu-storage-daemon exporting block nodes (-blockdev dicts) over NBD on one UNIX
    socket, each under its node name; kill() and start() again like NBDServer."""

    def __init__(self, sock):
        self.sock, self.specs, self.proc = sock, [], None

    def add(self, spec):
        self.specs.append(spec)
        return spec["node-name"]

    def start(self):
        if os.path.lexists(self.sock):
            os.unlink(self.sock)
        argv = ["qemu-storage-daemon", "--nbd-server", f"addr.type=unix,addr.path={self.sock}"]
        for i, spec in enumerate(self.specs):
            node = spec["node-name"]
            argv += ["--blockdev", json.dumps(spec),
                     "--export", f"type=nbd,id=exp{i},node-name={node},name={node},writable=on"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            connect_unix(self.sock, 10, lambda: self.proc.poll() is None, 0.005).close()
        except VMError:
            raise VMError(f"qemu-storage-daemon did not start: {self.proc.stderr.read()}") from None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def blkdebug_spec(path, node, once, errno_=5):
    """A raw file behind blkdebug failing write_aio with errno_ (once or always)."""
    return {"driver": "raw", "node-name": node,
            "file": {"driver": "blkdebug",
                     "inject-error": [{"event": "write_aio", "errno": errno_, "once": once}],
                     "image": {"driver": "file", "filename": path}}}


def file_spec(path, node):
    return {"driver": "raw", "node-name": node, "file": {"driver": "file", "filename": path}}


def blkdebug_args(path, node, dev_id, once, errno_=5):
    """QEMU arguments: blkdebug_spec as a virtio disk that stops the VM on errors."""
    return ["-blockdev", json.dumps(blkdebug_spec(path, node, once, errno_)),
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
