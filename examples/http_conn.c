/* http-hello's request path: parser callbacks, pipelining, limits and
 * response assembly, with no socket in sight (see http_conn.h). */
#include "http_conn.h"

#include <stdio.h>
#include <string.h>

static http_parser_settings settings;

#define LIT(s) s, sizeof(s) - 1

void http_dates_init(http_dates *d)
{
    memset(d, 0, sizeof(*d));
    d->date_of = (time_t)-1;
}

void http_dates_refresh(http_dates *d, time_t t)
{
    if (t == d->date_of)
        return;
    struct tm tm;
    gmtime_r(&t, &tm);
    d->date_len = strftime(d->date, sizeof(d->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    d->date_of = t;
    int n = snprintf(d->ok, sizeof(d->ok),
                     "HTTP/1.1 200 OK\r\nServer: ioloop\r\nDate: %s\r\nContent-Type: text/plain\r\n"
                     "Content-Length: 13\r\n\r\nHello, World!",
                     d->date);
    d->ok_len = n > 0 && (size_t)n < sizeof(d->ok) ? (size_t)n : 0;
}

/* ------------------------------------------------------------ responses */

static inline size_t put(char *dst, size_t n, const char *src, size_t len)
{
    memcpy(dst + n, src, len);
    return n + len;
}

static void respond(http_conn *c, const char *status, size_t status_len, const char *body, size_t body_len, bool head,
                    bool keep_alive, bool http10)
{
    char hdr[512];
    size_t n = 0;
    n = put(hdr, n, LIT("HTTP/1.1 "));
    n = put(hdr, n, status, status_len);
    n = put(hdr, n, LIT("\r\nServer: ioloop\r\nDate: "));
    n = put(hdr, n, c->dates->date, c->dates->date_len);
    n = put(hdr, n, LIT("\r\nContent-Type: text/plain\r\nContent-Length: "));
    char num[24];
    int numlen = snprintf(num, sizeof(num), "%zu", body_len);
    n = put(hdr, n, num, (size_t)numlen);
    if (!keep_alive)
        n = put(hdr, n, LIT("\r\nConnection: close"));
    else if (http10)
        n = put(hdr, n, LIT("\r\nConnection: keep-alive"));
    n = put(hdr, n, LIT("\r\n\r\n"));
    c->emit(c->ud, hdr, n);
    if (!head && body_len)
        c->emit(c->ud, body, body_len);
}

/* Error responses end the connection. */
static void respond_error(http_conn *c, const char *status, size_t status_len)
{
    if (c->closing)
        return;
    respond(c, status, status_len, status, status_len, false, false, false);
    c->closing = true;
}

/* ----------------------------------------------------- parser callbacks */

static int on_message_begin(http_parser *p)
{
    http_conn *c = p->data;
    c->in_headers = c->in_message = true;
    c->deadline = c->now + HTTP_HEADER_TIMEOUT;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    http_conn *c = p->data;
    c->in_headers = false;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    http_conn *c = p->data;
    bool keep_alive = http_should_keep_alive(p) && !p->upgrade;
    bool http10 = p->http_major == 1 && p->http_minor == 0;
    c->requests++;
    c->in_message = false;
    if (p->method == HTTP_GET && keep_alive && !http10 && c->dates->ok_len)
        c->emit(c->ud, c->dates->ok, c->dates->ok_len); /* the fast path: one memcpy */
    else if (p->method == HTTP_GET || p->method == HTTP_HEAD)
        respond(c, LIT("200 OK"), LIT("Hello, World!"), p->method == HTTP_HEAD, keep_alive, http10);
    else
        respond(c, LIT("405 Method Not Allowed"), LIT("Method Not Allowed"), false, keep_alive, http10);
    c->deadline = c->now + HTTP_IDLE_TIMEOUT;
    if (!keep_alive) {
        c->closing = true;
        c->clean_end = true;
        http_parser_pause(p, 1); /* nothing after it is answered */
    }
    return 0;
}

/* ------------------------------------------------------------ connection */

void http_conn_global_init(void)
{
    settings = (http_parser_settings){
        .on_message_begin = on_message_begin,
        .on_headers_complete = on_headers_complete,
        .on_message_complete = on_message_complete,
    };
    http_parser_set_max_header_size(HTTP_MAX_HEADER_BYTES);
}

void http_conn_init(http_conn *c, const http_dates *dates, http_emit_fn emit, void *ud, long now)
{
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->dates = dates;
    c->emit = emit;
    c->ud = ud;
    c->closing = c->in_headers = c->in_message = c->clean_end = false;
    c->requests = 0;
    c->unparsed = 0;
    c->now = now;
    c->deadline = now + HTTP_IDLE_TIMEOUT;
}

void http_conn_feed(http_conn *c, const char *data, size_t len, long now)
{
    c->now = now;
    if (!c->in_headers)
        c->deadline = now + HTTP_IDLE_TIMEOUT;
    size_t parsed = http_parser_execute(&c->parser, &settings, data, len);
    c->unparsed = len - parsed;
    enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
    if (err != HPE_OK && err != HPE_PAUSED) {
        c->clean_end = false;
        if (err == HPE_HEADER_OVERFLOW)
            respond_error(c, LIT("431 Request Header Fields Too Large"));
        else
            respond_error(c, LIT("400 Bad Request"));
    }
}
