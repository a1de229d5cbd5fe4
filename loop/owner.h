/* loop/ — the thread rule for the layers above the loop.
 *
 * WHY AN INTERNAL CALL. net/ uses only the public loop API, and the loop's
 * state is private to loop/ (loop_impl.h). A stream (or a TLS stream) is
 * bound to its loop: every call on it touches state that only the thread
 * running the loop may touch. So each of its loop-bound public calls asks
 * this first, before it reads or changes anything of the stream, and
 * returns the -EPERM it gives: the same answer, by the same rule, as the
 * loop's own calls (iol__loop_check_owner: the thread running the loop, or
 * any one thread while the loop is not running). Any thread may call it;
 * it reads only the loop's `running` and `owner`. */
#ifndef IOL_LOOP_OWNER_H
#define IOL_LOOP_OWNER_H

#include "ioloop.h"

/* 0 when the calling thread may use loop now, -EPERM when another thread
 * runs it. loop must not be NULL. */
int iol__loop_owner_check(const iol_loop *loop);

#endif
