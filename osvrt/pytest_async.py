"""`async def test_...` functions run as green threads of an osvrt Runtime
(part of the pytest plugin osvrt.pytest_plugin, which imports these hooks).

    @pytest.mark.osvrt(cpus=1, timeout=10)      # Runtime options, and a time limit
    async def test_echo():
        assert await osvrt.wait_for(echo(b"x"), 1) == b"x"

Which tests: in the default mode (ini `osvrt_async = strict`) the `async def`
tests marked @pytest.mark.osvrt (on the function, class or module:
`pytestmark = pytest.mark.osvrt`); with `osvrt_async = auto`, every `async
def` test that is not marked for another framework (asyncio, anyio, trio).
pytest-asyncio's two modes, with the same names.

Each test gets its own Runtime (options: the ini options osvrt_cpus and
osvrt_pin, then the marker's keywords; the closest marker wins), started
before the test and stopped after it with a bounded wait.  Fixtures are
ordinary (sync) pytest fixtures, passed by name as usual.  The marker's
`timeout` (seconds, default ini `osvrt_timeout`, 60) bounds the test: past
it the test's green thread is cancelled and the test fails with TimeoutError,
instead of hanging the session.
"""
import functools
import inspect

import pytest

OTHER_FRAMEWORKS = ("asyncio", "anyio", "trio")
DEFAULT_TIMEOUT = 60.0


def addoption(parser):
    parser.addini("osvrt_async", "which async def tests osvrt runs: strict (those marked "
                  "@pytest.mark.osvrt, the default) or auto (every async def test not marked "
                  "for asyncio, anyio or trio)", default="strict")
    parser.addini("osvrt_timeout", "seconds an async def test run by osvrt may take "
                  f"(default {DEFAULT_TIMEOUT:g}); the marker's timeout= overrides it",
                  default=str(DEFAULT_TIMEOUT))


def configure(config):
    _mode(config)                    # a bad ini value stops the session before any test


def _mode(config):
    mode = (config.getini("osvrt_async") or "strict").strip()
    if mode not in ("strict", "auto"):
        raise pytest.UsageError(f"osvrt_async = {mode!r}: give strict or auto")
    return mode


def _wanted(item):
    if item.get_closest_marker("osvrt") is not None:
        return True
    if _mode(item.config) != "auto":
        return False
    return not any(item.get_closest_marker(m) is not None for m in OTHER_FRAMEWORKS)


def _timeout(item):
    value = None
    for mark in reversed(list(item.iter_markers("osvrt"))):
        if "timeout" in mark.kwargs:
            value = mark.kwargs["timeout"]
    if value is None:
        text = item.config.getini("osvrt_timeout")
        try:
            value = float(text)
        except ValueError:
            raise pytest.UsageError(f"osvrt_timeout = {text!r}: give a number of seconds") \
                from None
    from .checks import check_timeout
    return check_timeout(value)      # TypeError/ValueError naming a bad marker value


def _parse_cpus(text):
    text = (text or "").strip()
    if not text:
        return None
    try:
        if "," in text:
            return tuple(int(x) for x in text.split(",") if x.strip())
        return int(text)
    except ValueError:
        raise pytest.UsageError(f"osvrt_cpus = {text!r}: give a count or CPU ids like 0,1") from None


def runtime_options(node, config):
    """The osvrt.Runtime options for a test: ini options, then its markers
    (the closest marker wins)."""
    opts = {"pin": bool(config.getini("osvrt_pin"))}
    cpus = _parse_cpus(config.getini("osvrt_cpus"))
    if cpus is not None:
        opts["cpus"] = cpus
    for mark in reversed(list(node.iter_markers("osvrt"))):
        if mark.args:
            raise pytest.UsageError(f"{node.nodeid}: @pytest.mark.osvrt takes keywords only "
                                    f"(cpus=..., pin=...), not {mark.args!r}")
        opts.update(mark.kwargs)
    opts.pop("timeout", None)        # the test's time limit (_timeout above), not a Runtime option
    return opts


def pyfunc_call(pyfuncitem):
    """Run an async def test in a Runtime; None for tests that are not ours."""
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn) or not _wanted(pyfuncitem):
        return None
    import osvrt
    opts = runtime_options(pyfuncitem, pyfuncitem.config)
    timeout = _timeout(pyfuncitem)
    args = {name: pyfuncitem.funcargs[name]
            for name in pyfuncitem._fixtureinfo.argnames}
    rt = osvrt.Runtime(**opts)
    rt.start()
    try:
        # named after the test, for threads(), traces and failure messages
        fut = rt.submit(functools.partial(fn, **args), name=fn.__name__)
        try:
            fut.result(timeout=timeout)
        except TimeoutError:
            if fut.done():
                raise                # the test's own TimeoutError
            fut.cancel()             # cancels the test's green thread
            raise TimeoutError(f"async test {pyfuncitem.nodeid} did not finish within "
                               f"timeout={timeout} s (@pytest.mark.osvrt(timeout=...) or "
                               f"ini osvrt_timeout); its green thread was cancelled") from None
    finally:
        rt.stop(timeout=5)
    return True
