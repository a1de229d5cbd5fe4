#include "server.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static iol_runtime *the_runtime;
static iol_loop *main_loop;       /* the main thread's: signals, --stats */
static iol_tls_ctx *the_tls;     /* --tls-cert/--tls-key; read by workers after start */

iol_tls_ctx *example_server_tls(void)
{
    return the_tls;
}

iol_runtime *example_server_runtime(void)
{
    return the_runtime;
}

/* On the main loop: stop taking work, then let main join the workers. */
static void stop_all(void *arg)
{
    (void)arg;
    iol_runtime_stop(the_runtime);
    iol_loop_stop(main_loop);
}

/* SIGINT/SIGTERM, on the main loop's thread (iol_loop_add_signal). */
static void on_signal(int signo, void *arg)
{
    (void)signo;
    stop_all(arg);
}

/* --stats: what each worker did since the last line. */
typedef struct stats_printer {
    const example_server *srv;
    double period;
    unsigned n;
    iol_runtime_stats *last;
    uint64_t *last_requests;
} stats_printer;

static double per_second(uint64_t now, uint64_t before, double period)
{
    return (double)(now - before) / period;
}

static void print_stats(void *arg)
{
    stats_printer *p = arg;
    for (unsigned i = 0; i < p->n; i++) {
        iol_runtime_stats st;
        if (iol_runtime_get_stats(the_runtime, i, &st, sizeof st) < 0)
            continue;
        iol_runtime_stats *was = &p->last[i];
        uint64_t busy = st.loop.busy_ns - was->loop.busy_ns;
        uint64_t waited = st.loop.wait_ns + st.loop.current_poll_ns, waited_before = was->loop.wait_ns + was->loop.current_poll_ns;
        uint64_t wait = waited > waited_before ? waited - waited_before : 0;
        uint64_t requests = p->srv->requests ? p->srv->requests(i) : 0;
        printf("stats worker %u: requests %.0f/s, connections %llu open (%.0f/s accepted), busy %.1f%%, "
               "wakeups %.0f/s\n",
               i, per_second(requests, p->last_requests[i], p->period), (unsigned long long)st.loop.handlers,
               per_second(st.accepted, was->accepted, p->period),
               busy + wait ? 100.0 * (double)busy / (double)(busy + wait) : 0.0,
               per_second(st.loop.wakeups, was->loop.wakeups, p->period));
        *was = st;
        p->last_requests[i] = requests;
    }
    fflush(stdout);
}

static void usage(const char *name)
{
    fprintf(stderr, "usage: %s --port P --workers N [--shard reuseport|handoff] [--host H] [--stats S]"
                    " [--tls-cert FILE --tls-key FILE [--tls-no-resumption]]\n", name);
    exit(2);
}

int example_server_main(const example_server *srv, int argc, char **argv)
{
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'},  {"workers", required_argument, NULL, 'w'},
        {"shard", required_argument, NULL, 's'}, {"host", required_argument, NULL, 'H'},
        {"stats", required_argument, NULL, 'S'}, {"help", no_argument, NULL, 'h'},
        {"tls-cert", required_argument, NULL, 'c'}, {"tls-key", required_argument, NULL, 'k'},
        {"tls-no-resumption", no_argument, NULL, 'R'}, {NULL, 0, NULL, 0},
    };
    double stats_period = 0;
    bool tls_no_resumption = false;
    const char *tls_cert = NULL, *tls_key = NULL;
    long port = srv->default_port, workers = 1;
    int shard = IOL_SHARD_REUSEPORT;
    const char *host = "127.0.0.1";
    int opt;
    while ((opt = getopt_long(argc, argv, "p:w:s:H:S:h", opts, NULL)) != -1) {
        char *end;
        switch (opt) {
        case 'p':
            port = strtol(optarg, &end, 10);
            if (*end || port < 0 || port > 65535)
                usage(srv->name);
            break;
        case 'w':
            workers = strtol(optarg, &end, 10);
            if (*end || workers < 0 || workers > 4096)
                usage(srv->name);
            break;
        case 's':
            if (strcmp(optarg, "reuseport") == 0)
                shard = IOL_SHARD_REUSEPORT;
            else if (strcmp(optarg, "handoff") == 0)
                shard = IOL_SHARD_HANDOFF;
            else
                usage(srv->name);
            break;
        case 'H':
            host = optarg;
            break;
        case 'S':
            stats_period = strtod(optarg, &end);
            if (*end || !(stats_period > 0 && stats_period <= 86400))
                usage(srv->name);
            break;
        case 'c':
            tls_cert = optarg;
            break;
        case 'k':
            tls_key = optarg;
            break;
        case 'R':
            tls_no_resumption = true; /* every handshake a full one (benchmarks) */
            break;
        default:
            usage(srv->name);
        }
    }
    if (optind != argc || !tls_cert != !tls_key)
        usage(srv->name);
    signal(SIGPIPE, SIG_IGN);
    if (tls_cert) {
        iol_tls_config tc = {.server = true, .cert_file = tls_cert, .key_file = tls_key, .alpn = srv->alpn,
                             .no_resumption = tls_no_resumption};
        int r = iol_tls_ctx_new(&the_tls, &tc);
        if (r < 0) {
            fprintf(stderr, "%s: TLS certificate %s / key %s: %s\n", srv->name, tls_cert, tls_key, iol_strerror(r));
            return 1;
        }
    }

    iol_runtime_config rc = {
        .workers = (unsigned)workers,
        .on_start = srv->on_start,
        .on_stop = srv->on_stop,
        .on_drain = srv->on_drain,
        .drain_timeout = srv->drain_timeout,
    };
    int r = iol_runtime_new(&the_runtime, &rc);
    if (r < 0) {
        fprintf(stderr, "%s: runtime: %s\n", srv->name, iol_strerror(r));
        iol_tls_ctx_unref(the_tls);
        return 1;
    }
    iol_listen_config lc = srv->listen;
    lc.host = host;
    lc.port = (uint16_t)port;
    lc.shard = shard;
    lc.on_accept = srv->on_accept;
    int id = iol_runtime_listen(the_runtime, &lc);
    if (id < 0) {
        fprintf(stderr, "%s: listen on %s:%ld: %s\n", srv->name, host, port, iol_strerror(id));
        iol_runtime_free(the_runtime);
        iol_tls_ctx_unref(the_tls);
        return 1;
    }
    if ((r = iol_loop_new(&main_loop, NULL)) < 0) {
        fprintf(stderr, "%s: loop: %s\n", srv->name, iol_strerror(r));
        iol_runtime_free(the_runtime);
        return 1;
    }
    /* Before start: the workers the runtime creates block them anyway. */
    if ((r = iol_loop_add_signal(main_loop, SIGINT, on_signal, NULL)) < 0 ||
        (r = iol_loop_add_signal(main_loop, SIGTERM, on_signal, NULL)) < 0) {
        fprintf(stderr, "%s: signals: %s\n", srv->name, iol_strerror(r));
        iol_runtime_free(the_runtime);
        iol_loop_close(main_loop, false);
        iol_tls_ctx_unref(the_tls);
        return 1;
    }
    if ((r = iol_runtime_start(the_runtime)) < 0) {
        fprintf(stderr, "%s: start: %s\n", srv->name, iol_strerror(r));
        iol_runtime_free(the_runtime);
        iol_loop_close(main_loop, false);
        iol_tls_ctx_unref(the_tls);
        return 1;
    }
    bool v6 = strchr(host, ':') != NULL;
    printf("listening on %s%s%s:%d\n", v6 ? "[" : "", host, v6 ? "]" : "", iol_runtime_listener_port(the_runtime, id));
    fflush(stdout);
    stats_printer printer = {.srv = srv, .period = stats_period, .n = iol_runtime_size(the_runtime)};
    iol_periodic *stats_timer = NULL;
    if (stats_period > 0) {
        printer.last = calloc(printer.n, sizeof *printer.last);
        printer.last_requests = calloc(printer.n, sizeof *printer.last_requests);
        if (!printer.last || !printer.last_requests ||
            iol_periodic_new(&stats_timer, main_loop, stats_period * 1000, print_stats, &printer) < 0 ||
            iol_periodic_start(stats_timer) < 0)
            fprintf(stderr, "%s: --stats: out of memory\n", srv->name);
    }
    iol_loop_start(main_loop); /* until SIGINT/SIGTERM */
    iol_periodic_free(stats_timer);
    free(printer.last);
    free(printer.last_requests);
    iol_runtime_join(the_runtime);
    if (srv->on_exit)
        srv->on_exit(the_runtime, id);
    iol_runtime_free(the_runtime);
    iol_loop_close(main_loop, false); /* gives SIGINT/SIGTERM back */
    iol_tls_ctx_unref(the_tls);
    the_tls = NULL;
    return 0;
}
