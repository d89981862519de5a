/* Unit tests for persist/store.c: open/close, get/put/del, meta counters, info, backup, read-only
 * open of a missing directory, and a map that fills up under repl_apply_local(). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "persist/store.h"
#include "replication/repl.h"

static char g_dir[64], g_dir2[80];

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

static void setup(void)
{
    core_log_set_level(LOG_ERROR + 1); /* expected failures below log errors */
    snprintf(g_dir, sizeof g_dir, "/tmp/circa-store-XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
    snprintf(g_dir2, sizeof g_dir2, "%s-copy", g_dir);
}

static void teardown(void)
{
    nftw(g_dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    nftw(g_dir2, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(store, .init = setup, .fini = teardown);

Test(store, open_put_get_del_and_reopen)
{
    store *st;
    store_txn t;
    MDB_val v;
    cr_assert_eq(store_open(g_dir, 16 << 20, 0, &st), 0);
    cr_assert_not_null(store_env(st));

    cr_assert_eq(store_begin(st, 1, &t), 0);
    cr_assert_eq(store_get(&t, DB_USERS, "k", 1, &v), CORE_ENOENT);
    cr_assert_eq(store_put(&t, DB_USERS, "k", 1, "value", 5), 0);
    cr_assert_eq(store_put(&t, DB_RES, "k", 1, "other", 5), 0);
    cr_assert_eq(store_get(&t, DB_USERS, "k", 1, &v), 0);
    cr_assert_eq(v.mv_size, 5);
    cr_assert(memcmp(v.mv_data, "value", 5) == 0);
    cr_assert_eq(store_put(&t, DB_USERS, "k", 1, "v2", 2), 0); /* overwrite */
    cr_assert_eq(store_put(&t, DB_USERS, "gone", 4, "x", 1), 0);
    cr_assert_eq(store_del(&t, DB_USERS, "gone", 4), 0);
    cr_assert_eq(store_del(&t, DB_USERS, "gone", 4), CORE_ENOENT);
    cr_assert_eq(store_commit(&t), 0);

    /* an aborted write leaves nothing */
    cr_assert_eq(store_begin(st, 1, &t), 0);
    cr_assert_eq(store_put(&t, DB_USERS, "aborted", 7, "x", 1), 0);
    store_abort(&t);
    store_abort(&t); /* twice is harmless */

    /* databases are separate */
    cr_assert_eq(store_begin(st, 0, &t), 0);
    cr_assert_eq(store_get(&t, DB_RES, "k", 1, &v), 0);
    cr_assert(memcmp(v.mv_data, "other", 5) == 0);
    cr_assert_eq(store_get(&t, DB_LOANS, "k", 1, &v), CORE_ENOENT);
    /* reset/renew of a read transaction sees later commits */
    store_reset(&t);
    store_txn w;
    cr_assert_eq(store_begin(st, 1, &w), 0);
    cr_assert_eq(store_put(&w, DB_LOANS, "k", 1, "loan", 4), 0);
    cr_assert_eq(store_commit(&w), 0);
    cr_assert_eq(store_renew(&t), 0);
    cr_assert_eq(store_get(&t, DB_LOANS, "k", 1, &v), 0);
    store_abort(&t);
    store_close(st);
    store_close(NULL);

    cr_assert_eq(store_open(g_dir, 16 << 20, STORE_RDONLY, &st), 0);
    cr_assert_eq(store_begin(st, 0, &t), 0);
    cr_assert_eq(store_get(&t, DB_USERS, "k", 1, &v), 0);
    cr_assert_eq(v.mv_size, 2);
    cr_assert(memcmp(v.mv_data, "v2", 2) == 0);
    cr_assert_eq(store_get(&t, DB_USERS, "aborted", 7, &v), CORE_ENOENT);
    cr_assert_eq(store_get(&t, DB_USERS, "gone", 4, &v), CORE_ENOENT);
    store_abort(&t);
    /* no writes through a read-only environment */
    cr_assert_neq(store_begin(st, 1, &t), 0);
    store_close(st);
}

Test(store, meta_u64_and_info)
{
    store *st;
    store_txn t;
    store_info info;
    cr_assert_eq(store_open(g_dir, 32 << 20, STORE_NOSYNC, &st), 0);
    cr_assert_eq(store_begin(st, 1, &t), 0);
    cr_assert_eq(store_meta_u64(&t, "absent"), 0);
    cr_assert_eq(store_meta_put_u64(&t, "counter", 0x0102030405060708ULL), 0);
    cr_assert_eq(store_meta_u64(&t, "counter"), 0x0102030405060708ULL);
    /* big-endian on disk */
    MDB_val v;
    cr_assert_eq(store_get(&t, DB_META, "counter", 7, &v), 0);
    cr_assert_eq(v.mv_size, 8);
    cr_assert_eq(((uint8_t *)v.mv_data)[0], 1);
    cr_assert_eq(((uint8_t *)v.mv_data)[7], 8);
    /* a value of the wrong size reads as 0 */
    cr_assert_eq(store_put(&t, DB_META, "short", 5, "abc", 3), 0);
    cr_assert_eq(store_meta_u64(&t, "short"), 0);
    cr_assert_eq(store_meta_put_u64(&t, "applied", 42), 0);
    cr_assert_eq(store_commit(&t), 0);

    cr_assert_eq(store_info_get(st, &info), 0);
    cr_assert_eq(info.map_size, 32 << 20);
    cr_assert_eq(info.applied_index, 42);
    cr_assert_gt(info.used_bytes, 0);
    cr_assert_leq(info.used_bytes, info.map_size);

    /* applying commands moves the applied index */
    core_config cfg;
    core_config_default(&cfg);
    cr_assert_eq(store_begin(st, 1, &t), 0);
    cr_assert_eq(store_meta_put_u64(&t, "applied", 0), 0);
    cr_assert_eq(store_commit(&t), 0);
    cr_assert_eq(repl_prepare(st, &cfg), 0); /* bootstrap + policy: indexes 1 and 2 */
    cr_assert_eq(store_info_get(st, &info), 0);
    cr_assert_eq(info.applied_index, 2);
    cmd c = {.type = CMD_TICK, .ts_ms = 1795341600000LL, .actor_role = ROLE_SERVICE};
    apply_result res;
    cr_assert_eq(repl_apply_local(st, &c, &res), 0);
    apply_result_clear(&res);
    cr_assert_eq(store_info_get(st, &info), 0);
    cr_assert_eq(info.applied_index, 3);
    /* repl_prepare again with the same policy applies nothing */
    cr_assert_eq(repl_prepare(st, &cfg), 0);
    cr_assert_eq(store_info_get(st, &info), 0);
    cr_assert_eq(info.applied_index, 3);
    store_close(st);
}

Test(store, backup_is_a_working_copy)
{
    store *st, *cp;
    store_txn t;
    MDB_val v;
    char key[16];
    cr_assert_eq(store_open(g_dir, 16 << 20, STORE_NOSYNC, &st), 0);
    cr_assert_eq(store_begin(st, 1, &t), 0);
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "k%05d", i);
        cr_assert_eq(store_put(&t, DB_LOANS, key, strlen(key), key, strlen(key)), 0);
    }
    cr_assert_eq(store_meta_put_u64(&t, "applied", 1000), 0);
    cr_assert_eq(store_commit(&t), 0);

    cr_assert_eq(store_backup(st, g_dir2), 0);
    char path[128];
    struct stat sb;
    snprintf(path, sizeof path, "%s/data.mdb", g_dir2);
    cr_assert_eq(stat(path, &sb), 0, "no data.mdb in the backup");
    /* a later write does not reach the copy */
    cr_assert_eq(store_begin(st, 1, &t), 0);
    cr_assert_eq(store_put(&t, DB_LOANS, "later", 5, "x", 1), 0);
    cr_assert_eq(store_commit(&t), 0);
    store_close(st);

    cr_assert_eq(store_open(g_dir2, 16 << 20, 0, &cp), 0);
    store_info info;
    cr_assert_eq(store_info_get(cp, &info), 0);
    cr_assert_eq(info.applied_index, 1000);
    cr_assert_eq(store_begin(cp, 0, &t), 0);
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "k%05d", i);
        cr_assert_eq(store_get(&t, DB_LOANS, key, strlen(key), &v), 0, "%s missing in the copy",
                     key);
        cr_assert_eq(v.mv_size, strlen(key));
        cr_assert(memcmp(v.mv_data, key, v.mv_size) == 0);
    }
    cr_assert_eq(store_get(&t, DB_LOANS, "later", 5, &v), CORE_ENOENT);
    store_abort(&t);
    store_close(cp);
}

Test(store, rdonly_missing_dir_fails_cleanly)
{
    store *st = (store *)0x1;
    char missing[96];
    snprintf(missing, sizeof missing, "%s/does/not/exist", g_dir);
    cr_assert_neq(store_open(missing, 16 << 20, STORE_RDONLY, &st), 0);
    cr_assert_eq(st, (store *)0x1, "out was written on failure");
    struct stat sb;
    cr_assert_neq(stat(missing, &sb), 0, "a read-only open created the directory");
    /* an empty existing directory has no environment to read either */
    cr_assert_neq(store_open(g_dir, 16 << 20, STORE_RDONLY, &st), 0);
    /* a writable open of an uncreatable path fails too */
    cr_assert_neq(store_open("/proc/circa-cannot-create", 16 << 20, 0, &st), 0);
}

Test(store, map_full_keeps_the_store_consistent)
{
    store *st;
    core_config cfg;
    static char title[4 * CORE_MAX_TITLE], author[4 * CORE_MAX_AUTHOR];
    memset(title, 'T', sizeof title);
    memset(author, 'A', sizeof author);
    core_config_default(&cfg);
    cr_assert_eq(store_open(g_dir, 1 << 20, STORE_NOSYNC, &st), 0);
    cr_assert_eq(repl_prepare(st, &cfg), 0);

    uint64_t last_ok = 0;
    int ok = 0, rc = 0;
    for (unsigned i = 1; i < 10000; i++) {
        cmd c = {.type = CMD_RES_PUT, .ts_ms = 1795341600000LL + i, .actor_role = ROLE_LIBRARIAN};
        c.u.res_put.id.b[0] = 1;
        c.u.res_put.id.b[12] = (uint8_t)(i >> 24);
        c.u.res_put.id.b[13] = (uint8_t)(i >> 16);
        c.u.res_put.id.b[14] = (uint8_t)(i >> 8);
        c.u.res_put.id.b[15] = (uint8_t)i;
        c.u.res_put.copies = 1;
        c.u.res_put.title = (core_str){title, sizeof title};
        c.u.res_put.n_authors = 20;
        for (int a = 0; a < 20; a++)
            c.u.res_put.authors[a] = (core_str){author, sizeof author};
        apply_result res;
        rc = repl_apply_local(st, &c, &res);
        if (rc)
            break;
        cr_assert_eq(res.status, 201);
        apply_result_clear(&res);
        ok++;
        store_info info;
        cr_assert_eq(store_info_get(st, &info), 0);
        last_ok = info.applied_index;
    }
    cr_assert_neq(rc, 0, "a 1 MiB map never filled");
    cr_assert_gt(ok, 5, "the map filled too early (%d commands)", ok);

    /* the failed command left no trace; earlier data is readable */
    store_info info;
    cr_assert_eq(store_info_get(st, &info), 0);
    cr_assert_eq(info.applied_index, last_ok);
    store_txn t;
    cr_assert_eq(store_begin(st, 0, &t), 0);
    cr_assert_eq(store_meta_u64(&t, "applied"), last_ok);
    cr_assert_eq(store_meta_u64(&t, "count/FICTION"), (uint64_t)ok);
    MDB_stat ms;
    cr_assert_eq(mdb_stat(t.txn, store_dbi(st, DB_RES), &ms), 0);
    cr_assert_eq(ms.ms_entries, (size_t)ok);
    for (unsigned i = 1; i <= (unsigned)ok; i++) {
        uint8_t id[16] = {1};
        id[14] = (uint8_t)(i >> 8);
        id[15] = (uint8_t)i;
        MDB_val v;
        cr_assert_eq(store_get(&t, DB_RES, id, 16, &v), 0, "resource %u lost", i);
    }
    uint8_t k[8];
    MDB_val v;
    store_be64(k, last_ok + 1);
    cr_assert_eq(store_get(&t, DB_LOG, k, 8, &v), CORE_ENOENT, "the failed command is in the log");
    store_abort(&t);

    /* small commands still fit, or fail cleanly, and the store keeps working after a reopen */
    cmd tick = {.type = CMD_TICK, .ts_ms = 1795341700000LL, .actor_role = ROLE_SERVICE};
    apply_result res;
    if (repl_apply_local(st, &tick, &res) == 0) {
        apply_result_clear(&res);
        last_ok++;
    }
    store_close(st);
    cr_assert_eq(store_open(g_dir, 1 << 20, 0, &st), 0);
    cr_assert_eq(store_info_get(st, &info), 0);
    cr_assert_eq(info.applied_index, last_ok);
    store_close(st);
}
