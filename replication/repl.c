/*
 * repl.c — the one-member log: a writer actor that group-commits.
 *
 * The thread sleeps on its inbox's eventfd (libevent). Each wake-up takes
 * every queued proposal (up to REPL_MAX_BATCH), opens one write
 * transaction, and for each: appends it to DB_LOG at the next index and
 * applies it. If a command fails on storage (a full map), the batch is
 * aborted and run again with a nested transaction per command, so the
 * failing command leaves neither its log entry nor half its effects and
 * the others still succeed; the common path pays for no nesting. One commit
 * fsyncs the batch's pages; the sync thread then fsyncs once more for the
 * meta page (MDB_NOMETASYNC, see store.h) and only then sends the answers,
 * so nothing is acknowledged before it is on disk, while the writer is
 * already applying the next batch: the two fsyncs of a batch overlap with
 * the work of the next. A timer proposes CMD_TICK so held copies expire
 * while the node is idle.
 */
#include "replication/repl.h"

#include "persist/wb.h"

#include <event2/event.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define REPL_MAX_BATCH 4096
#define LOG_KEEP       100000
#define TICK_S         30
#define OB_TRIM_MAX    20000 /* outbox entries deleted per trim pass */

struct repl {
    store *st;
    wb *wb;
    core_inbox *in;
    struct event_base *base;
    struct event *wake, *tick, *trim;
    _Atomic uint64_t committed; /* last index of the newest committed batch */
    pthread_t thread, syncer;
    /* committed batches waiting for the sync thread */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    repl_req *pending, **pending_tail;
    int sync_stop;
    core_msg stop_msg;
    int stopping;
    repl_req *batch[REPL_MAX_BATCH];
    _Atomic uint64_t batches, commands;
    _Atomic uint64_t hist[REPL_HIST_BUCKETS];
};

enum { MSG_REQ = 1, MSG_STOP = 2 };

/* appends c at the next index and applies it, inside a nested transaction
 * when `nested` (so a storage failure takes back only this command) */
static int log_apply(store_txn *parent, const uint8_t *enc, size_t len, const cmd *c,
                     apply_result *res, uint64_t *index, int nested)
{
    store_txn child = {.st = parent->st, .txn = parent->txn};
    uint8_t k[8];
    uint64_t idx;
    int rc;

    if (nested && mdb_txn_begin(store_env(parent->st), parent->txn, 0, &child.txn))
        return CORE_EIO;
    idx = store_meta_u64(&child, "log_last") + 1;
    store_be64(k, idx);
    if ((rc = store_put(&child, DB_LOG, k, 8, enc, len)) ||
        (rc = store_meta_put_u64(&child, "log_last", idx)) ||
        (rc = apply(&child, idx, c, enc, len, res))) {
        if (nested)
            store_abort(&child);
        apply_result_clear(res);
        return rc;
    }
    if (nested && store_commit(&child)) {
        apply_result_clear(res);
        return CORE_EIO;
    }
    *index = idx;
    return 0;
}

/* keeps the newest LOG_KEEP entries; deletes at most `max` per call */
static void log_trim(store_txn *t, int max)
{
    uint64_t last = store_meta_u64(t, "log_last"), first = store_meta_u64(t, "log_first");
    uint8_t k[8];
    if (!first)
        first = 1;
    if (last <= LOG_KEEP || first > last - LOG_KEEP)
        return;
    while (max-- > 0 && first <= last - LOG_KEEP) {
        store_be64(k, first);
        store_del(t, DB_LOG, k, 8);
        first++;
    }
    store_meta_put_u64(t, "log_first", first);
}

static void fail_result(apply_result *res, int rc)
{
    apply_result_clear(res);
    res->status = rc == CORE_ERANGE ? 503 : 500;
    res->problem = 1;
    res->body =
        core_problem(res->status, rc == CORE_ERANGE ? "unavailable" : "internal",
                     rc == CORE_ERANGE ? "the store is full" : "the write could not be stored",
                     NULL, &res->body_len);
}

static int apply_local(store *st, const cmd *c, apply_result *res, uint64_t *index)
{
    store_txn t;
    core_buf enc = {0};
    uint64_t idx;
    int rc;

    if ((rc = cmd_encode(c, &enc)))
        return rc;
    if ((rc = store_begin(st, 1, &t))) {
        core_buf_free(&enc);
        return rc;
    }
    rc = log_apply(&t, enc.p, enc.len, c, res, &idx, 0);
    core_buf_free(&enc);
    if (rc) {
        store_abort(&t);
        return rc;
    }
    if (store_commit(&t) || store_sync(st)) {
        apply_result_clear(res);
        return CORE_EIO;
    }
    *index = idx;
    return 0;
}

int repl_apply_local(store *st, const cmd *c, apply_result *res)
{
    uint64_t idx;
    return apply_local(st, c, res, &idx);
}

int repl_restore_apply(store_txn *t, uint64_t index, const uint8_t *enc, size_t len)
{
    apply_result res;
    uint64_t idx;
    cmd c;
    int rc;

    if (cmd_decode(enc, len, &c))
        return CORE_EINVAL;
    if (store_meta_u64(t, "log_last") + 1 != index)
        return CORE_ERANGE;
    if ((rc = log_apply(t, enc, len, &c, &res, &idx, 0)))
        return rc;
    apply_result_clear(&res);
    /* PostgreSQL has this command already; keep the newest LOG_KEEP entries */
    if ((rc = store_ob_trim(t, index, 1)))
        return rc;
    log_trim(t, 1);
    return 0;
}

static void record_batch(repl *r, int n)
{
    int b = 0;
    while (b < REPL_HIST_BUCKETS - 1 && n > (1 << b))
        b++;
    atomic_fetch_add(&r->hist[b], 1);
    atomic_fetch_add(&r->batches, 1);
    atomic_fetch_add(&r->commands, (uint64_t)n);
}

/* Applies the batch in one transaction. Returns 1 when a command failed on
 * storage and nested was 0: the caller aborts and retries the batch with
 * one nested transaction per command, so only the failing ones fail. */
static int apply_batch(repl *r, store_txn *t, int n, int nested)
{
    for (int i = 0; i < n; i++) {
        repl_req *q = r->batch[i];
        cmd c;
        memset(&q->res, 0, sizeof q->res);
        if (cmd_decode(q->cmd.p, q->cmd.len, &c)) {
            fail_result(&q->res, CORE_EINVAL);
            continue;
        }
        int arc = log_apply(t, q->cmd.p, q->cmd.len, &c, &q->res, &q->index, nested);
        if (arc && !nested) {
            for (int k = 0; k < i; k++)
                apply_result_clear(&r->batch[k]->res);
            return 1;
        }
        if (arc) {
            core_log(LOG_ERROR, "command not applied", "\"type\":%d,\"rc\":%d", c.type, arc);
            fail_result(&q->res, arc);
        }
    }
    return 0;
}

static void run_batch(repl *r, int n)
{
    store_txn t;
    int rc = store_begin(r->st, 1, &t);

    if (rc == 0 && apply_batch(r, &t, n, 0)) {
        store_abort(&t);
        rc = store_begin(r->st, 1, &t);
        if (rc == 0)
            apply_batch(r, &t, n, 1);
    }
    if (rc) {
        for (int i = 0; i < n; i++)
            fail_result(&r->batch[i]->res, rc);
    } else {
        uint64_t last = store_meta_u64(&t, "log_last");
        log_trim(&t, n);
        store_ob_trim(&t, wb_trim_upto(r->wb), n + 64);
        if (store_commit(&t)) {
            core_log(LOG_ERROR, "batch commit failed", "\"commands\":%d", n);
            for (int i = 0; i < n; i++)
                fail_result(&r->batch[i]->res, CORE_EIO);
        } else
            atomic_store(&r->committed, last);
    }
    record_batch(r, n);
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < n; i++) {
        r->batch[i]->next_in_batch = NULL;
        *r->pending_tail = r->batch[i];
        r->pending_tail = &r->batch[i]->next_in_batch;
    }
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* makes committed batches durable, then answers them */
static void *syncer_main(void *arg)
{
    repl *r = arg;
    for (;;) {
        repl_req *q;
        pthread_mutex_lock(&r->mu);
        while (!r->pending && !r->sync_stop)
            pthread_cond_wait(&r->cv, &r->mu);
        q = r->pending;
        r->pending = NULL;
        r->pending_tail = &r->pending;
        int stop = r->sync_stop;
        pthread_mutex_unlock(&r->mu);
        /* every batch committed before the sync is durable after it */
        uint64_t committed = atomic_load(&r->committed);
        if (q && store_sync(r->st)) {
            core_log(LOG_ERROR, "sync failed: answering the batch with errors", NULL);
            for (repl_req *e = q; e; e = e->next_in_batch)
                fail_result(&e->res, CORE_EIO);
        } else if (q)
            wb_durable(r->wb, committed);
        while (q) {
            repl_req *next = q->next_in_batch;
            core_inbox_push(q->reply_to, &q->link);
            q = next;
        }
        if (stop)
            return NULL;
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    repl *r = arg;
    core_msg *m;
    int n = 0;

    core_inbox_ack(r->in);
    while ((m = core_inbox_pop(r->in)) != NULL) {
        if (m->type == MSG_STOP) {
            r->stopping = 1;
            continue;
        }
        r->batch[n++] = (repl_req *)m;
        if (n == REPL_MAX_BATCH) {
            run_batch(r, n);
            n = 0;
        }
    }
    if (n)
        run_batch(r, n);
    if (r->stopping)
        event_base_loopbreak(r->base);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    repl *r = arg;
    cmd c = {.type = CMD_TICK, .ts_ms = core_now_ms(), .actor_role = ROLE_SERVICE};
    apply_result res;
    uint64_t idx;
    if (apply_local(r->st, &c, &res, &idx) == 0) {
        apply_result_clear(&res);
        wb_durable(r->wb, idx);
    }
}

/* deletes outbox entries PostgreSQL has, also while no writes come in */
static void on_trim(evutil_socket_t fd, short what, void *arg)
{
    repl *r = arg;
    store_txn t;

    if (store_begin(r->st, 1, &t))
        return;
    if (store_ob_trim(&t, wb_trim_upto(r->wb), OB_TRIM_MAX))
        store_abort(&t);
    else
        store_commit(&t);
}

static void *writer_main(void *arg)
{
    repl *r = arg;
    event_base_dispatch(r->base);
    return NULL;
}

int repl_prepare(store *st, const core_config *cfg)
{
    store_txn t;
    apply_result res;
    core_policy stored;
    uint8_t key[32];
    int have_key, same_policy, rc;

    if ((rc = store_begin(st, 0, &t)))
        return rc;
    have_key = store_signing_key(&t, key) == 0;
    OPENSSL_cleanse(key, sizeof key);
    same_policy = store_policy(&t, &stored) == 0 && stored.loan_days == cfg->policy.loan_days &&
                  stored.max_renewals == cfg->policy.max_renewals &&
                  stored.max_loans == cfg->policy.max_loans &&
                  stored.max_loans_premium == cfg->policy.max_loans_premium &&
                  stored.pickup_days == cfg->policy.pickup_days;
    store_abort(&t);
    if (!have_key) {
        cmd c = {.type = CMD_BOOTSTRAP, .ts_ms = core_now_ms(), .actor_role = ROLE_SERVICE};
        if (RAND_bytes(c.u.bootstrap.key, 32) != 1)
            return CORE_EIO;
        rc = repl_apply_local(st, &c, &res);
        OPENSSL_cleanse(c.u.bootstrap.key, 32);
        if (rc)
            return rc;
        apply_result_clear(&res);
        core_log(LOG_INFO, "bootstrapped a new cluster with a generated signing key", NULL);
    }
    if (!same_policy) {
        cmd c = {.type = CMD_POLICY,
                 .ts_ms = core_now_ms(),
                 .actor_role = ROLE_SERVICE,
                 .u.policy = cfg->policy};
        if ((rc = repl_apply_local(st, &c, &res)))
            return rc;
        apply_result_clear(&res);
    }
    return 0;
}

static void stop_syncer(repl *r)
{
    pthread_mutex_lock(&r->mu);
    r->sync_stop = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->syncer, NULL);
}

int repl_start(store *st, const core_config *cfg, wb *w, repl **out)
{
    struct timeval tv = {TICK_S, 0}, trim_tv = {1, 0};
    store_info si;
    repl *r;
    int rc;

    if ((rc = repl_prepare(st, cfg)))
        return rc;
    /* what the store holds at start may be flushed: make it durable first */
    if ((rc = store_sync(st)) || (rc = store_info_get(st, &si)))
        return rc;
    wb_durable(w, si.applied_index);
    r = calloc(1, sizeof *r);
    if (!r)
        return CORE_ENOMEM;
    r->st = st;
    r->wb = w;
    r->stop_msg.type = MSG_STOP;
    r->pending_tail = &r->pending;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    if (!(r->in = core_inbox_new()) || !(r->base = event_base_new()))
        goto fail;
    r->wake = event_new(r->base, core_inbox_fd(r->in), EV_READ | EV_PERSIST, on_wake, r);
    r->tick = event_new(r->base, -1, EV_PERSIST, on_tick, r);
    r->trim = event_new(r->base, -1, EV_PERSIST, on_trim, r);
    if (!r->wake || !r->tick || !r->trim || event_add(r->wake, NULL) || event_add(r->tick, &tv) ||
        event_add(r->trim, &trim_tv))
        goto fail;
    if (pthread_create(&r->syncer, NULL, syncer_main, r))
        goto fail;
    if (pthread_create(&r->thread, NULL, writer_main, r)) {
        stop_syncer(r);
        goto fail;
    }
    *out = r;
    return 0;
fail:
    if (r->wake)
        event_free(r->wake);
    if (r->tick)
        event_free(r->tick);
    if (r->trim)
        event_free(r->trim);
    if (r->base)
        event_base_free(r->base);
    core_inbox_free(r->in);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
    return CORE_EIO;
}

void repl_submit(repl *r, repl_req *q)
{
    q->link.type = MSG_REQ;
    core_inbox_push(r->in, &q->link);
}

void repl_stop(repl *r)
{
    if (!r)
        return;
    core_inbox_push(r->in, &r->stop_msg);
    pthread_join(r->thread, NULL);
    stop_syncer(r);
    event_free(r->wake);
    event_free(r->tick);
    event_free(r->trim);
    event_base_free(r->base);
    core_inbox_free(r->in);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

void repl_stats_get(repl *r, repl_stats *s)
{
    uint64_t cum = 0;
    s->batches = atomic_load(&r->batches);
    s->commands = atomic_load(&r->commands);
    for (int i = 0; i < REPL_HIST_BUCKETS; i++) {
        cum += atomic_load(&r->hist[i]);
        s->hist[i] = cum;
    }
}
