/*
 * ids.h — deterministic ids for unit tests: ID(n) is a UUIDv7-shaped id
 * ending in n, so tests name users, resources and loans by small numbers
 * and B-tree order follows n.
 */
#ifndef CIRCA_TEST_IDS_H
#define CIRCA_TEST_IDS_H

#include "core/core.h"

static inline core_uuid ID(unsigned n)
{
    core_uuid u = {{0}};
    u.b[0] = 0x01;
    u.b[6] = 0x70;
    u.b[8] = 0x80;
    u.b[12] = (uint8_t)(n >> 24);
    u.b[13] = (uint8_t)(n >> 16);
    u.b[14] = (uint8_t)(n >> 8);
    u.b[15] = (uint8_t)n;
    return u;
}

/* ID(n) as text; the last 8 results stay valid */
static inline const char *IDS(unsigned n)
{
    static char buf[8][37];
    static int i;
    core_uuid u = ID(n);
    char *b = buf[i++ % 8];
    core_uuid_fmt(&u, b);
    return b;
}

#endif
