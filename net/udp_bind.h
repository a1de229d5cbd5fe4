/*
 * net/udp_bind.h — the datagram set-up that iol_udp_new (net/udp.c) and
 * the workers' sharded sockets (runtime/udp_shard.c) share: the config
 * check and binding an IP socket.
 */
#ifndef IOL_NET_UDP_BIND_H
#define IOL_NET_UDP_BIND_H

#include "ioloop.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* -EINVAL when cfg's batch, max_datagram, flags or buffer sizes are out
 * of range; 0 otherwise. */
int iol__udp_check_config(const iol_udp_config *cfg);
/* cfg's host (default 0.0.0.0) and port into ss/len; -EINVAL when the
 * host is not a numeric address (iol_udp_address) or v6only is asked for
 * an IPv4 host. */
int iol__udp_bind_address(const iol_udp_config *cfg, struct sockaddr_storage *ss, socklen_t *len);
/* A nonblocking, close-on-exec datagram socket bound at ss (IPV6_V6ONLY
 * set to v6only on IPv6, SO_REUSEPORT when reuseport): *fdp, or -errno
 * with nothing left open. */
int iol__udp_bind(const struct sockaddr_storage *ss, socklen_t len, bool v6only, bool reuseport, int *fdp);
/* The port of an AF_INET or AF_INET6 address, host order. */
uint16_t iol__udp_port_of(const struct sockaddr_storage *ss);

#endif
