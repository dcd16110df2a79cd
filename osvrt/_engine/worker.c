/* worker.c - the per-CPU worker: its run loop, run queue and timers.
 *
 * The loop, at every trap (a Ticket or PARK: the thread waits; YIELD: it may
 * run on; or the thread's end):
 *   1. takes in wake-ups from other CPUs if its pushlist head is non-NULL
 *      (one relaxed load; the core's drain is called only then);
 *   2. fires expired timers;
 *   3. charges the wall-clock time the thread ran (OSv's fair rule: the
 *      normalizer c grows as exp(dt/TAU), the thread's R'' by p*(c'-c)) and
 *      keeps running it while its R'' is strictly below the head of the run
 *      queue, else switches, ties going to the queued thread;
 *   4. with nothing runnable, idles in the core (GIL released) until a
 *      wake-up, a kick or the next timer.
 * osvrt/fair.py is the reference for the arithmetic; tests/test_fair.py
 * checks the schedule it produces.
 *
 * Ownership: the run queue and the timers are touched by this worker's OS
 * thread alone.  Other OS threads reach it only through its C pushlist
 * (worker_post) and the atomics marked in engine.h.
 */
#include <linux/futex.h>
#include <math.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine.h"

#define INV_TAU (1.0 / TAU)    /* TAU and the other fair-rule constants: engine.h */
#define OFFER_PERIOD 0.001      /* a busy CPU looks for idle CPUs at most this often */
#define MAX_IDLE 3600.0         /* longest single idle (s); the loop idles again after it */
#define GIL_WAIT_NS 200000      /* see osvrt_cpu_idle: let the other worker release the GIL */

static double THYST_UNITS, THYST_LESS_PENALTY;      /* fair.py: expm1(THYST/TAU), less the penalty */

/* The trap value the loop uses for "the thread ended" (never a Python object). */
static PyObject ended_marker;
#define ENDED (&ended_marker)

/* ---- heaps ------------------------------------------------------------- */

/* Both heaps (engine.h, struct heap_entry) compare the key, then the order. */
static inline int
heap_less(const struct heap_entry *a, const struct heap_entry *b)
{
    return a->key < b->key || (a->key == b->key && a->order < b->order);
}

static void
heap_sift_up(struct heap_entry *h, Py_ssize_t i)
{
    struct heap_entry e = h[i];
    while (i > 0) {
        Py_ssize_t p = (i - 1) / 2;
        if (!heap_less(&e, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static void
heap_sift_down(struct heap_entry *h, Py_ssize_t n, Py_ssize_t i)
{
    struct heap_entry e = h[i];
    for (;;) {
        Py_ssize_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && heap_less(&h[c + 1], &h[c]))
            c++;
        if (!heap_less(&h[c], &e))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = e;
}

static inline Py_ssize_t
rq_len(WorkerObject *w)
{
    return atomic_load_explicit(&w->rq_len, memory_order_relaxed);
}

/* Queue t here (the caller made t's R'' relative to this CPU).  Takes a new
 * reference.  before_equals: a preempted thread goes before its equals. */
int
worker_push(WorkerObject *w, ThreadObject *t, int before_equals)
{
    Py_ssize_t n = rq_len(w);
    if (n == w->rq_cap) {
        Py_ssize_t cap = w->rq_cap ? w->rq_cap * 2 : 64;
        struct heap_entry *g = PyMem_Realloc(w->rq, sizeof(*g) * (size_t)cap);
        if (g == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        w->rq = g;
        w->rq_cap = cap;
    }
    w->order++;
    w->rq[n] = (struct heap_entry){.r = t->r, .order = before_equals ? -w->order : w->order,
                                   .t = (ThreadObject *)Py_NewRef(t)};
    heap_sift_up(w->rq, n);
    /* relaxed: other workers read the length only as a load estimate. */
    atomic_store_explicit(&w->rq_len, n + 1, memory_order_relaxed);
    return 0;
}

static ThreadObject *
rq_pop(WorkerObject *w)
{
    Py_ssize_t n = rq_len(w) - 1;
    ThreadObject *t = w->rq[0].t;
    w->rq[0] = w->rq[n];
    atomic_store_explicit(&w->rq_len, n, memory_order_relaxed);
    if (n > 0)
        heap_sift_down(w->rq, n, 0);
    if (w->rq_cap > 256 && n < w->rq_cap / 4) {    /* give memory back after a burst */
        struct heap_entry *g = PyMem_Realloc(w->rq, sizeof(*g) * (size_t)(w->rq_cap / 2));
        if (g != NULL) {
            w->rq = g;
            w->rq_cap /= 2;
        }
    }
    return t;                   /* the heap's reference, now the caller's */
}

static TimerObject *
tm_pop(WorkerObject *w)
{
    TimerObject *tm = w->tm[0].tm;
    w->tm[0] = w->tm[--w->tm_len];
    if (w->tm_len > 0)
        heap_sift_down(w->tm, w->tm_len, 0);
    return tm;
}

/* Disarmed timers (a wait that ended before its timeout) would otherwise stay
 * until their deadline; sweeping when the heap doubles keeps it amortized O(1). */
static void
tm_compact(WorkerObject *w)
{
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < w->tm_len; i++) {
        if (timer_armed(w->tm[i].tm))
            w->tm[k++] = w->tm[i];
        else
            Py_DECREF(w->tm[i].tm);   /* a disarmed timer holds nothing: no code runs */
    }
    w->tm_len = k;
    for (Py_ssize_t i = k / 2; i-- > 0;)
        heap_sift_down(w->tm, k, i);
    w->tm_limit = k * 2 > 64 ? k * 2 : 64;
}

TimerObject *
worker_add_timer(WorkerObject *w, double deadline, PyObject *fn, PyObject *arg, int wakes)
{
    if (w->tm_len >= w->tm_limit)
        tm_compact(w);
    if (w->tm_len == w->tm_cap) {
        Py_ssize_t cap = w->tm_cap ? w->tm_cap * 2 : 64;
        struct heap_entry *g = PyMem_Realloc(w->tm, sizeof(*g) * (size_t)cap);
        if (g == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        w->tm = g;
        w->tm_cap = cap;
    }
    TimerObject *tm = timer_new(deadline, fn, arg, wakes);
    if (tm == NULL)
        return NULL;
    w->order++;
    w->tm[w->tm_len] = (struct heap_entry){.deadline = deadline, .order = w->order,
                                           .tm = (TimerObject *)Py_NewRef(tm)};
    heap_sift_up(w->tm, w->tm_len++);
    return tm;
}

/* ---- fair rule helpers ------------------------------------------------- */

/* Make t's R'' relative to this CPU before it queues here: import it if t
 * moved here (has_export), or apply the renormalizations it slept through
 * (one: rescale; two or more: its R is below 2**-63 of a normal value). */
void
worker_catch_up(WorkerObject *w, ThreadObject *t)
{
    if (t->has_export) {
        t->r *= w->c;           /* r held R/TAU while the thread moved */
        t->has_export = 0;
        STAT_ADD(w, migrations_in, 1);
    } else {
        int32_t missed = w->renorm - t->rn;
        if (missed == 1)
            t->r *= RENORM_FACTOR;
        else if (missed > 1)
            t->r = 0.0;
    }
    t->rn = w->renorm;
}

/* c passed 2**63: scale c and every R'' here by 2**-126.  A positive factor
 * keeps the heap's order, so no re-heapify. */
static void
renormalize(WorkerObject *w, ThreadObject *running)
{
    w->c *= RENORM_FACTOR;
    w->renorm++;
    if (running != NULL) {
        running->r *= RENORM_FACTOR;
        running->rn = w->renorm;
    }
    for (Py_ssize_t i = 0, n = rq_len(w); i < n; i++) {
        struct heap_entry *e = &w->rq[i];
        e->r *= RENORM_FACTOR;
        e->t->r = e->r;
        e->t->rn = w->renorm;
    }
}

/* ---- wake paths ---------------------------------------------------------- */

/* Hand t (owned by the caller: new, claimed or moving) to worker w, from
 * any OS thread: push onto w's C pushlist, kick w if it sleeps. */
int
worker_post(WorkerObject *w, ThreadObject *t)
{
    if (t->h == 0) {
        /* First trip across CPUs: the runtime allocates its C record. */
        PyObject *r = worker_hook(w, HK_HANDLE_FOR, (PyObject *)t);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    t->posts++;                /* the poster owns t: no other writer; wraps at 2**16 */
    WorkerObject *here = tls_worker;
    if (here != NULL && here->trace)
        trace_add(here, TR_POST, t->id, ((uint64_t)t->id << 16) | (t->posts & 0xffff), w->index);
    if (!osvrt_api->ready(w->crt, t->h, w->index)) {
        PyErr_Format(PyExc_RuntimeError, "osvrt: stale C handle %llu for %R",
                     (unsigned long long)t->h, t);
        return -1;
    }
    return 0;
}

/* Make a claimed thread runnable, with `value` as what its wait returns:
 * straight onto our own run queue if it lives here (no C call), else onto
 * its CPU's pushlist. */
int
schedule(ThreadObject *t, PyObject *value)
{
    Py_XSETREF(t->value, Py_XNewRef(value));
    WorkerObject *home = home_of(t);
    if (home != tls_worker)
        return worker_post(home, t);
    if (t->rn != home->renorm || t->has_export)
        worker_catch_up(home, t);
    atomic_store_explicit(&t->state, ST_QUEUED, memory_order_relaxed);
    STAT_ADD(home, wakes_local, 1);
    return worker_push(home, t, 0);
}

/* A thread handed to us through the pushlist: woken remotely, new, or moved. */
static int
arrive(WorkerObject *w, ThreadObject *t)
{
    WorkerObject *home = home_of(t);
    if (home != w)
        return worker_post(home, t);   /* moved while on its way here: forward */
    if (t->rn != w->renorm || t->has_export)
        worker_catch_up(w, t);
    atomic_store_explicit(&t->state, ST_QUEUED, memory_order_relaxed);
    STAT_ADD(w, wakes_remote, 1);
    if (w->trace)
        trace_add(w, TR_ARRIVE, t->id, ((uint64_t)t->id << 16) | (t->posts & 0xffff),
                  (uint64_t)rq_len(w));
    return worker_push(w, t, 0);
}

static int
take_incoming(WorkerObject *w)
{
    for (;;) {
        uint32_t n = osvrt_api->drain(w->crt, w->index, w->drain_buf, DRAIN_BATCH);
        for (uint32_t i = 0; i < n; i++) {
            uint64_t h = w->drain_buf[i];
            if (h & OSVRT_KEY_TAG)
                continue;
            int cwake = (h & OSVRT_KEY_CWAKE) != 0;
            PyObject *key = PyLong_FromUnsignedLongLong(h & ~OSVRT_KEY_CWAKE);
            if (key == NULL)
                return -1;
            PyObject *o = PyDict_GetItemWithError(w->by_handle, key);
            Py_DECREF(key);
            if (o == NULL) {
                if (PyErr_Occurred())
                    return -1;
                continue;              /* ended meanwhile */
            }
            ThreadObject *t = (ThreadObject *)Py_NewRef(o);
            int r = 0;
            if (cwake) {
                /* Woken by the C protocol (a net channel): it ends the wait
                 * only if the thread is still in a C-mode wait and nobody
                 * claimed it first (a timer, cancel()); else it is stale and
                 * can never end an unrelated wait such as an Event's. */
                ThreadObject *c = t->cwait ? thread_claim_open(t) : NULL;
                if (c != NULL) {
                    r = schedule(c, NULL);
                    Py_DECREF(c);
                }
            } else {
                r = arrive(w, t);
            }
            Py_DECREF(t);
            if (r < 0)
                return -1;
        }
        if (n < DRAIN_BATCH)
            return 0;
    }
}

static int
fire_timers(WorkerObject *w, double now)
{
    while (w->tm_len && w->tm[0].deadline <= now) {
        TimerObject *tm = tm_pop(w);
        PyObject *arg, *fn = timer_take(tm, &arg);   /* fired: the references are ours */
        int r = 0;
        if (fn != NULL) {
            if (tm->wakes) {
                r = wake_ticket((TicketObject *)fn, arg) < 0 ? -1 : 0;
            } else {
                PyObject *res = PyObject_CallOneArg(fn, arg);
                r = res ? 0 : -1;
                Py_XDECREF(res);
            }
            Py_DECREF(fn);
            Py_DECREF(arg);
        }
        Py_DECREF(tm);
        if (r < 0)
            return -1;
    }
    return 0;
}

/* ---- a thread's end -------------------------------------------------------- */

/* A foreign OS thread sleeps on t's done word (Runtime.run, thread.c
 * wait_done_nogil).  Waking it now, while we hold the GIL and still have the
 * end of this turn to run in Python (hooks, the idle hook), makes it
 * runnable only to block on the GIL: on a shared CPU the kernel switches to
 * it at once, it sleeps on the GIL's condition, we signal it as we let the
 * GIL go, and both sides pay two more switches and four more futex calls
 * (measured with perf sched: 6 switches a round trip instead of 2).  So the
 * wake waits until this worker lets the GIL go: in worker_idle, or at the
 * next trap if it runs another thread instead (it keeps the GIL then
 * anyway).  The reference keeps t, and its done word, alive until then.
 * No wake is lost by the delay: done_word is already DONE (in finish), so
 * a waiter that comes later sees it and never sleeps; only one that
 * slept before the store waits for this wake, and every exit path of the
 * loop, and worker_clear, flushes it. */
static void
defer_done_wake(WorkerObject *w, ThreadObject *t)
{
    if (w->ndone_wakes == DONE_WAKES) {       /* full: wake at once, as before */
        syscall(SYS_futex, (uint32_t *)&t->done_word, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
        return;
    }
    w->done_wakes[w->ndone_wakes++] = (ThreadObject *)Py_NewRef(t);
}

/* The futex wakes deferred above; no Python: callable with the GIL released. */
static void
wake_done_waiters(WorkerObject *w)
{
    for (int i = 0; i < w->ndone_wakes; i++)
        syscall(SYS_futex, (uint32_t *)&w->done_wakes[i]->done_word, FUTEX_WAKE_PRIVATE,
                INT32_MAX, NULL, NULL, 0);
}

/* ... and the references, with the GIL held. */
static void
drop_done_wakes(WorkerObject *w)
{
    int n = w->ndone_wakes;
    w->ndone_wakes = 0;
    for (int i = 0; i < n; i++)
        Py_DECREF(w->done_wakes[i]);
}

static void
flush_done_wakes(WorkerObject *w)
{
    wake_done_waiters(w);
    drop_done_wakes(w);
}


static int
finish(WorkerObject *w, ThreadObject *t, PyObject *result, PyObject *exc)
{
    thread_gc_expose(t);       /* before the outcome and the coroutine's release */
    /* The outcome and the logger of an unretrieved exception first: whoever
     * sees the end (done()'s acquire of `state`, a foreign waiter's of
     * `done_word`) reads them.  exc wins: a thread that raised has no result. */
    Py_XSETREF(t->outcome, Py_XNewRef(exc != NULL ? exc : result));
    t->failed = exc != NULL;
    int err = 0;
    /* aux under the lock: its Python setters and getter may run on any thread. */
    thread_slots_lock(t);
    int settle = t->aux != NULL && t->aux_future;
    thread_slots_unlock(t);
    if (!settle && exc != NULL && !PyObject_TypeCheck(exc, (PyTypeObject *)Cancelled)) {
        /* Nobody may join it: log at collection unless someone does. */
        PyObject *name = PyObject_GetAttr((PyObject *)t, str_name);
        PyObject *u = name ? PyObject_CallFunctionObjArgs(UnretrievedClass, name, exc, NULL) : NULL;
        Py_XDECREF(name);
        if (u == NULL)
            err = 1;
        /* Checked again: the logger was made outside the lock (it runs
         * Python), and a Future set meanwhile takes the report instead. */
        PyObject *old = NULL;
        thread_slots_lock(t);
        if (t->aux == NULL || !t->aux_future) {
            old = t->aux;
            t->aux = u;
            t->aux_future = 0;
            u = NULL;
        }
        thread_slots_unlock(t);
        Py_XDECREF(old);                  /* after the unlock: a dealloc runs code */
        Py_XDECREF(u);
    }
    /* seq_cst: terminated before the joiners are looked at (join's re-check). */
    atomic_store_explicit(&t->state, ST_TERMINATED, memory_order_seq_cst);
    Py_CLEAR(t->coro);
    Py_CLEAR(t->ctx);
    Py_CLEAR(t->value);
    /* release: a foreign waiter that sees DONE sees the outcome.  An
     * exchange, not a store: it reads whether a waiter said it may sleep
     * (wait_done_nogil's CAS to SLEEPER), and only then is a wake owed. */
    if (atomic_exchange_explicit(&t->done_word, DW_DONE, memory_order_release) == DW_SLEEPER)
        defer_done_wake(w, t);
    /* Close the wait for good: a late claim (stale ticket) must fail. */
    uint64_t seq = (atomic_load_explicit(&t->wait, memory_order_relaxed) >> 1) + 1;
    atomic_store_explicit(&t->wait, seq << 1, memory_order_release);
    if (*osvrt_api->exit_semaphore)
        osvrt_api->trace_exit(w->index, t->id);
    if (settle) {
        PyObject *r = worker_hook(w, HK_SETTLE, (PyObject *)t);
        err |= r == NULL;
        Py_XDECREF(r);
    }
    /* Under the lock: join_arm appends from other workers (see there). */
    thread_slots_lock(t);
    PyObject *joiners = t->joiners;
    t->joiners = NULL;
    thread_slots_unlock(t);
    if (joiners != NULL) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(joiners); i++) {
            if (wake_ticket((TicketObject *)PyList_GET_ITEM(joiners, i), NULL) < 0)
                err = 1;
        }
        Py_DECREF(joiners);
    }
    if (t->h != 0) {
        PyObject *r = worker_hook(w, HK_HANDLE_DEAD, (PyObject *)t);
        err |= r == NULL;
        Py_XDECREF(r);
    }
    live_discard_exposed(w->live, t);     /* exposed at the top of finish */
    if (live_len(w->live) == 0 && live_watched(w->live)) {
        PyObject *r = worker_hook(w, HK_THREAD_ENDED, (PyObject *)t);
        err |= r == NULL;
        Py_XDECREF(r);
    }
    return err ? -1 : 0;
}

/* ---- resuming a thread ------------------------------------------------- */

/* The coroutine raised or returned (StopIteration from throw()): end t. */
static PyObject *
ended_by_error(WorkerObject *w, ThreadObject *t, PyObject *exc)
{
    int r;
    if (PyErr_GivenExceptionMatches(exc, PyExc_StopIteration)) {
        PyObject *v = PyObject_GetAttr(exc, str_value);
        if (v == NULL) {
            Py_DECREF(exc);
            return NULL;
        }
        r = finish(w, t, v, NULL);
        Py_DECREF(v);
    } else {
        r = finish(w, t, NULL, exc);
    }
    Py_DECREF(exc);
    return r < 0 ? NULL : ENDED;
}

/* Run t's coroutine in t's context until its next trap.  Returns the trap
 * (a new reference), ENDED, or NULL for an error of the engine itself. */
static PyObject *
run_in_context(WorkerObject *w, ThreadObject *t, PyObject *exc)
{
    PyObject *res = NULL;
    PySendResult r;
    t->started = 1;
    if (PyContext_Enter(t->ctx) < 0)
        return ended_by_error(w, t, take_raised());
    if (exc == NULL) {
        PyObject *v = t->value ? t->value : Py_NewRef(Py_None);
        t->value = NULL;
        r = PyIter_Send(t->coro, v, &res);
        Py_DECREF(v);
    } else {
        /* throw() has no am_send counterpart: a method call, rare path. */
        res = PyObject_CallMethodOneArg(t->coro, str_throw, exc);
        r = res ? PYGEN_NEXT : PYGEN_ERROR;
    }
    PyObject *err = r == PYGEN_ERROR ? take_raised() : NULL;
    if (PyContext_Exit(t->ctx) < 0) {
        Py_XDECREF(err);
        Py_XDECREF(res);
        return NULL;
    }
    if (r == PYGEN_NEXT)
        return res;
    if (r == PYGEN_RETURN) {
        int f = finish(w, t, res, NULL);
        Py_DECREF(res);
        return f < 0 ? NULL : ENDED;
    }
    return ended_by_error(w, t, err);
}

/* A timeout's exception made stale by the end of its block (deadline.py). */
static int
is_stale(PyObject *exc)
{
    if (Py_TYPE(exc) == (PyTypeObject *)Cancelled
        || !PyObject_TypeCheck(exc, (PyTypeObject *)Cancelled))
        return 0;
    PyObject *s = PyObject_GetAttr(exc, str_stale);
    if (s == NULL) {
        PyErr_Clear();
        return 0;
    }
    int r = PyObject_IsTrue(s);
    Py_DECREF(s);
    if (r < 0)
        PyErr_Clear();
    return r > 0;
}

static PyObject *
throw_into(WorkerObject *w, ThreadObject *t)
{
    /* Clear the summary before reading the two sources: a setter sets its
     * source first and the summary second, so nothing set meanwhile is lost. */
    atomic_store_explicit(&t->pending, 0, memory_order_seq_cst);
    thread_slots_lock(t);                 /* a timeout's timer may set it from another worker */
    PyObject *exc = t->throw_;
    t->throw_ = NULL;
    thread_slots_unlock(t);
    if (exc != NULL && is_stale(exc))
        Py_CLEAR(exc);
    if (exc == NULL) {
        if (!atomic_load_explicit(&t->cancel, memory_order_acquire))
            return run_in_context(w, t, NULL);       /* a stale flag: resume as usual */
        atomic_store_explicit(&t->cancel, 0, memory_order_relaxed);
        exc = PyObject_CallNoArgs(Cancelled);
        if (exc == NULL)
            return NULL;
        if (!t->started) {
            /* Cancelled before its first step: none of its code runs. */
            PyObject *r = PyObject_CallMethodNoArgs(t->coro, str_close);
            if (r == NULL) {
                Py_DECREF(exc);
                return NULL;
            }
            Py_DECREF(r);
            int f = finish(w, t, NULL, exc);
            Py_DECREF(exc);
            return f < 0 ? NULL : ENDED;
        }
    } else if (atomic_load_explicit(&t->cancel, memory_order_acquire)) {
        /* a cancel that came with a timeout: raised at the next await */
        atomic_store_explicit(&t->pending, 1, memory_order_seq_cst);
    }
    Py_CLEAR(t->value);
    PyObject *trap = run_in_context(w, t, exc);
    Py_DECREF(exc);
    return trap;
}

/* The hooks' names, in enum worker_hook order (engine.h). */
static const char *const hook_names[HK_COUNT] = {
    "_before_idle", "_serve_pull", "_offer_work", "_settle", "_handle_dead",
    "_worker_for", "_handle_for", "_thread_ended",
};

/* fn(receiver, arg) or fn(receiver): the receiver is w for a Worker hook,
 * w->rt for a Runtime hook.  New reference, or NULL with an exception. */
PyObject *
worker_hook(WorkerObject *w, enum worker_hook k, PyObject *arg)
{
    assert(k >= 0 && k < HK_COUNT);
    PyObject *fn = w->hook[k];
    if (fn == NULL)
        return PyErr_Format(PyExc_RuntimeError, "osvrt: worker not bound (no %s)", hook_names[k]);
    PyObject *argv[2] = {k < HK_FIRST_RUNTIME ? (PyObject *)w : w->rt, arg};
    return PyObject_Vectorcall(fn, argv, arg ? 2 : 1, NULL);
}

static int
call_hook(WorkerObject *w, enum worker_hook k, PyObject *arg)
{
    PyObject *r = worker_hook(w, k, arg);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* ---- idle ------------------------------------------------------------------ */

static int
worker_idle(WorkerObject *w, double *now)
{
    /* acquire, first: a kick after this read ends the idle (csrc/core/cpu.h). */
    uint32_t seq = atomic_load_explicit(&w->cpu->doorbell, memory_order_acquire);
    /* The hook only when it has work (worker.py keeps flush_at_idle): a
     * Python call per idle was ~1,200 instructions of every asyncio loop
     * park (callgrind, docs/design.md). */
    if ((w->idle_pull || w->flush_at_idle) && call_hook(w, HK_BEFORE_IDLE, NULL) < 0)
        return -1;
    if (w->txb != NULL)
        worker_tx_flush(w);         /* nothing batched sleeps with us (udptx.c) */
    /* acquire: pairs with the stopper's release store (then it kicks). */
    if (atomic_load_explicit(&w->stop, memory_order_acquire)
        || atomic_load_explicit(&w->pull, memory_order_relaxed) != NULL)
        return 0;
    /* The hook runs Python code (and a GC pass may run finalizers in it): a
     * thread it woke here went onto our run queue, which rings no doorbell,
     * and a timer it added is not in a timeout taken before it. */
    if (rq_len(w))
        return 0;
    while (w->tm_len && !timer_armed(w->tm[0].tm))    /* disarmed heads would cut the sleep short */
        Py_DECREF(tm_pop(w));
    int64_t timeout = -1;
    if (w->tm_len) {
        double d = w->tm[0].deadline - *now;
        d = d < MAX_IDLE ? d : MAX_IDLE;
        timeout = d > 0 ? (int64_t)(d * 1e9) + 1000 : 0;
    }
    /* fds closed by other threads (notify_closing): their waiters here wake. */
    if (atomic_load_explicit(&w->io.closing, memory_order_relaxed)) {
        if (io_take_closing(w) < 0)
            return -1;
        if (rq_len(w))
            return 0;
    }
    atomic_store_explicit(&w->running, 0, memory_order_relaxed);
    osvrt_stat_set(&w->st->current_id, 0);
    /* relaxed: a reader's estimate of the idle period in progress (top.py) */
    osvrt_stat_set(&w->st->idle_since_ns, (uint64_t)(*now * 1e9));
    int nev = 0;
    /* The sleep is epoll_wait on this CPU's epfd: fds ready, a kick (its
     * eventfd) or the next timer end it (csrc/core/cpu.h). */
    Py_BEGIN_ALLOW_THREADS
    wake_done_waiters(w);          /* the GIL is free now: see defer_done_wake */
    osvrt_api->cpu_idle_io(w->cpu, timeout, w->idle_nospin ? 0 : w->spin_ns, seq,
                           &w->crt->active, GIL_WAIT_NS,
                           w->io.evs, IO_BATCH, &nev);
    Py_END_ALLOW_THREADS
    drop_done_wakes(w);
    double after = osvrt_clock();
    /* idle_since_ns cleared first (relaxed), then idle_ns with release: a
     * reader that loads idle_ns with acquire and then idle_since_ns never
     * counts this period twice (osvrt/observe/top.py, _read_slots). */
    osvrt_stat_set(&w->st->idle_since_ns, 0);
    atomic_store_explicit(&w->st->idle_ns,
                          atomic_load_explicit(&w->st->idle_ns, memory_order_relaxed)
                          + (uint64_t)((after - *now) * 1e9), memory_order_release);
    if (w->trace)
        trace_add(w, TR_IDLE, (uint64_t)((after - *now) * 1e9), 0, 0);
    w->io.tick = 0;
    w->io.last = after;
    if (nev > 0 && io_dispatch(w, nev) < 0)
        return -1;
    /* Idle time decays everyone's runtime too: c follows wall-clock time. */
    w->c *= exp((after - *now) * INV_TAU);
    if (w->c > RENORM_LIMIT)
        renormalize(w, NULL);
    *now = after;
    return 0;
}

/* ---- the loop --------------------------------------------------------------- */

static PyObject *
worker_run_loop(WorkerObject *w, PyObject *unused)
{
    if (w->crt == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Worker._bind() was not called");
        return NULL;
    }
    tls_worker = w;
    ThreadObject *t = NULL;      /* the thread to run next, or the one that keeps running */
    uint64_t prev_id = 0;        /* the thread that ran last (switch tracepoint) */
    int penalty = 0;             /* the thread switched out stays runnable */
    double now = osvrt_clock();
    PyObject *trap = NULL;

    /* acquire: pairs with Runtime.stop's release store before its kick. */
    while (!atomic_load_explicit(&w->stop, memory_order_acquire)) {
        /* The UDP replies of the turn that just ended go out now, in one
         * sendmmsg (udptx.c): before we poll, take wake-ups or park, so a
         * reply never waits behind another thread's turn. */
        if (w->txb != NULL)
            worker_tx_flush(w);
        /* The packet source this CPU drains itself (net channels run by the
         * workers, csrc/net/rx_workers.h): frames for threads here become
         * wake-ups on our own pushlist, taken in just below. */
        if (osvrt_cpu_has_rx(w->cpu))
            osvrt_api->cpu_rx_poll(w->cpu);
        /* Every trap takes in wake-ups and fires timers before the rule picks. */
        if (!osvrt_pushlist_empty(&w->cpu->incoming) && take_incoming(w) < 0)
            goto error;
        if (w->tm_len && w->tm[0].deadline <= now && fire_timers(w, now) < 0)
            goto error;
        /* Readiness while busy: poll without blocking every IO_TICKS turns
         * or IO_PERIOD of run time, only while threads here wait for fds
         * (io.c): runnable threads never starve I/O, nor I/O them. */
        if (io_due(w, now) && io_poll(w, now) < 0)
            goto error;
        if (atomic_load_explicit(&w->pull, memory_order_relaxed) != NULL) {
            /* acq_rel: we own the requester reference it leaves behind. */
            PyObject *req = atomic_exchange_explicit(&w->pull, NULL, memory_order_acq_rel);
            if (req != NULL) {
                int r = call_hook(w, HK_SERVE_PULL, req);
                Py_DECREF(req);
                if (r < 0)
                    goto error;
            }
        }
        if (t != NULL && rq_len(w) && w->rq[0].r <= t->r) {
            /* t yielded and is no longer strictly below the head (ties go to
             * the queue): switch it out, charged its hysteresis, re-inserted
             * before its equals. */
            t->r += t->prio * w->c * THYST_UNITS;
            atomic_store_explicit(&t->state, ST_QUEUED, memory_order_relaxed);
            if (worker_push(w, t, 1) < 0)
                goto error;
            Py_CLEAR(t);
            w->current = NULL;
            penalty = 1;
        }
        if (t == NULL) {
            if (!rq_len(w)) {
                if (worker_idle(w, &now) < 0)
                    goto error;
                continue;
            }
            t = rq_pop(w);
            /* Switch-in: hysteresis credit, less the penalty when the thread
             * switched out stayed runnable (OSv's context_switch_penalty). */
            t->r -= t->prio * w->c * (penalty ? THYST_LESS_PENALTY : THYST_UNITS);
            STAT_ADD(w, switches, 1);
            osvrt_stat_set(&w->st->runq_len, (uint64_t)rq_len(w));
            if (*osvrt_api->switch_semaphore)
                osvrt_api->trace_switch(w->index, prev_id, t->id);
            if (w->trace)
                trace_add(w, TR_SWITCH, prev_id, t->id, (uint64_t)rq_len(w));
        }

        /* Another thread runs before we idle: the GIL stays ours, so the
         * waiters of threads that ended wait no longer (defer_done_wake). */
        if (w->ndone_wakes)
            flush_done_wakes(w);

        /* Run t until its next trap.  (current, run_start) name this run for
         * the stall watchdog; current stays set while t keeps the CPU. */
        w->current = t;
        prev_id = t->id;
        osvrt_stat_set(&w->st->current_id, t->id);
        atomic_store_explicit(&w->run_start, now, memory_order_relaxed);
        atomic_store_explicit(&w->running, 1, memory_order_relaxed);
        atomic_store_explicit(&t->state, ST_RUNNING, memory_order_relaxed);
        w->io_budget = IO_BUDGET;          /* a fresh budget per resume (sock.c) */
        w->idle_nospin = 0;                /* t may set it again as it parks (serve.c) */
        if (atomic_load_explicit(&t->pending, memory_order_acquire))
            trap = throw_into(w, t);
        else
            trap = run_in_context(w, t, NULL);
        if (trap == NULL)
            goto error;

        /* Charge the wall-clock time t ran (fair.advance, fair.charge). */
        double c = w->c;
        now = osvrt_clock();
        double cn = w->c = c * exp((now - atomic_load_explicit(&w->run_start,
                                                               memory_order_relaxed)) * INV_TAU);
        int parks = trap == PARK
                    || (Py_IS_TYPE(trap, &Ticket_Type) && ((TicketObject *)trap)->kind != TK_YIELD);
        if (parks) {
            t->r += t->prio * (cn - c + cn * THYST_UNITS);   /* ... and its switch-out hysteresis */
            t->rn = w->renorm;
            /* relaxed: only the owner opens a wait; a claimer that closed it
             * has made t runnable (queued or posted) already. */
            if (atomic_load_explicit(&t->wait, memory_order_relaxed) & 1) {
                atomic_store_explicit(&t->state, ST_WAITING, memory_order_relaxed);
                /* seq_cst: pairs with cancel()'s store of pending (thread.c). */
                if (atomic_load_explicit(&t->pending, memory_order_seq_cst)
                    && (atomic_load_explicit(&t->cancel, memory_order_acquire)
                    /* relaxed: a hint; throw_into reads it under the lock */
                    || __atomic_load_n(&t->throw_, __ATOMIC_RELAXED) != NULL)) {
                    /* A cancel or timeout came while t ran and found no wait to
                     * end: end this one at once so it is raised at this await. */
                    ThreadObject *cl = thread_claim_open(t);
                    if (cl != NULL) {
                        int r = schedule(cl, NULL);
                        Py_DECREF(cl);
                        if (r < 0)
                            goto error;
                    }
                }
            }
            if (cn > RENORM_LIMIT)
                renormalize(w, t);
            Py_CLEAR(t);
            w->current = NULL;
            atomic_store_explicit(&w->running, 0, memory_order_relaxed);
            penalty = 0;
        } else {
            t->r += t->prio * (cn - c);
            if (cn > RENORM_LIMIT)
                renormalize(w, t);
            if (trap == ENDED) {
                Py_CLEAR(t);
                w->current = NULL;
                atomic_store_explicit(&w->running, 0, memory_order_relaxed);
                penalty = 0;
            } else if (trap == YIELD || Py_IS_TYPE(trap, &Ticket_Type)) {
                /* the rule decides at the top, after wake-ups */
                if (w->idle_pull && rq_len(w) && now >= w->next_offer) {
                    w->next_offer = now + OFFER_PERIOD;
                    if (call_hook(w, HK_OFFER_WORK, NULL) < 0)
                        goto error;
                }
            } else {
                PyObject *name = PyObject_GetAttr((PyObject *)t, str_name);
                if (name == NULL)
                    goto error;
                PyObject *msg = PyUnicode_FromFormat(
                    "green thread %R awaited %R, which is not an osvrt operation "
                    "(asyncio and other event loops' awaitables do not work here)", name, trap);
                Py_DECREF(name);
                PyObject *e = msg ? PyObject_CallOneArg(PyExc_TypeError, msg) : NULL;
                Py_XDECREF(msg);
                if (e == NULL)
                    goto error;
                thread_slots_lock(t);
                PyObject *old = t->throw_;
                t->throw_ = e;
                thread_slots_unlock(t);
                Py_XDECREF(old);
                atomic_store_explicit(&t->pending, 1, memory_order_seq_cst);
            }
        }
        if (trap != ENDED)
            Py_DECREF(trap);
        trap = NULL;
    }
    Py_XDECREF(t);
    flush_done_wakes(w);
    w->current = NULL;
    atomic_store_explicit(&w->running, 0, memory_order_relaxed);
    if (w->txb != NULL)
        worker_tx_flush(w);         /* the last turn's replies */
    tls_worker = NULL;
    Py_RETURN_NONE;

error:
    if (trap != NULL && trap != ENDED)
        Py_DECREF(trap);
    Py_XDECREF(t);
    flush_done_wakes(w);
    w->current = NULL;
    atomic_store_explicit(&w->running, 0, memory_order_relaxed);
    if (w->txb != NULL)
        worker_tx_flush(w);         /* nothing queued is left behind */
    tls_worker = NULL;
    return NULL;
}

/* ---- trace recording ------------------------------------------------------ */

void
trace_add(WorkerObject *w, uint32_t kind, uint64_t a, uint64_t b, uint64_t c)
{
    if (w->trace_len == w->trace_cap) {
        w->trace_lost++;          /* full: count, never stall the loop */
        return;
    }
    w->trace[w->trace_len++] = (struct trace_event){osvrt_clock(), kind, w->index, a, b, c};
}

static PyObject *
worker_trace_start(WorkerObject *w, PyObject *arg)
{
    Py_ssize_t cap = PyLong_AsSsize_t(arg);
    if (cap == -1 && PyErr_Occurred())
        return NULL;
    if (cap <= 0 || cap > (Py_ssize_t)(PY_SSIZE_T_MAX / sizeof(struct trace_event)))
        return PyErr_Format(PyExc_ValueError, "trace capacity must be > 0, not %zd", cap);
    struct trace_event *buf = PyMem_Malloc(sizeof(*buf) * (size_t)cap);
    if (buf == NULL)
        return PyErr_NoMemory();
    PyMem_Free(w->trace);
    PyMem_RawFree(w->scratch);
    w->trace = buf;
    w->trace_cap = cap;
    w->trace_len = 0;
    w->trace_lost = 0;
    Py_RETURN_NONE;
}

/* The recorded events as bytes (struct trace_event, native layout: see
 * osvrt/observe/trace.py), and recording stops.  Call it when the loop no longer
 * runs (after stop), or from the worker's own thread. */
static PyObject *
worker_trace_take(WorkerObject *w, PyObject *unused)
{
    PyObject *b = PyBytes_FromStringAndSize((const char *)w->trace,
                                            (Py_ssize_t)sizeof(struct trace_event) * w->trace_len);
    if (b == NULL)
        return NULL;
    PyObject *r = Py_BuildValue("(NK)", b, (unsigned long long)w->trace_lost);
    PyMem_Free(w->trace);
    w->trace = NULL;
    w->trace_len = w->trace_cap = 0;
    return r;
}

static PyObject *
worker_trace_add(WorkerObject *w, PyObject *args)
{
    unsigned int kind;
    unsigned long long a, b, c;
    if (!PyArg_ParseTuple(args, "IKKK:_trace_add", &kind, &a, &b, &c))
        return NULL;
    if (w->trace)
        trace_add(w, kind, a, b, c);
    Py_RETURN_NONE;
}

/* Point the counters at a slot of the runtime's stats file (addr != 0), or
 * back at the worker's own (addr == 0); the values carry over.  The caller
 * keeps the mapping alive until it binds back to 0 (Runtime.stop). */
static PyObject *
worker_bind_stats(WorkerObject *w, PyObject *args)
{
    unsigned long long addr;
    if (!PyArg_ParseTuple(args, "K:bind_stats", &addr))
        return NULL;
    struct osvrt_worker_stats *to = addr ? (struct osvrt_worker_stats *)(uintptr_t)addr
                                         : &w->own_stats;
    if (to != w->st) {
        memcpy(to, w->st, sizeof *to);
        w->st = to;
    }
    Py_RETURN_NONE;
}

static PyObject *
worker_get_stat(WorkerObject *w, void *off)
{
    _Atomic uint64_t *c = (_Atomic uint64_t *)((char *)w->st + (uintptr_t)off);
    return PyLong_FromUnsignedLongLong(atomic_load_explicit(c, memory_order_relaxed));
}

static int
worker_set_stat(WorkerObject *w, PyObject *v, void *off)
{
    unsigned long long x = v ? PyLong_AsUnsignedLongLong(v) : 0;
    if (x == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    /* Python writes only the counters that Python keeps (stalls, moves) */
    osvrt_stat_set((_Atomic uint64_t *)((char *)w->st + (uintptr_t)off), x);
    return 0;
}

/* ---- Python-facing methods ---------------------------------------------- */

static PyObject *
worker_bind(WorkerObject *w, PyObject *args)
{
    PyObject *rt, *by_handle, *live;
    unsigned long long crt;
    unsigned int index;
    long long spin_ns;
    int idle_pull = 0;
    if (!PyArg_ParseTuple(args, "OO!O!KIL|p:_bind", &rt, &PyDict_Type, &by_handle, &LiveSet_Type,
                          &live, &crt, &index, &spin_ns, &idle_pull))
        return NULL;
    if (osvrt_api == NULL)   /* bind_core() comes first (osvrt/_setup.py, at Runtime.start) */
        return PyErr_Format(PyExc_RuntimeError, "osvrt: the engine is not set up "
                            "(osvrt._setup.set_up_engine(), which Runtime.start() calls)");
    if (crt == 0 || index >= ((struct osvrt_rt *)(uintptr_t)crt)->ncpu) {
        PyErr_Format(PyExc_ValueError, "bad C runtime or CPU index %u", index);
        return NULL;
    }
    /* Look the hooks up once, on the classes (a function, not a bound
     * method: no reference back to w or rt), before anything is changed. */
    PyObject *hooks[HK_COUNT];
    for (int k = 0; k < HK_COUNT; k++) {
        PyObject *cls = (PyObject *)Py_TYPE(k < HK_FIRST_RUNTIME ? (PyObject *)w : rt);
        hooks[k] = PyObject_GetAttrString(cls, hook_names[k]);
        if (hooks[k] == NULL || !PyCallable_Check(hooks[k])) {
            if (hooks[k] != NULL)
                PyErr_Format(PyExc_TypeError, "%R.%s is not callable", cls, hook_names[k]);
            while (k >= 0)
                Py_XDECREF(hooks[k--]);
            return NULL;
        }
    }
    for (int k = 0; k < HK_COUNT; k++)
        Py_XSETREF(w->hook[k], hooks[k]);
    Py_XSETREF(w->rt, Py_NewRef(rt));
    Py_XSETREF(w->by_handle, Py_NewRef(by_handle));
    Py_XSETREF(w->live, Py_NewRef(live));
    w->crt = (struct osvrt_rt *)(uintptr_t)crt;
    w->cpu = &w->crt->cpus[index];
    w->index = index;
    w->spin_ns = spin_ns;
    w->idle_nospin = 0;
    w->idle_pull = idle_pull;
    Py_RETURN_NONE;
}

static PyObject *
worker_enqueue_new(WorkerObject *w, PyObject *o)
{
    if (!PyObject_TypeCheck(o, &ThreadBase_Type))
        return PyErr_Format(PyExc_TypeError, "not a Thread: %R", o);
    ThreadObject *t = (ThreadObject *)o;
    atomic_store_explicit(&t->state, ST_QUEUED, memory_order_relaxed);
    if (worker_push(w, t, 0) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
worker_post_method(WorkerObject *w, PyObject *o)
{
    if (!PyObject_TypeCheck(o, &ThreadBase_Type))
        return PyErr_Format(PyExc_TypeError, "not a Thread: %R", o);
    if (worker_post(w, (ThreadObject *)o) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* A foreign OS thread is about to post a thread and wait for it in C
 * (Runtime.run): count it as a holder of the GIL until Thread._wait_done
 * lets the GIL go (thread.c).  relaxed: `active` is a hint (gil_settle). */
static PyObject *
worker_enter_active(WorkerObject *w, PyObject *unused)
{
    atomic_fetch_add_explicit(&w->crt->active, 1, memory_order_relaxed);
    Py_RETURN_NONE;
}

static PyObject *
worker_leave_active(WorkerObject *w, PyObject *unused)
{
    atomic_fetch_sub_explicit(&w->crt->active, 1, memory_order_relaxed);
    Py_RETURN_NONE;
}

static PyObject *
worker_kick(WorkerObject *w, PyObject *unused)
{
    if (w->cpu != NULL)
        osvrt_api->cpu_kick(w->cpu);
    Py_RETURN_NONE;
}

static PyObject *
worker_add_timer_method(WorkerObject *w, PyObject *args)
{
    double deadline;
    PyObject *fn, *arg;
    if (!PyArg_ParseTuple(args, "dOO:add_timer", &deadline, &fn, &arg))
        return NULL;
    return (PyObject *)worker_add_timer(w, deadline, fn, arg, 0);
}

static PyObject *
worker_catch_up_method(WorkerObject *w, PyObject *o)
{
    if (!PyObject_TypeCheck(o, &ThreadBase_Type))
        return PyErr_Format(PyExc_TypeError, "not a Thread: %R", o);
    worker_catch_up(w, (ThreadObject *)o);
    Py_RETURN_NONE;
}

/* The heap's last n entries as (R'', order, thread): leaves, where the
 * largest R'' sit (the balancer's candidates). */
static PyObject *
worker_runq_tail(WorkerObject *w, PyObject *arg)
{
    Py_ssize_t want = PyLong_AsSsize_t(arg);
    if (want < 0 && PyErr_Occurred())
        return NULL;
    Py_ssize_t n = rq_len(w), from = n > want ? n - want : 0;
    PyObject *out = PyList_New(n - from);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = from; i < n; i++) {
        struct heap_entry *e = &w->rq[i];
        PyObject *tup = Py_BuildValue("(dLO)", e->r, (long long)e->order, (PyObject *)e->t);
        if (tup == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i - from, tup);
    }
    return out;
}

static PyObject *
worker_get_runq(WorkerObject *w, void *c)
{
    PyObject *n = PyLong_FromSsize_t(rq_len(w));
    if (n == NULL)
        return NULL;
    PyObject *r = worker_runq_tail(w, n);
    Py_DECREF(n);
    return r;
}

/* Take the given threads out of the run queue (moves); returns those found. */
static PyObject *
worker_runq_remove(WorkerObject *w, PyObject *which)
{
    PyObject *found = PyList_New(0);
    if (found == NULL)
        return NULL;
    /* Two passes: the first may fail (PySet_Contains, PyList_Append) and
     * changes nothing; the second cannot fail (threads hash by identity, and
     * each was looked up once already).  An error leaves the run
     * queue as it was. */
    Py_ssize_t n = rq_len(w), k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int hit = PySet_Contains(which, (PyObject *)w->rq[i].t);
        if (hit < 0 || (hit && PyList_Append(found, (PyObject *)w->rq[i].t) < 0)) {
            Py_DECREF(found);
            return NULL;
        }
    }
    if (PyList_GET_SIZE(found) == 0)
        return found;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PySet_Contains(which, (PyObject *)w->rq[i].t) == 1)
            Py_DECREF(w->rq[i].t);    /* `found` holds it now */
        else
            w->rq[k++] = w->rq[i];
    }
    atomic_store_explicit(&w->rq_len, k, memory_order_relaxed);
    for (Py_ssize_t j = k / 2; j-- > 0;)
        heap_sift_down(w->rq, k, j);
    return found;
}

/* An idle worker asks us for work; False if another request is pending. */
static PyObject *
worker_request_pull(WorkerObject *w, PyObject *requester)
{
    PyObject *expect = NULL;
    Py_INCREF(requester);
    /* acq_rel: the loop's exchange takes the reference we leave. */
    if (atomic_compare_exchange_strong_explicit(&w->pull, &expect, requester,
                                                memory_order_acq_rel, memory_order_relaxed))
        Py_RETURN_TRUE;
    Py_DECREF(requester);
    Py_RETURN_FALSE;
}

static PyObject *
worker_get_pull_pending(WorkerObject *w, void *c)
{
    return PyBool_FromLong(atomic_load_explicit(&w->pull, memory_order_relaxed) != NULL);
}

static PyObject *
worker_get_current(WorkerObject *w, void *c)
{
    /* Racy by design (the watchdog, stats): under the GIL the loop cannot
     * drop the thread during this read; see README, free-threading. */
    PyObject *t = (PyObject *)w->current;
    return Py_NewRef(t ? t : Py_None);
}

static PyObject *
worker_get_run_start(WorkerObject *w, void *c)
{
    return PyFloat_FromDouble(atomic_load_explicit(&w->run_start, memory_order_relaxed));
}

static PyObject *
worker_get_int(WorkerObject *w, void *which)
{
    switch ((intptr_t)which) {
    case 0: return PyLong_FromSsize_t(rq_len(w));
    case 1: return PyBool_FromLong(atomic_load_explicit(&w->running, memory_order_relaxed));
    case 2: return PyBool_FromLong(atomic_load_explicit(&w->stop, memory_order_relaxed));
    default: return PyLong_FromSsize_t(w->tm_len);
    }
}

static int
worker_set_stop(WorkerObject *w, PyObject *v, void *c)
{
    int b = v ? PyObject_IsTrue(v) : 0;
    if (b < 0)
        return -1;
    /* release: whatever the stopper did first is seen by the loop's acquire. */
    atomic_store_explicit(&w->stop, b, memory_order_release);
    return 0;
}

static int
worker_traverse(WorkerObject *w, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(w));
    Py_VISIT(w->dict);
    Py_VISIT(w->rt);
    for (int k = 0; k < HK_COUNT; k++)
        Py_VISIT(w->hook[k]);
    Py_VISIT(w->by_handle);
    Py_VISIT(w->live);
    for (Py_ssize_t i = 0, n = rq_len(w); i < n; i++)
        Py_VISIT(w->rq[i].t);
    for (Py_ssize_t i = 0; i < w->tm_len; i++)
        Py_VISIT(w->tm[i].tm);
    for (int i = 0; i < w->ndone_wakes; i++)
        Py_VISIT(w->done_wakes[i]);
    return io_traverse(w, visit, arg);
}

static int
worker_clear(WorkerObject *w)
{
    Py_CLEAR(w->dict);
    Py_CLEAR(w->rt);
    for (int k = 0; k < HK_COUNT; k++)
        Py_CLEAR(w->hook[k]);
    Py_CLEAR(w->by_handle);
    Py_CLEAR(w->live);
    Py_ssize_t n = rq_len(w);
    atomic_store_explicit(&w->rq_len, 0, memory_order_relaxed);
    for (Py_ssize_t i = 0; i < n; i++)
        Py_DECREF(w->rq[i].t);
    Py_ssize_t m = w->tm_len;
    w->tm_len = 0;
    for (Py_ssize_t i = 0; i < m; i++)
        Py_DECREF(w->tm[i].tm);
    PyObject *p = atomic_exchange_explicit(&w->pull, NULL, memory_order_acq_rel);
    Py_XDECREF(p);
    flush_done_wakes(w);           /* a waiter is never left asleep */
    io_clear(w);
    return 0;
}

static void
worker_dealloc(WorkerObject *w)
{
    PyTypeObject *tp = Py_TYPE(w);
    PyObject_GC_UnTrack(w);
    worker_clear(w);
    worker_tx_free(w);
    PyMem_Free(w->rq);
    PyMem_Free(w->tm);
    PyMem_Free(w->trace);
    while (w->nfree > 0)
        PyObject_GC_Del(w->free_tickets[--w->nfree]);
    tp->tp_free((PyObject *)w);
}

static PyObject *
worker_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    WorkerObject *w = (WorkerObject *)type->tp_alloc(type, 0);
    if (w == NULL)
        return NULL;
    w->c = 1.0;
    w->tm_limit = 64;
    w->st = &w->own_stats;
    atomic_init(&w->rq_len, 0);
    atomic_init(&w->run_start, 0.0);
    atomic_init(&w->running, 0);
    atomic_init(&w->stop, 0);
    atomic_init(&w->pull, NULL);
    io_init(w);
    w->ndone_wakes = 0;
    w->scratch = NULL;
    return (PyObject *)w;
}

#define OFF(f) offsetof(WorkerObject, f)
static PyMemberDef worker_members[] = {
    {"c", T_DOUBLE, OFF(c), 0, "the fair normalizer (fair.py)"},
    {"renorm", T_INT, OFF(renorm), READONLY, NULL},
    {"index", T_UINT, OFF(index), READONLY, NULL},
    {"idle_pull", T_INT, OFF(idle_pull), 0, NULL},
    {"flush_at_idle", T_INT, OFF(flush_at_idle), 0,
     "ended threads' records are waiting to be freed: the idle calls _before_idle"},
    {"trace_lost", T_ULONGLONG, OFF(trace_lost), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, OFF(dict), READONLY, NULL},
    {NULL}
};
#undef OFF

#define STAT(name, writable) \
    {#name, (getter)worker_get_stat, writable ? (setter)worker_set_stat : NULL, NULL, \
     (void *)offsetof(struct osvrt_worker_stats, name)}
static PyGetSetDef worker_getset[] = {
    STAT(switches, 0), STAT(wakes_local, 0), STAT(wakes_remote, 0), STAT(migrations_in, 0),
    STAT(migrations_out, 1), STAT(stalls, 1), STAT(spawned, 0), STAT(idle_ns, 0),
    {"current", (getter)worker_get_current, NULL, "the green thread running here, or None", NULL},
    {"run_start", (getter)worker_get_run_start, NULL, NULL, NULL},
    {"runq", (getter)worker_get_runq, NULL, "a snapshot of the run queue (heap order)", NULL},
    {"runq_len", (getter)worker_get_int, NULL, NULL, (void *)0},
    {"running", (getter)worker_get_int, NULL, NULL, (void *)1},
    {"stop_requested", (getter)worker_get_int, (setter)worker_set_stop,
     "True once the loop must return (Runtime.stop, or the green thread that\n"
     "ends a caller-run loop); cleared by whoever runs the loop again", (void *)2},
    {"timers_len", (getter)worker_get_int, NULL, NULL, (void *)3},
    {"pull_pending", (getter)worker_get_pull_pending, NULL, NULL, NULL},
    {NULL}
};

static PyMethodDef worker_methods[] = {
    {"_bind", (PyCFunction)worker_bind, METH_VARARGS, NULL},
    {"run_loop", (PyCFunction)worker_run_loop, METH_NOARGS,
     "Run this worker's loop on the calling OS thread until stop_requested is set\n"
     "(Worker.main on the worker's own thread; osvrt.aio's loop on the caller's)."},
    {"enqueue_new", (PyCFunction)worker_enqueue_new, METH_O, NULL},
    {"post", (PyCFunction)worker_post_method, METH_O,
     "Hand a thread the caller owns (claimed, new, or moving) to this CPU.\n"
     "Safe from any OS thread: it only pushes onto this CPU's C pushlist."},
    {"kick", (PyCFunction)worker_kick, METH_NOARGS, NULL},
    {"enter_active", (PyCFunction)worker_enter_active, METH_NOARGS, NULL},
    {"leave_active", (PyCFunction)worker_leave_active, METH_NOARGS, NULL},
    {"add_timer", (PyCFunction)worker_add_timer_method, METH_VARARGS,
     "add_timer(deadline, fn, arg) -> Timer: call fn(arg) at `deadline` on this\n"
     "worker's thread (its owner only); Timer.cancel() disarms it."},
    {"catch_up", (PyCFunction)worker_catch_up_method, METH_O, NULL},
    {"runq_tail", (PyCFunction)worker_runq_tail, METH_O, NULL},
    {"_runq_remove", (PyCFunction)worker_runq_remove, METH_O, NULL},
    {"request_pull", (PyCFunction)worker_request_pull, METH_O, NULL},
    {"trace_start", (PyCFunction)worker_trace_start, METH_O, NULL},
    {"trace_take", (PyCFunction)worker_trace_take, METH_NOARGS, NULL},
    {"_trace_add", (PyCFunction)worker_trace_add, METH_VARARGS, NULL},
    {"bind_stats", (PyCFunction)worker_bind_stats, METH_VARARGS, NULL},
    {NULL}
};

PyTypeObject WorkerBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "osvrt._engine.WorkerBase",
    .tp_basicsize = sizeof(WorkerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = worker_new,
    .tp_dealloc = (destructor)worker_dealloc,
    .tp_traverse = (traverseproc)worker_traverse,
    .tp_clear = (inquiry)worker_clear,
    .tp_dictoffset = offsetof(WorkerObject, dict),
    .tp_members = worker_members,
    .tp_getset = worker_getset,
    .tp_methods = worker_methods,
};

void
worker_init_constants(void)
{
    THYST_UNITS = expm1(THYST / TAU);
    THYST_LESS_PENALTY = THYST_UNITS - expm1(SWITCH_PENALTY / TAU);
}
