"""osvrt.Queue: bounds, FIFO across CPUs, the nowait forms and their
exceptions, blocking put/get, and cancel / timeout inside get and put (no
item lost or duplicated).  Bounded in time through submit(...).result(timeout=...)."""
import collections
import os
import random
import time

import pytest

import osvrt
from support import queued, run

AVAILABLE = sorted(os.sched_getaffinity(0))
RESULT_TIMEOUT = 30

pytestmark = pytest.mark.skipif(len(AVAILABLE) < 2, reason="needs at least 2 CPUs")


async def put(q, item):
    await q.put(item)


def drain(q):
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except osvrt.QueueEmpty:
            return out


# ---- construction, nowait forms ---------------------------------------------------

@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (1.5, TypeError), ("3", TypeError),
                                      (None, TypeError), (True, TypeError)])
def test_bad_maxsize_is_rejected(bad, exc):
    with pytest.raises(exc):
        osvrt.Queue(bad)


def test_queue_full_and_empty_are_exceptions():
    assert issubclass(osvrt.QueueFull, Exception)
    assert issubclass(osvrt.QueueEmpty, Exception)


def test_nowait_forms_bounds_and_qsize(mrt):
    async def main():
        q = osvrt.Queue(3)
        sizes = [q.qsize()]
        with pytest.raises(osvrt.QueueEmpty):
            q.get_nowait()
        for i in range(3):
            q.put_nowait(i)
            sizes.append(q.qsize())
        with pytest.raises(osvrt.QueueFull):
            q.put_nowait(99)
        sizes.append(q.qsize())                # the refused item did not go in
        out = [q.get_nowait() for _ in range(3)]
        with pytest.raises(osvrt.QueueEmpty):
            q.get_nowait()
        sizes.append(q.qsize())
        return sizes, out

    sizes, out = run(mrt, main)
    assert sizes == [0, 1, 2, 3, 3, 0]
    assert out == [0, 1, 2]


def test_unbounded_queue_never_full(mrt):
    async def main():
        q = osvrt.Queue()
        for i in range(5000):
            q.put_nowait(i)
        for i in range(5000, 5100):
            await q.put(i)
        return q.qsize(), drain(q)

    n, out = run(mrt, main)
    assert n == 5100
    assert out == list(range(5100))


def test_nowait_forms_work_from_a_foreign_os_thread(mrt):
    q = osvrt.Queue(2)
    q.put_nowait("a")
    q.put_nowait("b")
    with pytest.raises(osvrt.QueueFull):
        q.put_nowait("c")
    assert q.qsize() == 2
    assert q.get_nowait() == "a"
    assert q.get_nowait() == "b"
    with pytest.raises(osvrt.QueueEmpty):
        q.get_nowait()


# ---- blocking put / get ------------------------------------------------------------

def test_put_blocks_when_full_and_resumes_when_space(mrt, cpus):
    C0, C1 = cpus

    async def main():
        q = osvrt.Queue(1)
        await q.put("x")
        done = []

        async def putter():
            await q.put("y")
            done.append("y in")

        p = osvrt.spawn(putter, cpu=C1)
        await queued(p)
        blocked = (list(done), q.qsize())
        first = await q.get()
        await p.join(timeout=5)
        size_after = q.qsize()
        second = await q.get()
        return blocked, first, done, size_after, second, q.qsize()

    blocked, first, done, size_after, second, size = run(mrt, main, cpu=C0)
    assert blocked == ([], 1)
    assert first == "x"
    assert done == ["y in"]
    assert size_after == 1
    assert second == "y"
    assert size == 0


def test_get_blocks_when_empty_and_resumes_on_put(mrt, cpus):
    C0, C1 = cpus

    async def main():
        q = osvrt.Queue(2)

        async def getter():
            return await q.get()

        g = osvrt.spawn(getter, cpu=C1)
        await queued(g)
        q.put_nowait("item")
        return await g.join(timeout=5), q.qsize()

    assert run(mrt, main, cpu=C0) == ("item", 0)


def test_blocked_putters_are_admitted_in_fifo_order(mrt, cpus):
    C0, C1 = cpus

    async def main():
        q = osvrt.Queue(1)
        q.put_nowait("first")
        ps = []
        for i in range(6):
            p = osvrt.spawn(put, q, i, cpu=(C0, C1)[i % 2])
            await queued(p)
            ps.append(p)
        out = []
        for _ in range(7):
            out.append(await q.get())
            assert q.qsize() <= 1
        for p in ps:
            await p.join(timeout=5)
        return out

    assert run(mrt, main, cpu=C0) == ["first", 0, 1, 2, 3, 4, 5]


def test_blocked_getters_are_served_in_fifo_order(mrt, cpus):
    C0, C1 = cpus

    async def main():
        q = osvrt.Queue()
        got = []

        async def getter(i):
            got.append((i, await q.get()))

        gs = []
        for i in range(6):
            g = osvrt.spawn(getter, i, cpu=(C1, C0)[i % 2])
            await queued(g)
            gs.append(g)
        for k in range(6):
            q.put_nowait(f"item{k}")
        for g in gs:
            await g.join(timeout=5)
        return sorted(got)

    assert run(mrt, main, cpu=C0) == [(i, f"item{i}") for i in range(6)]


# ---- FIFO across CPUs -----------------------------------------------------------------

@pytest.mark.parametrize("maxsize", [1, 8, 0])
def test_fifo_order_across_cpus(mrt, cpus, maxsize):
    C0, C1 = cpus
    N = 3000

    async def main():
        q = osvrt.Queue(maxsize)
        over = []

        async def producer():
            for i in range(N):
                await q.put(i)
                if maxsize and q.qsize() > maxsize:
                    over.append(q.qsize())
                if i % 64 == 0:
                    await osvrt.yield_now()

        async def consumer():
            out = []
            for _ in range(N):
                out.append(await q.get())
                if maxsize and q.qsize() > maxsize:
                    over.append(q.qsize())
            return out

        p = osvrt.spawn(producer, cpu=C0)
        c = osvrt.spawn(consumer, cpu=C1)
        await p.join(timeout=RESULT_TIMEOUT)
        out = await c.join(timeout=RESULT_TIMEOUT)
        return out, over, q.qsize()

    out, over, size = run(mrt, main, cpu=C0)
    assert out == list(range(N))
    assert over == []
    assert size == 0


# ---- cancel / timeout -----------------------------------------------------------------------

def test_cancelled_get_loses_nothing(mrt, cpus):
    C0, C1 = cpus

    async def main():
        q = osvrt.Queue()

        async def getter():
            return await q.get()

        a = osvrt.spawn(getter, cpu=C1)
        await queued(a)
        b = osvrt.spawn(getter, cpu=C1)
        await queued(b)
        a.cancel()
        with pytest.raises(osvrt.Cancelled):
            await a.join(timeout=5)
        q.put_nowait("x")
        return await b.join(timeout=5), q.qsize()

    assert run(mrt, main, cpu=C0) == ("x", 0)


def test_get_cancelled_after_an_item_was_handed_to_it_completes(mrt, cpus):
    """put_nowait hands the item to getter a, which is cancelled before it
    runs: the get has happened, so a returns the item and Cancelled is raised
    at a's next await; getter b does not see the item (no reordering)."""
    C0, C1 = cpus

    async def main():
        q = osvrt.Queue()
        got = []

        async def getter():
            got.append(await q.get())
            await osvrt.sleep(0)               # the deferred cancel lands here
            got.append("not reached")

        a = osvrt.spawn(getter, cpu=C0)
        await queued(a)
        b = osvrt.spawn(getter, cpu=C1)
        await queued(b)
        q.put_nowait("x")                      # straight to a, which has not run
        a.cancel()
        with pytest.raises(osvrt.Cancelled):
            await a.join(timeout=5)
        q.put_nowait("z")
        b.cancel()
        with pytest.raises(osvrt.Cancelled):
            await b.join(timeout=5)
        return got, q.qsize()

    assert run(mrt, main, cpu=C0) == (["x", "z"], 0)


def test_get_cancelled_after_hand_off_keeps_order(mrt):
    """The item handed to a cancelled getter is that getter's; later items stay
    queued in order (nothing lost, nothing reordered)."""
    async def main():
        q = osvrt.Queue()
        got = []

        async def getter():
            got.append(await q.get())
            await osvrt.sleep(0)

        a = osvrt.spawn(getter)
        await queued(a)
        q.put_nowait("x")                      # handed to a
        q.put_nowait("y")
        a.cancel()
        with pytest.raises(osvrt.Cancelled):
            await a.join(timeout=5)
        return got, drain(q)

    assert run(mrt, main) == (["x"], ["y"])


def test_bound_holds_when_a_getter_is_cancelled_after_hand_off(mrt):
    """Queue(1): an item is handed to a waiting getter, the queue then fills up
    again, and the getter is cancelled before it runs.  The queue must never
    hold more than maxsize items, and no item may be lost."""
    async def main():
        q = osvrt.Queue(1)

        async def getter():
            return await q.get()

        a = osvrt.spawn(getter)
        await queued(a)
        q.put_nowait("x")                      # handed to a (not in the queue)
        q.put_nowait("y")                      # the queue is full: 1 item
        a.cancel()
        try:
            got = await a.join(timeout=5)
        except osvrt.Cancelled:
            got = None
        size = q.qsize()
        rest = drain(q)
        return got, size, rest

    got, size, rest = run(mrt, main)
    delivered = ([got] if got is not None else []) + rest
    assert sorted(delivered) == ["x", "y"]     # nothing lost or duplicated
    assert size <= 1, f"Queue(maxsize=1) holds {size} items: {rest!r}"


def test_cancelled_put_of_a_blocked_putter_does_not_put(mrt, cpus):
    C0, C1 = cpus

    async def main():
        q = osvrt.Queue(1)
        q.put_nowait("a")
        p = osvrt.spawn(put, q, "b", cpu=C1)
        await queued(p)
        p.cancel()
        with pytest.raises(osvrt.Cancelled):
            await p.join(timeout=5)
        return drain(q)

    assert run(mrt, main, cpu=C0) == ["a"]


def test_put_that_raises_did_not_put(mrt):
    """A put() whose item was admitted (by a get) just before it was cancelled:
    either put() returns normally, or it raises and the item is NOT in the
    queue.  Raising after the item went in would make a producer that retries
    a failed put duplicate the item."""
    async def main():
        q = osvrt.Queue(1)
        q.put_nowait("a")

        async def producer():
            try:
                await q.put("b")
            except osvrt.Cancelled:
                return "raised"
            return "returned"

        p = osvrt.spawn(producer)
        await queued(p)
        first = q.get_nowait()                 # admits "b", p has not run yet
        p.cancel()
        outcome = await p.join(timeout=5)
        return first, outcome, drain(q)

    first, outcome, rest = run(mrt, main)
    assert first == "a"
    if outcome == "raised":
        assert rest == [], "put() raised Cancelled but its item is in the queue"
    else:
        assert rest == ["b"]


def test_put_that_times_out_did_not_put(mrt):
    """Same as above with osvrt.timeout: the putter's timer fires after its item
    was admitted but before it ran."""
    async def main():
        q = osvrt.Queue(1)
        q.put_nowait("a")

        async def producer():
            try:
                # 250 ms: a loaded host must not expire it before the test sees it queued
                with osvrt.timeout(0.25):
                    await q.put("b")
            except TimeoutError:
                return "raised"
            return "returned"

        p = osvrt.spawn(producer)
        await queued(p)
        time.sleep(0.35)                       # hold the CPU past p's deadline
        first = q.get_nowait()                 # admits "b"; p's timer is due
        outcome = await p.join(timeout=5)
        return first, outcome, drain(q)

    first, outcome, rest = run(mrt, main)
    assert first == "a"
    if outcome == "raised":
        assert rest == [], "put() raised TimeoutError but its item is in the queue"
    else:
        assert rest == ["b"]


def test_timeouts_on_get_and_put(mrt):
    async def main():
        q = osvrt.Queue(1)
        with pytest.raises(TimeoutError):
            with osvrt.timeout(0.01):
                await q.get()
        q.put_nowait(1)
        with pytest.raises(TimeoutError):
            with osvrt.timeout(0.01):
                await q.put(2)
        return drain(q)

    assert run(mrt, main) == [1]


def test_stress_random_cancels_and_timeouts_lose_or_duplicate_nothing(mrt, cpus):
    """Producers and consumers on both CPUs, cancelled at random and using
    short timeouts.  Every item whose put() returned is consumed exactly once;
    an item whose put() raised is consumed at most once; nothing else appears."""
    C0, C1 = cpus
    rng = random.Random(7)
    PRODUCERS, CONSUMERS, PER = 4, 4, 300
    MAXSIZE = 3

    async def main():
        q = osvrt.Queue(MAXSIZE)
        ok_puts = set()
        failed_puts = set()
        consumed = []
        over = []
        stop = {"consumers": False}

        async def producer(p):
            for i in range(PER):
                item = (p, i)
                try:
                    with osvrt.timeout(rng.choice((0.0005, 0.003, 1.0))):
                        await q.put(item)
                except (TimeoutError, osvrt.Cancelled):
                    failed_puts.add(item)
                else:
                    ok_puts.add(item)
                if q.qsize() > MAXSIZE:
                    over.append(q.qsize())

        async def consumer():
            while not stop["consumers"]:
                try:
                    with osvrt.timeout(rng.choice((0.0005, 0.003, 0.02))):
                        item = await q.get()
                except (TimeoutError, osvrt.Cancelled):
                    continue
                consumed.append(item)
                if q.qsize() > MAXSIZE:
                    over.append(q.qsize())
                if len(consumed) % 5 == 0:
                    await osvrt.sleep(0.0003)

        ps = [osvrt.spawn(producer, p, cpu=(C0, C1)[p % 2]) for p in range(PRODUCERS)]
        cs = [osvrt.spawn(consumer, cpu=(C1, C0)[k % 2]) for k in range(CONSUMERS)]
        everyone = ps + cs
        while not all(p.done() for p in ps):
            await osvrt.sleep(0.002)
            rng.choice(everyone).cancel()
        for p in ps:
            await p.join(timeout=RESULT_TIMEOUT)
        stop["consumers"] = True
        for c in cs:
            c.cancel()
            try:
                await c.join(timeout=RESULT_TIMEOUT)
            except osvrt.Cancelled:
                pass
        leftover = drain(q)
        return ok_puts, failed_puts, consumed + leftover, over

    ok_puts, failed_puts, out, over = run(mrt, main, cpu=C0, timeout=60)
    counts = collections.Counter(out)
    dups = {item: n for item, n in counts.items() if n > 1}
    assert not dups, f"duplicated items: {dups}"
    assert ok_puts <= set(out), f"lost items: {sorted(ok_puts - set(out))[:10]}"
    assert set(out) <= ok_puts | failed_puts
    assert len(ok_puts) + len(failed_puts) == PRODUCERS * PER
    # the test did exercise successful puts (how many succeed depends on the
    # host's load: 0.5 ms timeouts; 263 of 1,200 once on a loaded CI run)
    assert len(ok_puts) > PER // 2
    assert over == []


def test_a_consumer_sees_items_in_put_order_when_another_getter_is_cancelled(mrt):
    """Getters a and b wait; 0 is handed to a, 1 to b; a is cancelled before it
    runs.  The hand-off to a stands (a's get returns 0; a ends before any other
    await, so the deferred cancel never lands), and b, a single consumer, sees
    its items in put order: 1, then 2 (nothing moved behind its back)."""
    async def main():
        q = osvrt.Queue()
        seen_by_b = []

        async def a_get():
            return await q.get()

        async def b_get():
            for _ in range(2):
                seen_by_b.append(await q.get())

        a = osvrt.spawn(a_get)
        await queued(a)
        b = osvrt.spawn(b_get)
        await queued(b)
        q.put_nowait(0)                        # handed to a
        q.put_nowait(1)                        # handed to b
        a.cancel()
        got_a = await a.join(timeout=5)
        q.put_nowait(2)
        await b.join(timeout=5)
        return got_a, seen_by_b, q.qsize()

    assert run(mrt, main) == (0, [1, 2], 0)
