"""anyio's own test suite as a check of osvrt's asyncio loop.

    python tests/peers/run_anyio.py                 # both loops, one pytest run
    python tests/peers/run_anyio.py --min-ratio 0.95   # exit 1 below the target
    python tests/peers/run_anyio.py -- -x tests/test_taskgroups.py   # extra pytest args

It fetches anyio's sdist (pinned, `pip download --no-binary :all: --no-deps`)
into build/peer-suites/, and runs its tests/ with the asyncio backend
parametrized twice, exactly as anyio's conftest parametrizes uvloop:
("asyncio", {"debug": True, "loop_factory": uvloop.new_event_loop}) and the
same with osvrt.new_event_loop.  Both run in ONE pytest process, alternating
test by test, so the ratio compares the two loops on one machine, same run.
Only the tests parametrized by those two backends are counted; anyio's tests
of its other backends (plain asyncio, trio) are deselected.

The score: of the tests that pass with uvloop, how many pass with osvrt.
Every test has a timeout (pytest-timeout, --timeout seconds, default 20 as
in anyio's own configuration), so a hang is a failure, never a stuck CI.

The installed anyio must be the pinned version (the tests are that version's);
the test needs are osvrt's `peersuite` extra (setup.py).
"""
import argparse
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET

ANYIO_VERSION = "4.16.0"
ROOT = pathlib.Path(__file__).resolve().parents[2]

# Appended to anyio's tests/conftest.py: a later definition of the fixture in
# the same module replaces anyio's own.  The uvloop entry is anyio's own
# parameter (its marks skip it when uvloop is missing).
_OVERRIDE = '''

# ---- added by osvrt's tests/peers/run_anyio.py --------------------------------
import osvrt as _osvrt

import os as _os
_debug = _os.environ.get("OSVRT_ANYIO_DEBUG", "1") == "1"
_osvrt_params = [
    pytest.param(("asyncio", {"debug": _debug, "loop_factory": uvloop.new_event_loop}),
                 marks=uvloop_marks, id="asyncio+uvloop"),
    pytest.param(("asyncio", {"debug": _debug, "loop_factory": _osvrt.new_event_loop}),
                 id="asyncio+osvrt"),
]
if _os.environ.get("OSVRT_ANYIO_BACKEND") == "1":
    # osvrt's anyio backend by its own name (osvrt.anyio), beside the loops
    import osvrt.anyio  # noqa: F401
    _osvrt_params.append(pytest.param(("osvrt", {"debug": _debug}), id="osvrt-backend"))
# Tests that parametrize with `from .conftest import asyncio_params` hold these
# very lists: change them in place.
asyncio_params[:] = _osvrt_params
backend_params[:] = _osvrt_params


@pytest.fixture(params=_osvrt_params)
def anyio_backend(request):
    return request.param


# A test or fixture that fails half-way leaves what it made to its error's
# frames: on this machine kind "localhost" has no IPv6 address, so anyio's
# IPv6 tests fail with a bound socket in a local, and that socket's
# ResourceWarning then fails whichever later test the next collection falls
# in, on any loop (an "osvrt only" failure in some runs, a "uvloop only" one in
# others).  Clearing the error's frames as the failed test is torn down closes
# such a socket there, and its warning lands on the test that leaked it, which
# has already failed on every loop.
import gc as _gc


_TESTS_DIR = _os.path.dirname(_os.path.abspath(__file__)) + _os.sep


def _let_go(error):
    """Clear the frames of anyio's own test code that error and the errors
    chained to it passed through.  Only those: the chain also holds frames
    of anyio's runner and of asyncio, some of them suspended coroutines
    still at work (the test runner), which clearing would close."""
    todo, seen = [error], set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        tb = e.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if frame.f_code.co_filename.startswith(_TESTS_DIR):
                try:
                    frame.clear()
                except RuntimeError:     # still running
                    pass
                # 3.11's frame keeps the dict its f_locals made (pytest reads
                # it for __tracebackhide__): read again, it drops the names
                frame.f_locals
            tb = tb.tb_next
        todo.extend(getattr(e, "exceptions", ()))
        todo.extend((e.__cause__, e.__context__))
    _gc.collect()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    # failed, xfailed or skipped: any error left behind may hold what it made
    if report.when in ("setup", "call") and call.excinfo is not None:
        item._osvrt_failure = call.excinfo.value
    return report


def pytest_runtest_teardown(item, nextitem):
    # called before pytest's own teardown, and so before the warnings it
    # finds in the teardown are reported
    error = item.__dict__.pop("_osvrt_failure", None)
    if error is not None:
        _let_go(error)
    _join_stopping_workers()


import threading as _threading
import time as _time


def _join_stopping_workers(limit=2.0):
    """Wait (at most `limit` s in all) for anyio worker threads already told
    to stop.  anyio stops its worker threads when the run's root task ends,
    without joining them; one still inside an abandoned call (test_asyncio_
    cancel_native_task's time.sleep(0.2)) lives on into the tests after it,
    and TestBlockingPortalProvider::test_single_thread, which compares
    threading.active_count() before and after, fails whenever that thread
    ends during it: on whichever loop runs last, depending only on how long
    the tests in between took.  Joined here, the thread ends in the test
    that started it."""
    deadline = _time.monotonic() + limit
    for t in _threading.enumerate():
        if t.name == "AnyIO worker thread" and getattr(t, "stopping", False):
            t.join(max(0.0, deadline - _time.monotonic()))


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        if any(k in item.name for k in ("asyncio+uvloop", "asyncio+osvrt", "osvrt-backend")):
            keep.append(item)
        else:
            drop.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep
'''


def fetch(workdir):
    """The extracted sdist's directory (downloaded and patched once)."""
    src = workdir / f"anyio-{ANYIO_VERSION}"
    marker = src / "tests" / ".osvrt-patched"
    # the marker holds a digest of _OVERRIDE: an older patch is redone
    digest = hashlib.sha256(_OVERRIDE.encode()).hexdigest()
    if marker.exists() and marker.read_text() == digest:
        return src
    if src.exists():
        shutil.rmtree(src)
    workdir.mkdir(parents=True, exist_ok=True)
    sdist = workdir / f"anyio-{ANYIO_VERSION}.tar.gz"
    if not sdist.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:",
                        "--no-deps", f"anyio=={ANYIO_VERSION}", "-d", str(workdir)], check=True)
    with tarfile.open(sdist) as tf:
        tf.extractall(workdir, filter="data")        # no absolute paths, no links out
    conftest = src / "tests" / "conftest.py"
    with open(conftest, "a") as f:
        f.write(_OVERRIDE)
    marker.write_text(digest)
    return src


def check_installed():
    import anyio  # noqa: F401
    from importlib.metadata import version
    have = version("anyio")
    if have != ANYIO_VERSION:
        sys.exit(f"run_anyio: the installed anyio is {have}, the suite is {ANYIO_VERSION}: "
                 f"pip install anyio=={ANYIO_VERSION}")


def outcomes(junit):
    """{test id: 'passed' | 'failed' | 'skipped'} from pytest's junit XML."""
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        tags = {child.tag for child in case}
        if "failure" in tags or "error" in tags:
            result[name] = "failed"
        elif "skipped" in tags:
            result[name] = "skipped"
        else:
            result[name] = "passed"
    return result


def score(results, ours_id="asyncio+osvrt"):
    """Of the tests that pass on uvloop, which pass as `ours_id` (the osvrt
    loop under the asyncio backend, or osvrt's own backend)."""
    def twin(k, a, b):
        return k.replace(a, b)
    uv = {k: v for k, v in results.items() if "asyncio+uvloop" in k}
    ours = {k: v for k, v in results.items() if ours_id in k}
    uv_pass = [k for k, v in uv.items() if v == "passed"]
    both = [k for k in uv_pass if ours.get(twin(k, "asyncio+uvloop", ours_id)) == "passed"]
    lost = sorted(twin(k, "asyncio+uvloop", ours_id) for k in uv_pass if k not in both)
    gained = sorted(k for k, v in ours.items()
                    if v == "passed" and uv.get(twin(k, ours_id, "asyncio+uvloop")) != "passed")
    count = lambda d, o: sum(1 for v in d.values() if v == o)
    return {
        "uvloop": {o: count(uv, o) for o in ("passed", "failed", "skipped")},
        "osvrt": {o: count(ours, o) for o in ("passed", "failed", "skipped")},
        "uvloop_passed": len(uv_pass), "osvrt_of_those": len(both),
        "ratio": len(both) / len(uv_pass) if uv_pass else 0.0,
        "lost": lost, "gained": gained,
    }


def report(s, label):
    for name, key in (("uvloop", "uvloop"), (label, "osvrt")):
        c = s[key]
        print(f"  {name:13s} passed {c['passed']:4d}  failed {c['failed']:4d}  "
              f"skipped {c['skipped']:4d}")
    print(f"  of the {s['uvloop_passed']} tests that pass on uvloop, {s['osvrt_of_those']} pass "
          f"on {label}: {100 * s['ratio']:.1f}%")
    for k in s["lost"]:
        print(f"  fails on {label} only: {k}")
    for k in s["gained"]:
        print(f"  passes on {label} only: {k}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=str(ROOT / "build" / "peer-suites"))
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per test")
    ap.add_argument("--no-debug", action="store_true",
                    help="run both loops with debug=False (anyio's conftest uses debug=True; "
                         "osvrt's loop has its own turn only outside debug mode)")
    ap.add_argument("--min-ratio", type=float, default=None,
                    help="exit 1 when osvrt passes fewer than this share of uvloop's passes")
    ap.add_argument("--osvrt-backend", action="store_true",
                    help="also run every test with anyio_backend='osvrt' (osvrt.anyio: "
                         "osvrt's loop under anyio's asyncio backend, named osvrt), "
                         "scored the same way")
    ap.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments")
    args = ap.parse_args(argv)
    check_installed()
    src = fetch(pathlib.Path(args.workdir))
    junit = pathlib.Path(args.workdir) / "anyio-junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:osvrt",
           f"--timeout={args.timeout:g}", f"--junitxml={junit}", "-o", "junit_family=xunit1",
           *(args.pytest_args or ["tests"])]
    t0 = time.monotonic()
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1",
               OSVRT_ANYIO_DEBUG="0" if args.no_debug else "1",
               OSVRT_ANYIO_BACKEND="1" if args.osvrt_backend else "0")
    proc = subprocess.run(cmd, cwd=src, env=env)
    took = time.monotonic() - t0
    if not junit.exists():
        sys.exit(f"run_anyio: pytest wrote no report (exit status {proc.returncode})")
    results = outcomes(junit)
    s = score(results)
    print(f"\nanyio {ANYIO_VERSION} suite, asyncio backend (debug={not args.no_debug}), "
          f"{took:.0f} s")
    report(s, "osvrt")
    ratios = [s["ratio"]]
    if args.osvrt_backend:
        b = score(results, "osvrt-backend")
        print("anyio_backend='osvrt' (osvrt.anyio), same run:")
        report(b, "osvrt-backend")
        ratios.append(b["ratio"])
    if args.min_ratio is not None and min(ratios) < args.min_ratio:
        print(f"run_anyio: {100 * min(ratios):.1f}% is below the target "
              f"{100 * args.min_ratio:.1f}%")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
