"""Waits that C may end: the C side of the wake protocol (csrc/core/runtime.h) for a
green thread.  Used where a C producer (the net classifier) wakes a thread
without the GIL.

    ready = lambda: channel_not_empty()       # no call that releases the GIL
    await cwait(ready)                        # returns once ready() may be true

Order (why no wake-up is lost): the thread publishes WAITING in C
(osvrt_wait_prepare, seq_cst, called through the engine: no cffi) and its
ticket, THEN re-checks ready(); the producer makes the condition true, THEN
calls osvrt_wake (CAS WAITING -> WAKING).  Either the re-check sees the
condition, or the CAS sees WAITING and pushes the thread (key tagged
OSVRT_KEY_CWAKE) onto its CPU's pushlist, where the worker claims the ticket
(_engine/worker.c, take_incoming).  Timers and cancel() claim the same ticket
the ordinary way.  Spurious returns are possible: the caller loops on its
condition.
"""
from . import kernel, thread
from ._engine import cwait_abort, cwait_prepare


async def cwait(ready):
    t = kernel.current()
    h = t.handle or t.worker.rt.handle_for(t)
    if not cwait_prepare(h):                  # on this thread's worker: its CPU
        # A C wake from an earlier wait is still on our pushlist (WAKING):
        # let the worker take it in, then the caller looks again.
        await kernel.yield_now()
        return
    ticket = t.new_ticket()
    thread.set_cwait(t, True)
    try:
        # No park after all if the condition holds and our own claim wins; if a
        # cancel or timer claimed the ticket first, it has made us runnable,
        # so we must park to be taken off the CPU exactly once.
        if ready() and kernel.claim(ticket) is not None:
            return
        await kernel.park()
    finally:
        thread.set_cwait(t, False)
        # Leave WAITING so a late producer's wake is a no-op; if one already
        # won (WAKING), its key arrives later and is ignored (_cwait is False).
        cwait_abort(h)
