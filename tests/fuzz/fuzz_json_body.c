/* libFuzzer target for request-body parsing as net/body.c does it: body_depth() scans the raw
 * bytes first, and only bodies nesting at most 16 deep reach json_loadb(JSON_REJECT_DUPLICATES).
 * Checks that the depth scan never crashes or reads out of bounds, and that it never under-counts
 * what jansson would build (a body jansson accepts nests no deeper than body_depth says).
 * Seeds: tests/fuzz/corpus/fuzz_json_body/. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

/* from net/body.c; net/internal.h would pull in libevent */
int body_depth(const char *p, size_t len);

#define MAX_DEPTH 16

static int json_depth(json_t *j)
{
    int max = 0;
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach (j, k, v) {
            int d = json_depth(v);
            if (d > max)
                max = d;
        }
        return max + 1;
    }
    if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach (j, i, v) {
            int d = json_depth(v);
            if (d > max)
                max = d;
        }
        return max + 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a copy of exactly size bytes, so ASan sees any read past the end */
    char *p = malloc(size ? size : 1);
    if (!p)
        return 0;
    for (size_t i = 0; i < size; i++)
        p[i] = (char)data[i];
    int depth = body_depth(p, size);
    if (depth < 0)
        __builtin_trap();
    if (depth <= MAX_DEPTH) {
        json_error_t je;
        json_t *o = json_loadb(p, size, JSON_REJECT_DUPLICATES, &je);
        if (o) {
            if (json_depth(o) > depth)
                __builtin_trap(); /* the pre-scan let a deeper document through */
            json_decref(o);
        }
    }
    free(p);
    return 0;
}
