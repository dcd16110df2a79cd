"""An event for a thread that Ctrl-C may interrupt: its set() never blocks.

threading.Event is built on a Condition whose __enter__ is Python code, so a
KeyboardInterrupt raised in the main thread between bytecodes can land just
after the condition's lock was taken and leave it held for good.  Another
thread's set() or wait() on that Event then blocks forever: a worker or a
watcher thread "stuck" at stop (osvrt.run's wait for main had the same
hazard with a concurrent.futures.Future; runtime.py, _wait_main).

Here the state is one raw lock, held while the event is clear.  set()
releases it, and a release never waits; wait() takes it with a timeout and
gives it back at once; clear() takes it without waiting.  An interrupt that
lands in wait() between the take and the give-back leaves the lock held,
which reads only as "clear" until the next set().
"""
import threading


class InterruptSafeEvent:
    __slots__ = ("_clear",)

    def __init__(self):
        self._clear = threading.Lock()
        self._clear.acquire()

    def set(self):
        try:
            self._clear.release()
        except RuntimeError:          # already set: a raw lock may be released once
            pass

    def clear(self):
        self._clear.acquire(False)

    def is_set(self):
        return not self._clear.locked()

    def wait(self, timeout=None):
        """True once set (now or within timeout seconds; None: no bound)."""
        if not self._clear.acquire(True, -1 if timeout is None else timeout):
            return False
        self.set()
        return True
