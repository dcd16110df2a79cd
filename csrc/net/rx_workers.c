#define _GNU_SOURCE
#include "rx_workers.h"

#include <errno.h>
#include <stdlib.h>

#include "classifier.h"
#include "wake.h"

static int rx_pending(void *arg)
{
    struct osvrt_net_workers *w = arg;
    return osvrt_net_ring_pending(w->net);
}

static uint32_t rx_drain(void *arg, uint32_t cpu)
{
    (void)cpu;
    struct osvrt_net_workers *w = arg;
    /* relaxed look first: no cache-line steal while another CPU drains. */
    if (atomic_load_explicit(&w->lock, memory_order_relaxed)
        /* acquire: the previous holder's producer state (ring position,
         * burst marks, counters, channel heads) is visible to us. */
        || atomic_exchange_explicit(&w->lock, 1, memory_order_acquire)) {
        /* relaxed: a statistic, added to by any worker. */
        atomic_fetch_add_explicit(&w->contended, 1, memory_order_relaxed);
        return 0;
    }
    uint32_t n = osvrt_net_ring_burst(w->net);
    /* release: our producer state is complete before the next holder's acquire. */
    atomic_store_explicit(&w->lock, 0, memory_order_release);
    return n;
}

static void detach_all(struct osvrt_net_workers *w)
{
    struct osvrt_rt *rt = w->net->rt;
    for (uint32_t i = 0; i < w->ncpu; i++) {
        if (w->attached[i])
            osvrt_cpu_rx_detach(&rt->cpus[i], w->fd);
        w->attached[i] = 0;
    }
}

int osvrt_net_start_workers(struct osvrt_net *net)
{
    int fd = osvrt_net_ring_fd(net);
    if (fd < 0 || net->started || !net->rt)
        return EINVAL;
    if (net->workers)
        return EEXIST;
    struct osvrt_net_workers *w = aligned_alloc(64, (sizeof *w + 63) & ~(size_t)63);
    if (!w)
        return ENOMEM;
    w->net = net;
    w->fd = fd;
    w->ncpu = net->rt->ncpu;
    w->hook.pending = rx_pending;
    w->hook.drain = rx_drain;
    w->hook.arg = w;
    atomic_init(&w->lock, 0);
    atomic_init(&w->contended, 0);
    if (!(w->attached = calloc(w->ncpu ? w->ncpu : 1, 1))) {
        free(w);
        return ENOMEM;
    }
    for (uint32_t i = 0; i < w->ncpu; i++) {
        int e = osvrt_cpu_rx_attach(&net->rt->cpus[i], &w->hook, fd);
        if (e) {
            detach_all(w);
            free(w->attached);
            free(w);
            return e;
        }
        w->attached[i] = 1;
    }
    net->workers = w;
    return 0;
}

void osvrt_net_stop_workers(struct osvrt_net *net)
{
    struct osvrt_net_workers *w = net->workers;
    if (!w)
        return;
    detach_all(w);      /* returns once no worker is inside the hook */
    net->workers = NULL;
    free(w->attached);
    free(w);
}

void osvrt_net_workers_get_stats(struct osvrt_net *net, struct osvrt_net_workers_stats *o)
{
    struct osvrt_net_workers *w = net->workers;
    /* relaxed: a statistic. */
    o->contended = w ? atomic_load_explicit(&w->contended, memory_order_relaxed) : 0;
}
