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

#endif
