# SPDX-License-Identifier: GPL-2.0-or-later
"""WireClient: the guest-side wire client of the bridge suites (tests/bridge/vms-wire-client).

It runs in the guest, reads commands from the FIFO /tmp/wc.in and logs one line per
protocol message to /tmp/wc.log (see vms-wire-client.c for the commands and lines).
"""
import re
import time

from .vm import AgentLost, VMError


class WireClient:
    """tests/bridge/vms-wire-client running in one guest (it must be in the image)."""

    def __init__(self, vm):
        self.vm = vm
        vm.spawn("/usr/bin/vms-wire-client -i /tmp/wc.in", "/tmp/wc.log")
        self.wait(r"^PORTS ", 20)

    def cmd(self, line, delay=False):
        if delay:  # the guest may be restored under our feet: do not leave a command in flight
            self.vm.check(f"(sleep 0.5; printf '{line}\\n' > /tmp/wc.in) >/dev/null 2>&1 &")
        else:
            self.vm.check(f"printf '{line}\\n' > /tmp/wc.in")

    def log(self):
        for _ in range(20):
            try:
                return self.vm.read_file("/tmp/wc.log").decode("utf-8", "replace")
            except AgentLost:
                continue
        raise VMError("guest agent keeps getting lost")

    def wait(self, pattern, timeout=60):
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.M)
        while True:
            text = self.log()
            m = rx.search(text)
            if m:
                return m
            if time.monotonic() > deadline:
                raise TimeoutError(f"no /{pattern}/ in the client log:\n{text[-3000:]}")
            time.sleep(0.2)

    def request(self, *words, restore=False):
        before = len(re.findall(r"^SENT id=", self.log(), re.M))
        if restore and getattr(self.vm, "backend", "qmp") == "libvirt":
            # libvirt's revert starts a new QEMU: wait for it (the harness reconnects)
            self.cmd("req " + " ".join(words), delay=True)
            self.vm.wait_replaced(120)
            return None
        if restore:
            self.vm.clear_events()
            self.cmd("req " + " ".join(words), delay=True)
            self.vm.wait_event("JOB_STATUS_CHANGE", 120, lambda e: e["data"]["id"].startswith(
                "vms-") and e["data"]["status"] == "concluded")
            self.vm.agent.restored()
            return None
        self.cmd("req " + " ".join(words))
        deadline = time.monotonic() + 20
        while True:
            ids = re.findall(r"^SENT id=(\w+)", self.log(), re.M)
            if len(ids) > before:
                return ids[before]
            if time.monotonic() > deadline:
                raise TimeoutError("request not sent")
            time.sleep(0.1)

    def event(self, rid, timeout=120, extra=""):
        return self.wait(rf"^EVENT id={rid} .*{extra}.*$", timeout).group(0)
