/*
 * parse.c — the catalog file parsers of import.h: a Library content file (a
 * JSON array), JSON Lines and CSV, one row per imp_next() over the caller's
 * buffer, nothing loaded ahead.
 *
 * JSON rows are read by the small strict parser of this file, not by
 * jansson: json_loadb builds a tree with a score of allocations a row and
 * reached ~150k rows/s on the reference machine, short of what a 1M-row
 * import needs. The parser follows RFC 8259 and jansson's rules (UTF-8
 * checked, escapes and surrogate pairs, integers that fit 64 bits, reals
 * that do not overflow, 2048 levels of nesting; duplicate keys of the row
 * refused); a \u0000 escape decodes to a NUL that the field checks then
 * refuse. A string points into the file, or into the parser's scratch
 * buffer when it had escapes. The fuzz targets hold it against jansson.
 *
 * A Library array is walked element by element: an element that parses as
 * an object is a row; for any other, a scan of its brackets and strings
 * finds where it ends so the elements after it go on. Only a structure
 * that scan cannot follow (a string or bracket that never closes, a
 * missing comma, text after the closing bracket) breaks the file.
 *
 * CSV records are split per RFC 4180 and their values, quotes removed,
 * copied into the parser's row buffer, which the next record reuses.
 *
 * Duplicate ids: an open-addressing table of the accepted ids with the
 * line of each, hashed with a random key per parser so that a crafted file
 * cannot make its ids collide.
 */
#include "import/import.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#define IMP_DEPTH   2048 /* jansson's JSON_PARSER_MAX_DEPTH */
#define IMP_COLS    11   /* the ten known CSV columns, and one more to name in an error */
#define IMP_QUOTE   64   /* a value quoted in a reason */
#define IMP_WHYLEN  200  /* why the file broke */
#define IMP_NAMELEN 40   /* a CSV column's name as the reasons use it */
#define ONES        0x0101010101010101ULL /* a byte of 1 in each of eight */
#define HIGHS       0x8080808080808080ULL /* the high bit of each of eight bytes */

/* the fields of a row; F_IGNORED: a read-only field of a resource view */
enum { F_ID, F_TITLE, F_TYPE, F_COPIES, F_PREMIUM, F_AUTHORS, F_TAGS, F_IGNORED };

/* a field's value as the row gave it */
enum { V_ABSENT, V_STR, V_NUM, V_TRUE, V_FALSE, V_LIST, V_OTHER };

/* where the parser is */
enum { ST_ROWS, ST_LIB_FIRST, ST_LIB_NEXT, ST_END, ST_BROKEN };

typedef struct imp_key {
    const char *name;
    uint8_t len, field;
} imp_key;

static const imp_key imp_keys_jsonl[] = {
    {"id", 2, F_ID},
    {"title", 5, F_TITLE},
    {"type", 4, F_TYPE},
    {"copies", 6, F_COPIES},
    {"premium", 7, F_PREMIUM},
    {"authors", 7, F_AUTHORS},
    {"tags", 4, F_TAGS},
    {"available", 9, F_IGNORED},
    {"created_at", 10, F_IGNORED},
    {"updated_at", 10, F_IGNORED},
};
static const imp_key imp_keys_library[] = {
    {"contentId", 9, F_ID},
    {"title", 5, F_TITLE},
    {"contentType", 11, F_TYPE},
};
/* CSV columns, compared without case */
static const imp_key imp_cols[] = {
    {"id", 2, F_ID},
    {"title", 5, F_TITLE},
    {"type", 4, F_TYPE},
    {"copies", 6, F_COPIES},
    {"premium", 7, F_PREMIUM},
    {"authors", 7, F_AUTHORS},
    {"tags", 4, F_TAGS},
    {"available", 9, F_IGNORED},
    {"created_at", 10, F_IGNORED},
    {"updated_at", 10, F_IGNORED},
    {"contentId", 9, F_ID},
    {"contentType", 11, F_TYPE},
};
static const char *const imp_jsonl_names[F_IGNORED] = {"id",      "title",   "type", "copies",
                                                       "premium", "authors", "tags"};
static const char *const imp_library_names[F_IGNORED] = {"contentId", "title", "contentType"};

#define NKEYS(t) (sizeof(t) / sizeof((t)[0]))

typedef struct imp_val {
    uint8_t kind;
    core_str s; /* V_STR, V_NUM: the text */
    uint32_t n; /* V_LIST: the items, the first CORE_MAX_LIST in the row */
} imp_val;

typedef struct imp_slot {
    uint8_t id[16];
    uint32_t line; /* 0: a free slot */
} imp_slot;

struct imp_parser {
    const uint8_t *d;
    size_t len;
    size_t pos;    /* the next byte to read */
    size_t done;   /* imp_offset() */
    size_t lstart; /* where the line of d[pos] starts */
    uint32_t line; /* the line of d[pos] */
    int format, state;
    char why[IMP_WHYLEN]; /* ST_BROKEN: the reason, for every later call */
    char *buf;            /* IMP_MAX_ROW + 1 bytes: decoded JSON strings, CSV values */
    /* the row being read */
    cmd_row *row;
    char *reason;
    size_t rlen;
    int id_ok; /* row->id holds the row's id: reasons name it */
    imp_val v[F_IGNORED];
    const char *const *names; /* the fields' names in reasons */
    const imp_key *keys;
    size_t nkeys;
    char unknown[IMP_QUOTE]; /* JSON: the first unknown key, quoted */
    int dupkey;              /* JSON: a key given twice (index in keys), or -1 */
    /* CSV */
    int ncols;
    int8_t fcol[F_IGNORED]; /* the column of each field, or -1 */
    core_str cf[IMP_COLS];  /* the values of the record */
    char cname[F_IGNORED][IMP_NAMELEN];
    const char *cnames[F_IGNORED];
    /* accepted ids */
    imp_slot *ids;
    size_t icap, iused;
    uint64_t k0, k1;
};

/* ---- formats ---- */

const char *imp_format_name(int format)
{
    switch (format) {
    case IMP_AUTO:
        return "auto";
    case IMP_LIBRARY:
        return "library";
    case IMP_JSONL:
        return "jsonl";
    case IMP_CSV:
        return "csv";
    }
    return "?";
}

int imp_format_parse(const char *s)
{
    static const struct {
        const char *name;
        int format;
    } names[] = {{"auto", IMP_AUTO},   {"library", IMP_LIBRARY}, {"json", IMP_LIBRARY},
                 {"jsonl", IMP_JSONL}, {"ndjson", IMP_JSONL},    {"csv", IMP_CSV}};
    for (size_t i = 0; s && i < NKEYS(names); i++)
        if (strcasecmp(s, names[i].name) == 0)
            return names[i].format;
    return -1;
}

static int imp_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* c is one of the characters of set (never NUL) */
static int imp_in(uint8_t c, const char *set)
{
    return c && strchr(set, c);
}

static size_t imp_bom(const uint8_t *d, size_t len)
{
    return len >= 3 && d[0] == 0xef && d[1] == 0xbb && d[2] == 0xbf ? 3 : 0;
}

int imp_detect(const uint8_t *data, size_t len)
{
    size_t i = imp_bom(data, len);
    while (i < len && imp_ws(data[i]))
        i++;
    if (i < len && data[i] == '[')
        return IMP_LIBRARY;
    if (i < len && data[i] == '{')
        return IMP_JSONL;
    return IMP_CSV;
}

/* a character of plain text, as the first of a file in UTF-16 or UTF-32 */
static int imp_text_char(uint8_t c)
{
    return c == '\t' || c == '\n' || c == '\r' || (c >= 0x20 && c < 0x7f);
}

/* "UTF-16" or "UTF-32" when the file is in one of them (a BOM, or zero
 * bytes next to its first character), else NULL */
static const char *imp_wide(const uint8_t *d, size_t n)
{
    if (n >= 4 && ((d[0] == 0xff && d[1] == 0xfe && !d[2] && !d[3]) ||
                   (!d[0] && !d[1] && d[2] == 0xfe && d[3] == 0xff)))
        return "UTF-32";
    if (n >= 2 && ((d[0] == 0xff && d[1] == 0xfe) || (d[0] == 0xfe && d[1] == 0xff)))
        return "UTF-16";
    if (n >= 4 && ((imp_text_char(d[0]) && !d[1] && !d[2] && !d[3]) ||
                   (!d[0] && !d[1] && !d[2] && imp_text_char(d[3]))))
        return "UTF-32";
    if (n >= 2 && ((imp_text_char(d[0]) && !d[1]) || (!d[0] && imp_text_char(d[1]))))
        return "UTF-16";
    return NULL;
}

/* ---- text ---- */

/* 0 when p[0..n) is UTF-8 without NUL bytes; 1 it has a NUL byte; 2 it is
 * not valid UTF-8 */
static int imp_utf8_check(const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    int bad = 0;
    while (p < end) {
        uint64_t w;
        if (end - p >= 8) {
            memcpy(&w, p, 8);
            /* eight ASCII bytes, none of them zero */
            if (!(w & HIGHS) && !((w - ONES) & ~w & HIGHS)) {
                p += 8;
                continue;
            }
        }
        if (*p == 0) {
            bad = 1;
            p++;
        } else if (*p < 0x80) {
            p++;
        } else {
            size_t k = core_utf8_seq(p, (size_t)(end - p));
            if (!k)
                return 2;
            p += k;
        }
    }
    return bad;
}

/* 0 when s (valid UTF-8) is 1..max code points; 1 it holds a NUL; 2 its
 * length is out of range */
static int imp_text(core_str s, long max)
{
    long cps = 0;
    if (s.len > 4 * (size_t)max)
        return 2;
    for (uint32_t i = 0; i < s.len; i++) {
        uint8_t c = (uint8_t)s.p[i];
        if (!c)
            return 1;
        cps += (c & 0xc0) != 0x80;
    }
    return cps < 1 || cps > max ? 2 : 0;
}

/* s for a reason: in quotes, at most ~40 bytes cut at a character,
 * control characters and bytes that are not UTF-8 as '?' */
static const char *imp_quote(char out[IMP_QUOTE], const char *s, size_t n)
{
    const uint8_t *p = (const uint8_t *)s, *end = p + n;
    size_t o = 0;
    out[o++] = '"';
    while (p < end && o < 41) {
        size_t k = *p >= 0x80 ? core_utf8_seq(p, (size_t)(end - p)) : 1;
        if (k <= 1) {
            out[o++] = k && *p >= 0x20 && *p != 0x7f ? (char)*p : '?';
            p++;
            continue;
        }
        memcpy(out + o, p, k);
        o += k;
        p += k;
    }
    if (p < end) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

/* cut a character that snprintf() truncated in half off the end of s */
static void imp_utf8_cut(char *s, size_t n)
{
    size_t i = n, k = 0;
    while (i > 0 && k < 4 && ((uint8_t)s[i - 1] & 0xc0) == 0x80)
        i--, k++;
    if (i > 0 && (uint8_t)s[i - 1] >= 0xc0) {
        uint8_t c = (uint8_t)s[i - 1];
        size_t need = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : 1;
        if (k < need)
            s[i - 1] = '\0';
    }
}

__attribute__((format(printf, 4, 0))) static void
imp_vfmt(char *out, size_t outlen, const char *prefix, const char *fmt, va_list ap)
{
    size_t o;
    if (!outlen)
        return;
    o = (size_t)snprintf(out, outlen, "%s", prefix);
    if (o < outlen)
        vsnprintf(out + o, outlen - o, fmt, ap);
    imp_utf8_cut(out, strlen(out));
}

/* ---- rows ---- */

static void imp_row_clear(cmd_row *row)
{
    row->line = 0;
    memset(&row->id, 0, sizeof row->id);
    row->has = row->type = row->premium = row->n_authors = row->n_tags = 0;
    row->copies = 0;
    row->title = (core_str){NULL, 0};
}

/* a rejected row: only its line and the reason (naming the id when known) */
__attribute__((format(printf, 2, 3))) static int imp_reject(imp_parser *p, const char *fmt, ...)
{
    char prefix[48] = "";
    uint32_t line = p->row->line;
    va_list ap;
    if (p->id_ok) {
        char u[37];
        core_uuid_fmt(&p->row->id, u);
        snprintf(prefix, sizeof prefix, "id %s: ", u);
    }
    va_start(ap, fmt);
    imp_vfmt(p->reason, p->rlen, prefix, fmt, ap);
    va_end(ap);
    imp_row_clear(p->row);
    p->row->line = line;
    return IMP_REJECT;
}

/* the file broke: why */
static int imp_why(imp_parser *p)
{
    snprintf(p->reason, p->rlen, "%s", p->why);
    if (p->rlen)
        imp_utf8_cut(p->reason, strlen(p->reason));
    return CORE_EINVAL;
}

/* the file's structure broke: this call and every later one say why */
__attribute__((format(printf, 2, 3))) static int imp_broken(imp_parser *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    imp_vfmt(p->why, sizeof p->why, "", fmt, ap);
    va_end(ap);
    p->state = ST_BROKEN;
    return imp_why(p);
}

/* count the lines of d[from..to) */
static void imp_lines(imp_parser *p, size_t from, size_t to)
{
    const uint8_t *q = p->d + from, *end = p->d + to;
    while ((q = memchr(q, '\n', (size_t)(end - q)))) {
        p->line++;
        p->lstart = (size_t)(++q - p->d);
    }
}

/* ---- accepted ids ---- */

static uint64_t imp_hash(const imp_parser *p, const uint8_t id[16])
{
    uint64_t a, b;
    memcpy(&a, id, 8);
    memcpy(&b, id + 8, 8);
    __uint128_t m = (__uint128_t)(a ^ p->k0) * (b ^ p->k1);
    return (uint64_t)m ^ (uint64_t)(m >> 64);
}

static imp_slot *imp_slot_of(imp_slot *t, size_t cap, const imp_parser *p, const uint8_t id[16])
{
    size_t i = (size_t)imp_hash(p, id) & (cap - 1);
    while (t[i].line && memcmp(t[i].id, id, 16) != 0)
        i = (i + 1) & (cap - 1);
    return &t[i];
}

/* 0: the id is new (now recorded at line); 1: it was seen, *first is its
 * line; CORE_ENOMEM */
static int imp_id_put(imp_parser *p, const core_uuid *id, uint32_t line, uint32_t *first)
{
    imp_slot *s;
    if ((p->iused + 1) * 4 > p->icap * 3) {
        size_t cap = p->icap ? p->icap * 2 : 1024;
        imp_slot *t = calloc(cap, sizeof *t);
        if (!t)
            return CORE_ENOMEM;
        for (size_t i = 0; i < p->icap; i++)
            if (p->ids[i].line)
                *imp_slot_of(t, cap, p, p->ids[i].id) = p->ids[i];
        free(p->ids);
        p->ids = t;
        p->icap = cap;
    }
    s = imp_slot_of(p->ids, p->icap, p, id->b);
    if (s->line) {
        *first = s->line;
        return 1;
    }
    memcpy(s->id, id->b, 16);
    s->line = line;
    p->iused++;
    return 0;
}

/* ---- the checks of a row's fields, common to the formats ---- */

/* the names of core_rtype_name() */
#define IMP_TYPES "FICTION, FANTASY, NONFICTION, HISTORY, POETRY, SCHOLARLY_JOURNAL, VIDEO, AUDIO"

static int imp_check_id(imp_parser *p)
{
    const imp_val *v = &p->v[F_ID];
    char q[IMP_QUOTE];
    if (v->kind == V_ABSENT)
        return imp_reject(p, "missing %s", p->names[F_ID]);
    if (v->kind != V_STR)
        return imp_reject(p, "%s must be a string (a UUID)", p->names[F_ID]);
    if (!p->id_ok)
        return imp_reject(p, "%s %s is not a UUID", p->names[F_ID], imp_quote(q, v->s.p, v->s.len));
    return 0;
}

static int imp_check_title(imp_parser *p)
{
    const imp_val *v = &p->v[F_TITLE];
    const char *name = p->names[F_TITLE];
    if (v->kind == V_ABSENT)
        return imp_reject(p, "missing %s", name);
    if (v->kind != V_STR)
        return imp_reject(p, "%s must be a string", name);
    switch (imp_text(v->s, CORE_MAX_TITLE)) {
    case 1:
        return imp_reject(p, "%s must not contain NUL characters", name);
    case 2:
        return imp_reject(p, "%s must be 1 to %d characters", name, CORE_MAX_TITLE);
    }
    p->row->title = v->s;
    return 0;
}

static int imp_check_type(imp_parser *p)
{
    const imp_val *v = &p->v[F_TYPE];
    char q[IMP_QUOTE];
    if (v->kind == V_ABSENT)
        return imp_reject(p, "missing %s", p->names[F_TYPE]);
    if (v->kind != V_STR)
        return imp_reject(p, "%s must be a string, one of %s", p->names[F_TYPE], IMP_TYPES);
    for (int t = 0; t < RTYPE__COUNT; t++) {
        const char *name = core_rtype_name(t);
        if (strlen(name) == v->s.len && memcmp(name, v->s.p, v->s.len) == 0) {
            p->row->type = (uint8_t)t;
            return 0;
        }
    }
    return imp_reject(p, "%s %s is not one of %s", p->names[F_TYPE], imp_quote(q, v->s.p, v->s.len),
                      IMP_TYPES);
}

/* copies: decimal digits (JSON: an integer, so "-0" too) up to the limit */
static int imp_check_copies(imp_parser *p, int json)
{
    const imp_val *v = &p->v[F_COPIES];
    const char *s = v->s.p;
    size_t n = v->s.len, i = 0;
    uint32_t c = 0;
    if (v->kind == V_ABSENT)
        return 0;
    if (v->kind == V_NUM && json && n > 1 && s[0] == '-')
        i = 1;
    if (v->kind != V_NUM || i == n)
        goto bad;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            goto bad;
        c = c * 10 + (uint32_t)(s[i] - '0');
        if (c > CORE_MAX_COPIES)
            goto bad;
    }
    if (s[0] == '-' && c)
        goto bad;
    p->row->copies = c;
    p->row->has |= ROW_COPIES;
    return 0;
bad:
    return imp_reject(p, "%s must be an integer from 0 to %d", p->names[F_COPIES], CORE_MAX_COPIES);
}

/* authors or tags: n items already in the row */
static int imp_check_list(imp_parser *p, int f, uint32_t n)
{
    core_str *items = f == F_AUTHORS ? p->row->authors : p->row->tags;
    long max = f == F_AUTHORS ? CORE_MAX_AUTHOR : CORE_MAX_TAG;
    if (n > CORE_MAX_LIST)
        return imp_reject(p, "%s has %u items, at most %d", p->names[f], n, CORE_MAX_LIST);
    for (uint32_t i = 0; i < n; i++)
        switch (imp_text(items[i], max)) {
        case 1:
            return imp_reject(p, "%s item %u must not contain NUL characters", p->names[f], i + 1);
        case 2:
            return imp_reject(p, "%s item %u must be 1 to %ld characters", p->names[f], i + 1, max);
        }
    if (f == F_AUTHORS) {
        p->row->n_authors = (uint8_t)n;
        p->row->has |= ROW_AUTHORS;
    } else {
        p->row->n_tags = (uint8_t)n;
        p->row->has |= ROW_TAGS;
    }
    return 0;
}

/* the row is good: 1, unless its id was accepted before */
static int imp_accept(imp_parser *p)
{
    uint32_t first;
    int rc = imp_id_put(p, &p->row->id, p->row->line, &first);
    if (rc == 1) {
        char u[37];
        core_uuid_fmt(&p->row->id, u);
        p->id_ok = 0; /* the reason names it already */
        return imp_reject(p, "duplicate id %s: first at line %u", u, first);
    }
    return rc < 0 ? rc : 1;
}

/* the id first, so that every reason after can name it */
static void imp_find_id(imp_parser *p)
{
    const imp_val *v = &p->v[F_ID];
    p->id_ok = v->kind == V_STR && core_uuid_parse(v->s.p, v->s.len, &p->row->id) == 0;
}

/* ---- JSON ---- */

typedef struct jr {
    imp_parser *ps;
    const uint8_t *p, *end;
    size_t o;        /* the end of the kept strings in ps->buf */
    const char *err; /* what is wrong at errp; NULL: the row is not an object */
    const uint8_t *errp;
} jr;

static int j_fail(jr *j, const char *what)
{
    j->err = what;
    j->errp = j->p;
    return -1;
}

static inline void j_ws(jr *j)
{
    while (j->p < j->end && imp_ws(*j->p))
        j->p++;
}

static int j_is(jr *j, uint8_t c)
{
    return j->p < j->end && *j->p == c;
}

static int j_hex4(const uint8_t *p, const uint8_t *end, uint32_t *v)
{
    *v = 0;
    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        uint8_t c = p[i];
        uint32_t x = c >= '0' && c <= '9'   ? (uint32_t)(c - '0')
                     : c >= 'a' && c <= 'f' ? (uint32_t)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (uint32_t)(c - 'A' + 10)
                                            : 16;
        if (x == 16)
            return -1;
        *v = *v << 4 | x;
    }
    return 0;
}

static size_t j_utf8_put(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* the escape at j->p (a backslash): its code point in *cp */
static int j_escape(jr *j, uint32_t *cp)
{
    const uint8_t *p = j->p;
    uint32_t lo;
    if (j->end - p < 2)
        return j_fail(j, "invalid escape");
    switch (p[1]) {
    case '"':
    case '\\':
    case '/':
        *cp = p[1];
        break;
    case 'b':
        *cp = '\b';
        break;
    case 'f':
        *cp = '\f';
        break;
    case 'n':
        *cp = '\n';
        break;
    case 'r':
        *cp = '\r';
        break;
    case 't':
        *cp = '\t';
        break;
    case 'u':
        if (j_hex4(p + 2, j->end, cp))
            return j_fail(j, "invalid \\u escape");
        if (*cp >= 0xdc00 && *cp <= 0xdfff)
            return j_fail(j, "invalid \\u escape: a low surrogate alone");
        if (*cp >= 0xd800 && *cp <= 0xdbff) {
            if (j->end - p < 12 || p[6] != '\\' || p[7] != 'u' || j_hex4(p + 8, j->end, &lo) ||
                lo < 0xdc00 || lo > 0xdfff)
                return j_fail(j, "invalid \\u escape: a high surrogate alone");
            *cp = 0x10000 + ((*cp - 0xd800) << 10) + (lo - 0xdc00);
            j->p += 6;
        }
        j->p += 6;
        return 0;
    default:
        return j_fail(j, "invalid escape");
    }
    j->p += 2;
    return 0;
}

static const uint8_t j_stop[256] = {[0 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1, [0x80 ... 0xff] = 1};

/* the first byte from q that is not plain string text: a quote, a
 * backslash, a control character or a byte of a multi-byte character
 * (eight bytes at a time) */
static const uint8_t *j_plain(const uint8_t *q, const uint8_t *end)
{
    while (end - q >= 8) {
        uint64_t w, quote, bslash;
        memcpy(&w, q, 8);
        quote = w ^ (ONES * '"');
        bslash = w ^ (ONES * '\\');
        if (((w | ((quote - ONES) & ~quote) | ((bslash - ONES) & ~bslash) | (w - ONES * 0x20)) &
             HIGHS))
            break;
        q += 8;
    }
    while (q < end && !j_stop[*q])
        q++;
    return q;
}

/* The string at j->p (its opening quote). With out, its value: the bytes of
 * the row when it has no escapes, else decoded into the scratch buffer
 * (kept there when keep). Without out it is only checked. */
static int j_str(jr *j, core_str *out, int keep)
{
    const uint8_t *start = j->p + 1, *from = start, *end = j->end;
    char *b = j->ps->buf;
    size_t o = j->o;
    int esc = 0;

    j->p = start;
    for (;;) {
        const uint8_t *q = j_plain(j->p, end);
        j->p = q;
        if (q == end)
            return j_fail(j, "a string never ends");
        if (*q >= 0x80) {
            size_t k = core_utf8_seq(q, (size_t)(end - q));
            if (!k)
                return j_fail(j, "invalid UTF-8");
            j->p += k;
            continue;
        }
        if (*q < 0x20)
            return j_fail(j, "a control character in a string");
        if (esc && out) {
            memcpy(b + o, from, (size_t)(q - from));
            o += (size_t)(q - from);
        }
        if (*q == '"')
            break;
        uint32_t cp;
        if (!esc && out) {
            memcpy(b + o, start, (size_t)(q - start));
            o += (size_t)(q - start);
        }
        esc = 1;
        if (j_escape(j, &cp))
            return -1;
        if (out)
            o += j_utf8_put(b + o, cp);
        from = j->p;
    }
    if (out && !esc)
        *out = (core_str){(const char *)start, (uint32_t)(j->p - start)};
    else if (out) {
        *out = (core_str){b + j->o, (uint32_t)(o - j->o)};
        if (keep)
            j->o = o;
    }
    j->p++;
    return 0;
}

static int j_digits(jr *j)
{
    const uint8_t *s = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
        j->p++;
    return j->p > s;
}

/* a number: integers must fit 64 bits and reals must not overflow, as
 * jansson has it */
static int j_num(jr *j, core_str *out)
{
    const uint8_t *s = j->p;
    int real = 0;
    if (j_is(j, '-'))
        j->p++;
    if (j_is(j, '0'))
        j->p++;
    else if (!j_digits(j))
        return j_fail(j, "invalid number");
    if (j_is(j, '.')) {
        j->p++;
        if (!j_digits(j))
            return j_fail(j, "invalid number");
        real = 1;
    }
    if (j_is(j, 'e') || j_is(j, 'E')) {
        j->p++;
        if (j_is(j, '+') || j_is(j, '-'))
            j->p++;
        if (!j_digits(j))
            return j_fail(j, "invalid number");
        real = 1;
    }
    *out = (core_str){(const char *)s, (uint32_t)(j->p - s)};
    if (!real) {
        /* at most 9223372036854775807, or ...808 when negative */
        const char *d = out->p + (*s == '-');
        size_t n = out->len - (*s == '-');
        if (n > 19 ||
            (n == 19 &&
             strncmp(d, *s == '-' ? "9223372036854775808" : "9223372036854775807", 19) > 0)) {
            j->p = s;
            return j_fail(j, "too big integer");
        }
        return 0;
    }
    /* the scratch buffer has room: the number is part of the row */
    char *t = j->ps->buf + j->o;
    memcpy(t, s, out->len);
    t[out->len] = '\0';
    if (isinf(strtod(t, NULL))) {
        j->p = s;
        return j_fail(j, "real number overflow");
    }
    return 0;
}

static int j_lit(jr *j, const char *lit, size_t n)
{
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
        return j_fail(j, "invalid token");
    j->p += n;
    return 0;
}

/* one scalar value */
static int j_scalar(jr *j)
{
    core_str num;
    if (j->p == j->end)
        return j_fail(j, "expected a value");
    switch (*j->p) {
    case '"':
        return j_str(j, NULL, 0);
    case 't':
        return j_lit(j, "true", 4);
    case 'f':
        return j_lit(j, "false", 5);
    case 'n':
        return j_lit(j, "null", 4);
    }
    if (*j->p == '-' || (*j->p >= '0' && *j->p <= '9'))
        return j_num(j, &num);
    return j_fail(j, "expected a value");
}

/* a key and its colon */
static int j_key(jr *j, core_str *key)
{
    j_ws(j);
    if (!j_is(j, '"'))
        return j_fail(j, "expected a key in double quotes");
    if (j_str(j, key, 0))
        return -1;
    j_ws(j);
    if (!j_is(j, ':'))
        return j_fail(j, "expected ':'");
    j->p++;
    j_ws(j);
    return 0;
}

/* any value, checked and not kept; depth: its level (the row is 1) */
static int j_skip(jr *j, int depth)
{
    uint64_t obj[IMP_DEPTH / 64] = {0}; /* a bit per open container: an object */
    int n = 0;                          /* open containers */
    for (;;) {
        /* a value */
        if (depth + n > IMP_DEPTH)
            return j_fail(j, "the JSON nests too deeply");
        j_ws(j);
        if (j_is(j, '{') || j_is(j, '[')) {
            int o = *j->p == '{';
            j->p++;
            if (o)
                obj[n / 64] |= 1ULL << (n % 64);
            else
                obj[n / 64] &= ~(1ULL << (n % 64));
            n++;
            j_ws(j);
            if (!j_is(j, o ? '}' : ']')) {
                if (o && j_key(j, NULL))
                    return -1;
                continue;
            }
            j->p++;
            n--;
        } else if (j_scalar(j)) {
            return -1;
        }
        /* after a value: the containers it closes, up to one that goes on */
        for (;;) {
            if (n == 0)
                return 0;
            int o = (int)(obj[(n - 1) / 64] >> ((n - 1) % 64) & 1);
            j_ws(j);
            if (j_is(j, ',')) {
                j->p++;
                if (o && j_key(j, NULL))
                    return -1;
                break;
            }
            if (!j_is(j, o ? '}' : ']'))
                return j_fail(j, o ? "expected ',' or '}'" : "expected ',' or ']'");
            j->p++;
            n--;
        }
    }
}

/* authors or tags: an array whose strings go into the row */
static int j_list(jr *j, int f, imp_val *v)
{
    core_str *items = f == F_AUTHORS ? j->ps->row->authors : j->ps->row->tags;
    uint32_t n = 0;
    int strings = 1;
    j->p++;
    j_ws(j);
    if (j_is(j, ']')) {
        j->p++;
    } else {
        for (;;) {
            j_ws(j);
            if (j_is(j, '"')) {
                core_str s;
                if (j_str(j, &s, 1))
                    return -1;
                if (n < CORE_MAX_LIST)
                    items[n] = s;
            } else {
                strings = 0;
                if (j_skip(j, 3))
                    return -1;
            }
            n++;
            j_ws(j);
            if (j_is(j, ']')) {
                j->p++;
                break;
            }
            if (!j_is(j, ','))
                return j_fail(j, "expected ',' or ']'");
            j->p++;
        }
    }
    v->kind = strings ? V_LIST : V_OTHER;
    v->n = n;
    return 0;
}

/* the value of one of the row's fields */
static int j_field(jr *j, int f)
{
    imp_val *v = &j->ps->v[f];
    if (j->p == j->end)
        return j_fail(j, "expected a value");
    switch (*j->p) {
    case '"':
        v->kind = V_STR;
        return j_str(j, &v->s, 1);
    case 't':
        v->kind = V_TRUE;
        return j_lit(j, "true", 4);
    case 'f':
        v->kind = V_FALSE;
        return j_lit(j, "false", 5);
    case 'n':
        v->kind = V_ABSENT;
        return j_lit(j, "null", 4);
    case '[':
        if (f == F_AUTHORS || f == F_TAGS)
            return j_list(j, f, v);
        break;
    case '{':
        break;
    default:
        v->kind = V_NUM;
        return j_num(j, &v->s);
    }
    v->kind = V_OTHER;
    return j_skip(j, 2);
}

static int j_lookup(const imp_parser *ps, core_str k)
{
    for (size_t i = 0; i < ps->nkeys; i++)
        if (ps->keys[i].len == k.len && memcmp(ps->keys[i].name, k.p, k.len) == 0)
            return (int)i;
    return -1;
}

/* the object at j->p, its fields into ps->v; j->p ends after it */
static int j_row(jr *j)
{
    imp_parser *ps = j->ps;
    uint32_t seen = 0;
    for (int f = 0; f < F_IGNORED; f++)
        ps->v[f].kind = V_ABSENT;
    ps->unknown[0] = '\0';
    ps->dupkey = -1;
    j_ws(j);
    if (!j_is(j, '{')) {
        j->err = NULL;
        return -1;
    }
    j->p++;
    j_ws(j);
    if (j_is(j, '}')) {
        j->p++;
        return 0;
    }
    for (;;) {
        core_str key;
        if (j_key(j, &key))
            return -1;
        int k = j_lookup(ps, key);
        if (k < 0) {
            if (!ps->unknown[0])
                imp_quote(ps->unknown, key.p, key.len);
            if (j_skip(j, 2))
                return -1;
        } else {
            if ((seen & (1u << k)) && ps->dupkey < 0)
                ps->dupkey = k;
            seen |= 1u << k;
            if (ps->keys[k].field == F_IGNORED ? j_skip(j, 2) : j_field(j, ps->keys[k].field))
                return -1;
        }
        j_ws(j);
        if (j_is(j, '}')) {
            j->p++;
            return 0;
        }
        if (!j_is(j, ','))
            return j_fail(j, "expected ',' or '}'");
        j->p++;
    }
}

/* a JSON row that did not parse (d[s..e), its first line starting at
 * lstart): rejected for its encoding when that is wrong, else for where the
 * parser stopped */
static int j_reject(imp_parser *p, const jr *j, size_t s, size_t e, size_t lstart)
{
    const uint8_t *q, *at = j->errp, *ls = p->d + lstart;
    uint32_t line = p->row->line;
    switch (imp_utf8_check(p->d + s, e - s)) {
    case 1:
        return imp_reject(p, "contains a NUL byte");
    case 2:
        return imp_reject(p, "not valid UTF-8");
    }
    if (!j->err)
        return imp_reject(p, "not a JSON object");
    for (q = p->d + s; (q = memchr(q, '\n', (size_t)(at - q))); ls = ++q)
        line++;
    return imp_reject(p, "not a JSON object: %s at line %u, column %zu", j->err, line,
                      (size_t)(at - ls) + 1);
}

/* the fields of a parsed JSON row */
static int j_check(imp_parser *p)
{
    imp_val *v = p->v;
    int rc;
    imp_find_id(p);
    if (p->unknown[0])
        return imp_reject(p, "unknown field %s", p->unknown);
    if (p->dupkey >= 0)
        return imp_reject(p, "duplicate field \"%s\"", p->keys[p->dupkey].name);
    if ((rc = imp_check_id(p)) || (rc = imp_check_title(p)) || (rc = imp_check_type(p)) ||
        (rc = imp_check_copies(p, 1)))
        return rc;
    if (v[F_PREMIUM].kind == V_TRUE || v[F_PREMIUM].kind == V_FALSE) {
        p->row->premium = v[F_PREMIUM].kind == V_TRUE;
        p->row->has |= ROW_PREMIUM;
    } else if (v[F_PREMIUM].kind != V_ABSENT) {
        return imp_reject(p, "%s must be true or false", p->names[F_PREMIUM]);
    }
    for (int f = F_AUTHORS; f <= F_TAGS; f++) {
        if (v[f].kind == V_LIST)
            rc = imp_check_list(p, f, v[f].n);
        else if (v[f].kind != V_ABSENT)
            rc = imp_reject(p, "%s must be an array of strings", p->names[f]);
        if (rc)
            return rc;
    }
    return imp_accept(p);
}

/* ---- JSON Lines ---- */

static int jsonl_next(imp_parser *p)
{
    const uint8_t *d = p->d, *nl, *q;
    size_t s, e;
    for (;;) {
        if (p->pos >= p->len) {
            p->done = p->len;
            p->state = ST_END;
            return 0;
        }
        s = p->pos;
        nl = memchr(d + s, '\n', p->len - s);
        e = nl ? (size_t)(nl - d) : p->len;
        p->pos = p->done = nl ? e + 1 : e;
        p->row->line = p->line;
        if (nl)
            p->line++;
        if (e > s && d[e - 1] == '\r')
            e--;
        for (q = d + s; q < d + e && imp_ws(*q); q++)
            ;
        if (q < d + e)
            break;
    }
    if (e - s > IMP_MAX_ROW)
        return imp_reject(p, "row is longer than %d bytes", IMP_MAX_ROW);
    jr j = {.ps = p, .p = q, .end = d + e};
    if (j_row(&j) == 0) {
        j_ws(&j);
        if (j.p == j.end)
            return j_check(p);
        j_fail(&j, "text after the object");
    }
    return j_reject(p, &j, s, e, s);
}

/* ---- Library ---- */

static void lib_ws(imp_parser *p)
{
    size_t i = p->pos;
    while (i < p->len && imp_ws(p->d[i]))
        i++;
    imp_lines(p, p->pos, i);
    p->pos = i;
}

/* the line of d[at], at >= pos */
static uint32_t lib_line(const imp_parser *p, size_t at)
{
    uint32_t line = p->line;
    for (const uint8_t *q = p->d + p->pos; (q = memchr(q, '\n', (size_t)(p->d + at - q))); q++)
        line++;
    return line;
}

/* the end of the string at d[i] (its opening quote) into *e */
static int lib_str_end(imp_parser *p, size_t i, size_t *e)
{
    const uint8_t *d = p->d;
    size_t k = i + 1;
    for (;;) {
        const uint8_t *q = memchr(d + k, '"', p->len - k);
        if (!q)
            return imp_broken(p,
                              "the JSON array is broken at line %u: a string that starts "
                              "there never ends",
                              lib_line(p, i));
        k = (size_t)(q - d);
        /* a quote is escaped when an odd number of backslashes come before it */
        size_t b = k;
        while (b > i + 1 && d[b - 1] == '\\')
            b--;
        k++;
        if ((k - 1 - b) % 2 == 0) {
            *e = k;
            return 0;
        }
    }
}

/* where the element at d[pos] ends, by its brackets and strings alone */
static int lib_extent(imp_parser *p, size_t *e)
{
    const uint8_t *d = p->d;
    size_t i = p->pos, depth = 0;
    if (d[i] == '"')
        return lib_str_end(p, i, e);
    if (d[i] != '{' && d[i] != '[') {
        while (i < p->len && !imp_ws(d[i]) && !imp_in(d[i], ",[]{}\":"))
            i++;
        *e = i;
        return 0;
    }
    for (; i < p->len; i++) {
        switch (d[i]) {
        case '"':
            if (lib_str_end(p, i, &i))
                return CORE_EINVAL;
            i--;
            break;
        case '{':
        case '[':
            depth++;
            break;
        case '}':
        case ']':
            if (--depth == 0) {
                *e = i + 1;
                return 0;
            }
        }
    }
    return imp_broken(p,
                      "the JSON array is broken at line %u: the element that starts there "
                      "never ends",
                      p->line);
}

/* after the closing bracket: nothing but white space */
static int lib_end(imp_parser *p)
{
    lib_ws(p);
    if (p->pos < p->len)
        return imp_broken(p, "the JSON array is broken at line %u: text after the closing ']'",
                          p->line);
    p->done = p->len;
    p->state = ST_END;
    return 0;
}

static int lib_next(imp_parser *p)
{
    const uint8_t *d = p->d;
    size_t s, e, lstart;
    lib_ws(p);
    if (p->state == ST_LIB_NEXT) {
        if (p->pos < p->len && d[p->pos] == ']') {
            p->pos++;
            return lib_end(p);
        }
        if (p->pos == p->len || d[p->pos] != ',')
            return imp_broken(p, "the JSON array is broken at line %u: expected ',' or ']'",
                              p->line);
        p->pos++;
        lib_ws(p);
    } else if (p->pos < p->len && d[p->pos] == ']') {
        p->pos++;
        return lib_end(p);
    }
    if (p->pos == p->len || imp_in(d[p->pos], ",]}:"))
        return imp_broken(p, "the JSON array is broken at line %u: expected a value", p->line);
    p->state = ST_LIB_NEXT;
    s = p->pos;
    lstart = p->lstart;
    p->row->line = p->line;
    jr j = {.ps = p, .p = d + s, .end = d + (p->len - s > IMP_MAX_ROW ? s + IMP_MAX_ROW : p->len)};
    if (d[s] == '{' && j_row(&j) == 0) {
        e = (size_t)(j.p - d);
        imp_lines(p, s, e);
        p->pos = p->done = e;
        return j_check(p);
    }
    if (lib_extent(p, &e))
        return CORE_EINVAL;
    imp_lines(p, s, e);
    p->pos = p->done = e;
    if (e - s > IMP_MAX_ROW)
        return imp_reject(p, "row is longer than %d bytes", IMP_MAX_ROW);
    return j_reject(p, &j, s, e, lstart);
}

/* ---- CSV ---- */

/* append n bytes to the record's values: only while the record fits
 * IMP_MAX_ROW (beyond, the row is rejected and its values unused) */
static void csv_put(imp_parser *p, size_t *o, const uint8_t *s, size_t n)
{
    if (*o + n <= IMP_MAX_ROW)
        memcpy(p->buf + *o, s, n);
    *o += n;
}

/* One record at pos: the values of its first max fields into f[], their
 * count into *nf, the end of its text (before the line break) into *e;
 * *stray: the 1-based number of a field with a stray quote, or 0. pos and
 * line move past the record. 0, or CORE_EINVAL when a quoted field never
 * closes (*qline: the line it starts on). */
static int csv_record(imp_parser *p, core_str *f, int max, int *nf, int *stray, size_t *e,
                      uint32_t *qline)
{
    const uint8_t *d = p->d;
    size_t i = p->pos, len = p->len, o = 0;
    int n = 0;
    *stray = 0;
    for (;;) {
        size_t fo = o;
        int plain = 1;
        if (i < len && d[i] == '"') {
            *qline = p->line;
            i++;
            for (;;) {
                const uint8_t *q = memchr(d + i, '"', len - i);
                if (!q)
                    return CORE_EINVAL;
                size_t k = (size_t)(q - d);
                imp_lines(p, i, k);
                csv_put(p, &o, d + i, k - i);
                i = k + 1;
                if (i < len && d[i] == '"') {
                    csv_put(p, &o, d + i, 1);
                    i++;
                    continue;
                }
                break;
            }
            plain = i < len && d[i] != ',' && d[i] != '\n' &&
                    !(d[i] == '\r' && (i + 1 == len || d[i + 1] == '\n'));
            if (plain && !*stray)
                *stray = n + 1;
        }
        if (plain) {
            size_t k = i;
            while (k < len && d[k] != ',' && d[k] != '\n') {
                if (d[k] == '"' && !*stray)
                    *stray = n + 1;
                k++;
            }
            csv_put(p, &o, d + i,
                    k - i - (k > i && d[k - 1] == '\r' && (k == len || d[k] == '\n')));
            i = k;
        }
        if (n < max)
            f[n] = (core_str){p->buf + fo, (uint32_t)(o - fo)};
        n++;
        if (i < len && d[i] == ',') {
            i++;
            continue;
        }
        /* the line break: after a quoted field i may be on its CR */
        *e = i;
        if (i < len && d[i] == '\r')
            i++;
        else if (i > p->pos && d[i - 1] == '\r')
            (*e)--;
        if (i < len) {
            p->line++;
            i++;
        }
        break;
    }
    *nf = n;
    p->pos = i;
    return 0;
}

/* skip blank lines: 1 when a record follows */
static int csv_skip_blank(imp_parser *p)
{
    for (;;) {
        size_t i = p->pos;
        while (i < p->len && (p->d[i] == ' ' || p->d[i] == '\t' || p->d[i] == '\r'))
            i++;
        if (i == p->len) {
            p->pos = p->len;
            return 0;
        }
        if (p->d[i] != '\n')
            return 1;
        p->pos = i + 1;
        p->line++;
    }
}

static core_str csv_trim(core_str s)
{
    while (s.len && (s.p[0] == ' ' || s.p[0] == '\t'))
        s.p++, s.len--;
    while (s.len && (s.p[s.len - 1] == ' ' || s.p[s.len - 1] == '\t'))
        s.len--;
    return s;
}

/* the header: which field each column is */
static int csv_header(imp_parser *p, char *err, size_t errlen)
{
    core_str f[IMP_COLS];
    int n, stray, taken[NKEYS(imp_cols)] = {0};
    size_t s, e;
    uint32_t qline, line;
    char q[IMP_QUOTE];

    csv_skip_blank(p); /* imp_open() refused a file of white space */
    s = p->pos;
    line = p->line;
    if (csv_record(p, f, IMP_COLS, &n, &stray, &e, &qline)) {
        snprintf(err, errlen, "unterminated quoted field starting at line %u", qline);
        return CORE_EINVAL;
    }
    p->done = p->pos;
    if (e - s > IMP_MAX_ROW) {
        snprintf(err, errlen, "the CSV header is longer than %d bytes", IMP_MAX_ROW);
        return CORE_EINVAL;
    }
    if (imp_utf8_check(p->d + s, e - s)) {
        snprintf(err, errlen, "the CSV header (line %u) is not valid UTF-8", line);
        return CORE_EINVAL;
    }
    if (stray) {
        snprintf(err, errlen, "the CSV header (line %u) has a stray quote in column %d", line,
                 stray);
        return CORE_EINVAL;
    }
    for (int f2 = 0; f2 < F_IGNORED; f2++)
        p->fcol[f2] = -1;
    /* ten known names: an eleventh column repeats one or is unknown */
    for (int c = 0; c < n && c < IMP_COLS; c++) {
        core_str name = csv_trim(f[c]);
        size_t k = 0;
        if (!name.len) {
            snprintf(err, errlen, "the CSV header has an empty column name (column %d)", c + 1);
            return CORE_EINVAL;
        }
        while (k < NKEYS(imp_cols) && !(imp_cols[k].len == name.len &&
                                        strncasecmp(imp_cols[k].name, name.p, name.len) == 0))
            k++;
        if (k == NKEYS(imp_cols)) {
            snprintf(err, errlen,
                     "unknown column %s in the CSV header (known: id, title, type, "
                     "copies, premium, authors, tags)",
                     imp_quote(q, name.p, name.len));
            return CORE_EINVAL;
        }
        /* a field is taken once (imp_cols lists each at its index), and each
         * ignored column once */
        size_t slot = imp_cols[k].field == F_IGNORED ? k : imp_cols[k].field;
        if (taken[slot]++) {
            snprintf(err, errlen, "the CSV header has column %s twice",
                     imp_quote(q, name.p, name.len));
            return CORE_EINVAL;
        }
        if (imp_cols[k].field != F_IGNORED) { /* a known name: short ASCII */
            p->fcol[imp_cols[k].field] = (int8_t)c;
            snprintf(p->cname[imp_cols[k].field], IMP_NAMELEN, "%.*s", (int)name.len, name.p);
        }
    }
    for (int f2 = F_ID; f2 <= F_TYPE; f2++)
        if (p->fcol[f2] < 0) {
            snprintf(err, errlen, "the CSV header has no \"%s\" column", imp_jsonl_names[f2]);
            return CORE_EINVAL;
        }
    for (int f2 = 0; f2 < F_IGNORED; f2++)
        p->cnames[f2] = p->fcol[f2] >= 0 ? p->cname[f2] : imp_jsonl_names[f2];
    p->names = p->cnames;
    p->ncols = n;
    return 0;
}

/* premium in CSV: true/false, yes/no, 1/0 */
static int csv_bool(core_str s, uint8_t *out)
{
    static const char *const yes[] = {"true", "yes", "1"}, *const no[] = {"false", "no", "0"};
    for (int i = 0; i < 3; i++) {
        if (strlen(yes[i]) == s.len && strncasecmp(yes[i], s.p, s.len) == 0)
            return *out = 1, 0;
        if (strlen(no[i]) == s.len && strncasecmp(no[i], s.p, s.len) == 0)
            return *out = 0, 0;
    }
    return -1;
}

/* authors or tags in CSV: items separated by ';' */
static int csv_list(imp_parser *p, int f, core_str s)
{
    core_str *items = f == F_AUTHORS ? p->row->authors : p->row->tags;
    uint32_t n = 0;
    for (;;) {
        const char *semi = memchr(s.p, ';', s.len);
        size_t k = semi ? (size_t)(semi - s.p) : s.len;
        core_str item = csv_trim((core_str){s.p, (uint32_t)k});
        if (!item.len)
            return imp_reject(p, "%s item %u is empty", p->names[f], n + 1);
        if (n < CORE_MAX_LIST)
            items[n] = item;
        n++;
        if (!semi)
            break;
        s.p += k + 1;
        s.len -= (uint32_t)k + 1;
    }
    return imp_check_list(p, f, n);
}

static int csv_check(imp_parser *p)
{
    core_str v[F_IGNORED];
    int rc;
    for (int f = 0; f < F_IGNORED; f++) {
        v[f] = p->fcol[f] >= 0 ? p->cf[p->fcol[f]] : (core_str){NULL, 0};
        if (f != F_TITLE)
            v[f] = csv_trim(v[f]);
        p->v[f] =
            (imp_val){.kind = v[f].len ? (f == F_COPIES ? V_NUM : V_STR) : V_ABSENT, .s = v[f]};
    }
    imp_find_id(p);
    if ((rc = imp_check_id(p)) || (rc = imp_check_title(p)) || (rc = imp_check_type(p)) ||
        (rc = imp_check_copies(p, 0)))
        return rc;
    if (v[F_PREMIUM].len) {
        if (csv_bool(v[F_PREMIUM], &p->row->premium))
            return imp_reject(p, "%s must be true, false, yes, no, 1 or 0", p->names[F_PREMIUM]);
        p->row->has |= ROW_PREMIUM;
    }
    for (int f = F_AUTHORS; f <= F_TAGS; f++)
        if (v[f].len && (rc = csv_list(p, f, v[f])))
            return rc;
    return imp_accept(p);
}

static int csv_next(imp_parser *p)
{
    int n, stray;
    size_t s, e;
    uint32_t qline;
    if (!csv_skip_blank(p)) {
        p->done = p->len;
        p->state = ST_END;
        return 0;
    }
    s = p->pos;
    p->row->line = p->line;
    if (csv_record(p, p->cf, p->ncols, &n, &stray, &e, &qline))
        return imp_broken(p, "unterminated quoted field starting at line %u", qline);
    p->done = p->pos;
    if (e - s > IMP_MAX_ROW)
        return imp_reject(p, "row is longer than %d bytes", IMP_MAX_ROW);
    switch (imp_utf8_check(p->d + s, e - s)) {
    case 1:
        return imp_reject(p, "contains a NUL byte");
    case 2:
        return imp_reject(p, "not valid UTF-8");
    }
    if (stray)
        return imp_reject(p,
                          "field %d has a stray quote (quote the whole field, and double "
                          "the quotes inside)",
                          stray);
    if (n != p->ncols)
        return imp_reject(p, "has %d fields, the header has %d", n, p->ncols);
    return csv_check(p);
}

/* ---- the parser ---- */

int imp_open(const uint8_t *data, size_t len, int format, imp_parser **out, char *err,
             size_t errlen)
{
    imp_parser *p = NULL;
    const char *wide = imp_wide(data, len);
    size_t i = imp_bom(data, len);
    int rc = CORE_EINVAL;

    *out = NULL;
    if (errlen)
        err[0] = '\0';
    if (format < IMP_AUTO || format > IMP_CSV) {
        snprintf(err, errlen, "unknown format %d", format);
        return CORE_EINVAL;
    }
    if (wide) {
        snprintf(err, errlen, "the file is %s; save it as UTF-8", wide);
        return CORE_EINVAL;
    }
    while (i < len && imp_ws(data[i]))
        i++;
    if (i == len) {
        snprintf(err, errlen, "the file is empty");
        return CORE_EINVAL;
    }
    if (format == IMP_AUTO)
        format = imp_detect(data, len);
    if (format == IMP_LIBRARY && data[i] != '[') {
        snprintf(err, errlen,
                 "the file is not a JSON array (a Library content file starts "
                 "with '[')");
        return CORE_EINVAL;
    }
    if (!(p = calloc(1, sizeof *p)) || !(p->buf = malloc(IMP_MAX_ROW + 1))) {
        rc = CORE_ENOMEM;
        goto fail;
    }
    if (getrandom(&p->k0, sizeof p->k0, 0) != sizeof p->k0 ||
        getrandom(&p->k1, sizeof p->k1, 0) != sizeof p->k1) {
        /* no entropy: a weaker key, the table still works */
        p->k0 = (uint64_t)core_mono_ns() * 0x9e3779b97f4a7c15ULL;
        p->k1 = (uint64_t)(uintptr_t)p * 0xbf58476d1ce4e5b9ULL;
    }
    p->d = data;
    p->len = len;
    p->pos = p->done = p->lstart = imp_bom(data, len);
    p->line = 1;
    p->format = format;
    p->state = ST_ROWS;
    switch (format) {
    case IMP_LIBRARY:
        p->keys = imp_keys_library;
        p->nkeys = NKEYS(imp_keys_library);
        p->names = imp_library_names;
        lib_ws(p);
        p->pos++;
        p->state = ST_LIB_FIRST;
        break;
    case IMP_JSONL:
        p->keys = imp_keys_jsonl;
        p->nkeys = NKEYS(imp_keys_jsonl);
        p->names = imp_jsonl_names;
        break;
    case IMP_CSV:
        if ((rc = csv_header(p, err, errlen)))
            goto fail;
        break;
    }
    *out = p;
    return 0;
fail:
    if (rc == CORE_ENOMEM)
        snprintf(err, errlen, "out of memory");
    imp_close(p);
    return rc;
}

int imp_format(const imp_parser *p)
{
    return p->format;
}

int imp_next(imp_parser *p, cmd_row *row, char *reason, size_t reasonlen)
{
    imp_row_clear(row);
    p->row = row;
    p->reason = reason;
    p->rlen = reasonlen;
    p->id_ok = 0;
    if (reasonlen)
        reason[0] = '\0';
    switch (p->state) {
    case ST_END:
        return 0;
    case ST_BROKEN:
        return imp_why(p);
    }
    switch (p->format) {
    case IMP_LIBRARY:
        return lib_next(p);
    case IMP_JSONL:
        return jsonl_next(p);
    }
    return csv_next(p);
}

size_t imp_offset(const imp_parser *p)
{
    return p->done;
}

void imp_close(imp_parser *p)
{
    if (!p)
        return;
    free(p->ids);
    free(p->buf);
    free(p);
}
