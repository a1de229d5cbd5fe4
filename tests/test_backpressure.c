/* Backpressure on streams: pause/resume reading, write watermarks, and
 * read_until with max_bytes. Each test is a short story on one loop; every
 * stream is closed and the loop run until it freed itself, so leak checks
 * are exact. */
#include "ioloop.h"
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ----------------------------------------------------------------- Helpers */

static void on_safety_timeout(void *arg)
{
    ck_abort_msg("loop did not stop in time");
    iol_loop_stop(arg);
}

/* Runs loop until a callback stops it; fails if that takes too long. */
static void run_loop(iol_loop *loop, double limit)
{
    iol_timeout t = 0;
    if (iol_test_under_valgrind())
        limit *= 10;
    ck_assert_int_eq(iol_loop_call_later(loop, limit, on_safety_timeout, loop, &t), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    iol_loop_remove_timeout(loop, t);
}

static iol_loop *new_loop(void)
{
    iol_loop *loop = NULL;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    return loop;
}

static void make_pair(int fds[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
}

static void stop_on_close(iol_stream *s, void *arg)
{
    (void)s;
    iol_loop_stop(arg);
}

/* Resident set size of this process in bytes. */
static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    ck_assert_ptr_nonnull(f);
    unsigned long size = 0, resident = 0;
    ck_assert_int_eq(fscanf(f, "%lu %lu", &size, &resident), 2);
    fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* ------------------------------------------------------- Pause and resume */

typedef struct pause_story {
    iol_loop *loop;
    iol_stream *s;
    int peer;
    bool in_call;
    int reads;
    char lines[4][16];
} pause_story;

static void pause_on_line(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    pause_story *p = arg;
    ck_assert(!p->in_call);
    ck_assert_int_eq(status, 0);
    ck_assert_uint_lt(len, sizeof(p->lines[0]));
    memcpy(p->lines[p->reads], data, len);
    p->lines[p->reads][len] = '\0';
    p->reads++;
    if (p->reads == 1) {
        /* Paused inside a callback: the second line, already buffered,
         * must wait for resume. */
        ck_assert_int_eq(iol_stream_pause_reading(s), 0);
        ck_assert_int_eq(iol_stream_pause_reading(s), 0); /* twice: nothing */
        ck_assert_int_eq(iol_stream_read_until(s, "\n", pause_on_line, p), 0);
    } else if (p->reads == 3) {
        ck_assert_int_eq(iol_stream_close(s), 0);
    } else {
        ck_assert_int_eq(iol_stream_read_until(s, "\n", pause_on_line, p), 0);
    }
}

static void pause_check_and_resume(void *arg)
{
    pause_story *p = arg;
    ck_assert_int_eq(p->reads, 1); /* nothing was delivered while paused */
    /* Paused also means the socket is not read: the third line sits in
     * the kernel until resume. */
    iol_test_write_all(p->peer, "three\n", 6);
    p->in_call = true;
    ck_assert_int_eq(iol_stream_resume_reading(p->s), 0);
    ck_assert_int_eq(iol_stream_resume_reading(p->s), 0);
    p->in_call = false;
}

START_TEST(pause_holds_reads_until_resume)
{
    pause_story p = {.loop = new_loop()};
    int fds[2];
    make_pair(fds);
    p.peer = fds[1];
    ck_assert_int_eq(iol_stream_new(&p.s, p.loop, fds[0], 0), 0);
    ck_assert_int_eq(iol_stream_set_close_callback(p.s, stop_on_close, p.loop), 0);
    iol_test_write_all(p.peer, "one\ntwo\n", 8);
    ck_assert_int_eq(iol_stream_read_until(p.s, "\n", pause_on_line, &p), 0);
    ck_assert_int_eq(iol_loop_call_later(p.loop, 0.1, pause_check_and_resume, &p, NULL), 0);
    run_loop(p.loop, 10);
    ck_assert_int_eq(p.reads, 3);
    ck_assert_str_eq(p.lines[0], "one\n");
    ck_assert_str_eq(p.lines[1], "two\n");
    ck_assert_str_eq(p.lines[2], "three\n");
    close(p.peer);
    ck_assert_int_eq(iol_loop_close(p.loop, false), 0);
}
END_TEST

/* A paused stream leaves the socket alone: the kernel's buffers fill and
 * the peer's writes stop (EAGAIN) instead of the stream's buffer growing. */
static void pause_probe(void *arg)
{
    pause_story *p = arg;
    static char block[64 << 10];
    size_t pushed = 0;
    for (;;) {
        ssize_t n = write(p->peer, block, sizeof(block));
        if (n < 0) {
            ck_assert(errno == EAGAIN || errno == EWOULDBLOCK);
            break;
        }
        pushed += (size_t)n;
        ck_assert_uint_lt(pushed, 64u << 20); /* the kernel would have pushed back long ago */
    }
    p->reads = (int)(pushed >> 10);
    ck_assert_int_eq(iol_stream_close(p->s), 0);
}

static void pause_count(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)s, (void)data;
    pause_story *p = arg;
    /* Only the close's failure reaches a paused read, never data. */
    ck_assert_int_eq(status, -EPIPE);
    ck_assert_uint_eq(len, 0);
    p->lines[0][0] = 'x';
}

START_TEST(paused_stream_lets_the_kernel_push_back)
{
    pause_story p = {.loop = new_loop()};
    int fds[2];
    make_pair(fds);
    p.peer = fds[1];
    ck_assert_int_eq(iol_stream_new(&p.s, p.loop, fds[0], 0), 0);
    ck_assert_int_eq(iol_stream_new(&(iol_stream *){0}, p.loop, fds[0], 0), -EEXIST);
    ck_assert_int_eq(iol_stream_set_close_callback(p.s, stop_on_close, p.loop), 0);
    ck_assert_int_eq(iol_stream_pause_reading(p.s), 0);
    ck_assert_int_eq(iol_stream_read_bytes(p.s, 1, true, pause_count, &p), 0);
    int flags = 1;
    ck_assert_int_eq(ioctl(p.peer, FIONBIO, &flags), 0);
    ck_assert_int_eq(iol_loop_call_later(p.loop, 0.05, pause_probe, &p, NULL), 0);
    run_loop(p.loop, 10);
    ck_assert_int_gt(p.reads, 0);
    ck_assert_int_eq(p.lines[0][0], 'x');
    close(p.peer);
    ck_assert_int_eq(iol_loop_close(p.loop, false), 0);
}
END_TEST

/* ------------------------------------------------------ read_until max_bytes */

typedef struct max_story {
    iol_loop *loop;
    int statuses[4];
    size_t lens[4];
    int reads;
    int closes;
    int close_error;
} max_story;

static void max_on_read(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)data;
    max_story *m = arg;
    m->statuses[m->reads] = status;
    m->lens[m->reads] = len;
    m->reads++;
    if (status == 0)
        ck_assert_int_eq(iol_stream_read_until_max(s, "\r\n", 8, max_on_read, m), 0);
}

static void max_on_close(iol_stream *s, void *arg)
{
    max_story *m = arg;
    m->closes++;
    m->close_error = iol_stream_error(s);
    iol_loop_stop(m->loop);
}

/* A line that fits (exactly max_bytes with its delimiter) is read; one
 * whose delimiter ends past max_bytes fails with -EMSGSIZE and closes. */
static void run_max_story(const char *input, max_story *m)
{
    m->loop = new_loop();
    int fds[2];
    make_pair(fds);
    iol_stream *s;
    ck_assert_int_eq(iol_stream_new(&s, m->loop, fds[0], 0), 0);
    ck_assert_int_eq(iol_stream_set_close_callback(s, max_on_close, m), 0);
    ck_assert_int_eq(iol_stream_read_until_max(s, "\r\n", 1, max_on_read, m), -EINVAL); /* < delim */
    ck_assert_int_eq(iol_stream_read_until_max(s, "\r\n", 8, max_on_read, m), 0);
    ck_assert_int_eq(iol_stream_read_until_max(s, "\r\n", 8, max_on_read, m), -EBUSY);
    iol_test_write_all(fds[1], input, strlen(input));
    run_loop(m->loop, 10);
    close(fds[1]);
    ck_assert_int_eq(iol_loop_close(m->loop, false), 0);
}

START_TEST(read_until_max_bytes)
{
    max_story m = {0};
    run_max_story("123456\r\nabcdefg\r\n", &m); /* 8 bytes fit, 9 do not */
    ck_assert_int_eq(m.reads, 2);
    ck_assert_int_eq(m.statuses[0], 0);
    ck_assert_uint_eq(m.lens[0], 8);
    ck_assert_int_eq(m.statuses[1], -EMSGSIZE);
    ck_assert_int_eq(m.closes, 1);
    ck_assert_int_eq(m.close_error, -EMSGSIZE);
}
END_TEST

START_TEST(read_until_max_bytes_without_delimiter)
{
    /* No delimiter in the first 8 bytes: known to fail at once, without
     * waiting for more (the peer keeps the connection open). */
    max_story m = {0};
    run_max_story("0123456789", &m);
    ck_assert_int_eq(m.reads, 1);
    ck_assert_int_eq(m.statuses[0], -EMSGSIZE);
    ck_assert_int_eq(m.close_error, -EMSGSIZE);
}
END_TEST

/* ------------------------------------------------------------- Watermarks */

typedef struct wm_story {
    iol_loop *loop;
    iol_stream *s;
    int peer;
    bool in_call;
    int above, below;
    bool last_above;
} wm_story;

static void wm_count(iol_stream *s, bool above, void *arg)
{
    wm_story *w = arg;
    ck_assert_ptr_eq(s, w->s);
    ck_assert(!w->in_call); /* never inside iol_stream_write */
    ck_assert(above != w->last_above); /* strictly alternating, starting with "above" */
    w->last_above = above;
    if (above)
        w->above++;
    else
        w->below++;
}

static void wm_drain_peer(int fd, unsigned events, void *arg)
{
    (void)events;
    wm_story *w = arg;
    char buf[64 << 10];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    if (w->below > 0) {
        iol_loop_remove_handler(w->loop, fd);
        ck_assert_int_eq(iol_stream_close(w->s), 0);
    }
}

static void wm_start_draining(void *arg)
{
    wm_story *w = arg;
    ck_assert_int_eq(w->above, 1);
    ck_assert_int_eq(w->below, 0);
    ck_assert_int_eq(iol_loop_add_handler(w->loop, w->peer, IOL_READ, wm_drain_peer, w), 0);
}

START_TEST(watermarks_alternate_outside_write)
{
    wm_story w = {.loop = new_loop()};
    int fds[2];
    make_pair(fds);
    w.peer = fds[1];
    int on = 1;
    ck_assert_int_eq(ioctl(w.peer, FIONBIO, &on), 0);
    ck_assert_int_eq(iol_stream_new(&w.s, w.loop, fds[0], 0), 0);
    ck_assert_int_eq(iol_stream_set_close_callback(w.s, stop_on_close, w.loop), 0);
    ck_assert_int_eq(iol_stream_set_write_watermarks(w.s, 0, 0, wm_count, &w), -EINVAL);
    ck_assert_int_eq(iol_stream_set_write_watermarks(w.s, 10, 20, wm_count, &w), -EINVAL);
    ck_assert_int_eq(iol_stream_set_write_watermarks(w.s, 0, 0, NULL, NULL), 0); /* none */
    ck_assert_int_eq(iol_stream_set_write_watermarks(w.s, 256 << 10, 64 << 10, wm_count, &w), 0);

    static char big[1 << 20];
    w.in_call = true;
    ck_assert_int_eq(iol_stream_write(w.s, big, sizeof(big), NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_write(w.s, big, 1000, NULL, NULL), 0);
    w.in_call = false;
    ck_assert_uint_gt(iol_stream_write_buffer_size(w.s), 256 << 10);
    ck_assert_int_eq(iol_loop_call_later(w.loop, 0.05, wm_start_draining, &w, NULL), 0);
    run_loop(w.loop, 10);
    ck_assert_int_eq(w.above, 1);
    ck_assert_int_eq(w.below, 1);
    ck_assert_int_eq(iol_stream_set_write_watermarks(NULL, 1, 0, wm_count, &w), -EINVAL);
    close(w.peer);
    ck_assert_int_eq(iol_loop_close(w.loop, false), 0);
}
END_TEST

/* ----------------------------------------------- A producer bounded by RSS */

/* The server writes `total` bytes (1 GiB, scaled) to a client process that
 * reads nothing until the server has stalled on the high watermark, then
 * everything. A producer that honours the watermarks keeps the server's
 * RSS under 2 x high plus a constant the whole time; one that ignored them
 * would buffer the whole total. */
enum { PRODUCER_HIGH = 4 << 20, PRODUCER_LOW = 1 << 20, PRODUCER_CHUNK = 64 << 10 };
#define RSS_SLACK ((size_t)16 << 20) /* allocator and loop overheads */

typedef struct producer {
    iol_loop *loop;
    iol_stream *s;
    int go_fd; /* one byte lets the client start reading */
    size_t total, queued;
    size_t rss_base, rss_max;
    int above, below;
    bool client_reading;
    char chunk[PRODUCER_CHUNK];
} producer;

static void producer_sample(producer *p)
{
    size_t rss = rss_bytes();
    if (rss > p->rss_max)
        p->rss_max = rss;
}

static void producer_last_done(void *arg)
{
    producer *p = arg;
    ck_assert_int_eq(iol_stream_close(p->s), 0); /* everything reached the kernel */
}

static void producer_fill(producer *p)
{
    while (p->queued < p->total && iol_stream_write_buffer_size(p->s) <= PRODUCER_HIGH) {
        size_t n = p->total - p->queued < PRODUCER_CHUNK ? p->total - p->queued : PRODUCER_CHUNK;
        p->queued += n;
        bool last = p->queued == p->total;
        ck_assert_int_eq(iol_stream_write(p->s, p->chunk, n, last ? producer_last_done : NULL, p), 0);
    }
    producer_sample(p);
}

static void producer_let_client_read(void *arg)
{
    producer *p = arg;
    producer_sample(p); /* stalled: the buffer sits at its fullest */
    iol_test_write_all(p->go_fd, "g", 1);
    p->client_reading = true;
}

static void producer_on_watermark(iol_stream *s, bool above, void *arg)
{
    (void)s;
    producer *p = arg;
    producer_sample(p);
    if (above) {
        p->above++;
        if (!p->client_reading && p->above == 1)
            ck_assert_int_eq(iol_loop_call_later(p->loop, 0.2, producer_let_client_read, p, NULL), 0);
    } else {
        p->below++;
        producer_fill(p);
    }
}

/* The client: waits for "go", then reads to EOF; exit status 0 when it
 * got exactly total bytes. */
static void client_process(int fd, int go_fd, size_t total)
{
    char c;
    if (read(go_fd, &c, 1) != 1)
        _exit(2);
    static char buf[256 << 10];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0)
            _exit(3);
        if (n == 0)
            break;
        got += (size_t)n;
    }
    _exit(got == total ? 0 : 1);
}

START_TEST(watermarks_bound_server_memory)
{
    static producer p;
    p.total = iol_test_scaled((size_t)1 << 30, 32u << 20);
    int fds[2], go[2];
    make_pair(fds);
    ck_assert_int_eq(pipe(go), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        close(go[1]);
        client_process(fds[1], go[0], p.total);
    }
    close(fds[1]);
    close(go[0]);
    p.go_fd = go[1];
    p.loop = new_loop();
    memset(p.chunk, 'x', sizeof(p.chunk));
    ck_assert_int_eq(iol_stream_new(&p.s, p.loop, fds[0], 0), 0);
    ck_assert_int_eq(iol_stream_set_close_callback(p.s, stop_on_close, p.loop), 0);
    ck_assert_int_eq(iol_stream_set_write_watermarks(p.s, PRODUCER_HIGH, PRODUCER_LOW, producer_on_watermark, &p), 0);
    p.rss_base = rss_bytes();
    producer_fill(&p);
    run_loop(p.loop, 120);
    ck_assert_int_eq(iol_loop_close(p.loop, false), 0);
    close(p.go_fd);

    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "client got the wrong byte count (%d)", status);
    ck_assert_uint_eq(p.queued, p.total);
    ck_assert_int_ge(p.above, 1);
    ck_assert_int_ge(p.below, 1);
    size_t grew = p.rss_max > p.rss_base ? p.rss_max - p.rss_base : 0;
    fprintf(stderr, "watermarks_bound_server_memory: %zu MiB through, %d stalls, RSS grew %zu KiB (bound %zu KiB)\n",
            p.total >> 20, p.above, grew >> 10, (2 * (size_t)PRODUCER_HIGH + RSS_SLACK) >> 10);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    /* Shadow memory and ASan's quarantine of freed blocks are not the
     * program's: the bound holds for the real allocator only. */
    (void)grew;
#else
    if (!iol_test_under_valgrind())
        ck_assert_uint_lt(grew, 2 * (size_t)PRODUCER_HIGH + RSS_SLACK);
#endif
}
END_TEST

int main(void)
{
    Suite *s = suite_create("backpressure");
    struct {
        const char *name;
        const TTest *test;
        double timeout;
    } cases[] = {
        {"pause_holds_reads_until_resume", pause_holds_reads_until_resume, 30},
        {"paused_stream_lets_the_kernel_push_back", paused_stream_lets_the_kernel_push_back, 30},
        {"read_until_max_bytes", read_until_max_bytes, 30},
        {"read_until_max_bytes_without_delimiter", read_until_max_bytes_without_delimiter, 30},
        {"watermarks_alternate_outside_write", watermarks_alternate_outside_write, 30},
        {"watermarks_bound_server_memory", watermarks_bound_server_memory, 150},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = iol_test_tcase(cases[i].name, cases[i].timeout);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return iol_test_run(s);
}
