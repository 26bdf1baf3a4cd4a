#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# shellcheck shell=dash
# /init of the vmstate test guest (busybox sh, PID 1). Installed by build-image.sh.
#
# Kernel command line options:
#   vmstate.ports=N     wait for N named virtio-serial ports (default: the test port only)
#   vmstate.nohelper    skip /etc/vmstate/init.d entries whose name contains "helper"
#   vmstate.noinitd     skip all of /etc/vmstate/init.d
#   vmstate.skip=A,B    skip the init.d entries named A and B
#   vmstate.debug       trace this script on the console
# Every vmstate.* option is also left in /run/vmstate/flags/NAME (holding its value) for
# the init.d scripts.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root

log() { read -r up _ </proc/uptime; echo "vmstate-init: [$up] $*"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
# tmpfs on /tmp and /run that keep what the image holds there (e.g. libraries of programs
# built under /tmp, copied to their build paths)
tmpfs_over() { # tmpfs_over DIR MODE
    mkdir -p /.tmpfs
    mount -t tmpfs -o "mode=$2" tmpfs /.tmpfs
    cp -a "$1/." /.tmpfs/
    mount --move /.tmpfs "$1"
    chmod "$2" "$1"
}
tmpfs_over /tmp 1777
tmpfs_over /run 0755
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mkdir -p /run/vmstate/flags /run/dbus /var/log

ports=0
skip=
read -r cmdline </proc/cmdline
for opt in $cmdline; do
    case $opt in
        vmstate.*=*) name=${opt%%=*}; val=${opt#*=} ;;
        vmstate.*) name=$opt; val=1 ;;
        *) continue ;;
    esac
    name=${name#vmstate.}
    echo "$val" >"/run/vmstate/flags/$name"
    case $name in
        ports) ports=$val ;;
        nohelper) skip="$skip *helper*" ;;
        noinitd) skip="$skip *" ;;
        skip) skip="$skip $(echo "$val" | tr , ' ')" ;;
        debug) set -x ;;
    esac
done

# Memory hot-plugged by virtio-mem is onlined by the kernel at once (no udev here to do it;
# the Debian kernel leaves MEMORY_HOTPLUG_DEFAULT_ONLINE off).
echo online >/sys/devices/system/memory/auto_online_blocks 2>/dev/null || true
# Modules, in the order build-image.sh resolved (dependencies first, built-ins left out).
while read -r mod path; do
    [ -d "/sys/module/$mod" ] || insmod "$path" || log "insmod $mod failed"
done </etc/vmstate/modules

log modules loaded
# Wait until the virtio-serial ports have their names (they arrive after the driver loads).
named_ports() {
    n=0
    for f in /sys/class/virtio-ports/*/name; do
        [ -s "$f" ] && n=$((n + 1))
    done
    echo "$n"
}
has_test_port() { grep -qx org.vmstate.test.0 /sys/class/virtio-ports/*/name 2>/dev/null; }
i=0
while [ $i -lt 500 ]; do
    if [ "$ports" -gt 0 ]; then [ "$(named_ports)" -ge "$ports" ] && break
    else has_test_port && break; fi
    i=$((i + 1)); sleep 0.02
done
[ $i -lt 500 ] || log "timed out waiting for virtio ports (have $(named_ports), want ${ports:-test port})"
for f in /sys/class/virtio-ports/*/name; do
    [ -f "$f" ] || continue
    d=${f%/name}; log "port ${d##*/} = $(cat "$f")"
done

hostname -F /etc/hostname
ip link set lo up 2>/dev/null
# (not /dev/urandom: reading it blocks until the crng is ready, ~1 s into a TCG boot)
tr -d '-' </proc/sys/kernel/random/uuid >/etc/machine-id
syslogd -O /var/log/messages

if dbus-daemon --system --fork; then log "dbus-daemon started"
else log "dbus-daemon failed to start"; fi

for f in /etc/vmstate/init.d/*; do
    [ -x "$f" ] || continue
    base=${f##*/}; skipped=
    for pat in $skip; do
        # shellcheck disable=SC2254 # patterns are meant to match
        case $base in $pat) skipped=1 ;; esac
    done
    if [ -n "$skipped" ]; then log "skipping $base"; continue; fi
    "$f"; rc=$?
    log "$base exited $rc"
done

log "ready; starting init (agent on org.vmstate.test.0)"
exec /sbin/init
