/* libFuzzer target for net/auth.c. The first input byte picks the mode, the rest is the data:
 *   even: the data is a token for auth_verify (and auth_verify_cached) with an HS256 verifier;
 *         a second verify of the same bytes must agree with the first (cache and plain path).
 *   odd:  the data is a JWKS document for auth_verifier_new (RS256 if bit 1 is clear, else ES256).
 * Inputs are bounded by the code under test (AUTH_TOKEN_MAX, JWKS size limit), not here. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/auth.h"

static const unsigned char SECRET[32] = "fuzz-secret-fuzz-secret-fuzz-sec";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static auth_verifier *hs;
    static auth_cache *cache;
    if (!hs) {
        auth_config cfg = {.hs_secret = SECRET,
                           .hs_secret_len = sizeof SECRET,
                           .issuer = "circa",
                           .audience = "circa",
                           .leeway_s = 30};
        if (auth_verifier_new(&cfg, &hs, NULL, 0) != 0 || !(cache = auth_cache_new(64)))
            abort();
    }
    if (size == 0)
        return 0;
    uint8_t mode = data[0];
    const char *body = (const char *)data + 1;
    size_t len = size - 1;

    if ((mode & 1) == 0) {
        /* copy so that reads past len are caught by the sanitizers */
        char *tok = malloc(len ? len : 1);
        auth_claims a, b;
        if (!tok)
            return 0;
        memcpy(tok, body, len);
        int rc = auth_verify(hs, tok, len, 1700000000, &a);
        int rc2 = auth_verify_cached(hs, cache, tok, len, 1700000000, &b);
        if (rc != rc2 || (rc == 0 && memcmp(&a, &b, sizeof a) != 0))
            abort();
        free(tok);
    } else {
        char *doc = malloc(len ? len : 1);
        auth_verifier *v = NULL;
        if (!doc)
            return 0;
        memcpy(doc, body, len);
        auth_config cfg = {
            .alg = (mode & 2) ? "ES256" : "RS256", .jwks_json = doc, .jwks_json_len = len};
        char err[128];
        if (auth_verifier_new(&cfg, &v, err, sizeof err) == 0)
            auth_verifier_free(v);
        free(doc);
    }
    return 0;
}
