/* soak-mixed: a long mixed workload on a 2-worker runtime with RSS checks.
 *
 * Each worker runs, at the same time:
 *  - an HTTP "Hello, World!" server over iol_stream (REUSEPORT listener),
 *  - keep-alive HTTP clients over iol_stream_connect to that server, paced
 *    by call_later, reconnecting after --requests-per-conn requests
 *    (connection churn),
 *  - timer churn: a periodic callback that adds call_later timeouts and
 *    removes about half of them (some already fired: -ENOENT is expected),
 *  - a jittered periodic callback that is freed and re-created now and then,
 *  - cross-thread posts to the other worker, and a non-worker thread posting
 *    to both.
 * The main thread samples RSS from /proc/self/statm every second. After a
 * warm-up (the first 20 %), RSS at the end may exceed RSS at the end of the
 * warm-up by at most max(2 MiB, 5 %). Every posted callback must run, every
 * HTTP response must be a 200, and every activity must have happened.
 *
 * Usage: soak-mixed [--minutes M | --seconds S] [--clients C]
 *                   [--requests-per-conn R] [--pace-ms P] */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ioloop.h>

#include "soakutil.h"

#define WORKERS 2
#define TIMER_SLOTS 256
#define TIMERS_PER_TICK 64
#define POSTS_PER_TICK 100
#define RSS_SLACK_BYTES (2u << 20)
#define RSS_SLACK_RATIO 0.05

/* ASan's quarantine and shadow memory and valgrind's own heap make RSS say
 * nothing about our leaks there (those tools check leaks themselves): the
 * series is printed but not judged. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define RSS_MEANINGFUL 0
#else
#define RSS_MEANINGFUL 1
#endif

static const char RESPONSE[] = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\n"
                               "Hello, World!";
static const char REQUEST[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/* Counters: each is written by one thread at a time (mostly its worker)
 * and read by the main thread for progress and the final summary. Relaxed
 * everywhere: they order nothing; the final read happens after join. */
typedef struct counters {
    _Atomic uint64_t requests_ok, bad_responses, client_errors, server_errors;
    _Atomic uint64_t connects, connect_errors, accepts;
    _Atomic uint64_t timers_added, timers_fired, timers_removed, timers_gone;
    _Atomic uint64_t periodic_runs, periodic_recreated;
    _Atomic uint64_t posted, posts_ran, post_refused;
} counters;

static counters g_c;
static iol_runtime *g_rt;
static uint16_t g_port;
static unsigned g_clients = 4, g_requests_per_conn = 100;
static double g_pace_s = 0.001;
/* Set by main before the shutdown broadcast; workers read it in callbacks
 * that run after that broadcast was queued, and the queue orders the
 * store before them. Relaxed loads elsewhere only decide whether to
 * reconnect, where a stale false is harmless (close_all runs later). */
static _Atomic bool g_stopping;
/* Streams alive (client and server); main waits for 0 before stopping
 * the runtime so every stream is freed on its loop. Relaxed: a count,
 * and the decrements happen on the workers before they are joined. */
static _Atomic long g_live_conns;

#define INC(field) atomic_fetch_add_explicit(&g_c.field, 1, memory_order_relaxed)

/* The last client error, for the report: which step and its status.
 * Relaxed: diagnostics read after join. */
static _Atomic int g_last_client_error_site, g_last_client_error_status;

static void client_error(int site, int status)
{
    INC(client_errors);
    atomic_store_explicit(&g_last_client_error_site, site, memory_order_relaxed);
    atomic_store_explicit(&g_last_client_error_status, status, memory_order_relaxed);
}
#define GET(field) atomic_load_explicit(&g_c.field, memory_order_relaxed)

typedef struct conn {
    iol_stream *s;
    struct conn *prev, *next; /* the worker's list of live streams */
    struct worker_state *w;
    bool client;
    unsigned requests;
    iol_timeout pace; /* 0: none pending */
} conn;

typedef struct worker_state {
    iol_loop *loop;
    unsigned index;
    conn *conns;
    iol_periodic *churn, *jittery;
    iol_timeout slots[TIMER_SLOTS];
    unsigned ticks;
    uint64_t rng;
} worker_state;

static worker_state g_workers[WORKERS];

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64: enough for picking slots and delays. */
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static bool stopping(void)
{
    return atomic_load_explicit(&g_stopping, memory_order_relaxed);
}

/* ------------------------------------------------------------- conns */

static void conn_unlink(conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
}

static void client_start(worker_state *w);

static void conn_on_close(iol_stream *s, void *arg)
{
    (void)s;
    conn *c = arg;
    if (c->pace)
        iol_loop_remove_timeout(c->w->loop, c->pace);
    conn_unlink(c);
    worker_state *w = c->w;
    bool reconnect = c->client && !stopping();
    free(c);
    atomic_fetch_sub_explicit(&g_live_conns, 1, memory_order_relaxed);
    if (reconnect)
        client_start(w);
}

static conn *conn_new(worker_state *w, bool client)
{
    conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->w = w;
    c->client = client;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    atomic_fetch_add_explicit(&g_live_conns, 1, memory_order_relaxed);
    return c;
}

static void close_quietly(iol_stream *s)
{
    if (!iol_stream_closed(s))
        iol_stream_close(s);
}

/* ------------------------------------------------------------ server */

static void server_on_request(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)data;
    (void)len;
    if (status < 0) {
        /* EOF from a client that finished is normal; a reset is not. */
        if (status != IOL_EOF && status != -ECONNRESET && status != -EPIPE && !stopping())
            INC(server_errors);
        close_quietly(s);
        return;
    }
    if (iol_stream_write(s, RESPONSE, sizeof(RESPONSE) - 1, NULL, NULL) < 0 ||
        iol_stream_read_until(s, "\r\n\r\n", server_on_request, arg) < 0) {
        INC(server_errors);
        close_quietly(s);
    }
}

static void on_accept(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    (void)peer;
    (void)peerlen;
    (void)arg;
    INC(accepts);
    worker_state *w = &g_workers[iol_runtime_worker_index()];
    iol_stream *s;
    if (iol_stream_new(&s, loop, fd, 64 << 10) < 0) {
        INC(server_errors);
        close(fd);
        return;
    }
    conn *c = conn_new(w, false);
    if (!c) {
        iol_stream_close(s);
        return;
    }
    c->s = s;
    iol_stream_set_close_callback(s, conn_on_close, c);
    if (iol_stream_read_until(s, "\r\n\r\n", server_on_request, c) < 0)
        iol_stream_close(s);
}

/* ------------------------------------------------------------ client */

static void client_send(void *arg);

static void client_on_body(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    conn *c = arg;
    if (status < 0) {
        if (!stopping())
            client_error(1, status);
        close_quietly(s);
        return;
    }
    if (len != 13 || memcmp(data, "Hello, World!", 13) != 0) {
        INC(bad_responses);
        close_quietly(s);
        return;
    }
    INC(requests_ok);
    if (++c->requests >= g_requests_per_conn || stopping()) {
        iol_stream_close(s); /* churn: conn_on_close reconnects */
        return;
    }
    if (g_pace_s > 0) {
        if (iol_loop_call_later(c->w->loop, g_pace_s, client_send, c, &c->pace) < 0) {
            client_error(2, status);
            iol_stream_close(s);
        }
    } else {
        client_send(c);
    }
}

static void client_on_head(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)len;
    if (status < 0) {
        if (!stopping())
            client_error(3, 0);
        close_quietly(s);
        return;
    }
    if (strncmp(data, "HTTP/1.1 200 ", 13) != 0 || !strstr(data, "Content-Length: 13\r\n")) {
        INC(bad_responses);
        iol_stream_close(s);
        return;
    }
    int r = iol_stream_read_bytes(s, 13, false, client_on_body, arg);
    if (r < 0) {
        client_error(4, r);
        iol_stream_close(s);
    }
}

static void client_send(void *arg)
{
    conn *c = arg;
    c->pace = 0;
    if (iol_stream_closed(c->s)) {
        /* Closed while we waited for the pace timer; its close callback is
         * queued. Only shutdown closes the server side. */
        if (!stopping())
            client_error(7, iol_stream_error(c->s));
        return;
    }
    int r = iol_stream_write(c->s, REQUEST, sizeof(REQUEST) - 1, NULL, NULL);
    if (r < 0 || (r = iol_stream_read_until(c->s, "\r\n\r\n", client_on_head, c)) < 0) {
        client_error(5, r);
        close_quietly(c->s);
    }
}

static void client_on_connect(iol_stream *s, int status, void *arg)
{
    (void)s;
    if (status < 0) {
        /* The stream closes after this; conn_on_close reconnects. */
        INC(connect_errors);
        return;
    }
    INC(connects);
    client_send(arg);
}

static void client_start(worker_state *w)
{
    conn *c = conn_new(w, true);
    if (!c) {
        client_error(6, -ENOMEM);
        return;
    }
    int r = iol_stream_connect(&c->s, w->loop, "127.0.0.1", g_port, 64 << 10, client_on_connect, c);
    if (r < 0) {
        INC(connect_errors);
        conn_unlink(c);
        free(c);
        atomic_fetch_sub_explicit(&g_live_conns, 1, memory_order_relaxed);
        return;
    }
    iol_stream_set_close_callback(c->s, conn_on_close, c);
}

/* ------------------------------------------------ timers and periodics */

static void on_timer(void *arg)
{
    (void)arg;
    INC(timers_fired);
}

static void on_jittery(void *arg)
{
    (void)arg;
    INC(periodic_runs);
}

static void on_post(void *arg)
{
    (void)arg;
    INC(posts_ran);
}

static void post_to(unsigned index)
{
    int r = iol_runtime_post(g_rt, index, on_post, NULL);
    if (r == 0)
        INC(posted);
    else
        INC(post_refused); /* -ESHUTDOWN at the very end */
}

/* Every 10 ms: timer churn, posts to the other worker, and now and then a
 * fresh jittered periodic. */
static void on_churn(void *arg)
{
    worker_state *w = arg;
    INC(periodic_runs);
    for (unsigned i = 0; i < TIMERS_PER_TICK; i++) {
        unsigned slot = (unsigned)(rng_next(&w->rng) % TIMER_SLOTS);
        if (w->slots[slot]) {
            int r = iol_loop_remove_timeout(w->loop, w->slots[slot]);
            if (r == 0)
                INC(timers_removed);
            else
                INC(timers_gone); /* fired already */
            w->slots[slot] = 0;
            continue;
        }
        double delay = (double)(rng_next(&w->rng) % 50) / 1000.0;
        if (iol_loop_call_later(w->loop, delay, on_timer, w, &w->slots[slot]) == 0)
            INC(timers_added);
    }
    for (unsigned i = 0; i < POSTS_PER_TICK; i++)
        post_to((w->index + 1) % WORKERS);
    if (++w->ticks % 100 == 0) {
        iol_periodic_free(w->jittery);
        w->jittery = NULL;
        if (iol_periodic_new(&w->jittery, w->loop, 7, on_jittery, w) == 0) {
            iol_periodic_set_jitter(w->jittery, 0.5);
            iol_periodic_start(w->jittery);
            INC(periodic_recreated);
        }
    }
}

static void on_worker_start(iol_loop *loop, unsigned index, void *arg)
{
    (void)arg;
    worker_state *w = &g_workers[index];
    w->loop = loop;
    w->index = index;
    w->rng = 0x9e3779b97f4a7c15ull * (index + 1);
    if (iol_periodic_new(&w->churn, loop, 10, on_churn, w) == 0)
        iol_periodic_start(w->churn);
    if (iol_periodic_new(&w->jittery, loop, 7, on_jittery, w) == 0) {
        iol_periodic_set_jitter(w->jittery, 0.5);
        iol_periodic_start(w->jittery);
    }
    for (unsigned i = 0; i < g_clients; i++)
        client_start(w);
}

/* Shutdown, on each worker: no more periodics or timers; close every
 * stream (their close callbacks free the conns and do not reconnect). */
static void close_all(void *arg)
{
    (void)arg;
    worker_state *w = &g_workers[iol_runtime_worker_index()];
    iol_periodic_free(w->churn);
    iol_periodic_free(w->jittery);
    w->churn = w->jittery = NULL;
    for (unsigned i = 0; i < TIMER_SLOTS; i++)
        if (w->slots[i])
            iol_loop_remove_timeout(w->loop, w->slots[i]);
    for (conn *c = w->conns; c; c = c->next)
        close_quietly(c->s);
}

/* ------------------------------------------------------------- main */

static _Atomic bool g_poster_quit; /* relaxed: only ends a loop */

static void *poster_main(void *arg)
{
    (void)arg;
    unsigned n = 0;
    while (!atomic_load_explicit(&g_poster_quit, memory_order_relaxed)) {
        for (unsigned i = 0; i < 200; i++)
            post_to(n++ % WORKERS);
        soak_sleep(0.01);
    }
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: soak-mixed [--minutes M | --seconds S] [--clients C] [--requests-per-conn R] "
                    "[--pace-ms P]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    double seconds = 600;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        if (!strcmp(argv[i], "--minutes"))
            seconds = atof(argv[++i]) * 60;
        else if (!strcmp(argv[i], "--seconds"))
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--clients"))
            g_clients = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--requests-per-conn"))
            g_requests_per_conn = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--pace-ms"))
            g_pace_s = atof(argv[++i]) / 1000.0;
        else
            usage();
    }
    if (seconds < 2 || g_requests_per_conn == 0 || g_pace_s < 0)
        usage();

    iol_runtime_config cfg = {.workers = WORKERS, .on_start = on_worker_start};
    int r = iol_runtime_new(&g_rt, &cfg);
    if (r < 0) {
        fprintf(stderr, "soak-mixed: runtime: %s\n", strerror(-r));
        return 1;
    }
    iol_listen_config lc = {.host = "127.0.0.1", .shard = IOL_SHARD_REUSEPORT, .on_accept = on_accept};
    int id = iol_runtime_listen(g_rt, &lc);
    if (id < 0 || (r = iol_runtime_listener_port(g_rt, id)) <= 0) {
        fprintf(stderr, "soak-mixed: listen: %s\n", strerror(id < 0 ? -id : -r));
        return 1;
    }
    g_port = (uint16_t)r;
    if ((r = iol_runtime_start(g_rt)) < 0) {
        fprintf(stderr, "soak-mixed: start: %s\n", strerror(-r));
        return 1;
    }
    pthread_t poster;
    if (pthread_create(&poster, NULL, poster_main, NULL) != 0) {
        fprintf(stderr, "soak-mixed: pthread_create failed\n");
        return 1;
    }

    size_t nsamples = (size_t)seconds;
    uint64_t *rss = calloc(nsamples + 1, sizeof(uint64_t));
    if (!rss)
        return 1;
    double t0 = soak_now();
    for (size_t i = 0; i < nsamples; i++) {
        soak_sleep(t0 + (double)(i + 1) - soak_now());
        rss[i] = soak_rss_bytes();
        if ((i + 1) % 30 == 0 || i + 1 == nsamples)
            fprintf(stderr, "  %zu s: rss %.1f MiB, requests %llu, timers %llu, posts %llu\n", i + 1,
                    (double)rss[i] / 1048576.0, (unsigned long long)GET(requests_ok),
                    (unsigned long long)GET(timers_added), (unsigned long long)GET(posts_ran));
    }

    atomic_store_explicit(&g_poster_quit, true, memory_order_relaxed);
    pthread_join(poster, NULL);
    atomic_store_explicit(&g_stopping, true, memory_order_relaxed);
    iol_runtime_broadcast(g_rt, close_all, NULL);
    double wait_until = soak_now() + 10;
    while (atomic_load_explicit(&g_live_conns, memory_order_relaxed) > 0 && soak_now() < wait_until)
        soak_sleep(0.01);
    long leftover = atomic_load_explicit(&g_live_conns, memory_order_relaxed);
    iol_runtime_stop(g_rt);
    iol_runtime_join(g_rt);
    iol_runtime_free(g_rt);

    /* RSS: baseline at the end of the warm-up, compared with the end. */
    size_t warm = nsamples / 5;
    if (warm == 0)
        warm = 1;
    uint64_t base = rss[warm - 1], last = rss[nsamples - 1], lo = base, hi = base;
    for (size_t i = warm; i < nsamples; i++) {
        lo = rss[i] < lo ? rss[i] : lo;
        hi = rss[i] > hi ? rss[i] : hi;
    }
    double growth = (double)last - (double)base;
    double bound = (double)base * RSS_SLACK_RATIO;
    if (bound < RSS_SLACK_BYTES)
        bound = RSS_SLACK_BYTES;
    printf("rss KiB series (every %zu s):", nsamples > 20 ? nsamples / 20 : 1);
    for (size_t i = 0; i < nsamples; i += nsamples > 20 ? nsamples / 20 : 1)
        printf(" %llu", (unsigned long long)(rss[i] >> 10));
    printf("\nrss after warm-up (%zu s): base %llu KiB, min %llu, max %llu, last %llu, growth %+.0f KiB "
           "(bound %.0f KiB)\n",
           warm, (unsigned long long)(base >> 10), (unsigned long long)(lo >> 10), (unsigned long long)(hi >> 10),
           (unsigned long long)(last >> 10), growth / 1024, bound / 1024);
    printf("http: %llu requests ok (%.0f/s), %llu connects, %llu accepts, bad responses %llu, client errors %llu, "
           "server errors %llu, connect errors %llu\n",
           (unsigned long long)GET(requests_ok), (double)GET(requests_ok) / seconds,
           (unsigned long long)GET(connects), (unsigned long long)GET(accepts),
           (unsigned long long)GET(bad_responses), (unsigned long long)GET(client_errors),
           (unsigned long long)GET(server_errors), (unsigned long long)GET(connect_errors));
    if (GET(client_errors))
        printf("last client error: step %d, status %d (%s)\n",
               atomic_load_explicit(&g_last_client_error_site, memory_order_relaxed),
               atomic_load_explicit(&g_last_client_error_status, memory_order_relaxed),
               iol_strerror(atomic_load_explicit(&g_last_client_error_status, memory_order_relaxed)));
    printf("timers: %llu added, %llu fired, %llu removed, %llu already gone; periodic runs %llu, "
           "re-created %llu\n",
           (unsigned long long)GET(timers_added), (unsigned long long)GET(timers_fired),
           (unsigned long long)GET(timers_removed), (unsigned long long)GET(timers_gone),
           (unsigned long long)GET(periodic_runs), (unsigned long long)GET(periodic_recreated));
    printf("posts: %llu posted, %llu ran, %llu refused at stop; streams left open %ld\n",
           (unsigned long long)GET(posted), (unsigned long long)GET(posts_ran),
           (unsigned long long)GET(post_refused), leftover);
    free(rss);

    bool judge_rss = RSS_MEANINGFUL && !getenv("IOL_UNDER_VALGRIND");
    if (!judge_rss)
        printf("rss not judged under a sanitizer or valgrind\n");
    bool ok = (!judge_rss || growth <= bound) && GET(requests_ok) > 0 && GET(bad_responses) == 0 && GET(client_errors) == 0 &&
              GET(server_errors) == 0 && GET(connect_errors) == 0 && GET(timers_fired) > 0 &&
              GET(timers_removed) > 0 && GET(periodic_runs) > 0 && GET(posted) == GET(posts_ran) &&
              GET(posts_ran) > 0 && leftover == 0;
    printf("%s\n", ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
