/* iol-bench — shared declarations: options, the subcommand signature,
 * timing and thread helpers (inline, in bench.h) and the report model
 * (report.c), machine description (machine.c).
 *
 * A subcommand is one function `int bench_X(int argc, char **argv,
 * const bench_opts *o)` registered in main.c's table; argv holds only the
 * arguments main did not recognise (argv[0] is the subcommand name), so
 * each bench parses its own extra flags and answers its own --help. */
#ifndef IOL_BENCH_H
#define IOL_BENCH_H

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#ifndef IOL_BENCH_VERSION
#define IOL_BENCH_VERSION "0.1.0"
#endif

typedef struct bench_opts {
    double duration;    /* seconds per run; 0: run --count instead */
    int repeat;         /* interleaved repetitions per impl */
    int workers;        /* 0: bench default */
    bool pin;           /* pin threads to CPUs (changes cross-thread costs) */
    bool json;          /* stdout: JSON lines only; table to stderr */
    const char *plot;   /* SVG path or NULL */
    uint64_t count;     /* 0: bench default */
    const char *only;   /* --impl a,b: run only these impls (label or JSON name); NULL: all */
} bench_opts;

typedef int (*bench_fn)(int argc, char **argv, const bench_opts *o);

int bench_handoff(int argc, char **argv, const bench_opts *o);
int bench_pingpong(int argc, char **argv, const bench_opts *o);
int bench_wakecost(int argc, char **argv, const bench_opts *o);
int bench_timers(int argc, char **argv, const bench_opts *o);
int bench_http(int argc, char **argv, const bench_opts *o);
int bench_compare(int argc, char **argv, const bench_opts *o); /* compare http */
int bench_zmq(int argc, char **argv, const bench_opts *o);
int bench_udp(int argc, char **argv, const bench_opts *o);

/* Whether --impl lets an impl run (matches its label or its JSON name). */
bool bench_selected(const bench_opts *o, const char *impl, const char *label);

/* The common flags, for the subcommands' --help. */
void bench_usage_common(FILE *f);

/* ------------------------------------------------------------- timing */

static inline uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void bench_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* With --pin, pins the calling thread to CPU index % online CPUs. */
void bench_pin_self(const bench_opts *o, unsigned index);

/* ---------------------------------------------- ioloop spin settings */

/* `--spin-us 0,5,-1`: one ioloop row per iol_loop_config.spin_us value,
 * labelled "ioloop" for 0 (the default, adaptive) and "ioloop-spin=X"
 * otherwise, so a policy and the old fixed spin are measured in one run.
 * `--poller epoll,uring`: the same rows once per poller (label suffix
 * "-epoll", "-uring"), interleaved; without it poller is NULL (the
 * default, or $IOL_POLLER). At most BENCH_MAX_SPIN_ROWS rows in all. */
#define BENCH_MAX_SPIN_ROWS 4
typedef struct bench_spin_rows {
    int n;
    double us[BENCH_MAX_SPIN_ROWS];
    const char *poller[BENCH_MAX_SPIN_ROWS];
    char label[BENCH_MAX_SPIN_ROWS][48];
    /* what was asked; the rows above are their product */
    int nspins, npollers;
    double spins[BENCH_MAX_SPIN_ROWS];
    char pollers[BENCH_MAX_SPIN_ROWS][16];
} bench_spin_rows;

void bench_spin_rows_default(bench_spin_rows *s);
/* At argv[i]: 0 if it is not --spin-us or --poller, the number of
 * arguments used, or -1 after a message on stderr. */
int bench_spin_rows_parse(bench_spin_rows *s, int argc, char **argv, int i);

/* ------------------------------------------------------------- report */

#define BENCH_MAX_REPEAT 64
#define BENCH_MAX_IMPLS 10 /* up to BENCH_MAX_SPIN_ROWS ioloop rows + 6 others */
#define BENCH_MAX_FIGS 5

typedef struct bench_fig_spec {
    const char *name;    /* JSON name from BENCH.md, e.g. "callbacks_per_sec" */
    const char *label;   /* table header, e.g. "callbacks/s" */
    bool full;           /* table shows min/median/max and "vs ioloop";
                            otherwise one median column beside the full ones */
    bool lower_better;   /* times and bytes: smaller wins */
} bench_fig_spec;

typedef struct bench_impl {
    const char *impl;    /* JSON "impl": ioloop, libuv, libevent, tornado-design, floor */
    const char *label;   /* table row, e.g. "libuv-idiom" */
    double v[BENCH_MAX_FIGS][BENCH_MAX_REPEAT];
    int n[BENCH_MAX_FIGS];   /* values recorded per figure (NaN is not recorded) */
} bench_impl;

typedef struct bench_report {
    const char *bench;           /* "handoff" */
    char title[64];              /* "handoff  P=1" */
    char params_json[256];       /* "{\"producers\":1,...}" */
    const bench_fig_spec *figs;
    int nfigs;
    bench_impl impls[BENCH_MAX_IMPLS];
    int nimpls;
} bench_report;

void bench_report_init(bench_report *r, const char *bench, const bench_fig_spec *figs, int nfigs);
/* Index of the row for impl (created on first use). */
int bench_report_impl(bench_report *r, const char *impl, const char *label);
/* Records one repetition's value of figure fig; NaN means "not measured". */
void bench_report_add(bench_report *r, int impl, int fig, double value);
/* Median/min/max of a row's figure; false if nothing was recorded. */
bool bench_stats(const bench_impl *im, int fig, double *min, double *median, double *max);
/* Prints the table (stdout, or stderr with --json) and the JSON lines. */
void bench_report_print(const bench_report *r, const bench_opts *o);
/* One line "ioloop vs X: 3.4x (target >= 3x) met" on the table's stream:
 * ratio of medians oriented so > 1 means ioloop is better. */
void bench_report_target(const bench_report *r, const bench_opts *o, int fig, const char *other_impl,
                         double target);
/* Writes an SVG (gnuplot): one panel per (report, full figure), bars per
 * impl at the median with min–max whiskers. 0 or -1 (message on stderr). */
int bench_plot(const bench_opts *o, bench_report *const *reports, int nreports);

/* Progress on stderr (only a tty): "\r<what>  <elapsed>s  <rate> <unit>". */
void bench_progress(const char *what, double elapsed_s, double rate, const char *unit);
void bench_progress_done(void);
/* "41.2M", "950k", "12.3" */
void bench_human(char *buf, size_t len, double v);

/* --------------------------------------------------------- machine.c */

typedef struct bench_machine {
    char cpu[128];
    int cpus;
    char kernel[160]; /* sysname + release: 2 x 65 bytes */
} bench_machine;

/* Reads /proc/cpuinfo's model name, online CPUs and uname's release. */
void bench_machine_read(bench_machine *m);

#endif
