"""The per-CPU wake-up pushlist (lock-free MPSC list, csrc/core/pushlist.h).

Groups:
- pushlist-c: C level, 2 producer pthreads + 1 consumer pthread that takes
  items in batches (osvrt_peer_queue): kind 0 = osvrt's pushlist, kind 1 = a
  FIFO under a pthread mutex.  extra_info["ns_per_item"] = wall time of the
  whole transfer / items.  Target (BENCHMARKS.md): pushlist >= 5x the mutex
  queue, i.e. extra_info["ratio_vs_mutex_queue"] (pushlist ns / mutex ns,
  measured in alternating rounds) <= 0.2.
- pushlist-python: one push + drain called from Python through cffi
  (lib.osvrt_ready onto CPU 0 of a small C runtime, then lib.osvrt_drain),
  ns per push+drain pair: alone, and while a second OS thread runs Python
  (a spinning threading.Thread pinned to the other CPU, the caller pinned to
  the first).  cffi releases the GIL around every call, so with a busy
  Python thread each call may invite a GIL hand-off across CPUs (DESIGN.md,
  "The GIL": ~55-75 ns alone vs ~22-28 us per call with a busy thread).
  extra_info["ratio_vs_alone"] is the slowdown, from alternating rounds.
  No target: this shows why the switch path avoids cffi calls.
"""
import os
import threading
import time

import pytest

from osvrt._core import ffi, lib
from osvrt.bench.peers import c_queue as _c_queue

PER_PRODUCER = 500_000
PRODUCERS = 2
PY_N = 100_000            # push+drain pairs, alone
BUSY_N = 20_000           # with a busy Python thread: also capped by BUSY_BUDGET_S
BUSY_BUDGET_S = 0.5


def c_queue(kind, per_producer):
    return _c_queue(kind, PRODUCERS, per_producer)   # raises if items were lost


@pytest.mark.benchmark(group="pushlist-c")
def bench_c_pushlist(benchmark, measure, size):
    n = size(PER_PRODUCER)
    measure(lambda: c_queue("pushlist", n), unit="ns_per_item", rounds=7,
            paired={"mutex_queue": lambda: c_queue("mutex", n)},
            producers=PRODUCERS, items=PRODUCERS * n)


@pytest.mark.benchmark(group="pushlist-c")
def bench_c_mutex_queue(benchmark, measure, size):
    n = size(PER_PRODUCER)
    measure(lambda: c_queue("mutex", n), unit="ns_per_item", rounds=7,
            producers=PRODUCERS, items=PRODUCERS * n)


class PushDrain:
    """A small C runtime (2 CPUs, no workers) and one thread handle."""

    def __init__(self):
        self.rt = ffi.gc(lib.osvrt_rt_new(2), lib.osvrt_rt_free)
        assert self.rt != ffi.NULL
        buf = ffi.new("uint64_t[1]")
        assert lib.osvrt_table_alloc(lib.osvrt_rt_table(self.rt), 0, buf, 1) == 1
        self.h = buf[0]
        self.out = ffi.new("uint64_t[4]")

    def loop(self, n, budget_s=None):
        """n push+drain pairs (fewer if budget_s runs out); ns per pair."""
        rt, h, out = self.rt, self.h, self.out
        ready, drain = lib.osvrt_ready, lib.osvrt_drain
        now = time.perf_counter_ns
        stop_at = None if budget_s is None else now() + int(budget_s * 1e9)
        done = bad = 0
        t0 = now()
        while done < n:
            ready(rt, h, 0)
            if drain(rt, 0, out, 4) != 1 or out[0] != h:
                bad += 1
            done += 1
            if stop_at is not None and (done & 15) == 0 and now() > stop_at:
                break
        dt = now() - t0
        return dict(ns=dt / done, pairs=done, bad=bad)


def no_loss(r):
    assert r["bad"] == 0, f"a push was not drained back exactly once: {r}"
    assert r["pairs"] > 0


@pytest.fixture(scope="module")
def pushdrain():
    return PushDrain()


class BusyThread:
    """A Python thread spinning on the other CPU while the caller, pinned to
    the first CPU, does the measured work."""

    def __init__(self, cpu_main, cpu_busy):
        self.cpu_main, self.cpu_busy = cpu_main, cpu_busy
        self.stop = False
        self.spins = 0

    def _spin(self):
        os.sched_setaffinity(0, {self.cpu_busy})
        x = 0
        while not self.stop:
            x += 1
        self.spins = x

    def run(self, fn):
        old = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {self.cpu_main})
        th = threading.Thread(target=self._spin, name="bench-busy", daemon=True)
        self.stop = False
        th.start()
        try:
            time.sleep(0.002)          # the spinner is running Python now
            return fn()
        finally:
            self.stop = True
            th.join()
            os.sched_setaffinity(0, old)


@pytest.mark.benchmark(group="pushlist-python")
def bench_py_push_drain_alone(benchmark, measure, size, pushdrain):
    n = size(PY_N)
    measure(lambda: pushdrain.loop(n), unit="ns_per_push_drain", check=no_loss)


@pytest.mark.benchmark(group="pushlist-python")
def bench_py_push_drain_busy_thread(benchmark, measure, size, pushdrain, two_cpus):
    n = size(BUSY_N)
    busy = BusyThread(*two_cpus)
    measure(lambda: busy.run(lambda: pushdrain.loop(n, BUSY_BUDGET_S)),
            unit="ns_per_push_drain", check=no_loss,
            paired={"alone": lambda: pushdrain.loop(size(PY_N))},
            busy_thread_cpu=two_cpus[1], caller_cpu=two_cpus[0])
