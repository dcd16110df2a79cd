"""API shapes a new user expects (issue 21, item 17): keyword arguments at
the doors (refused with the functools.partial hint, as spawn does),
rt.run(timeout=), `async with osvrt.timeout()`, move_on_after, shield,
gather, as_completed, wait_for, and a clear TypeError for asyncio awaits."""
import asyncio
import functools
import time

import pytest

import osvrt
from osvrt import asyncio_guard

T = 10


async def _add(a, b=1):
    await osvrt.sleep(0)
    return a + b


async def _after(delay, value, log=None):
    await osvrt.sleep(delay)
    if log is not None:
        log.append(value)
    return value


class Boom(Exception):
    pass


async def _fail(delay):
    await osvrt.sleep(delay)
    raise Boom(delay)


# ---- doors -------------------------------------------------------------

def test_submit_and_run_refuse_keywords_with_the_partial_hint(rt):
    for call in (lambda: rt.submit(_add, 1, b=2), lambda: rt.run(_add, 1, b=2)):
        with pytest.raises(TypeError, match=r"'b'.*functools\.partial\(fn, b=\.\.\.\)"):
            call()
    assert rt.submit(functools.partial(_add, 1, b=2)).result(timeout=T) == 3
    assert rt.run(functools.partial(_add, 1, b=2)) == 3

    async def in_group():
        async with osvrt.TaskGroup() as g:
            with pytest.raises(TypeError, match=r"'b'.*functools\.partial\(fn, b=\.\.\.\)"):
                g.spawn(_add, 1, b=2)
            t = g.spawn(functools.partial(_add, 1, b=2))
        return await t.join()
    assert rt.run(in_group) == 3


def test_run_timeout_cancels_and_raises(rt):
    cleaned = []

    async def slow():
        try:
            await osvrt.sleep(3600)
        finally:
            cleaned.append(True)
    with pytest.raises(TimeoutError, match="slow.*timeout=0.2"):
        rt.run(slow, timeout=0.2)
    assert rt.run(_add, 2, timeout=T) == 3
    deadline = time.monotonic() + T
    while not cleaned and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cleaned == [True]                       # it was cancelled, its cleanup ran
    with pytest.raises(ValueError, match="timeout"):
        rt.run(_add, 1, timeout=-1)


# ---- scopes -----------------------------------------------------------

def test_async_with_timeout(call):
    async def main():
        async with osvrt.timeout(T) as scope:
            await osvrt.sleep(0.001)
        assert not scope.expired
        with pytest.raises(TimeoutError):
            async with osvrt.timeout(0.05):
                await osvrt.sleep(3600)
        return "ok"
    assert call(main) == "ok"


def test_move_on_after_leaves_the_block_without_an_exception(call):
    async def main():
        reached = []
        with osvrt.move_on_after(0.05) as scope:
            await osvrt.sleep(3600)
            reached.append("never")
        assert scope.expired and not reached
        async with osvrt.move_on_after(T) as scope:
            await osvrt.sleep(0.001)
        assert not scope.expired
        # an outer timeout's expiry passes through an inner move_on_after
        with pytest.raises(TimeoutError):
            with osvrt.timeout(0.05):
                with osvrt.move_on_after(T):
                    await osvrt.sleep(3600)
        # the block's own errors pass through
        with pytest.raises(Boom):
            with osvrt.move_on_after(T):
                raise Boom()
        return "ok"
    assert call(main) == "ok"


def test_shield_lets_the_inner_work_finish(call):
    async def main():
        log = []

        async def guarded():
            return await osvrt.shield(_after(0.1, "finished", log))
        t = osvrt.spawn(guarded)
        await osvrt.sleep(0.02)
        t.cancel()
        with pytest.raises(osvrt.Cancelled):
            await t.join(timeout=T)
        assert log == []                            # the caller left at once...
        await osvrt.sleep(0.2)
        assert log == ["finished"]                  # ...and the shielded work ran on
        assert await osvrt.shield(_add(1, 2)) == 3
        return "ok"
    assert call(main) == "ok"


# ---- gather / as_completed / wait_for -------------------------------

def test_gather_returns_results_in_argument_order(call):
    async def main():
        return await osvrt.gather(_after(0.03, "a"), _after(0.01, "b"), _after(0.02, "c"))
    assert call(main) == ["a", "b", "c"]


def test_gather_first_failure_cancels_the_rest_and_waits(call):
    async def main():
        log = []

        async def sibling():
            try:
                await osvrt.sleep(3600)
            finally:
                await osvrt.sleep(0.02)             # cleanup that awaits
                log.append("sibling cleaned up")
        with pytest.raises(Boom):
            await osvrt.gather(sibling(), _fail(0.02))
        assert log == ["sibling cleaned up"]        # waited for, not left behind
        return "ok"
    assert call(main) == "ok"


def test_gather_return_exceptions(call):
    async def main():
        out = await osvrt.gather(_after(0.01, 1), _fail(0.01), return_exceptions=True)
        assert out[0] == 1 and isinstance(out[1], Boom)
        with pytest.raises(TypeError, match="coroutines"):
            await osvrt.gather(_add)                # the function, not a call
        return "ok"
    assert call(main) == "ok"


def test_as_completed_gives_threads_first_finished_first(call):
    async def main():
        order = []
        async for t in osvrt.as_completed([_after(0.06, 3), _after(0.02, 1), _after(0.04, 2)]):
            order.append(await t.join())
        return order
    assert call(main) == [1, 2, 3]


def test_as_completed_timeout_cancels_the_rest(call):
    async def main():
        log = []
        got = []
        with pytest.raises(TimeoutError, match="1 still running"):
            async for t in osvrt.as_completed([_after(0.01, 1), _after(3600, 2, log)],
                                              timeout=0.1):
                got.append(await t.join())
        assert got == [1] and log == []
        return "ok"
    assert call(main) == "ok"


def test_as_completed_async_with_cancels_on_break(call):
    async def main():
        cleaned = []

        async def long():
            try:
                await osvrt.sleep(3600)
            finally:
                cleaned.append(True)
        async with osvrt.as_completed([_after(0.01, 1), long()]) as it:
            async for t in it:
                break
        assert cleaned == [True]
        return "ok"
    assert call(main) == "ok"


def test_wait_for(call):
    async def main():
        assert await osvrt.wait_for(_after(0.01, "v"), T) == "v"
        assert await osvrt.wait_for(_after(0.01, "w"), None) == "w"
        with pytest.raises(TimeoutError):
            await osvrt.wait_for(_after(3600, "x"), 0.05)
        t = osvrt.spawn(_after, 0.01, "thread")
        assert await osvrt.wait_for(t, T) == "thread"
        return "ok"
    assert call(main) == "ok"


# ---- asyncio inside osvrt -------------------------------------------

def test_asyncio_sleep_in_a_green_thread_is_a_clear_type_error(call):
    async def main():
        with pytest.raises(TypeError, match="asyncio.*osvrt green thread.*osvrt.sleep"):
            await asyncio.sleep(0.01)
        coro = _after(0.01, 1)
        with pytest.raises(TypeError, match="asyncio"):
            await asyncio.wait_for(coro, 1)
        coro.close()                                # asyncio refused it before awaiting it
        # asyncio code still runs where an event loop may: an offload thread
        return await osvrt.to_thread(asyncio.run, asyncio.sleep(0, "ran"))
    assert call(main) == "ran"


def test_a_real_loop_replaces_the_guard():
    # what osvrt/aio's loop does while it runs on a worker: the check is its own then
    import asyncio.events
    asyncio_guard.install()                         # this (non-worker) thread, for the test
    try:
        assert asyncio_guard.is_guard(asyncio.events._get_running_loop())
        loop = asyncio.new_event_loop()
        asyncio.events._set_running_loop(loop)
        asyncio_guard.install()                     # leaves a real running loop alone
        assert asyncio.events._get_running_loop() is loop
        loop.close()
    finally:
        asyncio.events._set_running_loop(None)


def test_a_child_cancelled_before_it_ran_leaves_no_never_awaited_warning(recwarn):
    import gc

    async def fail_now():
        raise Boom("at once")

    async def main():
        # fail_now fails at its first step; the sibling, queued behind it on
        # the same CPU, is cancelled before it ever ran
        with pytest.raises(Boom):
            await osvrt.gather(fail_now(), _after(0.01, 1))
        with pytest.raises(TypeError):
            await osvrt.gather(_after(0.01, 1), "not a coroutine", _after(0.01, 2))
        return "ok"
    assert osvrt.run(main, cpus=1) == "ok"
    gc.collect()
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


def test_lifted_lets_a_real_loop_run_on_a_worker(call):
    async def main():
        def run_a_loop():
            coro = asyncio.sleep(0, "real loop ran")
            try:
                return asyncio.run(coro)
            finally:
                coro.close()                        # refused before it ran: no warning
        with pytest.raises(RuntimeError, match="running event loop"):
            run_a_loop()                            # the stand-in counts as a running loop
        with asyncio_guard.lifted():
            got = run_a_loop()                      # blocks this worker: a test only
        with pytest.raises(TypeError, match="asyncio"):
            await asyncio.sleep(0.01)               # the guard is back
        return got
    assert call(main) == "real loop ran"
