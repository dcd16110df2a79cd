/* chanrx.c - the consumer side of a net channel (csrc/net/channel.h) for a
 * green thread: ChanRx.take() turns the oldest datagram into (bytes,
 * (ip, port)) and gives its slot back, in one call with the GIL held.
 *
 * osvrt/net/channels/lane.py did this with struct and memoryviews: ~3,000
 * interpreted instructions per datagram (benchmarks/udp_instructions.py),
 * the largest per-datagram cost of a UDP echo.  The lane still waits and
 * hands the reader's token around in Python; only the take is here.
 *
 * Ownership: a ChanRx holds a reference to `owner` (the flow's cffi object),
 * which keeps the channel's memory alive as long as the ChanRx is.  One
 * consumer: the lane's token makes the holder the only caller of take(), so
 * the `tail` word is ours to read relaxed and to publish.
 */
#include <arpa/inet.h>

#include "engine.h"
#include "channel.h"

/* Source addresses kept as ready tuples: a cache per channel, emptied when
 * it reaches this size (a flood of spoofed sources cannot grow it). */
#define ADDR_CACHE_MAX 4096

typedef struct {
    PyObject_HEAD
    struct osvrt_chan *c;      /* the channel; alive while owner is */
    PyObject *owner;
    PyObject *addrs;           /* dict: saddr << 16 | sport -> (ip, port) */
    uint64_t last_key;         /* the last source seen, and its tuple (a strong ref) */
    PyObject *last_addr;
    /* 1 once the endpoint closed (shut()): written by the closing thread,
     * read by the reader's re-check (ready()), any OS thread: the Dekker
     * pair with the waiter word, a seq_cst fence on each side. */
    _Atomic uint32_t closed;
} ChanRxObject;

static PyObject *
chanrx_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *owner;
    unsigned long long addr;
    if (!PyArg_ParseTuple(args, "OK:ChanRx", &owner, &addr))
        return NULL;
    if (addr == 0) {
        PyErr_SetString(PyExc_ValueError, "ChanRx: the channel address is NULL");
        return NULL;
    }
    ChanRxObject *self = (ChanRxObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if ((self->addrs = PyDict_New()) == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->c = (struct osvrt_chan *)(uintptr_t)addr;
    self->owner = Py_NewRef(owner);
    return (PyObject *)self;
}

/* GC: owner is any object, and may reach back to us (a lane that holds
 * its reader).  Clearing it ends the channel's use: c is NULL after. */
static int
chanrx_traverse(ChanRxObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    Py_VISIT(self->addrs);
    Py_VISIT(self->last_addr);
    return 0;
}

static int
chanrx_clear(ChanRxObject *self)
{
    self->c = NULL;            /* owner kept it alive: not past this */
    Py_CLEAR(self->last_addr);
    Py_CLEAR(self->addrs);
    Py_CLEAR(self->owner);
    return 0;
}

static void
chanrx_dealloc(ChanRxObject *self)
{
    PyObject_GC_UnTrack(self);
    chanrx_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The channel, or NULL with ValueError once cleared (a collected cycle). */
static struct osvrt_chan *
chan_of(ChanRxObject *self)
{
    if (self->c == NULL)
        PyErr_SetString(PyExc_ValueError, "ChanRx: its channel was released");
    return self->c;
}

/* The (ip, port) tuple of a source, from the cache or made (a new ref). */
static PyObject *
source_address(ChanRxObject *self, uint32_t saddr, uint16_t sport)
{
    uint64_t key = (uint64_t)saddr << 16 | sport;
    if (self->last_addr != NULL && self->last_key == key)
        return Py_NewRef(self->last_addr);
    PyObject *k = PyLong_FromUnsignedLongLong(key);
    if (k == NULL)
        return NULL;
    PyObject *addr = PyDict_GetItemWithError(self->addrs, k);      /* borrowed */
    if (addr != NULL) {
        Py_INCREF(addr);
    } else if (!PyErr_Occurred()) {
        char ip[INET_ADDRSTRLEN];
        /* saddr holds the wire's 4 bytes (channel.h), as inet_ntop reads them */
        if (inet_ntop(AF_INET, &saddr, ip, sizeof ip) == NULL) {
            Py_DECREF(k);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        addr = Py_BuildValue("(sH)", ip, sport);
        if (addr != NULL && PyDict_GET_SIZE(self->addrs) >= ADDR_CACHE_MAX)
            PyDict_Clear(self->addrs);
        if (addr != NULL && PyDict_SetItem(self->addrs, k, addr) < 0)
            Py_CLEAR(addr);
    }
    Py_DECREF(k);
    if (addr != NULL) {
        Py_XSETREF(self->last_addr, Py_NewRef(addr));
        self->last_key = key;
    }
    return addr;
}

/* take() -> (data, (ip, port)) of the oldest datagram, its slot given back;
 * None when the channel is empty. */
static PyObject *
chanrx_take(ChanRxObject *self, PyObject *unused)
{
    struct osvrt_chan *c = chan_of(self);
    uint64_t t;
    if (c == NULL)
        return NULL;
    if (osvrt_chan_ready(c, &t) == 0)      /* acquire of head: the slot and bytes below it */
        Py_RETURN_NONE;
    const struct osvrt_chan_slot *s = osvrt_chan_slot_at(c, t);
    PyObject *data = PyBytes_FromStringAndSize((const char *)osvrt_chan_data(c, s), s->len);
    if (data == NULL)
        return NULL;
    PyObject *addr = source_address(self, s->saddr, s->sport);
    /* release: our reads of the slot and bytes come before the producer reuses them */
    osvrt_chan_release(c, t + 1);
    if (addr == NULL) {
        Py_DECREF(data);                   /* the datagram is gone: like a recv that failed */
        return NULL;
    }
    PyObject *r = PyTuple_New(2);
    if (r == NULL) {
        Py_DECREF(data);
        Py_DECREF(addr);
        return NULL;
    }
    PyTuple_SET_ITEM(r, 0, data);
    PyTuple_SET_ITEM(r, 1, addr);
    return r;
}

/* queued() -> datagrams waiting (head - tail). */
static PyObject *
chanrx_queued(ChanRxObject *self, PyObject *unused)
{
    uint64_t t;
    struct osvrt_chan *c = chan_of(self);
    return c == NULL ? NULL : PyLong_FromUnsignedLongLong(osvrt_chan_ready(c, &t));
}

/* set_waiter(h): name thread handle h as the one to wake (the channel's
 * waiter word, OSVRT_CHAN_WAITER set); set_waiter(None): nobody. */
static PyObject *
chanrx_set_waiter(ChanRxObject *self, PyObject *arg)
{
    uint64_t w = 0;
    if (arg != Py_None) {
        uint64_t h = PyLong_AsUnsignedLongLong(arg);
        if (h == (uint64_t)-1 && PyErr_Occurred())
            return NULL;
        w = h | OSVRT_CHAN_WAITER;
    }
    /* relaxed: a waiter's store is ordered before its re-check of the channel
     * by cwait_prepare's seq_cst fence, which follows it (runtime.h). */
    struct osvrt_chan *c = chan_of(self);
    if (c == NULL)
        return NULL;
    atomic_store_explicit(&c->waiter, w, memory_order_relaxed);
    Py_RETURN_NONE;
}

/* ready() -> bool: a datagram waits, or the channel was shut: cwait's
 * re-check, after the waiter's store of its handle and the wait's seq_cst
 * fence (cwait_prepare). */
static PyObject *
chanrx_ready(ChanRxObject *self, PyObject *unused)
{
    uint64_t t;
    struct osvrt_chan *c = chan_of(self);
    if (c == NULL)
        return NULL;
    /* relaxed: ordered after the waiter store by cwait_prepare's fence */
    return PyBool_FromLong(osvrt_chan_ready(c, &t) != 0
                           || atomic_load_explicit(&self->closed, memory_order_relaxed));
}

/* shut() -> int | None: mark the channel shut for its readers, then the
 * thread handle to wake (the one parked in ready()'s re-check), or None.
 * The closer's half of the Dekker pair: closed stored, a seq_cst fence, the
 * waiter loaded; the reader stored its handle, fenced, then loads closed:
 * one of the two sees the other's store, so no reader parks past a close. */
static PyObject *
chanrx_shut(ChanRxObject *self, PyObject *unused)
{
    struct osvrt_chan *c = chan_of(self);
    if (c == NULL)
        return NULL;
    atomic_store_explicit(&self->closed, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    uint64_t w = atomic_load_explicit(&c->waiter, memory_order_relaxed);
    if (!(w & OSVRT_CHAN_WAITER))
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(w & ~OSVRT_CHAN_WAITER);
}

static PyMethodDef chanrx_methods[] = {
    {"take", (PyCFunction)chanrx_take, METH_NOARGS,
     "take()\n--\n\nThe oldest datagram as (data, (ip, port)), its slot given back to the\n"
     "producer; None if the channel is empty.  The caller is the channel's one consumer."},
    {"queued", (PyCFunction)chanrx_queued, METH_NOARGS,
     "queued()\n--\n\nDatagrams waiting in the channel."},
    {"ready", (PyCFunction)chanrx_ready, METH_NOARGS,
     "ready()\n--\n\nTrue when a datagram waits or the channel was shut (cwait's re-check)."},
    {"shut", (PyCFunction)chanrx_shut, METH_NOARGS,
     "shut()\n--\n\nMark the channel shut for its readers; the thread handle to wake, or None."},
    {"set_waiter", (PyCFunction)chanrx_set_waiter, METH_O,
     "set_waiter(h)\n--\n\nName thread handle h (or None: nobody) as the one the\n"
     "producer wakes after it publishes."},
    {NULL},
};

PyTypeObject ChanRx_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "osvrt._engine.ChanRx",
    .tp_basicsize = sizeof(ChanRxObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)chanrx_traverse,
    .tp_clear = (inquiry)chanrx_clear,
    .tp_doc = "ChanRx(owner, address)\n--\n\nThe consumer of the net channel at `address` (a\n"
              "struct osvrt_chan *, csrc/net/channel.h), kept alive by `owner`.",
    .tp_new = chanrx_new,
    .tp_dealloc = (destructor)chanrx_dealloc,
    .tp_methods = chanrx_methods,
};

/* The waiter's half of the wake protocol (csrc/core/runtime.h) for cwait.py,
 * on the calling worker's CPU: through the core's table, so with the GIL held
 * and no cffi (two cffi calls per park were ~2,300 instructions of a UDP
 * echo's ~27,000 per request, benchmarks/udp_instructions.py). */
static WorkerObject *
calling_worker(void)
{
    WorkerObject *w = tls_worker;
    if (w == NULL)
        PyErr_SetString(PyExc_RuntimeError, "cwait: not on a worker of an osvrt runtime");
    return w;
}

/* The thread handle argument of cwait_prepare/abort, and the calling
 * worker; NULL with an error set. */
static WorkerObject *
handle_here(PyObject *arg, uint64_t *h)
{
    *h = PyLong_AsUnsignedLongLong(arg);
    if (*h == (uint64_t)-1 && PyErr_Occurred())
        return NULL;
    return calling_worker();
}

/* cwait_prepare(h) -> bool: publish WAITING for thread handle h (seq_cst);
 * False if a C wake of an earlier wait is still on its way (WAKING). */
static PyObject *
m_cwait_prepare(PyObject *m, PyObject *arg)
{
    uint64_t h;
    WorkerObject *w = handle_here(arg, &h);
    if (w == NULL)
        return NULL;
    return PyBool_FromLong(osvrt_api->wait_prepare(w->crt, h, w->index));
}

/* cwait_abort(h): leave WAITING (a late wake is then a no-op). */
static PyObject *
m_cwait_abort(PyObject *m, PyObject *arg)
{
    uint64_t h;
    WorkerObject *w = handle_here(arg, &h);
    if (w == NULL)
        return NULL;
    osvrt_api->wait_abort(w->crt, h);
    Py_RETURN_NONE;
}

PyMethodDef chanrx_module_methods[] = {
    {"cwait_prepare", m_cwait_prepare, METH_O,
     "cwait_prepare($module, h, /)\n--\n\nPublish WAITING for the calling worker's thread h\n"
     "(csrc/core/runtime.h); False while a C wake of an earlier wait is pending."},
    {"cwait_abort", m_cwait_abort, METH_O,
     "cwait_abort($module, h, /)\n--\n\nLeave WAITING: a late C wake of h is then a no-op."},
    {NULL},
};
