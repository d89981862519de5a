/* Unit tests for net/auth.c: JWT verification (incl. the usual attacks), cache, signing, passwords,
 * API keys and access grants. Test keys are generated with OpenSSL, written as PEM/JWKS into a
 * mkdtemp directory, and RS256/ES256 test tokens are signed with libjwt. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>

#include <jwt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "net/auth.h"

#define NOW 1700000000LL
static const unsigned char SECRET[] = "0123456789abcdef0123456789abcdef";
#define SECRET_LEN 32

/* ---- temp files ---- */

static char g_dir[64];
static char g_files[8][160];
static int g_nfiles;
static void **g_allocs; /* strings made by the helpers below, freed after each test */
static size_t g_nallocs;

static void *keep(void *p)
{
    cr_assert_not_null(p);
    void **a = realloc(g_allocs, (g_nallocs + 1) * sizeof *a);
    cr_assert_not_null(a);
    g_allocs = a;
    g_allocs[g_nallocs++] = p;
    return p;
}

static void cleanup(void)
{
    for (int i = 0; i < g_nfiles; i++)
        unlink(g_files[i]);
    if (g_dir[0])
        rmdir(g_dir);
    for (size_t i = 0; i < g_nallocs; i++)
        free(g_allocs[i]);
    free(g_allocs);
}

TestSuite(auth, .fini = cleanup);

static const char *write_tmp(const char *name, const char *data)
{
    if (!g_dir[0]) {
        strcpy(g_dir, "/tmp/circa_auth_XXXXXX");
        cr_assert_not_null(mkdtemp(g_dir));
    }
    cr_assert_lt(g_nfiles, 8);
    char *path = g_files[g_nfiles++];
    snprintf(path, sizeof g_files[0], "%s/%s", g_dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, strlen(data), f), strlen(data));
    fclose(f);
    return path;
}

/* ---- encoding helpers ---- */

static char *b64url(const void *data, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    int len = EVP_EncodeBlock((unsigned char *)out, data, (int)n);
    while (len > 0 && out[len - 1] == '=')
        len--;
    out[len] = '\0';
    for (int i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return keep(out);
}

__attribute__((format(printf, 1, 2))) static char *fmt(const char *f, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, f);
    cr_assert_geq(vasprintf(&s, f, ap), 0);
    va_end(ap);
    return keep(s);
}

/* base64url(header).base64url(payload).sig */
static char *tok3(const char *header, const char *payload, const char *sig)
{
    return fmt("%s.%s.%s", b64url(header, strlen(header)), b64url(payload, strlen(payload)), sig);
}

/* A correct HS256 signature over the first two segments of tok. */
static char *hs256_sig(const char *tok, const unsigned char *key, size_t keylen)
{
    unsigned char mac[32];
    unsigned int maclen = 0;
    const char *dot2 = strrchr(tok, '.');
    HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)tok, (size_t)(dot2 - tok), mac,
         &maclen);
    return b64url(mac, maclen);
}

static char *libjwt_sign(jwt_alg_t alg, const void *key, size_t keylen, const char *kid,
                         const char *claims)
{
    jwt_t *jwt = NULL;
    cr_assert_eq(jwt_new(&jwt), 0);
    cr_assert_eq(jwt_add_grants_json(jwt, claims), 0);
    if (kid)
        cr_assert_eq(jwt_add_header(jwt, "kid", kid), 0);
    cr_assert_eq(jwt_set_alg(jwt, alg, key, (int)keylen), 0);
    char *t = jwt_encode_str(jwt);
    cr_assert_not_null(t);
    jwt_free(jwt);
    return keep(t);
}

static char *claims_std(long long exp)
{
    return fmt("{\"sub\":\"u-1\",\"role\":\"member\",\"plan\":\"premium\",\"exp\":%lld}", exp);
}

static char *hs_token(const char *claims)
{
    return libjwt_sign(JWT_ALG_HS256, SECRET, SECRET_LEN, NULL, claims);
}

/* HS256 token over an exact payload (libjwt re-serializes its claims) */
static char *hs_raw(const char *payload)
{
    char *unsigned_tok = tok3("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, "");
    return fmt("%s%s", unsigned_tok, hs256_sig(unsigned_tok, SECRET, SECRET_LEN));
}

static int verify(const auth_verifier *v, const char *tok, int64_t now)
{
    auth_claims c;
    return auth_verify(v, tok, strlen(tok), now, &c);
}

static auth_verifier *mk(const auth_config *cfg)
{
    auth_verifier *v = NULL;
    char err[256];
    int rc = auth_verifier_new(cfg, &v, err, sizeof err);
    cr_assert_eq(rc, 0, "verifier_new: %d %s", rc, err);
    return v;
}

static auth_verifier *hs_verifier(const char *iss, const char *aud, int leeway)
{
    auth_config cfg = {.hs_secret = SECRET,
                       .hs_secret_len = SECRET_LEN,
                       .issuer = iss,
                       .audience = aud,
                       .leeway_s = leeway};
    return mk(&cfg);
}

/* ---- key helpers ---- */

static EVP_PKEY *gen_rsa(void)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    cr_assert_not_null(k);
    return k;
}

static EVP_PKEY *gen_ec(void)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    cr_assert_not_null(k);
    return k;
}

static char *pem(EVP_PKEY *k, int private)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data;
    if (private)
        cr_assert_eq(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1);
    else
        cr_assert_eq(PEM_write_bio_PUBKEY(b, k), 1);
    long n = BIO_get_mem_data(b, &data);
    char *s = keep(strndup(data, (size_t)n));
    BIO_free(b);
    return s;
}

static char *bn_param_b64(EVP_PKEY *k, const char *name, int pad)
{
    BIGNUM *bn = NULL;
    unsigned char buf[512];
    cr_assert_eq(EVP_PKEY_get_bn_param(k, name, &bn), 1);
    int n = pad ? BN_bn2binpad(bn, buf, pad) : BN_bn2bin(bn, buf);
    BN_free(bn);
    return b64url(buf, (size_t)n);
}

static char *jwk_rsa(EVP_PKEY *k, const char *kid)
{
    char *n = bn_param_b64(k, OSSL_PKEY_PARAM_RSA_N, 0),
         *e = bn_param_b64(k, OSSL_PKEY_PARAM_RSA_E, 0);
    return fmt("{\"kty\":\"RSA\",\"kid\":\"%s\",\"use\":\"sig\",\"alg\":\"RS256\",\"n\":\"%s\","
               "\"e\":\"%s\"}",
               kid, n, e);
}

static char *jwk_ec(EVP_PKEY *k, const char *kid)
{
    char *x = bn_param_b64(k, OSSL_PKEY_PARAM_EC_PUB_X, 32),
         *y = bn_param_b64(k, OSSL_PKEY_PARAM_EC_PUB_Y, 32);
    return fmt("{\"kty\":\"EC\",\"kid\":\"%s\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}", kid,
               x, y);
}

/* ---- HS256 basics ---- */

Test(auth, hs256_sign_and_verify)
{
    auth_verifier *v = hs_verifier("circa", "circa", 30);
    char *t = NULL;
    auth_claims c;
    cr_assert_eq(auth_sign_hs256(SECRET, SECRET_LEN, "9b2f0c1e-0000-4000-8000-000000000001",
                                 "librarian", "premium", "circa", "circa", NOW, 3600, &t),
                 0);
    cr_assert_eq(auth_verify(v, t, strlen(t), NOW + 10, &c), 0);
    cr_assert_str_eq(c.sub, "9b2f0c1e-0000-4000-8000-000000000001");
    cr_assert_str_eq(c.role, "librarian");
    cr_assert_str_eq(c.plan, "premium");
    cr_assert_eq(c.exp, NOW + 3600);
    free(t);

    cr_assert_eq(auth_sign_hs256(SECRET, SECRET_LEN, "u", "member", NULL, NULL, NULL, NOW, 60, &t),
                 0);
    auth_verifier *plain = hs_verifier(NULL, NULL, 0);
    cr_assert_eq(auth_verify(plain, t, strlen(t), NOW, &c), 0);
    cr_assert_str_eq(c.plan, "");
    /* configured iss/aud must be present */
    cr_assert_eq(verify(v, t, NOW), AUTH_EISS);
    free(t);
    auth_verifier_free(plain);
    auth_verifier_free(v);
}

Test(auth, sign_rejects_bad_arguments)
{
    char *t = (char *)1;
    cr_assert_eq(auth_sign_hs256(SECRET, 16, "u", "member", NULL, NULL, NULL, NOW, 60, &t),
                 AUTH_EINVAL);
    cr_assert_null(t);
    cr_assert_eq(auth_sign_hs256(SECRET, SECRET_LEN, "u", "root", NULL, NULL, NULL, NOW, 60, &t),
                 AUTH_EINVAL);
    cr_assert_eq(
        auth_sign_hs256(SECRET, SECRET_LEN, "u", "member", "gold", NULL, NULL, NOW, 60, &t),
        AUTH_EINVAL);
    cr_assert_eq(auth_sign_hs256(SECRET, SECRET_LEN, "", "member", NULL, NULL, NULL, NOW, 60, &t),
                 AUTH_EINVAL);
    cr_assert_eq(auth_sign_hs256(SECRET, SECRET_LEN, "u", "member", NULL, NULL, NULL, NOW, 0, &t),
                 AUTH_EINVAL);
    char longsub[80];
    memset(longsub, 'a', sizeof longsub - 1);
    longsub[sizeof longsub - 1] = '\0';
    cr_assert_eq(
        auth_sign_hs256(SECRET, SECRET_LEN, longsub, "member", NULL, NULL, NULL, NOW, 60, &t),
        AUTH_EINVAL);
}

Test(auth, verifier_config_errors)
{
    auth_verifier *v = (auth_verifier *)1;
    char err[256];
    auth_config short_secret = {.hs_secret = SECRET, .hs_secret_len = 31};
    cr_assert_eq(auth_verifier_new(&short_secret, &v, err, sizeof err), AUTH_ECONFIG);
    cr_assert_null(v);
    cr_assert_null(strstr(err, "0123456789"), "secret leaked into error: %s", err);
    auth_config none = {.alg = "none", .hs_secret = SECRET, .hs_secret_len = SECRET_LEN};
    cr_assert_eq(auth_verifier_new(&none, &v, err, sizeof err), AUTH_ECONFIG);
    auth_config hs512 = {.alg = "HS512", .hs_secret = SECRET, .hs_secret_len = SECRET_LEN};
    cr_assert_eq(auth_verifier_new(&hs512, &v, err, sizeof err), AUTH_ECONFIG);
    auth_config lower = {.alg = "hs256", .hs_secret = SECRET, .hs_secret_len = SECRET_LEN};
    cr_assert_eq(auth_verifier_new(&lower, &v, err, sizeof err), AUTH_ECONFIG);
    auth_config empty_alg = {.alg = "", .hs_secret = SECRET, .hs_secret_len = SECRET_LEN};
    cr_assert_eq(auth_verifier_new(&empty_alg, &v, err, sizeof err), 0, "\"\" means HS256");
    auth_verifier_free(v);
    auth_config rs_nokey = {.alg = "RS256"};
    cr_assert_eq(auth_verifier_new(&rs_nokey, &v, err, sizeof err), AUTH_ECONFIG);
    auth_config rs_missing = {.alg = "RS256", .public_key_file = "/nonexistent/key.pem"};
    cr_assert_eq(auth_verifier_new(&rs_missing, &v, err, sizeof err), AUTH_ECONFIG);
    cr_assert_neq(strstr(err, "/nonexistent/key.pem"), NULL);
    auth_config leeway = {.hs_secret = SECRET, .hs_secret_len = SECRET_LEN, .leeway_s = -1};
    cr_assert_eq(auth_verifier_new(&leeway, &v, err, sizeof err), AUTH_ECONFIG);
    auth_config hs_with_file = {
        .hs_secret = SECRET, .hs_secret_len = SECRET_LEN, .jwks_file = "/x"};
    cr_assert_eq(auth_verifier_new(&hs_with_file, &v, err, sizeof err), AUTH_ECONFIG);

    /* key type must fit the alg, RSA keys must be >= 2048 bits */
    EVP_PKEY *ec = gen_ec();
    char *ecpub = pem(ec, 0);
    auth_config rs_ec = {.alg = "RS256", .public_key_file = write_tmp("ec.pem", ecpub)};
    cr_assert_eq(auth_verifier_new(&rs_ec, &v, err, sizeof err), AUTH_ECONFIG);
    EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    char *smallpub = pem(small, 0);
    auth_config rs_small = {.alg = "RS256", .public_key_file = write_tmp("small.pem", smallpub)};
    cr_assert_eq(auth_verifier_new(&rs_small, &v, err, sizeof err), AUTH_ECONFIG);
    /* both a PEM and a JWKS */
    auth_config both = {.alg = "ES256",
                        .public_key_file = rs_ec.public_key_file,
                        .jwks_json = "{}",
                        .jwks_json_len = 2};
    cr_assert_eq(auth_verifier_new(&both, &v, err, sizeof err), AUTH_ECONFIG);
    /* a JWKS with no key for the alg */
    char *jwks = fmt("{\"keys\":[%s]}", jwk_ec(ec, "e1"));
    auth_config rs_jwks_ec = {.alg = "RS256", .jwks_json = jwks, .jwks_json_len = strlen(jwks)};
    cr_assert_eq(auth_verifier_new(&rs_jwks_ec, &v, err, sizeof err), AUTH_ECONFIG);
    /* an EC point not on the curve */
    char *bad = fmt("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}]}",
                    b64url("0123456789abcdef0123456789abcdef", 32),
                    b64url("0123456789abcdef0123456789abcdef", 32));
    auth_config es_bad = {.alg = "ES256", .jwks_json = bad, .jwks_json_len = strlen(bad)};
    cr_assert_eq(auth_verifier_new(&es_bad, &v, err, sizeof err), AUTH_ECONFIG);
    const char *junk[] = {"",
                          "[]",
                          "{\"keys\":{}}",
                          "{\"keys\":[1]}",
                          "{\"keys\":[]}",
                          "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\"}]}"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        auth_config j = {.alg = "ES256", .jwks_json = junk[i], .jwks_json_len = strlen(junk[i])};
        cr_assert_eq(auth_verifier_new(&j, &v, err, sizeof err), AUTH_ECONFIG, "jwks %s", junk[i]);
    }
    EVP_PKEY_free(ec);
    EVP_PKEY_free(small);
}

/* ---- attacks ---- */

Test(auth, alg_none_rejected)
{
    auth_verifier *v = hs_verifier(NULL, NULL, 0);
    char *payload = claims_std(NOW + 600);
    const char *names[] = {"none", "None", "NONE", "nOnE"};
    for (size_t i = 0; i < 4; i++) {
        char *h = fmt("{\"alg\":\"%s\",\"typ\":\"JWT\"}", names[i]);
        char *unsigned_tok = tok3(h, payload, "");
        cr_assert_eq(verify(v, unsigned_tok, NOW), AUTH_EALG, "%s without signature", names[i]);
        char *sig = hs256_sig(unsigned_tok, SECRET, SECRET_LEN);
        char *signed_tok = fmt("%s%s", unsigned_tok, sig);
        cr_assert_eq(verify(v, signed_tok, NOW), AUTH_EALG, "%s with signature", names[i]);
    }
    /* header without alg, alg of the wrong type */
    char *t1 = tok3("{\"typ\":\"JWT\"}", payload, "c2ln");
    char *t2 = tok3("{\"alg\":[\"HS256\"]}", payload, "c2ln");
    cr_assert_eq(verify(v, t1, NOW), AUTH_EALG);
    cr_assert_eq(verify(v, t2, NOW), AUTH_EALG);
    /* duplicate "alg" members */
    char *t3 = tok3("{\"alg\":\"HS256\",\"alg\":\"none\"}", payload, "c2ln");
    cr_assert_eq(verify(v, t3, NOW), AUTH_EINVAL);
    auth_verifier_free(v);
}

Test(auth, hs256_signed_with_rsa_public_pem_rejected_under_rs256)
{
    EVP_PKEY *k = gen_rsa();
    char *pub = pem(k, 0);
    /* the HTTP layer always passes the node's HS256 key; under RS256 it must not be usable */
    auth_config cfg = {.alg = "RS256",
                       .public_key_file = write_tmp("rsa.pem", pub),
                       .hs_secret = SECRET,
                       .hs_secret_len = SECRET_LEN};
    auth_verifier *v = mk(&cfg);
    char *claims = claims_std(NOW + 600);
    cr_assert_eq(verify(v, hs_token(claims), NOW), AUTH_EALG);
    /* the classic key-confusion token: HMAC keyed with the public key PEM */
    char *evil = libjwt_sign(JWT_ALG_HS256, pub, strlen(pub), NULL, claims);
    /* libjwt 1.10.2 alone accepts it: it verifies with the alg named by the header */
    jwt_t *j = NULL;
    cr_assert_eq(jwt_decode(&j, evil, (const unsigned char *)pub, (int)strlen(pub)), 0);
    jwt_free(j);
    cr_assert_eq(verify(v, evil, NOW), AUTH_EALG);
    /* also with a kid, and the same against the normalized PEM the verifier holds */
    char *evil_kid = libjwt_sign(JWT_ALG_HS256, pub, strlen(pub), "k", claims);
    cr_assert_eq(verify(v, evil_kid, NOW), AUTH_EALG);
    /* while a genuine RS256 token verifies */
    char *priv = pem(k, 1);
    char *good = libjwt_sign(JWT_ALG_RS256, priv, strlen(priv), NULL, claims);
    cr_assert_eq(verify(v, good, NOW), 0);
    /* and an RS256 verifier refuses an RS512 (or any other) header */
    char *rs512 = libjwt_sign(JWT_ALG_RS512, priv, strlen(priv), NULL, claims);
    cr_assert_eq(verify(v, rs512, NOW), AUTH_EALG);
    auth_verifier_free(v);
    EVP_PKEY_free(k);
}

Test(auth, wrong_key_and_tampering)
{
    auth_verifier *v = hs_verifier(NULL, NULL, 0);
    char *claims = claims_std(NOW + 600);
    char *other = libjwt_sign(JWT_ALG_HS256, "another-secret-another-secret-xx", 32, NULL, claims);
    cr_assert_eq(verify(v, other, NOW), AUTH_ESIG);

    /* swap in a payload granting admin, keep header and signature */
    char *good = hs_token(claims);
    cr_assert_eq(verify(v, good, NOW), 0);
    const char *admin_json = "{\"sub\":\"u-1\",\"role\":\"admin\",\"exp\":1700000600}";
    char *admin = b64url(admin_json, strlen(admin_json));
    char *d1 = strchr(good, '.'), *d2 = strrchr(good, '.');
    char *tampered = fmt("%.*s.%s%s", (int)(d1 - good), good, admin, d2);
    cr_assert_eq(verify(v, tampered, NOW), AUTH_ESIG);
    /* flip one signature character */
    char *flipped = keep(strdup(good));
    char *last = flipped + strlen(flipped) - 2;
    *last = *last == 'A' ? 'B' : 'A';
    cr_assert_eq(verify(v, flipped, NOW), AUTH_ESIG);
    /* truncated signature, extra bytes */
    char *trunc = keep(strndup(good, strlen(good) - 3));
    cr_assert_eq(verify(v, trunc, NOW), AUTH_ESIG);
    char *longer = fmt("%sAAAA", good);
    cr_assert_eq(verify(v, longer, NOW), AUTH_ESIG);

    /* RS256 token signed by a different RSA key */
    EVP_PKEY *k1 = gen_rsa(), *k2 = gen_rsa();
    auth_config cfg = {.alg = "RS256", .public_key_file = write_tmp("k1.pem", pem(k1, 0))};
    auth_verifier *rv = mk(&cfg);
    char *p2 = pem(k2, 1);
    char *rs = libjwt_sign(JWT_ALG_RS256, p2, strlen(p2), NULL, claims);
    cr_assert_eq(verify(rv, rs, NOW), AUTH_ESIG);
    auth_verifier_free(rv);
    auth_verifier_free(v);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
}

/* ---- time claims ---- */

Test(auth, exp_and_leeway)
{
    auth_verifier *v = hs_verifier(NULL, NULL, 30);
    char *t = hs_token(claims_std(NOW));
    cr_assert_eq(verify(v, t, NOW - 1), 0);
    cr_assert_eq(verify(v, t, NOW + 29), 0, "within leeway");
    cr_assert_eq(verify(v, t, NOW + 30), AUTH_EEXPIRED);
    cr_assert_eq(verify(v, t, NOW + 3600), AUTH_EEXPIRED);
    auth_verifier *strict = hs_verifier(NULL, NULL, 0);
    cr_assert_eq(verify(strict, t, NOW - 1), 0);
    cr_assert_eq(verify(strict, t, NOW), AUTH_EEXPIRED);
    /* exp as a fractional NumericDate */
    char *frac = hs_token("{\"sub\":\"u\",\"role\":\"member\",\"exp\":1700000000.75}");
    cr_assert_eq(verify(strict, frac, NOW - 1), 0);
    cr_assert_eq(verify(strict, frac, NOW), AUTH_EEXPIRED);
    auth_verifier_free(strict);
    auth_verifier_free(v);
}

Test(auth, nbf)
{
    auth_verifier *v = hs_verifier(NULL, NULL, 30);
    char *t = hs_token("{\"sub\":\"u\",\"role\":\"member\",\"exp\":1700003600,\"nbf\":1700000100}");
    cr_assert_eq(verify(v, t, NOW), AUTH_ENOTYET);
    cr_assert_eq(verify(v, t, NOW + 69), AUTH_ENOTYET);
    cr_assert_eq(verify(v, t, NOW + 70), 0, "within leeway");
    cr_assert_eq(verify(v, t, NOW + 200), 0);
    char *bad = hs_token("{\"sub\":\"u\",\"role\":\"member\",\"exp\":1700003600,\"nbf\":\"soon\"}");
    cr_assert_eq(verify(v, bad, NOW), AUTH_ECLAIM);
    auth_verifier_free(v);
}

/* ---- iss / aud ---- */

Test(auth, issuer)
{
    auth_verifier *v = hs_verifier("circa", NULL, 0);
    cr_assert_eq(
        verify(v,
               hs_token("{\"sub\":\"u\",\"role\":\"member\",\"exp\":1700000600,\"iss\":\"circa\"}"),
               NOW),
        0);
    cr_assert_eq(
        verify(v,
               hs_token("{\"sub\":\"u\",\"role\":\"member\",\"exp\":1700000600,\"iss\":\"evil\"}"),
               NOW),
        AUTH_EISS);
    cr_assert_eq(
        verify(
            v,
            hs_token("{\"sub\":\"u\",\"role\":\"member\",\"exp\":1700000600,\"iss\":\"circa2\"}"),
            NOW),
        AUTH_EISS);
    cr_assert_eq(verify(v, hs_token("{\"sub\":\"u\",\"role\":\"member\",\"exp\":1700000600}"), NOW),
                 AUTH_EISS);
    cr_assert_eq(
        verify(
            v,
            hs_token("{\"sub\":\"u\",\"role\":\"member\",\"exp\":1700000600,\"iss\":[\"circa\"]}"),
            NOW),
        AUTH_EISS);
    auth_verifier_free(v);
}

Test(auth, audience)
{
    auth_verifier *v = hs_verifier(NULL, "circa", 0);
    cr_assert_eq(
        verify(v,
               hs_token("{\"sub\":\"u\",\"role\":\"member\",\"exp\":1700000600,\"aud\":\"circa\"}"),
               NOW),
        0);
    cr_assert_eq(
        verify(v,
               hs_token("{\"sub\":\"u\",\"role\":\"member\",\"exp\":1700000600,\"aud\":\"other\"}"),
               NOW),
        AUTH_EAUD);
    cr_assert_eq(verify(v, hs_token("{\"sub\":\"u\",\"role\":\"member\",\"exp\":1700000600}"), NOW),
                 AUTH_EAUD);
    cr_assert_eq(
        verify(
            v,
            hs_token(
                "{\"sub\":\"u\",\"role\":\"member\",\"exp\":1700000600,\"aud\":[\"x\",\"circa\"]}"),
            NOW),
        0);
    cr_assert_eq(
        verify(v,
               hs_token(
                   "{\"sub\":\"u\",\"role\":\"member\",\"exp\":1700000600,\"aud\":[\"x\",\"y\"]}"),
               NOW),
        AUTH_EAUD);
    cr_assert_eq(
        verify(v, hs_token("{\"sub\":\"u\",\"role\":\"member\",\"exp\":1700000600,\"aud\":[]}"),
               NOW),
        AUTH_EAUD);
    cr_assert_eq(
        verify(v,
               hs_token(
                   "{\"sub\":\"u\",\"role\":\"member\",\"exp\":1700000600,\"aud\":[1,\"circa\"]}"),
               NOW),
        0);
    auth_verifier_free(v);
}

/* ---- required claims ---- */

Test(auth, required_claims)
{
    auth_verifier *v = hs_verifier(NULL, NULL, 0);
    const char *bad[] = {
        "{\"sub\":\"u\",\"role\":\"member\"}",                        /* no exp */
        "{\"sub\":\"u\",\"role\":\"member\",\"exp\":\"1700000600\"}", /* exp not a number */
        "{\"role\":\"member\",\"exp\":1700000600}",                   /* no sub */
        "{\"sub\":\"\",\"role\":\"member\",\"exp\":1700000600}",      /* empty sub */
        "{\"sub\":42,\"role\":\"member\",\"exp\":1700000600}",        /* sub not a string */
        "{\"sub\":\"u\",\"exp\":1700000600}",                         /* no role */
        "{\"sub\":\"u\",\"role\":null,\"exp\":1700000600}",           /* role not a string */
        "{\"sub\":\"u\",\"role\":\"superuser\",\"exp\":1700000600}",  /* unknown role */
        "{\"sub\":\"u\",\"role\":\"member\",\"plan\":\"gold\",\"exp\":1700000600}",
        ("{\"sub\":\"0123456789012345678901234567890123456789012345678901234567890123\",\"role\":"
         "\"member\",\"exp\":1700000600}"), /* sub longer than 63 bytes */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(verify(v, hs_raw(bad[i]), NOW), AUTH_ECLAIM, "claims %s", bad[i]);
    /* embedded NUL and duplicate claims are refused by the JSON parser */
    cr_assert_eq(
        verify(v, hs_raw("{\"sub\":\"u\\u0000x\",\"role\":\"member\",\"exp\":1700000600}"), NOW),
        AUTH_EINVAL);
    cr_assert_eq(
        verify(v,
               hs_raw("{\"sub\":\"u\",\"role\":\"member\",\"role\":\"admin\",\"exp\":1700000600}"),
               NOW),
        AUTH_EINVAL);
    auth_claims c;
    char *ok =
        hs_token("{\"sub\":\"012345678901234567890123456789012345678901234567890123456789012\","
                 "\"role\":\"service\",\"exp\":1700000600}");
    cr_assert_eq(auth_verify(v, ok, strlen(ok), NOW, &c), 0);
    cr_assert_eq(strlen(c.sub), 63);
    cr_assert_str_eq(c.role, "service");
    auth_verifier_free(v);
}

/* ---- structure ---- */

Test(auth, oversized_and_garbage)
{
    auth_verifier *v = hs_verifier(NULL, NULL, 0);
    auth_claims c;
    size_t n = AUTH_TOKEN_MAX + 1;
    char *big = keep(malloc(n));
    memset(big, 'A', n);
    big[10] = '.';
    big[20] = '.';
    cr_assert_eq(auth_verify(v, big, n, NOW, &c), AUTH_ETOOBIG);
    /* a valid token padded with a huge claim just over the limit */
    char *filler = keep(malloc(AUTH_TOKEN_MAX));
    memset(filler, 'x', AUTH_TOKEN_MAX - 1);
    filler[AUTH_TOKEN_MAX - 1] = '\0';
    char *huge = hs_token(
        fmt("{\"sub\":\"u\",\"role\":\"member\",\"exp\":1700000600,\"x\":\"%s\"}", filler));
    cr_assert_eq(verify(v, huge, NOW), AUTH_ETOOBIG);

    char *good = hs_token(claims_std(NOW + 600));
    char *d1 = strchr(good, '.');
    char *hdr = keep(strndup(good, (size_t)(d1 - good)));
    const char *garbage[] = {
        "",
        ".",
        "..",
        "...",
        "a",
        "a.b",
        "a.b.c.d",
        "!!!.b.c",
        "a b.c.d",
        "eyJ.eyJ.c2ln",
        "e.e.e",                          /* 1 mod 4 length */
        "eyJhbGciOiJIUzI1NiJ9..c2ln",     /* empty payload */
        ".eyJzdWIiOiJ1In0.c2ln",          /* empty header */
        "W10.e30.c2ln",                   /* header [] */
        "bnVsbA.e30.c2ln",                /* header null */
        "eyJhbGciOiJIUzI1NiJ9=.e30.c2ln", /* padding */
    };
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++)
        cr_assert_eq(verify(v, garbage[i], NOW), AUTH_EINVAL, "token '%s'", garbage[i]);
    /* good header, payload not JSON / not an object */
    const char *payloads[] = {"bm90IGpzb24", "WzFd", "MQ"};
    for (size_t i = 0; i < 3; i++) {
        char *t = fmt("%s.%s.c2ln", hdr, payloads[i]);
        cr_assert_eq(verify(v, t, NOW), AUTH_EINVAL, "payload %s", payloads[i]);
    }
    /* typ other than JWT and crit are refused */
    cr_assert_eq(verify(v, tok3("{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", "{}", "c2ln"), NOW),
                 AUTH_EINVAL);
    cr_assert_eq(verify(v, tok3("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", "{}", "c2ln"), NOW),
                 AUTH_EINVAL);
    /* empty signature with a valid alg */
    char *nosig = keep(strndup(good, (size_t)(strrchr(good, '.') - good + 1)));
    cr_assert_eq(verify(v, nosig, NOW), AUTH_ESIG);
    /* NUL inside the given length */
    char *withnul = keep(strdup(good));
    withnul[5] = '\0';
    cr_assert_eq(auth_verify(v, withnul, strlen(good), NOW, &c), AUTH_EINVAL);
    /* the length is honoured: trailing bytes beyond len are ignored */
    char *trail = fmt("%s.garbage", good);
    cr_assert_eq(auth_verify(v, trail, strlen(good), NOW, &c), 0);
    cr_assert_eq(auth_verify(NULL, good, strlen(good), NOW, &c), AUTH_EINVAL);
    cr_assert_eq(auth_verify(v, NULL, 3, NOW, &c), AUTH_EINVAL);
    auth_verifier_free(v);
}

/* ---- public keys ---- */

Test(auth, rs256_jwks_kid)
{
    EVP_PKEY *k1 = gen_rsa(), *k2 = gen_rsa();
    EVP_PKEY *ec = gen_ec();
    char *jwks = fmt("{\"keys\":[%s,%s,%s,{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}",
                     jwk_rsa(k1, "one"), jwk_rsa(k2, "two"), jwk_ec(ec, "ec"));
    auth_config cfg = {.alg = "RS256",
                       .jwks_file = write_tmp("jwks.json", jwks),
                       .issuer = "idp",
                       .audience = "circa"};
    auth_verifier *v = mk(&cfg);
    char *claims =
        "{\"sub\":\"u-7\",\"role\":\"admin\",\"exp\":1700000600,\"iss\":\"idp\",\"aud\":\"circa\"}";
    char *p1 = pem(k1, 1), *p2 = pem(k2, 1);
    auth_claims c;

    char *t1 = libjwt_sign(JWT_ALG_RS256, p1, strlen(p1), "one", claims);
    cr_assert_eq(auth_verify(v, t1, strlen(t1), NOW, &c), 0);
    cr_assert_str_eq(c.sub, "u-7");
    cr_assert_str_eq(c.role, "admin");
    char *t2 = libjwt_sign(JWT_ALG_RS256, p2, strlen(p2), "two", claims);
    cr_assert_eq(verify(v, t2, NOW), 0);
    /* kid naming the other key */
    char *wrong = libjwt_sign(JWT_ALG_RS256, p1, strlen(p1), "two", claims);
    cr_assert_eq(verify(v, wrong, NOW), AUTH_ESIG);
    /* unknown kid, kid of a key of another type, missing kid with several keys */
    char *unknown = libjwt_sign(JWT_ALG_RS256, p1, strlen(p1), "three", claims);
    cr_assert_eq(verify(v, unknown, NOW), AUTH_EKID);
    char *eckid = libjwt_sign(JWT_ALG_RS256, p1, strlen(p1), "ec", claims);
    cr_assert_eq(verify(v, eckid, NOW), AUTH_EKID);
    char *nokid = libjwt_sign(JWT_ALG_RS256, p1, strlen(p1), NULL, claims);
    cr_assert_eq(verify(v, nokid, NOW), AUTH_EKID);
    auth_verifier_free(v);

    /* a single-key JWKS accepts a token without kid */
    char *one = fmt("{\"keys\":[%s]}", jwk_rsa(k1, "one"));
    auth_config cfg1 = {.alg = "RS256", .jwks_json = one, .jwks_json_len = strlen(one)};
    v = mk(&cfg1);
    cr_assert_eq(verify(v, nokid, NOW), 0);
    cr_assert_eq(verify(v, t2, NOW), AUTH_EKID);
    auth_verifier_free(v);
    /* duplicate kids are a configuration error */
    char *dup = fmt("{\"keys\":[%s,%s]}", jwk_rsa(k1, "same"), jwk_rsa(k2, "same"));
    auth_config cfgd = {.alg = "RS256", .jwks_json = dup, .jwks_json_len = strlen(dup)};
    cr_assert_eq(auth_verifier_new(&cfgd, &v, NULL, 0), AUTH_ECONFIG);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
    EVP_PKEY_free(ec);
}

Test(auth, es256_pem)
{
    EVP_PKEY *k = gen_ec(), *other = gen_ec();
    auth_config cfg = {.alg = "ES256", .public_key_file = write_tmp("ec.pem", pem(k, 0))};
    auth_verifier *v = mk(&cfg);
    char *priv = pem(k, 1), *opriv = pem(other, 1);
    char *claims = claims_std(NOW + 600);
    auth_claims c;
    char *t = libjwt_sign(JWT_ALG_ES256, priv, strlen(priv), NULL, claims);
    cr_assert_eq(auth_verify(v, t, strlen(t), NOW, &c), 0);
    cr_assert_str_eq(c.plan, "premium");
    cr_assert_eq(verify(v, libjwt_sign(JWT_ALG_ES256, opriv, strlen(opriv), NULL, claims), NOW),
                 AUTH_ESIG);
    /* ES384 header, HS256 with the PEM as secret */
    cr_assert_eq(verify(v, libjwt_sign(JWT_ALG_ES384, priv, strlen(priv), NULL, claims), NOW),
                 AUTH_EALG);
    char *pub = pem(k, 0);
    cr_assert_eq(verify(v, libjwt_sign(JWT_ALG_HS256, pub, strlen(pub), NULL, claims), NOW),
                 AUTH_EALG);
    /* a signature of the wrong length */
    char *d2 = strrchr(t, '.');
    char *shortsig = fmt("%.*s.%s", (int)(d2 - t), t, "AAAA");
    cr_assert_eq(verify(v, shortsig, NOW), AUTH_ESIG);
    auth_verifier_free(v);
    EVP_PKEY_free(k);
    EVP_PKEY_free(other);
}

Test(auth, es256_jwks)
{
    EVP_PKEY *k1 = gen_ec(), *k2 = gen_ec();
    char *jwks = fmt("{\"keys\":[%s,%s]}", jwk_ec(k1, "a"), jwk_ec(k2, "b"));
    auth_config cfg = {.alg = "ES256", .jwks_file = write_tmp("ec.jwks", jwks)};
    auth_verifier *v = mk(&cfg);
    char *p1 = pem(k1, 1), *p2 = pem(k2, 1);
    char *claims = claims_std(NOW + 600);
    cr_assert_eq(verify(v, libjwt_sign(JWT_ALG_ES256, p1, strlen(p1), "a", claims), NOW), 0);
    cr_assert_eq(verify(v, libjwt_sign(JWT_ALG_ES256, p2, strlen(p2), "b", claims), NOW), 0);
    cr_assert_eq(verify(v, libjwt_sign(JWT_ALG_ES256, p2, strlen(p2), "a", claims), NOW),
                 AUTH_ESIG);
    cr_assert_eq(verify(v, libjwt_sign(JWT_ALG_ES256, p2, strlen(p2), "c", claims), NOW),
                 AUTH_EKID);
    auth_verifier_free(v);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
}

/* ---- cache ---- */

Test(auth, cache_hit_and_expiry)
{
    auth_verifier *v = hs_verifier(NULL, NULL, 5);
    auth_cache *c = auth_cache_new(64);
    cr_assert_not_null(c);
    /* nbf lets us tell a cache hit from a fresh verification: only a hit ignores it */
    char *t = hs_token("{\"sub\":\"u-1\",\"role\":\"member\",\"plan\":\"standard\",\"exp\":"
                       "1700000600,\"nbf\":1700000100}");
    auth_claims a, b;
    cr_assert_eq(auth_verify_cached(v, c, t, strlen(t), NOW + 100, &a), 0);
    cr_assert_eq(verify(v, t, NOW), AUTH_ENOTYET);
    cr_assert_eq(auth_verify_cached(v, c, t, strlen(t), NOW, &b), 0, "served from the cache");
    cr_assert_eq(memcmp(&a, &b, sizeof a), 0);
    cr_assert_str_eq(b.sub, "u-1");
    cr_assert_str_eq(b.plan, "standard");
    cr_assert_eq(b.exp, 1700000600);
    /* a different verifier does not see the entry */
    auth_verifier *v2 = hs_verifier(NULL, NULL, 5);
    cr_assert_eq(auth_verify_cached(v2, c, t, strlen(t), NOW, &b), AUTH_ENOTYET);
    /* a one-byte variation is not a hit */
    char *t2 = keep(strdup(t));
    t2[strlen(t2) - 1] ^= 1;
    cr_assert_neq(auth_verify_cached(v, c, t2, strlen(t2), NOW + 100, &b), 0);
    /* expiry (exp + leeway) refuses the cached token */
    cr_assert_eq(auth_verify_cached(v, c, t, strlen(t), NOW + 604, &b), 0);
    cr_assert_eq(auth_verify_cached(v, c, t, strlen(t), NOW + 605, &b), AUTH_EEXPIRED);
    cr_assert_str_eq(b.sub, "");
    cr_assert_eq(auth_verify_cached(v, c, t, strlen(t), NOW + 605, &b), AUTH_EEXPIRED);
    /* failures are not cached */
    char *bad = libjwt_sign(JWT_ALG_HS256, "another-secret-another-secret-xx", 32, NULL,
                            claims_std(NOW + 600));
    cr_assert_eq(auth_verify_cached(v, c, bad, strlen(bad), NOW, &b), AUTH_ESIG);
    cr_assert_eq(auth_verify_cached(v, c, bad, strlen(bad), NOW, &b), AUTH_ESIG);
    auth_verifier_free(v2);
    auth_verifier_free(v);
    auth_cache_free(c);
}

Test(auth, cache_eviction_is_bounded_and_correct)
{
    auth_verifier *v = hs_verifier(NULL, NULL, 0);
    auth_cache *c = auth_cache_new(2);
    cr_assert_not_null(c);
    cr_assert_null(auth_cache_new(0));
    char *toks[20];
    for (int i = 0; i < 20; i++) {
        toks[i] = hs_token(fmt("{\"sub\":\"user-%d\",\"role\":\"member\",\"exp\":1700000600}", i));
    }
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 20; i++) {
            auth_claims cl;
            char want[16];
            snprintf(want, sizeof want, "user-%d", i);
            cr_assert_eq(auth_verify_cached(v, c, toks[i], strlen(toks[i]), NOW, &cl), 0);
            cr_assert_str_eq(cl.sub, want);
        }
    }
    auth_claims cl;
    /* NULL cache falls back to plain verification */
    cr_assert_eq(auth_verify_cached(v, NULL, toks[0], strlen(toks[0]), NOW, &cl), 0);
    auth_cache_free(c);
    auth_verifier_free(v);
}

/* ---- passwords, keys, grants ---- */

static void unhex(const char *h, unsigned char *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sscanf(h + 2 * i, "%2hhx", &out[i]);
}

Test(auth, password_hash_verify)
{
    unsigned char salt[16], h[32], want[32];
    for (int i = 0; i < 16; i++)
        salt[i] = (unsigned char)i;
    const char *pw = "correct horse battery";
    cr_assert_eq(auth_password_hash(pw, strlen(pw), salt, 1000, h), 0);
    /* independent value from Python hashlib.pbkdf2_hmac('sha256', pw, bytes(range(16)), 1000) */
    unhex("02169e674d80c0fc7292e8610c8f17be140df062af9aa33ea85eaabecffdf08d", want, 32);
    cr_assert_eq(memcmp(h, want, 32), 0);
    cr_assert_eq(auth_password_verify(pw, strlen(pw), salt, 1000, h), 1);
    cr_assert_eq(auth_password_verify("correct horse batterY", strlen(pw), salt, 1000, h), 0);
    cr_assert_eq(auth_password_verify(pw, strlen(pw) - 1, salt, 1000, h), 0);
    cr_assert_eq(auth_password_verify(pw, strlen(pw), salt, 1001, h), 0);
    salt[0] ^= 1;
    cr_assert_eq(auth_password_verify(pw, strlen(pw), salt, 1000, h), 0);
    cr_assert_lt(auth_password_hash(pw, strlen(pw), salt, 0, h), 0);
    cr_assert_lt(auth_password_verify(NULL, 3, salt, 1000, h), 0);
    unsigned char r1[16] = {0}, r2[16] = {0};
    cr_assert_eq(auth_random(r1, sizeof r1), 0);
    cr_assert_eq(auth_random(r2, sizeof r2), 0);
    cr_assert_neq(memcmp(r1, r2, 16), 0);
}

Test(auth, api_keys)
{
    char k1[64], k2[64];
    unsigned char h1[32], h2[32], check[32], want[32];
    cr_assert_eq(auth_apikey_new(k1, h1), 0);
    cr_assert_eq(auth_apikey_new(k2, h2), 0);
    cr_assert_eq(strlen(k1), AUTH_APIKEY_LEN);
    cr_assert_eq(strncmp(k1, "ck_", 3), 0);
    cr_assert_eq(strspn(k1 + 3, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                 43);
    cr_assert_str_neq(k1, k2);
    auth_apikey_hash(k1, strlen(k1), check);
    cr_assert_eq(memcmp(check, h1, 32), 0);
    cr_assert_neq(memcmp(h1, h2, 32), 0);
    auth_apikey_hash("ck_test", 7, check);
    unhex("942d317dc7797b98b262d88716422069144f262ddc1ea8bfe041c3a5ede7c27a", want, 32);
    cr_assert_eq(memcmp(check, want, 32), 0);
}

Test(auth, grants)
{
    const unsigned char key[] = "grant-key-0123456789";
    size_t kl = sizeof key - 1;
    char sig[65];
    auth_grant_sign(key, kl, "res-1", "user-1", 1700000300, sig);
    /* independent value from Python hmac */
    cr_assert_str_eq(sig, "81aa8159f6b11f3a7299d2d3c77107434155324a8be2254c26812c2e5098a20f");
    cr_assert_eq(auth_grant_verify(key, kl, "res-1", "user-1", 1700000300, sig, NOW), 1);
    cr_assert_eq(auth_grant_verify(key, kl, "res-1", "user-1", 1700000300, sig, 1700000299), 1);
    cr_assert_eq(auth_grant_verify(key, kl, "res-1", "user-1", 1700000300, sig, 1700000300), 0,
                 "expired");
    cr_assert_eq(auth_grant_verify(key, kl, "res-2", "user-1", 1700000300, sig, NOW), 0);
    cr_assert_eq(auth_grant_verify(key, kl, "res-1", "user-2", 1700000300, sig, NOW), 0);
    cr_assert_eq(auth_grant_verify(key, kl, "res-1", "user-1", 1700000301, sig, NOW), 0,
                 "extended exp");
    cr_assert_eq(auth_grant_verify(key, kl - 1, "res-1", "user-1", 1700000300, sig, NOW), 0,
                 "other key");
    /* field boundaries are part of the MAC */
    cr_assert_eq(auth_grant_verify(key, kl, "res-1\nuser-1", "", 1700000300, sig, NOW), 0);
    char upper[65];
    for (int i = 0; i < 65; i++)
        upper[i] = (char)(sig[i] >= 'a' && sig[i] <= 'f' ? sig[i] - 32 : sig[i]);
    cr_assert_eq(auth_grant_verify(key, kl, "res-1", "user-1", 1700000300, upper, NOW), 1);
    char tampered[65];
    memcpy(tampered, sig, 65);
    tampered[10] = tampered[10] == '0' ? '1' : '0';
    cr_assert_eq(auth_grant_verify(key, kl, "res-1", "user-1", 1700000300, tampered, NOW), 0);
    tampered[10] = 'g';
    cr_assert_eq(auth_grant_verify(key, kl, "res-1", "user-1", 1700000300, tampered, NOW), 0);
    char shorter[65];
    memcpy(shorter, sig, 65);
    shorter[63] = '\0';
    cr_assert_eq(auth_grant_verify(key, kl, "res-1", "user-1", 1700000300, shorter, NOW), 0);
    char *longer = fmt("%s0", sig);
    cr_assert_eq(auth_grant_verify(key, kl, "res-1", "user-1", 1700000300, longer, NOW), 0);
    cr_assert_eq(auth_grant_verify(key, kl, "res-1", "user-1", 1700000300, NULL, NOW), 0);
    /* no key: empty signature that never verifies */
    auth_grant_sign(NULL, 0, "res-1", "user-1", 1700000300, sig);
    cr_assert_str_eq(sig, "");
}

Test(auth, strerror_covers_codes)
{
    for (int code = AUTH_ECRYPTO; code <= 0; code++) {
        const char *s = auth_strerror(code);
        cr_assert_not_null(s);
        cr_assert_str_neq(s, "unknown error", "code %d", code);
    }
    cr_assert_str_eq(auth_strerror(-999), "unknown error");
}
