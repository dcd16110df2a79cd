#define _GNU_SOURCE
#include "flow_table.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static void random_key(struct osvrt_sipkey *k)
{
    uint64_t b[2];
    ssize_t got = getrandom(b, sizeof b, GRND_NONBLOCK);
    if (got != (ssize_t)sizeof b) {
        /* No entropy yet (early boot): mix what differs between runs.  Weaker,
         * never fatal; the hash stays keyed. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        b[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
        clock_gettime(CLOCK_REALTIME, &ts);
        b[1] = (uint64_t)ts.tv_sec * 0xbf58476d1ce4e5b9ull ^ (uint64_t)(uintptr_t)k;
    }
    k->k0 = b[0];
    k->k1 = b[1];
}

int osvrt_ft_init(struct osvrt_flow_table *t, uint32_t buckets)
{
    memset(t, 0, sizeof *t);
    if (buckets == 0 || buckets > OSVRT_FT_MAX_BUCKETS)
        return EINVAL;
    uint32_t n = 1;
    while (n < buckets)
        n <<= 1;
    t->buckets = calloc(n, sizeof *t->buckets);
    if (!t->buckets)
        return ENOMEM;
    for (uint32_t i = 0; i < n; i++)
        atomic_init(&t->buckets[i], NULL);
    t->mask = n - 1;
    random_key(&t->key);
    atomic_init(&t->n_connected, 0);
    atomic_init(&t->n_wildcard, 0);
    atomic_init(&t->nreaders, 0);
    atomic_init(&t->epoch, 1);
    for (int i = 0; i < OSVRT_FT_MAX_READERS; i++)
        atomic_init(&t->readers[i].epoch, 0);
    int err = pthread_mutex_init(&t->lock, NULL);
    if (err) {
        free(t->buckets);
        t->buckets = NULL;
    }
    return err;
}

void osvrt_ft_set_hash_key(struct osvrt_flow_table *t, uint64_t k0, uint64_t k1)
{
    t->key.k0 = k0;
    t->key.k1 = k1;
}

void osvrt_ft_destroy(struct osvrt_flow_table *t)
{
    if (!t->buckets)
        return;
    /* relaxed: destroy's contract is that no reader or writer is active. */
    for (uint32_t i = 0; i <= t->mask; i++) {
        struct osvrt_ft_node *n = atomic_load_explicit(&t->buckets[i], memory_order_relaxed);
        while (n) {
            struct osvrt_ft_node *next = atomic_load_explicit(&n->next, memory_order_relaxed);
            n->linked = 0;
            n->release(n);
            n = next;
        }
    }
    while (t->retired) {
        struct osvrt_ft_node *n = t->retired;
        t->retired = n->retired_next;
        n->release(n);
    }
    free(t->buckets);
    pthread_mutex_destroy(&t->lock);
    memset(t, 0, sizeof *t);
}

int osvrt_ft_reader_register(struct osvrt_flow_table *t)
{
    pthread_mutex_lock(&t->lock);
    /* relaxed: registration is serialized by the mutex. */
    uint32_t n = atomic_load_explicit(&t->nreaders, memory_order_relaxed);
    int id = n < OSVRT_FT_MAX_READERS ? (int)n : -1;
    if (id >= 0)
        atomic_store_explicit(&t->nreaders, n + 1, memory_order_relaxed);
    pthread_mutex_unlock(&t->lock);
    return id;
}

void osvrt_ft_reader_unregister(struct osvrt_flow_table *t, int reader)
{
    /* A slot is never reused (at most OSVRT_FT_MAX_READERS registrations per
     * table); an unregistered slot reads 0, "outside a read section". */
    osvrt_ft_read_unlock(t, reader);
}

static void hints(struct osvrt_flow_table *t, const struct osvrt_flow_key *k, int delta)
{
    /* relaxed: hints for lookups (see osvrt_ft_classify); the node's own
     * release store is what publishes it. */
    if (k->saddr || k->sport)
        atomic_fetch_add_explicit(&t->n_connected, (uint32_t)delta, memory_order_relaxed);
    if (k->daddr == 0)
        atomic_fetch_add_explicit(&t->n_wildcard, (uint32_t)delta, memory_order_relaxed);
}

/* Called with the lock held. */
static uint32_t reclaim_locked(struct osvrt_flow_table *t)
{
    /* The oldest reader epoch still in a read section bounds what may go.
     * seq_cst: the writer half of the epoch handshake (flow_table.h). */
    uint64_t min = UINT64_MAX;
    /* relaxed: nreaders is written only under t->lock, which we hold. */
    uint32_t nr = atomic_load_explicit(&t->nreaders, memory_order_relaxed);
    for (uint32_t i = 0; i < nr; i++) {
        uint64_t e = atomic_load_explicit(&t->readers[i].epoch, memory_order_seq_cst);
        if (e && e < min)
            min = e;
    }
    struct osvrt_ft_node **pp = &t->retired;
    while (*pp) {
        struct osvrt_ft_node *n = *pp;
        if (n->retire_epoch <= min) {
            *pp = n->retired_next;
            t->nretired--;
            n->release(n);
        } else {
            pp = &n->retired_next;
        }
    }
    return t->nretired;
}

int osvrt_ft_insert(struct osvrt_flow_table *t, struct osvrt_ft_node *n)
{
    n->hash = osvrt_ft_hash(t, &n->key);
    pthread_mutex_lock(&t->lock);
    if (osvrt_ft_lookup(t, &n->key)) {
        pthread_mutex_unlock(&t->lock);
        return EEXIST;
    }
    _Atomic(struct osvrt_ft_node *) *b = &t->buckets[n->hash & t->mask];
    /* relaxed: writers are serialized by the mutex; the store below publishes. */
    atomic_store_explicit(&n->next, atomic_load_explicit(b, memory_order_relaxed),
                          memory_order_relaxed);
    n->linked = 1;
    n->retired_next = NULL;
    hints(t, &n->key, +1);
    /* release: the node's key, hash and contents (the flow behind it) are
     * visible to a reader whose acquire load finds it. */
    atomic_store_explicit(b, n, memory_order_release);
    t->count++;
    reclaim_locked(t);
    pthread_mutex_unlock(&t->lock);
    return 0;
}

uint32_t osvrt_ft_reclaim(struct osvrt_flow_table *t)
{
    pthread_mutex_lock(&t->lock);
    uint32_t left = reclaim_locked(t);
    pthread_mutex_unlock(&t->lock);
    return left;
}

int osvrt_ft_remove(struct osvrt_flow_table *t, struct osvrt_ft_node *n)
{
    pthread_mutex_lock(&t->lock);
    if (!n->linked) {
        pthread_mutex_unlock(&t->lock);
        return ENOENT;
    }
    _Atomic(struct osvrt_ft_node *) *pp = &t->buckets[n->hash & t->mask];
    struct osvrt_ft_node *cur;
    /* relaxed: writers are serialized by the mutex. */
    while ((cur = atomic_load_explicit(pp, memory_order_relaxed)) != n)
        pp = &cur->next;
    /* release: a reader that no longer finds n sees the chain as it is now
     * (n->next is left intact for readers standing on n). */
    atomic_store_explicit(pp, atomic_load_explicit(&n->next, memory_order_relaxed),
                          memory_order_release);
    n->linked = 0;
    hints(t, &n->key, -1);
    t->count--;
    /* seq_cst: the bump is ordered after the unlink for every reader that
     * sees the new epoch (the writer half of the handshake). */
    n->retire_epoch = atomic_fetch_add_explicit(&t->epoch, 1, memory_order_seq_cst) + 1;
    n->retired_next = t->retired;
    t->retired = n;
    t->nretired++;
    reclaim_locked(t);
    pthread_mutex_unlock(&t->lock);
    return 0;
}

void osvrt_ft_synchronize(struct osvrt_flow_table *t)
{
    while (osvrt_ft_reclaim(t) != 0)
        sched_yield();
}
