/* docs/examples/stats.c — what a loop and a runtime report about
 * themselves.
 *
 * A loop runs 1000 callbacks posted by another thread and 3 timeouts;
 * another thread reads its statistics while it runs (any thread may), then
 * a runtime of two workers reports per worker and in total. */
#include <pthread.h>
#include <stdio.h>

#include <ioloop.h>

static void nop(void *arg) { (void)arg; }
static void stop_loop(void *arg) { iol_loop_stop(arg); }

static void *post_1000(void *arg)
{
    for (int i = 0; i < 1000; i++)
        iol_loop_add_callback(arg, nop, NULL);
    return NULL;
}

int main(void)
{
    iol_loop *loop;
    if (iol_loop_new(&loop, NULL) < 0)
        return 1;
    pthread_t t;
    pthread_create(&t, NULL, post_1000, loop);
    pthread_join(t, NULL);
    for (int i = 1; i <= 3; i++)
        iol_loop_call_later(loop, 0.01 * i, nop, NULL, NULL);
    iol_loop_call_later(loop, 0.05, stop_loop, loop, NULL);
    iol_loop_set_call_timing(loop, true); /* longest_callback_ns; off by default */
    iol_loop_start(loop);

    iol_loop_stats st;
    iol_loop_get_stats(loop, &st, sizeof st);   /* any thread, filled by value */
    printf("iterations %llu, callbacks %llu from other threads, %llu own, %llu timeouts\n",
           (unsigned long long)st.iterations, (unsigned long long)st.callbacks_remote,
           (unsigned long long)st.callbacks_self, (unsigned long long)st.timeouts);
    printf("busy %.3f ms, waiting %.3f ms, longest iteration %.3f ms, longest callback %.3f ms\n",
           st.busy_ns / 1e6, st.wait_ns / 1e6, st.longest_iteration_ns / 1e6, st.longest_callback_ns / 1e6);
    iol_loop_reset_stats(loop);                 /* the two longest_* start again */
    int ok = st.callbacks_remote == 1000 && st.timeouts == 4;
    iol_loop_close(loop, false);

    iol_runtime *rt;
    if (iol_runtime_new(&rt, &(iol_runtime_config){ .workers = 2 }) < 0 || iol_runtime_start(rt) < 0)
        return 1;
    for (unsigned i = 0; i < 10; i++)
        iol_runtime_post(rt, i % 2, nop, NULL);
    iol_runtime_stop(rt);
    iol_runtime_join(rt);
    for (unsigned i = 0; i < iol_runtime_size(rt); i++) {
        iol_runtime_stats w;
        iol_runtime_get_stats(rt, i, &w, sizeof w);
        printf("worker %u: %llu callbacks, %llu accepted, %llu wakeups\n", i,
               (unsigned long long)w.loop.callbacks_remote, (unsigned long long)w.accepted,
               (unsigned long long)w.loop.wakeups);
    }
    iol_runtime_stats all;
    iol_runtime_get_stats(rt, IOL_RUNTIME_ALL, &all, sizeof all);
    printf("all %u workers: %llu callbacks\n", all.workers, (unsigned long long)all.loop.callbacks_remote);
    ok = ok && all.loop.callbacks_remote >= 10;
    iol_runtime_free(rt);
    return ok ? 0 : 1;
}
