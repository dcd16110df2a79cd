"""Mutex hand-off: two contenders that each hold the lock across a yield, so
every acquisition is a hand-off from the other (osvrt's Mutex passes ownership
FIFO, no barging).  osvrt colocated (both on one CPU) and apart (one per CPU)
against asyncio.Lock (same shape, one loop) and threading.Lock (two OS threads;
it has no hand-off and barges, so this is its contended acquire/release cost).
Unit: ns per acquisition.  No target in BENCHMARKS.md: reported for context.
"""
import asyncio
import threading
import time

import pytest

import osvrt


def osvrt_mutex(rt, n, cpu_a, cpu_b):
    async def main():
        m = osvrt.Mutex()
        count = [0]

        async def contender():
            for _ in range(n):
                async with m:
                    count[0] += 1
                    await osvrt.yield_now()

        t0 = time.perf_counter()
        a = osvrt.spawn(contender, cpu=cpu_a)
        b = osvrt.spawn(contender, cpu=cpu_b)
        await a.join()
        await b.join()
        return {"ns": (time.perf_counter() - t0) / (2 * n) * 1e9, "count": count[0]}
    return rt.run(main)


def asyncio_lock(n):
    async def main():
        lock = asyncio.Lock()
        count = [0]

        async def contender():
            for _ in range(n):
                async with lock:
                    count[0] += 1
                    await asyncio.sleep(0)

        t0 = time.perf_counter()
        await asyncio.gather(contender(), contender())
        return {"ns": (time.perf_counter() - t0) / (2 * n) * 1e9, "count": count[0]}
    return asyncio.run(main())


def threading_lock(n):
    lock = threading.Lock()
    count = [0]

    def contender():
        for _ in range(n):
            with lock:
                count[0] += 1

    threads = [threading.Thread(target=contender) for _ in range(2)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"ns": (time.perf_counter() - t0) / (2 * n) * 1e9, "count": count[0]}


def _check(n):
    def check(r):
        assert r["count"] == 2 * n, r
    return check


@pytest.mark.benchmark(group="mutex hand-off (ns per acquisition)")
def bench_osvrt_mutex_colocated(measure, size, osvrt_rt, cpus):
    n = size(20_000)
    c = osvrt_rt.cpus[0]
    measure(lambda: osvrt_mutex(osvrt_rt, n, c, c), unit="ns_per_acquire", check=_check(n),
            paired={"asyncio_lock": lambda: asyncio_lock(n)})


@pytest.mark.benchmark(group="mutex hand-off (ns per acquisition)")
def bench_osvrt_mutex_apart(measure, size, osvrt_rt):
    if len(osvrt_rt.cpus) < 2:
        pytest.skip("needs two CPUs")
    n = size(5_000)
    a, b = osvrt_rt.cpus[:2]
    measure(lambda: osvrt_mutex(osvrt_rt, n, a, b), unit="ns_per_acquire", check=_check(n),
            paired={"threading_lock": lambda: threading_lock(n)})


@pytest.mark.benchmark(group="mutex hand-off (ns per acquisition)")
def bench_asyncio_lock(measure, size):
    n = size(20_000)
    measure(lambda: asyncio_lock(n), unit="ns_per_acquire", check=_check(n))


@pytest.mark.benchmark(group="mutex hand-off (ns per acquisition)")
def bench_threading_lock(measure, size):
    n = size(200_000)
    measure(lambda: threading_lock(n), unit="ns_per_acquire", check=_check(n))
