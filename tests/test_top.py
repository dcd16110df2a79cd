"""The stats file and `python -m osvrt top`."""
import os
import pty
import re
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import osvrt
from osvrt.observe import top

from support import run

BUSY = textwrap.dedent("""
    import sys, time
    import osvrt

    async def main(seconds, cpu_a, cpu_b):
        ping, pong = osvrt.Event(), osvrt.Event()
        end = time.monotonic() + seconds

        async def a():
            while time.monotonic() < end:
                ping.set()
                await pong.wait()
                pong.clear()
            ping.set()

        async def b():
            while time.monotonic() < end:
                await ping.wait()
                ping.clear()
                pong.set()

        tb = osvrt.spawn(b, cpu=cpu_b, name="pong-side")
        ta = osvrt.spawn(a, cpu=cpu_a, name="ping-side")
        print("ready", flush=True)
        await ta.join()
        await tb.join()

    osvrt.run(main, float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), cpus=2)
""")

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")


@pytest.fixture
def busy_program(tmp_path, two_cpus):
    script = tmp_path / "busy.py"
    script.write_text(BUSY)
    p = subprocess.Popen([sys.executable, str(script), "20", str(two_cpus[0]), str(two_cpus[1])],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        yield p
    finally:
        p.kill()
        p.wait(10)
        top.find(p.pid, clean=True)       # a killed program leaves its file: clean it


def _own_files():
    # only this process's files: other programs (other test runs) share the directory
    return {f for f in os.listdir(top.stats_dir()) if f.startswith(f"osvrt-{os.getpid()}-")}


def test_start_stop_leaves_no_file(tmp_path):
    before = _own_files()
    rt = osvrt.Runtime(cpus=1)
    rt.start()
    path = rt.stats_path
    assert path is not None and os.path.exists(path)
    snap = top.read_file(path)
    assert snap["pid"] == os.getpid() and snap["alive"] and snap["ncpu"] == 1
    assert snap["cpus"][0]["cpu"] == rt.cpus[0]
    rt.stop(timeout=5)
    assert not os.path.exists(path) and rt.stats_path is None
    assert _own_files() - before == set()


def test_counters_live_in_the_file_and_carry_over(make_rt):
    async def hop():
        for _ in range(50):
            await osvrt.sleep(0)

    rt = make_rt(cpus=1)
    run(rt, hop)
    w = rt._workers[0]
    snap = top.read_file(rt.stats_path)
    assert snap["cpus"][0]["switches"] == w.switches > 0
    rt.stop(timeout=5)
    assert w.switches >= snap["cpus"][0]["switches"]      # carried back to its own memory


def test_stats_file_opt_out():
    before = _own_files()
    with osvrt.Runtime(cpus=1, stats_file=False) as rt:
        assert rt.stats_path is None
        assert _own_files() == before
    with pytest.raises(TypeError, match="stats_file"):
        osvrt.Runtime(stats_file="yes")


def test_busiest_threads_published(make_rt):
    async def hog():
        end = time.monotonic() + 0.8
        while time.monotonic() < end:
            for _ in range(1000):
                pass
            await osvrt.yield_now()

    rt = make_rt(cpus=1)
    fut = rt.submit(hog, name="hog-" + "x" * 60)
    deadline = time.monotonic() + 5
    threads = []
    while time.monotonic() < deadline and not threads:
        time.sleep(0.1)
        threads = top.read_file(rt.stats_path)["threads"]
    fut.result(10)
    assert threads, "no busiest threads published"
    first = threads[0]
    assert first["name"] == ("hog-" + "x" * 60)[:31] and first["runtime"] > 0
    assert first["cpu"] == rt.cpus[0]


def test_dead_process_file_ignored_and_cleaned(tmp_path):
    code = ("import os, osvrt; rt = osvrt.Runtime(cpus=1); rt.start(); "
            "print(rt.stats_path, flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                         timeout=30)
    path = out.stdout.strip()
    assert path and os.path.exists(path), out.stderr   # os._exit: no cleanup ran
    pid = int(re.search(r"osvrt-(\d+)-", path).group(1))
    assert top.find(pid) == []
    assert not os.path.exists(path)


def test_exit_without_stop_removes_file():
    code = ("import osvrt; rt = osvrt.Runtime(cpus=1); rt.start(); "
            "print(rt.stats_path, flush=True)")
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                         timeout=30)
    path = out.stdout.strip()
    assert path and not os.path.exists(path)


def _parse_once(text):
    rows = {}
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["CPU", "SWITCH/S"])
    cols = lines[head].split()
    for line in lines[head + 1:]:
        if not line.strip():
            break
        vals = dict(zip(cols, line.split()))
        rows[int(vals["CPU"])] = vals
    return rows, text


def test_top_once(busy_program, two_cpus):
    out = subprocess.run([sys.executable, "-P", "-m", "osvrt", "top", str(busy_program.pid),
                          "--once", "--interval", "0.5"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    rows, text = _parse_once(out.stdout)
    assert set(rows) == set(two_cpus)
    assert all(float(r["SWITCH/S"]) > 0 for r in rows.values()), text
    assert all(0 <= float(r["IDLE%"]) <= 100 for r in rows.values())
    assert sum(int(r["WAKE-R"]) for r in rows.values()) > 0
    assert "ping-side" in text and "pong-side" in text


def test_top_without_pid_finds_the_program(busy_program, two_cpus):
    if any(s["pid"] != busy_program.pid for s in top.find()):
        pytest.skip("another osvrt program runs on this host")
    out = subprocess.run([sys.executable, "-P", "-m", "osvrt", "top", "--once", "--interval", "0.3"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert f"pid {busy_program.pid}" in out.stdout


def test_top_unknown_pid():
    out = subprocess.run([sys.executable, "-P", "-m", "osvrt", "top", "999999999", "--once"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no running osvrt runtime" in out.stderr


def test_top_live_screen_under_a_pty(busy_program, two_cpus):
    pid, fd = pty.fork()
    if pid == 0:                                     # the child: top on a terminal
        try:
            os.environ["COLUMNS"], os.environ["LINES"] = "120", "40"
            os.execv(sys.executable, [sys.executable, "-P", "-m", "osvrt", "top",
                                      str(busy_program.pid), "--interval", "0.3"])
        finally:
            os._exit(127)
    screen = ""
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                screen += chunk.decode("utf-8", "replace")
            text = _ANSI.sub("", screen)
            found = {}
            for line in text.splitlines():
                cells = [c for c in re.split(r"[\s│┃|]+", line) if c]
                if len(cells) >= 3 and cells[0].isdigit() and int(cells[0]) in two_cpus:
                    try:
                        found[int(cells[0])] = float(cells[1])
                    except ValueError:
                        pass
            if set(found) == set(two_cpus) and all(v > 0 for v in found.values()):
                break
        else:
            pytest.fail(f"top's screen never showed both CPUs switching:\n{_ANSI.sub('', screen)}")
        assert "SWITCH/S" in text
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        os.close(fd)


@pytest.mark.parametrize("interval", ["inf", "1e300", "nan"])
def test_top_names_an_interval_it_cannot_sleep(busy_program, interval):
    # inf passed the "> 0" check and ended in time.sleep's OverflowError traceback.
    out = subprocess.run([sys.executable, "-P", "-m", "osvrt", "top", str(busy_program.pid),
                          "--once", "--interval", interval], capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode != 0
    assert "--interval" in out.stderr and "Traceback" not in out.stderr, out.stderr[-800:]
