"""`python -m osvrt bench`: the OSv paper's comparison, on this host.

Measures osvrt against C pthreads (csrc/peers.c, built with the core),
Python threading, asyncio and, when installed, uvloop, trio and gevent, in
alternating rounds (measure.py), then prints a table shaped like the OSv
paper's (rows: measures; columns: osvrt, each peer, the ratio against the
target), writes every raw figure as JSON and, when matplotlib is installed
(`pip install 'osvrt[plot]'`), draws a PNG bar chart on a log scale.
"""
import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import sys
import textwrap
import time

from . import peers
from .measure import Contender, Measure, Target, Unavailable, run_measure

DEFAULT_JSON = "osvrt-bench.json"
DEFAULT_PLOT = "osvrt-bench.png"

# Workload sizes and rounds.  The full run takes 1-2 minutes on a 2-CPU KVM
# guest (the method wants medians of >= 5 rounds), --quick 10-20 s; a loaded
# host stretches both, which the time budget bounds.  Measure weights (below)
# are their shares of the budget.
FULL = dict(colocated=40_000, apart=8_000, spawn=5_000, spawn_threads=2_000, memory=20_000,
            memory_threads=2_000, wake=5_000, queue=1_000_000, udp=5_000, udp_tps=20_000)
QUICK = dict(colocated=10_000, apart=2_000, spawn=5_000, spawn_threads=1_000, memory=10_000,
             memory_threads=1_000, wake=2_000, queue=300_000, udp=2_000, udp_tps=5_000)
ROUNDS = {"full": 9, "quick": 3}
BUDGET_S = {"full": 150.0, "quick": 25.0}     # rounds past min_rounds stop at the budget
OSVRT_TIMEOUT = 120.0                          # one osvrt round, before it counts as hung

# The table's peer columns, in order; a column shows only if some row has it.
COLUMNS = [
    ("c_futex", "C futex"), ("c_mutex", "C mutex"), ("threading", "threading"),
    ("asyncio", "asyncio"), ("uvloop", "uvloop"), ("trio", "trio"), ("gevent", "gevent"),
    ("kernel_udp", "kernel UDP"),
]
LEGEND = {
    "osvrt": "green threads on an osvrt.Runtime over the chosen CPUs: Event ping-pong "
             "(pinned), spawn+join, parked on an Event, rt.run() from the main thread, "
             "the C pushlist, a UDP echo green thread on a net channel",
    "c_futex": "two pthreads handing a turn over a futex word (csrc/peers.c)",
    "c_mutex": "two pthreads, mutex + condvar (OSv's own test shape); pushlist row: "
               "a FIFO under a pthread mutex, same 2 producers + 1 consumer",
    "threading": "Python threads: Condition ping-pong (colocated), Event ping-pong (apart), "
                 "Thread start+join, parked Thread, Event round trip to a second thread",
    "asyncio": "Future hand-off; create_task + await; parked Task",
    "uvloop": "as asyncio, on uvloop's loop",
    "trio": "lowlevel park/reschedule; nursery.start_soon; parked task",
    "gevent": "Event ping-pong; spawn + joinall; parked greenlet",
    "kernel_udp": "a kernel UDP socket on 127.0.0.1 served by a Python thread on the second "
                  "CPU; in both UDP rows the client is C (osvrt.net.bench, no GIL) on the "
                  "first CPU, and osvrt's worker runs on the second",
}


# ---------------------------------------------------------------------------
# the rows

def _completed(n):
    def check(r):
        if r.get("a") != n or r.get("b") != n:
            raise RuntimeError(f"ping-pong completed {r.get('a')}/{r.get('b')} of {n} round trips")
    return check


def _all_done(n):
    def check(r):
        if r["done"] != n:
            raise RuntimeError(f"{r['done']} of {n} tasks ran")
    return check


def _answered(n):
    def check(r):
        if r["answered"] != n:
            raise RuntimeError(f"{r['answered']} of {n} round trips answered")
    return check


def _osvrt(rt, fn, *args):
    return rt.submit(fn, *args).result(OSVRT_TIMEOUT)


@contextlib.contextmanager
def _runtime(cpus, **options):
    import osvrt
    rt = osvrt.Runtime(cpus=cpus, **options).start()
    try:
        yield rt
    finally:
        peers.stop_runtime(rt)


@contextlib.contextmanager
def _runtime_and_echo(cpus):
    with _runtime(cpus) as rt, peers.EventEcho() as echo:
        yield rt, echo


@contextlib.contextmanager
def _udp_servers(cpus):
    """The UDP rows' placement and peer server; Unavailable unless osvrt.net
    imports here and a trial round (bind, echo) works."""
    if len(cpus) < 2:
        raise Unavailable(f"the UDP rows place client and server on 2 CPUs; running on {list(cpus)}")
    why = peers.udp_unavailable()
    if why is not None:
        raise Unavailable(f"osvrt.net not available: {why}")
    client_cpu, server_cpu = cpus[0], cpus[1]
    try:
        peers.udp_osvrt_round(20, 1, client_cpu, server_cpu, warm=0)
    except Exception as e:
        raise Unavailable(f"osvrt.net not available: {type(e).__name__}: {e}") from None
    server = peers.udp_thread_server(server_cpu)
    try:
        yield client_cpu, server_cpu, server
    finally:
        server.close()


def build_measures(cpus, sizes):
    """The rows of the comparison, for these CPU ids and workload sizes."""
    s = sizes
    c = cpus[0]
    n = s["colocated"]
    done = _completed(n)
    colocated = Measure(
        "switch_colocated", "switch, colocated", "ns", "lower",
        Contender("osvrt", "osvrt Event ping-pong, two green threads pinned to one CPU",
                  lambda rt: _osvrt(rt, peers.osvrt_event_pingpong, n, c, c), check=done),
        [Contender("c_futex", "C pthreads, futex word",
                   lambda rt: peers.c_pingpong("futex", c, c, n), check=done),
         Contender("c_mutex", "C pthreads, mutex + condvar",
                   lambda rt: peers.c_pingpong("condvar", c, c, n), check=done),
         Contender("threading", "threading.Condition, two threads pinned to one CPU",
                   lambda rt: peers.threading_condition_pingpong(n, c, c), check=done),
         Contender("asyncio", "asyncio Future hand-off",
                   lambda rt: peers.asyncio_future_pingpong(n), check=done),
         Contender("uvloop", "uvloop Future hand-off",
                   lambda rt: peers.asyncio_future_pingpong(n, "uvloop"), check=done,
                   requires="uvloop"),
         Contender("trio", "trio lowlevel park/reschedule",
                   lambda rt: peers.trio_park_pingpong(n), check=done, requires="trio"),
         Contender("gevent", "gevent Event ping-pong",
                   lambda rt: peers.gevent_event_pingpong(n), check=done, requires="gevent")],
        targets=[Target("c_futex", "<=", 1 / 3, "<= 1/3 of C futex"),
                 Target("uvloop", "<", 1.0, "faster than uvloop")],
        setup=lambda: _runtime(cpus), weight=24, sizes={"round_trips": n, "cpu": c},
        notes="ns per one-way switch = elapsed / (2 x round trips)")

    na = s["apart"]
    done_a = _completed(na)
    a, b = (cpus[0], cpus[1]) if len(cpus) > 1 else (c, None)

    @contextlib.contextmanager
    def apart_setup():
        if b is None:
            raise Unavailable(f"needs 2 CPUs; running on {list(cpus)}")
        with _runtime(cpus) as rt:
            yield rt

    apart = Measure(
        "switch_apart", "switch, apart", "ns", "lower",
        Contender("osvrt", "osvrt Event ping-pong, green threads pinned to two CPUs",
                  lambda rt: _osvrt(rt, peers.osvrt_event_pingpong, na, a, b), check=done_a),
        [Contender("c_futex", "C pthreads on two CPUs, futex word",
                   lambda rt: peers.c_pingpong("futex", a, b, na), check=done_a),
         Contender("c_mutex", "C pthreads on two CPUs, mutex + condvar",
                   lambda rt: peers.c_pingpong("condvar", a, b, na), check=done_a),
         Contender("threading", "threading.Event, two threads pinned to two CPUs",
                   lambda rt: peers.threading_event_pingpong(na, a, b), check=done_a)],
        targets=[Target("c_futex", "<=", 0.1, "<= 1/10 of C futex")],
        setup=apart_setup, weight=16, sizes={"round_trips": na, "cpus": [a, b]},
        notes="ns per one-way switch = elapsed / (2 x round trips)")

    ns, nt = s["spawn"], s["spawn_threads"]
    spawn = Measure(
        "spawn_join", "spawn + join", "tasks/s", "higher",
        Contender("osvrt", "osvrt.spawn + Thread.join of no-op green threads",
                  lambda rt: _osvrt(rt, peers.osvrt_spawn_join, ns), key="per_s",
                  check=_all_done(ns)),
        [Contender("asyncio", "create_task + await", lambda rt: peers.asyncio_spawn_join(ns),
                   key="per_s", check=_all_done(ns)),
         Contender("uvloop", "create_task + await on uvloop",
                   lambda rt: peers.asyncio_spawn_join(ns, "uvloop"), key="per_s",
                   check=_all_done(ns), requires="uvloop"),
         Contender("trio", "nursery.start_soon", lambda rt: peers.trio_spawn_join(ns),
                   key="per_s", check=_all_done(ns), requires="trio"),
         Contender("gevent", "gevent.spawn + joinall", lambda rt: peers.gevent_spawn_join(ns),
                   key="per_s", check=_all_done(ns), requires="gevent"),
         Contender("threading", "threading.Thread start + join",
                   lambda rt: peers.threading_spawn_join(nt), key="per_s",
                   check=_all_done(nt))],
        targets=[Target("asyncio", ">=", 5.0, ">= 5x asyncio")],
        setup=lambda: _runtime(cpus), weight=7,
        sizes={"tasks": ns, "threading_tasks": nt})

    nm, nmt = s["memory"], s["memory_threads"]

    def mem(peer, k):
        return lambda ctx: peers.memory_in_subprocess(peer, k)

    memory = Measure(
        "memory", "memory / parked thread", "bytes", "lower",
        Contender("osvrt", "green thread parked on an osvrt.Event (Runtime(cpus=1))",
                  mem("osvrt", nm), key="bytes_per_task"),
        [Contender("asyncio", "Task parked on an asyncio.Event", mem("asyncio", nm),
                   key="bytes_per_task"),
         Contender("uvloop", "Task parked on uvloop", mem("uvloop", nm),
                   key="bytes_per_task", requires="uvloop"),
         Contender("trio", "trio task parked on a trio.Event", mem("trio", nm),
                   key="bytes_per_task", requires="trio"),
         Contender("gevent", "greenlet parked on a gevent Event", mem("gevent", nm),
                   key="bytes_per_task", requires="gevent"),
         Contender("threading", "threading.Thread parked on a threading.Event",
                   mem("threading", nmt), key="bytes_per_task")],
        targets=[Target("asyncio", "<=", 0.5, "<= 1/2 of asyncio")],
        weight=38, sizes={"tasks": nm, "threading_tasks": nmt},
        notes="RSS growth / tasks, each peer in a fresh interpreter")

    nw = s["wake"]
    wake = Measure(
        "foreign_wake", "foreign-thread wake", "us", "lower",
        Contender("osvrt", "rt.run(async no-op) from the main thread",
                  lambda ctx: peers.osvrt_submit_round_trips(ctx[0], nw, "run"), scale=1e-3,
                  check=_answered(nw)),
        [Contender("threading", "threading.Event round trip to a second Python thread",
                   lambda ctx: ctx[1].round_trips(nw), scale=1e-3, check=_answered(nw))],
        targets=[Target("threading", "<=", 0.5, "<= 1/2 of threading.Event")],
        setup=lambda: _runtime_and_echo(cpus), weight=6, sizes={"round_trips": nw},
        notes="microseconds per round trip")

    nq = s["queue"]
    pushlist = Measure(
        "pushlist", "pushlist 2P+1C", "ns/item", "lower",
        Contender("osvrt", "osvrt's lock-free MPSC pushlist (C)",
                  lambda ctx: peers.c_queue("pushlist", 2, nq)),
        [Contender("c_mutex", "a FIFO under a pthread mutex (C)",
                   lambda ctx: peers.c_queue("mutex", 2, nq))],
        targets=[Target("c_mutex", "<=", 0.2, ">= 5x a mutex queue")],
        weight=2, sizes={"producers": 2, "items_per_producer": nq})

    nu, nt_ = s["udp"], s["udp_tps"]

    def udp_done(k):
        def check(r):
            if r["done"] != k:
                raise RuntimeError(f"{r['done']} of {k} transactions answered")
        return check

    udp = Measure(
        "udp_rr", "UDP request/response", "us", "lower",
        Contender("osvrt", "echo green thread on an osvrt.net channel",
                  lambda ctx: peers.udp_osvrt_round(nu, 1, ctx[0], ctx[1]), scale=1e-3,
                  check=udp_done(nu)),
        [Contender("kernel_udp", "kernel UDP socket served by a Python thread",
                   lambda ctx: peers.udp_peer_round(ctx[2], nu, 1, ctx[0]), scale=1e-3,
                   check=udp_done(nu))],
        targets=[Target("kernel_udp", "<=", 0.75, ">= 25% lower round trip")],
        setup=lambda: _udp_servers(cpus), weight=5, sizes={"transactions": nu, "window": 1},
        notes="mean round trip, one request in flight (UDP_RR), C client on the first CPU")
    udp_tps = Measure(
        "udp_tps", "UDP transactions, 16 in flight", "tx/s", "higher",
        Contender("osvrt", "echo green thread on an osvrt.net channel",
                  lambda ctx: peers.udp_osvrt_round(nt_, 16, ctx[0], ctx[1]), key="per_s",
                  check=udp_done(nt_)),
        [Contender("kernel_udp", "kernel UDP socket served by a Python thread",
                   lambda ctx: peers.udp_peer_round(ctx[2], nt_, 16, ctx[0]), key="per_s",
                   check=udp_done(nt_))],
        targets=[Target("kernel_udp", ">=", 1.25, ">= 1.25x transactions/s")],
        setup=lambda: _udp_servers(cpus), weight=5, sizes={"transactions": nt_, "window": 16},
        notes="transactions per second with 16 requests in flight, C client")
    return [colocated, apart, spawn, memory, wake, pushlist, udp, udp_tps]


MEASURE_KEYS = ("switch_colocated", "switch_apart", "spawn_join", "memory", "foreign_wake",
                "pushlist", "udp_rr", "udp_tps")


# ---------------------------------------------------------------------------
# progress bar (stderr, no dependency)

class Progress:
    def __init__(self, total, stream=None, enabled=True):
        self.total, self.done = max(1, total), 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()
        self._last_title = None

    def step(self, label):
        self.done = min(self.total, self.done + 1)
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.t0
        if self.tty:
            width = shutil.get_terminal_size((80, 20)).columns
            bar_w = 24
            fill = int(bar_w * self.done / self.total)
            line = (f"[{'#' * fill}{'.' * (bar_w - fill)}] {self.done}/{self.total} "
                    f"{elapsed:5.1f}s  {label}")
            self.stream.write("\r" + line[:width - 1].ljust(width - 1))
            self.stream.flush()
        else:
            title = label.split(":")[0]
            if title != self._last_title:
                self._last_title = title
                self.stream.write(f"[{100 * self.done // self.total:3d}%] {elapsed:5.1f}s  "
                                  f"{title}\n")
                self.stream.flush()

    def close(self):
        if self.enabled and self.tty:
            width = shutil.get_terminal_size((80, 20)).columns
            self.stream.write("\r" + " " * (width - 1) + "\r")
            self.stream.flush()


# ---------------------------------------------------------------------------
# the table

def _symbols(stream):
    enc = getattr(stream, "encoding", None) or "ascii"
    try:
        "≤≥µ×—".encode(enc)
    except (UnicodeEncodeError, LookupError):
        return {"<=": "<=", ">=": ">=", "us": "us", "x": "x", "none": "-"}
    return {"<=": "≤", ">=": "≥", "us": "µs", "x": "×", "none": "—"}


def _fmt_value(v):
    if v is None:
        return "?"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _header(name):
    return dict(COLUMNS).get(name, name)


def _fmt_target(t, sym):
    op = {"<=": sym["<="], ">=": sym[">="], "<": "<", ">": ">"}[t["op"]]
    value = f"{t['value']:.3g}"
    if t["ratio"] is None:
        return f"n/a vs {_header(t['peer'])} ({op}{value}): {t['why_not']}"
    word = "met" if t["met"] else "MISSED"
    r = t["ratio"]
    ratio = f"{r:.3f}" if r < 1 else f"{r:.2f}" if r < 100 else f"{r:,.0f}"
    return f"{ratio} vs {_header(t['peer'])} ({op}{value}) {word}"


def _unit_label(r, sym):
    return {"us": sym["us"]}.get(r["unit"], r["unit"])


def render_table(results, stream=None):
    """The comparison as text: one row per measure, a column per peer."""
    sym = _symbols(stream if stream is not None else sys.stdout)
    present = {name for r in results if r["status"] == "ok"
               for name in list(r["contenders"]) + list(r["unavailable"])}
    known = dict(COLUMNS)
    cols = [(k, h) for k, h in COLUMNS if k in present]
    cols += [(k, k) for k in sorted(present - set(known) - {"osvrt"})]
    header = ["measure", "osvrt"] + [h for _, h in cols] + ["ratio osvrt/peer (target)"]
    rows = []
    for r in results:
        label = f"{r['title']} ({_unit_label(r, sym)})"
        if r["status"] != "ok":
            rows.append([label, f"n/a ({r['reason']})" if r["status"] == "n/a"
                         else f"error ({r['reason']})"])
            continue
        cells = [label]
        for name in ["osvrt"] + [k for k, _ in cols]:
            if name in r["contenders"]:
                cell = r["contenders"][name]
                cells.append("error" if cell["error"] else _fmt_value(cell["median"]))
            elif name in r["unavailable"]:
                cells.append("n/a")
            else:
                cells.append(sym["none"])
        targets = [_fmt_target(t, sym) for t in r["targets"]] or [""]
        rows.append(cells + [targets[0]])
        for extra in targets[1:]:
            rows.append([""] * (len(cells)) + [extra])
    ncol = len(header)
    widths = [len(h) for h in header]
    for row in rows:
        if len(row) == ncol:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell))
    widths[0] = max(len(row[0]) for row in rows + [header]) if rows else widths[0]

    def line(row):
        if len(row) == 2:                  # a row that could not be measured
            return f"{row[0]:<{widths[0]}}  {row[1]}"
        out = [f"{row[0]:<{widths[0]}}"]
        out += [f"{cell:>{widths[i + 1]}}" for i, cell in enumerate(row[1:-1])]
        out.append(row[-1])
        return "  ".join(out).rstrip()

    rule = "-" * (sum(widths[:-1]) + 2 * (ncol - 1) + max(widths[-1], 12))
    return "\n".join([line(header), rule] + [line(row) for row in rows])


def render_report(doc, stream=None):
    """Header, table, legend and summary, as printed."""
    results = doc["measures"]
    sym = _symbols(stream if stream is not None else sys.stdout)
    h = doc["host"]
    load = " ".join(f"{x:.2f}" for x in h["loadavg_before"]) if h["loadavg_before"] else "?"
    out = [f"osvrt bench: osvrt {doc['osvrt_version']} on {h['python']} "
           f"({h['python_implementation']}), {h['system']}; CPUs {doc['options']['cpus']} "
           f"of {h['cpus_available']}",
           f"{doc['options']['rounds']} alternating rounds per measure after "
           f"{doc['options']['warmup']} warm-up, medians; ratios = median of per-round "
           f"osvrt/peer; load average at start {load}",
           "", render_table(results, stream), ""]
    used = [k for k, _ in COLUMNS if any(r["status"] == "ok" and (
        k in r["contenders"] or k in r["unavailable"]) for r in results)]
    out.append("columns:")
    for k in ["osvrt"] + used:
        out.extend(textwrap.wrap(LEGEND.get(k, ""), 100, initial_indent=f"  {_header(k):<10} ",
                                 subsequent_indent=" " * 13))
    unavailable = {}
    for r in results:
        for name, why in r["unavailable"].items():
            unavailable.setdefault(name, why)
    errors = [f"{r['title']}: {name}: {cell['error']}" for r in results
              for name, cell in r["contenders"].items() if cell["error"]]
    out.append(f"  n/a: not installed or not measurable here;  {sym['none']}: not part of "
               "that measure")
    if unavailable:
        out.append("unavailable peers: " + "; ".join(f"{k} ({v})" for k, v in unavailable.items()))
    for r in results:
        if r["status"] != "ok":
            out.append(f"not measured: {r['title']}: {r['reason']}")
        elif r["rounds_done"] < r["rounds_planned"]:
            out.append(f"{r['title']}: {r['rounds_done']} of {r['rounds_planned']} rounds "
                       f"(time budget)")
    for r in results:
        for name, cell in r["contenders"].items():
            lost = sum(d.get("lost", 0) for d in cell.get("details", []))
            if lost:
                done = sum(d.get("done", d.get("answered", 0)) for d in cell["details"])
                out.append(f"{r['title']}: {_header(name)} lost {lost:,} of {done:,} requests "
                           "(see the JSON)")
    for e in errors:
        out.append(f"error: {e}")
    tally = {"met": 0, "MISSED": 0, "n/a": 0}
    for r in results:
        for t in r["targets"]:
            tally["n/a" if t["met"] is None else "met" if t["met"] else "MISSED"] += 1
        if r["status"] != "ok":
            tally["n/a"] += 1
    out.append(f"targets (BENCHMARKS.md): {tally['met']} met, {tally['MISSED']} missed, "
               f"{tally['n/a']} not measured; ran {doc['elapsed_s']:.0f} s")
    return "\n".join(out)


# ---------------------------------------------------------------------------
# the chart

def draw_plot(doc, path):
    """A PNG bar chart, one panel per measure, log scale.  Returns None, or
    the reason it was not drawn."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except ImportError:
        return "matplotlib is not installed (pip install 'osvrt[plot]')"
    results = [r for r in doc["measures"] if r["status"] == "ok"
               and any(c["median"] for c in r["contenders"].values())]
    if not results:
        return "nothing was measured"
    ncols = 2
    nrows = math.ceil(len(results) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(12, 2.6 * nrows + 0.8), squeeze=False)
    for ax in axes.flat[len(results):]:
        ax.set_visible(False)
    for ax, r in zip(axes.flat, results):
        names = [n for n, c in r["contenders"].items() if c["median"]]
        values = [r["contenders"][n]["median"] for n in names]
        colors = ["#c0392b" if n == "osvrt" else "#7f8c8d" for n in names]
        ax.barh([_header(n) for n in names[::-1]], values[::-1], color=colors[::-1])
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        better = "lower" if r["better"] == "lower" else "higher"
        ax.set_title(f"{r['title']} ({r['unit']}, {better} is better)", fontsize=10)
        for i, v in enumerate(values[::-1]):
            ax.text(v, i, " " + _fmt_value(v), va="center", fontsize=8)
        ax.set_xlim(min(values) / 2, max(values) * 8)
        ax.tick_params(labelsize=8)
    fig.suptitle(f"osvrt bench on {doc['host']['system']}, CPUs {doc['options']['cpus']} "
                 f"(medians of {doc['options']['rounds']} alternating rounds)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# ---------------------------------------------------------------------------
# the command

def add_arguments(p):
    p.add_argument("--quick", action="store_true",
                   help="smaller sizes and 3 rounds: 10-20 s instead of 1-2 minutes")
    p.add_argument("--json", metavar="PATH", default=DEFAULT_JSON,
                   help=f"write the raw figures here (default: ./{DEFAULT_JSON}; '-' for none)")
    p.add_argument("--plot", metavar="PATH", default=None,
                   help=f"draw the PNG bar chart here (default: ./{DEFAULT_PLOT} when matplotlib "
                        "is installed; '-' for none)")
    p.add_argument("--cpus", metavar="CPUS", default=None,
                   help="CPUs to run on: a count (first N of this process's CPUs) or ids "
                        "such as 0,1 (default: the first two)")
    p.add_argument("--rounds", type=int, default=None,
                   help=f"measured rounds per measure (default {ROUNDS['full']}; "
                        f"{ROUNDS['quick']} with --quick)")
    p.add_argument("--only", metavar="KEYS", default=None,
                   help="comma-separated measures to run: " + ",".join(MEASURE_KEYS))
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="time budget: past it, measures stop after 3 rounds "
                        "(default 150; 25 with --quick)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def parse_cpus(spec):
    """--cpus: None -> the first two CPUs of this process; 'N' -> the first N;
    'a,b' -> those ids.  ValueError (naming the value) otherwise."""
    import osvrt
    available = sorted(os.sched_getaffinity(0))
    if spec is None:
        return tuple(available[:2])
    spec = str(spec).strip()
    try:
        if "," in spec or spec.startswith("["):
            ids = [int(x) for x in spec.strip("[]()").split(",") if x.strip()]
            return osvrt.Runtime(cpus=ids).cpus
        return osvrt.Runtime(cpus=int(spec)).cpus
    except ValueError as e:
        raise ValueError(f"--cpus {spec!r}: {e}") from None


def _loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def run(args, out=None):
    """Run the comparison described by parsed `args`; returns the JSON document."""
    out = out if out is not None else sys.stdout
    cpus = parse_cpus(args.cpus)
    mode = "quick" if args.quick else "full"
    sizes = dict(QUICK if args.quick else FULL)
    sizes.update(getattr(args, "sizes", None) or {})
    rounds = args.rounds if args.rounds is not None else ROUNDS[mode]
    if rounds < 1:
        raise ValueError(f"--rounds {rounds}: must be >= 1")
    warmup = getattr(args, "warmup", None)
    warmup = 1 if warmup is None else warmup
    budget = args.budget if args.budget is not None else BUDGET_S[mode]
    if not budget > 0:
        raise ValueError(f"--budget {budget}: must be > 0 seconds")
    measures = build_measures(cpus, sizes)
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        bad = [k for k in keys if k not in MEASURE_KEYS]
        if bad:
            raise ValueError(f"--only {args.only!r}: unknown {bad}; one of {list(MEASURE_KEYS)}")
        measures = [m for m in measures if m.key in keys]

    import osvrt
    version = _version()
    doc = {
        "osvrt_bench": 1,
        "osvrt_version": version,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {
            "python": platform.python_version(),
            "python_implementation": platform.python_implementation(),
            "system": f"{platform.system()} {platform.release()} {platform.machine()}",
            "cpus_available": sorted(os.sched_getaffinity(0)),
            "loadavg_before": _loadavg(),
            "osvrt_path": os.path.dirname(osvrt.__file__),
        },
        "options": {"mode": mode, "cpus": list(cpus), "rounds": rounds, "warmup": warmup,
                    "budget_s": budget, "sizes": sizes},
        "measures": [],
    }
    total = sum((rounds + (0 if m.key == "memory" else warmup)) * len(m.contenders)
                for m in measures)
    progress = Progress(total, enabled=not args.no_progress)
    t0 = time.monotonic()
    weights_left = sum(m.weight for m in measures)
    try:
        for m in measures:
            left = budget - (time.monotonic() - t0)
            deadline = time.monotonic() + max(0.0, left) * m.weight / weights_left
            weights_left -= m.weight
            before = progress.done
            res = run_measure(m, rounds=rounds, warmup=0 if m.key == "memory" else warmup,
                              deadline=deadline, progress=progress.step)
            planned = (rounds + (0 if m.key == "memory" else warmup)) * len(m.contenders)
            progress.done = before + planned      # skipped steps (n/a, errors) count as done
            doc["measures"].append(res)
    finally:
        progress.close()
    doc["elapsed_s"] = round(time.monotonic() - t0, 1)
    doc["host"]["loadavg_after"] = _loadavg()
    report = render_report(doc, out)
    doc["report"] = report
    print(report, file=out)

    if args.json and args.json != "-":
        try:
            with open(args.json, "w") as f:
                json.dump(doc, f, indent=1)
            print(f"raw figures: {os.path.abspath(args.json)}", file=out)
        except OSError as e:
            print(f"raw figures: not written: {e}", file=out)
    plot = args.plot if args.plot is not None else DEFAULT_PLOT
    if plot != "-":
        try:
            why = draw_plot(doc, plot)
        except OSError as e:
            why = str(e)
        if why is None:
            print(f"chart: {os.path.abspath(plot)}", file=out)
        else:
            print(f"chart: not drawn: {why}", file=out)
    out.flush()
    return doc


def _version():
    try:
        from importlib.metadata import version
        return version("osvrt")
    except Exception:
        return "(not installed)"


def main(argv=None):
    """`python -m osvrt bench [options]`, callable from Python."""
    from ..__main__ import main as osvrt_main
    return osvrt_main(["bench"] + list(sys.argv[1:] if argv is None else argv))
