/*
 * Unit tests for replication/fsm.c under libraft's in-memory cluster fixture
 * (raft/fixture.h): every fixture server has its own LMDB store (a temp dir)
 * and an fsm over it. Covered: replicas end byte-identical and the leader's
 * answers come out of fsm_take in order; entries at or below "raft_applied"
 * are skipped (a whole-cluster restart that replays the log, and a direct
 * apply of old indexes); a server cut off long enough catches up by snapshot
 * through fsm restore and an install hook that copies the source's replicated
 * state; servers join (spare, standby, voter) and leave while commands flow;
 * the Raft paper's figure 8 commit rule; malformed entries and commands that
 * do not decode. After every fixture step a hook takes each server's answers
 * and checks that a server applying an index answers exactly as the first
 * server that applied it, so no applied entry is ever replaced.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>

#include <ftw.h>
#include <jansson.h>
#include <raft.h>
#include <raft/fixture.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "persist/store.h"
#include "replication/internal.h"
#include "tests/unit/ids.h"

#define T0      1795341600000LL /* 2026-11-22T10:00:00Z */
#define MAP     (64ULL << 20)
#define MAXN    6
#define MAXIDX  4096 /* raft indexes a test reaches */
#define NREQ    1024
#define LIB     9000 /* a librarian principal */
#define ALL(n)  ((1u << (n)) - 1)
#define BIT(i)  (1u << (i))
#define WAIT_MS 20000 /* simulated time, not wall clock */

/* ---- servers: a store and an fsm each ---- */

typedef struct node {
    char dir[64];
    store *st;
    fsm fsm;
    struct raft_fsm rf;
    int bound;                 /* the fsm belongs to a fixture server */
    fsm_done *res, **res_tail; /* everything fsm_take returned */
    unsigned n_res;
    unsigned installs;
    raft_id install_source;
    raft_index commit_max;
} node;

static struct raft_fixture fx;
static int fx_up;
static node nodes[MAXN];
static unsigned n_nodes;

/* the first answer seen for each raft index, and the server that gave it */
static fsm_done *seen[MAXIDX];
static unsigned seen_by[MAXIDX];

/* what was proposed at each index, for rebuilding logs on a restart */
static struct {
    raft_term term;
    uint8_t *p;
    size_t len;
} plog[MAXIDX];

static struct raft_apply areq[NREQ];
static int adone[NREQ], astatus[NREQ];
static unsigned n_areq;
static struct raft_change creq[32];
static int cdone[32], cstatus[32];
static unsigned n_creq;

static const char *db_name[DB__COUNT] = {
    "meta",   "log",    "users",     "creds",    "emails",   "apikeys", "resources", "res_type",
    "loans",  "uloans", "uactive",   "copies",   "due",      "holds",   "rholds",    "uholds",
    "hready", "idem",   "idem_time", "stat_day", "stat_res", "outbox",  "raft",
};

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

static void node_open(unsigned i)
{
    node *nd = &nodes[i];
    cr_assert_lt(i, MAXN);
    snprintf(nd->dir, sizeof nd->dir, "/tmp/circa-raft-XXXXXX");
    cr_assert_not_null(mkdtemp(nd->dir));
    cr_assert_eq(store_open(nd->dir, MAP, STORE_NOSYNC, &nd->st), 0);
    nd->res_tail = &nd->res;
    if (i >= n_nodes)
        n_nodes = i + 1;
}

static void setup(void)
{
    core_log_set_level(LOG_ERROR + 1); /* the failures below are expected */
}

static void teardown(void)
{
    if (fx_up) {
        raft_fixture_close(&fx);
        fx_up = 0;
    }
    for (unsigned i = 0; i < n_nodes; i++) {
        node *nd = &nodes[i];
        fsm_done_free(fsm_take(&nd->fsm));
        fsm_done_free(nd->res);
        nd->res = NULL;
        if (nd->st)
            store_close(nd->st);
        nd->st = NULL;
        if (nd->dir[0])
            nftw(nd->dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    }
    for (unsigned i = 0; i < MAXIDX; i++)
        free(plog[i].p);
}

TestSuite(raft, .init = setup, .fini = teardown);

/* ---- comparing replicated state ---- */

/* the replicated state: everything but the raft log, raft's own state and
 * the node-local outbox watermark */
static int replicated(int db, const MDB_val *k)
{
    if (db == DB_LOG || db == DB_RAFT)
        return 0;
    return !(db == DB_META && k->mv_size == 10 && memcmp(k->mv_data, "ob_flushed", 10) == 0);
}

static void put_rec(core_buf *b, int db, const MDB_val *k, const MDB_val *v)
{
    uint8_t h[4], d = (uint8_t)db;
    cr_assert_eq(core_buf_put(b, &d, 1), 0);
    store_be32(h, (uint32_t)k->mv_size);
    cr_assert_eq(core_buf_put(b, h, 4), 0);
    cr_assert_eq(core_buf_put(b, k->mv_data, k->mv_size), 0);
    store_be32(h, (uint32_t)v->mv_size);
    cr_assert_eq(core_buf_put(b, h, 4), 0);
    cr_assert_eq(core_buf_put(b, v->mv_data, v->mv_size), 0);
}

/* every replicated record as db u8, u32 key length, key, u32 value length,
 * value, in database and key order */
static void dump(store *st, core_buf *out)
{
    store_txn t;
    cr_assert_eq(store_begin(st, 0, &t), 0);
    for (int db = 0; db < DB__COUNT; db++) {
        MDB_cursor *c;
        MDB_val k, v;
        int rc;
        cr_assert_eq(mdb_cursor_open(t.txn, store_dbi(st, db), &c), 0);
        for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
            if (replicated(db, &k))
                put_rec(out, db, &k, &v);
        cr_assert_eq(rc, MDB_NOTFOUND);
        mdb_cursor_close(c);
    }
    store_abort(&t);
}

typedef struct rec {
    int db;
    const uint8_t *k, *v;
    uint32_t kl, vl;
} rec;

static size_t next_rec(const core_buf *b, size_t off, rec *r)
{
    r->db = b->p[off];
    r->kl = store_rd32(b->p + off + 1);
    r->k = b->p + off + 5;
    r->vl = store_rd32(r->k + r->kl);
    r->v = r->k + r->kl + 4;
    return off + 9 + r->kl + r->vl;
}

static const char *hex(const uint8_t *p, size_t n)
{
    static char buf[4][97];
    static int i;
    char *b = buf[i++ % 4];
    if (n > 48)
        n = 48;
    core_hex(p, n, b);
    b[2 * n] = 0;
    return b;
}

static void expect_same_dump(const core_buf *a, const core_buf *b, const char *what)
{
    size_t pa = 0, pb = 0;
    rec x, y;
    while (pa < a->len && pb < b->len) {
        pa = next_rec(a, pa, &x);
        pb = next_rec(b, pb, &y);
        cr_assert(x.db == y.db && x.kl == y.kl && memcmp(x.k, y.k, x.kl) == 0,
                  "%s: %s key %s on one side, %s key %s on the other", what, db_name[x.db],
                  hex(x.k, x.kl), db_name[y.db], hex(y.k, y.kl));
        cr_assert(x.vl == y.vl && memcmp(x.v, y.v, x.vl) == 0, "%s: %s key %s: value %s vs %s",
                  what, db_name[x.db], hex(x.k, x.kl), hex(x.v, x.vl), hex(y.v, y.vl));
    }
    if (pa < a->len)
        next_rec(a, pa, &x);
    if (pb < b->len)
        next_rec(b, pb, &x);
    cr_assert(pa == a->len && pb == b->len, "%s: only one side has %s key %s", what, db_name[x.db],
              hex(x.k, x.kl));
}

/* asserts that servers i and j hold byte-identical replicated state */
static void expect_same(unsigned i, unsigned j)
{
    core_buf a = {0}, b = {0};
    char what[64];
    dump(nodes[i].st, &a);
    dump(nodes[j].st, &b);
    snprintf(what, sizeof what, "servers %u and %u", i, j);
    expect_same_dump(&a, &b, what);
    cr_assert_gt(a.len, 0);
    core_buf_free(&a);
    core_buf_free(&b);
}

static uint64_t meta(unsigned i, const char *name)
{
    store_txn t;
    cr_assert_eq(store_begin(nodes[i].st, 0, &t), 0);
    uint64_t v = store_meta_u64(&t, name);
    store_abort(&t);
    return v;
}

/* ---- answers: collected after every step ---- */

static int same_done(const fsm_done *a, const fsm_done *b)
{
    if (a->index != b->index || a->n != b->n)
        return 0;
    for (uint32_t k = 0; k < a->n; k++) {
        const apply_result *x = &a->res[k], *y = &b->res[k];
        if (a->seq[k] != b->seq[k] || x->status != y->status || x->problem != y->problem ||
            x->body_len != y->body_len || (x->body_len && memcmp(x->body, y->body, x->body_len)))
            return 0;
    }
    return 1;
}

static void collect(unsigned i)
{
    node *nd = &nodes[i];
    fsm_done *d = fsm_take(&nd->fsm);
    while (d) {
        fsm_done *next = d->next;
        d->next = NULL;
        *nd->res_tail = d;
        nd->res_tail = &d->next;
        nd->n_res++;
        cr_assert_lt(d->index, MAXIDX);
        if (!seen[d->index]) {
            seen[d->index] = d;
            seen_by[d->index] = i;
        } else {
            cr_assert(same_done(seen[d->index], d),
                      "server %u applied index %llu unlike server %u did", i,
                      (unsigned long long)d->index, seen_by[d->index]);
        }
        d = next;
    }
}

static void on_step(struct raft_fixture *f, struct raft_fixture_event *ev)
{
    for (unsigned i = 0; i < n_nodes; i++) {
        node *nd = &nodes[i];
        if (!nd->bound)
            continue;
        collect(i);
        struct raft *r = raft_fixture_get(f, i);
        raft_index ci = raft_commit_index(r);
        cr_assert_geq(ci, nd->commit_max, "server %u: commit index went back", i);
        nd->commit_max = ci;
        cr_assert_leq(raft_last_applied(r), ci, "server %u applied past its commit index", i);
    }
}

/* the answer of server i for raft index idx, or NULL */
static fsm_done *answer(unsigned i, raft_index idx)
{
    for (fsm_done *d = nodes[i].res; d; d = d->next)
        if (d->index == idx)
            return d;
    return NULL;
}

static fsm_done *last_answer(unsigned i)
{
    fsm_done *d = nodes[i].res;
    while (d && d->next)
        d = d->next;
    return d;
}

/* ---- the snapshot install hook ---- */

/* Replaces the replicated state of the target's store with the source's
 * (the server the descriptor names), in one write transaction. */
static int install_hook(void *ctx, const uint8_t *desc, size_t len)
{
    node *dst = ctx, *src;
    char addr[WIRE_MAX_ADDR + 1];
    uint64_t index;
    raft_id source;
    store_txn r, w;
    int rc = 0;

    if (fsm_snap_parse(desc, len, &index, &source, addr))
        return CORE_EINVAL;
    if (source == 0 || source > n_nodes || &nodes[source - 1] == dst)
        return CORE_EINVAL;
    src = &nodes[source - 1];
    if (store_begin(src->st, 0, &r))
        return CORE_EIO;
    if (store_meta_u64(&r, "raft_applied") < index || store_begin(dst->st, 1, &w)) {
        store_abort(&r);
        return CORE_EIO;
    }
    for (int db = 0; db < DB__COUNT && !rc; db++) {
        MDB_dbi sd = store_dbi(src->st, db), dd = store_dbi(dst->st, db);
        MDB_cursor *c;
        MDB_val k, v;
        int e;
        if (db == DB_LOG || db == DB_RAFT)
            continue;
        if (db == DB_META) { /* keep the node-local keys */
            if (mdb_cursor_open(w.txn, dd, &c)) {
                rc = CORE_EIO;
                break;
            }
            for (e = mdb_cursor_get(c, &k, &v, MDB_FIRST); e == 0 && !rc;
                 e = mdb_cursor_get(c, &k, &v, MDB_NEXT))
                if (replicated(db, &k) && mdb_cursor_del(c, 0))
                    rc = CORE_EIO;
            mdb_cursor_close(c);
        } else if (mdb_drop(w.txn, dd, 0)) {
            rc = CORE_EIO;
        }
        if (rc || mdb_cursor_open(r.txn, sd, &c)) {
            rc = CORE_EIO;
            break;
        }
        for (e = mdb_cursor_get(c, &k, &v, MDB_FIRST); e == 0 && !rc;
             e = mdb_cursor_get(c, &k, &v, MDB_NEXT))
            if (replicated(db, &k) && mdb_put(w.txn, dd, &k, &v, 0))
                rc = CORE_EIO;
        mdb_cursor_close(c);
    }
    store_abort(&r);
    if (rc) {
        store_abort(&w);
        return rc;
    }
    if (store_commit(&w))
        return CORE_EIO;
    dst->installs++;
    dst->install_source = source;
    return 0;
}

/* ---- the cluster ---- */

static void bind(unsigned i)
{
    node *nd = &nodes[i];
    fsm_init(&nd->fsm, &nd->rf, nd->st, NULL);
    nd->fsm.install = install_hook;
    nd->fsm.ctx = nd;
    cr_assert_eq(raft_fixture_grow(&fx, &nd->rf), 0);
    cr_assert_eq(raft_fixture_n(&fx), i + 1);
    nd->fsm.raft = raft_fixture_get(&fx, i);
    if (!getenv("CIRCA_RAFT_TRACE")) /* the fixture's tracer writes every event */
        nd->fsm.raft->tracer = NULL;
    nd->bound = 1;
    nd->commit_max = 0;
}

/* a fixture of n servers over stores 0..n-1 (opened when new) */
static void fixture_up(unsigned n)
{
    memset(&fx, 0, sizeof fx); /* raft_fixture_init leaves leader_id as it was */
    cr_assert_eq(raft_fixture_init(&fx), 0);
    fx_up = 1;
    for (unsigned i = 0; i < n; i++) {
        if (!nodes[i].st)
            node_open(i);
        bind(i);
    }
    raft_fixture_hook(&fx, on_step);
}

static void fixture_down(void)
{
    for (unsigned i = 0; i < n_nodes; i++)
        if (nodes[i].bound)
            collect(i);
    raft_fixture_close(&fx);
    fx_up = 0;
    for (unsigned i = 0; i < n_nodes; i++)
        if (nodes[i].bound) {
            collect(i);
            nodes[i].bound = 0;
        }
}

static void boot(unsigned n, unsigned voters, void (*tune)(struct raft *))
{
    struct raft_configuration conf;
    fixture_up(n);
    if (tune)
        for (unsigned i = 0; i < n; i++)
            tune(raft_fixture_get(&fx, i));
    cr_assert_eq(raft_fixture_configuration(&fx, voters, &conf), 0);
    cr_assert_eq(raft_fixture_bootstrap(&fx, &conf), 0);
    raft_configuration_close(&conf);
    cr_assert_eq(raft_fixture_start(&fx), 0);
}

static struct raft *R(unsigned i)
{
    return raft_fixture_get(&fx, i);
}

typedef struct term_wait {
    unsigned i;
    raft_term term;
} term_wait;

static bool term_above(struct raft_fixture *f, void *arg)
{
    const term_wait *t = arg;
    return raft_current_term(raft_fixture_get(f, t->i)) > t->term;
}

static bool leads(struct raft_fixture *f, void *arg)
{
    return raft_state(raft_fixture_get(f, *(unsigned *)arg)) == RAFT_LEADER;
}

/* Makes server i (a follower or a candidate) time out at its next tick and
 * restarts every other server's election timer at its longest, then steps
 * until i has started an election. Any timer schedule is a legal execution;
 * this one picks who runs. raft_fixture_start_elect cannot be used here: it
 * asserts that no server, dead ones too, is a leader or a candidate. */
static void campaign(unsigned i)
{
    raft_time now = raft_fixture_time(&fx);
    term_wait t = {i, raft_current_term(R(i))};
    int st = raft_state(R(i));

    cr_assert(st == RAFT_FOLLOWER || st == RAFT_CANDIDATE, "server %u is %s", i,
              raft_state_name(st));
    for (unsigned j = 0; j < raft_fixture_n(&fx); j++) {
        struct raft *r = R(j);
        unsigned to = j == i ? r->election_timeout : 2 * r->election_timeout;
        raft_fixture_set_randomized_election_timeout(&fx, j, to);
        if (raft_state(r) != RAFT_FOLLOWER && raft_state(r) != RAFT_CANDIDATE)
            continue;
        r->election_timer_start = j != i ? now : now > to ? now - to : 0;
        if (raft_state(r) == RAFT_FOLLOWER)
            r->follower_state.randomized_election_timeout = to;
        else
            r->candidate_state.randomized_election_timeout = to;
    }
    cr_assert(raft_fixture_step_until(&fx, term_above, &t, WAIT_MS),
              "server %u did not start an election", i);
}

/* campaigns until server i leads (a first try may meet votes already given
 * in its new term) */
static void elect(unsigned i)
{
    for (int k = 0; k < 4 && raft_state(R(i)) != RAFT_LEADER; k++) {
        campaign(i);
        raft_fixture_step_until(&fx, leads, &i, 300);
    }
    cr_assert_eq(raft_state(R(i)), RAFT_LEADER, "server %u did not become leader", i);
}

static void on_applied(struct raft_apply *req, int status, void *result)
{
    unsigned k = (unsigned)(req - areq);
    adone[k] = 1;
    astatus[k] = status;
}

static void on_changed(struct raft_change *req, int status)
{
    unsigned k = (unsigned)(req - creq);
    cdone[k] = 1;
    cstatus[k] = status;
}

/* proposes entry e (then freed) on server i; returns its raft index */
static raft_index submit(unsigned i, core_buf *e)
{
    struct raft_buffer buf = {.base = raft_malloc(e->len), .len = e->len};
    struct raft_apply *req;
    int rc;

    cr_assert_not_null(buf.base);
    cr_assert_lt(n_areq, NREQ);
    memcpy(buf.base, e->p, e->len);
    req = &areq[n_areq++];
    rc = raft_apply(R(i), req, &buf, 1, on_applied);
    if (rc)
        raft_free(buf.base);
    cr_assert_eq(rc, 0, "raft_apply on server %u: %s", i, raft_strerror(rc));
    cr_assert_lt(req->index, MAXIDX);
    free(plog[req->index].p);
    plog[req->index].term = raft_current_term(R(i));
    plog[req->index].p = e->p;
    plog[req->index].len = e->len;
    *e = (core_buf){0};
    return req->index;
}

typedef struct upto {
    unsigned mask;
    raft_index index;
} upto;

static bool applied_upto(struct raft_fixture *f, void *arg)
{
    upto *u = arg;
    for (unsigned i = 0; i < raft_fixture_n(f); i++)
        if ((u->mask & BIT(i)) && raft_last_applied(raft_fixture_get(f, i)) < u->index)
            return false;
    return true;
}

/* steps until every server in mask has applied index */
static void wait_applied(unsigned mask, raft_index index)
{
    upto u = {mask, index};
    cr_assert(raft_fixture_step_until(&fx, applied_upto, &u, WAIT_MS),
              "servers %#x did not apply index %llu", mask, (unsigned long long)index);
}

typedef struct match {
    unsigned leader;
    raft_id id;
    raft_index index;
} match;

static bool matched(struct raft_fixture *f, void *arg)
{
    match *m = arg;
    raft_index idx = 0;
    struct raft *r = raft_fixture_get(f, m->leader);
    return raft_state(r) == RAFT_LEADER && raft_match_index(r, m->id, &idx) == 0 && idx >= m->index;
}

/* steps until leader knows that server id has the log up to index */
static void wait_match(unsigned leader, unsigned i, raft_index index)
{
    match m = {leader, R(i)->id, index};
    cr_assert(raft_fixture_step_until(&fx, matched, &m, WAIT_MS),
              "server %u never acknowledged index %llu", i, (unsigned long long)index);
}

/* ---- commands ---- */

static cmd base(int type, unsigned actor, int role)
{
    cmd c;
    memset(&c, 0, sizeof c);
    c.type = (uint8_t)type;
    c.ts_ms = T0;
    if (actor)
        c.actor = ID(actor);
    c.actor_role = (uint8_t)role;
    return c;
}

static cmd c_bootstrap(void)
{
    cmd c = base(CMD_BOOTSTRAP, 0, ROLE_SERVICE);
    memset(c.u.bootstrap.key, 0x5a, 32);
    return c;
}

static cmd c_policy(void)
{
    cmd c = base(CMD_POLICY, 0, ROLE_SERVICE);
    c.u.policy = (core_policy){.loan_days = 14,
                               .max_renewals = 2,
                               .max_loans = 3,
                               .max_loans_premium = 5,
                               .pickup_days = 3};
    return c;
}

/* email: a string that outlives the encoding (a literal) */
static cmd c_user(unsigned id, const char *email)
{
    cmd c = base(CMD_USER_CREATE, 0, ROLE_SERVICE);
    c.u.user_create.id = ID(id);
    c.u.user_create.email = (core_str){email, (uint32_t)strlen(email)};
    c.u.user_create.name = (core_str){"Some Name", 9};
    c.u.user_create.role = ROLE_MEMBER;
    c.u.user_create.plan = PLAN_STANDARD;
    c.u.user_create.iterations = 1000;
    return c;
}

static cmd c_res(unsigned id, const char *title, uint32_t copies)
{
    cmd c = base(CMD_RES_PUT, LIB, ROLE_LIBRARIAN);
    c.u.res_put.id = ID(id);
    c.u.res_put.mode = RES_CREATE;
    c.u.res_put.type = RTYPE_FICTION;
    c.u.res_put.copies = copies;
    c.u.res_put.title = (core_str){title, (uint32_t)strlen(title)};
    c.u.res_put.n_authors = 1;
    c.u.res_put.authors[0] = (core_str){"An Author", 9};
    return c;
}

static cmd c_checkout(unsigned loan, unsigned user, unsigned rid)
{
    cmd c = base(CMD_LOAN_CHECKOUT, user, ROLE_MEMBER);
    c.u.place.id = ID(loan);
    c.u.place.user = ID(user);
    c.u.place.resource = ID(rid);
    return c;
}

static cmd c_return(unsigned loan, unsigned user)
{
    cmd c = base(CMD_LOAN_RETURN, user, ROLE_MEMBER);
    c.u.target.id = ID(loan);
    return c;
}

static void add(core_buf *e, cmd c)
{
    core_buf enc = {0};
    cr_assert_eq(cmd_encode(&c, &enc), 0);
    cr_assert_eq(fsm_entry_add(e, enc.p, enc.len), 0);
    core_buf_free(&enc);
}

static raft_index submit1(unsigned i, cmd c)
{
    core_buf e = {0};
    add(&e, c);
    return submit(i, &e);
}

/* the string field k of an answer's JSON body */
static void expect_field(const apply_result *r, const char *k, const char *want)
{
    json_error_t je;
    json_t *j = json_loadb(r->body, r->body_len, 0, &je);
    cr_assert_not_null(j, "answer is not JSON: %.*s", (int)r->body_len, r->body);
    const char *s = json_string_value(json_object_get(j, k));
    cr_assert(s && strcmp(s, want) == 0, "field %s is %s, want %s", k, s ? s : "(none)", want);
    json_decref(j);
}

static int body_has(const apply_result *r, const char *needle)
{
    return r->body && memmem(r->body, r->body_len, needle, strlen(needle)) != NULL;
}

/* ---- 1. replicas agree, answers come in order ---- */

Test(raft, replicas_identical_and_answers_in_order)
{
    static const int counts[] = {2, 3, 1, 2, 2};
    static const int status[] = {200, 200, 201, 201, 201, 201, 409, 201, 200, 201};
    raft_index idx[5];
    core_buf e = {0};

    boot(3, 3, NULL);
    raft_fixture_elect(&fx, 0);

    add(&e, c_bootstrap());
    add(&e, c_policy());
    idx[0] = submit(0, &e);
    add(&e, c_user(1, "user1@example.org"));
    add(&e, c_user(2, "user2@example.org"));
    add(&e, c_res(10, "A Title", 2));
    idx[1] = submit(0, &e);
    idx[2] = submit1(0, c_checkout(100, 1, 10));
    add(&e, c_user(3, "USER1@example.org")); /* the email is taken: 409 */
    add(&e, c_checkout(101, 2, 10));
    idx[3] = submit(0, &e);
    add(&e, c_return(100, 1));
    add(&e, c_checkout(102, 1, 10));
    idx[4] = submit(0, &e);
    wait_applied(ALL(3), idx[4]);

    /* the leader's answers: entry by entry, command by command */
    fsm_done *d = nodes[0].res;
    unsigned k = 0;
    for (int en = 0; en < 5; en++, d = d->next) {
        cr_assert_not_null(d, "no answer for entry %d", en);
        cr_assert_eq(d->index, idx[en]);
        cr_assert_eq(d->n, (uint32_t)counts[en]);
        for (uint32_t c = 0; c < d->n; c++, k++) {
            cr_assert_eq(d->seq[c], k + 1, "entry %d command %u: seq %llu", en, c,
                         (unsigned long long)d->seq[c]);
            cr_assert_eq(d->res[c].status, status[k], "command %u: status %d, want %d: %.*s", k,
                         d->res[c].status, status[k], (int)d->res[c].body_len, d->res[c].body);
        }
    }
    cr_assert_null(d, "answers past the last entry");
    expect_field(&answer(0, idx[1])->res[0], "id", IDS(1));
    expect_field(&answer(0, idx[1])->res[0], "email", "user1@example.org");
    expect_field(&answer(0, idx[1])->res[2], "id", IDS(10));
    expect_field(&answer(0, idx[2])->res[0], "id", IDS(100));
    cr_assert(answer(0, idx[3])->res[0].problem);
    expect_field(&answer(0, idx[3])->res[1], "id", IDS(101));
    expect_field(&answer(0, idx[4])->res[1], "id", IDS(102));

    /* the followers answered alike (on_step compares) and hold the same state */
    for (unsigned i = 0; i < 3; i++) {
        cr_assert_eq(nodes[i].n_res, 5, "server %u has %u answers", i, nodes[i].n_res);
        cr_assert_eq(nodes[i].fsm.entries, 5);
        cr_assert_eq(meta(i, "applied"), 10);
        cr_assert_eq(meta(i, "raft_applied"), idx[4]);
    }
    expect_same(0, 1);
    expect_same(0, 2);
    for (unsigned r = 0; r < n_areq; r++)
        cr_assert(adone[r] && astatus[r] == 0, "request %u: done %d status %d", r, adone[r],
                  astatus[r]);
}

/* ---- 2. replayed entries are skipped ---- */

Test(raft, replayed_entries_are_skipped)
{
    core_buf e = {0}, before[3] = {{0}};
    raft_index last;
    raft_term term;

    boot(3, 3, NULL);
    raft_fixture_elect(&fx, 0);
    add(&e, c_bootstrap());
    add(&e, c_policy());
    submit(0, &e);
    add(&e, c_user(1, "user1@example.org"));
    add(&e, c_res(10, "A Title", 2));
    submit(0, &e);
    submit1(0, c_checkout(100, 1, 10));
    last = submit1(0, c_return(100, 1));
    wait_applied(ALL(3), last);
    /* the log is the bootstrap configuration and our entries, nothing else */
    cr_assert_eq(raft_last_index(R(0)), last);
    cr_assert_eq(last, 5);
    term = raft_current_term(R(0));
    uint64_t applied = meta(0, "applied");
    unsigned answers = nodes[0].n_res;
    for (unsigned i = 0; i < 3; i++)
        dump(nodes[i].st, &before[i]);

    /* Restart the whole cluster on the same stores, each server's log as it
     * was persisted. The new leader commits a barrier of its own term, so every
     * server applies entries 2..last again: all of them are skipped. */
    fixture_down();
    fixture_up(3);
    struct raft_configuration conf;
    cr_assert_eq(raft_fixture_configuration(&fx, 3, &conf), 0);
    for (unsigned i = 0; i < 3; i++) {
        struct raft_entry ent = {.term = 1, .type = RAFT_CHANGE};
        raft_fixture_set_term(&fx, i, term);
        cr_assert_eq(raft_configuration_encode(&conf, &ent.buf), 0);
        raft_fixture_add_entry(&fx, i, &ent);
        for (raft_index x = 2; x <= last; x++) {
            ent = (struct raft_entry){.term = plog[x].term, .type = RAFT_COMMAND};
            ent.buf.len = plog[x].len;
            ent.buf.base = raft_malloc(plog[x].len);
            cr_assert_not_null(ent.buf.base);
            memcpy(ent.buf.base, plog[x].p, plog[x].len);
            raft_fixture_add_entry(&fx, i, &ent);
        }
    }
    raft_configuration_close(&conf);
    cr_assert_eq(raft_fixture_start(&fx), 0);
    raft_fixture_elect(&fx, 1);
    raft_index barrier = raft_last_index(R(1));
    cr_assert_gt(barrier, last);
    wait_applied(ALL(3), barrier);
    for (unsigned i = 0; i < 3; i++) {
        core_buf now = {0};
        char what[64];
        cr_assert_eq(nodes[i].fsm.entries, 0, "server %u re-applied %llu entries", i,
                     (unsigned long long)nodes[i].fsm.entries);
        cr_assert_eq(nodes[i].n_res, answers);
        dump(nodes[i].st, &now);
        snprintf(what, sizeof what, "server %u before and after the restart", i);
        expect_same_dump(&before[i], &now, what);
        core_buf_free(&now);
    }

    /* a new entry is applied once everywhere, at the next seq */
    raft_index idx = submit1(1, c_checkout(101, 1, 10));
    wait_applied(ALL(3), idx);
    for (unsigned i = 0; i < 3; i++) {
        fsm_done *d = last_answer(i);
        cr_assert_eq(nodes[i].fsm.entries, 1);
        cr_assert_eq(nodes[i].n_res, answers + 1);
        cr_assert_eq(d->index, idx);
        cr_assert_eq(d->seq[0], applied + 1);
        cr_assert_eq(d->res[0].status, 201);
        cr_assert_eq(meta(i, "raft_applied"), idx);
    }
    expect_same(0, 1);
    expect_same(0, 2);
    fixture_down();

    /* Directly: every old index, and the last one applied, through a fresh
     * fsm over server 0's store. */
    static struct raft fake;
    struct raft_fsm rf;
    fsm f;
    core_buf b0 = {0}, b1 = {0};
    dump(nodes[0].st, &b0);
    fsm_init(&f, &rf, nodes[0].st, &fake);
    for (raft_index x = 2; x <= idx; x++) {
        struct raft_buffer buf = {.base = plog[x].p, .len = plog[x].len};
        void *result = (void *)1;
        if (!plog[x].p)
            continue; /* the barrier */
        fake.last_applied = x - 1;
        cr_assert_eq(rf.apply(&rf, &buf, &result), 0, "index %llu", (unsigned long long)x);
        cr_assert_null(result);
    }
    cr_assert_eq(f.entries, 0);
    cr_assert_null(fsm_take(&f));
    dump(nodes[0].st, &b1);
    expect_same_dump(&b0, &b1, "server 0 before and after direct replays");

    /* and the next index is applied (the control) */
    core_buf ne = {0};
    add(&ne, c_return(101, 1));
    struct raft_buffer nb = {.base = ne.p, .len = ne.len};
    void *result;
    fake.last_applied = idx;
    cr_assert_eq(rf.apply(&rf, &nb, &result), 0);
    fsm_done *d = fsm_take(&f);
    cr_assert_not_null(d);
    cr_assert_eq(d->index, idx + 1);
    cr_assert_eq(d->seq[0], applied + 2);
    cr_assert_eq(d->res[0].status, 200);
    cr_assert_eq(meta(0, "raft_applied"), idx + 1);
    fsm_done_free(d);
    core_buf_free(&ne);
    core_buf_free(&b0);
    core_buf_free(&b1);
    for (unsigned i = 0; i < 3; i++)
        core_buf_free(&before[i]);
}

/* ---- 3. catching up by snapshot ---- */

static void tune_snap(struct raft *r)
{
    raft_set_snapshot_threshold(r, 4);
    raft_set_snapshot_trailing(r, 2);
    raft_set_pre_vote(r, true);
}

Test(raft, snapshot_catch_up)
{
    core_buf e = {0};
    raft_index idx;

    /* server 1 leads (so a descriptor naming server 1 is not a given) */
    boot(3, 3, tune_snap);
    raft_fixture_elect(&fx, 1);
    add(&e, c_bootstrap());
    add(&e, c_policy());
    submit(1, &e);
    add(&e, c_user(1, "user1@example.org"));
    add(&e, c_user(2, "user2@example.org"));
    idx = submit(1, &e);
    wait_applied(ALL(3), idx);

    /* server 0 is cut off while 16 more entries commit */
    for (unsigned j = 1; j < 3; j++) {
        raft_fixture_disconnect(&fx, 0, j);
        raft_fixture_disconnect(&fx, j, 0);
    }
    for (unsigned k = 0; k < 16; k++) {
        if (k % 4 == 3)
            idx = submit1(1, c_checkout(100 + k, 1 + k % 2, 20 + k - 1));
        else
            idx = submit1(1, c_res(20 + k, "Snapshotted", 1));
        raft_fixture_step_until_elapsed(&fx, 20);
    }
    wait_applied(BIT(1) | BIT(2), idx);
    cr_assert_lt(raft_last_applied(R(0)), idx);
    cr_assert_eq(raft_fixture_n_recv(&fx, 0, RAFT_INSTALL_SNAPSHOT), 0);

    for (unsigned j = 1; j < 3; j++) {
        raft_fixture_reconnect(&fx, 0, j);
        raft_fixture_reconnect(&fx, j, 0);
    }
    wait_applied(ALL(3), idx);
    cr_assert_geq(raft_fixture_n_recv(&fx, 0, RAFT_INSTALL_SNAPSHOT), 1);
    cr_assert_geq(nodes[0].installs, 1, "the install hook was not called");
    cr_assert_eq(nodes[0].install_source, R(1)->id);
    cr_assert_eq(nodes[1].installs + nodes[2].installs, 0);
    /* what the snapshot covered was not applied entry by entry */
    cr_assert_lt(nodes[0].fsm.entries, nodes[1].fsm.entries);
    cr_assert_eq(meta(0, "raft_applied"), idx);
    expect_same(1, 0);
    expect_same(1, 2);

    /* and it goes on applying like the others */
    idx = submit1(1, c_return(103, 2));
    wait_applied(ALL(3), idx);
    fsm_done *d = last_answer(0);
    cr_assert_eq(d->index, idx);
    cr_assert_eq(d->res[0].status, 200, "%.*s", (int)d->res[0].body_len, d->res[0].body);
    expect_same(1, 0);
}

/* ---- 4. configuration changes ---- */

enum { CH_ADD, CH_ASSIGN, CH_REMOVE };

static unsigned flow_id = 1000;

/* runs a configuration change on the leader while one command every 50 ms
 * keeps flowing; returns the index of the last command proposed */
static raft_index change(unsigned leader, int kind, unsigned i, int role)
{
    struct raft *r = R(leader), *t = R(i);
    unsigned k = n_creq++;
    raft_index idx = 0;
    int rc;

    if (kind == CH_ADD)
        rc = raft_add(r, &creq[k], t->id, t->address, on_changed);
    else if (kind == CH_ASSIGN)
        rc = raft_assign(r, &creq[k], t->id, role, on_changed);
    else
        rc = raft_remove(r, &creq[k], t->id, on_changed);
    cr_assert_eq(rc, 0, "change %d of server %u: %s", kind, i, raft_strerror(rc));
    for (int n = 0; !cdone[k] && n < 400; n++) {
        idx = submit1(leader, c_res(flow_id++, "Flowing", 1));
        raft_fixture_step_until_elapsed(&fx, 50);
    }
    cr_assert(cdone[k], "change %d of server %u did not finish", kind, i);
    cr_assert_eq(cstatus[k], 0, "change %d of server %u: %s", kind, i, raft_strerror(cstatus[k]));
    return idx;
}

static int role_of(unsigned leader, unsigned i)
{
    const struct raft_configuration *c = &R(leader)->configuration;
    for (unsigned k = 0; k < c->n; k++)
        if (c->servers[k].id == R(i)->id)
            return c->servers[k].role;
    return -1;
}

static void tune_prevote(struct raft *r)
{
    raft_set_pre_vote(r, true);
}

Test(raft, add_and_remove_servers)
{
    core_buf e = {0};
    raft_index idx;

    boot(3, 3, tune_prevote);
    raft_fixture_elect(&fx, 0);
    add(&e, c_bootstrap());
    add(&e, c_policy());
    add(&e, c_user(1, "user1@example.org"));
    add(&e, c_res(10, "A Title", 5));
    idx = submit(0, &e);
    wait_applied(ALL(3), idx);

    /* a fourth server starts empty and joins: spare, standby, then voter */
    node_open(3);
    bind(3);
    raft_set_pre_vote(R(3), true);
    cr_assert_eq(raft_start(R(3)), 0);
    change(0, CH_ADD, 3, 0);
    cr_assert_eq(role_of(0, 3), RAFT_SPARE);
    change(0, CH_ASSIGN, 3, RAFT_STANDBY);
    cr_assert_eq(role_of(0, 3), RAFT_STANDBY);
    idx = change(0, CH_ASSIGN, 3, RAFT_VOTER);
    cr_assert_eq(role_of(0, 3), RAFT_VOTER);
    idx = submit1(0, c_checkout(100, 1, 10));
    wait_applied(ALL(4), idx);
    cr_assert_eq(nodes[3].fsm.entries, nodes[0].fsm.entries);
    expect_same(0, 3);
    expect_same(0, 1);

    /* server 1 leaves; once that is committed it gets nothing more */
    change(0, CH_REMOVE, 1, 0);
    cr_assert_eq(role_of(0, 1), -1);
    raft_fixture_step_until_elapsed(&fx, 500);
    raft_index gone = raft_last_applied(R(1));
    uint64_t gone_meta = meta(1, "raft_applied");
    unsigned gone_res = nodes[1].n_res;
    for (unsigned k = 0; k < 5; k++) {
        idx = submit1(0, c_res(flow_id++, "After", 1));
        raft_fixture_step_until_elapsed(&fx, 30);
    }
    idx = submit1(0, c_return(100, 1));
    wait_applied(BIT(0) | BIT(2) | BIT(3), idx);
    raft_fixture_step_until_elapsed(&fx, 1000);
    cr_assert_eq(raft_last_applied(R(1)), gone);
    cr_assert_eq(meta(1, "raft_applied"), gone_meta);
    cr_assert_lt(gone_meta, idx);
    cr_assert_eq(nodes[1].n_res, gone_res);
    expect_same(0, 2);
    expect_same(0, 3);
    cr_assert_eq(meta(3, "raft_applied"), idx);
}

/* ---- 5. figure 8: an old-term entry on a majority is not committed ---- */

typedef struct has_index {
    unsigned i;
    raft_index index;
} has_index;

static bool log_reaches(struct raft_fixture *f, void *arg)
{
    const has_index *h = arg;
    return raft_last_index(raft_fixture_get(f, h->i)) >= h->index;
}

/* The scenario of figure 8 in the Raft paper, S1..S5 being servers 0..4.
 * libraft's followers refuse votes while they know a leader, so before each
 * election the servers that must vote are made to time out first (their
 * own candidacies fail). */
Test(raft, figure8_commit_rule)
{
    core_buf e = {0};
    raft_index p, x, y, z, b;
    raft_term t1, t5;

    /* S1 leads and a prefix is committed everywhere */
    boot(5, 5, NULL);
    raft_fixture_elect(&fx, 0);
    add(&e, c_bootstrap());
    add(&e, c_policy());
    add(&e, c_user(1, "user1@example.org"));
    p = submit(0, &e);
    wait_applied(ALL(5), p);

    /* (a) S1 replicates X to S2 only, then crashes */
    for (unsigned j = 2; j < 5; j++)
        raft_fixture_saturate(&fx, 0, j);
    x = submit1(0, c_res(50, "X of the first term", 1));
    cr_assert_eq(x, p + 1);
    has_index h = {1, x};
    cr_assert(raft_fixture_step_until(&fx, log_reaches, &h, WAIT_MS));
    raft_fixture_step_until_elapsed(&fx, 20);
    raft_fixture_kill(&fx, 0);
    for (unsigned j = 0; j < 5; j++)
        cr_assert_lt(raft_commit_index(R(j)), x);

    /* (b) S5 is elected by S3, S4 and itself, takes Y at the same index and
     * crashes before sending it */
    campaign(2);
    campaign(3);
    elect(4);
    for (unsigned j = 1; j < 4; j++)
        raft_fixture_saturate(&fx, 4, j);
    y = submit1(4, c_res(60, "Y of the second term", 1));
    cr_assert_eq(y, x, "Y went to index %llu", (unsigned long long)y);
    raft_fixture_step_until_elapsed(&fx, 20);
    raft_fixture_kill(&fx, 4);
    cr_assert_eq(raft_last_index(R(1)), x);
    cr_assert_eq(raft_last_index(R(2)), p);
    cr_assert_eq(raft_last_index(R(3)), p);

    /* (c) S1 comes back and is elected in a later term. Its first message to
     * each follower carries its term's barrier B after X, so it reaches S3
     * only: X is then on a majority (S1, S2, S3) but B is not, and X must not
     * count as committed. (libraft appends B before its first probe, so a
     * leader never learns of X on a majority without B riding along.) */
    raft_fixture_revive(&fx, 0);
    cr_assert(raft_fixture_step_until_state_is(&fx, 0, RAFT_FOLLOWER, WAIT_MS));
    elect(0);
    raft_fixture_saturate(&fx, 0, 1);
    raft_fixture_saturate(&fx, 0, 3);
    t1 = raft_current_term(R(0));
    cr_assert_gt(t1, raft_current_term(R(4)));
    b = raft_last_index(R(0));
    cr_assert_eq(b, x + 1, "S1's barrier is at %llu", (unsigned long long)b);
    wait_match(0, 2, b);
    raft_fixture_step_until_elapsed(&fx, 200);
    cr_assert_eq(raft_last_index(R(1)), x);
    cr_assert_eq(raft_last_index(R(2)), b);
    cr_assert_eq(raft_last_index(R(3)), p);
    for (unsigned j = 0; j < 5; j++) {
        cr_assert_lt(raft_commit_index(R(j)), x, "server %u counts X as committed", j);
        cr_assert_lt(raft_last_applied(R(j)), x);
        cr_assert_null(answer(j, x), "server %u applied X", j);
    }
    raft_fixture_kill(&fx, 0);

    /* (d) S5 comes back and wins a later term with S2 and S4 (its last term
     * is above theirs), then replaces X on S2, and X and B on S3. Had X been
     * committed in (c), a committed entry would be lost now. */
    raft_fixture_revive(&fx, 4);
    cr_assert(raft_fixture_step_until_state_is(&fx, 4, RAFT_FOLLOWER, WAIT_MS));
    if (raft_state(R(1)) == RAFT_FOLLOWER && R(1)->follower_state.current_leader.id)
        campaign(1); /* S2 must forget its leader to vote */
    elect(4);
    t5 = raft_current_term(R(4));
    cr_assert_gt(t5, t1);
    wait_applied(BIT(1) | BIT(2) | BIT(3) | BIT(4), x);
    cr_assert_eq(raft_last_index(R(2)), x + 1);

    /* (e) S1 returns, drops X and the barrier, and takes Y */
    raft_fixture_revive(&fx, 0);
    z = submit1(4, c_res(70, "Z of the last term", 1));
    wait_applied(ALL(5), z);

    for (unsigned j = 0; j < 5; j++) {
        fsm_done *d = answer(j, x);
        cr_assert_not_null(d, "server %u has no answer for index %llu", j, (unsigned long long)x);
        cr_assert(body_has(&d->res[0], "Y of the second term"), "server %u applied %.*s at %llu", j,
                  (int)d->res[0].body_len, d->res[0].body, (unsigned long long)x);
        for (fsm_done *a = nodes[j].res; a; a = a->next)
            for (uint32_t c = 0; c < a->n; c++)
                cr_assert(!body_has(&a->res[c], "X of the first term"), "server %u applied X", j);
        cr_assert_eq(meta(j, "raft_applied"), z);
    }
    for (unsigned j = 0; j < 4; j++)
        expect_same(4, j);
}

/* ---- 6. malformed entries and commands ---- */

static void put32(core_buf *b, uint32_t v)
{
    uint8_t h[4];
    store_be32(h, v);
    cr_assert_eq(core_buf_put(b, h, 4), 0);
}

Test(raft, malformed_entries)
{
    static struct raft fake;
    struct raft_fsm rf;
    fsm f;
    core_buf good = {0}, enc = {0}, bad, b0 = {0}, b1 = {0};
    void *result;

    node_open(0);
    fsm_init(&f, &rf, nodes[0].st, &fake);
    add(&good, c_bootstrap());
    struct raft_buffer gb = {.base = good.p, .len = good.len};
    fake.last_applied = 0;
    cr_assert_eq(rf.apply(&rf, &gb, &result), 0);
    fsm_done_free(fsm_take(&f));
    cr_assert_eq(meta(0, "raft_applied"), 1);
    dump(nodes[0].st, &b0);

    cmd c = c_user(1, "user1@example.org");
    cr_assert_eq(cmd_encode(&c, &enc), 0);
    struct {
        const char *what;
        int kind;
    } cases[] = {
        {"bad version byte", 0},      {"shorter than the header", 1},
        {"truncated length", 2},      {"command longer than the entry", 3},
        {"fewer commands than n", 4}, {"trailing bytes", 5},
        {"absurd command count", 6},
    };
    for (unsigned k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        bad = (core_buf){0};
        switch (cases[k].kind) {
        case 0:
            cr_assert_eq(fsm_entry_add(&bad, enc.p, enc.len), 0);
            bad.p[0] = FSM_ENTRY_VERSION + 1;
            break;
        case 1:
            cr_assert_eq(core_buf_put(&bad, "\x01\x00\x00", 3), 0);
            break;
        case 2: /* a good command first: it must not stick */
            cr_assert_eq(fsm_entry_add(&bad, enc.p, enc.len), 0);
            store_be32(bad.p + 1, 2);
            cr_assert_eq(core_buf_put(&bad, "\x00\x00", 2), 0);
            break;
        case 3:
            cr_assert_eq(fsm_entry_add(&bad, enc.p, enc.len), 0);
            store_be32(bad.p + 1, 2);
            put32(&bad, 1000);
            cr_assert_eq(core_buf_put(&bad, enc.p, 10), 0);
            break;
        case 4:
            cr_assert_eq(fsm_entry_add(&bad, enc.p, enc.len), 0);
            store_be32(bad.p + 1, 2);
            break;
        case 5:
            cr_assert_eq(fsm_entry_add(&bad, enc.p, enc.len), 0);
            cr_assert_eq(core_buf_put(&bad, "\x00", 1), 0);
            break;
        case 6:
            cr_assert_eq(fsm_entry_add(&bad, enc.p, enc.len), 0);
            store_be32(bad.p + 1, 0xffffffffu);
            break;
        }
        struct raft_buffer bb = {.base = bad.p, .len = bad.len};
        fake.last_applied = 1;
        cr_assert_neq(rf.apply(&rf, &bb, &result), 0, "%s: applied", cases[k].what);
        cr_assert_null(fsm_take(&f), "%s: an answer", cases[k].what);
        b1 = (core_buf){0};
        dump(nodes[0].st, &b1);
        expect_same_dump(&b0, &b1, cases[k].what);
        core_buf_free(&b1);
        core_buf_free(&bad);
    }
    cr_assert_eq(f.entries, 1);
    /* an empty batch is well formed */
    bad = (core_buf){0};
    cr_assert_eq(core_buf_put(&bad, "\x01\x00\x00\x00\x00", 5), 0);
    struct raft_buffer eb = {.base = bad.p, .len = bad.len};
    fake.last_applied = 1;
    cr_assert_eq(rf.apply(&rf, &eb, &result), 0);
    fsm_done *d = fsm_take(&f);
    cr_assert(d && d->index == 2 && d->n == 0);
    cr_assert_eq(meta(0, "raft_applied"), 2);
    cr_assert_eq(meta(0, "applied"), 1);
    fsm_done_free(d);
    core_buf_free(&bad);
    core_buf_free(&enc);
    core_buf_free(&good);
    core_buf_free(&b0);
    fsm_done_free(fsm_take(&f));
    store_close(nodes[0].st);
    nodes[0].st = NULL;
}

Test(raft, undecodable_command_answered_alike)
{
    static const uint8_t junk[] = {CMD_VERSION, CMD_USER_CREATE, 0xde, 0xad};
    core_buf e = {0};
    raft_index idx;

    boot(3, 3, NULL);
    raft_fixture_elect(&fx, 0);
    add(&e, c_bootstrap());
    add(&e, c_policy());
    idx = submit(0, &e);
    add(&e, c_user(1, "user1@example.org"));
    cr_assert_eq(fsm_entry_add(&e, junk, sizeof junk), 0);
    cr_assert_eq(fsm_entry_add(&e, junk, 0), 0);
    add(&e, c_res(10, "A Title", 1));
    idx = submit(0, &e);
    wait_applied(ALL(3), idx);
    for (unsigned i = 0; i < 3; i++) {
        fsm_done *d = answer(i, idx);
        cr_assert_not_null(d);
        cr_assert_eq(d->n, 4);
        cr_assert_eq(d->res[0].status, 201);
        cr_assert_eq(d->seq[0], 3);
        for (int k = 1; k <= 2; k++) {
            cr_assert_eq(d->res[k].status, 400);
            cr_assert(d->res[k].problem);
            cr_assert(body_has(&d->res[k], "/problems/bad-request"), "%.*s",
                      (int)d->res[k].body_len, d->res[k].body);
            cr_assert_eq(d->seq[k], 0);
        }
        cr_assert_eq(d->res[3].status, 201);
        cr_assert_eq(d->seq[3], 4);
        cr_assert_eq(meta(i, "applied"), 4);
        cr_assert_eq(meta(i, "raft_applied"), idx);
        if (i)
            cr_assert(same_done(answer(0, idx), d));
    }
    expect_same(0, 1);
    expect_same(0, 2);
}
