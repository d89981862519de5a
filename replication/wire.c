/*
 * wire.c — frames between nodes and the raft messages they carry.
 *
 * Frame: "CR", u8 WIRE_VERSION, u8 kind, then the body of the kind.
 * Integers are big-endian, strings u16 length + bytes, byte strings u32
 * length + bytes, booleans a u8 that is 0 or 1.
 *
 * A WIRE_RAFT body:
 *   u8 type (RAFT_APPEND_ENTRIES..RAFT_TIMEOUT_NOW), u64 sender id (not 0),
 *   str sender address (1..WIRE_MAX_ADDR bytes), then by type:
 *   RequestVote          u64 term, u64 candidate_id, u64 last_log_index,
 *                        u64 last_log_term, bool disrupt_leader, bool pre_vote
 *   RequestVoteResult    u64 term, bool vote_granted, bool pre_vote,
 *                        u16 features, u16 capacity
 *   AppendEntries        u64 term, u64 prev_log_index, u64 prev_log_term,
 *                        u64 leader_commit, u32 n (<= WIRE_MAX_ENTRIES),
 *                        n x (u64 term, u8 type RAFT_COMMAND..RAFT_CHANGE,
 *                        bytes payload)
 *   AppendEntriesResult  u64 term, u64 rejected, u64 last_log_index,
 *                        u16 features, u16 capacity
 *   InstallSnapshot      u64 term, u64 last_index, u64 last_term,
 *                        u64 conf_index, bytes configuration (raft's
 *                        raft_configuration_encode format), bytes data
 *   TimeoutNow           u64 term, u64 last_log_index, u64 last_log_term
 * The encoding is canonical: a frame the decoder accepts re-encodes to the
 * same bytes (the fuzz target checks it).
 *
 * Limits: a frame is at most WIRE_MAX_FRAME bytes; the encoder checks every
 * byte string against it before copying it, so an over-size message fails
 * without being copied whole. A configuration has 1..WIRE_MAX_SERVERS
 * servers with non-zero, distinct ids, distinct addresses of at most
 * WIRE_MAX_ADDR bytes and roles RAFT_STANDBY..RAFT_SPARE, checked on both
 * sides: raft_configuration_decode trusts its input (it reads past a short
 * buffer and asserts non-zero ids), so conf_check() walks the bytes first.
 *
 * Ownership: wire_encode_raft only reads the message and appends the frame
 * to out (out->len unchanged on failure). wire_decode_raft copies what it
 * keeps out of the input into raft_malloc'd memory laid out as raft's uv
 * backend does (src/uv_recv.c): one entries array, one batch holding every
 * payload at a multiple of 8 bytes (allocated even when all payloads are
 * empty: raft frees entries[0].batch whenever there are entries; an empty
 * payload has a NULL base); InstallSnapshot data (NULL when empty) and the
 * configuration decoded by raft. Whoever takes the message (raft's recv
 * callback, or wire_free_raft) frees them.
 */
#include "replication/internal.h"

#include <stdbool.h>
#include <string.h>

/* the message versions raft 0.22 gives the fields carried here (MESSAGE__*_VERSION of its
 * src/message.h); raft reads features, capacity and pre_vote only from such versions */
#define RV_VERSION  2
#define RVR_VERSION 2
#define AE_VERSION  0
#define AER_VERSION 2
#define IS_VERSION  0
#define TN_VERSION  0

/* raft's configuration encoding (its src/configuration.c), little-endian:
 *   u8 CONF_FORMAT, u64 n, n x (u64 id, address, NUL, u8 role), zeroes to a multiple of 8 */
#define CONF_FORMAT 1
#define CONF_MAX    ((1 + 8 + WIRE_MAX_SERVERS * (8 + WIRE_MAX_ADDR + 2) + 7) / 8 * 8)
#define ENTRY_MIN   13 /* an entry on the wire: u64 term, u8 type, u32 length */

static size_t pad8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/* ---- writer ---- */

/* the first error sticks */
static void wr_fail(wire_wr *w, int rc)
{
    if (!w->failed)
        w->failed = rc;
}

static void put(wire_wr *w, const void *p, size_t n)
{
    if (n && !w->failed && core_buf_put(&w->b, p, n))
        w->failed = CORE_ENOMEM;
}

void wire_put_u8(wire_wr *w, uint8_t v)
{
    put(w, &v, 1);
}

void wire_put_u16(wire_wr *w, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put(w, x, 2);
}

void wire_put_u32(wire_wr *w, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(w, x, 4);
}

void wire_put_u64(wire_wr *w, uint64_t v)
{
    uint8_t x[8];
    for (int i = 7; i >= 0; i--, v >>= 8)
        x[i] = (uint8_t)v;
    put(w, x, 8);
}

void wire_put_str(wire_wr *w, const char *s, size_t max)
{
    size_t n = strlen(s);

    if (n > max || n > UINT16_MAX) {
        wr_fail(w, CORE_ERANGE);
        return;
    }
    wire_put_u16(w, (uint16_t)n);
    put(w, s, n);
}

void wire_put_bytes(wire_wr *w, const void *p, size_t n)
{
    if (n > UINT32_MAX) {
        wr_fail(w, CORE_ERANGE);
        return;
    }
    wire_put_u32(w, (uint32_t)n);
    put(w, p, n);
}

void wire_put_header(wire_wr *w, uint8_t kind)
{
    uint8_t x[4] = {'C', 'R', WIRE_VERSION, kind};
    put(w, x, 4);
}

/* a byte string of a frame that began at start, which must stay within WIRE_MAX_FRAME */
static void put_payload(wire_wr *w, size_t start, const void *p, size_t n)
{
    if (n > WIRE_MAX_FRAME || w->b.len - start + 4 + n > WIRE_MAX_FRAME)
        wr_fail(w, CORE_ERANGE);
    wire_put_bytes(w, p, n);
}

/* ---- reader ---- */

static const uint8_t *take(wire_rd *r, size_t n)
{
    const uint8_t *p = r->p;

    if (r->failed || n > r->left) {
        r->failed = 1;
        return NULL;
    }
    r->p += n;
    r->left -= n;
    return p;
}

uint8_t wire_get_u8(wire_rd *r)
{
    const uint8_t *p = take(r, 1);
    return p ? p[0] : 0;
}

uint16_t wire_get_u16(wire_rd *r)
{
    const uint8_t *p = take(r, 2);
    return p ? (uint16_t)(p[0] << 8 | p[1]) : 0;
}

uint32_t wire_get_u32(wire_rd *r)
{
    const uint8_t *p = take(r, 4);
    return p ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3] : 0;
}

uint64_t wire_get_u64(wire_rd *r)
{
    const uint8_t *p = take(r, 8);
    uint64_t v = 0;
    if (p)
        for (int i = 0; i < 8; i++)
            v = v << 8 | p[i];
    return v;
}

void wire_get_str(wire_rd *r, char *out, size_t max)
{
    size_t n = wire_get_u16(r);
    const uint8_t *p;

    out[0] = '\0';
    if (n > max) {
        r->failed = 1;
        return;
    }
    p = take(r, n);
    if (!p)
        return;
    if (memchr(p, '\0', n)) {
        r->failed = 1;
        return;
    }
    memcpy(out, p, n);
    out[n] = '\0';
}

const uint8_t *wire_get_bytes(wire_rd *r, size_t max, size_t *n)
{
    size_t len = wire_get_u32(r);
    const uint8_t *p;

    *n = 0;
    if (len > max) {
        r->failed = 1;
        return NULL;
    }
    p = take(r, len);
    if (p)
        *n = len;
    return p;
}

uint8_t wire_get_header(wire_rd *r)
{
    const uint8_t *p = take(r, 4);

    if (p && p[0] == 'C' && p[1] == 'R' && p[2] == WIRE_VERSION && p[3] >= WIRE_RAFT &&
        p[3] <= WIRE_NOTE)
        return p[3];
    r->failed = 1;
    return 0;
}

int wire_rd_done(const wire_rd *r)
{
    return r->failed || r->left ? CORE_EINVAL : 0;
}

static bool get_bool(wire_rd *r)
{
    uint8_t v = wire_get_u8(r);
    if (v > 1)
        r->failed = 1;
    return v;
}

/* ---- raft messages: encoding ---- */

static void put_append_entries(wire_wr *w, size_t start, const struct raft_append_entries *ae)
{
    wire_put_u64(w, ae->term);
    wire_put_u64(w, ae->prev_log_index);
    wire_put_u64(w, ae->prev_log_term);
    wire_put_u64(w, ae->leader_commit);
    if (ae->n_entries > WIRE_MAX_ENTRIES)
        wr_fail(w, CORE_ERANGE);
    wire_put_u32(w, ae->n_entries);
    for (unsigned i = 0; i < ae->n_entries && !w->failed; i++) {
        const struct raft_entry *e = &ae->entries[i];
        if (e->type < RAFT_COMMAND || e->type > RAFT_CHANGE)
            wr_fail(w, CORE_EINVAL);
        wire_put_u64(w, e->term);
        wire_put_u8(w, (uint8_t)e->type);
        put_payload(w, start, e->buf.base, e->buf.len);
    }
}

/* what conf_check() and raft_configuration_decode() accept on the other side */
static void check_conf(wire_wr *w, const struct raft_configuration *c)
{
    if (!c->n)
        wr_fail(w, CORE_EINVAL);
    if (c->n > WIRE_MAX_SERVERS)
        wr_fail(w, CORE_ERANGE);
    for (unsigned i = 0; i < c->n && !w->failed; i++) {
        const struct raft_server *s = &c->servers[i];
        if (strlen(s->address) > WIRE_MAX_ADDR)
            wr_fail(w, CORE_ERANGE);
        if (!s->id || s->role < RAFT_STANDBY || s->role > RAFT_SPARE)
            wr_fail(w, CORE_EINVAL);
        for (unsigned j = 0; j < i; j++)
            if (c->servers[j].id == s->id || !strcmp(c->servers[j].address, s->address))
                wr_fail(w, CORE_EINVAL);
    }
}

static void put_install_snapshot(wire_wr *w, size_t start, const struct raft_install_snapshot *is)
{
    struct raft_buffer conf = {NULL, 0};

    wire_put_u64(w, is->term);
    wire_put_u64(w, is->last_index);
    wire_put_u64(w, is->last_term);
    wire_put_u64(w, is->conf_index);
    check_conf(w, &is->conf);
    if (!w->failed && raft_configuration_encode(&is->conf, &conf))
        wr_fail(w, CORE_ENOMEM);
    put_payload(w, start, conf.base, conf.len);
    raft_free(conf.base);
    put_payload(w, start, is->data.base, is->data.len);
}

int wire_encode_raft(const struct raft_message *m, raft_id from, const char *from_addr,
                     core_buf *out)
{
    wire_wr w = {.b = *out};
    size_t start = out->len;

    if (!from || !from_addr[0])
        return CORE_EINVAL;
    wire_put_header(&w, WIRE_RAFT);
    wire_put_u8(&w, (uint8_t)m->type);
    wire_put_u64(&w, from);
    wire_put_str(&w, from_addr, WIRE_MAX_ADDR);
    switch (m->type) {
    case RAFT_APPEND_ENTRIES:
        put_append_entries(&w, start, &m->append_entries);
        break;
    case RAFT_APPEND_ENTRIES_RESULT:
        wire_put_u64(&w, m->append_entries_result.term);
        wire_put_u64(&w, m->append_entries_result.rejected);
        wire_put_u64(&w, m->append_entries_result.last_log_index);
        wire_put_u16(&w, m->append_entries_result.features);
        wire_put_u16(&w, m->append_entries_result.capacity);
        break;
    case RAFT_REQUEST_VOTE:
        wire_put_u64(&w, m->request_vote.term);
        wire_put_u64(&w, m->request_vote.candidate_id);
        wire_put_u64(&w, m->request_vote.last_log_index);
        wire_put_u64(&w, m->request_vote.last_log_term);
        wire_put_u8(&w, m->request_vote.disrupt_leader);
        wire_put_u8(&w, m->request_vote.pre_vote);
        break;
    case RAFT_REQUEST_VOTE_RESULT:
        wire_put_u64(&w, m->request_vote_result.term);
        wire_put_u8(&w, m->request_vote_result.vote_granted);
        wire_put_u8(&w, m->request_vote_result.pre_vote);
        wire_put_u16(&w, m->request_vote_result.features);
        wire_put_u16(&w, m->request_vote_result.capacity);
        break;
    case RAFT_INSTALL_SNAPSHOT:
        put_install_snapshot(&w, start, &m->install_snapshot);
        break;
    case RAFT_TIMEOUT_NOW:
        wire_put_u64(&w, m->timeout_now.term);
        wire_put_u64(&w, m->timeout_now.last_log_index);
        wire_put_u64(&w, m->timeout_now.last_log_term);
        break;
    default:
        wr_fail(&w, CORE_EINVAL);
    }
    /* every variable-size field went through put_payload(): the frame is within the limit */
    if (w.failed)
        w.b.len = start;
    *out = w.b;
    return w.failed;
}

/* ---- raft messages: decoding ---- */

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* the layout of an encoded configuration (see CONF_FORMAT), before raft decodes it; raft
 * itself rejects duplicate ids and addresses */
static int conf_check(const uint8_t *p, size_t len)
{
    size_t off = 9;
    uint64_t n;

    if (len < 9 || p[0] != CONF_FORMAT)
        return CORE_EINVAL;
    n = le64(p + 1);
    if (!n || n > WIRE_MAX_SERVERS)
        return CORE_EINVAL;
    for (; n; n--) {
        const uint8_t *nul;
        size_t room;
        /* an id, then an address of 0..WIRE_MAX_ADDR bytes and its NUL, then the role */
        if (len - off < 10 || !le64(p + off))
            return CORE_EINVAL;
        off += 8;
        room = len - off - 1;
        nul = memchr(p + off, '\0', room < WIRE_MAX_ADDR + 1 ? room : WIRE_MAX_ADDR + 1);
        if (!nul)
            return CORE_EINVAL;
        off = (size_t)(nul - p) + 1;
        if (p[off++] > RAFT_SPARE)
            return CORE_EINVAL;
    }
    if (len != pad8(off))
        return CORE_EINVAL;
    for (; off < len; off++)
        if (p[off])
            return CORE_EINVAL;
    return 0;
}

/* the rest of the frame is the AppendEntries */
static int get_append_entries(wire_rd *r, struct raft_append_entries *ae)
{
    struct raft_entry *e;
    uint8_t *batch;
    size_t size = 0;
    uint32_t n;
    int rc = CORE_EINVAL;

    ae->version = AE_VERSION;
    ae->term = wire_get_u64(r);
    ae->prev_log_index = wire_get_u64(r);
    ae->prev_log_term = wire_get_u64(r);
    ae->leader_commit = wire_get_u64(r);
    n = wire_get_u32(r);
    /* bounds the array by the bytes left before allocating it */
    if (n > WIRE_MAX_ENTRIES || n > r->left / ENTRY_MIN)
        return CORE_EINVAL;
    if (!n)
        return wire_rd_done(r);
    e = raft_malloc(n * sizeof *e);
    if (!e)
        return CORE_ENOMEM;
    /* first pass: the payloads point into the input */
    for (uint32_t i = 0; i < n; i++) {
        uint8_t type;
        e[i].term = wire_get_u64(r);
        type = wire_get_u8(r);
        if (type < RAFT_COMMAND || type > RAFT_CHANGE)
            r->failed = 1;
        e[i].type = type;
        e[i].buf.base = (void *)wire_get_bytes(r, WIRE_MAX_FRAME, &e[i].buf.len);
        size += pad8(e[i].buf.len);
    }
    if (wire_rd_done(r))
        goto fail;
    rc = CORE_ENOMEM;
    batch = raft_malloc(size ? size : 1);
    if (!batch)
        goto fail;
    size = 0;
    for (uint32_t i = 0; i < n; i++) {
        e[i].batch = batch;
        if (!e[i].buf.len) {
            e[i].buf.base = NULL;
            continue;
        }
        memcpy(batch + size, e[i].buf.base, e[i].buf.len);
        e[i].buf.base = batch + size;
        size += pad8(e[i].buf.len);
    }
    ae->entries = e;
    ae->n_entries = n;
    return 0;

fail:
    raft_free(e);
    return rc;
}

/* the rest of the frame is the InstallSnapshot */
static int get_install_snapshot(wire_rd *r, struct raft_install_snapshot *is)
{
    struct raft_configuration conf;
    struct raft_buffer enc;
    const uint8_t *data;
    size_t len;
    int rc;

    is->version = IS_VERSION;
    is->term = wire_get_u64(r);
    is->last_index = wire_get_u64(r);
    is->last_term = wire_get_u64(r);
    is->conf_index = wire_get_u64(r);
    enc.base = (void *)wire_get_bytes(r, CONF_MAX, &enc.len);
    data = wire_get_bytes(r, WIRE_MAX_FRAME, &len);
    if (wire_rd_done(r) || conf_check(enc.base, enc.len))
        return CORE_EINVAL;
    rc = raft_configuration_decode(&enc, &conf);
    if (rc)
        return rc == RAFT_NOMEM ? CORE_ENOMEM : CORE_EINVAL;
    if (len) {
        is->data.base = raft_malloc(len);
        if (!is->data.base)
            goto fail;
        memcpy(is->data.base, data, len);
        is->data.len = len;
    }
    is->conf = conf;
    return 0;

fail:
    raft_configuration_close(&conf);
    return CORE_ENOMEM;
}

int wire_decode_raft(const uint8_t *p, size_t len, struct raft_message *m, char *addr)
{
    wire_rd r = {.p = p, .left = len};

    memset(m, 0, sizeof *m);
    addr[0] = '\0';
    m->server_address = addr;
    if (len > WIRE_MAX_FRAME || wire_get_header(&r) != WIRE_RAFT)
        return CORE_EINVAL;
    m->type = wire_get_u8(&r);
    m->server_id = wire_get_u64(&r);
    wire_get_str(&r, addr, WIRE_MAX_ADDR);
    if (!m->server_id || !addr[0])
        r.failed = 1;
    switch (m->type) {
    case RAFT_APPEND_ENTRIES:
        return get_append_entries(&r, &m->append_entries);
    case RAFT_APPEND_ENTRIES_RESULT:
        m->append_entries_result.version = AER_VERSION;
        m->append_entries_result.term = wire_get_u64(&r);
        m->append_entries_result.rejected = wire_get_u64(&r);
        m->append_entries_result.last_log_index = wire_get_u64(&r);
        m->append_entries_result.features = wire_get_u16(&r);
        m->append_entries_result.capacity = wire_get_u16(&r);
        break;
    case RAFT_REQUEST_VOTE:
        m->request_vote.version = RV_VERSION;
        m->request_vote.term = wire_get_u64(&r);
        m->request_vote.candidate_id = wire_get_u64(&r);
        m->request_vote.last_log_index = wire_get_u64(&r);
        m->request_vote.last_log_term = wire_get_u64(&r);
        m->request_vote.disrupt_leader = get_bool(&r);
        m->request_vote.pre_vote = get_bool(&r);
        break;
    case RAFT_REQUEST_VOTE_RESULT:
        m->request_vote_result.version = RVR_VERSION;
        m->request_vote_result.term = wire_get_u64(&r);
        m->request_vote_result.vote_granted = get_bool(&r);
        m->request_vote_result.pre_vote = get_bool(&r);
        m->request_vote_result.features = wire_get_u16(&r);
        m->request_vote_result.capacity = wire_get_u16(&r);
        break;
    case RAFT_INSTALL_SNAPSHOT:
        return get_install_snapshot(&r, &m->install_snapshot);
    case RAFT_TIMEOUT_NOW:
        m->timeout_now.version = TN_VERSION;
        m->timeout_now.term = wire_get_u64(&r);
        m->timeout_now.last_log_index = wire_get_u64(&r);
        m->timeout_now.last_log_term = wire_get_u64(&r);
        break;
    default:
        return CORE_EINVAL;
    }
    return wire_rd_done(&r);
}

void wire_free_raft(struct raft_message *m)
{
    switch (m->type) {
    case RAFT_APPEND_ENTRIES:
        if (m->append_entries.n_entries)
            raft_free(m->append_entries.entries[0].batch);
        raft_free(m->append_entries.entries);
        m->append_entries.entries = NULL;
        m->append_entries.n_entries = 0;
        break;
    case RAFT_INSTALL_SNAPSHOT:
        raft_configuration_close(&m->install_snapshot.conf);
        raft_configuration_init(&m->install_snapshot.conf);
        raft_free(m->install_snapshot.data.base);
        m->install_snapshot.data.base = NULL;
        m->install_snapshot.data.len = 0;
        break;
    default:
        break;
    }
}
