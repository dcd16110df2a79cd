/* pushlist.h - intrusive lock-free multi-producer single-consumer list.
 *
 * Producers push one node with a CAS loop onto `head` (a Treiber-stack push).
 * The single consumer takes the whole list with one exchange and reverses it,
 * which yields the nodes in push order (FIFO per producer, and globally in
 * the order the CASes succeeded).
 *
 * Why there is no ABA problem: the consumer never pops single nodes, it only
 * swaps `head` for NULL.  A producer's CAS compares `head` against the value
 * it linked its node to; whatever happened in between, if `head` still holds
 * that value the new node's `next` is a correct list tail.  A node is never
 * pushed twice while on the list: the caller guarantees single ownership
 * (thread table: the wake protocol's CAS; net: the channel's notify flag).
 *
 * `head` is in a cache line of its own: every producer writes it, the
 * consumer reads it on its hot path.
 */
#ifndef OSVRT_PUSHLIST_H
#define OSVRT_PUSHLIST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define OSVRT_CACHELINE 64

struct osvrt_pushnode {
    struct osvrt_pushnode *next;   /* written by the pusher before its CAS publishes it */
    uint64_t key;                  /* what the consumer reports: a thread handle, a channel tag */
};

struct osvrt_pushlist {
    _Alignas(OSVRT_CACHELINE) _Atomic(struct osvrt_pushnode *) head;
    char _pad[OSVRT_CACHELINE - sizeof(void *)];
};

static inline void osvrt_pushlist_init(struct osvrt_pushlist *l)
{
    atomic_init(&l->head, NULL);
}

/* Returns 1 if the list was empty before this push (the first of a burst). */
static inline int osvrt_pushlist_push(struct osvrt_pushlist *l, struct osvrt_pushnode *n)
{
    /* relaxed: the CAS below re-reads head on failure; this is only a first guess. */
    struct osvrt_pushnode *old = atomic_load_explicit(&l->head, memory_order_relaxed);
    do {
        n->next = old;
        /* release: the node's contents (next, and whatever the caller wrote to the
         * record before pushing) happen-before the consumer's acquire exchange. */
    } while (!atomic_compare_exchange_weak_explicit(&l->head, &old, n,
                                                    memory_order_release,
                                                    memory_order_relaxed));
    return old == NULL;
}

/* Consumer only.  Cheap "anything there?" test for polling loops. */
static inline int osvrt_pushlist_empty(struct osvrt_pushlist *l)
{
    /* relaxed: a hint; the exchange in take_all is what synchronizes. */
    return atomic_load_explicit(&l->head, memory_order_relaxed) == NULL;
}

/* Consumer only: takes every node pushed so far, oldest first. */
static inline struct osvrt_pushnode *osvrt_pushlist_take_all(struct osvrt_pushlist *l)
{
    if (osvrt_pushlist_empty(l))
        return NULL;
    /* acquire: pairs with each pusher's release CAS, so every node's fields
     * (and what the pusher wrote before pushing) are visible here. */
    struct osvrt_pushnode *n = atomic_exchange_explicit(&l->head, NULL, memory_order_acquire);
    struct osvrt_pushnode *fifo = NULL;
    while (n) {                     /* reverse LIFO -> FIFO */
        struct osvrt_pushnode *next = n->next;
        n->next = fifo;
        fifo = n;
        n = next;
    }
    return fifo;
}

#endif
