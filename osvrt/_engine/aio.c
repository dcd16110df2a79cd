/* aio.c - the asyncio loop's per-callback path in C (osvrt/aio/loop.py).
 *
 * LoopCore belongs to one OsvrtEventLoop (outside debug mode) and does two
 * things asyncio does in Python for every callback:
 *   call_soon(callback, *args, context=None)
 *       makes the loop's Handle (a real asyncio.Handle: the loop's _Handle
 *       class, its slots filled in directly) and appends it to the loop's
 *       ready deque; when the loop is parked on its osvrt ticket, wakes it.
 *       The loop installs it as its instance's call_soon, so the C Future and
 *       Task schedule their callbacks through here without a Python frame.
 *   run_ready()
 *       runs the callbacks that were ready when it was called (asyncio's
 *       _run_once inner loop: popleft, skip cancelled, context.run(callback,
 *       *args)); an Exception goes to the loop's _callback_failed (asyncio's
 *       Handle._run report), SystemExit and KeyboardInterrupt propagate with
 *       the rest of the queue kept.
 *   run(max_busy)
 *       the loop thread's whole run outside debug mode, as one awaitable:
 *       turns while callbacks are ready, a park (a wait for the selector's
 *       epoll fd with the next timer as its timeout) when none is, a yield
 *       to the worker every max_busy busy turns; no Python frame per park.
 * Handles stay asyncio's own objects (anyio, uvicorn and asyncio's debug
 * mode read their fields); their slot offsets are read once, from the member
 * descriptors of asyncio.events.Handle, so no field is looked up by name per
 * call (CPython's Modules/_asynciomodule.c reads Future fields the same way:
 * by layout, not by name).
 *
 * Ownership: a LoopCore is used only by the OS thread that runs its loop
 * (asyncio's rule: a loop is not thread-safe; call_soon_threadsafe takes the
 * Python path).  idle_ticket is written by the loop's green thread and read
 * by green threads of the same worker: one OS thread, so plain fields.
 */
#include "engine.h"

#include <errno.h>
#include <sys/epoll.h>

enum { F_CONTEXT, F_LOOP, F_CALLBACK, F_ARGS, F_CANCELLED, F_REPR, F_SOURCE_TB, F_COUNT };
static const char *const field_names[F_COUNT] = {
    "_context", "_loop", "_callback", "_args", "_cancelled", "_repr", "_source_traceback",
};

typedef struct {
    PyObject_HEAD
    PyObject *loop;            /* the OsvrtEventLoop */
    PyObject *ready;           /* loop._ready (a collections.deque) */
    PyObject *append;          /* ready.append */
    PyObject *popleft;         /* ready.popleft */
    PyObject *on_error;        /* loop._callback_failed(handle, exc) */
    PyTypeObject *handle_type; /* the Handle class call_soon makes */
    PyTypeObject *handle_base; /* asyncio.events.Handle: what run_ready reads */
    PyObject *idle_ticket;     /* the loop thread's wait while parked, or NULL */
    /* run_once's parts (bind_turn): */
    PyObject *fd_to_key;       /* the selector's fd -> SelectorKey dict */
    int epfd;                  /* the selector's epoll fd (polled here, never blocking) */
    int debug;                 /* the loop is in debug mode: run() returns, runs no turn */
    PyObject *tidy_timers;     /* loop._tidy_timers(): drop cancelled timers */
    PyObject *remove_reader;   /* loop._remove_reader(fileobj) */
    PyObject *remove_writer;   /* loop._remove_writer(fileobj) */
    PyObject *heappop;         /* heapq.heappop */
    PyObject *time;            /* "time": loop.time() is looked up per turn (tests patch it) */
    PyObject *str_scheduled;   /* "_scheduled" (the loop may replace the list) */
    PyObject *str_stopping;    /* "_stopping" (loop.stop() sets it) */
    PyObject *task_type;       /* asyncio.Task, made by create_task */
    PyObject *task_kwnames;    /* ("loop", "name", "context") */
    PyObject *future_type;     /* asyncio.Future, made by create_future */
    PyObject *future_kwnames;  /* ("loop",) */
    PyObject *loop_kwargs;     /* {"loop": loop}: the kwargs of every two-step Future and
                                  Task made here (two_step_new), or NULL */
    int future_two_step;       /* future_type is made by two_step_new */
    int task_two_step;         /* task_type is made by two_step_new */
    Py_ssize_t min_scheduled;  /* asyncio's _MIN_SCHEDULED_TIMER_HANDLES */
    double clock_resolution;   /* loop._clock_resolution */
    Py_ssize_t off_when, off_scheduled;   /* TimerHandle's _when and _scheduled */
    Py_ssize_t off[F_COUNT];   /* slot offsets in handle_base's layout */
    int closed;                /* the loop was closed: call_soon refuses */
    TxTable txt;               /* the socket transports in the epoll (aiotx.c) */
} LoopCoreObject;

#define SLOT(h, core, f) (*(PyObject **)((char *)(h) + (core)->off[f]))

static int
slot_offset(PyTypeObject *base, const char *name, Py_ssize_t *off)
{
    PyObject *d = PyObject_GetAttrString((PyObject *)base, name);
    if (d == NULL)
        return -1;
    int ok = Py_IS_TYPE(d, &PyMemberDescr_Type)
             && ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
    if (ok)
        *off = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a __slots__ field: this Python's "
                     "asyncio Handle has another layout", base->tp_name, name);
        return -1;
    }
    return 0;
}

static int
core_init(LoopCoreObject *self, PyObject *args, PyObject *kw)
{
    PyObject *loop, *ready, *on_error, *handle_type, *handle_base;
    static char *kwlist[] = {"loop", "ready", "on_error", "handle_type", "handle_base", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO!O!:LoopCore", kwlist, &loop, &ready,
                                     &on_error, &PyType_Type, &handle_type,
                                     &PyType_Type, &handle_base))
        return -1;
    if (!PyType_IsSubtype((PyTypeObject *)handle_type, (PyTypeObject *)handle_base)) {
        PyErr_Format(PyExc_TypeError, "handle_type %R is not a subclass of %R", handle_type,
                     handle_base);
        return -1;
    }
    for (int i = 0; i < F_COUNT; i++)
        if (slot_offset((PyTypeObject *)handle_base, field_names[i], &self->off[i]) < 0)
            return -1;
    PyObject *append = PyObject_GetAttrString(ready, "append");
    PyObject *popleft = append ? PyObject_GetAttrString(ready, "popleft") : NULL;
    if (popleft == NULL) {
        Py_XDECREF(append);
        return -1;
    }
    /* First: a dict naming the old loop must never meet the new one.  The
     * flags go before the clear, whose decref may run code that calls
     * create_future (the old loop's __del__). */
    self->future_two_step = self->task_two_step = 0;
    Py_CLEAR(self->loop_kwargs);
    Py_XSETREF(self->loop, Py_NewRef(loop));
    Py_XSETREF(self->ready, Py_NewRef(ready));
    Py_XSETREF(self->append, append);
    Py_XSETREF(self->popleft, popleft);
    Py_XSETREF(self->on_error, Py_NewRef(on_error));
    Py_XSETREF(self->handle_type, (PyTypeObject *)Py_NewRef(handle_type));
    Py_XSETREF(self->handle_base, (PyTypeObject *)Py_NewRef(handle_base));
    return 0;
}

static int
core_traverse(LoopCoreObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->loop);
    Py_VISIT(self->ready);
    Py_VISIT(self->append);
    Py_VISIT(self->popleft);
    Py_VISIT(self->on_error);
    Py_VISIT(self->handle_type);
    Py_VISIT(self->handle_base);
    Py_VISIT(self->idle_ticket);
    Py_VISIT(self->fd_to_key);
    Py_VISIT(self->tidy_timers);
    Py_VISIT(self->remove_reader);
    Py_VISIT(self->remove_writer);
    Py_VISIT(self->heappop);
    Py_VISIT(self->time);
    Py_VISIT(self->str_scheduled);
    Py_VISIT(self->str_stopping);
    Py_VISIT(self->task_type);
    Py_VISIT(self->task_kwnames);
    Py_VISIT(self->future_type);
    Py_VISIT(self->future_kwnames);
    Py_VISIT(self->loop_kwargs);
    return txtable_traverse(&self->txt, visit, arg);
}

static int
core_clear(LoopCoreObject *self)
{
    Py_CLEAR(self->loop);
    Py_CLEAR(self->ready);
    Py_CLEAR(self->append);
    Py_CLEAR(self->popleft);
    Py_CLEAR(self->on_error);
    Py_CLEAR(self->handle_type);
    Py_CLEAR(self->handle_base);
    Py_CLEAR(self->idle_ticket);
    Py_CLEAR(self->fd_to_key);
    Py_CLEAR(self->tidy_timers);
    Py_CLEAR(self->remove_reader);
    Py_CLEAR(self->remove_writer);
    Py_CLEAR(self->heappop);
    Py_CLEAR(self->time);
    Py_CLEAR(self->str_scheduled);
    Py_CLEAR(self->str_stopping);
    Py_CLEAR(self->task_type);
    Py_CLEAR(self->task_kwnames);
    Py_CLEAR(self->future_type);
    Py_CLEAR(self->future_kwnames);
    self->future_two_step = self->task_two_step = 0;
    Py_CLEAR(self->loop_kwargs);
    txtable_clear(&self->txt);
    return 0;
}

static void
core_dealloc(LoopCoreObject *self)
{
    PyObject_GC_UnTrack(self);
    core_clear(self);
    txtable_free(&self->txt);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ---- call_soon ---------------------------------------------------------- */

static PyObject *
new_handle(LoopCoreObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *context)
{
    PyObject *cb_args = PyTuple_New(nargs - 1);
    if (cb_args == NULL)
        return NULL;
    for (Py_ssize_t i = 1; i < nargs; i++)
        PyTuple_SET_ITEM(cb_args, i - 1, Py_NewRef(args[i]));
    PyObject *ctx = context != NULL && context != Py_None ? Py_NewRef(context)
                                                          : PyContext_CopyCurrent();
    PyObject *h = ctx ? self->handle_type->tp_alloc(self->handle_type, 0) : NULL;
    if (h == NULL) {
        Py_DECREF(cb_args);
        Py_XDECREF(ctx);
        return NULL;
    }
    /* tp_alloc zeroed the slots; each store below owns its reference. */
    SLOT(h, self, F_CONTEXT) = ctx;
    SLOT(h, self, F_LOOP) = Py_NewRef(self->loop);
    SLOT(h, self, F_CALLBACK) = Py_NewRef(args[0]);
    SLOT(h, self, F_ARGS) = cb_args;
    SLOT(h, self, F_CANCELLED) = Py_NewRef(Py_False);
    SLOT(h, self, F_REPR) = Py_NewRef(Py_None);
    SLOT(h, self, F_SOURCE_TB) = Py_NewRef(Py_None);
    return h;
}

/* key (a str) is the ASCII name: the common case (a compact ASCII str, as
 * every keyword from C or Python code is) by length and bytes, ~10
 * instructions where PyUnicode_CompareWithASCIIString took ~80: the C
 * Future passes context= on every callback it schedules. */
static inline int
kw_is(PyObject *key, const char *name)
{
    if (PyUnicode_IS_COMPACT_ASCII(key)) {
        size_t n = (size_t)PyUnicode_GET_LENGTH(key);
        return strlen(name) == n && memcmp(PyUnicode_1BYTE_DATA(key), name, n) == 0;
    }
    return PyUnicode_CompareWithASCIIString(key, name) == 0;
}

/* The keyword arguments of call_soon and create_task, by asyncio's names:
 * names[k] is stored through slots[k]; `first` names the positional
 * parameter, which may come by keyword (call_soon(callback=f)) only when no
 * positional argument was given.  -1 with asyncio's TypeError otherwise. */
static int
parse_keywords(const char *fn, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
               const char *first, PyObject **first_slot, const char *const *names,
               PyObject ***slots)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i), *value = args[nargs + i];
        if (!PyUnicode_Check(key))
            goto unexpected;
        if (kw_is(key, first)) {
            if (nargs > 0) {
                PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument %R",
                             fn, key);
                return -1;
            }
            *first_slot = value;
            continue;
        }
        for (int k = 0; names[k] != NULL; k++) {
            if (kw_is(key, names[k])) {
                *slots[k] = value;
                goto next;
            }
        }
    unexpected:
        PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", fn, key);
        return -1;
    next:;
    }
    return 0;
}

static PyObject *
core_call_soon(LoopCoreObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *context = NULL, *callback_kw = NULL;
    static const char *const names[] = {"context", NULL};
    PyObject **slots[] = {&context};
    if (kwnames != NULL && parse_keywords("call_soon", args, nargs, kwnames, "callback",
                                          &callback_kw, names, slots) < 0)
        return NULL;
    if (callback_kw != NULL) {
        args = &callback_kw;
        nargs = 1;
    }
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "call_soon() missing 1 required positional "
                        "argument: 'callback'");
        return NULL;
    }
    if (self->closed || self->loop == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return NULL;
    }
    PyObject *h = new_handle(self, args, nargs, context);
    if (h == NULL)
        return NULL;
    PyObject *r = PyObject_CallOneArg(self->append, h);
    if (r == NULL) {
        Py_DECREF(h);
        return NULL;
    }
    Py_DECREF(r);
    if (self->idle_ticket != NULL) {
        /* Called by a green thread of the loop's worker while the loop is
         * parked (it completed a Future): wake the loop, a local wake. */
        if (wake_ticket((TicketObject *)self->idle_ticket, NULL) < 0) {
            Py_DECREF(h);
            return NULL;
        }
    }
    return h;
}

/* ---- Futures and Tasks made in two steps -------------------------------- */

/* asyncio's C Future and Task have no vectorcall: calling their type with
 * keywords makes type_call build a kwargs dict per call (~450 instructions
 * of a create_future's ~1,500).  Their __new__ is PyType_GenericNew (it
 * ignores its arguments) and their C __init__ only reads the dict, so
 * type_call's two steps are done here, with one {"loop": loop} dict made at
 * bind time.  Only for exactly that shape: a metaclass __call__, a Python
 * __new__ or a Python __init__ (which may take other keywords: create_task
 * passes name= and context= too) gets the class called as usual, as does
 * asyncio's pure-Python Future.  1 if tp qualifies (and the dict exists),
 * 0 if not, -1 with an error set. */
static int
can_two_step(LoopCoreObject *self, PyTypeObject *tp)
{
    if (tp->tp_new != PyType_GenericNew || tp->tp_init == NULL || self->loop == NULL
        || Py_TYPE(tp)->tp_call != PyType_Type.tp_call)
        return 0;
    /* Bind time only: __init__ found on the class is a slot wrapper when it
     * is C's (a Python one is a function). */
    PyObject *init = PyObject_GetAttrString((PyObject *)tp, "__init__");
    if (init == NULL)
        return -1;
    int c_init = Py_IS_TYPE(init, &PyWrapperDescr_Type);
    Py_DECREF(init);
    if (!c_init)
        return 0;
    if (self->loop_kwargs == NULL) {
        PyObject *kw = PyDict_New();
        if (kw == NULL || PyDict_SetItemString(kw, "loop", self->loop) < 0) {
            Py_XDECREF(kw);
            return -1;
        }
        self->loop_kwargs = kw;
    }
    return 1;
}

/* tp(*args, loop=self.loop), by tp_new then tp_init, as type_call does for
 * a type whose tp_new returns its own instances. */
static PyObject *
two_step_new(LoopCoreObject *self, PyTypeObject *tp, PyObject *args)
{
    /* Held across the init: nothing it runs (get_debug) may free it. */
    PyObject *kwargs = Py_NewRef(self->loop_kwargs);
    PyObject *obj = tp->tp_new(tp, args, NULL);
    if (obj != NULL && tp->tp_init(obj, args, kwargs) < 0)
        Py_CLEAR(obj);
    Py_DECREF(kwargs);
    return obj;
}

/* ---- create_task ------------------------------------------------------- */

static PyObject *
core_create_task(LoopCoreObject *self, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    PyObject *name = Py_None, *context = Py_None, *coro = nargs == 1 ? args[0] : NULL;
    static const char *const names[] = {"name", "context", NULL};
    PyObject **slots[] = {&name, &context};
    if (kwnames != NULL && parse_keywords("create_task", args, nargs, kwnames, "coro", &coro,
                                          names, slots) < 0)
        return NULL;
    if (coro == NULL) {
        PyErr_Format(PyExc_TypeError, "create_task() takes 1 positional argument (coro), "
                     "%zd given", nargs);
        return NULL;
    }
    if (self->task_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "LoopCore.create_task before bind_task");
        return NULL;
    }
    if (self->closed || self->loop == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return NULL;
    }
    /* BaseEventLoop.create_task without a task factory, outside debug mode:
     * Task(coro, loop=self, name=name, context=context). */
    if (self->task_two_step && name == Py_None && context == Py_None) {
        PyObject *args = PyTuple_Pack(1, coro);
        PyObject *task = args ? two_step_new(self, (PyTypeObject *)self->task_type, args) : NULL;
        Py_XDECREF(args);
        return task;
    }
    PyObject *call[4] = {coro, self->loop, name, context};
    return PyObject_Vectorcall(self->task_type, call, 1, self->task_kwnames);
}

static PyObject *
core_bind_task(LoopCoreObject *self, PyObject *task_type)
{
    if (!PyType_Check(task_type)) {
        PyErr_Format(PyExc_TypeError, "bind_task(%R): a Task class is needed", task_type);
        return NULL;
    }
    PyObject *kwnames = Py_BuildValue("(sss)", "loop", "name", "context");
    if (kwnames == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < 3; i++)
        PyUnicode_InternInPlace(&PyTuple_GET_ITEM(kwnames, i));
    int two_step = can_two_step(self, (PyTypeObject *)task_type);
    if (two_step < 0) {
        Py_DECREF(kwnames);
        return NULL;
    }
    self->task_two_step = 0;             /* before the swap, whose decref may run code */
    Py_XSETREF(self->task_kwnames, kwnames);
    Py_XSETREF(self->task_type, Py_NewRef(task_type));
    self->task_two_step = two_step;
    Py_RETURN_NONE;
}

/* ---- create_future, get_debug -------------------------------------------- */

/* BaseEventLoop.create_future: Future(loop=self), with no Python frame
 * (a Future hand-off makes one per hand-off), in two steps where it can. */
static PyObject *
core_create_future(LoopCoreObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->future_type == NULL || self->loop == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "LoopCore.create_future before bind_future");
        return NULL;
    }
    if (self->future_two_step) {
        PyObject *no_args = PyTuple_New(0);      /* the empty-tuple singleton */
        PyObject *fut = no_args ? two_step_new(self, (PyTypeObject *)self->future_type,
                                               no_args) : NULL;
        Py_XDECREF(no_args);
        return fut;
    }
    PyObject *call[1] = {self->loop};
    return PyObject_Vectorcall(self->future_type, call, 0, self->future_kwnames);
}

static PyObject *
core_bind_future(LoopCoreObject *self, PyObject *future_type)
{
    if (!PyType_Check(future_type)) {
        PyErr_Format(PyExc_TypeError, "bind_future(%R): a Future class is needed",
                     future_type);
        return NULL;
    }
    PyObject *kwnames = Py_BuildValue("(s)", "loop");
    if (kwnames == NULL)
        return NULL;
    PyUnicode_InternInPlace(&PyTuple_GET_ITEM(kwnames, 0));
    int two_step = can_two_step(self, (PyTypeObject *)future_type);
    if (two_step < 0) {
        Py_DECREF(kwnames);
        return NULL;
    }
    self->future_two_step = 0;           /* before the swap, whose decref may run code */
    Py_XSETREF(self->future_kwnames, kwnames);
    Py_XSETREF(self->future_type, Py_NewRef(future_type));
    self->future_two_step = two_step;
    Py_RETURN_NONE;
}

/* loop.get_debug(): every Future and Task asks it when made (the C
 * _asyncio's future_init); the loop keeps debug here through set_debug. */
static PyObject *
core_get_debug_method(LoopCoreObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->debug);
}

/* ---- run_ready ---------------------------------------------------------- */

/* Run handle h as asyncio's Handle._run does: 0, or -1 with SystemExit or
 * KeyboardInterrupt (or a failure of the report itself) set. */
static int
run_handle(LoopCoreObject *self, PyObject *h)
{
    if (!PyObject_TypeCheck(h, self->handle_base)) {
        /* Not a Handle (nothing in asyncio appends one): its own _run. */
        PyObject *r = PyObject_CallMethod(h, "_run", NULL);
        Py_XDECREF(r);
        return r ? 0 : -1;
    }
    if (SLOT(h, self, F_CANCELLED) == Py_True)
        return 0;
    PyObject *ctx = SLOT(h, self, F_CONTEXT), *cb = SLOT(h, self, F_CALLBACK);
    PyObject *cb_args = SLOT(h, self, F_ARGS);
    if (ctx == NULL || cb == NULL || cb_args == NULL || !PyTuple_Check(cb_args)
        || !PyContext_CheckExact(ctx)) {
        PyObject *r = PyObject_CallMethod(h, "_run", NULL);   /* a cancelled one */
        Py_XDECREF(r);
        return r ? 0 : -1;
    }
    Py_INCREF(ctx);
    Py_INCREF(cb);
    Py_INCREF(cb_args);
    PyObject *r = NULL;
    if (PyContext_Enter(ctx) == 0) {
        r = PyObject_Vectorcall(cb, &PyTuple_GET_ITEM(cb_args, 0),
                                PyTuple_GET_SIZE(cb_args), NULL);
        if (PyContext_Exit(ctx) < 0)
            Py_CLEAR(r);
    }
    Py_DECREF(ctx);
    Py_DECREF(cb);
    Py_DECREF(cb_args);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    PyObject *exc = take_raised();
    if (PyErr_GivenExceptionMatches(exc, PyExc_SystemExit)
        || PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt)) {
        put_raised(exc);
        return -1;
    }
    PyObject *report = PyObject_CallFunctionObjArgs(self->on_error, h, exc, NULL);
    Py_DECREF(exc);
    if (report == NULL)
        return -1;
    Py_DECREF(report);
    return 0;
}

static PyObject *
core_run_ready(LoopCoreObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->ready == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "LoopCore is not bound to a loop");
        return NULL;
    }
    /* Only what was ready now: callbacks they schedule wait for the next
     * turn (asyncio's rule, so that I/O and timers are looked at between). */
    Py_ssize_t n = PyObject_Length(self->ready);
    if (n < 0)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *h = PyObject_CallNoArgs(self->popleft);
        if (h == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_IndexError))
                return NULL;
            PyErr_Clear();          /* a callback emptied the queue (loop.close) */
            break;
        }
        int r = run_handle(self, h);
        Py_DECREF(h);
        if (r < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

/* ---- run_once: one turn of the loop -------------------------------------- */

static PyObject *
core_bind_turn(LoopCoreObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd_to_key", "epfd", "tidy_timers", "remove_reader",
                             "remove_writer", "heappop", "timer_type",
                             "min_scheduled", "clock_resolution", NULL};
    PyObject *fd_to_key, *tidy, *rr, *rw, *heappop, *timer_type;
    Py_ssize_t min_scheduled;
    int epfd;
    double res;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!iOOOOO!nd:bind_turn", kwlist,
                                     &PyDict_Type, &fd_to_key, &epfd, &tidy, &rr, &rw,
                                     &heappop, &PyType_Type, &timer_type,
                                     &min_scheduled, &res))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)timer_type, self->handle_base)) {
        PyErr_Format(PyExc_TypeError, "timer_type %R is not a Handle", timer_type);
        return NULL;
    }
    if (slot_offset((PyTypeObject *)timer_type, "_when", &self->off_when) < 0
        || slot_offset((PyTypeObject *)timer_type, "_scheduled", &self->off_scheduled) < 0)
        return NULL;
    if (epfd < 0) {
        PyErr_Format(PyExc_ValueError, "epfd=%d is not a file descriptor", epfd);
        return NULL;
    }
    PyObject *time = PyUnicode_InternFromString("time");
    PyObject *str_sched = time ? PyUnicode_InternFromString("_scheduled") : NULL;
    PyObject *str_stopping = str_sched ? PyUnicode_InternFromString("_stopping") : NULL;
    if (str_stopping == NULL) {
        Py_XDECREF(time);
        Py_XDECREF(str_sched);
        return NULL;
    }
    Py_XSETREF(self->str_scheduled, str_sched);
    Py_XSETREF(self->str_stopping, str_stopping);
    Py_XSETREF(self->fd_to_key, Py_NewRef(fd_to_key));
    self->epfd = epfd;
    self->txt.epfd = epfd;
    Py_XSETREF(self->tidy_timers, Py_NewRef(tidy));
    Py_XSETREF(self->remove_reader, Py_NewRef(rr));
    Py_XSETREF(self->remove_writer, Py_NewRef(rw));
    Py_XSETREF(self->heappop, Py_NewRef(heappop));
    Py_XSETREF(self->time, time);
    self->min_scheduled = min_scheduled;
    self->clock_resolution = res;
    Py_RETURN_NONE;
}

/* The handle of a reader or writer whose fd is ready: onto the ready queue,
 * or, when it was cancelled, its registration dropped (asyncio's
 * _process_events). */
static int
fd_ready(LoopCoreObject *self, PyObject *h, PyObject *fileobj, PyObject *remove)
{
    if (PyObject_TypeCheck(h, self->handle_base) && SLOT(h, self, F_CANCELLED) == Py_True) {
        PyObject *r = PyObject_CallOneArg(remove, fileobj);
        Py_XDECREF(r);
        return r ? 0 : -1;
    }
    PyObject *r = PyObject_CallOneArg(self->append, h);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* Events taken per turn at most; more wait for the next turn (epoll is
 * level-triggered and queues a reported fd behind the others: none starves). */
#define TURN_EVENTS 256

/* The selector's fds that are ready now, without blocking: each one's reader
 * and writer handles queued (asyncio's select(0) + _process_events).  The
 * epoll_wait is made with the GIL held: it cannot block (docs/design.md,
 * "Socket calls on the hot path"). */
static int
poll_fds(LoopCoreObject *self)
{
    struct epoll_event evs[TURN_EVENTS];
    int n = epoll_wait(self->epfd, evs, TURN_EVENTS, 0);
    if (n < 0) {
        if (errno == EINTR)
            return 0;                 /* a signal: its handler runs at the next bytecode */
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    int err = 0;
    for (int i = 0; i < n && !err; i++) {
        /* a socket transport's fd: read and write in C, no handle (aiotx.c) */
        int tx = txtable_dispatch(&self->txt, evs[i].data.fd, evs[i].events);
        if (tx != 0) {
            err = tx < 0;
            continue;
        }
        PyObject *fd = PyLong_FromLong(evs[i].data.fd);   /* selectors register data.fd */
        if (fd == NULL)
            return -1;
        PyObject *key = PyDict_GetItemWithError(self->fd_to_key, fd);
        Py_DECREF(fd);
        if (key == NULL) {
            err = PyErr_Occurred() != NULL;
            continue;                 /* unregistered meanwhile */
        }
        Py_INCREF(key);
        long ev = (long)evs[i].events;
        long want = PyTuple_Check(key) && PyTuple_GET_SIZE(key) >= 4
                    ? PyLong_AsLong(PyTuple_GET_ITEM(key, 2)) : -1;
        PyObject *data = want >= 0 ? PyTuple_GET_ITEM(key, 3) : NULL;
        if (PyErr_Occurred() || data == NULL || !PyTuple_Check(data)
            || PyTuple_GET_SIZE(data) != 2) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "a selector key of another shape than "
                                "asyncio's (fileobj, fd, events, (reader, writer))");
            err = 1;
        } else {
            PyObject *fileobj = PyTuple_GET_ITEM(key, 0);
            PyObject *reader = PyTuple_GET_ITEM(data, 0), *writer = PyTuple_GET_ITEM(data, 1);
            /* selectors.EpollSelector: any event but EPOLLOUT makes the fd
             * readable (errors and hang-ups included), any but EPOLLIN writable. */
            if ((ev & ~(long)EPOLLOUT) && reader != Py_None && (want & 1))
                err = fd_ready(self, reader, fileobj, self->remove_reader) < 0;
            if (!err && (ev & ~(long)EPOLLIN) && writer != Py_None && (want & 2))
                err = fd_ready(self, writer, fileobj, self->remove_writer) < 0;
        }
        Py_DECREF(key);
    }
    return err ? -1 : 0;
}

/* The loop's _scheduled list (a heap of TimerHandles), tidied: cancelled
 * timers at its head dropped, the heap rebuilt when mostly cancelled. */
static PyObject *
scheduled(LoopCoreObject *self)
{
    PyObject *sched = PyObject_GetAttr(self->loop, self->str_scheduled);
    if (sched == NULL || !PyList_Check(sched) || PyList_GET_SIZE(sched) == 0) {
        if (sched != NULL && !PyList_Check(sched)) {
            Py_DECREF(sched);
            PyErr_SetString(PyExc_TypeError, "loop._scheduled is not a list");
            return NULL;
        }
        return sched;
    }
    PyObject *head = PyList_GET_ITEM(sched, 0);
    if (PyList_GET_SIZE(sched) > self->min_scheduled
        || (PyObject_TypeCheck(head, self->handle_base)
            && SLOT(head, self, F_CANCELLED) == Py_True)) {
        Py_DECREF(sched);
        PyObject *r = PyObject_CallNoArgs(self->tidy_timers);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
        sched = PyObject_GetAttr(self->loop, self->str_scheduled);
    }
    return sched;
}

static int
due_timers(LoopCoreObject *self, PyObject *sched)
{
    PyObject *now = PyObject_CallMethodNoArgs(self->loop, self->time);
    if (now == NULL)
        return -1;
    double end = PyFloat_AsDouble(now) + self->clock_resolution;
    Py_DECREF(now);
    if (end == -1.0 && PyErr_Occurred())
        return -1;
    while (PyList_GET_SIZE(sched) > 0) {
        PyObject *head = PyList_GET_ITEM(sched, 0);
        if (!PyObject_TypeCheck(head, self->handle_base)) {
            PyErr_SetString(PyExc_TypeError, "loop._scheduled holds a non-Handle");
            return -1;
        }
        PyObject *when = *(PyObject **)((char *)head + self->off_when);
        double w = when ? PyFloat_AsDouble(when) : 0.0;
        if (w == -1.0 && PyErr_Occurred())
            return -1;
        if (!(w < end))
            break;
        PyObject *h = PyObject_CallOneArg(self->heappop, sched);
        if (h == NULL)
            return -1;
        Py_XSETREF(*(PyObject **)((char *)h + self->off_scheduled), Py_NewRef(Py_False));
        PyObject *r = PyObject_CallOneArg(self->append, h);
        Py_DECREF(h);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

static PyObject *
core_run_once(LoopCoreObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->fd_to_key == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "LoopCore.run_once before bind_turn");
        return NULL;
    }
    PyObject *sched = scheduled(self);
    if (sched == NULL)
        return NULL;
    int err = poll_fds(self) < 0
              || (PyList_GET_SIZE(sched) > 0 && due_timers(self, sched) < 0);
    Py_DECREF(sched);
    if (err)
        return NULL;
    return core_run_ready(self, NULL);
}

/* loop._stopping: 1, 0, or -1 with an error set. */
static int
loop_stopping(LoopCoreObject *self)
{
    PyObject *stopping = PyObject_GetAttr(self->loop, self->str_stopping);
    if (stopping == NULL)
        return -1;
    int stop = PyObject_IsTrue(stopping);
    Py_DECREF(stopping);
    return stop;
}

/* Turns, up to max_turns, while the loop is not stopping, callbacks are
 * ready and debug mode is off.  Returns the turns run, or -1 with an error;
 * *stop and *left are what the last turn ended with: the loop is stopping,
 * and how many callbacks are ready (0 when stopping). */
static Py_ssize_t
run_turns(LoopCoreObject *self, Py_ssize_t max_turns, int *stop, Py_ssize_t *left)
{
    Py_ssize_t turns = 0;
    *stop = 0;
    *left = 1;
    while (turns < max_turns && !self->debug) {
        PyObject *r = core_run_once(self, NULL);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        turns++;
        if ((*stop = loop_stopping(self)) < 0)
            return -1;
        *left = *stop ? 0 : PyObject_Length(self->ready);
        if (*left < 0)
            return -1;
        if (*left == 0)
            break;
    }
    return turns;
}

/* ---- run: the loop thread's turns, parks and yields, in C ---------------- */

/* As asyncio's MAXIMUM_SELECT_TIMEOUT: call_at(math.inf) is legal (anyio
 * uses it), so a park ends at least once a day and no timer gets inf. */
#define MAX_PARK_S (24 * 3600.0)

/* The awaitable of LoopCore.run(): the loop thread awaits it once per run
 * (loop.py, _loop_thread) and it runs turns, parks the thread when nothing
 * is ready and yields to the worker's other green threads every max_busy
 * busy turns, all without a Python frame; it returns when the loop is
 * stopping or debug mode was turned on (asyncio's Python turn then).  The
 * ticket it yields to the worker (a park or a yield) is its sub-awaitable,
 * resumed with what the worker sends, as a yield-from would. */
typedef struct {
    PyObject_HEAD
    LoopCoreObject *core;
    PyObject *sub;             /* the Ticket yielded to the worker, while it waits */
    Py_ssize_t busy;           /* turns since the last park or yield */
    Py_ssize_t max_busy;
} LoopRunObject;

/* The park's timeout, from the next timer: -1.0 none, 0.0 one is due now
 * (no park), else seconds.  0 or -1 with an error set. */
static int
park_delay(LoopCoreObject *self, double *delay)
{
    PyObject *sched = scheduled(self);          /* cancelled timers at its head dropped */
    if (sched == NULL)
        return -1;
    *delay = -1.0;
    int err = 0;
    if (PyList_GET_SIZE(sched) > 0) {
        PyObject *head = PyList_GET_ITEM(sched, 0);
        PyObject *when = PyObject_TypeCheck(head, self->handle_base)
                         ? *(PyObject **)((char *)head + self->off_when) : NULL;
        PyObject *now = PyObject_CallMethodNoArgs(self->loop, self->time);
        double w = when ? PyFloat_AsDouble(when) : 0.0;
        double t = now ? PyFloat_AsDouble(now) : 0.0;
        Py_XDECREF(now);
        err = now == NULL || PyErr_Occurred() != NULL;
        double left = w - t;
        *delay = left <= 0.0 ? 0.0 : left < MAX_PARK_S ? left : MAX_PARK_S;
    }
    Py_DECREF(sched);
    return err ? -1 : 0;
}

/* Start tk (a fresh Ticket) and hand it to the worker as our trap.  1: it
 * waits (*result is the trap), 0: it ended at once, -1: error. */
static int
run_trap(LoopRunObject *run, TicketObject *tk, PyObject **result)
{
    if (tk == NULL)
        return -1;
    PySendResult s = Ticket_Type.tp_as_async->am_send((PyObject *)tk, Py_None, result);
    if (s == PYGEN_NEXT) {
        run->sub = (PyObject *)tk;
        return 1;
    }
    if (s == PYGEN_RETURN)
        Py_DECREF(*result);
    Py_DECREF(tk);
    return s == PYGEN_RETURN ? 0 : -1;
}

/* Park until a callback is ready: one wait of the loop thread for its
 * selector's epoll fd in the worker's epoll, with the next timer as its
 * timeout.  A waker (call_soon from a green thread beside the loop,
 * call_soon_threadsafe) ends the same wait through idle_ticket.  1: parked,
 * 0: not (something is ready, a timer is due, the loop is stopping), -1. */
static int
run_park(LoopRunObject *run, PyObject **result)
{
    LoopCoreObject *self = run->core;
    double delay;
    if (park_delay(self, &delay) < 0)
        return -1;
    if (delay == 0.0)
        return 0;
    TicketObject *tk = ticket_new(NULL, TK_IO);
    if (tk == NULL)
        return -1;
    tk->fd = self->epfd;
    tk->ioev = EPOLLIN;
    tk->delay = delay;
    /* Publish the wait, then re-check (a waker appends, then reads it):
     * whichever comes second sees the other.  Wakers on this worker run only
     * while we are parked (one OS thread); a foreign OS thread may find the
     * wait not opened yet (its wake is then stale), so it also writes the
     * self-pipe, which is in the epoll (loop.py, _write_to_self): no wake
     * from there rests on this field.  Plain field: written and read by the
     * loop's OS thread; a foreign thread's read of it (idle_ticket's getter)
     * is the one loop.py's _idle already flags for free-threaded builds. */
    Py_XSETREF(self->idle_ticket, Py_NewRef((PyObject *)tk));
    Py_ssize_t ready = PyObject_Length(self->ready);
    if (ready != 0) {
        Py_CLEAR(self->idle_ticket);
        Py_DECREF(tk);
        return ready < 0 ? -1 : 0;
    }
    int r = run_trap(run, tk, result);
    if (r != 1)
        Py_CLEAR(self->idle_ticket);
    return r;
}

/* Our trap, taken (NULL: none); a park's ticket stops being the one that
 * wakers end (idle_ticket). */
static PyObject *
run_take_sub(LoopRunObject *run)
{
    PyObject *sub = run->sub;
    run->sub = NULL;
    if (sub != NULL && sub == run->core->idle_ticket)
        Py_CLEAR(run->core->idle_ticket);
    return sub;
}

/* The worker resumed us with arg: end the wait of our trap.  A park's
 * timeout (the next timer is due) is no error here. */
static int
run_resume(LoopRunObject *run, PyObject *arg)
{
    PyObject *sub = run_take_sub(run);
    if (sub == NULL)
        return 0;
    PyObject *r = NULL;
    PySendResult s;
    if (arg == TIMED_OUT) {
        r = PyObject_CallMethod(sub, "close", NULL);   /* no TimeoutError to make */
        s = r ? PYGEN_RETURN : PYGEN_ERROR;
    } else
        s = Ticket_Type.tp_as_async->am_send(sub, arg, &r);
    Py_DECREF(sub);
    if (s == PYGEN_RETURN)
        Py_DECREF(r);
    return s == PYGEN_ERROR ? -1 : 0;
}

static PySendResult
run_am_send(LoopRunObject *run, PyObject *arg, PyObject **result)
{
    LoopCoreObject *self = run->core;
    if (run_resume(run, arg) < 0)
        return PYGEN_ERROR;
    for (;;) {
        if (self->debug || self->fd_to_key == NULL)
            break;
        int stop;
        Py_ssize_t ready;
        Py_ssize_t turns = run_turns(self, run->max_busy, &stop, &ready);
        if (turns < 0)
            return PYGEN_ERROR;
        run->busy += turns;
        /* Stopping: nothing else sets _stopping before the park (the
         * timer look-up runs no callback), so it is not looked at again. */
        if (stop || self->debug)
            break;
        int trap;
        if (ready == 0)
            trap = run_park(run, result);
        else if (run->busy >= run->max_busy)
            /* Busy: let the worker's other green threads (osvrt.spawn,
             * executor calls) run now and then. */
            trap = run_trap(run, ticket_new(NULL, TK_YIELD), result);
        else
            continue;
        if (trap < 0)
            return PYGEN_ERROR;
        if (trap > 0) {
            run->busy = 0;
            return PYGEN_NEXT;
        }
    }
    *result = Py_NewRef(Py_None);
    return PYGEN_RETURN;
}

static PyObject *
run_send_method(LoopRunObject *run, PyObject *arg)
{
    PyObject *res;
    PySendResult r = run_am_send(run, arg, &res);
    return send_result_as_iter(r, res);
}

static PyObject *
run_iternext(LoopRunObject *run)
{
    return run_send_method(run, Py_None);
}

/* A throw into the loop thread (Runtime.stop's cancel) ends our trap's wait
 * and raises at the await in loop.py. */
static PyObject *
run_throw(LoopRunObject *run, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw expects 1 to 3 arguments");
        return NULL;
    }
    return throw_into_sub(run_take_sub(run), args, nargs);
}

static PyObject *
run_close(LoopRunObject *run, PyObject *Py_UNUSED(ignored))
{
    PyObject *sub = run_take_sub(run);
    if (sub == NULL)
        Py_RETURN_NONE;
    PyObject *r = PyObject_CallMethod(sub, "close", NULL);
    Py_DECREF(sub);
    return r;
}

static PyObject *
run_await(PyObject *run)
{
    return Py_NewRef(run);
}

static int
run_traverse(LoopRunObject *run, visitproc visit, void *arg)
{
    Py_VISIT(run->core);
    Py_VISIT(run->sub);
    return 0;
}

static int
run_clear(LoopRunObject *run)
{
    Py_CLEAR(run->core);
    Py_CLEAR(run->sub);
    return 0;
}

static void
run_dealloc(LoopRunObject *run)
{
    PyObject_GC_UnTrack(run);
    run_clear(run);
    PyObject_GC_Del(run);
}

static PyAsyncMethods run_as_async = {
    .am_await = run_await,
    .am_send = (sendfunc)run_am_send,
};

static PyMethodDef run_methods[] = {
    {"send", (PyCFunction)run_send_method, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))run_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)run_close, METH_NOARGS, NULL},
    {NULL},
};

PyTypeObject LoopRun_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "osvrt._engine.LoopRun",
    .tp_basicsize = sizeof(LoopRunObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "the awaitable of LoopCore.run() (osvrt/_engine/aio.c)",
    .tp_dealloc = (destructor)run_dealloc,
    .tp_traverse = (traverseproc)run_traverse,
    .tp_clear = (inquiry)run_clear,
    .tp_as_async = &run_as_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)run_iternext,
    .tp_methods = run_methods,
};

/* run(max_busy) -> awaitable: the loop thread's turns, parks and yields. */
static PyObject *
core_run(LoopCoreObject *self, PyObject *arg)
{
    Py_ssize_t max_busy = PyLong_AsSsize_t(arg);
    if (max_busy == -1 && PyErr_Occurred())
        return NULL;
    if (max_busy < 1)
        return PyErr_Format(PyExc_ValueError, "run(max_busy=%zd): at least 1 turn", max_busy);
    if (self->fd_to_key == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "LoopCore.run before bind_turn");
        return NULL;
    }
    LoopRunObject *run = PyObject_GC_New(LoopRunObject, &LoopRun_Type);
    if (run == NULL)
        return NULL;
    run->core = (LoopCoreObject *)Py_NewRef(self);
    run->sub = NULL;
    run->busy = 0;
    run->max_busy = max_busy;
    PyObject_GC_Track(run);
    return (PyObject *)run;
}

TxTable *
loopcore_txtable(PyObject *core)
{
    if (!PyObject_TypeCheck(core, &LoopCore_Type)) {
        PyErr_Format(PyExc_TypeError, "loop_core must be a LoopCore, not %R", core);
        return NULL;
    }
    LoopCoreObject *c = (LoopCoreObject *)core;
    if (c->fd_to_key == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a transport's LoopCore before bind_turn");
        return NULL;
    }
    return &c->txt;
}

/* tx_event(fd, events) -> handled: readiness that a Python poll of the
 * loop's epoll found (asyncio's own turn, in debug mode) for a transport's
 * fd, handled as run_once handles it. */
static PyObject *
core_tx_event(LoopCoreObject *self, PyObject *args)
{
    int fd;
    unsigned int ev;
    if (!PyArg_ParseTuple(args, "iI:tx_event", &fd, &ev))
        return NULL;
    int r = txtable_dispatch(&self->txt, fd, ev);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

/* report_transport_error(transport, exc): what Handle._run does for a callback
 * that raised, for the callbacks a transport's C data path runs (aiotx.c). */
static PyObject *
core_report_transport_error(LoopCoreObject *self, PyObject *args)
{
    PyObject *transport, *exc;
    if (!PyArg_ParseTuple(args, "OO:report_transport_error", &transport, &exc))
        return NULL;
    return PyObject_CallMethod(self->loop, "_transport_callback_failed", "OO", transport, exc);
}

/* ---- attributes ---------------------------------------------------------- */

static PyObject *
core_get_idle_ticket(LoopCoreObject *self, void *c)
{
    return Py_NewRef(self->idle_ticket ? self->idle_ticket : Py_None);
}

static int
core_set_idle_ticket(LoopCoreObject *self, PyObject *v, void *c)
{
    if (v == NULL || v == Py_None) {
        Py_CLEAR(self->idle_ticket);
        return 0;
    }
    if (!PyObject_TypeCheck(v, &Ticket_Type)) {
        PyErr_Format(PyExc_TypeError, "idle_ticket must be an osvrt Ticket or None, not %R", v);
        return -1;
    }
    Py_XSETREF(self->idle_ticket, Py_NewRef(v));
    return 0;
}

static PyObject *
core_get_closed(LoopCoreObject *self, void *c)
{
    return PyBool_FromLong(self->closed);
}

static int
core_set_closed(LoopCoreObject *self, PyObject *v, void *c)
{
    int b = v ? PyObject_IsTrue(v) : 0;
    if (b < 0)
        return -1;
    self->closed = b;
    if (b) {
        txtable_clear(&self->txt);    /* the selector's epoll closes with the loop */
        self->txt.epfd = -1;
    }
    return 0;
}

static PyObject *
core_get_debug(LoopCoreObject *self, void *c)
{
    return PyBool_FromLong(self->debug);
}

static int
core_set_debug(LoopCoreObject *self, PyObject *v, void *c)
{
    int b = v ? PyObject_IsTrue(v) : 0;
    if (b < 0)
        return -1;
    self->debug = b;
    return 0;
}

static PyObject *
core_get_two_step(LoopCoreObject *self, void *c)
{
    return Py_BuildValue("(OO)", self->future_two_step ? Py_True : Py_False,
                         self->task_two_step ? Py_True : Py_False);
}

static PyGetSetDef core_getset[] = {
    {"debug", (getter)core_get_debug, (setter)core_set_debug,
     "the loop is in debug mode (its own Python turn): run() runs no turn", NULL},
    {"idle_ticket", (getter)core_get_idle_ticket, (setter)core_set_idle_ticket,
     "the loop thread's osvrt wait while it is parked, else None", NULL},
    {"closed", (getter)core_get_closed, (setter)core_set_closed,
     "set when the loop closes: call_soon then raises RuntimeError", NULL},
    {"two_step", (getter)core_get_two_step, NULL,
     "(future, task): create_future and create_task make the bound class by its __new__ "
     "and C __init__ with one shared {'loop': loop} dict", NULL},
    {NULL},
};

static PyMethodDef core_methods[] = {
    {"call_soon", (PyCFunction)(void (*)(void))core_call_soon,
     METH_FASTCALL | METH_KEYWORDS,
     "call_soon($self, callback, *args, context=None)\n--\n\n"
     "asyncio's call_soon (outside debug mode), in C: returns a Handle"},
    {"bind_turn", (PyCFunction)(void (*)(void))core_bind_turn, METH_VARARGS | METH_KEYWORDS,
     "bind_turn(fd_to_key, epfd, tidy_timers, remove_reader, remove_writer, heappop, "
     "timer_type, min_scheduled, clock_resolution): what run_once uses"},
    {"run_once", (PyCFunction)core_run_once, METH_NOARGS,
     "run_once(): one turn of the loop outside debug mode: cancelled timers dropped, the "
     "selector polled without blocking, due timers and ready fds' handles queued, the "
     "ready callbacks run"},
    {"create_task", (PyCFunction)(void (*)(void))core_create_task,
     METH_FASTCALL | METH_KEYWORDS,
     "create_task($self, coro, *, name=None, context=None)\n--\n\n"
     "asyncio's create_task with no task factory, outside debug mode, in C: returns a Task"},
    {"create_future", (PyCFunction)core_create_future, METH_NOARGS,
     "create_future($self)\n--\n\nasyncio's create_future, in C: returns a Future"},
    {"bind_future", (PyCFunction)core_bind_future, METH_O,
     "bind_future(future_type): the Future class create_future makes"},
    {"get_debug", (PyCFunction)core_get_debug_method, METH_NOARGS,
     "get_debug($self)\n--\n\nthe loop's debug flag (as set_debug keeps it here)"},
    {"bind_task", (PyCFunction)core_bind_task, METH_O,
     "bind_task(task_type): the Task class create_task makes"},
    {"run", (PyCFunction)core_run, METH_O,
     "run(max_busy) -> awaitable: the loop thread's turns, parks when nothing is ready and "
     "yields every max_busy busy turns, in C; it returns when the loop is stopping or in "
     "debug mode"},
    {"report_transport_error", (PyCFunction)core_report_transport_error, METH_VARARGS,
     "report_transport_error(transport, exc): a protocol callback that a transport's C data "
     "path ran raised exc; reported to the loop's exception handler"},
    {"tx_event", (PyCFunction)core_tx_event, METH_VARARGS,
     "tx_event(fd, epoll_events) -> bool: readiness of a socket transport's fd, found by "
     "a Python poll (debug mode), handled in C; False: not a transport's fd"},
    {"run_ready", (PyCFunction)core_run_ready, METH_NOARGS,
     "run_ready(): run the callbacks ready now (asyncio's _run_once inner loop)"},
    {NULL},
};

PyTypeObject LoopCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "osvrt._engine.LoopCore",
    .tp_basicsize = sizeof(LoopCoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "LoopCore(loop, ready, on_error, handle_type, handle_base): the asyncio "
              "loop's call_soon and ready-queue run, in C (osvrt/_engine/aio.c)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)core_init,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_methods = core_methods,
    .tp_getset = core_getset,
};
