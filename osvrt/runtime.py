"""Runtime: starts one pinned worker per CPU, and is the door in from other
OS threads (submit, run, stop).  spawn() is the door in from green threads.
"""
import concurrent.futures
import errno
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from . import _engine, _fork, balancer, kernel
from .observe import trace as _trace
from . import readiness
from ._core import ffi, lib
from ._setup import set_up_engine
from .checks import check_bool, check_number, check_timeout
from .interrupt_safe import InterruptSafeEvent
from .observe.statsfile import StatsFile
from .worker import Worker, alloc_handles
from .observe.introspect import Publisher
from .observe.stall import STALL_THRESHOLD_MAX, STALL_THRESHOLD_MIN, StallWatchdog
from . import thread as _thread
from .thread import Cancelled

log = logging.getLogger("osvrt")
_T = TypeVar("_T")

_NEW, _STARTING, _RUNNING, _STOPPED = "new", "starting", "running", "stopped"

# stop() without a timeout waits for every green thread; one that swallows
# its Cancelled would make that wait silent and endless.  After this many
# seconds stop() logs the threads it still waits for, by name, and again
# after twice as long each time (5, 10, 20, ... s).
STOP_REPORT_S = 5.0
# With stop(timeout=None), to_thread calls still running are waited for at
# most this long in all, then abandoned (they are not green threads: stop()
# cannot cancel them).
OFFLOAD_STOP_S = 5.0
# Once stop()'s deadline has passed, the workers still get this long, in all,
# to leave their loops (a worker that is not stuck leaves in microseconds).
WORKER_EXIT_S = 0.5
# How often a wait for another stop() looks at the state that stop() leaves.
DONE_POLL_S = 0.1


def resolve_cpus(cpus):
    available = sorted(os.sched_getaffinity(0))
    if cpus is None:
        return tuple(available)
    if isinstance(cpus, bool):
        raise ValueError(f"cpus={cpus!r}: give None, a count, or CPU ids")
    if isinstance(cpus, int):
        if not 1 <= cpus <= len(available):
            raise ValueError(f"cpus={cpus!r}: a count must be 1..{len(available)} "
                             f"(this process may use CPUs {available})")
        return tuple(available[:cpus])
    if isinstance(cpus, (str, bytes)):
        raise ValueError(f"cpus={cpus!r}: give None, a count, or an iterable of CPU ids")
    try:
        ids = list(cpus)
    except TypeError:
        raise ValueError(f"cpus={cpus!r}: give None, a count, or an iterable of CPU ids") from None
    if not ids:
        raise ValueError(f"cpus={cpus!r}: no CPUs given")
    for c in ids:
        if isinstance(c, bool) or not isinstance(c, int) or c not in available:
            raise ValueError(f"cpus: {c!r} is not a CPU this process may use {available}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"cpus={ids!r}: a CPU is named twice")
    return tuple(ids)


class Runtime:
    """One worker OS thread per CPU, each pinned to its CPU.

    For subclasses inside osvrt: _start_worker(w, ready) starts worker w's OS
    thread (a subclass may run the worker elsewhere: osvrt.aio's loop runs its
    one worker on the thread that runs the loop)."""

    def __init__(self, cpus=None, *, pin=True, balance=True, balance_interval=0.01,
                 idle_spin_us=50, stall_threshold=0.1, balance_policy="osvrt",
                 min_move_runtime=0.001, trace=None, trace_events=_trace.DEFAULT_EVENTS,
                 stats_file=True):
        self._cpus = resolve_cpus(cpus)
        # trace: a path; start() records each CPU's scheduler events and
        # stop() writes them there as Chrome trace JSON (osvrt/observe/trace.py).
        self._trace_path = _trace.check_path(trace)
        self._trace_events = _trace.check_events(trace_events)
        self._trace_names = {}       # thread id -> name, for the trace (trace.py, "Names")
        # stats_file: the counters live in /dev/shm/osvrt-<pid>-<n>.stats, for
        # `python -m osvrt top` (osvrt/observe/statsfile.py)
        self._stats_file_on = check_bool("stats_file", stats_file)
        self._stats_file = None
        # Workers whose loop has ended for good (_worker_loop_ended), and
        # whether stop() left the stats file mapped for one that had not: both
        # under the lock, so exactly one of stop() and the last loop's end
        # unmaps it.
        self._loops_lock = threading.Lock()
        self._loops_ended = set()
        self._stats_left_mapped = False
        self._publisher = None
        self._stop_error = None
        self._pin = check_bool("pin", pin)
        self._balance = check_bool("balance", balance)
        self._balance_interval = check_number("balance_interval", balance_interval, 0,
                                               allow_equal=False)
        if balance_policy not in balancer.POLICIES:
            raise ValueError(f"balance_policy={balance_policy!r}: one of {balancer.POLICIES}")
        self._balance_policy = balance_policy
        # The balancer moves only threads whose decayed runtime (fair.py) is at
        # least this many seconds: see balancer.movable.
        self._min_move_runtime = check_number("min_move_runtime", min_move_runtime, 0,
                                               allow_equal=True)
        self._system = []          # balancer threads: not waited for by stop()
        self._spin_ns = int(check_number("idle_spin_us", idle_spin_us, 0, allow_equal=True) * 1000)
        if self._spin_ns > 10**9:
            raise ValueError(f"idle_spin_us must be at most 1,000,000 (1 s of polling), not {idle_spin_us!r}")
        self._stall_threshold = (None if stall_threshold is None else
                                 check_number("stall_threshold", stall_threshold, 0,
                                               allow_equal=False))
        # The watchdog wakes every threshold/4: below 1 ms it would spin a
        # CPU, and past a day Event.wait() overflows and kills the watchdog.
        if self._stall_threshold is not None and not (
                STALL_THRESHOLD_MIN <= self._stall_threshold <= STALL_THRESHOLD_MAX):
            raise ValueError(f"stall_threshold must be between {STALL_THRESHOLD_MIN} and "
                             f"{STALL_THRESHOLD_MAX} seconds (or None), not {stall_threshold!r}")
        self._state = _NEW
        self._workers = ()
        self._worker_cpus = ()     # the workers' host CPUs, in order (least_loaded)
        self._by_cpu = {}
        self._by_handle = {}       # C handle -> Thread, for threads that crossed CPUs
        self._foreign_handles = []  # free C handles for submits from foreign OS threads
        self._foreign_lock = threading.Lock()
        self._live = _engine.LiveSet()   # live green threads (add, discard, len, iter)
        self._spawned = 0
        self._stopping = False
        # Held by _submit() from its state check to its post, and by stop()
        # to mark the runtime stopping: a submit either gets in before stop()
        # looks at the live threads, or is refused at once (RuntimeError).
        self._door = threading.Lock()
        # Events whose set() never blocks (interrupt_safe.py: a Ctrl-C in the
        # thread that sets or waits must not leave a lock another thread needs).
        self._stopped = InterruptSafeEvent()      # set when stop() has finished
        self._start_ended = InterruptSafeEvent()  # set when start() has returned or raised
        self._all_done = InterruptSafeEvent()     # set by a worker: stop() may go on
        self._crt = None
        self._watchdog = None
        self._crashed = None
        # Attached services (attach_service): name -> object with stop() and
        # stats(), in attach order; stopped before the workers are joined.
        self._services = {}
        self._services_lock = threading.Lock()
        self._services_stopped = False
        self._stop_deadline = None  # monotonic time stop(timeout) must return by, or None

    @property
    def cpus(self):
        return self._cpus

    def __repr__(self):
        return f"<osvrt.Runtime cpus={self._cpus} {self._state}>"

    # ---- life cycle ------------------------------------------------------

    def start(self) -> "Runtime":
        # Checked and moved on under the door: two OS threads that call
        # start() at once would otherwise both build a set of workers.
        with self._door:
            if self._state != _NEW:
                raise RuntimeError(f"this Runtime is {self._state}; a Runtime starts once")
            self._state = _STARTING
            self._start_ended.clear()     # (set by a start that failed before this one)
        try:
            return self._start()
        except BaseException:
            with self._door:
                ran = self._state == _STARTING and any(
                    w.os_thread is not None for w in self._workers)
                if self._state == _STARTING:
                    # No worker started: the Runtime may be started again.
                    # Workers that did are stopped below, as a running one's.
                    self._state = _RUNNING if ran else _NEW
                    if not ran:
                        self._workers = ()
            if ran:
                try:
                    self.stop(timeout=5.0)     # a failed start leaves no thread behind
                except Exception:
                    log.exception("osvrt: stopping the workers of a failed start")
            raise
        finally:
            self._start_ended.set()

    def _start(self):
        set_up_engine()
        crt = lib.osvrt_rt_new(len(self._cpus))
        if crt == ffi.NULL:
            err = ffi.errno
            if err in (errno.EMFILE, errno.ENFILE):
                raise OSError(err, "osvrt: cannot make the per-CPU epoll and eventfd: "
                                   "too many open files")
            raise MemoryError("osvrt: cannot allocate the C runtime")
        readiness.track(self)
        # Freed when the last reference goes, never while a worker, a Thread or
        # a foreign waker still holds a path to it.
        self._crt = ffi.gc(crt, lib.osvrt_rt_free)
        workers = tuple(Worker(self, i, c, self._crt, self._spin_ns, by_handle=self._by_handle,
                               live=self._live, min_move_runtime=self._min_move_runtime,
                               on_crash=self._worker_crashed,
                               on_loop_end=self._worker_loop_ended)
                        for i, c in enumerate(self._cpus))
        # Before any worker's loop runs: the trace buffers and the stats
        # binding belong to the workers' own threads once they do.
        if self._trace_path is not None:
            _trace.check_writable(self._trace_path)
            for w in workers:
                w.trace_start(self._trace_events)
        if self._stats_file_on:
            try:
                self._stats_file = StatsFile(workers)
            except (OSError, ImportError) as e:
                log.warning("osvrt: no stats file for `python -m osvrt top`: %s", e)
        self._workers = workers
        self._worker_cpus = tuple(w.cpu_id for w in workers)
        self._by_cpu = {w.cpu_id: w for w in self._workers}
        errors = []
        started = threading.Semaphore(0)

        def ready(worker, err):
            if err is not None:
                errors.append((worker.cpu_id, err))
            started.release()

        for w in self._workers:
            w.os_thread = self._start_worker(w, ready)
        for _ in self._workers:
            started.acquire()
        with self._door:
            self._state = _RUNNING
        _fork.started(self)
        if errors:
            self.stop()
            cpu, err = errors[0]
            if isinstance(err, OSError):
                raise OSError(err.errno, f"osvrt: cannot pin a worker to CPU {cpu}: {err.strerror}")
            raise RuntimeError(f"osvrt: the worker for CPU {cpu} could not start: {err!r}") from err
        if self._stall_threshold is not None:
            self._watchdog = StallWatchdog(self._workers, self._stall_threshold)
            self._watchdog.start()
        if self._balance and len(self._workers) > 1:
            self._start_balancers()
        if self._stats_file is not None or self._trace_path is not None:
            self._publisher = Publisher(self, self._stats_file,
                                        self._trace_names if self._trace_path is not None
                                        else None)
            self._publisher.start()
        return self

    def _start_worker(self, w, ready):
        """(subclass hook: declared in the class's help) Start worker w's OS
        thread, which calls ready(w, err) once pinned, and return it.  The
        result is kept as w.os_thread: start, stop and the stall watchdog use
        its name, ident, native_id, is_alive() and join(timeout).
        osvrt.aio's loop runs its worker on the loop's own thread instead."""
        th = threading.Thread(target=w.main, args=(self._pin, ready),
                              name=f"osvrt-cpu{w.cpu_id}", daemon=True)
        th.start()
        return th

    @property
    def stats_path(self):
        """The path of this runtime's stats file (`python -m osvrt top`), or
        None (not started, stopped, or stats_file=False)."""
        f = self._stats_file
        return None if f is None or f.closed else f.path

    def _start_balancers(self):
        osv = self._balance_policy == "osv"
        for w in self._workers:
            w.idle_pull = not osv
            w.post(self._make_thread(balancer.balancer, (w, self._balance_interval, osv),
                                     f"osvrt-balancer-cpu{w.cpu_id}", w, True, 1.0,
                                     system=True))

    def stop(self, timeout: float | None = None) -> None:
        """Cancel every live green thread, wait up to `timeout` seconds for them
        to finish (their cleanup runs), then join every worker."""
        timeout = check_timeout(timeout)
        w = kernel.current_worker()
        # One deadline for the whole call: a start() under way in another OS
        # thread is waited for within it (and the workers' exit allowance),
        # as a second stop() is (below), and the cancels get what is left.
        deadline = None if timeout is None else time.monotonic() + timeout
        start_until = None if deadline is None else deadline + WORKER_EXIT_S
        if _fork.forked_from(self) is not None:
            # A forked child's copy: no worker of it runs here, nothing to wait for.
            self._state = _STOPPED
            self._stopped.set()
            return
        while True:
            with self._door:
                if self._state == _NEW:
                    self._state = _STOPPED
                    self._stopped.set()
                    return
                if self._state != _STARTING:
                    if w is not None and w.rt is self and self._state != _STOPPED:
                        raise RuntimeError("Runtime.stop() from inside its own green thread "
                                           "would wait for itself; stop it from outside (or "
                                           "let main return)")
                    second = self._state == _STOPPED or self._stopping
                    self._stopping = True
                    self._live.watch_empty()   # the last thread to end tells us (_thread_ended)
                    break
            # start() is under way in another OS thread: stop what it starts.
            self._wait_for_start(start_until)
        if second:
            self._wait_for_other_stop(timeout, start_until)
            return
        self._stop_deadline = deadline
        if self._trace_path is not None:
            self._note_names()             # named threads that the cancel below will end
        try:
            self._cancel_all(deadline)
        finally:
            try:
                self._stop_workers()
            finally:
                try:
                    _fork.stopped(self)
                finally:
                    self._stopped.set()
        err, self._stop_error = self._stop_error, None
        if err is not None:
            raise err

    def _other_stop_waits_for(self):
        live = [t for t in list(self._live) if not t.done()]
        return _waiting_line(live) if live else "its services and workers to stop"

    def _wait_for_other_stop(self, timeout, until):
        """Another stop() is under way: return when it is done, within this
        call's own bound (timeout, and the workers' exit allowance)."""
        def too_long(waited):
            return TimeoutError(
                f"Runtime.stop(timeout={timeout}): another stop() of this runtime is under "
                f"way and did not end in time; it waits for {self._other_stop_waits_for()}")
        # Its end is _stopped, or the state it leaves once its work is done:
        # a Ctrl-C in that stop() between the two (its thread is often the
        # main thread) must not leave every later stop() waiting.
        _wait_named(self._stopped, until, too_long,
                    lambda: "another stop() of this runtime, which waits for "
                            + self._other_stop_waits_for(),
                    done=lambda: self._state == _STOPPED)

    def _wait_for_start(self, until):
        """Wait for the start() under way in another OS thread to return or raise."""
        def too_long(waited):
            return TimeoutError(
                f"Runtime.stop(): start() of this runtime in another OS thread has not "
                f"returned after {waited:.1f} s (its workers are not all running yet)")
        _wait_named(self._start_ended, until, too_long,
                    lambda: "start() in another OS thread to return")

    def stop_time_left(self, unbounded: float = OFFLOAD_STOP_S) -> float:
        """Seconds left of stop()'s timeout (at least 0), for a service whose
        stop() waits (the offload pool); `unbounded` when stop() was given no
        timeout (or has not begun)."""
        d = self._stop_deadline
        return unbounded if d is None else max(0.0, d - time.monotonic())

    def _note_names(self):
        _thread.note_names(list(self._live), self._trace_names)

    def _cancel_all(self, deadline):
        cancelled = set()                     # cancel each thread once: let cleanup code run
        # First, each worker cancels its own threads (local wakes: no C call
        # per thread, which from this foreign OS thread would each invite a
        # GIL hand-off); then we cancel whatever is left (moved, new) directly.
        for w in self._workers:
            w.post(self._make_thread(_cancel_local, (self, w, cancelled),
                                     f"osvrt-stop-cpu{w.cpu_id}", w, True, 1.0, system=True))
        first = True
        began = time.monotonic()
        report_at = began + STOP_REPORT_S
        report_every = STOP_REPORT_S
        while True:
            live = [t for t in list(self._live) if not t.done()]
            if not live:
                return
            if self._crashed is not None:
                log.error("osvrt: a worker crashed; %d green thread(s) abandoned at stop",
                          len(live))
                return
            if not first:
                for t in live:
                    if t.id not in cancelled:
                        cancelled.add(t.id)
                        t.cancel()
            first = False
            self._all_done.clear()
            if not self._live:
                return
            now = time.monotonic()
            left = None if deadline is None else deadline - now
            if left is not None and left <= 0:
                log.error("osvrt: %s", _abandoned_line(list(self._live)))
                return
            if now >= report_at:
                # Never a silent wait: name what stop() is waiting for.
                log.warning("osvrt: stop() has waited %.1f s for %s", now - began,
                            _waiting_line([t for t in list(self._live) if not t.done()]))
                report_every *= 2
                report_at = now + report_every
            self._all_done.wait(0.05 if left is None else min(0.05, left))

    def _stop_workers(self):
        with self._services_lock:
            self._services_stopped = True
            services = list(self._services.items())
        for name, svc in services:
            try:
                svc.stop()
            except Exception:
                log.exception("osvrt: the %r service failed to stop: %r", name, svc)
        for w in self._workers:
            w.stop_requested = True
            w.kick()
        # Joined within what is left of stop()'s timeout (and WORKER_EXIT_S
        # more, in all, once it has passed), never longer than 5 s in all.
        d = self._stop_deadline
        now = time.monotonic()
        join_until = now + (5.0 if d is None else min(5.0, max(d - now, WORKER_EXIT_S)))
        for w in self._running_workers():
            w.os_thread.join(max(0.0, join_until - time.monotonic()))
            if w.os_thread.is_alive():
                # repr(): a log record must not keep the thread (and its frames) alive
                log.critical("osvrt: worker for CPU %d is stuck in green thread %s and "
                             "could not be stopped", w.cpu_id, repr(w.current))
        if self._watchdog is not None:
            self._watchdog.stop()
        if self._publisher is not None:
            self._publisher.stop()
        exited = [w for w in self._running_workers() if not w.os_thread.is_alive()]
        if self._stats_file is not None:
            # The counters carry over to the workers' own memory.  A stuck
            # worker may still write into the file's mapping: it stays mapped
            # until the last such worker's loop ends (_worker_loop_ended).
            # Under the lock, as the last loop end's close is: the two never
            # overlap, and whichever comes second finds the file closed.
            with self._loops_lock:
                all_ended = self._all_loops_ended()
                self._stats_left_mapped = not all_ended
                self._stats_file.close(workers_exited=all_ended)
        if self._trace_path is not None:
            self._write_trace(exited)
        # System threads that never got to run would warn "never awaited" when
        # collected; no worker runs any more, so closing them here is safe.
        for t in self._system:
            _thread.close_unstarted(t)
        self._settle_abandoned()
        self._state = _STOPPED

    def _running_workers(self):
        """The workers whose OS thread was started (a failed start may have
        made workers it never started)."""
        return [w for w in self._workers if w.os_thread is not None]

    def _write_trace(self, exited):
        """Take each stopped worker's events and write the trace (a stuck
        worker's buffer is left to it: it may still write)."""
        per_cpu, lost = [], []
        for w in self._workers:
            if w in exited:
                buf, n_lost = w.trace_take()
                per_cpu.append(_trace.decode(buf))
                lost.append(n_lost)
            else:
                per_cpu.append([])
                lost.append(0)
        self._note_names()
        if any(lost):
            log.warning("osvrt: the trace lost %d event(s): a CPU's buffer of %d filled up "
                        "(Runtime(trace_events=...))", sum(lost), self._trace_events)
        try:
            _trace.write(self._trace_path, per_cpu, self._cpus, self._trace_names, lost)
        except OSError as e:
            log.error("osvrt: cannot write the trace to %r: %s", self._trace_path, e)
            self._stop_error = e

    def _settle_abandoned(self):
        """After the workers' loops: no green thread left behind may leave a
        caller waiting.  The submit() Future of every thread that did not end
        (it ignored its cancel, or never ran) is cancelled; a thread that never
        started (still on a pushlist) is closed and forgotten, and the others
        are handed back to the cyclic GC (live threads are hidden from it)."""
        stuck = {w for w in self._running_workers() if w.os_thread.is_alive()}
        for t in list(self._live):
            if t.done():
                continue
            fut = _thread.submit_future(t)
            if fut is not None and fut.cancel():
                _thread.notify_cancelled(fut)         # wakes concurrent.futures.wait()
            if t.worker in stuck:
                continue                  # it exposes its own threads when it ends
            if _thread.close_unstarted(t):
                self._live.discard(t)
            else:
                # Its worker exposed its threads as its loop ended, but not one
                # moved to it after that (a move out of a worker still running):
                # the worker is joined, so no OS thread can end t meanwhile.
                self._live.expose_to_gc(t)

    def __enter__(self):
        if self._state == _NEW:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---- doors in --------------------------------------------------------

    def submit(self, fn: Callable[..., Awaitable[_T]], *args: Any, cpu: int | None = None,
               name: str | None = None, **kwargs: Any) -> "concurrent.futures.Future[_T]":
        """Start fn(*args) as a green thread from any OS thread; returns a
        concurrent.futures.Future with its result or exception.  Keyword
        arguments for fn: submit functools.partial(fn, k=v), as with spawn."""
        if kwargs:
            raise _keywords_error("submit", "cpu and name", kwargs)
        return self._submit(fn, args, cpu, name)[1]

    def _submit(self, fn, args, cpu, name, future=True):
        if _fork.forked_from(self) is not None:
            # before the lock: fork() may have copied it held by another thread
            raise _fork.refusal(self)
        with self._door:
            return self._submit_locked(fn, args, cpu, name, future)

    def _submit_locked(self, fn, args, cpu, name, future):
        if self._crashed is not None:
            raise RuntimeError(f"this Runtime is broken: a worker crashed ({self._crashed!r})")
        if self._state != _RUNNING or self._stopping:
            state = self._state if self._state != _RUNNING else "stopping"
            raise RuntimeError(f"this Runtime is {state}: "
                               "submit() needs a started Runtime (rt.start() or `with rt:`)")
        if cpu is None:
            # The least loaded CPU; on a tie, the one this OS thread runs on:
            # a caller that then blocks on the Future frees that CPU for the
            # worker, and the round trip needs no cross-CPU wake (measured
            # here: 43 us against 105 us for the other CPU).
            # (The pick is in C, place.c: in Python it cost 2.4 us a call.)
            target = _engine.least_loaded(self._workers, self._worker_cpus)
        else:
            target = self._worker_for(cpu)
        t = self._make_thread(fn, args, name, target, cpu is not None, 1.0)
        fut = None
        if future:
            fut = concurrent.futures.Future()
            _thread.set_submit_future(t, fut)
            fut.add_done_callback(lambda f, t=t: f.cancelled() and t.cancel())
        target.post(t)
        return t, fut

    def run(self, fn: Callable[..., Awaitable[_T]], *args: Any, timeout: float | None = None,
            **kwargs: Any) -> _T:
        """Run fn(*args) as a green thread and block until it ends (from an OS
        thread that is not one of this runtime's workers).  timeout: seconds;
        past it the thread is cancelled (its cleanup runs on) and TimeoutError
        is raised.  Keyword arguments for fn: run functools.partial(fn, k=v)."""
        if kwargs:
            raise _keywords_error("run", "timeout", kwargs)
        timeout = check_timeout(timeout)
        if kernel.current_worker() is not None:
            raise RuntimeError("Runtime.run() blocks its OS thread; inside the runtime "
                               "use `await osvrt.spawn(fn).join()` instead")
        if not self._workers or _fork.forked_from(self) is not None:
            return self.submit(fn, *args).result()     # raises: not started, or forked
        # Wait in C with the GIL released, polling before it sleeps: a quick
        # round trip then costs no futex wake on either side (thread.c,
        # _wait_done).  Counted as a GIL holder until then, so the worker that
        # finds the thread does not block on the GIL we still hold.
        self._workers[0].enter_active()
        try:
            with self._door:       # (forked_from was checked just above)
                t, _ = self._submit_locked(fn, args, None, None, False)
        except BaseException:
            self._workers[0].leave_active()
            raise
        # Poll only from another CPU than the worker's; on its own CPU (the
        # usual case: see _submit) sleep at once and leave the CPU to it.
        spin = len(self._workers) > 1 and t.worker.cpu_id != _engine.current_cpu()
        left_active = False
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not _thread.wait_done(t, 0.1 if deadline is None else
                                   max(0.0, min(0.1, deadline - time.monotonic())),
                                   not left_active, spin):
                left_active = True          # let Ctrl-C in between polls
                if deadline is not None and time.monotonic() >= deadline:
                    t.cancel()
                    raise TimeoutError(f"Runtime.run: {_function_name(fn) or fn!r} did not "
                                       f"finish within timeout={timeout} s; its green thread "
                                       f"was cancelled (its cleanup runs on)")
                if self._crashed is not None:
                    raise RuntimeError(f"osvrt: a worker crashed ({self._crashed!r})")
                if self._state == _STOPPED:
                    # abandoned at stop(), as a submit() Future would be cancelled
                    raise concurrent.futures.CancelledError()
            left_active = True
        finally:
            if not left_active:
                self._workers[0].leave_active()
        if isinstance(_thread.exception(t), Cancelled):
            # as from a submit() Future: stop() cancelled it
            raise concurrent.futures.CancelledError() from _thread.exception(t)
        return _thread.outcome(t)

    # ---- the service interface ---------------------------------------------
    # What the parts built on the runtime (osvrt.net's channels, the offload
    # pool, net/tcp, aio) use, instead of its private attributes: in the
    # spirit of trio's Instruments, a declared, small surface.

    @property
    def workers(self):
        """The workers, one per CPU, in the order of `cpus` (empty before start)."""
        return self._workers

    @property
    def core(self):
        """The C runtime (a cffi `struct osvrt_rt *`), or None before start."""
        return self._crt

    @property
    def stopping(self):
        """True once stop() has begun (or the runtime stopped)."""
        return self._stopping or self._state == _STOPPED

    def live_threads(self):
        """A snapshot list of the live green threads (system threads excluded)."""
        return list(self._live)

    def attach_service(self, name, service):
        """Attach `service` (an object with stop() and stats() -> dict) under
        `name`: stop() runs when the runtime stops, before the workers are
        joined; stats() becomes rt.stats()[name].  RuntimeError once the
        runtime's services have been stopped; ValueError if `name` is taken."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a service name is a non-empty str, not {name!r}")
        for method in ("stop", "stats"):
            if not callable(getattr(service, method, None)):
                raise TypeError(f"a service has callable stop() and stats(); {service!r} "
                                f"has no {method}()")
        with self._services_lock:
            if self._services_stopped:
                raise RuntimeError(f"{self!r} has stopped its services: cannot attach {name!r}")
            if name in self._services:
                raise ValueError(f"a service named {name!r} is already attached to {self!r}")
            self._services[name] = service
        return service

    def service(self, name):
        """The service attached under `name`, or None."""
        return self._services.get(name)

    def worker_for(self, cpu):
        """The worker of host CPU `cpu` (ValueError if it is not one of `cpus`)."""
        w = None if isinstance(cpu, bool) or type(cpu) is not int else self._by_cpu.get(cpu)
        if w is None:
            raise ValueError(f"cpu={cpu!r} is not one of this runtime's CPUs {self._cpus}")
        return w

    _worker_for = worker_for     # the engine's hook name (module.c, m_spawn)

    # ---- internals shared with workers -----------------------------------

    def _make_thread(self, fn, args, name, target, pinned, priority, system=False):
        """A new green thread for `target` (the engine's one constructor,
        which osvrt.spawn uses too); a system thread (balancer, stop helper)
        is neither live (stop() does not wait for it) nor counted."""
        t = _engine.make_thread(fn, tuple(args), name, target, pinned, priority, system)
        if system:
            self._system.append(t)       # closed at stop if it never ran
            return t
        if name is not None and self._trace_path is not None:
            self._trace_names[t.id] = name
        self._spawned += 1
        return t

    def handle_for(self, t):
        """The C thread-table handle of green thread t, allocated on its first
        cross-CPU trip (a C producer wakes t by this handle: cwait, net channels)."""
        if t.handle:
            return t.handle          # given before: a second one would orphan the first
        w = kernel.current_worker()
        if w is not None and w.rt is self:
            h = w.take_handle()
        else:
            # A foreign OS thread: from a pool refilled in batches (one C call
            # per 64 submits); the lock orders foreign threads, not workers.
            with self._foreign_lock:
                if not self._foreign_handles:
                    self._foreign_handles = alloc_handles(self._crt, 0, 64)
                h = self._foreign_handles.pop()
        self._by_handle[h] = t           # before the push that makes it findable
        t.handle = h
        return h

    _handle_for = handle_for     # the engine's hook name (worker.c, worker_post)

    def _thread_ended(self, t):
        """(hook) The last live thread, t, ended during stop() (worker.c
        calls this only once stop() has called _live.watch_empty()): stop()
        goes on."""
        self._live.discard(t)
        if self._stopping and not self._live:
            self._all_done.set()

    def _worker_loop_ended(self, worker):
        """(hook) worker's loop has ended for good (on its own OS thread): it
        writes no counter any more.  The last one to end after stop() left
        the stats file mapped for a stuck worker unmaps it; it used to stay
        mapped, and its atomics views complained as the runtime was
        collected."""
        with self._loops_lock:
            self._loops_ended.add(worker)
            if self._stats_left_mapped and self._all_loops_ended():
                self._stats_left_mapped = False
                self._stats_file.close()

    def _all_loops_ended(self):
        """(under _loops_lock) No worker's loop runs or will run again: each
        has said so (_worker_loop_ended), or its OS thread (or an asyncio
        loop's seat) is no longer alive.  A worker counts itself before its
        thread ends, so one of two stuck workers ending at once always sees
        the other's mark."""
        return all(w in self._loops_ended or not w.os_thread.is_alive()
                   for w in self._running_workers())

    def _worker_crashed(self, worker, exc):
        """A bug in the scheduler itself: never leave anyone waiting silently.
        The Futures of threads on that CPU fail, and submit() refuses."""
        self._crashed = exc
        err = RuntimeError(f"osvrt: the worker for CPU {worker.cpu_id} crashed: {exc!r}")
        for t in list(self._live):
            fut = _thread.submit_future(t)
            if t.worker is worker and fut is not None and not fut.done():
                try:
                    fut.set_exception(err)
                except concurrent.futures.InvalidStateError:
                    pass
        self._all_done.set()

    def stats(self) -> dict[str, Any]:
        """Counters per CPU (switches, wake-ups local/remote, kicks sent/skipped,
        idle time, run-queue length, stalls) and totals."""
        return {
            "cpus": [w.stats() for w in self._workers],
            "threads_live": len(self._live),
            "threads_spawned": self._spawned + sum(w.spawned for w in self._workers),
            **{name: svc.stats() for name, svc in list(self._services.items())},
        }


def _function_name(fn):
    """The name run()'s main thread gets: its function's __name__ (through
    functools.partial), so threads(), traces and `top` show "main", not
    "green-3"; None (the default green-<id>) for a callable without one."""
    import functools
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__name__", None)
    return name if isinstance(name, str) and name else None


def _wait_main(t, guard, stop_timeout, rt):
    """run()'s wait for main.  Once SIGTERM has cancelled main, a main that
    swallows its Cancelled is named on the log (after STOP_REPORT_S, then at
    doubling intervals), and with stop_timeout it is abandoned after that
    many seconds: run() goes on to stop the runtime.  A worker's crash (on
    any CPU: main may wait for a thread that was on it) ends the wait.

    It waits for main's end in C (thread.c, _wait_done), not on the Future:
    Ctrl-C raises KeyboardInterrupt in this thread between bytecodes, and in
    concurrent.futures.wait it could land while this thread held the
    Future's condition lock (taken in Python code); the worker settling the
    Future then blocked on that lock for good, a worker "stuck" at stop (1
    Ctrl-C in 10 here).  Between two C waits this thread holds no lock that
    another thread needs."""
    cancelled_at = report_every = report_at = None
    while not _thread.wait_done(t, 0.1, False, False):
        if rt._crashed is not None:
            return
        if guard is None or not guard.signalled:
            continue
        now = time.monotonic()
        if cancelled_at is None:
            cancelled_at, report_every = now, STOP_REPORT_S
            report_at = now + report_every
        if stop_timeout is not None and now - cancelled_at >= stop_timeout:
            log.error("osvrt: main green thread %r did not end within stop_timeout=%s s "
                      "of SIGTERM; abandoned", t.name, stop_timeout)
            return
        if now >= report_at:
            log.warning("osvrt: SIGTERM cancelled main green thread %r %.0f s ago and it "
                        "still runs (it caught osvrt.Cancelled?); SIGTERM again ends the "
                        "process now", t.name, now - cancelled_at)
            report_every *= 2
            report_at = now + report_every


def _keywords_error(door, own, kwargs):
    """The TypeError for keyword arguments meant for fn, as spawn words it."""
    k = next(iter(kwargs))
    return TypeError(f"{door}() got an unexpected keyword argument {k!r}: {door} takes only "
                     f"{own} (besides fn and its positional arguments); to pass keyword "
                     f"arguments to the function, {door} functools.partial(fn, {k}=...)")


def _wait_named(event, until, too_long, what, done=None):
    """Wait for `event` (or, when given, for done() to be true, looked at
    every DONE_POLL_S), never silently: at `until` (monotonic; None: no
    bound) raise too_long(seconds waited), and every STOP_REPORT_S (doubling)
    before that a warning that says what stop() waits for (what())."""
    began = time.monotonic()
    report_every = STOP_REPORT_S
    report_at = began + report_every
    step = STOP_REPORT_S if done is None else DONE_POLL_S
    while not event.wait(step if until is None
                         else max(0.0, min(until, report_at, time.monotonic() + step)
                                  - time.monotonic())):
        if done is not None and done():
            return
        now = time.monotonic()
        if until is not None and now >= until:
            raise too_long(now - began)
        if now >= report_at:
            log.warning("osvrt: stop() has waited %.1f s for %s", now - began, what())
            report_every *= 2
            report_at = now + report_every


def _waiting_line(threads, shown=10):
    names = sorted(t.name for t in threads)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return (f"{len(names)} green thread(s) that have not ended since they were cancelled "
            f"(a thread that catches osvrt.Cancelled must end soon after): "
            f"{', '.join(names[:shown])}{more}; Runtime.stop(timeout=...) or "
            f"osvrt.run(..., stop_timeout=...) bounds this wait")


def _abandoned_line(threads, shown=10):
    """The log line for threads left alive at stop: the first few names and
    the count, never thousands of names."""
    names = sorted(t.name for t in threads)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return (f"{len(names)} green thread(s) still alive at stop timeout, abandoned: "
            f"{', '.join(names[:shown])}{more}")


async def _cancel_local(rt, w, cancelled):
    for t in list(rt._live):
        if t.worker is w and t.id not in cancelled and not t.done():
            cancelled.add(t.id)
            t.cancel()



spawn = kernel.spawn     # the engine's trap (module.c), named with the others in kernel.py


def run(main: Callable[..., Awaitable[_T]], *args: Any, cpus: Any = None,
        **runtime_options: Any) -> _T:
    """Start a Runtime, run main(*args) as its first green thread, return its
    result (or raise its exception), and shut down cleanly.

    runtime_options are Runtime's keyword arguments (an unknown one is a
    TypeError that names it and lists the valid ones), plus
    handle_signals=True: while main runs, SIGTERM cancels main, lets every
    green thread's cleanup run, stops the runtime and then raises
    SystemExit(143), the status a shell reports for a process that SIGTERM
    ended (a second SIGTERM during that cleanup ends the process at once).
    It is installed only when run() is called in the main thread of the main
    interpreter and SIGTERM is at its default, and the previous handler is
    restored on return.  handle_signals=False leaves SIGTERM alone.
    Both SIGTERMs are logged, and a main that ignores its cancel is named on
    the log while run() waits for it.
    stop_timeout=None: seconds shutdown may wait for green threads that do
    not end when cancelled (main after a SIGTERM, then every other thread
    through rt.stop(stop_timeout)); those still alive are logged by name and
    abandoned.  None waits until they end, naming them on the log after 5 s
    and then at doubling intervals.
    The main green thread is named after main's function (threads(), traces,
    top).
    Ctrl-C (KeyboardInterrupt) cancels main, lets cleanup run, stops the
    runtime and re-raises KeyboardInterrupt, in either case."""
    import inspect
    from ._signals import EXIT_STATUS, TermGuard
    from .thread import Cancelled

    if kernel.current_worker() is not None:
        raise RuntimeError("osvrt.run() starts a runtime and blocks its OS thread; inside a "
                           "green thread use `await osvrt.spawn(fn).join()` instead")
    handle_signals = runtime_options.pop("handle_signals", True)
    if not isinstance(handle_signals, bool):
        raise TypeError(f"handle_signals must be True or False, not {handle_signals!r}")
    stop_timeout = check_timeout(runtime_options.pop("stop_timeout", None))
    # Checked here so that the error names osvrt.run's own option, not a
    # parameter of Runtime.__init__ that the caller never wrote.
    valid = [name for name, p in inspect.signature(Runtime.__init__).parameters.items()
             if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    valid += ["handle_signals", "stop_timeout"]
    for name in runtime_options:
        if name not in valid:
            raise TypeError(f"osvrt.run() got an unknown runtime option {name!r}; "
                            f"valid options: {', '.join(valid)}")

    rt = Runtime(cpus, **runtime_options)
    rt.start()
    guard = TermGuard.install() if handle_signals else None
    try:
        try:
            t, _ = rt._submit(main, args, None, _function_name(main))
            if guard is not None:
                guard.watch(t)
            try:
                _wait_main(t, guard, stop_timeout, rt)
            except KeyboardInterrupt:
                t.cancel()
                raise
        finally:
            rt.stop(stop_timeout)
    finally:
        if guard is not None:
            guard.restore()
    if guard is not None and guard.signalled:
        # Terminated, whatever main returned.  An error that main raised
        # while it was being cancelled must not vanish with the exit status.
        try:
            _thread.outcome(t)
        except Cancelled:
            pass
        except BaseException:
            log.exception("osvrt: main raised while SIGTERM stopped it")
        raise SystemExit(EXIT_STATUS)
    if not t.done() and rt._crashed is not None:
        # main never ended: its outcome is the crash, not None.
        raise RuntimeError(f"osvrt.run: a worker crashed while main ran: "
                           f"{rt._crashed!r}") from rt._crashed
    return _thread.outcome(t)
