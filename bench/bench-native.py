#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The native bench bed (issue 18): the vmstate path as host processes, each figure with its
floor measured in the same run.

app (vsbench-app) -> private dbus-daemon -> vmstate-helperd -> vsbench-relay (C, epoll; stands
in for virtio-serial) -> vmstate-bridged -> relay -> helper -> dbus-daemon -> app. The bridge
asks a real QEMU (a booted harness VM, 1 vCPU) over QMP for what needs one (hostinfo's
memory size). Its journal is on disk, WAL + synchronous=FULL, as shipped.

Floors, same run, same bus: port echo through a second relay (vsbench-port ping/echo); a D-Bus
method call round trip to a trivial service (vsbench-dbus call); L unicast signals from a
trivial emitter to L connections (vsbench-dbus fanout: spread last - first; again with the
body of a hostinfo's Completed, VSBENCH_SHAPE=completed); a hostinfo's design floor in one
chain (vsbench-dbus design: every hop of vmstate's round trip, no work in any; see
measure_design_floor); L connections each making one trivial call (the registration floor);
SQLite transactions with the journal's settings (vsbench-sqlite: empty, and one durable row). With --vms N: the floor of
one request (port echo + D-Bus call) in N stacks of its own, alone and all N at once, beside
the N VMs' round trips alone and at once.

Prints Markdown (a section for bench/RESULTS.md) on stdout; progress on stderr. Never gates:
every figure comes with its ratio to its floor; the issue's targets are stated met/missed.

Usage: bench-native.py --image DIR --builddir BUILD [-n 1000] [--listeners 1000] [--rounds 5]
       [--apps 16] [--per-app 300]
"""
import contextlib
import os
import re
import signal
import subprocess
import sys
import time

import benchlib as bl
import schedpath
import vmstate_path as vp

FLOOR_NAME = "org.vmstate.BenchFloor"
DESIGN_NAME = "org.vmstate.BenchDesign"


def cpu_per_round(text, *pids, label="cpu_ms_per_round"):
    """The "LABEL: PID=MS .." line of a fan-out: [ms for each of pids]."""
    d = dict(re.findall(r"(\d+)=([\d.]+)", text.split(label + ":", 1)[1].split("\n")[0]))
    return [float(d[str(p)]) for p in pids]


def strace_counts(prog, env, pid, wd, n):
    """Syscalls of the bridge's main process (and its threads) per hostinfo request, over n
    sequential requests: {name: calls per request}."""
    out = os.path.join(wd, "strace.txt")
    st = subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", out],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    run([prog["app"], "rtt", str(n)], env=env)
    st.send_signal(2)
    st.wait()
    counts = {}
    with open(out) as f:
        for line in f:
            x = line.split()
            if len(x) >= 5 and x[0][0].isdigit() and x[-1] != "total":
                counts[x[-1]] = int(x[3]) / (n + 10)  # rtt adds 10 untimed requests
    return counts


def run(argv, env=None, timeout=600):
    bl.log(" ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(argv)))
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


def spawn(argv, wd, name, env=None, ready=False):
    """A child process with its output in wd/name.log; ready=True waits for its "ready" line."""
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE if ready else
                         open(os.path.join(wd, f"{name}.log"), "w"),
                         stderr=subprocess.STDOUT, text=True, preexec_fn=bl.harness.child_setup)
    if ready and p.stdout.readline().strip() != "ready":
        p.kill()
        raise SystemExit(f"{name} did not start")
    return p


def stop(procs):
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def write_bus_conf(path, sock):
    """The guest's system bus as far as the bench needs: anyone may talk to anyone; 4096
    connections (the fan-out opens 1000 as one user), as bench/guest-dbus-limits.conf."""
    with open(path, "w") as f:
        f.write(f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>custom</type><listen>unix:path={sock}</listen><auth>EXTERNAL</auth>
<limit name="max_completed_connections">4096</limit>
<limit name="max_connections_per_user">4096</limit>
<limit name="max_incomplete_connections">256</limit>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/>
<allow receive_sender="*"/></policy></busconfig>
""")


def start_bus(d, procs):
    """A private dbus-daemon with the guest's limits, its socket in d, its process on procs.
    Returns the environment for its clients (DBUS_SYSTEM_BUS_ADDRESS)."""
    bus = os.path.join(d, "bus.sock")
    write_bus_conf(os.path.join(d, "bus.conf"), bus)
    procs.append(spawn(["dbus-daemon", "--nofork", "--config-file", os.path.join(d, "bus.conf")],
                       d, "dbus-daemon"))
    for _ in range(500):
        if os.path.exists(bus):
            break
        time.sleep(0.01)
    return dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={bus}")


def guest_stack(a, prog, wd, name, procs):
    """One VM's guest side as host processes: its own bus, relay and helper. Returns (env for
    its apps, relay dir); the processes go on procs."""
    d = os.path.join(wd, name)
    rd = os.path.join(d, "relay")
    os.makedirs(rd, exist_ok=True)
    env = start_bus(d, procs)
    procs.append(spawn([prog["relay"], rd], d, "relay", ready=True))
    with open(os.path.join(d, "helper.conf"), "w") as f:
        f.write(vp.HELPER_CONF +
                f"request_port = unix:{rd}/ha.sock\nevent_port = unix:{rd}/hb.sock\n")
    procs.append(spawn([a.helper or os.path.join(os.path.abspath(a.builddir), "guest-helper",
                                                 "vmstate-helperd"), "--config",
                        os.path.join(d, "helper.conf"), "--address",
                        env["DBUS_SYSTEM_BUS_ADDRESS"]], d, "helper"))
    return env, rd


def floor_stack(prog, wd, name, procs):
    """The floor of one VM's request as a stack of its own, built as the single-VM floors
    are: a bus with the trivial service, a relay with a port echo. Returns (env for its
    callers, relay dir, [echo, service]: the processes that answer); all go on procs."""
    d = os.path.join(wd, name)
    rd = os.path.join(d, "relay")
    os.makedirs(rd, exist_ok=True)
    env = start_bus(d, procs)
    procs.append(spawn([prog["relay"], rd], d, "relay", ready=True))
    echo = spawn([prog["port"], "echo", f"unix:{rd}/ba.sock", f"unix:{rd}/bb.sock"], d, "echo")
    svc = spawn([prog["dbus"], "serve", FLOOR_NAME], d, "service", env=env, ready=True)
    procs += [echo, svc]
    return env, rd, [echo, svc]


def at_once(clients, responders):
    """clients {name: (argv, env)} run all at once: {name: statistics}. A floor run takes a
    few ms, about what starting 8 processes one by one takes, so started plainly they would
    hardly overlap: the responders are stopped while the clients start (each client's first
    request waits for its responder), then all released together."""
    argv0 = next(iter(clients.values()))[0]
    bl.log(f"{len(clients)} at once: {os.path.basename(argv0[0])} {argv0[1]}")
    for p in responders:
        os.kill(p.pid, signal.SIGSTOP)
    try:
        ps = {name: subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
              for name, (argv, env) in clients.items()}
        time.sleep(0.5)  # every client connected and waiting (a late one only overlaps less)
    finally:
        for p in responders:
            os.kill(p.pid, signal.SIGCONT)
    outs = {name: p.communicate(timeout=600)[0] for name, p in ps.items()}
    for name, p in ps.items():
        if p.returncode != 0:
            raise SystemExit(f"{clients[name][0][0]} ({name}) failed ({p.returncode})")
    return {name: bl.stats_after(out) for name, out in outs.items()}


def measure_floor_stacks(a, prog, wd):
    """The floor of "all at once": a.vms floor stacks, each its floor (port echo, then a
    D-Bus call, a.vms_n round trips each) alone one stack after the other, then every
    stack's port echo at once and every stack's call at once: ({name: {"port": stats,
    "call": stats}} alone, the same all at once). As for one VM, the floor is the sum of the
    two medians: a request does one, then the other."""
    procs, stacks, alone = [], {}, {}
    n = str(a.vms_n)
    try:
        for k in range(1, a.vms + 1):
            stacks[f"vm{k}"] = floor_stack(prog, wd, f"floor-vm{k}", procs)

        def ping(rd):
            return [prog["port"], "ping", f"unix:{rd}/ha.sock", f"unix:{rd}/hb.sock", n]
        for name, (env, rd, _) in stacks.items():
            alone[name] = {"port": bl.stats_after(run(ping(rd))),
                           "call": bl.stats_after(run([prog["dbus"], "call", FLOOR_NAME, n],
                                                      env=env))}
        port = at_once({name: (ping(rd), None) for name, (env, rd, _) in stacks.items()},
                       [s[2][0] for s in stacks.values()])
        call = at_once({name: ([prog["dbus"], "call", FLOOR_NAME, n], env)
                        for name, (env, rd, _) in stacks.items()},
                       [s[2][1] for s in stacks.values()])
    finally:
        stop(procs)
    return alone, {name: {"port": port[name], "call": call[name]} for name in stacks}


def measure_design_floor(a, prog, wd, env, dbus):
    """A hostinfo's design floor in one chain: every hop of vmstate's round trip, none of its
    work. The app's call goes to a bare service (vsbench-dbus relay) on the same bus, which
    writes a byte on port A and answers; through a relay of its own the byte reaches a reader
    stand-in (an echo) that passes it over a socketpair to a bridge stand-in (an echo) that
    writes it on port B; the service then sends the caller Completed's body. Returns (its
    statistics, its chains with --sched, else None)."""
    d = os.path.join(wd, "design-relay")
    os.makedirs(d, exist_ok=True)
    procs = [spawn([prog["relay"], d], wd, "design-relay", ready=True)]
    try:
        with bl.design_floor_host(prog["port"], f"unix:{d}/ba.sock",
                                  f"unix:{d}/bb.sock") as (reader, bridge):
            svc = spawn([prog["dbus"], "relay", DESIGN_NAME, f"unix:{d}/ha.sock",
                         f"unix:{d}/hb.sock"], wd, "design-service",
                        env=dict(env, VSBENCH_SHAPE="completed"), ready=True)
            procs.append(svc)
            stats = bl.stats_after(run([prog["dbus"], "design", DESIGN_NAME, str(a.n)], env=env))
            chains = None
            if a.sched:
                data = os.path.join(wd, "sched-design.data")
                names = {dbus.pid: "dbus-daemon", svc.pid: "service", procs[0].pid: "relay",
                         reader.pid: "reader stand-in", bridge.pid: "bridge stand-in"}
                schedpath.record(data, lambda: run([prog["dbus"], "design", DESIGN_NAME,
                                                    str(a.n)], env=env))
                chains = schedpath.chains(data, "vsbench-dbus", names)
            return stats, chains
    finally:
        stop(procs)


def measure_vms(a, prog, wd):
    """a.vms VMs on one bridge (each its own paused QEMU, bus, relay and helper): each VM's
    hostinfo round trip alone, then all at once (each app back to back: "full rate"); the
    bridge's RSS. On this 2-core host the a.vms guest stacks share the cores the bridge uses,
    so "all at once" measures the machine as much as the bridge: the bridge's CPU share is
    reported beside it, and the floor of one request (port echo + D-Bus call) is measured the
    same way, a.vms stacks alone and at once, before anything else starts."""
    n, procs, res = a.vms_n, [], {}
    res["floor_alone"], res["floor_together"] = measure_floor_stacks(a, prog, wd)
    try:
        with contextlib.ExitStack() as vms_ctx:
            stacks, relay_vms = {}, {}
            for k in range(1, a.vms + 1):
                name = f"vm{k}"
                env, rd = guest_stack(a, prog, wd, name, procs)
                vm = vms_ctx.enter_context(bl.VM(os.path.join(wd, name, "qemu"), a.image,
                                                 ports=False, paused=True))
                stacks[name], relay_vms[name] = env, RelayVM(vm, rd)
            with vp.Path(a.builddir, os.path.join(wd, "bridge-vms"), relay_vms,
                         cost="test") as path:
                for env in stacks.values():
                    run([prog["app"], "wait-bridge", "60"], env=env)
                    run([prog["app"], "rtt", "50"], env=env)  # warm
                res["rss_idle"] = bl.host_rss_kib(path.proc.pid)["VmRSS"]
                res["alone"] = {name: bl.stats_after(run([prog["app"], "rtt", str(n)], env=env))
                                for name, env in stacks.items()}
                c0, t0 = bl.process_cpu_s(path.proc.pid) + sum(bl.process_cpu_s(p) for p in path.readers()), time.time()
                ps = {name: subprocess.Popen([prog["app"], "rtt", str(n)], env=env,
                                             stdout=subprocess.PIPE, text=True)
                      for name, env in stacks.items()}
                outs = {name: p.communicate(timeout=600)[0] for name, p in ps.items()}
                wall = time.time() - t0
                res["bridge_share"] = (bl.process_cpu_s(path.proc.pid) +
                                       sum(bl.process_cpu_s(p) for p in path.readers()) - c0) / wall
                res["together"] = {name: bl.stats_after(out) for name, out in outs.items()}
                res["wall"] = wall
                res["rss"] = bl.host_rss_kib(path.proc.pid)["VmRSS"]
                res["reader_rss"] = max(bl.host_rss_kib(p)["VmRSS"] for p in path.readers())
            # the floor of "all at once": the same load with a bridge per VM, so what the
            # shared bridge adds is told apart from the guest stacks sharing two cores
            with contextlib.ExitStack() as bridges:
                for name, rvm in relay_vms.items():
                    bridges.enter_context(vp.Path(a.builddir, os.path.join(wd, f"bridge-{name}"),
                                                  {name: rvm}, cost="test"))
                for env in stacks.values():
                    run([prog["app"], "wait-bridge", "60"], env=env)
                    run([prog["app"], "rtt", "50"], env=env)
                t0 = time.time()
                ps = {name: subprocess.Popen([prog["app"], "rtt", str(n)], env=env,
                                             stdout=subprocess.PIPE, text=True)
                      for name, env in stacks.items()}
                outs = {name: p.communicate(timeout=600)[0] for name, p in ps.items()}
                res["separate_wall"] = time.time() - t0
                res["separate"] = {name: bl.stats_after(out) for name, out in outs.items()}
    finally:
        stop(procs)
    return res


def report_vms(a, v):
    us = bl.fmt_us
    print(f"\n**{a.vms} VMs on one bridge** (each its own paused QEMU, bus, relay and helper; "
          f"{a.vms_n} sequential hostinfo per VM, alone one VM after the other, then all "
          f"{a.vms} at once, back to back)\n")
    print(f"| VM | median alone | all at once, one bridge | ratio to alone | all at once, a "
          f"bridge per VM (floor) | one bridge ÷ floor |")
    print("|---|---|---|---|---|---|")
    for name, al in v["alone"].items():
        tg, sp = v["together"][name], v["separate"][name]
        print(f"| {name} | {us(al['median'])} | {us(tg['median'])} | "
              f"{tg['median'] / al['median']:.2f}× | {us(sp['median'])} | "
              f"{tg['median'] / sp['median']:.2f}× |")
    total = a.vms * (a.vms_n + 10)
    print(f"\nAll at once, one bridge: {total / v['wall']:.0f} requests/s over {v['wall']:.2f} s; "
          f"the bridge (main + readers) used {v['bridge_share'] * 100:.0f} % of one core "
          f"meanwhile, the {a.vms} guest stacks the rest of the two. A bridge per VM: "
          f"{total / v['separate_wall']:.0f} requests/s. Bridge RSS "
          f"{v['rss_idle'] / 1024:.1f} MiB idle, {v['rss'] / 1024:.1f} MiB after; a privsep "
          f"reader {v['reader_rss'] / 1024:.1f} MiB.\n")
    fa, ft = v["floor_alone"], v["floor_together"]
    print(f"**The floor at {a.vms} at once** ({a.vms} floor stacks, each its own bus with the "
          f"trivial service and its own relay with a port echo; {a.vms_n} port echoes then "
          f"{a.vms_n} D-Bus calls per stack, alone one stack after the other, then every "
          f"stack's echoes at once and every stack's calls at once, released together; the "
          f"floor is port echo + D-Bus call, medians, as for one VM)\n")
    print(f"| stack | floor alone (echo + call) | all {a.vms} at once (echo + call) | ratio |")
    print("|---|---|---|---|")
    for name in fa:
        al, tg = fa[name], ft[name]
        print(f"| {name} | {us(floor_median(al))} ({us(al['port']['median'])} + "
              f"{us(al['call']['median'])}) | {us(floor_median(tg))} "
              f"({us(tg['port']['median'])} + {us(tg['call']['median'])}) | "
              f"{floor_median(tg) / floor_median(al):.2f}× |")
    print(f"\nThe floor itself at {a.vms} at once: worst {floor_worst(v):.2f}× its alone "
          f"figure (target for vmstate: 1.2×).\n")


def floor_median(f):
    """One request's floor from a floor stack's figures: port echo + D-Bus call, medians."""
    return f["port"]["median"] + f["call"]["median"]


def floor_worst(v):
    return max(floor_median(v["floor_together"][k]) / floor_median(v["floor_alone"][k])
               for k in v["floor_alone"])


class RelayVM:
    """The harness VM as the bridge sees it, its ports replaced by the relay's host side."""

    def __init__(self, vm, relay_dir):
        self.a_sock, self.b_sock = (os.path.join(relay_dir, f"{k}.sock") for k in ("ba", "bb"))
        self.qmp_sock, self.workdir = vm.qmp_sock, vm.workdir


def verdict(ok):
    return "**met**" if ok else "**missed**"


def main():
    ap = bl.common_args(__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="sequential round trips per latency figure")
    ap.add_argument("--listeners", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5, help="fan-out rounds")
    ap.add_argument("--apps", type=int, default=16, help="concurrent apps for throughput")
    ap.add_argument("--per-app", type=int, default=300, help="requests per app for throughput")
    ap.add_argument("--vms", type=int, default=8,
                    help="VMs on one bridge for the many-VM figures (0: skip them)")
    ap.add_argument("--vms-n", type=int, default=300,
                    help="sequential round trips per VM in the many-VM figures")
    ap.add_argument("--perf", action="store_true",
                    help="perf record the helper and dbus-daemon during the fan-out "
                    "(WORKDIR/native/perf.data)")
    ap.add_argument("--sched", action="store_true",
                    help="where a round trip's wall time goes, hop by hop: the scheduler's "
                    "events (perf, every CPU) during a run of its own")
    ap.add_argument("--strace", action="store_true",
                    help="also count the bridge's syscalls per hostinfo request (strace -c)")
    ap.add_argument("--helper", help="this vmstate-helperd instead of the build tree's (A/B "
                    "runs; an older libvmstate goes in with LD_LIBRARY_PATH)")
    ap.add_argument("--running-guest", action="store_true",
                    help="boot the QEMU's guest (default: QEMU stays paused, QMP only)")
    a = ap.parse_args()
    wd = bl.workdir(a, "native")
    prog = {k: bl.host_prog(a, f"vsbench-{k}") for k in ("relay", "port", "dbus", "sqlite", "app")}
    bus = os.path.join(wd, "bus.sock")
    write_bus_conf(os.path.join(wd, "bus.conf"), bus)
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={bus}")
    L, n = a.listeners, a.n
    res, procs = {}, []
    t_start = time.time()
    machine = bl.machine()
    try:
        procs.append(spawn(["dbus-daemon", "--nofork", "--config-file",
                            os.path.join(wd, "bus.conf")], wd, "dbus-daemon"))
        dbus = procs[-1]
        for _ in range(500):
            if os.path.exists(bus):
                break
            time.sleep(0.01)

        # ---- floors ----------------------------------------------------------------------
        fr = os.path.join(wd, "floor-relay")
        os.makedirs(fr, exist_ok=True)
        relay0 = spawn([prog["relay"], fr], wd, "floor-relay", ready=True)
        echo = spawn([prog["port"], "echo", f"unix:{fr}/ba.sock", f"unix:{fr}/bb.sock"], wd,
                     "floor-echo")
        res["port"] = bl.stats_after(run([prog["port"], "ping", f"unix:{fr}/ha.sock",
                                 f"unix:{fr}/hb.sock", str(n)]))
        stop([relay0, echo])
        svc = spawn([prog["dbus"], "serve", FLOOR_NAME], wd, "floor-service", env=env, ready=True)
        res["call"] = bl.stats_after(run([prog["dbus"], "call", FLOOR_NAME, str(n)], env=env))
        res["async"] = bl.stats_after(run([prog["dbus"], "async", FLOOR_NAME, str(n)], env=env))
        out = run([prog["dbus"], "tput", FLOOR_NAME, str(a.apps), str(a.per_app)], env=env)
        res["call_tput"] = float(re.search(r"per_s=([\d.]+)", out)[1])
        out = run([prog["dbus"], "fanout", FLOOR_NAME, str(L), str(a.rounds)],
                  env=dict(env, VSBENCH_CPU_PIDS=f"{dbus.pid},{svc.pid}"))
        res["sig_cpu"] = cpu_per_round(out, dbus.pid, svc.pid)
        res["reg_floor_cpu"] = cpu_per_round(out, dbus.pid, svc.pid, label="cpu_ms_register")
        res["sig"] = {k: bl.stats_after(out, k + ": ") for k in ("first", "last", "spread")}
        m = re.search(r"register: n=\d+ connect_s=([\d.]+) calls_s=([\d.]+) total_s=([\d.]+)", out)
        res["reg_floor"] = {"connect": float(m[1]), "calls": float(m[2]), "total": float(m[3])}
        stop([svc])
        # the same emitter sending the body of a hostinfo's Completed: what the message the
        # API carries costs the bus and the receivers, without any vmstate code
        svc = spawn([prog["dbus"], "serve", FLOOR_NAME], wd, "floor-service-shaped",
                    env=dict(env, VSBENCH_SHAPE="completed"), ready=True)
        out = run([prog["dbus"], "fanout", FLOOR_NAME, str(L), str(a.rounds)], env=env)
        res["sig_shaped"] = bl.stats_after(out, "spread: ")
        # answered at once, then Completed's body to the caller: the API's messages themselves
        res["async_shaped"] = bl.stats_after(run([prog["dbus"], "async", FLOOR_NAME, str(n)],
                                                 env=env))
        if a.sched:  # the same floor's path, hop by hop, to set beside vmstate's
            data = os.path.join(wd, "sched-floor.data")
            names = {dbus.pid: "dbus-daemon", svc.pid: "trivial service"}
            schedpath.record(data, lambda: run([prog["dbus"], "async", FLOOR_NAME, str(n)],
                                               env=env))
            res["sched_floor"] = schedpath.chains(data, "vsbench-dbus", names)
        stop([svc])
        res["design"], res["sched_design"] = measure_design_floor(a, prog, wd, env, dbus)
        out = run([prog["sqlite"], os.path.join(wd, "floor.db"), str(min(n, 300))])
        res["sql_empty"], res["sql_row"] = bl.stats_after(out, "empty: "), bl.stats_after(out, "row: ")

        # ---- the vmstate path ------------------------------------------------------------
        rd = os.path.join(wd, "relay")
        os.makedirs(rd, exist_ok=True)
        relay = spawn([prog["relay"], rd], wd, "relay", ready=True)
        procs.append(relay)
        with open(os.path.join(wd, "helper.conf"), "w") as f:
            f.write(vp.HELPER_CONF +
                    f"request_port = unix:{rd}/ha.sock\nevent_port = unix:{rd}/hb.sock\n")
        helper = spawn([a.helper or os.path.join(os.path.abspath(a.builddir), "guest-helper",
                                                 "vmstate-helperd"), "--config",
                        os.path.join(wd, "helper.conf"), "--address", f"unix:path={bus}"],
                       wd, "helper")
        procs.append(helper)
        # Paused (-S, never continued) unless --running-guest: QMP answers all the same, and
        # an idle TCG guest would take CPU from the processes measured on this 2-core host.
        with bl.VM(os.path.join(wd, "vm"), a.image, ports=False,
                   paused=not a.running_guest) as vm:
            if a.running_guest:
                vm.wait_ready()
            with vp.Path(a.builddir, wd, {"vm1": RelayVM(vm, rd)}, cost="test") as path:
                run([prog["app"], "wait-bridge", "60"], env=env)
                run([prog["app"], "rtt", "50"], env=env)  # warm: secret verified, caches
                pids = {"vmstate-bridged": [path.proc.pid],
                        "vmstate-bridged-reader (privsep)": path.readers(),
                        "vmstate-helperd": [helper.pid], "dbus-daemon": [dbus.pid],
                        "vsbench-relay (stands in for virtio-serial)": [relay.pid],
                        "QEMU (answers QMP)": [vm.proc.pid]}
                c0 = {k: sum(bl.process_cpu_s(p) for p in v) for k, v in pids.items()}
                t0 = os.times()
                out = run([prog["app"], "rtt", str(n)], env=env)
                t1 = os.times()
                c1 = {k: sum(bl.process_cpu_s(p) for p in v) for k, v in pids.items()}
                res["rtt"], res["rtt_call"] = bl.stats_after(out), bl.stats_after(out, "call: ")
                res["cpu"] = {k: (c1[k] - c0[k]) / n * 1e6 for k in pids}
                res["cpu"]["vsbench-app (incl. libvmstate)"] = (
                    t1.children_user + t1.children_system - t0.children_user
                    - t0.children_system) / n * 1e6
                out = run([prog["app"], "tput", str(a.apps), str(a.per_app)], env=env)
                m = re.search(r"apps=(\d+) requests=(\d+) seconds=([\d.]+) per_s=([\d.]+) "
                              r"busy=(\d+)", out)
                res["tput"] = {"per_s": float(m[4]), "requests": int(m[2]), "busy": int(m[5]),
                               "lat": bl.stats_after(out.split("\n", 1)[1])}
                if a.strace:  # syscalls per request, in a run of its own (strace slows it)
                    res["sys"] = strace_counts(prog, env, path.proc.pid, wd, 300)
                    res["sys_helper"] = strace_counts(prog, env, helper.pid, wd, 300)
                if a.sched:
                    names = {}
                    for k, ps in pids.items():
                        for p in ps:
                            for t in os.listdir(f"/proc/{p}/task"):
                                names[int(t)] = k.split(" ")[0]
                    data = os.path.join(wd, "sched-rtt.data")
                    schedpath.record(data, lambda: run([prog["app"], "rtt", str(n)], env=env))
                    res["sched"] = schedpath.chains(data, "vsbench-app", names)
                if a.perf:  # where a round trip's CPU goes in the helper, bridge and bus
                    rec = subprocess.Popen(["perf", "record", "-q", "-g", "-o",
                                            os.path.join(wd, "perf-rtt.data"), "-p",
                                            f"{helper.pid},{path.proc.pid},{dbus.pid}"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(0.5)
                    run([prog["app"], "rtt", str(n)], env=env)
                    rec.send_signal(2)
                    rec.wait()
                rec = None
                if a.perf:  # where the fan-out's time goes, per process (perf report --pid)
                    rec = subprocess.Popen(["perf", "record", "-q", "-g", "-o",
                                            os.path.join(wd, "perf.data"), "-p",
                                            f"{helper.pid},{dbus.pid}"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(0.5)
                out = run([prog["app"], "fanout", str(L), str(a.rounds)], timeout=1200,
                          env=dict(env, VSBENCH_CPU_PIDS=f"{dbus.pid},{helper.pid}"))
                res["fan_cpu"] = cpu_per_round(out, dbus.pid, helper.pid)
                res["reg_cpu"] = cpu_per_round(out, dbus.pid, helper.pid, label="cpu_ms_register")
                if rec:
                    rec.send_signal(2)
                    rec.wait()
                res["fan"] = {k: bl.stats_after(out, k + ": ") for k in ("first", "last", "spread")}
                res["reg"] = float(re.search(r"register: n=\d+ total_s=([\d.]+)", out)[1])
                res["rss"] = {"vmstate-helperd": bl.host_rss_kib(helper.pid)["VmRSS"],
                              "vmstate-bridged": bl.host_rss_kib(path.proc.pid)["VmRSS"]}
                # the helper's peak since it started: registrations, round trips, fan-outs
                res["helper_hwm"] = bl.host_rss_kib(helper.pid)["VmHWM"]
                time.sleep(1.5)  # at rest: the helper gives a fan-out's heap back after 1 s
                res["rss_rest"] = bl.host_rss_kib(helper.pid)["VmRSS"]
    finally:
        stop(procs)
    if a.vms:
        res["vms"] = measure_vms(a, prog, wd)
    report(a, res, machine, time.time() - t_start)
    return 0


def report(a, r, machine, took):
    us = bl.fmt_us
    port, call = r["port"]["median"], r["call"]["median"]
    floor_rt = port + call
    rtt = r["rtt"]
    print("Native bed (issue 18): guest stack as host processes, C relay for virtio-serial, "
          f"real QEMU for QMP; Argon2id cost `test`; journal on disk (WAL, synchronous=FULL). "
          f"Run took {took:.0f} s.\n")
    print("\n".join(machine) + "\n")
    print("**Floors (same run)**\n")
    print("| floor | median | p90 | p99 |")
    print("|---|---|---|---|")

    def row(name, s):
        print(f"| {name} | {us(s['median'])} | {us(s.get('p90', float('nan')))} | "
              f"{us(s['p99'])} |")
    row(f"port echo through the relay (1 byte, {r['port']['n']} round trips)", r["port"])
    row(f"D-Bus method call round trip, trivial service, same bus ({r['call']['n']})", r["call"])
    row(f"… the call answered at once, then a unicast signal to the caller: call → signal "
        f"({r['async']['n']})", r["async"])
    row("… the same, the signal carrying the body of a hostinfo's Completed",
        r["async_shaped"])
    row("a hostinfo's design floor in one chain: call → bare service → port A → reader "
        "stand-in → bridge stand-in → port B → Completed's body (`vsbench-dbus design`)",
        r["design"])
    row(f"{a.listeners} unicast signals to {a.listeners} connections: first received "
        f"({a.rounds} rounds)", r["sig"]["first"])
    row("… last received", r["sig"]["last"])
    row("… spread (last − first)", r["sig"]["spread"])
    row("… spread, each signal with the body of a hostinfo's Completed", r["sig_shaped"])
    row(f"SQLite empty transaction (BEGIN IMMEDIATE; COMMIT; {r['sql_empty']['n']})",
        r["sql_empty"])
    row("SQLite one-row durable commit (WAL, synchronous=FULL)", r["sql_row"])
    rf = r["reg_floor"]
    print(f"| {a.listeners} connections × one trivial call (registration floor) | "
          f"{rf['total'] * 1e3:.0f} ms total (connect {rf['connect'] * 1e3:.0f} ms, calls "
          f"{rf['calls'] * 1e3:.0f} ms) | | |")
    print("\n**vmstate on the native bed**\n")
    print("| figure | value | floor | ratio |")
    print("|---|---|---|---|")
    print(f"| hostinfo round trip, median ({rtt['n']} sequential) | {us(rtt['median'])} | "
          f"port echo + D-Bus call = {us(floor_rt)} | {rtt['median'] / floor_rt:.2f}× |")
    # any API that answers at once and reports later pays a call and a signal: this floor's
    # own ratio is what the target leaves for all of vmstate's work
    floor_async = port + r["async"]["median"]
    print(f"| … the asynchronous floor (port echo + call → signal) | {us(floor_async)} | "
          f"port echo + D-Bus call = {us(floor_rt)} | {floor_async / floor_rt:.2f}× |")
    print(f"| hostinfo round trip ÷ the asynchronous floor | {us(rtt['median'])} | "
          f"{us(floor_async)} | {rtt['median'] / floor_async:.2f}× |")
    # the same floor carrying the API's own answer: what is left above it is vmstate's work
    # (the helper, the bridge and its privsep reader, the wire format) and not the bus's
    floor_api = port + r["async_shaped"]["median"]
    print(f"| … the asynchronous floor with Completed's body (port echo + call → that signal) | "
          f"{us(floor_api)} | port echo + D-Bus call = {us(floor_rt)} | "
          f"{floor_api / floor_rt:.2f}× |")
    print(f"| hostinfo round trip ÷ that floor | {us(rtt['median'])} | {us(floor_api)} | "
          f"{rtt['median'] / floor_api:.2f}× |")
    # the same API measured as one chain with every hop of the design (port A, the privsep
    # reader, the bridge, port B) and no work in any: the least this design's round trip is
    design = r["design"]["median"]
    print(f"| … **the design floor in one chain** (call → service → port A → reader stand-in → "
          f"bridge stand-in → port B → Completed's body) | {us(design)} | port echo + D-Bus "
          f"call = {us(floor_rt)} | {design / floor_rt:.2f}× |")
    print(f"| hostinfo round trip ÷ the design floor | {us(rtt['median'])} | {us(design)} | "
          f"{rtt['median'] / design:.2f}× |")
    print(f"| hostinfo round trip, p90 | {us(rtt['p90'])} | "
          f"{us(r['port']['p90'] + r['call']['p90'])} (p90s) | "
          f"{rtt['p90'] / (r['port']['p90'] + r['call']['p90']):.2f}× |")
    print(f"| of which the D-Bus call to the helper (until the id returns), median | "
          f"{us(r['rtt_call']['median'])} | D-Bus call {us(call)} | "
          f"{r['rtt_call']['median'] / call:.2f}× |")
    tp = r["tput"]
    # the floor: as many clients making trivial D-Bus calls back to back (a request is at
    # least one call, and a signal back)
    print(f"| throughput, {a.apps} concurrent apps × {a.per_app} hostinfo | "
          f"{tp['per_s']:.0f} requests/s (median latency {us(tp['lat']['median'])}, busy "
          f"retries {tp['busy']}) | {a.apps} clients × trivial D-Bus calls: "
          f"{r['call_tput']:.0f}/s | {tp['per_s'] / r['call_tput']:.2f}× |")
    fan, sig = r["fan"], r["sig"]
    print(f"| fan-out to {a.listeners} listeners: last − first, median of {a.rounds} | "
          f"{us(fan['spread']['median'])} | signal spread {us(sig['spread']['median'])} | "
          f"{fan['spread']['median'] / sig['spread']['median']:.2f}× |")
    print(f"| … against the same emitter sending Completed's body | "
          f"{us(fan['spread']['median'])} | {us(r['sig_shaped']['median'])} | "
          f"{fan['spread']['median'] / r['sig_shaped']['median']:.2f}× |")
    fc, sc = r["fan_cpu"], r["sig_cpu"]
    print(f"| fan-out: dbus-daemon CPU per round | {fc[0]:.1f} ms | {sc[0]:.1f} ms | "
          f"{fc[0] / max(sc[0], 0.1):.2f}× |")
    print(f"| fan-out: emitter CPU per round (helper vs trivial emitter) | {fc[1]:.1f} ms | "
          f"{sc[1]:.1f} ms | {fc[1] / max(sc[1], 0.1):.2f}× |")
    print(f"| fan-out: request to first listener, median | {us(fan['first']['median'])} | "
          f"round-trip floor {us(floor_rt)} | {fan['first']['median'] / floor_rt:.2f}× |")
    print(f"| {a.listeners} registrations (connect + RegisterListener each) | "
          f"{r['reg'] * 1e3:.0f} ms | {rf['total'] * 1e3:.0f} ms | {r['reg'] / rf['total']:.2f}× |")
    rc_, rfc = r["reg_cpu"], r["reg_floor_cpu"]
    print(f"| registrations: dbus-daemon CPU | {rc_[0]:.0f} ms | {rfc[0]:.0f} ms | "
          f"{rc_[0] / max(rfc[0], 1):.2f}× |")
    print(f"| registrations: helper CPU vs trivial service | {rc_[1]:.0f} ms | {rfc[1]:.0f} ms | "
          f"{rc_[1] / max(rfc[1], 1):.2f}× |")
    print("\n**CPU time per hostinfo request** (each process's CPU clock, in ns, over the "
          f"{rtt['n']} sequential requests)\n")
    print("| process | CPU per request | ratio to the D-Bus call round trip |")
    print("|---|---|---|")
    for k, v in r["cpu"].items():
        print(f"| {k} | {v:.0f} µs | {v / call:.2f}× |")
    for key, who in (("sys", "vmstate-bridged (main process)"), ("sys_helper", "vmstate-helperd")):
        if key not in r:
            continue
        top = sorted(r[key].items(), key=lambda kv: -kv[1])[:12]
        print(f"\n**Syscalls of {who} per hostinfo request** (strace -c -f, "
              "300 sequential requests, a run of its own)\n")
        print("| " + " | ".join(k for k, _ in top) + " |")
        print("|" + "---|" * len(top))
        print("| " + " | ".join(f"{v:.1f}" for _, v in top) + " |")
    if "sched" in r:
        print(f"\n**Where a round trip's wall time goes** (perf sched_waking/sched_switch on "
              f"every CPU, {rtt['n']} sequential hostinfo in a run of its own; each chain walks "
              "back from a wake-up of the app, through the task that woke it, to the app's own "
              "run)")
        schedpath.report(r["sched"], rtt["n"])
        print("\n**The same for the API's floor** (the trivial service answers at once, then "
              "sends the caller Completed's body: `vsbench-dbus async`, VSBENCH_SHAPE=completed)")
        schedpath.report(r["sched_floor"], rtt["n"])
        print("\n**The same for the design floor in one chain** (`vsbench-dbus design`: the bare "
              "service, the relay, the reader and bridge stand-ins)")
        schedpath.report(r["sched_design"], rtt["n"])
    print(f"\nRSS after the fan-out: helper {r['rss']['vmstate-helperd'] / 1024:.1f} MiB "
          f"({r['rss_rest'] / 1024:.1f} MiB at rest 1.5 s later; its peak over the whole run, "
          f"VmHWM, {r['helper_hwm'] / 1024:.1f} MiB), "
          f"bridge {r['rss']['vmstate-bridged'] / 1024:.1f} MiB (1 VM).\n")
    bridge_cpu = r["cpu"]["vmstate-bridged"] + r["cpu"]["vmstate-bridged-reader (privsep)"]
    print("**Targets (issue 18, native bed)**\n")
    print("| target | measured | verdict |")
    print("|---|---|---|")
    t = [("hostinfo round trip median ≤ 250 µs",
          f"{us(rtt['median'])} (the design floor: {us(design)})", rtt["median"] <= 250),
         ("hostinfo round trip ≤ 1.5× (port echo + D-Bus call)",
          f"{rtt['median'] / floor_rt:.2f}× (the design floor: {design / floor_rt:.2f}×)",
          rtt["median"] <= 1.5 * floor_rt),
         (f"≥ 5,000 requests/s with {a.apps} concurrent apps", f"{tp['per_s']:.0f}/s",
          tp["per_s"] >= 5000),
         (f"fan-out: last of {a.listeners} < 50 ms after the first",
          us(fan["spread"]["median"]), fan["spread"]["median"] < 50000),
         ("fan-out ≤ 1.3× the signal floor", f"{fan['spread']['median'] / sig['spread']['median']:.2f}×",
          fan["spread"]["median"] <= 1.3 * sig["spread"]["median"]),
         (f"{a.listeners} registrations < 1 s", f"{r['reg']:.2f} s", r["reg"] < 1),
         ("bridge CPU per request ≤ 100 µs (main + privsep reader)", f"{bridge_cpu:.0f} µs",
          bridge_cpu <= 100),
         ("helper RSS < 4 MiB (its peak over the run, VmHWM)",
          f"{r['helper_hwm'] / 1024:.2f} MiB ({r['helper_hwm']} KiB)", r["helper_hwm"] < 4096)]
    for name, val, ok in t:
        print(f"| {name} | {val} | {verdict(ok)} |")
    if "vms" not in r:
        print("| 8 VMs at full rate: no VM's median > 1.2× alone; bridge RSS < 16 MiB with 8 VMs "
              "| not measured (--vms 0) | — |")
        return
    v = r["vms"]
    worst = max(v["together"][k]["median"] / v["alone"][k]["median"] for k in v["alone"])
    # each VM's own floor is as noisy as the VMs with a bridge each are unequal among
    # themselves: the slowest VM on the shared bridge against the median VM with its own
    seps = sorted(v["separate"][k]["median"] for k in v["alone"])
    shared = max(v["together"][k]["median"] for k in v["alone"]) / seps[len(seps) // 2]
    print(f"| {a.vms} VMs at full rate: no VM's median > 1.2× its alone figure | worst "
          f"{worst:.2f}× (the floor itself, {a.vms} at once: {floor_worst(v):.2f}×) | "
          f"{verdict(worst <= 1.2)} |")
    print(f"| … the same load: the slowest VM on one bridge ÷ the median VM with a bridge each "
          f"(what sharing the bridge adds) | {shared:.2f}× | {verdict(shared <= 1.2)} |")
    print(f"| bridge RSS < 16 MiB with {a.vms} VMs | {v['rss'] / 1024:.1f} MiB | "
          f"{verdict(v['rss'] < 16384)} |")
    report_vms(a, v)


if __name__ == "__main__":
    sys.exit(main())
