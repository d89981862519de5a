/*
 * libFuzzer target for the JSON Lines parser of import/parse.c (format
 * forced to IMP_JSONL).
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
 * jansson is the reference: the k-th result is the k-th line that is not
 * blank. An accepted row's line must load with json_loadb and hold the
 * same values. A rejected line that jansson loads (refusing duplicate
 * keys) as an object of valid fields, with an id not accepted before,
 * must not have been rejected.
 *
 * Seeds: tests/fuzz/corpus/fuzz_import_jsonl/.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "import/import.h"

#include "import_check.h"

/* ---- jansson as the reference ---- */

static core_str jstr(json_t *v)
{
    return (core_str){json_string_value(v), (uint32_t)json_string_length(v)};
}

static int text_valid(json_t *v, long max)
{
    if (!json_is_string(v))
        return 0;
    long n = core_utf8_count(json_string_value(v), json_string_length(v));
    return n >= 1 && n <= max;
}

static int list_valid(json_t *v, long max)
{
    size_t i;
    json_t *e;
    if (json_is_null(v))
        return 1;
    if (!json_is_array(v) || json_array_size(v) > CORE_MAX_LIST)
        return 0;
    json_array_foreach (v, i, e)
        if (!text_valid(e, max))
            return 0;
    return 1;
}

/* the line is an object of valid fields; its id into *id */
static int line_valid(const char *p, size_t n, core_uuid *id)
{
    static const char *const keys[] = {"id",      "title", "type",      "copies",     "premium",
                                       "authors", "tags",  "available", "created_at", "updated_at"};
    json_t *o = json_loadb(p, n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL), *v;
    const char *k;
    /* a raw NUL byte rejects a row (import.h); jansson takes one after a
     * complete value as the end of its input */
    int ok = json_is_object(o) && !memchr(p, '\0', n);
    if (ok)
        json_object_foreach (o, k, v) {
            size_t i = 0;
            while (i < sizeof keys / sizeof keys[0] && strcmp(keys[i], k))
                i++;
            ok &= i < sizeof keys / sizeof keys[0];
        }
    if (ok) {
        json_t *c = json_object_get(o, "copies"), *pr = json_object_get(o, "premium"),
               *ty = json_object_get(o, "type"), *i = json_object_get(o, "id");
        ok = json_is_string(i) &&
             !core_uuid_parse(json_string_value(i), json_string_length(i), id) &&
             text_valid(json_object_get(o, "title"), CORE_MAX_TITLE) && json_is_string(ty) &&
             type_of(ty) >= 0 &&
             (!c || json_is_null(c) ||
              (json_is_integer(c) && json_integer_value(c) >= 0 &&
               json_integer_value(c) <= CORE_MAX_COPIES)) &&
             (!pr || json_is_null(pr) || json_is_boolean(pr)) &&
             (!json_object_get(o, "authors") ||
              list_valid(json_object_get(o, "authors"), CORE_MAX_AUTHOR)) &&
             (!json_object_get(o, "tags") || list_valid(json_object_get(o, "tags"), CORE_MAX_TAG));
    }
    json_decref(o);
    return ok;
}

static void list_same(json_t *v, const core_str *items, int n, int has)
{
    size_t i;
    json_t *e;
    if (!has) {
        if (v && !json_is_null(v))
            __builtin_trap();
        return;
    }
    if (!json_is_array(v) || json_array_size(v) != (size_t)n)
        __builtin_trap();
    json_array_foreach (v, i, e)
        if (!json_is_string(e) || !str_eq(jstr(e), items[i]))
            __builtin_trap();
}

/* an accepted row holds what jansson reads from its line */
static void row_same(const char *p, size_t n, const cmd_row *r)
{
    json_error_t je;
    json_t *o = json_loadb(p, n, JSON_ALLOW_NUL, &je), *v;
    core_uuid id;
    if (!json_is_object(o))
        __builtin_trap();
    v = json_object_get(o, "id");
    if (!json_is_string(v) || core_uuid_parse(json_string_value(v), json_string_length(v), &id) ||
        memcmp(id.b, r->id.b, 16) || !str_eq(jstr(json_object_get(o, "title")), r->title) ||
        type_of(json_object_get(o, "type")) != r->type)
        __builtin_trap();
    v = json_object_get(o, "copies");
    if ((r->has & ROW_COPIES) ? json_integer_value(v) != r->copies : v && !json_is_null(v))
        __builtin_trap();
    v = json_object_get(o, "premium");
    if ((r->has & ROW_PREMIUM) ? !json_is_boolean(v) || json_is_true(v) != r->premium
                               : v && !json_is_null(v))
        __builtin_trap();
    list_same(json_object_get(o, "authors"), r->authors, r->n_authors, r->has & ROW_AUTHORS);
    list_same(json_object_get(o, "tags"), r->tags, r->n_tags, r->has & ROW_TAGS);
    json_decref(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static track t;
    static cmd_row r;
    char reason[300], err[300];
    imp_parser *p;
    size_t pos = size >= 3 && !memcmp(data, "\xef\xbb\xbf", 3) ? 3 : 0;
    uint32_t line = 0;
    int rc;

    if (imp_open(data, size, IMP_JSONL, &p, err, sizeof err)) {
        reason_ok(err);
        return 0;
    }
    memset(&t, 0, sizeof t);
    do {
        /* the next line that is not blank, as jansson will read it */
        const char *s = NULL;
        size_t n = 0;
        while (pos < size) {
            const uint8_t *nl = memchr(data + pos, '\n', size - pos);
            size_t e = nl ? (size_t)(nl - data) : size, k;
            s = (const char *)data + pos;
            n = e - pos - (e > pos && data[e - 1] == '\r');
            line++;
            pos = nl ? e + 1 : size;
            for (k = 0; k < n && strchr(" \t\r", s[k]) && s[k]; k++)
                ;
            if (k < n)
                break;
            s = NULL;
        }
        rc = imp_next(p, &r, reason, sizeof reason);
        result_ok(p, size, rc, &r, reason, &t);
        if (rc == 0 || rc < 0) {
            if (rc == 0 && s)
                __builtin_trap(); /* a line was left out */
            break;
        }
        if (!s || r.line != line)
            __builtin_trap();
        if (rc == 1)
            row_same(s, n, &r);
        else if (n <= IMP_MAX_ROW) {
            core_uuid id;
            if (line_valid(s, n, &id) && !accepted_before(&t, &id))
                __builtin_trap(); /* a good row was rejected */
        }
    } while (1);
    imp_close(p);
    return 0;
}
