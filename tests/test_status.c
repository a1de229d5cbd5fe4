/* The library's status codes and their messages (include/ioloop.h,
 * "Status codes"). */
#include <errno.h>
#include <string.h>

#include "testutil.h"

static const int own_codes[] = {
    IOL_EOF, IOL_ENONAME, IOL_ETLS_VERIFY, IOL_ETLS_HOSTNAME, IOL_ETLS_UNTRUSTED, IOL_ETLS_SELF_SIGNED,
    IOL_ETLS_EXPIRED, IOL_ETLS_NOT_YET_VALID, IOL_ETLS_NO_PEER_CERT, IOL_ETLS_PEER_REJECTED,
};
enum { N_OWN = sizeof own_codes / sizeof own_codes[0] };

START_TEST(strerror_names_the_library_codes)
{
    ck_assert_str_eq(iol_strerror(IOL_EOF), "connection closed by peer");
    ck_assert_str_eq(iol_strerror(IOL_ENONAME), "host name not found");
    ck_assert_str_eq(iol_strerror(IOL_ETLS_HOSTNAME), "certificate verify failed: hostname mismatch");
    /* every own code has a message of its own, none the fallback */
    for (unsigned i = 0; i < N_OWN; i++) {
        const char *t = iol_strerror(own_codes[i]);
        ck_assert_ptr_nonnull(t);
        ck_assert_str_ne(t, "unknown error");
        ck_assert_int_lt(own_codes[i], -4000); /* outside the errno range */
        for (unsigned j = 0; j < i; j++) {
            ck_assert_int_ne(own_codes[i], own_codes[j]);
            ck_assert_str_ne(t, iol_strerror(own_codes[j]));
        }
    }
}
END_TEST

START_TEST(strerror_falls_back_to_errno)
{
    ck_assert_str_eq(iol_strerror(-ECONNRESET), strerror(ECONNRESET));
    ck_assert_str_eq(iol_strerror(-EPIPE), strerror(EPIPE));
    ck_assert_str_eq(iol_strerror(0), "success");
    ck_assert_str_eq(iol_strerror(5), "success");
    ck_assert_str_eq(iol_strerror(-3999), "unknown error");
    ck_assert_str_eq(iol_strerror(-100000), "unknown error");
    ck_assert_str_eq(iol_strerror(-2147483647 - 1), "unknown error");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("status");
    TCase *tc = iol_test_tcase("strerror", 30);
    tcase_add_test(tc, strerror_names_the_library_codes);
    tcase_add_test(tc, strerror_falls_back_to_errno);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
