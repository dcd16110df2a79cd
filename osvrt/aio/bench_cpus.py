"""asyncio servers on several CPUs: which layout serves more requests (#20).

    python -m osvrt.aio.bench_cpus                      # 3 alternating rounds, 5 s each
    python -m osvrt.aio.bench_cpus --rounds 5 --duration 5 --loops osvrt,uvloop

The server is osvrt.aio.bench's asyncio.Protocol HTTP/1.1 keep-alive server.
Layouts, for each loop, under one wrk (-t2 -c128, keep-alive):
- one:       one process, one loop, pinned to the first CPU (the aio_http row's
             server, but with wrk on two threads);
- threads:   one process, one loop per CPU, each in its own OS thread pinned
             to its CPU (osvrt.new_event_loop(cpu=c); for uvloop the thread
             pins itself), each with its own SO_REUSEPORT listener on one port:
             the per-core pattern inside one interpreter;
- processes: one process per CPU, each one loop pinned to its CPU, each with
             its own SO_REUSEPORT listener on one port (the pattern of
             gunicorn/uvicorn --workers).
wrk runs unpinned: on a host with as many CPUs as servers it competes with
them, which the report says.  Rounds alternate the order of the contenders.
"""
import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

from . import bench
from ..bench import wrk as wrk_cli

LAYOUTS = ("one", "threads", "processes")


def serve_threads(kind, port, cpus, ready_fd):
    """One loop per CPU in its own OS thread, each a reuse_port server on
    `port`, until SIGTERM (taken by the main thread with sigwait)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    loops, threads = [], []
    started = threading.Barrier(len(cpus) + 1)

    def one(cpu):
        if kind == "osvrt":
            import osvrt
            loop = osvrt.new_event_loop(cpu=cpu, stall_threshold=None, stats_file=False)
        else:
            os.sched_setaffinity(0, {cpu})      # this thread only (Linux)
            loop = bench.loop_factory(kind)()
        stop = loop.create_future()
        loops.append((loop, stop))

        async def main():
            srv = await loop.create_server(bench.HttpProtocol, "127.0.0.1", port,
                                           backlog=1024, reuse_port=True)
            started.wait()
            await stop
            srv.close()

        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    for c in cpus:
        t = threading.Thread(target=one, args=(c,), name=f"loop-cpu{c}")
        t.start()
        threads.append(t)
    started.wait()
    os.write(ready_fd, b"1")
    os.close(ready_fd)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    for loop, stop in loops:
        loop.call_soon_threadsafe(lambda s=stop: s.done() or s.set_result(None))
    for t in threads:
        t.join(30)
        if t.is_alive():
            sys.exit(f"bench_cpus: the loop thread {t.name} did not stop in 30 s")


class ThreadsServer(bench.Server):
    def __init__(self, kind, cpus):
        self.port = bench.free_port()
        r, w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "osvrt.aio.bench_cpus", "serve-threads", kind,
             str(self.port), ",".join(map(str, cpus)), str(w)], pass_fds=(w,))
        os.close(w)
        self._wait_started(r, f"the {kind} threads server", bench.START_TIMEOUT_S)


class Servers:
    """Several bench.Server processes on one reuse_port port."""

    def __init__(self, kind, cpus):
        self.port = bench.free_port()
        self.servers = []
        try:
            for c in cpus:
                self.servers.append(bench.Server(kind, c, port=self.port))
        except BaseException:
            self.close()
            raise

    def close(self, timeout=60):
        for s in self.servers:
            s.close(timeout)


def start(kind, layout, cpus):
    if layout == "one":
        return bench.Server(kind, cpus[0])
    if layout == "threads":
        return ThreadsServer(kind, cpus)
    return Servers(kind, cpus)


def wrk(port, duration, conns=128, threads=2):
    done = subprocess.run(wrk_cli.argv(f"http://127.0.0.1:{port}/", duration, conns, threads),
                          capture_output=True, text=True, timeout=duration + 60)
    r = wrk_cli.read(done, f"127.0.0.1:{port}")          # errors fail the round
    return r["rps"], r["p99_ms"] / 1e3


def run(loops, rounds, duration, cpus):
    contenders = [(k, lay) for k in loops for lay in LAYOUTS]
    results = {c: [] for c in contenders}
    for r in range(rounds):
        order = contenders if r % 2 == 0 else contenders[::-1]
        for kind, layout in order:
            srv = start(kind, layout, cpus)
            try:
                results[(kind, layout)].append(wrk(srv.port, duration))
            finally:
                srv.close()
        print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return results


def report(results, cpus, rounds, duration, took):
    lines = [f"asyncio.Protocol HTTP server, wrk -t2 -c128 keep-alive, {duration} s x {rounds} "
             f"alternating rounds, CPUs {cpus} (wrk unpinned, sharing them), {took:.0f} s:"]
    med = {c: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
           for c, v in results.items()}
    for (kind, layout), (rps, p99) in med.items():
        base = med[(kind, "one")][0]
        lines.append(f"  {kind:8s} {layout:10s} {rps:10,.0f} req/s  p99 {p99 * 1e3:7.2f} ms  "
                     f"{rps / base:.2f}x its one-loop figure")
    if ("uvloop", "processes") in med and ("osvrt", "processes") in med:
        for layout in LAYOUTS:
            lines.append(f"  osvrt/uvloop, {layout}: "
                         f"{med[('osvrt', layout)][0] / med[('uvloop', layout)][0]:.2f}x")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve-threads":
        serve_threads(argv[1], int(argv[2]), [int(c) for c in argv[3].split(",")], int(argv[4]))
        return 0
    ap = argparse.ArgumentParser(prog="python -m osvrt.aio.bench_cpus",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds of wrk per contender")
    ap.add_argument("--loops", default=",".join(bench.available()[:2]),
                    help="loops to compare (default: osvrt and uvloop when installed)")
    ap.add_argument("--cpus", default=None, help="CPU ids for the servers (default: all)")
    args = ap.parse_args(argv)
    loops = [k for k in args.loops.split(",") if k]
    bad = [k for k in loops if k not in bench.LOOPS]
    if bad:
        ap.error(f"unknown loops {bad}: {', '.join(bench.LOOPS)}")
    cpus = (sorted(os.sched_getaffinity(0)) if args.cpus is None
            else [int(c) for c in args.cpus.split(",")])
    if len(cpus) < 2:
        ap.error(f"several CPUs are needed; this process may use {cpus}")
    t0 = time.monotonic()
    results = run(loops, args.rounds, args.duration, cpus)
    print(report(results, cpus, args.rounds, args.duration, time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
