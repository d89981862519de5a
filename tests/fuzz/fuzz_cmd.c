/* libFuzzer target for the command codec (core/cmd.c). cmd_decode must never crash on arbitrary
 * bytes; whatever it accepts must re-encode to the same bytes and decode to an equal command.
 * Seeds: tests/fuzz/corpus/fuzz_cmd/ (valid encodings of every command type). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

static int str_eq(core_str a, core_str b)
{
    return a.len == b.len && (!a.len || memcmp(a.p, b.p, a.len) == 0);
}

static int cmd_eq(const cmd *a, const cmd *b)
{
    if (a->type != b->type || a->ts_ms != b->ts_ms || memcmp(a->actor.b, b->actor.b, 16) ||
        a->actor_role != b->actor_role || !str_eq(a->idem, b->idem) ||
        (a->idem.len && memcmp(a->req_hash, b->req_hash, 32)))
        return 0;
    switch (a->type) {
    case CMD_BOOTSTRAP:
        return !memcmp(a->u.bootstrap.key, b->u.bootstrap.key, 32);
    case CMD_POLICY:
        return !memcmp(&a->u.policy, &b->u.policy, sizeof a->u.policy);
    case CMD_TICK:
        return 1;
    case CMD_USER_CREATE:
        return !memcmp(a->u.user_create.id.b, b->u.user_create.id.b, 16) &&
               str_eq(a->u.user_create.email, b->u.user_create.email) &&
               str_eq(a->u.user_create.name, b->u.user_create.name) &&
               a->u.user_create.role == b->u.user_create.role &&
               a->u.user_create.plan == b->u.user_create.plan &&
               !memcmp(a->u.user_create.salt, b->u.user_create.salt, 16) &&
               !memcmp(a->u.user_create.hash, b->u.user_create.hash, 32) &&
               a->u.user_create.iterations == b->u.user_create.iterations;
    case CMD_USER_UPDATE:
        return !memcmp(a->u.user_update.id.b, b->u.user_update.id.b, 16) &&
               a->u.user_update.mask == b->u.user_update.mask &&
               a->u.user_update.status == b->u.user_update.status &&
               a->u.user_update.plan == b->u.user_update.plan &&
               a->u.user_update.role == b->u.user_update.role &&
               str_eq(a->u.user_update.name, b->u.user_update.name);
    case CMD_RES_PUT:
        if (memcmp(a->u.res_put.id.b, b->u.res_put.id.b, 16) ||
            a->u.res_put.mode != b->u.res_put.mode || a->u.res_put.type != b->u.res_put.type ||
            a->u.res_put.premium != b->u.res_put.premium ||
            a->u.res_put.copies != b->u.res_put.copies ||
            !str_eq(a->u.res_put.title, b->u.res_put.title) ||
            a->u.res_put.n_authors != b->u.res_put.n_authors ||
            a->u.res_put.n_tags != b->u.res_put.n_tags)
            return 0;
        for (int i = 0; i < a->u.res_put.n_authors; i++)
            if (!str_eq(a->u.res_put.authors[i], b->u.res_put.authors[i]))
                return 0;
        for (int i = 0; i < a->u.res_put.n_tags; i++)
            if (!str_eq(a->u.res_put.tags[i], b->u.res_put.tags[i]))
                return 0;
        return 1;
    case CMD_RES_DELETE:
    case CMD_LOAN_RETURN:
    case CMD_LOAN_RENEW:
    case CMD_HOLD_CANCEL:
        return !memcmp(a->u.target.id.b, b->u.target.id.b, 16);
    case CMD_LOAN_CHECKOUT:
    case CMD_HOLD_PLACE:
        return !memcmp(&a->u.place, &b->u.place, sizeof a->u.place);
    case CMD_APIKEY_CREATE:
        return !memcmp(a->u.apikey.id.b, b->u.apikey.id.b, 16) &&
               !memcmp(a->u.apikey.hash, b->u.apikey.hash, 32) &&
               a->u.apikey.role == b->u.apikey.role && str_eq(a->u.apikey.name, b->u.apikey.name);
    case CMD_IMPORT:
        return a->u.import.n == b->u.import.n && str_eq(a->u.import.rows, b->u.import.rows);
    case CMD_IMPORT_DONE:
        return !memcmp(a->u.import_done.sha256, b->u.import_done.sha256, 32) &&
               a->u.import_done.format == b->u.import_done.format &&
               str_eq(a->u.import_done.name, b->u.import_done.name) &&
               a->u.import_done.rows == b->u.import_done.rows &&
               a->u.import_done.created == b->u.import_done.created &&
               a->u.import_done.updated == b->u.import_done.updated &&
               a->u.import_done.unchanged == b->u.import_done.unchanged &&
               a->u.import_done.rejected == b->u.import_done.rejected;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static cmd a, b; /* large (res_put lists): keep them off the stack */
    core_buf enc = {0};

    if (cmd_decode(data, size, &a) != 0)
        return 0;
    /* the decoder accepted it: the encoder must reproduce the input exactly */
    if (cmd_encode(&a, &enc) != 0)
        __builtin_trap();
    if (enc.len != size || memcmp(enc.p, data, size) != 0)
        __builtin_trap();
    if (cmd_decode(enc.p, enc.len, &b) != 0)
        __builtin_trap();
    if (!cmd_eq(&a, &b))
        __builtin_trap();
    core_buf_free(&enc);
    return 0;
}

#ifdef FUZZ_CMD_GEN_SEEDS
/* Seed generator, not part of the fuzz target:
 *   cc -DFUZZ_CMD_GEN_SEEDS -I. tests/fuzz/fuzz_cmd.c build/libcirca_lib.a -lcrypto -o gen && ./gen
 * DIR writes one valid encoding per command type (and one with an idempotency key) into DIR. */
#include <stdio.h>

int main(int argc, char **argv)
{
    static const char *authors[2] = {"Ursula K. Le Guin",
                                     "\xd0\x91\xd0\xbe\xd1\x80\xd0\xb8\xd1\x81"};
    if (argc != 2)
        return 2;
    for (int type = CMD_BOOTSTRAP; type <= CMD__COUNT; type++) {
        static cmd c;
        core_buf b = {0};
        char path[512];
        memset(&c, 0, sizeof c);
        c.type = (uint8_t)(type == CMD__COUNT ? CMD_LOAN_CHECKOUT : type);
        c.ts_ms = 1795341600000LL;
        c.actor.b[0] = 1;
        c.actor.b[15] = 1;
        c.actor_role = c.type == CMD_RES_PUT || c.type == CMD_RES_DELETE          ? ROLE_LIBRARIAN
                       : c.type == CMD_APIKEY_CREATE || c.type == CMD_USER_UPDATE ? ROLE_ADMIN
                                                                                  : ROLE_MEMBER;
        if (type == CMD__COUNT) {
            c.idem = (core_str){"idem-1", 6};
            memset(c.req_hash, 0xab, 32);
        }
        switch (c.type) {
        case CMD_BOOTSTRAP:
            memset(c.u.bootstrap.key, 7, 32);
            break;
        case CMD_POLICY:
            core_policy_default(&c.u.policy);
            break;
        case CMD_USER_CREATE:
            c.u.user_create.id = c.actor;
            c.u.user_create.email = (core_str){"Ada@Example.org", 15};
            c.u.user_create.name = (core_str){"Ada", 3};
            c.u.user_create.iterations = 1000;
            break;
        case CMD_USER_UPDATE:
            c.u.user_update.id = c.actor;
            c.u.user_update.mask = UPD_STATUS | UPD_NAME;
            c.u.user_update.status = USTATUS_BLOCKED;
            c.u.user_update.name = (core_str){"Ada L.", 6};
            break;
        case CMD_RES_PUT:
            c.u.res_put.id.b[0] = 2;
            c.u.res_put.type = RTYPE_FANTASY;
            c.u.res_put.copies = 2;
            c.u.res_put.title = (core_str){"Earthsea", 8};
            c.u.res_put.n_authors = 2;
            c.u.res_put.authors[0] = (core_str){authors[0], (uint32_t)strlen(authors[0])};
            c.u.res_put.authors[1] = (core_str){authors[1], (uint32_t)strlen(authors[1])};
            c.u.res_put.n_tags = 1;
            c.u.res_put.tags[0] = (core_str){"sf", 2};
            break;
        case CMD_RES_DELETE:
            c.u.target.id.b[0] = 2;
            break;
        case CMD_LOAN_RETURN:
        case CMD_LOAN_RENEW:
            c.u.target.id.b[0] = 3;
            break;
        case CMD_HOLD_CANCEL:
            c.u.target.id.b[0] = 4;
            break;
        case CMD_LOAN_CHECKOUT:
        case CMD_HOLD_PLACE:
            c.u.place.id.b[0] = c.type == CMD_LOAN_CHECKOUT ? 3 : 4;
            c.u.place.user = c.actor;
            c.u.place.resource.b[0] = 2;
            break;
        case CMD_APIKEY_CREATE:
            c.u.apikey.id.b[0] = 5;
            memset(c.u.apikey.hash, 9, 32);
            c.u.apikey.role = ROLE_SERVICE;
            c.u.apikey.name = (core_str){"svc", 3};
            break;
        case CMD_IMPORT: {
            static core_buf rows;
            cmd_row w = {
                .line = 2, .has = ROW_COPIES | ROW_TAGS, .type = RTYPE_POETRY, .copies = 3};
            w.id.b[0] = 6;
            w.title = (core_str){"Ariel", 5};
            w.n_tags = 1;
            w.tags[0] = (core_str){"verse", 5};
            rows.len = 0;
            if (cmd_row_put(&rows, &w))
                return 1;
            c.actor_role = ROLE_LIBRARIAN;
            c.u.import.n = 1;
            c.u.import.rows = (core_str){(const char *)rows.p, (uint32_t)rows.len};
            break;
        }
        case CMD_IMPORT_DONE:
            c.actor_role = ROLE_LIBRARIAN;
            memset(c.u.import_done.sha256, 0x5a, 32);
            c.u.import_done.format = 2;
            c.u.import_done.name = (core_str){"rows.jsonl", 10};
            c.u.import_done.rows = c.u.import_done.created = 1;
            break;
        }
        if (cmd_encode(&c, &b))
            return 1;
        snprintf(path, sizeof path, "%s/seed-%02d%s", argv[1], c.type,
                 type == CMD__COUNT ? "-idem" : "");
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(b.p, 1, b.len, f) != b.len || fclose(f))
            return 1;
        core_buf_free(&b);
    }
    return 0;
}
#endif
