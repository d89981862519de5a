/*
 * store.c — opening the environment, transactions and small helpers.
 * See store.h for the layout of the databases.
 */
#include "persist/store.h"

#include "core/core.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct store {
    MDB_env *env;
    int nosync;
    MDB_dbi dbi[DB__COUNT];
};

static const char *db_names[DB__COUNT] = {
    "meta",   "log",    "users",     "creds",    "emails",   "apikeys", "resources", "res_type",
    "loans",  "uloans", "uactive",   "copies",   "due",      "holds",   "rholds",    "uholds",
    "hready", "idem",   "idem_time", "stat_day", "stat_res", "outbox",  "raft",      "imports",
};

int store_open(const char *dir, uint64_t map_size, int flags, store **out)
{
    store *st;
    MDB_txn *txn = NULL;
    unsigned envflags = MDB_NOTLS;
    int rc;

    if (!(flags & STORE_RDONLY) && mkdir(dir, 0700) < 0 && errno != EEXIST) {
        core_log(LOG_ERROR, "cannot create data directory", "\"errno\":%d", errno);
        return CORE_EIO;
    }
    st = calloc(1, sizeof *st);
    if (!st)
        return CORE_ENOMEM;
    if (mdb_env_create(&st->env))
        goto fail;
    mdb_env_set_maxdbs(st->env, DB__COUNT + 4);
    mdb_env_set_maxreaders(st->env, 512);
    if (map_size)
        mdb_env_set_mapsize(st->env, (size_t)map_size);
    if (flags & STORE_RDONLY)
        envflags |= MDB_RDONLY;
    if (flags & STORE_NOSYNC)
        envflags |= MDB_NOSYNC;
    else if (!(flags & STORE_RDONLY))
        envflags |= MDB_NOMETASYNC;
    st->nosync = (flags & STORE_NOSYNC) != 0;
    rc = mdb_env_open(st->env, dir, envflags, 0600);
    if (rc) {
        char d[256];
        core_json_escape(mdb_strerror(rc), d, sizeof d);
        core_log(LOG_ERROR, "cannot open LMDB environment", "\"error\":\"%s\"", d);
        goto fail;
    }
    if (mdb_txn_begin(st->env, NULL, (flags & STORE_RDONLY) ? MDB_RDONLY : 0, &txn))
        goto fail;
    for (int i = 0; i < DB__COUNT; i++) {
        rc = mdb_dbi_open(txn, db_names[i], (flags & STORE_RDONLY) ? 0 : MDB_CREATE, &st->dbi[i]);
        if (rc)
            goto fail;
    }
    if (mdb_txn_commit(txn)) {
        txn = NULL;
        goto fail;
    }
    *out = st;
    return 0;
fail:
    if (txn)
        mdb_txn_abort(txn);
    if (st->env)
        mdb_env_close(st->env);
    free(st);
    return CORE_EIO;
}

void store_close(store *st)
{
    if (!st)
        return;
    mdb_env_close(st->env);
    free(st);
}

MDB_dbi store_dbi(const store *st, int db)
{
    return st->dbi[db];
}
MDB_env *store_env(const store *st)
{
    return st->env;
}

int store_begin(store *st, int write, store_txn *t)
{
    t->st = st;
    t->txn = NULL;
    t->touch = NULL;
    return mdb_txn_begin(st->env, NULL, write ? 0 : MDB_RDONLY, &t->txn) ? CORE_EIO : 0;
}

int store_commit(store_txn *t)
{
    int rc = mdb_txn_commit(t->txn);
    t->txn = NULL;
    return rc ? CORE_EIO : 0;
}

void store_abort(store_txn *t)
{
    if (t->txn)
        mdb_txn_abort(t->txn);
    t->txn = NULL;
}

int store_renew(store_txn *t)
{
    return mdb_txn_renew(t->txn) ? CORE_EIO : 0;
}
void store_reset(store_txn *t)
{
    mdb_txn_reset(t->txn);
}

int store_get(store_txn *t, int db, const void *k, size_t kl, MDB_val *v)
{
    MDB_val key = {kl, (void *)k};
    int rc = mdb_get(t->txn, t->st->dbi[db], &key, v);
    if (rc == MDB_NOTFOUND)
        return CORE_ENOENT;
    return rc ? CORE_EIO : 0;
}

int store_put(store_txn *t, int db, const void *k, size_t kl, const void *v, size_t vl)
{
    MDB_val key = {kl, (void *)k}, val = {vl, (void *)v};
    int rc = mdb_put(t->txn, t->st->dbi[db], &key, &val, 0);
    if (rc == MDB_MAP_FULL)
        return CORE_ERANGE;
    if (rc)
        return CORE_EIO;
    return t->touch ? store_touch_add(t->touch, db, k, kl) : 0;
}

int store_del(store_txn *t, int db, const void *k, size_t kl)
{
    MDB_val key = {kl, (void *)k};
    int rc = mdb_del(t->txn, t->st->dbi[db], &key, NULL);
    if (rc == MDB_NOTFOUND)
        return CORE_ENOENT;
    if (rc)
        return CORE_EIO;
    return t->touch ? store_touch_add(t->touch, db, k, kl) : 0;
}

uint64_t store_meta_u64(store_txn *t, const char *name)
{
    MDB_val v;
    if (store_get(t, DB_META, name, strlen(name), &v) || v.mv_size != 8)
        return 0;
    return store_rd64(v.mv_data);
}

int store_meta_put_u64(store_txn *t, const char *name, uint64_t v)
{
    uint8_t b[8];
    store_be64(b, v);
    return store_put(t, DB_META, name, strlen(name), b, 8);
}

int store_signing_key(store_txn *t, uint8_t key[32])
{
    MDB_val v;
    if (store_get(t, DB_META, "signing_key", 11, &v) || v.mv_size != 32)
        return CORE_ENOENT;
    memcpy(key, v.mv_data, 32);
    return 0;
}

int store_signing_key_put(store_txn *t, const uint8_t key[32])
{
    return store_put(t, DB_META, "signing_key", 11, key, 32);
}

int store_policy(store_txn *t, core_policy *p)
{
    MDB_val v;
    core_policy_default(p);
    if (store_get(t, DB_META, "policy", 6, &v) || v.mv_size != 20)
        return CORE_ENOENT;
    const uint8_t *b = v.mv_data;
    p->loan_days = store_rd32(b);
    p->max_renewals = store_rd32(b + 4);
    p->max_loans = store_rd32(b + 8);
    p->max_loans_premium = store_rd32(b + 12);
    p->pickup_days = store_rd32(b + 16);
    return 0;
}

int store_policy_put(store_txn *t, const core_policy *p)
{
    uint8_t b[20];
    store_be32(b, p->loan_days);
    store_be32(b + 4, p->max_renewals);
    store_be32(b + 8, p->max_loans);
    store_be32(b + 12, p->max_loans_premium);
    store_be32(b + 16, p->pickup_days);
    return store_put(t, DB_META, "policy", 6, b, 20);
}

int store_sync(store *st)
{
    if (st->nosync)
        return 0;
    return mdb_env_sync(st->env, 1) ? CORE_EIO : 0;
}

int store_info_get(store *st, store_info *info)
{
    MDB_envinfo ei;
    MDB_stat ms;
    store_txn t;

    if (mdb_env_info(st->env, &ei) || mdb_env_stat(st->env, &ms))
        return CORE_EIO;
    info->map_size = ei.me_mapsize;
    info->used_bytes = (uint64_t)(ei.me_last_pgno + 1) * ms.ms_psize;
    if (store_begin(st, 0, &t))
        return CORE_EIO;
    info->applied_index = store_meta_u64(&t, "applied");
    store_abort(&t);
    return 0;
}

int store_backup(store *st, const char *dir)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return CORE_EIO;
    return mdb_env_copy2(st->env, dir, MDB_CP_COMPACT) ? CORE_EIO : 0;
}

static int node_local_meta(const MDB_val *k)
{
    static const char *const names[] = {"ob_flushed", "raft_applied"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (k->mv_size == strlen(names[i]) && memcmp(k->mv_data, names[i], k->mv_size) == 0)
            return 1;
    return 0;
}

int store_digest(store_txn *t, uint8_t out[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    uint8_t len[8];
    int rc = CORE_EIO;

    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
        goto out;
    for (int db = 0; db < DB__COUNT; db++) {
        if (db == DB_LOG || db == DB_OUTBOX || db == DB_RAFT)
            continue;
        if (mdb_cursor_open(t->txn, store_dbi(t->st, db), &cur))
            goto out;
        store_be64(len, (uint64_t)db);
        EVP_DigestUpdate(md, len, 8);
        for (int op = MDB_FIRST; mdb_cursor_get(cur, &k, &v, op) == 0; op = MDB_NEXT) {
            if (db == DB_META && node_local_meta(&k))
                continue;
            store_be64(len, k.mv_size);
            EVP_DigestUpdate(md, len, 8);
            EVP_DigestUpdate(md, k.mv_data, k.mv_size);
            store_be64(len, v.mv_size);
            EVP_DigestUpdate(md, len, 8);
            EVP_DigestUpdate(md, v.mv_data, v.mv_size);
        }
        mdb_cursor_close(cur);
        cur = NULL;
    }
    rc = EVP_DigestFinal_ex(md, out, NULL) == 1 ? 0 : CORE_EIO;
out:
    if (cur)
        mdb_cursor_close(cur);
    EVP_MD_CTX_free(md);
    return rc;
}
