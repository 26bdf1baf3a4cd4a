#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# The installed D-Bus interface file holds one interface, and its documentation comments
# are the kind gdbus-codegen renders: --generate-docbook gives every method, signal and
# property of org.vmstate.Helper1 a description.
set -eu
builddir=$(cd "${top_builddir:-.}" && pwd)
xml="$builddir/guest-helper/interfaces/org.vmstate.Helper1.xml"
command -v gdbus-codegen >/dev/null || {
    echo "gdbus-codegen missing: apt-get install libglib2.0-dev-bin (./quickstart installs it)"
    exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
[ "$(grep -c '<interface ' "$xml")" = 1 ] || { echo "FAIL: $xml holds more than one interface"; exit 1; }
(cd "$tmp" && gdbus-codegen --generate-docbook doc "$xml")
doc="$tmp/doc-org.vmstate.Helper1.xml"
[ -s "$doc" ] || { echo "FAIL: no docbook generated"; exit 1; }
fail=0
for member in $(sed -n 's/.*<\(method\|signal\|property\) name="\([A-Za-z]*\)".*/\2/p' "$xml"); do
    # each member has a refsect2 whose text is more than its signature
    if ! grep -q "id=\"gdbus-\(method\|signal\|property\)-org-vmstate-Helper1\.$member\"" "$doc"; then
        echo "FAIL: $member not rendered"; fail=1; continue
    fi
    body=$(sed -n "/id=\"gdbus-[a-z]*-org-vmstate-Helper1\.$member\"/,/<\/refsect2>/p" "$doc" |
        grep -v '^ *<' | tr -s ' \n' ' ')
    [ "${#body}" -gt 20 ] || { echo "FAIL: $member has no description"; fail=1; }
done
grep -q "ask the host to save, list and restore" "$doc" || { echo "FAIL: interface description"; fail=1; }
[ $fail = 0 ] && echo "ok: every member of org.vmstate.Helper1 documented in the docbook"
exit $fail
