/*
 * replication — the log and the writer actor.
 *
 * Today the log has one member: the writer actor appends each command to
 * DB_LOG and applies it in the same LMDB write transaction, many commands
 * per transaction (group commit), then a sync thread makes the batch
 * durable and answers every proposer through its inbox. Raft will take this actor's place behind
 * the same repl_submit() interface; apply() and the HTTP layer stay as they are.
 */
#ifndef CIRCA_REPL_H
#define CIRCA_REPL_H

#include "core/core.h"
#include "persist/store.h"
#include "persist/wb.h"

typedef struct repl repl;

/* A proposal. The writer fills res and index, then pushes the request to
 * reply_to; the proposer owns the memory throughout. */
typedef struct repl_req {
    core_msg link;
    core_inbox *reply_to;
    void *cookie;
    core_buf cmd; /* encoded command */
    apply_result res;
    uint64_t index;
    struct repl_req *next_in_batch; /* writer's use */
} repl_req;

#define REPL_HIST_BUCKETS 13 /* batch sizes 1, 2, 4, ... 4096 */

typedef struct repl_stats {
    uint64_t batches;
    uint64_t commands;
    uint64_t hist[REPL_HIST_BUCKETS]; /* cumulative counts per upper bound */
} repl_stats;

/* Bootstraps the signing key of a new data directory and sets the policy
 * from cfg when it differs. */
int repl_prepare(store *st, const core_config *cfg);
/* repl_prepare(), then starts the writer thread. w (NULL when write-behind
 * is off) hears which entries are durable and says which may be trimmed. */
int repl_start(store *st, const core_config *cfg, wb *w, repl **out);
void repl_submit(repl *r, repl_req *q);
/* Applies what is queued, stops the thread and frees r. */
void repl_stop(repl *r);
void repl_stats_get(repl *r, repl_stats *s);

/* Appends and applies one command in its own transaction, for tools that
 * write to a data directory (circa user add) and for start-up. */
int repl_apply_local(store *st, const cmd *c, apply_result *res);
/* Appends the encoded command at index (the next one) and applies it in
 * t, for `circa restore`; the command's outbox entry is dropped at once. */
int repl_restore_apply(store_txn *t, uint64_t index, const uint8_t *enc, size_t len);

#endif
