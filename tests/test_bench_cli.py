"""`python -m osvrt bench` (osvrt.bench): the comparison runs end to end at
tiny sizes, the table, JSON and chart come out, and the method (alternating
rounds, medians, per-round ratios, spread, targets) does what it says.  The
report's layouts (one table, or one block per measure on a narrow terminal),
with rich and in plain text, are checked on fixed figures.  No speed is
asserted: a figure only has to be a positive number.
"""
import argparse
import io
import json
import os
import re
import subprocess
import sys
import time

import pytest

import osvrt
from osvrt.bench import _rich as _rich_mod
from osvrt.bench import cli, measure, peers
from osvrt.bench.measure import Contender, Measure, Target, Unavailable, run_measure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(osvrt.__file__)))
# memory: 2,000 parked tasks, not fewer: since `import osvrt` imports asyncio
# (osvrt/asyncio_guard.py), 200 asyncio Tasks fit in the heap the import left
# and grow the RSS by 0 pages, which the row rightly refuses ("measured 0.0").
TINY = dict(colocated=50, apart=20, spawn=50, spawn_threads=10, memory=2_000, memory_threads=10,
            wake=20, queue=1_000, udp=20, udp_tps=40)


def _args(*argv, **extra):
    args = cli.add_arguments(argparse.ArgumentParser()).parse_args(list(argv))
    for k, v in extra.items():
        setattr(args, k, v)
    return args


def _env():
    env = dict(os.environ)
    env["COLUMNS"] = "200"             # the one-table layout, whatever runs the tests
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


# ---- the whole comparison, tiny ------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    out = io.StringIO()
    args = _args("--json", str(d / "b.json"), "--plot", "-", "--rounds", "1", "--no-progress",
                 sizes=TINY, warmup=0, width=400)   # 400: the real-client and user-stack rows add columns
    doc = cli.run(args, out=out)
    return doc, out.getvalue(), d / "b.json"


def test_every_measure_runs_or_says_why_not(tiny_run):
    doc, text, _ = tiny_run
    keys = [m["key"] for m in doc["measures"]]
    assert keys == list(cli.MEASURE_KEYS)
    for m in doc["measures"]:
        if m["key"].startswith(("udp_rr", "udp_tps")) and m["status"] == "n/a":
            assert m["reason"].startswith(("osvrt.net not available: ",
                                           "the dedicated placement needs 2 CPUs"))
            continue
        if m["key"].startswith(("wrk_", "redis_")) and m["status"] == "n/a":
            # the servers are the checkout's examples/: a non-editable install
            # (the README's test command) has none, and says so; or the client
            # (Debian's wrk, redis-tools) is missing, and the row says that
            from osvrt.bench.rows import streams
            assert (not os.path.isdir(streams.EXAMPLES) and "examples/" in m["reason"]) \
                or "is not installed" in m["reason"], m
            continue
        if m["key"].startswith("usertcp_") and m["status"] == "n/a":
            # the user-space TCP rows need namespaces (root), their clients
            # (sockperf, wrk) and the kernel-socket peer (uvloop, the peers
            # extra, which the test command does not install): the row names
            # which one is missing
            assert ("is not installed" in m["reason"] or "namespace" in m["reason"]
                    or "CAP_" in m["reason"]), m
            continue
        if m["key"] == "switch_apart" and len(os.sched_getaffinity(0)) < 2:
            assert m["status"] == "n/a"
            continue
        assert m["status"] == "ok", m
        for name, cell in m["contenders"].items():
            assert cell["error"] is None, (m["key"], name, cell["error"])
            assert len(cell["rounds"]) == 1 and cell["median"] > 0, (m["key"], name, cell)
        for t in m["targets"]:
            if t["peer"] in m["unavailable"]:          # e.g. uvloop not installed
                assert t["ratio"] is None and t["met"] is None
                assert t["why_not"] == m["unavailable"][t["peer"]]
            else:
                assert t["ratio"] > 0 and t["met"] in (True, False), t


def test_table_and_json(tiny_run):
    doc, text, path = tiny_run
    for m in doc["measures"]:
        assert m["title"] in text
    assert "ratio osvrt/peer (target)" in text
    assert ("met" in text) or ("MISSED" in text)
    assert f"raw figures: {path}" in text
    on_disk = json.loads(path.read_text())
    assert on_disk["measures"] == json.loads(json.dumps(doc["measures"]))
    assert on_disk["options"]["rounds"] == 1
    assert on_disk["host"]["cpus_available"] == sorted(os.sched_getaffinity(0))
    udp = next(m for m in doc["measures"] if m["key"] == "udp_rr")
    if udp["status"] == "n/a":
        assert "UDP request/response (" in text and "n/a (osvrt.net not available" in text


def test_chart_is_drawn_or_the_reason_given(tiny_run, tmp_path):
    doc, _, _ = tiny_run
    png = tmp_path / "b.png"
    why = cli.draw_plot(doc, str(png))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert why is not None and "osvrt[plot]" in why
        assert not png.exists()
    else:
        assert why is None
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_udp_rows_say_why_when_osvrt_net_is_not_available(monkeypatch, tmp_path):
    monkeypatch.setattr(peers, "udp_unavailable",
                        lambda: "ModuleNotFoundError: No module named 'osvrt.net'")
    out = io.StringIO()
    doc = cli.run(_args("--only", "udp_rr,udp_tps", "--json", "-", "--plot", "-",
                        "--no-progress", sizes=TINY, width=200), out=out)
    assert [m["status"] for m in doc["measures"]] == ["n/a", "n/a"]
    text = out.getvalue()
    if len(os.sched_getaffinity(0)) > 1:
        assert re.search(r"UDP request/response, osvrt.run placement \((µs|us)\) +n/a \(osvrt.net not available: "
                         r"ModuleNotFoundError: No module named 'osvrt.net'\)", text), text
    assert "2 not measured" in text



def test_real_client_rows_install_a_missing_client(monkeypatch, tmp_path):
    """The wrk, redis-benchmark and user-stack rows get their client from
    find_tool (apt-get as root), as the UDP rows do: on a fresh machine the
    README's main command measures them instead of printing n/a."""
    import shutil

    from osvrt.bench import net as nb
    from osvrt.bench import netns
    from osvrt.bench.rows import streams, usertcp
    asked = []

    def find_tool(name, package, install=True):
        asked.append((name, package))
        return (None, f"{name}: none here (test)") if name == "sockperf" else ("/bin/true", None)
    monkeypatch.setattr(nb, "find_tool", find_tool)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)    # nothing on PATH
    monkeypatch.setattr(streams, "EXAMPLES", str(tmp_path))             # an examples/ folder
    for tool, package in (("wrk", "wrk"), ("redis-benchmark", "redis-tools")):
        with streams._setup(tool, package)():
            pass
    monkeypatch.setattr(netns, "can_make_namespaces", lambda: (True, None))
    with pytest.raises(Unavailable, match="sockperf: none here"):
        with usertcp._setup("sockperf")():
            pass
    assert asked == [("wrk", "wrk"), ("redis-benchmark", "redis-tools"), ("sockperf", "sockperf")]

def test_command_line_quick_subset(tmp_path):
    j = tmp_path / "q.json"
    p = subprocess.run([sys.executable, "-P", "-m", "osvrt", "bench", "--quick", "--only",
                        "pushlist,foreign_wake", "--rounds", "1", "--json", str(j), "--plot", "-"],
                       capture_output=True, text=True, env=_env(), cwd=str(tmp_path), timeout=120)
    assert p.returncode == 0, p.stderr
    assert "pushlist 2P+1C (ns/item)" in p.stdout
    assert "foreign-thread wake" in p.stdout
    assert "%]" in p.stderr                        # progress on stderr (not a tty: lines)
    doc = json.loads(j.read_text())
    assert [m["key"] for m in doc["measures"]] == ["foreign_wake", "pushlist"]
    assert doc["options"]["mode"] == "quick"


def test_help_lists_the_commands():
    p = subprocess.run([sys.executable, "-P", "-m", "osvrt", "--help"], capture_output=True, text=True,
                       env=_env(), timeout=60)
    assert p.returncode == 0
    assert "bench" in p.stdout
    p = subprocess.run([sys.executable, "-P", "-m", "osvrt", "bench", "--only", "nope"],
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert p.returncode == 2 and "nope" in p.stderr


def test_cpus_option():
    avail = sorted(os.sched_getaffinity(0))
    assert cli.parse_cpus(None) == tuple(avail[:2])
    assert cli.parse_cpus("1") == (avail[0],)
    assert cli.parse_cpus(f"{avail[0]},") == (avail[0],)
    for bad in ("0.5", "x", "99999", "-1", f"{avail[0]},{avail[0]}"):
        with pytest.raises(ValueError, match="--cpus"):
            cli.parse_cpus(bad)


# ---- the method ------------------------------------------------------------

def _fake(name, values, log, **kw):
    it = iter(values)

    def run(ctx):
        log.append(name)
        return {"ns": next(it)}
    return Contender(name, name, run, **kw)


def test_rounds_alternate_and_ratios_are_medians_of_rounds():
    log = []
    m = Measure("m", "fake", "ns", "lower",
                _fake("osvrt", [99, 1, 2, 30, 4, 5], log),
                [_fake("p", [99, 10, 10, 10, 10, 10], log),
                 _fake("q", [99, 2, 2, 2, 2, 2], log)],
                targets=[Target("p", "<=", 0.5, "half"), Target("q", "<", 1, "faster")])
    r = run_measure(m, rounds=5, warmup=1)
    # warm-up in order, then each round starts one contender further on
    assert log[:3] == ["osvrt", "p", "q"]
    starts = [log[3 + 3 * i] for i in range(5)]
    assert starts == ["osvrt", "p", "q", "osvrt", "p"]
    assert r["contenders"]["osvrt"]["rounds"] == [1, 2, 30, 4, 5]      # warm-up dropped
    assert r["contenders"]["osvrt"]["median"] == 4
    assert r["ratios"]["p"]["median"] == pytest.approx(0.4)
    assert r["ratios"]["q"]["median"] == pytest.approx(2.0)
    assert [t["met"] for t in r["targets"]] == [True, False]


def test_errors_unavailable_peers_and_unavailable_rows_are_reported():
    def boom(ctx):
        raise RuntimeError("lost a wake-up")

    m = Measure("m", "fake", "ns", "lower", _fake("osvrt", [1] * 9, []),
                [Contender("p", "p", boom), Contender("q", "q", lambda c: {"ns": 1},
                                                        requires="no_such_module_osvrt")],
                targets=[Target("p", "<=", 1, "x"), Target("q", "<=", 1, "y")])
    r = run_measure(m, rounds=3, warmup=1)
    assert r["status"] == "ok"
    assert r["contenders"]["p"]["error"] == "RuntimeError: lost a wake-up"
    assert r["unavailable"] == {"q": "no_such_module_osvrt not installed"}
    assert [t["met"] for t in r["targets"]] == [None, None]
    assert "lost a wake-up" in r["targets"][0]["why_not"]
    text = cli.render_table([r], io.StringIO(), width=120)
    assert "error" in text and "n/a" in text

    def setup():
        raise Unavailable("needs a NIC")
    m2 = Measure("m2", "fake2", "us", "lower", _fake("osvrt", [1], []), [], setup=setup)
    r2 = run_measure(m2, rounds=1)
    assert (r2["status"], r2["reason"]) == ("n/a", "needs a NIC")
    assert "n/a (needs a NIC)" in cli.render_table([r, r2], io.StringIO(), width=120)
    assert "n/a (needs a NIC)" in cli.render_table([r, r2], io.StringIO(), width=80)


def test_deadline_cuts_rounds_but_keeps_the_minimum():
    m = Measure("m", "fake", "ns", "lower", _fake("osvrt", [1] * 20, []),
                [_fake("p", [1] * 20, [])])
    r = run_measure(m, rounds=10, warmup=0, min_rounds=3, deadline=0.0)
    assert r["rounds_done"] == 3


def test_ascii_table_when_the_terminal_cannot_print_symbols():
    class Ascii(io.StringIO):
        encoding = "ascii"
    m = Measure("m", "fake", "us", "higher", _fake("osvrt", [5, 5], []),
                [_fake("asyncio", [1, 1], [])], targets=[Target("asyncio", ">=", 5, "5x")])
    r = run_measure(m, rounds=1)
    for plain in (True, False):
        text = cli.render_table([r], Ascii(), width=120, plain=plain)
        text.encode("ascii")
        assert "5.00 vs asyncio (>=5) met" in text and "(us)" in text
        assert "+-" not in text                     # one round: no spread to show
        text = cli.render_table([r], Ascii(), width=80, plain=plain)
        text.encode("ascii")
        assert "(us, higher is better)" in text and ">=5 met" in text


def test_progress_bar():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    s = Tty()
    bar = cli.Progress(4, stream=s)
    bar.step("switch: osvrt")
    bar.step("switch: c_futex")
    bar.close()
    assert "\r[" in s.getvalue() and "2/4" in s.getvalue()
    s = io.StringIO()
    bar = cli.Progress(4, stream=s)
    for label in ("a: x", "a: y", "b: x"):
        bar.step(label)
    assert s.getvalue().count("\n") == 2           # one line per measure when not a tty
    s = io.StringIO()
    cli.Progress(4, stream=s, enabled=False).step("a: x")
    assert s.getvalue() == ""


# ---- workloads not in the table ---------------------------------------------

def test_submit_round_trip_variants_and_c_spin():
    rt = osvrt.Runtime(cpus=1).start()
    try:
        for how in ("run", "submit", "submit_pinned"):
            assert peers.osvrt_submit_round_trips(rt, 5, how)["answered"] == 5
        with pytest.raises(ValueError, match="how="):
            peers.osvrt_submit_round_trips(rt, 1, "nope")
    finally:
        peers.stop_runtime(rt)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:                  # spinning on one CPU would wait for preemption
        assert peers.c_pingpong("spin", cpus[0], cpus[1], 100)["ns"] > 0


def test_measure_module_exports():
    assert measure.median([3, 1, 2]) == 2 and measure.median([]) is None
    with pytest.raises(ValueError):
        Target("p", "~", 1, "")
    with pytest.raises(ValueError):
        Measure("m", "t", "ns", "sideways", None, [])


# ---- the report's layouts, on fixed figures ---------------------------------

class Utf8(io.StringIO):
    encoding = "utf-8"


def _fixed_results():
    """Two measures with known rounds: a steady one with peers p and q, and an
    unstable one with peer r only."""
    log = []
    steady = Measure("steady", "steady row", "us", "lower",
                     _fake("osvrt", [8, 10, 12], log),
                     [_fake("c_futex", [20, 20, 20], log), _fake("asyncio", [40, 40, 40], log)],
                     targets=[Target("c_futex", "<=", 0.6, "x"), Target("uvloop", "<", 1, "y")])
    shaky = Measure("shaky", "shaky row", "tasks/s", "higher",
                    _fake("osvrt", [5, 10, 20], log), [_fake("gevent", [10, 10, 10], log)],
                    targets=[Target("gevent", ">=", 2, "z")])
    return [run_measure(steady, rounds=3, warmup=0), run_measure(shaky, rounds=3, warmup=0)]


def test_spread_and_the_unstable_rule():
    sp = measure.spread([8, 10, 12])
    assert (sp["min"], sp["max"], sp["q1"], sp["q3"]) == (8, 12, 9, 11)
    assert sp["iqr_rel"] == pytest.approx(0.2) and not sp["unstable"]
    assert measure.spread([5, 10, 20])["unstable"]                # IQR 7.5 of 10
    assert not measure.spread([7.5, 10, 12.5])["unstable"]        # IQR exactly 25%: stable
    assert not measure.spread([3])["unstable"] and measure.spread([]) is None
    steady, shaky = _fixed_results()
    assert steady["contenders"]["osvrt"]["spread"]["iqr_rel"] == pytest.approx(0.2)
    assert shaky["contenders"]["osvrt"]["spread"]["unstable"] is True
    assert steady["ratios"]["c_futex"]["spread"]["min"] == pytest.approx(0.4)
    json.dumps([steady, shaky])                                  # JSON-ready as it is


@pytest.mark.parametrize("plain", [True, False])
def test_wide_layout_shows_the_spread_beside_each_median(plain):
    text = cli.render_table(_fixed_results(), Utf8(), width=140, plain=plain)
    assert "ratio osvrt/peer (target)" in text
    assert max(len(x) for x in text.splitlines()) <= 140
    row = next(x for x in text.splitlines() if x.startswith("steady row (µs)"))
    assert re.search(r"10\.0 ±10% +20\.0 ±0% +40\.0 ±0% +—", row), row
    shaky = next(x for x in text.splitlines() if x.startswith("shaky row"))
    assert "10.0 ±38%!" in shaky                                  # the unstable mark
    assert "0.500 vs C futex (≤0.6) met" in text


@pytest.mark.parametrize("plain", [True, False])
def test_narrow_layout_at_80_columns(plain):
    text = cli.render_table(_fixed_results(), Utf8(), width=80, plain=plain)
    lines = text.splitlines()
    assert max(len(x) for x in lines) <= 80, text
    assert "ratio osvrt/peer (target)" not in text               # not the one-table layout
    assert "steady row (µs, lower is better)" in lines
    assert "shaky row (tasks/s, higher is better)" in lines
    steady = text[:text.index("shaky row")]
    shaky = text[text.index("shaky row"):]
    # each block lists only the contenders its measure ran; no "—" fillers
    assert "gevent" not in steady and "asyncio" not in shaky and "—" not in text
    assert re.search(r"osvrt +10\.0 +±10% +8\.00–12\.0", steady), steady
    assert re.search(r"C futex +20\.0 .* 0\.500 +≤0\.6 met", steady), steady
    assert re.search(r"osvrt +10\.0 +±38%! +5\.00–20\.0", shaky), shaky
    assert "n/a vs uvloop (<1): not measured" in steady


def test_narrow_layout_drops_the_range_before_overflowing():
    text = cli.render_table(_fixed_results(), Utf8(), width=52, plain=True)
    assert max(len(x) for x in text.splitlines()) <= 52, text
    assert "min–max" not in text and "±38%!" in text


def test_plain_text_without_rich(monkeypatch):
    monkeypatch.setattr(_rich_mod, "rich_or_none", lambda: None)
    results = _fixed_results()
    assert cli.render_table(results, Utf8(), width=80) == \
        cli.render_table(results, Utf8(), width=80, plain=True)
    assert isinstance(cli.make_progress(3, stream=io.StringIO()), cli.Progress)
    # the command does not import rich until it draws
    p = subprocess.run([sys.executable, "-P", "-c", "import sys, osvrt.bench.cli; "
                        "print('rich' in sys.modules)"], capture_output=True, text=True,
                       env=_env(), timeout=60)
    assert p.stdout.strip() == "False", p.stderr


def test_rich_progress_on_a_terminal():
    if _rich_mod.rich_or_none() is None:
        pytest.skip("rich is not installed, or OSVRT_BENCH_PLAIN is set")

    class Tty(io.StringIO):
        def isatty(self):
            return True
    s = Tty()
    bar = cli.make_progress(4, stream=s)
    assert isinstance(bar, cli.RichProgress)
    bar.step("switch: osvrt")
    bar.step("switch: c_futex")
    assert "2/4" in s.getvalue() and "switch: c_futex" in s.getvalue()
    bar.close()


def test_report_legend_and_unstable_summary():
    steady, shaky = _fixed_results()
    doc = {"measures": [steady, shaky], "osvrt_version": "0", "elapsed_s": 1.0,
           "host": {"python": "3", "python_implementation": "CPython", "system": "Linux",
                    "cpus_available": [0], "loadavg_before": None},
           "options": {"cpus": [0], "rounds": 3, "warmup": 0}}
    text = cli.render_report(doc, Utf8(), width=80, plain=True)
    assert max(len(x) for x in text.splitlines()) <= 80, text
    assert "! unstable: interquartile range > 25% of the median" in " ".join(text.split())
    assert "unstable: shaky row (osvrt, osvrt/gevent)" in text
    only = cli.render_report(dict(doc, measures=[steady]), Utf8(), width=80, plain=True)
    assert "shaky row" not in only and "gevent" not in only
    assert "unstable:" not in only.split("of the median")[-1]


def test_an_unsteady_ratio_of_steady_contenders_is_marked(capsys):
    # Each contender steady (IQR 20% of its median), but their rounds out of
    # step: the per-round ratios spread 0.67-1.5 (IQR 42%). The ratio was printed
    # with no mark and left out of the "unstable:" line.
    log = []
    m = Measure("steps", "out of step", "us", "lower",
                _fake("osvrt", [8, 10, 12], log), [_fake("c_futex", [12, 10, 8], log)],
                targets=[Target("c_futex", "<=", 1.5, "x")])
    r = run_measure(m, rounds=3, warmup=0)
    assert not r["contenders"]["osvrt"]["spread"]["unstable"]
    assert r["ratios"]["c_futex"]["spread"]["unstable"]
    doc = {"measures": [r], "osvrt_version": "0", "elapsed_s": 1.0,
           "host": {"python": "3", "python_implementation": "CPython", "system": "Linux",
                    "cpus_available": [0], "loadavg_before": None},
           "options": {"cpus": [0], "rounds": 3, "warmup": 0}}
    text = cli.render_report(doc, Utf8(), width=120, plain=True)
    assert "unstable: out of step (osvrt/C futex)" in text, text
    assert "1.00!" in text, text


def test_only_prints_the_legend_of_the_measures_it_ran(tmp_path):
    out = io.StringIO()
    cli.run(_args("--only", "pushlist", "--json", "-", "--plot", "-", "--rounds", "1",
                  "--no-progress", sizes=TINY, warmup=0, width=100), out=out)
    text = out.getvalue()
    legend = text[text.index("columns (what each ran"):]
    assert "the C pushlist, 2 producer pthreads + 1 consumer" in legend
    assert "a FIFO under a pthread mutex" in legend
    for other in ("Event ping-pong", "asyncio", "threading", "futex", "UDP", "mutex + condvar",
                  "parked"):
        assert other not in legend, (other, legend)


def _doc(medians, better="lower"):
    results = []
    for key, cells in medians.items():
        results.append({"key": key, "title": key.replace("_", " "), "unit": "ns",
                        "better": better, "status": "ok",
                        "contenders": {n: {"median": v} for n, v in cells.items()}})
    return {"started": "then", "osvrt_version": "0.0", "measures": results}


def test_compare_old_and_new_medians():
    old = _doc({"switch_apart": {"osvrt": 100.0, "c_futex": 200.0, "gone": 5.0},
                "memory": {"osvrt": 1000.0}})
    new = _doc({"switch_apart": {"osvrt": 50.0, "c_futex": 201.0, "threading": 9.0},
                "pushlist": {"osvrt": 3.0}})
    text = cli.render_compare(old, new, Utf8(), width=120)
    assert text.splitlines()[0] == "change against then (osvrt 0.0):"
    assert re.search(r"switch apart \(ns\) +osvrt +100 +50\.0 +0\.500× +better", text), text
    assert re.search(r"C futex +200 +201 +1\.00× +same", text), text
    for absent in ("threading", "gone", "memory", "pushlist"):       # not in both runs
        assert absent not in text
    higher = cli.render_compare(_doc({"m": {"osvrt": 10.0}}, "higher"),
                                _doc({"m": {"osvrt": 5.0}}, "higher"), Utf8(), width=120)
    assert re.search(r"0\.500× +worse", higher), higher
    narrow = cli.render_compare(old, new, Utf8(), width=60)
    assert max(len(x) for x in narrow.splitlines()[2:]) <= 60, narrow
    assert re.search(r"osvrt +100 → 50\.0 +0\.500× better", narrow), narrow
    assert "no measure in common" in cli.render_compare(old, _doc({}), Utf8())


def test_compare_and_out_on_the_command_line(tmp_path):
    p = subprocess.run([sys.executable, "-P", "-m", "osvrt", "bench", "--compare",
                        str(tmp_path / "nope.json")], capture_output=True, text=True,
                       env=_env(), timeout=60)
    assert p.returncode == 2 and "--compare" in p.stderr and "nope.json" in p.stderr
    old = tmp_path / "old.json"
    old.write_text(json.dumps(_doc({"pushlist": {"osvrt": 1e9, "c_mutex": 1e-9}})))
    out_dir = tmp_path / "results" / "today"
    p = subprocess.run([sys.executable, "-P", "-m", "osvrt", "bench", "--quick", "--only",
                        "pushlist", "--rounds", "1", "--out", str(out_dir), "--compare", str(old),
                        "--no-progress"], capture_output=True, text=True, env=_env(),
                       cwd=str(tmp_path), timeout=120)
    assert p.returncode == 0, p.stderr
    assert re.search(r"pushlist 2P\+1C \(ns/item\) +osvrt .* better", p.stdout), p.stdout
    assert re.search(r"C mutex .* worse", p.stdout), p.stdout
    doc = json.loads((out_dir / cli.DEFAULT_JSON).read_text())
    cell = doc["measures"][0]["contenders"]["osvrt"]
    assert len(cell["rounds"]) == 1 and cell["spread"]["min"] == cell["rounds"][0]
    assert f"raw figures: {out_dir / cli.DEFAULT_JSON}" in p.stdout
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "chart: not drawn" in p.stdout
    else:
        assert (out_dir / cli.DEFAULT_PLOT).read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / cli.DEFAULT_JSON).exists()


def test_chart_of_fixed_ratios(tmp_path):
    pytest.importorskip("matplotlib")
    doc = {"measures": _fixed_results(), "host": {"system": "Linux"},
           "options": {"cpus": [0, 1], "rounds": 3}}
    assert cli.draw_plot(doc, str(tmp_path / "c.png")) is None
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    for r in doc["measures"]:
        r["ratios"] = {}
    assert cli.draw_plot(doc, str(tmp_path / "d.png")) == "no ratio was measured"


def test_json_is_private_and_never_written_through_a_symlink(tmp_path):
    # The default path is in the current directory, which may be shared: a
    # planted symlink is refused (and left as it was), a new file is 0600.
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "r.json").symlink_to(victim)
    said = {}
    for path in ("r.json", "s.json"):
        out = io.StringIO()
        cli.run(_args("--only", "pushlist", "--json", str(tmp_path / path), "--plot", "-",
                      "--no-progress", sizes=TINY, width=200), out=out)
        said[path] = out.getvalue()
    assert "raw figures: not written" in said["r.json"] and "symbolic link" in said["r.json"]
    assert victim.read_text() == "keep" and (tmp_path / "r.json").is_symlink()
    assert (tmp_path / "s.json").stat().st_mode & 0o777 == 0o600
    assert json.loads((tmp_path / "s.json").read_text())["measures"]


def test_chart_is_private_and_never_written_through_a_symlink(tmp_path):
    pytest.importorskip("matplotlib")
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "c.png").symlink_to(victim)
    doc = {"measures": _fixed_results(), "host": {"system": "Linux"},
           "options": {"cpus": [0, 1], "rounds": 3}}
    with pytest.raises(FileExistsError, match="symbolic link"):
        cli.draw_plot(doc, str(tmp_path / "c.png"))
    assert victim.read_text() == "keep"
    assert cli.draw_plot(doc, str(tmp_path / "d.png")) is None
    assert (tmp_path / "d.png").stat().st_mode & 0o777 == 0o600


# ---- #21 items 18 and 19: the status block and the chart ---------------------

def _status_doc(results):
    return {"measures": results, "osvrt_version": "0.1.0", "elapsed_s": 1.0,
            "host": {"system": "Linux 6 x86_64", "python": "3.11.2",
                     "python_implementation": "CPython", "cpus_available": [0, 1],
                     "loadavg_before": [0.5, 0.4, 0.3], "loadavg_after": [1.5, 1.0, 0.5]},
            "options": {"mode": "quick", "cpus": [0, 1], "rounds": 3, "warmup": 0,
                        "budget_s": 25.0}}


def test_status_block_states_conditions_and_min_max_for_every_target():
    doc = _status_doc(_fixed_results())
    text = cli.render_report(doc, Utf8(), width=140, plain=True)
    status = text[text.index("status ("):]
    # the conditions of the run, in the block a status table is filled from
    assert "quick run (`python -m osvrt bench --quick`)" in status
    assert "3 alternating rounds" in status and "CPUs [0, 1] of [0, 1]" in status
    assert "0.50 0.40 0.30 at start, 1.50 1.00 0.50 at end" in status
    # steady vs C futex: per-round ratios 8/20, 10/20, 12/20
    row = next(x for x in status.splitlines() if "steady row" in x and "C futex" in x)
    assert re.search(r"0\.500 +0\.400–0\.600 +3 +≤0\.6 +met", row), row
    shaky = next(x for x in status.splitlines() if "shaky row" in x)
    assert re.search(r"1\.00! +0\.500–2\.00 +3 +≥2 +MISSED", shaky), shaky   # ratios 0.5-2
    assert any("uvloop" in x and "n/a" in x for x in status.splitlines())
    # a partial run quotes its --only: it is not the README's main command
    doc["options"]["only"] = ["switch_colocated", "pushlist"]
    text = cli.render_report(doc, Utf8(), width=200, plain=True)
    assert "quick run (`python -m osvrt bench --quick --only switch_colocated,pushlist`)" in text


def _spawn_like_results():
    """A spawn-shaped panel: five peers, ratios from 0.02 to 60, one target."""
    log = []
    spawn = Measure("spawn_join", "spawn + join", "tasks/s", "higher",
                    _fake("osvrt", [600_000, 620_000, 610_000], log),
                    [_fake("asyncio", [100_000, 105_000, 98_000], log),
                     _fake("uvloop", [150_000, 160_000, 155_000], log),
                     _fake("trio", [30_000, 31_000, 29_000], log),
                     _fake("gevent", [80_000, 82_000, 81_000], log),
                     _fake("threading", [10_000, 10_500, 9_800], log)],
                    targets=[Target("asyncio", ">=", 5.0, "x")])
    return _fixed_results() + [run_measure(spawn, rounds=3, warmup=0)]


def test_chart_uses_log_ratio_axes_and_green_only_for_met_targets():
    pytest.importorskip("matplotlib")
    from osvrt.bench import plot
    fig, why = plot.figure(_status_doc(_spawn_like_results()))
    assert why is None
    try:
        colors = {}
        for ax in fig.axes:
            assert ax.get_xscale() == "log"
            labels = [t.get_text() for t in ax.get_yticklabels()]
            for bar, label in zip(ax.patches, labels):
                colors[ax.get_title(loc="left").split(":")[0], label.split(" (")[0]] = bar.get_facecolor()
        import matplotlib.colors as mc
        green, red, grey = (mc.to_rgba(c) for c in (plot.MET, plot.MISSED, plot.NO_TARGET))
        assert colors["steady row", "C futex"] == green      # 0.5 <= 0.6: met
        assert colors["shaky row", "gevent"] == red          # 1.0, target >= 2: missed
        assert colors["spawn + join", "asyncio"] == green    # 6.1 >= 5: met
        # osvrt ahead of these peers (the old chart drew them green), no target: grey
        assert colors["steady row", "asyncio"] == grey
        assert all(colors["spawn + join", p] == grey
                   for p in ("uvloop", "trio", "gevent", "threading"))
    finally:
        import matplotlib.pyplot as plt
        plt.close(fig)


def test_chart_text_never_overlaps():
    pytest.importorskip("matplotlib")
    from osvrt.bench import plot
    fig, _ = plot.figure(_status_doc(_spawn_like_results()))
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            texts = [t for t in ax.texts + ax.get_yticklabels() + ax.get_xticklabels()
                     + [ax._left_title] if t.get_visible() and t.get_text()]
            boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
            for i, (a, ba) in enumerate(boxes):
                for b, bb in boxes[i + 1:]:
                    assert not ba.overlaps(bb), (a, b)
            # nothing is written inside the plotting area (over bars or whiskers)
            assert len(ax.texts) == 0
    finally:
        import matplotlib.pyplot as plt
        plt.close(fig)


# ---- #17: the real-client rows read p50 beside p99 ---------------------------

_WRK_OUT = """Running 3s test @ http://127.0.0.1:1/
  Latency Distribution
     50%  412.00us
     75%  600.00us
     90%    1.10ms
     99%    2.50ms
  300000 requests in 3.00s, 30.00MB read
Requests/sec: 100000.00
"""
_REDIS_OUT = ('"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",'
              '"p95_latency_ms","p99_latency_ms","max_latency_ms"\n'
              '"SET","50000.00","0.500","0.100","0.400","0.900","1.200","3.000"\n'
              '"GET","100000.00","0.300","0.100","0.250","0.600","0.800","2.000"\n')


def test_wrk_and_redis_rounds_read_p50_and_p99(monkeypatch):
    from osvrt.bench.rows import streams

    def fake_run(argv, server_pid=None, **kw):
        out = _WRK_OUT if argv[0] == "wrk" else _REDIS_OUT
        return subprocess.CompletedProcess(argv, 0, stdout=out, stderr=""), {}
    monkeypatch.setattr(streams, "run_client", fake_run)
    w = streams.wrk_round(1, 3)
    assert w["rps"] == 100000.0 and w["p99_ms"] == 2.5
    assert abs(w["p50_ms"] - 0.412) < 1e-12                        # 412 us
    assert w["requests"] == 300000                     # for the server's CPU per request
    r = streams.redis_round(1, 1000)
    assert r["p50_ms"] == 0.4 and r["p99_ms"] == 1.2            # the worst test's
    assert abs(r["rps"] - 2 / (1 / 50000 + 1 / 100000)) < 1e-6   # harmonic mean
    assert r["requests"] == 2 * 1000                              # both tests' requests


@pytest.mark.parametrize("tail, status", [
    ("  Socket errors: connect 0, read 4000, write 0, timeout 120\n", 0),
    ("  Non-2xx or 3xx responses: 59000\n", 0),
    ("", 1),
])
def test_a_wrk_round_with_errors_fails_instead_of_giving_a_figure(monkeypatch, tail, status):
    # The rows' wrk rounds read requests/s and latency and ignored wrk's error
    # lines and exit status: a server answering mostly errors met its target.
    from osvrt.bench import usertcp
    from osvrt.bench.rows import streams
    out = _WRK_OUT.replace("Requests/sec", tail + "Requests/sec")

    def fake_run(argv, server_pid=None, **kw):
        return subprocess.CompletedProcess(argv, status, stdout=out, stderr=""), {}
    monkeypatch.setattr(streams, "run_client", fake_run)
    monkeypatch.setattr("osvrt.bench.client_cpu.run_client", fake_run)
    with pytest.raises(RuntimeError, match="errors|status 1"):
        streams.wrk_round(1, 3)
    with pytest.raises(RuntimeError, match="errors|status 1"):
        usertcp.wrk_round("ns", "198.18.0.2", 1, 3)


def test_bad_only_and_output_paths_fail_before_anything_runs(tmp_path, monkeypatch):
    """An empty --only was read as "every measure" (a 13-minute run), and a
    --json or --plot in a missing folder was found only once every measure had
    run; both now fail at once, naming the value."""
    def never(*a, **k):
        raise AssertionError("a measure ran")
    monkeypatch.setattr(cli, "run_measure", never)
    for only in ("", ",", " , "):
        with pytest.raises(ValueError, match="names no measure"):
            cli.run(_args("--only", only, "--json", "-", "--plot", "-"), out=io.StringIO())
    missing = tmp_path / "no-such-folder"
    for opt in ("--json", "--plot"):
        other = "--plot" if opt == "--json" else "--json"
        with pytest.raises(ValueError, match=f"{opt} .*no-such-folder.*does not exist"):
            cli.run(_args("--only", "pushlist", opt, str(missing / "x"), other, "-"),
                    out=io.StringIO())
    with pytest.raises(ValueError, match="--json .*: is a folder"):
        cli.run(_args("--only", "pushlist", "--json", str(tmp_path), "--plot", "-"),
                out=io.StringIO())


def test_instructions_options_fail_before_valgrind_runs(tmp_path, monkeypatch):
    from osvrt.bench import instructions

    def never(*a, **k):
        raise AssertionError("counted")
    monkeypatch.setattr(instructions, "measure", never)

    def run(*argv):
        p = argparse.ArgumentParser()
        instructions.add_arguments(p)
        return instructions.run(p.parse_args(list(argv)))
    for argv, why in ((("--only", ","), "--only ',': names nothing"),
                      (("--peers", ""), "--peers '': names nothing"),
                      (("--only", "switch,nope"), r"unknown \['nope'\]"),
                      (("--json", str(tmp_path / "missing" / "i.json")), "does not exist")):
        with pytest.raises(ValueError, match=why):
            run(*argv)


@pytest.mark.parametrize("argv, why", [
    (["--rounds", "0"], "argument --rounds: '0': give 1 or more"),
    (["--seconds", "inf"], "argument --seconds: 'inf': give a number > 0"),
    (["--cpus", "-1"], "argument --cpus: '-1': give a number in 1.."),
])
def test_bench_streams_script_refuses_bad_counts(argv, why):
    """benchmarks/bench_streams.py (a README recipe): --rounds 0 died on an
    empty median and --cpus -1 inside the server; now usage errors."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks", "bench_streams.py")      # the checkout's, not osvrt's
    p = subprocess.run([sys.executable, script,
                        "--only", "http", *argv], capture_output=True, text=True, env=_env(),
                       timeout=60)
    assert p.returncode == 2 and why in p.stderr, p.stderr


def test_client_cpu_share_of_the_client_and_of_the_server_process():
    """run_client: the client's CPU (its own rusage) over its wall time, and
    the server's CPU seconds from /proc.  A sleeping process uses next to
    none; a spinning one uses some (loose bounds: these are shares of a
    shared CPU, not timings)."""
    from osvrt.bench.client_cpu import run_client
    spin = "import time\nend = time.monotonic() + 0.4\nwhile time.monotonic() < end: pass"
    server = subprocess.Popen([sys.executable, "-c", spin.replace("0.4", "30")])
    try:
        done, cpu = run_client([sys.executable, "-c", spin + "\nprint('out')"], server.pid,
                               timeout=60)
        assert done.returncode == 0 and done.stdout == "out\n"
        assert cpu["client_cpu_share"] > 0.05 and cpu["server_cpu_s"] > 0.0, cpu
        done, cpu = run_client(["sleep", "0.3"], server.pid, timeout=60)
        assert cpu["client_cpu_share"] < 0.5 and set(cpu) == {"client_cpu_share", "server_cpu_s"}
    finally:
        server.kill()
        server.wait()
    _, cpu = run_client(["true"], server.pid, timeout=60)    # the server is gone: no figure
    assert set(cpu) == {"client_cpu_share"}
    with pytest.raises(subprocess.CalledProcessError):
        run_client(["false"], timeout=60, check=True)
    with pytest.raises(subprocess.TimeoutExpired):
        run_client(["sleep", "30"], timeout=0.2)           # killed and reaped, not left running


def test_udp_client_reports_its_cpu_and_the_servers():
    """osvrt.bench.net.rr (the C client in this thread) against a kernel
    echo served by a Python thread of this process: its own CPU share, the
    rest of the process's CPU as the server's, and the requests they made,
    which the report turns into CPU per request (loose bounds: shares of a
    shared CPU, not timings)."""
    from osvrt.bench import net
    server = net.ThreadEchoServer()
    try:
        before = time.process_time()
        r = net.rr(server.addr, 2000, window=4)
        whole = time.process_time() - before
    finally:
        server.close()
    assert r["done"] == r["requests"] == 2000 and r["lost"] == 0, r
    assert 0.0 < r["client_cpu_share"] <= 1.5, r
    # The server's share is the process's CPU less the client thread's: both
    # are there, and they add up to the whole (a few ms of this thread's
    # Python around the call aside).
    assert r["server_cpu_s"] > 0.0 and r["client_cpu_s"] > 0.0, r   # the echo's recvfrom + sendto
    assert r["server_cpu_s"] < whole and abs(r["server_cpu_s"] + r["client_cpu_s"] - whole) < 0.005, \
        (r, whole)


def test_report_names_busy_clients_and_the_server_cpu_per_request():
    log = []
    m = Measure("rps", "a throughput row", "req/s", "higher",
                _fake("osvrt", [100_000.0] * 3, log), [_fake("uvloop", [50_000.0] * 3, log)])
    r = run_measure(m, rounds=3, warmup=0)
    for name, client, server_s in (("osvrt", 0.99, 0.8), ("uvloop", 0.6, 1.0)):
        r["contenders"][name]["details"] = [
            {"client_cpu_share": client, "server_cpu_s": server_s, "requests": 100_000}] * 3
    doc = {"measures": [r], "osvrt_version": "0", "elapsed_s": 1.0,
           "host": {"python": "3", "python_implementation": "CPython", "system": "Linux",
                    "cpus_available": [0], "loadavg_before": None},
           "options": {"cpus": [0], "rounds": 3, "warmup": 0}}
    text = " ".join(cli.render_report(doc, Utf8(), width=100, plain=True).split())
    assert "client's CPU (median share of one CPU) osvrt 0.99, uvloop 0.60" in text
    assert "against osvrt the client was busy all the time it ran" in text   # not uvloop
    # 0.8 s of CPU for 100,000 requests: 8 us a request; 1.0 s: 10 us
    assert "osvrt 8.00 µs, uvloop 10.00 µs" in text
    ascii_text = " ".join(cli.render_report(doc, io.StringIO(), width=100, plain=True).split())
    assert "osvrt 8.00 us, uvloop 10.00 us" in ascii_text and "µ" not in ascii_text


def test_a_row_whose_setup_fails_keeps_its_targets_in_the_status_block():
    # The early return left no targets: the status block lost the row's
    # target and called a setup error "n/a".
    import contextlib

    @contextlib.contextmanager
    def broken():
        raise RuntimeError("the server did not start")
        yield
    log = []
    m = Measure("wrk_rps", "wrk req/s", "req/s", "higher", _fake("osvrt", [1.0], log),
                [_fake("uvloop_protocol", [1.0], log)],
                targets=[Target("uvloop_protocol", ">=", 1.25, "x")], setup=broken)
    r = run_measure(m, rounds=1, warmup=0)
    assert r["status"] == "error"
    assert [(t["op"], t["value"], t["met"]) for t in r["targets"]] == [(">=", 1.25, None)]
    doc = {"measures": [r], "osvrt_version": "0", "elapsed_s": 1.0,
           "host": {"python": "3", "python_implementation": "CPython", "system": "Linux",
                    "cpus_available": [0], "loadavg_before": None},
           "options": {"cpus": [0], "rounds": 1, "warmup": 0}}
    text = cli.render_report(doc, Utf8(), width=160, plain=True)
    status = text[text.index("status (osvrt/peer"):]
    assert "1.25" in status and "error: RuntimeError: the server did not start" in status
    assert "targets: 0 met, 0 missed, 1 not measured" in text


def test_instructions_name_a_target_whose_peer_was_not_measured():
    from osvrt.bench import instructions
    text = instructions.report({"spawn": {"osvrt": 4800.0}, "http": {"osvrt": 11000.0}})
    assert "target osvrt/asyncio <= 0.25: n/a (asyncio not measured" in text
    assert "target osvrt/uvloop-Protocol <= 0.5: n/a (uvloop not measured" in text


def test_a_bench_server_that_logs_a_lot_still_starts_and_one_that_fails_says_why():
    """The wrk and redis rows' servers (and the ceiling script's) start through
    streams.launch: their stderr goes to a file, so 200 KB of log before the
    listen (a pipe holds 64 KiB, and nobody reads it during a round) cannot
    block one; a server that exits names itself and the end of its stderr."""
    from osvrt.bench.rows import streams
    port = streams.free_port()
    chatty = ("import socket, sys, time\n"
              "sys.stderr.write('x' * 200_000); sys.stderr.flush()\n"
              f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n"
              "time.sleep(60)\n")
    proc = streams.launch([sys.executable, "-c", chatty], port, "chatty server")
    try:
        assert proc.poll() is None
    finally:
        streams.stop(proc)
    assert proc.pid not in streams._stderr_files
    with pytest.raises(RuntimeError, match=r"failing server failed \(server exited with 3\): boom"):
        streams.launch([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"],
                       streams.free_port(), "failing server")
