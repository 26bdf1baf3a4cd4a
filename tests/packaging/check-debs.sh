#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Acceptance test of the packages: a fresh Debian 12 root (debootstrap, minbase; kept as a
# tarball between runs), `apt install ./vmstate-*.deb ./libvmstate1*.deb` in it, then
# deb-guide-test.py follows doc/admin-guide.md: configure the bridge, a principal and its
# rights, a QEMU guest with the two ports and the QMP socket in the root's /run/vmstate,
# the installed bridge started as user vmstate, and the example app in the guest.
# Needs root, debootstrap, QEMU and the Debian mirror. usage: check-debs.sh DEBDIR
set -eu
debdir=$(cd "$1" && pwd)
srcdir=$(cd "${top_srcdir:-.}" && pwd)
builddir=$(cd "${top_builddir:-.}" && pwd)
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
base=${VMSTATE_DEB12_BASE:-/var/tmp/vmstate-deb12-minbase.tar.gz}
root="$builddir/debs/root"

[ "$(id -u)" = 0 ] || { echo "SKIP: check-debs needs root (chroot, debootstrap)"; exit 77; }
command -v debootstrap >/dev/null || { echo "check-debs: apt-get install debootstrap"; exit 1; }

cleanup() {
    for m in proc dev/pts; do umount "$root/$m" 2>/dev/null || true; done
}
trap cleanup EXIT
cleanup
rm -rf "$root"
mkdir -p "$root"
if [ ! -s "$base" ]; then
    echo "check-debs: debootstrap bookworm (minbase) from $mirror, once (kept in $base)"
    debootstrap --variant=minbase bookworm "$root" "$mirror" >"$builddir/debs/debootstrap.log" 2>&1 || {
        tail -20 "$builddir/debs/debootstrap.log"; exit 1; }
    tar -C "$root" -czf "$base.tmp" . && mv "$base.tmp" "$base"
else
    tar -C "$root" -xzf "$base"
fi
mount -t proc proc "$root/proc"
mount -t devpts devpts "$root/dev/pts" 2>/dev/null || true
cp /etc/resolv.conf "$root/etc/resolv.conf"
# no daemon starts inside the chroot during apt (the test starts the bridge itself); QEMU, a
# Recommends of vmstate-host, is left out: the guest runs on this machine
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod +x "$root/usr/sbin/policy-rc.d"
mkdir -p "$root/tmp/debs" && cp "$debdir"/*.deb "$root/tmp/debs/"
echo "check-debs: apt install the packages in a fresh Debian 12 root"
chroot "$root" sh -c 'apt-get update -q >/dev/null &&
    cd /tmp/debs && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        ./vmstate-host_*.deb ./vmstate-guest_*.deb ./libvmstate1_*.deb ./libvmstate-dev_*.deb' \
    >"$builddir/debs/apt.log" 2>&1 || { tail -30 "$builddir/debs/apt.log"; exit 1; }
grep -E "^(Setting up|Unpacking) (vmstate|libvmstate)" "$builddir/debs/apt.log" | sed 's/^/  /'
python3 "$srcdir/tests/packaging/deb-guide-test.py" --root "$root" \
    --image "$builddir/tests/guest/image" --srcdir "$srcdir"
