/* A latency histogram for the load generators, HdrHistogram-style.
 *
 * Values are nanoseconds, clamped to [HISTOGRAM_MIN_NS, HISTOGRAM_MAX_NS]
 * (1 µs .. 60 s). Buckets are log-linear: below 256 ns every value has its
 * own bucket; above, each power of two [2^k, 2^(k+1)) is split into 128
 * equal buckets, so a bucket is at most 1/128 of the values in it wide and
 * a reported value (the bucket's midpoint) is within 1/256 (0.4 %) of any
 * value recorded in that bucket — two significant digits, like
 * HdrHistogram with significant_figures = 2.
 *
 * The struct is fixed-size (about 30 KiB) so a worker can embed one and
 * record without allocating; per-worker histograms are merged at the end.
 * Not thread-safe: one writer, merged after the writers stopped. */
#ifndef IOL_BENCH_HISTOGRAM_H
#define IOL_BENCH_HISTOGRAM_H

#include <stdint.h>

#define HISTOGRAM_MIN_NS 1000ull
#define HISTOGRAM_MAX_NS 60000000000ull
/* Exact values below 2^8; 2^7 buckets per power of two above. */
#define HISTOGRAM_SUB_BITS 8
/* bucket_of(HISTOGRAM_MAX_NS) + 1: 2^35 <= 60e9 < 2^36, so the top value
 * has shift 28, 60e9 >> 28 = 223, and lands at 256 + 27 * 128 + 95. */
#define HISTOGRAM_BUCKETS 3808

typedef struct histogram {
    uint64_t count;
    uint64_t min;     /* UINT64_MAX while empty */
    uint64_t max;     /* 0 while empty */
    uint64_t sum;     /* of the clamped values; 584 years of ns fit */
    uint64_t buckets[HISTOGRAM_BUCKETS];
} histogram;

void histogram_init(histogram *h);
/* Records one value (ns), clamped to the range. */
void histogram_record(histogram *h, uint64_t ns);
/* Records n copies of one value. */
void histogram_record_n(histogram *h, uint64_t ns, uint64_t n);
/* dst += src; the same as having recorded every value of src into dst. */
void histogram_merge(histogram *dst, const histogram *src);
/* The value at percentile p (0..100), nearest rank: the smallest recorded
 * value v such that at least p % of the values are <= v, reported as its
 * bucket's midpoint clamped to [min, max] (so p0 is min, p100 is max, and a
 * histogram of one value reports that value exactly). 0 when empty. */
uint64_t histogram_percentile(const histogram *h, double p);
uint64_t histogram_count(const histogram *h);
uint64_t histogram_min(const histogram *h); /* 0 when empty */
uint64_t histogram_max(const histogram *h); /* 0 when empty */
double histogram_mean(const histogram *h);  /* 0 when empty */

/* Bucket helpers, exposed for the tests: the index a value lands in, and
 * the lowest value and width of a bucket. */
unsigned histogram_bucket_of(uint64_t ns);
uint64_t histogram_bucket_low(unsigned index);
uint64_t histogram_bucket_width(unsigned index);


/* ------------------------------------------------------------------------
 * The HTTP load generator of bench/http.c, whose results are histograms;
 * declared here because compare.c drives the same generator. */
#include <stdbool.h>
#include <stddef.h>

enum {
    HTTP_ERR_REFUSED,    /* connect refused */
    HTTP_ERR_RESET,      /* reset, or closed in the middle of a reply */
    HTTP_ERR_TIMEOUT,    /* no reply within the timeout */
    HTTP_ERR_BAD_STATUS, /* a complete reply, not 2xx (counted as a request too, as wrk does) */
    HTTP_ERR_OTHER,      /* unparsable reply, socket errors */
    HTTP_ERR_KINDS
};
extern const char *const http_error_names[HTTP_ERR_KINDS];

#define HTTP_MAX_PIPELINE 64 /* the replies of one write fit the reply buffer */

typedef struct http_load_config {
    const char *url;       /* http[s]://host[:port]/path, IPv4 or a host name */
    unsigned connections;
    unsigned workers;      /* worker loops; capped at connections */
    double duration;       /* seconds of measuring */
    double timeout;        /* per request; 0: 2 s */
    bool churn;            /* one request per connection */
    bool quiet;            /* no progress line */
    const char *label;     /* for the progress line; NULL: "http" */
    /* https:// URLs: client TLS through our own TLS streams. */
    bool tls_insecure;      /* no certificate or host name verification */
    const char *tls_ca;     /* CA file (PEM); NULL: the system's trust store */
    bool tls_no_resumption; /* every connection a full handshake */
    unsigned pipeline;      /* keep-alive: requests per write (all answered
                               before the next write); 0 or 1: one */
} http_load_config;

typedef struct http_load_result {
    double seconds;
    uint64_t requests;     /* complete replies inside the window */
    uint64_t connections;  /* churn: connections that completed a request */
    double requests_per_sec;
    double connections_per_sec;
    uint64_t errors[HTTP_ERR_KINDS];
    histogram latency;     /* ns, every worker merged */
    /* Set when another tool measured (compare --wrk): latency_us holds its
     * p50/p90/p99/p99.9 (NaN where it reports none), not the histogram. */
    bool external_latency;
    double latency_us[4];
} http_load_result;

/* One measuring run. 0, or -EINVAL (bad config or URL), -EHOSTUNREACH (name
 * does not resolve), -ENOMEM, runtime errors. */
int http_load_run(const http_load_config *cfg, http_load_result *out);
/* Splits http://host[:port]/path or https://...; *tls says which (the
 * default port is 80 or 443). 0 or -EINVAL. */
int http_parse_url(const char *url, char *host, size_t host_size, uint16_t *port, char *path, size_t path_size,
                   bool *tls);

/* Output shared by http and compare http (bench/http.c). */
#include <stdio.h>
#include "bench/bench.h"
/* min / median / max of the values that are not NaN (NaN if none). */
void http_stats(const double *v, unsigned n, double *min, double *median, double *max);
/* Percentile `which` (0: p50, 1: p90, 2: p99, 3: p99.9) of one run, in µs. */
double http_latency_us(const http_load_result *r, unsigned which);
/* One BENCH.md JSON line for an impl's repeats; extra_results (may be NULL)
 * is appended inside "results" as raw JSON members. */
void http_json_line(FILE *f, const char *impl, const char *label, const char *params_json,
                    const http_load_result *runs, unsigned n, bool churn, const char *extra_results);
/* s escaped for the inside of a JSON string (cut to fit size). */
void json_escape(char *dst, size_t size, const char *s);
/* A human block: min / median / max of every figure. */
void http_table(FILE *f, const char *title, const http_load_result *runs, unsigned n, bool churn);
/* The framework report figures for --plot: the rate and the percentiles. */
#define HTTP_PLOT_FIGS 5
extern const bench_fig_spec http_plot_figs[HTTP_PLOT_FIGS];
void http_report_add(bench_report *r, const char *impl, const char *label, const http_load_result *runs, unsigned n);

#endif
