/* bench/ — many idle keep-alive connections: each made, asked one
 * request, answered, then left open (what compare http --idle measures
 * the servers' memory with). */
#ifndef IOL_BENCH_IDLE_H
#define IOL_BENCH_IDLE_H

#include <stdint.h>

/* Opens up to n connections to 127.0.0.1:port into fds, one GET / each,
 * and waits for each full reply (5 s at most each). Returns how many are
 * open and answered (their fds are in fds[0..r)), or -errno if none. */
int idle_open(uint16_t port, unsigned n, int *fds);
void idle_close(int *fds, unsigned n);
/* Raises RLIMIT_NOFILE to its hard limit; returns the new soft limit. */
long idle_raise_fd_limit(void);

#endif
