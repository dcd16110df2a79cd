"""Offload: run a blocking call on a bounded pool of OS threads while the
worker goes on running green threads.

    data = await osvrt.to_thread(path.read_bytes)
    n = await osvrt.to_thread(numba_kernel, array)    # @njit(nogil=True): parallel

One pool per Runtime (made at the first to_thread), of at most
min(32, len(rt.cpus) + 4) OS threads (the runtime's CPUs count, not the
host's: a cpus=1 runtime gets 5), started lazily (one more only when every
started thread is busy) and stopped at Runtime.stop, which waits for calls
still running only until its own deadline and abandons the rest.  A call parks its
green thread on a wait ticket; the pool thread that ran it ends the wait with
kernel.wake(), which is safe from any OS thread (the wake goes through the
C pushlist of the thread's CPU and kicks it if it sleeps).

Python code in the pool shares the GIL with the workers, as in asyncio's
to_thread: what runs in parallel is what releases the GIL (syscalls, numba
nogil kernels, hashlib/zlib on big buffers, numpy).
"""
import collections
import logging
import os
import threading
import time

from . import _fork, kernel

log = logging.getLogger("osvrt")

__all__ = ["to_thread", "default_pool_size"]

_pools_lock = threading.Lock()
_fork.new_lock_in_child(globals(), "_pools_lock")


def default_pool_size(cpus=None):
    """min(32, cpus + 4): cpus is the runtime's CPU count (len(rt.cpus));
    None counts the CPUs this process may run on."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0))
    return min(32, cpus + 4)


class _Job:
    __slots__ = ("fn", "args", "kwargs", "ticket", "result", "exc", "abandoned")

    def __init__(self, fn, args, kwargs, ticket):
        self.fn, self.args, self.kwargs, self.ticket = fn, args, kwargs, ticket
        self.result = self.exc = None
        self.abandoned = False


class OffloadPool:
    """A bounded pool of OS threads for one Runtime (attached as its "offload" service)."""

    def __init__(self, size=None, time_left=None):
        # time_left: a callable, the seconds this pool's stop() may wait when
        # given no timeout (the runtime's stop_time_left); None: 5 s.
        self._time_left = time_left
        self.size = default_pool_size() if size is None else int(size)
        if self.size < 1:
            raise ValueError(f"offload pool size must be >= 1, not {size!r}")
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._jobs = collections.deque()
        self._threads = []
        self._idle = 0
        self._closed = False
        self._stopped = False        # stop() has run: a second one returns at once
        self._busy = set()           # pool threads inside a call (under _lock)
        self._abandon_at_stop = False  # abandon_at_stop(): stop() waits for no call
        self.calls = 0
        self.abandoned = 0           # calls still running when stop()'s time ran out
        # The process's CPUs (its main thread's): a pool thread is started by a
        # worker, pinned to one CPU, and would inherit that pin.
        try:
            self._cpus = os.sched_getaffinity(os.getpid())
        except (AttributeError, OSError):
            self._cpus = None

    def submit(self, job):
        with self._lock:
            if self._closed:
                raise RuntimeError("osvrt.to_thread: the runtime is stopping")
            # More queued calls than idle threads (a notified thread counts
            # as idle until it wakes and takes one): start another thread.
            # Started before the call is queued: a thread that cannot start
            # (RuntimeError: can't start new thread) leaves no call behind to
            # run after to_thread has raised, and no thread stop() would join.
            if len(self._jobs) + 1 > self._idle and len(self._threads) < self.size:
                th = threading.Thread(target=self._serve, daemon=True,
                                      name=f"osvrt-offload-{len(self._threads)}")
                th.start()
                self._threads.append(th)
            self._jobs.append(job)
            self.calls += 1
            self._ready.notify()

    def _serve(self):
        if self._cpus:
            try:
                os.sched_setaffinity(0, self._cpus)
            except OSError:
                pass
        while True:
            with self._lock:
                while not self._jobs and not self._closed:
                    self._idle += 1
                    self._ready.wait()
                    self._idle -= 1
                if not self._jobs:
                    return
                job = self._jobs.popleft()
                if job.abandoned:
                    continue               # cancelled before it started: never run
                self._busy.add(threading.current_thread())
            try:
                job.result = job.fn(*job.args, **job.kwargs)
            except BaseException as e:     # handed to the green thread, re-raised there
                job.exc = e
            finally:
                with self._lock:
                    self._busy.discard(threading.current_thread())
            job.fn = job.args = job.kwargs = None
            # Drop our references before the wake, as far as we can: the
            # ticket holds the green thread (and so its result) alive, and
            # this OS thread may not get the GIL back for a while after it.
            tk, job.ticket = job.ticket, None
            kernel.wake(tk, job)           # a no-op if the caller was cancelled
            del tk, job

    def abandon_at_stop(self):
        """Let stop() (without a timeout) wait for no running call: it
        abandons them, reporting that at INFO (an asyncio loop's close():
        asyncio's executor.shutdown(wait=False)).  The pool stays open until
        then, so green threads' cleanup may still use to_thread."""
        self._abandon_at_stop = True

    def stop(self, timeout=None):
        """Drop queued calls and wait for running ones, all of them together
        for at most `timeout` seconds (None: what time_left() gives, the
        runtime's stop() deadline for an attached pool, else 5 s); a call still
        running then is abandoned, as to_thread abandons one on cancel (its
        thread is a daemon and its result is dropped).  Returns the number
        of calls abandoned.  Once stopped, a second stop() returns that
        number at once."""
        with self._lock:
            if self._stopped:
                return self.abandoned
            self._stopped = True
            self._closed = True
            for job in self._jobs:
                job.abandoned = True
            self._jobs.clear()
            self._ready.notify_all()
            threads = list(self._threads)
        if timeout is None and self._abandon_at_stop:
            timeout = 0.0
        elif timeout is None:
            timeout = 5.0 if self._time_left is None else self._time_left()
        # One deadline for all of them: joining each for `timeout` in turn
        # would let n busy threads hold stop() n times as long.
        deadline = time.monotonic() + max(0.0, timeout)
        stuck = []
        me = threading.current_thread()
        for th in threads:
            if th is me:
                # stop() from a call of this pool (Runtime.stop() inside
                # to_thread): this thread ends once the call returns.
                continue
            th.join(max(0.0, deadline - time.monotonic()))
            with self._lock:
                # An idle thread not yet woken by the notify is alive but
                # holds no call: only one inside a call is abandoned.
                if th.is_alive() and th in self._busy:
                    stuck.append(th.name)
        self.abandoned = len(stuck)
        if stuck:
            log.log(logging.INFO if self._abandon_at_stop else logging.WARNING,
                    "osvrt: %d to_thread call(s) still running at stop, abandoned "
                    "(their results are dropped): %s", len(stuck), ", ".join(stuck))
        return len(stuck)

    def stats(self):
        return {"threads": len(self._threads), "idle": self._idle, "queued": len(self._jobs),
                "calls": self.calls, "size": self.size, "abandoned": self.abandoned}


def pool_of(rt):
    p = rt.service("offload")
    if p is None:
        with _pools_lock:
            p = rt.service("offload")
            if p is None:
                # sized by the runtime's CPUs; its stop() (run by the runtime's
                # stop()) waits only for what is left of stop()'s own timeout
                p = rt.attach_service("offload", OffloadPool(default_pool_size(len(rt.cpus)),
                                                             time_left=rt.stop_time_left))
    return p


async def to_thread(fn, /, *args, **kwargs):
    """Run fn(*args, **kwargs) on the runtime's pool of OS threads and return
    its result (or raise its exception) in the calling green thread, which
    parks meanwhile while its worker runs other green threads.

    Cancellation (t.cancel(), osvrt.timeout): the green thread is released at
    once and raises Cancelled (or TimeoutError); the call itself cannot be
    interrupted, so it finishes in the background and its result is dropped
    (trio's abandon-on-cancel).  A call still queued when cancelled never runs."""
    if not callable(fn):
        raise TypeError(f"osvrt.to_thread needs a callable, not {fn!r}")
    t = kernel.current()
    w = kernel.current_worker()
    pool = pool_of(w.rt)
    tk = t.new_ticket()
    job = _Job(fn, args, kwargs, tk)
    try:
        pool.submit(job)
    except BaseException:
        kernel.wake(tk, None)        # close the opened wait before raising (never parked)
        await tk
        raise
    try:
        await tk
    except BaseException:
        job.abandoned = True
        raise
    if job.exc is not None:
        exc, job.exc = job.exc, None
        try:
            raise exc
        finally:
            exc = None
    return job.result
