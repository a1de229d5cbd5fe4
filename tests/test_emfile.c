/* Listeners out of fds: no spinning, connections shed, one warning per
 * episode, accepting resumes once fds are free. Check forks each test, so
 * the lowered RLIMIT_NOFILE stays in the test's process. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ioloop.h"
#include "testutil.h"

static _Atomic int accept_warnings;
static _Atomic int accepted;

static void count_log(int level, const char *msg, void *ud)
{
    (void)ud;
    if (level == IOL_LOG_WARNING && strstr(msg, "accept"))
        atomic_fetch_add(&accept_warnings, 1);
}

static void accept_greet(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    (void)loop;
    (void)peer;
    (void)peerlen;
    (void)arg;
    atomic_fetch_add(&accepted, 1);
    if (write(fd, "ok", 2) != 2)
        abort();
    close(fd);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec * 1e-6;
}

static int client_socket(void)
{
    return socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
}

static void client_connect(int fd, uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int r = connect(fd, (struct sockaddr *)&a, sizeof(a));
    ck_assert(r == 0 || errno == EINPROGRESS);
}

/* Waits for "ok" (or EOF/reset: a shed connection). Returns bytes read,
 * 0 on EOF, -errno, or -ETIMEDOUT. */
static int client_result(int fd, double timeout)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, (int)(timeout * 1000)) <= 0)
        return -ETIMEDOUT;
    char buf[8];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    return n < 0 ? -errno : (int)n;
}

/* Lowers RLIMIT_NOFILE to margin above the highest open fd. */
static struct rlimit limit_fds(int margin)
{
    int highest = 0;
    for (int fd = 0; fd < 4096; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            highest = fd;
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = (rlim_t)highest + (rlim_t)margin;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    return rl;
}

START_TEST(test_emfile_no_spin_and_resume)
{
    iol_set_log_handler(count_log, NULL);
    /* Client sockets made now; they connect once the process is out. */
    enum { CLIENTS = 8, LATE = 4 };
    int clients[CLIENTS], late[LATE];
    for (int i = 0; i < CLIENTS; i++)
        ck_assert_int_ge(clients[i] = client_socket(), 0);
    for (int i = 0; i < LATE; i++)
        ck_assert_int_ge(late[i] = client_socket(), 0);
    /* The limit is lowered before the runtime exists, as a server sets
     * it at startup: an io_uring accept takes RLIMIT_NOFILE when it is
     * submitted, so ring accepts armed before a later setrlimit could
     * still take fds past the new limit. The runtime's own fds fit in the
     * margin; the rest is filled below. */
    struct rlimit rl = limit_fds(64);
    iol_runtime *rt = NULL;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 1}), 0);
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    iol_listen_config lc = {.host = "127.0.0.1", .on_accept = accept_greet};
    int id = iol_runtime_listen(rt, &lc);
    ck_assert_int_ge(id, 0);
    uint16_t port = (uint16_t)iol_runtime_listener_port(rt, id);

    /* Sanity: it accepts while fds are plentiful. */
    int first = client_socket();
    client_connect(first, port);
    ck_assert_int_eq(client_result(first, 5), 2);
    /* And its EOF: the server has closed its side. Without this wait the
     * fill below could run before the worker's close(2), and the slot that
     * close frees later would let every "out of fds" client in (seen once
     * under valgrind with a CPU hog: 9 accepted). */
    ck_assert_int_eq(client_result(first, 5), 0);
    close(first);

    /* Fill the rest of the fds. */
    int *hogs = calloc(rl.rlim_cur, sizeof(int)), nhogs = 0;
    for (;;) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            ck_assert_int_eq(errno, EMFILE);
            break;
        }
        hogs[nhogs++] = fd;
    }

    /* The out-of-fds window: clients keep arriving, the listener cannot
     * take them; it must not spin. */
    double wall0 = iol_test_now(), cpu0 = cpu_seconds();
    for (int i = 0; i < CLIENTS; i++) {
        client_connect(clients[i], port);
        usleep(100 * 1000);
    }
    usleep(700 * 1000);
    double wall = iol_test_now() - wall0, cpu = cpu_seconds() - cpu0;
    ck_assert_msg(cpu < 0.3 * wall, "spinning: %.3f s CPU in %.3f s", cpu, wall);
    ck_assert_int_eq(atomic_load(&accepted), 1);
    /* Once per episode, not per connection. */
    ck_assert_int_eq(atomic_load(&accept_warnings), 1);

    /* The early clients were shed (EOF) or wait in the queue; none got in. */
    for (int i = 0; i < CLIENTS; i++) {
        int r = client_result(clients[i], 0);
        ck_assert(r == 0 || r == -ETIMEDOUT || r == -ECONNRESET);
    }

    /* Free the fds: accepting resumes (back-off is at most 500 ms). */
    for (int i = 0; i < nhogs; i++)
        close(hogs[i]);
    free(hogs);
    double t0 = iol_test_now();
    for (int i = 0; i < LATE; i++)
        client_connect(late[i], port);
    for (int i = 0; i < LATE; i++)
        ck_assert_int_eq(client_result(late[i], 10), 2);
    double resumed = iol_test_now() - t0;
    ck_assert_msg(resumed < (iol_test_under_valgrind() ? 10.0 : 3.0), "resumed after %.3f s", resumed);
    ck_assert_int_eq(atomic_load(&accept_warnings), 1);

    for (int i = 0; i < CLIENTS; i++)
        close(clients[i]);
    for (int i = 0; i < LATE; i++)
        close(late[i]);
    iol_runtime_free(rt);
    iol_set_log_handler(NULL, NULL);
}
END_TEST

START_TEST(test_emfile_handoff)
{
    /* Same story for the coordinator of a HANDOFF listener. */
    iol_set_log_handler(count_log, NULL);
    iol_runtime *rt = NULL;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 2}), 0);
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    iol_listen_config lc = {.host = "127.0.0.1", .shard = IOL_SHARD_HANDOFF, .on_accept = accept_greet};
    int id = iol_runtime_listen(rt, &lc);
    ck_assert_int_ge(id, 0);
    uint16_t port = (uint16_t)iol_runtime_listener_port(rt, id);
    usleep(50 * 1000);

    enum { CLIENTS = 6 };
    int clients[CLIENTS], late = client_socket();
    for (int i = 0; i < CLIENTS; i++)
        ck_assert_int_ge(clients[i] = client_socket(), 0);
    struct rlimit rl = limit_fds(32);
    int *hogs = calloc(rl.rlim_cur, sizeof(int)), nhogs = 0;
    int fd;
    while ((fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
        hogs[nhogs++] = fd;
    ck_assert_int_eq(errno, EMFILE);

    double wall0 = iol_test_now(), cpu0 = cpu_seconds();
    for (int i = 0; i < CLIENTS; i++) {
        client_connect(clients[i], port);
        usleep(100 * 1000);
    }
    usleep(500 * 1000);
    double wall = iol_test_now() - wall0, cpu = cpu_seconds() - cpu0;
    ck_assert_msg(cpu < 0.3 * wall, "spinning: %.3f s CPU in %.3f s", cpu, wall);
    ck_assert_int_eq(atomic_load(&accept_warnings), 1);

    for (int i = 0; i < nhogs; i++)
        close(hogs[i]);
    free(hogs);
    client_connect(late, port);
    ck_assert_int_eq(client_result(late, 10), 2);
    for (int i = 0; i < CLIENTS; i++)
        close(clients[i]);
    close(late);
    iol_runtime_free(rt);
    iol_set_log_handler(NULL, NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("emfile");
    TCase *tc = iol_test_tcase("emfile", 60);
    tcase_add_test(tc, test_emfile_no_spin_and_resume);
    tcase_add_test(tc, test_emfile_handoff);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
