/* Unit tests for replication/wire.c: the frame reader/writer primitives and the raft message
 * codec (round trips of every message type and field, truncations, header and field
 * corruption, trailing bytes, the limits, out of memory). raft_malloc is routed through a
 * counting heap, so "nothing leaked" is checked exactly, not only by ASan. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replication/internal.h"

/* ---- a counting raft heap that can fail the n-th allocation ---- */

static long live;    /* raft allocations not freed */
static long fail_in; /* > 0: the fail_in-th allocation from now fails */

static int heap_fails(void)
{
    return fail_in > 0 && --fail_in == 0;
}

static void *h_malloc(void *data, size_t n)
{
    void *p = heap_fails() ? NULL : malloc(n);
    live += p != NULL;
    return p;
}

static void h_free(void *data, void *p)
{
    live -= p != NULL;
    free(p);
}

static void *h_calloc(void *data, size_t n, size_t size)
{
    void *p = heap_fails() ? NULL : calloc(n, size);
    live += p != NULL;
    return p;
}

static void *h_realloc(void *data, void *p, size_t n)
{
    void *q = heap_fails() ? NULL : realloc(p, n);
    live += q && !p;
    return q;
}

static void *h_aligned_alloc(void *data, size_t align, size_t n)
{
    void *p = heap_fails() ? NULL : aligned_alloc(align, (n + align - 1) / align * align);
    live += p != NULL;
    return p;
}

static void h_aligned_free(void *data, size_t align, void *p)
{
    h_free(data, p);
}

static struct raft_heap heap = {NULL,      h_malloc,        h_free,        h_calloc,
                                h_realloc, h_aligned_alloc, h_aligned_free};

static void setup(void)
{
    live = 0;
    fail_in = 0;
    raft_heap_set(&heap);
}

static void teardown(void)
{
    raft_heap_set_default();
}

TestSuite(wire, .init = setup, .fini = teardown);

/* ---- sample messages with every field set ---- */

#define ADDR "n1:7000" /* the sender address of the samples: the body starts at BODY */
#define BODY (4 + 1 + 8 + 2 + 7)

static uint8_t pay[1 << 16]; /* payload bytes the samples point into */
static struct raft_entry ents[WIRE_MAX_ENTRIES + 1];

static void fill_pay(void)
{
    for (size_t i = 0; i < sizeof pay; i++)
        pay[i] = (uint8_t)(i * 131 + 7);
}

/* n entries of the three types with differing sizes, every fifth empty */
static struct raft_entry *mk_entries(unsigned n)
{
    size_t off = 0;

    fill_pay();
    for (unsigned i = 0; i < n; i++) {
        ents[i].term = 0x0102030405060708ull + i / 3;
        ents[i].type = (enum raft_entry_type)(RAFT_COMMAND + i % 3);
        ents[i].buf.len = i % 5 == 4 ? 0 : (i * 97 + 1) % 700;
        ents[i].buf.base = ents[i].buf.len ? pay + off : NULL;
        ents[i].batch = NULL;
        off = (off + ents[i].buf.len) % (sizeof pay - 1024);
    }
    return ents;
}

/* five servers, all three roles, addresses of differing lengths */
static void mk_conf(struct raft_configuration *c)
{
    raft_configuration_init(c);
    cr_assert_eq(raft_configuration_add(c, 1, "10.0.0.1:7001", RAFT_VOTER), 0);
    cr_assert_eq(raft_configuration_add(c, 2, "10.0.0.2:7001", RAFT_VOTER), 0);
    cr_assert_eq(raft_configuration_add(c, 3, "standby.example:7001", RAFT_STANDBY), 0);
    cr_assert_eq(raft_configuration_add(c, 0xfedcba9876543210ull, "s:1", RAFT_SPARE), 0);
    cr_assert_eq(
        raft_configuration_add(c, 77, "a-longer-host-name.internal.example.org:65535", RAFT_VOTER),
        0);
}

/* a message of type with every field non-zero (variant 1 turns the booleans off); an
 * AppendEntries carries n entries, an InstallSnapshot a configuration to close with
 * sample_close() */
static void sample(struct raft_message *m, int type, int variant, unsigned n)
{
    memset(m, 0, sizeof *m);
    m->type = (enum raft_message_type)type;
    switch (type) {
    case RAFT_APPEND_ENTRIES:
        m->append_entries.term = 0x1112131415161718ull;
        m->append_entries.prev_log_index = 0x2122232425262728ull;
        m->append_entries.prev_log_term = 0x3132333435363738ull;
        m->append_entries.leader_commit = 0x4142434445464748ull;
        m->append_entries.entries = n ? mk_entries(n) : NULL;
        m->append_entries.n_entries = n;
        break;
    case RAFT_APPEND_ENTRIES_RESULT:
        m->append_entries_result.term = 9;
        m->append_entries_result.rejected = 0x8000000000000001ull;
        m->append_entries_result.last_log_index = 12345678901ull;
        m->append_entries_result.features = 0x1234;
        m->append_entries_result.capacity = 0xfedc;
        break;
    case RAFT_REQUEST_VOTE:
        m->request_vote.term = 7;
        m->request_vote.candidate_id = 3;
        m->request_vote.last_log_index = 0xffffffffffffffffull;
        m->request_vote.last_log_term = 6;
        m->request_vote.disrupt_leader = !variant;
        m->request_vote.pre_vote = 1;
        break;
    case RAFT_REQUEST_VOTE_RESULT:
        m->request_vote_result.term = 8;
        m->request_vote_result.vote_granted = 1;
        m->request_vote_result.pre_vote = !variant;
        m->request_vote_result.features = 0x0001;
        m->request_vote_result.capacity = 0xabcd;
        break;
    case RAFT_INSTALL_SNAPSHOT:
        fill_pay();
        m->install_snapshot.term = 11;
        m->install_snapshot.last_index = 0x0a0b0c0d0e0f1011ull;
        m->install_snapshot.last_term = 10;
        mk_conf(&m->install_snapshot.conf);
        m->install_snapshot.conf_index = 0x77;
        m->install_snapshot.data.base = variant ? NULL : pay;
        m->install_snapshot.data.len = variant ? 0 : 10000;
        break;
    case RAFT_TIMEOUT_NOW:
        m->timeout_now.term = 12;
        m->timeout_now.last_log_index = 0x123456789abcdefull;
        m->timeout_now.last_log_term = 11;
        break;
    }
}

static void sample_close(struct raft_message *m)
{
    if (m->type == RAFT_INSTALL_SNAPSHOT)
        raft_configuration_close(&m->install_snapshot.conf);
}

static void expect_eq(const struct raft_message *a, const struct raft_message *b)
{
    cr_assert_eq(a->type, b->type);
    switch (a->type) {
    case RAFT_APPEND_ENTRIES: {
        const struct raft_append_entries *x = &a->append_entries, *y = &b->append_entries;
        cr_assert_eq(x->term, y->term);
        cr_assert_eq(x->prev_log_index, y->prev_log_index);
        cr_assert_eq(x->prev_log_term, y->prev_log_term);
        cr_assert_eq(x->leader_commit, y->leader_commit);
        cr_assert_eq(x->n_entries, y->n_entries);
        for (unsigned i = 0; i < x->n_entries; i++) {
            cr_assert_eq(x->entries[i].term, y->entries[i].term, "entry %u", i);
            cr_assert_eq(x->entries[i].type, y->entries[i].type, "entry %u", i);
            cr_assert_eq(x->entries[i].buf.len, y->entries[i].buf.len, "entry %u", i);
            if (x->entries[i].buf.len)
                cr_assert(
                    !memcmp(x->entries[i].buf.base, y->entries[i].buf.base, x->entries[i].buf.len),
                    "entry %u payload", i);
        }
        break;
    }
    case RAFT_APPEND_ENTRIES_RESULT:
        cr_assert_eq(a->append_entries_result.term, b->append_entries_result.term);
        cr_assert_eq(a->append_entries_result.rejected, b->append_entries_result.rejected);
        cr_assert_eq(a->append_entries_result.last_log_index,
                     b->append_entries_result.last_log_index);
        cr_assert_eq(a->append_entries_result.features, b->append_entries_result.features);
        cr_assert_eq(a->append_entries_result.capacity, b->append_entries_result.capacity);
        break;
    case RAFT_REQUEST_VOTE:
        cr_assert_eq(a->request_vote.term, b->request_vote.term);
        cr_assert_eq(a->request_vote.candidate_id, b->request_vote.candidate_id);
        cr_assert_eq(a->request_vote.last_log_index, b->request_vote.last_log_index);
        cr_assert_eq(a->request_vote.last_log_term, b->request_vote.last_log_term);
        cr_assert_eq(a->request_vote.disrupt_leader, b->request_vote.disrupt_leader);
        cr_assert_eq(a->request_vote.pre_vote, b->request_vote.pre_vote);
        break;
    case RAFT_REQUEST_VOTE_RESULT:
        cr_assert_eq(a->request_vote_result.term, b->request_vote_result.term);
        cr_assert_eq(a->request_vote_result.vote_granted, b->request_vote_result.vote_granted);
        cr_assert_eq(a->request_vote_result.pre_vote, b->request_vote_result.pre_vote);
        cr_assert_eq(a->request_vote_result.features, b->request_vote_result.features);
        cr_assert_eq(a->request_vote_result.capacity, b->request_vote_result.capacity);
        break;
    case RAFT_INSTALL_SNAPSHOT: {
        const struct raft_install_snapshot *x = &a->install_snapshot, *y = &b->install_snapshot;
        cr_assert_eq(x->term, y->term);
        cr_assert_eq(x->last_index, y->last_index);
        cr_assert_eq(x->last_term, y->last_term);
        cr_assert_eq(x->conf_index, y->conf_index);
        cr_assert_eq(x->conf.n, y->conf.n);
        for (unsigned i = 0; i < x->conf.n; i++) {
            cr_assert_eq(x->conf.servers[i].id, y->conf.servers[i].id);
            cr_assert_eq(x->conf.servers[i].role, y->conf.servers[i].role);
            cr_assert_str_eq(x->conf.servers[i].address, y->conf.servers[i].address);
        }
        cr_assert_eq(x->data.len, y->data.len);
        if (x->data.len)
            cr_assert(!memcmp(x->data.base, y->data.base, x->data.len));
        break;
    }
    case RAFT_TIMEOUT_NOW:
        cr_assert_eq(a->timeout_now.term, b->timeout_now.term);
        cr_assert_eq(a->timeout_now.last_log_index, b->timeout_now.last_log_index);
        cr_assert_eq(a->timeout_now.last_log_term, b->timeout_now.last_log_term);
        break;
    default:
        cr_assert_fail("type %d", a->type);
    }
}

/* the memory layout raft's recv callback takes over (see internal.h) */
static void expect_layout(const struct raft_message *m)
{
    if (m->type == RAFT_APPEND_ENTRIES) {
        const struct raft_append_entries *ae = &m->append_entries;
        const uint8_t *batch, *next;
        if (!ae->n_entries) {
            cr_assert_null(ae->entries);
            return;
        }
        batch = ae->entries[0].batch;
        cr_assert_not_null(batch);
        next = batch;
        for (unsigned i = 0; i < ae->n_entries; i++) {
            const uint8_t *p = ae->entries[i].buf.base;
            cr_assert_eq(ae->entries[i].batch, batch, "entry %u has another batch", i);
            if (!ae->entries[i].buf.len) {
                cr_assert_null(p, "empty entry %u", i);
                continue;
            }
            cr_assert_eq(p, next, "entry %u not where expected in the batch", i);
            next = p + (ae->entries[i].buf.len + 7) / 8 * 8;
        }
    } else if (m->type == RAFT_INSTALL_SNAPSHOT && !m->install_snapshot.data.len) {
        cr_assert_null(m->install_snapshot.data.base);
    }
}

static void expect_versions(const struct raft_message *m)
{
    switch (m->type) {
    case RAFT_APPEND_ENTRIES:
        cr_assert_eq(m->append_entries.version, 0);
        break;
    case RAFT_APPEND_ENTRIES_RESULT:
        cr_assert_eq(m->append_entries_result.version, 2);
        break;
    case RAFT_REQUEST_VOTE:
        cr_assert_eq(m->request_vote.version, 2);
        break;
    case RAFT_REQUEST_VOTE_RESULT:
        cr_assert_eq(m->request_vote_result.version, 2);
        break;
    case RAFT_INSTALL_SNAPSHOT:
        cr_assert_eq(m->install_snapshot.version, 0);
        break;
    case RAFT_TIMEOUT_NOW:
        cr_assert_eq(m->timeout_now.version, 0);
        break;
    }
}

static void encode_ok(const struct raft_message *m, const char *addr, core_buf *b)
{
    memset(b, 0, sizeof *b);
    cr_assert_eq(wire_encode_raft(m, 42, addr, b), 0);
    cr_assert_leq(b->len, WIRE_MAX_FRAME);
}

/* decodes b, compares with m and frees: nothing may stay allocated */
static void decode_expect(const struct raft_message *m, const char *addr, const core_buf *b)
{
    struct raft_message d;
    char from[WIRE_MAX_ADDR + 1];
    long before = live;

    cr_assert_eq(wire_decode_raft(b->p, b->len, &d, from), 0);
    cr_assert_eq(d.server_id, 42);
    cr_assert_eq(d.server_address, from);
    cr_assert_str_eq(from, addr);
    expect_eq(m, &d);
    expect_versions(&d);
    expect_layout(&d);
    wire_free_raft(&d);
    cr_assert_eq(live, before, "decode leaked %ld raft allocations", live - before);
}

static void roundtrip(const struct raft_message *m)
{
    core_buf b;

    encode_ok(m, ADDR, &b);
    decode_expect(m, ADDR, &b);
    core_buf_free(&b);
}

/* decoding must fail with rc and leave nothing allocated */
static void decode_fails(const uint8_t *p, size_t len, int rc, const char *what)
{
    struct raft_message d;
    char from[WIRE_MAX_ADDR + 1];
    long before = live;

    cr_assert_eq(wire_decode_raft(p, len, &d, from), rc, "%s: accepted or wrong error", what);
    cr_assert_eq(live, before, "%s: %ld raft allocations leaked", what, live - before);
}

/* every sample message, as frames */
#define N_FRAMES 10
static void sample_frames(core_buf out[N_FRAMES])
{
    static const struct {
        int type, variant;
        unsigned n;
    } s[N_FRAMES] = {
        {RAFT_APPEND_ENTRIES, 0, 0},   {RAFT_APPEND_ENTRIES, 0, 1},
        {RAFT_APPEND_ENTRIES, 0, 23},  {RAFT_APPEND_ENTRIES_RESULT, 0, 0},
        {RAFT_REQUEST_VOTE, 0, 0},     {RAFT_REQUEST_VOTE_RESULT, 0, 0},
        {RAFT_INSTALL_SNAPSHOT, 0, 0}, {RAFT_INSTALL_SNAPSHOT, 1, 0},
        {RAFT_TIMEOUT_NOW, 0, 0},      {RAFT_REQUEST_VOTE, 1, 0},
    };
    for (int i = 0; i < N_FRAMES; i++) {
        struct raft_message m;
        sample(&m, s[i].type, s[i].variant, s[i].n);
        encode_ok(&m, ADDR, &out[i]);
        sample_close(&m);
    }
}

static void free_frames(core_buf f[N_FRAMES])
{
    for (int i = 0; i < N_FRAMES; i++)
        core_buf_free(&f[i]);
}

/* ---- primitives ---- */

Test(wire, put_get_integers_big_endian)
{
    static const uint8_t want[] = {0x7f, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02,
                                   0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0xff, 0xff};
    wire_wr w = {0};
    wire_rd r;

    wire_put_u8(&w, 0x7f);
    wire_put_u16(&w, 0x1234);
    wire_put_u32(&w, 0xdeadbeef);
    wire_put_u64(&w, 0x0102030405060708ull);
    wire_put_u16(&w, 0xffff);
    cr_assert_eq(w.failed, 0);
    cr_assert_eq(w.b.len, sizeof want);
    cr_assert(!memcmp(w.b.p, want, sizeof want));

    r = (wire_rd){.p = w.b.p, .left = w.b.len};
    cr_assert_eq(wire_get_u8(&r), 0x7f);
    cr_assert_eq(wire_get_u16(&r), 0x1234);
    cr_assert_eq(wire_get_u32(&r), 0xdeadbeef);
    cr_assert_eq(wire_get_u64(&r), 0x0102030405060708ull);
    cr_assert_eq(wire_rd_done(&r), CORE_EINVAL, "two bytes left");
    cr_assert_eq(wire_get_u16(&r), 0xffff);
    cr_assert_eq(wire_rd_done(&r), 0);
    cr_assert_eq(r.failed, 0);
    core_buf_free(&w.b);
}

Test(wire, short_read_fails_and_stays_failed)
{
    static const uint8_t in[] = {1, 2, 3, 4, 5, 6, 7};
    wire_rd r = {.p = in, .left = sizeof in};

    cr_assert_eq(wire_get_u64(&r), 0);
    cr_assert(r.failed);
    /* bytes are left but the reader stays failed */
    cr_assert_eq(wire_get_u8(&r), 0);
    cr_assert_eq(wire_get_u16(&r), 0);
    cr_assert_eq(wire_get_u32(&r), 0);
    cr_assert_eq(wire_rd_done(&r), CORE_EINVAL);

    r = (wire_rd){.p = in, .left = 3};
    cr_assert_eq(wire_get_u16(&r), 0x0102);
    cr_assert_eq(wire_get_u16(&r), 0);
    cr_assert_eq(wire_rd_done(&r), CORE_EINVAL);

    r = (wire_rd){.p = in, .left = 0};
    cr_assert_eq(wire_rd_done(&r), 0, "nothing to read is done");
    cr_assert_eq(wire_get_u8(&r), 0);
    cr_assert_eq(wire_rd_done(&r), CORE_EINVAL);
}

Test(wire, strings)
{
    wire_wr w = {0};
    wire_rd r;
    char out[9];

    wire_put_str(&w, "host:80", 8);
    wire_put_str(&w, "", 8);
    wire_put_str(&w, "12345678", 8);
    cr_assert_eq(w.failed, 0);
    cr_assert_eq(w.b.len, 2 + 7 + 2 + 2 + 8);
    cr_assert(!memcmp(w.b.p, "\0\7host:80\0\0\0\x08", 13));

    r = (wire_rd){.p = w.b.p, .left = w.b.len};
    wire_get_str(&r, out, 8);
    cr_assert_str_eq(out, "host:80");
    wire_get_str(&r, out, 8);
    cr_assert_str_eq(out, "");
    wire_get_str(&r, out, 8);
    cr_assert_str_eq(out, "12345678");
    cr_assert_eq(wire_rd_done(&r), 0);

    /* a string over max is refused on read... */
    r = (wire_rd){.p = w.b.p + 11, .left = w.b.len - 11};
    wire_get_str(&r, out, 7);
    cr_assert(r.failed);
    cr_assert_str_eq(out, "");
    /* ... and fails the writer without writing */
    size_t len = w.b.len;
    wire_put_str(&w, "123456789", 8);
    cr_assert_eq(w.failed, CORE_ERANGE);
    wire_put_u8(&w, 1);
    wire_put_str(&w, "ok", 8);
    cr_assert_eq(w.b.len, len, "a failed writer writes nothing more");
    cr_assert_eq(w.failed, CORE_ERANGE);
    core_buf_free(&w.b);
}

Test(wire, string_refusals)
{
    static const uint8_t nul[] = {0, 3, 'a', 0, 'b'};
    static const uint8_t shortlen[] = {0, 4, 'a', 'b', 'c'};
    static const uint8_t halflen[] = {0};
    char out[WIRE_MAX_ADDR + 1];
    wire_rd r = {.p = nul, .left = sizeof nul};

    wire_get_str(&r, out, WIRE_MAX_ADDR);
    cr_assert(r.failed, "a NUL inside a string");
    cr_assert_str_eq(out, "");

    r = (wire_rd){.p = shortlen, .left = sizeof shortlen};
    wire_get_str(&r, out, WIRE_MAX_ADDR);
    cr_assert(r.failed, "a length past the input");

    r = (wire_rd){.p = halflen, .left = sizeof halflen};
    wire_get_str(&r, out, WIRE_MAX_ADDR);
    cr_assert(r.failed, "half a length");
    cr_assert_str_eq(out, "");
}

Test(wire, byte_strings)
{
    static const uint8_t data[] = {9, 8, 7, 0, 6};
    wire_wr w = {0};
    wire_rd r;
    const uint8_t *p;
    size_t n = 99;

    wire_put_bytes(&w, data, sizeof data);
    wire_put_bytes(&w, NULL, 0);
    cr_assert_eq(w.failed, 0);
    cr_assert_eq(w.b.len, 4 + 5 + 4);
    cr_assert(!memcmp(w.b.p, "\0\0\0\5\x09\x08\x07\0\x06\0\0\0\0", 13));

    r = (wire_rd){.p = w.b.p, .left = w.b.len};
    p = wire_get_bytes(&r, 5, &n);
    cr_assert_eq(p, w.b.p + 4, "points into the input");
    cr_assert_eq(n, 5);
    p = wire_get_bytes(&r, 5, &n);
    cr_assert_eq(n, 0);
    cr_assert_eq(wire_rd_done(&r), 0);

    /* over max */
    r = (wire_rd){.p = w.b.p, .left = w.b.len};
    n = 99;
    cr_assert_null(wire_get_bytes(&r, 4, &n));
    cr_assert_eq(n, 0);
    cr_assert(r.failed);
    /* past the input */
    r = (wire_rd){.p = w.b.p, .left = 8};
    cr_assert_null(wire_get_bytes(&r, 5, &n));
    cr_assert(r.failed);
    core_buf_free(&w.b);
}

Test(wire, header)
{
    wire_wr w = {0};
    wire_rd r;

    wire_put_header(&w, WIRE_NOTE);
    cr_assert_eq(w.b.len, 4);
    cr_assert_eq(w.b.p[0], 'C');
    cr_assert_eq(w.b.p[1], 'R');
    cr_assert_eq(w.b.p[2], WIRE_VERSION);
    cr_assert_eq(w.b.p[3], WIRE_NOTE);
    r = (wire_rd){.p = w.b.p, .left = 4};
    cr_assert_eq(wire_get_header(&r), WIRE_NOTE);
    cr_assert_eq(wire_rd_done(&r), 0);

    for (int i = 0; i < 4; i++) {
        for (int x = 1; x < 256; x++) {
            uint8_t h[4];
            memcpy(h, w.b.p, 4);
            h[i] ^= (uint8_t)x;
            if (i == 3 && h[3] >= WIRE_RAFT && h[3] <= WIRE_NOTE)
                continue; /* another valid kind */
            r = (wire_rd){.p = h, .left = 4};
            cr_assert_eq(wire_get_header(&r), 0, "byte %d ^ %d", i, x);
            cr_assert(r.failed);
        }
    }
    r = (wire_rd){.p = w.b.p, .left = 3};
    cr_assert_eq(wire_get_header(&r), 0);
    cr_assert(r.failed);
    core_buf_free(&w.b);
}

/* ---- round trips ---- */

Test(wire, roundtrip_every_type)
{
    for (int type = RAFT_APPEND_ENTRIES; type <= RAFT_TIMEOUT_NOW; type++) {
        for (int variant = 0; variant < 2; variant++) {
            struct raft_message m;
            sample(&m, type, variant, 3);
            roundtrip(&m);
            sample_close(&m);
        }
    }
    cr_assert_eq(live, 0);
}

Test(wire, roundtrip_zero_fields)
{
    /* all-zero messages (booleans false, empty data) except what must not be zero */
    for (int type = RAFT_APPEND_ENTRIES; type <= RAFT_TIMEOUT_NOW; type++) {
        struct raft_message m;
        memset(&m, 0, sizeof m);
        m.type = (enum raft_message_type)type;
        if (type == RAFT_INSTALL_SNAPSHOT) {
            raft_configuration_init(&m.install_snapshot.conf);
            cr_assert_eq(raft_configuration_add(&m.install_snapshot.conf, 1, "", RAFT_STANDBY), 0);
        }
        roundtrip(&m);
        sample_close(&m);
    }
    cr_assert_eq(live, 0);
}

Test(wire, append_entries_zero_one_many)
{
    static const unsigned counts[] = {0, 1, 2, 5, 100, 1000};
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        struct raft_message m;
        sample(&m, RAFT_APPEND_ENTRIES, 0, counts[k]);
        roundtrip(&m);
    }
    cr_assert_eq(live, 0);
}

Test(wire, append_entries_all_empty_payloads_still_have_a_batch)
{
    struct raft_message m, d;
    char from[WIRE_MAX_ADDR + 1];
    core_buf b;

    sample(&m, RAFT_APPEND_ENTRIES, 0, 3);
    for (int i = 0; i < 3; i++) {
        ents[i].buf.base = NULL;
        ents[i].buf.len = 0;
    }
    encode_ok(&m, ADDR, &b);
    cr_assert_eq(wire_decode_raft(b.p, b.len, &d, from), 0);
    expect_eq(&m, &d);
    expect_layout(&d); /* a non-NULL batch: raft frees entries[0].batch */
    cr_assert_eq(live, 2, "the entries array and the batch");
    /* what raft does with a received AppendEntries */
    raft_free(d.append_entries.entries[0].batch);
    raft_free(d.append_entries.entries);
    cr_assert_eq(live, 0);
    core_buf_free(&b);
}

Test(wire, append_entries_as_raft_takes_it)
{
    struct raft_message m, d;
    char from[WIRE_MAX_ADDR + 1];
    core_buf b;

    sample(&m, RAFT_APPEND_ENTRIES, 0, 50);
    encode_ok(&m, ADDR, &b);
    core_buf_free(&b); /* nothing may point into the input */
    encode_ok(&m, ADDR, &b);
    cr_assert_eq(wire_decode_raft(b.p, b.len, &d, from), 0);
    memset(b.p, 0xee, b.len);
    core_buf_free(&b);
    expect_eq(&m, &d);
    cr_assert_eq(live, 2, "one array and one batch");
    wire_free_raft(&d);
    cr_assert_eq(live, 0);
    cr_assert_null(d.append_entries.entries);
    cr_assert_eq(d.append_entries.n_entries, 0);
}

Test(wire, install_snapshot_configuration_and_data)
{
    struct raft_message m, d;
    char from[WIRE_MAX_ADDR + 1];
    core_buf b;
    int roles[3] = {0};

    sample(&m, RAFT_INSTALL_SNAPSHOT, 0, 0);
    encode_ok(&m, ADDR, &b);
    cr_assert_eq(wire_decode_raft(b.p, b.len, &d, from), 0);
    memset(b.p, 0xee, b.len);
    core_buf_free(&b);
    expect_eq(&m, &d);
    cr_assert_eq(d.install_snapshot.conf.n, 5);
    for (unsigned i = 0; i < d.install_snapshot.conf.n; i++)
        roles[d.install_snapshot.conf.servers[i].role]++;
    cr_assert(roles[RAFT_STANDBY] && roles[RAFT_VOTER] && roles[RAFT_SPARE]);
    cr_assert_eq(d.install_snapshot.data.len, 10000);
    /* what raft does with a received InstallSnapshot */
    raft_configuration_close(&d.install_snapshot.conf);
    raft_free(d.install_snapshot.data.base);
    sample_close(&m);
    cr_assert_eq(live, 0);
}

Test(wire, encode_appends_to_out)
{
    struct raft_message m;
    core_buf b = {0}, alone;

    sample(&m, RAFT_TIMEOUT_NOW, 0, 0);
    cr_assert_eq(core_buf_put(&b, "xyz", 3), 0);
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), 0);
    encode_ok(&m, ADDR, &alone);
    cr_assert_eq(b.len, 3 + alone.len);
    cr_assert(!memcmp(b.p, "xyz", 3));
    cr_assert(!memcmp(b.p + 3, alone.p, alone.len));

    m.type = 0;
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), CORE_EINVAL);
    cr_assert_eq(b.len, 3 + alone.len, "a failed encode leaves out as it was");
    core_buf_free(&b);
    core_buf_free(&alone);
}

Test(wire, frame_layout)
{
    struct raft_message m;
    core_buf b;
    static const uint8_t want[] = {'C',
                                   'R',
                                   WIRE_VERSION,
                                   WIRE_RAFT,
                                   RAFT_REQUEST_VOTE_RESULT,
                                   0,
                                   0,
                                   0,
                                   0,
                                   0,
                                   0,
                                   0,
                                   42,
                                   0,
                                   7,
                                   'n',
                                   '1',
                                   ':',
                                   '7',
                                   '0',
                                   '0',
                                   '0',
                                   0,
                                   0,
                                   0,
                                   0,
                                   0,
                                   0,
                                   0,
                                   8,
                                   1,
                                   1,
                                   0x00,
                                   0x01,
                                   0xab,
                                   0xcd};

    sample(&m, RAFT_REQUEST_VOTE_RESULT, 0, 0);
    encode_ok(&m, ADDR, &b);
    cr_assert_eq(b.len, sizeof want);
    cr_assert(!memcmp(b.p, want, sizeof want));
    core_buf_free(&b);
}

/* ---- refusals ---- */

Test(wire, every_truncation_is_refused)
{
    core_buf f[N_FRAMES];

    sample_frames(f);
    for (int i = 0; i < N_FRAMES; i++)
        for (size_t k = 0; k < f[i].len; k++)
            decode_fails(f[i].p, k, CORE_EINVAL, "truncated");
    free_frames(f);
    cr_assert_eq(live, 0);
}

Test(wire, header_corruption_is_refused)
{
    core_buf f[N_FRAMES];

    sample_frames(f);
    for (int i = 0; i < N_FRAMES; i++) {
        for (int byte = 0; byte < 4; byte++) {
            for (int x = 1; x < 256; x++) {
                f[i].p[byte] ^= (uint8_t)x;
                decode_fails(f[i].p, f[i].len, CORE_EINVAL, "header byte");
                f[i].p[byte] ^= (uint8_t)x;
            }
        }
    }
    free_frames(f);
}

Test(wire, trailing_bytes_are_refused)
{
    core_buf f[N_FRAMES];

    sample_frames(f);
    for (int i = 0; i < N_FRAMES; i++) {
        cr_assert_eq(core_buf_put(&f[i], "\0", 1), 0);
        decode_fails(f[i].p, f[i].len, CORE_EINVAL, "one trailing byte");
        cr_assert_eq(core_buf_put(&f[i], "abcdefgh", 8), 0);
        decode_fails(f[i].p, f[i].len, CORE_EINVAL, "nine trailing bytes");
    }
    free_frames(f);
}

/* encodes sample (type, n entries), patches byte at off to v, expects EINVAL */
static void patched_fails(int type, unsigned n, size_t off, uint8_t v, const char *what)
{
    struct raft_message m;
    core_buf b;

    sample(&m, type, 0, n);
    encode_ok(&m, ADDR, &b);
    sample_close(&m);
    cr_assert_lt(off, b.len);
    b.p[off] = v;
    decode_fails(b.p, b.len, CORE_EINVAL, what);
    core_buf_free(&b);
}

Test(wire, bad_fields_are_refused)
{
    patched_fails(RAFT_TIMEOUT_NOW, 0, 4, 0, "message type 0");
    patched_fails(RAFT_TIMEOUT_NOW, 0, 4, 7, "message type 7");
    patched_fails(RAFT_TIMEOUT_NOW, 0, 12, 0, "sender id 0");
    /* request vote: disrupt_leader at BODY + 32, pre_vote at BODY + 33 */
    patched_fails(RAFT_REQUEST_VOTE, 0, BODY + 32, 2, "disrupt_leader 2");
    patched_fails(RAFT_REQUEST_VOTE, 0, BODY + 33, 0xff, "pre_vote 255");
    /* request vote result: vote_granted at BODY + 8, pre_vote at BODY + 9 */
    patched_fails(RAFT_REQUEST_VOTE_RESULT, 0, BODY + 8, 2, "vote_granted 2");
    patched_fails(RAFT_REQUEST_VOTE_RESULT, 0, BODY + 9, 0x80, "pre_vote 128");
    /* append entries: n at BODY + 32, the first entry's type at BODY + 36 + 8 */
    patched_fails(RAFT_APPEND_ENTRIES, 2, BODY + 44, 0, "entry type 0");
    patched_fails(RAFT_APPEND_ENTRIES, 2, BODY + 44, RAFT_CHANGE + 1, "entry type 4");
    patched_fails(RAFT_APPEND_ENTRIES, 2, BODY + 35, 3, "entry count above what follows");
    patched_fails(RAFT_APPEND_ENTRIES, 2, BODY + 35, 1, "entry count below what follows");
    patched_fails(RAFT_APPEND_ENTRIES, 2, BODY + 32, 0xff, "huge entry count");
    /* the first entry's payload length */
    patched_fails(RAFT_APPEND_ENTRIES, 2, BODY + 45, 0xff, "huge payload length");
}

Test(wire, empty_sender_address_is_refused)
{
    struct raft_message m;
    core_buf b = {0};
    wire_wr w = {0};

    sample(&m, RAFT_TIMEOUT_NOW, 0, 0);
    cr_assert_eq(wire_encode_raft(&m, 42, "", &b), CORE_EINVAL);
    cr_assert_eq(wire_encode_raft(&m, 0, ADDR, &b), CORE_EINVAL);
    cr_assert_eq(b.len, 0);

    wire_put_header(&w, WIRE_RAFT);
    wire_put_u8(&w, RAFT_TIMEOUT_NOW);
    wire_put_u64(&w, 42);
    wire_put_str(&w, "", WIRE_MAX_ADDR);
    for (int i = 0; i < 3; i++)
        wire_put_u64(&w, 1);
    cr_assert_eq(w.failed, 0);
    decode_fails(w.b.p, w.b.len, CORE_EINVAL, "empty sender address");
    core_buf_free(&w.b);
}

Test(wire, bad_messages_are_refused_on_encode)
{
    struct raft_message m;
    core_buf b = {0};
    struct raft_server s[3] = {
        {1, "a:1", RAFT_VOTER}, {2, "b:1", RAFT_VOTER}, {3, "c:1", RAFT_SPARE}};

    memset(&m, 0, sizeof m);
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), CORE_EINVAL, "type 0");
    m.type = 7;
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), CORE_EINVAL, "type 7");

    sample(&m, RAFT_APPEND_ENTRIES, 0, 3);
    ents[2].type = 0;
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), CORE_EINVAL, "entry type 0");
    ents[2].type = RAFT_CHANGE + 1;
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), CORE_EINVAL, "entry type 4");

    memset(&m, 0, sizeof m);
    m.type = RAFT_INSTALL_SNAPSHOT;
    m.install_snapshot.conf.servers = s;
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), CORE_EINVAL, "empty configuration");
    m.install_snapshot.conf.n = 3;
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), 0, "the valid one");
    cr_assert_gt(b.len, 0);
    b.len = 0;
    s[1].id = 0;
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), CORE_EINVAL, "server id 0");
    s[1].id = 3;
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), CORE_EINVAL, "duplicate id");
    s[1].id = 2;
    s[1].address = "c:1";
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), CORE_EINVAL, "duplicate address");
    s[1].address = "b:1";
    s[1].role = 3;
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), CORE_EINVAL, "role 3");
    s[1].role = -1;
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), CORE_EINVAL, "role -1");
    cr_assert_eq(b.len, 0);
    core_buf_free(&b);
    cr_assert_eq(live, 0);
}

/* an InstallSnapshot frame around the given configuration bytes */
static void snapshot_frame(wire_wr *w, const void *conf, size_t len)
{
    memset(w, 0, sizeof *w);
    wire_put_header(w, WIRE_RAFT);
    wire_put_u8(w, RAFT_INSTALL_SNAPSHOT);
    wire_put_u64(w, 42);
    wire_put_str(w, ADDR, WIRE_MAX_ADDR);
    for (int i = 0; i < 4; i++)
        wire_put_u64(w, (uint64_t)i + 1);
    wire_put_bytes(w, conf, len);
    wire_put_bytes(w, "data", 4);
    cr_assert_eq(w->failed, 0);
}

/* raft's encoding of the sample configuration, patched at off to v; EINVAL expected */
static void conf_patched_fails(size_t off, int v, size_t len_delta, const char *what)
{
    struct raft_configuration c;
    struct raft_buffer enc;
    uint8_t buf[1024];
    wire_wr w;

    mk_conf(&c);
    cr_assert_eq(raft_configuration_encode(&c, &enc), 0);
    raft_configuration_close(&c);
    cr_assert_leq(enc.len + len_delta, sizeof buf);
    memset(buf, 0, sizeof buf);
    memcpy(buf, enc.base, enc.len);
    if (v >= 0)
        buf[off] = (uint8_t)v;
    snapshot_frame(&w, buf, enc.len + len_delta);
    if (v < 0 && !len_delta) {
        struct raft_message d;
        char from[WIRE_MAX_ADDR + 1];
        /* unpatched: the frame itself is good */
        cr_assert_eq(wire_decode_raft(w.b.p, w.b.len, &d, from), 0);
        wire_free_raft(&d);
    } else {
        decode_fails(w.b.p, w.b.len, CORE_EINVAL, what);
    }
    raft_free(enc.base);
    core_buf_free(&w.b);
}

Test(wire, bad_configurations_are_refused)
{
    /* raft's layout: u8 format, u64 n (little-endian), then per server u64 id (LE),
     * address, NUL, u8 role, zeroes to a multiple of 8; the first server's id at 9, address
     * at 17 ("10.0.0.1:7001"), role at 31; the second's id at 32, address at 40; 153 bytes
     * padded to 160 */
    conf_patched_fails(0, -1, 0, "");
    conf_patched_fails(0, 2, 0, "format 2");
    conf_patched_fails(1, 0, 0, "no servers");
    conf_patched_fails(1, 6, 0, "more servers than encoded");
    conf_patched_fails(1, 4, 0, "fewer servers than encoded");
    conf_patched_fails(8, 1, 0, "2^56 + 5 servers");
    conf_patched_fails(9, 0, 0, "server id 0");
    conf_patched_fails(32, 1, 0, "duplicate id");
    conf_patched_fails(40 + 7, '1', 0, "duplicate address");
    conf_patched_fails(31, 3, 0, "role 3");
    conf_patched_fails(0, -1, 8, "eight bytes of padding too many");
    conf_patched_fails(0, -1, (size_t)-1, "a padding byte short");
}

Test(wire, short_configurations_are_refused)
{
    /* one server, id 1, address "abcdefg": the NUL and the role are missing, and with them
     * every shorter prefix; raft's own decoder would read past each of them */
    static const uint8_t conf[24] = {1, 1, 0, 0, 0, 0,   0,   0,   0,   1,   0,   0,
                                     0, 0, 0, 0, 0, 'a', 'b', 'c', 'd', 'e', 'f', 'g'};
    wire_wr w;

    for (size_t len = 0; len <= sizeof conf; len++) {
        snapshot_frame(&w, conf, len);
        decode_fails(w.b.p, w.b.len, CORE_EINVAL, "short configuration");
        core_buf_free(&w.b);
    }
}

Test(wire, configuration_padding_must_be_zero)
{
    struct raft_configuration c;
    struct raft_buffer enc;
    wire_wr w;

    raft_configuration_init(&c);
    cr_assert_eq(raft_configuration_add(&c, 5, "abc", RAFT_VOTER), 0);
    cr_assert_eq(raft_configuration_encode(&c, &enc), 0);
    raft_configuration_close(&c);
    /* 1 + 8 + 8 + 4 + 1 = 22 bytes, padded to 24 */
    cr_assert_eq(enc.len, 24);
    ((uint8_t *)enc.base)[23] = 1;
    snapshot_frame(&w, enc.base, enc.len);
    decode_fails(w.b.p, w.b.len, CORE_EINVAL, "non-zero padding");
    raft_free(enc.base);
    core_buf_free(&w.b);
}

/* ---- limits ---- */

Test(wire, address_limit)
{
    struct raft_message m;
    char addr[WIRE_MAX_ADDR + 2];
    core_buf b = {0};
    wire_wr w = {0};

    memset(addr, 'a', sizeof addr - 1);
    addr[WIRE_MAX_ADDR] = '\0';
    sample(&m, RAFT_REQUEST_VOTE, 0, 0);
    encode_ok(&m, addr, &b);
    decode_expect(&m, addr, &b);
    core_buf_free(&b);

    addr[WIRE_MAX_ADDR] = 'a';
    addr[WIRE_MAX_ADDR + 1] = '\0';
    cr_assert_eq(wire_encode_raft(&m, 42, addr, &b), CORE_ERANGE);
    cr_assert_eq(b.len, 0);
    core_buf_free(&b);

    /* the same frame written by hand with a 256-byte address */
    wire_put_header(&w, WIRE_RAFT);
    wire_put_u8(&w, RAFT_REQUEST_VOTE);
    wire_put_u64(&w, 42);
    wire_put_str(&w, addr, WIRE_MAX_ADDR + 1);
    for (int i = 0; i < 4; i++)
        wire_put_u64(&w, 1);
    wire_put_u8(&w, 1);
    wire_put_u8(&w, 0);
    cr_assert_eq(w.failed, 0);
    decode_fails(w.b.p, w.b.len, CORE_EINVAL, "256-byte address");
    core_buf_free(&w.b);
}

/* an AppendEntries frame of n empty entries, written by hand */
static void entries_frame(wire_wr *w, uint32_t n)
{
    memset(w, 0, sizeof *w);
    wire_put_header(w, WIRE_RAFT);
    wire_put_u8(w, RAFT_APPEND_ENTRIES);
    wire_put_u64(w, 42);
    wire_put_str(w, ADDR, WIRE_MAX_ADDR);
    for (int i = 0; i < 4; i++)
        wire_put_u64(w, 1);
    wire_put_u32(w, n);
    for (uint32_t i = 0; i < n; i++) {
        wire_put_u64(w, 1);
        wire_put_u8(w, RAFT_BARRIER);
        wire_put_bytes(w, NULL, 0);
    }
    cr_assert_eq(w->failed, 0);
}

Test(wire, entry_count_limit)
{
    struct raft_message m;
    core_buf b = {0};
    wire_wr w;

    sample(&m, RAFT_APPEND_ENTRIES, 0, WIRE_MAX_ENTRIES);
    roundtrip(&m);
    sample(&m, RAFT_APPEND_ENTRIES, 0, WIRE_MAX_ENTRIES + 1);
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), CORE_ERANGE);
    cr_assert_eq(b.len, 0);
    core_buf_free(&b);

    entries_frame(&w, WIRE_MAX_ENTRIES);
    {
        struct raft_message d;
        char from[WIRE_MAX_ADDR + 1];
        cr_assert_eq(wire_decode_raft(w.b.p, w.b.len, &d, from), 0);
        cr_assert_eq(d.append_entries.n_entries, WIRE_MAX_ENTRIES);
        wire_free_raft(&d);
    }
    core_buf_free(&w.b);
    entries_frame(&w, WIRE_MAX_ENTRIES + 1);
    decode_fails(w.b.p, w.b.len, CORE_EINVAL, "4097 entries");
    core_buf_free(&w.b);
    cr_assert_eq(live, 0);
}

/* n servers with addresses of alen bytes */
static void big_conf(struct raft_configuration *c, unsigned n, size_t alen)
{
    char addr[WIRE_MAX_ADDR + 2], id[16];

    raft_configuration_init(c);
    for (unsigned i = 0; i < n; i++) {
        int k = snprintf(id, sizeof id, "%u:", i); /* distinct addresses */
        memset(addr, 'h', alen);
        addr[alen] = '\0';
        memcpy(addr, id, (size_t)k);
        cr_assert_eq(raft_configuration_add(c, i + 1, addr, (int)(i % 3)), 0);
    }
}

Test(wire, configuration_limits)
{
    struct raft_message m;
    struct raft_buffer enc;
    core_buf b = {0};
    wire_wr w;

    /* the largest configuration: 64 servers with 255-byte addresses */
    memset(&m, 0, sizeof m);
    m.type = RAFT_INSTALL_SNAPSHOT;
    big_conf(&m.install_snapshot.conf, WIRE_MAX_SERVERS, WIRE_MAX_ADDR);
    roundtrip(&m);
    raft_configuration_close(&m.install_snapshot.conf);

    /* one server too many */
    big_conf(&m.install_snapshot.conf, WIRE_MAX_SERVERS + 1, 10);
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), CORE_ERANGE);
    cr_assert_eq(raft_configuration_encode(&m.install_snapshot.conf, &enc), 0);
    snapshot_frame(&w, enc.base, enc.len);
    decode_fails(w.b.p, w.b.len, CORE_EINVAL, "65 servers");
    raft_free(enc.base);
    core_buf_free(&w.b);
    raft_configuration_close(&m.install_snapshot.conf);

    /* one address byte too many */
    big_conf(&m.install_snapshot.conf, 3, WIRE_MAX_ADDR + 1);
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), CORE_ERANGE);
    cr_assert_eq(raft_configuration_encode(&m.install_snapshot.conf, &enc), 0);
    snapshot_frame(&w, enc.base, enc.len);
    decode_fails(w.b.p, w.b.len, CORE_EINVAL, "256-byte server address");
    raft_free(enc.base);
    core_buf_free(&w.b);
    raft_configuration_close(&m.install_snapshot.conf);

    cr_assert_eq(b.len, 0);
    core_buf_free(&b);
    cr_assert_eq(live, 0);
}

Test(wire, frame_size_limit_append_entries)
{
    static uint8_t big[WIRE_MAX_FRAME + 1];
    struct raft_message m;
    core_buf b;
    size_t overhead;

    sample(&m, RAFT_APPEND_ENTRIES, 0, 1);
    ents[0].buf.len = 0;
    encode_ok(&m, ADDR, &b);
    overhead = b.len;
    core_buf_free(&b);

    memset(big, 0x5a, sizeof big);
    ents[0].buf.base = big;
    ents[0].buf.len = WIRE_MAX_FRAME - overhead;
    encode_ok(&m, ADDR, &b);
    cr_assert_eq(b.len, WIRE_MAX_FRAME);
    decode_expect(&m, ADDR, &b);
    /* the same frame one byte longer: refused before anything else is looked at */
    cr_assert_eq(core_buf_put(&b, "", 1), 0);
    decode_fails(b.p, b.len, CORE_EINVAL, "frame over the limit");
    core_buf_free(&b);

    b = (core_buf){0};
    ents[0].buf.len++;
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), CORE_ERANGE);
    ents[0].buf.len = sizeof big;
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), CORE_ERANGE);
    ents[0].buf.len = (size_t)UINT32_MAX + 10; /* refused before it is read */
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), CORE_ERANGE);
    cr_assert_eq(b.len, 0);
    core_buf_free(&b);
    cr_assert_eq(live, 0);
}

Test(wire, frame_size_limit_install_snapshot)
{
    static uint8_t big[WIRE_MAX_FRAME];
    struct raft_message m;
    core_buf b;
    size_t overhead;
    wire_wr w = {0};
    struct raft_buffer enc;

    sample(&m, RAFT_INSTALL_SNAPSHOT, 1, 0);
    encode_ok(&m, ADDR, &b);
    overhead = b.len;
    core_buf_free(&b);

    memset(big, 0xa5, sizeof big);
    m.install_snapshot.data.base = big;
    m.install_snapshot.data.len = WIRE_MAX_FRAME - overhead;
    encode_ok(&m, ADDR, &b);
    cr_assert_eq(b.len, WIRE_MAX_FRAME);
    decode_expect(&m, ADDR, &b);
    core_buf_free(&b);

    b = (core_buf){0};
    m.install_snapshot.data.len++;
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), CORE_ERANGE);
    cr_assert_eq(b.len, 0);
    core_buf_free(&b);

    /* a frame that is well-formed but one byte over the limit, written by hand */
    cr_assert_eq(raft_configuration_encode(&m.install_snapshot.conf, &enc), 0);
    wire_put_header(&w, WIRE_RAFT);
    wire_put_u8(&w, RAFT_INSTALL_SNAPSHOT);
    wire_put_u64(&w, 42);
    wire_put_str(&w, ADDR, WIRE_MAX_ADDR);
    for (int i = 0; i < 4; i++)
        wire_put_u64(&w, 1);
    wire_put_bytes(&w, enc.base, enc.len);
    wire_put_bytes(&w, big, WIRE_MAX_FRAME - overhead + 1);
    cr_assert_eq(w.failed, 0);
    cr_assert_eq(w.b.len, WIRE_MAX_FRAME + 1);
    decode_fails(w.b.p, w.b.len, CORE_EINVAL, "frame over the limit");
    raft_free(enc.base);
    core_buf_free(&w.b);
    sample_close(&m);
    cr_assert_eq(live, 0);
}

/* ---- out of memory ---- */

Test(wire, decode_out_of_memory_leaks_nothing)
{
    core_buf f[N_FRAMES];

    sample_frames(f);
    for (int i = 0; i < N_FRAMES; i++) {
        for (long k = 1;; k++) {
            struct raft_message d;
            char from[WIRE_MAX_ADDR + 1];
            int rc;
            fail_in = k;
            rc = wire_decode_raft(f[i].p, f[i].len, &d, from);
            fail_in = 0;
            if (rc == 0) {
                wire_free_raft(&d);
                cr_assert_eq(live, 0);
                break;
            }
            cr_assert_eq(rc, CORE_ENOMEM, "frame %d, allocation %ld", i, k);
            cr_assert_eq(live, 0, "frame %d, allocation %ld: leaked", i, k);
        }
    }
    free_frames(f);
}

Test(wire, encode_out_of_memory)
{
    struct raft_message m;
    core_buf b = {0};

    sample(&m, RAFT_INSTALL_SNAPSHOT, 0, 0);
    fail_in = 1; /* raft_configuration_encode's buffer */
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), CORE_ENOMEM);
    cr_assert_eq(b.len, 0);
    cr_assert_eq(wire_encode_raft(&m, 42, ADDR, &b), 0);
    sample_close(&m);
    core_buf_free(&b);
    cr_assert_eq(live, 0);
}
