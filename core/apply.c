/*
 * apply.c — the state machine.
 *
 * apply() is a pure function of (state, log index, command): it reads the
 * time from the command, ids from the command and nothing from the
 * environment, so replicas applying the same log agree byte for byte.
 * Every handler checks all its preconditions before it writes anything;
 * the writer still runs each command in a nested LMDB transaction so that
 * a storage failure half-way through leaves no trace.
 *
 * Copies are numbered 1..copies. DB_COPIES holds one entry per copy that is
 * out (a loan, 'L') or kept for a member whose hold is ready ('H'); so a
 * copy has at most one open loan by construction, and "available" is the
 * number of copies without an entry.
 */
#include "core/core.h"
#include "persist/store.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define DAY_S           86400
#define IDEM_TTL_MS     (24LL * 3600 * 1000)
#define EXPIRE_BATCH    64
#define IDEM_TRIM_BATCH 16

typedef struct ctx {
    store_txn *t;
    uint64_t index;
    const cmd *c;
    apply_result *res;
    int64_t now_s;
    char now[21];    /* now_s as RFC 3339 */
    int64_t *counts; /* count_add deferred: per type */
    core_buf view;   /* scratch for resource views */
} ctx;

void apply_result_clear(apply_result *r)
{
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* ---- results ---- */

static int problem(ctx *x, int status, const char *kind, const char *detail)
{
    x->res->status = status;
    x->res->problem = 1;
    x->res->body = core_problem(status, kind, detail, NULL, &x->res->body_len);
    return x->res->body ? 0 : CORE_ENOMEM;
}

/* takes ownership of a dumped JSON string */
static int ok_body(ctx *x, int status, char *body)
{
    if (!body)
        return CORE_ENOMEM;
    x->res->status = status;
    x->res->problem = 0;
    x->res->body = body;
    x->res->body_len = strlen(body);
    return 0;
}

/* ---- small helpers ---- */

static void fmt_time(int64_t s, char out[21])
{
    core_fmt_time(s, out);
}

static json_t *jstr(core_str s)
{
    return json_stringn(s.p, s.len);
}

static json_t *juuid(const core_uuid *u)
{
    char b[37];
    core_uuid_fmt(u, b);
    return json_string(b);
}

static json_t *jtime(int64_t s)
{
    char b[21];
    fmt_time(s, b);
    return json_string(b);
}

static json_t *load_json(ctx *x, int db, const void *k, size_t kl)
{
    MDB_val v;
    if (store_get(x->t, db, k, kl, &v))
        return NULL;
    return json_loadb(v.mv_data, v.mv_size, 0, NULL);
}

/*
 * Stored views are our own compact JSON, so a quoted key followed by a
 * colon can only be that key (quotes inside strings are escaped). The hot
 * paths read and patch numbers and flags in place instead of parsing.
 */
static const char *raw_after(const MDB_val *v, const char *pat)
{
    size_t n = strlen(pat);
    const char *p = memmem(v->mv_data, v->mv_size, pat, n);
    return p ? p + n : NULL;
}

static int raw_has(const MDB_val *v, const char *pat)
{
    return raw_after(v, pat) != NULL;
}

static uint64_t raw_uint(const MDB_val *v, const char *key)
{
    const char *p = raw_after(v, key), *end = (const char *)v->mv_data + v->mv_size;
    uint64_t n = 0;
    for (; p && p < end && *p >= '0' && *p <= '9'; p++)
        n = n * 10 + (uint64_t)(*p - '0');
    return n;
}

/* v with the unsigned number after key replaced by n, stored under k */
static int raw_put_uint(ctx *x, int db, const void *k, size_t kl, const MDB_val *v, const char *key,
                        uint64_t n)
{
    const char *start = raw_after(v, key), *end = (const char *)v->mv_data + v->mv_size, *p;
    char num[24], *buf;
    int rc;
    if (!start)
        return CORE_EIO;
    for (p = start; p < end && *p >= '0' && *p <= '9'; p++)
        ;
    size_t pre = (size_t)(start - (const char *)v->mv_data),
           nl = (size_t)snprintf(num, sizeof num, "%llu", (unsigned long long)n);
    size_t post = (size_t)(end - p), len = pre + nl + post;
    if (!(buf = malloc(len)))
        return CORE_ENOMEM;
    memcpy(buf, v->mv_data, pre);
    memcpy(buf + pre, num, nl);
    memcpy(buf + pre + nl, p, post);
    rc = store_put(x->t, db, k, kl, buf, len);
    free(buf);
    return rc;
}

/* dumps j, stores it under k and returns the dump (caller frees) */
static char *save_json(ctx *x, int db, const void *k, size_t kl, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    if (!s)
        return NULL;
    if (store_put(x->t, db, k, kl, s, strlen(s))) {
        free(s);
        return NULL;
    }
    return s;
}

static int save_json_only(ctx *x, int db, const void *k, size_t kl, json_t *j)
{
    char *s = save_json(x, db, k, kl, j);
    if (!s)
        return CORE_EIO;
    free(s);
    return 0;
}

static const char *jget_str(json_t *j, const char *k)
{
    const char *s = json_string_value(json_object_get(j, k));
    return s ? s : "";
}

static int jget_uuid(json_t *j, const char *k, core_uuid *u)
{
    const char *s = json_string_value(json_object_get(j, k));
    return s ? core_uuid_parse(s, strlen(s), u) : CORE_EINVAL;
}

static void load_policy(ctx *x, core_policy *p)
{
    store_policy(x->t, p);
}

/* Iterate keys that start with prefix; fn returns 1 to stop, <0 on error. */
typedef int (*scan_fn)(void *arg, const MDB_val *k, const MDB_val *v);

static int scan_prefix(ctx *x, int db, const void *prefix, size_t plen, scan_fn fn, void *arg)
{
    MDB_cursor *cur;
    MDB_val k = {plen, (void *)prefix}, v;
    int rc, r = 0;

    if (mdb_cursor_open(x->t->txn, store_dbi(x->t->st, db), &cur))
        return CORE_EIO;
    rc = mdb_cursor_get(cur, &k, &v, plen ? MDB_SET_RANGE : MDB_FIRST);
    while (rc == 0 && k.mv_size >= plen && memcmp(k.mv_data, prefix, plen) == 0) {
        r = fn(arg, &k, &v);
        if (r)
            break;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (r < 0)
        return r;
    if (rc && rc != MDB_NOTFOUND)
        return CORE_EIO;
    return 0;
}

/* ---- copies ---- */

typedef struct copy_scan {
    uint32_t copies;    /* in: number of copies */
    uint32_t free_copy; /* out: lowest free copy number, 0 if none */
    uint32_t used;      /* out: entries */
    uint32_t max_used;  /* out: highest copy number with an entry */
    int any_loan;       /* out: some copy is on loan */
    uint8_t want[17];   /* in: 'H' + hold id to find */
    uint32_t found;     /* out: copy number holding want */
    uint32_t next;      /* scratch */
} copy_scan;

static int copy_scan_fn(void *arg, const MDB_val *k, const MDB_val *v)
{
    copy_scan *s = arg;
    uint32_t no = store_rd32((const uint8_t *)k->mv_data + 16);
    if (!s->free_copy && no > s->next && s->next <= s->copies)
        s->free_copy = s->next;
    s->next = no + 1;
    s->used++;
    s->max_used = no;
    if (v->mv_size == 17 && ((const uint8_t *)v->mv_data)[0] == 'L')
        s->any_loan = 1;
    if (v->mv_size == 17 && memcmp(v->mv_data, s->want, 17) == 0)
        s->found = no;
    return 0;
}

static int scan_copies(ctx *x, const core_uuid *rid, uint32_t copies, copy_scan *s)
{
    int rc;
    s->copies = copies;
    s->next = 1;
    rc = scan_prefix(x, DB_COPIES, rid->b, 16, copy_scan_fn, s);
    if (rc)
        return rc;
    if (!s->free_copy && s->next <= copies)
        s->free_copy = s->next;
    return 0;
}

static void copy_key(uint8_t k[20], const core_uuid *rid, uint32_t no)
{
    memcpy(k, rid->b, 16);
    store_be32(k + 16, no);
}

/* recompute "available" of a resource view */
static int res_refresh(ctx *x, const core_uuid *rid)
{
    MDB_val v;
    copy_scan s = {0};
    int rc;
    if (store_get(x->t, DB_RES, rid->b, 16, &v))
        return 0; /* deleted */
    uint32_t copies = (uint32_t)raw_uint(&v, "\"copies\":");
    if ((rc = scan_copies(x, rid, copies, &s)))
        return rc;
    uint32_t avail = s.used >= copies ? 0 : copies - s.used;
    if (raw_uint(&v, "\"available\":") == avail)
        return 0;
    return raw_put_uint(x, DB_RES, rid->b, 16, &v, "\"available\":", avail);
}

/* ---- holds ---- */

typedef struct hold_find {
    uint8_t hid[16];
    int waiting_before; /* out */
    int found;
    int any_waiting;
    uint8_t first_waiting_key[40]; /* rid + seq + hid */
    int have_first;
} hold_find;

static int hold_find_fn(void *arg, const MDB_val *k, const MDB_val *v)
{
    hold_find *h = arg;
    const uint8_t *kb = k->mv_data;
    int waiting = v->mv_size == 1 && *(const uint8_t *)v->mv_data == 'w';
    if (k->mv_size != 40)
        return 0;
    if (waiting) {
        h->any_waiting = 1;
        if (!h->have_first) {
            memcpy(h->first_waiting_key, kb, 40);
            h->have_first = 1;
        }
    }
    if (memcmp(kb + 24, h->hid, 16) == 0) {
        h->found = 1;
        return h->have_first ? 1 : 0;
    }
    if (waiting && !h->found)
        h->waiting_before++;
    return 0;
}

/* position of a waiting hold: 1 + waiting holds before it */
static int hold_position(store_txn *t, const core_uuid *rid, const core_uuid *hid)
{
    ctx x = {.t = t};
    hold_find h = {0};
    memcpy(h.hid, hid->b, 16);
    if (scan_prefix(&x, DB_RHOLDS, rid->b, 16, hold_find_fn, &h) || !h.found)
        return 0;
    return h.waiting_before + 1;
}

char *apply_hold_render(struct store_txn *t, const void *data, size_t len, size_t *outlen)
{
    json_t *h = json_loadb(data, len, 0, NULL);
    core_uuid rid, hid;
    char *s = NULL;
    if (!h)
        return NULL;
    if (jget_uuid(h, "resource_id", &rid) == 0 && jget_uuid(h, "id", &hid) == 0) {
        int pos = strcmp(jget_str(h, "status"), "waiting") == 0 ? hold_position(t, &rid, &hid) : 0;
        json_object_set_new(h, "position", json_integer(pos));
        s = json_dumps(h, JSON_COMPACT);
        if (s)
            *outlen = strlen(s);
    }
    json_decref(h);
    return s;
}

/* uholds value: rid[16] seq[8] ready_until[8] */
static int uhold_get(ctx *x, const core_uuid *uid, const core_uuid *hid, uint8_t val[32])
{
    uint8_t k[32];
    MDB_val v;
    memcpy(k, uid->b, 16);
    memcpy(k + 16, hid->b, 16);
    if (store_get(x->t, DB_UHOLDS, k, 32, &v) || v.mv_size != 32)
        return CORE_ENOENT;
    memcpy(val, v.mv_data, 32);
    return 0;
}

static int uhold_put(ctx *x, const core_uuid *uid, const core_uuid *hid, const uint8_t val[32])
{
    uint8_t k[32];
    memcpy(k, uid->b, 16);
    memcpy(k + 16, hid->b, 16);
    return store_put(x->t, DB_UHOLDS, k, 32, val, 32);
}

static void rhold_key(uint8_t k[40], const uint8_t *rid, const uint8_t *seq, const uint8_t *hid)
{
    memcpy(k, rid, 16);
    memcpy(k + 16, seq, 8);
    memcpy(k + 24, hid, 16);
}

static int hready_del(ctx *x, uint64_t until, const core_uuid *hid)
{
    uint8_t k[24];
    store_be64(k, until);
    memcpy(k + 8, hid->b, 16);
    int rc = store_del(x->t, DB_HREADY, k, 24);
    return rc == CORE_ENOENT ? 0 : rc;
}

static int set_hold_status(ctx *x, const core_uuid *hid, const char *status, int64_t ready_until)
{
    json_t *h = load_json(x, DB_HOLDS, hid->b, 16);
    int rc;
    if (!h)
        return CORE_EIO;
    json_object_set_new(h, "status", json_string(status));
    json_object_set_new(h, "ready_until", ready_until ? jtime(ready_until) : json_null());
    rc = save_json_only(x, DB_HOLDS, hid->b, 16, h);
    json_decref(h);
    return rc;
}

/*
 * A copy came back (return, cancelled or expired ready hold, more copies):
 * keep it for the first waiting hold, or free it.
 */
static int copy_released(ctx *x, const core_uuid *rid, uint32_t no)
{
    hold_find h = {0};
    uint8_t ck[20], cv[17], uval[32], hk[24];
    core_uuid hid, uid;
    json_t *hold;
    core_policy pol;
    int rc;

    copy_key(ck, rid, no);
    memset(h.hid, 0xff, 16);
    rc = scan_prefix(x, DB_RHOLDS, rid->b, 16, hold_find_fn, &h);
    if (rc)
        return rc;
    if (!h.have_first) {
        rc = store_del(x->t, DB_COPIES, ck, 20);
        return rc == CORE_ENOENT ? 0 : rc;
    }
    load_policy(x, &pol);
    int64_t until = x->now_s + (int64_t)pol.pickup_days * DAY_S;
    memcpy(hid.b, h.first_waiting_key + 24, 16);
    hold = load_json(x, DB_HOLDS, hid.b, 16);
    if (!hold || jget_uuid(hold, "user_id", &uid)) {
        json_decref(hold);
        return CORE_EIO;
    }
    json_decref(hold);
    cv[0] = 'H';
    memcpy(cv + 1, hid.b, 16);
    if ((rc = store_put(x->t, DB_COPIES, ck, 20, cv, 17)))
        return rc;
    if ((rc = store_put(x->t, DB_RHOLDS, h.first_waiting_key, 40, "r", 1)))
        return rc;
    store_be64(hk, (uint64_t)until);
    memcpy(hk + 8, hid.b, 16);
    if ((rc = store_put(x->t, DB_HREADY, hk, 24, "", 0)))
        return rc;
    if ((rc = uhold_get(x, &uid, &hid, uval)))
        return rc;
    store_be64(uval + 24, (uint64_t)until);
    if ((rc = uhold_put(x, &uid, &hid, uval)))
        return rc;
    return set_hold_status(x, &hid, "ready", until);
}

/* give free copies to waiting holds (after copies were added) */
static int fill_holds(ctx *x, const core_uuid *rid, uint32_t copies)
{
    for (;;) {
        copy_scan s = {0};
        hold_find h = {0};
        int rc = scan_copies(x, rid, copies, &s);
        if (rc)
            return rc;
        if (!s.free_copy)
            return 0;
        memset(h.hid, 0xff, 16);
        if ((rc = scan_prefix(x, DB_RHOLDS, rid->b, 16, hold_find_fn, &h)))
            return rc;
        if (!h.have_first)
            return 0;
        if ((rc = copy_released(x, rid, s.free_copy)))
            return rc;
    }
}

/* end a waiting or ready hold: status is "cancelled", "expired" or "fulfilled" */
static int hold_end(ctx *x, const core_uuid *hid, const core_uuid *uid, const char *status,
                    int release)
{
    uint8_t uval[32], rk[40], want[17];
    core_uuid rid;
    int rc;

    if ((rc = uhold_get(x, uid, hid, uval)))
        return rc;
    memcpy(rid.b, uval, 16);
    rhold_key(rk, uval, uval + 16, hid->b);
    rc = store_del(x->t, DB_RHOLDS, rk, 40);
    if (rc && rc != CORE_ENOENT)
        return rc;
    uint64_t until = store_rd64(uval + 24);
    if (until) {
        if ((rc = hready_del(x, until, hid)))
            return rc;
        if (release) {
            json_t *r = load_json(x, DB_RES, rid.b, 16);
            copy_scan s = {0};
            want[0] = 'H';
            memcpy(want + 1, hid->b, 16);
            memcpy(s.want, want, 17);
            uint32_t copies = r ? (uint32_t)json_integer_value(json_object_get(r, "copies")) : 0;
            json_decref(r);
            if ((rc = scan_copies(x, &rid, copies, &s)))
                return rc;
            if (s.found) {
                /* released copies above the current count just disappear */
                if (s.found <= copies)
                    rc = copy_released(x, &rid, s.found);
                else {
                    uint8_t ck[20];
                    copy_key(ck, &rid, s.found);
                    rc = store_del(x->t, DB_COPIES, ck, 20);
                }
                if (rc)
                    return rc;
            }
        }
    }
    return set_hold_status(x, hid, status, 0);
}

typedef struct expired {
    core_uuid ids[EXPIRE_BATCH];
    int n;
    uint64_t now_s;
} expired;

static int expired_fn(void *arg, const MDB_val *k, const MDB_val *v)
{
    expired *e = arg;
    const uint8_t *kb = k->mv_data;
    if (k->mv_size != 24 || store_rd64(kb) >= e->now_s || e->n == EXPIRE_BATCH)
        return 1;
    memcpy(e->ids[e->n++].b, kb + 8, 16);
    return 0;
}

/* ready holds past their pickup window expire and pass the copy on */
static int expire_holds(ctx *x)
{
    expired e = {.n = 0, .now_s = (uint64_t)x->now_s};
    int rc = scan_prefix(x, DB_HREADY, "", 0, expired_fn, &e);
    if (rc)
        return rc;
    for (int i = 0; i < e.n; i++) {
        json_t *h = load_json(x, DB_HOLDS, e.ids[i].b, 16);
        core_uuid uid, rid;
        if (!h || jget_uuid(h, "user_id", &uid) || jget_uuid(h, "resource_id", &rid)) {
            json_decref(h);
            return CORE_EIO;
        }
        json_decref(h);
        if ((rc = hold_end(x, &e.ids[i], &uid, "expired", 1)))
            return rc;
        if ((rc = res_refresh(x, &rid)))
            return rc;
    }
    return 0;
}

/* ---- idempotency ---- */

typedef struct idem_old {
    uint8_t keys[IDEM_TRIM_BATCH][8 + 16 + CORE_MAX_IDEM];
    size_t lens[IDEM_TRIM_BATCH];
    int n;
    uint64_t before;
} idem_old;

static int idem_old_fn(void *arg, const MDB_val *k, const MDB_val *v)
{
    idem_old *o = arg;
    if (k->mv_size < 8 || k->mv_size > sizeof o->keys[0] || store_rd64(k->mv_data) >= o->before ||
        o->n == IDEM_TRIM_BATCH)
        return 1;
    memcpy(o->keys[o->n], k->mv_data, k->mv_size);
    o->lens[o->n++] = k->mv_size;
    return 0;
}

static int idem_trim(ctx *x)
{
    idem_old o = {.n = 0};
    int rc;
    if (x->c->ts_ms <= IDEM_TTL_MS)
        return 0;
    o.before = (uint64_t)(x->c->ts_ms - IDEM_TTL_MS);
    if ((rc = scan_prefix(x, DB_IDEM_TIME, "", 0, idem_old_fn, &o)))
        return rc;
    for (int i = 0; i < o.n; i++) {
        rc = store_del(x->t, DB_IDEM, o.keys[i] + 8, o.lens[i] - 8);
        if (rc && rc != CORE_ENOENT)
            return rc;
        if ((rc = store_del(x->t, DB_IDEM_TIME, o.keys[i], o.lens[i])))
            return rc;
    }
    return 0;
}

static size_t idem_key(const cmd *c, uint8_t *k)
{
    memcpy(k, c->actor.b, 16);
    memcpy(k + 16, c->idem.p, c->idem.len);
    return 16 + c->idem.len;
}

int apply_idem_find(struct store_txn *t, const cmd *c, apply_result *res)
{
    uint8_t k[16 + CORE_MAX_IDEM];
    MDB_val v;
    size_t kl = idem_key(c, k);
    if (store_get(t, DB_IDEM, k, kl, &v) || v.mv_size < 43)
        return 0;
    const uint8_t *b = v.mv_data;
    if (memcmp(b, c->req_hash, 32) != 0) {
        res->status = 422;
        res->problem = 1;
        res->body = core_problem(422, "idempotency-key-reused",
                                 "this Idempotency-Key was used for a different request",
                                 "Idempotency-Key", &res->body_len);
        return 1;
    }
    res->status = b[40] << 8 | b[41];
    res->problem = b[42];
    res->body_len = v.mv_size - 43;
    res->body = res->body_len ? malloc(res->body_len + 1) : NULL;
    if (res->body) {
        memcpy(res->body, b + 43, res->body_len);
        res->body[res->body_len] = '\0';
    }
    return 1;
}

static int idem_save(ctx *x)
{
    uint8_t k[16 + CORE_MAX_IDEM], tk[8 + 16 + CORE_MAX_IDEM];
    size_t kl = idem_key(x->c, k);
    size_t vl = 43 + x->res->body_len;
    uint8_t *v = malloc(vl);
    int rc;
    if (!v)
        return CORE_ENOMEM;
    memcpy(v, x->c->req_hash, 32);
    store_be64(v + 32, (uint64_t)x->c->ts_ms);
    v[40] = (uint8_t)(x->res->status >> 8);
    v[41] = (uint8_t)x->res->status;
    v[42] = (uint8_t)x->res->problem;
    if (x->res->body_len)
        memcpy(v + 43, x->res->body, x->res->body_len);
    rc = store_put(x->t, DB_IDEM, k, kl, v, vl);
    free(v);
    if (rc)
        return rc;
    store_be64(tk, (uint64_t)x->c->ts_ms);
    memcpy(tk + 8, k, kl);
    return store_put(x->t, DB_IDEM_TIME, tk, 8 + kl, "", 0);
}

/* ---- users ---- */

static int do_user_create(ctx *x)
{
    const cmd *c = x->c;
    char email[4 * CORE_MAX_EMAIL + 1]; /* the decoder allows 4 bytes per character */
    uint8_t cred[52];
    json_t *u;
    char *s;
    MDB_val v;
    int rc;

    for (uint32_t i = 0; i < c->u.user_create.email.len; i++) {
        char ch = c->u.user_create.email.p[i];
        email[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
    }
    email[c->u.user_create.email.len] = '\0';
    if (store_get(x->t, DB_EMAILS, email, strlen(email), &v) == 0)
        return problem(x, 409, "conflict", "a user with this email exists");
    if (store_get(x->t, DB_USERS, c->u.user_create.id.b, 16, &v) == 0)
        return problem(x, 409, "conflict", "a user with this id exists");
    u = json_pack(
        "{s:o,s:s,s:o,s:s,s:s,s:s,s:o}", "id", juuid(&c->u.user_create.id), "email", email, "name",
        jstr(c->u.user_create.name), "role", core_role_name(c->u.user_create.role), "plan",
        core_plan_name(c->u.user_create.plan), "status", "active", "created_at", jtime(x->now_s));
    if (!u)
        return problem(x, 422, "validation", "name is not valid UTF-8");
    s = save_json(x, DB_USERS, c->u.user_create.id.b, 16, u);
    json_decref(u);
    if (!s)
        return CORE_EIO;
    memcpy(cred, c->u.user_create.salt, 16);
    memcpy(cred + 16, c->u.user_create.hash, 32);
    store_be32(cred + 48, c->u.user_create.iterations);
    if ((rc = store_put(x->t, DB_CREDS, c->u.user_create.id.b, 16, cred, sizeof cred)) ||
        (rc = store_put(x->t, DB_EMAILS, email, strlen(email), c->u.user_create.id.b, 16))) {
        free(s);
        return rc;
    }
    return ok_body(x, 201, s);
}

static int do_user_update(ctx *x)
{
    const cmd *c = x->c;
    int mask = c->u.user_update.mask;
    json_t *u;
    char *s;

    if (x->c->actor_role == ROLE_MEMBER)
        return problem(x, 403, "forbidden", "members cannot change accounts");
    if (x->c->actor_role != ROLE_ADMIN && (mask & ~UPD_STATUS))
        return problem(x, 403, "forbidden", "only admins change role, plan or name");
    u = load_json(x, DB_USERS, c->u.user_update.id.b, 16);
    if (!u)
        return problem(x, 404, "not-found", "no such user");
    if (mask & UPD_STATUS)
        json_object_set_new(u, "status", json_string(core_ustatus_name(c->u.user_update.status)));
    if (mask & UPD_PLAN)
        json_object_set_new(u, "plan", json_string(core_plan_name(c->u.user_update.plan)));
    if (mask & UPD_ROLE)
        json_object_set_new(u, "role", json_string(core_role_name(c->u.user_update.role)));
    if (mask & UPD_NAME) {
        json_t *n = jstr(c->u.user_update.name);
        if (!n) {
            json_decref(u);
            return problem(x, 422, "validation", "name is not valid UTF-8");
        }
        json_object_set_new(u, "name", n);
    }
    s = save_json(x, DB_USERS, c->u.user_update.id.b, 16, u);
    json_decref(u);
    return s ? ok_body(x, 200, s) : CORE_EIO;
}

static int do_apikey(ctx *x)
{
    const cmd *c = x->c;
    json_t *k;
    char *s;
    MDB_val v;

    if (c->actor_role != ROLE_ADMIN)
        return problem(x, 403, "forbidden", "only admins create API keys");
    if (store_get(x->t, DB_APIKEYS, c->u.apikey.hash, 32, &v) == 0)
        return problem(x, 409, "conflict", "this key exists");
    k = json_pack("{s:o,s:o,s:s,s:o}", "id", juuid(&c->u.apikey.id), "name", jstr(c->u.apikey.name),
                  "role", core_role_name(c->u.apikey.role), "created_at", jtime(x->now_s));
    if (!k)
        return problem(x, 422, "validation", "name is not valid UTF-8");
    s = save_json(x, DB_APIKEYS, c->u.apikey.hash, 32, k);
    json_decref(k);
    return s ? ok_body(x, 201, s) : CORE_EIO;
}

/* ---- resources ---- */

static int count_add(ctx *x, int type, int delta)
{
    if (x->counts) { /* an import: written once at the end of the command */
        x->counts[type] += delta;
        return 0;
    }
    char name[40];
    snprintf(name, sizeof name, "count/%s", core_rtype_name(type));
    return store_meta_put_u64(x->t, name, store_meta_u64(x->t, name) + (uint64_t)(int64_t)delta);
}

static int is_staff(int role)
{
    return role == ROLE_LIBRARIAN || role == ROLE_ADMIN || role == ROLE_SERVICE;
}

/* the fields of a resource a write sets */
typedef struct res_in {
    core_str title;
    uint8_t type, premium, n_authors, n_tags;
    uint32_t copies;
    const core_str *authors, *tags;
} res_in;

/* the string value of key in a stored view (types, times: no escapes) */
static int raw_str(const MDB_val *v, const char *key, char *out, size_t n)
{
    const char *p = raw_after(v, key), *end = (const char *)v->mv_data + v->mv_size, *q;
    if (!p || p >= end || *p != '"' || !(q = memchr(p + 1, '"', (size_t)(end - p - 1))) ||
        (size_t)(q - p - 1) >= n)
        return CORE_EIO;
    memcpy(out, p + 1, (size_t)(q - p - 1));
    out[q - p - 1] = '\0';
    return 0;
}

/* a JSON string with the escapes jansson's JSON_COMPACT dump uses */
static int put_jstr(core_buf *b, const char *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    int rc = core_buf_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        unsigned char ch = (unsigned char)p[i];
        char esc[6] = {'\\', 0, '0', '0', 0, 0};
        size_t el = 2;
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        rc |= core_buf_put(b, p + run, i - run);
        run = i + 1;
        switch (ch) {
        case '"':
        case '\\':
            esc[1] = (char)ch;
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            esc[1] = 'u';
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            el = 6;
        }
        rc |= core_buf_put(b, esc, el);
    }
    rc |= core_buf_put(b, p + run, n - run);
    return rc | core_buf_put(b, "\"", 1);
}

static int put_jlist(core_buf *b, const core_str *items, int n)
{
    int rc = core_buf_put(b, "[", 1);
    for (int i = 0; i < n; i++) {
        if (i)
            rc |= core_buf_put(b, ",", 1);
        rc |= put_jstr(b, items[i].p, items[i].len);
    }
    return rc | core_buf_put(b, "]", 1);
}

/* v in decimal into out (no terminator); its length */
static size_t put_u32(char *out, uint32_t v)
{
    char tmp[10];
    size_t n = 0, i = 0;
    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n)
        out[i++] = tmp[--n];
    return i;
}

/* The stored view of a resource, written directly (it is the hottest write
 * of an import): the bytes jansson's compact dump of the same object gives,
 * in the key order every reader expects. */
static int res_view(ctx *x, const core_uuid *rid, const res_in *in, const char *created)
{
    core_buf *b = &x->view;
    char id[37], num[10];
    int rc;
    core_uuid_fmt(rid, id);
    b->len = 0;
    rc = core_buf_put(b, "{\"id\":\"", 7) | core_buf_put(b, id, 36) |
         core_buf_put(b, "\",\"title\":", 10) | put_jstr(b, in->title.p, in->title.len);
    const char *type = core_rtype_name(in->type);
    size_t nl = put_u32(num, in->copies);
    rc |= core_buf_put(b, ",\"type\":\"", 9) | core_buf_put(b, type, strlen(type)) |
          core_buf_put(b, "\",\"copies\":", 11) | core_buf_put(b, num, nl) |
          core_buf_put(b, ",\"available\":", 13) | core_buf_put(b, num, nl) |
          core_buf_put(b, in->premium ? ",\"premium\":true" : ",\"premium\":false",
                       in->premium ? 15 : 16);
    rc |= core_buf_put(b, ",\"authors\":", 11) | put_jlist(b, in->authors, in->n_authors) |
          core_buf_put(b, ",\"tags\":", 8) | put_jlist(b, in->tags, in->n_tags) |
          core_buf_put(b, ",\"created_at\":\"", 15) | core_buf_put(b, created, strlen(created)) |
          core_buf_put(b, "\",\"updated_at\":\"", 16) | core_buf_put(b, x->now, strlen(x->now)) |
          core_buf_put(b, "\"}", 2);
    return rc ? CORE_ENOMEM : 0;
}

static int text_ok(core_str s)
{
    return core_utf8_count(s.p, s.len) >= 0;
}

/*
 * Writes resource rid from in; old is its stored view, or NULL for a new
 * one. 0 with *status 201 (created) or 200 (replaced); 0 with *status 409
 * or 422 and *why when the write is refused (nothing written); or a
 * storage error. A new id has no copies out and no holds (a delete ends
 * them), so only a replaced resource needs its holds and availability
 * looked at.
 */
static int res_store(ctx *x, const core_uuid *rid, const res_in *in, const MDB_val *old,
                     int *status, const char **why)
{
    int old_type = -1, rc, ok = text_ok(in->title);
    char created[21], type[32];
    uint8_t tk[17];

    for (int i = 0; i < in->n_authors; i++)
        ok &= text_ok(in->authors[i]);
    for (int i = 0; i < in->n_tags; i++)
        ok &= text_ok(in->tags[i]);
    *status = old ? 200 : 201;
    if (old) {
        copy_scan sc = {0};
        if (raw_str(old, "\"type\":", type, sizeof type) ||
            raw_str(old, "\"created_at\":", created, sizeof created))
            return CORE_EIO;
        old_type = core_rtype_parse(type);
        if ((rc = scan_copies(x, rid, in->copies, &sc)))
            return rc;
        if (sc.max_used > in->copies) {
            *status = 409;
            *why = "copies that are lent or kept for a hold cannot be removed";
            return 0;
        }
    } else {
        memcpy(created, x->now, sizeof created);
    }
    if (!ok) {
        *status = 422;
        *why = "text fields must be valid UTF-8";
        return 0;
    }
    if ((rc = res_view(x, rid, in, created)) ||
        (rc = store_put(x->t, DB_RES, rid->b, 16, x->view.p, x->view.len)))
        return rc;
    if (old_type != in->type) {
        if (old_type >= 0) {
            tk[0] = (uint8_t)old_type;
            memcpy(tk + 1, rid->b, 16);
            if ((rc = store_del(x->t, DB_RES_TYPE, tk, 17)) || (rc = count_add(x, old_type, -1)))
                return rc;
        }
        tk[0] = in->type;
        memcpy(tk + 1, rid->b, 16);
        if ((rc = store_put(x->t, DB_RES_TYPE, tk, 17, "", 0)) || (rc = count_add(x, in->type, 1)))
            return rc;
    }
    if (old && ((rc = fill_holds(x, rid, in->copies)) || (rc = res_refresh(x, rid))))
        return rc;
    return 0;
}

static int do_res_put(ctx *x)
{
    const cmd *c = x->c;
    const core_uuid *rid = &c->u.res_put.id;
    res_in in = {.title = c->u.res_put.title,
                 .type = c->u.res_put.type,
                 .premium = c->u.res_put.premium,
                 .copies = c->u.res_put.copies,
                 .n_authors = c->u.res_put.n_authors,
                 .n_tags = c->u.res_put.n_tags,
                 .authors = c->u.res_put.authors,
                 .tags = c->u.res_put.tags};
    MDB_val old, v;
    const char *why = NULL;
    int have_old, status, rc;

    if (!is_staff(c->actor_role))
        return problem(x, 403, "forbidden", "only librarians change the catalog");
    have_old = store_get(x->t, DB_RES, rid->b, 16, &old) == 0;
    if (have_old && c->u.res_put.mode == RES_CREATE)
        return problem(x, 409, "conflict", "a resource with this id exists");
    if ((rc = res_store(x, rid, &in, have_old ? &old : NULL, &status, &why)))
        return rc;
    if (why)
        return problem(x, status, status == 409 ? "conflict" : "validation", why);
    if (store_get(x->t, DB_RES, rid->b, 16, &v))
        return CORE_EIO;
    return ok_body(x, status, strndup(v.mv_data, v.mv_size));
}

/* ---- imports ---- */

static int same_list(json_t *a, uint8_t n, const core_str *items)
{
    if (!json_is_array(a) || json_array_size(a) != n)
        return 0;
    for (uint8_t i = 0; i < n; i++) {
        json_t *e = json_array_get(a, i);
        if (!json_is_string(e) || json_string_length(e) != items[i].len ||
            memcmp(json_string_value(e), items[i].p, items[i].len) != 0)
            return 0;
    }
    return 1;
}

/* in from a row, with the fields it does not set from the stored view (or
 * the POST defaults); 1 when that changes nothing stored */
static int row_merge(const cmd_row *w, json_t *old, res_in *in, core_str *lists)
{
    json_t *a;
    int same;
    in->title = w->title;
    in->type = w->type;
    in->copies = (w->has & ROW_COPIES) || !old
                     ? ((w->has & ROW_COPIES) ? w->copies : 1)
                     : (uint32_t)json_integer_value(json_object_get(old, "copies"));
    in->premium = (w->has & ROW_PREMIUM) || !old
                      ? w->premium
                      : (uint8_t)json_is_true(json_object_get(old, "premium"));
    in->authors = w->authors;
    in->n_authors = w->n_authors;
    in->tags = w->tags;
    in->n_tags = w->n_tags;
    if (!old)
        return 0;
    /* lists the row leaves alone point into the stored view */
    for (int l = 0; l < 2; l++) {
        core_str *out = lists + l * CORE_MAX_LIST;
        size_t i;
        json_t *e;
        if (w->has & (l ? ROW_TAGS : ROW_AUTHORS))
            continue;
        a = json_object_get(old, l ? "tags" : "authors");
        if (!json_is_array(a) || json_array_size(a) > CORE_MAX_LIST)
            continue;
        json_array_foreach (a, i, e) {
            out[i].p = json_string_value(e);
            out[i].len = out[i].p ? (uint32_t)json_string_length(e) : 0;
        }
        if (l) {
            in->tags = out;
            in->n_tags = (uint8_t)json_array_size(a);
        } else {
            in->authors = out;
            in->n_authors = (uint8_t)json_array_size(a);
        }
    }
    const char *t = json_string_value(json_object_get(old, "title"));
    same = t && json_string_length(json_object_get(old, "title")) == in->title.len &&
           memcmp(t, in->title.p, in->title.len) == 0 &&
           core_rtype_parse(json_string_value(json_object_get(old, "type"))) == in->type &&
           (uint32_t)json_integer_value(json_object_get(old, "copies")) == in->copies &&
           json_is_true(json_object_get(old, "premium")) == (in->premium != 0) &&
           same_list(json_object_get(old, "authors"), in->n_authors, in->authors) &&
           same_list(json_object_get(old, "tags"), in->n_tags, in->tags);
    return same;
}

static int reject_row(json_t *rejected, const cmd_row *w, const char *why)
{
    char id[37];
    core_uuid_fmt(&w->id, id);
    return json_array_append_new(rejected, json_pack("{s:I,s:s,s:s}", "line", (json_int_t)w->line,
                                                     "id", id, "reason", why))
               ? CORE_ENOMEM
               : 0;
}

/* a batch of rows of an import file: each row an upsert by id */
static int do_import(ctx *x)
{
    const cmd *c = x->c;
    uint64_t created = 0, updated = 0, unchanged = 0;
    json_t *rejected, *body;
    cmd_row w;
    size_t off = 0;
    int rc = 0;

    int64_t counts[RTYPE__COUNT] = {0};

    if (!is_staff(c->actor_role))
        return problem(x, 403, "forbidden", "only librarians change the catalog");
    if (!(rejected = json_array()))
        return CORE_ENOMEM;
    x->counts = counts;
    while (cmd_row_next(&c->u.import.rows, &off, &w)) {
        core_str lists[2 * CORE_MAX_LIST];
        MDB_val v;
        json_t *old = NULL;
        res_in in;
        const char *why = NULL;
        int status, have = store_get(x->t, DB_RES, w.id.b, 16, &v) == 0;
        if (have && !(old = json_loadb(v.mv_data, v.mv_size, 0, NULL))) {
            rc = CORE_EIO;
            break;
        }
        if (row_merge(&w, old, &in, lists)) {
            unchanged++;
            json_decref(old);
            continue;
        }
        rc = res_store(x, &w.id, &in, have ? &v : NULL, &status, &why);
        json_decref(old);
        if (rc)
            break;
        if (why)
            rc = reject_row(rejected, &w, why);
        else if (status == 201)
            created++;
        else
            updated++;
        if (rc)
            break;
    }
    x->counts = NULL;
    for (int i = 0; !rc && i < RTYPE__COUNT; i++)
        if (counts[i])
            rc = count_add(x, i, (int)counts[i]);
    body = rc ? NULL
              : json_pack("{s:I,s:I,s:I,s:o}", "created", (json_int_t)created, "updated",
                          (json_int_t)updated, "unchanged", (json_int_t)unchanged, "rejected",
                          rejected);
    if (rc) {
        json_decref(rejected);
        return rc;
    }
    if (!body)
        return CORE_ENOMEM;
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return s ? ok_body(x, 200, s) : CORE_ENOMEM;
}

static const char *const import_formats[] = {NULL, "library", "jsonl", "csv"};

/* an import file finished: its record, unless the same file was recorded */
static int do_import_done(ctx *x)
{
    const cmd *c = x->c;
    MDB_val v;
    json_t *r;
    char sha[65], *s;
    int rc;

    if (!is_staff(c->actor_role))
        return problem(x, 403, "forbidden", "only librarians change the catalog");
    if (store_get(x->t, DB_IMPORTS, c->u.import_done.sha256, 32, &v) == 0) {
        json_t *old = json_loadb(v.mv_data, v.mv_size, 0, NULL);
        if (!old || json_object_set_new(old, "duplicate", json_true())) {
            json_decref(old);
            return CORE_EIO;
        }
        s = json_dumps(old, JSON_COMPACT);
        json_decref(old);
        return s ? ok_body(x, 200, s) : CORE_ENOMEM;
    }
    core_hex(c->u.import_done.sha256, 32, sha);
    sha[64] = '\0';
    r = json_pack(
        "{s:s,s:s,s:o,s:I,s:I,s:I,s:I,s:I,s:o,s:o}", "sha256", sha, "format",
        import_formats[c->u.import_done.format], "name", jstr(c->u.import_done.name), "rows",
        (json_int_t)c->u.import_done.rows, "created", (json_int_t)c->u.import_done.created,
        "updated", (json_int_t)c->u.import_done.updated, "unchanged",
        (json_int_t)c->u.import_done.unchanged, "rejected", (json_int_t)c->u.import_done.rejected,
        "imported_at", jtime(x->now_s), "by", juuid(&c->actor));
    if (!r)
        return CORE_ENOMEM;
    if (!(s = save_json(x, DB_IMPORTS, c->u.import_done.sha256, 32, r))) {
        json_decref(r);
        return CORE_EIO;
    }
    json_decref(r);
    rc = ok_body(x, 201, s);
    return rc;
}

typedef struct holds_of {
    core_uuid ids[256];
    int n;
    int more;
} holds_of;

static int holds_of_fn(void *arg, const MDB_val *k, const MDB_val *v)
{
    holds_of *h = arg;
    if (k->mv_size != 40)
        return 0;
    if (h->n == 256) {
        h->more = 1;
        return 1;
    }
    memcpy(h->ids[h->n++].b, (const uint8_t *)k->mv_data + 24, 16);
    return 0;
}

static int do_res_delete(ctx *x)
{
    const core_uuid *rid = &x->c->u.target.id;
    json_t *r;
    copy_scan s = {0};
    int type, rc;
    uint8_t tk[17];

    if (!is_staff(x->c->actor_role))
        return problem(x, 403, "forbidden", "only librarians change the catalog");
    r = load_json(x, DB_RES, rid->b, 16);
    if (!r)
        return problem(x, 404, "not-found", "no such resource");
    type = core_rtype_parse(jget_str(r, "type"));
    uint32_t copies = (uint32_t)json_integer_value(json_object_get(r, "copies"));
    json_decref(r);
    if ((rc = scan_copies(x, rid, copies, &s)))
        return rc;
    if (s.any_loan)
        return problem(x, 409, "conflict", "the resource has copies on loan");
    for (;;) {
        holds_of h = {.n = 0};
        if ((rc = scan_prefix(x, DB_RHOLDS, rid->b, 16, holds_of_fn, &h)))
            return rc;
        for (int i = 0; i < h.n; i++) {
            json_t *hj = load_json(x, DB_HOLDS, h.ids[i].b, 16);
            core_uuid uid;
            if (!hj || jget_uuid(hj, "user_id", &uid)) {
                json_decref(hj);
                return CORE_EIO;
            }
            json_decref(hj);
            if ((rc = hold_end(x, &h.ids[i], &uid, "cancelled", 0)))
                return rc;
        }
        if (!h.more)
            break;
    }
    for (uint32_t no = 1; s.used && no <= s.max_used; no++) {
        uint8_t ck[20];
        copy_key(ck, rid, no);
        rc = store_del(x->t, DB_COPIES, ck, 20);
        if (rc && rc != CORE_ENOENT)
            return rc;
    }
    tk[0] = (uint8_t)type;
    memcpy(tk + 1, rid->b, 16);
    if ((rc = store_del(x->t, DB_RES, rid->b, 16)) || (rc = store_del(x->t, DB_RES_TYPE, tk, 17)) ||
        (rc = count_add(x, type, -1)))
        return rc;
    x->res->status = 204;
    return 0;
}

/* ---- circulation ---- */

typedef struct active_scan {
    uint8_t rid[16];
    int count;
    int has_this;
} active_scan;

static int active_fn(void *arg, const MDB_val *k, const MDB_val *v)
{
    active_scan *a = arg;
    a->count++;
    if (v->mv_size >= 16 && memcmp(v->mv_data, a->rid, 16) == 0)
        a->has_this = 1;
    return 0;
}

typedef struct uhold_scan {
    core_uuid hid;
    int open; /* a waiting or ready hold on the resource */
    int ready;
} uhold_scan;

/* the open hold of uid on rid, if any (ended holds have ready_until 0 and no queue entry) */
static int find_open_hold(ctx *x, const core_uuid *uid, const core_uuid *rid, uhold_scan *u)
{
    memset(u, 0, sizeof *u);
    /* the user's holds on rid; the open one still has its queue entry */
    MDB_cursor *cur;
    MDB_val k = {16, (void *)uid->b}, v;
    int rc;
    if (mdb_cursor_open(x->t->txn, store_dbi(x->t->st, DB_UHOLDS), &cur))
        return CORE_EIO;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && k.mv_size == 32 && memcmp(k.mv_data, uid->b, 16) == 0) {
        const uint8_t *val = v.mv_data;
        if (v.mv_size == 32 && memcmp(val, rid->b, 16) == 0) {
            uint8_t rk[40];
            MDB_val rv;
            rhold_key(rk, val, val + 16, (const uint8_t *)k.mv_data + 16);
            if (store_get(x->t, DB_RHOLDS, rk, 40, &rv) == 0) {
                memcpy(u->hid.b, (const uint8_t *)k.mv_data + 16, 16);
                u->open = 1;
                u->ready = rv.mv_size == 1 && *(const uint8_t *)rv.mv_data == 'r';
                break;
            }
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return 0;
}

typedef struct borrower {
    int premium_plan;
    uint32_t copies;
} borrower;

/* common checks for borrowing and holding: returns 1 when a problem was set */
static int check_borrower(ctx *x, const core_uuid *uid, const core_uuid *rid, borrower *b)
{
    MDB_val user, res;
    if (x->c->actor_role == ROLE_MEMBER && memcmp(x->c->actor.b, uid->b, 16) != 0) {
        problem(x, 403, "forbidden", "members act for themselves only");
        return 1;
    }
    if (store_get(x->t, DB_USERS, uid->b, 16, &user)) {
        problem(x, 404, "not-found", "no such user");
        return 1;
    }
    if (store_get(x->t, DB_RES, rid->b, 16, &res)) {
        problem(x, 404, "not-found", "no such resource");
        return 1;
    }
    if (raw_has(&user, "\"status\":\"blocked\"")) {
        problem(x, 403, "member-blocked", "this member is blocked");
        return 1;
    }
    b->premium_plan = raw_has(&user, "\"plan\":\"premium\"");
    b->copies = (uint32_t)raw_uint(&res, "\"copies\":");
    if (raw_has(&res, "\"premium\":true") && !b->premium_plan) {
        problem(x, 403, "premium-required", "this resource needs the premium plan");
        return 1;
    }
    return 0;
}

static int stat_add(ctx *x, const core_uuid *rid, int checkout)
{
    char day[11];
    uint8_t v[16] = {0};
    MDB_val old;
    int rc;

    core_fmt_day(x->now_s, day);
    if (store_get(x->t, DB_STAT_DAY, day, 10, &old) == 0 && old.mv_size == 16)
        memcpy(v, old.mv_data, 16);
    store_be64(v + (checkout ? 0 : 8), store_rd64(v + (checkout ? 0 : 8)) + 1);
    if ((rc = store_put(x->t, DB_STAT_DAY, day, 10, v, 16)))
        return rc;
    if (!checkout)
        return 0;
    uint64_t n = 0;
    if (store_get(x->t, DB_STAT_RES, rid->b, 16, &old) == 0 && old.mv_size == 8)
        n = store_rd64(old.mv_data);
    store_be64(v, n + 1);
    return store_put(x->t, DB_STAT_RES, rid->b, 16, v, 8);
}

/* uactive value: rid[16] due[8] copy[4] */
static int do_checkout(ctx *x)
{
    const cmd *c = x->c;
    const core_uuid *lid = &c->u.place.id, *uid = &c->u.place.user, *rid = &c->u.place.resource;
    active_scan a = {.count = 0};
    uhold_scan hs;
    copy_scan s = {0};
    core_policy pol;
    borrower b;
    uint32_t copy;
    uint8_t k[32], ua[28], cv[17], dk[24];
    MDB_val v;
    char *out, ls[37], us[37], rs[37], at[21], dueat[21];
    int rc;

    if (check_borrower(x, uid, rid, &b))
        return 0;
    load_policy(x, &pol);
    memcpy(a.rid, rid->b, 16);
    if ((rc = scan_prefix(x, DB_UACTIVE, uid->b, 16, active_fn, &a)))
        return rc;
    if (a.has_this)
        return problem(x, 409, "conflict", "this member already has this resource on loan");
    if ((uint32_t)a.count >= (b.premium_plan ? pol.max_loans_premium : pol.max_loans))
        return problem(x, 403, "loan-limit-reached", "this member has reached the loan limit");
    if (store_get(x->t, DB_LOANS, lid->b, 16, &v) == 0)
        return problem(x, 409, "conflict", "a loan with this id exists");
    if ((rc = find_open_hold(x, uid, rid, &hs)))
        return rc;
    if (hs.ready) {
        s.want[0] = 'H';
        memcpy(s.want + 1, hs.hid.b, 16);
    }
    if ((rc = scan_copies(x, rid, b.copies, &s)))
        return rc;
    copy = hs.ready && s.found ? s.found : s.free_copy;
    if (!copy)
        return problem(x, 409, "no-copy-available", "every copy is on loan or kept for a hold");
    if (hs.open && (rc = hold_end(x, &hs.hid, uid, "fulfilled", 0)))
        return rc;
    int64_t due = x->now_s + (int64_t)pol.loan_days * DAY_S;
    core_uuid_fmt(lid, ls);
    core_uuid_fmt(uid, us);
    core_uuid_fmt(rid, rs);
    fmt_time(x->now_s, at);
    fmt_time(due, dueat);
    /* every field is an id, a time or a number: nothing to escape */
    if (asprintf(&out,
                 "{\"id\":\"%s\",\"user_id\":\"%s\",\"resource_id\":\"%s\",\"copy\":%u,\"status\":"
                 "\"active\","
                 "\"checked_out_at\":\"%s\",\"due_at\":\"%s\",\"returned_at\":null,\"renewals\":0}",
                 ls, us, rs, copy, at, dueat) < 0)
        return CORE_ENOMEM;
    if ((rc = store_put(x->t, DB_LOANS, lid->b, 16, out, strlen(out))))
        goto fail;
    memcpy(k, uid->b, 16);
    memcpy(k + 16, lid->b, 16);
    memcpy(ua, rid->b, 16);
    store_be64(ua + 16, (uint64_t)due);
    store_be32(ua + 24, copy);
    cv[0] = 'L';
    memcpy(cv + 1, lid->b, 16);
    store_be64(dk, (uint64_t)due);
    memcpy(dk + 8, lid->b, 16);
    uint8_t ck[20];
    copy_key(ck, rid, copy);
    if ((rc = store_put(x->t, DB_ULOANS, k, 32, "a", 1)) ||
        (rc = store_put(x->t, DB_UACTIVE, k, 32, ua, 28)) ||
        (rc = store_put(x->t, DB_COPIES, ck, 20, cv, 17)) ||
        (rc = store_put(x->t, DB_DUE, dk, 24, "", 0)) || (rc = stat_add(x, rid, 1)) ||
        (rc = res_refresh(x, rid)))
        goto fail;
    return ok_body(x, 201, out);
fail:
    free(out);
    return rc;
}

/* loads an active-or-not loan the actor may touch; 1 when a problem was set */
static int load_loan(ctx *x, const core_uuid *lid, json_t **loan, core_uuid *uid, core_uuid *rid)
{
    *loan = load_json(x, DB_LOANS, lid->b, 16);
    if (!*loan || jget_uuid(*loan, "user_id", uid) || jget_uuid(*loan, "resource_id", rid) ||
        (x->c->actor_role == ROLE_MEMBER && memcmp(uid->b, x->c->actor.b, 16) != 0)) {
        json_decref(*loan);
        *loan = NULL;
        problem(x, 404, "not-found", "no such loan");
        return 1;
    }
    return 0;
}

/* the uuid value of a key in a stored view */
static int raw_uuid(const MDB_val *v, const char *key, core_uuid *u)
{
    const char *p = raw_after(v, key);
    if (!p || (size_t)(p - (const char *)v->mv_data) + 36 > v->mv_size)
        return CORE_EINVAL;
    return core_uuid_parse(p, 36, u);
}

/* a malloc'd copy of v with the first `from` replaced by `to` */
static char *raw_replace(const MDB_val *v, const char *from, const char *to, size_t *outlen)
{
    const char *p = memmem(v->mv_data, v->mv_size, from, strlen(from));
    size_t pre, fl = strlen(from), tl = strlen(to);
    char *out;
    if (!p)
        return NULL;
    pre = (size_t)(p - (const char *)v->mv_data);
    *outlen = v->mv_size - fl + tl;
    if (!(out = malloc(*outlen + 1)))
        return NULL;
    memcpy(out, v->mv_data, pre);
    memcpy(out + pre, to, tl);
    memcpy(out + pre + tl, p + fl, v->mv_size - pre - fl);
    out[*outlen] = '\0';
    return out;
}

static int do_return(ctx *x)
{
    const core_uuid *lid = &x->c->u.target.id;
    core_uuid uid, rid;
    uint8_t k[32], dk[24];
    MDB_val v, loan;
    char *step, *out, at[40];
    size_t len;
    int rc;

    if (store_get(x->t, DB_LOANS, lid->b, 16, &loan) || raw_uuid(&loan, "\"user_id\":\"", &uid) ||
        raw_uuid(&loan, "\"resource_id\":\"", &rid) ||
        (x->c->actor_role == ROLE_MEMBER && memcmp(uid.b, x->c->actor.b, 16) != 0))
        return problem(x, 404, "not-found", "no such loan");
    if (!raw_has(&loan, "\"status\":\"active\""))
        return problem(x, 409, "conflict", "this loan was already returned");
    memcpy(k, uid.b, 16);
    memcpy(k + 16, lid->b, 16);
    if (store_get(x->t, DB_UACTIVE, k, 32, &v) || v.mv_size != 28)
        return CORE_EIO;
    uint64_t due = store_rd64((const uint8_t *)v.mv_data + 16);
    uint32_t copy = store_rd32((const uint8_t *)v.mv_data + 24);
    /* an id, a time and a number: patch the view instead of rebuilding it */
    memcpy(at, "\"returned_at\":\"", 15);
    fmt_time(x->now_s, at + 15);
    strcat(at, "\"");
    if (!(step = raw_replace(&loan, "\"status\":\"active\"", "\"status\":\"returned\"", &len)))
        return CORE_EIO;
    out = raw_replace(&(MDB_val){len, step}, "\"returned_at\":null", at, &len);
    free(step);
    if (!out)
        return CORE_EIO;
    store_be64(dk, due);
    memcpy(dk + 8, lid->b, 16);
    if ((rc = store_put(x->t, DB_LOANS, lid->b, 16, out, len)) ||
        (rc = store_put(x->t, DB_ULOANS, k, 32, "r", 1)) ||
        (rc = store_del(x->t, DB_UACTIVE, k, 32)) || (rc = store_del(x->t, DB_DUE, dk, 24)) ||
        (rc = copy_released(x, &rid, copy)) || (rc = stat_add(x, &rid, 0)) ||
        (rc = res_refresh(x, &rid))) {
        free(out);
        return rc;
    }
    return ok_body(x, 200, out);
}

static int any_waiting_fn(void *arg, const MDB_val *k, const MDB_val *v)
{
    if (v->mv_size == 1 && *(const uint8_t *)v->mv_data == 'w') {
        *(int *)arg = 1;
        return 1;
    }
    return 0;
}

static int do_renew(ctx *x)
{
    const core_uuid *lid = &x->c->u.target.id;
    core_uuid uid, rid;
    json_t *loan, *user;
    core_policy pol;
    uint8_t k[32], dk[24], ua[28];
    MDB_val v;
    int waiting = 0, rc;
    char *out;

    if (load_loan(x, lid, &loan, &uid, &rid))
        return 0;
    load_policy(x, &pol);
    if (strcmp(jget_str(loan, "status"), "active") != 0) {
        json_decref(loan);
        return problem(x, 409, "renewal-refused", "only active loans can be renewed");
    }
    user = load_json(x, DB_USERS, uid.b, 16);
    if (user && strcmp(jget_str(user, "status"), "blocked") == 0) {
        json_decref(user);
        json_decref(loan);
        return problem(x, 403, "member-blocked", "this member is blocked");
    }
    json_decref(user);
    json_int_t renewals = json_integer_value(json_object_get(loan, "renewals"));
    if (renewals >= (json_int_t)pol.max_renewals) {
        json_decref(loan);
        return problem(x, 409, "renewal-refused", "the renewal limit is reached");
    }
    if ((rc = scan_prefix(x, DB_RHOLDS, rid.b, 16, any_waiting_fn, &waiting))) {
        json_decref(loan);
        return rc;
    }
    if (waiting) {
        json_decref(loan);
        return problem(x, 409, "renewal-refused", "other members are waiting for this resource");
    }
    memcpy(k, uid.b, 16);
    memcpy(k + 16, lid->b, 16);
    if (store_get(x->t, DB_UACTIVE, k, 32, &v) || v.mv_size != 28) {
        json_decref(loan);
        return CORE_EIO;
    }
    memcpy(ua, v.mv_data, 28);
    uint64_t due = store_rd64(ua + 16);
    uint64_t ndue = (uint64_t)x->now_s + (uint64_t)pol.loan_days * DAY_S;
    if (ndue < due)
        ndue = due;
    json_object_set_new(loan, "due_at", jtime((int64_t)ndue));
    json_object_set_new(loan, "renewals", json_integer(renewals + 1));
    out = save_json(x, DB_LOANS, lid->b, 16, loan);
    json_decref(loan);
    if (!out)
        return CORE_EIO;
    store_be64(dk, due);
    memcpy(dk + 8, lid->b, 16);
    rc = store_del(x->t, DB_DUE, dk, 24);
    store_be64(dk, ndue);
    store_be64(ua + 16, ndue);
    if (rc || (rc = store_put(x->t, DB_DUE, dk, 24, "", 0)) ||
        (rc = store_put(x->t, DB_UACTIVE, k, 32, ua, 28))) {
        free(out);
        return rc;
    }
    return ok_body(x, 200, out);
}

static int do_hold_place(ctx *x)
{
    const cmd *c = x->c;
    const core_uuid *hid = &c->u.place.id, *uid = &c->u.place.user, *rid = &c->u.place.resource;
    json_t *hold;
    active_scan a = {.count = 0};
    uhold_scan hs;
    copy_scan s = {0};
    borrower b;
    uint8_t seq[8], rk[40], uval[32];
    MDB_val v;
    size_t len;
    int rc;

    if (check_borrower(x, uid, rid, &b))
        return 0;
    memcpy(a.rid, rid->b, 16);
    if ((rc = scan_prefix(x, DB_UACTIVE, uid->b, 16, active_fn, &a)) ||
        (rc = find_open_hold(x, uid, rid, &hs)))
        return rc;
    if (a.has_this || hs.open)
        return problem(x, 409, "conflict",
                       "this member already has this resource on loan or on hold");
    if (store_get(x->t, DB_HOLDS, hid->b, 16, &v) == 0)
        return problem(x, 409, "conflict", "a hold with this id exists");
    if ((rc = scan_copies(x, rid, b.copies, &s)))
        return rc;
    if (s.free_copy)
        return problem(x, 409, "conflict", "a copy is available: check it out instead");
    hold = json_pack("{s:o,s:o,s:o,s:s,s:i,s:n,s:o}", "id", juuid(hid), "user_id", juuid(uid),
                     "resource_id", juuid(rid), "status", "waiting", "position", 0, "ready_until",
                     "created_at", jtime(x->now_s));
    rc = hold ? save_json_only(x, DB_HOLDS, hid->b, 16, hold) : CORE_ENOMEM;
    json_decref(hold);
    if (rc)
        return rc;
    store_be64(seq, x->index);
    rhold_key(rk, rid->b, seq, hid->b);
    memcpy(uval, rid->b, 16);
    memcpy(uval + 16, seq, 8);
    memset(uval + 24, 0, 8);
    if ((rc = store_put(x->t, DB_RHOLDS, rk, 40, "w", 1)) || (rc = uhold_put(x, uid, hid, uval)))
        return rc;
    if (store_get(x->t, DB_HOLDS, hid->b, 16, &v))
        return CORE_EIO;
    return ok_body(x, 201, apply_hold_render(x->t, v.mv_data, v.mv_size, &len));
}

static int do_hold_cancel(ctx *x)
{
    const core_uuid *hid = &x->c->u.target.id;
    json_t *h = load_json(x, DB_HOLDS, hid->b, 16);
    core_uuid uid, rid;
    const char *st;
    MDB_val v;
    size_t len;
    int rc;

    if (!h || jget_uuid(h, "user_id", &uid) || jget_uuid(h, "resource_id", &rid) ||
        (x->c->actor_role == ROLE_MEMBER && memcmp(uid.b, x->c->actor.b, 16) != 0)) {
        json_decref(h);
        return problem(x, 404, "not-found", "no such hold");
    }
    st = jget_str(h, "status");
    int open = strcmp(st, "waiting") == 0 || strcmp(st, "ready") == 0;
    json_decref(h);
    if (!open)
        return problem(x, 409, "conflict", "this hold is no longer open");
    if ((rc = hold_end(x, hid, &uid, "cancelled", 1)) || (rc = res_refresh(x, &rid)))
        return rc;
    if (store_get(x->t, DB_HOLDS, hid->b, 16, &v))
        return CORE_EIO;
    return ok_body(x, 200, apply_hold_render(x->t, v.mv_data, v.mv_size, &len));
}

/* ---- cluster state ---- */

static int do_bootstrap(ctx *x)
{
    uint8_t key[32];
    int rc;
    /* the first key stays: a replayed bootstrap must not replace it */
    if (store_signing_key(x->t, key) != 0 &&
        (rc = store_signing_key_put(x->t, x->c->u.bootstrap.key)))
        return rc;
    return ok_body(x, 200, strdup("{}"));
}

static int do_policy(ctx *x)
{
    int rc = store_policy_put(x->t, &x->c->u.policy);
    return rc ? rc : ok_body(x, 200, strdup("{}"));
}

int apply(struct store_txn *t, uint64_t index, const cmd *c, const uint8_t *enc, size_t enc_len,
          apply_result *res)
{
    ctx x = {.t = t, .index = index, .c = c, .res = res, .now_s = c->ts_ms / 1000};
    store_touch touched = {0};
    int rc;

    fmt_time(x.now_s, x.now);
    memset(res, 0, sizeof *res);
    t->touch = &touched;
    if ((rc = expire_holds(&x)) || (rc = idem_trim(&x)))
        goto fail;
    if (c->idem.len && apply_idem_find(t, c, res))
        goto done;
    switch (c->type) {
    case CMD_BOOTSTRAP:
        rc = do_bootstrap(&x);
        break;
    case CMD_POLICY:
        rc = do_policy(&x);
        break;
    case CMD_TICK:
        rc = ok_body(&x, 200, strdup("{}"));
        break;
    case CMD_USER_CREATE:
        rc = do_user_create(&x);
        break;
    case CMD_USER_UPDATE:
        rc = do_user_update(&x);
        break;
    case CMD_RES_PUT:
        rc = do_res_put(&x);
        break;
    case CMD_RES_DELETE:
        rc = do_res_delete(&x);
        break;
    case CMD_LOAN_CHECKOUT:
        rc = do_checkout(&x);
        break;
    case CMD_LOAN_RETURN:
        rc = do_return(&x);
        break;
    case CMD_LOAN_RENEW:
        rc = do_renew(&x);
        break;
    case CMD_HOLD_PLACE:
        rc = do_hold_place(&x);
        break;
    case CMD_HOLD_CANCEL:
        rc = do_hold_cancel(&x);
        break;
    case CMD_APIKEY_CREATE:
        rc = do_apikey(&x);
        break;
    case CMD_IMPORT:
        rc = do_import(&x);
        break;
    case CMD_IMPORT_DONE:
        rc = do_import_done(&x);
        break;
    default:
        rc = CORE_EINVAL;
    }
    if (rc)
        goto fail;
    if (c->idem.len && (rc = idem_save(&x)))
        goto fail;
done:
    /* the outbox entry: this command and the rows it changed */
    t->touch = NULL;
    if ((rc = store_ob_put(t, index, res->status, enc, enc_len, &touched)) ||
        (rc = store_meta_put_u64(t, "applied", index)))
        goto fail;
    store_touch_free(&touched);
    core_buf_free(&x.view);
    return 0;
fail:
    t->touch = NULL;
    store_touch_free(&touched);
    core_buf_free(&x.view);
    apply_result_clear(res);
    return rc;
}
