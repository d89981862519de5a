/* Unit tests for core/config.c: defaults, the strict JSON file, CIRCA_* environment overrides and
 * core_config_check. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"

static char g_path[64];

static void cleanup(void)
{
    if (g_path[0])
        unlink(g_path);
    g_path[0] = '\0';
    unsetenv("CIRCA_LISTEN");
    unsetenv("CIRCA_DATA");
    unsetenv("CIRCA_THREADS");
    unsetenv("CIRCA_LOG_LEVEL");
    unsetenv("CIRCA_PG_DSN");
}

TestSuite(config, .init = cleanup, .fini = cleanup);

static const char *write_cfg(const char *text)
{
    if (g_path[0])
        unlink(g_path);
    snprintf(g_path, sizeof g_path, "/tmp/circa-config-XXXXXX");
    int fd = mkstemp(g_path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return g_path;
}

/* loads text over the defaults; returns rc and leaves the message in err */
static int load(core_config *c, const char *text, char *err, size_t errlen)
{
    core_config_default(c);
    err[0] = '\0';
    return core_config_load_file(c, write_cfg(text), err, errlen);
}

Test(config, defaults)
{
    core_config c;
    char err[256] = "";
    memset(&c, 0x5a, sizeof c);
    core_config_default(&c);
    cr_assert_str_eq(c.listen, "127.0.0.1:8080");
    cr_assert_str_eq(c.data, "./data");
    cr_assert_geq(c.threads, 1);
    cr_assert_eq(c.threads, (int)sysconf(_SC_NPROCESSORS_ONLN));
    cr_assert_eq(c.map_size_mb, 16384);
    cr_assert_eq(c.fsync, 1);
    cr_assert_eq(c.log_level, LOG_INFO);
    cr_assert_str_eq(c.jwt.alg, "HS256");
    cr_assert_str_eq(c.jwt.public_key_file, "");
    cr_assert_str_eq(c.jwt.jwks_file, "");
    cr_assert_str_eq(c.jwt.issuer, "circa");
    cr_assert_str_eq(c.jwt.audience, "circa");
    cr_assert_eq(c.jwt.leeway_s, 30);
    cr_assert_eq(c.jwt.ttl_s, 3600);
    cr_assert_eq(c.policy.loan_days, 21);
    cr_assert_eq(c.policy.max_renewals, 2);
    cr_assert_eq(c.policy.max_loans, 10);
    cr_assert_eq(c.policy.max_loans_premium, 25);
    cr_assert_eq(c.policy.pickup_days, 3);
    cr_assert_eq(c.limits.max_body_bytes, 1048576);
    cr_assert_eq(c.limits.max_header_bytes, 16384);
    cr_assert_eq(c.limits.max_json_depth, 16);
    cr_assert_float_eq(c.limits.rate_per_s, 100.0, 1e-9);
    cr_assert_float_eq(c.limits.rate_burst, 200.0, 1e-9);
    cr_assert_eq(c.password_iterations, 210000);
    cr_assert_eq(c.grant_ttl_s, 300);
    cr_assert_str_eq(c.content_base_url, "http://127.0.0.1:8080");
    cr_assert_eq(core_config_check(&c, err, sizeof err), 0, "defaults fail the check: %s", err);
}

Test(config, full_file_with_nested_objects)
{
    core_config c;
    char err[256];
    int rc = load(
        &c,
        "{\"listen\":\"0.0.0.0:9090\",\"data\":\"/var/lib/circa\",\"threads\":3,\"map_size_mb\":64,"
        "\"fsync\":false,\"log_level\":\"debug\","
        "\"jwt\":{\"alg\":\"RS256\",\"public_key_file\":\"/"
        "k.pem\",\"jwks_file\":null,\"issuer\":\"iss\","
        "\"audience\":\"aud\",\"leeway_s\":5,\"ttl_s\":60},"
        "\"policy\":{\"loan_days\":7,\"max_renewals\":1,\"max_loans\":4,\"max_loans_premium\":8,"
        "\"pickup_days\":2},"
        "\"limits\":{\"max_body_bytes\":2048,\"max_header_bytes\":4096,\"max_json_depth\":8,"
        "\"rate_per_s\":2.5,\"rate_burst\":10},"
        "\"password_iterations\":1000,\"grant_ttl_s\":60,\"content_base_url\":\"https://"
        "c.example\"}",
        err, sizeof err);
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_str_eq(c.listen, "0.0.0.0:9090");
    cr_assert_str_eq(c.data, "/var/lib/circa");
    cr_assert_eq(c.threads, 3);
    cr_assert_eq(c.map_size_mb, 64);
    cr_assert_eq(c.fsync, 0);
    cr_assert_eq(c.log_level, LOG_DEBUG);
    cr_assert_str_eq(c.jwt.alg, "RS256");
    cr_assert_str_eq(c.jwt.public_key_file, "/k.pem");
    cr_assert_str_eq(c.jwt.jwks_file, "");
    cr_assert_str_eq(c.jwt.issuer, "iss");
    cr_assert_str_eq(c.jwt.audience, "aud");
    cr_assert_eq(c.jwt.leeway_s, 5);
    cr_assert_eq(c.jwt.ttl_s, 60);
    cr_assert_eq(c.policy.loan_days, 7);
    cr_assert_eq(c.policy.max_renewals, 1);
    cr_assert_eq(c.policy.max_loans, 4);
    cr_assert_eq(c.policy.max_loans_premium, 8);
    cr_assert_eq(c.policy.pickup_days, 2);
    cr_assert_eq(c.limits.max_body_bytes, 2048);
    cr_assert_eq(c.limits.max_header_bytes, 4096);
    cr_assert_eq(c.limits.max_json_depth, 8);
    cr_assert_float_eq(c.limits.rate_per_s, 2.5, 1e-9);
    cr_assert_float_eq(c.limits.rate_burst, 10.0, 1e-9);
    cr_assert_eq(c.password_iterations, 1000);
    cr_assert_eq(c.grant_ttl_s, 60);
    cr_assert_str_eq(c.content_base_url, "https://c.example");
    cr_assert_eq(core_config_check(&c, err, sizeof err), 0, "%s", err);

    /* a partial file keeps the other defaults, also inside a nested object */
    rc = load(&c, "{\"policy\":{\"loan_days\":30}}", err, sizeof err);
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(c.policy.loan_days, 30);
    cr_assert_eq(c.policy.max_renewals, 2);
    cr_assert_str_eq(c.listen, "127.0.0.1:8080");
    rc = load(&c, "{}", err, sizeof err);
    cr_assert_eq(rc, 0);
}

Test(config, unknown_keys_are_named)
{
    core_config c;
    char err[256];
    cr_assert_neq(load(&c, "{\"listen\":\"a:1\",\"lisen\":\"b:2\"}", err, sizeof err), 0);
    cr_assert_not_null(strstr(err, "lisen"), "error does not name the key: %s", err);
    cr_assert_neq(load(&c, "{\"policy\":{\"loan_dayz\":3}}", err, sizeof err), 0);
    cr_assert_not_null(strstr(err, "policy.loan_dayz"), "error does not name the key: %s", err);
    cr_assert_neq(load(&c, "{\"limits\":{\"alg\":\"HS256\"}}", err, sizeof err), 0);
    cr_assert_not_null(strstr(err, "limits.alg"), "%s", err);
    cr_assert_neq(load(&c, "{\"jwt\":{\"policy\":{}}}", err, sizeof err), 0);
    cr_assert_not_null(strstr(err, "jwt.policy"), "%s", err);
}

Test(config, wrong_types_are_named)
{
    core_config c;
    char err[256];
    struct {
        const char *text, *name;
    } cases[] = {
        {"{\"policy\":{\"loan_days\":\"21\"}}", "policy.loan_days"},
        {"{\"policy\":{\"max_loans\":-1}}", "policy.max_loans"},
        {"{\"policy\":{\"pickup_days\":1.5}}", "policy.pickup_days"},
        {"{\"policy\":{\"max_renewals\":4294967296}}", "policy.max_renewals"},
        {"{\"threads\":\"4\"}", "threads"},
        {"{\"threads\":true}", "threads"},
        {"{\"fsync\":1}", "fsync"},
        {"{\"listen\":8080}", "listen"},
        {"{\"log_level\":\"verbose\"}", "log_level"},
        {"{\"map_size_mb\":-5}", "map_size_mb"},
        {"{\"jwt\":{\"leeway_s\":\"30\"}}", "jwt.leeway_s"},
        {"{\"jwt\":{\"alg\":\"HS256HS256\"}}", "jwt.alg"}, /* longer than its buffer */
        {"{\"limits\":{\"rate_per_s\":-1}}", "limits.rate_per_s"},
        {"{\"limits\":{\"rate_burst\":\"x\"}}", "limits.rate_burst"},
        {"{\"limits\":{\"max_json_depth\":[]}}", "limits.max_json_depth"},
        {"{\"password_iterations\":null}", "password_iterations"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_assert_neq(load(&c, cases[i].text, err, sizeof err), 0, "accepted %s", cases[i].text);
        cr_assert_not_null(strstr(err, cases[i].name), "error for %s does not name %s: %s",
                           cases[i].text, cases[i].name, err);
    }
    /* the nested sections must be objects */
    cr_assert_neq(load(&c, "{\"policy\":5}", err, sizeof err), 0);
    cr_assert_not_null(strstr(err, "policy"), "%s", err);
    cr_assert_neq(load(&c, "{\"jwt\":[]}", err, sizeof err), 0);
    cr_assert_not_null(strstr(err, "jwt"), "%s", err);
}

Test(config, malformed_or_missing_file)
{
    core_config c;
    char err[256];
    cr_assert_neq(load(&c, "{\"listen\":", err, sizeof err), 0);
    cr_assert_gt(strlen(err), 0);
    cr_assert_neq(load(&c, "[1,2]", err, sizeof err), 0);
    cr_assert_not_null(strstr(err, "object"), "%s", err);
    cr_assert_neq(load(&c, "{\"threads\":1,\"threads\":2}", err, sizeof err), 0,
                  "duplicate keys accepted");
    core_config_default(&c);
    err[0] = '\0';
    cr_assert_neq(core_config_load_file(&c, "/nonexistent/circa.json", err, sizeof err), 0);
    cr_assert_not_null(strstr(err, "/nonexistent/circa.json"), "%s", err);
}

Test(config, env_overrides)
{
    core_config c;
    char err[256] = "";
    core_config_default(&c);
    setenv("CIRCA_LISTEN", "10.0.0.1:81", 1);
    setenv("CIRCA_DATA", "/srv/circa", 1);
    setenv("CIRCA_THREADS", "7", 1);
    setenv("CIRCA_LOG_LEVEL", "warn", 1);
    cr_assert_eq(core_config_load_env(&c, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(c.listen, "10.0.0.1:81");
    cr_assert_str_eq(c.data, "/srv/circa");
    cr_assert_eq(c.threads, 7);
    cr_assert_eq(c.log_level, LOG_WARN);

    /* env over the file: the file is applied first */
    cr_assert_eq(load(&c, "{\"listen\":\"file:1\",\"threads\":2}", err, sizeof err), 0);
    cr_assert_eq(core_config_load_env(&c, err, sizeof err), 0);
    cr_assert_str_eq(c.listen, "10.0.0.1:81");
    cr_assert_eq(c.threads, 7);

    /* empty variables are ignored */
    core_config_default(&c);
    setenv("CIRCA_LISTEN", "", 1);
    unsetenv("CIRCA_THREADS");
    unsetenv("CIRCA_LOG_LEVEL");
    cr_assert_eq(core_config_load_env(&c, err, sizeof err), 0);
    cr_assert_str_eq(c.listen, "127.0.0.1:8080");

    const char *bad[] = {"0", "257", "-1", "four", "4x", " 4x", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        core_config_default(&c);
        int before = c.threads;
        setenv("CIRCA_THREADS", bad[i], 1);
        err[0] = '\0';
        cr_assert_neq(core_config_load_env(&c, err, sizeof err), 0, "CIRCA_THREADS=%s accepted",
                      bad[i]);
        cr_assert_not_null(strstr(err, "CIRCA_THREADS"), "%s", err);
        cr_assert_eq(c.threads, before);
    }
    setenv("CIRCA_THREADS", "256", 1);
    cr_assert_eq(core_config_load_env(&c, err, sizeof err), 0);
    cr_assert_eq(c.threads, 256);
    unsetenv("CIRCA_THREADS");
    setenv("CIRCA_LOG_LEVEL", "loud", 1);
    cr_assert_neq(core_config_load_env(&c, err, sizeof err), 0);
    cr_assert_not_null(strstr(err, "CIRCA_LOG_LEVEL"), "%s", err);
}

Test(config, check_failures)
{
    struct {
        const char *file, *needle;
    } cases[] = {
        {"{\"threads\":0}", "threads"},
        {"{\"threads\":257}", "threads"},
        {"{\"map_size_mb\":15}", "map_size_mb"},
        {"{\"jwt\":{\"alg\":\"none\"}}", "jwt.alg"},
        {"{\"jwt\":{\"alg\":\"ES256\"}}", "public_key_file"},
        {"{\"jwt\":{\"ttl_s\":0}}", "jwt.ttl_s"},
        {"{\"policy\":{\"loan_days\":0}}", "policy.loan_days"},
        {"{\"policy\":{\"loan_days\":3651}}", "policy.loan_days"},
        {"{\"policy\":{\"pickup_days\":366}}", "policy.pickup_days"},
        {"{\"limits\":{\"max_body_bytes\":1023}}", "limits.max_body_bytes"},
        {"{\"limits\":{\"max_header_bytes\":10}}", "limits.max_header_bytes"},
        {"{\"limits\":{\"max_json_depth\":1}}", "limits.max_json_depth"},
        {"{\"limits\":{\"max_json_depth\":65}}", "limits.max_json_depth"},
        {"{\"password_iterations\":999}", "password_iterations"},
        {"{\"grant_ttl_s\":0}", "grant_ttl_s"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        core_config c;
        char err[256];
        cr_assert_eq(load(&c, cases[i].file, err, sizeof err), 0, "%s: %s", cases[i].file, err);
        err[0] = '\0';
        cr_assert_neq(core_config_check(&c, err, sizeof err), 0, "check passed %s", cases[i].file);
        cr_assert_not_null(strstr(err, cases[i].needle), "%s: %s", cases[i].file, err);
    }
    /* the limits themselves pass */
    core_config c;
    char err[256];
    cr_assert_eq(load(&c,
                      "{\"threads\":256,\"map_size_mb\":16,\"policy\":{\"loan_days\":3650,\"pickup_"
                      "days\":365},"
                      "\"limits\":{\"max_json_depth\":64,\"max_body_bytes\":1024},\"password_"
                      "iterations\":1000,"
                      "\"jwt\":{\"alg\":\"ES256\",\"jwks_file\":\"/j.json\"}}",
                      err, sizeof err),
                 0, "%s", err);
    cr_assert_eq(core_config_check(&c, err, sizeof err), 0, "%s", err);
}

Test(config, postgres_settings)
{
    core_config c;
    char err[256];

    core_config_default(&c);
    cr_assert_str_eq(c.pg.dsn, "", "write-behind is off by default");
    cr_assert_eq(c.pg.high_water, 1000000);
    cr_assert_eq(c.pg.batch, 2000);
    cr_assert_eq(load(&c,
                      "{\"pg\": {\"dsn\": \"host=db dbname=circa\", \"sslmode\": \"verify-full\","
                      " \"sslrootcert\": \"/etc/ca.pem\", \"high_water\": 5000, \"batch\": 100}}",
                      err, sizeof err),
                 0, "%s", err);
    cr_assert_str_eq(c.pg.dsn, "host=db dbname=circa");
    cr_assert_str_eq(c.pg.sslmode, "verify-full");
    cr_assert_str_eq(c.pg.sslrootcert, "/etc/ca.pem");
    cr_assert_eq(c.pg.high_water, 5000);
    cr_assert_eq(c.pg.batch, 100);
    cr_assert_eq(core_config_check(&c, err, sizeof err), 0, "%s", err);

    cr_assert_neq(load(&c, "{\"pg\": {\"dns\": \"x\"}}", err, sizeof err), 0);
    cr_assert(strstr(err, "pg.dns"), "%s", err);
    cr_assert_neq(load(&c, "{\"pg\": \"host=db\"}", err, sizeof err), 0);

    cr_assert_eq(load(&c, "{\"pg\": {\"sslmode\": \"sometimes\"}}", err, sizeof err), 0);
    cr_assert_neq(core_config_check(&c, err, sizeof err), 0);
    cr_assert(strstr(err, "pg.sslmode"), "%s", err);
    cr_assert_eq(load(&c, "{\"pg\": {\"high_water\": 10}}", err, sizeof err), 0);
    cr_assert_neq(core_config_check(&c, err, sizeof err), 0);
    cr_assert(strstr(err, "pg.high_water"), "%s", err);
    cr_assert_eq(load(&c, "{\"pg\": {\"batch\": 0}}", err, sizeof err), 0);
    cr_assert_neq(core_config_check(&c, err, sizeof err), 0);

    core_config_default(&c);
    setenv("CIRCA_PG_DSN", "host=127.0.0.1 password=secret", 1);
    cr_assert_eq(core_config_load_env(&c, err, sizeof err), 0);
    cr_assert_str_eq(c.pg.dsn, "host=127.0.0.1 password=secret");
    char big[4096];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    setenv("CIRCA_PG_DSN", big, 1);
    cr_assert_neq(core_config_load_env(&c, err, sizeof err), 0);
    cr_assert(strstr(err, "CIRCA_PG_DSN"), "%s", err);
}

/* a raft check that fails names the setting */
static void raft_refused(const char *json, const char *name)
{
    core_config c;
    char err[256];
    core_config_default(&c);
    cr_assert_eq(load(&c, json, err, sizeof err), 0, "%s: %s", json, err);
    cr_assert_neq(core_config_check(&c, err, sizeof err), 0, "%s was accepted", json);
    cr_assert(strstr(err, name), "%s: %s", json, err);
}

Test(config, raft_settings)
{
    core_config c;
    char err[256];

    core_config_default(&c);
    cr_assert_str_eq(c.raft.peer, "127.0.0.1:7080");
    cr_assert_str_eq(c.raft.join, "");
    cr_assert_eq(c.raft.election_timeout_ms, 1000);
    cr_assert_eq(c.raft.heartbeat_ms, 100);
    cr_assert_eq(c.raft.snapshot_threshold, 4096);
    cr_assert_eq(c.raft.snapshot_trailing, 8192);
    cr_assert_eq(c.raft.snapshot_chunk_kib, 1024);
    cr_assert_eq(
        load(&c,
             "{\"raft\": {\"peer\": \"10.0.0.5:7080\", \"join\": \"10.0.0.6:7080,"
             "node-c.example:7080\", \"election_timeout_ms\": 500, \"heartbeat_ms\": 50,"
             " \"tls_ca\": \"/ca.pem\", \"tls_cert\": \"/n.pem\", \"tls_key\": \"/n.key\"}}",
             err, sizeof err),
        0, "%s", err);
    cr_assert_eq(core_config_check(&c, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(c.raft.join, "10.0.0.6:7080,node-c.example:7080");
    cr_assert_eq(c.raft.election_timeout_ms, 500);

    raft_refused("{\"raft\": {\"peer\": \"nohost\"}}", "raft.peer");
    raft_refused("{\"raft\": {\"peer\": \"h:65535\"}}", "raft.peer"); /* PORT+1 must exist */
    raft_refused("{\"raft\": {\"peer\": \":7080\"}}", "raft.peer");
    raft_refused("{\"raft\": {\"join\": \"a:1,,b:2\"}}", "raft.join");
    raft_refused("{\"raft\": {\"join\": \"a:1,\"}}", "raft.join");
    raft_refused("{\"raft\": {\"join\": \"a:x\"}}", "raft.join");
    raft_refused("{\"raft\": {\"heartbeat_ms\": 5}}", "raft.heartbeat_ms");
    raft_refused("{\"raft\": {\"heartbeat_ms\": 100, \"election_timeout_ms\": 200}}",
                 "raft.election_timeout_ms");
    raft_refused("{\"raft\": {\"tls_ca\": \"/ca.pem\"}}", "raft.tls_cert");
    raft_refused("{\"raft\": {\"snapshot_threshold\": 7}}", "raft.snapshot_threshold");
    raft_refused("{\"raft\": {\"snapshot_trailing\": 0}}", "raft.snapshot_trailing");
    raft_refused("{\"raft\": {\"snapshot_chunk_kib\": 0}}", "raft.snapshot_chunk_kib");
    raft_refused("{\"raft\": {\"snapshot_chunk_kib\": 8193}}", "raft.snapshot_chunk_kib");

    core_config_default(&c);
    setenv("CIRCA_PEER", "127.0.0.1:9000", 1);
    setenv("CIRCA_JOIN", "127.0.0.1:9010", 1);
    cr_assert_eq(core_config_load_env(&c, err, sizeof err), 0, "%s", err);
    unsetenv("CIRCA_PEER");
    unsetenv("CIRCA_JOIN");
    cr_assert_str_eq(c.raft.peer, "127.0.0.1:9000");
    cr_assert_str_eq(c.raft.join, "127.0.0.1:9010");
}
