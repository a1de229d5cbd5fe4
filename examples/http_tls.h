/* http-hello over TLS (--tls-cert/--tls-key): the same request path
 * (http_conn.c) on TLS streams. The plain path in http_hello.c is
 * untouched; it hands an accepted fd here when TLS is on. Per worker
 * thread, like the plain path. */
#ifndef HTTP_TLS_H
#define HTTP_TLS_H

#include <stdatomic.h>
#include <stdint.h>

#include "http_conn.h"
#include "ioloop.h"

/* Serves fd over TLS (takes it), or plain with ctx NULL (on a uring loop:
 * streams then take the completion path); dates: the worker's, refreshed
 * here too. */
/* requests (may be NULL): the worker's --stats counter, written by this
 * worker only (relaxed load and store). */
void http_tls_accept(iol_loop *loop, int fd, iol_tls_ctx *ctx, http_dates *dates, long now,
                     _Atomic uint64_t *requests);
/* Closes connections past their idle/header deadline. */
void http_tls_sweep(long now);
/* Graceful stop: idle connections close now (close_notify), busy ones
 * once their responses are out. */
void http_tls_drain(void);
/* Closes what is left. */
void http_tls_stop(void);
/* This thread's connections that hold a parser (a request in progress):
 * one between requests holds none. For tests. */
unsigned http_tls_parsers(void);

#endif
