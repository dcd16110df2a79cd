"""osvrt.Semaphore: the bound is never exceeded under contention across CPUs,
FIFO hand-off of permits, cancel / timeout inside acquire leave the count
right, bad counts are rejected.  Bounded in time through
submit(...).result(timeout=...)."""
import os
import threading
import time

import pytest

import osvrt
from support import queued, run, until

AVAILABLE = sorted(os.sched_getaffinity(0))
RESULT_TIMEOUT = 30

pytestmark = pytest.mark.skipif(len(AVAILABLE) < 2, reason="needs at least 2 CPUs")


async def permits(s, limit=16):
    """How many permits s has right now: acquire without waiting until one
    would block (a short osvrt.timeout), then give them all back."""
    n = 0
    while n < limit:
        try:
            with osvrt.timeout(0.01):
                await s.acquire()
        except TimeoutError:
            break
        n += 1
    for _ in range(n):
        s.release()
    return n


# ---- construction -------------------------------------------------------------

@pytest.mark.parametrize("bad, exc", [
    (-1, ValueError),
    (-100, ValueError),
    (1.5, TypeError),
    (2.0, TypeError),
    ("2", TypeError),
    (None, TypeError),
    (True, TypeError),
])
def test_bad_count_is_rejected(bad, exc):
    with pytest.raises(exc) as info:
        osvrt.Semaphore(bad)
    assert repr(bad) in str(info.value)


def test_zero_and_default_counts(mrt):
    async def main():
        return await permits(osvrt.Semaphore(0)), await permits(osvrt.Semaphore()), \
            await permits(osvrt.Semaphore(3))

    assert run(mrt, main) == (0, 1, 3)


def test_locked_means_no_permit(mrt):
    async def main():
        s = osvrt.Semaphore(1)
        states = [s.locked()]
        await s.acquire()
        states.append(s.locked())
        s.release()
        states.append(s.locked())
        return states

    assert run(mrt, main) == [False, True, False]


# ---- the bound ------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 3])
def test_bound_never_exceeded_under_contention_across_cpus(mrt, cpus, n):
    C0, C1 = cpus
    THREADS = 8
    ROUNDS = 150

    async def main():
        s = osvrt.Semaphore(n)
        guard = threading.Lock()
        box = {"holders": 0, "max": 0, "entries": 0}

        async def user(i):
            for r in range(ROUNDS):
                async with s:
                    with guard:
                        box["holders"] += 1
                        box["max"] = max(box["max"], box["holders"])
                        box["entries"] += 1
                    await osvrt.yield_now()
                    if r % 5 == 0:
                        await osvrt.sleep(0.0002)
                    with guard:
                        box["holders"] -= 1

        ts = [osvrt.spawn(user, i, cpu=(C0, C1)[i % 2]) for i in range(THREADS)]
        for t in ts:
            await t.join(timeout=RESULT_TIMEOUT)
        return box, await permits(s)

    box, left = run(mrt, main, cpu=C0)
    assert box["max"] == n               # reached, never exceeded
    assert box["entries"] == THREADS * ROUNDS
    assert box["holders"] == 0
    assert left == n                     # every permit came back


# ---- FIFO ---------------------------------------------------------------------------

def test_waiters_get_permits_in_fifo_order(mrt, cpus):
    C0, C1 = cpus

    async def main():
        s = osvrt.Semaphore(0)
        order = []

        async def waiter(i):
            await s.acquire()
            order.append(i)

        ts = []
        for i in range(8):
            t = osvrt.spawn(waiter, i, cpu=(C1, C0)[i % 2])
            await queued(t)
            ts.append(t)
        for k in range(8):
            s.release()
            await until(lambda: len(order) == k + 1, what=f"{k + 1} served")
        for t in ts:
            await t.join(timeout=5)
        return order, await permits(s)

    order, left = run(mrt, main, cpu=C0)
    assert order == list(range(8))
    assert left == 0


def test_no_barging_released_permit_goes_to_the_waiter(mrt, cpus):
    C0, C1 = cpus

    async def main():
        s = osvrt.Semaphore(1)
        order = []

        async def waiter():
            async with s:
                order.append("waiter")
                await osvrt.sleep(0.005)

        await s.acquire()
        w = osvrt.spawn(waiter, cpu=C1)
        await queued(w)
        s.release()                          # the permit goes straight to w
        no_permit_left = s.locked()
        await s.acquire()                    # queues behind w
        order.append("releaser")
        s.release()
        await w.join(timeout=5)
        return no_permit_left, order, await permits(s)

    assert run(mrt, main, cpu=C0) == (True, ["waiter", "releaser"], 1)


# ---- cancel / timeout inside acquire -----------------------------------------------------

@pytest.mark.parametrize("where", ["same_cpu", "other_cpu"])
def test_cancel_waiting_acquire_keeps_count_right(mrt, cpus, where):
    C0, C1 = cpus
    wcpu = C0 if where == "same_cpu" else C1

    async def main():
        s = osvrt.Semaphore(1)
        got = []

        async def taker(name):
            async with s:
                got.append(name)

        await s.acquire()
        a = osvrt.spawn(taker, "a", cpu=wcpu)
        await queued(a)
        b = osvrt.spawn(taker, "b", cpu=C1)
        await queued(b)
        a.cancel()
        with pytest.raises(osvrt.Cancelled):
            await a.join(timeout=5)
        s.release()
        await b.join(timeout=5)
        return got, await permits(s)

    assert run(mrt, main, cpu=C0) == (["b"], 1)


def test_timeout_in_waiting_acquire_keeps_count_right(mrt, cpus):
    C0, C1 = cpus

    async def main():
        s = osvrt.Semaphore(2)
        got = []

        async def impatient():
            try:
                with osvrt.timeout(0.02):
                    await s.acquire()
            except TimeoutError:
                got.append("timed out")
                return
            got.append("impatient")
            s.release()

        await s.acquire()
        await s.acquire()
        a = osvrt.spawn(impatient, cpu=C1)
        await a.join(timeout=5)
        s.release()
        s.release()
        return got, await permits(s)

    assert run(mrt, main, cpu=C0) == (["timed out"], 2)


def test_permit_handed_to_a_cancelled_waiter_is_passed_on(mrt, cpus):
    """Deterministic on one CPU: release() hands the permit to a, which is
    cancelled before it runs; a must pass it on to b."""
    C0, C1 = cpus

    async def main():
        s = osvrt.Semaphore(1)
        got = []

        async def taker(name):
            await s.acquire()
            got.append(name)
            s.release()

        await s.acquire()
        a = osvrt.spawn(taker, "a", cpu=C0)
        await queued(a)
        b = osvrt.spawn(taker, "b", cpu=C1)
        await queued(b)
        s.release()                          # a holds the permit now, but has not run
        a.cancel()
        with pytest.raises(osvrt.Cancelled):
            await a.join(timeout=5)
        await b.join(timeout=5)
        return got, await permits(s)

    assert run(mrt, main, cpu=C0) == (["b"], 1)


def test_permit_handed_to_a_timed_out_waiter_is_passed_on(mrt, cpus):
    C0, C1 = cpus

    async def main():
        s = osvrt.Semaphore(1)
        got = []

        async def impatient():
            try:
                # 250 ms: a loaded host must not expire it before the test sees it queued
                with osvrt.timeout(0.25):
                    await s.acquire()
                got.append("a")
                s.release()
            except TimeoutError:
                got.append("a timed out")

        async def patient():
            await s.acquire()
            got.append("b")
            s.release()

        await s.acquire()
        a = osvrt.spawn(impatient, cpu=C0)
        await queued(a)
        b = osvrt.spawn(patient, cpu=C1)
        await queued(b)
        time.sleep(0.35)                     # hold CPU 0 past a's deadline
        s.release()                          # hands to a, whose timer is due
        await a.join(timeout=5)
        await b.join(timeout=5)
        return got, await permits(s)

    assert run(mrt, main, cpu=C0) == (["a timed out", "b"], 1)


def test_random_cancels_and_timeouts_keep_the_count(mrt, cpus):
    """Many acquirers on both CPUs, some cancelled at random moments, some with
    short timeouts: the bound holds and every permit comes back."""
    import random
    C0, C1 = cpus
    rng = random.Random(99)
    N = 3

    async def main():
        s = osvrt.Semaphore(N)
        guard = threading.Lock()
        box = {"holders": 0, "max": 0}

        async def user(i, patience):
            for _ in range(40):
                try:
                    with osvrt.timeout(patience):
                        await s.acquire()
                except TimeoutError:
                    continue
                try:
                    with guard:
                        box["holders"] += 1
                        box["max"] = max(box["max"], box["holders"])
                    await osvrt.sleep(0.0005)
                finally:
                    with guard:
                        box["holders"] -= 1
                    s.release()

        ts = [osvrt.spawn(user, i, rng.choice((0.0005, 0.002, 0.05)), cpu=(C0, C1)[i % 2])
              for i in range(10)]
        for _ in range(15):
            await osvrt.sleep(0.003)
            rng.choice(ts).cancel()
        for t in ts:
            try:
                await t.join(timeout=RESULT_TIMEOUT)
            except osvrt.Cancelled:
                pass
        return box, await permits(s)

    box, left = run(mrt, main, cpu=C0)
    assert box["max"] <= N
    assert box["holders"] == 0
    assert left == N
