/* loop/ — prepare and check hooks (libuv's uv_prepare/uv_check): callbacks
 * run on every iteration right before the poll and right after it. The
 * loop calls iol__loop_run_hooks only when a list is non-empty, so a loop
 * without hooks pays one predictable branch per list per iteration.
 * A hook may add or remove hooks (itself included) while the list runs:
 * removal marks the entry (fn NULL) and the list is compacted after the
 * run; additions are appended and wait for the next iteration. */
#include "loop/loop_impl.h"

#include <stdlib.h>

static iol__hook_list *list_of(iol_loop *loop, int kind)
{
    return kind == IOL__HOOK_PREPARE ? &loop->prepare_hooks : &loop->check_hooks;
}

static int hook_add(iol_loop *loop, int kind, iol_callback_fn fn, void *arg)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    if (!fn)
        return -EINVAL;
    iol__hook_list *l = list_of(loop, kind);
    if (l->len == l->cap) {
        unsigned cap = l->cap ? l->cap * 2 : 4;
        iol__hook *h = realloc(l->hooks, cap * sizeof *h);
        if (!h)
            return -ENOMEM;
        l->hooks = h;
        l->cap = cap;
    }
    l->hooks[l->len++] = (iol__hook){ fn, arg };
    l->live++;
    return 0;
}

static void compact(iol__hook_list *l)
{
    unsigned j = 0;
    for (unsigned i = 0; i < l->len; i++)
        if (l->hooks[i].fn)
            l->hooks[j++] = l->hooks[i];
    l->len = j;
}

static int hook_remove(iol_loop *loop, int kind, iol_callback_fn fn, void *arg)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    if (!fn)
        return -EINVAL;
    iol__hook_list *l = list_of(loop, kind);
    for (unsigned i = 0; i < l->len; i++) {
        if (l->hooks[i].fn == fn && l->hooks[i].arg == arg) {
            l->hooks[i].fn = NULL;
            l->live--;
            if (!l->running)
                compact(l);
            return 0;
        }
    }
    return -ENOENT;
}

void iol__loop_run_hooks(iol_loop *loop, iol__hook_list *l)
{
    bool watched = iol__loop_watched(loop);
    unsigned n = l->len; /* hooks added meanwhile wait for the next iteration */
    l->running = true;
    for (unsigned i = 0; i < n; i++) {
        iol__hook h = l->hooks[i]; /* re-read: an add may have moved the array */
        if (h.fn)
            iol__loop_call(loop, watched, h.fn, h.arg);
    }
    l->running = false;
    if (l->live != l->len)
        compact(l);
}

void iol__loop_free_hooks(iol_loop *loop)
{
    free(loop->prepare_hooks.hooks);
    free(loop->check_hooks.hooks);
    loop->prepare_hooks = (iol__hook_list){ 0 };
    loop->check_hooks = (iol__hook_list){ 0 };
}

int iol_loop_add_prepare(iol_loop *loop, iol_callback_fn fn, void *arg)
{
    return hook_add(loop, IOL__HOOK_PREPARE, fn, arg);
}

int iol_loop_remove_prepare(iol_loop *loop, iol_callback_fn fn, void *arg)
{
    return hook_remove(loop, IOL__HOOK_PREPARE, fn, arg);
}

int iol_loop_add_check(iol_loop *loop, iol_callback_fn fn, void *arg)
{
    return hook_add(loop, IOL__HOOK_CHECK, fn, arg);
}

int iol_loop_remove_check(iol_loop *loop, iol_callback_fn fn, void *arg)
{
    return hook_remove(loop, IOL__HOOK_CHECK, fn, arg);
}
