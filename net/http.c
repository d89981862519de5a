/*
 * http.c — HTTP actors: threads, listeners, routing, authentication,
 * replies, write proposals and metrics.
 *
 * Each actor thread owns an event base, an evhttp and a SO_REUSEPORT
 * socket; the kernel balances connections across them. A request is
 * routed, authenticated (a JWT is verified once and then served from the
 * thread's cache until it expires; the stored user record decides role,
 * plan and status so a block takes effect at once) and rate limited.
 * Reads run to completion on the thread inside one renewed LMDB read
 * transaction. A write is encoded as a command and handed to the writer;
 * evhttp keeps the connection's reading disabled until we reply, so the
 * request stays valid until the writer's answer comes back through the
 * actor's inbox.
 */
#include "net/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/thread.h>
#include <netdb.h>
#include <openssl/hmac.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

static const double lat_bounds[LAT_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                               0.05,   0.1,   0.25,   0.5,   1.0,  2.5};

static const char *route_names[R__COUNT] = {
    [R_NONE] = "none",
    [R_REGISTER] = "/v1/auth/register",
    [R_LOGIN] = "/v1/auth/login",
    [R_ME] = "/v1/me",
    [R_ME_LOANS] = "/v1/me/loans",
    [R_ME_HOLDS] = "/v1/me/holds",
    [R_RES_LIST] = "GET /v1/resources",
    [R_RES_CREATE] = "POST /v1/resources",
    [R_RES_COUNTS] = "/v1/resources/counts",
    [R_RES_GET] = "GET /v1/resources/{id}",
    [R_RES_PUT] = "PUT /v1/resources/{id}",
    [R_RES_DELETE] = "DELETE /v1/resources/{id}",
    [R_RES_ACCESS] = "/v1/resources/{id}/access",
    [R_CONTENT] = "/v1/content/{id}",
    [R_LOAN_CREATE] = "POST /v1/loans",
    [R_LOAN_RETURN] = "/v1/loans/{id}/return",
    [R_LOAN_RENEW] = "/v1/loans/{id}/renew",
    [R_HOLD_CREATE] = "POST /v1/holds",
    [R_HOLD_DELETE] = "DELETE /v1/holds/{id}",
    [R_USER_GET] = "GET /v1/users/{id}",
    [R_USER_PATCH] = "PATCH /v1/users/{id}",
    [R_USER_LOANS] = "/v1/users/{id}/loans",
    [R_APIKEY_CREATE] = "/v1/api-keys",
    [R_REP_OVERDUE] = "/v1/reports/overdue",
    [R_REP_PER_DAY] = "/v1/reports/loans-per-day",
    [R_REP_TOP] = "/v1/reports/top-resources",
    [R_HEALTHZ] = "/healthz",
    [R_READYZ] = "/readyz",
    [R_METRICS] = "/metrics",
    [R_CLUSTER] = "/v1/cluster",
    [R_CLUSTER_PROMOTE] = "/v1/cluster/nodes/{id}/promote",
    [R_CLUSTER_DRAIN] = "/v1/cluster/drain",
    [R_CLUSTER_DIGEST] = "/v1/cluster/digest",
    [R_IMPORT] = "/v1/imports",
    [R_CLUSTER_FAULT] = "/v1/cluster/fault",
    [R_UNMATCHED] = "unmatched",
};

static int h_healthz(req_ctx *c, const core_uuid *id);
static int h_readyz(req_ctx *c, const core_uuid *id);

enum { AUTH_NONE = 0, AUTH_REQUIRED = 1 };

typedef struct route {
    enum evhttp_cmd_type method;
    const char *pattern;
    int id;
    handler_fn fn;
    int auth;
} route;

static const route routes[] = {
    {EVHTTP_REQ_POST, "/v1/auth/register", R_REGISTER, h_register, AUTH_NONE},
    {EVHTTP_REQ_POST, "/v1/auth/login", R_LOGIN, h_login, AUTH_NONE},
    {EVHTTP_REQ_GET, "/v1/me", R_ME, h_me, AUTH_REQUIRED},
    {EVHTTP_REQ_GET, "/v1/me/loans", R_ME_LOANS, h_me_loans, AUTH_REQUIRED},
    {EVHTTP_REQ_GET, "/v1/me/holds", R_ME_HOLDS, h_me_holds, AUTH_REQUIRED},
    {EVHTTP_REQ_GET, "/v1/resources", R_RES_LIST, h_res_list, AUTH_REQUIRED},
    {EVHTTP_REQ_POST, "/v1/resources", R_RES_CREATE, h_res_create, AUTH_REQUIRED},
    {EVHTTP_REQ_GET, "/v1/resources/counts", R_RES_COUNTS, h_res_counts, AUTH_REQUIRED},
    {EVHTTP_REQ_GET, "/v1/resources/{id}", R_RES_GET, h_res_get, AUTH_REQUIRED},
    {EVHTTP_REQ_PUT, "/v1/resources/{id}", R_RES_PUT, h_res_put, AUTH_REQUIRED},
    {EVHTTP_REQ_DELETE, "/v1/resources/{id}", R_RES_DELETE, h_res_delete, AUTH_REQUIRED},
    {EVHTTP_REQ_GET, "/v1/resources/{id}/access", R_RES_ACCESS, h_res_access, AUTH_REQUIRED},
    {EVHTTP_REQ_GET, "/v1/content/{id}", R_CONTENT, h_content, AUTH_NONE},
    {EVHTTP_REQ_POST, "/v1/loans", R_LOAN_CREATE, h_loan_create, AUTH_REQUIRED},
    {EVHTTP_REQ_POST, "/v1/loans/{id}/return", R_LOAN_RETURN, h_loan_return, AUTH_REQUIRED},
    {EVHTTP_REQ_POST, "/v1/loans/{id}/renew", R_LOAN_RENEW, h_loan_renew, AUTH_REQUIRED},
    {EVHTTP_REQ_POST, "/v1/holds", R_HOLD_CREATE, h_hold_create, AUTH_REQUIRED},
    {EVHTTP_REQ_DELETE, "/v1/holds/{id}", R_HOLD_DELETE, h_hold_delete, AUTH_REQUIRED},
    {EVHTTP_REQ_GET, "/v1/users/{id}", R_USER_GET, h_user_get, AUTH_REQUIRED},
    {EVHTTP_REQ_PATCH, "/v1/users/{id}", R_USER_PATCH, h_user_patch, AUTH_REQUIRED},
    {EVHTTP_REQ_GET, "/v1/users/{id}/loans", R_USER_LOANS, h_user_loans, AUTH_REQUIRED},
    {EVHTTP_REQ_POST, "/v1/api-keys", R_APIKEY_CREATE, h_apikey_create, AUTH_REQUIRED},
    {EVHTTP_REQ_GET, "/v1/reports/overdue", R_REP_OVERDUE, h_rep_overdue, AUTH_REQUIRED},
    {EVHTTP_REQ_GET, "/v1/reports/loans-per-day", R_REP_PER_DAY, h_rep_per_day, AUTH_REQUIRED},
    {EVHTTP_REQ_GET, "/v1/reports/top-resources", R_REP_TOP, h_rep_top, AUTH_REQUIRED},
    {EVHTTP_REQ_GET, "/healthz", R_HEALTHZ, h_healthz, AUTH_NONE},
    {EVHTTP_REQ_GET, "/readyz", R_READYZ, h_readyz, AUTH_NONE},
    {EVHTTP_REQ_GET, "/metrics", R_METRICS, h_metrics, AUTH_NONE},
    {EVHTTP_REQ_GET, "/v1/cluster", R_CLUSTER, h_cluster_status, AUTH_REQUIRED},
    {EVHTTP_REQ_POST, "/v1/cluster/nodes/{node}/promote", R_CLUSTER_PROMOTE, h_cluster_promote,
     AUTH_REQUIRED},
    {EVHTTP_REQ_POST, "/v1/cluster/drain", R_CLUSTER_DRAIN, h_cluster_drain, AUTH_REQUIRED},
    {EVHTTP_REQ_GET, "/v1/cluster/digest", R_CLUSTER_DIGEST, h_cluster_digest, AUTH_REQUIRED},
    {EVHTTP_REQ_PUT, "/v1/cluster/fault", R_CLUSTER_FAULT, h_cluster_fault, AUTH_REQUIRED},
    {EVHTTP_REQ_POST, "/v1/imports", R_IMPORT, h_import, AUTH_REQUIRED},
};

/* ---- replies ---- */

static void record(req_ctx *c, int status)
{
    http_actor *a = c->a;
    double secs = (double)(core_mono_ns() - c->start_ns) / 1e9;
    int b = 0;
    if (status >= 100 && status < 600)
        atomic_fetch_add_explicit(&a->requests[c->route][status - 100], 1, memory_order_relaxed);
    while (b < LAT_BUCKETS && secs > lat_bounds[b])
        b++;
    atomic_fetch_add_explicit(&a->latency[c->route][b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&a->latency_sum_us[c->route], (uint64_t)(secs * 1e6),
                              memory_order_relaxed);
}

void reply_free(req_ctx *c)
{
    if (c->query_parsed)
        evhttp_clear_headers(&c->query);
    json_decref(c->body);
    if (c->job) {
        OPENSSL_cleanse(c->job, sizeof *c->job);
        free(c->job);
    }
    if (c->import) {
        free(c->import->data);
        free(c->import->body);
        free(c->import);
    }
    core_buf_free(&c->rq.cmd);
    apply_result_clear(&c->rq.res);
    free(c);
}

void reply_buf(req_ctx *c, int status, const char *ctype, struct evbuffer *b)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(c->req);
    if (ctype)
        evhttp_add_header(h, "Content-Type", ctype);
    record(c, status);
    evhttp_send_reply(c->req, status, NULL, status == 204 ? NULL : b);
    reply_free(c);
}

void reply_raw(req_ctx *c, int status, const char *ctype, const void *body, size_t len)
{
    struct evbuffer *b = evhttp_request_get_output_buffer(c->req);
    if (body && len)
        evbuffer_add(b, body, len);
    reply_buf(c, status, ctype, b);
}

void reply_json(req_ctx *c, int status, const char *body, size_t len)
{
    reply_raw(c, status, "application/json", body, len);
}

int reply_problem(req_ctx *c, int status, const char *kind, const char *detail, const char *field)
{
    size_t len;
    char *body = core_problem(status, kind, detail, field, &len);
    struct evkeyvalq *h = evhttp_request_get_output_headers(c->req);
    if (status == 401)
        evhttp_add_header(h, "WWW-Authenticate", "Bearer");
    reply_raw(c, status, "application/problem+json", body, body ? len : 0);
    free(body);
    return -1;
}

/* ---- request helpers ---- */

store_txn *read_txn(req_ctx *c)
{
    return &c->a->rtxn;
}

const char *query_get(req_ctx *c, const char *name)
{
    if (!c->query_parsed) {
        const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(c->req));
        TAILQ_INIT(&c->query);
        c->query_parsed = 1;
        if (q && evhttp_parse_query_str(q, &c->query) < 0) {
            evhttp_clear_headers(&c->query);
            TAILQ_INIT(&c->query);
        }
    }
    return evhttp_find_header(&c->query, name);
}

int require_role(req_ctx *c, unsigned mask)
{
    if (!c->who.authenticated)
        return reply_problem(c, 401, "unauthorized", "authentication required", NULL);
    if (!(mask & (1u << c->who.role)))
        return reply_problem(c, 403, "forbidden", "your role may not do this", NULL);
    return 0;
}

static int idem_valid(const char *k, size_t len)
{
    if (len < 1 || len > CORE_MAX_IDEM)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (k[i] < 0x21 || k[i] > 0x7e)
            return 0;
    return 1;
}

static int request_hash(req_ctx *c, uint8_t out[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
    const char *uri = evhttp_request_get_uri(c->req);
    int m = (int)evhttp_request_get_command(c->req);
    size_t len = evbuffer_get_length(in);
    int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
             EVP_DigestUpdate(md, &m, sizeof m) && EVP_DigestUpdate(md, uri, strlen(uri) + 1) &&
             (!len || EVP_DigestUpdate(md, evbuffer_pullup(in, -1), len)) &&
             EVP_DigestFinal_ex(md, out, NULL);
    EVP_MD_CTX_free(md);
    return ok ? 0 : CORE_EIO;
}

/* answers with an apply() result: the writer's, or a replayed one */
static void reply_result(req_ctx *c)
{
    apply_result *r = &c->rq.res;
    if (c->route == R_APIKEY_CREATE && r->status == 201 && r->body && r->body_len > 1 &&
        c->secret[0]) {
        /* the key itself is never stored: add it to this one answer */
        struct evbuffer *b = evhttp_request_get_output_buffer(c->req);
        evbuffer_add(b, r->body, r->body_len - 1);
        evbuffer_add_printf(b, ",\"key\":\"%s\"}", c->secret);
        OPENSSL_cleanse(c->secret, sizeof c->secret);
        reply_buf(c, 201, "application/json", b);
        return;
    }
    if (r->status == 503) /* no leader, or the node stops: worth retrying soon */
        evhttp_add_header(evhttp_request_get_output_headers(c->req), "Retry-After", "1");
    reply_raw(c, r->status,
              r->status == 204 ? NULL
              : r->problem     ? "application/problem+json"
                               : "application/json",
              r->body, r->body_len);
}

int read_strong(req_ctx *c, int (*fn)(req_ctx *, const core_uuid *), const core_uuid *id)
{
    c->resume = fn;
    c->resume_id = *id;
    c->rq.reply_to = c->a->in;
    atomic_fetch_add(&c->a->srv->inflight, 1);
    repl_op(c->a->srv->rp, &c->rq, REPL_OP_SYNC, 0);
    return 0;
}

static void on_write_reply(req_ctx *c)
{
    atomic_fetch_sub(&c->a->srv->inflight, 1);
    if (c->resume && c->rq.res.status == 200) {
        http_actor *a = c->a; /* the handler's answer frees c */
        int (*fn)(req_ctx *, const core_uuid *) = c->resume;
        /* rq is free again: the handler may propose a write with it */
        c->resume = NULL;
        c->caught_up = 1;
        apply_result_clear(&c->rq.res);
        if (store_renew(&a->rtxn)) {
            reply_problem(c, 503, "unavailable", "the store cannot be read", NULL);
            return;
        }
        fn(c, &c->resume_id);
        store_reset(&a->rtxn);
        return;
    }
    reply_result(c);
}

int write_admitted(req_ctx *c)
{
    if (atomic_load(&c->a->srv->draining)) {
        evhttp_add_header(evhttp_request_get_output_headers(c->req), "Retry-After", "1");
        return reply_problem(c, 503, "unavailable", "this node is shutting down; retry on another",
                             NULL);
    }
    if (wb_backlogged(c->a->srv->wb)) {
        /* PostgreSQL is behind by the high-water mark: accept no write it could lose sight of */
        evhttp_add_header(evhttp_request_get_output_headers(c->req), "Retry-After", "5");
        atomic_fetch_add(&c->a->srv->wb_refused, 1);
        return reply_problem(c, 503, "write-behind-backlog",
                             "writes are paused: PostgreSQL, the system of record, is too far "
                             "behind; reads still work, retry later",
                             NULL);
    }
    return 0;
}

int propose(req_ctx *c, cmd *cm)
{
    const char *key =
        evhttp_find_header(evhttp_request_get_input_headers(c->req), "Idempotency-Key");
    int rc;

    if (write_admitted(c) < 0)
        return -1;
    cm->ts_ms = core_now_ms();
    cm->actor = c->who.id;
    cm->actor_role = (uint8_t)c->who.role;
    /* keys are scoped by principal; an anonymous caller has none to scope by */
    if (key && c->who.authenticated) {
        size_t klen = strlen(key);
        if (!idem_valid(key, klen))
            return reply_problem(c, 400, "validation",
                                 "Idempotency-Key must be 1 to 64 printable characters",
                                 "Idempotency-Key");
        if (request_hash(c, cm->req_hash))
            return reply_problem(c, 500, "internal", "could not fingerprint the request", NULL);
        cm->idem.p = key;
        cm->idem.len = (uint32_t)klen;
        /* a replay is answered from its record without a write; apply()
         * checks again, in log order, for requests racing this one */
        if (apply_idem_find(read_txn(c), cm, &c->rq.res)) {
            OPENSSL_cleanse(c->secret, sizeof c->secret); /* a replay shows no new key */
            reply_result(c);
            return -1;
        }
    }
    if ((rc = cmd_encode(cm, &c->rq.cmd)))
        return reply_problem(c, rc == CORE_ERANGE ? 413 : 500,
                             rc == CORE_ERANGE ? "payload-too-large" : "internal",
                             "the request could not be encoded", NULL);
    c->rq.reply_to = c->a->in;
    atomic_fetch_add(&c->a->srv->inflight, 1);
    repl_submit(c->a->srv->rp, &c->rq);
    return 0;
}

int hash_later(req_ctx *c, hash_job *j)
{
    j->c = c;
    j->reply_to = c->a->in;
    j->link.type = MSG_HASHED;
    c->job = j;
    if (hasher_submit(c->a->srv->hasher, j)) {
        evhttp_add_header(evhttp_request_get_output_headers(c->req), "Retry-After", "1");
        return reply_problem(c, 503, "unavailable",
                             "too many passwords are being checked; retry shortly", NULL);
    }
    atomic_fetch_add(&c->a->srv->inflight, 1);
    return 0;
}

/* ---- authentication ---- */

/* role, plan and status from a stored user view (our own compact JSON, so
 * a quoted key can only be a key: quotes inside strings are escaped) */
void principal_from_user(principal *p, const MDB_val *v)
{
    static const char *roles[] = {"\"role\":\"member\"", "\"role\":\"librarian\"",
                                  "\"role\":\"admin\"", "\"role\":\"service\""};
    for (int r = 0; r < ROLE__COUNT; r++)
        if (memmem(v->mv_data, v->mv_size, roles[r], strlen(roles[r])))
            p->role = r;
    p->plan =
        memmem(v->mv_data, v->mv_size, "\"plan\":\"premium\"", 16) ? PLAN_PREMIUM : PLAN_STANDARD;
    p->status = memmem(v->mv_data, v->mv_size, "\"status\":\"blocked\"", 18) ? USTATUS_BLOCKED
                                                                             : USTATUS_ACTIVE;
    p->is_user = 1;
}

/* 0 authenticated, -1 answered (refused); with may_defer, 1 when the key
 * or the token's subject is unknown here (nothing answered yet) */
static int authenticate(req_ctx *c, int may_defer)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(c->req);
    const char *authz = evhttp_find_header(h, "Authorization");
    const char *apikey = evhttp_find_header(h, "X-API-Key");
    principal *p = &c->who;
    MDB_val v;

    if (apikey) {
        uint8_t hash[32];
        const char *idp;
        auth_apikey_hash(apikey, strlen(apikey), hash);
        if (store_get(read_txn(c), DB_APIKEYS, hash, 32, &v))
            return may_defer ? 1 : reply_problem(c, 401, "unauthorized", "unknown API key", NULL);
        idp = memmem(v.mv_data, v.mv_size, "\"id\":\"", 6);
        if (!idp || (size_t)(idp - (const char *)v.mv_data) + 6 + 36 > v.mv_size ||
            core_uuid_parse(idp + 6, 36, &p->id))
            return reply_problem(c, 500, "internal", "damaged API key record", NULL);
        p->role = memmem(v.mv_data, v.mv_size, "\"role\":\"librarian\"", 18) ? ROLE_LIBRARIAN
                                                                             : ROLE_SERVICE;
        p->plan = PLAN_STANDARD;
        p->authenticated = 1;
        return 0;
    }
    if (!authz)
        return reply_problem(c, 401, "unauthorized",
                             "an Authorization: Bearer token or X-API-Key is required", NULL);
    if (strncasecmp(authz, "Bearer ", 7) != 0)
        return reply_problem(c, 401, "unauthorized", "only Bearer tokens are accepted", NULL);
    auth_claims cl;
    const char *tok = authz + 7;
    int rc = auth_verify_cached(c->a->srv->verifier, c->a->cache, tok, strlen(tok),
                                core_now_ms() / 1000, &cl);
    if (rc < 0)
        return reply_problem(c, 401, "unauthorized", auth_strerror(rc), NULL);
    p->role = core_role_parse(cl.role);
    if (p->role < 0 || core_uuid_parse(cl.sub, strlen(cl.sub), &p->id))
        return reply_problem(c, 401, "unauthorized", "the token's role or subject is not valid",
                             NULL);
    p->plan = strcmp(cl.plan, "premium") == 0 ? PLAN_PREMIUM : PLAN_STANDARD;
    if (store_get(read_txn(c), DB_USERS, p->id.b, 16, &v) == 0)
        principal_from_user(p, &v);
    else if (p->role == ROLE_MEMBER)
        return may_defer ? 1
                         : reply_problem(c, 401, "unauthorized",
                                         "the token's subject is not a registered user", NULL);
    /* checked on every request, after the token cache: a block takes effect at once */
    if (p->status == USTATUS_BLOCKED)
        return reply_problem(c, 403, "member-blocked", "this account is blocked", NULL);
    p->authenticated = 1;
    return 0;
}

static int rate_limit(req_ctx *c)
{
    char key[64];
    size_t klen;
    int retry;
    if (c->who.authenticated) {
        memcpy(key, c->who.id.b, 16);
        klen = 16;
    } else {
        char *addr;
        ev_uint16_t port;
        evhttp_connection_get_peer(evhttp_request_get_connection(c->req), &addr, &port);
        klen = (size_t)snprintf(key, sizeof key, "ip:%s", addr ? addr : "?");
    }
    if (rl_take(c->a->srv->limiter, key, klen, core_mono_ns(), &retry))
        return 0;
    char ra[16];
    snprintf(ra, sizeof ra, "%d", retry);
    evhttp_add_header(evhttp_request_get_output_headers(c->req), "Retry-After", ra);
    return reply_problem(c, 429, "rate-limited", "too many requests; retry later", NULL);
}

/* ---- routing ---- */

/* 1 match, 0 no; *id set when the pattern has {id} and the segment is a UUID */
/* {id} is a UUID; {node} a raft node id (1 to 16 hex digits), stored
 * big-endian in the first 8 bytes of id */
static int match(const char *pattern, const char *path, core_uuid *id, int *bad_id)
{
    while (*pattern && *path) {
        if (strncmp(pattern, "{node}", 6) == 0) {
            size_t len = strcspn(path, "/");
            uint64_t v = 0;
            if (len == 0)
                return 0;
            for (size_t i = 0; i < len; i++) {
                int h = path[i] >= '0' && path[i] <= '9'   ? path[i] - '0'
                        : path[i] >= 'a' && path[i] <= 'f' ? path[i] - 'a' + 10
                        : path[i] >= 'A' && path[i] <= 'F' ? path[i] - 'A' + 10
                                                           : -1;
                if (h < 0 || len > 16)
                    *bad_id = 1;
                v = v << 4 | (uint64_t)(h & 15);
            }
            memset(id, 0, sizeof *id);
            store_be64(id->b, v);
            pattern += 6;
            path += len;
            continue;
        }
        if (strncmp(pattern, "{id}", 4) == 0) {
            const char *end = strchr(path, '/');
            size_t len = end ? (size_t)(end - path) : strlen(path);
            if (len == 0)
                return 0;
            if (core_uuid_parse(path, len, id))
                *bad_id = 1;
            pattern += 4;
            path += len;
            continue;
        }
        if (*pattern != *path)
            return 0;
        pattern++;
        path++;
    }
    return *pattern == '\0' && *path == '\0';
}

/* the route's handler, once the caller is authenticated and within its
 * rate (a strong read needs no barrier when the request caught up already) */
static int run_route(req_ctx *c, const core_uuid *id)
{
    const route *rt = c->rt;
    if (c->bad_id)
        return reply_problem(c, 404, "not-found", "no such item", NULL);
    if (rt->method == EVHTTP_REQ_GET && rt->auth == AUTH_REQUIRED && rt->id != R_CLUSTER &&
        rt->id != R_CLUSTER_DIGEST) {
        const char *cons = query_get(c, "consistency");
        if (cons && strcmp(cons, "strong") != 0 && strcmp(cons, "local") != 0)
            return reply_problem(c, 422, "validation", "consistency must be local or strong",
                                 "consistency");
        if (cons && strcmp(cons, "strong") == 0 && !c->caught_up)
            return read_strong(c, rt->fn, id);
    }
    return rt->fn(c, id);
}

/* a request whose caller was unknown here, after catching up: refused now
 * if still unknown (its rate was counted before) */
static int run_caught_up(req_ctx *c, const core_uuid *id)
{
    if (authenticate(c, 0) < 0)
        return -1;
    return run_route(c, id);
}

static void dispatch(struct evhttp_request *req, void *arg)
{
    http_actor *a = arg;
    req_ctx *c = calloc(1, sizeof *c);
    const route *found = NULL;
    int path_matched = 0, bad_id = 0;
    core_uuid id = {{0}};
    const char *path;

    if (!c) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    c->req = req;
    c->a = a;
    c->start_ns = core_mono_ns();
    c->route = R_UNMATCHED;
    if (atomic_load(&a->srv->draining))
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    c->rq.cookie = c;
    c->rq.link.type = MSG_REPLY;
    path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (!path)
        path = "/";
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        int bad = 0;
        core_uuid tmp;
        if (!match(routes[i].pattern, path, &tmp, &bad))
            continue;
        path_matched = 1;
        if (routes[i].method == evhttp_request_get_command(req)) {
            found = &routes[i];
            id = tmp;
            bad_id = bad;
            break;
        }
    }
    if (!found) {
        if (path_matched) {
            reply_problem(c, 405, "method-not-allowed", "this method is not allowed here", NULL);
            return;
        }
        reply_problem(c, 404, "not-found", "no such endpoint", NULL);
        return;
    }
    c->route = found->id;
    if (evbuffer_get_length(evhttp_request_get_input_buffer(req)) >
        (found->id == R_IMPORT ? a->srv->cfg->limits.max_import_bytes
                               : a->srv->cfg->limits.max_body_bytes)) {
        reply_problem(c, 413, "payload-too-large",
                      found->id == R_IMPORT ? "the file is larger than limits.max_import_bytes"
                                            : "the body is too large",
                      NULL);
        return;
    }
    if (store_renew(&a->rtxn)) {
        reply_problem(c, 503, "unavailable", "the store cannot be read", NULL);
        return;
    }
    c->rt = found;
    c->bad_id = bad_id;
    if (found->auth == AUTH_REQUIRED) {
        /* a follower may not have applied a registration or an API key
         * another node acknowledged: before saying 401, catch up with the
         * leader once (after the per-address rate limit, so unknown keys
         * cannot make a node ask the leader without bound) */
        int rc = authenticate(c, !repl_leads(a->srv->rp));
        if (rc == 1 && rate_limit(c) == 0)
            read_strong(c, run_caught_up, &id);
        if (rc != 0)
            goto done;
    }
    if (found->id != R_HEALTHZ && found->id != R_READYZ && found->id != R_METRICS &&
        rate_limit(c) < 0)
        goto done;
    run_route(c, &id);
done:
    store_reset(&a->rtxn);
}

/* ---- health and metrics ---- */

static int h_healthz(req_ctx *c, const core_uuid *id)
{
    static const char ok[] = "{\"status\":\"ok\"}";
    reply_json(c, 200, ok, sizeof ok - 1);
    return 0;
}

static int h_readyz(req_ctx *c, const core_uuid *id)
{
    static const char ready[] = "{\"status\":\"ready\"}", draining[] = "{\"status\":\"draining\"}",
                      catching_up[] = "{\"status\":\"catching-up\"}";
    if (atomic_load(&c->a->srv->draining) || repl_draining(c->a->srv->rp))
        reply_json(c, 503, draining, sizeof draining - 1);
    else if (!repl_ready(c->a->srv->rp))
        reply_json(c, 503, catching_up, sizeof catching_up - 1);
    else
        reply_json(c, 200, ready, sizeof ready - 1);
    return 0;
}

static void metrics_wb(http_server *s, struct evbuffer *b)
{
    wb_stats w;
    MDB_stat ms;
    store_txn t;
    size_t entries = 0, bytes = 0;

    wb_stats_get(s->wb, &w);
    if (store_begin(s->st, 0, &t) == 0) {
        if (mdb_stat(t.txn, store_dbi(s->st, DB_OUTBOX), &ms) == 0) {
            entries = ms.ms_entries;
            bytes = (ms.ms_branch_pages + ms.ms_leaf_pages + ms.ms_overflow_pages) * ms.ms_psize;
        }
        store_abort(&t);
    }
    evbuffer_add_printf(
        b,
        "# HELP circa_wb_enabled 1 when write-behind to PostgreSQL is configured.\n"
        "# TYPE circa_wb_enabled gauge\ncirca_wb_enabled %d\n"
        "# HELP circa_wb_connected 1 while the flusher holds a PostgreSQL connection.\n"
        "# TYPE circa_wb_connected gauge\ncirca_wb_connected %d\n"
        "# HELP circa_wb_flushed_index Newest log index PostgreSQL has.\n"
        "# TYPE circa_wb_flushed_index gauge\ncirca_wb_flushed_index %llu\n"
        "# HELP circa_wb_lag_entries Durable commands PostgreSQL does not have yet.\n"
        "# TYPE circa_wb_lag_entries gauge\ncirca_wb_lag_entries %llu\n"
        "# HELP circa_wb_lag_seconds Age of the oldest command PostgreSQL does not have yet.\n"
        "# TYPE circa_wb_lag_seconds gauge\ncirca_wb_lag_seconds %.3f\n"
        "# HELP circa_wb_high_water Lag in commands at which writes are refused.\n"
        "# TYPE circa_wb_high_water gauge\ncirca_wb_high_water %llu\n"
        "# HELP circa_wb_outbox_entries Entries in the LMDB outbox.\n"
        "# TYPE circa_wb_outbox_entries gauge\ncirca_wb_outbox_entries %zu\n"
        "# HELP circa_wb_outbox_bytes Pages the LMDB outbox occupies, in bytes.\n"
        "# TYPE circa_wb_outbox_bytes gauge\ncirca_wb_outbox_bytes %zu\n"
        "# HELP circa_wb_commands_total Commands written to PostgreSQL.\n"
        "# TYPE circa_wb_commands_total counter\ncirca_wb_commands_total %llu\n"
        "# HELP circa_wb_rows_total Table rows upserted into PostgreSQL.\n"
        "# TYPE circa_wb_rows_total counter\ncirca_wb_rows_total %llu\n"
        "# HELP circa_wb_batches_total PostgreSQL transactions committed by the flusher.\n"
        "# TYPE circa_wb_batches_total counter\ncirca_wb_batches_total %llu\n"
        "# HELP circa_wb_errors_total Failed flush attempts.\n"
        "# TYPE circa_wb_errors_total counter\ncirca_wb_errors_total %llu\n"
        "# HELP circa_wb_refused_writes_total Writes refused at the high-water mark.\n"
        "# TYPE circa_wb_refused_writes_total counter\ncirca_wb_refused_writes_total %llu\n",
        s->wb != NULL, w.connected, (unsigned long long)w.flushed_index,
        (unsigned long long)w.lag_entries, w.lag_seconds, (unsigned long long)w.high_water, entries,
        bytes, (unsigned long long)w.commands_total, (unsigned long long)w.rows_total,
        (unsigned long long)w.batches_total, (unsigned long long)w.errors_total,
        (unsigned long long)atomic_load(&s->wb_refused));
}

int h_metrics(req_ctx *c, const core_uuid *id)
{
    http_server *s = c->a->srv;
    struct evbuffer *b = evhttp_request_get_output_buffer(c->req);
    repl_stats rs;
    store_info si;

    evbuffer_add_printf(b, "# HELP circa_http_requests_total HTTP requests by route and status.\n"
                           "# TYPE circa_http_requests_total counter\n");
    for (int r = 1; r < R__COUNT; r++)
        for (int st = 0; st < STATUS_SLOTS; st++) {
            uint64_t n = 0;
            for (int i = 0; i < s->nactors; i++)
                n += atomic_load_explicit(&s->actors[i].requests[r][st], memory_order_relaxed);
            if (n)
                evbuffer_add_printf(b,
                                    "circa_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                                    route_names[r], st + 100, (unsigned long long)n);
        }
    evbuffer_add_printf(b, "# HELP circa_http_request_duration_seconds Time to answer, by route.\n"
                           "# TYPE circa_http_request_duration_seconds histogram\n");
    for (int r = 1; r < R__COUNT; r++) {
        uint64_t cum = 0, sum = 0, counts[LAT_BUCKETS + 1] = {0};
        for (int i = 0; i < s->nactors; i++) {
            for (int k = 0; k <= LAT_BUCKETS; k++)
                counts[k] +=
                    atomic_load_explicit(&s->actors[i].latency[r][k], memory_order_relaxed);
            sum += atomic_load_explicit(&s->actors[i].latency_sum_us[r], memory_order_relaxed);
        }
        for (int k = 0; k <= LAT_BUCKETS; k++)
            cum += counts[k];
        if (!cum)
            continue;
        cum = 0;
        for (int k = 0; k < LAT_BUCKETS; k++) {
            cum += counts[k];
            evbuffer_add_printf(
                b, "circa_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                route_names[r], lat_bounds[k], (unsigned long long)cum);
        }
        cum += counts[LAT_BUCKETS];
        evbuffer_add_printf(
            b,
            "circa_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n"
            "circa_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
            "circa_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
            route_names[r], (unsigned long long)cum, route_names[r], (double)sum / 1e6,
            route_names[r], (unsigned long long)cum);
    }
    repl_stats_get(s->rp, &rs);
    evbuffer_add_printf(b, "# HELP circa_write_batch_size Commands per group commit.\n"
                           "# TYPE circa_write_batch_size histogram\n");
    for (int k = 0; k < REPL_HIST_BUCKETS; k++)
        evbuffer_add_printf(b, "circa_write_batch_size_bucket{le=\"%d\"} %llu\n", 1 << k,
                            (unsigned long long)rs.hist[k]);
    evbuffer_add_printf(b,
                        "circa_write_batch_size_bucket{le=\"+Inf\"} %llu\n"
                        "circa_write_batch_size_sum %llu\ncirca_write_batch_size_count %llu\n",
                        (unsigned long long)rs.batches, (unsigned long long)rs.commands,
                        (unsigned long long)rs.batches);
    if (store_info_get(s->st, &si) == 0)
        evbuffer_add_printf(
            b,
            "# HELP circa_lmdb_map_used_bytes Bytes of the LMDB map in use.\n"
            "# TYPE circa_lmdb_map_used_bytes gauge\ncirca_lmdb_map_used_bytes %llu\n"
            "# HELP circa_lmdb_map_size_bytes Size of the LMDB map.\n"
            "# TYPE circa_lmdb_map_size_bytes gauge\ncirca_lmdb_map_size_bytes %llu\n"
            "# HELP circa_applied_index Last applied log index.\n"
            "# TYPE circa_applied_index gauge\ncirca_applied_index %llu\n",
            (unsigned long long)si.used_bytes, (unsigned long long)si.map_size,
            (unsigned long long)si.applied_index);
    evbuffer_add_printf(b,
                        "# HELP circa_inflight_writes Requests waiting for the writer.\n"
                        "# TYPE circa_inflight_writes gauge\ncirca_inflight_writes %ld\n",
                        atomic_load(&s->inflight));
    metrics_wb(s, b);
    reply_buf(c, 200, "text/plain; version=0.0.4", b);
    return 0;
}

/* ---- actors ---- */

static void on_inbox(evutil_socket_t fd, short what, void *arg)
{
    http_actor *a = arg;
    core_msg *m;
    core_inbox_ack(a->in);
    while ((m = core_inbox_pop(a->in)) != NULL) {
        switch (m->type) {
        case MSG_REPLY:
            on_write_reply((req_ctx *)((repl_req *)m)->cookie);
            break;
        case MSG_IMPORTED: {
            ingest_job *j = (ingest_job *)m;
            atomic_fetch_sub(&a->srv->inflight, 1);
            if (j->status == 503)
                evhttp_add_header(evhttp_request_get_output_headers(j->c->req), "Retry-After", "1");
            reply_raw(j->c, j->status, j->problem ? "application/problem+json" : "application/json",
                      j->body, j->body_len);
            break;
        }
        case MSG_HASHED: {
            hash_job *j = (hash_job *)m;
            atomic_fetch_sub(&a->srv->inflight, 1);
            if (store_renew(&a->rtxn)) {
                reply_problem(j->c, 503, "unavailable", "the store cannot be read", NULL);
                break;
            }
            j->done(j->c, j);
            store_reset(&a->rtxn);
            break;
        }
        case MSG_DRAIN:
            if (a->bound) {
                evhttp_del_accept_socket(a->http, a->bound);
                a->bound = NULL;
            }
            free(m);
            break;
        case MSG_STOP:
            free(m);
            event_base_loopbreak(a->base);
            break;
        }
    }
}

static void *actor_main(void *arg)
{
    http_actor *a = arg;
    event_base_dispatch(a->base);
    return NULL;
}

static int split_hostport(const char *listen, char *host, size_t hl, char *port, size_t pl)
{
    const char *colon;
    if (listen[0] == '[') {
        const char *end = strchr(listen, ']');
        if (!end || end[1] != ':')
            return -1;
        snprintf(host, hl, "%.*s", (int)(end - listen - 1), listen + 1);
        snprintf(port, pl, "%s", end + 2);
        return 0;
    }
    colon = strrchr(listen, ':');
    if (!colon)
        return -1;
    snprintf(host, hl, "%.*s", (int)(colon - listen), listen);
    snprintf(port, pl, "%s", colon + 1);
    return *port ? 0 : -1;
}

static int listen_socket(const char *listen_addr, char *err, size_t errlen)
{
    char host[256], port[16];
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE},
                    *res;
    int fd = -1, one = 1;

    if (split_hostport(listen_addr, host, sizeof host, port, sizeof port)) {
        snprintf(err, errlen, "listen address must be HOST:PORT, got %s", listen_addr);
        return -1;
    }
    if (getaddrinfo(host, port, &hints, &res)) {
        snprintf(err, errlen, "cannot resolve listen address %s", listen_addr);
        return -1;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) ||
        bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 1024)) {
        snprintf(err, errlen, "cannot listen on %s: %s", listen_addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static int actor_init(http_server *s, http_actor *a, int id, char *err, size_t errlen)
{
    int fd;
    a->id = id;
    a->srv = s;
    if (!(a->base = event_base_new()) || !(a->http = evhttp_new(a->base)) ||
        !(a->in = core_inbox_new()) || !(a->cache = auth_cache_new(4096))) {
        snprintf(err, errlen, "out of memory");
        return HTTP_ECONFIG;
    }
    /* evhttp refuses bodies over twice the limit with its own (HTML) 413;
     * dispatch() answers those between the limit and that with a problem */
    evhttp_set_max_body_size(
        a->http, (ev_ssize_t)(2 * (s->cfg->limits.max_import_bytes > s->cfg->limits.max_body_bytes
                                       ? s->cfg->limits.max_import_bytes
                                       : s->cfg->limits.max_body_bytes)));
    evhttp_set_max_headers_size(a->http, (ev_ssize_t)s->cfg->limits.max_header_bytes);
    /* read what is left of a refused body before closing, so that the client
     * reads the 413 instead of a reset connection */
    evhttp_set_flags(a->http, EVHTTP_SERVER_LINGERING_CLOSE);
    evhttp_set_timeout(a->http, 30);
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_PATCH | EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD);
    evhttp_set_gencb(a->http, dispatch, a);
    if ((fd = listen_socket(s->cfg->listen, err, errlen)) < 0)
        return HTTP_EBIND;
    if (!(a->bound = evhttp_accept_socket_with_handle(a->http, fd))) {
        close(fd);
        snprintf(err, errlen, "cannot accept on %s", s->cfg->listen);
        return HTTP_EBIND;
    }
    a->wake = event_new(a->base, core_inbox_fd(a->in), EV_READ | EV_PERSIST, on_inbox, a);
    if (!a->wake || event_add(a->wake, NULL) || store_begin(s->st, 0, &a->rtxn)) {
        snprintf(err, errlen, "cannot start actor");
        return HTTP_ECONFIG;
    }
    store_reset(&a->rtxn);
    return 0;
}

static void actor_free(http_actor *a)
{
    core_msg *m;
    /* answers that came back after the loop stopped: their connections
     * are freed with the evhttp below */
    while (a->in && (m = core_inbox_pop(a->in)) != NULL) {
        if (m->type == MSG_REPLY)
            reply_free((req_ctx *)((repl_req *)m)->cookie);
        else if (m->type == MSG_HASHED)
            reply_free(((hash_job *)m)->c);
        else if (m->type == MSG_IMPORTED)
            reply_free(((ingest_job *)m)->c);
        else
            free(m);
    }
    if (a->rtxn.txn)
        store_abort(&a->rtxn);
    if (a->wake)
        event_free(a->wake);
    if (a->http)
        evhttp_free(a->http);
    if (a->base)
        event_base_free(a->base);
    core_inbox_free(a->in);
    auth_cache_free(a->cache);
}

static int load_keys(http_server *s, char *err, size_t errlen)
{
    store_txn t;
    unsigned len = 32;
    static const char label[] = "circa access grants";
    if (store_begin(s->st, 0, &t))
        return HTTP_ECONFIG;
    int rc = store_signing_key(&t, s->signing_key);
    store_abort(&t);
    if (rc) {
        snprintf(err, errlen, "the data directory has no signing key");
        return HTTP_ECONFIG;
    }
    HMAC(EVP_sha256(), s->signing_key, 32, (const unsigned char *)label, sizeof label - 1,
         s->grant_key, &len);
    return 0;
}

int http_start(const core_config *cfg, store *st, repl *rp, wb *w, http_server **out, char *err,
               size_t errlen)
{
    http_server *s = calloc(1, sizeof *s);
    int rc = HTTP_ECONFIG, started = 0;

    if (!s)
        return HTTP_ECONFIG;
    s->cfg = cfg;
    s->st = st;
    s->rp = rp;
    s->wb = w;
    if ((rc = load_keys(s, err, errlen)))
        goto fail;
    auth_config ac = {
        .alg = cfg->jwt.alg,
        .hs_secret = s->signing_key,
        .hs_secret_len = 32,
        .public_key_file = cfg->jwt.public_key_file[0] ? cfg->jwt.public_key_file : NULL,
        .jwks_file = cfg->jwt.jwks_file[0] ? cfg->jwt.jwks_file : NULL,
        .issuer = cfg->jwt.issuer[0] ? cfg->jwt.issuer : NULL,
        .audience = cfg->jwt.audience[0] ? cfg->jwt.audience : NULL,
        .leeway_s = cfg->jwt.leeway_s,
    };
    rc = HTTP_ECONFIG;
    if (auth_verifier_new(&ac, &s->verifier, err, errlen) < 0)
        goto fail;
    s->limiter = rl_new(cfg->limits.rate_per_s, cfg->limits.rate_burst, 1 << 16);
    s->login_limiter = rl_new(5.0 / 300.0, 5, 1 << 16);
    s->hasher = hasher_new(cfg->threads);
    s->ingest = ingest_new(s);
    s->nactors = cfg->threads;
    s->actors = calloc((size_t)s->nactors, sizeof *s->actors);
    if (!s->limiter || !s->login_limiter || !s->hasher || !s->ingest || !s->actors)
        goto fail;
    for (int i = 0; i < s->nactors; i++)
        if ((rc = actor_init(s, &s->actors[i], i, err, errlen)))
            goto fail;
    for (; started < s->nactors; started++)
        if (pthread_create(&s->actors[started].thread, NULL, actor_main, &s->actors[started])) {
            rc = HTTP_ECONFIG;
            snprintf(err, errlen, "cannot start threads");
            goto fail;
        }
    *out = s;
    return 0;
fail:
    for (int i = 0; i < started; i++) {
        core_msg *m = calloc(1, sizeof *m);
        if (m) {
            m->type = MSG_STOP;
            core_inbox_push(s->actors[i].in, m);
        }
        pthread_join(s->actors[i].thread, NULL);
    }
    hasher_stop(s->hasher);
    ingest_stop(s->ingest);
    for (int i = 0; s->actors && i < s->nactors; i++)
        actor_free(&s->actors[i]);
    free(s->actors);
    rl_free(s->limiter);
    rl_free(s->login_limiter);
    auth_verifier_free(s->verifier);
    OPENSSL_cleanse(s->signing_key, sizeof s->signing_key);
    free(s);
    return rc;
}

static void broadcast(http_server *s, int type)
{
    for (int i = 0; i < s->nactors; i++) {
        core_msg *m = calloc(1, sizeof *m);
        if (!m)
            continue;
        m->type = type;
        core_inbox_push(s->actors[i].in, m);
    }
}

void http_drain(http_server *s)
{
    atomic_store(&s->draining, 1);
    broadcast(s, MSG_DRAIN);
}

long http_inflight(http_server *s)
{
    return atomic_load(&s->inflight);
}

void http_stop(http_server *s)
{
    broadcast(s, MSG_STOP);
    for (int i = 0; i < s->nactors; i++)
        pthread_join(s->actors[i].thread, NULL);
    hasher_stop(s->hasher);
    s->hasher = NULL;
    ingest_stop(s->ingest);
    s->ingest = NULL;
}

void http_free(http_server *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->nactors; i++)
        actor_free(&s->actors[i]);
    free(s->actors);
    rl_free(s->limiter);
    rl_free(s->login_limiter);
    auth_verifier_free(s->verifier);
    OPENSSL_cleanse(s->signing_key, sizeof s->signing_key);
    OPENSSL_cleanse(s->grant_key, sizeof s->grant_key);
    free(s);
}
