/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * clone-id.c — see clone-id.h.
 */
#include "config.h"
#include "clone-id.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "vms-proto.h"

/* NIC devices whose MAC must differ (QEMU's qdev names) */
static const char *const nic_drivers[] = {
    "virtio-net-pci",
    "virtio-net-pci-non-transitional",
    "virtio-net-device",
    "virtio-net-ccw",
    "e1000",
    "e1000e",
    "rtl8139",
    "vmxnet3",
    "ne2k_pci",
    "pcnet",
    "i82559er",
    "igb",
};

int clone_vm_name(const char *clone_group, const char *vm, char *out, size_t len, char *why,
                  size_t whylen)
{
    int n = snprintf(out, len, "%s.%s", clone_group, vm);

    if (n < 0 || (size_t)n >= len || (size_t)n >= BRIDGE_VM_NAME_MAX) {
        snprintf(why, whylen, "the clone's name '%.63s.%.63s' is longer than %d characters",
                 clone_group, vm, BRIDGE_VM_NAME_MAX - 1);
        return -1;
    }
    if (!vms_valid_id(out)) {
        snprintf(why, whylen, "the clone's name '%s' is not of [A-Za-z0-9._:@-]", out);
        return -1;
    }
    return 0;
}

/* @n bytes derived from @name and @what (a purpose) and @index: BLAKE2b. */
static void derive(const char *name, const char *what, unsigned index, unsigned char *out, size_t n)
{
    crypto_generichash_state st;
    char idx[16];

    snprintf(idx, sizeof(idx), "|%u", index);
    crypto_generichash_init(&st, NULL, 0, n);
    crypto_generichash_update(&st, (const unsigned char *)"vmstate-clone|", 14);
    crypto_generichash_update(&st, (const unsigned char *)what, strlen(what));
    crypto_generichash_update(&st, (const unsigned char *)"|", 1);
    crypto_generichash_update(&st, (const unsigned char *)name, strlen(name));
    crypto_generichash_update(&st, (const unsigned char *)idx, strlen(idx));
    crypto_generichash_final(&st, out, n);
}

void clone_mac(const char *name, unsigned nic, char out[CLONE_MAC_LEN])
{
    unsigned char b[16]; /* BLAKE2b's shortest output; the first 4 bytes are used */

    derive(name, "mac", nic, b, sizeof(b));
    /* 0x52: locally administered (bit 1), unicast (bit 0 clear) */
    snprintf(out, CLONE_MAC_LEN, "52:54:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3]);
}

static void clone_uuid(const char *name, char out[37])
{
    unsigned char b[16];

    derive(name, "uuid", 0, b, sizeof(b));
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 layout, variant 1 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

/* An output buffer that remembers it overflowed. */
struct outbuf {
    char *p;
    size_t len, cap;
    int over;
};

static void put(struct outbuf *o, const char *s, size_t n)
{
    if (o->len + n >= o->cap) {
        o->over = 1;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void puts_(struct outbuf *o, const char *s)
{
    put(o, s, strlen(s));
}

/* Characters that may stand right before and right after a path inside an argument. */
static int path_left(char c)
{
    return c == '=' || c == ',' || c == '"' || c == '\'' || c == ':';
}

static int path_right(char c)
{
    return c == '\0' || c == '/' || c == ',' || c == '"' || c == '\'' || c == ':' ||
           isspace((unsigned char)c);
}

/* @tok (@n bytes) with every path under @from moved to @to, appended to @o. */
static void put_moved(struct outbuf *o, const char *tok, size_t n, const char *from, const char *to)
{
    size_t fl = strlen(from), i = 0;

    while (i < n) {
        if (i + fl <= n && !memcmp(tok + i, from, fl) && (i == 0 || path_left(tok[i - 1])) &&
            (i + fl == n || path_right(tok[i + fl]))) {
            puts_(o, to);
            i += fl;
        } else {
            put(o, tok + i, 1);
            i++;
        }
    }
}

/* The end of the field that starts at @s in a QEMU option list (",," is an escaped comma). */
static const char *field_end(const char *s)
{
    while (*s) {
        if (*s == ',' && s[1] == ',')
            s += 2;
        else if (*s == ',')
            break;
        else
            s++;
    }
    return s;
}

/* The value of field @key= in option list @v, unescaped into @out: 1 found, 0 not. */
static int field_get(const char *v, const char *key, char *out, size_t outlen)
{
    size_t kl = strlen(key);

    for (const char *f = v; *f; f = *field_end(f) ? field_end(f) + 1 : field_end(f)) {
        const char *e = field_end(f);
        if ((size_t)(e - f) > kl && !strncmp(f, key, kl) && f[kl] == '=') {
            size_t k = 0;
            for (const char *s = f + kl + 1; s < e && k + 1 < outlen; s++) {
                out[k++] = *s;
                if (*s == ',')
                    s++; /* ",," */
            }
            out[k] = '\0';
            return 1;
        }
    }
    return 0;
}

static int is_nic_driver(const char *v)
{
    char drv[64];
    size_t n = (size_t)(field_end(v) - v);

    if (!field_get(v, "driver", drv, sizeof(drv))) {
        const char *eq = strchr(v, '=');
        if (n >= sizeof(drv) || (eq && eq < v + n))
            return 0; /* the first field is a key=value: no driver named */
        memcpy(drv, v, n);
        drv[n] = '\0';
    }
    for (size_t i = 0; i < sizeof(nic_drivers) / sizeof(nic_drivers[0]); i++)
        if (!strcmp(drv, nic_drivers[i]))
            return 1;
    return 0;
}

/* NIC option list @v with its mac= field set to @mac (added when absent), appended to @o. */
static void put_with_mac(struct outbuf *o, const char *v, const char *mac)
{
    int found = 0;

    for (const char *f = v; *f;) {
        const char *e = field_end(f);
        if (f != v)
            puts_(o, ",");
        if (!strncmp(f, "mac=", 4)) {
            puts_(o, "mac=");
            puts_(o, mac);
            found = 1;
        } else {
            put(o, f, (size_t)(e - f));
        }
        f = *e ? e + 1 : e;
    }
    if (!found) {
        puts_(o, ",mac=");
        puts_(o, mac);
    }
}

/* A disk of option list @v (already moved to @to) under @to or {run}: note it in @id; a
 * writable disk elsewhere is refused. 0, or -1 with @why. */
static int note_disk(const char *v, const char *key, const char *from, const char *to,
                     struct clone_identity *id, char *why, size_t whylen)
{
    char path[BRIDGE_PATH_MAX], ro[8] = "";
    const char *rest = NULL;
    size_t tl = strlen(to);

    if (!field_get(v, key, path, sizeof(path)))
        return 0;
    if (!strncmp(path, to, tl) && path[tl] == '/')
        rest = path + tl;
    else if (!strncmp(path, "{run}/", 6))
        rest = path + 5;
    if (!rest) {
        if ((field_get(v, "readonly", ro, sizeof(ro)) ||
             field_get(v, "read-only", ro, sizeof(ro))) &&
            !strcmp(ro, "on"))
            return 0; /* shared read-only: nothing to copy */
        snprintf(why, whylen,
                 "disk %.200s is outside the VM's run_dir %.200s: a clone would write the "
                 "original's disk (keep the VM's disks in its run_dir, or mark it readonly=on)",
                 path, from);
        return -1;
    }
    if (id->n_disks >= CLONE_DISKS_MAX) {
        snprintf(why, whylen, "more than %d disks", CLONE_DISKS_MAX);
        return -1;
    }
    if (snprintf(id->disk_from[id->n_disks], BRIDGE_PATH_MAX, "%s%s", from, rest) >=
            BRIDGE_PATH_MAX ||
        snprintf(id->disk_to[id->n_disks], BRIDGE_PATH_MAX, "%s%s", to, rest) >= BRIDGE_PATH_MAX) {
        snprintf(why, whylen, "disk path too long");
        return -1;
    }
    id->n_disks++;
    return 0;
}

int clone_rewrite_args(const char *args, const char *from_dir, const char *to_dir, const char *name,
                       char *out, size_t outlen, struct clone_identity *id, char *why,
                       size_t whylen)
{
    struct outbuf o = {.p = out, .len = 0, .cap = outlen, .over = 0};
    char opt[16] = "", tok[BRIDGE_QEMU_ARGS_MAX], uuid[37];
    const char *s = args;

    id->n_macs = id->n_disks = 0;
    out[0] = '\0';
    if (strchr(from_dir, ',') || !from_dir[0]) {
        snprintf(why, whylen, "run_dir '%.200s' is empty or has a comma", from_dir);
        return -1;
    }
    while (*s) {
        const char *t = s;
        struct outbuf tb = {.p = tok, .len = 0, .cap = sizeof(tok), .over = 0};
        int quoted = 0;

        if (isspace((unsigned char)*s)) {
            put(&o, s, 1);
            s++;
            continue;
        }
        while (*s && (quoted || !isspace((unsigned char)*s))) {
            if (*s == '"')
                quoted = !quoted;
            s++;
        }
        tok[0] = '\0';
        put_moved(&tb, t, (size_t)(s - t), from_dir, to_dir);
        if (tb.over) {
            snprintf(why, whylen, "an argument is too long once rewritten");
            return -1;
        }
        if ((!strcmp(opt, "-device") && is_nic_driver(tok)) || !strcmp(opt, "-nic") ||
            (!strcmp(opt, "-net") && !strncmp(tok, "nic", 3) && (!tok[3] || tok[3] == ','))) {
            char mac[CLONE_MAC_LEN];
            if (!strcmp(opt, "-nic") && !strcmp(tok, "none")) {
                puts_(&o, tok);
            } else if (id->n_macs >= CLONE_NICS_MAX) {
                snprintf(why, whylen, "more than %d NICs", CLONE_NICS_MAX);
                return -1;
            } else {
                clone_mac(name, (unsigned)id->n_macs, mac);
                memcpy(id->macs[id->n_macs++], mac, sizeof(mac));
                put_with_mac(&o, tok, mac);
            }
        } else if (!strcmp(opt, "-uuid")) {
            clone_uuid(name, uuid);
            puts_(&o, uuid);
        } else {
            if ((!strcmp(opt, "-blockdev") &&
                 note_disk(tok, "filename", from_dir, to_dir, id, why, whylen) < 0) ||
                (!strcmp(opt, "-drive") &&
                 note_disk(tok, "file", from_dir, to_dir, id, why, whylen) < 0))
                return -1;
            puts_(&o, tok);
        }
        if (tok[0] == '-' && strlen(tok) < sizeof(opt))
            snprintf(opt, sizeof(opt), "%s", tok);
        else
            opt[0] = '\0';
    }
    if (o.over) {
        snprintf(why, whylen, "qemu_args too long once rewritten for the clone");
        return -1;
    }
    return 0;
}

int clone_derive(const struct bridge_vm_config *src, const char *clone_group,
                 struct clone_identity *id, char *why, size_t whylen)
{
    const char *slash;
    int n;

    memset(id, 0, sizeof(*id));
    if (clone_vm_name(clone_group, src->name, id->name, sizeof(id->name), why, whylen) < 0)
        return -1;
    slash = strrchr(src->run_dir, '/');
    if (!slash || slash == src->run_dir) {
        snprintf(why, whylen, "run_dir '%.200s' has no parent directory", src->run_dir);
        return -1;
    }
    n = snprintf(id->run_dir, sizeof(id->run_dir), "%.*s/%s", (int)(slash - src->run_dir),
                 src->run_dir, id->name);
    if (n < 0 || n > 90) { /* the bound bridge-config.c sets: socket paths fit sun_path */
        snprintf(why, whylen, "the clone's run_dir '%.200s' is longer than 90 characters",
                 id->run_dir);
        return -1;
    }
    return clone_rewrite_args(src->qemu_args, src->run_dir, id->run_dir, id->name, id->qemu_args,
                              sizeof(id->qemu_args), id, why, whylen);
}
