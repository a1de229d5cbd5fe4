/* iol-bench zmq — ZeroMQ into one loop: messages/s through PUSH -> PULL
 * (inproc and tcp, 64-byte messages) and the REQ/REP round trip, for
 * ioloop on the zmq poller, ioloop on epoll through ZMQ_FD, CZMQ's zloop
 * reactor and the floor: a bare zmq_poll + zmq_msg_recv loop.
 *
 * Every reactor runs the same handler body: receive with ZMQ_DONTWAIT
 * until EAGAIN (throughput), or receive and send back (REQ/REP). The
 * sender (a PUSH thread sending as fast as the HWM lets it) and the REQ
 * client (a blocking thread) are the same for all; implementations are
 * interleaved per repetition. Messages/s is timed from the first message
 * received to the last; the round trip at the client, after a warm-up. */
#include "bench/bench.h"

#ifndef IOL_HAVE_ZMQ

int bench_zmq(int argc, char **argv, const bench_opts *o)
{
    (void)argc, (void)argv, (void)o;
    fprintf(stderr, "iol-bench zmq: built without ZeroMQ (install libzmq3-dev and reconfigure)\n");
    return 2;
}

#else

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>
#ifdef IOL_BENCH_HAVE_CZMQ
#include <czmq.h>
#endif

#include "ioloop.h"

#define MESSAGE_SIZE 64
#define WARMUP_ROUNDS 200

enum { IMPL_ZMQ_POLLER, IMPL_EPOLL, IMPL_ZLOOP, IMPL_FLOOR, NIMPLS };
static const char *const impl_json[NIMPLS] = { "ioloop", "ioloop", "czmq", "floor" };
static const char *const impl_label[NIMPLS] = { "ioloop-zmq", "ioloop-epoll", "zloop", "floor" };

/* -------------------------------------------------------- the handlers */

typedef struct run_state {
    void *socket;
    uint64_t wanted, count;
    uint64_t first_ns, last_ns;
    zmq_msg_t msg;
    iol_loop *loop; /* ioloop impls: stopped when done */
} run_state;

/* Receives until EAGAIN; true once the wanted count arrived. */
static bool drain(run_state *st)
{
    while (st->count < st->wanted) {
        if (zmq_msg_recv(&st->msg, st->socket, ZMQ_DONTWAIT) < 0)
            return false;
        if (st->count++ == 0)
            st->first_ns = bench_now_ns();
    }
    st->last_ns = bench_now_ns();
    return true;
}

/* REP: receive, send back, until EAGAIN; true once wanted replies went out. */
static bool echo(run_state *st)
{
    while (st->count < st->wanted) {
        if (zmq_msg_recv(&st->msg, st->socket, ZMQ_DONTWAIT) < 0)
            return false;
        if (zmq_msg_send(&st->msg, st->socket, ZMQ_DONTWAIT) < 0)
            abort();
        st->count++;
    }
    return true;
}

static void iol_drain(void *socket, unsigned events, void *arg)
{
    (void)socket, (void)events;
    run_state *st = arg;
    if (drain(st))
        iol_loop_stop(st->loop);
}

static void iol_echo(void *socket, unsigned events, void *arg)
{
    (void)socket, (void)events;
    run_state *st = arg;
    if (echo(st))
        iol_loop_stop(st->loop);
}

#ifdef IOL_BENCH_HAVE_CZMQ
static int zloop_drain(zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void)loop, (void)item;
    return drain(arg) ? -1 : 0; /* -1 ends zloop_start */
}

static int zloop_echo(zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void)loop, (void)item;
    return echo(arg) ? -1 : 0;
}
#endif

/* Runs impl's reactor on st->socket with body (drain or echo) until done. */
static int react(int impl, run_state *st, bool echoing)
{
    if (impl == IMPL_ZMQ_POLLER || impl == IMPL_EPOLL) {
        iol_loop_config cfg = { .poller = impl == IMPL_ZMQ_POLLER ? "zmq" : "epoll",
                                .make_current = IOL_CURRENT_NEVER };
        int err = iol_loop_new(&st->loop, &cfg);
        if (err < 0)
            return err;
        if ((err = iol_loop_add_zmq_handler(st->loop, st->socket, IOL_READ, echoing ? iol_echo : iol_drain, st)) < 0 ||
            (err = iol_loop_start(st->loop)) < 0) {
            iol_loop_close(st->loop, false);
            return err;
        }
        iol_loop_remove_zmq_handler(st->loop, st->socket);
        iol_loop_close(st->loop, false);
        return 0;
    }
    if (impl == IMPL_ZLOOP) {
#ifdef IOL_BENCH_HAVE_CZMQ
        zloop_t *loop = zloop_new();
        zmq_pollitem_t item = { .socket = st->socket, .events = ZMQ_POLLIN };
        if (!loop || zloop_poller(loop, &item, echoing ? zloop_echo : zloop_drain, st) < 0)
            return -ENOMEM;
        zloop_start(loop);
        zloop_destroy(&loop);
        return 0;
#else
        return -ENOTSUP;
#endif
    }
    zmq_pollitem_t item = { .socket = st->socket, .events = ZMQ_POLLIN };
    for (;;) {
        if (zmq_poll(&item, 1, -1) < 0)
            return -zmq_errno();
        if (echoing ? echo(st) : drain(st))
            return 0;
    }
}

/* ---------------------------------------------------------- the peers */

typedef struct peer {
    void *ctx;
    char endpoint[128];
    uint64_t count;
    _Atomic bool release;  /* the pusher closes its socket only then */
    double round_trip_us;
    pthread_t thread;
} peer;

static void *push_thread(void *arg)
{
    peer *p = arg;
    void *s = zmq_socket(p->ctx, ZMQ_PUSH);
    char buf[MESSAGE_SIZE] = { 0 };
    if (!s || zmq_connect(s, p->endpoint) < 0)
        abort();
    for (uint64_t i = 0; i < p->count; i++)
        if (zmq_send(s, buf, sizeof buf, 0) != (int)sizeof buf)
            abort();
    /* libzmq drops what is still queued towards a closing peer on some
     * transports: close only once everything arrived. */
    while (!atomic_load(&p->release))
        usleep(1000);
    zmq_close(s);
    return NULL;
}

static void *req_thread(void *arg)
{
    peer *p = arg;
    void *s = zmq_socket(p->ctx, ZMQ_REQ);
    char buf[MESSAGE_SIZE] = { 0 };
    if (!s || zmq_connect(s, p->endpoint) < 0)
        abort();
    uint64_t start = 0;
    for (uint64_t i = 0; i < p->count + WARMUP_ROUNDS; i++) {
        if (i == WARMUP_ROUNDS)
            start = bench_now_ns();
        if (zmq_send(s, buf, sizeof buf, 0) != (int)sizeof buf || zmq_recv(s, buf, sizeof buf, 0) != (int)sizeof buf)
            abort();
    }
    p->round_trip_us = (double)(bench_now_ns() - start) / 1e3 / (double)p->count;
    zmq_close(s);
    return NULL;
}

static void *new_bound(void *ctx, int type, const char *transport, char *endpoint, size_t len)
{
    void *s = zmq_socket(ctx, type);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    snprintf(endpoint, len, strcmp(transport, "tcp") == 0 ? "tcp://127.0.0.1:*" : "inproc://iol-bench");
    if (zmq_bind(s, endpoint) < 0 || zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, endpoint, &len) < 0) {
        fprintf(stderr, "iol-bench zmq: bind %s: %s\n", endpoint, zmq_strerror(zmq_errno()));
        abort();
    }
    return s;
}

/* One PUSH -> PULL run: messages/s, or NaN when the impl is missing. */
static double run_push_pull(int impl, const char *transport, uint64_t count)
{
    peer p = { .ctx = zmq_ctx_new(), .count = count };
    run_state st = { .wanted = count };
    st.socket = new_bound(p.ctx, ZMQ_PULL, transport, p.endpoint, sizeof p.endpoint);
    zmq_msg_init(&st.msg);
    pthread_create(&p.thread, NULL, push_thread, &p);
    int err = react(impl, &st, false);
    atomic_store(&p.release, true);
    pthread_join(p.thread, NULL);
    zmq_msg_close(&st.msg);
    zmq_close(st.socket);
    zmq_ctx_term(p.ctx);
    if (err < 0 || st.last_ns <= st.first_ns)
        return NAN;
    return (double)(count - 1) / ((double)(st.last_ns - st.first_ns) / 1e9);
}

/* One REQ/REP run: microseconds per round trip, or NaN. */
static double run_req_rep(int impl, const char *transport, uint64_t rounds)
{
    peer p = { .ctx = zmq_ctx_new(), .count = rounds };
    run_state st = { .wanted = rounds + WARMUP_ROUNDS };
    st.socket = new_bound(p.ctx, ZMQ_REP, transport, p.endpoint, sizeof p.endpoint);
    zmq_msg_init(&st.msg);
    pthread_create(&p.thread, NULL, req_thread, &p);
    int err = react(impl, &st, true);
    pthread_join(p.thread, NULL);
    zmq_msg_close(&st.msg);
    zmq_close(st.socket);
    zmq_ctx_term(p.ctx);
    return err < 0 ? NAN : p.round_trip_us;
}

/* ------------------------------------------------------------ the bench */

static const bench_fig_spec rate_figs[] = { { "messages_per_sec", "messages/s", true, false } };
static const bench_fig_spec rtt_figs[] = { { "round_trip_us", "us/round trip", true, true } };

static double median_of(const bench_report *r, const char *label)
{
    for (int i = 0; i < r->nimpls; i++) {
        double lo, med, hi;
        if (strcmp(r->impls[i].label, label) == 0 && bench_stats(&r->impls[i], 0, &lo, &med, &hi))
            return med;
    }
    return NAN;
}

/* The targets: ioloop's better mode against zloop and the floor. */
static void print_target(const bench_report *r, const bench_opts *o, const char *other, double target, bool lower)
{
    double a = median_of(r, "ioloop-zmq"), b = median_of(r, "ioloop-epoll"), c = median_of(r, other);
    double best = isnan(a) ? b : isnan(b) ? a : lower ? (a < b ? a : b) : (a > b ? a : b);
    if (isnan(best) || isnan(c) || best == 0 || c == 0)
        return;
    double ratio = lower ? c / best : best / c;
    fprintf(o->json ? stderr : stdout, "  %-18s ioloop (best mode) vs %-7s %5.2fx  (target >= %gx)  %s\n", r->title,
            other, ratio, target, ratio >= target ? "met" : "MISSED");
}

int bench_zmq(int argc, char **argv, const bench_opts *o)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: iol-bench zmq [--count N] [--repeat R] [--impl A,B] [--json]\n"
                   "  PUSH->PULL messages/s (inproc, tcp; %d-byte messages; N messages, default 10^6)\n"
                   "  and REQ/REP round trip over tcp and inproc (N/20 rounds), for ioloop-zmq (zmq\n"
                   "  poller), ioloop-epoll (ZMQ_FD), zloop (CZMQ) and floor (bare zmq_poll).\n",
                   MESSAGE_SIZE);
            bench_usage_common(stdout);
            return 0;
        }
        fprintf(stderr, "iol-bench zmq: unknown flag %s\n", argv[i]);
        return 2;
    }
    uint64_t count = o->count ? o->count : 1000000;
    uint64_t rounds = count / 20 > 100 ? count / 20 : 100;
    static const char *const transports[] = { "inproc", "tcp" };
    bench_report rate[2], rtt[2];
    for (int t = 0; t < 2; t++) {
        bench_report_init(&rate[t], "zmq", rate_figs, 1);
        snprintf(rate[t].title, sizeof rate[t].title, "push-pull %s", transports[t]);
        snprintf(rate[t].params_json, sizeof rate[t].params_json,
                 "{\"pattern\":\"push-pull\",\"transport\":\"%s\",\"message_bytes\":%d,\"count\":%llu}",
                 transports[t], MESSAGE_SIZE, (unsigned long long)count);
        bench_report_init(&rtt[t], "zmq", rtt_figs, 1);
        snprintf(rtt[t].title, sizeof rtt[t].title, "req-rep %s", transports[t]);
        snprintf(rtt[t].params_json, sizeof rtt[t].params_json,
                 "{\"pattern\":\"req-rep\",\"transport\":\"%s\",\"message_bytes\":%d,\"rounds\":%llu}",
                 transports[t], MESSAGE_SIZE, (unsigned long long)rounds);
    }
    for (int rep = 0; rep < o->repeat; rep++) {
        for (int t = 0; t < 2; t++) {
            for (int impl = 0; impl < NIMPLS; impl++) {
                if (!bench_selected(o, impl_json[impl], impl_label[impl]))
                    continue;
#ifndef IOL_BENCH_HAVE_CZMQ
                if (impl == IMPL_ZLOOP)
                    continue;
#endif
                double v = run_push_pull(impl, transports[t], count);
                bench_report_add(&rate[t], bench_report_impl(&rate[t], impl_json[impl], impl_label[impl]), 0, v);
                bench_progress(impl_label[impl], (double)rep, v, "msg/s");
                v = run_req_rep(impl, transports[t], rounds);
                bench_report_add(&rtt[t], bench_report_impl(&rtt[t], impl_json[impl], impl_label[impl]), 0, v);
            }
        }
    }
    bench_progress_done();
    for (int t = 0; t < 2; t++)
        bench_report_print(&rate[t], o);
    for (int t = 0; t < 2; t++)
        bench_report_print(&rtt[t], o);
    for (int t = 0; t < 2; t++) {
        print_target(&rate[t], o, "zloop", 1.0, false);
        print_target(&rate[t], o, "floor", 0.9, false);
    }
    for (int t = 0; t < 2; t++)
        print_target(&rtt[t], o, "zloop", 1.0, true);
    bench_report *all[] = { &rate[0], &rate[1], &rtt[0], &rtt[1] };
    return bench_plot(o, all, 4) < 0 ? 1 : 0;
}

#endif /* IOL_HAVE_ZMQ */
