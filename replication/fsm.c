/*
 * fsm.c — raft's state machine: entries of command batches applied to LMDB
 * with apply(). See internal.h for the entry and snapshot formats and why
 * entries at or below meta "raft_applied" are skipped.
 */
#include "replication/internal.h"

#include <stdlib.h>
#include <string.h>

int fsm_entry_add(core_buf *e, const uint8_t *c, size_t len)
{
    uint8_t hdr[5] = {FSM_ENTRY_VERSION, 0, 0, 0, 0}, l[4];

    if (e->len == 0 && core_buf_put(e, hdr, sizeof hdr))
        return CORE_ENOMEM;
    if (e->len + 4 + len > FSM_ENTRY_MAX)
        return CORE_ERANGE;
    store_be32(l, (uint32_t)len);
    if (core_buf_put(e, l, 4) || core_buf_put(e, c, len))
        return CORE_ENOMEM;
    store_be32(e->p + 1, store_rd32(e->p + 1) + 1);
    return 0;
}

static void fail_result(apply_result *res, int status, const char *kind, const char *detail)
{
    apply_result_clear(res);
    res->status = status;
    res->problem = 1;
    res->body = core_problem(status, kind, detail, NULL, &res->body_len);
}

/* Checks an entry's framing as a whole, so a malformed entry fails before
 * any of its commands touched the state; returns the command count. */
static int entry_check(const uint8_t *p, size_t len, uint32_t *count)
{
    size_t off = 5;
    uint32_t n;

    if (len < 5 || p[0] != FSM_ENTRY_VERSION)
        return CORE_EINVAL;
    n = store_rd32(p + 1);
    if (n > (len - 5) / 4)
        return CORE_EINVAL;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t cl;
        if (len - off < 4 || (cl = store_rd32(p + off)) > len - off - 4)
            return CORE_EINVAL;
        off += 4 + cl;
    }
    *count = n;
    return off == len ? 0 : CORE_EINVAL;
}

/* Applies every command of the entry at index in t. A command that does not
 * decode is answered 400 on every replica alike and takes no seq. A storage
 * failure is returned: the replica cannot go on without that entry. */
static int apply_entry(fsm *f, store_txn *t, uint64_t index, const uint8_t *p, size_t len,
                       fsm_done *d)
{
    uint32_t n, i;
    size_t off = 5;
    int rc;

    if ((rc = entry_check(p, len, &n)))
        return rc;
    d->index = index;
    d->seq = calloc(n ? n : 1, sizeof *d->seq);
    d->res = calloc(n ? n : 1, sizeof *d->res);
    if (!d->seq || !d->res)
        return CORE_ENOMEM;
    for (i = 0; i < n; i++) {
        uint32_t cl = store_rd32(p + off);
        cmd c;
        off += 4;
        d->n = i + 1;
        if (cmd_decode(p + off, cl, &c)) {
            fail_result(&d->res[i], 400, "bad-request", "the command does not decode");
        } else {
            d->seq[i] = store_meta_u64(t, "applied") + 1;
            if ((rc = apply(t, d->seq[i], &c, p + off, cl, &d->res[i])))
                return rc;
        }
        off += cl;
    }
    return store_meta_put_u64(t, "raft_applied", index);
}

static int fsm_apply(struct raft_fsm *rf, const struct raft_buffer *buf, void **result)
{
    fsm *f = rf->data;
    uint64_t index = raft_last_applied(f->raft) + 1;
    store_txn own, *t = f->txn ? f->txn(f->ctx) : NULL;
    fsm_done *d;
    int rc;

    *result = NULL;
    if (!t) {
        if (store_begin(f->st, 1, &own))
            return RAFT_IOERR;
        t = &own;
    }
    if (store_meta_u64(t, "raft_applied") >= index) {
        if (t == &own)
            store_abort(&own);
        return 0;
    }
    if (!(d = calloc(1, sizeof *d))) {
        rc = CORE_ENOMEM;
        goto fail;
    }
    if ((rc = apply_entry(f, t, index, buf->base, buf->len, d)))
        goto fail;
    if (t == &own && store_commit(&own)) {
        t = NULL;
        rc = CORE_EIO;
        goto fail;
    }
    *f->done_tail = d;
    f->done_tail = &d->next;
    f->entries++;
    return 0;
fail:
    core_log(LOG_ERROR, "a committed entry could not be applied; this replica stops applying",
             "\"index\":%llu,\"rc\":%d", (unsigned long long)index, rc);
    fsm_done_free(d);
    if (t == &own)
        store_abort(&own);
    return rc == CORE_ENOMEM ? RAFT_NOMEM : RAFT_IOERR;
}

int fsm_snap_desc(uint64_t index, raft_id source, const char *address, struct raft_buffer *out)
{
    wire_wr w = {0};

    wire_put_u8(&w, FSM_SNAP_VERSION);
    wire_put_u64(&w, index);
    wire_put_u64(&w, source);
    wire_put_str(&w, address ? address : "", WIRE_MAX_ADDR);
    if (w.failed || !(out->base = raft_malloc(w.b.len))) {
        core_buf_free(&w.b);
        return CORE_ENOMEM;
    }
    memcpy(out->base, w.b.p, w.b.len);
    out->len = w.b.len;
    core_buf_free(&w.b);
    return 0;
}

int fsm_snap_parse(const uint8_t *p, size_t len, uint64_t *index, raft_id *source, char *address)
{
    wire_rd r = {.p = p, .left = len};

    if (wire_get_u8(&r) != FSM_SNAP_VERSION)
        return CORE_EINVAL;
    *index = wire_get_u64(&r);
    *source = wire_get_u64(&r);
    wire_get_str(&r, address, WIRE_MAX_ADDR);
    return wire_rd_done(&r);
}

static int fsm_snapshot(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    fsm *f = rf->data;
    struct raft_buffer *b = raft_malloc(sizeof *b);

    if (!b)
        return RAFT_NOMEM;
    if (fsm_snap_desc(raft_last_applied(f->raft), f->raft->id, f->raft->address, b)) {
        raft_free(b);
        return RAFT_NOMEM;
    }
    *bufs = b;
    *n_bufs = 1;
    return 0;
}

/* The state is persistent: a snapshot the store already covers needs
 * nothing; a newer one must be installed by the hook. On success buf's
 * memory is ours to free, on failure raft keeps it. */
static int fsm_restore(struct raft_fsm *rf, struct raft_buffer *buf)
{
    fsm *f = rf->data;
    char addr[WIRE_MAX_ADDR + 1];
    uint64_t index, have;
    raft_id source;
    store_txn t;

    if (fsm_snap_parse(buf->base, buf->len, &index, &source, addr))
        return RAFT_MALFORMED;
    if (store_begin(f->st, 0, &t))
        return RAFT_IOERR;
    have = store_meta_u64(&t, "raft_applied");
    store_abort(&t);
    if (have < index) {
        if (!f->install || f->install(f->ctx, buf->base, buf->len) || store_begin(f->st, 0, &t))
            return RAFT_IOERR;
        have = store_meta_u64(&t, "raft_applied");
        store_abort(&t);
        if (have < index) /* the installed state must cover the snapshot */
            return RAFT_IOERR;
    }
    raft_free(buf->base);
    return 0;
}

void fsm_init(fsm *f, struct raft_fsm *rf, store *st, struct raft *r)
{
    memset(f, 0, sizeof *f);
    f->st = st;
    f->raft = r;
    f->done_tail = &f->done;
    memset(rf, 0, sizeof *rf);
    rf->version = 1;
    rf->data = f;
    rf->apply = fsm_apply;
    rf->snapshot = fsm_snapshot;
    rf->restore = fsm_restore;
}

fsm_done *fsm_take(fsm *f)
{
    fsm_done *d = f->done;
    f->done = NULL;
    f->done_tail = &f->done;
    return d;
}

void fsm_done_free(fsm_done *d)
{
    while (d) {
        fsm_done *next = d->next;
        for (uint32_t i = 0; d->res && i < d->n; i++)
            apply_result_clear(&d->res[i]);
        free(d->res);
        free(d->seq);
        free(d);
        d = next;
    }
}
