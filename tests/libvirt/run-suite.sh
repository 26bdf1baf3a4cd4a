#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# run-suite.sh — run a system suite on the libvirt backend:
#   top_srcdir=.. top_builddir=.. tests/libvirt/run-suite.sh COMMAND...
# starts a private libvirtd (libvirtd-private.sh, state in
# $top_builddir/tests/libvirt/suite), then COMMAND with VMSTATE_TEST_BACKEND=libvirt and
# LV_URI/LV_DIR in the environment (the harness makes each VM a libvirt domain there and the
# bridge a libvirt client of it), and stops the daemon and its QEMUs at the end.
# Exit 77 without libvirtd/tini (COMMAND's status otherwise).
set -eu
: "${top_srcdir:?}" "${top_builddir:?}"
top_srcdir=$(cd "$top_srcdir" && pwd)
top_builddir=$(cd "$top_builddir" && pwd)
. "$top_srcdir/tests/libvirt/lib.sh"
lv_start "$top_builddir/tests/libvirt/suite"
LV_DIR=$top_builddir/tests/libvirt/suite
VMSTATE_TEST_BACKEND=libvirt
export LV_DIR VMSTATE_TEST_BACKEND
rc=0
"$@" || rc=$?
exit $rc
