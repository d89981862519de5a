/*
 * persist — the LMDB store: replicated state, its indexes and the log.
 *
 * One environment holds named databases. Keys are binary (16-byte UUIDs,
 * big-endian integers) so B-tree order is the order we read in: a user's
 * loans are the range [user id, user id + 1) and, because loan ids are
 * UUIDv7, that range is in checkout order. Records that clients read are
 * stored as their exact JSON view, so a read copies bytes out of the map.
 *
 * Only one thread writes (the writer/raft actor, or a CLI command holding
 * LMDB's writer lock). Readers use MDB_NOTLS read transactions that each
 * HTTP thread renews per request.
 */
#ifndef CIRCA_STORE_H
#define CIRCA_STORE_H

#include "core/core.h"

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

enum store_db {
    DB_META,      /* name -> value (applied index, signing key, policy, counters) */
    DB_LOG,       /* raft index u64 BE -> term u64, type u8, entry payload (node-local) */
    DB_USERS,     /* user id -> user JSON view */
    DB_CREDS,     /* user id -> salt[16] hash[32] iterations u32 */
    DB_EMAILS,    /* lowercase email -> user id */
    DB_APIKEYS,   /* sha256(key) -> api key JSON view (no secret) */
    DB_RES,       /* resource id -> resource JSON view */
    DB_RES_TYPE,  /* type u8 + resource id -> "" */
    DB_LOANS,     /* loan id -> loan JSON view */
    DB_ULOANS,    /* user id + loan id -> status byte 'a' | 'r' */
    DB_UACTIVE,   /* user id + loan id -> resource id (active loans) */
    DB_COPIES,    /* resource id + copy u32 BE -> 'L'|'H' + loan or hold id */
    DB_DUE,       /* due unix s u64 BE + loan id -> "" (active loans) */
    DB_HOLDS,     /* hold id -> hold JSON view (position computed on read) */
    DB_RHOLDS,    /* resource id + seq u64 BE + hold id -> 'w' | 'r' */
    DB_UHOLDS,    /* user id + hold id -> resource id */
    DB_HREADY,    /* ready_until u64 BE + hold id -> "" */
    DB_IDEM,      /* actor id + key -> req_hash[32] ts u64 status u16 problem u8 body */
    DB_IDEM_TIME, /* ts u64 BE + actor id + key -> "" */
    DB_STAT_DAY,  /* "YYYY-MM-DD" -> checkouts u64, returns u64 */
    DB_STAT_RES,  /* resource id -> checkouts u64 */
    DB_OUTBOX,    /* log index u64 BE -> outbox entry (see store_ob_*) */
    DB_RAFT,      /* node-local raft state: term, vote, snapshot metadata, node id */
    DB_IMPORTS,   /* sha256 of an imported file -> its import record JSON */
    DB__COUNT
};

typedef struct store store;

/* Keys of the rows a command changed, for its outbox entry. */
typedef struct store_touch {
    struct store_touched *e;
    int n, cap;
    int failed; /* out of memory: the entry cannot be written */
} store_touch;

typedef struct store_txn {
    MDB_txn *txn;
    store *st;
    store_touch *touch; /* set by apply(): puts and deletes of rows are recorded */
} store_txn;

typedef struct store_info {
    uint64_t map_size;
    uint64_t used_bytes;
    uint64_t applied_index;
} store_info;

/* flags for store_open. Without STORE_NOSYNC the environment commits with
 * MDB_NOMETASYNC: a commit fsyncs its data pages, and the new meta page is
 * made durable by store_sync() (or the next commit's data sync). A writer
 * therefore acknowledges a transaction only after store_sync() returned,
 * and that sync can run on another thread while the next batch applies. */
enum { STORE_RDONLY = 1, STORE_NOSYNC = 2 };

int store_open(const char *dir, uint64_t map_size, int flags, store **out);
void store_close(store *st);
MDB_dbi store_dbi(const store *st, int db);
MDB_env *store_env(const store *st);

int store_begin(store *st, int write, store_txn *t);
int store_commit(store_txn *t);
void store_abort(store_txn *t);
/* read transactions reused by one thread: begin once, then reset/renew */
int store_renew(store_txn *t);
void store_reset(store_txn *t);

/* 0, CORE_ENOENT, CORE_ERANGE (map full) or CORE_EIO */
int store_get(store_txn *t, int db, const void *k, size_t kl, MDB_val *v);
int store_put(store_txn *t, int db, const void *k, size_t kl, const void *v, size_t vl);
int store_del(store_txn *t, int db, const void *k, size_t kl);

uint64_t store_meta_u64(store_txn *t, const char *name);

/* replicated cluster state kept in DB_META */
int store_signing_key(store_txn *t, uint8_t key[32]); /* 0 or CORE_ENOENT */
int store_signing_key_put(store_txn *t, const uint8_t key[32]);
/* 0 when a policy is stored; else CORE_ENOENT and *p is the default */
int store_policy(store_txn *t, core_policy *p);
int store_policy_put(store_txn *t, const core_policy *p);
int store_meta_put_u64(store_txn *t, const char *name, uint64_t v);

/*
 * The outbox: one entry per applied command, written by apply() in the
 * command's own transaction, keyed by its log index. An entry holds the
 * encoded command, its status, and the image after the command of every
 * row it changed in DB_USERS, DB_APIKEYS, DB_RES, DB_LOANS and DB_HOLDS
 * (or a deletion). Write-behind reads entries in index order; the writer
 * trims them once PostgreSQL has them.
 *
 *   u8 version=1, u16 status, u32 cmd_len, cmd, u32 rows,
 *   rows: u8 db, u8 key_len, key, u8 present, [u32 len, value]
 */
#define STORE_OB_VERSION 1

int store_touch_add(store_touch *tc, int db, const void *k, size_t kl);
void store_touch_free(store_touch *tc);
/* writes the entry for index from the current values of the touched keys */
int store_ob_put(store_txn *t, uint64_t index, int status, const uint8_t *enc, size_t enc_len,
                 store_touch *tc);
/* deletes entries with index <= upto, at most max of them, and records
 * upto (PostgreSQL has everything up to it) as meta ob_flushed */
int store_ob_trim(store_txn *t, uint64_t upto, int max);

typedef struct store_ob {
    int status;
    const uint8_t *cmd;
    size_t cmd_len;
    uint32_t rows;
    uint32_t left; /* rows not yet read */
    const uint8_t *p, *end;
} store_ob;

typedef struct store_ob_row {
    int db;
    const uint8_t *key;
    size_t key_len;
    int present; /* 0: the row was deleted */
    const char *val;
    size_t val_len;
} store_ob_row;

/* 0, or CORE_EINVAL for a malformed entry */
int store_ob_open(const void *data, size_t len, store_ob *o);
/* 1 with the next row, 0 at the end, CORE_EINVAL when malformed */
int store_ob_next(store_ob *o, store_ob_row *r);

/* makes every committed transaction durable (no-op with STORE_NOSYNC) */
int store_sync(store *st);
int store_info_get(store *st, store_info *info);
/* SHA-256 over the replicated state in t: every database apply() writes,
 * keys and values in order, without the node-local ones (raft log, raft
 * state, outbox, meta ob_flushed and raft_applied). Two nodes that applied
 * the same commands have the same digest. */
int store_digest(store_txn *t, uint8_t out[32]);
/* hot, compacted copy into dir (created if missing) */
int store_backup(store *st, const char *dir);

static inline void store_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}
static inline uint64_t store_rd64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}
static inline void store_be32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}
static inline uint32_t store_rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

#endif
