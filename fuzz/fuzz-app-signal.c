/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fuzz-app-signal — libvmstate's reading of the helper's signals (Completed from its bytes
 * with common/'s bounded reader, the others through libdbus's getters) over any message
 * libdbus accepts, as the library receives them from the bus: no read outside the
 * message, and every string the event hands the app lies in the event's bytes (or is a
 * constant) and is terminated there. The library's file is included whole to reach its
 * static parser.
 */
#include "../libvmstate/vmstate.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* @s is terminated inside the event's bytes, or one of the library's own constants */
static void check_string(const struct event_priv *e, int raw_len, const char *s)
{
    if (!s)
        abort();
    if (e->raw && s >= e->raw && s < e->raw + raw_len &&
        !memchr(s, 0, (size_t)(e->raw + raw_len - s)))
        abort();
    (void)strlen(s); /* ASan: inside some allocation */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    DBusMessage *m;
    struct event_priv *e;
    int raw_len = 0;
    volatile unsigned sum = 0;

    if (size > 1u << 20)
        return 0;
    m = dbus_message_demarshal((const char *)data, (int)size, NULL);
    if (!m)
        return 0;
    e = parse_helper_signal(m);
    if (e) {
        const struct vmstate_event *ev = &e->pub;
        const char *strs[] = {ev->request_id, ev->operation,
                              ev->message,    ev->state_id,
                              ev->label,      ev->app_id,
                              ev->reason,     ev->parent_id,
                              ev->hostname,   ev->bridge_version,
                              ev->creator,    ev->hypervisor_version,
                              ev->ops,        ev->mode};
        if (e->raw) /* the whole message's length, from its header */
            raw_len = dbus_message_demarshal_bytes_needed(e->raw, 16);
        for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
            check_string(e, raw_len, strs[i]);
        for (size_t i = 0; i < ev->app_data_len; i++)
            sum += ev->app_data[i];
        for (size_t i = 0; i < ev->n_states; i++) {
            check_string(e, raw_len, ev->states[i].id);
            check_string(e, raw_len, ev->states[i].label);
            check_string(e, raw_len, ev->states[i].app_id);
            check_string(e, raw_len, ev->states[i].parent);
        }
        for (size_t i = 0; i < ev->n_results; i++) {
            check_string(e, raw_len, ev->results[i].operation);
            check_string(e, raw_len, ev->results[i].message);
        }
        for (size_t i = 0; i < ev->n_quotas; i++)
            check_string(e, raw_len, ev->quotas[i].name);
        if (ev->n_results > VMSTATE_FOLLOWUPS_MAX ||
            ev->n_quotas > sizeof(e->quotas) / sizeof(e->quotas[0]))
            abort();
        event_free_priv(e);
    }
    dbus_message_unref(m);
    (void)sum;
    return 0;
}
