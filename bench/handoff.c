/* iol-bench handoff — P producer threads post N empty callbacks to one
 * loop running on its own thread.
 *
 * Method: a fresh loop per run. Producers meet at a barrier; the thread
 * posts first stamps t0 just before, and the consumer stamps t_end when the
 * N-th callback runs, so the rate is N / (t_end - t0): from the first
 * post to the last callback. Every impl runs the same callback (a counter
 * and a compare), called once per post. Competitors run in the same
 * process, interleaved (ioloop, libuv, libevent, tornado, floor, ioloop,
 * ...), and a table shows min / median / max over the repeats.
 *
 * Wakeups per callback: eventfd/pipe writes made to wake the consumer,
 * divided by N. ioloop: iol_loop_get_stats' wakeups. libuv: async_cb calls (libuv
 * writes its eventfd once per 0 -> 1 transition of the handle's pending
 * flag and clears it before calling async_cb, so writes == calls).
 * Tornado design: pipe writes, counted. libevent hides its notify writes,
 * the floor never sleeps: not reported. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "bench/bench.h"
#include "ioloop.h"
#include "sync/cbqueue.h"

#define DEFAULT_COUNT 2000000ull
#define MAX_PRODUCERS 64

typedef struct hnode {
    struct hnode *next;
    iol_callback_fn fn;
    void *arg;
} hnode;

typedef struct hctx hctx;

typedef struct himpl {
    const char *impl, *label;
    int (*setup)(hctx *c);
    void (*run)(hctx *c);           /* consumer thread: loop until done */
    int (*post)(hctx *c);           /* producer thread: one callback */
    void (*on_done)(hctx *c);       /* consumer: the N-th callback ran */
    void (*teardown)(hctx *c);
    bool counts_wakeups;
} himpl;

struct hctx {
    const himpl *im;
    const bench_opts *o;
    unsigned producers;
    uint64_t quota[MAX_PRODUCERS];  /* count mode */
    bool by_duration;

    /* Consumer side; `ran` is atomic only so the progress line can read it
     * (relaxed load and store: a plain mov on x86, no RMW). */
    _Atomic uint64_t ran;
    _Atomic uint64_t target;        /* UINT64_MAX until known (duration mode) */
    _Atomic uint64_t t0;
    uint64_t t_end;
    uint64_t wakeups;
    _Atomic bool ready, finished, time_up;
    _Atomic uint64_t pushed_total;
    _Atomic unsigned producers_done;
    pthread_barrier_t start;

    /* ioloop */
    iol_loop *loop;
    double spin_us;                 /* iol_loop_config.spin_us */
    const char *poller;             /* iol_loop_config.poller */
    /* libuv idiom */
    uv_loop_t uvl;
    uv_async_t async;
    pthread_mutex_t mu;
    hnode *head, *tail;
    /* libevent */
    struct event_base *base;
    /* tornado design: a growable array swapped with the consumer's */
    struct {
        iol_callback_fn fn;
        void *arg;
    } *pending, *running;
    size_t pending_len, pending_cap, running_cap;
    int pipefd[2];
    bool tdone;
    bool tlist;    /* tornado-design: a list of allocated closures */
    /* floor */
    iol__cbqueue *q;
    _Atomic bool floor_done;
};

static void handoff_cb(void *arg)
{
    hctx *c = arg;
    uint64_t n = atomic_load_explicit(&c->ran, memory_order_relaxed) + 1;
    atomic_store_explicit(&c->ran, n, memory_order_relaxed);
    /* relaxed: in duration mode the store of target happens-before the
     * last post, and every post happens-before its callback (the queues
     * synchronise), so the callback that completes the count sees it. */
    if (n == atomic_load_explicit(&c->target, memory_order_relaxed)) {
        c->t_end = bench_now_ns();
        c->im->on_done(c);
    }
}

/* ------------------------------------------------------------- ioloop */

static int iol_setup(hctx *c)
{
    return iol_loop_new(&c->loop, &(iol_loop_config){.make_current = IOL_CURRENT_NEVER, .spin_us = c->spin_us, .poller = c->poller});
}
static void iol_run(hctx *c)
{
    atomic_store(&c->ready, true);
    iol_loop_start(c->loop);
    iol_loop_stats st;
    c->wakeups = iol_loop_get_stats(c->loop, &st, sizeof st) == 0 ? st.wakeups : 0;
}
static int iol_post(hctx *c) { return iol_loop_add_callback(c->loop, handoff_cb, c); }
static void iol_done(hctx *c) { iol_loop_stop(c->loop); }
static void iol_teardown(hctx *c) { iol_loop_close(c->loop, false); }

/* ------------------------------------- libuv: mutex queue + uv_async_send */

/* The mutex-protected list of allocated closures both the libuv idiom and
 * Tornado's design use. Append: the caller holds c->mu; returns whether
 * the list was empty. */
static bool locked_list_append(hctx *c, hnode *n)
{
    bool was_empty = c->head == NULL;
    if (c->tail)
        c->tail->next = n;
    else
        c->head = n;
    c->tail = n;
    return was_empty;
}
static hnode *new_closure(hctx *c)
{
    hnode *n = malloc(sizeof *n);
    if (n)
        *n = (hnode){ .fn = handoff_cb, .arg = c };
    return n;
}
/* Takes the whole list under the lock, runs and frees it outside. */
static void locked_list_run(hctx *c)
{
    pthread_mutex_lock(&c->mu);
    hnode *n = c->head;
    c->head = c->tail = NULL;
    pthread_mutex_unlock(&c->mu);
    while (n) {
        hnode *next = n->next;
        n->fn(n->arg);
        free(n);
        n = next;
    }
}

static void uv_drain(uv_async_t *a)
{
    hctx *c = a->data;
    c->wakeups++;
    locked_list_run(c);
}
static int uvi_setup(hctx *c)
{
    int err = uv_loop_init(&c->uvl);
    if (err)
        return err;
    c->async.data = c;
    pthread_mutex_init(&c->mu, NULL);
    c->head = c->tail = NULL;
    return uv_async_init(&c->uvl, &c->async, uv_drain);
}
static void uvi_run(hctx *c)
{
    atomic_store(&c->ready, true);
    uv_run(&c->uvl, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&c->async, NULL);
    uv_run(&c->uvl, UV_RUN_DEFAULT);
}
static int uvi_post(hctx *c)
{
    hnode *n = new_closure(c);
    if (!n)
        return -ENOMEM;
    pthread_mutex_lock(&c->mu);
    locked_list_append(c, n);
    pthread_mutex_unlock(&c->mu);
    return uv_async_send(&c->async);
}
static void uvi_done(hctx *c) { uv_stop(&c->uvl); }
static void uvi_teardown(hctx *c)
{
    uv_loop_close(&c->uvl);
    pthread_mutex_destroy(&c->mu);
}

/* ---------------------------------------- libevent: event_base_once */

static void ev_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    handoff_cb(arg);
}
static int ev_setup(hctx *c)
{
    c->base = event_base_new();
    return c->base ? 0 : -ENOMEM;
}
static void ev_run(hctx *c)
{
    atomic_store(&c->ready, true);
    event_base_loop(c->base, EVLOOP_NO_EXIT_ON_EMPTY);
}
static int ev_post(hctx *c)
{
    /* A zero timeout makes event_base_once activate the event at once, in
     * order, and notify the base (libevent 2.1's "schedule a callback"
     * idiom). */
    static const struct timeval zero = {0, 0};
    return event_base_once(c->base, -1, EV_TIMEOUT, ev_cb, c, &zero) == 0 ? 0 : -ENOMEM;
}
static void ev_done(hctx *c) { event_base_loopbreak(c->base); }
static void ev_teardown(hctx *c) { event_base_free(c->base); }

/* ------------------- Tornado's design: locked list + pipe when it was empty
 *
 * Tornado (PollIOLoop.add_callback) appends a functools.partial to a list
 * under a lock and writes the waker pipe only when the list was empty; the
 * loop swaps the list out under the lock and runs it. "tornado-design"
 * ports exactly that: one allocated closure per callback, like the
 * partial. "tornado-array" is a more generous variant that stores fn/arg
 * inline in a swapped array and allocates nothing per callback. */

static int tor_setup_common(hctx *c, bool list)
{
    c->pending_len = 0;
    c->head = c->tail = NULL;
    c->tdone = false;
    c->tlist = list;
    pthread_mutex_init(&c->mu, NULL);
    return pipe2(c->pipefd, O_NONBLOCK | O_CLOEXEC) == 0 ? 0 : -errno;
}
static int tor_setup(hctx *c) { return tor_setup_common(c, true); }
static int tora_setup(hctx *c) { return tor_setup_common(c, false); }

/* Under the lock: wake only for the first callback, as Tornado does. */
static int tor_wake_if(hctx *c, bool was_empty)
{
    if (!was_empty)
        return 0;
    c->wakeups++;
    if (write(c->pipefd[1], "x", 1) < 0 && errno != EAGAIN)
        return -errno;
    return 0;
}

static int tor_post(hctx *c)
{
    hnode *n = new_closure(c); /* the partial */
    if (!n)
        return -ENOMEM;
    pthread_mutex_lock(&c->mu);
    int err = tor_wake_if(c, locked_list_append(c, n));
    pthread_mutex_unlock(&c->mu);
    return err;
}
static int tora_post(hctx *c)
{
    pthread_mutex_lock(&c->mu);
    bool was_empty = c->pending_len == 0;
    if (c->pending_len == c->pending_cap) {
        size_t cap = c->pending_cap ? 2 * c->pending_cap : 1024;
        void *p = realloc(c->pending, cap * sizeof *c->pending);
        if (!p) {
            pthread_mutex_unlock(&c->mu);
            return -ENOMEM;
        }
        c->pending = p;
        c->pending_cap = cap;
    }
    c->pending[c->pending_len].fn = handoff_cb;
    c->pending[c->pending_len].arg = c;
    c->pending_len++;
    int err = tor_wake_if(c, was_empty);
    pthread_mutex_unlock(&c->mu);
    return err;
}

/* Swaps the pending callbacks out under the lock and runs them outside
 * it (Tornado's loop); returns whether more arrived meanwhile. */
static bool tor_run_batch(hctx *c)
{
    if (c->tlist) {
        locked_list_run(c);
    } else {
        pthread_mutex_lock(&c->mu);
        size_t n = c->pending_len;
        void *batch = c->pending;
        size_t cap = c->pending_cap;
        c->pending = (void *)c->running;
        c->pending_cap = c->running_cap;
        c->pending_len = 0;
        c->running = batch;
        c->running_cap = cap;
        pthread_mutex_unlock(&c->mu);
        for (size_t i = 0; i < n; i++)
            c->running[i].fn(c->running[i].arg);
    }
    pthread_mutex_lock(&c->mu);
    bool more = c->tlist ? c->head != NULL : c->pending_len != 0;
    pthread_mutex_unlock(&c->mu);
    return more;
}

static void tor_run(hctx *c)
{
    atomic_store(&c->ready, true);
    struct pollfd pfd = {.fd = c->pipefd[0], .events = POLLIN};
    for (;;) {
        bool more = tor_run_batch(c);
        if (c->tdone)
            break;
        if (poll(&pfd, 1, more ? 0 : 3600 * 1000) > 0 && (pfd.revents & POLLIN)) {
            char buf[256];
            while (read(c->pipefd[0], buf, sizeof buf) > 0)
                ;
        }
    }
}
static void tor_done(hctx *c) { c->tdone = true; }
static void tor_teardown(hctx *c)
{
    /* Posts made after the N-th callback (duration mode) never ran. */
    for (hnode *n = c->head, *next; n; n = next) {
        next = n->next;
        free(n);
    }
    c->head = c->tail = NULL;
    close(c->pipefd[0]);
    close(c->pipefd[1]);
    pthread_mutex_destroy(&c->mu);
}

/* ------------------------- the floor: the sync queue alone, spinning */

static int floor_setup(hctx *c)
{
    atomic_store(&c->floor_done, false);
    return iol__cbqueue_new(&c->q, 0);
}
static void floor_run(hctx *c)
{
    atomic_store(&c->ready, true);
    iol__cbbatch b;
    iol_callback_fn fn;
    void *arg;
    while (!atomic_load_explicit(&c->floor_done, memory_order_relaxed)) {
        if (!iol__cbqueue_take(c->q, &b)) {
            bench_cpu_relax();
            continue;
        }
        while (iol__cbbatch_next(&b, &fn, &arg))
            fn(arg);
    }
}
static int floor_post(hctx *c) { return iol__cbqueue_push(c->q, handoff_cb, c); }
static void floor_done_fn(hctx *c) { atomic_store_explicit(&c->floor_done, true, memory_order_relaxed); }
static void floor_teardown(hctx *c) { iol__cbqueue_free(c->q); }

static const himpl impls[] = {
    {"ioloop", "ioloop", iol_setup, iol_run, iol_post, iol_done, iol_teardown, true},
    {"libuv", "libuv-idiom", uvi_setup, uvi_run, uvi_post, uvi_done, uvi_teardown, true},
    {"libevent", "libevent-once", ev_setup, ev_run, ev_post, ev_done, ev_teardown, false},
    {"tornado-design", "tornado-design", tor_setup, tor_run, tor_post, tor_done, tor_teardown, true},
    {"tornado-array", "tornado-array", tora_setup, tor_run, tora_post, tor_done, tor_teardown, true},
    {"floor", "floor-cbqueue", floor_setup, floor_run, floor_post, floor_done_fn, floor_teardown, false},
};
#define NIMPLS (sizeof impls / sizeof impls[0])

/* -------------------------------------------------------------- driver */

typedef struct producer {
    hctx *c;
    unsigned index;
} producer;

static void post_or_die(hctx *c)
{
    int err = c->im->post(c);
    if (err < 0) {
        fprintf(stderr, "iol-bench handoff: %s post failed: %s\n", c->im->label, iol_strerror(err));
        exit(1);
    }
}

static void *producer_main(void *p)
{
    producer *pr = p;
    hctx *c = pr->c;
    bench_pin_self(c->o, pr->index + 1);
    pthread_barrier_wait(&c->start);
    /* t0 is the earliest producer's stamp, taken before its first post:
     * a producer preempted after the barrier must not start the clock late. */
    uint64_t now = bench_now_ns(), t0 = atomic_load(&c->t0);
    while (now < t0 && !atomic_compare_exchange_weak(&c->t0, &t0, now))
        ;
    if (!c->by_duration) {
        for (uint64_t i = 0; i < c->quota[pr->index]; i++)
            post_or_die(c);
        return NULL;
    }
    uint64_t n = 0;
    while (!atomic_load_explicit(&c->time_up, memory_order_relaxed)) {
        for (int k = 0; k < 256; k++)
            post_or_die(c);
        n += 256;
    }
    atomic_fetch_add(&c->pushed_total, n);
    if (atomic_fetch_add(&c->producers_done, 1) + 1 == c->producers) {
        /* The last producer fixes the target, then posts one more
         * callback so the count is reached after the store (see handoff_cb). */
        atomic_store(&c->target, atomic_load(&c->pushed_total) + 1);
        post_or_die(c);
    }
    return NULL;
}

static void *consumer_main(void *p)
{
    hctx *c = p;
    bench_pin_self(c->o, 0);
    c->im->run(c);
    atomic_store(&c->finished, true);
    return NULL;
}

/* One run; returns callbacks/s and sets *wakeups_per_cb (NaN if unknown). */
static double run_once(const himpl *im, const bench_opts *o, unsigned producers, uint64_t count, double spin_us,
                       const char *poller, double *wpc)
{
    hctx *c = calloc(1, sizeof *c);
    if (!c)
        exit(1);
    c->im = im;
    c->spin_us = spin_us;
    c->poller = poller;
    c->o = o;
    c->producers = producers;
    c->by_duration = o->duration > 0;
    atomic_store(&c->target, c->by_duration ? UINT64_MAX : count);
    atomic_store(&c->t0, UINT64_MAX);
    for (unsigned i = 0; i < producers; i++)
        c->quota[i] = count / producers + (i == 0 ? count % producers : 0);
    int err = im->setup(c);
    if (err < 0) {
        fprintf(stderr, "iol-bench handoff: %s setup failed: %s\n", im->label, iol_strerror(err));
        exit(1);
    }
    pthread_barrier_init(&c->start, NULL, producers);
    pthread_t consumer, th[MAX_PRODUCERS];
    producer pr[MAX_PRODUCERS];
    pthread_create(&consumer, NULL, consumer_main, c);
    while (!atomic_load(&c->ready))
        usleep(100);
    for (unsigned i = 0; i < producers; i++) {
        pr[i] = (producer){c, i};
        pthread_create(&th[i], NULL, producer_main, &pr[i]);
    }
    char what[64];
    snprintf(what, sizeof what, "handoff P=%u %s", producers, im->label);
    uint64_t started = bench_now_ns();
    while (!atomic_load(&c->finished)) {
        usleep(20000);
        double el = (double)(bench_now_ns() - started) / 1e9;
        bench_progress(what, el, (double)atomic_load_explicit(&c->ran, memory_order_relaxed) / el, "cb/s");
        if (c->by_duration && el >= o->duration)
            atomic_store(&c->time_up, true);
    }
    pthread_join(consumer, NULL);
    for (unsigned i = 0; i < producers; i++)
        pthread_join(th[i], NULL);
    uint64_t n = atomic_load(&c->ran);
    double secs = (double)(c->t_end - c->t0) / 1e9;
    *wpc = im->counts_wakeups ? (double)c->wakeups / (double)n : NAN;
    im->teardown(c);
    pthread_barrier_destroy(&c->start);
    free(c->pending);
    free(c->running);
    free(c);
    return (double)n / secs;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: iol-bench handoff [--producers 1,2,4] [--count N] [--duration S] [--repeat R]\n"
               "                        [--spin-us 0,5,-1] [--poller epoll,uring] [--pin] [--json] [--plot F.svg]\n"
               "P producer threads post N empty callbacks (default %llu per run, split over\n"
               "the producers) to one loop on its own thread. Impls, interleaved per repeat:\n"
               "ioloop, libuv (mutex queue + uv_async_send), libevent (event_base_once),\n"
               "tornado-design (locked list of allocated closures + pipe written when it was\n"
               "empty, as Tornado's add_callback), tornado-array (the same with an inline\n"
               "array, no allocation per callback), floor\n"
               "(the sync queue with a spinning consumer, no loop).\n"
               "Figures: callbacks/s (first post to last callback), wakeups per callback.\n"
               "--spin-us: one ioloop row per iol_loop_config.spin_us value (default 0,\n"
               "adaptive; 5 is the old fixed spin, -1 never spins).\n"
               "--poller: those ioloop rows once per poller (label suffix -NAME).\n\n",
            DEFAULT_COUNT);
    bench_usage_common(f);
}

static const bench_fig_spec figs[] = {
    {"callbacks_per_sec", "callbacks/s", true, false},
    {"wakeups_per_callback", "wakeups/cb", false, true},
};

int bench_handoff(int argc, char **argv, const bench_opts *o)
{
    unsigned plist[8] = {1, 2, 4};
    int np = 3;
    bench_spin_rows spins;
    bench_spin_rows_default(&spins);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        int used = bench_spin_rows_parse(&spins, argc, argv, i);
        if (used < 0)
            return 2;
        if (used > 0) {
            i += used - 1;
            continue;
        }
        const char *list = NULL;
        if (strcmp(argv[i], "--producers") == 0 && i + 1 < argc)
            list = argv[++i];
        else if (strncmp(argv[i], "--producers=", 12) == 0)
            list = argv[i] + 12;
        if (!list) {
            fprintf(stderr, "iol-bench handoff: unknown argument '%s'\n\n", argv[i]);
            usage(stderr);
            return 2;
        }
        np = 0;
        for (char *end; *list && np < 8; list = *end ? end + 1 : end) {
            unsigned long v = strtoul(list, &end, 10);
            if (end == list || v < 1 || v > MAX_PRODUCERS || (*end && *end != ',')) {
                fprintf(stderr, "iol-bench handoff: --producers wants e.g. 1,2,4 (1..%d)\n", MAX_PRODUCERS);
                return 2;
            }
            plist[np++] = (unsigned)v;
        }
    }
    if (evthread_use_pthreads() != 0) {
        fprintf(stderr, "iol-bench handoff: evthread_use_pthreads failed\n");
        return 1;
    }
    uint64_t count = o->count ? o->count : DEFAULT_COUNT;
    bench_report *reports[8];
    for (int k = 0; k < np; k++) {
        unsigned p = plist[k];
        bench_report *r = reports[k] = malloc(sizeof *r);
        if (!r)
            return 1;
        bench_report_init(r, "handoff", figs, 2);
        snprintf(r->title, sizeof r->title, "handoff  P=%u", p);
        if (o->duration > 0)
            snprintf(r->params_json, sizeof r->params_json, "{\"producers\":%u,\"duration\":%g,\"pin\":%s}", p,
                     o->duration, o->pin ? "true" : "false");
        else
            snprintf(r->params_json, sizeof r->params_json,
                     "{\"producers\":%u,\"count\":%llu,\"pin\":%s}", p, (unsigned long long)count,
                     o->pin ? "true" : "false");
        /* Rep -1 only fixes the row order: each ioloop spin setting first. */
        for (int rep = -1; rep < o->repeat; rep++)
            for (size_t i = 0; i < NIMPLS; i++) {
                bool ours = impls[i].setup == iol_setup;
                for (int s = 0; s < (ours ? spins.n : 1); s++) {
                    const char *label = ours ? spins.label[s] : impls[i].label;
                    if (!bench_selected(o, impls[i].impl, label))
                        continue;
                    int row = bench_report_impl(r, impls[i].impl, label);
                    if (rep < 0)
                        continue;
                    double wpc;
                    double rate = run_once(&impls[i], o, p, count, ours ? spins.us[s] : 0,
                                           ours ? spins.poller[s] : NULL, &wpc);
                    bench_report_add(r, row, 0, rate);
                    bench_report_add(r, row, 1, wpc);
                }
            }
        bench_report_print(r, o);
        bench_report_target(r, o, 0, "libuv-idiom", p == 1 ? 3 : 2);
        if (p == 1)
            bench_report_target(r, o, 0, "tornado-design", 5);
        bench_report_target(r, o, 0, "floor-cbqueue", 0.5);
        double lo, med, hi;
        if (strcmp(r->impls[0].impl, "ioloop") == 0 && bench_stats(&r->impls[0], 1, &lo, &med, &hi))
            fprintf(o->json ? stderr : stdout,
                    "  %-18s ioloop wakeups per callback %.2g (max %.2g)  (target <= 0.001)  %s\n\n", r->title,
                    med, hi, med <= 0.001 ? "met" : "MISSED");
    }
    int rc = bench_plot(o, reports, np) < 0 ? 1 : 0;
    for (int k = 0; k < np; k++)
        free(reports[k]);
    return rc;
}
