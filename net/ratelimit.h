/* net/ratelimit.h: token buckets keyed by an arbitrary byte string (principal id, client IP,
   "login:"+email). Shared by all HTTP threads: striped locks, fixed-size table (bounded memory;
   when a probe window is full the bucket that is already full again, else the least recently
   refilled one, is evicted). Time is passed in by the caller (monotonic ns). */
#ifndef CIRCA_NET_RATELIMIT_H
#define CIRCA_NET_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct rl rl;

/* rate_per_s <= 0 disables (always allow). burst < 1 is raised to 1. capacity is the number of
   buckets, rounded up to a power of two >= 512 (max 2^24). NULL on bad arguments or no memory. */
rl *rl_new(double rate_per_s, double burst, size_t capacity);
void rl_free(rl *r);
/* returns 1 allowed (one token taken), 0 limited and sets *retry_after_s (whole seconds, >= 1)
   if retry_after_s is non-NULL. A NULL r allows. */
int rl_take(rl *r, const void *key, size_t keylen, int64_t now_ns, int *retry_after_s);
void rl_reset(rl *r, const void *key,
              size_t keylen); /* e.g. clear failed-login bucket after a good login */

#endif
