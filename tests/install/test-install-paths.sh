#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# A default ./configure (no --with-...dir) followed by `make install-data DESTDIR=...`
# must put the D-Bus policy, the units, the udev rule, tmpfiles.d and sysusers.d entries
# in the directories this system's pkg-config names, i.e. where dbus-daemon, systemd and
# udevd read them. Runs a fresh configure in a temporary build directory (~20 s).
set -eu
srcdir=$(cd "${top_srcdir:-$(dirname "$0")/../..}" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/vms-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail=0
pcvar() { pkg-config --variable="$2" "$1" 2>/dev/null || true; }

# The expected directories, straight from pkg-config (what the running system reads).
unitdir=$(pcvar systemd systemdsystemunitdir)
tmpfilesdir=$(pcvar systemd tmpfilesdir)
sysusersdir=$(pcvar systemd sysusersdir)
dbusdatadir=$(pcvar dbus-1 datadir)
udevdir=$(pcvar udev udevdir)
[ -n "$unitdir" ] && [ -n "$dbusdatadir" ] || {
    echo "SKIP: pkg-config knows no systemd or dbus-1 directories here"; exit 77; }

mkdir "$work/build"
(cd "$work/build" && "$srcdir/configure" --disable-werror >"$work/configure.log" 2>&1) || {
    echo "FAIL: configure (log below)"; tail -20 "$work/configure.log"; exit 1; }
make -C "$work/build" install-data DESTDIR="$work/root" >"$work/install.log" 2>&1 || {
    echo "FAIL: make install-data"; tail -20 "$work/install.log"; exit 1; }

expect() { # FILE: installed where the system reads it
    if [ -f "$work/root$1" ]; then echo "ok   $1"; else echo "FAIL $1 not installed"; fail=1; fi
}
expect "$unitdir/vmstate-bridged.service"
expect "$unitdir/vmstate-helperd.service"
expect "$dbusdatadir/dbus-1/system.d/org.vmstate.Helper1.conf"
expect "$tmpfilesdir/vmstate.conf"
expect "$sysusersdir/vmstate.conf"
if [ -n "$udevdir" ]; then
    expect "$udevdir/rules.d/70-vmstate-helperd.rules"
else # no udev.pc: configure falls back to the rules directory udevd reads
    found=
    for d in /lib/udev/rules.d /usr/lib/udev/rules.d; do
        [ -f "$work/root$d/70-vmstate-helperd.rules" ] && found=$d
    done
    if [ -n "$found" ]; then echo "ok   $found/70-vmstate-helperd.rules"
    else echo "FAIL 70-vmstate-helperd.rules not in a udev rules directory"; fail=1; fi
fi
# Units name the installed programs and config, with no placeholder left.
for u in vmstate-bridged vmstate-helperd; do
    f="$work/root$unitdir/$u.service"
    [ -f "$f" ] || continue
    if grep -n '@[a-z]*@' "$f"; then echo "FAIL $u.service: placeholder left"; fail=1; fi
    grep -q "^ExecStart=/usr/local/sbin/$u " "$f" || { echo "FAIL $u.service: ExecStart"; fail=1; }
done
exit $fail
