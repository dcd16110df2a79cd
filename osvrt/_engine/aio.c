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
    Py_ssize_t off[F_COUNT];   /* slot offsets in handle_base's layout */
    int closed;                /* the loop was closed: call_soon refuses */
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
    return 0;
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
    return 0;
}

static void
core_dealloc(LoopCoreObject *self)
{
    PyObject_GC_UnTrack(self);
    core_clear(self);
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

static PyObject *
core_call_soon(LoopCoreObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *context = NULL;
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t i = 0; i < nkw; i++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, i);
            if (!PyUnicode_Check(key) || PyUnicode_CompareWithASCIIString(key, "context") != 0) {
                PyErr_Format(PyExc_TypeError,
                             "call_soon() got an unexpected keyword argument %R", key);
                return NULL;
            }
            context = args[nargs + i];
        }
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

/* ---- run_ready ---------------------------------------------------------- */

static PyObject *
fetch_exc(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *typ, *val, *tb;
    PyErr_Fetch(&typ, &val, &tb);
    PyErr_NormalizeException(&typ, &val, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(val, tb);
        Py_DECREF(tb);
    }
    Py_DECREF(typ);
    return val;
#endif
}

static void
restore_exc(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

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
    PyObject *exc = fetch_exc();
    if (PyErr_GivenExceptionMatches(exc, PyExc_SystemExit)
        || PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt)) {
        restore_exc(exc);
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
    return 0;
}

static PyGetSetDef core_getset[] = {
    {"idle_ticket", (getter)core_get_idle_ticket, (setter)core_set_idle_ticket,
     "the loop thread's osvrt wait while it is parked, else None", NULL},
    {"closed", (getter)core_get_closed, (setter)core_set_closed,
     "set when the loop closes: call_soon then raises RuntimeError", NULL},
    {NULL},
};

static PyMethodDef core_methods[] = {
    {"call_soon", (PyCFunction)(void (*)(void))core_call_soon,
     METH_FASTCALL | METH_KEYWORDS,
     "call_soon(callback, *args, context=None) -> Handle: asyncio's call_soon (outside "
     "debug mode), in C"},
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
