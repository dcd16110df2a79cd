"""Pinning: `await t.pin(cpu)` moves a thread (yourself, or another one that is
queued, sleeping, or parked) and keeps it there; t.cpu tells where it is;
pinned threads never migrate under the balancer; t.unpin() takes effect at once
and never moves the thread by itself; a bad cpu is a ValueError.

Where a thread runs is checked from inside it: the worker OS thread that runs
it (its name, its ident, its affinity) and osvrt.current().cpu."""
import os
import threading
import time

import pytest

import osvrt
from osvrt import kernel
from support import run, until

AVAILABLE = sorted(os.sched_getaffinity(0))
RESULT_TIMEOUT = 30
NOT_A_CPU = max(AVAILABLE) + 4096

pytestmark = pytest.mark.skipif(len(AVAILABLE) < 2, reason="needs at least 2 CPUs")


@pytest.fixture
def quiet_rt():
    """Two CPUs, no balancer: only pin() moves threads."""
    r = osvrt.Runtime(cpus=2, balance=False)
    r.start()
    yield r
    r.stop(timeout=5)


def where():
    """(worker cpu, current().cpu, OS thread name, OS thread ident, affinity)
    of the running green thread."""
    return (kernel.current_worker().cpu_id, osvrt.current().cpu,
            threading.current_thread().name, threading.get_ident(),
            frozenset(os.sched_getaffinity(0)))


def on_cpu(w, cpu):
    worker_cpu, cur_cpu, name, _, affinity = w
    return worker_cpu == cpu and cur_cpu == cpu and name == f"osvrt-cpu{cpu}" \
        and affinity == {cpu}


async def busy(stop, log=None):
    """A CPU-bound thread that yields; logs the worker CPU of every step."""
    while not stop[0]:
        sum(range(50))
        if log is not None:
            log.append(kernel.current_worker().cpu_id)
        await osvrt.yield_now()


# ---- pinning yourself ------------------------------------------------------------

@pytest.mark.parametrize("direction", ["0->1", "1->0"])
def test_pin_yourself_moves_you_and_keeps_you_there(mrt, cpus, direction):
    C0, C1 = cpus
    src, dst = (C0, C1) if direction == "0->1" else (C1, C0)

    async def main():
        me = osvrt.current()
        before = where()
        was_pinned = me.pinned
        await me.pin(dst)
        after = where()
        # Load dst with unpinned busy threads: the balancer would like to move
        # something off it, but never us.
        stop = [False]
        hogs = [osvrt.spawn(busy, stop) for _ in range(4)]
        seen = set()
        t_end = time.monotonic() + 0.2
        while time.monotonic() < t_end:
            w = where()
            seen.add((w[0], w[1], w[2], w[4]))
            await osvrt.yield_now()
        stop[0] = True
        for h in hogs:
            await h.join(timeout=5)
        return before, was_pinned, after, me.cpu, me.pinned, seen

    # Start unpinned on src: submit(cpu=...) pins, so spawn from a pinned starter.
    async def starter():
        return await osvrt.spawn(main).join(timeout=RESULT_TIMEOUT)

    before, was_pinned, after, cpu_after, pinned, seen = run(mrt, starter, cpu=src)
    assert on_cpu(before, src)
    assert was_pinned is False
    assert on_cpu(after, dst)
    assert after[3] != before[3]             # another OS thread runs us now
    assert cpu_after == dst
    assert pinned is True
    assert seen == {(dst, dst, f"osvrt-cpu{dst}", frozenset({dst}))}


def test_pin_yourself_to_where_you_are_is_a_no_op_that_pins(mrt, cpus):
    C0, C1 = cpus

    async def main():
        me = osvrt.current()
        before = where()
        await me.pin(before[0])
        return before, where(), me.pinned

    async def starter():
        return await osvrt.spawn(main).join(timeout=5)

    before, after, pinned = run(mrt, starter, cpu=C1)
    assert on_cpu(before, C1) and on_cpu(after, C1)
    assert after[3] == before[3]
    assert pinned is True


def test_pin_round_trip_many_times(mrt, cpus):
    C0, C1 = cpus

    async def main():
        me = osvrt.current()
        bad = []
        for i in range(200):
            dst = (C0, C1)[i % 2]
            await me.pin(dst)
            w = where()
            if not on_cpu(w, dst) or me.cpu != dst:
                bad.append((i, dst, w[:3]))
        return bad

    assert run(mrt, main, cpu=C0) == []


# ---- pinning another thread ---------------------------------------------------------

def test_pin_a_queued_thread_moves_it(quiet_rt):
    C0, C1 = quiet_rt.cpus

    async def main():
        stop = [False]
        log = []
        t = osvrt.spawn(busy, stop, log, cpu=None)        # unpinned, on C0 like us
        other = osvrt.spawn(busy, stop, None)              # keeps t queued at times
        await until(lambda: len(log) > 20, what="t running")
        before = (t.cpu, t.pinned, set(log))
        await t.pin(C1)
        mark = len(log)
        right_after = (t.cpu, t.pinned)
        await until(lambda: len(log) > mark + 50, what="t running after pin")
        stop[0] = True
        await t.join(timeout=5)
        await other.join(timeout=5)
        return before, right_after, set(log[mark:]), t.cpu

    before, right_after, after_pin, final = run(quiet_rt, main, cpu=C0)
    assert before == (C0, False, {C0})
    assert right_after == (C1, True)
    assert after_pin == {C1}
    assert final == C1


def test_pin_a_thread_running_on_the_other_cpu(quiet_rt):
    C0, C1 = quiet_rt.cpus

    async def main():
        stop = [False]
        log = []
        t = osvrt.spawn(busy, stop, log, cpu=C0)           # pinned on C0
        await until(lambda: len(log) > 20, what="t running")
        await t.pin(C1)                                     # we run on C1
        mark = len(log)
        right_after = t.cpu
        await until(lambda: len(log) > mark + 50, what="t running after pin")
        stop[0] = True
        await t.join(timeout=5)
        return right_after, set(log[mark:])

    assert run(quiet_rt, main, cpu=C1) == (C1, {C1})


def test_pin_a_sleeping_thread_moves_it(quiet_rt):
    C0, C1 = quiet_rt.cpus

    async def sleeper():
        before = where()
        await osvrt.sleep(0.1)
        return before, where()

    async def main():
        t = osvrt.spawn(sleeper)                           # on C0, unpinned
        await until(lambda: t.state == "waiting", what="sleeping")
        await t.pin(C1)
        right_after = (t.cpu, t.pinned, t.state)
        before, after = await t.join(timeout=5)
        return right_after, before, after

    right_after, before, after = run(quiet_rt, main, cpu=C0)
    assert right_after == (C1, True, "waiting")
    assert on_cpu(before, C0)
    assert on_cpu(after, C1)


def test_pin_a_thread_parked_on_an_event_moves_it(quiet_rt):
    C0, C1 = quiet_rt.cpus

    async def main():
        e = osvrt.Event()

        async def waiter():
            before = where()
            await e.wait()
            return before, where()

        t = osvrt.spawn(waiter)                             # on C0
        await until(lambda: t.state == "waiting", what="parked")
        await t.pin(C1)
        right_after = (t.cpu, t.pinned, t.state)
        await osvrt.sleep(0.01)
        still_parked = t.state
        e.set()                                             # set from C0
        before, after = await t.join(timeout=5)
        return right_after, still_parked, before, after

    right_after, still_parked, before, after = run(quiet_rt, main, cpu=C0)
    assert right_after == (C1, True, "waiting")
    assert still_parked == "waiting"                        # pin did not wake it
    assert on_cpu(before, C0)
    assert on_cpu(after, C1)


def test_pin_a_thread_parked_on_a_mutex_moves_it(quiet_rt):
    C0, C1 = quiet_rt.cpus

    async def main():
        m = osvrt.Mutex()
        await m.acquire()

        async def waiter():
            async with m:
                return where()

        t = osvrt.spawn(waiter, cpu=C1)
        await until(lambda: t.state == "waiting", what="parked")
        await t.pin(C0)
        right_after = t.cpu
        m.release()
        return right_after, await t.join(timeout=5)

    right_after, after = run(quiet_rt, main, cpu=C0)
    assert right_after == C0
    assert on_cpu(after, C0)


def test_pin_another_thread_back_and_forth(quiet_rt):
    C0, C1 = quiet_rt.cpus

    async def main():
        stop = [False]
        log = []
        t = osvrt.spawn(busy, stop, log, cpu=C0)
        bad = []
        for i in range(30):
            dst = (C1, C0)[i % 2]
            await t.pin(dst)
            if t.cpu != dst:
                bad.append(("cpu", i, t.cpu))
            mark = len(log)
            await until(lambda: len(log) > mark + 5, what="t ran")
            if set(log[mark:]) != {dst}:
                bad.append(("ran", i, set(log[mark:])))
        stop[0] = True
        await t.join(timeout=5)
        return bad

    assert run(quiet_rt, main, cpu=C0) == []


def test_pin_a_finished_thread_is_harmless(mrt, cpus):
    C0, C1 = cpus

    async def main():
        async def nothing():
            return 7

        t = osvrt.spawn(nothing)
        assert await t.join(timeout=5) == 7
        await t.pin(C1)
        return t.done()

    assert run(mrt, main, cpu=C0) is True


# ---- pinned threads and the balancer -----------------------------------------------------

def test_pinned_threads_never_migrate_under_the_balancer(mrt, cpus):
    """8 busy threads pinned to CPU 0, CPU 1 idle: for 0.3 s none of them moves
    (sampled from outside every ~2 ms, and logged by each thread).  Then
    unpin() lets the balancer spread them (unpin takes effect at once)."""
    C0, C1 = cpus
    stop = [False]
    logs = [[] for _ in range(8)]

    async def start():
        return [osvrt.spawn(busy, stop, logs[i], cpu=C0) for i in range(8)]

    moved_before = sum(c["migrations_out"] for c in mrt.stats()["cpus"])
    ts = run(mrt, start, cpu=C1)
    try:
        samples = set()
        t_end = time.monotonic() + 0.3
        while time.monotonic() < t_end:
            samples.update(t.cpu for t in ts)
            time.sleep(0.002)
        moved_during = sum(c["migrations_out"] for c in mrt.stats()["cpus"]) - moved_before
        assert samples == {C0}
        assert all(set(log) == {C0} for log in logs)
        assert all(len(log) > 0 for log in logs)
        assert moved_during == 0
        assert all(t.pinned for t in ts)

        for t in ts:
            t.unpin()
        assert not any(t.pinned for t in ts)
        deadline = time.monotonic() + 5
        while not any(t.cpu == C1 for t in ts):
            assert time.monotonic() < deadline, "unpinned threads never spread"
            time.sleep(0.002)
    finally:
        stop[0] = True

    async def join_all():
        for t in ts:
            await t.join(timeout=5)
    run(mrt, join_all, cpu=C1)


def test_unpin_takes_effect_at_once_and_never_moves_the_thread(quiet_rt):
    C0, C1 = quiet_rt.cpus

    async def main():
        stop = [False]
        log = []
        t = osvrt.spawn(busy, stop, log, cpu=C0)
        await until(lambda: len(log) > 10, what="t running")
        was = t.pinned
        t.unpin()                                          # called from C1
        now = (t.pinned, t.cpu)
        mark = len(log)
        await osvrt.sleep(0.1)
        later = t.cpu
        stop[0] = True
        await t.join(timeout=5)
        return was, now, later, set(log[mark:]), len(log) - mark

    was, now, later, after, steps = run(quiet_rt, main, cpu=C1)
    assert was is True
    assert now == (False, C0)
    assert later == C0
    assert after == {C0}
    assert steps > 0


def test_unpin_yourself_does_not_move_you(quiet_rt):
    C0, C1 = quiet_rt.cpus

    async def main():
        me = osvrt.current()
        before = where()
        me.unpin()
        after = where()
        await osvrt.yield_now()
        return me.pinned, before, after, where()

    pinned, before, after, later = run(quiet_rt, main, cpu=C1)
    assert pinned is False
    assert on_cpu(before, C1) and on_cpu(after, C1) and on_cpu(later, C1)


# ---- bad cpu ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [NOT_A_CPU, -1, None, "0", [0]])
def test_pin_to_a_bad_cpu_raises_value_error(mrt, cpus, bad):
    C0, C1 = cpus

    async def main():
        me = osvrt.current()
        stop = [False]
        other = osvrt.spawn(busy, stop)
        results = []
        for t in (me, other):
            before = (t.cpu, t.pinned)
            try:
                await t.pin(bad)
            except ValueError as e:
                results.append(("ValueError", repr(bad) in str(e), before == (t.cpu, t.pinned)))
            else:
                results.append(("no error",))
        stop[0] = True
        await other.join(timeout=5)
        return results

    async def starter():
        return await osvrt.spawn(main).join(timeout=5)     # unpinned

    assert run(mrt, starter, cpu=C0) == [("ValueError", True, True)] * 2


def test_spawn_and_submit_with_a_bad_cpu_raise_value_error(mrt):
    async def nothing():
        pass

    async def main():
        with pytest.raises(ValueError):
            osvrt.spawn(nothing, cpu=NOT_A_CPU)
        return True

    assert run(mrt, main)
    with pytest.raises(ValueError):
        mrt.submit(nothing, cpu=NOT_A_CPU)


@pytest.mark.parametrize("bad", [True, False, float(AVAILABLE[-1])])
def test_bool_or_float_cpu_ids_are_rejected_like_in_runtime_cpus(mrt, bad):
    """Runtime(cpus=...) rejects bools and non-int ids (ValueError); a cpu=
    argument elsewhere must not silently take True for CPU 1 or 1.0 for 1."""
    with pytest.raises(ValueError):
        osvrt.Runtime(cpus=[bad])

    async def nothing():
        pass

    async def main():
        errors = []
        try:
            await osvrt.current().pin(bad)
        except ValueError:
            errors.append("pin")
        try:
            osvrt.spawn(nothing, cpu=bad)
        except ValueError:
            errors.append("spawn")
        return errors

    async def starter():
        return await osvrt.spawn(main).join(timeout=5)

    errors = run(mrt, starter)
    try:
        mrt.submit(nothing, cpu=bad)
    except ValueError:
        errors.append("submit")
    assert errors == ["pin", "spawn", "submit"]
