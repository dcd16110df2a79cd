"""The kernel: the few traps that every primitive is built on.

Design principles (curio's rule: features live outside the kernel):

1. A green thread is a coroutine.  It enters the kernel only by awaiting one
   of two traps, PARK ("I wait; someone will wake me") and YIELD ("I can
   run; let the fair rule pick again").  Sleep, join, Event, timeouts and
   every later primitive are built from park(), wake() and wake_at();
   nothing is special-cased in the worker loop (_engine/worker.c).  A ticket
   is itself awaitable: `await ticket` parks on it, as Event.wait() does.

2. A wait is a *ticket* (t.new_ticket()) that names one wait of a thread
   by a sequence number; wake(ticket) claims it with one compare-and-swap on
   the thread's wait word.  So of all the wakers racing for one wait (an
   Event, a timer, cancel(), another CPU) exactly one wins, with no lock and
   no reliance on the GIL.  A stale ticket (its wait was claimed or a newer
   one opened) fails the CAS: waking it is a no-op.

3. A wake never touches another CPU's run queue.  The winner puts the thread
   on its own run queue if the thread lives on the winner's worker (no call
   into the C core); otherwise it hands the thread to C
   (osvrt_ready: push onto that CPU's lock-free pushlist, kick it if it
   sleeps).  Run queues are owned by their worker alone.

4. No lost wake-ups: a waiter publishes its ticket (on the primitive's wait
   list) BEFORE it re-checks the condition; a waker changes the condition
   BEFORE it looks for tickets.  Whoever comes second sees the other.  A
   thread woken before it reached its park simply finds itself runnable.
   Waits that a C producer ends (net channels) use the C protocol of
   csrc/core/runtime.h instead, where the CAS WAITING -> WAKING plays this role.
"""
import time

from . import _engine

# The engine calls the C core through the table the core exports, directly,
# with no cffi on the way (csrc/core/core_api.h); Runtime.start() gives it that
# table, once (_setup.py): importing this module changes nothing in the engine.

# The traps, the thread states and the kernel calls live in the engine
# (osvrt/_engine/: module.c, thread.c, worker.c); this module names them.
PARK = _engine.PARK              # trap values, compared by identity in the loop
YIELD = _engine.YIELD
TIMED_OUT = _engine.TIMED_OUT     # what a wait returns when a wake_at() timer won
UNSTARTED = _engine.UNSTARTED     # Thread.state values, written only by the thread's worker
QUEUED = _engine.QUEUED           # runnable: in a run queue, or on its way to one
RUNNING = _engine.RUNNING
WAITING = _engine.WAITING         # parked until a wake
TERMINATED = _engine.TERMINATED

_OUTSIDE = _engine.OUTSIDE

# The scheduler's clock: CLOCK_MONOTONIC, as the engine's loop reads it (on
# Linux time.perf_counter is the same clock and costs half of monotonic()).
monotonic = time.perf_counter

current = _engine.current              # the running green thread (RuntimeError outside)
current_worker = _engine.current_worker
park = _engine.park                    # await park(): wait until a wake claims our ticket
wake = _engine.wake                    # wake(ticket, value=None) -> bool, from any OS thread
claim = _engine.claim                  # claim(ticket) -> Thread or None
schedule = _engine.schedule            # schedule(claimed_thread, value=None)
wake_at = _engine.wake_at              # wake_at(ticket, delay, value=TIMED_OUT) -> Timer
yield_now = _engine.yield_now
sleep = _engine.sleep
# spawn(fn, *args, name=None, cpu=None, priority=1.0) -> Thread (module.c):
# unpinned, a thread starts on the spawner's CPU (as OSv).
spawn = _engine.spawn


def outside():
    return RuntimeError(_OUTSIDE)


# the argument checks live in checks.py; these names stay for kernel's callers
from .checks import check_delay, check_timeout  # noqa: E402,F401
