/* examples/ — what every example server's main does: parse
 * `--port P --workers N [--shard reuseport|handoff] [--host H] [--stats S]`,
 * start a runtime with one listener, print "listening on HOST:PORT", run a
 * loop on the main thread (with --stats: one line per worker every S
 * seconds), stop gracefully on SIGINT/SIGTERM, and join. */
#ifndef IOL_EXAMPLE_SERVER_H
#define IOL_EXAMPLE_SERVER_H

#include "ioloop.h"

typedef struct example_server {
    const char *name;          /* for messages and usage */
    uint16_t default_port;
    void (*on_start)(iol_loop *loop, unsigned index, void *arg);
    void (*on_stop)(iol_loop *loop, unsigned index, void *arg);
    void (*on_drain)(iol_loop *loop, unsigned index, void *arg);
    double drain_timeout;
    iol_accept_fn on_accept;
    iol_listen_config listen; /* nodelay, defer_accept; the rest is set from argv */
    /* Requests worker `index` has answered so far, for the --stats line
     * (any thread; may be NULL: the line then has no requests). */
    uint64_t (*requests)(unsigned index);
    /* After the workers stopped, before the runtime is freed (may be NULL). */
    void (*on_exit)(iol_runtime *rt, int listener_id);
    const char *alpn; /* with --tls-cert: the ALPN list offered (may be NULL) */
} example_server;

/* Runs the server until SIGINT/SIGTERM; returns the process exit status.
 * `--tls-cert FILE --tls-key FILE` (both or neither) make a TLS server
 * context first, with ALPN alpn (may be NULL); see example_server_tls. */
int example_server_main(const example_server *srv, int argc, char **argv);
/* The TLS context of --tls-cert/--tls-key, NULL without them: the same
 * one for every worker. Valid while the runtime runs. */
iol_tls_ctx *example_server_tls(void);
/* The runtime the server runs on (for posts and broadcasts between
 * workers). Valid while the workers run. */
iol_runtime *example_server_runtime(void);

#endif
