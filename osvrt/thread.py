"""The green thread: a coroutine plus what the scheduler keeps about it.

The fields and the hot methods (cancel, join, done) are the engine's
(osvrt/_engine/thread.c, ThreadBase); this class adds what is not per
switch.  A Thread is owned by one worker at a time (its `_w`).  Only that
worker resumes it or moves it; other OS threads reach it only through
wake() (kernel.py) or cancel(), which are safe from anywhere.

The engine's fields of a Thread (underscored) are written only here and by
the engine's own two halves (this module and worker.py): the kernel-level
modules (sync, deadline, cwait, the runtime, introspection) use the
functions at the end of this module, or the read-only views the engine
gives (t.worker, t.handle, t.coro, t.new_ticket()).
"""
import logging

from . import _engine, fair, kernel
from .kernel import TERMINATED

log = logging.getLogger("osvrt")

Cancelled = _engine.Cancelled
Cancelled.__module__ = "osvrt"


class _UnretrievedException:
    """Logs a thread's exception if nobody retrieved it before the Thread was
    garbage-collected (asyncio's approach).  Only threads that end with an
    exception and no joiner get one, so a normal exit pays nothing."""

    __slots__ = ("name", "exc")

    def __init__(self, name, exc):
        self.name = name
        self.exc = exc

    def __del__(self):
        if self.exc is not None:
            log.error("green thread %r ended with an exception nobody joined",
                      self.name, exc_info=(type(self.exc), self.exc, self.exc.__traceback__))


def _move_parked(arg):
    """Timer callback on a thread's own worker: move it while it is parked."""
    ticket, target = arg
    t = kernel.claim(ticket)
    if t is not None:
        # Only t's owner moves it; if a concurrent pin() already gave t to
        # another CPU, just wake it there.
        if t.worker is kernel.current_worker():
            t.worker.move_out(t, target)
        kernel.schedule(t)


async def _move_from_home(t, home, target):
    """Runs on t's home worker, so t is not running and the run queue is ours."""
    if t.worker is home and t._state is not TERMINATED:
        home.move_out(t, target)


class Thread(_engine.ThreadBase):
    """A green thread: made by osvrt.spawn() or Runtime.submit().

    Attributes: name, id, cpu (where it is now), pinned, priority, state.
    Methods: await join(timeout=None), cancel(), done(), await pin(cpu), unpin().
    """

    __slots__ = ()

    def __repr__(self):
        return f"<osvrt.Thread {self.name!r} id={self.id} {self._state} cpu={self.cpu}>"

    @property
    def name(self):
        return self._name or f"green-{self.id}"

    @name.setter
    def name(self, value):
        if not isinstance(value, str):
            raise TypeError(f"a green thread's name is a str, not {value!r}")
        self._name = value

    @property
    def cpu(self):
        """The CPU whose run queue or timers hold the thread (while it moves: the target)."""
        return self._w.cpu_id

    @property
    def pinned(self):
        return self._pinned

    @property
    def priority(self):
        return self._prio

    async def pin(self, cpu):
        """Move this thread (yourself or another) to `cpu` and keep it there."""
        target = self._w.rt.worker_for(cpu)
        self._pinned = True
        if self._state is TERMINATED:
            return
        if self is kernel.current():
            if self._w is not target:
                # Park, and let our own worker hand us over right after (a
                # zero-delay timer fires at its next loop turn, once we are
                # off the CPU): only the owner moves a thread.
                ticket = self.new_ticket()
                self._w.add_timer(0.0, _move_parked, (ticket, target))
                await kernel.park()
            return
        while self._w is not target and self._state is not TERMINATED:
            home = self._w
            await kernel.spawn(_move_from_home, self, home, target, cpu=home.cpu_id,
                        name=f"osvrt-pin-{self.id}").join()

    def unpin(self):
        """Let the balancer move this thread again.  Takes effect at once and
        never moves the thread by itself."""
        self._pinned = False

    def _outcome(self):
        if self._unretrieved is not None:
            self._unretrieved.exc = None
            self._unretrieved = None
        if self._exc is not None:
            raise self._exc
        return self._result


# ---- the engine's fields of a Thread, for the kernel-level modules ----------

def defer(t, exc):
    """t's wait completed (something was handed over) as `exc` was raised into
    it: let the operation return, and raise exc at t's next await (a
    Cancelled as t's cancel, anything else, such as a timeout, as is)."""
    if type(exc) is Cancelled:
        t._cancel = True
    else:
        t._throw = exc
    t._pending = True


def pending_throw(t):
    """The exception waiting to be raised into t at its next await, or None."""
    return t._throw


def interrupt(t, exc):
    """Raise exc into t at its next await, ending the wait t is parked in
    (osvrt.timeout's expiry); t's worker drops it if it has gone stale."""
    t._throw = exc
    t._interrupt()                   # sets the pending flag, ends t's wait


def drop_throw(t):
    """Forget the exception waiting for t (its block ended before it was raised)."""
    t._throw = None


def set_cwait(t, waiting):
    """Mark t as parked in a wait that a C producer may end (cwait.py): the
    worker then claims t's ticket when t's C wake comes in."""
    t._cwait = waiting


def note_names(threads, names):
    """names[t.id] = the name each thread was given (threads named by default,
    green-<id>, are left out): the trace's thread names."""
    for t in threads:
        n = t._name
        if n is not None:
            names[t.id] = n


def submit_future(t):
    """The concurrent.futures.Future of a submit()ted thread, or None."""
    return t._future


def pin_in_place(t):
    """Pin t where it runs now, with no move: for t itself, on its worker,
    to stay on this OS thread across a park (osvrt/net/tcp/streams.py).
    Undone with t.unpin().  True if t was not pinned already."""
    if t._pinned:
        return False
    # A plain store: `pinned` is read by the balancer of t's own worker
    # (balancer.movable, on that worker's OS thread), the thread we run on.
    t._pinned = True
    return True


def set_submit_future(t, fut):
    t._future = fut


def notify_cancelled(fut):
    """Wake concurrent.futures.wait() on a cancelled submit() Future
    (Future.cancel() alone does not), once: stop() and the thread's end may
    both get here, and a second set_running_or_notify_cancel() logs CRITICAL
    before it raises.  The check and the call hold the Future's own lock
    (a Condition over an RLock, so the call takes it again)."""
    with fut._condition:
        if fut._state == "CANCELLED":         # not yet CANCELLED_AND_NOTIFIED
            fut.set_running_or_notify_cancel()


def outcome(t):
    """An ended thread's return value; re-raises its exception."""
    return t._outcome()


def result(t):
    """What an ended thread returned (None if it raised)."""
    return t._result


def hand_over(t, target, c):
    """Worker.move_all: t leaves its worker (whose normalizer is c) for
    target; its decayed runtime goes along, imported by target's catch_up."""
    t._export = fair.export_runtime(t._r, c)
    t._w = target


def exception(t):
    """The exception an ended thread raised, or None."""
    return t._exc


def drop_unretrieved(t):
    """Its owner has dealt with t's outcome: no "nobody joined" log for it
    (only the logger slot is cleared, never a submit() Future)."""
    logger = t._unretrieved
    if logger is not None:
        logger.exc = None                # first: dropping the logger runs its __del__
        t._unretrieved = None


def wait_done(t, timeout, active, spin):
    """From a foreign OS thread: wait up to timeout for t to end (thread.c)."""
    return t._wait_done(timeout, active, spin)


def decayed_runtime(t):
    """t's decayed runtime in seconds, read racily (a hint, as stats are)."""
    w = t.worker
    r = t._r
    missed = w.renorm - t._rn
    if missed:
        r = fair.renormalized(r, missed)
    return max(0.0, fair.true_runtime(r, w.c))


def close_unstarted(t):
    """Close t's coroutine if it never ran (it would warn "never awaited" when
    collected); only once no worker can run it.  True if it was closed."""
    coro = t.coro
    if coro is not None and not coro.cr_suspended and not coro.cr_running \
            and coro.cr_frame is not None:
        coro.close()
        return True
    return False


async def wait_ended(t):
    """Wait until t ends.  Raises only what was raised into the caller while
    it waited (a cancel, a timeout's expiry), never t's own outcome."""
    try:
        await t.join()
    except BaseException as e:
        if not t.done():
            raise                    # the caller was woken while t still runs
        # t has ended.  join() of an ended thread returns its outcome at once,
        # without waiting: the same exception object every time.  So e is t's
        # outcome exactly when a second join raises e itself; otherwise e was
        # raised into the caller while it waited.
        try:
            await t.join()
        except BaseException as again:
            if again is e:
                return
        raise e


async def _await(awaitable):
    """Runs one of osvrt's own awaitables (a sleep, a wait) as a green thread."""
    return await awaitable


# What the engine's configure() takes from this module (_setup.py): the class
# it makes threads of, the unretrieved-exception logger, and the wrapper that
# runs one of osvrt's own awaitables as a green thread.
ENGINE_PARTS = (Thread, _UnretrievedException, _await)
