/*
 * net/tls_ctx.c — iol_tls_ctx: an OpenSSL SSL_CTX (one per server
 * certificate, picked by SNI), ALPN, session resumption. Immutable once
 * made except for the client's session cache (locked), so every worker
 * shares one; OpenSSL's SSL_CTX is thread-safe for making SSLs.
 */
#include "net/tls_impl.h"

#include "loop/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

_Static_assert(sizeof(iol_tls_config) == 256, "iol_tls_config outgrew its reserve");

void iol__tls_reason(char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        if (used + 3 >= size)
            continue; /* drain the rest */
        if (used > 0) {
            memcpy(buf + used, "; ", 3);
            used += 2;
        }
        ERR_error_string_n(e, buf + used, size - used);
        used += strlen(buf + used);
    }
    if (used == 0)
        snprintf(buf, size, "no OpenSSL reason");
}

/* ------------------------------------------------------------------- ALPN */

/* "h2,http/1.1" → "\x02h2\x08http/1.1". -EINVAL: an empty or too long name. */
static int alpn_wire(const char *list, unsigned char **out, unsigned *out_len)
{
    size_t n = strlen(list);
    unsigned char *w = malloc(n + 1);
    if (!w)
        return -ENOMEM;
    size_t used = 0;
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0 || len > 255) {
            free(w);
            return -EINVAL;
        }
        w[used++] = (unsigned char)len;
        memcpy(w + used, p, len);
        used += len;
        if (!comma)
            break;
        p = comma + 1;
    }
    *out = w;
    *out_len = (unsigned)used;
    return 0;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned inlen, void *arg)
{
    (void)ssl;
    iol_tls_ctx *ctx = arg;
    unsigned char *sel;
    /* Our preference first; no overlap: go on without ALPN (NOACK). */
    if (SSL_select_next_proto(&sel, outlen, ctx->alpn, ctx->alpn_len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* -------------------------------------------------------------------- SNI */

static int sni_select(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    iol_tls_ctx *ctx = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name)
        return SSL_TLSEXT_ERR_NOACK; /* the default certificate */
    X509 *def = SSL_CTX_get0_certificate(ctx->ssl_ctx);
    if (def && X509_check_host(def, name, 0, 0, NULL) == 1)
        return SSL_TLSEXT_ERR_OK;
    for (unsigned i = 0; i < ctx->n_extra; i++) {
        if (X509_check_host(ctx->extra_leaf[i], name, 0, 0, NULL) == 1) {
            SSL_set_SSL_CTX(ssl, ctx->extra[i]);
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_OK; /* unknown name: the default certificate */
}

/* --------------------------------------------------- Client session cache */

static tls_session_slot *session_slot(iol_tls_ctx *ctx, const char *name)
{
    for (unsigned i = 0; i < TLS_SESSION_SLOTS; i++)
        if (ctx->sessions[i].name && strcmp(ctx->sessions[i].name, name) == 0)
            return &ctx->sessions[i];
    return NULL;
}

/* A new session from a server (TLS 1.3: a ticket after the handshake):
 * kept as the one to offer next time for that name. */
static int session_new(SSL *ssl, SSL_SESSION *sess)
{
    iol__tls *t = SSL_get_app_data(ssl);
    if (!t || !t->server_name)
        return 0;
    iol_tls_ctx *ctx = t->ctx;
    int kept = 0;
    pthread_mutex_lock(&ctx->sessions_lock);
    tls_session_slot *slot = session_slot(ctx, t->server_name);
    if (!slot) {
        slot = &ctx->sessions[ctx->next_slot];
        ctx->next_slot = (ctx->next_slot + 1) % TLS_SESSION_SLOTS;
        char *name = strdup(t->server_name);
        if (name) {
            free(slot->name);
            if (slot->session)
                SSL_SESSION_free(slot->session);
            slot->name = name;
            slot->session = NULL;
        } else {
            slot = NULL;
        }
    }
    if (slot) {
        if (slot->session)
            SSL_SESSION_free(slot->session);
        slot->session = sess; /* returning 1 hands us the reference */
        kept = 1;
    }
    pthread_mutex_unlock(&ctx->sessions_lock);
    return kept;
}

SSL *iol__tls_ctx_new_ssl(iol_tls_ctx *ctx, const char *server_name)
{
    SSL *ssl = SSL_new(ctx->ssl_ctx);
    if (!ssl || ctx->server || !server_name)
        return ssl;
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, server_name, ip) == 1 || inet_pton(AF_INET6, server_name, ip) == 1;
    int ok = 1;
    if (is_ip) {
        if (ctx->verify)
            ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), server_name);
    } else {
        ok = SSL_set_tlsext_host_name(ssl, server_name);
        if (ok && ctx->verify)
            ok = SSL_set1_host(ssl, server_name);
    }
    if (ok && ctx->resumption) {
        pthread_mutex_lock(&ctx->sessions_lock);
        tls_session_slot *slot = session_slot(ctx, server_name);
        if (slot && slot->session)
            ok = SSL_set_session(ssl, slot->session);
        pthread_mutex_unlock(&ctx->sessions_lock);
    }
    if (!ok) {
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

/* --------------------------------------------------------------- Creation */

/* -ENOENT/-EACCES before OpenSSL says the same less clearly. */
static int check_file(const char *path)
{
    return access(path, R_OK) == 0 ? 0 : -errno;
}

static int load_failed(const char *what, const char *path)
{
    char reason[256];
    iol__tls_reason(reason, sizeof(reason));
    iol__log(IOL_LOG_ERROR, "tls: cannot load %s %s: %s", what, path, reason);
    return -EBADMSG;
}

/* Versions and ciphers: -EINVAL when OpenSSL accepts none of them. */
static int set_protocol(SSL_CTX *c, const iol_tls_config *cfg)
{
    if (!SSL_CTX_set_min_proto_version(c, cfg->min_version ? cfg->min_version : TLS1_2_VERSION) ||
        !SSL_CTX_set_max_proto_version(c, cfg->max_version))
        return -EINVAL;
    if (cfg->ciphers && SSL_CTX_set_cipher_list(c, cfg->ciphers) != 1)
        return -EINVAL;
    if (cfg->ciphersuites && SSL_CTX_set_ciphersuites(c, cfg->ciphersuites) != 1)
        return -EINVAL;
    return 0;
}

/* One SSL_CTX with the settings every context shares; NULL: out of
 * memory or (*err) a setting OpenSSL refuses. */
static SSL_CTX *ssl_ctx_base(iol_tls_ctx *ctx, const iol_tls_config *cfg, int *err)
{
    *err = -ENOMEM;
    SSL_CTX *c = SSL_CTX_new(ctx->server ? TLS_server_method() : TLS_client_method());
    if (!c)
        return NULL;
    *err = set_protocol(c, cfg);
    if (*err < 0) {
        SSL_CTX_free(c);
        return NULL;
    }
    /* Partial writes: SSL_write reports each record written, as send()
     * reports bytes, so the write buffer drains record by record; the
     * buffer may move between a WANT_WRITE and the retry (it is
     * compacted). Released buffers: an idle TLS stream stays small. */
    SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    /* One recv per burst of records rather than two per record (header,
     * then body); tls_stream.c drains what it leaves inside OpenSSL. */
    SSL_CTX_set_read_ahead(c, 1);
    if (ctx->server) {
        if (ctx->alpn)
            SSL_CTX_set_alpn_select_cb(c, alpn_select, ctx);
        /* One certificate: nothing to choose, so no name check per
         * handshake. */
        if (ctx->n_extra_wanted) {
            SSL_CTX_set_tlsext_servername_callback(c, sni_select);
            SSL_CTX_set_tlsext_servername_arg(c, ctx);
        }
        static const unsigned char sid_ctx[] = "ioloop";
        SSL_CTX_set_session_id_context(c, sid_ctx, sizeof(sid_ctx) - 1);
        if (!ctx->resumption) {
            SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
            SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
            SSL_CTX_set_num_tickets(c, 0);
        }
    } else {
        if (ctx->alpn && SSL_CTX_set_alpn_protos(c, ctx->alpn, ctx->alpn_len) != 0) {
            SSL_CTX_free(c);
            *err = -ENOMEM;
            return NULL;
        }
        if (ctx->resumption) {
            SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
            SSL_CTX_sess_set_new_cb(c, session_new);
        } else {
            SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
        }
    }
    return c;
}

static int load_pair(SSL_CTX *c, const char *cert, const char *key)
{
    int r = check_file(cert);
    if (r == 0)
        r = check_file(key);
    if (r < 0)
        return r;
    if (SSL_CTX_use_certificate_chain_file(c, cert) != 1)
        return load_failed("certificate", cert);
    if (SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1)
        return load_failed("key", key);
    if (SSL_CTX_check_private_key(c) != 1)
        return load_failed("key (does it match the certificate?)", key);
    return 0;
}

/* ------------------------------------------------------- PEM from memory */

static BIO *pem_bio(const char *pem, size_t len)
{
    return BIO_new_mem_buf(pem, (int)(len ? len : strlen(pem)));
}

/* The end of the PEM data: nothing but "no start line" on the queue. */
static bool pem_at_end(void)
{
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) != ERR_LIB_PEM || ERR_GET_REASON(e) != PEM_R_NO_START_LINE)
        return false;
    ERR_clear_error();
    return true;
}

/* A chain (leaf first) and its key from PEM buffers. */
static int load_pair_pem(SSL_CTX *c, const iol_tls_config *cfg)
{
    BIO *b = pem_bio(cfg->cert_pem, cfg->cert_pem_len);
    if (!b)
        return -ENOMEM;
    int r = 0;
    X509 *leaf = PEM_read_bio_X509_AUX(b, NULL, NULL, NULL);
    if (!leaf || SSL_CTX_use_certificate(c, leaf) != 1) {
        r = load_failed("certificate", "from cert_pem");
        goto out;
    }
    SSL_CTX_clear_chain_certs(c);
    X509 *ca;
    while ((ca = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(c, ca) != 1) { /* takes ca on success */
            X509_free(ca);
            r = load_failed("chain certificate", "from cert_pem");
            goto out;
        }
    }
    if (!pem_at_end()) {
        r = load_failed("chain certificate", "from cert_pem");
        goto out;
    }
    BIO_free(b);
    b = pem_bio(cfg->key_pem, cfg->key_pem_len);
    if (!b) {
        r = -ENOMEM;
        goto out;
    }
    EVP_PKEY *key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    if (!key || SSL_CTX_use_PrivateKey(c, key) != 1)
        r = load_failed("key", "from key_pem");
    else if (SSL_CTX_check_private_key(c) != 1)
        r = load_failed("key (does it match the certificate?)", "from key_pem");
    EVP_PKEY_free(key);
out:
    X509_free(leaf);
    BIO_free(b);
    return r;
}

/* The CA certificates of ca_pem into c's trust store: at least one. */
static int load_ca_pem(SSL_CTX *c, const iol_tls_config *cfg)
{
    BIO *b = pem_bio(cfg->ca_pem, cfg->ca_pem_len);
    if (!b)
        return -ENOMEM;
    X509_STORE *store = SSL_CTX_get_cert_store(c);
    int n = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        int ok = X509_STORE_add_cert(store, x); /* takes its own reference */
        X509_free(x);
        if (ok != 1)
            break;
        n++;
    }
    BIO_free(b);
    if (n == 0 || !pem_at_end())
        return load_failed("CA certificates", "from ca_pem");
    return 0;
}

/* The certificate and key of c: from files or buffers; none on a client
 * that gave none. */
static int load_own(SSL_CTX *c, const iol_tls_config *cfg)
{
    if (cfg->cert_pem)
        return load_pair_pem(c, cfg);
    if (cfg->cert_file)
        return load_pair(c, cfg->cert_file, cfg->key_file);
    return 0;
}

/* The peer's certificate is verified against ca_file/ca_pem, else the
 * system's trust store: a client's always (unless insecure_no_verify), a
 * server's client certificates when it asks for them. */
static int load_trust(iol_tls_ctx *ctx, SSL_CTX *c, const iol_tls_config *cfg)
{
    int mode = SSL_VERIFY_PEER;
    if (ctx->server && ctx->client_cert == IOL_TLS_CLIENT_CERT_REQUIRE)
        mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(c, mode, NULL);
    if (cfg->ca_pem)
        return load_ca_pem(c, cfg);
    if (cfg->ca_file) {
        int r = check_file(cfg->ca_file);
        if (r < 0)
            return r;
        if (SSL_CTX_load_verify_locations(c, cfg->ca_file, NULL) != 1)
            return load_failed("CA file", cfg->ca_file);
        return 0;
    }
    if (SSL_CTX_set_default_verify_paths(c) != 1)
        return load_failed("the default trust store", "");
    return 0;
}

static void ctx_free(iol_tls_ctx *ctx)
{
    for (unsigned i = 0; i < ctx->n_extra; i++)
        SSL_CTX_free(ctx->extra[i]); /* extra_leaf[i] belongs to it */
    free(ctx->extra);
    free(ctx->extra_leaf);
    SSL_CTX_free(ctx->ssl_ctx);
    for (unsigned i = 0; i < TLS_SESSION_SLOTS; i++) {
        free(ctx->sessions[i].name);
        if (ctx->sessions[i].session)
            SSL_SESSION_free(ctx->sessions[i].session);
    }
    pthread_mutex_destroy(&ctx->sessions_lock);
    free(ctx->alpn);
    free(ctx);
}

static int ctx_build(iol_tls_ctx *ctx, const iol_tls_config *cfg)
{
    if (cfg->alpn && cfg->alpn[0]) {
        int r = alpn_wire(cfg->alpn, &ctx->alpn, &ctx->alpn_len);
        if (r < 0)
            return r;
    }
    int r;
    ctx->ssl_ctx = ssl_ctx_base(ctx, cfg, &r);
    if (!ctx->ssl_ctx)
        return r;
    r = load_own(ctx->ssl_ctx, cfg);
    if (r == 0 && (ctx->verify || ctx->client_cert))
        r = load_trust(ctx, ctx->ssl_ctx, cfg);
    if (r < 0 || !ctx->server)
        return r;
    if (cfg->n_extra) {
        ctx->extra = calloc(cfg->n_extra, sizeof(*ctx->extra));
        ctx->extra_leaf = calloc(cfg->n_extra, sizeof(*ctx->extra_leaf));
        if (!ctx->extra || !ctx->extra_leaf)
            return -ENOMEM;
    }
    for (unsigned i = 0; i < cfg->n_extra; i++) {
        ctx->extra[i] = ssl_ctx_base(ctx, cfg, &r);
        if (!ctx->extra[i])
            return r;
        ctx->n_extra = i + 1;
        r = load_pair(ctx->extra[i], cfg->extra_cert_files[i], cfg->extra_key_files[i]);
        if (r == 0 && ctx->client_cert) /* SNI switches to it: the same client checks */
            r = load_trust(ctx, ctx->extra[i], cfg);
        if (r < 0)
            return r;
        ctx->extra_leaf[i] = SSL_CTX_get0_certificate(ctx->extra[i]);
    }
    return 0;
}

static bool version_ok(int v)
{
    return v == 0 || v == IOL_TLS_1_2 || v == IOL_TLS_1_3;
}

static bool pem_len_ok(const char *pem, size_t len)
{
    return !pem || len <= INT_MAX;
}

/* The argument checks of iol_tls_ctx_new (see the header). */
static bool config_ok(const iol_tls_config *cfg)
{
    if (isnan(cfg->handshake_timeout))
        return false;
    if ((cfg->cert_file && cfg->cert_pem) || (cfg->key_file && cfg->key_pem) || (cfg->ca_file && cfg->ca_pem))
        return false;
    if (!pem_len_ok(cfg->cert_pem, cfg->cert_pem_len) || !pem_len_ok(cfg->key_pem, cfg->key_pem_len) ||
        !pem_len_ok(cfg->ca_pem, cfg->ca_pem_len))
        return false;
    bool has_cert = cfg->cert_file || cfg->cert_pem;
    bool has_key = cfg->key_file || cfg->key_pem;
    if (has_cert != has_key || (cfg->server && !has_cert))
        return false;
    if (!version_ok(cfg->min_version) || !version_ok(cfg->max_version) ||
        (cfg->min_version && cfg->max_version && cfg->min_version > cfg->max_version))
        return false;
    if (cfg->client_cert < IOL_TLS_CLIENT_CERT_NONE || cfg->client_cert > IOL_TLS_CLIENT_CERT_REQUIRE ||
        (cfg->client_cert && !cfg->server))
        return false;
    if (cfg->server && cfg->n_extra) {
        if (!cfg->extra_cert_files || !cfg->extra_key_files)
            return false;
        for (unsigned i = 0; i < cfg->n_extra; i++)
            if (!cfg->extra_cert_files[i] || !cfg->extra_key_files[i])
                return false;
    }
    return true;
}

int iol_tls_ctx_new(iol_tls_ctx **out, const iol_tls_config *cfg)
{
    if (!out || !cfg || !config_ok(cfg))
        return -EINVAL;
    iol_tls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return -ENOMEM;
    atomic_init(&ctx->refs, 1);
    pthread_mutex_init(&ctx->sessions_lock, NULL);
    ctx->server = cfg->server;
    ctx->verify = !cfg->server && !cfg->insecure_no_verify;
    ctx->client_cert = cfg->server ? cfg->client_cert : IOL_TLS_CLIENT_CERT_NONE;
    ctx->resumption = !cfg->no_resumption;
    ctx->handshake_timeout = cfg->handshake_timeout == 0 ? 10.0 : cfg->handshake_timeout;
    ctx->n_extra_wanted = cfg->server ? cfg->n_extra : 0;
    ERR_clear_error();
    int r = ctx_build(ctx, cfg);
    ERR_clear_error();
    if (r < 0) {
        ctx_free(ctx);
        return r;
    }
    *out = ctx;
    return 0;
}

iol_tls_ctx *iol_tls_ctx_ref(iol_tls_ctx *ctx)
{
    if (ctx)
        atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed); /* the caller holds one already */
    return ctx;
}

void iol_tls_ctx_unref(iol_tls_ctx *ctx)
{
    /* acq_rel: every thread's last use happens before the free. */
    if (ctx && atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel) == 1)
        ctx_free(ctx);
}
