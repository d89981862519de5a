/*
 * replication/internal.h — what the replication module's files share:
 * the wire codec (wire.c), the state machine adapter (fsm.c), the raft_io
 * over LMDB and nng (io.c) and the raft actor (repl.c). Not for other
 * modules: they use replication/repl.h.
 */
#ifndef CIRCA_REPL_INTERNAL_H
#define CIRCA_REPL_INTERNAL_H

#include "core/core.h"
#include "persist/store.h"

#include <raft.h>
#include <stddef.h>
#include <stdint.h>

/* ---- wire.c: frames between nodes -------------------------------------
 *
 * Every frame starts with the magic "CR", a version byte (WIRE_VERSION)
 * and a kind byte; integers are big-endian, strings and byte strings carry
 * a length. Decoders treat input as untrusted: every length is checked
 * against the bytes left and against its limit, enums against their range,
 * and trailing bytes are an error. A frame is at most WIRE_MAX_FRAME bytes
 * (the receiving sockets set NNG_OPT_RECVMAXSZ to it).
 */
#define WIRE_VERSION     1
#define WIRE_MAX_FRAME   (16u << 20)
#define WIRE_MAX_ADDR    255  /* bytes of a peer address "host:port" */
#define WIRE_MAX_ENTRIES 4096 /* entries in one AppendEntries */
#define WIRE_MAX_SERVERS 64   /* servers in a configuration */

enum wire_kind {
    WIRE_RAFT = 1, /* a raft message, node to node (push/pull) */
    WIRE_REQ = 2,  /* a request, node to node (req/rep) */
    WIRE_REP = 3,  /* the answer to a request */
    WIRE_NOTE = 4, /* a one-way notice (push/pull), e.g. the flushed index */
};

/* Writer and reader of frame bodies. A writer that fails (out of memory)
 * remembers it; check wire_wr.failed once at the end. A reader that meets
 * a short or over-long field sets failed and returns zeroes from then on.
 * wire_wr.failed holds the first error: CORE_ENOMEM, or CORE_ERANGE for a
 * string or byte string over its limit; later puts do nothing. */
typedef struct wire_wr {
    core_buf b;
    int failed;
} wire_wr;

typedef struct wire_rd {
    const uint8_t *p;
    size_t left;
    int failed;
} wire_rd;

void wire_put_u8(wire_wr *w, uint8_t v);
void wire_put_u16(wire_wr *w, uint16_t v);
void wire_put_u32(wire_wr *w, uint32_t v);
void wire_put_u64(wire_wr *w, uint64_t v);
/* u16 length + bytes; a string longer than max fails the writer */
void wire_put_str(wire_wr *w, const char *s, size_t max);
/* u32 length + bytes */
void wire_put_bytes(wire_wr *w, const void *p, size_t n);
/* "CR", WIRE_VERSION, kind */
void wire_put_header(wire_wr *w, uint8_t kind);

uint8_t wire_get_u8(wire_rd *r);
uint16_t wire_get_u16(wire_rd *r);
uint32_t wire_get_u32(wire_rd *r);
uint64_t wire_get_u64(wire_rd *r);
/* copies a u16-length string of at most max bytes, without NULs, into out
 * (max + 1 bytes) and NUL-terminates it */
void wire_get_str(wire_rd *r, char *out, size_t max);
/* a u32-length byte string of at most max bytes: points into the input */
const uint8_t *wire_get_bytes(wire_rd *r, size_t max, size_t *n);
/* checks magic and version and returns the kind; 0 and failed on error */
uint8_t wire_get_header(wire_rd *r);
/* 0 when the whole input was read without error, else CORE_EINVAL */
int wire_rd_done(const wire_rd *r);

/* A raft message as a WIRE_RAFT frame, with the sender's id and address.
 * All six message types, every field of each (entries with term, type and
 * payload; the configuration of InstallSnapshot with raft's own
 * raft_configuration_encode format; its data). Fails with CORE_ERANGE when
 * the frame would exceed WIRE_MAX_FRAME or a limit above. The frame is
 * appended to out (out->len is unchanged on failure). CORE_EINVAL for what
 * the decoder would refuse: sender id 0 or an empty address, an unknown
 * message or entry type, an empty configuration or one with a server id 0,
 * a bad role or a duplicate id or address. The message's version fields
 * are not sent. */
int wire_encode_raft(const struct raft_message *m, raft_id from, const char *from_addr,
                     core_buf *out);
/* Decodes a WIRE_RAFT frame. On success m->server_id/server_address name
 * the sender (server_address points into addr, WIRE_MAX_ADDR + 1 bytes),
 * and memory is laid out the way raft's recv callback takes it over:
 * AppendEntries entries are one raft_malloc'd array whose payloads all
 * live in one raft_malloc'd batch (entries[i].batch == that batch; NULL
 * array and batch when there are none); InstallSnapshot data is
 * raft_malloc'd and its configuration decoded. On error nothing is left
 * allocated and CORE_EINVAL is returned (CORE_ENOMEM when out of memory).
 * The version fields are set to the versions raft 0.22 sends, so that raft
 * reads every field carried (features, capacity, pre_vote). */
int wire_decode_raft(const uint8_t *p, size_t len, struct raft_message *m, char *addr);
/* Frees what wire_decode_raft allocated, for callers that do not hand the
 * message to raft. */
void wire_free_raft(struct raft_message *m);

/* ---- fsm.c: the state machine raft drives --------------------------------
 *
 * A raft entry of type RAFT_COMMAND carries a batch of encoded commands:
 *   u8 FSM_ENTRY_VERSION, u32 n, n x (u32 len, command)
 * Applying entry I applies each command with apply() at the next command
 * sequence number (meta "applied", what the outbox and PostgreSQL count)
 * and records I as meta "raft_applied" in the same transaction. An entry
 * at or below raft_applied is skipped: the LMDB state is persistent, so
 * after a restart or a snapshot install raft replays entries the state
 * already has.
 *
 * A snapshot's data is a small descriptor, not the state:
 *   u8 FSM_SNAP_VERSION, u64 raft_applied, u64 source id, str source address
 * The state it names is the source node's LMDB state at raft_applied or
 * later (entries after the snapshot index are then skipped); the raft_io
 * fetches it in chunks before raft restores (io.c). */
#define FSM_ENTRY_VERSION 1
#define FSM_ENTRY_MAX     (4096u << 10)
#define FSM_SNAP_VERSION  1

/* appends a command to an entry being built (the header on the first);
 * CORE_ERANGE when the entry would exceed FSM_ENTRY_MAX */
int fsm_entry_add(core_buf *e, const uint8_t *cmd, size_t len);

/* What one applied entry produced: the seq and answer of each command. */
typedef struct fsm_done {
    struct fsm_done *next;
    uint64_t index; /* raft index */
    uint32_t n;
    uint64_t *seq;
    apply_result *res;
} fsm_done;

typedef struct fsm {
    store *st;
    struct raft *raft;
    /* the open write transaction of the actor; NULL: each entry commits
     * its own (tools, the fixture tests) */
    store_txn *(*txn)(void *ctx);
    /* installs the state a snapshot descriptor names when the store is
     * behind it; NULL: such a snapshot is an error (io.c installs before
     * raft restores) */
    int (*install)(void *ctx, const uint8_t *desc, size_t len);
    void *ctx;
    fsm_done *done, **done_tail;
    uint64_t entries; /* entries applied (not skipped) */
} fsm;

void fsm_init(fsm *f, struct raft_fsm *rf, store *st, struct raft *r);
/* the results of entries applied since the last call, oldest first */
fsm_done *fsm_take(fsm *f);
void fsm_done_free(fsm_done *d);
/* encodes a snapshot descriptor (raft_malloc'd) */
int fsm_snap_desc(uint64_t index, raft_id source, const char *address, struct raft_buffer *out);
int fsm_snap_parse(const uint8_t *p, size_t len, uint64_t *index, raft_id *source, char *address);

/* ---- snap.c: a node's state in bounded chunks (see snap.c) ------------- */

/* 1 for the databases a snapshot carries: all but the raft log and state */
int snap_db_copied(int db);

typedef struct snap_src snap_src;
snap_src *snap_src_new(store *st);
void snap_src_free(snap_src *s);
/* Answers one chunk request (req: the fields after the request kind) by
 * appending the reply's fields to w, at most about budget bytes of rows.
 * CORE_EINVAL malformed, CORE_ENOENT unknown or expired session (start
 * over), CORE_ERANGE this node's state is older than the index, CORE_EIO. */
int snap_src_chunk(snap_src *s, wire_rd *req, wire_wr *w, size_t budget, int64_t now_ns);
/* closes sessions idle for a minute */
void snap_src_expire(snap_src *s, int64_t now_ns);
/* sessions open */
int snap_src_open(const snap_src *s);

/* The installer's position. */
typedef struct snap_inst {
    uint64_t index;   /* the snapshot's raft index */
    uint64_t session; /* 0 until the source opened one */
    uint64_t applied; /* the source's raft_applied in that session */
    int db;           /* where the next chunk starts: after key in db */
    core_buf key;
    int cleared; /* the replicated databases were emptied in this session */
    int done;
    uint64_t rows, bytes; /* installed so far (across restarts) */
} snap_inst;

void snap_inst_init(snap_inst *in, uint64_t index);
/* the session is gone: start over (the next chunk empties the state again) */
void snap_inst_restart(snap_inst *in);
/* appends the next request's fields to w; w->failed on error */
int snap_inst_request(const snap_inst *in, wire_wr *w);
/* Checks a reply (the fields after the answer code) whole, then writes its
 * rows in t (the first chunk of a session empties the replicated databases
 * and sets meta "installing"). CORE_EINVAL when malformed: nothing written. */
int snap_inst_apply(snap_inst *in, store_txn *t, wire_rd *rep);

#endif
