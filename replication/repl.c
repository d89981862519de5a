/*
 * repl.c — the raft actor.
 *
 * One thread owns a libevent base, libraft's struct raft and our raft_io.
 * Everything reaches it through its inbox (proposals from HTTP actors,
 * frames that nng callbacks received, fsync completions), so every raft
 * call runs on this thread.
 *
 * Storage (raft_io over LMDB): each wake-up opens at most one write
 * transaction, lazily, for everything raft asks in it: appended entries,
 * truncations, snapshot metadata and the entries the state machine
 * applies. A low-priority event commits it once the wake-up's work is
 * done. Term and vote are committed and synced before set_term/set_vote
 * return (raft sends votes right after). Appends complete in order: the
 * sync thread makes each committed transaction durable and posts back, and
 * only then are the append callbacks of that transaction fired; truncations
 * ride in the same ordered stream. raft 0.22 does not let an append fail:
 * a transaction holding only log writes that fails to commit is written
 * again after a pause; one that also applied entries cannot be taken back,
 * so the node stops (crash-stop; raft on the other nodes goes on).
 *
 * Proposals: each wake-up packs what is queued into one entry (a batch of
 * commands, fsm.c) and hands it to raft_apply. When the entry is applied
 * and its transaction committed, each proposer gets its own answer. A
 * follower forwards its batch to the leader over nng req/rep and answers
 * each proposer when it has applied the leader's entry itself.
 */
#include "replication/repl.h"

#include "replication/internal.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <time.h>
#include <unistd.h>

#define CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define MAX_BATCH      4096
#define TICK_S         30
#define OB_TRIM_MAX    20000
#define N_REP_CTX      32
#define FWD_TIMEOUT_MS 10000
#define MAX_PEERS      WIRE_MAX_SERVERS
#define READY_LAG      1000 /* entries behind the commit index still "ready" */
#define MAX_IN_FLIGHT  2    /* batches on their way before the queue waits */

enum {
    MSG_REQ = 1,
    MSG_STOP,
    MSG_SYNCED,
    MSG_RAFT,    /* a frame from the pull socket */
    MSG_RPC,     /* a request on a rep context */
    MSG_FWD_REP, /* the leader answered a forwarded batch */
    MSG_OP,
    MSG_SNAP_REP, /* a chunk of a snapshot being installed */
};

/* request kinds on the rep socket */
enum { RPC_FORWARD = 1, RPC_JOIN, RPC_PROMOTE, RPC_REMOVE, RPC_SYNC, RPC_SNAP };
/* notices (WIRE_NOTE) */
enum { NOTE_FLUSHED = 1 };
/* answer codes */
enum { RPC_OK = 0, RPC_NOT_LEADER, RPC_FAILED, RPC_UNKNOWN, RPC_NOT_FOUND, RPC_BUSY };
/* membership change kinds beyond raft's roles */
#define CHANGE_REMOVE (-1)
/* drain steps */
enum { DRAIN_NONE = 0, DRAIN_TRANSFER, DRAIN_LEAVE, DRAIN_STOP, DRAIN_DONE };
static const char *const drain_names[] = {NULL, "transferring-leadership", "leaving", "stopping",
                                          "stopping"};

typedef struct frame_msg {
    core_msg link;
    nng_msg *m;
    int ctx; /* MSG_RPC: index of the rep context */
} frame_msg;

/* a rep context: receives a request, answers it, receives the next */
typedef struct rep_ctx {
    struct repl *r;
    int i;
    nng_ctx ctx;
    nng_aio *aio;
    int sending;
    frame_msg fm;
} rep_ctx;

typedef struct peer {
    raft_id id;
    char addr[WIRE_MAX_ADDR + 1];
    nng_socket push;
    int open;
} peer;

/* who waits for one command of a batch: a local proposer or a rep context */
typedef struct waiter {
    repl_req *q;
    int ctx; /* rep context, when q is NULL */
} waiter;

/* a batch in flight: proposed to raft here, or forwarded to the leader */
typedef struct prop {
    struct raft_apply req;
    struct repl *r;
    struct prop *next;
    uint64_t index; /* raft index once known */
    uint64_t term;  /* the term it was proposed in (leader side) */
    int n;
    waiter *w;
    int answered;
    /* forwarding: an entry (RPC_FORWARD) or a membership request for an
     * operation (RPC_PROMOTE, RPC_REMOVE) answered to opq */
    int kind;
    repl_req *opq;
    uint64_t node;
    raft_id fwd_leader; /* the leader it went to */
    nng_ctx fctx;
    nng_aio *faio;
    _Atomic int fwd_state; /* 1 sending, 2 receiving (set by fwd_cb too) */
    frame_msg fm;
    core_buf entry;
    /* forwarded answer waiting for the local apply of index */
    uint32_t nres;
    uint64_t *seq;
    apply_result *res;
} prop;

/* a strong read waiting until this node applied what the leader had
 * committed when it asked (a barrier on the leader) */
typedef struct syncw {
    struct syncw *next;
    repl_req *q; /* the local reader, or NULL: ctx asked over the wire */
    int ctx;
    int has_barrier;
    struct raft_barrier barrier; /* leader side: raft holds it until applied */
    uint64_t index;              /* applied this far, then answer */
    uint64_t term;
} syncw;

typedef struct pend_append {
    struct raft_io_append *req;
    raft_io_append_cb cb;
    struct raft_io_snapshot_put *sreq;
    raft_io_snapshot_put_cb scb;
    struct pend_append *next;
    uint64_t txn_seq;
} pend_append;

struct repl {
    store *st;
    wb *wb;
    core_config cfg;
    core_inbox *in;
    struct event_base *base;
    struct event *wake, *flush, *tick, *trim, *raft_tick, *join_ev;
    pthread_t thread, syncer;

    struct raft raft;
    struct raft_io io;
    struct raft_fsm rfsm;
    fsm f;
    raft_id id;
    char addr[WIRE_MAX_ADDR + 1];
    raft_io_tick_cb tick_cb;
    raft_io_recv_cb recv_cb;
    raft_index next_index; /* where the next append goes */
    int closing;
    unsigned short prev_state;

    /* the open write transaction of this wake-up */
    store_txn txn;
    int txn_open, txn_applied;
    pend_append *txn_appends, **txn_appends_tail; /* written in the open txn */
    uint64_t txn_seq;                             /* transactions committed */
    pend_append *waiting, **waiting_tail;         /* committed, not yet durable */

    /* sync thread */
    pthread_mutex_t mu;
    pthread_cond_t cv, boot_cv;
    int booted, boot_rc; /* raft_boot's outcome, for repl_start */
    uint64_t sync_want, sync_done;
    int sync_stop;
    core_msg synced_msg;
    int synced_posted;

    /* deferred send callbacks */
    struct sent {
        struct raft_io_send *req;
        raft_io_send_cb cb;
    } * sent;
    int nsent, capsent;

    /* nng */
    nng_tls_config *tls_server;
    int tls;                          /* tls+tcp between nodes */
    char *tls_cert_pem, *tls_key_pem; /* for each dialer's client configuration */
    nng_socket pull, rep, req;
    nng_aio *pull_aio;
    frame_msg pull_fm;
    rep_ctx rctx[N_REP_CTX];
    peer peers[MAX_PEERS];
    int npeers;
    char req_addr[WIRE_MAX_ADDR + 1]; /* the leader the req socket dials */
    int req_open;
    _Atomic int isolated;

    /* proposals */
    repl_req *queue, **queue_tail; /* waiting for a batch */
    prop *props;                   /* in flight */
    core_msg stop_msg;
    int stopping;
    int barrier_done;
    /* a follower waits to apply a forwarded batch until it hears the commit
     * index, which raft sends only with the next AppendEntries: a barrier
     * entry sends it now (one at a time) instead of at the next heartbeat */
    int nudge;
    uint64_t nudge_index, nudge_term;
    struct raft_barrier nudge_barrier;
    uint64_t barrier_term;
    struct raft_barrier barrier;
    struct raft_change change;
    raft_id change_id;
    int change_role;    /* RAFT_STANDBY, RAFT_VOTER or CHANGE_REMOVE */
    int change_ctx;     /* the rep context that asked, or -1 */
    repl_req *change_q; /* the local operation that asked */
    char change_addr[WIRE_MAX_ADDR + 1];
    struct raft_transfer xfer; /* raft keeps a pointer to it while it runs */
    int drain, drain_asked;    /* DRAIN_*; a removal request is in flight */
    syncw *syncs;              /* strong reads waiting */

    /* snapshots: sessions this node serves; the install this node runs
     * (one at a time: raft waits for it) */
    snap_src *src;
    struct {
        int active;
        struct raft_io_snapshot_put *req;
        raft_io_snapshot_put_cb cb;
        const struct raft_snapshot *snap; /* raft's, valid until cb */
        snap_inst in;
        char source[WIRE_MAX_ADDR + 1];
        int failures;
        nng_socket sock;
        int sock_open;
        nng_aio *aio;
        _Atomic int sending;
        frame_msg fm;
        struct event *retry;
        int64_t started_ns, logged_ns;
    } ins;
    struct event *drain_ev; /* retries the drain's next step */

    uint64_t applied_seq;
    _Atomic uint64_t flushed_note; /* the leader's flushed index, on followers */
    _Atomic uint64_t batches, commands;
    _Atomic uint64_t hist[REPL_HIST_BUCKETS];
    _Atomic uint64_t s_term, s_commit, s_applied, s_last;
    _Atomic int s_leader, s_ready, s_draining;
};

static void observe(repl *r);

static void fail_result(apply_result *res, int status, const char *kind, const char *detail)
{
    apply_result_clear(res);
    res->status = status;
    res->problem = 1;
    res->body = core_problem(status, kind, detail, NULL, &res->body_len);
}

/* hands an answered request back as the message type it came in as */
static void reply_push(repl_req *q)
{
    q->link.type = q->reply_type;
    core_inbox_push(q->reply_to, &q->link);
}

/* answers an operation with a JSON body (taken) or a problem */
static void op_answer(repl_req *q, int status, json_t *body, const char *kind, const char *detail)
{
    apply_result_clear(&q->res);
    if (body) {
        char *b = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        if (b) {
            q->res.status = status;
            q->res.body = b;
            q->res.body_len = strlen(b);
        } else
            fail_result(&q->res, 500, "internal", "out of memory");
    } else
        fail_result(&q->res, status, kind, detail);
    reply_push(q);
}

static void id_hex(raft_id id, char out[17])
{
    snprintf(out, 17, "%016llx", (unsigned long long)id);
}

/* ------------------------------------------------------------ addresses */

static int url_of(const repl *r, const char *hostport, int plus, char *out, size_t n)
{
    const char *colon = strrchr(hostport, ':');
    if (!colon)
        return CORE_EINVAL;
    int port = atoi(colon + 1) + plus;
    int w = snprintf(out, n, "%s://%.*s:%d", r->tls ? "tls+tcp" : "tcp", (int)(colon - hostport),
                     hostport, port);
    return w < 0 || (size_t)w >= n ? CORE_ERANGE : 0;
}

/* a PEM file as a NUL-terminated string (at most 256 KiB), or NULL */
static char *pem_read(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *b = NULL;
    size_t n;

    if (!f)
        return NULL;
    if ((b = malloc((256 << 10) + 1)) && (n = fread(b, 1, 256 << 10, f)) > 0 && !ferror(f) &&
        fgetc(f) == EOF)
        b[n] = '\0';
    else {
        free(b);
        b = NULL;
    }
    fclose(f);
    return b;
}

static int is_ip(const char *host)
{
    struct in6_addr a;
    return inet_pton(AF_INET, host, &a) == 1 || inet_pton(AF_INET6, host, &a) == 1;
}

/* a client TLS configuration for one dialer: this node's certificate, the
 * CA, and a DNS name the peer's certificate must carry (an IP address is
 * not checked: mbedTLS 2.28, nng's TLS in Debian 12, matches no IP SANs;
 * the CA still vouches for the peer) */
static nng_tls_config *tls_client_new(repl *r, const char *host, int *err)
{
    nng_tls_config *t;
    int rv;
    if ((rv = nng_tls_config_alloc(&t, NNG_TLS_MODE_CLIENT)))
        goto fail;
    if ((rv = nng_tls_config_ca_file(t, r->cfg.raft.tls_ca)) ||
        (rv = nng_tls_config_own_cert(t, r->tls_cert_pem, r->tls_key_pem, NULL)) ||
        (rv = nng_tls_config_auth_mode(t, NNG_TLS_AUTH_MODE_REQUIRED)) ||
        (!is_ip(host) && (rv = nng_tls_config_server_name(t, host)))) {
        nng_tls_config_free(t);
        goto fail;
    }
    return t;
fail:
    *err = rv;
    return NULL;
}

/* tls+tcp with mutual verification: both sides present a certificate of
 * the configured CA and require one from the peer; a dialer also checks
 * the name in the listener's certificate against the peer's host */
static int tls_setup(repl *r)
{
    const core_config *c = &r->cfg;
    nng_tls_config *t = NULL;
    int rv = 0;

    if (!c->raft.tls_ca[0])
        return 0;
    r->tls_cert_pem = pem_read(c->raft.tls_cert);
    r->tls_key_pem = pem_read(c->raft.tls_key);
    if (!r->tls_cert_pem || !r->tls_key_pem ||
        (rv = nng_tls_config_alloc(&r->tls_server, NNG_TLS_MODE_SERVER)) ||
        (rv = nng_tls_config_ca_file(r->tls_server, c->raft.tls_ca)) ||
        (rv = nng_tls_config_own_cert(r->tls_server, r->tls_cert_pem, r->tls_key_pem, NULL)) ||
        (rv = nng_tls_config_auth_mode(r->tls_server, NNG_TLS_AUTH_MODE_REQUIRED)) ||
        !(t = tls_client_new(r, "localhost", &rv))) {
        core_log(LOG_ERROR, "cannot load the peer TLS files (PEM: CA, certificate, key)",
                 "\"ca\":\"%s\",\"cert\":\"%s\",\"key\":\"%s\",\"error\":\"%s\"", c->raft.tls_ca,
                 c->raft.tls_cert, c->raft.tls_key,
                 rv ? nng_strerror(rv) : "cannot read the certificate or key");
        return CORE_EINVAL;
    }
    nng_tls_config_free(t); /* the client side loads: dialers make their own */
    r->tls = 1;
    return 0;
}

/* dials HOST:PORT+plus on s (TLS with the host's name when configured) */
static int peer_dial(repl *r, nng_socket s, const char *hostport, int plus, int flags)
{
    char url[300], host[WIRE_MAX_ADDR + 1];
    const char *colon = strrchr(hostport, ':');
    nng_tls_config *t = NULL;
    nng_dialer d;
    int rv;

    if (!colon || url_of(r, hostport, plus, url, sizeof url) || nng_dialer_create(&d, s, url))
        return CORE_EINVAL;
    if (r->tls) {
        snprintf(host, sizeof host, "%.*s", (int)(colon - hostport), hostport);
        if (!(t = tls_client_new(r, host, &rv)) || nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, t)) {
            if (t)
                nng_tls_config_free(t);
            nng_dialer_close(d);
            return CORE_EIO;
        }
        nng_tls_config_free(t); /* the dialer holds its own reference */
    }
    if (nng_dialer_start(d, flags)) {
        nng_dialer_close(d);
        return CORE_EIO;
    }
    return 0;
}

/* ----------------------------------------------------------- sync thread */

static void *syncer_main(void *arg)
{
    repl *r = arg;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (r->sync_want == r->sync_done && !r->sync_stop)
            pthread_cond_wait(&r->cv, &r->mu);
        if (r->sync_want == r->sync_done && r->sync_stop)
            break;
        uint64_t want = r->sync_want;
        pthread_mutex_unlock(&r->mu);
        while (store_sync(r->st)) {
            core_log(LOG_ERROR, "fsync failed; retrying", NULL);
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        pthread_mutex_lock(&r->mu);
        r->sync_done = want;
        if (!r->synced_posted) {
            r->synced_posted = 1;
            core_inbox_push(r->in, &r->synced_msg);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ------------------------------------------------------ the transaction */

static store_txn *txn_get(void *ctx)
{
    repl *r = ctx;
    if (!r->txn_open) {
        if (store_begin(r->st, 1, &r->txn)) {
            core_log(LOG_ERROR, "cannot begin a write transaction; stopping", NULL);
            abort();
        }
        r->txn_open = 1;
        event_active(r->flush, 0, 0);
    }
    return &r->txn;
}

static store_txn *fsm_txn(void *ctx)
{
    repl *r = ctx;
    store_txn *t = txn_get(r);
    r->txn_applied = 1;
    return t;
}

static void fire_durable(repl *r, uint64_t upto)
{
    core_log(LOG_DEBUG, "durable", "\"upto\":%llu,\"waiting\":%d", (unsigned long long)upto,
             r->waiting != NULL);
    while (r->waiting && r->waiting->txn_seq <= upto) {
        pend_append *p = r->waiting;
        r->waiting = p->next;
        if (!r->waiting)
            r->waiting_tail = &r->waiting;
        if (p->cb)
            p->cb(p->req, 0);
        else if (p->scb)
            p->scb(p->sreq, 0);
        free(p);
    }
}

static void answer_done(repl *r);

/* commits the open transaction; its appends wait for the sync thread */
static void txn_commit(repl *r)
{
    if (!r->txn_open)
        return;
    r->txn_open = 0;
    if (store_commit(&r->txn)) {
        if (r->txn_applied) {
            core_log(LOG_ERROR,
                     "committing applied entries failed (disk full or map full?); "
                     "stopping this node",
                     NULL);
            abort();
        }
        core_log(LOG_ERROR, "committing log entries failed; writing them again", NULL);
        /* raft 0.22 needs every append to succeed: rewrite them */
        txn_get(r);
        return;
    }
    r->txn_applied = 0;
    r->txn_seq++;
    core_log(LOG_DEBUG, "txn", "\"seq\":%llu,\"appends\":%d", (unsigned long long)r->txn_seq,
             r->txn_appends != NULL);
    if (r->txn_appends) {
        for (pend_append *p = r->txn_appends; p; p = p->next)
            p->txn_seq = r->txn_seq;
        *r->waiting_tail = r->txn_appends;
        r->waiting_tail = r->txn_appends_tail;
        r->txn_appends = NULL;
        r->txn_appends_tail = &r->txn_appends;
        pthread_mutex_lock(&r->mu);
        r->sync_want = r->txn_seq;
        pthread_cond_signal(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
    answer_done(r);
}

/* ------------------------------------------------------------- raft_io */

static int log_put(repl *r, raft_index index, const struct raft_entry *e)
{
    uint8_t k[8], *v = malloc(9 + e->buf.len);
    int rc;
    if (!v)
        return RAFT_NOMEM;
    store_be64(k, index);
    store_be64(v, e->term);
    v[8] = (uint8_t)e->type;
    memcpy(v + 9, e->buf.base, e->buf.len);
    rc = store_put(txn_get(r), DB_LOG, k, 8, v, 9 + e->buf.len);
    free(v);
    return rc ? RAFT_IOERR : 0;
}

static int raft_meta_put(repl *r, const char *name, uint64_t v)
{
    uint8_t b[8];
    store_be64(b, v);
    return store_put(txn_get(r), DB_RAFT, name, strlen(name), b, 8) ? RAFT_IOERR : 0;
}

static uint64_t raft_meta_get(store_txn *t, const char *name)
{
    MDB_val v;
    if (store_get(t, DB_RAFT, name, strlen(name), &v) || v.mv_size != 8)
        return 0;
    return store_rd64(v.mv_data);
}

static int io_init(struct raft_io *io, raft_id id, const char *address)
{
    return 0;
}

static void io_close(struct raft_io *io, raft_io_close_cb cb)
{
    repl *r = io->impl;
    r->closing = 1;
    if (r->ins.active) { /* raft is closing: it takes a cancelled put */
        r->ins.active = 0;
        r->ins.cb(r->ins.req, RAFT_CANCELED);
    }
    if (r->raft_tick)
        event_del(r->raft_tick);
    if (cb)
        cb(io);
}

/* the snapshot metadata in t, with a descriptor naming this node (at addr)
 * as the source of its state */
static int snap_load(repl *r, store_txn *t, const char *addr, struct raft_snapshot **out)
{
    struct raft_snapshot *s = raft_calloc(1, sizeof *s);
    uint64_t index = raft_meta_get(t, "snap_index");
    MDB_val cv;
    struct raft_buffer cb;

    if (!s || !(s->bufs = raft_calloc(1, sizeof *s->bufs)))
        goto fail;
    s->index = index;
    s->term = raft_meta_get(t, "snap_term");
    s->configuration_index = raft_meta_get(t, "snap_conf_index");
    raft_configuration_init(&s->configuration);
    if (!index || store_get(t, DB_RAFT, "snap_conf", 9, &cv))
        goto fail;
    cb.base = cv.mv_data;
    cb.len = cv.mv_size;
    if (raft_configuration_decode(&cb, &s->configuration) ||
        fsm_snap_desc(index, r->id, addr, &s->bufs[0]))
        goto fail;
    s->n_bufs = 1;
    *out = s;
    return 0;
fail:
    if (s) {
        raft_configuration_close(&s->configuration);
        raft_free(s->bufs);
        raft_free(s);
    }
    return RAFT_IOERR;
}

/* the log with its snapshot, as raft_start expects it */
static int io_load(struct raft_io *io, raft_term *term, raft_id *voted_for,
                   struct raft_snapshot **snapshot, raft_index *start_index,
                   struct raft_entry *entries[], size_t *n_entries)
{
    repl *r = io->impl;
    store_txn t;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    size_t n = 0, bytes = 0;
    struct raft_entry *es = NULL;
    uint8_t *batch = NULL;
    uint64_t snap_index;
    int rc = RAFT_IOERR;

    *snapshot = NULL;
    *entries = NULL;
    *n_entries = 0;
    if (store_begin(r->st, 0, &t))
        return RAFT_IOERR;
    *term = raft_meta_get(&t, "term");
    *voted_for = raft_meta_get(&t, "vote");
    snap_index = raft_meta_get(&t, "snap_index");
    *start_index = snap_index + 1;
    if (mdb_cursor_open(t.txn, store_dbi(r->st, DB_LOG), &cur))
        goto out;
    for (int op = MDB_FIRST; mdb_cursor_get(cur, &k, &v, op) == 0; op = MDB_NEXT) {
        if (k.mv_size != 8 || v.mv_size < 9)
            goto out;
        if (n == 0)
            *start_index = store_rd64(k.mv_data);
        n++;
        bytes += v.mv_size - 9;
    }
    if (n) {
        size_t i = 0, off = 0;
        if (!(es = raft_calloc(n, sizeof *es)) || !(batch = raft_malloc(bytes ? bytes : 1))) {
            rc = RAFT_NOMEM;
            goto out;
        }
        for (int op = MDB_FIRST; mdb_cursor_get(cur, &k, &v, op) == 0; op = MDB_NEXT, i++) {
            const uint8_t *p = v.mv_data;
            es[i].term = store_rd64(p);
            es[i].type = p[8];
            es[i].buf.len = v.mv_size - 9;
            es[i].buf.base = batch + off;
            es[i].batch = batch;
            memcpy(batch + off, p + 9, v.mv_size - 9);
            off += v.mv_size - 9;
        }
    }
    if (snap_index && snap_load(r, &t, r->addr, snapshot))
        goto out;
    r->next_index = *start_index + n;
    *entries = es;
    *n_entries = n;
    es = NULL;
    batch = NULL;
    rc = 0;
out:
    if (cur)
        mdb_cursor_close(cur);
    store_abort(&t);
    raft_free(es);
    raft_free(batch);
    return rc;
}

static void on_raft_tick(evutil_socket_t fd, short what, void *arg)
{
    repl *r = arg;
    if (r->tick_cb && !r->closing)
        r->tick_cb(&r->io);
}

static int io_start(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick, raft_io_recv_cb recv)
{
    repl *r = io->impl;
    struct timeval tv = {msecs / 1000, (msecs % 1000) * 1000};
    r->tick_cb = tick;
    r->recv_cb = recv;
    r->raft_tick = event_new(r->base, -1, EV_PERSIST, on_raft_tick, r);
    if (!r->raft_tick || event_add(r->raft_tick, &tv))
        return RAFT_NOMEM;
    return 0;
}

static int io_bootstrap(struct raft_io *io, const struct raft_configuration *conf)
{
    repl *r = io->impl;
    struct raft_entry e = {.term = 1, .type = RAFT_CHANGE};
    store_txn t;
    int rc;

    if (store_begin(r->st, 0, &t))
        return RAFT_IOERR;
    rc = raft_meta_get(&t, "term") || raft_meta_get(&t, "snap_index");
    store_abort(&t);
    if (rc)
        return RAFT_CANTBOOTSTRAP;
    if (raft_configuration_encode(conf, &e.buf))
        return RAFT_NOMEM;
    rc = log_put(r, 1, &e);
    r->next_index = 2;
    raft_free(e.buf.base);
    if (rc || (rc = raft_meta_put(r, "term", 1)))
        return rc;
    r->txn_open = 0;
    if (store_commit(&r->txn) || store_sync(r->st))
        return RAFT_IOERR;
    return 0;
}

static int io_recover(struct raft_io *io, const struct raft_configuration *conf)
{
    return RAFT_NOTFOUND;
}

/* term and vote are durable before raft acts on them */
static int persist_now(repl *r, const char *name, uint64_t v)
{
    int rc = raft_meta_put(r, name, v);
    if (rc)
        return rc;
    txn_commit(r);
    return store_sync(r->st) ? RAFT_IOERR : 0;
}

static int io_set_term(struct raft_io *io, raft_term term)
{
    repl *r = io->impl;
    int rc = raft_meta_put(r, "vote", 0);
    return rc ? rc : persist_now(r, "term", term);
}

static int io_set_vote(struct raft_io *io, raft_id server_id)
{
    return persist_now(io->impl, "vote", server_id);
}

static peer *peer_get(repl *r, raft_id id, const char *addr)
{
    peer *p = NULL;

    for (int i = 0; i < r->npeers; i++)
        if (r->peers[i].id == id) {
            p = &r->peers[i];
            break;
        }
    if (p && strcmp(p->addr, addr) != 0) {
        nng_close(p->push);
        p->open = 0;
    }
    if (!p) {
        if (r->npeers == MAX_PEERS)
            return NULL;
        p = &r->peers[r->npeers++];
        p->id = id;
        p->open = 0;
    }
    if (!p->open) {
        snprintf(p->addr, sizeof p->addr, "%s", addr);
        if (nng_push0_open(&p->push))
            return NULL;
        nng_setopt_int(p->push, NNG_OPT_SENDBUF, 256);
        nng_setopt_ms(p->push, NNG_OPT_RECONNMINT, 50);
        nng_setopt_ms(p->push, NNG_OPT_RECONNMAXT, 1000);
        if (peer_dial(r, p->push, addr, 0, NNG_FLAG_NONBLOCK)) {
            nng_close(p->push);
            return NULL;
        }
        p->open = 1;
    }
    return p;
}

static void send_frame(repl *r, raft_id id, const char *addr, const uint8_t *p, size_t n)
{
    peer *pe;
    if (atomic_load(&r->isolated) || !(pe = peer_get(r, id, addr)))
        return;
    /* a full queue or no connection drops the frame: raft sends again */
    nng_send(pe->push, (void *)p, n, NNG_FLAG_NONBLOCK);
}

static int io_send(struct raft_io *io, struct raft_io_send *req, const struct raft_message *m,
                   raft_io_send_cb cb)
{
    repl *r = io->impl;
    core_buf b = {0};

    if (wire_encode_raft(m, r->id, r->addr, &b) == 0)
        send_frame(r, m->server_id, m->server_address, b.p, b.len);
    core_buf_free(&b);
    if (r->nsent == r->capsent) {
        int cap = r->capsent ? r->capsent * 2 : 64;
        struct sent *s = realloc(r->sent, (size_t)cap * sizeof *s);
        if (!s)
            return RAFT_NOMEM;
        r->sent = s;
        r->capsent = cap;
    }
    r->sent[r->nsent].req = req;
    r->sent[r->nsent].cb = cb;
    r->nsent++;
    event_active(r->flush, 0, 0);
    return 0;
}

static int io_append(struct raft_io *io, struct raft_io_append *req, const struct raft_entry es[],
                     unsigned n, raft_io_append_cb cb)
{
    repl *r = io->impl;
    raft_index first = r->next_index;
    pend_append *p = calloc(1, sizeof *p);
    int rc;

    if (!p)
        return RAFT_NOMEM;
    for (unsigned i = 0; i < n; i++)
        if ((rc = log_put(r, first + i, &es[i]))) {
            free(p);
            return rc;
        }
    r->next_index = first + n;
    p->req = req;
    p->cb = cb;
    *r->txn_appends_tail = p;
    r->txn_appends_tail = &p->next;
    return 0;
}

/* deletes log entries from index on, in order with the appends around it */
static int io_truncate(struct raft_io *io, raft_index index)
{
    repl *r = io->impl;
    MDB_cursor *cur;
    MDB_val k, v;
    uint8_t kb[8];
    store_txn *t = txn_get(r);

    if (index < r->next_index)
        r->next_index = index;
    store_be64(kb, index);
    k.mv_data = kb;
    k.mv_size = 8;
    if (mdb_cursor_open(t->txn, store_dbi(r->st, DB_LOG), &cur))
        return RAFT_IOERR;
    int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0) {
        if (mdb_cursor_del(cur, 0)) {
            mdb_cursor_close(cur);
            return RAFT_IOERR;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_GET_CURRENT);
        if (rc == 0)
            continue;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return 0;
}

/* drops log entries up to and including upto */
static int log_drop_upto(repl *r, raft_index upto)
{
    MDB_cursor *cur;
    MDB_val k, v;
    store_txn *t = txn_get(r);

    if (mdb_cursor_open(t->txn, store_dbi(r->st, DB_LOG), &cur))
        return RAFT_IOERR;
    while (mdb_cursor_get(cur, &k, &v, MDB_FIRST) == 0 && store_rd64(k.mv_data) <= upto)
        if (mdb_cursor_del(cur, 0)) {
            mdb_cursor_close(cur);
            return RAFT_IOERR;
        }
    mdb_cursor_close(cur);
    return 0;
}

static int snap_meta_put(repl *r, const struct raft_snapshot *s)
{
    struct raft_buffer cb;
    int rc;
    if (raft_configuration_encode(&s->configuration, &cb))
        return RAFT_NOMEM;
    rc = store_put(txn_get(r), DB_RAFT, "snap_conf", 9, cb.base, cb.len) ? RAFT_IOERR : 0;
    raft_free(cb.base);
    if (rc || (rc = raft_meta_put(r, "snap_index", s->index)) ||
        (rc = raft_meta_put(r, "snap_term", s->term)) ||
        (rc = raft_meta_put(r, "snap_conf_index", s->configuration_index)))
        return rc;
    return 0;
}

/* ------------------------------------------------------ installing state */

#define INSTALL_TIMEOUT_MS 30000

static void install_send(repl *r);

static void install_cb(void *arg)
{
    repl *r = arg;
    int rv = nng_aio_result(r->ins.aio);

    if (rv == 0 && atomic_load(&r->ins.sending)) {
        atomic_store(&r->ins.sending, 0);
        nng_recv_aio(r->ins.sock, r->ins.aio);
        return;
    }
    if (rv && atomic_load(&r->ins.sending))
        nng_msg_free(nng_aio_get_msg(r->ins.aio)); /* never sent: still ours */
    atomic_store(&r->ins.sending, 0);
    r->ins.fm.m = rv == 0 ? nng_aio_get_msg(r->ins.aio) : NULL;
    r->ins.fm.ctx = rv;
    r->ins.fm.link.type = MSG_SNAP_REP;
    core_inbox_push(r->in, &r->ins.fm.link);
}

/* (re)connects to the source: the descriptor's node first, the leader
 * after it failed a few times (any node whose state covers the index
 * will do) */
static int install_connect(repl *r)
{
    const char *target = r->ins.source, *laddr = NULL;
    raft_id lid = 0;

    if (r->ins.failures >= 3) {
        raft_leader(&r->raft, &lid, &laddr);
        if (lid && laddr && lid != r->id) {
            target = laddr;
            snap_inst_restart(&r->ins.in); /* a new source: a new session */
        }
    }
    if (r->ins.sock_open)
        nng_close(r->ins.sock);
    r->ins.sock_open = 0;
    if (nng_req0_open(&r->ins.sock))
        return CORE_EIO;
    r->ins.sock_open = 1;
    nng_setopt_ms(r->ins.sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    nng_setopt_ms(r->ins.sock, NNG_OPT_RECONNMINT, 50);
    nng_setopt_size(r->ins.sock, NNG_OPT_RECVMAXSZ, WIRE_MAX_FRAME);
    return peer_dial(r, r->ins.sock, target, 1, NNG_FLAG_NONBLOCK);
}

static void install_retry_later(repl *r, const char *why)
{
    struct timeval tv = {1, 0};
    r->ins.failures++;
    core_log(LOG_WARN, "snapshot install: retrying", "\"why\":\"%s\",\"failures\":%d", why,
             r->ins.failures);
    if (r->ins.failures % 3 == 0)
        install_connect(r);
    evtimer_add(r->ins.retry, &tv);
}

static void install_send(repl *r)
{
    wire_wr w = {0};
    nng_msg *m;

    if (!r->ins.active || r->closing)
        return;
    if (!r->ins.sock_open && install_connect(r)) {
        install_retry_later(r, "cannot reach the source");
        return;
    }
    wire_put_header(&w, WIRE_REQ);
    wire_put_u8(&w, RPC_SNAP);
    snap_inst_request(&r->ins.in, &w);
    if (w.failed || nng_msg_alloc(&m, 0) || nng_msg_append(m, w.b.p, w.b.len)) {
        core_buf_free(&w.b);
        install_retry_later(r, "out of memory");
        return;
    }
    core_buf_free(&w.b);
    nng_aio_set_timeout(r->ins.aio, INSTALL_TIMEOUT_MS);
    nng_aio_set_msg(r->ins.aio, m);
    atomic_store(&r->ins.sending, 1);
    nng_send_aio(r->ins.sock, r->ins.aio);
}

static void on_install_retry(evutil_socket_t fd, short what, void *arg)
{
    repl *r = arg;
    install_send(r);
    observe(r);
}

/* the last chunk is in: the snapshot's metadata goes in the same
 * transaction that clears "installing"; raft hears of it once durable */
static void install_finish(repl *r)
{
    const struct raft_snapshot *s = r->ins.snap;
    store_txn *t = txn_get(r);
    pend_append *p;
    int rc;

    if ((rc = store_del(t, DB_META, "installing", 10)) || (rc = snap_meta_put(r, s)) ||
        (rc = log_drop_upto(r, UINT64_MAX)) || !(p = calloc(1, sizeof *p))) {
        core_log(LOG_ERROR, "snapshot install: cannot record it; stopping this node", NULL);
        abort();
    }
    r->txn_applied = 1; /* the state changed: never written twice */
    r->next_index = s->index + 1;
    r->applied_seq = store_meta_u64(t, "applied");
    p->sreq = r->ins.req;
    p->scb = r->ins.cb;
    *r->txn_appends_tail = p;
    r->txn_appends_tail = &p->next;
    core_log(LOG_INFO, "snapshot installed",
             "\"index\":%llu,\"state_at\":%llu,\"rows\":%llu,\"bytes\":%llu,\"seconds\":%.1f",
             (unsigned long long)s->index, (unsigned long long)r->ins.in.applied,
             (unsigned long long)r->ins.in.rows, (unsigned long long)r->ins.in.bytes,
             (double)(core_mono_ns() - r->ins.started_ns) / 1e9);
    r->ins.active = 0;
    if (r->ins.sock_open)
        nng_close(r->ins.sock);
    r->ins.sock_open = 0;
}

static void on_install_rep(repl *r)
{
    nng_msg *m = r->ins.fm.m;
    int rv = r->ins.fm.ctx;
    wire_rd rd;
    int code, rc;

    if (!r->ins.active || r->closing) {
        if (m)
            nng_msg_free(m);
        return;
    }
    if (rv || !m) {
        install_retry_later(r,
                            rv == NNG_ETIMEDOUT ? "the source did not answer" : nng_strerror(rv));
        return;
    }
    rd.p = nng_msg_body(m);
    rd.left = nng_msg_len(m);
    rd.failed = 0;
    code = wire_get_header(&rd) == WIRE_REP ? wire_get_u8(&rd) : -1;
    if (code == RPC_NOT_FOUND) { /* the session expired: start over */
        snap_inst_restart(&r->ins.in);
        nng_msg_free(m);
        install_retry_later(r, "the source closed the session");
        return;
    }
    if (code != RPC_OK) {
        nng_msg_free(m);
        install_retry_later(r, "the source refused");
        return;
    }
    rc = snap_inst_apply(&r->ins.in, txn_get(r), &rd);
    nng_msg_free(m);
    if (rc == CORE_EINVAL) {
        snap_inst_restart(&r->ins.in);
        install_retry_later(r, "a malformed chunk");
        return;
    }
    if (rc) {
        core_log(LOG_ERROR, "snapshot install: cannot write the state; stopping this node", NULL);
        abort();
    }
    r->ins.failures = 0;
    if (core_mono_ns() - r->ins.logged_ns > 2000000000LL) {
        r->ins.logged_ns = core_mono_ns();
        core_log(LOG_INFO, "snapshot install: progress", "\"rows\":%llu,\"bytes\":%llu",
                 (unsigned long long)r->ins.in.rows, (unsigned long long)r->ins.in.bytes);
    }
    if (r->ins.in.done)
        install_finish(r);
    else
        install_send(r);
}

/* raft hands this node a snapshot its state does not cover: fetch the
 * state it names, then complete the put (raft then restores, fsm.c) */
static int install_begin(repl *r, struct raft_io_snapshot_put *req, const struct raft_snapshot *s,
                         raft_io_snapshot_put_cb cb)
{
    uint64_t index;
    raft_id source;

    if (r->ins.active || s->n_bufs != 1 ||
        fsm_snap_parse(s->bufs[0].base, s->bufs[0].len, &index, &source, r->ins.source) ||
        index != s->index || !r->ins.source[0])
        return RAFT_IOERR;
    r->ins.active = 1;
    r->ins.req = req;
    r->ins.cb = cb;
    r->ins.snap = s;
    r->ins.failures = 0;
    r->ins.started_ns = r->ins.logged_ns = core_mono_ns();
    snap_inst_init(&r->ins.in, s->index);
    core_log(LOG_INFO, "snapshot install: fetching the state", "\"index\":%llu,\"source\":\"%s\"",
             (unsigned long long)s->index, r->ins.source);
    install_send(r);
    return 0;
}

/* Taking a snapshot (trailing > 0) records its metadata and compacts the
 * log; the state it describes is in this same transaction. Installing one
 * (trailing == 0) needs the state the descriptor names. */
static int io_snapshot_put(struct raft_io *io, unsigned trailing, struct raft_io_snapshot_put *req,
                           const struct raft_snapshot *s, raft_io_snapshot_put_cb cb)
{
    repl *r = io->impl;
    pend_append *p;
    int rc;

    if (trailing == 0) {
        store_txn t;
        uint64_t have;
        if (store_begin(r->st, 0, &t))
            return RAFT_IOERR;
        have = store_meta_u64(&t, "raft_applied");
        store_abort(&t);
        if (have < s->index)
            return install_begin(r, req, s, cb);
    }
    if ((rc = snap_meta_put(r, s)))
        return rc;
    if (trailing == 0) {
        rc = log_drop_upto(r, UINT64_MAX);
        r->next_index = s->index + 1;
    } else if (s->index > trailing)
        rc = log_drop_upto(r, s->index - trailing);
    if (rc || !(p = calloc(1, sizeof *p)))
        return rc ? rc : RAFT_NOMEM;
    p->sreq = req;
    p->scb = cb;
    *r->txn_appends_tail = p;
    r->txn_appends_tail = &p->next;
    return 0;
}

/* the current snapshot, naming this node as the source of its state. The
 * callback runs at once: raft's legacy layer touches nothing after this
 * returns, and the message it sends still points into the configuration
 * of this moment (a later one may free those addresses). */
static int io_snapshot_get(struct raft_io *io, struct raft_io_snapshot_get *req,
                           raft_io_snapshot_get_cb cb)
{
    repl *r = io->impl;
    struct raft_snapshot *snap = NULL;
    store_txn t;
    int rc;

    if (store_begin(r->st, 0, &t))
        return RAFT_IOERR;
    rc = snap_load(r, &t, r->addr, &snap);
    store_abort(&t);
    if (rc)
        return rc;
    cb(req, snap, 0);
    return 0;
}

static raft_time io_time(struct raft_io *io)
{
    return (raft_time)(core_mono_ns() / 1000000);
}

static int io_random(struct raft_io *io, int min, int max)
{
    uint32_t x;
    if (max <= min)
        return min;
    RAND_bytes((uint8_t *)&x, sizeof x);
    return min + (int)(x % (uint32_t)(max - min));
}

/* -------------------------------------------------------------- answers */

static void record_batch(repl *r, int n)
{
    int b = 0;
    while (b < REPL_HIST_BUCKETS - 1 && n > (1 << b))
        b++;
    atomic_fetch_add(&r->hist[b], 1);
    atomic_fetch_add(&r->batches, 1);
    atomic_fetch_add(&r->commands, (uint64_t)n);
}

static void rep_reply(repl *r, int ctx, wire_wr *w);

/* the forwarded batch's answer, for the follower that sent it */
static void reply_results(repl *r, int ctx, uint64_t index, uint32_t n, const uint64_t *seq,
                          const apply_result *res)
{
    wire_wr w = {0};
    wire_put_header(&w, WIRE_REP);
    wire_put_u8(&w, RPC_OK);
    wire_put_u64(&w, index);
    wire_put_u32(&w, n);
    for (uint32_t i = 0; i < n; i++) {
        wire_put_u64(&w, seq[i]);
        wire_put_u16(&w, (uint16_t)res[i].status);
        wire_put_u8(&w, (uint8_t)res[i].problem);
        wire_put_bytes(&w, res[i].body ? res[i].body : "", res[i].body_len);
    }
    rep_reply(r, ctx, &w);
}

static void reply_code(repl *r, int ctx, int code, const char *text)
{
    wire_wr w = {0};
    wire_put_header(&w, WIRE_REP);
    wire_put_u8(&w, (uint8_t)code);
    wire_put_str(&w, text ? text : "", WIRE_MAX_ADDR);
    rep_reply(r, ctx, &w);
}

static void answer_one(waiter *w, uint64_t seq, apply_result *res)
{
    if (!w->q->reply_to) { /* the actor's own proposal */
        core_buf_free(&w->q->cmd);
        free(w->q);
        return;
    }
    w->q->index = seq;
    w->q->res = *res;
    memset(res, 0, sizeof *res);
    reply_push(w->q);
}

static void prop_free(prop *p)
{
    for (uint32_t i = 0; p->res && i < p->nres; i++)
        apply_result_clear(&p->res[i]);
    free(p->res);
    free(p->seq);
    free(p->w);
    core_buf_free(&p->entry);
    if (p->faio)
        nng_aio_free(p->faio);
    free(p);
}

static void prop_fail(repl *r, prop *p, int status, const char *kind, const char *detail)
{
    if (p->opq) {
        op_answer(p->opq, status, NULL, kind, detail);
        p->opq = NULL;
    }
    if (p->kind == RPC_REMOVE)
        r->drain_asked = 0; /* the drain asks again */
    for (int i = 0; i < p->n; i++) {
        if (p->w[i].q && !p->w[i].q->reply_to) {
            core_buf_free(&p->w[i].q->cmd);
            free(p->w[i].q);
        } else if (p->w[i].q) {
            fail_result(&p->w[i].q->res, status, kind, detail);
            reply_push(p->w[i].q);
        } else if (i == 0 || p->w[i].ctx != p->w[0].ctx)
            reply_code(r, p->w[i].ctx,
                       status == 503 && !strcmp(kind, "outcome-unknown") ? RPC_UNKNOWN : RPC_FAILED,
                       detail);
    }
    p->answered = 1;
}

/* entries this node applied and committed: answer whoever waits */
/* the term of the log entry at index (0 when the log no longer has it) */
static uint64_t log_term(repl *r, store_txn *t, uint64_t index)
{
    uint8_t k[8];
    MDB_val v;
    store_be64(k, index);
    if (store_get(t, DB_LOG, k, 8, &v) || v.mv_size < 9)
        return 0;
    return store_rd64(v.mv_data);
}

static void answer_done(repl *r)
{
    fsm_done *d = fsm_take(&r->f), *all = d;
    store_txn t;
    int have_t = all && store_begin(r->st, 0, &t) == 0;

    for (; d; d = d->next) {
        uint64_t term = have_t ? log_term(r, &t, d->index) : 0;
        for (uint32_t i = 0; i < d->n; i++)
            if (d->seq[i])
                r->applied_seq = d->seq[i];
        for (prop *p = r->props; p; p = p->next) {
            /* the entry at p's index is p's only if it has p's term */
            if (p->index != d->index || p->answered || p->nres || p->term != term)
                continue;
            /* local proposers get their answers; a forwarded batch is one
             * rep context holding every command */
            if (p->n && !p->w[0].q) {
                reply_results(r, p->w[0].ctx, d->index, d->n, d->seq, d->res);
                r->nudge = 1;
            } else {
                for (int i = 0; i < p->n && (uint32_t)i < d->n; i++)
                    answer_one(&p->w[i], d->seq[i], &d->res[i]);
            }
            p->answered = 1;
        }
    }
    fsm_done_free(all);
    if (have_t)
        store_abort(&t);
    /* forwarded batches whose entry this follower has now applied */
    if (store_begin(r->st, 0, &t) == 0) {
        uint64_t applied = store_meta_u64(&t, "raft_applied");
        store_abort(&t);
        for (prop **pp = &r->props; *pp;) {
            prop *p = *pp;
            if (p->nres && !p->answered && p->index <= applied) {
                for (int i = 0; i < p->n && (uint32_t)i < p->nres; i++)
                    answer_one(&p->w[i], p->seq[i], &p->res[i]);
                p->answered = 1;
            }
            if (p->answered && p->fwd_state == 0) {
                *pp = p->next;
                prop_free(p);
            } else
                pp = &p->next;
        }
    }
    if (r->wb && r->applied_seq)
        wb_durable(r->wb, r->applied_seq);
}

/* ------------------------------------------------------------ proposals */

static void forward(repl *r, prop *p);

/* proposes an entry on the leader, or forwards it */
static void propose_entry(repl *r, prop *p)
{
    struct raft_buffer b;
    const char *laddr;
    raft_id lid;

    if (raft_state(&r->raft) != RAFT_LEADER) {
        raft_leader(&r->raft, &lid, &laddr);
        if (!lid || !laddr || atomic_load(&r->isolated)) {
            prop_fail(r, p, 503, "no-leader",
                      "no leader is known right now (an election may be running); retry shortly");
            prop_free(p);
            return;
        }
        p->next = r->props;
        r->props = p;
        forward(r, p);
        return;
    }
    if (!(b.base = raft_malloc(p->entry.len))) {
        prop_fail(r, p, 503, "unavailable", "out of memory");
        prop_free(p);
        return;
    }
    memcpy(b.base, p->entry.p, p->entry.len);
    b.len = p->entry.len;
    p->req.data = p;
    /* no callback: 0.22's legacy layer fires request callbacks only from its
     * libuv backend; answers come by index from fsm_take (answer_done), and
     * without a callback raft drops the request once applied or failed */
    if (raft_apply(&r->raft, &p->req, &b, 1, NULL)) {
        raft_free(b.base);
        prop_fail(r, p, 503, "no-leader", "this node lost leadership; retry shortly");
        prop_free(p);
        return;
    }
    p->index = p->req.index;
    p->term = raft_current_term(&r->raft);
    p->next = r->props;
    r->props = p;
}

/* Batches this node has on their way: proposed here and not yet applied
 * (its own and followers' forwarded ones), or forwarded to the leader and
 * not yet answered. Every round of the log costs each voter an fdatasync
 * or two, and a disk takes only so many at once; while MAX_IN_FLIGHT
 * batches are on their way new commands wait in the queue, so under load
 * batches grow instead of rounds multiplying, and the next batch's append
 * shares a transaction with the apply that made room for it. */
static int in_flight(repl *r)
{
    uint64_t applied = raft_last_applied(&r->raft);
    int n = 0;
    for (prop *p = r->props; p; p = p->next)
        if (p->kind == 0 && !p->answered &&
            ((p->term && p->index > applied) || atomic_load(&p->fwd_state)))
            n++;
    return n;
}

/* packs the queued proposals into entries */
static void propose_queue(repl *r)
{
    while (r->queue && in_flight(r) < MAX_IN_FLIGHT) {
        prop *p = calloc(1, sizeof *p);
        int cap = 0;
        if (!p)
            return;
        p->r = r;
        while (r->queue) {
            repl_req *q = r->queue;
            if (fsm_entry_add(&p->entry, q->cmd.p, q->cmd.len) == CORE_ERANGE && p->n)
                break;
            r->queue = q->next_in_batch;
            if (p->n == cap) {
                cap = cap ? cap * 2 : 16;
                p->w = realloc(p->w, (size_t)cap * sizeof *p->w);
            }
            p->w[p->n].q = q;
            p->w[p->n].ctx = -1;
            p->n++;
            if (p->n == MAX_BATCH)
                break;
        }
        if (!r->queue)
            r->queue_tail = &r->queue;
        record_batch(r, p->n);
        propose_entry(r, p);
    }
}

/* --------------------------------------------------------- forwarding */

static void fwd_cb(void *arg)
{
    prop *p = arg;
    repl *r = p->r;
    int rv = nng_aio_result(p->faio);

    if (rv == 0 && p->fwd_state == 1) {
        p->fwd_state = 2;
        nng_ctx_recv(p->fctx, p->faio);
        return;
    }
    if (rv && p->fwd_state == 1)
        nng_msg_free(nng_aio_get_msg(p->faio)); /* never sent: still ours */
    p->fm.m = rv == 0 ? nng_aio_get_msg(p->faio) : NULL;
    p->fm.link.type = MSG_FWD_REP;
    p->fm.ctx = rv;
    core_inbox_push(r->in, &p->fm.link);
}

static void forward(repl *r, prop *p)
{
    const char *laddr;
    raft_id lid;
    nng_msg *m;
    wire_wr w = {0};

    raft_leader(&r->raft, &lid, &laddr);
    if (!r->req_open || strcmp(r->req_addr, laddr) != 0) {
        if (r->req_open)
            nng_close(r->req);
        r->req_open = 0;
        if (nng_req0_open(&r->req))
            goto fail;
        nng_setopt_ms(r->req, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
        nng_setopt_ms(r->req, NNG_OPT_RECONNMINT, 50);
        nng_setopt_size(r->req, NNG_OPT_RECVMAXSZ, WIRE_MAX_FRAME);
        if (peer_dial(r, r->req, laddr, 1, NNG_FLAG_NONBLOCK)) {
            nng_close(r->req);
            goto fail;
        }
        snprintf(r->req_addr, sizeof r->req_addr, "%s", laddr);
        r->req_open = 1;
    }
    wire_put_header(&w, WIRE_REQ);
    wire_put_u8(&w, (uint8_t)(p->kind ? p->kind : RPC_FORWARD));
    if (p->kind == RPC_PROMOTE || p->kind == RPC_REMOVE)
        wire_put_u64(&w, p->node);
    else if (!p->kind)
        wire_put_bytes(&w, p->entry.p, p->entry.len);
    if (w.failed || nng_msg_alloc(&m, 0) || nng_msg_append(m, w.b.p, w.b.len)) {
        core_buf_free(&w.b);
        goto fail;
    }
    core_buf_free(&w.b);
    if (nng_ctx_open(&p->fctx, r->req) || nng_aio_alloc(&p->faio, fwd_cb, p)) {
        nng_msg_free(m);
        goto fail;
    }
    p->fwd_leader = lid;
    nng_aio_set_timeout(p->faio, FWD_TIMEOUT_MS);
    nng_aio_set_msg(p->faio, m);
    p->fwd_state = 1;
    nng_ctx_send(p->fctx, p->faio);
    return;
fail:
    prop_fail(r, p, 503, "no-leader", "the leader cannot be reached; retry shortly");
}

static void drain_step(repl *r);

/* the leader's answer to a membership or sync request this node forwarded */
static void on_op_rep(repl *r, prop *p, int code, wire_rd *rd)
{
    char text[WIRE_MAX_ADDR + 1] = "", idb[17];
    uint64_t index = 0;

    if (p->kind == RPC_SYNC && code == RPC_OK)
        index = wire_get_u64(rd);
    else
        wire_get_str(rd, text, WIRE_MAX_ADDR);
    if (code == RPC_OK && wire_rd_done(rd))
        code = RPC_FAILED;
    p->answered = 1;
    if (p->kind == RPC_REMOVE) {
        r->drain_asked = 0;
        if (code == RPC_OK && r->drain == DRAIN_LEAVE)
            r->drain = DRAIN_STOP;
        drain_step(r);
        return;
    }
    if (!p->opq)
        return;
    if (p->kind == RPC_SYNC && code == RPC_OK) {
        /* answered once this node applied index (observe) */
        syncw *sw = calloc(1, sizeof *sw);
        if (!sw) {
            op_answer(p->opq, 503, NULL, "unavailable", "out of memory");
        } else {
            sw->q = p->opq;
            sw->index = index;
            sw->next = r->syncs;
            r->syncs = sw;
        }
    } else if (code == RPC_OK) {
        id_hex(p->node, idb);
        op_answer(p->opq, 200, json_pack("{s:s,s:s}", "id", idb, "role", "voter"), NULL, NULL);
    } else if (code == RPC_NOT_FOUND)
        op_answer(p->opq, 404, NULL, "not-found", "no node with this id is in the cluster");
    else if (code == RPC_BUSY)
        op_answer(p->opq, 503, NULL, "unavailable",
                  "another membership change is running; retry when it is done");
    else
        op_answer(p->opq, 503, NULL, "no-leader",
                  code == RPC_NOT_LEADER ? "the leader changed; retry shortly"
                                         : "the leader could not do it now; retry shortly");
    p->opq = NULL;
}

static void on_fwd_rep(repl *r, prop *p)
{
    nng_msg *m = p->fm.m;
    int rv = p->fm.ctx;
    wire_rd rd;

    int sent = p->fwd_state == 2;

    nng_ctx_close(p->fctx);
    p->fwd_state = 0;
    if (rv || !m) {
        /* not sent: it cannot have landed; sent: it may have */
        prop_fail(r, p, 503, sent ? "outcome-unknown" : "no-leader",
                  sent ? "the leader did not answer (it may have gone); the write may or may not "
                         "have been applied: retry with the same Idempotency-Key"
                       : "the leader cannot be reached; retry shortly");
        goto out;
    }
    rd.p = nng_msg_body(m);
    rd.left = nng_msg_len(m);
    rd.failed = 0;
    if (wire_get_header(&rd) != WIRE_REP) {
        prop_fail(r, p, 503, "outcome-unknown", "the leader's answer was malformed");
        goto out;
    }
    int code = wire_get_u8(&rd);
    if (p->kind) {
        on_op_rep(r, p, code, &rd);
        goto out;
    }
    if (code != RPC_OK) {
        prop_fail(r, p, 503, code == RPC_UNKNOWN ? "outcome-unknown" : "no-leader",
                  code == RPC_UNKNOWN
                      ? "leadership changed while the write was in flight; retry with the same "
                        "Idempotency-Key"
                      : "the node this one took for the leader is not; retry shortly");
        goto out;
    }
    p->index = wire_get_u64(&rd);
    uint32_t n = wire_get_u32(&rd);
    if (rd.failed || n != (uint32_t)p->n || !(p->seq = calloc(n, sizeof *p->seq)) ||
        !(p->res = calloc(n, sizeof *p->res))) {
        prop_fail(r, p, 503, "outcome-unknown", "the leader's answer was malformed");
        goto out;
    }
    p->nres = n;
    for (uint32_t i = 0; i < n; i++) {
        size_t bl;
        p->seq[i] = wire_get_u64(&rd);
        p->res[i].status = wire_get_u16(&rd);
        p->res[i].problem = wire_get_u8(&rd);
        const uint8_t *b = wire_get_bytes(&rd, WIRE_MAX_FRAME, &bl);
        if (rd.failed)
            break;
        if (bl && (p->res[i].body = malloc(bl))) {
            memcpy(p->res[i].body, b, bl);
            p->res[i].body_len = bl;
        }
    }
    if (wire_rd_done(&rd)) {
        prop_fail(r, p, 503, "outcome-unknown", "the leader's answer was malformed");
        goto out;
    }
out:
    if (m)
        nng_msg_free(m);
    answer_done(r);
}

/* ------------------------------------------------------------ rep side */

static void rep_cb(void *arg)
{
    rep_ctx *c = arg;
    int rv = nng_aio_result(c->aio);

    if (c->sending) {
        c->sending = 0;
        if (rv)
            nng_msg_free(nng_aio_get_msg(c->aio));
        nng_ctx_recv(c->ctx, c->aio);
        return;
    }
    if (rv) {
        if (rv != NNG_ECLOSED)
            nng_ctx_recv(c->ctx, c->aio);
        return;
    }
    c->fm.m = nng_aio_get_msg(c->aio);
    c->fm.ctx = c->i;
    c->fm.link.type = MSG_RPC;
    core_inbox_push(c->r->in, &c->fm.link);
}

static void rep_reply(repl *r, int ctx, wire_wr *w)
{
    rep_ctx *c = &r->rctx[ctx];
    nng_msg *m;

    if (w->failed || nng_msg_alloc(&m, 0) || nng_msg_append(m, w->b.p, w->b.len)) {
        core_buf_free(&w->b);
        nng_ctx_recv(c->ctx, c->aio);
        return;
    }
    core_buf_free(&w->b);
    c->sending = 1;
    nng_aio_set_msg(c->aio, m);
    nng_ctx_send(c->ctx, c->aio);
}

static void change_begin(repl *r, raft_id id, int role, const char *addr, int ctx, repl_req *q);
static void sync_begin(repl *r, repl_req *q, int ctx);

static void on_rpc(repl *r, frame_msg *fm)
{
    wire_rd rd = {.p = nng_msg_body(fm->m), .left = nng_msg_len(fm->m)};
    int ctx = fm->ctx;
    uint8_t kind;

    if (atomic_load(&r->isolated) || wire_get_header(&rd) != WIRE_REQ) {
        nng_msg_free(fm->m);
        nng_ctx_recv(r->rctx[ctx].ctx, r->rctx[ctx].aio);
        return;
    }
    kind = wire_get_u8(&rd);
    if (kind == RPC_SNAP) { /* any node whose state covers the index serves it */
        wire_wr w = {0};
        int rc;
        wire_put_header(&w, WIRE_REP);
        wire_put_u8(&w, RPC_OK);
        rc = snap_src_chunk(r->src, &rd, &w, (size_t)r->cfg.raft.snapshot_chunk_kib << 10,
                            core_mono_ns());
        if (rc) {
            core_buf_free(&w.b);
            reply_code(r, ctx, rc == CORE_ENOENT ? RPC_NOT_FOUND : RPC_FAILED,
                       rc == CORE_ERANGE ? "this node's state is older than the snapshot"
                                         : "cannot serve this chunk");
        } else
            rep_reply(r, ctx, &w);
    } else if (raft_state(&r->raft) != RAFT_LEADER) {
        const char *laddr = NULL;
        raft_id lid;
        raft_leader(&r->raft, &lid, &laddr);
        reply_code(r, ctx, RPC_NOT_LEADER, laddr);
    } else if (kind == RPC_FORWARD) {
        size_t n;
        const uint8_t *e = wire_get_bytes(&rd, FSM_ENTRY_MAX, &n);
        prop *p;
        if (wire_rd_done(&rd) || !(p = calloc(1, sizeof *p)) || !(p->w = calloc(1, sizeof *p->w))) {
            reply_code(r, ctx, RPC_FAILED, "malformed");
        } else {
            p->r = r;
            p->n = 1;
            p->w[0].ctx = ctx;
            if (core_buf_put(&p->entry, e, n)) {
                reply_code(r, ctx, RPC_FAILED, "out of memory");
                prop_free(p);
            } else
                propose_entry(r, p);
        }
    } else if (kind == RPC_JOIN || kind == RPC_PROMOTE || kind == RPC_REMOVE) {
        raft_id id = wire_get_u64(&rd);
        char addr[WIRE_MAX_ADDR + 1] = "";
        if (kind == RPC_JOIN)
            wire_get_str(&rd, addr, WIRE_MAX_ADDR);
        if (wire_rd_done(&rd) || !id)
            reply_code(r, ctx, RPC_FAILED, "malformed");
        else
            change_begin(r, id,
                         kind == RPC_JOIN      ? RAFT_STANDBY
                         : kind == RPC_PROMOTE ? RAFT_VOTER
                                               : CHANGE_REMOVE,
                         addr, ctx, NULL);
    } else if (kind == RPC_SYNC) {
        if (wire_rd_done(&rd))
            reply_code(r, ctx, RPC_FAILED, "malformed");
        else
            sync_begin(r, NULL, ctx);
    } else
        reply_code(r, ctx, RPC_FAILED, "unknown request");
    nng_msg_free(fm->m);
}

/* answers whoever asked for the running membership change */
static void change_done(repl *r, int code, const char *text)
{
    char idb[17];
    if (r->change_q) {
        id_hex(r->change_id, idb);
        if (code == RPC_OK)
            op_answer(r->change_q, 200, json_pack("{s:s,s:s}", "id", idb, "role", "voter"), NULL,
                      NULL);
        else if (code == RPC_NOT_FOUND)
            op_answer(r->change_q, 404, NULL, "not-found",
                      "no node with this id is in the cluster");
        else
            op_answer(r->change_q, 503, NULL, "no-leader", text);
        r->change_q = NULL;
    } else if (r->change_ctx >= 0)
        reply_code(r, r->change_ctx, code, text);
    r->change_id = 0;
}

/* Moves the running membership change one step (add as a standby, assign
 * a role, or remove); answers its requester when the configuration that
 * holds the change is committed. raft requests carry no callback (see
 * propose_entry), so observe() calls this after every wake-up. */
static void change_step(repl *r)
{
    int role = -2, rv = 0;

    if (!r->change_id || r->raft.configuration_uncommitted_index)
        return;
    for (unsigned i = 0; i < r->raft.configuration.n; i++)
        if (r->raft.configuration.servers[i].id == r->change_id)
            role = r->raft.configuration.servers[i].role;
    if (raft_state(&r->raft) != RAFT_LEADER)
        rv = RAFT_NOTLEADER;
    else if (!r->barrier_done)
        return; /* a new leader changes membership once its barrier applied */
    else if (r->change_role == CHANGE_REMOVE
                 ? role == -2
                 : role == r->change_role ||
                       (r->change_role == RAFT_STANDBY && role == RAFT_VOTER)) {
        change_done(r, RPC_OK, "done");
        return;
    } else if (r->raft.legacy.change != NULL)
        return; /* the previous step is still being applied */
    else if (r->change_role == CHANGE_REMOVE)
        rv = raft_remove(&r->raft, &r->change, r->change_id, NULL);
    else if (role == -2 && r->change_addr[0])
        rv = raft_add(&r->raft, &r->change, r->change_id, r->change_addr, NULL);
    else if (role == -2)
        rv = RAFT_NOTFOUND;
    else
        rv = raft_assign(&r->raft, &r->change, r->change_id, r->change_role, NULL);
    if (rv)
        change_done(r,
                    rv == RAFT_NOTLEADER  ? RPC_NOT_LEADER
                    : rv == RAFT_NOTFOUND ? RPC_NOT_FOUND
                                          : RPC_FAILED,
                    raft_strerror(rv));
}

/* starts a membership change on the leader, asked by a rep context or a
 * local operation */
static void change_begin(repl *r, raft_id id, int role, const char *addr, int ctx, repl_req *q)
{
    if (r->change_id) {
        if (q)
            op_answer(q, 503, NULL, "unavailable",
                      "another membership change is running; retry when it is done");
        else
            reply_code(r, ctx, RPC_BUSY, "another membership change is running; retry");
        return;
    }
    r->change_id = id;
    r->change_role = role;
    r->change_ctx = ctx;
    r->change_q = q;
    snprintf(r->change_addr, sizeof r->change_addr, "%s", addr ? addr : "");
    change_step(r);
}

/* a strong read: on the leader a barrier, answered once applied; elsewhere
 * the leader is asked for its barrier index (observe answers) */
static void sync_begin(repl *r, repl_req *q, int ctx)
{
    syncw *sw = calloc(1, sizeof *sw);
    if (!sw) {
        if (q)
            op_answer(q, 503, NULL, "unavailable", "out of memory");
        else
            reply_code(r, ctx, RPC_FAILED, "out of memory");
        return;
    }
    sw->q = q;
    sw->ctx = ctx;
    sw->has_barrier = 1;
    if (raft_barrier(&r->raft, &sw->barrier, NULL)) {
        free(sw);
        if (q)
            op_answer(q, 503, NULL, "no-leader", "this node lost leadership; retry shortly");
        else
            reply_code(r, ctx, RPC_NOT_LEADER, "");
        return;
    }
    sw->index = sw->barrier.index;
    sw->term = raft_current_term(&r->raft);
    sw->next = r->syncs;
    r->syncs = sw;
}

/* strong reads whose index this node has applied (or that cannot be) */
static void sync_step(repl *r)
{
    uint64_t applied = raft_last_applied(&r->raft);
    for (syncw **pp = &r->syncs; *pp;) {
        syncw *sw = *pp;
        int lost = sw->has_barrier &&
                   (raft_state(&r->raft) != RAFT_LEADER || raft_current_term(&r->raft) != sw->term);
        if (!lost && applied < sw->index) {
            pp = &sw->next;
            continue;
        }
        if (sw->q && lost)
            op_answer(sw->q, 503, NULL, "no-leader", "leadership changed; retry shortly");
        else if (sw->q) {
            apply_result_clear(&sw->q->res);
            sw->q->res.status = 200;
            reply_push(sw->q);
        } else if (lost)
            reply_code(r, sw->ctx, RPC_NOT_LEADER, "");
        else {
            wire_wr w = {0};
            wire_put_header(&w, WIRE_REP);
            wire_put_u8(&w, RPC_OK);
            wire_put_u64(&w, sw->index);
            rep_reply(r, sw->ctx, &w);
        }
        *pp = sw->next;
        free(sw);
    }
}

/* ---------------------------------------------------------- raft frames */

static void pull_cb(void *arg)
{
    repl *r = arg;
    if (nng_aio_result(r->pull_aio))
        return;
    r->pull_fm.m = nng_aio_get_msg(r->pull_aio);
    r->pull_fm.link.type = MSG_RAFT;
    core_inbox_push(r->in, &r->pull_fm.link);
}

/* a notice from the leader: how far PostgreSQL has the commands */
static void on_note(repl *r, const uint8_t *p, size_t len)
{
    wire_rd rd = {.p = p, .left = len};
    uint64_t term, flushed;

    if (wire_get_header(&rd) != WIRE_NOTE || wire_get_u8(&rd) != NOTE_FLUSHED)
        return;
    term = wire_get_u64(&rd);
    flushed = wire_get_u64(&rd);
    if (wire_rd_done(&rd) || term != raft_current_term(&r->raft) ||
        raft_state(&r->raft) == RAFT_LEADER)
        return;
    wb_note_flushed(r->wb, flushed);
}

static void on_raft_frame(repl *r, nng_msg *m)
{
    struct raft_message msg;
    char addr[WIRE_MAX_ADDR + 1];
    const uint8_t *b = nng_msg_body(m);

    if (nng_msg_len(m) >= 4 && b[3] == WIRE_NOTE) {
        if (!atomic_load(&r->isolated))
            on_note(r, b, nng_msg_len(m));
    } else if (!atomic_load(&r->isolated) && r->recv_cb && !r->closing &&
               wire_decode_raft(nng_msg_body(m), nng_msg_len(m), &msg, addr) == 0) {
        if (msg.type == RAFT_INSTALL_SNAPSHOT && r->raft.snapshot.installing)
            /* raft 0.22.1 ignores it without freeing it (replicationInstallSnapshot
             * answers "async" while a snapshot is in flight); the leader sends
             * it again */
            wire_free_raft(&msg);
        else
            r->recv_cb(&r->io, &msg);
    }
    nng_msg_free(m);
    nng_recv_aio(r->pull, r->pull_aio);
}

/* ---------------------------------------------------------------- loop */

static void barrier_done(repl *r);

/* see repl.nudge: 1 when a nudge is wanted and none is on its way (the one
 * on its way carries the news too) */
static int nudge_due(repl *r)
{
    return r->nudge && raft_state(&r->raft) == RAFT_LEADER &&
           !(r->nudge_index && r->nudge_term == raft_current_term(&r->raft) &&
             raft_last_applied(&r->raft) < r->nudge_index);
}

static void nudge_followers(repl *r)
{
    if (!nudge_due(r)) {
        if (raft_state(&r->raft) != RAFT_LEADER)
            r->nudge = 0;
        return;
    }
    r->nudge = 0;
    r->nudge_index = 0;
    if (raft_barrier(&r->raft, &r->nudge_barrier, NULL) == 0) {
        r->nudge_index = r->nudge_barrier.index;
        r->nudge_term = raft_current_term(&r->raft);
    }
}

/* after raft moved: leadership changes, published figures */
static void observe(repl *r)
{
    unsigned short st = raft_state(&r->raft);
    if (st != r->prev_state) {
        if (st == RAFT_LEADER) {
            core_log(LOG_INFO, "this node leads", "\"term\":%llu",
                     (unsigned long long)raft_current_term(&r->raft));
            r->barrier_done = 0;
            int rv = raft_barrier(&r->raft, &r->barrier, NULL);
            r->barrier_term = raft_current_term(&r->raft);
            if (rv)
                core_log(LOG_WARN, "barrier after the election failed", "\"error\":\"%s\"",
                         raft_strerror(rv));
        } else if (r->prev_state == RAFT_LEADER)
            core_log(LOG_INFO, "this node no longer leads", NULL);
        r->prev_state = st;
        wb_set_active(r->wb, st == RAFT_LEADER);
    }
    /* what this node proposed in an earlier term may or may not commit */
    for (prop *p = r->props; p; p = p->next)
        if (!p->answered && p->term &&
            (st != RAFT_LEADER || p->term != raft_current_term(&r->raft)))
            prop_fail(r, p, 503, "outcome-unknown",
                      "leadership changed while the write was in flight; it may or may not "
                      "have been applied: retry with the same Idempotency-Key");
    /* what went to a leader that is no longer the one: stop waiting (a
     * dead leader never answers; the request may or may not have landed) */
    {
        const char *la;
        raft_id li;
        raft_leader(&r->raft, &li, &la);
        for (prop *p = r->props; p; p = p->next)
            if (p->fwd_state && p->faio && p->fwd_leader != li)
                nng_aio_cancel(p->faio);
    }
    if (st == RAFT_LEADER && !r->barrier_done && r->barrier_term == raft_current_term(&r->raft) &&
        raft_last_applied(&r->raft) >= r->barrier.index)
        barrier_done(r);
    change_step(r);
    sync_step(r);
    if (r->drain)
        drain_step(r);
    uint64_t commit = raft_commit_index(&r->raft), applied = raft_last_applied(&r->raft);
    const char *laddr;
    raft_id lid;
    raft_leader(&r->raft, &lid, &laddr);
    atomic_store(&r->s_term, raft_current_term(&r->raft));
    atomic_store(&r->s_commit, commit);
    atomic_store(&r->s_applied, applied);
    atomic_store(&r->s_last, raft_last_index(&r->raft));
    atomic_store(&r->s_leader, st == RAFT_LEADER);
    if (nudge_due(r))
        event_active(r->flush, 0, 0);
    atomic_store(&r->s_ready, lid != 0 && applied + READY_LAG >= commit &&
                                  raft_role(&r->raft) >= 0 &&
                                  (st != RAFT_LEADER || r->barrier_done));
}

static void close_cb(struct raft *raft)
{
}

/* send callbacks, deferred so raft never sees one inside its own call */
static void flush_sent(repl *r)
{
    int n = r->nsent;
    struct sent *s = r->sent;
    if (!n)
        return;
    r->sent = NULL;
    r->nsent = r->capsent = 0;
    for (int i = 0; i < n; i++)
        s[i].cb(s[i].req, 0);
    free(s);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    repl *r = arg;

    propose_queue(r);
    txn_commit(r);
    nudge_followers(r);
    flush_sent(r);
    txn_commit(r);
    observe(r);
    /* answers and leadership changes above may have freed a slot the queue
     * waits for; nothing else may wake this actor (a node that left the
     * cluster hears from no one), so look again */
    if (r->queue && in_flight(r) < MAX_IN_FLIGHT)
        event_active(r->flush, 0, 0);
}

/* The last thing the actor does: make what raft wrote durable, complete
 * every append and send it waits for (raft frees their requests in the
 * callbacks), then close raft, on this thread like every raft call. */
static void actor_shutdown(repl *r)
{
    for (int i = 0; i < 10 && (r->txn_open || r->waiting || r->nsent); i++) {
        txn_commit(r);
        if (r->waiting) {
            while (store_sync(r->st)) {
                struct timespec ts = {0, 100 * 1000 * 1000};
                core_log(LOG_ERROR, "fsync failed; retrying", NULL);
                nanosleep(&ts, NULL);
            }
            fire_durable(r, r->txn_seq);
        }
        flush_sent(r);
    }
    raft_close(&r->raft, close_cb);
    txn_commit(r);
}

/* ----------------------------------------------------------- operations */

static const char *role_name(int role)
{
    return role == RAFT_VOTER     ? "voter"
           : role == RAFT_STANDBY ? "standby"
           : role == RAFT_SPARE   ? "spare"
                                  : "none";
}

static json_t *status_json(repl *r)
{
    const char *laddr = NULL;
    raft_id lid = 0;
    char idb[17];
    unsigned short st = raft_state(&r->raft);
    uint64_t last = raft_last_index(&r->raft);
    json_t *o, *nodes = json_array(), *leader = json_null();

    raft_leader(&r->raft, &lid, &laddr);
    if (lid) {
        id_hex(lid, idb);
        json_decref(leader);
        leader = json_pack("{s:s,s:s}", "id", idb, "address", laddr ? laddr : "");
    }
    for (unsigned i = 0; nodes && i < r->raft.configuration.n; i++) {
        const struct raft_server *sv = &r->raft.configuration.servers[i];
        json_t *n;
        id_hex(sv->id, idb);
        n = json_pack("{s:s,s:s,s:s}", "id", idb, "address", sv->address, "role",
                      role_name(sv->role));
        if (n && st == RAFT_LEADER) {
            raft_index mi = 0;
            if (sv->id == r->id)
                mi = last;
            else
                raft_match_index(&r->raft, sv->id, &mi);
            json_object_set_new(n, "match_index", json_integer((json_int_t)mi));
            json_object_set_new(n, "lag", json_integer((json_int_t)(last > mi ? last - mi : 0)));
        }
        json_array_append_new(nodes, n);
    }
    id_hex(r->id, idb);
    o = json_pack(
        "{s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:b,s:o,s:o,s:b,s:o}", "id", idb, "address", r->addr,
        "state",
        st == RAFT_LEADER      ? "leader"
        : st == RAFT_FOLLOWER  ? "follower"
        : st == RAFT_CANDIDATE ? "candidate"
                               : "unavailable",
        "role", role_name(raft_role(&r->raft)), "term", (json_int_t)raft_current_term(&r->raft),
        "commit_index", (json_int_t)raft_commit_index(&r->raft), "applied_index",
        (json_int_t)raft_last_applied(&r->raft), "last_index", (json_int_t)last, "command_seq",
        (json_int_t)r->applied_seq, "ready", atomic_load(&r->s_ready), "leader", leader, "drain",
        r->drain ? json_string(drain_names[r->drain]) : json_null(), "isolated",
        atomic_load(&r->isolated), "nodes", nodes ? nodes : json_array());
    /* a snapshot being installed: how far it got */
    if (o)
        json_object_set_new(
            o, "install",
            r->ins.active ? json_pack("{s:I,s:s,s:I,s:I}", "index", (json_int_t)r->ins.in.index,
                                      "source", r->ins.source, "rows", (json_int_t)r->ins.in.rows,
                                      "bytes", (json_int_t)r->ins.in.bytes)
                          : json_null());
    return o;
}

/* a membership or sync request for the leader, from this follower */
static void forward_op(repl *r, repl_req *q, int kind, uint64_t node)
{
    const char *laddr;
    raft_id lid;
    prop *p;

    raft_leader(&r->raft, &lid, &laddr);
    if (!lid || !laddr || atomic_load(&r->isolated)) {
        if (q)
            op_answer(q, 503, NULL, "no-leader", "no leader is known right now; retry shortly");
        else if (kind == RPC_REMOVE)
            r->drain_asked = 0;
        return;
    }
    if (!(p = calloc(1, sizeof *p))) {
        if (q)
            op_answer(q, 503, NULL, "unavailable", "out of memory");
        return;
    }
    p->r = r;
    p->kind = kind;
    p->opq = q;
    p->node = node;
    p->next = r->props;
    r->props = p;
    forward(r, p);
}

static int voters_other_than(repl *r, raft_id id)
{
    int n = 0;
    for (unsigned i = 0; i < r->raft.configuration.n; i++)
        n += r->raft.configuration.servers[i].role == RAFT_VOTER &&
             r->raft.configuration.servers[i].id != id;
    return n;
}

/* Drain: hand leadership to another voter, have the leader remove this
 * node, then stop the process the usual way (SIGTERM: finish in-flight
 * requests, stop the actors). Runs from observe() and a 200 ms timer. */
static void drain_step(repl *r)
{
    int rv;
    switch (r->drain) {
    case DRAIN_TRANSFER:
        if (raft_state(&r->raft) == RAFT_LEADER) {
            if (raft_transferee(&r->raft) == 0 &&
                (rv = raft_transfer(&r->raft, &r->xfer, 0, NULL)) != 0)
                core_log(LOG_WARN, "leadership transfer failed; trying again", "\"error\":\"%s\"",
                         raft_strerror(rv));
            return;
        }
        r->drain = DRAIN_LEAVE;
        core_log(LOG_INFO, "drain: leaving the configuration", NULL);
        /* fall through */
    case DRAIN_LEAVE:
        if (raft_state(&r->raft) == RAFT_LEADER) {
            r->drain = DRAIN_TRANSFER; /* elected again meanwhile */
            return;
        }
        if (!r->drain_asked) {
            r->drain_asked = 1;
            forward_op(r, NULL, RPC_REMOVE, r->id);
        }
        return;
    case DRAIN_STOP:
        r->drain = DRAIN_DONE;
        core_log(LOG_INFO, "drain: left the cluster; stopping", NULL);
        kill(getpid(), SIGTERM);
        return;
    default:
        return;
    }
}

static void on_drain_timer(evutil_socket_t fd, short what, void *arg)
{
    repl *r = arg;
    drain_step(r);
    observe(r);
}

static void do_op(repl *r, repl_req *q)
{
    struct timeval every = {0, 200 * 1000};
    int role = raft_role(&r->raft);

    switch (q->op) {
    case REPL_OP_STATUS:
        op_answer(q, 200, status_json(r), NULL, NULL);
        return;
    case REPL_OP_PROMOTE:
        if (raft_state(&r->raft) == RAFT_LEADER)
            change_begin(r, q->op_node, RAFT_VOTER, NULL, -1, q);
        else
            forward_op(r, q, RPC_PROMOTE, q->op_node);
        return;
    case REPL_OP_SYNC:
        if (raft_state(&r->raft) == RAFT_LEADER)
            sync_begin(r, q, -1);
        else
            forward_op(r, q, RPC_SYNC, 0);
        return;
    case REPL_OP_DRAIN:
        if (r->drain) {
            op_answer(q, 202, json_pack("{s:s}", "drain", drain_names[r->drain]), NULL, NULL);
            return;
        }
        if (role == RAFT_VOTER && voters_other_than(r, r->id) == 0) {
            op_answer(q, 409, NULL, "conflict",
                      "this node is the last voter: add and promote another node before draining "
                      "it");
            return;
        }
        r->drain = role == -1 ? DRAIN_STOP : DRAIN_TRANSFER;
        atomic_store(&r->s_draining, 1);
        core_log(LOG_INFO, "drain: started", "\"leader\":%s",
                 raft_state(&r->raft) == RAFT_LEADER ? "true" : "false");
        op_answer(q, 202, json_pack("{s:s}", "drain", drain_names[r->drain]), NULL, NULL);
        evtimer_add(r->drain_ev, &every);
        drain_step(r);
        return;
    default:
        op_answer(q, 400, NULL, "validation", "unknown cluster operation");
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    repl *r = arg;
    core_msg *m;

    core_inbox_ack(r->in);
    while ((m = core_inbox_pop(r->in)) != NULL) {
        switch (m->type) {
        case MSG_STOP:
            r->stopping = 1;
            break;
        case MSG_REQ: {
            repl_req *q = (repl_req *)m;
            q->next_in_batch = NULL;
            *r->queue_tail = q;
            r->queue_tail = &q->next_in_batch;
            break;
        }
        case MSG_SYNCED: {
            uint64_t done;
            pthread_mutex_lock(&r->mu);
            r->synced_posted = 0;
            done = r->sync_done;
            pthread_mutex_unlock(&r->mu);
            fire_durable(r, done);
            break;
        }
        case MSG_RAFT:
            on_raft_frame(r, ((frame_msg *)m)->m);
            break;
        case MSG_RPC:
            on_rpc(r, (frame_msg *)m);
            break;
        case MSG_FWD_REP:
            on_fwd_rep(r, CONTAINER_OF(m, prop, fm.link));
            break;
        case MSG_OP:
            do_op(r, (repl_req *)m);
            break;
        case MSG_SNAP_REP:
            on_install_rep(r);
            break;
        }
    }
    on_flush(-1, 0, r);
    if (r->stopping) {
        actor_shutdown(r);
        event_base_loopbreak(r->base);
    }
}

/* leader duties once its log is current: a new cluster's signing key, the
 * policy of the configuration, and ticks */
static void propose_local(repl *r, const cmd *c)
{
    repl_req *q = calloc(1, sizeof *q);
    if (!q)
        return;
    if (cmd_encode(c, &q->cmd)) {
        free(q);
        return;
    }
    q->reply_to = NULL;
    q->next_in_batch = NULL;
    *r->queue_tail = q;
    r->queue_tail = &q->next_in_batch;
}

static void barrier_done(repl *r)
{
    store_txn t;
    uint8_t key[32];
    core_policy stored;
    int have_key, same;

    r->barrier_done = 1;
    if (store_begin(r->st, 0, &t))
        return;
    have_key = store_signing_key(&t, key) == 0;
    OPENSSL_cleanse(key, sizeof key);
    same = store_policy(&t, &stored) == 0 && !memcmp(&stored, &r->cfg.policy, sizeof stored);
    store_abort(&t);
    if (!have_key) {
        cmd c = {.type = CMD_BOOTSTRAP, .ts_ms = core_now_ms(), .actor_role = ROLE_SERVICE};
        if (RAND_bytes(c.u.bootstrap.key, 32) == 1)
            propose_local(r, &c);
        OPENSSL_cleanse(c.u.bootstrap.key, 32);
        core_log(LOG_INFO, "bootstrapping the cluster's signing key", NULL);
    }
    if (!same) {
        cmd c = {.type = CMD_POLICY,
                 .ts_ms = core_now_ms(),
                 .actor_role = ROLE_SERVICE,
                 .u.policy = r->cfg.policy};
        propose_local(r, &c);
    }
    event_active(r->flush, 0, 0);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    repl *r = arg;
    cmd c = {.type = CMD_TICK, .ts_ms = core_now_ms(), .actor_role = ROLE_SERVICE};
    if (raft_state(&r->raft) == RAFT_LEADER && r->barrier_done) {
        propose_local(r, &c);
        event_active(r->flush, 0, 0);
    }
}

/* outbox entries PostgreSQL has: the leader's flusher knows; followers
 * hear it from the leader */
static void on_trim(evutil_socket_t fd, short what, void *arg)
{
    repl *r = arg;
    snap_src_expire(r->src, core_mono_ns());
    uint64_t upto = wb_trim_upto(r->wb);
    if (r->wb && raft_state(&r->raft) == RAFT_LEADER) {
        wire_wr w = {0};
        wire_put_header(&w, WIRE_NOTE);
        wire_put_u8(&w, NOTE_FLUSHED);
        wire_put_u64(&w, raft_current_term(&r->raft));
        wire_put_u64(&w, upto);
        for (unsigned i = 0; !w.failed && i < r->raft.configuration.n; i++)
            if (r->raft.configuration.servers[i].id != r->id)
                send_frame(r, r->raft.configuration.servers[i].id,
                           r->raft.configuration.servers[i].address, w.b.p, w.b.len);
        core_buf_free(&w.b);
    }
    if (store_ob_trim(txn_get(r), upto, OB_TRIM_MAX))
        core_log(LOG_WARN, "outbox trim failed", NULL);
}

static int raft_boot(repl *r);

static void *actor_main(void *arg)
{
    repl *r = arg;
    int rc = raft_boot(r);
    pthread_mutex_lock(&r->mu);
    r->boot_rc = rc;
    r->booted = 1;
    pthread_cond_signal(&r->boot_cv);
    pthread_mutex_unlock(&r->mu);
    if (rc == 0)
        event_base_dispatch(r->base);
    return NULL;
}

/* ---------------------------------------------------------------- start */

static int node_id(repl *r, raft_id *id)
{
    store_txn t;
    int rc;
    if ((rc = store_begin(r->st, 0, &t)))
        return rc;
    *id = raft_meta_get(&t, "node_id");
    store_abort(&t);
    if (*id)
        return 0;
    do
        RAND_bytes((uint8_t *)id, sizeof *id);
    while (*id == 0);
    if ((rc = raft_meta_put(r, "node_id", *id)))
        return rc;
    r->txn_open = 0;
    return store_commit(&r->txn);
}

static int listen_all(repl *r)
{
    char url[300];
    int rv;

    if ((rv = nng_pull0_open(&r->pull)) || (rv = nng_rep0_open(&r->rep)))
        return rv;
    nng_setopt_size(r->pull, NNG_OPT_RECVMAXSZ, WIRE_MAX_FRAME);
    nng_setopt_size(r->rep, NNG_OPT_RECVMAXSZ, WIRE_MAX_FRAME);
    nng_setopt_int(r->pull, NNG_OPT_RECVBUF, 1024);
    if (r->tls_server) {
        nng_socket_set_ptr(r->pull, NNG_OPT_TLS_CONFIG, r->tls_server);
        nng_socket_set_ptr(r->rep, NNG_OPT_TLS_CONFIG, r->tls_server);
    }
    if ((rv = url_of(r, r->addr, 0, url, sizeof url)) || (rv = nng_listen(r->pull, url, NULL, 0)))
        goto fail;
    if ((rv = url_of(r, r->addr, 1, url, sizeof url)) || (rv = nng_listen(r->rep, url, NULL, 0)))
        goto fail;
    if ((rv = nng_aio_alloc(&r->pull_aio, pull_cb, r)))
        return rv;
    nng_recv_aio(r->pull, r->pull_aio);
    for (int i = 0; i < N_REP_CTX; i++) {
        rep_ctx *c = &r->rctx[i];
        c->r = r;
        c->i = i;
        if ((rv = nng_ctx_open(&c->ctx, r->rep)) || (rv = nng_aio_alloc(&c->aio, rep_cb, c)))
            return rv;
        nng_ctx_recv(c->ctx, c->aio);
    }
    return 0;
fail:
    core_log(LOG_ERROR, "cannot listen for peers", "\"url\":\"%s\",\"error\":\"%s\"", url,
             nng_strerror(rv));
    return rv;
}

/* asks the members in cfg.raft.join to add this node, until one leader does */
static void on_join(evutil_socket_t fd, short what, void *arg)
{
    repl *r = arg;
    char list[sizeof r->cfg.raft.join], *save = NULL;
    struct timeval again = {1, 0};

    if (raft_role(&r->raft) >= 0 && raft_role(&r->raft) != RAFT_SPARE) {
        core_log(LOG_INFO, "joined the cluster as a standby; catching up", NULL);
        return;
    }
    snprintf(list, sizeof list, "%s", r->cfg.raft.join);
    for (char *a = strtok_r(list, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
        nng_socket s;
        nng_msg *m = NULL;
        wire_wr w = {0};
        char target[WIRE_MAX_ADDR + 1];
        snprintf(target, sizeof target, "%s", a);
        for (int hop = 0; hop < 3; hop++) {
            if (nng_req0_open(&s))
                break;
            nng_setopt_ms(s, NNG_OPT_RECVTIMEO, 2000);
            nng_setopt_ms(s, NNG_OPT_SENDTIMEO, 2000);
            w.b.len = 0;
            wire_put_header(&w, WIRE_REQ);
            wire_put_u8(&w, RPC_JOIN);
            wire_put_u64(&w, r->id);
            wire_put_str(&w, r->addr, WIRE_MAX_ADDR);
            int ok = 0;
            if (!w.failed && peer_dial(r, s, target, 1, 0) == 0 &&
                nng_send(s, w.b.p, w.b.len, 0) == 0 && nng_recvmsg(s, &m, 0) == 0) {
                wire_rd rd = {.p = nng_msg_body(m), .left = nng_msg_len(m)};
                char text[WIRE_MAX_ADDR + 1];
                int code = wire_get_header(&rd) == WIRE_REP ? wire_get_u8(&rd) : -1;
                wire_get_str(&rd, text, WIRE_MAX_ADDR);
                nng_msg_free(m);
                if (code == RPC_OK)
                    ok = 1;
                else if (code == RPC_NOT_LEADER && text[0]) {
                    snprintf(target, sizeof target, "%s", text);
                    nng_close(s);
                    continue;
                } else
                    core_log(LOG_WARN, "join refused", "\"peer\":\"%s\",\"why\":\"%s\"", target,
                             text);
            }
            nng_close(s);
            if (ok) {
                /* accepted: the leader sends the state now; ask again only if
                 * this node still is not a member long after (each ask
                 * blocks this thread for up to a few seconds) */
                struct timeval later = {10, 0};
                core_log(LOG_INFO, "asked to join", "\"peer\":\"%s\"", target);
                core_buf_free(&w.b);
                evtimer_add(r->join_ev, &later);
                return;
            }
            break;
        }
        core_buf_free(&w.b);
    }
    evtimer_add(r->join_ev, &again);
}

/* Everything that touches struct raft runs on the actor thread: an LMDB
 * write transaction belongs to the thread that began it, and raft_start
 * may already append (a one-voter cluster elects itself at once). */
static int raft_boot(repl *r)
{
    const core_config *cfg = &r->cfg;
    struct timeval now = {0, 0};
    store_txn t;
    MDB_val v;
    int bootstrapped, installing;

    r->io.version = 1;
    r->io.capacity = UINT16_MAX; /* the map's room is checked by the HTTP layer */
    r->io.impl = r;
    r->io.init = io_init;
    r->io.close = io_close;
    r->io.load = io_load;
    r->io.start = io_start;
    r->io.bootstrap = io_bootstrap;
    r->io.recover = io_recover;
    r->io.set_term = io_set_term;
    r->io.set_vote = io_set_vote;
    r->io.send = io_send;
    r->io.append = io_append;
    r->io.truncate = io_truncate;
    r->io.snapshot_put = io_snapshot_put;
    r->io.snapshot_get = io_snapshot_get;
    r->io.time = io_time;
    r->io.random = io_random;
    fsm_init(&r->f, &r->rfsm, r->st, &r->raft);
    r->f.txn = fsm_txn;
    r->f.ctx = r;
    if (raft_init(&r->raft, &r->io, &r->rfsm, r->id, r->addr))
        return CORE_EIO;
    raft_set_election_timeout(&r->raft, cfg->raft.election_timeout_ms);
    raft_set_heartbeat_timeout(&r->raft, cfg->raft.heartbeat_ms);
    raft_set_pre_vote(&r->raft, true);
    raft_set_capacity_threshold(&r->raft, 0);
    raft_set_snapshot_threshold(&r->raft, cfg->raft.snapshot_threshold);
    raft_set_snapshot_trailing(&r->raft, cfg->raft.snapshot_trailing);
    raft_set_max_inflight_entries(&r->raft, 32);
    if (store_begin(r->st, 0, &t))
        return CORE_EIO;
    bootstrapped = raft_meta_get(&t, "term") != 0;
    r->applied_seq = store_meta_u64(&t, "applied");
    installing = store_get(&t, DB_META, "installing", 10, &v) == 0;
    store_abort(&t);
    if (installing) {
        core_log(LOG_ERROR,
                 "this data directory holds a snapshot install that did not finish: its state is "
                 "incomplete; remove it and start the node again with --join",
                 NULL);
        return CORE_EINVAL;
    }
    if (!bootstrapped && !cfg->raft.join[0] && r->applied_seq) {
        /* state made outside any log (circa restore, circa user add before
         * the first start): the cluster starts from a snapshot of it, so a
         * node that joins later installs this state instead of replaying a
         * log that never held it */
        struct raft_configuration conf;
        struct raft_buffer cb;
        int rc;
        raft_configuration_init(&conf);
        if (raft_configuration_add(&conf, r->id, r->addr, RAFT_VOTER) ||
            raft_configuration_encode(&conf, &cb)) {
            raft_configuration_close(&conf);
            return CORE_ENOMEM;
        }
        raft_configuration_close(&conf);
        rc = store_put(txn_get(r), DB_RAFT, "snap_conf", 9, cb.base, cb.len);
        raft_free(cb.base);
        /* index 2, not 1: raft 0.22 takes a snapshot at index 1 for entry 1
         * itself (TrailTermOf) and would never send it to a new node */
        if (rc || raft_meta_put(r, "snap_index", 2) || raft_meta_put(r, "snap_term", 1) ||
            raft_meta_put(r, "snap_conf_index", 2) || raft_meta_put(r, "term", 1) ||
            store_meta_put_u64(&r->txn, "raft_applied", 2))
            return CORE_EIO;
        r->txn_open = 0;
        if (store_commit(&r->txn) || store_sync(r->st))
            return CORE_EIO;
        bootstrapped = 1;
        core_log(LOG_INFO, "bootstrapped a one-voter cluster from the state in the data directory",
                 "\"peer\":\"%s\",\"commands\":%llu", r->addr, (unsigned long long)r->applied_seq);
    }
    if (!bootstrapped && !cfg->raft.join[0]) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        if (raft_configuration_add(&conf, r->id, r->addr, RAFT_VOTER) ||
            raft_bootstrap(&r->raft, &conf)) {
            raft_configuration_close(&conf);
            core_log(LOG_ERROR, "cannot bootstrap the cluster", NULL);
            return CORE_EIO;
        }
        raft_configuration_close(&conf);
        core_log(LOG_INFO, "bootstrapped a one-voter cluster", "\"peer\":\"%s\"", r->addr);
    }
    r->prev_state = RAFT_UNAVAILABLE;
    if (raft_start(&r->raft)) {
        core_log(LOG_ERROR, "raft did not start", "\"error\":\"%s\"", raft_errmsg(&r->raft));
        return CORE_EIO;
    }
    if (!bootstrapped && cfg->raft.join[0])
        evtimer_add(r->join_ev, &now);
    event_active(r->flush, 0, 0);
    return 0;
}

int repl_start(store *st, const core_config *cfg, wb *w, repl **out)
{
    struct timeval tv = {TICK_S, 0}, trim_tv = {1, 0};
    repl *r;
    int rc = CORE_EIO;

    if (!(r = calloc(1, sizeof *r)))
        return CORE_ENOMEM;
    r->st = st;
    r->wb = w;
    r->cfg = *cfg;
    r->stop_msg.type = MSG_STOP;
    r->synced_msg.type = MSG_SYNCED;
    r->queue_tail = &r->queue;
    r->txn_appends_tail = &r->txn_appends;
    r->waiting_tail = &r->waiting;
    snprintf(r->addr, sizeof r->addr, "%s", cfg->raft.peer);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    pthread_cond_init(&r->boot_cv, NULL);
    if (!(r->in = core_inbox_new()) || !(r->base = event_base_new()) ||
        event_base_priority_init(r->base, 2))
        goto fail;
    r->wake = event_new(r->base, core_inbox_fd(r->in), EV_READ | EV_PERSIST, on_wake, r);
    r->flush = event_new(r->base, -1, 0, on_flush, r);
    r->tick = event_new(r->base, -1, EV_PERSIST, on_tick, r);
    r->trim = event_new(r->base, -1, EV_PERSIST, on_trim, r);
    r->join_ev = evtimer_new(r->base, on_join, r);
    r->drain_ev = event_new(r->base, -1, EV_PERSIST, on_drain_timer, r);
    r->ins.retry = evtimer_new(r->base, on_install_retry, r);
    if (!r->ins.retry || !(r->src = snap_src_new(st)) || nng_aio_alloc(&r->ins.aio, install_cb, r))
        goto fail;
    if (!r->wake || !r->flush || !r->tick || !r->trim || !r->join_ev || !r->drain_ev ||
        event_priority_set(r->flush, 1))
        goto fail;
    if ((rc = node_id(r, &r->id)) || (rc = tls_setup(r)))
        goto fail;

    if (listen_all(r))
        goto fail;
    if (event_add(r->wake, NULL) || event_add(r->tick, &tv) || event_add(r->trim, &trim_tv))
        goto fail;
    if (pthread_create(&r->syncer, NULL, syncer_main, r))
        goto fail;
    if (pthread_create(&r->thread, NULL, actor_main, r))
        goto fail;
    pthread_mutex_lock(&r->mu);
    while (!r->booted)
        pthread_cond_wait(&r->boot_cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    if (r->boot_rc) {
        rc = r->boot_rc;
        goto fail;
    }
    core_log(LOG_INFO, "raft actor started", "\"id\":\"%016llx\",\"peer\":\"%s\",\"tls\":%s",
             (unsigned long long)r->id, r->addr, r->tls_server ? "true" : "false");
    *out = r;
    return 0;
fail:
    /* the process exits after a failed start; the OS frees the rest */
    return rc ? rc : CORE_EIO;
}

void repl_submit(repl *r, repl_req *q)
{
    q->reply_type = q->link.type;
    q->link.type = MSG_REQ;
    core_inbox_push(r->in, &q->link);
}

/* what reached the inbox after the actor stopped: frames and replies
 * nng received meanwhile, and proposals or operations that came too late */
static void drain_inbox(repl *r)
{
    core_msg *m;
    while ((m = core_inbox_pop(r->in)) != NULL) {
        switch (m->type) {
        case MSG_RAFT:
        case MSG_RPC:
        case MSG_SNAP_REP:
            if (((frame_msg *)m)->m)
                nng_msg_free(((frame_msg *)m)->m);
            break;
        case MSG_FWD_REP: {
            prop *p = CONTAINER_OF(m, prop, fm.link);
            if (p->fm.m)
                nng_msg_free(p->fm.m);
            p->fm.m = NULL;
            break;
        }
        case MSG_REQ:
        case MSG_OP: {
            repl_req *q = (repl_req *)m;
            fail_result(&q->res, 503, "unavailable", "this node is shutting down");
            reply_push(q);
            break;
        }
        default:
            break;
        }
    }
}

void repl_stop(repl *r)
{
    if (!r)
        return;
    core_inbox_push(r->in, &r->stop_msg);
    pthread_join(r->thread, NULL);
    /* answer what is still queued or in flight */
    for (repl_req *q = r->queue; q; q = q->next_in_batch)
        if (q->reply_to) {
            fail_result(&q->res, 503, "unavailable", "this node is shutting down");
            reply_push(q);
        }
    r->queue = NULL;
    nng_close(r->pull);
    nng_close(r->rep);
    if (r->ins.sock_open)
        nng_close(r->ins.sock);
    r->ins.sock_open = 0;
    nng_aio_stop(r->pull_aio);
    nng_aio_stop(r->ins.aio);
    for (int i = 0; i < N_REP_CTX; i++)
        if (r->rctx[i].aio)
            nng_aio_stop(r->rctx[i].aio);
    if (r->req_open)
        nng_close(r->req);
    for (int i = 0; i < r->npeers; i++)
        if (r->peers[i].open)
            nng_close(r->peers[i].push);
    pthread_mutex_lock(&r->mu);
    r->sync_stop = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->syncer, NULL);
    for (prop *p = r->props; p; p = p->next)
        if (p->faio)
            nng_aio_stop(p->faio);
    drain_inbox(r); /* before the props its messages may point into are freed */
    while (r->props) {
        prop *p = r->props;
        r->props = p->next;
        if (p->faio)
            nng_aio_stop(p->faio); /* its callback has run or never will */
        if (!p->answered)
            prop_fail(r, p, 503, "outcome-unknown",
                      "this node stopped while the write was in flight");
        prop_free(p);
    }
    while (r->syncs) {
        syncw *sw = r->syncs;
        r->syncs = sw->next;
        if (sw->q)
            op_answer(sw->q, 503, NULL, "unavailable", "this node is shutting down");
        free(sw);
    }
    if (r->change_q)
        op_answer(r->change_q, 503, NULL, "unavailable", "this node is shutting down");
    nng_aio_free(r->pull_aio);
    for (int i = 0; i < N_REP_CTX; i++)
        if (r->rctx[i].aio)
            nng_aio_free(r->rctx[i].aio);
    event_free(r->wake);
    event_free(r->flush);
    event_free(r->tick);
    event_free(r->trim);
    event_free(r->join_ev);
    event_free(r->drain_ev);
    event_free(r->ins.retry);
    nng_aio_free(r->ins.aio);
    core_buf_free(&r->ins.in.key);
    snap_src_free(r->src);
    if (r->raft_tick)
        event_free(r->raft_tick);
    event_base_free(r->base);
    core_inbox_free(r->in);
    free(r->sent);
    if (r->tls_server)
        nng_tls_config_free(r->tls_server);
    free(r->tls_cert_pem);
    if (r->tls_key_pem) {
        OPENSSL_cleanse(r->tls_key_pem, strlen(r->tls_key_pem));
        free(r->tls_key_pem);
    }
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    pthread_cond_destroy(&r->boot_cv);
    free(r);
}

void repl_stats_get(repl *r, repl_stats *s)
{
    uint64_t cum = 0;
    s->batches = atomic_load(&r->batches);
    s->commands = atomic_load(&r->commands);
    for (int i = 0; i < REPL_HIST_BUCKETS; i++) {
        cum += atomic_load(&r->hist[i]);
        s->hist[i] = cum;
    }
    s->term = atomic_load(&r->s_term);
    s->commit_index = atomic_load(&r->s_commit);
    s->applied_index = atomic_load(&r->s_applied);
    s->last_index = atomic_load(&r->s_last);
    s->leader = atomic_load(&r->s_leader);
    s->ready = atomic_load(&r->s_ready);
}

int repl_ready(repl *r)
{
    return atomic_load(&r->s_ready);
}

void repl_op(repl *r, repl_req *q, int op, uint64_t node)
{
    q->op = op;
    q->op_node = node;
    q->reply_type = q->link.type;
    q->link.type = MSG_OP;
    core_inbox_push(r->in, &q->link);
}

int repl_leads(repl *r)
{
    return atomic_load(&r->s_leader);
}

int repl_draining(repl *r)
{
    return atomic_load(&r->s_draining);
}

void repl_isolate(repl *r, int on)
{
    atomic_store(&r->isolated, on != 0);
    core_log(LOG_WARN,
             on ? "fault injection: this node is cut off from its peers"
                : "fault injection: this node reaches its peers again",
             NULL);
}

/* ------------------------------------------------------ outside of raft */

int repl_has_log(store *st)
{
    store_txn t;
    int has;
    if (store_begin(st, 0, &t))
        return 1; /* cannot tell: say so, the caller refuses */
    has = raft_meta_get(&t, "term") != 0;
    store_abort(&t);
    return has;
}

int repl_apply_local(store *st, const cmd *c, apply_result *res)
{
    store_txn t;
    core_buf enc = {0};
    int rc;

    memset(res, 0, sizeof *res);
    if ((rc = cmd_encode(c, &enc)))
        return rc;
    if ((rc = store_begin(st, 1, &t)))
        goto out;
    if ((rc = apply(&t, store_meta_u64(&t, "applied") + 1, c, enc.p, enc.len, res))) {
        store_abort(&t);
        apply_result_clear(res);
        goto out;
    }
    if (store_commit(&t) || store_sync(st)) {
        apply_result_clear(res);
        rc = CORE_EIO;
    }
out:
    core_buf_free(&enc);
    return rc;
}

int repl_prepare(store *st, const core_config *cfg)
{
    store_txn t;
    apply_result res;
    core_policy stored;
    uint8_t key[32];
    int have_key, same_policy, rc;

    if ((rc = store_begin(st, 0, &t)))
        return rc;
    have_key = store_signing_key(&t, key) == 0;
    OPENSSL_cleanse(key, sizeof key);
    same_policy = store_policy(&t, &stored) == 0 && !memcmp(&stored, &cfg->policy, sizeof stored);
    store_abort(&t);
    if (!have_key) {
        cmd c = {.type = CMD_BOOTSTRAP, .ts_ms = core_now_ms(), .actor_role = ROLE_SERVICE};
        if (RAND_bytes(c.u.bootstrap.key, 32) != 1)
            return CORE_EIO;
        rc = repl_apply_local(st, &c, &res);
        OPENSSL_cleanse(c.u.bootstrap.key, 32);
        if (rc)
            return rc;
        apply_result_clear(&res);
    }
    if (!same_policy) {
        cmd c = {.type = CMD_POLICY,
                 .ts_ms = core_now_ms(),
                 .actor_role = ROLE_SERVICE,
                 .u.policy = cfg->policy};
        if ((rc = repl_apply_local(st, &c, &res)))
            return rc;
        apply_result_clear(&res);
    }
    return 0;
}

int repl_restore_apply(store_txn *t, uint64_t seq, const uint8_t *enc, size_t len)
{
    apply_result res = {0};
    cmd c;
    int rc;

    if (cmd_decode(enc, len, &c))
        return CORE_EINVAL;
    if (store_meta_u64(t, "applied") + 1 != seq)
        return CORE_ERANGE;
    if ((rc = apply(t, seq, &c, enc, len, &res)))
        return rc;
    apply_result_clear(&res);
    /* PostgreSQL has this command already */
    return store_ob_trim(t, seq, 1);
}
