/*
 * libFuzzer target for the snapshot chunks (replication/snap.c). The first
 * byte of the input chooses what the rest is.
 *
 * Bit 0 clear: a chunk request, answered by snap_src_chunk from a small
 * fixed source store in which session 1 is already open (bits 1-2 pick the
 * byte budget). Whatever the source answers must parse, carry only rows
 * the source holds, of copied databases, in (db, key) order, and be
 * accepted by a new installer. A refusal opens no session.
 *
 * Bit 0 set: a chunk reply, applied by snap_inst_apply in a write
 * transaction on a small destination store that is aborted afterwards
 * (bit 1: the installer is in the middle of session 1, else at the start).
 * Accepted: the installer counted exactly the n rows the reply declares,
 * the raft log and raft state kept their rows, a session's first chunk
 * left only its rows and meta "installing", a later one added at most n
 * rows. Refused: CORE_EINVAL, and neither the installer nor the entry
 * count of any database changed.
 *
 * Seeds: tests/fuzz/corpus/fuzz_snap/ (requests and replies made by
 * snap.c itself).
 */
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "persist/store.h"
#include "replication/internal.h"

#define APPLIED 50 /* the source's raft_applied */
#define INDEX   10 /* the installer's snapshot index */

static store *g_src, *g_dst;
static char g_src_dir[64], g_dst_dir[64];

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

static void cleanup(void)
{
    store_close(g_src);
    store_close(g_dst);
    nftw(g_src_dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    nftw(g_dst_dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

static void put(store_txn *t, int db, const char *k, size_t kl, const char *v, size_t vl)
{
    if (store_put(t, db, k, kl, v, vl))
        abort();
}

static store *open_filled(char *dir, size_t dirlen, const char *name, int source)
{
    static char big[2048];
    char k[16];
    store *st;
    store_txn t;

    snprintf(dir, dirlen, "/tmp/circa-fuzz-%s-XXXXXX", name);
    if (!mkdtemp(dir) || store_open(dir, 16 << 20, STORE_NOSYNC, &st) || store_begin(st, 1, &t))
        abort();
    memset(big, source ? 's' : 'd', sizeof big);
    for (int i = 0; i < 8; i++) {
        int n = snprintf(k, sizeof k, "%c%d", source ? 'u' : 'x', i);
        put(&t, DB_USERS, k, (size_t)n, big, (size_t)(i * 40));
        put(&t, DB_RES, k, (size_t)n, "resource", 8);
        put(&t, DB_LOG, k, (size_t)n, "log", 3);
    }
    put(&t, DB_EMAILS, big, 511, "", 0);
    put(&t, DB_LOANS, "loan", 4, big, sizeof big);
    put(&t, DB_OUTBOX, "\0\0\0\0\0\0\0\1", 8, "entry", 5);
    put(&t, DB_STAT_DAY, "2026-11-22", 10, "counts", 6);
    put(&t, DB_RAFT, "term", 4, "raft state", 10);
    if (store_meta_put_u64(&t, "raft_applied", source ? APPLIED : 3) ||
        store_meta_put_u64(&t, "applied", 40) || store_commit(&t))
        abort();
    return st;
}

static void init(void)
{
    core_log_set_level(LOG_ERROR + 1);
    g_src = open_filled(g_src_dir, sizeof g_src_dir, "snap-src", 1);
    g_dst = open_filled(g_dst_dir, sizeof g_dst_dir, "snap-dst", 0);
    atexit(cleanup);
}

static int key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al > bl) - (al < bl);
}

/* a reply of the source: well formed, rows of the source in order, and a new installer
 * takes it */
static void check_reply(const uint8_t *p, size_t len)
{
    wire_rd r = {.p = p, .left = len};
    uint64_t session = wire_get_u64(&r), applied = wire_get_u64(&r);
    uint32_t n = wire_get_u32(&r);
    const uint8_t *pk = NULL;
    size_t pkl = 0, kl, vl;
    int pdb = -1;
    store_txn t;
    snap_inst in = {0};

    if (session == 0 || applied != APPLIED || store_begin(g_src, 0, &t))
        abort();
    for (uint32_t i = 0; i < n; i++) {
        int db = wire_get_u8(&r);
        const uint8_t *k = wire_get_bytes(&r, 511, &kl), *v = wire_get_bytes(&r, len, &vl);
        MDB_val have;
        if (r.failed || !snap_db_copied(db) || !kl || (db == pdb && key_cmp(pk, pkl, k, kl) >= 0) ||
            db < pdb || store_get(&t, db, k, kl, &have) || have.mv_size != vl ||
            (vl && memcmp(have.mv_data, v, vl)))
            abort();
        pdb = db;
        pk = k;
        pkl = kl;
    }
    store_abort(&t);
    wire_get_u8(&r);
    wire_get_u8(&r);
    wire_get_bytes(&r, 511, &kl);
    if (wire_rd_done(&r))
        abort();

    snap_inst_init(&in, INDEX);
    r = (wire_rd){.p = p, .left = len};
    if (store_begin(g_dst, 1, &t) || snap_inst_apply(&in, &t, &r) || in.rows != n)
        abort();
    store_abort(&t);
    core_buf_free(&in.key);
}

static void request(const uint8_t *data, size_t size, size_t budget)
{
    static const uint8_t open1[] = {0, 0, 0, 0, 0, 0,       0, 0, 0, 0, 0,
                                    0, 0, 0, 0, 1, DB_META, 0, 0, 0, 0};
    snap_src *src = snap_src_new(g_src);
    wire_wr w = {0};
    wire_rd r = {.p = open1, .left = sizeof open1};
    int rc, open;

    if (!src || snap_src_chunk(src, &r, &w, 64, 1) || snap_src_open(src) != 1)
        abort();
    w.b.len = 0;
    r = (wire_rd){.p = data, .left = size};
    rc = snap_src_chunk(src, &r, &w, budget, 2);
    open = snap_src_open(src);
    if (rc == 0)
        check_reply(w.b.p, w.b.len);
    else if ((rc != CORE_EINVAL && rc != CORE_ENOENT && rc != CORE_ERANGE) || open > 1)
        abort();
    if (open > 2)
        abort();
    core_buf_free(&w.b);
    snap_src_free(src);
}

typedef struct counts {
    size_t n[DB__COUNT];
} counts;

static counts count(store_txn *t)
{
    counts c;
    for (int db = 0; db < DB__COUNT; db++) {
        MDB_stat ms;
        if (mdb_stat(t->txn, store_dbi(g_dst, db), &ms))
            abort();
        c.n[db] = ms.ms_entries;
    }
    return c;
}

static void reply(const uint8_t *data, size_t size, int mid)
{
    snap_inst in = {0}, keep;
    store_txn t;
    counts before, after;
    size_t had = 0, copied = 0;
    int rc;

    snap_inst_init(&in, INDEX);
    if (mid) {
        in.session = 1;
        in.applied = APPLIED;
        in.cleared = 1;
        in.db = DB_USERS;
        if (core_buf_put(&in.key, "u3", 2))
            abort();
    }
    keep = in;
    if (store_begin(g_dst, 1, &t))
        abort();
    before = count(&t);
    wire_rd r = {.p = data, .left = size};
    rc = snap_inst_apply(&in, &t, &r);
    after = count(&t);
    for (int db = 0; db < DB__COUNT; db++)
        if (snap_db_copied(db)) {
            had += before.n[db];
            copied += after.n[db];
        }
    if (rc == 0) {
        MDB_val v;
        uint32_t n = store_rd32(data + 16);
        if (in.rows != n || after.n[DB_LOG] != before.n[DB_LOG] ||
            after.n[DB_RAFT] != before.n[DB_RAFT] || !in.cleared || in.session == 0 ||
            (mid ? copied > had + n
                 : store_get(&t, DB_META, "installing", 10, &v) || copied > n + 1))
            abort();
    } else if (rc != CORE_EINVAL || memcmp(&before, &after, sizeof before) ||
               in.session != keep.session || in.applied != keep.applied || in.db != keep.db ||
               in.cleared != keep.cleared || in.done != keep.done || in.rows != keep.rows ||
               in.bytes != keep.bytes || in.key.len != keep.key.len ||
               (mid && memcmp(in.key.p, "u3", 2))) {
        abort();
    }
    store_abort(&t);
    core_buf_free(&in.key);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t budgets[4] = {0, 64, 1024, 1 << 20};

    if (!g_src)
        init();
    if (size < 1)
        return 0;
    if (data[0] & 1)
        reply(data + 1, size - 1, data[0] >> 1 & 1);
    else
        request(data + 1, size - 1, budgets[data[0] >> 1 & 3]);
    return 0;
}
