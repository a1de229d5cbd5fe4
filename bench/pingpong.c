/* iol-bench pingpong — two loops on two threads bounce one callback:
 * A's callback posts to B, B's posts back to A. µs per round trip.
 *
 * Method: a fresh pair of loops per run; A's first callback stamps t0,
 * and A stamps t_end when N round trips are done, so the figure is
 * (t_end - t0) / N with no thread start-up in it. Both loops sleep between
 * hops, so every hop is a real cross-thread wakeup. Competitors, in the
 * same run and interleaved: libuv (two loops, a uv_async_t each plus a
 * mutex-protected message slot), libevent (event_base_once across two
 * bases) and the floor (two threads doing blocking read/write on two
 * eventfds, no loop at all; and floor-epoll, the same sleeping in
 * epoll_wait before each read, as any epoll loop must). */
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <uv.h>

#include "bench/bench.h"
#include "ioloop.h"

#define DEFAULT_COUNT 50000ull

enum { MSG_NONE, MSG_PING, MSG_QUIT };

typedef struct pctx pctx;
typedef struct pimpl {
    const char *impl, *label;
    int (*setup)(pctx *c);
    void (*run_a)(pctx *c);
    void (*run_b)(pctx *c);
    void (*kick)(pctx *c);          /* main thread: first post to A */
    void (*teardown)(pctx *c);
} pimpl;

struct pctx {
    const pimpl *im;
    const bench_opts *o;
    uint64_t n;
    _Atomic uint64_t done_trips;    /* read by the progress line (relaxed) */
    uint64_t t0, t_end;
    _Atomic int ready;
    _Atomic bool finished;
    /* ioloop */
    iol_loop *la, *lb;
    double spin_us;                 /* iol_loop_config.spin_us */
    const char *poller;             /* iol_loop_config.poller */
    /* libuv */
    uv_loop_t ua, ub;
    uv_async_t aa, ab;
    pthread_mutex_t mu;
    int slot_a, slot_b;
    /* libevent */
    struct event_base *ea, *eb;
    /* floor */
    int efd_a, efd_b;
    int ep_a, ep_b;                 /* floor-epoll: -1 for the plain floor */
    _Atomic int turn;               /* floor-spin: 0 A's turn, 1 B's, -1 quit */
};

/* Counts a round trip on A; true when all are done (t_end stamped). */
static bool trip_done(pctx *c)
{
    uint64_t k = atomic_load_explicit(&c->done_trips, memory_order_relaxed);
    if (k == 0 && c->t0 == 0)
        c->t0 = bench_now_ns();
    else
        atomic_store_explicit(&c->done_trips, ++k, memory_order_relaxed);
    if (k < c->n)
        return false;
    c->t_end = bench_now_ns();
    return true;
}

static void die(const char *impl, const char *what, int err)
{
    fprintf(stderr, "iol-bench pingpong: %s %s: %s\n", impl, what, strerror(err < 0 ? -err : err));
    exit(1);
}

/* ------------------------------------------------------------- ioloop */

static void iol_ping(void *arg);

static void iol_pong(void *arg)
{
    pctx *c = arg;
    int err = iol_loop_add_callback(c->la, iol_ping, c);
    if (err < 0)
        die("ioloop", "add_callback", err);
}

static void iol_ping(void *arg)
{
    pctx *c = arg;
    if (trip_done(c)) {
        iol_loop_stop(c->la);
        iol_loop_stop(c->lb);
        return;
    }
    int err = iol_loop_add_callback(c->lb, iol_pong, c);
    if (err < 0)
        die("ioloop", "add_callback", err);
}

static int iol_setup(pctx *c)
{
    iol_loop_config cfg = {.make_current = IOL_CURRENT_NEVER, .spin_us = c->spin_us, .poller = c->poller};
    int err = iol_loop_new(&c->la, &cfg);
    if (err < 0)
        return err;
    return iol_loop_new(&c->lb, &cfg);
}
static void iol_run_a(pctx *c)
{
    atomic_fetch_add(&c->ready, 1);
    iol_loop_start(c->la);
}
static void iol_run_b(pctx *c)
{
    atomic_fetch_add(&c->ready, 1);
    iol_loop_start(c->lb);
}
static void iol_kick(pctx *c) { iol_loop_add_callback(c->la, iol_ping, c); }
static void iol_teardown(pctx *c)
{
    iol_loop_close(c->la, false);
    iol_loop_close(c->lb, false);
}

/* ------------------------- libuv: uv_async_t + a mutex-protected slot */

static void uv_send(pctx *c, uv_async_t *to, int *slot, int msg)
{
    pthread_mutex_lock(&c->mu);
    *slot = msg;
    pthread_mutex_unlock(&c->mu);
    uv_async_send(to);
}

static int uv_take(pctx *c, int *slot)
{
    pthread_mutex_lock(&c->mu);
    int msg = *slot;
    *slot = MSG_NONE;
    pthread_mutex_unlock(&c->mu);
    return msg;
}

static void uv_on_a(uv_async_t *h)
{
    pctx *c = h->data;
    if (uv_take(c, &c->slot_a) != MSG_PING)
        return;
    if (trip_done(c)) {
        uv_send(c, &c->ab, &c->slot_b, MSG_QUIT);
        uv_close((uv_handle_t *)&c->aa, NULL); /* no active handle left: uv_run returns */
        return;
    }
    uv_send(c, &c->ab, &c->slot_b, MSG_PING);
}

static void uv_on_b(uv_async_t *h)
{
    pctx *c = h->data;
    int msg = uv_take(c, &c->slot_b);
    if (msg == MSG_QUIT)
        uv_close((uv_handle_t *)&c->ab, NULL);
    else if (msg == MSG_PING)
        uv_send(c, &c->aa, &c->slot_a, MSG_PING);
}

static int uvp_setup(pctx *c)
{
    pthread_mutex_init(&c->mu, NULL);
    int err;
    if ((err = uv_loop_init(&c->ua)) || (err = uv_loop_init(&c->ub)) ||
        (err = uv_async_init(&c->ua, &c->aa, uv_on_a)) || (err = uv_async_init(&c->ub, &c->ab, uv_on_b)))
        return err;
    c->aa.data = c->ab.data = c;
    return 0;
}
static void uvp_run_a(pctx *c)
{
    atomic_fetch_add(&c->ready, 1);
    uv_run(&c->ua, UV_RUN_DEFAULT);
}
static void uvp_run_b(pctx *c)
{
    atomic_fetch_add(&c->ready, 1);
    uv_run(&c->ub, UV_RUN_DEFAULT);
}
static void uvp_kick(pctx *c) { uv_send(c, &c->aa, &c->slot_a, MSG_PING); }
static void uvp_teardown(pctx *c)
{
    uv_loop_close(&c->ua);
    uv_loop_close(&c->ub);
    pthread_mutex_destroy(&c->mu);
}

/* ----------------------------------------- libevent: event_base_once */

static const struct timeval zero_tv = {0, 0};

static void ev_ping(evutil_socket_t fd, short what, void *arg);

static void ev_pong(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pctx *c = arg;
    if (event_base_once(c->ea, -1, EV_TIMEOUT, ev_ping, c, &zero_tv) != 0)
        die("libevent", "event_base_once", ENOMEM);
}

static void ev_ping(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pctx *c = arg;
    if (trip_done(c)) {
        event_base_loopbreak(c->ea);
        event_base_loopbreak(c->eb);
        return;
    }
    if (event_base_once(c->eb, -1, EV_TIMEOUT, ev_pong, c, &zero_tv) != 0)
        die("libevent", "event_base_once", ENOMEM);
}

static int ev_setup(pctx *c)
{
    c->ea = event_base_new();
    c->eb = event_base_new();
    return c->ea && c->eb ? 0 : -ENOMEM;
}
static void ev_run_a(pctx *c)
{
    atomic_fetch_add(&c->ready, 1);
    event_base_loop(c->ea, EVLOOP_NO_EXIT_ON_EMPTY);
}
static void ev_run_b(pctx *c)
{
    atomic_fetch_add(&c->ready, 1);
    event_base_loop(c->eb, EVLOOP_NO_EXIT_ON_EMPTY);
}
static void ev_kick(pctx *c) { event_base_once(c->ea, -1, EV_TIMEOUT, ev_ping, c, &zero_tv); }
static void ev_teardown(pctx *c)
{
    event_base_free(c->ea);
    event_base_free(c->eb);
}

/* ------------------------ the floor: blocking eventfd ping-pong, no loop */

static int fl_setup(pctx *c)
{
    c->ep_a = c->ep_b = -1;
    c->efd_a = eventfd(0, EFD_CLOEXEC);
    c->efd_b = eventfd(0, EFD_CLOEXEC);
    return c->efd_a >= 0 && c->efd_b >= 0 ? 0 : -errno;
}
static void fl_signal(int fd)
{
    uint64_t one = 1;
    if (write(fd, &one, sizeof one) != sizeof one)
        die("floor", "eventfd write", errno);
}
static void fl_wait(int fd)
{
    uint64_t v;
    if (read(fd, &v, sizeof v) != sizeof v)
        die("floor", "eventfd read", errno);
}

/* The floor of any epoll loop: sleep in epoll_wait on a non-blocking
 * eventfd, then read it, as a loop's waker does. */
static int fle_setup(pctx *c)
{
    c->efd_a = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    c->efd_b = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    c->ep_a = epoll_create1(EPOLL_CLOEXEC);
    c->ep_b = epoll_create1(EPOLL_CLOEXEC);
    if (c->efd_a < 0 || c->efd_b < 0 || c->ep_a < 0 || c->ep_b < 0)
        return -errno;
    struct epoll_event ev = {.events = EPOLLIN};
    if (epoll_ctl(c->ep_a, EPOLL_CTL_ADD, c->efd_a, &ev) < 0 || epoll_ctl(c->ep_b, EPOLL_CTL_ADD, c->efd_b, &ev) < 0)
        return -errno;
    return 0;
}
static void fle_wait(int ep, int fd)
{
    struct epoll_event ev;
    while (epoll_wait(ep, &ev, 1, -1) < 1)
        if (errno != EINTR)
            die("floor-epoll", "epoll_wait", errno);
    fl_wait(fd);
}
static void fle_teardown(pctx *c)
{
    close(c->ep_a);
    close(c->ep_b);
    close(c->efd_a);
    close(c->efd_b);
}
/* Waits on A's or B's eventfd: blocking read, or epoll_wait then read. */
static void fl_wait_side(pctx *c, bool a)
{
    if (c->ep_a >= 0)
        fle_wait(a ? c->ep_a : c->ep_b, a ? c->efd_a : c->efd_b);
    else
        fl_wait(a ? c->efd_a : c->efd_b);
}
static void fl_run_a(pctx *c)
{
    atomic_fetch_add(&c->ready, 1);
    fl_wait_side(c, true); /* the kick */
    trip_done(c);
    do {
        fl_signal(c->efd_b);
        fl_wait_side(c, true);
    } while (!trip_done(c));
    atomic_store(&c->ready, -1); /* tells B to quit on its next wakeup */
    fl_signal(c->efd_b);
}
static void fl_run_b(pctx *c)
{
    atomic_fetch_add(&c->ready, 1);
    for (;;) {
        fl_wait_side(c, false);
        if (atomic_load(&c->ready) < 0)
            return;
        fl_signal(c->efd_a);
    }
}
static void fl_kick(pctx *c) { fl_signal(c->efd_a); }
static void fl_teardown(pctx *c)
{
    close(c->efd_a);
    close(c->efd_b);
}

/* The floor of any handoff: the two threads spin on one shared word, so a
 * round trip is two cache-line transfers and nothing else (it burns both
 * CPUs the whole time). ioloop's bounded spin before sleeping gets close
 * to it while traffic flows. */
static int fs_setup(pctx *c)
{
    atomic_store(&c->turn, 1);
    return 0;
}
static int fs_wait(pctx *c, int mine)
{
    int t;
    /* acquire: pairs with the other side's release store of the turn. */
    while ((t = atomic_load_explicit(&c->turn, memory_order_acquire)) != mine && t >= 0)
        bench_cpu_relax();
    return t;
}
static void fs_run_a(pctx *c)
{
    atomic_fetch_add(&c->ready, 1);
    fs_wait(c, 0); /* the kick */
    trip_done(c);
    do {
        atomic_store_explicit(&c->turn, 1, memory_order_release);
        fs_wait(c, 0);
    } while (!trip_done(c));
    atomic_store_explicit(&c->turn, -1, memory_order_release);
}
static void fs_run_b(pctx *c)
{
    atomic_fetch_add(&c->ready, 1);
    while (fs_wait(c, 1) >= 0)
        atomic_store_explicit(&c->turn, 0, memory_order_release);
}
static void fs_kick(pctx *c) { atomic_store_explicit(&c->turn, 0, memory_order_release); }
static void fs_teardown(pctx *c) { (void)c; }

static const pimpl impls[] = {
    {"ioloop", "ioloop", iol_setup, iol_run_a, iol_run_b, iol_kick, iol_teardown},
    {"libuv", "libuv-async", uvp_setup, uvp_run_a, uvp_run_b, uvp_kick, uvp_teardown},
    {"libevent", "libevent-once", ev_setup, ev_run_a, ev_run_b, ev_kick, ev_teardown},
    {"floor", "floor-eventfd", fl_setup, fl_run_a, fl_run_b, fl_kick, fl_teardown},
    {"floor", "floor-epoll", fle_setup, fl_run_a, fl_run_b, fl_kick, fle_teardown},
    {"floor", "floor-spin", fs_setup, fs_run_a, fs_run_b, fs_kick, fs_teardown},
};
#define NIMPLS (sizeof impls / sizeof impls[0])

/* -------------------------------------------------------------- driver */

static void *thread_a(void *p)
{
    pctx *c = p;
    bench_pin_self(c->o, 0);
    c->im->run_a(c);
    atomic_store(&c->finished, true);
    return NULL;
}

static void *thread_b(void *p)
{
    pctx *c = p;
    bench_pin_self(c->o, 1);
    c->im->run_b(c);
    return NULL;
}

static double run_once(const pimpl *im, const bench_opts *o, uint64_t n, double spin_us, const char *poller)
{
    pctx *c = calloc(1, sizeof *c);
    if (!c)
        exit(1);
    c->im = im;
    c->spin_us = spin_us;
    c->poller = poller;
    c->o = o;
    c->n = n;
    int err = im->setup(c);
    if (err < 0)
        die(im->label, "setup", err);
    pthread_t a, b;
    pthread_create(&a, NULL, thread_a, c);
    pthread_create(&b, NULL, thread_b, c);
    while (atomic_load(&c->ready) < 2)
        usleep(100);
    usleep(1000); /* let both reach their sleep, so the first hop is a real wakeup too */
    im->kick(c);
    char what[64];
    snprintf(what, sizeof what, "pingpong %s", im->label);
    uint64_t started = bench_now_ns();
    while (!atomic_load(&c->finished)) {
        usleep(20000);
        double el = (double)(bench_now_ns() - started) / 1e9;
        bench_progress(what, el, (double)atomic_load_explicit(&c->done_trips, memory_order_relaxed) / el,
                       "trips/s");
    }
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    double us = (double)(c->t_end - c->t0) / 1e3 / (double)n;
    im->teardown(c);
    free(c);
    return us;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: iol-bench pingpong [--count N] [--repeat R] [--spin-us 0,5,-1] [--poller epoll,uring]\n"
               "                         [--pin] [--json] [--plot F.svg]\n"
               "Two loops on two threads bounce one callback N times (default %llu):\n"
               "us per round trip. Impls, interleaved: ioloop, libuv (uv_async_t + locked\n"
               "slot), libevent (event_base_once), floor-eventfd (blocking eventfd\n"
               "ping-pong), floor-epoll (the same, each side sleeping in epoll_wait),\n"
               "floor-spin (both threads spinning on one shared word: the hardware floor).\n"
               "--duration is accepted and ignored (the work is fixed by --count).\n"
               "--spin-us: one ioloop row per iol_loop_config.spin_us value (default 0,\n"
               "adaptive; 5 is the old fixed spin, -1 never spins).\n"
               "--poller: those ioloop rows once per poller (label suffix -NAME).\n\n",
            DEFAULT_COUNT);
    bench_usage_common(f);
}

static const bench_fig_spec figs[] = {
    {"round_trip_us", "round trip us", true, true},
};

int bench_pingpong(int argc, char **argv, const bench_opts *o)
{
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
        fprintf(stderr, "iol-bench pingpong: unknown argument '%s'\n\n", argv[i]);
        usage(stderr);
        return 2;
    }
    if (evthread_use_pthreads() != 0) {
        fprintf(stderr, "iol-bench pingpong: evthread_use_pthreads failed\n");
        return 1;
    }
    uint64_t n = o->count ? o->count : DEFAULT_COUNT;
    bench_report r;
    bench_report_init(&r, "pingpong", figs, 1);
    snprintf(r.title, sizeof r.title, "pingpong N=%llu", (unsigned long long)n);
    snprintf(r.params_json, sizeof r.params_json, "{\"count\":%llu,\"pin\":%s}", (unsigned long long)n,
             o->pin ? "true" : "false");
    /* Rows: each ioloop spin setting, then the competitors. */
    for (int rep = -1; rep < o->repeat; rep++)
        for (size_t i = 0; i < NIMPLS; i++) {
            bool ours = impls[i].setup == iol_setup;
            for (int k = 0; k < (ours ? spins.n : 1); k++) {
                const char *label = ours ? spins.label[k] : impls[i].label;
                if (!bench_selected(o, impls[i].impl, label))
                    continue;
                int row = bench_report_impl(&r, impls[i].impl, label);
                if (rep >= 0) /* rep -1 only fixes the row order */
                    bench_report_add(&r, row, 0, run_once(&impls[i], o, n, ours ? spins.us[k] : 0,
                                                              ours ? spins.poller[k] : NULL));
            }
        }
    bench_report_print(&r, o);
    bench_report_target(&r, o, 0, "libevent-once", 1.0);
    bench_report_target(&r, o, 0, "libuv-async", 1.0);
    /* "within 1.2x of the floor": floor / ioloop >= 1 / 1.2. floor-epoll
     * is the same with each side sleeping in epoll_wait first, the least
     * any epoll loop can pay per hop; shown for context. */
    bench_report_target(&r, o, 0, "floor-eventfd", 1 / 1.2);
    bench_report_target(&r, o, 0, "floor-epoll", 1 / 1.2);
    bench_report *rp = &r;
    return bench_plot(o, &rp, 1) < 0 ? 1 : 0;
}
