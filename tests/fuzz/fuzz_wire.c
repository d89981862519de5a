/* libFuzzer target for the raft message codec (replication/wire.c). wire_decode_raft must never
 * crash or leak on arbitrary bytes; whatever it accepts must re-encode to the same bytes (the
 * encoding is canonical) and decode again to equal fields. Seeds: tests/fuzz/corpus/fuzz_wire/
 * (a frame of each message type). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "replication/internal.h"

static int buf_eq(const struct raft_buffer *a, const struct raft_buffer *b)
{
    return a->len == b->len && (!a->len || !memcmp(a->base, b->base, a->len));
}

static int conf_eq(const struct raft_configuration *a, const struct raft_configuration *b)
{
    if (a->n != b->n)
        return 0;
    for (unsigned i = 0; i < a->n; i++)
        if (a->servers[i].id != b->servers[i].id || a->servers[i].role != b->servers[i].role ||
            strcmp(a->servers[i].address, b->servers[i].address))
            return 0;
    return 1;
}

static int msg_eq(const struct raft_message *a, const struct raft_message *b)
{
    if (a->type != b->type || a->server_id != b->server_id ||
        strcmp(a->server_address, b->server_address))
        return 0;
    switch (a->type) {
    case RAFT_APPEND_ENTRIES: {
        const struct raft_append_entries *x = &a->append_entries, *y = &b->append_entries;
        if (x->version != y->version || x->term != y->term ||
            x->prev_log_index != y->prev_log_index || x->prev_log_term != y->prev_log_term ||
            x->leader_commit != y->leader_commit || x->n_entries != y->n_entries)
            return 0;
        for (unsigned i = 0; i < x->n_entries; i++)
            if (x->entries[i].term != y->entries[i].term ||
                x->entries[i].type != y->entries[i].type ||
                !buf_eq(&x->entries[i].buf, &y->entries[i].buf))
                return 0;
        return 1;
    }
    case RAFT_APPEND_ENTRIES_RESULT:
        return a->append_entries_result.version == b->append_entries_result.version &&
               a->append_entries_result.term == b->append_entries_result.term &&
               a->append_entries_result.rejected == b->append_entries_result.rejected &&
               a->append_entries_result.last_log_index == b->append_entries_result.last_log_index &&
               a->append_entries_result.features == b->append_entries_result.features &&
               a->append_entries_result.capacity == b->append_entries_result.capacity;
    case RAFT_REQUEST_VOTE:
        return a->request_vote.version == b->request_vote.version &&
               a->request_vote.term == b->request_vote.term &&
               a->request_vote.candidate_id == b->request_vote.candidate_id &&
               a->request_vote.last_log_index == b->request_vote.last_log_index &&
               a->request_vote.last_log_term == b->request_vote.last_log_term &&
               a->request_vote.disrupt_leader == b->request_vote.disrupt_leader &&
               a->request_vote.pre_vote == b->request_vote.pre_vote;
    case RAFT_REQUEST_VOTE_RESULT:
        return a->request_vote_result.version == b->request_vote_result.version &&
               a->request_vote_result.term == b->request_vote_result.term &&
               a->request_vote_result.vote_granted == b->request_vote_result.vote_granted &&
               a->request_vote_result.pre_vote == b->request_vote_result.pre_vote &&
               a->request_vote_result.features == b->request_vote_result.features &&
               a->request_vote_result.capacity == b->request_vote_result.capacity;
    case RAFT_INSTALL_SNAPSHOT: {
        const struct raft_install_snapshot *x = &a->install_snapshot, *y = &b->install_snapshot;
        return x->version == y->version && x->term == y->term && x->last_index == y->last_index &&
               x->last_term == y->last_term && x->conf_index == y->conf_index &&
               conf_eq(&x->conf, &y->conf) && buf_eq(&x->data, &y->data);
    }
    case RAFT_TIMEOUT_NOW:
        return a->timeout_now.version == b->timeout_now.version &&
               a->timeout_now.term == b->timeout_now.term &&
               a->timeout_now.last_log_index == b->timeout_now.last_log_index &&
               a->timeout_now.last_log_term == b->timeout_now.last_log_term;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char addr_a[WIRE_MAX_ADDR + 1], addr_b[WIRE_MAX_ADDR + 1];
    struct raft_message a, b;
    core_buf enc = {0};

    if (wire_decode_raft(data, size, &a, addr_a) != 0)
        return 0;
    /* the decoder accepted it: the encoder must reproduce the input exactly */
    if (wire_encode_raft(&a, a.server_id, a.server_address, &enc) != 0)
        __builtin_trap();
    if (enc.len != size || memcmp(enc.p, data, size) != 0)
        __builtin_trap();
    if (wire_decode_raft(enc.p, enc.len, &b, addr_b) != 0)
        __builtin_trap();
    if (!msg_eq(&a, &b))
        __builtin_trap();
    wire_free_raft(&a);
    wire_free_raft(&b);
    core_buf_free(&enc);
    return 0;
}

#ifdef FUZZ_WIRE_GEN_SEEDS
/* Seed generator, not part of the fuzz target:
 *   cc -DFUZZ_WIRE_GEN_SEEDS -I. tests/fuzz/fuzz_wire.c build/libcirca_lib.a -lraft -lcrypto -o gen
 *   ./gen tests/fuzz/corpus/fuzz_wire
 * writes one frame per message type (AppendEntries with 0, 1 and 3 entries) into DIR. */
#include <stdio.h>

static int write_seed(const char *dir, const char *name, const struct raft_message *m)
{
    core_buf b = {0};
    char path[512];
    FILE *f;
    int rc = 1;

    if (wire_encode_raft(m, 2, "10.0.0.2:7001", &b))
        goto fail;
    snprintf(path, sizeof path, "%s/seed-%s", dir, name);
    f = fopen(path, "wb");
    if (!f)
        goto fail;
    rc = fwrite(b.p, 1, b.len, f) != b.len;
    rc |= fclose(f) != 0;
fail:
    core_buf_free(&b);
    return rc;
}

int main(int argc, char **argv)
{
    static const char batch[] = "\x01\x00\x00\x00\x01\x00\x00\x00\x03"
                                "abc";
    struct raft_entry e[3] = {
        {.term = 3, .type = RAFT_COMMAND, .buf = {(void *)batch, sizeof batch - 1}},
        {.term = 3, .type = RAFT_BARRIER, .buf = {NULL, 0}},
        {.term = 4, .type = RAFT_CHANGE, .buf = {(void *)"conf-bytes", 10}},
    };
    struct raft_message m;
    int rc = 0;

    if (argc != 2)
        return 2;
    memset(&m, 0, sizeof m);
    m.type = RAFT_APPEND_ENTRIES;
    m.append_entries = (struct raft_append_entries){
        .term = 4, .prev_log_index = 10, .prev_log_term = 3, .leader_commit = 9};
    rc |= write_seed(argv[1], "append-entries-0", &m);
    m.append_entries.entries = e;
    m.append_entries.n_entries = 1;
    rc |= write_seed(argv[1], "append-entries-1", &m);
    m.append_entries.n_entries = 3;
    rc |= write_seed(argv[1], "append-entries-3", &m);

    memset(&m, 0, sizeof m);
    m.type = RAFT_APPEND_ENTRIES_RESULT;
    m.append_entries_result = (struct raft_append_entries_result){
        .term = 4, .rejected = 11, .last_log_index = 10, .features = 1, .capacity = 512};
    rc |= write_seed(argv[1], "append-entries-result", &m);

    memset(&m, 0, sizeof m);
    m.type = RAFT_REQUEST_VOTE;
    m.request_vote = (struct raft_request_vote){.term = 5,
                                                .candidate_id = 2,
                                                .last_log_index = 12,
                                                .last_log_term = 4,
                                                .disrupt_leader = true,
                                                .pre_vote = true};
    rc |= write_seed(argv[1], "request-vote", &m);

    memset(&m, 0, sizeof m);
    m.type = RAFT_REQUEST_VOTE_RESULT;
    m.request_vote_result = (struct raft_request_vote_result){
        .term = 5, .vote_granted = true, .pre_vote = true, .features = 1, .capacity = 512};
    rc |= write_seed(argv[1], "request-vote-result", &m);

    memset(&m, 0, sizeof m);
    m.type = RAFT_INSTALL_SNAPSHOT;
    m.install_snapshot.term = 6;
    m.install_snapshot.last_index = 100;
    m.install_snapshot.last_term = 5;
    m.install_snapshot.conf_index = 90;
    raft_configuration_init(&m.install_snapshot.conf);
    rc |= raft_configuration_add(&m.install_snapshot.conf, 1, "10.0.0.1:7001", RAFT_VOTER);
    rc |= raft_configuration_add(&m.install_snapshot.conf, 2, "10.0.0.2:7001", RAFT_STANDBY);
    rc |= raft_configuration_add(&m.install_snapshot.conf, 3, "10.0.0.3:7001", RAFT_SPARE);
    m.install_snapshot.data = (struct raft_buffer){(void *)"snapshot-descriptor", 19};
    rc |= write_seed(argv[1], "install-snapshot", &m);
    raft_configuration_close(&m.install_snapshot.conf);

    memset(&m, 0, sizeof m);
    m.type = RAFT_TIMEOUT_NOW;
    m.timeout_now = (struct raft_timeout_now){.term = 6, .last_log_index = 12, .last_log_term = 4};
    rc |= write_seed(argv[1], "timeout-now", &m);
    return rc != 0;
}
#endif
