"""Regressions found in review, each reproduced before its fix.  Every one of
them hung or crashed a worker, so each test runs under a hard time bound."""
import threading
import time

import pytest

import osvrt
from osvrt import kernel
from osvrt._core import lib
from osvrt.cwait import cwait
from support import bounded




def test_run_whose_main_is_cancelled_raises_instead_of_hanging():
    # Future.cancel() alone never woke concurrent.futures.wait() in osvrt.run.
    async def main():
        osvrt.current().cancel()
        await osvrt.sleep(10)

    with pytest.raises(osvrt.Cancelled):
        bounded(lambda: osvrt.run(main, cpus=1))


def test_c_wake_and_remote_cancel_of_one_thread_do_not_corrupt_the_pushlist():
    # osvrt_wake (a net classifier) and cancel() from another CPU used to push
    # the same node twice: a self-loop that spun its CPU forever.
    async def waiter():
        try:
            await cwait(lambda: False)
        except osvrt.Cancelled:
            return "cancelled"
        return "woken"

    async def hog():
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            pass

    async def remote(a):
        await osvrt.sleep(0.05)          # a is parked; its CPU is inside hog
        crt = kernel.current_worker().rt.core
        assert lib.osvrt_wake(crt, a.handle) == 1
        a.cancel()

    async def main():
        c0, c1 = kernel.current_worker().rt.cpus
        a = osvrt.spawn(waiter, cpu=c0)
        await osvrt.sleep(0.02)
        osvrt.spawn(hog, cpu=c0)
        await osvrt.spawn(remote, a, cpu=c1).join()
        return await a.join(timeout=5)

    assert bounded(lambda: osvrt.run(main, cpus=2, balance=False, stall_threshold=None)) \
        == "cancelled"


def test_cwait_whose_ticket_a_cancel_claimed_runs_the_thread_once():
    # cwait() used to return without parking after losing its claim, so the
    # thread ran on while also queued: it ran twice and ended twice.
    async def victim():
        me = osvrt.current()

        def ready():
            th = threading.Thread(target=me.cancel)      # a foreign OS thread
            th.start()
            th.join()
            return True

        try:
            await cwait(ready)
        except osvrt.Cancelled:
            return "cancelled once"
        return "not cancelled"

    async def main():
        t = osvrt.spawn(victim)
        r = await t.join(timeout=5)
        await osvrt.sleep(0.05)          # a stale queue entry would run t again here
        return r, kernel.current_worker().runq

    r, runq = bounded(lambda: osvrt.run(main, cpus=1, balance=False, stall_threshold=None))
    assert r == "cancelled once"
    assert runq == []


def test_a_huge_finite_sleep_does_not_crash_the_worker():
    # int(1e12 s * 1e9) overflowed the C int64 idle timeout: OverflowError
    # escaped the worker loop.
    async def sleeper():
        await osvrt.sleep(1e12)

    async def main():
        t = osvrt.spawn(sleeper)
        await osvrt.sleep(0.05)
        t.cancel()
        with pytest.raises(osvrt.Cancelled):
            await t.join(timeout=5)
        return "worker alive"

    assert bounded(lambda: osvrt.run(main, cpus=1)) == "worker alive"


def test_nested_timeouts_that_expire_together_keep_the_outer_expiry():
    # The inner scope's _Expired used to overwrite the outer one's; the inner
    # TimeoutError was then handled and the outer block ran on unbounded.
    async def main():
        t0 = time.monotonic()
        try:
            with osvrt.timeout(0.01):
                try:
                    with osvrt.timeout(0.01):
                        time.sleep(0.05)         # both deadlines pass before we trap
                        await osvrt.sleep(0)
                except TimeoutError:
                    pass                         # the inner timeout, handled
                await osvrt.sleep(0.5)           # the outer deadline has passed
            return "outer block NOT interrupted"
        except TimeoutError:
            return round(time.monotonic() - t0, 1)

    took = bounded(lambda: osvrt.run(main, cpus=1))
    assert isinstance(took, float) and took < 0.4, took


def test_a_foreign_awaitable_yielding_a_small_int_is_a_type_error():
    # PARK and YIELD were 0 and 1: a foreign yield of 0 was taken for PARK and
    # the thread hung with no ticket to wake it.
    class Foreign:
        def __await__(self):
            yield 0

    async def main():
        try:
            await Foreign()
        except TypeError as e:
            return str(e)

    assert "not an osvrt operation" in bounded(lambda: osvrt.run(main, cpus=1))


async def _pause_fire_before_its_interrupt(seconds):
    """A trace function that sleeps in osvrt.timeout._fire just before its
    thread.interrupt call: the window of a GIL switch there, made wide."""
    import inspect
    import sys

    from osvrt import deadline
    src, start = inspect.getsourcelines(deadline.timeout._fire)
    line = start + next(i for i, s in enumerate(src) if "thread.interrupt(" in s)
    code = deadline.timeout._fire.__code__

    def local(frame, event, arg):
        if event == "line" and frame.f_lineno == line:
            time.sleep(seconds)
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code is code else None
    sys.settrace(tracer)


@pytest.mark.parametrize("wait", ["event", "mutex"])
def test_a_late_timeout_does_not_end_the_next_wait(wait):
    """A block's timer fires on worker 0 while the thread, moved to worker 1,
    leaves the block and parks in its next wait.  The expiry used to claim
    that unrelated wait: Event.wait returned True on an unset event, Mutex
    acquire returned while another thread owned the mutex (found in review;
    the trace hook widens a GIL switch's window at the same place)."""
    async def main():
        me = kernel.current()
        await osvrt.spawn(_pause_fire_before_its_interrupt, 0.2, cpu=0).join()
        m = osvrt.Mutex()
        holding = []

        async def holder():
            async with m:
                holding.append(True)
                await osvrt.sleep(0.6)
                holding.clear()
        if wait == "mutex":
            osvrt.spawn(holder, cpu=1)
            await osvrt.sleep(0.01)
        await me.pin(0)
        with osvrt.timeout(0.005):
            await me.pin(1)                  # the block's timer stays on worker 0
            end = time.perf_counter() + 0.05
            while time.perf_counter() < end:
                pass                         # no await: worker 0 fires meanwhile
        if wait == "event":
            try:
                return await osvrt.Event().wait(timeout=0.5)     # never set
            except TimeoutError:
                return "timed out"
        await m.acquire()
        return "owner still inside" if holding else "acquired after the owner left"

    def run():
        with osvrt.Runtime(cpus=2, balance=False) as rt:
            return rt.run(main)
    expected = {"event": "timed out", "mutex": "acquired after the owner left"}[wait]
    assert bounded(run) == expected
