/* loop/ — close hooks: how a layer above the loop (net/ streams, later TLS
 * sessions and zmq handlers) learns that a loop is closing, without the
 * loop learning its types.
 *
 * A hook is intrusive (embedded in the object it stands for), so
 * registering allocates nothing and cannot fail. At iol_loop_close (and at
 * the last unref of a loop never closed) each registered hook is unlinked
 * and its fn runs once, on the closing thread, before the loop drops its
 * queued callbacks and timeouts and before it releases (or closes) the fds
 * that have handlers. The loop still accepts calls meanwhile, so fn can
 * remove its fd's handler and close the fd itself: every fd is closed
 * exactly once, by its owner. Whatever fn adds (callbacks, timeouts,
 * handlers) is dropped with the rest; a hook registered by fn runs too.
 *
 * An object with a hook holds a loop reference (so hooks only exist on a
 * loop that is closed explicitly, never at the last unref).
 *
 * Owner-thread calls, as for handlers. */
#ifndef IOL_CLOSE_HOOK_H
#define IOL_CLOSE_HOOK_H

#include "ioloop.h"

typedef struct iol__close_hook iol__close_hook;
struct iol__close_hook {
    void (*fn)(iol__close_hook *hook); /* recover the owner with containerof */
    /* Optional (NULL: nothing to do): see iol__loop_wind_down. */
    void (*wind_down)(iol__close_hook *hook);
    /* the loop's list; both NULL when unlinked. Linked is derived (prev
     * set, or the list's head) rather than a flag: the hook sits in every
     * stream, and a flag would grow an idle stream by 8 bytes. */
    iol__close_hook *prev, *next;
};

/* Links hook (fn set by the caller) on loop. Loop thread.
 * -ESHUTDOWN: loop closed. -EPERM: another thread runs the loop. */
int iol__loop_add_close_hook(iol_loop *loop, iol__close_hook *hook);
/* Unlinks hook if linked (harmless otherwise). Loop thread. */
void iol__loop_remove_close_hook(iol_loop *loop, iol__close_hook *hook);
/* Runs wind_down of every linked hook that has one; the hooks stay
 * linked. A runtime's drain calls it when it gives up waiting, before it
 * shuts the sockets still registered for writing (FIN): a layer ends its
 * protocol there first (TLS: close_notify), so that the peer sees a clean
 * end rather than a truncation. wind_down must not close or free
 * anything (the loop closes later, with its close hooks). Loop thread,
 * loop stopped. */
void iol__loop_wind_down(iol_loop *loop);

#endif
