"""A clear error for asyncio code awaited in an osvrt green thread.

asyncio's operations start by asking for the running event loop
(asyncio.get_running_loop()); in a worker OS thread there is none, so
`await asyncio.sleep(1)` would fail with asyncio's "no running event loop",
which says nothing about osvrt.  Each worker therefore sets, as its thread's
running loop, a stand-in whose every use raises TypeError naming the
operation and what to use instead (docs/design.md: awaiting something that is
not an osvrt operation raises TypeError in the thread that did it).

Overriding it: asyncio refuses to start a loop in a thread that already has
a running one (run_forever, asyncio.run), and to asyncio the stand-in is one;
so a real loop started on a worker runs inside `with asyncio_guard.lifted():`,
which clears the stand-in and puts it back afterwards.  While the loop runs it
is the running loop (asyncio.events._set_running_loop, as every loop does)
and the check is its own.  `is_guard(loop)` tells the stand-in apart from a
real loop.

osvrt's own asyncio loop (osvrt.new_event_loop, osvrt/aio) needs no lifting:
its Runtime's one worker runs on the thread that runs the loop, not in
Worker.main, so no stand-in is installed there; the loop is that thread's
running loop while it runs, for every green thread of its worker (they may
call loop.call_soon; awaiting an asyncio Future in one of them is the
engine's TypeError, as anywhere in a green thread).  Its run_forever()
refuses a worker's thread (stand-in or not) with its own RuntimeError.
"""
import contextlib

__all__ = ["install", "is_guard", "lifted", "NotInAsyncio"]

_HINT = ("asyncio does not run inside an osvrt green thread; use osvrt's own operations "
         "(osvrt.sleep, osvrt.timeout, osvrt.Event/Queue, osvrt.gather, osvrt.net sockets), "
         "or osvrt.to_thread(asyncio.run, coro) for asyncio code")


class NotInAsyncio:
    """The running "loop" of an osvrt worker OS thread: any use is a TypeError."""

    __slots__ = ()

    def __getattr__(self, name):
        raise TypeError(f"asyncio operation (loop.{name}) awaited in an osvrt green thread: "
                        f"{_HINT}")

    def is_running(self):
        return False

    def is_closed(self):
        return False

    def __repr__(self):
        return "<osvrt worker: no asyncio event loop>"


_GUARD = NotInAsyncio()


def install():
    """Make the calling OS thread's running loop the stand-in, unless a real
    loop runs here (osvrt/aio's, which then owns the check)."""
    # imported here, at a worker's start: `import osvrt` loads no asyncio
    import asyncio.events
    if asyncio.events._get_running_loop() is None:
        asyncio.events._set_running_loop(_GUARD)


def is_guard(loop):
    return loop is _GUARD


@contextlib.contextmanager
def lifted():
    """`with lifted(): loop.run_forever()`: no stand-in in this OS thread for
    the block (a real asyncio loop may start), put back when it ends."""
    import asyncio.events
    guarded = is_guard(asyncio.events._get_running_loop())
    if guarded:
        asyncio.events._set_running_loop(None)
    try:
        yield
    finally:
        if guarded:
            install()
