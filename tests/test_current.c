/* current/make_current/clear_current and the process instance. */
#include <errno.h>
#include <pthread.h>

#include "ioloop.h"
#include "testutil.h"

START_TEST(test_if_none_makes_current)
{
    ck_assert_ptr_null(iol_loop_current());
    iol_loop *a, *b;
    ck_assert_int_eq(iol_loop_new(&a, NULL), 0);
    ck_assert_ptr_eq(iol_loop_current(), a);
    ck_assert_int_eq(iol_loop_new(&b, NULL), 0); /* IF_NONE: a stays */
    ck_assert_ptr_eq(iol_loop_current(), a);
    iol_loop *c = (iol_loop *)0x1;
    iol_loop_config always = { .make_current = IOL_CURRENT_ALWAYS };
    ck_assert_int_eq(iol_loop_new(&c, &always), -EEXIST);
    ck_assert_ptr_eq(c, (iol_loop *)0x1); /* untouched on failure */
    iol_loop_clear_current();
    ck_assert_ptr_null(iol_loop_current());
    ck_assert_int_eq(iol_loop_new(&c, &always), 0);
    ck_assert_ptr_eq(iol_loop_current(), c);
    iol_loop_config never = { .make_current = IOL_CURRENT_NEVER };
    iol_loop *d;
    ck_assert_int_eq(iol_loop_new(&d, &never), 0);
    ck_assert_ptr_eq(iol_loop_current(), c);
    ck_assert_int_eq(iol_loop_make_current(b), 0);
    ck_assert_ptr_eq(iol_loop_current(), b);
    iol_loop_config bad = { .make_current = 7 };
    ck_assert_int_eq(iol_loop_new(&d, &bad), -EINVAL);
    iol_loop_close(a, false);
    iol_loop_close(b, false);
    ck_assert_ptr_null(iol_loop_current()); /* close clears it */
    iol_loop_close(c, false);
    iol_loop_close(d, false);
}
END_TEST

static iol_loop *seen_inside;
static void look(void *arg)
{
    seen_inside = iol_loop_current();
    iol_loop_stop(arg);
}

START_TEST(test_start_makes_current_and_restores)
{
    iol_loop *a, *b;
    iol_loop_config never = { .make_current = IOL_CURRENT_NEVER };
    ck_assert_int_eq(iol_loop_new(&a, NULL), 0);
    ck_assert_int_eq(iol_loop_new(&b, &never), 0);
    ck_assert_ptr_eq(iol_loop_current(), a);
    iol_loop_add_callback(b, look, b);
    iol_loop_start(b);
    ck_assert_ptr_eq(seen_inside, b);
    ck_assert_ptr_eq(iol_loop_current(), a);
    iol_loop_close(b, false);
    iol_loop_close(a, false);
}
END_TEST

static void *other_thread_current(void *arg)
{
    (void)arg;
    return iol_loop_current();
}

START_TEST(test_current_is_per_thread)
{
    iol_loop *a;
    ck_assert_int_eq(iol_loop_new(&a, NULL), 0);
    pthread_t t;
    void *res = (void *)1;
    pthread_create(&t, NULL, other_thread_current, NULL);
    pthread_join(t, &res);
    ck_assert_ptr_null(res);
    iol_loop_close(a, false);
}
END_TEST

static void *get_instance(void *arg)
{
    (void)arg;
    return iol_loop_instance();
}

START_TEST(test_instance)
{
    ck_assert(!iol_loop_initialized());
    iol_loop *i1 = iol_loop_instance();
    ck_assert_ptr_nonnull(i1);
    ck_assert(iol_loop_initialized());
    pthread_t t;
    void *i2;
    pthread_create(&t, NULL, get_instance, NULL);
    pthread_join(t, &i2);
    ck_assert_ptr_eq(i1, i2);
    iol_loop *mine;
    ck_assert_int_eq(iol_loop_new(&mine, NULL), 0);
    ck_assert_int_eq(iol_loop_install(mine), -EEXIST);
    iol_loop_clear_instance();
    ck_assert(!iol_loop_initialized());
    ck_assert_int_eq(iol_loop_install(mine), 0);
    ck_assert_ptr_eq(iol_loop_instance(), mine);
    ck_assert_int_eq(iol_loop_install(NULL), -EINVAL);
    /* Closing the instance clears it; the loop goes with the last ref. */
    ck_assert_int_eq(iol_loop_close(mine, false), 0);
    ck_assert(!iol_loop_initialized());
    /* A fresh one is created on demand, and close frees it. */
    iol_loop *i3 = iol_loop_instance();
    ck_assert_ptr_nonnull(i3);
    ck_assert_int_eq(iol_loop_close(i3, false), 0);
    ck_assert(!iol_loop_initialized());
}
END_TEST

START_TEST(test_make_current_closed)
{
    iol_loop *a;
    ck_assert_int_eq(iol_loop_new(&a, NULL), 0);
    iol_loop_ref(a);
    iol_loop_close(a, false);
    ck_assert_int_eq(iol_loop_make_current(a), -ESHUTDOWN);
    ck_assert_int_eq(iol_loop_install(a), -ESHUTDOWN);
    ck_assert_int_eq(iol_loop_make_current(NULL), 0);
    iol_loop_unref(a);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("current");
    TCase *tc = iol_test_tcase("current", 30);
    tcase_add_test(tc, test_if_none_makes_current);
    tcase_add_test(tc, test_start_makes_current_and_restores);
    tcase_add_test(tc, test_current_is_per_thread);
    tcase_add_test(tc, test_instance);
    tcase_add_test(tc, test_make_current_closed);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
