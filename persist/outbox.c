/*
 * outbox.c — the write-behind outbox (format in store.h).
 *
 * apply() does not know which tables PostgreSQL has: store_put/store_del
 * record the keys of rows it changes in the transaction's touch list, and
 * store_ob_put() turns that list into one entry holding each row's image
 * after the command. Sorting the list puts rows in a fixed order and drops
 * repeats, so replicas write identical entries.
 */
#include "persist/store.h"

#include <stdlib.h>
#include <string.h>

#define TOUCH_KEY_MAX 32

struct store_touched {
    uint8_t db;
    uint8_t key_len;
    uint8_t key[TOUCH_KEY_MAX];
};

static int tracked(int db)
{
    return db == DB_USERS || db == DB_APIKEYS || db == DB_RES || db == DB_LOANS || db == DB_HOLDS;
}

int store_touch_add(store_touch *tc, int db, const void *k, size_t kl)
{
    if (!tracked(db))
        return 0;
    if (kl > TOUCH_KEY_MAX)
        return CORE_ERANGE;
    if (tc->n == tc->cap) {
        int cap = tc->cap ? tc->cap * 2 : 8;
        struct store_touched *e = realloc(tc->e, (size_t)cap * sizeof *e);
        if (!e) {
            tc->failed = 1;
            return CORE_ENOMEM;
        }
        tc->e = e;
        tc->cap = cap;
    }
    tc->e[tc->n].db = (uint8_t)db;
    tc->e[tc->n].key_len = (uint8_t)kl;
    memcpy(tc->e[tc->n].key, k, kl);
    tc->n++;
    return 0;
}

void store_touch_free(store_touch *tc)
{
    free(tc->e);
    memset(tc, 0, sizeof *tc);
}

static int touched_cmp(const void *a, const void *b)
{
    const struct store_touched *x = a, *y = b;
    if (x->db != y->db)
        return x->db - y->db;
    if (x->key_len != y->key_len)
        return x->key_len - y->key_len;
    return memcmp(x->key, y->key, x->key_len);
}

static uint8_t *put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

int store_ob_put(store_txn *t, uint64_t index, int status, const uint8_t *enc, size_t enc_len,
                 store_touch *tc)
{
    size_t size = 1 + 2 + 4 + enc_len + 4, n = 0;
    uint8_t k[8], *buf, *p;
    MDB_val *vals = NULL;
    int rc;

    if (tc->failed)
        return CORE_ENOMEM;
    if (tc->n) {
        qsort(tc->e, (size_t)tc->n, sizeof *tc->e, touched_cmp);
        for (int i = 0; i < tc->n; i++)
            if (n == 0 || touched_cmp(&tc->e[n - 1], &tc->e[i]) != 0)
                tc->e[n++] = tc->e[i];
        tc->n = (int)n;
        if (!(vals = calloc(n, sizeof *vals)))
            return CORE_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        MDB_val key = {tc->e[i].key_len, tc->e[i].key};
        rc = mdb_get(t->txn, store_dbi(t->st, tc->e[i].db), &key, &vals[i]);
        if (rc == MDB_NOTFOUND)
            vals[i].mv_data = NULL;
        else if (rc) {
            free(vals);
            return CORE_EIO;
        }
        size += 1 + 1 + tc->e[i].key_len + 1 + (vals[i].mv_data ? 4 + vals[i].mv_size : 0);
    }
    if (!(buf = malloc(size))) {
        free(vals);
        return CORE_ENOMEM;
    }
    p = buf;
    *p++ = STORE_OB_VERSION;
    p = put16(p, (uint16_t)status);
    store_be32(p, (uint32_t)enc_len);
    memcpy(p + 4, enc, enc_len);
    p += 4 + enc_len;
    store_be32(p, (uint32_t)n);
    p += 4;
    for (size_t i = 0; i < n; i++) {
        *p++ = tc->e[i].db;
        *p++ = tc->e[i].key_len;
        memcpy(p, tc->e[i].key, tc->e[i].key_len);
        p += tc->e[i].key_len;
        *p++ = vals[i].mv_data != NULL;
        if (vals[i].mv_data) {
            store_be32(p, (uint32_t)vals[i].mv_size);
            memcpy(p + 4, vals[i].mv_data, vals[i].mv_size);
            p += 4 + vals[i].mv_size;
        }
    }
    free(vals);
    store_be64(k, index);
    rc = store_put(t, DB_OUTBOX, k, 8, buf, size);
    free(buf);
    return rc;
}

int store_ob_trim(store_txn *t, uint64_t upto, int max)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc;

    if (mdb_cursor_open(t->txn, store_dbi(t->st, DB_OUTBOX), &cur))
        return CORE_EIO;
    while (max-- > 0 && (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0 && k.mv_size == 8 &&
           store_rd64(k.mv_data) <= upto)
        if (mdb_cursor_del(cur, 0)) {
            mdb_cursor_close(cur);
            return CORE_EIO;
        }
    mdb_cursor_close(cur);
    /* remembered so a restart knows what PostgreSQL has before it can ask */
    if (upto != UINT64_MAX && upto > store_meta_u64(t, "ob_flushed"))
        return store_meta_put_u64(t, "ob_flushed", upto);
    return 0;
}

int store_ob_open(const void *data, size_t len, store_ob *o)
{
    const uint8_t *p = data, *end = p + len;
    if (len < 11 || p[0] != STORE_OB_VERSION)
        return CORE_EINVAL;
    o->status = p[1] << 8 | p[2];
    o->cmd_len = store_rd32(p + 3);
    p += 7;
    if (o->cmd_len > (size_t)(end - p) || (size_t)(end - p) - o->cmd_len < 4)
        return CORE_EINVAL;
    o->cmd = p;
    p += o->cmd_len;
    o->rows = o->left = store_rd32(p);
    o->p = p + 4;
    o->end = end;
    return 0;
}

int store_ob_next(store_ob *o, store_ob_row *r)
{
    const uint8_t *p = o->p;
    if (o->left == 0)
        return p == o->end ? 0 : CORE_EINVAL;
    if (o->end - p < 3)
        return CORE_EINVAL;
    r->db = p[0];
    r->key_len = p[1];
    if (!tracked(r->db) || r->key_len > TOUCH_KEY_MAX || (size_t)(o->end - p) < 3 + r->key_len)
        return CORE_EINVAL;
    r->key = p + 2;
    p += 2 + r->key_len;
    r->present = *p++;
    r->val = NULL;
    r->val_len = 0;
    if (r->present > 1)
        return CORE_EINVAL;
    if (r->present) {
        if (o->end - p < 4)
            return CORE_EINVAL;
        r->val_len = store_rd32(p);
        p += 4;
        if (r->val_len > (size_t)(o->end - p))
            return CORE_EINVAL;
        r->val = (const char *)p;
        p += r->val_len;
    }
    o->p = p;
    o->left--;
    return 1;
}
