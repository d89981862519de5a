/*
 * libFuzzer target for the Library content file parser of import/parse.c
 * (format forced to IMP_LIBRARY: a JSON array of {contentId, title,
 * contentType}).
 *
 * Every result must hold the invariants of a row (aborts otherwise): an
 * accepted row's title is 1..500 code points of UTF-8 without NUL, its
 * type < RTYPE__COUNT, `has` is 0, and it goes through cmd_row_put and
 * cmd_row_next unchanged; no id comes twice; lines start at 1 and never
 * go back; imp_offset never goes back and stays <= the size; a reason is
 * one line of UTF-8.
 *
 * jansson is the reference. When it loads the whole file as an array, the
 * parser must not call the file broken, must give one result per element,
 * in order, each accepted row holding its element's values, and must not
 * reject an element of exactly the three keys with valid values and an id
 * not accepted before. When every element was accepted and the file did
 * not break, jansson must load it. (An element with a key twice is
 * rejected, where jansson keeps the last value.)
 *
 * Seeds: tests/fuzz/corpus/fuzz_import_library/.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "import/import.h"

#include "import_check.h"

/* ---- jansson as the reference ---- */

/* an element of exactly the three keys with valid values; its id into *id */
static int element_valid(json_t *e, core_uuid *id)
{
    json_t *i = json_object_get(e, "contentId"), *ti = json_object_get(e, "title"),
           *ty = json_object_get(e, "contentType");
    long n =
        json_is_string(ti) ? core_utf8_count(json_string_value(ti), json_string_length(ti)) : -1;
    return json_is_object(e) && json_object_size(e) == 3 && json_is_string(i) &&
           !core_uuid_parse(json_string_value(i), json_string_length(i), id) && n >= 1 &&
           n <= CORE_MAX_TITLE && json_is_string(ty) && type_of(ty) >= 0;
}

/* an accepted row holds its element's values */
static void row_same(json_t *e, const cmd_row *r)
{
    json_t *i = json_object_get(e, "contentId"), *ti = json_object_get(e, "title");
    core_uuid id;
    if (!json_is_object(e) || !json_is_string(i) ||
        core_uuid_parse(json_string_value(i), json_string_length(i), &id) ||
        memcmp(id.b, r->id.b, 16) || !json_is_string(ti) ||
        !str_eq((core_str){json_string_value(ti), (uint32_t)json_string_length(ti)}, r->title) ||
        type_of(json_object_get(e, "contentType")) != r->type || r->has)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static track t;
    static cmd_row r;
    char reason[300], err[300];
    imp_parser *p;
    size_t bom = size >= 3 && !memcmp(data, "\xef\xbb\xbf", 3) ? 3 : 0, k = 0;
    json_t *doc, *strict;
    int rc, rejects = 0;

    if (imp_open(data, size, IMP_LIBRARY, &p, err, sizeof err)) {
        reason_ok(err);
        return 0;
    }
    memset(&t, 0, sizeof t);
    doc = json_loadb((const char *)data + bom, size - bom, JSON_ALLOW_NUL, NULL);
    if (!json_is_array(doc)) {
        json_decref(doc);
        doc = NULL;
    }
    /* jansson keeps the last of a repeated key; the parser rejects the row */
    strict = json_loadb((const char *)data + bom, size - bom,
                        JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, NULL);
    while ((rc = imp_next(p, &r, reason, sizeof reason)) > 0) {
        result_ok(p, size, rc, &r, reason, &t);
        if (doc) {
            json_t *e = json_array_get(doc, k);
            core_uuid id;
            if (!e)
                __builtin_trap(); /* more results than elements */
            if (rc == 1)
                row_same(e, &r);
            else if (strict && size <= IMP_MAX_ROW && element_valid(e, &id) &&
                     !accepted_before(&t, &id))
                __builtin_trap(); /* a good element was rejected */
        }
        rejects += rc == IMP_REJECT;
        k++;
    }
    result_ok(p, size, rc, &r, reason, &t);
    if (doc && (rc != 0 || k != json_array_size(doc)))
        __builtin_trap();
    if (!doc && rc == 0 && !rejects)
        __builtin_trap(); /* all accepted, yet not JSON */
    json_decref(doc);
    json_decref(strict);
    imp_close(p);
    return 0;
}
