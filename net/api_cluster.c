/*
 * api_cluster.c — /v1/cluster, for admins: this node's view of the cluster
 * (the raft actor answers), promote and drain (operations the raft actor
 * runs, forwarded to the leader where they must), the state digest the
 * cluster tests compare across nodes (computed here, in the actor's read
 * transaction, so the raft actor never scans the store), and the fault
 * switch of the tests (only with --fault-injection). Strong reads are in
 * http.c: they wait on REPL_OP_SYNC, then run the read handler.
 */
#include "net/internal.h"

#include <stdio.h>
#include <string.h>

static int submit_op(req_ctx *c, int op, uint64_t node)
{
    c->rq.reply_to = c->a->in;
    atomic_fetch_add(&c->a->srv->inflight, 1);
    repl_op(c->a->srv->rp, &c->rq, op, node);
    return 0;
}

int h_cluster_status(req_ctx *c, const core_uuid *unused)
{
    if (require_role(c, 1u << ROLE_ADMIN))
        return -1;
    return submit_op(c, REPL_OP_STATUS, 0);
}

int h_cluster_promote(req_ctx *c, const core_uuid *node)
{
    if (require_role(c, 1u << ROLE_ADMIN))
        return -1;
    return submit_op(c, REPL_OP_PROMOTE, store_rd64(node->b));
}

int h_cluster_drain(req_ctx *c, const core_uuid *unused)
{
    if (require_role(c, 1u << ROLE_ADMIN))
        return -1;
    return submit_op(c, REPL_OP_DRAIN, 0);
}

int h_cluster_digest(req_ctx *c, const core_uuid *unused)
{
    store_txn *t = read_txn(c);
    uint8_t d[32];
    char hex[65];
    struct evbuffer *b = evhttp_request_get_output_buffer(c->req);

    if (require_role(c, 1u << ROLE_ADMIN))
        return -1;
    if (store_digest(t, d))
        return reply_problem(c, 500, "internal", "the state could not be read", NULL);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    evbuffer_add_printf(b, "{\"applied_index\":%llu,\"command_seq\":%llu,\"digest\":\"%s\"}",
                        (unsigned long long)store_meta_u64(t, "raft_applied"),
                        (unsigned long long)store_meta_u64(t, "applied"), hex);
    reply_buf(c, 200, "application/json", b);
    return 0;
}

int h_cluster_fault(req_ctx *c, const core_uuid *unused)
{
    static const char *const allowed[] = {"isolate", NULL};
    json_t *o;
    int on = 0, rc;

    if (!c->a->srv->cfg->raft.fault_injection)
        return reply_problem(c, 404, "not-found", "no such endpoint", NULL);
    if (require_role(c, 1u << ROLE_ADMIN))
        return -1;
    if (!(o = body_object(c, allowed)))
        return -1;
    if ((rc = body_bool(c, o, "isolate", &on)) < 0)
        return -1;
    if (rc)
        return reply_problem(c, 422, "validation", "isolate (true or false) is required",
                             "isolate");
    repl_isolate(c->a->srv->rp, on);
    reply_json(c, 200, on ? "{\"isolated\":true}" : "{\"isolated\":false}", on ? 17 : 18);
    return 0;
}
