"""Benchmarks of osvrt's asyncio loop against uvloop and asyncio's own loop.

    python -m osvrt.aio.bench                 # all rows, alternating rounds
    python -m osvrt.aio.bench --rows http --rounds 5 --duration 5
    python -m osvrt.aio.bench --instructions  # callgrind: instructions per unit

Rows (each loop in turn, round after round, so drift hits all alike):
- handoff: Future hand-off, ns per one-way switch (two tasks resolve each
  other's fresh Future; osvrt.bench.peers' workload, as in `osvrt bench`).
- spawn: create_task + await of no-op tasks, tasks/s.
- http: an asyncio.Protocol HTTP/1.1 keep-alive server (the idiomatic fastest
  server on uvloop), its process on one CPU, under wrk -c64 on the other CPU:
  requests/s and p99 latency.
Instructions per unit (callgrind, the difference of N and 2N units, as
osvrt.bench.instructions) for handoff, spawn and an HTTP request (a Python
client with 64 keep-alive connections sends N or 2N requests to the server
that runs under callgrind).
"""
import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

from ..bench import wrk
from ..bench.ready import START_TIMEOUT_S, wait_readable
from ..checks import count_argument

LOOPS = ("osvrt", "uvloop", "asyncio")


QUIET = False          # osvrt's loop without watchdog and stats file (callgrind runs)


def loop_factory(kind):
    if kind == "osvrt":
        import osvrt
        if QUIET:
            return lambda: osvrt.new_event_loop(stall_threshold=None, stats_file=False)
        return osvrt.new_event_loop
    if kind == "uvloop":
        import uvloop
        return uvloop.new_event_loop
    if kind == "asyncio":
        return asyncio.new_event_loop
    raise ValueError(f"loop {kind!r}: one of {', '.join(LOOPS)}")


def run_on(kind, coro_fn, *args):
    loop = loop_factory(kind)()
    try:
        return loop.run_until_complete(coro_fn(*args))
    finally:
        loop.close()


def handoff(kind, n):
    """ns per one-way Future hand-off."""
    from ..bench import peers
    return run_on(kind, peers.aio_future_pingpong, n)["ns"]


def spawn(kind, n):
    """create_task + await, tasks per second."""
    from ..bench import peers
    return run_on(kind, peers.aio_spawn_join, n)["per_s"]


# ---- the HTTP server ------------------------------------------------------------

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
            b"\r\nHello, world!")


class HttpProtocol(asyncio.Protocol):
    """A keep-alive HTTP/1.1 responder: one fixed response per request head
    (requests without a body, as wrk sends)."""

    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        buf = self.buf + data
        n = buf.count(b"\r\n\r\n")
        if n:
            self.transport.write(RESPONSE * n)
            buf = buf[buf.rfind(b"\r\n\r\n") + 4:]
        self.buf = buf


def serve(kind, port, cpu, ready_fd=None, reuse_port=False):
    """Serve HTTP on 127.0.0.1:port with this loop until SIGTERM/SIGINT
    (reuse_port: beside other servers of the port, osvrt/aio/bench_cpus.py)."""
    import signal
    os.sched_setaffinity(0, {cpu})             # the whole server process on one CPU
    if kind == "osvrt":
        import osvrt
        factory = lambda: osvrt.new_event_loop(cpu=cpu, stall_threshold=None,  # noqa: E731
                                               stats_file=False)
    else:
        factory = loop_factory(kind)

    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(HttpProtocol, "127.0.0.1", port, backlog=1024,
                                       reuse_port=reuse_port or None)
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        if ready_fd is not None:
            os.write(ready_fd, b"1")
            os.close(ready_fd)
        await stop
        srv.close()

    with asyncio.Runner(loop_factory=factory) as r:
        r.run(main())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The server in its own process (python -m osvrt.aio.bench serve ...)."""

    def __init__(self, kind, cpu, wrap=(), port=None, start_timeout=START_TIMEOUT_S):
        # port given: a reuse_port server beside others on it (bench_cpus.py)
        self.port = free_port() if port is None else port
        r, w = os.pipe()
        self.proc = subprocess.Popen(
            [*wrap, sys.executable, "-P", "-m", "osvrt.aio.bench", "serve", kind, str(self.port),
             str(cpu), str(w), *(["reuse_port"] if port is not None else [])], pass_fds=(w,))
        os.close(w)
        self._wait_started(r, f"the {kind} server", start_timeout)

    def _wait_started(self, r, what, timeout):
        """The server writes b"1" on pipe r once it listens: wait for it at
        most `timeout` s (then kill it), and close r."""
        try:
            try:
                wait_readable(r, time.monotonic() + timeout, what, timeout)
                why = None if os.read(r, 1) == b"1" else "it exited"
            except TimeoutError as e:
                why = str(e)
            if why is not None:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"{what} did not start ({why})")
        finally:
            os.close(r)

    def close(self, timeout=60):
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"the server did not stop on SIGTERM within {timeout} s")


def wrk_missing():
    """None when wrk can run, else why not (as root, apt-get installs a
    missing wrk first)."""
    from ..bench.net import find_tool
    path, why = find_tool("wrk", "wrk")
    return None if path is not None else why


def wrk_round(kind, server_cpu, client_cpu, duration=5, conns=64):
    """requests/s, p99 (s) of wrk -t1 -c64 against the loop's server, and the
    CPU shares of wrk and the server (osvrt/bench/client_cpu.py)."""
    from ..bench.client_cpu import run_client
    srv = Server(kind, server_cpu)
    try:
        done, cpu = run_client(["taskset", "-c", str(client_cpu),
                                *wrk.argv(f"http://127.0.0.1:{srv.port}/", duration, conns)],
                               srv.proc.pid, timeout=duration + 60)
    finally:
        srv.close()
    r = wrk.read(done, kind)            # errors fail the round
    if r["requests"] is not None:
        cpu["requests"] = r["requests"]  # the server's CPU per request (report)
    return r["rps"], r["p99_ms"] / 1e3, cpu


# ---- instructions (callgrind) ------------------------------------------------------

def http_client(port, n, conns=64):
    """n keep-alive GET requests over `conns` connections, one outstanding
    request per connection (as wrk sends them, no pipelining)."""
    import selectors
    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    sel = selectors.DefaultSelector()
    left = n
    pending = {}
    try:
        for _ in range(min(conns, n)):
            s = socket.create_connection(("127.0.0.1", port))
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            s.sendall(req)
            left -= 1
            pending[s] = 0
        done = 0
        while done < n:
            events = sel.select(30)
            if not events:
                raise RuntimeError(f"no answer in 30 s ({done} of {n} requests answered)")
            for key, _ in events:
                s = key.fileobj
                chunk = s.recv(1 << 16)
                if not chunk:
                    raise RuntimeError("the server closed a connection")
                pending[s] += len(chunk)
                while pending[s] >= len(RESPONSE):
                    pending[s] -= len(RESPONSE)
                    done += 1
                    if left:
                        s.sendall(req)
                        left -= 1
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()


def _callgrind(argv, timeout):
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cg.out")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        "--trace-children=no", *argv], check=True, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return _total(out)


def _total(path):
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def instructions_http(kind, n, cpu=0, timeout=900):
    """Instructions per request in the server process: callgrind's total for
    2n requests minus the total for n, over n (start-up and shutdown cancel)."""
    totals = []
    for k in (n, 2 * n):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "cg.out")
            # valgrind's own messages (its banner, an unhandled syscall) to a
            # file, not into the report
            srv = Server(kind, cpu, wrap=("valgrind", "--tool=callgrind",
                                          f"--callgrind-out-file={out}",
                                          f"--log-file={os.path.join(d, 'valgrind.log')}"),
                         start_timeout=timeout)   # callgrind starts Python slowly
            try:
                http_client(srv.port, k)
            finally:
                srv.close(timeout)
            totals.append(_total(out))
    return (totals[1] - totals[0]) / n


def instructions_unit(kind, row, n, timeout=900):
    # No stall watchdog and no stats file in osvrt's runtime: their OS threads
    # wake on wall-clock periods, which under valgrind's slowdown add work per
    # unit (as osvrt.bench.instructions does for the engine's own rows).
    code = (f"import gc; gc.collect(); gc.disable(); from osvrt.aio import bench; "
            f"bench.QUIET = True; bench.{row}({kind!r}, {n})")
    counts = [_callgrind([sys.executable, "-P", "-c", code.replace(f"{n})", f"{k})")], timeout)
              for k in (n, 2 * n)]
    per = (counts[1] - counts[0]) / n
    return per / 2 if row == "handoff" else per      # a round trip is two hand-offs


# ---- the driver --------------------------------------------------------------------

def available():
    have = ["osvrt", "asyncio"]
    try:
        import uvloop  # noqa: F401
        have.insert(1, "uvloop")
    except ImportError:
        pass
    return have


def run_rows(rows, rounds, duration, n_handoff, n_spawn, cpus):
    loops = available()
    server_cpu, client_cpu = cpus[0], cpus[-1]
    results = {row: {k: [] for k in loops} for row in rows}
    for r in range(rounds):
        order = loops if r % 2 == 0 else loops[::-1]      # alternate who goes first
        for kind in order:
            if "handoff" in rows:
                results["handoff"][kind].append(handoff(kind, n_handoff))
            if "spawn" in rows:
                results["spawn"][kind].append(spawn(kind, n_spawn))
            if "http" in rows:
                results["http"][kind].append(wrk_round(kind, server_cpu, client_cpu, duration))
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    return results


def report(results):
    lines = []
    med = lambda xs: statistics.median(xs)  # noqa: E731
    if "handoff" in results:
        h = {k: med(v) for k, v in results["handoff"].items()}
        lines.append("Future hand-off, ns per one-way switch (lower is better): " + ", ".join(
            f"{k} {v:.0f}" for k, v in h.items()))
        if "uvloop" in h:
            lines.append(f"  osvrt rate / uvloop rate: {h['uvloop'] / h['osvrt']:.2f}x "
                         f"(target >= 2x)")
    if "spawn" in results:
        s = {k: med(v) for k, v in results["spawn"].items()}
        lines.append("create_task + await, tasks/s (higher is better): " + ", ".join(
            f"{k} {v:,.0f}" for k, v in s.items()))
        if "uvloop" in s:
            lines.append(f"  osvrt / uvloop: {s['osvrt'] / s['uvloop']:.2f}x (target >= 2x)")
    if "http" in results:
        rps = {k: med([x[0] for x in v]) for k, v in results["http"].items()}
        p99 = {k: med([x[1] for x in v]) for k, v in results["http"].items()}
        lines.append("asyncio.Protocol HTTP server, wrk -t1 -c64 keep-alive: " + ", ".join(
            f"{k} {rps[k]:,.0f} req/s p99 {p99[k] * 1e3:.2f} ms" for k in rps))
        if "uvloop" in rps:
            lines.append(f"  osvrt / uvloop req/s: {rps['osvrt'] / rps['uvloop']:.2f}x "
                         f"(target >= 1.25x); p99 osvrt/uvloop {p99['osvrt'] / p99['uvloop']:.2f}")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":
        kind, port, cpu, fd = argv[1], int(argv[2]), int(argv[3]), int(argv[4])
        serve(kind, port, cpu, fd, reuse_port=argv[5:6] == ["reuse_port"])
        return 0
    ap = argparse.ArgumentParser(prog="python -m osvrt.aio.bench",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="handoff,spawn,http")
    ap.add_argument("--rounds", type=count_argument, default=5)
    ap.add_argument("--duration", type=count_argument, default=5, help="seconds of wrk per round")
    ap.add_argument("--handoff-n", type=count_argument, default=50_000)
    ap.add_argument("--spawn-n", type=count_argument, default=50_000)
    ap.add_argument("--instructions", action="store_true",
                    help="count instructions per unit with callgrind instead of timing")
    args = ap.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    bad = [r for r in rows if r not in ("handoff", "spawn", "http")]
    if bad or not rows:
        ap.error(f"--rows {args.rows!r}: {f'unknown rows {bad}' if bad else 'names no row'}; "
                 f"one or more of handoff, spawn, http")
    cpus = sorted(os.sched_getaffinity(0))
    if args.instructions:
        if shutil.which("valgrind") is None:
            sys.exit("valgrind is not installed")
        for kind in available():
            parts = []
            if "handoff" in rows:
                parts.append(f"handoff {instructions_unit(kind, 'handoff', 2000):,.0f}")
            if "spawn" in rows:
                parts.append(f"spawn {instructions_unit(kind, 'spawn', 2000):,.0f}")
            if "http" in rows:
                parts.append(f"http request {instructions_http(kind, 2000, cpus[0]):,.0f}")
            print(f"{kind}: instructions per unit: " + ", ".join(parts), flush=True)
        return 0
    if "http" in rows:
        why = wrk_missing()
        if why is not None:
            sys.exit(f"{why} (the http row needs it)")
    t0 = time.monotonic()
    results = run_rows(rows, args.rounds, args.duration, args.handoff_n, args.spawn_n, cpus)
    print(report(results))
    print(f"({args.rounds} alternating rounds, {time.monotonic() - t0:.0f} s, "
          f"CPUs {cpus}: server on {cpus[0]}, wrk on {cpus[-1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ---- rows of `python -m osvrt bench` ---------------------------------------------

def _loops(label, key, fn, **kw):
    """The osvrt contender and the peer contenders of one row: fn(kind) each."""
    from ..bench.measure import Contender
    out = [Contender(kind, f"{label} on {kind}'s loop", lambda ctx, k=kind: fn(k), key=key,
                     requires="uvloop" if kind == "uvloop" else None, **kw)
           for kind in LOOPS]
    return out[0], out[1:]


def measure_handoff(cpus, sizes):
    """Row aio_handoff: Future hand-off, ns one-way (target: 2x uvloop's rate)."""
    from ..bench.measure import Measure, Target
    n = sizes.get("aio_handoff", 500)             # the defaults: a tiny run (tests)
    return Measure("aio_handoff", "asyncio loop: Future hand-off", "ns", "lower",
                   *_loops("Future hand-off between two tasks", "ns",
                           lambda kind: {"ns": handoff(kind, n)}),
                   targets=[Target("uvloop", "<=", 0.5, "<= 1/2 of uvloop (2x its rate)")],
                   weight=4, sizes={"round_trips": n},
                   notes="ns per one-way hand-off; osvrt = osvrt.new_event_loop")


def measure_spawn(cpus, sizes):
    """Row aio_spawn: create_task + await, tasks/s (target: 2x uvloop)."""
    from ..bench.measure import Measure, Target
    n = sizes.get("aio_spawn", 500)
    return Measure("aio_spawn", "asyncio loop: create_task + await", "tasks/s", "higher",
                   *_loops("create_task + await of no-op tasks", "per_s",
                           lambda kind: {"per_s": spawn(kind, n)}),
                   targets=[Target("uvloop", ">=", 2.0, ">= 2x uvloop")],
                   weight=4, sizes={"tasks": n})


def measure_http(cpus, sizes):
    """Row aio_http: the asyncio.Protocol server under wrk -c64, req/s
    (target: 1.25x uvloop); p99_ms in the JSON."""
    import contextlib
    from ..bench.measure import Measure, Target, Unavailable
    secs = sizes.get("aio_http_s", 1)

    def http_row(kind):
        rps, p99, cpu = wrk_round(kind, cpus[0], cpus[-1], secs)
        return {"rps": rps, "p99_ms": p99 * 1e3, **cpu}

    def setup():
        why = wrk_missing()
        if why is not None:
            raise Unavailable(why)
        if len(cpus) < 2:
            raise Unavailable(f"server and wrk on 2 CPUs; running on {list(cpus)}")
        return contextlib.nullcontext()

    return Measure("aio_http", "asyncio loop: HTTP server, wrk", "req/s", "higher",
                   *_loops("asyncio.Protocol keep-alive server under wrk -t1 -c64", "rps",
                           http_row),
                   targets=[Target("uvloop", ">=", 1.25, ">= 1.25x uvloop req/s")],
                   setup=setup, weight=8, sizes={"seconds": secs, "connections": 64},
                   notes="server process on the first CPU, wrk on the last; p99_ms in the JSON")

