# SPDX-License-Identifier: GPL-2.0-or-later
"""schedpath: where a round trip's wall time goes, hop by hop, from the kernel's scheduler
events (perf's sched_waking and sched_switch tracepoints, recorded on every CPU).

A request crosses several processes (app -> dbus-daemon -> helper -> relay -> bridge ...);
each hop is one process waking the next. CPU time per process (what the benches report)
does not say which of them the caller waited for, nor how long each wakee waited for a CPU.
This walks back from every wake-up of the measuring app along the chain of wakers: each
link is the time from a task's wake-up to its running (the scheduler's delay), then from its
running to its waking the next task (its work on the path, including any time it was
preempted). Aggregated by the chain's shape, it prints the typical chain with the median of
each link.
"""
import collections
import re
import subprocess
import time

SWITCH = re.compile(r"prev_comm=(.*?) prev_pid=(\d+) .*?prev_state=(\S+) ==> "
                    r"next_comm=(.*?) next_pid=(\d+)")
WAKEUP = re.compile(r"comm=(.*?) pid=(\d+) ")
LINE = re.compile(r"^\s*(\S.*?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s+(.*)$")


def record(out_path, run):
    """perf record the scheduler's switch and wake-up events on every CPU while run() runs."""
    rec = subprocess.Popen(["perf", "record", "-q", "-a", "-o", out_path,
                            "-e", "sched:sched_switch", "-e", "sched:sched_waking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # perf opens its buffers
    try:
        run()
    finally:
        rec.send_signal(2)
        rec.wait()


class Node:
    """One run of a task on the path: woken at wake_t by the run `waker`, on CPU at start;
    preempts: (off, back on, by whom) while it was runnable but off its CPU."""
    __slots__ = ("tid", "wake_t", "waker", "start", "preempts", "out_t", "by")

    def __init__(self, tid, wake_t, waker):
        self.tid, self.wake_t, self.waker = tid, wake_t, waker
        self.start, self.preempts, self.out_t, self.by = None, [], None, None

    def preempted_before(self, t):
        """Time off its CPU before t, and who took it longest."""
        spans = [(min(b, t) - a, who) for a, b, who in self.preempts if a < t]
        return sum(d for d, _ in spans), max(spans)[1] if spans else ""


def chains(perf_data, app_comm, names, max_hops=16):
    """Every chain of wakers that ended in a wake-up of the task called app_comm (one not in
    names: a service may run the same program), back to that task's own run: lists of
    (name, delay_s, work_s, preempted_s, by), first hop first. names: {tid: name} of the
    tasks to name; another task is named by its command."""
    txt = subprocess.run(["perf", "script", "-i", perf_data, "-F",
                          "comm,pid,tid,cpu,time,event,trace"],
                         capture_output=True, text=True).stdout
    cur = {}    # tid -> its current Node
    comm = {0: "idle"}
    out = []

    def label(tid):
        return names.get(tid) or comm.get(tid, str(tid))

    for line in txt.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        tid, t, ev, rest = int(m[3]), float(m[5]), m[6], m[7]
        if ev == "sched_waking":
            w = WAKEUP.match(rest)
            target = int(w[2])
            comm[target] = w[1]
            if target == tid:
                continue
            prev = cur.get(target)
            if prev is not None and (prev.out_t is None
                                     or (prev.start is None and prev.wake_t is not None)):
                continue  # on its CPU, or woken already: its first waker counts
            cur[target] = Node(target, t, cur.get(tid))
        elif ev == "sched_switch":
            s = SWITCH.search(rest)
            prev_tid, state, next_tid = int(s[2]), s[3], int(s[5])
            comm[prev_tid], comm[next_tid] = s[1], s[4]
            p = cur.get(prev_tid)
            if p is not None:
                p.out_t, p.by = t, s[4]
                if not state.startswith("R"):
                    # asleep: its next run starts with a new wake-up
                    cur[prev_tid] = Node(prev_tid, None, None)
                    cur[prev_tid].out_t = t
            n = cur.get(next_tid)
            if n is None:
                n = cur[next_tid] = Node(next_tid, None, None)
            if n.start is None:
                n.start = t
            elif n.out_t is not None:
                n.preempts.append((n.out_t, t, n.by))  # back from a preemption
            n.out_t = None
            if comm[next_tid] == app_comm and next_tid not in names and n.wake_t is not None:
                out.append(walk(n, label, max_hops))
    return out


def walk(node, label, max_hops):
    hops = []
    wakee = node
    w = node.waker
    while w is not None and w.tid != 0 and w.start is not None and len(hops) < max_hops:
        # the app's own wait belongs to the chain before: its run counts from its start
        delay = w.start - w.wake_t if w.wake_t is not None and w.tid != node.tid else 0.0
        # only what kept it off its CPU before it woke the next is on the path (its wakee
        # often takes its CPU right after)
        pre, by = w.preempted_before(wakee.wake_t)
        hops.append((label(w.tid), delay, wakee.wake_t - w.start, pre, by))
        if w.tid == node.tid or w.wake_t is None:
            break  # back at the app's own run: where the request began
        wakee, w = w, w.waker
    hops.reverse()
    hops.append((label(node.tid) or "?", node.start - node.wake_t, 0.0, 0.0, ""))
    return hops


def report(all_chains, per_request, print_fn=print):
    """Prints, for each chain shape seen at least once per ten requests, its count and the
    median delay and work of each hop."""
    by_shape = collections.defaultdict(list)
    for c in all_chains:
        by_shape[tuple(h[0] for h in c)].append(c)
    med = lambda xs: sorted(xs)[len(xs) // 2] * 1e6  # noqa: E731
    for shape, cs in sorted(by_shape.items(), key=lambda kv: -len(kv[1])):
        if len(cs) * 10 < per_request:
            continue
        total = med([sum(h[1] + h[2] for h in c) for c in cs])
        print_fn(f"\nChain seen {len(cs)} times ({len(cs) / per_request:.2f} per request): "
                 f"median {total:.0f} µs from the first task's wake-up to the app's running\n")
        print_fn("| hop | waits for a CPU (median, p90) | works until it wakes the next "
                 "(median, p90) | of which preempted (mean; by whom, most often) |")
        print_fn("|---|---|---|---|")
        p90 = lambda xs: sorted(xs)[int(len(xs) * 0.9)] * 1e6  # noqa: E731
        for i, name in enumerate(shape):
            d = [c[i][1] for c in cs]
            w = [c[i][2] for c in cs]
            pr = [c[i][3] for c in cs]
            by = collections.Counter(c[i][4] for c in cs if c[i][4]).most_common(1)
            print_fn(f"| {name} | {med(d):.0f}, {p90(d):.0f} µs | {med(w):.0f}, {p90(w):.0f} µs "
                     f"| {sum(pr) / len(pr) * 1e6:.0f} µs"
                     + (f"; {by[0][0]} ({by[0][1]} times)" if by else "") + " |")
