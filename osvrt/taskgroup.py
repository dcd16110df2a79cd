"""TaskGroup: structured concurrency, built only on the public API
(osvrt.spawn, Thread.join, Thread.cancel, osvrt.current, osvrt.Cancelled).

    async with osvrt.TaskGroup() as g:
        g.spawn(fetch, a)
        g.spawn(fetch, b, cpu=1)
    # here every child has ended

Leaving the block joins every child.  The first child that fails (raises
anything but Cancelled) cancels the other children and the body (the green
thread running the `async with`); the block then raises an ExceptionGroup
(a BaseExceptionGroup if a failure is a BaseException other than Cancelled)
holding every child's failure, in the order they failed, and the body's own
exception last if the body raised one.  A cancel of the body (or the expiry
of an osvrt.timeout around the block) cancels every child, waits for them,
then propagates.

The corner cases follow asyncio.TaskGroup (Python 3.11) and trio's nursery;
each decision is noted where it is made.
"""
import threading
import types

from .kernel import current, yield_now
from .kernel import spawn as _spawn
from .thread import Cancelled, wait_ended

__all__ = ["TaskGroup"]


class TaskGroup:
    """`async with osvrt.TaskGroup() as g: g.spawn(fn, *args)`: every child
    has ended when the block is left; the first failure cancels the rest."""

    def __init__(self):
        # One small lock guards the group's state: children run on any CPU, so
        # a failing child (abort), a spawning child and the body (__aexit__)
        # may touch it from two worker OS threads at once.  It is never held
        # across an await, so it never blocks a worker for longer than a few
        # bytecodes.
        self._lock = threading.Lock()
        self._parent = None          # the body's green thread, set by __aenter__
        self._children = []          # every Thread spawned, in spawn order
        self._coros = []             # their coroutines (fn's, inside our wrapper)
        self._failures = []          # children's failures, in the order they failed
        # Each failure's own __context__ and __traceback__, as the child raised
        # it: every join() that re-raises it in the body (an except block, a
        # wait in __aexit__) rewrites both, and the group gives them back.
        self._pristine = []
        # Ids of the children the group has cancelled: each is cancelled at
        # most once (as asyncio's TaskGroup does), so a second Cancelled never
        # cuts short the cleanup the first one started in its `finally:`.
        self._cancel_sent = set()
        self._entered = False
        self._in_block = False       # between __aenter__ and the end of __aexit__
        self._closed = False         # __aexit__ joined every child: spawn refuses
        self._aborting = False       # a failure (or the body's exit by exception) cancelled the children
        # The group cancels the body at most once (the first failure).  Until
        # that Cancelled has been seen, a Cancelled the body receives is taken
        # to be that one (osvrt's cancel is a flag, not a count: two cancels
        # pending at once arrive as one Cancelled, so they cannot be told apart).
        self._injected = False
        self._absorbed = False

    def __repr__(self):
        state = ("closed" if self._closed else "aborting" if self._aborting
                 else "open" if self._entered else "new")
        return f"<osvrt.TaskGroup {state} children={len(self._children)}>"

    async def __aenter__(self):
        if self._entered:
            raise RuntimeError("an osvrt.TaskGroup can be entered only once")
        self._parent = current()     # RuntimeError outside a green thread
        self._entered = True
        self._in_block = True
        return self

    def spawn(self, fn, *args, name=None, cpu=None, priority=1.0, **kwargs):
        """Start fn(*args) as a child green thread (same arguments as
        osvrt.spawn) and return its Thread.  Joining it gives the child's
        result or exception as usual; the group joins it anyway."""
        if kwargs:
            k = next(iter(kwargs))
            raise TypeError(f"TaskGroup.spawn() got an unexpected keyword argument {k!r}: it "
                            f"takes only name, cpu and priority; to pass keyword arguments "
                            f"to the function, spawn functools.partial(fn, {k}=...)")
        if not self._entered:
            raise RuntimeError("TaskGroup.spawn() before `async with`: "
                               "use `async with osvrt.TaskGroup() as g: g.spawn(...)`")
        if not callable(fn):
            raise TypeError(f"TaskGroup.spawn runs an async def function; {fn!r} is not callable")
        # Like asyncio: children may still spawn siblings while the body
        # waits in __aexit__; once every child has been joined, the group is
        # finished and refuses.  Checked before fn runs, and again under the
        # lock (fn is the caller's code: it runs outside the lock, so a fn
        # that itself spawns into this group cannot deadlock).
        if self._closed:
            raise self._finished(fn)
        coro = fn(*args)
        if not isinstance(coro, types.CoroutineType):     # osvrt.spawn's rule
            raise TypeError(f"TaskGroup.spawn runs an async def function; {fn!r} returned "
                            f"{type(coro).__name__}, not a coroutine")
        with self._lock:
            if self._closed:
                coro.close()
                raise self._finished(fn)
            try:
                t = _spawn(self._run_child, coro, name=name, cpu=cpu, priority=priority)
            except BaseException:
                coro.close()         # never started: no "never awaited" warning
                raise
            self._children.append(t)
            self._coros.append(coro)
            if self._aborting:
                # trio's choice (asyncio raises instead): a child spawned while
                # the group is being cancelled starts cancelled, so none of its
                # code runs, and the spawner is not given one more error.
                self._cancel_sent.add(t.id)
                t.cancel()
        return t

    @staticmethod
    def _finished(fn):
        return RuntimeError(f"this TaskGroup has finished (all its children were joined); "
                            f"cannot spawn {getattr(fn, '__qualname__', fn)!r}")

    async def _run_child(self, coro):
        try:
            return await coro
        except Cancelled:
            # A cancelled child is not a failure (asyncio and trio agree):
            # whoever cancelled it knows.
            raise
        except BaseException as e:
            self._child_failed(e, e.__context__, e.__traceback__)
            raise                    # so the child's own join() sees it too

    def _child_failed(self, exc, context, traceback):
        me = current()
        with self._lock:
            self._failures.append(exc)
            self._pristine.append((exc, context, traceback))
            if self._aborting:
                return
            self._aborting = True
            self._cancel_children(skip=me)
            if self._in_block:
                # Wake the body wherever it waits (in the block or in
                # __aexit__).  Set under the lock together with the cancel, so
                # __aexit__ never sees _injected without the cancel requested.
                self._injected = True
                self._parent.cancel()

    def _cancel_children(self, skip=None):
        # Called with the lock held.
        for t in self._children:
            if t is not skip and not t.done() and t.id not in self._cancel_sent:
                self._cancel_sent.add(t.id)
                t.cancel()

    def _absorb(self, exc):
        """Is exc the Cancelled this group injected into the body?  Only a
        plain Cancelled can be: a timeout's expiry is a subclass that belongs
        to its osvrt.timeout block, and must propagate to it."""
        if type(exc) is not Cancelled:
            return False
        with self._lock:
            if self._injected and not self._absorbed:
                self._absorbed = True
                return True
        return False

    async def _wait_for(self, t):
        """Wait until child t ends.  Raises only what was raised into the body
        (a cancel, a timeout's expiry), never t's own outcome."""
        await wait_ended(t)

    async def __aexit__(self, et, exc, tb):
        outer = None                 # a cancel (or expiry) of the body not injected by the group
        body_error = None
        if exc is not None:
            if isinstance(exc, Cancelled):
                if not self._absorb(exc):
                    outer = exc
            else:
                body_error = exc
            # asyncio and trio: a body that leaves by an exception (its own or
            # a cancel) cancels the children; they are joined all the same.
            with self._lock:
                self._aborting = True
                self._cancel_children()

        joined = 0
        while True:
            with self._lock:
                if joined == len(self._children):
                    # Every child has ended and none can be added any more
                    # (only children and the body spawn, and none runs now).
                    self._closed = True
                    self._in_block = False
                    pending_injection = self._injected and not self._absorbed
                    break
                t = self._children[joined]
            try:
                await self._wait_for(t)
            except Cancelled as e:
                if not self._absorb(e) and outer is None:
                    outer = e        # keep waiting: children get their cleanup
                with self._lock:
                    self._aborting = True
                    self._cancel_children()
                continue             # t is not done yet: wait for it again
            # A child cancelled before its first step never ran our wrapper,
            # so fn's coroutine was never awaited: close it, or Python warns
            # about it when it is collected.  (No-op for one that finished.)
            self._coros[joined].close()
            joined += 1

        if pending_injection:
            # The group cancelled the body but that Cancelled has not reached
            # it (the body did not await after the failure, and every child
            # had already ended here).  Take it now, or it would strike the
            # body at some later, unrelated await.  The body's own `except
            # Cancelled` may also have swallowed it: then nothing is raised.
            try:
                await yield_now()
            except Cancelled as e:
                if type(e) is not Cancelled and outer is None:
                    outer = e        # a timeout's expiry that came meanwhile
            with self._lock:
                self._absorbed = True

        for failed, context, traceback in self._pristine:
            failed.__context__ = context
            failed.__traceback__ = traceback
        failures = list(self._failures)
        if body_error is not None:
            failures.append(body_error)   # asyncio: the body's error comes last
        if failures:
            if outer is not None and type(outer) is Cancelled:
                # Failures win over a cancel of the body, as in asyncio (trio
                # too, once the cancel scope strips its Cancelled), so they are
                # reported.  But the cancel must not be lost: it is requested
                # again, and reaches this thread at its next await.
                self._parent.cancel()
            # BaseExceptionGroup(...) is an ExceptionGroup when every failure
            # is an Exception; KeyboardInterrupt, SystemExit and other
            # BaseExceptions make it a BaseExceptionGroup.
            n = len(failures)
            raise BaseExceptionGroup(
                f"{n} unhandled error{'s' if n != 1 else ''} in an osvrt.TaskGroup",
                failures) from None
        if outer is not None:
            if outer is exc:
                return False         # re-raised by the `async with` as it is
            raise outer
        return False
