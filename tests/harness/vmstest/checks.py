# SPDX-License-Identifier: GPL-2.0-or-later
"""vmstest.checks: the verdicts of a system suite — check() prints and counts each one,
field() reads key=value words of the probes' log lines, numbers collects measurements.

    from vmstest.checks import check, field, results
    check(rc == 0, "the bridge exits 0")
    results.numbers["save_s"] = 1.2
    ...
    results.workdir_done(workdir, made_here=not a.workdir)  # removed if it passed
    return results.summary(f"in {elapsed:.0f} s")   # prints the counts; exit status 0 or 1
"""
import os
import re
import shutil
import time


class Results:
    """What passed and failed, plus named measurements (printed by summary())."""

    def __init__(self, indent=""):
        self.passed, self.failures, self.numbers = [], [], {}
        self.indent = indent  # before each ok/FAIL line (e.g. under a test's heading)

    def check(self, cond, what):
        """Record one verdict (cond true = passed), print it; returns cond."""
        print(f"{self.indent}{'ok' if cond else 'FAIL'}: {what}", flush=True)
        (self.passed if cond else self.failures).append(what)
        return bool(cond)

    def workdir_done(self, workdir, made_here):
        """A passing run removes the work directory it made itself (@made_here: not given with
        --workdir), so that repeated runs do not fill /tmp (a cluster run leaves ~1 GiB);
        a failing run keeps it for its logs and says where. Nothing is removed while a
        mount lies under it (rmtree would reach into the mounted filesystem)."""
        workdir = os.path.realpath(workdir)
        if made_here and not self.failures and not _mounts_under(workdir):
            shutil.rmtree(workdir, ignore_errors=True)
            return
        print(f"work directory: {workdir}", flush=True)

    def summary(self, suffix="", numbers=True):
        """Print the numbers and the counts; returns the exit status (1 if anything failed)."""
        if numbers and self.numbers:
            print("numbers: " + " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in self.numbers.items()))
        # the failed checks again, last: a CI log cut above (a bridge log tail printed after
        # the FAIL lines) still names them
        for what in self.failures:
            print(f"failed: {what[:200]}")
        print(f"{len(self.passed)} passed, {len(self.failures)} failed{' ' + suffix if suffix else ''}")
        return 1 if self.failures else 0


def _mounts_under(path):
    """The mount points at or below @path in this mount namespace."""
    try:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
    except OSError:
        return ["(unknown: /proc/self/mountinfo unreadable)"]
    return [m for m in points if m == path or m.startswith(path + "/")]


results = Results()  # the suite's one set of results (one suite per process)


def check(cond, what):
    return results.check(cond, what)


def field(line, name):
    """The value of word `name=value` in a log line (None when absent)."""
    m = re.search(rf"(?:^|\s){re.escape(name)}=(\S*)", line)
    return m.group(1) if m else None


def wait_until(fn, timeout, what, interval=0.2):
    """Poll fn() until it returns something true; that value. TimeoutError after timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
