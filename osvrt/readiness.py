"""Readiness: a green thread waits for an fd, and the worker runs others.

    await osvrt.wait_readable(sock)              # parks until sock is readable
    await osvrt.wait_writable(fd, timeout=1.0)   # TimeoutError after 1 s

Each worker owns an epoll instance (csrc/core/cpu.h, osvrt/_engine/io.c).  A wait
is one of the kernel's tickets: it registers the fd (EPOLLONESHOT) with the
worker's epoll and parks; the worker polls readiness without blocking every
61 loop turns or ~1 ms of run time while it is busy, and sleeps in epoll_wait
when it is idle, so the ready event wakes the ticket.  Cancelling the thread
ends the wait at once; the registration is dropped with it.

One waiter per fd and direction: a second wait_readable on the same fd from
another thread of the same CPU raises BusyResourceError.

Closing an fd that green threads wait on: call notify_closing(fd) first (the
socket wrappers of osvrt.net do), and every such wait raises
ClosedResourceError (an OSError with errno EBADF).  An fd closed behind
osvrt's back is detected on the next registration (EBADF), or when re-arming
after an event (EPOLLHUP/EPOLLERR, then EBADF); a wait already parked on it
may stay parked until its timeout, because the kernel silently drops the
registration of a closed fd, so always close through osvrt.
"""
import errno
import select
import weakref
from typing import Any

from . import _engine, kernel

__all__ = ["BusyResourceError", "ClosedResourceError", "notify_closing", "wait_readable",
           "wait_writable"]

_IN, _OUT = select.EPOLLIN, select.EPOLLOUT


class ClosedResourceError(OSError):
    """The fd was closed (notify_closing) while a green thread waited on it,
    or the resource was used after close().  errno is EBADF."""

    def __init__(self, *args):
        if not args:
            args = (errno.EBADF, "the resource was closed")
        super().__init__(*args)


class BusyResourceError(RuntimeError):
    """Another green thread already waits for the same fd in the same direction."""


_runtimes: "weakref.WeakSet[Any]" = weakref.WeakSet()       # started runtimes: notify_closing from foreign threads


def track(rt):
    _runtimes.add(rt)


def wait_readable(f, timeout=None):
    """Await it: park until f (an fd, or an object with fileno()) is readable
    (or at EOF / error), at most `timeout` seconds (TimeoutError).  Returns the
    epoll event bits seen.  Cancellable."""
    return _engine.wait_io(f, _IN, timeout)


def wait_writable(f, timeout=None):
    """Await it: park until f is writable (or in error); see wait_readable."""
    return _engine.wait_io(f, _OUT, timeout)


def notify_closing(f):
    """Tell osvrt that f (an fd or an object with fileno()) is about to be
    closed: every green thread waiting on it, on any CPU, is woken with
    ClosedResourceError, and its registrations are dropped.  Call it BEFORE
    closing the fd (as trio's notify_closing).  Safe from any OS thread."""
    if isinstance(f, bool) or not (isinstance(f, int) or hasattr(f, "fileno")):
        raise TypeError(f"notify_closing takes an fd (int) or an object with fileno(), "
                        f"not {f!r}")
    fd = f if isinstance(f, int) else f.fileno()
    if fd < 0:
        return                       # a socket object already closed (fileno() -1)
    me = kernel.current_worker()
    if me is not None:
        workers = me.rt.workers
    else:                            # a foreign OS thread: every live runtime's workers
        workers = [w for rt in list(_runtimes) for w in rt.workers]
    # Every worker, waiter or not: one with no waiter now may still hold the
    # fd's registration from an earlier wait (it takes the closing lazily,
    # before its next registration; only workers with waiters are kicked).
    for w in workers:
        _engine.io_close(w, fd)
