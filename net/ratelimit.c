/* net/ratelimit.c: shared token-bucket rate limiter.
 *
 * Design
 * - One fixed array of buckets, allocated up front (bounded memory, no allocation per request),
 *   split into RL_STRIPES equal stripes, each guarded by its own mutex. A seeded 64-bit hash of the
 *   key picks the stripe (top bits) and a start slot inside it; a key lives in one of the RL_WINDOW
 *   slots that follow (wrapping inside the stripe), so every operation takes exactly one lock.
 * - Buckets store the key itself (up to RL_KEY_INLINE bytes) or, for longer keys, its SHA-256, and
 *   are compared in full, so distinct keys never share a bucket (short of a SHA-256 collision). The
 *   seed is random so clients cannot aim many keys at one window.
 * - A bucket holds tokens (<= burst) and the time it was last refilled; a take refills
 *   rate * elapsed first. Time never runs backwards for a bucket (callers on different threads may
 *   pass slightly out-of-order clocks), so the total allowed stays <= burst + rate * elapsed.
 * - When a window is full, a new key evicts a bucket that has refilled to burst (nothing is lost:
 *   a full bucket behaves like a fresh one), else the one refilled least recently.
 */
#include "net/ratelimit.h"

#include "core/core.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>
#include <openssl/sha.h>

#define RL_STRIPES    64
#define RL_WINDOW     8
#define RL_KEY_INLINE 64
#define RL_CAP_MIN    (RL_STRIPES * RL_WINDOW)
#define RL_CAP_MAX    ((size_t)1 << 22)
#define RL_RETRY_MAX  86400

typedef struct bucket {
    double tokens;
    int64_t last_ns;
    bool used;
    bool digest; /* key holds SHA-256 of a long key */
    uint8_t keylen;
    unsigned char key[RL_KEY_INLINE];
} bucket;

typedef union stripe_lock {
    pthread_mutex_t mu;
    char pad[64]; /* keep stripes' locks on separate cache lines */
} stripe_lock;

struct rl {
    double rate; /* tokens per second; <= 0 disabled */
    double burst;
    size_t per_stripe; /* power of two >= RL_WINDOW */
    uint64_t seed;
    bucket *b; /* RL_STRIPES * per_stripe */
    stripe_lock locks[RL_STRIPES];
};

typedef struct rl_key {
    bool digest;
    uint8_t len;
    unsigned char bytes[RL_KEY_INLINE];
} rl_key;

static void make_key(const void *key, size_t keylen, rl_key *k)
{
    k->digest = keylen > RL_KEY_INLINE;
    if (k->digest) {
        SHA256(key, keylen, k->bytes);
        k->len = SHA256_DIGEST_LENGTH;
    } else {
        if (keylen)
            memcpy(k->bytes, key, keylen);
        k->len = (uint8_t)keylen;
    }
}

static uint64_t key_hash(uint64_t seed, const rl_key *k)
{
    return core_hash64(k->bytes, k->len, seed ^ k->digest);
}

static bool key_eq(const bucket *b, const rl_key *k)
{
    return b->used && b->digest == k->digest && b->keylen == k->len &&
           memcmp(b->key, k->bytes, k->len) == 0;
}

/* Tokens the bucket would hold at now_ns. */
static double level(const rl *r, const bucket *b, int64_t now_ns)
{
    double t = b->tokens;
    if (now_ns > b->last_ns)
        t += (double)(now_ns - b->last_ns) * r->rate / 1e9;
    return t > r->burst ? r->burst : t;
}

static void refill(const rl *r, bucket *b, int64_t now_ns)
{
    b->tokens = level(r, b, now_ns);
    if (now_ns > b->last_ns)
        b->last_ns = now_ns;
}

rl *rl_new(double rate_per_s, double burst, size_t capacity)
{
    rl *r;
    size_t cap = RL_CAP_MIN;
    int inited = 0;

    if (isnan(rate_per_s) || isnan(burst) || isinf(rate_per_s) || isinf(burst) ||
        capacity > RL_CAP_MAX)
        return NULL;
    r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->rate = rate_per_s;
    r->burst = burst < 1 ? 1 : burst;
    if (rate_per_s <= 0)
        return r;
    while (cap < capacity)
        cap *= 2;
    r->per_stripe = cap / RL_STRIPES;
    r->b = calloc(cap, sizeof *r->b);
    if (!r->b || RAND_bytes((unsigned char *)&r->seed, sizeof r->seed) != 1)
        goto fail;
    for (; inited < RL_STRIPES; inited++)
        if (pthread_mutex_init(&r->locks[inited].mu, NULL) != 0)
            goto fail;
    return r;
fail:
    while (inited-- > 0)
        pthread_mutex_destroy(&r->locks[inited].mu);
    free(r->b);
    free(r);
    return NULL;
}

void rl_free(rl *r)
{
    if (!r)
        return;
    if (r->b)
        for (int i = 0; i < RL_STRIPES; i++)
            pthread_mutex_destroy(&r->locks[i].mu);
    free(r->b);
    free(r);
}

/* Locks the key's stripe; returns its window start and stores the stripe index. */
static size_t lock_window(rl *r, const rl_key *k, size_t *stripe)
{
    uint64_t h = key_hash(r->seed, k);
    *stripe = (size_t)(h >> 58); /* top 6 bits: RL_STRIPES == 64 */
    pthread_mutex_lock(&r->locks[*stripe].mu);
    return (size_t)h & (r->per_stripe - 1);
}

static bucket *slot(rl *r, size_t stripe, size_t start, size_t i)
{
    return &r->b[stripe * r->per_stripe + ((start + i) & (r->per_stripe - 1))];
}

int rl_take(rl *r, const void *key, size_t keylen, int64_t now_ns, int *retry_after_s)
{
    rl_key k;
    size_t stripe, start;
    bucket *b = NULL, *victim = NULL;
    int allowed;

    if (!r || r->rate <= 0)
        return 1;
    make_key(keylen ? key : "", keylen, &k);
    start = lock_window(r, &k, &stripe);
    for (size_t i = 0; i < RL_WINDOW && !b; i++)
        if (key_eq(slot(r, stripe, start, i), &k))
            b = slot(r, stripe, start, i);
    if (!b) {
        for (size_t i = 0; i < RL_WINDOW; i++) {
            bucket *c = slot(r, stripe, start, i);
            if (!c->used) {
                victim = c;
                break;
            }
            if (level(r, c, now_ns) >= r->burst) {
                victim = c;
                break;
            }
            if (!victim || c->last_ns < victim->last_ns)
                victim = c;
        }
        b = victim;
        b->used = true;
        b->digest = k.digest;
        b->keylen = k.len;
        memcpy(b->key, k.bytes, k.len);
        b->tokens = r->burst;
        b->last_ns = now_ns;
    }
    refill(r, b, now_ns);
    allowed = b->tokens >= 1;
    if (allowed) {
        b->tokens -= 1;
    } else if (retry_after_s) {
        double s = ceil((1 - b->tokens) / r->rate);
        *retry_after_s = s < 1 ? 1 : s > RL_RETRY_MAX ? RL_RETRY_MAX : (int)s;
    }
    pthread_mutex_unlock(&r->locks[stripe].mu);
    return allowed;
}

void rl_reset(rl *r, const void *key, size_t keylen)
{
    rl_key k;
    size_t stripe, start;

    if (!r || r->rate <= 0)
        return;
    make_key(keylen ? key : "", keylen, &k);
    start = lock_window(r, &k, &stripe);
    for (size_t i = 0; i < RL_WINDOW; i++) {
        bucket *b = slot(r, stripe, start, i);
        if (key_eq(b, &k)) {
            b->used = false;
            break;
        }
    }
    pthread_mutex_unlock(&r->locks[stripe].mu);
}
