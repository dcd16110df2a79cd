/* io.c - readiness: green threads that wait for an fd to become readable or
 * writable (osvrt.wait_readable / wait_writable), on their worker's epoll.
 *
 * Each CPU owns one epoll instance (csrc/cpu.h), and each worker a table of
 * its fds' waits, indexed by fd.  Per CPU, not per runtime: registering,
 * re-arming and dispatching touch only the owner's table and its epfd, so no
 * lock and no cross-CPU traffic sits on the I/O path, and a ready event wakes
 * its thread on the CPU that polled it (schedule() then needs no C call).
 * The cost: a rare close of an fd that a thread on ANOTHER worker waits for
 * (notify_closing) is posted to that worker under a small mutex.
 *
 * A wait is a Ticket of kind TK_IO (thread.c): its first am_send opens the
 * wait, registers it here and parks; the loop's poll (worker.c: the busy
 * poll every IO_TICKS turns or IO_PERIOD, and worker_idle's epoll_wait) wakes
 * the ticket with the ready events as its value.  A timeout is the ticket's
 * timer (value TIMED_OUT), cancel() claims the wait as for any other ticket;
 * whoever claims first wins, and the loser's wake is a no-op.
 *
 * Registrations use EPOLLONESHOT, measured against add-per-wait/del-per-wake:
 * a oneshot registration stays in the kernel and is re-armed with one
 * EPOLL_CTL_MOD per wait, where add/del costs two epoll_ctl per wait (see
 * README, I/O).  An event disarms it, so a wait that ended otherwise (timeout,
 * cancel) can cost at most one spurious event, which finds no waiter.  The
 * kernel drops a registration when the fd's last reference is closed; a later
 * wait on a reused fd number then gets ENOENT from MOD and adds it again.
 *
 * Ownership: slots, armed, registered: the owner worker only.  A ticket whose
 * thread was woken by something else (timer, cancel) and resumed on another
 * worker (a move) cannot leave our table itself: its entry is claimed, and we
 * drop it lazily at the next event or wait for that fd.
 */
#include <errno.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <limits.h>

#include "engine.h"

/* A worker with no waiter is not kicked for a posted closing (it takes it at
 * its next registration) until this many are pending: the list stays small. */
#define CLOSING_KICK 64

static PyObject *ClosedClass;      /* osvrt.ClosedResourceError, set by io.py */
static PyObject *BusyClass;        /* osvrt.BusyResourceError */

void
io_init(WorkerObject *w)
{
    w->io.slots = NULL;
    w->io.nslots = 0;
    atomic_init(&w->io.waiters, 0);
    w->io.tick = 0;
    w->io.last = 0.0;
    atomic_init(&w->io.closing, 0);
    atomic_init(&w->io.reg_seq, 0);
    pthread_mutex_init(&w->io.mu, NULL);
    w->io.closing_fds = NULL;
    w->io.nclosing = w->io.capclosing = 0;
}

static inline void
waiters_add(WorkerObject *w, Py_ssize_t d)
{
    /* owner-only counter: relaxed load + store (others read it as a hint). */
    atomic_store_explicit(&w->io.waiters,
                          atomic_load_explicit(&w->io.waiters, memory_order_relaxed) + d,
                          memory_order_relaxed);
}

/* Drop a slot's entry (its wait is over, or it was claimed by someone else). */
static void
slot_drop(WorkerObject *w, TicketObject **p)
{
    TicketObject *tk = *p;
    *p = NULL;
    if (tk->iow == w)
        tk->iow = NULL;
    waiters_add(w, -1);
    Py_DECREF(tk);
}

static inline void
slot_sweep(WorkerObject *w, struct io_slot *s)
{
    if (s->rd != NULL && ticket_is_claimed(s->rd))
        slot_drop(w, &s->rd);
    if (s->wr != NULL && ticket_is_claimed(s->wr))
        slot_drop(w, &s->wr);
}

static inline uint32_t
slot_wants(struct io_slot *s)
{
    return (s->rd ? EPOLLIN : 0) | (s->wr ? EPOLLOUT : 0);
}

/* Arm `events` for fd, adding the registration if the kernel lost it. */
static int
slot_arm(WorkerObject *w, int fd, struct io_slot *s, uint32_t events)
{
    struct epoll_event ev = {.events = events | EPOLLONESHOT, .data.u64 = (uint32_t)fd};
    int op = s->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    int r = epoll_ctl(w->cpu->epfd, op, fd, &ev);
    if (r < 0 && op == EPOLL_CTL_MOD && errno == ENOENT)       /* closed and reused */
        r = epoll_ctl(w->cpu->epfd, EPOLL_CTL_ADD, fd, &ev);
    else if (r < 0 && op == EPOLL_CTL_ADD && errno == EEXIST)  /* a dup we did not see */
        r = epoll_ctl(w->cpu->epfd, EPOLL_CTL_MOD, fd, &ev);
    if (r < 0)
        return -1;
    s->registered = 1;
    s->armed = events;
    s->et = 0;                   /* a oneshot wait takes an edge-triggered slot back */
    return 0;
}

/* Register fd edge-triggered for dirs (both directions for sock.c's waits):
 * it stays registered across waits, and each event caches the readiness it
 * reports in s->ready (Go's netpoller and tokio's ScheduledIo do the same),
 * so a socket call parks with no epoll_ctl and tries no syscall it knows
 * would fail.  ADD or MOD report the readiness at that moment as an event. */
static int
slot_register_et(WorkerObject *w, int fd, struct io_slot *s, uint32_t dirs)
{
    struct epoll_event ev = {.events = dirs | EPOLLRDHUP | EPOLLET, .data.u64 = (uint32_t)fd};
    int op = s->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    int r = epoll_ctl(w->cpu->epfd, op, fd, &ev);
    int added = op == EPOLL_CTL_ADD;
    if (r < 0 && op == EPOLL_CTL_MOD && errno == ENOENT) {     /* closed and reused */
        r = epoll_ctl(w->cpu->epfd, EPOLL_CTL_ADD, fd, &ev);
        added = 1;
    } else if (r < 0 && op == EPOLL_CTL_ADD && errno == EEXIST)
        r = epoll_ctl(w->cpu->epfd, EPOLL_CTL_MOD, fd, &ev);
    if (r < 0)
        return -1;
    if (added || !s->et) {       /* a new file, or turned edge-triggered: once per file and worker */
        int proto = 0;
        socklen_t len = sizeof proto;
        s->tcp = getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0
                 && proto == IPPROTO_TCP;
    }
    s->registered = 1;
    s->et = (char)dirs;
    s->armed = 0;
    return 0;
}

/* The slot of fd in w's table, grown to hold it; NULL with MemoryError. */
struct io_slot *
io_slot(WorkerObject *w, int fd)
{
    if (fd >= w->io.nslots) {
        int n = w->io.nslots ? w->io.nslots : 64;
        while (n <= fd)
            n *= 2;
        struct io_slot *g = PyMem_Realloc(w->io.slots, sizeof(*g) * (size_t)n);
        if (g == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        memset(g + w->io.nslots, 0, sizeof(*g) * (size_t)(n - w->io.nslots));
        w->io.slots = g;
        w->io.nslots = n;
    }
    return &w->io.slots[fd];
}

int
io_register(WorkerObject *w, TicketObject *tk)
{
    int fd = tk->fd;
    if (io_slot(w, fd) == NULL)
        return -1;
    /* Closings posted by other threads first (acquire: pairs with the
     * poster's release store): one may be for an earlier fd of this number,
     * whose registration must not be taken for this fd's. */
    if (atomic_load_explicit(&w->io.closing, memory_order_acquire) && io_take_closing(w) < 0)
        return -1;
    struct io_slot *s = &w->io.slots[fd];
    if (io_slot_fresh(w, fd, s) < 0)
        return -1;
    slot_sweep(w, s);
    uint32_t dir = tk->ioev & (EPOLLIN | EPOLLOUT);
    TicketObject **p = dir == EPOLLIN ? &s->rd : &s->wr;
    if (*p != NULL) {
        PyErr_Format(BusyClass ? BusyClass : PyExc_RuntimeError,
                     "another green thread is already waiting for fd %d to become %s",
                     fd, dir == EPOLLIN ? "readable" : "writable");
        return -1;
    }
    /* Arm on every wait, even when the slot looks armed already: a wait that
     * ended without an event (timeout, cancel) leaves the slot "armed", and
     * the fd may have been closed since (behind osvrt's back, or from another
     * CPU) and its number reused: the kernel dropped that registration, and
     * skipping the MOD here would leave the new fd's wait unregistered for
     * ever (issue #21, item 1).  MOD finds the reuse (ENOENT) and adds it.
     * The usual path pays nothing for it: an event disarmed the slot anyway. */
    uint32_t want = slot_wants(s) | dir;
    int r;
    if (tk->ioev & EPOLLET) {
        /* A socket call's wait (sock.c), or wait_io's with EPOLLET:
         * registered once, edge-triggered; the wait itself costs no
         * epoll_ctl.  It comes after EAGAIN (or a short read), so this
         * direction is not ready.  The other direction's parked waiter, if
         * any, stays registered: a one-shot wait_writable parked before an
         * ET read wait would lose its EPOLLOUT to the MOD below (and an ET
         * slot is never re-armed). */
        uint32_t dirs = (tk->ioev & IO_ET_BOTH ? EPOLLIN | EPOLLOUT : dir) | slot_wants(s);
        s->ready &= ~dir;
        r = ((uint32_t)s->et & dirs) == dirs ? 0
            : slot_register_et(w, fd, s, (uint32_t)s->et | dirs);
    } else
        r = slot_arm(w, fd, s, want);
    if (r < 0) {
        int e = errno;
        PyObject *v = Py_BuildValue(
            "(is)", e, e == EBADF ? "fd is not open (closed behind osvrt's back?)"
                     : e == EPERM ? "this kind of file has no readiness (epoll refuses it)"
                     : strerror(e));
        if (v != NULL) {
            PyErr_SetObject(PyExc_OSError, v);
            Py_DECREF(v);
        }
        return -1;
    }
    *p = (TicketObject *)Py_NewRef(tk);
    uint64_t seq = atomic_load_explicit(&w->io.reg_seq, memory_order_relaxed) + 1;
    /* relaxed, no RMW: the owner is the only writer (see engine.h) */
    atomic_store_explicit(&w->io.reg_seq, seq, memory_order_relaxed);
    if (dir == EPOLLIN)
        s->rd_seq = seq;
    else
        s->wr_seq = seq;
    tk->iow = w;
    waiters_add(w, 1);
    return 0;
}

void
io_end(TicketObject *tk)
{
    WorkerObject *w = tk->iow;
    if (w == NULL || w != tls_worker)
        return;                  /* woken by the poll, or moved: see the top */
    tk->iow = NULL;
    if (tk->fd < w->io.nslots) {
        struct io_slot *s = &w->io.slots[tk->fd];
        if (s->rd == tk)
            slot_drop(w, &s->rd);
        else if (s->wr == tk)
            slot_drop(w, &s->wr);
    }
    /* Still armed: at most one later event that finds nobody (oneshot). */
}

/* Wake every wait left in s with value (an exception): 0, or -1 if a wake failed. */
static int
slot_wake_all(WorkerObject *w, struct io_slot *s, PyObject *value)
{
    int err = 0;
    TicketObject **which[2] = {&s->rd, &s->wr};
    for (int k = 0; k < 2; k++) {
        if (*which[k] == NULL)
            continue;
        TicketObject *tk = *which[k];
        Py_INCREF(tk);
        slot_drop(w, which[k]);
        if (wake_ticket(tk, value) < 0)
            err = 1;
        Py_DECREF(tk);
    }
    return err ? -1 : 0;
}

int
io_dispatch(WorkerObject *w, int n)
{
    int err = 0;
    for (int i = 0; i < n; i++) {
        int fd = (int)(uint32_t)w->io.evs[i].data.u64;
        uint32_t r = w->io.evs[i].events;
        if (fd < 0 || fd >= w->io.nslots)
            continue;
        struct io_slot *s = &w->io.slots[fd];
        if (s->et) {
            /* cache what the edge reports (sock.c tries the call again) */
            s->ready |= (r & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP) ? EPOLLIN : 0)
                        | (r & (EPOLLOUT | EPOLLERR | EPOLLHUP) ? EPOLLOUT : 0)
                        | (r & (EPOLLERR | EPOLLHUP | EPOLLRDHUP) ? EPOLLRDHUP : 0);
        } else
            s->armed = 0;        /* oneshot: disarmed by this event */
        PyObject *v = NULL;
        TicketObject **which[2] = {&s->rd, &s->wr};
        uint32_t mask[2] = {EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP,
                            EPOLLOUT | EPOLLERR | EPOLLHUP};
        for (int k = 0; k < 2; k++) {
            TicketObject **p = which[k];
            if (*p == NULL || !(r & mask[k]))
                continue;
            if (v == NULL && (v = PyLong_FromUnsignedLong(r)) == NULL) {
                err = 1;
                break;
            }
            TicketObject *tk = *p;
            Py_INCREF(tk);
            slot_drop(w, p);
            if (wake_ticket(tk, v) < 0)
                err = 1;
            Py_DECREF(tk);
        }
        Py_XDECREF(v);
        slot_sweep(w, s);
        uint32_t want = s->et ? 0 : slot_wants(s);      /* an edge-triggered slot stays armed */
        if (want && slot_arm(w, fd, s, want) < 0) {
            /* Cannot re-arm (closed behind our back): end the other wait
             * with the error rather than leave it parked for ever. */
            PyObject *e = PyObject_CallFunction(PyExc_OSError, "is", errno, strerror(errno));
            if (e == NULL || slot_wake_all(w, s, e) < 0)
                err = 1;
            Py_XDECREF(e);
        }
    }
    return err ? -1 : 0;
}

/* End the waits left in s with ClosedResourceError(EBADF, msg). */
static int
slot_end_waits(WorkerObject *w, struct io_slot *s, const char *msg)
{
    slot_sweep(w, s);
    if (s->rd == NULL && s->wr == NULL)
        return 0;
    PyObject *e = PyObject_CallFunction(ClosedClass ? ClosedClass : PyExc_OSError, "is", EBADF,
                                        msg);
    if (e == NULL)
        return -1;
    int r = slot_wake_all(w, s, e);
    Py_DECREF(e);
    return r;
}

/* End every wait here for fd registered up to `upto` (see worker_io.reg_seq)
 * with ClosedResourceError and drop the registration (the fd is about to be
 * closed, or was).  A wait registered later is on a new fd of that number:
 * it and its epoll registration stay. */
static int
io_close_fd(WorkerObject *w, int fd, uint64_t upto)
{
    if (fd < 0 || fd >= w->io.nslots)
        return 0;
    struct io_slot *s = &w->io.slots[fd];
    slot_sweep(w, s);
    if ((s->rd != NULL && s->rd_seq > upto) || (s->wr != NULL && s->wr_seq > upto))
        return 0;                  /* the fd number was reused: not this closing's fd */
    if (s->registered) {
        struct epoll_event ev = {0};
        (void)epoll_ctl(w->cpu->epfd, EPOLL_CTL_DEL, fd, &ev);   /* EBADF/ENOENT: gone already */
        s->registered = 0;
        s->armed = 0;
        s->et = 0;
        s->ready = 0;
    }
    return slot_end_waits(w, s, "the fd was closed while a green thread waited on it");
}

/* Every io_fd_epoch entry; see engine.h.  In .bss, so only the pages of
 * numbers ever adopted are backed by memory. */
_Atomic uint32_t io_fd_epochs[IO_EPOCHS];
_Atomic uint32_t io_fd_closes[IO_EPOCHS];

/* fd is a file new to osvrt (just made, or just handed to it): whatever a
 * worker keeps for its number may belong to an earlier file. */
void
io_fd_adopted(int fd)
{
    /* relaxed RMW: a bump need only be seen by later uses of the number, and
     * that order comes with the fd itself (io_fd_epoch); the atomic add keeps
     * two bumps of one number (an accept, then its Stream) from being lost. */
    if ((unsigned)fd < IO_EPOCHS)
        atomic_fetch_add_explicit(&io_fd_epochs[fd], 1, memory_order_relaxed);
}

/* Is s's registration in w's epoll the current file's?  A MOD that keeps
 * what is registered finds (file, fd) only if the file now at fd is the one
 * registered: a socket handed to osvrt again (Stream(sock) of a socket
 * already waited on).  1: the same file; 0: it changed (ENOENT: the
 * registered one was closed, or lives on only as a dup elsewhere; EBADF: the
 * number is closed again); -1: another error, raised as OSError. */
static int
slot_same_file(WorkerObject *w, int fd, struct io_slot *s)
{
    struct epoll_event ev = {.data.u64 = (uint32_t)fd};
    ev.events = s->et ? (uint32_t)s->et | EPOLLRDHUP | EPOLLET : s->armed | EPOLLONESHOT;
    if (epoll_ctl(w->cpu->epfd, EPOLL_CTL_MOD, fd, &ev) == 0)
        return 1;
    if (errno == ENOENT || errno == EBADF)
        return 0;
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
}

/* fd's number was adopted since s was made (s->epoch != epoch).  If the file
 * registered here is still the one at fd, nothing changed: s takes the epoch.
 * Otherwise it was closed behind osvrt's back: the kernel's registration, if
 * any, was the old file's (gone with it, or left on a dup of it), so s
 * forgets it (the next wait ADDs) and its cached readiness, and the waits
 * still in it, parked on the old file, end with ClosedResourceError instead
 * of waiting for an event that cannot come.  One epoll_ctl, and only for a
 * slot still registered: one closed through osvrt was dropped at its close.
 * 0, or -1 with an error set (the epoll_ctl failed otherwise, or a wake did). */
int
io_slot_renew(WorkerObject *w, int fd, struct io_slot *s, uint32_t epoch)
{
    int same = s->registered ? slot_same_file(w, fd, s) : 0;
    if (same < 0)
        return -1;               /* s keeps its old epoch: the next use asks again */
    s->epoch = epoch;
    if (same)
        return 0;
    s->registered = 0;
    s->armed = 0;
    s->et = 0;
    s->ready = 0;
    return slot_end_waits(w, s, "the fd was closed behind osvrt's back while a green "
                                "thread waited on it (its number now belongs to a new file)");
}

int
io_take_closing(WorkerObject *w)
{
    /* acquire: pairs with the poster's release store after it appended. */
    if (!atomic_exchange_explicit(&w->io.closing, 0, memory_order_acquire))
        return 0;
    pthread_mutex_lock(&w->io.mu);
    struct io_closing *fds = w->io.closing_fds;
    int n = w->io.nclosing;
    w->io.closing_fds = NULL;
    w->io.nclosing = w->io.capclosing = 0;
    pthread_mutex_unlock(&w->io.mu);
    int err = 0;
    for (int i = 0; i < n; i++)
        if (io_close_fd(w, fds[i].fd, fds[i].seq) < 0)
            err = 1;
    PyMem_RawFree(fds);
    return err ? -1 : 0;
}

int
io_poll(WorkerObject *w, double now)
{
    w->io.tick = 0;
    w->io.last = now;
    if (io_take_closing(w) < 0)
        return -1;
    if (!atomic_load_explicit(&w->io.waiters, memory_order_relaxed))
        return 0;
    int n = osvrt_api->cpu_poll_io(w->cpu, w->io.evs, IO_BATCH);
    return n > 0 ? io_dispatch(w, n) : 0;
}

int
io_traverse(WorkerObject *w, visitproc visit, void *arg)
{
    for (int i = 0; i < w->io.nslots; i++) {
        Py_VISIT(w->io.slots[i].rd);
        Py_VISIT(w->io.slots[i].wr);
    }
    return 0;
}

void
io_clear(WorkerObject *w)
{
    for (int i = 0; i < w->io.nslots; i++) {
        struct io_slot *s = &w->io.slots[i];
        if (s->rd)
            slot_drop(w, &s->rd);
        if (s->wr)
            slot_drop(w, &s->wr);
    }
    PyMem_Free(w->io.slots);
    w->io.slots = NULL;
    w->io.nslots = 0;
    pthread_mutex_lock(&w->io.mu);
    PyMem_RawFree(w->io.closing_fds);
    w->io.closing_fds = NULL;
    w->io.nclosing = w->io.capclosing = 0;
    pthread_mutex_unlock(&w->io.mu);
}

/* Raise osvrt.ClosedResourceError(EBADF, msg) (sock.c: a call on a closed socket). */
void
io_raise_closed(const char *msg)
{
    PyObject *e = PyObject_CallFunction(ClosedClass ? ClosedClass : PyExc_OSError, "is",
                                        EBADF, msg);
    if (e != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(e), e);
        Py_DECREF(e);
    }
}

PyObject *
io_timeout_error(TicketObject *tk)
{
    PyObject *d = PyFloat_FromDouble(tk->delay);
    if (d == NULL)
        return NULL;
    PyErr_Format(PyExc_TimeoutError, "waiting for fd %d to become %s timed out after %R s",
                 tk->fd, tk->ioev & EPOLLIN ? "readable" : "writable", d);
    Py_DECREF(d);
    return NULL;
}

/* ---- module functions ------------------------------------------------------ */

static int
fd_of(PyObject *f)
{
    int fd = PyObject_AsFileDescriptor(f);    /* an int, or fileno(); ValueError if < 0 */
    return fd;
}

/* wait_io(f, events, timeout=None) -> an awaitable wait (a TK_IO Ticket). */
static PyObject *
m_wait_io(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2 || nargs > 3)
        return PyErr_Format(PyExc_TypeError, "wait_io(f, events, timeout=None)");
    int fd = fd_of(args[0]);
    if (fd < 0)
        return NULL;
    long ev = PyLong_AsLong(args[1]);
    if (ev == -1 && PyErr_Occurred())
        return NULL;
    long dir = ev & ~(long)EPOLLET;
    if (dir != EPOLLIN && dir != EPOLLOUT)
        return PyErr_Format(PyExc_ValueError,
                            "events must be EPOLLIN or EPOLLOUT (| EPOLLET), not %ld", ev);
    double delay = -1.0;
    if (nargs == 3 && args[2] != Py_None && check_delay(args[2], "timeout", &delay) < 0)
        return NULL;
    TicketObject *tk = ticket_new(NULL, TK_IO);
    if (tk == NULL)
        return NULL;
    tk->fd = fd;
    tk->ioev = (uint32_t)ev;
    tk->delay = delay;
    return (PyObject *)tk;
}

/* io_close(worker, fd): end worker's waits for fd (the caller is that
 * worker's OS thread) or post them to it (any other thread). */
static PyObject *
m_io_close(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyObject_TypeCheck(args[0], &WorkerBase_Type))
        return PyErr_Format(PyExc_TypeError, "io_close(worker, fd)");
    WorkerObject *w = (WorkerObject *)args[0];
    long lfd = PyLong_AsLong(args[1]);      /* public API on 3.11-3.13 (no _PyLong_AsInt) */
    if (lfd == -1 && PyErr_Occurred())
        return NULL;
    if (lfd < 0 || lfd > INT_MAX)
        return PyErr_Format(PyExc_ValueError, "not a file descriptor: %R", args[1]);
    if (io_notify_closing(w, (int)lfd) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* fd is about to be closed: end w's waits for it and drop its registration,
 * at once on w's own OS thread, else posted to w.  0, or -1 with an error. */
int
io_notify_closing(WorkerObject *w, int fd)
{
    /* seq_cst RMW (see io_fd_close_count); once per worker told: any bump will do. */
    if ((unsigned)fd < IO_EPOCHS)
        atomic_fetch_add_explicit(&io_fd_closes[fd], 1, memory_order_seq_cst);
    if (w == tls_worker)
        /* synchronous: the fd is still open, so no wait here is on a reuse */
        return io_close_fd(w, fd, UINT64_MAX) < 0 ? -1 : 0;
    if (w->cpu == NULL)
        return 0;
    pthread_mutex_lock(&w->io.mu);
    if (w->io.nclosing == w->io.capclosing) {
        int cap = w->io.capclosing ? w->io.capclosing * 2 : 16;
        struct io_closing *g = PyMem_RawRealloc(w->io.closing_fds, sizeof(*g) * (size_t)cap);
        if (g == NULL) {
            pthread_mutex_unlock(&w->io.mu);
            PyErr_NoMemory();
            return -1;
        }
        w->io.closing_fds = g;
        w->io.capclosing = cap;
    }
    /* The caller has not closed fd yet (notify_closing comes first), so every
     * wait on this fd number registered so far is on this fd.  One registered
     * after this load is on a reuse of the number (which needs the close()
     * that follows us, a system call that orders this load before it), or, in
     * the instant before that close, on this fd: that one ends at its timeout,
     * as a wait on an fd closed behind osvrt's back does. */
    uint64_t upto = atomic_load_explicit(&w->io.reg_seq, memory_order_acquire);
    w->io.closing_fds[w->io.nclosing++] = (struct io_closing){fd, upto};
    int many = w->io.nclosing >= CLOSING_KICK;
    pthread_mutex_unlock(&w->io.mu);
    /* release: the owner's acquire exchange sees the fd appended. */
    atomic_store_explicit(&w->io.closing, 1, memory_order_release);
    /* Posted to every worker, waiter or not: a worker with no waiter now may
     * still hold this fd's registration, and takes the closing before its
     * next registration (io_register).  Only a worker with waiters (someone
     * to wake) is kicked, or one whose list grew long while it slept. */
    if (many || atomic_load_explicit(&w->io.waiters, memory_order_relaxed))
        osvrt_api->cpu_kick(w->cpu);
    return 0;
}

static PyObject *
m_io_waiters(PyObject *m, PyObject *o)
{
    if (!PyObject_TypeCheck(o, &WorkerBase_Type))
        return PyErr_Format(PyExc_TypeError, "not a Worker: %R", o);
    return PyLong_FromSsize_t(
        atomic_load_explicit(&((WorkerObject *)o)->io.waiters, memory_order_relaxed));
}

/* io_pending_closings(worker): closings posted to it and not taken yet. */
static PyObject *
m_io_pending_closings(PyObject *m, PyObject *o)
{
    if (!PyObject_TypeCheck(o, &WorkerBase_Type))
        return PyErr_Format(PyExc_TypeError, "not a Worker: %R", o);
    WorkerObject *w = (WorkerObject *)o;
    pthread_mutex_lock(&w->io.mu);
    int n = w->io.nclosing;
    pthread_mutex_unlock(&w->io.mu);
    return PyLong_FromLong(n);
}

/* io_adopt(fd): fd is a file new to osvrt (io_fd_adopted). */
static PyObject *
m_io_adopt(PyObject *m, PyObject *o)
{
    int fd = fd_of(o);
    if (fd < 0)
        return NULL;
    io_fd_adopted(fd);
    Py_RETURN_NONE;
}

static PyObject *
m_io_set_classes(PyObject *m, PyObject *args)
{
    PyObject *closed, *busy;
    if (!PyArg_ParseTuple(args, "OO:io_set_classes", &closed, &busy))
        return NULL;
    Py_XSETREF(ClosedClass, Py_NewRef(closed));
    Py_XSETREF(BusyClass, Py_NewRef(busy));
    Py_RETURN_NONE;
}

PyMethodDef io_module_methods[] = {
    {"wait_io", (PyCFunction)(void (*)(void))m_wait_io, METH_FASTCALL,
     "wait_io(f, events, timeout=None): an awaitable that parks until f (an fd or\n"
     "an object with fileno()) is ready for events (EPOLLIN or EPOLLOUT); the await\n"
     "returns the epoll events seen.  TimeoutError after timeout; cancellable.\n"
     "With | EPOLLET the wait uses f's edge-triggered registration (made once, no\n"
     "epoll_ctl per wait), which reports only what becomes ready after it: call it\n"
     "only right after f said EAGAIN, with no await in between (as sock.c does),\n"
     "and hand f to io_adopt() before its first such wait: a registration kept\n"
     "across waits is renewed when a new file that was adopted takes its number."},
    {"io_adopt", m_io_adopt, METH_O,
     "io_adopt(f): f (an fd or an object with fileno()) is a file new to osvrt: a\n"
     "worker's state for its number (an edge-triggered registration, cached\n"
     "readiness, waits parked on an earlier file closed behind osvrt's back) is\n"
     "dropped before the number's next wait, those waits ending with\n"
     "ClosedResourceError."},
    {"io_close", (PyCFunction)(void (*)(void))m_io_close, METH_FASTCALL, NULL},
    {"io_waiters", m_io_waiters, METH_O, NULL},
    {"io_pending_closings", m_io_pending_closings, METH_O, NULL},
    {"io_set_classes", m_io_set_classes, METH_VARARGS, NULL},
    {NULL}
};
