/* Unit tests for import/parse.c: the Library content file, JSON Lines and CSV parsers of
 * import.h — detection, every field, line numbers, the rejections with their reasons, files
 * refused whole, limits at their edges, duplicate ids and a file too broken to go on. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "import/import.h"
#include "ids.h"

/* ---- a parser over a test's text ---- */

static imp_parser *P;
static cmd_row R;
static char why[300];
static char err[300];

static void open_n(const void *data, size_t len, int format)
{
    int rc = imp_open(data, len, format, &P, err, sizeof err);
    cr_assert_eq(rc, 0, "imp_open refused the file: %s", err);
}

static void open_s(const char *s, int format)
{
    open_n(s, strlen(s), format);
}

/* imp_open must refuse s with a reason holding `text` */
static void refused(const void *data, size_t len, int format, const char *text)
{
    imp_parser *p = (imp_parser *)1; /* imp_open must set it to NULL */
    int rc = imp_open(data, len, format, &p, err, sizeof err);
    cr_assert_eq(rc, CORE_EINVAL, "the file was not refused (%d)", rc);
    cr_assert_null(p);
    cr_assert(strstr(err, text), "reason \"%s\" lacks \"%s\"", err, text);
}

static int next(void)
{
    size_t before = imp_offset(P);
    int rc = imp_next(P, &R, why, sizeof why);
    cr_assert_geq(imp_offset(P), before, "imp_offset went back");
    return rc;
}

static void assert_str(core_str got, const char *want, const char *what)
{
    cr_assert(got.len == strlen(want) && memcmp(got.p, want, got.len) == 0,
              "%s: got \"%.*s\", want \"%s\"", what, (int)got.len, got.p ? got.p : "", want);
}

static void assert_id(unsigned n)
{
    core_uuid want = ID(n);
    cr_assert(memcmp(R.id.b, want.b, 16) == 0, "row at line %u: not id %s", R.line, IDS(n));
}

/* the next result is a row from `line` */
static void row_at(uint32_t line)
{
    int rc = next();
    cr_assert_eq(rc, 1, "line %u: want a row, got %d: %s", line, rc, why);
    cr_assert_eq(R.line, line, "a row from line %u, want %u", R.line, line);
}

/* the next result is a rejection of `line` whose reason is exactly `text` */
static void rejected_at(uint32_t line, const char *text)
{
    int rc = next();
    cr_assert_eq(rc, IMP_REJECT, "line %u: want a rejection (\"%s\"), got %d (%s)", line, text, rc,
                 why);
    cr_assert_eq(R.line, line, "a rejection at line %u, want %u (%s)", R.line, line, why);
    cr_assert_str_eq(why, text);
    cr_assert_eq(R.has, 0);
    cr_assert_eq(R.title.len, 0);
    cr_assert_eq(R.n_authors + R.n_tags + R.copies + R.premium, 0);
}

/* the next result is a rejection of `line` whose reason holds `text` */
static void rejected_like(uint32_t line, const char *text)
{
    int rc = next();
    cr_assert_eq(rc, IMP_REJECT, "line %u: want a rejection (\"%s\"), got %d (%s)", line, text, rc,
                 why);
    cr_assert_eq(R.line, line, "a rejection at line %u, want %u (%s)", R.line, line, why);
    cr_assert(strstr(why, text), "reason \"%s\" lacks \"%s\"", why, text);
}

/* the file ends here: 0, imp_offset at its end, and 0 again */
static void the_end(size_t len)
{
    int rc = next();
    cr_assert_eq(rc, 0, "want the end, got %d: %s", rc, why);
    cr_assert_eq(imp_offset(P), len);
    cr_assert_eq(next(), 0);
    imp_close(P);
    P = NULL;
}

/* the file broke: CORE_EINVAL with `text`, and the same again */
static void broken(const char *text)
{
    int rc = next();
    cr_assert_eq(rc, CORE_EINVAL, "want CORE_EINVAL (%s), got %d: %s", text, rc, why);
    cr_assert_str_eq(why, text);
    cr_assert_eq(next(), CORE_EINVAL);
    cr_assert_str_eq(why, text);
    imp_close(P);
    P = NULL;
}

/* a growing text */
typedef struct text {
    char *p;
    size_t len, cap;
} text;

__attribute__((format(printf, 2, 3))) static void add(text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (t->len + (size_t)n + 1 > t->cap) {
        t->cap = (t->len + (size_t)n + 1) * 2;
        t->p = realloc(t->p, t->cap);
        cr_assert_not_null(t->p);
    }
    va_start(ap, fmt);
    vsnprintf(t->p + t->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

static void add_rep(text *t, const char *s, int times)
{
    for (int i = 0; i < times; i++)
        add(t, "%s", s);
}

/* a JSON Lines row of id n with title and type, and `more` members */
static void jsonl_row(text *t, unsigned n, const char *title, const char *more)
{
    add(t, "{\"id\":\"%s\",\"title\":\"%s\",\"type\":\"FICTION\"%s}\n", IDS(n), title, more);
}

/* a reason that names id n */
static const char *idr(unsigned n, const char *what)
{
    static char buf[4][300];
    static int i;
    char *o = buf[i++ % 4];
    snprintf(o, sizeof buf[0], "id %s: %s", IDS(n), what);
    return o;
}

/* the reason for a duplicate of id n first seen at line */
static const char *dupr(unsigned n, uint32_t line)
{
    static char buf[300];
    snprintf(buf, sizeof buf, "duplicate id %s: first at line %u", IDS(n), line);
    return buf;
}

#define TYPES "FICTION, FANTASY, NONFICTION, HISTORY, POETRY, SCHOLARLY_JOURNAL, VIDEO, AUDIO"

/* ---- formats ---- */

Test(import, format_names_parse_and_detection)
{
    cr_assert_str_eq(imp_format_name(IMP_LIBRARY), "library");
    cr_assert_str_eq(imp_format_name(IMP_JSONL), "jsonl");
    cr_assert_str_eq(imp_format_name(IMP_CSV), "csv");
    cr_assert_str_eq(imp_format_name(IMP_AUTO), "auto");
    cr_assert_str_eq(imp_format_name(9), "?");
    cr_assert_eq(imp_format_parse("auto"), IMP_AUTO);
    cr_assert_eq(imp_format_parse("library"), IMP_LIBRARY);
    cr_assert_eq(imp_format_parse("json"), IMP_LIBRARY);
    cr_assert_eq(imp_format_parse("jsonl"), IMP_JSONL);
    cr_assert_eq(imp_format_parse("ndjson"), IMP_JSONL);
    cr_assert_eq(imp_format_parse("CSV"), IMP_CSV);
    cr_assert_eq(imp_format_parse("xml"), -1);
    cr_assert_eq(imp_format_parse(""), -1);

    static const struct {
        const char *data;
        int format;
    } cases[] = {
        {"[]", IMP_LIBRARY},
        {"\xef\xbb\xbf \r\n\t[{}]", IMP_LIBRARY},
        {"{\"id\":1}\n", IMP_JSONL},
        {"\n\n  {", IMP_JSONL},
        {"\xef\xbb\xbf{", IMP_JSONL},
        {"id,title,type\n", IMP_CSV},
        {"\xef\xbb\xbfid,title,type\n", IMP_CSV},
        {"\"[\",title\n", IMP_CSV},
        {"", IMP_CSV},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        cr_assert_eq(imp_detect((const uint8_t *)cases[i].data, strlen(cases[i].data)),
                     cases[i].format, "case %zu", i);

    /* detection in imp_open, and an override */
    open_s("[]", IMP_AUTO);
    cr_assert_eq(imp_format(P), IMP_LIBRARY);
    the_end(2);
    open_s("{}\n", IMP_AUTO);
    cr_assert_eq(imp_format(P), IMP_JSONL);
    imp_close(P);
    open_s("id,title,type\n", IMP_AUTO);
    cr_assert_eq(imp_format(P), IMP_CSV);
    the_end(14);
    /* a Library array read as JSON Lines: its lines are not objects */
    open_s("[\n{\"contentId\":1}\n]\n", IMP_JSONL);
    cr_assert_eq(imp_format(P), IMP_JSONL);
    rejected_at(1, "not a JSON object");
    rejected_like(2, "unknown field \"contentId\"");
    rejected_at(3, "not a JSON object");
    the_end(20);
    /* JSON Lines read as CSV: the header is not ours */
    refused("{\"id\":1}\n", 9, IMP_CSV, "stray quote in column 1");
    refused("{id:1}\n", 7, IMP_CSV, "unknown column \"{id:1}\"");
    refused("{\"id\":1}\n", 9, IMP_LIBRARY, "not a JSON array");
    refused("[]", 2, 7, "unknown format");
}

/* ---- the Library module's sample file ---- */

static char *slurp(const char *rel, size_t *len)
{
    char path[1024];
    const char *here = __FILE__, *slash = strrchr(here, '/');
    /* this file is tests/unit/test_import.c: the sample is tests/data/ */
    snprintf(path, sizeof path, "%.*s/../data/%s", slash ? (int)(slash - here) : 1,
             slash ? here : ".", rel);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    char *buf = malloc(1 << 16);
    cr_assert_not_null(buf);
    *len = fread(buf, 1, 1 << 16, f);
    fclose(f);
    return buf;
}

Test(import, library_sample_file_has_six_items_by_type)
{
    size_t len;
    char *data = slurp("library-sample.json", &len);
    int count[RTYPE__COUNT] = {0}, rows = 0, rc;
    uint32_t last = 0;
    char u[37];

    open_n(data, len, IMP_AUTO);
    cr_assert_eq(imp_format(P), IMP_LIBRARY);
    while ((rc = next()) == 1) {
        cr_assert_gt(R.line, last);
        last = R.line;
        cr_assert_eq(R.has, 0, "the Library file sets no optional field");
        cr_assert_gt(R.title.len, 0);
        count[R.type]++;
        rows++;
        if (rows == 1) {
            cr_assert_eq(R.line, 2); /* "[" is line 1, the object opens on line 2 */
            core_uuid_fmt(&R.id, u);
            cr_assert_str_eq(u, "0190f3a2-6c1e-7b4d-9a55-1f2e3d4c5b01");
            assert_str(R.title, "Phantastes: A Faerie Romance", "title");
        }
    }
    cr_assert_eq(rc, 0, "rc %d: %s", rc, why);
    cr_assert_eq(imp_offset(P), len);
    cr_assert_eq(rows, 6);
    cr_assert_eq(count[RTYPE_FANTASY], 3);
    cr_assert_eq(count[RTYPE_POETRY], 1);
    cr_assert_eq(count[RTYPE_NONFICTION], 2);
    imp_close(P);
    free(data);
}

/* ---- happy paths ---- */

Test(import, library_rows_with_escapes_spacing_and_line_numbers)
{
    text t = {0};
    add(&t,
        "\xef\xbb\xbf  [ {\"contentId\":\"%s\",\"title\":\"Caf\\u00e9 \\\"Central\\\" "
        "\\ud83d\\udcda\",\"contentType\":\"POETRY\"} ,\n",
        IDS(1));
    add(&t,
        "\n  {\n    \"contentType\" : \"AUDIO\",\n    \"title\": \"B\xc3\xbc"
        "cher\",\n    \"contentId\": \"%s\"\n  }\n]\n\n",
        IDS(2));
    open_n(t.p, t.len, IMP_AUTO);
    row_at(1);
    assert_id(1);
    assert_str(R.title, "Caf\xc3\xa9 \"Central\" \xf0\x9f\x93\x9a", "decoded title");
    cr_assert_eq(R.type, RTYPE_POETRY);
    row_at(3);
    assert_id(2);
    assert_str(R.title,
               "B\xc3\xbc"
               "cher",
               "title");
    cr_assert_eq(R.type, RTYPE_AUDIO);
    the_end(t.len);
    free(t.p);

    /* an empty array; upper-case hex in an id */
    open_s(" [ ] ", IMP_LIBRARY);
    the_end(5);
    open_s(
        "[{\"contentId\":\"0190F3A2-6C1E-7B4D-9A55-1F2E3D4C5B0A\",\"title\":\"T\",\"contentType\":"
        "\"VIDEO\"}]",
        IMP_LIBRARY);
    row_at(1);
    cr_assert_eq(R.id.b[0], 0x01);
    cr_assert_eq(R.id.b[15], 0x0a);
    imp_close(P);
}

Test(import, jsonl_row_with_every_field)
{
    text t = {0};
    add(&t,
        "{\"id\":\"%s\",\"title\":\"Dune\",\"type\":\"FANTASY\",\"copies\":3,\"premium\":true,"
        "\"authors\":[\"Frank Herbert\",\"\\u00c9mile\"],\"tags\":[\"sf\",\"classic\"],"
        "\"available\":2,\"created_at\":\"2026-01-01T00:00:00Z\",\"updated_at\":{\"x\":[1,"
        "2.5e3,null]}}\n",
        IDS(1));
    add(&t,
        "  { \"type\" : \"HISTORY\" , \"id\" : \"%s\" , \"title\" : \"SPQR\" , \"copies\" : "
        "null, \"premium\": false, \"authors\": [], \"tags\": null }  \n",
        IDS(2));
    add(&t, "{\"id\":\"%s\",\"title\":\"Zero\",\"type\":\"VIDEO\",\"copies\":0,\"premium\":null}",
        IDS(3));
    open_n(t.p, t.len, IMP_AUTO);
    row_at(1);
    assert_id(1);
    assert_str(R.title, "Dune", "title");
    cr_assert_eq(R.type, RTYPE_FANTASY);
    cr_assert_eq(R.has, ROW_COPIES | ROW_PREMIUM | ROW_AUTHORS | ROW_TAGS);
    cr_assert_eq(R.copies, 3);
    cr_assert_eq(R.premium, 1);
    cr_assert_eq(R.n_authors, 2);
    assert_str(R.authors[0], "Frank Herbert", "author 1");
    assert_str(R.authors[1], "\xc3\x89mile", "author 2");
    cr_assert_eq(R.n_tags, 2);
    assert_str(R.tags[0], "sf", "tag 1");
    assert_str(R.tags[1], "classic", "tag 2");
    /* null is absent; [] clears the authors */
    row_at(2);
    assert_id(2);
    cr_assert_eq(R.type, RTYPE_HISTORY);
    cr_assert_eq(R.has, ROW_PREMIUM | ROW_AUTHORS);
    cr_assert_eq(R.premium, 0);
    cr_assert_eq(R.n_authors, 0);
    cr_assert_eq(R.copies, 0);
    /* the last line without a line break */
    row_at(3);
    cr_assert_eq(R.has, ROW_COPIES);
    cr_assert_eq(R.copies, 0);
    the_end(t.len);
    free(t.p);
}

Test(import, csv_row_with_every_column)
{
    text t = {0};
    add(&t, " ID , Title,TYPE,copies,Premium,authors,tags,available,created_at,updated_at\n");
    add(&t,
        "%s,\"Dune, Messiah\",FANTASY,3,yes,\"Frank Herbert ; Brian Herbert\",sf;classic,1,"
        "x,y\n",
        IDS(1));
    add(&t, " %s ,\"He said \"\"no\"\"\", POETRY ,,,,,,,\n", IDS(2));
    add(&t, "%s,Kindred,FICTION, 0 ,0,  ,,,,\n", IDS(3));
    add(&t, "%s,Ariel,POETRY,100000,TRUE,A,B,,,\n", IDS(4));
    add(&t, "%s,Ariel 2,POETRY,1,False,A,B,,,\n", IDS(5));
    add(&t, "%s,Ariel 3,POETRY,1,No,A,B,,,\n", IDS(6));
    add(&t, "%s,Ariel 4,POETRY,1,1,A,B,,,", IDS(7));
    open_n(t.p, t.len, IMP_AUTO);
    row_at(2);
    assert_id(1);
    assert_str(R.title, "Dune, Messiah", "title");
    cr_assert_eq(R.type, RTYPE_FANTASY);
    cr_assert_eq(R.has, ROW_COPIES | ROW_PREMIUM | ROW_AUTHORS | ROW_TAGS);
    cr_assert_eq(R.copies, 3);
    cr_assert_eq(R.premium, 1);
    cr_assert_eq(R.n_authors, 2);
    assert_str(R.authors[0], "Frank Herbert", "author 1");
    assert_str(R.authors[1], "Brian Herbert", "author 2");
    cr_assert_eq(R.n_tags, 2);
    assert_str(R.tags[1], "classic", "tag 2");
    /* empty optional columns are absent; ids and types are trimmed, titles are not */
    row_at(3);
    assert_id(2);
    assert_str(R.title, "He said \"no\"", "title with quotes");
    cr_assert_eq(R.type, RTYPE_POETRY);
    cr_assert_eq(R.has, 0);
    row_at(4);
    cr_assert_eq(R.has, ROW_COPIES | ROW_PREMIUM);
    cr_assert_eq(R.copies, 0);
    cr_assert_eq(R.premium, 0);
    row_at(5);
    cr_assert_eq(R.copies, 100000);
    cr_assert_eq(R.premium, 1);
    row_at(6);
    cr_assert_eq(R.premium, 0);
    row_at(7);
    cr_assert_eq(R.premium, 0);
    row_at(8);
    cr_assert_eq(R.premium, 1);
    the_end(t.len);

    /* the aliases of the Library module's names; a column order of its own */
    t.len = 0;
    add(&t, "contentType,contentId,title\nAUDIO,%s,Talk\n", IDS(9));
    open_n(t.p, t.len, IMP_CSV);
    row_at(2);
    assert_id(9);
    cr_assert_eq(R.type, RTYPE_AUDIO);
    the_end(t.len);
    free(t.p);
}

/* ---- line breaks, BOMs, encodings ---- */

Test(import, crlf_line_breaks)
{
    text t = {0};
    add(&t, "{\"id\":\"%s\",\"title\":\"A\",\"type\":\"AUDIO\"}\r\n\r\n", IDS(1));
    add(&t, "{\"id\":\"%s\",\"title\":\"B\",\"type\":\"AUDIO\"}\r\n", IDS(2));
    add(&t, "{\"id\":\"%s\",\"title\":\"C\",\"type\":\"AUDIO\"} x\r\n", IDS(3));
    open_n(t.p, t.len, IMP_AUTO);
    row_at(1);
    row_at(3);
    assert_str(R.title, "B", "title");
    rejected_like(4, "not a JSON object: text after the object at line 4, column 74");
    the_end(t.len);

    t.len = 0;
    add(&t, "id,title,type\r\n%s,A,AUDIO\r\n\r\n%s,\"B\",AUDIO\r\n%s,C,\"AUDIO\"\r\n", IDS(1),
        IDS(2), IDS(3));
    open_n(t.p, t.len, IMP_AUTO);
    row_at(2);
    assert_str(R.title, "A", "title");
    row_at(4);
    assert_str(R.title, "B", "title");
    row_at(5);
    cr_assert_eq(R.type, RTYPE_AUDIO);
    the_end(t.len);

    t.len = 0;
    add(&t,
        "[\r\n{\"contentId\":\"%s\",\"title\":\"A\",\"contentType\":\"AUDIO\"},\r\n"
        "{\"contentId\":\"%s\",\"title\":\"B\",\"contentType\":\"AUDIO\"}\r\n]\r\n",
        IDS(1), IDS(2));
    open_n(t.p, t.len, IMP_AUTO);
    row_at(2);
    row_at(3);
    the_end(t.len);
    free(t.p);
}

Test(import, utf8_bom_is_skipped)
{
    text t = {0};
    add(&t, "\xef\xbb\xbfid,title,type\n%s,A,AUDIO\n", IDS(1));
    open_n(t.p, t.len, IMP_AUTO);
    cr_assert_eq(imp_format(P), IMP_CSV);
    row_at(2);
    the_end(t.len);
    t.len = 0;
    add(&t, "\xef\xbb\xbf{\"id\":\"%s\",\"title\":\"A\",\"type\":\"AUDIO\"}\n", IDS(1));
    open_n(t.p, t.len, IMP_AUTO);
    row_at(1);
    the_end(t.len);
    free(t.p);
}

Test(import, utf16_utf32_and_empty_files_are_refused)
{
    static const char u16le[] = "\xff\xfei\0d\0,\0t\0";
    static const char u16be[] = "\xfe\xff\0i\0d";
    static const char u32le[] = "\xff\xfe\0\0i\0\0\0";
    static const char u16nobom[] = "[\0{\0";
    static const char u32be[] = "\0\0\xfe\xff\0\0\0[";
    static const char u32nobom[] = "{\0\0\0";
    refused(u16le, sizeof u16le - 1, IMP_AUTO, "the file is UTF-16; save it as UTF-8");
    refused(u16be, sizeof u16be - 1, IMP_CSV, "the file is UTF-16; save it as UTF-8");
    refused(u32le, sizeof u32le - 1, IMP_AUTO, "the file is UTF-32; save it as UTF-8");
    refused(u16nobom, sizeof u16nobom - 1, IMP_AUTO, "the file is UTF-16; save it as UTF-8");
    refused(u32be, sizeof u32be - 1, IMP_LIBRARY, "the file is UTF-32; save it as UTF-8");
    refused(u32nobom, sizeof u32nobom - 1, IMP_JSONL, "the file is UTF-32; save it as UTF-8");
    refused("", 0, IMP_AUTO, "the file is empty");
    refused(" \r\n\t\n", 5, IMP_CSV, "the file is empty");
    refused("\xef\xbb\xbf\n", 4, IMP_JSONL, "the file is empty");
    refused("\xef\xbb\xbf", 3, IMP_LIBRARY, "the file is empty");
}

Test(import, invalid_utf8_and_nul_bytes_reject_only_their_row)
{
    text t = {0};
    add(&t, "{\"id\":\"%s\",\"title\":\"caf\xe9\",\"type\":\"AUDIO\"}\n", IDS(1));
    add(&t, "{\"id\":\"%s\",\"title\":\"ok\",\"type\":\"AUDIO\"}\n", IDS(2));
    add(&t, "{\"id\":\"%s\",\"title\":\"\xed\xa0\x80\",\"type\":\"AUDIO\"}\n", IDS(3));
    add(&t, "{\"id\":\"%s\",\"title\":\"a\\u0000b\",\"type\":\"AUDIO\"}\n", IDS(4));
    add(&t, "{\"id\":\"%s\",\"title\":\"a_b\",\"type\":\"AUDIO\"}\n", IDS(5));
    *strstr(t.p, "a_b") = '\0';
    add(&t, "{\"id\":\"%s\",\"title\":\"ok\",\"type\":\"AUDIO\"}\n", IDS(6));
    open_n(t.p, t.len, IMP_JSONL);
    rejected_at(1, "not valid UTF-8");
    row_at(2);
    rejected_at(3, "not valid UTF-8"); /* an encoded surrogate */
    rejected_at(4, idr(4, "title must not contain NUL characters"));
    rejected_at(5, "contains a NUL byte");
    row_at(6);
    the_end(t.len);

    /* the same in a Library array and in CSV */
    t.len = 0;
    add(&t, "[{\"contentId\":\"%s\",\"title\":\"caf\xe9\",\"contentType\":\"AUDIO\"},\n", IDS(1));
    add(&t, "\"\xff\",\n{\"contentId\":\"%s\",\"title\":\"ok\",\"contentType\":\"AUDIO\"}]",
        IDS(2));
    open_n(t.p, t.len, IMP_AUTO);
    rejected_at(1, "not valid UTF-8");
    rejected_at(2, "not valid UTF-8");
    row_at(3);
    the_end(t.len);

    t.len = 0;
    add(&t,
        "id,title,type\n%s,caf\xe9,AUDIO\n%s,ok,AUDIO\n%s,a_b,AUDIO\n%s,\"x\ny\xc0\",AUDIO\n"
        "%s,ok,AUDIO\n",
        IDS(1), IDS(2), IDS(3), IDS(4), IDS(5));
    *strstr(t.p, "a_b") = '\0';
    open_n(t.p, t.len, IMP_CSV);
    rejected_at(2, "not valid UTF-8");
    row_at(3);
    rejected_at(4, "contains a NUL byte");
    rejected_at(5, "not valid UTF-8");
    row_at(7);
    the_end(t.len);
    free(t.p);
}

/* ---- rejections ---- */

Test(import, jsonl_rejections_name_field_problem_and_id)
{
    text t = {0};
    jsonl_row(&t, 1, "Fine", "");                                                /* 1 */
    add(&t, "{\"id\":\"%s\",\"title\":\"Comic\",\"type\":\"COMIC\"}\n", IDS(2)); /* 2 */
    add(&t, "\n   \t\n");                                                        /* 3, 4 blank */
    add(&t, "{\"title\":\"x\",\"type\":\"AUDIO\"}\n");                           /* 5 */
    add(&t, "{\"id\":\"not-a-uuid\",\"title\":\"x\",\"type\":\"AUDIO\"}\n");
    add(&t, "{\"id\":7,\"title\":\"x\",\"type\":\"AUDIO\"}\n");
    jsonl_row(&t, 8, "", ""); /* 8 */
    jsonl_row(&t, 9, "x", ",\"isbn\":1");
    add(&t, "{\"id\":\"%s\",\"type\":\"AUDIO\"}\n", IDS(10)); /* 10 */
    add(&t, "{\"id\":\"%s\",\"title\":\"x\"}\n", IDS(11));
    add(&t, "{not json\n"); /* 12 */
    add(&t, "[1,2]\n");
    add(&t, "\"a string\"\n"); /* 14 */
    jsonl_row(&t, 15, "x", ",\"copies\":\"3\"");
    jsonl_row(&t, 16, "x", ",\"copies\":-1");
    jsonl_row(&t, 17, "x", ",\"copies\":1.0");
    jsonl_row(&t, 18, "x", ",\"premium\":\"yes\"");
    jsonl_row(&t, 19, "x", ",\"authors\":\"Le Guin\"");
    jsonl_row(&t, 20, "x", ",\"tags\":[\"a\",1]");
    jsonl_row(&t, 21, "x", ",\"title\":\"again\"");
    add(&t, "{\"id\":\"%s\",\"title\":5,\"type\":\"AUDIO\"}\n", IDS(22));
    add(&t, "{\"id\":\"%s\",\"title\":\"x\",\"type\":[\"AUDIO\"]}\n", IDS(23));
    jsonl_row(&t, 24, "x", ",\"authors\":[\"\"]");
    jsonl_row(&t, 25, "x", ",\"available\":99999999999999999999");
    jsonl_row(&t, 26, "x", ",\"created_at\":\"\\ud800\"");
    add(&t, "{\"id\":\"%s\",\"title\":\"x\",\"type\":\"fiction\"}\n", IDS(27));
    jsonl_row(&t, 28, "x", ",\"updated_at\":1e999");
    add(&t, "{\"id\":\"%s\",\"title\":\"x\",\"type\":\"AUDIO\",}\n", IDS(29));
    jsonl_row(&t, 30, "Fine too", ",\"premium\":false,\"available\":[[[{\"a\":{}}]]]");
    add(&t, "{\"id\":\"%s\",\"title\":{\"en\":\"x\"},\"type\":\"AUDIO\"}\n", IDS(31));

    open_n(t.p, t.len, IMP_AUTO);
    row_at(1);
    rejected_at(2, idr(2, "type \"COMIC\" is not one of " TYPES));
    rejected_at(5, "missing id");
    rejected_at(6, "id \"not-a-uuid\" is not a UUID");
    rejected_at(7, "id must be a string (a UUID)");
    rejected_at(8, idr(8, "title must be 1 to 500 characters"));
    rejected_at(9, idr(9, "unknown field \"isbn\""));
    rejected_at(10, idr(10, "missing title"));
    rejected_at(11, idr(11, "missing type"));
    rejected_at(12, "not a JSON object: expected a key in double quotes at line 12, column 2");
    rejected_at(13, "not a JSON object");
    rejected_at(14, "not a JSON object");
    rejected_at(15, idr(15, "copies must be an integer from 0 to 100000"));
    rejected_at(16, idr(16, "copies must be an integer from 0 to 100000"));
    rejected_at(17, idr(17, "copies must be an integer from 0 to 100000"));
    rejected_at(18, idr(18, "premium must be true or false"));
    rejected_at(19, idr(19, "authors must be an array of strings"));
    rejected_at(20, idr(20, "tags must be an array of strings"));
    rejected_at(21, idr(21, "duplicate field \"title\""));
    rejected_at(22, idr(22, "title must be a string"));
    rejected_at(23, idr(23, "type must be a string, one of " TYPES));
    rejected_at(24, idr(24, "authors item 1 must be 1 to 200 characters"));
    rejected_like(25, "not a JSON object: too big integer at line 25, column ");
    rejected_like(26, "not a JSON object: invalid \\u escape: a high surrogate alone at line 26");
    rejected_at(27, idr(27, "type \"fiction\" is not one of " TYPES));
    rejected_like(28, "not a JSON object: real number overflow");
    rejected_like(29, "not a JSON object: expected a key in double quotes");
    row_at(30);
    assert_str(R.title, "Fine too", "title");
    rejected_at(31, idr(31, "title must be a string"));
    the_end(t.len);
    free(t.p);
}

Test(import, library_rejections)
{
    text t = {0};
    add(&t, "[\n");
    add(&t, "{\"contentId\":\"%s\",\"title\":\"A\",\"contentType\":\"FANTASY\",\"copies\":2},\n",
        IDS(1));
    add(&t, "{\"id\":\"%s\",\"title\":\"A\",\"type\":\"FANTASY\"},\n", IDS(2));
    add(&t, "\"just a string\", 42, [1, [2]], null, true,\n");
    add(&t, "{\"contentId\":\"%s\",\"title\":\"A\",\"contentType\":\"COMIC\"},\n", IDS(3));
    add(&t, "{\"contentId\":\"%s\",\"title\":\"A\" \"contentType\":\"AUDIO\"},\n", IDS(4));
    add(&t, "{\"contentId\":\"%s\",\n\"title\":\"A\",\n\"contentType\":\"AUDIO\"},\n", IDS(5));
    add(&t, "{\"contentId\":\"%s\",\"title\":\"A\",\"contentType\":\"AUDIO\"},\n", IDS(5));
    add(&t, "  {\"contentId\":\"%s\",\n  \"title\":\"A\",\n  \"contentType\":\"AUDIO\",,\n}\n]\n",
        IDS(6));
    open_n(t.p, t.len, IMP_AUTO);
    rejected_at(2, idr(1, "unknown field \"copies\""));
    rejected_at(3, "unknown field \"id\"");
    rejected_at(4, "not a JSON object");
    rejected_at(4, "not a JSON object");
    rejected_at(4, "not a JSON object");
    rejected_at(4, "not a JSON object");
    rejected_at(4, "not a JSON object");
    rejected_at(5, idr(3, "contentType \"COMIC\" is not one of " TYPES));
    rejected_at(6, "not a JSON object: expected ',' or '}' at line 6, column 65");
    row_at(7);
    assert_id(5);
    rejected_at(10, dupr(5, 7));
    rejected_at(11, "not a JSON object: expected a key in double quotes at line 13, column 25");
    the_end(t.len);
    free(t.p);
}

Test(import, csv_rejections)
{
    text t = {0};
    add(&t, "id,title,type,copies,premium,authors,tags\n");
    add(&t, "%s,A,AUDIO,,,,\n", IDS(1)); /* 2 */
    add(&t, "%s,A,AUDIO,,\n", IDS(2));   /* 3 */
    add(&t, "%s,A,AUDIO,,,,,\n", IDS(3));
    add(&t, "%s,A,COMIC,,,,\n", IDS(4)); /* 5 */
    add(&t, ",A,AUDIO,,,,\n");
    add(&t, "nope,A,AUDIO,,,,\n"); /* 7 */
    add(&t, "%s,,AUDIO,,,,\n", IDS(8));
    add(&t, "%s,A, ,,,,\n", IDS(9)); /* 9 */
    add(&t, "%s,A,AUDIO,abc,,,\n", IDS(10));
    add(&t, "%s,A,AUDIO,-1,,,\n", IDS(11)); /* 11 */
    add(&t, "%s,A,AUDIO,1.5,,,\n", IDS(12));
    add(&t, "%s,A,AUDIO,,maybe,,\n", IDS(13)); /* 13 */
    add(&t, "%s,A,AUDIO,,,a;;b,\n", IDS(14));
    add(&t, "%s,A,AUDIO,,,,x;\n", IDS(15)); /* 15 */
    add(&t, "%s,A\"B,AUDIO,,,,\n", IDS(16));
    add(&t, "%s,\"A\"B,AUDIO,,,,\n", IDS(17)); /* 17 */
    add(&t, "%s,\"A\",AUDIO,,,,\n", IDS(1));
    add(&t, "%s,\"multi\nline\",AUDIO,,,,\n", IDS(19)); /* 19-20 */
    add(&t, "%s,A,AUDIO,,,,\n", IDS(19));               /* 21 */
    open_n(t.p, t.len, IMP_AUTO);
    row_at(2);
    rejected_at(3, "has 5 fields, the header has 7");
    rejected_at(4, "has 8 fields, the header has 7");
    rejected_at(5, idr(4, "type \"COMIC\" is not one of " TYPES));
    rejected_at(6, "missing id");
    rejected_at(7, "id \"nope\" is not a UUID");
    rejected_at(8, idr(8, "missing title"));
    rejected_at(9, idr(9, "missing type"));
    rejected_at(10, idr(10, "copies must be an integer from 0 to 100000"));
    rejected_at(11, idr(11, "copies must be an integer from 0 to 100000"));
    rejected_at(12, idr(12, "copies must be an integer from 0 to 100000"));
    rejected_at(13, idr(13, "premium must be true, false, yes, no, 1 or 0"));
    rejected_at(14, idr(14, "authors item 2 is empty"));
    rejected_at(15, idr(15, "tags item 2 is empty"));
    rejected_at(16, "field 2 has a stray quote (quote the whole field, and double the quotes "
                    "inside)");
    rejected_at(17, "field 2 has a stray quote (quote the whole field, and double the quotes "
                    "inside)");
    rejected_at(18, dupr(1, 2));
    row_at(19);
    assert_str(R.title, "multi\nline", "title");
    rejected_at(21, dupr(19, 19));
    the_end(t.len);

    /* a header spelled its own way names the fields in the reasons */
    t.len = 0;
    add(&t, "ContentId,Title,Type\n,A,AUDIO\n%s,,AUDIO\n", IDS(1));
    open_n(t.p, t.len, IMP_CSV);
    rejected_at(2, "missing ContentId");
    rejected_at(3, idr(1, "missing Title"));
    the_end(t.len);
    free(t.p);
}

Test(import, csv_headers_that_are_refused)
{
    refused("id,title,type,colour\n", 21, IMP_CSV, "unknown column \"colour\"");
    refused("id,title,type,contentId\n", 24, IMP_CSV,
            "the CSV header has column \"contentId\" twice");
    refused("id,title,type,Title\n", 20, IMP_CSV, "the CSV header has column \"Title\" twice");
    refused("id,title,copies\n", 16, IMP_CSV, "the CSV header has no \"type\" column");
    refused("title,type\n", 11, IMP_CSV, "the CSV header has no \"id\" column");
    refused("id,title,type,\n", 15, IMP_CSV, "empty column name (column 4)");
    refused("\n\nid,\"title,type\n", 17, IMP_CSV, "unterminated quoted field starting at line 3");
    refused("id,ti\"tle,type\n", 15, IMP_CSV, "stray quote in column 2");
    refused("id,t\xffitle,type\n", 15, IMP_CSV, "not valid UTF-8");
    text t = {0};
    add(&t, "id,title,type,\"");
    add_rep(&t, " ", IMP_MAX_ROW);
    add(&t, "\"\n");
    refused(t.p, t.len, IMP_CSV, "the CSV header is longer than 65536 bytes");
    free(t.p);
    /* eleven columns: one repeats */
    refused("id,title,type,copies,premium,authors,tags,available,created_at,updated_at,tags\n", 78,
            IMP_CSV, "column \"tags\" twice");
    /* quoted names, trimmed, any case */
    open_s("\"Id\",\" TITLE \",\"type\"\n", IMP_CSV);
    imp_close(P);
}

Test(import, csv_quoted_line_breaks_and_line_numbers)
{
    text t = {0};
    add(&t, "\n\nid,title,type\n\n");                    /* header on line 3 */
    add(&t, "%s,\"one\ntwo\r\nthree\",AUDIO\n", IDS(1)); /* 5-7 */
    add(&t, "%s,\"\",AUDIO\n", IDS(2));                  /* 8: "" is empty */
    add(&t, "%s,\"\"\"\",AUDIO\n", IDS(3));              /* 9 */
    add(&t, "\"%s\",\"a,b\",\"AUDIO\"\r\n", IDS(4));     /* 10 */
    add(&t, "%s,\"x\n", IDS(5));                         /* 11: never closes */
    add(&t, "%s,y,AUDIO\n", IDS(6));
    open_n(t.p, t.len, IMP_AUTO);
    row_at(5);
    assert_str(R.title, "one\ntwo\r\nthree", "title");
    rejected_at(8, idr(2, "missing title"));
    row_at(9);
    assert_str(R.title, "\"", "title");
    row_at(10);
    assert_str(R.title, "a,b", "title");
    broken("unterminated quoted field starting at line 11");
    free(t.p);
}

/* ---- duplicates ---- */

Test(import, duplicate_ids_first_accepted_row_wins)
{
    text t = {0};
    jsonl_row(&t, 1, "first", "");  /* 1 */
    jsonl_row(&t, 2, "", "");       /* 2: rejected, so not seen */
    jsonl_row(&t, 2, "second", ""); /* 3 */
    jsonl_row(&t, 1, "again", "");  /* 4 */
    jsonl_row(&t, 2, "again", "");  /* 5 */
    /* the same id in upper case */
    char *upper = strdup(IDS(1));
    for (char *c = upper; *c; c++)
        if (*c >= 'a' && *c <= 'f')
            *c = (char)(*c - 'a' + 'A');
    add(&t, "{\"id\":\"%s\",\"title\":\"upper\",\"type\":\"AUDIO\"}\n", upper);
    open_n(t.p, t.len, IMP_JSONL);
    row_at(1);
    rejected_at(2, idr(2, "title must be 1 to 500 characters"));
    row_at(3);
    rejected_at(4, dupr(1, 1));
    rejected_at(5, dupr(2, 3));
    rejected_at(6, dupr(1, 1));
    the_end(t.len);
    free(upper);
    free(t.p);
}

Test(import, two_hundred_thousand_distinct_ids)
{
    text t = {0};
    int rc, rows = 0;
    for (unsigned i = 1; i <= 200000; i++)
        add(&t, "{\"id\":\"%s\",\"title\":\"Row %u\",\"type\":\"HISTORY\",\"copies\":%u}\n",
            IDS(i * 2654435761u), i, i % 7);
    jsonl_row(&t, 1 * 2654435761u, "the first again", "");
    open_n(t.p, t.len, IMP_JSONL);
    while ((rc = next()) == 1) {
        rows++;
        cr_assert_eq(R.line, (uint32_t)rows);
        cr_assert_eq(R.copies, (uint32_t)rows % 7);
    }
    cr_assert_eq(rows, 200000);
    cr_assert_eq(rc, IMP_REJECT, "%s", why);
    cr_assert_eq(R.line, 200001);
    cr_assert_str_eq(why, dupr(2654435761u, 1));
    the_end(t.len);
    free(t.p);
}

/* ---- sizes and limits ---- */

Test(import, rows_longer_than_the_limit_are_skipped)
{
    text t = {0}, pad = {0};
    /* a row of exactly IMP_MAX_ROW bytes passes; one byte more does not */
    jsonl_row(&t, 1, "short", "");
    size_t base = t.len - 1; /* without its line break */
    add_rep(&pad, " ", (int)(IMP_MAX_ROW - base));
    t.len = 0;
    add(&t, "{\"id\":\"%s\",\"title\":\"short\",\"type\":\"FICTION\"%s}\n", IDS(1), pad.p);
    cr_assert_eq(t.len - 1, IMP_MAX_ROW);
    add(&t, "{\"id\":\"%s\",\"title\":\"short\",\"type\":\"FICTION\"%s }\r\n", IDS(2), pad.p);
    add(&t, "{\"id\":\"%s\",\"title\":\"x\",\"type\":\"FICTION\",\"tags\":[", IDS(3));
    for (int i = 0; i < 20000; i++)
        add(&t, "%s\"tag\"", i ? "," : "");
    add(&t, "]}\n");
    jsonl_row(&t, 4, "after", "");
    open_n(t.p, t.len, IMP_JSONL);
    row_at(1);
    rejected_at(2, "row is longer than 65536 bytes");
    rejected_at(3, "row is longer than 65536 bytes");
    row_at(4);
    assert_id(4);
    the_end(t.len);

    /* a Library element, over several lines */
    t.len = 0;
    add(&t, "[{\"contentId\":\"%s\",\n\"title\":\"", IDS(1));
    add_rep(&t, "\xf0\x9f\x93\x9a\n", 14000);
    add(&t,
        "\",\"contentType\":\"AUDIO\"},\n{\"contentId\":\"%s\",\"title\":\"B\",\"contentType\":"
        "\"AUDIO\"}]",
        IDS(2));
    open_n(t.p, t.len, IMP_LIBRARY);
    rejected_at(1, "row is longer than 65536 bytes");
    row_at(14003); /* the title's 14000 line breaks (not valid JSON) count */
    the_end(t.len);

    /* a CSV record, with quoted line breaks */
    t.len = 0;
    add(&t, "id,title,type\n%s,\"", IDS(1));
    add_rep(&t, "abc,\"\"\n", 10000);
    add(&t, "\",AUDIO\n%s,B,AUDIO\n", IDS(2));
    open_n(t.p, t.len, IMP_CSV);
    rejected_at(2, "row is longer than 65536 bytes");
    row_at(10003);
    the_end(t.len);
    free(pad.p);
    free(t.p);
}

Test(import, field_limits_at_and_over_the_edge)
{
    text t = {0}, s = {0};
    /* 500 four-byte code points, then 501 */
    add_rep(&s, "\xf0\x9f\x93\x9a", CORE_MAX_TITLE);
    jsonl_row(&t, 1, s.p, "");
    add(&s, "a");
    jsonl_row(&t, 2, s.p, "");
    /* 50 authors, then 51 */
    s.len = 0;
    add(&s, ",\"authors\":[\"a\"");
    add_rep(&s, ",\"a\"", CORE_MAX_LIST - 1);
    add(&s, "]");
    jsonl_row(&t, 3, "x", s.p);
    s.len--; /* the ']' */
    add(&s, ",\"b\"]");
    jsonl_row(&t, 4, "x", s.p);
    /* an author of 200 characters, then 201; a tag of 100, then 101 */
    s.len = 0;
    add(&s, ",\"authors\":[\"");
    add_rep(&s, "\xc3\xa9", CORE_MAX_AUTHOR);
    add(&s, "\"],\"tags\":[\"");
    add_rep(&s, "t", CORE_MAX_TAG);
    add(&s, "\"]");
    jsonl_row(&t, 5, "x", s.p);
    s.len = 0;
    add(&s, ",\"authors\":[\"");
    add_rep(&s, "\xc3\xa9", CORE_MAX_AUTHOR + 1);
    add(&s, "\"]");
    jsonl_row(&t, 6, "x", s.p);
    s.len = 0;
    add(&s, ",\"tags\":[\"ok\",\"");
    add_rep(&s, "t", CORE_MAX_TAG + 1);
    add(&s, "\"]");
    jsonl_row(&t, 7, "x", s.p);
    jsonl_row(&t, 8, "x", ",\"copies\":100000");
    jsonl_row(&t, 9, "x", ",\"copies\":100001");
    jsonl_row(&t, 10, "x", ",\"copies\":-0");

    open_n(t.p, t.len, IMP_JSONL);
    row_at(1);
    cr_assert_eq(R.title.len, 4 * CORE_MAX_TITLE);
    rejected_at(2, idr(2, "title must be 1 to 500 characters"));
    row_at(3);
    cr_assert_eq(R.n_authors, CORE_MAX_LIST);
    rejected_at(4, idr(4, "authors has 51 items, at most 50"));
    row_at(5);
    cr_assert_eq(R.authors[0].len, 2 * CORE_MAX_AUTHOR);
    cr_assert_eq(R.tags[0].len, CORE_MAX_TAG);
    rejected_at(6, idr(6, "authors item 1 must be 1 to 200 characters"));
    rejected_at(7, idr(7, "tags item 2 must be 1 to 100 characters"));
    row_at(8);
    cr_assert_eq(R.copies, CORE_MAX_COPIES);
    rejected_at(9, idr(9, "copies must be an integer from 0 to 100000"));
    row_at(10);
    cr_assert_eq(R.copies, 0);
    the_end(t.len);

    /* the same edges in CSV */
    t.len = 0;
    add(&t, "id,title,type,copies,authors\n");
    s.len = 0;
    add_rep(&s, "\xe4\xb8\x80", CORE_MAX_TITLE);
    add(&t, "%s,%s,AUDIO,100000,a", IDS(1), s.p);
    add_rep(&t, ";a", CORE_MAX_LIST - 1);
    add(&t, "\n%s,%sx,AUDIO,,\n", IDS(2), s.p);
    add(&t, "%s,x,AUDIO,100001,\n", IDS(3));
    add(&t, "%s,x,AUDIO,,a", IDS(4));
    add_rep(&t, "; a ", CORE_MAX_LIST);
    add(&t, "\n");
    open_n(t.p, t.len, IMP_CSV);
    row_at(2);
    cr_assert_eq(R.copies, CORE_MAX_COPIES);
    cr_assert_eq(R.n_authors, CORE_MAX_LIST);
    rejected_at(3, idr(2, "title must be 1 to 500 characters"));
    rejected_at(4, idr(3, "copies must be an integer from 0 to 100000"));
    rejected_at(5, idr(4, "authors has 51 items, at most 50"));
    the_end(t.len);
    free(s.p);
    free(t.p);
}

/* ---- a Library array that breaks ---- */

static void library_breaks(const char *tail, const char *reason)
{
    text t = {0};
    add(&t, "[\n{\"contentId\":\"%s\",\"title\":\"A\",\"contentType\":\"AUDIO\"},\n", IDS(1));
    add(&t, "\"skipped\",\n");
    add(&t, "{\"contentId\":\"%s\",\"title\":\"B\",\"contentType\":\"AUDIO\"}%s", IDS(2), tail);
    open_n(t.p, t.len, IMP_AUTO);
    row_at(2);
    rejected_at(3, "not a JSON object");
    row_at(4);
    broken(reason);
    free(t.p);
}

Test(import, broken_library_array_returns_earlier_rows_then_einval)
{
    library_breaks("\n{\"contentId\":", "the JSON array is broken at line 5: expected ',' or ']'");
    library_breaks(",\n\n{\"contentId\":\"x\"\n",
                   "the JSON array is broken at line 6: the element that starts there never "
                   "ends");
    library_breaks(",\n\"abc\n\n",
                   "the JSON array is broken at line 5: a string that starts there never ends");
    library_breaks(",\n{\"a\":\"b\\\"}]\n",
                   "the JSON array is broken at line 5: a string that starts there never ends");
    library_breaks("\n", "the JSON array is broken at line 5: expected ',' or ']'");
    library_breaks(",\n]", "the JSON array is broken at line 5: expected a value");
    library_breaks(",\n[{\"a\":\n\n\"b}]]",
                   "the JSON array is broken at line 7: a string that starts there never ends");
    library_breaks(",,]", "the JSON array is broken at line 4: expected a value");
    library_breaks("]\n\n]", "the JSON array is broken at line 6: text after the closing ']'");
    library_breaks("]x", "the JSON array is broken at line 4: text after the closing ']'");
    library_breaks(" \"c\"]", "the JSON array is broken at line 4: expected ',' or ']'");
}

/* ---- the JSON reader against jansson ---- */

Test(import, json_values_are_read_as_jansson_reads_them)
{
    static const char *const values[] = {
        /* valid */
        "0",
        "-0",
        "1.5",
        "-1.5e-3",
        "1E+2",
        "9223372036854775807",
        "-9223372036854775808",
        "1e308",
        "\"a\\\\b\"",
        "\"\\u00e9\\ud83d\\udcda\"",
        "\"\\b\\f\\n\\r\\t\\/\\\"\"",
        "[]",
        "{}",
        "[[ ]]",
        "{\"a\":[1,{\"b\":null}],\"a\":2}",
        "true",
        "false",
        "null",
        " [ 1 , 2 ] ",
        "\"\xe4\xb8\x80\"",
        /* not valid */
        "01",
        "-",
        "1.",
        ".5",
        "1e",
        "+1",
        "9223372036854775808",
        "-9223372036854775809",
        "1e309",
        "-1e309",
        "tru",
        "nul",
        "falsey",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\\u12g4\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"\\ud800\\u0041\"",
        "\"\\ud800\\\\\"",
        "[1,]",
        "{\"a\"}",
        "{\"a\":}",
        "{1:2}",
        "[1 2]",
        "\"tab\there\"",
        "'single'",
        "NaN",
        "Infinity",
        "[",
        "{",
        "\"open",
        "\xc3\"",
        "",
        "]",
        "{\"a\":1,}",
        "[1]]",
    };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        text t = {0};
        add(&t, "{\"id\":\"%s\",\"title\":\"x\",\"type\":\"AUDIO\",\"available\":%s}", IDS(1),
            values[i]);
        json_t *j = json_loadb(t.p, t.len, 0, NULL);
        open_n(t.p, t.len, IMP_JSONL);
        int rc = next();
        cr_assert_eq(rc, j ? 1 : IMP_REJECT, "available: %s: jansson %s, the parser %d (%s)",
                     values[i], j ? "reads it" : "does not", rc, why);
        json_decref(j);
        imp_close(P);
        free(t.p);
    }
    /* nesting: jansson stops at 2048 levels, the row being the first */
    for (int n = 2045; n <= 2048; n++)
        for (int scalar = 0; scalar < 2; scalar++) {
            text t = {0};
            add(&t, "{\"id\":\"%s\",\"title\":\"x\",\"type\":\"AUDIO\",\"available\":", IDS(1));
            add_rep(&t, "[", n);
            add(&t, "%s", scalar ? "1" : "");
            add_rep(&t, "]", n);
            add(&t, "}");
            json_t *j = json_loadb(t.p, t.len, 0, NULL);
            open_n(t.p, t.len, IMP_JSONL);
            int rc = next();
            cr_assert_eq(rc, j ? 1 : IMP_REJECT, "%d arrays%s: jansson %s, the parser %d (%s)", n,
                         scalar ? " around a number" : "", j ? "reads it" : "does not", rc, why);
            if (!j)
                cr_assert(strstr(why, "the JSON nests too deeply"), "%s", why);
            json_decref(j);
            imp_close(P);
            free(t.p);
        }
}

Test(import, json_escapes_decode)
{
    text t = {0};
    add(&t,
        "{\"id\":\"%s\",\"title\":\"\\b\\f\\n\\r\\t\\/\\\\\\\"\\u0041\\u00e9\\u4e00\\ud83d\\udcda"
        "!\",\"type\":\"\\u0041UDIO\",\"t\\u0061gs\":[\"\\u00e9\",\"plain\",\"a\\u0000\"]}\n",
        IDS(1));
    add(&t, "{\"id\":\"%s\",\"title\":\"x\",\"type\":\"AUDIO\",\"authors\":[\"a\\u0000\"]}\n",
        IDS(2));
    open_n(t.p, t.len, IMP_JSONL);
    rejected_at(1, idr(1, "tags item 3 must not contain NUL characters"));
    rejected_at(2, idr(2, "authors item 1 must not contain NUL characters"));
    the_end(t.len);
    t.len = 0;
    add(&t,
        "{\"id\":\"%s\",\"title\":\"\\b\\f\\n\\r\\t\\/\\\\\\\"\\u0041\\u00e9\\u4e00\\ud83d\\udcda"
        "!\",\"type\":\"\\u0041UDIO\",\"t\\u0061gs\":[\"\\u00e9\",\"plain\"]}\n",
        IDS(1));
    open_n(t.p, t.len, IMP_JSONL);
    row_at(1);
    assert_str(R.title, "\b\f\n\r\t/\\\"A\xc3\xa9\xe4\xb8\x80\xf0\x9f\x93\x9a!", "title");
    cr_assert_eq(R.type, RTYPE_AUDIO);
    cr_assert_eq(R.n_tags, 2);
    assert_str(R.tags[0], "\xc3\xa9", "tag 1");
    assert_str(R.tags[1], "plain", "tag 2");
    the_end(t.len);
    free(t.p);
}

/* ---- reasons ---- */

Test(import, reasons_quote_long_values_and_fit_any_buffer)
{
    text t = {0};
    char full[300], small[64];
    add(&t, "{\"id\":\"%s\",\"title\":\"x\",\"type\":\"AUDIO\",\"%s\":1}\n", IDS(1),
        "a_very_long_field_name_that_goes_on_and_on_and_on");
    add(&t,
        "{\"id\":\"%s\",\"title\":\"x\",\"type\":\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3"
        "\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"}\n",
        IDS(2));
    add(&t, "{\"id\":\"%s\",\"title\":\"x\",\"type\":\"a\\nb\\u0000\"}\n", IDS(3));
    open_n(t.p, t.len, IMP_JSONL);
    rejected_at(1, idr(1, "unknown field \"a_very_long_field_name_that_goes_on_and_...\""));
    rejected_like(2, ": type \"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                     "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                     "\xc3\xa9\xc3\xa9\xc3\xa9...\" is not one of");
    rejected_like(3, ": type \"a?b?\" is not one of");
    imp_close(P);
    /* cut to any size, a reason is a prefix of the whole one, in whole characters */
    open_n(t.p, t.len, IMP_JSONL);
    next();
    next();
    snprintf(full, sizeof full, "%s", why);
    for (size_t n = 1; n < sizeof small; n++) {
        imp_close(P);
        open_n(t.p, t.len, IMP_JSONL);
        next();
        cr_assert_eq(imp_next(P, &R, small, n), IMP_REJECT);
        cr_assert_lt(strlen(small), n);
        cr_assert(strncmp(full, small, strlen(small)) == 0, "\"%s\" is not a prefix", small);
        cr_assert_geq(core_utf8_count(small, strlen(small)), 0, "size %zu: not UTF-8", n);
        cr_assert_geq(strlen(small) + 1, n - 1, "size %zu: cut more than a character", n);
    }
    imp_close(P);
    free(t.p);
}
