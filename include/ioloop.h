/*
 * ioloop — Tornado's IOLoop in C, one loop per thread.
 *
 * The one public header. Conventions (see also docs/):
 *  - Every call that can fail returns int: >= 0 success, -errno failure.
 *    Constructors are iol_x_new(&out, cfg); on failure *out is untouched.
 *  - Bad arguments never crash: -EINVAL (NULL fn, negative delay, unknown
 *    name, bad event bits), -EBADF (fd < 0 or not open), -EEXIST, -ENOENT,
 *    -ENOMEM.
 *  - Thread rules: calls marked "Any thread." are safe from any thread.
 *    Every other call on a loop or on an object bound to one (a stream or
 *    TLS stream, an fd or zmq handler, a timeout, a periodic, a signal
 *    handler, a hook) is marked "Loop thread.": it must be made by the
 *    thread running the loop, or by one thread while the loop is not
 *    running. While the loop runs, such a call from another thread returns
 *    -EPERM before it reads or changes anything: nothing is written,
 *    queued, closed or unregistered, and the object works on as before.
 *    Loop-thread calls that cannot say -EPERM (they return bool, size_t or
 *    nothing) give the fixed answer their comment names instead. The
 *    check holds while the object exists; an object its loop has freed (a
 *    closed stream after its close callback) must not be used at all.
 *  - Time is double seconds on the loop's clock (CLOCK_MONOTONIC unless a
 *    time_func is given).
 */
#ifndef IOLOOP_H
#define IOLOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What this header declares is the library's ABI: the library is built
 * with hidden visibility, and these declarations (only these) are
 * exported from libioloop.so. */
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

#define IOL_VERSION_MAJOR 0
#define IOL_VERSION_MINOR 2
#define IOL_VERSION_PATCH 0
#define IOL_VERSION_STRING "0.2.0"
#define IOL_VERSION_HEX ((IOL_VERSION_MAJOR << 16) | (IOL_VERSION_MINOR << 8) | IOL_VERSION_PATCH)

/* The version of the library the program runs with (which may be newer
 * than the header it was compiled with: compare with IOL_VERSION_HEX),
 * as IOL_VERSION_HEX and as IOL_VERSION_STRING would give it. Any thread.
 * Soname policy: libioloop.so.0 stays binary compatible within 0.x;
 * anything incompatible bumps the soname (README, "ABI"). */
unsigned iol_version(void);
const char *iol_version_string(void);

/* ---------------------------------------------------------- Status codes
 * Besides -errno values, the library returns (and hands to callbacks) a
 * few codes of its own, all below -4000 so that they never collide with
 * an errno (Linux's are below 4096 and in practice below 200). Each says
 * something no errno says precisely: */
#define IOL_EOF                (-4095) /* the peer closed the connection cleanly (TCP FIN, or
                                          TLS close_notify then FIN) before a read was
                                          satisfied; not an error of the connection */
#define IOL_ENONAME            (-4094) /* the host name does not exist or has no address
                                          (getaddrinfo's EAI_NONAME, EAI_NODATA, EAI_FAIL,
                                          EAI_ADDRFAMILY) */
/* TLS certificate verification: our side rejected the peer's certificate
 * for the reason named, or (IOL_ETLS_PEER_REJECTED) the peer rejected
 * ours. */
#define IOL_ETLS_VERIFY        (-4080) /* verification failed for another reason */
#define IOL_ETLS_HOSTNAME      (-4079) /* the certificate is not for the name asked for */
#define IOL_ETLS_UNTRUSTED     (-4078) /* the chain leads to no trusted CA */
#define IOL_ETLS_SELF_SIGNED   (-4077) /* a self-signed certificate that is not trusted */
#define IOL_ETLS_EXPIRED       (-4076) /* a certificate of the chain has expired */
#define IOL_ETLS_NOT_YET_VALID (-4075) /* a certificate of the chain is not valid yet */
#define IOL_ETLS_NO_PEER_CERT  (-4074) /* the peer sent no certificate, and one is required */
#define IOL_ETLS_PEER_REJECTED (-4073) /* the peer rejected our certificate (a TLS alert) */

/* A human message for any status the library returns: its own codes
 * above ("connection closed by peer", "host name not found",
 * "certificate verify failed: hostname mismatch", ...), "success" for 0
 * and other non-negative values, strerror's text for -errno, and
 * "unknown error" for anything else. Never NULL; the string is static
 * (do not free it). Any thread. */
const char *iol_strerror(int err);

/* Binary compatibility of the status codes. Before 0.2 a clean EOF
 * reached a read as -EPIPE, a name that does not resolve as
 * -EHOSTUNREACH and every certificate failure as -EKEYREJECTED. A program
 * built against an older header still gets exactly those: the codes a
 * loop uses are chosen when the loop is created, by the header its
 * creator was compiled with. This header binds the constructors below
 * (iol_loop_new, iol_loop_instance, iol_runtime_new) to new entry points
 * (iol_loop_new_v2 ...) whose loops, and a runtime's worker loops, use
 * the new codes on every stream; the old entry points, which a program
 * built against 0.1 calls, keep the old codes (the process instance has
 * the codes of whichever entry point created it). Define IOL_LEGACY_STATUS
 * before including this header to keep the 0.1 codes in a new build. */
#define IOL_STR_(x) #x
#if defined(IOL_LEGACY_STATUS)
#define IOL_STATUS_V2_(name)
#elif defined(__GNUC__) /* gcc, clang: an asm label binds the name */
#define IOL_STATUS_V2_(name) __asm__(IOL_STR_(name##_v2))
#else /* other compilers: the same binding by macro */
#define IOL_STATUS_V2_(name)
#define iol_loop_new iol_loop_new_v2
#define iol_loop_instance iol_loop_instance_v2
#define iol_runtime_new iol_runtime_new_v2
#endif

/* Config structs (iol_loop_config, iol_runtime_config,
 * iol_listen_config, iol_connect_options) have a fixed size across releases: their fields sit
 * in an anonymous struct overlaid on a fixed-size reserve, and a release
 * adds fields at the end, inside the reserve. So a program built against
 * an older header passes as many bytes as the library reads, and zero in
 * every field it did not know of, provided it zeroes the struct: a
 * designated initializer, {0} or memset. Zero is the default of every
 * field, present and future. Fields are set and read by name as usual.
 * Structs the library fills (iol_loop_stats, iol_runtime_stats) take the
 * caller's sizeof instead: the library writes the fields the caller's
 * header knows and zeroes the ones the library lacks. */

/* Events, level-triggered. IOL_ERROR is always reported, asked for or not. */
#define IOL_READ  0x001u
#define IOL_WRITE 0x004u
#define IOL_ERROR 0x018u

/* ------------------------------------------------------------------ Loop */

typedef struct iol_loop iol_loop;
typedef uint64_t iol_timeout; /* 0 is never a valid handle */
typedef void (*iol_callback_fn)(void *arg);
typedef void (*iol_handler_fn)(int fd, unsigned events, void *arg);

enum { IOL_CURRENT_IF_NONE = 0, IOL_CURRENT_ALWAYS, IOL_CURRENT_NEVER };

typedef struct iol_loop_config {
    __extension__ union {
        __extension__ struct { /* anonymous: C11; __extension__ quiets C++ -Wpedantic */
            /* "epoll", "poll", "select", "zmq" (with libzmq), "uring" (with
             * liburing); NULL: $IOL_POLLER, else best (epoll) */
            const char *poller;
            int make_current;              /* IOL_CURRENT_*; ALWAYS fails with -EEXIST if the thread has one */
            double (*time_func)(void *ud); /* NULL: CLOCK_MONOTONIC */
            void *time_ud;
            unsigned signal_reserve;       /* entries for add_callback_from_signal; 0: 256 */
            /* Spin before sleeping, after a batch of posted callbacks, in µs:
             * 0: adaptive (the loop measures what a sleep and a wakeup cost on this
             * host, and spins about that long only while recent posts came early
             * enough to save it, as in a flood or a ping-pong; at most 25 µs; an
             * idle loop never spins); < 0: never; > 0: always that
             * long (at most 1000). A spin trades the loop's CPU for latency: it
             * saves a sleep and a wakeup when the next post comes within it, and
             * is wasted on top of both when the post comes later. A spinning loop
             * with no I/O to handle that finds another thread's posts already
             * queued when its batch ends takes them 1 µs after that end, so a
             * producer streaming posts fills batches instead of fighting the loop
             * for cache lines; the loop's own posts are taken at once. */
            double spin_us;
            /* > 0: at most this many callbacks queued and not yet run;
             * past it iol_loop_add_callback from any thread but the one
             * running the loop returns -EAGAIN (a loop never refuses its own
             * work). Costs every post one shared atomic add, so 0 (no
             * bound) is the default. add_callback_from_signal has its own
             * bound (signal_reserve) and does not count. */
            size_t queue_limit;
        };
        unsigned char iol_reserved_[128]; /* fixes the size (see above) */
    };
} iol_loop_config;

/* Creates a loop (any thread may create one; it is bound to none until
 * it runs). cfg NULL: defaults (poller by $IOL_POLLER else epoll,
 * IF_NONE: becomes current if this thread has none). An explicit
 * cfg->poller wins over $IOL_POLLER.
 * -EINVAL: out NULL, unknown poller name or make_current value, spin_us
 * NaN or > 1000.
 * -EEXIST: IOL_CURRENT_ALWAYS and this thread already has a current loop.
 * -ENOMEM, or the -errno of epoll_create1/eventfd/timer_create.
 * "uring": the -errno of io_uring_setup when the kernel refuses it
 * (-EPERM: sysctl kernel.io_uring_disabled or a seccomp filter; -ENOSYS:
 * no io_uring; -ENOMEM: locked-memory limit); -ENOSYS also for a kernel
 * without IORING_FEAT_NODROP (< 5.5). A build without liburing knows no
 * "uring" (-EINVAL). */
int iol_loop_new(iol_loop **out, const iol_loop_config *cfg) IOL_STATUS_V2_(iol_loop_new);

/* Shuts the loop down. First every stream still on the loop is closed
 * and freed, on this thread before close returns: its fd is closed by the
 * stream itself, a pending read (or connect) fails with -ESHUTDOWN, and
 * its close callback runs (iol_stream_error() then says -ESHUTDOWN);
 * afterwards no stream pointer of this loop may be used. Datagram objects
 * (iol_udp) still on the loop are released the same way: fd closed, send
 * queue dropped, close callback run. Then it closes
 * the poller and, when all_fds, every fd that still has a handler; drops
 * pending callbacks (signal ones included) and active timeouts without
 * running them and returns how many it dropped (cancelled timeouts do
 * not count; what stream close callbacks added is dropped too). Every
 * add_future registration whose callback has not run is dropped as well
 * (counted when its future was done and the callback queued), running
 * its release function if add_future_ex gave one. Clears it
 * from current/instance and drops the creator's reference; memory goes
 * with the last reference. The waker's eventfd stays open until then, so
 * a producer holding a ref that keeps posting gets -ESHUTDOWN, never a
 * crash. Thread: the loop's owner, loop stopped.
 * -EINVAL: loop NULL. -EPERM: another thread runs the loop. -EBUSY: the
 * loop is running (on this thread). -ESHUTDOWN: closed already. */
int iol_loop_close(iol_loop *loop, bool all_fds);

/* Takes a reference; returns loop (NULL for NULL). Any thread. */
iol_loop *iol_loop_ref(iol_loop *loop);
/* Drops a reference; the last one frees the loop (NULL is ignored).
 * A loop freed without close is closed first (without all_fds). Any thread. */
void iol_loop_unref(iol_loop *loop);
/* Number of fds and zmq sockets with a handler on loop, streams whose
 * socket io_uring operations watch instead counted too (a load figure for
 * balancing, and what a runtime's drain waits out; may be stale by the
 * time it is read). Any thread. -EINVAL: NULL. */
int iol_loop_handler_count(const iol_loop *loop);
/* Name of the backend in use: "epoll", "poll", "select", "zmq" or "uring";
 * NULL for NULL. Any thread (fixed at creation). */
const char *iol_loop_poller(const iol_loop *loop);

/* This thread's current loop, or NULL. No reference is taken. Any thread
 * (each thread has its own current loop). */
iol_loop *iol_loop_current(void);
/* Makes loop this thread's current one (NULL clears). Any thread: it
 * changes only the calling thread's current. -ESHUTDOWN: closed. */
int iol_loop_make_current(iol_loop *loop);
void iol_loop_clear_current(void); /* Any thread (its own current). */
/* The process-wide loop, created on first call (NULL on allocation
 * failure). Any thread. */
iol_loop *iol_loop_instance(void) IOL_STATUS_V2_(iol_loop_instance);
bool iol_loop_initialized(void); /* Any thread. */
/* Installs loop as the process instance (takes a reference). Any thread.
 * -EINVAL: NULL. -EEXIST: an instance exists. -ESHUTDOWN: closed. */
int iol_loop_install(iol_loop *loop);
/* Forgets the instance (drops the instance's reference, does not close).
 * Any thread. */
void iol_loop_clear_instance(void);

/* Runs the loop until stop. Makes it current for this thread and restores
 * the previous current on return. Holds a reference for as long as it
 * runs, so other threads may drop theirs meanwhile (clear the instance,
 * stop then unref): the loop is then freed by this thread when the run
 * ends. Returns 0 after stop. Thread: any one thread at a time; the one
 * that starts it is the loop thread until start returns.
 * -EINVAL: NULL. -EBUSY: already running (also re-entrant).
 * -ESHUTDOWN: closed. */
int iol_loop_start(iol_loop *loop);
/* Lets the running iteration finish its batch of callbacks, then start
 * returns without polling again; callbacks added during that batch stay
 * queued for the next start. Before start: the next start returns at once
 * and queued callbacks stay queued (as Tornado). Any thread.
 * -EINVAL: NULL. -ESHUTDOWN: closed. */
int iol_loop_stop(iol_loop *loop);
/* Whether start is running. Any thread. false for NULL. Once it returns
 * false after a run, everything that run did is visible to the caller
 * (acquire), which may then drive the loop itself. */
bool iol_loop_running(const iol_loop *loop);

/* Embedding: driving the loop from another event loop (GLib, libuv, a
 * game loop) instead of start. The other loop watches iol_loop_backend_fd
 * for readability with the timeout iol_loop_backend_timeout gives, and
 * calls iol_loop_run_once(loop, 0) when the fd is readable or the timeout
 * ran out:
 *
 *     for (;;) {
 *         double t;
 *         iol_loop_backend_timeout(loop, &t);           // before each wait
 *         struct pollfd p = { iol_loop_backend_fd(loop), POLLIN, 0 };
 *         poll(&p, 1, t < 0 ? -1 : (int)(t * 1000 + 0.999));
 *         iol_loop_run_once(loop, 0);
 *     }
 *
 * Cross-thread posts, stop and signals wake the fd as they wake a loop
 * asleep in start (at most one eventfd write per wait). The pre-sleep spin
 * (spin_us) does not apply. */

/* Runs one iteration on the calling thread: queued callbacks, due
 * timeouts, prepare hooks, one poll that waits at most `timeout` seconds
 * (0: not at all; < 0: as long as start would wait), the handlers of its
 * events, check hooks. A stop request (made before or by a callback)
 * ends the iteration before the poll and is consumed. Afterwards the loop
 * counts as asleep for the waker, so posts make the backend fd readable.
 * Thread: any one thread at a time, the loop not running (it claims the
 * loop for the call, like start; callbacks see it running on this thread).
 * Returns 0. -EINVAL: NULL, timeout NaN. -EBUSY: running (start, or
 * run_once from inside one of its callbacks). -ESHUTDOWN: closed. The
 * -errno of the poll. */
int iol_loop_run_once(iol_loop *loop, double timeout);
/* An fd that polls readable when the loop has I/O, posts, a stop or a
 * signal to process (never read it yourself). Per poller: epoll: the epoll
 * fd itself. poll, select and zmq: -ENOTSUP, since their set of fds lives
 * in user space (an fd array, zmq_poll items), so no single fd stands for
 * it; watching only the waker's eventfd would miss every handler's fd and
 * leave the embedding program sleeping through I/O. Any thread; the fd is
 * valid until the loop is closed.
 * -EINVAL: NULL. -ESHUTDOWN: closed. -ENOTSUP: see above. */
int iol_loop_backend_fd(const iol_loop *loop);
/* *seconds: how long the embedding program may wait on the backend fd
 * before the next run_once: 0 when work is already queued (callbacks, a
 * stop, a ready zmq socket), the time to the next timeout, or -1 when only
 * an event can bring work. Also announces the wait to the loop's waker,
 * which is what makes a post made after this call wake the fd: call it
 * before every wait (run_once alone covers posts from other threads, not
 * a callback's own posts). Thread: the loop's (as run_once), not from
 * inside a callback. -EINVAL: NULL loop/seconds. -EBUSY: running here.
 * -EPERM: running on another thread. -ESHUTDOWN: closed. */
int iol_loop_backend_timeout(iol_loop *loop, double *seconds);

/* Watches fd for events (IOL_READ|IOL_WRITE; IOL_ERROR always implied).
 * fn(fd, events, arg) runs on the loop thread while the condition holds.
 * Loop thread.
 * -EINVAL: NULL loop/fn, events 0 or with unknown bits (IOL_ERROR alone is
 * valid and means "errors only", e.g. while a stream is paused).
 * -EBADF: fd < 0 or not open. -EEXIST: fd has a handler. -EPERM: another
 * thread runs the loop. -ESHUTDOWN. select backend: fd >= FD_SETSIZE is -EINVAL.
 * epoll backend: -EPERM for fds epoll cannot watch (regular files).
 * Backends differ where the OS does: select cannot tell errors apart (an
 * fd in error or hung up shows readable/writable, and an errors-only
 * registration sees nothing); on poll and select an fd closed without
 * being removed is reported as IOL_ERROR until its handler removes it.
 * uring backend: regular files are always ready (as on poll); an fd's
 * poll holds its file, so an fd closed while it has a handler stays open
 * for the kernel (a socket's peer sees no EOF) until the handler is
 * removed and the loop's next wait hands the cancel over, or the loop
 * closes. */
int iol_loop_add_handler(iol_loop *loop, int fd, unsigned events, iol_handler_fn fn, void *arg);
/* Changes the watched events. Loop thread. -EBADF: fd < 0. -ENOENT: not registered.
 * -EINVAL, -EPERM, -ESHUTDOWN as above. */
int iol_loop_update_handler(iol_loop *loop, int fd, unsigned events);
/* Stops watching fd (does not close it). Events of fd already polled in
 * this iteration are dropped. Loop thread. -EBADF: fd < 0. -ENOENT: not registered
 * (harmless). -EINVAL, -EPERM, -ESHUTDOWN. */
int iol_loop_remove_handler(iol_loop *loop, int fd);

/* Removes fd's handler, if it has one, and closes fd: the cheap end of a
 * connection. With epoll it costs the close alone, since closing a file
 * takes it out of the epoll set; that holds only when no other descriptor
 * refers to the same open file (dup, a child that inherited it without
 * CLOEXEC): otherwise use remove_handler, then close. With uring the
 * cancel of fd's poll rides on the loop's next wait (no system call of
 * its own); the file is released then. Events of fd already
 * polled in this iteration are dropped. Loop thread, as remove_handler.
 * -EINVAL: loop NULL. -EBADF: fd < 0 or not open. -EPERM, -ESHUTDOWN (fd
 * then stays open). */
int iol_loop_close_fd(iol_loop *loop, int fd);

/* ---------------------------------------------------------------- ZeroMQ
 * ZeroMQ sockets as handlers (pyzmq's ZMQIOLoop). `socket` is a libzmq
 * socket (void *, from zmq_socket). Declared in every build; a build
 * without libzmq returns -ENOTSUP from each call, before any other check
 * (and knows no poller "zmq").
 *
 * Two ways to poll: the poller "zmq" (iol_loop_config.poller or
 * IOL_POLLER=zmq) runs one zmq_poll over the sockets and the loop's fds;
 * every other poller watches each socket's ZMQ_FD and re-reads ZMQ_EVENTS
 * of every watched socket before each poll (one getsockopt per socket per
 * iteration), so sends and receives made anywhere on the loop thread never
 * leave a message unseen. Both are level-triggered, like fd handlers.
 *
 * Threads: libzmq sockets are not thread-safe. A socket belongs to the
 * thread of the loop it is added to (with a runtime, each worker creates
 * and uses its own sockets, e.g. in on_start, removes their handlers in
 * on_drain, since the drain lasts while handlers remain, and closes them
 * in on_stop); use it only from that loop's callbacks and handlers. Thread-safe draft sockets (no ZMQ_FD) work
 * only on the zmq poller.
 *
 * Context termination: when zmq_ctx_shutdown or zmq_ctx_term runs on
 * another thread while the loop runs, the loop ends the run as after
 * iol_loop_stop and iol_loop_start returns 0 (logged once per loop at
 * IOL_LOG_INFO). Then, on the loop's thread, in this order, so that
 * zmq_ctx_term does not hang: remove each socket's handler (or close the
 * loop, which removes them all), set ZMQ_LINGER 0 if unsent messages may be
 * pending, zmq_close each socket; zmq_ctx_term then returns. A loop
 * restarted with a socket of a terminated context still on it stops again
 * at once. Always remove a socket's handler before zmq_close (libzmq
 * closes ZMQ_FD with the socket). */
typedef void (*iol_zmq_handler_fn)(void *socket, unsigned events, void *arg);

/* Watches a zmq socket: fn(socket, events, arg) runs on the loop thread
 * while the condition holds, events holding IOL_READ (ZMQ_POLLIN: a message
 * can be received) and/or IOL_WRITE (ZMQ_POLLOUT: one can be sent). fn
 * should receive and send with ZMQ_DONTWAIT: like an fd event, readiness
 * may be stale if other code used the socket meanwhile. IOL_ERROR alone is
 * valid and pauses the socket (fn does not run; termination is still seen).
 * The socket counts in iol_loop_handler_count. Loop thread.
 * -EINVAL: NULL loop/socket/fn, events 0 or with unknown bits.
 * -EEXIST: socket already added. -ENOTSOCK: not an open zmq socket.
 * -ETERM: its context is terminated. -EPERM: another thread runs the loop.
 * -ESHUTDOWN: loop closed. -ENOMEM. -ENOTSUP: built without ZeroMQ.
 * Other pollers than zmq: -EINVAL for a thread-safe socket (no ZMQ_FD),
 * and the errors of iol_loop_add_handler for its ZMQ_FD. */
int iol_loop_add_zmq_handler(iol_loop *loop, void *socket, unsigned events, iol_zmq_handler_fn fn, void *arg);
/* Changes the watched events (same rules as add). Loop thread.
 * -EINVAL: NULL loop/socket, bad events. -ENOENT: socket not added.
 * -EPERM, -ESHUTDOWN, -ENOTSUP as above. */
int iol_loop_update_zmq_handler(iol_loop *loop, void *socket, unsigned events);
/* Stops watching the socket (does not close it; do that afterwards). Safe
 * inside any handler, its own included; events of the socket already
 * polled in this iteration are dropped. Loop thread.
 * -EINVAL: NULL loop/socket. -ENOENT: socket not added. -EPERM,
 * -ESHUTDOWN, -ENOTSUP as above. */
int iol_loop_remove_zmq_handler(iol_loop *loop, void *socket);

/* Queues fn(arg) to run on the loop's thread in the next iteration.
 * Lock-free; wakes a sleeping loop with at most one eventfd write per sleep
 * (or, posted from a callback or handler of a "uring" loop to another
 * "uring" loop, one io_uring message; if the posting loop has
 * spin_us < 0 it sends the message when its current iteration ends, so
 * the other loop wakes only after the posting callback returned: a
 * callback must not block waiting for the other loop's answer).
 * Callbacks from one producer run in order. Any thread. Queue nodes come
 * from a per-thread cache that keeps at most 32768 nodes (1 MiB) per
 * posting thread for reuse; beyond that (a burst, a flood) they come from
 * 64 KiB chunks released as soon as their callbacks ran, of which a
 * process-wide pool keeps at most 16 MiB for reuse.
 * -EINVAL: NULL loop/fn. -ESHUTDOWN: closed. -ENOMEM. -EAGAIN: the loop
 * has a queue_limit, that many callbacks wait, and the caller is not the
 * thread running the loop. */
int iol_loop_add_callback(iol_loop *loop, iol_callback_fn fn, void *arg);
/* Same as add_callback (Tornado's spawn_callback: not tied to a context).
 * Any thread. */
int iol_loop_spawn_callback(iol_loop *loop, iol_callback_fn fn, void *arg);
/* Async-signal-safe add_callback: no malloc, no lock; uses the loop's
 * preallocated reserve (iol_loop_config.signal_reserve, default 256); an
 * entry is free again once its callback ran. Any thread, signal handlers.
 * -EINVAL: NULL loop/fn. -EAGAIN: reserve empty. -ESHUTDOWN: closed. */
int iol_loop_add_callback_from_signal(iol_loop *loop, iol_callback_fn fn, void *arg);

/* Signal handlers on the loop thread (asyncio's add_signal_handler,
 * libuv's uv_signal_t): fn(signo, arg) runs on the loop's thread, as an
 * ordinary callback (no async-signal-safety needed), once per delivery
 * the kernel reports (like any signal, several deliveries before the loop
 * reads them may merge into one). Several handlers per signal run in the
 * order they were added. Underneath: a signalfd, read when the loop polls.
 *
 * Blocking: a signalfd sees only a blocked signal. add blocks signo in the
 * calling thread, and each start blocks the loop's signals in the thread
 * that runs it; every thread the runtime creates (workers, the acceptor)
 * starts with SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGCHLD
 * and SIGWINCH blocked. Block the signal in your own threads too (or
 * create them after add: they inherit the mask). A delivery that lands on
 * a thread that does not block it is not lost: while a loop handles the
 * signal, the process's disposition for it is a small handler that
 * forwards the signal to the loop's thread; it costs that thread an
 * interruption (EINTR for a blocking call without SA_RESTART semantics).
 *
 * One loop per signal: a signal is consumed by one reader, so a signal
 * that has handlers on one loop cannot be added on another (-EBUSY).
 * SIGALRM is the blocking watchdog's (iol_loop_set_blocking_*): do not use
 * both. When the last handler of a signal is removed (or its loop closes),
 * the previous disposition comes back, deliveries still pending are
 * discarded, and the signal is unblocked again in the calling thread if
 * add (or start) blocked it there.
 * Loop thread (the loop's owner, or any one thread while it is stopped).
 * -EINVAL: NULL loop/fn; signo not a signal, SIGKILL, SIGSTOP, or a fault
 * signal (SIGSEGV, SIGBUS, SIGFPE, SIGILL). -EBUSY: another loop handles
 * signo. -EPERM: another thread runs the loop. -ESHUTDOWN: closed.
 * -ENOMEM, or the -errno of signalfd. */
typedef void (*iol_signal_fn)(int signo, void *arg);
int iol_loop_add_signal(iol_loop *loop, int signo, iol_signal_fn fn, void *arg);
/* Removes the handler added with the same (signo, fn, arg) (the earliest
 * if added twice): the arguments are the handle, as the fd is for
 * remove_handler, so there is no object to keep. Safe inside a
 * signal handler, its own included (a removed handler does not run again).
 * Thread and errors as add; -ENOENT: no such handler. */
int iol_loop_remove_signal(iol_loop *loop, int signo, iol_signal_fn fn, void *arg);

/* Runs fn(arg) at loop time `when`. out (may be NULL) gets a handle for
 * remove_timeout. Equal deadlines run in the order they were added.
 * Loop thread (call_later and add_timeout too).
 * -EINVAL: NULL loop/fn, when NaN. -EPERM: another thread runs the loop.
 * -ESHUTDOWN. -ENOMEM. */
int iol_loop_call_at(iol_loop *loop, double when, iol_callback_fn fn, void *arg, iol_timeout *out);
/* Runs fn(arg) delay seconds from now. -EINVAL also for delay < 0 or NaN. */
int iol_loop_call_later(iol_loop *loop, double delay, iol_callback_fn fn, void *arg, iol_timeout *out);
/* Tornado's add_timeout with an absolute deadline: same as call_at. */
int iol_loop_add_timeout(iol_loop *loop, double deadline, iol_callback_fn fn, void *arg, iol_timeout *out);
/* Cancels a pending timeout; may be called from inside any callback.
 * Loop thread (from another, -EPERM and the timeout stays armed).
 * -ENOENT: fired, removed or unknown handle (never touches freed memory).
 * -EINVAL: NULL loop. -EPERM. -ESHUTDOWN. */
int iol_loop_remove_timeout(iol_loop *loop, iol_timeout t);
/* The loop's clock in seconds (time_func or CLOCK_MONOTONIC). Any thread.
 * NAN for NULL. */
double iol_loop_time(const iol_loop *loop);

/* Blocking watchdog. A loop iteration (the callbacks, timeouts and
 * handlers run between two polls) that runs longer than `seconds` of wall
 * time raises a per-thread POSIX timer signal (SIGALRM, SIGEV_THREAD_ID) on
 * the loop's own thread; `action(signo)` runs there in signal context, at
 * most once per iteration. action NULL: writes a warning with a backtrace
 * to stderr (async-signal-safe). The timer is armed when the iteration
 * starts its work and disarmed before polling, so a loop sleeping in poll
 * never triggers it. Thresholds take effect from the next iteration.
 * From the first threshold (signal or log) on, the library owns the
 * process's SIGALRM handler for the life of the process; a loop thread must
 * not block SIGALRM. A callback blocked in a syscall may see EINTR when the
 * timer fires. seconds <= 0 disables.
 * Loop thread. -EINVAL: NULL loop, NaN. -EPERM. -ESHUTDOWN.
 * -errno of timer_create. */
int iol_loop_set_blocking_signal_threshold(iol_loop *loop, double seconds, void (*action)(int signo));
/* Logs at IOL_LOG_WARNING, with a backtrace of where the loop thread was
 * stuck, when one callback, timeout or handler runs longer than `seconds`:
 * while it still runs (backtrace taken on the loop thread by the same timer
 * signal, written at once with the default log handler) and once it
 * returns (with the duration and the function's symbol).
 * seconds <= 0 disables. -EINVAL, -EPERM, -ESHUTDOWN as above. */
int iol_loop_set_blocking_log_threshold(iol_loop *loop, double seconds);

/* Prepare and check hooks (libuv's uv_prepare/uv_check): fn(arg) runs on
 * the loop thread in every iteration, a prepare hook right before the poll
 * (after the iteration's callbacks and timeouts), a check hook right after
 * the handlers of that poll's events ran; what a profiler or a batching
 * layer (flush what the iteration produced) hooks into. Hooks run in the
 * order they were added; one added while the hooks run waits for the next
 * iteration; one removed while they run does not run again. A prepare hook
 * that adds a callback (or stops the loop) makes that poll not sleep.
 * Without hooks an iteration pays one predictable branch per kind. The
 * same (fn, arg) may be added twice; remove takes away one (the earliest).
 * Loop thread (or any one while it is stopped). Hooks are dropped at close.
 * -EINVAL: NULL loop/fn. -EPERM: another thread runs the loop.
 * -ESHUTDOWN: closed. add: -ENOMEM. remove: -ENOENT: no such hook. */
int iol_loop_add_prepare(iol_loop *loop, iol_callback_fn fn, void *arg);
int iol_loop_remove_prepare(iol_loop *loop, iol_callback_fn fn, void *arg);
int iol_loop_add_check(iol_loop *loop, iol_callback_fn fn, void *arg);
int iol_loop_remove_check(iol_loop *loop, iol_callback_fn fn, void *arg);

/* ------------------------------------------------------------ Statistics
 * What a loop has done, for dashboards and load reports. Counters only
 * grow (take differences between two snapshots); the two maxima restart
 * at iol_loop_reset_stats. Counting costs the loop no locked instruction
 * and no clock read per callback: callbacks are counted per batch, times
 * come from two clock reads per iteration around the poll. */
typedef struct iol_loop_stats {
    uint64_t iterations;           /* polls made (start, run_once) */
    uint64_t callbacks_self;       /* callbacks run that the loop's own thread posted */
    uint64_t callbacks_remote;     /* ... that other threads posted (an own-thread flood
                                      past the node cache counts here too) */
    uint64_t callbacks_signal;     /* ... posted with add_callback_from_signal */
    uint64_t wakeups;              /* wakeups sent to the loop: eventfd writes, and
                                      io_uring messages from other uring loops */
    uint64_t timeouts;             /* timeouts fired */
    uint64_t handlers;             /* fds and zmq sockets with a handler now */
    uint64_t busy_ns;              /* time running work between polls */
    uint64_t wait_ns;              /* time inside the poller (asleep or not), in polls
                                      that have returned */
    uint64_t longest_callback_ns;  /* longest callback, timeout or handler since the
                                      reset; 0 unless iol_loop_set_call_timing is on */
    uint64_t longest_iteration_ns; /* longest work between two polls since the reset */
    uint64_t queue_depth;          /* callbacks in the last batch the loop took from its
                                      queue: an estimate of the cross-thread queue depth */
    uint64_t current_poll_ns;      /* how long the poll in progress has lasted; 0 when the
                                      loop is not polling. wait_ns + current_poll_ns is the
                                      waiting time up to now (read apart, the two may
                                      overlap by one poll for a moment) */
    uint64_t signals;              /* signal handler runs (iol_loop_add_signal) */
} iol_loop_stats;

/* Fills *out with a snapshot of loop's statistics; pass size = sizeof
 * *out (a caller built against an older, shorter struct gets the fields
 * it knows; a longer one gets zeros for fields this library lacks). Each
 * field is read atomically, the snapshot as a whole is not (fields may
 * come from neighbouring iterations). Any thread, the loop running or not.
 * -EINVAL: NULL loop/out, size 0. */
int iol_loop_get_stats(const iol_loop *loop, iol_loop_stats *out, size_t size);
/* Restarts longest_callback_ns and longest_iteration_ns from 0 (an update
 * racing with the reset may keep the figure of an iteration that was
 * ending). Any thread. -EINVAL: NULL. */
int iol_loop_reset_stats(iol_loop *loop);
/* Times every callback, timeout and handler for longest_callback_ns: two
 * clock reads (vDSO, tens of ns each) per call, so off by default. From
 * the next batch on. Loop thread (or any while it is stopped).
 * -EINVAL: NULL. -EPERM: another thread runs the loop. -ESHUTDOWN. */
int iol_loop_set_call_timing(iol_loop *loop, bool on);

/* --------------------------------------------------------------- Logging */

enum { IOL_LOG_DEBUG, IOL_LOG_INFO, IOL_LOG_WARNING, IOL_LOG_ERROR };
/* Routes the library's messages to fn (any thread may call fn; it must be
 * thread-safe). NULL restores the default: WARNING and above to stderr.
 * Set it before starting loops; not synchronized with running loggers. */
void iol_set_log_handler(void (*fn)(int level, const char *msg, void *ud), void *ud);

/* ------------------------------------------------------ PeriodicCallback */

typedef struct iol_periodic iol_periodic;
/* A callback run every period_ms on loop (Tornado's PeriodicCallback).
 * Any thread: the periodic does nothing until started; every other call
 * on it is the loop's.
 * -EINVAL: NULL out/loop/fn, period_ms <= 0 or not finite. -ENOMEM. */
int iol_periodic_new(iol_periodic **out, iol_loop *loop, double period_ms, iol_callback_fn fn, void *arg);
/* Randomizes each period by +-jitter/2 of it. Loop thread. -EINVAL:
 * NULL, jitter outside [0, 1]. -EPERM: another thread runs the loop. */
int iol_periodic_set_jitter(iol_periodic *pc, double jitter);
/* First run one period after now. Loop thread. -EINVAL: NULL.
 * -EPERM: another thread runs the loop. -EALREADY: running. Errors of
 * call_at (-ESHUTDOWN, -ENOMEM). */
int iol_periodic_start(iol_periodic *pc);
/* Stops future runs; safe inside its own callback. Loop thread.
 * -EINVAL: NULL. -EPERM: another thread while the loop runs (whether a
 * run is pending or the callback is running right then). */
int iol_periodic_stop(iol_periodic *pc);
/* Whether started and not stopped. Loop thread: false from another
 * thread while the loop runs (and for NULL). */
bool iol_periodic_is_running(const iol_periodic *pc);
/* Stops it, then frees it (NULL ignored). Inside its own callback the
 * free is deferred until the callback returns. Loop thread: from another
 * thread while the loop runs (its callback running or not) it logs an
 * error and frees nothing. */
void iol_periodic_free(iol_periodic *pc);
/* Tornado 5.1 schedule: p = period_s * (1 + jitter * (random01 - 0.5));
 * deadline <= now: deadline + (floor((now - deadline) / p) + 1) * p,
 * else (clock went backwards) deadline + p. Pure function. */
double iol_periodic_next_deadline(double deadline, double now, double period_s, double jitter, double random01);

/* --------------------------------------------------------------- Futures */

typedef struct iol_future iol_future;
/* A thread-safe, refcounted future (one reference for the caller). Any
 * thread. */
int iol_future_new(iol_future **out);
iol_future *iol_future_ref(iol_future *f);   /* any thread; NULL for NULL */
void iol_future_unref(iol_future *f);        /* any thread; NULL ignored */
/* Resolves with a result. Any thread. -EINVAL: NULL. -EALREADY: done. */
int iol_future_set_result(iol_future *f, void *result);
/* Resolves with an error. Any thread. -EINVAL: NULL or err >= 0.
 * -EALREADY: done. */
int iol_future_set_error(iol_future *f, int err);
bool iol_future_done(const iol_future *f);   /* any thread */
/* 0 with *result (result may be NULL), the error, or -EAGAIN if pending.
 * -EINVAL: f NULL. Any thread. */
int iol_future_result(const iol_future *f, void **result);
/* Runs fn(f, arg) on the loop's thread once f is done, in a later
 * iteration even if it is done already. Holds a ref on f until then.
 * If the loop is closed first, fn never runs and the registration is
 * dropped (see add_future_ex for an argument that must be freed then).
 * Any thread. -EINVAL: NULL loop/f/fn. -ESHUTDOWN. -ENOMEM. */
int iol_loop_add_future(iol_loop *loop, iol_future *f, void (*fn)(iol_future *f, void *arg), void *arg);

/* Cancelling and releasing (libuv's uv_cancel and after_work with
 * UV_ECANCELED; asyncio's Future.cancel). */
/* Resolves f with -ECANCELED if it is still pending: its add_future
 * callbacks then run (on their loops) and see -ECANCELED from
 * iol_future_result. A run_in_executor job whose future is cancelled
 * before a pool thread took it never runs (fn is not called). A job that
 * is already running is not interrupted and cannot be cancelled: -EBUSY,
 * and its future resolves with fn's outcome as usual. Any thread.
 * -EINVAL: NULL. -EALREADY: done already. -EBUSY: its job runs. */
int iol_future_cancel(iol_future *f);
/* As add_future, and if fn can no longer run because the loop is closed
 * first (f still pending at the close, or its callback queued and not yet
 * run), release(arg) runs instead, exactly once: so exactly one of fn and
 * release runs for a call that returned 0 (when f resolves, or when the
 * loop closes, whichever lets fn run or not first; the owner of f should
 * still resolve or cancel it). release runs on the thread that closes the
 * loop, or, when f resolves while the close is under way, on the thread
 * resolving f or dropping the loop's last reference: it must not assume
 * the loop's thread. release NULL: as add_future. On an error return
 * neither runs: arg stays the caller's. Any thread. Errors as add_future. */
int iol_loop_add_future_ex(iol_loop *loop, iol_future *f, void (*fn)(iol_future *f, void *arg), void *arg,
                           void (*release)(void *arg));

typedef struct iol_executor iol_executor;
/* A pool of up to `threads` threads (0: number of online CPUs), started
 * on demand: run_in_executor starts one when no started thread is free to
 * take the item, so a pool that is never used costs no thread (every
 * loop's default pool included). Any thread.
 * -EINVAL: out NULL or threads > 1024. -ENOMEM. */
int iol_executor_new(iol_executor **out, unsigned threads);
/* Stops taking jobs (run_in_executor: -ESHUTDOWN), runs every job still
 * queued except those whose future was cancelled (iol_future_cancel:
 * skipped), waits for the running ones and the threads, frees (NULL
 * ignored). So it waits for every queued job that was not cancelled: use
 * free_cancel to wait only for running ones. Not from one of its own
 * threads (from there it cannot wait: it returns at once and the last
 * thread out frees the pool). */
void iol_executor_free(iol_executor *ex);
/* As free, but every job still queued is cancelled first: its future
 * resolves with -ECANCELED (on this thread, before the wait), fn never
 * runs. Waits only for jobs already running, which are not interrupted. */
void iol_executor_free_cancel(iol_executor *ex);
/* Uses ex (not owned; free it after closing the loop) for
 * run_in_executor(NULL). Loop thread. -EINVAL: NULL loop or ex. -EPERM:
 * another thread runs the loop. -ESHUTDOWN. */
int iol_loop_set_default_executor(iol_loop *loop, iol_executor *ex);
/* Runs fn(arg, &result) on ex (NULL: the loop's default, created on first
 * use and owned by the loop, and freed with the loop's last reference as
 * by iol_executor_free). *out gets a future (caller's reference) that
 * resolves with result, or with fn's return if negative. Loop thread
 * (from another, -EPERM and nothing is queued).
 * -EINVAL: NULL loop/fn/out. -EPERM. -ESHUTDOWN (loop closed, or ex being
 * freed). -ENOMEM. -EAGAIN: the pool has no thread yet and none could be
 * started (pthread_create). */
int iol_loop_run_in_executor(iol_loop *loop, iol_executor *ex, int (*fn)(void *arg, void **result), void *arg,
                             iol_future **out);
/* Makes loop current, runs fn(loop, done, arg) as a callback, runs the loop
 * until `done` resolves (fn resolves it, now or later), stops the loop.
 * Returns 0 with *result (result may be NULL), the future's error, fn's own
 * return if < 0, or -ETIMEDOUT after timeout seconds (<= 0: no limit) or
 * when something else stopped the loop before `done` resolved (Tornado).
 * The loop stays usable. -EINVAL: NULL loop/fn. -EBUSY: running, on any
 * thread (checked before anything is put on the loop, so a start racing
 * on another thread leaves nothing of this call behind). -ESHUTDOWN.
 * -ENOMEM. */
int iol_loop_run_sync(iol_loop *loop, int (*fn)(iol_loop *loop, iol_future *done, void *arg), void *arg,
                      double timeout, void **result);

/* --------------------------------------------------------------- Runtime */

typedef struct iol_runtime iol_runtime;
typedef struct iol_runtime_config {
    __extension__ union {
        __extension__ struct { /* anonymous: C11; __extension__ quiets C++ -Wpedantic */
            unsigned workers;              /* 0: number of online CPUs */
            bool pin_threads;              /* pin worker i to CPU i % ncpu */
            const char *poller;            /* as iol_loop_config.poller */
            double blocking_log_threshold; /* seconds; 0: off */
            void (*on_start)(iol_loop *loop, unsigned index, void *arg); /* on the worker */
            void (*on_stop)(iol_loop *loop, unsigned index, void *arg);  /* on the worker */
            void *arg;
            /* Second release (zero: the first release's behaviour, plus the drain).
             * drain_timeout: seconds the workers keep serving the application's
             * registered fds after stop; 0: 10 s; negative: no drain. */
            double drain_timeout;
            /* on_drain(loop, index, arg): on each worker (its own thread, loop
             * current), once stop was called, the final accepts were handed to
             * on_accept and every accepted post ran: close idle connections now,
             * finish the ones with a request in flight and close them. The drain
             * lasts while any fd of the application is registered on the loop:
             * remove handlers of fds that are not connections (pipes, eventfds)
             * here too. Not called when drain_timeout < 0. May be NULL
             * (iol_runtime_stopping answers the same question). */
            void (*on_drain)(iol_loop *loop, unsigned index, void *arg);
            double spin_us;                /* as iol_loop_config.spin_us, for every worker */
            size_t queue_limit;            /* as iol_loop_config.queue_limit, for every worker
                                              (the application's posts; the runtime's own,
                                              handoffs of connections included, are never
                                              refused) */
        };
        unsigned char iol_reserved_[256]; /* fixes the size (see above) */
    };
} iol_runtime_config;

/* Runtime calls are not bound to a loop: each is any-thread unless its
 * comment says otherwise (join and free: not from a worker). */

/* N workers, one loop each (created here, started by start). Any thread.
 * -EINVAL: out NULL, unknown poller, workers > 4096, a NaN threshold or
 * drain_timeout, spin_us NaN or > 1000. -ENOMEM. */
int iol_runtime_new(iol_runtime **out, const iol_runtime_config *cfg) IOL_STATUS_V2_(iol_runtime_new);
/* Starts the worker threads; returns once every loop runs (after every
 * on_start). -EINVAL: NULL. -EALREADY: started. -ESHUTDOWN: stopped. */
int iol_runtime_start(iol_runtime *rt);
/* Stops taking work: posts after this get -ESHUTDOWN; every callback
 * posted before runs exactly once; listeners accept what the kernel has
 * queued, hand it to on_accept, then close. Then the drain: each worker
 * calls on_drain and keeps running its loop while the application has fds
 * registered on it, for at most drain_timeout. Sockets still registered
 * then (streams too, whether a handler or the loop's io_uring operations
 * watch them) are shut down for writing (FIN; a TLS stream sends
 * close_notify first, so its peer sees a clean end) and their input is
 * discarded until
 * the peer closes, for at most 200 ms in all, so that closing them sends
 * no reset. Then on_stop, which may close them (or leave them: the
 * worker's loop is closed with all fds, after discarding input again).
 * Without a drain (drain_timeout < 0) on_stop follows the final accepts.
 * Does not wait (see join). Idempotent. Any thread, workers too.
 * -EINVAL: NULL. */
int iol_runtime_stop(iol_runtime *rt);
/* Whether stop was called: from then on, a worker's application should
 * finish its connections (see on_drain). Any thread. false for NULL. */
bool iol_runtime_stopping(const iol_runtime *rt);
/* Waits for the workers to finish after stop. -EINVAL: NULL.
 * -EDEADLK: called from a worker. */
int iol_runtime_join(iol_runtime *rt);
/* Stops, joins, frees (NULL ignored). Not from a worker. Each worker loop
 * is closed with all_fds on its worker thread, so streams still on it are
 * released as by iol_loop_close (close callbacks run on that worker) and
 * raw fds still registered on it are closed too (gently, see stop).
 * Posts accepted before a start that never happened are dropped. */
void iol_runtime_free(iol_runtime *rt);
unsigned iol_runtime_size(const iol_runtime *rt);          /* 0 for NULL. Any thread. */
/* Worker index's loop (NULL out of range). Any thread; the loop's own
 * calls are the loop thread's (post to it to use them). */
iol_loop *iol_runtime_loop(iol_runtime *rt, unsigned index);
/* Runs fn(arg) on worker index. Any thread. -EINVAL: NULL rt/fn, index
 * >= size. -ESHUTDOWN: stopped. -ENOMEM. -EAGAIN: queue_limit callbacks
 * wait on that worker (and the caller is not that worker). */
int iol_runtime_post(iol_runtime *rt, unsigned index, iol_callback_fn fn, void *arg);
/* Runs fn(arg) once on every worker. Any thread. Errors as post, but
 * never -EAGAIN: a broadcast is not refused for a full queue. */
int iol_runtime_broadcast(iol_runtime *rt, iol_callback_fn fn, void *arg);
/* Broadcast with completion: runs fn(arg) once on every worker, then
 * done(done_arg) exactly once, on the worker that ran fn last, right after
 * its fn (every worker's fn happens-before done): the place to free what
 * arg points to. Broadcasts accepted before a stop run on every worker
 * during the stop, as posts do, so done runs before join returns; those
 * of a runtime freed without ever being started (its loops never ran)
 * get done in iol_runtime_free, on the freeing thread, fn having run on
 * no worker (or on fewer than all). done NULL: nothing runs after. Any
 * thread. -EINVAL: NULL rt/fn. -ESHUTDOWN: stopped (neither fn nor done
 * runs; arg stays the caller's). -ENOMEM: queued on no worker (neither
 * runs), or (reported the same) on some workers only: fn runs on those
 * and done still runs once after them. Never -EAGAIN. Per sender, order
 * is kept: two broadcasts from one thread run in that order on every
 * worker. */
int iol_runtime_broadcast_ex(iol_runtime *rt, iol_callback_fn fn, void *arg, iol_callback_fn done, void *done_arg);
/* This thread's worker index, -1 outside workers. Any thread. */
int iol_runtime_worker_index(void);

enum { IOL_SHARD_REUSEPORT = 0, IOL_SHARD_HANDOFF = 1 };
typedef void (*iol_accept_fn)(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg);
typedef struct iol_listen_config {
    __extension__ union {
        __extension__ struct { /* anonymous: C11; __extension__ quiets C++ -Wpedantic */
            const char *host;         /* NULL: all addresses */
            uint16_t port;            /* 0: one ephemeral port shared by all workers */
            int backlog;              /* 0: SOMAXCONN */
            int shard;                /* IOL_SHARD_REUSEPORT or IOL_SHARD_HANDOFF */
            iol_accept_fn on_accept;  /* on the worker that owns the connection; owns fd */
            void *arg;
            /* Second release. REUSEPORT only: join the SO_REUSEPORT group that
             * another process (same user) listens on at port, instead of failing
             * with -EADDRINUSE; the kernel spreads connections over both. */
            bool reuseport_join;
            /* TCP_NODELAY on every accepted connection, set once on the listening
             * sockets (Linux copies it to each accepted socket): no setsockopt per
             * connection. */
            bool nodelay;
            /* > 0: TCP_DEFER_ACCEPT with this many seconds (tcp(7)): a connection
             * reaches on_accept once its first data has arrived (or the period
             * ran out), so on_accept can read at once instead of registering and
             * waiting; nginx's "listen ... deferred". 0: off. */
            int defer_accept;
            /* Overload control. max_connections > 0: a worker holds at most
             * this many connections of the application (fds with handlers on
             * its loop, less the runtime's own, plus handoffs on their way:
             * what HANDOFF balances on; a connection held without a handler
             * is not counted). At the cap the worker (REUSEPORT) or, once
             * every worker is at it, the acceptor (HANDOFF) stops accepting;
             * new connections wait in the kernel's backlog, and past it the
             * clients' SYNs are dropped and retried. Accepting resumes at or
             * under connections_low (0: max_connections less an eighth).
             * Looked at every 10 ms while held. */
            unsigned max_connections;
            unsigned connections_low;
            /* > 0: at most this many accepts per second for the listener (a
             * token bucket holding a tenth of a second's worth, at least 1;
             * REUSEPORT: each worker's socket its share). 0: no bound. The
             * final accepts at stop are exempt from both, so that stop's
             * promise (nothing queued is reset) holds. */
            double max_accept_rate;
            /* A Unix domain socket path to listen on instead of host:port: HANDOFF
             * only (the kernel has no REUSEPORT spreading for Unix sockets), host
             * NULL, port 0, no reuseport_join/nodelay/defer_accept. A socket file
             * left there by a listener that is gone is replaced: listen finds
             * that out with a connect that is refused (a live listener there sees
             * one connection, closed at once, and listen fails). The file is
             * removed when the listener closes at stop (or at free if never
             * started), unless another file took its place meanwhile.
             * on_accept's peer is a sockaddr_un (usually unnamed). */
            const char *path;
        };
        unsigned char iol_reserved_[256]; /* fixes the size (see above) */
    };
} iol_listen_config;

/* Listens on host:port (or path), before or after start. Returns a
 * listener id >= 0. Any thread (the sockets are opened here, the workers
 * take them in posted callbacks).
 * -EINVAL: NULL rt/cfg/on_accept, unknown shard, bad host, reuseport_join
 * with HANDOFF or port 0, defer_accept < 0, max_accept_rate < 0 or NaN,
 * connections_low set and not below max_connections; path with REUSEPORT
 * (it does not apply to Unix sockets), with host, port or a TCP option;
 * empty path.
 * -ENAMETOOLONG: path longer than a sockaddr_un holds (107 bytes).
 * -EADDRINUSE with a path: a live socket or another file is there.
 * -EADDRINUSE: port taken (without reuseport_join; with it: taken by a
 * socket that is not in a REUSEPORT group of this user).
 * -ESHUTDOWN: stopped. -ENOMEM, socket errors. */
int iol_runtime_listen(iol_runtime *rt, const iol_listen_config *cfg);
/* The bound port of listener id (0 for a path). Any thread. -EINVAL: NULL.
 * -ENOENT: unknown id. */
int iol_runtime_listener_port(iol_runtime *rt, int id);
/* counts[i] = on_accept calls made on worker i (for i < n); returns the
 * number of workers. -EINVAL: NULL rt, counts NULL with n > 0.
 * -ENOENT: unknown id. Any thread. */
int iol_runtime_listener_counts(iol_runtime *rt, int id, uint64_t *counts, unsigned n);

/* Datagrams sharded across workers: one SO_REUSEPORT udp socket per
 * worker on the same address, so every worker receives its share with no
 * hand-over (see "Datagrams" below for the udp object itself).
 *
 * How the kernel spreads datagrams (IOL_UDP_SHARD_KERNEL): by a hash of
 * each datagram's 4-tuple (source address and port, destination address
 * and port) over the sockets of the group, so one peer's datagrams go to
 * one worker as long as the group stays the same; a socket that joins or
 * leaves the group (another process joining the port, a restart)
 * reshuffles peers. IOL_UDP_SHARD_PEER keeps a peer on one worker whatever
 * the kernel does, without BPF: each worker hashes the sender's address
 * (FNV-1a of address and port) to its owning worker and passes datagrams
 * that arrived elsewhere on (one copy and one iol_runtime_post each), so
 * per-peer state (a QUIC connection, a game session) lives on one worker
 * without locks. It costs the copy for the share of datagrams that
 * landed on another worker (about (N-1)/N of them).
 *
 * The sockets are bound in the calling thread (so every one is in the
 * group before the first datagram), then each worker wraps its own at
 * once, or at start if the runtime has not started. on_recv(u, dgrams,
 * n, status, arg) runs on the owning worker with that worker's socket u,
 * which it may send with (every socket of the group sends from the same
 * address). Forwarded datagrams come one per call; their peer and data
 * are valid until the call returns, as always.
 * At stop, each worker closes its socket before its drain (datagrams still
 * in the kernel's buffer are dropped with it; UDP has no goodbye); a
 * forwarded datagram that reaches a worker whose socket is closed is
 * dropped and counted (iol_runtime_udp_counts). */
enum { IOL_UDP_SHARD_KERNEL = 0, IOL_UDP_SHARD_PEER = 1 };
struct iol_udp;          /* defined under "Datagrams" */
struct iol_udp_config;
struct iol_udp_datagram;
typedef struct iol_udp_shard_config {
    __extension__ union {
        __extension__ struct { /* anonymous: C11; __extension__ quiets C++ -Wpedantic */
            /* host, port, flags, batch... of every worker's socket (NULL:
             * defaults); IOL_UDP_REUSEPORT is implied; no path. Read during
             * the call only. */
            const struct iol_udp_config *udp;
            int mode;                  /* IOL_UDP_SHARD_* */
            void (*on_recv)(struct iol_udp *u, const struct iol_udp_datagram *dgrams, unsigned n, int status,
                            void *arg);
            void *arg;
        };
        unsigned char iol_reserved_[128]; /* fixes the size (see above) */
    };
} iol_udp_shard_config;
/* Binds one socket per worker and starts receiving on each; returns a
 * shard id >= 0. Any thread, before or after start (the sockets are
 * bound here, the workers wrap them in posted callbacks).
 * -EINVAL: NULL rt/cfg/on_recv, unknown mode, cfg->udp with a path or
 * bad fields (as iol_udp_new). -EADDRINUSE: the port is taken outside a
 * REUSEPORT group of this user. -ESHUTDOWN: stopped. -ENOMEM, socket
 * errors. A stop that comes while the call hands the sockets to the
 * workers (or a post refused for memory) leaves the workers not reached
 * without a socket: theirs are closed at once (logged), so the kernel
 * spreads the peers over the sockets that are read, and the id is
 * returned. */
int iol_runtime_udp_bind(iol_runtime *rt, const iol_udp_shard_config *cfg);
/* The bound port of shard id. Any thread. -EINVAL: NULL. -ENOENT: unknown id. */
int iol_runtime_udp_port(iol_runtime *rt, int id);
/* counts[i] = datagrams on_recv got on worker i (for i < n), forwarded
 * ones included; returns the number of workers. dropped (may be NULL):
 * forwarded datagrams that found their worker's socket closed. Any
 * thread. -EINVAL: NULL rt, counts NULL with n > 0. -ENOENT: unknown id. */
int iol_runtime_udp_counts(iol_runtime *rt, int id, uint64_t *counts, unsigned n, uint64_t *dropped);
/* Worker index's socket of shard id, NULL until that worker wrapped it or
 * after it closed. Call it on that worker (its loop thread) only, as for
 * any use of the socket: from another thread while that worker runs,
 * NULL. NULL for bad arguments. */
struct iol_udp *iol_runtime_udp_socket(iol_runtime *rt, int id, unsigned worker);

/* Statistics of one worker, or of all of them (index IOL_RUNTIME_ALL). */
#define IOL_RUNTIME_ALL (~0u)

/* A listener's figures (grows at the end; size as iol_loop_get_stats). */
typedef struct iol_listener_stats {
    uint64_t accepted;          /* on_accept calls, every worker together */
    uint64_t holds_connections; /* times accepting stopped at max_connections */
    uint64_t holds_rate;        /* times it waited for max_accept_rate */
    unsigned held;              /* its sockets held by either right now */
} iol_listener_stats;
/* Fills *out with listener id's figures. Any thread. -EINVAL: NULL
 * rt/out, size 0. -ENOENT: unknown id. */
int iol_runtime_listener_stats(iol_runtime *rt, int id, iol_listener_stats *out, size_t size);

typedef struct iol_runtime_stats {
    uint64_t accepted;   /* on_accept calls on the worker, every listener together */
    /* Overload control (iol_listen_config.max_connections,
     * max_accept_rate), every listener together: holds and sockets held
     * now. A worker counts its REUSEPORT sockets; the HANDOFF acceptor's
     * count in IOL_RUNTIME_ALL only. */
    uint64_t holds_connections;
    uint64_t holds_rate;
    unsigned held;
    unsigned workers;    /* iol_runtime_size */
    unsigned listeners;  /* listener ids are 0..listeners-1: per listener and per
                            worker, iol_runtime_listener_counts */
    /* The worker's loop statistics (iol_loop_get_stats), except handlers:
     * the application's fds only, without the runtime's listening sockets.
     * For IOL_RUNTIME_ALL: sums over the workers (current_poll_ns too),
     * the maxima for the two longest_* fields. The acceptor thread of HANDOFF listeners is not a
     * worker and is not counted. Last, so that it may grow. */
    iol_loop_stats loop;
} iol_runtime_stats;
/* Fills *out (size = sizeof *out, as iol_loop_get_stats) with worker
 * index's statistics, or their aggregate for IOL_RUNTIME_ALL. Any thread,
 * from new until free. -EINVAL: NULL rt/out, size 0, index >= size and not
 * IOL_RUNTIME_ALL. */
int iol_runtime_get_stats(iol_runtime *rt, unsigned index, iol_runtime_stats *out, size_t size);

/* --------------------------------------------------------------- Streams */

typedef struct iol_stream iol_stream;
typedef void (*iol_read_fn)(iol_stream *s, const char *data, size_t len, int status, void *arg);
typedef void (*iol_connect_fn)(iol_stream *s, int status, void *arg);
typedef void (*iol_close_fn)(iol_stream *s, void *arg);
typedef void (*iol_watermark_fn)(iol_stream *s, bool above, void *arg);

/* Wraps a connected non-blocking socket (made non-blocking if it is not)
 * on loop; the stream owns fd. max_buffer_size bounds the read buffer
 * (0: 100 MiB). Loop thread. -EINVAL: NULL out/loop. -EBADF: bad fd.
 * -EEXIST: fd has a handler (or a stream). -ESHUTDOWN: loop closed. -EPERM: another
 * thread runs the loop. -ENOMEM. */
int iol_stream_new(iol_stream **out, iol_loop *loop, int fd, size_t max_buffer_size);
/* Non-blocking connect to host:port: iol_stream_connect_ex with only
 * max_buffer_size set (no deadline, no source address). Loop thread
 * (-EPERM as iol_stream_connect_ex). */
int iol_stream_connect(iol_stream **out, iol_loop *loop, const char *host, uint16_t port, size_t max_buffer_size,
                       iol_connect_fn cb, void *arg);

typedef struct iol_connect_options {
    __extension__ union {
        __extension__ struct { /* anonymous: C11; __extension__ quiets C++ -Wpedantic */
            size_t max_buffer_size; /* the stream's read limit; 0: 100 MiB */
            /* Seconds for the whole connect, name lookup and every address
             * together; past it cb gets -ETIMEDOUT. <= 0: no deadline. */
            double timeout;
            const char *source;   /* numeric local address to bind first; NULL: the kernel picks */
            uint16_t source_port; /* with source; 0: any */
        };
        unsigned char iol_reserved_[128]; /* fixes the size (see "Config structs") */
    };
} iol_connect_options;

/* Non-blocking connect to host:port. A numeric host (IPv4/IPv6 literal)
 * is used as is; a name is looked up with getaddrinfo on the loop's
 * default executor (iol_loop_run_in_executor: the loop thread never
 * blocks on DNS), and every address found is tried in turn until one
 * connects. cb(s, status, arg) runs on the loop thread, never inside this
 * call, once connected (0) or failed; on failure the stream is closed
 * after cb. Failures reach cb as: -ETIMEDOUT (deadline), IOL_ENONAME
 * (the name does not exist or has no address: EAI_NONAME, EAI_NODATA,
 * EAI_FAIL, EAI_ADDRFAMILY; -EHOSTUNREACH for a 0.1 program, see "Binary
 * compatibility of the status codes"), -EAGAIN (EAI_AGAIN: temporary DNS failure),
 * -ENOMEM (EAI_MEMORY), the last address's connect error (-ECONNREFUSED,
 * -ENETUNREACH...), -EAFNOSUPPORT (no address of the source's family),
 * -EADDRINUSE / -EADDRNOTAVAIL (source bind), -ESHUTDOWN (loop closed
 * first). opts may be NULL (all defaults). Loop thread.
 * Errors of the call itself (nothing reaches cb then): -EINVAL: NULL
 * out/loop/host/cb, empty host, NaN timeout, source not a numeric
 * address, source_port without source. -ESHUTDOWN: loop closed. -EPERM:
 * another thread runs the loop. -ENOMEM. */
int iol_stream_connect_ex(iol_stream **out, iol_loop *loop, const char *host, uint16_t port,
                          const iol_connect_options *opts, iol_connect_fn cb, void *arg);
/* Connects to the Unix domain socket at path, as iol_stream_connect_ex
 * (opts may be NULL; timeout and max_buffer_size apply, source does not).
 * A Unix connect completes or fails at once; cb still runs later, on the
 * loop: -ENOENT (no such file), -ECONNREFUSED (nobody listens), -EAGAIN
 * (the listener's backlog is full), -EACCES. Loop thread. -EINVAL: NULL
 * out/loop/path/cb, empty path, NaN timeout, source set.
 * -ENAMETOOLONG: path longer than a sockaddr_un holds (107 bytes).
 * -ESHUTDOWN, -EPERM, -ENOMEM as iol_stream_connect_ex. */
int iol_stream_connect_unix(iol_stream **out, iol_loop *loop, const char *path, const iol_connect_options *opts,
                            iol_connect_fn cb, void *arg);
/* Thread rule of every stream call below: Loop thread (the thread running
 * the stream's loop, or any one thread while it is not running). From
 * another thread while the loop runs a call returns -EPERM before it
 * reads or changes anything of the stream: no byte is queued, no callback
 * stored, the stream is not paused, closed or unregistered, and it goes
 * on working on its loop. The getters that cannot say -EPERM answer as
 * their comment says. Only iol_stream_loop is any-thread. */

/* Reads until delim (data includes it). -ENOBUFS (and close) when the
 * buffer would exceed max_buffer_size without finding it. */
int iol_stream_read_until(iol_stream *s, const char *delim, iol_read_fn cb, void *arg);
/* read_until with Tornado's max_bytes: if the delimiter does not end
 * within the first max_bytes bytes, the read fails with -EMSGSIZE and the
 * stream closes (Tornado's UnsatisfiableReadError), as soon as that is
 * known. max_bytes 0: no limit but max_buffer_size (as read_until).
 * Loop thread. -EINVAL as read_until, and max_bytes shorter than delim.
 * -EBUSY, -EPIPE, -ENOMEM as the other read calls. */
int iol_stream_read_until_max(iol_stream *s, const char *delim, size_t max_bytes, iol_read_fn cb, void *arg);
/* Reads exactly n bytes, or with partial as soon as 1..n bytes exist. */
int iol_stream_read_bytes(iol_stream *s, size_t n, bool partial, iol_read_fn cb, void *arg);
/* Reads everything until the peer closes; status 0 then (never IOL_EOF). */
int iol_stream_read_until_close(iol_stream *s, iol_read_fn cb, void *arg);

/* More reads of Tornado's IOStream. Each is one pending read like those
 * above (one at a time: -EBUSY), with the same callback rules and
 * statuses (see "Read calls" below: IOL_EOF, -EPIPE, -ECONNRESET...).
 * Loop thread; from another thread -EPERM and nothing changes. -EPIPE:
 * closed. -ENOMEM.
 *
 * read_until_regex: reads until the first match of pattern, a POSIX
 * extended regular expression (regcomp, REG_EXTENDED); data runs from the
 * start of the buffer to the end of that match. The buffer is searched
 * whole again as bytes arrive (as Tornado), so a match found earlier
 * wins over a longer one more bytes would make ("a+" answers "a").
 * max_bytes as read_until_max (-EMSGSIZE and close once the match cannot
 * end within it; 0: max_buffer_size only, -ENOBUFS past it). -EINVAL:
 * NULL s/pattern/cb, empty pattern, a pattern regcomp refuses, or one
 * that matches the empty string (it would answer with no bytes). */
int iol_stream_read_until_regex(iol_stream *s, const char *pattern, size_t max_bytes, iol_read_fn cb, void *arg);
/* read_into: fills the caller's buffer: cb(s, buf, n, status, arg) once
 * len bytes were copied into it, or (partial) once at least one was.
 * Bytes go into buf as they arrive, so len may exceed max_buffer_size
 * and the stream buffers no more than one recv's worth meanwhile. On
 * failure (IOL_EOF...) cb still gets buf and how many bytes landed in it.
 * buf must stay valid until cb. -EINVAL: NULL s/buf/cb, len 0. */
int iol_stream_read_into(iol_stream *s, void *buf, size_t len, bool partial, iol_read_fn cb, void *arg);
/* Streaming reads (Tornado's streaming_callback): chunk(s, data, len, 0,
 * arg) runs for each batch of bytes as it arrives (len > 0, data valid
 * until chunk returns), then done(s, NULL, 0, status, arg) once: status
 * 0 after n bytes (read_bytes_streaming) or at the peer's clean close
 * (read_until_close_streaming), else why not (IOL_EOF: the peer closed
 * before n bytes; -EPIPE, -ECONNRESET...). The bytes do not collect in
 * the stream's buffer, so n (or the whole transfer) may exceed
 * max_buffer_size. chunk may pause reading, write, or close the stream;
 * another read call from it says -EBUSY (the read is pending until
 * done). -EINVAL: NULL s/chunk/done, n 0. */
int iol_stream_read_bytes_streaming(iol_stream *s, size_t n, iol_read_fn chunk, iol_read_fn done, void *arg);
int iol_stream_read_until_close_streaming(iol_stream *s, iol_read_fn chunk, iol_read_fn done, void *arg);
/* Backpressure on the reading side: while paused the stream takes nothing
 * from the socket (the kernel's buffer fills and TCP's window closes on
 * the peer) and runs no read callback; read calls are still accepted and
 * answered after resume, from the buffer first. A peer's close is noticed
 * only once resumed (or by a pending write). Pausing a paused stream, or
 * resuming a running one, does nothing. Loop thread. -EINVAL: NULL.
 * -EPERM: another thread runs the loop (the stream stays as it was).
 * -EPIPE: closed. A failure to update the fd handler closes the stream
 * and is returned (-ENOMEM, -ESHUTDOWN). */
int iol_stream_pause_reading(iol_stream *s);
int iol_stream_resume_reading(iol_stream *s);
/* Read calls: cb runs on the loop thread, never inside the call itself;
 * data is valid until cb returns (copy what you keep). A stream holds a
 * read or write buffer only while bytes are in it (buffers come from a
 * per-thread pool of at most 1 MiB), so an idle stream costs about 0.5 KiB.
 * status: 0, or why the read cannot be answered, the stream then closed:
 *   IOL_EOF       the peer closed cleanly (FIN; TLS: close_notify) before
 *                 the read was satisfied; bytes short of it are dropped.
 *                 Not an error of the connection (a 0.1 program gets
 *                 -EPIPE, see "Binary compatibility of the status codes")
 *   -EPIPE        closed by our side (iol_stream_close) while pending
 *   -ECONNRESET   reset by the peer (or another socket -errno)
 *   -ENOBUFS      past max_buffer_size; -EMSGSIZE past max_bytes
 *   -ESHUTDOWN    the loop closed; TLS streams: see "TLS".
 * iol_strerror(status) names each.
 * Loop thread. Errors of the call: -EINVAL: NULL s/cb/delim, empty
 * delim, n 0. -EPERM: another thread runs the loop. -EBUSY: a read is
 * pending. -EPIPE: stream closed. */

/* Queues data (copied) and writes it as the socket allows; done(arg) runs
 * once its bytes were handed to the kernel (done may be NULL). Loop
 * thread: from another (a worker relaying to another worker's client),
 * -EPERM and nothing is queued; post to the stream's loop instead
 * (iol_runtime_post, iol_loop_add_callback).
 * -EINVAL: NULL s, data NULL with len > 0. -EPERM. -EPIPE: closed.
 * -ENOBUFS: the write buffer would exceed the write limit. -ENOMEM. */
int iol_stream_write(iol_stream *s, const void *data, size_t len, iol_callback_fn done, void *arg);
/* Zero-copy: queues len bytes of the caller's memory, written in order
 * with the other writes (writev of consecutive buffers, no copy into the
 * stream's buffer). The memory must stay valid and unchanged until
 * release(arg) runs: exactly once, on the loop thread, never inside this
 * call, once the last byte reached the kernel or when the stream closed
 * first (iol_stream_error then says why; release may be NULL). Loop
 * thread. -EINVAL: NULL s or data, len 0. -EPERM: another thread runs
 * the loop (release will not run). -EPIPE: closed (release will not run). -ENOBUFS: past the write limit. -ENOMEM. */
int iol_stream_write_ref(iol_stream *s, const void *data, size_t len, iol_callback_fn release, void *arg);
/* Zero-copy: queues len bytes of file fd from offset, sent in order with
 * the other writes with sendfile(2) (the kernel copies page cache to the
 * socket; SIGPIPE is held back). fd is the caller's: keep it open until
 * release(arg) runs, with the same rules as iol_stream_write_ref. A file
 * that ends before the region does closes the stream with -EIO; a
 * sendfile error closes it with that error. Loop thread. -EINVAL: NULL
 * s, offset < 0, len 0, offset + len past the largest file offset.
 * -EBADF: fd < 0. -EPERM, -EPIPE, -ENOBUFS, -ENOMEM as
 * iol_stream_write_ref. */
int iol_stream_sendfile(iol_stream *s, int fd, off_t offset, size_t len, iol_callback_fn release, void *arg);
/* Bytes accepted by the write calls and not yet handed to the kernel
 * (copied and zero-copy alike); 0 for NULL. Loop thread: 0 from another
 * thread while the loop runs (the count is the loop's, read unlocked). */
size_t iol_stream_write_buffer_size(const iol_stream *s);
/* Write limit (Tornado's max_write_buffer_size) on the bytes not yet
 * written, zero-copy ones included; 0: unlimited (default). Loop thread.
 * -EINVAL: NULL s. -EPERM: another thread runs the loop. -ENOMEM. */
int iol_stream_set_max_write_buffer(iol_stream *s, size_t max);
/* Deferred writes, for a server that answers requests: with on, a write
 * does not try the kernel inside iol_stream_write; the stream's writes of
 * one loop iteration go out together, after its callbacks, through the
 * loop's completion path (a loop on the uring poller: one send operation
 * handed over in the io_uring_enter that waits, no system call of its
 * own). Until then iol_stream_write_buffer_size counts them, and a write
 * error closes the stream from the loop (the write itself returns 0).
 * Without a completion path (other pollers, TLS streams, io_uring
 * without buffer rings) the setting has no effect: writes go at once.
 * With it, the watch for the peer closing is a recv in flight too, so
 * iol_stream_start_tls says -EBUSY on such a stream, and the stream's
 * close is a ring operation: its fd is closed at the loop's next wait.
 * Off by default. Loop thread. -EINVAL: NULL s. -EPERM: another thread
 * runs the loop. -EPIPE: closed. */
int iol_stream_set_deferred_writes(iol_stream *s, bool on);
/* Write watermarks for a producer: fn(s, true, arg) once the write buffer
 * holds more than high bytes, then fn(s, false, arg) once it drained to
 * low or less, and so on, alternating. fn runs on the loop thread, never
 * inside iol_stream_write (so a producer writing in a loop stops itself
 * when iol_stream_write_buffer_size(s) > high, and resumes on "false"). A
 * rise and fall between two turns of the loop tells nothing. The calls
 * stop at close. fn NULL removes the watermarks. Memory then stays near
 * high plus one write (the buffer's capacity at most doubles that).
 * Loop thread. -EINVAL: NULL s, fn with high 0 or low > high. -EPERM:
 * another thread runs the loop. -EPIPE: closed. -ENOMEM. */
int iol_stream_set_write_watermarks(iol_stream *s, size_t high, size_t low, iol_watermark_fn fn, void *arg);
/* fn(s, arg) runs on the loop once the stream closed (by either side).
 * fn NULL removes it. Loop thread. -EINVAL: NULL s. -EPERM: another
 * thread runs the loop. -EPIPE: the close has completed. */
int iol_stream_set_close_callback(iol_stream *s, iol_close_fn fn, void *arg);
/* Closes the fd and fails a pending read with -EPIPE; unwritten data is
 * dropped (as Tornado; iol_stream_shutdown below sends it first). Loop
 * thread. -EINVAL: NULL. -EPERM: another thread runs the loop (the
 * stream stays open). -EALREADY: closed.
 * Lifetime: a stream frees itself once it is closed (by either side) and
 * none of its callbacks is running or queued; the close finishes in a loop
 * callback, or, if the loop is closed first, inside iol_loop_close (which
 * releases every stream on the loop, see there). After the close callback
 * returns, or after iol_stream_close outside a callback, the pointer must
 * not be used. Set a close callback to learn of a peer's close while idle
 * and of the loop's close. */
int iol_stream_close(iol_stream *s);
/* Graceful close (libuv's uv_shutdown): ends our side of the connection
 * once every write accepted before it has been handed to the kernel —
 * copied, zero-copy and sendfile ones, deferred (ring) ones — with a FIN
 * (TLS: close_notify, then the FIN). Unlike iol_stream_close, nothing
 * queued is dropped and the stream stays open for reading: reads go on
 * until the peer's EOF, which closes the stream as ever (IOL_EOF for a
 * pending read, status 0 for read_until_close, the close callback). A
 * shutdown asked while connecting or during the TLS handshake waits for
 * its end. cb(s, status, arg) runs once, on the loop thread, never
 * inside this call: 0 once the FIN went out, or, if the stream closed
 * before that, why: -ECANCELED (iol_stream_close), -ESHUTDOWN (the loop
 * closed), IOL_EOF (the peer closed first: the stream closes then, and
 * what was still queued is dropped), the -errno of a failed write or of
 * shutdown(2) (which closes the stream). cb may be NULL. Afterwards
 * every write call returns -EPIPE. The stream is not freed by a
 * shutdown: it closes at the peer's EOF, or call iol_stream_close (a
 * server that does not wait for slow peers: after a deadline).
 * Loop thread. -EINVAL: NULL s. -EPERM: another thread runs the loop
 * (nothing changes). -EPIPE: closed. -EALREADY: shut down already.
 * -ENOTSOCK: the fd is not a socket (a pipe has no half-close). -ENOMEM.
 * A failure to watch the fd closes the stream (cb then hears it). */
int iol_stream_shutdown(iol_stream *s, void (*cb)(iol_stream *s, int status, void *arg), void *arg);

/* Whether the stream is closed; true for NULL. Loop thread: true from
 * another thread while the loop runs (nothing may be done with it from
 * there). */
bool iol_stream_closed(const iol_stream *s);
/* The socket fd, -EBADF once closed, -EINVAL for NULL. Loop thread:
 * -EPERM from another thread while the loop runs. */
int iol_stream_fd(const iol_stream *s);
/* The error that closed the stream (-errno or a library code such as
 * IOL_ENONAME), 0 if none: 0 after a clean close by either side (the
 * peer's FIN, which a pending read saw as IOL_EOF, or iol_stream_close),
 * and while the stream is open. -EINVAL: NULL. Loop thread: -EPERM from
 * another thread while the loop runs. */
int iol_stream_error(const iol_stream *s);
/* The stream's loop (NULL for NULL). Any thread: fixed at creation, so a
 * thread holding a stream of another loop can post to that loop. */
iol_loop *iol_stream_loop(const iol_stream *s);

/* ------------------------------------------------------------------- TLS
 * TLS streams over OpenSSL 3. Declared in every build; a build without
 * OpenSSL (meson -Dtls=disabled, or libssl-dev missing) returns -ENOTSUP
 * from each call, before any other check.
 *
 * A context (iol_tls_ctx) holds certificates, trust and settings; it is
 * created once and shared by every worker and stream (it is immutable
 * after creation; each stream holds a reference). A TLS stream is an
 * ordinary iol_stream: read_until/read_bytes/read_until_close, write,
 * watermarks, pause/resume and close work unchanged and carry plaintext.
 * Reads and writes made during the handshake wait for its end. Two
 * differences: the read buffer may pass max_buffer_size by less than two
 * TLS records (32 KiB: a record is decrypted whole, and the records that
 * one recv brought in come along), and a write's `done`
 * runs once its bytes were encrypted and handed to the kernel. Use a TLS
 * stream's fd for nothing but options (bytes on it would corrupt the
 * record stream).
 *
 * Errors that close a TLS stream (iol_stream_error, the pending read,
 * the handshake callback), each with one log line carrying OpenSSL's
 * reason: at IOL_LOG_WARNING (printed by the default handler) when our
 * client rejects the server's certificate, at IOL_LOG_INFO (the peer's
 * fault, not printed by default) for everything else:
 *   IOL_ETLS_*     the certificate check failed (see "Status codes";
 *                  iol_stream_tls_verify_result gives OpenSSL's words):
 *                  our check of the peer's certificate, each reason its
 *                  own code (IOL_ETLS_HOSTNAME, _UNTRUSTED, _SELF_SIGNED,
 *                  _EXPIRED, _NOT_YET_VALID, else _VERIFY); a server that
 *                  requires a client certificate and got none:
 *                  IOL_ETLS_NO_PEER_CERT; the peer's alert rejecting our
 *                  certificate (bad_certificate, unknown_ca,
 *                  certificate_expired, certificate_required...):
 *                  IOL_ETLS_PEER_REJECTED. Under TLS 1.3 a client's
 *                  handshake is over before the server checks the
 *                  client certificate, so a client the server rejects
 *                  (or that sent none to a server that requires one)
 *                  sees its handshake callback succeed, then its first
 *                  read (or iol_stream_error) fail with
 *                  IOL_ETLS_PEER_REJECTED. Under TLS 1.2 OpenSSL's server
 *                  refuses a missing client certificate with a
 *                  handshake_failure alert, which names no certificate:
 *                  the client hears -EPROTO. A loop of a 0.1 program
 *                  hears -EKEYREJECTED for each IOL_ETLS_*.
 *   -EPROTO        not TLS or a protocol violation: garbage instead of a
 *                  ClientHello, plain HTTP to a TLS port, no shared
 *                  cipher or version, a bad record, a fatal alert
 *   -ECONNRESET    the peer closed TCP without close_notify (a truncated
 *                  record or connection), or reset it
 *   -ETIMEDOUT     the handshake did not finish within the deadline
 *   -ENOMEM, or the socket's -errno (-EPIPE...).
 * A peer's close_notify ends the stream like a TCP close does (status 0
 * for read_until_close, IOL_EOF for a read it leaves unanswered); our
 * close sends close_notify (a clean close answers the peer's too) and
 * does not wait for the answer. So do iol_loop_close and a runtime's
 * drain (before it shuts a socket for writing): a TLS stream left open
 * then ends with close_notify before its FIN, a clean end for its peer.
 * Except over lost data: a close that drops queued writes sends no
 * close_notify (it would say all was sent), so the peer sees a
 * truncation ("unexpected eof"), as it should. */

typedef struct iol_tls_ctx iol_tls_ctx;

/* iol_tls_config.client_cert and the versions (the protocol's own numbers). */
enum { IOL_TLS_CLIENT_CERT_NONE = 0, IOL_TLS_CLIENT_CERT_REQUEST = 1, IOL_TLS_CLIENT_CERT_REQUIRE = 2 };
enum { IOL_TLS_1_2 = 0x0303, IOL_TLS_1_3 = 0x0304 };

/* Fixed size, like the other config structs; zero is each default. */
typedef struct iol_tls_config {
    __extension__ union {
        __extension__ struct { /* anonymous: C11; __extension__ quiets C++ -Wpedantic */
            bool server; /* accepts handshakes; false: a client context */
            /* server: the default certificate chain (PEM, leaf first) and
             * its private key (PEM). client: the certificate and key it
             * presents when a server asks (mutual TLS); NULL: none. */
            const char *cert_file;
            const char *key_file;
            /* server: more chain/key pairs (n_extra of each); a client whose
             * SNI name matches a name of one of them (subjectAltName, by
             * the rules of hostname verification, wildcards included) gets
             * that one, any other client the default. */
            const char *const *extra_cert_files;
            const char *const *extra_key_files;
            unsigned n_extra;
            /* client: CA certificates (PEM) that the server's chain must
             * lead to; NULL: the system's default trust store. A server
             * that asks for client certificates (client_cert below)
             * verifies them against it likewise. */
            const char *ca_file;
            /* client: no certificate or host name verification at all
             * (tests, pinned peers); the default verifies both. */
            bool insecure_no_verify;
            /* ALPN protocols in preference order, comma-separated
             * ("h2,http/1.1"); NULL or "": no ALPN. A server picks its own
             * first protocol the client also offers; with no overlap the
             * handshake goes on without ALPN. */
            const char *alpn;
            /* seconds from the start of the handshake to its end; past it
             * the stream closes with -ETIMEDOUT. 0: 10 s; < 0: no limit. */
            double handshake_timeout;
            /* Session resumption (server: tickets and a session cache;
             * client: the last session per server name is offered again)
             * is on unless this is set. */
            bool no_resumption;
            /* Third release (zero: the second release's behaviour).
             * Certificates and keys as PEM in memory instead of files: the
             * chain (leaf first), its private key, the CA certificates. Each
             * with its length in bytes (0: up to the NUL). Copied by
             * iol_tls_ctx_new (not kept). A buffer and the file of the same
             * role (cert_pem and cert_file...) may not both be set. */
            const char *cert_pem;
            size_t cert_pem_len;
            const char *key_pem;
            size_t key_pem_len;
            const char *ca_pem;
            size_t ca_pem_len;
            /* Mutual TLS. A client context with a certificate and key
             * (cert_file/key_file or cert_pem/key_pem) presents them when
             * the server asks. A server asks with client_cert:
             * IOL_TLS_CLIENT_CERT_NONE (0) asks for none;
             * IOL_TLS_CLIENT_CERT_REQUEST asks, and verifies one if sent
             * (a client without one goes on); IOL_TLS_CLIENT_CERT_REQUIRE
             * fails the handshake of a client without one
             * (IOL_ETLS_NO_PEER_CERT). The client's chain must lead to
             * the server's ca_file/ca_pem (NULL: the system's trust
             * store); no host name is checked. */
            int client_cert;
            /* Protocol versions: IOL_TLS_1_2 or IOL_TLS_1_3; 0: 1.2 at
             * least, the newest at most. A peer without a version in the
             * range fails the handshake with -EPROTO ("unsupported
             * protocol", or an alert). */
            int min_version;
            int max_version;
            /* OpenSSL cipher strings: `ciphers` for TLS 1.2
             * ("ECDHE+AESGCM"), `ciphersuites` for TLS 1.3
             * ("TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256");
             * NULL: OpenSSL's defaults. A peer with none in common fails the
             * handshake with -EPROTO. */
            const char *ciphers;
            const char *ciphersuites;
        };
        unsigned char iol_reserved_[256]; /* fixes the size */
    };
} iol_tls_config;

/* Creates a context: loads and checks the certificates and keys (a
 * server's, a client's own for mutual TLS) and the trust store (a
 * client's; a server's that asks for client certificates). Any thread.
 * -EINVAL: out/cfg NULL, a server without a certificate and key (file or
 * PEM), a certificate without its key or the reverse, a file and a PEM
 * buffer for the same role, a PEM length > INT_MAX, n_extra without both
 * arrays or with a NULL entry, a bad ALPN list (an empty or > 255-byte
 * name), handshake_timeout NaN, client_cert not one of the three or set
 * on a client context, a version not 0 or IOL_TLS_1_2/IOL_TLS_1_3, a
 * min_version above max_version, a cipher string OpenSSL takes nothing
 * from ("" or no known cipher).
 * -ENOENT: a file does not exist. -EACCES: cannot be read.
 * -EBADMSG: a file or buffer is not a valid PEM certificate/key (ca_pem:
 * holds no certificate), or a key does not match its certificate (logged
 * with OpenSSL's reason at IOL_LOG_ERROR).
 * -ENOMEM. -ENOTSUP: built without TLS. */
int iol_tls_ctx_new(iol_tls_ctx **out, const iol_tls_config *cfg);
/* Takes a reference; returns ctx (NULL for NULL). Any thread. */
iol_tls_ctx *iol_tls_ctx_ref(iol_tls_ctx *ctx);
/* Drops a reference (NULL ignored); streams hold their own, so the
 * creator may drop its reference while streams still use the context.
 * Any thread. */
void iol_tls_ctx_unref(iol_tls_ctx *ctx);

/* Server side: wraps an accepted socket as a TLS stream (as
 * iol_stream_new) and starts the handshake (as iol_stream_start_tls with
 * no callback): reads and writes may be issued at once. Loop thread.
 * -EINVAL: NULL out/loop/ctx, ctx not a server context. -EPERM: another
 * thread runs the loop (checked first, after loop NULL). Otherwise the
 * errors of iol_stream_new and iol_stream_start_tls; on failure fd is
 * left open (not owned). */
int iol_tls_stream_new(iol_stream **out, iol_loop *loop, int fd, iol_tls_ctx *ctx, size_t max_buffer_size);

/* Client side: iol_stream_connect_ex, then the handshake. server_name is
 * sent as SNI and the certificate verified against it; NULL: host (an IP
 * literal is then checked against the certificate's IP addresses and no
 * SNI is sent). cb(s, status, arg) runs once, on the loop thread, never
 * inside this call: 0 when the handshake finished, or the connect's
 * -errno (see iol_stream_connect_ex) or the handshake's (see above); on
 * failure the stream is closed after cb. opts->timeout covers the
 * connect only; the context's handshake_timeout the handshake. Loop
 * thread. -EINVAL: NULL ctx, a server context, and the errors of
 * iol_stream_connect_ex. -EPERM: another thread runs the loop. -ENOMEM.
 * -ENOTSUP. */
int iol_tls_connect(iol_stream **out, iol_loop *loop, const char *host, uint16_t port,
                    const iol_connect_options *opts, iol_tls_ctx *ctx, const char *server_name,
                    iol_connect_fn cb, void *arg);

/* STARTTLS: starts a TLS handshake on a connected plaintext stream, as a
 * server or a client after ctx. server_name (client): SNI and the name
 * verified (copied); NULL: no SNI, and with verification on, -EINVAL.
 * Ignored by a server. cb(s, status, arg) as for iol_tls_connect (may be
 * NULL). Loop thread.
 * -EINVAL: NULL s/ctx, see server_name. -EPERM: another thread runs the
 * loop. -EPIPE: closed. -EALREADY:
 * already TLS. -EBUSY: a read is pending or bytes are buffered either
 * way (the switch must fall between two protocol messages), or a ring
 * operation is in flight (iol_stream_set_deferred_writes). -ENOTSOCK:
 * not a socket. -EINPROGRESS: still connecting. -ENOMEM. A failure to
 * update the fd handler closes the stream and is returned. */
int iol_stream_start_tls(iol_stream *s, iol_tls_ctx *ctx, const char *server_name, iol_connect_fn cb,
                         void *arg);

/* Tornado's SSLIOStream.wait_for_handshake, for streams whose handshake
 * started without a callback (iol_tls_stream_new on a server, STARTTLS):
 * cb(s, status, arg) runs once, on the loop thread, never inside this
 * call: 0 once the handshake finished (later from the loop if it has
 * already), or the error that ended it (see above; the stream is closed
 * then, cb runs before the close callback). One waiter at a time. Loop
 * thread. -EINVAL: NULL s/cb, s not a TLS stream. -EPERM: another thread
 * runs the loop (nothing changes). -EPIPE: closed. -EBUSY: a wait is
 * pending (Tornado's "Already waiting"). -ENOMEM, -ESHUTDOWN: the loop
 * could not queue the answer. -ENOTSUP: built without TLS. */
int iol_stream_wait_for_handshake(iol_stream *s, iol_connect_fn cb, void *arg);

/* Whether s is a TLS stream (handshake done or not); false for NULL.
 * Loop thread: false from another thread while the loop runs. */
bool iol_stream_is_tls(const iol_stream *s);
/* Copies the ALPN protocol chosen by the handshake into buf (NUL-ended)
 * and returns its length; 0 if none was chosen. Loop thread.
 * -EINVAL: NULL s, buf NULL with size > 0. -EPERM: another thread runs
 * the loop. -ENOTCONN: not TLS or the
 * handshake has not finished. -ENOSPC: size too small. */
int iol_stream_tls_alpn(const iol_stream *s, char *buf, size_t size);
/* Whether the finished handshake resumed a session; false otherwise.
 * Loop thread: false from another thread while the loop runs. */
bool iol_stream_tls_resumed(const iol_stream *s);

/* What the handshake settled (third release). Loop thread: from another
 * thread -EPERM, and nothing is read. Every call: -EINVAL for NULL s or a
 * NULL buffer with size > 0; -ENOTCONN when s is not TLS or its handshake
 * has not got that far. The copying calls write a NUL-ended string and
 * return its length; -ENOSPC when it does not fit in size bytes (buf is
 * left untouched). A build without TLS returns -ENOTSUP.
 *
 * The certificate check: 0 when it passed, or was not made (a client with
 * insecure_no_verify, a server that asks for no client certificate or
 * only requests one and got none); else the IOL_ETLS_* status it failed
 * with, the one the handshake callback and iol_stream_error also hear:
 * our own verdict on the peer's certificate, IOL_ETLS_NO_PEER_CERT, or
 * IOL_ETLS_PEER_REJECTED when the peer's alert rejected ours. text (size
 * > 0): OpenSSL's words for it ("ok", "certificate has expired",
 * "hostname mismatch", "tlsv13 alert certificate required"; "not
 * verified" when no check was made), NUL-ended,
 * cut to fit (never -ENOSPC, so the status always comes back). Ready
 * once the check is over: in the handshake callback (either way), the
 * close callback, until the stream is freed. -ENOTCONN: the handshake is
 * still before the check, or failed before it (a timeout, a protocol
 * error). */
int iol_stream_tls_verify_result(const iol_stream *s, char *text, size_t size);
/* The peer's certificate (its leaf), ready as the verification result: a
 * client can read the server certificate it rejected. -ENOENT: the peer
 * sent none (a client without one; a server never does). Its subject in
 * one line after RFC 2253 ("CN=client-1,O=Example"): */
int iol_stream_tls_peer_subject(const iol_stream *s, char *buf, size_t size);
/* Its subjectAltNames, comma-separated, each after its type
 * ("DNS:a.test,DNS:localhost,IP:127.0.0.1"; also "email:" and "URI:",
 * other types left out); "" (0) when it has none. */
int iol_stream_tls_peer_sans(const iol_stream *s, char *buf, size_t size);
/* The whole certificate, PEM ("-----BEGIN CERTIFICATE-----\n..."). */
int iol_stream_tls_peer_cert_pem(const iol_stream *s, char *buf, size_t size);
/* The protocol version the handshake settled on: IOL_TLS_1_2 or
 * IOL_TLS_1_3. -ENOTCONN until the handshake finished (it stays readable
 * after a close). */
int iol_stream_tls_version(const iol_stream *s);
/* The cipher the handshake settled on, by OpenSSL's name
 * ("TLS_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256").
 * -ENOTCONN as iol_stream_tls_version. */
int iol_stream_tls_cipher(const iol_stream *s, char *buf, size_t size);

/* ------------------------------------------------------------- Datagrams
 * UDP (and Unix datagram) sockets on a loop (libuv's uv_udp): receive in
 * batches, send single datagrams and batches, with segmentation offload.
 *
 * Receiving: iol_udp_recv_start(u, cb, arg) calls cb(u, dgrams, n, 0, arg)
 * on the loop thread with up to `batch` datagrams at a time (recvmmsg(2):
 * one system call per batch). dgrams[] and the bytes it points to are
 * memory the object owns and reuses: valid until cb returns (copy what you
 * keep). A datagram longer than max_datagram is cut there and flagged
 * IOL_UDP_TRUNCATED (never silently cut). A status < 0 comes with
 * n 0: an error the socket reported (ICMP port unreachable on a connected
 * socket: -ECONNREFUSED; others as recvmmsg gives them); receiving goes
 * on. The callback may call any udp call, iol_udp_close(u) included.
 *
 * Sending: iol_udp_send / iol_udp_send_batch try the kernel at once
 * (sendmmsg(2) for a batch). What the kernel does not take because the
 * socket's buffer is full (EAGAIN) is copied into the object's send
 * queue, sent in order once the socket is writable; while anything is
 * queued, new sends queue behind it (order is kept). The queue holds at
 * most send_queue_limit datagrams: past it a send fails with -ENOBUFS and
 * nothing of that datagram is kept. An error the kernel gives a queued
 * datagram later (the socket turned refused, say) drops that datagram,
 * counts it in iol_udp_stats.send_errors and is reported to the receive
 * callback if one runs, else by the next send call.
 *
 * Offload: iol_udp_send_gso sends one buffer as equal-size segments
 * (UDP_SEGMENT, one system call and one trip through the stack for up to
 * 64 datagrams); where the kernel lacks it, the same datagrams go out with
 * one sendmmsg. iol_udp_send_batch does the same by itself for runs of
 * consecutive datagrams to one destination of one size (the last of a
 * run may be shorter; no local/ifindex), as QUIC stacks do by hand: the
 * receiver gets the same datagrams, and a run the kernel refuses goes
 * again as separate datagrams. IOL_UDP_GRO asks the kernel to coalesce arriving
 * datagrams of one flow (UDP_GRO); the receive callback still sees one
 * entry per datagram (pointing into the coalesced buffer). Both are
 * probed at run time: iol_udp_offload() says what this kernel does.
 *
 * Connected sockets: after iol_udp_connect the kernel reports an ICMP
 * port unreachable from the peer: -ECONNREFUSED to the receive callback
 * (status) when receiving, otherwise from the next send call (once). An
 * unconnected socket hears no ICMP errors (the kernel's rule).
 *
 * Floods: a sender faster than the loop fills the socket's receive buffer
 * and the kernel drops the rest; the loop never blocks. The kernel's drop
 * counter (SO_RXQ_OVFL) comes with the datagrams queued after a drop and
 * is read again when the stats are: iol_udp_stats.kernel_drops.
 *
 * Addresses: a socket bound to an IPv6 address (host "::") receives IPv4
 * peers as v4-mapped IPv6 addresses (::ffff:a.b.c.d) unless v6only is set;
 * a send to an IPv4 address (sockaddr_in) on such a socket is mapped the
 * same way. Unix datagram: peers that did not bind have an unnamed
 * address (peerlen == sizeof(sa_family_t)) and cannot be answered.
 *
 * Pollers: on every poller the object watches its fd with a handler and
 * reads with recvmmsg, except on a "uring" loop whose kernel has
 * multishot receives and provided buffers (6.0): there one multishot
 * recvmsg stays armed and the kernel writes each datagram into a buffer
 * of the loop's shared ring (no system call per batch); the datagrams
 * that one wait of the loop brought in reach the callback as one batch
 * (at most `batch`), after the loop's other events. A batch is then what
 * arrived by the time of the wait, which may split a burst that the
 * handler path would read at once. Objects whose datagram, address and
 * ancillary data do not fit a ring buffer (16 KiB: max_datagram above
 * about 15.5 KiB, or IOL_UDP_GRO) use the handler path there too. Sends
 * are system calls on every poller (sendmsg, sendmmsg). An object on the
 * ring path has no fd handler for reading, so it does not count in
 * iol_loop_handler_count while it only receives.
 *
 * Threads: every call is loop-thread only (or any thread while the loop
 * is not running) except iol_udp_offload, iol_udp_address and
 * iol_udp_loop: from another thread while the loop runs, -EPERM and
 * nothing changes (iol_udp_send_queue_size, which cannot say -EPERM,
 * answers 0).
 * Lifetime: iol_udp_close ends the object (from inside its own callback:
 * once the callback returns). iol_loop_close releases every udp object
 * still on the loop: its fd is closed, its queued datagrams dropped and
 * counted, and its close callback runs (the only time it runs). */

typedef struct iol_udp iol_udp;

enum { /* iol_udp_config.flags */
    IOL_UDP_GRO = 1u << 0,            /* receive with UDP_GRO where the kernel has it */
    IOL_UDP_PKTINFO = 1u << 1,        /* IP_PKTINFO / IPV6_RECVPKTINFO: each datagram's local
                                         address and interface (multi-homed servers) */
    IOL_UDP_RECV_TIMESTAMP = 1u << 2, /* SO_TIMESTAMPNS: the kernel's receive time */
    IOL_UDP_RECV_ECN = 1u << 3,       /* IP_RECVTOS / IPV6_RECVTCLASS: the ECN bits */
    IOL_UDP_REUSEPORT = 1u << 4,      /* SO_REUSEPORT before bind (sharing a port) */
};

enum { /* iol_udp_datagram.flags */
    IOL_UDP_TRUNCATED = 1u << 0, /* the datagram was longer than max_datagram: data holds its start */
};

#define IOL_UDP_MAX_BATCH 1024u     /* datagrams per receive call and per sendmmsg */
#define IOL_UDP_MAX_PAYLOAD 65535u  /* largest datagram a send accepts (IPv4 allows 65507) */
#define IOL_UDP_MAX_GSO_SEGMENTS 64u

typedef struct iol_udp_config {
    __extension__ union {
        __extension__ struct { /* anonymous: C11; __extension__ quiets C++ -Wpedantic */
            /* A numeric address to bind ("127.0.0.1", "::", "0.0.0.0");
             * NULL: "0.0.0.0", or nothing bound with path set. */
            const char *host;
            uint16_t port;     /* 0: an ephemeral port (iol_udp_local_address) */
            /* A Unix datagram socket bound at this path instead (host NULL,
             * port 0); the file must not exist, and is removed at close. */
            const char *path;
            bool v6only;       /* IPv6: IPV6_V6ONLY (no IPv4 peers); default dual stack */
            unsigned flags;    /* IOL_UDP_* above */
            unsigned batch;    /* datagrams per receive call, 1..IOL_UDP_MAX_BATCH; 0: 32 */
            /* bytes kept per received datagram; 0: 2048 (a datagram up to
             * 2048 bytes arrives whole, a longer one IOL_UDP_TRUNCATED);
             * at most IOL_UDP_MAX_PAYLOAD. With IOL_UDP_GRO in effect it is
             * IOL_UDP_MAX_PAYLOAD (a coalesced batch is that big). The object
             * holds batch * max_datagram bytes for receiving. */
            size_t max_datagram;
            /* datagrams the send queue holds; 0: 1024; past it -ENOBUFS */
            size_t send_queue_limit;
            int rcvbuf;        /* > 0: SO_RCVBUF; 0: the kernel's default */
            int sndbuf;        /* > 0: SO_SNDBUF */
        };
        unsigned char iol_reserved_[256]; /* fixes the size (see "Config structs") */
    };
} iol_udp_config;

/* One received datagram. */
typedef struct iol_udp_datagram {
    const char *data;
    size_t len;                   /* bytes at data (at most max_datagram) */
    const struct sockaddr *peer;  /* the sender */
    socklen_t peerlen;
    unsigned flags;               /* IOL_UDP_TRUNCATED */
    /* IOL_UDP_PKTINFO: the address the datagram was sent to (port: ours)
     * and the interface it came in on; local NULL and ifindex 0 otherwise */
    const struct sockaddr *local;
    socklen_t locallen;
    int ifindex;
    uint8_t ecn;                  /* IOL_UDP_RECV_ECN: the ECN bits (0..3) */
    int64_t timestamp_ns;         /* IOL_UDP_RECV_TIMESTAMP: CLOCK_REALTIME ns; 0 otherwise */
} iol_udp_datagram;

/* One datagram to send (iol_udp_send_batch). to NULL: the connected peer.
 * local / ifindex (optional, 0/NULL: the kernel chooses): the source
 * address and interface to send from (IP_PKTINFO / IPV6_PKTINFO), e.g. a
 * received datagram's local and ifindex, so the answer leaves from the
 * address the question came to. */
typedef struct iol_udp_msg {
    const void *data;
    size_t len;
    const struct sockaddr *to;
    socklen_t tolen;
    const struct sockaddr *local;
    int ifindex;
} iol_udp_msg;

typedef void (*iol_udp_recv_fn)(iol_udp *u, const iol_udp_datagram *dgrams, unsigned n, int status, void *arg);
typedef void (*iol_udp_close_fn)(iol_udp *u, void *arg);

/* What a udp object has done (grows at the end; size as iol_loop_get_stats). */
typedef struct iol_udp_stats {
    uint64_t received;       /* datagrams delivered to the receive callback */
    uint64_t recv_calls;     /* receive system calls (recvmmsg) that returned datagrams
                                (ring: batches delivered) */
    uint64_t truncated;      /* datagrams delivered IOL_UDP_TRUNCATED */
    uint64_t kernel_drops;   /* datagrams the kernel dropped on this socket, a full
                                receive buffer above all (SO_RXQ_OVFL with each batch,
                                SO_MEMINFO when the stats are read) */
    uint64_t sent;           /* datagrams handed to the kernel (a GSO send counts its segments) */
    uint64_t send_calls;     /* send system calls (sendmsg, sendmmsg) */
    uint64_t queued;         /* datagrams that went through the send queue */
    uint64_t send_errors;    /* queued datagrams the kernel refused later (dropped) */
    uint64_t dropped_at_close; /* queued datagrams never sent because of a close */
    size_t queue_len;        /* datagrams in the send queue now */
    size_t queue_peak;       /* most datagrams ever queued at once */
    uint64_t segmented;      /* datagrams that left as GSO segments (send_gso, coalesced runs) */
    /* receiving goes through io_uring (a multishot recvmsg on a uring
     * loop, see "Pollers" above); recv_calls then counts batches delivered */
    bool ring;
} iol_udp_stats;

/* Bits of iol_udp_offload(). */
enum { IOL_UDP_OFFLOAD_GSO = 1u, IOL_UDP_OFFLOAD_GRO = 2u };

/* Creates a datagram socket on loop, bound as cfg says (cfg NULL: all
 * defaults, 0.0.0.0 on an ephemeral port). Loop thread.
 * -EINVAL: NULL out/loop; host not a numeric address; path with host or
 * port; empty path; batch > IOL_UDP_MAX_BATCH; max_datagram >
 * IOL_UDP_MAX_PAYLOAD; unknown flags; v6only with an IPv4 host.
 * -ENAMETOOLONG: path longer than a sockaddr_un holds (107 bytes).
 * -EADDRINUSE: the address is taken (a path: the file exists).
 * -EADDRNOTAVAIL: host is not ours. -EPERM: another thread runs the loop.
 * -ESHUTDOWN: loop closed. -ENOMEM, or the -errno of socket/bind. */
int iol_udp_new(iol_udp **out, iol_loop *loop, const iol_udp_config *cfg);
/* Wraps a datagram socket the caller made and bound (made non-blocking,
 * close-on-exec is left alone); the object owns fd from success on. cfg
 * as iol_udp_new, host, port, path and IOL_UDP_REUSEPORT ignored. Loop
 * thread. -EINVAL as new; -EBADF: fd < 0 or not open; -ENOTSOCK: not a
 * socket; -EPROTOTYPE: not SOCK_DGRAM; -EAFNOSUPPORT: not IPv4, IPv6 or
 * Unix. -EPERM: another thread runs the loop. -ESHUTDOWN: loop closed.
 * -ENOMEM. On failure fd stays the caller's (it may have been made
 * non-blocking and had the config's socket options set). */
int iol_udp_open(iol_udp **out, iol_loop *loop, int fd, const iol_udp_config *cfg);
/* Connects to addr: sends without an address go there, only its
 * datagrams are received, and ICMP errors are reported (see above).
 * Loop thread. -EINVAL: NULL u/addr, len too small for its family.
 * -EAFNOSUPPORT: a family the socket cannot reach. -EPERM. -EBADF:
 * closed. The -errno of connect(2). */
int iol_udp_connect(iol_udp *u, const struct sockaddr *addr, socklen_t len);
/* Fills *out / *len with a numeric host and port (IPv4 or IPv6 literal;
 * a scope "%eth0" is allowed for link-local). Any thread.
 * -EINVAL: NULL arguments, host not a numeric address. */
int iol_udp_address(const char *host, uint16_t port, struct sockaddr_storage *out, socklen_t *len);
/* The socket's bound address (getsockname). Loop thread. -EINVAL: NULL.
 * -ENOSPC: *len too small. -EBADF: closed. -EPERM. */
int iol_udp_local_address(const iol_udp *u, struct sockaddr *addr, socklen_t *len);

/* Starts delivering received datagrams to cb (see above); replaces a
 * previous cb. Loop thread. -EINVAL: NULL u/cb. -EBADF: closed. -EPERM.
 * -ENOMEM, or the -errno of iol_loop_add_handler. */
int iol_udp_recv_start(iol_udp *u, iol_udp_recv_fn cb, void *arg);
/* Stops delivering; datagrams wait in the kernel's buffer (and past it
 * are dropped there). Harmless when not receiving. Loop thread.
 * -EINVAL: NULL. -EBADF: closed. -EPERM. */
int iol_udp_recv_stop(iol_udp *u);

/* Sends one datagram of len bytes (0 allowed) to `to` (NULL: the
 * connected peer). 0: sent or queued (see above). Loop thread.
 * -EINVAL: NULL u, data NULL with len > 0, tolen too small.
 * -EMSGSIZE: len > IOL_UDP_MAX_PAYLOAD, or the kernel says it is too big
 * for the socket or the path. -ENOBUFS: the send queue is full.
 * -EDESTADDRREQ: to NULL on a socket that is not connected.
 * -EISCONN: to given on a connected socket (Linux takes it only if it
 * equals the peer). -ECONNREFUSED: see "Connected sockets". -EBADF:
 * closed. -EPERM. -ENOMEM, or another -errno of sendmsg(2). */
int iol_udp_send(iol_udp *u, const void *data, size_t len, const struct sockaddr *to, socklen_t tolen);
/* Sends n datagrams with as few sendmmsg calls as the kernel allows (at
 * most IOL_UDP_MAX_BATCH each). Returns how many were accepted (sent or
 * queued), in order; fewer than n means msgs[return] failed: send it
 * again (alone) to learn why. A failure of msgs[0] returns its -errno as
 * iol_udp_send does. Loop thread. -EINVAL also: msgs NULL with n > 0. */
int iol_udp_send_batch(iol_udp *u, const iol_udp_msg *msgs, unsigned n);
/* Sends len bytes as ceil(len / segment_size) datagrams of segment_size
 * bytes (the last one shorter) to `to`, with UDP_SEGMENT where the kernel
 * has it (one system call, segmentation late in the stack), else with one
 * sendmmsg. Returns the number of datagrams, queued together when the
 * socket is full. Loop thread. -EINVAL: NULL u/data, len 0, segment_size
 * 0, more than IOL_UDP_MAX_GSO_SEGMENTS segments. -EMSGSIZE: len >
 * IOL_UDP_MAX_PAYLOAD - 28 or segment_size bigger than the path allows.
 * Other errors as iol_udp_send. Unix datagram sockets: -EOPNOTSUPP. */
int iol_udp_send_gso(iol_udp *u, const void *data, size_t len, size_t segment_size, const struct sockaddr *to,
                     socklen_t tolen);
/* Datagrams in the send queue (0 for NULL). Loop thread: 0 from another
 * thread while the loop runs (the count is the loop's, read unlocked). */
size_t iol_udp_send_queue_size(const iol_udp *u);

/* fn(u, arg) runs when iol_loop_close releases u (see Lifetime); NULL
 * removes it. Loop thread. -EINVAL: NULL u. -EBADF: closed. -EPERM. */
int iol_udp_set_close_callback(iol_udp *u, iol_udp_close_fn fn, void *arg);
/* Closes the socket now: what the kernel takes at once of the send queue
 * is sent, the rest dropped (counted). Returns how many queued datagrams
 * were dropped. From inside u's receive callback the memory goes once
 * the callback returns; otherwise at once: u must not be used afterwards.
 * The close callback does not run. Loop thread. -EINVAL: NULL. -EPERM
 * (nothing closed). -EBADF: closed already (reachable only from inside
 * its own receive callback, where u still exists). */
int iol_udp_close(iol_udp *u);
/* The socket's fd (for options), -EBADF once closed, -EINVAL for NULL.
 * Loop thread: -EPERM from another thread while the loop runs. */
int iol_udp_fd(const iol_udp *u);
/* u's loop (NULL for NULL). Any thread: fixed at creation, so a thread
 * holding a socket of another loop can post to that loop. */
iol_loop *iol_udp_loop(const iol_udp *u);
/* Fills *out (size = sizeof *out, as iol_loop_get_stats). Loop thread.
 * -EINVAL: NULL u/out, size 0. -EPERM. */
int iol_udp_get_stats(const iol_udp *u, iol_udp_stats *out, size_t size);
/* IOL_UDP_OFFLOAD_* bits this kernel supports (probed once per process
 * on a throwaway socket). Any thread. */
unsigned iol_udp_offload(void);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif /* IOLOOP_H */
