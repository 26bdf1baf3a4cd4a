/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libvirt-setup.c — `vmstate-admin libvirt-setup DOMAIN`: the domain XML a libvirt VM
 * needs for the bridge (the two guest ports as unix channels that QEMU dials, with
 * reconnect, so they survive a revert replacing QEMU); printed, or defined with --apply.
 * Nothing else in the XML changes. Takes effect at the domain's next start.
 */
#include "config.h"
#include "admin.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef HAVE_LIBVIRT
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "libvirt-xml.h"
#include "vms-proto.h"

static void lv_fail(const char *what)
{
    virErrorPtr e = virGetLastError();
    fprintf(stderr, "vmstate-admin: libvirt-setup: %s: %s\n", what,
            e && e->message ? e->message : "failed");
}

int admin_libvirt_setup(int argc, char **argv)
{
    static const struct option opts[] = {{"uri", required_argument, NULL, 'u'},
                                         {"dir", required_argument, NULL, 'd'},
                                         {"apply", no_argument, NULL, 'a'},
                                         {NULL, 0, NULL, 0}};
    const char *uri = NULL, *dir = NULL, *domain;
    char port_a[BRIDGE_PATH_MAX], port_b[BRIDGE_PATH_MAX];
    struct bridge_libvirt_xml now;
    virConnectPtr conn = NULL;
    virDomainPtr dom = NULL, defined = NULL;
    char *xml = NULL, *out = NULL;
    int opt, apply = 0, rc = 1;

    optind = 0; /* 0: glibc re-initialises getopt (main parsed with "+") */
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'u':
            uri = optarg;
            break;
        case 'd':
            dir = optarg;
            break;
        case 'a':
            apply = 1;
            break;
        default:
            return 2;
        }
    }
    if (optind != argc - 1 || !vms_valid_id(argv[optind])) {
        fprintf(stderr, "usage: vmstate-admin libvirt-setup DOMAIN [--uri URI] [--dir DIR] "
                        "[--apply]\n");
        return 2;
    }
    domain = argv[optind];
    conn = virConnectOpen(uri); /* NULL: LIBVIRT_DEFAULT_URI or libvirt's default */
    if (!conn) {
        lv_fail("connect");
        goto out;
    }
    dom = virDomainLookupByName(conn, domain);
    if (!dom) {
        lv_fail(domain);
        goto out;
    }
    /* the persistent definition: what the next start runs */
    xml = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
    if (!xml) {
        lv_fail("domain XML");
        goto out;
    }
    bridge_libvirt_xml_parse(xml, &now);
    if (!now.acpi)
        /* measured under TCG: the guest then keeps time by timer ticks, and after a snapshot
         * its clock ran 10% slow (no HPET or ACPI PM timer to fall back on) */
        fprintf(stderr,
                "vmstate-admin: libvirt-setup: warning: %s has no <features><acpi/>: "
                "libvirt starts QEMU with -no-acpi, and the guest's clock can drift "
                "(add it; not changed here)\n",
                domain);
    if (!dir && now.port_a[0] && now.port_b[0]) { /* keep the paths it has */
        snprintf(port_a, sizeof(port_a), "%s", now.port_a);
        snprintf(port_b, sizeof(port_b), "%s", now.port_b);
    } else {
        if (!dir)
            dir = LOCALSTATEDIR "/lib/vmstate/ports";
        if ((size_t)snprintf(port_a, sizeof(port_a), "%s/%s.request.sock", dir, domain) >=
                sizeof(port_a) ||
            (size_t)snprintf(port_b, sizeof(port_b), "%s/%s.event.sock", dir, domain) >=
                sizeof(port_b)) {
            fprintf(stderr, "vmstate-admin: libvirt-setup: --dir too long\n");
            goto out;
        }
    }
    out = bridge_libvirt_xml_with_ports(xml, port_a, port_b);
    if (!out) {
        fprintf(stderr, "vmstate-admin: libvirt-setup: cannot add the channels (no </devices>, "
                        "or a path with XML metacharacters)\n");
        goto out;
    }
    if (!apply) {
        fputs(out, stdout);
        rc = 0;
        goto out;
    }
    defined = virDomainDefineXML(conn, out);
    if (!defined) {
        lv_fail("define");
        goto out;
    }
    fprintf(stderr,
            "vmstate-admin: %s: channels %s and %s (QEMU dials them; the bridge listens)%s\n",
            domain, port_a, port_b,
            virDomainIsActive(dom) == 1 ? "; effective at the domain's next start" : "");
    rc = 0;
out:
    free(xml);
    free(out);
    if (defined)
        virDomainFree(defined);
    if (dom)
        virDomainFree(dom);
    if (conn)
        virConnectClose(conn);
    return rc;
}
#else
int admin_libvirt_setup(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "vmstate-admin: libvirt-setup: built without libvirt (--with-libvirt)\n");
    return 1;
}
#endif
