/* net/auth.h: bearer-token (JWT) verification with a per-thread cache, HS256 signing,
 * password hashing, API keys and signed access grants. */
#ifndef CIRCA_NET_AUTH_H
#define CIRCA_NET_AUTH_H

#include <stddef.h>
#include <stdint.h>

enum {
    AUTH_EINVAL = -1,   /* bad argument or malformed token */
    AUTH_ESIG = -2,     /* signature does not verify */
    AUTH_EEXPIRED = -3, /* exp <= now - leeway */
    AUTH_ENOTYET = -4,  /* nbf > now + leeway */
    AUTH_EALG = -5,     /* header alg is not the configured one (incl. "none") */
    AUTH_EKID = -6,     /* kid missing or unknown in the JWKS */
    AUTH_EISS = -7,     /* iss missing or different */
    AUTH_EAUD = -8,     /* aud missing or does not contain the audience */
    AUTH_ECLAIM = -9,   /* exp/sub/role missing or of the wrong type/size/value */
    AUTH_ETOOBIG = -10, /* token longer than AUTH_TOKEN_MAX */
    AUTH_ENOMEM = -11,
    AUTH_ECONFIG = -12, /* unusable verifier configuration or key material */
    AUTH_ECRYPTO = -13, /* OpenSSL failure */
};

#define AUTH_TOKEN_MAX     8192 /* bytes of a compact JWT */
#define AUTH_HS_SECRET_MIN 32   /* HS256 secrets shorter than the hash are refused */
#define AUTH_APIKEY_LEN    46   /* "ck_" + 43 base64url chars */

/* claims we use */
typedef struct auth_claims {
    char sub[64];  /* user id (uuid) or api key id */
    char role[16]; /* member|librarian|admin|service */
    char plan[16]; /* standard|premium ("" if absent) */
    int64_t exp;   /* unix seconds */
} auth_claims;

typedef struct auth_config {
    const char *alg; /* "HS256" (default, also for NULL or ""), "RS256" or "ES256": enforced, never
                        taken from the token */
    const unsigned char
        *hs_secret; /* HS256 secret, >= AUTH_HS_SECRET_MIN bytes; ignored for RS256/ES256 */
    size_t hs_secret_len;
    const char *public_key_file; /* PEM (SubjectPublicKeyInfo) public key for RS256/ES256 */
    const char
        *jwks_file; /* JWKS file (keys selected by "kid"); RSA (n,e) and EC P-256 (crv,x,y) */
    const char *jwks_json; /* alternative to jwks_file: the JWKS document itself */
    size_t jwks_json_len;
    const char *issuer;   /* NULL: not checked; else "iss" must equal */
    const char *audience; /* NULL: not checked; else "aud" (string or array) must contain it */
    int leeway_s;         /* for exp and nbf, 0..600 */
} auth_config;

/* Immutable after creation; share one between threads. RS256/ES256 need exactly one of
 * public_key_file, jwks_file, jwks_json. JWKS keys whose kty/crv/use/alg do not fit the configured
 * alg are skipped; at least one must remain. A token without "kid" is accepted only when exactly
 * one key is configured. On error, err (if non-NULL) gets a reason (never key material). */
typedef struct auth_verifier auth_verifier;
int auth_verifier_new(const auth_config *cfg, auth_verifier **out, char *err, size_t errlen);
void auth_verifier_free(auth_verifier *v);

/* Verify a compact JWT of len bytes (need not be NUL-terminated). Thread-safe.
   Returns 0 and fills *out, or a negative AUTH_E* code (then *out is zeroed). */
int auth_verify(const auth_verifier *v, const char *token, size_t len, int64_t now_s,
                auth_claims *out);
const char *auth_strerror(int code); /* short human reason, no secrets */

/* Per-thread cache of verified tokens (not thread-safe; one per HTTP thread). 2-way
   set-associative, slots entries, each holding a copy of the token; entries are bound to the
   verifier that produced them. */
typedef struct auth_cache auth_cache;
auth_cache *auth_cache_new(size_t slots); /* 1..65536 slots; NULL on bad size or no memory */
void auth_cache_free(auth_cache *c);
/* verify through the cache: a hit is served until exp (+ leeway), then refused with AUTH_EEXPIRED
 */
int auth_verify_cached(const auth_verifier *v, auth_cache *c, const char *token, size_t len,
                       int64_t now_s, auth_claims *out);

/* HS256 signing, for login and `circa token`: iss/aud/plan optional (NULL = omitted); iat=now,
   exp=now+ttl. sub/role/plan must fit auth_claims. *out is malloc'd, free() it. */
int auth_sign_hs256(const unsigned char *key, size_t keylen, const char *sub, const char *role,
                    const char *plan, const char *iss, const char *aud, int64_t now_s,
                    int64_t ttl_s, char **out);

/* passwords: PBKDF2-HMAC-SHA256, 16-byte salt supplied by caller, 32-byte hash; pwlen <= 1024 */
int auth_password_hash(const char *pw, size_t pwlen, const unsigned char salt[16],
                       uint32_t iterations, unsigned char out[32]);
/* 1 match, 0 no, <0 error; constant-time compare */
int auth_password_verify(const char *pw, size_t pwlen, const unsigned char salt[16],
                         uint32_t iterations, const unsigned char hash[32]);
int auth_random(void *buf, size_t n); /* 0 or AUTH_ECRYPTO */

/* API keys: key = "ck_" + base64url(32 random bytes) (no padding, AUTH_APIKEY_LEN chars,
   NUL-terminated); only its SHA-256 is stored */
int auth_apikey_new(char key_out[64], unsigned char sha256_out[32]);
void auth_apikey_hash(const char *key, size_t len, unsigned char sha256_out[32]);

/* access grants: lowercase hex HMAC-SHA256 over "<resource_id>\n<user_id>\n<exp>".
   sign writes "" if the MAC cannot be computed (such a signature never verifies). */
void auth_grant_sign(const unsigned char *key, size_t keylen, const char *resource_id,
                     const char *user_id, int64_t exp, char sig_hex_out[65]);
/* 1 valid (signature matches and now < exp), 0 not; constant-time; hex accepted in either case */
int auth_grant_verify(const unsigned char *key, size_t keylen, const char *resource_id,
                      const char *user_id, int64_t exp, const char *sig_hex, int64_t now_s);

#endif
