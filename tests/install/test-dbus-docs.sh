#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Each installed D-Bus interface file holds one interface, and its documentation comments
# are the kind gdbus-codegen renders: --generate-docbook gives every method, signal and
# property of org.vmstate.Helper1 and org.vmstate.Helper1.Broadcast a description.
set -eu
builddir=$(cd "${top_builddir:-.}" && pwd)
command -v gdbus-codegen >/dev/null || {
    echo "gdbus-codegen missing: apt-get install libglib2.0-dev-bin (./quickstart installs it)"
    exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
check_interface() { # NAME DESCRIPTION-TEXT
    iface=$1
    xml="$builddir/guest-helper/interfaces/$iface.xml"
    [ "$(grep -c '<interface ' "$xml")" = 1 ] || { echo "FAIL: $xml holds more than one interface"; fail=1; return; }
    grep -q "<interface name=\"$iface\">" "$xml" || { echo "FAIL: $xml is not $iface"; fail=1; return; }
    (cd "$tmp" && gdbus-codegen --generate-docbook doc "$xml")
    doc="$tmp/doc-$iface.xml"
    [ -s "$doc" ] || { echo "FAIL: no docbook generated for $iface"; fail=1; return; }
    id=$(echo "$iface" | tr . -)
    n=0
    for member in $(sed -n 's/.*<\(method\|signal\|property\) name="\([A-Za-z]*\)".*/\2/p' "$xml"); do
        n=$((n + 1))
        # each member has a refsect2 whose text is more than its signature
        if ! grep -q "id=\"gdbus-\(method\|signal\|property\)-$id\.$member\"" "$doc"; then
            echo "FAIL: $iface.$member not rendered"; fail=1; continue
        fi
        body=$(sed -n "/id=\"gdbus-[a-z]*-$id\.$member\"/,/<\/refsect2>/p" "$doc" |
            grep -v '^ *<' | tr -s ' \n' ' ')
        [ "${#body}" -gt 20 ] || { echo "FAIL: $iface.$member has no description"; fail=1; }
    done
    [ $n -gt 0 ] || { echo "FAIL: $iface has no member"; fail=1; }
    grep -q "$2" "$doc" || { echo "FAIL: $iface's description"; fail=1; }
    echo "checked: $n members of $iface"
}
check_interface org.vmstate.Helper1 "ask the host to save, list and restore"
check_interface org.vmstate.Helper1.Broadcast "what the helper tells every process"
[ $fail = 0 ] && echo "ok: every member of both interfaces documented in the docbook"
exit $fail
