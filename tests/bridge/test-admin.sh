#!/bin/sh
# vmstate-admin: principals (secret from stdin or a file, never argv), rights, listings,
# and its refusals. Runs in make check (no QEMU needed).
set -eu
builddir=${top_builddir:-.}
admin="$builddir/host-bridge/vmstate-admin"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
db="$tmp/b.db"
fail() { echo "FAIL: $*"; exit 1; }

echo "s3cret" | "$admin" -d "$db" principal-add app --cost test >/dev/null || fail "principal-add from stdin"
printf 'other\n' >"$tmp/secret"
"$admin" -d "$db" principal-add saver --secret-file "$tmp/secret" --cost test >/dev/null ||
    fail "principal-add from a file"
"$admin" -d "$db" principals | grep -q '^app' || fail "principals lists app"
"$admin" -d "$db" principals | grep -q 's3cret' && fail "secret shown"
sqlite3 "$db" 'select hash from principals' 2>/dev/null | grep -q 's3cret' && fail "secret stored in clear"
sqlite3 "$db" 'select hash from principals' 2>/dev/null | grep -q '^\$argon2id\$' ||
    { command -v sqlite3 >/dev/null && fail "hash is not argon2id"; }
"$admin" -d "$db" grant app vm1 save restore list || fail "grant"
"$admin" -d "$db" grant saver vm1 all || fail "grant all"
"$admin" -d "$db" rights | grep -q "^app	vm1	restore	any$" || fail "rights lists app vm1 restore"
# issue 14: a right limited to a guest uid, and the rights "all" leaves out
"$admin" -d "$db" grant app vm1 delete --uid 1000 || fail "grant --uid"
"$admin" -d "$db" rights | grep -q "^app	vm1	delete	1000$" || fail "rights shows the uid"
"$admin" -d "$db" grant app vm1 save --uid -3 2>/dev/null && fail "a negative uid accepted"
"$admin" -d "$db" revoke app vm1 delete --uid 1000 2>/dev/null && fail "revoke --uid accepted"
"$admin" -d "$db" grant app vm1 restore-any delete-any restore-foreign || fail "grant the -any rights"
"$admin" -d "$db" requests vm1 | head -1 | grep -q "	uid	followups$" || fail "requests shows no uid column"
"$admin" -d "$db" states vm1 | head -1 | grep -q "	status	principal$" || fail "states shows no status column"
"$admin" -d "$db" grant app vm1 frobnicate 2>/dev/null && fail "unknown operation accepted"
"$admin" -d "$db" grant nobody vm1 save 2>/dev/null && fail "grant to an unknown principal"
"$admin" -d "$db" revoke app vm1 restore || fail "revoke"
"$admin" -d "$db" rights | grep -q "^app	vm1	restore	" && fail "revoked right still listed"
"$admin" -d "$db" principal-remove saver || fail "principal-remove"
"$admin" -d "$db" rights | grep -q "^saver" && fail "rights of a removed principal remain"
"$admin" -d "$db" principal-remove saver 2>/dev/null && fail "removing twice succeeded"
printf '' | "$admin" -d "$db" principal-add empty --cost test 2>/dev/null && fail "empty secret accepted"
for t in states requests events; do "$admin" -d "$db" $t vm1 >/dev/null || fail "$t"; done
echo "test-admin: ok"
