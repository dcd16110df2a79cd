/* osvrt.h - the C core's public surface (what the cffi module osvrt._core
 * and the C tests use; the benchmark peers are apart, csrc/bench/).  No Python headers anywhere in csrc/: the core never
 * calls into Python and never needs the GIL. */
#ifndef OSVRT_H
#define OSVRT_H

#include "cpu.h"
#include "pushlist.h"
#include "thread_table.h"
#include "trace.h"
#include "runtime.h"

/* Pin the calling OS thread to one CPU.  0 on success, else an errno value. */
int osvrt_pin_self(int cpu);
/* The CPU the calling OS thread runs on now (sched_getcpu), or -1. */
int osvrt_current_cpu(void);

/* Pointer to the word Python polls on its switch path: non-zero while
 * `cpu` has incoming work.  Reading it needs no call (see docs/design.md). */
static inline const uintptr_t *osvrt_incoming_word(struct osvrt_rt *rt, uint32_t cpu)
{
    return (const uintptr_t *)&rt->cpus[cpu].incoming.head;
}

#endif
