/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libvirt-loop.h — libvirt's event loop on the bridge's epoll (virEventRegisterImpl).
 *
 * libvirt's client needs an event loop for its domain events and keepalive;
 * its default one wants a thread of its own. This one runs libvirt's handles
 * as epoll watches and its timeouts on a timerfd, in the bridge's loop.
 * libvirt may add, update and remove handles and timeouts from its own
 * threads (a worker's RPC call): the lists are under a mutex, an eventfd
 * wakes the loop, and removed entries are freed (and their free callbacks
 * run) only on the loop's thread, after dispatch.
 */
#ifndef BRIDGE_LIBVIRT_LOOP_H
#define BRIDGE_LIBVIRT_LOOP_H

#include "loop.h"

/*
 * Register the implementation with libvirt, on @loop, once per process
 * (later calls with the same loop are no-ops; with another loop: -1).
 * Must run before the first virConnectOpen. Returns 0 or -1.
 */
int bridge_libvirt_loop_register(struct bridge_loop *loop);

#endif
