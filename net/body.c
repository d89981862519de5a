/*
 * body.c — request bodies: bounded JSON parsing and typed field getters.
 *
 * Limits come first: the size is capped by evhttp (limits.max_body_bytes),
 * the nesting depth is measured by a scan before jansson builds anything,
 * duplicate keys are refused, and the body must be one object whose keys
 * are all known to the endpoint. Each getter names the field in its
 * problem: 400 for what is not JSON or not expected, 422 for a known
 * field with a wrong type or value.
 */
#include "net/internal.h"

#include <string.h>

int body_depth(const char *p, size_t len)
{
    int depth = 0, max = 0, in_str = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = p[i];
        if (in_str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_str = 0;
            continue;
        }
        if (ch == '"')
            in_str = 1;
        else if (ch == '{' || ch == '[') {
            if (++depth > max)
                max = depth;
        } else if (ch == '}' || ch == ']')
            depth--;
    }
    return max;
}

json_t *body_object(req_ctx *c, const char *const *allowed)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
    size_t len = evbuffer_get_length(in);
    const char *p;
    json_error_t je;
    json_t *o;
    const char *key;
    json_t *v;

    if (c->body) /* a handler run again (a strong read's continuation) */
        return c->body;
    if (len == 0) {
        reply_problem(c, 400, "validation", "a JSON object body is required", NULL);
        return NULL;
    }
    if (len > c->a->srv->cfg->limits.max_body_bytes) {
        reply_problem(c, 413, "payload-too-large", "the body is too large", NULL);
        return NULL;
    }
    p = (const char *)evbuffer_pullup(in, -1);
    if (body_depth(p, len) > c->a->srv->cfg->limits.max_json_depth) {
        reply_problem(c, 400, "validation", "the JSON nests too deeply", NULL);
        return NULL;
    }
    o = json_loadb(p, len, JSON_REJECT_DUPLICATES, &je);
    if (!o) {
        char d[200];
        snprintf(d, sizeof d, "malformed JSON at byte %d: %s", je.position, je.text);
        reply_problem(c, 400, "validation", d, NULL);
        return NULL;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        reply_problem(c, 400, "validation", "the body must be a JSON object", NULL);
        return NULL;
    }
    c->body = o; /* freed with the request; handlers' strings point into it */
    json_object_foreach (o, key, v) {
        const char *const *a = allowed;
        while (*a && strcmp(*a, key) != 0)
            a++;
        if (!*a) {
            char d[160], f[80];
            snprintf(f, sizeof f, "%.64s", key);
            snprintf(d, sizeof d, "unknown field %s", f);
            reply_problem(c, 400, "validation", d, f); /* frees o with c */
            return NULL;
        }
    }
    return o;
}

static int invalid(req_ctx *c, const char *name, const char *what)
{
    char d[160];
    snprintf(d, sizeof d, "%s %s", name, what);
    return reply_problem(c, 422, "validation", d, name);
}

/* UTF-8 length in code points; jansson has already validated the encoding */
static size_t utf8_len(const char *s, size_t n)
{
    size_t cps = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80)
            cps++;
    return cps;
}

int body_str(req_ctx *c, json_t *o, const char *name, int required, size_t min, size_t max,
             core_str *out)
{
    json_t *v = json_object_get(o, name);
    if (!v || json_is_null(v)) {
        if (required)
            return invalid(c, name, "is required");
        return 1;
    }
    if (!json_is_string(v))
        return invalid(c, name, "must be a string");
    size_t len = json_string_length(v);
    if (memchr(json_string_value(v), '\0', len))
        return invalid(c, name, "must not contain NUL characters");
    size_t cps = utf8_len(json_string_value(v), len);
    if (cps < min || cps > max || len > 4 * max) {
        char d[64];
        snprintf(d, sizeof d, "must be %zu to %zu characters", min, max);
        return invalid(c, name, d);
    }
    out->p = json_string_value(v);
    out->len = (uint32_t)len;
    return 0;
}

int body_uint(req_ctx *c, json_t *o, const char *name, int required, uint64_t max, uint64_t *out)
{
    json_t *v = json_object_get(o, name);
    if (!v || json_is_null(v)) {
        if (required)
            return invalid(c, name, "is required");
        return 1;
    }
    if (!json_is_integer(v))
        return invalid(c, name, "must be an integer");
    if (json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max) {
        char d[64];
        snprintf(d, sizeof d, "must be from 0 to %llu", (unsigned long long)max);
        return invalid(c, name, d);
    }
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

int body_bool(req_ctx *c, json_t *o, const char *name, int *out)
{
    json_t *v = json_object_get(o, name);
    if (!v || json_is_null(v))
        return 1;
    if (!json_is_boolean(v))
        return invalid(c, name, "must be true or false");
    *out = json_is_true(v);
    return 0;
}

int body_uuid(req_ctx *c, json_t *o, const char *name, int required, core_uuid *out)
{
    core_str s;
    int rc = body_str(c, o, name, required, 36, 36, &s);
    if (rc)
        return rc;
    if (core_uuid_parse(s.p, s.len, out))
        return invalid(c, name, "must be a UUID");
    return 0;
}

int body_enum(req_ctx *c, json_t *o, const char *name, int required, int (*parse)(const char *),
              int *out)
{
    json_t *v = json_object_get(o, name);
    if (!v || json_is_null(v)) {
        if (required)
            return invalid(c, name, "is required");
        return 1;
    }
    if (!json_is_string(v) || (*out = parse(json_string_value(v))) < 0)
        return invalid(c, name, "has an unknown value");
    return 0;
}

int body_str_list(req_ctx *c, json_t *o, const char *name, size_t maxitems, size_t maxlen,
                  core_str *items, uint8_t *n)
{
    json_t *v = json_object_get(o, name), *e;
    size_t i;
    *n = 0;
    if (!v || json_is_null(v))
        return 1;
    if (!json_is_array(v))
        return invalid(c, name, "must be an array of strings");
    if (json_array_size(v) > maxitems)
        return invalid(c, name, "has too many items");
    json_array_foreach (v, i, e) {
        if (!json_is_string(e))
            return invalid(c, name, "must be an array of strings");
        size_t len = json_string_length(e);
        size_t cps = utf8_len(json_string_value(e), len);
        if (cps < 1 || cps > maxlen || len > 4 * maxlen || memchr(json_string_value(e), '\0', len))
            return invalid(c, name, "has an item that is empty or too long");
        items[i].p = json_string_value(e);
        items[i].len = (uint32_t)len;
    }
    *n = (uint8_t)json_array_size(v);
    return 0;
}
