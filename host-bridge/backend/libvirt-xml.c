/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libvirt-xml.c — see libvirt-xml.h.
 */
#include "config.h"
#include "libvirt-xml.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vms-proto.h"

/* The next element <@name ...> at or after @p (not <@nameX), or NULL. */
static const char *find_tag(const char *p, const char *end, const char *name)
{
    size_t n = strlen(name);

    while (p && p < end && (p = strstr(p, "<")) && p < end) {
        if (!strncmp(p + 1, name, n) && (p[1 + n] == ' ' || p[1 + n] == '>' || p[1 + n] == '/'))
            return p;
        p++;
    }
    return NULL;
}

/* The end of the element that opens at @open (after its </name>, or its "/>"). */
static const char *element_end(const char *open, const char *name)
{
    const char *gt = strchr(open, '>');
    char close[64];
    const char *c;

    if (!gt)
        return NULL;
    if (gt > open && gt[-1] == '/')
        return gt + 1;
    snprintf(close, sizeof(close), "</%s>", name);
    c = strstr(gt, close);
    return c ? c + strlen(close) : NULL;
}

/* Attribute @attr of the tag opening at @tag, into @out; 0, or -1 if absent or odd. */
static int attr(const char *tag, const char *attr_name, char *out, size_t len)
{
    const char *gt = strchr(tag, '>');
    size_t n = strlen(attr_name);

    for (const char *p = tag; gt && (p = strstr(p, attr_name)) && p < gt; p += n) {
        const char *v, *e;
        if (p[-1] != ' ' || p[n] != '=' || (p[n + 1] != '\'' && p[n + 1] != '"'))
            continue;
        v = p + n + 2;
        e = strchr(v, p[n + 1]);
        if (!e || e > gt || (size_t)(e - v) >= len || memchr(v, '&', (size_t)(e - v)))
            return -1;
        memcpy(out, v, (size_t)(e - v));
        out[e - v] = '\0';
        return 0;
    }
    return -1;
}

/* The target name of a <channel> element spanning [@p, @end), "" if none. */
static void channel_target(const char *p, const char *end, char *name, size_t len)
{
    const char *t = find_tag(p, end, "target");
    name[0] = '\0';
    if (t && attr(t, "name", name, len) < 0)
        name[0] = '\0';
}

static void parse_channel(const char *p, const char *end, struct bridge_libvirt_xml *out)
{
    char name[128], type[32] = "", path[BRIDGE_PATH_MAX], mode[32] = "", on[8] = "";
    const char *src = find_tag(p, end, "source");
    const char *rc = find_tag(p, end, "reconnect");
    char *dst;
    int *connect, *reconnect;

    channel_target(p, end, name, sizeof(name));
    if (!strcmp(name, VMS_PORT_REQUEST_NAME)) {
        dst = out->port_a;
        connect = &out->port_a_connect;
        reconnect = &out->port_a_reconnect;
    } else if (!strcmp(name, VMS_PORT_EVENT_NAME)) {
        dst = out->port_b;
        connect = &out->port_b_connect;
        reconnect = &out->port_b_reconnect;
    } else {
        return;
    }
    if (attr(p, "type", type, sizeof(type)) < 0 || strcmp(type, "unix") || !src ||
        attr(src, "path", path, sizeof(path)) < 0 || path[0] != '/')
        return;
    strcpy(dst, path);
    *connect = attr(src, "mode", mode, sizeof(mode)) == 0 && !strcmp(mode, "connect");
    *reconnect = rc && attr(rc, "enabled", on, sizeof(on)) == 0 && !strcmp(on, "yes");
}

static void parse_disk(const char *p, const char *end, struct bridge_libvirt_xml *out)
{
    const char *t = find_tag(p, end, "target"), *a = find_tag(p, end, "alias");
    unsigned i = out->n_disks;

    if (i >= BRIDGE_LIBVIRT_DISKS_MAX || !t || !a ||
        attr(t, "dev", out->disk_target[i], sizeof(out->disk_target[i])) < 0 ||
        attr(a, "name", out->disk_alias[i], sizeof(out->disk_alias[i])) < 0)
        return;
    out->n_disks++;
}

void bridge_libvirt_xml_parse(const char *xml, struct bridge_libvirt_xml *out)
{
    const char *xend = xml + strlen(xml), *p, *e;

    memset(out, 0, sizeof(*out));
    for (p = xml; (p = find_tag(p, xend, "channel")) && (e = element_end(p, "channel")); p = e)
        parse_channel(p, e, out);
    for (p = xml; (p = find_tag(p, xend, "disk")) && (e = element_end(p, "disk")); p = e)
        parse_disk(p, e, out);
    p = find_tag(xml, xend, "features");
    e = p ? element_end(p, "features") : NULL;
    out->acpi = e && find_tag(p, e, "acpi") != NULL;
}

const char *bridge_libvirt_xml_disk_target(const struct bridge_libvirt_xml *x, const char *alias)
{
    for (unsigned i = 0; alias && i < x->n_disks; i++)
        if (!strcmp(x->disk_alias[i], alias))
            return x->disk_target[i];
    return NULL;
}

/* Append [@p, @p + @n) to the buffer *@buf of *@len bytes used. */
static int append(char **buf, size_t *len, const char *p, size_t n)
{
    char *g = realloc(*buf, *len + n + 1);
    if (!g)
        return -1;
    memcpy(g + *len, p, n);
    *len += n;
    g[*len] = '\0';
    *buf = g;
    return 0;
}

static int safe_path(const char *p)
{
    return p[0] == '/' && strlen(p) < BRIDGE_PATH_MAX && !strpbrk(p, "<>&'\"");
}

/* The two channel elements, indented as libvirt does inside <devices>. */
static void port_channels(char *out, size_t len, const char *port_a, const char *port_b)
{
    static const char fmt[] = "<channel type='unix'>\n"
                              "      <source mode='connect' path='%s'>\n"
                              "        <reconnect enabled='yes' timeout='1'/>\n"
                              "      </source>\n"
                              "      <target type='virtio' name='%s'/>\n"
                              "    </channel>\n"
                              "    <channel type='unix'>\n"
                              "      <source mode='connect' path='%s'>\n"
                              "        <reconnect enabled='yes' timeout='1'/>\n"
                              "      </source>\n"
                              "      <target type='virtio' name='%s'/>\n"
                              "    </channel>\n";
    snprintf(out, len, fmt, port_a, VMS_PORT_REQUEST_NAME, port_b, VMS_PORT_EVENT_NAME);
}

char *bridge_libvirt_xml_with_ports(const char *xml, const char *port_a, const char *port_b)
{
    const char *xend = xml + strlen(xml), *p = xml, *c, *e, *devices_end;
    char *out = NULL, chan[2 * BRIDGE_PATH_MAX + 512];
    struct bridge_libvirt_xml now;
    size_t len = 0;
    int placed = 0;

    if (!safe_path(port_a) || !safe_path(port_b) || !(devices_end = strstr(xml, "</devices>")))
        return NULL;
    bridge_libvirt_xml_parse(xml, &now);
    if (!strcmp(now.port_a, port_a) && !strcmp(now.port_b, port_b) && now.port_a_connect &&
        now.port_b_connect && now.port_a_reconnect && now.port_b_reconnect)
        return strdup(xml); /* already set up: nothing changes */
    port_channels(chan, sizeof(chan), port_a, port_b);
    /* our channels go where the first of the old ones was; the others stay as they are */
    while ((c = find_tag(p, devices_end, "channel")) && (e = element_end(c, "channel"))) {
        char name[128];
        channel_target(c, e, name, sizeof(name));
        if (strcmp(name, VMS_PORT_REQUEST_NAME) && strcmp(name, VMS_PORT_EVENT_NAME)) {
            if (append(&out, &len, p, (size_t)(e - p)) < 0)
                goto fail;
        } else if (!placed) {
            if (append(&out, &len, p, (size_t)(c - p)) < 0 ||
                append(&out, &len, chan, strlen(chan) - 1) < 0) /* its own newline follows */
                goto fail;
            placed = 1;
        } else {
            /* drop the element and the indentation before it */
            const char *s = c;
            while (s > p && (s[-1] == ' ' || s[-1] == '\t'))
                s--;
            if (append(&out, &len, p, (size_t)(s - p)) < 0)
                goto fail;
            while (*e == '\n')
                e++;
        }
        p = e;
    }
    if (append(&out, &len, p, (size_t)(devices_end - p)) < 0 ||
        (!placed &&
         (append(&out, &len, "  ", 2) < 0 || append(&out, &len, chan, strlen(chan)) < 0 ||
          append(&out, &len, "  ", 2) < 0)) ||
        append(&out, &len, devices_end, (size_t)(xend - devices_end)) < 0)
        goto fail;
    return out;
fail:
    free(out);
    return NULL;
}
