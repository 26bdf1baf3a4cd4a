/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests: libvirt-xml.c — the port channels and disk aliases read from a domain XML
 * (as libvirt writes it), and the XML `vmstate-admin libvirt-setup` makes from it.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "libvirt-xml.h"

static const char domain_xml[] =
    "<domain type='qemu' id='3'>\n"
    "  <name>g</name>\n"
    "  <devices>\n"
    "    <disk type='file' device='disk'>\n"
    "      <driver name='qemu' type='qcow2'/>\n"
    "      <source file='/v/d.qcow2' index='1'/>\n"
    "      <target dev='vda' bus='virtio'/>\n"
    "      <alias name='virtio-disk0'/>\n"
    "    </disk>\n"
    "    <channel type='pty'>\n"
    "      <target type='virtio' name='org.qemu.guest_agent.0'/>\n"
    "    </channel>\n"
    "    <channel type='unix'>\n"
    "      <source mode='bind' path='/run/old-a.sock'/>\n"
    "      <target type='virtio' name='org.vmstate.request.0'/>\n"
    "      <address type='virtio-serial' controller='0' bus='0' port='1'/>\n"
    "    </channel>\n"
    "    <channel type='unix'>\n"
    "      <source mode='bind' path='/run/old-b.sock'/>\n"
    "      <target type='virtio' name='org.vmstate.event.0'/>\n"
    "    </channel>\n"
    "    <channels/>\n"
    "  </devices>\n"
    "</domain>\n";

Test(libvirt_xml, reads_ports_and_disks)
{
    struct bridge_libvirt_xml x;

    bridge_libvirt_xml_parse(domain_xml, &x);
    cr_assert_str_eq(x.port_a, "/run/old-a.sock");
    cr_assert_str_eq(x.port_b, "/run/old-b.sock");
    cr_assert_eq(x.port_a_connect, 0, "mode='bind': QEMU listens");
    cr_assert_eq(x.port_a_reconnect, 0);
    cr_assert_eq(x.n_disks, 1);
    cr_assert_str_eq(bridge_libvirt_xml_disk_target(&x, "virtio-disk0"), "vda");
    cr_assert_null(bridge_libvirt_xml_disk_target(&x, "virtio-disk1"));
    cr_assert_null(bridge_libvirt_xml_disk_target(&x, NULL));
    cr_assert_eq(x.acpi, 0, "no <features><acpi/>");
    bridge_libvirt_xml_parse("<domain><features><acpi/><apic/></features><devices/></domain>", &x);
    cr_assert_eq(x.acpi, 1);
    bridge_libvirt_xml_parse("<domain><features><apic/></features><acpi/></domain>", &x);
    cr_assert_eq(x.acpi, 0, "an <acpi> outside <features> is not the feature");
}

Test(libvirt_xml, with_ports_replaces_our_channels_only)
{
    char *out = bridge_libvirt_xml_with_ports(domain_xml, "/p/a.sock", "/p/b.sock");
    struct bridge_libvirt_xml x;
    const char *agent, *vmstate;

    cr_assert_not_null(out);
    bridge_libvirt_xml_parse(out, &x);
    cr_assert_str_eq(x.port_a, "/p/a.sock");
    cr_assert_str_eq(x.port_b, "/p/b.sock");
    cr_assert(x.port_a_connect && x.port_b_connect && x.port_a_reconnect && x.port_b_reconnect);
    cr_assert_null(strstr(out, "old-a"), "the old channel is gone");
    cr_assert_null(strstr(out, "old-b"));
    /* everything else byte for byte: the disk, the agent channel, and in place */
    cr_assert_not_null(strstr(out, "      <alias name='virtio-disk0'/>\n    </disk>\n"));
    agent = strstr(out, "org.qemu.guest_agent.0");
    vmstate = strstr(out, "org.vmstate.request.0");
    cr_assert(agent && vmstate && agent < vmstate);
    cr_assert_not_null(strstr(out, "    </channel>\n    <channels/>\n  </devices>\n</domain>\n"),
                       "%s", out);
    /* once set up, it is left as it is */
    {
        char *again = bridge_libvirt_xml_with_ports(out, "/p/a.sock", "/p/b.sock");
        cr_assert_str_eq(again, out);
        free(again);
    }
    free(out);
}

Test(libvirt_xml, with_ports_adds_before_devices_end)
{
    static const char bare[] = "<domain>\n  <devices>\n    <disk/>\n  </devices>\n</domain>\n";
    char *out = bridge_libvirt_xml_with_ports(bare, "/p/a", "/p/b");
    struct bridge_libvirt_xml x;

    cr_assert_not_null(out);
    cr_assert(!strncmp(out, "<domain>\n  <devices>\n    <disk/>\n    <channel type='unix'>\n",
                       strlen("<domain>\n  <devices>\n    <disk/>\n    <channel type='unix'>\n")),
              "%s", out);
    cr_assert_not_null(strstr(out, "    </channel>\n  </devices>\n</domain>\n"), "%s", out);
    bridge_libvirt_xml_parse(out, &x);
    cr_assert_str_eq(x.port_b, "/p/b");
    free(out);
}

Test(libvirt_xml, refuses_what_it_cannot_write_or_read)
{
    struct bridge_libvirt_xml x;

    cr_assert_null(bridge_libvirt_xml_with_ports(domain_xml, "/p/a'b", "/p/b"));
    cr_assert_null(bridge_libvirt_xml_with_ports(domain_xml, "relative", "/p/b"));
    cr_assert_null(bridge_libvirt_xml_with_ports("<domain/>", "/p/a", "/p/b"));
    /* entities are not decoded: such a path is not used */
    bridge_libvirt_xml_parse("<channel type='unix'><source mode='connect' path='/a&amp;b'/>"
                             "<target type='virtio' name='org.vmstate.request.0'/></channel>",
                             &x);
    cr_assert_str_empty(x.port_a);
    /* truncated XML does not crash the reader */
    bridge_libvirt_xml_parse("<channel type='unix'><source path='/a", &x);
    cr_assert_str_empty(x.port_a);
}
