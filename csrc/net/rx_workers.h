/* rx_workers.h - the classifier run by the workers themselves: no thread of
 * its own, no spare CPU, no thread wake-up between the wire and the worker.
 *
 * OSv classifies a packet in the interrupt thread of the CPU that received
 * it.  osvrt's equivalent for a runtime with a worker on every CPU (what
 * osvrt.run gives): every worker drains the classifier's ring itself (cpu.h,
 * struct osvrt_cpu_rx):
 *   - in its loop, once per turn (a look at the status word of each ring's
 *     next frame);
 *   - in its idle poll, at every look (no syscall: the frame's status);
 *   - the "home" worker also when its epoll_wait reports a packet socket
 *     readable (one per ring): the sockets are in the home worker's epoll
 *     only, so a frame that comes while every worker sleeps wakes exactly
 *     one, the home.
 * The home follows the readers: after a burst that woke threads of one
 * other CPU only, that CPU becomes the home (two epoll_ctl calls per ring,
 * made only when the home moves), so the next datagram of a flow whose reader sleeps
 * on that CPU wakes that very worker, and its green thread is woken there
 * with no second wake-up.  (EPOLLEXCLUSIVE on every worker's epoll instead
 * wakes the first sleeper registered, whatever CPU the reader is on: two
 * wake-ups per request whenever that is not the reader's CPU.)
 * The drainer runs the classifier's own burst (osvrt_net_ring_burst: parse,
 * SipHash lookup, rule, copy into the channel, one wake per channel), so a
 * datagram for a thread of the draining CPU becomes a push on that CPU's own
 * pushlist (no kick: the CPU is not asleep) and its green thread runs on the
 * worker's next look; a thread of another CPU is woken through the pushlist
 * and kick, as from the classifier thread.
 *
 * One producer at a time: the classifier's burst state, counters, flow-table
 * reader slot and every channel's producer side are single-writer, so the
 * worker that drains holds the drain lock (a test-and-test-and-set word;
 * acquire on taking it, release on leaving, which hands the whole producer
 * role, ring position included, from one worker to the next).  A worker that
 * finds it taken goes on with its own work: the holder takes the frames, and
 * what it leaves stays readable for the next look.  A burst is at most
 * cfg.burst frames, so the lock is never held for long.
 *
 * The hand-back.  When the classifier's thread handed the ring over (its
 * polling stopped paying: pipelined requests on a CPU it shares), it waits,
 * and the workers watch for the traffic it is kept for: every
 * OSVRT_NET_HANDBACK_WINDOW bursts the drain lock's holder looks back, and if
 * the bursts averaged under 5/4 of a frame (one request at a time, or sparse
 * traffic), it asks the thread to take the ring back (classifier.c,
 * wait_to_take_back).  Without it, one pipelined spell left a ping-pong that came
 * after it on the workers for good, at twice the thread's round trip.
 */
#ifndef OSVRT_RX_WORKERS_H
#define OSVRT_RX_WORKERS_H

#include <stdatomic.h>
#include <stdint.h>

#include "classifier.h"
#include "cpu.h"

struct osvrt_net;

struct osvrt_net_workers {
    struct osvrt_net *net;
    struct osvrt_cpu_rx hook;        /* what every CPU calls (cpu.h) */
    int fds[OSVRT_NET_MAX_RINGS];    /* the classifier's packet sockets */
    uint32_t nfds;
    uint32_t ncpu;
    uint8_t *attached;               /* per CPU; attach/detach's thread only */
    /* the CPU whose epoll holds the sockets: changed by the drain lock's
     * holder (or by an attach or detach, while no worker can drain) */
    uint32_t home;
    /* the sockets are in home's epoll: from an attach to the detach.  This,
     * home (outside a drain) and hand_back are written by the thread that
     * attaches and detaches (the classifier's, or the starter); the stopper
     * reads them only after osvrt_net_stop has joined that thread. */
    int watching;
    /* the thread waits to take the ring back (attached by its hand-over) */
    int hand_back;
    /* the hand-back's look-back: the drain lock's holder's alone */
    uint32_t window_bursts, window_frames;
    /* 1 while a worker is the producer (see above). */
    _Alignas(64) _Atomic uint32_t lock;
    _Alignas(64) _Atomic uint64_t contended;   /* drains that found the lock taken */
    _Atomic uint64_t rehomed;                  /* written by the lock holder */
};

#define OSVRT_NET_HANDBACK_WINDOW 64

/* Attach the classifier's ring to every worker of net->rt (instead of
 * starting its thread).  0 or an errno (EINVAL: no socket, or the thread is
 * running; EEXIST: already attached; ENOMEM; an epoll_ctl error: nothing is
 * left attached). */
int osvrt_net_start_workers(struct osvrt_net *net);
/* The same, run by the classifier's own thread as it hands the ring over
 * (classifier.c, net_main): no check that the thread is stopped; the
 * workers then ask for it back (above).  A second hand-over reuses the
 * `workers` of the first. */
int osvrt_net_attach_workers(struct osvrt_net *net);
/* The thread takes the ring back: detach from every worker, and return once
 * none uses the ring; `workers` stays (stats read it), for the next
 * hand-over or osvrt_net_stop_workers. */
void osvrt_net_detach_workers(struct osvrt_net *net);
/* Detach from every worker and free `workers`; returns once none uses the
 * ring.  Idempotent; osvrt_net_stop calls it.  Never while the classifier's
 * thread runs (it may be using `workers`, asleep after a hand-over): only
 * before its start or after its join. */
void osvrt_net_stop_workers(struct osvrt_net *net);

struct osvrt_net_workers_stats {
    uint64_t contended;              /* looks that found another worker draining */
    uint64_t rehomed;                /* times the sockets moved to another worker's epoll */
    uint64_t handovers;              /* times the classifier's thread handed the ring over */
    uint64_t handbacks;              /* times it took the ring back (ping-pong traffic) */
};
void osvrt_net_workers_get_stats(struct osvrt_net *net, struct osvrt_net_workers_stats *out);

#endif
