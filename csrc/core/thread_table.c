#include "thread_table.h"

#include <stdlib.h>
#include <string.h>

int osvrt_table_init(struct osvrt_thread_table *t)
{
    memset(t, 0, sizeof *t);
    return pthread_mutex_init(&t->lock, NULL);
}

void osvrt_table_destroy(struct osvrt_thread_table *t)
{
    for (uint32_t c = 0; c < t->nchunks; c++)
        /* relaxed: destroy runs after every user of the table has stopped. */
        free(atomic_load_explicit(&t->chunks[c], memory_order_relaxed));
    free(t->free_idx);
    pthread_mutex_destroy(&t->lock);
    memset(t, 0, sizeof *t);
}

/* The generation after gen: never 0, so no handle is ever 0 (grow). */
static inline uint32_t next_gen(uint32_t gen)
{
    uint32_t g = (gen + 1) & OSVRT_GEN_MASK;
    return g ? g : 1;
}

/* Called with the lock held. */
static int grow(struct osvrt_thread_table *t)
{
    if (t->nchunks == OSVRT_MAX_CHUNKS)
        return -1;
    uint32_t cap = t->free_cap + OSVRT_CHUNK_SIZE;
    uint32_t *fi = realloc(t->free_idx, cap * sizeof *fi);
    if (!fi)
        return -1;
    t->free_idx = fi;
    t->free_cap = cap;
    struct osvrt_thread *chunk = aligned_alloc(OSVRT_CACHELINE, OSVRT_CHUNK_SIZE * sizeof *chunk);
    if (!chunk)
        return -1;
    uint32_t base = t->nchunks << OSVRT_CHUNK_SHIFT;
    for (uint32_t i = 0; i < OSVRT_CHUNK_SIZE; i++) {
        chunk[i].link.next = NULL;
        chunk[i].link.key = 0;
        chunk[i].cwake.next = NULL;
        chunk[i].cwake.key = 0;
        atomic_init(&chunk[i].linked, 0);
        /* Generations start at 1 (and skip 0 when they wrap, next_gen):
         * handle 0 means "no handle" to the engine (worker.c, t->h == 0),
         * and record 0's first handle would otherwise be 0: its thread never
         * had its handle freed, and stayed referenced for the runtime's life. */
        atomic_init(&chunk[i].word, osvrt_word(1, OSVRT_FREE));
        atomic_init(&chunk[i].cpu, 0);
        chunk[i].idx = base + i;
    }
    /* Push in reverse so the lowest indexes are handed out first. */
    for (uint32_t i = OSVRT_CHUNK_SIZE; i-- > 0;)
        t->free_idx[t->nfree++] = base + i;
    /* release: the initialized records happen-before any osvrt_thread_at(). */
    atomic_store_explicit(&t->chunks[t->nchunks], chunk, memory_order_release);
    t->nchunks++;
    return 0;
}

uint32_t osvrt_table_alloc(struct osvrt_thread_table *t, uint32_t cpu, uint64_t *out, uint32_t n)
{
    uint32_t got = 0;
    pthread_mutex_lock(&t->lock);
    while (got < n) {
        if (t->nfree == 0 && grow(t) != 0)
            break;
        uint32_t idx = t->free_idx[--t->nfree];
        struct osvrt_thread *th = osvrt_thread_at(t, idx);
        /* relaxed: a free record is touched only under t->lock (free's CAS
         * published FREE before the index reached the free stack). */
        uint32_t gen = (uint32_t)(atomic_load_explicit(&th->word, memory_order_relaxed) >> 32);
        th->link.next = NULL;
        th->cwake.next = NULL;
        atomic_store_explicit(&th->cpu, cpu, memory_order_relaxed);
        /* release: cpu and link are set before the handle becomes valid. */
        atomic_store_explicit(&th->word, osvrt_word(gen, OSVRT_UNSTARTED), memory_order_release);
        out[got++] = osvrt_handle_make(gen, idx);
    }
    pthread_mutex_unlock(&t->lock);
    return got;
}

uint32_t osvrt_table_free(struct osvrt_thread_table *t, const uint64_t *h, uint32_t n)
{
    uint32_t freed = 0;
    pthread_mutex_lock(&t->lock);
    for (uint32_t i = 0; i < n; i++) {
        struct osvrt_thread *th = osvrt_thread_get(t, h[i]);
        if (!th)
            continue;
        uint32_t gen = osvrt_handle_gen(h[i]);
        /* acquire: pairs with the drain's release clear of `linked`. */
        if (atomic_load_explicit(&th->linked, memory_order_acquire))
            continue;                   /* `link` is still on a pushlist */
        /* relaxed: a first guess; the CAS below validates it. */
        uint64_t w = atomic_load_explicit(&th->word, memory_order_relaxed);
        int ok = 0;
        /* A record on a pushlist (WAKING) is still linked: freeing it would let
         * it be pushed again while linked, so it is refused.  The CAS bumps the
         * generation and the state together: from then on every old handle
         * fails its check and no wake can slip in between.  acq_rel: orders the
         * owner's last uses of the record before its reuse. */
        while ((uint32_t)(w >> 32) == gen && (uint32_t)w != OSVRT_FREE
               && (uint32_t)w != OSVRT_WAKING) {
            if (atomic_compare_exchange_weak_explicit(&th->word, &w,
                                                      osvrt_word(next_gen(gen), OSVRT_FREE),
                                                      memory_order_acq_rel,
                                                      memory_order_relaxed)) {
                ok = 1;
                break;
            }
        }
        if (!ok)
            continue;
        t->free_idx[t->nfree++] = th->idx;
        freed++;
    }
    pthread_mutex_unlock(&t->lock);
    return freed;
}
