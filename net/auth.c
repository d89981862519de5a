/* net/auth.c: JWT verification, HS256 signing, passwords, API keys, access grants.
 *
 * Design
 * - An auth_verifier is built once from the config and then only read, so all HTTP threads share
 * it. It owns the HS256 secret or a list of public keys; every public key (from a PEM file or a
 * JWKS document) is validated with OpenSSL (type, size, curve, public-key check) and stored
 * re-encoded as a SubjectPublicKeyInfo PEM, which is what libjwt takes as a verification key.
 * - auth_verify does its own strict pre-checks before handing the token to libjwt: length limit,
 *   base64url alphabet, exactly three non-empty segments (libjwt 1.10.2 writes one byte past a
 *   malloc(0) buffer on an empty segment), header decoded and parsed by us with a size limit and
 *   duplicate keys refused, header "alg" must equal the configured alg (libjwt verifies with
 * whatever alg the header names), "kid" selects the key. libjwt (jwt_decode) then checks the
 * signature, and its idea of the alg is compared again. Claims are read from our own parse of the
 * payload (libjwt turns non-integer numbers into 0), after the signature has been verified.
 * - auth_cache is a per-thread 2-way set-associative table indexed by a seeded hash of the token; a
 *   slot keeps a copy of the token (compared in full on a hit), the claims and the id of the
 * verifier that accepted it. Entries are served until exp (+ leeway), then refused and dropped.
 * - Passwords (PBKDF2), API keys (SHA-256 of a random key) and grants (HMAC-SHA256) use OpenSSL and
 *   compare with CRYPTO_memcmp. Key material never appears in error messages.
 */
#define _POSIX_C_SOURCE 200809L
#include "net/auth.h"

#include "core/core.h"

#include <errno.h>
#include <jansson.h>
#include <jwt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#define HEADER_B64_MAX   1024  /* encoded JOSE header */
#define KEY_FILE_MAX     16384 /* PEM public key file */
#define JWKS_MAX         65536 /* JWKS document */
#define JWKS_KEYS_MAX    32
#define KID_MAX          128
#define RSA_BITS_MIN     2048
#define RSA_N_MAX        1024 /* bytes: 8192-bit modulus */
#define RSA_E_MAX        8
#define EC_COORD_LEN     32  /* P-256 */
#define CFG_STR_MAX      256 /* issuer, audience */
#define LEEWAY_MAX       600
#define AUD_ARRAY_MAX    16
#define HS_SECRET_MAX    4096
#define PASSWORD_MAX     1024
#define NOW_MAX          ((int64_t)1 << 40) /* sanity bound for unix seconds */
#define TTL_MAX          ((int64_t)10 * 366 * 86400)
#define NUMERIC_DATE_MAX 9007199254740992.0 /* 2^53 */
#define CACHE_SLOTS_MAX  65536

typedef struct vkey {
    char *kid; /* NULL: key has no kid */
    unsigned char *pem;
    size_t pem_len;
} vkey;

struct auth_verifier {
    jwt_alg_t alg;
    const char *alg_name; /* static string */
    unsigned char *secret;
    size_t secret_len;
    vkey *keys;
    size_t nkeys;
    char *issuer;
    char *audience;
    int64_t leeway;
    uint64_t id; /* binds cache entries to this verifier */
};

typedef struct cslot {
    uint64_t vid;
    uint64_t hash;
    uint64_t used; /* LRU stamp */
    char *tok;
    size_t len; /* 0: empty */
    size_t cap;
    auth_claims claims;
} cslot;

struct auth_cache {
    cslot *slots; /* nsets * 2 */
    size_t nsets; /* power of two */
    uint64_t seed;
    uint64_t tick;
};

static atomic_uint_fast64_t next_verifier_id = 1;

static const char *const ROLES[] = {"member", "librarian", "admin", "service"};
static const char *const PLANS[] = {"standard", "premium"};

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errlen, const char *fmt,
                                                          ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static bool in_set(const char *s, const char *const *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, set[i]) == 0)
            return true;
    return false;
}

static bool b64url_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* Output capacity b64url_decode needs for inlen characters. */
static size_t b64url_cap(size_t inlen)
{
    return (inlen + 3) / 4 * 3;
}

/* Unpadded base64url -> bytes, one quad at a time through EVP_DecodeBlock. out must hold
 * b64url_cap(inlen). */
static int b64url_decode(const char *in, size_t inlen, unsigned char *out, size_t *outlen)
{
    if (inlen == 0 || inlen % 4 == 1)
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < inlen; i += 4) {
        unsigned char quad[4] = {'=', '=', '=', '='};
        size_t take = inlen - i < 4 ? inlen - i : 4;
        for (size_t j = 0; j < take; j++) {
            unsigned char c = (unsigned char)in[i + j];
            if (!b64url_char(c))
                return -1;
            quad[j] = c == '-' ? '+' : c == '_' ? '/' : c;
        }
        if (EVP_DecodeBlock(out + n, quad, 4) != 3)
            return -1;
        n += take == 4 ? 3 : take - 1;
    }
    *outlen = n;
    return 0;
}

/* bytes -> unpadded base64url; out must hold 4 * ceil(n / 3) + 1. Returns the length. */
static size_t b64url_encode(const unsigned char *in, size_t n, char *out)
{
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    while (len > 0 && out[len - 1] == '=')
        len--;
    out[len] = '\0';
    for (int i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return (size_t)len;
}

/* Decode a base64url segment and parse it as a JSON object, duplicates refused. */
static json_t *decode_json_segment(const char *seg, size_t len)
{
    unsigned char *buf = malloc(b64url_cap(len));
    json_t *j = NULL;
    size_t n;
    if (!buf)
        return NULL;
    if (b64url_decode(seg, len, buf, &n) != 0)
        goto done;
    j = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
done:
    free(buf);
    return j;
}

/* Copy a JSON string of 1..cap-1 bytes (the parser refuses \u0000 without JSON_ALLOW_NUL). */
static bool copy_jstr(const json_t *s, char *dst, size_t cap)
{
    if (!json_is_string(s))
        return false;
    size_t n = json_string_length(s);
    if (n == 0 || n >= cap)
        return false;
    memcpy(dst, json_string_value(s), n + 1);
    return true;
}

static bool jstr_equals(const json_t *s, const char *want)
{
    return json_is_string(s) && json_string_length(s) == strlen(want) &&
           strcmp(json_string_value(s), want) == 0;
}

/* NumericDate: integer or real within +-2^53, truncated to whole seconds. */
static bool numeric_date(const json_t *j, int64_t *out)
{
    if (json_is_integer(j)) {
        *out = (int64_t)json_integer_value(j);
        return true;
    }
    if (json_is_real(j)) {
        double d = json_real_value(j);
        if (!(d > -NUMERIC_DATE_MAX && d < NUMERIC_DATE_MAX))
            return false;
        *out = (int64_t)floor(d);
        return true;
    }
    return false;
}

static int read_file_limited(const char *path, size_t max, char **out, size_t *outlen)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n;
    if (!f)
        return -1;
    buf = malloc(max + 1);
    if (!buf)
        goto fail;
    n = fread(buf, 1, max + 1, f);
    if (ferror(f) || n > max)
        goto fail;
    fclose(f);
    buf[n] = '\0';
    *out = buf;
    *outlen = n;
    return 0;
fail:
    free(buf);
    fclose(f);
    return -1;
}

/* Key type/size/curve must fit the alg; the key is stored as SPKI PEM for libjwt. */
static int add_pkey(auth_verifier *v, const char *kid, EVP_PKEY *pk, char *err, size_t errlen)
{
    BIO *bio = NULL;
    char *pem_data;
    long pem_len;
    char group[32];
    vkey *k;

    if (v->alg == JWT_ALG_RS256) {
        int bits = EVP_PKEY_get_bits(pk);
        if (!EVP_PKEY_is_a(pk, "RSA") || bits < RSA_BITS_MIN || bits > RSA_N_MAX * 8) {
            set_err(err, errlen, "RS256 needs an RSA public key of %d..%d bits", RSA_BITS_MIN,
                    RSA_N_MAX * 8);
            return AUTH_ECONFIG;
        }
    } else if (!EVP_PKEY_is_a(pk, "EC") ||
               !EVP_PKEY_get_group_name(pk, group, sizeof group, NULL) ||
               strcmp(group, "prime256v1") != 0) {
        set_err(err, errlen, "ES256 needs an EC P-256 public key");
        return AUTH_ECONFIG;
    }
    if (v->nkeys == JWKS_KEYS_MAX) {
        set_err(err, errlen, "more than %d keys", JWKS_KEYS_MAX);
        return AUTH_ECONFIG;
    }
    k = &v->keys[v->nkeys];
    bio = BIO_new(BIO_s_mem());
    if (!bio || PEM_write_bio_PUBKEY(bio, pk) != 1)
        goto fail;
    pem_len = BIO_get_mem_data(bio, &pem_data);
    if (pem_len <= 0)
        goto fail;
    k->pem = malloc((size_t)pem_len);
    k->kid = kid ? strdup(kid) : NULL;
    if (!k->pem || (kid && !k->kid)) {
        free(k->pem);
        free(k->kid);
        k->pem = NULL;
        k->kid = NULL;
        BIO_free(bio);
        set_err(err, errlen, "out of memory");
        return AUTH_ENOMEM;
    }
    memcpy(k->pem, pem_data, (size_t)pem_len);
    k->pem_len = (size_t)pem_len;
    v->nkeys++;
    BIO_free(bio);
    return 0;
fail:
    BIO_free(bio);
    set_err(err, errlen, "cannot encode public key");
    return AUTH_ECRYPTO;
}

static int load_pem_file(auth_verifier *v, const char *path, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len;
    BIO *bio = NULL;
    EVP_PKEY *pk = NULL;
    int rc = AUTH_ECONFIG;

    if (read_file_limited(path, KEY_FILE_MAX, &buf, &len) != 0) {
        set_err(err, errlen, "cannot read public key file %s (or larger than %d bytes)", path,
                KEY_FILE_MAX);
        goto fail;
    }
    bio = BIO_new_mem_buf(buf, (int)len);
    if (!bio) {
        rc = AUTH_ENOMEM;
        goto fail;
    }
    pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    if (!pk) {
        set_err(err, errlen, "%s: no PEM public key (\"BEGIN PUBLIC KEY\")", path);
        goto fail;
    }
    rc = add_pkey(v, NULL, pk, err, errlen);
fail:
    EVP_PKEY_free(pk);
    BIO_free(bio);
    free(buf);
    return rc;
}

/* Decode a base64url JWK member of at most max bytes. */
static int jwk_bytes(const json_t *jwk, const char *name, unsigned char *out, size_t max,
                     size_t *outlen)
{
    const json_t *s = json_object_get(jwk, name);
    if (!json_is_string(s))
        return -1;
    size_t slen = json_string_length(s);
    if (slen == 0 || b64url_cap(slen) > max + 2)
        return -1;
    unsigned char tmp[RSA_N_MAX + 2];
    if (b64url_decode(json_string_value(s), slen, tmp, outlen) != 0 || *outlen > max)
        return -1;
    memcpy(out, tmp, *outlen);
    return 0;
}

static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY_CTX *chk = NULL;
    EVP_PKEY *pk = NULL;
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
        goto fail;
    chk = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
    if (!chk || EVP_PKEY_public_check(chk) != 1) {
        EVP_PKEY_free(pk);
        pk = NULL;
    }
fail:
    EVP_PKEY_CTX_free(chk);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pk;
}

static EVP_PKEY *jwk_rsa(const json_t *jwk)
{
    unsigned char n[RSA_N_MAX], e[RSA_E_MAX];
    size_t nlen, elen;
    BIGNUM *bn_n = NULL, *bn_e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY *pk = NULL;
    if (jwk_bytes(jwk, "n", n, sizeof n, &nlen) != 0 ||
        jwk_bytes(jwk, "e", e, sizeof e, &elen) != 0)
        return NULL;
    bn_n = BN_bin2bn(n, (int)nlen, NULL);
    bn_e = BN_bin2bn(e, (int)elen, NULL);
    bld = OSSL_PARAM_BLD_new();
    if (!bn_n || !bn_e || !bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e))
        goto fail;
    pk = pkey_from_params("RSA", bld);
fail:
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    return pk;
}

static EVP_PKEY *jwk_ec(const json_t *jwk)
{
    unsigned char pub[1 + 2 * EC_COORD_LEN];
    size_t xlen, ylen;
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY *pk = NULL;
    pub[0] = 0x04; /* uncompressed point */
    if (jwk_bytes(jwk, "x", pub + 1, EC_COORD_LEN, &xlen) != 0 || xlen != EC_COORD_LEN ||
        jwk_bytes(jwk, "y", pub + 1 + EC_COORD_LEN, EC_COORD_LEN, &ylen) != 0 ||
        ylen != EC_COORD_LEN)
        return NULL;
    bld = OSSL_PARAM_BLD_new();
    if (!bld ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub))
        goto fail;
    pk = pkey_from_params("EC", bld);
fail:
    OSSL_PARAM_BLD_free(bld);
    return pk;
}

/* Optional string member: absent is fine, present must be a string. */
static bool opt_str(const json_t *obj, const char *name, const char **out)
{
    const json_t *s = json_object_get(obj, name);
    *out = NULL;
    if (!s)
        return true;
    if (!json_is_string(s))
        return false;
    *out = json_string_value(s);
    return true;
}

static int load_jwks(auth_verifier *v, const char *text, size_t len, char *err, size_t errlen)
{
    json_t *root = NULL;
    const json_t *keys;
    int rc = AUTH_ECONFIG;

    if (len > JWKS_MAX) {
        set_err(err, errlen, "JWKS larger than %d bytes", JWKS_MAX);
        goto fail;
    }
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
    keys = json_object_get(root, "keys");
    if (!json_is_object(root) || !json_is_array(keys) || json_array_size(keys) > JWKS_KEYS_MAX) {
        set_err(err, errlen, "JWKS must be an object with a \"keys\" array of at most %d keys",
                JWKS_KEYS_MAX);
        goto fail;
    }
    for (size_t i = 0; i < json_array_size(keys); i++) {
        const json_t *jwk = json_array_get(keys, i);
        const char *kty, *use, *alg, *kid, *crv;
        EVP_PKEY *pk;
        if (!json_is_object(jwk) || !opt_str(jwk, "kty", &kty) || !kty ||
            !opt_str(jwk, "use", &use) || !opt_str(jwk, "alg", &alg) ||
            !opt_str(jwk, "kid", &kid) || !opt_str(jwk, "crv", &crv) ||
            (kid && (kid[0] == '\0' || strlen(kid) > KID_MAX))) {
            set_err(err, errlen, "JWKS key %zu: bad kty/use/alg/kid/crv member", i);
            goto fail;
        }
        if ((use && strcmp(use, "sig") != 0) || (alg && strcmp(alg, v->alg_name) != 0))
            continue;
        if (v->alg == JWT_ALG_RS256 && strcmp(kty, "RSA") == 0)
            pk = jwk_rsa(jwk);
        else if (v->alg == JWT_ALG_ES256 && strcmp(kty, "EC") == 0 && crv &&
                 strcmp(crv, "P-256") == 0)
            pk = jwk_ec(jwk);
        else
            continue;
        if (!pk) {
            set_err(err, errlen, "JWKS key %zu: invalid %s key parameters", i, kty);
            goto fail;
        }
        for (size_t k = 0; kid && k < v->nkeys; k++) {
            if (v->keys[k].kid && strcmp(v->keys[k].kid, kid) == 0) {
                EVP_PKEY_free(pk);
                set_err(err, errlen, "JWKS key %zu: duplicate kid", i);
                goto fail;
            }
        }
        rc = add_pkey(v, kid, pk, err, errlen);
        EVP_PKEY_free(pk);
        if (rc != 0)
            goto fail;
        rc = AUTH_ECONFIG;
    }
    if (v->nkeys == 0) {
        set_err(err, errlen, "JWKS has no usable %s signing key", v->alg_name);
        goto fail;
    }
    rc = 0;
fail:
    json_decref(root);
    return rc;
}

static int dup_cfg_str(const char *s, char **out, const char *what, char *err, size_t errlen)
{
    if (!s)
        return 0;
    if (s[0] == '\0' || strlen(s) > CFG_STR_MAX) {
        set_err(err, errlen, "%s must be 1..%d bytes", what, CFG_STR_MAX);
        return AUTH_ECONFIG;
    }
    *out = strdup(s);
    if (!*out) {
        set_err(err, errlen, "out of memory");
        return AUTH_ENOMEM;
    }
    return 0;
}

int auth_verifier_new(const auth_config *cfg, auth_verifier **out, char *err, size_t errlen)
{
    auth_verifier *v = NULL;
    const char *alg;
    int rc = AUTH_EINVAL;
    int sources;

    set_err(err, errlen, "%s", "");
    if (!out)
        return AUTH_EINVAL;
    *out = NULL;
    if (!cfg) {
        set_err(err, errlen, "no config");
        return AUTH_EINVAL;
    }
    v = calloc(1, sizeof *v);
    if (!v) {
        rc = AUTH_ENOMEM;
        goto fail;
    }
    alg = cfg->alg && cfg->alg[0] ? cfg->alg : "HS256";
    if (strcmp(alg, "HS256") == 0) {
        v->alg = JWT_ALG_HS256;
        v->alg_name = "HS256";
    } else if (strcmp(alg, "RS256") == 0) {
        v->alg = JWT_ALG_RS256;
        v->alg_name = "RS256";
    } else if (strcmp(alg, "ES256") == 0) {
        v->alg = JWT_ALG_ES256;
        v->alg_name = "ES256";
    } else {
        set_err(err, errlen, "unsupported alg (HS256, RS256 or ES256)");
        rc = AUTH_ECONFIG;
        goto fail;
    }
    if (cfg->leeway_s < 0 || cfg->leeway_s > LEEWAY_MAX) {
        set_err(err, errlen, "leeway_s must be 0..%d", LEEWAY_MAX);
        rc = AUTH_ECONFIG;
        goto fail;
    }
    v->leeway = cfg->leeway_s;
    if ((rc = dup_cfg_str(cfg->issuer, &v->issuer, "issuer", err, errlen)) != 0 ||
        (rc = dup_cfg_str(cfg->audience, &v->audience, "audience", err, errlen)) != 0)
        goto fail;

    sources = (cfg->public_key_file != NULL) + (cfg->jwks_file != NULL) + (cfg->jwks_json != NULL);
    rc = AUTH_ECONFIG;
    if (v->alg == JWT_ALG_HS256) {
        if (sources != 0) {
            set_err(err, errlen, "public_key_file/jwks need alg RS256 or ES256");
            goto fail;
        }
        if (!cfg->hs_secret || cfg->hs_secret_len < AUTH_HS_SECRET_MIN ||
            cfg->hs_secret_len > HS_SECRET_MAX) {
            set_err(err, errlen, "HS256 secret must be %d..%d bytes", AUTH_HS_SECRET_MIN,
                    HS_SECRET_MAX);
            goto fail;
        }
        v->secret = malloc(cfg->hs_secret_len);
        if (!v->secret) {
            rc = AUTH_ENOMEM;
            goto fail;
        }
        memcpy(v->secret, cfg->hs_secret, cfg->hs_secret_len);
        v->secret_len = cfg->hs_secret_len;
    } else {
        if (sources != 1) {
            set_err(err, errlen, "%s needs exactly one of public_key_file, jwks_file, jwks_json",
                    v->alg_name);
            goto fail;
        }
        v->keys = calloc(JWKS_KEYS_MAX, sizeof *v->keys);
        if (!v->keys) {
            rc = AUTH_ENOMEM;
            goto fail;
        }
        if (cfg->public_key_file) {
            rc = load_pem_file(v, cfg->public_key_file, err, errlen);
        } else if (cfg->jwks_file) {
            char *text = NULL;
            size_t len;
            if (read_file_limited(cfg->jwks_file, JWKS_MAX, &text, &len) != 0) {
                set_err(err, errlen, "cannot read JWKS file %s (or larger than %d bytes)",
                        cfg->jwks_file, JWKS_MAX);
                goto fail;
            }
            rc = load_jwks(v, text, len, err, errlen);
            free(text);
        } else {
            rc = load_jwks(v, cfg->jwks_json, cfg->jwks_json_len, err, errlen);
        }
        if (rc != 0)
            goto fail;
    }
    v->id = atomic_fetch_add(&next_verifier_id, 1);
    *out = v;
    return 0;
fail:
    if (rc == AUTH_ENOMEM)
        set_err(err, errlen, "out of memory");
    auth_verifier_free(v);
    return rc;
}

void auth_verifier_free(auth_verifier *v)
{
    if (!v)
        return;
    if (v->secret) {
        OPENSSL_cleanse(v->secret, v->secret_len);
        free(v->secret);
    }
    for (size_t i = 0; i < v->nkeys; i++) {
        free(v->keys[i].kid);
        free(v->keys[i].pem);
    }
    free(v->keys);
    free(v->issuer);
    free(v->audience);
    free(v);
}

/* Header checks; on success (key, keylen) is the verification key to use. */
static int check_header(const auth_verifier *v, const char *seg, size_t len,
                        const unsigned char **key, size_t *keylen)
{
    json_t *h;
    const json_t *kid, *typ;
    int rc = AUTH_EINVAL;

    if (len > HEADER_B64_MAX)
        return AUTH_EINVAL;
    h = decode_json_segment(seg, len);
    if (!h)
        return AUTH_EINVAL;
    if (!jstr_equals(json_object_get(h, "alg"), v->alg_name)) {
        rc = AUTH_EALG;
        goto done;
    }
    /* libjwt refuses a typ other than "JWT" (case-insensitive); "crit" extensions are not
     * understood */
    typ = json_object_get(h, "typ");
    if ((typ && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT") != 0)) ||
        json_object_get(h, "crit"))
        goto done;
    if (v->alg == JWT_ALG_HS256) {
        *key = v->secret;
        *keylen = v->secret_len;
        rc = 0;
        goto done;
    }
    rc = AUTH_EKID;
    kid = json_object_get(h, "kid");
    if (!kid) {
        if (v->nkeys == 1) {
            *key = v->keys[0].pem;
            *keylen = v->keys[0].pem_len;
            rc = 0;
        }
        goto done;
    }
    if (!json_is_string(kid))
        goto done;
    for (size_t i = 0; i < v->nkeys; i++) {
        if (v->keys[i].kid && jstr_equals(kid, v->keys[i].kid)) {
            *key = v->keys[i].pem;
            *keylen = v->keys[i].pem_len;
            rc = 0;
            break;
        }
    }
done:
    json_decref(h);
    return rc;
}

static int check_aud(const json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return jstr_equals(aud, want) ? 0 : AUTH_EAUD;
    if (!json_is_array(aud) || json_array_size(aud) > AUD_ARRAY_MAX)
        return AUTH_EAUD;
    for (size_t i = 0; i < json_array_size(aud); i++)
        if (jstr_equals(json_array_get(aud, i), want))
            return 0;
    return AUTH_EAUD;
}

static int check_claims(const auth_verifier *v, const json_t *c, int64_t now, auth_claims *out)
{
    const json_t *nbf = json_object_get(c, "nbf");
    const json_t *plan = json_object_get(c, "plan");
    int64_t exp, nbf_s;

    if (!numeric_date(json_object_get(c, "exp"), &exp))
        return AUTH_ECLAIM;
    if (exp <= now - v->leeway)
        return AUTH_EEXPIRED;
    if (nbf) {
        if (!numeric_date(nbf, &nbf_s))
            return AUTH_ECLAIM;
        if (nbf_s > now + v->leeway)
            return AUTH_ENOTYET;
    }
    if (v->issuer && !jstr_equals(json_object_get(c, "iss"), v->issuer))
        return AUTH_EISS;
    if (v->audience && check_aud(json_object_get(c, "aud"), v->audience) != 0)
        return AUTH_EAUD;
    if (!copy_jstr(json_object_get(c, "sub"), out->sub, sizeof out->sub) ||
        !copy_jstr(json_object_get(c, "role"), out->role, sizeof out->role) ||
        !in_set(out->role, ROLES, sizeof ROLES / sizeof ROLES[0]))
        return AUTH_ECLAIM;
    if (plan && (!copy_jstr(plan, out->plan, sizeof out->plan) ||
                 !in_set(out->plan, PLANS, sizeof PLANS / sizeof PLANS[0])))
        return AUTH_ECLAIM;
    out->exp = exp;
    return 0;
}

int auth_verify(const auth_verifier *v, const char *token, size_t len, int64_t now_s,
                auth_claims *out)
{
    char tok[AUTH_TOKEN_MAX + 1];
    size_t dot[2], ndots = 0;
    const unsigned char *key = NULL;
    size_t keylen = 0;
    json_t *claims = NULL;
    jwt_t *jwt = NULL;
    int rc = AUTH_EINVAL, jrc;

    if (!out)
        return AUTH_EINVAL;
    memset(out, 0, sizeof *out);
    if (!v || !token || len == 0 || now_s < 0 || now_s > NOW_MAX)
        return AUTH_EINVAL;
    if (len > AUTH_TOKEN_MAX)
        return AUTH_ETOOBIG;
    for (size_t i = 0; i < len; i++) {
        if (token[i] == '.') {
            if (ndots == 2)
                return AUTH_EINVAL;
            dot[ndots++] = i;
        } else if (!b64url_char((unsigned char)token[i])) {
            return AUTH_EINVAL;
        }
    }
    if (ndots != 2 || dot[0] == 0 || dot[1] == dot[0] + 1)
        return AUTH_EINVAL;
    if ((rc = check_header(v, token, dot[0], &key, &keylen)) != 0)
        return rc;
    claims = decode_json_segment(token + dot[0] + 1, dot[1] - dot[0] - 1);
    if (!claims)
        return AUTH_EINVAL;
    rc = AUTH_ESIG;
    if (dot[1] + 1 == len)
        goto fail;
    memcpy(tok, token, len);
    tok[len] = '\0';
    jrc = jwt_decode(&jwt, tok, key, (int)keylen);
    if (jrc != 0) {
        rc = jrc == ENOMEM ? AUTH_ENOMEM : AUTH_ESIG;
        goto fail;
    }
    if (jwt_get_alg(jwt) != v->alg) {
        rc = AUTH_EALG;
        goto fail;
    }
    rc = check_claims(v, claims, now_s, out);
fail:
    jwt_free(jwt);
    json_decref(claims);
    if (rc != 0)
        memset(out, 0, sizeof *out);
    return rc;
}

const char *auth_strerror(int code)
{
    switch (code) {
    case 0:
        return "ok";
    case AUTH_EINVAL:
        return "malformed token or invalid argument";
    case AUTH_ESIG:
        return "bad signature";
    case AUTH_EEXPIRED:
        return "token expired";
    case AUTH_ENOTYET:
        return "token not yet valid";
    case AUTH_EALG:
        return "unexpected algorithm";
    case AUTH_EKID:
        return "unknown key id";
    case AUTH_EISS:
        return "wrong issuer";
    case AUTH_EAUD:
        return "wrong audience";
    case AUTH_ECLAIM:
        return "missing or invalid claim";
    case AUTH_ETOOBIG:
        return "token too large";
    case AUTH_ENOMEM:
        return "out of memory";
    case AUTH_ECONFIG:
        return "bad auth configuration";
    case AUTH_ECRYPTO:
        return "crypto library failure";
    default:
        return "unknown error";
    }
}

/* ---- cache ---- */

static uint64_t token_hash(uint64_t seed, const char *p, size_t n)
{
    return core_hash64(p, n, seed);
}

auth_cache *auth_cache_new(size_t slots)
{
    auth_cache *c;
    size_t nsets = 1;
    if (slots == 0 || slots > CACHE_SLOTS_MAX)
        return NULL;
    while (nsets * 2 < slots)
        nsets *= 2;
    c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->nsets = nsets;
    c->slots = calloc(nsets * 2, sizeof *c->slots);
    if (!c->slots || auth_random(&c->seed, sizeof c->seed) != 0)
        goto fail;
    return c;
fail:
    auth_cache_free(c);
    return NULL;
}

void auth_cache_free(auth_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; c->slots && i < c->nsets * 2; i++)
        free(c->slots[i].tok);
    free(c->slots);
    free(c);
}

int auth_verify_cached(const auth_verifier *v, auth_cache *c, const char *token, size_t len,
                       int64_t now_s, auth_claims *out)
{
    if (!c || !v || !token || !out || len == 0 || len > AUTH_TOKEN_MAX || now_s < 0 ||
        now_s > NOW_MAX)
        return auth_verify(v, token, len, now_s, out);
    uint64_t h = token_hash(c->seed, token, len);
    cslot *set = &c->slots[(h & (c->nsets - 1)) * 2];
    for (int w = 0; w < 2; w++) {
        cslot *s = &set[w];
        if (s->len != len || s->hash != h || s->vid != v->id ||
            CRYPTO_memcmp(s->tok, token, len) != 0)
            continue;
        if (s->claims.exp <= now_s - v->leeway) {
            s->len = 0;
            memset(out, 0, sizeof *out);
            return AUTH_EEXPIRED;
        }
        s->used = ++c->tick;
        *out = s->claims;
        return 0;
    }
    int rc = auth_verify(v, token, len, now_s, out);
    if (rc != 0)
        return rc;
    cslot *s = set[0].len == 0              ? &set[0]
               : set[1].len == 0            ? &set[1]
               : set[0].used <= set[1].used ? &set[0]
                                            : &set[1];
    if (s->cap < len) {
        char *p = realloc(s->tok, len);
        if (!p) /* still verified, just not cached */
            return 0;
        s->tok = p;
        s->cap = len;
    }
    memcpy(s->tok, token, len);
    s->len = len;
    s->hash = h;
    s->vid = v->id;
    s->claims = *out;
    s->used = ++c->tick;
    return 0;
}

/* ---- signing ---- */

int auth_sign_hs256(const unsigned char *key, size_t keylen, const char *sub, const char *role,
                    const char *plan, const char *iss, const char *aud, int64_t now_s,
                    int64_t ttl_s, char **out)
{
    jwt_t *jwt = NULL;
    int rc = AUTH_EINVAL;

    if (!out)
        return AUTH_EINVAL;
    *out = NULL;
    if (!key || keylen < AUTH_HS_SECRET_MIN || keylen > HS_SECRET_MAX || !sub || !role ||
        sub[0] == '\0' || strlen(sub) >= sizeof((auth_claims *)0)->sub ||
        !in_set(role, ROLES, sizeof ROLES / sizeof ROLES[0]) ||
        (plan && plan[0] && !in_set(plan, PLANS, sizeof PLANS / sizeof PLANS[0])) ||
        (iss && strlen(iss) > CFG_STR_MAX) || (aud && strlen(aud) > CFG_STR_MAX) || now_s < 0 ||
        now_s > NOW_MAX || ttl_s <= 0 || ttl_s > TTL_MAX)
        return AUTH_EINVAL;
    rc = AUTH_ENOMEM;
    if (jwt_new(&jwt) != 0)
        goto fail;
    if (jwt_set_alg(jwt, JWT_ALG_HS256, key, (int)keylen) != 0 ||
        jwt_add_grant(jwt, "sub", sub) != 0 || jwt_add_grant(jwt, "role", role) != 0 ||
        (plan && plan[0] && jwt_add_grant(jwt, "plan", plan) != 0) ||
        (iss && jwt_add_grant(jwt, "iss", iss) != 0) ||
        (aud && jwt_add_grant(jwt, "aud", aud) != 0) ||
        jwt_add_grant_int(jwt, "iat", (long)now_s) != 0 ||
        jwt_add_grant_int(jwt, "exp", (long)(now_s + ttl_s)) != 0)
        goto fail;
    *out = jwt_encode_str(jwt);
    if (!*out)
        goto fail;
    rc = 0;
fail:
    jwt_free(jwt);
    return rc;
}

/* ---- passwords, randomness, API keys ---- */

int auth_password_hash(const char *pw, size_t pwlen, const unsigned char salt[16],
                       uint32_t iterations, unsigned char out[32])
{
    if (!pw || !salt || !out || pwlen > PASSWORD_MAX || iterations == 0 || iterations > INT_MAX)
        return AUTH_EINVAL;
    if (PKCS5_PBKDF2_HMAC(pw, (int)pwlen, salt, 16, (int)iterations, EVP_sha256(), 32, out) != 1)
        return AUTH_ECRYPTO;
    return 0;
}

int auth_password_verify(const char *pw, size_t pwlen, const unsigned char salt[16],
                         uint32_t iterations, const unsigned char hash[32])
{
    unsigned char got[32];
    if (!hash)
        return AUTH_EINVAL;
    int rc = auth_password_hash(pw, pwlen, salt, iterations, got);
    if (rc == 0)
        rc = CRYPTO_memcmp(got, hash, sizeof got) == 0;
    OPENSSL_cleanse(got, sizeof got);
    return rc;
}

int auth_random(void *buf, size_t n)
{
    if (n == 0)
        return 0;
    if (!buf || n > INT_MAX)
        return AUTH_EINVAL;
    return RAND_bytes(buf, (int)n) == 1 ? 0 : AUTH_ECRYPTO;
}

int auth_apikey_new(char key_out[64], unsigned char sha256_out[32])
{
    unsigned char raw[32];
    char enc[4 * ((sizeof raw + 2) / 3) + 1];
    if (!key_out || !sha256_out)
        return AUTH_EINVAL;
    if (auth_random(raw, sizeof raw) != 0)
        return AUTH_ECRYPTO;
    size_t n = b64url_encode(raw, sizeof raw, enc);
    OPENSSL_cleanse(raw, sizeof raw);
    memcpy(key_out, "ck_", 3);
    memcpy(key_out + 3, enc, n + 1);
    OPENSSL_cleanse(enc, sizeof enc);
    auth_apikey_hash(key_out, 3 + n, sha256_out);
    return 0;
}

void auth_apikey_hash(const char *key, size_t len, unsigned char sha256_out[32])
{
    SHA256((const unsigned char *)(key ? key : ""), key ? len : 0, sha256_out);
}

/* ---- access grants ---- */

static int grant_mac(const unsigned char *key, size_t keylen, const char *resource_id,
                     const char *user_id, int64_t exp, unsigned char mac[32])
{
    char expstr[24];
    EVP_MAC *m = NULL;
    EVP_MAC_CTX *ctx = NULL;
    size_t maclen = 0;
    int rc = -1;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (!key || keylen == 0 || !resource_id || !user_id)
        return -1;
    snprintf(expstr, sizeof expstr, "%lld", (long long)exp);
    m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    ctx = m ? EVP_MAC_CTX_new(m) : NULL;
    if (!ctx || EVP_MAC_init(ctx, key, keylen, params) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)resource_id, strlen(resource_id)) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)"\n", 1) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)user_id, strlen(user_id)) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)"\n", 1) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)expstr, strlen(expstr)) != 1 ||
        EVP_MAC_final(ctx, mac, &maclen, 32) != 1 || maclen != 32)
        goto fail;
    rc = 0;
fail:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(m);
    return rc;
}

void auth_grant_sign(const unsigned char *key, size_t keylen, const char *resource_id,
                     const char *user_id, int64_t exp, char sig_hex_out[65])
{
    unsigned char mac[32];
    sig_hex_out[0] = '\0';
    if (grant_mac(key, keylen, resource_id, user_id, exp, mac) != 0)
        return;
    core_hex(mac, sizeof mac, sig_hex_out);
    sig_hex_out[64] = '\0';
}

int auth_grant_verify(const unsigned char *key, size_t keylen, const char *resource_id,
                      const char *user_id, int64_t exp, const char *sig_hex, int64_t now_s)
{
    unsigned char want[32], got[32];
    if (!sig_hex || strnlen(sig_hex, 65) != 64)
        return 0;
    for (size_t i = 0; i < sizeof got; i++) {
        int hi = OPENSSL_hexchar2int((unsigned char)sig_hex[2 * i]),
            lo = OPENSSL_hexchar2int((unsigned char)sig_hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return 0;
        got[i] = (unsigned char)(hi << 4 | lo);
    }
    if (grant_mac(key, keylen, resource_id, user_id, exp, want) != 0)
        return 0;
    return (CRYPTO_memcmp(want, got, sizeof want) == 0) & (now_s < exp);
}
