"""The calls that OsvrtEventLoop.run_in_executor(None, ...) runs on the
runtime's offload pool (osvrt.to_thread) rather than in an executor that
asyncio knows: counted until each is over, so that
shutdown_default_executor() waits for them as asyncio's waits for its
default executor's threads (asyncio.run and Runner call it before close,
which would abandon them)."""
import asyncio
import threading

_QUEUED, _RUNNING, _DONE, _DROPPED, _ABANDONED = range(5)


class OffloadJob:
    """func(*args), called once by a pool thread.  It knows whether it is
    queued, running or over, also after the green thread that awaited it
    was cancelled: osvrt.to_thread then abandons the call (a call still
    queued never runs; a running one finishes in the background)."""

    __slots__ = ("_func", "_args", "_state", "_lock", "_on_abandoned_end")

    def __init__(self, func, args, on_abandoned_end):
        self._func = func
        self._args = args
        self._state = _QUEUED
        # The pool thread that runs it and the loop's thread that abandons it
        # race on _state: a lock, not the GIL, orders them.
        self._lock = threading.Lock()
        self._on_abandoned_end = on_abandoned_end

    def __call__(self):
        with self._lock:
            if self._state == _DROPPED:
                return None                  # abandoned while queued: never runs
            self._state = _RUNNING
        try:
            return self._func(*self._args)
        finally:
            with self._lock:
                abandoned = self._state == _ABANDONED
                self._state = _DONE
            if abandoned:
                self._on_abandoned_end(self)

    def abandon(self):
        """Its green thread was cancelled: True when the job is over (it
        ran, or had not started and now never will); False while it runs,
        and on_abandoned_end(job) then follows from its pool thread."""
        with self._lock:
            if self._state == _QUEUED:
                self._state = _DROPPED
                return True
            if self._state in (_RUNNING, _ABANDONED):   # twice: the future's cancel, then its thread's
                self._state = _ABANDONED
                return False
            return True


class Offloads:
    """A loop's offloaded calls not over yet.  Every method but
    _ended_elsewhere runs on the loop's OS thread (the loop thread, or a
    green thread beside it on the same worker)."""

    def __init__(self, loop):
        self._loop = loop
        self._live = set()
        self._drained = None                 # the Future a shutdown waits on

    def new(self, func, args):
        job = OffloadJob(func, args, self._ended_elsewhere)
        self._live.add(job)
        return job

    def ended(self, job):
        self._live.discard(job)
        if not self._live and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _ended_elsewhere(self, job):
        """An abandoned job ended on its pool thread."""
        try:
            self._loop.call_soon_threadsafe(self.ended, job)
        except RuntimeError:                 # the loop is closed: nobody waits any more
            pass

    async def wait(self, timeout):
        """Until every call is over (True), or timeout seconds (None: no
        limit) passed (False)."""
        if not self._live:
            return True
        if self._drained is None or self._drained.done():
            self._drained = self._loop.create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._drained), timeout)
        except TimeoutError:
            return False
        return True
