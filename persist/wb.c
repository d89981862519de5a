/*
 * wb.c — the flusher, migrations and restore (design in wb.h).
 *
 * One batch is one PostgreSQL transaction: up to pg.batch outbox entries
 * starting right after the flush cursor. Rows changed several times in a
 * batch are sent once, as their newest image, and every statement takes
 * its rows in log order, so the partial unique indexes (one open loan per
 * copy, one open hold per member and resource) hold after each row, as
 * they did in LMDB. Each table gets one prepared statement with a single
 * JSON parameter expanded by json_to_recordset, each view parsed once by
 * json_populate_record; `view` columns are json, so PostgreSQL keeps the
 * exact bytes the API serves. The cursor update
 * checks the previous value: if anything else moved it, the batch rolls
 * back and the flusher reads the cursor again.
 *
 * Batches are built from a short LMDB read transaction and sent after it
 * is closed, so a slow PostgreSQL never pins old LMDB pages.
 */
#include "persist/wb.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BACKOFF_MIN_MS  100
#define BACKOFF_MAX_MS  10000
#define STOP_DEADLINE_S 5
#define LOG_EVERY_S     30
#define MIGRATE_LOCK    "7120431"
#define GATHER_MS       50    /* pause after a partial batch */
#define BATCH_ROWS      20000 /* rows that end a batch, whatever pg.batch says */
#define CALL_TIMEOUT_MS 30000 /* a statement PostgreSQL has not answered by then failed */

struct wb {
    store *st;
    const core_config *cfg;
    PGconn *pg;
    uint64_t cursor; /* PostgreSQL's flushed index, when known */
    int cursor_known;
    int failing;
    int64_t last_log_s;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    _Atomic uint64_t durable, flushed, oldest_ms;
    _Atomic uint64_t rows, commands, batches, errors;
    _Atomic int connected;
    _Atomic int active; /* this node leads: it flushes (wb_set_active) */
};

static const char *cmd_names[CMD__COUNT] = {
    NULL,          "bootstrap",     "policy",        "tick",        "user_create", "user_update",
    "res_put",     "res_delete",    "loan_checkout", "loan_return", "loan_renew",  "hold_place",
    "hold_cancel", "apikey_create", "import",        "import_done",
};

/* ---- connections ---- */

int wb_dsn_valid(const char *dsn)
{
    char *msg = NULL;
    PQconninfoOption *o = PQconninfoParse(dsn, &msg);
    /* libpq's message quotes the DSN, password included: never show it */
    PQfreemem(msg);
    if (!o)
        return 0;
    PQconninfoFree(o);
    return 1;
}

static PGconn *pg_connect(const core_config *cfg, char *err, size_t errlen)
{
    const char *keys[] = {"dbname",           "sslmode",         "sslrootcert",
                          "application_name", "connect_timeout", "options",
                          "keepalives",       "keepalives_idle", NULL};
    const char *vals[] = {cfg->pg.dsn,
                          cfg->pg.sslmode[0] ? cfg->pg.sslmode : NULL,
                          cfg->pg.sslrootcert[0] ? cfg->pg.sslrootcert : NULL,
                          "circa",
                          "5",
                          "-c statement_timeout=60000 -c client_min_messages=warning",
                          "1",
                          "10",
                          NULL};
    PGconn *c;
    if (!wb_dsn_valid(cfg->pg.dsn)) {
        snprintf(err, errlen, "the PostgreSQL DSN is not a valid libpq connection string");
        return NULL;
    }
    c = PQconnectdbParams(keys, vals, 1);
    if (c && PQstatus(c) == CONNECTION_OK)
        return c;
    /* libpq's messages name host and port, never the password */
    snprintf(err, errlen, "%s", c ? PQerrorMessage(c) : "out of memory");
    err[strcspn(err, "\n")] = '\0';
    PQfinish(c);
    return NULL;
}

/*
 * Sends one query and waits at most CALL_TIMEOUT_MS for all its results,
 * without blocking in libpq: a PostgreSQL that stopped answering (paused,
 * or a dead peer whose kernel still acknowledges) costs a timeout, not the
 * flusher. With name and sql it prepares sql as name; with name alone it
 * runs that statement; with no parameters and text results sql may hold
 * several statements. Returns the first
 * failed result, else the last one; NULL when the connection must go.
 */
/* Process-wide, set by wb_stop: a call in flight gives up past it, so a
 * stalled PostgreSQL delays shutdown by STOP_DEADLINE_S, not CALL_TIMEOUT_MS. */
static _Atomic int64_t g_stop_deadline;

static PGresult *pg_call(PGconn *c, const char *name, const char *sql, int n,
                         const char *const *params, int binary)
{
    int64_t deadline = core_mono_ns() + (int64_t)CALL_TIMEOUT_MS * 1000000;
    PGresult *keep = NULL, *r;
    int sent, flushed;

    if (PQsetnonblocking(c, 1))
        return NULL;
    if (name && sql)
        sent = PQsendPrepare(c, name, sql, n, NULL);
    else if (name)
        sent = PQsendQueryPrepared(c, name, n, params, NULL, NULL, binary);
    else if (n == 0 && !binary)
        sent = PQsendQuery(c, sql);
    else
        sent = PQsendQueryParams(c, sql, n, NULL, params, NULL, NULL, binary);
    if (!sent)
        return NULL;
    for (;;) {
        int64_t stop = atomic_load(&g_stop_deadline);
        int64_t left = ((stop && stop < deadline ? stop : deadline) - core_mono_ns()) / 1000000;
        struct pollfd pfd = {.fd = PQsocket(c)};
        if ((flushed = PQflush(c)) < 0)
            goto broken;
        if (flushed == 0 && PQconsumeInput(c) == 0)
            goto broken;
        while (flushed == 0 && !PQisBusy(c)) {
            if (!(r = PQgetResult(c)))
                return keep;
            ExecStatusType st = PQresultStatus(r);
            if (keep && (PQresultStatus(keep) == PGRES_FATAL_ERROR || st == PGRES_COPY_IN)) {
                PQclear(r);
                continue;
            }
            PQclear(keep);
            keep = r;
        }
        if (left <= 0)
            goto broken;
        pfd.events = POLLIN | (flushed ? POLLOUT : 0);
        if (poll(&pfd, 1, left > 1000 ? 1000 : (int)left) < 0 && errno != EINTR)
            goto broken;
    }
broken:
    PQclear(keep);
    return NULL;
}

static int pg_failed(PGconn *c, PGresult *r, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    if (!err[0] || !r)
        snprintf(err, errlen, "%s",
                 PQstatus(c) == CONNECTION_OK ? "PostgreSQL did not answer in time"
                                              : PQerrorMessage(c));
    err[strcspn(err, "\n")] = '\0';
    PQclear(r);
    return WB_EPG;
}

/* runs sql; 0 or WB_EPG with PostgreSQL's message in err */
static int pg_exec(PGconn *c, const char *sql, char *err, size_t errlen)
{
    PGresult *r = pg_call(c, NULL, sql, 0, NULL, 0);
    ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
        return pg_failed(c, r, err, errlen);
    PQclear(r);
    return 0;
}

static void pg_rollback(PGconn *c)
{
    PQclear(pg_call(c, NULL, "ROLLBACK", 0, NULL, 0));
}

/* ---- migrations ---- */

static int migrate(PGconn *c, FILE *log, char *err, size_t errlen)
{
    if (pg_exec(c,
                "BEGIN; SELECT pg_advisory_xact_lock(" MIGRATE_LOCK ");"
                "CREATE TABLE IF NOT EXISTS circa_migrations (version integer PRIMARY KEY,"
                " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now()); COMMIT",
                err, errlen)) {
        pg_rollback(c);
        return WB_EPG;
    }
    for (int i = 0; i < wb_nmigrations; i++) {
        const wb_migration *m = &wb_migrations[i];
        char v[16];
        const char *params[2] = {v, m->name};
        PGresult *r;
        int have;

        snprintf(v, sizeof v, "%d", m->version);
        if (pg_exec(c, "BEGIN; SELECT pg_advisory_xact_lock(" MIGRATE_LOCK ")", err, errlen))
            goto fail;
        r = pg_call(c, NULL, "SELECT 1 FROM circa_migrations WHERE version = $1", 1, params, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            pg_failed(c, r, err, errlen);
            goto fail;
        }
        have = PQntuples(r) > 0;
        PQclear(r);
        if (have) {
            pg_rollback(c);
            continue;
        }
        if (pg_exec(c, m->sql, err, errlen))
            goto fail;
        r = pg_call(c, NULL, "INSERT INTO circa_migrations (version, name) VALUES ($1, $2)", 2,
                    params, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            pg_failed(c, r, err, errlen);
            goto fail;
        }
        PQclear(r);
        if (pg_exec(c, "COMMIT", err, errlen))
            goto fail;
        if (log)
            fprintf(log, "applied migration %s\n", m->name);
        core_log(LOG_INFO, "applied a PostgreSQL migration", "\"migration\":\"%s\"", m->name);
    }
    return 0;
fail:
    err[strcspn(err, "\n")] = '\0';
    pg_rollback(c);
    return WB_EPG;
}

int wb_migrate(const core_config *cfg, FILE *log, char *err, size_t errlen)
{
    PGconn *c = pg_connect(cfg, err, errlen);
    int rc;
    if (!c)
        return WB_EPG;
    rc = migrate(c, log, err, errlen);
    PQfinish(c);
    return rc;
}

/* ---- statements ---- */

enum { T_USERS, T_KEYS, T_RES, T_RES_GONE, T_LOANS, T_HOLDS, T_CMDS, T__COUNT };

/* json_populate_record parses each view once and fills the table's columns
 * of the same names (an expression per column would parse it per column) */
#define ROWS_OF(table, cols)                            \
    " FROM json_to_recordset($1::json) AS r(" cols ")," \
    " LATERAL json_populate_record(NULL::" table ", r.v) p ORDER BY r.i"

static const char *stmt_sql[T__COUNT] = {
    [T_USERS] =
        "INSERT INTO users AS t (id, email, name, role, plan, status, created_at,"
        " log_index, view)"
        " SELECT p.id, p.email, p.name, p.role, p.plan, p.status, p.created_at, r.i, r.v" ROWS_OF(
            "users",
            "i bigint, v json") " ON CONFLICT (id) DO UPDATE SET email = excluded.email, name = "
                                "excluded.name,"
                                " role = excluded.role, plan = excluded.plan, status = "
                                "excluded.status,"
                                " created_at = excluded.created_at, log_index = excluded.log_index,"
                                " view = excluded.view WHERE t.log_index < excluded.log_index",
    [T_KEYS] =
        "INSERT INTO api_keys AS t (key_sha256, id, name, role, created_at, log_index, view)"
        " SELECT decode(r.k, 'hex'), p.id, p.name, p.role, p.created_at, r.i, r.v" ROWS_OF(
            "api_keys",
            "i bigint, k text, v json") " ON CONFLICT (key_sha256) DO UPDATE SET id = excluded.id, "
                                        "name = excluded.name,"
                                        " role = excluded.role, created_at = excluded.created_at,"
                                        " log_index = excluded.log_index, view = excluded.view"
                                        " WHERE t.log_index < excluded.log_index",
    [T_RES] =
        "INSERT INTO resources AS t (id, deleted, title, type, copies, available, premium,"
        " authors, tags, created_at, updated_at, log_index, view)"
        " SELECT p.id, false, p.title, p.type, p.copies, p.available, p.premium, p.authors,"
        " p.tags, p.created_at, p.updated_at, r.i, r.v" ROWS_OF(
            "resources", "i bigint, v json") " ON CONFLICT (id) DO UPDATE SET deleted = false, "
                                             "title = excluded.title,"
                                             " type = excluded.type, copies = excluded.copies, "
                                             "available = excluded.available,"
                                             " premium = excluded.premium, authors = "
                                             "excluded.authors, tags = excluded.tags,"
                                             " created_at = excluded.created_at, updated_at = "
                                             "excluded.updated_at,"
                                             " log_index = excluded.log_index, view = excluded.view"
                                             " WHERE t.log_index < excluded.log_index",
    [T_RES_GONE] = "INSERT INTO resources AS t (id, deleted, log_index) SELECT r.id, true, r.i"
                   " FROM json_to_recordset($1::json) AS r(i bigint, id uuid) ORDER BY r.i"
                   " ON CONFLICT (id) DO UPDATE SET deleted = true, log_index = excluded.log_index"
                   " WHERE t.log_index < excluded.log_index",
    [T_LOANS] =
        "INSERT INTO loans AS t (id, user_id, resource_id, copy, status, checked_out_at,"
        " due_at, returned_at, renewals, log_index, view)"
        " SELECT p.id, p.user_id, p.resource_id, p.copy, p.status, p.checked_out_at,"
        " p.due_at, p.returned_at, p.renewals, r.i, r.v" ROWS_OF(
            "loans",
            "i bigint, v json") " ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
                                " due_at = excluded.due_at, returned_at = excluded.returned_at,"
                                " renewals = excluded.renewals, log_index = excluded.log_index,"
                                " view = excluded.view WHERE t.log_index < excluded.log_index",
    [T_HOLDS] =
        "INSERT INTO holds AS t (id, user_id, resource_id, status, ready_until, created_at,"
        " log_index, view)"
        " SELECT p.id, p.user_id, p.resource_id, p.status, p.ready_until, p.created_at,"
        " r.i, r.v" ROWS_OF(
            "holds",
            "i bigint, v json") " ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
                                " ready_until = excluded.ready_until, log_index = "
                                "excluded.log_index,"
                                " view = excluded.view WHERE t.log_index < excluded.log_index",
    [T_CMDS] = "INSERT INTO commands (log_index, ts, type, actor_id, actor_role, status, command)"
               " SELECT r.i, to_timestamp(r.ts / 1000.0), r.type, r.actor, r.role, r.status,"
               " decode(r.cmd, 'hex')"
               " FROM json_to_recordset($1::json) AS r(i bigint, ts bigint, type text,"
               " actor uuid, role text, status smallint, cmd text)"
               " ON CONFLICT (log_index) DO NOTHING",
};

/* statements run in this order: parents before the rows that reference them */
static const int stmt_order[T__COUNT] = {T_CMDS,     T_USERS, T_KEYS, T_RES,
                                         T_RES_GONE, T_LOANS, T_HOLDS};

static int prepare_all(PGconn *c, char *err, size_t errlen)
{
    for (int i = 0; i < T__COUNT; i++) {
        char name[8];
        snprintf(name, sizeof name, "wb%d", i);
        PGresult *r = pg_call(c, name, stmt_sql[i], 1, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            return pg_failed(c, r, err, errlen);
        PQclear(r);
    }
    return 0;
}

/* ---- batches ---- */

typedef struct slot {
    uint64_t index;
    const store_ob_row *row; /* NULL: empty slot */
    store_ob_row copy;
} slot;

typedef struct batch {
    slot *slots; /* open addressing by (db, key) */
    size_t cap, used;
    core_buf json[T__COUNT];
    uint64_t first, last, first_ts_ms;
    uint64_t commands, rows;
} batch;

static void batch_free(batch *b)
{
    free(b->slots);
    for (int i = 0; i < T__COUNT; i++)
        core_buf_free(&b->json[i]);
    memset(b, 0, sizeof *b);
}

static int buf_str(core_buf *b, const char *s)
{
    return core_buf_put(b, s, strlen(s));
}

static int buf_hex(core_buf *b, const uint8_t *p, size_t n)
{
    char tmp[256];
    for (size_t i = 0; i < n; i += sizeof tmp / 2) {
        size_t k = n - i < sizeof tmp / 2 ? n - i : sizeof tmp / 2;
        core_hex(p + i, k, tmp);
        if (core_buf_put(b, tmp, 2 * k))
            return CORE_ENOMEM;
    }
    return 0;
}

/* starts the next element of a JSON array held in b */
static int buf_next(core_buf *b)
{
    return core_buf_put(b, b->len ? "," : "[", 1);
}

static slot *slot_for(batch *b, const store_ob_row *r)
{
    uint64_t h = core_hash64(r->key, r->key_len, (uint64_t)r->db);
    size_t mask = b->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        slot *s = &b->slots[i];
        if (!s->row || (s->copy.db == r->db && s->copy.key_len == r->key_len &&
                        memcmp(s->copy.key, r->key, r->key_len) == 0))
            return s;
    }
}

static int grow(batch *b)
{
    size_t cap = b->cap ? b->cap * 2 : 1024;
    slot *old = b->slots, *ns = calloc(cap, sizeof *ns);
    size_t oldcap = b->cap;
    if (!ns)
        return CORE_ENOMEM;
    b->slots = ns;
    b->cap = cap;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].row) {
            slot *s = slot_for(b, &old[i].copy);
            *s = old[i];
            s->row = &s->copy;
        }
    free(old);
    return 0;
}

static int add_command(batch *b, uint64_t index, const store_ob *o, const cmd *c)
{
    core_buf *j = &b->json[T_CMDS];
    char head[160], actor[40] = "null";

    if (!core_uuid_is_nil(&c->actor)) {
        actor[0] = '"';
        core_uuid_fmt(&c->actor, actor + 1);
        strcat(actor, "\"");
    }
    snprintf(head, sizeof head,
             "{\"i\":%llu,\"ts\":%lld,\"type\":\"%s\",\"actor\":%s,\"role\":\"%s\",\"status\":%d,"
             "\"cmd\":\"",
             (unsigned long long)index, (long long)c->ts_ms, cmd_names[c->type], actor,
             core_role_name(c->actor_role), o->status);
    if (buf_next(j) || buf_str(j, head) || buf_hex(j, o->cmd, o->cmd_len) || buf_str(j, "\"}"))
        return CORE_ENOMEM;
    return 0;
}

static int add_row(batch *b, uint64_t index, const store_ob_row *r)
{
    slot *s;
    if ((b->used + 1) * 2 > b->cap && grow(b))
        return CORE_ENOMEM;
    s = slot_for(b, r);
    if (!s->row)
        b->used++;
    s->index = index;
    s->copy = *r;
    s->row = &s->copy;
    return 0;
}

static int slot_cmp(const void *a, const void *b)
{
    const slot *x = *(const slot *const *)a, *y = *(const slot *const *)b;
    return x->index < y->index ? -1 : x->index > y->index;
}

static int emit_row(batch *b, const slot *s)
{
    char head[128], id[37];
    core_buf *j;
    int t;

    switch (s->copy.db) {
    case DB_USERS:
        t = T_USERS;
        break;
    case DB_APIKEYS:
        t = T_KEYS;
        break;
    case DB_RES:
        t = s->copy.present ? T_RES : T_RES_GONE;
        break;
    case DB_LOANS:
        t = T_LOANS;
        break;
    case DB_HOLDS:
        t = T_HOLDS;
        break;
    default:
        return CORE_EINVAL;
    }
    j = &b->json[t];
    if (buf_next(j))
        return CORE_ENOMEM;
    if (t == T_RES_GONE) {
        if (s->copy.key_len != 16)
            return CORE_EINVAL;
        core_uuid u;
        memcpy(u.b, s->copy.key, 16);
        core_uuid_fmt(&u, id);
        snprintf(head, sizeof head, "{\"i\":%llu,\"id\":\"%s\"}", (unsigned long long)s->index, id);
        return buf_str(j, head);
    }
    if (!s->copy.present) /* only resources are ever deleted */
        return CORE_EINVAL;
    snprintf(head, sizeof head, "{\"i\":%llu,", (unsigned long long)s->index);
    if (buf_str(j, head))
        return CORE_ENOMEM;
    if (t == T_KEYS &&
        (buf_str(j, "\"k\":\"") || buf_hex(j, s->copy.key, s->copy.key_len) || buf_str(j, "\",")))
        return CORE_ENOMEM;
    if (buf_str(j, "\"v\":") || core_buf_put(j, s->copy.val, s->copy.val_len) ||
        core_buf_put(j, "}", 1))
        return CORE_ENOMEM;
    b->rows++;
    return 0;
}

/* Reads entries cursor+1 .. min(durable, cursor+batch) into b. The row
 * slots point into LMDB's map, so the JSON is written before the read
 * transaction ends. */
static int batch_build(wb *w, uint64_t durable, batch *b, char *err, size_t errlen)
{
    store_txn t;
    MDB_cursor *cur = NULL;
    uint8_t k[8];
    MDB_val key = {8, k}, val;
    uint64_t want = w->cursor + 1, limit = w->cursor + w->cfg->pg.batch;
    slot **order = NULL;
    int rc, mrc;

    if (limit > durable)
        limit = durable;
    if ((rc = store_begin(w->st, 0, &t)))
        return rc;
    if (mdb_cursor_open(t.txn, store_dbi(w->st, DB_OUTBOX), &cur)) {
        rc = CORE_EIO;
        goto done;
    }
    store_be64(k, want);
    mrc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
    if (mrc == 0 && key.mv_size == 8 && store_rd64(key.mv_data) != want) {
        snprintf(err, errlen,
                 "the outbox has no entry %llu (PostgreSQL has up to %llu): this node cannot "
                 "continue the system of record; restore it from PostgreSQL",
                 (unsigned long long)want, (unsigned long long)w->cursor);
        rc = WB_EGAP;
        goto done;
    }
    /* an import's command carries hundreds of rows: a batch also ends
     * once it holds BATCH_ROWS rows (after its first command) */
    while (mrc == 0 && key.mv_size == 8 && store_rd64(key.mv_data) <= limit &&
           (b->commands == 0 || b->used < BATCH_ROWS)) {
        uint64_t idx = store_rd64(key.mv_data);
        store_ob o;
        store_ob_row r;
        cmd c;
        int n;
        if (idx != want || store_ob_open(val.mv_data, val.mv_size, &o) ||
            cmd_decode(o.cmd, o.cmd_len, &c)) {
            snprintf(err, errlen, "outbox entry %llu is damaged", (unsigned long long)idx);
            rc = WB_EGAP;
            goto done;
        }
        if (!b->commands)
            b->first_ts_ms = (uint64_t)c.ts_ms;
        if ((rc = add_command(b, idx, &o, &c)))
            goto done;
        while ((n = store_ob_next(&o, &r)) == 1)
            if ((rc = add_row(b, idx, &r)))
                goto done;
        if (n < 0) {
            snprintf(err, errlen, "outbox entry %llu is damaged", (unsigned long long)idx);
            rc = WB_EGAP;
            goto done;
        }
        b->commands++;
        b->last = idx;
        want++;
        mrc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    if (b->commands == 0 && durable > w->cursor) {
        snprintf(err, errlen, "the outbox has no entry %llu (PostgreSQL has up to %llu)",
                 (unsigned long long)want, (unsigned long long)w->cursor);
        rc = WB_EGAP;
        goto done;
    }
    b->first = w->cursor + 1;
    if (b->used) {
        size_t n = 0;
        if (!(order = malloc(b->used * sizeof *order))) {
            rc = CORE_ENOMEM;
            goto done;
        }
        for (size_t i = 0; i < b->cap; i++)
            if (b->slots[i].row)
                order[n++] = &b->slots[i];
        qsort(order, n, sizeof *order, slot_cmp);
        for (size_t i = 0; i < n; i++)
            if ((rc = emit_row(b, order[i])))
                goto done;
    }
    for (int i = 0; i < T__COUNT; i++)
        if (b->json[i].len && core_buf_put(&b->json[i], "]", 1)) {
            rc = CORE_ENOMEM;
            goto done;
        }
    rc = 0;
done:
    free(order);
    if (cur)
        mdb_cursor_close(cur);
    store_abort(&t);
    return rc;
}

/* one PostgreSQL transaction: the batch's rows and the new cursor */
static int batch_send(wb *w, batch *b, char *err, size_t errlen)
{
    char from[24], to[24];
    const char *cp[2] = {from, to};
    PGresult *r;
    int moved;

    if (pg_exec(w->pg, "BEGIN", err, errlen))
        return WB_EPG;
    for (int k = 0; k < T__COUNT; k++) {
        int i = stmt_order[k];
        char name[8];
        if (!b->json[i].len)
            continue;
        if (core_buf_put(&b->json[i], "", 1)) /* NUL for libpq; len includes it now */
            goto oom;
        const char *param = (const char *)b->json[i].p;
        snprintf(name, sizeof name, "wb%d", i);
        r = pg_call(w->pg, name, NULL, 1, &param, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            pg_failed(w->pg, r, err, errlen);
            goto fail;
        }
        PQclear(r);
    }
    snprintf(from, sizeof from, "%llu", (unsigned long long)w->cursor);
    snprintf(to, sizeof to, "%llu", (unsigned long long)b->last);
    r = pg_call(w->pg, NULL,
                "UPDATE flush_cursor SET flushed_index = $2, updated_at = now()"
                " WHERE id = 1 AND flushed_index = $1",
                2, cp, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        pg_failed(w->pg, r, err, errlen);
        goto fail;
    }
    moved = atoi(PQcmdTuples(r)) == 1;
    PQclear(r);
    if (!moved) {
        snprintf(err, errlen, "the flush cursor moved under us; reading it again");
        w->cursor_known = 0;
        pg_rollback(w->pg);
        return WB_EPG;
    }
    return pg_exec(w->pg, "COMMIT", err, errlen);
oom:
    snprintf(err, errlen, "out of memory");
fail:
    err[strcspn(err, "\n")] = '\0';
    pg_rollback(w->pg);
    return WB_EPG;
}

static int read_cursor(wb *w, char *err, size_t errlen)
{
    PGresult *r =
        pg_call(w->pg, NULL, "SELECT flushed_index FROM flush_cursor WHERE id = 1", 0, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        return pg_failed(w->pg, r, err, errlen);
    w->cursor = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    w->cursor_known = 1;
    atomic_store(&w->flushed, w->cursor);
    return 0;
}

/* the time of the oldest command PostgreSQL lacks, for the lag metric */
static void note_oldest(wb *w)
{
    uint64_t next = atomic_load(&w->flushed) + 1, ts = 0;
    store_txn t;
    uint8_t k[8];
    MDB_val v;
    store_ob o;
    cmd c;

    if (next <= atomic_load(&w->durable) && store_begin(w->st, 0, &t) == 0) {
        store_be64(k, next);
        if (store_get(&t, DB_OUTBOX, k, 8, &v) == 0 &&
            store_ob_open(v.mv_data, v.mv_size, &o) == 0 && cmd_decode(o.cmd, o.cmd_len, &c) == 0)
            ts = (uint64_t)c.ts_ms;
        store_abort(&t);
    }
    atomic_store(&w->oldest_ms, ts);
}

/* connects, migrates and flushes one batch: 2 when it sent a full one, 1 a
 * partial one, 0 when there was nothing to send, <0 on failure */
static int step(wb *w, char *err, size_t errlen)
{
    uint64_t durable = atomic_load(&w->durable);
    batch b = {0};
    int rc;

    if (!w->pg) {
        if (!(w->pg = pg_connect(w->cfg, err, errlen)))
            return WB_EPG;
        if ((rc = migrate(w->pg, NULL, err, errlen)) || (rc = prepare_all(w->pg, err, errlen)))
            return rc;
        w->cursor_known = 0;
        atomic_store(&w->connected, 1);
    }
    if (!w->cursor_known && (rc = read_cursor(w, err, errlen)))
        return rc;
    if (w->cursor > durable) {
        snprintf(err, errlen,
                 "PostgreSQL has commands up to %llu but this node only %llu: its data directory "
                 "is older than the system of record; restore it from PostgreSQL",
                 (unsigned long long)w->cursor, (unsigned long long)durable);
        return WB_EGAP;
    }
    if (w->cursor == durable)
        return 0;
    if ((rc = batch_build(w, durable, &b, err, errlen)) || (rc = batch_send(w, &b, err, errlen))) {
        batch_free(&b);
        return rc;
    }
    w->cursor = b.last;
    atomic_store(&w->flushed, b.last);
    atomic_fetch_add(&w->rows, b.rows);
    atomic_fetch_add(&w->commands, b.commands);
    atomic_fetch_add(&w->batches, 1);
    uint64_t sent = b.commands;
    batch_free(&b);
    return sent == w->cfg->pg.batch ? 2 : 1;
}

static void failed(wb *w, int rc, const char *err)
{
    int64_t now = core_mono_ns() / 1000000000;
    char e[512];
    /* counted after the log line, so whoever sees the counter move can read why */
    if (w->failing && now - w->last_log_s < LOG_EVERY_S)
        goto count;
    core_json_escape(err, e, sizeof e);
    core_log(LOG_ERROR,
             rc == WB_EGAP ? "write-behind cannot continue"
                           : "write-behind to PostgreSQL failed; writes go on and the outbox grows",
             "\"error\":\"%s\",\"flushed_index\":%llu,\"durable_index\":%llu", e,
             (unsigned long long)atomic_load(&w->flushed),
             (unsigned long long)atomic_load(&w->durable));
    w->failing = 1;
    w->last_log_s = now;
count:
    atomic_fetch_add(&w->errors, 1);
}

/* waits ms or until stop; returns w->stop */
static int wait_ms(wb *w, unsigned ms, int only_stop)
{
    struct timespec ts;
    int stop;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&w->mu);
    while (!w->stop && (only_stop || atomic_load(&w->durable) <= w->cursor || !w->cursor_known))
        if (pthread_cond_timedwait(&w->cv, &w->mu, &ts))
            break;
    stop = w->stop;
    pthread_mutex_unlock(&w->mu);
    return stop;
}

static void *wb_main(void *arg)
{
    wb *w = arg;
    unsigned backoff = 0;
    int64_t deadline = 0;
    char err[512];

    for (;;) {
        pthread_mutex_lock(&w->mu);
        int stop = w->stop;
        pthread_mutex_unlock(&w->mu);
        if (stop && !deadline)
            deadline = atomic_load(&g_stop_deadline);
        /* stopping: send what is durable over the connection we have, no new one */
        if (deadline && (core_mono_ns() > deadline || !w->pg))
            break;
        if (!atomic_load(&w->active)) {
            /* a follower: the leader flushes; hold no connection */
            if (w->pg) {
                PQfinish(w->pg);
                w->pg = NULL;
                atomic_store(&w->connected, 0);
            }
            w->cursor_known = 0;
            w->failing = 0;
            backoff = 0;
            if (stop)
                break;
            wait_ms(w, 200, 1);
            continue;
        }
        err[0] = '\0';
        int rc = step(w, err, sizeof err);
        note_oldest(w);
        if (rc < 0) {
            failed(w, rc, err);
            if (w->pg) {
                PQfinish(w->pg);
                w->pg = NULL;
                atomic_store(&w->connected, 0);
            }
            if (stop)
                break;
            backoff = backoff ? backoff * 2 : BACKOFF_MIN_MS;
            if (backoff > BACKOFF_MAX_MS)
                backoff = BACKOFF_MAX_MS;
            /* up to a quarter less, so nodes don't retry in step */
            unsigned jitter = (unsigned)(core_mono_ns() % (backoff / 4 + 1));
            wait_ms(w, backoff - jitter, 1);
            continue;
        }
        if (w->failing) {
            core_log(LOG_INFO, "write-behind to PostgreSQL is flowing again",
                     "\"flushed_index\":%llu,\"durable_index\":%llu",
                     (unsigned long long)atomic_load(&w->flushed),
                     (unsigned long long)atomic_load(&w->durable));
            w->failing = 0;
        }
        backoff = 0;
        if (rc == 0) {
            if (stop)
                break;
            wait_ms(w, 1000, 0);
        } else if (rc == 1 && !stop) {
            /* a partial batch: let a few more commands gather, so that under
             * steady load each PostgreSQL transaction carries more of them
             * and rows changed twice in the meantime are sent once */
            wait_ms(w, GATHER_MS, 1);
        }
    }
    if (w->pg)
        PQfinish(w->pg);
    w->pg = NULL;
    atomic_store(&w->connected, 0);
    return NULL;
}

/* the oldest index in the outbox (0 when it is empty) and the newest
 * index a trim knew PostgreSQL had */
static int outbox_first(store *st, uint64_t *first, uint64_t *known)
{
    store_txn t;
    MDB_cursor *cur;
    MDB_val k, v;
    int rc;

    *first = 0;
    if (store_begin(st, 0, &t))
        return CORE_EIO;
    *known = store_meta_u64(&t, "ob_flushed");
    if (mdb_cursor_open(t.txn, store_dbi(st, DB_OUTBOX), &cur)) {
        store_abort(&t);
        return CORE_EIO;
    }
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    if (rc == 0 && k.mv_size == 8)
        *first = store_rd64(k.mv_data);
    mdb_cursor_close(cur);
    store_abort(&t);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : CORE_EIO;
}

int wb_start(store *st, const core_config *cfg, wb **out)
{
    store_info si;
    uint64_t first, known;
    wb *w;

    *out = NULL;
    if (!cfg->pg.dsn[0]) {
        core_log(LOG_INFO, "write-behind is off: no PostgreSQL DSN (--pg, CIRCA_PG_DSN or pg.dsn)",
                 NULL);
        return 0;
    }
    if (store_info_get(st, &si) || outbox_first(st, &first, &known))
        return CORE_EIO;
    if (!(w = calloc(1, sizeof *w)))
        return CORE_ENOMEM;
    w->st = st;
    w->cfg = cfg;
    atomic_store(&w->durable, si.applied_index);
    /* the outbox is trimmed only up to what PostgreSQL has: until the
     * flusher reads the cursor, what precedes the outbox, or what the last
     * trim recorded, counts as flushed */
    first = first ? first - 1 : si.applied_index;
    atomic_store(&w->flushed, known > first ? known : first);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, wb_main, w)) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w);
        return CORE_EIO;
    }
    core_log(LOG_INFO, "write-behind to PostgreSQL is on", "\"high_water\":%llu,\"batch\":%u",
             (unsigned long long)cfg->pg.high_water, cfg->pg.batch);
    *out = w;
    return 0;
}

void wb_durable(wb *w, uint64_t index)
{
    if (!w || index <= atomic_load(&w->durable))
        return;
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->durable, index);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void wb_set_active(wb *w, int on)
{
    if (!w || atomic_load(&w->active) == (on != 0))
        return;
    atomic_store(&w->active, on != 0);
    core_log(LOG_INFO,
             on ? "write-behind: this node leads; it flushes to PostgreSQL"
                : "write-behind: this node no longer leads; the leader flushes",
             NULL);
}

void wb_note_flushed(wb *w, uint64_t index)
{
    if (!w || atomic_load(&w->active))
        return;
    uint64_t cur = atomic_load(&w->flushed);
    while (index > cur && !atomic_compare_exchange_weak(&w->flushed, &cur, index))
        ;
}

uint64_t wb_trim_upto(wb *w)
{
    return w ? atomic_load(&w->flushed) : UINT64_MAX;
}

int wb_backlogged(wb *w)
{
    return w && atomic_load(&w->durable) - atomic_load(&w->flushed) >= w->cfg->pg.high_water;
}

void wb_stats_get(wb *w, wb_stats *s)
{
    memset(s, 0, sizeof *s);
    if (!w)
        return;
    s->connected = atomic_load(&w->connected);
    s->flushed_index = atomic_load(&w->flushed);
    s->durable_index = atomic_load(&w->durable);
    s->lag_entries = s->durable_index > s->flushed_index ? s->durable_index - s->flushed_index : 0;
    uint64_t oldest = atomic_load(&w->oldest_ms);
    int64_t now = core_now_ms();
    if (s->lag_entries && oldest && now > (int64_t)oldest)
        s->lag_seconds = (double)(now - (int64_t)oldest) / 1000.0;
    s->rows_total = atomic_load(&w->rows);
    s->commands_total = atomic_load(&w->commands);
    s->batches_total = atomic_load(&w->batches);
    s->errors_total = atomic_load(&w->errors);
    s->high_water = w->cfg->pg.high_water;
}

void wb_stop(wb *w)
{
    if (!w)
        return;
    atomic_store(&g_stop_deadline, core_mono_ns() + (int64_t)STOP_DEADLINE_S * 1000000000);
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    /* the writer has stopped: trim what PostgreSQL got, so the next start
     * knows it without asking */
    store_txn t;
    if (store_begin(w->st, 1, &t) == 0) {
        if (store_ob_trim(&t, atomic_load(&w->flushed), INT32_MAX) || store_commit(&t))
            store_abort(&t);
    }
    if (atomic_load(&w->durable) > atomic_load(&w->flushed))
        core_log(LOG_WARN, "stopped with commands not yet in PostgreSQL; they stay in the outbox",
                 "\"flushed_index\":%llu,\"durable_index\":%llu",
                 (unsigned long long)atomic_load(&w->flushed),
                 (unsigned long long)atomic_load(&w->durable));
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

/* ---- restore ---- */

typedef struct progress {
    FILE *out;
    int tty;
    uint64_t total, last_pct, last_done;
    int64_t start_ns, last_ns;
} progress;

static void progress_show(progress *p, uint64_t done, int final)
{
    int64_t now = core_mono_ns();
    uint64_t pct = p->total ? done * 100 / p->total : 100;
    double rate = now > p->start_ns ? (double)done * 1e9 / (double)(now - p->start_ns) : 0;
    if (!p->out || (final && done == p->last_done && !p->tty))
        return;
    if (p->tty) {
        if (!final && now - p->last_ns < 100000000)
            return;
        char bar[41];
        int fill = (int)(pct * 40 / 100);
        for (int i = 0; i < 40; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[40] = '\0';
        fprintf(p->out, "\rreplaying [%s] %3llu%% %llu/%llu commands %.0f/s%s", bar,
                (unsigned long long)pct, (unsigned long long)done, (unsigned long long)p->total,
                rate, final ? "\n" : "");
    } else {
        if (!final && pct / 10 == p->last_pct / 10)
            return;
        fprintf(p->out, "replayed %llu/%llu commands (%llu%%, %.0f/s)\n", (unsigned long long)done,
                (unsigned long long)p->total, (unsigned long long)pct, rate);
    }
    fflush(p->out);
    p->last_pct = pct;
    p->last_done = done;
    p->last_ns = now;
}

static int query1(PGconn *c, const char *sql, uint64_t *v, char *err, size_t errlen)
{
    PGresult *r = pg_call(c, NULL, sql, 0, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        return pg_failed(c, r, err, errlen);
    *v = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return 0;
}

static int replay(PGconn *c, store *st, wb_apply_fn fn, void *arg, uint64_t upto, progress *pg,
                  char *err, size_t errlen)
{
    char sql[256];
    uint64_t next = 1;
    int rc;

    snprintf(sql, sizeof sql,
             "DECLARE replay NO SCROLL CURSOR FOR SELECT log_index, command FROM commands"
             " WHERE log_index <= %llu ORDER BY log_index",
             (unsigned long long)upto);
    if (pg_exec(c, sql, err, errlen))
        return WB_EPG;
    for (;;) {
        PGresult *r = pg_call(c, NULL, "FETCH 5000 FROM replay", 0, NULL, 1);
        store_txn t;
        int n;
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            return pg_failed(c, r, err, errlen);
        if ((n = PQntuples(r)) == 0) {
            PQclear(r);
            break;
        }
        if ((rc = store_begin(st, 1, &t))) {
            PQclear(r);
            return rc;
        }
        for (int i = 0; i < n; i++) {
            const uint8_t *ip = (const uint8_t *)PQgetvalue(r, i, 0);
            uint64_t idx = PQgetlength(r, i, 0) == 8 ? store_rd64(ip) : 0;
            if (idx != next) {
                snprintf(err, errlen, "PostgreSQL lacks command %llu: cannot replay past it",
                         (unsigned long long)next);
                rc = WB_EGAP;
            } else
                rc = fn(arg, &t, idx, (const uint8_t *)PQgetvalue(r, i, 1),
                        (size_t)PQgetlength(r, i, 1));
            if (rc) {
                if (rc != WB_EGAP)
                    snprintf(err, errlen, "command %llu could not be applied (%d)",
                             (unsigned long long)idx, rc);
                store_abort(&t);
                PQclear(r);
                return rc;
            }
            next++;
        }
        PQclear(r);
        if (store_commit(&t))
            return CORE_EIO;
        progress_show(pg, next - 1, 0);
    }
    if (next - 1 != upto) {
        snprintf(err, errlen, "PostgreSQL has commands up to %llu but its cursor says %llu",
                 (unsigned long long)(next - 1), (unsigned long long)upto);
        return WB_EGAP;
    }
    progress_show(pg, upto, 1);
    return 0;
}

typedef struct check_table {
    const char *name, *sql;
    int db;
} check_table;

/* every row PostgreSQL has equals the store's record, and the counts agree */
static int verify(PGconn *c, store *st, FILE *out, char *err, size_t errlen)
{
    static const check_table tables[] = {
        {"users", "SELECT decode(replace(id::text, '-', ''), 'hex'), view::text FROM users",
         DB_USERS},
        {"api_keys", "SELECT key_sha256, view::text FROM api_keys", DB_APIKEYS},
        {"resources",
         "SELECT decode(replace(id::text, '-', ''), 'hex'), view::text FROM resources"
         " WHERE NOT deleted",
         DB_RES},
        {"loans", "SELECT decode(replace(id::text, '-', ''), 'hex'), view::text FROM loans",
         DB_LOANS},
        {"holds", "SELECT decode(replace(id::text, '-', ''), 'hex'), view::text FROM holds",
         DB_HOLDS},
    };
    store_txn t;
    int rc = 0;

    if ((rc = store_begin(st, 0, &t)))
        return rc;
    for (size_t k = 0; k < sizeof tables / sizeof tables[0] && !rc; k++) {
        PGresult *r = pg_call(c, NULL, tables[k].sql, 0, NULL, 1);
        MDB_stat ms;
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = pg_failed(c, r, err, errlen);
            r = NULL;
        }
        for (int i = 0; !rc && i < PQntuples(r); i++) {
            MDB_val v;
            size_t vl = (size_t)PQgetlength(r, i, 1);
            if (store_get(&t, tables[k].db, PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0),
                          &v) ||
                v.mv_size != vl || memcmp(v.mv_data, PQgetvalue(r, i, 1), vl) != 0) {
                snprintf(err, errlen,
                         "table %s row %d differs from the replayed state: PostgreSQL's tables "
                         "and its command log disagree",
                         tables[k].name, i + 1);
                rc = WB_EGAP;
            }
        }
        if (!rc && (mdb_stat(t.txn, store_dbi(st, tables[k].db), &ms) ||
                    ms.ms_entries != (size_t)PQntuples(r))) {
            snprintf(err, errlen, "table %s has %d rows, the replayed state %zu", tables[k].name,
                     PQntuples(r), ms.ms_entries);
            rc = WB_EGAP;
        }
        if (!rc && out)
            fprintf(out, "verified %s: %d rows equal\n", tables[k].name, PQntuples(r));
        PQclear(r);
    }
    store_abort(&t);
    return rc;
}

int wb_restore(const core_config *cfg, store *st, wb_apply_fn fn, void *arg, FILE *out, char *err,
               size_t errlen)
{
    progress pg = {.out = out, .tty = out && isatty(fileno(out)), .start_ns = core_mono_ns()};
    uint64_t upto = 0, applied;
    store_info si;
    PGconn *c;
    int rc;

    if ((rc = store_info_get(st, &si)))
        return rc;
    applied = si.applied_index;
    if (applied) {
        snprintf(err, errlen, "the data directory is not empty (applied index %llu)",
                 (unsigned long long)applied);
        return CORE_EINVAL;
    }
    if (!(c = pg_connect(cfg, err, errlen)))
        return WB_EPG;
    if ((rc = pg_exec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err, errlen)) ||
        (rc = query1(c, "SELECT flushed_index FROM flush_cursor WHERE id = 1", &upto, err, errlen)))
        goto done;
    pg.total = upto;
    if (out)
        fprintf(out, "PostgreSQL holds commands 1..%llu\n", (unsigned long long)upto);
    if ((rc = replay(c, st, fn, arg, upto, &pg, err, errlen)) ||
        (rc = verify(c, st, out, err, errlen)))
        goto done;
    pg_exec(c, "COMMIT", err, errlen);
    rc = store_sync(st);
done:
    PQfinish(c);
    return rc;
}
