/*
 * api_users.c — accounts: register, login, the caller's own views, member
 * administration and API keys.
 *
 * Password hashing (PBKDF2) runs on the hasher pool (hasher.c), not on the
 * HTTP thread; for register it happens before the command is proposed, so
 * the command carries salt and hash and apply() stays free of randomness.
 * Failed logins are throttled per email address, and an unknown email is
 * hashed too so it takes as long as a wrong password.
 */
#include "net/internal.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

static void register_hashed(req_ctx *c, hash_job *j)
{
    if (!j->ok) {
        reply_problem(c, 500, "internal", "could not hash the password", NULL);
        return;
    }
    memcpy(j->cm.u.user_create.hash, j->hash, 32);
    propose(c, &j->cm);
}

int h_register(req_ctx *c, const core_uuid *unused)
{
    static const char *const allowed[] = {"email", "password", "name", NULL};
    json_t *o = body_object(c, allowed);
    core_str email, pw, name;
    hash_job *j;

    if (!o)
        return -1;
    if (body_str(c, o, "email", 1, 3, CORE_MAX_EMAIL, &email) ||
        body_str(c, o, "password", 1, 8, 128, &pw) ||
        body_str(c, o, "name", 1, 1, CORE_MAX_NAME, &name))
        return -1;
    if (!memchr(email.p, '@', email.len) || email.p[0] == '@' || email.p[email.len - 1] == '@' ||
        memchr(email.p, ' ', email.len))
        return reply_problem(c, 422, "validation", "email must look like name@domain", "email");
    if (pw.len >= sizeof j->pw)
        return reply_problem(c, 422, "validation", "password is too long", "password");
    if (!(j = calloc(1, sizeof *j)))
        return reply_problem(c, 500, "internal", "out of memory", NULL);
    j->cm.type = CMD_USER_CREATE;
    j->cm.u.user_create.email = email;
    j->cm.u.user_create.name = name;
    j->cm.u.user_create.role = ROLE_MEMBER;
    j->cm.u.user_create.plan = PLAN_STANDARD;
    j->cm.u.user_create.iterations = j->iterations = c->a->srv->cfg->password_iterations;
    memcpy(j->pw, pw.p, pw.len);
    j->pwlen = pw.len;
    j->done = register_hashed;
    if (core_uuid_v7(&j->cm.u.user_create.id, core_now_ms()) || auth_random(j->salt, 16)) {
        free(j);
        return reply_problem(c, 500, "internal", "no randomness", NULL);
    }
    memcpy(j->cm.u.user_create.salt, j->salt, 16);
    return hash_later(c, j);
}

static void login_unknown(req_ctx *c, hash_job *j)
{
    reply_problem(c, 401, "unauthorized", "wrong email or password", NULL);
}

static void login_checked(req_ctx *c, hash_job *j)
{
    http_server *s = c->a->srv;
    principal p = {0};
    MDB_val v;
    char sub[37], *tok = NULL;

    if (!j->ok) {
        reply_problem(c, 401, "unauthorized", "wrong email or password", NULL);
        return;
    }
    rl_reset(s->login_limiter, j->rlkey, j->rlkeylen);
    if (store_get(read_txn(c), DB_USERS, j->user.b, 16, &v) == 0)
        principal_from_user(&p, &v);
    if (p.status == USTATUS_BLOCKED) {
        reply_problem(c, 403, "member-blocked", "this account is blocked", NULL);
        return;
    }
    core_uuid_fmt(&j->user, sub);
    if (auth_sign_hs256(s->signing_key, 32, sub, core_role_name(p.role), core_plan_name(p.plan),
                        s->cfg->jwt.issuer[0] ? s->cfg->jwt.issuer : NULL,
                        s->cfg->jwt.audience[0] ? s->cfg->jwt.audience : NULL, core_now_ms() / 1000,
                        s->cfg->jwt.ttl_s, &tok) < 0) {
        reply_problem(c, 500, "internal", "could not sign a token", NULL);
        return;
    }
    struct evbuffer *b = evhttp_request_get_output_buffer(c->req);
    evbuffer_add_printf(b, "{\"access_token\":\"%s\",\"token_type\":\"Bearer\",\"expires_in\":%d}",
                        tok, s->cfg->jwt.ttl_s);
    OPENSSL_cleanse(tok, strlen(tok));
    free(tok);
    reply_buf(c, 200, "application/json", b);
}

int h_login(req_ctx *c, const core_uuid *unused)
{
    static const char *const allowed[] = {"email", "password", NULL};
    http_server *s = c->a->srv;
    json_t *o = body_object(c, allowed);
    core_str email, pw;
    char ra[16];
    MDB_val v;
    hash_job *j;
    int retry, known = 0;

    if (!o)
        return -1;
    if (body_str(c, o, "email", 1, 1, CORE_MAX_EMAIL, &email) ||
        body_str(c, o, "password", 1, 1, 128, &pw))
        return -1;
    if (strcmp(s->cfg->jwt.alg, "HS256") != 0)
        return reply_problem(c, 403, "forbidden",
                             "tokens come from the configured identity provider", NULL);
    if (!c->caught_up && !repl_leads(s->rp)) {
        /* a follower may not have applied a registration another node
         * acknowledged: before saying "wrong email", ask the leader once */
        char lower[CORE_MAX_EMAIL];
        for (uint32_t i = 0; i < email.len; i++)
            lower[i] =
                (email.p[i] >= 'A' && email.p[i] <= 'Z') ? (char)(email.p[i] + 32) : email.p[i];
        if (store_get(read_txn(c), DB_EMAILS, lower, email.len, &v) != 0)
            return read_strong(c, h_login, unused);
    }
    if (!(j = calloc(1, sizeof *j)))
        return reply_problem(c, 500, "internal", "out of memory", NULL);
    memcpy(j->rlkey, "login:", 6);
    for (uint32_t i = 0; i < email.len; i++)
        j->rlkey[6 + i] =
            (email.p[i] >= 'A' && email.p[i] <= 'Z') ? (char)(email.p[i] + 32) : email.p[i];
    j->rlkeylen = 6 + email.len;
    if (!rl_take(s->login_limiter, j->rlkey, j->rlkeylen, core_mono_ns(), &retry)) {
        free(j);
        snprintf(ra, sizeof ra, "%d", retry);
        evhttp_add_header(evhttp_request_get_output_headers(c->req), "Retry-After", ra);
        return reply_problem(c, 429, "rate-limited",
                             "too many failed logins for this account; retry later", NULL);
    }
    if (store_get(read_txn(c), DB_EMAILS, j->rlkey + 6, email.len, &v) == 0 && v.mv_size == 16) {
        memcpy(j->user.b, v.mv_data, 16);
        if (store_get(read_txn(c), DB_CREDS, j->user.b, 16, &v) == 0 && v.mv_size == 52) {
            const uint8_t *cr = v.mv_data;
            memcpy(j->salt, cr, 16);
            memcpy(j->hash, cr + 16, 32);
            j->iterations = store_rd32(cr + 48);
            known = 1;
        }
    }
    if (!known) {
        /* hash anyway, so an unknown email costs the same time as a wrong password */
        j->iterations = s->cfg->password_iterations;
        if (auth_random(j->salt, 16) || auth_random(j->hash, 32)) {
            free(j);
            return reply_problem(c, 500, "internal", "no randomness", NULL);
        }
    }
    j->verify = 1;
    memcpy(j->pw, pw.p, pw.len);
    j->pwlen = pw.len;
    j->done = known ? login_checked : login_unknown;
    return hash_later(c, j);
}

/* the stored user view of id, or 404 */
static int reply_user(req_ctx *c, const core_uuid *id)
{
    MDB_val v;
    if (store_get(read_txn(c), DB_USERS, id->b, 16, &v))
        return reply_problem(c, 404, "not-found", "no such user", NULL);
    reply_json(c, 200, v.mv_data, v.mv_size);
    return 0;
}

int h_me(req_ctx *c, const core_uuid *unused)
{
    return reply_user(c, &c->who.id);
}

/* members see only themselves; others' ids answer 404 so ids can't be probed */
static int may_see_user(req_ctx *c, const core_uuid *id)
{
    if (c->who.role == ROLE_MEMBER && memcmp(c->who.id.b, id->b, 16) != 0) {
        reply_problem(c, 404, "not-found", "no such user", NULL);
        return 0;
    }
    return 1;
}

int h_user_get(req_ctx *c, const core_uuid *id)
{
    if (!may_see_user(c, id))
        return -1;
    return reply_user(c, id);
}

/* lists a user's loans, newest first; status: 'a', 'r' or 0 for all */
static int list_loans(req_ctx *c, const core_uuid *uid)
{
    const char *st = query_get(c, "status"), *lim = query_get(c, "limit");
    int want = 0;
    long limit = 100;
    struct evbuffer *b = evhttp_request_get_output_buffer(c->req);
    store_txn *t = read_txn(c);
    MDB_cursor *cur;
    uint8_t k[32];
    MDB_val key, val;
    int rc, n = 0;

    if (st && strcmp(st, "active") == 0)
        want = 'a';
    else if (st && strcmp(st, "returned") == 0)
        want = 'r';
    else if (st && strcmp(st, "all") != 0)
        return reply_problem(c, 422, "validation", "status must be active, returned or all",
                             "status");
    if (lim) {
        char *end;
        limit = strtol(lim, &end, 10);
        if (*end || limit < 1 || limit > 1000)
            return reply_problem(c, 422, "validation", "limit must be from 1 to 1000", "limit");
    }
    memcpy(k, uid->b, 16);
    memset(k + 16, 0xff, 16);
    if (mdb_cursor_open(t->txn, store_dbi(t->st, DB_ULOANS), &cur))
        return reply_problem(c, 503, "unavailable", "the store cannot be read", NULL);
    key.mv_data = k;
    key.mv_size = 32;
    rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
    rc = rc == 0 ? mdb_cursor_get(cur, &key, &val, MDB_PREV)
                 : mdb_cursor_get(cur, &key, &val, MDB_LAST);
    evbuffer_add(b, "{\"items\":[", 10);
    while (rc == 0 && key.mv_size == 32 && memcmp(key.mv_data, uid->b, 16) == 0 && n < limit) {
        MDB_val loan;
        if ((!want || (val.mv_size == 1 && *(const char *)val.mv_data == want)) &&
            store_get(t, DB_LOANS, (const uint8_t *)key.mv_data + 16, 16, &loan) == 0) {
            if (n++)
                evbuffer_add(b, ",", 1);
            evbuffer_add(b, loan.mv_data, loan.mv_size);
        }
        rc = mdb_cursor_get(cur, &key, &val, MDB_PREV);
    }
    mdb_cursor_close(cur);
    evbuffer_add(b, "]}", 2);
    reply_buf(c, 200, "application/json", b);
    return 0;
}

int h_me_loans(req_ctx *c, const core_uuid *unused)
{
    return list_loans(c, &c->who.id);
}

int h_user_loans(req_ctx *c, const core_uuid *id)
{
    MDB_val v;
    if (!may_see_user(c, id))
        return -1;
    if (store_get(read_txn(c), DB_USERS, id->b, 16, &v))
        return reply_problem(c, 404, "not-found", "no such user", NULL);
    return list_loans(c, id);
}

int h_me_holds(req_ctx *c, const core_uuid *unused)
{
    struct evbuffer *b = evhttp_request_get_output_buffer(c->req);
    store_txn *t = read_txn(c);
    MDB_cursor *cur;
    MDB_val key = {16, c->who.id.b}, val;
    int rc, n = 0;

    if (mdb_cursor_open(t->txn, store_dbi(t->st, DB_UHOLDS), &cur))
        return reply_problem(c, 503, "unavailable", "the store cannot be read", NULL);
    evbuffer_add(b, "{\"items\":[", 10);
    rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
    while (rc == 0 && key.mv_size == 32 && memcmp(key.mv_data, c->who.id.b, 16) == 0 && n < 1000) {
        MDB_val h;
        size_t len;
        char *view;
        if (store_get(t, DB_HOLDS, (const uint8_t *)key.mv_data + 16, 16, &h) == 0 &&
            (view = apply_hold_render(t, h.mv_data, h.mv_size, &len)) != NULL) {
            if (n++)
                evbuffer_add(b, ",", 1);
            evbuffer_add(b, view, len);
            free(view);
        }
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    evbuffer_add(b, "]}", 2);
    reply_buf(c, 200, "application/json", b);
    return 0;
}

int h_user_patch(req_ctx *c, const core_uuid *id)
{
    static const char *const allowed[] = {"status", "plan", "role", "name", NULL};
    cmd cm = {.type = CMD_USER_UPDATE};
    json_t *o;
    int v, rc;

    if (require_role(c, ROLES_ANY))
        return -1;
    if (c->who.role == ROLE_MEMBER) {
        if (memcmp(c->who.id.b, id->b, 16) != 0)
            return reply_problem(c, 404, "not-found", "no such user", NULL);
        return reply_problem(c, 403, "forbidden", "members cannot change accounts", NULL);
    }
    if (!(o = body_object(c, allowed)))
        return -1;
    cm.u.user_update.id = *id;
    if ((rc = body_enum(c, o, "status", 0, core_ustatus_parse, &v)) < 0)
        return -1;
    if (rc == 0) {
        cm.u.user_update.mask |= UPD_STATUS;
        cm.u.user_update.status = (uint8_t)v;
    }
    if ((rc = body_enum(c, o, "plan", 0, core_plan_parse, &v)) < 0)
        return -1;
    if (rc == 0) {
        cm.u.user_update.mask |= UPD_PLAN;
        cm.u.user_update.plan = (uint8_t)v;
    }
    if ((rc = body_enum(c, o, "role", 0, core_role_parse, &v)) < 0)
        return -1;
    if (rc == 0) {
        cm.u.user_update.mask |= UPD_ROLE;
        cm.u.user_update.role = (uint8_t)v;
    }
    if ((rc = body_str(c, o, "name", 0, 1, CORE_MAX_NAME, &cm.u.user_update.name)) < 0)
        return -1;
    if (rc == 0)
        cm.u.user_update.mask |= UPD_NAME;
    if (!cm.u.user_update.mask)
        return reply_problem(c, 422, "validation", "nothing to change", NULL);
    if (c->who.role != ROLE_ADMIN && (cm.u.user_update.mask & ~UPD_STATUS))
        return reply_problem(c, 403, "forbidden", "only admins change role, plan or name", NULL);
    return propose(c, &cm);
}

int h_apikey_create(req_ctx *c, const core_uuid *unused)
{
    static const char *const allowed[] = {"name", "role", NULL};
    cmd cm = {.type = CMD_APIKEY_CREATE};
    json_t *o;
    int role = ROLE_SERVICE, rc;

    if (require_role(c, 1u << ROLE_ADMIN))
        return -1;
    if (!(o = body_object(c, allowed)))
        return -1;
    if (body_str(c, o, "name", 1, 1, CORE_MAX_KEYNAME, &cm.u.apikey.name) ||
        (rc = body_enum(c, o, "role", 0, core_role_parse, &role)) < 0)
        return -1;
    if (role != ROLE_SERVICE && role != ROLE_LIBRARIAN)
        return reply_problem(c, 422, "validation", "role must be service or librarian", "role");
    cm.u.apikey.role = (uint8_t)role;
    if (core_uuid_v7(&cm.u.apikey.id, core_now_ms()) ||
        auth_apikey_new(c->secret, cm.u.apikey.hash) < 0)
        return reply_problem(c, 500, "internal", "could not create a key", NULL);
    return propose(c, &cm);
}
