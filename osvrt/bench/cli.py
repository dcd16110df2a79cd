"""`python -m osvrt bench`: the OSv paper's comparison, on this host.

Measures osvrt against C pthreads (csrc/peers.c, built with the core),
Python threading, asyncio and, when installed, uvloop, trio and gevent, in
alternating rounds (measure.py), then prints a table shaped like the OSv
paper's (rows: measures; columns: osvrt, each peer, the ratio against the
target; one block per measure on a terminal narrower than WIDE_MIN), with
each median's spread over the rounds, writes every raw figure as JSON and,
when matplotlib is installed (`pip install 'osvrt[plot]'`), draws a PNG chart
of the ratios osvrt/peer.  rich, when installed (`osvrt[bench]`), draws the
tables and the progress bar; without it they are plain text.
"""
import contextlib
import datetime
import io
import json
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
            memory_threads=2_000, wake=5_000, queue=1_000_000, udp=5_000, udp_tps=20_000,
            aio_handoff=20_000, aio_spawn=20_000, aio_http_s=3)
QUICK = dict(colocated=10_000, apart=2_000, spawn=5_000, spawn_threads=1_000, memory=10_000,
             memory_threads=1_000, wake=2_000, queue=300_000, udp=2_000, udp_tps=5_000,
             aio_handoff=5_000, aio_spawn=5_000, aio_http_s=1)
ROUNDS = {"full": 9, "quick": 3}
BUDGET_S = {"full": 150.0, "quick": 25.0}     # rounds past min_rounds stop at the budget
OSVRT_TIMEOUT = 120.0                          # one osvrt round, before it counts as hung

# The table's peer columns, in order; a column shows only if some row has it.
COLUMNS = [
    ("c_futex", "C futex"), ("c_mutex", "C mutex"), ("threading", "threading"),
    ("asyncio", "asyncio"), ("uvloop", "uvloop"), ("trio", "trio"), ("gevent", "gevent"),
    ("kernel_udp", "kernel UDP"),
]


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
def _real_client(cpus, test):
    """CPUs and the kernel-socket peer of a real-client row (sockperf, dnsperf):
    Unavailable without osvrt.net or without the Debian package (installed
    on the fly when running as root)."""
    if len(cpus) < 2:
        raise Unavailable(f"the real-client rows place client and server on 2 CPUs; "
                          f"running on {list(cpus)}")
    why = peers.udp_unavailable()
    if why is not None:
        raise Unavailable(f"osvrt.net not available: {why}")
    from osvrt.net import bench as nb
    package = {"sockperf": nb.SOCKPERF_PACKAGE, "dnsperf": nb.DNSPERF_PACKAGE}[test]
    path, why = nb.find_tool(test, package)
    if path is None:
        raise Unavailable(why)
    server = nb.real_client_server(test, cpus[1])
    try:
        yield cpus[0], cpus[1], server
    finally:
        server.close()


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
                 Target("uvloop", "<=", 0.5, "<= 1/2 of uvloop")],
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
        # 1/3 under the GIL (a cross-CPU switch needs a GIL hand-off); the
        # 1/10 is the target for a free-threaded build
        targets=[Target("c_futex", "<=", 1 / 3, "<= 1/3 of C futex")],
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
    from osvrt.net import bench as nb

    def real_client(test, key):
        return (Contender("osvrt", "echo green thread on an osvrt.net channel (default placement)",
                          lambda ctx: nb.real_client_osvrt(test, ctx[0], ctx[1], 1.0), key=key),
                [Contender("kernel_udp", "kernel UDP socket served by a Python thread",
                           lambda ctx: nb.real_client_kernel(test, ctx[2], ctx[0], 1.0), key=key)])

    def sockperf(pct):
        return Measure(
            f"sockperf_{pct}", f"sockperf ping-pong {pct} (one-way)", "us", "lower",
            *real_client("sockperf", f"{pct}_us"),
            targets=[Target("kernel_udp", "<=", 0.75, f">= 25% lower {pct}")],
            setup=lambda: _real_client(cpus, "sockperf"), weight=3,
            sizes={"seconds": 1, "msg_size": 14},
            notes="Debian's sockperf, ping-pong -m 14, client pinned to the first CPU")

    sockperf_p50, sockperf_p99 = sockperf("p50"), sockperf("p99")
    dnsperf_qps = Measure(
        "dnsperf_qps", "dnsperf queries/s (DNS-shaped echo)", "q/s", "higher",
        *real_client("dnsperf", "qps"),
        targets=[Target("kernel_udp", ">=", 1.25, ">= 1.25x queries/s")],
        setup=lambda: _real_client(cpus, "dnsperf"), weight=3,
        sizes={"seconds": 1, "outstanding": 100},
        notes="Debian's dnsperf against an echo that answers valid DNS responses")
    from ..aio import bench as aio_bench          # the asyncio-loop rows (issue #20)
    return [colocated, apart, spawn, memory, wake, pushlist, udp, udp_tps,
            sockperf_p50, sockperf_p99, dnsperf_qps, *aio_bench.measures(cpus, sizes)]


MEASURE_KEYS = ("switch_colocated", "switch_apart", "spawn_join", "memory", "foreign_wake",
                "pushlist", "udp_rr", "udp_tps", "sockperf_p50", "sockperf_p99", "dnsperf_qps",
                "aio_handoff", "aio_spawn", "aio_http")


# ---------------------------------------------------------------------------
# progress on stderr: rich's bar on a terminal when rich is installed, else
# a bar drawn with \r (terminal) or one line per measure (a log file)

def _rich():
    """The rich package, or None: the report and the progress bar degrade to
    plain text without it (it is in the bench and test extras, not required)."""
    if os.environ.get("OSVRT_BENCH_PLAIN"):
        return None
    try:
        import rich  # noqa: F401
        import rich.console
        import rich.progress
        import rich.table
        import rich.box
    except ImportError:
        return None
    return rich


class Progress:
    """The plain progress display: a bar redrawn with \\r on a terminal, and
    one line per measure otherwise (a log gets no carriage returns)."""

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


class RichProgress:
    """rich.progress on a terminal.  Refreshed by step() only (no refresh
    thread): a round takes milliseconds to seconds, and a thread waking 10
    times a second would run beside the rounds being measured."""

    def __init__(self, total, stream):
        rich = _rich()
        self.total, self.done = max(1, total), 0
        console = rich.console.Console(file=stream, stderr=stream is sys.stderr)
        p = rich.progress
        self._bar = p.Progress(p.BarColumn(), p.MofNCompleteColumn(), p.TimeElapsedColumn(),
                               p.TextColumn("{task.description}"), console=console,
                               auto_refresh=False, transient=True)
        self._task = self._bar.add_task("", total=self.total)
        self._bar.start()

    def step(self, label):
        self.done = min(self.total, self.done + 1)
        self._bar.update(self._task, completed=self.done, description=label, refresh=True)

    def close(self):
        self._bar.stop()


def make_progress(total, stream=None, enabled=True):
    stream = stream if stream is not None else sys.stderr
    if enabled and _rich() is not None and hasattr(stream, "isatty") and stream.isatty():
        return RichProgress(total, stream)
    return Progress(total, stream=stream, enabled=enabled)


# ---------------------------------------------------------------------------
# the report

WIDE_MIN = 100          # below this many columns, one block per measure

def _symbols(stream):
    enc = getattr(stream, "encoding", None) or "ascii"
    try:
        "≤≥µ×—–±".encode(enc)
    except (UnicodeEncodeError, LookupError):
        return {"<=": "<=", ">=": ">=", "us": "us", "x": "x", "none": "-", "range": "-",
                "pm": "+-", "unicode": False}
    return {"<=": "≤", ">=": "≥", "us": "µs", "x": "×", "none": "—", "range": "–",
            "pm": "±", "unicode": True}


def _fmt_value(v):
    if v is None:
        return "?"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _fmt_ratio(r):
    return f"{r:.3f}" if r < 1 else f"{r:.2f}" if r < 100 else f"{r:,.0f}"


def _header(name):
    return dict(COLUMNS).get(name, name)


def _fmt_op(t, sym):
    op = {"<=": sym["<="], ">=": sym[">="], "<": "<", ">": ">"}[t["op"]]
    return f"{op}{t['value']:.3g}"


def _fmt_target(t, sym):
    if t["ratio"] is None:
        return f"n/a vs {_header(t['peer'])} ({_fmt_op(t, sym)}): {t['why_not']}"
    word = "met" if t["met"] else "MISSED"
    return f"{_fmt_ratio(t['ratio'])} vs {_header(t['peer'])} ({_fmt_op(t, sym)}) {word}"


def _unit_label(r, sym):
    return {"us": sym["us"]}.get(r["unit"], r["unit"])


def _fmt_spread(sp, sym):
    """'±4%' (half the interquartile range, as a share of the median), '!'
    appended when the row is unstable; '' for a single round."""
    if not sp or sp.get("n", 2) < 2:
        return ""
    return f"{sym['pm']}{50 * sp['iqr_rel']:.0f}%" + ("!" if sp["unstable"] else "")


def _fmt_range(sp, sym):
    if not sp:
        return ""
    return f"{_fmt_value(sp['min'])}{sym['range']}{_fmt_value(sp['max'])}"


def _columns(results):
    """The peer columns some measured row has, in COLUMNS order."""
    present = {name for r in results if r["status"] == "ok"
               for name in list(r["contenders"]) + list(r["unavailable"])}
    cols = [(k, h) for k, h in COLUMNS if k in present]
    cols += [(k, k) for k in sorted(present - set(dict(COLUMNS)) - {"osvrt"})]
    return cols


def _cell_text(r, name, sym):
    if name in r["contenders"]:
        cell = r["contenders"][name]
        if cell["error"]:
            return "error"
        sp = _fmt_spread(cell.get("spread"), sym)
        return _fmt_value(cell["median"]) + (f" {sp}" if sp else "")
    if name in r["unavailable"]:
        return "n/a"
    return sym["none"]


def _wide_rows(results, sym):
    """(header, rows) of the one-table layout; a row of 2 cells is a measure
    that could not be measured, a row of blanks carries a further target."""
    cols = _columns(results)
    header = ["measure", "osvrt"] + [h for _, h in cols] + ["ratio osvrt/peer (target)"]
    rows = []
    for r in results:
        label = f"{r['title']} ({_unit_label(r, sym)})"
        if r["status"] != "ok":
            rows.append([label, f"n/a ({r['reason']})" if r["status"] == "n/a"
                         else f"error ({r['reason']})"])
            continue
        cells = [label] + [_cell_text(r, name, sym) for name in ["osvrt"] + [k for k, _ in cols]]
        targets = [_fmt_target(t, sym) for t in r["targets"]] or [""]
        rows.append(cells + [targets[0]])
        for extra in targets[1:]:
            rows.append([""] * len(cells) + [extra])
    return header, rows


def _plain_grid(header, rows, right):
    """Columns padded to their widest cell; `right`: indexes aligned right.
    The last column is left ragged.  Rows shorter than the header (a reason
    in place of figures) run on from their first cell."""
    ncol = len(header)
    widths = [len(h) for h in header]
    for row in rows:
        if len(row) == ncol:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell))
    widths[0] = max([widths[0]] + [len(row[0]) for row in rows])

    def line(row):
        if len(row) < ncol:
            return f"{row[0]:<{widths[0]}}  " + "  ".join(row[1:])
        return "  ".join(f"{c:>{widths[i]}}" if i in right else f"{c:<{widths[i]}}"
                         for i, c in enumerate(row)).rstrip()
    rule = "-" * (sum(widths[:-1]) + 2 * (ncol - 1) + max(widths[-1], 12))
    return [line(header), rule] + [line(row) for row in rows], len(rule)


def _wide_width(results, sym):
    header, rows = _wide_rows(results, sym)
    lines, _ = _plain_grid(header, rows, set(range(1, len(header) - 1)))
    return max(len(x) for x in lines)


def _block_rows(r, sym):
    """One measure's narrow block: a row per contender that has a figure
    (contender, median, ±IQR, min–max, osvrt/peer, target)."""
    rows = []
    targets = {t["peer"]: t for t in r["targets"]}
    for name, cell in r["contenders"].items():
        if cell["error"]:
            rows.append([_header(name), "error", "", "", "", cell["error"]])
            continue
        sp = cell.get("spread")
        ratio = r["ratios"].get(name, {}).get("median")
        t = targets.get(name)
        target = ""
        if t is not None and t["ratio"] is not None:
            target = f"{_fmt_op(t, sym)} {'met' if t['met'] else 'MISSED'}"
        rows.append([_header(name), _fmt_value(cell["median"]), _fmt_spread(sp, sym),
                     _fmt_range(sp, sym), "" if ratio is None else _fmt_ratio(ratio), target])
    return rows


def _block_notes(r, sym):
    """The lines under a narrow block: peers not measured, targets without a ratio."""
    notes = []
    if r["unavailable"]:
        notes.append("n/a: " + ", ".join(f"{_header(k)} ({v})" for k, v in r["unavailable"].items()))
    notes += [_fmt_target(t, sym) for t in r["targets"] if t["ratio"] is None]
    return notes


BLOCK_HEADER = ["", "median", "spread", "min{range}max", "osvrt/peer", "target"]


def _block_title(r, sym):
    return f"{r['title']} ({_unit_label(r, sym)}, {r['better']} is better)"


def _render_narrow_plain(results, sym, width):
    out = []
    for r in results:
        if out:
            out.append("")
        out.append(_block_title(r, sym))
        if r["status"] != "ok":
            out += textwrap.wrap(("n/a" if r["status"] == "n/a" else "error") + f" ({r['reason']})",
                                 width - 1, initial_indent="  ", subsequent_indent="    ")
            continue
        header = [h.format(range=sym["range"]) for h in BLOCK_HEADER]
        rows = _block_rows(r, sym)
        keep = list(range(len(header)))
        while True:
            lines, w = _plain_grid([header[i] for i in keep], [[row[i] for i in keep] for row in rows],
                                   set(range(1, len(keep) - 1)))
            if max(len(x) for x in lines) + 2 <= width or 3 not in keep:
                break
            keep.remove(3)            # min–max goes first when the terminal is narrow
        del lines[1]                  # the rule under the header: the title is the rule here
        out += ["  " + x for x in lines]
        for note in _block_notes(r, sym):
            out += textwrap.wrap(note, width - 1, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(out)


def _rich_box(sym):
    """rich's SIMPLE_HEAD (a rule under the header, no other lines), drawn
    with '-' where the stream cannot print box characters."""
    box = _rich().box
    if sym["unicode"]:
        return box.SIMPLE_HEAD
    return box.Box("    \n    \n -  \n    \n    \n    \n    \n    \n", ascii=True)


def _rich_console(width, sym):
    rich = _rich()
    buf = io.StringIO()
    return rich.console.Console(file=buf, width=width, force_terminal=False, no_color=True,
                                emoji=False, highlight=False, legacy_windows=False,
                                safe_box=not sym["unicode"]), buf


def _render_wide_rich(results, sym, width):
    rich = _rich()
    header, rows = _wide_rows(results, sym)
    console, buf = _rich_console(width, sym)
    table = rich.table.Table(box=_rich_box(sym), pad_edge=False, show_edge=False)
    for i, h in enumerate(header):
        last = i == len(header) - 1
        table.add_column(h, justify="left" if i in (0, len(header) - 1) else "right",
                         no_wrap=not last, overflow="fold")
    for row in rows:
        if len(row) < len(header):     # not measured: the reason across the figures
            table.add_row(row[0], *[""] * (len(header) - 2), row[1])
        else:
            table.add_row(*row)
    console.print(table)
    return "\n".join(x.rstrip() for x in buf.getvalue().rstrip("\n").splitlines())


def _render_narrow_rich(results, sym, width):
    rich = _rich()
    console, buf = _rich_console(width, sym)
    box = _rich_box(sym)
    for r in results:
        if r["status"] != "ok":
            console.print(_block_title(r, sym))
            console.print(f"  {'n/a' if r['status'] == 'n/a' else 'error'} ({r['reason']})")
            console.print()
            continue
        table = rich.table.Table(title=_block_title(r, sym), title_justify="left", box=box,
                                 pad_edge=False, show_edge=False)
        for i, h in enumerate(BLOCK_HEADER):
            table.add_column(h.format(range=sym["range"]),
                             justify="left" if i in (0, 5) else "right", overflow="fold")
        for row in _block_rows(r, sym):
            table.add_row(*row)
        console.print(table)
        for note in _block_notes(r, sym):
            console.print(textwrap.fill(note, width - 1, initial_indent="  ",
                                        subsequent_indent="    "))
        console.print()
    return "\n".join(x.rstrip() for x in buf.getvalue().rstrip("\n").splitlines())


def terminal_width(stream=None):
    """Columns of the terminal the report goes to (COLUMNS wins, as
    shutil.get_terminal_size reads it); 120 when it is not a terminal."""
    return shutil.get_terminal_size((120, 24)).columns


def render_table(results, stream=None, width=None, plain=None):
    """The comparison as text, fitted to `width` columns: one table with a
    column per peer when it fits (and width >= WIDE_MIN), otherwise one block
    per measure listing only the contenders it measured.  rich draws the
    tables when installed, unless `plain`."""
    sym = _symbols(stream if stream is not None else sys.stdout)
    width = width or terminal_width(stream)
    use_rich = not plain and _rich() is not None
    # rich puts 3 characters between columns where the plain grid puts 2
    wide = width >= WIDE_MIN and _wide_width(results, sym) + (
        len(_columns(results)) + 2 if use_rich else 0) < width
    if wide:
        if use_rich:
            return _render_wide_rich(results, sym, width)
        header, rows = _wide_rows(results, sym)
        return "\n".join(_plain_grid(header, rows, set(range(1, len(header) - 1)))[0])
    if use_rich:
        return _render_narrow_rich(results, sym, width)
    return _render_narrow_plain(results, sym, width)


# What each column ran, per measure: the legend prints only the measures that ran.
LEGEND = {
    "osvrt": {
        "switch_colocated": "Event ping-pong, two green threads pinned to one CPU",
        "switch_apart": "Event ping-pong, green threads pinned to two CPUs",
        "spawn_join": "spawn + join of no-op green threads",
        "memory": "green thread parked on an Event, Runtime(cpus=1), fresh interpreter",
        "foreign_wake": "rt.run(async no-op) from the main thread",
        "pushlist": "the C pushlist, 2 producer pthreads + 1 consumer",
        "udp_rr": "a UDP echo green thread on an osvrt.net channel",
        "udp_tps": "a UDP echo green thread on an osvrt.net channel",
        "sockperf_p50": "a UDP echo green thread on an osvrt.net channel, default placement",
        "sockperf_p99": "a UDP echo green thread on an osvrt.net channel, default placement",
        "dnsperf_qps": "a DNS-answering green thread on an osvrt.net channel, default placement",
    },
    "c_futex": {"*": "two pthreads handing a turn over a futex word (csrc/peers.c)"},
    "c_mutex": {"switch_colocated": "two pthreads, mutex + condvar (OSv's own test shape)",
                "switch_apart": "two pthreads, mutex + condvar (OSv's own test shape)",
                "pushlist": "a FIFO under a pthread mutex, same 2 producers + 1 consumer"},
    "threading": {"switch_colocated": "Condition ping-pong, two threads on one CPU",
                  "switch_apart": "Event ping-pong, two threads on two CPUs",
                  "spawn_join": "Thread start + join",
                  "memory": "Thread parked on an Event",
                  "foreign_wake": "Event round trip to a second thread"},
    "asyncio": {"switch_colocated": "Future hand-off", "spawn_join": "create_task + await",
                "memory": "Task parked on an Event"},
    "uvloop": {"*": "as asyncio, on uvloop's loop"},
    "trio": {"switch_colocated": "lowlevel park/reschedule",
             "spawn_join": "nursery.start_soon", "memory": "task parked on a trio.Event"},
    "gevent": {"switch_colocated": "Event ping-pong", "spawn_join": "spawn + joinall",
               "memory": "greenlet parked on an Event"},
    "kernel_udp": {"*": "a kernel UDP socket on 127.0.0.1 served by a Python thread on the "
                        "second CPU"},
}
# said once when a UDP row ran
UDP_NOTE = ("UDP rows: the client is C (osvrt.net.bench, no GIL) on the first CPU; osvrt's "
            "worker and the peer's server thread run on the second")


def _legend(results, sym, width):
    ran = [r for r in results if r["status"] == "ok"]
    titles = {r["key"]: r["title"] for r in ran}
    out = ["columns (what each ran, per measure):"]
    names = ["osvrt"] + [k for k, _ in _columns(ran)]
    wrap = max(40, min(width, 110) - 1)
    for k in names:
        per = LEGEND.get(k, {})
        keys = [r["key"] for r in ran if k in r["contenders"] or k in r["unavailable"]]
        if "*" in per:
            text = per["*"]
        else:
            parts = [(per.get(key) or next(
                (r["contenders"][k]["label"] for r in ran if r["key"] == key
                 and k in r["contenders"]), None), key) for key in keys]
            text = "; ".join(f"{titles[key]}: {p}" if len(keys) > 1 else p
                             for p, key in parts if p)
        if text:
            out += textwrap.wrap(text, wrap, initial_indent=f"  {_header(k):<10} ",
                                 subsequent_indent=" " * 13)
    if any(r["key"] in ("udp_rr", "udp_tps") for r in ran):
        out += textwrap.wrap(UDP_NOTE, wrap, initial_indent="  ", subsequent_indent="    ")
    from .measure import UNSTABLE_IQR
    out += textwrap.wrap(
        f"{sym['pm']}N%: half the interquartile range of the rounds, as a share of the median; "
        f"! unstable: interquartile range > {100 * UNSTABLE_IQR:.0f}% of the median (trust "
        f"the median less; rerun on a quieter host or with more --rounds)",
        wrap, initial_indent="  ", subsequent_indent="    ")
    cells = {c for r in ran for c in _wide_rows([r], sym)[1][0][1:]}
    if "n/a" in cells:
        out.append("  n/a: not installed or not measurable here")
    if sym["none"] in cells:
        out.append(f"  {sym['none']}: not part of that measure")
    return out


def render_report(doc, stream=None, width=None, plain=None):
    """Header, table, legend and summary, as printed."""
    results = doc["measures"]
    sym = _symbols(stream if stream is not None else sys.stdout)
    width = width or terminal_width(stream)
    h = doc["host"]
    load = " ".join(f"{x:.2f}" for x in h["loadavg_before"]) if h["loadavg_before"] else "?"
    head = (f"osvrt bench: osvrt {doc['osvrt_version']} on {h['python']} "
            f"({h['python_implementation']}), {h['system']}; CPUs {doc['options']['cpus']} "
            f"of {h['cpus_available']}")
    method = (f"{doc['options']['rounds']} alternating rounds per measure after "
              f"{doc['options']['warmup']} warm-up, medians; ratios = median of per-round "
              f"osvrt/peer; load average at start {load}")
    out = textwrap.wrap(head, width - 1) + textwrap.wrap(method, width - 1)
    out += ["", render_table(results, stream, width=width, plain=plain), ""]
    out += _legend(results, sym, width)
    unavailable = {}
    for r in results:
        for name, why in r["unavailable"].items():
            unavailable.setdefault(name, why)
    errors = [f"{r['title']}: {name}: {cell['error']}" for r in results
              for name, cell in r["contenders"].items() if cell["error"]]
    if unavailable:
        out += textwrap.wrap("unavailable peers: " + "; ".join(
            f"{k} ({v})" for k, v in unavailable.items()), width - 1, subsequent_indent="  ")
    for r in results:
        if r["status"] != "ok":
            out.append(f"not measured: {r['title']}: {r['reason']}")
        elif r["rounds_done"] < r["rounds_planned"]:
            out.append(f"{r['title']}: {r['rounds_done']} of {r['rounds_planned']} rounds "
                       f"(time budget)")
    unstable = [f"{r['title']} ({', '.join(_header(n) for n, c in r['contenders'].items() if (c.get('spread') or {}).get('unstable'))})"
                for r in results if r["status"] == "ok" and any(
                    (c.get("spread") or {}).get("unstable") for c in r["contenders"].values())]
    if unstable:
        out += textwrap.wrap("unstable: " + "; ".join(unstable), width - 1,
                             subsequent_indent="  ")
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
    out.append(f"targets: {tally['met']} met, {tally['MISSED']} missed, "
               f"{tally['n/a']} not measured; ran {doc['elapsed_s']:.0f} s")
    return "\n".join(out)


def render_compare(old, new, stream=None, width=None):
    """This run against an earlier JSON: per measure and contender measured in
    both, the old and new medians and new/old, and whether that is better."""
    sym = _symbols(stream if stream is not None else sys.stdout)
    width = width or terminal_width(stream)
    old_rows = {r["key"]: r for r in old.get("measures", []) if r.get("status") == "ok"}
    header = ["measure", "contender", "old", "new", "new/old", ""]
    rows = []
    for r in new["measures"]:
        o = old_rows.get(r["key"])
        if r["status"] != "ok" or o is None:
            continue
        first = True
        for name, cell in r["contenders"].items():
            before = (o["contenders"].get(name) or {}).get("median")
            after = cell["median"]
            if not before or not after:
                continue
            ch = after / before
            if abs(ch - 1) < 0.02:
                verdict = "same"
            else:
                verdict = "better" if (ch < 1) == (r["better"] == "lower") else "worse"
            rows.append([f"{r['title']} ({_unit_label(r, sym)})" if first else "", _header(name),
                         _fmt_value(before), _fmt_value(after), f"{_fmt_ratio(ch)}{sym['x']}",
                         verdict])
            first = False
    title = f"change against {old.get('started', '?')} (osvrt {old.get('osvrt_version', '?')}):"
    if not rows:
        return title + " no measure in common"
    lines, w = _plain_grid(header, rows, {2, 3, 4})
    if w > width - 1:          # narrow: the measure on its own line above its contenders
        lines = []
        for row in rows:
            if row[0]:
                lines.append(row[0])
            arrow = "→" if sym["unicode"] else "->"
            lines.append(f"  {row[1]:<10} {row[2]:>9} {arrow} {row[3]:<9} {row[4]:>6} {row[5]}")
    return "\n".join([title, "  within 2%: same; better/worse by the measure's direction"]
                     + lines)


# ---------------------------------------------------------------------------
# the chart

CHART_OPS = {"<=": "≤", ">=": "≥", "<": "<", ">": ">"}


def _chart_unit(unit):
    return {"us": "µs"}.get(unit, unit)


def draw_plot(doc, path):
    """A PNG: per measure, one horizontal bar per peer with the ratio
    osvrt/peer (median of the per-round ratios), its interquartile range as a
    whisker, 1 (parity) and the target as lines, on a linear axis.  Returns
    None, or the reason it was not drawn."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'osvrt[plot]')"
    results = [r for r in doc["measures"] if r["status"] == "ok" and r["ratios"]]
    if not results:
        return "no ratio was measured"
    heights = [max(2, len(r["ratios"])) for r in results]
    fig, axes = plt.subplots(len(results), 1, figsize=(9, 0.42 * sum(heights) + 1.0 * len(results)
                                                          + 0.6),
                             gridspec_kw={"height_ratios": heights}, squeeze=False,
                             constrained_layout=True)      # room for the suptitle, unlike tight_layout
    for ax, r in zip(axes[:, 0], results):
        lower = r["better"] == "lower"
        targets = {t["peer"]: t for t in r["targets"]}
        names = list(r["ratios"])[::-1]
        ratios = [r["ratios"][n]["median"] for n in names]
        lo = [r["ratios"][n]["median"] - ((r["ratios"][n].get("spread") or {}).get("q1")
                                          or r["ratios"][n]["median"]) for n in names]
        hi = [((r["ratios"][n].get("spread") or {}).get("q3") or r["ratios"][n]["median"])
              - r["ratios"][n]["median"] for n in names]
        good = [(x < 1) == lower and x != 1 for x in ratios]
        colors = ["#27ae60" if g else "#c0392b" for g in good]
        labels = [f"{_header(n)}  ({_fmt_value(r['contenders'][n]['median'])} "
                  f"{_chart_unit(r['unit'])})" for n in names]
        ypos = list(range(len(names)))
        ax.barh(ypos, ratios, color=colors, height=0.6, xerr=[lo, hi],
                error_kw={"ecolor": "#333333", "capsize": 3, "lw": 1})
        ax.set_yticks(ypos, labels, fontsize=8)
        ax.axvline(1.0, color="#555555", lw=1)
        xmax = max([x + h for x, h in zip(ratios, hi)] + [1.0]
                   + [t["value"] for t in r["targets"]])
        for i, n in enumerate(names):
            ax.text(ratios[i] + hi[i] + xmax * 0.01, i, _fmt_ratio(ratios[i]), va="center",
                    fontsize=8)
            t = targets.get(n)
            if t is not None:
                ax.plot([t["value"]] * 2, [i - 0.42, i + 0.42], color="#2c3e50", lw=2,
                        ls=(0, (2, 1)))
                word = "" if t["met"] is None else " met" if t["met"] else " missed"
                ax.text(t["value"], i + 0.45, f"target {CHART_OPS[t['op']]}{t['value']:.3g}{word}",
                        fontsize=7, ha="center", va="bottom", color="#2c3e50")
        ax.set_xlim(0, xmax * 1.18)
        ax.set_ylim(-0.6, len(names) - 0.4 + 0.35)
        osvrt_med = r["contenders"]["osvrt"]["median"]
        ax.set_title(f"{r['title']}: osvrt {_fmt_value(osvrt_med)} {_chart_unit(r['unit'])}"
                     f" — osvrt/peer, {'lower' if lower else 'higher'} is better",
                     fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
    axes[-1, 0].set_xlabel("ratio osvrt / peer (median of per-round ratios; whisker: "
                           "interquartile range; green: osvrt ahead)", fontsize=8)
    fig.suptitle(f"osvrt bench on {doc['host']['system']}, CPUs {doc['options']['cpus']} "
                 f"({doc['options']['rounds']} alternating rounds)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# ---------------------------------------------------------------------------
# the command

def add_arguments(p):
    p.add_argument("--quick", action="store_true",
                   help="smaller sizes and 3 rounds: 10-20 s instead of 1-2 minutes")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for the JSON and the chart (created if missing; default: the "
                        "current directory); relative --json/--plot paths are taken in it")
    p.add_argument("--json", metavar="PATH", default=DEFAULT_JSON,
                   help=f"write the raw figures here (default: {DEFAULT_JSON}; '-' for none)")
    p.add_argument("--plot", metavar="PATH", default=None,
                   help=f"draw the PNG chart here (default: {DEFAULT_PLOT} when matplotlib "
                        "is installed; '-' for none)")
    p.add_argument("--compare", metavar="OLD.json", default=None,
                   help="after the report, print each median's change against an earlier "
                        "run's JSON")
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
    p.add_argument("--plain", action="store_true",
                   help="plain-text tables even when rich is installed")
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


def _out_path(args, path):
    out_dir = getattr(args, "out", None)
    if out_dir and not os.path.isabs(path):
        return os.path.join(out_dir, path)
    return path


def _load_old(path):
    """The --compare document, read before anything runs, so a bad path fails
    in a second rather than after the measures."""
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"--compare {path}: {e}") from None
    if not isinstance(old, dict) or "measures" not in old:
        raise ValueError(f"--compare {path}: not an osvrt bench JSON (no 'measures')")
    return old


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
    old = _load_old(args.compare) if getattr(args, "compare", None) else None
    if getattr(args, "out", None):
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as e:
            raise ValueError(f"--out {args.out}: {e}") from None
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
    progress = make_progress(total, enabled=not args.no_progress)
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
    width = getattr(args, "width", None) or terminal_width(out)
    plain = getattr(args, "plain", False)
    report = render_report(doc, out, width=width, plain=plain)
    doc["report"] = report
    print(report, file=out)
    if old is not None:
        print("", file=out)
        print(render_compare(old, doc, out, width=width), file=out)

    if args.json and args.json != "-":
        path = _out_path(args, args.json)
        try:
            with open(path, "w") as f:
                json.dump(doc, f, indent=1)
            print(f"raw figures: {os.path.abspath(path)}", file=out)
        except OSError as e:
            print(f"raw figures: not written: {e}", file=out)
    plot = args.plot if args.plot is not None else DEFAULT_PLOT
    if plot != "-":
        path = _out_path(args, plot)
        try:
            why = draw_plot(doc, path)
        except OSError as e:
            why = str(e)
        if why is None:
            print(f"chart: {os.path.abspath(path)}", file=out)
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
