/*
 * wb — write-behind to PostgreSQL, the system of record.
 *
 * apply() leaves one outbox entry per command in LMDB (store.h). The
 * flusher, one thread of its own, copies entries that are durable in LMDB
 * to PostgreSQL in order, many commands per PostgreSQL transaction: the
 * audit rows, the changed rows as guarded upserts
 * (WHERE t.log_index < excluded.log_index) and the flush cursor, committed
 * together, so a retry or a crash in between applies nothing twice and
 * never goes backwards. The writer trims the outbox up to the flushed
 * index. The flusher reconnects with capped exponential backoff; while
 * PostgreSQL is away the outbox grows, and past the high-water mark the
 * HTTP layer refuses writes (wb_backlogged). Nothing here is on the read
 * path.
 */
#ifndef CIRCA_WB_H
#define CIRCA_WB_H

#include "core/core.h"
#include "persist/store.h"

#include <stdio.h>

typedef struct wb wb;

enum { WB_EPG = -30 /* PostgreSQL refused or is unreachable */, WB_EGAP = -31 };

typedef struct wb_migration {
    int version;
    const char *name;
    const char *sql;
} wb_migration;

extern const wb_migration wb_migrations[]; /* generated from schema/sql */
extern const int wb_nmigrations;

typedef struct wb_stats {
    int connected;
    uint64_t durable_index; /* newest entry the flusher may send */
    uint64_t flushed_index; /* newest entry PostgreSQL has */
    uint64_t lag_entries;
    double lag_seconds; /* age of the oldest entry not yet flushed */
    uint64_t rows_total, commands_total, batches_total, errors_total;
    uint64_t high_water;
} wb_stats;

/* 1 when dsn parses as a libpq connection string (checked without ever
 * echoing it: libpq's parse errors quote the DSN, password and all) */
int wb_dsn_valid(const char *dsn);

/* Starts the flusher when cfg->pg.dsn is set (*out NULL and a log line
 * when it is not). Returns without waiting for PostgreSQL. The flusher
 * idles (no connection) until wb_set_active: only the leader flushes. */
int wb_start(store *st, const core_config *cfg, wb **out);
/* the raft actor, when this node gains (1) or loses (0) leadership; the
 * compare-and-set on PostgreSQL's flush cursor keeps a deposed leader's
 * last batch from landing twice */
void wb_set_active(wb *w, int on);
/* on a follower: the leader says PostgreSQL has entries up to index (for
 * trimming the outbox and the high-water mark) */
void wb_note_flushed(wb *w, uint64_t index);
/* the writer: entries up to index are on disk */
void wb_durable(wb *w, uint64_t index);
/* entries the writer may trim: everything when write-behind is off */
uint64_t wb_trim_upto(wb *w);
/* 1 when the backlog reached the high-water mark: refuse writes */
int wb_backlogged(wb *w);
void wb_stats_get(wb *w, wb_stats *s);
/* after the writer stopped: flushes what is durable (for at most a few
 * seconds), trims the outbox up to what PostgreSQL has, stops, frees */
void wb_stop(wb *w);

/* applies the migrations PostgreSQL lacks; progress lines go to log */
int wb_migrate(const core_config *cfg, FILE *log, char *err, size_t errlen);

/* Restore: replays PostgreSQL's commands (1..flushed index) into an empty
 * store through fn, which appends and applies one command, then checks
 * every table row against the store. Progress goes to out (a bar on a
 * terminal, lines otherwise). */
typedef int (*wb_apply_fn)(void *arg, store_txn *t, uint64_t index, const uint8_t *enc, size_t len);
int wb_restore(const core_config *cfg, store *st, wb_apply_fn fn, void *arg, FILE *out, char *err,
               size_t errlen);

#endif
