/*
 * replication — the raft actor: one thread that runs libraft (0.22, the
 * cowsql fork) through its raft_io interface, with the log, term, vote and
 * snapshot metadata in LMDB and messages over nng. It is the only LMDB
 * writer of a running node: it proposes batches of commands (one raft
 * entry each), applies committed entries with apply() and answers the
 * proposers once the state they wrote is visible to readers. A follower
 * forwards proposals to the leader over nng req/rep and answers after it
 * applied the leader's result itself (read-your-writes on every node).
 * With no configuration the node bootstraps a one-voter cluster.
 */
#ifndef CIRCA_REPL_H
#define CIRCA_REPL_H

#include "core/core.h"
#include "persist/store.h"
#include "persist/wb.h"

typedef struct repl repl;

/* A proposal. The actor fills res and index, then pushes the request to
 * reply_to with the link type it was submitted with; the proposer owns the
 * memory throughout. */
typedef struct repl_req {
    core_msg link;
    core_inbox *reply_to;
    void *cookie;
    core_buf cmd; /* encoded command */
    apply_result res;
    uint64_t index;                 /* the command's sequence number */
    int op;                         /* repl_op(): the operation, 0 for a proposal */
    int reply_type;                 /* actor's use: link.type to answer with */
    uint64_t op_node;               /* repl_op(): the node it is about */
    struct repl_req *next_in_batch; /* actor's use */
} repl_req;

#define REPL_HIST_BUCKETS 13 /* batch sizes 1, 2, 4, ... 4096 */

typedef struct repl_stats {
    uint64_t batches;
    uint64_t commands;
    uint64_t hist[REPL_HIST_BUCKETS]; /* cumulative counts per upper bound */
    uint64_t term, commit_index, applied_index, last_index;
    int leader; /* 1 on the leader */
    int ready;
} repl_stats;

/* Opens the raft state of st (bootstrapping a one-voter cluster when the
 * data directory has none and cfg->raft.join is empty), listens on
 * cfg->raft.peer and starts the actor thread. w (NULL when write-behind is
 * off) runs only while this node leads. */
int repl_start(store *st, const core_config *cfg, wb *w, repl **out);
void repl_submit(repl *r, repl_req *q);
/* Answers what is queued, stops the thread and frees r. */
void repl_stop(repl *r);
void repl_stats_get(repl *r, repl_stats *s);
/* 1 when this node knows a leader and has applied what it committed */
int repl_ready(repl *r);

/* Cluster operations for /v1/cluster, answered like a proposal: the actor
 * fills q->res (status and a JSON or problem body) and pushes q to
 * q->reply_to. STATUS: this node's view (role, term, indexes, leader,
 * members; match index and lag on the leader). PROMOTE: makes node a
 * voter (forwarded to the leader; answered once the configuration holding
 * it is committed). SYNC (a strong read): answered 200 without a body once
 * this node applied what the leader had committed when asked, so a read
 * made after it sees every write acknowledged before. DRAIN: answered 202 at once; the node then
 * hands leadership to another voter, leaves the configuration and raises SIGTERM so the process
 * stops the way it always does. */
enum repl_op { REPL_OP_STATUS = 1, REPL_OP_PROMOTE, REPL_OP_DRAIN, REPL_OP_SYNC };
void repl_op(repl *r, repl_req *q, int op, uint64_t node);
/* 1 while this node leads */
int repl_leads(repl *r);
/* 1 while a drain runs: the node reports itself not ready */
int repl_draining(repl *r);
/* The fault switch of the tests (--fault-injection): an isolated node
 * drops every frame and request in and out, as if its network were cut. */
void repl_isolate(repl *r, int on);

/* 1 when a node has run on st (it has raft state): its state must only
 * change through the log */
int repl_has_log(store *st);
/* Outside raft, for tools and tests on a data directory no node serves:
 * bootstraps the signing key and sets the policy from cfg when it differs. */
int repl_prepare(store *st, const core_config *cfg);
/* Applies one command at the next sequence number in its own transaction,
 * outside raft: for tests and for `circa restore` (which seeds a new
 * cluster's first node). */
int repl_apply_local(store *st, const cmd *c, apply_result *res);
/* Applies the encoded command at seq (the next one) in t, for `circa
 * restore`; the command's outbox entry is dropped at once. */
int repl_restore_apply(store_txn *t, uint64_t seq, const uint8_t *enc, size_t len);

#endif
