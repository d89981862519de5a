/* libFuzzer target for the state machine's parsers (replication/fsm.c): arbitrary bytes are applied
 * as a raft entry (a batch of commands) and parsed as a snapshot descriptor. Each entry runs in a
 * write transaction that is aborted afterwards, so the store never grows. An accepted entry must
 * answer every command it counted with a status; a refused one must leave no answer. */
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "persist/store.h"
#include "replication/internal.h"

static store *g_st;
static char g_dir[64];
static store_txn g_txn;

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

static void cleanup(void)
{
    store_close(g_st);
    nftw(g_dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

static store_txn *txn(void *ctx)
{
    return &g_txn;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct raft raft; /* only its last_applied (0) is read */
    struct raft_fsm rf;
    struct raft_buffer b = {.base = (void *)data, .len = size};
    char addr[WIRE_MAX_ADDR + 1];
    uint64_t index;
    raft_id source;
    void *result;
    fsm f;

    if (!g_st) {
        core_log_set_level(LOG_ERROR + 1);
        snprintf(g_dir, sizeof g_dir, "/tmp/circa-fuzz-fsm-XXXXXX");
        if (!mkdtemp(g_dir) || store_open(g_dir, 8 << 20, STORE_NOSYNC, &g_st))
            abort();
        atexit(cleanup);
    }
    if (fsm_snap_parse(data, size, &index, &source, addr) == 0 && strlen(addr) > WIRE_MAX_ADDR)
        abort();

    fsm_init(&f, &rf, g_st, &raft);
    f.txn = txn;
    if (store_begin(g_st, 1, &g_txn))
        abort();
    int rc = rf.apply(&rf, &b, &result);
    fsm_done *d = fsm_take(&f);
    if (rc == 0) {
        if (!d || d->next || d->index != 1 || size < 5 || d->n != store_rd32(data + 1))
            abort();
        for (uint32_t i = 0; i < d->n; i++)
            if (d->res[i].status < 100 || d->res[i].status > 599)
                abort();
    } else if (d) {
        abort();
    }
    fsm_done_free(d);
    store_abort(&g_txn);
    return 0;
}
