/* zmq-pipeline: ZeroMQ's "divide and conquer" on a runtime.
 *
 *   zmq-pipeline [--workers N] [--messages M] [--transport inproc|ipc|tcp] [--poller zmq|epoll|...]
 *
 * A ventilator (PUSH, on the main thread's loop) deals M tasks to the
 * runtime's N workers; each worker owns a PULL for tasks and a PUSH for
 * results (made in on_start, on its own thread: zmq sockets are not
 * thread-safe), squares the task's number and pushes the result to the
 * sink (PULL, on the main loop), which checks the sum and prints how the
 * tasks spread over the workers. Exits 0 when every result arrived and
 * the sum is right.
 *
 * Shutdown order (so zmq_ctx_term does not hang): workers remove their
 * handlers in on_drain and close their sockets in on_stop; the main loop's handlers
 * go with iol_loop_close; then the main sockets close; then the context. */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "ioloop.h"

#define MAX_WORKERS 256

typedef struct task_result {
    uint32_t worker, task;
    uint64_t square;
} task_result;

typedef struct worker {
    void *tasks, *results;
} worker;

static void *ctx;
static char tasks_endpoint[256], results_endpoint[256];
static worker workers[MAX_WORKERS];

/* ------------------------------------------------------------- workers */

static void on_task(void *socket, unsigned events, void *arg)
{
    (void)events;
    worker *w = arg;
    uint32_t n;
    /* One task per call: the loop calls again while more are queued. */
    if (zmq_recv(socket, &n, sizeof n, ZMQ_DONTWAIT) != (int)sizeof n)
        return;
    task_result r = { .worker = (uint32_t)(w - workers), .task = n, .square = (uint64_t)n * n };
    /* Blocking send: the sink's HWM is the back-pressure. */
    if (zmq_send(w->results, &r, sizeof r, 0) != (int)sizeof r)
        fprintf(stderr, "zmq-pipeline: worker send: %s\n", zmq_strerror(zmq_errno()));
}

static void worker_start(iol_loop *loop, unsigned index, void *arg)
{
    (void)arg;
    worker *w = &workers[index];
    w->tasks = zmq_socket(ctx, ZMQ_PULL);
    w->results = zmq_socket(ctx, ZMQ_PUSH);
    if (zmq_connect(w->tasks, tasks_endpoint) < 0 || zmq_connect(w->results, results_endpoint) < 0) {
        fprintf(stderr, "zmq-pipeline: worker %u connect: %s\n", index, zmq_strerror(zmq_errno()));
        exit(1);
    }
    int err = iol_loop_add_zmq_handler(loop, w->tasks, IOL_READ, on_task, w);
    if (err < 0) {
        fprintf(stderr, "zmq-pipeline: add_zmq_handler: %s\n", iol_strerror(err));
        exit(1);
    }
}

/* The runtime's drain lasts while handlers remain: a zmq socket is no
 * connection to finish, so its handler goes at once. */
static void worker_drain(iol_loop *loop, unsigned index, void *arg)
{
    (void)arg;
    iol_loop_remove_zmq_handler(loop, workers[index].tasks);
}

static void worker_stop(iol_loop *loop, unsigned index, void *arg)
{
    (void)arg;
    worker *w = &workers[index];
    iol_loop_remove_zmq_handler(loop, w->tasks); /* before zmq_close (-ENOENT after the drain) */
    int zero = 0;
    zmq_setsockopt(w->tasks, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(w->tasks);
    zmq_close(w->results);
}

/* ------------------------------------------------- ventilator and sink */

typedef struct main_state {
    iol_loop *loop;
    uint32_t messages, sent, received;
    uint64_t sum;
    uint64_t per_worker[MAX_WORKERS];
} main_state;

static void on_ventilator_writable(void *socket, unsigned events, void *arg)
{
    (void)events;
    main_state *m = arg;
    while (m->sent < m->messages) {
        if (zmq_send(socket, &m->sent, sizeof m->sent, ZMQ_DONTWAIT) < 0)
            return; /* EAGAIN: the HWM is full; IOL_WRITE calls again */
        m->sent++;
    }
    iol_loop_remove_zmq_handler(m->loop, socket); /* all dealt */
}

static void on_result(void *socket, unsigned events, void *arg)
{
    (void)events;
    main_state *m = arg;
    task_result r;
    while (zmq_recv(socket, &r, sizeof r, ZMQ_DONTWAIT) == (int)sizeof r) {
        m->sum += r.square;
        if (r.worker < MAX_WORKERS)
            m->per_worker[r.worker]++;
        if (++m->received == m->messages)
            iol_loop_stop(m->loop);
    }
}

static void *bind_socket(int type, const char *transport, const char *name, char *endpoint, size_t len)
{
    void *s = zmq_socket(ctx, type);
    if (strcmp(transport, "tcp") == 0)
        snprintf(endpoint, len, "tcp://127.0.0.1:*");
    else if (strcmp(transport, "ipc") == 0)
        snprintf(endpoint, len, "ipc:///tmp/iol-zmq-pipeline-%d-%s", (int)getpid(), name);
    else
        snprintf(endpoint, len, "inproc://%s", name);
    if (zmq_bind(s, endpoint) < 0 || zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, endpoint, &len) < 0) {
        fprintf(stderr, "zmq-pipeline: bind %s: %s\n", endpoint, zmq_strerror(zmq_errno()));
        exit(1);
    }
    return s;
}

static void usage(void)
{
    fprintf(stderr, "usage: zmq-pipeline [--workers N] [--messages M] [--transport inproc|ipc|tcp] [--poller NAME]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    unsigned nworkers = 2;
    uint32_t messages = 100000;
    const char *transport = "inproc", *poller = NULL;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        if (strcmp(argv[i], "--workers") == 0)
            nworkers = (unsigned)atoi(argv[++i]);
        else if (strcmp(argv[i], "--messages") == 0)
            messages = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--transport") == 0)
            transport = argv[++i];
        else if (strcmp(argv[i], "--poller") == 0)
            poller = argv[++i];
        else
            usage();
    }
    if (nworkers < 1 || nworkers > MAX_WORKERS || messages < 1 ||
        (strcmp(transport, "inproc") && strcmp(transport, "ipc") && strcmp(transport, "tcp")))
        usage();

    ctx = zmq_ctx_new();
    static main_state m;
    m.messages = messages;
    void *ventilator = bind_socket(ZMQ_PUSH, transport, "tasks", tasks_endpoint, sizeof tasks_endpoint);
    void *sink = bind_socket(ZMQ_PULL, transport, "results", results_endpoint, sizeof results_endpoint);

    iol_loop_config lcfg = { .poller = poller };
    iol_runtime_config rcfg = { .workers = nworkers, .poller = poller, .on_start = worker_start, .on_stop = worker_stop,
                              .on_drain = worker_drain };
    iol_runtime *rt;
    int err = iol_loop_new(&m.loop, &lcfg);
    if (err == 0)
        err = iol_runtime_new(&rt, &rcfg);
    if (err < 0) {
        fprintf(stderr, "zmq-pipeline: %s (poller %s)\n", iol_strerror(err), poller ? poller : "default");
        return 1;
    }
    if ((err = iol_runtime_start(rt)) < 0 ||
        (err = iol_loop_add_zmq_handler(m.loop, sink, IOL_READ, on_result, &m)) < 0 ||
        (err = iol_loop_add_zmq_handler(m.loop, ventilator, IOL_WRITE, on_ventilator_writable, &m)) < 0) {
        fprintf(stderr, "zmq-pipeline: %s\n", iol_strerror(err));
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    err = iol_loop_start(m.loop);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;

    iol_runtime_free(rt); /* workers close their sockets in on_stop */
    iol_loop_close(m.loop, false); /* removes the main loop's zmq handlers */
    zmq_close(ventilator);
    zmq_close(sink);
    zmq_ctx_term(ctx);

    uint64_t expect = 0;
    for (uint64_t n = 0; n < messages; n++)
        expect += n * n;
    printf("%u tasks over %s by %u workers (poller %s) in %.3f s: %.0f tasks/s\n", messages, transport, nworkers,
           poller ? poller : "default", seconds, messages / seconds);
    printf("tasks per worker:");
    for (unsigned i = 0; i < nworkers; i++)
        printf(" %llu", (unsigned long long)m.per_worker[i]);
    printf("\nsum of squares: %llu (%s)\n", (unsigned long long)m.sum, m.sum == expect ? "ok" : "WRONG");
    return err == 0 && m.received == messages && m.sum == expect ? 0 : 1;
}
