// The public header from C++ with -Wall -Wextra -Wpedantic -Werror: a C++
// program must be able to include ioloop.h, fill the config structs by
// field name (their members sit in anonymous structs inside unions, C11
// that C++ compilers accept as an extension), and run a loop.
#include "ioloop.h"

#include <cstdio>
#include <cstring>

static int ran;
static void on_callback(void *arg)
{
    ran++;
    iol_loop_stop(static_cast<iol_loop *>(arg));
}

#define CHECK(x)                                                          \
    do {                                                                  \
        if (!(x)) {                                                       \
            std::fprintf(stderr, "%s:%d: %s failed\n", __FILE__, __LINE__, #x); \
            return 1;                                                     \
        }                                                                 \
    } while (0)

int main()
{
    iol_loop_config cfg = {};
    cfg.poller = "poll";
    cfg.make_current = IOL_CURRENT_NEVER;
    iol_loop *loop = nullptr;
    CHECK(iol_loop_new(&loop, &cfg) == 0);
    CHECK(std::strcmp(iol_loop_poller(loop), "poll") == 0);
    CHECK(iol_loop_add_callback(loop, on_callback, loop) == 0);
    CHECK(iol_loop_start(loop) == 0);
    CHECK(ran == 1);
    CHECK(iol_loop_close(loop, false) == 0);

    iol_runtime_config rcfg = {};
    rcfg.workers = 1;
    iol_runtime *rt = nullptr;
    CHECK(iol_runtime_new(&rt, &rcfg) == 0);
    iol_runtime_free(rt);
    iol_listen_config lcfg = {};
    lcfg.port = 0;
    iol_connect_options copts = {};
    copts.timeout = 1.0;
    iol_tls_config tcfg = {};
    (void)lcfg;
    (void)copts;
    (void)tcfg;
    CHECK(iol_version() == IOL_VERSION_HEX);
    return 0;
}
