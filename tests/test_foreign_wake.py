"""The foreign-thread wake: Runtime.run / submit from OS threads that are not
workers.  The worker wakes a caller sleeping on a thread's done word only once
it has let the GIL go (worker.c, defer_done_wake), so a round trip costs the
caller one sleep, not three (the done word, then the GIL's condition and its
mutex); the deferred reference is dropped; the pick of a worker (place.c)
keeps its rule; and many foreign threads at once all get their answers.

Counted, never timed: voluntary context switches (getrusage(RUSAGE_THREAD))
and results."""
import gc
import os
import resource
import threading
import weakref

import pytest

import osvrt
from osvrt import _engine

AVAILABLE = sorted(os.sched_getaffinity(0))
JOIN_TIMEOUT = 120
WOKEN_WITHIN_S = 10       # a bound for hangs, not a timing: a wake takes microseconds


async def seven():
    return 7


async def me():
    return osvrt.current()


@pytest.fixture
def pinned_here():
    """Pin the test's OS thread to the first CPU (restored afterwards)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {AVAILABLE[0]})
    try:
        yield AVAILABLE[0]
    finally:
        os.sched_setaffinity(0, before)


def voluntary_switches():
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw


def test_run_sleeps_once_per_round_trip_on_a_shared_cpu(pinned_here):
    """Caller and worker on one CPU: the caller sleeps on the done word at
    once, and is woken only after the worker has let the GIL go, so it never
    sleeps again on the GIL.  Woken while the worker still held it (before
    the fix), it slept three times a round trip (perf sched: done word, GIL
    condition, GIL mutex); the bound of 1.5 leaves room for the odd GIL wait
    behind another Python thread of this process (pytest's, the stats
    publisher's)."""
    n = 600
    with osvrt.Runtime(cpus=[pinned_here]) as rt:
        for _ in range(50):
            assert rt.run(seven) == 7
        before = voluntary_switches()
        for _ in range(n):
            assert rt.run(seven) == 7
        per_round_trip = (voluntary_switches() - before) / n
    assert per_round_trip <= 1.5, f"{per_round_trip:.2f} sleeps per rt.run round trip"


def test_the_deferred_wake_lets_the_thread_go(pinned_here):
    """The worker holds an ended thread until it wakes its waiter; once the
    worker has idled, nothing keeps the thread alive."""
    with osvrt.Runtime(cpus=[pinned_here]) as rt:
        refs = [weakref.ref(rt.run(me)) for _ in range(100)]
        assert rt.run(seven) == 7          # the worker has idled since
        gc.collect()
        alive = sum(r() is not None for r in refs)
    assert alive == 0, f"{alive} of 100 ended threads still referenced"


@pytest.mark.parametrize("cpus", [1, 2])
def test_many_foreign_threads_run_and_submit_at_once(cpus):
    """8 OS threads each run 150 rt.run and 50 submit().result() round trips
    at once; every answer comes back, and none is lost or crossed."""
    if cpus > len(AVAILABLE):
        pytest.skip(f"needs {cpus} CPUs")
    per_thread = 150
    results, errors = {}, []

    def caller(k):
        async def echo(x):
            return x
        try:
            got = [rt.run(echo, (k, i)) for i in range(per_thread)]
            got += [rt.submit(echo, (k, -i)).result(timeout=JOIN_TIMEOUT) for i in range(1, 51)]
            results[k] = got
        except BaseException as e:        # reported below, with the thread's number
            errors.append((k, e))

    with osvrt.Runtime(cpus=cpus) as rt:
        threads = [threading.Thread(target=caller, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(JOIN_TIMEOUT)
        stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"foreign callers still waiting: {stuck}"
    assert not errors, errors
    for k in range(8):
        assert results[k] == ([(k, i) for i in range(per_thread)]
                              + [(k, -i) for i in range(1, 51)])


def test_foreign_waiters_that_sleep_at_once_all_wake_at_the_end():
    """Several OS threads wait on one green thread's end with no spin, so
    each marks the done word SLEEPER and sleeps in futex_wait at once; the
    end must wake them all (it owes a wake only when it reads SLEEPER), and
    each then sees the outcome.  A waiter whose timeout passes first leaves
    the word SLEEPER: the end still finishes and wakes nobody harmfully.
    Raising and returning threads alternate (one outcome field, `failed`)."""
    from osvrt import thread as thread_mod
    rounds, waiters = 40, 4

    async def body(i):
        await osvrt.sleep(0.002)
        if i % 2:
            raise LookupError(i)
        return i

    async def start(i):
        return osvrt.spawn(body, i)

    with osvrt.Runtime(cpus=1) as rt:
        for i in range(rounds):
            t = rt.run(start, i)
            woke, errors = [], []

            def wait(timeout):
                try:
                    woke.append(thread_mod.wait_done(t, timeout, False, False))
                except BaseException as e:
                    errors.append(e)
            ts = [threading.Thread(target=wait, args=(JOIN_TIMEOUT,)) for _ in range(waiters)]
            ts.append(threading.Thread(target=wait, args=(0.0005,)))   # gives up first
            for x in ts:
                x.start()
            # The waiters' own timeout is long (a lost wake would end only by
            # it): the end must wake them well before.
            for x in ts:
                x.join(WOKEN_WITHIN_S)
            assert not [x for x in ts if x.is_alive()], f"round {i}: a waiter still sleeps"
            assert not errors, errors
            assert woke.count(True) >= waiters, (i, woke)
            assert t.done()
            if i % 2:
                assert isinstance(thread_mod.exception(t), LookupError)
                assert thread_mod.result(t) is None
                with pytest.raises(LookupError):
                    thread_mod.outcome(t)
            else:
                assert thread_mod.exception(t) is None
                assert thread_mod.result(t) == thread_mod.outcome(t) == i


def test_run_with_a_timeout_still_ends_and_lets_go(pinned_here):
    """A run that times out (its thread sleeps on) and later ones: the
    deferred wake does not confuse a waiter that gave up."""
    async def slow():
        await osvrt.sleep(0.5)
        return 1

    with osvrt.Runtime(cpus=[pinned_here]) as rt:
        with pytest.raises(TimeoutError):
            rt.run(slow, timeout=0.01)
        assert [rt.run(seven) for _ in range(20)] == [7] * 20


class CountingRuntime(osvrt.Runtime):
    """Counts the calls of the engine's "last live thread ended" hook."""
    ended_calls = 0

    def _thread_ended(self, t):
        self.ended_calls += 1
        super()._thread_ended(t)


def test_the_empty_live_set_is_reported_only_while_stopping(pinned_here):
    """Every rt.run round trip empties the live set; the hook that tells
    stop() about it costs a Python call, so it runs only once stop() watches
    (LiveSet.watch_empty), and then it does run: stop() ends with no thread
    left behind."""
    rt = CountingRuntime(cpus=[pinned_here]).start()
    try:
        for _ in range(100):
            assert rt.run(seven) == 7
        assert rt.ended_calls == 0

        async def sleeper():
            await osvrt.sleep(30)

        fut = rt.submit(sleeper)
        for _ in range(10_000):
            if rt.live_threads():
                break
            os.sched_yield()
    finally:
        rt.stop(timeout=JOIN_TIMEOUT)
    assert fut.cancelled()
    assert rt.ended_calls >= 1
    assert not rt.live_threads()


# ---- the pick of a worker (place.c) ------------------------------------------

def test_least_loaded_prefers_this_cpu_on_a_tie_and_the_lighter_otherwise():
    if len(AVAILABLE) < 2:
        pytest.skip("needs 2 CPUs")
    # balance=False: no balancer threads, whose ticks would make a worker
    # busy for a moment (load 1) while we look.
    with osvrt.Runtime(cpus=2, balance=False) as rt:
        ws, ids = tuple(rt.workers), tuple(w.cpu_id for w in rt.workers)
        before = os.sched_getaffinity(0)
        try:
            for w in ws:
                os.sched_setaffinity(0, {w.cpu_id})
                assert _engine.current_cpu() == w.cpu_id
                assert [_engine.worker_load(o) for o in ws] == [0, 0]
                assert _engine.least_loaded(ws, ids) is w      # both idle: here wins
        finally:
            os.sched_setaffinity(0, before)
        stop = [False]

        async def busy():
            while not stop[0]:
                await osvrt.yield_now()

        t = [rt.submit(busy, cpu=ws[0].cpu_id) for _ in range(3)]
        try:
            for _ in range(10_000):
                if _engine.worker_load(ws[0]) >= 2:
                    break
                os.sched_yield()
            assert _engine.worker_load(ws[0]) >= 2
            assert _engine.least_loaded(ws, ids) is ws[1]
        finally:
            stop[0] = True
            for f in t:
                f.result(timeout=JOIN_TIMEOUT)
        assert ws[0].load() == _engine.worker_load(ws[0])


def test_least_loaded_rejects_bad_input_by_name():
    with osvrt.Runtime(cpus=1) as rt:
        w = rt.workers[0]
        with pytest.raises(TypeError, match="not a Worker: 3"):
            _engine.least_loaded((3,), (0,))
        with pytest.raises(ValueError, match="1 workers and 2 CPU ids"):
            _engine.least_loaded((w,), (0, 1))
        with pytest.raises(ValueError, match="0 workers"):
            _engine.least_loaded((), ())
        with pytest.raises(TypeError, match="not a Worker: 'x'"):
            _engine.worker_load("x")
        assert _engine.least_loaded((w,), (w.cpu_id,)) is w
