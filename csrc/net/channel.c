#include "channel.h"

#include <errno.h>
#include <stdlib.h>

struct osvrt_chan *osvrt_chan_new(uint32_t capacity, uint32_t arena_size)
{
    if (capacity == 0 || capacity > OSVRT_CHAN_MAX_CAPACITY || arena_size == 0
        || arena_size > OSVRT_CHAN_MAX_ARENA) {
        errno = EINVAL;
        return NULL;
    }
    /* One block: the header, then the slots, then the arena. */
    size_t head = (sizeof(struct osvrt_chan) + OSVRT_CACHELINE - 1) & ~(size_t)(OSVRT_CACHELINE - 1);
    size_t slots = ((size_t)capacity * sizeof(struct osvrt_chan_slot) + OSVRT_CACHELINE - 1)
                   & ~(size_t)(OSVRT_CACHELINE - 1);
    size_t total = head + slots + ((arena_size + OSVRT_CACHELINE - 1) & ~(size_t)(OSVRT_CACHELINE - 1));
    char *mem = aligned_alloc(OSVRT_CACHELINE, total);
    if (!mem) {
        errno = ENOMEM;
        return NULL;
    }
    /* The header and slots zeroed; the arena needs no zeroing (only written
     * bytes are read), but its first pages are faulted in now, here in the
     * binding thread, and not one by one by the producer during the arena's
     * first lap, where each fault stalls the burst of every flow (a burst of
     * the classifier's thread, or of a worker holding the drain lock): with
     * the 128 faults of a default 512 KiB arena, a new flow's first 10,000
     * datagrams (16 in flight) went 5-10% slower.  Capped at 1 MiB (twice the
     * default), so that an endpoint given a large buffer but little traffic,
     * or many of them, commit no more than that each at once. */
    size_t arena = total - head - slots;
    memset(mem, 0, head + slots + (arena < OSVRT_CHAN_PREFAULT ? arena : OSVRT_CHAN_PREFAULT));
    struct osvrt_chan *c = (struct osvrt_chan *)mem;
    atomic_init(&c->tail, 0);
    atomic_init(&c->waiter, 0);
    atomic_init(&c->head, 0);
    c->pending = c->tail_cache = c->arena_head = 0;
    atomic_init(&c->received, 0);
    atomic_init(&c->dropped_full, 0);
    atomic_init(&c->dropped_too_big, 0);
    atomic_init(&c->wakes, 0);
    c->burst_mark = 0;
    c->capacity = capacity;
    c->arena_size = arena_size;
    c->slots = (struct osvrt_chan_slot *)(mem + head);
    c->arena = (uint8_t *)(mem + head + slots);
    return c;
}

void osvrt_chan_free(struct osvrt_chan *c)
{
    free(c);
}

void osvrt_chan_get_stats(const struct osvrt_chan *c, struct osvrt_chan_stats *o)
{
    struct osvrt_chan *m = (struct osvrt_chan *)c;   /* atomic loads take non-const pointers in C11 */
    /* relaxed: statistics, each written by one side (osvrt_stat_add); a
     * snapshot needs no order between them. */
    o->received = atomic_load_explicit(&m->received, memory_order_relaxed);
    o->dropped_full = atomic_load_explicit(&m->dropped_full, memory_order_relaxed);
    o->dropped_too_big = atomic_load_explicit(&m->dropped_too_big, memory_order_relaxed);
    o->wakes = atomic_load_explicit(&m->wakes, memory_order_relaxed);
}
