/*
 * cmd.c — the binary command codec.
 *
 * Layout (integers big-endian, strings u16 length + bytes):
 *   u8 version, u8 type, i64 ts_ms, uuid actor, u8 actor_role,
 *   u8 idem_len, idem bytes, [32-byte request hash when idem_len > 0],
 *   then the payload of the type.
 * The decoder is a parser of untrusted input (commands will arrive from
 * peers): every length is checked against the remaining bytes and the
 * field limits of core.h, every enum against its range, and trailing bytes
 * are an error. Decoded strings point into the input buffer.
 */
#include "core/core.h"

#include <string.h>

typedef struct rd {
    const uint8_t *p;
    size_t left;
    int err;
} rd;

static int put8(core_buf *b, uint8_t v)
{
    return core_buf_put(b, &v, 1);
}

static int put32(core_buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    return core_buf_put(b, x, 4);
}

static int put64(core_buf *b, uint64_t v)
{
    uint8_t x[8];
    for (int i = 7; i >= 0; i--, v >>= 8)
        x[i] = (uint8_t)v;
    return core_buf_put(b, x, 8);
}

static int putstr(core_buf *b, core_str s)
{
    uint8_t x[2] = {(uint8_t)(s.len >> 8), (uint8_t)s.len};
    if (s.len > 0xffff)
        return CORE_ERANGE;
    if (core_buf_put(b, x, 2))
        return CORE_ENOMEM;
    return s.len ? core_buf_put(b, s.p, s.len) : 0;
}

static const uint8_t *take(rd *r, size_t n)
{
    const uint8_t *p = r->p;
    if (r->err || n > r->left) {
        r->err = 1;
        return NULL;
    }
    r->p += n;
    r->left -= n;
    return p;
}

static uint8_t get8(rd *r)
{
    const uint8_t *p = take(r, 1);
    return p ? p[0] : 0;
}

static uint32_t get32(rd *r)
{
    const uint8_t *p = take(r, 4);
    return p ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3] : 0;
}

static uint64_t get64(rd *r)
{
    const uint8_t *p = take(r, 8);
    uint64_t v = 0;
    if (p)
        for (int i = 0; i < 8; i++)
            v = v << 8 | p[i];
    return v;
}

static void getbytes(rd *r, void *out, size_t n)
{
    const uint8_t *p = take(r, n);
    if (p)
        memcpy(out, p, n);
}

/* a string of 1..max bytes (0..max when allow_empty) without NUL bytes */
static core_str getstr(rd *r, uint32_t max, int allow_empty)
{
    core_str s = {NULL, 0};
    const uint8_t *p = take(r, 2);
    if (!p)
        return s;
    s.len = (uint32_t)p[0] << 8 | p[1];
    if (s.len > max || (!s.len && !allow_empty)) {
        r->err = 1;
        return s;
    }
    s.p = (const char *)take(r, s.len);
    if (s.p && memchr(s.p, '\0', s.len))
        r->err = 1;
    return s;
}

static void getenum(rd *r, uint8_t *out, int count)
{
    *out = get8(r);
    if (*out >= count)
        r->err = 1;
}

/* a string of getstr's rules that is valid UTF-8 of 1..max code points */
static core_str get_text(rd *r, uint32_t max)
{
    core_str s = getstr(r, 4 * max, 0);
    long cps = s.p ? core_utf8_count(s.p, s.len) : 0;
    if (!r->err && (cps < 1 || cps > (long)max))
        r->err = 1;
    return s;
}

int cmd_row_put(core_buf *b, const cmd_row *w)
{
    int rc = 0;
    if (w->n_authors > CORE_MAX_LIST || w->n_tags > CORE_MAX_LIST || w->title.len > 0xffff)
        return CORE_ERANGE;
    for (int i = 0; i < w->n_authors; i++)
        if (w->authors[i].len > 0xffff)
            return CORE_ERANGE;
    for (int i = 0; i < w->n_tags; i++)
        if (w->tags[i].len > 0xffff)
            return CORE_ERANGE;
    rc |= put32(b, w->line);
    rc |= core_buf_put(b, w->id.b, 16);
    rc |= put8(b, w->has);
    rc |= put8(b, w->type);
    rc |= put8(b, w->premium);
    rc |= put32(b, w->copies);
    rc |= putstr(b, w->title);
    rc |= put8(b, w->n_authors);
    for (int i = 0; i < w->n_authors; i++)
        rc |= putstr(b, w->authors[i]);
    rc |= put8(b, w->n_tags);
    for (int i = 0; i < w->n_tags; i++)
        rc |= putstr(b, w->tags[i]);
    return rc ? CORE_ENOMEM : 0;
}

/* one row: every field within the limits the HTTP API enforces, and the
 * fields the row does not set zero (one encoding per row) */
static void row_read(rd *r, cmd_row *w)
{
    w->line = get32(r);
    getbytes(r, w->id.b, 16);
    w->has = get8(r);
    getenum(r, &w->type, RTYPE__COUNT);
    w->premium = get8(r);
    w->copies = get32(r);
    w->title = get_text(r, CORE_MAX_TITLE);
    w->n_authors = get8(r);
    if (w->n_authors > CORE_MAX_LIST)
        r->err = 1;
    for (int i = 0; !r->err && i < w->n_authors; i++)
        w->authors[i] = get_text(r, CORE_MAX_AUTHOR);
    w->n_tags = get8(r);
    if (w->n_tags > CORE_MAX_LIST)
        r->err = 1;
    for (int i = 0; !r->err && i < w->n_tags; i++)
        w->tags[i] = get_text(r, CORE_MAX_TAG);
    if (!w->line || (w->has & ~(ROW_COPIES | ROW_PREMIUM | ROW_AUTHORS | ROW_TAGS)) ||
        w->premium > 1 || w->copies > CORE_MAX_COPIES || (!(w->has & ROW_COPIES) && w->copies) ||
        (!(w->has & ROW_PREMIUM) && w->premium) || (!(w->has & ROW_AUTHORS) && w->n_authors) ||
        (!(w->has & ROW_TAGS) && w->n_tags))
        r->err = 1;
}

int cmd_row_next(const core_str *rows, size_t *off, cmd_row *w)
{
    rd r;
    if (*off >= rows->len)
        return 0;
    r = (rd){(const uint8_t *)rows->p + *off, rows->len - *off, 0};
    row_read(&r, w);
    if (r.err)
        return 0;
    *off = rows->len - r.left;
    return 1;
}

int cmd_encode(const cmd *c, core_buf *b)
{
    int rc = 0;

    if (c->ts_ms < 0 || c->ts_ms > CMD_MAX_TS_MS)
        return CORE_ERANGE;
    rc |= put8(b, CMD_VERSION);
    rc |= put8(b, c->type);
    rc |= put64(b, (uint64_t)c->ts_ms);
    rc |= core_buf_put(b, c->actor.b, 16);
    rc |= put8(b, c->actor_role);
    if (c->idem.len > CORE_MAX_IDEM)
        return CORE_ERANGE;
    rc |= put8(b, (uint8_t)c->idem.len);
    if (c->idem.len) {
        rc |= core_buf_put(b, c->idem.p, c->idem.len);
        rc |= core_buf_put(b, c->req_hash, 32);
    }
    switch (c->type) {
    case CMD_BOOTSTRAP:
        rc |= core_buf_put(b, c->u.bootstrap.key, 32);
        break;
    case CMD_POLICY:
        rc |= put32(b, c->u.policy.loan_days);
        rc |= put32(b, c->u.policy.max_renewals);
        rc |= put32(b, c->u.policy.max_loans);
        rc |= put32(b, c->u.policy.max_loans_premium);
        rc |= put32(b, c->u.policy.pickup_days);
        break;
    case CMD_TICK:
        break;
    case CMD_USER_CREATE:
        rc |= core_buf_put(b, c->u.user_create.id.b, 16);
        rc |= putstr(b, c->u.user_create.email);
        rc |= putstr(b, c->u.user_create.name);
        rc |= put8(b, c->u.user_create.role);
        rc |= put8(b, c->u.user_create.plan);
        rc |= core_buf_put(b, c->u.user_create.salt, 16);
        rc |= core_buf_put(b, c->u.user_create.hash, 32);
        rc |= put32(b, c->u.user_create.iterations);
        break;
    case CMD_USER_UPDATE:
        rc |= core_buf_put(b, c->u.user_update.id.b, 16);
        rc |= put8(b, c->u.user_update.mask);
        rc |= put8(b, c->u.user_update.status);
        rc |= put8(b, c->u.user_update.plan);
        rc |= put8(b, c->u.user_update.role);
        rc |= putstr(b, c->u.user_update.name);
        break;
    case CMD_RES_PUT:
        rc |= core_buf_put(b, c->u.res_put.id.b, 16);
        rc |= put8(b, c->u.res_put.mode);
        rc |= put8(b, c->u.res_put.type);
        rc |= put8(b, c->u.res_put.premium);
        rc |= put32(b, c->u.res_put.copies);
        rc |= putstr(b, c->u.res_put.title);
        if (c->u.res_put.n_authors > CORE_MAX_LIST || c->u.res_put.n_tags > CORE_MAX_LIST)
            return CORE_ERANGE;
        rc |= put8(b, c->u.res_put.n_authors);
        for (int i = 0; i < c->u.res_put.n_authors; i++)
            rc |= putstr(b, c->u.res_put.authors[i]);
        rc |= put8(b, c->u.res_put.n_tags);
        for (int i = 0; i < c->u.res_put.n_tags; i++)
            rc |= putstr(b, c->u.res_put.tags[i]);
        break;
    case CMD_RES_DELETE:
    case CMD_LOAN_RETURN:
    case CMD_LOAN_RENEW:
    case CMD_HOLD_CANCEL:
        rc |= core_buf_put(b, c->u.target.id.b, 16);
        break;
    case CMD_LOAN_CHECKOUT:
    case CMD_HOLD_PLACE:
        rc |= core_buf_put(b, c->u.place.id.b, 16);
        rc |= core_buf_put(b, c->u.place.user.b, 16);
        rc |= core_buf_put(b, c->u.place.resource.b, 16);
        break;
    case CMD_APIKEY_CREATE:
        rc |= core_buf_put(b, c->u.apikey.id.b, 16);
        rc |= core_buf_put(b, c->u.apikey.hash, 32);
        rc |= put8(b, c->u.apikey.role);
        rc |= putstr(b, c->u.apikey.name);
        break;
    case CMD_IMPORT:
        rc |= put32(b, c->u.import.n);
        rc |= put32(b, c->u.import.rows.len);
        rc |= core_buf_put(b, c->u.import.rows.p, c->u.import.rows.len);
        break;
    case CMD_IMPORT_DONE:
        if (c->u.import_done.name.len > CMD_MAX_NAME)
            return CORE_ERANGE;
        rc |= core_buf_put(b, c->u.import_done.sha256, 32);
        rc |= put8(b, c->u.import_done.format);
        rc |= putstr(b, c->u.import_done.name);
        rc |= put32(b, c->u.import_done.rows);
        rc |= put32(b, c->u.import_done.created);
        rc |= put32(b, c->u.import_done.updated);
        rc |= put32(b, c->u.import_done.unchanged);
        rc |= put32(b, c->u.import_done.rejected);
        break;
    default:
        return CORE_EINVAL;
    }
    if (rc)
        return CORE_ENOMEM;
    return b->len > CMD_MAX_SIZE ? CORE_ERANGE : 0;
}

int cmd_decode(const uint8_t *p, size_t len, cmd *c)
{
    rd r = {p, len, 0};

    memset(c, 0, sizeof *c);
    if (len > CMD_MAX_SIZE || get8(&r) != CMD_VERSION)
        return CORE_EINVAL;
    c->type = get8(&r);
    c->ts_ms = (int64_t)get64(&r);
    if (c->ts_ms < 0 || c->ts_ms > CMD_MAX_TS_MS)
        return CORE_EINVAL;
    getbytes(&r, c->actor.b, 16);
    getenum(&r, &c->actor_role, ROLE__COUNT);
    c->idem.len = get8(&r);
    if (c->idem.len > CORE_MAX_IDEM)
        return CORE_EINVAL;
    if (c->idem.len) {
        c->idem.p = (const char *)take(&r, c->idem.len);
        getbytes(&r, c->req_hash, 32);
    }
    switch (c->type) {
    case CMD_BOOTSTRAP:
        getbytes(&r, c->u.bootstrap.key, 32);
        break;
    case CMD_POLICY:
        c->u.policy.loan_days = get32(&r);
        c->u.policy.max_renewals = get32(&r);
        c->u.policy.max_loans = get32(&r);
        c->u.policy.max_loans_premium = get32(&r);
        c->u.policy.pickup_days = get32(&r);
        if (!c->u.policy.loan_days || c->u.policy.loan_days > 3650 || c->u.policy.pickup_days > 365)
            return CORE_EINVAL;
        break;
    case CMD_TICK:
        break;
    case CMD_USER_CREATE:
        getbytes(&r, c->u.user_create.id.b, 16);
        c->u.user_create.email = getstr(&r, 4 * CORE_MAX_EMAIL, 0);
        c->u.user_create.name = getstr(&r, 4 * CORE_MAX_NAME, 0);
        getenum(&r, &c->u.user_create.role, ROLE__COUNT);
        getenum(&r, &c->u.user_create.plan, PLAN__COUNT);
        getbytes(&r, c->u.user_create.salt, 16);
        getbytes(&r, c->u.user_create.hash, 32);
        c->u.user_create.iterations = get32(&r);
        break;
    case CMD_USER_UPDATE:
        getbytes(&r, c->u.user_update.id.b, 16);
        c->u.user_update.mask = get8(&r);
        getenum(&r, &c->u.user_update.status, USTATUS__COUNT);
        getenum(&r, &c->u.user_update.plan, PLAN__COUNT);
        getenum(&r, &c->u.user_update.role, ROLE__COUNT);
        c->u.user_update.name = getstr(&r, 4 * CORE_MAX_NAME, 1);
        if (c->u.user_update.mask & ~(UPD_STATUS | UPD_PLAN | UPD_ROLE | UPD_NAME))
            return CORE_EINVAL;
        if ((c->u.user_update.mask & UPD_NAME) && !c->u.user_update.name.len)
            return CORE_EINVAL;
        break;
    case CMD_RES_PUT:
        getbytes(&r, c->u.res_put.id.b, 16);
        c->u.res_put.mode = get8(&r);
        getenum(&r, &c->u.res_put.type, RTYPE__COUNT);
        c->u.res_put.premium = get8(&r);
        c->u.res_put.copies = get32(&r);
        c->u.res_put.title = getstr(&r, 4 * CORE_MAX_TITLE, 0);
        c->u.res_put.n_authors = get8(&r);
        if (c->u.res_put.n_authors > CORE_MAX_LIST)
            return CORE_EINVAL;
        for (int i = 0; i < c->u.res_put.n_authors; i++)
            c->u.res_put.authors[i] = getstr(&r, 4 * CORE_MAX_AUTHOR, 0);
        c->u.res_put.n_tags = get8(&r);
        if (c->u.res_put.n_tags > CORE_MAX_LIST)
            return CORE_EINVAL;
        for (int i = 0; i < c->u.res_put.n_tags; i++)
            c->u.res_put.tags[i] = getstr(&r, 4 * CORE_MAX_TAG, 0);
        if (c->u.res_put.mode > RES_UPSERT || c->u.res_put.premium > 1 ||
            c->u.res_put.copies > CORE_MAX_COPIES)
            return CORE_EINVAL;
        break;
    case CMD_RES_DELETE:
    case CMD_LOAN_RETURN:
    case CMD_LOAN_RENEW:
    case CMD_HOLD_CANCEL:
        getbytes(&r, c->u.target.id.b, 16);
        break;
    case CMD_LOAN_CHECKOUT:
    case CMD_HOLD_PLACE:
        getbytes(&r, c->u.place.id.b, 16);
        getbytes(&r, c->u.place.user.b, 16);
        getbytes(&r, c->u.place.resource.b, 16);
        break;
    case CMD_APIKEY_CREATE:
        getbytes(&r, c->u.apikey.id.b, 16);
        getbytes(&r, c->u.apikey.hash, 32);
        getenum(&r, &c->u.apikey.role, ROLE__COUNT);
        c->u.apikey.name = getstr(&r, 4 * CORE_MAX_KEYNAME, 0);
        break;
    case CMD_IMPORT: {
        rd rows;
        cmd_row w;
        c->u.import.n = get32(&r);
        c->u.import.rows.len = get32(&r);
        c->u.import.rows.p = (const char *)take(&r, c->u.import.rows.len);
        if (r.err || !c->u.import.n)
            return CORE_EINVAL;
        rows = (rd){(const uint8_t *)c->u.import.rows.p, c->u.import.rows.len, 0};
        for (uint32_t i = 0; i < c->u.import.n && !rows.err; i++)
            row_read(&rows, &w);
        if (rows.err || rows.left)
            return CORE_EINVAL;
        break;
    }
    case CMD_IMPORT_DONE:
        getbytes(&r, c->u.import_done.sha256, 32);
        c->u.import_done.format = get8(&r);
        c->u.import_done.name = getstr(&r, CMD_MAX_NAME, 1);
        c->u.import_done.rows = get32(&r);
        c->u.import_done.created = get32(&r);
        c->u.import_done.updated = get32(&r);
        c->u.import_done.unchanged = get32(&r);
        c->u.import_done.rejected = get32(&r);
        /* enum imp_format: library, jsonl or csv */
        if (r.err || c->u.import_done.format < 1 || c->u.import_done.format > 3 ||
            (c->u.import_done.name.len &&
             core_utf8_count(c->u.import_done.name.p, c->u.import_done.name.len) < 0))
            return CORE_EINVAL;
        break;
    default:
        return CORE_EINVAL;
    }
    if (r.err || r.left)
        return CORE_EINVAL;
    return 0;
}
