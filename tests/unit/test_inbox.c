/* Unit tests for the actor inbox (core/core.c: MPSC queue + eventfd) and the writer actor
 * (replication/repl.c) end to end: many producers, one consumer woken through poll(). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/core.h"
#include "persist/store.h"
#include "replication/repl.h"

typedef struct tmsg {
    core_msg link;
    int producer;
    int seq;
} tmsg;

Test(inbox, single_thread_fifo)
{
    core_inbox *in = core_inbox_new();
    cr_assert_not_null(in);
    cr_assert_geq(core_inbox_fd(in), 0);
    struct pollfd pfd = {core_inbox_fd(in), POLLIN, 0};
    cr_assert_eq(poll(&pfd, 1, 0), 0, "an empty inbox is readable");
    cr_assert_null(core_inbox_pop(in));

    tmsg m[100];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 100; i++) {
            m[i].seq = i;
            m[i].link.type = round;
            core_inbox_push(in, &m[i].link);
        }
        cr_assert_eq(poll(&pfd, 1, 0), 1, "a push did not make the fd readable");
        core_inbox_ack(in);
        cr_assert_eq(poll(&pfd, 1, 0), 0, "ack left the fd readable");
        for (int i = 0; i < 100; i++) {
            tmsg *t = (tmsg *)core_inbox_pop(in);
            cr_assert_not_null(t, "round %d: message %d missing", round, i);
            cr_assert_eq(t->seq, i, "round %d: got %d, want %d", round, t->seq, i);
            cr_assert_eq(t->link.type, round);
        }
        cr_assert_null(core_inbox_pop(in));
    }
    /* interleaved push and pop, the queue running empty in between */
    for (int i = 0; i < 1000; i++) {
        core_inbox_push(in, &m[i % 100].link);
        core_inbox_push(in, &m[(i + 1) % 100].link);
        cr_assert_eq(core_inbox_pop(in), &m[i % 100].link);
        cr_assert_eq(core_inbox_pop(in), &m[(i + 1) % 100].link);
        cr_assert_null(core_inbox_pop(in));
    }
    /* one wake-up per burst: the eventfd counter was written once after the queue emptied */
    core_inbox_ack(in);
    for (int i = 0; i < 10; i++)
        core_inbox_push(in, &m[i].link);
    uint64_t v = 0;
    cr_assert_eq(read(core_inbox_fd(in), &v, sizeof v), (ssize_t)sizeof v);
    cr_assert_eq(v, 1, "a burst of 10 wrote the eventfd %llu times", (unsigned long long)v);
    for (int i = 0; i < 10; i++)
        cr_assert_not_null(core_inbox_pop(in));
    core_inbox_free(in);
    core_inbox_free(NULL);
}

#define PRODUCERS    4
#define PER_PRODUCER 100000

typedef struct prod_arg {
    core_inbox *in;
    tmsg *msgs;
    int id;
} prod_arg;

static atomic_int g_done;

static void *producer(void *arg)
{
    prod_arg *a = arg;
    for (int i = 0; i < PER_PRODUCER; i++) {
        a->msgs[i].producer = a->id;
        a->msgs[i].seq = i;
        core_inbox_push(a->in, &a->msgs[i].link);
    }
    atomic_fetch_add(&g_done, 1);
    return NULL;
}

typedef struct cons_res {
    core_inbox *in;
    long received;
    int order_errors;
    int dup_errors;
    int stalls; /* poll timed out with every producer done and messages still queued */
    long wakeups;
    unsigned char *seen;
} cons_res;

static void *consumer(void *arg)
{
    cons_res *r = arg;
    int next[PRODUCERS] = {0};
    struct pollfd pfd = {core_inbox_fd(r->in), POLLIN, 0};
    while (r->received < (long)PRODUCERS * PER_PRODUCER) {
        int n = poll(&pfd, 1, 2000);
        if (n == 0) {
            /* nothing woke us for 2 s: only fine while producers are still running */
            if (atomic_load(&g_done) == PRODUCERS && r->received < (long)PRODUCERS * PER_PRODUCER)
                r->stalls++;
            if (r->stalls > 2)
                break;
        } else {
            r->wakeups++;
            core_inbox_ack(r->in);
        }
        core_msg *m;
        while ((m = core_inbox_pop(r->in)) != NULL) {
            tmsg *t = (tmsg *)m;
            long slot = (long)t->producer * PER_PRODUCER + t->seq;
            if (r->seen[slot]++)
                r->dup_errors++;
            if (t->seq != next[t->producer])
                r->order_errors++;
            next[t->producer] = t->seq + 1;
            r->received++;
        }
    }
    return NULL;
}

Test(inbox, four_producers_one_consumer, .timeout = 60)
{
    core_inbox *in = core_inbox_new();
    cr_assert_not_null(in);
    tmsg *msgs = calloc((size_t)PRODUCERS * PER_PRODUCER, sizeof *msgs);
    cons_res r = {.in = in, .seen = calloc((size_t)PRODUCERS * PER_PRODUCER, 1)};
    cr_assert_not_null(msgs);
    cr_assert_not_null(r.seen);
    prod_arg args[PRODUCERS];
    pthread_t pt[PRODUCERS], ct;
    atomic_store(&g_done, 0);
    cr_assert_eq(pthread_create(&ct, NULL, consumer, &r), 0);
    for (int i = 0; i < PRODUCERS; i++) {
        args[i] = (prod_arg){in, msgs + (size_t)i * PER_PRODUCER, i};
        cr_assert_eq(pthread_create(&pt[i], NULL, producer, &args[i]), 0);
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(pt[i], NULL);
    pthread_join(ct, NULL);
    cr_assert_eq(r.stalls, 0, "the consumer slept with messages queued (lost wake-up)");
    cr_assert_eq(r.received, (long)PRODUCERS * PER_PRODUCER);
    cr_assert_eq(r.dup_errors, 0);
    cr_assert_eq(r.order_errors, 0, "per-producer order broken %d times", r.order_errors);
    for (long i = 0; i < (long)PRODUCERS * PER_PRODUCER; i++)
        cr_assert_eq(r.seen[i], 1, "message %ld seen %d times", i, r.seen[i]);
    cr_assert_null(core_inbox_pop(in));
    cr_assert_gt(r.wakeups, 0);
    free(r.seen);
    free(msgs);
    core_inbox_free(in);
}

/* ---- the writer actor ---- */

static char g_dir[64];
static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

#define SUBMITTERS    2
#define PER_SUBMITTER 5000

typedef struct sub_arg {
    repl *r;
    int id;
    uint64_t *indexes; /* out, in arrival order */
    int bad_status;
    int bad_order;
    int received;
} sub_arg;

static void *submitter(void *arg)
{
    sub_arg *a = arg;
    core_inbox *in = core_inbox_new();
    repl_req *reqs = calloc(PER_SUBMITTER, sizeof *reqs);
    if (!in || !reqs)
        return NULL;
    for (int i = 0; i < PER_SUBMITTER; i++) {
        cmd c = {.ts_ms = 1795341600000LL + i, .actor_role = ROLE_LIBRARIAN};
        if (i % 2) {
            c.type = CMD_TICK;
        } else {
            /* creates, with a few duplicates that the state machine refuses with 409 */
            c.type = CMD_RES_PUT;
            c.u.res_put.id.b[0] = (uint8_t)(a->id + 1);
            c.u.res_put.id.b[14] = (uint8_t)((i % 4000) >> 8);
            c.u.res_put.id.b[15] = (uint8_t)(i % 4000);
            c.u.res_put.copies = 1;
            c.u.res_put.title = (core_str){"title", 5};
        }
        reqs[i].reply_to = in;
        reqs[i].cookie = &reqs[i];
        if (cmd_encode(&c, &reqs[i].cmd))
            return NULL;
        repl_submit(a->r, &reqs[i]);
    }
    struct pollfd pfd = {core_inbox_fd(in), POLLIN, 0};
    uint64_t last = 0;
    int idle = 0;
    /* bounded: give up after 30 s without any reply (sanitizer builds are slow, not stuck) */
    while (a->received < PER_SUBMITTER && idle < 30) {
        if (poll(&pfd, 1, 1000) == 0) {
            idle++;
            continue;
        }
        idle = 0;
        core_inbox_ack(in);
        core_msg *m;
        while ((m = core_inbox_pop(in)) != NULL) {
            repl_req *q = (repl_req *)m;
            if (q->cookie != q || q->res.status < 200 || q->res.status >= 500)
                a->bad_status++;
            if (q->index <= last)
                a->bad_order++;
            last = q->index;
            a->indexes[a->received++] = q->index;
            apply_result_clear(&q->res);
            core_buf_free(&q->cmd);
        }
    }
    if (a->received < PER_SUBMITTER) {
        fprintf(stderr, "submitter %d: %d of %d replies, idle %d\n", a->id, a->received,
                PER_SUBMITTER, idle);
        return NULL; /* the writer may still hold the requests: leak them rather than free */
    }
    free(reqs);
    core_inbox_free(in);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* a loopback HOST:PORT with PORT and PORT+1 free (a peer listens on both) */
static void free_peer(char *out, size_t n)
{
    for (int tries = 0; tries < 100; tries++) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof a;
        int s = socket(AF_INET, SOCK_STREAM, 0), s2 = socket(AF_INET, SOCK_STREAM, 0), ok;
        cr_assert(s >= 0 && s2 >= 0);
        cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
        cr_assert_eq(getsockname(s, (struct sockaddr *)&a, &len), 0);
        a.sin_port = htons((uint16_t)(ntohs(a.sin_port) + 1));
        ok = ntohs(a.sin_port) > 1 && bind(s2, (struct sockaddr *)&a, sizeof a) == 0;
        close(s);
        close(s2);
        if (ok) {
            snprintf(out, n, "127.0.0.1:%d", ntohs(a.sin_port) - 1);
            return;
        }
    }
    cr_assert_fail("no two consecutive free loopback ports");
}

Test(writer, many_proposers_every_reply_once, .timeout = 120)
{
    store *st;
    repl *r;
    core_config cfg;
    core_log_set_level(LOG_ERROR);
    snprintf(g_dir, sizeof g_dir, "/tmp/circa-writer-XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
    cr_assert_eq(store_open(g_dir, 256 << 20, STORE_NOSYNC, &st), 0);
    core_config_default(&cfg);
    free_peer(cfg.raft.peer, sizeof cfg.raft.peer);
    cr_assert_eq(repl_start(st, &cfg, NULL, &r), 0);
    /* ready: the one-voter cluster elected itself and queued its signing
     * key and policy, so they come before every proposal below */
    for (int i = 0; i < 1000 && !repl_ready(r); i++)
        usleep(10000);
    cr_assert(repl_ready(r), "the one-voter cluster never became ready");

    sub_arg args[SUBMITTERS];
    pthread_t th[SUBMITTERS];
    for (int i = 0; i < SUBMITTERS; i++) {
        args[i] = (sub_arg){.r = r, .id = i, .indexes = calloc(PER_SUBMITTER, sizeof(uint64_t))};
        cr_assert_not_null(args[i].indexes);
        cr_assert_eq(pthread_create(&th[i], NULL, submitter, &args[i]), 0);
    }
    for (int i = 0; i < SUBMITTERS; i++)
        pthread_join(th[i], NULL);
    repl_stats stats;
    repl_stats_get(r, &stats);
    repl_stop(r);

    uint64_t *all = calloc(SUBMITTERS * PER_SUBMITTER, sizeof *all);
    size_t n = 0;
    for (int i = 0; i < SUBMITTERS; i++) {
        cr_assert_eq(args[i].received, PER_SUBMITTER, "submitter %d got %d replies", i,
                     args[i].received);
        cr_assert_eq(args[i].bad_status, 0, "submitter %d: %d replies without a status", i,
                     args[i].bad_status);
        cr_assert_eq(args[i].bad_order, 0, "submitter %d: indexes not increasing", i);
        memcpy(all + n, args[i].indexes, PER_SUBMITTER * sizeof *all);
        n += PER_SUBMITTER;
        free(args[i].indexes);
    }
    qsort(all, n, sizeof *all, cmp_u64);
    for (size_t i = 1; i < n; i++)
        cr_assert_neq(all[i], all[i - 1], "index %llu given twice", (unsigned long long)all[i]);
    /* the new cluster's leader proposed its signing key and policy (1 and
     * 2); the proposals are exactly the next n */
    cr_assert_eq(all[0], 3);
    cr_assert_eq(all[n - 1], 2 + n);
    free(all);
    cr_assert_eq(stats.commands, SUBMITTERS * PER_SUBMITTER + 2);
    cr_assert_geq(stats.batches, 1);
    cr_assert_leq(stats.batches, stats.commands);
    cr_assert_eq(stats.hist[REPL_HIST_BUCKETS - 1], stats.batches);

    store_info info;
    cr_assert_eq(store_info_get(st, &info), 0);
    cr_assert_eq(info.applied_index, 2 + SUBMITTERS * PER_SUBMITTER);
    store_close(st);
    nftw(g_dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}
