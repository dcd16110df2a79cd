/* aiotx.c - the asyncio loop's TCP/Unix stream transports, their data path
 * in C (osvrt/aio/transport.py is the Python half).
 *
 * asyncio's selector transport costs, per readiness: the selector's key
 * lookup, a Handle queued and run (a context switch into Handle._run), the
 * Python frame of _read_ready, socket.recv through the socket module, then
 * data_received; and per write(): a Python frame and socket.send.  Here a
 * transport's fd sits in the loop's epoll with data.fd = fd, and the loop's
 * C turn (aio.c, poll_fds) finds its TxCore in a table indexed by fd and
 * calls txcore_event: recv into the loop's read buffer, then
 * protocol.data_received(bytes) (or get_buffer/recv_into/buffer_updated for
 * a BufferedProtocol), with no handle object and no Python frame of ours.
 * write() is TxCore.write, installed on the transport instance: send at
 * once; only what the kernel did not take is buffered here, and EPOLLOUT is
 * asked for until it is sent.  The epoll registration is level-triggered
 * and changes only when reading pauses or resumes or output starts or stops
 * pending, so the usual request costs no epoll_ctl.
 *
 * Everything else (close, abort, write_eof, errors, connection_lost exactly
 * once, extra info, sendfile's hand-over) is asyncio's own
 * _SelectorSocketTransport code: the Python half routes the loop's
 * _add_reader/_remove_reader/_remove_writer for this fd to set_reading and
 * the buffer, and keeps asyncio's fields (_conn_lost, _eof, _empty_waiter,
 * _protocol_paused, water marks) here, as properties.  Error reports and the
 * rare transitions (EOF, pause/resume_writing, drained) are calls into that
 * Python code, so their semantics are asyncio's by construction.
 *
 * Contexts: asyncio runs _read_ready and _write_ready in the Context of
 * the reader's and writer's Handle, a copy of the one current when the
 * reader was added (the transport's start, each resume_reading) and when
 * the writer was (a write() that found the buffer empty and left some of
 * it).  So do we: set_reading(True) and that write() keep such a copy, and
 * the turn enters it around the read and the flush, so data_received,
 * get_buffer, buffer_updated, eof_received, resume_writing and the
 * connection_lost they lead to see, and set, what asyncio's would.
 *
 * Ownership: a TxCore belongs to its loop and is used only on the loop's OS
 * thread (asyncio's rule: transports are not thread-safe); the table holds a
 * reference to every TxCore registered in the epoll (asyncio's selector key
 * holds its transport's handle the same way), dropped when it leaves.
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "engine.h"

#define TX_READ_SIZE (256 * 1024)   /* asyncio's max_size for one recv() */
#define TX_LOG_LOST_WRITES 5        /* asyncio's LOG_THRESHOLD_FOR_CONNLOST_WRITES */
/* Output buffer bytes a transport may keep allocated once its burst is sent
 * (asyncio's default high-water mark: the usual backlog never reallocates). */
#define TX_KEEP_CAP (64 * 1024)

typedef struct {
    PyObject_HEAD
    PyObject *transport;       /* owner: the Python transport (its callbacks) */
    PyObject *loop_core;       /* owner: the LoopCore whose table has us */
    PyObject *on_data;         /* owner: data_received, or buffer_updated (buffered) */
    PyObject *get_buffer;      /* owner: get_buffer when the protocol is buffered */
    PyObject *waiter;          /* owner: asyncio's _empty_waiter (sendfile), or NULL */
    PyObject *read_ctx;        /* owner: the Context reading runs in, or NULL (not reading) */
    PyObject *write_ctx;       /* owner: the Context flushing runs in, or NULL */
    TxTable *table;            /* the loop core's table (lives while loop_core does) */
    int fd;                    /* -1 once detached */
    uint32_t mask;             /* events registered in the epoll; 0: not registered */
    char reading;              /* asyncio's reader is added (not paused, not closing) */
    char eof;                  /* write_eof() was called */
    char proto_paused;         /* protocol.pause_writing() was called */
    Py_ssize_t conn_lost;      /* asyncio's _conn_lost */
    Py_ssize_t high, low;      /* write buffer water marks */
    char *out;                 /* pending output: out[off:len] */
    Py_ssize_t off, len, cap;
} TxCoreObject;

static PyObject *str_fatal, *str_on_eof, *str_pause, *str_resume, *str_drained,
                *str_write_failed, *str_lost_write, *minus_one;

static PyObject *
intern_names(void)
{
    if (str_fatal != NULL)
        return str_fatal;
    str_on_eof = PyUnicode_InternFromString("_read_ready__on_eof");
    str_pause = PyUnicode_InternFromString("_maybe_pause_protocol");
    str_resume = PyUnicode_InternFromString("_maybe_resume_protocol");
    str_drained = PyUnicode_InternFromString("_osvrt_drained");
    str_write_failed = PyUnicode_InternFromString("_osvrt_write_failed");
    str_lost_write = PyUnicode_InternFromString("_osvrt_lost_write");
    minus_one = PyLong_FromLong(-1);
    if (minus_one && str_on_eof && str_pause && str_resume && str_drained && str_write_failed
        && str_lost_write)
        str_fatal = PyUnicode_InternFromString("_fatal_error");
    return str_fatal;
}

/* ---- the loop's table: fd -> TxCore ---------------------------------------- */

static int
table_put(TxTable *t, int fd, PyObject *tx)
{
    if (fd >= t->cap) {
        int n = t->cap ? t->cap : 64;
        while (n <= fd)
            n *= 2;
        PyObject **g = PyMem_Realloc(t->slots, sizeof(*g) * (size_t)n);
        if (g == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memset(g + t->cap, 0, sizeof(*g) * (size_t)(n - t->cap));
        t->slots = g;
        t->cap = n;
    }
    Py_XSETREF(t->slots[fd], Py_NewRef(tx));
    return 0;
}

static void
table_drop(TxTable *t, int fd, PyObject *tx)
{
    if (fd >= 0 && fd < t->cap && t->slots[fd] == tx)
        Py_CLEAR(t->slots[fd]);
}

void
txtable_clear(TxTable *t)
{
    for (int i = 0; i < t->cap; i++)
        Py_CLEAR(t->slots[i]);
}

void
txtable_free(TxTable *t)
{
    txtable_clear(t);
    PyMem_Free(t->slots);
    PyMem_Free(t->rbuf);
    t->slots = NULL;
    t->rbuf = NULL;
    t->cap = 0;
}

int
txtable_traverse(TxTable *t, visitproc visit, void *arg)
{
    for (int i = 0; i < t->cap; i++)
        Py_VISIT(t->slots[i]);
    return 0;
}

/* ---- registration ------------------------------------------------------------ */

static int
tx_pending(TxCoreObject *tx)
{
    return tx->len > tx->off;
}

/* The epoll registration made to match what is wanted: EPOLLIN while
 * reading, EPOLLOUT while output is pending; out of the epoll (and the
 * table) when neither: a registration with no events would still report
 * hang-ups and errors, every turn. */
static int
tx_sync(TxCoreObject *tx)
{
    uint32_t want = tx->fd < 0 ? 0
                    : (tx->reading ? EPOLLIN : 0) | (tx_pending(tx) ? EPOLLOUT : 0);
    if (want == tx->mask)
        return 0;
    if (tx->table == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "TxCore used before __init__");
        return -1;
    }
    if (tx->table->epfd < 0) {
        /* the loop closed its epoll: nothing registered any more (its fd
         * number may be another file's now: never touched) */
        tx->mask = 0;
        if (want == 0)
            return 0;
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return -1;
    }
    int op = want == 0 ? EPOLL_CTL_DEL : tx->mask == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    struct epoll_event e = {.events = want, .data.fd = tx->fd};
    if (op == EPOLL_CTL_ADD && table_put(tx->table, tx->fd, (PyObject *)tx) < 0)
        return -1;
    if (epoll_ctl(tx->table->epfd, op, tx->fd, &e) < 0 && !(op == EPOLL_CTL_DEL)) {
        int err = errno;
        if (op == EPOLL_CTL_ADD)
            table_drop(tx->table, tx->fd, (PyObject *)tx);
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    tx->mask = want;
    if (want == 0)
        table_drop(tx->table, tx->fd, (PyObject *)tx);   /* may free tx: last */
    return 0;
}

/* ---- calls into the Python half --------------------------------------------- */

/* A raised exception: SystemExit and KeyboardInterrupt stay raised (-1: they
 * leave the loop's turn, as from asyncio's handle); anything else goes to
 * transport._fatal_error(exc, message), asyncio's report and force-close. */
static int
tx_report(TxCoreObject *tx, const char *message)
{
    if (PyErr_ExceptionMatches(PyExc_SystemExit)
        || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return -1;
    PyObject *exc = take_raised();
    PyObject *msg = PyUnicode_FromString(message);
    PyObject *r = msg ? PyObject_CallMethodObjArgs(tx->transport, str_fatal, exc, msg, NULL)
                      : NULL;
    Py_DECREF(exc);
    Py_XDECREF(msg);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static int
tx_report_errno(TxCoreObject *tx, int err, const char *message)
{
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    return tx_report(tx, message);
}

static int
tx_call(TxCoreObject *tx, PyObject *name, PyObject *arg)
{
    PyObject *r = PyObject_CallMethodObjArgs(tx->transport, name, arg, NULL);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* ---- reading ----------------------------------------------------------------- */

static ssize_t
tx_recv(TxCoreObject *tx, char *buf, size_t n)
{
    ssize_t r;
    do
        r = recv(tx->fd, buf, n, MSG_DONTWAIT);   /* cannot block: the GIL stays held */
    while (r < 0 && errno == EINTR);
    return r;
}

/* One recv for a BufferedProtocol: asyncio's _read_ready__get_buffer. */
static int
tx_read_into(TxCoreObject *tx)
{
    /* Our own references across each call: the protocol may set_protocol()
     * inside it, which drops the transport's (as tx_read's on_data). */
    PyObject *get_buffer = Py_NewRef(tx->get_buffer);
    PyObject *buf = PyObject_CallOneArg(get_buffer, minus_one);   /* asyncio: get_buffer(-1) */
    Py_DECREF(get_buffer);
    Py_buffer view;
    if (buf != NULL && PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE) == 0) {
        if (view.len == 0) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_RuntimeError, "get_buffer() returned an empty buffer");
        }
    }
    if (PyErr_Occurred()) {
        Py_XDECREF(buf);
        return tx_report(tx, "Fatal error: protocol.get_buffer() call failed.");
    }
    ssize_t n = tx_recv(tx, view.buf, (size_t)view.len);
    int err = errno;
    PyBuffer_Release(&view);
    Py_DECREF(buf);
    if (n < 0)
        return err == EAGAIN || err == EWOULDBLOCK ? 0
               : tx_report_errno(tx, err, "Fatal read error on socket transport");
    if (n == 0)
        return tx_call(tx, str_on_eof, NULL);
    PyObject *r, *on_data = Py_XNewRef(tx->on_data);
    if (on_data == NULL) {
        r = Py_NewRef(Py_None);       /* get_buffer ended the reading: nobody to tell */
    } else {
        PyObject *nb = PyLong_FromSsize_t(n);
        r = nb ? PyObject_CallOneArg(on_data, nb) : NULL;
        Py_XDECREF(nb);
        Py_DECREF(on_data);
    }
    if (r == NULL)
        return tx_report(tx, "Fatal error: protocol.buffer_updated() call failed.");
    Py_DECREF(r);
    return 0;
}

/* One recv and data_received: asyncio's _read_ready__data_received. */
static int
tx_read(TxCoreObject *tx)
{
    if (tx->conn_lost || tx->on_data == NULL)
        return 0;
    if (tx->get_buffer != NULL)
        return tx_read_into(tx);
    TxTable *t = tx->table;
    if (t->rbuf == NULL && (t->rbuf = PyMem_Malloc(TX_READ_SIZE)) == NULL) {
        PyErr_NoMemory();
        return tx_report(tx, "Fatal read error on socket transport");
    }
    ssize_t n = tx_recv(tx, t->rbuf, TX_READ_SIZE);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0
               : tx_report_errno(tx, errno, "Fatal read error on socket transport");
    if (n == 0)
        return tx_call(tx, str_on_eof, NULL);
    PyObject *data = PyBytes_FromStringAndSize(t->rbuf, n);
    if (data == NULL)
        return tx_report(tx, "Fatal read error on socket transport");
    PyObject *on_data = Py_NewRef(tx->on_data);   /* data_received may set_protocol */
    PyObject *r = PyObject_CallOneArg(on_data, data);
    Py_DECREF(on_data);
    Py_DECREF(data);
    if (r == NULL)
        return tx_report(tx, "Fatal error: protocol.data_received() call failed.");
    Py_DECREF(r);
    return 0;
}

/* ---- writing ------------------------------------------------------------------ */

/* Keep data[0:n] after the pending output. */
static int
tx_buffer(TxCoreObject *tx, const char *data, Py_ssize_t n)
{
    if (tx->off > 0 && tx->off == tx->len)
        tx->off = tx->len = 0;
    if (tx->len + n > tx->cap) {
        if (tx->off > 0) {             /* slide what is pending to the front */
            memmove(tx->out, tx->out + tx->off, (size_t)(tx->len - tx->off));
            tx->len -= tx->off;
            tx->off = 0;
        }
        if (tx->len + n > tx->cap) {
            Py_ssize_t cap = tx->cap ? tx->cap : 4096;
            while (cap < tx->len + n)
                cap *= 2;
            char *g = PyMem_Realloc(tx->out, (size_t)cap);
            if (g == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            tx->out = g;
            tx->cap = cap;
        }
    }
    memcpy(tx->out + tx->len, data, (size_t)n);
    tx->len += n;
    return 0;
}

static void
tx_drop_output(TxCoreObject *tx)
{
    PyMem_Free(tx->out);
    tx->out = NULL;
    tx->off = tx->len = tx->cap = 0;
    Py_CLEAR(tx->write_ctx);           /* asyncio's writer Handle goes with its output */
}

/* Send p[0:n] at once, and copy what the kernel did not take after the
 * pending output; *began 1 when that started the pending output (asyncio
 * adds its writer there, a Handle with a copy of this Context: the caller
 * copies it once the buffer is released).  No Python code runs here, not
 * even an allocation that may collect garbage (a Context copy may, on 3.11):
 * the caller's buffer is still exported, and a callback (pause_writing, an
 * error report, a __del__) that resized the bytearray being written would
 * get BufferError.  0, or -1 with *err the send's errno, or *err 0 and a
 * Python exception set. */
static int
tx_send_or_keep(TxCoreObject *tx, const char *p, Py_ssize_t n, int *err, int *began)
{
    Py_ssize_t sent = 0;
    *err = 0;
    *began = 0;
    if (!tx_pending(tx)) {
        sent = engine_send_nb(tx->fd, p, n, err);
        if (*err != 0)
            return -1;
        if (sent == n)
            return 0;                 /* the usual path: all sent at once */
        *began = 1;
    }
    return tx_buffer(tx, p + sent, n - sent) < 0 || tx_sync(tx) < 0 ? -1 : 0;
}

/* The writer's Context (see tx_send_or_keep): a copy of the current one. */
static int
tx_keep_write_context(TxCoreObject *tx)
{
    PyObject *ctx = PyContext_CopyCurrent();
    if (ctx == NULL)
        return -1;
    Py_XSETREF(tx->write_ctx, ctx);
    return 0;
}

/* write()'s Python half, once the caller's buffer is released: the error
 * report, or pause_writing above the high-water mark. */
static int
tx_after_write(TxCoreObject *tx, int failed, int err)
{
    static const char message[] = "Fatal write error on socket transport";
    if (failed)
        return err != 0 ? tx_report_errno(tx, err, message) : tx_report(tx, message);
    if (!tx->proto_paused && tx->len - tx->off > tx->high)
        return tx_call(tx, str_pause, NULL);
    return 0;
}

/* asyncio's write() on a lost connection: counted, and logged past a few. */
static int
tx_lost_write(TxCoreObject *tx)
{
    int r = tx->conn_lost >= TX_LOG_LOST_WRITES ? tx_call(tx, str_lost_write, NULL) : 0;
    tx->conn_lost++;
    return r;
}

/* Give back most of a buffer that a burst grew while its tail trickles out:
 * when what is pending fits in a quarter of it, move that to the front of
 * one half as big (or smaller, down to TX_KEEP_CAP).  Growth doubles and
 * this halves at a quarter, so each byte is copied O(1) times overall. */
static void
tx_shrink(TxCoreObject *tx)
{
    Py_ssize_t pending = tx->len - tx->off, cap = tx->cap;
    while (cap > TX_KEEP_CAP && pending <= cap / 4)
        cap /= 2;
    if (cap == tx->cap)
        return;
    memmove(tx->out, tx->out + tx->off, (size_t)pending);
    tx->off = 0;
    tx->len = pending;
    char *g = PyMem_Realloc(tx->out, (size_t)cap);
    if (g != NULL) {                   /* else the bigger block stays: still correct */
        tx->out = g;
        tx->cap = cap;
    }
}

/* The fd is writable and output is pending: asyncio's _write_ready. */
static int
tx_flush(TxCoreObject *tx)
{
    if (tx->conn_lost)
        return 0;
    int err = 0;
    Py_ssize_t sent = engine_send_nb(tx->fd, tx->out + tx->off, tx->len - tx->off, &err);
    if (err != 0) {
        /* asyncio's order: the writer removed, the buffer cleared, then
         * _fatal_error and the empty waiter's exception (the Python half) */
        tx_drop_output(tx);
        if (tx_sync(tx) < 0)
            PyErr_Clear();            /* the fd is failing anyway: the report says why */
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        PyObject *exc = take_raised();
        int r = tx_call(tx, str_write_failed, exc);
        Py_DECREF(exc);
        return r;
    }
    tx->off += sent;
    if (tx->proto_paused && tx->len - tx->off <= tx->low && tx_call(tx, str_resume, NULL) < 0)
        return -1;
    if (tx_pending(tx)) {
        tx_shrink(tx);
        return 0;
    }
    if (tx->cap > TX_KEEP_CAP)
        tx_drop_output(tx);            /* a burst's peak is not held for good */
    tx->off = tx->len = 0;
    Py_CLEAR(tx->write_ctx);           /* (entered now: tx_in_context holds its own) */
    if (tx_sync(tx) < 0)
        return tx_report(tx, "Fatal write error on socket transport");
    return tx_call(tx, str_drained, NULL);     /* empty waiter, close, write_eof */
}

/* ---- the loop's turn: readiness of a transport's fd ----------------------- */

/* A protocol callback (connection_lost, data_received, ...) raised out of
 * this turn's read or write.  asyncio runs _read_ready/_write_ready in a
 * Handle, whose _run reports such an exception to the loop's exception
 * handler and goes on; so do we (LoopCore.report_transport_error; the
 * transport's own _loop may be None by now).  SystemExit and
 * KeyboardInterrupt end the turn, as in Handle._run.  1 reported, -1 not. */
static int
tx_report_raised(TxCoreObject *tx)
{
    PyObject *exc = take_raised();
    if (PyErr_GivenExceptionMatches(exc, PyExc_SystemExit)
        || PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt)) {
        put_raised(exc);
        return -1;
    }
    PyObject *r = PyObject_CallMethod(tx->loop_core, "report_transport_error", "OO",
                                      tx->transport, exc);
    Py_DECREF(exc);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 1;
}

/* step(tx) run in ctx (see "Contexts" above); ctx NULL: in the current one. */
static int
tx_in_context(TxCoreObject *tx, PyObject *ctx, int (*step)(TxCoreObject *))
{
    if (ctx == NULL)
        return step(tx);
    Py_INCREF(ctx);                    /* the step may replace it (resume_reading) */
    if (PyContext_Enter(ctx) < 0) {
        Py_DECREF(ctx);
        return -1;
    }
    int r = step(tx);
    /* reported outside ctx, as Handle._run does */
    PyObject *raised = r < 0 ? take_raised() : NULL;
    if (PyContext_Exit(ctx) < 0) {
        Py_XDECREF(raised);            /* a callback left ctx unbalanced: that error wins */
        r = -1;
    } else if (raised != NULL) {
        put_raised(raised);
    }
    Py_DECREF(ctx);
    return r;
}

int
txtable_dispatch(TxTable *t, int fd, uint32_t ev)
{
    if (fd < 0 || fd >= t->cap || t->slots[fd] == NULL)
        return 0;
    TxCoreObject *tx = (TxCoreObject *)Py_NewRef(t->slots[fd]);   /* callbacks may drop it */
    int r = 1;
    /* selectors.EpollSelector's rule: any event but EPOLLOUT makes the fd
     * readable (errors and hang-ups included), any but EPOLLIN writable. */
    if ((ev & ~(uint32_t)EPOLLOUT) && tx->reading && tx_in_context(tx, tx->read_ctx, tx_read) < 0)
        r = -1;
    if (r > 0 && (ev & ~(uint32_t)EPOLLIN) && tx->fd >= 0 && tx_pending(tx)
        && tx_in_context(tx, tx->write_ctx, tx_flush) < 0)
        r = -1;
    if (r < 0)
        r = tx_report_raised(tx);
    Py_DECREF(tx);
    return r;
}

/* ---- methods ------------------------------------------------------------------- */

static int
txcore_init(TxCoreObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"transport", "loop_core", "fd", NULL};
    PyObject *transport, *loop_core;
    int fd;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOi:TxCore", kwlist, &transport, &loop_core,
                                     &fd))
        return -1;
    if (intern_names() == NULL)
        return -1;
    TxTable *t = loopcore_txtable(loop_core);
    if (t == NULL)
        return -1;
    if (fd < 0) {
        PyErr_Format(PyExc_ValueError, "fd=%d is not a file descriptor", fd);
        return -1;
    }
    if (self->mask != 0) {
        PyErr_SetString(PyExc_RuntimeError, "TxCore.__init__ on a registered transport");
        return -1;
    }
    Py_XSETREF(self->transport, Py_NewRef(transport));
    Py_XSETREF(self->loop_core, Py_NewRef(loop_core));
    self->table = t;
    self->fd = fd;
    self->high = 64 * 1024;            /* asyncio's defaults until set_limits */
    self->low = 16 * 1024;
    return 0;
}

static PyObject *
txcore_write(TxCoreObject *self, PyObject *data)
{
    if (!PyBytes_Check(data) && !PyByteArray_Check(data) && !PyMemoryView_Check(data))
        return PyErr_Format(PyExc_TypeError, "data argument must be a bytes-like object, "
                            "not '%.100s'", Py_TYPE(data)->tp_name);
    if (self->eof)
        return PyErr_Format(PyExc_RuntimeError, "Cannot call write() after write_eof()");
    if (self->waiter != NULL)
        return PyErr_Format(PyExc_RuntimeError, "unable to write; sendfile is in progress");
    Py_buffer b;
    if (engine_get_bytes(data, &b) < 0)
        return NULL;
    Py_ssize_t n = b.len;
    int lost = n > 0 && (self->conn_lost || self->fd < 0 || self->table == NULL);
    int err = 0, began = 0;
    int failed = n > 0 && !lost && tx_send_or_keep(self, b.buf, n, &err, &began) < 0;
    /* The bytes are sent or copied: the caller's buffer is released before
     * any Python code runs (its exception kept aside meanwhile). */
    PyObject *raised = failed && err == 0 ? take_raised() : NULL;
    if (b.obj != NULL)
        PyBuffer_Release(&b);
    if (raised != NULL)
        put_raised(raised);
    int r = 0;
    Py_INCREF(self);                   /* a report may close and drop it */
    if (lost)
        r = tx_lost_write(self);
    else if (n > 0)
        r = began && !failed && tx_keep_write_context(self) < 0 ? -1
            : tx_after_write(self, failed, err);
    Py_DECREF(self);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
txcore_set_reading(TxCoreObject *self, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    char was = self->reading;
    char reading = (char)(on && self->fd >= 0);
    /* asyncio's _add_reader makes a new Handle, a copy of this Context, each
     * time (resume_reading included); _remove_reader drops it.  Copied
     * first: a failed copy leaves reading as it was. */
    PyObject *ctx = reading ? PyContext_CopyCurrent() : NULL;
    if (reading && ctx == NULL)
        return NULL;
    self->reading = reading;
    if (tx_sync(self) < 0) {
        self->reading = was;
        Py_XDECREF(ctx);
        return NULL;
    }
    Py_XSETREF(self->read_ctx, ctx);
    return PyBool_FromLong(was);
}

static PyObject *
txcore_set_protocol(TxCoreObject *self, PyObject *args)
{
    PyObject *proto;
    int buffered;
    if (!PyArg_ParseTuple(args, "Op:set_protocol", &proto, &buffered))
        return NULL;
    PyObject *on_data = PyObject_GetAttrString(proto, buffered ? "buffer_updated"
                                                                : "data_received");
    if (on_data == NULL)
        return NULL;
    PyObject *get_buffer = NULL;
    if (buffered && (get_buffer = PyObject_GetAttrString(proto, "get_buffer")) == NULL) {
        Py_DECREF(on_data);
        return NULL;
    }
    Py_XSETREF(self->on_data, on_data);
    Py_XSETREF(self->get_buffer, get_buffer);
    Py_RETURN_NONE;
}

static PyObject *
txcore_clear(TxCoreObject *self, PyObject *unused)
{
    int had = tx_pending(self);
    tx_drop_output(self);
    if (tx_sync(self) < 0)
        return NULL;
    return PyBool_FromLong(had);
}

static PyObject *
txcore_detach(TxCoreObject *self, PyObject *unused)
{
    self->reading = 0;
    tx_drop_output(self);
    int rc = tx_sync(self);
    self->fd = -1;
    /* asyncio's _call_connection_lost drops its protocol so refcounting frees
     * it; our bound methods of it go too (tx_read takes NULL as none). */
    Py_CLEAR(self->on_data);
    Py_CLEAR(self->get_buffer);
    Py_CLEAR(self->read_ctx);          /* write_ctx went with the output */
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
txcore_buffer_size(TxCoreObject *self, PyObject *unused)
{
    return PyLong_FromSsize_t(self->len - self->off);
}

static Py_ssize_t
txcore_len(TxCoreObject *self)
{
    return self->len - self->off;
}

/* ---- attributes: asyncio's transport fields, kept here ----------------------- */

static PyObject *
get_ssize(TxCoreObject *self, void *off)
{
    return PyLong_FromSsize_t(*(Py_ssize_t *)((char *)self + (Py_ssize_t)off));
}

static int
set_ssize(TxCoreObject *self, PyObject *v, void *off)
{
    Py_ssize_t x = v ? PyLong_AsSsize_t(v) : -1;
    if (x == -1 && (v == NULL || PyErr_Occurred())) {
        if (v == NULL)
            PyErr_SetString(PyExc_AttributeError, "cannot delete this field");
        return -1;
    }
    *(Py_ssize_t *)((char *)self + (Py_ssize_t)off) = x;
    return 0;
}

static PyObject *
get_flag(TxCoreObject *self, void *off)
{
    return PyBool_FromLong(*((char *)self + (Py_ssize_t)off));
}

static int
set_flag(TxCoreObject *self, PyObject *v, void *off)
{
    int b = v ? PyObject_IsTrue(v) : 0;
    if (b < 0)
        return -1;
    *((char *)self + (Py_ssize_t)off) = (char)b;
    return 0;
}

static PyObject *
get_waiter(TxCoreObject *self, void *c)
{
    return Py_NewRef(self->waiter ? self->waiter : Py_None);
}

static int
set_waiter(TxCoreObject *self, PyObject *v, void *c)
{
    if (v == NULL || v == Py_None)
        Py_CLEAR(self->waiter);
    else
        Py_XSETREF(self->waiter, Py_NewRef(v));
    return 0;
}

static PyObject *
get_fd(TxCoreObject *self, void *c)
{
    return PyLong_FromLong(self->fd);
}

static PyObject *
get_registered(TxCoreObject *self, void *c)
{
    return PyLong_FromUnsignedLong(self->mask);
}

static PyObject *
get_capacity(TxCoreObject *self, void *c)
{
    return PyLong_FromSsize_t(self->cap);
}

#define OFF(f) (void *)offsetof(TxCoreObject, f)
static PyGetSetDef txcore_getset[] = {
    {"conn_lost", (getter)get_ssize, (setter)set_ssize, "asyncio's _conn_lost", OFF(conn_lost)},
    {"high_water", (getter)get_ssize, (setter)set_ssize, "pause_writing above this", OFF(high)},
    {"low_water", (getter)get_ssize, (setter)set_ssize, "resume_writing at or below this",
     OFF(low)},
    {"eof", (getter)get_flag, (setter)set_flag, "write_eof() was called", OFF(eof)},
    {"protocol_paused", (getter)get_flag, (setter)set_flag,
     "protocol.pause_writing() was called", OFF(proto_paused)},
    {"reading", (getter)get_flag, NULL, "asyncio's reader is added for this fd", OFF(reading)},
    {"waiter", (getter)get_waiter, (setter)set_waiter,
     "asyncio's _empty_waiter (sendfile waits for the buffer to empty); writes refused",
     NULL},
    {"fd", (getter)get_fd, NULL, "the socket's fd (-1 once detached)", NULL},
    {"registered", (getter)get_registered, NULL, "the epoll events registered (0: none)",
     NULL},
    {"capacity", (getter)get_capacity, NULL,
     "bytes allocated for pending output (given back as a burst drains)", NULL},
    {NULL},
};

static PyMethodDef txcore_methods[] = {
    {"write", (PyCFunction)txcore_write, METH_O,
     "write(data): asyncio's Transport.write: sent at once; what the kernel does not take "
     "is buffered and sent when the socket is writable"},
    {"set_reading", (PyCFunction)txcore_set_reading, METH_O,
     "set_reading(on) -> was: the loop's _add_reader/_remove_reader for this transport"},
    {"set_protocol", (PyCFunction)txcore_set_protocol, METH_VARARGS,
     "set_protocol(protocol, buffered): whose data_received (or get_buffer and "
     "buffer_updated) reading calls"},
    {"clear", (PyCFunction)txcore_clear, METH_NOARGS,
     "clear() -> had output: drop the pending output (asyncio's _buffer.clear())"},
    {"detach", (PyCFunction)txcore_detach, METH_NOARGS,
     "detach(): out of the loop's epoll and table for good (before the socket closes)"},
    {"buffer_size", (PyCFunction)txcore_buffer_size, METH_NOARGS,
     "buffer_size() -> bytes written and not sent yet"},
    {NULL},
};

static int
txcore_traverse(TxCoreObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->transport);
    Py_VISIT(self->loop_core);
    Py_VISIT(self->on_data);
    Py_VISIT(self->get_buffer);
    Py_VISIT(self->waiter);
    Py_VISIT(self->read_ctx);
    Py_VISIT(self->write_ctx);
    return 0;
}

static int
txcore_clear_refs(TxCoreObject *self)
{
    Py_CLEAR(self->transport);
    Py_CLEAR(self->on_data);
    Py_CLEAR(self->get_buffer);
    Py_CLEAR(self->waiter);
    Py_CLEAR(self->read_ctx);
    Py_CLEAR(self->write_ctx);
    return 0;          /* loop_core stays until dealloc: self->table points into it */
}

static void
txcore_dealloc(TxCoreObject *self)
{
    PyObject_GC_UnTrack(self);
    /* Never registered here: the table's reference would keep us alive. */
    txcore_clear_refs(self);
    Py_CLEAR(self->loop_core);
    tx_drop_output(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PySequenceMethods txcore_as_sequence = {
    .sq_length = (lenfunc)txcore_len,
};

PyTypeObject TxCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "osvrt._engine.TxCore",
    .tp_basicsize = sizeof(TxCoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "TxCore(transport, loop_core, fd): the data path of an osvrt asyncio loop's "
              "socket transport, in C (osvrt/_engine/aiotx.c); len() is the output pending",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)txcore_init,
    .tp_dealloc = (destructor)txcore_dealloc,
    .tp_traverse = (traverseproc)txcore_traverse,
    .tp_clear = (inquiry)txcore_clear_refs,
    .tp_methods = txcore_methods,
    .tp_getset = txcore_getset,
    .tp_as_sequence = &txcore_as_sequence,
};
