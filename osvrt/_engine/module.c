/* module.c - osvrt._engine: the kernel calls every primitive is built on
 * (kernel.py re-exports them), spawn, and the module's set-up.
 *
 * The kernel's principles (kernel.py states them in full):
 *  1. a green thread enters the scheduler only by awaiting a trap: a Ticket
 *     (it waits), YIELD (it may run on), or by ending;
 *  2. a wait is a ticket that exactly one waker claims (thread.c);
 *  3. a wake never touches another CPU's run queue (worker.c, schedule);
 *  4. no lost wake-ups: a waiter opens its wait before it re-checks, a
 *     waker changes the condition before it claims.
 */
#include <time.h>

#include "engine.h"

const struct osvrt_core_api *osvrt_api;
OSVRT_TLS WorkerObject *tls_worker;
PyObject *Cancelled, *TIMED_OUT, *PARK, *YIELD, *state_names[ST_COUNT];
PyObject *ThreadClass, *UnretrievedClass, *AwaitWrapper;
PyObject *str_throw, *str_close, *str_name, *str_exc, *str_value, *str_stale;
PyObject *OUTSIDE_MSG;

/* ids are unique across runtimes; relaxed: only uniqueness matters. */
static _Atomic uint64_t next_id = 1;

#define PRIO_MIN 1e-6
#define PRIO_MAX 1e6

void worker_init_constants(void);

double
osvrt_clock(void)
{
    /* CLOCK_MONOTONIC: the clock of time.monotonic() and time.perf_counter()
     * on Linux, so Python-side deadlines and the loop agree. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

PyObject *
outside_error(void)
{
    PyErr_SetObject(PyExc_RuntimeError, OUTSIDE_MSG);
    return NULL;
}

static int
as_finite_double(PyObject *v, double *out)
{
    if (PyBool_Check(v) || !(PyLong_Check(v) || PyFloat_Check(v)))
        return -2;
    double x = PyFloat_AsDouble(v);
    if (x == -1.0 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return -1;
        PyErr_Clear();
        return -3;               /* an int too large for a float: not finite */
    }
    *out = x;
    return isfinite(x) ? 0 : -3;
}

/* A finite number of seconds >= 0, or TypeError/ValueError naming it. */
int
check_delay(PyObject *seconds, const char *what, double *out)
{
    double x = 0;
    int r = as_finite_double(seconds, &x);
    if (r == -1)
        return -1;
    if (r == -2) {
        PyErr_Format(PyExc_TypeError, "%s must be a number of seconds, not %R", what, seconds);
        return -1;
    }
    if (r == -3 || !(x >= 0)) {
        PyErr_Format(PyExc_ValueError, "%s must be a finite number >= 0, not %R", what, seconds);
        return -1;
    }
    *out = x;
    return 0;
}

static int
check_priority(PyObject *p, double *out)
{
    double x = 0;
    int r = as_finite_double(p, &x);
    if (r == -1)
        return -1;
    if (r == -2) {
        PyErr_Format(PyExc_TypeError, "priority must be a number, not %R", p);
        return -1;
    }
    /* The fair arithmetic adds p * (c' - c) with c up to 2**63: bounding p
     * keeps every R'' finite, so no NaN can ever stop the rule from picking
     * (a thread at 1e300 once starved all others). */
    if (r == -3 || !(x >= PRIO_MIN && x <= PRIO_MAX)) {
        /* PyErr_Format has no %g: the bounds are spelled out (PRIO_MIN, PRIO_MAX). */
        PyErr_Format(PyExc_ValueError,
                     "priority must be a number from 1e-06 to 1e+06 (CPU share is "
                     "proportional to 1/priority), not %R", p);
        return -1;
    }
    *out = x;
    return 0;
}

/* ---- module functions ---------------------------------------------------- */

static PyObject *
m_current(PyObject *m, PyObject *unused)
{
    WorkerObject *w = tls_worker;
    if (w == NULL || w->current == NULL)
        return outside_error();
    return Py_NewRef(w->current);
}

static PyObject *
m_current_worker(PyObject *m, PyObject *unused)
{
    WorkerObject *w = tls_worker;
    return Py_NewRef(w ? (PyObject *)w : Py_None);
}

static int
as_ticket(PyObject *o)
{
    if (Py_IS_TYPE(o, &Ticket_Type))
        return 1;
    PyErr_Format(PyExc_TypeError, "not an osvrt wait ticket: %R", o);
    return 0;
}

static PyObject *
m_wake(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "wake(ticket, value=None)");
        return NULL;
    }
    if (!as_ticket(args[0]))
        return NULL;
    int r = wake_ticket((TicketObject *)args[0], nargs > 1 ? args[1] : NULL);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static PyObject *
m_claim(PyObject *m, PyObject *tk)
{
    if (!as_ticket(tk))
        return NULL;
    ThreadObject *t = ticket_claim((TicketObject *)tk);
    return t ? (PyObject *)t : Py_NewRef(Py_None);
}

static PyObject *
m_schedule(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2 || !PyObject_TypeCheck(args[0], &ThreadBase_Type)) {
        PyErr_SetString(PyExc_TypeError, "schedule(thread, value=None)");
        return NULL;
    }
    if (schedule((ThreadObject *)args[0], nargs > 1 ? args[1] : NULL) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
m_wake_at(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "wake_at(ticket, delay, value=TIMED_OUT)");
        return NULL;
    }
    if (!as_ticket(args[0]))
        return NULL;
    double delay;
    if (check_delay(args[1], "delay", &delay) < 0)
        return NULL;
    WorkerObject *w = tls_worker;
    if (w == NULL)
        return outside_error();
    return (PyObject *)worker_add_timer(w, osvrt_clock() + delay, args[0],
                                        nargs > 2 ? args[2] : TIMED_OUT, 1);
}

static PyObject *
m_park(PyObject *m, PyObject *unused)
{
    return (PyObject *)ticket_new(NULL, TK_PARK);
}

static PyObject *
m_yield_now(PyObject *m, PyObject *unused)
{
    return (PyObject *)ticket_new(NULL, TK_YIELD);
}

static PyObject *
m_sleep(PyObject *m, PyObject *seconds)
{
    double delay;
    if (check_delay(seconds, "seconds", &delay) < 0)
        return NULL;
    TicketObject *tk = ticket_new(NULL, TK_SLEEP);
    if (tk != NULL)
        tk->delay = delay;
    return (PyObject *)tk;
}

static PyObject *
m_check_delay(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    double d;
    if (nargs != 2 || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "check_delay(seconds, what)");
        return NULL;
    }
    if (check_delay(args[0], PyUnicode_AsUTF8(args[1]), &d) < 0)
        return NULL;
    return Py_NewRef(args[0]);
}

static PyObject *
m_check_priority(PyObject *m, PyObject *p)
{
    double x;
    if (check_priority(p, &x) < 0)
        return NULL;
    return PyFloat_FromDouble(x);
}

static PyObject *
m_next_id(PyObject *m, PyObject *unused)
{
    return PyLong_FromUnsignedLongLong(atomic_fetch_add_explicit(&next_id, 1,
                                                                 memory_order_relaxed));
}

static PyObject *
m_monotonic(PyObject *m, PyObject *unused)
{
    return PyFloat_FromDouble(osvrt_clock());
}

/* The one place a green thread is made (osvrt.spawn, Runtime.submit and the
 * runtime's system threads): the name and priority checks, fn(*args) and the
 * coroutine check, the Thread, its id and, unless `system`, its entry in the
 * runtime's live set (stop() waits for live threads only).  The caller
 * queues it (push, post).  New reference, or NULL with an exception. */
static ThreadObject *
thread_create(PyObject *fn, PyObject *const *args, Py_ssize_t nargs, PyObject *name,
              PyObject *priority, WorkerObject *target, int pinned, int system)
{
    if (name != Py_None && !PyUnicode_Check(name))
        return (ThreadObject *)PyErr_Format(PyExc_TypeError, "name must be a str, not %R", name);
    double prio = 1.0;
    if (priority != NULL && priority != Py_None && check_priority(priority, &prio) < 0)
        return NULL;
    if (ThreadClass == NULL)
        return (ThreadObject *)PyErr_Format(PyExc_RuntimeError,
                                            "osvrt: the engine is not configured");
    if (!PyCallable_Check(fn))
        return (ThreadObject *)PyErr_Format(
            PyExc_TypeError, "a green thread runs an async def function; %R is not callable", fn);
    PyObject *coro = PyObject_Vectorcall(fn, args, nargs, NULL);
    if (coro == NULL)
        return NULL;
    if (Py_IS_TYPE(coro, &Ticket_Type) && AwaitWrapper != NULL) {
        /* osvrt's own awaitables (spawn(osvrt.sleep, 1)): run inside a
         * coroutine, as when sleep was an async def */
        Py_SETREF(coro, PyObject_CallOneArg(AwaitWrapper, coro));
        if (coro == NULL)
            return NULL;
    }
    if (!PyCoro_CheckExact(coro)) {
        PyErr_Format(PyExc_TypeError, "a green thread runs an async def function; %R returned "
                     "%s, not a coroutine", fn, Py_TYPE(coro)->tp_name);
        Py_DECREF(coro);
        return NULL;
    }
    if (!PyObject_GC_IsTracked(coro)) {
        /* CPython tracks every new coroutine: this one is hidden, so a live
         * green thread runs it.  Two threads on one coroutine would both
         * expose it as they end (a double track is fatal). */
        PyErr_Format(PyExc_RuntimeError, "%R returned a coroutine that another live green "
                     "thread already runs: each green thread needs a new one", fn);
        Py_DECREF(coro);
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)ThreadClass;
    ThreadObject *t = (ThreadObject *)cls->tp_alloc(cls, 0);
    if (t == NULL) {
        Py_DECREF(coro);
        return NULL;
    }
    t->coro = coro;
    t->ctx = PyContext_CopyCurrent();
    if (t->ctx == NULL) {
        Py_DECREF(t);
        return NULL;
    }
    t->name = name == Py_None ? NULL : Py_NewRef(name);
    t->w = (WorkerObject *)Py_NewRef(target);
    t->id = atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed);
    t->pinned = (char)pinned;
    t->prio = prio;
    /* r = 0: a new thread runs almost at once.  renorm is the target's
     * (owner-written; from another OS thread a stale value only means one
     * renormalization more when the target takes the thread in). */
    t->rn = target->renorm;
    t->live_index = -1;
    if (!system) {
        /* Hidden before the set publishes it: from then on, a worker ending
         * its loop may expose it (Worker._expose_left_threads); on failure
         * the dealloc tracks the coroutine and the context again. */
        thread_gc_hide(t);
        if (live_add(target->live, t) < 0) {
            Py_DECREF(t);
            return NULL;
        }
    }
    return t;
}

/* spawn(fn, *args, name=None, cpu=None, priority=1.0) -> Thread */
static PyObject *
m_spawn(PyObject *m, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *name = Py_None, *cpu = Py_None, *priority = NULL;
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "spawn() needs the async function to run");
        return NULL;
    }
    for (Py_ssize_t i = 0; kwnames && i < PyTuple_GET_SIZE(kwnames); i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i), *v = args[nargs + i];
        if (PyUnicode_CompareWithASCIIString(k, "name") == 0)
            name = v;
        else if (PyUnicode_CompareWithASCIIString(k, "cpu") == 0)
            cpu = v;
        else if (PyUnicode_CompareWithASCIIString(k, "priority") == 0)
            priority = v;
        else {
            PyErr_Format(PyExc_TypeError,
                         "spawn() got an unexpected keyword argument %R: spawn takes only "
                         "name, cpu and priority; to pass keyword arguments to the function, "
                         "spawn functools.partial(fn, %U=...)", k, k);
            return NULL;
        }
    }
    WorkerObject *w = tls_worker;
    if (w == NULL || w->current == NULL)
        return outside_error();
    /* the name and priority are checked before the cpu (as they always were) */
    double prio_unused;
    if (name != Py_None && !PyUnicode_Check(name))
        return PyErr_Format(PyExc_TypeError, "name must be a str, not %R", name);
    if (priority != NULL && check_priority(priority, &prio_unused) < 0)
        return NULL;
    WorkerObject *target = w;
    PyObject *tobj = NULL;
    if (cpu != Py_None) {
        tobj = worker_hook(w, HK_WORKER_FOR, cpu);
        if (tobj == NULL)
            return NULL;
        if (!PyObject_TypeCheck(tobj, &WorkerBase_Type)) {
            Py_DECREF(tobj);
            return PyErr_Format(PyExc_RuntimeError, "_worker_for returned %R", tobj);
        }
        target = (WorkerObject *)tobj;
    }
    ThreadObject *t = thread_create(args[0], args + 1, nargs - 1, name, priority, target,
                                    cpu != Py_None, 0);
    if (t == NULL)
        goto fail;
    STAT_ADD(w, spawned, 1);
    if (*osvrt_api->spawn_semaphore)
        osvrt_api->trace_spawn(w->index, t->id);
    if (target == w) {
        atomic_store_explicit(&t->state, ST_QUEUED, memory_order_relaxed);
        if (worker_push(w, t, 0) < 0)
            goto fail_live;
    } else if (worker_post(target, t) < 0) {
        goto fail_live;
    }
    Py_XDECREF(tobj);
    return (PyObject *)t;

fail_live:
    live_discard(target->live, t);
fail:
    Py_XDECREF(tobj);
    Py_XDECREF(t);
    return NULL;
}

/* make_thread(fn, args, name, worker, pinned, priority, system) -> Thread:
 * thread_create for Runtime.submit and the runtime's system threads (from
 * any OS thread); the caller posts it. */
static PyObject *
m_make_thread(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7 || !PyTuple_Check(args[1]) || !PyObject_TypeCheck(args[3], &WorkerBase_Type)) {
        PyErr_SetString(PyExc_TypeError,
                        "make_thread(fn, args: tuple, name, worker, pinned, priority, system)");
        return NULL;
    }
    int pinned = PyObject_IsTrue(args[4]), system = PyObject_IsTrue(args[6]);
    if (pinned < 0 || system < 0)
        return NULL;
    return (PyObject *)thread_create(args[0], &PyTuple_GET_ITEM(args[1], 0),
                                     PyTuple_GET_SIZE(args[1]), args[2], args[5],
                                     (WorkerObject *)args[3], pinned, system);
}

static PyObject *
m_bind_core(PyObject *m, PyObject *addr)
{
    unsigned long long a = PyLong_AsUnsignedLongLong(addr);
    if (a == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    const struct osvrt_core_api *api = (const struct osvrt_core_api *)(uintptr_t)a;
    if (api == NULL || api->version != OSVRT_CORE_API_VERSION
        || api->size != sizeof(struct osvrt_core_api))
        return PyErr_Format(PyExc_ImportError, "osvrt: the C core (osvrt._core) and the engine "
                            "(osvrt._engine) are from different builds; reinstall osvrt");
    osvrt_api = api;
    Py_RETURN_NONE;
}

static PyObject *
m_configure(PyObject *m, PyObject *args)
{
    PyObject *thread_cls, *unretrieved, *wrapper;
    if (!PyArg_ParseTuple(args, "O!OO:configure", &PyType_Type, &thread_cls, &unretrieved,
                          &wrapper))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)thread_cls, &ThreadBase_Type))
        return PyErr_Format(PyExc_TypeError, "%R is not a ThreadBase subclass", thread_cls);
    Py_XSETREF(ThreadClass, Py_NewRef(thread_cls));
    Py_XSETREF(UnretrievedClass, Py_NewRef(unretrieved));
    Py_XSETREF(AwaitWrapper, Py_NewRef(wrapper));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"current", m_current, METH_NOARGS,
     "current($module, /)\n--\n\nThe running green thread; RuntimeError outside a green thread."},
    {"current_worker", m_current_worker, METH_NOARGS,
     "current_worker($module, /)\n--\n\nThe Worker this OS thread runs, or None."},
    {"wake", (PyCFunction)(void (*)(void))m_wake, METH_FASTCALL,
     "wake($module, ticket, value=None, /)\n--\n\n"
     "wake(ticket, value=None) -> bool: end the wait `ticket` stands for, if nobody\n"
     "did yet; its await returns `value`.  Safe from any OS thread."},
    {"claim", m_claim, METH_O,
     "claim($module, ticket, /)\n--\n\n"
     "claim(ticket) -> Thread or None: take the waiter of `ticket` if this call wins;\n"
     "the caller then hands something over and calls schedule()."},
    {"schedule", (PyCFunction)(void (*)(void))m_schedule, METH_FASTCALL,
     "schedule($module, thread, value=None, /)\n--\n\n"
     "schedule(thread, value=None): make a claimed thread runnable again."},
    {"wake_at", (PyCFunction)(void (*)(void))m_wake_at, METH_FASTCALL,
     "wake_at($module, ticket, delay, value=..., /)\n--\n\n"
     "wake_at(ticket, delay, value=TIMED_OUT) -> Timer: wake `ticket` after `delay` s."},
    {"park", m_park, METH_NOARGS,
     "park($module, /)\n--\n\n"
     "Await it to wait until a wake() claims the current thread's open ticket;\n"
     "it returns the value that wake() passed."},
    {"yield_now", m_yield_now, METH_NOARGS,
     "yield_now($module, /)\n--\n\n"
     "await osvrt.yield_now(): let the fair rule pick again (the caller may well\n"
     "keep running)."},
    {"sleep", m_sleep, METH_O,
     "sleep($module, seconds, /)\n--\n\n"
     "await osvrt.sleep(seconds): sleep `seconds` (a number >= 0); sleep(0) only yields."},
    {"spawn", (PyCFunction)(void (*)(void))m_spawn, METH_FASTCALL | METH_KEYWORDS,
     "spawn($module, fn, /, *args, name=None, cpu=None, priority=1.0)\n--\n\n"
     "spawn(fn, *args, name=None, cpu=None, priority=1.0) -> Thread\n\n"
     "Start fn(*args), an async def function, as a green thread of the current\n"
     "runtime.  Unpinned, it starts on the spawner's CPU (as in OSv); cpu=c pins it\n"
     "to CPU c.  priority (1e-6..1e6): CPU share is proportional to 1/priority.\n"
     "Keyword arguments for fn: spawn functools.partial(fn, ...)."},
    {"make_thread", (PyCFunction)(void (*)(void))m_make_thread, METH_FASTCALL,
     "make_thread($module, fn, args, name, worker, pinned, priority, system, /)\n--\n\n"
     "The one constructor of green threads (spawn's too): checks name and priority,\n"
     "calls fn(*args), checks the coroutine, adds the thread to the live set unless\n"
     "`system`.  The caller posts it to `worker`."},
    {"check_delay", (PyCFunction)(void (*)(void))m_check_delay, METH_FASTCALL,
     "check_delay($module, seconds, what, /)\n--\n\n"
     "seconds if it is a finite number >= 0, else TypeError/ValueError naming `what`."},
    {"check_priority", m_check_priority, METH_O,
     "check_priority($module, priority, /)\n--\n\n"
     "priority as a float if it is in 1e-06..1e+06, else TypeError/ValueError."},
    {"next_id", m_next_id, METH_NOARGS,
     "next_id($module, /)\n--\n\nA green thread id, unique across runtimes."},
    {"monotonic", m_monotonic, METH_NOARGS,
     "monotonic($module, /)\n--\n\nThe scheduler's clock (CLOCK_MONOTONIC), seconds."},
    {"bind_core", m_bind_core, METH_O,
     "bind_core($module, address, /)\n--\n\nBind the C core's function table (csrc/core/core_api.h)."},
    {"configure", m_configure, METH_VARARGS,
     "configure($module, thread_class, unretrieved, await_wrapper, /)\n--\n\n"
     "The Python classes the engine makes threads of (osvrt/thread.py)."},
    {NULL}
};

static struct PyModuleDef engine_module = {
    PyModuleDef_HEAD_INIT, "osvrt._engine",
    "The engine: the scheduler's hot path (worker loop, Thread, waits, Event), compiled.",
    -1, module_methods,
};

static PyObject *
new_sentinel(void)
{
    return PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
}

PyMODINIT_FUNC
PyInit__engine(void)
{
    static const char *names[ST_COUNT] = {"unstarted", "queued", "running", "waiting",
                                          "terminated"};
    worker_init_constants();
    PyTypeObject *types[] = {&ThreadBase_Type, &Ticket_Type, &Timer_Type, &WorkerBase_Type,
                             &Event_Type, &LiveSet_Type, &SockOp_Type, &LoopCore_Type,
                             &LoopRun_Type, &Conn_Type, &Server_Type, &UdpTx_Type,
                             &TxCore_Type, &TcpLink_Type, &ChanRx_Type};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (PyType_Ready(types[i]) < 0)
            return NULL;
    PyObject *m = PyModule_Create(&engine_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddFunctions(m, io_module_methods) < 0)
        goto fail;
    if (PyModule_AddFunctions(m, sock_module_methods) < 0)
        goto fail;
    if (PyModule_AddFunctions(m, serve_module_methods) < 0)
        goto fail;
    if (PyModule_AddFunctions(m, place_module_methods) < 0)
        goto fail;
    if (PyModule_AddFunctions(m, udptx_module_methods) < 0)
        goto fail;
    if (PyModule_AddFunctions(m, chanrx_module_methods) < 0)
        goto fail;
    for (int i = 0; i < ST_COUNT; i++)
        if ((state_names[i] = PyUnicode_InternFromString(names[i])) == NULL)
            goto fail;
    if (!(str_throw = PyUnicode_InternFromString("throw"))
        || !(str_close = PyUnicode_InternFromString("close"))
        || !(str_name = PyUnicode_InternFromString("name"))
        || !(str_exc = PyUnicode_InternFromString("exc"))
        || !(str_value = PyUnicode_InternFromString("value"))
        || !(str_stale = PyUnicode_InternFromString("stale"))
        || !(OUTSIDE_MSG = PyUnicode_FromString(
                 "not inside an osvrt runtime: start one with osvrt.run(main) "
                 "or hand work to a running one with Runtime.submit()"))
        || !(PARK = new_sentinel()) || !(YIELD = new_sentinel())
        || !(TIMED_OUT = new_sentinel()))
        goto fail;
    Cancelled = PyErr_NewExceptionWithDoc(
        "osvrt.Cancelled",
        "Raised inside a green thread at its next await after cancel().\n"
        "A BaseException, like asyncio.CancelledError, so `except Exception`\n"
        "does not swallow it.", PyExc_BaseException, NULL);
    if (Cancelled == NULL)
        goto fail;
    if (PyModule_AddObjectRef(m, "Cancelled", Cancelled) < 0
        || PyModule_AddObjectRef(m, "PARK", PARK) < 0
        || PyModule_AddObjectRef(m, "YIELD", YIELD) < 0
        || PyModule_AddObjectRef(m, "TIMED_OUT", TIMED_OUT) < 0
        || PyModule_AddObjectRef(m, "OUTSIDE", OUTSIDE_MSG) < 0)
        goto fail;
    PyObject *fair = Py_BuildValue("{sdsdsdsdsd}", "TAU", TAU, "THYST", THYST, "SWITCH_PENALTY",
                                   SWITCH_PENALTY, "RENORM_LIMIT", RENORM_LIMIT, "RENORM_FACTOR",
                                   RENORM_FACTOR);
    int added = fair != NULL && PyModule_AddObjectRef(m, "FAIR", fair) == 0;
    Py_XDECREF(fair);
    if (!added)
        goto fail;
    static const char *consts[ST_COUNT] = {"UNSTARTED", "QUEUED", "RUNNING", "WAITING",
                                           "TERMINATED"};
    for (int i = 0; i < ST_COUNT; i++)
        if (PyModule_AddObjectRef(m, consts[i], state_names[i]) < 0)
            goto fail;
    if (PyModule_AddObjectRef(m, "ThreadBase", (PyObject *)&ThreadBase_Type) < 0
        || PyModule_AddObjectRef(m, "Ticket", (PyObject *)&Ticket_Type) < 0
        || PyModule_AddObjectRef(m, "Timer", (PyObject *)&Timer_Type) < 0
        || PyModule_AddObjectRef(m, "WorkerBase", (PyObject *)&WorkerBase_Type) < 0
        || PyModule_AddObjectRef(m, "Event", (PyObject *)&Event_Type) < 0
        || PyModule_AddObjectRef(m, "LiveSet", (PyObject *)&LiveSet_Type) < 0
        || PyModule_AddObjectRef(m, "LoopCore", (PyObject *)&LoopCore_Type) < 0
        || PyModule_AddObjectRef(m, "Connection", (PyObject *)&Conn_Type) < 0
        || PyModule_AddObjectRef(m, "ProtocolServer", (PyObject *)&Server_Type) < 0
        || PyModule_AddObjectRef(m, "UdpTx", (PyObject *)&UdpTx_Type) < 0
        || PyModule_AddObjectRef(m, "ChanRx", (PyObject *)&ChanRx_Type) < 0
        || PyModule_AddObjectRef(m, "TxCore", (PyObject *)&TxCore_Type) < 0
        || PyModule_AddObjectRef(m, "TcpLink", (PyObject *)&TcpLink_Type) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
