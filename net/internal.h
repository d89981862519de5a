/*
 * internal.h — what the HTTP actor core (http.c) shares with the route
 * handlers (api_*.c) and request-body validation (body.c). Not a public
 * header: other modules use net.h.
 */
#ifndef CIRCA_NET_INTERNAL_H
#define CIRCA_NET_INTERNAL_H

#include "net/auth.h"
#include "net/net.h"
#include "net/ratelimit.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <pthread.h>

enum route_id {
    R_NONE = 0,
    R_REGISTER,
    R_LOGIN,
    R_ME,
    R_ME_LOANS,
    R_ME_HOLDS,
    R_RES_LIST,
    R_RES_CREATE,
    R_RES_COUNTS,
    R_RES_GET,
    R_RES_PUT,
    R_RES_DELETE,
    R_RES_ACCESS,
    R_CONTENT,
    R_LOAN_CREATE,
    R_LOAN_RETURN,
    R_LOAN_RENEW,
    R_HOLD_CREATE,
    R_HOLD_DELETE,
    R_USER_GET,
    R_USER_PATCH,
    R_USER_LOANS,
    R_APIKEY_CREATE,
    R_REP_OVERDUE,
    R_REP_PER_DAY,
    R_REP_TOP,
    R_HEALTHZ,
    R_READYZ,
    R_METRICS,
    R_CLUSTER,
    R_CLUSTER_PROMOTE,
    R_CLUSTER_DRAIN,
    R_CLUSTER_DIGEST,
    R_CLUSTER_FAULT,
    R_IMPORT,
    R_UNMATCHED,
    R__COUNT
};

#define LAT_BUCKETS  12
#define STATUS_SLOTS 500 /* statuses 100..599 */

typedef struct http_actor http_actor;
typedef struct req_ctx req_ctx;

/* a password to hash (register) or to check (login), done off the HTTP
 * threads; `done` runs on the actor thread when it comes back */
typedef struct hash_job {
    core_msg link;
    struct hash_job *next;
    core_inbox *reply_to;
    req_ctx *c;
    void (*done)(req_ctx *c, struct hash_job *j);
    int verify, ok;
    char pw[129];
    size_t pwlen;
    uint8_t salt[16], hash[32];
    uint32_t iterations;
    cmd cm;                             /* register: the command waiting for its hash */
    core_uuid user;                     /* login: who is logging in */
    char rlkey[8 + 4 * CORE_MAX_EMAIL]; /* login: its failed-login bucket */
    size_t rlkeylen;
} hash_job;

typedef struct hasher hasher;
hasher *hasher_new(int nthreads);
/* 0 queued; -1 when the queue is full or stopping */
int hasher_submit(hasher *h, hash_job *j);
/* finishes queued jobs, joins the threads, frees h */
void hasher_stop(hasher *h);
/* queues j for c's actor: replies 503 and returns -1 when the pool is full */
int hash_later(req_ctx *c, hash_job *j);

/* types of the messages an HTTP actor's inbox receives */
enum { MSG_REPLY = 1, MSG_DRAIN = 2, MSG_STOP = 3, MSG_HASHED = 4, MSG_IMPORTED = 5 };

/* a catalog file to import (POST /v1/imports), done by the ingest actor
 * (ingest.c); it comes back through reply_to with the answer filled in */
typedef struct ingest_job {
    core_msg link;
    struct ingest_job *next;
    core_inbox *reply_to;
    req_ctx *c;
    uint8_t *data; /* the file, owned by the job */
    size_t len;
    int format; /* enum imp_format; IMP_AUTO detects */
    char name[CMD_MAX_NAME + 1];
    core_uuid actor;
    uint8_t actor_role;
    int status, problem; /* the answer */
    char *body;
    size_t body_len;
} ingest_job;

typedef struct ingest ingest;
ingest *ingest_new(http_server *s);
/* 0 queued; -1 when imports are queued to the limit or it stops */
int ingest_submit(ingest *g, ingest_job *j);
/* finishes the running import, joins the thread, frees g */
void ingest_stop(ingest *g);

typedef struct principal {
    int authenticated;
    core_uuid id;
    int role, plan, status;
    int is_user; /* id names a stored user */
} principal;

struct req_ctx {
    repl_req rq; /* first: the writer's reply is this request */
    struct evhttp_request *req;
    http_actor *a;
    int route;
    int64_t start_ns;
    principal who;
    struct evkeyvalq query;
    int query_parsed;
    char secret[72]; /* a new API key, shown once in the reply */
    json_t *body;    /* kept while a continuation needs its strings */
    hash_job *job;
    ingest_job *import;
    int (*resume)(req_ctx *c, const core_uuid *id); /* run once caught up (read_strong) */
    core_uuid resume_id;
    int caught_up;          /* this request made the node catch up with the leader */
    const struct route *rt; /* the matched route, run again once caught up */
    int bad_id;
};

struct http_actor {
    int id;
    http_server *srv;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    core_inbox *in;
    struct event *wake;
    store_txn rtxn;
    auth_cache *cache;
    pthread_t thread;
    _Atomic uint64_t requests[R__COUNT][STATUS_SLOTS];
    _Atomic uint64_t latency[R__COUNT][LAT_BUCKETS + 1];
    _Atomic uint64_t latency_sum_us[R__COUNT];
};

struct http_server {
    const core_config *cfg;
    store *st;
    repl *rp;
    wb *wb; /* NULL: write-behind off */
    auth_verifier *verifier;
    rl *limiter, *login_limiter;
    hasher *hasher;
    ingest *ingest;
    uint8_t signing_key[32];
    uint8_t grant_key[32];
    int nactors;
    http_actor *actors;
    _Atomic int draining;
    _Atomic long inflight;
    _Atomic uint64_t wb_refused; /* writes refused at the high-water mark */
};

/* ---- replies (http.c) ---- */
void reply_raw(req_ctx *c, int status, const char *ctype, const void *body, size_t len);
void reply_json(req_ctx *c, int status, const char *body, size_t len);
void reply_buf(req_ctx *c, int status, const char *ctype, struct evbuffer *b);
/* returns -1 so handlers can `return reply_problem(...)` */
int reply_problem(req_ctx *c, int status, const char *kind, const char *detail, const char *field);
void reply_free(req_ctx *c);

/* ---- request helpers (http.c) ---- */
/* read transaction of this request's actor, renewed */
store_txn *read_txn(req_ctx *c);
/* query parameter or NULL; valid until the reply */
const char *query_get(req_ctx *c, const char *name);
/* requires a principal with one of the roles in mask (1 << role); replies on failure */
int require_role(req_ctx *c, unsigned mask);
/* Runs fn(c, id) again once this node applied everything the leader had
 * committed when asked (the answer is the leader's 503 when there is none):
 * ?consistency=strong, and lookups that must not miss a write another
 * node acknowledged, a caller unknown here. c->caught_up says fn runs after
 * catching up; c->rq is free again then (fn may propose). */
int read_strong(req_ctx *c, int (*fn)(req_ctx *, const core_uuid *), const core_uuid *id);
#define ROLES_STAFF ((1u << ROLE_LIBRARIAN) | (1u << ROLE_ADMIN) | (1u << ROLE_SERVICE))
#define ROLES_ANY   ((1u << ROLE_MEMBER) | ROLES_STAFF)
/* builds and submits a command (fills ts, actor, idempotency); replies on failure */
int propose(req_ctx *c, cmd *cm);
/* 0 when this node takes writes now; else replies 503 (shutting down, or
 * write-behind too far behind) and returns -1 */
int write_admitted(req_ctx *c);

/* role, plan and status from a stored user view */
void principal_from_user(principal *p, const MDB_val *v);

/* ---- bodies (body.c) ---- */
/* parses the body as a JSON object of only `allowed` keys (NULL-terminated); replies on failure */
json_t *body_object(req_ctx *c, const char *const *allowed);
/* field getters: 0 set, 1 absent (optional), -1 replied with a problem */
int body_str(req_ctx *c, json_t *o, const char *name, int required, size_t min, size_t max,
             core_str *out);
int body_uint(req_ctx *c, json_t *o, const char *name, int required, uint64_t max, uint64_t *out);
int body_bool(req_ctx *c, json_t *o, const char *name, int *out);
int body_uuid(req_ctx *c, json_t *o, const char *name, int required, core_uuid *out);
int body_enum(req_ctx *c, json_t *o, const char *name, int required, int (*parse)(const char *),
              int *out);
int body_str_list(req_ctx *c, json_t *o, const char *name, size_t maxitems, size_t maxlen,
                  core_str *items, uint8_t *n);
/* nesting depth of a JSON text (strings skipped); exposed for fuzzing */
int body_depth(const char *p, size_t len);

/* ---- handlers (api_*.c) ---- */
typedef int (*handler_fn)(req_ctx *c, const core_uuid *id);
int h_register(req_ctx *c, const core_uuid *id);
int h_login(req_ctx *c, const core_uuid *id);
int h_me(req_ctx *c, const core_uuid *id);
int h_me_loans(req_ctx *c, const core_uuid *id);
int h_me_holds(req_ctx *c, const core_uuid *id);
int h_user_get(req_ctx *c, const core_uuid *id);
int h_user_patch(req_ctx *c, const core_uuid *id);
int h_user_loans(req_ctx *c, const core_uuid *id);
int h_apikey_create(req_ctx *c, const core_uuid *id);
int h_res_list(req_ctx *c, const core_uuid *id);
int h_res_create(req_ctx *c, const core_uuid *id);
int h_res_counts(req_ctx *c, const core_uuid *id);
int h_res_get(req_ctx *c, const core_uuid *id);
int h_res_put(req_ctx *c, const core_uuid *id);
int h_res_delete(req_ctx *c, const core_uuid *id);
int h_res_access(req_ctx *c, const core_uuid *id);
int h_content(req_ctx *c, const core_uuid *id);
int h_loan_create(req_ctx *c, const core_uuid *id);
int h_loan_return(req_ctx *c, const core_uuid *id);
int h_loan_renew(req_ctx *c, const core_uuid *id);
int h_hold_create(req_ctx *c, const core_uuid *id);
int h_hold_delete(req_ctx *c, const core_uuid *id);
int h_rep_overdue(req_ctx *c, const core_uuid *id);
int h_rep_per_day(req_ctx *c, const core_uuid *id);
int h_rep_top(req_ctx *c, const core_uuid *id);
int h_metrics(req_ctx *c, const core_uuid *id);
/* api_cluster.c; promote's node id is in the first 8 bytes (big-endian) */
int h_cluster_status(req_ctx *c, const core_uuid *id);
int h_cluster_promote(req_ctx *c, const core_uuid *node);
int h_cluster_drain(req_ctx *c, const core_uuid *id);
int h_cluster_digest(req_ctx *c, const core_uuid *id);
int h_cluster_fault(req_ctx *c, const core_uuid *id);
int h_import(req_ctx *c, const core_uuid *id);

#endif
