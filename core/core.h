/*
 * core — the pieces every other module stands on: logging, clocks, ids,
 * actor inboxes, configuration, the domain vocabulary, the binary command
 * codec and the deterministic state machine apply().
 *
 * Error convention: functions return 0 (or a count) on success and a small
 * negative CORE_E* code on failure; a function that fails never calls its
 * callback.
 */
#ifndef CIRCA_CORE_H
#define CIRCA_CORE_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum {
    CORE_OK = 0,
    CORE_EINVAL = -1, /* malformed input */
    CORE_ENOMEM = -2, /* allocation failed */
    CORE_EIO = -3,    /* system or storage error */
    CORE_ERANGE = -4, /* value or size out of bounds */
    CORE_ENOENT = -5, /* not found */
};

/* ---- logging: one JSON object per line on stderr ---------------------- */

enum core_log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

void core_log_set_level(int level);
int core_log_level_parse(const char *s); /* <0 when unknown */
/* `fields` is a printf format producing extra JSON members (without the
 * leading comma), e.g. "\"port\":%d"; NULL for none. String values passed
 * through it must be trusted or escaped with core_json_escape(). */
void core_log(int level, const char *msg, const char *fields, ...)
    __attribute__((format(printf, 3, 4)));
/* escape s into out (always NUL-terminated, truncated to fit) */
void core_json_escape(const char *s, char *out, size_t outlen);

/* ---- clocks ------------------------------------------------------------ */

int64_t core_now_ms(void);  /* wall clock, unix milliseconds */
int64_t core_mono_ns(void); /* monotonic nanoseconds */
/* RFC 3339 UTC with seconds, "2026-11-22T10:00:00Z"; out needs 21 bytes */
void core_fmt_time(int64_t unix_s, char out[21]);
void core_fmt_day(int64_t unix_s, char out[11]); /* "2026-11-22" */

/* a fast keyed hash for in-memory tables (FNV-1a, then a splitmix64
 * finalizer); not for anything an attacker must not predict or collide */
uint64_t core_hash64(const void *p, size_t n, uint64_t seed);

/* ---- ids --------------------------------------------------------------- */

typedef struct core_uuid {
    uint8_t b[16];
} core_uuid;

/* UUIDv7: 48-bit millisecond time then random bits, so ids sort by time */
int core_uuid_v7(core_uuid *u, int64_t now_ms);
int core_uuid_is_nil(const core_uuid *u);
void core_uuid_fmt(const core_uuid *u, char out[37]);
/* lowercase hex of n bytes into out[2n]; no terminator */
void core_hex(const uint8_t *p, size_t n, char *out);
int core_uuid_parse(const char *s, size_t len, core_uuid *u);
/* the number of code points of s when it is valid UTF-8 (shortest forms,
 * no surrogates, at most U+10FFFF) without NUL characters; -1 otherwise */
long core_utf8_count(const char *s, size_t n);
/* the length (1..4) of the valid UTF-8 sequence at p, of the left bytes
 * there, by the same rules; 0 when it is not one or is a NUL */
size_t core_utf8_seq(const unsigned char *p, size_t left);

/* ---- actor inboxes ------------------------------------------------------
 * A multi-producer single-consumer intrusive queue (Vyukov) plus an
 * eventfd. Producers write the eventfd only when the queue goes from empty
 * to non-empty, so a burst of messages costs the consumer one wake-up. The
 * consumer registers core_inbox_fd() in its event loop and, when woken,
 * calls core_inbox_ack() then pops until NULL.
 */

typedef struct core_msg {
    struct core_msg *_Atomic next;
    int type;
} core_msg;

typedef struct core_inbox core_inbox;

core_inbox *core_inbox_new(void);
void core_inbox_free(core_inbox *in);
int core_inbox_fd(const core_inbox *in);
void core_inbox_push(core_inbox *in, core_msg *m);
void core_inbox_ack(core_inbox *in);
core_msg *core_inbox_pop(core_inbox *in);

/* ---- domain vocabulary ------------------------------------------------- */

enum core_role { ROLE_MEMBER = 0, ROLE_LIBRARIAN, ROLE_ADMIN, ROLE_SERVICE, ROLE__COUNT };
enum core_plan { PLAN_STANDARD = 0, PLAN_PREMIUM, PLAN__COUNT };
enum core_ustatus { USTATUS_ACTIVE = 0, USTATUS_BLOCKED, USTATUS__COUNT };
enum core_rtype {
    RTYPE_FICTION = 0,
    RTYPE_FANTASY,
    RTYPE_NONFICTION,
    RTYPE_HISTORY,
    RTYPE_POETRY,
    RTYPE_SCHOLARLY_JOURNAL,
    RTYPE_VIDEO,
    RTYPE_AUDIO,
    RTYPE__COUNT
};

const char *core_role_name(int r);
const char *core_plan_name(int p);
const char *core_ustatus_name(int s);
const char *core_rtype_name(int t);
/* name → value, or -1 */
int core_role_parse(const char *s);
int core_plan_parse(const char *s);
int core_ustatus_parse(const char *s);
int core_rtype_parse(const char *s);

/* field limits in characters, shared by the HTTP validators and the command
 * decoder (which allows 4 bytes per character of UTF-8) */
#define CORE_MAX_EMAIL   254
#define CORE_MAX_NAME    200
#define CORE_MAX_TITLE   500
#define CORE_MAX_AUTHOR  200
#define CORE_MAX_TAG     100
#define CORE_MAX_LIST    50
#define CORE_MAX_COPIES  100000
#define CORE_MAX_IDEM    64
#define CORE_MAX_KEYNAME 100

/* circulation policy; part of the replicated state (set by CMD_POLICY) */
typedef struct core_policy {
    uint32_t loan_days;
    uint32_t max_renewals;
    uint32_t max_loans;
    uint32_t max_loans_premium;
    uint32_t pickup_days;
} core_policy;

void core_policy_default(core_policy *p);

/* ---- configuration ------------------------------------------------------ */

typedef struct core_config {
    char listen[256];
    char data[1024];
    int threads;
    uint64_t map_size_mb;
    int fsync;
    int log_level;
    struct {
        char alg[8];
        char public_key_file[1024];
        char jwks_file[1024];
        char issuer[256];
        char audience[256];
        int leeway_s;
        int ttl_s;
    } jwt;
    core_policy policy;
    struct {
        uint64_t max_body_bytes;
        uint64_t max_import_bytes; /* POST /v1/imports: a whole catalog file */
        uint64_t max_header_bytes;
        int max_json_depth;
        double rate_per_s;
        double rate_burst;
    } limits;
    uint32_t password_iterations;
    int grant_ttl_s;
    char content_base_url[512];
    struct {
        char dsn[2048];   /* libpq connection string; empty: write-behind off */
        char sslmode[16]; /* overrides the DSN's sslmode when set */
        char sslrootcert[1024];
        uint64_t high_water; /* unflushed commands at which writes are refused */
        uint32_t batch;      /* commands per PostgreSQL transaction */
    } pg;
    struct {
        char peer[256];  /* HOST:PORT this node's peers reach it at (PORT and PORT+1) */
        char join[2048]; /* comma-separated peer addresses of running members */
        uint32_t election_timeout_ms;
        uint32_t heartbeat_ms;
        char tls_ca[1024]; /* with cert and key: tls+tcp with mutual verification */
        char tls_cert[1024];
        char tls_key[1024];
        uint32_t snapshot_threshold; /* entries between snapshots */
        uint32_t snapshot_trailing;  /* entries kept after one (followers catch up from them) */
        uint32_t snapshot_chunk_kib; /* state per chunk when a node installs a snapshot */
        int fault_injection;         /* tests only: PUT /v1/cluster/fault */
    } raft;
} core_config;

void core_config_default(core_config *c);
/* Apply a JSON config file; unknown keys and wrong types are errors. */
int core_config_load_file(core_config *c, const char *path, char *err, size_t errlen);
/* Apply CIRCA_* environment variables. */
int core_config_load_env(core_config *c, char *err, size_t errlen);
int core_config_check(const core_config *c, char *err, size_t errlen);
/* HOST:PORT with PORT 1..65534 (a peer uses PORT and PORT+1) */
int core_hostport_valid(const char *s);

/* ---- commands -----------------------------------------------------------
 * Every state change is a command: a versioned binary record carrying the
 * proposer's clock, the acting principal and the client's idempotency key.
 * Strings in a decoded command point into the buffer it was decoded from.
 */

enum cmd_type {
    CMD_BOOTSTRAP = 1, /* cluster signing key */
    CMD_POLICY,        /* circulation policy */
    CMD_TICK,          /* time passes: expire holds, trim idempotency records */
    CMD_USER_CREATE,
    CMD_USER_UPDATE,
    CMD_RES_PUT,
    CMD_RES_DELETE,
    CMD_LOAN_CHECKOUT,
    CMD_LOAN_RETURN,
    CMD_LOAN_RENEW,
    CMD_HOLD_PLACE,
    CMD_HOLD_CANCEL,
    CMD_APIKEY_CREATE,
    CMD_IMPORT,      /* a batch of catalog rows of an import file */
    CMD_IMPORT_DONE, /* an import file finished: its digest and summary */
    CMD__COUNT
};

#define CMD_VERSION  1
#define CMD_MAX_SIZE (64 * 1024)
#define CMD_MAX_NAME 255 /* CMD_IMPORT_DONE: bytes of the file's name */
/* 9999-12-31T23:59:59.999Z: times must print as RFC 3339 */
#define CMD_MAX_TS_MS 253402300799999LL

typedef struct core_str {
    const char *p;
    uint32_t len;
} core_str;

/* fields a CMD_USER_UPDATE sets */
enum { UPD_STATUS = 1, UPD_PLAN = 2, UPD_ROLE = 4, UPD_NAME = 8 };
/* CMD_RES_PUT modes */
enum { RES_CREATE = 0, RES_UPSERT = 1 };

/* One catalog row of an import (CMD_IMPORT): an upsert by id. title and
 * type are always set; the optional fields are set when `has` says so (an
 * update keeps the stored value of a field the row does not set, a new
 * resource gets the POST /v1/resources default). */
enum { ROW_COPIES = 1, ROW_PREMIUM = 2, ROW_AUTHORS = 4, ROW_TAGS = 8 };
typedef struct cmd_row {
    uint32_t line; /* 1-based line of the file the row starts on */
    core_uuid id;
    uint8_t has, type, premium, n_authors, n_tags;
    uint32_t copies;
    core_str title, authors[CORE_MAX_LIST], tags[CORE_MAX_LIST];
} cmd_row;

typedef struct cmd {
    uint8_t type;
    int64_t ts_ms;   /* proposer's wall clock: apply() reads no other */
    core_uuid actor; /* principal; nil for anonymous */
    uint8_t actor_role;
    core_str idem;        /* client idempotency key, len 0 when absent */
    uint8_t req_hash[32]; /* SHA-256 of method, path and body (with idem) */
    union {
        struct {
            uint8_t key[32];
        } bootstrap;
        core_policy policy;
        struct {
            core_uuid id;
            core_str email, name;
            uint8_t role, plan;
            uint8_t salt[16], hash[32];
            uint32_t iterations;
        } user_create;
        struct {
            core_uuid id;
            uint8_t mask, status, plan, role;
            core_str name;
        } user_update;
        struct {
            core_uuid id;
            uint8_t mode, type, premium;
            uint32_t copies;
            core_str title;
            uint8_t n_authors, n_tags;
            core_str authors[CORE_MAX_LIST], tags[CORE_MAX_LIST];
        } res_put;
        struct {
            core_uuid id; /* resource, loan or hold, by command */
        } target;
        struct {
            core_uuid id, user, resource;
        } place; /* checkout (id = loan) and hold (id = hold) */
        struct {
            core_uuid id;
            uint8_t hash[32];
            uint8_t role;
            core_str name;
        } apikey;
        struct {
            uint32_t n;    /* rows */
            core_str rows; /* n rows encoded by cmd_row_put */
        } import;
        struct {
            uint8_t sha256[32];
            uint8_t format; /* enum imp_format, not IMP_AUTO */
            core_str name;  /* the file's name; may be empty */
            uint32_t rows, created, updated, unchanged, rejected;
        } import_done;
    } u;
} cmd;

typedef struct core_buf {
    uint8_t *p;
    size_t len, cap;
} core_buf;

void core_buf_free(core_buf *b);
int core_buf_put(core_buf *b, const void *p, size_t n);

int cmd_encode(const cmd *c, core_buf *out);
/* CMD_IMPORT rows: cmd_row_put appends one to rows (CORE_ERANGE when a
 * field is over its limit, rows unchanged; CORE_ENOMEM); cmd_row_next
 * reads the row at *off of a decoded command's rows and advances *off:
 * 1, or 0 after the last */
int cmd_row_put(core_buf *rows, const cmd_row *r);
int cmd_row_next(const core_str *rows, size_t *off, cmd_row *r);
/* Validates everything: version, type, lengths, enum ranges, trailing bytes. */
int cmd_decode(const uint8_t *p, size_t len, cmd *c);

/* ---- apply --------------------------------------------------------------
 * apply() is the state machine: given the store inside an open write
 * transaction, the log index and a command, it changes the state and
 * produces the answer the client will get. It reads no clock and no
 * randomness, so every replica that applies the same log ends in the same
 * state. The body is the exact HTTP response body (a JSON view or an
 * application/problem+json document).
 */

typedef struct apply_result {
    int status;  /* HTTP status */
    int problem; /* body is application/problem+json */
    char *body;  /* malloc'd, may be NULL for 204 */
    size_t body_len;
} apply_result;

void apply_result_clear(apply_result *r);

struct store_txn;
/* enc is c as the log holds it; it goes into the command's outbox entry */
int apply(struct store_txn *txn, uint64_t index, const cmd *c, const uint8_t *enc, size_t enc_len,
          apply_result *res);
/* a stored hold with its live queue position; malloc'd JSON */
char *apply_hold_render(struct store_txn *t, const void *data, size_t len, size_t *outlen);
/* the stored answer to c's idempotency key (1, res filled: a replay, or 422
 * when the key was used for another request), or 0 when c must run */
int apply_idem_find(struct store_txn *t, const cmd *c, apply_result *res);

/* problem documents, shared by apply() and the HTTP layer */
char *core_problem(int status, const char *kind, const char *detail, const char *field,
                   size_t *len);

#endif
