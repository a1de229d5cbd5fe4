/* http-hello's stream path: a TLS stream per connection (HTTPS), or a
 * plain one on a uring loop (ctx NULL), http_conn for the requests. One
 * read of up to READ_CHUNK plaintext is parsed in place; its responses
 * are gathered and written with one iol_stream_write (one TLS record when
 * they fit), and the next read starts at once while at most
 * PIPELINE_LIMIT bytes wait to be sent, else once they reached the
 * kernel, so a client that does not read cannot make us buffer without
 * bound. Plain streams defer their writes (iol_stream_set_deferred_writes):
 * on uring the request's recv and its response's send are operations
 * of the ring, with no system call of their own. Limits as the plain
 * path: 431 past 8 KiB of headers, 400 on garbage, idle and header
 * deadlines.
 *
 * Between requests (nothing half-received, nothing unparsed, not
 * closing) a connection holds no parser: its http_conn is allocated at a
 * request's first bytes and freed once the responses of a read leave it
 * idle again, as nginx frees its request. The rest of a connection's
 * state is a 24-byte slot in the worker's slabs (no malloc header, no
 * list links): an idle keep-alive connection is its stream and a slot. */
#include "http_tls.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_CHUNK 16384
#define OUT_BUF 16384
#define PIPELINE_LIMIT 65536
#define LINGER_TIMEOUT 2 /* seconds to discard input after our FIN */

typedef struct tconn tconn;
struct tconn {
    iol_stream *s; /* NULL: a free slot */
    union {
        http_conn *hc;   /* the request in progress; NULL between requests */
        tconn *next_free; /* a free slot: the next one */
    };
    int deadline;        /* idle, header or linger deadline on the worker's clock (hc's, kept here) */
    bool plain : 1;      /* no TLS: ends lingering, as http_hello.c's plain path */
    bool lingering : 1;  /* FIN sent, discarding input until the client closes */
    bool read_all : 1;   /* the last read left nothing unread (it did not fill READ_CHUNK) */
};

/* A worker's connections are slots in slabs of a page (mmap'd, so a slot
 * finds its slab by masking its address, and a slab given back leaves no
 * hole in the heap): each slab keeps its free slots, a slab with one is
 * on the `avail` list, and an empty slab is unmapped unless it is the
 * worker's last (so one connection coming and going maps nothing), so
 * memory follows the connections down as well as up. The sweep, drain
 * and stop walk every slab. */
#define SLAB_BYTES 4096 /* a page: mmap aligns it */
typedef struct slab slab;
struct slab {
    slab *prev, *next;             /* the worker's slabs */
    slab *avail_prev, *avail_next; /* those with a free slot */
    tconn *free;                   /* through next_free */
    unsigned used;
    tconn slots[];
};
#define SLAB_SLOTS ((SLAB_BYTES - sizeof(slab)) / sizeof(tconn))

static __thread slab *slabs, *avail;
static __thread bool stopped; /* http_tls_stop ran: the last slab goes too */

#define EACH_CONN(c)                                                                                                   \
    for (slab *b_ = slabs; b_; b_ = b_->next)                                                                          \
        for (tconn *c = b_->slots; c < b_->slots + SLAB_SLOTS; c++)                                                    \
            if (c->s)

static slab *slab_of(tconn *c)
{
    return (slab *)((uintptr_t)c & ~(uintptr_t)(SLAB_BYTES - 1));
}

static void avail_add(slab *b)
{
    b->avail_prev = NULL;
    b->avail_next = avail;
    if (avail)
        avail->avail_prev = b;
    avail = b;
}

static void avail_remove(slab *b)
{
    if (b->avail_prev)
        b->avail_prev->avail_next = b->avail_next;
    else
        avail = b->avail_next;
    if (b->avail_next)
        b->avail_next->avail_prev = b->avail_prev;
}

static void slab_free(slab *b)
{
    if (b->free)
        avail_remove(b);
    if (b->prev)
        b->prev->next = b->next;
    else
        slabs = b->next;
    if (b->next)
        b->next->prev = b->prev;
    munmap(b, SLAB_BYTES);
}

static tconn *slot_get(void)
{
    if (!avail) {
        slab *b = mmap(NULL, SLAB_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (b == MAP_FAILED)
            return NULL;
        b->free = NULL;
        b->used = 0;
        for (size_t i = SLAB_SLOTS; i-- > 0;) {
            b->slots[i] = (tconn){ .next_free = b->free };
            b->free = &b->slots[i];
        }
        b->prev = NULL;
        b->next = slabs;
        if (slabs)
            slabs->prev = b;
        slabs = b;
        avail_add(b);
    }
    slab *b = avail;
    tconn *c = b->free;
    b->free = c->next_free;
    if (!b->free)
        avail_remove(b);
    b->used++;
    *c = (tconn){ 0 };
    return c;
}

static void slot_put(tconn *c)
{
    slab *b = slab_of(c);
    *c = (tconn){ .next_free = b->free };
    if (!b->free)
        avail_add(b);
    b->free = c;
    b->used--;
    if (b->used == 0 && (b->prev || b->next || stopped))
        slab_free(b);
}

static __thread char out[OUT_BUF];
static __thread size_t out_len;
static __thread long clock_now;
static __thread bool stopping; /* draining: every connection closes after its response */
static __thread unsigned parsers; /* http_conns alive on this thread */
static __thread http_dates *worker_dates;
static __thread _Atomic uint64_t *served;

static void on_read(iol_stream *s, const char *data, size_t len, int status, void *arg);

/* A plain connection's end: FIN now, then discard input until the
 * client closes (or the sweep), so input we did not read cannot make the
 * kernel reset the connection (a TLS one sends close_notify instead). */
static void linger(tconn *c)
{
    if (!c->lingering) {
        c->lingering = true;
        c->deadline = (int)(clock_now + LINGER_TIMEOUT);
        shutdown(iol_stream_fd(c->s), SHUT_WR);
    }
    int r = iol_stream_read_bytes(c->s, READ_CHUNK, true, on_read, c);
    if (r < 0 && r != -EBUSY) /* -EBUSY: the pending read discards */
        iol_stream_close(c->s);
}

static void read_more(void *arg)
{
    tconn *c = arg;
    if (iol_stream_closed(c->s))
        return;
    http_conn *hc = c->hc;
    if (c->lingering || (hc && hc->closing) || (stopping && !(hc && hc->in_headers))) {
        /* A clean end with nothing unread (the request was all the read
         * got): close now, which sends FIN, as the plain path does. */
        if (c->plain && !c->lingering && hc && hc->clean_end && hc->unparsed == 0 && c->read_all)
            iol_stream_close(c->s);
        else if (c->plain)
            linger(c);
        else
            iol_stream_close(c->s); /* close_notify after the last response */
        return;
    }
    if (iol_stream_read_bytes(c->s, READ_CHUNK, true, on_read, c) < 0)
        iol_stream_close(c->s);
}

static int flush(tconn *c, iol_callback_fn done)
{
    size_t len = out_len;
    out_len = 0;
    return iol_stream_write(c->s, out, len, done, c);
}

/* http_conn's emit: gathers responses; a full buffer goes out at once. */
static void emit(void *arg, const char *data, size_t len)
{
    tconn *c = arg;
    while (len > 0) {
        if (out_len == OUT_BUF && flush(c, NULL) < 0) {
            c->hc->closing = true; /* emit runs inside http_conn_feed */
            return;
        }
        size_t n = len < OUT_BUF - out_len ? len : OUT_BUF - out_len;
        memcpy(out + out_len, data, n);
        out_len += n;
        data += n;
        len -= n;
    }
}

static void on_read(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    tconn *c = arg;
    if (status < 0 || len == 0) {
        if (!iol_stream_closed(s))
            iol_stream_close(s);
        return;
    }
    if (c->lingering) {
        read_more(c); /* discarding */
        return;
    }
    out_len = 0;
    c->read_all = len < READ_CHUNK;
    http_dates_refresh(worker_dates, time(NULL));
    if (!c->hc) { /* a request's first bytes */
        c->hc = malloc(sizeof(*c->hc));
        if (!c->hc) {
            iol_stream_close(s);
            return;
        }
        parsers++;
        http_conn_init(c->hc, worker_dates, emit, c, clock_now);
    }
    http_conn *hc = c->hc;
    unsigned long answered = hc->requests;
    http_conn_feed(hc, data, len, clock_now);
    if (served) /* relaxed: this worker is the only writer; a statistic */
        atomic_store_explicit(served, atomic_load_explicit(served, memory_order_relaxed) + (hc->requests - answered),
                              memory_order_relaxed);
    c->deadline = (int)hc->deadline;
    if (!hc->in_message && !hc->closing && hc->unparsed == 0) {
        /* Between requests: the next one starts a fresh parser, which is
         * all this one's state would be (http-parser is back at a request
         * line after a complete message). */
        free(hc);
        c->hc = NULL;
        parsers--;
    }
    if (out_len == 0) {
        read_more(c); /* a request still arriving */
        return;
    }
    /* Written through at once (the usual case) or a little waiting
     * (deferred): read on now, without a `done` hop through the loop;
     * otherwise once the rest is out. */
    if (flush(c, NULL) < 0) {
        if (!iol_stream_closed(s))
            iol_stream_close(s);
    } else if (iol_stream_write_buffer_size(s) == 0 ||
               (iol_stream_write_buffer_size(s) <= PIPELINE_LIMIT && !(c->hc && c->hc->closing) && !stopping)) {
        read_more(c);
    } else if (iol_stream_write(s, NULL, 0, read_more, c) < 0 && !iol_stream_closed(s)) {
        iol_stream_close(s);
    }
}

static void on_close(iol_stream *s, void *arg)
{
    (void)s;
    tconn *c = arg;
    if (c->hc) {
        free(c->hc);
        parsers--;
    }
    slot_put(c);
}

void http_tls_accept(iol_loop *loop, int fd, iol_tls_ctx *ctx, http_dates *dates, long now,
                     _Atomic uint64_t *requests)
{
    served = requests;
    clock_now = now;
    worker_dates = dates;
    stopped = false;
    tconn *c = slot_get();
    iol_stream *s = NULL;
    if (!c || (ctx ? iol_tls_stream_new(&s, loop, fd, ctx, 0) : iol_stream_new(&s, loop, fd, 0)) < 0) {
        if (c)
            slot_put(c);
        close(fd);
        return;
    }
    c->s = s;
    if (!ctx) {
        c->plain = true;
        iol_stream_set_deferred_writes(c->s, true);
    }
    c->deadline = (int)(now + HTTP_IDLE_TIMEOUT);
    iol_stream_set_close_callback(c->s, on_close, c);
    read_more(c);
}

void http_tls_sweep(long now)
{
    clock_now = now;
    EACH_CONN(c)
        if (c->deadline < now && !iol_stream_closed(c->s))
            iol_stream_close(c->s); /* c goes in its close callback, from the loop */
}

void http_tls_drain(void)
{
    stopping = true;
    EACH_CONN(c) {
        /* Idle (a read pending, nothing half-received, nothing unsent):
         * close now; otherwise read_more closes after the response. */
        if (iol_stream_closed(c->s) || (c->hc && c->hc->in_headers) || iol_stream_write_buffer_size(c->s) > 0)
            continue;
        if (c->plain)
            linger(c);
        else
            iol_stream_close(c->s);
    }
}

void http_tls_stop(void)
{
    EACH_CONN(c)
        if (!iol_stream_closed(c->s))
            iol_stream_close(c->s); /* the slot goes in its close callback, from the loop */
    stopped = true;
    if (slabs && !slabs->next && slabs->used == 0)
        slab_free(slabs);
}

unsigned http_tls_parsers(void)
{
    return parsers;
}
