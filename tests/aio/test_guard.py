"""osvrt's asyncio loop beside osvrt.asyncio_guard (the stand-in running loop
of every worker OS thread): the loop's worker runs on the loop's own thread
without a stand-in, plain runtimes' green threads keep the guard's TypeError,
and run_forever() on a worker's thread is refused by the loop's own check."""
import asyncio
import asyncio.events
import contextlib
import threading

import pytest

import osvrt
from osvrt import asyncio_guard


async def _await_asyncio_sleep():
    try:
        await asyncio.sleep(0.01)
    except TypeError as e:
        return str(e)
    return "no error"


def test_a_plain_green_thread_on_the_loops_worker_cannot_await_asyncio():
    async def main():
        loop = asyncio.get_running_loop()
        seen = []

        async def plain():
            # the loop is this OS thread's running loop: loop.call_soon is fine
            seen.append(asyncio.events._get_running_loop() is loop)
            return await _await_asyncio_sleep()

        why = await loop.run_green(plain)
        await asyncio.sleep(0.01)                     # the loop carries on
        return seen, why

    with asyncio.Runner(loop_factory=osvrt.new_event_loop) as r:
        seen, why = r.run(main())
    assert seen == [True]
    assert "not an osvrt operation" in why
    assert asyncio.events._get_running_loop() is None      # nothing left behind


def test_plain_runtimes_keep_the_guard_while_an_osvrt_loop_runs():
    started, release = threading.Event(), threading.Event()
    loop_errors = []

    def run_loop():
        async def main():
            started.set()
            while not release.is_set():
                await asyncio.sleep(0.005)
            return asyncio.events._get_running_loop()

        try:
            with asyncio.Runner(loop_factory=osvrt.new_event_loop) as r:
                running = r.run(main())
            assert not asyncio_guard.is_guard(running)
            assert asyncio.events._get_running_loop() is None
        except BaseException as e:
            loop_errors.append(e)

    th = threading.Thread(target=run_loop)
    th.start()
    try:
        assert started.wait(10)

        async def green():
            assert asyncio_guard.is_guard(asyncio.events._get_running_loop())
            return await _await_asyncio_sleep()

        why = osvrt.run(green, cpus=1)
    finally:
        release.set()
        th.join(10)
    assert not th.is_alive() and loop_errors == []
    assert "osvrt green thread" in why and "osvrt.sleep" in why


def test_run_forever_on_a_worker_is_refused_with_or_without_the_guard():
    loop = osvrt.new_event_loop()
    try:
        async def green():
            for lift in (False, True):
                with asyncio_guard.lifted() if lift else contextlib.nullcontext():
                    with pytest.raises(RuntimeError, match="osvrt green thread"):
                        loop.run_forever()
            # the stand-in is back after lifted()
            return asyncio_guard.is_guard(asyncio.events._get_running_loop())

        assert osvrt.run(green, cpus=1)
        assert not loop.is_running()
    finally:
        loop.close()

