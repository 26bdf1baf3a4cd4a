# SPDX-License-Identifier: GPL-2.0-or-later
# Documentation: the design and the admin guide (installed with the protocol), man pages for
# every program, both configuration files (section 5, generated from the annotated examples)
# and the library, and bash completion.
dist_doc_DATA += doc/design.md doc/admin-guide.md doc/protocol.md LICENSING.md

dist_man3_MANS = doc/man/libvmstate.3
nodist_man5_MANS = doc/man/vmstate-bridged.conf.5 doc/man/vmstate-helper.conf.5
nodist_man8_MANS = doc/man/vmstate-bridged.8 doc/man/vmstate-admin.8
EXTRA_DIST += doc/man/conf2man.awk doc/man/vmstate-bridged.8.in doc/man/vmstate-admin.8.in \
	doc/man/vmstate-bridged.conf.5.head doc/man/vmstate-bridged.conf.5.tail \
	doc/man/vmstate-helper.conf.5.head doc/man/vmstate-helper.conf.5.tail
CLEANFILES += $(nodist_man5_MANS) $(nodist_man8_MANS)

doc/man/vmstate-bridged.8: $(top_srcdir)/doc/man/vmstate-bridged.8.in Makefile
	$(AM_V_GEN)$(MKDIR_P) doc/man && $(vms_subst) $(top_srcdir)/doc/man/vmstate-bridged.8.in >$@.tmp && mv $@.tmp $@
doc/man/vmstate-admin.8: $(top_srcdir)/doc/man/vmstate-admin.8.in Makefile
	$(AM_V_GEN)$(MKDIR_P) doc/man && $(vms_subst) $(top_srcdir)/doc/man/vmstate-admin.8.in >$@.tmp && mv $@.tmp $@
# KEYS come from the example file the man page documents, so the two cannot drift apart.
doc/man/vmstate-bridged.conf.5: $(top_srcdir)/doc/man/conf2man.awk \
		$(top_srcdir)/doc/man/vmstate-bridged.conf.5.head $(top_srcdir)/doc/man/vmstate-bridged.conf.5.tail \
		$(top_srcdir)/host-bridge/vmstate-bridged.conf.example Makefile
	$(AM_V_GEN)$(MKDIR_P) doc/man && { cat $(top_srcdir)/doc/man/vmstate-bridged.conf.5.head; \
	  $(AWK) -f $(top_srcdir)/doc/man/conf2man.awk $(top_srcdir)/host-bridge/vmstate-bridged.conf.example; \
	  cat $(top_srcdir)/doc/man/vmstate-bridged.conf.5.tail; } | $(vms_subst) >$@.tmp && mv $@.tmp $@
doc/man/vmstate-helper.conf.5: $(top_srcdir)/doc/man/conf2man.awk \
		$(top_srcdir)/doc/man/vmstate-helper.conf.5.head $(top_srcdir)/doc/man/vmstate-helper.conf.5.tail \
		$(top_srcdir)/guest-helper/helper.conf.example Makefile
	$(AM_V_GEN)$(MKDIR_P) doc/man && { cat $(top_srcdir)/doc/man/vmstate-helper.conf.5.head; \
	  $(AWK) -f $(top_srcdir)/doc/man/conf2man.awk $(top_srcdir)/guest-helper/helper.conf.example; \
	  cat $(top_srcdir)/doc/man/vmstate-helper.conf.5.tail; } | $(vms_subst) >$@.tmp && mv $@.tmp $@

bashcompletiondir = $(bashcompletionsdir)
dist_bashcompletion_DATA = doc/completion/vmstatectl doc/completion/vmstate-admin
