# SPDX-License-Identifier: GPL-2.0-or-later
# tests/system: the whole path on a real VM (issue 5) — guest app -> libvmstate/vmstatectl/
# dbus-send -> D-Bus -> vmstate-helperd -> port A -> vmstate-bridged -> QEMU (QMP) -> port B
# -> helper -> app, across restores.
#
#   make demo                 the narrated demo (./quickstart demo)
#   make demo-libvirt         the same on a libvirt domain (./quickstart demo libvirt)
#   make check-wholepath      the eight whole-path system tests (part of make check-system)
#   python3 tests/system/wholepath.py --image DIR --builddir DIR   boot a VM + bridge by hand

# A guest app that logs every event it sees (the tests' probe inside the VM).
noinst_PROGRAMS += tests/system/vmstate-testapp
tests_system_vmstate_testapp_SOURCES = tests/system/vmstate-testapp.c
tests_system_vmstate_testapp_LDADD = libvmstate/libvmstate.la
tests_system_vmstate_testapp_LDFLAGS = $(AM_LDFLAGS) -no-install
GUEST_IMAGE_ARGS += --add $(abs_top_builddir)/tests/system/vmstate-testapp:/usr/bin/vmstate-testapp
GUEST_IMAGE_DEPS += tests/system/vmstate-testapp
# dbus-send (Debian package dbus-bin) for scripts in the guest: busctl would pull systemd's
# 3 MiB shared library and its dependencies into the initramfs.
GUEST_IMAGE_ARGS += --add /usr/bin/dbus-send

WHOLEPATH_DEPS = guest-image host-bridge/vmstate-bridged $(BRIDGE_MODULES) host-bridge/vmstate-admin
WHOLEPATH_ARGS = --image $(GUEST_IMAGE_DIR) --builddir $(abs_top_builddir)

demo-wholepath: $(WHOLEPATH_DEPS)
	@PYTHONDONTWRITEBYTECODE=1 $(PYTHON3) $(abs_top_srcdir)/tests/system/demo.py $(WHOLEPATH_ARGS)
DEMO_TARGET += demo-wholepath

# WHOLEPATH_FLAGS: e.g. --only 1,2 --keep
check-wholepath: $(WHOLEPATH_DEPS)
	PYTHONDONTWRITEBYTECODE=1 $(PYTHON3) $(abs_top_srcdir)/tests/system/test-wholepath.py \
		$(WHOLEPATH_ARGS) $(WHOLEPATH_FLAGS)
SYSTEM_CHECKS += check-wholepath
# issue 14's acceptance on one VM: StateSaved/StateDeleted, follow-ups inside a restore, the
# reconciled catalogue, rights limited to a guest uid, HostInfo/DeleteState end to end
# (CORE_FLAGS: e.g. --only 1,2 --keep)
check-core: $(WHOLEPATH_DEPS)
	PYTHONDONTWRITEBYTECODE=1 $(PYTHON3) $(abs_top_srcdir)/tests/system/test-core.py \
		$(WHOLEPATH_ARGS) $(CORE_FLAGS)
SYSTEM_CHECKS += check-core
.PHONY: demo-wholepath check-wholepath check-core

EXTRA_DIST += tests/system/wholepath.py tests/system/demo.py tests/system/test-wholepath.py \
	tests/system/test-core.py \
	tests/system/README.md \
	tests/system/guest/helper.conf tests/system/guest/50-vmstate-helper

# The same suite on the libvirt backend (issue 17): each VM a domain on a private libvirtd.
if HAVE_LIBVIRT
check-wholepath-libvirt: $(WHOLEPATH_DEPS)
	top_srcdir='$(top_srcdir)' top_builddir='$(top_builddir)' PYTHONDONTWRITEBYTECODE=1 \
		$(top_srcdir)/tests/libvirt/run-suite.sh $(PYTHON3) \
		$(abs_top_srcdir)/tests/system/test-wholepath.py $(WHOLEPATH_ARGS) $(WHOLEPATH_FLAGS)
SYSTEM_CHECKS += check-wholepath-libvirt
# The demo on a libvirt domain defined from plain XML plus `vmstate-admin libvirt-setup
# --apply` (issue 17's acceptance): `make demo-libvirt` / `./quickstart demo libvirt`;
# check-demo-libvirt runs it in check-system (it exits 1 unless the restored app got the data).
demo-libvirt check-demo-libvirt: $(WHOLEPATH_DEPS)
	@top_srcdir='$(top_srcdir)' top_builddir='$(top_builddir)' PYTHONDONTWRITEBYTECODE=1 \
		$(top_srcdir)/tests/libvirt/run-suite.sh $(PYTHON3) \
		$(abs_top_srcdir)/tests/system/demo.py $(WHOLEPATH_ARGS)
SYSTEM_CHECKS += check-demo-libvirt
endif
.PHONY: check-wholepath-libvirt demo-libvirt check-demo-libvirt
