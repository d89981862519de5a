/*
 * ingest.c — catalog imports (POST /v1/imports) off the HTTP threads.
 *
 * An import of a large file parses for seconds and waits on thousands of
 * commands; on an HTTP actor that would stall every connection of its
 * thread. The handler hands the file to this actor (one thread: imports
 * run one after another, from a short bounded queue). For each file it
 *   1. takes its SHA-256 and looks it up among the recorded imports: the
 *      same file again is answered from that record, changing nothing;
 *   2. parses the whole file with import/ (format detected or given)
 *      before sending anything, so a file whose structure breaks is
 *      refused whole; the good rows, encoded, take about the file's size
 *      again in memory;
 *   3. sorts the rows by id and packs them into CMD_IMPORT commands of at
 *      most CMD_MAX_SIZE bytes, each applied atomically by the raft actor,
 *      INGEST_WINDOW of them in flight so the raft actor gets large
 *      entries. The order matters for speed only: ids are random (UUIDv4
 *      from other systems), and in file order every row of a transaction
 *      dirties its own B-tree leaf page; in id order a transaction's rows
 *      share a narrow run of pages;
 *   4. adds up their answers and the parser's rejections, and ends with
 *      CMD_IMPORT_DONE, which records the digest and the summary.
 * Rows are upserts by id, so a failure midway (no leader, the node stops)
 * leaves a state that the same file sent again completes: the rows that
 * landed come back "unchanged", the rest are written, then the digest is
 * recorded. The answer goes back through the HTTP actor's inbox.
 */
#include "import/import.h"
#include "net/internal.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#define INGEST_QUEUE      4   /* imports waiting for the one running */
#define INGEST_WINDOW     128 /* CMD_IMPORT commands in flight (8 MiB) */
#define INGEST_CMD_BUDGET (CMD_MAX_SIZE - 512)
#define INGEST_REJECTIONS 1000 /* rejections listed in an answer; all are counted */

struct ingest {
    http_server *srv;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ingest_job *head, **tail;
    int queued, stop, started;
    core_inbox *in; /* the raft actor's answers */
};

/* one CMD_IMPORT on its way */
typedef struct slot {
    repl_req q;
    core_buf rows;
    uint32_t n;
    int busy;
} slot;

/* what an import has done so far */
typedef struct tally {
    uint64_t rows;           /* rows sent and answered */
    uint64_t parse_rejected; /* rows the parser rejected */
    uint64_t created, updated, unchanged, rejected;
    json_t *rejections;
    int failed_status; /* the first failed command's answer */
    char failed[400];
} tally;

static void set_answer(ingest_job *j, int status, int problem, char *body)
{
    j->status = status;
    j->problem = problem;
    j->body = body;
    j->body_len = body ? strlen(body) : 0;
}

static void answer_problem(ingest_job *j, int status, const char *kind, const char *detail)
{
    size_t len;
    char *b = core_problem(status, kind, detail, NULL, &len);
    set_answer(j, b ? status : 500, 1, b);
}

static void note_rejection(tally *t, uint32_t line, const char *id, const char *reason)
{
    t->rejected++;
    if (json_array_size(t->rejections) >= INGEST_REJECTIONS)
        return;
    json_t *r = json_pack("{s:I,s:s}", "line", (json_int_t)line, "reason", reason);
    if (r && id)
        json_object_set_new(r, "id", json_string(id));
    json_array_append_new(t->rejections, r);
}

/* folds one CMD_IMPORT answer into t */
static void note_answer(tally *t, slot *s)
{
    apply_result *r = &s->q.res;
    json_t *b = r->body ? json_loadb(r->body, r->body_len, 0, NULL) : NULL, *e;
    size_t i;

    if (r->status != 200 || r->problem || !json_is_object(b)) {
        if (!t->failed_status) {
            const char *d = json_string_value(json_object_get(b, "detail"));
            t->failed_status = r->status >= 400 ? r->status : 500;
            snprintf(t->failed, sizeof t->failed, "%s", d ? d : "a batch of rows failed");
        }
        json_decref(b);
        return;
    }
    t->rows += s->n;
    t->created += (uint64_t)json_integer_value(json_object_get(b, "created"));
    t->updated += (uint64_t)json_integer_value(json_object_get(b, "updated"));
    t->unchanged += (uint64_t)json_integer_value(json_object_get(b, "unchanged"));
    json_array_foreach (json_object_get(b, "rejected"), i, e)
        note_rejection(t, (uint32_t)json_integer_value(json_object_get(e, "line")),
                       json_string_value(json_object_get(e, "id")),
                       json_string_value(json_object_get(e, "reason")));
    json_decref(b);
}

static void submit(ingest *g, const ingest_job *j, slot *s, const cmd *c)
{
    apply_result_clear(&s->q.res);
    s->q.cmd.len = 0;
    s->q.reply_to = g->in;
    s->q.link.type = 1;
    s->busy = 1;
    if (cmd_encode(c, &s->q.cmd)) {
        /* cannot happen with rows under the budget; answered like a failure */
        s->q.res.status = 500;
        s->q.res.problem = 1;
        core_inbox_push(g->in, &s->q.link);
        return;
    }
    repl_submit(g->srv->rp, &s->q);
}

/* waits for at least one answer; returns the slot answered */
static slot *wait_answer(ingest *g)
{
    core_msg *m;
    for (;;) {
        if ((m = core_inbox_pop(g->in)) != NULL)
            return (slot *)(void *)m; /* q is the first member of slot */
        struct pollfd pfd = {.fd = core_inbox_fd(g->in), .events = POLLIN};
        poll(&pfd, 1, 1000);
        core_inbox_ack(g->in);
    }
}

static cmd command_of(const ingest_job *j, int type)
{
    cmd c = {.type = (uint8_t)type, .ts_ms = core_now_ms(), .actor_role = j->actor_role};
    c.actor = j->actor;
    return c;
}

static void submit_rows(ingest *g, const ingest_job *j, slot *s)
{
    cmd c = command_of(j, CMD_IMPORT);
    c.u.import.n = s->n;
    c.u.import.rows = (core_str){(const char *)s->rows.p, (uint32_t)s->rows.len};
    submit(g, j, s, &c);
}

/* Answers with an import record (taken): with what this run rejected (t),
 * or, t NULL, as the record of an earlier import of the same file. 0, or
 * -1 when rec is not a record. */
static int answer_record(ingest_job *j, json_t *rec, const tally *t)
{
    char *s;
    if (!json_is_object(rec)) {
        json_decref(rec);
        return -1;
    }
    json_object_set_new(rec, "duplicate", json_boolean(!t));
    json_object_set_new(rec, "rejections", t ? json_incref(t->rejections) : json_array());
    json_object_set_new(rec, "rejections_truncated",
                        json_boolean(t && t->rejected > json_array_size(t->rejections)));
    s = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    if (s)
        set_answer(j, 200, 0, s);
    else
        answer_problem(j, 500, "internal", "out of memory");
    return 0;
}

/* the answer to CMD_IMPORT_DONE: 201 recorded now, 200 recorded before */
static void answer_done(ingest_job *j, tally *t, apply_result *r)
{
    if ((r->status != 201 && r->status != 200) || r->problem) {
        set_answer(j, r->status ? r->status : 500, r->problem, r->body);
        r->body = NULL;
        return;
    }
    if (answer_record(j, r->body ? json_loadb(r->body, r->body_len, 0, NULL) : NULL,
                      r->status == 201 ? t : NULL))
        answer_problem(j, 500, "internal", "the import record cannot be read");
}

/* a recorded import of this digest, as the answer to the same file again */
static int answer_recorded(ingest *g, ingest_job *j, const uint8_t sha[32])
{
    store_txn t;
    MDB_val v;
    int found = 0;
    if (store_begin(g->srv->st, 0, &t))
        return 0;
    if (store_get(&t, DB_IMPORTS, sha, 32, &v) == 0)
        found = answer_record(j, json_loadb(v.mv_data, v.mv_size, 0, NULL), NULL) == 0;
    store_abort(&t);
    return found;
}

/* a parsed row: its id and where its encoding sits in the import's rows */
typedef struct parsed {
    core_uuid id;
    uint32_t len;
    size_t off;
} parsed;

typedef struct parsed_file {
    core_buf rows; /* every good row, cmd_row_put one after another */
    parsed *idx;
    size_t n, cap;
} parsed_file;

static int by_id(const void *a, const void *b)
{
    return memcmp(((const parsed *)a)->id.b, ((const parsed *)b)->id.b, 16);
}

static int by_line(const void *a, const void *b)
{
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "line"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "line"));
    return (x > y) - (x < y);
}

static void fail_with(tally *t, int status, const char *why)
{
    if (!t->failed_status) {
        t->failed_status = status;
        snprintf(t->failed, sizeof t->failed, "%s", why);
    }
}

/* the file's structure is broken: refused whole (422) */
static void unimportable(tally *t, const char *why)
{
    char d[360];
    snprintf(d, sizeof d, "the file cannot be imported: %s", why);
    fail_with(t, 422, d);
}

/* Pass 1: the whole file into f, rejected rows into t. A file whose
 * structure breaks sets t->failed_status (422) before anything is sent. */
static void parse_all(ingest *g, imp_parser *p, tally *t, parsed_file *f)
{
    char reason[300];
    for (;;) {
        cmd_row w;
        size_t off = f->rows.len;
        int rc;
        if (atomic_load(&g->srv->draining)) {
            fail_with(t, 503, "this node is shutting down");
            return;
        }
        rc = imp_next(p, &w, reason, sizeof reason);
        if (rc == IMP_REJECT) {
            note_rejection(t, w.line, NULL, reason);
            t->parse_rejected++;
            continue;
        }
        if (rc == CORE_EINVAL) {
            unimportable(t, reason);
            return;
        }
        if (rc < 0) {
            fail_with(t, 500, "out of memory");
            return;
        }
        if (rc != 1)
            return;
        if ((rc = cmd_row_put(&f->rows, &w))) {
            f->rows.len = off;
            if (rc != CORE_ERANGE) {
                fail_with(t, 500, "out of memory");
                return;
            }
            note_rejection(t, w.line, NULL, "the row is over a field limit");
            t->parse_rejected++;
            continue;
        }
        if (f->n == f->cap) {
            size_t cap = f->cap ? f->cap * 2 : 4096;
            parsed *ni = realloc(f->idx, cap * sizeof *ni);
            if (!ni) {
                fail_with(t, 500, "out of memory");
                return;
            }
            f->idx = ni;
            f->cap = cap;
        }
        f->idx[f->n++] = (parsed){w.id, (uint32_t)(f->rows.len - off), off};
    }
}

/* Pass 2: the rows in id order as CMD_IMPORT commands, INGEST_WINDOW in
 * flight, their answers folded into t. In id order each command, and each
 * raft entry of many commands, touches a narrow run of the B-trees' leaf
 * pages instead of one page per row. */
static void send_all(ingest *g, const ingest_job *j, slot *slots, tally *t, const parsed_file *f)
{
    slot *cur = NULL;
    int busy = 0;

    qsort(f->idx, f->n, sizeof *f->idx, by_id);
    for (size_t i = 0; i <= f->n; i++) {
        const parsed *r = i < f->n ? &f->idx[i] : NULL;
        if (r && atomic_load(&g->srv->draining))
            fail_with(t, 503, "this node is shutting down");
        if (t->failed_status) { /* nothing more is sent */
            if (cur)
                cur->busy = 0;
            cur = NULL;
            break;
        }
        /* the batch is full, or there are no more rows: send it */
        if (cur && (!r || cur->rows.len + r->len > INGEST_CMD_BUDGET)) {
            submit_rows(g, j, cur);
            busy++;
            cur = NULL;
        }
        if (!r)
            break;
        if (!cur) {
            while (busy == INGEST_WINDOW) {
                slot *s = wait_answer(g);
                note_answer(t, s);
                s->busy = 0;
                busy--;
            }
            for (int k = 0; k < INGEST_WINDOW; k++)
                if (!slots[k].busy) {
                    cur = &slots[k];
                    break;
                }
            cur->rows.len = 0;
            cur->n = 0;
            cur->busy = 1;
        }
        if (core_buf_put(&cur->rows, f->rows.p + r->off, r->len)) {
            fail_with(t, 500, "out of memory");
            continue;
        }
        cur->n++;
    }
    while (busy) {
        slot *s = wait_answer(g);
        note_answer(t, s);
        s->busy = 0;
        busy--;
    }
}

/* the listed rejections in file order: the parser's come first, apply's later */
static void sort_rejections(tally *t)
{
    size_t n = json_array_size(t->rejections);
    json_t **v = n ? malloc(n * sizeof *v) : NULL, *a = json_array();
    if (!v || !a) {
        free(v);
        json_decref(a);
        return;
    }
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(t->rejections, i);
    qsort(v, n, sizeof *v, by_line);
    for (size_t i = 0; i < n; i++)
        json_array_append(a, v[i]);
    free(v);
    json_decref(t->rejections);
    t->rejections = a;
}

static void run(ingest *g, ingest_job *j)
{
    uint8_t sha[32];
    unsigned shalen = 32;
    char err[300];
    imp_parser *p = NULL;
    slot slots[INGEST_WINDOW];
    parsed_file f = {0};
    tally t = {.rejections = json_array()};
    int rc;

    memset(slots, 0, sizeof slots);
    if (!t.rejections || EVP_Digest(j->data, j->len, sha, &shalen, EVP_sha256(), NULL) != 1) {
        answer_problem(j, 500, "internal", "out of memory");
        goto out;
    }
    if (answer_recorded(g, j, sha))
        goto out;
    if ((rc = imp_open(j->data, j->len, j->format, &p, err, sizeof err))) {
        if (rc != CORE_EINVAL) {
            answer_problem(j, 500, "internal", "out of memory");
            goto out;
        }
        unimportable(&t, err);
    } else {
        parse_all(g, p, &t, &f);
    }
    if (!t.failed_status)
        send_all(g, j, slots, &t, &f);
    if (t.failed_status) {
        char d[700];
        if (t.failed_status == 422 && !t.rows) {
            answer_problem(j, 422, "validation", t.failed);
            goto out;
        }
        snprintf(d, sizeof d,
                 "the import stopped after %llu rows (%s); the rows applied stay: send the same "
                 "file again to complete it",
                 (unsigned long long)t.rows, t.failed);
        answer_problem(j, t.failed_status >= 500 ? 503 : t.failed_status, "import-incomplete", d);
        goto out;
    }
    sort_rejections(&t);
    {
        cmd c = command_of(j, CMD_IMPORT_DONE);
        slot *s = &slots[0];
        memcpy(c.u.import_done.sha256, sha, 32);
        c.u.import_done.format = (uint8_t)imp_format(p);
        c.u.import_done.name = (core_str){j->name, (uint32_t)strlen(j->name)};
        c.u.import_done.rows = (uint32_t)(t.rows + t.parse_rejected);
        c.u.import_done.created = (uint32_t)t.created;
        c.u.import_done.updated = (uint32_t)t.updated;
        c.u.import_done.unchanged = (uint32_t)t.unchanged;
        c.u.import_done.rejected = (uint32_t)t.rejected;
        submit(g, j, s, &c);
        wait_answer(g);
        s->busy = 0;
        answer_done(j, &t, &s->q.res);
    }
out:
    for (int i = 0; i < INGEST_WINDOW; i++) {
        apply_result_clear(&slots[i].q.res);
        core_buf_free(&slots[i].q.cmd);
        core_buf_free(&slots[i].rows);
    }
    core_buf_free(&f.rows);
    free(f.idx);
    json_decref(t.rejections);
    if (p)
        imp_close(p);
    free(j->data);
    j->data = NULL;
}

static void *ingest_main(void *arg)
{
    ingest *g = arg;
    for (;;) {
        ingest_job *j;
        pthread_mutex_lock(&g->mu);
        while (!g->head && !g->stop)
            pthread_cond_wait(&g->cv, &g->mu);
        if (!g->head) {
            pthread_mutex_unlock(&g->mu);
            return NULL;
        }
        j = g->head;
        g->head = j->next;
        if (!g->head)
            g->tail = &g->head;
        g->queued--;
        pthread_mutex_unlock(&g->mu);
        run(g, j);
        core_inbox_push(j->reply_to, &j->link);
    }
}

ingest *ingest_new(http_server *s)
{
    ingest *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->srv = s;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->tail = &g->head;
    if (!(g->in = core_inbox_new()) || pthread_create(&g->thread, NULL, ingest_main, g)) {
        ingest_stop(g);
        return NULL;
    }
    g->started = 1;
    return g;
}

int ingest_submit(ingest *g, ingest_job *j)
{
    int rc = -1;
    pthread_mutex_lock(&g->mu);
    if (!g->stop && g->queued < INGEST_QUEUE) {
        j->next = NULL;
        *g->tail = j;
        g->tail = &j->next;
        g->queued++;
        pthread_cond_signal(&g->cv);
        rc = 0;
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

void ingest_stop(ingest *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    g->stop = 1;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    if (g->started)
        pthread_join(g->thread, NULL);
    core_inbox_free(g->in);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}
