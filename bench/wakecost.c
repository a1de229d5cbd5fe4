/* iol-bench wakecost — what being woken costs the loop thread: one
 * producer posts one empty callback every GAP µs to a loop on its own
 * thread, and we divide the loop thread's CPU time by the callbacks.
 *
 * Method: a fresh loop per run. The producer paces itself with an absolute
 * clock_nanosleep (timer slack set to 1 ns, so the kernel does not round a
 * 10 µs sleep up to 60 µs); when it wakes late it does not post a burst to
 * catch up, so the gap stays a gap (the table shows the mean gap achieved).
 * GAP 0 is a flood, bounded to a backlog of FLOOD_BACKLOG callbacks so no
 * queue grows without end. The first callback reads the loop thread's CPU
 * clock (CLOCK_THREAD_CPUTIME_ID: getrusage(RUSAGE_THREAD)'s user + system
 * with ns resolution), a final stop callback reads it
 * again: CPU per callback is the difference over the callbacks between,
 * so start-up and shut-down are out of it. Competitors run in the same
 * process, interleaved per repeat and per gap (ioloop, libuv, libevent).
 *
 * This is the cost a sleeping loop pays: a post wakes it (eventfd read,
 * epoll_wait return, the scheduler), it runs the callback and goes back to
 * sleep, unless its policy spins first (ioloop's pre-sleep spin: a spin
 * that fails costs its length on top of the sleep). */
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "bench/bench.h"
#include "ioloop.h"
#include "loop/loop_impl.h" /* the spin policy's counters */

#define DEFAULT_DURATION 2.0
#define FLOOD_BACKLOG 4096
#define MAX_GAPS 16

typedef struct wnode {
    struct wnode *next;
    void (*fn)(void *arg);
    void *arg;
} wnode;

typedef struct wctx wctx;
typedef struct wimpl {
    const char *impl, *label;
    int (*setup)(wctx *c);
    void (*run)(wctx *c);           /* loop thread, until stopped */
    int (*post)(wctx *c, void (*fn)(void *), void *arg); /* producer */
    void (*stop)(wctx *c);          /* loop thread, inside the stop callback */
    void (*teardown)(wctx *c);
    bool counts_wakeups;
} wimpl;

struct wctx {
    const wimpl *im;
    const bench_opts *o;
    double spin_us;                 /* ioloop: iol_loop_config.spin_us */
    const char *poller;             /* ioloop: iol_loop_config.poller */
    /* Loop thread; `ran` is atomic for the producer's backlog bound and the
     * progress line (relaxed: a count, nothing is published through it). */
    _Atomic uint64_t ran;
    uint64_t ran_at_stop;
    double cpu0, cpu1;              /* thread CPU seconds at first / stop */
    uint64_t t0, t1;                /* wall ns at first / stop */
    uint64_t wakeups0, wakeups1;
    uint64_t spins0, spins1;        /* ioloop: pre-sleep spins started */
    _Atomic bool ready, finished;
    /* ioloop */
    iol_loop *loop;
    /* libuv idiom */
    uv_loop_t uvl;
    uv_async_t async;
    pthread_mutex_t mu;
    wnode *head, *tail;
    uint64_t uv_wakeups;
    /* libevent */
    struct event_base *base;
};

/* The calling thread's CPU time, user + system: the figure of
 * getrusage(RUSAGE_THREAD), read with ns resolution. */
static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t impl_wakeups(wctx *c);

static void counted_cb(void *arg)
{
    wctx *c = arg;
    uint64_t n = atomic_load_explicit(&c->ran, memory_order_relaxed) + 1;
    atomic_store_explicit(&c->ran, n, memory_order_relaxed);
    if (n == 1) {
        c->cpu0 = thread_cpu_s();
        c->t0 = bench_now_ns();
        c->wakeups0 = impl_wakeups(c);
        c->spins0 = c->loop ? c->loop->spin.spins : 0;
    }
}

static void stop_cb(void *arg)
{
    wctx *c = arg;
    c->cpu1 = thread_cpu_s();
    c->t1 = bench_now_ns();
    c->wakeups1 = impl_wakeups(c);
    c->spins1 = c->loop ? c->loop->spin.spins : 0;
    c->ran_at_stop = atomic_load_explicit(&c->ran, memory_order_relaxed);
    c->im->stop(c);
}

/* ------------------------------------------------------------- ioloop */

static int iol_setup(wctx *c)
{
    iol_loop_config cfg = {.make_current = IOL_CURRENT_NEVER, .spin_us = c->spin_us, .poller = c->poller};
    return iol_loop_new(&c->loop, &cfg);
}
static void iol_run(wctx *c)
{
    atomic_store(&c->ready, true);
    iol_loop_start(c->loop);
}
static int iol_post(wctx *c, void (*fn)(void *), void *arg) { return iol_loop_add_callback(c->loop, fn, arg); }
static void iol_stop_fn(wctx *c) { iol_loop_stop(c->loop); }
static void iol_teardown(wctx *c) { iol_loop_close(c->loop, false); }

/* ------------------------------------- libuv: mutex queue + uv_async_send */

static void uv_drain(uv_async_t *a)
{
    wctx *c = a->data;
    c->uv_wakeups++;
    pthread_mutex_lock(&c->mu);
    wnode *n = c->head;
    c->head = c->tail = NULL;
    pthread_mutex_unlock(&c->mu);
    while (n) {
        wnode *next = n->next;
        n->fn(n->arg);
        free(n);
        n = next;
    }
}
static int uvi_setup(wctx *c)
{
    int err = uv_loop_init(&c->uvl);
    if (err)
        return err;
    c->async.data = c;
    pthread_mutex_init(&c->mu, NULL);
    c->head = c->tail = NULL;
    return uv_async_init(&c->uvl, &c->async, uv_drain);
}
static void uvi_run(wctx *c)
{
    atomic_store(&c->ready, true);
    uv_run(&c->uvl, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&c->async, NULL);
    uv_run(&c->uvl, UV_RUN_DEFAULT);
}
static int uvi_post(wctx *c, void (*fn)(void *), void *arg)
{
    wnode *n = malloc(sizeof *n);
    if (!n)
        return -ENOMEM;
    *n = (wnode){.fn = fn, .arg = arg};
    pthread_mutex_lock(&c->mu);
    if (c->tail)
        c->tail->next = n;
    else
        c->head = n;
    c->tail = n;
    pthread_mutex_unlock(&c->mu);
    return uv_async_send(&c->async);
}
static void uvi_stop(wctx *c) { uv_stop(&c->uvl); }
static void uvi_teardown(wctx *c)
{
    uv_loop_close(&c->uvl);
    pthread_mutex_destroy(&c->mu);
}

/* ---------------------------------------- libevent: event_base_once */

typedef struct ev_call {
    void (*fn)(void *);
    void *arg;
} ev_call;

static void ev_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ev_call call = *(ev_call *)arg;
    free(arg);
    call.fn(call.arg);
}
static void ev_cb_counted(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    counted_cb(arg);
}
static int ev_setup(wctx *c)
{
    c->base = event_base_new();
    return c->base ? 0 : -ENOMEM;
}
static void ev_run(wctx *c)
{
    atomic_store(&c->ready, true);
    event_base_loop(c->base, EVLOOP_NO_EXIT_ON_EMPTY);
}
static int ev_post(wctx *c, void (*fn)(void *), void *arg)
{
    static const struct timeval zero = {0, 0};
    if (fn == counted_cb) /* the common case needs no closure */
        return event_base_once(c->base, -1, EV_TIMEOUT, ev_cb_counted, arg, &zero) == 0 ? 0 : -ENOMEM;
    ev_call *call = malloc(sizeof *call);
    if (!call)
        return -ENOMEM;
    *call = (ev_call){fn, arg};
    return event_base_once(c->base, -1, EV_TIMEOUT, ev_cb, call, &zero) == 0 ? 0 : -ENOMEM;
}
static void ev_stop(wctx *c) { event_base_loopbreak(c->base); }
static void ev_teardown(wctx *c) { event_base_free(c->base); }

static const wimpl impls[] = {
    {"ioloop", "ioloop", iol_setup, iol_run, iol_post, iol_stop_fn, iol_teardown, true},
    {"libuv", "libuv-idiom", uvi_setup, uvi_run, uvi_post, uvi_stop, uvi_teardown, true},
    {"libevent", "libevent-once", ev_setup, ev_run, ev_post, ev_stop, ev_teardown, false},
};
#define NIMPLS (sizeof impls / sizeof impls[0])

/* eventfd writes made to wake the loop (libuv: async_cb calls, see
 * handoff.c); libevent hides its notify writes. */
static uint64_t impl_wakeups(wctx *c)
{
    iol_loop_stats st;
    if (c->im->setup == iol_setup)
        return iol_loop_get_stats(c->loop, &st, sizeof st) == 0 ? st.wakeups : 0;
    return c->uv_wakeups;
}

/* -------------------------------------------------------------- driver */

typedef struct wrun {
    wctx *c;
    double duration;
    uint64_t count;                 /* posts; 0: by duration */
    unsigned gap_us;
} wrun;

static void post_or_die(wctx *c, void (*fn)(void *))
{
    int err = c->im->post(c, fn, c);
    if (err < 0) {
        fprintf(stderr, "iol-bench wakecost: %s post failed: %s\n", c->im->label, iol_strerror(err));
        exit(1);
    }
}

static void timespec_add_ns(struct timespec *t, uint64_t ns)
{
    t->tv_nsec += (long)(ns % 1000000000u);
    t->tv_sec += (time_t)(ns / 1000000000u) + t->tv_nsec / 1000000000L;
    t->tv_nsec %= 1000000000L;
}

static bool before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static void *producer_main(void *p)
{
    wrun *w = p;
    wctx *c = w->c;
    bench_pin_self(c->o, 1);
    /* The default 50 µs of timer slack would turn every gap below it into
     * about 50 µs. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    uint64_t gap_ns = (uint64_t)w->gap_us * 1000u;
    uint64_t end = bench_now_ns() + (uint64_t)(w->duration * 1e9);
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (uint64_t posted = 0;;) {
        /* A flood looks at the clock and at the backlog every 64 posts
         * only: both are cache misses or syscalls that would slow the
         * producer (and `ran` is the consumer's line). */
        bool check = gap_ns > 0 || posted % 64 == 0;
        if (w->count ? posted >= w->count : check && bench_now_ns() >= end)
            break;
        if (gap_ns == 0) {
            /* Flood, with a bounded backlog. */
            while (check && posted - atomic_load_explicit(&c->ran, memory_order_relaxed) >= FLOOD_BACKLOG)
                sched_yield();
        } else if (posted > 0) {
            timespec_add_ns(&next, gap_ns);
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (before(&next, &now))
                next = now; /* late: no burst to catch up */
            else
                while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
                    ;
        }
        post_or_die(c, counted_cb);
        posted++;
    }
    post_or_die(c, stop_cb);
    return NULL;
}

static void *consumer_main(void *p)
{
    wctx *c = p;
    bench_pin_self(c->o, 0);
    c->im->run(c);
    atomic_store(&c->finished, true);
    return NULL;
}

typedef struct wresult {
    double cpu_us_per_cb, gap_us, wakeups_per_cb, cb_per_sec, spins_per_cb;
} wresult;

static wresult run_once(const wimpl *im, const bench_opts *o, unsigned gap_us, double spin_us, const char *poller)
{
    wctx *c = calloc(1, sizeof *c);
    if (!c)
        exit(1);
    c->im = im;
    c->spin_us = spin_us;
    c->poller = poller;
    c->o = o;
    int err = im->setup(c);
    if (err < 0) {
        fprintf(stderr, "iol-bench wakecost: %s setup failed: %s\n", im->label, strerror(err < 0 ? -err : err));
        exit(1);
    }
    wrun w = {c, o->duration > 0 ? o->duration : DEFAULT_DURATION, o->count, gap_us};
    pthread_t consumer, producer;
    pthread_create(&consumer, NULL, consumer_main, c);
    while (!atomic_load(&c->ready))
        usleep(100);
    usleep(1000); /* let the loop fall asleep */
    pthread_create(&producer, NULL, producer_main, &w);
    char what[64];
    snprintf(what, sizeof what, "wakecost gap=%uus %s", gap_us, im->label);
    uint64_t started = bench_now_ns();
    while (!atomic_load(&c->finished)) {
        usleep(20000);
        double el = (double)(bench_now_ns() - started) / 1e9;
        bench_progress(what, el, (double)atomic_load_explicit(&c->ran, memory_order_relaxed) / el, "cb/s");
    }
    pthread_join(consumer, NULL);
    pthread_join(producer, NULL);
    wresult r = {NAN, NAN, NAN, NAN, NAN};
    uint64_t n = c->ran_at_stop > 1 ? c->ran_at_stop - 1 : 0; /* callbacks after the first stamp */
    if (n > 0) {
        double secs = (double)(c->t1 - c->t0) / 1e9;
        r.cpu_us_per_cb = (c->cpu1 - c->cpu0) * 1e6 / (double)n;
        r.gap_us = secs * 1e6 / (double)n;
        r.cb_per_sec = (double)n / secs;
        if (im->counts_wakeups)
            r.wakeups_per_cb = (double)(c->wakeups1 - c->wakeups0) / (double)n;
        if (c->loop)
            r.spins_per_cb = (double)(c->spins1 - c->spins0) / (double)n;
    }
    im->teardown(c);
    free(c);
    return r;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: iol-bench wakecost [--gaps 0,10,30,60,200,1000] [--spin-us 0,5,-1] [--poller epoll,uring] [--duration S]\n"
               "                         [--count N] [--repeat R] [--pin] [--json] [--plot F.svg]\n"
               "One producer posts one empty callback every GAP us (0: a flood with a bounded\n"
               "backlog) to one loop on its own thread, for --duration seconds (default %g) or\n"
               "--count posts. Figure: the loop thread's CPU time (CLOCK_THREAD_CPUTIME_ID,\n"
               "user + system) per callback. Impls, interleaved per repeat and gap: ioloop,\n"
               "libuv (mutex queue + uv_async_send), libevent (event_base_once).\n"
               "--spin-us: one ioloop row per iol_loop_config.spin_us value (default 0,\n"
               "adaptive; 5 is the old fixed spin, -1 never spins).\n"
               "--poller: those ioloop rows once per poller (label suffix -NAME).\n\n",
            DEFAULT_DURATION);
    bench_usage_common(f);
}

static const bench_fig_spec figs[] = {
    {"cpu_us_per_callback", "loop CPU us/cb", true, true},
    {"gap_us", "gap us", false, true},
    {"wakeups_per_callback", "wakeups/cb", false, true},
    {"callbacks_per_sec", "callbacks/s", false, false},
    {"spins_per_callback", "spins/cb", false, true},
};
#define NFIGS (int)(sizeof figs / sizeof figs[0])

static int parse_gaps(const char *list, unsigned *gaps)
{
    int n = 0;
    for (char *end; *list && n < MAX_GAPS; list = *end ? end + 1 : end) {
        unsigned long v = strtoul(list, &end, 10);
        if (end == list || v > 1000000 || (*end && *end != ','))
            return -1;
        gaps[n++] = (unsigned)v;
    }
    return n;
}

/* The curve in one table: medians per gap, one column per row of the
 * reports, and ioloop over libuv. */
static void print_summary(bench_report *const *reports, const unsigned *gaps, int ngaps, const bench_opts *o)
{
    FILE *f = o->json ? stderr : stdout;
    const bench_report *r0 = reports[0];
    fprintf(f, "wakecost: loop-thread CPU us per callback (medians)\n%8s", "gap us");
    for (int j = 0; j < r0->nimpls; j++)
        fprintf(f, " %15s", r0->impls[j].label);
    fprintf(f, " %14s\n", "ioloop/libuv");
    for (int k = 0; k < ngaps; k++) {
        double ours = NAN, libuv = NAN;
        fprintf(f, "%8u", gaps[k]);
        for (int j = 0; j < reports[k]->nimpls; j++) {
            const bench_impl *im = &reports[k]->impls[j];
            double lo, m = NAN, hi;
            bench_stats(im, 0, &lo, &m, &hi);
            fprintf(f, " %15.3g", m);
            if (strcmp(im->label, "ioloop") == 0)
                ours = m;
            else if (strcmp(im->impl, "libuv") == 0)
                libuv = m;
        }
        fprintf(f, " %13.2fx\n", ours / libuv);
    }
    fprintf(f, "(target: ioloop/libuv <= 1.00x at every gap; machine shared, see min/max above)\n\n");
}

int bench_wakecost(int argc, char **argv, const bench_opts *o)
{
    unsigned gaps[MAX_GAPS] = {0, 10, 30, 60, 200, 1000};
    int ngaps = 6;
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
        if (strcmp(argv[i], "--gaps") == 0 && i + 1 < argc)
            list = argv[++i];
        else if (strncmp(argv[i], "--gaps=", 7) == 0)
            list = argv[i] + 7;
        if (!list) {
            fprintf(stderr, "iol-bench wakecost: unknown argument '%s'\n\n", argv[i]);
            usage(stderr);
            return 2;
        }
        if ((ngaps = parse_gaps(list, gaps)) < 1) {
            fprintf(stderr, "iol-bench wakecost: --gaps wants e.g. 0,10,30 (us, 0..1000000)\n");
            return 2;
        }
    }
    if (evthread_use_pthreads() != 0) {
        fprintf(stderr, "iol-bench wakecost: evthread_use_pthreads failed\n");
        return 1;
    }
    bench_report *reports[MAX_GAPS];
    for (int k = 0; k < ngaps; k++) {
        bench_report *r = reports[k] = malloc(sizeof *r);
        if (!r)
            return 1;
        bench_report_init(r, "wakecost", figs, NFIGS);
        snprintf(r->title, sizeof r->title, "wakecost  gap=%uus", gaps[k]);
        if (o->count)
            snprintf(r->params_json, sizeof r->params_json, "{\"gap_us\":%u,\"count\":%llu,\"pin\":%s}", gaps[k],
                     (unsigned long long)o->count, o->pin ? "true" : "false");
        else
            snprintf(r->params_json, sizeof r->params_json, "{\"gap_us\":%u,\"duration\":%g,\"pin\":%s}", gaps[k],
                     o->duration > 0 ? o->duration : DEFAULT_DURATION, o->pin ? "true" : "false");
    }
    /* Interleaved: every repeat walks all gaps, every gap all impls (and
     * every ioloop spin setting). Repeat -1 only fixes the row order. */
    for (int rep = -1; rep < o->repeat; rep++)
        for (int k = 0; k < ngaps; k++)
            for (size_t i = 0; i < NIMPLS; i++)
                for (int s = 0; s < (i == 0 ? spins.n : 1); s++) {
                    const char *label = i == 0 ? spins.label[s] : impls[i].label;
                    if (!bench_selected(o, impls[i].impl, label))
                        continue;
                    int row = bench_report_impl(reports[k], impls[i].impl, label);
                    if (rep < 0)
                        continue;
                    wresult res = run_once(&impls[i], o, gaps[k], i == 0 ? spins.us[s] : 0, i == 0 ? spins.poller[s] : NULL);
                    bench_report_add(reports[k], row, 0, res.cpu_us_per_cb);
                    bench_report_add(reports[k], row, 1, res.gap_us);
                    bench_report_add(reports[k], row, 2, res.wakeups_per_cb);
                    bench_report_add(reports[k], row, 3, res.cb_per_sec);
                    bench_report_add(reports[k], row, 4, res.spins_per_cb);
                }
    for (int k = 0; k < ngaps; k++) {
        bench_report_print(reports[k], o);
        bench_report_target(reports[k], o, 0, "libuv-idiom", 1.0);
    }
    print_summary(reports, gaps, ngaps, o);
    int rc = bench_plot(o, reports, ngaps) < 0 ? 1 : 0;
    for (int k = 0; k < ngaps; k++)
        free(reports[k]);
    return rc;
}
