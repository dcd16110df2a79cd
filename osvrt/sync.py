"""Synchronization between green threads on any CPUs, built on the kernel's
park / claim / schedule (kernel.py); nothing here is known to the worker loop.
Event is the engine's own (event.c); the others are built here on the same
kernel calls, which are the engine's too.

Each primitive keeps its state under a tiny `_guard` lock.  It is held for a
few bytecodes, never across a park and never across a C call (the claimed
thread is scheduled after the guard is let go: a wake of a thread on another
CPU is a cffi call, which releases the GIL); uncontended it is an atomic flag
that does not release the GIL either, and it is contended only when the GIL
moves to the other worker inside those bytecodes.  Run queues stay lock-free: a wake of a
thread on another CPU goes through that CPU's pushlist.

Hand-off rules (OSv's lfmutex): the releaser of a Mutex or Semaphore, or the
producer of a Queue item, gives what it releases straight to the oldest
waiter, whose ticket it claims first.  If a cancel or timeout reaches a waiter
after something was handed to it: a Mutex or Semaphore waiter gives it on; a
Queue getter or putter completes (items cannot be given on without breaking
their order or the bound) and the cancel or timeout is raised at its next
await instead.  Nothing is ever lost, duplicated or reordered.
"""
import collections
import threading
import types

from . import _engine, kernel
from .kernel import PARK, claim, schedule
from .thread import Cancelled


_me = kernel.current


def _defer(t, exc):
    """The wait completed (something was handed over) as `exc` was raised into
    it: let the operation return, and raise exc at the thread's next await."""
    if type(exc) is Cancelled:
        t._cancel = True
    else:
        t._throw = exc               # a timeout (_Expired): still inside its block
    t._pending = True


@types.coroutine
def _release_on_exit(self, *exc):
    """__aexit__ of Mutex and Semaphore: release; a generator, so that
    `async with` can await it without a coroutine frame."""
    self.release()
    return False
    yield                                  # unreachable: makes this a generator


def _discard(waiters, entry):
    """Remove `entry` itself (not an equal one: claimed tickets all equal [])."""
    for i, e in enumerate(waiters):
        if e is entry:
            del waiters[i]
            return


class QueueFull(Exception):
    """put_nowait() on a full Queue."""


class QueueEmpty(Exception):
    """get_nowait() on an empty Queue."""


# Event is the engine's (osvrt/_engine/event.c): its wait and set are the
# switch path that benchmarks measure, and set() is safe from any OS thread.
Event = _engine.Event


class Mutex:
    """A FIFO mutex with direct hand-off and no barging: release() makes the
    oldest waiter the owner before waking it.  Not reentrant."""

    __slots__ = ("_owner", "_waiters", "_guard", "__weakref__")

    def __init__(self):
        self._owner = None                 # invariant: None => no waiters
        self._waiters = collections.deque()
        self._guard = threading.Lock()

    def __repr__(self):
        owner = self._owner.name if self._owner is not None else None
        return f"<osvrt.Mutex owner={owner!r} waiters={len(self._waiters)}>"

    def locked(self):
        return self._owner is not None

    @types.coroutine
    def acquire(self):
        t = _me()
        with self._guard:
            owner = self._owner
            if owner is None:
                self._owner = t
                return True
            if owner is t:
                raise RuntimeError(f"green thread {t.name!r} already holds this Mutex "
                                   "(it is not reentrant)")
            ticket = t._new_ticket()
            self._waiters.append(ticket)
        try:
            yield PARK
        except BaseException:
            self._abandon(t, ticket)
            raise
        return True                        # release() made us the owner

    def _abandon(self, t, ticket):
        """A waiter leaves (cancel, timeout): if ownership reached it meanwhile,
        pass it on; else drop its ticket."""
        with self._guard:
            if self._owner is not t:
                _discard(self._waiters, ticket)
                return
        self.release()

    def release(self):
        t = _me()
        with self._guard:
            if self._owner is not t:
                raise RuntimeError(f"green thread {t.name!r} released a Mutex it does not hold "
                                   f"(owner: {self._owner.name if self._owner else None!r})")
            nxt = self._hand_off()
        if nxt is not None:
            schedule(nxt)

    def _hand_off(self):
        """With the guard held: make the oldest live waiter the owner (returned,
        for the caller to schedule), or free the mutex (None)."""
        waiters = self._waiters
        while waiters:
            nxt = claim(waiters.popleft())
            if nxt is not None:            # stale tickets (cancelled waiters) are skipped
                self._owner = nxt
                return nxt
        self._owner = None
        return None

    def _enqueue(self, t):
        """Wait morphing (Condition.notify, which claimed t): t joins our queue
        without waking, or becomes the owner at once if we are free."""
        with self._guard:
            owned = self._owner is None
            if owned:
                self._owner = t
            else:
                # A fresh ticket for this wait, so cancel() can still reach it.
                ticket = t._new_ticket()
                self._waiters.append(ticket)
        if owned:
            schedule(t)

    __aenter__ = acquire
    __aexit__ = _release_on_exit


class Condition:
    """A condition variable over a Mutex, with wait morphing: notify() moves a
    waiter onto the mutex's queue, so it wakes already owning the mutex."""

    __slots__ = ("_mutex", "_waiters", "_guard")

    def __init__(self, m=None):
        if m is not None and not isinstance(m, Mutex):
            raise TypeError(f"Condition needs an osvrt.Mutex, not {m!r}")
        self._mutex = m if m is not None else Mutex()
        self._waiters = collections.deque()
        self._guard = threading.Lock()

    def locked(self):
        return self._mutex.locked()

    def acquire(self):
        return self._mutex.acquire()

    def release(self):
        self._mutex.release()

    def __aenter__(self):
        return self._mutex.acquire()

    def __aexit__(self, *exc):
        return self._mutex.__aexit__(*exc)

    @types.coroutine
    def wait(self):
        t = _me()
        m = self._mutex
        if m._owner is not t:
            raise RuntimeError(f"green thread {t.name!r} waits on a Condition without "
                               "holding its Mutex")
        ticket = t._new_ticket()
        with self._guard:
            self._waiters.append(ticket)
        m.release()
        try:
            yield PARK
        except BaseException:
            with self._guard:
                _discard(self._waiters, ticket)
            if m._owner is not t:
                yield from _reacquire(m)   # wait() always returns holding the mutex
            raise
        return True                        # woken as the owner (wait morphing)

    @types.coroutine
    def wait_for(self, predicate):
        result = predicate()
        while not result:
            yield from self.wait()
            result = predicate()
        return result

    def notify(self, n=1):
        t = _me()
        if self._mutex._owner is not t:
            raise RuntimeError(f"green thread {t.name!r} notifies a Condition without "
                               "holding its Mutex")
        moved = 0
        while moved < n:
            with self._guard:
                if not self._waiters:
                    return
                ticket = self._waiters.popleft()
            # Claim first: a waiter cancelled (or timed out) meanwhile is
            # skipped and does not use up the notify.
            t = claim(ticket)
            if t is not None:
                self._mutex._enqueue(t)
                moved += 1

    def notify_all(self):
        self.notify(len(self._waiters))


def _reacquire(m):
    """Acquire m even if cancelled meanwhile, and re-deliver that cancel at the
    next await: Condition.wait() always returns holding its mutex."""
    cancelled = False
    while True:
        try:
            yield from m.acquire()
            break
        except Cancelled:
            cancelled = True
    if cancelled:
        t = _me()
        t._cancel = True
        t._pending = True


class Semaphore:
    """A counting semaphore with FIFO hand-off of permits."""

    __slots__ = ("_value", "_waiters", "_guard")

    def __init__(self, n=1):
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"Semaphore needs an int count, not {n!r}")
        if n < 0:
            raise ValueError(f"Semaphore count must be >= 0, not {n!r}")
        self._value = n
        self._waiters = collections.deque()   # (ticket, granted)
        self._guard = threading.Lock()

    def __repr__(self):
        return f"<osvrt.Semaphore value={self._value} waiters={len(self._waiters)}>"

    def locked(self):
        return self._value == 0

    @types.coroutine
    def acquire(self):
        t = _me()
        with self._guard:
            if self._value > 0 and not self._waiters:
                self._value -= 1
                return True
            ticket = t._new_ticket()
            granted = [False]
            entry = (ticket, granted)
            self._waiters.append(entry)
        try:
            yield PARK
        except BaseException:
            with self._guard:
                if not granted[0]:
                    _discard(self._waiters, entry)
            if granted[0]:
                self.release()             # a permit reached us: give it on
            raise
        return True

    def release(self):
        with self._guard:
            waiters = self._waiters
            t = None
            while waiters:
                ticket, granted = waiters.popleft()
                t = claim(ticket)
                if t is not None:
                    granted[0] = True
                    break
            else:
                self._value += 1
        if t is not None:
            schedule(t)

    __aenter__ = acquire
    __aexit__ = _release_on_exit


class Queue:
    """A FIFO queue; maxsize 0 means unbounded.  Items go straight to the
    oldest waiting getter, and room straight to the oldest waiting putter."""

    __slots__ = ("_maxsize", "_items", "_getters", "_putters", "_guard")

    def __init__(self, maxsize=0):
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"Queue maxsize must be an int, not {maxsize!r}")
        if maxsize < 0:
            raise ValueError(f"Queue maxsize must be >= 0, not {maxsize!r}")
        self._maxsize = maxsize
        self._items = collections.deque()
        self._getters = collections.deque()   # (ticket, slot): slot[0] receives the item
        self._putters = collections.deque()   # (ticket, slot): slot[0] holds the item to add
        self._guard = threading.Lock()

    def __repr__(self):
        return (f"<osvrt.Queue size={len(self._items)} maxsize={self._maxsize} "
                f"getters={len(self._getters)} putters={len(self._putters)}>")

    @property
    def maxsize(self):
        return self._maxsize

    def qsize(self):
        return len(self._items)

    def empty(self):
        return not self._items

    def full(self):
        return 0 < self._maxsize <= len(self._items)

    def _give_to_getter(self, item):
        """Guard held: hand item to the oldest live getter and return it (the
        caller schedules it once the guard is let go); None if none waits."""
        getters = self._getters
        while getters:
            ticket, slot = getters.popleft()
            t = claim(ticket)
            if t is not None:
                slot[0] = item
                slot[1] = True
                return t
        return None

    def _admit_putter(self):
        """Guard held, room for one more: take the oldest live putter's item;
        return that putter for the caller to schedule, or None."""
        putters = self._putters
        while putters:
            ticket, slot = putters.popleft()
            t = claim(ticket)
            if t is not None:
                self._items.append(slot[0])
                slot[1] = True
                return t
        return None

    def put_nowait(self, item):
        with self._guard:
            getter = self._give_to_getter(item)
            if getter is None:
                if 0 < self._maxsize <= len(self._items):
                    raise QueueFull(f"Queue is full ({self._maxsize} items)")
                self._items.append(item)
        if getter is not None:
            schedule(getter)

    def get_nowait(self):
        with self._guard:
            if not self._items:
                raise QueueEmpty("Queue is empty")
            item = self._items.popleft()
            putter = self._admit_putter()
        if putter is not None:
            schedule(putter)
        return item

    @types.coroutine
    def put(self, item):
        t = _me()
        with self._guard:
            getter = self._give_to_getter(item)
            done = getter is not None
            if not done and not (0 < self._maxsize <= len(self._items)) and not self._putters:
                self._items.append(item)
                done = True
            if not done:
                ticket = t._new_ticket()
                slot = [item, False]       # [item, taken]
                entry = (ticket, slot)
                self._putters.append(entry)
        if getter is not None:
            schedule(getter)
        if done:
            return
        try:
            yield PARK
        except BaseException as exc:
            with self._guard:
                if not slot[1]:
                    _discard(self._putters, entry)
                    raise
            _defer(t, exc)                 # the item went in: the put happened

    @types.coroutine
    def get(self):
        t = _me()
        with self._guard:
            if self._items:
                item = self._items.popleft()
                putter = self._admit_putter()
                waiting = False
            else:
                putter = None
                waiting = True
                ticket = t._new_ticket()
                slot = [None, False]       # [item, given]
                entry = (ticket, slot)
                self._getters.append(entry)
        if putter is not None:
            schedule(putter)
        if not waiting:
            return item
        try:
            yield PARK
        except BaseException as exc:
            with self._guard:
                if not slot[1]:
                    _discard(self._getters, entry)
                    raise
            _defer(t, exc)                 # an item reached us: the get happened
        return slot[0]
