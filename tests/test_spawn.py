"""osvrt.spawn: validation, where a new thread starts, the Thread's attributes,
contextvars, and many threads."""
import contextvars

import pytest

import osvrt


async def _noop():
    return None


# ---- validation ------------------------------------------------------------

def test_spawn_outside_a_runtime_is_a_runtime_error_pointing_to_osvrt_run():
    with pytest.raises(RuntimeError) as info:
        osvrt.spawn(_noop)
    assert "osvrt.run" in str(info.value)


def test_spawn_from_a_foreign_os_thread_is_a_runtime_error(rt):
    # A runtime is running, but this (pytest's) OS thread is not one of its workers.
    with pytest.raises(RuntimeError) as info:
        osvrt.spawn(_noop)
    assert "osvrt.run" in str(info.value)


def _plain(x=1):
    return x


async def _agen():
    yield 1


@pytest.mark.parametrize("fn", [_plain, print, (lambda: None), _agen, 42, None],
                         ids=["def", "builtin", "lambda", "async-generator", "int", "None"])
def test_spawn_of_something_not_async_is_a_type_error(call, fn):
    async def main():
        with pytest.raises(TypeError):
            osvrt.spawn(fn)
        # nothing left broken: a proper spawn still works
        return await osvrt.spawn(_noop).join()

    assert call(main) is None


def test_spawn_of_a_coroutine_object_instead_of_a_function_is_a_type_error(call):
    async def main():
        coro = _noop()
        try:
            with pytest.raises(TypeError):
                osvrt.spawn(coro)
        finally:
            coro.close()
        return True

    assert call(main) is True


def test_spawn_of_a_function_returning_a_coroutine_is_accepted(call):
    async def target(x):
        return x * 2

    def factory(x):
        return target(x)

    async def main():
        return await osvrt.spawn(factory, 21).join()

    assert call(main) == 42


def test_spawn_passes_args(call):
    async def add(a, b, c):
        return a + b + c

    async def main():
        return await osvrt.spawn(add, 1, 2, 3).join()

    assert call(main) == 6


@pytest.mark.parametrize("bad", [-1, 4096 + 7, "0", 1.5, "x", (0,)])
def test_spawn_on_a_cpu_not_in_the_runtime_is_a_value_error(call, bad):
    async def main():
        with pytest.raises(ValueError) as info:
            osvrt.spawn(_noop, cpu=bad)
        assert repr(bad) in str(info.value) or str(bad) in str(info.value)
        return "ok"

    assert call(main) == "ok"


@pytest.mark.parametrize("bad", [0, 0.0, -1, -0.5, float("nan")])
def test_spawn_priority_must_be_positive(call, bad):
    async def main():
        with pytest.raises(ValueError):
            osvrt.spawn(_noop, priority=bad)
        return "ok"

    assert call(main) == "ok"


@pytest.mark.parametrize("good", [1e-5, 0.5, 2, 86.0])
def test_spawn_accepts_positive_priorities(call, good):
    async def main():
        t = osvrt.spawn(_noop, priority=good)
        await t.join()
        return t.priority

    assert call(main) == good


# ---- where a new thread starts ----------------------------------------------

def test_unpinned_spawn_starts_on_the_spawners_cpu(rt):
    async def parent():
        me = osvrt.current()
        t = osvrt.spawn(_noop)
        at_spawn = (t.cpu, t.pinned)
        await t.join()
        return me.cpu, at_spawn

    for c in rt.cpus:
        mine, (child_cpu, child_pinned) = rt.submit(parent, cpu=c).result(timeout=10)
        assert mine == c
        assert child_cpu == c
        assert child_pinned is False


def test_unpinned_spawn_runs_on_the_spawners_cpu_without_balancing(make_rt):
    rt = make_rt(balance=False)

    async def child():
        return osvrt.current().cpu

    async def parent():
        return await osvrt.spawn(child).join()

    for c in rt.cpus:
        assert rt.submit(parent, cpu=c).result(timeout=10) == c


def test_spawn_with_cpu_pins_the_thread_there(rt):
    async def child():
        await osvrt.sleep(0.001)
        me = osvrt.current()
        return me.cpu, me.pinned

    async def parent(target):
        t = osvrt.spawn(child, cpu=target)
        assert t.cpu == target and t.pinned is True
        return await t.join()

    for here in rt.cpus:
        for there in rt.cpus:
            assert rt.submit(parent, there, cpu=here).result(timeout=10) == (there, True)


# ---- Thread attributes -------------------------------------------------------

def test_thread_attributes(make_rt):
    # balance=False: the unpinned child stays on our CPU, so it has certainly
    # parked by the time we run again (cooperative scheduling on one CPU).
    rt = make_rt(balance=False)

    async def child(started, go):
        started.set()
        await go.wait()
        return osvrt.current()

    async def main():
        started, go = osvrt.Event(), osvrt.Event()
        here = osvrt.current().cpu
        t = osvrt.spawn(child, started, go, name="attr-child", priority=2.0)
        assert isinstance(t, osvrt.Thread)
        assert t.name == "attr-child"
        assert isinstance(t.id, int)
        assert t.cpu == here
        assert t.pinned is False
        assert t.priority == 2.0
        assert t.done() is False
        await started.wait()
        assert t.state == "waiting"
        assert t.done() is False
        go.set()
        inner = await t.join()
        assert inner is t                  # current() inside is the spawned Thread
        assert t.done() is True
        assert t.state == "terminated"
        return True

    assert rt.submit(main).result(timeout=15) is True


def test_running_thread_sees_itself_running(call):
    async def main():
        me = osvrt.current()
        return me.state, me.done(), me.priority, me.pinned

    assert call(main) == ("running", False, 1.0, False)


def test_thread_ids_are_unique_and_default_names_are_strings(call):
    async def main():
        ts = [osvrt.spawn(_noop) for _ in range(200)]
        for t in ts:
            await t.join()
        return [t.id for t in ts], [t.name for t in ts]

    ids, names = call(main)
    assert len(set(ids)) == len(ids)
    assert all(isinstance(n, str) and n for n in names)


# ---- contextvars -------------------------------------------------------------

VAR = contextvars.ContextVar("osvrt_test_var", default="unset")


def test_child_sees_values_set_by_the_parent_before_spawn(call):
    async def child():
        return VAR.get()

    async def main():
        VAR.set("from-parent")
        return await osvrt.spawn(child).join()

    assert call(main) == "from-parent"


def test_child_runs_in_a_copy_taken_at_spawn(call):
    async def child(go):
        await go.wait()
        seen = VAR.get()
        VAR.set("from-child")
        return seen, VAR.get()

    async def main():
        VAR.set("before-spawn")
        go = osvrt.Event()
        t = osvrt.spawn(child, go)
        VAR.set("after-spawn")             # not seen by the child: it has a copy
        go.set()
        child_saw = await t.join()
        return child_saw, VAR.get()        # the child's change is not seen here

    (seen, child_after), parent_after = call(main)
    assert seen == "before-spawn"
    assert child_after == "from-child"
    assert parent_after == "after-spawn"


def test_siblings_do_not_share_context(call):
    async def child(value, barrier_in, barrier_out):
        VAR.set(value)
        barrier_in.set()
        await barrier_out.wait()
        return VAR.get()

    async def main():
        VAR.set("parent")
        a_in, b_in, out = osvrt.Event(), osvrt.Event(), osvrt.Event()
        a = osvrt.spawn(child, "a", a_in, out, cpu=osvrt.current().cpu)
        b = osvrt.spawn(child, "b", b_in, out)
        await a_in.wait()
        await b_in.wait()
        out.set()
        return await a.join(), await b.join(), VAR.get()

    assert call(main) == ("a", "b", "parent")


def test_context_is_copied_for_pinned_spawns_on_other_cpus(rt):
    async def child():
        return VAR.get()

    async def main():
        VAR.set("cross-cpu")
        return [await osvrt.spawn(child, cpu=c).join() for c in rt.cpus]

    assert rt.submit(main).result(timeout=10) == ["cross-cpu"] * len(rt.cpus)


# ---- many threads --------------------------------------------------------------

def test_100k_green_threads_spawned_and_joined(call):
    n = 100_000

    async def child(i):
        return i

    async def main():
        ts = [osvrt.spawn(child, i) for i in range(n)]
        total = 0
        for t in ts:
            total += await t.join()
        return total, len({t.id for t in ts}), sum(t.done() for t in ts)

    total, distinct, done = call(main, timeout=60)
    assert total == n * (n - 1) // 2
    assert distinct == n
    assert done == n
