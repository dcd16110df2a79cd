"""The stall detector: reports a green thread that runs too long without a trap.

Scheduling is cooperative, so a thread that computes for 200 ms without an
await holds its whole CPU (and, under the GIL, delays every worker).  A
watchdog OS thread looks at each worker every threshold/2: if the same run
(same resume counter) has lasted longer than the threshold, it logs the
thread's name and where it is, once per thread, and counts a stall.  The
workers pay one store per resume for this.
"""
import logging
import sys
import threading
import time

log = logging.getLogger("osvrt")


def _where(frame):
    if frame is None:
        return "unknown location"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


class StallWatchdog:
    def __init__(self, workers, threshold):
        self._workers = workers
        self._threshold = threshold
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="osvrt-stall-watchdog", daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stopped.set()
        self._thread.join()

    def _run(self):
        period = self._threshold / 2
        while not self._stopped.wait(period):
            for w in self._workers:
                self._check(w)

    def _check(self, w):
        t = w.current
        start = w.run_start              # with t, names this run
        if t is None or t._stalled or w.current is not t:
            return
        ran = time.monotonic() - start
        if ran <= self._threshold:
            return
        frame = sys._current_frames().get(w.os_thread.ident)
        if w.current is not t or w.run_start != start:   # it trapped meanwhile
            return
        t._stalled = True
        w.stalls += 1
        log.warning("osvrt: green thread %r has run %.0f ms on CPU %d without a trap (at %s); "
                    "it holds that CPU until it awaits", t.name, ran * 1e3, w.cpu_id, _where(frame))
