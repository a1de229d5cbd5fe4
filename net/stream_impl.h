/*
 * net/stream_impl.h — the stream object shared by the net/ files:
 * stream.c (lifetime, events, the loop's entry points), stream_read.c,
 * stream_write.c and stream_connect.c.
 *
 * Callbacks: a read's callback runs from the fd handler or from the
 * stream's one deferred callback (iol_loop_add_callback), never inside the
 * call that asked for it. Write `done`s run the same way, in order.
 *
 * Lifetime: the stream frees itself once it is closed (by either side)
 * and no callback of it is on the stack or queued: `refs` counts handler
 * and deferred frames plus the queued deferred callback. Closing only
 * marks the stream, closes the fd and queues the deferred callback, which
 * completes the pending read with its error, runs the close callback, and
 * drops the last reference. So close is safe from inside any callback, and
 * after the close callback returns the stream must not be used again.
 */
#ifndef IOL_NET_STREAM_IMPL_H
#define IOL_NET_STREAM_IMPL_H

#include "ioloop.h"

#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "loop/close_hook.h"
#include "loop/completion.h"
#include "loop/owner.h"
#include "net/buffer.h"
#include "net/resolve.h"
#include "net/tls.h"

enum {
    STREAM_DEFAULT_MAX_BUFFER = 100u << 20, /* Tornado's default max_buffer_size */
    STREAM_READ_CHUNK = 64u << 10,          /* least tail room offered to one read() */
    STREAM_IO_ROUNDS = 16,                  /* syscalls per event before other fds get a turn */
    STREAM_DELIM_INLINE = 32,               /* delimiters up to this length need no malloc */
};


typedef enum { READ_NONE, READ_UNTIL, READ_BYTES, READ_UNTIL_CLOSE } stream_read_kind;

/* Zero-copy writes queue segments (stream_zerocopy.c). While any is
 * queued, every pending byte is in one, in order: a COPY segment stands
 * for the next len bytes of wbuf, a REF for the caller's memory, a FILE
 * for a region of the caller's file. With none queued, wbuf holds all. */
typedef enum { SEG_COPY, SEG_REF, SEG_FILE } stream_seg_kind;

typedef struct stream_seg {
    stream_seg_kind kind;
    size_t len;       /* bytes not yet written */
    const char *data; /* REF: the next byte */
    int fd;           /* FILE */
    off_t offset;     /* FILE: the next byte */
    iol_callback_fn release; /* REF/FILE: runs once, written or dropped */
    void *arg;
} stream_seg;

/* A write's `done`, due once ext->written reaches `end`. */
typedef struct stream_write_done {
    uint64_t end;
    iol_callback_fn fn;
    void *arg;
} stream_write_done;

/* The parts few streams use (watermarks, a write limit, read_until's
 * delimiter, write dones, zero-copy segments, connecting), out of line:
 * a stream that uses none of them (a server's keep-alive connection)
 * never allocates this, and its struct stays small, which is what an
 * idle connection costs. Allocated at the first use, freed with the
 * stream (iol__stream_ext). */
typedef struct stream_ext {
    /* write watermarks: wm_above flips when wbuf passes wm_high (up) or
     * drains to wm_low (down); wm_told is what wm_fn last heard, so a rise
     * and fall between two loop turns tells nothing */
    iol_watermark_fn wm_fn;
    void *wm_arg;
    size_t wm_high;
    size_t wm_low;
    bool wm_above;
    bool wm_told;
    size_t max_write_buffer; /* 0: unlimited */
    /* bytes handed to the kernel since ext was made: the clock of the
     * write dones (the stream itself keeps only what is pending) */
    uint64_t written;
    size_t max_buffer_size; /* when it does not fit the stream's 32 bits */

    /* read_until's delimiter */
    size_t read_max; /* read_until: fail past this many bytes; 0: no limit */
    char *delim; /* delim_inline or heap */
    size_t delim_len;
    size_t delim_cap;
    size_t scan_pos; /* the delimiter does not start before this offset in rbuf */
    char delim_inline[STREAM_DELIM_INLINE];

    /* dones of queued writes, FIFO: live entries are [done_head, done_count) */
    stream_write_done *dones;
    size_t done_head;
    size_t done_count;
    size_t done_cap;

    /* zero-copy segments, FIFO: live entries are [seg_head, seg_count) */
    stream_seg *segs;
    size_t seg_head;
    size_t seg_count;
    size_t seg_cap;

    /* connect */
    int connect_status;
    iol_connect_fn connect_cb;
    void *connect_arg;
    iol__address *addrs;
    size_t naddrs;
    size_t next_addr;
    iol__resolve_job *resolving; /* a name lookup whose callback holds a reference */
    iol_timeout connect_timer;   /* the connect deadline, 0 if none */
    iol__address *source; /* bound before connecting */

    /* read_until_regex: the compiled pattern while that read is pending
     * (then read_kind is READ_UNTIL and delim unused); NULL otherwise */
    struct stream_regex *regex;
    /* streaming reads (stream_read_more.c): each batch of bytes goes to
     * read_chunk, or is copied into `into` (read_into), as it arrives */
    iol_read_fn read_chunk;
    char *into;
    size_t into_len;    /* the caller's buffer */
    size_t into_filled; /* bytes copied into it so far */

    /* iol_stream_shutdown: cb runs once, from the loop */
    void (*shutdown_cb)(iol_stream *s, int status, void *arg);
    void *shutdown_arg;
} stream_ext;

/* Hot and always-present state only (see stream_ext); the flags are bits
 * so that an idle keep-alive stream is a few cache lines. Loop thread
 * only, so the bit-fields' read-modify-writes race with nothing. */
struct iol_stream {
    iol_loop *loop; /* referenced for the stream's lifetime */
    iol__close_hook close_hook; /* the loop's close releases the stream */
    int fd;         /* -1 once closed (or between connect attempts) */
    unsigned watched; /* events the handler currently watches */
    int error;     /* -errno that closed the stream, 0 if none */
    unsigned refs; /* frames on the stack + the queued deferred callback */

    bool is_socket : 1; /* send(MSG_NOSIGNAL) rather than write() */
    bool registered : 1;  /* fd has our handler on the loop */
    bool parked : 1;      /* peer hung up while nothing was asked: no idle watching */
    bool closed : 1;
    bool eof : 1;      /* closed because the peer finished sending */
    bool finished : 1; /* close completed: read failed, close callback run */
    bool deferred_queued : 1;
    bool in_deferred : 1; /* the deferred callback is running and re-checks at its end */
    bool deferred_again : 1;
    bool loop_closing : 1; /* released by the loop's close: queue nothing more */
    bool read_paused : 1; /* iol_stream_pause_reading: no recv, no read callback */
    bool read_partial : 1;
    bool connecting : 1;
    bool connect_report : 1; /* the result is known and waits for the deferred callback */

    /* The completion path (stream_uring.c): reads and writes through the
     * loop's ring instead of the fd handler, on a loop that has one. */
    bool uring : 1;           /* this stream uses it (a plain socket on such a loop) */
    bool recv_inflight : 1;   /* one recv at a time: the bytes arrive in order */
    bool recv_cancelling : 1;
    bool recv_drained : 1;    /* the last recv left nothing in the socket: the next one waits first */
    bool send_inflight : 1;   /* one send at a time, of sendbuf */
    bool uring_nobufs : 1;    /* the ring ran dry: this read goes through the handler */
    bool defer_writes : 1;    /* iol_stream_set_deferred_writes */
    bool in_completion : 1;   /* a result of ours is being handled: update_events waits for its end */
    bool counted : 1;         /* counted in the loop's handler count without a handler */
    bool claimed : 1;         /* fd claimed on the loop instead of a handler (iol__loop_fd_claim) */
    bool wr_shut : 1;         /* iol_stream_shutdown was called: no more writes */
    bool fin_sent : 1;        /* ... and the FIN (TLS: close_notify first) went out */
    bool read_streaming : 1;  /* the pending read hands bytes over as they come (ext->read_chunk/into) */
    stream_read_kind read_kind : 2; /* the pending read */

    uint32_t max_buffer; /* max_buffer_size; 0: in ext (4 GiB or more) */
    iol__buffer rbuf;
    iol__buffer wbuf;
    iol__buffer sendbuf;  /* uring: the bytes of the send in flight (wbuf takes new ones) */
    iol_read_fn read_cb;
    void *read_arg;
    size_t read_n;
    /* Bytes accepted by iol_stream_write (copied or zero-copy) and not yet
     * handed to the kernel: what the write limit and the watermarks count. */
    size_t pending;

    iol_close_fn close_cb;
    void *close_arg;

    stream_ext *ext; /* NULL until a rare part is used */
    iol__tls *tls; /* TLS state (net/tls.h); NULL: plain */
    iol__completion op;   /* uring: each operation in flight holds a reference */
};

/* The thread rule of every loop-bound stream call (loop/owner.h): first
 * thing after the NULL check, before the stream is read or changed. 0, or
 * -EPERM when another thread runs the stream's loop. s->loop is set at
 * creation and never changes, so reading it from any thread is safe. */
static inline int iol__stream_check_thread(const iol_stream *s)
{
    return iol__loop_owner_check(s->loop);
}

static inline void iol__stream_hold(iol_stream *s)
{
    s->refs++;
}

static inline size_t iol__stream_pending(const iol_stream *s)
{
    return s->pending;
}

/* n pending bytes reached the kernel. */
static inline void iol__stream_wrote_bytes(iol_stream *s, size_t n)
{
    s->pending -= n;
    if (s->ext)
        s->ext->written += n;
}

static inline size_t iol__stream_max_buffer(const iol_stream *s)
{
    return s->max_buffer ? s->max_buffer : s->ext->max_buffer_size;
}

static inline bool iol__stream_has_segments(const iol_stream *s)
{
    return s->ext && s->ext->seg_head < s->ext->seg_count;
}

/* stream.c */
int iol__stream_alloc(iol_stream **out, iol_loop *loop, size_t max_buffer_size);
void iol__stream_free(iol_stream *s);
/* s->ext, allocated at the first call; NULL: no memory. */
stream_ext *iol__stream_ext(iol_stream *s);
/* Drops a reference; frees a closed stream when it was the last. */
void iol__stream_release(iol_stream *s);
/* Queues the one deferred callback. -ESHUTDOWN, -ENOMEM. */
int iol__stream_schedule(iol_stream *s);
void iol__stream_drop_fd(iol_stream *s);
/* Lets go of the fd without closing it (a failed constructor gives it
 * back): no handler, no claim, not counted. */
void iol__stream_disown_fd(iol_stream *s);
/* Marks the stream closed with err; never frees, never calls back. */
void iol__stream_close_internal(iol_stream *s, int err);
/* Brings the fd handler in line with what the stream waits for. */
int iol__stream_update_events(iol_stream *s);
/* The fd handler of every stream. */
void iol__stream_on_events(int fd, unsigned events, void *arg);
/* The pending error of a socket (SO_ERROR clears it), 0 if none. */
int iol__stream_socket_error(const iol_stream *s);

/* stream_read.c */
void iol__stream_handle_read(iol_stream *s);
bool iol__stream_try_complete_read(iol_stream *s);
void iol__stream_deliver(iol_stream *s, size_t n, int status);
/* A read call's checks: -EPIPE closed, -EBUSY a read pending. */
int iol__stream_check_read(const iol_stream *s);
/* A new read was recorded: answered from the buffer through the deferred
 * callback, or the socket watched; on failure the read is undone. */
int iol__stream_arm_read(iol_stream *s);

/* stream_write.c */
void iol__stream_handle_write(iol_stream *s);
void iol__stream_fire_dones(iol_stream *s);
/* Room for one more done entry. -ENOMEM. */
int iol__stream_dones_reserve(iol_stream *s);
/* After a write queued bytes: the high watermark, the WRITE event. <0:
 * the stream closed (the bytes would never leave). */
int iol__stream_queued(iol_stream *s);
/* Tells wm_fn of a watermark crossing it has not heard of yet. */
void iol__stream_fire_watermark(iol_stream *s);
/* After bytes reached the kernel (a write round or a ring send): the low
 * watermark, the done callbacks, the watermark callback. */
void iol__stream_wrote(iol_stream *s);

/* stream_zerocopy.c */
/* Room for n more segments (so a write never fails half-done). -ENOMEM. */
int iol__stream_segs_reserve(iol_stream *s, size_t n);
/* n bytes were appended to wbuf while segments are queued. Reserved. */
void iol__stream_segs_note_copy(iol_stream *s, size_t n);
/* Writes queued segments as the socket allows (writev, sendfile). */
void iol__stream_segs_flush(iol_stream *s);
/* Runs the release of every segment left (the stream closed). */
void iol__stream_segs_drop(iol_stream *s);

/* stream_uring.c */
/* At creation: whether s takes the completion path. */
void iol__stream_uring_init(iol_stream *s);
/* Submits or cancels the recv and the send that `want` asks for; returns
 * the events left for the fd handler. */
unsigned iol__stream_uring_update(iol_stream *s, unsigned want);
/* The fd is going: cancels what is in flight; true when it also queued
 * the close on the ring (the caller then must not close fd). */
bool iol__stream_uring_drop(iol_stream *s);
/* Keeps the loop's handler count right for an open stream without a
 * handler (iol__loop_count_fd). */
void iol__stream_uring_count(iol_stream *s);
/* An operation is in flight (start_tls must wait). */
static inline bool iol__stream_uring_busy(const iol_stream *s)
{
    return s->op.inflight > 0;
}

/* stream_read_more.c: read_until_regex, read_into, streaming reads */
/* READ_UNTIL with a pattern: where the first match ends, 0: none yet. */
size_t iol__stream_regex_ready(iol_stream *s);
/* Drops the pending read's pattern (the read ended). */
void iol__stream_regex_clear(iol_stream *s);
/* A streaming read: hands over up to n buffered bytes (n > 0), and
 * completes the read when that was its last. */
void iol__stream_deliver_chunk(iol_stream *s, size_t n);
/* The stream closed with a streaming read pending: at the peer's EOF the
 * buffered bytes first, then the final callback (status 0 for
 * read_until_close at EOF, else status). */
void iol__stream_streaming_close(iol_stream *s, int status);
/* read_into with nothing buffered: one recv straight into the caller's
 * buffer (as stream_recv: >0, 0 at EOF, -EAGAIN, -errno); completes the
 * read when that filled it (or, partial, brought anything). */
ssize_t iol__stream_recv_into(iol_stream *s, bool *drained);
/* One recv (socket) or read into dst, retried on EINTR: the bytes (0 at
 * EOF), -EAGAIN when none are ready, or -errno. */
ssize_t iol__stream_recv_raw(iol_stream *s, char *dst, size_t room);

/* stream_shutdown.c */
/* Once shutdown was asked and nothing is pending: close_notify (TLS), the
 * FIN, and the callback queued. Call after anything that may have
 * drained the writes or ended a connect or handshake; cheap otherwise. */
void iol__stream_shutdown_step(iol_stream *s);
/* Runs the shutdown callback, once: 0 after the FIN went out, else (the
 * stream closed first) the close's status. Not before either. */
void iol__stream_shutdown_report(iol_stream *s);

/* stream_connect.c */
void iol__stream_connect_done(iol_stream *s, int status);
void iol__stream_handle_connect(iol_stream *s);

#endif /* IOL_NET_STREAM_IMPL_H */
