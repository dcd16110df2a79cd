"""Helpers over green threads, shaped like asyncio's: wait_for, gather,
as_completed and shield.  Built only on the public API (spawn, Thread.join,
Thread.cancel, timeout, Queue).

Each argument is an "awaitable" in osvrt's sense: a coroutine object
(`fetch(url)`), or an osvrt Thread already running (`osvrt.spawn(...)`).
A coroutine is run as a child green thread on the caller's CPU (the balancer
may move it, as any thread).  Unlike asyncio's gather, no child outlives the
call that started it unless it is shielded: structured, as TaskGroup is.
"""
import types
from typing import Any

from . import kernel
from .checks import check_delay
from .deadline import timeout as _timeout
from .runtime import spawn as _spawn
from .sync import Queue
from .thread import Thread, drop_unretrieved, wait_ended

__all__ = ["wait_for", "gather", "as_completed", "shield"]


async def _await_coroutine(coro):
    return await coro


def _start(aw, what):
    """A Thread for aw, and whether we started it (and so own its life)."""
    if isinstance(aw, Thread):
        return aw, False
    if isinstance(aw, types.CoroutineType):
        return _spawn(_await_coroutine, aw), True     # unpinned, on our CPU
    raise TypeError(f"osvrt.{what} takes coroutines (fn(...), not fn) or osvrt Threads, "
                    f"not {aw!r}")


def _close_all(aws):
    """Close coroutines that will never run (bad arguments came later), so
    Python does not warn that they were never awaited."""
    for aw in aws:
        if isinstance(aw, types.CoroutineType):
            aw.close()


async def wait_for(aw: Any, timeout: float | None) -> Any:
    """`await osvrt.wait_for(coro, seconds)`: coro's result, or TimeoutError
    after `seconds` (the coroutine is cancelled: it runs in the caller's own
    green thread, inside an osvrt.timeout).  timeout=None waits for ever.
    An osvrt Thread is joined instead, and is not cancelled at the timeout
    (join(timeout=...) semantics): its owner decides."""
    if timeout is not None:
        check_delay(timeout, "timeout")
    if isinstance(aw, Thread):
        return await aw.join(timeout=timeout)
    if not isinstance(aw, types.CoroutineType):
        raise TypeError(f"osvrt.wait_for takes a coroutine (fn(...), not fn) or an osvrt "
                        f"Thread, not {aw!r}")
    if timeout is None:
        return await aw
    with _timeout(timeout):
        return await aw


async def _cancel_and_wait(threads):
    """Cancel the threads and wait until every one has ended.  Their outcomes
    are not ours to report; a cancel (or a timeout's expiry) raised into the
    caller meanwhile does not cut the wait short (no child is left behind),
    and is raised once they have all ended."""
    for t in threads:
        t.cancel()
    raised = None
    for t in threads:
        while True:
            try:
                await wait_ended(t)
                break
            except BaseException as e:
                if raised is None:
                    raised = e
    if raised is not None:
        raise raised


async def gather(*aws: Any, return_exceptions: bool = False) -> list[Any]:
    """`results = await osvrt.gather(c1, c2, ...)`: run the coroutines
    concurrently, each as a child green thread, and return their results in
    argument order.

    return_exceptions=False: the first child to fail cancels the others, they
    are waited for (their cleanup runs), and that exception is raised (asyncio
    leaves the others running; osvrt never leaves a child behind); their own
    failures are dropped, as asyncio.gather drops them.
    return_exceptions=True: every child runs to its end; an exception
    (osvrt.Cancelled of a cancelled child included) takes its place in the
    list.  A cancel (or an osvrt.timeout's expiry) of the caller cancels the
    children it started, waits for them, and propagates.  A Thread passed in
    is joined, never cancelled: its owner decides."""
    if not isinstance(return_exceptions, bool):
        raise TypeError(f"return_exceptions must be True or False, not {return_exceptions!r}")
    it = as_completed(aws, _what="gather")
    # The same Thread may be passed more than once: each place gets its outcome.
    where: dict[int, list[int]] = {}
    for i, t in enumerate(it._threads):
        where.setdefault(id(t), []).append(i)
    results: list[Any] = [None] * len(it._threads)
    try:
        async for t in it:           # first finished first: a failure is seen at once
            try:
                r = await t.join()
            except BaseException as e:
                if not return_exceptions:
                    raise
                r = e
            for i in where[id(t)]:
                results[i] = r
    except BaseException:
        try:
            await it.aclose()
        finally:
            # What gather raises stands for the whole call: the other
            # children's failures, waited for above, are not "nobody joined"
            # (asyncio.gather marks them retrieved the same way).
            for t in it._spawned:
                drop_unretrieved(t)
        raise
    return results


class as_completed:
    """`async for t in osvrt.as_completed([c1, c2, ...], timeout=None):` gives
    each child's Thread as it ends, first finished first; `await t.join()`
    then returns its result (or raises its exception) at once.  Raises
    TimeoutError when `timeout` seconds have passed with children still
    running.  A timeout, or a cancel of the caller while it waits for the
    next one, cancels the children it started and waits for them.  A loop
    left early by break leaves them running (Python does not tell an
    iterator about a break): use `async with osvrt.as_completed(...) as it:
    async for t in it: ...`, or `await it.aclose()`, to cancel and wait for
    them then."""

    def __init__(self, aws, *, timeout=None, _what="as_completed"):
        kernel.current()
        self._timeout = None if timeout is None else check_delay(timeout, "timeout")
        aws = list(aws)
        self._done = Queue()
        self._owned = []             # the green threads we started (cancelled by aclose)
        self._threads = []           # the Thread given for each awaitable, in argument order
        self._spawned = []           # the green threads running our coroutines
        self._coros = []             # the coroutines we were given (closed by aclose)
        self._left = 0
        self._deadline = None if timeout is None else kernel.monotonic() + timeout
        # Every argument is checked before any child starts: a bad one then
        # leaves nothing running (and no coroutine unawaited).
        for aw in aws:
            if not isinstance(aw, (Thread, types.CoroutineType)):
                _close_all(aws)
                raise TypeError(f"osvrt.{_what} takes coroutines (fn(...), not fn) or "
                                f"osvrt Threads, not {aw!r}")
        started = 0
        try:
            for aw in aws:
                if isinstance(aw, Thread):
                    self._owned.append(_spawn(self._watch, aw))   # the watcher, not aw
                    self._threads.append(aw)
                else:
                    t = _spawn(self._run, aw)
                    self._coros.append(aw)
                    self._owned.append(t)
                    self._threads.append(t)
                    self._spawned.append(t)
                started += 1
                self._left += 1
        except BaseException:
            # spawn itself failed (the runtime is stopping): cancel what started
            _close_all(aws[started:])            # never handed to a green thread
            for t in self._owned:
                t.cancel()
            raise

    async def _run(self, coro):
        try:
            return await coro
        finally:
            self._done.put_nowait(kernel.current())

    async def _watch(self, thread):
        try:
            await thread.join()
        except BaseException:
            pass
        finally:
            if thread.done():
                self._done.put_nowait(thread)

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._left == 0:
            raise StopAsyncIteration
        try:
            if self._deadline is None:
                t = await self._done.get()
            else:
                left = self._deadline - kernel.monotonic()
                if left <= 0:
                    raise TimeoutError(f"osvrt.as_completed: {self._left} still running after "
                                       f"timeout={self._timeout} s")
                with _timeout(left):
                    t = await self._done.get()
        except TimeoutError:
            left = self._left
            await self.aclose()
            raise TimeoutError(f"osvrt.as_completed: {left} still running after "
                               f"timeout={self._timeout} s") from None
        except BaseException:
            await self.aclose()
            raise
        self._left -= 1
        if self._left == 0:
            self._owned = []
        return t

    async def aclose(self):
        """Cancel the children still running and wait for them."""
        owned, self._owned, self._left = self._owned, [], 0
        try:
            await _cancel_and_wait([t for t in owned if not t.done()])
        finally:
            # Every child has ended (_cancel_and_wait leaves none running).  One
            # cancelled before its first step never awaited its coroutine:
            # close it, or Python warns "never awaited" when it is collected
            # (a no-op for one that ran to its end).
            for c in self._coros:
                c.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()
        return False


async def shield(aw: Any) -> Any:
    """`result = await osvrt.shield(coro)`: coro runs in a child green thread
    that a cancel of the caller does not reach (asyncio.shield): the caller
    raises Cancelled (or an osvrt.timeout's TimeoutError) at once and the
    child runs on to its end; its result is dropped and its exception logged
    if nobody joined it.  Only Runtime.stop() cancels it.  Returns the
    child's result (or raises its exception) when the caller is not
    cancelled.  An osvrt Thread passed in is joined the same way."""
    t, _ = _start(aw, "shield")
    # A cancel of the caller interrupts only this join: t is another green
    # thread, and nothing here cancels it.
    return await t.join()
