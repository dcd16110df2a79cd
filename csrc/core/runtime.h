/* runtime.h - the C runtime object (its CPUs and thread table) and the wake
 * protocol over it, implemented once (OSv's, core/sched.cc).
 *
 * A waiter:  osvrt_wait_prepare(h)   publish WAITING (seq_cst)
 *            re-check its condition
 *            if it holds: osvrt_wait_abort(h); else sleep until drained.
 * A waker:   make the condition true, THEN osvrt_wake(h): CAS WAITING -> WAKING,
 *            and only the winner pushes the thread onto its CPU's pushlist and
 *            kicks that CPU if it sleeps.  In any other state a wake is a no-op.
 *
 * Why no wake-up is lost: a seq_cst fence follows the waiter's CAS to WAITING
 * (before its re-check) and precedes the waker's CAS (after its condition
 * store).  So either the re-check sees the condition, or the CAS sees WAITING.  Why no thread is
 * pushed twice: only the CAS winner pushes, and WAITING is re-entered only by
 * the owner after the drain took the thread back (state QUEUED).
 * If a waker wins while the waiter is still running (wait_abort fails), the
 * thread is on its pushlist; the drain sees it and it stays runnable.
 */
#ifndef OSVRT_RUNTIME_H
#define OSVRT_RUNTIME_H

#include <stdint.h>

#include "cpu.h"
#include "thread_table.h"

struct osvrt_rt {
    uint32_t ncpu;
    _Atomic uint32_t active;             /* workers not idle (osvrt_cpu_idle) */
    /* References: the creator's, plus one per C object that keeps a pointer
     * to the runtime (a classifier, classifier.h).  Python frees its own in
     * whatever order the garbage collector finds the objects, so the C
     * objects cannot rely on Python to outlive them. */
    _Atomic uint32_t refs;
    struct osvrt_cpu *cpus;              /* ncpu entries, cache-line aligned */
    struct osvrt_thread_table table;
};

/* A runtime with one reference, the caller's. */
struct osvrt_rt *osvrt_rt_new(uint32_t ncpu);
/* Another reference, for an object that keeps `rt` (the caller holds one). */
void osvrt_rt_retain(struct osvrt_rt *rt);
/* Drop a reference (NULL: nothing); the last one frees the runtime. */
void osvrt_rt_free(struct osvrt_rt *rt);

/* The waiter runs on `cpu`: its wake is pushed there.  1 on success; 0 if the
 * handle is stale or a wake is still in flight (state WAKING: drain first). */
int osvrt_wait_prepare(struct osvrt_rt *rt, uint64_t h, uint32_t cpu);
/* The condition held after all: WAITING -> RUNNING.  Returns 1 if it did; 0 if
 * a waker won the race (the thread is on its pushlist, WAKING). */
int osvrt_wait_abort(struct osvrt_rt *rt, uint64_t h);
/* 1 if this call woke the thread (it was WAITING), else 0. */
int osvrt_wake(struct osvrt_rt *rt, uint64_t h);
/* osvrt_wake, and the CPU the thread was posted to in *cpu_out (if it woke it). */
int osvrt_wake_cpu(struct osvrt_rt *rt, uint64_t h, uint32_t *cpu_out);
/* Hand a thread the caller owns exclusively (a new thread, one it claimed, or
 * one it moves) to `cpu`: its `link` node is pushed there and the CPU kicked.
 * The state word is not touched (a C wake may be racing on `cwake`).
 * Returns 0 for a stale handle or a bad cpu, else 1. */
int osvrt_ready(struct osvrt_rt *rt, uint64_t h, uint32_t cpu);
/* Owner of `cpu` only: take up to max incoming keys; a record whose `cwake`
 * is drained moves WAKING -> QUEUED, one whose `link` is drained is unlinked.  Returns how many keys it wrote.  A key is a
 * thread handle, with OSVRT_KEY_CWAKE set if osvrt_wake (not osvrt_ready)
 * pushed it, or a tagged non-thread key (OSVRT_KEY_TAG). */
uint32_t osvrt_drain(struct osvrt_rt *rt, uint32_t cpu, uint64_t *out, uint32_t max);
/* The owner moves its thread's state (RUNNING, QUEUED, TERMINATED).  Never
 * into or out of WAITING/WAKING: those belong to the protocol above. */
int osvrt_set_state(struct osvrt_rt *rt, uint64_t h, uint32_t state);
uint32_t osvrt_get_state(struct osvrt_rt *rt, uint64_t h);   /* OSVRT_FREE if stale */

#endif
