"""The per-CPU worker: one OS thread pinned to one CPU, running green threads.

The loop, at every trap (kernel.py: PARK or YIELD, or the thread's end):
  1. takes in wake-ups from other CPUs, if its pushlist word says there are
     any (a plain memory read: no C call in the common case);
  2. fires expired timers;
  3. charges the elapsed wall-clock time to the thread that ran (fair.py's
     arithmetic, inlined) and applies OSv's rule: keep running the current
     thread while its R'' is strictly below the head of the run queue, else
     switch, ties going to the queued thread;
  4. with nothing runnable, idles in C (GIL released) until a wake-up or
     the next timer.

Ownership: `runq` and `timers` are touched only by this worker's OS thread.
Others reach it through its C pushlist (post()), never through these lists.
"""
import heapq
import logging
import math
import os
import time

from . import fair, kernel
from ._core import ffi, lib
from .thread import QUEUED, RUNNING, TERMINATED, WAITING, Cancelled, _UnretrievedException

log = logging.getLogger("osvrt")

_DRAIN_BATCH = 256
_HANDLE_BATCH = 256
_TRACE_REFRESH = 1024        # switches between looks at the SDT semaphores

_heappush = heapq.heappush
_heappop = heapq.heappop
_exp = math.exp
_mono = time.monotonic
_INV_TAU = fair.INV_TAU
_THYST = fair.THYST_UNITS
_PENALTY = fair.PENALTY_UNITS
_RENORM_LIMIT = fair.RENORM_LIMIT
_PARK = kernel.PARK
_YIELD = kernel.YIELD
_ENDED = object()            # trap value: the thread returned or raised


class Worker:
    def __init__(self, rt, index, cpu_id, crt, spin_ns):
        self.rt = rt
        self.index = index           # position in rt.cpus and in the C runtime
        self.cpu_id = cpu_id         # the host CPU it is pinned to
        self._crt = crt
        self._spin_ns = spin_ns
        self._word = lib.osvrt_incoming_word(crt, index)   # non-zero: incoming work
        self._buf = ffi.new("uint64_t[]", _DRAIN_BATCH)
        self.runq = []               # heap of (R'', order, Thread); the running thread is not in it
        self.timers = []             # heap of [deadline, order, callback or None, arg]
        self._order = 0
        self.c = 1.0                 # the fair normalizer (fair.py)
        self.renorm = 0              # renormalizations so far (sleepers catch up lazily)
        self.current = None
        self._stop = False
        self._handles = []           # free C thread-table handles
        self._dead = []              # handles of ended threads, freed in batches
        self._tracing = False
        self.os_thread = None
        # stats (owner-written; read racily by stats())
        self.switches = 0
        self.wakes_local = 0
        self.wakes_remote = 0
        self.stalls = 0
        self.run_seq = 0             # resumes so far; the stall watchdog compares it
        self.run_start = 0.0
        self.timer_garbage = 0

    # ---- entry points for other OS threads -------------------------------

    def post(self, t):
        """Hand a thread the caller owns (claimed, new, or moving) to this CPU.
        Safe from any OS thread: it only pushes onto our C pushlist."""
        h = t._h or self.rt._handle_for(t)
        lib.osvrt_ready(self._crt, h, self.index)

    def kick(self):
        lib.osvrt_rt_kick(self._crt, self.index)

    # ---- entry points for this worker's own green threads ----------------

    def enqueue_woken(self, t):
        """A local wake-up: no C call."""
        if t._rn != self.renorm:
            t._r = fair.renormalized(t._r, self.renorm - t._rn)
            t._rn = self.renorm
        t._state = QUEUED
        self._order += 1
        _heappush(self.runq, (t._r, self._order, t))
        self.wakes_local += 1

    def enqueue_new(self, t):
        t._state = QUEUED
        self._order += 1
        _heappush(self.runq, (t._r, self._order, t))

    def add_timer(self, deadline, callback, arg):
        self._order += 1
        entry = [deadline, self._order, callback, arg]
        _heappush(self.timers, entry)
        return entry

    # ---- the loop --------------------------------------------------------

    def main(self, pin, ready):
        kernel._tls.worker = self
        try:
            if pin:
                os.sched_setaffinity(0, {self.cpu_id})
        except OSError as e:
            ready(self, e)
            return
        ready(self, None)
        try:
            self._loop()
        except BaseException as e:   # a bug in the scheduler itself: never silent
            log.critical("osvrt worker for CPU %d crashed", self.cpu_id, exc_info=True)
            self.rt._worker_crashed(self, e)
        finally:
            self._release_handles()
            kernel._tls.worker = None

    def _loop(self):
        runq = self.runq
        timers = self.timers
        word = self._word
        t = None                    # the thread to run next (or the one that keeps running)
        penalty = False             # the thread switched out is still runnable
        trace_left = _TRACE_REFRESH
        now = _mono()
        while not self._stop:
            # Every trap takes in wake-ups and fires timers before the rule picks.
            if word[0]:
                self._take_incoming()
            if timers and timers[0][0] <= now:
                self._fire_timers(now)
            if t is not None and runq and runq[0][0] <= t._r:
                # t yielded and is no longer strictly below the head (ties go to
                # the queue): switch it out, re-inserted before its equals (a
                # negative order sorts first), charged its hysteresis.
                t._r += t._prio * self.c * _THYST
                t._state = QUEUED
                self._order += 1
                _heappush(runq, (t._r, -self._order, t))
                t = None
                penalty = True
            if t is None:
                if not runq:
                    now = self._idle(now)
                    continue
                t = _heappop(runq)[2]
                # Switch-in: hysteresis credit, less the penalty when the thread
                # switched out stayed runnable (OSv's context_switch_penalty).
                t._r -= t._prio * self.c * (_THYST - _PENALTY if penalty else _THYST)
                self.switches += 1
                trace_left -= 1
                if trace_left <= 0:
                    trace_left = _TRACE_REFRESH
                    self._refresh_tracing()
                if self._tracing:
                    lib.osvrt_trace_switch(self.index, 0, t.id)

            # Run t until its next trap.
            self.current = t
            self.run_seq += 1
            self.run_start = now
            t._state = RUNNING
            try:
                if t._cancel or t._throw is not None:
                    trap = self._throw_into(t)
                else:
                    v = t._value
                    t._value = None
                    trap = t._ctx.run(t._coro.send, v)
            except StopIteration as e:
                trap = _ENDED
                self._finish(t, e.value, None)
            except BaseException as e:
                trap = _ENDED
                self._finish(t, None, e)
            self.current = None

            # Charge the wall-clock time t ran (fair.advance / fair.charge).
            now = _mono()
            c = self.c
            cn = self.c = c * _exp((now - self.run_start) * _INV_TAU)
            t._r += t._prio * (cn - c)
            if cn > _RENORM_LIMIT:
                self._renormalize(t)

            if trap is _YIELD:
                pass                     # the rule decides at the top, after wake-ups
            elif trap is _PARK:
                t._r += t._prio * self.c * _THYST
                t._rn = self.renorm
                if t._ticket:            # not already claimed by an early wake
                    t._state = WAITING
                t = None
                penalty = False
            elif trap is _ENDED:
                t = None
                penalty = False
            else:
                t._throw = TypeError(
                    f"green thread {t.name!r} awaited {trap!r}, which is not an osvrt "
                    "operation (asyncio and other event loops' awaitables do not work here)")

    def _throw_into(self, t):
        if t._throw is not None:
            exc, t._throw = t._throw, None
        else:
            t._cancel = False
            exc = Cancelled()
            coro = t._coro
            if not coro.cr_suspended and coro.cr_frame is not None:
                # Cancelled before its first step: none of its code runs.
                t._coro.close()
                raise exc
        return t._ctx.run(t._coro.throw, exc)

    def _take_incoming(self):
        by_handle = self.rt._by_handle
        buf = self._buf
        while True:
            n = lib.osvrt_drain(self._crt, self.index, buf, _DRAIN_BATCH)
            for h in ffi.unpack(buf, n):
                t = by_handle.get(h)
                if t is not None:
                    self._arrive(t)
            if n < _DRAIN_BATCH:
                return

    def _arrive(self, t):
        """A thread handed to us through the pushlist: woken remotely, new, or moved."""
        if t._export is not None:             # moved here: import its runtime
            t._r = fair.import_runtime(t._export, self.c)
            t._export = None
            t._rn = self.renorm
        elif t._rn != self.renorm:
            t._r = fair.renormalized(t._r, self.renorm - t._rn)
            t._rn = self.renorm
        t._state = QUEUED
        self._order += 1
        _heappush(self.runq, (t._r, self._order, t))
        self.wakes_remote += 1

    def _fire_timers(self, now):
        timers = self.timers
        while timers and timers[0][0] <= now:
            entry = _heappop(timers)
            cb = entry[2]
            if cb is not None:
                entry[2] = None
                cb(entry[3])
            else:
                self.timer_garbage -= 1 if self.timer_garbage > 0 else 0

    def _idle(self, now):
        timers = self.timers
        # Drop disarmed timers at the head so they don't cut our sleep short.
        while timers and timers[0][2] is None:
            _heappop(timers)
        timeout = -1 if not timers else max(0, int((timers[0][0] - now) * 1e9) + 1000)
        self._refresh_tracing()
        self._flush_dead()
        if self._stop:
            return now
        lib.osvrt_rt_idle(self._crt, self.index, timeout, self._spin_ns)
        after = _mono()
        # Idle time decays everyone's runtime too: c follows wall-clock time.
        self.c *= _exp((after - now) * _INV_TAU)
        if self.c > _RENORM_LIMIT:
            self._renormalize(None)
        return after

    def _renormalize(self, running):
        """c passed 2**63: scale c and every R'' here by 2**-126 (fair.py)."""
        f = fair.RENORM_FACTOR
        self.c *= f
        self.renorm += 1
        if running is not None:
            running._r *= f
            running._rn = self.renorm
        q = []
        for r, order, t in self.runq:
            t._r = r * f
            t._rn = self.renorm
            q.append((t._r, order, t))
        heapq.heapify(q)
        self.runq[:] = q

    def _finish(self, t, result, exc):
        t._state = TERMINATED
        t._result = result
        t._exc = exc
        t._coro = None
        t._ctx = None
        t._ticket = None
        rt = self.rt
        if self._tracing:
            lib.osvrt_trace_exit(self.index, t.id)
        fut = t._future
        if fut is not None:
            t._future = None
            if isinstance(exc, Cancelled):
                fut.cancel()
            elif exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)
        elif exc is not None and not isinstance(exc, Cancelled):
            t._unretrieved = _UnretrievedException(t.name, exc)
        joiners = t._joiners
        if joiners:
            t._joiners = None
            for ticket in joiners:
                kernel.wake(ticket)
        if t._h:
            rt._by_handle.pop(t._h, None)
            self._dead.append(t._h)
            if len(self._dead) >= _HANDLE_BATCH:
                self._flush_dead()
        rt._thread_ended(t)

    # ---- C handles ---------------------------------------------------------

    def take_handle(self):
        pool = self._handles
        if not pool:
            buf = ffi.new("uint64_t[]", _HANDLE_BATCH)
            n = lib.osvrt_table_alloc(lib.osvrt_rt_table(self._crt), self.index, buf, _HANDLE_BATCH)
            if n == 0:
                raise MemoryError("osvrt: the C thread table is full")
            pool.extend(reversed(ffi.unpack(buf, n)))
        return pool.pop()

    def _flush_dead(self):
        dead = self._dead
        if dead:
            self._dead = []
            lib.osvrt_table_free(lib.osvrt_rt_table(self._crt), dead, len(dead))

    def _release_handles(self):
        self._flush_dead()
        pool, self._handles = self._handles, []
        if pool:
            lib.osvrt_table_free(lib.osvrt_rt_table(self._crt), pool, len(pool))

    def _refresh_tracing(self):
        self._tracing = bool(lib.osvrt_switch_semaphore or lib.osvrt_exit_semaphore)

    def stats(self):
        cs = ffi.new("struct osvrt_cpu_stats *")
        lib.osvrt_rt_cpu_stats(self._crt, self.index, cs)
        return {
            "cpu": self.cpu_id,
            "switches": self.switches,
            "wakeups_local": self.wakes_local,
            "wakeups_remote": self.wakes_remote,
            "kicks_sent": cs.kicks_sent,
            "kicks_skipped": cs.kicks_skipped,
            "idle_time": cs.idle_ns / 1e9,
            "idle_sleeps": cs.sleeps,
            "runq_len": len(self.runq),
            "timers": len(self.timers),
            "stalls": self.stalls,
        }
