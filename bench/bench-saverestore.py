#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark 2: save and restore breakdown — QEMU's job time vs. the app's request-to-event
time; our overhead is the difference (target: p99 under 2 ms).

For each configuration (guest RAM, idle or filled), a guest app (vsbench-app saveloop) runs N
rounds of: save -> wait for the completion -> restore that state; the instance that runs
in the restored state receives the restore's completion. The app writes a mark byte on an
extra virtio-serial port (org.vmstate.bench.0) at each step, and the host timestamps the
marks as they arrive (CLOCK_REALTIME, like QMP's event timestamps; the guest's own clock
stops while the VM is paused, so it cannot time a save):
  app time     save: mark 's' (before vmstate_save) -> mark 'e' (completion received)
               restore: mark 'R' (before vmstate_restore) -> mark 'r' (the restored
               instance received the restore's completion)
  QEMU time    JOB_STATUS_CHANGE 'created' -> 'concluded' of the bridge's snapshot-save /
               snapshot-load job (QMP event timestamps, seen on the harness's QMP monitor)
  overhead     app time - QEMU time, per request
Both mark deliveries cost one guest->host port write (~0.1-0.2 ms, the floor), so they
roughly cancel. "filled": a tmpfs file of random bytes fills most of the guest's RAM.

--floor: each configuration also runs once with vmstate out of the way (run_floor): a guest
process asks on port A and waits on port B, a host thread runs the same QMP jobs and answers
the moment they conclude; the same marks. Its overhead is what QEMU and the guest's own
wake-up cost around a job (the pause, a restored guest's cold start), the floor of ours.

Usage: bench-saverestore.py --image DIR --builddir BUILD [--configs 128M:idle:20,...] [--floor]
"""
import json
import os
import re
import socket
import sqlite3
import sys
import threading
import time

import benchlib as bl
import vmstate_path as vp

MARK_PORT = "org.vmstate.bench.0"
RELAY_NAME = "org.vmstate.BenchFloor"  # allowed by bench/guest-dbus-limits.conf
FILL_MIB = {"128M": 40, "512M": 352}  # 64 of 128 MiB: the guest OOM-killed dd


class Marks:
    def __init__(self, path):
        self.sock = bl.harness.connect_unix(path, 10)
        self.marks, self.cond = [], threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            b = self.sock.recv(64)
            t = time.time()
            if not b:
                return
            with self.cond:
                self.marks += [(chr(c), t) for c in b]
                self.cond.notify_all()

    def wait_for(self, ch, count, timeout):
        with self.cond:
            if not self.cond.wait_for(lambda: sum(1 for c, _ in self.marks if c == ch) >= count,
                                      timeout):
                raise TimeoutError(f"mark {ch!r} x{count}: have {self.marks}")


def ts(ev):
    return ev["timestamp"]["seconds"] + ev["timestamp"]["microseconds"] / 1e6


def job_times(events, kind):
    """[(created, concluded)] of the jobs of QMP command `kind`, in creation order."""
    jobs, order = {}, []
    for ev in events:
        if ev["event"] != "JOB_STATUS_CHANGE":
            continue
        jid, st = ev["data"]["id"], ev["data"]["status"]
        if st == "created":
            jobs[jid] = [ts(ev), None]
            order.append(jid)
        elif st == "concluded" and jid in jobs:
            jobs[jid][1] = ts(ev)
    return [tuple(jobs[j]) for j in order if jobs[j][1] is not None and kind(j)]


def fill(vm, mem, mode):
    if mode != "filled":
        return
    mib = FILL_MIB.get(mem, 64)
    t0 = time.monotonic()
    vm.check(f"mount -o remount,size=95% /dev/shm && "
             f"dd if=/dev/urandom of=/dev/shm/fill bs=1048576 count={mib} 2>/dev/null && free -m",
             timeout=600)
    bl.log(f"filled {mib} MiB in {time.monotonic() - t0:.1f} s")


def mark_vm(a, wd, mem):
    """A VM with the mark port beside the vmstate ports; (VM, the mark socket's path)."""
    mark_sock = os.path.join(wd, "mark.sock")
    if os.path.lexists(mark_sock):
        os.unlink(mark_sock)
    extra = ["-chardev", f"socket,id=mk0,path={mark_sock},server=on,wait=off",
             "-device", f"virtserialport,bus=vser0.0,chardev=mk0,id=portmk,name={MARK_PORT}"]
    return bl.VM(wd, a.image, mem=mem, extra_args=extra, disk_size="1G"), mark_sock


def overheads(marks, saves, loads, rounds, saves_only=False):
    """{op: (app, job, overhead) stats} from the marks and the jobs' (created, concluded);
    the save's only with saves_only (saves in a row, no restore)."""
    m = {c: [t for ch, t in marks.marks if ch == c] for c in "seRr"}
    ops = [("save", ("s", "e"), saves)] + ([] if saves_only else [("restore", ("R", "r"), loads)])
    n = min(min(len(m[a0]), len(m[a1]), len(jl)) for _, (a0, a1), jl in ops)
    if n < rounds:
        bl.log(f"warning: {n} complete rounds of {rounds} (marks {[(c, len(v)) for c, v in m.items()]}"
               f", jobs {len(saves)} + {len(loads)})")
    res = {}
    for op, (a0, a1), jl in ops:
        app = [(m[a1][i] - m[a0][i]) * 1e6 for i in range(n)]
        job = [(jl[i][1] - jl[i][0]) * 1e6 for i in range(n)]
        ovh = [x - y for x, y in zip(app, job)]
        res[op] = (bl.stats(app), bl.stats(job), bl.stats(ovh))
    return res, m, n


def run_config(a, mem, mode, rounds, saves_only=False):
    """saveloop's rounds (save, then restore that state) through vmstate; with saves_only,
    that many saves in a row (`vsbench-app saves`): a warm guest, where a save after a
    restore runs code the restore left untranslated."""
    wd = bl.workdir(a, f"sr-{mem}-{mode}{'-saves' if saves_only else ''}")
    vm, mark_sock = mark_vm(a, wd, mem)
    with vm:
        bl.log(f"{mem} {mode}: boot {vm.wait_ready():.1f} s")
        marks = Marks(mark_sock)
        dev = vm.port_device(MARK_PORT)
        fill(vm, mem, mode)
        # info: the bridge's log times the restore's stages (restore_stages)
        level = os.environ.get("VSBENCH_BRIDGE_LOG", "info")
        with vp.Path(a.builddir, wd, {"vm1": vm}, cost="test",
                     log_level="info" if level in ("warning", "err") else level) as path:
            vp.start_guest(vm)
            vm.clear_events()
            prog = "saves" if saves_only else "saveloop"
            vm.spawn(f"exec vsbench-app {prog} {rounds} {dev}", log="/tmp/saveloop.log")
            try:
                marks.wait_for("q", 1, 60 + rounds * 60)
            except TimeoutError:
                bl.log(vm.read_file("/tmp/saveloop.log").decode(errors="replace"))
                raise
            events = vm.events
            if a.workdir:  # the helper's log beside the bridge's (VSBENCH_HELPER_LOG=debug)
                with open(os.path.join(wd, "helperd.log"), "wb") as f:
                    f.write(vm.read_file("/tmp/helperd.log"))
    # The bridge's job ids are its own; tell save from load by the order of STOP/RESUME-free
    # facts we know: jobs alternate save, load, save, load...
    jobs = job_times(events, lambda j: True)
    saves, loads = (jobs, []) if saves_only else (jobs[0::2], jobs[1::2])
    res, m, n = overheads(marks, saves, loads, rounds, saves_only)
    res["save_stages"] = save_stages(os.path.join(wd, "bridge.log"), m["s"][:n], saves[:n],
                                     m["e"][:n])
    res["restore_stages"] = {} if saves_only else restore_stages(
        os.path.join(wd, "bridge.log"), m["R"][:n], loads[:n], m["r"][:n])
    return res


class FloorHost:
    """The host side of `vsbench-port saveloop` in the guest: on 'S' from port A a
    snapshot-save of a new tag, on 'L' a snapshot-load of the last one, each the bridge's
    command (QMP, vmstate and devices disk0), and the same byte on port B the moment QEMU
    reports the job concluded; the job is dismissed after that. No vmstate code runs, on
    either side: what the guest's app time holds beyond QEMU's job is the floor of any
    guest-initiated save or restore through these ports."""

    def __init__(self, vm, design_db=None):
        self.vm, self.jobs = vm, {"snapshot-save": [], "snapshot-load": []}
        self.times = []  # per save in design mode: (Prepare sent, Ready read, answer sent)
        self.a = bl.harness.connect_unix(vm.a_sock, 10)
        self.b = bl.harness.connect_unix(vm.b_sock, 10)
        self.error, self.busy = None, threading.Event()  # set from a request to its dismissal
        # design_db (a file path): a save's design floor (`vsbench-dbus relay` in the guest).
        # A save request is committed durably, then prepared ('P' on port B, the guest's 'R'
        # back), and its completion committed durably before the answer: the least of the
        # journal's work (SQLite, WAL, synchronous=FULL as vsbench-sqlite) and of the
        # handshake any implementation of this design does around the job.
        self.db = None
        if design_db:
            self.db = sqlite3.connect(design_db, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("CREATE TABLE IF NOT EXISTS r (n INTEGER, what TEXT, body TEXT)")
        threading.Thread(target=self._run, daemon=True).start()

    def _commit(self, n, what):
        if self.db:
            self.db.execute("INSERT INTO r VALUES (?, ?, ?)", (n, what, "x" * 200))

    def settle(self, timeout=30):
        """Wait until the last job is dismissed: QEMU must not quit under the thread."""
        deadline = time.monotonic() + timeout
        while self.busy.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)

    def _job(self, cmd, tag, n):
        job = f"floor-{cmd}-{n}"

        def is_(status):
            return lambda e: e["data"]["id"] == job and e["data"]["status"] == status
        self.vm.qmp(cmd, **{"job-id": job}, tag=tag, vmstate="disk0", devices=["disk0"])
        created = self.vm.wait_event("JOB_STATUS_CHANGE", 120, is_("created"))
        done = self.vm.wait_event("JOB_STATUS_CHANGE", 120, is_("concluded"))
        return job, (ts(created), ts(done))

    def _run(self):
        n, tag = 0, None
        try:
            while True:
                c = self.a.recv(1)
                if not c:
                    return
                self.busy.set()
                n += 1
                if c == b"S":
                    cmd, tag = "snapshot-save", f"floor{n}"
                    if self.db:
                        self._commit(n, "accepted")
                        self.b.sendall(b"P")
                        prep = time.time()
                        if self.a.recv(1) != b"R":
                            raise RuntimeError("floor: no Ready ('R') after 'P'")
                        ready = time.time()
                elif c == b"L" and tag:
                    cmd = "snapshot-load"
                else:
                    raise RuntimeError(f"floor: unexpected {c!r} on port A")
                job, times = self._job(cmd, tag, n)
                self._commit(n, "completed")
                self.b.sendall(c)
                if self.db:
                    self.times.append((prep, ready, time.time()))
                self.jobs[cmd].append(times)
                err = [j.get("error") for j in self.vm.qmp("query-jobs") if j["id"] == job]
                self.vm.qmp("job-dismiss", id=job)
                self.busy.clear()
                if err and err[0]:
                    raise RuntimeError(f"floor: {cmd} {tag}: {err[0]}")
        except Exception as e:  # reported by run_floor
            self.error = e


def run_floor(a, mem, mode, rounds, saves_only=False, design=False):
    """The same rounds and marks as run_config with vmstate out of the way (FloorHost and
    vsbench-port saveloop, or saves): {op: (app, job, overhead) stats}. With design (saves
    only): a save's design floor, FloorHost with its journal and handshake and the guest's
    `vsbench-dbus relay` and `saves` (the same hops as vmstate's, no vmstate code)."""
    wd = bl.workdir(a, f"sr-floor-{mem}-{mode}{'-saves' if saves_only else ''}"
                       f"{'-design' if design else ''}")
    vm, mark_sock = mark_vm(a, wd, mem)
    with vm:
        bl.log(f"floor {mem} {mode}: boot {vm.wait_ready():.1f} s")
        marks = Marks(mark_sock)
        dev, dev_a, dev_b = (vm.port_device(p) for p in
                             (MARK_PORT, bl.harness.PORT_A, bl.harness.PORT_B))
        fill(vm, mem, mode)
        host = FloorHost(vm, os.path.join(wd, "design.db") if design else None)
        prog = "saves" if saves_only else "saveloop"
        if design:
            vm.spawn(f"exec vsbench-dbus relay {RELAY_NAME} {dev_a} {dev_b}", log="/tmp/relay.log")
            bl.wait_guest_file(vm, "/tmp/relay.log", "ready")
            vm.spawn(f"exec vsbench-dbus saves {RELAY_NAME} {rounds} {dev}",
                     log="/tmp/floorloop.log")
        else:
            vm.spawn(f"exec vsbench-port {prog} {rounds} {dev_a} {dev_b} {dev}",
                     log="/tmp/floorloop.log")
        try:
            marks.wait_for("q", 1, 60 + rounds * 60)
        except TimeoutError:
            bl.log(f"floor host: {host.error}")
            bl.log(vm.read_file("/tmp/floorloop.log").decode(errors="replace"))
            raise
        host.settle()
    if host.error:
        raise host.error
    res, m, n = overheads(marks, host.jobs["snapshot-save"], host.jobs["snapshot-load"], rounds,
                          saves_only)
    if design:  # the same stages as vmstate's save_stages, from the host thread's clock
        res["save_stages"] = stage_stats(
            (s_ask, prep, ready, j0, j1, done, s_got) for (prep, ready, done), (j0, j1), s_ask,
            s_got in zip(host.times, host.jobs["snapshot-save"], m["s"][:n], m["e"][:n]))
    return res


def log_time(line, day0):
    """Seconds since the epoch of a bridge log line (HH:MM:SS.mmm, today's UTC date)."""
    h, mi, s = line[:12].split(":")
    return day0 + int(h) * 3600 + int(mi) * 60 + float(s)


def log_lines(log_path):
    """[(seconds since the epoch, line)] of the bridge's log, or [] without one."""
    try:
        lines = open(log_path, errors="replace").read().splitlines()
    except OSError:
        return []
    day0 = int(time.time()) // 86400 * 86400
    return [(log_time(ln, day0), ln) for ln in lines if re.match(r"\d\d:\d\d:\d\d\.\d", ln)]


def save_stages(log_path, asked, jobs, received):
    """Where a save's overhead goes, per save, from the bridge's log (host clock, ms
    resolution) between the app's marks: request -> Prepare sent (the app's call, the port,
    the bridge's durable accept), Prepare -> the guest's Ready (PrepareSave to the guest's
    listeners and their Proceed), Ready -> QEMU job start, job end -> completion sent (the
    bridge journals it), completion sent -> the app has it (the resumed guest's helper and
    app). Returns {stage: stats} or {} when the log has no such lines."""
    lines = log_lines(log_path)
    marks = {k: [t for t, ln in lines if k in ln]
             for k in ("save: Prepare sent", "guest ready for the save", "completed save")}

    def after(kind, t0, limit):
        return next((t for t in marks[kind] if t0 - 0.002 <= t <= limit + 0.002), None)

    def rows():
        for (j0, j1), s_ask, s_got in zip(jobs, asked, received):
            prep = after("save: Prepare sent", s_ask, j0)
            ready = prep and after("guest ready for the save", prep, j0)
            done = after("completed save", j1, s_got)
            if prep and ready and done:
                yield s_ask, prep, ready, j0, j1, done, s_got
    return stage_stats(rows())


def stage_stats(rows):
    """{stage: stats} of a save's stages from rows (asked, Prepare sent, Ready, job start,
    job end, completion sent, app has it), host-clock seconds; {} without rows."""
    stages = {"request -> Prepare sent": [], "Prepare -> guest's Ready": [],
              "Ready -> job start": [], "job end -> completion sent": [],
              "completion sent -> app has the event": []}
    for s_ask, prep, ready, j0, j1, done, s_got in rows:
        stages["request -> Prepare sent"].append(max(0.0, prep - s_ask) * 1e6)
        stages["Prepare -> guest's Ready"].append((ready - prep) * 1e6)
        stages["Ready -> job start"].append(max(0.0, j0 - ready) * 1e6)
        stages["job end -> completion sent"].append(max(0.0, done - j1) * 1e6)
        stages["completion sent -> app has the event"].append(max(0.0, s_got - done) * 1e6)
    return {k: bl.stats(v) for k, v in stages.items() if v}


def restore_stages(log_path, asked, jobs, received):
    """Where a restore's overhead goes, per restore, from the bridge's log (host clock, ms
    resolution) between the app's marks: request -> QEMU job start (guest, helper, bridge
    accept), job end -> Timeline sent (the bridge journals the new timeline), Timeline ->
    the restored guest's Hello (the restored guest wakes, steps its clock, says Hello),
    Hello -> the restored app has the completion (Welcome, clock refinement, Restored,
    delivery). Returns {stage: stats} or {} when the log has no such lines."""
    tls, hellos = [], []
    for t, ln in log_lines(log_path):
        if "timeline epoch" in ln and "restored state" in ln:
            tls.append(t)
        elif "hello: version" in ln:
            hellos.append(t)
    stages = {"request -> job start": [], "job end -> Timeline sent": [],
              "Timeline -> restored guest's Hello": [], "Hello -> app has the event": []}
    for i, (start_end, r_ask, r_got) in enumerate(zip(jobs, asked, received)):
        tl = next((t for t in tls if t >= start_end[1] - 0.002), None)
        if tl is None or tl > r_got:
            continue
        hello = next((t for t in hellos if t >= tl), None)
        if hello is None or hello > r_got + 0.002:
            continue
        stages["request -> job start"].append((start_end[0] - r_ask) * 1e6)
        stages["job end -> Timeline sent"].append(max(0.0, tl - start_end[1]) * 1e6)
        stages["Timeline -> restored guest's Hello"].append((hello - tl) * 1e6)
        stages["Hello -> app has the event"].append(max(0.0, r_got - hello) * 1e6)
    return {k: bl.stats(v) for k, v in stages.items() if v}


def main():
    ap = bl.common_args(__doc__.splitlines()[0])
    ap.add_argument("--configs", default="128M:idle:20,128M:filled:20,512M:idle:10,"
                                         "512M:filled:8")
    ap.add_argument("--floor", action="store_true",
                    help="also measure each configuration without vmstate (run_floor)")
    ap.add_argument("--json", help="also write the figures to this file")
    a = ap.parse_args()
    out = []
    print("| guest RAM | contents | op | N | app: request → event (median / p99) | QEMU job "
          "(median / p99) | overhead (median / p99) | < 2 ms p99? |")
    print("|---|---|---|---|---|---|---|---|")

    def row(mem, mode, op, res):
        app, job, ovh = res[op]
        print(f"| {mem} | {mode} | {op} | {app['n']} | {bl.fmt_us(app['median'])} / "
              f"{bl.fmt_us(app['p99'])} | {bl.fmt_us(job['median'])} / "
              f"{bl.fmt_us(job['p99'])} | {bl.fmt_us(ovh['median'])} / "
              f"{bl.fmt_us(ovh['p99'])} | {'yes' if ovh['p99'] < 2000 else 'no'} |", flush=True)
    for cfg in a.configs.split(","):
        mem, mode, rounds = cfg.split(":")
        try:
            res = run_config(a, mem, mode, int(rounds))
            if a.floor:
                res["floor"] = run_floor(a, mem, mode, int(rounds))
        except Exception as e:  # one failing configuration does not hide the others
            print(f"| {mem} | {mode} | — | — | failed: {str(e)[:200]} | | | |", flush=True)
            continue
        out.append([mem, mode, res])
        for op in ("save", "restore"):
            row(mem, mode, op, res)
            if a.floor:
                row(mem, mode, f"{op}, floor (no vmstate)", {f"{op}, floor (no vmstate)":
                                                              res["floor"][op]})
    print("\nWhere the save and restore overheads go (host clock; bridge log stamps have ms "
          "resolution)\n")
    print("| guest RAM | contents | stage | N | median | p90 | max |")
    print("|---|---|---|---|---|---|---|")
    for mem, mode, res in out:
        for stage, st in list(res.get("save_stages", {}).items()) + \
                list(res.get("restore_stages", {}).items()):
            print(f"| {mem} | {mode} | {stage} | {st['n']} | {bl.fmt_us(st['median'])} | "
                  f"{bl.fmt_us(st['p90'])} | {bl.fmt_us(st['max'])} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
