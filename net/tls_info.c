/*
 * net/tls_info.c — what a TLS handshake settled, for the application:
 * the certificate check's verdict, the peer's certificate (subject,
 * subjectAltNames, PEM), the protocol version and the cipher. Read-only
 * calls of the loop thread.
 */
#include "net/stream_impl.h"
#include "loop/status.h"
#include "net/tls_impl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/pem.h>
#include <stdio.h>

/* The prologue of every call: NULL, thread, a buffer that is not there. */
static int info_check(const iol_stream *s, const char *buf, size_t size)
{
    if (!s)
        return -EINVAL;
    /* The owner rule of every stream call (the thread running the loop),
     * not "the loop is current here": any thread may make it current. */
    int err = iol__stream_check_thread(s);
    if (err)
        return err;
    if (!buf && size > 0)
        return -EINVAL;
    return 0;
}

/* len bytes and a NUL into buf: the length, or -ENOSPC (buf untouched). */
static int copy_out(char *buf, size_t size, const char *data, size_t len)
{
    if (len > INT_MAX - 1 || len + 1 > size)
        return -ENOSPC;
    memcpy(buf, data, len);
    buf[len] = '\0';
    return (int)len;
}

/* What a memory BIO holds, into buf as copy_out. */
static int copy_bio(BIO *b, char *buf, size_t size)
{
    char *data;
    long len = BIO_get_mem_data(b, &data);
    int r = len < 0 ? -ENOMEM : copy_out(buf, size, data, (size_t)len);
    BIO_free(b);
    return r;
}

int iol_stream_tls_verify_result(const iol_stream *s, char *text, size_t size)
{
    int err = info_check(s, text, size);
    if (err)
        return err;
    const iol__tls *t = s->tls;
    if (!t || !t->verified)
        return -ENOTCONN;
    if (size > 0) {
        /* Passed, or not made: a client that does not verify, a server
         * that asked for no certificate or got none it only requested
         * (OpenSSL's result then says nothing that counted). */
        bool checked = t->ctx->server ? t->ctx->client_cert && SSL_get0_peer_certificate(t->ssl) : t->ctx->verify;
        const char *why;
        if (t->verify_status == 0 && !checked)
            why = "not verified";
        else if (t->verify_status == IOL_ETLS_PEER_REJECTED || t->verify_status == IOL_ETLS_NO_PEER_CERT)
            why = ERR_reason_error_string(ERR_PACK(ERR_LIB_SSL, 0, t->verify_reason));
        else
            why = X509_verify_cert_error_string(SSL_get_verify_result(t->ssl));
        snprintf(text, size, "%s", why ? why : iol_strerror(t->verify_status));
    }
    return iol__loop_status(s->loop, t->verify_status);
}

/* The peer's leaf certificate, once the check is over (a client whose
 * check failed finds it at the head of the chain the server sent). */
static int peer_cert(const iol_stream *s, X509 **out)
{
    const iol__tls *t = s->tls;
    if (!t || !t->verified)
        return -ENOTCONN;
    X509 *cert = SSL_get0_peer_certificate(t->ssl);
    if (!cert && !SSL_is_server(t->ssl)) {
        STACK_OF(X509) *chain = SSL_get_peer_cert_chain(t->ssl);
        if (chain && sk_X509_num(chain) > 0)
            cert = sk_X509_value(chain, 0);
    }
    *out = cert;
    return cert ? 0 : -ENOENT;
}

int iol_stream_tls_peer_subject(const iol_stream *s, char *buf, size_t size)
{
    int err = info_check(s, buf, size);
    X509 *cert;
    if (err || (err = peer_cert(s, &cert)))
        return err;
    BIO *b = BIO_new(BIO_s_mem());
    if (!b || X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) < 0) {
        BIO_free(b);
        return -ENOMEM;
    }
    return copy_bio(b, buf, size);
}

/* One subjectAltName as "TYPE:value" into b; other types are left out. */
static void print_san(BIO *b, const GENERAL_NAME *gn, bool *first)
{
    const char *prefix;
    char ip[INET6_ADDRSTRLEN];
    const char *value;
    int len;
    switch (gn->type) {
    case GEN_DNS:
    case GEN_EMAIL:
    case GEN_URI:
        prefix = gn->type == GEN_DNS ? "DNS:" : gn->type == GEN_EMAIL ? "email:" : "URI:";
        value = (const char *)ASN1_STRING_get0_data(gn->d.ia5);
        len = ASN1_STRING_length(gn->d.ia5);
        break;
    case GEN_IPADD: {
        int n = ASN1_STRING_length(gn->d.ip);
        const unsigned char *a = ASN1_STRING_get0_data(gn->d.ip);
        if ((n != 4 && n != 16) || !inet_ntop(n == 4 ? AF_INET : AF_INET6, a, ip, sizeof(ip)))
            return;
        prefix = "IP:";
        value = ip;
        len = (int)strlen(ip);
        break;
    }
    default:
        return;
    }
    BIO_printf(b, "%s%s%.*s", *first ? "" : ",", prefix, len, value);
    *first = false;
}

int iol_stream_tls_peer_sans(const iol_stream *s, char *buf, size_t size)
{
    int err = info_check(s, buf, size);
    X509 *cert;
    if (err || (err = peer_cert(s, &cert)))
        return err;
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return -ENOMEM;
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    bool first = true;
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++)
        print_san(b, sk_GENERAL_NAME_value(names, i), &first);
    GENERAL_NAMES_free(names);
    return copy_bio(b, buf, size);
}

int iol_stream_tls_peer_cert_pem(const iol_stream *s, char *buf, size_t size)
{
    int err = info_check(s, buf, size);
    X509 *cert;
    if (err || (err = peer_cert(s, &cert)))
        return err;
    BIO *b = BIO_new(BIO_s_mem());
    if (!b || PEM_write_bio_X509(b, cert) != 1) {
        BIO_free(b);
        return -ENOMEM;
    }
    return copy_bio(b, buf, size);
}

int iol_stream_tls_version(const iol_stream *s)
{
    int err = info_check(s, NULL, 0);
    if (err)
        return err;
    if (!s->tls || !s->tls->opened)
        return -ENOTCONN;
    return SSL_version(s->tls->ssl);
}

int iol_stream_tls_cipher(const iol_stream *s, char *buf, size_t size)
{
    int err = info_check(s, buf, size);
    if (err)
        return err;
    if (!s->tls || !s->tls->opened)
        return -ENOTCONN;
    const char *name = SSL_CIPHER_get_name(SSL_get_current_cipher(s->tls->ssl));
    return copy_out(buf, size, name, strlen(name));
}
