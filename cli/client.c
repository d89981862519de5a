/*
 * client.c — the operator's client of a running node's HTTP API, shared by
 * the commands that talk to one: status, promote and drain (cluster.c) and
 * import (import.c).
 *
 * The node is named by --url (with --token or CIRCA_TOKEN), or found by its
 * data directory: a serving node keeps its HTTP listen address in
 * DIR/circa.addr, and a short-lived admin token is signed with the key in
 * DIR the way `circa token` signs one. A command that runs for long calls
 * cli_target_renew() before a request: the address is read again (the node
 * may have restarted elsewhere) and a fresh token signed. The host is
 * resolved once per address; each request is then one evhttp client
 * connection on a private event base, with t->timeout_s of silence at most
 * and answers up to 1 MiB. A request may carry a body; while it runs a
 * timer on the same base reports how much of the body has left the
 * connection's output buffer, and checks the caller's cancel flag. evhttp
 * reports a refused connect and a connect timeout alike, so a request that
 * got no answer is followed by a plain connect() that tells whether the
 * port is closed: for `drain` that is the node having exited. Failures
 * print the answer's problem detail; the token is never printed.
 */
#include "cli/cli.h"
#include "net/auth.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define ADDR_FILE       "circa.addr"
#define MAX_BODY        (1 << 20)
#define MAX_HEADERS     (64 << 10)
#define RETRY_AFTER_MAX 86400

/* ---- the address file ----------------------------------------------------- */

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

/* resolve host (a wildcard listen address means this machine) into t: 0, or 1 with why */
static int resolve(cli_target *t, const char *host, char *why, size_t wl)
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
        snprintf(why, wl, "cannot resolve %s: %s", host, gai_strerror(rc));
        return 1;
    }
    memcpy(&t->sa, res->ai_addr, res->ai_addrlen);
    t->salen = res->ai_addrlen;
    rc = getnameinfo(res->ai_addr, res->ai_addrlen, t->numeric, sizeof t->numeric, NULL, 0,
                     NI_NUMERICHOST);
    freeaddrinfo(res);
    if (rc) {
        snprintf(why, wl, "cannot use the address of %s", host);
        return 1;
    }
    return 0;
}

/* the address t->data's node serves on, into t and resolved: 0, or 1 with why */
static int addr_read(cli_target *t, char *why, size_t wl)
{
    char path[4096], host[256];
    FILE *f;
    int ok;

    snprintf(path, sizeof path, "%s/" ADDR_FILE, t->data); /* cli_target_open checked its length */
    if (!(f = fopen(path, "r"))) {
        if (errno == ENOENT)
            snprintf(why, wl, "no node is serving %s (there is no %s)", t->data, path);
        else
            snprintf(why, wl, "cannot read %s: %s", path, strerror(errno));
        return 1;
    }
    ok = fgets(t->where, sizeof t->where, f) != NULL;
    fclose(f);
    if (ok)
        t->where[strcspn(t->where, "\r\n")] = '\0';
    if (!ok || !core_hostport_valid(t->where) ||
        split_hostport(t->where, host, sizeof host, &t->port)) {
        snprintf(why, wl, "%s does not hold a HOST:PORT address", path);
        return 1;
    }
    return resolve(t, host, why, wl);
}

/* --url: http://HOST[:PORT] with nothing after but an optional "/" */
static int parse_url(cli_target *t, const char *url, const char *usage)
{
    char host[256], why[CLI_WHY_MAX];
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
    if (resolve(t, host, why, sizeof why)) {
        fprintf(stderr, "circa: %s\n", why);
        return 1;
    }
    return 0;
}

/* an admin token signed with t->data's key, as `circa token` signs one: 0, or 1 with why */
static int mint_token(const cli_target *t, long ttl, char **tok, char *why, size_t wl)
{
    core_uuid id;
    char sub[37];
    uint8_t key[32];
    store *st;
    int rc;

    if (store_open(t->data, 0, STORE_RDONLY, &st)) {
        snprintf(why, wl, "cannot open data directory %s", t->data);
        return 1;
    }
    rc = cli_read_signing_key(st, key);
    store_close(st);
    if (rc) {
        snprintf(why, wl, "%s has no signing key", t->data);
        rc = 1;
        goto fail;
    }
    if (core_uuid_v7(&id, core_now_ms())) {
        snprintf(why, wl, "cannot make a token id");
        rc = 1;
        goto fail;
    }
    core_uuid_fmt(&id, sub);
    rc = auth_sign_hs256(key, sizeof key, sub, "admin", "standard", t->issuer[0] ? t->issuer : NULL,
                         t->audience[0] ? t->audience : NULL, core_now_ms() / 1000, ttl, tok);
    if (rc < 0) {
        snprintf(why, wl, "cannot sign a token: %s", auth_strerror(rc));
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

static void authz_clear(cli_target *t)
{
    if (t->authz) {
        OPENSSL_cleanse(t->authz, strlen(t->authz));
        free(t->authz);
        t->authz = NULL;
    }
}

/* "Bearer TOK" into t: 0 or CORE_ENOMEM */
static int authz_set(cli_target *t, const char *tok)
{
    size_t n = strlen(tok) + 8;
    char *a = malloc(n);

    if (!a)
        return CORE_ENOMEM;
    snprintf(a, n, "Bearer %s", tok);
    authz_clear(t);
    t->authz = a;
    return 0;
}

/* frees a token signed here */
static void token_free(char *tok)
{
    if (tok) {
        OPENSSL_cleanse(tok, strlen(tok));
        free(tok);
    }
}

void cli_target_close(cli_target *t)
{
    authz_clear(t);
    if (t->base)
        event_base_free(t->base);
    memset(t, 0, sizeof *t);
}

int cli_target_open(const cli_conn_opts *o, const char *usage, long ttl, cli_target *t)
{
    const char *tok = o->token ? o->token : getenv("CIRCA_TOKEN");
    char *minted = NULL, path[4096], why[CLI_WHY_MAX];
    core_config cfg;
    int rc;

    memset(t, 0, sizeof *t);
    t->timeout_s = CLI_TIMEOUT_S;
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
        if ((size_t)snprintf(path, sizeof path, "%s/" ADDR_FILE, o->data) >= sizeof path)
            return cli_usage_error(usage, "--data is too long");
        t->data = o->data;
        if (addr_read(t, why, sizeof why)) {
            fprintf(stderr, "circa: %s\n", why);
            return 1;
        }
        if ((rc = cli_load_config(&cfg, o->config, 1)))
            return rc;
        memcpy(t->issuer, cfg.jwt.issuer, sizeof t->issuer);
        memcpy(t->audience, cfg.jwt.audience, sizeof t->audience);
        if (mint_token(t, ttl, &minted, why, sizeof why)) {
            fprintf(stderr, "circa: %s\n", why);
            return 1;
        }
        tok = minted;
        t->minted = 1;
    }
    rc = 1;
    if (authz_set(t, tok) || !(t->base = event_base_new())) {
        fprintf(stderr, "circa: out of memory\n");
        goto fail;
    }
    /* a node that closes while a request is written must not kill us */
    signal(SIGPIPE, SIG_IGN);
    rc = 0;
fail:
    token_free(minted);
    if (rc)
        cli_target_close(t);
    return rc;
}

int cli_target_renew(cli_target *t, long ttl, char *why, size_t whylen)
{
    char *tok = NULL;
    int rc = 1;

    if (!t->minted)
        return 0;
    if (addr_read(t, why, whylen) || mint_token(t, ttl, &tok, why, whylen))
        goto fail;
    if (authz_set(t, tok)) {
        snprintf(why, whylen, "out of memory");
        goto fail;
    }
    rc = 0;
fail:
    token_free(tok);
    return rc;
}

/* ---- requests ------------------------------------------------------------- */

/* a request with a body on its way */
typedef struct sending {
    const cli_upload *up;
    struct evbuffer *out; /* the connection's output buffer */
    uint64_t total;       /* bytes of the body */
    int added;            /* the request went into out */
} sending;

static void on_error(enum evhttp_request_error e, void *arg)
{
    cli_call *c = arg;
    c->error = (int)e + 1;
}

static void on_done(struct evhttp_request *req, void *arg)
{
    cli_call *c = arg;
    struct evbuffer *in;
    const char *ra;
    size_t n;

    c->done = 1;
    if (!req || !(c->status = evhttp_request_get_response_code(req)))
        return;
    ra = evhttp_find_header(evhttp_request_get_input_headers(req), "Retry-After");
    if (ra && strspn(ra, "0123456789") == strlen(ra) && strlen(ra) <= 6) {
        c->retry_after = atoi(ra);
        if (c->retry_after > RETRY_AFTER_MAX)
            c->retry_after = RETRY_AFTER_MAX;
    }
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

static void on_output(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg)
{
    sending *s = arg;
    if (info->n_added)
        s->added = 1;
}

/* the headers go first, so what is left of the body is at most what is left */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    sending *s = arg;
    size_t left = evbuffer_get_length(s->out);
    uint64_t body_left = left < s->total ? left : s->total;

    if (s->up->tick)
        s->up->tick(s->up->arg, s->added ? s->total - body_left : 0, s->total,
                    s->added && left == 0);
}

/* after no answer: whether the node's port refuses connections */
static int port_closed(const cli_target *t)
{
    int fd = socket(t->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), closed;
    if (fd < 0)
        return 0;
    closed = connect(fd, (const struct sockaddr *)&t->sa, t->salen) != 0 && errno == ECONNREFUSED;
    close(fd);
    return closed;
}

void cli_call_clear(cli_call *c)
{
    free(c->body);
    memset(c, 0, sizeof *c);
}

int cli_request(cli_target *t, int method, const char *path, const cli_upload *up, cli_call *c)
{
    struct evhttp_connection *conn;
    struct evhttp_request *req;
    struct evkeyvalq *h;
    struct evbuffer_cb_entry *watch = NULL;
    struct event *tick = NULL;
    const struct timeval every = {0, CLI_TICK_MS * 1000};
    sending s = {.up = up};
    int rc = CLI_ENOMEM;

    memset(c, 0, sizeof *c);
    if (!(conn = evhttp_connection_base_new(t->base, NULL, t->numeric, (ev_uint16_t)t->port)))
        return CLI_ENOMEM;
    evhttp_connection_set_timeout(conn, t->timeout_s);
    evhttp_connection_set_max_body_size(conn, MAX_BODY);
    evhttp_connection_set_max_headers_size(conn, MAX_HEADERS);
    if (!(req = evhttp_request_new(on_done, c)))
        goto fail;
    evhttp_request_set_error_cb(req, on_error);
    h = evhttp_request_get_output_headers(req);
    if (evhttp_add_header(h, "Host", t->where) || evhttp_add_header(h, "Authorization", t->authz) ||
        evhttp_add_header(h, "Accept", "application/json") ||
        evhttp_add_header(h, "Connection", "close") ||
        (up && up->content_type && evhttp_add_header(h, "Content-Type", up->content_type)) ||
        (up && evbuffer_add_buffer(evhttp_request_get_output_buffer(req), up->body))) {
        evhttp_request_free(req);
        goto fail;
    }
    if (up) {
        s.total = evbuffer_get_length(evhttp_request_get_output_buffer(req));
        s.out = bufferevent_get_output(evhttp_connection_get_bufferevent(conn));
        if (!(watch = evbuffer_add_cb(s.out, on_output, &s)) ||
            !(tick = event_new(t->base, -1, EV_PERSIST, on_tick, &s)) || event_add(tick, &every)) {
            evhttp_request_free(req);
            goto fail;
        }
    }
    if (evhttp_make_request(conn, req, (enum evhttp_cmd_type)method, path)) {
        rc = CLI_BROKEN;
        goto fail;
    }
    while (!c->done) {
        if (up && up->cancel && *up->cancel) {
            evhttp_cancel_request(req);
            rc = CLI_CANCELLED;
            goto fail;
        }
        if (event_base_loop(t->base, EVLOOP_ONCE))
            break;
    }
    /* without an error, evhttp failed to connect: refused or timed out */
    if (c->status)
        rc = 0;
    else if (c->error < 0)
        rc = CLI_ENOMEM;
    else if (c->error == EVREQ_HTTP_TIMEOUT + 1)
        rc = CLI_TIMEOUT;
    else if (c->error == EVREQ_HTTP_DATA_TOO_LONG + 1)
        rc = CLI_TOOBIG;
    else if (port_closed(t))
        rc = CLI_REFUSED;
    else
        rc = c->error ? CLI_BROKEN : CLI_TIMEOUT;
fail:
    if (tick)
        event_free(tick);
    if (watch)
        evbuffer_remove_cb_entry(s.out, watch);
    evhttp_connection_free(conn);
    if (rc)
        cli_call_clear(c);
    return rc;
}

const char *cli_no_answer_why(const cli_target *t, int rc, char *buf, size_t len)
{
    switch (rc) {
    case CLI_REFUSED:
        return "connection refused; is the node running?";
    case CLI_TIMEOUT:
        snprintf(buf, len, "no answer within %d s", t->timeout_s);
        return buf;
    case CLI_TOOBIG:
        snprintf(buf, len, "the answer is larger than %d bytes", MAX_BODY);
        return buf;
    case CLI_BROKEN:
        return "the connection failed before an answer";
    case CLI_CANCELLED:
        return "abandoned before an answer";
    default:
        return "out of memory";
    }
}

void cli_say_no_answer(const cli_target *t, const char *what, int rc)
{
    char buf[64];
    fprintf(stderr, "circa: %s on %s: %s\n", what, t->where,
            cli_no_answer_why(t, rc, buf, sizeof buf));
}

void cli_problem_text(const cli_call *c, char *buf, size_t len)
{
    json_t *p = json_loadb(c->body, c->len, 0, NULL);
    const char *title = json_string_value(json_object_get(p, "title"));
    const char *detail = json_string_value(json_object_get(p, "detail"));

    snprintf(buf, len, "HTTP %d%s%s%s%s", c->status, title ? " " : "", title ? title : "",
             detail ? ": " : "", detail ? detail : "");
    json_decref(p);
}

void cli_say_problem(const cli_target *t, const char *what, const cli_call *c)
{
    char text[CLI_WHY_MAX];

    cli_problem_text(c, text, sizeof text);
    fprintf(stderr, "circa: %s on %s: %s\n", what, t->where, text);
    if (c->status == 401 && t->minted)
        fprintf(stderr, "circa: the token was signed with the data directory's key; give the "
                        "node's --config so that jwt.issuer and jwt.audience match\n");
}

const char *cli_jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "?";
}

/* an integer member as text, "?" when it is missing */
const char *cli_jint(json_t *o, const char *key, char buf[24])
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        return "?";
    snprintf(buf, 24, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    return buf;
}

json_t *cli_answer_object(const cli_target *t, const char *what, const cli_call *c)
{
    json_t *j = json_loadb(c->body, c->len, 0, NULL);
    if (!json_is_object(j)) {
        fprintf(stderr, "circa: %s on %s: the answer is not a JSON object\n", what, t->where);
        json_decref(j);
        return NULL;
    }
    return j;
}

/* ---- output and options --------------------------------------------------- */

void cli_progress_init(cli_progress *p)
{
    memset(p, 0, sizeof *p);
    p->tty = isatty(STDOUT_FILENO);
}

void cli_progress_show(cli_progress *p, const char *fmt, ...)
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

void cli_progress_end(cli_progress *p)
{
    if (p->tty && p->shown)
        putchar('\n');
    p->shown = 0;
}

void cli_progress_clear(cli_progress *p)
{
    if (p->tty && p->shown) {
        fputs("\r\033[K", stdout);
        fflush(stdout);
    }
    p->shown = 0;
}

void cli_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

int cli_conn_opt(cli_conn_opts *o, int opt)
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
