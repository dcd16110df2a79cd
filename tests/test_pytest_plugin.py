"""The pytest plugin osvrt.pytest_plugin: the async_benchmark fixture.

Each test runs an inner pytest session (pytester) with plugin autoloading off
and the plugins named explicitly, so the result is the same whether or not
osvrt is installed with its pytest11 entry point.  Nothing here asserts speed:
only that rounds ran inside the runtime, as many as asked, and were recorded.
"""
import json
import os
import subprocess
import sys

import pytest

pytest_plugins = ["pytester"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WITH_BENCHMARK = ["-p", "pytest_benchmark.plugin", "-p", "osvrt.pytest_plugin"]
COMMON = ["-p", "no:cacheprovider", "-q"]


@pytest.fixture
def inner(pytester, monkeypatch):
    """inner(*args, benchmark=True) -> RunResult of an in-process pytest run
    with only the plugins named (pytest-benchmark unless benchmark=False)."""
    pytest.importorskip("pytest_benchmark")
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")

    def run(*args, benchmark=True):
        plugins = WITH_BENCHMARK if benchmark else ["-p", "osvrt.pytest_plugin"]
        return pytester.runpytest_inprocess(*plugins, *COMMON, *args)
    return run


def _bench_json(pytester, name="out.json"):
    with open(pytester.path / name) as f:
        return {b["name"]: b for b in json.load(f)["benchmarks"]}


def test_times_coroutine_rounds_inside_the_runtime(pytester, inner):
    pytester.makepyfile(test_it="""
        import osvrt

        CALLS = []

        async def work(x):
            CALLS.append(osvrt.current().cpu)      # RuntimeError outside a green thread
            await osvrt.sleep(0)
            return x * 2

        def test_work(async_benchmark):
            assert async_benchmark(work, 21) == 42
            assert len(CALLS) > 1
            assert set(CALLS) <= set(async_benchmark.runtime.cpus)
    """)
    r = inner("--benchmark-json=out.json", "--benchmark-max-time=0.05",
              "--benchmark-min-rounds=3")
    r.assert_outcomes(passed=1)
    b = _bench_json(pytester)["test_work"]
    assert b["stats"]["rounds"] >= 3
    assert b["stats"]["min"] > 0
    assert b["extra_info"]["osvrt_timer"] == "in-runtime"
    assert b["extra_info"]["osvrt_iterations_per_round"] >= 1
    assert b["options"]["timer"] == "osvrt_in_runtime_clock"


def test_round_time_is_the_coroutines_own_time(pytester, inner):
    # A round that sleeps 5 ms can never be recorded as shorter than that.
    pytester.makepyfile(test_it="""
        import osvrt

        async def nap():
            await osvrt.sleep(0.005)

        def test_nap(async_benchmark):
            async_benchmark.pedantic(nap, rounds=3)
    """)
    r = inner("--benchmark-json=out.json")
    r.assert_outcomes(passed=1)
    stats = _bench_json(pytester)["test_nap"]["stats"]
    assert stats["rounds"] == 3
    assert stats["min"] >= 0.005


def test_pedantic_runs_rounds_times_iterations_in_the_runtime(pytester, inner):
    pytester.makepyfile(test_it="""
        import osvrt

        CALLS = []

        async def step(tag, *, k):
            CALLS.append((tag, k, osvrt.current().name))
            return len(CALLS)

        def test_step(async_benchmark):
            n = async_benchmark.pedantic(step, args=("t",), kwargs={"k": 1}, rounds=3,
                                         warmup_rounds=1, iterations=4)
            assert n == 16 == len(CALLS)               # (1 warm-up + 3 rounds) x 4
            assert all(c[:2] == ("t", 1) for c in CALLS)
    """)
    r = inner("--benchmark-json=out.json")
    r.assert_outcomes(passed=1)
    b = _bench_json(pytester)["test_step"]
    assert b["stats"]["rounds"] == 3
    assert b["extra_info"]["osvrt_iterations_per_round"] == 4


def test_marker_and_ini_choose_the_runtime(pytester, inner):
    pytester.makeini("""
        [pytest]
        osvrt_cpus = 1
        osvrt_pin = false
    """)
    pytester.makepyfile(test_it="""
        import os
        import pytest
        import osvrt

        async def where():
            return osvrt.current().cpu

        def test_ini(async_benchmark):
            assert async_benchmark.options == {"pin": False, "cpus": 1}
            assert len(async_benchmark.runtime.cpus) == 1
            assert async_benchmark(where) in async_benchmark.runtime.cpus

        LAST = sorted(os.sched_getaffinity(0))[-1]

        @pytest.mark.osvrt(cpus=[LAST], pin=True, balance=False)
        def test_marker(async_benchmark):
            assert async_benchmark.runtime.cpus == (LAST,)
            assert async_benchmark.pedantic(where, rounds=2) == LAST
    """)
    inner("--benchmark-disable").assert_outcomes(passed=2)


def test_benchmark_disable_runs_the_coroutine_once(pytester, inner):
    pytester.makepyfile(test_it="""
        CALLS = []

        async def once():
            CALLS.append(1)
            return "ok"

        def test_once(async_benchmark):
            assert async_benchmark(once) == "ok"
            assert CALLS == [1]
    """)
    r = inner("--benchmark-disable")
    r.assert_outcomes(passed=1)
    assert "was not used" not in r.stdout.str()


def test_plain_functions_and_bad_arguments_are_refused(pytester, inner):
    pytester.makepyfile(test_it="""
        import pytest

        def plain():
            return 1

        async def fine():
            return 1

        def test_plain(async_benchmark):
            with pytest.raises(TypeError, match="async def"):
                async_benchmark(plain)

        def test_not_callable(async_benchmark):
            with pytest.raises(TypeError, match="not callable"):
                async_benchmark(42)

        def test_bad_rounds(async_benchmark):
            with pytest.raises(ValueError, match="rounds=0"):
                async_benchmark.pedantic(fine, rounds=0)

        def test_exception_propagates(async_benchmark):
            async def boom():
                raise KeyError("inside")
            with pytest.raises(KeyError, match="inside"):
                async_benchmark(boom)
    """)
    inner("--benchmark-disable").assert_outcomes(passed=4)


def test_bad_marker_is_a_usage_error(pytester, inner):
    pytester.makepyfile(test_it="""
        import pytest

        async def fine():
            return 1

        @pytest.mark.osvrt(2)
        def test_positional(async_benchmark):
            async_benchmark(fine)
    """)
    r = inner("--benchmark-disable")
    assert r.ret != 0
    r.stdout.fnmatch_lines(["*keywords only*"])


def test_without_pytest_benchmark_the_fixture_skips(pytester, inner):
    pytester.makepyfile(test_it="""
        async def fine():
            return 1

        def test_uses_it(async_benchmark):
            async_benchmark(fine)

        def test_unrelated():
            assert True
    """)
    r = inner("-rs", benchmark=False)
    r.assert_outcomes(passed=1, skipped=1)
    r.stdout.fnmatch_lines(["*async_benchmark needs pytest-benchmark*"])


def test_plugin_module_imports_cheaply():
    code = ("import sys, threading; import osvrt.pytest_plugin; "
            "heavy = [m for m in ('pytest_benchmark', 'numba', 'trio', 'gevent', 'uvloop', "
            "'osvrt.bench') if m in sys.modules]; "
            "print(heavy, threading.active_count())")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (os.path.dirname(os.path.dirname(os.path.abspath(
            __import__("osvrt").__file__))), os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "1"]


def test_registered_as_a_pytest11_entry_point():
    from importlib.metadata import PackageNotFoundError, distribution
    try:
        dist = distribution("osvrt")
    except PackageNotFoundError:
        dist = None
    if dist is not None and any(ep.group == "pytest11" for ep in dist.entry_points):
        eps = {ep.name: ep.value for ep in dist.entry_points if ep.group == "pytest11"}
        assert eps == {"osvrt": "osvrt.pytest_plugin"}
        return
    setup_py = os.path.join(ROOT, "setup.py")
    if not os.path.exists(setup_py):
        pytest.skip("osvrt is not installed and setup.py is not here")
    with open(setup_py) as f:
        assert '"pytest11": ["osvrt = osvrt.pytest_plugin"]' in f.read()
