/* tcplink.c - TcpLink: the per-segment calls of a user-space TCP stack's
 * link (csrc/net/tcp/tcp_link.h) for osvrt/net/tcp/stack.py and streams.py.
 *
 * The link lives in the C core (osvrt._core, cffi).  Through cffi, each of
 * a round trip's calls (poll, recv, send, the empty recv before a park)
 * paid ~1.5k instructions of argument conversion and a GIL release and
 * retake, a time.monotonic_ns() call for its clock, and recv a cffi buffer
 * and a slice to make its bytes: more than the TCP work itself (callgrind,
 * benchmarks/usertcp_instructions.py).  Here each is one METH_FASTCALL call
 * through the core's table (tcp_link.h, struct osvrt_tcp_link_api) that
 * reads the clock itself and makes the bytes at once; what the view asks
 * of Python per round trip is done here too (wake the owners poll handed
 * segments to, drop the events no green thread waits for).  The GIL stays
 * held: every call is non-blocking (recvmmsg and sendmmsg with
 * MSG_DONTWAIT), as the engine's other socket calls (sock.c, udptx.c).
 *
 * Ownership: a TcpLink holds `owner`, the cffi object whose collection frees
 * the link, so the link outlives every call made through it.  The link's
 * threading rule is tcp.h's (one owning OS thread): the stack calls these
 * only on its worker (stack.py), and the view is written here as by the
 * link, on that OS thread; so no lock and no atomic here.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "tcp_link.h"

#define RECV_SCRATCH (1u << 16)     /* recv's cap: the stack's streams ask for at most this */

typedef struct {
    PyObject_HEAD
    const struct osvrt_tcp_link_api *api;   /* set once */
    struct osvrt_tcp_link *link;            /* set once; freed through owner */
    struct osvrt_tcp_link_view *view;       /* the link's; set once */
    PyObject *owner;                        /* keeps the link alive */
    PyObject *conns;                        /* the stack's dict: id -> Conn (conn.py) */
    PyObject *handed;                       /* the stack's set of Conns with a full inbox */
    PyObject *after;                        /* the stack's after(): what the view still holds */
    uint8_t scratch[RECV_SCRATCH];          /* recv's bytes before they become a bytes object */
} TcpLinkObject;

/* The engine's clock in ns: CLOCK_MONOTONIC, time.monotonic_ns()'s. */
static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* OSError(errno, "what: strerror"), as conn.oserror (its errno picks the
 * subclass: ConnectionResetError, BrokenPipeError, ...). */
static PyObject *
link_error(int64_t rc, const char *what)
{
    int e = (int)-rc;
    PyObject *msg = PyUnicode_FromFormat("%s: %s", what, strerror(e));
    if (msg == NULL)
        return NULL;
    PyObject *exc = PyObject_CallFunction(PyExc_OSError, "iO", e, msg);
    Py_DECREF(msg);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static PyObject *str_inbox, *str_readable, *str_writable;

/* Conn c's owner was handed segments (poll put them in its inbox): as
 * stack.py's _handed_to_owners did in Python, c.inbox = True, c joins the
 * stack's handed set, and both its Events are set (its owner waits on one
 * of them). */
static int
hand_to(TcpLinkObject *self, PyObject *c)
{
    if (PyObject_SetAttr(c, str_inbox, Py_True) < 0 || PySet_Add(self->handed, c) < 0)
        return -1;
    PyObject *names[2] = {str_readable, str_writable};
    for (int i = 0; i < 2; i++) {
        PyObject *ev = PyObject_GetAttr(c, names[i]);
        if (ev == NULL)
            return -1;
        int r = Py_IS_TYPE(ev, &Event_Type) ? engine_event_set(ev)
                : (PyErr_Format(PyExc_TypeError, "TcpLink: %R is not an osvrt Event", ev), -1);
        Py_DECREF(ev);
        if (r < 0)
            return -1;
    }
    return 0;
}

/* Hand what the call left in the view and C did not act on to the stack's
 * after() (stack.py): frames for Python (ARP, ICMP), packets held for ARP,
 * events, a deadline, an error.  After most calls todo is 0 by now, and no
 * Python runs. */
static int
run_after(TcpLinkObject *self)
{
    if (self->view->todo == 0)
        return 0;
    if (self->after == NULL) {          /* cleared by the GC: unreachable, so never here */
        PyErr_SetString(PyExc_ValueError, "TcpLink: cleared");
        return -1;
    }
    PyObject *r = PyObject_CallNoArgs(self->after);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* The connections poll handed segments to whose Conn is in the stack's
 * table are woken here; the others (released while their owner still
 * waited: stack.py) stay in view.handed for Python, with TODO_HANDED. */
static int
wake_handed(TcpLinkObject *self)
{
    struct osvrt_tcp_link_view *v = self->view;
    if (!(v->todo & OSVRT_TCP_LINK_TODO_HANDED))
        return 0;
    if (self->conns == NULL) {          /* as run_after */
        PyErr_SetString(PyExc_ValueError, "TcpLink: cleared");
        return -1;
    }
    uint32_t k = 0;
    for (uint32_t i = 0; i < v->nhanded; i++) {
        PyObject *key = PyLong_FromLong(v->handed[i]);
        if (key == NULL)
            return -1;
        PyObject *c = PyDict_GetItemWithError(self->conns, key);   /* borrowed */
        Py_DECREF(key);
        if (c == NULL) {
            if (PyErr_Occurred())
                return -1;
            v->handed[k++] = v->handed[i];
            continue;
        }
        Py_INCREF(c);
        int r = hand_to(self, c);
        Py_DECREF(c);
        if (r < 0)
            return -1;
    }
    v->nhanded = k;
    if (k == 0)
        v->todo &= ~OSVRT_TCP_LINK_TODO_HANDED;
    return 0;
}

static PyObject *
tcplink_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    unsigned long long api_addr, link_addr;
    PyObject *owner, *conns, *handed, *after;
    if (!PyArg_ParseTuple(args, "KKOO!O!O:TcpLink", &api_addr, &link_addr, &owner,
                          &PyDict_Type, &conns, &PySet_Type, &handed, &after))
        return NULL;
    if (!PyCallable_Check(after))
        return PyErr_Format(PyExc_TypeError, "TcpLink: after must be callable, not %R", after);
    if (str_inbox == NULL
        && (!(str_inbox = PyUnicode_InternFromString("inbox"))
            || !(str_readable = PyUnicode_InternFromString("readable"))
            || !(str_writable = PyUnicode_InternFromString("writable"))))
        return NULL;
    const struct osvrt_tcp_link_api *api = (const struct osvrt_tcp_link_api *)(uintptr_t)api_addr;
    if (api == NULL || api->version != OSVRT_TCP_LINK_API_VERSION
        || api->size != sizeof(struct osvrt_tcp_link_api))
        return PyErr_Format(PyExc_ImportError, "osvrt: the C core (osvrt._core) and the engine "
                            "(osvrt._engine) are from different builds; reinstall osvrt");
    if (link_addr == 0)
        return PyErr_Format(PyExc_ValueError, "TcpLink: the link address is NULL");
    TcpLinkObject *self = (TcpLinkObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->api = api;
    self->link = (struct osvrt_tcp_link *)(uintptr_t)link_addr;
    self->view = api->view(self->link);
    self->owner = Py_NewRef(owner);
    self->conns = Py_NewRef(conns);
    self->handed = Py_NewRef(handed);
    self->after = Py_NewRef(after);
    return (PyObject *)self;
}

static void
tcplink_dealloc(TcpLinkObject *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->conns);
    Py_CLEAR(self->handed);
    Py_CLEAR(self->after);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* conns and handed hold Conns, whose Events' waiters may reach back here. */
static int
tcplink_traverse(TcpLinkObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    Py_VISIT(self->conns);
    Py_VISIT(self->handed);
    Py_VISIT(self->after);
    return 0;
}

static int
tcplink_clear(TcpLinkObject *self)
{
    Py_CLEAR(self->conns);
    Py_CLEAR(self->handed);
    Py_CLEAR(self->after);
    return 0;
}

/* Keep only the events of connections a green thread waits on (waits[]
 * of their slot): every wait on a stream clears its Event and parks right
 * after a call that found nothing to do, with no await in between
 * (streams.py, _park), so an Event set while nobody waits is cleared unseen.
 * Most round trips' calls then leave nothing for after() (stack.py): the
 * owner's own recv and send make READABLE/WRITABLE events for the
 * connection it is running on. */
static void
keep_waited_events(struct osvrt_tcp_link_view *v)
{
    if (!(v->todo & OSVRT_TCP_LINK_TODO_EVENTS))
        return;
    uint32_t k = 0;
    for (uint32_t i = 0; i < v->nevents; i++) {
        uint32_t slot = (uint32_t)v->events[i].id & (OSVRT_TCP_MAX_CONNS - 1u);
        if (slot < v->nwaits && v->waits[slot])
            v->events[k++] = v->events[i];
    }
    v->nevents = k;
    if (k == 0)
        v->todo &= ~OSVRT_TCP_LINK_TODO_EVENTS;
}

/* An int32 argument (a connection id) of a fast call. */
static int
arg_id(PyObject *o, int32_t *out)
{
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0 || v > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "TcpLink: connection id %R is out of range", o);
        return -1;
    }
    *out = (int32_t)v;
    return 0;
}

/* poll() -> int: osvrt_tcp_link_poll (frames read, or a negative errno),
 * the owners it handed segments to woken, then after() if the view holds
 * more.  recv, recv_into and send also end with after() when needed, also
 * when they raise. */
static PyObject *
tcplink_poll(TcpLinkObject *self, PyObject *unused)
{
    int32_t n = self->api->poll(self->link, now_ns());
    keep_waited_events(self->view);
    if (wake_handed(self) < 0 || run_after(self) < 0)
        return NULL;
    return PyLong_FromLong(n);
}

/* The end of recv, recv_into and send, once the caller made its result
 * from the link call's rc (a count: `result`; NULL when rc is not one, or
 * when making it failed, with that error set): the view's leftovers acted
 * on (after()), then `result`, None for -EAGAIN, or NULL with the error
 * (rc's, named `what`; or after()'s).  The result is made first: after()
 * runs Python, which may let another call reuse the scratch buffer. */
static PyObject *
call_end(TcpLinkObject *self, int64_t rc, const char *what, PyObject *result)
{
    keep_waited_events(self->view);
    PyObject *pending = rc >= 0 && result == NULL ? take_raised() : NULL;
    if (run_after(self) < 0) {
        if (result == NULL) {
            Py_XDECREF(pending);
            return NULL;
        }
        /* The link call took the bytes already: hand them over and report
         * after()'s error, rather than lose them; the link thread's next
         * poll runs after() again (and fails the stack if it still fails). */
        PyErr_WriteUnraisable((PyObject *)self);
        return result;
    }
    if (pending != NULL) {
        put_raised(pending);
        return NULL;
    }
    if (result != NULL)
        return result;
    if (rc == -EAGAIN)
        Py_RETURN_NONE;
    link_error(rc, what);
    return NULL;
}

/* recv(id, cap) -> bytes (b"" at EOF), or None when nothing waits. */
static PyObject *
tcplink_recv(TcpLinkObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int32_t id;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "recv(id, cap) takes 2 arguments");
        return NULL;
    }
    if (arg_id(args[0], &id) < 0)
        return NULL;
    Py_ssize_t cap = PyLong_AsSsize_t(args[1]);
    if (cap == -1 && PyErr_Occurred())
        return NULL;
    if (cap < 1 || cap > (Py_ssize_t)RECV_SCRATCH)
        return PyErr_Format(PyExc_ValueError, "TcpLink.recv: cap %zd is out of range 1..%u",
                            cap, RECV_SCRATCH);
    int64_t rc = self->api->recv(self->link, id, self->scratch, (uint64_t)cap, now_ns());
    PyObject *data = rc >= 0 ? PyBytes_FromStringAndSize((const char *)self->scratch,
                                                         (Py_ssize_t)rc) : NULL;
    return call_end(self, rc, "recv", data);
}

/* The arguments (id, buffer, k) of recv_into and send: *b holds the buffer
 * (flags: PyBUF_WRITABLE or PyBUF_SIMPLE), 0 <= k <= its length; -1 with
 * an error set (and nothing held). */
static int
buffer_args(PyObject *const *args, Py_ssize_t nargs, const char *sig, int flags, int32_t *id,
            Py_buffer *b, Py_ssize_t *k)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "TcpLink.%s takes 3 arguments", sig);
        return -1;
    }
    if (arg_id(args[0], id) < 0)
        return -1;
    *k = PyLong_AsSsize_t(args[2]);
    if (*k == -1 && PyErr_Occurred())
        return -1;
    if (PyObject_GetBuffer(args[1], b, flags) < 0)
        return -1;
    if (*k < 0 || *k > b->len) {
        PyErr_Format(PyExc_ValueError, "TcpLink.%s: %zd is out of range 0..%zd", sig, *k,
                     b->len);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

/* recv_into(id, buffer, n) -> bytes read into buffer (0 at EOF), or None. */
static PyObject *
tcplink_recv_into(TcpLinkObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int32_t id;
    Py_buffer b;
    Py_ssize_t n;
    if (buffer_args(args, nargs, "recv_into(id, buffer, n)", PyBUF_WRITABLE, &id, &b, &n) < 0)
        return NULL;
    int64_t rc = self->api->recv(self->link, id, b.buf, (uint64_t)n, now_ns());
    PyBuffer_Release(&b);
    return call_end(self, rc, "recv_into", rc >= 0 ? PyLong_FromLongLong(rc) : NULL);
}

/* send(id, data, off) -> bytes of data[off:] taken (> 0), or None when the
 * send buffer is full. */
static PyObject *
tcplink_send(TcpLinkObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int32_t id;
    Py_buffer b;
    Py_ssize_t off;
    if (buffer_args(args, nargs, "send(id, data, off)", PyBUF_SIMPLE, &id, &b, &off) < 0)
        return NULL;
    int64_t rc = self->api->send(self->link, id, (const uint8_t *)b.buf + off,
                                 (uint64_t)(b.len - off), now_ns());
    PyBuffer_Release(&b);
    /* 0 bytes taken of a non-empty rest is no progress: as a full buffer
     * (None), so that sendall parks rather than spins. */
    if (rc == 0 && b.len > off)
        rc = -EAGAIN;
    return call_end(self, rc, "sendall", rc >= 0 ? PyLong_FromLongLong(rc) : NULL);
}

static PyMethodDef tcplink_methods[] = {
    {"poll", (PyCFunction)tcplink_poll, METH_NOARGS,
     "poll()\n--\n\nosvrt_tcp_link_poll now: the frames read, or a negative errno."},
    {"recv", (PyCFunction)(void (*)(void))tcplink_recv, METH_FASTCALL,
     "recv(id, cap)\n--\n\nosvrt_tcp_link_recv now: bytes (b\"\" at EOF), None when nothing\n"
     "waits; OSError for the engine's errors."},
    {"recv_into", (PyCFunction)(void (*)(void))tcplink_recv_into, METH_FASTCALL,
     "recv_into(id, buffer, n)\n--\n\nAs recv, into the first n bytes of buffer: the count."},
    {"send", (PyCFunction)(void (*)(void))tcplink_send, METH_FASTCALL,
     "send(id, data, off)\n--\n\nosvrt_tcp_link_send of data[off:] now: the bytes taken,\n"
     "None when the send buffer is full; OSError for the engine's errors."},
    {NULL},
};

PyTypeObject TcpLink_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "osvrt._engine.TcpLink",
    .tp_basicsize = sizeof(TcpLinkObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)tcplink_traverse,
    .tp_clear = (inquiry)tcplink_clear,
    .tp_doc = "TcpLink(api, link, owner, conns, handed, after)\n--\n\nThe per-segment calls of a user-space stack's link:\n"
              "api and link are the addresses of osvrt_tcp_link_api() and the link; owner\n"
              "keeps the link alive; conns (id -> Conn) and handed (a set) are the stack's,\n"
              "for the owners poll() wakes; after() acts on what a call left in the view.",
    .tp_new = tcplink_new,
    .tp_dealloc = (destructor)tcplink_dealloc,
    .tp_methods = tcplink_methods,
};
