/*
 * udp-echo — echoes every datagram to its sender.
 *
 *   udp-echo --port P [--workers N] [--host H] [--batch B] [--gro] [--peer-affinity]
 *
 * One SO_REUSEPORT socket per worker (iol_runtime_udp_bind): each worker
 * receives its share in batches (one recvmmsg per batch) and answers the
 * whole batch with one sendmmsg. --host defaults to 127.0.0.1 ("::" for
 * every IPv6 and IPv4 address); --port 0 picks a free port. Prints
 * "listening on HOST:PORT" once ready; SIGINT/SIGTERM stop it, with the
 * per-worker counts on stderr.
 */
#include "ioloop.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_BATCH = IOL_UDP_MAX_BATCH };

/* The answers of one batch, per worker thread. */
static _Thread_local iol_udp_msg replies[MAX_BATCH];

static void on_recv(iol_udp *u, const iol_udp_datagram *d, unsigned n, int status, void *arg)
{
    (void)arg;
    if (status < 0) {
        fprintf(stderr, "udp-echo: receive: %s\n", iol_strerror(status));
        return;
    }
    unsigned done = 0;
    while (done < n) {
        unsigned k = 0;
        for (; k < MAX_BATCH && done + k < n; k++) {
            const iol_udp_datagram *x = &d[done + k];
            replies[k] = (iol_udp_msg){ .data = x->data, .len = x->len, .to = x->peer, .tolen = x->peerlen };
        }
        int r = iol_udp_send_batch(u, replies, k);
        if (r < 0 || (unsigned)r < k) {
            /* One answer refused (its peer is unreachable, the queue is
             * full): skip it, UDP's way, and go on with the rest. */
            unsigned skip = r < 0 ? 1 : (unsigned)r + 1;
            done += skip;
            continue;
        }
        done += k;
    }
}

static iol_runtime *rt;
static iol_loop *main_loop;

static void on_signal(int signo, void *arg)
{
    (void)signo;
    (void)arg;
    iol_runtime_stop(rt);
    iol_loop_stop(main_loop);
}

static void usage(const char *name)
{
    fprintf(stderr, "usage: %s --port P [--workers N] [--host H] [--batch B] [--gro] [--peer-affinity]\n", name);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    long port = -1, workers = 1, batch = 0;
    bool gro = false, peer = false;
    static const struct option opts[] = {
        {"port", required_argument, 0, 'p'}, {"workers", required_argument, 0, 'w'},
        {"host", required_argument, 0, 'H'}, {"batch", required_argument, 0, 'b'},
        {"gro", no_argument, 0, 'g'},        {"peer-affinity", no_argument, 0, 'a'},
        {"help", no_argument, 0, 'h'},       {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'p': port = strtol(optarg, NULL, 10); break;
        case 'w': workers = strtol(optarg, NULL, 10); break;
        case 'H': host = optarg; break;
        case 'b': batch = strtol(optarg, NULL, 10); break;
        case 'g': gro = true; break;
        case 'a': peer = true; break;
        case 'h': usage(argv[0]); return 0;
        default: usage(argv[0]); return 2;
        }
    }
    if (port < 0 || port > 65535 || workers < 1 || workers > 4096 || batch < 0 || batch > MAX_BATCH) {
        usage(argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    iol_loop_config lcfg = { 0 };
    if (iol_loop_new(&main_loop, &lcfg) < 0)
        return 1;
    iol_runtime_config rcfg = { .workers = (unsigned)workers, .drain_timeout = 0.5 };
    int r = iol_runtime_new(&rt, &rcfg);
    if (r < 0) {
        fprintf(stderr, "udp-echo: runtime: %s\n", iol_strerror(r));
        return 1;
    }
    iol_udp_config ucfg = { .host = host, .port = (uint16_t)port, .batch = (unsigned)batch,
                            .flags = gro ? IOL_UDP_GRO : 0, .rcvbuf = 4 << 20, .sndbuf = 4 << 20 };
    iol_udp_shard_config scfg = { .udp = &ucfg, .mode = peer ? IOL_UDP_SHARD_PEER : IOL_UDP_SHARD_KERNEL,
                                  .on_recv = on_recv };
    int id = iol_runtime_udp_bind(rt, &scfg);
    if (id < 0) {
        fprintf(stderr, "udp-echo: bind %s:%ld: %s\n", host, port, iol_strerror(id));
        iol_runtime_free(rt);
        return 1;
    }
    if ((r = iol_runtime_start(rt)) < 0) {
        fprintf(stderr, "udp-echo: start: %s\n", iol_strerror(r));
        return 1;
    }
    iol_loop_add_signal(main_loop, SIGINT, on_signal, NULL);
    iol_loop_add_signal(main_loop, SIGTERM, on_signal, NULL);
    printf("listening on %s:%d\n", host, iol_runtime_udp_port(rt, id));
    fflush(stdout);
    iol_loop_start(main_loop);
    iol_runtime_join(rt);
    uint64_t counts[64];
    int n = iol_runtime_udp_counts(rt, id, counts, 64, NULL);
    for (int i = 0; i < n && i < 64; i++)
        fprintf(stderr, "udp-echo: worker %d: %llu datagrams\n", i, (unsigned long long)counts[i]);
    iol_runtime_free(rt);
    iol_loop_close(main_loop, false);
    return 0;
}
