/*
 * api_reports.c — librarian reports from the indexes apply() maintains:
 * overdue loans (DB_DUE is ordered by due time, so the scan stops at now),
 * checkouts and returns per day, and the most borrowed resources. JSON by
 * default; CSV with ?format=csv or Accept: text/csv.
 */
#include "net/internal.h"

#include <stdlib.h>
#include <string.h>

#define REPORT_MAX_ROWS 10000
#define TOP_MAX         100

static int want_csv(req_ctx *c)
{
    const char *f = query_get(c, "format");
    const char *accept = evhttp_find_header(evhttp_request_get_input_headers(c->req), "Accept");
    if (f)
        return strcmp(f, "csv") == 0 ? 1 : strcmp(f, "json") == 0 ? 0 : -1;
    return accept && strstr(accept, "text/csv") ? 1 : 0;
}

static void csv_field(struct evbuffer *b, const char *s)
{
    evbuffer_add(b, "\"", 1);
    for (; *s; s++) {
        if (*s == '"')
            evbuffer_add(b, "\"", 1);
        evbuffer_add(b, s, 1);
    }
    evbuffer_add(b, "\"", 1);
}

static int begin(req_ctx *c, int *csv)
{
    if (require_role(c, ROLES_STAFF))
        return -1;
    if ((*csv = want_csv(c)) < 0)
        return reply_problem(c, 422, "validation", "format must be json or csv", "format");
    return 0;
}

static void finish(req_ctx *c, int csv, struct evbuffer *b)
{
    if (!csv)
        evbuffer_add(b, "]}", 2);
    reply_buf(c, 200, csv ? "text/csv; charset=utf-8" : "application/json", b);
}

int h_rep_overdue(req_ctx *c, const core_uuid *unused)
{
    struct evbuffer *b = evhttp_request_get_output_buffer(c->req);
    store_txn *t = read_txn(c);
    int64_t now = core_now_ms() / 1000;
    MDB_cursor *cur;
    MDB_val key, val;
    int csv, rc, n = 0;

    if (begin(c, &csv))
        return -1;
    if (mdb_cursor_open(t->txn, store_dbi(t->st, DB_DUE), &cur))
        return reply_problem(c, 503, "unavailable", "the store cannot be read", NULL);
    evbuffer_add_printf(b, csv ? "loan_id,user_id,resource_id,due_at,days_overdue\r\n"
                               : "{\"items\":[");
    rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
    while (rc == 0 && key.mv_size == 24 && n < REPORT_MAX_ROWS) {
        int64_t due = (int64_t)store_rd64(key.mv_data);
        MDB_val lv;
        json_t *loan;
        if (due >= now)
            break;
        if (store_get(t, DB_LOANS, (const uint8_t *)key.mv_data + 8, 16, &lv) == 0 &&
            (loan = json_loadb(lv.mv_data, lv.mv_size, 0, NULL)) != NULL) {
            const char *f[4] = {json_string_value(json_object_get(loan, "id")),
                                json_string_value(json_object_get(loan, "user_id")),
                                json_string_value(json_object_get(loan, "resource_id")),
                                json_string_value(json_object_get(loan, "due_at"))};
            long long days = (now - due) / 86400;
            if (f[0] && f[1] && f[2] && f[3]) {
                if (csv)
                    evbuffer_add_printf(b, "%s,%s,%s,%s,%lld\r\n", f[0], f[1], f[2], f[3], days);
                else
                    evbuffer_add_printf(
                        b,
                        "%s{\"loan_id\":\"%s\",\"user_id\":\"%s\",\"resource_id\":\"%s\","
                        "\"due_at\":\"%s\",\"days_overdue\":%lld}",
                        n ? "," : "", f[0], f[1], f[2], f[3], days);
                n++;
            }
            json_decref(loan);
        }
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    finish(c, csv, b);
    return 0;
}

int h_rep_per_day(req_ctx *c, const core_uuid *unused)
{
    struct evbuffer *b = evhttp_request_get_output_buffer(c->req);
    store_txn *t = read_txn(c);
    MDB_cursor *cur;
    MDB_val key, val;
    int csv, rc, n = 0;

    if (begin(c, &csv))
        return -1;
    if (mdb_cursor_open(t->txn, store_dbi(t->st, DB_STAT_DAY), &cur))
        return reply_problem(c, 503, "unavailable", "the store cannot be read", NULL);
    evbuffer_add_printf(b, csv ? "day,checkouts,returns\r\n" : "{\"items\":[");
    rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
    while (rc == 0 && n < REPORT_MAX_ROWS) {
        if (key.mv_size == 10 && val.mv_size == 16) {
            const uint8_t *v = val.mv_data;
            unsigned long long co = store_rd64(v), re = store_rd64(v + 8);
            if (csv)
                evbuffer_add_printf(b, "%.10s,%llu,%llu\r\n", (const char *)key.mv_data, co, re);
            else
                evbuffer_add_printf(b, "%s{\"day\":\"%.10s\",\"checkouts\":%llu,\"returns\":%llu}",
                                    n ? "," : "", (const char *)key.mv_data, co, re);
            n++;
        }
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    finish(c, csv, b);
    return 0;
}

typedef struct top_row {
    uint8_t id[16];
    uint64_t n;
} top_row;

int h_rep_top(req_ctx *c, const core_uuid *unused)
{
    struct evbuffer *b = evhttp_request_get_output_buffer(c->req);
    store_txn *t = read_txn(c);
    const char *lim = query_get(c, "limit");
    top_row top[TOP_MAX];
    long limit = 10;
    int csv, rc, n = 0;
    MDB_cursor *cur;
    MDB_val key, val;

    if (begin(c, &csv))
        return -1;
    if (lim) {
        char *end;
        limit = strtol(lim, &end, 10);
        if (*end || limit < 1 || limit > TOP_MAX)
            return reply_problem(c, 422, "validation", "limit must be from 1 to 100", "limit");
    }
    if (mdb_cursor_open(t->txn, store_dbi(t->st, DB_STAT_RES), &cur))
        return reply_problem(c, 503, "unavailable", "the store cannot be read", NULL);
    /* keep the `limit` largest counts, sorted descending (insertion) */
    rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
    while (rc == 0) {
        if (key.mv_size == 16 && val.mv_size == 8) {
            uint64_t cnt = store_rd64(val.mv_data);
            int pos = n;
            while (pos > 0 && top[pos - 1].n < cnt)
                pos--;
            if (pos < limit) {
                int last = n < limit ? n : (int)limit - 1;
                memmove(&top[pos + 1], &top[pos], (size_t)(last - pos) * sizeof top[0]);
                memcpy(top[pos].id, key.mv_data, 16);
                top[pos].n = cnt;
                if (n < limit)
                    n++;
            }
        }
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    evbuffer_add_printf(b, csv ? "resource_id,title,checkouts\r\n" : "{\"items\":[");
    for (int i = 0; i < n; i++) {
        char id[37];
        MDB_val rv;
        json_t *r = NULL;
        core_uuid_fmt((const core_uuid *)top[i].id, id);
        if (store_get(t, DB_RES, top[i].id, 16, &rv) == 0)
            r = json_loadb(rv.mv_data, rv.mv_size, 0, NULL);
        json_t *title = r ? json_object_get(r, "title") : NULL;
        if (csv) {
            evbuffer_add_printf(b, "%s,", id);
            csv_field(b, title ? json_string_value(title) : "");
            evbuffer_add_printf(b, ",%llu\r\n", (unsigned long long)top[i].n);
        } else {
            char *tj = title ? json_dumps(title, JSON_ENCODE_ANY) : NULL;
            evbuffer_add_printf(b, "%s{\"resource_id\":\"%s\",\"title\":%s,\"checkouts\":%llu}",
                                i ? "," : "", id, tj ? tj : "null", (unsigned long long)top[i].n);
            free(tj);
        }
        json_decref(r);
    }
    finish(c, csv, b);
    return 0;
}
