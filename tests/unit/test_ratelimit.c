/* Unit tests for net/ratelimit.c: burst and retry-after, refill over simulated time, key
 * independence, reset, disabled mode, bounded table under many keys, and the global bound under
 * concurrent use. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "net/ratelimit.h"

#define SEC 1000000000LL
#define T0  (1000 * SEC)

static int take(rl *r, const char *key, int64_t now, int *retry)
{
    return rl_take(r, key, strlen(key), now, retry);
}

Test(ratelimit, burst_then_refusal_with_retry_after)
{
    rl *r = rl_new(1, 3, 1024);
    cr_assert_not_null(r);
    int retry = 0;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(take(r, "user-1", T0, &retry), 1, "take %d", i);
    cr_assert_eq(take(r, "user-1", T0, &retry), 0);
    cr_assert_eq(retry, 1);
    /* half a token back: still refused, retry rounds up */
    cr_assert_eq(take(r, "user-1", T0 + SEC / 2, &retry), 0);
    cr_assert_eq(retry, 1);
    rl_free(r);

    r = rl_new(0.25, 1, 0);
    cr_assert_eq(take(r, "k", T0, &retry), 1);
    cr_assert_eq(take(r, "k", T0, &retry), 0);
    cr_assert_eq(retry, 4);
    cr_assert_eq(take(r, "k", T0 + 3 * SEC, &retry), 0);
    cr_assert_eq(retry, 1);
    cr_assert_eq(take(r, "k", T0 + 4 * SEC, NULL), 1);
    cr_assert_eq(take(r, "k", T0 + 4 * SEC, NULL), 0, "NULL retry pointer is fine");
    rl_free(r);
}

Test(ratelimit, refill_over_time)
{
    rl *r = rl_new(2, 4, 1024);
    int retry;
    for (int i = 0; i < 4; i++)
        cr_assert_eq(take(r, "ip:10.0.0.1", T0, &retry), 1);
    cr_assert_eq(take(r, "ip:10.0.0.1", T0, &retry), 0);
    /* 2 tokens per second */
    cr_assert_eq(take(r, "ip:10.0.0.1", T0 + SEC / 2, &retry), 1);
    cr_assert_eq(take(r, "ip:10.0.0.1", T0 + SEC / 2, &retry), 0);
    cr_assert_eq(take(r, "ip:10.0.0.1", T0 + SEC, &retry), 1);
    cr_assert_eq(take(r, "ip:10.0.0.1", T0 + SEC, &retry), 0);
    /* a long pause refills only up to burst */
    int allowed = 0;
    for (int i = 0; i < 10; i++)
        allowed += take(r, "ip:10.0.0.1", T0 + 3600 * SEC, &retry);
    cr_assert_eq(allowed, 4);
    /* a clock going backwards does not refill */
    cr_assert_eq(take(r, "ip:10.0.0.1", T0 + 3599 * SEC, &retry), 0);
    cr_assert_eq(take(r, "ip:10.0.0.1", T0 + 3600 * SEC, &retry), 0);
    cr_assert_eq(take(r, "ip:10.0.0.1", T0 + 3600 * SEC + SEC / 2, &retry), 1);
    rl_free(r);
}

Test(ratelimit, keys_are_independent)
{
    rl *r = rl_new(1, 2, 1024);
    int retry;
    cr_assert_eq(take(r, "a", T0, &retry), 1);
    cr_assert_eq(take(r, "a", T0, &retry), 1);
    cr_assert_eq(take(r, "a", T0, &retry), 0);
    cr_assert_eq(take(r, "b", T0, &retry), 1);
    cr_assert_eq(take(r, "ab", T0, &retry), 1);
    cr_assert_eq(take(r, "", T0, &retry), 1);
    /* binary keys: embedded NUL matters */
    cr_assert_eq(rl_take(r, "a\0x", 3, T0, &retry), 1);
    cr_assert_eq(rl_take(r, "a\0y", 3, T0, &retry), 1);
    cr_assert_eq(rl_take(r, "a\0x", 3, T0, &retry), 1);
    cr_assert_eq(rl_take(r, "a\0x", 3, T0, &retry), 0);
    /* long keys (stored as a digest) differing only in the last byte */
    char k1[300], k2[300];
    memset(k1, 'k', sizeof k1);
    memset(k2, 'k', sizeof k2);
    k2[299] = 'j';
    cr_assert_eq(rl_take(r, k1, sizeof k1, T0, &retry), 1);
    cr_assert_eq(rl_take(r, k1, sizeof k1, T0, &retry), 1);
    cr_assert_eq(rl_take(r, k1, sizeof k1, T0, &retry), 0);
    cr_assert_eq(rl_take(r, k2, sizeof k2, T0, &retry), 1);
    /* a 64-byte key and a long key whose digest it could be confused with stay apart */
    cr_assert_eq(rl_take(r, k1, 64, T0, &retry), 1);
    rl_free(r);
}

Test(ratelimit, reset_clears_bucket)
{
    rl *r = rl_new(0.001, 5, 1024);
    int retry;
    for (int i = 0; i < 5; i++)
        cr_assert_eq(take(r, "login:a@example.org", T0, &retry), 1);
    cr_assert_eq(take(r, "login:a@example.org", T0, &retry), 0);
    cr_assert_eq(take(r, "login:b@example.org", T0, &retry), 1);
    rl_reset(r, "login:a@example.org", strlen("login:a@example.org"));
    for (int i = 0; i < 5; i++)
        cr_assert_eq(take(r, "login:a@example.org", T0, &retry), 1);
    cr_assert_eq(take(r, "login:a@example.org", T0, &retry), 0);
    rl_reset(r, "never-seen", 10);
    rl_free(r);
}

Test(ratelimit, disabled_mode)
{
    rl *r = rl_new(0, 1, 1024);
    cr_assert_not_null(r);
    int retry = -7;
    for (int i = 0; i < 10000; i++)
        cr_assert_eq(take(r, "x", T0, &retry), 1);
    cr_assert_eq(retry, -7);
    rl_reset(r, "x", 1);
    rl_free(r);
    r = rl_new(-5, 0, 0);
    cr_assert_eq(take(r, "x", T0, &retry), 1);
    rl_free(r);
    cr_assert_eq(rl_take(NULL, "x", 1, T0, &retry), 1);
    rl_free(NULL);
    cr_assert_null(rl_new(1, 1, (size_t)1 << 40));
    cr_assert_null(rl_new(0.0 / 0.0, 1, 0));
}

Test(ratelimit, many_keys_bounded_table)
{
    rl *r = rl_new(1, 2, 512);
    int retry;
    char key[32];
    /* far more keys than buckets: each new key starts with a full bucket */
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof key, "ip-%d", i);
        cr_assert_eq(take(r, key, T0, &retry), 1);
    }
    /* ten seconds later all of them have refilled to burst, so they are evicted first: an exhausted
       key survives new keys as long as fewer than a probe window of keys is not full */
    int64_t t1 = T0 + 10 * SEC;
    cr_assert_eq(take(r, "hot", t1, &retry), 1);
    cr_assert_eq(take(r, "hot", t1, &retry), 1);
    cr_assert_eq(take(r, "hot", t1, &retry), 0);
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof key, "later-%d", i);
        cr_assert_eq(take(r, key, t1, &retry), 1);
        cr_assert_eq(take(r, "hot", t1, &retry), 0, "hot forgotten after %d new keys", i + 1);
    }
    rl_free(r);
}

typedef struct worker {
    rl *r;
    const char *key;
    atomic_long *allowed;
    int64_t until_ns;
} worker;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * SEC + ts.tv_nsec;
}

static void *work(void *arg)
{
    worker *w = arg;
    int retry;
    int64_t now;
    /* at least 200 attempts, even if the thread is scheduled late */
    for (int n = 0; (now = mono_ns()) < w->until_ns || n < 200; n++)
        if (rl_take(w->r, w->key, strlen(w->key), now, &retry))
            atomic_fetch_add(w->allowed, 1);
    return NULL;
}

Test(ratelimit, concurrent_use_stays_within_bound)
{
    const double rate = 2000, burst = 100;
    rl *r = rl_new(rate, burst, 4096);
    static const char *const own_keys[8] = {"t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7"};
    atomic_long shared = 0, own[8];
    pthread_t th[16];
    worker w[16];
    int64_t start = mono_ns();
    /* 8 threads hammer one key, 8 threads one key each */
    for (int i = 0; i < 8; i++) {
        atomic_init(&own[i], 0);
        w[i] = (worker){r, "shared", &shared, start + SEC / 4};
        w[8 + i] = (worker){r, own_keys[i], &own[i], start + SEC / 4};
    }
    for (int i = 0; i < 16; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, work, &w[i]), 0);
    for (int i = 0; i < 16; i++)
        pthread_join(th[i], NULL);
    double elapsed = (double)(mono_ns() - start) / 1e9;
    double bound = burst + rate * elapsed;
    cr_assert_leq((double)atomic_load(&shared), bound, "shared: %ld > %.1f", atomic_load(&shared),
                  bound);
    cr_assert_geq(atomic_load(&shared), (long)burst, "the limiter let the burst through");
    for (int i = 0; i < 8; i++) {
        cr_assert_leq((double)atomic_load(&own[i]), bound, "own[%d]: %ld", i, atomic_load(&own[i]));
        cr_assert_geq(atomic_load(&own[i]), (long)burst);
    }
    rl_free(r);
}
