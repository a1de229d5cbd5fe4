/*
 * net/tls_stream.c — a stream over TLS: the non-blocking handshake under
 * a deadline, SSL_read/SSL_write in place of recv/send (the stream's
 * buffers, reads, writes and lifetime stay stream.c's), WANT_READ and
 * WANT_WRITE mapped onto the fd handler's events, close_notify, and the
 * error of each failure with OpenSSL's reason in one log line.
 */
#include "net/stream_impl.h"
#include "net/tls_impl.h"

#include "loop/log.h"
#include "loop/status.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

enum { TLS_RECORD_MAX = 16u << 10 }; /* plaintext of one record */

static size_t tls_drain(iol_stream *s);

/* SSL_get_error reads the thread's error queue, so it must be empty before
 * each SSL call. It almost always is: ERR_peek_error looks at the queue's
 * ends, where ERR_clear_error wipes all sixteen slots (1.5 % of a
 * keep-alive HTTPS server's CPU with two calls per request). */
static inline void tls_clear_errors(void)
{
    if (ERR_peek_error() != 0)
        ERR_clear_error();
}


/* ------------------------------------------------------------------ Errors */

/* The verification status (0 or IOL_ETLS_*) an X509_V_* result stands for. */
static int tls_x509_status(long x509_result)
{
    switch (x509_result) {
    case X509_V_OK:
        return 0;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
    case X509_V_ERR_EMAIL_MISMATCH:
        return IOL_ETLS_HOSTNAME;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_CERT_UNTRUSTED:
        return IOL_ETLS_UNTRUSTED;
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        return IOL_ETLS_SELF_SIGNED;
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return IOL_ETLS_EXPIRED;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return IOL_ETLS_NOT_YET_VALID;
    default:
        return IOL_ETLS_VERIFY;
    }
}

/* The certificate status an OpenSSL error stands for: our own
 * verification's verdict, the peer's missing certificate, or an alert by
 * which the peer rejected ours; 0 for any other error. */
static int tls_cert_status(const iol__tls *t, unsigned long e)
{
    if (ERR_GET_LIB(e) != ERR_LIB_SSL)
        return 0;
    switch (ERR_GET_REASON(e)) {
    case SSL_R_CERTIFICATE_VERIFY_FAILED: {
        int st = tls_x509_status(SSL_get_verify_result(t->ssl));
        return st ? st : IOL_ETLS_VERIFY;
    }
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        return IOL_ETLS_NO_PEER_CERT;
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
        return IOL_ETLS_PEER_REJECTED;
    default:
        return 0;
    }
}

/* A fatal SSL error: the status it closes the stream with (the library's
 * own code: the hand-over points map it with iol__loop_status), and one
 * log line with
 * OpenSSL's reason: IOL_LOG_WARNING when our client rejected the
 * server's certificate (the user asked for that server: a reason to
 * see), IOL_LOG_INFO for every fault of the peer. The SSL may not be used
 * for I/O again. */
static int tls_error(iol_stream *s, int ssl_err, const char *during)
{
    iol__tls *t = s->tls;
    unsigned long e = ERR_peek_last_error();
    int cert = tls_cert_status(t, e);
    int err;
    if (ssl_err == SSL_ERROR_SYSCALL && e == 0)
        err = t->sys_errno ? -t->sys_errno : -ECONNRESET; /* EOF in the middle of it all */
    else if (ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE)
        err = -ENOMEM;
    else if (cert)
        err = cert;
    else if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
        err = -ECONNRESET;
    else if (t->sys_errno)
        err = -t->sys_errno;
    else
        err = -EPROTO;
    if (cert) {
        t->verified = true;
        t->verify_status = cert;
        t->verify_reason = ERR_GET_REASON(e);
    }
    char reason[320];
    iol__tls_reason(reason, sizeof(reason));
    if (e == 0 && t->peer_fin) /* with read-ahead OpenSSL 3.0 says nothing of it */
        snprintf(reason, sizeof(reason), "unexpected eof while reading (TCP closed without close_notify)");
    bool server = SSL_is_server(t->ssl);
    bool own_verdict = !server && cert && cert != IOL_ETLS_PEER_REJECTED;
    long verify = SSL_get_verify_result(t->ssl);
    iol__log(own_verdict ? IOL_LOG_WARNING : IOL_LOG_INFO, "tls: %s failed on fd %d (%s%s%s, closing with %s): %s%s%s",
             during, t->fd, server ? "server" : "client", t->server_name ? " of " : "",
             t->server_name ? t->server_name : "", iol_strerror(err), reason, verify != X509_V_OK ? "; verify: " : "",
             verify != X509_V_OK ? X509_verify_cert_error_string(verify) : "");
    t->phase = TLS_DEAD;
    return err;
}

/* -------------------------------------------------------------- Handshake */

static void tls_stop_timer(iol_stream *s)
{
    iol__tls *t = s->tls;
    if (t->hs_timer) {
        (void)iol_loop_remove_timeout(s->loop, t->hs_timer); /* nothing to undo on a closed loop */
        t->hs_timer = 0;
    }
}

static void tls_handshake_timeout(void *arg)
{
    iol_stream *s = arg;
    s->tls->hs_timer = 0;
    iol__stream_hold(s);
    iol__log(IOL_LOG_INFO, "tls: handshake timed out on fd %d (closing with -%d)", s->tls->fd, ETIMEDOUT);
    s->tls->phase = TLS_DEAD;
    iol__stream_close_internal(s, -ETIMEDOUT);
    iol__stream_release(s);
}

/* The handshake finished: tell whoever waits, then do what was asked
 * meanwhile (queued writes, a pending read). */
static void tls_opened(iol_stream *s)
{
    iol__tls *t = s->tls;
    t->phase = TLS_OPEN;
    t->opened = true;
    t->verified = true; /* and passed (or was not asked for) */
    tls_stop_timer(s);
    iol_connect_fn cb = t->hs_cb;
    t->hs_cb = NULL;
    /* Records that came with the handshake's last flight (a client's
     * first request) sit in OpenSSL's read-ahead: into the buffer, where
     * a read finds them. */
    if (SSL_has_pending(t->ssl))
        (void)tls_drain(s);
    if (cb)
        cb(s, 0, t->hs_arg);
    if (!s->closed)
        iol__tls_wait_report(s, 0);
    if (!s->closed && iol__buffer_len(&s->wbuf) > 0)
        iol__stream_handle_write(s);
    if (!s->closed)
        iol__stream_handle_read(s);
}

static void tls_handshake(iol_stream *s)
{
    iol__tls *t = s->tls;
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        tls_opened(s);
        return;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        t->hs_want = IOL_READ;
    else if (e == SSL_ERROR_WANT_WRITE)
        t->hs_want = IOL_WRITE;
    else
        iol__stream_close_internal(s, tls_error(s, e, "handshake"));
}

/* An SSL on the stream's socket, and the deadline. */
static int tls_begin(iol_stream *s)
{
    iol__tls *t = s->tls;
    t->fd = s->fd;
    ERR_clear_error();
    t->ssl = iol__tls_ctx_new_ssl(t->ctx, t->server_name);
    BIO *b = t->ssl ? iol__tls_bio_new(t) : NULL;
    if (!b) {
        ERR_clear_error();
        return -ENOMEM;
    }
    SSL_set_app_data(t->ssl, t);
    SSL_set_bio(t->ssl, b, b);
    if (t->ctx->server)
        SSL_set_accept_state(t->ssl);
    else
        SSL_set_connect_state(t->ssl);
    t->phase = TLS_HANDSHAKE;
    t->hs_want = t->ctx->server ? IOL_READ : IOL_WRITE; /* a client speaks first */
    if (t->ctx->handshake_timeout > 0) {
        int r = iol_loop_call_later(s->loop, t->ctx->handshake_timeout, tls_handshake_timeout, s, &t->hs_timer);
        if (r < 0)
            return r;
    }
    return 0;
}

/* ------------------------------------------------------------------- Hooks */

/* One SSL_read into the tail of the read buffer, with room for a whole
 * record (so no decrypted bytes stay inside OpenSSL); the buffer may pass
 * max_buffer_size by that. 0 with SSL_read's result in *n (> 0: bytes
 * added), or -ENOMEM (no room, nothing read). */
static int tls_read_record(iol_stream *s, size_t limit, int *n)
{
    size_t want = limit < TLS_RECORD_MAX ? TLS_RECORD_MAX : limit;
    if (want > STREAM_READ_CHUNK)
        want = STREAM_READ_CHUNK;
    int r = iol__buffer_reserve(&s->rbuf, want);
    if (r < 0)
        return r;
    size_t room = iol__buffer_tail_room(&s->rbuf);
    if (room > INT_MAX)
        room = INT_MAX;
    tls_clear_errors();
    *n = SSL_read(s->tls->ssl, iol__buffer_tail(&s->rbuf), (int)room);
    if (*n > 0)
        iol__buffer_commit(&s->rbuf, (size_t)*n);
    return 0;
}

/* Read-ahead (one recv takes every record the kernel holds, not a header
 * then a body) leaves the records after the first inside OpenSSL, where
 * the socket's readiness would never announce them: decrypt them all
 * into the read buffer now. What stays is at most the start of a record
 * whose rest is still to come (and will make the socket readable). A
 * failure waits for the next read, which meets it again. */
static size_t tls_drain(iol_stream *s)
{
    size_t got = 0;
    while (SSL_has_pending(s->tls->ssl)) {
        int n;
        if (tls_read_record(s, TLS_RECORD_MAX, &n) < 0 || n <= 0)
            break;
        got += (size_t)n;
    }
    return got;
}

ssize_t iol__tls_recv(iol_stream *s, size_t limit, bool *drained)
{
    iol__tls *t = s->tls;
    if (t->phase != TLS_OPEN)
        return t->phase == TLS_DEAD ? -EPIPE : -EAGAIN; /* data waits for the handshake */
    int n;
    int r = tls_read_record(s, limit, &n);
    if (r < 0)
        return r;
    if (n > 0) {
        t->read_wants_write = false;
        ssize_t got = n + (ssize_t)tls_drain(s);
        /* The socket was empty at the last recv and OpenSSL holds no
         * byte of it (a partial record keeps it pending): nothing to
         * read until the poller says so. */
        *drained = t->bio_drained && !SSL_has_pending(t->ssl);
        return got;
    }
    int e = SSL_get_error(t->ssl, n);
    switch (e) {
    case SSL_ERROR_ZERO_RETURN:
        return 0; /* close_notify: the close answers it */
    case SSL_ERROR_WANT_READ:
        t->read_wants_write = false;
        return -EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        t->read_wants_write = true;
        return -EAGAIN;
    default:
        return tls_error(s, e, "read");
    }
}

/* The socket reports an error (the peer reset it). If the peer said why
 * first, a fatal alert (a server rejecting our certificate after a TLS
 * 1.3 handshake) waits in the socket's receive queue, which a reset does
 * not discard: true with that alert's error on OpenSSL's queue, the
 * stream's reason then rather than the reset. */
static bool tls_peer_alert_waits(iol__tls *t)
{
    int sys_errno = t->sys_errno;
    ERR_clear_error();
    char c;
    int n = SSL_peek(t->ssl, &c, 1);
    unsigned long e = ERR_peek_last_error();
    /* An alert's reason is SSL_AD_REASON_OFFSET + its code; any other
     * error (the SSL refusing I/O after the failure) is no news. */
    if (n <= 0 && SSL_get_error(t->ssl, n) == SSL_ERROR_SSL && ERR_GET_LIB(e) == ERR_LIB_SSL &&
        ERR_GET_REASON(e) >= SSL_AD_REASON_OFFSET)
        return true;
    ERR_clear_error();
    t->sys_errno = sys_errno;
    return false;
}

ssize_t iol__tls_send(iol_stream *s, const void *data, size_t len)
{
    iol__tls *t = s->tls;
    if (t->phase != TLS_OPEN)
        return t->phase == TLS_DEAD ? -EPIPE : -EAGAIN; /* queued until the handshake is done */
    if (len > INT_MAX)
        len = INT_MAX; /* partial writes: the rest goes next round */
    tls_clear_errors();
    int n = SSL_write(t->ssl, data, (int)len);
    if (n > 0) {
        t->write_wants_read = false;
        return n;
    }
    int e = SSL_get_error(t->ssl, n);
    switch (e) {
    case SSL_ERROR_WANT_WRITE:
        t->write_wants_read = false;
        return -EAGAIN;
    case SSL_ERROR_WANT_READ:
        t->write_wants_read = true;
        return -EAGAIN;
    default:
        return tls_error(s, e, "write");
    }
}

unsigned iol__tls_events(const iol_stream *s, unsigned want)
{
    const iol__tls *t = s->tls;
    if (t->phase == TLS_HANDSHAKE)
        return t->hs_want;
    if (t->phase != TLS_OPEN)
        return want;
    if (t->read_wants_write && (want & IOL_READ))
        want |= IOL_WRITE;
    if (t->write_wants_read && (want & IOL_WRITE))
        want |= IOL_READ;
    return want;
}

bool iol__tls_on_events(iol_stream *s, unsigned *events)
{
    iol__tls *t = s->tls;
    if (t->phase == TLS_HANDSHAKE) {
        tls_handshake(s);
        return true;
    }
    if (t->phase == TLS_OPEN) {
        /* A reset or an error: the peer's fatal alert, if one came
         * before, says why (the stream's socket error would not). */
        if ((*events & IOL_ERROR) && tls_peer_alert_waits(t)) {
            iol__stream_close_internal(s, tls_error(s, SSL_ERROR_SSL, "read"));
            return true;
        }
        /* The socket is ready the way the other direction waited for. */
        if (t->read_wants_write && (*events & IOL_WRITE))
            *events |= IOL_READ;
        if (t->write_wants_read && (*events & IOL_READ))
            *events |= IOL_WRITE;
    }
    return false;
}

/* close_notify, once, without waiting for the peer's (answering it when
 * that came first); a full socket loses it, as Tornado loses unwritten
 * data. Not while writes are queued: they are about to be dropped, and
 * close_notify would tell the peer it got everything (the socket may
 * well have room for the 24-byte alert and not for the rest); it gets
 * the truncation instead. */
static void tls_close_notify(iol_stream *s)
{
    iol__tls *t = s->tls;
    if (t->phase != TLS_OPEN || s->fd < 0 || iol__stream_pending(s) > 0 ||
        (SSL_get_shutdown(t->ssl) & SSL_SENT_SHUTDOWN))
        return;
    ERR_clear_error();
    (void)SSL_shutdown(t->ssl);
    ERR_clear_error();
}

void iol__tls_on_close(iol_stream *s, int err)
{
    (void)err;
    tls_stop_timer(s);
    tls_close_notify(s);
    s->tls->phase = TLS_DEAD;
}

void iol__tls_wind_down(iol_stream *s)
{
    tls_close_notify(s);
}

int iol__tls_shutdown(iol_stream *s)
{
    iol__tls *t = s->tls;
    if (t->phase != TLS_OPEN)
        return t->phase == TLS_DEAD ? -EPIPE : -EAGAIN;
    tls_clear_errors();
    int r = SSL_shutdown(t->ssl); /* 0: sent (the peer's still to come); 1: both */
    if (r >= 0)
        return 0;
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_WRITE)
        return -EAGAIN; /* the alert waits in OpenSSL for the next call */
    return tls_error(s, e, "shutdown");
}

void iol__tls_finish_close(iol_stream *s)
{
    iol__tls *t = s->tls;
    iol_connect_fn cb = t->hs_cb;
    t->hs_cb = NULL;
    /* The handshake callback and wait_for_handshake hear the same status
     * (iol__tls_wait_report maps it as the handshake callback is mapped
     * here). */
    int status = s->error ? s->error : s->eof ? IOL_EOF : -EPIPE;
    if (cb)
        cb(s, iol__loop_status(s->loop, status), t->hs_arg);
    iol__tls_wait_report(s, status);
}

static void tls_state_free(iol__tls *t)
{
    if (t->ssl)
        SSL_free(t->ssl); /* and its BIO */
    free(t->server_name);
    iol_tls_ctx_unref(t->ctx);
    free(t);
}

void iol__tls_free(iol_stream *s)
{
    tls_stop_timer(s);
    tls_state_free(s->tls);
    s->tls = NULL;
}

/* ------------------------------------------------------------- Public API */

static iol__tls *tls_state_new(iol_tls_ctx *ctx, const char *server_name, iol_connect_fn cb, void *arg)
{
    iol__tls *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    if (server_name && !ctx->server) {
        t->server_name = strdup(server_name);
        if (!t->server_name) {
            free(t);
            return NULL;
        }
    }
    t->ctx = iol_tls_ctx_ref(ctx);
    t->fd = -1;
    t->hs_cb = cb;
    t->hs_arg = arg;
    return t;
}

int iol_stream_start_tls(iol_stream *s, iol_tls_ctx *ctx, const char *server_name, iol_connect_fn cb, void *arg)
{
    if (!s)
        return -EINVAL;
    int thread_err = iol__stream_check_thread(s);
    if (thread_err)
        return thread_err;
    if (!ctx)
        return -EINVAL;
    if (s->closed)
        return -EPIPE;
    if (s->tls)
        return -EALREADY;
    if (s->connecting)
        return -EINPROGRESS;
    if (!ctx->server && ctx->verify && !server_name)
        return -EINVAL;
    if (!s->is_socket)
        return -ENOTSOCK;
    if (s->read_kind != READ_NONE || iol__buffer_len(&s->rbuf) > 0 || iol__buffer_len(&s->wbuf) > 0 || iol__stream_uring_busy(s))
        return -EBUSY;
    s->uring = false; /* TLS reads and writes through its BIO on the fd */
    s->tls = tls_state_new(ctx, server_name, cb, arg);
    if (!s->tls)
        return -ENOMEM;
    int r = tls_begin(s);
    if (r < 0) {
        iol__tls_free(s);
        return r;
    }
    r = iol__stream_update_events(s);
    if (r < 0) {
        iol__stream_hold(s);
        iol__stream_close_internal(s, r);
        iol__stream_release(s);
    }
    return r;
}

int iol_tls_stream_new(iol_stream **out, iol_loop *loop, int fd, iol_tls_ctx *ctx, size_t max_buffer_size)
{
    if (!loop)
        return -EINVAL;
    int thread_err = iol__loop_owner_check(loop);
    if (thread_err)
        return thread_err;
    if (!out || !ctx || !ctx->server)
        return -EINVAL;
    iol_stream *s;
    int r = iol_stream_new(&s, loop, fd, max_buffer_size);
    if (r < 0)
        return r;
    r = iol_stream_start_tls(s, ctx, NULL, NULL, NULL);
    if (r < 0) {
        /* Give fd back untouched, as iol_stream_new's failures do: on a
         * uring loop that also drops its claim and its place in the
         * handler count. */
        iol__stream_disown_fd(s);
        if (!s->closed)
            (void)iol_stream_close(s);
        return r;
    }
    *out = s;
    return 0;
}

/* iol_tls_connect's TCP connect finished: start the handshake, or hand
 * the connect's failure to the caller's callback. */
static void tls_on_connected(iol_stream *s, int status, void *arg)
{
    (void)arg;
    iol__tls *t = s->tls;
    if (status < 0) {
        iol_connect_fn cb = t->hs_cb;
        t->hs_cb = NULL;
        t->phase = TLS_DEAD;
        cb(s, status, t->hs_arg);
        return;
    }
    int r = tls_begin(s);
    if (r < 0) {
        t->phase = TLS_DEAD;
        iol__stream_close_internal(s, r); /* the close tells hs_cb */
    }
}

int iol_tls_connect(iol_stream **out, iol_loop *loop, const char *host, uint16_t port,
                    const iol_connect_options *opts, iol_tls_ctx *ctx, const char *server_name, iol_connect_fn cb,
                    void *arg)
{
    if (!loop)
        return -EINVAL;
    int thread_err = iol__loop_owner_check(loop);
    if (thread_err)
        return thread_err;
    if (!out || !host || !cb || !ctx || ctx->server)
        return -EINVAL;
    iol__tls *t = tls_state_new(ctx, server_name ? server_name : host, cb, arg);
    if (!t)
        return -ENOMEM;
    t->phase = TLS_CONNECTING;
    iol_stream *s;
    int r = iol_stream_connect_ex(&s, loop, host, port, opts, tls_on_connected, NULL);
    if (r < 0) {
        tls_state_free(t);
        return r;
    }
    s->tls = t; /* before any callback: none runs inside the call */
    *out = s;
    return 0;
}

/* Loop-thread state: false from another thread, without reading it. */
bool iol_stream_is_tls(const iol_stream *s)
{
    return s && !iol__stream_check_thread(s) && s->tls;
}

int iol_stream_tls_alpn(const iol_stream *s, char *buf, size_t size)
{
    if (!s)
        return -EINVAL;
    int thread_err = iol__stream_check_thread(s);
    if (thread_err)
        return thread_err;
    if (!buf && size > 0)
        return -EINVAL;
    if (!s->tls || s->tls->phase != TLS_OPEN)
        return -ENOTCONN;
    const unsigned char *proto = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(s->tls->ssl, &proto, &len);
    if (len + 1 > size)
        return -ENOSPC;
    if (len)
        memcpy(buf, proto, len);
    buf[len] = '\0';
    return (int)len;
}

bool iol_stream_tls_resumed(const iol_stream *s)
{
    return s && !iol__stream_check_thread(s) && s->tls && s->tls->phase == TLS_OPEN &&
           SSL_session_reused(s->tls->ssl);
}
