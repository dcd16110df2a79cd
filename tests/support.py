"""Helpers shared by the tests (fixtures live in conftest.py)."""
import contextlib
import threading
import time

import osvrt

RESULT_TIMEOUT = 30


def run(rt, fn, *args, cpu=None, timeout=RESULT_TIMEOUT):
    """Run fn(*args) as a green thread of rt; a hang fails after `timeout`."""
    return rt.submit(fn, *args, cpu=cpu).result(timeout=timeout)


def run_once(main, *args, cpus=1):
    """main(*args) on a runtime of its own (no balancer, no stall watchdog),
    stopped afterwards; its result."""
    rt = osvrt.Runtime(cpus=cpus, balance=False, stall_threshold=None).start()
    try:
        return rt.submit(main, *args).result(timeout=RESULT_TIMEOUT)
    finally:
        rt.stop(timeout=5)


@contextlib.contextmanager
def stop_under_way(cpus=1, name="stubborn"):
    """A started runtime whose stop() is under way in another OS thread, held
    there by a green thread (`name`) that ignores its cancel until the block
    ends; yields the runtime.  On exit the thread is let go and that stop()
    must end."""
    release = threading.Event()

    async def stubborn():
        while not release.is_set():
            try:
                await osvrt.sleep(0.02)
            except osvrt.Cancelled:
                pass                     # ignores its cancel until released

    rt = osvrt.Runtime(cpus=cpus).start()
    rt.submit(stubborn, name=name)
    time.sleep(0.1)
    first = threading.Thread(target=rt.stop, daemon=True)
    first.start()
    time.sleep(0.1)                      # the first stop() waits for the thread
    try:
        yield rt
    finally:
        release.set()
        first.join(20)
    assert not first.is_alive()


async def until(pred, timeout=5.0, what="condition"):
    """Poll pred() (yielding the CPU) until it is true; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await osvrt.sleep(0.001)


async def queued(t):
    """Wait until green thread t is parked (e.g. queued on a mutex)."""
    await until(lambda: t.state == "waiting", what=f"{t.name} parked")


def bounded(fn, timeout=20):
    """fn() in a daemon thread; its result, or a failure (not a hang) after timeout."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(timeout)
    assert not th.is_alive(), f"hung for {timeout} s"
    if "error" in box:
        raise box["error"]
    return box["value"]
