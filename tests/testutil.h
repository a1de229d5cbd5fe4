/* Shared helpers for the Check suites. */
#ifndef IOL_TESTUTIL_H
#define IOL_TESTUTIL_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ioloop.h"

/* $IOL_TEST_SCALE (default 1.0) times n, at least min: stress sizes shrink
 * under sanitizers and valgrind. */
size_t iol_test_scaled(size_t n, size_t min);
/* True when running under valgrind (timing-heavy checks relax). */
int iol_test_under_valgrind(void);
/* Monotonic seconds. */
double iol_test_now(void);
/* Entries of a directory, "." and ".." left out (/proc/self/fd,
 * /proc/self/task); -1 if it cannot be opened. */
int iol_test_dir_entries(const char *path);
/* Runs the suite with CK_FORK and returns the process exit status. */
int iol_test_run(Suite *s);
/* A TCase with a timeout scaled for slow runs (valgrind: x10). */
TCase *iol_test_tcase(const char *name, double timeout_s);

/* For hot loops: Check's ck_assert writes a mark point to a pipe on every
 * pass in fork mode, which would dominate the run time. */
#define HOT_ASSERT(e)                                                 \
    do {                                                              \
        if (__builtin_expect(!(e), 0))                                \
            ck_abort_msg("%s:%d: %s", __FILE__, __LINE__, #e);        \
    } while (0)

/* ------------------------------------------------ Certificates
 * Made at run time with the openssl CLI in temporary directories (no key
 * is committed); EC P-256 keys (quick). */

/* Whether `command -v name` finds the program. */
bool iol_test_have_program(const char *name);
/* A self-signed server certificate for 127.0.0.1 / localhost, made with
 * the openssl CLI into a new temporary directory: dir (size >= 64) gets
 * its path, holding cert.pem and key.pem. 0, or -1 when the CLI is
 * missing or fails. */
int iol_test_make_cert(char *dir, size_t size);
/* The certificate and key files of one such certificate, made once per
 * process on first use and removed at that process's exit (a fork's
 * child reuses it and leaves it); NULL when the openssl CLI is missing or
 * fails. */
const char *iol_test_localhost_cert(void);
const char *iol_test_localhost_key(void);
/* The CA set, made in a new temporary directory (iol_test_certs_dir):
 *   ca.pem/.key         the test CA; other-ca.pem/.key an unrelated one
 *   a.pem/.key          CN=a.test, SAN DNS:a.test,DNS:localhost,IP:127.0.0.1 (by ca)
 *   b.pem/.key          CN=b.test, SAN DNS:b.test (by ca)
 *   expired.pem/.key    a.test, expired a day ago (by ca)
 *   future.pem/.key     a.test, valid from 2099 (by ca)
 *   self.pem/.key       a.test, self-signed
 *   client.pem/.key     CN=client-1, SAN email:client-1@a.test (by ca)
 *   rogue.pem/.key      CN=rogue (by other-ca)
 * false if the openssl CLI failed. */
bool iol_test_certs_make(void);
/* Whether the library was built with TLS (iol_tls_ctx_new does not say
 * -ENOTSUP). */
bool iol_test_build_has_tls(void);
/* main's set-up for a suite that needs the CA set: 0 once made; 77
 * (meson: skipped; a line says why) without TLS in the build or without
 * the openssl CLI; 1 when making them failed. */
int iol_test_certs_setup(const char *suite);
/* That directory; dir/name (a rotating static buffer: 8 in use at once). */
const char *iol_test_certs_dir(void);
const char *iol_test_cert_path(const char *name);
/* The file's bytes, NUL-ended (malloc'd; NULL if unreadable). */
char *iol_test_cert_read(const char *name, size_t *len);
/* Removes the directory. */
void iol_test_certs_remove(void);

/* Log capture: iol_test_log_capture sets the library's log handler to one
 * that appends "LEVEL message\n" lines to a buffer (16 KiB; what does
 * not fit is dropped) and empties it; any thread may log. Then: whether
 * a line holds needle, how many times needle occurs, the level of the
 * first line holding it (-1: none), and the text (for failure messages). */
void iol_test_log_capture(void);
bool iol_test_log_has(const char *needle);
int iol_test_log_count(const char *needle);
int iol_test_log_level_of(const char *needle);
const char *iol_test_log_text(void);

/* eventfd writes made to wake loop (iol_loop_get_stats). */
uint64_t iol_test_wakeups(const iol_loop *loop);

/* A random pause of 0..63 compiler-barrier spins, or a sched_yield one
 * time in 16: shakes up interleavings in lost-wakeup hunters. *rng is a
 * nonzero xorshift32 state. */
void iol_test_tiny_delay(uint32_t *rng);

/* ------------------------------------------------ Stream fixture
 * A loop, a connected pair, a stream on one end, TLS contexts: the setup
 * the stream suites share (libuv's task.h). Each helper fails the test
 * (ck_assert) rather than returning an error. */

/* A loop on $IOL_POLLER (so `meson test --setup uring` covers it). */
iol_loop *iol_test_loop_new(void);
/* Runs loop until a callback stops it; fails the test after `limit`
 * seconds (x10 under valgrind). */
void iol_test_loop_run(iol_loop *loop, double limit);
/* A connected pair: AF_UNIX socketpair (tcp false) or TCP over loopback
 * (tcp true: fds[0] the client, fds[1] the accepted side). CLOEXEC,
 * blocking. */
void iol_test_socket_pair(int fds[2], bool tcp);
/* A stream on fds[0] of a new pair; *peer gets the other end. */
iol_stream *iol_test_stream_pair(iol_loop *loop, bool tcp, int *peer);
/* Writes all of data to a blocking fd. */
void iol_test_write_all(int fd, const void *data, size_t len);
/* TLS: a self-signed certificate for "localhost" made once per process
 * (iol_test_localhost_cert), a server context on it
 * and a client context that does not verify. false: built without TLS
 * (or no openssl CLI): the caller skips. The files go at process exit. */
bool iol_test_tls_ctxs(iol_tls_ctx **server, iol_tls_ctx **client);
/* The same for a test that must run in a TLS build: there, no contexts
 * fail the test; in a build without TLS false (the caller skips). */
bool iol_test_need_tls_ctxs(iol_tls_ctx **server, iol_tls_ctx **client);
/* Two TLS streams over a new socketpair on loop: *srv (iol_tls_stream_new)
 * and *cli (iol_stream_start_tls as a client, with cb, arg: may be NULL),
 * handshake under way. */
void iol_test_tls_pair(iol_loop *loop, iol_tls_ctx *server, iol_tls_ctx *client, iol_stream **srv, iol_stream **cli,
                       iol_connect_fn cb, void *arg);

#endif
