"""An OS thread of osvrt's own that looks at a running runtime from the
outside, at intervals: the stall watchdog and the stats publisher.  The
Runtime starts one with start() and ends it with stop()."""
import threading


class Watcher:
    """Subclasses define _run(), which loops `while not self._stopped.wait(period)`
    so that stop() ends it within one period."""

    def __init__(self, name):
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self):
        raise NotImplementedError

    def start(self):
        self._thread.start()

    def stop(self):
        self._stopped.set()
        self._thread.join()
