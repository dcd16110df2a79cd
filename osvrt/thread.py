"""The green thread: a coroutine plus what the scheduler keeps about it.

A Thread is owned by one worker at a time (its `_w`).  Only that worker
resumes it or moves it; other OS threads reach it only through wake()
(kernel.py) or cancel(), which are safe from anywhere.
"""
import logging

from . import kernel

log = logging.getLogger("osvrt")


class Cancelled(BaseException):
    """Raised inside a green thread at its next await after cancel().
    A BaseException, like asyncio.CancelledError, so `except Exception`
    does not swallow it."""


from .kernel import TERMINATED, UNSTARTED


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
        if t._w is kernel.current_worker():
            t._w.move_out(t, target)
        kernel.schedule(t)


async def _move_from_home(t, home, target):
    """Runs on t's home worker, so t is not running and the run queue is ours."""
    if t._w is home and t._state is not TERMINATED:
        home.move_out(t, target)


class Thread:
    __slots__ = (
        "_coro", "_ctx", "_name", "id", "_w", "_pinned", "_prio",
        "_r", "_rn",            # fair rule: R'' and the renormalization count it is relative to
        "_state", "_ticket", "_value", "_throw", "_cancel", "_pending",
        "_result", "_exc", "_joiners", "_h", "_future", "_unretrieved",
        "_stalled", "_export", "_cwait", "__weakref__",
    )

    def __init__(self, coro, ctx, name, tid, worker, pinned, prio):
        self._coro = coro
        self._ctx = ctx
        self._name = name        # None: named on first use (spawn stays cheap)
        self.id = tid
        self._w = worker
        self._pinned = pinned
        self._prio = prio
        self._r = 0.0           # a new thread starts at R = 0 (runs almost at once)
        self._rn = worker.renorm
        self._state = UNSTARTED
        self._ticket = None     # the claimable wait ticket while parked (kernel.py)
        self._value = None      # sent into the coroutine at its next resume
        self._throw = None      # raised into it at its next resume instead
        self._cancel = False
        self._pending = False   # _throw or _cancel was set: the worker looks at both
        self._result = None
        self._exc = None
        self._joiners = None    # wait tickets of threads in join()
        self._h = 0             # C thread-table handle, allocated on first cross-CPU use
        self._future = None     # the concurrent.futures.Future of a submit()
        self._unretrieved = None
        self._stalled = False
        self._export = None     # exported runtime while moving between CPUs
        self._cwait = False     # in a wait that C may end (csrc/wake.h protocol)

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

    @property
    def state(self):
        return self._state

    def done(self):
        return self._state is TERMINATED

    def cancel(self):
        """Ask the thread to stop: Cancelled is raised inside it at its next
        await (at once if it is parked).  Safe from any OS thread.  Returns
        False if the thread had already ended."""
        if self._state is TERMINATED:
            return False
        self._cancel = True
        self._pending = True    # after the flag: see Worker._throw_into
        ticket = self._ticket
        if ticket is not None:
            kernel.wake(ticket)
        return True

    async def join(self, timeout=None):
        """Wait for the thread to end; return its result or raise its exception
        (osvrt.Cancelled if it was cancelled).  TimeoutError after `timeout`."""
        if self._state is not TERMINATED:
            me = kernel.current()
            if me is self:
                raise RuntimeError(f"green thread {self.name!r} cannot join itself")
            timeout = kernel.check_timeout(timeout)
            ticket = me._new_ticket()
            # Under the GIL these three bytecodes cannot interleave with
            # _finish() (no eval-breaker between them in 3.11); a free-threaded
            # build would need the list made eagerly or a lock here.
            if self._joiners is None:
                self._joiners = []
            self._joiners.append(ticket)
            # No lost wake-up: the ticket is published (joiners) before this
            # re-check, and _finish() marks TERMINATED before waking joiners.
            if self._state is TERMINATED:
                kernel.wake(ticket)
            timer = kernel.wake_at(ticket, timeout) if timeout is not None else None
            try:
                await kernel.park()
            finally:
                if timer is not None:
                    timer[2] = None
            if self._state is not TERMINATED:
                raise TimeoutError(f"join of green thread {self.name!r} timed out after {timeout} s")
        return self._outcome()

    async def pin(self, cpu):
        """Move this thread (yourself or another) to `cpu` and keep it there."""
        target = self._w.rt._worker_for(cpu)
        self._pinned = True
        if self._state is TERMINATED:
            return
        if self is kernel.current():
            if self._w is not target:
                # Park, and let our own worker hand us over right after (a
                # zero-delay timer fires at its next loop turn, once we are
                # off the CPU): only the owner moves a thread.
                ticket = self._new_ticket()
                self._w.add_timer(0.0, _move_parked, (ticket, target))
                await kernel.park()
            return
        from .runtime import spawn
        while self._w is not target and self._state is not TERMINATED:
            home = self._w
            await spawn(_move_from_home, self, home, target, cpu=home.cpu_id,
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

    def _new_ticket(self):
        """A fresh wait ticket: one wake may claim it (see kernel.wake)."""
        ticket = self._ticket = [self]
        return ticket
