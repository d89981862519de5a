/*
 * config.c — configuration: defaults, then a JSON file, then CIRCA_*
 * environment variables, then command-line flags (applied by the CLI).
 * The file is strict: an unknown key or a value of the wrong type is an
 * error that names the key, so a typo never silently falls back to a
 * default.
 */
#include "core/core.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void core_config_default(core_config *c)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    memset(c, 0, sizeof *c);
    snprintf(c->listen, sizeof c->listen, "127.0.0.1:8080");
    snprintf(c->data, sizeof c->data, "./data");
    c->threads = n > 0 ? (int)n : 1;
    c->map_size_mb = 16384; /* address space, not disk: the file grows as pages are used */
    c->fsync = 1;
    c->log_level = LOG_INFO;
    snprintf(c->jwt.alg, sizeof c->jwt.alg, "HS256");
    snprintf(c->jwt.issuer, sizeof c->jwt.issuer, "circa");
    snprintf(c->jwt.audience, sizeof c->jwt.audience, "circa");
    c->jwt.leeway_s = 30;
    c->jwt.ttl_s = 3600;
    core_policy_default(&c->policy);
    c->limits.max_body_bytes = 1 << 20;
    c->limits.max_import_bytes = 256ULL << 20;
    c->limits.max_header_bytes = 16384;
    c->limits.max_json_depth = 16;
    c->limits.rate_per_s = 100;
    c->limits.rate_burst = 200;
    c->password_iterations = 210000;
    c->grant_ttl_s = 300;
    snprintf(c->content_base_url, sizeof c->content_base_url, "http://127.0.0.1:8080");
    c->pg.high_water = 1000000;
    c->pg.batch = 2000;
    snprintf(c->raft.peer, sizeof c->raft.peer, "127.0.0.1:7080");
    c->raft.election_timeout_ms = 1000;
    c->raft.heartbeat_ms = 100;
    c->raft.snapshot_threshold = 4096;
    c->raft.snapshot_trailing = 8192;
    c->raft.snapshot_chunk_kib = 1024;
}

enum kind { K_STR, K_INT, K_U32, K_U64, K_BOOL, K_NUM, K_LOG };

typedef struct field {
    const char *name;
    enum kind kind;
    size_t off;
    size_t size; /* for strings */
} field;

#define F(name, kind, member)                                                         \
    {                                                                                 \
        name, kind, offsetof(core_config, member), sizeof(((core_config *)0)->member) \
    }

static const field top_fields[] = {
    F("listen", K_STR, listen),
    F("data", K_STR, data),
    F("threads", K_INT, threads),
    F("map_size_mb", K_U64, map_size_mb),
    F("fsync", K_BOOL, fsync),
    F("log_level", K_LOG, log_level),
    F("password_iterations", K_U32, password_iterations),
    F("grant_ttl_s", K_INT, grant_ttl_s),
    F("content_base_url", K_STR, content_base_url),
    {NULL, 0, 0, 0},
};
static const field jwt_fields[] = {
    F("alg", K_STR, jwt.alg),
    F("public_key_file", K_STR, jwt.public_key_file),
    F("jwks_file", K_STR, jwt.jwks_file),
    F("issuer", K_STR, jwt.issuer),
    F("audience", K_STR, jwt.audience),
    F("leeway_s", K_INT, jwt.leeway_s),
    F("ttl_s", K_INT, jwt.ttl_s),
    {NULL, 0, 0, 0},
};
static const field policy_fields[] = {
    F("loan_days", K_U32, policy.loan_days),
    F("max_renewals", K_U32, policy.max_renewals),
    F("max_loans", K_U32, policy.max_loans),
    F("max_loans_premium", K_U32, policy.max_loans_premium),
    F("pickup_days", K_U32, policy.pickup_days),
    {NULL, 0, 0, 0},
};
static const field limits_fields[] = {
    F("max_body_bytes", K_U64, limits.max_body_bytes),
    F("max_import_bytes", K_U64, limits.max_import_bytes),
    F("max_header_bytes", K_U64, limits.max_header_bytes),
    F("max_json_depth", K_INT, limits.max_json_depth),
    F("rate_per_s", K_NUM, limits.rate_per_s),
    F("rate_burst", K_NUM, limits.rate_burst),
    {NULL, 0, 0, 0},
};

static const field pg_fields[] = {
    F("dsn", K_STR, pg.dsn),
    F("sslmode", K_STR, pg.sslmode),
    F("sslrootcert", K_STR, pg.sslrootcert),
    F("high_water", K_U64, pg.high_water),
    F("batch", K_U32, pg.batch),
    {NULL, 0, 0, 0},
};

static const field raft_fields[] = {
    F("peer", K_STR, raft.peer),
    F("join", K_STR, raft.join),
    F("election_timeout_ms", K_U32, raft.election_timeout_ms),
    F("heartbeat_ms", K_U32, raft.heartbeat_ms),
    F("snapshot_threshold", K_U32, raft.snapshot_threshold),
    F("snapshot_trailing", K_U32, raft.snapshot_trailing),
    F("snapshot_chunk_kib", K_U32, raft.snapshot_chunk_kib),
    F("tls_ca", K_STR, raft.tls_ca),
    F("tls_cert", K_STR, raft.tls_cert),
    F("tls_key", K_STR, raft.tls_key),
    {NULL, 0, 0, 0},
};

/* the objects a config file may hold at its top level */
static const struct section {
    const char *name;
    const field *fields;
} sections[] = {
    {"jwt", jwt_fields}, {"policy", policy_fields}, {"limits", limits_fields},
    {"pg", pg_fields},   {"raft", raft_fields},     {NULL, NULL},
};

static int set_field(core_config *c, const field *f, json_t *v, const char *path, char *err,
                     size_t errlen)
{
    char *p = (char *)c + f->off;
    switch (f->kind) {
    case K_STR:
        if (json_is_null(v)) {
            p[0] = '\0';
            return 0;
        }
        if (!json_is_string(v) || json_string_length(v) >= f->size)
            goto bad;
        memcpy(p, json_string_value(v), json_string_length(v) + 1);
        return 0;
    case K_INT:
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000000)
            goto bad;
        *(int *)p = (int)json_integer_value(v);
        return 0;
    case K_U32:
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > 0xffffffffLL)
            goto bad;
        *(uint32_t *)p = (uint32_t)json_integer_value(v);
        return 0;
    case K_U64:
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            goto bad;
        *(uint64_t *)p = (uint64_t)json_integer_value(v);
        return 0;
    case K_BOOL:
        if (!json_is_boolean(v))
            goto bad;
        *(int *)p = json_is_true(v);
        return 0;
    case K_NUM:
        if (!json_is_number(v) || json_number_value(v) < 0)
            goto bad;
        *(double *)p = json_number_value(v);
        return 0;
    case K_LOG:
        if (!json_is_string(v) || core_log_level_parse(json_string_value(v)) < 0)
            goto bad;
        *(int *)p = core_log_level_parse(json_string_value(v));
        return 0;
    }
bad:
    snprintf(err, errlen, "config: %s has a wrong type or value", path);
    return CORE_EINVAL;
}

static int load_object(core_config *c, json_t *obj, const field *fields, const char *prefix,
                       char *err, size_t errlen)
{
    const char *key;
    json_t *v;
    json_object_foreach (obj, key, v) {
        const field *f = fields;
        char path[128];
        snprintf(path, sizeof path, "%s%s", prefix, key);
        const struct section *sec = sections;
        while (*prefix == '\0' && sec->name && strcmp(sec->name, key) != 0)
            sec++;
        if (*prefix == '\0' && sec->name) {
            char pre[32];
            if (!json_is_object(v)) {
                snprintf(err, errlen, "config: %s must be an object", key);
                return CORE_EINVAL;
            }
            snprintf(pre, sizeof pre, "%s.", key);
            if (load_object(c, v, sec->fields, pre, err, errlen))
                return CORE_EINVAL;
            continue;
        }
        while (f->name && strcmp(f->name, key) != 0)
            f++;
        if (!f->name) {
            snprintf(err, errlen, "config: unknown key %s", path);
            return CORE_EINVAL;
        }
        if (set_field(c, f, v, path, err, errlen))
            return CORE_EINVAL;
    }
    return 0;
}

int core_config_load_file(core_config *c, const char *path, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    int rc;
    if (!root) {
        snprintf(err, errlen, "config: %s:%d: %s", path, je.line, je.text);
        return CORE_EINVAL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        snprintf(err, errlen, "config: %s must hold a JSON object", path);
        return CORE_EINVAL;
    }
    rc = load_object(c, root, top_fields, "", err, errlen);
    json_decref(root);
    return rc;
}

int core_config_load_env(core_config *c, char *err, size_t errlen)
{
    const char *v;
    if ((v = getenv("CIRCA_LISTEN")) && *v)
        snprintf(c->listen, sizeof c->listen, "%s", v);
    if ((v = getenv("CIRCA_DATA")) && *v)
        snprintf(c->data, sizeof c->data, "%s", v);
    if ((v = getenv("CIRCA_THREADS")) && *v) {
        char *end;
        long n = strtol(v, &end, 10);
        if (*end || n < 1 || n > 256) {
            snprintf(err, errlen, "CIRCA_THREADS must be a number from 1 to 256");
            return CORE_EINVAL;
        }
        c->threads = (int)n;
    }
    if ((v = getenv("CIRCA_PG_DSN")) && *v) {
        if (strlen(v) >= sizeof c->pg.dsn) {
            snprintf(err, errlen, "CIRCA_PG_DSN is longer than %zu bytes", sizeof c->pg.dsn - 1);
            return CORE_EINVAL;
        }
        snprintf(c->pg.dsn, sizeof c->pg.dsn, "%s", v);
    }
    static const struct {
        const char *env;
        size_t off, size;
    } strs[] = {
#define S(env, member) {env, offsetof(core_config, member), sizeof(((core_config *)0)->member)}
        S("CIRCA_PEER", raft.peer),
        S("CIRCA_JOIN", raft.join),
        S("CIRCA_PEER_TLS_CA", raft.tls_ca),
        S("CIRCA_PEER_TLS_CERT", raft.tls_cert),
        S("CIRCA_PEER_TLS_KEY", raft.tls_key),
#undef S
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        if ((v = getenv(strs[i].env)) && *v) {
            if (strlen(v) >= strs[i].size) {
                snprintf(err, errlen, "%s is longer than %zu bytes", strs[i].env, strs[i].size - 1);
                return CORE_EINVAL;
            }
            snprintf((char *)c + strs[i].off, strs[i].size, "%s", v);
        }
    }
    if ((v = getenv("CIRCA_LOG_LEVEL")) && *v) {
        if (core_log_level_parse(v) < 0) {
            snprintf(err, errlen, "CIRCA_LOG_LEVEL must be debug, info, warn or error");
            return CORE_EINVAL;
        }
        c->log_level = core_log_level_parse(v);
    }
    return 0;
}

int core_hostport_valid(const char *s)
{
    const char *colon = strrchr(s, ':');
    char *end;
    long port;

    if (!colon || colon == s || (size_t)(colon - s) > 200)
        return 0;
    port = strtol(colon + 1, &end, 10);
    return *end == '\0' && colon[1] && port >= 1 && port <= 65534;
}

/* empty, or comma-separated HOST:PORT addresses */
static int join_valid(const char *s)
{
    char one[sizeof((core_config *)0)->raft.join];
    while (*s) {
        size_t n = strcspn(s, ",");
        if (n == 0 || n >= sizeof one)
            return 0;
        memcpy(one, s, n);
        one[n] = '\0';
        if (!core_hostport_valid(one))
            return 0;
        s += n;
        if (*s == ',' && !*++s)
            return 0;
    }
    return 1;
}

int core_config_check(const core_config *c, char *err, size_t errlen)
{
    const char *why = NULL;
    if (c->threads < 1 || c->threads > 256)
        why = "threads must be from 1 to 256";
    else if (c->map_size_mb < 16)
        why = "map_size_mb must be at least 16";
    else if (strcmp(c->jwt.alg, "HS256") && strcmp(c->jwt.alg, "RS256") &&
             strcmp(c->jwt.alg, "ES256"))
        why = "jwt.alg must be HS256, RS256 or ES256";
    else if (strcmp(c->jwt.alg, "HS256") && !c->jwt.public_key_file[0] && !c->jwt.jwks_file[0])
        why = "jwt.alg RS256/ES256 needs jwt.public_key_file or jwt.jwks_file";
    else if (c->jwt.ttl_s < 1)
        why = "jwt.ttl_s must be positive";
    else if (c->policy.loan_days < 1 || c->policy.loan_days > 3650)
        why = "policy.loan_days must be from 1 to 3650";
    else if (c->policy.pickup_days > 365)
        why = "policy.pickup_days must be at most 365";
    else if (c->limits.max_body_bytes < 1024)
        why = "limits.max_body_bytes must be at least 1024";
    else if (c->limits.max_import_bytes < 1024 || c->limits.max_import_bytes > (1ULL << 30))
        why = "limits.max_import_bytes must be from 1024 to 1073741824";
    else if (c->limits.max_header_bytes < 1024)
        why = "limits.max_header_bytes must be at least 1024";
    else if (c->limits.max_json_depth < 2 || c->limits.max_json_depth > 64)
        why = "limits.max_json_depth must be from 2 to 64";
    else if (c->password_iterations < 1000)
        why = "password_iterations must be at least 1000";
    else if (c->grant_ttl_s < 1)
        why = "grant_ttl_s must be positive";
    else if (c->pg.sslmode[0] && strcmp(c->pg.sslmode, "disable") &&
             strcmp(c->pg.sslmode, "allow") && strcmp(c->pg.sslmode, "prefer") &&
             strcmp(c->pg.sslmode, "require") && strcmp(c->pg.sslmode, "verify-ca") &&
             strcmp(c->pg.sslmode, "verify-full"))
        why = "pg.sslmode must be disable, allow, prefer, require, verify-ca or verify-full";
    else if (!core_hostport_valid(c->raft.peer))
        why = "raft.peer must be HOST:PORT with a port from 1 to 65534";
    else if (!join_valid(c->raft.join))
        why = "raft.join must be comma-separated HOST:PORT addresses (ports 1 to 65534)";
    else if (c->raft.heartbeat_ms < 10 || c->raft.election_timeout_ms < 3 * c->raft.heartbeat_ms ||
             c->raft.election_timeout_ms > 60000)
        why =
            "raft.heartbeat_ms must be at least 10 and raft.election_timeout_ms from 3 heartbeats "
            "to 60000";
    else if (c->raft.snapshot_threshold < 8 || c->raft.snapshot_trailing < 8)
        why = "raft.snapshot_threshold and raft.snapshot_trailing must be at least 8";
    else if (c->raft.snapshot_chunk_kib < 1 || c->raft.snapshot_chunk_kib > 8192)
        why = "raft.snapshot_chunk_kib must be from 1 to 8192 (the wire's frames are 16 MiB)";
    else if ((c->raft.tls_ca[0] || c->raft.tls_cert[0] || c->raft.tls_key[0]) &&
             !(c->raft.tls_ca[0] && c->raft.tls_cert[0] && c->raft.tls_key[0]))
        why = "raft.tls_ca, raft.tls_cert and raft.tls_key go together (mutual TLS between peers)";
    else if (c->pg.high_water < 1000)
        why = "pg.high_water must be at least 1000";
    else if (c->pg.batch < 1 || c->pg.batch > 100000)
        why = "pg.batch must be from 1 to 100000";
    if (why) {
        snprintf(err, errlen, "config: %s", why);
        return CORE_EINVAL;
    }
    return 0;
}
