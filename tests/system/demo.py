#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""vmstate demo: an app inside a VM saves its VM, changes a file, asks to go back, and its
earlier self receives the message. Run by `make demo` / `./quickstart demo`.

    python3 tests/system/demo.py --image DIR --builddir BUILDDIR [--keep]

Exits non-zero if any step fails. Uses wholepath.py (QEMU + vmstate-bridged + principal).
"""
import argparse
import os
import re
import shutil
import sys
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
from vmstest import VMError, choose_accel  # noqa: E402
from vmstest.wholepath import WholePath  # noqa: E402

T0 = time.monotonic()
BOLD, DIM, OFF = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")
MESSAGE = "hello from the future"
NOTES = "/tmp/notes.txt"
# The app in the guest writes straight to the console (a host file that no restore rewinds;
# no pipe whose unread lines a restore would drop).
APP_SCRIPT = f"""#!/bin/sh
exec >/dev/console 2>&1
sh -c 'echo "demo-app: pid $$"; exec /usr/bin/vmstate-example --label before-upgrade \\
      --message "{MESSAGE}" --file {NOTES} --timeout 120'
echo "demo-app: EXIT $?"
"""


def say(text):
    """Narration: short wrapped lines."""
    print()
    for para in text.strip().split("\n"):
        print(textwrap.fill(para, 78))
    sys.stdout.flush()


def app_says(line):
    print(f"   {DIM}app |{OFF} {line}", flush=True)


def step(n, title):
    print(f"\n{BOLD}[{time.monotonic() - T0:5.1f}s] {n}. {title}{OFF}", flush=True)


class Follower:
    """Prints the app's output lines. The app writes them to the guest's console, which
    QEMU appends to a host file: unlike anything inside the guest, it is not rewound by a
    restore, so it shows both timelines in the order they happened. (A line being written
    when a snapshot is taken or loaded can come out cut in two.)"""

    PREFIX = "demo-app: "

    def __init__(self, wp):
        self.wp = wp
        self.lines, self.pos = [], 0  # every app line seen; the next one until() examines
        self.printed = 0

    def refresh(self):
        lines, on = [], False
        for l in self.wp.vm.console_log().splitlines():
            if l.startswith(self.PREFIX + "pid "):
                on = True
            if on and not l.startswith(("vmstate-init:", "[")):
                l = l[len(self.PREFIX):] if l.startswith(self.PREFIX) else l
                # The old guest's last line may be cut off by the restore; the restored
                # instance's first line then continues on it.
                cut = l.find("restored: this instance")
                if cut > 0:
                    lines.append(l[:cut] + "  <- cut off: the restore replaced the guest")
                    l = l[cut:]
                lines.append(l)
        self.lines += lines[len(self.lines):]

    def ended(self):
        return any(l.startswith("EXIT ") for l in self.lines)

    def until(self, pattern, timeout=90):
        """Wait for an app line matching pattern (after the last one matched); return it."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            self.refresh()
            while self.pos < len(self.lines):
                line = self.lines[self.pos]
                self.pos += 1
                if self.pos > self.printed:
                    self.printed = self.pos
                    if not line.startswith(("pid ", "EXIT ")):
                        app_says(line)
                if rx.search(line):
                    return line
            if self.ended():
                raise VMError(f"the app ended before printing /{pattern}/")
            if time.monotonic() > deadline:
                raise VMError(f"timed out waiting for the app to print /{pattern}/")
            time.sleep(0.1)

    def soft(self, pattern, timeout=3):
        """until(), but a line cut by a snapshot may never match: then print what there is
        and go on."""
        pos = self.pos
        try:
            return self.until(pattern, timeout)
        except VMError:
            self.pos = pos  # the lines stay printed; later patterns may still match them
            return None

    def bridge(self, pattern, timeout=90):
        """Wait for the bridge's log to show pattern (host-side progress: the app's lines
        around a snapshot may be cut)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while not rx.search(self.wp.bridge.log()):
            if time.monotonic() > deadline:
                raise VMError(f"timed out waiting for the bridge to log /{pattern}/")
            time.sleep(0.1)

    def exit_status(self, timeout=60):
        line = self.until(r"^EXIT ", timeout)
        return int(line.split()[1])


def demo(wp):
    step(1, "Start a virtual machine and the host bridge")
    accel = choose_accel(wp.image)
    how = "KVM" if accel == "kvm" else "TCG: emulated, no KVM needed"
    say(f"A real QEMU virtual machine ({how}) boots a small "
        "Linux guest. Inside it run the D-Bus system bus and vmstate-helperd, the "
        "guest half of vmstate. On the host, vmstate-bridged connects to the VM's "
        "two virtio-serial ports and to QEMU's control socket (QMP).\n"
        f"The host admin registered a principal '{wp.PRINCIPAL}' allowed to save, list "
        "and restore this VM (its secret was passed on stdin and copied into the "
        "guest; it never appears on a command line).")
    wp.start()
    say(f"Guest up in {wp.boot_s:.1f} s; the helper reports the bridge connected "
        f"(timeline epoch {wp.epoch()}).")

    step(2, "An app inside the VM registers and asks for a save")
    say("The example app (examples/vmstate-example.c, using libvmstate) registers "
        "as 'org.vmstate.Example', writes a note, and asks the host to save the "
        "whole VM as 'before-upgrade'. The call returns a request id at once: "
        "apps never wait on the host.")
    wp.vm.write_file("/tmp/demo-app.sh", APP_SCRIPT, mode=0o755)
    wp.vm.spawn(f"{wp.env()}/tmp/demo-app.sh")
    f = Follower(wp)
    f.bridge(r"accepted save from app org\.vmstate\.Example")
    f.soft(r"^asked to sav")
    pid = next((l.split()[1] for l in f.lines if l.startswith("pid ")), "?")
    say(f"(the app is process {pid} in the guest; its lines are marked 'app |')")

    step(3, "The host saves the VM; the app changes its file and asks to go back")
    say("The bridge checks the secret and the right, journals the request, and has "
        "QEMU snapshot the VM (memory, CPU, disk). When the save completes, the app "
        "changes its note and asks to restore 'before-upgrade', attaching the "
        f"message \"{MESSAGE}\" for its own past.")
    f.bridge(r"completed save: ok")
    f.soft(r"^asked to restore|^this instance will be replaced")
    f.soft(r"^this instance will be replaced", 1)

    step(4, "The VM goes back in time")
    say("QEMU loads the snapshot: every process in the guest, this app included, "
        "is now exactly as it was when the save was taken — waiting for its save "
        "to complete. Everything after that moment is gone. (The restore is so quick "
        "that the app's last lines before it, \"asked to restore ...\", may never "
        "reach the console, or be cut mid-line: the guest that was writing them no "
        "longer exists.)")
    f.bridge(r"restored state st-")
    f.until(r"^restored: ", 30)
    line = f.until(r"^message from my other instance", 30)
    got = re.search(r'"(.*)"', line).group(1)
    if got != MESSAGE:
        raise VMError(f"the restored app received {got!r}, not {MESSAGE!r}")
    note = f.until(r"says:")
    f.until(r"^my save completed too")
    status = f.exit_status()
    if status != 0:
        raise VMError(f"the app exited with status {status}")
    pids = [l.split()[1] for l in f.lines if l.startswith("pid ")]

    step(5, "What just happened")
    say(f"The instance that printed \"{MESSAGE}\" is process {pids[0]} as it was BEFORE the "
        "save: it never asked for a restore in its own timeline. The bridge kept the "
        "message on the host and, after the restore, delivered it into the restored "
        "guest, where the helper handed it to the listener registered under the "
        "app's id — the app's earlier self. The host also completed that instance's "
        "save in the new timeline, so nothing it waited for was lost.")
    if "written before the save" not in note:
        raise VMError(f"the note was not rolled back: {note}")
    say(f"The note written after the save is gone: {note.strip()}")
    rc, notes = wp.sh(f"cat {NOTES}")
    if rc != 0 or notes.strip() != "written before the save":
        raise VMError(f"{NOTES} holds {notes!r}")

    step(6, "The saved states, as the guest sees them")
    say("vmstatectl (the command-line client) asks the host for the list:")
    rc, out = wp.sh(f"{wp.env()}vmstatectl list")
    print(f"   {DIM}guest #{OFF} vmstatectl list")
    for line in out.rstrip().splitlines():
        print(f"   {DIM}guest |{OFF} {line}")
    if rc != 0 or "before-upgrade" not in out:
        raise VMError(f"vmstatectl list failed (exit {rc})")
    epoch = wp.epoch()
    say(f"The guest now runs in timeline epoch {epoch} (each restore starts a new one).")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--builddir", required=True)
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    print(f"{BOLD}vmstate demo: an app inside a VM saves the VM, changes something, and asks "
          f"to go back with a message for its earlier self.{OFF}")
    wp = WholePath(a.image, a.builddir, a.workdir)
    ok = False
    try:
        demo(wp)
        ok = True
    except KeyboardInterrupt:
        print("\ninterrupted")
    except Exception as e:  # noqa: BLE001
        print(f"\nDEMO FAILED: {e}")
        print(f"--- bridge log (tail) ---\n{wp.bridge.log()[-2500:]}")
    finally:
        wp.stop()
    took = time.monotonic() - T0
    if ok:
        print(f"\n{BOLD}Demo complete in {took:.0f} s: the restored app received "
              f"\"{MESSAGE}\".{OFF}")
    if ok and not a.keep:
        shutil.rmtree(wp.workdir, ignore_errors=True)
    else:
        print(f"logs: {wp.workdir} (bridge.log, vm/console.log)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
