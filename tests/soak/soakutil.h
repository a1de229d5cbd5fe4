/* Helpers shared by the soak programs: clocks, starting an example server
 * as a child, small blocking HTTP clients, /proc readings. */
#ifndef IOL_SOAKUTIL_H
#define IOL_SOAKUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

double soak_now(void);
void soak_sleep(double seconds);

/* Path of an example next to this build: dir(/proc/self/exe)/../../examples/NAME. */
int soak_example_path(const char *name, char *buf, size_t len);

typedef struct soak_server {
    pid_t pid;
    uint16_t port;
    int out_fd; /* the child's stdout (drained by soak_server_drain) */
} soak_server;

/* Starts path with argv (argv[0] included, NULL-terminated) under an
 * RLIMIT_NOFILE of nofile (0: unchanged), waits up to timeout seconds for
 * its "listening on HOST:PORT" line. The child dies with us
 * (PR_SET_PDEATHSIG). 0 or -errno. */
int soak_server_start(soak_server *s, const char *path, char *const argv[], unsigned nofile, double timeout);
/* Reads and discards what the child printed (non-blocking). */
void soak_server_drain(soak_server *s);
/* Sends sig, waits up to timeout for the exit; returns the wait status,
 * or -ETIMEDOUT (the child is then SIGKILLed and reaped). */
int soak_server_stop(soak_server *s, int sig, double timeout);

/* utime + stime of pid in seconds, from /proc/PID/stat; < 0 on error. */
double soak_proc_cpu(pid_t pid);
/* Resident set of this process in bytes, from /proc/self/statm. */
uint64_t soak_rss_bytes(void);
/* Open fds of pid (entries of /proc/PID/fd); < 0 on error. */
int soak_proc_fds(pid_t pid);

/* A blocking TCP connect to 127.0.0.1:port with a timeout; fd or -errno. */
int soak_connect(uint16_t port, double timeout);
/* Writes all of buf; 0 or -errno. */
int soak_write_all(int fd, const void *buf, size_t len);
/* One GET on a fresh connection: the status code (e.g. 200) or -errno. */
int soak_http_get(uint16_t port, double timeout);

#endif
