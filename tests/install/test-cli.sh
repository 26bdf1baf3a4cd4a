#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Every program answers --help and --version, refuses an unknown option with exit 2, and
# the daemons' --daemon mode (for init scripts without systemd) detaches, writes its
# pidfile, refuses a second instance, reports a failed start in its exit status and
# removes the pidfile when stopped.
set -u
builddir=${top_builddir:-.}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vms-cli.XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
version=$(sed -n 's/^#define PACKAGE_VERSION "\(.*\)"/\1/p' "$builddir/config.h")

for prog in host-bridge/vmstate-bridged host-bridge/vmstate-admin guest-helper/vmstate-helperd \
    libvmstate/vmstatectl; do
    name=$(basename "$prog")
    exe="$builddir/$prog"
    out=$("$exe" --help) || fail "$name --help: exit $?"
    echo "$out" | head -n 1 | grep -q "^Usage: $name " || fail "$name --help: $(echo "$out" | head -n 1)"
    out=$("$exe" -h) || fail "$name -h"
    [ "$("$exe" --version)" = "$name $version" ] || fail "$name --version: $("$exe" --version)"
    [ "$("$exe" -V)" = "$name $version" ] || fail "$name -V"
    rc=0; "$exe" --no-such-option >/dev/null 2>&1 || rc=$?
    [ $rc -eq 2 ] || fail "$name --no-such-option: exit $rc, not 2"
    echo "ok   $name: --help, --version, exit 2 on a bad option"
done

bridged="$builddir/host-bridge/vmstate-bridged"
cat >"$tmp/bridge.conf" <<CONF
[bridge]
database = $tmp/bridge.db
CONF
rc=0; "$bridged" --pidfile "$tmp/p" -c "$tmp/bridge.conf" 2>/dev/null || rc=$?
[ $rc -eq 2 ] || fail "--pidfile without --daemon: exit $rc"
"$bridged" --check -c "$tmp/bridge.conf" | grep -q "OK, 0 VM" || fail "--check"
# a start that fails (the journal cannot be opened) fails the command, and leaves no pidfile
rc=0; "$bridged" --daemon --pidfile "$tmp/p" -c "$tmp/bridge.conf" -D "$tmp/no/such/dir/db" || rc=$?
[ $rc -eq 1 ] || fail "--daemon with a failing start: exit $rc, not 1"
[ -e "$tmp/p" ] && fail "pidfile left by a failed start"
# a good start: the command returns 0 once the daemon runs, with its pid in the file
"$bridged" --daemon --pidfile "$tmp/p" -c "$tmp/bridge.conf" || fail "--daemon: exit $?"
pid=$(cat "$tmp/p") || fail "no pidfile"
kill -0 "$pid" || fail "daemon $pid not running"
[ "$(ps -o ppid= -p "$pid" | tr -d ' ')" = 1 ] || [ "$(ps -o tty= -p "$pid" | tr -d ' ')" = "?" ] ||
    fail "daemon still attached"
rc=0; "$bridged" --daemon --pidfile "$tmp/p" -c "$tmp/bridge.conf" 2>"$tmp/err" || rc=$?
[ $rc -eq 1 ] && grep -q "already running" "$tmp/err" || fail "second instance: exit $rc $(cat "$tmp/err")"
kill "$pid"
for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "daemon did not stop on SIGTERM"
pid=
[ -e "$tmp/p" ] && fail "pidfile not removed at exit"
echo "ok   vmstate-bridged --daemon --pidfile"

# The libvirt backend is a module loaded when a VM names it: the daemon (and so its privsep
# reader, the same executable) does not link libvirt; --check loads the module as a VM would
# (RTLD_NOW: a symbol the bridge does not export fails here), and says so when it is missing.
readelf -d "$bridged" | grep -q "NEEDED.*libvirt" && fail "vmstate-bridged links libvirt"
if grep -q "^#define HAVE_LIBVIRT 1" "$builddir/config.h"; then
    cat >"$tmp/lv.conf" <<CONF
[bridge]
database = $tmp/bridge.db
[vm lv1]
backend = libvirt
uri = qemu:///embed?root=$tmp/lvroot
CONF
    "$bridged" --check -c "$tmp/lv.conf" | grep -q "OK, 1 VM" || fail "--check with a libvirt VM"
    rc=0; VMSTATE_BRIDGE_MODULE_DIR=$tmp/none "$bridged" --check -c "$tmp/lv.conf" 2>"$tmp/err" || rc=$?
    [ $rc -eq 1 ] && grep -q "cannot load the module: .*backend-libvirt.so" "$tmp/err" &&
        grep -q "\[vm lv1\] its backend cannot be loaded" "$tmp/err" ||
        fail "missing module: exit $rc $(cat "$tmp/err")"
    echo "ok   vmstate-bridged loads the libvirt backend's module (and says when it cannot)"
fi
exit 0
