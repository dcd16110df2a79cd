"""timeout(seconds): a block that raises TimeoutError when it runs too long.

Built outside the kernel from a timer and the thread's pending-exception slot:
when the timer fires, an _Expired exception is made pending for the thread (and
its wait, if any, is woken); the worker raises it at the thread's next
resume, inside the block; __exit__ turns its own _Expired into TimeoutError.
"""
import itertools
from _thread import allocate_lock

from . import kernel, thread
from .checks import check_delay
from .thread import Cancelled

_entered = itertools.count()     # scope entry order: an outer scope has a smaller number


class _Expired(Cancelled):
    """Unwinds a timed-out block.  A Cancelled, so `except Exception` in the
    block cannot swallow it; the block's __exit__ converts it."""

    def __init__(self, scope):
        super().__init__("osvrt.timeout expired")
        self.scope = scope

    @property
    def stale(self):
        """Its block has ended: it must not be raised (Worker._throw_into)."""
        return not self.scope._active


class timeout:
    """`with osvrt.timeout(s): ...` raises TimeoutError out of the block if it
    has not finished after s seconds.  Nests; inner and outer scopes each
    convert only their own expiry."""

    __slots__ = ("_delay", "_thread", "_timer", "_active", "_order", "expired", "_lock")

    def __init__(self, seconds):
        self._delay = check_delay(seconds)
        self._thread = None
        self._timer = None
        self._active = False
        self._order = None
        self.expired = False
        # _fire's check of _active and its interrupt, against __exit__'s
        # clearing of it: the timer may run on another worker's OS thread
        # than the block's thread (which moved since __enter__).  Without it,
        # the block could end, and the thread open its next wait, between
        # the check and the interrupt, which then ended that unrelated wait
        # (an Event.wait that returned True, a Mutex acquired while owned).
        self._lock = allocate_lock()

    def __enter__(self):
        if self._active or self._timer is not None:
            raise RuntimeError("an osvrt.timeout can be entered only once")
        t = kernel.current()
        self._thread = t
        self._order = next(_entered)
        self._active = True
        self._timer = t.worker.add_timer(kernel.monotonic() + self._delay, self._fire, None)
        return self

    def _fire(self, _):
        with self._lock:
            if not self._active:
                return
            self.expired = True
            t = self._thread
            pending = thread.pending_throw(t)
            if isinstance(pending, _Expired) and not pending.stale and pending.scope._order < self._order:
                return                   # an enclosing scope expired too: it wins
            # Under the lock, so any wait this ends was opened inside the
            # block: raised at t's next await; ends the wait it is parked in.
            thread.interrupt(t, _Expired(self))

    def __exit__(self, typ, exc, tb):
        with self._lock:                 # a _fire under way finishes first (see __init__)
            self._active = False
        self._timer.cancel()
        t = self._thread
        pending = thread.pending_throw(t)
        if isinstance(pending, _Expired) and pending.scope is self:
            thread.drop_throw(t)          # fired, but the block ended before it was raised
        if isinstance(exc, _Expired) and exc.scope is self:
            raise TimeoutError(f"osvrt.timeout: the block ran past {self._delay} s") from None
        return False

    # `async with osvrt.timeout(s):`, asyncio 3.11's shape, works the same:
    # entering and leaving never wait, so both forms are one scope.
    async def __aenter__(self):
        return self.__enter__()

    async def __aexit__(self, typ, exc, tb):
        return self.__exit__(typ, exc, tb)


class move_on_after(timeout):
    """`with osvrt.move_on_after(s) as scope:` leaves the block when s seconds
    have passed, without an exception (trio's move_on_after): the code after
    the block runs, and scope.expired says whether the deadline cut the block
    short.  `async with` works too."""

    __slots__ = ()

    def __exit__(self, typ, exc, tb):
        try:
            return super().__exit__(typ, exc, tb)
        except TimeoutError:
            # raised only for this scope's own expiry: swallow it (an outer
            # scope's expiry or a cancel is a different exception and passes)
            return True
