/*
 * net/tls_impl.h — TLS internals shared by tls_ctx.c, tls_stream.c and
 * tls_bio.c (built only with OpenSSL).
 */
#ifndef IOL_NET_TLS_IMPL_H
#define IOL_NET_TLS_IMPL_H

#include "ioloop.h"
#include "net/tls.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

enum { TLS_SESSION_SLOTS = 64 }; /* client: server names whose last session is kept */

typedef struct tls_session_slot {
    char *name;
    SSL_SESSION *session;
} tls_session_slot;

struct iol_tls_ctx {
    /* Streams and the creator each hold one; the last unref frees. Relaxed
     * increments; the decrement is acq_rel so the freeing thread sees
     * every use of the context before it frees (as any refcount). */
    atomic_uint refs;
    bool server;
    bool verify;
    bool resumption;
    int client_cert;          /* server: IOL_TLS_CLIENT_CERT_* */
    double handshake_timeout; /* < 0: none */
    SSL_CTX *ssl_ctx;   /* the default certificate (server) or the client's */
    SSL_CTX **extra;    /* server: by SNI */
    X509 **extra_leaf;  /* the leaf of extra[i], matched against the SNI name */
    unsigned n_extra;
    unsigned n_extra_wanted; /* server: cfg->n_extra (n_extra counts those loaded) */
    unsigned char *alpn; /* wire format: length-prefixed names */
    unsigned alpn_len;
    /* client: the last session per server name, so a reconnect resumes;
     * workers share it, hence the lock (taken once per handshake). */
    pthread_mutex_t sessions_lock;
    tls_session_slot sessions[TLS_SESSION_SLOTS];
    unsigned next_slot;
};

typedef enum { TLS_CONNECTING, TLS_HANDSHAKE, TLS_OPEN, TLS_DEAD } tls_phase;

struct iol__tls {
    iol_tls_ctx *ctx; /* referenced */
    SSL *ssl;         /* NULL until the TCP connect finished (iol_tls_connect) */
    int fd;           /* the BIO's socket */
    tls_phase phase;
    unsigned hs_want; /* handshake: IOL_READ or IOL_WRITE */
    bool read_wants_write; /* SSL_read said WANT_WRITE */
    bool write_wants_read; /* SSL_write said WANT_READ */
    bool peer_fin;    /* the BIO saw the peer's FIN */
    bool bio_drained; /* the BIO's last recv emptied the socket (short, or EAGAIN) */
    int sys_errno;    /* the BIO's last socket error */
    char *server_name; /* client: SNI and verified name (or IP) */
    bool opened;      /* the handshake finished (stays set after a close) */
    bool verified;    /* the certificate check is over: verify_status says how */
    int verify_status; /* 0 or IOL_ETLS_* (the library's code, before iol__loop_status) */
    int verify_reason; /* PEER_REJECTED, NO_PEER_CERT: OpenSSL's SSL_R_* reason */
    iol_connect_fn hs_cb;
    void *hs_arg;
    iol_timeout hs_timer;
    /* iol_stream_wait_for_handshake (tls_wait.c): runs once */
    iol_connect_fn wait_cb;
    void *wait_arg;
};

BIO *iol__tls_bio_new(iol__tls *t);
/* The handshake ended (phase OPEN or DEAD) or the stream closed: runs
 * the wait_for_handshake callback, if any, with status (tls_wait.c). */
void iol__tls_wait_report(iol_stream *s, int status);
/* ctx: an SSL for one stream, with the client's cached session for name. */
SSL *iol__tls_ctx_new_ssl(iol_tls_ctx *ctx, const char *server_name);
/* Error queue → "reason; reason" into buf; clears the queue. */
void iol__tls_reason(char *buf, size_t size);


#endif /* IOL_NET_TLS_IMPL_H */
