"""SIGTERM during osvrt.run(): main is cancelled, every green thread's cleanup
runs, the runtime stops and run() raises SystemExit(143); handle_signals=False
opts out.  And run()'s check of its runtime options."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import osvrt

CHILD = textwrap.dedent("""
    import signal, sys, threading, osvrt

    async def helper():
        try:
            await osvrt.sleep(60)
        finally:
            print("helper cleanup ran", flush=True)

    async def main():
        osvrt.spawn(helper, cpu=osvrt.current().cpu)
        try:
            print("ready", flush=True)
            await osvrt.sleep(60)
        finally:
            print("main cleanup ran", flush=True)
            if STUCK:
                await osvrt.sleep(60)          # a cleanup that never ends
        return "returned"

    STUCK = "stuck" in sys.argv
    opts = {} if "optout" not in sys.argv else {"handle_signals": False}
    try:
        print(osvrt.run(main, cpus=2, **opts), flush=True)
    except SystemExit as e:
        left = [t.name for t in threading.enumerate() if t.name.startswith("osvrt-cpu")]
        restored = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        print(f"SystemExit {e.code}; workers left: {left}; handler restored: {restored}",
              flush=True)
        raise
""")


def _start(*argv):
    # -P: do not put the current directory first on sys.path, where a source
    # tree without the built extension could shadow the installed package.
    return subprocess.Popen([sys.executable, "-P", "-c", CHILD, *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _signal_when_ready(p, *signals):
    try:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        time.sleep(0.1)
        for sig in signals:
            os.kill(p.pid, sig)
            time.sleep(0.3)
        return p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_sigterm_cancels_main_runs_cleanup_and_exits_143():
    p = _start()
    out, err = _signal_when_ready(p, signal.SIGTERM)
    assert p.returncode == 143, (out, err)
    assert "main cleanup ran" in out
    assert "helper cleanup ran" in out
    assert "SystemExit 143; workers left: []; handler restored: True" in out, (out, err)
    assert "returned" not in out.splitlines()          # main did not finish normally


def test_a_second_sigterm_ends_a_stuck_cleanup():
    p = _start("stuck")
    out, err = _signal_when_ready(p, signal.SIGTERM, signal.SIGTERM)
    assert "main cleanup ran" in out
    assert p.returncode == -signal.SIGTERM, (out, err)


def test_handle_signals_false_leaves_sigterm_alone():
    p = _start("optout")
    out, err = _signal_when_ready(p, signal.SIGTERM)
    assert p.returncode == -signal.SIGTERM, (out, err)    # Python's default: killed at once
    assert "cleanup ran" not in out


def _sigterm_during(**opts):
    async def main():
        return signal.getsignal(signal.SIGTERM)
    return osvrt.run(main, cpus=1, **opts)


@pytest.fixture
def default_sigterm():
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("this test runner changed SIGTERM's handler")
    yield
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL    # restored


def test_handler_installed_only_while_run_runs(default_sigterm):
    during = _sigterm_during()
    assert during is not signal.SIG_DFL and callable(during)
    assert _sigterm_during(handle_signals=False) is signal.SIG_DFL


def test_a_handler_the_program_installed_is_respected():
    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        assert _sigterm_during() is mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_run_outside_the_main_thread_installs_nothing(default_sigterm):
    got = []
    th = threading.Thread(target=lambda: got.append(_sigterm_during()))
    th.start()
    th.join(30)
    assert got == [signal.SIG_DFL]


def test_unknown_runtime_option_is_named(worker_threads):
    async def main():
        return 1

    with pytest.raises(TypeError) as ei:
        osvrt.run(main, cpus=1, balance_intervall=0.01)
    msg = str(ei.value)
    assert "osvrt.run()" in msg and "'balance_intervall'" in msg
    assert "balance_interval" in msg and "handle_signals" in msg and "pin" in msg
    assert "__init__" not in msg
    assert worker_threads() == []              # refused before any worker started


def test_handle_signals_must_be_a_bool():
    async def main():
        return 1

    with pytest.raises(TypeError, match="handle_signals must be True or False, not 'no'"):
        osvrt.run(main, cpus=1, handle_signals="no")


def test_valid_runtime_options_still_work():
    async def main(x):
        return x * 2

    assert osvrt.run(main, 21, cpus=1, pin=False, balance=False, stall_threshold=None) == 42
