#define _GNU_SOURCE
#include "cpu.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "probes.h"
#include "relax.h"


int64_t osvrt_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Sleep in epoll_wait on epfd for up to timeout_ns (< 0: no limit), with
 * nanosecond timeouts (epoll_pwait2, Linux 5.11) so timers keep their
 * precision; plain epoll_wait (ms, rounded up) where the kernel lacks it.
 * Returns what epoll returned (EINTR: 0; the caller looks again either way). */
static int epoll_sleep(int epfd, struct epoll_event *evs, int maxev, int64_t timeout_ns)
{
    static _Atomic int no_pwait2;
    if (!atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
        struct timespec ts, *tp = NULL;
        if (timeout_ns >= 0) {
            ts.tv_sec = timeout_ns / 1000000000;
            ts.tv_nsec = timeout_ns % 1000000000;
            tp = &ts;
        }
        int n = (int)syscall(SYS_epoll_pwait2, epfd, evs, maxev, tp, NULL, 0);
        if (n >= 0)
            return n;
        if (errno != ENOSYS)
            return 0;
        atomic_store_explicit(&no_pwait2, 1, memory_order_relaxed);
    }
    int ms = timeout_ns < 0 ? -1 : timeout_ns > (int64_t)INT_MAX * 1000000 ? INT_MAX
                                  : (int)((timeout_ns + 999999) / 1000000);
    int n = epoll_wait(epfd, evs, maxev, ms);
    return n < 0 ? 0 : n;
}

static uint32_t rx_use(struct osvrt_cpu *c, int err);

/* Drop the kick's eventfd from a batch of events (reading it back to zero)
 * and the packet source's fd (draining the source here: its wake-ups of this
 * CPU's threads land on `incoming`); returns how many fd events remain. */
static int keep_fd_events(struct osvrt_cpu *c, struct epoll_event *evs, int n)
{
    int k = 0, rx = 0, rx_err = 0;
    for (int i = 0; i < n; i++) {
        if (evs[i].data.u64 == OSVRT_KICK_TAG) {
            uint64_t v;
            ssize_t r = read(c->evfd, &v, sizeof v);   /* non-blocking: EAGAIN is fine */
            (void)r;
        } else if (evs[i].data.u64 == OSVRT_RX_TAG) {
            rx = 1;
            /* |=: one event per packet socket (a ring each), all with the tag */
            rx_err |= (evs[i].events & EPOLLERR) != 0;
        } else {
            evs[k++] = evs[i];
        }
    }
    if (rx)
        rx_use(c, rx_err);
    return k;
}

int osvrt_cpu_init(struct osvrt_cpu *c, uint32_t id)
{
    osvrt_pushlist_init(&c->incoming);
    atomic_init(&c->idle_state, OSVRT_CPU_BUSY);
    atomic_init(&c->doorbell, 0);
    c->leftover = NULL;
    c->yield_quiet_until = 0;
    c->yield_backoff_ns = 0;
    c->id = id;
    atomic_init(&c->drained, 0);
    atomic_init(&c->idle_ns, 0);
    atomic_init(&c->idle_calls, 0);
    atomic_init(&c->sleeps, 0);
    atomic_init(&c->io_events, 0);
    atomic_init(&c->kicks_sent, 0);
    atomic_init(&c->kicks_skipped, 0);
    atomic_init(&c->pushes, 0);
    atomic_init(&c->rx, NULL);
    atomic_init(&c->rx_inuse, 0);
    atomic_init(&c->rx_drains, 0);
    atomic_init(&c->rx_frames, 0);
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    c->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->epfd < 0 || c->evfd < 0)
        goto fail;
    /* Level-triggered: a kick written before the sleep keeps epoll_wait from blocking. */
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = OSVRT_KICK_TAG};
    if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->evfd, &ev) != 0)
        goto fail;
    return 0;
fail:
    {
        int e = errno;
        osvrt_cpu_destroy(c);
        errno = e;
    }
    return -1;
}

void osvrt_cpu_destroy(struct osvrt_cpu *c)
{
    if (c->epfd >= 0)
        close(c->epfd);
    if (c->evfd >= 0)
        close(c->evfd);
    c->epfd = c->evfd = -1;
}

void osvrt_cpu_kick(struct osvrt_cpu *c)
{
    /* release: the kicker's earlier writes (a push, a stop flag) are visible to
     * an owner that sees the new sequence (osvrt_cpu_kick_seq is acquire). */
    atomic_fetch_add_explicit(&c->doorbell, 1, memory_order_release);
    /* seq_cst fence: the Dekker pair with osvrt_cpu_idle (see cpu.h). */
    atomic_thread_fence(memory_order_seq_cst);
    uint32_t s = atomic_load_explicit(&c->idle_state, memory_order_relaxed);
    /* Only the kicker that moves this sleep (state and count, see cpu.h) from
     * SLEEPING to BUSY makes the syscall: a burst of wakes to one sleeping CPU
     * costs one futex wake.  relaxed: the sequence bump above is what the
     * sleeper synchronizes with. */
    if (OSVRT_IDLE_STATE(s) == OSVRT_CPU_SLEEPING &&
        atomic_compare_exchange_strong_explicit(&c->idle_state, &s, OSVRT_CPU_BUSY,
                                                memory_order_relaxed, memory_order_relaxed)) {
        /* Bump again, after the CAS (kept from the futex sleep, where only
         * this bump made a futex_wait that had not started yet fail at once):
         * the owner's re-check after its next SLEEPING store sees it.  The
         * eventfd write below is level-triggered, so an owner not yet in
         * epoll_wait returns from it at once.  release: as above. */
        atomic_fetch_add_explicit(&c->doorbell, 1, memory_order_release);
        uint64_t one = 1;
        ssize_t r = write(c->evfd, &one, sizeof one);   /* EAGAIN (counter full): readable anyway */
        (void)r;
        atomic_fetch_add_explicit(&c->kicks_sent, 1, memory_order_relaxed);
        OSVRT_PROBE1(kick, c->id);
    } else {
        atomic_fetch_add_explicit(&c->kicks_skipped, 1, memory_order_relaxed);
    }
}

void osvrt_cpu_post(struct osvrt_cpu *c, struct osvrt_pushnode *n)
{
    /* Read the key before the push: once pushed, the node belongs to the
     * consumer, which may drain it and let another waker rewrite it at once. */
    uint64_t key = n->key;
    osvrt_pushlist_push(&c->incoming, n);
    atomic_fetch_add_explicit(&c->pushes, 1, memory_order_relaxed);
    OSVRT_PROBE2(push, c->id, key);
    osvrt_cpu_kick(c);
}

uint32_t osvrt_cpu_drain(struct osvrt_cpu *c, uint64_t *out, uint32_t max)
{
    uint32_t n = 0;
    while (n < max) {
        if (!c->leftover) {
            c->leftover = osvrt_pushlist_take_all(&c->incoming);
            if (!c->leftover)
                break;
        }
        struct osvrt_pushnode *node = c->leftover;
        c->leftover = node->next;
        out[n++] = node->key;
    }
    if (n) {
        /* relaxed: a statistic, written only by the owner. */
        atomic_store_explicit(&c->drained,
                              atomic_load_explicit(&c->drained, memory_order_relaxed) + n,
                              memory_order_relaxed);
        OSVRT_PROBE2(drain, c->id, n);
    }
    return n;
}

static void add_stat(_Atomic uint64_t *s, uint64_t v)
{
    /* Owner-only counter: load + store, no locked RMW.  relaxed: readers
     * (stats) only need an eventually consistent snapshot. */
    atomic_store_explicit(s, atomic_load_explicit(s, memory_order_relaxed) + v,
                          memory_order_relaxed);
}

/* Kicked since the caller read `seq`?  relaxed: osvrt_cpu_kick_seq, read by
 * the caller after we return, is the acquire that orders what follows. */
static inline int kicked(struct osvrt_cpu *c, uint32_t seq)
{
    return atomic_load_explicit(&c->doorbell, memory_order_relaxed) != seq;
}

/* Work is here, but another worker is still running Python: under the GIL we
 * could not run yet, and blocking on the GIL means sleeping on its condition
 * variable, a futex wake away.  Poll on (GIL released) until that worker
 * idles too, or for gil_wait_ns at most.  relaxed: `active` is a hint only. */
static void gil_settle(_Atomic uint32_t *active, int64_t gil_wait_ns)
{
    if (!active || gil_wait_ns <= 0)
        return;
    int64_t until = osvrt_now_ns() + gil_wait_ns;
    for (uint32_t i = 0; atomic_load_explicit(active, memory_order_relaxed) != 0; i++) {
        if ((i & 63) == 0 && osvrt_now_ns() >= until)
            return;
        cpu_relax();
    }
}

int osvrt_cpu_poll_io(struct osvrt_cpu *c, struct epoll_event *evs, int maxev)
{
    int n = epoll_wait(c->epfd, evs, maxev, 0);
    if (n <= 0)
        return 0;
    n = keep_fd_events(c, evs, n);
    add_stat(&c->io_events, (uint64_t)n);
    return n;
}

/* While polling idle, look at epfd this often.  A ping-pong over a socket
 * waits here for its next request, and each interval adds half of itself to
 * the round trip: 25 us made the user TCP stack's sockperf p50 45 us, 2 us
 * makes it 36 (`python -m osvrt bench --only usertcp_pingpong_p50`); the
 * extra epoll_wait calls cost a CPU that is idle anyway, and the switch,
 * foreign-wake, UDP and wrk rows did not move (docs/design.md).  The gate
 * below reads the clock every 64 pauses, so this is a floor. */
#define IO_POLL_NS 2000

int osvrt_cpu_idle_io(struct osvrt_cpu *c, int64_t timeout_ns, int64_t spin_ns, uint32_t seq,
                      _Atomic uint32_t *active, int64_t gil_wait_ns,
                      struct epoll_event *evs, int maxev, int *nev)
{
    int64_t start = osvrt_now_ns();
    /* Saturate: a timeout or spin near INT64_MAX must not overflow. */
    int64_t deadline = timeout_ns < 0 || timeout_ns > INT64_MAX - start ? INT64_MAX
                                                                        : start + timeout_ns;
    int64_t spin_end = spin_ns < 0 ? start
                     : spin_ns > INT64_MAX - start ? INT64_MAX : start + spin_ns;
    int64_t next_io = start;
    int work = 0, n = 0;
    struct epoll_event one[1];
    if (evs == NULL || maxev <= 0) {
        evs = one;          /* room for the kick only (see cpu.h) */
        maxev = 1;
    }

    OSVRT_PROBE1(idle_enter, c->id);
    add_stat(&c->idle_calls, 1);
    if (active)   /* relaxed: a hint for other idlers (gil_settle), never for correctness */
        atomic_fetch_sub_explicit(active, 1, memory_order_relaxed);
    /* relaxed: POLLING only tells kickers they may skip the syscall. */
    atomic_store_explicit(&c->idle_state, OSVRT_CPU_POLLING, memory_order_relaxed);

    /* Poll: a wake arriving now costs the waker no syscall and us no sleep. */
    for (uint32_t i = 0;; i++) {
        if (osvrt_cpu_has_work(c)) {
            work = 1;
            goto out;
        }
        if (kicked(c, seq))
            goto out;
        /* The packet source, drained here: a frame for a thread of this CPU
         * becomes work on the next look, with no syscall and no wake-up.
         * Frames for other CPUs' threads do not extend the poll: past
         * spin_ns this CPU sleeps as usual (a flood to another CPU's flow
         * must not turn this worker into a spinning classifier that takes
         * CPU time from that worker and from the senders). */
        if (osvrt_cpu_has_rx(c))
            osvrt_cpu_rx_poll(c);
        if ((i & 63) == 0) {
            int64_t now = osvrt_now_ns();
            if (now >= next_io && now < spin_end && evs != one) {
                next_io = now + IO_POLL_NS;
                int k = epoll_wait(c->epfd, evs, maxev, 0);
                if (k > 0 && (n = keep_fd_events(c, evs, k)) > 0)
                    goto out;
            }
            if (now >= spin_end || now >= deadline)
                break;
            /* Polling, we look busy to the kernel's scheduler: a thread it
             * woke on this CPU (a UDP client our reply just woke) need not
             * preempt us, and then waits until we sleep, past the spin
             * (the round trip's p99 was 3-4x a kernel socket's, and 60x
             * with one worker).  Yield now and then: it runs first, we
             * look again after it (a syscall when none is waiting).  Not
             * while the yields rest (osvrt_cpu_note_yield): a yield to a
             * busy thread of another program loses the CPU for its whole
             * slice, with no wake-up of ours to preempt it. */
            if (osvrt_cpu_may_yield(c, now)) {
                /* timed from here: the epoll_wait above is not a lost slice */
                int64_t before = osvrt_now_ns();
                sched_yield();
                osvrt_cpu_note_yield(c, before, osvrt_now_ns() - before);
            }
        }
        cpu_relax();
    }

    add_stat(&c->sleeps, 1);
    for (uint32_t nap = 1;; nap++) {
        /* A fresh count per sleep: stale kickers' CASes fail (cpu.h). */
        uint32_t count = (uint32_t)atomic_load_explicit(&c->sleeps, memory_order_relaxed) + nap;
        atomic_store_explicit(&c->idle_state, (count << 2) | OSVRT_CPU_SLEEPING,
                              memory_order_relaxed);
        /* seq_cst fence: the Dekker pair with osvrt_cpu_kick (see cpu.h). */
        atomic_thread_fence(memory_order_seq_cst);
        if (osvrt_cpu_has_work(c)) {
            work = 1;
            break;
        }
        if (kicked(c, seq))
            break;
        int64_t now = osvrt_now_ns();
        if (now >= deadline)
            break;
        /* Returns at once if a kick wrote the eventfd since it was last read. */
        int k = epoll_sleep(c->epfd, evs, maxev, deadline == INT64_MAX ? -1 : deadline - now);
        /* Awake: the packet source's drain below wakes threads of this CPU
         * too, and while the state says SLEEPING each such wake would kick
         * us (an eventfd write, then an epoll_wait and a read to take it
         * back).  relaxed, as the poll's store: the doorbell still moves,
         * and the next SLEEPING store re-checks work after its fence. */
        atomic_store_explicit(&c->idle_state, OSVRT_CPU_POLLING, memory_order_relaxed);
        if (k > 0 && (n = keep_fd_events(c, evs, k)) > 0)
            break;
    }
out:
    atomic_store_explicit(&c->idle_state, OSVRT_CPU_BUSY, memory_order_relaxed);
    if (n > 0) {
        add_stat(&c->io_events, (uint64_t)n);
        work = 1;
    }
    if (work)
        gil_settle(active, gil_wait_ns);
    if (active)
        atomic_fetch_add_explicit(active, 1, memory_order_relaxed);
    add_stat(&c->idle_ns, (uint64_t)(osvrt_now_ns() - start));
    OSVRT_PROBE2(idle_exit, c->id, work);
    if (nev)
        *nev = evs == one ? 0 : n;
    return work;
}

void osvrt_cpu_note_yield(struct osvrt_cpu *c, int64_t now, int64_t took)
{
    if (took < OSVRT_YIELD_SLICE_NS) {
        c->yield_backoff_ns = 0;
        return;
    }
    int64_t rest = c->yield_backoff_ns;
    rest = rest == 0 ? OSVRT_YIELD_REST_MIN_NS
         : rest >= OSVRT_YIELD_REST_MAX_NS / 2 ? OSVRT_YIELD_REST_MAX_NS : 2 * rest;
    c->yield_backoff_ns = rest;
    c->yield_quiet_until = now + took + rest;
}

int osvrt_cpu_idle(struct osvrt_cpu *c, int64_t timeout_ns, int64_t spin_ns, uint32_t seq,
                   _Atomic uint32_t *active, int64_t gil_wait_ns)
{
    return osvrt_cpu_idle_io(c, timeout_ns, spin_ns, seq, active, gil_wait_ns, NULL, 0, NULL);
}

/* ---- the packet source (cpu.h) ---- */

void osvrt_cpu_rx_attach(struct osvrt_cpu *c, struct osvrt_cpu_rx *rx)
{
    /* release: the source (and what it points to) is complete before the
     * owner's load in osvrt_cpu_rx_poll can see it. */
    atomic_store_explicit(&c->rx, rx, memory_order_release);
}

void osvrt_cpu_rx_detach(struct osvrt_cpu *c)
{
    /* seq_cst store, then seq_cst load of rx_inuse: the detacher's half of a
     * Dekker pair with osvrt_cpu_rx_poll: either the owner's load sees NULL,
     * or we see its rx_inuse = 1 and wait for the use to end. */
    atomic_store_explicit(&c->rx, NULL, memory_order_seq_cst);
    while (atomic_load_explicit(&c->rx_inuse, memory_order_seq_cst))
        sched_yield();                               /* one burst at most */
}

int osvrt_cpu_rx_watch(struct osvrt_cpu *c, int fd, int on)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = OSVRT_RX_TAG};
    return epoll_ctl(c->epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, fd, &ev) == 0 ? 0 : errno;
}

uint32_t osvrt_cpu_rx_poll(struct osvrt_cpu *c)
{
    return rx_use(c, 0);
}

/* The owner's use of the attached source: its fd's error cleared first when
 * err (an EPOLLERR), then a drain if frames wait. */
static uint32_t rx_use(struct osvrt_cpu *c, int err)
{
    /* seq_cst store, then seq_cst load: the owner's half of the Dekker pair
     * with osvrt_cpu_rx_detach (above). */
    atomic_store_explicit(&c->rx_inuse, 1, memory_order_seq_cst);
    struct osvrt_cpu_rx *rx = atomic_load_explicit(&c->rx, memory_order_seq_cst);
    uint32_t n = 0;
    if (rx && err && rx->error)
        rx->error(rx->arg);
    if (rx && rx->pending(rx->arg))
        n = rx->drain(rx->arg, c->id);
    if (n) {       /* counted inside: a detacher's count includes this drain */
        add_stat(&c->rx_drains, 1);
        add_stat(&c->rx_frames, n);
    }
    /* release: every use of rx above happens before a detacher that reads
     * rx_inuse == 0 goes on to free it. */
    atomic_store_explicit(&c->rx_inuse, 0, memory_order_release);
    return n;
}

void osvrt_cpu_get_stats(struct osvrt_cpu *c, struct osvrt_cpu_stats *o)
{
    o->kicks_sent = atomic_load_explicit(&c->kicks_sent, memory_order_relaxed);
    o->kicks_skipped = atomic_load_explicit(&c->kicks_skipped, memory_order_relaxed);
    o->pushes = atomic_load_explicit(&c->pushes, memory_order_relaxed);
    o->drained = atomic_load_explicit(&c->drained, memory_order_relaxed);
    o->idle_ns = atomic_load_explicit(&c->idle_ns, memory_order_relaxed);
    o->idle_calls = atomic_load_explicit(&c->idle_calls, memory_order_relaxed);
    o->sleeps = atomic_load_explicit(&c->sleeps, memory_order_relaxed);
    o->io_events = atomic_load_explicit(&c->io_events, memory_order_relaxed);
}
