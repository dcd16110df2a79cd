#define _GNU_SOURCE
#include "rx_workers.h"

#include <errno.h>
#include <stdlib.h>

#include "classifier.h"
#include "stat.h"
#include "runtime.h"

static int rx_pending(void *arg)
{
    struct osvrt_net_workers *w = arg;
    return osvrt_net_ring_pending(w->net);
}

/* Put every packet socket into c's epoll (on) or take them out: 0 or an
 * errno value, and then none of them is in (an add that failed half-way is
 * undone). */
static int watch(struct osvrt_net_workers *w, struct osvrt_cpu *c, int on)
{
    for (uint32_t i = 0; i < w->nfds; i++) {
        int e = osvrt_cpu_rx_watch(c, w->fds[i], on);
        if (e && on) {
            while (i-- > 0)
                osvrt_cpu_rx_watch(c, w->fds[i], 0);
            return e;
        }
    }
    return 0;
}

/* The burst woke threads of one CPU only, not the home's: move the sockets
 * to that CPU's epoll.  Drain lock held. */
static void follow_readers(struct osvrt_net_workers *w)
{
    int32_t to = w->net->woke_cpu;
    if (to < 0 || (uint32_t)to == w->home || (uint32_t)to >= w->ncpu)
        return;
    struct osvrt_cpu *cpus = w->net->rt->cpus;
    /* Add before removing: a frame arriving in between wakes one of them. */
    if (watch(w, &cpus[to], 1) != 0)
        return;                       /* the old home stays: correct, only slower */
    if (w->watching)
        watch(w, &cpus[w->home], 0);
    w->home = (uint32_t)to;
    w->watching = 1;
    osvrt_stat_add(&w->rehomed, 1);
}

/* The hand-back's look-back (rx_workers.h), after a burst of n frames.
 * Drain lock held.  Asks once per hand-over: the thread's detach ends it. */
static void look_back(struct osvrt_net_workers *w, uint32_t n)
{
    w->window_frames += n;
    if (++w->window_bursts < OSVRT_NET_HANDBACK_WINDOW)
        return;
    /* Under 5/4 of a frame a burst, not the hand-over's "2 or more": a
     * margin, so that traffic near the line does not send the ring to and
     * fro (each way costs a window of the slower drain). */
    if (4 * (uint64_t)w->window_frames < 5 * (uint64_t)w->window_bursts
        || w->net->cfg.handover == OSVRT_NET_HANDOVER_CYCLE) {
        w->hand_back = 0;
        osvrt_net_ask_back(w->net);
    }
    w->window_bursts = w->window_frames = 0;
}

/* No lock: reading a socket's error is a syscall per ring, safe beside a drain. */
static void rx_error(void *arg)
{
    struct osvrt_net_workers *w = arg;
    osvrt_net_take_error(w->net);
}

static uint32_t rx_drain(void *arg, uint32_t cpu)
{
    (void)cpu;
    struct osvrt_net_workers *w = arg;
    /* relaxed look first: no cache-line steal while another CPU drains. */
    if (atomic_load_explicit(&w->lock, memory_order_relaxed)
        /* acquire: the previous holder's producer state (ring position,
         * burst marks, counters, channel heads, home) is visible to us. */
        || atomic_exchange_explicit(&w->lock, 1, memory_order_acquire)) {
        /* relaxed: a statistic, added to by any worker. */
        atomic_fetch_add_explicit(&w->contended, 1, memory_order_relaxed);
        return 0;
    }
    uint32_t n = osvrt_net_ring_burst(w->net);
    if (n) {
        follow_readers(w);
        if (w->hand_back)
            look_back(w, n);
    }
    /* release: our producer state is complete before the next holder's acquire. */
    atomic_store_explicit(&w->lock, 0, memory_order_release);
    return n;
}

/* Unpublish from every CPU (each returns once its owner is out of the
 * hook), then take the sockets out of the home's epoll: no worker can drain
 * any more, so nothing moves the home meanwhile. */
static void detach_all(struct osvrt_net_workers *w)
{
    struct osvrt_cpu *cpus = w->net->rt->cpus;
    for (uint32_t i = 0; i < w->ncpu; i++) {
        if (w->attached[i])
            osvrt_cpu_rx_detach(&cpus[i]);
        w->attached[i] = 0;
    }
    if (w->watching)
        watch(w, &cpus[w->home], 0);
    w->watching = 0;
}

static struct osvrt_net_workers *workers_new(struct osvrt_net *net, const int *fds, uint32_t nfds)
{
    struct osvrt_net_workers *w = aligned_alloc(64, (sizeof *w + 63) & ~(size_t)63);
    if (!w)
        return NULL;
    w->net = net;
    for (uint32_t i = 0; i < nfds; i++)
        w->fds[i] = fds[i];
    w->nfds = nfds;
    w->ncpu = net->rt->ncpu;
    w->hook.pending = rx_pending;
    w->hook.drain = rx_drain;
    w->hook.error = rx_error;
    w->hook.arg = w;
    w->watching = 0;
    atomic_init(&w->lock, 0);
    atomic_init(&w->contended, 0);
    atomic_init(&w->rehomed, 0);
    if (!(w->attached = calloc(w->ncpu, 1))) {
        free(w);
        return NULL;
    }
    return w;
}

/* Attach: hand_back says whether the workers ask the thread to take the
 * ring back (a hand-over's attach) or not (drain="workers": no thread). */
static int attach(struct osvrt_net *net, int hand_back)
{
    int fds[OSVRT_NET_MAX_RINGS];
    uint32_t nfds = osvrt_net_ring_fds(net, fds);
    if (nfds == 0 || !net->rt || net->rt->ncpu == 0)
        return EINVAL;
    struct osvrt_net_workers *w = net->workers;
    if (w && w->watching)
        return EEXIST;                 /* attached (watching: from attach to detach) */
    int made = !w;
    if (made && !(w = workers_new(net, fds, nfds)))
        return ENOMEM;
    /* No worker reads w now (none attached; a detach returned only once none
     * was inside the hook), so these are plain writes, published below. */
    w->home = 0;
    w->hand_back = hand_back;
    w->window_bursts = w->window_frames = 0;
    /* relaxed: no worker can see w yet.  Held by us until the sockets are in
     * an epoll: a worker that sees the hook first drains nothing yet, and
     * nobody moves the home meanwhile. */
    atomic_store_explicit(&w->lock, 1, memory_order_relaxed);
    /* The hook on every CPU, then the sockets in CPU 0's epoll (the home until
     * a burst wakes a thread elsewhere): a worker that a socket wakes finds
     * the hook (the other way round, a worker woken for frames already in the
     * ring found none, and its level-triggered epoll woke it again at once). */
    for (uint32_t i = 0; i < w->ncpu; i++) {
        osvrt_cpu_rx_attach(&net->rt->cpus[i], &w->hook);
        w->attached[i] = 1;
    }
    int e = watch(w, &net->rt->cpus[0], 1);
    if (e) {
        detach_all(w);                 /* returns once no worker is inside the hook */
        atomic_store_explicit(&w->lock, 0, memory_order_relaxed);   /* nobody else sees it */
        if (made) {
            free(w->attached);
            free(w);
        }
        return e;
    }
    w->watching = 1;
    if (made)
        net->workers = w;    /* only then: stats read it, unlocked, once published */
    /* release: the producer state we leave (the ring position and burst marks
     * of a classifier thread that hands over; home, watching) is complete
     * before the first worker's acquire exchange of the lock (rx_drain). */
    atomic_store_explicit(&w->lock, 0, memory_order_release);
    return 0;
}

int osvrt_net_start_workers(struct osvrt_net *net)
{
    if (net->started)
        return EINVAL;
    return attach(net, 0);
}

int osvrt_net_attach_workers(struct osvrt_net *net)
{
    /* OSVRT_NET_HANDOVER_NOW (tests) hands over for good, so that what a
     * test sends next is the workers' whatever its shape. */
    return attach(net, net->cfg.handover != OSVRT_NET_HANDOVER_NOW);
}

void osvrt_net_detach_workers(struct osvrt_net *net)
{
    struct osvrt_net_workers *w = net->workers;
    if (!w || !w->watching)
        return;
    /* Each CPU's detach waits until its worker is out of the hook, and its
     * seq_cst load of rx_inuse reads the release store that worker made on
     * the way out (cpu.c, rx_use): whatever a worker wrote as the producer,
     * under the drain lock, is the caller's to read from here on. */
    detach_all(w);
}

void osvrt_net_stop_workers(struct osvrt_net *net)
{
    struct osvrt_net_workers *w = net->workers;
    if (!w)
        return;
    detach_all(w);      /* returns once no worker is inside the hook; idempotent */
    net->workers = NULL;
    free(w->attached);
    free(w);
}

void osvrt_net_workers_get_stats(struct osvrt_net *net, struct osvrt_net_workers_stats *o)
{
    /* While the thread runs, it may be writing `workers` (its first
     * hand-over): read it only once a hand-over is counted; from then on it
     * stays until the thread is joined (a hand-back keeps it). */
    uint64_t handovers = osvrt_net_handovers(net);
    struct osvrt_net_workers *w = !net->started || handovers ? net->workers : NULL;
    /* relaxed: statistics. */
    o->contended = w ? atomic_load_explicit(&w->contended, memory_order_relaxed) : 0;
    o->rehomed = w ? atomic_load_explicit(&w->rehomed, memory_order_relaxed) : 0;
    o->handovers = handovers;
    /* acquire: pairs with wait_to_take_back's release increment (a reader
     * that sees a hand-back sees the flag it cleared, or a later value). */
    o->handbacks = atomic_load_explicit(&net->handbacks, memory_order_acquire);
}
