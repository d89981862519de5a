/*
 * api_catalog.c — the catalog: list (by type, with a cursor), counts,
 * get, create, replace and delete. Reads copy stored JSON views straight
 * into the response; the cursor is the last id of the previous page, so a
 * page costs one B-tree seek however deep it is.
 */
#include "import/import.h"
#include "net/internal.h"

#include <strings.h>
#include <stdlib.h>
#include <string.h>

int h_res_get(req_ctx *c, const core_uuid *id)
{
    MDB_val v;
    if (store_get(read_txn(c), DB_RES, id->b, 16, &v))
        return reply_problem(c, 404, "not-found", "no such resource", NULL);
    reply_json(c, 200, v.mv_data, v.mv_size);
    return 0;
}

int h_res_counts(req_ctx *c, const core_uuid *unused)
{
    struct evbuffer *b = evhttp_request_get_output_buffer(c->req);
    evbuffer_add(b, "{", 1);
    for (int t = 0; t < RTYPE__COUNT; t++) {
        char name[40];
        snprintf(name, sizeof name, "count/%s", core_rtype_name(t));
        evbuffer_add_printf(b, "%s\"%s\":%llu", t ? "," : "", core_rtype_name(t),
                            (unsigned long long)store_meta_u64(read_txn(c), name));
    }
    evbuffer_add(b, "}", 1);
    reply_buf(c, 200, "application/json", b);
    return 0;
}

int h_res_list(req_ctx *c, const core_uuid *unused)
{
    const char *type = query_get(c, "type"), *lim = query_get(c, "limit"),
               *cursor = query_get(c, "cursor");
    struct evbuffer *b = evhttp_request_get_output_buffer(c->req);
    store_txn *t = read_txn(c);
    int rtype = -1, n = 0, rc;
    long limit = 50;
    core_uuid after;
    uint8_t k[17];
    size_t plen;
    MDB_cursor *cur;
    MDB_val key, val;
    char last[37] = "";

    if (type && (rtype = core_rtype_parse(type)) < 0)
        return reply_problem(c, 422, "validation", "type is not a known resource type", "type");
    if (lim) {
        char *end;
        limit = strtol(lim, &end, 10);
        if (*end || limit < 1 || limit > 200)
            return reply_problem(c, 422, "validation", "limit must be from 1 to 200", "limit");
    }
    if (cursor && core_uuid_parse(cursor, strlen(cursor), &after))
        return reply_problem(c, 422, "validation", "cursor is not valid", "cursor");
    /* by type: keys are type + id in DB_RES_TYPE; else ids in DB_RES */
    plen = rtype >= 0 ? 1 : 0;
    k[0] = (uint8_t)rtype;
    if (cursor)
        memcpy(k + plen, after.b, 16);
    else
        memset(k + plen, 0, 16);
    if (mdb_cursor_open(t->txn, store_dbi(t->st, rtype >= 0 ? DB_RES_TYPE : DB_RES), &cur))
        return reply_problem(c, 503, "unavailable", "the store cannot be read", NULL);
    key.mv_data = k;
    key.mv_size = plen + 16;
    rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
    if (rc == 0 && cursor && key.mv_size == plen + 16 && memcmp(key.mv_data, k, plen + 16) == 0)
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    evbuffer_add(b, "{\"items\":[", 10);
    while (rc == 0 && key.mv_size == plen + 16 &&
           (!plen || ((uint8_t *)key.mv_data)[0] == (uint8_t)rtype)) {
        const uint8_t *id = (const uint8_t *)key.mv_data + plen;
        MDB_val r = val;
        if (n == limit)
            break;
        if (plen && store_get(t, DB_RES, id, 16, &r)) {
            rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
            continue;
        }
        if (n++)
            evbuffer_add(b, ",", 1);
        evbuffer_add(b, r.mv_data, r.mv_size);
        core_uuid_fmt((const core_uuid *)id, last);
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    int more = rc == 0 && n == limit && key.mv_size == plen + 16 &&
               (!plen || ((uint8_t *)key.mv_data)[0] == (uint8_t)rtype);
    mdb_cursor_close(cur);
    if (more)
        evbuffer_add_printf(b, "],\"next_cursor\":\"%s\"}", last);
    else
        evbuffer_add(b, "],\"next_cursor\":null}", 21);
    reply_buf(c, 200, "application/json", b);
    return 0;
}

/* shared by POST (id optional, create only) and PUT (id from path, upsert) */
static int res_write(req_ctx *c, const core_uuid *path_id)
{
    static const char *const post_allowed[] = {"title",   "type", "copies", "premium",
                                               "authors", "tags", "id",     NULL};
    static const char *const put_allowed[] = {"title",   "type", "copies", "premium",
                                              "authors", "tags", NULL};
    cmd cm = {.type = CMD_RES_PUT};
    json_t *o;
    uint64_t copies = 1;
    int type, premium = 0, rc;

    if (require_role(c, ROLES_STAFF))
        return -1;
    if (!(o = body_object(c, path_id ? put_allowed : post_allowed)))
        return -1;
    if (body_str(c, o, "title", 1, 1, CORE_MAX_TITLE, &cm.u.res_put.title) ||
        body_enum(c, o, "type", 1, core_rtype_parse, &type) ||
        body_uint(c, o, "copies", 0, CORE_MAX_COPIES, &copies) < 0 ||
        body_bool(c, o, "premium", &premium) < 0 ||
        body_str_list(c, o, "authors", CORE_MAX_LIST, CORE_MAX_AUTHOR, cm.u.res_put.authors,
                      &cm.u.res_put.n_authors) < 0 ||
        body_str_list(c, o, "tags", CORE_MAX_LIST, CORE_MAX_TAG, cm.u.res_put.tags,
                      &cm.u.res_put.n_tags) < 0)
        return -1;
    if (path_id) {
        cm.u.res_put.id = *path_id;
        cm.u.res_put.mode = RES_UPSERT;
    } else {
        rc = body_uuid(c, o, "id", 0, &cm.u.res_put.id);
        if (rc < 0)
            return -1;
        if (rc == 1 && core_uuid_v7(&cm.u.res_put.id, core_now_ms()))
            return reply_problem(c, 500, "internal", "could not make an id", NULL);
        cm.u.res_put.mode = RES_CREATE;
    }
    cm.u.res_put.type = (uint8_t)type;
    cm.u.res_put.copies = (uint32_t)copies;
    cm.u.res_put.premium = (uint8_t)premium;
    return propose(c, &cm);
}

int h_res_create(req_ctx *c, const core_uuid *unused)
{
    return res_write(c, NULL);
}
int h_res_put(req_ctx *c, const core_uuid *id)
{
    return res_write(c, id);
}

int h_res_delete(req_ctx *c, const core_uuid *id)
{
    cmd cm = {.type = CMD_RES_DELETE};
    if (require_role(c, ROLES_STAFF))
        return -1;
    cm.u.target.id = *id;
    return propose(c, &cm);
}

/* POST /v1/imports: the body is a catalog file; the ingest actor does the
 * work and the answer comes back through this actor's inbox */
int h_import(req_ctx *c, const core_uuid *unused)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
    const char *fmt = query_get(c, "format"), *name = query_get(c, "name");
    const char *ctype =
        evhttp_find_header(evhttp_request_get_input_headers(c->req), "Content-Type");
    ingest_job *j;
    int format = IMP_AUTO;

    if (require_role(c, ROLES_STAFF))
        return -1;
    if (fmt && (format = imp_format_parse(fmt)) < 0)
        return reply_problem(c, 422, "validation", "format must be auto, library, jsonl or csv",
                             "format");
    if (!fmt && ctype) {
        /* a media type that names the format, when the query does not */
        if (strncasecmp(ctype, "text/csv", 8) == 0)
            format = IMP_CSV;
        else if (strncasecmp(ctype, "application/x-ndjson", 20) == 0 ||
                 strncasecmp(ctype, "application/jsonl", 17) == 0)
            format = IMP_JSONL;
    }
    if (name && (strlen(name) > CMD_MAX_NAME || core_utf8_count(name, strlen(name)) < 0))
        return reply_problem(c, 422, "validation", "name must be valid UTF-8 of at most 255 bytes",
                             "name");
    if (write_admitted(c) < 0)
        return -1;
    if (!(j = calloc(1, sizeof *j)) || !(j->data = malloc(evbuffer_get_length(in) + 1))) {
        free(j);
        return reply_problem(c, 503, "unavailable", "out of memory for this file", NULL);
    }
    c->import = j;
    j->len = evbuffer_get_length(in);
    evbuffer_remove(in, j->data, j->len);
    j->format = format;
    snprintf(j->name, sizeof j->name, "%s", name ? name : "");
    j->actor = c->who.id;
    j->actor_role = (uint8_t)c->who.role;
    j->c = c;
    j->reply_to = c->a->in;
    j->link.type = MSG_IMPORTED;
    atomic_fetch_add(&c->a->srv->inflight, 1);
    if (ingest_submit(c->a->srv->ingest, j)) {
        atomic_fetch_sub(&c->a->srv->inflight, 1);
        evhttp_add_header(evhttp_request_get_output_headers(c->req), "Retry-After", "5");
        return reply_problem(c, 503, "busy", "imports are queued to the limit; retry later", NULL);
    }
    return 0;
}
