# SPDX-License-Identifier: GPL-2.0-or-later
# lib.sh — sourced by the libvirt test runners: a private libvirtd and a test domain.
#   lv_start DIR        private libvirtd (libvirtd-private.sh); sets LV_URI; stops at exit
#   lv_domain NAME XMLBODY  define NAME from a <domain> file, set up its ports, start it
# Needs top_srcdir and top_builddir.
LV_SCRIPT=$top_srcdir/tests/libvirt/libvirtd-private.sh
LV_DIR=
lv_stop() {
    [ -n "$LV_DIR" ] && "$LV_SCRIPT" stop "$LV_DIR" || true
}
lv_start() {
    LV_DIR=$1
    lv_stop  # one left from an interrupted run (LV_KEEP=1) holds the pid file
    rm -rf "$LV_DIR/run" "$LV_DIR/lib" "$LV_DIR/log" "$LV_DIR/etc"
    # the capability cache is kept in the build tree: 8 s of QEMU probing on the first start
    LV_URI=$("$LV_SCRIPT" start "$LV_DIR" "$top_builddir/tests/libvirt/cache") || return $?
    [ "${LV_KEEP:-0}" = 1 ] || trap lv_stop EXIT  # LV_KEEP=1: left running to debug
    export LV_URI
}
