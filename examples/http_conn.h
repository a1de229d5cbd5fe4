/* http-hello's request path without sockets: bytes in, response bytes out.
 *
 * http_conn_feed() parses what a connection sent (http-parser, pipelined
 * requests answered in order) and hands each response to the emit
 * callback as it is assembled; the caller decides where the bytes go (a
 * write buffer in http-hello, a byte array in tests/fuzz). After the call,
 * `closing` says whether a final response was produced (an error, or a
 * request without keep-alive): no more requests are answered then.
 */
#ifndef HTTP_CONN_H
#define HTTP_CONN_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define HTTP_MAX_HEADER_BYTES 8192 /* request line and headers; past it: 431 */
#define HTTP_IDLE_TIMEOUT 10       /* seconds */
#define HTTP_HEADER_TIMEOUT 10     /* seconds */

/* The Date header and the common response, rebuilt once a second; one per
 * thread in http-hello. */
typedef struct http_dates {
    char date[40];
    size_t date_len;
    time_t date_of;
    char ok[256]; /* GET, HTTP/1.1, keep-alive */
    size_t ok_len;
} http_dates;

typedef void (*http_emit_fn)(void *ud, const char *data, size_t len);

typedef struct http_conn {
    http_parser parser;
    const http_dates *dates;
    http_emit_fn emit;
    void *ud;
    bool closing;    /* a final response is out: no more requests (callers may set it) */
    bool clean_end;  /* closing after a complete request without keep-alive (not an error) */
    size_t unparsed; /* bytes of the last feed left unparsed (after a final response) */
    bool in_headers; /* a request began and its headers are not complete */
    bool in_message; /* a request began and is not complete (its body may be arriving) */
    long now;        /* the caller's coarse clock (seconds), for deadline */
    long deadline;   /* idle or header deadline on that clock */
    unsigned long requests; /* requests answered (statistics) */
} http_conn;

/* Once per process, before any connection: parser settings and limits. */
void http_conn_global_init(void);
void http_dates_init(http_dates *d);
/* Rebuilds the date strings when t is a new second. */
void http_dates_refresh(http_dates *d, time_t t);
void http_conn_init(http_conn *c, const http_dates *dates, http_emit_fn emit, void *ud, long now);
/* Parses len bytes that arrived at `now`; responses go to emit. */
void http_conn_feed(http_conn *c, const char *data, size_t len, long now);

#endif
