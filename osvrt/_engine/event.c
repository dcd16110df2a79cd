/* event.c - Event: a flag that green threads wait for, set from any OS thread.
 *
 * Waiters are Tickets in a C array under a tiny spinlock, held for a few
 * instructions and never across a call that can run Python code or release
 * the GIL: so it is the same on a free-threaded build, where it is what
 * orders a wait's registration against set().
 *
 * No lost wake-up: a waiter appends its ticket under the lock and then
 * re-checks the flag; set() stores the flag and then takes the list under
 * the lock.  Whichever takes the lock second sees the other's work.
 *
 * A waiter that leaves (timeout, cancel) is not searched for: its ticket is
 * already claimed, so set() skips it, and the array drops claimed tickets
 * whenever it has doubled since the last sweep.  Leaving is O(1), so 40,000
 * waiters timing out on one Event take as long as on 40,000 Events.
 */
#include "engine.h"

typedef struct {
    PyObject_HEAD
    _Atomic int flag;
    atomic_flag lock;
    TicketObject **waiters;        /* under lock; each a strong reference */
    Py_ssize_t n, cap, sweep_at;
} EventObject;

static inline void
event_lock(EventObject *e)
{
    /* acquire: the holder sees the array as the last holder left it. */
    while (atomic_flag_test_and_set_explicit(&e->lock, memory_order_acquire))
        ;
}

static inline void
event_unlock(EventObject *e)
{
    atomic_flag_clear_explicit(&e->lock, memory_order_release);
}

int
event_is_set(PyObject *e)
{
    /* acquire: pairs with set()'s release, for whatever the setter wrote first. */
    return atomic_load_explicit(&((EventObject *)e)->flag, memory_order_acquire);
}

static PyObject *
event_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    if ((args && PyTuple_GET_SIZE(args)) || (kw && PyDict_GET_SIZE(kw))) {
        PyErr_SetString(PyExc_TypeError, "Event() takes no arguments");
        return NULL;
    }
    EventObject *e = (EventObject *)type->tp_alloc(type, 0);
    if (e == NULL)
        return NULL;
    atomic_init(&e->flag, 0);
    atomic_flag_clear(&e->lock);
    e->sweep_at = 64;
    return (PyObject *)e;
}

/* Keep only unclaimed tickets; the dropped references are returned in
 * `dead` for the caller to release once the lock is let go (a dealloc may
 * run Python code). */
static Py_ssize_t
sweep(EventObject *e, TicketObject **dead)
{
    Py_ssize_t k = 0, nd = 0;
    for (Py_ssize_t i = 0; i < e->n; i++) {
        if (ticket_is_claimed(e->waiters[i]))
            dead[nd++] = e->waiters[i];
        else
            e->waiters[k++] = e->waiters[i];
    }
    e->n = k;
    e->sweep_at = k * 2 > 64 ? k * 2 : 64;
    return nd;
}

int
event_register(PyObject *obj, TicketObject *tk)
{
    EventObject *e = (EventObject *)obj;
    TicketObject **dead = NULL;
    Py_ssize_t nd = 0;
    int err = 0;
    /* Allocation under the spinlock is fine: it runs no Python code and
     * never releases the GIL. */
    event_lock(e);
    if (e->n == e->cap && e->n >= e->sweep_at) {
        dead = PyMem_Malloc(sizeof(*dead) * (size_t)e->n);
        if (dead != NULL)
            nd = sweep(e, dead);
    }
    if (e->n == e->cap) {
        Py_ssize_t cap = e->cap ? e->cap * 2 : 8;
        TicketObject **grown = PyMem_Realloc(e->waiters, sizeof(*grown) * (size_t)cap);
        if (grown == NULL) {
            event_unlock(e);
            err = 1;
            goto out;
        }
        e->waiters = grown;
        e->cap = cap;
    }
    e->waiters[e->n++] = (TicketObject *)Py_NewRef(tk);
    event_unlock(e);
out:
    for (Py_ssize_t i = 0; i < nd; i++)
        Py_DECREF(dead[i]);
    PyMem_Free(dead);
    if (err) {
        PyErr_NoMemory();
        return -1;
    }
    /* The re-check (module comment): set() may have taken the list before
     * our append. */
    if (event_is_set(obj) && wake_ticket(tk, NULL) < 0)
        return -1;
    return 0;
}

static PyObject *
event_set(EventObject *e, PyObject *unused)
{
    /* release: see event_is_set. */
    atomic_store_explicit(&e->flag, 1, memory_order_release);
    event_lock(e);
    TicketObject **w = e->waiters;
    Py_ssize_t n = e->n;
    e->waiters = NULL;
    e->n = e->cap = 0;
    e->sweep_at = 64;
    event_unlock(e);
    int err = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!err && wake_ticket(w[i], NULL) < 0)
            err = 1;              /* keep releasing the rest; report the first */
        Py_DECREF(w[i]);
    }
    PyMem_Free(w);
    if (err)
        return NULL;
    Py_RETURN_NONE;
}

/* set() for other engine code (tcplink.c): 0, or -1 with an error set. */
int
engine_event_set(PyObject *e)
{
    PyObject *r = event_set((EventObject *)e, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *
event_clear_flag(EventObject *e, PyObject *unused)
{
    atomic_store_explicit(&e->flag, 0, memory_order_relaxed);
    Py_RETURN_NONE;
}

static PyObject *
event_is_set_method(EventObject *e, PyObject *unused)
{
    return PyBool_FromLong(event_is_set((PyObject *)e));
}

static PyObject *
event_wait(EventObject *e, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *timeout = Py_None;
    if (nargs > 1 || (kwnames && (PyTuple_GET_SIZE(kwnames) != 1 || nargs ||
                      PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "timeout") != 0))) {
        PyErr_SetString(PyExc_TypeError, "Event.wait() takes one optional argument, timeout");
        return NULL;
    }
    if (nargs == 1 || kwnames)
        timeout = args[0];
    double delay = -1.0;
    if (timeout != Py_None && check_delay(timeout, "timeout", &delay) < 0)
        return NULL;
    TicketObject *tk = ticket_new(NULL, TK_EVENT);
    if (tk == NULL)
        return NULL;
    tk->obj = Py_NewRef(e);
    tk->delay = delay;
    return (PyObject *)tk;
}

static PyObject *
event_repr(EventObject *e)
{
    event_lock(e);
    Py_ssize_t n = e->n;
    event_unlock(e);
    return PyUnicode_FromFormat("<osvrt.Event %s waiters=%zd>",
                                event_is_set((PyObject *)e) ? "set" : "unset", n);
}

static int
event_traverse(EventObject *e, visitproc visit, void *arg)
{
    /* Only the GC calls this, with every other thread stopped (or the GIL
     * held): the array cannot change under it. */
    for (Py_ssize_t i = 0; i < e->n; i++)
        Py_VISIT(e->waiters[i]);
    return 0;
}

static int
event_clear(EventObject *e)
{
    event_lock(e);
    TicketObject **w = e->waiters;
    Py_ssize_t n = e->n;
    e->waiters = NULL;
    e->n = e->cap = 0;
    event_unlock(e);
    for (Py_ssize_t i = 0; i < n; i++)
        Py_DECREF(w[i]);
    PyMem_Free(w);
    return 0;
}

static void
event_dealloc(EventObject *e)
{
    PyTypeObject *tp = Py_TYPE(e);
    PyObject_GC_UnTrack(e);
    event_clear(e);
    tp->tp_free((PyObject *)e);
}

static PyMethodDef event_methods[] = {
    {"set", (PyCFunction)event_set, METH_NOARGS,
     "set($self, /)\n--\n\nSet the flag and wake every waiter.  Safe from any OS thread."},
    {"clear", (PyCFunction)event_clear_flag, METH_NOARGS, "clear($self, /)\n--\n\nReset the flag."},
    {"is_set", (PyCFunction)event_is_set_method, METH_NOARGS, "is_set($self, /)\n--\n\nTrue if the flag is set."},
    {"wait", (PyCFunction)(void (*)(void))event_wait, METH_FASTCALL | METH_KEYWORDS,
     "wait($self, /, timeout=None)\n--\n\n"
     "await e.wait(timeout=None): until the flag is set; returns True at once if it\n"
     "is.  TimeoutError after `timeout` seconds (a number >= 0)."},
    {NULL}
};

PyTypeObject Event_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "osvrt.Event",
    .tp_doc = "A flag that green threads can wait for; set() is safe from any OS thread.",
    .tp_basicsize = sizeof(EventObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = event_new,
    .tp_dealloc = (destructor)event_dealloc,
    .tp_traverse = (traverseproc)event_traverse,
    .tp_clear = (inquiry)event_clear,
    .tp_methods = event_methods,
    .tp_repr = (reprfunc)event_repr,
};
