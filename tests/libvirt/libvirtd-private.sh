#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# libvirtd-private.sh — a private libvirtd for the tests (no systemd, nothing of the host's).
#
#   libvirtd-private.sh start DIR [CACHE]   start it; prints its URI when it answers
#   libvirtd-private.sh stop DIR            stop it (and the QEMUs it started)
#
# The daemon runs in its own mount namespace where DIR/{etc,run,lib,log} and CACHE
# (default DIR/cache; keep it between runs: the first start probes QEMU for ~8 s) are
# libvirt's /etc, /run, /var/lib, /var/log and /var/cache dirs, with a private
# /etc/passwd that has the libvirt-qemu user libvirtd insists on. Its parent is
# `tini -s`: QEMUs are reaped at once (the host's PID 1 here takes ~1.5 s per QEMU stop).
# Needs root. Exit 77 when libvirtd, tini or unshare is missing.
set -eu

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR [CACHE]" >&2; exit 2; }

uri_of() { echo "qemu+unix:///system?socket=$1/run/libvirt-sock"; }

if [ "$cmd" = inner ]; then
    # in the private mount namespace
    cache=$3
    mount -t tmpfs tmpfs /run
    mkdir -p /run/libvirt
    mount --bind "$dir/run" /run/libvirt
    for d in lib log; do
        mkdir -p "/var/$d/libvirt"
        mount --bind "$dir/$d" "/var/$d/libvirt"
    done
    mkdir -p /var/cache/libvirt
    mount --bind "$cache" /var/cache/libvirt
    mount --bind "$dir/etc" /etc/libvirt
    mount --bind "$dir/passwd" /etc/passwd
    mount --bind "$dir/group" /etc/group
    exec tini -s -- libvirtd -f "$dir/etc/libvirtd.conf" -p "$dir/libvirtd.pid"
fi

case "$cmd" in
start)
    for t in libvirtd tini unshare virsh; do
        command -v "$t" >/dev/null 2>&1 || { echo "$t not found: skipping" >&2; exit 77; }
    done
    [ "$(id -u)" = 0 ] || { echo "needs root: skipping" >&2; exit 77; }
    dir=$(mkdir -p "$dir" && cd "$dir" && pwd)
    cache=${3:-$dir/cache}
    mkdir -p "$cache" && cache=$(cd "$cache" && pwd)
    mkdir -p "$dir/etc" "$dir/run" "$dir/lib" "$dir/log"
    cat >"$dir/etc/libvirtd.conf" <<CONF
auth_unix_rw = "none"
auth_unix_ro = "none"
unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
log_outputs = "3:file:$dir/log/libvirtd.log"
CONF
    cat >"$dir/etc/qemu.conf" <<CONF
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
stdio_handler = "file"
CONF
    cp /etc/passwd "$dir/passwd"
    cp /etc/group "$dir/group"
    grep -q '^libvirt-qemu:' "$dir/group" || echo 'libvirt-qemu:x:64055:' >>"$dir/group"
    grep -q '^kvm:' "$dir/group" || echo 'kvm:x:64056:' >>"$dir/group"
    grep -q '^libvirt-qemu:' "$dir/passwd" ||
        echo 'libvirt-qemu:x:64055:64055:libvirt:/var/lib/libvirt:/usr/sbin/nologin' >>"$dir/passwd"
    setsid unshare --mount --propagation private -- "$0" inner "$dir" "$cache" \
        </dev/null >"$dir/daemon.out" 2>&1 &
    echo $! >"$dir/tini.pid"
    uri=$(uri_of "$dir")
    i=0
    until virsh -c "$uri" version >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -gt 300 ] || ! kill -0 "$(cat "$dir/tini.pid")" 2>/dev/null; then
            echo "libvirtd did not come up; $dir/daemon.out and $dir/log/libvirtd.log say:" >&2
            tail -5 "$dir/daemon.out" "$dir/log/libvirtd.log" >&2 2>/dev/null || true
            exit 1
        fi
        sleep 0.1
    done
    echo "$uri"
    ;;
stop)
    uri=$(uri_of "$dir")
    for d in $(virsh -c "$uri" list --name 2>/dev/null); do
        virsh -c "$uri" destroy "$d" >/dev/null 2>&1 || true
    done
    if [ -f "$dir/tini.pid" ]; then
        pid=$(cat "$dir/tini.pid")
        kill -TERM "$pid" 2>/dev/null || true
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$dir/tini.pid"
    fi
    ;;
*)
    echo "usage: $0 start|stop DIR [CACHE]" >&2
    exit 2
    ;;
esac
