"""The green thread: a coroutine plus what the scheduler keeps about it.

The fields and the hot methods (cancel, join, done) are the engine's
(osvrt/_engine/thread.c, ThreadBase); this class adds what is not per
switch.  A Thread is owned by one worker at a time (its `_w`).  Only that
worker resumes it or moves it; other OS threads reach it only through
wake() (kernel.py) or cancel(), which are safe from anywhere.
"""
import logging

from . import _engine, kernel
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
        if t._w is kernel.current_worker():
            t._w.move_out(t, target)
        kernel.schedule(t)


async def _move_from_home(t, home, target):
    """Runs on t's home worker, so t is not running and the run queue is ours."""
    if t._w is home and t._state is not TERMINATED:
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
                ticket = self._new_ticket()
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


async def _await(awaitable):
    """Runs one of osvrt's own awaitables (a sleep, a wait) as a green thread."""
    return await awaitable

