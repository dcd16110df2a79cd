"""Synchronization between green threads on any CPUs, built on the kernel's
park / claim / schedule (kernel.py); nothing here is known to the worker loop.
Event is the engine's own (event.c); the others are built here on the same
kernel calls, which are the engine's too.

Each primitive keeps its state under a tiny `_guard` lock.  It is held for a
few bytecodes, never across a park and never across a C call (the claimed
thread is scheduled after the guard is let go: a wake of a thread on another
CPU is a call into the C core, a push and maybe a kick, a system call); uncontended it is an atomic flag
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
from . import thread
from .thread import Cancelled


_me = kernel.current


# The wait completed (something was handed over) as `exc` was raised into
# it: let the operation return, and raise exc at the thread's next await (a
# timeout's _Expired: still inside its block).
_defer = thread.defer


@types.coroutine
def _release_on_exit(self, *exc):
    """__aexit__ of Mutex and Semaphore: release; a generator, so that
    `async with` can await it without a coroutine frame."""
    self.release()
    return False
    yield                                  # unreachable: makes this a generator


# Wait-list entries are lists [ticket, state, ...].  A waiter that leaves
# (cancel, timeout) does not search its entry out of the deque: it marks it
# _GONE in O(1), and the hand-off skips it (its ticket was claimed by the
# cancel or timer, so it could not be claimed anyway).  When gone entries are
# more than half of the deque, one pass drops them all (as the engine's Event
# does): leaving stays O(1) amortized, and FIFO order is kept.  All under the
# primitive's guard.
_WAIT, _DONE, _GONE, _OUT = 0, 1, 2, 3    # queued; handed something; left; popped
_SHUT = 4                                  # Queue: woken by close()
_SWEEP_MIN = 32


def _pop_live(prim, waiters):
    """Guard held: pop entries until one whose ticket we claim; return
    (entry, thread), or (None, None) if no live waiter is left."""
    while waiters:
        e = waiters.popleft()
        if e[1] == _GONE:
            prim._gone -= 1
            continue
        e[1] = _OUT
        t = claim(e[0])
        if t is not None:
            return e, t
    return None, None


def _leave(prim, waiters, e):
    """Guard held: the waiter of entry e leaves.  If e is still queued, mark it
    gone, and sweep the deque once gone entries are the majority."""
    if e[1] != _WAIT:
        return                             # already popped by a hand-off
    e[1] = _GONE
    prim._gone += 1
    if prim._gone > _SWEEP_MIN and 2 * prim._gone > len(waiters):
        live = [x for x in waiters if x[1] != _GONE]
        waiters.clear()
        waiters.extend(live)
        prim._gone = 0


class _Gone:
    """The gone count of one of a Queue's two wait deques."""
    __slots__ = ("_gone",)

    def __init__(self):
        self._gone = 0


class QueueFull(Exception):
    """put_nowait() on a full Queue."""


class QueueEmpty(Exception):
    """get_nowait() on an empty Queue."""


class QueueClosed(Exception):
    """put() on a closed Queue, or get() on one that is closed and drained."""


# Event is the engine's (osvrt/_engine/event.c): its wait and set are the
# switch path that benchmarks measure, and set() is safe from any OS thread.
Event = _engine.Event


class Mutex:
    """A FIFO mutex with direct hand-off and no barging: release() makes the
    oldest waiter the owner before waking it.  Not reentrant."""

    __slots__ = ("_owner", "_waiters", "_gone", "_guard", "__weakref__")

    def __init__(self):
        self._owner = None                 # invariant: None => no live waiters
        self._waiters = collections.deque()   # [ticket, state]
        self._gone = 0                     # entries in _waiters marked _GONE
        self._guard = threading.Lock()

    def __repr__(self):
        owner = self._owner.name if self._owner is not None else None
        return f"<osvrt.Mutex owner={owner!r} waiters={len(self._waiters) - self._gone}>"

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
            entry = [t.new_ticket(), _WAIT]
            self._waiters.append(entry)
        try:
            yield PARK
        except BaseException:
            self._abandon(t, entry)
            raise
        return True                        # release() made us the owner

    def _abandon(self, t, entry):
        """A waiter leaves (cancel, timeout): if ownership reached it meanwhile,
        pass it on; else drop its entry (O(1): see _leave)."""
        with self._guard:
            if self._owner is not t:
                _leave(self, self._waiters, entry)
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
        if not self._waiters:
            self._owner = None
            return None
        _, nxt = _pop_live(self, self._waiters)   # left / stale waiters are skipped
        self._owner = nxt
        return nxt

    def _enqueue(self, t):
        """Wait morphing (Condition.notify, which claimed t): t joins our queue
        without waking, or becomes the owner at once if we are free."""
        with self._guard:
            owned = self._owner is None
            if owned:
                self._owner = t
            else:
                # A fresh ticket for this wait, so cancel() can still reach it.
                self._waiters.append([t.new_ticket(), _WAIT])
        if owned:
            schedule(t)

    __aenter__ = acquire
    __aexit__ = _release_on_exit


class Condition:
    """A condition variable over a Mutex, with wait morphing: notify() moves a
    waiter onto the mutex's queue, so it wakes already owning the mutex."""

    __slots__ = ("_mutex", "_waiters", "_gone", "_guard")

    def __init__(self, m=None):
        if m is not None and not isinstance(m, Mutex):
            raise TypeError(f"Condition needs an osvrt.Mutex, not {m!r}")
        self._mutex = m if m is not None else Mutex()
        self._waiters = collections.deque()   # [ticket, state]
        self._gone = 0
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
        entry = [t.new_ticket(), _WAIT]
        with self._guard:
            self._waiters.append(entry)
        m.release()
        try:
            yield PARK
        except BaseException:
            with self._guard:
                _leave(self, self._waiters, entry)
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
            # Claim first: a waiter cancelled (or timed out) meanwhile is
            # skipped and does not use up the notify.
            with self._guard:
                _, t = _pop_live(self, self._waiters)
            if t is None:
                return
            self._mutex._enqueue(t)
            moved += 1

    def notify_all(self):
        self.notify(len(self._waiters))


def _reacquire(m):
    """Acquire m even if cancelled meanwhile, and re-deliver that cancel at the
    next await: Condition.wait() always returns holding its mutex."""
    pending = None
    while True:
        try:
            yield from m.acquire()
            break
        except Cancelled as e:
            # A timeout's expiry is a Cancelled subclass that belongs to its
            # osvrt.timeout block: re-deliver it as itself (a plain Cancelled
            # would cancel the whole thread).  A cancel outranks an expiry.
            if pending is None or type(e) is Cancelled:
                pending = e
    if pending is not None:
        thread.defer(_me(), pending)          # re-arm what we swallowed


class Semaphore:
    """A counting semaphore with FIFO hand-off of permits."""

    __slots__ = ("_value", "_waiters", "_gone", "_guard")

    def __init__(self, n=1):
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"Semaphore needs an int count, not {n!r}")
        if n < 0:
            raise ValueError(f"Semaphore count must be >= 0, not {n!r}")
        self._value = n
        self._waiters = collections.deque()   # [ticket, state]: _DONE once granted
        self._gone = 0
        self._guard = threading.Lock()

    def __repr__(self):
        return f"<osvrt.Semaphore value={self._value} waiters={len(self._waiters) - self._gone}>"

    def locked(self):
        return self._value == 0

    @types.coroutine
    def acquire(self):
        t = _me()
        with self._guard:
            if self._value > 0 and not self._waiters:
                self._value -= 1
                return True
            entry = [t.new_ticket(), _WAIT]
            self._waiters.append(entry)
        try:
            yield PARK
        except BaseException:
            with self._guard:
                granted = entry[1] == _DONE
                if not granted:
                    _leave(self, self._waiters, entry)
            if granted:
                self.release()             # a permit reached us: give it on
            raise
        return True

    def release(self):
        with self._guard:
            entry, t = _pop_live(self, self._waiters)
            if t is not None:
                entry[1] = _DONE
            else:
                self._value += 1
        if t is not None:
            schedule(t)

    __aenter__ = acquire
    __aexit__ = _release_on_exit


class Queue:
    """A FIFO queue; maxsize 0 means unbounded.  Items go straight to the
    oldest waiting getter, and room straight to the oldest waiting putter.

    put(x) / get() wait; put_nowait / get_nowait raise QueueFull / QueueEmpty.
    task_done() / await join(): as asyncio's (join waits until every item put
    has been marked done).  close(): no more puts (QueueClosed); getters drain
    what is queued, then get() raises QueueClosed, and `async for x in q`
    ends.  Usable from green threads on any CPU.
    """

    __slots__ = ("_maxsize", "_items", "_getters", "_putters", "_gone", "_guard", "_closed",
                 "_unfinished", "_finished")

    def __init__(self, maxsize=0):
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"Queue maxsize must be an int, not {maxsize!r}")
        if maxsize < 0:
            raise ValueError(f"Queue maxsize must be >= 0, not {maxsize!r}")
        self._maxsize = maxsize
        self._items = collections.deque()
        # Entries [ticket, state, item]: a getter's item arrives with _DONE; a
        # putter's item is taken into the queue with _DONE.  The gone counts
        # are per deque: _gone is a 2-list [getters, putters] (see _leave).
        self._getters = collections.deque()
        self._putters = collections.deque()
        self._gone = [_Gone(), _Gone()]
        self._guard = threading.Lock()
        self._closed = False
        self._unfinished = 0               # items put and not yet task_done()
        self._finished = Event()           # set while _unfinished == 0
        self._finished.set()

    def __repr__(self):
        return (f"<osvrt.Queue size={len(self._items)} maxsize={self._maxsize} "
                f"{'closed ' if self._closed else ''}"
                f"getters={len(self._getters) - self._gone[0]._gone} "
                f"putters={len(self._putters) - self._gone[1]._gone}>")

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
        e, t = _pop_live(self._gone[0], self._getters)
        if t is not None:
            e[2] = item
            e[1] = _DONE
        return t

    def _admit_putter(self):
        """Guard held, room for one more: take the oldest live putter's item;
        return that putter for the caller to schedule, or None."""
        e, t = _pop_live(self._gone[1], self._putters)
        if t is not None:
            self._items.append(e[2])
            e[2] = None
            e[1] = _DONE
            self._count_put()
        return t

    def _count_put(self):
        """Guard held: one more unfinished item (join() waits for it)."""
        self._unfinished += 1
        if self._unfinished == 1:
            self._finished.clear()

    def put_nowait(self, item):
        with self._guard:
            if self._closed:
                raise QueueClosed("put_nowait() on a closed Queue")
            getter = self._give_to_getter(item)
            if getter is None:
                if 0 < self._maxsize <= len(self._items):
                    raise QueueFull(f"Queue is full ({self._maxsize} items)")
                self._items.append(item)
            self._count_put()
        if getter is not None:
            schedule(getter)

    def get_nowait(self):
        with self._guard:
            if not self._items:
                if self._closed:
                    raise QueueClosed("the Queue is closed and drained")
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
            if self._closed:
                raise QueueClosed("put() on a closed Queue")
            getter = self._give_to_getter(item)
            done = getter is not None
            if not done and not (0 < self._maxsize <= len(self._items)) and not self._putters:
                self._items.append(item)
                done = True
            if done:
                self._count_put()
            else:
                entry = [t.new_ticket(), _WAIT, item]
                self._putters.append(entry)
        if getter is not None:
            schedule(getter)
        if done:
            return
        try:
            yield PARK
        except BaseException as exc:
            with self._guard:
                if entry[1] != _DONE:
                    _leave(self._gone[1], self._putters, entry)
                    entry[2] = None
                    raise
            _defer(t, exc)                 # the item went in: the put happened
        if entry[1] == _SHUT:
            raise QueueClosed("the Queue was closed while put() waited")

    @types.coroutine
    def get(self):
        t = _me()
        with self._guard:
            if self._items:
                item = self._items.popleft()
                putter = self._admit_putter()
                waiting = False
            elif self._closed:
                raise QueueClosed("the Queue is closed and drained")
            else:
                putter = None
                waiting = True
                entry = [t.new_ticket(), _WAIT, None]
                self._getters.append(entry)
        if putter is not None:
            schedule(putter)
        if not waiting:
            return item
        try:
            yield PARK
        except BaseException as exc:
            with self._guard:
                if entry[1] != _DONE:
                    _leave(self._gone[0], self._getters, entry)
                    raise
            _defer(t, exc)                 # an item reached us: the get happened
        if entry[1] == _SHUT:
            raise QueueClosed("the Queue is closed and drained")
        return entry[2]

    def task_done(self):
        """Mark one item got earlier as processed (for join())."""
        with self._guard:
            if self._unfinished <= 0:
                raise ValueError("task_done() called more times than items were put")
            self._unfinished -= 1
            if self._unfinished == 0:
                self._finished.set()

    async def join(self):
        """Wait until every item put has been marked done with task_done()."""
        await self._finished.wait()

    def close(self):
        """No more puts: waiting and later putters get QueueClosed.  Getters
        take what is queued; once it is drained, get() raises QueueClosed and
        `async for` ends.  Closing twice is a no-op."""
        woken = []
        with self._guard:
            if self._closed:
                return
            self._closed = True
            # Getters wait only when nothing is queued: all of them end now.
            for gone, waiters in ((self._gone[0], self._getters), (self._gone[1], self._putters)):
                while True:
                    e, t = _pop_live(gone, waiters)
                    if t is None:
                        break
                    e[1] = _SHUT
                    e[2] = None
                    woken.append(t)
        for t in woken:
            schedule(t)

    @property
    def closed(self):
        return self._closed

    def __aiter__(self):
        return self

    @types.coroutine
    def __anext__(self):
        try:
            return (yield from self.get())
        except QueueClosed:
            raise StopAsyncIteration from None
