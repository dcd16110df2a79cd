/* cpu.h - one per worker: the incoming pushlist, its readiness poller
 * (an epoll instance), idle (poll, then sleep in epoll_wait) and kick (our IPI).
 *
 * Readiness (Go's netpoller, tokio's driver): every CPU owns one epoll
 * instance, epfd.  Per CPU, not per runtime: the fds a worker's green threads
 * wait on are registered, re-armed and dispatched by that worker alone, so
 * its registration table needs no lock and a ready event wakes a thread on
 * the CPU that polled it (no cross-CPU hop).  The engine polls epfd without
 * blocking while it is busy (osvrt/_engine/io.c); the idle worker sleeps in
 * epoll_wait on it, until an fd is ready, the next timer, or a kick.
 *
 * Every kick bumps the `doorbell` word (a sequence); only when the CPU sleeps
 * does the kicker also write the CPU's eventfd, which is registered in epfd: that is what the
 * sleeping epoll_wait sees.  Kicks to a busy or polling CPU make no syscall
 * (counted as skipped).  The owner reads the sequence
 * BEFORE its last look at its own state (run queue, stop flag) and passes it
 * to osvrt_cpu_idle, which returns as soon as the sequence moves: so a kick
 * that comes after that look is never lost, whether the CPU was busy,
 * polling, or asleep.
 *
 * Idle/kick is a Dekker pair:
 *   sleeper: idle_state = SLEEPING; fence(seq_cst); if work or doorbell != seq: don't sleep
 *            else epoll_wait(epfd)
 *   waker:   push; bump doorbell;   fence(seq_cst); if CAS idle_state SLEEPING -> BUSY:
 *            bump doorbell again, write(eventfd)
 * With both fences, at least one side sees the other's store: either the
 * sleeper sees the node (or the bump), or the waker sees SLEEPING and writes
 * the eventfd.  The eventfd is a level: a write made before the sleeper
 * reaches epoll_wait leaves it readable, so that epoll_wait returns at once
 * (the role futex_wait's "the word moved: EAGAIN" played).  The sleeper reads
 * the eventfd back to zero when epoll_wait reports it.
 *
 * Cache lines: `incoming` (written by producers), `idle_state`+`doorbell`
 * (read by producers, written by the owner), the owner's private fields, and
 * the producers' counters are kept apart.
 */
#ifndef OSVRT_CPU_H
#define OSVRT_CPU_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/epoll.h>

#include "pushlist.h"

enum osvrt_idle_state {
    OSVRT_CPU_BUSY     = 0,  /* running green threads: checks incoming at every trap */
    OSVRT_CPU_POLLING  = 1,  /* idle, spinning on incoming (or just back from epoll_wait): needs no kick */
    OSVRT_CPU_SLEEPING = 2,  /* idle, in (or about to enter) epoll_wait: needs a kick */
};

/* idle_state holds the state in its two low bits and, while SLEEPING, a count
 * of sleeps above them.  A kicker moves SLEEPING -> BUSY with a CAS on the
 * whole word, so it can only hit the very sleep it saw.  Without the count, a
 * kicker delayed between its load and its CAS could mark a LATER sleep BUSY
 * after its eventfd write had gone to nobody; every kicker after it would then
 * skip its wake while the owner slept: a lost wake-up (seen in test_wake). */
#define OSVRT_IDLE_STATE(word) ((word) & 3u)

struct osvrt_cpu_stats {
    uint64_t kicks_sent;       /* eventfd writes (wakes of a sleeper) made to this CPU */
    uint64_t kicks_skipped;    /* kicks that needed no syscall (busy or polling) */
    uint64_t pushes;           /* nodes pushed onto this CPU (remote wake-ups, moves) */
    uint64_t drained;          /* nodes this CPU has taken in */
    uint64_t idle_ns;          /* time spent in osvrt_cpu_idle */
    uint64_t idle_calls;
    uint64_t sleeps;           /* idle calls that went on to sleep (epoll_wait) */
    uint64_t io_events;        /* readiness events handed out by osvrt_cpu_idle_io */
};

/* epoll_event.data.u64 of the CPU's own eventfd (the kick); fd events use data.fd. */
#define OSVRT_KICK_TAG UINT64_MAX
/* epoll_event.data.u64 of a packet source's fd (struct osvrt_cpu_rx): handled
 * inside the core, never handed to the engine as an fd event. */
#define OSVRT_RX_TAG (UINT64_MAX - 1)

/* A packet source that this CPU's owner drains itself, in its loop and its
 * idle (csrc/net/rx_workers.h: the classifier run by the workers).  pending()
 * is a look at memory (no syscall); drain() handles one burst on the calling
 * OS thread and returns the frames it took (0 if another CPU holds the
 * source).  Wake-ups it makes for threads of this CPU land on this CPU's own
 * pushlist: the owner's next look at `incoming` takes them, with no kick. */
struct osvrt_cpu_rx {
    int (*pending)(void *arg);
    uint32_t (*drain)(void *arg, uint32_t cpu);
    /* Optional: the watched fd reported an error (EPOLLERR); read and clear
     * it, or the epoll reports it again at once, for ever. */
    void (*error)(void *arg);
    void *arg;
};

struct osvrt_cpu {
    struct osvrt_pushlist incoming;               /* its own cache line */

    _Alignas(OSVRT_CACHELINE) _Atomic uint32_t idle_state;   /* see OSVRT_IDLE_STATE */
    _Atomic uint32_t doorbell;                    /* bumped by every kick (a sequence) */

    _Alignas(OSVRT_CACHELINE) struct osvrt_pushnode *leftover;  /* owner only */
    /* Owner only: the idle poll's yields rest until yield_quiet_until (ns)
     * after a yield that lost the CPU for a slice; yield_backoff_ns is the
     * current rest, doubled while that repeats (osvrt_cpu_note_yield). */
    int64_t yield_quiet_until, yield_backoff_ns;
    uint32_t id;
    int epfd;                                     /* readiness poller; -1 if it failed */
    int evfd;                                     /* the kick's eventfd, in epfd */
    _Atomic uint64_t drained, idle_ns, idle_calls, sleeps, io_events;  /* written by the owner */

    _Alignas(OSVRT_CACHELINE) _Atomic uint64_t kicks_sent, kicks_skipped, pushes;  /* producers */

    /* The packet source (see osvrt_cpu_rx_attach): `rx` written by the
     * attaching/detaching thread, read by the owner; `rx_inuse` written by
     * the owner around each use, read by a detacher waiting for it to end. */
    _Alignas(OSVRT_CACHELINE) _Atomic(struct osvrt_cpu_rx *) rx;
    _Atomic uint32_t rx_inuse;
    _Atomic uint64_t rx_drains, rx_frames;        /* written by the owner */
};

/* 0, or -1 with errno if the epoll instance or the eventfd cannot be made. */
int osvrt_cpu_init(struct osvrt_cpu *c, uint32_t id);
void osvrt_cpu_destroy(struct osvrt_cpu *c);

/* Producer side: push a node (its key already set) and kick if the CPU sleeps. */
void osvrt_cpu_post(struct osvrt_cpu *c, struct osvrt_pushnode *n);
/* Kick: write the CPU's eventfd if it is sleeping; count it either way. */
void osvrt_cpu_kick(struct osvrt_cpu *c);

/* Owner side.  Takes up to max incoming keys, oldest first; the rest stay for
 * the next call.  Returns how many it wrote. */
uint32_t osvrt_cpu_drain(struct osvrt_cpu *c, uint64_t *out, uint32_t max);
/* Owner side: 1 if there is incoming work (drainable now), else 0. */
static inline int osvrt_cpu_has_work(struct osvrt_cpu *c)
{
    return c->leftover != NULL || !osvrt_pushlist_empty(&c->incoming);
}
/* The doorbell sequence: read it before the last look at your own state. */
static inline uint32_t osvrt_cpu_kick_seq(struct osvrt_cpu *c)
{
    /* acquire: whatever the kicker wrote before bumping is visible after. */
    return atomic_load_explicit(&c->doorbell, memory_order_acquire);
}

/* Owner side, the idle poll's yield rule: a sched_yield() that began at
 * `now` took `took` ns.  One past OSVRT_YIELD_SLICE_NS handed the CPU to a
 * thread that ran a whole slice (a busy thread of another program, not a
 * client that answers and blocks again): the poll then yields no more for
 * yield_backoff_ns (OSVRT_YIELD_REST_MIN_NS, doubled while it repeats, at
 * most OSVRT_YIELD_REST_MAX_NS); a short one ends the rest's doubling.
 * Returns 1 if the poll may yield at time `now` (no rest under way). */
#define OSVRT_YIELD_SLICE_NS 200000
#define OSVRT_YIELD_REST_MIN_NS 1000000
#define OSVRT_YIELD_REST_MAX_NS 64000000
void osvrt_cpu_note_yield(struct osvrt_cpu *c, int64_t now, int64_t took);
static inline int osvrt_cpu_may_yield(const struct osvrt_cpu *c, int64_t now)
{
    return now >= c->yield_quiet_until;
}

/* Owner side: wait for incoming work, polling for up to spin_ns, then sleeping
 * in epoll_wait on the CPU's epfd.  timeout_ns < 0 waits without limit.  `seq` is the doorbell
 * sequence the caller read (osvrt_cpu_kick_seq) before its last look at its
 * own state.  Returns 1 if work is there, 0 on timeout or on a kick without
 * work (the caller looks at its state again).
 *
 * `active`, if not NULL, counts the callers (workers) that are not idle; this
 * call leaves it while idle.  With work found while another worker is active,
 * it polls on for up to gil_wait_ns before returning: under CPython's GIL
 * that worker holds the interpreter, and returning now would only put us to
 * sleep on the GIL's condition variable, a futex wake away; it releases the
 * GIL when it idles, which we then see here (docs/design.md, "The GIL"). */
int osvrt_cpu_idle(struct osvrt_cpu *c, int64_t timeout_ns, int64_t spin_ns, uint32_t seq,
                   _Atomic uint32_t *active, int64_t gil_wait_ns);
/* The same, and readiness: fd events that epfd reports (while polling, every
 * few us, and in the sleep) end the idle too; they are written to evs (at most
 * maxev; the kick's eventfd is never among them) and counted in *nev.  Returns
 * 1 if work is there or *nev > 0.  osvrt_cpu_idle is this with no room for
 * events: use it only on a CPU whose epfd holds no fd but the eventfd. */
int osvrt_cpu_idle_io(struct osvrt_cpu *c, int64_t timeout_ns, int64_t spin_ns, uint32_t seq,
                      _Atomic uint32_t *active, int64_t gil_wait_ns,
                      struct epoll_event *evs, int maxev, int *nev);
/* Owner side, no wait: poll epfd once; like osvrt_cpu_idle_io's events.  Returns
 * how many fd events it wrote (0 on error). */
int osvrt_cpu_poll_io(struct osvrt_cpu *c, struct epoll_event *evs, int maxev);

void osvrt_cpu_get_stats(struct osvrt_cpu *c, struct osvrt_cpu_stats *out);

/* The packet source: from any thread.  attach publishes rx (the owner then
 * drains it in its loop and idle poll); detach unpublishes it and returns
 * only once the owner no longer uses rx (it may then be freed).  One source
 * per CPU.  watch (on = 1) registers the source's fd (readable while frames
 * wait) in the CPU's epfd, so that the CPU's sleep ends when a frame comes;
 * on = 0 takes it out.  0 or an errno (EEXIST, ENOENT: already so). */
void osvrt_cpu_rx_attach(struct osvrt_cpu *c, struct osvrt_cpu_rx *rx);
void osvrt_cpu_rx_detach(struct osvrt_cpu *c);
int osvrt_cpu_rx_watch(struct osvrt_cpu *c, int fd, int on);
/* Owner side: drain the source if frames wait.  Returns the frames taken. */
uint32_t osvrt_cpu_rx_poll(struct osvrt_cpu *c);
/* Owner side, cheap: is a source attached at all?  relaxed: a hint; the
 * protocol in osvrt_cpu_rx_poll is what makes its use safe. */
static inline int osvrt_cpu_has_rx(struct osvrt_cpu *c)
{
    return atomic_load_explicit(&c->rx, memory_order_relaxed) != NULL;
}

/* CLOCK_MONOTONIC in ns: the same clock as Python's time.monotonic_ns(). */
int64_t osvrt_now_ns(void);

#endif
