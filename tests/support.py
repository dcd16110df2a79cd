"""Helpers shared by the tests (fixtures live in conftest.py)."""
import threading
import time

import osvrt

RESULT_TIMEOUT = 30


def run(rt, fn, *args, cpu=None, timeout=RESULT_TIMEOUT):
    """Run fn(*args) as a green thread of rt; a hang fails after `timeout`."""
    return rt.submit(fn, *args, cpu=cpu).result(timeout=timeout)


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
