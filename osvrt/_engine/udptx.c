/* udptx.c - the engine's side of batched UDP replies (csrc/net/tx_batch.h).
 *
 * UdpTx is the reply socket of a net-channel UDP endpoint
 * (osvrt/net/channels/udp.py).  Its send() queues the datagram in the
 * calling worker's batch (WorkerObject.txb, made on first use), with the GIL
 * held and no syscall; the worker's loop flushes the batch at the top of its
 * next turn (worker.c: before it polls the packet ring, takes wake-ups or
 * parks), so the thread's replies of one turn go out in one sendmmsg.
 * A caller that is not a worker's thread sends at once (one sendto).
 *
 * Ownership: a UdpTx holds one reference to its struct osvrt_udp_tx (the
 * endpoint's); a batch holds another while it has datagrams.  The batch is
 * the owner worker's alone (no lock, no atomics).
 */
#define _GNU_SOURCE 1          /* struct mmsghdr (tx_batch.h) */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "engine.h"
#include "tx_batch.h"

typedef struct {
    PyObject_HEAD
    struct osvrt_udp_tx *tx;       /* set once; our ref, put at dealloc */
    /* 1 until close(); any thread may close: the exchange lets exactly one
     * closer drop the endpoint's user (a send that races it is refused by
     * the user count itself, tx_batch.h). */
    _Atomic int open;
} UdpTxObject;

static PyObject *
udptx_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    int fd;
    if (!PyArg_ParseTuple(args, "i:UdpTx", &fd))
        return NULL;
    /* Our own descriptor of the socket: the endpoint's Python socket keeps
     * its own, and ours closes when the last batch lets go of it. */
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    struct osvrt_udp_tx *tx = osvrt_udp_tx_new(own);
    if (tx == NULL) {
        close(own);
        return PyErr_NoMemory();
    }
    UdpTxObject *self = (UdpTxObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        osvrt_udp_tx_close(tx);     /* the last user: closes our dup, or it would hold the port */
        osvrt_udp_tx_put(tx);
        return NULL;
    }
    self->tx = tx;
    atomic_init(&self->open, 1);
    return (PyObject *)self;
}

/* 0, or -errno when the port stays bound until other workers' batches
 * holding datagrams for it are flushed (osvrt_udp_tx_close). */
static int
udptx_drop(UdpTxObject *self)
{
    /* relaxed: the flag only picks the one closer; the user count orders the fd */
    if (!atomic_exchange_explicit(&self->open, 0, memory_order_relaxed))
        return 0;
    /* The closing thread's own replies go first (its worker's batch is ours
     * to send); other workers' batches are refused at their flush (tx_batch.h). */
    WorkerObject *w = tls_worker;
    if (w != NULL && osvrt_tx_batch_pending(w->txb) && w->txb->tx == self->tx)
        osvrt_tx_batch_flush(w->txb);
    return osvrt_udp_tx_close(self->tx);
}

static void
udptx_dealloc(UdpTxObject *self)
{
    (void)udptx_drop(self);          /* a late port release is close()'s to report */
    osvrt_udp_tx_put(self->tx);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The batch of the worker running the calling thread, made on first use;
 * NULL (no exception) if the caller is not on a worker; NULL with
 * MemoryError if it cannot be made. */
static struct osvrt_tx_batch *
worker_batch(int *nomem)
{
    WorkerObject *w = tls_worker;
    *nomem = 0;
    if (w == NULL)
        return NULL;
    if (w->txb == NULL && (w->txb = osvrt_tx_batch_new()) == NULL)
        *nomem = 1;
    return w->txb;
}

/* Queue (or, off a worker, send) data to daddr:port (daddr as the wire's 4
 * bytes read in host order, dport in host order).  Returns len(data). */
static PyObject *
udptx_put(UdpTxObject *self, PyObject *data, uint32_t daddr, uint16_t dport)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    struct osvrt_udp_tx *tx = self->tx;
    Py_ssize_t len = view.len;
    int e, nomem;
    /* relaxed: a hint; a close() racing us is caught by the user count */
    if (!atomic_load_explicit(&self->open, memory_order_relaxed)) {
        e = EBADF;
    } else if (len > (Py_ssize_t)OSVRT_UDP_MAX_PAYLOAD) {
        e = EMSGSIZE;
    } else {
        struct osvrt_tx_batch *b = worker_batch(&nomem);
        if (nomem) {
            PyBuffer_Release(&view);
            return PyErr_NoMemory();
        }
        uint16_t port = htons(dport);
        e = b ? osvrt_tx_batch_add(b, tx, view.buf, (uint32_t)len, daddr, port)
              : osvrt_udp_tx_send_now(tx, view.buf, (uint32_t)len, daddr, port);
    }
    PyBuffer_Release(&view);
    if (e) {
        errno = e;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromSsize_t(len);
}

/* send(data, daddr, dport): daddr as the wire's 4 bytes read in host order
 * (what the channel's slot holds), dport in host order.  Returns len(data). */
static PyObject *
udptx_send(UdpTxObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "UdpTx.send takes 3 arguments (data, daddr, dport), not %zd",
                     nargs);
        return NULL;
    }
    unsigned long daddr = PyLong_AsUnsignedLong(args[1]);
    if (daddr == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    long dport = PyLong_AsLong(args[2]);
    if (dport == -1 && PyErr_Occurred())
        return NULL;
    if (daddr > UINT32_MAX || dport < 0 || dport > 65535) {
        PyErr_Format(PyExc_ValueError, "UdpTx.send: bad address %lu:%ld", daddr, dport);
        return NULL;
    }
    return udptx_put(self, args[0], (uint32_t)daddr, (uint16_t)dport);
}

/* (daddr, dport) of an address that is a tuple (ip, port) with ip a str in
 * dotted-quad form (each part 0..255, no leading zero: what inet_ntoa
 * writes) or "localhost", and port an int in 0..65535; 0 if it is not one
 * (no exception).  The calling worker keeps the last one parsed: a reply goes
 * to the address object recvfrom() gave, the same object for every datagram
 * of a source (a tuple of a str and an int never changes). */
static int
parse_destination(PyObject *address, uint32_t *daddr, uint16_t *dport)
{
    WorkerObject *w = tls_worker;
    if (w != NULL && address == w->udp_dest) {
        *daddr = w->udp_daddr;
        *dport = w->udp_dport;
        return 1;
    }
    if (!PyTuple_CheckExact(address) || PyTuple_GET_SIZE(address) != 2)
        return 0;
    PyObject *host = PyTuple_GET_ITEM(address, 0), *port = PyTuple_GET_ITEM(address, 1);
    if (!PyUnicode_CheckExact(host) || !PyLong_CheckExact(port))
        return 0;
    long p = PyLong_AsLong(port);
    if (p < 0 || p > 65535) {
        PyErr_Clear();                     /* out of range: the kernel's error, not ours */
        return 0;
    }
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(host, &len);
    if (s == NULL) {
        PyErr_Clear();                     /* a lone surrogate: the kernel's path says why */
        return 0;
    }
    if ((size_t)len != strlen(s))
        return 0;                          /* an embedded NUL: the kernel's path refuses it */
    struct in_addr a;
    if (strcmp(s, "localhost") == 0)
        a.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, s, &a) != 1)
        return 0;
    *daddr = a.s_addr;
    *dport = (uint16_t)p;
    if (w != NULL) {
        Py_XSETREF(w->udp_dest, Py_NewRef(address));
        w->udp_daddr = a.s_addr;
        w->udp_dport = (uint16_t)p;
    }
    return 1;
}

/* sendto(data, address): send() to a (ip, port) tuple; NotImplemented, with
 * nothing sent, for an address this does not parse (a host name, "127.1":
 * the caller leaves those to the kernel's sendto and its errors). */
static PyObject *
udptx_sendto(UdpTxObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "UdpTx.sendto takes 2 arguments (data, address), not %zd",
                     nargs);
        return NULL;
    }
    uint32_t daddr;
    uint16_t dport;
    if (!parse_destination(args[1], &daddr, &dport))
        Py_RETURN_NOTIMPLEMENTED;
    return udptx_put(self, args[0], daddr, dport);
}

static PyObject *
udptx_close(UdpTxObject *self, PyObject *unused)
{
    int r = udptx_drop(self);
    if (r < 0 && PyErr_WarnFormat(PyExc_ResourceWarning, 1,
                                  "osvrt.net: the UDP port stays bound until other workers send "
                                  "their queued replies: no descriptor for the stub socket (%s)",
                                  strerror(-r)) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
udptx_stats(UdpTxObject *self, PyObject *unused)
{
    struct osvrt_udp_tx_stats s = {0};
    osvrt_udp_tx_get_stats(self->tx, &s);
    return Py_BuildValue("{sKsKsKsKsi}", "sent", (unsigned long long)s.sent,
                         "syscalls", (unsigned long long)s.syscalls,
                         "dropped_full", (unsigned long long)s.dropped_full,
                         "errors", (unsigned long long)s.errors, "last_errno", (int)s.last_errno);
}

/* flush(): send this worker's batch now (a thread that is about to compute
 * for long after its replies may call it); the count sent. */
static PyObject *
udptx_flush(PyObject *unused, PyObject *unused2)
{
    WorkerObject *w = tls_worker;
    uint32_t n = (w != NULL && osvrt_tx_batch_pending(w->txb)) ? osvrt_tx_batch_flush(w->txb) : 0;
    return PyLong_FromUnsignedLong(n);
}

static PyMethodDef udptx_methods[] = {
    {"send", (PyCFunction)(void (*)(void))udptx_send, METH_FASTCALL,
     "send(data, daddr, dport)\n--\n\nQueue one datagram in this worker's batch (sent at the end\n"
     "of the thread's turn), or send it at once off a worker.  Returns len(data)."},
    {"sendto", (PyCFunction)(void (*)(void))udptx_sendto, METH_FASTCALL,
     "sendto(data, address)\n--\n\nsend() to address = (ip, port), ip a dotted quad or\n"
     "\"localhost\"; NotImplemented, nothing sent, for any other address."},
    {"close", (PyCFunction)udptx_close, METH_NOARGS,
     "close()\n--\n\nSend the calling worker's batch, then release the port at once\n"
     "(idempotent); other workers' batches holding datagrams for it refuse them.\n"
     "ResourceWarning when no descriptor was left to release it at once."},
    {"stats", (PyCFunction)udptx_stats, METH_NOARGS,
     "stats()\n--\n\nsent, syscalls, dropped_full, errors, last_errno."},
    {NULL},
};

PyTypeObject UdpTx_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "osvrt._engine.UdpTx",
    .tp_basicsize = sizeof(UdpTxObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "UdpTx(fd)\n--\n\nThe reply socket of a net-channel UDP endpoint (a duplicate of fd).",
    .tp_new = udptx_new,
    .tp_dealloc = (destructor)udptx_dealloc,
    .tp_methods = udptx_methods,
};

PyMethodDef udptx_module_methods[] = {
    {"udp_tx_flush", (PyCFunction)udptx_flush, METH_NOARGS,
     "udp_tx_flush()\n--\n\nSend the calling worker's batch of UDP replies now; the count sent."},
    {NULL},
};

/* worker.c: the loop's flush, at the top of every turn and when it stops. */
void
worker_tx_flush(WorkerObject *w)
{
    if (osvrt_tx_batch_pending(w->txb))
        osvrt_tx_batch_flush(w->txb);
}

void
worker_tx_free(WorkerObject *w)
{
    osvrt_tx_batch_free(w->txb);      /* flushes first */
    w->txb = NULL;
    Py_CLEAR(w->udp_dest);
}
