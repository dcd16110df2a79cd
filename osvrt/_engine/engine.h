/* engine.h - the engine: the scheduler's hot path, compiled against the
 * CPython C API (docs/design.md, layer 2).  It holds Python objects and runs per
 * switch; the C core (csrc/) below it holds none and never needs the GIL.
 *
 * Objects, one file each:
 *   thread.c  Thread (the green thread) and Ticket (a wait; also the trap
 *             object a coroutine awaits, with am_send so a resume stays in C)
 *   timer.c   Timer (a per-CPU timer entry)
 *   worker.c  Worker (the per-CPU run loop, run queue, timers)
 *   event.c   Event
 *   live.c    LiveSet (a runtime's live threads)
 *   module.c  the kernel calls (current, wake, claim, schedule, spawn, ...)
 *   io.c      readiness: each worker's fd registrations in its CPU's epoll
 *   sock.c    SockOp: the socket calls (recv, sendall, accept, recvfrom, sendto)
 *   serve.c   ProtocolServer and Connection (osvrt.net.serve_tcp_protocol)
 *   tcplink.c TcpLink: a user-space TCP stack's link calls (osvrt/net/tcp)
 *
 * Ownership, the rule every field below follows (free-threading ready):
 *   "owner"  touched only by the OS thread of the worker that owns the
 *            object now (a Thread's owner is its home worker while the thread
 *            is queued or running there, or the claimer of its wait);
 *   "atomic" a C11 atomic, with the memory order named where it is used;
 *   "racy"   a statistic or hint read by other threads with a relaxed load.
 */
#ifndef OSVRT_ENGINE_H
#define OSVRT_ENGINE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core_api.h"
#include "worker_stats.h"

/* The current worker of this OS thread.  initial-exec: the extension is
 * loaded at import, before any worker starts, and the model makes an access
 * one %fs-relative load instead of a __tls_get_addr call. */
#define OSVRT_TLS __thread __attribute__((tls_model("initial-exec")))

typedef struct WorkerObject WorkerObject;

static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Thread states; Thread._state maps them to the interned strings below. */
/* ThreadObject.done_word's values (futex: see there). */
enum { DW_RUNNING = 0, DW_DONE = 1, DW_SLEEPER = 2 };
enum { ST_UNSTARTED, ST_QUEUED, ST_RUNNING, ST_WAITING, ST_TERMINATED, ST_COUNT };

typedef struct ThreadObject {
    PyObject_HEAD
    PyObject *coro;            /* owner; NULL once ended */
    PyObject *ctx;             /* owner: its contextvars.Context */
    PyObject *name;            /* owner; NULL: named green-<id> on first use */
    WorkerObject *w;           /* home; written by the owner (moves), read by
                                  wakers with an acquire load (see home_of) */
    PyObject *value;           /* owner (the claimer): sent at the next resume */
    PyObject *throw_;          /* under slots: raised at the next resume
                                  (timeouts); set with pending, see throw_into */
    PyObject *outcome;         /* written once by the owner at the end: what the
                                  coroutine returned, or raised when `failed` */
    PyObject *joiners;         /* under slots: list of Tickets of joining threads */
    /* owner: the submit() Future (aux_future = 1), or, for a thread that
     * ended with an exception nobody has joined, its logger (one slot: a
     * thread with a Future reports there and never needs the logger); read,
     * swapped and taken under slots */
    PyObject *aux;
    PyObject *weakreflist;
    uint64_t id;
    uint64_t h;                /* C thread-table handle; 0 until it first crosses CPUs */
    double prio;
    double r;                  /* owner: R'' (fair rule), relative to w->c; while
                                  moving (has_export), R/TAU to import */
    /* The wait word: seq << 1 | open.  A Ticket names one seq; claiming a
     * wait is a CAS that clears `open` for that seq, so of all the wakers
     * racing for one wait (an Event, a timer, cancel(), another CPU) exactly
     * one wins, and a stale ticket (older seq) can never claim a later wait.
     * Foreign threads hold only a reference to the Thread, never to a
     * half-dead ticket slot: no lifetime question under free-threading. */
    _Atomic uint64_t wait;
    _Atomic uint8_t cancel;    /* cancel() asked; set by any thread (release) */
    _Atomic uint8_t pending;   /* cancel or throw_ set: the loop looks at both */
    _Atomic uint8_t state;     /* written by the owner; read racily (Thread.state) */
    /* The 8-, 16- and 32-bit fields last, packed: with its GC header the
     * object fits pymalloc's 176-byte class (a parked thread's memory;
     * thread.c asserts the size). */
    char pinned, cwait, started, has_export, aux_future;
    char failed;               /* written once with `outcome`: it is an exception */
    /* The spinlock over joiners, throw_ and aux: the pointer fields that
     * threads of other workers (joiners, a timeout's timer, a second joiner)
     * read, swap or take (thread_slots_lock).  In the padding before posts. */
    _Atomic uint8_t slots;
    uint16_t posts;            /* hand-overs so far, mod 2**16 (owner: whoever posts
                                  it); the trace's flow ids use 16 bits */
    int32_t live_index;        /* its slot in the runtime's LiveSet (live.c), -1 if none */
    int32_t rn;                /* owner: w->renorm that r is relative to (one per
                                  ~17 s of CPU: 32 bits last for millennia) */
    /* A futex word for foreign OS threads that wait in C for the end
     * (thread_wait_done): DW_RUNNING, or DW_SLEEPER once a waiter may sleep
     * on it, then DW_DONE when the thread ends (its outcome published).  A
     * waiter turns RUNNING into SLEEPER before it sleeps, so the end makes
     * the wake syscall only when the word says someone may be asleep. */
    _Atomic uint32_t done_word;
} ThreadObject;

/* Ticket kinds.  Each plugs into the scheduler through its wait_ops
 * (waits.c), so thread.c names none of them. */
enum { TK_PARK, TK_YIELD, TK_SLEEP, TK_EVENT, TK_JOIN, TK_IO, TK_COUNT };

typedef struct TicketObject {
    PyObject_HEAD
    ThreadObject *t;           /* the waiter (owner of the ticket) */
    PyObject *obj;             /* TK_EVENT: the Event; TK_JOIN: the joined Thread */
    PyObject *timer;           /* a Timer to disarm when the wait ends, or NULL */
    uint64_t seq;              /* the wait it stands for (ThreadObject.wait) */
    double delay;              /* TK_SLEEP/TK_EVENT/TK_JOIN: < 0 for none */
    int kind;
    int step;                  /* 0: not awaited yet; 1: yielded to the loop */
    int fd;                    /* TK_IO: the fd and the direction (EPOLLIN or EPOLLOUT) */
    uint32_t ioev;
    WorkerObject *iow;         /* TK_IO: the worker whose table holds it, or NULL */
} TicketObject;

typedef struct TimerObject {
    PyObject_HEAD
    double deadline;
    /* NULL once fired or cancelled.  Taken with an exchange (timer_take):
     * the worker firing it and a cancel from another worker (a thread that
     * moved since) may race, and only the taker owns fn and arg. */
    PyObject *fn;
    PyObject *arg;             /* touched only by whoever took fn */
    int wakes;                 /* fn is a Ticket to wake with arg as its value */
} TimerObject;

/* An entry of a worker's two heaps, one shape for both (one sift-up and
 * sift-down in worker.c): the run queue is keyed by R'' (r, the fair rule's
 * pick: smallest first) and holds a thread; the timers are keyed by deadline
 * and hold a Timer.  order breaks ties first-in first-out. */
struct heap_entry {
    union { double key; double r; double deadline; };   /* one double, three names */
    int64_t order;
    union { ThreadObject *t; TimerObject *tm; };
};

/* One recorded scheduler event (trace.py turns them into Chrome trace JSON). */
enum { TR_SWITCH = 1, TR_POST = 2, TR_ARRIVE = 3, TR_MIGRATE = 4, TR_IDLE = 5 };
struct trace_event {
    double ts;                 /* osvrt_clock() */
    uint32_t kind, cpu;        /* cpu: the recording worker's index */
    uint64_t a, b, c;          /* SWITCH: prev id, next id, run-queue length;
                                  POST: thread id, flow id, target index;
                                  ARRIVE: thread id, flow id, run-queue length;
                                  MIGRATE (from Python): id, from index, to index;
                                  IDLE: duration in ns */
};

/* Readiness (io.c).  A worker polls its CPU's epoll without blocking every
 * IO_TICKS loop turns or IO_PERIOD seconds of run time, whichever comes first
 * (tokio polls its driver every 61 ticks; Go's sysmon every 10 ms), and only
 * while some green thread here waits for an fd. */
#define IO_TICKS 61
#define IO_PERIOD 0.001
#define IO_BATCH 256
/* A bit of tk->ioev (never given to epoll): sock.c's edge-triggered waits
 * register the fd for both directions, since a socket call caches both
 * (io.c, s->ready); wait_io(fd, EPOLLIN | EPOLLET) registers only the one it
 * waits for, so a packet socket, writable after every send, raises no
 * EPOLLOUT edge that would end the worker's idle sleep for nothing. */
#define IO_ET_BOTH (1u << 20)
struct io_slot {
    TicketObject *rd, *wr;     /* owner: the waits for this fd, or NULL */
    uint64_t rd_seq, wr_seq;   /* owner: worker_io.reg_seq when each wait registered */
    uint32_t armed;            /* owner: events armed (EPOLLONESHOT) in the kernel now */
    char registered;           /* owner: added to this CPU's epfd (as far as we know) */
    char et;                   /* owner: the directions registered edge-triggered (EPOLLIN,
                                  EPOLLOUT; both for sock.c), 0: oneshot or none */
    uint32_t ready;            /* owner, et only: EPOLLIN/EPOLLOUT seen ready and not
                                  known to be drained since (the readiness cache);
                                  EPOLLRDHUP: EOF/error seen, sticky until the close */
    uint32_t epoch;            /* owner: io_fd_epoch(fd) when this slot's state was made;
                                  another value: a new file took the number (io_slot_fresh) */
    char tcp;                  /* owner, et only: a TCP socket, where a read shorter than
                                  asked means drained (sock.c); not a Unix or datagram
                                  socket, whose reads stop at a record or an SCM_RIGHTS */
};
struct worker_io {
    struct io_slot *slots;     /* owner: indexed by fd */
    int nslots;
    _Atomic Py_ssize_t waiters;   /* owner writes; notify_closing reads it as a hint */
    int tick;                  /* owner: loop turns since the last poll */
    double last;               /* owner: when it last polled */
    _Atomic int closing;       /* other threads posted fds in closing_fds */
    pthread_mutex_t mu;        /* guards closing_fds (never on the switch path) */
    /* Every registration takes the next number (owner writes, relaxed; other
     * threads read it when they post a closing).  A posted closing ends only
     * waits registered before it was posted: the fd number may have been
     * closed and reused by a new connection meanwhile, and a wait on the new
     * fd must not be woken by the old fd's closing. */
    _Atomic uint64_t reg_seq;
    struct io_closing { int fd; uint64_t seq; } *closing_fds;
    int nclosing, capclosing;
    struct epoll_event evs[IO_BATCH];
};

#define DRAIN_BATCH 256
#define TICKET_FREELIST 256
#define DONE_WAKES 16       /* ended threads whose foreign waiters wake once the GIL is let go */

/* OSv's fair rule (osvrt/fair.py documents it): defined here once and
 * exported as _engine.FAIR (fair.py reads them from there). */
#define TAU 0.200               /* decay time constant (s), OSv's tau */
#define THYST 0.005             /* hysteresis: credited on switch-in, charged on switch-out */
#define SWITCH_PENALTY 10e-6    /* charged to the incoming thread when the outgoing stays runnable */
#define RENORM_LIMIT 9223372036854775808.0          /* 2**63: when c passes this ... */
#define RENORM_FACTOR (1.0 / 85070591730234615865843651857942052864.0)   /* ... scale by 2**-126 */

/* The engine's calls into Python (declared in osvrt/_engine.pyi): looked up
 * once on the receiver's class at _bind and kept as plain functions, so the
 * loop pays no attribute lookup per call; called as fn(receiver, arg). */
enum worker_hook {
    /* on the Worker (osvrt/worker.py) */
    HK_BEFORE_IDLE, HK_SERVE_PULL, HK_OFFER_WORK, HK_SETTLE, HK_HANDLE_DEAD,
    /* on the Runtime (osvrt/runtime.py) */
    HK_WORKER_FOR, HK_HANDLE_FOR, HK_THREAD_ENDED,
    HK_COUNT
};
#define HK_FIRST_RUNTIME HK_WORKER_FOR

struct WorkerObject {
    PyObject_HEAD
    PyObject *dict;                /* the Python subclass's attributes */
    PyObject *rt;                  /* the Runtime (outlives its workers' loops) */
    PyObject *hook[HK_COUNT];      /* set at _bind, read by the owner (and spawners) */
    PyObject *by_handle;           /* rt._by_handle: C handle -> Thread */
    PyObject *live;                /* rt._live: the set of live threads */
    struct osvrt_rt *crt;          /* kept alive by rt._crt */
    struct osvrt_cpu *cpu;
    uint32_t index;
    int64_t spin_ns;
    /* owner: the thread that ran last parked waiting for remote peers (the
     * protocol server, serve.c): the next idle sleeps at once, no spin */
    char idle_nospin;
    /* run queue: a binary heap of (R'', order) owned by this worker alone */
    struct heap_entry *rq;         /* owner: run queue heap */
    Py_ssize_t rq_cap;
    _Atomic Py_ssize_t rq_len;     /* owner writes (relaxed); others read it as a load hint */
    struct heap_entry *tm;         /* owner: timers heap */
    Py_ssize_t tm_len, tm_cap, tm_limit;
    int64_t order;                 /* owner: FIFO tie-break for heaps */
    double c;                      /* owner: the fair normalizer */
    int32_t renorm;                /* owner: renormalizations so far */
    ThreadObject *current;         /* owner writes; the watchdog reads it racily */
    _Atomic double run_start;      /* owner writes (relaxed); the watchdog reads */
    _Atomic int running;           /* 1 while a thread runs or keeps the CPU (load hint) */
    _Atomic int stop;              /* set by Runtime.stop from another thread, then a kick */
    PyObject *_Atomic pull;        /* an idle Worker asking us for work (exchange) */
    int idle_pull;                 /* owner: balance=True */
    int flush_at_idle;             /* owner: ended threads' records wait for the idle hook */
    double next_offer;             /* owner */
    /* statistics: owner-written, read racily by stats() and by other processes
     * (`osvrt top`): `st` points at `own_stats` or into the runtime's stats
     * file (Worker.bind_stats) */
    struct osvrt_worker_stats *st;
    struct osvrt_worker_stats own_stats;
    /* trace recording (Runtime(trace=...)): owner only; NULL when off, so
     * the switch path pays one test */
    struct trace_event *trace;
    Py_ssize_t trace_len, trace_cap;
    uint64_t trace_lost;
    TicketObject *free_tickets[TICKET_FREELIST];   /* owner: ticket freelist */
    int nfree;
    uint64_t drain_buf[DRAIN_BATCH];
    /* owner: threads that ended while a foreign OS thread slept on their done
     * word (Runtime.run); woken when this worker next lets the GIL go, so the
     * waiter does not wake only to block on the GIL we hold (worker.c,
     * defer_done_wake). */
    ThreadObject *done_wakes[DONE_WAKES];
    int ndone_wakes;
    struct worker_io io;           /* readiness (io.c) */
    int io_budget;                 /* owner: I/O calls left before a forced trap (sock.c) */
    char *scratch;                 /* owner: sock.c's recv buffer (64 KiB), or NULL */
    struct osvrt_tx_batch *txb;    /* owner: batched UDP replies (udptx.c), or NULL */
    PyObject *udp_dest;            /* owner: UdpTx.sendto's last address, parsed below */
    uint32_t udp_daddr;
    uint16_t udp_dport;
};

/* module.c */
extern const struct osvrt_core_api *osvrt_api;
extern OSVRT_TLS WorkerObject *tls_worker;
extern PyObject *Cancelled, *TIMED_OUT, *PARK, *YIELD, *state_names[ST_COUNT];
extern PyObject *ThreadClass, *UnretrievedClass, *AwaitWrapper;
extern PyObject *str_throw, *str_close, *str_name, *str_exc, *str_value, *str_stale;
extern PyObject *OUTSIDE_MSG;
extern PyTypeObject ThreadBase_Type, Ticket_Type, Timer_Type, WorkerBase_Type, Event_Type,
                    LiveSet_Type;
PyObject *outside_error(void);
double osvrt_clock(void);
int check_delay(PyObject *seconds, const char *what, double *out);
/* o.name(arg), or o.name() when arg is NULL: for the rare paths into Python. */
PyObject *worker_hook(WorkerObject *w, enum worker_hook k, PyObject *arg);

/* thread.c */
TicketObject *ticket_new(ThreadObject *t, int kind);
/* thread.c: an am_send result as send()/__next__ return it (StopIteration). */
PyObject *send_result_as_iter(PySendResult r, PyObject *res);
/* thread.c: raise what throw(typ[, val[, tb]]) was given; returns NULL. */
PyObject *raise_thrown(PyObject *const *args, Py_ssize_t nargs);
/* thread.c: forward throw() to a parked sub-awaitable (steals sub) or raise it. */
PyObject *throw_into_sub(PyObject *sub, PyObject *const *args, Py_ssize_t nargs);
/* thread.c: the raised exception taken (NULL if none) / put back (steals; NULL: none). */
PyObject *take_raised(void);
void put_raised(PyObject *exc);
ThreadObject *ticket_claim(TicketObject *tk);        /* new ref or NULL */
ThreadObject *thread_claim_open(ThreadObject *t);   /* new ref or NULL */
void thread_gc_hide(ThreadObject *t);
void thread_gc_expose(ThreadObject *t);
int wake_ticket(TicketObject *tk, PyObject *value);  /* 1 woke, 0 stale, -1 error */
int schedule(ThreadObject *t, PyObject *value);      /* steals nothing */
PyObject *thread_outcome(ThreadObject *t);

/* A wait kind's operations (OSv's wait_object: poll, arm, disarm), called by
 * the Ticket's await (thread.c).  Every member but `result` may be NULL. */
struct wait_ops {
    /* Before the wait opens: 1 if it is over already (*result set), 0 to
     * wait, -1 on error.  May turn the ticket into another kind (sleep(0)
     * into a yield). */
    int (*poll)(TicketObject *tk, ThreadObject *me, PyObject **result);
    /* Register the opened wait where its waker will look: 0, or -1 on error
     * (the scheduler then closes the wait), or -2 on an error after which
     * the wait must stay as it is. */
    int (*arm)(WorkerObject *w, TicketObject *tk);
    /* The wait ended (woken, timed out, thrown into, closed): unregister. */
    void (*disarm)(TicketObject *tk);
    /* What the await returns for the wake value `arg` (or raises). */
    PySendResult (*result)(TicketObject *tk, PyObject *arg, PyObject **result);
    int opens;                 /* 1: awaiting it opens a new wait of the thread */
};
extern const struct wait_ops wait_kinds[TK_COUNT];
PySendResult wait_timeout_error(const char *what, PyObject *name, double delay);
void ticket_open(TicketObject *tk);
static inline int ticket_is_claimed(TicketObject *tk)
{
    /* relaxed: a hint for compaction; a wrong "open" only keeps an entry. */
    return atomic_load_explicit(&tk->t->wait, memory_order_relaxed) != ((tk->seq << 1) | 1);
}
/* Held for a few loads and stores and at most a realloc: no Python code runs
 * under it and nothing that can collect (a GIL build would deadlock a
 * spinner holding the GIL), and a reference taken out is dropped after the
 * unlock (a dealloc runs code). */
static inline void thread_slots_lock(ThreadObject *t)
{
    /* acquire: what the last holder wrote under the lock is seen here */
    while (atomic_exchange_explicit(&t->slots, 1, memory_order_acquire))
        cpu_relax();
}
static inline void thread_slots_unlock(ThreadObject *t)
{
    atomic_store_explicit(&t->slots, 0, memory_order_release);   /* publishes our writes */
}
static inline WorkerObject *home_of(ThreadObject *t)
{
    /* acquire: pairs with the owner's release store when it moves t, so a
     * waker that sees the new home also sees what the mover wrote first.  A
     * stale home is harmless: that worker forwards (worker.c, arrive), and
     * every worker outlives the threads of its runtime. */
    return __atomic_load_n(&t->w, __ATOMIC_ACQUIRE);
}

/* place.c */
extern PyMethodDef place_module_methods[];

/* io.c */
extern PyMethodDef io_module_methods[];
int io_register(WorkerObject *w, TicketObject *tk);
void io_end(TicketObject *tk);             /* the wait ended: leave the table */
int io_dispatch(WorkerObject *w, int n);    /* n events in w->io.evs */
int io_poll(WorkerObject *w, double now);   /* poll without blocking, dispatch */
int io_take_closing(WorkerObject *w);      /* fds other threads closed (notify_closing) */
int io_notify_closing(WorkerObject *w, int fd);   /* fd closes next: w forgets it */
void io_init(WorkerObject *w);
void io_clear(WorkerObject *w);
int io_traverse(WorkerObject *w, visitproc visit, void *arg);
PyObject *io_timeout_error(TicketObject *tk);
void io_raise_closed(const char *msg);      /* ClosedResourceError(EBADF, msg) */
struct io_slot *io_slot(WorkerObject *w, int fd);   /* grown to hold fd; NULL: MemoryError */

/* Adoption epochs.  A socket closed behind osvrt's back (os.close, or
 * stream.socket.close()) leaves its number's slots as they were: the kernel
 * dropped the registration with the file, but a slot still says "registered,
 * edge-triggered", and a new socket given that number would park on it and
 * never be woken.  So every fd that osvrt creates or is handed (accept, a
 * connecting socket, a wrapped socket, the protocol server's epoll, the user
 * stack's link) bumps its number's epoch (io_fd_adopted), and a slot made
 * under an older epoch is renewed before it is used (io_slot_fresh;
 * io_slot_renew asks the kernel whether the file really changed).  Numbers
 * from IO_EPOCHS up have no epoch (always 0): for them the old rule stands,
 * close through osvrt (notify_closing). */
#define IO_EPOCHS (1 << 20)
extern _Atomic uint32_t io_fd_epochs[IO_EPOCHS];   /* zero-filled .bss: touched pages only */
/* Closes through osvrt (notify_closing) per fd number, so that a socket call
 * that was woken, or yielded, before its socket was closed does not go on to
 * make its system call on the number's next file (sock.c, on resume). */
extern _Atomic uint32_t io_fd_closes[IO_EPOCHS];
static inline uint32_t io_fd_close_count(int fd)
{
    /* seq_cst, as the bump: the close() after the bump and the syscall after
     * this load are ordered by the kernel; our two accesses at least are. */
    return (unsigned)fd < IO_EPOCHS
           ? atomic_load_explicit(&io_fd_closes[fd], memory_order_seq_cst) : 0;
}
void io_fd_adopted(int fd);
int io_slot_renew(WorkerObject *w, int fd, struct io_slot *s, uint32_t epoch);
static inline uint32_t io_fd_epoch(int fd)
{
    /* relaxed: the fd reached this thread after its adoption through some
     * hand-off that synchronizes (the accept that returned it, the Python
     * object that holds it), which orders the bump before this load. */
    return (unsigned)fd < IO_EPOCHS
           ? atomic_load_explicit(&io_fd_epochs[fd], memory_order_relaxed) : 0;
}
/* s, w's slot for fd, made fresh for the file that has the number now:
 * 0, or -1 with an error set (io_slot_renew's epoll_ctl or a wake failed). */
static inline int io_slot_fresh(WorkerObject *w, int fd, struct io_slot *s)
{
    uint32_t e = io_fd_epoch(fd);
    return s->epoch == e ? 0 : io_slot_renew(w, fd, s, e);
}

static inline int io_due(WorkerObject *w, double now)
{
    /* relaxed: both are owner-written or a hint; a missed closing is seen next turn. */
    if (!atomic_load_explicit(&w->io.waiters, memory_order_relaxed)
        && !atomic_load_explicit(&w->io.closing, memory_order_relaxed))
        return 0;
    return ++w->io.tick >= IO_TICKS || now - w->io.last >= IO_PERIOD;
}

/* sock.c: the cooperative I/O budget.  A thread whose socket calls never
 * block would never trap, and OSv's rule can only act at a trap: after
 * IO_BUDGET calls that completed at once since the loop last resumed it, the
 * next one yields (tokio's coop budget is 128 per task poll). */
#define IO_BUDGET 128
extern PyMethodDef sock_module_methods[];
/* tcplink.c: a user-space TCP stack's per-segment link calls */
extern PyTypeObject TcpLink_Type;
int engine_event_set(PyObject *event);      /* event.c: Event.set(); -1 with an error set */
/* udptx.c */
extern PyMethodDef udptx_module_methods[];
extern PyTypeObject UdpTx_Type;
void worker_tx_flush(WorkerObject *w);
void worker_tx_free(WorkerObject *w);
/* chanrx.c: a net channel's consumer (csrc/net/channel.h) */
extern PyTypeObject ChanRx_Type;
extern PyMethodDef chanrx_module_methods[];
extern PyTypeObject SockOp_Type;
/* The socket calls for other engine code (the asyncio loop's transports, say):
 * each returns the awaitable SockOp (the syscall with the GIL held, EAGAIN
 * parks on the worker's epoll with no exception object) or NULL with an
 * error set.  engine_sock_sendto returns NotImplemented (a new reference)
 * for an address that is not a numeric (host, port) of family. */
struct sockaddr_storage;
PyObject *engine_sock_recv(int fd, Py_ssize_t max_bytes);
PyObject *engine_sock_sendall(int fd, PyObject *data);
PyObject *engine_sock_accept(int fd);                    /* -> (fd, address) */
PyObject *engine_sock_recvfrom(int fd, Py_ssize_t max_bytes);   /* -> (bytes, address) */
PyObject *engine_sock_sendto(int fd, PyObject *data, PyObject *address, int family);
/* sockaddr <-> the socket module's address forms; from_py: 0 done, 1 not
 * numeric (resolve it in Python), -1 error set */
PyObject *engine_sockaddr_to_py(const struct sockaddr_storage *a, unsigned int len);
int engine_sockaddr_from_py(int family, PyObject *o, struct sockaddr_storage *a,
                            unsigned int *len);

/* serve.c: the callback server of osvrt.net.serve_tcp_protocol */
extern PyMethodDef serve_module_methods[];
extern PyTypeObject Conn_Type, Server_Type;

/* aio.c: the asyncio loop's call_soon and ready-queue run */
extern PyTypeObject LoopCore_Type, LoopRun_Type;

/* aiotx.c: the asyncio loop's socket transports (TxCore).  A LoopCore holds
 * a TxTable: its epoll fd, the TxCore registered for each fd (a reference
 * each), and the read buffer they share (all used on the loop's thread). */
typedef struct {
    PyObject **slots;          /* indexed by fd */
    int cap;
    int epfd;                  /* the loop's selector epoll */
    char *rbuf;                /* the recv buffer, allocated at the first read */
} TxTable;
extern PyTypeObject TxCore_Type;
TxTable *loopcore_txtable(PyObject *core);                  /* NULL: TypeError set */
int txtable_dispatch(TxTable *t, int fd, uint32_t events);  /* 1 ours, 0 not, -1 error */
void txtable_clear(TxTable *t);                             /* drop every registration */
void txtable_free(TxTable *t);
int txtable_traverse(TxTable *t, visitproc visit, void *arg);
/* sock.c: send what the kernel takes now, never blocking: the bytes sent;
 * *err = errno of a failure other than EAGAIN (0 otherwise) */
Py_ssize_t engine_send_nb(int fd, const char *p, Py_ssize_t n, int *err);
/* data's bytes in *b (bytes: read in place, b->obj NULL; any other
 * bytes-like: its buffer, released by PyBuffer_Release if b->obj) */
int engine_get_bytes(PyObject *data, Py_buffer *b);

/* live.c */
int live_add(PyObject *set, ThreadObject *t);
int live_discard(PyObject *set, ThreadObject *t);
/* the same for a caller that has exposed t to the GC already (finish) */
int live_discard_exposed(PyObject *set, ThreadObject *t);
Py_ssize_t live_len(PyObject *set);
int live_watched(PyObject *set);          /* watch_empty was called */

/* timer.c */
TimerObject *timer_new(double deadline, PyObject *fn, PyObject *arg, int wakes);
void timer_disarm(TimerObject *tm);
/* Take the timer's fn (NULL: fired or cancelled already) and, with it, arg. */
static inline PyObject *timer_take(TimerObject *tm, PyObject **arg)
{
    /* acq_rel: of a racing fire and cancel exactly one gets fn; the winner
     * sees arg as timer_new wrote it */
    PyObject *fn = __atomic_exchange_n(&tm->fn, NULL, __ATOMIC_ACQ_REL);
    *arg = NULL;
    if (fn != NULL) {
        *arg = tm->arg;
        tm->arg = NULL;
    }
    return fn;
}
static inline int timer_armed(TimerObject *tm)
{
    return __atomic_load_n(&tm->fn, __ATOMIC_RELAXED) != NULL;   /* a hint: may fire any time */
}

/* worker.c */
int worker_push(WorkerObject *w, ThreadObject *t, int before_equals);
int worker_post(WorkerObject *w, ThreadObject *t);
TimerObject *worker_add_timer(WorkerObject *w, double deadline, PyObject *fn, PyObject *arg,
                              int wakes);
void worker_catch_up(WorkerObject *w, ThreadObject *t);
void trace_add(WorkerObject *w, uint32_t kind, uint64_t a, uint64_t b, uint64_t c);
#define STAT_ADD(w, field, n) osvrt_stat_add(&(w)->st->field, (n))

#endif
