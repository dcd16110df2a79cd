/* serve.c - a TCP server whose connections are served by callbacks, in C:
 * osvrt.net.serve_tcp_protocol (osvrt/net/protocol_server.py) runs one per
 * serving CPU.
 *
 * Why.  With a green thread per connection (serve_tcp), every request costs
 * a park and a resume of that thread (a ticket, the run queue, the
 * coroutine chain: about 2,300 instructions) plus the coroutine frames of
 * the handler's awaits.  Here one green thread serves every connection of
 * its listener: it accepts in C, reads in C, and calls the connection's
 * protocol object (`data_received(data)`, as asyncio's Protocol; what it
 * returns is sent) with the GIL held, as uvloop calls its protocols.  The
 * thread parks only when no connection has anything to read, so a busy
 * server pays no switch per request.
 *
 * How.  The server has an epoll instance of its own (the "inner" epoll):
 * the listener and every connection, level-triggered, EPOLLIN (and EPOLLOUT
 * while output is pending).  The inner epfd is itself waited for like any
 * socket (a TK_IO ticket, io.c: registered once, edge-triggered, in the
 * worker's epoll).  A turn: epoll_wait(inner, 0); for each ready fd, one
 * accept batch or one recv + callback + send; when the inner epoll reports
 * nothing, park until it does.  Level-triggered inside, so a connection
 * with more data than one recv took is simply reported again next turn
 * (every ready connection gets one read per turn: fair between them).
 *
 * The budget: after SERVE_BUDGET events since it was last resumed, the
 * server yields (a TK_YIELD trap), so OSv's fair rule, timers and the
 * worker's own readiness polls run while the server stays busy.
 *
 * Errors: a callback that raises an Exception closes its connection and is
 * reported through on_error(conn, exc) (the Python side logs it); a
 * BaseException (Cancelled, KeyboardInterrupt) ends the server.  A
 * connection reset or any other socket error closes that connection
 * (connection_lost(exc) tells the protocol).  accept() out of fds or
 * buffers (EMFILE, ENFILE, ENOBUFS, ENOMEM): reported once through
 * on_error(None, exc), the listener is taken out of the inner epoll and
 * retried after ACCEPT_RETRY s.
 *
 * Ownership: a Server and its Conns belong to the green thread that awaits
 * the server, pinned to its CPU; Conn.write/close check that they are called
 * on that worker's OS thread (owner only).
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.h"

#define SERVE_BUDGET 128
#define SERVE_EVENTS 64
#define ACCEPT_BATCH 32
#define READ_SIZE 65536
#define HIGH_WATER (256 * 1024)     /* pending output above this pauses reading */
#define ACCEPT_RETRY 0.1

typedef struct ServerObject ServerObject;

static int
optional_attr(PyObject *o, const char *name, PyObject **out)
{
    *out = PyObject_GetAttrString(o, name);
    if (*out != NULL)
        return 1;
    if (!PyErr_ExceptionMatches(PyExc_AttributeError))
        return -1;
    PyErr_Clear();
    return 0;
}

typedef struct {
    PyObject_HEAD
    ServerObject *srv;         /* owner; NULL once closed */
    int fd;                    /* -1 once closed */
    PyObject *proto;           /* owner: what factory(conn) returned */
    PyObject *on_data;         /* owner: proto.data_received (bound) */
    PyObject *on_lost;         /* owner: proto.connection_lost (bound) or NULL */
    PyObject *out;             /* owner: output not sent yet (bytes) or NULL */
    Py_ssize_t out_off;
    char closing;              /* close once the output is sent */
    char eof;                  /* the peer's EOF was read: no more EPOLLIN */
    char paused;               /* reading paused (output above HIGH_WATER) */
    char in_callback;          /* data_received runs: close() waits for its reply */
} ConnObject;

struct ServerObject {
    PyObject_HEAD
    int epfd;                  /* the inner epoll; -1 once closed */
    int lfd;                   /* the listener (owned by the Python Listener) */
    WorkerObject *w;           /* the worker that runs it (set at the first send) */
    PyObject *factory, *on_error;
    ConnObject **conns;        /* owner: indexed by fd */
    int nconns_cap;
    Py_ssize_t nconns;
    PyObject *sub;             /* the Ticket yielded to the loop while parked */
    int step;                  /* 0 running, 1 parked on sub, 2 ended */
    int budget;
    double accept_paused_until;   /* > 0: the listener is out of the epoll until then */
    int nev, iev;              /* events of the last epoll_wait not handled yet */
    struct epoll_event evs[SERVE_EVENTS];
    uint64_t accepted, requests;  /* counters for stats() */
};

PyTypeObject Conn_Type, Server_Type;

/* ---- connections ---------------------------------------------------------- */

static int
conn_ctl(ConnObject *c, int op)
{
    /* Not EPOLLIN after EOF: level-triggered, it would report the EOF every
     * turn while the output still drains (a closing peer that reads slowly). */
    uint32_t ev = (c->paused || c->eof ? 0 : EPOLLIN) | (c->out != NULL ? EPOLLOUT : 0);
    struct epoll_event e = {.events = ev, .data.fd = c->fd};
    return epoll_ctl(c->srv->epfd, op, c->fd, &e);
}

static PyObject *
os_error(int e)
{
    errno = e;
    return PyErr_SetFromErrno(PyExc_OSError);
}

/* Close c: out of the inner epoll and the table, the fd closed, then
 * connection_lost(exc) (exc may be NULL: None).  -1 only if connection_lost
 * raised a BaseException that must end the server (it is set). */
static int
conn_finish(ConnObject *c, PyObject *exc)
{
    ServerObject *s = c->srv;
    if (s == NULL)
        return 0;
    int fd = c->fd;
    c->fd = -1;
    c->srv = NULL;
    if (s->epfd >= 0)
        (void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, fd, &(struct epoll_event){0});
    (void)close(fd);
    if (fd < s->nconns_cap && s->conns[fd] == c) {
        s->conns[fd] = NULL;
        s->nconns--;
        Py_DECREF(c);          /* the table's reference */
    }
    Py_CLEAR(c->out);
    PyObject *lost = c->on_lost;
    c->on_lost = NULL;
    Py_CLEAR(c->on_data);
    int rc = 0;
    if (lost != NULL) {
        PyObject *r = PyObject_CallOneArg(lost, exc ? exc : Py_None);
        Py_DECREF(lost);
        if (r == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception))
                rc = -1;
            else {                      /* reported, the server goes on */
                PyObject *e = take_raised();
                PyObject *rr = PyObject_CallFunctionObjArgs(s->on_error, (PyObject *)c, e, NULL);
                Py_DECREF(e);
                if (rr == NULL)
                    rc = -1;
                Py_XDECREF(rr);
            }
        }
        Py_XDECREF(r);
    }
    Py_CLEAR(c->proto);
    Py_DECREF(s);              /* c->srv's reference */
    return rc;
}

/* Close c after an OSError errno e (reset, EPIPE, ...). */
static int
conn_fail(ConnObject *c, int e)
{
    os_error(e);
    PyObject *exc = take_raised();
    int r = conn_finish(c, exc);
    Py_XDECREF(exc);
    return r;
}

/* A callback raised: an Exception closes the connection (if it is still
 * open) and is reported through s->on_error; anything else (Cancelled,
 * KeyboardInterrupt) stays set: -1. */
static int
conn_callback_failed(ServerObject *s, ConnObject *c)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyObject *e = take_raised();
    int r = conn_finish(c, e);
    if (r == 0) {
        PyObject *rr = PyObject_CallFunctionObjArgs(s->on_error, (PyObject *)c, e, NULL);
        if (rr == NULL)
            r = -1;
        Py_XDECREF(rr);
    }
    Py_DECREF(e);
    return r;
}

/* Send what is pending; 0 (sent or parked in the kernel's buffer), -1 with
 * a Python error only for a BaseException from connection_lost. */
static int
conn_flush(ConnObject *c)
{
    if (c->out != NULL) {
        Py_ssize_t len = PyBytes_GET_SIZE(c->out);
        int err;
        c->out_off += engine_send_nb(c->fd, PyBytes_AS_STRING(c->out) + c->out_off,
                                     len - c->out_off, &err);
        if (err != 0)
            return conn_fail(c, err);
        if (c->out_off == len) {
            Py_CLEAR(c->out);
            c->out_off = 0;
        }
    }
    if (c->out == NULL && c->closing)
        return conn_finish(c, NULL);
    uint32_t was_paused = c->paused;
    c->paused = c->out != NULL && PyBytes_GET_SIZE(c->out) - c->out_off > HIGH_WATER;
    /* the interest changes only when output starts or stops pending, or
     * reading pauses or resumes: not on the usual path (sent at once) */
    if (c->srv != NULL && conn_ctl(c, EPOLL_CTL_MOD) < 0)
        return conn_fail(c, errno);
    (void)was_paused;
    return 0;
}

/* Queue data (any bytes-like) after what is pending and send what can be. */
static int
conn_write(ConnObject *c, PyObject *data)
{
    if (c->out == NULL) {
        Py_buffer b;
        if (engine_get_bytes(data, &b) < 0)
            return -1;
        int e;
        Py_ssize_t off = engine_send_nb(c->fd, b.buf, b.len, &e);
        if (e != 0) {
            if (b.obj != NULL)
                PyBuffer_Release(&b);
            return conn_fail(c, e);
        }
        if (off == b.len) {            /* the usual path: all sent at once */
            if (b.obj != NULL)
                PyBuffer_Release(&b);
            return 0;
        }
        c->out = PyBytes_FromStringAndSize((char *)b.buf + off, b.len - off);
        if (b.obj != NULL)
            PyBuffer_Release(&b);
        if (c->out == NULL)
            return -1;
        c->out_off = 0;
        return conn_flush(c);
    }
    /* Output is pending already: append (rare; the copy keeps one buffer). */
    PyObject *rest = PyBytes_FromStringAndSize(PyBytes_AS_STRING(c->out) + c->out_off,
                                               PyBytes_GET_SIZE(c->out) - c->out_off);
    if (rest == NULL)
        return -1;
    PyObject *more = PyBytes_FromObject(data);
    if (more == NULL) {
        Py_DECREF(rest);
        return -1;
    }
    PyBytes_ConcatAndDel(&rest, more);
    if (rest == NULL)
        return -1;
    Py_SETREF(c->out, rest);
    c->out_off = 0;
    return conn_flush(c);
}

static int
conn_owner_check(ConnObject *c)
{
    if (c->srv == NULL) {
        io_raise_closed("this connection was closed");
        return -1;
    }
    if (c->srv->w != tls_worker) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a serve_tcp_protocol connection is used only on its server's CPU "
                        "(in its callbacks, or a green thread pinned there)");
        return -1;
    }
    return 0;
}

static PyObject *
conn_write_method(ConnObject *c, PyObject *data)
{
    if (conn_owner_check(c) < 0)
        return NULL;
    if (c->closing) {
        io_raise_closed("this connection is closing");
        return NULL;
    }
    if (conn_write(c, data) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
conn_close_method(ConnObject *c, PyObject *unused)
{
    if (c->srv == NULL)
        Py_RETURN_NONE;                /* closing twice is a no-op */
    if (conn_owner_check(c) < 0)
        return NULL;
    c->closing = 1;
    /* In data_received, what it returns is still sent: server_read closes. */
    if (!c->in_callback && c->out == NULL && conn_finish(c, NULL) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
conn_fileno(ConnObject *c, PyObject *unused)
{
    return PyLong_FromLong(c->fd);
}

static PyObject *
conn_get_closed(ConnObject *c, void *unused)
{
    return PyBool_FromLong(c->srv == NULL || c->closing);
}

static PyObject *
conn_get_protocol(ConnObject *c, void *unused)
{
    return Py_NewRef(c->proto ? c->proto : Py_None);
}

static int
conn_traverse(ConnObject *c, visitproc visit, void *arg)
{
    Py_VISIT(c->srv);
    Py_VISIT(c->proto);
    Py_VISIT(c->on_data);
    Py_VISIT(c->on_lost);
    return 0;
}

static int
conn_clear(ConnObject *c)
{
    Py_CLEAR(c->proto);
    Py_CLEAR(c->on_data);
    Py_CLEAR(c->on_lost);
    Py_CLEAR(c->out);
    Py_CLEAR(c->srv);          /* the fd is the server's to close (its table) */
    return 0;
}

static void
conn_dealloc(ConnObject *c)
{
    PyObject_GC_UnTrack(c);
    if (c->srv == NULL && c->fd >= 0)      /* never reached the table */
        (void)close(c->fd);
    conn_clear(c);
    PyObject_GC_Del(c);
}

static PyObject *
conn_repr(ConnObject *c)
{
    return PyUnicode_FromFormat("<osvrt.net.Connection fd=%d%s>", c->fd,
                                c->srv == NULL ? " closed" : "");
}

static PyMethodDef conn_methods[] = {
    {"write", (PyCFunction)conn_write_method, METH_O,
     "write(data)\n--\n\nSend data after anything written before it (queued while the\n"
     "socket's buffer is full; reading pauses while more than 256 KiB wait)."},
    {"close", (PyCFunction)conn_close_method, METH_NOARGS,
     "close()\n--\n\nClose once the output written so far is sent; then\n"
     "connection_lost(None).  Closing twice is a no-op."},
    {"fileno", (PyCFunction)conn_fileno, METH_NOARGS, "fileno()\n--\n\nThe socket's fd (-1 once closed)."},
    {NULL}
};

static PyGetSetDef conn_getset[] = {
    {"closed", (getter)conn_get_closed, NULL, "True once closed or closing", NULL},
    {"protocol", (getter)conn_get_protocol, NULL, "what the factory returned for it", NULL},
    {NULL}
};

PyTypeObject Conn_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "osvrt._engine.Connection",
    .tp_basicsize = sizeof(ConnObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)conn_dealloc,
    .tp_traverse = (traverseproc)conn_traverse,
    .tp_clear = (inquiry)conn_clear,
    .tp_repr = (reprfunc)conn_repr,
    .tp_methods = conn_methods,
    .tp_getset = conn_getset,
};

/* ---- the server ------------------------------------------------------------- */

static int
server_table_put(ServerObject *s, ConnObject *c)
{
    if (c->fd >= s->nconns_cap) {
        int n = s->nconns_cap ? s->nconns_cap : 64;
        while (n <= c->fd)
            n *= 2;
        ConnObject **g = PyMem_Realloc(s->conns, sizeof(*g) * (size_t)n);
        if (g == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memset(g + s->nconns_cap, 0, sizeof(*g) * (size_t)(n - s->nconns_cap));
        s->conns = g;
        s->nconns_cap = n;
    }
    s->conns[c->fd] = (ConnObject *)Py_NewRef(c);
    s->nconns++;
    return 0;
}

/* A new connection fd: its Conn in the table and the inner epoll, then its
 * protocol (factory(conn), which may already write or close).  -1 only for
 * a BaseException from the factory. */
static int
server_adopt(ServerObject *s, int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);   /* Unix: ENOTSUP */
    ConnObject *c = PyObject_GC_New(ConnObject, &Conn_Type);
    if (c == NULL) {
        close(fd);
        return -1;
    }
    c->srv = NULL;
    c->fd = fd;
    c->proto = c->on_data = c->on_lost = c->out = NULL;
    c->out_off = 0;
    c->closing = c->paused = c->in_callback = c->eof = 0;
    PyObject_GC_Track(c);
    if (server_table_put(s, c) < 0) {
        Py_DECREF(c);                 /* dealloc closes the fd */
        return -1;
    }
    c->srv = (ServerObject *)Py_NewRef(s);
    if (conn_ctl(c, EPOLL_CTL_ADD) < 0) {
        int rc = conn_fail(c, errno);
        Py_DECREF(c);
        return rc;
    }
    s->accepted++;
    int rc = 0;
    PyObject *proto = PyObject_CallOneArg(s->factory, (PyObject *)c);
    if (proto == NULL)
        goto failed;
    if (c->srv == NULL) {             /* the factory closed it */
        Py_DECREF(proto);
        goto done;
    }
    c->proto = proto;
    if ((c->on_data = PyObject_GetAttrString(proto, "data_received")) == NULL
        || optional_attr(proto, "connection_lost", &c->on_lost) < 0)
        goto failed;
    goto done;
failed:
    rc = conn_callback_failed(s, c);
done:
    Py_DECREF(c);
    return rc;
}

static int
server_accept(ServerObject *s)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EAGAIN || e == EWOULDBLOCK)
                return 0;
            if (e == EINTR || e == ECONNABORTED || e == EPROTO)
                continue;             /* the peer gave up before we accepted: next one */
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
                /* The pending connection stays queued, so the listener stays
                 * readable: take it out of the epoll and try again later
                 * (some connection will close and give an fd back). */
                (void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->lfd, &(struct epoll_event){0});
                s->accept_paused_until = osvrt_clock() + ACCEPT_RETRY;
                os_error(e);
                PyObject *exc = take_raised();
                PyObject *rr = PyObject_CallFunctionObjArgs(s->on_error, Py_None, exc, NULL);
                Py_DECREF(exc);
                if (rr == NULL)
                    return -1;
                Py_DECREF(rr);
                return 0;
            }
            os_error(e);              /* EBADF (closed under us), EINVAL: the end */
            return -1;
        }
        if (server_adopt(s, fd) < 0)
            return -1;
    }
    return 0;
}

/* One read and its callback for connection c.  -1: a BaseException.  c is
 * held for the whole call: closing it drops the table's reference, which
 * may be the last. */
static int
server_read(ServerObject *s, ConnObject *c, char *buf)
{
    ssize_t r;
    int rc = 0;
    Py_INCREF(c);
    do
        r = recv(c->fd, buf, READ_SIZE, 0);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            rc = conn_fail(c, errno);
        goto done;
    }
    if (r == 0) {                     /* EOF: send what is pending, then close */
        c->eof = 1;
        c->closing = 1;
        rc = c->out == NULL ? conn_finish(c, NULL) : conn_flush(c);
        goto done;
    }
    if (c->closing)
        goto done;    /* closed by the application: read on to EOF (a close with unread
                       * input would be a RST), but no data_received after close() */
    PyObject *data = PyBytes_FromStringAndSize(buf, r);
    if (data == NULL) {
        rc = -1;
        goto done;
    }
    c->in_callback = 1;
    PyObject *reply = PyObject_CallOneArg(c->on_data, data);
    c->in_callback = 0;
    Py_DECREF(data);
    s->requests++;
    if (reply == NULL)
        rc = conn_callback_failed(s, c);
    else {
        if (reply != Py_None && c->srv != NULL
            && !(PyBytes_CheckExact(reply) && PyBytes_GET_SIZE(reply) == 0)
            && conn_write(c, reply) < 0)
            rc = conn_callback_failed(s, c);
        Py_DECREF(reply);
        /* close() in the callback: now that its reply is queued */
        if (rc == 0 && c->srv != NULL && c->closing && c->out == NULL)
            rc = conn_finish(c, NULL);
    }
done:
    Py_DECREF(c);
    return rc;
}

static int
server_event(ServerObject *s, struct epoll_event *ev, char *buf)
{
    int fd = ev->data.fd;
    if (fd == s->lfd)
        return server_accept(s);
    if (fd < 0 || fd >= s->nconns_cap || s->conns[fd] == NULL)
        return 0;                     /* closed in this batch */
    ConnObject *c = s->conns[fd];
    if ((ev->events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && c->out != NULL) {
        Py_INCREF(c);
        int r = conn_flush(c);
        int gone = c->srv == NULL;
        Py_DECREF(c);
        if (r < 0 || gone)
            return r;
    }
    if ((ev->events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) && !c->paused)
        return server_read(s, c, buf);
    return 0;
}

static void
server_close_all(ServerObject *s)
{
    for (int fd = 0; fd < s->nconns_cap; fd++) {
        ConnObject *c = s->conns ? s->conns[fd] : NULL;
        if (c == NULL)
            continue;
        Py_INCREF(c);
        PyObject *exc = take_raised();     /* keep the server's own */
        if (conn_finish(c, NULL) < 0)
            PyErr_WriteUnraisable((PyObject *)c);
        put_raised(exc);
        Py_DECREF(c);
    }
    if (s->epfd >= 0) {
        /* The worker's epoll holds the inner epfd's edge-triggered slot: it
         * must forget it before the number can be reused (io.c). */
        if (s->w != NULL) {
            PyObject *exc = take_raised();
            if (io_notify_closing(s->w, s->epfd) < 0)
                PyErr_WriteUnraisable((PyObject *)s);
            put_raised(exc);
        }
        (void)close(s->epfd);
        s->epfd = -1;
    }
    s->step = 2;
}

/* Yield tk to the loop: 1 parked (*result the trap), 0 over at once, -1 error. */
static int
server_park(ServerObject *s, TicketObject *tk, PyObject **result)
{
    if (tk == NULL)
        return -1;
    PySendResult r = Ticket_Type.tp_as_async->am_send((PyObject *)tk, Py_None, result);
    if (r != PYGEN_NEXT) {
        if (r == PYGEN_RETURN)
            Py_DECREF(*result);
        Py_DECREF(tk);
        return r == PYGEN_RETURN ? 0 : -1;
    }
    s->sub = (PyObject *)tk;
    s->step = 1;
    return 1;
}

static PySendResult
server_end(ServerObject *s)
{
    server_close_all(s);
    return PYGEN_ERROR;
}

static PySendResult
server_am_send(ServerObject *s, PyObject *arg, PyObject **result)
{
    WorkerObject *w = tls_worker;
    if (s->step == 2) {
        PyErr_SetString(PyExc_RuntimeError, "an osvrt server can be awaited only once");
        return PYGEN_ERROR;
    }
    if (w == NULL || w->current == NULL) {
        outside_error();
        return server_end(s);
    }
    if (s->w != NULL && s->w != w) {
        PyErr_SetString(PyExc_RuntimeError, "a serve_tcp_protocol server moved to another CPU "
                                            "(its green thread must stay pinned)");
        return server_end(s);
    }
    s->w = w;
    if (s->step == 1) {
        PyObject *sub = s->sub, *r;
        s->sub = NULL;
        s->step = 0;
        PySendResult st = Ticket_Type.tp_as_async->am_send(sub, arg, &r);
        Py_DECREF(sub);
        if (st == PYGEN_ERROR) {
            if (!PyErr_ExceptionMatches(PyExc_TimeoutError))
                return server_end(s);
            PyErr_Clear();             /* the accept pause is over */
        } else
            Py_DECREF(r);
    }
    s->budget = SERVE_BUDGET;
    if (w->scratch == NULL && (w->scratch = PyMem_RawMalloc(READ_SIZE)) == NULL) {
        PyErr_NoMemory();
        return server_end(s);
    }
    for (;;) {
        if (s->accept_paused_until > 0 && osvrt_clock() >= s->accept_paused_until) {
            struct epoll_event e = {.events = EPOLLIN, .data.fd = s->lfd};
            s->accept_paused_until = 0;
            if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->lfd, &e) < 0 && errno != EEXIST) {
                os_error(errno);
                return server_end(s);
            }
        }
        if (s->iev >= s->nev) {
            int n;
            do
                n = epoll_wait(s->epfd, s->evs, SERVE_EVENTS, 0);
            while (n < 0 && errno == EINTR);
            if (n < 0) {
                os_error(errno);
                return server_end(s);
            }
            s->nev = n;
            s->iev = 0;
            if (n == 0) {
                /* Nothing ready: park until the inner epoll is (or the
                 * accept pause ends).  The events of the inner epoll come as
                 * edges of its fd in the worker's epoll (io.c). */
                /* No idle spin before that sleep: what wakes us is a remote
                 * client's next request, seldom within the spin (measured
                 * with wrk and redis-benchmark: the spin cost the server
                 * ~1 us of CPU per request, docs/design.md). */
                w->idle_nospin = 1;
                TicketObject *tk = ticket_new(NULL, TK_IO);
                if (tk != NULL) {
                    tk->fd = s->epfd;
                    tk->ioev = EPOLLIN | EPOLLET;
                    if (s->accept_paused_until > 0) {
                        double left = s->accept_paused_until - osvrt_clock();
                        tk->delay = left > 1e-6 ? left : 1e-6;
                    }
                }
                int p = server_park(s, tk, result);
                if (p > 0)
                    return PYGEN_NEXT;
                if (p < 0)
                    return server_end(s);
                continue;
            }
        }
        while (s->iev < s->nev) {
            if (--s->budget < 0) {    /* spent: let the fair rule pick */
                int p = server_park(s, ticket_new(NULL, TK_YIELD), result);
                if (p > 0)
                    return PYGEN_NEXT;
                if (p < 0)
                    return server_end(s);
                s->budget = SERVE_BUDGET;
            }
            struct epoll_event *ev = &s->evs[s->iev++];
            if (server_event(s, ev, w->scratch) < 0)
                return server_end(s);
        }
    }
}

static PyObject *
server_await(PyObject *s)
{
    return Py_NewRef(s);
}

static PyObject *
server_send_method(ServerObject *s, PyObject *arg)
{
    PyObject *res;
    PySendResult r = server_am_send(s, arg, &res);
    return send_result_as_iter(r, res);
}

static PyObject *
server_iternext(ServerObject *s)
{
    return server_send_method(s, Py_None);
}

/* A cancel thrown in while parked: the wait ends through the ticket's
 * throw, every connection is closed, and the exception goes on up. */
static PyObject *
server_throw(ServerObject *s, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw expects 1 to 3 arguments");
        return NULL;
    }
    PyObject *sub = s->sub;
    s->sub = NULL;
    PyObject *r = throw_into_sub(sub, args, nargs);     /* NULL, raised */
    assert(r == NULL);
    (void)r;
    server_close_all(s);
    return NULL;
}

static PyObject *
server_close(ServerObject *s, PyObject *unused)
{
    PyObject *sub = s->sub;
    s->sub = NULL;
    if (sub != NULL) {
        PyObject *r = PyObject_CallMethod(sub, "close", NULL);
        Py_XDECREF(r);
        Py_DECREF(sub);
        if (r == NULL) {
            server_close_all(s);
            return NULL;
        }
    }
    server_close_all(s);
    Py_RETURN_NONE;
}

static PyObject *
server_stats(ServerObject *s, PyObject *unused)
{
    return Py_BuildValue("{sKsKsn}", "accepted", (unsigned long long)s->accepted,
                         "reads", (unsigned long long)s->requests, "connections", s->nconns);
}

static int
server_traverse(ServerObject *s, visitproc visit, void *arg)
{
    Py_VISIT(s->factory);
    Py_VISIT(s->on_error);
    Py_VISIT(s->sub);
    for (int fd = 0; fd < s->nconns_cap; fd++)
        Py_VISIT(s->conns[fd]);
    return 0;
}

static int
server_clear(ServerObject *s)
{
    Py_CLEAR(s->sub);
    for (int fd = 0; fd < s->nconns_cap; fd++) {
        ConnObject *c = s->conns[fd];
        if (c != NULL) {
            s->conns[fd] = NULL;
            if (c->fd >= 0)
                (void)close(c->fd);
            c->fd = -1;
            Py_DECREF(c);
        }
    }
    s->nconns = 0;
    Py_CLEAR(s->factory);
    Py_CLEAR(s->on_error);
    return 0;
}

static void
server_dealloc(ServerObject *s)
{
    PyObject_GC_UnTrack(s);
    server_clear(s);
    if (s->epfd >= 0)
        (void)close(s->epfd);
    PyMem_Free(s->conns);
    PyObject_GC_Del(s);
}

static PyAsyncMethods server_as_async = {
    .am_await = server_await,
    .am_send = (sendfunc)server_am_send,
};

static PyMethodDef server_methods[] = {
    {"send", (PyCFunction)server_send_method, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))server_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)server_close, METH_NOARGS, NULL},
    {"stats", (PyCFunction)server_stats, METH_NOARGS,
     "stats()\n--\n\n{'accepted', 'reads', 'connections'} so far."},
    {NULL}
};

PyTypeObject Server_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "osvrt._engine.ProtocolServer",
    .tp_basicsize = sizeof(ServerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)server_dealloc,
    .tp_traverse = (traverseproc)server_traverse,
    .tp_clear = (inquiry)server_clear,
    .tp_as_async = &server_as_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)server_iternext,
    .tp_methods = server_methods,
};

/* tcp_serve(listen_fd, factory, on_error) -> an awaitable that serves until
 * cancelled (the listener must be non-blocking and listening). */
static PyObject *
m_tcp_serve(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "tcp_serve(listen_fd, factory, on_error)");
    long lfd = PyLong_AsLong(args[0]);
    if (lfd == -1 && PyErr_Occurred())
        return NULL;
    if (lfd < 0 || lfd > INT_MAX)
        return PyErr_Format(PyExc_ValueError, "not a listening socket's fd: %R", args[0]);
    if (!PyCallable_Check(args[1]) || !PyCallable_Check(args[2]))
        return PyErr_Format(PyExc_TypeError, "factory and on_error must be callable, not %R, %R",
                            args[1], args[2]);
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        return os_error(errno);
    io_fd_adopted(epfd);          /* its wait is edge-triggered: no slot of an earlier file */
    struct epoll_event e = {.events = EPOLLIN, .data.fd = (int)lfd};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, (int)lfd, &e) < 0) {
        int err = errno;
        close(epfd);
        return os_error(err);
    }
    ServerObject *s = PyObject_GC_New(ServerObject, &Server_Type);
    if (s == NULL) {
        close(epfd);
        return NULL;
    }
    s->epfd = epfd;
    s->lfd = (int)lfd;
    s->w = NULL;
    s->factory = Py_NewRef(args[1]);
    s->on_error = Py_NewRef(args[2]);
    s->conns = NULL;
    s->nconns_cap = 0;
    s->nconns = 0;
    s->sub = NULL;
    s->step = 0;
    s->budget = SERVE_BUDGET;
    s->accept_paused_until = 0;
    s->nev = s->iev = 0;
    s->accepted = s->requests = 0;
    PyObject_GC_Track(s);
    return (PyObject *)s;
}

PyMethodDef serve_module_methods[] = {
    {"tcp_serve", (PyCFunction)(void (*)(void))m_tcp_serve, METH_FASTCALL,
     "tcp_serve($module, listen_fd, factory, on_error, /)\n--\n\nAn awaitable that accepts\n"
     "on the listener and serves each connection by its protocol (factory(conn)), in C;\n"
     "see osvrt.net.serve_tcp_protocol."},
    {NULL}
};
