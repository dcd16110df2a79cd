/* peers.h - C peers for the benchmarks, built with the core so that
 * `python -m osvrt bench` and the C micro-benchmarks measure them in the same
 * run as osvrt (no compiler needed at run time).  Each returns nanoseconds
 * per unit (per one-way switch, per item), or a negative value on error.
 * A cpu of -1 leaves that thread unpinned. */
#ifndef OSVRT_PEERS_H
#define OSVRT_PEERS_H

#include <stdint.h>

enum osvrt_peer_queue {
    OSVRT_PEER_PUSHLIST = 0,      /* lock-free MPSC: push CAS, drain takes all */
    OSVRT_PEER_MUTEX_QUEUE = 1,   /* FIFO under a pthread mutex, consumer takes all per lock */
    OSVRT_PEER_MUTEX_POP = 2,     /* the same FIFO, consumer pops one item per lock (the common shape) */
};

/* Two pthreads hand a token back and forth. */
double osvrt_peer_futex_pingpong(int cpu_a, int cpu_b, uint64_t round_trips);
double osvrt_peer_condvar_pingpong(int cpu_a, int cpu_b, uint64_t round_trips);
double osvrt_peer_spin_pingpong(int cpu_a, int cpu_b, uint64_t round_trips);

/* `producers` pthreads each push `per_producer` items to one consumer thread
 * that takes them in batches; ns per item, wall time of the whole transfer.
 * Also checks that nothing was lost or duplicated (returns -1 if so). */
double osvrt_peer_queue(int kind, int producers, uint64_t per_producer);

#endif
