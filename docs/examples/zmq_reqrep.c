/* docs/examples/zmq_reqrep.c — ZeroMQ sockets as loop handlers.
 *
 * A REP socket answers on the loop; a client thread sends 1000 requests
 * with a plain blocking REQ socket, then shuts the context down. The loop
 * notices the termination (ETERM) and iol_loop_start returns 0, as after
 * a stop; the program then removes the handler, closes the socket and
 * terminates the context, in that order. Run it with IOL_POLLER=zmq for
 * the zmq poller, or as is for epoll (ZMQ_FD plus a re-check).
 * Build: add $(pkg-config --cflags --libs libzmq). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include <ioloop.h>

#define REQUESTS 1000

static void *ctx;
static unsigned answered;

/* Level-triggered: runs while a request can be received. */
static void on_request(void *rep, unsigned events, void *arg)
{
    (void)events, (void)arg;
    char buf[64];
    int len = zmq_recv(rep, buf, sizeof buf, ZMQ_DONTWAIT);
    if (len < 0)
        return;                                   /* EAGAIN: nothing after all */
    zmq_send(rep, buf, (size_t)len, ZMQ_DONTWAIT);  /* echo it back */
    answered++;
}

static void *client(void *arg)
{
    void *req = zmq_socket(ctx, ZMQ_REQ);
    zmq_connect(req, arg);
    for (int i = 0; i < REQUESTS; i++) {
        char buf[16];
        zmq_send(req, "ping", 4, 0);
        zmq_recv(req, buf, sizeof buf, 0);
    }
    zmq_close(req);
    zmq_ctx_shutdown(ctx);  /* the loop's next look at its socket says ETERM */
    return NULL;
}

int main(void)
{
    ctx = zmq_ctx_new();
    void *rep = zmq_socket(ctx, ZMQ_REP);
    char endpoint[64] = "tcp://127.0.0.1:*";
    size_t len = sizeof endpoint;
    zmq_bind(rep, endpoint);
    zmq_getsockopt(rep, ZMQ_LAST_ENDPOINT, endpoint, &len);

    iol_loop *loop;
    if (iol_loop_new(&loop, NULL) < 0)
        return 1;
    int err = iol_loop_add_zmq_handler(loop, rep, IOL_READ, on_request, NULL);
    if (err < 0) {
        fprintf(stderr, "add_zmq_handler: %s\n", iol_strerror(err));  /* -ENOTSUP: built without libzmq */
        return 1;
    }
    pthread_t t;
    pthread_create(&t, NULL, client, endpoint);
    int rc = iol_loop_start(loop);  /* 0 once the context is shut down */
    pthread_join(t, NULL);

    iol_loop_remove_zmq_handler(loop, rep);  /* 1. the handler (iol_loop_close would too) */
    iol_loop_close(loop, false);
    int zero = 0;
    zmq_setsockopt(rep, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(rep);                          /* 2. the sockets */
    zmq_ctx_term(ctx);                       /* 3. the context: returns at once */
    printf("poller %s: %u requests answered, start returned %d\n", getenv("IOL_POLLER") ? getenv("IOL_POLLER") : "epoll",
           answered, rc);
    return rc == 0 && answered == REQUESTS ? 0 : 1;
}
