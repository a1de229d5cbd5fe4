/* loop/ — the thread rule for objects above the loop (net/ udp sockets):
 * the same check the loop's own owner-thread calls make, for a layer that
 * owns objects bound to a loop and must refuse calls from other threads
 * before it touches any state (the public handler calls answer -EPERM
 * too, but only after the caller may have changed its own state). */
#ifndef IOL_LOOP_OWNER_H
#define IOL_LOOP_OWNER_H

#include "ioloop.h"

/* 0 when the calling thread may use loop's owner-thread state: it runs
 * the loop, or nobody does. -EPERM: another thread runs it. -EINVAL: NULL. */
int iol__loop_owner_check(const iol_loop *loop);

#endif
