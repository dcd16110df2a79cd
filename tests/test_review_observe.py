"""The observability review's findings: `osvrt top` and stale, foreign,
unreadable or oversized stats files, the PID prompt and a closed pipe; a
fork() right after start() or from a green thread; stall_threshold's bounds
and a failing watchdog; a trace file name near NAME_MAX.

Planted stats files live in a directory of the test's own (stats_dir), never
in /dev/shm, where other programs' `top` would see them."""
import builtins
import itertools
import logging
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest

import osvrt
import osvrt.__main__ as cli
from osvrt import asyncio_guard
from osvrt.observe import statsfile, top
from osvrt.observe.stall import StallWatchdog

from support import run

PID_AT = 16                                   # header.pid
PID_NS_AT = statsfile.HEADER.size - 8         # the header's last word: the writer's pid namespace

# A program that makes its stats file in argv[1] and ends without cleanup,
# as a crash or a kill -9 would.
ENDED_WRITER = textwrap.dedent("""
    import os, sys
    import osvrt.observe.statsfile as statsfile
    statsfile.stats_dir = lambda: sys.argv[1]
    import osvrt
    rt = osvrt.Runtime(cpus=1, balance=False, stall_threshold=None).start()
    print(rt.stats_path, flush=True)
    os._exit(0)
""")


@pytest.fixture
def stats_dir(tmp_path, monkeypatch):
    d = tmp_path / "shm"
    d.mkdir()
    monkeypatch.setattr(top, "stats_dir", lambda: str(d))
    monkeypatch.setattr(statsfile, "stats_dir", lambda: str(d))
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def _ended_writers_file(d):
    """(path, contents, pid) of the stats file a process that has ended left in d."""
    p = subprocess.run([sys.executable, "-P", "-c", ENDED_WRITER, str(d)],
                       capture_output=True, text=True, timeout=60)
    path = p.stdout.strip()
    assert p.returncode == 0 and path, p.stderr
    pid = int(os.path.basename(path).split("-")[1])
    with open(path, "rb") as f:
        return path, bytearray(f.read()), pid


def _plant(path, contents):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, bytes(contents))
    finally:
        os.close(fd)


# ---- item 1: the writer is told by its start time and pid namespace ---------------

def test_top_deletes_a_file_whose_pid_another_process_reused(stats_dir, tmp_path):
    ended = tmp_path / "ended"
    ended.mkdir()
    path, contents, _ = _ended_writers_file(ended)
    holder = subprocess.Popen(["sleep", "60"])      # the process that got the pid
    try:
        struct.pack_into("=Q", contents, PID_AT, holder.pid)
        reused = stats_dir / f"osvrt-{holder.pid}-0.stats"
        _plant(reused, contents)
        assert top.find(holder.pid) == []
        assert not reused.exists()
    finally:
        holder.kill()
        holder.wait()


def test_top_leaves_a_file_of_another_pid_namespace_alone(stats_dir):
    path, contents, pid = _ended_writers_file(stats_dir)
    os.unlink(path)
    # Its pid is gone here, which in another namespace says nothing of its writer.
    struct.pack_into("=Q", contents, PID_NS_AT, os.stat("/proc/self/ns/pid").st_ino + 1)
    _plant(path, contents)
    problems = {}
    assert top.find(pid, problems=problems) == []
    assert os.path.exists(path)
    assert "another pid namespace" in problems[path]


def test_a_new_stats_file_removes_a_stale_one_of_its_own_pid(tmp_path):
    ended = tmp_path / "ended"
    ended.mkdir()
    src, _, _ = _ended_writers_file(ended)
    d = tmp_path / "shm"
    d.mkdir()
    code = textwrap.dedent("""
        import os, struct, sys
        import osvrt.observe.statsfile as statsfile
        d = sys.argv[1]
        statsfile.stats_dir = lambda: d
        left = bytearray(open(sys.argv[2], "rb").read())
        struct.pack_into("=Q", left, 16, os.getpid())    # left by an ended process with our pid
        planted = os.path.join(d, f"osvrt-{os.getpid()}-0.stats")
        fd = os.open(planted, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, left)
        os.close(fd)
        import osvrt
        rt = osvrt.Runtime(cpus=1, balance=False, stall_threshold=None).start()
        # the stale file is gone, and ours has the next name (a `top` that
        # judged the stale one may still unlink its path)
        print(rt.stats_path != planted and not os.path.exists(planted))
        rt.stop()
        print(sorted(os.listdir(d)))
    """)
    p = subprocess.run([sys.executable, "-P", "-c", code, str(d), src],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[:2] == ["True", "[]"], p.stdout


# ---- item 2: a file `top` may not open ----------------------------------------------

def _fake_stats(path, pid, ncpu=1):
    buf = bytearray(statsfile.file_size(ncpu))
    top.HEADER.pack_into(buf, 0, top.MAGIC, top.VERSION, ncpu, pid, top.SLOT.size, 1,
                         top.HEADER.size + ncpu * top.SLOT.size, 0, 0)
    _plant(path, buf)


def test_top_leaves_out_a_file_it_may_not_open(stats_dir, monkeypatch):
    path = stats_dir / f"osvrt-{os.getpid()}-3.stats"
    _fake_stats(path, os.getpid())
    owner = os.geteuid()
    if owner == 0:
        os.chown(path, 65534, 65534)
        owner = 65534
    real_open = os.open

    def refusing_open(p, *a, **k):            # what a user without the right to read gets
        if os.fspath(p) == str(path):
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(p, *a, **k)

    monkeypatch.setattr(os, "open", refusing_open)
    problems = {}
    assert top.find(problems=problems) == []
    assert "Permission denied" in problems[str(path)]
    assert f"uid {owner}" in problems[str(path)]
    assert path.exists()


# ---- item 3: start() returns once the workers' imports are done -------------------

def test_start_returns_after_every_worker_installed_the_asyncio_guard(monkeypatch):
    returned = threading.Event()
    seen = []
    real_install = asyncio_guard.install

    def install():
        # Held open a moment: start() must not return while a worker is here
        # (a fork() then would copy the import lock it holds).
        seen.append(returned.wait(0.5))
        real_install()

    monkeypatch.setattr(asyncio_guard, "install", install)
    rt = osvrt.Runtime(cpus=1, balance=False, stall_threshold=None, stats_file=False)
    rt.start()
    returned.set()
    try:
        assert seen == [False]
    finally:
        rt.stop(timeout=5)


def test_a_worker_that_cannot_install_the_guard_fails_start(monkeypatch):
    # Its error reaches start() (before, the worker's thread died after
    # saying it was ready, and start() returned with a dead worker).
    def install():
        raise ImportError("no asyncio here")

    monkeypatch.setattr(asyncio_guard, "install", install)
    rt = osvrt.Runtime(cpus=1, balance=False, stall_threshold=None, stats_file=False)
    with pytest.raises(RuntimeError, match="could not start: ImportError"):
        rt.start()
    rt.stop(timeout=5)


# ---- item 4: fork() from a green thread -----------------------------------------------

def test_a_child_forked_in_a_green_thread_counts_nothing_in_the_parents_file(stats_dir):
    rt = osvrt.Runtime(cpus=1, balance=False, stall_threshold=None).start()
    try:
        path = rt.stats_path

        def spawned():
            return sum(c["spawned"] for c in top.read_file(path)["cpus"])

        async def nothing():
            pass

        async def fork_and_count():
            before = spawned()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    for _ in range(50):
                        await osvrt.spawn(nothing).join()
                    code = 0
                finally:
                    os._exit(code)
            deadline = time.monotonic() + 20       # a hang guard only
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    raise AssertionError("the forked child did not end")
                await osvrt.sleep(0.01)
            return before, spawned(), os.waitstatus_to_exitcode(status)

        before, after, code = run(rt, fork_and_count)
        assert code == 0
        assert after == before
    finally:
        rt.stop(timeout=5)


# ---- item 5: stall_threshold's bounds and a failing watchdog ------------------------

@pytest.mark.parametrize("value", [1e11, 86400.5, 1e-300, 0.0009])
def test_stall_threshold_out_of_bounds_is_refused(value):
    with pytest.raises(ValueError, match="stall_threshold") as e:
        osvrt.Runtime(cpus=1, stall_threshold=value)
    assert repr(value) in str(e.value)


def test_stall_threshold_takes_its_bounds_and_nothing_past_them():
    osvrt.Runtime(cpus=1, stall_threshold=0.001)
    osvrt.Runtime(cpus=1, stall_threshold=86400)
    with pytest.raises(ValueError, match="between 0.001 and 86400"):
        osvrt.Runtime(cpus=1, stall_threshold=86400.001)


class _BrokenWorker:
    @property
    def current(self):
        raise RuntimeError("broken worker")


def test_a_failing_stall_watchdog_is_logged(caplog):
    caplog.set_level(logging.ERROR, logger="osvrt")
    dog = StallWatchdog([_BrokenWorker()], 0.01)
    dog.start()
    dog._thread.join(10)                      # it ends at its first check
    alive = dog._thread.is_alive()
    dog.stop()
    assert not alive
    failed = [r for r in caplog.records if "stall watchdog failed" in r.getMessage()]
    assert failed and failed[0].exc_info[0] is RuntimeError


# ---- item 7: a trace file name near NAME_MAX -------------------------------------------

def test_a_trace_with_a_long_file_name_is_written(tmp_path):
    path = tmp_path / ("t" * 245 + ".json")
    rt = osvrt.Runtime(cpus=1, balance=False, stall_threshold=None, stats_file=False,
                       trace=path)
    rt.start()
    rt.stop(timeout=5)
    assert sorted(os.listdir(tmp_path)) == [path.name]


# ---- item 8: a file claiming more CPUs than the host has ------------------------------

def _host_cpus():
    n = os.cpu_count() or 1
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            n = max(n, max(int(p.split("-")[-1]) for p in f.read().strip().split(",")) + 1)
    except (OSError, ValueError):
        pass
    return n


def test_top_refuses_a_file_claiming_more_cpus_than_the_host_has(stats_dir):
    ncpu = _host_cpus() + 1
    if ncpu > top.MAX_CPUS:
        pytest.skip("this host has the most CPUs a stats file may have")
    path = stats_dir / f"osvrt-{os.getpid()}-4.stats"
    _fake_stats(path, os.getpid(), ncpu)
    with pytest.raises(top.NotAStatsFile, match=f"claims {ncpu} CPUs"):
        top.read_file(str(path))


# ---- items 9 and 10: the command line -----------------------------------------------------

class _Terminal:
    def isatty(self):
        return True


def test_end_of_input_at_the_pid_prompt_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setattr(top, "find", lambda *a, **k: [{"pid": 11}, {"pid": 12}])
    monkeypatch.setattr(sys, "stdin", _Terminal())

    def ctrl_d(prompt=""):
        raise EOFError

    monkeypatch.setattr(builtins, "input", ctrl_d)
    with pytest.raises(SystemExit) as e:
        cli.main(["top", "--once"])
    assert e.value.code == 2
    assert "no PID given" in capsys.readouterr().err


def test_top_into_a_closed_pipe_ends_quietly(make_rt):
    rt = make_rt(cpus=1, balance=False, stall_threshold=None)
    assert rt.stats_path is not None
    p = subprocess.Popen([sys.executable, "-P", "-m", "osvrt", "top", str(os.getpid()),
                          "--interval", "0.05", "--plain"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert p.stdout.readline().startswith(b"osvrt pid")
        p.stdout.close()                      # `| head -1`
        rc = p.wait(30)
        err = p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert rc == 141 and b"Traceback" not in err, err.decode(errors="replace")


# ---- the diff review's follow-ups ---------------------------------------------------

def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_version_1_file_of_a_dead_pid_is_still_deleted(stats_dir):
    # An earlier osvrt's file (no start time): the header check came first and
    # left it forever, listed as a problem on every run.
    pid = _dead_pid()
    path = stats_dir / f"osvrt-{pid}-0.stats"
    head = statsfile.HEADER.pack(statsfile.MAGIC, 1, 1, pid, statsfile.SLOT.size, 0,
                                 statsfile.HEADER.size + statsfile.SLOT.size, 0, 0)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, head)
    os.ftruncate(fd, statsfile.file_size(1))
    os.close(fd)
    problems = {}
    top.find(problems=problems)
    assert not path.exists() and not problems, problems


def test_top_deletes_only_the_stale_file_it_judged(stats_dir, monkeypatch):
    # The stale file of our own pid is judged ended; before top unlinks it a
    # new runtime of ours starts: its live file must survive (it took the
    # stale one's name, and top unlinked by path).
    n = next(statsfile._counter)
    monkeypatch.setattr(statsfile, "_counter", itertools.count(n))
    path = stats_dir / f"osvrt-{os.getpid()}-{n}.stats"
    head = statsfile.HEADER.pack(statsfile.MAGIC, statsfile.VERSION, 1, os.getpid(),
                                 statsfile.SLOT.size, 0,
                                 statsfile.HEADER.size + statsfile.SLOT.size,
                                 statsfile.process_start() - 1, statsfile.pid_namespace())
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, head)
    os.ftruncate(fd, statsfile.file_size(1))
    os.close(fd)
    real = top.read_file
    started = []

    def read_file(p, fp=None):
        try:
            return real(p, fp)
        except top.WriterEnded:
            if not started:                   # the new writer gets in here
                started.append(osvrt.Runtime(cpus=1, balance=False, stall_threshold=None).start())
            raise

    monkeypatch.setattr(top, "read_file", read_file)
    rt = None
    try:
        top.find(os.getpid())
        rt = started[0]
        assert os.path.exists(rt.stats_path)
        monkeypatch.setattr(top, "read_file", real)
        assert len(top.find(os.getpid())) == 1
    finally:
        if started:
            started[0].stop(timeout=5)
