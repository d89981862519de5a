/*
 * cluster.c — `circa status`, `circa promote` and `circa drain`: the
 * operator's client of a running node's cluster admin API (/v1/cluster).
 *
 * The node is named by --url (with --token or CIRCA_TOKEN), or found by its
 * data directory: a serving node keeps its HTTP listen address in
 * DIR/circa.addr, and a short-lived admin token is signed with the key in
 * DIR the way `circa token` signs one. The host is resolved once; each
 * request is then one evhttp client connection on a private event base,
 * 5 s at most, with answers up to 1 MiB. evhttp reports a refused connect
 * and a connect timeout alike, so a request that got no answer is followed
 * by a plain connect() that tells whether the port is closed: for `drain`
 * that is the node having exited. Failures print the answer's problem
 * detail; the token is never printed.
 */
#include "cli/cli.h"
#include "net/auth.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/buffer.h>
#include <getopt.h>
#include <jansson.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define ADDR_FILE         "circa.addr"
#define REQUEST_TIMEOUT_S 5
#define MAX_BODY          (1 << 20)
#define MAX_HEADERS       (64 << 10)
#define TOKEN_TTL_S       300
#define PROMOTE_RETRY_S   30
#define PROMOTE_PAUSE_MS  500
#define DRAIN_POLL_MS     200
#define DRAIN_TIMEOUT_S   120
#define DRAIN_TIMEOUT_MAX 86400

#define CONN_HELP                                                                        \
    "  --data DIR         reach the node serving DIR (it names its address in\n"         \
    "                     DIR/circa.addr) with an admin token signed by DIR's key\n"     \
    "  --config FILE      with --data: jwt.issuer and jwt.audience (CIRCA_CONFIG)\n"     \
    "  --url URL          reach the node at http://HOST:PORT (https is not supported)\n" \
    "  --token TOKEN      with --url: an admin token; CIRCA_TOKEN keeps it out of ps\n"

static const char usage_status[] =
    "usage: circa status --data DIR [--config FILE] [--json]\n"
    "       circa status --url http://HOST:PORT [--token TOKEN] [--json]\n"
    "\n"
    "Prints the cluster as one node sees it: its id, peer address, state, role, term,\n"
    "commit and applied index and readiness, the leader, and a line per node. A\n"
    "leader also lists each node's match index and lag.\n"
    "\n" CONN_HELP "  --json             print the node's JSON answer as it is\n"
    "\n"
    "Exit status: 0 printed, 1 the node could not be asked, 2 usage error.\n";

static const char usage_promote[] =
    "usage: circa promote NODE_ID --data DIR [--config FILE]\n"
    "       circa promote NODE_ID --url http://HOST:PORT [--token TOKEN]\n"
    "\n"
    "Makes the node NODE_ID (16 hex digits, as `circa status` lists it) a voter,\n"
    "typically a standby that joined with `circa serve --join` and caught up. Any\n"
    "running member takes the request to the leader; while the cluster has no\n"
    "leader (503) it is retried for up to 30 s.\n"
    "\n" CONN_HELP "\n"
    "Exit status: 0 promoted, 1 failed, 2 usage error.\n";

static const char usage_drain[] =
    "usage: circa drain --data DIR [--config FILE] [--timeout SECONDS]\n"
    "       circa drain --url http://HOST:PORT [--token TOKEN] [--timeout SECONDS]\n"
    "\n"
    "Takes the node out of the cluster and stops it: a leader first hands leadership\n"
    "to another voter, then the node leaves the configuration and exits. Progress\n"
    "is shown until the node stops answering. The last voter cannot be drained.\n"
    "\n" CONN_HELP "  --timeout SECONDS  how long to wait for the node to stop, default 120\n"
    "\n"
    "Exit status: 0 the node stopped, 1 failed or still running after SECONDS,\n"
    "2 usage error.\n";

/* connection options, as given */
typedef struct conn_opts {
    const char *data, *url, *token, *config;
} conn_opts;

/* a node to ask */
typedef struct target {
    char where[300];  /* HOST:PORT as given or as named by circa.addr */
    char numeric[64]; /* the resolved address, for evhttp */
    int port;
    struct sockaddr_storage sa;
    socklen_t salen;
    char *authz; /* "Bearer TOKEN" */
    int minted;  /* the token was signed with --data's key */
    struct event_base *base;
} target;

/* failures of a request that got no answer */
enum {
    CALL_REFUSED = -1, /* nothing listens: the node is not running */
    CALL_TIMEOUT = -2,
    CALL_BROKEN = -3, /* the connection failed or closed before an answer */
    CALL_TOOBIG = -4, /* the answer is over MAX_BODY */
    CALL_ENOMEM = -5,
};

/* one request and its answer */
typedef struct call {
    int done;
    int error; /* the evhttp_request_error + 1 evhttp reported, 0, or -1: no memory */
    int status;
    char *body; /* NUL-terminated */
    size_t len;
} call;

/* a status line: one updating line on a terminal, else a line per change */
typedef struct progress {
    int tty, shown;
    char last[256];
} progress;

/* ---- the address file ---------------------------------------------------- */

int cli_addr_write(const char *data, const char *listen)
{
    char path[4096], tmp[4096];
    size_t n = strlen(listen);
    int fd;

    if ((size_t)snprintf(path, sizeof path, "%s/" ADDR_FILE, data) >= sizeof path ||
        (size_t)snprintf(tmp, sizeof tmp, "%s/." ADDR_FILE ".XXXXXX", data) >= sizeof tmp)
        return CORE_ERANGE;
    if ((fd = mkstemp(tmp)) < 0)
        return CORE_EIO;
    if (write(fd, listen, n) != (ssize_t)n || write(fd, "\n", 1) != 1)
        goto fail;
    if (close(fd)) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path))
        goto fail;
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return CORE_EIO;
}

void cli_addr_remove(const char *data)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/" ADDR_FILE, data) < sizeof path)
        unlink(path);
}

/* ---- finding the node ----------------------------------------------------- */

/* split HOST:PORT or [V6]:PORT; the port is 80 when absent */
static int split_hostport(const char *s, char *host, size_t hl, int *port)
{
    const char *p = NULL, *end;
    long n = 80;

    if (s[0] == '[') {
        if (!(end = strchr(s, ']')) || (end[1] && end[1] != ':'))
            return CORE_EINVAL;
        snprintf(host, hl, "%.*s", (int)(end - s - 1), s + 1);
        p = end[1] ? end + 2 : NULL;
    } else {
        end = strrchr(s, ':');
        snprintf(host, hl, "%.*s", end ? (int)(end - s) : (int)strlen(s), s);
        p = end ? end + 1 : NULL;
    }
    if (p) {
        char *e;
        n = strtol(p, &e, 10);
        if (!*p || *e || n < 1 || n > 65535)
            return CORE_EINVAL;
    }
    *port = (int)n;
    return 0;
}

/* resolve host (a wildcard listen address means this machine) into t: 0 or an exit code */
static int resolve(target *t, const char *host)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    char port[8];
    int rc;

    if (!*host || strcmp(host, "0.0.0.0") == 0)
        host = "127.0.0.1";
    else if (strcmp(host, "::") == 0)
        host = "::1";
    snprintf(port, sizeof port, "%d", t->port);
    if ((rc = getaddrinfo(host, port, &hints, &res))) {
        fprintf(stderr, "circa: cannot resolve %s: %s\n", host, gai_strerror(rc));
        return 1;
    }
    memcpy(&t->sa, res->ai_addr, res->ai_addrlen);
    t->salen = res->ai_addrlen;
    rc = getnameinfo(res->ai_addr, res->ai_addrlen, t->numeric, sizeof t->numeric, NULL, 0,
                     NI_NUMERICHOST);
    freeaddrinfo(res);
    if (rc) {
        fprintf(stderr, "circa: cannot use the address of %s\n", host);
        return 1;
    }
    return 0;
}

/* the address DATA's node serves on, into t and host: 0, or an exit code after saying why */
static int addr_read(target *t, const char *data, const char *usage, char *host, size_t hl)
{
    char path[4096];
    FILE *f;
    int ok;

    if ((size_t)snprintf(path, sizeof path, "%s/" ADDR_FILE, data) >= sizeof path)
        return cli_usage_error(usage, "--data is too long");
    if (!(f = fopen(path, "r"))) {
        if (errno == ENOENT)
            fprintf(stderr, "circa: no node is serving %s (there is no %s)\n", data, path);
        else
            fprintf(stderr, "circa: cannot read %s: %s\n", path, strerror(errno));
        return 1;
    }
    ok = fgets(t->where, sizeof t->where, f) != NULL;
    fclose(f);
    if (ok)
        t->where[strcspn(t->where, "\r\n")] = '\0';
    if (!ok || !core_hostport_valid(t->where) || split_hostport(t->where, host, hl, &t->port)) {
        fprintf(stderr, "circa: %s does not hold a HOST:PORT address\n", path);
        return 1;
    }
    return 0;
}

/* --url: http://HOST[:PORT] with nothing after but an optional "/" */
static int parse_url(target *t, const char *url, const char *usage)
{
    char host[256];
    size_t n;

    if (strncasecmp(url, "https://", 8) == 0)
        return cli_usage_error(usage, "only http:// URLs are supported, not https://");
    if (strncasecmp(url, "http://", 7) != 0)
        return cli_usage_error(usage, "--url must look like http://HOST:PORT");
    url += 7;
    n = strlen(url);
    if (n && url[n - 1] == '/')
        n--;
    if (n == 0 || n >= sizeof t->where || strcspn(url, "/?#@") < n)
        return cli_usage_error(usage, "--url must look like http://HOST:PORT");
    snprintf(t->where, sizeof t->where, "%.*s", (int)n, url);
    if (split_hostport(t->where, host, sizeof host, &t->port) || !*host)
        return cli_usage_error(usage, "--url must look like http://HOST:PORT");
    return resolve(t, host);
}

/* an admin token signed with DATA's key, as `circa token` signs one: 0 or an exit code */
static int mint_token(const char *data, const char *config, long ttl, char **tok)
{
    core_config cfg;
    core_uuid id;
    char sub[37];
    uint8_t key[32];
    store *st;
    int rc;

    if ((rc = cli_load_config(&cfg, config, 1)))
        return rc;
    if (store_open(data, 0, STORE_RDONLY, &st)) {
        fprintf(stderr, "circa: cannot open data directory %s\n", data);
        return 1;
    }
    rc = cli_read_signing_key(st, key);
    store_close(st);
    if (rc) {
        fprintf(stderr, "circa: %s has no signing key\n", data);
        rc = 1;
        goto fail;
    }
    if (core_uuid_v7(&id, core_now_ms())) {
        fprintf(stderr, "circa: cannot make a token id\n");
        rc = 1;
        goto fail;
    }
    core_uuid_fmt(&id, sub);
    rc = auth_sign_hs256(
        key, sizeof key, sub, "admin", "standard", cfg.jwt.issuer[0] ? cfg.jwt.issuer : NULL,
        cfg.jwt.audience[0] ? cfg.jwt.audience : NULL, core_now_ms() / 1000, ttl, tok);
    if (rc < 0) {
        fprintf(stderr, "circa: cannot sign a token: %s\n", auth_strerror(rc));
        rc = 1;
    }
fail:
    OPENSSL_cleanse(key, sizeof key);
    return rc;
}

static int token_valid(const char *tok)
{
    size_t n = strlen(tok);
    if (n == 0 || n > AUTH_TOKEN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (tok[i] <= ' ' || tok[i] > '~')
            return 0;
    return 1;
}

static void target_close(target *t)
{
    if (t->authz) {
        OPENSSL_cleanse(t->authz, strlen(t->authz));
        free(t->authz);
    }
    if (t->base)
        event_base_free(t->base);
    memset(t, 0, sizeof *t);
}

/* the node the options name, with its token: 0, or an exit code after saying why */
static int target_open(const conn_opts *o, const char *usage, long ttl, target *t)
{
    const char *tok = o->token ? o->token : getenv("CIRCA_TOKEN");
    char *minted = NULL, host[256];
    int rc;

    memset(t, 0, sizeof *t);
    if (o->data && o->url)
        return cli_usage_error(usage, "give --data or --url, not both");
    if (!o->data && !o->url)
        return cli_usage_error(usage, "name the node: --data DIR, or --url URL with a token");
    if (o->data && o->token)
        return cli_usage_error(usage, "--token goes with --url; --data signs its own token");
    if (o->url) {
        if (!tok || !*tok)
            return cli_usage_error(usage, "--url needs --token TOKEN or CIRCA_TOKEN");
        if (!token_valid(tok))
            return cli_usage_error(usage, "the token must be printable ASCII without spaces");
        if ((rc = parse_url(t, o->url, usage)))
            return rc;
    } else {
        if ((rc = addr_read(t, o->data, usage, host, sizeof host)) || (rc = resolve(t, host)) ||
            (rc = mint_token(o->data, o->config, ttl, &minted)))
            return rc;
        tok = minted;
        t->minted = 1;
    }
    rc = 1;
    if (!(t->authz = malloc(strlen(tok) + 8)) || !(t->base = event_base_new())) {
        fprintf(stderr, "circa: out of memory\n");
        goto fail;
    }
    snprintf(t->authz, strlen(tok) + 8, "Bearer %s", tok);
    /* a node that closes while a request is written must not kill us */
    signal(SIGPIPE, SIG_IGN);
    rc = 0;
fail:
    if (minted) {
        OPENSSL_cleanse(minted, strlen(minted));
        free(minted);
    }
    if (rc)
        target_close(t);
    return rc;
}

/* ---- requests ------------------------------------------------------------- */

static void on_error(enum evhttp_request_error e, void *arg)
{
    call *c = arg;
    c->error = (int)e + 1;
}

static void on_done(struct evhttp_request *req, void *arg)
{
    call *c = arg;
    struct evbuffer *in;
    size_t n;

    c->done = 1;
    if (!req || !(c->status = evhttp_request_get_response_code(req)))
        return;
    in = evhttp_request_get_input_buffer(req);
    n = evbuffer_get_length(in);
    if (!(c->body = malloc(n + 1))) {
        c->error = -1;
        c->status = 0;
        return;
    }
    evbuffer_remove(in, c->body, n);
    c->body[n] = '\0';
    c->len = n;
}

/* after a request got no answer: does nothing listen on the node's port? */
static int port_closed(const target *t)
{
    struct timeval tv = {REQUEST_TIMEOUT_S, 0};
    int fd = socket(t->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), closed;

    if (fd < 0)
        return 0;
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* bounds connect() */
    closed = connect(fd, (const struct sockaddr *)&t->sa, t->salen) != 0 && errno == ECONNREFUSED;
    close(fd);
    return closed;
}

static void call_clear(call *c)
{
    free(c->body);
    memset(c, 0, sizeof *c);
}

/* one request without a body: 0 with c->status and c->body (call_clear it), or CALL_* */
static int request(target *t, enum evhttp_cmd_type method, const char *path, call *c)
{
    struct evhttp_connection *conn;
    struct evhttp_request *req;
    struct evkeyvalq *h;
    int rc = CALL_ENOMEM;

    memset(c, 0, sizeof *c);
    if (!(conn = evhttp_connection_base_new(t->base, NULL, t->numeric, (ev_uint16_t)t->port)))
        return CALL_ENOMEM;
    evhttp_connection_set_timeout(conn, REQUEST_TIMEOUT_S);
    evhttp_connection_set_max_body_size(conn, MAX_BODY);
    evhttp_connection_set_max_headers_size(conn, MAX_HEADERS);
    if (!(req = evhttp_request_new(on_done, c)))
        goto fail;
    evhttp_request_set_error_cb(req, on_error);
    h = evhttp_request_get_output_headers(req);
    if (evhttp_add_header(h, "Host", t->where) || evhttp_add_header(h, "Authorization", t->authz) ||
        evhttp_add_header(h, "Accept", "application/json") ||
        evhttp_add_header(h, "Connection", "close")) {
        evhttp_request_free(req);
        goto fail;
    }
    if (evhttp_make_request(conn, req, method, path)) {
        rc = CALL_BROKEN;
        goto fail;
    }
    while (!c->done && event_base_loop(t->base, EVLOOP_ONCE) == 0)
        ;
    /* without an error, evhttp failed to connect: refused or timed out */
    if (c->status)
        rc = 0;
    else if (c->error < 0)
        rc = CALL_ENOMEM;
    else if (c->error == EVREQ_HTTP_TIMEOUT + 1)
        rc = CALL_TIMEOUT;
    else if (c->error == EVREQ_HTTP_DATA_TOO_LONG + 1)
        rc = CALL_TOOBIG;
    else if (port_closed(t))
        rc = CALL_REFUSED;
    else
        rc = c->error ? CALL_BROKEN : CALL_TIMEOUT;
fail:
    evhttp_connection_free(conn);
    if (rc)
        call_clear(c);
    return rc;
}

/* "circa: WHAT on HOST:PORT: why" for a request that got no answer */
static void say_no_answer(const target *t, const char *what, int rc)
{
    fprintf(stderr, "circa: %s on %s: ", what, t->where);
    switch (rc) {
    case CALL_REFUSED:
        fprintf(stderr, "connection refused; is the node running?\n");
        break;
    case CALL_TIMEOUT:
        fprintf(stderr, "no answer within %d s\n", REQUEST_TIMEOUT_S);
        break;
    case CALL_TOOBIG:
        fprintf(stderr, "the answer is larger than %d bytes\n", MAX_BODY);
        break;
    case CALL_BROKEN:
        fprintf(stderr, "the connection failed before an answer\n");
        break;
    default:
        fprintf(stderr, "out of memory\n");
        break;
    }
}

/* "circa: WHAT on HOST:PORT: HTTP 401 Unauthorized: detail" from a problem answer */
static void say_problem(const target *t, const char *what, const call *c)
{
    json_t *p = json_loadb(c->body, c->len, 0, NULL);
    const char *title = json_string_value(json_object_get(p, "title"));
    const char *detail = json_string_value(json_object_get(p, "detail"));

    fprintf(stderr, "circa: %s on %s: HTTP %d%s%s%s%s\n", what, t->where, c->status,
            title ? " " : "", title ? title : "", detail ? ": " : "", detail ? detail : "");
    if (c->status == 401 && t->minted)
        fprintf(stderr, "circa: the token was signed with the data directory's key; give the "
                        "node's --config so that jwt.issuer and jwt.audience match\n");
    json_decref(p);
}

/* the answer as a JSON object, or NULL after saying so */
static json_t *answer_object(const target *t, const char *what, const call *c)
{
    json_t *j = json_loadb(c->body, c->len, 0, NULL);
    if (!json_is_object(j)) {
        fprintf(stderr, "circa: %s on %s: the answer is not a JSON object\n", what, t->where);
        json_decref(j);
        return NULL;
    }
    return j;
}

/* ---- output --------------------------------------------------------------- */

static const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "?";
}

/* an integer member as text, "?" when it is missing */
static const char *jint(json_t *o, const char *key, char buf[24])
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        return "?";
    snprintf(buf, 24, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    return buf;
}

static void print_status(json_t *st, const target *t)
{
    json_t *leader = json_object_get(st, "leader"), *nodes = json_object_get(st, "nodes"), *n;
    const char *self = jstr(st, "id"), *lid = json_is_object(leader) ? jstr(leader, "id") : NULL;
    const char *drain = json_string_value(json_object_get(st, "drain"));
    json_t *ins = json_object_get(st, "install");
    char a[24], b[24], c[24], line[600];
    int idw = 2, addrw = 4, lag = 0;
    size_t i;

    printf("node     %s  peer %s  http %s\n", self, jstr(st, "address"), t->where);
    printf("state    %s, role %s, term %s\n", jstr(st, "state"), jstr(st, "role"),
           jint(st, "term", a));
    printf("indexes  commit %s, applied %s, last %s\n", jint(st, "commit_index", a),
           jint(st, "applied_index", b), jint(st, "last_index", c));
    printf("ready    %s\n", json_is_true(json_object_get(st, "ready")) ? "yes" : "no");
    if (lid)
        printf("leader   %s  peer %s%s\n", lid, jstr(leader, "address"),
               strcmp(lid, self) == 0 ? "  (this node)" : "");
    else
        printf("leader   none known\n");
    if (drain)
        printf("drain    %s\n", drain);
    if (json_is_object(ins))
        printf("install  snapshot %s from %s: %s rows, %s bytes so far\n", jint(ins, "index", a),
               jstr(ins, "source"), jint(ins, "rows", b), jint(ins, "bytes", c));
    if (!json_is_array(nodes) || json_array_size(nodes) == 0)
        return;
    json_array_foreach (nodes, i, n) {
        int w = (int)strlen(jstr(n, "id")), aw = (int)strlen(jstr(n, "address"));
        idw = w > idw ? (w > 64 ? 64 : w) : idw;
        addrw = aw > addrw ? (aw > 256 ? 256 : aw) : addrw;
        lag |= json_object_get(n, "match_index") != NULL;
    }
    printf("\n%-*s  %-*s  %-7s%s\n", idw, "ID", addrw, "PEER", "ROLE",
           lag ? "  MATCH INDEX        LAG" : "");
    json_array_foreach (nodes, i, n) {
        const char *id = jstr(n, "id");
        int is_leader = lid && strcmp(id, lid) == 0, is_self = strcmp(id, self) == 0;
        int k = snprintf(line, sizeof line, "%-*s  %-*s  %-7s", idw, id, addrw, jstr(n, "address"),
                         jstr(n, "role"));
        if (lag && k > 0 && (size_t)k < sizeof line)
            k += snprintf(line + k, sizeof line - (size_t)k, "  %11s  %9s",
                          jint(n, "match_index", a), jint(n, "lag", b));
        if (k > 0 && (size_t)k < sizeof line)
            snprintf(line + k, sizeof line - (size_t)k, "  %s%s%s", is_leader ? "leader" : "",
                     is_leader && is_self ? ", " : "", is_self ? "this node" : "");
        for (k = (int)strlen(line); k > 0 && line[k - 1] == ' '; k--)
            line[k - 1] = '\0';
        puts(line);
    }
}

static void progress_init(progress *p)
{
    memset(p, 0, sizeof *p);
    p->tty = isatty(STDOUT_FILENO);
}

__attribute__((format(printf, 2, 3))) static void progress_show(progress *p, const char *fmt, ...)
{
    char text[sizeof p->last];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (p->shown && strcmp(text, p->last) == 0)
        return;
    if (p->tty)
        printf("\r\033[K%s", text);
    else
        printf("%s\n", text);
    fflush(stdout);
    memcpy(p->last, text, sizeof text);
    p->shown = 1;
}

/* ends a terminal's updating line so that what follows starts on its own */
static void progress_end(progress *p)
{
    if (p->tty && p->shown)
        putchar('\n');
    p->shown = 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* ---- commands ------------------------------------------------------------- */

/* --data, --url, --token or --config into o: 1 taken, 0 not one of them */
static int conn_opt(conn_opts *o, int opt)
{
    switch (opt) {
    case 'd':
        o->data = optarg;
        return 1;
    case 'u':
        o->url = optarg;
        return 1;
    case 'T':
        o->token = optarg;
        return 1;
    case 'c':
        o->config = optarg;
        return 1;
    default:
        return 0;
    }
}

int cmd_status(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", 1, 0, 'd'}, {"url", 1, 0, 'u'},  {"token", 1, 0, 'T'}, {"config", 1, 0, 'c'},
        {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    static const char what[] = "GET /v1/cluster";
    conn_opts co = {0};
    target t;
    call c;
    json_t *st = NULL;
    int o, json = 0, rc;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (conn_opt(&co, o))
            continue;
        if (o == 'j') {
            json = 1;
        } else if (o == 'h') {
            fputs(usage_status, stdout);
            return 0;
        } else {
            return cli_usage_error(usage_status, NULL);
        }
    }
    if (optind < argc)
        return cli_usage_error(usage_status, "unexpected argument");
    if ((rc = target_open(&co, usage_status, TOKEN_TTL_S, &t)))
        return rc;
    rc = 1;
    if ((o = request(&t, EVHTTP_REQ_GET, "/v1/cluster", &c))) {
        say_no_answer(&t, what, o);
        goto fail;
    }
    if (c.status != 200) {
        say_problem(&t, what, &c);
        goto fail;
    }
    if (!(st = answer_object(&t, what, &c)))
        goto fail;
    if (json)
        printf("%s%s", c.body, c.len && c.body[c.len - 1] == '\n' ? "" : "\n");
    else
        print_status(st, &t);
    rc = 0;
fail:
    json_decref(st);
    call_clear(&c);
    target_close(&t);
    return rc;
}

int cmd_promote(int argc, char **argv)
{
    static const struct option opts[] = {{"data", 1, 0, 'd'},  {"url", 1, 0, 'u'},
                                         {"token", 1, 0, 'T'}, {"config", 1, 0, 'c'},
                                         {"help", 0, 0, 'h'},  {0, 0, 0, 0}};
    conn_opts co = {0};
    const char *id;
    char path[64], what[80];
    progress p;
    target t;
    call c;
    json_t *res = NULL;
    int64_t deadline;
    int o, rc;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (conn_opt(&co, o))
            continue;
        if (o == 'h') {
            fputs(usage_promote, stdout);
            return 0;
        }
        return cli_usage_error(usage_promote, NULL);
    }
    if (optind != argc - 1)
        return cli_usage_error(usage_promote, "name one NODE_ID");
    id = argv[optind];
    if (strlen(id) != 16 || strspn(id, "0123456789abcdefABCDEF") != 16)
        return cli_usage_error(usage_promote, "NODE_ID is 16 hex digits, as `circa status` shows");
    snprintf(path, sizeof path, "/v1/cluster/nodes/%s/promote", id);
    snprintf(what, sizeof what, "POST %s", path);
    if ((rc = target_open(&co, usage_promote, TOKEN_TTL_S, &t)))
        return rc;
    rc = 1;
    progress_init(&p);
    deadline = core_mono_ns() + (int64_t)PROMOTE_RETRY_S * 1000000000;
    for (;;) {
        json_t *prob;
        const char *detail;
        if ((o = request(&t, EVHTTP_REQ_POST, path, &c))) {
            progress_end(&p);
            say_no_answer(&t, what, o);
            if (o == CALL_TIMEOUT)
                fprintf(stderr, "circa: the promotion may still complete; see `circa status`\n");
            goto fail;
        }
        if (c.status != 503 || core_mono_ns() >= deadline)
            break;
        prob = json_loadb(c.body, c.len, 0, NULL);
        detail = json_string_value(json_object_get(prob, "detail"));
        progress_show(&p, "no leader right now (%s); retrying for up to %d s",
                      detail ? detail : "HTTP 503", PROMOTE_RETRY_S);
        json_decref(prob);
        call_clear(&c);
        sleep_ms(PROMOTE_PAUSE_MS);
    }
    progress_end(&p);
    if (c.status != 200) {
        say_problem(&t, what, &c);
        goto fail;
    }
    if (!(res = answer_object(&t, what, &c)))
        goto fail;
    printf("node %s is now a %s\n",
           json_is_string(json_object_get(res, "id")) ? jstr(res, "id") : id, jstr(res, "role"));
    rc = 0;
fail:
    json_decref(res);
    call_clear(&c);
    target_close(&t);
    return rc;
}

/* the drain step an answer names: "none" when null, "?" when absent */
static void drain_state(const call *c, char *out, size_t outlen)
{
    json_t *j = json_loadb(c->body, c->len, 0, NULL), *d = json_object_get(j, "drain");
    snprintf(out, outlen, "%s", json_is_string(d) ? json_string_value(d) : d ? "none" : "?");
    json_decref(j);
}

int cmd_drain(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", 1, 0, 'd'},    {"url", 1, 0, 'u'},  {"token", 1, 0, 'T'}, {"config", 1, 0, 'c'},
        {"timeout", 1, 0, 't'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    static const char what[] = "POST /v1/cluster/drain";
    conn_opts co = {0};
    long timeout = DRAIN_TIMEOUT_S;
    char state[64], now[64], why[96] = "";
    progress p;
    target t;
    call c;
    int64_t deadline;
    int o, rc;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (conn_opt(&co, o))
            continue;
        if (o == 't') {
            char *end;
            timeout = strtol(optarg, &end, 10);
            if (*end || !*optarg || timeout < 1 || timeout > DRAIN_TIMEOUT_MAX)
                return cli_usage_error(usage_drain, "--timeout must be 1 to 86400 seconds");
        } else if (o == 'h') {
            fputs(usage_drain, stdout);
            return 0;
        } else {
            return cli_usage_error(usage_drain, NULL);
        }
    }
    if (optind < argc)
        return cli_usage_error(usage_drain, "unexpected argument");
    /* the token must outlive the wait */
    if ((rc = target_open(&co, usage_drain, TOKEN_TTL_S + timeout, &t)))
        return rc;
    rc = 1;
    if ((o = request(&t, EVHTTP_REQ_POST, "/v1/cluster/drain", &c))) {
        say_no_answer(&t, what, o);
        goto fail;
    }
    if (c.status != 202) {
        say_problem(&t, what, &c);
        goto fail;
    }
    drain_state(&c, state, sizeof state);
    call_clear(&c);
    progress_init(&p);
    progress_show(&p, "drain: %s", strcmp(state, "none") && strcmp(state, "?") ? state : "started");
    deadline = core_mono_ns() + (int64_t)timeout * 1000000000;
    while (core_mono_ns() < deadline) {
        sleep_ms(DRAIN_POLL_MS);
        o = request(&t, EVHTTP_REQ_GET, "/v1/cluster", &c);
        if (o == CALL_REFUSED) {
            progress_end(&p);
            printf("the node at %s stopped\n", t.where);
            rc = 0;
            goto fail;
        }
        if (o == 0 && c.status == 200) {
            drain_state(&c, now, sizeof now);
            if (strcmp(now, state)) {
                memcpy(state, now, sizeof state);
                progress_show(&p, "drain: %s", state);
            }
            why[0] = '\0';
        } else if (o == 0) {
            snprintf(why, sizeof why, "; it last answered HTTP %d", c.status);
        } else {
            snprintf(why, sizeof why, "; it last gave no answer");
        }
        call_clear(&c);
    }
    progress_end(&p);
    fprintf(stderr, "circa: the node at %s still answers after %ld s (drain: %s%s)\n", t.where,
            timeout, state, why);
fail:
    call_clear(&c);
    target_close(&t);
    return rc;
}
