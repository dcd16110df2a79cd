#include "runtime.h"

#include <stdlib.h>
#include <string.h>

#include "probes.h"

struct osvrt_rt *osvrt_rt_new(uint32_t ncpu)
{
    if (ncpu == 0 || ncpu > 4096)
        return NULL;
    struct osvrt_rt *rt = calloc(1, sizeof *rt);
    if (!rt)
        return NULL;
    rt->cpus = aligned_alloc(OSVRT_CACHELINE, ncpu * sizeof *rt->cpus);
    if (!rt->cpus || osvrt_table_init(&rt->table) != 0) {
        free(rt->cpus);
        free(rt);
        return NULL;
    }
    rt->ncpu = ncpu;
    atomic_init(&rt->active, ncpu);
    atomic_init(&rt->refs, 1);
    for (uint32_t i = 0; i < ncpu; i++) {
        if (osvrt_cpu_init(&rt->cpus[i], i) != 0) {
            while (i-- > 0)
                osvrt_cpu_destroy(&rt->cpus[i]);
            osvrt_table_destroy(&rt->table);
            free(rt->cpus);
            free(rt);
            return NULL;
        }
    }
    return rt;
}

void osvrt_rt_retain(struct osvrt_rt *rt)
{
    /* relaxed: the caller's own reference keeps rt alive across the add. */
    atomic_fetch_add_explicit(&rt->refs, 1, memory_order_relaxed);
}

void osvrt_rt_free(struct osvrt_rt *rt)
{
    if (!rt)
        return;
    /* acq_rel: every holder's last use happens before the free that the
     * last release runs (release on each drop, acquire by the freer). */
    if (atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (uint32_t i = 0; i < rt->ncpu; i++)
        osvrt_cpu_destroy(&rt->cpus[i]);
    osvrt_table_destroy(&rt->table);
    free(rt->cpus);
    free(rt);
}

/* CAS the state part of a thread's word from `from` to `to`, generation fixed. */
static int cas_state(struct osvrt_thread *th, uint64_t h, uint32_t from, uint32_t to,
                     memory_order success)
{
    uint64_t expect = osvrt_word(osvrt_handle_gen(h), from);
    return atomic_compare_exchange_strong_explicit(&th->word, &expect,
                                                   osvrt_word(osvrt_handle_gen(h), to),
                                                   success, memory_order_relaxed);
}

int osvrt_wait_prepare(struct osvrt_rt *rt, uint64_t h, uint32_t cpu)
{
    struct osvrt_thread *th = osvrt_thread_get(&rt->table, h);
    if (!th || cpu >= rt->ncpu)
        return 0;
    uint32_t s = osvrt_thread_state(th);
    if (s == OSVRT_WAKING)
        return 0;
    if (s == OSVRT_WAITING) {
        /* Prepared already: the fence still, as below, for what the caller
         * stored since (a channel's waiter word, chanrx.c) and re-checks. */
        atomic_thread_fence(memory_order_seq_cst);
        return 1;
    }
    /* relaxed: published by the CAS below, before any waker can read it. */
    atomic_store_explicit(&th->cpu, cpu, memory_order_relaxed);
    if (!cas_state(th, h, s, OSVRT_WAITING, memory_order_acq_rel))
        return 0;
    /* seq_cst fence: WAITING is ordered before the caller's re-check of its
     * condition (store-load: an RMW alone does not order a later plain load on
     * every CPU); the waiter half of the argument in runtime.h. */
    atomic_thread_fence(memory_order_seq_cst);
    return 1;
}

int osvrt_wait_abort(struct osvrt_rt *rt, uint64_t h)
{
    struct osvrt_thread *th = osvrt_thread_get(&rt->table, h);
    /* relaxed: the thread keeps running on the CPU it is on; nothing to publish. */
    return th && cas_state(th, h, OSVRT_WAITING, OSVRT_RUNNING, memory_order_relaxed);
}

int osvrt_wake(struct osvrt_rt *rt, uint64_t h)
{
    return osvrt_wake_cpu(rt, h, NULL);
}

int osvrt_wake_cpu(struct osvrt_rt *rt, uint64_t h, uint32_t *cpu_out)
{
    struct osvrt_thread *th = osvrt_thread_get(&rt->table, h);
    if (!th)
        return 0;
    /* seq_cst fence: the waker half of the argument in runtime.h: the caller's
     * condition store is ordered before the CAS reads the state. */
    atomic_thread_fence(memory_order_seq_cst);
    /* acq_rel: only the winner pushes `cwake`, which it now owns. */
    if (!cas_state(th, h, OSVRT_WAITING, OSVRT_WAKING, memory_order_acq_rel))
        return 0;
    /* relaxed: cpu is only changed by the thread's owner while no wake can
     * succeed (the thread is not WAITING), so the CAS above ordered it. */
    uint32_t cpu = atomic_load_explicit(&th->cpu, memory_order_relaxed);
    th->cwake.key = h | OSVRT_KEY_CWAKE;
    OSVRT_PROBE2(wake, h, cpu);
    if (cpu_out)
        *cpu_out = cpu;
    osvrt_cpu_post(&rt->cpus[cpu], &th->cwake);
    return 1;
}

int osvrt_ready(struct osvrt_rt *rt, uint64_t h, uint32_t cpu)
{
    struct osvrt_thread *th = osvrt_thread_get(&rt->table, h);
    if (!th || cpu >= rt->ncpu)
        return 0;
    /* The state word is left alone: it belongs to the C protocol (runtime.h),
     * whose CAS may be racing with this hand-over on the other node. */
    /* relaxed: the caller owns `link`; the push's release CAS publishes key
     * and flag to the draining CPU. */
    atomic_store_explicit(&th->linked, 1, memory_order_relaxed);
    th->link.key = h;
    OSVRT_PROBE2(wake, h, cpu);
    osvrt_cpu_post(&rt->cpus[cpu], &th->link);
    return 1;
}

uint32_t osvrt_drain(struct osvrt_rt *rt, uint32_t cpu, uint64_t *out, uint32_t max)
{
    if (cpu >= rt->ncpu)
        return 0;
    uint32_t n = osvrt_cpu_drain(&rt->cpus[cpu], out, max);
    for (uint32_t i = 0; i < n; i++) {
        if (out[i] & OSVRT_KEY_TAG)
            continue;
        uint64_t h = out[i] & ~OSVRT_KEY_CWAKE;
        struct osvrt_thread *th = osvrt_thread_at(&rt->table, osvrt_handle_idx(h));
        if (out[i] & OSVRT_KEY_CWAKE) {
            /* `cwake` is off the list: WAKING -> QUEUED (the drainer owns a
             * WAKING record: free refuses it, wakes need WAITING).  release: a
             * later wait_prepare/free on another CPU sees it unlinked. */
            atomic_store_explicit(&th->word, osvrt_word(osvrt_handle_gen(h), OSVRT_QUEUED),
                                  memory_order_release);
        } else {
            /* release: pairs with table_free's acquire load of `linked`. */
            atomic_store_explicit(&th->linked, 0, memory_order_release);
        }
    }
    return n;
}

int osvrt_set_state(struct osvrt_rt *rt, uint64_t h, uint32_t state)
{
    struct osvrt_thread *th = osvrt_thread_get(&rt->table, h);
    if (!th || state == OSVRT_WAITING || state == OSVRT_WAKING || state == OSVRT_FREE
        || state > OSVRT_TERMINATED)
        return 0;
    uint32_t s = osvrt_thread_state(th);
    if (s == OSVRT_WAITING || s == OSVRT_WAKING)
        return 0;
    /* relaxed: the owner's own bookkeeping; WAITING/WAKING are never crossed here. */
    return cas_state(th, h, s, state, memory_order_relaxed);
}

uint32_t osvrt_get_state(struct osvrt_rt *rt, uint64_t h)
{
    struct osvrt_thread *th = osvrt_thread_get(&rt->table, h);
    return th ? osvrt_thread_state(th) : OSVRT_FREE;
}
