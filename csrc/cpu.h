/* cpu.h - one per worker: the incoming pushlist, idle (poll, then futex
 * sleep) and kick (our IPI).
 *
 * Idle/kick is a Dekker pair and cannot lose a wake-up:
 *   sleeper: idle_state = SLEEPING; fence(seq_cst); if incoming non-empty: don't sleep
 *   waker:   push onto incoming;    fence(seq_cst); if idle_state == SLEEPING: kick
 * With both fences, at least one side sees the other's store: either the
 * sleeper sees the node, or the waker sees SLEEPING and bumps the futex word,
 * which makes futex_wait return at once if it has not started sleeping yet.
 *
 * Cache lines: `incoming` (written by producers), `idle_state`+`futex`
 * (read by producers, written by the owner), the owner's private fields, and
 * the producers' counters are kept apart.
 */
#ifndef OSVRT_CPU_H
#define OSVRT_CPU_H

#include <stdatomic.h>
#include <stdint.h>

#include "pushlist.h"

enum osvrt_idle_state {
    OSVRT_CPU_BUSY     = 0,  /* running green threads: checks incoming at every trap */
    OSVRT_CPU_POLLING  = 1,  /* idle, spinning on incoming: needs no kick */
    OSVRT_CPU_SLEEPING = 2,  /* idle, in (or about to enter) futex_wait: needs a kick */
};

struct osvrt_cpu_stats {
    uint64_t kicks_sent;       /* futex wakes made to this CPU */
    uint64_t kicks_skipped;    /* wakes that needed no futex wake (busy or polling) */
    uint64_t pushes;           /* nodes pushed onto this CPU (remote wake-ups, moves) */
    uint64_t drained;          /* nodes this CPU has taken in */
    uint64_t idle_ns;          /* time spent in osvrt_cpu_idle */
    uint64_t idle_calls;
    uint64_t sleeps;           /* idle calls that went on to futex_wait */
};

struct osvrt_cpu {
    struct osvrt_pushlist incoming;               /* its own cache line */

    _Alignas(OSVRT_CACHELINE) _Atomic uint32_t idle_state;
    _Atomic uint32_t futex;                       /* bumped by every kick */

    _Alignas(OSVRT_CACHELINE) struct osvrt_pushnode *leftover;  /* owner only */
    uint32_t id;
    _Atomic uint64_t drained, idle_ns, idle_calls, sleeps;      /* written by the owner */

    _Alignas(OSVRT_CACHELINE) _Atomic uint64_t kicks_sent, kicks_skipped, pushes;  /* producers */
};

void osvrt_cpu_init(struct osvrt_cpu *c, uint32_t id);

/* Producer side: push a node (its key already set) and kick if the CPU sleeps. */
void osvrt_cpu_post(struct osvrt_cpu *c, struct osvrt_pushnode *n);
/* Kick: futex-wake the CPU if it is sleeping; count it either way. */
void osvrt_cpu_kick(struct osvrt_cpu *c);

/* Owner side.  Takes up to max incoming keys, oldest first; the rest stay for
 * the next call.  Returns how many it wrote. */
uint32_t osvrt_cpu_drain(struct osvrt_cpu *c, uint64_t *out, uint32_t max);
/* Owner side: 1 if there is incoming work (drainable now), else 0. */
static inline int osvrt_cpu_has_work(struct osvrt_cpu *c)
{
    return c->leftover != NULL || !osvrt_pushlist_empty(&c->incoming);
}
/* Owner side: wait for incoming work, polling for up to spin_ns, then sleeping
 * on the futex.  timeout_ns < 0 waits without limit.  Returns 1 if work is
 * there, 0 on timeout or on a kick that found no work (the owner then looks
 * at its own state, e.g. a stop request, and calls again). */
int osvrt_cpu_idle(struct osvrt_cpu *c, int64_t timeout_ns, int64_t spin_ns);

void osvrt_cpu_get_stats(struct osvrt_cpu *c, struct osvrt_cpu_stats *out);

/* CLOCK_MONOTONIC in ns: the same clock as Python's time.monotonic_ns(). */
int64_t osvrt_now_ns(void);

#endif
