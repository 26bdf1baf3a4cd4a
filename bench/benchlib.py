# SPDX-License-Identifier: GPL-2.0-or-later
"""benchlib: shared helpers for the vmstate benchmarks (Python 3 stdlib, on top of
the system-test harness tests/harness/vmstest).

Every benchmark script prints Markdown table rows on stdout; progress goes to stderr.
Statistics: median and p99 by nearest rank (p99 = the ceil(0.99 n)-th smallest sample).
"""
import argparse
import atexit
import contextlib
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRCDIR, "tests", "harness"))
from vmstest import vm as harness  # noqa: E402  (path set just above)

QGA_PORT = "org.qemu.guest_agent.0"


def VM(workdir, image, **kw):
    """A harness VM booted with vmstate.nohelper: the image's own helper start (init.d) is
    skipped; vmstate_path.start_guest() starts the helper with the bench configuration."""
    kw["append"] = ("vmstate.nohelper " + kw.get("append", "")).strip()
    return harness.VM(workdir, image, **kw)


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def pct(samples, p):
    """Nearest-rank percentile of samples (any order)."""
    s = sorted(samples)
    k = max(1, math.ceil(p / 100 * len(s)))
    return s[k - 1]


def stats(samples):
    return {"n": len(samples), "median": pct(samples, 50), "p90": pct(samples, 90),
            "p99": pct(samples, 99),
            "min": min(samples), "max": max(samples)}


def stats_after(text, prefix=""):
    """The first 'n=.. median_us=.. p99_us=..' line of vsbench-* (vsbench-port, -app, -dbus)
    that starts with `prefix`, parsed: n, and median, p90 when printed, p99, min, max, mean
    in µs."""
    for line in text.splitlines():
        if line.startswith(prefix) and "median_us=" in line:
            d = {k: float(v) for k, v in re.findall(r"(\w+)_us=([\d.]+)", line)}
            d["n"] = int(re.search(r"n=(\d+)", line)[1])
            return d
    raise RuntimeError(f"no '{prefix}' statistics line in: {text!r}")


def fmt_us(us):
    if us >= 10000:
        return f"{us / 1000:.1f} ms"
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.0f} µs"


def common_args(desc):
    ap = argparse.ArgumentParser(description=desc)
    ap.add_argument("--image", required=True, help="bench guest image (make bench-image)")
    ap.add_argument("--builddir", default=os.environ.get("BENCH_BUILDDIR", "."),
                    help="build tree holding bench/vsbench-port etc. (host programs)")
    ap.add_argument("--workdir", default=None, help="keep VM files here (default: a temp dir)")
    return ap


def workdir(args, tag):
    """A directory for one bench's files: under --workdir, kept; else a temporary one, removed
    when the bench exits (a save/restore bench leaves ~0.8 GiB of snapshots in its disk)
    unless VSBENCH_KEEP=1."""
    if args.workdir:
        d = os.path.join(args.workdir, tag)
        os.makedirs(d, exist_ok=True)
        return d
    d = tempfile.mkdtemp(prefix=f"vsb-{tag}-")
    if os.environ.get("VSBENCH_KEEP") != "1":
        atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


def host_prog(args, name):
    p = os.path.join(os.path.abspath(args.builddir), "bench", name)
    if not os.access(p, os.X_OK):
        raise SystemExit(f"{p} missing: run `make bench-programs` in the build tree")
    return p


def qga_args(wd):
    sock = os.path.join(wd, "qga.sock")
    if os.path.lexists(sock):
        os.unlink(sock)
    return sock, ["-chardev", f"socket,id=qga0,path={sock},server=on,wait=off",
                  "-device", f"virtserialport,bus=vser0.0,chardev=qga0,id=portqga,name={QGA_PORT}"]


@contextlib.contextmanager
def design_floor_host(port_prog, port_a, port_b):
    """The host side of a hostinfo's design floor (`vsbench-dbus design`, bench-native and
    bench-tcg): an echo standing in for the privsep reader reads port A and passes the bytes
    over a socketpair to an echo standing in for the bridge, which writes them on port B.
    @port_a, @port_b: vsbench-port endpoints (unix:PATH). Yields [reader, bridge] (Popen),
    killed on exit."""
    r_end, b_end = socket.socketpair()
    procs = []
    try:
        for argv, fd in (([port_prog, "echo", port_a, f"fd:{r_end.fileno()}"], r_end.fileno()),
                         ([port_prog, "echo", f"fd:{b_end.fileno()}", port_b], b_end.fileno())):
            procs.append(subprocess.Popen(argv, pass_fds=(fd,), stdout=subprocess.DEVNULL,
                                          preexec_fn=harness.child_setup))
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()
        r_end.close()
        b_end.close()


def wait_guest_file(vm, path, word, timeout=60):
    """Wait until the guest's file @path holds @word (a daemon's "ready")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc, out = vm.run(f"cat {path} 2>/dev/null")
        if word in out:
            return
        time.sleep(0.2)
    raise harness.VMError(f"{path}: no {word!r} after {timeout} s")


def guest_rss_kib(vm, pid):
    out = vm.check(f"grep -E '^(VmRSS|RssAnon|RssFile):' /proc/{int(pid)}/status")
    return {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+) kB", out, re.M)}


def process_cpu_s(pid):
    """CPU seconds (user + system) a host process has used, to the nanosecond: its process CPU
    clock (clock_getcpuclockid's id: ~pid << 3 | CPUCLOCK_SCHED). /proc/PID/stat's utime +
    stime count 10 ms ticks, ±10 µs per request over 1000 requests: the bridge's target is
    100 µs. The ticks where the clock cannot be read."""
    try:
        return time.clock_gettime(((~int(pid)) << 3) | 2)
    except OSError:
        with open(f"/proc/{int(pid)}/stat") as f:
            x = f.read().rsplit(")", 1)[1].split()
        return (int(x[11]) + int(x[12])) / os.sysconf("SC_CLK_TCK")


def host_rss_kib(pid):
    with open(f"/proc/{int(pid)}/status") as f:
        txt = f.read()
    return {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+) kB", txt, re.M)}


def machine():
    """A Markdown description of this host (for RESULTS.md)."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
            cpu = m[1] if m else "?"
    except OSError:
        pass
    qemu = subprocess.run([harness.QEMU, "--version"], capture_output=True,
                          text=True).stdout.splitlines()[0]
    mem = "?"
    with open("/proc/meminfo") as f:
        m = re.search(r"MemTotal:\s+(\d+)", f.read())
        mem = f"{int(m[1]) / 1048576:.1f} GiB" if m else "?"
    virt = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True).stdout.strip() \
        if os.path.exists("/usr/bin/systemd-detect-virt") else "?"
    return [f"- host: {cpu}, {os.cpu_count()} CPUs, {mem} RAM, virtualisation: {virt or '?'}",
            f"- host kernel {platform.release()}; {qemu}; accelerator TCG (KVM does not work here)",
            f"- load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"]
