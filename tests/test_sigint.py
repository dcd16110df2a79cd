"""Ctrl-C during osvrt.run(): main is cancelled, its cleanup runs, the runtime
stops (no worker OS thread left), and KeyboardInterrupt reaches the caller."""
import os
import signal
import subprocess
import sys
import textwrap
import time

CHILD = textwrap.dedent("""
    import sys, threading, osvrt
    async def main():
        try:
            print("ready", flush=True)
            await osvrt.sleep(60)
        finally:
            print("cleanup ran", flush=True)
    try:
        osvrt.run(main, cpus=2)
    except KeyboardInterrupt:
        left = [t.name for t in threading.enumerate() if t.name.startswith("osvrt-cpu")]
        print("KeyboardInterrupt; workers left:", left, flush=True)
        sys.exit(3)
    print("returned normally", flush=True)
""")


def test_ctrl_c_cancels_main_and_shuts_down(tmp_path):
    # cwd: not the repository root, whose osvrt/ source tree (no built _core)
    # would shadow the installed package for `python -c`.
    p = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.1)
        os.kill(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 3, (out, err)
    assert "cleanup ran" in out
    assert "KeyboardInterrupt; workers left: []" in out


def test_ctrl_c_never_leaves_a_worker_stuck_on_mains_future(tmp_path):
    """osvrt.run waited for main with concurrent.futures.wait: a Ctrl-C that
    landed while the main thread held the Future's condition lock (Python
    code) left it held, and the worker settling the Future blocked on it for
    good ("worker for CPU n is stuck", 1 Ctrl-C in 10).  Thirty tries, each
    with the interrupt at a slightly different moment."""
    bad = []
    for i in range(30):
        p = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        try:
            assert p.stdout.readline().strip() == "ready"
            time.sleep(0.05 + 0.004 * i)
            os.kill(p.pid, signal.SIGINT)
            out, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
        if p.returncode != 3 or "workers left: []" not in out:
            bad.append((i, p.returncode, out[-200:], err[-300:]))
    assert bad == []
