/* libFuzzer target: http-hello's request path (examples/http_conn.c).
 *
 * Input: one byte of chunking mode, one byte of seed, then the bytes a
 * client sends. They are fed to an http_conn in chunks (sizes from the
 * seed), as http-hello would: no more once the connection is closing;
 * in "finish" mode the connection is marked closing before one chunk, as
 * a graceful stop does. The responses collected must be well-formed
 * HTTP/1.1 with a Content-Length matching the body, and must answer,
 * in order, the requests a reference parser (http-parser run once over
 * the same bytes, unchunked) completes: 200 for GET/HEAD (no body for
 * HEAD), 405 otherwise, Connection headers per keep-alive, then 400 or
 * 431 if the bytes are malformed or the headers too large; after a
 * response without keep-alive or an error, nothing more, and the
 * connection is marked closing.
 */
#include <http_parser.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "examples/http_conn.h"

#define MAX_OUT (1u << 20)
#define MAX_MSGS 4096
#define DATE_T 784111777 /* Sun, 06 Nov 1994 08:49:37 GMT */

static void expect(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_http: %s\n", what);
        abort();
    }
}

/* ------------------------------------------------------------- collected */

typedef struct out {
    char *data;
    size_t len;
} out;

static void emit(void *ud, const char *data, size_t len)
{
    out *o = ud;
    expect(len > 0 && o->len + len <= MAX_OUT, "emit: empty or too much output");
    memcpy(o->data + o->len, data, len);
    o->len += len;
}

/* ------------------------------------------------------------- reference */

typedef struct msg {
    unsigned method;
    bool keep_alive, http10;
} msg;

typedef struct ref {
    msg m[MAX_MSGS];
    size_t n;
} ref;

static int ref_complete(http_parser *p)
{
    ref *r = p->data;
    bool keep_alive = http_should_keep_alive(p) && !p->upgrade;
    if (r->n < MAX_MSGS)
        r->m[r->n] = (msg){.method = p->method, .keep_alive = keep_alive,
                           .http10 = p->http_major == 1 && p->http_minor == 0};
    r->n++;
    if (!keep_alive)
        http_parser_pause(p, 1);
    return 0;
}

/* ------------------------------------------------------------ the checks */

typedef struct resp {
    int status;
    const char *connection; /* NULL: no Connection header */
    size_t connection_len;
    size_t content_length;
    const char *body;
} resp;

static const char *find(const char *p, const char *end, const char *s)
{
    size_t n = strlen(s);
    for (; p + n <= end; p++)
        if (memcmp(p, s, n) == 0)
            return p;
    return NULL;
}

/* Parses one response head at *at (no body); advances past "\r\n\r\n". */
static resp parse_head(const char **at, const char *end, const char *date)
{
    const char *p = *at;
    resp r = {0};
    expect(end - p >= 13 && memcmp(p, "HTTP/1.1 ", 9) == 0, "response does not start with HTTP/1.1");
    p += 9;
    for (int i = 0; i < 3; i++, p++) {
        expect(*p >= '0' && *p <= '9', "status is not 3 digits");
        r.status = r.status * 10 + (*p - '0');
    }
    expect(*p == ' ', "no reason phrase");
    const char *head_end = find(p, end, "\r\n\r\n");
    expect(head_end != NULL, "response head not terminated");
    const char *line = find(p, head_end + 2, "\r\n") + 2;
    int cl = 0, conn = 0, dates = 0;
    while (line < head_end + 2) {
        const char *eol = find(line, head_end + 2, "\r\n");
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        expect(colon && colon + 1 < eol && colon[1] == ' ', "malformed header line");
        size_t nlen = (size_t)(colon - line), vlen = (size_t)(eol - colon - 2);
        const char *v = colon + 2;
        if (nlen == 14 && memcmp(line, "Content-Length", 14) == 0) {
            expect(vlen > 0 && vlen < 10, "bad Content-Length");
            r.content_length = 0;
            for (size_t i = 0; i < vlen; i++) {
                expect(v[i] >= '0' && v[i] <= '9', "Content-Length not a number");
                r.content_length = r.content_length * 10 + (size_t)(v[i] - '0');
            }
            cl++;
        } else if (nlen == 10 && memcmp(line, "Connection", 10) == 0) {
            r.connection = v;
            r.connection_len = vlen;
            conn++;
        } else if (nlen == 4 && memcmp(line, "Date", 4) == 0) {
            expect(vlen == strlen(date) && memcmp(v, date, vlen) == 0, "wrong Date");
            dates++;
        }
        line = eol + 2;
    }
    expect(cl == 1 && conn <= 1 && dates == 1, "Content-Length, Connection or Date missing or repeated");
    *at = head_end + 4;
    return r;
}

static bool is(const char *v, size_t len, const char *s)
{
    return len == strlen(s) && memcmp(v, s, len) == 0;
}

/* The response at *at must answer m (NULL: the error response). */
static void check_response(const char **at, const char *end, const msg *m, int err_status, const char *date)
{
    resp r = parse_head(at, end, date);
    bool head = false;
    if (m) {
        bool ok = m->method == HTTP_GET || m->method == HTTP_HEAD;
        head = m->method == HTTP_HEAD;
        expect(r.status == (ok ? 200 : 405), "wrong status for the request");
        expect(r.content_length == (ok ? 13 : 18), "wrong Content-Length");
        if (!m->keep_alive)
            expect(r.connection && is(r.connection, r.connection_len, "close"), "no Connection: close");
        else if (m->http10)
            expect(r.connection && is(r.connection, r.connection_len, "keep-alive"), "no Connection: keep-alive");
        else
            expect(!r.connection, "Connection header on a keep-alive HTTP/1.1 response");
    } else {
        expect(r.status == err_status, "wrong error status");
        expect(r.connection && is(r.connection, r.connection_len, "close"), "error response without close");
    }
    if (!head) {
        expect((size_t)(end - *at) >= r.content_length, "body shorter than Content-Length");
        *at += r.content_length;
    }
}

/* ------------------------------------------------------------------ run */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    http_conn_global_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char outbuf[MAX_OUT];
    static ref r;
    if (size < 2)
        return 0;
    unsigned mode = data[0], seed = data[1] | 1u;
    const char *req = (const char *)data + 2;
    size_t len = size - 2;
    static const size_t max_chunk[4] = {1, 16, 512, (size_t)-1};
    size_t maxc = max_chunk[mode & 3];
    bool finish = mode & 4;
    unsigned finish_at = (mode >> 3) % 8; /* chunk index */

    http_dates dates;
    http_dates_init(&dates);
    http_dates_refresh(&dates, DATE_T);
    out o = {outbuf, 0};
    http_conn c;
    http_conn_init(&c, &dates, emit, &o, 100);

    size_t fed = 0;
    bool finished = false;
    for (unsigned i = 0; fed < len && !c.closing; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t n = maxc == 1 ? 1 : 1 + (seed >> 8) % (maxc == (size_t)-1 ? len : maxc);
        if (n > len - fed)
            n = len - fed;
        if (finish && i == finish_at) {
            c.closing = true; /* as http-hello's graceful stop */
            finished = true;
        }
        http_conn_feed(&c, req + fed, n, 100 + i);
        fed += n;
        if (finished)
            break;
    }

    http_parser_settings rs = {.on_message_complete = ref_complete};
    http_parser rp;
    http_parser_init(&rp, HTTP_REQUEST);
    r.n = 0;
    rp.data = &r;
    if (fed)
        http_parser_execute(&rp, &rs, req, fed);
    enum http_errno err = HTTP_PARSER_ERRNO(&rp);
    bool failed = err != HPE_OK && err != HPE_PAUSED;
    expect(r.n <= MAX_MSGS, "too many requests for the reference");

    const char *at = o.data, *end = o.data + o.len;
    bool closed_by_request = false;
    for (size_t i = 0; i < r.n; i++) {
        check_response(&at, end, &r.m[i], 0, dates.date);
        closed_by_request = !r.m[i].keep_alive;
    }
    if (failed && !finished)
        check_response(&at, end, NULL, err == HPE_HEADER_OVERFLOW ? 431 : 400, dates.date);
    expect(at == end, "more responses than requests");
    expect(c.closing == (finished || failed || closed_by_request), "closing is wrong");
    return 0;
}
