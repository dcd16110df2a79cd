"""Property-based tests (hypothesis) of Mutex, Semaphore and Queue: random
programs of several green threads on both CPUs, with random cancels and
timeouts where the property allows them, checked against each primitive's
invariants.  One runtime for the whole module; every example is bounded in
time through submit(...).result(timeout=...); no shrinking and no example
database, so a run stays short and writes nothing into the repository."""
import collections
import os
import threading

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import osvrt
from support import run, until

AVAILABLE = sorted(os.sched_getaffinity(0))
EXAMPLE_TIMEOUT = 20

pytestmark = pytest.mark.skipif(len(AVAILABLE) < 2, reason="needs at least 2 CPUs")

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
    derandomize=False,
)


async def join_quietly(t, timeout=EXAMPLE_TIMEOUT):
    """'ok' (with its value), 'cancelled' or the exception, never hanging."""
    try:
        return ("ok", await t.join(timeout=timeout))
    except osvrt.Cancelled:
        return ("cancelled", None)


class Holders:
    """Counts concurrent holders (across OS threads) and remembers the max."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = 0
        self.max = 0

    def enter(self):
        with self.lock:
            self.now += 1
            self.max = max(self.max, self.now)

    def leave(self):
        with self.lock:
            self.now -= 1


cpu_index = st.sampled_from([0, 1])


# ---- Mutex -------------------------------------------------------------------------

@SETTINGS
@given(holder_cpu=cpu_index,
       waiters=st.lists(st.tuples(cpu_index, st.sampled_from(["plain", "plain", "cancel",
                                                              "timeout"])),
                        min_size=1, max_size=6))
def test_mutex_fifo_exclusion_and_cancels(mrt, holder_cpu, waiters):
    """Waiters queue in a known order on random CPUs; some are cancelled, some
    time out while the mutex is held.  When it is released: every plain waiter
    acquires, in queue order, one at a time; cancelled ones never do; the
    mutex ends free."""
    cpus = mrt.cpus

    async def main():
        m = osvrt.Mutex()
        holders = Holders()
        order = []

        async def waiter(i, fate):
            if fate == "timeout":
                try:
                    with osvrt.timeout(0.003):
                        await m.acquire()
                except TimeoutError:
                    return "timed out"
            else:
                await m.acquire()
            try:
                holders.enter()
                order.append(i)
                await osvrt.yield_now()
                holders.leave()
            finally:
                m.release()
            return "acquired"

        await m.acquire()
        ts = []
        for i, (ci, fate) in enumerate(waiters):
            t = osvrt.spawn(waiter, i, fate, cpu=cpus[ci])
            # parked in acquire (or already timed out: its 3 ms may be over)
            await until(lambda: t.state in ("waiting", "terminated"), what="queued")
            ts.append(t)
        for t, (_, fate) in zip(ts, waiters):
            if fate == "cancel":
                t.cancel()
        if any(f == "timeout" for _, f in waiters):
            await osvrt.sleep(0.015)
        m.release()
        outcomes = [await join_quietly(t) for t in ts]
        return order, outcomes, holders.max, m.locked()

    order, outcomes, max_holders, locked = run(mrt, main, cpu=mrt.cpus[holder_cpu])
    acquired = [i for i, (kind, value) in enumerate(outcomes) if value == "acquired"]
    assert order == acquired                       # FIFO among those that got it
    for i, (_, fate) in enumerate(waiters):
        if fate == "plain":
            assert outcomes[i] == ("ok", "acquired")
        elif fate == "cancel":
            assert outcomes[i] == ("cancelled", None)
        else:
            assert outcomes[i][0] == "ok"
    assert max_holders <= 1
    assert not locked


op = st.one_of(
    st.tuples(st.just("crit"), st.integers(0, 2)),      # hold it across n yields
    st.tuples(st.just("sleep"), st.sampled_from([0, 0.0005])),
)


@SETTINGS
@given(threads=st.lists(st.tuples(cpu_index, st.lists(op, min_size=1, max_size=12)),
                        min_size=2, max_size=5),
       victims=st.lists(st.integers(0, 4), max_size=2),
       cancel_after=st.sampled_from([0, 0.001, 0.003]))
def test_mutex_random_programs(mrt, threads, victims, cancel_after):
    """At most one owner at a time; every acquire of a thread that is not
    cancelled succeeds; no update inside the mutex is lost; free at the end."""
    cpus = mrt.cpus
    victims = {v for v in victims if v < len(threads)}

    async def main():
        m = osvrt.Mutex()
        holders = Holders()
        box = {"count": 0, "done": [0] * len(threads)}

        async def prog(i, ops):
            for kind, arg in ops:
                if kind == "crit":
                    async with m:
                        holders.enter()
                        try:
                            v = box["count"]
                            for _ in range(arg):
                                await osvrt.yield_now()
                            box["count"] = v + 1
                            box["done"][i] += 1
                        finally:
                            holders.leave()
                else:
                    await osvrt.sleep(arg)

        ts = [osvrt.spawn(prog, i, ops, cpu=cpus[ci]) for i, (ci, ops) in enumerate(threads)]
        if victims:
            await osvrt.sleep(cancel_after)
            for v in victims:
                ts[v].cancel()
        outcomes = [await join_quietly(t) for t in ts]
        return box, outcomes, holders.max, m.locked()

    box, outcomes, max_holders, locked = run(mrt, main)
    assert max_holders <= 1
    assert not locked
    assert box["count"] == sum(box["done"])
    for i, (_, ops) in enumerate(threads):
        n_crit = sum(1 for kind, _ in ops if kind == "crit")
        if i not in victims:
            assert outcomes[i][0] == "ok"
            assert box["done"][i] == n_crit
        else:
            assert box["done"][i] <= n_crit


# ---- Semaphore -------------------------------------------------------------------------

sem_op = st.one_of(
    st.tuples(st.just("hold"), st.integers(0, 2)),
    st.tuples(st.just("timed"), st.sampled_from([0.0005, 0.002])),
    st.tuples(st.just("sleep"), st.sampled_from([0, 0.0005])),
)


async def permits(s, limit=16):
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


@SETTINGS
@given(n=st.integers(1, 3),
       threads=st.lists(st.tuples(cpu_index, st.lists(sem_op, min_size=1, max_size=10)),
                        min_size=2, max_size=6),
       victims=st.lists(st.integers(0, 5), max_size=2),
       cancel_after=st.sampled_from([0, 0.001, 0.003]))
def test_semaphore_random_programs(mrt, n, threads, victims, cancel_after):
    """Holders never exceed n; threads not cancelled complete every acquire;
    the count is restored to n at the end."""
    cpus = mrt.cpus
    victims = {v for v in victims if v < len(threads)}

    async def main():
        s = osvrt.Semaphore(n)
        holders = Holders()

        async def hold(yields):
            holders.enter()
            try:
                for _ in range(yields):
                    await osvrt.yield_now()
            finally:
                holders.leave()

        async def prog(ops):
            held = 0
            for kind, arg in ops:
                if kind == "hold":
                    async with s:
                        await hold(arg)
                    held += 1
                elif kind == "timed":
                    try:
                        with osvrt.timeout(arg):
                            await s.acquire()
                    except TimeoutError:
                        continue
                    try:
                        await hold(1)
                    finally:
                        s.release()
                    held += 1
                else:
                    await osvrt.sleep(arg)
            return held

        ts = [osvrt.spawn(prog, ops, cpu=cpus[ci]) for ci, ops in threads]
        if victims:
            await osvrt.sleep(cancel_after)
            for v in victims:
                ts[v].cancel()
        outcomes = [await join_quietly(t) for t in ts]
        return outcomes, holders.max, holders.now, await permits(s)

    outcomes, max_holders, now, left = run(mrt, main)
    assert max_holders <= n
    assert now == 0
    assert left == n
    for i, (_, ops) in enumerate(threads):
        if i not in victims:
            n_hold = sum(1 for kind, _ in ops if kind == "hold")
            n_timed = sum(1 for kind, _ in ops if kind == "timed")
            assert outcomes[i][0] == "ok"
            assert n_hold <= outcomes[i][1] <= n_hold + n_timed


# ---- Queue -------------------------------------------------------------------------------

@SETTINGS
@given(maxsize=st.integers(0, 4),
       producers=st.lists(st.tuples(cpu_index, st.integers(0, 30),
                                    st.sampled_from(["block", "nowait"])),
                          min_size=1, max_size=3),
       consumers=st.lists(st.tuples(cpu_index, st.sampled_from(["block", "nowait"])),
                          min_size=1, max_size=3))
def test_queue_random_programs(mrt, maxsize, producers, consumers):
    """Items out == items in (as multisets), each consumer sees each producer's
    items in the order they were put, and qsize() never exceeds maxsize."""
    cpus = mrt.cpus
    STOP = object()

    async def main():
        q = osvrt.Queue(maxsize)
        over = []

        def check():
            if maxsize and q.qsize() > maxsize:
                over.append(q.qsize())

        async def producer(p, count, mode):
            for i in range(count):
                item = (p, i)
                if mode == "block":
                    await q.put(item)
                else:
                    while True:
                        try:
                            q.put_nowait(item)
                            break
                        except osvrt.QueueFull:
                            check()
                            await osvrt.sleep(0)
                check()
                if i % 4 == 3:
                    await osvrt.yield_now()

        async def consumer(mode):
            got = []
            while True:
                if mode == "block":
                    item = await q.get()
                else:
                    try:
                        item = q.get_nowait()
                    except osvrt.QueueEmpty:
                        check()
                        await osvrt.sleep(0)
                        continue
                check()
                if item is STOP:
                    return got
                got.append(item)

        cs = [osvrt.spawn(consumer, mode, cpu=cpus[ci]) for ci, mode in consumers]
        ps = [osvrt.spawn(producer, p, count, mode, cpu=cpus[ci])
              for p, (ci, count, mode) in enumerate(producers)]
        for t in ps:
            await t.join(timeout=EXAMPLE_TIMEOUT)
        for _ in cs:
            await q.put(STOP)
        views = [await c.join(timeout=EXAMPLE_TIMEOUT) for c in cs]
        return views, over, q.qsize()

    views, over, size = run(mrt, main)
    put_in = collections.Counter((p, i) for p, (_, count, _) in enumerate(producers)
                                 for i in range(count))
    got_out = collections.Counter(item for view in views for item in view)
    assert got_out == put_in
    for view in views:
        for p in range(len(producers)):
            seq = [i for q_, i in view if q_ == p]
            assert seq == sorted(seq), f"consumer saw producer {p} out of order: {seq}"
    assert over == []
    assert size == 0


@settings(SETTINGS, max_examples=40)
@given(maxsize=st.integers(1, 3),
       producers=st.lists(st.tuples(cpu_index, st.integers(1, 25),
                                    st.sampled_from([0.0005, 0.003, 1.0])),
                          min_size=1, max_size=3),
       consumers=st.lists(st.tuples(cpu_index, st.sampled_from([0.0005, 0.003, 1.0])),
                          min_size=1, max_size=3))
def test_queue_with_timeouts_loses_and_duplicates_nothing(mrt, maxsize, producers, consumers):
    """Producers and consumers use random timeouts on put and get.  Every item
    whose put() returned comes out exactly once; no item comes out twice; no
    item comes out that was never put; qsize() never exceeds maxsize."""
    cpus = mrt.cpus

    async def main():
        q = osvrt.Queue(maxsize)
        ok, failed, out, over = set(), set(), [], []
        stop = {"now": False}

        def check():
            if q.qsize() > maxsize:
                over.append(q.qsize())

        async def producer(p, count, patience):
            for i in range(count):
                try:
                    with osvrt.timeout(patience):
                        await q.put((p, i))
                except TimeoutError:
                    failed.add((p, i))
                else:
                    ok.add((p, i))
                check()

        async def consumer(patience):
            while not stop["now"]:
                try:
                    with osvrt.timeout(patience):
                        item = await q.get()
                except TimeoutError:
                    continue
                out.append(item)
                check()

        cs = [osvrt.spawn(consumer, patience, cpu=cpus[ci]) for ci, patience in consumers]
        ps = [osvrt.spawn(producer, p, count, patience, cpu=cpus[ci])
              for p, (ci, count, patience) in enumerate(producers)]
        for t in ps:
            await t.join(timeout=EXAMPLE_TIMEOUT)
        stop["now"] = True
        for c in cs:
            c.cancel()
            await join_quietly(c)
        while True:
            try:
                out.append(q.get_nowait())
            except osvrt.QueueEmpty:
                break
        return ok, failed, out, over

    ok, failed, out, over = run(mrt, main)
    counts = collections.Counter(out)
    assert all(n == 1 for n in counts.values()), \
        f"duplicated: {[k for k, n in counts.items() if n > 1]}"
    assert ok <= set(out), f"lost: {sorted(ok - set(out))}"
    assert set(out) <= ok | failed
    assert over == [], f"qsize exceeded maxsize={maxsize}: {over}"
