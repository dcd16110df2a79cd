/* thread.c - Thread (a green thread: a coroutine plus what the scheduler
 * keeps about it) and Ticket (one wait of a thread).
 *
 * A Ticket is also the trap object: `await ticket` hands the ticket itself
 * to the worker loop (the first am_send yields it), and the loop's next
 * PyIter_Send into the coroutine reaches the ticket's am_send again, which
 * returns what the wait produced.  So a park and its resume run no bytecode
 * of ours and raise no StopIteration.  A ticket registers its wait lazily, at
 * its first am_send, as a generator would: `w = e.wait()` that is awaited
 * later, or never, registers nothing.
 */
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"

/* ---- Thread ------------------------------------------------------------ */

static PyObject *
thread_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    ThreadObject *t = (ThreadObject *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    t->prio = 1.0;
    t->live_index = -1;
    atomic_init(&t->wait, 0);
    atomic_init(&t->cancel, 0);
    atomic_init(&t->pending, 0);
    atomic_init(&t->state, ST_UNSTARTED);
    return (PyObject *)t;
}

/* Thread(coro, ctx, name, tid, worker, pinned, prio): what Runtime._make_thread
 * calls; osvrt.spawn makes threads in C without it (module.c). */
static int
thread_init(ThreadObject *t, PyObject *args, PyObject *kw)
{
    PyObject *coro, *ctx, *name, *worker;
    unsigned long long tid;
    int pinned;
    double prio;
    if (!PyArg_ParseTuple(args, "OOOKOpd:Thread", &coro, &ctx, &name, &tid, &worker, &pinned,
                          &prio))
        return -1;
    if (!PyObject_TypeCheck(worker, &WorkerBase_Type)) {
        PyErr_Format(PyExc_TypeError, "Thread needs a Worker, not %R", worker);
        return -1;
    }
    if (t->live_index >= 0) {
        /* its coroutine may be hidden from the GC, and a worker may run it */
        PyErr_Format(PyExc_RuntimeError, "Thread.__init__ on a live green thread (%R)", t);
        return -1;
    }
    thread_gc_expose(t);
    Py_XSETREF(t->coro, Py_NewRef(coro));
    Py_XSETREF(t->ctx, Py_NewRef(ctx));
    Py_XSETREF(t->name, name == Py_None ? NULL : Py_NewRef(name));
    Py_XSETREF(t->w, (WorkerObject *)Py_NewRef(worker));
    t->id = tid;
    t->pinned = (char)pinned;
    t->prio = prio;
    t->r = 0.0;                 /* a new thread starts at R = 0: it runs almost at once */
    t->rn = t->w->renorm;
    return 0;
}

static int
thread_traverse(ThreadObject *t, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(t));
    Py_VISIT(t->coro);
    Py_VISIT(t->ctx);
    Py_VISIT(t->name);
    Py_VISIT(t->w);
    Py_VISIT(t->value);
    Py_VISIT(t->throw_);
    Py_VISIT(t->outcome);
    Py_VISIT(t->joiners);
    Py_VISIT(t->aux);
    return 0;
}

static int
thread_clear(ThreadObject *t)
{
    Py_CLEAR(t->coro);
    Py_CLEAR(t->ctx);
    Py_CLEAR(t->name);
    Py_CLEAR(t->w);
    Py_CLEAR(t->value);
    Py_CLEAR(t->throw_);
    Py_CLEAR(t->outcome);
    t->failed = 0;               /* no exception to raise from a cleared thread */
    Py_CLEAR(t->joiners);
    Py_CLEAR(t->aux);
    return 0;
}

static void
thread_dealloc(ThreadObject *t)
{
    /* A static type: a Python subclass's subtype_dealloc releases the
     * subclass itself after calling this. */
    PyTypeObject *tp = Py_TYPE(t);
    PyObject_GC_UnTrack(t);
    /* The LiveSet exposes a thread before it lets go (thread_gc_expose), but
     * a spawn whose live_add failed drops a hidden one here; CPython's
     * deallocs of a coroutine and a context untrack without a check. */
    if (t->coro != NULL && !PyObject_GC_IsTracked(t->coro))
        PyObject_GC_Track(t->coro);
    if (t->ctx != NULL && !PyObject_GC_IsTracked(t->ctx))
        PyObject_GC_Track(t->ctx);
    if (t->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)t);
    thread_clear(t);
    tp->tp_free((PyObject *)t);
}

/* A live thread is held by its runtime's LiveSet until it ends, so it, its
 * coroutine and its context can never be cyclic garbage while it lives:
 * each collection that scanned them would find them reachable.  Hiding them
 * from the collector takes a spawned thread's three objects out of every
 * young collection they would survive and out of the full collections they
 * would trigger (about 40% of a spawn + join's time with GC on).  Objects
 * they reference stay tracked; the collector counts the hidden references as
 * external, which they are.  Before the LiveSet lets go of the thread, and
 * before anything drops the coroutine or the context, thread_gc_expose
 * tracks all three again (CPython's coroutine dealloc expects a tracked
 * object). */
void
thread_gc_hide(ThreadObject *t)
{
    PyObject_GC_UnTrack(t);
    if (t->coro != NULL)
        PyObject_GC_UnTrack(t->coro);
    if (t->ctx != NULL)
        PyObject_GC_UnTrack(t->ctx);
}

void
thread_gc_expose(ThreadObject *t)
{
    /* Whether t is tracked is the state (no flag: there is no room for one
     * within pymalloc's 176-byte class, see the size assert), and
     * the coroutine and the context are hidden exactly while t is.  Only one
     * OS thread can be here for t, and nothing else touches these objects'
     * GC state meanwhile: its owner (finish, or its worker as its loop ends),
     * stop() once every worker is joined, or whoever drops the LiveSet or the
     * last reference.  The spawner's untracks happen-before all of them (the
     * LiveSet's lock and the run queue's push publish t). */
    if (PyObject_GC_IsTracked((PyObject *)t))
        return;
    if (t->coro != NULL && !PyObject_GC_IsTracked(t->coro))
        PyObject_GC_Track(t->coro);
    if (t->ctx != NULL && !PyObject_GC_IsTracked(t->ctx))
        PyObject_GC_Track(t->ctx);
    PyObject_GC_Track(t);
}

/* Claim t's open wait, whichever ticket it is (cancel, timeouts, C wakes). */
ThreadObject *
thread_claim_open(ThreadObject *t)
{
    /* acquire: see what the owner wrote before it opened the wait. */
    uint64_t w = atomic_load_explicit(&t->wait, memory_order_acquire);
    while (w & 1) {
        /* acq_rel: the winner owns t (principle 2 of kernel.py). */
        if (atomic_compare_exchange_weak_explicit(&t->wait, &w, w & ~(uint64_t)1,
                                                  memory_order_acq_rel, memory_order_acquire))
            return (ThreadObject *)Py_NewRef(t);
    }
    return NULL;
}

/* Set t's pending flag, then end its open wait if it has one (cancel and
 * interrupt): 1 if a wait was ended, 0 if none was open, -1 on error.  If t
 * is parked, its wait ends now; if it runs, the loop sees `pending` when it
 * parks (worker.c): pending is set before we look for an open wait, and t
 * opens its wait before it parks, so one side sees the other (both seq_cst). */
static int
pend_and_end_wait(ThreadObject *t)
{
    atomic_store_explicit(&t->pending, 1, memory_order_seq_cst);
    ThreadObject *c = thread_claim_open(t);
    if (c == NULL)
        return 0;
    int r = schedule(c, NULL);
    Py_DECREF(c);
    return r < 0 ? -1 : 1;
}

static PyObject *
thread_cancel(ThreadObject *t, PyObject *unused)
{
    if (atomic_load_explicit(&t->state, memory_order_relaxed) == ST_TERMINATED)
        Py_RETURN_FALSE;
    /* release, flag before summary: throw_into clears the summary first and
     * then reads the flag, so a cancel that races it is seen now or later. */
    atomic_store_explicit(&t->cancel, 1, memory_order_release);
    if (pend_and_end_wait(t) < 0)
        return NULL;
    Py_RETURN_TRUE;
}

/* For timeouts (deadline.py): end t's open wait, if any, so the pending
 * exception is raised at once.  Safe from any OS thread. */
static PyObject *
thread_interrupt(ThreadObject *t, PyObject *unused)
{
    int r = pend_and_end_wait(t);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyObject *
thread_new_ticket(ThreadObject *t, PyObject *unused)
{
    TicketObject *tk = ticket_new(t, TK_PARK);
    if (tk == NULL)
        return NULL;
    ticket_open(tk);
    WorkerObject *w = tls_worker;
    if (w == NULL || w->current != t) {
        /* Opened on behalf of a parked thread by the claimer of its last wait
         * (wait morphing: Condition.notify moves it onto a Mutex).  A cancel
         * that came between that claim and this open found no wait to end,
         * and t will not pass the loop's park check again: end this one now.
         * (A running thread opens its own waits; the park check covers it.)
         * seq_cst: ticket_open's store, then this load; cancel() stores
         * pending, then looks for an open wait. */
        if (atomic_load_explicit(&t->pending, memory_order_seq_cst)) {
            ThreadObject *c = thread_claim_open(t);
            if (c != NULL) {
                int r = schedule(c, NULL);
                Py_DECREF(c);
                if (r < 0) {
                    Py_DECREF(tk);
                    return NULL;
                }
            }
        }
    }
    return (PyObject *)tk;
}

/* For a foreign OS thread that waits for t's end (Runtime.run): poll, then
 * sleep on t's done word, all with the GIL released, so the worker can run
 * t meanwhile and a quick round trip costs neither side a futex wake.
 * leave_active: the caller counted itself in the core's `active` (as a
 * holder of the GIL) before it posted t; it leaves as it lets the GIL go,
 * so a polling worker that found t takes the GIL without blocking on it
 * (csrc/core/cpu.c, gil_settle).  Once t has ended, it polls on until no worker
 * holds the GIL, for the same reason the other way round.  spin=False when
 * t's worker shares the caller's CPU: polling there would only delay it, and
 * sched_yield() hands the CPU to any other process on a loaded host (measured:
 * 12-23 us a round trip on a quiet host, 280 us on a loaded one), so the
 * caller sleeps on the futex at once.
 * Returns True if t ended within `timeout` seconds. */
#define FOREIGN_SPIN_NS 200000
#define FOREIGN_SETTLE_NS 200000

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
wait_done_nogil(ThreadObject *t, _Atomic uint32_t *active, int64_t timeout_ns, int spin)
{
    int64_t start = now_ns(), end = start + timeout_ns;
    int64_t spin_end = spin ? start + FOREIGN_SPIN_NS : start;
    uint32_t dw;
    /* acquire: pairs with finish()'s exchange (release); the outcome is visible. */
    while ((dw = atomic_load_explicit(&t->done_word, memory_order_acquire)) != DW_DONE) {
        int64_t now = now_ns();
        if (now >= end)
            return 0;
        if (now < spin_end) {
            cpu_relax();
            continue;
        }
        /* Say we may sleep before we do.  relaxed: RUNNING -> SLEEPER and
         * finish()'s exchange to DONE are read-modify-writes of one word, so
         * one of them comes first in its modification order: either finish
         * sees SLEEPER and wakes, or our CAS fails on DONE (and the futex
         * call, which compares the word in the kernel, never sleeps on it). */
        if (dw == DW_RUNNING
            && !atomic_compare_exchange_strong_explicit(&t->done_word, &dw, DW_SLEEPER,
                                                        memory_order_relaxed,
                                                        memory_order_relaxed))
            continue;                   /* it ended meanwhile (dw == DONE) */
        struct timespec ts = {(end - now) / 1000000000, (end - now) % 1000000000};
        syscall(SYS_futex, (uint32_t *)&t->done_word, FUTEX_WAIT_PRIVATE, DW_SLEEPER, &ts,
                NULL, 0);
    }
    int64_t settle_end = spin ? now_ns() + FOREIGN_SETTLE_NS : 0;
    /* relaxed: a hint; at worst we block on the GIL as we would anyway. */
    while (atomic_load_explicit(active, memory_order_relaxed) != 0 && now_ns() < settle_end)
        cpu_relax();
    return 1;
}

static PyObject *
thread_wait_done(ThreadObject *t, PyObject *args)
{
    double timeout;
    int leave_active = 0, spin = 1;
    if (!PyArg_ParseTuple(args, "d|pp:_wait_done", &timeout, &leave_active, &spin))
        return NULL;
    if (timeout != timeout)
        return PyErr_Format(PyExc_ValueError, "_wait_done: timeout must be a number, not nan");
    WorkerObject *w = home_of(t);
    if (w == NULL)
        return PyErr_Format(PyExc_RuntimeError, "this %s was never started by a runtime",
                            Py_TYPE(t)->tp_name);
    if (w->crt == NULL)
        return PyErr_Format(PyExc_RuntimeError, "%R has no runtime", t);
    _Atomic uint32_t *active = &w->crt->active;
    int64_t timeout_ns = timeout <= 0 ? 0 : timeout >= 1e9 ? (int64_t)1e18 : (int64_t)(timeout * 1e9);
    int done;
    Py_BEGIN_ALLOW_THREADS
    if (leave_active)     /* relaxed: a hint for gil_settle only */
        atomic_fetch_sub_explicit(active, 1, memory_order_relaxed);
    done = wait_done_nogil(t, active, timeout_ns, spin);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(done);
}

static PyObject *
thread_done(ThreadObject *t, PyObject *unused)
{
    /* acquire: pairs with finish()'s seq_cst store; whoever sees the thread
     * ended sees all it did, its outcome included (finish() writes it first). */
    return PyBool_FromLong(atomic_load_explicit(&t->state, memory_order_acquire) == ST_TERMINATED);
}

/* The joiner's side of join(): a ticket whose first am_send registers. */
static PyObject *
thread_join(ThreadObject *t, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:join", kwlist, &timeout))
        return NULL;
    double delay = -1.0;
    if (timeout != Py_None && check_delay(timeout, "timeout", &delay) < 0)
        return NULL;
    TicketObject *tk = ticket_new(NULL, TK_JOIN);
    if (tk == NULL)
        return NULL;
    tk->obj = Py_NewRef(t);
    tk->delay = delay;
    return (PyObject *)tk;
}

PyObject *
thread_outcome(ThreadObject *t)
{
    /* Retrieved after all: the logger must not log at collection.  aux and
     * aux_future are read together under the lock: two joiners on two
     * workers may both get here, and a setter (_future, _unretrieved) may
     * run on any thread. */
    PyObject *logger = NULL;
    thread_slots_lock(t);
    if (!t->aux_future) {
        logger = t->aux;
        t->aux = NULL;
    }
    thread_slots_unlock(t);
    if (logger != NULL) {
        int r = PyObject_SetAttr(logger, str_exc, Py_None);
        Py_DECREF(logger);
        if (r < 0)
            return NULL;
    }
    if (t->failed) {
        PyErr_SetObject((PyObject *)Py_TYPE(t->outcome), t->outcome);
        return NULL;
    }
    return Py_NewRef(t->outcome ? t->outcome : Py_None);
}

static PyObject *
thread_get_state(ThreadObject *t, void *c)
{
    return Py_NewRef(state_names[atomic_load_explicit(&t->state, memory_order_relaxed)]);
}

static int
thread_set_state(ThreadObject *t, PyObject *v, void *c)
{
    for (int i = 0; i < ST_COUNT; i++) {
        if (v == state_names[i]) {
            atomic_store_explicit(&t->state, i, memory_order_relaxed);
            return 0;
        }
    }
    PyErr_Format(PyExc_ValueError, "not a thread state: %R", v);
    return -1;
}

static PyObject *
thread_get_flag(ThreadObject *t, void *which)
{
    _Atomic uint8_t *f = which ? &t->pending : &t->cancel;
    return PyBool_FromLong(atomic_load_explicit(f, memory_order_acquire));
}

static int
thread_set_flag(ThreadObject *t, PyObject *v, void *which)
{
    int b = v ? PyObject_IsTrue(v) : 0;
    if (b < 0)
        return -1;
    _Atomic uint8_t *f = which ? &t->pending : &t->cancel;
    atomic_store_explicit(f, (uint8_t)b, memory_order_seq_cst);
    return 0;
}

/* _future and _unretrieved share the `aux` slot (engine.h). */
static PyObject *
thread_get_aux(ThreadObject *t, void *future)
{
    int want = future != NULL;
    thread_slots_lock(t);                 /* another joiner may take it (thread_outcome) */
    PyObject *v = Py_NewRef(t->aux != NULL && t->aux_future == want ? t->aux : Py_None);
    thread_slots_unlock(t);
    return v;
}

static int
thread_set_aux(ThreadObject *t, PyObject *v, void *future)
{
    int want = future != NULL;
    PyObject *old = NULL;
    thread_slots_lock(t);
    if (v == NULL || v == Py_None) {
        if (t->aux_future == want) {
            old = t->aux;
            t->aux = NULL;
        }
    } else {
        old = t->aux;
        t->aux = Py_NewRef(v);
        t->aux_future = (char)want;
    }
    thread_slots_unlock(t);
    Py_XDECREF(old);                      /* after the unlock: a dealloc runs code */
    return 0;
}

static PyObject *
thread_get_export(ThreadObject *t, void *c)
{
    if (!t->has_export)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(t->r);
}

static int
thread_set_export(ThreadObject *t, PyObject *v, void *c)
{
    if (v == NULL || v == Py_None) {
        t->has_export = 0;
        return 0;
    }
    double x = PyFloat_AsDouble(v);
    if (x == -1.0 && PyErr_Occurred())
        return -1;
    t->r = x;                   /* R/TAU until the target imports it */
    t->has_export = 1;
    return 0;
}

/* A timeout's timer sets and reads _throw from whichever worker it fires
 * on, while t's own worker takes it (throw_into): all under the lock. */
static PyObject *
thread_get_throw(ThreadObject *t, void *c)
{
    thread_slots_lock(t);
    PyObject *v = Py_NewRef(t->throw_ ? t->throw_ : Py_None);
    thread_slots_unlock(t);
    return v;
}

static int
thread_set_throw(ThreadObject *t, PyObject *v, void *c)
{
    PyObject *new = (v == NULL || v == Py_None) ? NULL : Py_NewRef(v);
    thread_slots_lock(t);
    PyObject *old = t->throw_;
    t->throw_ = new;
    thread_slots_unlock(t);
    Py_XDECREF(old);                      /* after the unlock: a dealloc runs code */
    return 0;
}

/* _result (c NULL) and _exc (c non-NULL): the outcome, as what the thread
 * returned or as what it raised; None for the other, and before the end.
 * Read after join or done(): finish() writes both before it publishes the end. */
static PyObject *
thread_get_outcome(ThreadObject *t, void *c)
{
    int want_exc = c != NULL;
    if (t->outcome == NULL || t->failed != want_exc)
        Py_RETURN_NONE;
    return Py_NewRef(t->outcome);
}

static PyObject *
thread_get_handle(ThreadObject *t, void *c)
{
    return PyLong_FromUnsignedLongLong(t->h);
}

/* Set once, by Runtime.handle_for, before the push that makes the thread
 * findable by its handle (the engine's hook, or a C producer's first wait).
 * Only the owner of t sets it (its worker, or the creator before the first
 * post), so a plain store is enough. */
static int
thread_set_handle(ThreadObject *t, PyObject *v, void *c)
{
    unsigned long long h = v == NULL ? 0 : PyLong_AsUnsignedLongLong(v);
    if (h == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    if (v == NULL || t->h != 0) {
        PyErr_Format(PyExc_ValueError, "a thread's C handle is set once: %R has %llu, "
                     "not %R", t, (unsigned long long)t->h, v);
        return -1;
    }
    t->h = h;
    return 0;
}

static PyObject *
thread_get_w(ThreadObject *t, void *c)
{
    WorkerObject *w = home_of(t);
    if (w == NULL)                 /* made with Thread.__new__, or cleared by the GC */
        return PyErr_Format(PyExc_RuntimeError, "this %s was never started by a runtime",
                            Py_TYPE(t)->tp_name);
    return Py_NewRef((PyObject *)w);
}

static int
thread_set_w(ThreadObject *t, PyObject *v, void *c)
{
    if (v == NULL || !PyObject_TypeCheck(v, &WorkerBase_Type)) {
        PyErr_Format(PyExc_TypeError, "a thread's home is a Worker, not %R", v);
        return -1;
    }
    WorkerObject *old = t->w;
    Py_INCREF(v);
    /* release: see home_of. */
    __atomic_store_n(&t->w, (WorkerObject *)v, __ATOMIC_RELEASE);
    Py_XDECREF(old);
    return 0;
}

/* A parked thread's memory (the bench's memory row): with the 16-byte GC
 * header, the object must fit pymalloc's 176-byte size class. */
#ifndef Py_GIL_DISABLED             /* free-threaded: a larger header, mimalloc, no classes */
_Static_assert(sizeof(ThreadObject) <= 160, "ThreadObject outgrew pymalloc's 176-byte class");
#endif

#define OFF(f) offsetof(ThreadObject, f)
static PyMemberDef thread_members[] = {
    {"id", T_ULONGLONG, OFF(id), READONLY, NULL},
    /* Read-only: a live thread's coroutine and context are hidden from the
     * cyclic GC (thread_gc_hide), and a store that dropped one would free an
     * untracked object, which CPython's deallocs do not survive. */
    {"_coro", T_OBJECT, OFF(coro), READONLY, NULL},
    {"_ctx", T_OBJECT, OFF(ctx), READONLY, NULL},
    {"_name", T_OBJECT, OFF(name), 0, NULL},
    {"_value", T_OBJECT, OFF(value), 0, NULL},
    {"_joiners", T_OBJECT, OFF(joiners), READONLY, NULL},   /* tests: a racy peek */

    {"_prio", T_DOUBLE, OFF(prio), 0, NULL},
    {"_r", T_DOUBLE, OFF(r), 0, NULL},
    {"_rn", T_INT, OFF(rn), 0, NULL},
    {"_pinned", T_BOOL, OFF(pinned), 0, NULL},
    {"_cwait", T_BOOL, OFF(cwait), 0, NULL},
    /* read-only views for osvrt's kernel-level modules (cwait, net lanes,
     * shutdown): the fields stay the engine's to write */
    {"coro", T_OBJECT, OFF(coro), READONLY, "The thread's coroutine (None once it ended)."},
    {"__weaklistoffset__", T_PYSSIZET, OFF(weakreflist), READONLY, NULL},
    {NULL}
};
#undef OFF

static PyGetSetDef thread_getset[] = {
    {"_state", (getter)thread_get_state, (setter)thread_set_state, NULL, NULL},
    {"state", (getter)thread_get_state, NULL,
     "One of 'unstarted', 'queued', 'running', 'waiting', 'terminated'.", NULL},
    {"_cancel", (getter)thread_get_flag, (setter)thread_set_flag, NULL, NULL},
    {"_pending", (getter)thread_get_flag, (setter)thread_set_flag, NULL, (void *)1},
    {"_export", (getter)thread_get_export, (setter)thread_set_export, NULL, NULL},
    {"_throw", (getter)thread_get_throw, (setter)thread_set_throw, NULL, NULL},
    {"_w", (getter)thread_get_w, (setter)thread_set_w, NULL, NULL},
    {"handle", (getter)thread_get_handle, (setter)thread_set_handle,
     "The thread's C thread-table handle: 0 until Runtime.handle_for gives it\n"
     "one (set once).", NULL},
    {"worker", (getter)thread_get_w, NULL,
     "The worker whose run queue or timers hold the thread (read-only; moving\n"
     "it is its worker's job: Worker.move_out).", NULL},
    {"_result", (getter)thread_get_outcome, NULL, NULL, NULL},
    {"_exc", (getter)thread_get_outcome, NULL, NULL, (void *)1},
    {"_future", (getter)thread_get_aux, (setter)thread_set_aux, NULL, (void *)1},
    {"_unretrieved", (getter)thread_get_aux, (setter)thread_set_aux, NULL, NULL},
    {NULL}
};

static PyMethodDef thread_methods[] = {
    {"cancel", (PyCFunction)thread_cancel, METH_NOARGS,
     "cancel($self, /)\n--\n\n"
     "Ask the thread to stop: osvrt.Cancelled is raised inside it at its next await\n"
     "(at once if it is parked).  Safe from any OS thread.  Returns False if the\n"
     "thread had already ended."},
    {"join", (PyCFunction)(void (*)(void))thread_join, METH_VARARGS | METH_KEYWORDS,
     "join($self, /, timeout=None)\n--\n\n"
     "await t.join(timeout=None): wait for the thread to end; return its result or\n"
     "raise its exception (osvrt.Cancelled if it was cancelled).  TimeoutError after\n"
     "`timeout` seconds; joining yourself raises RuntimeError."},
    {"done", (PyCFunction)thread_done, METH_NOARGS, "done($self, /)\n--\n\nTrue once the thread has ended."},
    {"new_ticket", (PyCFunction)thread_new_ticket, METH_NOARGS,
     "A fresh wait of this thread (its owner only); one wake may claim it."},
    {"_interrupt", (PyCFunction)thread_interrupt, METH_NOARGS, NULL},
    {"_wait_done", (PyCFunction)thread_wait_done, METH_VARARGS, NULL},

    {NULL}
};

PyTypeObject ThreadBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "osvrt._engine.ThreadBase",
    .tp_basicsize = sizeof(ThreadObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = thread_new,
    .tp_init = (initproc)thread_init,
    .tp_dealloc = (destructor)thread_dealloc,
    .tp_traverse = (traverseproc)thread_traverse,
    .tp_clear = (inquiry)thread_clear,
    .tp_weaklistoffset = offsetof(ThreadObject, weakreflist),
    .tp_members = thread_members,
    .tp_getset = thread_getset,
    .tp_methods = thread_methods,
};

/* ---- Ticket -------------------------------------------------------------- */

TicketObject *
ticket_new(ThreadObject *t, int kind)
{
    WorkerObject *w = tls_worker;
    TicketObject *tk;
    if (w != NULL && w->nfree > 0) {
        /* The freelist is per worker (its owner alone pops and pushes), so
         * it needs no lock on any build. */
        tk = w->free_tickets[--w->nfree];
        (void)PyObject_Init((PyObject *)tk, &Ticket_Type);
    } else {
        tk = PyObject_GC_New(TicketObject, &Ticket_Type);
        if (tk == NULL)
            return NULL;
    }
    tk->t = (ThreadObject *)Py_XNewRef(t);
    tk->obj = NULL;
    tk->timer = NULL;
    tk->seq = 0;
    tk->delay = -1.0;
    tk->kind = kind;
    tk->step = 0;
    tk->fd = -1;
    tk->ioev = 0;
    tk->iow = NULL;
    PyObject_GC_Track(tk);
    return tk;
}

/* Open a new wait of tk->t (its owner only): every older ticket goes stale. */
void
ticket_open(TicketObject *tk)
{
    ThreadObject *t = tk->t;
    uint64_t seq = (atomic_load_explicit(&t->wait, memory_order_relaxed) >> 1) + 1;
    tk->seq = seq;
    /* seq_cst: the wait is published before the caller re-checks its
     * condition (the waiter half of principle 4, kernel.py), and before the
     * loop reads `pending` at the park (thread_cancel). */
    atomic_store_explicit(&t->wait, (seq << 1) | 1, memory_order_seq_cst);
}

ThreadObject *
ticket_claim(TicketObject *tk)
{
    ThreadObject *t = tk->t;
    if (t == NULL)
        return NULL;
    uint64_t open = (tk->seq << 1) | 1;
    /* acq_rel: the winner owns t and sees what its owner wrote before it
     * opened the wait (release half of ticket_open's store). */
    if (atomic_compare_exchange_strong_explicit(&t->wait, &open, tk->seq << 1,
                                                memory_order_acq_rel, memory_order_relaxed))
        return (ThreadObject *)Py_NewRef(t);
    return NULL;
}

int
wake_ticket(TicketObject *tk, PyObject *value)
{
    ThreadObject *t = ticket_claim(tk);
    if (t == NULL)
        return 0;
    int r = schedule(t, value);
    Py_DECREF(t);
    return r < 0 ? -1 : 1;
}

static void
ticket_end_timer(TicketObject *tk)
{
    if (tk->timer != NULL) {
        timer_disarm((TimerObject *)tk->timer);
        Py_CLEAR(tk->timer);
    }
}

static int
ticket_traverse(TicketObject *tk, visitproc visit, void *arg)
{
    Py_VISIT(tk->t);
    Py_VISIT(tk->obj);
    Py_VISIT(tk->timer);
    return 0;
}

static int
ticket_clear(TicketObject *tk)
{
    Py_CLEAR(tk->t);
    Py_CLEAR(tk->obj);
    Py_CLEAR(tk->timer);
    return 0;
}

static void
ticket_dealloc(TicketObject *tk)
{
    PyObject_GC_UnTrack(tk);
    ticket_clear(tk);
    WorkerObject *w = tls_worker;
    if (w != NULL && w->nfree < TICKET_FREELIST)
        w->free_tickets[w->nfree++] = tk;
    else
        PyObject_GC_Del(tk);
}

/* Step 0 of a wait: register it and yield the ticket, or finish at once.
 * What is particular to each kind of wait is in its wait_ops (waits.c). */
static PySendResult
ticket_start(TicketObject *tk, PyObject **result)
{
    WorkerObject *w = tls_worker;
    ThreadObject *me = w ? w->current : NULL;
    assert(tk->kind >= 0 && tk->kind < TK_COUNT && tk->step == 0);
    const struct wait_ops *ops = &wait_kinds[tk->kind];
    if (ops->poll != NULL) {
        int r = ops->poll(tk, me, result);
        if (r != 0)
            return r > 0 ? PYGEN_RETURN : PYGEN_ERROR;
        ops = &wait_kinds[tk->kind];     /* poll may change the kind (sleep(0): a yield) */
    }
    if (me == NULL) {
        PyErr_SetObject(PyExc_RuntimeError, OUTSIDE_MSG);
        return PYGEN_ERROR;
    }
    if (tk->t == NULL)
        tk->t = (ThreadObject *)Py_NewRef(me);
    if (tk->t != me) {
        /* A ticket's wait word is its thread's: awaited from another thread
         * it would park this one on a wait nobody can end. */
        PyErr_Format(PyExc_RuntimeError, "green thread %R awaited a wait made by green "
                     "thread %R; a wait is awaited by the thread that made it", me, tk->t);
        return PYGEN_ERROR;
    }
    if (ops->opens)
        ticket_open(tk);
    if (ops->arm != NULL) {
        int r = ops->arm(w, tk);
        if (r == -2)
            return PYGEN_ERROR;
        if (r < 0)
            goto fail_open;
    }
    if (tk->delay > 0.0 || (tk->delay == 0.0 && tk->kind != TK_YIELD)) {
        TimerObject *tm = worker_add_timer(w, osvrt_clock() + tk->delay, (PyObject *)tk,
                                           tk->kind == TK_SLEEP ? Py_None : TIMED_OUT, 1);
        if (tm == NULL)
            goto fail_open;
        tk->timer = (PyObject *)tm;
    }
    tk->step = 1;
    *result = Py_NewRef(tk);
    return PYGEN_NEXT;

fail_open: {
    /* The wait was opened but the thread will not park: close it, so no
     * later wake schedules a thread that is running. */
    ThreadObject *c = ticket_claim(tk);
    if (c != NULL) {
        Py_DECREF(c);
        return PYGEN_ERROR;
    }
    /* A waker claimed it first (arm's own re-check found the event set or
     * the target ended, or a cancel came): the thread is on a run queue
     * already, so it must park and be resumed once, by that wake.  The
     * error (making a timer or a list) concerns a wait that has ended. */
    PyErr_Clear();
    tk->step = 1;
    *result = Py_NewRef(tk);
    return PYGEN_NEXT;
}
}

PySendResult
wait_timeout_error(const char *what, PyObject *name, double delay)
{
    PyObject *d = PyFloat_FromDouble(delay);
    if (d == NULL)
        return PYGEN_ERROR;
    if (name != NULL)
        PyErr_Format(PyExc_TimeoutError, "%s %R timed out after %R s", what, name, d);
    else
        PyErr_Format(PyExc_TimeoutError, "%s timed out after %R s", what, d);
    Py_DECREF(d);
    return PYGEN_ERROR;
}

static PySendResult
ticket_am_send(TicketObject *tk, PyObject *arg, PyObject **result)
{
    if (tk->step == 0)
        return ticket_start(tk, result);
    if (tk->step == 2) {
        PyErr_SetString(PyExc_RuntimeError, "an osvrt wait can be awaited only once");
        return PYGEN_ERROR;
    }
    tk->step = 2;
    ticket_end_timer(tk);
    assert(tk->kind >= 0 && tk->kind < TK_COUNT);
    const struct wait_ops *ops = &wait_kinds[tk->kind];
    if (ops->disarm != NULL)
        ops->disarm(tk);
    return ops->result(tk, arg, result);
}

static PyObject *
ticket_await(PyObject *tk)
{
    return Py_NewRef(tk);
}

/* throw(typ[, val[, tb]]) of an engine awaitable whose wait is over (Ticket,
 * SockOp): raise what it was given, as a generator's throw() does; NULL. */
PyObject *
raise_thrown(PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *typ = args[0], *val = nargs > 1 ? args[1] : Py_None;
    if (PyExceptionInstance_Check(typ))
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    else if (PyExceptionClass_Check(typ))
        PyErr_SetObject(typ, val);
    else
        PyErr_Format(PyExc_TypeError, "exceptions must derive from BaseException, not %R", typ);
    return NULL;
}

/* throw() of an engine awaitable that may be parked on a sub-awaitable (a
 * Ticket under a SockOp or a server): forward the throw to sub, which ends
 * that wait and raises, or raise it here when there is none.  Steals sub;
 * returns NULL with the exception set. */
PyObject *
throw_into_sub(PyObject *sub, PyObject *const *args, Py_ssize_t nargs)
{
    if (sub == NULL)
        return raise_thrown(args, nargs);
    PyObject *m = PyObject_GetAttrString(sub, "throw");
    PyObject *r = m ? PyObject_Vectorcall(m, args, (size_t)nargs, NULL) : NULL;
    Py_XDECREF(m);
    Py_DECREF(sub);
    Py_XDECREF(r);             /* a Ticket's throw always raises */
    return NULL;
}

/* The raised exception, taken (NULL if none); and put back (steals; NULL:
 * nothing).  3.12's single-object API, spelled out for 3.11. */
PyObject *
take_raised(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *typ, *val, *tb;
    PyErr_Fetch(&typ, &val, &tb);
    if (typ == NULL)
        return NULL;
    PyErr_NormalizeException(&typ, &val, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(val, tb);
        Py_DECREF(tb);
    }
    Py_DECREF(typ);
    return val;
#endif
}

void
put_raised(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    if (exc == NULL)
        return;
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

/* An am_send result as the iterator protocol gives it (send(), __next__):
 * the yielded value, or NULL with StopIteration carrying the return value.
 * Shared by every awaitable of the engine (Ticket, SockOp). */
PyObject *
send_result_as_iter(PySendResult r, PyObject *res)
{
    if (r == PYGEN_NEXT)
        return res;
    if (r == PYGEN_RETURN) {
        if (res == Py_None)
            PyErr_SetNone(PyExc_StopIteration);
        else {
            PyObject *e = PyObject_CallOneArg(PyExc_StopIteration, res);
            if (e != NULL) {
                PyErr_SetObject(PyExc_StopIteration, e);
                Py_DECREF(e);
            }
        }
        Py_DECREF(res);
    }
    return NULL;
}

/* The iterator protocol, for callers that do not use am_send: a coroutine
 * resumed under a tracer (3.11 then calls tp_iternext/send), and foreign
 * loops that call send() directly. */
static PyObject *
ticket_send_method(TicketObject *tk, PyObject *arg)
{
    PyObject *res;
    PySendResult r = ticket_am_send(tk, arg, &res);   /* sets res first */
    return send_result_as_iter(r, res);
}

static PyObject *
ticket_iternext(TicketObject *tk)
{
    return ticket_send_method(tk, Py_None);
}

/* An exception thrown into the awaiting coroutine (cancel, timeout) passes
 * through here: end the wait's timer and raise it at the await.  A claimed
 * ticket left in an Event's or a Thread's list is dropped lazily there. */
static PyObject *
ticket_throw(TicketObject *tk, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw expects 1 to 3 arguments");
        return NULL;
    }
    tk->step = 2;
    ticket_end_timer(tk);
    if (wait_kinds[tk->kind].disarm != NULL)
        wait_kinds[tk->kind].disarm(tk);
    return raise_thrown(args, nargs);
}

static PyObject *
ticket_close(TicketObject *tk, PyObject *unused)
{
    tk->step = 2;
    ticket_end_timer(tk);
    if (wait_kinds[tk->kind].disarm != NULL)
        wait_kinds[tk->kind].disarm(tk);
    Py_RETURN_NONE;
}

static PyAsyncMethods ticket_as_async = {
    .am_await = ticket_await,
    .am_send = (sendfunc)ticket_am_send,
};

static PyMethodDef ticket_methods[] = {
    {"send", (PyCFunction)ticket_send_method, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))ticket_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)ticket_close, METH_NOARGS, NULL},
    {NULL}
};

static PyObject *
ticket_repr(TicketObject *tk)
{
    static const char *kinds[] = {"park", "yield", "sleep", "event", "join", "io"};
    return PyUnicode_FromFormat("<osvrt wait %s seq=%llu %s>", kinds[tk->kind],
                                (unsigned long long)tk->seq,
                                tk->t && !ticket_is_claimed(tk) ? "open" : "closed");
}

/* No tp_richcompare: tickets compare by identity, as object's do, which
 * lane.py's _discard_found relies on (deque.remove runs no Python code). */
PyTypeObject Ticket_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "osvrt._engine.Ticket",
    .tp_basicsize = sizeof(TicketObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)ticket_dealloc,
    .tp_traverse = (traverseproc)ticket_traverse,
    .tp_clear = (inquiry)ticket_clear,
    .tp_as_async = &ticket_as_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)ticket_iternext,
    .tp_methods = ticket_methods,
    .tp_repr = (reprfunc)ticket_repr,
};
