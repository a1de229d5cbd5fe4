/* libFuzzer target: stream read framing against a model.
 *
 * The input is a little program (see parse()): chunks the peer writes on
 * the other end of a socketpair (literal bytes, runs of one byte, pieces
 * of a read_until delimiter), reads the test asks of the stream
 * (read_until, read_bytes partial or not, read_until_close; issued from
 * the previous read's callback or from outside), the stream's
 * max_buffer_size, a close callback or not, and closes from either side.
 *
 * After each step the loop runs until it is quiet (settle()), and the
 * callbacks seen so far must equal what model_run() predicts: which read
 * completed, with which status and exactly which bytes. The model is plain
 * C from the API contract: a pending read is answered from the buffer as
 * soon as it can be; otherwise the stream reads what the socket holds, up
 * to max_buffer_size; a read the full buffer cannot answer fails with
 * -ENOBUFS (read_until_close only past it: at the limit one byte more is
 * read, and EOF then delivers the max_buffer_size bytes); EOF completes
 * read_until_close (status 0) and fails the others with IOL_EOF (our own
 * close: -EPIPE); an idle stream with a close callback and an empty buffer
 * reads too (to notice the peer closing). The loop settles after each
 * chunk and the socket never holds more than the stream's least read size
 * (64 KiB), so a read takes all of it (up to the buffer's limit) and even
 * partial reads have exact sizes. Up to 256 KiB in all, so the buffer
 * grows, slides and shrinks.
 *
 * Any mismatch abort()s with both logs on stderr.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ioloop.h"

#define MAX_DATA (256u << 10) /* all chunks together */
#define MAX_OPS 256
#define MAX_LOG 512
#define READ_CHUNK 65536 /* the stream's least read size (and its idle read size) */

enum { OP_WRITE, OP_READ, OP_BUSY, OP_CLOSE, OP_PEER_CLOSE };
enum { R_UNTIL, R_BYTES, R_CLOSE };

typedef struct rop {
    int kind;
    bool chained; /* issued from the previous read's callback */
    bool partial;
    size_t n;
    char delim[8]; /* NUL-terminated, non-empty */
} rop;

typedef struct op {
    int kind;
    size_t len; /* OP_WRITE: bytes of data[] */
    int read;   /* OP_READ: index into reads[] */
} op;

/* One callback as seen (or predicted). */
typedef struct entry {
    int read;   /* index into reads[], -1: the close callback */
    int status;
    size_t off, len; /* bytes at off in the log's data */
} entry;

typedef struct log {
    entry e[MAX_LOG];
    size_t n;
    char *data; /* delivered bytes, concatenated */
    size_t data_len;
} log_t;

typedef struct prog {
    size_t max_buffer; /* as given to iol_stream_new (0: default) */
    bool close_cb;
    bool peer_close_at_end;
    char data[MAX_DATA];
    size_t data_len;
    op ops[MAX_OPS];
    size_t nops;
    rop reads[MAX_OPS];
    size_t nreads;
} prog;

/* ------------------------------------------------------------- the model */

typedef struct model {
    const prog *p;
    size_t limit;   /* effective max buffer */
    char *sent;     /* the bytes the peer wrote */
    size_t written;
    size_t pos;     /* bytes consumed by reads */
    size_t buf;     /* bytes in the stream's buffer (at pos) */
    bool peer_closed;
    bool closed;
    int pending;    /* read index, -1: none */
    size_t tried;   /* read_until: no delim starts before this offset (from pos) */
    size_t next;    /* next read to issue */
    log_t log;
} model;

static void log_add(log_t *l, int read, int status, const char *data, size_t len)
{
    if (l->n == MAX_LOG)
        abort(); /* MAX_OPS bounds the callbacks */
    l->e[l->n++] = (entry){.read = read, .status = status, .off = l->data_len, .len = len};
    if (len) {
        memcpy(l->data + l->data_len, data, len);
        l->data_len += len;
    }
}

/* Offset past the first delim in data[0, len), 0 if none; no delim
 * starts before *from, which moves to the first start not yet tried.
 * Byte by byte, unlike the stream's memchr/memmem. No coverage hooks:
 * the fuzzer learns nothing from the model, and on 256 KiB buffers its
 * loops cost more than the stream. */
#if defined(__clang__)
__attribute__((no_sanitize("coverage"), noinline))
#endif
static size_t naive_find(const char *data, size_t len, const char *delim, size_t *from)
{
    size_t dlen = strlen(delim), i = *from;
    for (; i + dlen <= len; i++) {
        size_t k = 0;
        while (k < dlen && data[i + k] == delim[k])
            k++;
        if (k == dlen)
            return i + dlen;
    }
    *from = i;
    return 0;
}

/* Bytes of the buffer that answer read r, 0: not yet. */
static size_t model_ready(model *m, const rop *r)
{
    const char *at = m->sent + m->pos;
    switch (r->kind) {
    case R_UNTIL:
        return naive_find(at, m->buf, r->delim, &m->tried);
    case R_BYTES:
        if (m->buf >= r->n)
            return r->n;
        return r->partial ? m->buf : 0;
    default:
        return 0;
    }
}

static void model_close(model *m, int error, bool eof)
{
    m->closed = true;
    if (m->pending >= 0) {
        const rop *r = &m->p->reads[m->pending];
        if (r->kind == R_CLOSE) {
            log_add(&m->log, m->pending, eof ? 0 : (error ? error : -EPIPE), m->sent + m->pos, m->buf);
            m->pos += m->buf;
            m->buf = 0;
        } else {
            /* the peer's clean close is IOL_EOF; ours is -EPIPE */
            log_add(&m->log, m->pending, error ? error : eof ? IOL_EOF : -EPIPE, NULL, 0);
        }
        m->pending = -1;
    }
    if (m->p->close_cb)
        log_add(&m->log, -1, 0, NULL, 0);
}

static bool next_is_chained(const model *m)
{
    return m->next < m->p->nreads && m->p->reads[m->next].chained;
}

/* Everything that happens until the stream waits again. */
static void model_run(model *m)
{
    while (!m->closed) {
        if (m->pending >= 0) {
            size_t n = model_ready(m, &m->p->reads[m->pending]);
            if (n > 0) {
                log_add(&m->log, m->pending, 0, m->sent + m->pos, n);
                m->pos += n;
                m->buf -= n;
                m->pending = next_is_chained(m) ? (int)m->next++ : -1;
                m->tried = 0;
                continue;
            }
            /* Past the limit; read_until_close may hold exactly the limit
             * (Tornado fails only past it): one byte more tells. */
            bool until_close = m->p->reads[m->pending].kind == R_CLOSE;
            if (until_close ? m->buf > m->limit : m->buf >= m->limit) {
                model_close(m, -ENOBUFS, false);
                break;
            }
        }
        size_t room;
        if (m->pending >= 0)
            room = m->buf < m->limit ? m->limit - m->buf : 1;
        else if (m->p->close_cb && m->buf == 0)
            room = m->limit < READ_CHUNK ? m->limit : READ_CHUNK;
        else
            break; /* not reading */
        size_t sock = m->written - m->pos - m->buf;
        if (sock > 0) {
            m->buf += sock < room ? sock : room;
        } else if (m->peer_closed) {
            model_close(m, 0, true);
        } else {
            break;
        }
    }
}

/* --------------------------------------------------------- the real thing */

typedef struct harness {
    const prog *p;
    iol_loop *loop;
    iol_stream *s;
    bool dead;    /* closed: s must not be touched outside its callbacks */
    int fd;       /* the stream's fd, while !dead */
    int peer;
    int pending;  /* read index, -1: none */
    size_t next;
    log_t log;
    /* settle() */
    size_t quiet, ticks, last_n;
    int last_unread;
} harness;

static void on_read(iol_stream *s, const char *data, size_t len, int status, void *arg);

static int issue(harness *h, int idx)
{
    const rop *r = &h->p->reads[idx];
    switch (r->kind) {
    case R_UNTIL:
        return iol_stream_read_until(h->s, r->delim, on_read, h);
    case R_BYTES:
        return iol_stream_read_bytes(h->s, r->n, r->partial, on_read, h);
    default:
        return iol_stream_read_until_close(h->s, on_read, h);
    }
}

static void expect(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_stream: %s\n", what);
        abort();
    }
}

static void on_read(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    harness *h = arg;
    expect(s == h->s && h->pending >= 0, "read callback without a pending read");
    expect(len == 0 || data, "NULL data with a length");
    int idx = h->pending;
    h->pending = -1;
    log_add(&h->log, idx, status, data, len);
    bool eof_done = status == 0 && h->p->reads[idx].kind == R_CLOSE;
    if (status < 0 || eof_done) {
        h->dead = true;
        expect(iol_stream_closed(s), "read failed but the stream is open");
        expect(iol_stream_read_bytes(s, 1, false, on_read, h) == -EPIPE, "read on a closed stream is not -EPIPE");
        return;
    }
    if (h->next < h->p->nreads && h->p->reads[h->next].chained) {
        int r = issue(h, (int)h->next);
        expect(r == 0, "chained read refused");
        h->pending = (int)h->next++;
    }
}

static void on_close(iol_stream *s, void *arg)
{
    harness *h = arg;
    expect(s == h->s, "close callback for another stream");
    expect(h->pending < 0, "close callback before the pending read failed");
    h->dead = true;
    log_add(&h->log, -1, 0, NULL, 0);
}

/* One loop iteration per tick (a queued callback makes the poll
 * non-blocking); quiet when three ticks in a row saw no callback and no
 * change in what the socket holds for the stream. */
static void tick(void *arg)
{
    harness *h = arg;
    int unread = -1;
    if (!h->dead && ioctl(h->fd, FIONREAD, &unread) < 0)
        unread = -2;
    if (h->log.n == h->last_n && unread == h->last_unread)
        h->quiet++;
    else
        h->quiet = 0;
    h->last_n = h->log.n;
    h->last_unread = unread;
    expect(++h->ticks < 100000, "the loop never settles");
    if (h->quiet >= 3 || iol_loop_add_callback(h->loop, tick, h) < 0)
        iol_loop_stop(h->loop);
}

static void settle(harness *h)
{
    h->quiet = 0;
    h->ticks = 0;
    h->last_n = (size_t)-1;
    expect(iol_loop_add_callback(h->loop, tick, h) == 0, "add_callback");
    expect(iol_loop_start(h->loop) == 0, "loop start");
}

static void dump(const char *name, const log_t *l)
{
    fprintf(stderr, "%s:\n", name);
    for (size_t i = 0; i < l->n; i++)
        fprintf(stderr, "  read %d status %d len %zu\n", l->e[i].read, l->e[i].status, l->e[i].len);
}

static void compare(const harness *h, const model *m)
{
    bool same = h->log.n == m->log.n && h->log.data_len == m->log.data_len &&
                memcmp(h->log.data, m->log.data, h->log.data_len) == 0;
    for (size_t i = 0; same && i < h->log.n; i++)
        same = h->log.e[i].read == m->log.e[i].read && h->log.e[i].status == m->log.e[i].status &&
               h->log.e[i].len == m->log.e[i].len;
    if (!same) {
        dump("stream", &h->log);
        dump("model", &m->log);
        expect(false, "stream and model disagree");
    }
}

/* ----------------------------------------------------------------- input */

typedef struct reader {
    const uint8_t *d;
    size_t n;
} reader;

static unsigned take(reader *r)
{
    if (r->n == 0)
        return 0;
    r->n--;
    return *r->d++;
}

static void parse(prog *p, const uint8_t *d, size_t n)
{
    reader r = {d, n};
    const char *delim = "\n"; /* the last read_until's */
    unsigned b = take(&r);
    switch (b & 3) {
    case 0: p->max_buffer = 0; break;                      /* default: 100 MiB */
    case 1: p->max_buffer = 1 + take(&r); break;           /* 1..256 */
    case 2: p->max_buffer = 1 + (take(&r) << 8 | take(&r)) % 4096; break;
    default: p->max_buffer = 1 + take(&r) % 16; break;
    }
    p->close_cb = b & 4;
    p->peer_close_at_end = b & 8;
    while (r.n > 0 && p->nops < MAX_OPS) {
        unsigned c = take(&r);
        op *o = &p->ops[p->nops];
        switch (c % 8) {
        case 0:
        case 1: { /* literal chunk: 1..64 bytes */
            size_t len = 1 + (c >> 3) % 64;
            if (len > r.n)
                len = r.n;
            if (len == 0 || p->data_len + len > MAX_DATA)
                continue;
            memcpy(p->data + p->data_len, r.d, len);
            r.d += len;
            r.n -= len;
            *o = (op){.kind = OP_WRITE, .len = len};
            break;
        }
        case 2: {
            if (c & 16) { /* a piece of the last read_until's delimiter: split delimiters */
                size_t dlen = strlen(delim), from = (c >> 5) % dlen;
                size_t len = 1 + take(&r) % (dlen - from);
                if (p->data_len + len > MAX_DATA)
                    continue;
                memcpy(p->data + p->data_len, delim + from, len);
                *o = (op){.kind = OP_WRITE, .len = len};
                break;
            }
            /* filled chunk: up to 4 KiB (or 64 KiB) of one byte */
            size_t len = take(&r) << 8;
            len = 1 + ((len | take(&r)) % ((c & 8) ? READ_CHUNK : 4096));
            if (p->data_len + len > MAX_DATA)
                continue;
            memset(p->data + p->data_len, (int)take(&r), len);
            *o = (op){.kind = OP_WRITE, .len = len};
            break;
        }
        case 3:
        case 4:
        case 5: {
            rop *rd = &p->reads[p->nreads];
            *rd = (rop){.chained = c & 8, .partial = c & 16};
            if (c % 8 == 3) {
                rd->kind = R_UNTIL;
                size_t dlen = 1 + (c >> 5) % 4;
                for (size_t i = 0; i < dlen; i++) {
                    char ch = (char)take(&r);
                    rd->delim[i] = ch ? ch : '\n';
                }
                delim = rd->delim;
            } else if (c % 8 == 4) {
                rd->kind = R_BYTES;
                rd->n = 1 + (c >> 5 ? take(&r) : (take(&r) << 8 | take(&r)) % 8192);
            } else {
                rd->kind = R_CLOSE;
            }
            *o = (op){.kind = OP_READ, .read = (int)p->nreads++};
            break;
        }
        case 6:
            *o = (op){.kind = OP_BUSY};
            break;
        default:
            *o = (op){.kind = (c & 8) ? OP_CLOSE : OP_PEER_CLOSE};
            break;
        }
        if (o->kind == OP_WRITE)
            p->data_len += o->len;
        p->nops++;
    }
}

/* ------------------------------------------------------------------ run */

/* Reads not chained are issued from outside once nothing is pending. */
static void issue_waiting(harness *h, model *m)
{
    if (h->dead || h->pending >= 0 || h->next >= h->p->nreads)
        return;
    expect(m->pending < 0 && m->next == h->next, "model out of step");
    int r = issue(h, (int)h->next);
    expect(r == 0, "read refused");
    h->pending = m->pending = (int)h->next;
    m->tried = 0;
    h->next = ++m->next;
}

static void step(harness *h, model *m)
{
    issue_waiting(h, m);
    model_run(m);
    settle(h);
    compare(h, m);
    issue_waiting(h, m); /* a read that completed leaves room for the next */
    model_run(m);
    settle(h);
    compare(h, m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static prog p;
    static char hbuf[MAX_DATA + 1], mbuf[MAX_DATA + 1], sent[MAX_DATA];
    memset(&p, 0, sizeof(p));
    parse(&p, data, size);

    int sv[2];
    expect(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
    iol_loop_config cfg = {.make_current = IOL_CURRENT_NEVER};
    harness h = {.p = &p, .fd = sv[0], .peer = sv[1], .pending = -1, .log.data = hbuf};
    model m = {.p = &p, .limit = p.max_buffer ? p.max_buffer : 100u << 20, .sent = sent, .pending = -1,
               .log.data = mbuf};
    size_t doff = 0;
    const char *chunk;
    /* Room for every chunk even while the stream reads nothing (small
     * sends cost far more than their bytes): forced as root, else asked. */
    int sndbuf = 8 << 20;
    if (setsockopt(sv[1], SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) < 0)
        (void)setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    expect(iol_loop_new(&h.loop, &cfg) == 0, "loop_new");
    expect(iol_stream_new(&h.s, h.loop, sv[0], p.max_buffer) == 0, "stream_new");
    if (p.close_cb)
        expect(iol_stream_set_close_callback(h.s, on_close, &h) == 0, "set_close_callback");

    for (size_t i = 0; i < p.nops && !m.closed; i++) {
        const op *o = &p.ops[i];
        switch (o->kind) {
        case OP_WRITE:
            chunk = p.data + doff;
            doff += o->len;
            /* Skipped when the socket would hold more than one read takes. */
            if (m.peer_closed || m.written - m.pos - m.buf + o->len > READ_CHUNK)
                continue;
            expect(send(h.peer, chunk, o->len, MSG_NOSIGNAL) == (ssize_t)o->len, "peer send");
            memcpy(m.sent + m.written, chunk, o->len);
            m.written += o->len;
            break;
        case OP_READ:
            break; /* issued by step() or a callback, in order */
        case OP_BUSY:
            if (h.pending >= 0)
                expect(iol_stream_read_until_close(h.s, on_read, &h) == -EBUSY, "second read is not -EBUSY");
            continue;
        case OP_CLOSE:
            expect(iol_stream_close(h.s) == 0, "stream_close");
            h.dead = true;
            model_close(&m, 0, false);
            break;
        default:
            if (m.peer_closed)
                continue;
            expect(shutdown(h.peer, SHUT_WR) == 0, "peer shutdown");
            m.peer_closed = true;
            break;
        }
        step(&h, &m);
    }
    if (!m.closed && p.peer_close_at_end && !m.peer_closed) {
        expect(shutdown(h.peer, SHUT_WR) == 0, "peer shutdown");
        m.peer_closed = true;
        step(&h, &m);
    }
    if (!m.closed) {
        expect(iol_stream_close(h.s) == 0, "stream_close");
        h.dead = true;
        model_close(&m, 0, false);
        step(&h, &m);
    }
    expect(m.next == h.next, "model issued other reads");
    if (getenv("FUZZ_STREAM_VERBOSE"))
        dump("stream (agrees with the model)", &h.log);
    close(h.peer);
    expect(iol_loop_close(h.loop, true) == 0, "loop_close");
    return 0;
}
