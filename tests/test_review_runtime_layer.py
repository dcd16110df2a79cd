"""The Python runtime layer, from review: each test reproduces what the
reviewer's script showed before its fix (a lost cancel or timeout, a crash
of gather, a stop that ignored its timeout, a crash that osvrt.run turned
into None, an offload call that ran after to_thread had raised, two starts
of one runtime, bad input to notify_closing).  Each runs under a hard bound."""
import logging
import threading
import time

import pytest

import osvrt
from osvrt import balancer
from support import bounded, stop_under_way


async def _slow_cleanup():
    try:
        await osvrt.sleep(10)
    finally:
        await osvrt.sleep(0.3)           # cleanup that takes a while


def test_a_cancel_during_as_completed_aclose_reaches_the_caller():
    # _cancel_and_wait swallowed whatever its joins raised, the caller's own
    # cancel included: the caller went on as if never cancelled.
    log = []

    async def caller():
        async with osvrt.as_completed([_slow_cleanup()]):
            await osvrt.sleep(0.05)      # the child starts
        log.append("went on after aclose")

    async def main():
        t = osvrt.spawn(caller)
        await osvrt.sleep(0.1)           # caller waits in aclose for the cleanup
        t.cancel()
        with pytest.raises(osvrt.Cancelled):
            await t.join()

    bounded(lambda: osvrt.run(main, cpus=1))
    assert log == []


def test_a_timeout_during_as_completed_aclose_expires_after_the_children_end():
    async def main():
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            with osvrt.timeout(0.1):
                async with osvrt.as_completed([_slow_cleanup()]):
                    await osvrt.sleep(0.05)
                await osvrt.sleep(5)     # reached only if the expiry was lost
        # The child's cleanup (0.3 s) ran to its end before the expiry was raised.
        return time.monotonic() - t0

    took = bounded(lambda: osvrt.run(main, cpus=1))
    assert 0.3 <= took < 4


def test_gather_of_the_same_thread_twice_gives_its_result_twice():
    async def answer():
        return 42

    async def main():
        t = osvrt.spawn(answer)
        return await osvrt.gather(t, t)

    assert bounded(lambda: osvrt.run(main, cpus=1)) == [42, 42]


def test_a_timeout_expiring_in_condition_reacquire_stays_a_timeout():
    # _reacquire re-armed a timeout's expiry as a plain Cancelled: the outer
    # timeout turned into a cancel of the whole thread.
    async def holder(m, took):
        await osvrt.sleep(0.05)
        async with m:                    # takes the mutex the waiter's wait() released
            took.set()
            await osvrt.sleep(0.6)       # past both deadlines

    async def waiter(m, cond):
        async with m:
            with pytest.raises(TimeoutError):
                with osvrt.timeout(0.3):            # expires during the re-acquire
                    with osvrt.timeout(0.1):        # ends the wait
                        await cond.wait()
        await osvrt.sleep(0.01)
        return "went on"

    async def main():
        m = osvrt.Mutex()
        cond = osvrt.Condition(m)
        took = osvrt.Event()
        h = osvrt.spawn(holder, m, took)
        w = osvrt.spawn(waiter, m, cond)
        result = await w.join()
        await h.join()
        return result

    assert bounded(lambda: osvrt.run(main, cpus=1)) == "went on"


def test_a_second_stop_keeps_its_own_timeout(caplog):
    with stop_under_way(cpus=[0]) as rt:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="another stop"):
            bounded(lambda: rt.stop(timeout=0.3))
        assert time.monotonic() - t0 < 3


def test_osvrt_run_raises_a_worker_crash_instead_of_returning_none(monkeypatch, caplog):
    boom = []
    real = balancer.ask_for_work

    def ask_for_work(w):
        if boom:
            raise RuntimeError("simulated scheduler bug")
        return real(w)

    monkeypatch.setattr(balancer, "ask_for_work", ask_for_work)

    async def main():
        boom.append(1)
        await osvrt.sleep(0.3)           # an idle worker asks for work: crash
        return "main's result"

    with caplog.at_level(logging.CRITICAL):
        with pytest.raises(RuntimeError, match="worker crashed"):
            bounded(lambda: osvrt.run(main, cpus=2))


def test_an_offload_thread_that_cannot_start_leaves_no_call_behind(monkeypatch):
    ran = []
    real_start = threading.Thread.start
    fail = []

    def start(self):
        if fail and self.name.startswith("osvrt-offload"):
            fail.clear()
            raise RuntimeError("can't start new thread")
        return real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)

    def blocking(tag):
        time.sleep(0.05)
        ran.append(tag)

    async def main():
        await osvrt.to_thread(blocking, "first")
        busy = osvrt.spawn(osvrt.to_thread, blocking, "busy")
        await osvrt.sleep(0.01)          # the one pool thread is busy
        fail.append(1)
        with pytest.raises(RuntimeError, match="can't start"):
            await osvrt.to_thread(blocking, "refused")
        await busy.join()
        await osvrt.sleep(0.2)

    bounded(lambda: osvrt.run(main, cpus=1))   # stop() joins the pool cleanly
    assert ran == ["first", "busy"]


def test_runtime_stop_from_inside_to_thread_stops_the_pool(caplog):
    rt = osvrt.Runtime(cpus=[0]).start()
    done = threading.Event()

    def stop_here():
        rt.stop(timeout=5)
        done.set()

    async def main():
        await osvrt.to_thread(stop_here)

    rt.submit(main)
    assert done.wait(20)
    assert "failed to stop" not in caplog.text


def test_two_threads_starting_one_runtime_start_it_once():
    for _ in range(3):
        rt = osvrt.Runtime(cpus=[0, 1])
        go = threading.Barrier(2)
        errors = []

        def start():
            go.wait()
            try:
                rt.start()
            except RuntimeError as e:
                errors.append(e)

        before = {t.ident for t in threading.enumerate()}
        starters = [threading.Thread(target=start) for _ in range(2)]
        for t in starters:
            t.start()
        for t in starters:
            t.join(20)
        workers = [t for t in threading.enumerate()
                   if t.ident not in before and t.name.startswith("osvrt-cpu")]
        rt.stop(timeout=5)
        assert len(errors) == 1 and "starts once" in str(errors[0])
        assert len(workers) == 2


@pytest.mark.parametrize("bad", [True, "x", 3.5, None])
def test_notify_closing_names_a_bad_argument(bad):
    with pytest.raises(TypeError, match="notify_closing"):
        osvrt.notify_closing(bad)


def test_a_cancelled_future_is_notified_once_without_a_critical_log(caplog):
    # stop() and the thread's end both called set_running_or_notify_cancel();
    # concurrent.futures logs the second at CRITICAL before it raises.
    import concurrent.futures

    from osvrt import thread
    fut = concurrent.futures.Future()
    assert fut.cancel()
    with caplog.at_level(logging.DEBUG):
        thread.notify_cancelled(fut)
        thread.notify_cancelled(fut)
    assert concurrent.futures.wait([fut], timeout=0).done == {fut}
    assert not [r for r in caplog.records if r.levelno >= logging.CRITICAL]


def test_a_start_that_fails_half_way_stops_what_it_started():
    # A worker's OS thread that could not start left the runtime "running"
    # with that worker's thread None: stop() then raised AttributeError.
    class HalfStarts(osvrt.Runtime):
        made = 0

        def _start_worker(self, w, ready):
            HalfStarts.made += 1
            if HalfStarts.made == 2:
                raise RuntimeError("can't start new thread")
            return super()._start_worker(w, ready)

    before = {t.ident for t in threading.enumerate()}
    rt = HalfStarts(cpus=[0, 1])
    with pytest.raises(RuntimeError, match="can't start"):
        bounded(rt.start)
    bounded(lambda: rt.stop(timeout=1))          # a no-op now, and no AttributeError
    left = [t for t in threading.enumerate()
            if t.ident not in before and t.name.startswith("osvrt-cpu")]
    for t in left:
        t.join(5)
    assert not [t for t in left if t.is_alive()]
    assert repr(rt).endswith("stopped>")


def test_stop_during_a_start_that_does_not_end_is_bounded_and_named():
    # stop() while another OS thread's start() was under way waited for that
    # start without a bound, whatever the stop's timeout.
    release = threading.Event()

    class SlowStart(osvrt.Runtime):
        def _start_worker(self, w, ready):
            release.wait(30)
            return super()._start_worker(w, ready)

    rt = SlowStart(cpus=[0])
    starter = threading.Thread(target=rt.start)
    starter.start()
    try:
        for _ in range(200):             # until start() is under way
            if "starting" in repr(rt):
                break
            time.sleep(0.01)
        with pytest.raises(TimeoutError, match=r"start\(\) of this runtime in another OS thread"):
            bounded(lambda: rt.stop(timeout=0.1))
    finally:
        release.set()
        starter.join(10)
    bounded(lambda: rt.stop(timeout=5))   # once start() has returned, stop() stops it
    assert repr(rt).endswith("stopped>")


def test_gather_does_not_report_the_failures_it_waited_for_as_unjoined(caplog):
    # return_exceptions=False raised the first failure; a second child that
    # failed too was waited for by gather but logged at collection as "ended
    # with an exception nobody joined" (asyncio.gather marks it retrieved).
    import gc

    class Boom(Exception):
        pass

    async def fails(i):
        await osvrt.sleep(0)
        raise Boom(i)

    async def main():
        raised = []
        for _ in range(3):
            try:
                await osvrt.gather(fails(1), fails(2))
            except Boom as e:
                raised.append(e)
        return len(raised)

    with caplog.at_level(logging.ERROR, logger="osvrt"):
        assert osvrt.run(main, cpus=2) == 3
        gc.collect()
    assert "nobody joined" not in caplog.text, caplog.text
