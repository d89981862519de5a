/* libFuzzer target for apply() (core/apply.c): arbitrary bytes are decoded as a command and, when
 * cmd_decode accepts them, applied with repl_apply_local() to one store per process (a mkdtemp
 * directory with a small map, removed at exit). State accumulates across inputs, so sequences of
 * weird-but-decodable commands are exercised. Every answer must carry a status and, when it has a
 * body, valid JSON. A map-full or storage error is an acceptable outcome, not a crash. */
#include <ftw.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "persist/store.h"
#include "replication/repl.h"

static store *g_st;
static char g_dir[64];

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

static void cleanup(void)
{
    store_close(g_st);
    g_st = NULL;
    nftw(g_dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

static void open_store(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/circa-fuzz-apply-XXXXXX");
    if (!mkdtemp(g_dir) || store_open(g_dir, 8 << 20, STORE_NOSYNC, &g_st))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static cmd c;
    apply_result res;

    if (!g_st) {
        core_log_set_level(LOG_ERROR + 1);
        open_store();
        atexit(cleanup);
    }
    if (cmd_decode(data, size, &c) != 0)
        return 0;
    if (repl_apply_local(g_st, &c, &res) != 0) {
        /* a full map: start over with an empty store rather than fuzz a full one */
        store_info info;
        if (store_info_get(g_st, &info) == 0 && info.used_bytes > info.map_size / 2) {
            cleanup();
            open_store();
        }
        return 0;
    }
    if (res.status < 100 || res.status > 599)
        __builtin_trap();
    if (res.body) {
        json_t *j = json_loadb(res.body, res.body_len, 0, NULL);
        if (!j)
            __builtin_trap();
        json_decref(j);
    }
    apply_result_clear(&res);
    return 0;
}
