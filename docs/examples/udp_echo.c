/* docs/examples/udp_echo.c — datagrams: an echo server sharded over two
 * workers (one SO_REUSEPORT socket each), and a client on main()'s loop
 * that sends three datagrams in one batch and waits for the echoes.
 *
 * Server: every batch the kernel has (one recvmmsg) is answered with one
 * sendmmsg. Client: an iol_udp on 127.0.0.1, receiving in batches too. */
#include <stdio.h>
#include <string.h>

#include <ioloop.h>

/* ---- server: on the worker whose socket the datagrams reached ---- */

static void echo(iol_udp *u, const iol_udp_datagram *d, unsigned n, int status, void *arg)
{
    (void)arg;
    if (status < 0)
        return; /* an error the socket reported; receiving goes on */
    iol_udp_msg replies[64];
    for (unsigned done = 0; done < n;) {
        unsigned k = 0;
        for (; k < 64 && done + k < n; k++)
            replies[k] = (iol_udp_msg){ .data = d[done + k].data, .len = d[done + k].len,
                                        .to = d[done + k].peer, .tolen = d[done + k].peerlen };
        int r = iol_udp_send_batch(u, replies, k); /* copies only what must wait */
        done += r > 0 ? (unsigned)r : 1;            /* a refused answer is skipped */
    }
}

/* ---- client: main()'s loop ---- */

typedef struct client {
    iol_loop *loop;
    int echoed;
} client;

static void on_echo(iol_udp *u, const iol_udp_datagram *d, unsigned n, int status, void *arg)
{
    (void)u;
    client *c = arg;
    for (unsigned i = 0; status == 0 && i < n; i++) {
        printf("client: echo \"%.*s\"\n", (int)d[i].len, d[i].data);
        if (++c->echoed == 3)
            iol_loop_stop(c->loop);
    }
}

static void give_up(void *arg)
{
    iol_loop_stop(((client *)arg)->loop);
}

int main(void)
{
    iol_runtime *rt;
    iol_runtime_config rcfg = { .workers = 2 };
    if (iol_runtime_new(&rt, &rcfg) < 0)
        return 1;
    iol_udp_config scfg = { .host = "127.0.0.1" }; /* port 0: one ephemeral port for the group */
    iol_udp_shard_config shard = { .udp = &scfg, .mode = IOL_UDP_SHARD_KERNEL, .on_recv = echo };
    int id = iol_runtime_udp_bind(rt, &shard);
    if (id < 0 || iol_runtime_start(rt) < 0)
        return 1;

    client c = { 0 };
    iol_loop_config lcfg = { 0 };
    iol_udp *u;
    iol_udp_config ccfg = { .host = "127.0.0.1" };
    struct sockaddr_storage server;
    socklen_t len;
    if (iol_loop_new(&c.loop, &lcfg) < 0 || iol_udp_new(&u, c.loop, &ccfg) < 0 ||
        iol_udp_address("127.0.0.1", (uint16_t)iol_runtime_udp_port(rt, id), &server, &len) < 0 ||
        iol_udp_recv_start(u, on_echo, &c) < 0)
        return 1;
    static const char *const words[] = { "one", "two", "three" };
    iol_udp_msg m[3];
    for (int i = 0; i < 3; i++)
        m[i] = (iol_udp_msg){ .data = words[i], .len = strlen(words[i]), .to = (struct sockaddr *)&server,
                              .tolen = len };
    if (iol_udp_send_batch(u, m, 3) != 3) /* one sendmmsg */
        return 1;
    iol_loop_call_later(c.loop, 5.0, give_up, &c, NULL);
    iol_loop_start(c.loop);
    printf("client: %d of 3 echoed\n", c.echoed);

    iol_udp_close(u);
    iol_loop_close(c.loop, false);
    iol_runtime_free(rt); /* each worker closes its socket at stop */
    return c.echoed == 3 ? 0 : 1;
}
