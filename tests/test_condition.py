"""osvrt.Condition: producer/consumer, wait_for, notify(n), notify_all, wait
morphing (a notified waiter wakes owning the mutex), ownership errors, and
cancel / timeout inside wait (the mutex is re-acquired before the exception
propagates).  All bounded in time through submit(...).result(timeout=...)."""
import os
import threading
import time

import pytest

import osvrt
from support import run, until

AVAILABLE = sorted(os.sched_getaffinity(0))
RESULT_TIMEOUT = 30

pytestmark = pytest.mark.skipif(len(AVAILABLE) < 2, reason="needs at least 2 CPUs")


# ---- construction -------------------------------------------------------------

def test_condition_needs_a_mutex():
    with pytest.raises(TypeError):
        osvrt.Condition(threading.Lock())
    c = osvrt.Condition()
    assert not c.locked()
    m = osvrt.Mutex()
    assert not osvrt.Condition(m).locked()


# ---- producer / consumer ----------------------------------------------------------

def test_producer_consumer_across_cpus(mrt, cpus):
    C0, C1 = cpus
    N = 3000
    CAP = 4

    async def main():
        m = osvrt.Mutex()
        not_full = osvrt.Condition(m)
        not_empty = osvrt.Condition(m)
        buf = []
        out = []
        overfull = []

        async def producer():
            for i in range(N):
                async with m:
                    while len(buf) >= CAP:
                        await not_full.wait()
                    buf.append(i)
                    if len(buf) > CAP:
                        overfull.append(len(buf))
                    not_empty.notify()

        async def consumer():
            for _ in range(N):
                async with m:
                    while not buf:
                        await not_empty.wait()
                    out.append(buf.pop(0))
                    not_full.notify()

        p = osvrt.spawn(producer, cpu=C0)
        c = osvrt.spawn(consumer, cpu=C1)
        await p.join(timeout=RESULT_TIMEOUT)
        await c.join(timeout=RESULT_TIMEOUT)
        return out, overfull, m.locked()

    out, overfull, locked = run(mrt, main, cpu=C0)
    assert out == list(range(N))
    assert overfull == []
    assert not locked


def test_many_producers_and_consumers_with_notify_all(mrt, cpus):
    C0, C1 = cpus
    PER = 300

    async def main():
        c = osvrt.Condition()
        buf = []
        out = []

        async def producer(p):
            for i in range(PER):
                async with c:
                    buf.append((p, i))
                    c.notify_all()
                if i % 7 == 0:
                    await osvrt.yield_now()

        async def consumer(n):
            for _ in range(n):
                async with c:
                    await c.wait_for(lambda: buf)
                    out.append(buf.pop(0))

        ps = [osvrt.spawn(producer, p, cpu=(C0, C1)[p % 2]) for p in range(4)]
        cs = [osvrt.spawn(consumer, 2 * PER, cpu=(C1, C0)[k % 2]) for k in range(2)]
        for t in ps + cs:
            await t.join(timeout=RESULT_TIMEOUT)
        return out

    out = run(mrt, main, cpu=C0)
    assert sorted(out) == sorted((p, i) for p in range(4) for i in range(PER))
    for p in range(4):
        assert [i for q, i in out if q == p] == list(range(PER))


# ---- wait_for -------------------------------------------------------------------

def test_wait_for_returns_the_true_predicate_value(mrt, cpus):
    C0, C1 = cpus

    async def main():
        c = osvrt.Condition()
        box = {"n": 0}
        seen = []

        async def waiter():
            async with c:
                def pred():
                    seen.append(box["n"])
                    return box["n"] >= 3 and f"n={box['n']}"
                result = await c.wait_for(pred)
                return result, c.locked()

        w = osvrt.spawn(waiter, cpu=C1)
        for _ in range(5):
            await osvrt.sleep(0.005)
            async with c:
                box["n"] += 1
                c.notify()
        return await w.join(timeout=5), seen

    (result, locked), seen = run(mrt, main, cpu=C0)
    assert result == "n=3"
    assert locked is True
    assert seen[-1] == 3
    assert all(v < 3 for v in seen[:-1])


def test_wait_for_true_at_once_does_not_wait(mrt):
    async def main():
        c = osvrt.Condition()
        async with c:
            return await c.wait_for(lambda: 42)

    assert run(mrt, main) == 42


# ---- notify(n), notify_all ---------------------------------------------------------

def test_notify_n_wakes_exactly_n_then_notify_all_wakes_the_rest(mrt, cpus):
    C0, C1 = cpus
    W = 6

    async def main():
        c = osvrt.Condition()
        box = {"entered": 0, "woken": 0}

        async def waiter():
            async with c:
                box["entered"] += 1
                await c.wait()               # atomically releases: entered == waiting
                box["woken"] += 1

        ts = [osvrt.spawn(waiter, cpu=(C0, C1)[i % 2]) for i in range(W)]

        async def all_waiting():
            async with c:
                return box["entered"] == W

        deadline = time.monotonic() + 5
        while not await all_waiting():
            assert time.monotonic() < deadline
            await osvrt.sleep(0.001)

        async with c:
            c.notify(2)
        await until(lambda: box["woken"] >= 2, what="2 woken")
        await osvrt.sleep(0.05)              # give extra (wrong) wake-ups time to show
        after_two = box["woken"]

        async with c:
            c.notify(1)
        await until(lambda: box["woken"] >= 3, what="3 woken")
        await osvrt.sleep(0.05)
        after_three = box["woken"]

        async with c:
            c.notify_all()
        for t in ts:
            await t.join(timeout=5)
        return after_two, after_three, box["woken"]

    assert run(mrt, main, cpu=C0) == (2, 3, W)


def test_notify_without_waiters_is_a_no_op(mrt):
    async def main():
        c = osvrt.Condition()
        async with c:
            c.notify()
            c.notify(5)
            c.notify_all()
        return c.locked()

    assert run(mrt, main) is False


# ---- wait morphing ------------------------------------------------------------------

@pytest.mark.parametrize("where", ["same_cpu", "other_cpu"])
def test_wait_morphing_waiter_wakes_owning_the_mutex(mrt, cpus, where):
    """notify() moves the waiter onto the mutex queue: when the notifier
    releases, the waiter owns the mutex, so the notifier's immediate re-acquire
    (and any third thread) queues behind it."""
    C0, C1 = cpus
    wcpu = C0 if where == "same_cpu" else C1

    async def main():
        m = osvrt.Mutex()
        c = osvrt.Condition(m)
        order = []
        box = {"ready": False}

        async def waiter():
            async with m:
                box["ready"] = True
                await c.wait()
                order.append("waiter")
                owns = m.locked()
                await osvrt.sleep(0.005)     # others stay excluded meanwhile
            return owns

        w = osvrt.spawn(waiter, cpu=wcpu)
        await until(lambda: box["ready"] and w.state == "waiting", what="waiter in wait()")
        await m.acquire()
        c.notify()
        state_after_notify = w.state         # still parked: it waits for the mutex
        m.release()                          # hands the mutex to the waiter
        handed = m.locked()
        await m.acquire()                    # queues behind the waiter
        order.append("notifier")
        m.release()
        owns = await w.join(timeout=5)
        return state_after_notify, handed, order, owns, m.locked()

    state_after_notify, handed, order, owns, locked = run(mrt, main, cpu=C0)
    assert state_after_notify == "waiting"
    assert handed is True
    assert order == ["waiter", "notifier"]
    assert owns is True
    assert not locked


def test_waiter_released_by_notify_can_release_without_error(mrt, cpus):
    C0, C1 = cpus

    async def main():
        c = osvrt.Condition()
        box = {"go": False}

        async def waiter():
            await c.acquire()
            await c.wait_for(lambda: box["go"])
            c.release()                      # raises if wait() did not re-own it
            return "ok"

        w = osvrt.spawn(waiter, cpu=C1)
        await until(lambda: w.state == "waiting")
        async with c:
            box["go"] = True
            c.notify()
        return await w.join(timeout=5), c.locked()

    assert run(mrt, main, cpu=C0) == ("ok", False)


# ---- ownership errors -----------------------------------------------------------------

async def try_all(c):
    """Which of wait / notify / notify_all raise RuntimeError."""
    errors = []
    try:
        await c.wait()
    except RuntimeError:
        errors.append("wait")
    try:
        c.notify()
    except RuntimeError:
        errors.append("notify")
    try:
        c.notify_all()
    except RuntimeError:
        errors.append("notify_all")
    return errors


def test_wait_and_notify_without_holding_the_mutex_raise(mrt, cpus):
    C0, C1 = cpus

    async def main():
        c = osvrt.Condition()
        errors = await try_all(c)
        with pytest.raises(RuntimeError):
            await c.wait_for(lambda: False)

        # held by another thread: still not ours
        await c.acquire()

        other_errors = await osvrt.spawn(try_all, c, cpu=C1).join(timeout=5)
        still = c.locked()
        c.release()
        return errors, other_errors, still, c.locked()

    errors, other_errors, still, locked = run(mrt, main, cpu=C0)
    assert errors == ["wait", "notify", "notify_all"]
    assert other_errors == ["wait", "notify", "notify_all"]
    assert still is True
    assert locked is False


# ---- cancel / timeout inside wait --------------------------------------------------------

@pytest.mark.parametrize("where", ["same_cpu", "other_cpu"])
def test_cancel_inside_wait_reacquires_before_propagating(mrt, cpus, where):
    C0, C1 = cpus
    wcpu = C0 if where == "same_cpu" else C1

    async def main():
        m = osvrt.Mutex()
        c = osvrt.Condition(m)
        events = []

        async def waiter():
            async with m:                   # exit must not raise RuntimeError
                try:
                    await c.wait()
                except osvrt.Cancelled:
                    events.append(("cancelled, owns", m.locked()))
                    raise

        w = osvrt.spawn(waiter, cpu=wcpu)
        await until(lambda: w.state == "waiting")
        await m.acquire()                    # hold the mutex while cancelling
        w.cancel()
        await osvrt.sleep(0.02)
        events.append("main releases")       # the waiter cannot go on before this
        m.release()
        with pytest.raises(osvrt.Cancelled):
            await w.join(timeout=5)
        return events, m.locked()

    events, locked = run(mrt, main, cpu=C0)
    assert events == ["main releases", ("cancelled, owns", True)]
    assert not locked


def test_timeout_inside_wait_reacquires_before_propagating(mrt, cpus):
    C0, C1 = cpus

    async def main():
        m = osvrt.Mutex()
        c = osvrt.Condition(m)
        events = []

        async def waiter():
            try:
                with osvrt.timeout(0.1):
                    async with m:
                        await c.wait()
            except TimeoutError:
                events.append("timed out")
                return m.locked()
            return "not timed out"

        w = osvrt.spawn(waiter, cpu=C1)
        await until(lambda: w.state == "waiting")
        await m.acquire()                     # the waiter must wait for us to leave
        await osvrt.sleep(0.2)
        events.append("main releases")
        m.release()
        locked_when_done = await w.join(timeout=5)
        return events, locked_when_done, m.locked()

    events, locked_when_done, locked = run(mrt, main, cpu=C0)
    assert events == ["main releases", "timed out"]
    assert locked_when_done is False
    assert locked is False


def test_cancel_after_notify_still_wakes_owning_the_mutex(mrt, cpus):
    """A waiter notified (moved to the mutex queue) and then cancelled leaves
    wait() owning the mutex, so `async with` exits cleanly, and the mutex is
    free afterwards."""
    C0, C1 = cpus

    async def main():
        m = osvrt.Mutex()
        c = osvrt.Condition(m)
        seen = []

        async def waiter():
            async with m:
                try:
                    await c.wait()
                    seen.append(("returned", m.locked()))
                except osvrt.Cancelled:
                    seen.append(("cancelled", m.locked()))
                    raise

        w = osvrt.spawn(waiter, cpu=C1)
        await until(lambda: w.state == "waiting")
        async with m:
            c.notify()
            w.cancel()
            await osvrt.sleep(0.01)
        with pytest.raises(osvrt.Cancelled):
            await w.join(timeout=5)
        return seen, m.locked()

    seen, locked = run(mrt, main, cpu=C0)
    assert seen == [("cancelled", True)]
    assert not locked


def test_notify_skips_cancelled_waiters(mrt, cpus):
    """notify(1) after the first waiter was cancelled wakes the second."""
    C0, C1 = cpus

    async def main():
        c = osvrt.Condition()
        woken = []

        async def waiter(name):
            async with c:
                await c.wait()
                woken.append(name)

        a = osvrt.spawn(waiter, "a", cpu=C1)
        await until(lambda: a.state == "waiting")
        b = osvrt.spawn(waiter, "b", cpu=C1)
        await until(lambda: b.state == "waiting")
        a.cancel()
        with pytest.raises(osvrt.Cancelled):
            await a.join(timeout=5)
        async with c:
            c.notify(1)
        await b.join(timeout=5)
        return woken, c.locked()

    assert run(mrt, main, cpu=C0) == (["b"], False)
