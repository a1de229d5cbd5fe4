/*
 * net/tls.h — the hooks by which a stream runs over TLS (net/tls_stream.c).
 * A stream is TLS when s->tls is set; every hook is called only then, so
 * a plain stream pays one pointer test. Without OpenSSL (no IOL_HAVE_TLS)
 * s->tls is never set and the hooks are empty inlines.
 */
#ifndef IOL_NET_TLS_H
#define IOL_NET_TLS_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct iol_stream iol_stream;
typedef struct iol__tls iol__tls;

#ifdef IOL_HAVE_TLS
/* One SSL_read into the stream's read buffer: as stream_recv (>0, 0 at
 * the peer's close_notify, -EAGAIN, -errno, and *drained when > 0);
 * -EAGAIN while handshaking. */
ssize_t iol__tls_recv(iol_stream *s, size_t limit, bool *drained);
/* One SSL_write: as stream_send; -EAGAIN while handshaking. */
ssize_t iol__tls_send(iol_stream *s, const void *data, size_t len);
/* The events the stream should watch, given what the plain stream wants. */
unsigned iol__tls_events(const iol_stream *s, unsigned want);
/* From the fd handler: runs the handshake (true: events were consumed),
 * or maps events for a read that waits to write or vice versa. */
bool iol__tls_on_events(iol_stream *s, unsigned *events);
/* The stream is closing (before its fd goes): close_notify if clean. */
void iol__tls_on_close(iol_stream *s, int err);
/* iol_stream_shutdown, once every write is out: sends close_notify. 0:
 * sent; -EAGAIN: not yet (handshaking, or no room: WRITE); -errno. */
int iol__tls_shutdown(iol_stream *s);
/* The close completes: a pending handshake callback hears the error. */
void iol__tls_finish_close(iol_stream *s);
/* The loop winds down (a runtime's drain is over, its FIN comes next):
 * close_notify now, once, if the handshake finished. */
void iol__tls_wind_down(iol_stream *s);
/* From the deferred callback: a wait_for_handshake made after the
 * handshake finished hears it now. */
void iol__tls_deferred(iol_stream *s);
void iol__tls_free(iol_stream *s);
#else
static inline ssize_t iol__tls_recv(iol_stream *s, size_t limit, bool *drained)
{
    (void)s;
    (void)limit;
    (void)drained;
    return -1;
}
static inline ssize_t iol__tls_send(iol_stream *s, const void *d, size_t l) { (void)s; (void)d; (void)l; return -1; }
static inline unsigned iol__tls_events(const iol_stream *s, unsigned want) { (void)s; return want; }
static inline bool iol__tls_on_events(iol_stream *s, unsigned *events) { (void)s; (void)events; return false; }
static inline void iol__tls_on_close(iol_stream *s, int err) { (void)s; (void)err; }
static inline int iol__tls_shutdown(iol_stream *s) { (void)s; return 0; }
static inline void iol__tls_finish_close(iol_stream *s) { (void)s; }
static inline void iol__tls_wind_down(iol_stream *s) { (void)s; }
static inline void iol__tls_deferred(iol_stream *s) { (void)s; }
static inline void iol__tls_free(iol_stream *s) { (void)s; }
#endif

#endif /* IOL_NET_TLS_H */
