/*
 * net/stream_read_more.c — the reads Tornado has beyond read_until and
 * read_bytes: read_until_regex (POSIX extended regular expressions),
 * read_into (the caller's buffer), and streaming reads that hand each
 * batch of bytes over as it arrives (Tornado's streaming_callback).
 *
 * They ride on the pending-read machinery of stream_read.c: a regex read
 * is a READ_UNTIL whose end is found by regexec instead of memmem, and a
 * streaming read (read_into is one, its batches copied into the caller's
 * buffer) is a READ_BYTES or READ_UNTIL_CLOSE with s->read_streaming, so
 * its bytes never pile up in the read buffer: the buffer holds at most
 * what one recv brought, whatever the read's size. read_into on the fd
 * handler's path receives straight into the caller's buffer once the
 * read buffer is empty (no copy); the ring and TLS paths copy once.
 */
#include "net/stream_impl.h"

#include <errno.h>
#include <limits.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loop/status.h"

struct stream_regex {
    regex_t re;
};

/* ------------------------------------------------------------------ Regex */

size_t iol__stream_regex_ready(iol_stream *s)
{
    size_t len = iol__buffer_len(&s->rbuf);
    if (len == 0)
        return 0;
    if (len > INT_MAX)
        len = INT_MAX; /* regoff_t is an int: the match must end within it */
    /* REG_STARTEND: the buffer is not NUL-terminated and may hold NULs;
     * the whole buffer is searched again each time, as Tornado does (a
     * match may start anywhere, and more bytes may make an earlier one). */
    regmatch_t m = {.rm_so = 0, .rm_eo = (regoff_t)len};
    if (regexec(&s->ext->regex->re, iol__buffer_data(&s->rbuf), 1, &m, REG_STARTEND) != 0)
        return 0;
    return (size_t)m.rm_eo;
}

void iol__stream_regex_clear(iol_stream *s)
{
    regfree(&s->ext->regex->re);
    free(s->ext->regex);
    s->ext->regex = NULL;
}

/* -------------------------------------------------------------- Streaming */

/* Ends a streaming read: done(s, data, len, status) where data/len are
 * the caller's buffer and what was copied into it (read_into), or
 * NULL/0 (every byte went to the chunk callback). */
static void streaming_end(iol_stream *s, int status)
{
    stream_ext *x = s->ext;
    iol_read_fn cb = s->read_cb;
    void *arg = s->read_arg;
    const char *data = x->into;
    size_t len = x->into ? x->into_filled : 0;
    s->read_kind = READ_NONE;
    s->read_cb = NULL;
    s->read_arg = NULL;
    s->read_streaming = false;
    x->into = NULL;
    x->into_len = x->into_filled = 0;
    x->read_chunk = NULL;
    cb(s, data, len, iol__loop_status(s->loop, status), arg);
}

void iol__stream_deliver_chunk(iol_stream *s, size_t n)
{
    stream_ext *x = s->ext;
    const char *data = iol__buffer_data(&s->rbuf);
    /* Consumed first (as iol__stream_deliver): data stays valid, since
     * only a socket read writes into the buffer, never inside a call. */
    iol__buffer_consume(&s->rbuf, n);
    bool last = false;
    if (s->read_kind == READ_BYTES) {
        s->read_n -= n;
        last = s->read_n == 0 || (x->into && s->read_partial);
    }
    if (x->into) {
        memcpy(x->into + x->into_filled, data, n);
        x->into_filled += n;
    } else {
        x->read_chunk(s, data, n, 0, s->read_arg);
    }
    iol__buffer_trim(&s->rbuf);
    if (last && s->read_streaming)
        streaming_end(s, 0);
}

ssize_t iol__stream_recv_into(iol_stream *s, bool *drained)
{
    stream_ext *x = s->ext;
    size_t room = s->read_n;
    ssize_t n = iol__stream_recv_raw(s, x->into + x->into_filled, room);
    if (n <= 0)
        return n;
    *drained = (size_t)n < room;
    x->into_filled += (size_t)n;
    s->read_n -= (size_t)n;
    if (s->read_n == 0 || s->read_partial)
        streaming_end(s, 0);
    return n;
}

void iol__stream_streaming_close(iol_stream *s, int status)
{
    /* At the peer's EOF, what is buffered (a paused read's bytes) is still
     * the peer's data: handed over before the end. */
    size_t len = iol__buffer_len(&s->rbuf);
    if (s->eof && len > 0) {
        if (s->read_kind == READ_BYTES && len > s->read_n)
            len = s->read_n;
        iol__stream_deliver_chunk(s, len);
    }
    if (s->read_streaming)
        streaming_end(s, s->read_kind == READ_UNTIL_CLOSE && s->eof ? 0 : status);
}

/* ------------------------------------------------------------- Public API */

/* The checks every read call makes first; 0 or the call's -errno. */
static int read_call_check(iol_stream *s, iol_read_fn cb)
{
    if (!s)
        return -EINVAL;
    int r = iol__stream_check_thread(s);
    if (r)
        return r;
    if (!cb)
        return -EINVAL;
    return 0;
}

int iol_stream_read_until_regex(iol_stream *s, const char *pattern, size_t max_bytes, iol_read_fn cb, void *arg)
{
    int r = read_call_check(s, cb);
    if (r < 0)
        return r;
    if (!pattern || pattern[0] == '\0')
        return -EINVAL;
    r = iol__stream_check_read(s);
    if (r < 0)
        return r;
    stream_ext *x = iol__stream_ext(s);
    struct stream_regex *re = x ? malloc(sizeof(*re)) : NULL;
    if (!re)
        return -ENOMEM;
    int rc = regcomp(&re->re, pattern, REG_EXTENDED);
    if (rc != 0) {
        free(re);
        return rc == REG_ESPACE ? -ENOMEM : -EINVAL;
    }
    /* A pattern that matches nothing at all would answer the read with no
     * bytes, again and again: refused. */
    regmatch_t m = {.rm_so = 0, .rm_eo = 0};
    if (regexec(&re->re, "", 1, &m, REG_STARTEND) == 0) {
        regfree(&re->re);
        free(re);
        return -EINVAL;
    }
    x->regex = re;
    x->read_max = max_bytes;
    x->scan_pos = 0;
    s->read_kind = READ_UNTIL;
    s->read_cb = cb;
    s->read_arg = arg;
    return iol__stream_arm_read(s);
}

/* The streaming reads' start once their own arguments passed: the stream
 * takes a read (iol__stream_check_read) and has its extension (*x); 0 or
 * the call's -errno. */
static int streaming_begin(iol_stream *s, stream_ext **x)
{
    int r = iol__stream_check_read(s);
    if (r < 0)
        return r;
    *x = iol__stream_ext(s);
    return *x ? 0 : -ENOMEM;
}

/* Their end: the read's kind, size and callback, then armed. */
static int streaming_arm(iol_stream *s, stream_read_kind kind, size_t n, bool partial, iol_read_fn cb, void *arg)
{
    s->read_kind = kind;
    s->read_n = n;
    s->read_partial = partial;
    s->read_streaming = true;
    s->read_cb = cb;
    s->read_arg = arg;
    return iol__stream_arm_read(s);
}

int iol_stream_read_into(iol_stream *s, void *buf, size_t len, bool partial, iol_read_fn cb, void *arg)
{
    int r = read_call_check(s, cb);
    if (r < 0)
        return r;
    if (!buf || len == 0)
        return -EINVAL;
    stream_ext *x;
    if ((r = streaming_begin(s, &x)) < 0)
        return r;
    x->into = buf;
    x->into_len = len;
    x->into_filled = 0;
    x->read_chunk = NULL;
    return streaming_arm(s, READ_BYTES, len, partial, cb, arg);
}

static int streaming_read(iol_stream *s, stream_read_kind kind, size_t n, iol_read_fn chunk, iol_read_fn done,
                          void *arg)
{
    int r = read_call_check(s, done);
    if (r < 0)
        return r;
    if (!chunk || (kind == READ_BYTES && n == 0))
        return -EINVAL;
    stream_ext *x;
    if ((r = streaming_begin(s, &x)) < 0)
        return r;
    x->into = NULL;
    x->read_chunk = chunk;
    return streaming_arm(s, kind, n, false, done, arg);
}

int iol_stream_read_bytes_streaming(iol_stream *s, size_t n, iol_read_fn chunk, iol_read_fn done, void *arg)
{
    return streaming_read(s, READ_BYTES, n, chunk, done, arg);
}

int iol_stream_read_until_close_streaming(iol_stream *s, iol_read_fn chunk, iol_read_fn done, void *arg)
{
    return streaming_read(s, READ_UNTIL_CLOSE, 0, chunk, done, arg);
}
