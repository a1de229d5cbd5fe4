/* loop/ — the close-hook list (see loop/close_hook.h). */
#include "loop/close_hook.h"

#include "loop/loop_impl.h"

int iol__loop_add_close_hook(iol_loop *loop, iol__close_hook *hook)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    hook->prev = NULL;
    hook->next = loop->close_hooks;
    if (loop->close_hooks)
        loop->close_hooks->prev = hook;
    loop->close_hooks = hook;
    return 0;
}

void iol__loop_remove_close_hook(iol_loop *loop, iol__close_hook *hook)
{
    if (!hook->prev && loop->close_hooks != hook)
        return; /* not linked */
    if (hook->prev)
        hook->prev->next = hook->next;
    else
        loop->close_hooks = hook->next;
    if (hook->next)
        hook->next->prev = hook->prev;
    hook->prev = hook->next = NULL;
}

void iol__loop_run_close_hooks(iol_loop *loop)
{
    /* One at a time from the head: fn may unlink others (a stream closing
     * its peer) or link new ones; both are seen. */
    while (loop->close_hooks) {
        iol__close_hook *hook = loop->close_hooks;
        iol__loop_remove_close_hook(loop, hook);
        hook->fn(hook);
    }
}

void iol__loop_wind_down(iol_loop *loop)
{
    for (iol__close_hook *hook = loop->close_hooks; hook; hook = hook->next)
        if (hook->wind_down)
            hook->wind_down(hook);
}
