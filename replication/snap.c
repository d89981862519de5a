/*
 * snap.c — a node's state, sent in bounded chunks.
 *
 * A raft snapshot here is a descriptor (fsm.c): "the state of node S at raft
 * index I or later". A node that must install one fetches that state from
 * S (or, if S is gone, from the leader) over req/rep, one chunk per
 * request, so no message carries the whole database.
 *
 * Source: the first request opens a session (a random id, so no other node
 * or later run continues it), a read transaction that stays
 * open until the last chunk was sent or the session sat idle for
 * SNAP_IDLE_NS, so every chunk comes from the same point in time (LMDB
 * readers are cheap; a long one only delays page reuse). A chunk holds
 * rows of every replicated database (all but the raft log and raft state)
 * in (db, key) order from where the previous one ended, up to a byte
 * budget and at least one row.
 *
 * Installer: a chunk is parsed and checked whole before any row is
 * written, so a malformed one changes nothing. The first chunk of a session
 * empties the replicated databases and sets meta "installing"; the actor
 * clears it when the last chunk is in, in the same transaction as the
 * snapshot metadata. A node that stops in between finds "installing" and
 * refuses to start (its state is a mix).
 *
 *   request: u64 session (0: new), u64 index, u8 db, bytes key (after)
 *   reply:   u64 session, u64 raft_applied, u32 n,
 *            n x (u8 db, bytes key, bytes value), u8 done, u8 db, bytes key
 */
#include "replication/internal.h"

#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#define SNAP_SESSIONS 4
#define SNAP_IDLE_NS  (60LL * 1000000000)
#define SNAP_MAX_KEY  511 /* LMDB's key limit */
#define SNAP_MAX_ROWS 100000

typedef struct snap_session {
    uint64_t id;
    store_txn t;
    int64_t used_ns;
} snap_session;

struct snap_src {
    store *st;
    snap_session s[SNAP_SESSIONS];
};

int snap_db_copied(int db)
{
    return db >= 0 && db < DB__COUNT && db != DB_LOG && db != DB_RAFT;
}

static int next_db(int db)
{
    do
        db++;
    while (db < DB__COUNT && !snap_db_copied(db));
    return db;
}

snap_src *snap_src_new(store *st)
{
    snap_src *s = calloc(1, sizeof *s);
    if (s)
        s->st = st;
    return s;
}

static void session_close(snap_session *x)
{
    if (x->id) {
        store_abort(&x->t);
        x->id = 0;
    }
}

void snap_src_free(snap_src *s)
{
    if (!s)
        return;
    for (int i = 0; i < SNAP_SESSIONS; i++)
        session_close(&s->s[i]);
    free(s);
}

void snap_src_expire(snap_src *s, int64_t now_ns)
{
    for (int i = 0; s && i < SNAP_SESSIONS; i++)
        if (s->s[i].id && now_ns - s->s[i].used_ns > SNAP_IDLE_NS)
            session_close(&s->s[i]);
}

int snap_src_open(const snap_src *s)
{
    int n = 0;
    for (int i = 0; s && i < SNAP_SESSIONS; i++)
        n += s->s[i].id != 0;
    return n;
}

static snap_session *session_find(snap_src *s, uint64_t id)
{
    for (int i = 0; i < SNAP_SESSIONS; i++)
        if (s->s[i].id == id)
            return &s->s[i];
    return NULL;
}

int snap_src_chunk(snap_src *s, wire_rd *req, wire_wr *w, size_t budget, int64_t now_ns)
{
    uint64_t id = wire_get_u64(req), index = wire_get_u64(req), applied;
    int db = wire_get_u8(req);
    size_t klen, bytes = 0;
    const uint8_t *key = wire_get_bytes(req, SNAP_MAX_KEY, &klen);
    snap_session *x;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    uint32_t n = 0;
    size_t count_at;
    int rc, done = 0;

    if (wire_rd_done(req) || (klen && !key) || !snap_db_copied(db))
        return CORE_EINVAL;
    if (id == 0) {
        if (db != DB_META || klen)
            return CORE_EINVAL; /* a new session starts at the beginning */
        if (!(x = session_find(s, 0)))
            return CORE_EIO; /* every session is taken: the installer retries */
        if ((rc = store_begin(s->st, 0, &x->t)))
            return rc;
        if (store_meta_u64(&x->t, "raft_applied") < index ||
            store_get(&x->t, DB_META, "installing", 10, &v) == 0) {
            store_abort(&x->t);
            return CORE_ERANGE; /* this node does not have that state */
        }
        /* random: a restarted source, or another node, never continues
         * a session it did not open */
        do
            RAND_bytes((uint8_t *)&x->id, sizeof x->id);
        while (x->id == 0 || session_find(s, x->id) != x);
    } else if (!(x = session_find(s, id)))
        return CORE_ENOENT; /* expired: the installer starts over */
    x->used_ns = now_ns;
    applied = store_meta_u64(&x->t, "raft_applied");
    wire_put_u64(w, x->id);
    wire_put_u64(w, applied);
    count_at = w->b.len;
    wire_put_u32(w, 0);
    while (db < DB__COUNT && !w->failed) {
        int op;
        if (mdb_cursor_open(x->t.txn, store_dbi(s->st, db), &cur)) {
            rc = CORE_EIO;
            goto fail;
        }
        k.mv_data = (void *)key;
        k.mv_size = klen;
        op = klen ? MDB_SET_RANGE : MDB_FIRST;
        rc = mdb_cursor_get(cur, &k, &v, op);
        if (rc == 0 && klen && k.mv_size == klen && memcmp(k.mv_data, key, klen) == 0)
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT); /* after the last one sent */
        for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            if (n && (bytes >= budget || n == SNAP_MAX_ROWS))
                break;
            wire_put_u8(w, (uint8_t)db);
            wire_put_bytes(w, k.mv_data, k.mv_size);
            wire_put_bytes(w, v.mv_data, v.mv_size);
            bytes += k.mv_size + v.mv_size + 9;
            n++;
            key = k.mv_data;
            klen = k.mv_size;
        }
        if (rc != 0 && rc != MDB_NOTFOUND) {
            rc = CORE_EIO;
            goto fail;
        }
        if (rc == 0) { /* the budget ran out inside db: resume after key */
            wire_put_u8(w, 0);
            wire_put_u8(w, (uint8_t)db);
            wire_put_bytes(w, klen ? (const void *)key : "", klen);
            mdb_cursor_close(cur);
            break;
        }
        mdb_cursor_close(cur);
        cur = NULL;
        db = next_db(db);
        key = NULL;
        klen = 0;
        if (db == DB__COUNT) {
            done = 1;
            wire_put_u8(w, 1);
            wire_put_u8(w, DB_META);
            wire_put_bytes(w, "", 0);
        }
    }
    if (w->failed) {
        rc = w->failed;
        goto fail;
    }
    store_be32(w->b.p + count_at, n);
    if (done)
        session_close(x);
    return 0;
fail:
    if (cur)
        mdb_cursor_close(cur);
    session_close(x);
    return rc;
}

void snap_inst_init(snap_inst *in, uint64_t index)
{
    core_buf_free(&in->key);
    memset(in, 0, sizeof *in);
    in->index = index;
    in->db = DB_META;
}

void snap_inst_restart(snap_inst *in)
{
    uint64_t index = in->index, rows = in->rows, bytes = in->bytes;
    snap_inst_init(in, index);
    in->rows = rows;
    in->bytes = bytes;
}

int snap_inst_request(const snap_inst *in, wire_wr *w)
{
    wire_put_u64(w, in->session);
    wire_put_u64(w, in->index);
    wire_put_u8(w, (uint8_t)in->db);
    wire_put_bytes(w, in->key.len ? (const void *)in->key.p : "", in->key.len);
    return w->failed;
}

typedef struct row {
    int db;
    const uint8_t *k, *v;
    size_t kl, vl;
} row;

int snap_inst_apply(snap_inst *in, store_txn *t, wire_rd *rep)
{
    uint64_t session = wire_get_u64(rep), applied = wire_get_u64(rep);
    uint32_t n = wire_get_u32(rep);
    row *rows = NULL;
    size_t nkl;
    const uint8_t *nk;
    int done, ndb, rc = CORE_EINVAL, prev_db = -1;

    /* a session is one read transaction: same id, same point in time */
    if (rep->failed || session == 0 || (in->session && session != in->session) ||
        (in->session && applied != in->applied) || applied < in->index || n > SNAP_MAX_ROWS ||
        n > rep->left / 9)
        return CORE_EINVAL;
    if (n && !(rows = calloc(n, sizeof *rows)))
        return CORE_ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        rows[i].db = wire_get_u8(rep);
        rows[i].k = wire_get_bytes(rep, SNAP_MAX_KEY, &rows[i].kl);
        rows[i].v = wire_get_bytes(rep, WIRE_MAX_FRAME, &rows[i].vl);
        /* databases in order, keys non-empty */
        if (rep->failed || !snap_db_copied(rows[i].db) || rows[i].kl == 0 || rows[i].db < prev_db)
            goto out;
        prev_db = rows[i].db;
    }
    done = wire_get_u8(rep);
    ndb = wire_get_u8(rep);
    nk = wire_get_bytes(rep, SNAP_MAX_KEY, &nkl);
    if (wire_rd_done(rep) || done > 1 || !snap_db_copied(ndb) || (nkl && !nk) || (!done && n == 0))
        goto out;
    if (!in->cleared) {
        for (int db = 0; db < DB__COUNT; db++)
            if (snap_db_copied(db) && mdb_drop(t->txn, store_dbi(t->st, db), 0)) {
                rc = CORE_EIO;
                goto out;
            }
        if ((rc = store_put(t, DB_META, "installing", 10, "1", 1)))
            goto out;
        in->cleared = 1;
    }
    for (uint32_t i = 0; i < n; i++) {
        if ((rc = store_put(t, rows[i].db, rows[i].k, rows[i].kl, rows[i].v, rows[i].vl)))
            goto out;
        in->bytes += rows[i].kl + rows[i].vl;
    }
    in->rows += n;
    in->session = session;
    in->applied = applied;
    in->done = done;
    in->db = ndb;
    in->key.len = 0;
    rc = nkl && core_buf_put(&in->key, nk, nkl) ? CORE_ENOMEM : 0;
out:
    free(rows);
    return rc;
}
