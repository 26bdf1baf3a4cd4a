/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vms-wire-client — a guest-side test program that speaks the vmstate wire
 * protocol directly on the virtio-serial ports (no helper, no D-Bus), for the
 * bridge's system tests.
 *
 * It finds the ports by name under /sys/class/virtio-ports, opens
 * /dev/vportNpM, reads one command per line from stdin (or from a FIFO given
 * with -i, created if missing and kept open, so a test can write commands
 * into a running client) and prints one line per protocol message:
 *
 *   PORTS a=DEV b=DEV
 *   SENT id=ID op=OP
 *   WELCOME version=V epoch=E status=S
 *   REPLY id=ID status=S message=...
 *   EVENT id=ID op=OP status=S epoch=E seq=N dup=0|1 state=ID parent=ID reason=R
 *         app=APP data=HEX states=N mem=N free=N message=...
 *   TIMELINE epoch=E state=ID reason=R
 *
 * Commands:
 *   hello
 *   req OP APP_ID PRINCIPAL SECRET [label=L] [state=ID] [data=TEXT] [bytes=N] [id=ID]
 *   hostile N       N malformed or oversized frames on port A (garbage, bad CRC,
 *                   oversized length, bad escape, non-D-Bus payload, truncated)
 *   flood S PRINCIPAL SECRET
 *                   flood port A for S seconds, a third each: hostile frames, well-formed
 *                   requests from unknown principals, then requests of PRINCIPAL with
 *                   VMS_APP_DATA_MAX bytes of app data; port B is not read meanwhile.
 *                   Prints FLOODED garbage=N unknown=N bigdata=N bytes=N
 *   noack / ack     stop / resume acking events (default: ack every event)
 *   quit
 * Events are acked (Ack{request_id, epoch, seq}) and de-duplicated by request
 * id like the helper does (dup=1 marks a repeat; it is acked but not "delivered").
 * Usage: vms-wire-client [-i FIFO] [-a DEV -b DEV]
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vms-channel.h"
#include "vms-dedup.h"
#include "vms-log.h"
#include "vms-proto.h"
#include "vms-wire.h"

static struct vms_channel port_a, port_b;
static struct vms_dedup delivered;
static uint64_t epoch;
static uint64_t hello_nonce;
static int auto_ack = 1;
static int a_down;     /* port A's host side was seen closed */
static int b_open = 1; /* port B's host side is there */

static int find_port(const char *want, char *dev, size_t len)
{
    DIR *d = opendir("/sys/class/virtio-ports");
    struct dirent *e;
    int found = 0;

    while (d && !found && (e = readdir(d))) {
        char p[512], name[256] = "";
        FILE *f;
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof(p), "/sys/class/virtio-ports/%s/name", e->d_name);
        f = fopen(p, "r");
        if (!f)
            continue;
        if (fgets(name, sizeof(name), f)) {
            name[strcspn(name, "\n")] = '\0';
            if (!strcmp(name, want)) {
                snprintf(dev, len, "/dev/%s", e->d_name);
                found = 1;
            }
        }
        fclose(f);
    }
    if (d)
        closedir(d);
    return found ? 0 : -1;
}

static void print_hex(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        printf("%02x", p[i]);
}

static void send_hello(void)
{
    struct vms_msg m;
    if (getrandom(&hello_nonce, sizeof(hello_nonce), 0) != (ssize_t)sizeof(hello_nonce))
        hello_nonce = (uint64_t)time(NULL);
    vms_msg_init(&m, VMS_MSG_HELLO);
    vms_msg_set_u64(&m, VMS_F_VERSION, VMS_PROTO_VERSION);
    vms_msg_set_u64(&m, VMS_F_MIN_VERSION, VMS_PROTO_MIN_VERSION);
    vms_msg_set_u64(&m, VMS_F_CAPS, VMS_CAP_ALL);
    vms_msg_set_u64(&m, VMS_F_NONCE, hello_nonce);
    vms_msg_set_u64(&m, VMS_F_EPOCH, epoch);
    vms_channel_send(&port_a, &m);
    vms_msg_clear(&m);
    printf("SENT hello epoch=%llu\n", (unsigned long long)epoch);
}

static void on_msg(void *opaque, struct vms_channel *c, struct vms_msg *m)
{
    (void)opaque;
    (void)c;
    switch (m->type) {
    case VMS_MSG_WELCOME:
        if (m->nonce != hello_nonce) {
            printf("WELCOME stale=1\n");
            break;
        }
        if (!vms_msg_has(m, VMS_F_STATUS) || m->status == 0)
            epoch = m->epoch;
        printf("WELCOME version=%u epoch=%llu status=%u\n", m->version,
               (unsigned long long)m->epoch, m->status);
        break;
    case VMS_MSG_REPLY:
        printf("REPLY id=%s status=%u message=%s\n", m->request_id, m->status,
               vms_msg_has(m, VMS_F_MESSAGE) ? m->message : "");
        break;
    case VMS_MSG_TIMELINE:
        epoch = m->epoch;
        printf("TIMELINE epoch=%llu state=%s reason=%s\n", (unsigned long long)m->epoch,
               m->state_id, m->reason);
        send_hello();
        break;
    case VMS_MSG_EVENT: {
        int fresh = vms_dedup_check_and_add(&delivered, 0, m->request_id);
        printf("EVENT id=%s op=%s status=%u epoch=%llu seq=%llu dup=%d state=%s parent=%s "
               "reason=%s app=%s data=",
               m->request_id, m->op, m->status, (unsigned long long)m->epoch,
               (unsigned long long)m->seq, fresh == 1 ? 0 : 1, m->state_id, m->parent_id, m->reason,
               m->app_id);
        print_hex(m->app_data, m->app_data_len);
        printf(" states=%zu", m->n_states);
        for (size_t i = 0; i < m->n_states; i++)
            printf(",%s", m->states[i].id);
        printf(" mem=%llu free=%llu bytes=%llu message=%s\n", (unsigned long long)m->mem_bytes,
               (unsigned long long)m->free_bytes, (unsigned long long)m->bytes,
               vms_msg_has(m, VMS_F_MESSAGE) ? m->message : "");
        if (auto_ack) {
            struct vms_msg a;
            vms_msg_init(&a, VMS_MSG_ACK);
            vms_msg_set_str(&a, VMS_F_REQUEST_ID, m->request_id);
            vms_msg_set_u64(&a, VMS_F_EPOCH, m->epoch);
            vms_msg_set_u64(&a, VMS_F_SEQ, m->seq);
            vms_channel_send(&port_a, &a);
            vms_msg_clear(&a);
        }
        break;
    }
    case VMS_MSG_CLOCK:
        printf("OTHER type=%s\n", vms_msg_type_name(m->type));
        /* a bridge (re)connected, or bounced port A: Hello again, as the helper does */
        if (!strcmp(m->reason, "connect") && b_open)
            send_hello();
        break;
    default:
        printf("OTHER type=%s\n", vms_msg_type_name(m->type));
        break;
    }
}

static unsigned long long raw_sent; /* bytes send_raw() wrote */

static void send_raw(const uint8_t *p, size_t n)
{
    /* best effort, non-blocking: wait a little when the port is full */
    size_t off = 0;
    int spins = 0;
    while (off < n && spins < 2000) {
        ssize_t w = write(port_a.fd, p + off, n - off);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            break;
        spins++;
        usleep(1000);
    }
    raw_sent += off;
}

static void send_hostile_frames(int n)
{
    static uint8_t big[VMS_WIRE_FRAME_MAX_ENCODED + 64];
    uint8_t frame[64];
    size_t len;

    for (int i = 0; i < n; i++) {
        switch (i % 6) {
        case 0: /* garbage without a sync byte */
            for (size_t k = 0; k < 300; k++)
                frame[k % sizeof(frame)] = (uint8_t)(k * 7 + i);
            memset(frame, 0x41, sizeof(frame));
            send_raw(frame, sizeof(frame));
            break;
        case 1: /* declared length over the cap: 1 MiB */
            frame[0] = 0xFF;
            frame[1] = 1;
            frame[2] = 0x00;
            frame[3] = 0x00;
            frame[4] = 0x10;
            frame[5] = 0x00;
            memset(frame + 6, 0x42, 32);
            send_raw(frame, 38);
            break;
        case 2: { /* a valid frame whose payload is not a D-Bus message */
            uint8_t payload[40];
            memset(payload, 0x33, sizeof(payload));
            len = vms_wire_encode(payload, sizeof(payload), big, sizeof(big));
            send_raw(big, len);
            break;
        }
        case 3: { /* a valid frame, damaged CRC */
            uint8_t payload[40];
            memset(payload, 0x21, sizeof(payload));
            len = vms_wire_encode(payload, sizeof(payload), big, sizeof(big));
            big[len - 1] ^= 0x5a;
            if (big[len - 1] >= 0xFE)
                big[len - 1] = 0x01;
            send_raw(big, len);
            break;
        }
        case 4: { /* oversized: a full 128 KiB + 1 payload, framed by hand */
            size_t plen = VMS_WIRE_PAYLOAD_MAX + 1;
            size_t k = 0;
            big[k++] = 0xFF;
            big[k++] = 1;
            big[k++] = (uint8_t)(plen & 0xff);
            big[k++] = (uint8_t)((plen >> 8) & 0xff);
            big[k++] = (uint8_t)((plen >> 16) & 0xff);
            big[k++] = (uint8_t)((plen >> 24) & 0xff);
            memset(big + k, 0x55, plen);
            send_raw(big, k + plen);
            break;
        }
        case 5: /* bad escape, then a truncated frame cut by the next sync byte */
            frame[0] = 0xFF;
            frame[1] = 1;
            frame[2] = 0xFE;
            frame[3] = 0x07;
            frame[4] = 0xFF;
            frame[5] = 1;
            frame[6] = 10;
            frame[7] = 0;
            send_raw(frame, 8);
            break;
        }
    }
}

static void send_hostile(int n)
{
    send_hostile_frames(n);
    printf("SENT hostile=%d\n", n);
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One well-formed list request, framed and written at once (no queue: a flood). */
static void send_flood_request(const char *principal, const char *secret, const uint8_t *data,
                               size_t data_len)
{
    struct vms_msg m;
    char id[VMS_REQUEST_ID_LEN + 1];
    uint8_t *frame = NULL;
    size_t len = 0;
    char err[128];

    vms_msg_init(&m, VMS_MSG_REQUEST);
    if (vms_request_id_new(id, epoch) < 0)
        return;
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, id);
    vms_msg_set_str(&m, VMS_F_OP, "list");
    vms_msg_set_str(&m, VMS_F_APP_ID, "org.example.Flood");
    vms_msg_set_str(&m, VMS_F_PRINCIPAL, principal);
    vms_msg_set_str(&m, VMS_F_SECRET, secret);
    vms_msg_set_u64(&m, VMS_F_UID, getuid());
    if (data_len)
        vms_msg_set_app_data(&m, data, data_len);
    if (vms_msg_encode_frame(&m, &frame, &len, err, sizeof(err)) == 0)
        send_raw(frame, len);
    free(frame);
    vms_msg_clear(&m);
}

static void flood(char *args)
{
    static uint8_t data[VMS_APP_DATA_MAX];
    char principal[VMS_STR_MAX + 1] = "", secret[VMS_STR_MAX + 1] = "";
    unsigned long long garbage = 0, unknown = 0, bigdata = 0, sent_before = raw_sent;
    double seconds = 0, start = mono_now();

    if (sscanf(args, "%lf %255s %255s", &seconds, principal, secret) != 3) {
        printf("ERROR usage: flood SECONDS PRINCIPAL SECRET\n");
        return;
    }
    memset(data, 0x66, sizeof(data));
    while (mono_now() < start + seconds / 3) {
        send_hostile_frames(6);
        garbage += 6;
    }
    while (mono_now() < start + 2 * seconds / 3) {
        char ghost[64];
        snprintf(ghost, sizeof(ghost), "ghost-%llu", unknown);
        send_flood_request(ghost, "guess", NULL, 0);
        unknown++;
    }
    while (mono_now() < start + seconds) {
        send_flood_request(principal, secret, data, sizeof(data));
        bigdata++;
    }
    printf("FLOODED garbage=%llu unknown=%llu bigdata=%llu bytes=%llu\n", garbage, unknown, bigdata,
           raw_sent - sent_before);
}

static void do_request(char *args)
{
    char *tok[16];
    int n = 0;
    struct vms_msg m;
    char id[VMS_REQUEST_ID_LEN + 1];
    char *save = NULL;

    for (char *t = strtok_r(args, " \t", &save); t && n < 16; t = strtok_r(NULL, " \t", &save))
        tok[n++] = t;
    if (n < 4) {
        printf("ERROR usage: req OP APP PRINCIPAL SECRET [k=v]...\n");
        return;
    }
    vms_msg_init(&m, VMS_MSG_REQUEST);
    if (vms_request_id_new(id, epoch) < 0)
        return;
    vms_msg_set_str(&m, VMS_F_OP, tok[0]);
    vms_msg_set_str(&m, VMS_F_APP_ID, tok[1]);
    vms_msg_set_str(&m, VMS_F_PRINCIPAL, tok[2]);
    vms_msg_set_str(&m, VMS_F_SECRET, tok[3]);
    vms_msg_set_u64(&m, VMS_F_UID, getuid());
    for (int i = 4; i < n; i++) {
        char *eq = strchr(tok[i], '=');
        if (!eq)
            continue;
        *eq++ = '\0';
        if (!strcmp(tok[i], "label"))
            vms_msg_set_str(&m, VMS_F_LABEL, eq);
        else if (!strcmp(tok[i], "state"))
            vms_msg_set_str(&m, VMS_F_STATE_ID, eq);
        else if (!strcmp(tok[i], "data"))
            vms_msg_set_app_data(&m, eq, strlen(eq));
        else if (!strcmp(tok[i], "bytes"))
            vms_msg_set_u64(&m, VMS_F_BYTES, strtoull(eq, NULL, 0));
        else if (!strcmp(tok[i], "id"))
            snprintf(id, sizeof(id), "%s", eq);
    }
    vms_msg_set_str(&m, VMS_F_REQUEST_ID, id);
    if (vms_channel_send(&port_a, &m) == 0)
        printf("SENT id=%s op=%s\n", id, tok[0]);
    else
        printf("ERROR cannot send\n");
    vms_msg_clear(&m);
}

static int do_command(char *line)
{
    line[strcspn(line, "\r\n")] = '\0';
    if (!strcmp(line, "hello"))
        send_hello();
    else if (!strncmp(line, "req ", 4))
        do_request(line + 4);
    else if (!strncmp(line, "hostile ", 8))
        send_hostile(atoi(line + 8));
    else if (!strncmp(line, "flood ", 6))
        flood(line + 6);
    else if (!strcmp(line, "noack"))
        auto_ack = 0;
    else if (!strcmp(line, "ack"))
        auto_ack = 1;
    else if (!strcmp(line, "quit"))
        return 1;
    else if (line[0])
        printf("ERROR unknown command: %s\n", line);
    return 0;
}

int main(int argc, char **argv)
{
    char dev_a[300] = "", dev_b[300] = "", linebuf[4096];
    const char *fifo = NULL;
    size_t line_len = 0;
    int opt, in_fd = 0, fd;
    struct timespec b_retry = {0, 0};

    while ((opt = getopt(argc, argv, "i:a:b:")) != -1) {
        switch (opt) {
        case 'i':
            fifo = optarg;
            break;
        case 'a':
            snprintf(dev_a, sizeof(dev_a), "%s", optarg);
            break;
        case 'b':
            snprintf(dev_b, sizeof(dev_b), "%s", optarg);
            break;
        default:
            fprintf(stderr, "usage: vms-wire-client [-i FIFO] [-a DEV -b DEV]\n");
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    vms_log_init("vms-wire-client", LOG_ERR);
    for (int i = 0; i < 100 && (!dev_a[0] || !dev_b[0]); i++) {
        if (!dev_a[0])
            find_port(VMS_PORT_REQUEST_NAME, dev_a, sizeof(dev_a));
        if (!dev_b[0])
            find_port(VMS_PORT_EVENT_NAME, dev_b, sizeof(dev_b));
        if (!dev_a[0] || !dev_b[0])
            usleep(100000);
    }
    if (!dev_a[0] || !dev_b[0]) {
        printf("ERROR ports not found\n");
        return 1;
    }
    if (vms_channel_init(&port_a, "port-a", NULL, 0) < 0 ||
        vms_channel_init(&port_b, "port-b", NULL, 0) < 0)
        return 1;
    vms_dedup_init(&delivered);
    fd = open(dev_a, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        printf("ERROR open %s: %s\n", dev_a, strerror(errno));
        return 1;
    }
    vms_channel_attach(&port_a, fd);
    fd = open(dev_b, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        printf("ERROR open %s: %s\n", dev_b, strerror(errno));
        return 1;
    }
    vms_channel_attach(&port_b, fd);
    if (fifo) {
        if (mkfifo(fifo, 0600) < 0 && errno != EEXIST) {
            printf("ERROR mkfifo %s: %s\n", fifo, strerror(errno));
            return 1;
        }
        in_fd = open(fifo, O_RDWR | O_CLOEXEC); /* RDWR: never sees EOF */
        if (in_fd < 0)
            return 1;
    }
    printf("PORTS a=%s b=%s\n", dev_a, dev_b);
    send_hello();
    for (;;) {
        struct pollfd p[3];
        struct timespec now;
        int np = 0, ib = -1;

        clock_gettime(CLOCK_MONOTONIC, &now);
        p[np++] = (struct pollfd){.fd = in_fd, .events = POLLIN};
        p[np++] = (struct pollfd){
            .fd = port_a.fd, .events = vms_channel_wants_write(&port_a) || a_down ? POLLOUT : 0};
        if (b_open || now.tv_sec > b_retry.tv_sec ||
            (now.tv_sec == b_retry.tv_sec && now.tv_nsec >= b_retry.tv_nsec)) {
            ib = np;
            p[np++] = (struct pollfd){.fd = port_b.fd, .events = POLLIN};
        }
        if (poll(p, (nfds_t)np, 200) < 0 && errno != EINTR)
            return 1;
        if (p[1].revents & (POLLHUP | POLLERR)) {
            a_down = 1;
            usleep(100000); /* host side of port A closed: poll() would not wait */
        } else if (a_down && (p[1].revents & POLLOUT)) {
            /* what we wrote before the host side of port A went away may be lost (a
             * bridge that bounced the connection): say Hello again, as the helper does */
            a_down = 0;
            printf("HOST A up\n");
            send_hello();
        }
        if (p[0].revents & POLLIN) {
            ssize_t n = read(in_fd, linebuf + line_len, sizeof(linebuf) - 1 - line_len);
            if (n <= 0 && !fifo)
                break;
            if (n > 0) {
                char *nl;
                line_len += (size_t)n;
                linebuf[line_len] = '\0';
                while ((nl = memchr(linebuf, '\n', line_len))) {
                    size_t used = (size_t)(nl - linebuf) + 1;
                    *nl = '\0';
                    if (do_command(linebuf))
                        goto out;
                    memmove(linebuf, linebuf + used, line_len - used);
                    line_len -= used;
                }
                if (line_len >= sizeof(linebuf) - 1)
                    line_len = 0;
            }
        }
        if (vms_channel_wants_write(&port_a))
            vms_channel_flush(&port_a);
        if (ib >= 0 && p[ib].revents) {
            int rc = vms_channel_read(&port_b, 0, on_msg, NULL);
            if (rc == 0 || (p[ib].revents & POLLHUP)) {
                /* host side closed: a naive loop would spin; look again in 200 ms */
                if (b_open)
                    printf("HOST down\n");
                b_open = 0;
                b_retry = now;
                b_retry.tv_nsec += 200000000;
                if (b_retry.tv_nsec >= 1000000000) {
                    b_retry.tv_sec++;
                    b_retry.tv_nsec -= 1000000000;
                }
            } else if (!b_open) {
                b_open = 1;
                printf("HOST up\n");
                send_hello();
            }
        }
    }
out:
    vms_channel_free(&port_a);
    vms_channel_free(&port_b);
    return 0;
}
