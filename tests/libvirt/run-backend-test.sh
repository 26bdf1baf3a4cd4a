#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# run-backend-test.sh — the libvirt backend's component test (tests/test-bridge-libvirt)
# against a private libvirtd and a real TCG QEMU: a blank qcow2 disk (no OS: SeaBIOS
# waits for a boot device, which is enough for snapshots, reverts, events and the
# balloon), set up with `vmstate-admin libvirt-setup --apply`. Exit 77 without libvirt.
set -eu
: "${top_srcdir:?}" "${top_builddir:?}"
top_srcdir=$(cd "$top_srcdir" && pwd)
top_builddir=$(cd "$top_builddir" && pwd)
. "$top_srcdir/tests/libvirt/lib.sh"
work=$top_builddir/tests/libvirt/backend
mkdir -p "$work"
lv_start "$work/libvirtd"
rm -rf "$work/ports" && mkdir -p "$work/ports"
qemu-img create -q -f qcow2 "$work/disk.qcow2" 64M
cat >"$work/domain.xml" <<XML
<domain type='qemu'>
  <name>vmstate-lvt</name>
  <memory unit='MiB'>96</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>$(command -v qemu-system-x86_64)</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$work/disk.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <memballoon model='virtio'/>
  </devices>
</domain>
XML
virsh -q -c "$LV_URI" define "$work/domain.xml" >/dev/null
"$top_builddir/host-bridge/vmstate-admin" libvirt-setup vmstate-lvt --uri "$LV_URI" \
    --dir "$work/ports" --apply
virsh -q -c "$LV_URI" start vmstate-lvt >/dev/null
VMSTATE_LIBVIRT_URI=$LV_URI VMSTATE_LIBVIRT_DOMAIN=vmstate-lvt \
    "$top_builddir/tests/test-bridge-libvirt" -j1 "$@" # one domain: one test at a time
