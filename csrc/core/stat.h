/* A single-writer statistics counter, shared by the worker stats
 * (worker_stats.h) and the net channels (channel.h): defined once here. */
#ifndef OSVRT_STAT_H
#define OSVRT_STAT_H

#include <stdatomic.h>
#include <stdint.h>

/* A writer-owned counter: load + store, no locked read-modify-write.
 * relaxed: a statistic; readers want an eventually consistent value. */
static inline void osvrt_stat_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

#endif
