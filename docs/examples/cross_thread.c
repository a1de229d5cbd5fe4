/* docs/examples/cross_thread.c — other threads post callbacks into a loop.
 *
 * Two producer threads each post 100000 callbacks with add_callback (lock-
 * free, any thread). Each callback runs on the loop's thread; callbacks of
 * one producer run in the order it posted them. The last one stops the
 * loop. The loop holds no lock and the producers never wait for it. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include <ioloop.h>

#define PRODUCERS 2
#define PER_PRODUCER 100000

typedef struct producer producer;
typedef struct item {
    producer *from;
    uint64_t seq;
} item;
struct producer {
    iol_loop *loop;
    uint64_t expected; /* loop thread only: next sequence number */
    item items[PER_PRODUCER];
};

static iol_loop *loop;
static unsigned ran;         /* loop thread only */
static bool in_order = true; /* loop thread only */

static void on_item(void *arg)
{
    item *it = arg;
    if (it->seq != it->from->expected++)
        in_order = false;
    if (++ran == PRODUCERS * PER_PRODUCER)
        iol_loop_stop(loop);
}

static void *produce(void *arg)
{
    producer *p = arg;
    for (uint64_t i = 0; i < PER_PRODUCER; i++) {
        p->items[i] = (item){ .from = p, .seq = i };
        if (iol_loop_add_callback(p->loop, on_item, &p->items[i]) < 0)
            return NULL;
    }
    return NULL;
}

int main(void)
{
    static producer producers[PRODUCERS];
    if (iol_loop_new(&loop, NULL) < 0)
        return 1;
    pthread_t threads[PRODUCERS];
    for (unsigned i = 0; i < PRODUCERS; i++) {
        producers[i].loop = loop;
        pthread_create(&threads[i], NULL, produce, &producers[i]);
    }
    /* The producers may start before or after the loop: callbacks wait in
     * the queue, and a sleeping loop is woken by at most one eventfd write
     * per sleep. */
    iol_loop_start(loop);
    for (unsigned i = 0; i < PRODUCERS; i++)
        pthread_join(threads[i], NULL);
    printf("ran %u callbacks from %d threads, per-producer order kept: %s\n", ran, PRODUCERS,
           in_order ? "yes" : "NO");
    iol_loop_close(loop, false);
    return in_order ? 0 : 1;
}
