/*
 * cluster.c — `circa status`, `circa promote` and `circa drain`: the
 * operator's client of a running node's cluster admin API (/v1/cluster),
 * through the shared client of client.c (--data or --url, a request per
 * step, 5 s at most each).
 *
 * status prints one node's view of the cluster; promote retries while the
 * cluster has no leader; drain starts the node's drain and then polls it
 * until its port refuses connections, which is the node having exited.
 * Failures print the answer's problem detail; the token is never printed.
 */
#include "cli/cli.h"

#include <event2/http.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROMOTE_RETRY_S   30
#define PROMOTE_PAUSE_MS  500
#define DRAIN_POLL_MS     200
#define DRAIN_TIMEOUT_S   120
#define DRAIN_TIMEOUT_MAX 86400

static const char usage_status[] =
    "usage: circa status --data DIR [--config FILE] [--json]\n"
    "       circa status --url http://HOST:PORT [--token TOKEN] [--json]\n"
    "\n"
    "Prints the cluster as one node sees it: its id, peer address, state, role, term,\n"
    "commit and applied index and readiness, the leader, and a line per node. A\n"
    "leader also lists each node's match index and lag.\n"
    "\n" CLI_CONN_HELP "  --json             print the node's JSON answer as it is\n"
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
    "\n" CLI_CONN_HELP "\n"
    "Exit status: 0 promoted, 1 failed, 2 usage error.\n";

static const char usage_drain[] =
    "usage: circa drain --data DIR [--config FILE] [--timeout SECONDS]\n"
    "       circa drain --url http://HOST:PORT [--token TOKEN] [--timeout SECONDS]\n"
    "\n"
    "Takes the node out of the cluster and stops it: a leader first hands leadership\n"
    "to another voter, then the node leaves the configuration and exits. Progress\n"
    "is shown until the node stops answering. The last voter cannot be drained.\n"
    "\n" CLI_CONN_HELP "  --timeout SECONDS  how long to wait for the node to stop, default 120\n"
    "\n"
    "Exit status: 0 the node stopped, 1 failed or still running after SECONDS,\n"
    "2 usage error.\n";

/* ---- output --------------------------------------------------------------- */

static void print_status(json_t *st, const cli_target *t)
{
    json_t *leader = json_object_get(st, "leader"), *nodes = json_object_get(st, "nodes"), *n;
    const char *self = cli_jstr(st, "id"),
               *lid = json_is_object(leader) ? cli_jstr(leader, "id") : NULL;
    const char *drain = json_string_value(json_object_get(st, "drain"));
    json_t *ins = json_object_get(st, "install");
    char a[24], b[24], c[24], line[600];
    int idw = 2, addrw = 4, lag = 0;
    size_t i;

    printf("node     %s  peer %s  http %s\n", self, cli_jstr(st, "address"), t->where);
    printf("state    %s, role %s, term %s\n", cli_jstr(st, "state"), cli_jstr(st, "role"),
           cli_jint(st, "term", a));
    printf("indexes  commit %s, applied %s, last %s\n", cli_jint(st, "commit_index", a),
           cli_jint(st, "applied_index", b), cli_jint(st, "last_index", c));
    printf("ready    %s\n", json_is_true(json_object_get(st, "ready")) ? "yes" : "no");
    if (lid)
        printf("leader   %s  peer %s%s\n", lid, cli_jstr(leader, "address"),
               strcmp(lid, self) == 0 ? "  (this node)" : "");
    else
        printf("leader   none known\n");
    if (drain)
        printf("drain    %s\n", drain);
    if (json_is_object(ins))
        printf("install  snapshot %s from %s: %s rows, %s bytes so far\n",
               cli_jint(ins, "index", a), cli_jstr(ins, "source"), cli_jint(ins, "rows", b),
               cli_jint(ins, "bytes", c));
    if (!json_is_array(nodes) || json_array_size(nodes) == 0)
        return;
    json_array_foreach (nodes, i, n) {
        int w = (int)strlen(cli_jstr(n, "id")), aw = (int)strlen(cli_jstr(n, "address"));
        idw = w > idw ? (w > 64 ? 64 : w) : idw;
        addrw = aw > addrw ? (aw > 256 ? 256 : aw) : addrw;
        lag |= json_object_get(n, "match_index") != NULL;
    }
    printf("\n%-*s  %-*s  %-7s%s\n", idw, "ID", addrw, "PEER", "ROLE",
           lag ? "  MATCH INDEX        LAG" : "");
    json_array_foreach (nodes, i, n) {
        const char *id = cli_jstr(n, "id");
        int is_leader = lid && strcmp(id, lid) == 0, is_self = strcmp(id, self) == 0;
        int k = snprintf(line, sizeof line, "%-*s  %-*s  %-7s", idw, id, addrw,
                         cli_jstr(n, "address"), cli_jstr(n, "role"));
        if (lag && k > 0 && (size_t)k < sizeof line)
            k += snprintf(line + k, sizeof line - (size_t)k, "  %11s  %9s",
                          cli_jint(n, "match_index", a), cli_jint(n, "lag", b));
        if (k > 0 && (size_t)k < sizeof line)
            snprintf(line + k, sizeof line - (size_t)k, "  %s%s%s", is_leader ? "leader" : "",
                     is_leader && is_self ? ", " : "", is_self ? "this node" : "");
        for (k = (int)strlen(line); k > 0 && line[k - 1] == ' '; k--)
            line[k - 1] = '\0';
        puts(line);
    }
}

/* ---- commands ------------------------------------------------------------- */

int cmd_status(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", 1, 0, 'd'}, {"url", 1, 0, 'u'},  {"token", 1, 0, 'T'}, {"config", 1, 0, 'c'},
        {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    static const char what[] = "GET /v1/cluster";
    cli_conn_opts co = {0};
    cli_target t;
    cli_call c;
    json_t *st = NULL;
    int o, json = 0, rc;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (cli_conn_opt(&co, o))
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
    if ((rc = cli_target_open(&co, usage_status, CLI_TOKEN_TTL_S, &t)))
        return rc;
    rc = 1;
    if ((o = cli_request(&t, EVHTTP_REQ_GET, "/v1/cluster", NULL, &c))) {
        cli_say_no_answer(&t, what, o);
        goto fail;
    }
    if (c.status != 200) {
        cli_say_problem(&t, what, &c);
        goto fail;
    }
    if (!(st = cli_answer_object(&t, what, &c)))
        goto fail;
    if (json)
        printf("%s%s", c.body, c.len && c.body[c.len - 1] == '\n' ? "" : "\n");
    else
        print_status(st, &t);
    rc = 0;
fail:
    json_decref(st);
    cli_call_clear(&c);
    cli_target_close(&t);
    return rc;
}

int cmd_promote(int argc, char **argv)
{
    static const struct option opts[] = {{"data", 1, 0, 'd'},  {"url", 1, 0, 'u'},
                                         {"token", 1, 0, 'T'}, {"config", 1, 0, 'c'},
                                         {"help", 0, 0, 'h'},  {0, 0, 0, 0}};
    cli_conn_opts co = {0};
    const char *id;
    char path[64], what[80];
    cli_progress p;
    cli_target t;
    cli_call c;
    json_t *res = NULL;
    int64_t deadline;
    int o, rc;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (cli_conn_opt(&co, o))
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
    if ((rc = cli_target_open(&co, usage_promote, CLI_TOKEN_TTL_S, &t)))
        return rc;
    rc = 1;
    cli_progress_init(&p);
    deadline = core_mono_ns() + (int64_t)PROMOTE_RETRY_S * 1000000000;
    for (;;) {
        json_t *prob;
        const char *detail;
        if ((o = cli_request(&t, EVHTTP_REQ_POST, path, NULL, &c))) {
            cli_progress_end(&p);
            cli_say_no_answer(&t, what, o);
            if (o == CLI_TIMEOUT)
                fprintf(stderr, "circa: the promotion may still complete; see `circa status`\n");
            goto fail;
        }
        if (c.status != 503 || core_mono_ns() >= deadline)
            break;
        prob = json_loadb(c.body, c.len, 0, NULL);
        detail = json_string_value(json_object_get(prob, "detail"));
        cli_progress_show(&p, "no leader right now (%s); retrying for up to %d s",
                          detail ? detail : "HTTP 503", PROMOTE_RETRY_S);
        json_decref(prob);
        cli_call_clear(&c);
        cli_sleep_ms(PROMOTE_PAUSE_MS);
    }
    cli_progress_end(&p);
    if (c.status != 200) {
        cli_say_problem(&t, what, &c);
        goto fail;
    }
    if (!(res = cli_answer_object(&t, what, &c)))
        goto fail;
    printf("node %s is now a %s\n",
           json_is_string(json_object_get(res, "id")) ? cli_jstr(res, "id") : id,
           cli_jstr(res, "role"));
    rc = 0;
fail:
    json_decref(res);
    cli_call_clear(&c);
    cli_target_close(&t);
    return rc;
}

/* the drain step an answer names: "none" when null, "?" when absent */
static void drain_state(const cli_call *c, char *out, size_t outlen)
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
    cli_conn_opts co = {0};
    long timeout = DRAIN_TIMEOUT_S;
    char state[64], now[64], why[96] = "";
    cli_progress p;
    cli_target t;
    cli_call c;
    int64_t deadline;
    int o, rc;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (cli_conn_opt(&co, o))
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
    if ((rc = cli_target_open(&co, usage_drain, CLI_TOKEN_TTL_S + timeout, &t)))
        return rc;
    rc = 1;
    if ((o = cli_request(&t, EVHTTP_REQ_POST, "/v1/cluster/drain", NULL, &c))) {
        cli_say_no_answer(&t, what, o);
        goto fail;
    }
    if (c.status != 202) {
        cli_say_problem(&t, what, &c);
        goto fail;
    }
    drain_state(&c, state, sizeof state);
    cli_call_clear(&c);
    cli_progress_init(&p);
    cli_progress_show(&p, "drain: %s",
                      strcmp(state, "none") && strcmp(state, "?") ? state : "started");
    deadline = core_mono_ns() + (int64_t)timeout * 1000000000;
    while (core_mono_ns() < deadline) {
        cli_sleep_ms(DRAIN_POLL_MS);
        o = cli_request(&t, EVHTTP_REQ_GET, "/v1/cluster", NULL, &c);
        if (o == CLI_REFUSED) {
            cli_progress_end(&p);
            printf("the node at %s stopped\n", t.where);
            rc = 0;
            goto fail;
        }
        if (o == 0 && c.status == 200) {
            drain_state(&c, now, sizeof now);
            if (strcmp(now, state)) {
                memcpy(state, now, sizeof state);
                cli_progress_show(&p, "drain: %s", state);
            }
            why[0] = '\0';
        } else if (o == 0) {
            snprintf(why, sizeof why, "; it last answered HTTP %d", c.status);
        } else {
            snprintf(why, sizeof why, "; it last gave no answer");
        }
        cli_call_clear(&c);
    }
    cli_progress_end(&p);
    fprintf(stderr, "circa: the node at %s still answers after %ld s (drain: %s%s)\n", t.where,
            timeout, state, why);
fail:
    cli_call_clear(&c);
    cli_target_close(&t);
    return rc;
}
