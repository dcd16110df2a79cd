"""An event for a thread that Ctrl-C may interrupt: its set() never blocks.

threading.Event is built on a Condition whose __enter__ is Python code, so a
KeyboardInterrupt raised in the main thread between bytecodes can land just
after the condition's lock was taken and leave it held for good.  Another
thread's set() or wait() on that Event then blocks forever: a worker or a
watcher thread "stuck" at stop (osvrt.run's wait for main had the same
hazard with a concurrent.futures.Future; runtime.py, _wait_main).

Here the state is a flag, and a raw lock (the gate) is only how a waiter
sleeps: the gate is held while the event is clear.  set() sets the flag,
then releases the gate (a release never waits); a waiter that takes the gate
gives it back at once, so the next waiter goes too.  An interrupt anywhere
leaves the flag right: one that lands in wait() after the take still gives
the gate back (a `finally`, which the interrupt cannot skip), and one that
lands in set() between the flag and the release leaves a set flag that
every wait() sees within GATE_SLICE_S (waits sleep on the gate in slices).

A set() and a clear() racing each other may wake one waiter for nothing (it
returns True on a flag that reads clear again), or leave a set flag with the
gate shut, which a sleeping waiter then sees at the end of its slice; the
callers here look at their own condition after a wait.

The flag is a plain attribute: the gate's release and take order it for a
waiter that sleeps; one that finds it set without sleeping needs no more (it
reads a flag some set() wrote), and a slice bounds any delay in seeing it.
"""
import threading
import time

GATE_SLICE_S = 0.5


class InterruptSafeEvent:
    __slots__ = ("_flag", "_gate")

    def __init__(self):
        self._flag = False
        self._gate = threading.Lock()
        self._gate.acquire()

    def set(self):
        self._flag = True               # first: a waiter that takes the gate sees it
        self._open()

    def _open(self):
        try:
            self._gate.release()
        except RuntimeError:            # open already: a raw lock is released once
            pass

    def clear(self):
        self._flag = False
        self._gate.acquire(False)

    def is_set(self):
        return self._flag

    def wait(self, timeout=None):
        """True once set (now, or within timeout seconds; None: no bound);
        False at the timeout (at once for a timeout <= 0)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._flag:
            left = GATE_SLICE_S if deadline is None else min(GATE_SLICE_S,
                                                             deadline - time.monotonic())
            if left <= 0:
                return False
            try:
                self._gate.acquire(True, left)
            finally:
                if self._flag:
                    self._open()        # the next waiter goes too, even after an interrupt
        return True
