/*
 * core.c — logging, clocks, ids, inboxes and the domain vocabulary.
 *
 * Logging writes whole JSON lines with one write(2) so lines from several
 * threads never interleave. The inbox is Vyukov's intrusive MPSC queue: a
 * push is one atomic exchange plus one store; the eventfd is written only
 * by the producer whose push made the pending count leave zero.
 */
#include "core/core.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

/* ---- logging ---- */

static int log_level = LOG_INFO;
static const char *level_names[] = {"debug", "info", "warn", "error"};

void core_log_set_level(int level)
{
    log_level = level;
}

int core_log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

void core_json_escape(const char *s, char *out, size_t outlen)
{
    size_t o = 0;
    if (outlen == 0)
        return;
    for (; *s && o + 7 < outlen; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch < 0x20) {
            o += (size_t)snprintf(out + o, outlen - o, "\\u%04x", ch);
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o] = '\0';
}

void core_log(int level, const char *msg, const char *fields, ...)
{
    char line[2048], ts[21];
    int64_t ms;
    size_t n;
    va_list ap;

    if (level < log_level)
        return;
    ms = core_now_ms();
    core_fmt_time(ms / 1000, ts);
    n = (size_t)snprintf(line, sizeof line, "{\"ts\":\"%.19s.%03dZ\",\"level\":\"%s\",\"msg\":\"",
                         ts, (int)(ms % 1000), level_names[level]);
    core_json_escape(msg, line + n, sizeof line - n - 64);
    n += strlen(line + n);
    line[n++] = '"';
    if (fields && *fields) {
        line[n++] = ',';
        va_start(ap, fields);
        int w = vsnprintf(line + n, sizeof line - n - 3, fields, ap);
        va_end(ap);
        if (w > 0)
            n += (size_t)w < sizeof line - n - 3 ? (size_t)w : sizeof line - n - 4;
    }
    line[n++] = '}';
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, n) < 0)
        return;
}

/* ---- clocks ---- */

int64_t core_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t core_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* years outside 0..9999 do not fit RFC 3339: clamp rather than overflow */
static int utc(int64_t unix_s, struct tm *tm)
{
    time_t t = (time_t)(unix_s < 0                      ? 0
                        : unix_s > CMD_MAX_TS_MS / 1000 ? CMD_MAX_TS_MS / 1000
                                                        : unix_s);
    return gmtime_r(&t, tm) != NULL;
}

void core_fmt_time(int64_t unix_s, char out[21])
{
    struct tm tm;
    if (!utc(unix_s, &tm) || strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        out[0] = '\0';
}

void core_fmt_day(int64_t unix_s, char out[11])
{
    struct tm tm;
    if (!utc(unix_s, &tm) || strftime(out, 11, "%Y-%m-%d", &tm) == 0)
        out[0] = '\0';
}

uint64_t core_hash64(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    return h ^ (h >> 31);
}

/* ---- ids ---- */

int core_uuid_v7(core_uuid *u, int64_t now_ms)
{
    if (RAND_bytes(u->b, sizeof u->b) != 1)
        return CORE_EIO;
    for (int i = 0; i < 6; i++)
        u->b[i] = (uint8_t)((uint64_t)now_ms >> (40 - 8 * i));
    u->b[6] = (uint8_t)(0x70 | (u->b[6] & 0x0f));
    u->b[8] = (uint8_t)(0x80 | (u->b[8] & 0x3f));
    return 0;
}

int core_uuid_is_nil(const core_uuid *u)
{
    for (int i = 0; i < 16; i++)
        if (u->b[i])
            return 0;
    return 1;
}

void core_hex(const uint8_t *p, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[p[i] >> 4];
        out[2 * i + 1] = hex[p[i] & 15];
    }
}

void core_uuid_fmt(const core_uuid *u, char out[37])
{
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        core_hex(&u->b[i], 1, out + o);
        o += 2;
    }
    out[o] = '\0';
}

size_t core_utf8_seq(const unsigned char *p, size_t left)
{
    unsigned c = left ? p[0] : 0, need, cp;
    if (c == 0)
        return 0;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        need = 1, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        need = 2, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        need = 3, cp = c & 0x07;
    else
        return 0;
    if (left <= need)
        return 0;
    for (unsigned k = 1; k <= need; k++) {
        if ((p[k] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[k] & 0x3f);
    }
    if ((need == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (need == 3 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return need + 1;
}

long core_utf8_count(const char *s, size_t n)
{
    const uint64_t lo = 0x0101010101010101ull, hi = 0x8080808080808080ull;
    const unsigned char *p = (const unsigned char *)s;
    long cps = 0;
    size_t i = 0, k;
    while (i < n) {
        uint64_t v;
        /* eight ASCII bytes, none of them NUL, at a time: most text is */
        if (n - i >= 8 && (memcpy(&v, p + i, 8), !(v & hi) && !((v - lo) & ~v & hi))) {
            i += 8;
            cps += 8;
            continue;
        }
        if (!(k = core_utf8_seq(p + i, n - i)))
            return -1;
        i += k;
        cps++;
    }
    return cps;
}

int core_uuid_parse(const char *s, size_t len, core_uuid *u)
{
    size_t i = 0;
    int o = 0;
    if (len != 36)
        return CORE_EINVAL;
    while (i < len) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return CORE_EINVAL;
            i++;
            continue;
        }
        int hi = OPENSSL_hexchar2int((unsigned char)s[i]),
            lo = OPENSSL_hexchar2int((unsigned char)s[i + 1]);
        if (hi < 0 || lo < 0)
            return CORE_EINVAL;
        u->b[o++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    return 0;
}

/* ---- inbox ---- */

struct core_inbox {
    core_msg *_Atomic head; /* producers swap themselves in here */
    core_msg *tail;         /* consumer side */
    core_msg stub;
    atomic_long pending;
    int fd;
};

core_inbox *core_inbox_new(void)
{
    core_inbox *in = calloc(1, sizeof *in);
    if (!in)
        return NULL;
    in->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (in->fd < 0) {
        free(in);
        return NULL;
    }
    atomic_store(&in->stub.next, NULL);
    atomic_store(&in->head, &in->stub);
    in->tail = &in->stub;
    return in;
}

void core_inbox_free(core_inbox *in)
{
    if (!in)
        return;
    close(in->fd);
    free(in);
}

int core_inbox_fd(const core_inbox *in)
{
    return in->fd;
}

static void inbox_link(core_inbox *in, core_msg *m)
{
    atomic_store_explicit(&m->next, NULL, memory_order_relaxed);
    core_msg *prev = atomic_exchange_explicit(&in->head, m, memory_order_acq_rel);
    atomic_store_explicit(&prev->next, m, memory_order_release);
}

void core_inbox_push(core_inbox *in, core_msg *m)
{
    inbox_link(in, m);
    if (atomic_fetch_add_explicit(&in->pending, 1, memory_order_acq_rel) == 0) {
        uint64_t one = 1;
        while (write(in->fd, &one, sizeof one) < 0 && errno == EINTR)
            ;
    }
}

void core_inbox_ack(core_inbox *in)
{
    uint64_t v;
    while (read(in->fd, &v, sizeof v) < 0 && errno == EINTR)
        ;
}

core_msg *core_inbox_pop(core_inbox *in)
{
    core_msg *tail, *next;

    for (;;) {
        tail = in->tail;
        next = atomic_load_explicit(&tail->next, memory_order_acquire);
        if (tail == &in->stub) {
            if (!next) {
                /* empty, unless a producer is between its exchange and link */
                if (atomic_load_explicit(&in->head, memory_order_acquire) == tail)
                    return NULL;
                sched_yield();
                continue;
            }
            in->tail = next;
            tail = next;
            next = atomic_load_explicit(&tail->next, memory_order_acquire);
        }
        if (next) {
            in->tail = next;
            break;
        }
        if (atomic_load_explicit(&in->head, memory_order_acquire) != tail) {
            sched_yield(); /* a push is half-way: its link lands in a moment */
            continue;
        }
        inbox_link(in, &in->stub);
        next = atomic_load_explicit(&tail->next, memory_order_acquire);
        if (!next) {
            sched_yield();
            continue;
        }
        in->tail = next;
        break;
    }
    atomic_fetch_sub_explicit(&in->pending, 1, memory_order_acq_rel);
    return tail;
}

/* ---- vocabulary ---- */

static const char *role_names[] = {"member", "librarian", "admin", "service"};
static const char *plan_names[] = {"standard", "premium"};
static const char *ustatus_names[] = {"active", "blocked"};
static const char *rtype_names[] = {"FICTION", "FANTASY",           "NONFICTION", "HISTORY",
                                    "POETRY",  "SCHOLARLY_JOURNAL", "VIDEO",      "AUDIO"};

#define NAME_OF(tab, v) ((v) >= 0 && (size_t)(v) < sizeof tab / sizeof tab[0] ? tab[v] : "?")

static int parse_name(const char **tab, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(tab[i], s) == 0)
            return (int)i;
    return -1;
}

const char *core_role_name(int r)
{
    return NAME_OF(role_names, r);
}
const char *core_plan_name(int p)
{
    return NAME_OF(plan_names, p);
}
const char *core_ustatus_name(int s)
{
    return NAME_OF(ustatus_names, s);
}
const char *core_rtype_name(int t)
{
    return NAME_OF(rtype_names, t);
}
int core_role_parse(const char *s)
{
    return parse_name(role_names, ROLE__COUNT, s);
}
int core_plan_parse(const char *s)
{
    return parse_name(plan_names, PLAN__COUNT, s);
}
int core_ustatus_parse(const char *s)
{
    return parse_name(ustatus_names, USTATUS__COUNT, s);
}
int core_rtype_parse(const char *s)
{
    return parse_name(rtype_names, RTYPE__COUNT, s);
}

void core_policy_default(core_policy *p)
{
    p->loan_days = 21;
    p->max_renewals = 2;
    p->max_loans = 10;
    p->max_loans_premium = 25;
    p->pickup_days = 3;
}

/* ---- buffers ---- */

void core_buf_free(core_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

int core_buf_put(core_buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np)
            return CORE_ENOMEM;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

/* ---- problems ---- */

static const char *status_title(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

char *core_problem(int status, const char *kind, const char *detail, const char *field, size_t *len)
{
    char d[512], f[128];
    char *out;
    int n;

    core_json_escape(detail ? detail : "", d, sizeof d);
    core_json_escape(field ? field : "", f, sizeof f);
    n = snprintf(
        NULL, 0,
        "{\"type\":\"/problems/%s\",\"title\":\"%s\",\"status\":%d,\"detail\":\"%s\"%s%s%s}", kind,
        status_title(status), status, d, field ? ",\"field\":\"" : "", field ? f : "",
        field ? "\"" : "");
    out = malloc((size_t)n + 1);
    if (!out)
        return NULL;
    snprintf(out, (size_t)n + 1,
             "{\"type\":\"/problems/%s\",\"title\":\"%s\",\"status\":%d,\"detail\":\"%s\"%s%s%s}",
             kind, status_title(status), status, d, field ? ",\"field\":\"" : "", field ? f : "",
             field ? "\"" : "");
    *len = (size_t)n;
    return out;
}
