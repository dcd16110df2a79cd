"""Real-client rows of `python -m osvrt bench`: wrk (HTTP/1.1 keep-alive, 64
connections) and redis-benchmark (PING, SET, GET; 50 clients) against the
examples (examples/http_hello.py, examples/resp_server.py) on osvrt, on the
default placement and on one worker (the callback server,
net.serve_tcp_protocol), on one worker with a green thread per connection
(--streams: net.serve_tcp), and against asyncio.Protocol servers giving the
same responses on uvloop and on asyncio (issue #17's peers).

Each round starts the server in its own process, runs the client once, and
stops it; the rounds of the contenders alternate (osvrt.bench.measure).
benchmarks/bench_streams.py runs the same servers and clients.  Run as
`python -m osvrt.bench.rows.streams NAME KIND PORT`, it is a peer server.
"""
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import IO

from .. import wrk
from ..catalog import row
from ..client_cpu import require_success, run_client
from ..measure import Contender, Measure, Target, Unavailable

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
EXAMPLES = os.path.join(ROOT, "examples")
CONNECTIONS = 64


def protocol_server(kind, port, use_uvloop):
    """The fastest thing an asyncio/uvloop user writes: an asyncio.Protocol
    (no streams, no coroutine per connection), same responses as the examples."""
    import asyncio
    sys.path.insert(0, EXAMPLES)
    if kind == "http":
        from http_hello import respond  # type: ignore[import-not-found]  # examples/

        class Server(asyncio.Protocol):
            def connection_made(self, transport):
                self.t, self.buf = transport, b""

            def data_received(self, data):
                out, self.buf, close = respond(self.buf + data if self.buf else data)
                if out:
                    self.t.write(out)
                if close:
                    self.t.close()
    else:
        from resp_server import execute, parse_one  # type: ignore[import-not-found]

        class Server(asyncio.Protocol):
            def connection_made(self, transport):
                self.t, self.buf = transport, b""

            def data_received(self, data):
                buf = self.buf + data if self.buf else data
                out, pos = [], 0
                try:
                    while True:
                        args, pos = parse_one(buf, pos)
                        if args is None:
                            break
                        if args:
                            out.append(execute(args))
                except ValueError:
                    self.t.close()
                    return
                self.buf = buf[pos:]
                if out:
                    self.t.write(b"".join(out))

    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(Server, "127.0.0.1", port, backlog=1024)
        print("ready", flush=True)
        async with srv:
            await srv.serve_forever()
    if use_uvloop:
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())


def server_cmd(name, kind, port, cpus=None):
    """The command line of contender `name` serving `kind` (http or resp)."""
    if name.startswith("osvrt"):
        # "osvrt": the default placement (every CPU); "osvrt1": one worker
        script = os.path.join(EXAMPLES, "http_hello.py" if kind == "http" else "resp_server.py")
        # "osvrt1_streams": one worker, a green thread per connection (--streams)
        cmd = [sys.executable, script, "--port", str(port)]
        cpus = 1 if name.startswith("osvrt1") else cpus
        streams = ["--streams"] if name.endswith("_streams") else []
        return cmd + (["--cpus", str(cpus)] if cpus else []) + streams
    return [sys.executable, "-P", "-m", "osvrt.bench.rows.streams", name, kind, str(port)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not come up")


def start(name, kind, cpus=None):
    """(process, port) of a started server; it imports the osvrt this process runs."""
    port = free_port()
    import osvrt
    here = os.path.dirname(os.path.dirname(os.path.abspath(osvrt.__file__)))
    env = dict(os.environ, PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return launch(server_cmd(name, kind, port, cpus), port, f"{name} {kind} server", env), port


# Each server's stderr goes to an unnamed file of its own (closed by stop()),
# not to a pipe: nobody reads a pipe during a round, and once full (64 KiB of
# log) it would block the server in the middle of one.
_stderr_files: dict[int, IO[bytes]] = {}      # pid -> file


def launch(argv, port, what, env=None):
    """The process of argv once it listens on 127.0.0.1:port.  RuntimeError
    naming `what`, with the end of its stderr, if it exits or does not listen
    in time; never a server left behind (Ctrl-C included)."""
    err = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
    except BaseException:
        err.close()
        raise
    try:
        wait_port(port, proc)
    except BaseException as e:
        proc.kill()
        proc.wait()
        err.seek(0)
        tail = err.read()[-2000:].decode(errors="replace")
        err.close()
        if isinstance(e, Exception):
            raise RuntimeError(f"{what} failed ({e}): {tail}") from None
        raise
    _stderr_files[proc.pid] = err
    return proc


def stop(proc):
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    err = _stderr_files.pop(proc.pid, None)
    if err is not None:
        err.close()


def wrk_round(port, seconds, connections=CONNECTIONS, threads=1, server_pid=None):
    """One wrk run against 127.0.0.1:port (a round with errors fails: wrk.read)."""
    done, cpu = run_client(wrk.argv(f"http://127.0.0.1:{port}/", seconds, connections, threads),
                           server_pid, timeout=seconds + 30)
    r = wrk.read(done, f"127.0.0.1:{port}")
    if r["requests"] is None:
        del r["requests"]
    return {**r, **cpu}                 # requests: the server's CPU per request (report)


def redis_round(port, requests, connections=50, tests="set,get,ping", server_pid=None):
    done, cpu = run_client(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port),
                            "-t", tests, "-n", str(requests), "-c", str(connections),
                            "--csv"], server_pid, timeout=300)
    require_success(done, "redis-benchmark")
    out = done.stdout
    rows = [line.replace('"', "").split(",") for line in out.strip().splitlines()
            if line.startswith('"')]                 # not the "WARNING: ..." lines
    if not rows or rows[0][0] != "test":
        raise RuntimeError(f"redis-benchmark printed no results: {out[-500:]!r}")
    head, rows = rows[0], [r for r in rows[1:] if len(r) == len(rows[0])]
    i_rps, i_p50, i_p99 = (head.index("rps"), head.index("p50_latency_ms"),
                           head.index("p99_latency_ms"))
    rps = [float(r[i_rps]) for r in rows]
    if not rps or min(rps) <= 0:
        # a test too short to time (the quick run's small counts): say so, do
        # not divide by it
        raise RuntimeError(f"redis-benchmark timed no test of {tests!r} ({requests} requests "
                           f"each): {out[-500:]!r}")
    cpu["requests"] = requests * len(rps)
    # requests/s over all the tests (harmonic mean: the same count each), worst p50, p99
    return {"rps": len(rps) / sum(1 / x for x in rps),
            "p50_ms": max(float(r[i_p50]) for r in rows),
            "p99_ms": max(float(r[i_p99]) for r in rows),
            "tests": {r[0]: float(r[i_rps]) for r in rows}, **cpu}


PROTOCOL_PEERS = ("uvloop_protocol", "asyncio_protocol")


def _round(name, kind, seconds, requests):
    proc, port = start(name, kind)
    try:
        if kind == "http":
            return wrk_round(port, seconds, server_pid=proc.pid)
        return redis_round(port, requests, server_pid=proc.pid)
    finally:
        stop(proc)


PEERS = (("uvloop_protocol", "asyncio.Protocol server on uvloop", "uvloop"),
         ("asyncio_protocol", "asyncio.Protocol server on asyncio", None),
         ("osvrt1", "the osvrt example on one worker (--cpus 1)", None),
         ("osvrt1_streams", "the osvrt example on one worker, a green thread per "
                            "connection (--cpus 1 --streams)", None))


SIZES_FULL = {"stream_seconds": 3, "stream_requests": 20_000}
SIZES_QUICK = {"stream_seconds": 1, "stream_requests": 10_000}


def _setup(tool, package):
    import contextlib

    @contextlib.contextmanager
    def ctx():
        # As root, a missing client is installed with apt-get, as the UDP rows
        # do theirs: the README's main command does all the set-up.
        from ..net import find_tool    # the C clients' module: loaded when a row runs
        path, why = find_tool(tool, package)
        if path is None:
            raise Unavailable(why)
        if not os.path.isdir(EXAMPLES):
            raise Unavailable("the servers are the checkout's examples/ (not installed)")
        yield None
    return ctx


def _measure(sizes, key, title, kind, unit, better, figure, targets, notes):
    seconds = sizes.get("stream_seconds", 1)
    requests = sizes.get("stream_requests", 10_000)

    def contender(name, label, requires=None):
        return Contender(name, label, lambda ctx: _round(name, kind, seconds, requests),
                         key=figure, requires=requires)
    return Measure(key, title, unit, better,
                   contender("osvrt", "the osvrt example, default placement"),
                   [contender(n, label, req) for n, label, req in PEERS],
                   targets=targets,
                   setup=_setup(*(("wrk", "wrk") if kind == "http"
                                  else ("redis-benchmark", "redis-tools"))),
                   weight=4, sizes={"seconds": seconds, "requests": requests}, notes=notes)


WRK_NOTES = "wrk -t1 -c64 --latency, examples/http_hello.py"
REDIS_NOTES = "redis-benchmark -t set,get,ping -c 50, examples/resp_server.py"


@row("wrk_rps", order=120, full=SIZES_FULL, quick=SIZES_QUICK)
def wrk_rps(cpus, s):
    return _measure(s, "wrk_rps", "wrk HTTP keep-alive req/s", "http", "req/s", "higher", "rps",
                    [Target("uvloop_protocol", ">=", 1.25, ">= 1.25x uvloop-Protocol req/s")],
                    WRK_NOTES)


@row("wrk_p99", order=130, full=SIZES_FULL, quick=SIZES_QUICK)
def wrk_p99(cpus, s):
    return _measure(s, "wrk_p99", "wrk HTTP keep-alive p99", "http", "ms", "lower", "p99_ms",
                    [Target("uvloop_protocol", "<=", 1.0, "p99 <= uvloop-Protocol's")],
                    WRK_NOTES)


@row("redis_rps", order=140, full=SIZES_FULL, quick=SIZES_QUICK)
def redis_rps(cpus, s):
    return _measure(s, "redis_rps", "redis-benchmark req/s", "resp", "req/s", "higher", "rps",
                    [Target("uvloop_protocol", ">=", 1.25, ">= 1.25x uvloop-Protocol req/s")],
                    REDIS_NOTES)


@row("redis_p99", order=150, full=SIZES_FULL, quick=SIZES_QUICK)
def redis_p99(cpus, s):
    return _measure(s, "redis_p99", "redis-benchmark p99", "resp", "ms", "lower", "p99_ms",
                    [Target("uvloop_protocol", "<=", 1.0, "p99 <= uvloop-Protocol's")],
                    REDIS_NOTES)


if __name__ == "__main__":               # a peer server: NAME KIND PORT
    _name, _kind, _port = sys.argv[1:4]
    protocol_server(_kind, int(_port), _name == "uvloop_protocol")
