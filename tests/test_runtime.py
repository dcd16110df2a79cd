"""Runtime: construction and validation of cpus, life cycle, the doors in from
other OS threads (submit, run), and stats()."""
import concurrent.futures
import os
import threading
import time

import pytest

import osvrt

AVAILABLE = sorted(os.sched_getaffinity(0))
NOT_A_CPU = max(AVAILABLE) + 4096

STATS_KEYS = {"switches", "wakeups_local", "wakeups_remote", "kicks_sent",
              "kicks_skipped", "idle_time", "runq_len", "stalls"}


# ---- cpus ------------------------------------------------------------------

def test_cpus_none_is_every_available_cpu():
    assert osvrt.Runtime().cpus == tuple(AVAILABLE)
    assert osvrt.Runtime(cpus=None).cpus == tuple(AVAILABLE)


@pytest.mark.parametrize("n", range(1, len(AVAILABLE) + 1))
def test_cpus_int_is_the_first_n_available(n):
    assert osvrt.Runtime(n).cpus == tuple(AVAILABLE[:n])
    assert osvrt.Runtime(cpus=n).cpus == tuple(AVAILABLE[:n])


def test_cpus_iterable_is_exactly_those_ids():
    last = AVAILABLE[-1]
    assert osvrt.Runtime(cpus=[last]).cpus == (last,)
    assert osvrt.Runtime(cpus=(last,)).cpus == (last,)
    assert sorted(osvrt.Runtime(cpus=set(AVAILABLE)).cpus) == AVAILABLE
    assert sorted(osvrt.Runtime(cpus=(c for c in AVAILABLE)).cpus) == AVAILABLE
    assert osvrt.Runtime(cpus=list(AVAILABLE)).cpus == tuple(AVAILABLE)


def test_cpus_is_a_tuple_before_start(worker_threads):
    before = len(worker_threads())
    r = osvrt.Runtime(cpus=1)
    assert isinstance(r.cpus, tuple)
    assert r.cpus == (AVAILABLE[0],)
    assert len(worker_threads()) == before      # construction starts no worker


@pytest.mark.parametrize("bad, named", [
    (0, "0"),
    (-1, "-1"),
    (len(AVAILABLE) + 1, str(len(AVAILABLE) + 1)),
    (1.5, "1.5"),
    ("0", "'0'"),
    ([], "[]"),
    ([NOT_A_CPU], str(NOT_A_CPU)),
    ([AVAILABLE[0], NOT_A_CPU], str(NOT_A_CPU)),
    ([-1], "-1"),
    (["x"], "'x'"),
    (object, "object"),
])
def test_bad_cpus_raise_value_error_naming_the_value(bad, named):
    with pytest.raises(ValueError) as info:
        osvrt.Runtime(cpus=bad)
    assert named in str(info.value)


def test_cpus_naming_a_cpu_twice_is_rejected():
    with pytest.raises(ValueError) as info:
        osvrt.Runtime(cpus=[AVAILABLE[0], AVAILABLE[0]])
    assert str(AVAILABLE[0]) in str(info.value)


# ---- life cycle ------------------------------------------------------------

async def _where():
    t = osvrt.current()
    return t.cpu, t.pinned


async def _answer(x=41):
    await osvrt.sleep(0)
    return x + 1


def test_start_runs_one_worker_per_cpu_and_stop_ends_them(worker_threads):
    assert worker_threads() == []
    r = osvrt.Runtime(cpus=len(AVAILABLE[:2]))
    r.start()
    try:
        names = sorted(t.name for t in worker_threads())
        assert len(names) == len(r.cpus)
        assert r.submit(_answer).result(timeout=10) == 42
    finally:
        r.stop(timeout=5)
    assert worker_threads() == []


def test_context_manager_starts_and_stops(worker_threads):
    r = osvrt.Runtime(cpus=1)
    with r:
        assert len(worker_threads()) == 1
        assert r.run(_answer, 1) == 2
    assert worker_threads() == []


def test_stop_is_idempotent(worker_threads):
    r = osvrt.Runtime(cpus=1)
    r.start()
    r.stop()
    r.stop()
    r.stop(timeout=1)
    assert worker_threads() == []


@pytest.mark.parametrize("ncpus", sorted({1, min(2, len(AVAILABLE))}))
def test_stop_right_after_work_ends_every_worker_promptly(worker_threads, ncpus):
    # stop() that arrives while a worker is in its brief idle spin (it has just
    # finished work) must not be lost: every stop ends its workers promptly.
    for i in range(40):
        r = osvrt.Runtime(cpus=ncpus)
        r.start()
        assert r.run(_answer) == 42
        t0 = time.monotonic()
        r.stop()
        took = time.monotonic() - t0
        assert worker_threads() == [], f"stop #{i} left a worker running"
        assert took < 3.0, f"stop #{i} took {took:.1f} s"


def test_no_worker_survives_stop_with_busy_threads(worker_threads):
    r = osvrt.Runtime(cpus=min(2, len(AVAILABLE)))
    r.start()

    async def busy():
        while True:
            await osvrt.yield_now()

    async def sleepy():
        await osvrt.sleep(60)

    futs = []
    for c in r.cpus:
        futs += [r.submit(busy, cpu=c), r.submit(sleepy, cpu=c)]
    assert r.submit(_answer).result(timeout=10) == 42
    r.stop(timeout=5)
    assert worker_threads() == []
    for f in futs:
        assert f.cancelled()


def test_submit_after_stop_is_refused():
    r = osvrt.Runtime(cpus=1)
    r.start()
    r.stop()
    with pytest.raises(RuntimeError):
        r.submit(_answer)


def test_runtime_starts_only_once():
    r = osvrt.Runtime(cpus=1)
    r.start()
    try:
        with pytest.raises(RuntimeError):
            r.start()
    finally:
        r.stop(timeout=5)


# ---- submit / run ----------------------------------------------------------

def test_submit_future_carries_the_result(rt):
    fut = rt.submit(_answer, 9)
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.result(timeout=10) == 10


def test_submit_future_carries_the_exception(rt):
    class Boom(Exception):
        pass

    async def fails(msg):
        await osvrt.sleep(0.001)
        raise Boom(msg)

    fut = rt.submit(fails, "bad thing")
    with pytest.raises(Boom, match="bad thing"):
        fut.result(timeout=10)
    assert isinstance(fut.exception(), Boom)


def test_submit_name_names_the_thread(rt):
    async def my_name():
        return osvrt.current().name

    assert rt.submit(my_name, name="worker-bee").result(timeout=10) == "worker-bee"


def test_submit_from_many_os_threads_at_once(rt):
    n_threads, per_thread = 8, 250
    barrier = threading.Barrier(n_threads)
    results = [None] * n_threads
    errors = []

    async def square(x):
        osvrt.current()                   # really inside a green thread
        await osvrt.yield_now()
        return x * x

    def submitter(k):
        try:
            barrier.wait(timeout=10)
            futs = [rt.submit(square, k * per_thread + i) for i in range(per_thread)]
            results[k] = [f.result(timeout=30) for f in futs]
        except BaseException as e:        # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a submitter hung"
    assert errors == []
    for k in range(n_threads):
        assert results[k] == [(k * per_thread + i) ** 2 for i in range(per_thread)]


def test_submit_cpu_pins_the_thread(rt):
    for c in rt.cpus:
        assert rt.submit(_where, cpu=c).result(timeout=10) == (c, True)

    async def stays(c):
        for _ in range(50):
            await osvrt.sleep(0.0005)
            await osvrt.yield_now()
            assert osvrt.current().cpu == c
        return osvrt.current().cpu

    futs = {c: rt.submit(stays, c, cpu=c) for c in rt.cpus}
    for c, f in futs.items():
        assert f.result(timeout=20) == c


def test_submit_without_cpu_is_unpinned(rt):
    cpu, pinned = rt.submit(_where).result(timeout=10)
    assert cpu in rt.cpus
    assert pinned is False


def test_submit_to_a_cpu_not_in_the_runtime_is_a_value_error(rt):
    with pytest.raises(ValueError) as info:
        rt.submit(_answer, cpu=NOT_A_CPU)
    assert str(NOT_A_CPU) in str(info.value)
    assert rt.submit(_answer).result(timeout=10) == 42     # nothing left broken


def test_rt_run_returns_the_result_and_reraises(rt):
    assert rt.run(_answer, 99) == 100

    async def fails():
        raise KeyError("nope")

    with pytest.raises(KeyError, match="nope"):
        rt.run(fails)


def test_osvrt_run_returns_the_result_and_uses_cpus(worker_threads):
    last = AVAILABLE[-1]

    async def main(a, b):
        with osvrt.timeout(20):
            await osvrt.sleep(0.001)
            return a + b, osvrt.current().cpu

    assert osvrt.run(main, 2, 3, cpus=[last]) == (5, last)
    assert worker_threads() == []


def test_osvrt_run_reraises_and_shuts_down(worker_threads):
    async def main():
        await osvrt.sleep(0.001)
        raise ZeroDivisionError("main failed")

    with pytest.raises(ZeroDivisionError, match="main failed"):
        osvrt.run(main, cpus=1)
    assert worker_threads() == []


def test_osvrt_run_passes_runtime_options():
    async def main():
        return 1

    with pytest.raises(ValueError):
        osvrt.run(main, cpus=0)
    with pytest.raises(ValueError):
        osvrt.run(main, cpus=1, stall_threshold=-1)


# ---- stats -----------------------------------------------------------------

def test_stats_has_every_counter_for_every_cpu(rt):
    assert rt.submit(_answer).result(timeout=10) == 42
    s = rt.stats()
    assert len(s["cpus"]) == len(rt.cpus)
    for per_cpu in s["cpus"]:
        missing = STATS_KEYS - set(per_cpu)
        assert not missing, f"stats()['cpus'][i] lacks {missing}"
        for k in STATS_KEYS:
            assert isinstance(per_cpu[k], (int, float)) and per_cpu[k] >= 0, (k, per_cpu[k])


def test_stats_count_switches_and_local_wakeups(rt):
    c = rt.cpus[-1]
    i = rt.cpus.index(c)
    before = rt.stats()["cpus"][i]

    async def pair():
        ev = osvrt.Event()

        async def waiter():
            await ev.wait()

        w = osvrt.spawn(waiter, cpu=osvrt.current().cpu)   # same CPU: a local wake-up
        await osvrt.sleep(0.01)
        ev.set()
        await w.join()

    for _ in range(10):
        rt.submit(pair, cpu=c).result(timeout=10)
    after = rt.stats()["cpus"][i]
    assert after["switches"] - before["switches"] >= 20
    assert after["wakeups_local"] - before["wakeups_local"] >= 10


def test_stats_count_remote_wakeups(rt, two_cpus):
    a, b = rt.cpus[0], rt.cpus[1]

    async def main():
        ev = osvrt.Event()

        async def waiter():
            await ev.wait()

        w = osvrt.spawn(waiter, cpu=b)
        await osvrt.sleep(0.02)
        ev.set()                           # from CPU a to a thread on CPU b
        await w.join()

    before = rt.stats()["cpus"][1]["wakeups_remote"]
    for _ in range(5):
        rt.submit(main, cpu=a).result(timeout=10)
    assert rt.stats()["cpus"][1]["wakeups_remote"] - before >= 5


def test_stats_idle_time_counts_time_spent_sleeping(rt):
    async def naps():
        for _ in range(10):
            await osvrt.sleep(0.02)      # nothing else to run: the worker idles

    before = [c["idle_time"] for c in rt.stats()["cpus"]]
    futs = [rt.submit(naps, cpu=c) for c in rt.cpus]
    for f in futs:
        f.result(timeout=10)
    after = [c["idle_time"] for c in rt.stats()["cpus"]]
    for b, a in zip(before, after):
        assert a - b >= 0.1              # ~0.2 s of naps; idle_time is in seconds
        assert a - b < 60


def test_the_idle_hook_runs_only_when_it_has_work(monkeypatch):
    """A worker calls its Python _before_idle hook only with ended threads'
    records to free (flush_at_idle) or work to ask for (idle_pull): a Python
    call per idle was ~1,200 instructions of every asyncio loop park."""
    from osvrt import worker as worker_mod
    calls = []
    hook = worker_mod.Worker._before_idle

    def counting(self):
        calls.append(getattr(self, "flush_at_idle", None))   # None: no gate
        return hook(self)

    monkeypatch.setattr(worker_mod.Worker, "_before_idle", counting)
    with osvrt.Runtime(cpus=1, balance=False, stats_file=False) as rt:
        async def idles():
            for _ in range(5):
                await osvrt.sleep(0.001)         # each an idle of the worker

        rt.submit(idles).result(60)
        assert calls == []
        # Round trips from this (foreign) thread end threads whose records the
        # idle frees in batches: the hook runs once enough have gathered.
        for _ in range(40):
            rt.submit(idles).result(60)
        assert calls and all(calls)
        assert not rt._workers[0].flush_at_idle
