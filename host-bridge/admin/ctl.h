/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ctl.h — the bridge's admin socket, and vmstate-admin's client of it.
 *
 * A UNIX stream socket (mode 0600, created under umask 077) that takes one
 * JSON object per line and answers one JSON object per line:
 *   {"cmd":"status"}                 {"ok":true,"vms":[...]}
 *   {"cmd":"tiers"}                  {"ok":true,"tiers":[...]}
 *   {"cmd":"start|stop|suspend|resume","vm":NAME}
 *                                    answered when the operation ends:
 *                                    {"ok":true,...figures} or {"ok":false,"error":...}
 *   {"cmd":"pin|unpin|demote|promote","vm":NAME}
 * Lines are capped (4 KiB) and connections too (16); only the bridge's own
 * user can connect (the file mode), so this is not a hostile-input surface like port A,
 * but it is still parsed strictly.
 */
#ifndef BRIDGE_CTL_H
#define BRIDGE_CTL_H

struct bridge;

/* Listen on @path for @br. Returns 0 (or 0 with nothing to do when @path is ""), or -1. */
int bridge_admin_listen(struct bridge *br, const char *path);
void bridge_admin_close(struct bridge *br);

/* 1 if @cmd is a command vmstate-admin sends to the running bridge. */
int bridge_admin_is_ctl_command(const char *cmd);

/*
 * vmstate-admin's side: send @cmd with @argc/@argv (the VM name) to the bridge at @socket,
 * print the answer (human-readable, or the JSON with @json), and return the exit status:
 * 0 ok, 1 refused or failed, 3 no bridge.
 */
int bridge_admin_ctl_main(const char *socket, const char *cmd, int argc, char **argv, int json,
                          double timeout_s);

#endif
