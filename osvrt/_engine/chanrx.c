/* chanrx.c - the consumer side of a net channel (csrc/net/channel.h) for a
 * green thread: ChanRx.take() turns the oldest datagram into (bytes,
 * (ip, port)) and gives its slot back, in one call with the GIL held.
 *
 * osvrt/net/channels/lane.py did this with struct and memoryviews: ~3,000
 * interpreted instructions per datagram (benchmarks/udp_instructions.py),
 * the largest per-datagram cost of a UDP echo.  The lane still waits in
 * Python; the take is here, and so is the reader's token.
 *
 * The token (one per channel: `token` below, 1 while free) makes its holder
 * the channel's only consumer.  acquire() takes it, release() gives it back
 * and wakes one reader waiting for it (the lane's deque of tickets, given to
 * the constructor).  The ticket protocol is lane.py's: a reader that finds the
 * token taken appends its ticket, then re-checks the token; a releaser
 * stores the token, then looks at the deque: a Dekker pair, a seq_cst fence
 * on each side (chanrx_acquire, token_release), so no reader parks past a
 * release.  The token's own exchange and store are acquire and release.
 *
 * take_fast() is recvfrom()'s whole common case in one call (issue #18: the
 * interpreted token handling, budget and take were most of a UDP echo's
 * instructions): the token, one unit of the worker's I/O budget (sock.c),
 * the oldest datagram, the token back.  It returns None, having changed
 * nothing that recvfrom()'s own path would not redo, whenever that path must
 * run: the token is taken, the budget's yield is due, the channel is empty.
 *
 * Ownership: a ChanRx holds a reference to `owner` (the flow's cffi object),
 * which keeps the channel's memory alive as long as the ChanRx is.  One
 * consumer: the token makes the holder the only caller of take(), so the
 * `tail` word is ours to read relaxed and to publish.
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
    /* The reader's token: 1 free, 0 held.  Any OS thread (a reader on any
     * worker): taken with an acquire exchange, given back with a release
     * store (token_acquire/release), so the holder's plain fields below
     * (last_key, last_addr) pass from holder to holder. */
    _Atomic uint32_t token;
    /* The lane's deque of tickets of readers waiting for the token: set by
     * the constructor, cleared only by tp_clear (unreachable: no caller left),
     * so any OS thread reads the pointer plain; the deque's own operations
     * are what the readers and releasers share. */
    PyObject *readers;
} ChanRxObject;

/* 1 if o is a collections.deque (the exact type lane.py makes: its popleft
 * and length are single C calls, atomic per object), 0 if not, -1 with an
 * error set.  The type has no C API: it is looked up, once per ChanRx. */
static int
is_deque(PyObject *o)
{
    PyObject *collections = PyImport_ImportModule("collections");
    if (collections == NULL)
        return -1;
    PyObject *deque = PyObject_GetAttrString(collections, "deque");
    Py_DECREF(collections);
    if (deque == NULL)
        return -1;
    int r = Py_IS_TYPE(o, (PyTypeObject *)deque);
    Py_DECREF(deque);
    return r;
}

static PyObject *
chanrx_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *owner, *readers;
    unsigned long long addr;
    if (!PyArg_ParseTuple(args, "OKO:ChanRx", &owner, &addr, &readers))
        return NULL;
    if (addr == 0) {
        PyErr_SetString(PyExc_ValueError, "ChanRx: the channel address is NULL");
        return NULL;
    }
    int deque = is_deque(readers);
    if (deque < 0)
        return NULL;
    if (!deque) {
        PyErr_Format(PyExc_TypeError, "ChanRx: readers must be a collections.deque, not %R",
                     readers);
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
    self->readers = Py_NewRef(readers);
    atomic_init(&self->token, 1);
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
    Py_VISIT(self->readers);   /* tickets: their threads' frames may hold our lane */
    return 0;
}

static int
chanrx_clear(ChanRxObject *self)
{
    self->c = NULL;            /* owner kept it alive: not past this */
    Py_CLEAR(self->last_addr);
    Py_CLEAR(self->readers);
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

/* The datagram at t (osvrt_chan_ready said one is there) as (data, (ip,
 * port)), its slot given back; NULL with an error set (the datagram is gone
 * all the same, like a recv that failed). */
static PyObject *
take_at(ChanRxObject *self, struct osvrt_chan *c, uint64_t t)
{
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
    return take_at(self, c, t);
}

/* ---- the reader's token ------------------------------------------------- */

/* 1 if we took the token.  acquire: pairs with token_release's release
 * store, so the last holder's writes of our plain fields (the address
 * cache) happen-before ours; the channel's words have their own orders. */
static inline int
token_acquire(ChanRxObject *self)
{
    return atomic_exchange_explicit(&self->token, 0, memory_order_acquire) != 0;
}

/* Wake the first waiting reader whose ticket still waits (lane.py's
 * wake_next): 0, or -1 with an error set. */
static int
wake_next(ChanRxObject *self)
{
    /* our own reference: a ticket's dealloc may run code that clears us */
    PyObject *readers = Py_XNewRef(self->readers);
    int r = 0;
    while (readers != NULL) {
        Py_ssize_t n = PyObject_Length(readers);
        if (n <= 0) {
            r = (int)n;                    /* -1: an error */
            break;
        }
        /* popleft, not a peek: another releaser (any thread) may empty it first */
        PyObject *tk = PyObject_CallMethod(readers, "popleft", NULL);
        if (tk == NULL) {
            if (PyErr_ExceptionMatches(PyExc_IndexError))
                PyErr_Clear();
            else
                r = -1;
            break;
        }
        if (!Py_IS_TYPE(tk, &Ticket_Type)) {
            PyErr_Format(PyExc_TypeError, "not an osvrt wait ticket: %R", tk);
            r = -1;
        } else {
            r = wake_ticket((TicketObject *)tk, NULL);
        }
        Py_DECREF(tk);
        if (r != 0) {                      /* woke one (or failed); a stale ticket: the next */
            r = r < 0 ? -1 : 0;
            break;
        }
    }
    Py_XDECREF(readers);
    return r;
}

/* Give the token back, then wake one reader waiting for it: 0, or -1 with an
 * error set (the token is back all the same).  An error the caller already
 * has set (take_fast's failed take) is kept and returned (-1), the wake's
 * own failure then reported as unraisable: wake_next calls into Python,
 * which with an error pending would turn its popleft into a SystemError and
 * drop the popped ticket, a reader never woken. */
static int
token_release(ChanRxObject *self)
{
    /* release: see token_acquire.  Then a seq_cst fence before the load of
     * the deque's length: the releaser's half of the Dekker pair with
     * chanrx_acquire (a reader appends its ticket, fences, then tries the
     * token): either it finds the token, or we find its ticket.  The length
     * is read as the deque reads it (an atomic load, free-threaded build). */
    atomic_store_explicit(&self->token, 1, memory_order_release);
    PyObject *pending = take_raised();           /* no C API call with an error set */
    int r = 0;
    if (self->readers != NULL) {
        atomic_thread_fence(memory_order_seq_cst);
        if (PyObject_Length(self->readers) > 0)  /* a deque's length: cannot fail */
            r = wake_next(self);
    }
    if (pending == NULL)
        return r;
    if (r < 0)
        PyErr_WriteUnraisable((PyObject *)self);
    put_raised(pending);
    return -1;
}

/* take_fast() -> (data, (ip, port)), or None: recvfrom()'s common case
 * (see the header).  None changes nothing recvfrom()'s own path would not
 * redo: no budget spent, the token given back, nothing taken. */
static PyObject *
chanrx_take_fast(ChanRxObject *self, PyObject *unused)
{
    struct osvrt_chan *c = chan_of(self);
    uint64_t t;
    if (c == NULL)
        return NULL;
    /* The budget (sock.c, as io_budget() spends it): the call that spends
     * the last unit yields first, in recvfrom()'s path (a cancel thrown
     * into that yield finds nothing taken).  Off a worker there is none. */
    WorkerObject *w = tls_worker;          /* owner: the worker's own field */
    if (w != NULL && w->io_budget <= 1)
        Py_RETURN_NONE;
    /* A peek without the token, so an empty channel (every call of a reader
     * that keeps up) costs no token round: a hint only (tail may be another
     * holder's stale value); the full path re-checks under the token. */
    if (osvrt_chan_ready(c, &t) == 0)
        Py_RETURN_NONE;
    if (!token_acquire(self))
        Py_RETURN_NONE;                    /* another reader holds it: wait in turn */
    if (osvrt_chan_ready(c, &t) == 0) {    /* acquire of head: the slot and bytes below it */
        if (token_release(self) < 0)
            return NULL;
        Py_RETURN_NONE;                    /* empty: recvfrom() waits */
    }
    if (w != NULL)
        w->io_budget--;                    /* > 0 still: checked above */
    PyObject *r = take_at(self, c, t);
    /* The token back and a queued reader woken, whether or not the take
     * failed (token_release keeps take_at's error).  A datagram taken is
     * never dropped for a failed wake: that failure is reported, not raised. */
    if (token_release(self) < 0 && r != NULL)
        PyErr_WriteUnraisable((PyObject *)self);
    return r;
}

/* acquire() -> bool: take the reader's token; False if someone holds it.
 * The seq_cst fence first: the waiter's half of the Dekker pair with
 * token_release (acquire_slow appended its ticket before this call). */
static PyObject *
chanrx_acquire(ChanRxObject *self, PyObject *unused)
{
    atomic_thread_fence(memory_order_seq_cst);
    return PyBool_FromLong(token_acquire(self));
}

/* release(): give the token back and wake one reader waiting for it. */
static PyObject *
chanrx_release(ChanRxObject *self, PyObject *unused)
{
    if (token_release(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* wake_next(): wake one reader waiting for the token (a reader that leaves
 * its wait woken passes the wake on). */
static PyObject *
chanrx_wake_next(ChanRxObject *self, PyObject *unused)
{
    if (wake_next(self) < 0)
        return NULL;
    Py_RETURN_NONE;
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
    {"take_fast", (PyCFunction)chanrx_take_fast, METH_NOARGS,
     "take_fast()\n--\n\nTake the token, spend one unit of the I/O budget, take the oldest\n"
     "datagram, give the token back: (data, (ip, port)); None, with none of it done,\n"
     "when the token is held, the budget's yield is due or the channel is empty."},
    {"acquire", (PyCFunction)chanrx_acquire, METH_NOARGS,
     "acquire()\n--\n\nTake the reader's token; False if another reader holds it."},
    {"release", (PyCFunction)chanrx_release, METH_NOARGS,
     "release()\n--\n\nGive the reader's token back and wake one reader waiting for it."},
    {"wake_next", (PyCFunction)chanrx_wake_next, METH_NOARGS,
     "wake_next()\n--\n\nWake one reader waiting for the token (the first live ticket)."},
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
    .tp_doc = "ChanRx(owner, address, readers)\n--\n\nThe consumer of the net channel at `address`\n"
              "(a struct osvrt_chan *, csrc/net/channel.h), kept alive by `owner`; `readers`\n"
              "is the deque of tickets of readers waiting for its token.",
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
