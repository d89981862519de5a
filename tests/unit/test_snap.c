/*
 * Unit tests for replication/snap.c: a node's state sent in bounded chunks.
 * The protocol is driven in-process exactly as two nodes drive it: the
 * installer writes a request with snap_inst_request, the source reads it
 * and answers with snap_src_chunk, the installer applies the answer with
 * snap_inst_apply in a write transaction of its own store, until done.
 * Every answer is also parsed here, independently: rows only of copied
 * databases, in strictly ascending (db, key) order across a session, within
 * the byte budget (all rows but the last under it), and a resume position
 * that is the last row sent or the start of a later database.
 *
 * Covered: round trips with a 1 KiB budget (hundreds of chunks), a budget
 * of 0 (one row per chunk, so every key length up to 511 is a resume key)
 * and a large one (one chunk), onto a store with stale rows, the raft log
 * and raft state untouched; a session is one point in time, while a later
 * concurrent session sees later writes; an idle session expires and the
 * installer starts over, wiping what the first session wrote; the source's
 * refusals (index above its state, a store mid-install, a new session not
 * at the start, a fifth session, malformed and truncated requests); and
 * malformed answers, which change neither the store nor the installer,
 * and in particular do not empty the store as a first chunk would. The
 * last tests move an installer's session to a restarted source and to
 * another node, as the actor does when it falls back to the leader: what
 * it installs must still be the state of one point in time.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>

#include <ftw.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "persist/store.h"
#include "replication/internal.h"

/* snap.c's limits */
#define MAX_KEY  511
#define MAX_ROWS 100000
#define SESSIONS 4
#define IDLE_NS  (60LL * 1000000000)

#define MAP      (256ULL << 20)
#define APPLIED  1000 /* the sources' raft_applied */
#define INDEX    990  /* the snapshot index the installers ask for */
#define NROWS    3000 /* rows of a source */
#define KIB      1024
#define BIG      (64u << 20)
#define SEC      1000000000LL
#define OVERHEAD (8 + 8 + 4 + 1 + 1 + 4 + MAX_KEY) /* a reply without its rows */
#define ALL      ((1u << DB__COUNT) - 1)
#define LOCAL    (1u << DB_LOG | 1u << DB_RAFT)
#define COPIED   (ALL & ~LOCAL)

#define MAXST 6

static char dirs[MAXST][64];
static store *stores[MAXST];
static int n_stores;
static snap_src *srcs[MAXST];
static int n_srcs;
static snap_inst insts[8];
static int n_insts;

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

static void setup(void)
{
    core_log_set_level(LOG_ERROR + 1);
}

static void teardown(void)
{
    for (int i = 0; i < n_srcs; i++)
        snap_src_free(srcs[i]);
    for (int i = 0; i < n_insts; i++)
        core_buf_free(&insts[i].key);
    for (int i = 0; i < n_stores; i++) {
        store_close(stores[i]);
        nftw(dirs[i], rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    }
}

TestSuite(snap, .init = setup, .fini = teardown);

/* ---- stores ---- */

static store *open_store(void)
{
    int i = n_stores++;
    cr_assert_lt(i, MAXST);
    snprintf(dirs[i], sizeof dirs[i], "/tmp/circa-snap-XXXXXX");
    cr_assert_not_null(mkdtemp(dirs[i]));
    cr_assert_eq(store_open(dirs[i], MAP, STORE_NOSYNC, &stores[i]), 0);
    return stores[i];
}

/* a source over st, freed at teardown */
static snap_src *new_src(store *st)
{
    cr_assert_lt(n_srcs, MAXST);
    srcs[n_srcs] = snap_src_new(st);
    cr_assert_not_null(srcs[n_srcs]);
    return srcs[n_srcs++];
}

/* frees a source before teardown (a node that restarts) */
static void drop_src(snap_src *s)
{
    for (int i = 0; i < n_srcs; i++)
        if (srcs[i] == s) {
            snap_src_free(s);
            srcs[i] = srcs[--n_srcs];
            return;
        }
    cr_assert_fail("not a source of this test");
}

static int copied_db(unsigned i)
{
    static int list[DB__COUNT], n;
    if (!n)
        for (int db = 0; db < DB__COUNT; db++)
            if (snap_db_copied(db))
                list[n++] = db;
    return list[i % (unsigned)n];
}

/* the key of row i: 4..511 bytes that start with i (big-endian) */
static size_t row_key(unsigned i, uint8_t key[MAX_KEY])
{
    size_t kl = 4 + (i * 37) % (MAX_KEY - 3);
    store_be32(key, i);
    memset(key + 4, 'a' + i % 26, kl - 4);
    return kl;
}

/* n rows spread over every copied database, every 17th value several KiB,
 * others up to 200 bytes (some empty); tag changes the values */
static void fill_rows(store_txn *t, unsigned from, unsigned n, uint8_t tag)
{
    static uint8_t key[MAX_KEY], val[12 * KIB];
    for (unsigned i = from; i < from + n; i++) {
        size_t kl = row_key(i, key);
        size_t vl = i % 17 == 0 ? 2 * KIB + (i * 131) % (8 * KIB) : (i * 13) % 200;
        for (size_t j = 0; j < vl; j++)
            val[j] = (uint8_t)(j * 31 + i + tag);
        cr_assert_eq(store_put(t, copied_db(i), key, kl, val, vl), 0);
    }
}

static void put_str(store_txn *t, int db, const char *k, const char *v)
{
    cr_assert_eq(store_put(t, db, k, strlen(k), v, strlen(v)), 0);
}

/* a source's state: rows of fill_rows, short keys, meta raft_applied and
 * applied, and raft log and raft state rows that must not travel */
static void fill_source(store *st, unsigned n)
{
    store_txn t;
    char k[32];
    cr_assert_eq(store_begin(st, 1, &t), 0);
    fill_rows(&t, 0, n, 0);
    put_str(&t, DB_USERS, "a", "one byte key");
    put_str(&t, DB_EMAILS, "bb", "");
    put_str(&t, DB_OUTBOX, "ccc", "three");
    cr_assert_eq(store_meta_put_u64(&t, "raft_applied", APPLIED), 0);
    cr_assert_eq(store_meta_put_u64(&t, "applied", 900), 0);
    for (int i = 0; i < 20; i++) {
        snprintf(k, sizeof k, "src-log-%02d", i);
        put_str(&t, DB_LOG, k, "source log entry");
    }
    put_str(&t, DB_RAFT, "src-term", "source raft state");
    cr_assert_eq(store_commit(&t), 0);
}

/* an installer's stale state: rows with the source's first keys and other
 * values, rows the source does not have, and its own log and raft state */
static void fill_stale(store *st)
{
    store_txn t;
    char k[32];
    cr_assert_eq(store_begin(st, 1, &t), 0);
    for (unsigned i = 0; i < 60; i++) {
        snprintf(k, sizeof k, "stale-%02u", i);
        put_str(&t, copied_db(i), k, "stale value");
        uint8_t key[MAX_KEY];
        size_t kl = row_key(i, key);
        cr_assert_eq(store_put(&t, copied_db(i), key, kl, "old", 3), 0);
    }
    cr_assert_eq(store_meta_put_u64(&t, "raft_applied", 5), 0);
    for (int i = 0; i < 30; i++) {
        snprintf(k, sizeof k, "dst-log-%02d", i);
        put_str(&t, DB_LOG, k, "installer log entry");
    }
    put_str(&t, DB_RAFT, "term", "installer raft state");
    put_str(&t, DB_RAFT, "vote", "installer vote");
    cr_assert_eq(store_commit(&t), 0);
}

/* SHA-256 over every row of the databases in mask, with their lengths */
static void hash_txn(store_txn *t, unsigned mask, uint8_t out[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    cr_assert_not_null(md);
    cr_assert_eq(EVP_DigestInit_ex(md, EVP_sha256(), NULL), 1);
    for (int db = 0; db < DB__COUNT; db++) {
        MDB_cursor *c;
        MDB_val k, v;
        uint8_t h[9];
        int rc;
        if (!(mask & 1u << db))
            continue;
        cr_assert_eq(mdb_cursor_open(t->txn, store_dbi(t->st, db), &c), 0);
        for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            h[0] = (uint8_t)db;
            store_be32(h + 1, (uint32_t)k.mv_size);
            store_be32(h + 5, (uint32_t)v.mv_size);
            EVP_DigestUpdate(md, h, 9);
            EVP_DigestUpdate(md, k.mv_data, k.mv_size);
            EVP_DigestUpdate(md, v.mv_data, v.mv_size);
        }
        cr_assert_eq(rc, MDB_NOTFOUND);
        mdb_cursor_close(c);
    }
    cr_assert_eq(EVP_DigestFinal_ex(md, out, NULL), 1);
    EVP_MD_CTX_free(md);
}

/* what a node's state looks like: hash of the databases in mask and
 * store_digest */
typedef struct state {
    uint8_t hash[32], digest[32];
} state;

static state state_of(store *st, unsigned mask)
{
    store_txn t;
    state s;
    cr_assert_eq(store_begin(st, 0, &t), 0);
    hash_txn(&t, mask, s.hash);
    cr_assert_eq(store_digest(&t, s.digest), 0);
    store_abort(&t);
    return s;
}

static int same_state(state a, state b)
{
    return memcmp(a.hash, b.hash, 32) == 0 && memcmp(a.digest, b.digest, 32) == 0;
}

/* rows and key + value bytes in the copied databases */
static void count_rows(store *st, uint64_t *rows, uint64_t *bytes)
{
    store_txn t;
    *rows = *bytes = 0;
    cr_assert_eq(store_begin(st, 0, &t), 0);
    for (int db = 0; db < DB__COUNT; db++) {
        MDB_cursor *c;
        MDB_val k, v;
        if (!snap_db_copied(db))
            continue;
        cr_assert_eq(mdb_cursor_open(t.txn, store_dbi(st, db), &c), 0);
        for (int op = MDB_FIRST; mdb_cursor_get(c, &k, &v, op) == 0; op = MDB_NEXT) {
            ++*rows;
            *bytes += k.mv_size + v.mv_size;
        }
        mdb_cursor_close(c);
    }
    store_abort(&t);
}

static int has_row(store *st, int db, const void *k, size_t kl)
{
    store_txn t;
    MDB_val v;
    cr_assert_eq(store_begin(st, 0, &t), 0);
    int rc = store_get(&t, db, k, kl, &v);
    store_abort(&t);
    cr_assert(rc == 0 || rc == CORE_ENOENT);
    return rc == 0;
}

static int has_str(store *st, int db, const char *k)
{
    return has_row(st, db, k, strlen(k));
}

/* what the actor does when the last chunk is in: meta "installing" goes
 * (install_finish also records the snapshot in DB_RAFT and drops the raft
 * log: that is the actor's, not snap.c's) */
static void finish(store *st)
{
    store_txn t;
    cr_assert(has_str(st, DB_META, "installing"), "the first chunk sets meta \"installing\"");
    cr_assert_eq(store_begin(st, 1, &t), 0);
    cr_assert_eq(store_del(&t, DB_META, "installing", 10), 0);
    cr_assert_eq(store_commit(&t), 0);
}

/* ---- driving the protocol ---- */

/* one transfer as seen on the wire */
typedef struct xfer {
    size_t budget;
    unsigned chunks;
    uint64_t rows, bytes;
    size_t max_reply, max_resume_key;
    int last_db; /* the last row of the session: rows only go up */
    uint8_t last_key[MAX_KEY];
    size_t last_kl;
} xfer;

static void xfer_init(xfer *x, size_t budget)
{
    memset(x, 0, sizeof *x);
    x->budget = budget;
    x->last_db = -1;
}

/* a transfer that goes on from where in is */
static void xfer_from(xfer *x, size_t budget, const snap_inst *in)
{
    xfer_init(x, budget);
    x->last_db = in->db;
    memcpy(x->last_key, in->key.p, in->key.len);
    x->last_kl = in->key.len;
}

/* a new session: its rows start again from the beginning */
static void xfer_restart(xfer *x)
{
    x->last_db = -1;
    x->last_kl = 0;
}

static int key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al > bl) - (al < bl);
}

/* parses a reply of the source on its own and checks what the protocol
 * promises: see the top of the file */
static void check_reply(xfer *x, const snap_inst *in, const uint8_t *p, size_t len)
{
    wire_rd r = {.p = p, .left = len};
    uint64_t session = wire_get_u64(&r), applied = wire_get_u64(&r);
    uint32_t n = wire_get_u32(&r);
    size_t rowbytes = 0, last = 0, nkl;
    const uint8_t *nk;
    int done, ndb;

    cr_assert(session != 0 && applied >= in->index);
    cr_assert(in->session == 0 || session == in->session);
    for (uint32_t i = 0; i < n; i++) {
        int db = wire_get_u8(&r);
        size_t kl, vl;
        const uint8_t *k = wire_get_bytes(&r, MAX_KEY, &kl);
        wire_get_bytes(&r, WIRE_MAX_FRAME, &vl);
        cr_assert(!r.failed, "row %u of a reply is cut short", i);
        cr_assert(snap_db_copied(db), "a reply carries database %d", db);
        cr_assert_gt(kl, 0);
        cr_assert(db > x->last_db ||
                      (db == x->last_db && key_cmp(k, kl, x->last_key, x->last_kl) > 0),
                  "rows out of order or sent twice (db %d)", db);
        x->last_db = db;
        memcpy(x->last_key, k, kl);
        x->last_kl = kl;
        last = kl + vl + 9;
        rowbytes += last;
        x->rows++;
        x->bytes += kl + vl;
    }
    done = wire_get_u8(&r);
    ndb = wire_get_u8(&r);
    nk = wire_get_bytes(&r, MAX_KEY, &nkl);
    cr_assert_eq(wire_rd_done(&r), 0, "a reply does not parse");
    cr_assert(n < 2 || rowbytes - last < x->budget, "rows before the last reach the budget");
    cr_assert_leq(len, x->budget + last + OVERHEAD, "a reply of %zu bytes, budget %zu", len,
                  x->budget);
    if (done) {
        cr_assert(done == 1 && ndb == DB_META && nkl == 0);
    } else if (nkl) {
        cr_assert_gt(n, 0);
        cr_assert(ndb == x->last_db && nkl == x->last_kl && memcmp(nk, x->last_key, nkl) == 0,
                  "the resume key is not the last row sent");
    } else {
        cr_assert_gt(n, 0);
        cr_assert(snap_db_copied(ndb) && ndb > x->last_db,
                  "an empty resume key names a later database");
    }
    if (nkl > x->max_resume_key)
        x->max_resume_key = nkl;
    if (len > x->max_reply)
        x->max_reply = len;
    x->chunks++;
}

/* one round: the installer's request, the source's reply, applied to dst
 * in a write transaction that commits when it applied. 0, or the error of
 * snap_src_chunk or snap_inst_apply. */
static int step(snap_src *src, snap_inst *in, store *dst, xfer *x, int64_t now)
{
    wire_wr q = {0}, w = {0};
    store_txn t;
    int rc;

    cr_assert_eq(snap_inst_request(in, &q), 0);
    wire_rd rq = {.p = q.b.p, .left = q.b.len};
    rc = snap_src_chunk(src, &rq, &w, x->budget, now);
    if (rc == 0) {
        check_reply(x, in, w.b.p, w.b.len);
        wire_rd rp = {.p = w.b.p, .left = w.b.len};
        cr_assert_eq(store_begin(dst, 1, &t), 0);
        rc = snap_inst_apply(in, &t, &rp);
        if (rc == 0)
            cr_assert_eq(store_commit(&t), 0);
        else
            store_abort(&t);
    }
    core_buf_free(&q.b);
    core_buf_free(&w.b);
    return rc;
}

/* steps until the installer is done */
static void run(snap_src *src, snap_inst *in, store *dst, xfer *x, int64_t now)
{
    for (unsigned i = 0; !in->done; i++) {
        cr_assert_lt(i, 100000, "the transfer does not end");
        cr_assert_eq(step(src, in, dst, x, now), 0, "chunk %u", x->chunks);
    }
}

/* the same, starting over when the session is gone or a reply is
 * malformed, as the actor does */
static void run_restarting(snap_src *src, snap_inst *in, store *dst, xfer *x, int64_t now)
{
    for (unsigned i = 0; !in->done; i++) {
        cr_assert_lt(i, 100000, "the transfer does not end");
        int rc = step(src, in, dst, x, now);
        if (rc == CORE_ENOENT || rc == CORE_EINVAL) {
            snap_inst_restart(in);
            xfer_restart(x);
        } else {
            cr_assert_eq(rc, 0, "chunk %u", x->chunks);
        }
    }
}

/* an installer, freed at teardown */
static snap_inst *new_inst(uint64_t index)
{
    cr_assert_lt(n_insts, 8);
    snap_inst *in = &insts[n_insts++];
    snap_inst_init(in, index);
    return in;
}

/* dst now holds exactly what src held (copied databases, digest) while its
 * own raft log and raft state are what they were */
static void expect_installed(store *dst, state want, state local_before)
{
    finish(dst);
    cr_assert(same_state(state_of(dst, COPIED), want), "the installed state differs");
    cr_assert(memcmp(state_of(dst, LOCAL).hash, local_before.hash, 32) == 0,
              "the raft log or raft state changed");
}

/* ---- round trips ---- */

static void round_trip(size_t budget, xfer *x)
{
    store *src_st = open_store(), *dst = open_store();
    snap_src *src = new_src(src_st);
    uint64_t rows, bytes;

    fill_source(src_st, NROWS);
    fill_stale(dst);
    state want = state_of(src_st, COPIED), local = state_of(dst, LOCAL);
    count_rows(src_st, &rows, &bytes);
    cr_assert(has_str(dst, DB_META, "stale-00"));

    snap_inst *in = new_inst(INDEX);
    xfer_init(x, budget);
    cr_assert_eq(step(src, in, dst, x, SEC), 0);
    cr_assert(has_str(dst, DB_META, "installing"), "the first chunk sets meta \"installing\"");
    cr_assert_not(has_str(dst, DB_META, "stale-00"), "the first chunk empties the state");
    cr_assert(has_str(dst, DB_LOG, "dst-log-00"));
    cr_assert_eq(snap_src_open(src), in->done ? 0 : 1);
    run(src, in, dst, x, 2 * SEC);

    cr_assert_eq(snap_src_open(src), 0, "the last chunk closes the session");
    cr_assert_neq(in->session, 0);
    cr_assert_eq(in->applied, APPLIED);
    cr_assert_eq(in->rows, rows);
    cr_assert_eq(in->bytes, bytes);
    cr_assert_eq(x->rows, rows);
    cr_assert_eq(x->bytes, bytes);
    expect_installed(dst, want, local);
    cr_assert_not(has_str(dst, DB_LOG, "src-log-00"), "the source's raft log was copied");
    cr_assert_not(has_str(dst, DB_RAFT, "src-term"), "the source's raft state was copied");
    cr_assert(has_str(dst, DB_RAFT, "term") && has_str(dst, DB_LOG, "dst-log-29"));
    cr_assert(has_str(dst, DB_OUTBOX, "ccc"), "the outbox travels (store_digest skips it)");
}

Test(snap, round_trip_in_1kib_chunks)
{
    xfer x;
    round_trip(KIB, &x);
    cr_assert_geq(x.chunks, 500, "only %u chunks", x.chunks);
}

Test(snap, round_trip_in_one_chunk)
{
    xfer x;
    round_trip(BIG, &x);
    cr_assert_eq(x.chunks, 1);
}

Test(snap, round_trip_one_row_per_chunk)
{
    xfer x;
    round_trip(0, &x);
    cr_assert_eq(x.chunks, x.rows, "%u chunks for %llu rows", x.chunks, (unsigned long long)x.rows);
    cr_assert_eq(x.max_resume_key, MAX_KEY, "a 511-byte key resumes a session");
}

/* ---- a session is one point in time ---- */

/* later writes: rows changed, deleted and added in every copied database,
 * raft_applied moved on */
static void write_more(store *st, uint64_t applied)
{
    store_txn t;
    uint8_t key[4];
    cr_assert_eq(store_begin(st, 1, &t), 0);
    fill_rows(&t, 0, NROWS / 3, 9);
    for (unsigned i = NROWS / 3; i < NROWS / 2; i++) {
        store_be32(key, i);
        MDB_cursor *c;
        MDB_val k = {4, key}, v;
        cr_assert_eq(mdb_cursor_open(t.txn, store_dbi(st, copied_db(i)), &c), 0);
        cr_assert_eq(mdb_cursor_get(c, &k, &v, MDB_SET_RANGE), 0);
        cr_assert_eq(mdb_cursor_del(c, 0), 0);
        mdb_cursor_close(c);
    }
    fill_rows(&t, NROWS, 200, 3);
    cr_assert_eq(store_meta_put_u64(&t, "raft_applied", applied), 0);
    cr_assert_eq(store_commit(&t), 0);
}

Test(snap, a_session_reads_one_point_in_time)
{
    store *src_st = open_store(), *d1 = open_store(), *d2 = open_store();
    snap_src *src = new_src(src_st);
    xfer xa, xb;

    fill_source(src_st, NROWS);
    fill_stale(d1);
    fill_stale(d2);
    state before = state_of(src_st, COPIED), local = state_of(d1, LOCAL);
    snap_inst *a = new_inst(INDEX);
    xfer_init(&xa, KIB);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(step(src, a, d1, &xa, SEC), 0);

    write_more(src_st, 2000);
    state after = state_of(src_st, COPIED);
    cr_assert_not(same_state(before, after));

    snap_inst *b = new_inst(INDEX);
    xfer_init(&xb, KIB);
    cr_assert_eq(step(src, b, d2, &xb, SEC), 0);
    cr_assert_eq(snap_src_open(src), 2);
    cr_assert_neq(a->session, b->session);
    while (!a->done || !b->done) {
        if (!a->done)
            cr_assert_eq(step(src, a, d1, &xa, 2 * SEC), 0);
        if (!b->done)
            cr_assert_eq(step(src, b, d2, &xb, 2 * SEC), 0);
    }
    cr_assert_eq(snap_src_open(src), 0);
    cr_assert_eq(a->applied, APPLIED);
    cr_assert_eq(b->applied, 2000);
    expect_installed(d1, before, local);
    expect_installed(d2, after, local);
}

/* ---- an idle session expires: the installer starts over ---- */

Test(snap, an_expired_session_starts_over_and_wipes_the_first)
{
    store *src_st = open_store(), *dst = open_store();
    snap_src *src = new_src(src_st);
    xfer x;
    uint64_t rows, bytes, partial_rows, partial_bytes;
    uint8_t key0[4] = {0};
    int64_t now = 0;
    store_txn t;

    fill_source(src_st, NROWS);
    fill_stale(dst);
    state local = state_of(dst, LOCAL);
    snap_inst *in = new_inst(INDEX);
    xfer_init(&x, KIB);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(step(src, in, dst, &x, now += SEC), 0);
    cr_assert(has_row(dst, DB_META, key0, 4), "row 0 was not copied");

    snap_src_expire(src, now + IDLE_NS);
    cr_assert_eq(snap_src_open(src), 1, "idle for exactly the limit: still open");
    snap_src_expire(src, now + IDLE_NS + 1);
    cr_assert_eq(snap_src_open(src), 0);
    state mid = state_of(dst, ALL);
    cr_assert_eq(step(src, in, dst, &x, now + IDLE_NS + 2), CORE_ENOENT);
    cr_assert(same_state(state_of(dst, ALL), mid), "a refused request changed the installer");

    /* the source moves on: row 0, already installed, goes */
    write_more(src_st, 1500);
    cr_assert_eq(store_begin(src_st, 1, &t), 0);
    cr_assert_eq(store_del(&t, DB_META, key0, 4), 0);
    cr_assert_eq(store_commit(&t), 0);
    state want = state_of(src_st, COPIED);
    count_rows(src_st, &rows, &bytes);

    partial_rows = in->rows;
    partial_bytes = in->bytes;
    cr_assert_gt(partial_rows, 0);
    snap_inst_restart(in);
    cr_assert(in->session == 0 && !in->cleared && !in->done && in->db == DB_META &&
              in->key.len == 0);
    cr_assert_eq(in->index, INDEX);
    cr_assert_eq(in->rows, partial_rows, "the counters run across restarts");
    xfer_restart(&x);
    run(src, in, dst, &x, now + IDLE_NS + 3);

    cr_assert_eq(in->applied, 1500);
    cr_assert_eq(in->rows, partial_rows + rows);
    cr_assert_eq(in->bytes, partial_bytes + bytes);
    cr_assert_not(has_row(dst, DB_META, key0, 4), "a row of the first session stayed");
    expect_installed(dst, want, local);
}

/* ---- the source's refusals ---- */

static void put_req(wire_wr *w, uint64_t session, uint64_t index, int db, const void *k, size_t kl)
{
    wire_put_u64(w, session);
    wire_put_u64(w, index);
    wire_put_u8(w, (uint8_t)db);
    wire_put_bytes(w, kl ? k : "", kl);
    cr_assert_eq(w->failed, 0);
}

/* the source's answer to a request of len bytes; a refusal writes nothing
 * and leaves the sessions as they were (unless the session failed) */
static int ask(snap_src *src, const uint8_t *p, size_t len)
{
    wire_wr w = {0};
    wire_rd r = {.p = p, .left = len};
    int open = snap_src_open(src);
    int rc = snap_src_chunk(src, &r, &w, KIB, SEC);
    if (rc) {
        cr_assert_eq(w.b.len, 0, "a refusal wrote a reply");
        cr_assert_eq(snap_src_open(src), open, "a refusal opened or closed a session");
    }
    core_buf_free(&w.b);
    return rc;
}

static int ask_req(snap_src *src, uint64_t session, uint64_t index, int db, const void *k,
                   size_t kl)
{
    wire_wr w = {0};
    put_req(&w, session, index, db, k, kl);
    int rc = ask(src, w.b.p, w.b.len);
    core_buf_free(&w.b);
    return rc;
}

Test(snap, the_source_refuses)
{
    store *src_st = open_store(), *busy_st = open_store(), *dst = open_store();
    snap_src *src = new_src(src_st), *busy = new_src(busy_st);
    snap_inst *in[SESSIONS + 1];
    xfer x;
    store_txn t;
    char long_key[MAX_KEY + 1];

    fill_source(src_st, 300);
    fill_source(busy_st, 10);
    cr_assert_eq(store_begin(busy_st, 1, &t), 0);
    put_str(&t, DB_META, "installing", "1");
    cr_assert_eq(store_commit(&t), 0);
    memset(long_key, 'k', sizeof long_key);

    /* a state older than the index, or a mix */
    cr_assert_eq(ask_req(src, 0, APPLIED + 1, DB_META, NULL, 0), CORE_ERANGE);
    cr_assert_eq(ask_req(busy, 0, 1, DB_META, NULL, 0), CORE_ERANGE);
    /* a new session starts at the start */
    cr_assert_eq(ask_req(src, 0, INDEX, DB_USERS, NULL, 0), CORE_EINVAL);
    cr_assert_eq(ask_req(src, 0, INDEX, DB_META, "raft_applied", 12), CORE_EINVAL);
    /* databases that do not travel, keys over the limit, unknown sessions */
    for (int db = 0; db < 256; db++)
        if (!snap_db_copied(db))
            cr_assert_eq(ask_req(src, 1, INDEX, db, NULL, 0), CORE_EINVAL, "db %d", db);
    cr_assert_eq(ask_req(src, 0, INDEX, DB_META, long_key, MAX_KEY + 1), CORE_EINVAL);
    cr_assert_eq(ask_req(src, 1, INDEX, DB_USERS, long_key, MAX_KEY + 1), CORE_EINVAL);
    cr_assert_eq(ask_req(src, 12345, INDEX, DB_USERS, long_key, MAX_KEY), CORE_ENOENT);
    cr_assert_eq(snap_src_open(src), 0);

    /* four sessions at once, not five */
    xfer_init(&x, KIB);
    for (int i = 0; i <= SESSIONS; i++)
        in[i] = new_inst(APPLIED); /* raft_applied itself is enough */
    for (int i = 0; i < SESSIONS; i++) {
        cr_assert_eq(step(src, in[i], dst, &x, SEC), 0);
        xfer_restart(&x);
        cr_assert_not(in[i]->done);
    }
    cr_assert_eq(snap_src_open(src), SESSIONS);
    cr_assert_neq(step(src, in[SESSIONS], dst, &x, SEC), 0, "a fifth session opened");
    cr_assert_eq(snap_src_open(src), SESSIONS);

    /* every truncation of a valid request, and a trailing byte; the open
     * sessions are unaffected */
    for (int i = 0; i < 2; i++) {
        wire_wr w = {0};
        if (i == 0)
            put_req(&w, 0, INDEX, DB_META, NULL, 0);
        else
            put_req(&w, in[0]->session, INDEX, DB_USERS, long_key, MAX_KEY);
        for (size_t len = 0; len < w.b.len; len++)
            cr_assert_eq(ask(src, w.b.p, len), CORE_EINVAL, "request %d cut to %zu bytes", i, len);
        wire_put_u8(&w, 0);
        cr_assert_eq(ask(src, w.b.p, w.b.len), CORE_EINVAL, "a trailing byte");
        core_buf_free(&w.b);
    }
    cr_assert_eq(snap_src_open(src), SESSIONS);

    /* a session that ends makes room */
    run(src, in[0], dst, &x, SEC);
    cr_assert_eq(snap_src_open(src), SESSIONS - 1);
    xfer_restart(&x);
    cr_assert_eq(step(src, in[SESSIONS], dst, &x, SEC), 0);
    cr_assert_eq(snap_src_open(src), SESSIONS);
}

/* ---- malformed replies change nothing ---- */

typedef struct rrow {
    int db;
    const void *k;
    size_t kl;
    const void *v;
    size_t vl;
} rrow;

/* a reply declaring n rows, carrying the nrows of rows */
static void put_rep(wire_wr *w, uint64_t session, uint64_t applied, uint32_t n, const rrow *rows,
                    unsigned nrows, int done, int ndb, const void *nk, size_t nkl)
{
    wire_put_u64(w, session);
    wire_put_u64(w, applied);
    wire_put_u32(w, n);
    for (unsigned i = 0; i < nrows; i++) {
        wire_put_u8(w, (uint8_t)rows[i].db);
        wire_put_bytes(w, rows[i].kl ? rows[i].k : "", rows[i].kl);
        wire_put_bytes(w, rows[i].vl ? rows[i].v : "", rows[i].vl);
    }
    wire_put_u8(w, (uint8_t)done);
    wire_put_u8(w, (uint8_t)ndb);
    wire_put_bytes(w, nkl ? nk : "", nkl);
    cr_assert_eq(w->failed, 0);
}

static int same_inst(const snap_inst *a, const snap_inst *b)
{
    return a->index == b->index && a->session == b->session && a->applied == b->applied &&
           a->db == b->db && a->key.len == b->key.len &&
           (!a->key.len || memcmp(a->key.p, b->key.p, a->key.len) == 0) &&
           a->cleared == b->cleared && a->done == b->done && a->rows == b->rows &&
           a->bytes == b->bytes;
}

/* applies a reply in a transaction that is aborted: 0 when accepted;
 * otherwise asserts that it changed neither the transaction's view of dst
 * (every database, digest) nor the installer */
static int try_apply(snap_inst *in, store *dst, const state *before, const uint8_t *p, size_t len)
{
    snap_inst keep = *in;
    core_buf key = {0};
    store_txn t;
    state s;
    int rc;

    if (in->key.len)
        cr_assert_eq(core_buf_put(&key, in->key.p, in->key.len), 0);
    keep.key = key;
    wire_rd r = {.p = p, .left = len};
    cr_assert_eq(store_begin(dst, 1, &t), 0);
    rc = snap_inst_apply(in, &t, &r);
    if (rc) {
        hash_txn(&t, ALL, s.hash);
        cr_assert_eq(store_digest(&t, s.digest), 0);
        cr_assert(same_state(s, *before), "a refused reply (%d) changed the store", rc);
        cr_assert(same_inst(in, &keep), "a refused reply changed the installer");
    }
    store_abort(&t);
    core_buf_free(&key);
    return rc;
}

/* the reply is refused as malformed */
static void refused(snap_inst *in, store *dst, const state *before, const wire_wr *w,
                    const char *what)
{
    cr_assert_eq(try_apply(in, dst, before, w->b.p, w->b.len), CORE_EINVAL, "%s: not refused",
                 what);
}

/* a fresh installer accepts the reply (checked on a copy) */
static void accepted(const snap_inst *in, store *dst, const state *before, const wire_wr *w)
{
    snap_inst copy = *in;
    copy.key = (core_buf){0};
    if (in->key.len)
        cr_assert_eq(core_buf_put(&copy.key, in->key.p, in->key.len), 0);
    cr_assert_eq(try_apply(&copy, dst, before, w->b.p, w->b.len), 0);
    core_buf_free(&copy.key);
}

/* the hand-built malformed replies, against an installer at session
 * (0: a new one) */
static void malformed_replies(snap_inst *in, store *dst, const state *before, uint64_t session)
{
    static char big[MAX_KEY + 1];
    const rrow users = {DB_USERS, "u1", 2, "user", 4}, meta = {DB_META, "m", 1, "", 0};
    const rrow good[2] = {meta, users};
    uint64_t s = session ? session : 7;
    struct {
        const char *what;
        uint64_t session, applied;
        uint32_t n;
        rrow rows[2];
        unsigned nrows;
        int done, ndb;
        const void *nk;
        size_t nkl;
    } bad[] = {
        {"session 0", 0, APPLIED, 2, {meta, users}, 2, 0, DB_USERS, "u1", 2},
        {"another session",
         session ? session + 1 : 0,
         APPLIED,
         2,
         {meta, users},
         2,
         0,
         DB_USERS,
         "u1",
         2},
        {"applied below the index", s, INDEX - 1, 2, {meta, users}, 2, 0, DB_USERS, "u1", 2},
        {"the raft log", s, APPLIED, 1, {{DB_LOG, "l", 1, "x", 1}}, 1, 1, DB_META, NULL, 0},
        {"raft state", s, APPLIED, 1, {{DB_RAFT, "r", 1, "x", 1}}, 1, 1, DB_META, NULL, 0},
        {"no such database", s, APPLIED, 1, {{DB__COUNT, "r", 1, "x", 1}}, 1, 1, DB_META, NULL, 0},
        {"database 255", s, APPLIED, 1, {{255, "r", 1, "x", 1}}, 1, 1, DB_META, NULL, 0},
        {"an empty key",
         s,
         APPLIED,
         2,
         {meta, {DB_USERS, NULL, 0, "x", 1}},
         2,
         1,
         DB_META,
         NULL,
         0},
        {"a 512-byte key",
         s,
         APPLIED,
         1,
         {{DB_USERS, big, MAX_KEY + 1, "x", 1}},
         1,
         1,
         DB_META,
         NULL,
         0},
        {"databases out of order", s, APPLIED, 2, {users, meta}, 2, 0, DB_META, "m", 1},
        {"n one more", s, APPLIED, 3, {meta, users}, 2, 0, DB_USERS, "u1", 2},
        {"n two more", s, APPLIED, 4, {meta, users}, 2, 1, DB_META, NULL, 0},
        {"n one less", s, APPLIED, 1, {meta, users}, 2, 0, DB_USERS, "u1", 2},
        {"n over the limit", s, APPLIED, MAX_ROWS + 1, {meta, users}, 2, 0, DB_USERS, "u1", 2},
        {"n all ones", s, APPLIED, UINT32_MAX, {meta, users}, 2, 0, DB_USERS, "u1", 2},
        {"done 2", s, APPLIED, 2, {meta, users}, 2, 2, DB_USERS, "u1", 2},
        {"resume in the raft log", s, APPLIED, 2, {meta, users}, 2, 0, DB_LOG, "u1", 2},
        {"resume in raft state", s, APPLIED, 2, {meta, users}, 2, 0, DB_RAFT, "u1", 2},
        {"resume past the end", s, APPLIED, 2, {meta, users}, 2, 0, DB__COUNT, NULL, 0},
        {"a 512-byte resume key", s, APPLIED, 2, {meta, users}, 2, 0, DB_USERS, big, MAX_KEY + 1},
        {"not done and no rows", s, APPLIED, 0, {meta}, 0, 0, DB_USERS, "u1", 2},
    };
    wire_wr w = {0};

    memset(big, 'b', sizeof big);
    put_rep(&w, s, APPLIED, 2, good, 2, 0, DB_USERS, "u1", 2);
    accepted(in, dst, before, &w);
    wire_put_u8(&w, 0);
    refused(in, dst, before, &w, "a trailing byte");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        w.b.len = 0;
        put_rep(&w, bad[i].session, bad[i].applied, bad[i].n, bad[i].rows, bad[i].nrows,
                bad[i].done, bad[i].ndb, bad[i].nk, bad[i].nkl);
        refused(in, dst, before, &w, bad[i].what);
    }
    core_buf_free(&w.b);
}

/* every truncation of a reply and the reply with a byte more are refused;
 * the reply itself is accepted */
static void truncations(snap_inst *in, store *dst, const state *before, wire_wr *rep)
{
    accepted(in, dst, before, rep);
    for (size_t len = 0; len < rep->b.len; len++)
        cr_assert_eq(try_apply(in, dst, before, rep->b.p, len), CORE_EINVAL,
                     "a reply cut to %zu of %zu bytes", len, rep->b.len);
    wire_put_u8(rep, 1);
    cr_assert_eq(try_apply(in, dst, before, rep->b.p, rep->b.len), CORE_EINVAL, "a trailing byte");
    rep->b.len--;
}

/* the source's next reply for in */
static void next_reply(snap_src *src, const snap_inst *in, size_t budget, wire_wr *rep)
{
    wire_wr q = {0};
    cr_assert_eq(snap_inst_request(in, &q), 0);
    wire_rd r = {.p = q.b.p, .left = q.b.len};
    rep->b.len = 0;
    cr_assert_eq(snap_src_chunk(src, &r, rep, budget, SEC), 0);
    core_buf_free(&q.b);
}

static void apply_for_real(snap_inst *in, store *dst, const wire_wr *rep)
{
    store_txn t;
    wire_rd r = {.p = rep->b.p, .left = rep->b.len};
    cr_assert_eq(store_begin(dst, 1, &t), 0);
    cr_assert_eq(snap_inst_apply(in, &t, &r), 0);
    cr_assert_eq(store_commit(&t), 0);
}

Test(snap, malformed_replies_change_nothing)
{
    store *src_st = open_store(), *dst = open_store();
    snap_src *src = new_src(src_st);
    wire_wr rep = {0}, rep2 = {0};
    xfer x;

    fill_source(src_st, NROWS);
    fill_stale(dst);
    state want = state_of(src_st, COPIED), local = state_of(dst, LOCAL);
    state before = state_of(dst, ALL);

    /* a first chunk: nothing may empty the stale state */
    snap_inst *in = new_inst(INDEX);
    next_reply(src, in, 4 * KIB, &rep);
    truncations(in, dst, &before, &rep);
    malformed_replies(in, dst, &before, 0);
    cr_assert(same_state(state_of(dst, ALL), before));
    cr_assert(has_str(dst, DB_META, "stale-00") && !has_str(dst, DB_META, "installing"));

    /* a later chunk */
    apply_for_real(in, dst, &rep);
    cr_assert(in->session && in->cleared && !in->done && in->key.len > 0);
    before = state_of(dst, ALL);
    next_reply(src, in, 4 * KIB, &rep);
    truncations(in, dst, &before, &rep);
    malformed_replies(in, dst, &before, in->session);

    /* the first chunk of another session is not this session's */
    snap_inst *other = new_inst(INDEX);
    next_reply(src, other, 4 * KIB, &rep2);
    cr_assert_eq(try_apply(in, dst, &before, rep2.b.p, rep2.b.len), CORE_EINVAL);
    cr_assert(same_state(state_of(dst, ALL), before));

    /* and the transfer goes on */
    apply_for_real(in, dst, &rep);
    xfer_from(&x, 4 * KIB, in);
    run(src, in, dst, &x, SEC);
    expect_installed(dst, want, local);
    core_buf_free(&rep.b);
    core_buf_free(&rep2.b);
}

/* ---- a session continued elsewhere ---- */

/* Installer a took a few chunks from a source at the state `before`; its
 * next requests go to `next`, a source over another store or the same one
 * restarted, where installer b (another node) opened a session first and
 * the state is `after`. However the transfers end (installers start over
 * on CORE_ENOENT and CORE_EINVAL, as the actor does), each installed state
 * must be one point in time. */
static void continued_elsewhere(snap_src *next, store *a_dst, store *b_dst, snap_inst *a,
                                state before, state after, state local)
{
    snap_inst *b = new_inst(INDEX);
    xfer xa, xb;

    xfer_init(&xb, KIB);
    cr_assert_eq(step(next, b, b_dst, &xb, 2 * SEC), 0);
    xfer_from(&xa, KIB, a);
    run_restarting(next, a, a_dst, &xa, 2 * SEC);
    run_restarting(next, b, b_dst, &xb, 2 * SEC);
    expect_installed(b_dst, after, local);
    finish(a_dst);
    state got = state_of(a_dst, COPIED);
    cr_assert(same_state(got, after) || same_state(got, before),
              "installer a holds a mix: chunks of session %llu before the move came from the "
              "state at raft_applied %d, the rest from another source's state (raft_applied "
              "%llu) under the same session id",
              (unsigned long long)a->session, APPLIED, (unsigned long long)a->applied);
}

Test(snap, a_session_is_not_continued_by_a_restarted_source)
{
    store *src_st = open_store(), *a_dst = open_store(), *b_dst = open_store();
    snap_src *src = new_src(src_st);
    xfer x;

    fill_source(src_st, NROWS);
    fill_stale(a_dst);
    fill_stale(b_dst);
    state before = state_of(src_st, COPIED), local = state_of(a_dst, LOCAL);
    snap_inst *a = new_inst(INDEX);
    xfer_init(&x, KIB);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(step(src, a, a_dst, &x, SEC), 0);

    drop_src(src); /* the source node restarts, and applies more */
    write_more(src_st, 2000);
    continued_elsewhere(new_src(src_st), a_dst, b_dst, a, before, state_of(src_st, COPIED), local);
}

Test(snap, a_session_is_not_continued_by_another_node)
{
    store *s1 = open_store(), *s2 = open_store(), *a_dst = open_store(), *b_dst = open_store();
    snap_src *src1 = new_src(s1), *src2 = new_src(s2);
    xfer x;

    fill_source(s1, NROWS);
    fill_source(s2, NROWS);
    write_more(s2, 2000); /* the leader, further on */
    fill_stale(a_dst);
    fill_stale(b_dst);
    state before = state_of(s1, COPIED), local = state_of(a_dst, LOCAL);
    snap_inst *a = new_inst(INDEX);
    xfer_init(&x, KIB);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(step(src1, a, a_dst, &x, SEC), 0);

    /* the source stops answering: the installer falls back to the leader */
    continued_elsewhere(src2, a_dst, b_dst, a, before, state_of(s2, COPIED), local);
}
