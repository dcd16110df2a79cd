"""An OS thread of osvrt's own that looks at a running runtime from the
outside, at intervals: the stall watchdog and the stats publisher.  The
Runtime starts one with start() and ends it with stop()."""
import logging
import sys
import threading
import traceback

from ..interrupt_safe import InterruptSafeEvent

log = logging.getLogger("osvrt")

# How long stop() waits for the thread: its loop ends within one period
# (at most a second), so past this it is stuck, in a call that does not return.
EXIT_S = 2.0


class Watcher:
    """Subclasses define _run(), which loops `while not self._stopped.wait(period)`
    so that stop() ends it within one period."""

    def __init__(self, name):
        self._stopped = InterruptSafeEvent()    # stop() may run in a thread Ctrl-C hits
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self):
        raise NotImplementedError

    def start(self):
        self._thread.start()

    def stop(self, timeout=None):
        """End the thread; True once it has (or when called from the thread
        itself, which ends once this returns).  It is waited for `timeout` seconds
        (EXIT_S by default), never without a bound: a thread stuck past that is
        left running (a daemon, so it does not hold the process) and named in
        an error on the `osvrt` logger with where it is stuck, and stop()
        returns False."""
        self._stopped.set()
        th = self._thread
        if th.ident is None or th is threading.current_thread():
            return True                   # never started, or stopping itself
        th.join(EXIT_S if timeout is None else timeout)
        if not th.is_alive():
            return True
        log.error("osvrt: the %r thread did not end within %.1f s of stop(); left running "
                  "(a daemon thread) in %s", th.name, EXIT_S if timeout is None else timeout,
                  _where(th))
        return False


def _where(th):
    """Its innermost three frames, innermost first: 'fn (file:line) <- ...'."""
    frame = sys._current_frames().get(th.ident)
    if frame is None:
        return "(no frame)"
    inner = traceback.extract_stack(frame)[-3:]
    return " <- ".join(f"{f.name} ({f.filename}:{f.lineno})" for f in reversed(inner))
