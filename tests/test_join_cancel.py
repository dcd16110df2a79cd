"""Thread.join and Thread.cancel, cancellation of submit() Futures, and what
Runtime.stop(timeout) does to threads that are still alive."""
import concurrent.futures
import gc
import logging
import threading
import time

import pytest

import osvrt

from support import queued


async def _value(x):
    await osvrt.sleep(0.001)
    return x


async def _sleep_forever():
    await osvrt.sleep(3600)


# ---- join ------------------------------------------------------------------

def test_join_returns_the_value(call):
    async def main():
        t = osvrt.spawn(_value, "v")
        return await t.join()

    assert call(main) == "v"


def test_join_of_a_finished_thread_returns_at_once(call):
    async def main():
        t = osvrt.spawn(_value, 7)
        while not t.done():
            await osvrt.sleep(0.001)
        return await t.join(), await t.join(timeout=0)

    assert call(main) == (7, 7)


def test_join_reraises_the_threads_exception(call):
    class Boom(Exception):
        pass

    async def fails():
        await osvrt.sleep(0.001)
        raise Boom("from child")

    async def main():
        t = osvrt.spawn(fails)
        with pytest.raises(Boom, match="from child"):
            await t.join()
        with pytest.raises(Boom):          # again: the outcome is kept
            await t.join()
        return True

    assert call(main) is True


def test_join_with_timeout_raises_timeout_error(call):
    async def main():
        t = osvrt.spawn(_sleep_forever)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await t.join(timeout=0.05)
        waited = time.monotonic() - t0
        assert not t.done()                # a timed-out join leaves the thread alone
        t.cancel()
        with pytest.raises(osvrt.Cancelled):
            await t.join(timeout=10)
        return waited

    waited = call(main)
    assert 0.045 <= waited < 5


def test_join_with_timeout_returns_if_in_time(call):
    async def main():
        t = osvrt.spawn(_value, 3)
        return await t.join(timeout=10)

    assert call(main) == 3


def test_many_joiners_on_several_cpus_all_get_the_value(rt):
    async def slow():
        await osvrt.sleep(0.05)
        return "shared"

    async def joiner(t):
        return await t.join(timeout=10)

    async def main():
        t = osvrt.spawn(slow)
        js = [osvrt.spawn(joiner, t, cpu=rt.cpus[i % len(rt.cpus)]) for i in range(20)]
        return [await j.join() for j in js]

    assert rt.submit(main).result(timeout=20) == ["shared"] * 20


def test_joining_yourself_is_a_runtime_error(call):
    async def main():
        with pytest.raises(RuntimeError):
            await osvrt.current().join()
        with pytest.raises(RuntimeError):
            await osvrt.current().join(timeout=1)
        return True

    assert call(main) is True


# ---- cancel ----------------------------------------------------------------

def test_cancelled_is_a_base_exception():
    assert issubclass(osvrt.Cancelled, BaseException)
    assert not issubclass(osvrt.Cancelled, Exception)


def test_cancel_raises_cancelled_at_the_next_await_and_runs_finally(call):
    seen = {}

    async def loop(started):
        started.set()
        n = 0
        try:
            while True:
                n += 1
                await osvrt.yield_now()
        except BaseException as e:
            seen["exc"] = type(e)
            raise
        finally:
            seen["finally"] = n

    async def main():
        started = osvrt.Event()
        t = osvrt.spawn(loop, started)
        await started.wait()
        await osvrt.sleep(0.01)
        assert t.cancel() is True
        with pytest.raises(osvrt.Cancelled):
            await t.join(timeout=10)
        return t.done()

    assert call(main) is True
    assert seen["exc"] is osvrt.Cancelled
    assert seen["finally"] >= 1


def test_except_exception_does_not_swallow_cancel(call):
    swallowed = []

    async def child():
        while True:
            try:
                await osvrt.sleep(3600)
            except Exception:              # must not catch Cancelled
                swallowed.append(True)

    async def main():
        t = osvrt.spawn(child)
        await osvrt.sleep(0.01)
        t.cancel()
        with pytest.raises(osvrt.Cancelled):
            await t.join(timeout=10)
        return True

    assert call(main) is True
    assert swallowed == []


@pytest.mark.parametrize("where", ["same-cpu", "other-cpu"])
def test_cancel_wakes_a_sleeping_thread_at_once(rt, where):
    cleaned = []

    async def sleeper():
        try:
            await osvrt.sleep(3600)
        finally:
            cleaned.append(True)

    async def main():
        here = osvrt.current().cpu
        there = here if where == "same-cpu" else [c for c in rt.cpus if c != here][0]
        t = osvrt.spawn(sleeper, cpu=there)
        await osvrt.sleep(0.02)
        assert t.state == "waiting"
        t0 = time.monotonic()
        t.cancel()
        with pytest.raises(osvrt.Cancelled):
            await t.join(timeout=10)
        return time.monotonic() - t0

    if where == "other-cpu" and len(rt.cpus) < 2:
        pytest.skip("needs 2 CPUs")
    took = rt.submit(main, cpu=rt.cpus[0]).result(timeout=20)
    assert took < 5
    assert cleaned == [True]


@pytest.mark.parametrize("where", ["same-cpu", "other-cpu"])
def test_cancel_wakes_a_thread_parked_on_an_event(rt, where):
    cleaned = []

    async def waiter(ev):
        try:
            await ev.wait()
        finally:
            cleaned.append(True)

    async def main():
        here = osvrt.current().cpu
        there = here if where == "same-cpu" else [c for c in rt.cpus if c != here][0]
        ev = osvrt.Event()
        t = osvrt.spawn(waiter, ev, cpu=there)
        await queued(t)                    # parked on ev (a fixed sleep lost that race on a loaded host)
        t.cancel()
        with pytest.raises(osvrt.Cancelled):
            await t.join(timeout=10)
        ev.set()                           # a set after the cancel wakes nobody stale
        await osvrt.sleep(0.01)
        return ev.is_set()

    if where == "other-cpu" and len(rt.cpus) < 2:
        pytest.skip("needs 2 CPUs")
    assert rt.submit(main, cpu=rt.cpus[0]).result(timeout=20) is True
    assert cleaned == [True]


def test_cancel_while_the_thread_runs_is_raised_at_its_next_park(rt, two_cpus):
    # The cancel arrives while the target computes (no await); its next await
    # parks it (Event.wait).  Cancelled must be raised there, at once: the
    # cancel must not be lost because the target was not parked when it came.
    async def busy_then_wait(ev, started):
        started.set()
        end = time.monotonic() + 0.1
        while time.monotonic() < end:      # running, not parked, when cancelled
            pass
        await ev.wait()

    async def main():
        ev, started = osvrt.Event(), osvrt.Event()
        t = osvrt.spawn(busy_then_wait, ev, started, cpu=rt.cpus[1])
        await started.wait()
        t.cancel()
        try:
            await t.join(timeout=5)
        except osvrt.Cancelled:
            return "cancelled"
        except TimeoutError:
            return "cancel lost: still parked"
        finally:
            ev.set()

    assert rt.submit(main, cpu=rt.cpus[0]).result(timeout=15) == "cancelled"


def test_a_thread_that_cancels_itself_is_cancelled_at_its_next_park(call):
    async def main():
        osvrt.current().cancel()
        t0 = time.monotonic()
        try:
            with osvrt.timeout(5):
                await osvrt.sleep(3600)
        except osvrt.Cancelled:
            return time.monotonic() - t0
        except TimeoutError:
            return "cancel lost: slept until the timeout"

    took = call(main)
    assert isinstance(took, float) and took < 1, took


def test_cancel_from_a_foreign_os_thread(rt):
    box = concurrent.futures.Future()

    async def sleeper():
        box.set_result(osvrt.current())
        await osvrt.sleep(3600)

    fut = rt.submit(sleeper)
    t = box.result(timeout=10)
    time.sleep(0.02)
    assert t.cancel() is True
    with pytest.raises(concurrent.futures.CancelledError):
        fut.result(timeout=10)


def test_cancel_of_a_finished_thread_returns_false(call):
    async def main():
        t = osvrt.spawn(_value, 1)
        assert await t.join() == 1
        return t.cancel(), await t.join()

    assert call(main) == (False, 1)


def test_join_of_a_cancelled_thread_reraises_cancelled(call):
    async def main():
        t = osvrt.spawn(_sleep_forever)
        await osvrt.sleep(0.01)
        t.cancel()
        first = second = None
        try:
            await t.join(timeout=10)
        except osvrt.Cancelled as e:
            first = e
        try:
            await t.join(timeout=10)
        except osvrt.Cancelled as e:
            second = e
        return type(first), type(second)

    assert call(main) == (osvrt.Cancelled, osvrt.Cancelled)


def test_cancelling_the_joiner_does_not_cancel_the_joined(call):
    async def joiner(t):
        await t.join()

    async def main():
        target = osvrt.spawn(_value, "alive")
        j = osvrt.spawn(joiner, osvrt.spawn(_sleep_forever, name="long"))
        await osvrt.sleep(0.01)
        j.cancel()
        with pytest.raises(osvrt.Cancelled):
            await j.join(timeout=10)
        return await target.join(timeout=10)

    assert call(main) == "alive"


def test_a_thread_cancelled_before_its_first_step_runs_none_of_its_code(call):
    ran = []

    async def child():
        ran.append("body")
        try:
            await osvrt.sleep(0)
        finally:
            ran.append("finally")

    async def main():
        t = osvrt.spawn(child, cpu=osvrt.current().cpu)
        assert t.cancel() is True          # before we trap: t has not run yet
        with pytest.raises(osvrt.Cancelled):
            await t.join(timeout=10)
        return t.done()

    assert call(main) is True
    assert ran == []


def test_a_thread_that_catches_cancel_can_finish_normally(call):
    async def stubborn():
        try:
            await osvrt.sleep(3600)
        except osvrt.Cancelled:
            await osvrt.sleep(0.001)       # cleanup may still await
            return "cleaned up"

    async def main():
        t = osvrt.spawn(stubborn)
        await osvrt.sleep(0.01)
        t.cancel()
        return await t.join(timeout=10)

    assert call(main) == "cleaned up"


# ---- submit() Futures and cancellation -------------------------------------------

def test_submit_future_of_a_cancelled_thread_is_cancelled(rt):
    async def cancels_itself():
        osvrt.current().cancel()
        await osvrt.sleep(0)
        return "not reached"

    fut = rt.submit(cancels_itself)
    with pytest.raises(concurrent.futures.CancelledError):
        fut.result(timeout=10)
    assert fut.cancelled()


def test_cancelling_the_submit_future_cancels_the_thread(rt):
    started, cleaned = threading.Event(), threading.Event()

    async def sleeper():
        started.set()
        try:
            await osvrt.sleep(3600)
        finally:
            cleaned.set()

    fut = rt.submit(sleeper)
    assert started.wait(10)
    assert fut.cancel() is True
    assert cleaned.wait(10), "the green thread was not cancelled"
    with pytest.raises(concurrent.futures.CancelledError):
        fut.result(timeout=1)


def test_cancelled_submit_future_of_a_thread_that_returns_anyway_breaks_nothing(rt):
    # The caller cancels the Future; the green thread catches Cancelled and
    # returns a value.  The Future stays cancelled and the worker keeps working.
    started, returned = threading.Event(), threading.Event()

    async def stubborn():
        started.set()
        try:
            await osvrt.sleep(3600)
        except osvrt.Cancelled:
            returned.set()
            return "swallowed"

    c = rt.cpus[0]
    fut = rt.submit(stubborn, cpu=c)
    assert started.wait(10)
    assert fut.cancel() is True
    assert returned.wait(10)
    assert fut.cancelled()
    assert rt.submit(_value, "still alive", cpu=c).result(timeout=10) == "still alive"


def test_a_submitted_thread_cancelled_before_its_first_step_runs_none_of_its_code(rt):
    # Hold the target CPU with a thread that does not trap, so the submitted
    # thread is certainly still waiting to start when its Future is cancelled.
    c = rt.cpus[-1]
    holding, release = threading.Event(), threading.Event()
    ran = []

    async def hold():
        holding.set()
        release.wait(10)                   # blocks this worker, without a trap

    async def victim():
        ran.append(True)

    h = rt.submit(hold, cpu=c)
    assert holding.wait(10)
    fut = rt.submit(victim, cpu=c)
    assert fut.cancel() is True
    release.set()
    h.result(timeout=10)
    assert rt.submit(_value, "after", cpu=c).result(timeout=10) == "after"
    assert ran == []
    with pytest.raises(concurrent.futures.CancelledError):
        fut.result(timeout=1)


# ---- stop(timeout) ---------------------------------------------------------------

def test_stop_cancels_live_threads_and_runs_their_cleanup(worker_threads):
    rt = osvrt.Runtime(cpus=min(2, len(osvrt.Runtime().cpus)))
    rt.start()
    cleaned = []
    lock = threading.Lock()
    ready = threading.Semaphore(0)

    async def cleanup(kind):
        await osvrt.sleep(0.001)           # cleanup may await
        with lock:
            cleaned.append(kind)

    async def sleeper():
        ready.release()
        try:
            await osvrt.sleep(3600)
        finally:
            await cleanup("sleeper")

    async def waiter():
        ev = osvrt.Event()
        ready.release()
        try:
            await ev.wait()
        finally:
            await cleanup("waiter")

    async def spinner():
        ready.release()
        try:
            while True:
                await osvrt.yield_now()
        finally:
            await cleanup("spinner")

    async def parent():
        kids = [osvrt.spawn(sleeper), osvrt.spawn(waiter)]
        ready.release()
        try:
            for k in kids:
                await k.join()
        finally:
            await cleanup("parent")

    futs = [rt.submit(f, cpu=c) for f in (sleeper, waiter, spinner, parent) for c in rt.cpus]
    for _ in range(len(futs) + 2 * len(rt.cpus)):
        assert ready.acquire(timeout=10)
    time.sleep(0.05)
    t0 = time.monotonic()
    rt.stop(timeout=10)
    assert time.monotonic() - t0 < 10
    assert worker_threads() == []
    n = len(rt.cpus)
    assert sorted(cleaned) == sorted(["sleeper"] * 2 * n + ["waiter"] * 2 * n +
                                     ["spinner"] * n + ["parent"] * n)
    for f in futs:
        assert f.cancelled()


def test_stop_timeout_logs_and_abandons_threads_that_do_not_end(caplog, worker_threads):
    caplog.set_level(logging.ERROR, logger="osvrt")
    rt = osvrt.Runtime(cpus=1)
    rt.start()
    started = threading.Semaphore(0)
    polite_cleaned = threading.Event()

    async def stubborn():
        started.release()
        while True:
            try:
                await osvrt.sleep(3600)
            except osvrt.Cancelled:
                pass                       # ignores every cancel

    async def polite():
        started.release()
        try:
            await osvrt.sleep(3600)
        finally:
            polite_cleaned.set()

    rt.submit(stubborn, name="stubborn-one")
    rt.submit(polite, name="polite-one")
    assert started.acquire(timeout=10) and started.acquire(timeout=10)
    t0 = time.monotonic()
    rt.stop(timeout=0.3)
    took = time.monotonic() - t0
    assert 0.25 <= took < 10
    assert worker_threads() == []
    assert polite_cleaned.is_set()
    text = "\n".join(r.getMessage() for r in caplog.records
                     if r.name.startswith("osvrt") and r.levelno >= logging.WARNING)
    assert "stubborn-one" in text
    assert "polite-one" not in text


# ---- exceptions nobody joins -----------------------------------------------------

def test_an_exception_nobody_joins_is_logged_with_the_threads_name(rt, caplog):
    caplog.set_level(logging.ERROR, logger="osvrt")

    async def fails():
        raise LookupError("nobody looks at me")

    async def main():
        t = osvrt.spawn(fails, name="unjoined-failure")
        while not t.done():
            await osvrt.sleep(0.001)
        return True                         # t is dropped without a join

    assert rt.submit(main).result(timeout=10) is True
    assert rt.submit(_value, "still works").result(timeout=10) == "still works"
    for _ in range(3):
        gc.collect()
    records = [r for r in caplog.records if "unjoined-failure" in r.getMessage()]
    assert records, "the unjoined exception was not logged"
    assert records[0].levelno >= logging.ERROR
    assert records[0].exc_info is not None and records[0].exc_info[0] is LookupError


def test_a_joined_exception_is_not_logged(rt, caplog):
    caplog.set_level(logging.ERROR, logger="osvrt")

    async def fails():
        raise LookupError("joined")

    async def main():
        t = osvrt.spawn(fails, name="joined-failure")
        with pytest.raises(LookupError):
            await t.join()
        c = osvrt.spawn(_sleep_forever, name="cancelled-one")
        await osvrt.sleep(0.005)
        c.cancel()
        with pytest.raises(osvrt.Cancelled):
            await c.join()
        return True

    assert rt.submit(main).result(timeout=10) is True
    for _ in range(3):
        gc.collect()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "joined-failure" not in text
    assert "cancelled-one" not in text
