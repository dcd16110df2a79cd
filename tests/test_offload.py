"""osvrt.to_thread: a bounded pool of OS threads per Runtime."""
import threading
import time

import pytest

import osvrt
from osvrt.offload import default_pool_size


def test_result_and_worker_keeps_running(call):
    async def main():
        ticks = 0

        ticked = threading.Event()

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                if ticks == 20:
                    ticked.set()
                await osvrt.sleep(0.001)
        t = osvrt.spawn(ticker, cpu=osvrt.current().cpu)
        me = threading.get_ident()

        def blocking():
            # Blocks its OS thread until the ticker on this worker has run 20
            # times: that happens only if the worker keeps running green
            # threads while the call is away (a count, not a time; the long
            # bound only ends a broken run).
            return ticked.wait(30), threading.get_ident()
        saw_ticks, tid = await osvrt.to_thread(blocking)
        assert tid != me
        t.cancel()
        assert saw_ticks and ticks >= 20, ticks    # the worker ran green threads meanwhile
        assert await osvrt.to_thread(sorted, [3, 1, 2], reverse=True) == [3, 2, 1]
    call(main)


def test_exceptions_come_back(call):
    class Boom(Exception):
        pass

    def fail():
        raise Boom("from the pool")

    async def main():
        with pytest.raises(Boom, match="from the pool"):
            await osvrt.to_thread(fail)
        with pytest.raises(ValueError):
            await osvrt.to_thread(int, "x")
        with pytest.raises(TypeError):
            await osvrt.to_thread(42)
    call(main)


def test_cancel_releases_at_once_call_finishes_in_background(call):
    async def main():
        done = threading.Event()

        def slow():
            time.sleep(0.3)
            done.set()
            return "late"
        t = osvrt.spawn(osvrt.to_thread, slow)
        await osvrt.sleep(0.05)
        t0 = time.monotonic()
        t.cancel()
        with pytest.raises(osvrt.Cancelled):
            await t.join(timeout=5)
        # released at once: before the 0.3 s call ends (an ordering, not a timing,
        # so a loaded host cannot fail it), and well before the join's own 5 s
        assert not done.is_set()
        assert time.monotonic() - t0 < 5
        await osvrt.to_thread(done.wait, 5)          # ...and the call finished anyway
        assert done.is_set()
        with pytest.raises(TimeoutError):
            with osvrt.timeout(0.05):
                await osvrt.to_thread(time.sleep, 0.2)
    call(main)


def test_more_calls_than_threads(rt):
    size = default_pool_size()
    n = size * 3
    running = 0
    peak = 0
    lock = threading.Lock()

    def job(i):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return i

    async def main():
        async with osvrt.TaskGroup() as g:
            ths = [g.spawn(osvrt.to_thread, job, i) for i in range(n)]
        return [await t.join() for t in ths]
    t0 = time.monotonic()
    assert rt.submit(main).result(timeout=30) == list(range(n))
    assert peak <= size
    assert time.monotonic() - t0 >= 3 * 0.05 * 0.9        # bounded: it took >= 3 rounds
    st = rt.stats()["offload"]
    assert st["threads"] <= size and st["calls"] == n


def test_pool_stops_with_runtime():
    rt = osvrt.Runtime(cpus=1)
    rt.start()
    try:
        rt.submit(osvrt.to_thread, time.sleep, 0.01).result(timeout=10)
    finally:
        rt.stop(timeout=5)
    assert not [t for t in threading.enumerate() if t.name.startswith("osvrt-offload")]


def test_outside_a_runtime():
    import asyncio
    with pytest.raises(RuntimeError, match="osvrt"):
        asyncio.run(osvrt.to_thread(int))


def test_pool_threads_are_not_pinned_to_the_worker_that_started_them(rt):
    import os
    allowed = os.sched_getaffinity(os.getpid())

    async def main():
        return await osvrt.to_thread(os.sched_getaffinity, 0)
    assert rt.submit(main, cpu=rt.cpus[-1]).result(timeout=10) == allowed
