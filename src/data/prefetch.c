/* prefetch.c — batches assembled on a second host thread, double-buffered:
 * while the caller's thread runs a training step on one batch buffer, the
 * worker gathers (and augments) the next batch into the other.
 *
 * Two slots. A slot is free, queued (submitted, not yet built), built, or
 * held (returned by mpcl_prefetch_next, in use by the caller until the next
 * call). Jobs are built in submission order; one mutex guards the states
 * and two condition variables wake the worker (work queued, or quit) and
 * the caller (a batch built). Host code only. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

enum { SLOT_FREE = 0, SLOT_QUEUED, SLOT_BUILDING, SLOT_BUILT, SLOT_HELD };

typedef struct {
    int state;
    uint64_t seq;     /* submission number: the oldest is built and returned first */
    uint64_t epoch;
    size_t n;
    size_t *index;    /* (max_batch) */
    uint8_t *images;  /* (max_batch, c, h, w) */
    uint8_t *labels;  /* (max_batch) */
} slot;

struct mpcl_prefetch {
    const uint8_t *images, *labels;
    size_t count, c, h, w, sample, max_batch;
    mpcl_augment_options aug;
    uint64_t seed;
    slot slots[2];
    uint64_t next_seq;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    pthread_t thread;
    int quit, thread_started, sync_made;
};

/* The oldest slot in `state`, or -1. */
static int oldest(const mpcl_prefetch *p, int state)
{
    int best = -1;
    for (int i = 0; i < 2; i++)
        if (p->slots[i].state == state && (best < 0 || p->slots[i].seq < p->slots[best].seq))
            best = i;
    return best;
}

static void build(const mpcl_prefetch *p, slot *s)
{
    mpcl_augment_gather(s->images, p->images, s->index, s->n, p->c, p->h, p->w, &p->aug, p->seed,
                        s->epoch);
    if (p->labels)
        for (size_t i = 0; i < s->n; i++)
            s->labels[i] = p->labels[s->index[i]];
}

static void *worker(void *arg)
{
    mpcl_prefetch *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        int i;
        while (!p->quit && (i = oldest(p, SLOT_QUEUED)) < 0)
            pthread_cond_wait(&p->work, &p->mu);
        if (p->quit)
            break;
        slot *s = &p->slots[i];
        s->state = SLOT_BUILDING;
        pthread_mutex_unlock(&p->mu); /* the caller may submit or step meanwhile */
        build(p, s);
        pthread_mutex_lock(&p->mu);
        s->state = SLOT_BUILT;
        pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

void mpcl_prefetch_destroy(mpcl_prefetch *p)
{
    if (!p)
        return;
    if (p->thread_started) {
        pthread_mutex_lock(&p->mu);
        p->quit = 1; /* a batch being built is finished first: the worker checks quit between jobs */
        pthread_cond_broadcast(&p->work);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->thread, NULL);
    }
    if (p->sync_made) {
        pthread_cond_destroy(&p->done);
        pthread_cond_destroy(&p->work);
        pthread_mutex_destroy(&p->mu);
    }
    for (int i = 0; i < 2; i++) {
        free(p->slots[i].index);
        free(p->slots[i].images);
        free(p->slots[i].labels);
    }
    free(p);
}

mpcl_status mpcl_prefetch_create(const uint8_t *images, const uint8_t *labels, size_t count, size_t c,
                                 size_t h, size_t w, size_t max_batch, const mpcl_augment_options *o,
                                 uint64_t seed, mpcl_prefetch **out)
{
    if (!out)
        return MPCL_ERR_ARGUMENT;
    *out = NULL;
    if (!images || count == 0 || c == 0 || h == 0 || w == 0 || max_batch == 0 ||
        c > SIZE_MAX / h / w || max_batch > SIZE_MAX / 2 / (c * h * w))
        return MPCL_ERR_ARGUMENT;
    size_t sample = c * h * w;
    mpcl_prefetch *p = calloc(1, sizeof *p);
    if (!p)
        return MPCL_ERR_NOMEM;
    p->images = images;
    p->labels = labels;
    p->count = count;
    p->c = c;
    p->h = h;
    p->w = w;
    p->sample = sample;
    p->max_batch = max_batch;
    if (o)
        p->aug = *o;
    p->seed = seed;
    for (int i = 0; i < 2; i++) {
        slot *s = &p->slots[i];
        s->index = malloc(max_batch * sizeof *s->index);
        s->images = malloc(max_batch * sample);
        s->labels = malloc(max_batch);
        if (!s->index || !s->images || !s->labels) {
            mpcl_prefetch_destroy(p);
            return MPCL_ERR_NOMEM;
        }
    }
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        mpcl_prefetch_destroy(p);
        return MPCL_ERR_NOMEM;
    }
    if (pthread_cond_init(&p->work, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        mpcl_prefetch_destroy(p);
        return MPCL_ERR_NOMEM;
    }
    if (pthread_cond_init(&p->done, NULL) != 0) {
        pthread_cond_destroy(&p->work);
        pthread_mutex_destroy(&p->mu);
        mpcl_prefetch_destroy(p);
        return MPCL_ERR_NOMEM;
    }
    p->sync_made = 1;
    /* the worker blocks every signal: the caller's handlers run on its own threads */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&p->thread, NULL, worker, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        mpcl_prefetch_destroy(p);
        return MPCL_ERR_NOMEM;
    }
    p->thread_started = 1;
    *out = p;
    return MPCL_OK;
}

mpcl_status mpcl_prefetch_submit(mpcl_prefetch *p, const size_t *src_index, size_t n, uint64_t epoch)
{
    if (!p || !src_index || n == 0 || n > p->max_batch)
        return MPCL_ERR_ARGUMENT;
    for (size_t i = 0; i < n; i++)
        if (src_index[i] >= p->count)
            return MPCL_ERR_ARGUMENT;
    pthread_mutex_lock(&p->mu);
    /* two outstanding (held or submitted) batches fill both slots */
    int i = p->slots[0].state == SLOT_FREE ? 0 : p->slots[1].state == SLOT_FREE ? 1 : -1;
    if (i < 0) {
        pthread_mutex_unlock(&p->mu);
        return MPCL_ERR_STATE;
    }
    slot *s = &p->slots[i];
    memcpy(s->index, src_index, n * sizeof *src_index);
    s->n = n;
    s->epoch = epoch;
    s->seq = p->next_seq++;
    s->state = SLOT_QUEUED;
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
    return MPCL_OK;
}

mpcl_status mpcl_prefetch_next(mpcl_prefetch *p, const uint8_t **images, const uint8_t **labels,
                               size_t *n)
{
    if (!p)
        return MPCL_ERR_ARGUMENT;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < 2; i++)
        if (p->slots[i].state == SLOT_HELD)
            p->slots[i].state = SLOT_FREE;
    /* the oldest submitted batch, in whatever state it is */
    int best = -1;
    for (int i = 0; i < 2; i++)
        if (p->slots[i].state != SLOT_FREE && (best < 0 || p->slots[i].seq < p->slots[best].seq))
            best = i;
    if (best < 0) {
        pthread_mutex_unlock(&p->mu);
        return MPCL_ERR_STATE;
    }
    slot *s = &p->slots[best];
    while (s->state != SLOT_BUILT)
        pthread_cond_wait(&p->done, &p->mu);
    s->state = SLOT_HELD;
    pthread_mutex_unlock(&p->mu);
    if (images)
        *images = s->images;
    if (labels)
        *labels = p->labels ? s->labels : NULL;
    if (n)
        *n = s->n;
    return MPCL_OK;
}
