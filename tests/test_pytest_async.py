"""The pytest plugin runs `async def test_...` in an osvrt Runtime (issue 21,
item 17): marked tests in the default strict mode, every unclaimed one in
auto mode; the marker sets Runtime options and a time limit."""
import pytest

pytest_plugins = ["pytester"]

COMMON = ["-p", "no:cacheprovider", "-q", "-p", "osvrt.pytest_plugin"]


@pytest.fixture
def inner(pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    return lambda *args: pytester.runpytest_subprocess(*COMMON, *args, timeout=120)


def test_a_marked_async_test_runs_in_a_runtime(pytester, inner):
    pytester.makepyfile(test_it="""
        import pytest
        import osvrt

        @pytest.fixture
        def value():
            return 21

        @pytest.mark.osvrt(cpus=1)
        async def test_in_runtime(value):
            await osvrt.sleep(0.001)
            assert len({i.cpu for i in osvrt.threads()}) == 1
            assert value * 2 == 42

        @pytest.mark.osvrt(cpus=1)
        async def test_a_failure_is_reported():
            await osvrt.sleep(0)
            assert 1 == 2
    """)
    r = inner()
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines(["*assert 1 == 2*"])


def test_the_marker_timeout_bounds_a_hanging_test(pytester, inner):
    pytester.makepyfile(test_it="""
        import pytest
        import osvrt

        @pytest.mark.osvrt(cpus=1, timeout=0.5)
        async def test_hangs():
            await osvrt.sleep(3600)
    """)
    r = inner()
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*TimeoutError*timeout=0.5*"])


def test_strict_mode_leaves_unmarked_async_tests_alone(pytester, inner):
    pytester.makepyfile(test_it="""
        async def test_unmarked():
            pass
    """)
    r = inner()
    # pytest's own verdict for an async test nobody runs (skipped or failed
    # depending on the pytest version), never "passed"
    assert r.parseoutcomes().get("passed", 0) == 0


def test_auto_mode_runs_every_unclaimed_async_test(pytester, inner):
    pytester.makeini("""
        [pytest]
        osvrt_async = auto
        osvrt_cpus = 1
    """)
    pytester.makepyfile(test_it="""
        import osvrt

        async def test_unmarked():
            await osvrt.sleep(0)
            assert osvrt.current().name == "test_unmarked"
    """)
    inner().assert_outcomes(passed=1)


def test_a_bad_mode_is_a_usage_error(pytester, inner):
    pytester.makeini("""
        [pytest]
        osvrt_async = sometimes
    """)
    pytester.makepyfile(test_it="""
        async def test_x():
            pass
    """)
    r = inner()
    assert r.ret != 0
    assert "osvrt_async = 'sometimes'" in r.stdout.str() + r.stderr.str()
