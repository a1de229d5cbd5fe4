/* runtime/ — state shared by runtime.c (workers) and listener.c.
 * Nothing outside runtime/ includes this. */
#ifndef IOL_RUNTIME_IMPL_H
#define IOL_RUNTIME_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "ioloop.h"

#define IOL__CACHE_LINE 64

struct iol__listener;

typedef struct iol__rt_worker {
    /* Written by posting threads: on its own line so producers posting to
     * different workers do not share one. See iol_runtime_post for the
     * ordering argument. */
    _Alignas(IOL__CACHE_LINE) _Atomic long inflight;

    /* Handoff balance, read by the acceptor thread, on their own
     * line. pending: fds handed to this worker whose on_accept has not run
     * yet. own_handlers: fd handlers the runtime itself registered on this
     * loop (listening sockets), subtracted from the loop's handler count
     * so only connections count. Both relaxed: a load-balancing snapshot,
     * they order nothing. */
    _Alignas(IOL__CACHE_LINE) _Atomic int pending;
    _Atomic int own_handlers;
    /* taken: handoffs this worker began to run (the first thing a handoff
     * callback does); handed: handoffs queued to it, written by the
     * acceptor only. taken < handed: the worker has not come to its queue
     * since (busy or behind). taken relaxed, as pending. */
    _Atomic unsigned long taken;
    unsigned long handed;
    /* Acceptor only: the taken count it last saw, and since when the
     * worker is known to have made no progress on its queue. */
    unsigned long seen_taken;
    double progress_at;

    /* Set before the thread starts or owned by the worker thread. */
    _Alignas(IOL__CACHE_LINE) struct iol_runtime *rt;
    unsigned index;
    iol_loop *loop;
    pthread_t thread;
    bool signaled_running; /* worker thread only */
    bool loop_closed;      /* the worker closed its loop on exit */
    /* Worker thread only. Drain sentinels queued and run: the sentinel
     * that brings run up to queued stops the loop (see drain). */
    unsigned sentinels_queued, sentinels_run;
    /* Worker thread only, during the drain: its end (loop time) and the
     * timer that checks for it. */
    double drain_deadline;
    iol_timeout drain_timer;
} iol__rt_worker;

enum { IOL__RT_NEW = 0, IOL__RT_STARTED };

struct iol_runtime {
    unsigned n;
    iol__rt_worker *workers;
    iol_runtime_config cfg;

    /* The stop flag, seq_cst: see iol_runtime_post and worker_shutdown. */
    _Atomic bool stopped;

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;
    int state;
    unsigned nthreads;        /* worker threads created */
    bool creating;            /* start still creating threads */
    unsigned running;         /* loops that reported running */
    unsigned accepted_final;  /* workers done with their final accepts */
    bool joining, joined;

    struct iol__listener **listeners;
    unsigned nlisteners, listeners_cap;
    struct iol__udp_shard **udp_shards; /* udp_shard.c */
    unsigned nudp_shards, udp_shards_cap;
    bool listeners_closed; /* a worker began its final accepts: no new listen */

    /* The acceptor: a thread of its own that watches the HANDOFF
     * listeners' sockets, so no worker's callbacks delay accepting. Its
     * loop is made by new; the thread by the first HANDOFF listener once
     * started (iol__runtime_want_acceptor). It takes part in the
     * final-accept barrier as one more thread. */
    iol_loop *acceptor_loop;
    pthread_t acceptor_thread;
    bool acceptor_wanted;  /* a HANDOFF listener exists */
    bool acceptor_started; /* its thread was created */
    bool acceptor_closed;  /* the thread closed its loop on exit */

    /* broadcast_ex calls whose done has not run (runtime.c), so that free
     * can end those a loop dropped. */
    pthread_mutex_t broadcasts_mu;
    struct iol__rt_broadcast *broadcasts; /* under broadcasts_mu */
};

/* The pseudo worker index of the acceptor in lsock->worker and in
 * iol__listeners_final_accept. */
#define IOL__ACCEPTOR(rt) ((rt)->n)

/* runtime.c: a HANDOFF listener exists; starts the acceptor thread if the
 * runtime runs and it has none. Caller holds rt->mu. -errno of
 * pthread_create. */
int iol__runtime_want_acceptor(struct iol_runtime *rt);
/* iol_runtime_post for the runtime's own posts: never refused for a full
 * queue (see iol__loop_post). */
int iol__runtime_post(struct iol_runtime *rt, unsigned index, iol_callback_fn fn, void *arg);
/* listener.c: adds listener id's overload figures (one worker's socket,
 * or all with IOL_RUNTIME_ALL) to *out. -ENOENT. Any thread. */
int iol__listener_overload(struct iol_runtime *rt, int id, unsigned worker, iol_listener_stats *out);
/* Connections listener id's sockets took through ring accepts (listener.c
 * RING ACCEPTS), for tests and benchmarks; -ENOENT unknown id. */
long long iol__listener_ring_accepts(struct iol_runtime *rt, int id);

/* listener.c: on worker `index` at shutdown, after it stopped taking new
 * work: accepts what the kernel queued on the listening sockets this
 * worker owns, hands it to on_accept (handoff: to the chosen worker's
 * queue), then closes those sockets. */
void iol__listeners_final_accept(struct iol_runtime *rt, unsigned index);
/* listener.c: closes what is left (runtime never started) and frees the
 * listeners. Before the loops are closed; workers joined. */
void iol__listeners_free(struct iol_runtime *rt);

/* unix_path.c: the sockaddr of a socket path. -EINVAL: empty.
 * -ENAMETOOLONG: longer than sun_path holds. */
int iol__unix_address(const char *path, struct sockaddr_un *sun, socklen_t *len);
/* unix_path.c: a non-blocking listening socket bound to path, replacing
 * a stale socket file (one nobody listens on). -EADDRINUSE: the path
 * exists (a live socket or another file). -EINVAL, -ENAMETOOLONG, socket
 * errors. */
int iol__unix_listen(const char *path, int backlog, int *out);

/* half_open.c: handshakes on port the kernel holds half-open (SYN_RECV),
 * in all of the host's sockets; -errno when the kernel cannot tell
 * (no sock_diag). */
int iol__half_open_count(uint16_t port);

/* loop/handler_fds.c: writes up to cap fds that have a handler on loop,
 * or are claimed by ring operations (a stream on io_uring), into fds and
 * returns how many there are. Owner thread, loop stopped. */
int iol__loop_handler_fds(iol_loop *loop, int *fds, int cap);

/* udp_shard.c: on worker `index` at shutdown: closes its sockets of every
 * udp shard (before the drain, which would otherwise wait for them). */
void iol__udp_shards_stop(struct iol_runtime *rt, unsigned index);
/* udp_shard.c: closes sockets no worker took and frees the shards.
 * Workers joined, loops closed. */
void iol__udp_shards_free(struct iol_runtime *rt);

/* runtime.c: the runtime the calling thread is a worker of, or NULL. */
struct iol_runtime *iol__runtime_of_thread(void);

#endif
