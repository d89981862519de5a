/*
 * net — the HTTP front: N actor threads, each with its own libevent base,
 * evhttp and SO_REUSEPORT listening socket, so the kernel spreads
 * connections and no lock is shared on the request path. Reads are served
 * from LMDB on the receiving thread; writes become commands for the
 * writer actor and are answered when it replies through the thread's
 * inbox.
 */
#ifndef CIRCA_NET_H
#define CIRCA_NET_H

#include "core/core.h"
#include "persist/store.h"
#include "replication/repl.h"

typedef struct http_server http_server;

enum { HTTP_OK = 0, HTTP_EBIND = -20, HTTP_ECONFIG = -21 };

/* w may be NULL (write-behind off); with it, writes are refused while its
 * backlog is past the high-water mark */
int http_start(const core_config *cfg, store *st, repl *rp, wb *w, http_server **out, char *err,
               size_t errlen);
/* readyz answers 503, listeners close, new writes answer 503 and every
 * answer closes its connection; reads keep working */
void http_drain(http_server *s);
/* requests waiting on the writer */
long http_inflight(http_server *s);
/* stops the actor threads; the writer may still answer into their inboxes */
void http_stop(http_server *s);
/* after the writer stopped: drops late answers and frees s */
void http_free(http_server *s);

#endif
