/*
 * api_circ.c — circulation: checkout, return, renew, holds, and access
 * grants to content. All rules live in apply(); these handlers only parse
 * and route, plus the read-only access grant, which is an HMAC over
 * (resource, user, expiry) with a key derived from the cluster signing key.
 */
#include "net/internal.h"

#include <stdlib.h>
#include <string.h>

/* checkout and hold share their body: {resource_id, user_id?} */
static int place(req_ctx *c, int type)
{
    static const char *const allowed[] = {"resource_id", "user_id", NULL};
    cmd cm = {.type = (uint8_t)type};
    json_t *o;
    int rc;

    if (require_role(c, ROLES_ANY))
        return -1;
    if (!(o = body_object(c, allowed)))
        return -1;
    if (body_uuid(c, o, "resource_id", 1, &cm.u.place.resource) ||
        (rc = body_uuid(c, o, "user_id", 0, &cm.u.place.user)) < 0)
        return -1;
    if (rc == 1)
        cm.u.place.user = c->who.id;
    else if (c->who.role == ROLE_MEMBER && memcmp(cm.u.place.user.b, c->who.id.b, 16) != 0)
        return reply_problem(c, 403, "forbidden", "members act for themselves only", "user_id");
    if (core_uuid_v7(&cm.u.place.id, core_now_ms()))
        return reply_problem(c, 500, "internal", "could not make an id", NULL);
    return propose(c, &cm);
}

int h_loan_create(req_ctx *c, const core_uuid *unused)
{
    return place(c, CMD_LOAN_CHECKOUT);
}
int h_hold_create(req_ctx *c, const core_uuid *unused)
{
    return place(c, CMD_HOLD_PLACE);
}

static int target(req_ctx *c, int type, const core_uuid *id)
{
    cmd cm = {.type = (uint8_t)type};
    if (require_role(c, ROLES_ANY))
        return -1;
    cm.u.target.id = *id;
    return propose(c, &cm);
}

int h_loan_return(req_ctx *c, const core_uuid *id)
{
    return target(c, CMD_LOAN_RETURN, id);
}
int h_loan_renew(req_ctx *c, const core_uuid *id)
{
    return target(c, CMD_LOAN_RENEW, id);
}
int h_hold_delete(req_ctx *c, const core_uuid *id)
{
    return target(c, CMD_HOLD_CANCEL, id);
}

int h_res_access(req_ctx *c, const core_uuid *rid)
{
    http_server *s = c->a->srv;
    store_txn *t = read_txn(c);
    MDB_cursor *cur;
    MDB_val key = {16, c->who.id.b}, val, res;
    int rc, on_loan = 0;
    char rs[37], us[37], sig[65], when[21];

    if (store_get(t, DB_RES, rid->b, 16, &res))
        return reply_problem(c, 404, "not-found", "no such resource", NULL);
    if (mdb_cursor_open(t->txn, store_dbi(t->st, DB_UACTIVE), &cur))
        return reply_problem(c, 503, "unavailable", "the store cannot be read", NULL);
    rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
    while (rc == 0 && key.mv_size == 32 && memcmp(key.mv_data, c->who.id.b, 16) == 0) {
        if (val.mv_size >= 16 && memcmp(val.mv_data, rid->b, 16) == 0) {
            on_loan = 1;
            break;
        }
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (!on_loan)
        return reply_problem(c, 403, "forbidden", "access needs an active loan of this resource",
                             NULL);
    if (memmem(res.mv_data, res.mv_size, "\"premium\":true", 14) && c->who.plan != PLAN_PREMIUM)
        return reply_problem(c, 403, "premium-required", "this resource needs the premium plan",
                             NULL);
    int64_t exp = core_now_ms() / 1000 + s->cfg->grant_ttl_s;
    core_uuid_fmt(rid, rs);
    core_uuid_fmt(&c->who.id, us);
    auth_grant_sign(s->grant_key, 32, rs, us, exp, sig);
    core_fmt_time(exp, when);
    struct evbuffer *b = evhttp_request_get_output_buffer(c->req);
    evbuffer_add_printf(
        b, "{\"url\":\"%s/v1/content/%s?user=%s&exp=%lld&sig=%s\",\"expires_at\":\"%s\"}",
        s->cfg->content_base_url, rs, us, (long long)exp, sig, when);
    reply_buf(c, 200, "application/json", b);
    return 0;
}

int h_content(req_ctx *c, const core_uuid *rid)
{
    http_server *s = c->a->srv;
    const char *user = query_get(c, "user"), *exp = query_get(c, "exp"), *sig = query_get(c, "sig");
    core_uuid uid;
    char rs[37], when[21], *end;
    long long e;

    if (!user || !exp || !sig || core_uuid_parse(user, strlen(user), &uid))
        return reply_problem(c, 403, "forbidden", "the access grant is missing or malformed", NULL);
    e = strtoll(exp, &end, 10);
    if (*end || e <= 0)
        return reply_problem(c, 403, "forbidden", "the access grant is malformed", NULL);
    core_uuid_fmt(rid, rs);
    if (auth_grant_verify(s->grant_key, 32, rs, user, e, sig, core_now_ms() / 1000) != 1)
        return reply_problem(c, 403, "forbidden", "the access grant is not valid or has expired",
                             NULL);
    core_fmt_time(e, when);
    struct evbuffer *b = evhttp_request_get_output_buffer(c->req);
    evbuffer_add_printf(b, "{\"resource_id\":\"%s\",\"user_id\":\"%s\",\"expires_at\":\"%s\"}", rs,
                        user, when);
    reply_buf(c, 200, "application/json", b);
    return 0;
}
