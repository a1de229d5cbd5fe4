/* Log-linear latency histogram; see histogram.h for the bucket layout. */
#include "histogram.h"

#include <math.h>
#include <string.h>

#define SUB_COUNT (1u << HISTOGRAM_SUB_BITS) /* values below are exact */
#define SUB_HALF (SUB_COUNT / 2)             /* buckets per power of two above */

unsigned histogram_bucket_of(uint64_t ns)
{
    if (ns < SUB_COUNT)
        return (unsigned)ns;
    /* Shift v right until it lies in [SUB_HALF, SUB_COUNT): the shift
     * names the power of two, the remainder the linear sub-bucket. */
    unsigned msb = 63u - (unsigned)__builtin_clzll(ns);
    unsigned shift = msb - (HISTOGRAM_SUB_BITS - 1);
    return SUB_COUNT + (shift - 1) * SUB_HALF + (unsigned)((ns >> shift) - SUB_HALF);
}

uint64_t histogram_bucket_low(unsigned index)
{
    if (index < SUB_COUNT)
        return index;
    unsigned shift = (index - SUB_COUNT) / SUB_HALF + 1;
    uint64_t sub = (index - SUB_COUNT) % SUB_HALF + SUB_HALF;
    return sub << shift;
}

uint64_t histogram_bucket_width(unsigned index)
{
    if (index < SUB_COUNT)
        return 1;
    return 1ull << ((index - SUB_COUNT) / SUB_HALF + 1);
}

void histogram_init(histogram *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

static uint64_t clamp_ns(uint64_t ns)
{
    if (ns < HISTOGRAM_MIN_NS)
        return HISTOGRAM_MIN_NS;
    if (ns > HISTOGRAM_MAX_NS)
        return HISTOGRAM_MAX_NS;
    return ns;
}

void histogram_record_n(histogram *h, uint64_t ns, uint64_t n)
{
    if (n == 0)
        return;
    ns = clamp_ns(ns);
    h->buckets[histogram_bucket_of(ns)] += n;
    h->count += n;
    h->sum += ns * n;
    if (ns < h->min)
        h->min = ns;
    if (ns > h->max)
        h->max = ns;
}

void histogram_record(histogram *h, uint64_t ns)
{
    histogram_record_n(h, ns, 1);
}

void histogram_merge(histogram *dst, const histogram *src)
{
    if (src->count == 0)
        return;
    for (unsigned i = 0; i < HISTOGRAM_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t histogram_percentile(const histogram *h, double p)
{
    if (h->count == 0)
        return 0;
    if (!(p > 0))
        return h->min;
    if (p >= 100)
        return h->max;
    /* Nearest rank: the rank-th smallest value, rank = ceil(p% of count). */
    uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)h->count);
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HISTOGRAM_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t mid = histogram_bucket_low(i) + histogram_bucket_width(i) / 2;
            /* The midpoint halves the worst error; the true value also lies
             * within [min, max], which makes one-value histograms exact. */
            if (mid < h->min)
                mid = h->min;
            if (mid > h->max)
                mid = h->max;
            return mid;
        }
    }
    return h->max;
}

uint64_t histogram_count(const histogram *h)
{
    return h->count;
}

uint64_t histogram_min(const histogram *h)
{
    return h->count ? h->min : 0;
}

uint64_t histogram_max(const histogram *h)
{
    return h->count ? h->max : 0;
}

double histogram_mean(const histogram *h)
{
    return h->count ? (double)h->sum / (double)h->count : 0.0;
}
