#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Build the Debian packages (vmstate-guest, vmstate-host, libvmstate1, libvmstate-dev) with
# `dpkg-buildpackage -us -uc` from a clean copy of the sources (the files git knows, as
# they are in the work tree), then run lintian and fail on any error.
# usage: build-debs.sh SRCDIR OUTDIR      (DEB_BUILD_OPTIONS=nocheck skips make check)
set -eu
srcdir=$(cd "$1" && pwd)
outdir=$2
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
version=$(dpkg-parsechangelog -l "$srcdir/debian/changelog" -S Version)
work="$outdir/src"
rm -rf "$work" && mkdir -p "$work/vmstate-$version"
(cd "$srcdir" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$work/vmstate-$version")
rm -f "$outdir"/*.deb "$outdir"/*.changes "$outdir"/*.buildinfo "$outdir"/*.dsc "$outdir"/*.tar.*
(cd "$work/vmstate-$version" && dpkg-buildpackage -us -uc >"$outdir/build.log" 2>&1) || {
    echo "dpkg-buildpackage failed; the end of $outdir/build.log:"; tail -40 "$outdir/build.log"; exit 1; }
mv "$work"/*.deb "$work"/*.changes "$work"/*.buildinfo "$work"/*.dsc "$work"/*.tar.* "$outdir"/
ls "$outdir"/*.deb
lintian --fail-on error --suppress-tags bad-distribution-in-changes-file \
    "$outdir"/vmstate_"$version"_*.changes >"$outdir/lintian.log" 2>&1 || {
    echo "lintian found errors:"; grep '^E:' "$outdir/lintian.log"; exit 1; }
echo "lintian: no errors ($(grep -c '^W:' "$outdir/lintian.log" || true) warnings, in $outdir/lintian.log)"
