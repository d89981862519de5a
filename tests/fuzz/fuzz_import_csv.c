/*
 * libFuzzer target for the CSV parser of import/parse.c (format forced to
 * IMP_CSV).
 *
 * Every result must hold the invariants of a row (aborts otherwise): an
 * accepted row's title is 1..500 code points of UTF-8 without NUL, its
 * type < RTYPE__COUNT, copies <= CORE_MAX_COPIES, at most CORE_MAX_LIST
 * authors and tags each within its limit, `has` only ROW_* bits with the
 * fields it does not set zero, and it goes through cmd_row_put and
 * cmd_row_next unchanged; no id comes twice; lines start at 1 and never
 * go back; imp_offset never goes back and stays <= the size; a reason is
 * one line of UTF-8.
 *
 * And a round trip: each accepted row, written back as a CSV record with
 * every field quoted (authors and tags joined with ';'), must parse alone
 * into the same row.
 *
 * Seeds: tests/fuzz/corpus/fuzz_import_csv/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "import/import.h"

#include "import_check.h"

/* ---- the round trip ---- */

static void put(core_buf *b, const char *s, size_t n)
{
    if (core_buf_put(b, s, n))
        __builtin_trap();
}

static void put_s(core_buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* a quoted field: its quotes doubled */
static void put_quoted(core_buf *b, const core_str *items, int n)
{
    put(b, "\"", 1);
    for (int i = 0; i < n; i++) {
        if (i)
            put(b, ";", 1);
        for (uint32_t k = 0; k < items[i].len; k++) {
            put(b, items[i].p + k, 1);
            if (items[i].p[k] == '"')
                put(b, "\"", 1);
        }
    }
    put(b, "\"", 1);
}

static void round_trip(const cmd_row *r)
{
    static cmd_row back;
    core_buf b = {0};
    char u[37], num[16], reason[300], err[300];
    imp_parser *p;
    int rc;

    put_s(&b, "id,title,type,copies,premium,authors,tags\n");
    core_uuid_fmt(&r->id, u);
    put(&b, u, 36);
    put_s(&b, ",");
    put_quoted(&b, &r->title, 1);
    put_s(&b, ",");
    put_s(&b, core_rtype_name(r->type));
    snprintf(num, sizeof num, ",%u,", (unsigned)r->copies);
    put_s(&b, r->has & ROW_COPIES ? num : ",,");
    if (r->has & ROW_PREMIUM)
        put_s(&b, r->premium ? "true" : "false");
    put_s(&b, ",");
    put_quoted(&b, r->authors, r->n_authors);
    put_s(&b, ",");
    put_quoted(&b, r->tags, r->n_tags);
    put_s(&b, "\r\n");

    if (imp_open(b.p, b.len, IMP_CSV, &p, err, sizeof err))
        __builtin_trap();
    rc = imp_next(p, &back, reason, sizeof reason);
    if (rc != 1 || back.line != 2 || memcmp(back.id.b, r->id.b, 16) || back.has != r->has ||
        back.type != r->type || back.copies != r->copies || back.premium != r->premium ||
        !str_eq(back.title, r->title) || back.n_authors != r->n_authors || back.n_tags != r->n_tags)
        __builtin_trap();
    for (int i = 0; i < r->n_authors; i++)
        if (!str_eq(back.authors[i], r->authors[i]))
            __builtin_trap();
    for (int i = 0; i < r->n_tags; i++)
        if (!str_eq(back.tags[i], r->tags[i]))
            __builtin_trap();
    if (imp_next(p, &back, reason, sizeof reason) != 0)
        __builtin_trap();
    imp_close(p);
    core_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static track t;
    static cmd_row r;
    char reason[300], err[300];
    imp_parser *p;
    int rc;

    if (imp_open(data, size, IMP_CSV, &p, err, sizeof err)) {
        reason_ok(err);
        return 0;
    }
    memset(&t, 0, sizeof t);
    while ((rc = imp_next(p, &r, reason, sizeof reason)) > 0) {
        result_ok(p, size, rc, &r, reason, &t);
        if (rc == 1)
            round_trip(&r);
    }
    result_ok(p, size, rc, &r, reason, &t);
    imp_close(p);
    return 0;
}
