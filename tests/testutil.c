#include "testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>

size_t iol_test_scaled(size_t n, size_t min)
{
    const char *env = getenv("IOL_TEST_SCALE");
    double scale = env ? atof(env) : 1.0;
    if (scale <= 0)
        scale = 1.0;
    size_t r = (size_t)((double)n * scale);
    return r < min ? min : r;
}

int iol_test_under_valgrind(void)
{
    return getenv("IOL_UNDER_VALGRIND") != NULL;
}

double iol_test_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int iol_test_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

TCase *iol_test_tcase(const char *name, double timeout_s)
{
    TCase *tc = tcase_create(name);
    double mult = iol_test_under_valgrind() ? 10.0 : 1.0;
    tcase_set_timeout(tc, timeout_s * mult);
    return tc;
}

void iol_test_tiny_delay(uint32_t *rng)
{
    uint32_t x = *rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *rng = x;
    if ((x & 15) == 0) {
        sched_yield();
        return;
    }
    for (uint32_t i = (x >> 4) & 63; i > 0; i--)
        __asm__ __volatile__("" ::: "memory");
}

int iol_test_dir_entries(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

uint64_t iol_test_wakeups(const iol_loop *loop)
{
    iol_loop_stats st;
    ck_assert_int_eq(iol_loop_get_stats(loop, &st, sizeof st), 0);
    return st.wakeups;
}

int iol_test_make_cert(char *dir, size_t size)
{
    if (size < 64)
        return -1;
    snprintf(dir, size, "/tmp/iol-cert-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout key.pem -out cert.pem -subj /CN=localhost "
             "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -days 2 >/dev/null 2>&1",
             dir);
    return system(cmd) == 0 ? 0 : -1;
}
