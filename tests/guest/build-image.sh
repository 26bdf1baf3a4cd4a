#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Build the vmstate test guest: an uncompressed Debian cloud kernel (vmlinux) and an
# initramfs (busybox, dbus-daemon, virtio modules, the test agent, added files).
#
# Usage: build-image.sh OUTDIR [--add HOSTPATH[:GUESTPATH]]... [--add-dir HOSTDIR:GUESTDIR]...
#
#   --add      copy one file (GUESTPATH defaults to HOSTPATH); ELF files bring their libraries
#   --add-dir  copy a directory tree; every ELF file in it brings its libraries
#   Executables added under /etc/vmstate/init.d/ are run at boot, before the test agent.
#
# Environment: VMSTATE_CACHE (default ~/.cache/vmstate) caches kernel packages;
#   VMSTATE_KERNEL_DEB=/path/to/linux-image-*.deb uses that kernel package instead of apt.
#
# Debian packages needed: bash coreutils findutils grep sed gzip apt dpkg kmod
#   libc-bin util-linux busybox-static dbus lz4 xz-utils zstd bzip2 (only the kernel's
#   compressor is actually used; bookworm's cloud kernel uses lz4).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${VMSTATE_CACHE:-$HOME/.cache/vmstate}
kflavour=linux-image-cloud-amd64
modules_wanted="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_console virtio_blk virtio_balloon virtio_mem"

die() { echo "build-image: error: $*" >&2; exit 1; }
log() { echo "build-image: $*" >&2; }
need() { # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found: apt-get install $2"
}
usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 1 ] || usage
case $1 in -h|--help|-*) usage ;; esac
outdir=$1; shift
adds=()   # "hostpath|guestpath" (files), "hostdir/|guestdir/" (trees)
while [ $# -gt 0 ]; do
    case $1 in
        --add) [ $# -ge 2 ] || usage
            h=${2%%:*}; g=${2#*:}; [ "$g" != "$2" ] || g=$h
            [ -f "$h" ] || die "--add $2: no such file: $h"
            case $g in /*) ;; *) die "--add $2: guest path must be absolute" ;; esac
            adds+=("$(realpath "$h")|$g"); shift 2 ;;
        --add-dir) [ $# -ge 2 ] || usage
            h=${2%%:*}; g=${2#*:}
            [ "$g" != "$2" ] || die "--add-dir needs HOSTDIR:GUESTDIR"
            [ -d "$h" ] || die "--add-dir $2: no such directory: $h"
            case $g in /*) ;; *) die "--add-dir $2: guest path must be absolute" ;; esac
            adds+=("$(realpath "$h")/|${g%/}/"); shift 2 ;;
        *) usage ;;
    esac
done

need sha256sum coreutils; need dpkg-deb dpkg; need depmod kmod; need ldd libc-bin; need gzip gzip
busybox=/bin/busybox
if ! [ -x "$busybox" ] || ! "$busybox" --list-full >/dev/null 2>&1 || ldd "$busybox" >/dev/null 2>&1; then
    die "$busybox is missing or not static: apt-get install busybox-static"
fi
dbus_daemon=$(command -v dbus-daemon || true)
[ -n "$dbus_daemon" ] || die "dbus-daemon not found: apt-get install dbus-daemon"
dbus_conf=/usr/share/dbus-1/system.conf
[ -f "$dbus_conf" ] || die "$dbus_conf not found: apt-get install dbus-system-bus-common"

# ---- kernel package ---------------------------------------------------------------------
need flock util-linux
mkdir -p "$cache/debs" "$cache/kernel" "$outdir"
# One builder at a time per cache (downloads, kernel unpacking) and per output directory.
exec 8>"$cache/.lock" 9>"$outdir/.lock"
flock 8
flock 9
kernel_deb() {
    if [ -n "${VMSTATE_KERNEL_DEB:-}" ]; then
        [ -f "$VMSTATE_KERNEL_DEB" ] || die "VMSTATE_KERNEL_DEB=$VMSTATE_KERNEL_DEB: no such file"
        realpath "$VMSTATE_KERNEL_DEB"; return
    fi
    need apt-cache apt
    local pkg ver file
    local dep
    # The metapackage's "Depends: linux-image-<abi>-cloud-amd64 (= <version>)" names both
    # (what `apt-cache depends` shows, and the version with it: one apt-cache call).
    dep=$(apt-cache show --no-all-versions "$kflavour" 2>/dev/null \
        | sed -n 's/^Depends: \(linux-image-[0-9][^ ,]*\)\( (= \([^)]*\))\)\{0,1\}.*/\1 \3/p' | head -n1)
    pkg=${dep%% *} ver=${dep#* }
    if [ -z "$pkg" ]; then
        # Offline, or no package lists: fall back to the newest cached kernel.
        file=$(find "$cache/debs" -name 'linux-image-*-cloud-amd64_*.deb' | sort -V | tail -n1)
        [ -n "$file" ] || die "apt knows no $kflavour and none is cached: run apt-get update"
        log "apt knows no $kflavour; using cached $(basename "$file")"
        echo "$file"; return
    fi
    [ -n "$ver" ] || ver=$(apt-cache show --no-all-versions "$pkg" | sed -n 's/^Version: //p' | head -n1)
    file="$cache/debs/${pkg}_${ver//:/%3a}_amd64.deb"
    if [ ! -s "$file" ]; then
        log "downloading $pkg $ver"
        (cd "$cache/debs" && apt-get download -q "$pkg=$ver" >&2) || die "apt-get download $pkg failed"
        [ -s "$file" ] || die "apt-get download did not produce $file"
    fi
    echo "$file"
}
deb=$(kernel_deb)

# ---- file list: "guestpath|hostpath" lines ----------------------------------------------
is_elf() { [ "$(head -c4 "$1" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; }
libs_of() { # print the host paths of the libraries (and loader) an ELF file needs
    local out
    out=$(ldd "$1" 2>&1) || { case $out in *"not a dynamic"*|*"statically linked"*) return 0 ;; esac
        die "ldd $1 failed: $out"; }
    case $out in *"not found"*) die "$1 needs libraries that are missing on this host:
$(grep 'not found' <<<"$out")" ;; esac
    sed -n -e 's/^.*=> \(\/[^ ]*\) (0x.*$/\1/p' -e 's/^[[:space:]]*\(\/[^ ]*\) (0x.*$/\1/p' <<<"$out"
}

filelist=$(mktemp); trap 'rm -f "$filelist"' EXIT
add_file() { # add_file GUESTPATH HOSTPATH
    case $1 in /proc/*|/sys/*|/dev/*) die "$1: the guest mounts over /proc, /sys and /dev" ;; esac
    if head -n 5 "$2" | grep -q 'temporary wrapper script for'; then
        die "$2 is a libtool wrapper script: link it with -no-install, or add its .libs/ binary"
    fi
    echo "$1|$2" >>"$filelist"
    if is_elf "$2"; then
        local libs l
        libs=$(libs_of "$2") || exit 1
        for l in $libs; do echo "$l|$(realpath "$l")" >>"$filelist"; done
    fi
}
add_file /usr/bin/dbus-daemon "$dbus_daemon"
add_file /usr/share/dbus-1/system.conf "$dbus_conf"
add_file /init "$here/guest-init.sh"
add_file /sbin/vmstate-agent "$here/guest-agent.sh"
for a in "${adds[@]}"; do
    h=${a%%|*}; g=${a#*|}
    case $h in
        */) while IFS= read -r -d '' f; do add_file "$g${f#"$h"}" "$f"; done \
                < <(find "$h" -type f -print0 | sort -z) ;;
        *) add_file "$g" "$h" ;;
    esac
done
# Later entries win (an added file may replace a default one); keep one line per guest path.
sort -t'|' -k1,1 -s -u <(tac "$filelist") -o "$filelist"

# ---- cache check ------------------------------------------------------------------------
hash=$({
    sha256sum "$0" "$here/guest-init.sh" "$here/guest-agent.sh" "$busybox"
    echo "$(basename "$deb") $(stat -c %s "$deb")"
    while IFS='|' read -r g h; do echo "$g $(stat -c %a "$h") $(sha256sum <"$h")"; done <"$filelist"
} | sha256sum | cut -c1-16)
if [ -f "$outdir/image.json" ] && grep -q "\"hash\": \"$hash\"" "$outdir/image.json" \
        && [ -s "$outdir/vmlinux" ] && [ -s "$outdir/initramfs.cpio.gz" ]; then
    log "up to date: $(realpath "$outdir")"
    realpath "$outdir"
    exit 0
fi

# ---- kernel: vmlinux and modules --------------------------------------------------------
extract_vmlinux() { # extract_vmlinux BZIMAGE OUT: find the compressed payload, decompress it
    local img=$1 out=$2 magic tool off missing=
    # magic bytes (as grep -P escapes) and the decompressor for them, as the kernel's
    # scripts/extract-vmlinux does
    for spec in '\x1f\x8b\x08|gzip -dc|gzip' '\xfd\x37\x7a\x58\x5a\x00|xz -dc|xz-utils' \
            '\x42\x5a\x68|bzip2 -dc|bzip2' '\x5d\x00\x00\x00|xz -dc --format=lzma|xz-utils' \
            '\x02\x21\x4c\x18|lz4 -dc|lz4' '\x28\xb5\x2f\xfd|zstd -dcq|zstd' \
            '\x89\x4c\x5a\x4f|lzop -dc|lzop'; do
        magic=${spec%%|*}; tool=${spec#*|}; tool=${tool%|*}
        while read -r off; do
            if ! command -v "${tool%% *}" >/dev/null; then missing="$missing ${spec##*|}"; break; fi
            # shellcheck disable=SC2086 # $tool is a command line
            tail -c +"$((off + 1))" "$img" | $tool >"$out" 2>/dev/null || true
            if is_elf "$out"; then log "vmlinux: ${tool%% *} payload at offset $off"; return 0; fi
        done < <(LC_ALL=C grep -obUaP "$magic" "$img" | cut -d: -f1)
    done
    [ -z "$missing" ] || die "cannot decompress $img: apt-get install$missing"
    die "no compressed kernel payload found in $img"
}
kdir="$cache/kernel/$(basename "$deb" .deb)"
# the unpacked kernel is reused until the deb or the wanted module list changes
if [ ! -s "$kdir/vmlinux" ] || [ ! -s "$kdir/modules.list" ] ||
    [ "$(cat "$kdir/modules.wanted" 2>/dev/null)" != "$modules_wanted" ]; then
    log "unpacking $(basename "$deb")"
    rm -rf "$kdir"; mkdir -p "$kdir"
    kx="$kdir/deb"
    dpkg-deb -x "$deb" "$kx"
    kver=$(basename "$(find "$kx/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)")
    [ -n "$kver" ] || die "$deb has no lib/modules/<version>"
    depmod -b "$kx" "$kver"
    extract_vmlinux "$kx/boot/vmlinuz-$kver" "$kdir/vmlinux.tmp"
    # "name path" in load order, dependencies first; built-in ones are skipped.
    : >"$kdir/modules.list"
    mod_add() {
        local m=$1 path dep
        grep -q "^$m " "$kdir/modules.list" && return 0
        if grep -Eq "/${m//_/[_-]}\.ko(\.[a-z]+)?$" "$kx/lib/modules/$kver/modules.builtin"; then
            log "module $m is built in"; return 0
        fi
        path=$(grep -E "(^|/)${m//_/[_-]}\.ko(\.[a-z]+)?:" "$kx/lib/modules/$kver/modules.dep" | cut -d: -f1)
        [ -n "$path" ] || die "kernel $kver has no module $m"
        for dep in $(grep "^$path:" "$kx/lib/modules/$kver/modules.dep" | cut -d: -f2 | tr ' ' '\n' | tac); do
            dep=$(basename "$dep"); mod_add "${dep%%.ko*}"
        done
        mkdir -p "$kdir/root/lib/modules/$kver/$(dirname "$path")"
        case $path in
            *.ko) cp "$kx/lib/modules/$kver/$path" "$kdir/root/lib/modules/$kver/$path" ;;
            *.ko.xz) xz -dc "$kx/lib/modules/$kver/$path" >"$kdir/root/lib/modules/$kver/${path%.xz}" ;;
            *.ko.zst) zstd -dcq "$kx/lib/modules/$kver/$path" >"$kdir/root/lib/modules/$kver/${path%.zst}" ;;
            *) die "unsupported module file $path" ;;
        esac
        echo "$m /lib/modules/$kver/${path%.ko*}.ko" >>"$kdir/modules.list"
    }
    for m in $modules_wanted; do mod_add "$m"; done
    echo "$kver" >"$kdir/release"
    echo "$modules_wanted" >"$kdir/modules.wanted"
    rm -rf "$kx"
    mv "$kdir/vmlinux.tmp" "$kdir/vmlinux"
fi
kver=$(cat "$kdir/release")
flock -u 8

# ---- initramfs --------------------------------------------------------------------------
log "building initramfs for kernel $kver"
mkdir -p "$outdir"
root="$outdir/.root"
rm -rf "$root"; mkdir -p "$root"
(cd "$root" && mkdir -p bin sbin usr/bin usr/sbin lib lib64 etc proc sys dev tmp run var/log root \
    etc/dbus-1/system.d usr/share/dbus-1/system.d etc/vmstate/init.d)
ln -s ../run "$root/var/run"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list-full); do
    case $applet in bin/busybox|linuxrc) continue ;; esac
    mkdir -p "$root/$(dirname "$applet")"
    ln -sf /bin/busybox "$root/$applet"
done
cp -a "$kdir/root/lib/modules" "$root/lib/"
cp "$kdir/modules.list" "$root/etc/vmstate/modules"
while IFS='|' read -r g h; do
    mkdir -p "$root$(dirname "$g")"
    rm -f "$root$g"
    cp -L --preserve=mode "$h" "$root$g"
done <"$filelist"
chmod 0755 "$root/init" "$root/sbin/vmstate-agent"
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
messagebus:x:100:101::/nonexistent:/bin/false
vmtest:x:1000:1000:test user:/tmp:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
messagebus:x:101:
vmtest:x:1000:
nogroup:x:65534:
EOF
echo "passwd: files
group: files" >"$root/etc/nsswitch.conf"
echo vmstate-guest >"$root/etc/hostname"
cat >"$root/etc/inittab" <<'EOF'
::respawn:/sbin/vmstate-agent
::ctrlaltdel:/bin/poweroff -f
EOF

# /dev/console must exist before devtmpfs is mounted: write its cpio entry by hand (newc
# headers are ASCII), so that no mknod (root) is needed.
cpio_node() { # cpio_node NAME MODE(octal) MAJOR MINOR INODE NLINK (no data)
    local name=$1
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\0' \
        "$5" "$((8#$2))" 0 0 "$6" 0 0 0 0 "$3" "$4" $((${#name} + 1)) 0 "$name"
    # header (110 bytes) + name + NUL, padded to a multiple of 4
    head -c $(((4 - (110 + ${#name} + 1) % 4) % 4)) /dev/zero
}
img="$outdir/initramfs.cpio.gz"
{
    cpio_node dev 40755 0 0 1 2; cpio_node dev/console 20600 5 1 2 1; cpio_node 'TRAILER!!!' 0 0 0 0 1
    (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc -R 0:0 2>/dev/null)
} | gzip -6 >"$img.tmp"
mv "$img.tmp" "$img"
cp "$kdir/vmlinux" "$outdir/vmlinux.tmp" && mv "$outdir/vmlinux.tmp" "$outdir/vmlinux"
rm -rf "$root"
# no_timer_check: with several TCG guests booting at once on a loaded host the kernel's
# IO-APIC timer check can fail ("IO-APIC + timer doesn't work": a panic, then QEMU exits on
# -no-reboot); the check proves nothing about a virtual timer (seen in bench-scale and
# bench-groups; the likely cause of check-groups' "no qemu.pid" in CI)
cat >"$outdir/image.json" <<EOF
{
  "hash": "$hash",
  "kernel": "vmlinux",
  "initrd": "initramfs.cpio.gz",
  "kernel_release": "$kver",
  "kernel_package": "$(basename "$deb")",
  "append": "console=ttyS0 quiet panic=-1 no_timer_check",
  "built": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
EOF
log "image: $(realpath "$outdir") (initramfs $(($(stat -c %s "$img") / 1024)) KiB)"
realpath "$outdir"
