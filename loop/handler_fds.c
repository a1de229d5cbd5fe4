/* loop/ — the fds the application holds on the loop, for runtime/'s
 * graceful close at the end of a drain (runtime/runtime.c, linger): the
 * fds with a handler, and the fds claimed by ring operations instead
 * (a stream on the completion path, iol__loop_fd_claim), which count in
 * iol_loop_handler_count as well and must get the same FIN and discard.
 * Owner thread, loop not running: the tables are owner-thread state. */
#include "loop/loop_impl.h"

/* Writes up to cap of those fds into fds (ascending) and returns how many
 * there are (may exceed cap; fds may be NULL when cap is 0). */
int iol__loop_handler_fds(iol_loop *loop, int *fds, int cap)
{
    int n = 0;
    int end = loop->handlers_cap > loop->claimed_cap ? loop->handlers_cap : loop->claimed_cap;
    for (int fd = 0; fd < end; fd++) {
        if (!iol__loop_has_handler(loop, fd) && !iol__loop_fd_claimed(loop, fd))
            continue;
        if (n < cap)
            fds[n] = fd;
        n++;
    }
    return n;
}
