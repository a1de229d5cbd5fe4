/*
 * net/tls_bio.c — the BIO under every TLS stream: recv/send on the
 * stream's socket. OpenSSL's socket BIO writes with write(), which raises
 * SIGPIPE on a vanished peer; a library must not, so this one sends with
 * MSG_NOSIGNAL (as plain streams do) and keeps the last errno for the
 * stream's error.
 */
#include "net/tls_impl.h"

#include <errno.h>
#include <pthread.h>
#include <sys/socket.h>

static int bio_fd(BIO *b)
{
    return ((iol__tls *)BIO_get_data(b))->fd;
}

static void bio_note_errno(BIO *b, int err)
{
    ((iol__tls *)BIO_get_data(b))->sys_errno = err;
}

static int bio_write(BIO *b, const char *data, int len)
{
    ssize_t n;
    do {
        n = send(bio_fd(b), data, (size_t)len, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    BIO_clear_retry_flags(b);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            BIO_set_retry_write(b);
        else
            bio_note_errno(b, errno);
        return -1;
    }
    return (int)n;
}

static int bio_read(BIO *b, char *data, int len)
{
    ssize_t n;
    do {
        n = recv(bio_fd(b), data, (size_t)len, 0);
    } while (n < 0 && errno == EINTR);
    BIO_clear_retry_flags(b);
    iol__tls *t = BIO_get_data(b);
    t->bio_drained = n < len;
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            BIO_set_retry_read(b);
        else
            bio_note_errno(b, errno);
        return -1;
    }
    if (n == 0)
        t->peer_fin = true;
    return (int)n;
}

static int bio_puts(BIO *b, const char *str)
{
    return bio_write(b, str, (int)strlen(str));
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_EOF: /* OpenSSL then reports "unexpected eof while reading" */
        return ((iol__tls *)BIO_get_data(b))->peer_fin;
    case BIO_CTRL_FLUSH: /* every write went straight to the socket */
    case BIO_CTRL_DUP:
        return 1;
    default:
        return 0;
    }
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

/* Made once per process and kept (OpenSSL's own methods are static too). */
static void bio_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR, "iol_socket");
    if (!m)
        return;
    if (!BIO_meth_set_write(m, bio_write) || !BIO_meth_set_read(m, bio_read) || !BIO_meth_set_puts(m, bio_puts) ||
        !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create)) {
        BIO_meth_free(m);
        return;
    }
    bio_method = m;
}

BIO *iol__tls_bio_new(iol__tls *t)
{
    pthread_once(&bio_once, bio_method_init);
    if (!bio_method)
        return NULL;
    BIO *b = BIO_new(bio_method);
    if (b)
        BIO_set_data(b, t);
    return b;
}
