"""The README's "Profiling with perf" recipes, run for real.

The C core carries USDT probes (provider osvrt, perf's sdt_osvrt:*): C probes
(wake, push, drain, kick, idle_enter, idle_exit) and the Python scheduler's
tracepoints (switch, spawn, exit, migrate) behind SDT semaphores.  These tests
list the probes, put uprobes on two of them (a C probe, wake, and a
semaphore-guarded one, switch), record a cross-CPU ping-pong and check with
perf script that both fired; and sample the same workload with perf record -g
and read it with perf report.

Skipped, saying why, where perf is missing, the extension has no SDT notes,
tracefs cannot be mounted, or perf is not permitted to add uprobes or record.
Probes this test adds are deleted afterwards; a lock file keeps two test runs
on one host from deleting each other's probes.
"""
import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys

import pytest

import osvrt
from osvrt import _core

PERF = shutil.which("perf")
SO = os.path.realpath(_core.__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(osvrt.__file__)))
LOCK = "/tmp/osvrt-perf-probes.lock"
PROBES = ("wake", "switch")          # a C probe and a semaphore-guarded tracepoint
ALL_PROBES = ("kick", "push", "drain", "idle_enter", "idle_exit", "wake",
              "switch", "spawn", "exit", "migrate")

# A cross-CPU ping-pong that lasts ~0.6 s: osvrt reads the SDT semaphores when
# a worker idles and every stall-watchdog period (50 ms), so the traced run
# must outlast a few of those.
WORKLOAD = """
import time, osvrt

async def pingpong(n):
    ping, pong = osvrt.Event(), osvrt.Event()
    async def a():
        for _ in range(n):
            ping.set(); await pong.wait(); pong.clear()
    async def b():
        for _ in range(n):
            await ping.wait(); ping.clear(); pong.set()
    tb, ta = osvrt.spawn(b, cpu=CPUS[1]), osvrt.spawn(a, cpu=CPUS[0])
    await ta.join(); await tb.join()

async def main():
    end = time.monotonic() + 0.6
    rounds = 0
    while time.monotonic() < end:
        await pingpong(500)
        await osvrt.sleep(0.005)
        rounds += 1
    return rounds

rt = osvrt.Runtime(cpus=2)
CPUS = rt.cpus
with rt:
    print("rounds", rt.run(main))
"""

pytestmark = [
    pytest.mark.skipif(PERF is None, reason="perf is not installed (apt-get install linux-perf)"),
    pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                       reason="the traced workload needs 2 CPUs"),
]


def perf(*args, timeout=120, check=False, cwd=None):
    p = subprocess.run([PERF, *args], capture_output=True, text=True, timeout=timeout,
                       env=_env(), cwd=cwd)
    if check and p.returncode != 0:
        pytest.fail(f"perf {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


def _not_permitted(text):
    return re.search(r"permission|not permitted|paranoid|EACCES|EPERM|Operation not",
                     text, re.I)


def _has_sdt_notes():
    with open(SO, "rb") as f:
        data = f.read()
    return b"stapsdt" in data and b"osvrt" in data


def _tracefs():
    """The uprobe_events file, mounting tracefs if needed; None if impossible."""
    for d in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if os.path.exists(os.path.join(d, "uprobe_events")):
            return d
    if os.geteuid() == 0 and os.path.isdir("/sys/kernel/tracing"):
        subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"],
                       capture_output=True, timeout=10)
        if os.path.exists("/sys/kernel/tracing/uprobe_events"):
            return "/sys/kernel/tracing"
    return None


@pytest.fixture(scope="module")
def sdt():
    if not _has_sdt_notes():
        pytest.skip(f"{SO} has no SDT notes (built without <sys/sdt.h>)")
    if _tracefs() is None:
        pytest.skip("tracefs is not mounted and cannot be mounted here "
                    "(mount -t tracefs nodev /sys/kernel/tracing needs root)")
    return SO


@contextlib.contextmanager
def probes_added(names):
    """Add uprobes sdt_osvrt:<name> on this build's extension; delete the
    ones added here on the way out.  Serialized across processes."""
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        listed = perf("probe", "-l").stdout
        mine, reuse = [], []
        for name in names:
            lines = [ln for ln in listed.splitlines() if f"sdt_osvrt:{name} " in ln + " "]
            if lines and all(SO in ln for ln in lines):
                reuse.append(name)
            elif lines:
                pytest.skip(f"sdt_osvrt:{name} already exists for another file: "
                            f"{lines[0].strip()} (remove it: perf probe -d sdt_osvrt:{name})")
            else:
                mine.append(name)
        try:
            if mine:
                args = ["probe", "-x", SO]
                for name in mine:
                    args += ["-a", f"sdt_osvrt:{name}"]
                p = perf(*args)
                if p.returncode != 0:
                    added = [n for n in mine if f"sdt_osvrt:{n}" in perf("probe", "-l").stdout]
                    mine = added
                    if _not_permitted(p.stderr):
                        pytest.skip(f"perf may not add uprobes here: {p.stderr.strip()[:300]}")
                    pytest.fail(f"perf probe failed:\n{p.stderr}")
            yield
        finally:
            for name in mine:
                perf("probe", "-d", f"sdt_osvrt:{name}")


def record(tmp_path, *perf_args):
    out = tmp_path / "perf.data"
    p = perf("record", *perf_args, "-o", str(out), "--", sys.executable, "-P", "-c", WORKLOAD,
             cwd=str(tmp_path))
    if p.returncode != 0:
        if _not_permitted(p.stderr):
            pytest.skip(f"perf record is not permitted here: {p.stderr.strip()[:300]}")
        pytest.fail(f"perf record failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    assert "rounds" in p.stdout, p.stdout + p.stderr
    return out


def test_perf_lists_every_probe(sdt, tmp_path):
    perf("buildid-cache", "--add", SO, check=True)
    listed = perf("list", "sdt_osvrt:*", check=True).stdout
    missing = [n for n in ALL_PROBES if not re.search(rf"sdt_osvrt:{n}[ @]", listed)]
    assert not missing, f"perf list does not show {missing}:\n{listed}"


def test_c_probe_and_python_tracepoint_fire(sdt, tmp_path):
    with probes_added(PROBES):
        data = record(tmp_path, *[a for n in PROBES for a in ("-e", f"sdt_osvrt:{n}")])
        script = perf("script", "-i", str(data), check=True).stdout
    counts = {n: len(re.findall(rf"sdt_osvrt:{n}:", script)) for n in PROBES}
    assert counts["wake"] > 0, f"the C probe wake never fired:\n{script[:2000]}"
    assert counts["switch"] > 0, ("the semaphore-guarded tracepoint switch never fired "
                                  f"(is the semaphore read?):\n{script[:2000]}")
    # switch(cpu, from_id, to_id): the cpu is a worker index of the 2-CPU runtime
    cpus = {int(m) for m in re.findall(r"sdt_osvrt:switch: \(\w+\) arg1=(\d+)", script)}
    assert cpus and cpus <= {0, 1}, cpus


def test_sampling_with_call_graphs(tmp_path):
    data = record(tmp_path, "-e", "cpu-clock", "-F", "999", "-g")
    rep = perf("report", "-i", str(data), "--stdio", "--no-children", "--sort", "dso,sym",
               check=True).stdout
    assert os.path.basename(SO) in rep or "_core" in rep, rep[:3000]
    assert "libpython" in rep or "python" in rep, rep[:3000]
