#include "server.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static iol_runtime *the_runtime; /* for the signal handler */
static iol_tls_ctx *the_tls;     /* --tls-cert/--tls-key; read by workers after start */

iol_tls_ctx *example_server_tls(void)
{
    return the_tls;
}

static void stop_runtime(void *arg)
{
    iol_runtime_stop(arg);
}

static void on_signal(int signo)
{
    (void)signo;
    int saved = errno;
    /* Async-signal-safe; the stop itself runs on worker 0. */
    if (iol_loop_add_callback_from_signal(iol_runtime_loop(the_runtime, 0), stop_runtime, the_runtime) < 0)
        iol_runtime_stop(the_runtime); /* loop closed or reserve empty: a flag and a wakeup, safe here too */
    errno = saved;
}

static void usage(const char *name)
{
    fprintf(stderr, "usage: %s --port P --workers N [--shard reuseport|handoff] [--host H]"
                    " [--tls-cert FILE --tls-key FILE [--tls-no-resumption]]\n", name);
    exit(2);
}

int example_server_main(const example_server *srv, int argc, char **argv)
{
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'},  {"workers", required_argument, NULL, 'w'},
        {"shard", required_argument, NULL, 's'}, {"host", required_argument, NULL, 'H'},
        {"help", no_argument, NULL, 'h'},        {"tls-cert", required_argument, NULL, 'c'},
        {"tls-key", required_argument, NULL, 'k'}, {"tls-no-resumption", no_argument, NULL, 'R'},
        {NULL, 0, NULL, 0},
    };
    bool tls_no_resumption = false;
    const char *tls_cert = NULL, *tls_key = NULL;
    long port = srv->default_port, workers = 1;
    int shard = IOL_SHARD_REUSEPORT;
    const char *host = "127.0.0.1";
    int opt;
    while ((opt = getopt_long(argc, argv, "p:w:s:H:h", opts, NULL)) != -1) {
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
            fprintf(stderr, "%s: TLS certificate %s / key %s: %s\n", srv->name, tls_cert, tls_key, strerror(-r));
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
        fprintf(stderr, "%s: runtime: %s\n", srv->name, strerror(-r));
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
        fprintf(stderr, "%s: listen on %s:%ld: %s\n", srv->name, host, port, strerror(-id));
        iol_runtime_free(the_runtime);
        iol_tls_ctx_unref(the_tls);
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if ((r = iol_runtime_start(the_runtime)) < 0) {
        fprintf(stderr, "%s: start: %s\n", srv->name, strerror(-r));
        iol_runtime_free(the_runtime);
        iol_tls_ctx_unref(the_tls);
        return 1;
    }
    bool v6 = strchr(host, ':') != NULL;
    printf("listening on %s%s%s:%d\n", v6 ? "[" : "", host, v6 ? "]" : "", iol_runtime_listener_port(the_runtime, id));
    fflush(stdout);
    iol_runtime_join(the_runtime);
    if (srv->on_exit)
        srv->on_exit(the_runtime, id);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    iol_runtime_free(the_runtime);
    iol_tls_ctx_unref(the_tls);
    the_tls = NULL;
    return 0;
}
