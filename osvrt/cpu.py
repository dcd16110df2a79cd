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
from concurrent.futures import InvalidStateError
import math
import os

from . import fair, kernel
from ._core import ffi, lib
from .kernel import QUEUED, RUNNING, TERMINATED, WAITING
from .deadline import _Expired
from .thread import Cancelled, _UnretrievedException

log = logging.getLogger("osvrt")

_DRAIN_BATCH = 256
_OFFER_PERIOD = 0.001        # a busy CPU looks for idle CPUs at most this often
_MAX_IDLE = 3600.0           # longest single idle (s); the loop just idles again after it
_MOVE_SCAN = 256             # run-queue entries a balancer pass or a pull looks at
_GIL_WAIT_NS = 200_000       # see osvrt_cpu_idle: wait for the other worker to let go of the GIL
_CWAKE = lib.OSVRT_KEY_CWAKE
_HANDLE_BATCH = 256

_heappush = heapq.heappush
_heappop = heapq.heappop
_exp = math.exp
_clock = kernel.monotonic
_INV_TAU = fair.INV_TAU
_THYST = fair.THYST_UNITS
_THYST_LESS_PENALTY = fair.THYST_UNITS - fair.PENALTY_UNITS
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
        # Words of C memory that Python reads with no call.  Each is an aligned
        # 4- or 8-byte word, so a read is one plain load (a relaxed atomic
        # load on x86-64 and arm64); Python never writes them (C does, with
        # atomics).  None needs more than a relaxed load: each is a hint
        # checked again in C (incoming), a futex expected value (kick_seq),
        # or a balancing estimate; a stale value costs one extra pass.  (The
        # `atomics` package would give the same load at ~11 us: it goes
        # through cffi's ABI mode, which releases the GIL on every call.)
        #
        # The head of our C pushlist, read on every trap.  Non-zero: wake-ups
        # are waiting (DESIGN.md on the GIL: no C call in the common case).
        self._incoming = memoryview(ffi.buffer(lib.osvrt_incoming_word(crt, index), 8)).cast("Q")
        # The doorbell sequence that every kick bumps (csrc/cpu.h): read before
        # the last look at our own state, so no kick (stop, pull) is lost.
        self._kick_seq = memoryview(ffi.buffer(lib.osvrt_kick_word(crt, index), 4)).cast("I")
        # For other workers' balancing decisions (hints; plain reads, no call):
        # are we idle (csrc/cpu.h idle_state), and how many threads were pushed
        # to us that we have not taken in yet.
        self._idle_state = memoryview(ffi.buffer(lib.osvrt_idle_word(crt, index), 4)).cast("I")
        self._pushes = memoryview(ffi.buffer(lib.osvrt_pushes_word(crt, index), 8)).cast("Q")
        self._drained = memoryview(ffi.buffer(lib.osvrt_drained_word(crt, index), 8)).cast("Q")
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
        self._pull = None            # an idle worker that asked us for work
        self.idle_pull = False       # set by the Runtime (balance=True)
        self.os_thread = None
        # stats (owner-written; read racily by stats())
        self.switches = 0
        self.wakes_local = 0
        self.wakes_remote = 0
        self.stalls = 0
        self.migrations_in = 0
        self.migrations_out = 0
        self.pull_requests = 0       # asked other CPUs for work
        self.pulls_served = 0        # answered such a request
        self.work_offers = 0         # gave threads to an idle CPU unasked
        self.run_start = 0.0
        self._next_offer = 0.0       # earliest time to look for idle CPUs again (_offer_work)
        self._timer_limit = 64       # compact disarmed timers when the heap reaches this

    # ---- entry points for other OS threads -------------------------------

    def post(self, t):
        """Hand a thread the caller owns (claimed, new, or moving) to this CPU.
        Safe from any OS thread: it only pushes onto our C pushlist."""
        h = t._h or self.rt._handle_for(t)
        lib.osvrt_ready(self._crt, h, self.index)

    def kick(self):
        lib.osvrt_rt_kick(self._crt, self.index)

    # ---- entry points for this worker's own green threads ----------------

    def catch_up(self, t):
        """Make t's R'' relative to this CPU before it queues here: import it if
        t moved here (fair.import_runtime), or apply the renormalizations it
        slept through (fair.renormalized).  A moved thread has _rn = -1."""
        if t._export is not None:
            t._r = fair.import_runtime(t._export, self.c)
            t._export = None
            self.migrations_in += 1
        else:
            t._r = fair.renormalized(t._r, self.renorm - t._rn)
        t._rn = self.renorm

    def load(self):
        """Runnable threads here, running or queued, and those pushed to us but
        not taken in yet (read from other workers: a hint)."""
        return (len(self.runq) + (self.current is not None)
                + max(0, self._pushes[0] - self._drained[0]))

    def is_idle(self):
        return self._idle_state[0] & 3 != 0      # POLLING or SLEEPING (OSVRT_IDLE_STATE, csrc/cpu.h)

    def _offer_work(self):
        """We have queued threads: hand some to an idle CPU now, rather than
        wait until it asks (it only asks as it goes idle, or at its balancer
        tick).  Called at most once per _OFFER_PERIOD from a YIELD trap."""
        for w in self.rt._workers:
            if w is not self and w.is_idle() and w._pull is None:
                self.work_offers += 1
                self._give_work(w)
                return

    def move_out(self, t, target):
        """Give t (queued here, parked, or on its way here; never running) to
        another CPU.  Only this worker may call it: run queues have one owner.
        A parked thread just changes home: its next wake goes to the target."""
        self._move_all([t], target)

    def _move_all(self, threads, target):
        """move_out for several threads, with one pass over the run queue."""
        moving = set()
        for t in threads:
            if t._rn != self.renorm:
                self.catch_up(t)
            t._export = fair.export_runtime(t._r, self.c)
            t._rn = -1                  # "import me": see catch_up
            t._w = target
            moving.add(t)
            self.migrations_out += 1
            if lib.osvrt_migrate_semaphore:
                lib.osvrt_trace_migrate(t.id, self.index, target.index)
        runq = self.runq
        queued = [e[2] for e in runq if e[2] in moving]
        if queued:
            runq[:] = [e for e in runq if e[2] not in moving]
            heapq.heapify(runq)
            for t in queued:
                target.post(t)

    def _movable(self):
        """Queued threads worth moving, largest R'' first (OSv moves those: they
        have had the most CPU lately).  Pinned threads never move; nor do
        threads whose decayed runtime is below min_move_runtime (new threads,
        threads that mostly wait): under the GIL a move only pays for a thread
        that computes, and every later cross-CPU wake of it costs a C call
        that invites a GIL hand-off (DESIGN.md).  A CPU hog passes the bar
        after its first slice."""
        floor = self.rt._min_move_runtime * self.c / fair.TAU   # in R'' units (fair.true_runtime)
        runq = self.runq
        # Look only at the heap's last _MOVE_SCAN entries: they are leaves,
        # where the largest R'' sit, and it keeps a pull O(1) even when a CPU
        # queues 100,000 new threads that are not worth moving.
        tail = runq[-_MOVE_SCAN:] if len(runq) > _MOVE_SCAN else runq
        return sorted((e for e in tail if not e[2]._pinned and e[0] >= floor),
                      key=lambda e: -e[0])

    def balance_once(self, one_per_pass=False):
        """A balancer pass on this CPU: while the least loaded CPU is more than
        one behind us, move it our largest-R'' movable thread.  OSv moves one
        thread per pass; we move the whole excess."""
        others = [w for w in self.rt._workers if w is not self]
        if not others or not self.runq:
            return 0
        loads = {w: w.load() for w in others}
        mine = len(self.runq) + 1          # the balancer itself counts, as in OSv
        plan = {}
        for _, _, t in self._movable():
            target = min(loads, key=loads.get)
            if loads[target] >= mine - 1:
                break
            plan.setdefault(target, []).append(t)
            loads[target] += 1
            mine -= 1
            if one_per_pass:
                break
        for target, threads in plan.items():
            self._move_all(threads, target)
        return sum(len(v) for v in plan.values())

    def _serve_pull(self, requester):
        """An idle CPU asked us for work (idle pull): hand it threads at once."""
        self.pulls_served += 1
        self._give_work(requester)

    def _give_work(self, requester):
        mine = len(self.runq) + 1
        theirs = requester.load()
        give = []
        for _, _, t in self._movable():
            if theirs >= mine - 1:
                break
            give.append(t)
            theirs += 1
            mine -= 1
        if give:
            self._move_all(give, requester)

    def _ask_for_work(self):
        """About to idle: ask the busiest other CPU to hand us threads at its
        next trap (it owns its run queue; we never take from it)."""
        busiest = None
        most = 0
        for w in self.rt._workers:
            if w is not self and len(w.runq) > most:
                busiest, most = w, len(w.runq)
        if busiest is not None and busiest._pull is None:
            busiest._pull = self
            self.pull_requests += 1

    def enqueue_new(self, t):
        t._state = QUEUED
        self._order += 1
        _heappush(self.runq, (t._r, self._order, t))

    def add_timer(self, deadline, callback, arg):
        """Arm a timer on this CPU; set entry[2] = None to disarm it."""
        if len(self.timers) >= self._timer_limit:
            self._compact_timers()
        self._order += 1
        entry = [deadline, self._order, callback, arg]
        _heappush(self.timers, entry)
        return entry

    def _compact_timers(self):
        # Disarmed timers (a join that ended before its timeout) would otherwise
        # stay until their deadline; doubling the limit keeps this amortized O(1).
        live = [e for e in self.timers if e[2] is not None]
        heapq.heapify(live)
        self.timers[:] = live
        self._timer_limit = max(64, 2 * len(live))

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
        incoming = self._incoming
        clock = _clock
        t = None                    # the thread to run next (or the one that keeps running)
        prev = None                 # the thread that ran last (for the switch tracepoint)
        penalty = False             # the thread switched out is still runnable
        now = clock()
        while not self._stop:
            # Every trap takes in wake-ups and fires timers before the rule picks.
            if incoming[0]:
                self._take_incoming()
            if timers and timers[0][0] <= now:
                self._fire_timers(now)
            if self._pull is not None:
                requester, self._pull = self._pull, None
                self._serve_pull(requester)
            if t is not None and runq and runq[0][0] <= t._r:
                # t yielded and is no longer strictly below the head (ties go to
                # the queue): switch it out, charged its hysteresis, re-inserted
                # before its equals (a negative order sorts first).
                t._r += t._prio * self.c * _THYST
                t._state = QUEUED
                self._order += 1
                _heappush(runq, (t._r, -self._order, t))
                t = None
                self.current = None
                penalty = True
            if t is None:
                if not runq:
                    now = self._idle(now)
                    continue
                t = _heappop(runq)[2]
                # Switch-in: hysteresis credit, less the penalty when the thread
                # switched out stayed runnable (OSv's context_switch_penalty).
                t._r -= t._prio * self.c * (_THYST_LESS_PENALTY if penalty else _THYST)
                self.switches += 1
                if self._tracing:
                    lib.osvrt_trace_switch(self.index, prev.id if prev is not None else 0, t.id)

            # Run t until its next trap.  (current, run_start) identify this run
            # for the stall watchdog; current stays set while t keeps the CPU
            # (after a YIELD), so load() counts it.
            self.current = prev = t
            self.run_start = now
            t._state = RUNNING
            try:
                if t._pending:
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

            # Charge the wall-clock time t ran (fair.advance, fair.charge).
            c = self.c
            now = clock()
            cn = self.c = c * _exp((now - self.run_start) * _INV_TAU)
            if trap is _PARK:
                t._r += t._prio * (cn - c + cn * _THYST)      # ... and its switch-out hysteresis
                t._rn = self.renorm
                if t._ticket:            # not already claimed by an early wake
                    t._state = WAITING
                    if t._pending and (t._cancel or t._throw is not None):
                        # A cancel or timeout came while t ran (it found no
                        # ticket to claim then): end this wait at once so the
                        # exception is raised at this await.  cancel() sets the
                        # flag before it looks for a ticket, and t publishes its
                        # ticket before it parks: one of the two sees the other.
                        kernel.wake(t._ticket)
                if cn > _RENORM_LIMIT:
                    self._renormalize(t)
                t = None
                self.current = None
                penalty = False
                continue
            t._r += t._prio * (cn - c)
            if cn > _RENORM_LIMIT:
                self._renormalize(t)
            if trap is _YIELD:           # the rule decides at the top, after wake-ups
                if runq and now >= self._next_offer and self.idle_pull:
                    self._next_offer = now + _OFFER_PERIOD
                    self._offer_work()
            elif trap is _ENDED:
                t = None
                self.current = None
                penalty = False
            else:
                t._throw = TypeError(
                    f"green thread {t.name!r} awaited {trap!r}, which is not an osvrt "
                    "operation (asyncio and other event loops' awaitables do not work here)")
                t._pending = True

    def _throw_into(self, t):
        # Clear the summary flag before reading the two sources: a setter sets
        # its source first and the flag second, so nothing set meanwhile is lost.
        t._pending = False
        exc, t._throw = t._throw, None
        if exc.__class__ is _Expired and exc.stale:
            exc = None                   # a timeout whose block already ended (deadline.py)
        if exc is None:
            if not t._cancel:            # a stale flag: resume as usual
                v = t._value
                t._value = None
                return t._ctx.run(t._coro.send, v)
            t._cancel = False
            exc = Cancelled()
            coro = t._coro
            if not coro.cr_suspended and coro.cr_frame is not None:
                # Cancelled before its first step: none of its code runs.
                coro.close()
                raise exc
        elif t._cancel:
            t._pending = True            # a cancel that came with a timeout: next await
        return t._ctx.run(t._coro.throw, exc)

    def _take_incoming(self):
        by_handle = self.rt._by_handle
        buf = self._buf
        while True:
            n = lib.osvrt_drain(self._crt, self.index, buf, _DRAIN_BATCH)
            for h in ffi.unpack(buf, n):
                if h & _CWAKE:
                    # Woken by the C protocol (osvrt_wake, e.g. a net channel).
                    # It ends the thread's wait only if the thread is still in
                    # a C-mode wait (_cwait) and nobody claimed it first (a
                    # timer, cancel()); else it is stale and ignored, so it can
                    # never end an unrelated wait such as an Event's.
                    t = by_handle.get(h ^ _CWAKE)
                    if t is not None and t._cwait:
                        ticket = t._ticket
                        if ticket and kernel.claim(ticket) is not None:
                            kernel.schedule(t)
                    continue
                t = by_handle.get(h)
                if t is not None:
                    self._arrive(t)
            if n < _DRAIN_BATCH:
                return

    def _arrive(self, t):
        """A thread handed to us through the pushlist: woken remotely, new, or moved."""
        if t._w is not self:
            t._w.post(t)                  # it was moved while on its way here: forward
            return
        if t._rn != self.renorm:
            self.catch_up(t)
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

    def _idle(self, now):
        seq = self._kick_seq[0]         # first: a kick after this ends the idle
        timers = self.timers
        # Drop disarmed timers at the head so they don't cut our sleep short.
        while timers and timers[0][2] is None:
            _heappop(timers)
        # Clamped: a finite but huge delay (sleep(1e12)) must fit the C int64.
        timeout = -1 if not timers else max(0, int(min(timers[0][0] - now, _MAX_IDLE) * 1e9) + 1000)
        self._refresh_tracing()
        self._flush_dead()
        if self._stop or self._pull is not None:
            return now
        if self.idle_pull:
            self._ask_for_work()
        lib.osvrt_rt_idle(self._crt, self.index, timeout, self._spin_ns, seq, _GIL_WAIT_NS)
        after = _clock()
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
            try:
                if isinstance(exc, Cancelled):
                    fut.cancel()
                elif exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(result)
            except InvalidStateError:
                pass                     # the caller cancelled the Future first: it stays so
            if fut.cancelled():
                # Future.cancel() alone does not wake concurrent.futures.wait()
                # (osvrt.run waits that way); this completes the protocol.
                try:
                    fut.set_running_or_notify_cancel()
                except RuntimeError:
                    pass                 # already notified
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
            freed = lib.osvrt_table_free(lib.osvrt_rt_table(self._crt), dead, len(dead))
            if freed < len(dead):
                # A record with a node still on a pushlist (a late C wake) is
                # refused: keep it for the next flush instead of leaking it.
                self._dead = [h for h in dead
                              if lib.osvrt_get_state(self._crt, h) != lib.OSVRT_FREE]

    def _release_handles(self):
        self._flush_dead()
        pool, self._handles = self._handles, []
        if pool:
            lib.osvrt_table_free(lib.osvrt_rt_table(self._crt), pool, len(pool))

    def _refresh_tracing(self):
        # Called when idle and by the stall watchdog: the semaphores cost a
        # lib attribute read (~170 ns), too much for every switch.
        self._tracing = bool(lib.osvrt_switch_semaphore or lib.osvrt_exit_semaphore
                             or lib.osvrt_spawn_semaphore)

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
            "migrations_in": self.migrations_in,
            "migrations_out": self.migrations_out,
            "pull_requests": self.pull_requests,
            "pulls_served": self.pulls_served,
            "work_offers": self.work_offers,
        }
