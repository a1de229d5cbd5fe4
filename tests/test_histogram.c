/* The bench's latency histogram: percentiles on known distributions are
 * exact within a bucket's relative error, merge is the same as recording
 * everything in one, extremes clamp, an empty histogram reports zeros. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench/histogram.c" /* bench code is not in libioloop */
#include "testutil.h"

/* Worst relative error of a reported value: half a bucket, a bucket being
 * at most 1/128 of its values wide. */
#define REL_ERR (1.0 / 256.0)

static void assert_near(uint64_t got, uint64_t want, const char *what)
{
    double err = fabs((double)got - (double)want);
    ck_assert_msg(err <= (double)want * REL_ERR + 0.5, "%s: got %llu, want %llu (+-%.2f%%)", what,
                  (unsigned long long)got, (unsigned long long)want, REL_ERR * 100);
}

/* Nearest-rank percentile of the sorted array v[0..n). */
static uint64_t exact_percentile(const uint64_t *v, size_t n, double p)
{
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    if (rank < 1)
        rank = 1;
    return v[rank - 1];
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static const double percentiles[] = { 1, 10, 25, 50, 75, 90, 99, 99.9, 99.99 };

static void check_against_sorted(const histogram *h, uint64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_u64);
    for (size_t i = 0; i < sizeof percentiles / sizeof percentiles[0]; i++) {
        char what[32];
        snprintf(what, sizeof what, "p%g", percentiles[i]);
        assert_near(histogram_percentile(h, percentiles[i]), exact_percentile(v, n, percentiles[i]), what);
    }
    ck_assert_uint_eq(histogram_min(h), v[0]);
    ck_assert_uint_eq(histogram_max(h), v[n - 1]);
}

START_TEST(uniform_1_to_10000_us)
{
    static histogram h;
    histogram_init(&h);
    size_t n = 10000;
    uint64_t *v = malloc(n * sizeof *v);
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        v[i] = (i + 1) * 1000; /* 1 µs .. 10 ms */
        sum += (double)v[i];
        histogram_record(&h, v[i]);
    }
    ck_assert_uint_eq(histogram_count(&h), n);
    ck_assert_double_eq_tol(histogram_mean(&h), sum / (double)n, 1e-6);
    /* p50 of 1..10000 is 5000 µs, p99 is 9900 µs, p99.9 is 9990 µs. */
    assert_near(histogram_percentile(&h, 50), 5000000, "p50");
    assert_near(histogram_percentile(&h, 99), 9900000, "p99");
    assert_near(histogram_percentile(&h, 99.9), 9990000, "p99.9");
    check_against_sorted(&h, v, n);
    free(v);
}
END_TEST

START_TEST(single_value_is_exact)
{
    static histogram h;
    histogram_init(&h);
    histogram_record_n(&h, 123457, 1000);
    for (size_t i = 0; i < sizeof percentiles / sizeof percentiles[0]; i++)
        ck_assert_uint_eq(histogram_percentile(&h, percentiles[i]), 123457);
    ck_assert_uint_eq(histogram_percentile(&h, 0), 123457);
    ck_assert_uint_eq(histogram_percentile(&h, 100), 123457);
    ck_assert_double_eq(histogram_mean(&h), 123457.0);
    ck_assert_uint_eq(histogram_count(&h), 1000);
}
END_TEST

START_TEST(two_clusters)
{
    /* 90 % fast around 100 µs, 10 % slow around 50 ms: p50 and p90 sit in
     * the fast cluster, p99 in the slow one. */
    static histogram h;
    histogram_init(&h);
    size_t n = 20000;
    uint64_t *v = malloc(n * sizeof *v);
    srand(7);
    for (size_t i = 0; i < n; i++) {
        if (i % 10 == 9)
            v[i] = 50000000 + (uint64_t)(rand() % 2000000);
        else
            v[i] = 100000 + (uint64_t)(rand() % 10000);
        histogram_record(&h, v[i]);
    }
    ck_assert_uint_lt(histogram_percentile(&h, 50), 111000);
    ck_assert_uint_lt(histogram_percentile(&h, 90), 111000);
    ck_assert_uint_gt(histogram_percentile(&h, 91), 49000000);
    ck_assert_uint_gt(histogram_percentile(&h, 99), 49000000);
    check_against_sorted(&h, v, n);
    free(v);
}
END_TEST

START_TEST(merge_equals_recording_all)
{
    static histogram parts[4], merged, all;
    histogram_init(&merged);
    histogram_init(&all);
    srand(11);
    for (int k = 0; k < 4; k++) {
        histogram_init(&parts[k]);
        for (int i = 0; i < 5000; i++) {
            /* Each worker sees a different range, log-spread. */
            uint64_t ns = (uint64_t)(1000.0 * pow(10, (k + (double)rand() / RAND_MAX) * 1.5));
            histogram_record(&parts[k], ns);
            histogram_record(&all, ns);
        }
    }
    histogram_merge(&merged, &parts[2]); /* order does not matter */
    histogram_merge(&merged, &parts[0]);
    histogram_merge(&merged, &parts[3]);
    histogram_merge(&merged, &parts[1]);
    ck_assert_uint_eq(histogram_count(&merged), histogram_count(&all));
    ck_assert_uint_eq(histogram_min(&merged), histogram_min(&all));
    ck_assert_uint_eq(histogram_max(&merged), histogram_max(&all));
    ck_assert_double_eq(histogram_mean(&merged), histogram_mean(&all));
    for (unsigned i = 0; i < HISTOGRAM_BUCKETS; i++)
        ck_assert_uint_eq(merged.buckets[i], all.buckets[i]);
    for (double p = 0; p <= 100; p += 0.5)
        ck_assert_uint_eq(histogram_percentile(&merged, p), histogram_percentile(&all, p));

    /* Merging an empty histogram changes nothing. */
    static histogram empty;
    histogram_init(&empty);
    histogram_merge(&merged, &empty);
    ck_assert_uint_eq(histogram_count(&merged), histogram_count(&all));
    ck_assert_uint_eq(histogram_min(&merged), histogram_min(&all));
}
END_TEST

START_TEST(extremes_clamp)
{
    static histogram h;
    histogram_init(&h);
    histogram_record(&h, 0);
    histogram_record(&h, 1);
    ck_assert_uint_eq(histogram_min(&h), HISTOGRAM_MIN_NS);
    histogram_record(&h, UINT64_MAX);
    histogram_record(&h, HISTOGRAM_MAX_NS + 1);
    ck_assert_uint_eq(histogram_max(&h), HISTOGRAM_MAX_NS);
    ck_assert_uint_eq(histogram_count(&h), 4);
    assert_near(histogram_percentile(&h, 50), HISTOGRAM_MIN_NS, "p50");
    ck_assert_uint_eq(histogram_percentile(&h, 100), HISTOGRAM_MAX_NS);
    assert_near(histogram_percentile(&h, 75), HISTOGRAM_MAX_NS, "p75");
    /* The top of the range is the last bucket: the array is sized right. */
    ck_assert_uint_eq(histogram_bucket_of(HISTOGRAM_MAX_NS), HISTOGRAM_BUCKETS - 1);
}
END_TEST

START_TEST(empty_histogram)
{
    static histogram h;
    histogram_init(&h);
    ck_assert_uint_eq(histogram_count(&h), 0);
    ck_assert_uint_eq(histogram_min(&h), 0);
    ck_assert_uint_eq(histogram_max(&h), 0);
    ck_assert_double_eq(histogram_mean(&h), 0.0);
    ck_assert_uint_eq(histogram_percentile(&h, 50), 0);
    ck_assert_uint_eq(histogram_percentile(&h, 99.9), 0);
}
END_TEST

START_TEST(buckets_are_contiguous)
{
    /* Every bucket starts where the previous ends and is at most 1/128 of
     * its lowest value wide: the error bound the percentiles rely on. */
    for (unsigned i = 1; i < HISTOGRAM_BUCKETS; i++) {
        ck_assert_uint_eq(histogram_bucket_low(i), histogram_bucket_low(i - 1) + histogram_bucket_width(i - 1));
        ck_assert_uint_eq(histogram_bucket_of(histogram_bucket_low(i)), i);
        ck_assert_uint_eq(histogram_bucket_of(histogram_bucket_low(i) + histogram_bucket_width(i) - 1), i);
        if (histogram_bucket_low(i) >= 256)
            ck_assert_uint_le(histogram_bucket_width(i) * 128, histogram_bucket_low(i));
    }
}
END_TEST

static Suite *histogram_suite(void)
{
    Suite *s = suite_create("histogram");
    TCase *tc = iol_test_tcase("percentiles", 30);
    tcase_add_test(tc, uniform_1_to_10000_us);
    tcase_add_test(tc, single_value_is_exact);
    tcase_add_test(tc, two_clusters);
    suite_add_tcase(s, tc);
    tc = iol_test_tcase("merge", 30);
    tcase_add_test(tc, merge_equals_recording_all);
    suite_add_tcase(s, tc);
    tc = iol_test_tcase("edges", 30);
    tcase_add_test(tc, extremes_clamp);
    tcase_add_test(tc, empty_histogram);
    tcase_add_test(tc, buckets_are_contiguous);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return iol_test_run(histogram_suite());
}
