/*
 * import_check.h — the invariants every result of imp_next() must hold,
 * shared by the three import fuzz targets (fuzz_import_*.c): an accepted
 * row's fields within the limits of core.h and unchanged through
 * cmd_row_put/cmd_row_next, no id twice, lines and imp_offset never going
 * back, a reason one line of UTF-8. A violation traps. Also the type
 * lookup the JSON targets' jansson reference uses.
 */
#ifndef CIRCA_FUZZ_IMPORT_CHECK_H
#define CIRCA_FUZZ_IMPORT_CHECK_H

#include <stdint.h>
#include <string.h>

#include "import/import.h"

#include <jansson.h>

typedef struct track {
    core_uuid ids[4096];
    size_t n_ids, off;
    uint32_t line;
} track;

static inline void text_ok(core_str s, long max)
{
    long n = core_utf8_count(s.p, s.len);
    if (n < 1 || n > max || s.len > 4 * (size_t)max)
        __builtin_trap();
}

static inline void reason_ok(const char *r)
{
    long n = core_utf8_count(r, strlen(r));
    if (n < 1 || strchr(r, '\n'))
        __builtin_trap();
}

static inline int str_eq(core_str a, core_str b)
{
    return a.len == b.len && (!a.len || memcmp(a.p, b.p, a.len) == 0);
}

static inline void row_ok(const cmd_row *r)
{
    cmd_row back;
    core_buf b = {0};
    size_t off = 0;
    core_str enc;

    text_ok(r->title, CORE_MAX_TITLE);
    if (r->type >= RTYPE__COUNT || r->copies > CORE_MAX_COPIES || r->premium > 1 ||
        (r->has & ~(ROW_COPIES | ROW_PREMIUM | ROW_AUTHORS | ROW_TAGS)) ||
        r->n_authors > CORE_MAX_LIST || r->n_tags > CORE_MAX_LIST ||
        (!(r->has & ROW_COPIES) && r->copies) || (!(r->has & ROW_PREMIUM) && r->premium) ||
        (!(r->has & ROW_AUTHORS) && r->n_authors) || (!(r->has & ROW_TAGS) && r->n_tags))
        __builtin_trap();
    for (int i = 0; i < r->n_authors; i++)
        text_ok(r->authors[i], CORE_MAX_AUTHOR);
    for (int i = 0; i < r->n_tags; i++)
        text_ok(r->tags[i], CORE_MAX_TAG);
    /* what the import sends in CMD_IMPORT */
    if (cmd_row_put(&b, r) != 0)
        __builtin_trap();
    enc = (core_str){(const char *)b.p, (uint32_t)b.len};
    if (cmd_row_next(&enc, &off, &back) != 1 || off != b.len || back.line != r->line ||
        memcmp(back.id.b, r->id.b, 16) || back.has != r->has || back.type != r->type ||
        back.copies != r->copies || back.premium != r->premium || !str_eq(back.title, r->title) ||
        back.n_authors != r->n_authors || back.n_tags != r->n_tags)
        __builtin_trap();
    core_buf_free(&b);
}

/* a result of imp_next(): rc, the row, the reason */
static inline void result_ok(const imp_parser *p, size_t size, int rc, const cmd_row *r,
                             const char *reason, track *t)
{
    size_t off = imp_offset(p);
    if (off < t->off || off > size)
        __builtin_trap();
    t->off = off;
    if (rc == 0) {
        if (off != size)
            __builtin_trap();
        return;
    }
    if (rc != 1 && rc != IMP_REJECT && rc != CORE_EINVAL && rc != CORE_ENOMEM)
        __builtin_trap();
    if (rc != 1)
        reason_ok(reason);
    if (rc != 1 && rc != IMP_REJECT)
        return;
    if (r->line < 1 || r->line < t->line)
        __builtin_trap();
    t->line = r->line;
    if (rc == IMP_REJECT) {
        if (r->has || r->title.len || r->n_authors || r->n_tags || r->copies || r->premium)
            __builtin_trap();
        return;
    }
    row_ok(r);
    for (size_t i = 0; i < t->n_ids; i++)
        if (!memcmp(t->ids[i].b, r->id.b, 16))
            __builtin_trap();
    if (t->n_ids < sizeof t->ids / sizeof t->ids[0])
        t->ids[t->n_ids++] = r->id;
}

static inline int accepted_before(const track *t, const core_uuid *id)
{
    for (size_t i = 0; i < t->n_ids; i++)
        if (!memcmp(t->ids[i].b, id->b, 16))
            return 1;
    return 0;
}

/* the resource type a JSON string names (exactly), or -1: the reference
 * for the JSON targets */
static inline int type_of(json_t *v)
{
    for (int t = 0; t < RTYPE__COUNT; t++)
        if (json_string_length(v) == strlen(core_rtype_name(t)) &&
            !memcmp(json_string_value(v), core_rtype_name(t), json_string_length(v)))
            return t;
    return -1;
}

#endif
