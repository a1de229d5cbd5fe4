/* loop/ — posting for the library's own layers. */
#ifndef IOL_LOOP_POST_H
#define IOL_LOOP_POST_H

#include "ioloop.h"

/* iol_loop_add_callback for the library's own posts (a future's waiters,
 * the runtime's handoffs and its stop sequence): counted against the
 * loop's queue_limit but never refused with -EAGAIN, since nothing could
 * redo them. Any thread. Errors as add_callback but -EAGAIN. */
int iol__loop_post(iol_loop *loop, iol_callback_fn fn, void *arg);

#endif
