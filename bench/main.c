/* iol-bench — the subcommand table and the common flags (BENCH.md).
 * Flags main does not know stay in argv for the subcommand, so each bench
 * owns its extra flags (--producers, --connections ...) and its --help. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"


static int cmd_compare(int argc, char **argv, const bench_opts *o);

static const struct {
    const char *name;
    const char *what;
} commands[] = {
    {"handoff", "P producer threads -> one loop: callbacks/s, wakeups per callback"},
    {"pingpong", "two loops on two threads bounce a callback: us per round trip"},
    {"wakecost", "one producer posts every GAP us: loop-thread CPU per callback"},
    {"timers", "insert / cancel / dispatch of 10^6 timeouts: ns per op, bytes per timer"},
    {"http", "HTTP load generator on our runtime"},
    {"compare", "compare handoff|pingpong|timers|http: all competitors in one run"},
    {"zmq", "PUSH->PULL messages/s and REQ/REP round trip: ioloop (zmq, ZMQ_FD), zloop, zmq_poll"},
    {"udp", "datagram echo per server CPU-ms: ioloop, libuv uv_udp (recvmmsg), raw recvmmsg/sendmmsg; --gso bulk send"},
};

static bench_fn lookup(const char *name)
{
    if (strcmp(name, "handoff") == 0)
        return bench_handoff;
    if (strcmp(name, "pingpong") == 0)
        return bench_pingpong;
    if (strcmp(name, "wakecost") == 0)
        return bench_wakecost;
    if (strcmp(name, "timers") == 0)
        return bench_timers;
    if (strcmp(name, "http") == 0)
        return bench_http;
    if (strcmp(name, "compare") == 0)
        return cmd_compare;
    if (strcmp(name, "zmq") == 0)
        return bench_zmq;
    if (strcmp(name, "udp") == 0)
        return bench_udp;
    return NULL;
}

void bench_usage_common(FILE *f)
{
    fprintf(f, "common flags:\n"
               "  --count N       operations per run (bench default otherwise)\n"
               "  --duration S    seconds per run instead of --count (where it applies)\n"
               "  --repeat R      interleaved repetitions per implementation (default 5)\n"
               "  --workers N     worker threads (where it applies)\n"
               "  --pin           pin threads to CPUs (report separately; changes cross-thread costs)\n"
               "  --json          stdout: one JSON object per line (impl x bench); table on stderr\n"
               "  --plot F.svg    bar chart (median, min-max whiskers) via gnuplot\n"
               "  --impl A,B      only these implementations (e.g. ioloop,floor)\n"
               "  --help          this text\n");
}

static void usage(FILE *f)
{
    fprintf(f, "usage: iol-bench SUBCOMMAND [flags]\n\nsubcommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].what);
    fprintf(f, "\n");
    bench_usage_common(f);
    fprintf(f, "\n'iol-bench SUBCOMMAND --help' for a subcommand's own flags.\n");
}

/* `compare X` is the plain subcommand X (which already measures every
 * competitor in the same run) for our three; anything else belongs to
 * compare.c when it is built. */
static int cmd_compare(int argc, char **argv, const bench_opts *o)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fprintf(argc < 2 ? stderr : stdout,
                "usage: iol-bench compare http|handoff|pingpong|timers [flags]\n"
                "  handoff, pingpong and timers: the same as the plain subcommand\n");
        return argc < 2 ? 2 : 0;
    }
    const char *what = argv[1];
    if (strcmp(what, "handoff") == 0 || strcmp(what, "pingpong") == 0 || strcmp(what, "timers") == 0)
        return lookup(what)(argc - 1, argv + 1, o);
    return bench_compare(argc, argv, o);
}

bool bench_selected(const bench_opts *o, const char *impl, const char *label)
{
    if (!o->only)
        return true;
    for (const char *p = o->only; *p;) {
        size_t len = strcspn(p, ",");
        if ((strlen(impl) == len && strncmp(p, impl, len) == 0) || (strlen(label) == len && strncmp(p, label, len) == 0))
            return true;
        p += len + (p[len] == ',');
    }
    return false;
}

/* Rows: every spin setting, for every poller asked (or the default). */
static bool spin_rows_build(bench_spin_rows *s)
{
    int np = s->npollers ? s->npollers : 1;
    if (s->nspins * np > BENCH_MAX_SPIN_ROWS) {
        fprintf(stderr, "iol-bench: --spin-us x --poller: at most %d ioloop rows\n", BENCH_MAX_SPIN_ROWS);
        return false;
    }
    s->n = 0;
    for (int k = 0; k < np; k++)
        for (int j = 0; j < s->nspins; j++) {
            double v = s->spins[j];
            char *label = s->label[s->n];
            size_t len = sizeof s->label[0];
            int w = v == 0 ? snprintf(label, len, "ioloop") : snprintf(label, len, "ioloop-spin=%g", v);
            s->poller[s->n] = s->npollers ? s->pollers[k] : NULL;
            if (s->npollers)
                snprintf(label + w, len - (size_t)w, "-%s", s->pollers[k]);
            s->us[s->n++] = v;
        }
    return true;
}

void bench_spin_rows_default(bench_spin_rows *s)
{
    *s = (bench_spin_rows){ .nspins = 1 };
    spin_rows_build(s);
}

/* --poller a,b: names checked by the loop when a run creates it. */
static int parse_pollers(bench_spin_rows *s, const char *list, int used)
{
    s->npollers = 0;
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof s->pollers[0] || s->npollers == BENCH_MAX_SPIN_ROWS) {
            fprintf(stderr, "iol-bench: --poller wants up to %d names, e.g. epoll,uring\n", BENCH_MAX_SPIN_ROWS);
            return -1;
        }
        memcpy(s->pollers[s->npollers], p, len);
        s->pollers[s->npollers++][len] = '\0';
        p += len + (p[len] == ',');
    }
    return s->npollers && spin_rows_build(s) ? used : -1;
}

int bench_spin_rows_parse(bench_spin_rows *s, int argc, char **argv, int i)
{
    const char *list = NULL;
    int used = 0;
    if (strcmp(argv[i], "--poller") == 0 && i + 1 < argc)
        return parse_pollers(s, argv[i + 1], 2);
    if (strncmp(argv[i], "--poller=", 9) == 0)
        return parse_pollers(s, argv[i] + 9, 1);
    if (strcmp(argv[i], "--spin-us") == 0 && i + 1 < argc)
        list = argv[i + 1], used = 2;
    else if (strncmp(argv[i], "--spin-us=", 10) == 0)
        list = argv[i] + 10, used = 1;
    if (!list)
        return 0;
    s->nspins = 0;
    for (char *end; *list; list = *end ? end + 1 : end) {
        double v = strtod(list, &end);
        if (end == list || (*end && *end != ',') || s->nspins == BENCH_MAX_SPIN_ROWS || v != v || v > 1000) {
            fprintf(stderr, "iol-bench: --spin-us wants up to %d values in us, e.g. 0,5,-1 (<= 1000)\n",
                    BENCH_MAX_SPIN_ROWS);
            return -1;
        }
        s->spins[s->nspins++] = v;
    }
    return s->nspins && spin_rows_build(s) ? used : -1;
}

static bool parse_num(const char *flag, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < 0) {
        fprintf(stderr, "iol-bench: %s wants a non-negative number, got '%s'\n", flag, s);
        return false;
    }
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    bench_fn fn = lookup(argv[1]);
    bool known = false;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        known |= strcmp(commands[i].name, argv[1]) == 0;
    if (!known) {
        fprintf(stderr, "iol-bench: unknown subcommand '%s'\n\n", argv[1]);
        usage(stderr);
        return 2;
    }
    if (!fn) {
        fprintf(stderr, "iol-bench: %s is not available in this build\n", argv[1]);
        return 2;
    }

    bench_opts o = {.repeat = 5};
    /* Rest: argv[1] (the subcommand) and whatever main does not know. */
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    if (!rest)
        return 1;
    int nrest = 0;
    rest[nrest++] = argv[1];
    for (int i = 2; i < argc; i++) {
        char *a = argv[i];
        const char *val = NULL;
        char name[32];
        /* --flag=value and --flag value */
        char *eq = strchr(a, '=');
        if (strncmp(a, "--", 2) == 0 && eq && (size_t)(eq - a) < sizeof name) {
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = '\0';
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
        }
        bool takes = strcmp(name, "--duration") == 0 || strcmp(name, "--repeat") == 0 ||
                     strcmp(name, "--workers") == 0 || strcmp(name, "--plot") == 0 || strcmp(name, "--count") == 0 ||
                     strcmp(name, "--impl") == 0;
        if (takes && !val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "iol-bench: %s needs a value\n", name);
                return 2;
            }
            val = argv[++i];
        }
        double v = 0;
        if (strcmp(name, "--plot") == 0) {
            o.plot = val;
        } else if (strcmp(name, "--impl") == 0) {
            o.only = val;
        } else if (takes) {
            if (!parse_num(name, val, &v))
                return 2;
            if (strcmp(name, "--duration") == 0)
                o.duration = v;
            else if (strcmp(name, "--repeat") == 0)
                o.repeat = (int)v;
            else if (strcmp(name, "--workers") == 0)
                o.workers = (int)v;
            else
                o.count = (uint64_t)v;
        } else if (strcmp(a, "--pin") == 0) {
            o.pin = true;
        } else if (strcmp(a, "--json") == 0) {
            o.json = true;
        } else {
            rest[nrest++] = a;
        }
    }
    if (o.repeat < 1)
        o.repeat = 1;
    if (o.repeat > BENCH_MAX_REPEAT)
        o.repeat = BENCH_MAX_REPEAT;
    int rc = fn(nrest, rest, &o);
    free(rest);
    return rc;
}
