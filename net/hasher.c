/*
 * hasher.c — password hashing off the HTTP threads.
 *
 * PBKDF2 at a safe cost takes a tenth of a second or more; run on an HTTP
 * actor it would stall every connection of that thread. Register and login
 * hand their hashing to this small pool (one thread per core, a bounded
 * queue) and go back to their event loop; the finished job comes back
 * through the actor's inbox and the handler's continuation runs there.
 * A full queue is answered 503 rather than queued without bound.
 */
#include "net/internal.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#define HASH_QUEUE_MAX 1024

struct hasher {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    hash_job *head, **tail;
    int queued, stop, nthreads;
    pthread_t *threads;
};

static void *hasher_main(void *arg)
{
    hasher *h = arg;
    for (;;) {
        hash_job *j;
        pthread_mutex_lock(&h->mu);
        while (!h->head && !h->stop)
            pthread_cond_wait(&h->cv, &h->mu);
        if (!h->head) {
            pthread_mutex_unlock(&h->mu);
            return NULL;
        }
        j = h->head;
        h->head = j->next;
        if (!h->head)
            h->tail = &h->head;
        h->queued--;
        pthread_mutex_unlock(&h->mu);

        if (j->verify) {
            uint8_t got[32];
            j->ok = auth_password_hash(j->pw, j->pwlen, j->salt, j->iterations, got) == 0 &&
                    CRYPTO_memcmp(got, j->hash, 32) == 0;
        } else {
            j->ok = auth_password_hash(j->pw, j->pwlen, j->salt, j->iterations, j->hash) == 0;
        }
        OPENSSL_cleanse(j->pw, sizeof j->pw);
        core_inbox_push(j->reply_to, &j->link);
    }
}

hasher *hasher_new(int nthreads)
{
    hasher *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    h->tail = &h->head;
    h->threads = calloc((size_t)nthreads, sizeof *h->threads);
    if (!h->threads)
        goto fail;
    for (; h->nthreads < nthreads; h->nthreads++)
        if (pthread_create(&h->threads[h->nthreads], NULL, hasher_main, h))
            goto fail;
    return h;
fail:
    hasher_stop(h);
    return NULL;
}

int hasher_submit(hasher *h, hash_job *j)
{
    int rc = 0;
    j->next = NULL;
    pthread_mutex_lock(&h->mu);
    if (h->stop || h->queued >= HASH_QUEUE_MAX) {
        rc = -1;
    } else {
        *h->tail = j;
        h->tail = &j->next;
        h->queued++;
        pthread_cond_signal(&h->cv);
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

void hasher_stop(hasher *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->stop = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    for (int i = 0; i < h->nthreads; i++)
        pthread_join(h->threads[i], NULL);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h->threads);
    free(h);
}
