/* sock.c - the socket path's share of the engine: the per-request calls in C
 * (recv, recv_into, sendall on a connected stream socket) and the
 * cooperative I/O budget.
 *
 * A call is a SockOp, the awaitable that Stream.recv() and friends return.
 * Its am_send makes the non-blocking syscall with the GIL held: the socket
 * is non-blocking, so the call cannot block, and releasing the GIL for a
 * microsecond syscall would only invite another worker to take it (the
 * convoy of issue #17).  EAGAIN creates no Python exception: the op opens a
 * readiness wait (a TK_IO Ticket, io.c) and yields it to the loop as the
 * trap; the loop's resume comes back through the coroutine into this
 * am_send, which ends the wait and tries again.  A result returns through
 * am_send (PYGEN_RETURN), so a call that finds data ready costs no frame and
 * no StopIteration.
 *
 * The budget.  A green thread yields the CPU only at a trap, and OSv's fair
 * rule is applied only there.  A call that finds data ready returns without
 * one, so a connection whose peer always has data would keep its worker:
 * timers, I/O-woken readers and every other thread on the CPU starve (issue
 * #21, item 3).  As tokio's coop budget does, each resume of a thread grants
 * IO_BUDGET calls that complete at once (worker.c resets it); the call after
 * those first yields (before its syscall, so a cancel there loses no data).
 *
 * Ownership: a SockOp belongs to the green thread awaiting it (owner only).
 */
#define _GNU_SOURCE 1          /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <limits.h>

#include "engine.h"

/* ACCEPT, RECVFROM, RECVFROM_INTO, SENDTO: the listener's and the kernel
 * UDP socket's calls (osvrt/net/sockets.py), on the same path. */
enum { OP_RECV, OP_RECV_INTO, OP_SENDALL, OP_ACCEPT, OP_RECVFROM, OP_RECVFROM_INTO,
       OP_SENDTO };

typedef struct {
    PyObject_HEAD
    int kind;
    int fd;
    int step;                  /* 0: not started; 1: waiting on sub; 2: done */
    Py_ssize_t n;              /* RECV: max bytes; RECV_INTO: bytes to read at most */
    Py_ssize_t off;            /* SENDALL: bytes sent so far */
    Py_buffer buf;             /* RECV_INTO, SENDALL, RECVFROM_INTO, SENDTO: the caller's
                                  buffer (buf.obj set) */
    PyObject *sub;             /* the Ticket yielded to the loop, while step is 1 */
    uint32_t closes;           /* io_fd_close_count(fd) when the call began */
    struct sockaddr_storage addr;   /* SENDTO: the destination */
    socklen_t addrlen;
} SockOpObject;

/* A recv lands in the worker's scratch buffer (WorkerObject.scratch) and is
 * copied into a bytes of its length: no 64 KiB bytes to allocate and shrink
 * per call (CPython's sock.recv does), and none at all on EAGAIN. */
#define SCRATCH 65536

static PyObject *
closed_error(void)
{
    io_raise_closed("this socket was closed");
    return NULL;
}

static void
sockop_release(SockOpObject *op)
{
    op->step = 2;
    if (op->buf.obj != NULL)
        PyBuffer_Release(&op->buf);
    Py_CLEAR(op->sub);
}

static SockOpObject *
sockop_new(int kind, int fd)
{
    if (fd < 0)
        return (SockOpObject *)closed_error();
    SockOpObject *op = PyObject_GC_New(SockOpObject, &SockOp_Type);
    if (op == NULL)
        return NULL;
    op->kind = kind;
    op->fd = fd;
    op->closes = io_fd_close_count(fd);
    op->step = 0;
    op->n = 0;
    op->off = 0;
    op->buf.obj = NULL;
    op->sub = NULL;
    PyObject_GC_Track(op);
    return op;
}

/* Yield tk (a fresh Ticket: TK_IO or TK_YIELD) to the loop as our trap.
 * 1: parked (*result is the trap), 0: the wait finished at once (try the
 * call again), -1: error (outside a green thread, another waiter on fd). */
static int
sockop_park(SockOpObject *op, TicketObject *tk, PyObject **result)
{
    if (tk == NULL)
        return -1;
    PySendResult s = Ticket_Type.tp_as_async->am_send((PyObject *)tk, Py_None, result);
    if (s != PYGEN_NEXT) {
        if (s == PYGEN_RETURN)
            Py_DECREF(*result);
        Py_DECREF(tk);
        return s == PYGEN_RETURN ? 0 : -1;
    }
    op->sub = (PyObject *)tk;
    op->step = 1;
    return 1;
}

static inline uint32_t
sockop_dir(SockOpObject *op)
{
    return op->kind == OP_SENDALL || op->kind == OP_SENDTO ? EPOLLOUT : EPOLLIN;
}

static PySendResult
sockop_fail(SockOpObject *op, int e)
{
    sockop_release(op);
    if (e == EBADF)
        closed_error();
    else {
        errno = e;
        PyErr_SetFromErrno(PyExc_OSError);   /* the errno's subclass, as socket does */
    }
    return PYGEN_ERROR;
}

/* A peer's address as the socket module gives it: (host, port) for IPv4,
 * (host, port, flowinfo, scope_id) for IPv6, the path for Unix (str; bytes
 * for an abstract name; "" unnamed). */
static PyObject *
sockaddr_to_py(const struct sockaddr_storage *a, socklen_t len)
{
    char host[INET6_ADDRSTRLEN];
    switch (a->ss_family) {
    case AF_INET: {
        const struct sockaddr_in *in = (const struct sockaddr_in *)a;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        return Py_BuildValue("(si)", host, ntohs(in->sin_port));
    }
    case AF_INET6: {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)a;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        return Py_BuildValue("(siII)", host, ntohs(in6->sin6_port),
                             ntohl(in6->sin6_flowinfo), in6->sin6_scope_id);
    }
    case AF_UNIX: {
        const struct sockaddr_un *un = (const struct sockaddr_un *)a;
        Py_ssize_t n = (Py_ssize_t)len - (Py_ssize_t)offsetof(struct sockaddr_un, sun_path);
        if (n <= 0)
            return PyUnicode_FromString("");
        if (un->sun_path[0] == 0)                  /* abstract: bytes, as socket does */
            return PyBytes_FromStringAndSize(un->sun_path, n);
        return PyUnicode_DecodeFSDefault(un->sun_path);
    }
    default:
        return Py_BuildValue("(iy#)", a->ss_family, (const char *)a, (Py_ssize_t)len);
    }
}

/* (host, port[, flowinfo, scope_id]) with a numeric host -> a sockaddr of
 * `family`.  0 done, 1 not numeric (the caller resolves it in Python), -1
 * error set. */
static int
sockaddr_from_py(int family, PyObject *o, struct sockaddr_storage *a, socklen_t *len)
{
    if (!PyTuple_Check(o) || PyTuple_GET_SIZE(o) < 2 || !PyUnicode_Check(PyTuple_GET_ITEM(o, 0)))
        return 1;
    const char *host = PyUnicode_AsUTF8(PyTuple_GET_ITEM(o, 0));
    if (host == NULL)
        return -1;
    long port = PyLong_AsLong(PyTuple_GET_ITEM(o, 1));
    if (port == -1 && PyErr_Occurred())
        return -1;
    if (port < 0 || port > 65535) {
        PyErr_Format(PyExc_OverflowError, "port must be 0-65535, not %ld", port);
        return -1;
    }
    memset(a, 0, sizeof *a);
    if (family == AF_INET && PyTuple_GET_SIZE(o) == 2) {
        struct sockaddr_in *in = (struct sockaddr_in *)a;
        if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
            return 1;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        *len = sizeof *in;
        return 0;
    }
    if (family == AF_INET6 && PyTuple_GET_SIZE(o) == 2) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)a;
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
            return 1;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof *in6;
        return 0;
    }
    return 1;                      /* flowinfo/scope, or another family: socket's own path */
}

static PyObject *
pair(PyObject *a, PyObject *b)       /* steals both; NULL if either is */
{
    if (a == NULL || b == NULL) {
        Py_XDECREF(a);
        Py_XDECREF(b);
        return NULL;
    }
    PyObject *t = PyTuple_Pack(2, a, b);
    Py_DECREF(a);
    Py_DECREF(b);
    return t;
}

/* One syscall.  1: done (*result set), 0: would block, -1: error (errno),
 * -2: a Python error is set (no memory). */
static int
sockop_try(SockOpObject *op, PyObject **result)
{
    ssize_t r;
    switch (op->kind) {
    case OP_RECV: {
        WorkerObject *w = tls_worker;
        if (op->n > SCRATCH) {      /* a big read goes straight into its bytes */
            PyObject *b = PyBytes_FromStringAndSize(NULL, op->n);
            if (b == NULL)
                return -2;
            r = recv(op->fd, PyBytes_AS_STRING(b), (size_t)op->n, 0);
            if (r < 0) {
                int e = errno;
                Py_DECREF(b);
                errno = e;
                return e == EAGAIN || e == EWOULDBLOCK ? 0 : -1;
            }
            if (r < op->n && _PyBytes_Resize(&b, r) < 0)
                return -2;
            *result = b;
            return 1;
        }
        if (w->scratch == NULL && (w->scratch = PyMem_RawMalloc(SCRATCH)) == NULL) {
            PyErr_NoMemory();
            return -2;
        }
        r = recv(op->fd, w->scratch, (size_t)op->n, 0);
        if (r < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        return (*result = PyBytes_FromStringAndSize(w->scratch, r)) ? 1 : -2;
    }
    case OP_RECV_INTO:
        r = recv(op->fd, op->buf.buf, (size_t)op->n, 0);
        if (r < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        return (*result = PyLong_FromSsize_t(r)) ? 1 : -2;
    case OP_ACCEPT: {
        struct sockaddr_storage a;
        socklen_t len = sizeof a;
        int fd = accept4(op->fd, (struct sockaddr *)&a, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == ECONNABORTED || errno == EPROTO)
                errno = EINTR;     /* the peer gave up before we accepted: the next one */
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        }
        io_fd_adopted(fd);         /* the number may be a socket closed behind our back */
        PyObject *fdo = PyLong_FromLong(fd);
        if (fdo == NULL || (*result = pair(fdo, sockaddr_to_py(&a, len))) == NULL) {
            close(fd);             /* no leak when the address cannot be built */
            return -2;
        }
        return 1;
    }
    case OP_RECVFROM:
    case OP_RECVFROM_INTO: {
        struct sockaddr_storage a;
        socklen_t len = sizeof a;
        WorkerObject *w = tls_worker;
        char *into;
        if (op->kind == OP_RECVFROM_INTO)
            into = op->buf.buf;
        else {
            if (w->scratch == NULL && (w->scratch = PyMem_RawMalloc(SCRATCH)) == NULL) {
                PyErr_NoMemory();
                return -2;
            }
            into = w->scratch;
        }
        r = recvfrom(op->fd, into, (size_t)op->n, 0, (struct sockaddr *)&a, &len);
        if (r < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        PyObject *first = op->kind == OP_RECVFROM ? PyBytes_FromStringAndSize(into, r)
                                                  : PyLong_FromSsize_t(r);
        /* len 0: an unconnected Unix datagram peer, or none given */
        PyObject *from = len == 0 ? Py_NewRef(Py_None) : sockaddr_to_py(&a, len);
        return (*result = pair(first, from)) ? 1 : -2;
    }
    case OP_SENDTO:
        r = sendto(op->fd, op->buf.buf, (size_t)op->buf.len, MSG_NOSIGNAL,
                   (struct sockaddr *)&op->addr, op->addrlen);
        if (r < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        return (*result = PyLong_FromSsize_t(r)) ? 1 : -2;
    default:                        /* OP_SENDALL */
        while (op->off < op->buf.len) {
            /* MSG_NOSIGNAL: a reset peer is EPIPE here, never a SIGPIPE */
            r = send(op->fd, (char *)op->buf.buf + op->off, (size_t)(op->buf.len - op->off),
                     MSG_NOSIGNAL);
            if (r < 0)
                return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
            op->off += r;
        }
        *result = Py_NewRef(Py_None);
        return 1;
    }
}

static PySendResult
sockop_am_send(SockOpObject *op, PyObject *arg, PyObject **result)
{
    WorkerObject *w = tls_worker;
    if (op->step == 1) {
        /* Resumed: end the wait (its outcome: events, or an exception such
         * as ClosedResourceError from notify_closing), then try again. */
        PyObject *sub = op->sub, *r;
        op->sub = NULL;
        op->step = 0;
        PySendResult s = Ticket_Type.tp_as_async->am_send(sub, arg, &r);
        Py_DECREF(sub);
        if (s == PYGEN_ERROR) {
            sockop_release(op);
            return s;
        }
        Py_DECREF(r);
        /* Woken (readiness, or the budget's yield) before a close that came
         * while we were off the CPU: the number may be another file's now.
         * (This narrows the window to the instant between this load and the
         * system call below; closing it would need a reference to the file,
         * which a bare fd number is not.) */
        if (io_fd_close_count(op->fd) != op->closes) {
            sockop_release(op);
            closed_error();
            return PYGEN_ERROR;
        }
    } else if (op->step == 2) {
        PyErr_SetString(PyExc_RuntimeError, "an osvrt socket call can be awaited only once");
        return PYGEN_ERROR;
    } else {
        if (w == NULL || w->current == NULL) {
            sockop_release(op);
            return outside_error(), PYGEN_ERROR;
        }
        if (--w->io_budget <= 0) {    /* spent: trap first, then the call */
            w->io_budget = IO_BUDGET;
            int p = sockop_park(op, ticket_new(NULL, TK_YIELD), result);
            if (p > 0)
                return PYGEN_NEXT;
            if (p < 0) {
                sockop_release(op);
                return PYGEN_ERROR;
            }
        }
        /* Closings posted by other threads first (acquire: pairs with the
         * poster's release): the slot may be an earlier fd's of this number. */
        if (atomic_load_explicit(&w->io.closing, memory_order_acquire)
            && io_take_closing(w) < 0) {
            sockop_release(op);
            return PYGEN_ERROR;
        }
        /* The readiness cache says this direction is drained: park at once,
         * no syscall that would only say EAGAIN (the next edge wakes us). */
        if (op->fd < w->io.nslots) {
            struct io_slot *sl = &w->io.slots[op->fd];
            /* first, forget a slot of an earlier file of this number */
            if (io_slot_fresh(w, op->fd, sl) < 0) {
                sockop_release(op);
                return PYGEN_ERROR;
            }
            /* EPOLLRDHUP: EOF or an error was seen, sticky (tokio keeps its
             * closed bits too): a read after the last data sees it at once */
            if ((sl->et & sockop_dir(op)) && !(sl->ready & (sockop_dir(op) | EPOLLRDHUP)))
                goto park;
        }
    }
    for (;;) {
        int r = sockop_try(op, result);
        if (r > 0) {
            /* A read shorter than asked drained the socket (a stream socket
             * returns what is there, up to the size): cache it, and the next
             * recv parks without trying (Go's and tokio's rule). */
            if ((op->kind == OP_RECV || op->kind == OP_RECV_INTO) && w != NULL
                && op->fd < w->io.nslots
                && (w->io.slots[op->fd].et & EPOLLIN) && w->io.slots[op->fd].tcp
                && op->n > 0) {
                Py_ssize_t got = op->kind == OP_RECV ? PyBytes_GET_SIZE(*result)
                                                     : PyLong_AsSsize_t(*result);
                if (got > 0 && got < op->n)
                    w->io.slots[op->fd].ready &= ~(uint32_t)EPOLLIN;
            }
            sockop_release(op);
            return PYGEN_RETURN;
        }
        if (r == -2) {
            sockop_release(op);
            return PYGEN_ERROR;
        }
        if (r < 0) {
            if (errno == EINTR) {
                if (PyErr_CheckSignals() < 0) {
                    sockop_release(op);
                    return PYGEN_ERROR;
                }
                continue;
            }
            return sockop_fail(op, errno);
        }
    park: ;
        TicketObject *tk = ticket_new(NULL, TK_IO);
        if (tk != NULL) {
            tk->fd = op->fd;
            tk->ioev = sockop_dir(op) | EPOLLET | IO_ET_BOTH;   /* io.c: the edge-triggered slot */
        }
        int p = sockop_park(op, tk, result);
        if (p > 0)
            return PYGEN_NEXT;
        if (p < 0) {
            sockop_release(op);
            return PYGEN_ERROR;
        }
    }
}

/* ---- the iterator protocol and throw/close (tracers, foreign drivers) ---- */

static PyObject *
sockop_await(PyObject *op)
{
    return Py_NewRef(op);
}

static PyObject *
sockop_send_method(SockOpObject *op, PyObject *arg)
{
    PyObject *res;
    PySendResult r = sockop_am_send(op, arg, &res);   /* sets res first */
    return send_result_as_iter(r, res);
}

static PyObject *
sockop_iternext(SockOpObject *op)
{
    return sockop_send_method(op, Py_None);
}

/* A cancel or a timeout thrown in while parked: the wait ends through the
 * ticket's throw (it leaves io.c's table), and the exception goes on up. */
static PyObject *
sockop_throw(SockOpObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw expects 1 to 3 arguments");
        return NULL;
    }
    PyObject *sub = op->sub;
    op->sub = NULL;
    sockop_release(op);
    return throw_into_sub(sub, args, nargs);
}

static PyObject *
sockop_close(SockOpObject *op, PyObject *unused)
{
    PyObject *sub = op->sub;
    op->sub = NULL;
    if (sub != NULL) {
        PyObject *r = PyObject_CallMethod(sub, "close", NULL);
        Py_XDECREF(r);
        Py_DECREF(sub);
        if (r == NULL) {
            sockop_release(op);
            return NULL;
        }
    }
    sockop_release(op);
    Py_RETURN_NONE;
}

static int
sockop_traverse(SockOpObject *op, visitproc visit, void *arg)
{
    Py_VISIT(op->sub);
    Py_VISIT(op->buf.obj);
    return 0;
}

static int
sockop_clear(SockOpObject *op)
{
    sockop_release(op);
    return 0;
}

static void
sockop_dealloc(SockOpObject *op)
{
    PyObject_GC_UnTrack(op);
    sockop_release(op);
    PyObject_GC_Del(op);
}

static PyAsyncMethods sockop_as_async = {
    .am_await = sockop_await,
    .am_send = (sendfunc)sockop_am_send,
};

static PyMethodDef sockop_methods[] = {
    {"send", (PyCFunction)sockop_send_method, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))sockop_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)sockop_close, METH_NOARGS, NULL},
    {NULL}
};

PyTypeObject SockOp_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "osvrt._engine.SockOp",
    .tp_basicsize = sizeof(SockOpObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)sockop_dealloc,
    .tp_traverse = (traverseproc)sockop_traverse,
    .tp_clear = (inquiry)sockop_clear,
    .tp_as_async = &sockop_as_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)sockop_iternext,
    .tp_methods = sockop_methods,
};

/* ---- module functions ------------------------------------------------------ */

static int
arg_fd(PyObject *o, int *fd)
{
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v > INT_MAX || v < -1) {
        PyErr_Format(PyExc_ValueError, "not a file descriptor: %R", o);
        return -1;
    }
    *fd = (int)v;
    return 0;
}

static int
arg_size(PyObject *o, const char *what, Py_ssize_t *n)
{
    *n = PyLong_AsSsize_t(o);
    if (*n == -1 && PyErr_Occurred())
        return -1;
    if (*n < 0) {
        PyErr_Format(PyExc_ValueError, "negative %s in recv: %zd", what, *n);
        return -1;
    }
    return 0;
}

/* sock_recv(fd, max_bytes) -> awaitable bytes (b"" at EOF). */
static PyObject *
m_sock_recv(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    Py_ssize_t n;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "sock_recv(fd, max_bytes)");
    if (arg_fd(args[0], &fd) < 0 || arg_size(args[1], "buffersize", &n) < 0)
        return NULL;
    SockOpObject *op = sockop_new(OP_RECV, fd);
    if (op != NULL)
        op->n = n;
    return (PyObject *)op;
}

/* sock_recv_into(fd, buffer, nbytes) -> awaitable int (0 at EOF). */
static PyObject *
m_sock_recv_into(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    Py_ssize_t n;
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "sock_recv_into(fd, buffer, nbytes)");
    if (arg_fd(args[0], &fd) < 0 || arg_size(args[2], "nbytes", &n) < 0)
        return NULL;
    Py_buffer b;
    if (PyObject_GetBuffer(args[1], &b, PyBUF_WRITABLE) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "recv_into() needs a writable bytes-like object, not %.100s",
                         Py_TYPE(args[1])->tp_name);
        }
        return NULL;
    }
    if (n == 0)
        n = b.len;
    else if (n > b.len) {
        PyBuffer_Release(&b);
        return PyErr_Format(PyExc_ValueError, "buffer too small for requested bytes: %zd", n);
    }
    SockOpObject *op = sockop_new(OP_RECV_INTO, fd);
    if (op == NULL) {
        PyBuffer_Release(&b);
        return NULL;
    }
    op->buf = b;
    op->n = n;
    return (PyObject *)op;
}

/* sock_sendall(fd, data) -> awaitable None; parks while the buffer is full. */
static PyObject *
m_sock_sendall(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "sock_sendall(fd, data)");
    if (arg_fd(args[0], &fd) < 0)
        return NULL;
    Py_buffer b;
    if (PyObject_GetBuffer(args[1], &b, PyBUF_SIMPLE) < 0)
        return NULL;
    SockOpObject *op = sockop_new(OP_SENDALL, fd);
    if (op == NULL) {
        PyBuffer_Release(&b);
        return NULL;
    }
    op->buf = b;
    return (PyObject *)op;
}

/* sock_accept(fd) -> awaitable (new fd, address): accept4 with
 * SOCK_NONBLOCK | SOCK_CLOEXEC; a connection the peer aborted before it was
 * accepted (ECONNABORTED, EPROTO) is skipped. */
static PyObject *
m_sock_accept(PyObject *m, PyObject *fdo)
{
    int fd;
    if (arg_fd(fdo, &fd) < 0)
        return NULL;
    return (PyObject *)sockop_new(OP_ACCEPT, fd);
}

/* sock_recvfrom(fd, max_bytes) -> awaitable (bytes, address). */
static PyObject *
m_sock_recvfrom(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    Py_ssize_t n;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "sock_recvfrom(fd, max_bytes)");
    if (arg_fd(args[0], &fd) < 0 || arg_size(args[1], "buffersize", &n) < 0)
        return NULL;
    if (n > SCRATCH)
        n = SCRATCH;               /* a datagram holds at most 65,507 bytes of IPv4 UDP */
    SockOpObject *op = sockop_new(OP_RECVFROM, fd);
    if (op != NULL)
        op->n = n;
    return (PyObject *)op;
}

/* sock_recvfrom_into(fd, buffer, nbytes) -> awaitable (count, address). */
static PyObject *
m_sock_recvfrom_into(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *op = m_sock_recv_into(m, args, nargs);
    if (op != NULL)
        ((SockOpObject *)op)->kind = OP_RECVFROM_INTO;
    return op;
}

/* sock_sendto(fd, data, address, family) -> awaitable count sent, or
 * NotImplemented when address is not a numeric (host, port) of family (the
 * caller sends it through the socket module, which resolves names). */
static PyObject *
m_sock_sendto(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    if (nargs != 4)
        return PyErr_Format(PyExc_TypeError, "sock_sendto(fd, data, address, family)");
    if (arg_fd(args[0], &fd) < 0)
        return NULL;
    long family = PyLong_AsLong(args[3]);
    if (family == -1 && PyErr_Occurred())
        return NULL;
    struct sockaddr_storage a;
    socklen_t len = 0;
    int r = sockaddr_from_py((int)family, args[2], &a, &len);
    if (r < 0)
        return NULL;
    if (r > 0)
        Py_RETURN_NOTIMPLEMENTED;
    Py_buffer b;
    if (PyObject_GetBuffer(args[1], &b, PyBUF_SIMPLE) < 0)
        return NULL;
    SockOpObject *op = sockop_new(OP_SENDTO, fd);
    if (op == NULL) {
        PyBuffer_Release(&b);
        return NULL;
    }
    op->buf = b;
    op->addr = a;
    op->addrlen = len;
    return (PyObject *)op;
}

/* ---- the same calls for other engine code (declared in engine.h) --------
 * Each returns the awaitable (a SockOp) or NULL with an error set, exactly
 * as the module functions above; a caller in C (a transport of the asyncio
 * loop, say) yields it from its own awaitable or awaits it in a green
 * thread.  The owner rule holds: a SockOp is driven by one green thread. */

PyObject *
engine_sock_recv(int fd, Py_ssize_t max_bytes)
{
    SockOpObject *op = sockop_new(OP_RECV, fd);
    if (op != NULL)
        op->n = max_bytes;
    return (PyObject *)op;
}

PyObject *
engine_sock_sendall(int fd, PyObject *data)
{
    PyObject *args[2] = {NULL, data};
    if ((args[0] = PyLong_FromLong(fd)) == NULL)
        return NULL;
    PyObject *op = m_sock_sendall(NULL, args, 2);
    Py_DECREF(args[0]);
    return op;
}

PyObject *
engine_sock_accept(int fd)
{
    return (PyObject *)sockop_new(OP_ACCEPT, fd);
}

PyObject *
engine_sock_recvfrom(int fd, Py_ssize_t max_bytes)
{
    SockOpObject *op = sockop_new(OP_RECVFROM, fd);
    if (op != NULL)
        op->n = max_bytes > SCRATCH ? SCRATCH : max_bytes;
    return (PyObject *)op;
}

PyObject *
engine_sock_sendto(int fd, PyObject *data, PyObject *address, int family)
{
    PyObject *args[4] = {NULL, data, address, NULL};
    if ((args[0] = PyLong_FromLong(fd)) == NULL || (args[3] = PyLong_FromLong(family)) == NULL) {
        Py_XDECREF(args[0]);
        return NULL;
    }
    PyObject *op = m_sock_sendto(NULL, args, 4);
    Py_DECREF(args[0]);
    Py_DECREF(args[3]);
    return op;
}

PyObject *
engine_sockaddr_to_py(const struct sockaddr_storage *a, socklen_t len)
{
    return sockaddr_to_py(a, len);
}

int
engine_sockaddr_from_py(int family, PyObject *o, struct sockaddr_storage *a, socklen_t *len)
{
    return sockaddr_from_py(family, o, a, len);
}

/* io_budget() -> None while the budget lasts (one is spent), or an awaitable
 * yield once it is spent.  None outside a worker (a plain call from an OS
 * thread has no CPU to share).  For the socket calls still in Python. */
static PyObject *
m_io_budget(PyObject *m, PyObject *unused)
{
    WorkerObject *w = tls_worker;
    if (w == NULL || --w->io_budget > 0)
        Py_RETURN_NONE;
    w->io_budget = IO_BUDGET;      /* if the rule keeps us running, a fresh budget */
    return (PyObject *)ticket_new(NULL, TK_YIELD);
}

PyMethodDef sock_module_methods[] = {
    {"sock_recv", (PyCFunction)(void (*)(void))m_sock_recv, METH_FASTCALL,
     "sock_recv($module, fd, max_bytes, /)\n--\n\nAwait it for up to max_bytes bytes from the\n"
     "non-blocking stream socket fd (b\"\" at EOF); parks while none are ready."},
    {"sock_recv_into", (PyCFunction)(void (*)(void))m_sock_recv_into, METH_FASTCALL,
     "sock_recv_into($module, fd, buffer, nbytes, /)\n--\n\nAwait it for the count read into buffer."},
    {"sock_sendall", (PyCFunction)(void (*)(void))m_sock_sendall, METH_FASTCALL,
     "sock_sendall($module, fd, data, /)\n--\n\nAwait it to send all of data; parks while the\n"
     "send buffer is full."},
    {"sock_accept", (PyCFunction)m_sock_accept, METH_O,
     "sock_accept($module, fd, /)\n--\n\nAwait it for (fd, address) of the next connection\n"
     "(non-blocking, close-on-exec); parks while none is queued."},
    {"sock_recvfrom", (PyCFunction)(void (*)(void))m_sock_recvfrom, METH_FASTCALL,
     "sock_recvfrom($module, fd, max_bytes, /)\n--\n\nAwait it for (data, address)."},
    {"sock_recvfrom_into", (PyCFunction)(void (*)(void))m_sock_recvfrom_into, METH_FASTCALL,
     "sock_recvfrom_into($module, fd, buffer, nbytes, /)\n--\n\nAwait it for (count, address)."},
    {"sock_sendto", (PyCFunction)(void (*)(void))m_sock_sendto, METH_FASTCALL,
     "sock_sendto($module, fd, data, address, family, /)\n--\n\nAwait it for the count sent;\n"
     "NotImplemented (not awaitable) for an address that is not a numeric (host, port)."},
    {"io_budget", m_io_budget, METH_NOARGS,
     "io_budget($module, /)\n--\n\nSpend one of the current thread's socket calls; None while\n"
     "some are left, else an awaitable that yields (await it)."},
    {NULL}
};

Py_ssize_t
engine_send_nb(int fd, const char *p, Py_ssize_t n, int *err)
{
    Py_ssize_t off = 0;
    *err = 0;
    while (off < n) {
        /* MSG_NOSIGNAL: a reset peer is EPIPE here, never a SIGPIPE;
         * MSG_DONTWAIT: it cannot block even on a blocking socket */
        ssize_t r = send(fd, p + off, (size_t)(n - off), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                *err = errno;
            break;
        }
        off += r;
    }
    return off;
}

int
engine_get_bytes(PyObject *data, Py_buffer *b)
{
    if (PyBytes_CheckExact(data)) {    /* the usual reply: no buffer protocol round */
        b->buf = PyBytes_AS_STRING(data);
        b->len = PyBytes_GET_SIZE(data);
        b->obj = NULL;
        return 0;
    }
    return PyObject_GetBuffer(data, b, PyBUF_SIMPLE);
}
