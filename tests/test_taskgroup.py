"""osvrt.TaskGroup: children joined at the end of the block, the first failure
cancels siblings and the body, failures come out as an ExceptionGroup, and
a cancel of the enclosing thread reaches the children.

Every test runs under osvrt.run() with a small CPU count, and every wait is
bounded by an osvrt.timeout (a lost wake-up fails with TimeoutError instead of
hanging)."""
import gc
import warnings

import pytest

import osvrt

LIMIT = 10          # seconds any one scenario may take before it fails


class Boom(Exception):
    pass


async def _sleep_then(delay, value, log=None):
    await osvrt.sleep(delay)
    if log is not None:
        log.append(value)
    return value


async def _fail_after(delay, exc):
    await osvrt.sleep(delay)
    raise exc


async def _wait_forever(log, tag):
    try:
        await osvrt.sleep(3600)
    except osvrt.Cancelled:
        log.append(("cancelled", tag))
        raise
    finally:
        log.append(("cleanup", tag))


def test_leaving_the_block_joins_every_child():
    async def main():
        log = []
        with osvrt.timeout(LIMIT) as limit:
            async with osvrt.TaskGroup() as g:
                ts = [g.spawn(_sleep_then, 0.01 * (i + 1), i, log) for i in range(5)]
                assert all(isinstance(t, osvrt.Thread) for t in ts)
            # here, and without any join of ours, every child has ended
            assert all(t.done() for t in ts)
            assert sorted(log) == [0, 1, 2, 3, 4]
        assert not limit.expired
        return [await t.join() for t in ts]

    assert osvrt.run(main, cpus=1) == [0, 1, 2, 3, 4]


def test_first_failure_cancels_siblings_and_body():
    async def main():
        log = []
        body_cancelled = False
        with osvrt.timeout(LIMIT) as limit:
            with pytest.raises(ExceptionGroup) as ei:
                async with osvrt.TaskGroup() as g:
                    a = g.spawn(_wait_forever, log, "a")
                    b = g.spawn(_wait_forever, log, "b")
                    g.spawn(_fail_after, 0.01, Boom("first"))
                    try:
                        await osvrt.sleep(3600)      # the body is woken by the failure
                    except osvrt.Cancelled as e:
                        body_cancelled = type(e) is osvrt.Cancelled   # not the timeout's expiry
                        raise
        assert body_cancelled
        assert [type(e) for e in ei.value.exceptions] == [Boom]
        assert str(ei.value.exceptions[0]) == "first"
        assert sorted(log) == [("cancelled", "a"), ("cancelled", "b"),
                               ("cleanup", "a"), ("cleanup", "b")]
        for t in (a, b):
            with pytest.raises(osvrt.Cancelled):        # a cancelled child joins as Cancelled
                await t.join()
        assert not limit.expired
        return "ok"

    assert osvrt.run(main, cpus=2) == "ok"


def test_a_failure_wakes_the_body_waiting_in_aexit():
    async def main():
        log = []
        with osvrt.timeout(LIMIT) as limit:
            with pytest.raises(ExceptionGroup) as ei:
                async with osvrt.TaskGroup() as g:
                    g.spawn(_wait_forever, log, "sibling")
                    g.spawn(_fail_after, 0.02, Boom("late"))
                    # the body ends at once: the failure arrives in __aexit__
        assert [str(e) for e in ei.value.exceptions] == ["late"]
        assert ("cancelled", "sibling") in log
        # The Cancelled the group put into the body was absorbed: the thread
        # goes on sleeping normally afterwards.
        await osvrt.sleep(0.01)
        assert not limit.expired
        return "ok"

    assert osvrt.run(main, cpus=2) == "ok"


def test_exception_group_holds_every_failure_in_order():
    async def fails_when_cancelled(exc):
        try:
            await osvrt.sleep(3600)
        finally:
            raise exc                           # a failure during cleanup counts too

    async def main():
        with osvrt.timeout(LIMIT) as limit:
            with pytest.raises(ExceptionGroup) as ei:
                async with osvrt.TaskGroup() as g:
                    g.spawn(fails_when_cancelled, KeyError("second"))
                    g.spawn(_fail_after, 0.01, Boom("first"))
                    ok = g.spawn(_sleep_then, 0, "fine")
        eg = ei.value
        assert type(eg) is ExceptionGroup
        assert "2 unhandled errors" in str(eg)
        assert [type(e) for e in eg.exceptions] == [Boom, KeyError]
        assert await ok.join() == "fine"
        assert not limit.expired
        return "ok"

    assert osvrt.run(main, cpus=2) == "ok"


def test_a_base_exception_failure_makes_a_base_exception_group():
    class Stop(BaseException):
        pass

    async def main():
        with osvrt.timeout(LIMIT) as limit:
            with pytest.raises(BaseExceptionGroup) as ei:
                async with osvrt.TaskGroup() as g:
                    g.spawn(_fail_after, 0.01, Stop("base"))
                    g.spawn(_wait_forever, [], "x")
        assert not isinstance(ei.value, ExceptionGroup)
        assert [type(e) for e in ei.value.exceptions] == [Stop]
        assert not limit.expired
        return "ok"

    assert osvrt.run(main, cpus=1) == "ok"


def test_a_cancelled_child_is_not_a_failure():
    async def main():
        log = []
        with osvrt.timeout(LIMIT) as limit:
            async with osvrt.TaskGroup() as g:
                t = g.spawn(_wait_forever, log, "t")
                done = g.spawn(_sleep_then, 0.01, "done")
                await osvrt.sleep(0.01)
                t.cancel()
        assert ("cancelled", "t") in log
        assert not limit.expired
        return await done.join()

    assert osvrt.run(main, cpus=1) == "done"


def test_body_raising_cancels_children_and_is_grouped():
    async def main():
        log = []
        with osvrt.timeout(LIMIT) as limit:
            with pytest.raises(ExceptionGroup) as ei:
                async with osvrt.TaskGroup() as g:
                    t = g.spawn(_wait_forever, log, "child")
                    await osvrt.sleep(0.01)
                    raise Boom("from body")
        assert [str(e) for e in ei.value.exceptions] == ["from body"]
        assert t.done() and ("cleanup", "child") in log
        assert not limit.expired
        return "ok"

    assert osvrt.run(main, cpus=2) == "ok"


def test_body_error_comes_after_child_failures():
    async def main():
        with osvrt.timeout(LIMIT) as limit:
            with pytest.raises(ExceptionGroup) as ei:
                async with osvrt.TaskGroup() as g:
                    g.spawn(_fail_after, 0, Boom("child"))
                    try:
                        await osvrt.sleep(3600)
                    except osvrt.Cancelled:
                        raise KeyError("body, while cancelled")
        assert [type(e) for e in ei.value.exceptions] == [Boom, KeyError]
        assert not limit.expired
        return "ok"

    assert osvrt.run(main, cpus=1) == "ok"


def test_nested_groups():
    async def inner(log):
        async with osvrt.TaskGroup() as g:
            g.spawn(_wait_forever, log, "inner-a")
            g.spawn(_fail_after, 0.01, Boom("inner"))

    async def main():
        log = []
        with osvrt.timeout(LIMIT) as limit:
            with pytest.raises(ExceptionGroup) as ei:
                async with osvrt.TaskGroup() as outer:
                    outer.spawn(_wait_forever, log, "outer-a")
                    outer.spawn(inner, log)
        # The inner group's ExceptionGroup is the failure of one child of the outer.
        (sub,) = ei.value.exceptions
        assert isinstance(sub, ExceptionGroup)
        assert [str(e) for e in sub.exceptions] == ["inner"]
        assert ("cancelled", "inner-a") in log and ("cancelled", "outer-a") in log
        # and a group nested in the body, succeeding, inside a group that succeeds
        async with osvrt.TaskGroup() as g1:
            g1.spawn(_sleep_then, 0, 1)
            async with osvrt.TaskGroup() as g2:
                t = g2.spawn(_sleep_then, 0.01, 2)
            assert t.done()
        assert not limit.expired
        return "ok"

    assert osvrt.run(main, cpus=2) == "ok"


def test_outer_cancel_reaches_children_then_propagates():
    log = []
    entered = []

    async def holder():
        async with osvrt.TaskGroup() as g:
            g.spawn(_wait_forever, log, "c1")
            g.spawn(_wait_forever, log, "c2")
            entered.append(True)
            await osvrt.sleep(3600)
        log.append("after block")                     # never reached

    async def main():
        with osvrt.timeout(LIMIT) as limit:
            h = osvrt.spawn(holder)
            while not entered:
                await osvrt.sleep(0.001)
            await osvrt.sleep(0.01)
            h.cancel()
            with pytest.raises(osvrt.Cancelled):
                await h.join()
        assert sorted(log) == [("cancelled", "c1"), ("cancelled", "c2"),
                               ("cleanup", "c1"), ("cleanup", "c2")]
        assert not limit.expired
        return "ok"

    assert osvrt.run(main, cpus=2) == "ok"


def test_outer_cancel_while_waiting_in_aexit():
    log = []
    waiting = []

    async def holder():
        async with osvrt.TaskGroup() as g:
            g.spawn(_wait_forever, log, "c")
            waiting.append(True)              # the body ends: __aexit__ waits for c

    async def main():
        with osvrt.timeout(LIMIT) as limit:
            h = osvrt.spawn(holder)
            while not waiting:
                await osvrt.sleep(0.001)
            await osvrt.sleep(0.01)
            h.cancel()
            with pytest.raises(osvrt.Cancelled):
                await h.join()
        assert log == [("cancelled", "c"), ("cleanup", "c")]
        assert not limit.expired
        return "ok"

    assert osvrt.run(main, cpus=1) == "ok"


def test_timeout_around_a_group_cancels_children_and_raises_timeout():
    async def main():
        log = []
        with pytest.raises(TimeoutError):
            with osvrt.timeout(0.05):
                async with osvrt.TaskGroup() as g:
                    g.spawn(_wait_forever, log, "c")
        assert log == [("cancelled", "c"), ("cleanup", "c")]
        return "ok"

    assert osvrt.run(main, cpus=1) == "ok"


def test_children_on_other_cpus(two_cpus):
    a, b = two_cpus

    async def where():
        await osvrt.sleep(0.005)
        return osvrt.current().cpu

    async def main():
        with osvrt.timeout(LIMIT) as limit:
            async with osvrt.TaskGroup() as g:
                ts = [g.spawn(where, cpu=c, name=f"on-{c}") for c in (a, b, a, b)]
            assert [t.name for t in ts] == [f"on-{c}" for c in (a, b, a, b)]
            assert all(t.pinned for t in ts)
            cpus = [await t.join() for t in ts]
            # and a failure on one CPU cancels a sibling on the other
            log = []
            with pytest.raises(ExceptionGroup):
                async with osvrt.TaskGroup() as g:
                    g.spawn(_wait_forever, log, "far", cpu=b)
                    g.spawn(_fail_after, 0.01, Boom("near"), cpu=a)
            assert ("cancelled", "far") in log
        assert not limit.expired
        return cpus

    assert osvrt.run(main, cpus=[a, b]) == [a, b, a, b]


def test_children_may_spawn_siblings_while_the_body_waits():
    async def main():
        log = []

        async def parent_child(g):
            await osvrt.sleep(0.01)
            g.spawn(_sleep_then, 0.01, "grandchild", log)

        with osvrt.timeout(LIMIT) as limit:
            async with osvrt.TaskGroup() as g:
                g.spawn(parent_child, g)
        assert log == ["grandchild"]
        assert not limit.expired
        return "ok"

    assert osvrt.run(main, cpus=1) == "ok"


def test_spawn_after_exit_raises():
    async def main():
        async with osvrt.TaskGroup() as g:
            g.spawn(_sleep_then, 0, 1)
        with pytest.raises(RuntimeError, match="finished"):
            g.spawn(_sleep_then, 0, 2)
        return "ok"

    assert osvrt.run(main, cpus=1) == "ok"


def test_misuse_is_refused_clearly():
    async def main():
        g = osvrt.TaskGroup()
        with pytest.raises(RuntimeError, match="before `async with`"):
            g.spawn(_sleep_then, 0, 1)
        async with g:
            with pytest.raises(TypeError, match="not callable"):
                g.spawn(42)
            with pytest.raises(TypeError, match="not a coroutine"):
                g.spawn(lambda: 1)
            with pytest.raises(ValueError, match="cpu=99999"):
                g.spawn(_sleep_then, 0, 1, cpu=99999)
            with pytest.raises(ValueError, match="priority"):
                g.spawn(_sleep_then, 0, 1, priority=0)
        with pytest.raises(RuntimeError, match="only once"):
            async with g:
                pass
        return "ok"

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)     # no "never awaited" left behind
        assert osvrt.run(main, cpus=1) == "ok"
        gc.collect()


def test_outside_a_runtime():
    g = osvrt.TaskGroup()
    with pytest.raises(RuntimeError, match="osvrt.run"):
        g.__aenter__().send(None)


def test_spawned_while_aborting_never_runs(recwarn):
    async def main():
        ran = []

        async def late():
            ran.append(True)

        with osvrt.timeout(LIMIT) as limit:
            with pytest.raises(ExceptionGroup):
                async with osvrt.TaskGroup() as g:
                    g.spawn(_fail_after, 0, Boom("x"))
                    try:
                        await osvrt.sleep(3600)
                    except osvrt.Cancelled:
                        t = g.spawn(late)          # the group is being cancelled
                        raise
        with pytest.raises(osvrt.Cancelled):
            await t.join()
        assert ran == []
        assert not limit.expired
        return "ok"

    assert osvrt.run(main, cpus=1) == "ok"
    gc.collect()
    assert not [w for w in recwarn if "never awaited" in str(w.message)]
