"""Runtime(trace=PATH): the Chrome trace-event JSON written at stop()."""
import json
import logging
import os

import pytest

import osvrt
from osvrt.observe import trace as tr

from support import run


def _pingpong_sides(n):
    ping, pong = osvrt.Event(), osvrt.Event()

    async def a():
        for _ in range(n):
            ping.set()
            await pong.wait()
            pong.clear()

    async def b():
        for _ in range(n):
            await ping.wait()
            ping.clear()
            pong.set()

    return a, b


async def _sleeper():
    for _ in range(5):
        await osvrt.sleep(0.002)


async def _start_sleepy():
    # named at spawn: the trace learns the name from the live threads (a
    # sampler, and stop(), which finds it still asleep)
    osvrt.spawn(_forever, name="sleepy")
    await osvrt.spawn(_sleeper).join()          # unnamed: green-<id>


async def _forever():
    await osvrt.sleep(60)


def _scenario(rt, cpu_a, cpu_b):
    run(rt, _start_sleepy)
    a, b = _pingpong_sides(300)
    fb = rt.submit(b, cpu=cpu_b, name="pong-side")
    fa = rt.submit(a, cpu=cpu_a, name="ping-side")
    fa.result(30)
    fb.result(30)


def _load(path):
    with open(path) as f:
        return json.load(f)


def test_trace_two_cpus(tmp_path, two_cpus):
    path = tmp_path / "sched.json"
    rt = osvrt.Runtime(cpus=list(two_cpus), trace=path)
    with rt:
        _scenario(rt, *two_cpus)
    doc = _load(path)
    events = doc["traceEvents"]
    pid = os.getpid()
    assert all(e["pid"] == pid for e in events)
    names = {e["tid"]: e["args"]["name"] for e in events
             if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {0: f"CPU {two_cpus[0]}", 1: f"CPU {two_cpus[1]}"}
    slices = [e for e in events if e["ph"] == "X"]
    assert {e["tid"] for e in slices} == {0, 1}
    slice_names = {e["name"] for e in slices}
    # threads named at submit/spawn keep their names; the rest are green-<id>
    assert {"ping-side", "pong-side", "sleepy", "idle"} <= slice_names
    assert all(e["dur"] >= 0 for e in slices)
    assert any(n.startswith("green-") for n in slice_names)
    # flows: matched pairs, start and end on different CPUs
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    ends = {e["id"]: e for e in events if e["ph"] == "f"}
    assert starts.keys() == ends.keys() and starts
    cross = [i for i in starts if starts[i]["tid"] != ends[i]["tid"]]
    assert len(cross) >= 300
    assert all(ends[i]["bp"] == "e" and ends[i]["ts"] >= starts[i]["ts"] for i in starts)
    assert all(starts[i]["name"] == ends[i]["name"] for i in starts)
    counters = [e for e in events if e["ph"] == "C"]
    assert {e["name"] for e in counters} == {f"run queue cpu{c}" for c in two_cpus}
    assert all(e["args"]["threads"] >= 0 for e in counters)
    ts = [e["ts"] for e in events if e["ph"] != "M"]
    assert ts == sorted(ts) and ts[0] >= 0
    # slices on a track never overlap
    for tid in (0, 1):
        track = sorted((e for e in slices if e["tid"] == tid), key=lambda e: e["ts"])
        for x, y in zip(track, track[1:]):
            assert x["ts"] + x["dur"] <= y["ts"] + 0.002, (x, y)
    assert doc["otherData"]["lost_events"] == [0, 0]


async def _moves(cpu_a, cpu_b):
    done = osvrt.Event()

    async def hog():
        while not done.is_set():
            await osvrt.yield_now()

    t = osvrt.spawn(hog, cpu=cpu_a)
    await osvrt.sleep(0.002)
    await t.pin(cpu_b)
    assert t.cpu == cpu_b
    done.set()
    await t.join()


def test_trace_migration_flow(tmp_path, two_cpus):
    path = tmp_path / "moves.json"
    with osvrt.Runtime(cpus=list(two_cpus), trace=str(path), balance=False) as rt:
        run(rt, _moves, *two_cpus)
    events = _load(path)["traceEvents"]
    assert [e for e in events if e["ph"] == "i" and e["name"] == "migrate"]
    moved = [e for e in events if e["ph"] == "s" and e["name"] == "migrate"]
    ends = {e["id"] for e in events if e["ph"] == "f" and e["name"] == "migrate"}
    assert moved and {e["id"] for e in moved} <= ends


def test_run_passes_trace(tmp_path):
    path = tmp_path / "run.json"

    async def main():
        await osvrt.sleep(0.001)
        return 7

    assert osvrt.run(main, cpus=1, trace=path) == 7
    doc = _load(path)
    assert any(e["ph"] == "X" for e in doc["traceEvents"])


def test_trace_off_records_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rt = osvrt.Runtime(cpus=1)
    with rt:
        run(rt, _sleeper)
        assert rt._trace_path is None
    assert list(tmp_path.iterdir()) == []
    w = rt._workers[0]
    buf, lost = w.trace_take()
    assert buf == b"" and lost == 0


def test_trace_lost_events_counted(tmp_path, caplog):
    path = tmp_path / "small.json"
    with caplog.at_level(logging.WARNING, logger="osvrt"):
        with osvrt.Runtime(cpus=1, trace=path, trace_events=10) as rt:
            run(rt, _sleeper)
    doc = _load(path)
    assert doc["otherData"]["lost_events"][0] > 0
    assert "lost" in caplog.text


@pytest.mark.parametrize("bad", [123, True, 1.5, object()])
def test_bad_trace_type(bad):
    with pytest.raises(TypeError, match="trace must be a file path"):
        osvrt.Runtime(trace=bad)


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-1, ValueError), (True, TypeError),
                                     (1.0, TypeError), (1 << 40, ValueError)])
def test_bad_trace_events(bad, exc):
    with pytest.raises(exc, match="trace_events"):
        osvrt.Runtime(trace_events=bad)


def test_unwritable_trace_path_fails_at_start(tmp_path):
    rt = osvrt.Runtime(cpus=1, trace=tmp_path / "no" / "such" / "dir.json")
    with pytest.raises(FileNotFoundError, match="trace="):
        rt.start()
    with pytest.raises(IsADirectoryError, match="trace="):
        osvrt.Runtime(cpus=1, trace=tmp_path).start()


def test_trace_write_error_at_stop_is_logged_and_stop_completes(tmp_path, caplog):
    d = tmp_path / "d"
    d.mkdir()
    rt = osvrt.Runtime(cpus=1, trace=d / "t.json")
    rt.start()
    run(rt, _sleeper)
    d.rmdir()                               # the directory goes away while it runs
    with caplog.at_level(logging.ERROR, logger="osvrt"):
        with pytest.raises(OSError):
            rt.stop(timeout=5)
    assert "cannot write the trace" in caplog.text
    assert rt._state == "stopped" and not rt._workers[0].os_thread.is_alive()
    rt.stop()                               # a second stop: nothing more to raise


def test_chrome_events_pairs_wrapped_flow_keys():
    # The same flow key twice (hand-over counts wrap at 2**16): two pairs.
    key = (5 << 16) | 1
    per_cpu = [
        [(1.0, tr.SWITCH, 0, 0, 5, 0), (1.1, tr.POST, 0, 5, key, 1),
         (1.5, tr.ARRIVE, 0, 5, key, 0), (1.6, tr.SWITCH, 0, 5, 5, 0),
         (1.7, tr.IDLE, 0, 50_000_000, 0, 0)],
        [(1.2, tr.ARRIVE, 1, 5, key, 0), (1.3, tr.SWITCH, 1, 0, 5, 0),
         (1.4, tr.POST, 1, 5, key, 0), (1.45, tr.IDLE, 1, 100_000, 0, 0)],
    ]
    events = tr.chrome_events(per_cpu, [3, 7], {5: "five"}, pid=1)
    s = sorted((e["id"], e["tid"]) for e in events if e["ph"] == "s")
    f = sorted((e["id"], e["tid"]) for e in events if e["ph"] == "f")
    assert s == [(1, 0), (2, 1)] or s == [(1, 1), (2, 0)]
    assert {i for i, _ in s} == {i for i, _ in f}
    for i, tid in s:
        assert (i, 1 - tid) in f
    runs = [e for e in events if e["ph"] == "X" and e["name"] == "five"]
    assert runs and all(e["args"]["id"] == 5 for e in runs)
    assert {e["args"]["name"] for e in events if e.get("name") == "thread_name"} == {"CPU 3",
                                                                                      "CPU 7"}


def test_trace_loads_in_perfetto_trace_processor(tmp_path, two_cpus):
    """Where Perfetto's trace_processor is at hand (pip install perfetto, and
    its trace_processor_shell binary: OSVRT_TRACE_PROCESSOR=/path/to/it, as
    the package would otherwise download it)."""
    shell = os.environ.get("OSVRT_TRACE_PROCESSOR")
    if not shell:
        pytest.skip("set OSVRT_TRACE_PROCESSOR to a trace_processor_shell binary")
    tp_mod = pytest.importorskip("perfetto.trace_processor")
    path = tmp_path / "sched.json"
    with osvrt.Runtime(cpus=list(two_cpus), trace=path) as rt:
        _scenario(rt, *two_cpus)
    tp = tp_mod.TraceProcessor(trace=str(path),
                               config=tp_mod.TraceProcessorConfig(bin_path=shell))
    try:
        names = {r.name for r in tp.query("select distinct name from slice")}
        assert {"ping-side", "pong-side", "idle"} <= names
        flows = list(tp.query("select count(*) as n from flow"))[0].n
        assert flows >= 300
        threads = {r.name for r in tp.query("select name from thread")}
        assert {f"CPU {c}" for c in two_cpus} <= threads
    finally:
        tp.close()


def test_bytes_trace_path(tmp_path):
    path = os.fsencode(tmp_path / "b.json")

    async def main():
        await osvrt.sleep(0.001)

    osvrt.run(main, cpus=1, trace=path)
    assert _load(path)["traceEvents"]
