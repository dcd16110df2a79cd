"""pytest plugin: benchmark coroutine functions with pytest-benchmark.

pytest-benchmark times plain callables only (its issue #66).  The
`async_benchmark` fixture runs each round of an `async def` function as a
green thread of an osvrt Runtime that it starts once per test:

    def test_parse(async_benchmark):
        result = async_benchmark(parse_async, b"...")      # like benchmark(fn, *args)
        assert result == ...

    @pytest.mark.osvrt(cpus=1, pin=True)                    # Runtime options
    def test_handoff(async_benchmark):
        async_benchmark.pedantic(handoff, args=(1000,), rounds=20, iterations=5)

The time recorded for a round is the time the coroutine ran inside the runtime,
from its first step to its return, not the round trip from the test's OS
thread into the runtime and back (a few tens of microseconds that would swamp
a small coroutine).  Everything else is pytest-benchmark's: its options, its
table, its JSON, --benchmark-disable (each function then runs once).

Options: the marker @pytest.mark.osvrt(**runtime_options) (any keyword of
osvrt.Runtime: cpus, pin, balance, ...), over the ini options `osvrt_cpus`
(a count, or ids like 0,1; default: every CPU) and `osvrt_pin` (default true).

`async def test_...` functions run in a Runtime too: see osvrt/pytest_async.py
(@pytest.mark.osvrt(cpus=1, timeout=10) on the test; ini osvrt_async = auto
runs every unmarked one).

Registered as the pytest11 entry point `osvrt`.  This module imports nothing
but pytest at import time; without pytest-benchmark the fixture skips the
test, saying why.
"""
import math
import time
import types

import pytest

from . import pytest_async
from . import anyio_names
from .pytest_async import runtime_options

_INNER_ROUND_S = 250e-6     # auto mode: in-runtime iterations per round reach at least this
_MAX_INNER = 10_000
_MAX_ROUNDS = 100_000


def pytest_addoption(parser):
    parser.addini("osvrt_cpus", "CPUs of the Runtime that async_benchmark starts: a count, or "
                  "CPU ids such as 0,1 (default: every CPU of this process)", default="")
    parser.addini("osvrt_pin", "pin the async_benchmark Runtime's workers to their CPUs",
                  type="bool", default=True)
    pytest_async.addoption(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    return pytest_async.pyfunc_call(pyfuncitem)


def pytest_configure(config):
    pytest_async.configure(config)
    # anyio's plugin accepts anyio_backend = "osvrt" (osvrt.anyio) without an
    # import in conftest.py: a finder for that one module name, no anyio import.
    anyio_names.install()
    config.addinivalue_line(
        "markers", "osvrt(timeout=None, **runtime_options): options of the osvrt.Runtime "
        "that the async_benchmark fixture, or an async def test, starts for this test "
        "(cpus=, pin=, balance=, ...); timeout= bounds an async def test")


class _InRuntimeClock:
    """The timer that pytest-benchmark reads around each round: a clock that
    advances only by the time the coroutine ran inside the runtime (per
    in-runtime iteration), measured with perf_counter in the green thread.
    The trip into the runtime and back, and the test thread's own work
    between rounds, never show.  Used with pedantic rounds only, where
    pytest-benchmark reads the timer just before and just after a round."""

    __name__ = "osvrt_in_runtime_clock"

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class AsyncBenchmark:
    """The `async_benchmark` fixture's value: call it like pytest-benchmark's
    `benchmark`, with an async def function."""

    def __init__(self, benchmark, options):
        self.benchmark = benchmark
        self.options = options
        self._rt = None
        self._clock = _InRuntimeClock()
        self._last = (0.0, 0.0)

    # pytest-benchmark's per-test attributes, passed through
    @property
    def extra_info(self):
        return self.benchmark.extra_info

    @property
    def group(self):
        return self.benchmark.group

    @group.setter
    def group(self, value):
        self.benchmark.group = value

    @property
    def stats(self):
        return self.benchmark.stats

    @property
    def runtime(self):
        """The osvrt.Runtime the rounds run in (started on first use)."""
        if self._rt is None:
            import osvrt
            self._rt = osvrt.Runtime(**self.options).start()
        return self._rt

    def _stop(self):
        if self._rt is not None:
            rt, self._rt = self._rt, None
            rt.stop(timeout=5)

    def _round(self, fn, args, kwargs, inner):
        """One round: fn(*args, **kwargs) `inner` times in a green thread;
        the clock is set back by the time spent outside the coroutine."""
        out = [None]

        async def body():
            now = time.perf_counter
            t0 = now()
            for _ in range(inner):
                coro = fn(*args, **kwargs)
                if not isinstance(coro, types.CoroutineType):
                    raise TypeError(f"async_benchmark times async def functions; {fn!r} returned "
                                    f"{type(coro).__name__}, not a coroutine (use the "
                                    "`benchmark` fixture for plain functions)")
                out[0] = await coro
            return now() - t0

        t0 = time.perf_counter()
        inside = self.runtime.run(body)
        outside = time.perf_counter() - t0
        self._clock.now += inside / inner
        self._last = (inside, outside)
        return out[0]

    def _check(self, fn):
        if not callable(fn):
            raise TypeError(f"async_benchmark times async def functions; {fn!r} is not callable")

    def _timed(self):
        # pytest-benchmark reads the timer from this attribute for every round
        # (BenchmarkFixture._make_runner); without it, rounds include the trip
        # into the runtime, and extra_info says so.
        if hasattr(self.benchmark, "_timer"):
            self.benchmark._timer = self._clock
            self.extra_info["osvrt_timer"] = "in-runtime"
        else:
            self.extra_info["osvrt_timer"] = "includes the round trip into the runtime"

    def __call__(self, fn, *args, **kwargs):
        """Time fn(*args, **kwargs) (an async def function) in the runtime;
        rounds and iterations are chosen as pytest-benchmark would, from its
        --benchmark-min-rounds and --benchmark-max-time.  Returns fn's result."""
        self._check(fn)
        self.extra_info["osvrt_cpus"] = list(self.runtime.cpus)
        if self.benchmark.disabled:                  # runs fn once
            return self._pedantic(fn, args, kwargs, 1, 0, 1)
        # Calibrate (these calls also warm up): as many in-runtime iterations
        # per round as make a round last _INNER_ROUND_S, so the clock's
        # resolution and a round's fixed cost vanish; then as many rounds as
        # fill pytest-benchmark's max_time in wall-clock time.
        inner = 1
        while True:
            self._round(fn, args, kwargs, inner)
            inside, outside = self._last
            if inside >= _INNER_ROUND_S or inner >= _MAX_INNER:
                break
            grow = 10 if inside < _INNER_ROUND_S / 10 else _INNER_ROUND_S / max(inside, 1e-9)
            inner = min(_MAX_INNER, math.ceil(inner * grow))
        per_round = max(outside, 1e-6)
        max_time = float(getattr(self.benchmark, "_max_time", 1.0))
        min_rounds = int(getattr(self.benchmark, "_min_rounds", 5))
        rounds = max(min_rounds, min(_MAX_ROUNDS, math.ceil(max_time / per_round)))
        warmup = 1 if getattr(self.benchmark, "_warmup", False) else 0
        return self._pedantic(fn, args, kwargs, rounds, warmup, inner)

    def pedantic(self, fn, args=(), kwargs=None, rounds=1, warmup_rounds=0, iterations=1):
        """Like benchmark.pedantic: `rounds` rounds (after `warmup_rounds`),
        each running fn `iterations` times inside the runtime; pytest-benchmark
        records the mean per iteration of each round."""
        self._check(fn)
        for name, v, lo in (("rounds", rounds, 1), ("iterations", iterations, 1),
                            ("warmup_rounds", warmup_rounds, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name}={v!r}: must be an int >= {lo}")
        self.extra_info["osvrt_cpus"] = list(self.runtime.cpus)
        return self._pedantic(fn, tuple(args), dict(kwargs or {}), rounds, warmup_rounds,
                              iterations)

    def _pedantic(self, fn, args, kwargs, rounds, warmup, inner):
        self._timed()
        self.extra_info["osvrt_iterations_per_round"] = inner
        return self.benchmark.pedantic(self._round, args=(fn, args, kwargs, inner),
                                       rounds=rounds, warmup_rounds=warmup, iterations=1)


@pytest.fixture
def async_benchmark(request):
    """async_benchmark(coro_fn, *args, **kwargs): pytest-benchmark for async def
    functions; each round runs inside an osvrt Runtime started for this test
    (options: @pytest.mark.osvrt(cpus=..., pin=...), ini osvrt_cpus/osvrt_pin)."""
    try:
        benchmark = request.getfixturevalue("benchmark")
    except pytest.FixtureLookupError:
        pytest.skip("async_benchmark needs pytest-benchmark (pip install pytest-benchmark), "
                    "which is not installed or not enabled")
    ab = AsyncBenchmark(benchmark, runtime_options(request.node, request.config))
    try:
        yield ab
    finally:
        ab._stop()
