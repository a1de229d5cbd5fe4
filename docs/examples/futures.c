/* docs/examples/futures.c — blocking work on an executor, awaited by the
 * loop, driven from main() with run_sync.
 *
 * run_sync runs `compute` as a callback on the loop. compute hands the
 * blocking part (sum_squares, which must not run on the loop's thread) to
 * the loop's default executor and asks the loop to call `on_sum` once that
 * future is done; on_sum resolves run_sync's `done` future, and run_sync
 * returns its result. A second run_sync shows the timeout. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <ioloop.h>

/* On an executor thread: may block. Returns 0 and a result, or -errno. */
static int sum_squares(void *arg, void **result)
{
    uintptr_t n = (uintptr_t)arg;
    uintptr_t sum = 0;
    for (uintptr_t i = 1; i <= n; i++)
        sum += i * i;
    usleep(20000); /* pretend it was slow I/O */
    *result = (void *)sum;
    return 0;
}

/* On the loop thread, once the executor's future is done. */
static void on_sum(iol_future *f, void *arg)
{
    iol_future *done = arg;
    void *sum;
    int err = iol_future_result(f, &sum);
    if (err < 0)
        iol_future_set_error(done, err);
    else
        iol_future_set_result(done, sum);
    iol_future_unref(done);
}

/* run_sync's fn, on the loop thread. Returning < 0 ends run_sync at once. */
static int compute(iol_loop *loop, iol_future *done, void *arg)
{
    iol_future *work;
    int err = iol_loop_run_in_executor(loop, NULL, sum_squares, arg, &work);
    if (err < 0)
        return err;
    /* add_future holds its own reference on `work` until on_sum ran; we
     * keep one on `done` for on_sum. */
    err = iol_loop_add_future(loop, work, on_sum, iol_future_ref(done));
    iol_future_unref(work);
    if (err < 0)
        iol_future_unref(done);
    return err;
}

/* Never resolves `done`: run_sync gives up after its timeout. */
static int never_done(iol_loop *loop, iol_future *done, void *arg)
{
    (void)loop, (void)done, (void)arg;
    return 0;
}

int main(void)
{
    iol_loop *loop;
    if (iol_loop_new(&loop, NULL) < 0)
        return 1;

    void *result = NULL;
    int err = iol_loop_run_sync(loop, compute, (void *)(uintptr_t)1000, 5.0, &result);
    printf("run_sync: %d, sum of squares 1..1000 = %lu\n", err, (unsigned long)(uintptr_t)result);

    err = iol_loop_run_sync(loop, never_done, NULL, 0.1, &result);
    printf("run_sync with 0.1 s timeout: %s\n", err == -ETIMEDOUT ? "-ETIMEDOUT" : iol_strerror(err));

    /* The default executor belongs to the loop and goes with it. */
    iol_loop_close(loop, false);
    return 0;
}
