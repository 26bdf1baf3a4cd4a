#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Bring up a test cluster on this machine and drive it by hand (needs root).

    tests/cluster/cluster-shell.py [--hosts 3] [--token 500] [--workdir DIR]
                                   [--builddir BUILD --image DIR [--vm NAME:h1,h2,h3]...]

N hosts as network namespaces, each with its own corosync (vmstest.cluster); with
--builddir, a bridge per host with [cluster] enabled and the given HA VMs defined on the
shared directory (vmstest.ha). Then one command per line on stdin:
    status                 every host's quorum view (and its bridge's cluster table)
    start VM N             vmstate-admin start VM on host N
    kill N                 SIGKILL everything of host N (corosync, bridge, QEMUs)
    up N                   start host N's corosync and bridge again
    partition N | heal N   cut host N off the cluster network, or reconnect it
    exec N CMD...          run CMD inside host N (its netns and /run)
    quit                   tear everything down
"""
import argparse
import json
import os
import shlex
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
from vmstest.cluster import Cluster  # noqa: E402
from vmstest.ha import HACluster  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--token", type=int, default=500)
    ap.add_argument("--workdir")
    ap.add_argument("--builddir")
    ap.add_argument("--image")
    ap.add_argument("--vm", action="append", default=[],
                    help="NAME:HOST,HOST... an HA VM and its hosts in order")
    a = ap.parse_args()
    wd = a.workdir or tempfile.mkdtemp(prefix="vmscsh-", dir="/tmp")
    ha = None
    if a.builddir:
        vms = {v.split(":")[0]: (v.split(":")[1].split(","), 0) for v in a.vm}
        ha = HACluster(a.image, a.builddir, wd, {i: 2 for i in range(1, a.hosts + 1)}, 1, vms,
                       token=a.token)
        ha.setup(range(1, a.hosts + 1))
        c = ha.c
    else:
        c = Cluster(wd, hosts=a.hosts, token=a.token)
        c.start()
        c.wait_quorate()
    print(f"cluster up in {wd}: hosts {[h.name for h in c.hosts]}; shared {c.shared_dir}")
    try:
        for line in sys.stdin:
            w = shlex.split(line)
            if not w:
                continue
            try:
                if w[0] == "quit":
                    break
                if w[0] == "status":
                    for h in c.hosts:
                        print(h.name, h.quorum() if h.corosync_alive() else "down")
                        if ha and ha.bridges[h.index].alive():
                            print(json.dumps(ha.cluster(h.index).get("vms", [])))
                elif w[0] == "start" and ha:
                    print(ha.start_vm(int(w[2]), w[1]))
                elif w[0] == "kill":
                    c.host(int(w[1])).kill()
                elif w[0] == "up":
                    if ha:
                        ha.host_up(int(w[1]))
                    else:
                        c.host(int(w[1])).start_corosync()
                elif w[0] == "partition":
                    c.partition(int(w[1]))
                elif w[0] == "heal":
                    c.heal(int(w[1]))
                elif w[0] == "exec":
                    r = c.host(int(w[1])).run(w[2:])
                    print(r.stdout, r.stderr, end="")
                else:
                    print("unknown command (see --help)")
            except Exception as e:  # noqa: BLE001 (a bad command must not tear down the cluster)
                print(f"error: {e}")
            sys.stdout.flush()
    finally:
        (ha or c).close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
