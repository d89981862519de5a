/* Unit tests for core/cmd.c (binary command codec) and the small helpers of core/core.c:
 * uuid parse/format/v7, core_fmt_time, core_problem, core_json_escape, core_utf8_count. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

/* ---- building and comparing commands ---- */

static core_str S(const char *s)
{
    return (core_str){s, (uint32_t)strlen(s)};
}

static void fill_uuid(core_uuid *u, uint8_t seed)
{
    for (int i = 0; i < 16; i++)
        u->b[i] = (uint8_t)(seed * 31 + i * 7 + 1);
}

static void fill_bytes(uint8_t *p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed + i * 13);
}

/* a command of `type` with every field set to something other than zero */
static void sample_cmd(cmd *c, int type, int with_idem)
{
    static const char *authors[3] = {"Ursula K. Le Guin", "Борис Стругацкий", "佚名"};
    static const char *tags[2] = {"classic", "sf"};
    memset(c, 0, sizeof *c);
    c->type = (uint8_t)type;
    c->ts_ms = 1763805600123LL + type;
    fill_uuid(&c->actor, (uint8_t)(100 + type));
    c->actor_role = ROLE_LIBRARIAN;
    if (with_idem) {
        c->idem = S("idem-key-0123456789");
        fill_bytes(c->req_hash, 32, (uint8_t)type);
    }
    switch (type) {
    case CMD_BOOTSTRAP:
        fill_bytes(c->u.bootstrap.key, 32, 9);
        break;
    case CMD_POLICY:
        c->u.policy = (core_policy){.loan_days = 14,
                                    .max_renewals = 3,
                                    .max_loans = 7,
                                    .max_loans_premium = 30,
                                    .pickup_days = 5};
        break;
    case CMD_TICK:
        break;
    case CMD_USER_CREATE:
        fill_uuid(&c->u.user_create.id, 1);
        c->u.user_create.email = S("Ada@Example.org");
        c->u.user_create.name = S("Ada Lovelace");
        c->u.user_create.role = ROLE_ADMIN;
        c->u.user_create.plan = PLAN_PREMIUM;
        fill_bytes(c->u.user_create.salt, 16, 3);
        fill_bytes(c->u.user_create.hash, 32, 4);
        c->u.user_create.iterations = 210000;
        break;
    case CMD_USER_UPDATE:
        fill_uuid(&c->u.user_update.id, 2);
        c->u.user_update.mask = UPD_STATUS | UPD_PLAN | UPD_ROLE | UPD_NAME;
        c->u.user_update.status = USTATUS_BLOCKED;
        c->u.user_update.plan = PLAN_PREMIUM;
        c->u.user_update.role = ROLE_SERVICE;
        c->u.user_update.name = S("New Name");
        break;
    case CMD_RES_PUT:
        fill_uuid(&c->u.res_put.id, 3);
        c->u.res_put.mode = RES_UPSERT;
        c->u.res_put.type = RTYPE_AUDIO;
        c->u.res_put.premium = 1;
        c->u.res_put.copies = 12345;
        c->u.res_put.title = S("The Dispossessed");
        c->u.res_put.n_authors = 3;
        for (int i = 0; i < 3; i++)
            c->u.res_put.authors[i] = S(authors[i]);
        c->u.res_put.n_tags = 2;
        for (int i = 0; i < 2; i++)
            c->u.res_put.tags[i] = S(tags[i]);
        break;
    case CMD_RES_DELETE:
    case CMD_LOAN_RETURN:
    case CMD_LOAN_RENEW:
    case CMD_HOLD_CANCEL:
        fill_uuid(&c->u.target.id, (uint8_t)(40 + type));
        break;
    case CMD_LOAN_CHECKOUT:
    case CMD_HOLD_PLACE:
        fill_uuid(&c->u.place.id, 5);
        fill_uuid(&c->u.place.user, 6);
        fill_uuid(&c->u.place.resource, 7);
        break;
    case CMD_APIKEY_CREATE:
        fill_uuid(&c->u.apikey.id, 8);
        fill_bytes(c->u.apikey.hash, 32, 11);
        c->u.apikey.role = ROLE_SERVICE;
        c->u.apikey.name = S("library-module");
        break;
    case CMD_IMPORT: {
        /* two rows: every field set, and only the required ones */
        static core_buf rows;
        cmd_row w = {.line = 3,
                     .has = ROW_COPIES | ROW_PREMIUM | ROW_AUTHORS | ROW_TAGS,
                     .type = RTYPE_POETRY,
                     .premium = 1,
                     .copies = 4,
                     .title = S("Leaves of Grass"),
                     .n_authors = 2,
                     .n_tags = 1};
        fill_uuid(&w.id, 9);
        w.authors[0] = S(authors[0]);
        w.authors[1] = S(authors[1]);
        w.tags[0] = S(tags[0]);
        rows.len = 0;
        cr_assert_eq(cmd_row_put(&rows, &w), 0);
        w = (cmd_row){.line = 70000, .type = RTYPE_FANTASY, .title = S(authors[2])};
        fill_uuid(&w.id, 10);
        cr_assert_eq(cmd_row_put(&rows, &w), 0);
        c->u.import.n = 2;
        c->u.import.rows = (core_str){(const char *)rows.p, (uint32_t)rows.len};
        break;
    }
    case CMD_IMPORT_DONE:
        fill_bytes(c->u.import_done.sha256, 32, 12);
        c->u.import_done.format = 3;
        c->u.import_done.name = S("catalog-2026-11-22.csv");
        c->u.import_done.rows = 1000001;
        c->u.import_done.created = 5;
        c->u.import_done.updated = 6;
        c->u.import_done.unchanged = 7;
        c->u.import_done.rejected = 8;
        break;
    }
}

static void assert_row_eq(const cmd_row *a, const cmd_row *b);
static void assert_rejected(const cmd *c, const char *what);
static void assert_accepted(const cmd *c, const char *what);

static void assert_str_eq(core_str a, core_str b, const char *what)
{
    cr_assert_eq(a.len, b.len, "%s: length %u != %u", what, a.len, b.len);
    if (a.len)
        cr_assert(memcmp(a.p, b.p, a.len) == 0, "%s differs", what);
}

static void assert_uuid_eq(const core_uuid *a, const core_uuid *b, const char *what)
{
    cr_assert(memcmp(a->b, b->b, 16) == 0, "%s differs", what);
}

static void assert_cmd_eq(const cmd *a, const cmd *b)
{
    cr_assert_eq(a->type, b->type);
    cr_assert_eq(a->ts_ms, b->ts_ms);
    assert_uuid_eq(&a->actor, &b->actor, "actor");
    cr_assert_eq(a->actor_role, b->actor_role);
    assert_str_eq(a->idem, b->idem, "idem");
    if (a->idem.len)
        cr_assert(memcmp(a->req_hash, b->req_hash, 32) == 0, "req_hash differs");
    switch (a->type) {
    case CMD_BOOTSTRAP:
        cr_assert(memcmp(a->u.bootstrap.key, b->u.bootstrap.key, 32) == 0);
        break;
    case CMD_POLICY:
        cr_assert_eq(a->u.policy.loan_days, b->u.policy.loan_days);
        cr_assert_eq(a->u.policy.max_renewals, b->u.policy.max_renewals);
        cr_assert_eq(a->u.policy.max_loans, b->u.policy.max_loans);
        cr_assert_eq(a->u.policy.max_loans_premium, b->u.policy.max_loans_premium);
        cr_assert_eq(a->u.policy.pickup_days, b->u.policy.pickup_days);
        break;
    case CMD_TICK:
        break;
    case CMD_USER_CREATE:
        assert_uuid_eq(&a->u.user_create.id, &b->u.user_create.id, "user id");
        assert_str_eq(a->u.user_create.email, b->u.user_create.email, "email");
        assert_str_eq(a->u.user_create.name, b->u.user_create.name, "name");
        cr_assert_eq(a->u.user_create.role, b->u.user_create.role);
        cr_assert_eq(a->u.user_create.plan, b->u.user_create.plan);
        cr_assert(memcmp(a->u.user_create.salt, b->u.user_create.salt, 16) == 0);
        cr_assert(memcmp(a->u.user_create.hash, b->u.user_create.hash, 32) == 0);
        cr_assert_eq(a->u.user_create.iterations, b->u.user_create.iterations);
        break;
    case CMD_USER_UPDATE:
        assert_uuid_eq(&a->u.user_update.id, &b->u.user_update.id, "user id");
        cr_assert_eq(a->u.user_update.mask, b->u.user_update.mask);
        cr_assert_eq(a->u.user_update.status, b->u.user_update.status);
        cr_assert_eq(a->u.user_update.plan, b->u.user_update.plan);
        cr_assert_eq(a->u.user_update.role, b->u.user_update.role);
        assert_str_eq(a->u.user_update.name, b->u.user_update.name, "name");
        break;
    case CMD_RES_PUT:
        assert_uuid_eq(&a->u.res_put.id, &b->u.res_put.id, "resource id");
        cr_assert_eq(a->u.res_put.mode, b->u.res_put.mode);
        cr_assert_eq(a->u.res_put.type, b->u.res_put.type);
        cr_assert_eq(a->u.res_put.premium, b->u.res_put.premium);
        cr_assert_eq(a->u.res_put.copies, b->u.res_put.copies);
        assert_str_eq(a->u.res_put.title, b->u.res_put.title, "title");
        cr_assert_eq(a->u.res_put.n_authors, b->u.res_put.n_authors);
        cr_assert_eq(a->u.res_put.n_tags, b->u.res_put.n_tags);
        for (int i = 0; i < a->u.res_put.n_authors; i++)
            assert_str_eq(a->u.res_put.authors[i], b->u.res_put.authors[i], "author");
        for (int i = 0; i < a->u.res_put.n_tags; i++)
            assert_str_eq(a->u.res_put.tags[i], b->u.res_put.tags[i], "tag");
        break;
    case CMD_RES_DELETE:
    case CMD_LOAN_RETURN:
    case CMD_LOAN_RENEW:
    case CMD_HOLD_CANCEL:
        assert_uuid_eq(&a->u.target.id, &b->u.target.id, "target id");
        break;
    case CMD_LOAN_CHECKOUT:
    case CMD_HOLD_PLACE:
        assert_uuid_eq(&a->u.place.id, &b->u.place.id, "place id");
        assert_uuid_eq(&a->u.place.user, &b->u.place.user, "place user");
        assert_uuid_eq(&a->u.place.resource, &b->u.place.resource, "place resource");
        break;
    case CMD_APIKEY_CREATE:
        assert_uuid_eq(&a->u.apikey.id, &b->u.apikey.id, "key id");
        cr_assert(memcmp(a->u.apikey.hash, b->u.apikey.hash, 32) == 0);
        cr_assert_eq(a->u.apikey.role, b->u.apikey.role);
        assert_str_eq(a->u.apikey.name, b->u.apikey.name, "key name");
        break;
    case CMD_IMPORT: {
        cmd_row ra, rb;
        size_t oa = 0, ob = 0;
        uint32_t n = 0;
        cr_assert_eq(a->u.import.n, b->u.import.n);
        while (cmd_row_next(&a->u.import.rows, &oa, &ra)) {
            cr_assert_eq(cmd_row_next(&b->u.import.rows, &ob, &rb), 1);
            assert_row_eq(&ra, &rb);
            n++;
        }
        cr_assert_eq(cmd_row_next(&b->u.import.rows, &ob, &rb), 0);
        cr_assert_eq(n, a->u.import.n);
        break;
    }
    case CMD_IMPORT_DONE:
        cr_assert(memcmp(a->u.import_done.sha256, b->u.import_done.sha256, 32) == 0);
        cr_assert_eq(a->u.import_done.format, b->u.import_done.format);
        assert_str_eq(a->u.import_done.name, b->u.import_done.name, "file name");
        cr_assert_eq(a->u.import_done.rows, b->u.import_done.rows);
        cr_assert_eq(a->u.import_done.created, b->u.import_done.created);
        cr_assert_eq(a->u.import_done.updated, b->u.import_done.updated);
        cr_assert_eq(a->u.import_done.unchanged, b->u.import_done.unchanged);
        cr_assert_eq(a->u.import_done.rejected, b->u.import_done.rejected);
        break;
    default:
        cr_assert_fail("unexpected type %d", a->type);
    }
}

static void assert_row_eq(const cmd_row *a, const cmd_row *b)
{
    cr_assert_eq(a->line, b->line);
    assert_uuid_eq(&a->id, &b->id, "row id");
    cr_assert_eq(a->has, b->has);
    cr_assert_eq(a->type, b->type);
    cr_assert_eq(a->premium, b->premium);
    cr_assert_eq(a->copies, b->copies);
    assert_str_eq(a->title, b->title, "row title");
    cr_assert_eq(a->n_authors, b->n_authors);
    cr_assert_eq(a->n_tags, b->n_tags);
    for (int i = 0; i < a->n_authors; i++)
        assert_str_eq(a->authors[i], b->authors[i], "row author");
    for (int i = 0; i < a->n_tags; i++)
        assert_str_eq(a->tags[i], b->tags[i], "row tag");
}

/* a CMD_IMPORT holding the one row w */
static void import_of(cmd *c, core_buf *rows, const cmd_row *w)
{
    sample_cmd(c, CMD_IMPORT, 0);
    rows->len = 0;
    cr_assert_eq(cmd_row_put(rows, w), 0);
    c->u.import.n = 1;
    c->u.import.rows = (core_str){(const char *)rows->p, (uint32_t)rows->len};
}

Test(codec, import_rows_are_checked_like_the_api_checks_a_resource)
{
    static char title[4 * CORE_MAX_TITLE + 4];
    core_buf rows = {0};
    cmd c;
    cmd_row ok = {.line = 1, .type = RTYPE_HISTORY, .title = S("SPQR")}, w;
    fill_uuid(&ok.id, 1);

    import_of(&c, &rows, &ok);
    assert_accepted(&c, "a minimal row");
    /* 500 code points of 4 bytes pass, 501 do not */
    for (int i = 0; i < CORE_MAX_TITLE + 1; i++)
        memcpy(title + 4 * i, "\xf0\x9f\x93\x9a", 4);
    w = ok;
    w.title = (core_str){title, 4 * CORE_MAX_TITLE};
    import_of(&c, &rows, &w);
    assert_accepted(&c, "500 code points");
    w.title = (core_str){title, 4 * CORE_MAX_TITLE + 4};
    import_of(&c, &rows, &w);
    assert_rejected(&c, "501 code points");
    /* every field outside its range, one at a time */
    static const char *const bad[] = {
        "line 0",
        "unknown has bit",
        "type out of range",
        "premium 2",
        "copies over the limit",
        "copies without ROW_COPIES",
        "premium alone",
        "authors without ROW_AUTHORS",
        "an empty tag",
        "not UTF-8",
        "a surrogate",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        w = ok;
        switch (i) {
        case 0:
            w.line = 0;
            break;
        case 1:
            w.has = 16;
            break;
        case 2:
            w.type = RTYPE__COUNT;
            break;
        case 3:
            w.has = ROW_PREMIUM, w.premium = 2;
            break;
        case 4:
            w.has = ROW_COPIES, w.copies = CORE_MAX_COPIES + 1;
            break;
        case 5:
            w.copies = 1;
            break;
        case 6:
            w.premium = 1;
            break;
        case 7:
            w.n_authors = 1, w.authors[0] = S("A");
            break;
        case 8:
            w.has = ROW_TAGS, w.n_tags = 1, w.tags[0] = S("");
            break;
        case 9:
            w.title = S("caf\xe9");
            break;
        case 10:
            w.title = S("\xed\xa0\x80");
            break;
        }
        import_of(&c, &rows, &w);
        assert_rejected(&c, bad[i]);
    }
    /* the row count must match the rows */
    import_of(&c, &rows, &ok);
    c.u.import.n = 2;
    assert_rejected(&c, "n larger than the rows");
    c.u.import.n = 0;
    assert_rejected(&c, "no rows");
    core_buf_free(&rows);
}

static core_buf encode_ok(const cmd *c)
{
    core_buf b = {0};
    int rc = cmd_encode(c, &b);
    cr_assert_eq(rc, 0, "encode type %d: rc %d", c->type, rc);
    cr_assert_gt(b.len, 0);
    return b;
}

/* offsets in the common header */
#define OFF_VERSION 0
#define OFF_TYPE    1
#define OFF_ROLE    26
#define OFF_IDEMLEN 27
#define HDR_NOIDEM  28 /* payload starts here without an idempotency key */

/* ---- round trips ---- */

Test(codec, round_trip_every_type)
{
    for (int type = CMD_BOOTSTRAP; type < CMD__COUNT; type++)
        for (int idem = 0; idem <= 1; idem++) {
            cmd c, d;
            sample_cmd(&c, type, idem);
            core_buf b = encode_ok(&c);
            cr_assert_eq(b.p[OFF_VERSION], CMD_VERSION);
            cr_assert_eq(b.p[OFF_TYPE], type);
            int rc = cmd_decode(b.p, b.len, &d);
            cr_assert_eq(rc, 0, "decode type %d idem %d: rc %d", type, idem, rc);
            assert_cmd_eq(&c, &d);
            /* decoded strings point into the input buffer */
            if (type == CMD_RES_PUT)
                cr_assert(d.u.res_put.title.p >= (const char *)b.p &&
                          d.u.res_put.title.p < (const char *)b.p + b.len);
            /* re-encoding the decoded command gives the same bytes */
            core_buf b2 = encode_ok(&d);
            cr_assert_eq(b2.len, b.len);
            cr_assert(memcmp(b.p, b2.p, b.len) == 0, "re-encoding type %d differs", type);
            core_buf_free(&b2);
            core_buf_free(&b);
        }
}

Test(codec, round_trip_limits_and_extremes)
{
    /* the largest valid resource: every string at its byte limit, 50 authors and 50 tags */
    static char title[4 * CORE_MAX_TITLE], author[4 * CORE_MAX_AUTHOR], tag[4 * CORE_MAX_TAG];
    memset(title, 'T', sizeof title);
    memset(author, 'A', sizeof author);
    memset(tag, 'g', sizeof tag);
    cmd c, d;
    sample_cmd(&c, CMD_RES_PUT, 1);
    c.u.res_put.title = (core_str){title, sizeof title};
    c.u.res_put.n_authors = CORE_MAX_LIST;
    c.u.res_put.n_tags = CORE_MAX_LIST;
    for (int i = 0; i < CORE_MAX_LIST; i++) {
        c.u.res_put.authors[i] = (core_str){author, sizeof author};
        c.u.res_put.tags[i] = (core_str){tag, sizeof tag};
    }
    c.u.res_put.copies = CORE_MAX_COPIES;
    char idem[CORE_MAX_IDEM];
    memset(idem, 'k', sizeof idem);
    c.idem = (core_str){idem, CORE_MAX_IDEM};
    c.ts_ms = CMD_MAX_TS_MS; /* the last instant RFC 3339 can print */
    core_buf b = encode_ok(&c);
    cr_assert_leq(b.len, CMD_MAX_SIZE);
    cr_assert_eq(cmd_decode(b.p, b.len, &d), 0);
    assert_cmd_eq(&c, &d);
    core_buf_free(&b);

    /* clocks before 1970 or after 9999 are refused both ways */
    for (int i = 0; i < 2; i++) {
        int64_t bad = i ? CMD_MAX_TS_MS + 1 : -1;
        core_buf e = {0};
        sample_cmd(&c, CMD_TICK, 0);
        c.ts_ms = bad;
        cr_assert_eq(cmd_encode(&c, &e), CORE_ERANGE);
        core_buf_free(&e);
        c.ts_ms = 0;
        cr_assert_eq(cmd_encode(&c, &e), 0);
        for (int k = 0; k < 8; k++)
            e.p[2 + k] = (uint8_t)((uint64_t)bad >> (56 - 8 * k));
        cr_assert_eq(cmd_decode(e.p, e.len, &d), CORE_EINVAL);
        core_buf_free(&e);
    }

    /* user_update with an empty name and no UPD_NAME is fine */
    sample_cmd(&c, CMD_USER_UPDATE, 0);
    c.u.user_update.mask = UPD_STATUS;
    c.u.user_update.name = (core_str){NULL, 0};
    b = encode_ok(&c);
    cr_assert_eq(cmd_decode(b.p, b.len, &d), 0);
    assert_cmd_eq(&c, &d);
    core_buf_free(&b);
}

/* ---- rejections ---- */

Test(codec, rejects_wrong_version_and_unknown_type)
{
    cmd c, d;
    sample_cmd(&c, CMD_TICK, 0);
    core_buf b = encode_ok(&c);
    cr_assert_eq(cmd_decode(b.p, b.len, &d), 0);
    for (int v = 0; v < 256; v++) {
        if (v == CMD_VERSION)
            continue;
        b.p[OFF_VERSION] = (uint8_t)v;
        cr_assert_neq(cmd_decode(b.p, b.len, &d), 0, "version %d accepted", v);
    }
    b.p[OFF_VERSION] = CMD_VERSION;
    int bad_types[] = {0, CMD__COUNT, CMD__COUNT + 1, 200, 255};
    for (size_t i = 0; i < sizeof bad_types / sizeof bad_types[0]; i++) {
        b.p[OFF_TYPE] = (uint8_t)bad_types[i];
        cr_assert_neq(cmd_decode(b.p, b.len, &d), 0, "type %d accepted", bad_types[i]);
    }
    core_buf_free(&b);
    /* the encoder refuses unknown types too */
    c.type = CMD__COUNT;
    core_buf e = {0};
    cr_assert_neq(cmd_encode(&c, &e), 0);
    core_buf_free(&e);
    cr_assert_neq(cmd_decode(NULL, 0, &d), 0);
}

Test(codec, rejects_every_truncation_and_trailing_bytes)
{
    for (int type = CMD_BOOTSTRAP; type < CMD__COUNT; type++)
        for (int idem = 0; idem <= 1; idem++) {
            cmd c, d;
            sample_cmd(&c, type, idem);
            core_buf b = encode_ok(&c);
            for (size_t n = 0; n < b.len; n++)
                cr_assert_neq(cmd_decode(b.p, n, &d), 0,
                              "type %d idem %d truncated to %zu of %zu accepted", type, idem, n,
                              b.len);
            uint8_t zero = 0;
            cr_assert_eq(core_buf_put(&b, &zero, 1), 0);
            cr_assert_neq(cmd_decode(b.p, b.len, &d), 0, "type %d with a trailing byte accepted",
                          type);
            b.len--;
            cr_assert_eq(cmd_decode(b.p, b.len, &d), 0);
            core_buf_free(&b);
        }
}

/* encodes c, expecting cmd_encode to succeed, and asserts the decoder refuses it */
static void assert_rejected(const cmd *c, const char *what)
{
    core_buf b = {0};
    cmd d;
    cr_assert_eq(cmd_encode(c, &b), 0, "%s: encode failed", what);
    cr_assert_neq(cmd_decode(b.p, b.len, &d), 0, "%s: accepted", what);
    core_buf_free(&b);
}

static void assert_accepted(const cmd *c, const char *what)
{
    core_buf b = {0};
    cmd d;
    cr_assert_eq(cmd_encode(c, &b), 0, "%s: encode failed", what);
    cr_assert_eq(cmd_decode(b.p, b.len, &d), 0, "%s: rejected", what);
    core_buf_free(&b);
}

Test(codec, rejects_strings_over_their_limit)
{
    static char big[4 * CORE_MAX_TITLE + 1];
    memset(big, 'x', sizeof big);
    cmd c;
    struct {
        int type;
        size_t max;
    } cases[] = {
        {CMD_USER_CREATE, 4 * CORE_MAX_EMAIL},     {CMD_USER_CREATE, 4 * CORE_MAX_NAME},
        {CMD_USER_UPDATE, 4 * CORE_MAX_NAME},      {CMD_RES_PUT, 4 * CORE_MAX_TITLE},
        {CMD_RES_PUT, 4 * CORE_MAX_AUTHOR},        {CMD_RES_PUT, 4 * CORE_MAX_TAG},
        {CMD_APIKEY_CREATE, 4 * CORE_MAX_KEYNAME},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (size_t len = cases[i].max; len <= cases[i].max + 1; len++) {
            core_str s = {big, (uint32_t)len};
            sample_cmd(&c, cases[i].type, 0);
            switch (i) {
            case 0:
                c.u.user_create.email = s;
                break;
            case 1:
                c.u.user_create.name = s;
                break;
            case 2:
                c.u.user_update.name = s;
                break;
            case 3:
                c.u.res_put.title = s;
                break;
            case 4:
                c.u.res_put.authors[1] = s;
                break;
            case 5:
                c.u.res_put.tags[1] = s;
                break;
            case 6:
                c.u.apikey.name = s;
                break;
            }
            char what[64];
            snprintf(what, sizeof what, "case %zu len %zu", i, len);
            if (len == cases[i].max)
                assert_accepted(&c, what);
            else
                assert_rejected(&c, what);
        }
    /* required strings may not be empty */
    sample_cmd(&c, CMD_RES_PUT, 0);
    c.u.res_put.title = S("");
    assert_rejected(&c, "empty title");
    sample_cmd(&c, CMD_RES_PUT, 0);
    c.u.res_put.tags[0] = S("");
    assert_rejected(&c, "empty tag");
    sample_cmd(&c, CMD_USER_CREATE, 0);
    c.u.user_create.email = S("");
    assert_rejected(&c, "empty email");
    sample_cmd(&c, CMD_APIKEY_CREATE, 0);
    c.u.apikey.name = S("");
    assert_rejected(&c, "empty key name");
    sample_cmd(&c, CMD_USER_UPDATE, 0);
    c.u.user_update.name = S("");
    assert_rejected(&c, "UPD_NAME with an empty name");
}

Test(codec, rejects_nul_inside_strings)
{
    static const char nul[] = "abc\0def";
    core_str s = {nul, 7};
    cmd c;
    for (int i = 0; i < 7; i++) {
        sample_cmd(&c,
                   i < 2    ? CMD_USER_CREATE
                   : i == 2 ? CMD_USER_UPDATE
                   : i < 6  ? CMD_RES_PUT
                            : CMD_APIKEY_CREATE,
                   0);
        switch (i) {
        case 0:
            c.u.user_create.email = s;
            break;
        case 1:
            c.u.user_create.name = s;
            break;
        case 2:
            c.u.user_update.name = s;
            break;
        case 3:
            c.u.res_put.title = s;
            break;
        case 4:
            c.u.res_put.authors[2] = s;
            break;
        case 5:
            c.u.res_put.tags[0] = s;
            break;
        case 6:
            c.u.apikey.name = s;
            break;
        }
        char what[32];
        snprintf(what, sizeof what, "NUL case %d", i);
        assert_rejected(&c, what);
    }
}

Test(codec, rejects_enums_out_of_range)
{
    cmd c;
    sample_cmd(&c, CMD_TICK, 0);
    c.actor_role = ROLE__COUNT;
    assert_rejected(&c, "actor_role");
    c.actor_role = ROLE__COUNT - 1;
    assert_accepted(&c, "last actor_role");

    sample_cmd(&c, CMD_USER_CREATE, 0);
    c.u.user_create.role = ROLE__COUNT;
    assert_rejected(&c, "user_create.role");
    sample_cmd(&c, CMD_USER_CREATE, 0);
    c.u.user_create.plan = PLAN__COUNT;
    assert_rejected(&c, "user_create.plan");

    sample_cmd(&c, CMD_USER_UPDATE, 0);
    c.u.user_update.status = USTATUS__COUNT;
    assert_rejected(&c, "user_update.status");
    sample_cmd(&c, CMD_USER_UPDATE, 0);
    c.u.user_update.plan = PLAN__COUNT;
    assert_rejected(&c, "user_update.plan");
    sample_cmd(&c, CMD_USER_UPDATE, 0);
    c.u.user_update.role = 255;
    assert_rejected(&c, "user_update.role");
    sample_cmd(&c, CMD_USER_UPDATE, 0);
    c.u.user_update.mask = 16;
    assert_rejected(&c, "user_update.mask");

    sample_cmd(&c, CMD_RES_PUT, 0);
    c.u.res_put.type = RTYPE__COUNT;
    assert_rejected(&c, "res_put.type");
    c.u.res_put.type = RTYPE__COUNT - 1;
    assert_accepted(&c, "last res_put.type");
    sample_cmd(&c, CMD_RES_PUT, 0);
    c.u.res_put.mode = RES_UPSERT + 1;
    assert_rejected(&c, "res_put.mode");
    sample_cmd(&c, CMD_RES_PUT, 0);
    c.u.res_put.premium = 2;
    assert_rejected(&c, "res_put.premium");
    sample_cmd(&c, CMD_RES_PUT, 0);
    c.u.res_put.copies = CORE_MAX_COPIES + 1;
    assert_rejected(&c, "res_put.copies");

    sample_cmd(&c, CMD_APIKEY_CREATE, 0);
    c.u.apikey.role = ROLE__COUNT;
    assert_rejected(&c, "apikey.role");

    sample_cmd(&c, CMD_POLICY, 0);
    c.u.policy.loan_days = 0;
    assert_rejected(&c, "policy.loan_days 0");
    c.u.policy.loan_days = 3651;
    assert_rejected(&c, "policy.loan_days 3651");
    c.u.policy.loan_days = 3650;
    c.u.policy.pickup_days = 366;
    assert_rejected(&c, "policy.pickup_days 366");
    c.u.policy.pickup_days = 365;
    assert_accepted(&c, "policy at its limits");
}

Test(codec, rejects_too_many_authors_or_tags)
{
    cmd c, d;
    core_buf b = {0};
    sample_cmd(&c, CMD_RES_PUT, 0);
    c.u.res_put.n_authors = CORE_MAX_LIST + 1;
    cr_assert_neq(cmd_encode(&c, &b), 0, "encoder accepted 51 authors");
    core_buf_free(&b);

    /* build a wire form with 51 authors by hand: the decoder must refuse it */
    sample_cmd(&c, CMD_RES_PUT, 0);
    c.u.res_put.n_authors = CORE_MAX_LIST;
    for (int i = 0; i < CORE_MAX_LIST; i++)
        c.u.res_put.authors[i] = S("a");
    c.u.res_put.n_tags = 0;
    b = encode_ok(&c);
    cr_assert_eq(cmd_decode(b.p, b.len, &d), 0);
    /* the n_authors byte follows header, id, mode, type, premium, copies, title */
    size_t off = HDR_NOIDEM + 16 + 3 + 4 + 2 + c.u.res_put.title.len;
    cr_assert_eq(b.p[off], CORE_MAX_LIST);
    b.p[off] = CORE_MAX_LIST + 1;
    b.len--;                           /* drop n_tags = 0 ... */
    uint8_t extra[4] = {0, 1, 'a', 0}; /* ... add a 51st author and n_tags = 0 */
    cr_assert_eq(core_buf_put(&b, extra, 4), 0);
    cr_assert_neq(cmd_decode(b.p, b.len, &d), 0, "51 authors accepted");
    /* the same bytes with n_authors = 50 carry one author too many: trailing garbage */
    b.p[off] = CORE_MAX_LIST;
    cr_assert_neq(cmd_decode(b.p, b.len, &d), 0);
    core_buf_free(&b);

    sample_cmd(&c, CMD_RES_PUT, 0);
    c.u.res_put.n_authors = 0;
    c.u.res_put.n_tags = 1;
    b = encode_ok(&c);
    b.p[b.len - 2 - c.u.res_put.tags[0].len - 1] = CORE_MAX_LIST + 1;
    cr_assert_neq(cmd_decode(b.p, b.len, &d), 0, "51 tags accepted");
    core_buf_free(&b);
}

Test(codec, rejects_idem_longer_than_64)
{
    char key[CORE_MAX_IDEM + 1];
    memset(key, 'k', sizeof key);
    cmd c, d;
    core_buf b = {0};
    sample_cmd(&c, CMD_TICK, 1);
    c.idem = (core_str){key, CORE_MAX_IDEM + 1};
    cr_assert_neq(cmd_encode(&c, &b), 0, "encoder accepted a 65-byte key");
    core_buf_free(&b);

    c.idem = (core_str){key, CORE_MAX_IDEM};
    b = encode_ok(&c);
    cr_assert_eq(b.p[OFF_IDEMLEN], CORE_MAX_IDEM);
    /* splice one more key byte in after the length */
    core_buf w = {0};
    uint8_t k = 'k';
    cr_assert_eq(core_buf_put(&w, b.p, OFF_IDEMLEN + 1), 0);
    cr_assert_eq(core_buf_put(&w, &k, 1), 0);
    cr_assert_eq(core_buf_put(&w, b.p + OFF_IDEMLEN + 1, b.len - OFF_IDEMLEN - 1), 0);
    w.p[OFF_IDEMLEN] = CORE_MAX_IDEM + 1;
    cr_assert_neq(cmd_decode(w.p, w.len, &d), 0, "65-byte key accepted");
    w.p[OFF_IDEMLEN] = 255;
    cr_assert_neq(cmd_decode(w.p, w.len, &d), 0);
    core_buf_free(&w);
    core_buf_free(&b);
}

Test(codec, rejects_oversize)
{
    /* a title long enough to push the encoding past CMD_MAX_SIZE */
    size_t n = CMD_MAX_SIZE;
    char *t = malloc(n);
    cr_assert_not_null(t);
    memset(t, 't', n);
    cmd c, d;
    core_buf b = {0};
    sample_cmd(&c, CMD_RES_PUT, 0);
    c.u.res_put.title = (core_str){t, 0xffff};
    cr_assert_neq(cmd_encode(&c, &b), 0, "encoder produced more than CMD_MAX_SIZE bytes");
    core_buf_free(&b);

    /* a valid command followed by padding up to CMD_MAX_SIZE + 1 */
    sample_cmd(&c, CMD_TICK, 0);
    b = encode_ok(&c);
    size_t valid = b.len;
    while (b.len <= CMD_MAX_SIZE)
        cr_assert_eq(
            core_buf_put(&b, t, CMD_MAX_SIZE + 1 - b.len < n ? CMD_MAX_SIZE + 1 - b.len : n), 0);
    cr_assert_eq(b.len, CMD_MAX_SIZE + 1);
    cr_assert_neq(cmd_decode(b.p, b.len, &d), 0);
    cr_assert_eq(cmd_decode(b.p, valid, &d), 0);
    core_buf_free(&b);
    free(t);
}

/* ---- uuids ---- */

Test(uuid, parse_format_round_trip)
{
    const char *s = "0190f3a2-7b4c-7def-8123-456789abcdef";
    core_uuid u;
    char out[37];
    cr_assert_eq(core_uuid_parse(s, 36, &u), 0);
    cr_assert_eq(u.b[0], 0x01);
    cr_assert_eq(u.b[15], 0xef);
    core_uuid_fmt(&u, out);
    cr_assert_str_eq(out, s);

    /* upper case parses to the same bytes and formats lower case */
    core_uuid v;
    cr_assert_eq(core_uuid_parse("0190F3A2-7B4C-7DEF-8123-456789ABCDEF", 36, &v), 0);
    cr_assert(memcmp(u.b, v.b, 16) == 0);

    for (int i = 0; i < 256; i++) {
        core_uuid a, b;
        for (int j = 0; j < 16; j++)
            a.b[j] = (uint8_t)(i * 37 + j * 101);
        core_uuid_fmt(&a, out);
        cr_assert_eq(strlen(out), 36);
        cr_assert_eq(core_uuid_parse(out, 36, &b), 0);
        cr_assert(memcmp(a.b, b.b, 16) == 0);
    }
    core_uuid nil = {{0}};
    cr_assert(core_uuid_is_nil(&nil));
    core_uuid_fmt(&nil, out);
    cr_assert_str_eq(out, "00000000-0000-0000-0000-000000000000");
    cr_assert_not(core_uuid_is_nil(&u));
}

Test(uuid, rejects_bad_input)
{
    const char *bad[] = {
        "",
        "0190f3a2-7b4c-7def-8123-456789abcde",   /* 35 */
        "0190f3a2-7b4c-7def-8123-456789abcdef0", /* 37 */
        "0190f3a2x7b4c-7def-8123-456789abcdef",  /* bad dash */
        "0190f3a2-7b4c-7def-8123x456789abcdef",
        "0190f3a27-b4c-7def-8123-456789abcdef", /* dash moved */
        "0190f3g2-7b4c-7def-8123-456789abcdef", /* not hex */
        "0190f3a2-7b4c-7def-8123-456789abcde ",
        "{190f3a2-7b4c-7def-8123-456789abcdef",
        "0190f3a2-7b4c-7def-8123-456789abcdeG",
        "0190f3a2-7b4c-7def-8123-4567\0009abcdef",
    };
    core_uuid u;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = i == 10 ? 36 : strlen(bad[i]);
        cr_assert_neq(core_uuid_parse(bad[i], len, &u), 0, "accepted %s", bad[i]);
    }
    /* the length argument is what counts, not the NUL */
    cr_assert_neq(core_uuid_parse("0190f3a2-7b4c-7def-8123-456789abcdef", 35, &u), 0);
}

Test(uuid, v7_layout_and_time_order)
{
    core_uuid prev = {{0}}, u;
    int64_t t0 = 1763805600000LL;
    for (int i = 0; i < 1000; i++) {
        cr_assert_eq(core_uuid_v7(&u, t0 + i), 0);
        cr_assert_eq(u.b[6] >> 4, 7, "version nibble");
        cr_assert_eq(u.b[8] >> 6, 2, "variant bits");
        uint64_t ms = 0;
        for (int j = 0; j < 6; j++)
            ms = ms << 8 | u.b[j];
        cr_assert_eq((int64_t)ms, t0 + i);
        if (i)
            cr_assert_gt(memcmp(u.b, prev.b, 16), 0, "v7 ids must sort by time");
        prev = u;
    }
    /* same millisecond: random bits differ */
    core_uuid a, b;
    core_uuid_v7(&a, t0);
    core_uuid_v7(&b, t0);
    cr_assert(memcmp(a.b, b.b, 6) == 0);
    cr_assert(memcmp(a.b, b.b, 16) != 0);
    /* formatted ids sort the same way as the bytes */
    char sa[37], sb[37];
    core_uuid_v7(&a, t0);
    core_uuid_v7(&b, t0 + 1000);
    core_uuid_fmt(&a, sa);
    core_uuid_fmt(&b, sb);
    cr_assert_lt(strcmp(sa, sb), 0);
}

/* ---- times ---- */

Test(time, fmt_time_and_day)
{
    char out[21], day[11];
    core_fmt_time(0, out);
    cr_assert_str_eq(out, "1970-01-01T00:00:00Z");
    core_fmt_time(1795341600, out);
    cr_assert_str_eq(out, "2026-11-22T10:00:00Z");
    core_fmt_time(1795341600 + 21 * 86400 + 59, out);
    cr_assert_str_eq(out, "2026-12-13T10:00:59Z");
    core_fmt_time(951782400, out); /* leap day */
    cr_assert_str_eq(out, "2000-02-29T00:00:00Z");
    core_fmt_time(253402300799LL, out);
    cr_assert_str_eq(out, "9999-12-31T23:59:59Z");
    core_fmt_day(1795341600, day);
    cr_assert_str_eq(day, "2026-11-22");
}

/* BUG: core_fmt_time leaves out[] without a terminating NUL when the year does not fit in four
 * digits (strftime returns 0 and the buffer is indeterminate); apply() then reads past it. */
Test(time, fmt_time_always_terminates)
{
    int64_t extremes[] = {253402300800LL, 9223372036854775LL, -100000000000LL, -9223372036854775LL};
    for (size_t i = 0; i < sizeof extremes / sizeof extremes[0]; i++) {
        char out[21];
        memset(out, 'X', sizeof out);
        core_fmt_time(extremes[i], out);
        cr_assert_not_null(memchr(out, '\0', sizeof out),
                           "core_fmt_time(%lld) is not NUL-terminated", (long long)extremes[i]);
    }
}

/* ---- problems and escaping ---- */

Test(problem, valid_json_with_type_and_field)
{
    size_t len = 0;
    char *p = core_problem(409, "no-copy-available", "every copy \"is\" out\n\\ now", NULL, &len);
    cr_assert_not_null(p);
    cr_assert_eq(len, strlen(p));
    json_error_t je;
    json_t *j = json_loadb(p, len, JSON_REJECT_DUPLICATES, &je);
    cr_assert_not_null(j, "invalid JSON: %s (%s)", p, je.text);
    cr_assert_str_eq(json_string_value(json_object_get(j, "type")), "/problems/no-copy-available");
    cr_assert_eq(json_integer_value(json_object_get(j, "status")), 409);
    cr_assert_str_eq(json_string_value(json_object_get(j, "title")), "Conflict");
    cr_assert_str_eq(json_string_value(json_object_get(j, "detail")),
                     "every copy \"is\" out\n\\ now");
    cr_assert_null(json_object_get(j, "field"));
    json_decref(j);
    free(p);

    p = core_problem(422, "validation", "must be a \"UUID\"", "resource_id", &len);
    j = json_loadb(p, len, JSON_REJECT_DUPLICATES, &je);
    cr_assert_not_null(j, "invalid JSON: %s", p);
    cr_assert_str_eq(json_string_value(json_object_get(j, "type")), "/problems/validation");
    cr_assert_str_eq(json_string_value(json_object_get(j, "field")), "resource_id");
    cr_assert_eq(json_integer_value(json_object_get(j, "status")), 422);
    json_decref(j);
    free(p);

    /* a field name needing escapes, and a NULL detail */
    p = core_problem(400, "validation", NULL, "we\"ird\x01", &len);
    j = json_loadb(p, len, 0, &je);
    cr_assert_not_null(j, "invalid JSON: %s", p);
    cr_assert_str_eq(json_string_value(json_object_get(j, "field")), "we\"ird\x01");
    cr_assert_str_eq(json_string_value(json_object_get(j, "detail")), "");
    json_decref(j);
    free(p);

    int statuses[] = {400, 401, 403, 404, 405, 409, 413, 422, 429, 500, 503};
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        p = core_problem(statuses[i], "x", "d", NULL, &len);
        j = json_loadb(p, len, 0, NULL);
        cr_assert_not_null(j);
        cr_assert_eq(json_integer_value(json_object_get(j, "status")), statuses[i]);
        cr_assert_gt(strlen(json_string_value(json_object_get(j, "title"))), 0);
        json_decref(j);
        free(p);
    }
}

Test(problem, json_escape)
{
    char out[64];
    core_json_escape("plain", out, sizeof out);
    cr_assert_str_eq(out, "plain");
    core_json_escape("a\"b\\c\nd\te\x1f", out, sizeof out);
    cr_assert_str_eq(out, "a\\\"b\\\\c\\u000ad\\u0009e\\u001f");
    core_json_escape("h\xc3\xa9llo", out, sizeof out); /* UTF-8 passes through */
    cr_assert_str_eq(out, "h\xc3\xa9llo");

    /* truncation keeps the output terminated and never splits an escape */
    char small[8];
    core_json_escape("\"\"\"\"\"\"\"\"", small, sizeof small);
    cr_assert_lt(strlen(small), sizeof small);
    cr_assert_eq(strlen(small) % 2, 0);
    char big[4096];
    memset(big, '\n', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    core_json_escape(big, out, sizeof out);
    cr_assert_lt(strlen(out), sizeof out);
    cr_assert_eq(strlen(out) % 6, 0, "a \\u escape was cut: %s", out);
    char wrapped[80];
    snprintf(wrapped, sizeof wrapped, "\"%s\"", out);
    json_t *j = json_loads(wrapped, JSON_DECODE_ANY, NULL);
    cr_assert_not_null(j, "escaped text is not a JSON string: %s", wrapped);
    json_decref(j);
    core_json_escape("anything", out, 1);
    cr_assert_str_eq(out, "");
}

/* core_utf8_count's eight-bytes-at-a-time ASCII path against the plain
 * sequence-by-sequence count, for every placement of a NUL, a multi-byte
 * character or a broken sequence in ASCII text, at every alignment */
static long utf8_count_slow(const char *s, size_t n)
{
    long cps = 0;
    for (size_t i = 0, k; i < n; i += k, cps++)
        if (!(k = core_utf8_seq((const unsigned char *)s + i, n - i)))
            return -1;
    return cps;
}

Test(utf8, count_agrees_with_sequence_by_sequence_everywhere)
{
    static const char *odd[] = {
        "\0",       "\x80",         "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
        "\xc0\x80", "\xed\xa0\x80", "\x7f",     "\xe2\x82",     "\xff"};
    static const size_t odd_len[] = {1, 1, 2, 3, 4, 2, 3, 1, 2, 1};
    char buf[64];
    for (size_t o = 0; o < sizeof odd / sizeof odd[0]; o++)
        for (size_t len = 0; len <= 40; len++)
            for (size_t at = 0; at <= len; at++)
                for (size_t align = 0; align < 8; align++) {
                    char *s = buf + align;
                    size_t n = len + odd_len[o];
                    memset(s, 'a', at);
                    memcpy(s + at, odd[o], odd_len[o]);
                    memset(s + at + odd_len[o], 'b', len - at);
                    cr_assert_eq(core_utf8_count(s, n), utf8_count_slow(s, n),
                                 "odd %zu, len %zu, at %zu, align %zu", o, len, at, align);
                }
    cr_assert_eq(core_utf8_count("abcdefghijklmnop", 16), 16);
    cr_assert_eq(core_utf8_count("abcdefgh\0", 9), -1);
}
