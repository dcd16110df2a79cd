"""The per-CPU worker: one OS thread pinned to one CPU, running green threads.

The loop itself, the run queue and the timers are the engine's
(osvrt/_engine/worker.c, WorkerBase): at every trap it takes in wake-ups
from other CPUs, fires expired timers, charges the elapsed wall-clock time by
OSv's fair rule and picks, and with nothing runnable idles in C with the GIL
released.  This class keeps what is not per switch: moving threads (the
mechanism; the policy, which threads go where, is balancer.py's), C handles, the end of a submit()'s Future, stats.  The
loop calls back into it through the hooks marked "(hook)", looked up once on
this class when a worker is bound (_engine/worker.c, enum worker_hook; listed in
osvrt/_engine.pyi).

Ownership: the run queue and the timers are touched only by this worker's
OS thread.  Others reach it through its C pushlist (post()), never directly.
"""
import logging
from concurrent.futures import InvalidStateError
import os

from . import _engine, asyncio_guard, balancer
from ._core import ffi, lib
from . import thread
from .thread import Cancelled, hand_over

log = logging.getLogger("osvrt")

_HANDLE_BATCH = 256
_IDLE_FLUSH = 32             # ended threads' records freed at an idle, at least


def alloc_handles(crt, cpu_index, n):
    """Up to n fresh C thread-table handles (at least one) for CPU slot
    cpu_index, in one C call: how every handle pool is refilled."""
    buf = ffi.new("uint64_t[]", n)
    got = lib.osvrt_table_alloc(lib.osvrt_rt_table(crt), cpu_index, buf, n)
    if not got:
        raise MemoryError("osvrt: the C thread table is full")
    return ffi.unpack(buf, got)


class Worker(_engine.WorkerBase):
    def __init__(self, rt, index, cpu_id, crt, spin_ns, *, by_handle, live, min_move_runtime,
                 on_crash, on_loop_end):
        """The runtime hands a worker what it shares with it: by_handle (C
        handle -> Thread), live (the LiveSet), min_move_runtime (the
        balancer's bar, seconds), on_crash(worker, exc) and
        on_loop_end(worker), called on the worker's OS thread once its loop
        has ended for good."""
        self.rt = rt
        self.cpu_id = cpu_id         # the host CPU it is pinned to
        self._crt = crt
        self._by_handle = by_handle
        self._live = live
        self.min_move_runtime = min_move_runtime   # the balancer's bar (s): balancer.movable
        self._on_crash = on_crash
        self._on_loop_end = on_loop_end
        # index: position in rt.cpus and in the C runtime (the engine's field)
        self._bind(rt, by_handle, live, int(ffi.cast("uintptr_t", crt)), index, spin_ns)
        # For other workers' balancing decisions (a hint; a plain read, no
        # call): are we idle (csrc/core/cpu.h idle_state).  An aligned word of
        # C memory that C writes with atomics; a plain load is a relaxed atomic
        # load on x86-64 and arm64, and a stale value costs one extra pass.
        # (The `atomics` package would give the same load at ~11 us: it goes
        # through cffi's ABI mode, which releases the GIL on every call.)
        # How many threads were pushed to us and not taken in: load() (C).
        self._idle_state = memoryview(ffi.buffer(lib.osvrt_idle_word(crt, index), 4)).cast("I")
        self._handles = []           # free C thread-table handles
        self._dead = []              # handles of ended threads, freed in batches
        self.os_thread = None
        # stats (owner-written; read racily by stats()); the engine keeps the
        # per-switch ones (switches, wake-ups, migrations in)
        self.pull_requests = 0       # asked other CPUs for work
        self.pulls_served = 0        # answered such a request
        self.work_offers = 0         # gave threads to an idle CPU unasked

    def load(self):
        """Runnable threads here, running or queued, and those pushed to us but
        not taken in yet (read from other workers: a hint)."""
        return _engine.worker_load(self)      # place.c

    def is_idle(self):
        return self._idle_state[0] & 3 != 0      # POLLING or SLEEPING (OSVRT_IDLE_STATE, csrc/core/cpu.h)

    def _offer_work(self):
        """(hook) We have queued threads: offer some to an idle CPU (balancer.py)."""
        balancer.offer_work(self)

    def move_out(self, t, target):
        """Give t (queued here, parked, or on its way here; never running) to
        another CPU.  Only this worker may call it: run queues have one owner.
        A parked thread just changes home: its next wake goes to the target."""
        self.move_all([t], target)

    def move_all(self, threads, target):
        """move_out for several threads, with one pass over the run queue."""
        moving = set()
        for t in threads:
            self.catch_up(t)
            hand_over(t, target, self.c)      # its runtime goes along: the target's catch_up
            moving.add(t)
            self.migrations_out += 1
            self._trace_add(4, t.id, self.index, target.index)   # MIGRATE, if recording
            if lib.osvrt_migrate_semaphore:
                lib.osvrt_trace_migrate(t.id, self.index, target.index)
        for t in self._runq_remove(moving):
            target.post(t)

    def balance_once(self, one_per_pass=False):
        """A balancer pass on this CPU (the policy: balancer.balance_once)."""
        return balancer.balance_once(self, one_per_pass)

    def _serve_pull(self, requester):
        """(hook) An idle CPU asked us for work (idle pull): hand it threads at once."""
        self.pulls_served += 1
        balancer.give_work(self, requester)

    # ---- the loop --------------------------------------------------------

    def main(self, pin, ready):
        try:
            if pin:
                os.sched_setaffinity(0, {self.cpu_id})
        except OSError as e:
            ready(self, e)
            return
        try:
            # asyncio awaits here: a clear TypeError (asyncio_guard.py).  Before
            # ready(): it imports asyncio, and start() returns once every worker
            # is ready; a fork() then must not find this thread holding that
            # import's lock, which the child (without this thread) would never
            # get back.
            asyncio_guard.install()
        except BaseException as e:   # start() waits for ready(): it raises this
            ready(self, e)
            return
        ready(self, None)
        try:
            self.run_loop()
        except BaseException as e:   # a bug in the scheduler itself: never silent
            log.critical("osvrt worker for CPU %d crashed", self.cpu_id, exc_info=True)
            self._on_crash(self, e)
        finally:
            try:
                self.release_handles()
                self._expose_left_threads()
            finally:
                self.loop_ended()

    def loop_ended(self):
        """This worker's loop has ended for good (called on the OS thread
        that ran it: Worker.main, or an asyncio loop's seat)."""
        self._on_loop_end(self)

    def _expose_left_threads(self):
        """Threads of this CPU still live when its loop ends (they ignored their
        cancel at stop, or the loop crashed) may never end: the cyclic GC sees
        them again (live threads are hidden from it, thread.c), so a runtime
        dropped with them is still collected.  Done here, on the worker's own
        OS thread once nothing can run them, so that no other OS thread
        exposes a thread its owner may still end (a stuck worker does this
        when it gets unstuck).  A thread moved here after this pass (a move
        out of a worker still running) is exposed by Runtime._settle_abandoned."""
        for t in list(self._live):
            if t.worker is self:
                self._live.expose_to_gc(t)

    def _before_idle(self):
        """(hook) About to idle: free ended threads' C records once a few have
        gathered, and ask a busy CPU for work.  Called only when there is one
        of these to do (idle_pull, flush_at_idle: see _note_dead)."""
        # Not one by one: a foreign caller's round trip (rt.run) ends one
        # thread and idles, and a C call per idle to free one record was a
        # tenth of the worker's instructions (callgrind).  The rest wait for
        # the next batch, or for release_handles when the loop ends.
        if len(self._dead) >= _IDLE_FLUSH:
            self._flush_dead()
        if self.idle_pull:
            balancer.ask_for_work(self)

    def _settle(self, t):
        """(hook) t ended and has a submit() Future: complete it."""
        fut = thread.submit_future(t)
        thread.set_submit_future(t, None)
        exc = thread.exception(t)
        try:
            if isinstance(exc, Cancelled):
                fut.cancel()
            elif exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(thread.result(t))
        except InvalidStateError:
            pass                     # the caller cancelled the Future first: it stays so
        if fut.cancelled():
            # Future.cancel() alone does not wake concurrent.futures.wait()
            # (osvrt.run waits that way); this completes the protocol.
            thread.notify_cancelled(fut)

    def _handle_dead(self, t):
        """(hook) t ended and had crossed CPUs: free its C record (in batches)."""
        self._by_handle.pop(t.handle, None)
        self._dead.append(t.handle)
        if len(self._dead) >= _HANDLE_BATCH:
            self._flush_dead()
        self._note_dead()

    def _note_dead(self):
        # The C idle calls _before_idle only when this is set (or idle_pull).
        self.flush_at_idle = len(self._dead) >= _IDLE_FLUSH

    # ---- C handles ---------------------------------------------------------

    def take_handle(self):
        pool = self._handles
        if not pool:
            pool.extend(reversed(alloc_handles(self._crt, self.index, _HANDLE_BATCH)))
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
        self._note_dead()

    def release_handles(self):
        """Give this worker's C handles back to the thread table: once its
        loop has returned for good (Worker.main; osvrt.aio's loop at close)."""
        self._flush_dead()
        pool, self._handles = self._handles, []
        if pool:
            lib.osvrt_table_free(lib.osvrt_rt_table(self._crt), pool, len(pool))

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
            "io_events": cs.io_events,          # readiness events polled on this CPU
            "io_waiters": _engine.io_waiters(self),
            "runq_len": self.runq_len,
            "timers": self.timers_len,
            "stalls": self.stalls,
            "migrations_in": self.migrations_in,
            "migrations_out": self.migrations_out,
            "pull_requests": self.pull_requests,
            "pulls_served": self.pulls_served,
            "work_offers": self.work_offers,
        }
