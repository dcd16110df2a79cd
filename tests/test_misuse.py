"""Misuse gets a clear exception, never a hang: foreign awaitables inside green
threads, osvrt operations outside a runtime, blocking calls from inside."""
import asyncio
import concurrent.futures
import threading

import pytest

import osvrt


# ---- foreign awaitables inside a green thread ----------------------------------

def test_asyncio_sleep_inside_a_green_thread_is_a_type_error_there(call):
    async def main():
        with pytest.raises(TypeError):
            await asyncio.sleep(0)
        await osvrt.sleep(0.001)           # the thread still works afterwards
        return "recovered"

    assert call(main, timeout=10) == "recovered"


def test_awaiting_an_asyncio_future_is_a_type_error_there(call):
    async def main():
        loop = asyncio.new_event_loop()
        try:
            fut = loop.create_future()
            with pytest.raises(TypeError):
                await fut
        finally:
            loop.close()
        await osvrt.yield_now()
        return "recovered"

    assert call(main, timeout=10) == "recovered"


def test_uncaught_foreign_await_ends_the_thread_with_type_error(rt):
    async def bad():
        await asyncio.sleep(0)

    with pytest.raises(TypeError):
        rt.submit(bad).result(timeout=10)

    async def joins_bad():
        t = osvrt.spawn(bad)
        with pytest.raises(TypeError):
            await t.join(timeout=5)
        return "ok"

    assert rt.submit(joins_bad).result(timeout=10) == "ok"


def test_foreign_await_does_not_disturb_other_threads(rt):
    async def bad():
        try:
            await asyncio.sleep(0)
        except TypeError:
            return "type error"

    async def good():
        await osvrt.sleep(0.01)
        return "good"

    futs = [rt.submit(bad if i % 2 else good) for i in range(20)]
    assert [f.result(timeout=10) for f in futs] == ["good", "type error"] * 10


# ---- osvrt operations outside a runtime ------------------------------------------

def _assert_points_to_osvrt_run(exc):
    assert "osvrt.run" in str(exc)


def test_current_outside_is_a_runtime_error():
    with pytest.raises(RuntimeError) as info:
        osvrt.current()
    _assert_points_to_osvrt_run(info.value)


def test_current_from_a_foreign_thread_while_a_runtime_runs(rt):
    with pytest.raises(RuntimeError):
        osvrt.current()
    box = []

    def other():
        try:
            osvrt.current()
        except RuntimeError as e:
            box.append(e)

    th = threading.Thread(target=other)
    th.start()
    th.join(10)
    assert len(box) == 1


def test_yield_now_outside_is_a_runtime_error():
    coro = osvrt.yield_now()
    try:
        with pytest.raises(RuntimeError) as info:
            coro.send(None)
        _assert_points_to_osvrt_run(info.value)
    finally:
        coro.close()


def test_sleep_outside_is_a_runtime_error():
    coro = osvrt.sleep(0.01)
    try:
        with pytest.raises(RuntimeError) as info:
            coro.send(None)
        _assert_points_to_osvrt_run(info.value)
    finally:
        coro.close()


def test_osvrt_awaits_inside_asyncio_are_runtime_errors_not_hangs():
    async def uses_osvrt():
        await osvrt.sleep(0.01)

    async def yields():
        await osvrt.yield_now()

    async def waits():
        await osvrt.Event().wait()

    for fn in (uses_osvrt, yields, waits):
        with pytest.raises(RuntimeError):
            asyncio.run(asyncio.wait_for(fn(), 5))


def test_timeout_outside_is_a_runtime_error():
    with pytest.raises(RuntimeError):
        with osvrt.timeout(1):
            pass


# ---- blocking doors used from inside -------------------------------------------

def test_runtime_run_from_inside_the_runtime_is_a_runtime_error(rt):
    async def inner():
        return 1

    async def main():
        with pytest.raises(RuntimeError):
            rt.run(inner)
        return "ok"

    assert rt.submit(main).result(timeout=10) == "ok"
    assert rt.run(inner) == 1                  # from outside it works


def test_runtime_run_from_inside_another_runtime_is_a_runtime_error(rt, make_rt):
    other = make_rt(cpus=1)

    async def inner():
        return 1

    async def main():
        with pytest.raises(RuntimeError):
            other.run(inner)                   # would block this worker
        return "ok"

    assert rt.submit(main).result(timeout=10) == "ok"


def test_submit_from_inside_the_runtime_returns_a_future(rt):
    # submit() is allowed from ANY OS thread, a worker included.
    async def inner():
        return 5

    async def main():
        f = rt.submit(inner)
        assert isinstance(f, concurrent.futures.Future)
        for _ in range(1000):
            if f.done():
                break
            await osvrt.sleep(0.005)
        return f.result(timeout=0)

    assert rt.submit(main).result(timeout=15) == 5
