"""The kernel: the few traps that every primitive is built on.

Design principles (curio's rule: features live outside the kernel):

1. A green thread is a coroutine.  It enters the kernel only by awaiting one
   of two traps, PARK ("I wait; someone will wake me") and YIELD ("I can
   run; let the fair rule pick again").  Sleep, join, Event, timeouts and
   every later primitive are built from park(), wake() and wake_at();
   nothing is special-cased in the worker loop (cpu.py).

2. A wait is a *ticket*: a one-element list [thread] made just before a park.
   wake(ticket) claims it with list.pop(), a single atomic operation (under
   the GIL, and under the per-object lock of free-threaded CPython).  So of
   all the wakers racing for one wait (an Event, a timer, cancel(), another
   CPU) exactly one wins, and no Python lock and no C call is needed to
   decide it.  A stale ticket is just an empty list: waking it is a no-op.

3. A wake never touches another CPU's run queue.  The winner puts the thread
   on its own run queue if the thread lives on the winner's worker (no C
   call: local wake-ups stay in Python); otherwise it hands the thread to C
   (osvrt_ready: push onto that CPU's lock-free pushlist, kick it if it
   sleeps).  Run queues are owned by their worker alone.

4. No lost wake-ups: a waiter publishes its ticket (on the primitive's wait
   list) BEFORE it re-checks the condition; a waker changes the condition
   BEFORE it looks for tickets.  Whoever comes second sees the other.  A
   thread woken before it reached its park simply finds itself runnable.
   Waits that a C producer ends (net channels) use the C protocol of
   csrc/wake.h instead, where the CAS WAITING -> WAKING plays this role.
"""
import heapq
import math
import threading
import time
import types

_heappush = heapq.heappush
_tls = threading.local()    # .worker: the Worker this OS thread runs, if any

# Trap values: unique objects, so that no foreign awaitable's yield (0, 1,
# None, a Future) can pass for one; the loop compares them by identity.
PARK = object()
YIELD = object()

# Thread states (Thread.state), written only by the thread's own worker.
UNSTARTED = "unstarted"
QUEUED = "queued"           # runnable: in a run queue, or on its way to one
RUNNING = "running"
WAITING = "waiting"         # parked until a wake
TERMINATED = "terminated"
TIMED_OUT = object()        # what park() returns when a wake_at() timer won

_OUTSIDE = ("not inside an osvrt runtime: start one with osvrt.run(main) "
            "or hand work to a running one with Runtime.submit()")

# The scheduler's clock.  On Linux both time.monotonic and time.perf_counter
# are clock_gettime(CLOCK_MONOTONIC); perf_counter costs half as much to call.
monotonic = time.perf_counter


@types.coroutine
def _trap(what):
    return (yield what)


def park():
    """Await it to wait until a wake() claims the thread's current ticket;
    it returns the value that wake() passed."""
    return _trap(PARK)


def current_worker():
    try:
        return _tls.worker
    except AttributeError:
        return None


def outside():
    return RuntimeError(_OUTSIDE)


def current():
    """The running green thread; RuntimeError outside a green thread."""
    try:
        t = _tls.worker.current
    except AttributeError:
        t = None
    if t is None:
        raise RuntimeError(_OUTSIDE)
    return t


def wake(ticket, value=None):
    """End the wait that `ticket` stands for, if nobody did yet.  Safe from any
    OS thread.  Returns True if this call woke the thread."""
    try:
        t = ticket.pop()          # the claim (principle 2)
    except IndexError:
        return False
    # schedule(t, value), inlined: this is every local wake's path.
    t._value = value
    w = t._w
    try:
        here = _tls.worker
    except AttributeError:
        here = None
    if w is here:
        if t._rn != w.renorm:
            w.catch_up(t)
        t._state = QUEUED
        w._order += 1
        _heappush(w.runq, (t._r, w._order, t))
        w.wakes_local += 1
    else:
        w.post(t)
    return True


def claim(ticket):
    """The thread of `ticket` if this call claimed it, else None.  For
    primitives that must hand something over (ownership, an item) between the
    claim and the schedule()."""
    try:
        return ticket.pop()
    except IndexError:
        return None


def schedule(t, value=None):
    """Make a claimed thread runnable again, with `value` as what its park()
    returns (principle 3)."""
    t._value = value
    w = t._w
    try:
        here = _tls.worker
    except AttributeError:
        here = None
    if w is here:                 # local: straight onto our own run queue
        if t._rn != w.renorm:
            w.catch_up(t)
        t._state = QUEUED
        w._order += 1
        _heappush(w.runq, (t._r, w._order, t))
        w.wakes_local += 1
    else:
        w.post(t)


def wake_at(ticket, delay, value=TIMED_OUT):
    """Arm a timer on the current worker that wakes `ticket` after `delay`
    seconds.  Returns the timer entry; set entry[2] = None to disarm it."""
    return _tls.worker.add_timer(monotonic() + delay, _wake_timer, (ticket, value))


def _wake_timer(arg):
    wake(arg[0], arg[1])


def check_delay(seconds, what="seconds"):
    """A non-negative finite number of seconds, or TypeError/ValueError naming it."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {seconds!r}")
    if not seconds >= 0 or math.isinf(seconds):
        raise ValueError(f"{what} must be a finite number >= 0, not {seconds!r}")
    return seconds


def check_timeout(timeout):
    return None if timeout is None else check_delay(timeout, "timeout")


@types.coroutine
def yield_now():
    """Let the fair rule pick again (the caller may well keep running)."""
    # A generator, not `async def`: one frame per yield instead of two.
    try:
        t = _tls.worker.current
    except AttributeError:
        t = None
    if t is None:
        raise RuntimeError(_OUTSIDE)
    yield YIELD


async def sleep(seconds):
    """Sleep `seconds` (>= 0); sleep(0) only yields."""
    check_delay(seconds)
    t = current()
    if seconds == 0:
        await _trap(YIELD)
        return
    ticket = t._new_ticket()
    timer = wake_at(ticket, seconds, None)
    try:
        await park()
    finally:
        timer[2] = None           # woken early (cancel): disarm
