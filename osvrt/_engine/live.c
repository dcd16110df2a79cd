/* live.c - LiveSet: the live green threads of one runtime (rt._live).
 *
 * Every thread is added at spawn and discarded at its end, so this is on the
 * spawn path and holds one entry per parked thread.  A Python set costs about
 * 50 bytes an entry at its load factor; this is an array of references with
 * each thread's index stored in the thread (swap-with-last removal): about
 * 12 bytes an entry, O(1) both ways.  A spinlock orders workers and foreign
 * submitters; it is held for a few instructions and never across a call that
 * can run Python code (references are released after it is let go).
 */
#include "engine.h"

typedef struct {
    PyObject_HEAD
    atomic_flag lock;
    ThreadObject **items;          /* under lock; strong references */
    Py_ssize_t n, cap;
    /* Set once by Runtime.stop (watch_empty): from then on the worker that
     * empties the set tells the runtime (worker.c, finish).  Before, nobody
     * waits for "empty", and a Runtime.run round trip, which empties it
     * every time, would pay a Python hook call for nothing. */
    _Atomic int watch_empty;
} LiveSetObject;

static inline void
live_lock(LiveSetObject *s)
{
    /* acquire: the holder sees the array as the last holder left it. */
    while (atomic_flag_test_and_set_explicit(&s->lock, memory_order_acquire))
        ;
}

static inline void
live_unlock(LiveSetObject *s)
{
    atomic_flag_clear_explicit(&s->lock, memory_order_release);
}

int
live_add(PyObject *set, ThreadObject *t)
{
    LiveSetObject *s = (LiveSetObject *)set;
    live_lock(s);
    if (t->live_index >= 0) {
        /* live_index is per thread: an add to a second set would be lost */
        int here = t->live_index < s->n && s->items[t->live_index] == t;
        live_unlock(s);
        if (here)
            return 0;
        PyErr_SetString(PyExc_RuntimeError, "this green thread is in another LiveSet already");
        return -1;
    }
    if (s->n == s->cap) {
        /* realloc runs no Python code and keeps the GIL: fine under the lock */
        Py_ssize_t cap = s->cap ? s->cap * 2 : 16;
        ThreadObject **g = PyMem_Realloc(s->items, sizeof(*g) * (size_t)cap);
        if (g == NULL) {
            live_unlock(s);
            PyErr_NoMemory();
            return -1;
        }
        s->items = g;
        s->cap = cap;
    }
    t->live_index = (int32_t)s->n;
    s->items[s->n++] = (ThreadObject *)Py_NewRef(t);
    live_unlock(s);
    return 0;
}

/* Take t out of the set; 1 if it was in (the set's reference is the
 * caller's now), 0 if not. */
static int
live_take(LiveSetObject *s, ThreadObject *t)
{
    live_lock(s);
    Py_ssize_t i = t->live_index;      /* < 2**31 threads live at once */
    if (i < 0 || i >= s->n || s->items[i] != t) {
        live_unlock(s);
        return 0;
    }
    ThreadObject *last = s->items[--s->n];
    s->items[i] = last;
    last->live_index = (int32_t)i;
    t->live_index = -1;
    if (s->cap > 64 && s->n < s->cap / 4) {     /* give memory back after a burst */
        ThreadObject **g = PyMem_Realloc(s->items, sizeof(*g) * (size_t)(s->cap / 2));
        if (g != NULL) {
            s->items = g;
            s->cap /= 2;
        }
    }
    live_unlock(s);
    return 1;
}

int
live_discard(PyObject *set, ThreadObject *t)
{
    if (!live_take((LiveSetObject *)set, t))
        return 0;
    thread_gc_expose(t);          /* no longer reachable through the set */
    Py_DECREF(t);
    return 1;
}

int
live_discard_exposed(PyObject *set, ThreadObject *t)
{
    if (!live_take((LiveSetObject *)set, t))
        return 0;
    Py_DECREF(t);
    return 1;
}

Py_ssize_t
live_len(PyObject *set)
{
    LiveSetObject *s = (LiveSetObject *)set;
    live_lock(s);
    Py_ssize_t n = s->n;
    live_unlock(s);
    return n;
}

static PyObject *
live_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    if ((args && PyTuple_GET_SIZE(args)) || (kw && PyDict_GET_SIZE(kw))) {
        PyErr_SetString(PyExc_TypeError, "LiveSet() takes no arguments");
        return NULL;
    }
    LiveSetObject *s = (LiveSetObject *)type->tp_alloc(type, 0);
    if (s != NULL) {
        atomic_flag_clear(&s->lock);
        atomic_init(&s->watch_empty, 0);
    }
    return (PyObject *)s;
}

static PyObject *
live_snapshot(LiveSetObject *s)
{
    for (;;) {
        Py_ssize_t n = live_len((PyObject *)s);
        PyObject *list = PyList_New(n);
        if (list == NULL)
            return NULL;
        live_lock(s);
        if (s->n != n) {                  /* changed while we allocated: again */
            live_unlock(s);
            Py_DECREF(list);
            continue;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            PyList_SET_ITEM(list, i, Py_NewRef(s->items[i]));
        live_unlock(s);
        return list;
    }
}

static PyObject *
live_iter(LiveSetObject *s)
{
    PyObject *list = live_snapshot(s);
    if (list == NULL)
        return NULL;
    PyObject *it = PyObject_GetIter(list);
    Py_DECREF(list);
    return it;
}

static int
check_thread(PyObject *o)
{
    if (PyObject_TypeCheck(o, &ThreadBase_Type))
        return 1;
    PyErr_Format(PyExc_TypeError, "a LiveSet holds green threads, not %R", o);
    return 0;
}

static PyObject *
live_add_method(LiveSetObject *s, PyObject *o)
{
    if (!check_thread(o) || live_add((PyObject *)s, (ThreadObject *)o) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
live_discard_method(LiveSetObject *s, PyObject *o)
{
    if (!check_thread(o))
        return NULL;
    live_discard((PyObject *)s, (ThreadObject *)o);
    Py_RETURN_NONE;
}

/* Worker._expose_left_threads (as a worker's loop ends) and
 * Runtime._settle_abandoned (after the workers are joined): a thread left in
 * the set (it ignored its cancel, or its loop crashed) is scanned again, so a
 * runtime dropped with it, usually in a reference cycle through the thread's
 * worker, is still collected.  Only for a thread no worker can run any more
 * (finish exposes a thread too). */
static PyObject *
live_expose_to_gc_method(LiveSetObject *s, PyObject *o)
{
    if (!check_thread(o))
        return NULL;
    thread_gc_expose((ThreadObject *)o);
    Py_RETURN_NONE;
}

static Py_ssize_t
live_length(LiveSetObject *s)
{
    return live_len((PyObject *)s);
}

static int
live_contains(LiveSetObject *s, PyObject *o)
{
    if (!PyObject_TypeCheck(o, &ThreadBase_Type))
        return 0;
    ThreadObject *t = (ThreadObject *)o;
    live_lock(s);
    int in = t->live_index >= 0 && t->live_index < s->n && s->items[t->live_index] == t;
    live_unlock(s);
    return in;
}

static int
live_traverse(LiveSetObject *s, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < s->n; i++)
        Py_VISIT(s->items[i]);
    return 0;
}

static int
live_clear(LiveSetObject *s)
{
    live_lock(s);
    ThreadObject **items = s->items;
    Py_ssize_t n = s->n;
    s->items = NULL;
    s->n = s->cap = 0;
    live_unlock(s);
    for (Py_ssize_t i = 0; i < n; i++) {
        items[i]->live_index = -1;
        thread_gc_expose(items[i]);
        Py_DECREF(items[i]);
    }
    PyMem_Free(items);
    return 0;
}

static void
live_dealloc(LiveSetObject *s)
{
    PyObject_GC_UnTrack(s);
    live_clear(s);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PySequenceMethods live_as_sequence = {
    .sq_length = (lenfunc)live_length,
    .sq_contains = (objobjproc)live_contains,
};

/* relaxed, both sides: a worker that misses the store only fails to end one
 * of stop()'s waits early, and stop() looks at the set again within 50 ms
 * anyway (runtime.py, _cancel_all). */
static PyObject *
live_watch_empty_method(LiveSetObject *s, PyObject *unused)
{
    atomic_store_explicit(&s->watch_empty, 1, memory_order_relaxed);
    Py_RETURN_NONE;
}

int
live_watched(PyObject *set)
{
    return atomic_load_explicit(&((LiveSetObject *)set)->watch_empty, memory_order_relaxed);
}

static PyMethodDef live_methods[] = {
    {"add", (PyCFunction)live_add_method, METH_O, NULL},
    {"discard", (PyCFunction)live_discard_method, METH_O, NULL},
    {"expose_to_gc", (PyCFunction)live_expose_to_gc_method, METH_O,
     "Let the cyclic GC scan this live thread again (hidden while live, see\n"
     "thread.c); only for a thread that no worker can run any more."},
    {"watch_empty", (PyCFunction)live_watch_empty_method, METH_NOARGS,
     "From now on, the worker that ends the last live thread calls the runtime's\n"
     "_thread_ended hook (Runtime.stop waits for that)."},
    {NULL}
};

PyTypeObject LiveSet_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "osvrt._engine.LiveSet",
    .tp_doc = "The live green threads of one runtime (add, discard, len, in, iter: a snapshot).",
    .tp_basicsize = sizeof(LiveSetObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = live_new,
    .tp_dealloc = (destructor)live_dealloc,
    .tp_traverse = (traverseproc)live_traverse,
    .tp_clear = (inquiry)live_clear,
    .tp_iter = (getiterfunc)live_iter,
    .tp_as_sequence = &live_as_sequence,
    .tp_methods = live_methods,
};
