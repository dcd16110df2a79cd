"""A selection of CPython's own test_asyncio, run against osvrt's loop.

    python tests/peers/run_cpython_asyncio.py            # counts and osvrt-only failures
    python tests/peers/run_cpython_asyncio.py -v         # every test's outcome

test_asyncio's loop tests are mixins with a create_event_loop() method (the
way uvloop's tests/ reuse them): here each selected mixin is run twice in
one process, once with asyncio's own epoll SelectorEventLoop (the reference)
and once with osvrt.new_event_loop, and the score is how many of the tests
that pass on the reference pass on osvrt.  Selected: test_events (callbacks,
timers, TCP/Unix/UDP, pipes, ptys, subprocesses, signals), test_sock_lowlevel
(sock_* methods) and test_sendfile; and, run with an event loop policy whose
new_event_loop() is the loop under test, test_subprocess (threaded and pidfd
child watchers) and test_streams.

Needs the interpreter's `test` package (python3-test / libpython3.X-testsuite
on Debian; pyenv and python.org builds have it): without it this prints why
and exits 0 with nothing run.  The run is bounded: faulthandler ends it,
with every thread's stack, after --timeout seconds.
"""
import argparse
import asyncio
import faulthandler
import selectors
import sys
import time
import unittest

MODULES = {
    "test_events": ["UnixEventLoopTestsMixin", "SubprocessTestsMixin"],
    "test_sock_lowlevel": ["BaseSockTestsMixin"],
    "test_sendfile": ["SendfileTestsBase"],
}
# Test classes that make their loop with the event loop policy's
# new_event_loop(): run with a policy whose loop is the one under test.
POLICY_CLASSES = {
    "test_subprocess": ["SubprocessThreadedWatcherTests", "SubprocessPidfdWatcherTests"],
    "test_streams": ["StreamTests"],
}


def load():
    try:
        from test.test_asyncio import utils as test_utils
    except ImportError as e:
        return None, f"no `test` package in this interpreter ({e})"
    mods = {}
    for name in [*MODULES, *POLICY_CLASSES]:
        mods[name] = __import__(f"test.test_asyncio.{name}", fromlist=["x"])
    return (test_utils, mods), None


def make_cases(test_utils, mods, factory, tag):
    import osvrt  # noqa: F401  (imported before the tests, as a user would)
    cases = []
    for name, mixins in MODULES.items():
        bases = tuple(getattr(mods[name], m) for m in mixins)
        cls = type(f"{tag}_{name}", bases + (test_utils.TestCase,),
                   {"create_event_loop": lambda self: factory(),
                    "__module__": __name__})
        cases.append(cls)
    policy = _policy_for(factory)
    for name, classes in POLICY_CLASSES.items():
        for cname in classes:
            orig = getattr(mods[name], cname, None)
            if orig is None:                # not in this Python version
                continue
            cases.append(type(f"{tag}_{name}.{cname}", (orig,), {
                "setUp": _with_policy(orig.setUp, policy),
                "tearDown": _without_policy(orig.tearDown),
                "__module__": __name__}))
    return cases


def _policy_for(factory):
    class Policy(asyncio.DefaultEventLoopPolicy):
        _loop_factory = staticmethod(factory)
    return Policy


def _with_policy(setup, policy):
    def setUp(self):
        asyncio.set_event_loop_policy(policy())
        setup(self)
    return setUp


def _without_policy(teardown):
    def tearDown(self):
        try:
            teardown(self)
        finally:
            asyncio.set_event_loop_policy(None)
    return tearDown


class _Outcomes(unittest.TestResult):
    """Records each test's outcome by id (class fixtures run as in unittest)."""

    def __init__(self, verbose):
        super().__init__()
        self.outcomes, self.verbose = {}, verbose

    def _note(self, test, what):
        tid = test.id().split(".", 1)[1]
        self.outcomes[tid] = what
        if self.verbose:
            print(f"{what:8s} {tid}", flush=True)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._note(test, "passed")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._note(test, "failed")

    def addError(self, test, err):
        super().addError(test, err)
        if isinstance(test, unittest.TestCase):      # not a class fixture's error
            self._note(test, "failed")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._note(test, "skipped")

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._note(test, "skipped")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._note(test, "failed")


def run(cases, verbose):
    loader = unittest.TestLoader()
    suite = unittest.TestSuite(loader.loadTestsFromTestCase(c) for c in cases)
    result = _Outcomes(verbose)
    suite.run(result)
    return result.outcomes, result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--timeout", type=float, default=900, help="seconds for the whole run")
    args = ap.parse_args(argv)
    loaded, why = load()
    if loaded is None:
        print(f"run_cpython_asyncio: skipped: {why}")
        return 0
    test_utils, mods = loaded
    import osvrt
    faulthandler.dump_traceback_later(args.timeout, exit=True)
    t0 = time.monotonic()
    ref_cases = make_cases(test_utils, mods,
                           lambda: asyncio.SelectorEventLoop(selectors.EpollSelector()), "asyncio")
    our_cases = make_cases(test_utils, mods, osvrt.new_event_loop, "osvrt")
    # Alternate class by class, so both loops see the same host conditions.
    ref, ours, ours_result = {}, {}, None
    for rc, oc in zip(ref_cases, our_cases):
        r, _ = run([rc], args.verbose)
        o, ours_result_part = run([oc], args.verbose)
        ref.update(r)
        ours.update(o)
        if ours_result is None:
            ours_result = ours_result_part
        else:
            ours_result.failures += ours_result_part.failures
            ours_result.errors += ours_result_part.errors
    faulthandler.cancel_dump_traceback_later()
    strip = lambda tid: tid.split("_", 1)[1]       # "osvrt_test_events.Class..." -> "test_events..."  # noqa: E731
    ref = {strip(k): v for k, v in ref.items()}
    ours = {strip(k): v for k, v in ours.items()}
    ref_pass = [k for k, v in ref.items() if v == "passed"]
    both = [k for k in ref_pass if ours.get(k) == "passed"]
    count = lambda d, o: sum(1 for v in d.values() if v == o)  # noqa: E731
    print(f"\nCPython {sys.version.split()[0]} test_asyncio selection "
          f"({', '.join([*MODULES, *POLICY_CLASSES])}), "
          f"{time.monotonic() - t0:.0f} s")
    for name, d in (("asyncio", ref), ("osvrt", ours)):
        print(f"  {name:8s} passed {count(d, 'passed'):4d}  failed {count(d, 'failed'):4d}  "
              f"skipped {count(d, 'skipped'):4d}")
    print(f"  of the {len(ref_pass)} tests that pass on asyncio's own loop, {len(both)} pass on "
          f"osvrt: {100 * len(both) / max(1, len(ref_pass)):.1f}%")
    for k in sorted(set(ref_pass) - set(both)):
        print(f"  fails on osvrt only: {k}")
    if args.verbose and ours_result is not None:
        for test, tb in ours_result.failures + ours_result.errors:
            print(f"---- {test.id()}\n{tb}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
