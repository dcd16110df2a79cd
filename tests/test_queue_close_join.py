"""Queue.task_done/join, close() and `async for` (issue #12), and the
keyword-argument errors of spawn and osvrt.run."""
import functools

import pytest

import osvrt

from support import RESULT_TIMEOUT


def run(main, cpus=1):
    """main() as a green thread of a fresh runtime; a hang fails, never blocks."""
    rt = osvrt.Runtime(cpus=cpus, balance=False, stall_threshold=None).start()
    try:
        return rt.submit(main).result(timeout=RESULT_TIMEOUT)
    finally:
        rt.stop(timeout=5)


def test_join_waits_for_every_task_done():
    async def main():
        q = osvrt.Queue()
        done = []

        async def worker():
            async for item in q:
                await osvrt.sleep(0.001)
                done.append(item)
                q.task_done()

        w = osvrt.spawn(worker)
        for i in range(20):
            await q.put(i)
        await q.join()
        seen = list(done)
        q.close()
        await w.join()
        return seen

    assert run(main) == list(range(20))


def test_join_returns_at_once_when_nothing_is_unfinished():
    async def main():
        q = osvrt.Queue()
        await q.join()
        q.put_nowait(1)
        q.get_nowait()
        q.task_done()
        await q.join()
        with pytest.raises(ValueError):
            q.task_done()
        return True

    assert run(main)


def test_close_lets_getters_drain_then_ends_async_for():
    async def main(n_getters):
        q = osvrt.Queue(maxsize=3)
        got = []

        async def getter():
            async for item in q:
                got.append(item)
            return "ended"

        getters = [osvrt.spawn(getter) for _ in range(n_getters)]
        for i in range(10):
            await q.put(i)
        q.close()
        q.close()                             # twice: a no-op
        with pytest.raises(osvrt.QueueClosed):
            await q.put(99)
        with pytest.raises(osvrt.QueueClosed):
            q.put_nowait(99)
        ends = [await g.join(timeout=5) for g in getters]
        with pytest.raises(osvrt.QueueClosed):
            await q.get()
        with pytest.raises(osvrt.QueueClosed):
            q.get_nowait()
        return sorted(got), ends, q.closed

    got, ends, closed = run(functools.partial(main, 3), cpus=2)
    assert got == list(range(10))              # every item got exactly once
    assert ends == ["ended"] * 3 and closed


def test_close_wakes_waiting_putters_with_queue_closed():
    async def main():
        q = osvrt.Queue(maxsize=1)
        q.put_nowait("first")

        async def putter():
            try:
                await q.put("second")
            except osvrt.QueueClosed:
                return "refused"
            return "put"

        p = osvrt.spawn(putter)
        await osvrt.sleep(0.01)               # p waits for room
        q.close()
        r = await p.join(timeout=5)
        return r, q.get_nowait(), q.qsize()

    assert run(main) == ("refused", "first", 0)


def test_spawn_keyword_arguments_name_functools_partial():
    async def f(x, y=0):
        return x + y

    async def main():
        with pytest.raises(TypeError) as info:
            osvrt.spawn(f, 1, y=3)
        return str(info.value)

    msg = run(main)
    assert "'y'" in msg and "functools.partial" in msg


def test_event_wait_timeout():
    async def main():
        e = osvrt.Event()
        with pytest.raises(TimeoutError):
            await e.wait(timeout=0.01)
        with pytest.raises(TimeoutError):
            await e.wait(0)
        e.set()
        return await e.wait(timeout=1)

    assert run(main) is True
