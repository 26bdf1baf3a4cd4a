#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# shellcheck shell=dash
# vmstate test agent (busybox sh), respawned by init. Serves the host's test harness
# (tests/harness/vmstest/vm.py) on the virtio-serial port named org.vmstate.test.0.
#
# Protocol, one line per message, every field printable ASCII, base64 for payloads:
#   host -> guest  "@@C ID TIMEOUT BASE64(script) LEN [N]"  run it (TIMEOUT 0: no limit);
#                  LEN is the length of BASE64 (a line cut short by a snapshot load is
#                  dropped); with N, N raw bytes follow the line: the script's stdin
#   guest -> host  "@@H PID BOOT_ID"                        the agent (re)started
#                  "@@B ID", base64 lines of the output, "@@E ID RC NBYTES"
# Text before the last "@@" on a line is ignored (it is the remnant of a line cut short
# by a snapshot load). The script runs with stdin from /dev/null, stdout and stderr into
# one file, stdin from /dev/null unless N was given, and without the port's fd. A script killed for its TIMEOUT exits 137.
NAME=org.vmstate.test.0
W=/tmp/.vmstate-agent
[ -e /run/vmstate/flags/debug ] && set -x
mkdir -p "$W"

dev=
while [ -z "$dev" ]; do
    for f in /sys/class/virtio-ports/*/name; do
        if [ "$(cat "$f" 2>/dev/null)" = "$NAME" ]; then d=${f%/name}; dev=/dev/${d##*/}; fi
    done
    [ -n "$dev" ] || sleep 0.2
done
# Only one process may hold the port open (EBUSY otherwise): wait for it to be free.
# (No trial open: bytes the host had queued would be delivered to it and lost.)
until { command exec 3<>"$dev"; } 2>/dev/null; do sleep 1; done
echo "vmstate-agent: serving $dev"
printf '\n@@H %s %s\n' "$$" "$(cat /proc/sys/kernel/random/boot_id)" >&3

while :; do
    line=
    if ! IFS= read -r line <&3; then
        # EOF: the host side is not connected (read returns 0 at once); poll gently.
        sleep 0.1
        continue
    fi
    case $line in
        *"@@C "*) line="@@C ${line##*@@C }" ;;
        *) continue ;;
    esac
    set -f
    # shellcheck disable=SC2086 # split the fields
    set -- $line
    set +f
    id=$2 to=$3 b64=$4 len=$5 n=${6:-0}
    case "$id:$to:$n" in
        *[!A-Za-z0-9._:-]*|:*|*::*|*:) continue ;;
    esac
    case "$to$n" in *[!0-9]*) continue ;; esac
    if [ "${#b64}" != "$len" ]; then
        echo "vmstate-agent: dropped damaged command $id"
        continue
    fi
    in=/dev/null
    if [ "$n" -gt 0 ]; then
        # exactly N bytes (fullblock: a port read returns what has arrived so far)
        in=$W/in.$id
        dd bs=65536 count="$n" iflag=fullblock,count_bytes of="$in" <&3 2>/dev/null
    fi
    if [ "$n" -gt 0 ] && [ "$(wc -c <"$in")" -ne "$n" ]; then
        echo "vmstate-agent: input of command $id cut short" >"$W/out.$id"; rc=253
    elif printf '%s\n' "$b64" | base64 -d >"$W/cmd.$id" 2>/dev/null; then
        if [ "$to" -gt 0 ]; then
            (set +x; cd / && timeout -s KILL "$to" sh "$W/cmd.$id") >"$W/out.$id" 2>&1 <"$in" 3>&-
        else
            (set +x; cd / && sh "$W/cmd.$id") >"$W/out.$id" 2>&1 <"$in" 3>&-
        fi
        rc=$?
    else
        echo "vmstate-agent: bad base64 in command $id" >"$W/out.$id"; rc=254
    fi
    n=$(wc -c <"$W/out.$id")
    {
        printf '\n@@B %s\n' "$id"
        base64 <"$W/out.$id"
        printf '@@E %s %s %s\n' "$id" "$rc" "$n"
    } >&3
    rm -f "$W/cmd.$id" "$W/out.$id" "$W/in.$id"
done
