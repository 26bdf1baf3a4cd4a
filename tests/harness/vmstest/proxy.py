# SPDX-License-Identifier: GPL-2.0-or-later
"""vmstest.proxy: a QMP proxy that stops QEMU's answers from reaching the bridge at a
chosen command (QmpHoldProxy)."""
import os
import re
import socket
import threading


class QmpHoldProxy:
    """Sits between the bridge and QEMU's QMP socket (qmp.sock is renamed aside while it
    runs) and forwards both ways until the bridge sends a command matching HOLD_ON; from
    then on nothing more reaches the bridge. So a test can let QEMU start a job and know,
    without racing the clock, that the bridge never saw it end. Context manager; on exit
    the real socket is back at its path."""

    def __init__(self, sock_path, hold_on):
        self.path, self.real = sock_path, sock_path + ".real"
        self.pattern = re.compile(hold_on)
        self.held = threading.Event()
        self.match = None
        os.rename(self.path, self.real)  # QEMU's listener follows the inode, not the name
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(4)
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.real)
            self.conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False),
                             daemon=True).start()

    def _pump(self, src, dst, from_bridge):
        buf = b""
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                return
            if from_bridge and not self.held.is_set():
                buf = (buf + data)[-65536:]
                m = self.pattern.search(buf)
                if m:
                    self.match = m
                    self.held.set()  # before QEMU can answer: the bridge sees nothing more
            elif not from_bridge and self.held.is_set():
                continue
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread
        except OSError:
            pass
        self.listener.close()
        for c in self.conns:
            try:  # shutdown first: a close() does not end another thread's blocked recv()
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        os.unlink(self.path)
        os.rename(self.real, self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
