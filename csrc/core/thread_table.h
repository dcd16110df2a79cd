/* thread_table.h - one C record per green thread, in chunks so ids are stable.
 *
 * A handle is (generation << 32 | index).  The generation and the state share
 * one 64-bit atomic word, so a compare-and-swap on the state also checks the
 * generation: a stale handle (the record was freed and reused) can never move
 * the new incarnation's state.  That is what makes reuse free of ABA hazards.
 *
 * Records are never unmapped while the table lives, so a stale handle is
 * always safe to dereference: it only fails the generation check.
 */
#ifndef OSVRT_THREAD_TABLE_H
#define OSVRT_THREAD_TABLE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "pushlist.h"

enum osvrt_state {
    OSVRT_FREE       = 0,  /* not allocated */
    OSVRT_UNSTARTED  = 1,  /* allocated, never run */
    OSVRT_WAITING    = 2,  /* published by the waiter; a wake may CAS it to WAKING */
    OSVRT_WAKING     = 3,  /* on a CPU's pushlist, not yet drained */
    OSVRT_QUEUED     = 4,  /* drained: owned by its CPU's worker */
    OSVRT_RUNNING    = 5,
    OSVRT_TERMINATED = 6,
};

#define OSVRT_CHUNK_SHIFT 12u
#define OSVRT_CHUNK_SIZE  (1u << OSVRT_CHUNK_SHIFT)   /* records per chunk */
#define OSVRT_MAX_CHUNKS  4096u                       /* 16M records */
/* Generations use 30 bits, which leaves the two top bits of a pushlist key:
 * bit 63 set: not a thread (other kinds of node, e.g. net channels);
 * bit 62 set: a thread woken by osvrt_wake (the C protocol), as opposed to one
 * handed over by osvrt_ready; the Python owner must then claim its wait. */
#define OSVRT_GEN_MASK    0x3fffffffu
#define OSVRT_KEY_TAG     (1ull << 63)
#define OSVRT_KEY_CWAKE   (1ull << 62)

/* Two pushlist nodes, each with exactly one owner at a time, so neither can
 * ever be linked twice: `link` belongs to whoever hands the thread over with
 * osvrt_ready (the Python side claimed it, or owns it as new or moving);
 * `cwake` belongs to the winner of the CAS WAITING -> WAKING in osvrt_wake.
 * Both can be on pushlists at once (a C wake and a cancel racing); the
 * consumer tells them apart by the key's OSVRT_KEY_CWAKE bit. */
struct osvrt_thread {
    struct osvrt_pushnode link;    /* osvrt_ready's node */
    struct osvrt_pushnode cwake;   /* osvrt_wake's node */
    _Atomic uint64_t word;         /* gen << 32 | state */
    _Atomic uint32_t cpu;          /* the CPU whose pushlist its C wakes go to */
    uint32_t idx;
    _Atomic uint32_t linked;       /* 1 while `link` is on a pushlist */
};

struct osvrt_thread_table {
    struct osvrt_thread *_Atomic chunks[OSVRT_MAX_CHUNKS];
    pthread_mutex_t lock;          /* guards allocation only; never on a wake path */
    uint32_t nchunks;
    uint32_t nfree;
    uint32_t free_cap;
    uint32_t *free_idx;            /* stack of free indexes */
};

static inline uint64_t osvrt_handle_make(uint32_t gen, uint32_t idx)
{
    return ((uint64_t)gen << 32) | idx;
}
static inline uint32_t osvrt_handle_idx(uint64_t h) { return (uint32_t)h; }
static inline uint32_t osvrt_handle_gen(uint64_t h) { return (uint32_t)(h >> 32); }
static inline uint64_t osvrt_word(uint32_t gen, uint32_t state)
{
    return ((uint64_t)gen << 32) | state;
}

/* Any index below nchunks*CHUNK is mapped; NULL for indexes never allocated. */
static inline struct osvrt_thread *osvrt_thread_at(struct osvrt_thread_table *t, uint32_t idx)
{
    uint32_t c = idx >> OSVRT_CHUNK_SHIFT;
    if (c >= OSVRT_MAX_CHUNKS)
        return NULL;
    /* acquire: pairs with the release store that published the chunk. */
    struct osvrt_thread *chunk = atomic_load_explicit(&t->chunks[c], memory_order_acquire);
    return chunk ? &chunk[idx & (OSVRT_CHUNK_SIZE - 1)] : NULL;
}

/* The record a handle names, or NULL if the handle is stale or invalid. */
static inline struct osvrt_thread *osvrt_thread_get(struct osvrt_thread_table *t, uint64_t h)
{
    struct osvrt_thread *th = osvrt_thread_at(t, osvrt_handle_idx(h));
    if (!th)
        return NULL;
    /* acquire: see the record as its allocator left it. */
    uint64_t w = atomic_load_explicit(&th->word, memory_order_acquire);
    if ((uint32_t)(w >> 32) != osvrt_handle_gen(h) || (uint32_t)w == OSVRT_FREE)
        return NULL;
    return th;
}

static inline uint32_t osvrt_thread_state(struct osvrt_thread *th)
{
    /* relaxed: a snapshot; every caller that acts on it re-validates it with a
     * CAS on the same word. */
    return (uint32_t)atomic_load_explicit(&th->word, memory_order_relaxed);
}

int  osvrt_table_init(struct osvrt_thread_table *t);
void osvrt_table_destroy(struct osvrt_thread_table *t);
/* Allocates up to n records (state UNSTARTED, on `cpu`); writes their handles.
 * Returns how many it allocated (fewer only when memory runs out). */
uint32_t osvrt_table_alloc(struct osvrt_thread_table *t, uint32_t cpu, uint64_t *out, uint32_t n);
/* Frees records; stale handles, and records with a node still on a pushlist
 * (WAKING, or `linked`), are left alone.  Returns how many it freed. */
uint32_t osvrt_table_free(struct osvrt_thread_table *t, const uint64_t *h, uint32_t n);

#endif
