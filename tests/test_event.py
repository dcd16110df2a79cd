"""osvrt.Event: set/clear/is_set/wait, on one CPU and across CPUs."""
import random
import sys
import time

import pytest

import osvrt


def test_event_flag_operations_outside_a_runtime():
    ev = osvrt.Event()
    assert ev.is_set() is False
    ev.set()
    assert ev.is_set() is True
    ev.set()                               # idempotent
    assert ev.is_set() is True
    ev.clear()
    assert ev.is_set() is False
    ev.clear()
    assert ev.is_set() is False


def test_wait_on_a_set_event_returns_at_once(call):
    async def main():
        ev = osvrt.Event()
        ev.set()
        with osvrt.timeout(5):
            await ev.wait()
            await ev.wait()
        return ev.is_set()

    assert call(main) is True


def test_wait_blocks_until_set(call):
    async def waiter(ev, log):
        log.append("waiting")
        await ev.wait()
        log.append("woken")

    async def main():
        ev, log = osvrt.Event(), []
        t = osvrt.spawn(waiter, ev, log)
        await osvrt.sleep(0.05)
        log.append("set")
        ev.set()
        await t.join(timeout=5)
        return log

    assert call(main) == ["waiting", "set", "woken"]


def test_wait_after_clear_blocks_again(call):
    async def main():
        ev = osvrt.Event()
        ev.set()
        await ev.wait()
        ev.clear()
        with pytest.raises(TimeoutError):
            with osvrt.timeout(0.03):
                await ev.wait()
        return "ok"

    assert call(main) == "ok"


def test_set_then_clear_still_wakes_every_waiter(call):
    # Waiters parked at the time of set() are woken even if clear() follows at once.
    async def waiter(ev):
        await ev.wait()
        return "woken"

    async def main():
        ev = osvrt.Event()
        ts = [osvrt.spawn(waiter, ev) for _ in range(10)]
        await osvrt.sleep(0.05)
        ev.set()
        ev.clear()
        return [await t.join(timeout=5) for t in ts]

    assert call(main) == ["woken"] * 10


def test_many_waiters_on_both_cpus_woken_by_one_set(rt):
    n = 200

    async def waiter(ev, parked):
        parked.append(1)
        await ev.wait()
        return osvrt.current().cpu

    async def main():
        ev, parked = osvrt.Event(), []
        ts = [osvrt.spawn(waiter, ev, parked, cpu=rt.cpus[i % len(rt.cpus)]) for i in range(n)]
        deadline = time.monotonic() + 10
        while len(parked) < n and time.monotonic() < deadline:
            await osvrt.sleep(0.005)
        await osvrt.sleep(0.05)
        assert not any(t.done() for t in ts)   # really parked before the set
        ev.set()
        with osvrt.timeout(10):
            return [await t.join() for t in ts]

    cpus = rt.submit(main).result(timeout=20)
    assert sorted(cpus) == sorted(rt.cpus[i % len(rt.cpus)] for i in range(n))


def test_set_from_another_cpu_wakes_the_waiter(rt, two_cpus):
    a, b = rt.cpus[0], rt.cpus[1]

    async def waiter(ev):
        with osvrt.timeout(10):
            await ev.wait()
        return osvrt.current().cpu

    async def main():
        ev = osvrt.Event()
        t = osvrt.spawn(waiter, ev, cpu=b)
        await osvrt.sleep(0.02)
        ev.set()
        return await t.join()

    for _ in range(20):
        assert rt.submit(main, cpu=a).result(timeout=15) == b


@pytest.fixture
def frequent_gil_switches():
    """Hand the GIL between OS threads every few microseconds, so that the two
    workers really interleave inside wait() and set() (with the default 5 ms
    interval a race window of a few bytecodes is almost never hit)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(5e-6)
    yield
    sys.setswitchinterval(old)


def _jitter(rng):
    """Spin 0-20 us, so that each side's set() lands at varying points of the
    other side's wait(), including inside its check-then-park window."""
    end = time.perf_counter() + rng.random() * 20e-6
    while time.perf_counter() < end:
        pass


def test_cross_cpu_ping_pong_20000_round_trips(rt, two_cpus, frequent_gil_switches):
    # A lost wake-up makes one side wait forever: the osvrt.timeout turns that
    # into a TimeoutError (and a failed test) instead of a hang.
    n = 20_000
    a, b = rt.cpus[0], rt.cpus[1]

    async def pinger(ping, pong):
        rng = random.Random(1)
        with osvrt.timeout(60):
            for _ in range(n):
                ping.set()
                _jitter(rng)
                await pong.wait()
                pong.clear()
        return n

    async def ponger(ping, pong):
        rng = random.Random(2)
        count = 0
        with osvrt.timeout(60):
            for _ in range(n):
                await ping.wait()
                ping.clear()
                count += 1
                _jitter(rng)
                pong.set()
        return count

    async def main():
        ping, pong = osvrt.Event(), osvrt.Event()
        p = osvrt.spawn(ponger, ping, pong, cpu=b)
        q = osvrt.spawn(pinger, ping, pong, cpu=a)
        return await q.join(), await p.join()

    assert rt.submit(main).result(timeout=90) == (n, n)


def test_cancelled_waiter_does_not_disturb_the_others(call):
    async def waiter(ev):
        await ev.wait()
        return "woken"

    async def main():
        ev = osvrt.Event()
        ts = [osvrt.spawn(waiter, ev) for _ in range(5)]
        await osvrt.sleep(0.02)
        ts[2].cancel()
        with pytest.raises(osvrt.Cancelled):
            await ts[2].join(timeout=5)
        ev.set()
        return [await t.join(timeout=5) for i, t in enumerate(ts) if i != 2]

    assert call(main) == ["woken"] * 4
