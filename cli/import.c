/*
 * import.c — `circa import`: the operator's client of catalog imports
 * (POST /v1/imports), for files named on the command line or dropped into
 * a folder that --watch polls.
 *
 * Each file is read whole and sent as one request body, named by its base
 * name (?name=) so that the node records where it came from. The node
 * answers once every row is applied, which can take minutes, so a request
 * waits up to --timeout (600 s) of silence. On a terminal a bar follows
 * the upload, then the seconds the node has been applying the file;
 * otherwise a line before and a line after. With --data the address and an
 * admin token come from the data directory again before each request, so
 * a watcher that runs for days follows node restarts and never sends an
 * expired token.
 *
 * --watch DIR stands in for a bucket's new-object events: a file is taken
 * once its size, mtime and inode stayed the same across two polls (one
 * still being written is left alone), imported, and moved to DIR/done, or
 * to DIR/failed with NAME.reason, never replacing a file there (NAME.1,
 * NAME.2, … instead). An answer that retrying cannot change (a 4xx but 408
 * and 429) fails the file at once; no answer or a 5xx is retried with
 * exponential backoff (or the node's Retry-After when longer). SIGINT or
 * SIGTERM abandons the request under way and leaves its file in DIR: the
 * node knows a file it imported by its SHA-256, so sending it again on the
 * next run changes nothing, and completes an import that stopped midway.
 */
#include "cli/cli.h"

#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <fcntl.h>
#include <event2/http.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define IMPORT_TIMEOUT_S 600
#define TIMEOUT_MAX_S    86400
#define INTERVAL_S       2.0
#define INTERVAL_MIN_S   0.1
#define INTERVAL_MAX_S   3600.0
#define RETRIES          5
#define RETRIES_MAX      100
#define BACKOFF_MAX_S    60
#define BAR_CELLS        20
#define LABEL_MAX        32 /* bytes of a file's name a progress line shows */
#define SUFFIX_MAX       1000
#define READ_CHUNK       (1 << 20)

/* what an attempt came to besides an answer (0) and the CLI_* codes */
enum {
    E_FILE = -20, /* the file cannot be read */
    E_NODE = -21, /* with --data: the node cannot be found, or no token signed */
};

/* how a watched file ended */
enum {
    W_DONE = 0,
    W_FAILED = 1, /* moved to failed/ */
    W_LEFT = 2,   /* left in the folder: it went away, or a signal came */
    W_FATAL = -1, /* it could not be moved; said why */
};

static const char usage_import[] =
    "usage: circa import --data DIR [--config FILE] [--format F] [--timeout SECONDS]\n"
    "                    FILE...\n"
    "       circa import --url http://HOST:PORT [--token TOKEN] [--format F]\n"
    "                    [--timeout SECONDS] FILE...\n"
    "       circa import (--data DIR | --url URL) ... --watch DIR\n"
    "                    [--interval SECONDS] [--retries N] [--once]\n"
    "\n"
    "Imports catalog files into the cluster. Each FILE is sent as it is to the node\n"
    "(POST /v1/imports, named by its base name), which creates the resources that\n"
    "are new, updates those that changed and rejects bad rows with their line number\n"
    "while the others land. A file imported before (the same SHA-256) changes\n"
    "nothing. A line per file gives the counts, then a line per rejected row; on a\n"
    "terminal a bar follows each upload, then the time the node is applying it.\n"
    "With --url the token may also be a librarian's or a service's.\n"
    "\n" CLI_CONN_HELP
    "  --format F         how the files are read: auto (the default: from the first\n"
    "                     bytes), library (the Library module's JSON array), jsonl\n"
    "                     (a resource object per line) or csv (with a header row)\n"
    "  --timeout SECONDS  how long to wait for the node to answer, default 600\n"
    "\n"
    "  --watch DIR        instead of FILEs: import the files that appear in DIR\n"
    "                     until SIGINT or SIGTERM. A file (not a directory, not\n"
    "                     named .*) is taken once its size and modification time\n"
    "                     stayed the same for an interval, then moved to DIR/done,\n"
    "                     or to DIR/failed with NAME.reason saying why; a name\n"
    "                     already there gets a suffix (NAME.1), nothing is\n"
    "                     replaced. A refusal (HTTP 4xx) fails the file at once; no\n"
    "                     answer or a 5xx is retried after 1 s, 2 s, 4 s ... (at\n"
    "                     most 60 s, or the node's Retry-After). A line per event.\n"
    "  --interval SECONDS\n"
    "                     how often DIR is looked at, default 2\n"
    "  --retries N        attempts per file in all, default 5\n"
    "  --once             import every file in DIR now, then exit\n"
    "\n"
    "Exit status: 0 every file was imported (rows the node rejected do not count,\n"
    "a file imported before counts as imported), or --watch was stopped by a signal;\n"
    "1 a file could not be read or imported, or went to failed/; 2 usage error.\n";

typedef struct importer {
    cli_target t;
    const char *format;        /* --format, or NULL */
    long ttl;                  /* of a token signed with --data's key */
    int watch;                 /* log lines with the time; no progress bar */
    cli_progress p;            /* the updating line, on a terminal without --watch */
    char label[LABEL_MAX + 4]; /* the file being sent, as the line names it */
    int index, count;
    int64_t applying_since; /* when the whole file was sent (monotonic ns), or 0 */
} importer;

/* a file of the watched folder, as the last poll saw it */
typedef struct entry {
    char *name;
    off_t size;
    ino_t ino;
    struct timespec mtime;
} entry;

typedef struct listing {
    entry *v;
    size_t n, cap;
} listing;

typedef struct watcher {
    const char *dir;
    int dfd, done, failed; /* directory descriptors */
    double interval;
    int retries, once;
} watcher;

/* the signal that asks a watcher to stop, or 0 */
static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    stopping = sig;
}

/* ---- output --------------------------------------------------------------- */

static void utc_now(char out[32])
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* a line on stdout; a watcher's lines start with the time */
__attribute__((format(printf, 2, 3))) static void say(const importer *im, const char *fmt, ...)
{
    char ts[32];
    va_list ap;

    if (im->watch) {
        utc_now(ts);
        printf("%s ", ts);
    }
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* s without control characters, into buf (s may be buf): the node's reasons
 * may quote a file, and a file's name may hold any byte */
static const char *printable(const char *s, char *buf, size_t len)
{
    size_t i;
    for (i = 0; s[i] && i + 1 < len; i++)
        buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    buf[i] = '\0';
    return buf;
}

/* the line of a 200 answer, then its rejections */
static void print_result(const importer *im, const char *label, const cli_call *c)
{
    json_t *r = json_loadb(c->body, c->len, 0, NULL), *rej, *x;
    json_t *rejected = json_object_get(r, "rejected");
    char a[24], b[24], d[24], e[24], reason[1024];
    json_int_t more;
    size_t i;

    if (!json_is_object(r)) {
        say(im, "%s: imported (the node's answer is not a JSON object)", label);
        goto done;
    }
    if (json_is_true(json_object_get(r, "duplicate"))) {
        say(im, "%s: already imported (same sha256 %.12s…): nothing changed", label,
            cli_jstr(r, "sha256"));
        goto done;
    }
    say(im, "%s: created %s, updated %s, unchanged %s, rejected %s (%s, sha256 %.12s…)", label,
        cli_jint(r, "created", a), cli_jint(r, "updated", b), cli_jint(r, "unchanged", d),
        cli_jint(r, "rejected", e), cli_jstr(r, "format"), cli_jstr(r, "sha256"));
    rej = json_object_get(r, "rejections");
    json_array_foreach (rej, i, x)
        say(im, "  line %s: %s", cli_jint(x, "line", a),
            printable(cli_jstr(x, "reason"), reason, sizeof reason));
    more = json_integer_value(rejected) - (json_int_t)json_array_size(rej);
    if (json_is_true(json_object_get(r, "rejections_truncated")) && more > 0)
        say(im, "  ... and %" JSON_INTEGER_FORMAT " more", more);
done:
    json_decref(r);
}

/* "12.1/19.2 MB" */
static void sizes(uint64_t part, uint64_t total, char *out, size_t len)
{
    static const char *units[] = {"B", "kB", "MB", "GB", "TB"};
    double div = 1;
    int u = 0;

    while (u < 4 && total >= div * 1000) {
        div *= 1000;
        u++;
    }
    if (u == 0)
        snprintf(out, len, "%llu/%llu B", (unsigned long long)part, (unsigned long long)total);
    else
        snprintf(out, len, "%.1f/%.1f %s", (double)part / div, (double)total / div, units[u]);
}

/* the progress line of the file being sent (cli_upload.tick) */
static void on_tick(void *arg, uint64_t sent, uint64_t total, int sent_all)
{
    importer *im = arg;
    char bar[BAR_CELLS * 3 + 1] = "", amount[48];
    uint64_t cells = total ? sent * BAR_CELLS / total : BAR_CELLS;

    if (sent_all) {
        if (!im->applying_since)
            im->applying_since = core_mono_ns();
        cli_progress_show(&im->p, "[%d/%d] %s  applying… %lld s", im->index, im->count, im->label,
                          (long long)((core_mono_ns() - im->applying_since) / 1000000000));
        return;
    }
    for (uint64_t i = 0; i < BAR_CELLS; i++)
        strcat(bar, i < cells ? "█" : "░");
    sizes(sent, total, amount, sizeof amount);
    cli_progress_show(&im->p, "[%d/%d] %s  %s  %3d%%  %s", im->index, im->count, im->label, bar,
                      (int)(total ? sent * 100 / total : 100), amount);
}

/* the end of a file's name, at most LABEL_MAX bytes of it, for a progress line */
static void set_label(importer *im, const char *name)
{
    size_t n = strlen(name);
    const char *tail = name + (n > LABEL_MAX ? n - LABEL_MAX : 0);

    while (tail > name && ((unsigned char)*tail & 0xc0) == 0x80)
        tail++;
    snprintf(im->label, sizeof im->label, "%s%s", tail > name ? "…" : "", tail);
}

/* ---- sending a file ------------------------------------------------------- */

static void free_data(const void *data, size_t len, void *arg)
{
    free((void *)data);
}

/* the bytes of the file at path into a new evbuffer: 0, or E_FILE with the
 * reason in why and errno kept */
static int read_file(const char *path, struct evbuffer **out, uint64_t *size, char *why, size_t wl)
{
    struct stat st;
    uint8_t *data = NULL;
    size_t len = 0;
    ssize_t n;
    int fd, err;

    *out = NULL;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &st))
        goto fail;
    if (!S_ISREG(st.st_mode)) {
        errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
        snprintf(why, wl, "cannot read %s: it is not a regular file", path);
        goto quiet;
    }
    if (!(data = malloc(st.st_size ? (size_t)st.st_size : 1)))
        goto fail;
    while (len < (size_t)st.st_size) {
        size_t want = (size_t)st.st_size - len;
        if ((n = read(fd, data + len, want < READ_CHUNK ? want : READ_CHUNK)) < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto fail;
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (!(*out = evbuffer_new()) ||
        (len && evbuffer_add_reference(*out, data, len, free_data, NULL))) {
        errno = ENOMEM;
        goto fail;
    }
    if (!len)
        free(data);
    close(fd);
    *size = len;
    return 0;
fail:
    snprintf(why, wl, "cannot read %s: %s", path, strerror(errno));
quiet:
    err = errno;
    if (*out)
        evbuffer_free(*out);
    *out = NULL;
    free(data);
    if (fd >= 0)
        close(fd);
    errno = err;
    return E_FILE;
}

/* the name the node records: path's last part, '?' for the bytes of a name
 * that is not UTF-8 */
static void node_name(const char *path, char *out, size_t len)
{
    const char *slash = strrchr(path, '/');
    json_t *utf8;

    snprintf(out, len, "%s", slash ? slash + 1 : path);
    if ((utf8 = json_string(out))) /* jansson takes only valid UTF-8 */
        json_decref(utf8);
    else
        for (char *p = out; *p; p++)
            if ((unsigned char)*p >= 0x80)
                *p = '?';
}

/* POST body (it is emptied) as the file name: 0 with the answer in c
 * (cli_call_clear it), E_NODE with why, or a CLI_* code */
static int post(importer *im, const char *name, struct evbuffer *body, cli_call *c, char *why,
                size_t wl)
{
    cli_upload up = {.body = body,
                     .content_type = "application/octet-stream",
                     .tick = im->p.tty ? on_tick : NULL,
                     .arg = im,
                     .cancel = im->watch ? &stopping : NULL};
    char *enc, *path = NULL;
    int rc = CLI_ENOMEM;

    memset(c, 0, sizeof *c);
    if (cli_target_renew(&im->t, im->ttl, why, wl))
        return E_NODE;
    if (!(enc = evhttp_uriencode(name, -1, 0)) ||
        asprintf(&path, "/v1/imports?name=%s%s%s", enc, im->format ? "&format=" : "",
                 im->format ? im->format : "") < 0) {
        path = NULL;
        goto fail;
    }
    rc = cli_request(&im->t, EVHTTP_REQ_POST, path, &up, c);
fail:
    free(enc);
    free(path);
    return rc;
}

/* ---- FILE... -------------------------------------------------------------- */

/* 0 every file imported, or 1 */
static int import_files(importer *im, char **files, int count)
{
    int failed = 0;

    cli_progress_init(&im->p);
    for (int i = 0; i < count; i++) {
        const char *path = files[i];
        char why[CLI_WHY_MAX], name[NAME_MAX + 1], what[PATH_MAX + 16];
        struct evbuffer *body;
        uint64_t size;
        cli_call c;
        int rc;

        if (read_file(path, &body, &size, why, sizeof why)) {
            fprintf(stderr, "circa: %s\n", why);
            failed = 1;
            continue;
        }
        node_name(path, name, sizeof name);
        snprintf(what, sizeof what, "import of %s", path);
        if (im->p.tty) {
            set_label(im, name);
            im->index = i + 1;
            im->count = count;
            im->applying_since = 0;
            on_tick(im, 0, size, 0);
        } else {
            say(im, "importing %s (%llu bytes)", path, (unsigned long long)size);
        }
        rc = post(im, name, body, &c, why, sizeof why);
        evbuffer_free(body);
        cli_progress_clear(&im->p);
        if (rc == E_NODE) {
            fprintf(stderr, "circa: %s: %s\n", what, why);
        } else if (rc) {
            cli_say_no_answer(&im->t, what, rc);
            if (rc == CLI_TIMEOUT)
                fprintf(stderr,
                        "circa: the node may still finish importing %s; sending it again is "
                        "safe: the node knows a file it imported\n",
                        path);
        } else if (c.status != 200) {
            cli_say_problem(&im->t, what, &c);
        } else {
            print_result(im, path, &c);
        }
        failed |= rc || c.status != 200;
        cli_call_clear(&c);
    }
    return failed;
}

/* ---- --watch DIR ---------------------------------------------------------- */

static void listing_clear(listing *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].name);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

/* the regular files of dir not named .* in name order into l (empty): 0,
 * or CORE_EIO with errno kept */
static int scan(const char *dir, listing *l)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    struct stat st;
    int err;

    if (!d)
        return CORE_EIO;
    while ((errno = 0, de = readdir(d))) {
        entry *e;
        if (de->d_name[0] == '.')
            continue;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW)) {
            if (errno == ENOENT)
                continue;
            goto fail;
        }
        if (!S_ISREG(st.st_mode))
            continue;
        if (l->n == l->cap) {
            size_t cap = l->cap ? 2 * l->cap : 64;
            if (!(e = realloc(l->v, cap * sizeof *e)))
                goto fail;
            l->v = e;
            l->cap = cap;
        }
        e = &l->v[l->n];
        if (!(e->name = strdup(de->d_name)))
            goto fail;
        e->size = st.st_size;
        e->ino = st.st_ino;
        e->mtime = st.st_mtim;
        l->n++;
    }
    if (errno)
        goto fail;
    closedir(d);
    if (l->n)
        qsort(l->v, l->n, sizeof *l->v, by_name);
    return 0;
fail:
    err = errno;
    closedir(d);
    errno = err;
    return CORE_EIO;
}

/* whether e is as the previous poll saw it */
static int unchanged(const listing *prev, const entry *e)
{
    const entry *p = prev->n ? bsearch(e, prev->v, prev->n, sizeof *e, by_name) : NULL;
    return p && p->size == e->size && p->ino == e->ino && p->mtime.tv_sec == e->mtime.tv_sec &&
           p->mtime.tv_nsec == e->mtime.tv_nsec;
}

/* waits, or less when a signal asks to stop: whether one did */
static int nap(double seconds)
{
    int64_t end = core_mono_ns() + (int64_t)(seconds * 1e9), left;

    while (!stopping && (left = end - core_mono_ns()) > 0)
        cli_sleep_ms(left > 100000000 ? 100 : (int)(left / 1000000) + 1);
    return stopping != 0;
}

/* renames without replacing: RENAME_NOREPLACE, or where the file system has
 * no such rename (NFS) a hard link, which cannot replace either. 0 or -1 */
static int rename_noreplace(int from, const char *name, int to, const char *dest)
{
    int err;

    if (renameat2(from, name, to, dest, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -1;
    if (linkat(from, name, to, dest, 0))
        return -1;
    if (unlinkat(from, name, 0)) {
        err = errno;
        unlinkat(to, dest, 0);
        errno = err;
        return -1;
    }
    return 0;
}

/* writes text into the new file name of directory dfd, which must not
 * exist: 0, or -1 with errno set (EEXIST: it does) */
static int write_new(int dfd, const char *name, const char *text)
{
    int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644), err;
    size_t n = strlen(text), off = 0;
    ssize_t w;

    if (fd < 0)
        return -1;
    while (off < n) {
        if ((w = write(fd, text + off, n - off)) < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            goto fail;
        off += (size_t)w;
    }
    if (close(fd)) {
        fd = -1;
        goto fail;
    }
    return 0;
fail:
    err = errno ? errno : EIO;
    if (fd >= 0)
        close(fd);
    unlinkat(dfd, name, 0);
    errno = err;
    return -1;
}

/* moves NAME of the watched folder into the directory sub as NAME, NAME.1,
 * NAME.2, … whichever is free (with reason: DEST.reason holds it, and must
 * be free too): 0 with the name used in dest, or -1 with errno set */
static int move_file(const watcher *w, const char *name, int sub, const char *reason, char *dest,
                     size_t dl)
{
    char rname[NAME_MAX + 32];
    int err;

    for (int k = 0; k < SUFFIX_MAX; k++) {
        if (k)
            snprintf(dest, dl, "%s.%d", name, k);
        else
            snprintf(dest, dl, "%s", name);
        snprintf(rname, sizeof rname, "%s.reason", dest);
        if (reason && write_new(sub, rname, reason)) {
            if (errno == EEXIST)
                continue;
            return -1;
        }
        if (rename_noreplace(w->dfd, name, sub, dest) == 0)
            return 0;
        err = errno;
        if (reason)
            unlinkat(sub, rname, 0);
        errno = err;
        if (err != EEXIST)
            return -1;
    }
    errno = EEXIST;
    return -1;
}

/* the text of failed/NAME.reason, a "key: value" line each; NULL when out of memory */
static char *reason_text(const importer *im, const char *name, int attempts, int rc,
                         const cli_call *c, const char *error)
{
    json_t *p = rc == 0 ? json_loadb(c->body, c->len, 0, NULL) : NULL;
    const char *title = json_string_value(json_object_get(p, "title"));
    const char *detail = json_string_value(json_object_get(p, "detail"));
    char ts[32], *text = NULL, line[CLI_WHY_MAX];
    size_t len;
    FILE *f = open_memstream(&text, &len);

    if (!f)
        goto done;
    utc_now(ts);
    fprintf(f, "file: %s\ntime: %s\nnode: %s\nattempts: %d\n", name, ts, im->t.where, attempts);
    if (rc == 0)
        fprintf(f, "status: %d\n", c->status);
    else
        fprintf(f, "status: %s\n", rc == E_FILE ? "not sent" : "no answer");
    if (title)
        fprintf(f, "title: %s\n", printable(title, line, sizeof line));
    if (detail)
        fprintf(f, "detail: %s\n", printable(detail, line, sizeof line));
    fprintf(f, "error: %s\n", error);
    if (fclose(f)) {
        free(text);
        text = NULL;
    }
done:
    json_decref(p);
    return text;
}

/* moves NAME into done/ (reason NULL) or failed/ and says so, naming it
 * shown: W_DONE, W_FAILED or W_FATAL */
static int file_away(const importer *im, const watcher *w, const char *name, const char *shown,
                     const char *reason)
{
    const char *sub = reason ? "failed" : "done";
    char dest[NAME_MAX + 16], dshown[NAME_MAX + 16];

    if (move_file(w, name, reason ? w->failed : w->done, reason, dest, sizeof dest)) {
        fprintf(stderr, "circa: cannot move %s/%s into %s/%s: %s\n", w->dir, name, w->dir, sub,
                strerror(errno));
        return W_FATAL;
    }
    printable(dest, dshown, sizeof dshown);
    if (reason)
        say(im, "%s: moved to failed/%s (why: failed/%s.reason)", shown, dshown, dshown);
    else
        say(im, "%s: moved to done/%s", shown, dshown);
    return reason ? W_FAILED : W_DONE;
}

/* imports NAME of the watched folder, retried as the answer allows, then
 * files it away: a W_* code. Its name is logged without control characters. */
static int watch_file(importer *im, const watcher *w, const char *name)
{
    char path[PATH_MAX + NAME_MAX + 2], why[CLI_WHY_MAX], error[CLI_WHY_MAX], *reason;
    char shown[NAME_MAX + 1];
    struct evbuffer *body;
    uint64_t size;
    cli_call c;
    int delay = 1, rc;

    snprintf(path, sizeof path, "%s/%s", w->dir, name);
    printable(name, shown, sizeof shown);
    for (int attempt = 1;; attempt++) {
        int wait, final;
        if ((rc = read_file(path, &body, &size, why, sizeof why)) && errno == ENOENT) {
            say(im, "%s: gone before it was imported", shown);
            return W_LEFT;
        }
        memset(&c, 0, sizeof c);
        if (!rc) {
            if (attempt == 1)
                say(im, "importing %s (%llu bytes)", shown, (unsigned long long)size);
            else
                say(im, "importing %s (%llu bytes), attempt %d of %d", shown,
                    (unsigned long long)size, attempt, w->retries);
            rc = post(im, name, body, &c, why, sizeof why);
            evbuffer_free(body);
        }
        if (rc == CLI_CANCELLED) {
            say(im, "%s: abandoned; it stays in %s", shown, w->dir);
            return W_LEFT;
        }
        if (rc == 0 && c.status == 200) {
            print_result(im, shown, &c);
            cli_call_clear(&c);
            return file_away(im, w, name, shown, NULL);
        }
        if (rc == 0)
            cli_problem_text(&c, error, sizeof error);
        else if (rc == E_FILE || rc == E_NODE)
            snprintf(error, sizeof error, "%s", why);
        else
            snprintf(error, sizeof error, "no answer from %s: %s", im->t.where,
                     cli_no_answer_why(&im->t, rc, why, sizeof why));
        printable(error, error, sizeof error);
        /* a refusal stays one; so does a file that cannot be read */
        final = rc == E_FILE || (rc == 0 && c.status < 500 && c.status != 408 && c.status != 429);
        if (final || attempt >= w->retries) {
            if (final)
                say(im, "%s: %s", shown, error);
            else
                say(im, "%s: %s; gave up after %d attempts", shown, error, attempt);
            reason = reason_text(im, shown, attempt, rc, &c, error);
            cli_call_clear(&c);
            if (!reason) {
                fprintf(stderr, "circa: out of memory\n");
                return W_FATAL;
            }
            rc = file_away(im, w, name, shown, reason);
            free(reason);
            return rc;
        }
        wait = rc == 0 && c.retry_after > delay ? c.retry_after : delay;
        wait = wait < BACKOFF_MAX_S ? wait : BACKOFF_MAX_S;
        say(im, "%s: %s; attempt %d of %d failed, next in %d s", shown, error, attempt, w->retries,
            wait);
        cli_call_clear(&c);
        if (nap(wait)) {
            say(im, "%s: abandoned; it stays in %s", shown, w->dir);
            return W_LEFT;
        }
        delay = delay < BACKOFF_MAX_S / 2 ? 2 * delay : BACKOFF_MAX_S;
    }
}

/* the directory name in w->dfd, made when missing, opened into *fd: 0 or -1 after saying why */
static int subdir(const watcher *w, const char *name, int *fd)
{
    if ((mkdirat(w->dfd, name, 0777) && errno != EEXIST) ||
        (*fd = openat(w->dfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        fprintf(stderr, "circa: cannot make %s/%s: %s\n", w->dir, name, strerror(errno));
        return -1;
    }
    return 0;
}

/* polls the folder until a signal (or once): 0, or 1 a file failed or the folder cannot be used */
static int watch(importer *im, watcher *w)
{
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESETHAND};
    listing prev = {0}, now = {0};
    int failed = 0, rc = 1, r;

    if ((w->dfd = open(w->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        fprintf(stderr, "circa: cannot watch %s: %s\n", w->dir, strerror(errno));
        return 1;
    }
    if (subdir(w, "done", &w->done) || subdir(w, "failed", &w->failed))
        goto fail;
    /* a second signal ends the process at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (w->once)
        say(im, "importing the files in %s into the node at %s", w->dir, im->t.where);
    else
        say(im, "watching %s every %g s for files to import into the node at %s", w->dir,
            w->interval, im->t.where);
    while (!stopping) {
        if (scan(w->dir, &now)) {
            fprintf(stderr, "circa: cannot list %s: %s\n", w->dir, strerror(errno));
            goto fail;
        }
        for (size_t i = 0; i < now.n && !stopping; i++) {
            if (!w->once && !unchanged(&prev, &now.v[i]))
                continue;
            if ((r = watch_file(im, w, now.v[i].name)) == W_FATAL)
                goto fail;
            failed |= r == W_FAILED;
        }
        listing_clear(&prev);
        prev = now;
        memset(&now, 0, sizeof now);
        if (w->once || nap(w->interval))
            break;
    }
    if (stopping)
        say(im, "stopped by %s", stopping == SIGINT ? "SIGINT" : "SIGTERM");
    else
        say(im, "done%s", failed ? "; some files went to failed/" : "");
    rc = w->once && failed;
fail:
    listing_clear(&prev);
    listing_clear(&now);
    if (w->done >= 0)
        close(w->done);
    if (w->failed >= 0)
        close(w->failed);
    close(w->dfd);
    return rc;
}

/* ---- the command ---------------------------------------------------------- */

static int format_known(const char *f)
{
    return strcmp(f, "auto") == 0 || strcmp(f, "library") == 0 || strcmp(f, "jsonl") == 0 ||
           strcmp(f, "csv") == 0;
}

int cmd_import(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", 1, 0, 'd'},   {"url", 1, 0, 'u'},      {"token", 1, 0, 'T'},
        {"config", 1, 0, 'c'}, {"format", 1, 0, 'f'},   {"timeout", 1, 0, 't'},
        {"watch", 1, 0, 'w'},  {"interval", 1, 0, 'i'}, {"retries", 1, 0, 'r'},
        {"once", 0, 0, 'o'},   {"help", 0, 0, 'h'},     {0, 0, 0, 0}};
    cli_conn_opts co = {0};
    importer im = {0};
    watcher w = {.dfd = -1, .done = -1, .failed = -1, .interval = INTERVAL_S, .retries = RETRIES};
    long timeout = IMPORT_TIMEOUT_S, n;
    int o, rc, watch_only = 0;
    char *end;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (cli_conn_opt(&co, o))
            continue;
        switch (o) {
        case 'f':
            if (!format_known(optarg))
                return cli_usage_error(usage_import,
                                       "--format must be auto, library, jsonl or csv");
            im.format = optarg;
            break;
        case 't':
            timeout = strtol(optarg, &end, 10);
            if (*end || !*optarg || timeout < 1 || timeout > TIMEOUT_MAX_S)
                return cli_usage_error(usage_import, "--timeout must be 1 to 86400 seconds");
            break;
        case 'w':
            w.dir = optarg;
            break;
        case 'i':
            w.interval = strtod(optarg, &end);
            if (*end || !*optarg || !(w.interval >= INTERVAL_MIN_S && w.interval <= INTERVAL_MAX_S))
                return cli_usage_error(usage_import, "--interval must be 0.1 to 3600 seconds");
            watch_only = 1;
            break;
        case 'r':
            n = strtol(optarg, &end, 10);
            if (*end || !*optarg || n < 1 || n > RETRIES_MAX)
                return cli_usage_error(usage_import, "--retries must be 1 to 100");
            w.retries = (int)n;
            watch_only = 1;
            break;
        case 'o':
            w.once = 1;
            watch_only = 1;
            break;
        case 'h':
            fputs(usage_import, stdout);
            return 0;
        default:
            return cli_usage_error(usage_import, NULL);
        }
    }
    if (w.dir && optind < argc)
        return cli_usage_error(usage_import, "give FILEs or --watch DIR, not both");
    if (!w.dir && optind == argc)
        return cli_usage_error(usage_import, "name a FILE to import, or --watch DIR");
    if (!w.dir && watch_only)
        return cli_usage_error(usage_import, "--interval, --retries and --once go with --watch");
    /* a token signed here must outlive the upload */
    im.ttl = CLI_TOKEN_TTL_S + timeout;
    if ((rc = cli_target_open(&co, usage_import, im.ttl, &im.t)))
        return rc;
    im.t.timeout_s = (int)timeout;
    if (w.dir) {
        im.watch = 1;
        rc = watch(&im, &w);
    } else {
        rc = import_files(&im, argv + optind, argc - optind);
    }
    cli_target_close(&im.t);
    return rc;
}
