/* net/tls_none.c — the TLS API of a build without OpenSSL: -ENOTSUP. */
#include "ioloop.h"

#include <errno.h>

int iol_tls_ctx_new(iol_tls_ctx **out, const iol_tls_config *cfg)
{
    (void)out;
    (void)cfg;
    return -ENOTSUP;
}

iol_tls_ctx *iol_tls_ctx_ref(iol_tls_ctx *ctx)
{
    return ctx;
}

void iol_tls_ctx_unref(iol_tls_ctx *ctx)
{
    (void)ctx;
}

int iol_tls_stream_new(iol_stream **out, iol_loop *loop, int fd, iol_tls_ctx *ctx, size_t max_buffer_size)
{
    (void)out;
    (void)loop;
    (void)fd;
    (void)ctx;
    (void)max_buffer_size;
    return -ENOTSUP;
}

int iol_tls_connect(iol_stream **out, iol_loop *loop, const char *host, uint16_t port,
                    const iol_connect_options *opts, iol_tls_ctx *ctx, const char *server_name, iol_connect_fn cb,
                    void *arg)
{
    (void)out, (void)loop, (void)host, (void)port, (void)opts, (void)ctx, (void)server_name, (void)cb, (void)arg;
    return -ENOTSUP;
}

int iol_stream_start_tls(iol_stream *s, iol_tls_ctx *ctx, const char *server_name, iol_connect_fn cb, void *arg)
{
    (void)s, (void)ctx, (void)server_name, (void)cb, (void)arg;
    return -ENOTSUP;
}

bool iol_stream_is_tls(const iol_stream *s)
{
    (void)s;
    return false;
}

int iol_stream_tls_alpn(const iol_stream *s, char *buf, size_t size)
{
    (void)s, (void)buf, (void)size;
    return -ENOTSUP;
}

bool iol_stream_tls_resumed(const iol_stream *s)
{
    (void)s;
    return false;
}

int iol_stream_tls_verify_result(const iol_stream *s, char *text, size_t size)
{
    (void)s, (void)text, (void)size;
    return -ENOTSUP;
}

int iol_stream_tls_peer_subject(const iol_stream *s, char *buf, size_t size)
{
    (void)s, (void)buf, (void)size;
    return -ENOTSUP;
}

int iol_stream_tls_peer_sans(const iol_stream *s, char *buf, size_t size)
{
    (void)s, (void)buf, (void)size;
    return -ENOTSUP;
}

int iol_stream_tls_peer_cert_pem(const iol_stream *s, char *buf, size_t size)
{
    (void)s, (void)buf, (void)size;
    return -ENOTSUP;
}

int iol_stream_tls_version(const iol_stream *s)
{
    (void)s;
    return -ENOTSUP;
}

int iol_stream_tls_cipher(const iol_stream *s, char *buf, size_t size)
{
    (void)s, (void)buf, (void)size;
    return -ENOTSUP;
}

int iol_stream_wait_for_handshake(iol_stream *s, iol_connect_fn cb, void *arg)
{
    (void)s, (void)cb, (void)arg;
    return -ENOTSUP;
}
