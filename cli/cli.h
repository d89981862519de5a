/* cli/cli.h: what the circa command's files share: main.c's helpers for
 * usage errors, configuration and the signing key; the client of a running
 * node (client.c) that the cluster admin commands (cluster.c) and catalog
 * imports (import.c) use; and the address file a serving node keeps in its
 * data directory so that those commands can find it. */
#ifndef CIRCA_CLI_CLI_H
#define CIRCA_CLI_CLI_H

#include "core/core.h"
#include "persist/store.h"

#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>

/* main.c */
int cli_usage_error(const char *usage, const char *msg); /* prints; returns exit code 2 */
int cli_load_config(core_config *cfg, const char *file, int use_env); /* 0 or exit code 2 */
int cli_read_signing_key(store *st, uint8_t key[32]);

/* cluster.c: `circa status`, `circa promote`, `circa drain`; exit codes */
int cmd_status(int argc, char **argv);
int cmd_promote(int argc, char **argv);
int cmd_drain(int argc, char **argv);

/* import.c: `circa import`; an exit code */
int cmd_import(int argc, char **argv);

/* DATA/circa.addr holds the HTTP listen address of the node serving DATA,
 * one line. Written (through a temporary file and a rename) once the node
 * serves, removed when it stops cleanly. 0 or a negative CORE_E* code. */
int cli_addr_write(const char *data, const char *listen);
void cli_addr_remove(const char *data);

/* ---- client.c: the client of a running node ---------------------------- */

/* (event2/http.h stays out: its HTTP_* status macros clash with net.h's) */
struct evbuffer;
struct event_base;

#define CLI_TIMEOUT_S   5    /* a request's default timeout */
#define CLI_TOKEN_TTL_S 300  /* a token signed with --data's key */
#define CLI_TICK_MS     150  /* how often a request with a body reports */
#define CLI_WHY_MAX     8448 /* a message that names two paths */

#define CLI_CONN_HELP                                                                    \
    "  --data DIR         reach the node serving DIR (it names its address in\n"         \
    "                     DIR/circa.addr) with an admin token signed by DIR's key\n"     \
    "  --config FILE      with --data: jwt.issuer and jwt.audience (CIRCA_CONFIG)\n"     \
    "  --url URL          reach the node at http://HOST:PORT (https is not supported)\n" \
    "  --token TOKEN      with --url: an admin token; CIRCA_TOKEN keeps it out of ps\n"

/* connection options, as given */
typedef struct cli_conn_opts {
    const char *data, *url, *token, *config;
} cli_conn_opts;

/* a node to ask */
typedef struct cli_target {
    char where[300];  /* HOST:PORT as given or as named by circa.addr */
    char numeric[64]; /* the resolved address, for evhttp */
    int port;
    struct sockaddr_storage sa;
    socklen_t salen;
    char *authz;      /* "Bearer TOKEN" */
    int minted;       /* the token was signed with --data's key */
    int timeout_s;    /* of each request: CLI_TIMEOUT_S unless the caller changes it */
    const char *data; /* --data, to find the node and sign tokens again */
    char issuer[256], audience[256]; /* of the tokens signed */
    struct event_base *base;
} cli_target;

/* failures of a request that got no answer */
enum {
    CLI_REFUSED = -1, /* nothing listens: the node is not running */
    CLI_TIMEOUT = -2,
    CLI_BROKEN = -3, /* the connection failed or closed before an answer */
    CLI_TOOBIG = -4, /* the answer is over 1 MiB */
    CLI_ENOMEM = -5,
    CLI_CANCELLED = -6, /* the caller's cancel flag was set */
};

/* one request and its answer */
typedef struct cli_call {
    int done;
    int error; /* the evhttp_request_error + 1 evhttp reported, 0, or -1: no memory */
    int status;
    int retry_after; /* seconds, from a Retry-After header; 0 without one */
    char *body;      /* NUL-terminated */
    size_t len;
} cli_call;

/* a request's body and how its upload is followed */
typedef struct cli_upload {
    struct evbuffer *body; /* moved into the request */
    const char *content_type;
    /* every CLI_TICK_MS, when not NULL: the body's bytes sent so far, and
     * whether the whole request is sent (the node is working on it) */
    void (*tick)(void *arg, uint64_t sent, uint64_t total, int sent_all);
    void *arg;
    volatile sig_atomic_t *cancel; /* set (by a signal handler): the request is abandoned */
} cli_upload;

/* a status line: one updating line on a terminal, else a line per change */
typedef struct cli_progress {
    int tty, shown;
    char last[512];
} cli_progress;

/* --data, --url, --token or --config (options 'd', 'u', 'T', 'c') into o:
 * 1 taken, 0 not one of them */
int cli_conn_opt(cli_conn_opts *o, int opt);
/* the node the options name, with its token (signed for ttl seconds with
 * --data): 0, or an exit code after saying why */
int cli_target_open(const cli_conn_opts *o, const char *usage, long ttl, cli_target *t);
/* with --data: the address in DIR/circa.addr again and a new token for ttl
 * seconds; with --url nothing. 0, or 1 with the reason in why */
int cli_target_renew(cli_target *t, long ttl, char *why, size_t whylen);
void cli_target_close(cli_target *t);

/* one request (method: an enum evhttp_cmd_type), with a body when up is
 * not NULL: 0 with c->status and c->body (cli_call_clear it), or a CLI_* code */
int cli_request(cli_target *t, int method, const char *path, const cli_upload *up, cli_call *c);
void cli_call_clear(cli_call *c);
/* why a request got no answer: a constant or buf */
const char *cli_no_answer_why(const cli_target *t, int rc, char *buf, size_t len);
/* "circa: WHAT on HOST:PORT: why" for a request that got no answer */
void cli_say_no_answer(const cli_target *t, const char *what, int rc);
/* "HTTP 401 Unauthorized: detail" from a problem answer */
void cli_problem_text(const cli_call *c, char *buf, size_t len);
/* "circa: WHAT on HOST:PORT: HTTP 401 Unauthorized: detail" */
void cli_say_problem(const cli_target *t, const char *what, const cli_call *c);
/* the answer as a JSON object, or NULL after saying so */
json_t *cli_answer_object(const cli_target *t, const char *what, const cli_call *c);
/* a string member of o, "?" when it is missing */
const char *cli_jstr(json_t *o, const char *key);
/* an integer member of o as text in buf, "?" when it is missing */
const char *cli_jint(json_t *o, const char *key, char buf[24]);

void cli_progress_init(cli_progress *p);
__attribute__((format(printf, 2, 3))) void cli_progress_show(cli_progress *p, const char *fmt, ...);
/* ends a terminal's updating line so that what follows starts on its own */
void cli_progress_end(cli_progress *p);
/* erases a terminal's updating line so that what follows takes its place */
void cli_progress_clear(cli_progress *p);

void cli_sleep_ms(int ms);

#endif
