/*
 * runtime/udp_shard.c — datagrams sharded across workers
 * (iol_runtime_udp_bind): one SO_REUSEPORT udp socket per worker, bound
 * here, wrapped by its worker (iol_udp_open, the public datagram API) in a
 * posted callback, closed by the worker when the runtime stops. In PEER
 * mode each worker keeps the datagrams whose sender hashes to it and
 * posts the others, copied, to their worker.
 *
 * Threads: the shard list and each shard's fields set at bind are under
 * rt->mu / immutable; a worker's slot (udp, fd, closed) belongs to that
 * worker's thread once the shard is published, except fd before the
 * worker took it, which runtime free closes after the workers are joined.
 * The counters are relaxed atomics: statistics, they order nothing.
 */
#include "runtime/runtime_impl.h"
#include "net/udp_bind.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loop/log.h"
#include "loop/owner.h"

typedef struct shard_worker {
    struct iol__udp_shard *shard;
    unsigned index;
    int fd;            /* until the worker wraps it */
    iol_udp *udp;      /* worker thread only */
    bool closed;       /* worker thread only: stop came first */
    _Atomic uint64_t delivered;
    /* PEER mode: the datagrams of a batch that stay here */
    iol_udp_datagram *keep;
    size_t keep_cap;
} shard_worker;

typedef struct iol__udp_shard {
    iol_runtime *rt;
    int mode;
    uint16_t port;
    iol_udp_recv_fn on_recv;
    void *arg;
    iol_udp_config udp; /* host and path cleared: the sockets are bound already */
    _Atomic uint64_t dropped;
    shard_worker *workers;
} iol__udp_shard;

/* A datagram on its way to the worker its sender hashes to. */
typedef struct forward {
    shard_worker *to;
    struct sockaddr_storage peer;
    socklen_t peerlen;
    iol_udp_datagram d;
    char data[]; /* d.len bytes */
} forward;

static unsigned peer_worker(const struct sockaddr *sa, unsigned n)
{
    const unsigned char *p = NULL;
    size_t len = 0;
    uint16_t port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        p = (const unsigned char *)&a->sin_addr;
        len = 4;
        port = a->sin_port;
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        p = (const unsigned char *)&a->sin6_addr;
        len = 16;
        port = a->sin6_port;
    }
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 16777619u;
    h = (h ^ (port & 0xff)) * 16777619u;
    h = (h ^ (port >> 8)) * 16777619u;
    return h % n;
}

static void deliver(shard_worker *w, iol_udp *u, const iol_udp_datagram *d, unsigned n, int status)
{
    if (n)
        atomic_fetch_add_explicit(&w->delivered, n, memory_order_relaxed);
    w->shard->on_recv(u, d, n, status, w->shard->arg);
}

static void forward_run(void *arg)
{
    forward *f = arg;
    shard_worker *w = f->to;
    if (w->udp) {
        f->d.data = f->data;
        f->d.peer = (const struct sockaddr *)&f->peer;
        deliver(w, w->udp, &f->d, 1, 0);
    } else {
        atomic_fetch_add_explicit(&w->shard->dropped, 1, memory_order_relaxed);
    }
    free(f);
}

static void forward_one(shard_worker *from, unsigned owner, const iol_udp_datagram *d)
{
    iol__udp_shard *sh = from->shard;
    forward *f = malloc(sizeof *f + d->len);
    if (!f) {
        atomic_fetch_add_explicit(&sh->dropped, 1, memory_order_relaxed);
        return;
    }
    f->to = &sh->workers[owner];
    memcpy(&f->peer, d->peer, d->peerlen);
    f->peerlen = d->peerlen;
    f->d = *d;
    f->d.local = NULL; /* the receiving worker's memory; not carried over */
    f->d.locallen = 0;
    memcpy(f->data, d->data, d->len);
    if (iol__runtime_post(sh->rt, owner, forward_run, f) < 0) { /* stopped */
        atomic_fetch_add_explicit(&sh->dropped, 1, memory_order_relaxed);
        free(f);
    }
}

static void shard_recv(iol_udp *u, const iol_udp_datagram *d, unsigned n, int status, void *arg)
{
    shard_worker *w = arg;
    iol__udp_shard *sh = w->shard;
    if (sh->mode != IOL_UDP_SHARD_PEER || status < 0) {
        deliver(w, u, d, n, status);
        return;
    }
    unsigned nw = iol_runtime_size(sh->rt);
    if (w->keep_cap < n) {
        iol_udp_datagram *k = realloc(w->keep, n * sizeof *k);
        if (!k) {
            deliver(w, u, d, n, status); /* no memory to sort: keep them all here */
            return;
        }
        w->keep = k;
        w->keep_cap = n;
    }
    unsigned kept = 0;
    for (unsigned i = 0; i < n; i++) {
        unsigned owner = peer_worker(d[i].peer, nw);
        if (owner == w->index)
            w->keep[kept++] = d[i];
        else
            forward_one(w, owner, &d[i]);
    }
    if (kept)
        deliver(w, u, w->keep, kept, 0);
}

static void shard_open(void *arg)
{
    shard_worker *w = arg;
    if (w->closed || w->fd < 0)
        return;
    iol_loop *loop = iol_runtime_loop(w->shard->rt, w->index);
    int r = iol_udp_open(&w->udp, loop, w->fd, &w->shard->udp);
    if (r == 0)
        r = iol_udp_recv_start(w->udp, shard_recv, w);
    if (r < 0) {
        iol__log(IOL_LOG_ERROR, "runtime: udp shard on worker %u: %s", w->index, strerror(-r));
        if (w->udp)
            iol_udp_close(w->udp);
        else
            close(w->fd);
        w->udp = NULL;
    }
    w->fd = -1;
}

/* ------------------------------------------------------------ Binding */

static void shard_free(iol__udp_shard *sh, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (sh->workers[i].fd >= 0)
            close(sh->workers[i].fd);
        free(sh->workers[i].keep);
    }
    free(sh->workers);
    free(sh);
}

/* Binds n sockets of one REUSEPORT group; the first fixes the port. */
static int bind_group(iol__udp_shard *sh, const iol_udp_config *cfg, unsigned n)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int r = iol__udp_bind_address(cfg, &ss, &len);
    if (r < 0)
        return r;
    for (unsigned i = 0; i < n; i++) {
        if ((r = iol__udp_bind(&ss, len, cfg->v6only, true, &sh->workers[i].fd)) < 0)
            return r;
        if (i == 0) {
            socklen_t l = sizeof ss;
            if (getsockname(sh->workers[i].fd, (struct sockaddr *)&ss, &l) < 0)
                return -errno;
            sh->port = iol__udp_port_of(&ss);
        }
    }
    return 0;
}

int iol_runtime_udp_bind(iol_runtime *rt, const iol_udp_shard_config *cfg)
{
    static const iol_udp_config defaults;
    if (!rt || !cfg || !cfg->on_recv)
        return -EINVAL;
    if (cfg->mode != IOL_UDP_SHARD_KERNEL && cfg->mode != IOL_UDP_SHARD_PEER)
        return -EINVAL;
    const iol_udp_config *ucfg = cfg->udp ? cfg->udp : &defaults;
    if (ucfg->path || iol__udp_check_config(ucfg) < 0)
        return -EINVAL;
    if (atomic_load_explicit(&rt->stopped, memory_order_seq_cst)) /* early answer; posts decide below */
        return -ESHUTDOWN;
    unsigned n = rt->n;
    iol__udp_shard *sh = calloc(1, sizeof *sh);
    if (!sh)
        return -ENOMEM;
    sh->workers = calloc(n, sizeof *sh->workers);
    if (!sh->workers) {
        free(sh);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < n; i++) {
        sh->workers[i].fd = -1;
        sh->workers[i].shard = sh;
        sh->workers[i].index = i;
    }
    sh->rt = rt;
    sh->mode = cfg->mode;
    sh->on_recv = cfg->on_recv;
    sh->arg = cfg->arg;
    sh->udp = *ucfg;
    sh->udp.host = NULL;
    sh->udp.flags &= ~(unsigned)IOL_UDP_REUSEPORT;
    int r = bind_group(sh, ucfg, n);
    if (r < 0) {
        shard_free(sh, n);
        return r;
    }
    pthread_mutex_lock(&rt->mu);
    if (rt->nudp_shards == rt->udp_shards_cap) {
        unsigned cap = rt->udp_shards_cap ? rt->udp_shards_cap * 2 : 4;
        iol__udp_shard **a = realloc(rt->udp_shards, cap * sizeof *a);
        if (!a) {
            pthread_mutex_unlock(&rt->mu);
            shard_free(sh, n);
            return -ENOMEM;
        }
        rt->udp_shards = a;
        rt->udp_shards_cap = cap;
    }
    int id = (int)rt->nudp_shards;
    rt->udp_shards[rt->nudp_shards++] = sh;
    pthread_mutex_unlock(&rt->mu);
    /* Published: from here each worker's fd is its worker's. A post that
     * is refused (stop came meanwhile, or -ENOMEM) reaches no worker, so
     * that slot and the ones after it are still ours: close their sockets
     * now, or the kernel would keep hashing a share of the peers to
     * sockets nobody reads. The workers reached share the traffic. */
    for (unsigned i = 0; i < n; i++) {
        if (iol__runtime_post(rt, i, shard_open, &sh->workers[i]) == 0)
            continue;
        iol__log(IOL_LOG_WARNING, "udp shard %d: worker %u not reached, %u socket(s) closed", id, i, n - i);
        for (unsigned j = i; j < n; j++) {
            close(sh->workers[j].fd);
            sh->workers[j].fd = -1;
        }
        break;
    }
    return id;
}

static iol__udp_shard *shard_get(iol_runtime *rt, int id)
{
    pthread_mutex_lock(&rt->mu);
    iol__udp_shard *sh = id >= 0 && (unsigned)id < rt->nudp_shards ? rt->udp_shards[id] : NULL;
    pthread_mutex_unlock(&rt->mu);
    return sh;
}

int iol_runtime_udp_port(iol_runtime *rt, int id)
{
    if (!rt)
        return -EINVAL;
    iol__udp_shard *sh = shard_get(rt, id);
    return sh ? sh->port : -ENOENT;
}

int iol_runtime_udp_counts(iol_runtime *rt, int id, uint64_t *counts, unsigned n, uint64_t *dropped)
{
    if (!rt || (!counts && n > 0))
        return -EINVAL;
    iol__udp_shard *sh = shard_get(rt, id);
    if (!sh)
        return -ENOENT;
    for (unsigned i = 0; i < n && i < rt->n; i++)
        counts[i] = atomic_load_explicit(&sh->workers[i].delivered, memory_order_relaxed);
    if (dropped)
        *dropped = atomic_load_explicit(&sh->dropped, memory_order_relaxed);
    return (int)rt->n;
}

iol_udp *iol_runtime_udp_socket(iol_runtime *rt, int id, unsigned worker)
{
    if (!rt || worker >= rt->n)
        return NULL;
    /* The slot is that worker's (read unlocked): from another thread while
     * its loop runs, NULL, as the thread rule's fixed answer. */
    if (iol__loop_owner_check(rt->workers[worker].loop) < 0)
        return NULL;
    iol__udp_shard *sh = shard_get(rt, id);
    return sh ? sh->workers[worker].udp : NULL;
}

/* ------------------------------------------------------- Stop and free */

void iol__udp_shards_stop(iol_runtime *rt, unsigned index)
{
    pthread_mutex_lock(&rt->mu);
    unsigned n = rt->nudp_shards;
    pthread_mutex_unlock(&rt->mu);
    for (unsigned s = 0; s < n; s++) {
        iol__udp_shard *sh = shard_get(rt, (int)s);
        shard_worker *w = &sh->workers[index];
        w->closed = true;
        if (w->udp)
            iol_udp_close(w->udp);
        w->udp = NULL;
    }
}

void iol__udp_shards_free(iol_runtime *rt)
{
    for (unsigned s = 0; s < rt->nudp_shards; s++)
        shard_free(rt->udp_shards[s], rt->n);
    free(rt->udp_shards);
    rt->udp_shards = NULL;
    rt->nudp_shards = 0;
}
