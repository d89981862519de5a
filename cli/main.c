/*
 * main.c — the circa command: serve, token, user add, backup, migrate,
 * restore; status, promote and drain (cluster.c) and import (import.c) are
 * clients of a running node (client.c).
 *
 * `serve` composes the modules: configuration (defaults < JSON file <
 * CIRCA_* environment < flags), the LMDB store, the write-behind flusher,
 * the raft actor, then the HTTP actors. Signals are blocked in every thread and taken by the main
 * thread with sigwait(), so shutdown runs in one ordinary place: mark the
 * node draining (new writes get 503), close listeners, wait for in-flight
 * writes, stop the HTTP actors, stop the raft actor (which applies and answers
 * what it already took), let the flusher send what is durable (a few
 * seconds at most), free the HTTP actors, close LMDB.
 */
#include "cli/cli.h"
#include "core/core.h"
#include "net/auth.h"
#include "net/net.h"
#include "persist/store.h"
#include "persist/wb.h"
#include "replication/repl.h"

#include <getopt.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DRAIN_TIMEOUT_S 30

static const char usage_main[] =
    "usage: circa COMMAND [OPTIONS]\n"
    "\n"
    "circa is a library user and checkout service.\n"
    "\n"
    "commands:\n"
    "  serve      run a node (the embedded default: 127.0.0.1:8080, ./data)\n"
    "  token      print a signed access token for an operator or a test\n"
    "  user add   create a user directly in a data directory (e.g. the first admin)\n"
    "  backup     write a hot, compacted copy of a node's data\n"
    "  migrate    create or upgrade the PostgreSQL schema (serve also does this)\n"
    "  restore    rebuild an empty data directory from PostgreSQL\n"
    "  status     show the cluster as a running node sees it\n"
    "  promote    make a node (a caught-up standby) a voter\n"
    "  drain      take a running node out of the cluster and stop it\n"
    "  import     import catalog files, or the files dropped into a folder\n"
    "\n"
    "`circa COMMAND --help` describes each command. `circa --version` prints the version.\n";

static const char usage_serve[] =
    "usage: circa serve [--listen HOST:PORT] [--data DIR] [--config FILE] [--threads N]\n"
    "                   [--pg DSN] [--peer HOST:PORT] [--join HOST:PORT,...]\n"
    "\n"
    "Runs a node. With no options it listens on 127.0.0.1:8080 with data in ./data,\n"
    "and a new data directory bootstraps a one-node cluster with a generated key.\n"
    "With --join a new data directory instead asks a running member to add this\n"
    "node as a standby; it reports ready once it caught up (`circa promote` makes\n"
    "it a voter). A data directory that is already a member ignores --join.\n"
    "\n"
    "  --listen HOST:PORT  address to serve HTTP on          (CIRCA_LISTEN)\n"
    "  --data DIR          LMDB data directory               (CIRCA_DATA)\n"
    "  --config FILE       JSON configuration file           (CIRCA_CONFIG)\n"
    "  --threads N         HTTP actor threads, default cores (CIRCA_THREADS)\n"
    "  --pg DSN            PostgreSQL connection string; turns write-behind on\n"
    "                      (CIRCA_PG_DSN, pg.dsn; TLS: pg.sslmode, pg.sslrootcert)\n"
    "  --peer HOST:PORT    where other nodes reach this one: raft messages on PORT,\n"
    "                      requests on PORT+1, default 127.0.0.1:7080 (CIRCA_PEER,\n"
    "                      raft.peer; mutual TLS: raft.tls_ca, raft.tls_cert,\n"
    "                      raft.tls_key or CIRCA_PEER_TLS_CA/_CERT/_KEY)\n"
    "  --join ADDRS        comma-separated peer addresses of running members\n"
    "                      (CIRCA_JOIN, raft.join)\n"
    "  --fault-injection   tests only: PUT /v1/cluster/fault may cut this node off\n"
    "\n"
    "With a DSN every applied command is also written to PostgreSQL, the system of\n"
    "record, in the background; if PostgreSQL lags by pg.high_water commands\n"
    "(default 1000000) writes answer 503 until it catches up. Reads never use it.\n"
    "\n"
    "Precedence: flags > environment > config file > defaults. Logs are JSON lines\n"
    "on stderr. SIGTERM or SIGINT finish in-flight requests, then exit 0.\n";

static const char usage_token[] =
    "usage: circa token --data DIR --sub ID --role ROLE [--plan PLAN] [--ttl SECONDS]\n"
    "\n"
    "Prints an HS256 token signed with the key in DIR (the cluster's signing key).\n"
    "  --sub ID        subject: a user id (UUID)\n"
    "  --role ROLE     member, librarian, admin or service\n"
    "  --plan PLAN     standard or premium (default standard)\n"
    "  --ttl SECONDS   lifetime, default 3600\n"
    "  --config FILE   read jwt.issuer and jwt.audience from this config\n";

static const char usage_user[] =
    "usage: circa user add --data DIR --email EMAIL --role ROLE [--name NAME] [--plan PLAN]\n"
    "                      [--password-stdin] [--config FILE]\n"
    "\n"
    "Creates a user in DIR and prints it as JSON: the first admin of a new cluster,\n"
    "before its first node starts (the cluster then starts from that state, and nodes\n"
    "that join later receive it). Once a node has run on DIR, create users through\n"
    "the API instead (POST /v1/auth/register, then PATCH /v1/users/{id} with an\n"
    "admin token from `circa token`): a write outside the replicated log would\n"
    "reach no other node.\n"
    "Without --password-stdin a random password is generated and printed on stderr.\n";

static const char usage_backup[] =
    "usage: circa backup [--data DIR] DEST_DIR\n"
    "\n"
    "Writes a consistent, compacted copy of DIR (default ./data) to DEST_DIR/data.mdb\n"
    "while the node keeps serving. Start a node on DEST_DIR to restore.\n";

static const char usage_migrate[] =
    "usage: circa migrate [--pg DSN] [--config FILE]\n"
    "\n"
    "Applies the schema migrations PostgreSQL does not have yet, each once and in its\n"
    "own transaction, recorded in circa_migrations. The DSN comes from --pg,\n"
    "CIRCA_PG_DSN or pg.dsn in the config file.\n";

static const char usage_restore[] =
    "usage: circa restore --from-postgres DSN [--data DIR] [--config FILE]\n"
    "\n"
    "Disaster recovery when every node is lost: replays the commands PostgreSQL holds\n"
    "(its `commands` table, up to the flush cursor) into DIR (default ./data), which\n"
    "must be empty, then checks every row of PostgreSQL's tables against the rebuilt\n"
    "state. Start a node on DIR afterwards; it continues the same log.\n";

int cli_usage_error(const char *usage, const char *msg)
{
    if (msg)
        fprintf(stderr, "circa: %s\n\n", msg);
    fputs(usage, stderr);
    return 2;
}

int cli_load_config(core_config *cfg, const char *file, int use_env)
{
    char err[512];
    const char *f = file ? file : (use_env ? getenv("CIRCA_CONFIG") : NULL);
    core_config_default(cfg);
    if (f && *f && core_config_load_file(cfg, f, err, sizeof err)) {
        fprintf(stderr, "circa: %s\n", err);
        return 2;
    }
    if (use_env && core_config_load_env(cfg, err, sizeof err)) {
        fprintf(stderr, "circa: %s\n", err);
        return 2;
    }
    return 0;
}

static int set_dsn(core_config *cfg, const char *dsn)
{
    if (strlen(dsn) >= sizeof cfg->pg.dsn)
        return CORE_ERANGE;
    snprintf(cfg->pg.dsn, sizeof cfg->pg.dsn, "%s", dsn);
    return 0;
}

/* the DSN flag over the loaded configuration, then the check: 0 or an exit code */
static int finish_config(core_config *cfg, const char *dsn, const char *usage, const char *flag)
{
    char err[512];
    if (dsn && set_dsn(cfg, dsn)) {
        snprintf(err, sizeof err, "%s is too long", flag);
        return cli_usage_error(usage, err);
    }
    if (core_config_check(cfg, err, sizeof err)) {
        fprintf(stderr, "circa: %s\n", err);
        return 2;
    }
    if (cfg->pg.dsn[0] && !wb_dsn_valid(cfg->pg.dsn)) {
        fprintf(stderr, "circa: the PostgreSQL DSN is not a valid libpq connection string "
                        "(key=value pairs or a postgresql:// URI)\n");
        return 2;
    }
    return 0;
}

static int cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", 1, 0, 'l'}, {"data", 1, 0, 'd'},
                                         {"config", 1, 0, 'c'}, {"threads", 1, 0, 't'},
                                         {"pg", 1, 0, 'p'},     {"peer", 1, 0, 'P'},
                                         {"join", 1, 0, 'j'},   {"fault-injection", 0, 0, 'F'},
                                         {"help", 0, 0, 'h'},   {0, 0, 0, 0}};
    const char *listen = NULL, *data = NULL, *config = NULL, *threads = NULL, *pg = NULL;
    const char *peer = NULL, *join = NULL;
    int fault = 0;
    core_config cfg;
    char err[512];
    store *st = NULL;
    wb *w = NULL;
    repl *rp = NULL;
    http_server *hs = NULL;
    sigset_t sigs;
    int o, sig, rc;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'l':
            listen = optarg;
            break;
        case 'd':
            data = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case 't':
            threads = optarg;
            break;
        case 'p':
            pg = optarg;
            break;
        case 'P':
            peer = optarg;
            break;
        case 'j':
            join = optarg;
            break;
        case 'F':
            fault = 1;
            break;
        case 'h':
            fputs(usage_serve, stdout);
            return 0;
        default:
            return cli_usage_error(usage_serve, NULL);
        }
    }
    if (optind < argc)
        return cli_usage_error(usage_serve, "unexpected argument");
    if ((rc = cli_load_config(&cfg, config, 1)))
        return rc;
    if (listen)
        snprintf(cfg.listen, sizeof cfg.listen, "%s", listen);
    if (data)
        snprintf(cfg.data, sizeof cfg.data, "%s", data);
    if (threads) {
        char *end;
        long n = strtol(threads, &end, 10);
        if (*end || n < 1 || n > 256)
            return cli_usage_error(usage_serve, "--threads must be a number from 1 to 256");
        cfg.threads = (int)n;
    }
    if (peer && strlen(peer) >= sizeof cfg.raft.peer)
        return cli_usage_error(usage_serve, "--peer is too long");
    if (peer)
        snprintf(cfg.raft.peer, sizeof cfg.raft.peer, "%s", peer);
    if (join && strlen(join) >= sizeof cfg.raft.join)
        return cli_usage_error(usage_serve, "--join is too long");
    if (join)
        snprintf(cfg.raft.join, sizeof cfg.raft.join, "%s", join);
    cfg.raft.fault_injection = fault;
    if ((rc = finish_config(&cfg, pg, usage_serve, "--pg")))
        return rc;
    core_log_set_level(cfg.log_level);

    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    if (store_open(cfg.data, cfg.map_size_mb << 20, cfg.fsync ? 0 : STORE_NOSYNC, &st)) {
        core_log(LOG_ERROR, "cannot open the data directory", NULL);
        return 1;
    }
    if ((rc = wb_start(st, &cfg, &w))) {
        core_log(LOG_ERROR, "cannot start write-behind", "\"rc\":%d", rc);
        store_close(st);
        return 1;
    }
    if ((rc = repl_start(st, &cfg, w, &rp))) {
        core_log(LOG_ERROR, "cannot start the writer", "\"rc\":%d", rc);
        wb_stop(w);
        store_close(st);
        return 1;
    }
    /* tokens need the cluster's signing key: a new cluster's first leader
     * makes it, a joining node receives it with the state */
    for (int64_t said = 0;;) {
        store_txn t;
        uint8_t key[32];
        struct timespec ts = {0, 50 * 1000 * 1000};
        int have = 0;
        if (store_begin(st, 0, &t) == 0) {
            have = store_signing_key(&t, key) == 0;
            store_abort(&t);
        }
        OPENSSL_cleanse(key, sizeof key);
        if (have)
            break;
        if (!said && (said = 1))
            core_log(LOG_INFO, "waiting for the cluster's state (signing key)", NULL);
        sig = sigtimedwait(&sigs, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            core_log(LOG_INFO, "stopping before serving", "\"signal\":%d", sig);
            repl_stop(rp);
            wb_stop(w);
            store_close(st);
            return 0;
        }
    }
    /* the address file goes first: once /readyz answers, `circa status --data`
     * must find the node */
    int addr_file = cli_addr_write(cfg.data, cfg.listen) == 0;
    if (http_start(&cfg, st, rp, w, &hs, err, sizeof err)) {
        char e[600];
        core_json_escape(err, e, sizeof e);
        core_log(LOG_ERROR, "cannot start HTTP", "\"error\":\"%s\"", e);
        if (addr_file)
            cli_addr_remove(cfg.data);
        repl_stop(rp);
        wb_stop(w);
        store_close(st);
        return 1;
    }
    {
        char l[300], d[1100];
        core_json_escape(cfg.listen, l, sizeof l);
        core_json_escape(cfg.data, d, sizeof d);
        core_log(LOG_INFO, "serving",
                 "\"listen\":\"%s\",\"data\":\"%s\",\"threads\":%d,\"fsync\":%s", l, d, cfg.threads,
                 cfg.fsync ? "true" : "false");
        if (!addr_file)
            core_log(LOG_WARN, "cannot write the address file circa.addr", "\"data\":\"%s\"", d);
    }
    do {
        if (sigwait(&sigs, &sig))
            sig = SIGTERM;
    } while (sig == SIGPIPE);
    core_log(LOG_INFO, "stopping: finishing in-flight requests", "\"signal\":%d", sig);
    http_drain(hs);
    int64_t deadline = core_mono_ns() + (int64_t)DRAIN_TIMEOUT_S * 1000000000;
    while (http_inflight(hs) > 0 && core_mono_ns() < deadline)
        usleep(5000);
    if (http_inflight(hs) > 0)
        core_log(LOG_WARN, "stopping with requests still waiting on the writer", "\"inflight\":%ld",
                 http_inflight(hs));
    http_stop(hs);
    repl_stop(rp);
    wb_stop(w);
    http_free(hs);
    store_close(st);
    cli_addr_remove(cfg.data);
    core_log(LOG_INFO, "stopped", NULL);
    return 0;
}

int cli_read_signing_key(store *st, uint8_t key[32])
{
    store_txn t;
    int rc;
    if (store_begin(st, 0, &t))
        return -1;
    rc = store_signing_key(&t, key);
    store_abort(&t);
    return rc;
}

static int cmd_token(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", 1, 0, 'd'}, {"sub", 1, 0, 's'},    {"role", 1, 0, 'r'}, {"plan", 1, 0, 'p'},
        {"ttl", 1, 0, 't'},  {"config", 1, 0, 'c'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    const char *data = NULL, *sub = NULL, *role = NULL, *plan = "standard", *config = NULL;
    long ttl = 3600;
    core_config cfg;
    core_uuid id;
    uint8_t key[32];
    store *st;
    char *tok = NULL;
    int o, rc;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'd':
            data = optarg;
            break;
        case 's':
            sub = optarg;
            break;
        case 'r':
            role = optarg;
            break;
        case 'p':
            plan = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case 't': {
            char *end;
            ttl = strtol(optarg, &end, 10);
            if (*end || ttl < 1 || ttl > 366L * 86400)
                return cli_usage_error(usage_token, "--ttl must be 1 to 31622400 seconds");
            break;
        }
        case 'h':
            fputs(usage_token, stdout);
            return 0;
        default:
            return cli_usage_error(usage_token, NULL);
        }
    }
    if (!data || !sub || !role)
        return cli_usage_error(usage_token, "--data, --sub and --role are required");
    if (core_uuid_parse(sub, strlen(sub), &id))
        return cli_usage_error(usage_token, "--sub must be a UUID");
    if (core_role_parse(role) < 0)
        return cli_usage_error(usage_token, "--role must be member, librarian, admin or service");
    if (core_plan_parse(plan) < 0)
        return cli_usage_error(usage_token, "--plan must be standard or premium");
    if ((rc = cli_load_config(&cfg, config, 0)))
        return rc;
    if (store_open(data, 0, STORE_RDONLY, &st) || cli_read_signing_key(st, key)) {
        fprintf(stderr, "circa: %s has no signing key: start a node on it once first\n", data);
        return 1;
    }
    store_close(st);
    rc = auth_sign_hs256(key, 32, sub, role, plan, cfg.jwt.issuer[0] ? cfg.jwt.issuer : NULL,
                         cfg.jwt.audience[0] ? cfg.jwt.audience : NULL, core_now_ms() / 1000, ttl,
                         &tok);
    OPENSSL_cleanse(key, sizeof key);
    if (rc < 0) {
        fprintf(stderr, "circa: cannot sign: %s\n", auth_strerror(rc));
        return 1;
    }
    printf("%s\n", tok);
    free(tok);
    return 0;
}

static int read_password_stdin(char *buf, size_t len)
{
    if (!fgets(buf, (int)len, stdin))
        return -1;
    buf[strcspn(buf, "\r\n")] = '\0';
    return 0;
}

static int cmd_user(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", 1, 0, 'd'}, {"email", 1, 0, 'e'},          {"role", 1, 0, 'r'},
        {"name", 1, 0, 'n'}, {"plan", 1, 0, 'p'},           {"config", 1, 0, 'c'},
        {"help", 0, 0, 'h'}, {"password-stdin", 0, 0, 'P'}, {0, 0, 0, 0}};
    const char *data = NULL, *email = NULL, *role = NULL, *name = NULL, *plan = "standard",
               *config = NULL;
    int pw_stdin = 0, o, rc, generated = 0;
    char pw[256];
    core_config cfg;
    store *st;
    apply_result res;
    cmd c = {.type = CMD_USER_CREATE, .actor_role = ROLE_ADMIN};

    if (argc < 2 || strcmp(argv[1], "add") != 0) {
        if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
            fputs(usage_user, stdout);
            return 0;
        }
        return cli_usage_error(usage_user, "the only user command is `add`");
    }
    argc--;
    argv++;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'd':
            data = optarg;
            break;
        case 'e':
            email = optarg;
            break;
        case 'r':
            role = optarg;
            break;
        case 'n':
            name = optarg;
            break;
        case 'p':
            plan = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case 'P':
            pw_stdin = 1;
            break;
        case 'h':
            fputs(usage_user, stdout);
            return 0;
        default:
            return cli_usage_error(usage_user, NULL);
        }
    }
    if (!data || !email || !role)
        return cli_usage_error(usage_user, "--data, --email and --role are required");
    if (!strchr(email, '@') || strlen(email) > CORE_MAX_EMAIL)
        return cli_usage_error(usage_user, "--email must look like name@domain");
    if (core_role_parse(role) < 0 || core_role_parse(role) == ROLE_SERVICE)
        return cli_usage_error(usage_user, "--role must be member, librarian or admin");
    if (core_plan_parse(plan) < 0)
        return cli_usage_error(usage_user, "--plan must be standard or premium");
    if (!name)
        name = email;
    if (strlen(name) > CORE_MAX_NAME)
        return cli_usage_error(usage_user, "--name is too long");
    if ((rc = cli_load_config(&cfg, config, 0)))
        return rc;
    if (pw_stdin) {
        if (read_password_stdin(pw, sizeof pw) || strlen(pw) < 8 || strlen(pw) > 128) {
            fprintf(stderr, "circa: the password on stdin must be 8 to 128 characters\n");
            return 2;
        }
    } else {
        uint8_t r[18];
        static const char alphabet[] = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        if (auth_random(r, sizeof r))
            return 1;
        for (size_t i = 0; i < sizeof r; i++)
            pw[i] = alphabet[r[i] % (sizeof alphabet - 1)];
        pw[sizeof r] = '\0';
        generated = 1;
    }
    c.ts_ms = core_now_ms();
    c.u.user_create.email.p = email;
    c.u.user_create.email.len = (uint32_t)strlen(email);
    c.u.user_create.name.p = name;
    c.u.user_create.name.len = (uint32_t)strlen(name);
    c.u.user_create.role = (uint8_t)core_role_parse(role);
    c.u.user_create.plan = (uint8_t)core_plan_parse(plan);
    c.u.user_create.iterations = cfg.password_iterations;
    if (core_uuid_v7(&c.u.user_create.id, c.ts_ms) || auth_random(c.u.user_create.salt, 16) ||
        auth_password_hash(pw, strlen(pw), c.u.user_create.salt, cfg.password_iterations,
                           c.u.user_create.hash))
        return 1;
    if (store_open(data, cfg.map_size_mb << 20, 0, &st)) {
        fprintf(stderr, "circa: cannot open data directory %s\n", data);
        return 1;
    }
    if (repl_has_log(st)) {
        store_close(st);
        fprintf(stderr,
                "circa: a node has already run on %s: its state is replicated, so create users "
                "through the API (POST /v1/auth/register, then PATCH /v1/users/{id} with an "
                "admin token from `circa token --data %s --role admin ...`)\n",
                data, data);
        return 1;
    }
    /* a new directory gets its cluster state the same way a node would */
    rc = repl_prepare(st, &cfg);
    if (rc == 0)
        rc = repl_apply_local(st, &c, &res);
    store_close(st);
    if (rc) {
        fprintf(stderr, "circa: cannot write to %s\n", data);
        return 1;
    }
    if (res.status != 201) {
        fprintf(stderr, "circa: %.*s\n", (int)res.body_len, res.body ? res.body : "");
        apply_result_clear(&res);
        return 1;
    }
    printf("%.*s\n", (int)res.body_len, res.body);
    if (generated)
        fprintf(stderr, "password: %s\n", pw);
    OPENSSL_cleanse(pw, sizeof pw);
    apply_result_clear(&res);
    return 0;
}

static int cmd_backup(int argc, char **argv)
{
    static const struct option opts[] = {{"data", 1, 0, 'd'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    const char *data = "./data";
    store *st;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'd':
            data = optarg;
            break;
        case 'h':
            fputs(usage_backup, stdout);
            return 0;
        default:
            return cli_usage_error(usage_backup, NULL);
        }
    }
    if (optind != argc - 1)
        return cli_usage_error(usage_backup, "name one destination directory");
    if (store_open(data, 0, STORE_RDONLY, &st)) {
        fprintf(stderr, "circa: cannot open data directory %s\n", data);
        return 1;
    }
    if (store_backup(st, argv[optind])) {
        store_close(st);
        fprintf(stderr, "circa: cannot write the backup to %s (it must be empty or new)\n",
                argv[optind]);
        return 1;
    }
    store_close(st);
    fprintf(stderr, "backup written to %s/data.mdb\n", argv[optind]);
    return 0;
}

static int cmd_migrate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"pg", 1, 0, 'p'}, {"config", 1, 0, 'c'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    const char *pg = NULL, *config = NULL;
    core_config cfg;
    char err[512];
    int o, rc;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'p':
            pg = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case 'h':
            fputs(usage_migrate, stdout);
            return 0;
        default:
            return cli_usage_error(usage_migrate, NULL);
        }
    }
    if (optind < argc)
        return cli_usage_error(usage_migrate, "unexpected argument");
    if ((rc = cli_load_config(&cfg, config, 1)))
        return rc;
    if ((rc = finish_config(&cfg, pg, usage_migrate, "--pg")))
        return rc;
    if (!cfg.pg.dsn[0])
        return cli_usage_error(usage_migrate, "no PostgreSQL DSN: give --pg or set CIRCA_PG_DSN");
    core_log_set_level(LOG_WARN);
    if (wb_migrate(&cfg, stdout, err, sizeof err)) {
        fprintf(stderr, "circa: migrate failed: %s\n", err);
        return 1;
    }
    printf("schema is current (%d migrations)\n", wb_nmigrations);
    return 0;
}

static int restore_apply(void *arg, store_txn *t, uint64_t index, const uint8_t *enc, size_t len)
{
    return repl_restore_apply(t, index, enc, len);
}

static int cmd_restore(int argc, char **argv)
{
    static const struct option opts[] = {{"from-postgres", 1, 0, 'p'},
                                         {"data", 1, 0, 'd'},
                                         {"config", 1, 0, 'c'},
                                         {"help", 0, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *pg = NULL, *data = NULL, *config = NULL;
    core_config cfg;
    char err[512];
    store *st;
    int o, rc;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'p':
            pg = optarg;
            break;
        case 'd':
            data = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case 'h':
            fputs(usage_restore, stdout);
            return 0;
        default:
            return cli_usage_error(usage_restore, NULL);
        }
    }
    if (optind < argc)
        return cli_usage_error(usage_restore, "unexpected argument");
    if (!pg)
        return cli_usage_error(usage_restore, "--from-postgres DSN is required");
    if ((rc = cli_load_config(&cfg, config, 1)))
        return rc;
    if (data)
        snprintf(cfg.data, sizeof cfg.data, "%s", data);
    if ((rc = finish_config(&cfg, pg, usage_restore, "--from-postgres")))
        return rc;
    core_log_set_level(LOG_WARN);
    if (store_open(cfg.data, cfg.map_size_mb << 20, 0, &st)) {
        fprintf(stderr, "circa: cannot open data directory %s\n", cfg.data);
        return 1;
    }
    rc = wb_restore(&cfg, st, restore_apply, NULL, stderr, err, sizeof err);
    store_close(st);
    if (rc) {
        fprintf(stderr, "circa: restore failed: %s\n", err);
        return 1;
    }
    fprintf(stderr, "restored into %s; start a node on it\n", cfg.data);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error(usage_main, "a command is required");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage_main, stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("circa %s\n", CIRCA_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "serve") == 0)
        return cmd_serve(argc - 1, argv + 1);
    if (strcmp(argv[1], "token") == 0)
        return cmd_token(argc - 1, argv + 1);
    if (strcmp(argv[1], "user") == 0)
        return cmd_user(argc - 1, argv + 1);
    if (strcmp(argv[1], "backup") == 0)
        return cmd_backup(argc - 1, argv + 1);
    if (strcmp(argv[1], "migrate") == 0)
        return cmd_migrate(argc - 1, argv + 1);
    if (strcmp(argv[1], "restore") == 0)
        return cmd_restore(argc - 1, argv + 1);
    if (strcmp(argv[1], "status") == 0)
        return cmd_status(argc - 1, argv + 1);
    if (strcmp(argv[1], "promote") == 0)
        return cmd_promote(argc - 1, argv + 1);
    if (strcmp(argv[1], "drain") == 0)
        return cmd_drain(argc - 1, argv + 1);
    if (strcmp(argv[1], "import") == 0)
        return cmd_import(argc - 1, argv + 1);
    return cli_usage_error(usage_main, "unknown command");
}
