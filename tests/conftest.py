"""Shared fixtures for the osvrt scheduler tests.

Every test that runs green threads is bounded in time: work goes in through
Runtime.submit(...).result(timeout=...) (a lost wake-up then FAILS with
TimeoutError), and the `rt` fixture stops its runtime with a timeout.  As a
last resort, `hang_guard` dumps every thread's stack and ends the test process
if a single test runs past HANG_GUARD_S (a hang must never stall CI forever).
"""
import faulthandler
import os
import threading

import pytest

import osvrt

AVAILABLE = sorted(os.sched_getaffinity(0))
HANG_GUARD_S = 120
RESULT_TIMEOUT = 15          # seconds a submitted green thread may take before the test fails


_real_stderr_fd = None


def pytest_configure(config):
    # The hang guard must write to the real stderr: pytest's output capture
    # would swallow the dump when the guard ends the process.  The fd that
    # pytest's fd capture saved is the real one; without fd capture (-s,
    # --capture=sys) fd 2 still is.  (Suspending and resuming the capture
    # here instead left pytest's terminal writer on a closed file whenever
    # collection failed: its report was lost.)
    global _real_stderr_fd
    capman = config.pluginmanager.getplugin("capturemanager")
    err = getattr(getattr(capman, "_global_capturing", None), "err", None)
    saved = getattr(err, "targetfd_save", None)
    try:
        _real_stderr_fd = os.dup(saved if isinstance(saved, int) else 2)
    except OSError:
        _real_stderr_fd = None


@pytest.fixture(autouse=True)
def hang_guard():
    if _real_stderr_fd is not None:
        faulthandler.dump_traceback_later(HANG_GUARD_S, exit=True, file=_real_stderr_fd)
    else:
        faulthandler.dump_traceback_later(HANG_GUARD_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def available_cpus():
    """The CPU ids this process may use, sorted."""
    return list(AVAILABLE)


@pytest.fixture
def two_cpus():
    """Two distinct CPU ids (the test is skipped on a one-CPU machine)."""
    if len(AVAILABLE) < 2:
        pytest.skip("needs at least 2 CPUs")
    return AVAILABLE[0], AVAILABLE[1]


def _make_runtime(**options):
    options.setdefault("cpus", min(2, len(AVAILABLE)))
    return osvrt.Runtime(**options)


@pytest.fixture
def make_rt():
    """make_rt(**options) -> a started Runtime (at most 2 CPUs unless cpus= is
    given), stopped with a bounded timeout at teardown."""
    made = []

    def make(**options):
        r = _make_runtime(**options)
        r.start()
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop(timeout=2)


@pytest.fixture
def rt(make_rt):
    """A started Runtime on (at most) the first two available CPUs."""
    return make_rt()


@pytest.fixture
def call(rt):
    """call(fn, *args, cpu=None, timeout=RESULT_TIMEOUT): run the coroutine
    function fn as a green thread of `rt` and return its result (re-raising its
    exception); TimeoutError if it does not finish in time."""
    def call(fn, *args, cpu=None, timeout=RESULT_TIMEOUT):
        return rt.submit(fn, *args, cpu=cpu).result(timeout=timeout)
    return call


def osvrt_worker_threads():
    return [t for t in threading.enumerate()
            if t.name.startswith("osvrt-cpu") and t.is_alive()]


@pytest.fixture
def worker_threads():
    """worker_threads() -> the live OS threads whose name starts with 'osvrt-cpu'
    and that were not already alive when the test began (so that a worker
    leaked by an earlier, failed test cannot fail this one too)."""
    before = set(osvrt_worker_threads())
    return lambda: [t for t in osvrt_worker_threads() if t not in before]


@pytest.fixture(scope="module")
def mrt():
    """One runtime on two CPUs for the whole module (the sync tests)."""
    r = osvrt.Runtime(cpus=2)
    r.start()
    yield r
    r.stop(timeout=5)


@pytest.fixture
def cpus(mrt):
    return mrt.cpus
