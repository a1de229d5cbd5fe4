/* loop/ — the fds that have a handler, for runtime/'s graceful close at
 * the end of a drain (runtime/runtime.c, linger_close). Owner thread, loop
 * not running: the table is owner-thread state. */
#include "loop/loop_impl.h"

/* Writes up to cap registered fds into fds (ascending) and returns how
 * many are registered (may exceed cap; fds may be NULL when cap is 0). */
int iol__loop_handler_fds(iol_loop *loop, int *fds, int cap)
{
    int n = 0;
    for (int fd = 0; fd < loop->handlers_cap; fd++) {
        if (!loop->handlers[fd].fn)
            continue;
        if (n < cap)
            fds[n] = fd;
        n++;
    }
    return n;
}
