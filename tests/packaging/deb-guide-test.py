#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Follow doc/admin-guide.md with the installed Debian packages: in ROOT (a Debian 12 root
where check-debs.sh installed the .debs) configure the bridge for one VM, add a principal
and its rights, start a QEMU guest (the project's test image) whose two ports and QMP
socket are in ROOT's /run/vmstate/vm1, start the installed bridge as user vmstate, and in
the guest save and list with vmstatectl and run the example app across a restore.
Every step checks its result; the first failure ends the test with exit 1."""
import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
from vmstest.vm import VM  # noqa: E402

SECRET = "correct horse battery staple"
MESSAGE = "hello from the future"
CONF = """[bridge]
database = /var/lib/vmstate/bridge.db
admin_socket = /run/vmstate/admin.sock

[vm vm1]
port_a = /run/vmstate/vm1/a.sock
port_b = /run/vmstate/vm1/b.sock
qmp = /run/vmstate/vm1/qmp.sock
nodes = disk0
"""


def fail(what, detail=""):
    print(f"FAIL: {what}\n{detail}".rstrip())
    sys.exit(1)


def ok(what):
    print(f"ok   {what}", flush=True)


def in_container(root, argv):
    """argv run with `root` as its root file system, as a container would: a private mount
    namespace where root becomes / by pivot_root (not chroot: the kernel refuses user
    namespaces to a chrooted process, and the bridge's guest reader needs one to confine
    itself when the bridge runs as its own user, as the unit runs it)."""
    script = (f'mount --rbind "{root}" "{root}" && cd "{root}" && mkdir -p .pivot && '
              'pivot_root . .pivot && cd / && umount -l /.pivot && exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]


def in_root(root, *argv, input=None, check=True):
    r = subprocess.run(["chroot", root, *argv], input=input, text=True, capture_output=True)
    if check and r.returncode != 0:
        fail(" ".join(argv), r.stdout + r.stderr)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--srcdir", required=True)
    a = ap.parse_args()
    root = os.path.abspath(a.root)

    # 1. what the packages installed, where Debian 12 reads it
    for f in ("/usr/sbin/vmstate-bridged", "/usr/sbin/vmstate-admin", "/usr/bin/vmstatectl",
              "/usr/sbin/vmstate-helperd", "/lib/systemd/system/vmstate-bridged.service",
              "/lib/systemd/system/vmstate-helperd.service",
              "/lib/udev/rules.d/70-vmstate-helperd.rules",
              "/usr/share/dbus-1/system.d/org.vmstate.Helper1.conf",
              "/usr/lib/sysusers.d/vmstate.conf", "/usr/lib/tmpfiles.d/vmstate.conf",
              "/usr/share/man/man5/vmstate-bridged.conf.5.gz",
              "/usr/share/man/man3/libvmstate.3.gz", "/usr/include/vmstate.h",
              "/usr/share/doc/vmstate-host/admin-guide.md.gz", "/etc/vmstate/vmstate-bridged.conf"):
        if not os.path.exists(root + f):
            fail(f"installed: {f}")
    in_root(root, "getent", "passwd", "vmstate")
    st = os.stat(root + "/var/lib/vmstate")
    if (st.st_mode & 0o777) != 0o700:
        fail(f"/var/lib/vmstate mode {oct(st.st_mode)}")
    ok("packages installed: programs, units, udev rule, bus policy, sysusers/tmpfiles, "
       "man pages, user vmstate")

    # 2. the guide, section 1 (no systemd in the root) and 2: the VM's socket directory
    in_root(root, "install", "-d", "-o", "vmstate", "-g", "vmstate", "-m", "2770", "/run/vmstate")
    in_root(root, "install", "-d", "-g", "vmstate", "-m", "2770", "/run/vmstate/vm1")
    # 3. the bridge's configuration
    with open(root + "/etc/vmstate/vmstate-bridged.conf", "w") as f:
        f.write(CONF)
    out = in_root(root, "vmstate-bridged", "--check").stdout
    if "OK, 1 VM(s)" not in out:
        fail("vmstate-bridged --check", out)
    ok("guide 3: vmstate-bridged --check: " + out.strip())
    # 4. a principal (secret from a file, never argv) and its rights; a typo is refused
    with open(root + "/root/notes-secret", "w") as f:
        f.write(SECRET + "\n")
    in_root(root, "vmstate-admin", "principal-add", "notes-app", "--secret-file",
            "/root/notes-secret")
    in_root(root, "vmstate-admin", "grant", "notes-app", "vm1", "save", "list", "restore")
    r = in_root(root, "vmstate-admin", "grant", "notes-app", "vm9", "save", check=False)
    if r.returncode != 1 or "no VM 'vm9'" not in r.stderr:
        fail("grant for an unknown VM must fail", r.stderr)
    db = os.stat(root + "/var/lib/vmstate/bridge.db")
    vmstate_uid = int(in_root(root, "id", "-u", "vmstate").stdout)
    if db.st_uid != vmstate_uid:
        fail(f"journal owned by uid {db.st_uid}, not vmstate ({vmstate_uid})")
    ok("guide 4: principal notes-app, rights on vm1; the journal belongs to vmstate")

    workdir = root + "/run/vmstate/vm1"
    bridge = None
    os.umask(0o007)  # guide 2: QEMU's sockets let group vmstate connect
    vm = VM(workdir, a.image, mem="128M")
    try:
        vm.start()
        ok("guide 2: QEMU started with the two ports and the QMP socket in /run/vmstate/vm1")
        log = open(os.path.join(workdir, "..", "bridge.log"), "w")
        bridge = subprocess.Popen(in_container(root, ["runuser", "-u", "vmstate", "--",
                                                      "vmstate-bridged"]),
                                  stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            rc, out = vm.run("dbus-send --system --print-reply --dest=org.vmstate.Helper1 "
                             "/org/vmstate/Helper1 org.freedesktop.DBus.Properties.Get "
                             "string:org.vmstate.Helper1 string:BridgeConnected")
            if rc == 0 and "boolean true" in out:
                break
            if time.monotonic() > deadline or bridge.poll() is not None:
                fail("the guest's helper never saw the installed bridge",
                     open(log.name).read()[-3000:])
            time.sleep(0.5)
        ok("the installed bridge (user vmstate) serves vm1; the guest's helper is connected")
        r = in_root(root, "vmstate-admin", "status")
        if "vm1" not in r.stdout:
            fail("vmstate-admin status names vm1", r.stdout)
        ok("vmstate-admin status: " + " ".join(r.stdout.split())[:100])

        # 5. in the guest: the secret handed to the app, then vmstatectl and the example
        vm.check(f"umask 077; printf '%s\\n' '{SECRET}' > /root/notes-secret")
        env = "VMSTATE_PRINCIPAL=notes-app VMSTATE_APP_ID=notes-app "
        rc, out = vm.run(env + "vmstatectl --secret-file /root/notes-secret --wait save first",
                         timeout=180)
        if rc != 0 or "save" not in out:
            fail(f"vmstatectl --wait save: exit {rc}", out)
        ok("guide 5: vmstatectl --wait save first: " + out.strip().splitlines()[0])
        rc, out = vm.run(env + "vmstatectl --secret-file /root/notes-secret list --tree",
                         timeout=120)
        if rc != 0 or "first" not in out or "└─" not in out:
            fail(f"vmstatectl list --tree: exit {rc}", out)
        ok("vmstatectl list --tree shows state 'first'")
        vm.check("cat > /tmp/app.sh <<'EOS'\n#!/bin/sh\nexec >/dev/console 2>&1\n"
                 "VMSTATE_PRINCIPAL=notes-app VMSTATE_SECRET=$(cat /root/notes-secret) "
                 f"/usr/bin/vmstate-example --app-id notes-app --label before-upgrade "
                 f"--message '{MESSAGE}' --file /tmp/notes.txt --timeout 150\n"
                 "echo \"example: EXIT $?\"\nEOS\nchmod +x /tmp/app.sh; setsid /tmp/app.sh &")
        want = f'message from my other instance: "{MESSAGE}"'
        deadline = time.monotonic() + 200
        while True:
            with open(vm.console_path, errors="replace") as f:
                console = f.read()
            if want in console and "example: EXIT 0" in console:
                break
            if "example: EXIT" in console.replace("example: EXIT 0", "") or \
                    time.monotonic() > deadline:
                fail("the example app across a restore", console[-3000:])
            time.sleep(0.5)
        ok("the example app: saved, restored, and its restored instance got the message")
    finally:
        if bridge:
            bridge.terminate()
            try:
                bridge.wait(10)
            except subprocess.TimeoutExpired:
                bridge.kill()
        vm.stop()
    print("check-debs: the packages install on Debian 12 and the admin guide works")


if __name__ == "__main__":
    main()
