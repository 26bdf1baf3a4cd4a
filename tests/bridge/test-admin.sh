#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# vmstate-admin: principals (secret from stdin or a file, never argv), rights, listings,
# and its refusals. Runs in make check (no QEMU needed).
set -eu
builddir=${top_builddir:-.}
admin="$builddir/host-bridge/vmstate-admin"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
db="$tmp/b.db"
conf="$tmp/bridge.conf"
fail() { echo "FAIL: $*"; exit 1; }
cat >"$conf" <<EOF
[bridge]
database = $db
admin_socket = $tmp/admin.sock
[vm vm1]
port_a = $tmp/vm1/a.sock
port_b = $tmp/vm1/b.sock
qmp = $tmp/vm1/qmp.sock
nodes = disk0
EOF

echo "s3cret" | "$admin" -D "$db" principal-add app --cost test >/dev/null || fail "principal-add from stdin"
printf 'other\n' >"$tmp/secret"
"$admin" -D "$db" principal-add saver --secret-file "$tmp/secret" --cost test >/dev/null ||
    fail "principal-add from a file"
"$admin" -D "$db" principals | grep -q '^app' || fail "principals lists app"
"$admin" -D "$db" principals | grep -q 's3cret' && fail "secret shown"
sqlite3 "$db" 'select hash from principals' 2>/dev/null | grep -q 's3cret' && fail "secret stored in clear"
sqlite3 "$db" 'select hash from principals' 2>/dev/null | grep -q '^\$argon2id\$' ||
    { command -v sqlite3 >/dev/null && fail "hash is not argon2id"; }
"$admin" -c "$conf" grant app vm1 save restore list || fail "grant"
"$admin" -c "$conf" grant saver vm1 all || fail "grant all"
"$admin" -D "$db" rights | grep -q "^app	vm1	restore	any$" || fail "rights lists app vm1 restore"
# a right limited to a guest uid, and the rights "all" leaves out
"$admin" -c "$conf" grant app vm1 delete --uid 1000 || fail "grant --uid"
"$admin" -D "$db" rights | grep -q "^app	vm1	delete	1000$" || fail "rights shows the uid"
"$admin" -c "$conf" grant app vm1 save --uid -3 2>/dev/null && fail "a negative uid accepted"
"$admin" -D "$db" revoke app vm1 delete --uid 1000 2>/dev/null && fail "revoke --uid accepted"
"$admin" -c "$conf" grant app vm1 restore-any delete-any restore-foreign || fail "grant the -any rights"
"$admin" -D "$db" requests vm1 | head -1 | grep -q "	uid	followups	mode$" || fail "requests shows no uid, followups and mode columns"
"$admin" -D "$db" states vm1 | head -1 | grep -q "	status	principal$" || fail "states shows no status column"
"$admin" -c "$conf" grant app vm1 frobnicate 2>/dev/null && fail "unknown operation accepted"
"$admin" -c "$conf" grant nobody vm1 save 2>/dev/null && fail "grant to an unknown principal"
# a VM the configuration does not name: refused, saying which VMs it has; --force grants it
out=$("$admin" -c "$conf" grant app nosuchvm save 2>&1) && fail "grant for an unknown VM succeeded"
echo "$out" | grep -q "no VM 'nosuchvm' in $conf (its VMs: vm1)" || fail "unknown VM message: $out"
"$admin" -c "$conf" rights | grep -q nosuchvm && fail "a right for an unknown VM was stored"
out=$("$admin" -D "$db" -c /nonexistent.conf grant app vm2 save 2>&1) && fail "grant without a config"
"$admin" -D "$db" grant --force app vm2 save || fail "grant --force"
"$admin" -D "$db" rights | grep -q "^app	vm2	save	any$" || fail "grant --force stored"
"$admin" -D "$db" revoke app vm1 restore || fail "revoke"
"$admin" -D "$db" rights | grep -q "^app	vm1	restore	" && fail "revoked right still listed"
"$admin" -D "$db" principal-remove saver || fail "principal-remove"
"$admin" -D "$db" rights | grep -q "^saver" && fail "rights of a removed principal remain"
"$admin" -D "$db" principal-remove saver 2>/dev/null && fail "removing twice succeeded"
printf '' | "$admin" -D "$db" principal-add empty --cost test 2>/dev/null && fail "empty secret accepted"
for t in states requests events; do "$admin" -D "$db" $t vm1 >/dev/null || fail "$t"; done
# CLI conventions: --help/--version, usage errors exit 2 and touch nothing
"$admin" --help | grep -q "^Usage: vmstate-admin" || fail "--help"
"$admin" --version | grep -q "^vmstate-admin [0-9]" || fail "--version"
rc=0; "$admin" -D "$tmp/new.db" frobnicate 2>"$tmp/err" || rc=$?
[ $rc -eq 2 ] || fail "unknown command: exit $rc, not 2"
grep -q "unknown command 'frobnicate'" "$tmp/err" || fail "unknown command message"
[ -e "$tmp/new.db" ] && fail "a database was created for an unknown command"
"$admin" -D "$tmp/new.db" principals 2>"$tmp/err" && fail "principals on a missing journal"
grep -q "no journal at $tmp/new.db" "$tmp/err" || fail "missing journal message"
[ -e "$tmp/new.db" ] && fail "a database was created by a read command"
rc=0; "$admin" -D "$db" grant app 2>/dev/null || rc=$?
[ $rc -eq 2 ] || fail "grant with too few arguments: exit $rc, not 2"
# status with no bridge running: says so, and what to do, exit 3
rc=0; "$admin" -c "$conf" status 2>"$tmp/err" || rc=$?
[ $rc -eq 3 ] || fail "status without a bridge: exit $rc, not 3"
grep -q "no bridge answers on $tmp/admin.sock" "$tmp/err" || fail "no-bridge message: $(cat "$tmp/err")"
echo "test-admin: ok"
