/* worker_stats.h - one worker's counters, in a layout that other processes
 * can read: `python -m osvrt top` maps a runtime's stats file (osvrt/observe/statsfile.py)
 * and reads these while the program runs, with no cooperation from it.
 *
 * Each counter has one writer, the worker that owns it, which stores with
 * relaxed atomics (a plain add: no read-modify-write is needed with a single
 * writer); readers load them relaxed and may see a value a few updates old.
 */
#ifndef OSVRT_WORKER_STATS_H
#define OSVRT_WORKER_STATS_H

#include <stdatomic.h>
#include <stdint.h>

#include "stat.h"

#define OSVRT_STATS_MAGIC   0x5453545256534f00ull   /* "\0OSVRTST" little-endian */
#define OSVRT_STATS_VERSION 2u   /* 2: the header names its writer (start_time, pid_ns) */

struct osvrt_worker_stats {
    _Atomic uint64_t switches;        /* green threads switched in */
    _Atomic uint64_t wakes_local;     /* wakes of threads of this CPU, from this CPU */
    _Atomic uint64_t wakes_remote;    /* threads that arrived through the pushlist */
    _Atomic uint64_t migrations_in;
    _Atomic uint64_t migrations_out;
    _Atomic uint64_t stalls;          /* stall reports (the watchdog writes it) */
    _Atomic uint64_t spawned;         /* spawn() calls made on this worker */
    _Atomic uint64_t idle_ns;         /* time in the core's idle */
    _Atomic uint64_t runq_len;        /* queued threads, as of the last switch */
    _Atomic uint64_t current_id;      /* the running thread's id, 0 when idle */
    _Atomic uint64_t cpu;             /* the host CPU the worker is pinned to */
    _Atomic uint64_t idle_since_ns;   /* CLOCK_MONOTONIC ns when the idle period in progress
                                         began, 0 when not idle: a reader adds the period
                                         that idle_ns does not hold yet (a sleep with no
                                         timer may last minutes) */
    _Atomic uint64_t _reserved[4];    /* keeps the slot at 128 bytes */
};

_Static_assert(sizeof(struct osvrt_worker_stats) == 128, "a stats slot is 128 bytes");

/* A stats file: this header, then one struct osvrt_worker_stats per worker. */
struct osvrt_stats_header {
    uint64_t magic;
    uint32_t version;
    uint32_t ncpu;
    uint64_t pid;
    uint64_t slot_size;               /* sizeof(struct osvrt_worker_stats) */
    _Atomic uint64_t alive;           /* 1 while the runtime runs; 0 after stop() */
    uint64_t threads_offset;          /* the busiest-threads area (osvrt/observe/statsfile.py) */
    uint64_t start_time;              /* the writer's start (/proc/<pid>/stat field 22), or 0 */
    uint64_t pid_ns;                  /* the writer's pid-namespace inode, or 0 */
};

_Static_assert(sizeof(struct osvrt_stats_header) == 64, "the stats header is 64 bytes");

/* osvrt_stat_add (stat.h): relaxed, no RMW: the owner is the only writer (see above). */

static inline void osvrt_stat_set(_Atomic uint64_t *c, uint64_t v)
{
    atomic_store_explicit(c, v, memory_order_relaxed);
}

#endif
