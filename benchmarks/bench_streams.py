"""Green sockets judged by real clients: wrk against the HTTP/1.1 keep-alive
"hello" server (examples/http_hello.py) and redis-benchmark against the RESP
server (examples/resp_server.py), and the SAME server logic (the same
respond() / parse_one() / execute() functions) on asyncio streams and on
uvloop streams, in alternating rounds in one run; medians of requests/s and
p99 latency.

Placement: every server and the client share the host's CPUs (2 here); the
osvrt server runs Runtime(cpus=N) (default: all), one listener per CPU with
SO_REUSEPORT; asyncio and uvloop run their usual single event loop.

Target: osvrt requests/s >= 1.25x uvloop's with p99 no worse.  extra_info
carries <server>_rps, <server>_p50_ms, <server>_p99_ms (medians) and
ratio_rps_vs_uvloop, ratio_p50_vs_uvloop, ratio_p99_vs_uvloop (redis: the worst
test's p50 and p99).  A missing wrk / redis-benchmark is installed with
apt-get (packages wrk, redis-tools) when running as root, else the benchmark
is skipped naming the package; a missing uvloop is skipped from the peers.
Under --benchmark-disable each runs one short round.

--protocol (issue #17's comparison): the peers are asyncio.Protocol servers on
uvloop and on asyncio giving the same responses (osvrt.bench.rows.streams), and
osvrt runs twice, on the default placement ("osvrt") and on one worker
("osvrt1"); `python -m osvrt bench --only wrk_rps,wrk_p99,redis_rps,redis_p99`
gives the same rows.

Run:     pytest benchmarks/bench_streams.py --benchmark-json=/tmp/streams.json
Or:      python benchmarks/bench_streams.py [--rounds 5] [--seconds 3] [--cpus 2] [--protocol]
"""
import argparse
import json
import os
import statistics
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXAMPLES = os.path.join(ROOT, "examples")
ROUNDS = 5
SECONDS = 3.0
CONNECTIONS = 64


# ---- the peers: the examples' logic on asyncio streams ----------------------------

def _asyncio_server(kind, port, use_uvloop):
    import asyncio
    sys.path.insert(0, EXAMPLES)
    if kind == "http":
        from http_hello import respond

        async def handle(reader, writer):
            buf = b""
            try:
                while data := await reader.read(65536):
                    buf += data
                    out, buf, close = respond(buf)
                    if out:
                        writer.write(out)
                        await writer.drain()
                    if close:
                        break
            except ConnectionError:
                pass
            writer.close()
    else:
        from resp_server import execute, parse_one

        async def handle(reader, writer):
            buf = b""
            try:
                while data := await reader.read(65536):
                    buf = buf + data if buf else data
                    out = []
                    pos = 0
                    while True:
                        args, pos = parse_one(buf, pos)
                        if args is None:
                            break
                        if args:
                            out.append(execute(args))
                    buf = buf[pos:]
                    if out:
                        writer.write(b"".join(out))
                        await writer.drain()
            except (ConnectionError, ValueError):
                pass
            writer.close()

    async def main():
        srv = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        print("ready", flush=True)
        async with srv:
            await srv.serve_forever()
    if use_uvloop:
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())


from osvrt.bench.rows.streams import (PROTOCOL_PEERS, free_port, launch,  # noqa: E402
                                     protocol_server, redis_round, stop, wrk_round)


def _server_cmd(name, kind, port, cpus):
    if name.startswith("osvrt"):
        # "osvrt": the default placement (every CPU); "osvrt1": one worker;
        # "osvrt1_streams": one worker, a green thread per connection
        script = os.path.join(EXAMPLES, "http_hello.py" if kind == "http" else "resp_server.py")
        cmd = [sys.executable, script, "--port", str(port)]
        cpus = 1 if name.startswith("osvrt1") else cpus
        streams = ["--streams"] if name.endswith("_streams") else []
        return cmd + (["--cpus", str(cpus)] if cpus else []) + streams
    return [sys.executable, os.path.abspath(__file__), "--serve", name, kind, str(port)]


def _start(name, kind, cpus):
    port = free_port()
    # The server imports the osvrt this process runs (an installed one, or a
    # checkout built in place); never the checkout's sources without their
    # extensions, which would shadow an installed osvrt.
    import osvrt
    here = os.path.dirname(os.path.dirname(os.path.abspath(osvrt.__file__)))
    env = dict(os.environ, PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return launch(_server_cmd(name, kind, port, cpus), port, f"{name} {kind} server", env), port


def peers(protocol=False):
    """Contenders, osvrt first.  protocol=True: osvrt on one worker and on
    the default placement against asyncio.Protocol servers (issue #17's
    peers); else the examples' logic on asyncio/uvloop streams."""
    try:
        import uvloop  # noqa: F401
        have_uvloop = True
    except ImportError:
        have_uvloop = False
    if protocol:
        names = ["osvrt", "osvrt1", "osvrt1_streams", "asyncio_protocol"]
        return names + (["uvloop_protocol"] if have_uvloop else [])
    return ["osvrt", "asyncio"] + (["uvloop"] if have_uvloop else [])


def compare(kind, rounds=ROUNDS, seconds=SECONDS, cpus=None, requests=None, protocol=False):
    """Alternating rounds of every server; medians and ratios."""
    names = peers(protocol)
    per = {n: [] for n in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            proc, port = _start(name, kind, cpus)
            try:
                if kind == "http":
                    wrk_round(port, 1 if seconds >= 2 else seconds)          # warm-up
                    per[name].append(wrk_round(port, seconds))
                else:
                    n = requests or int(20000 * seconds)
                    per[name].append(redis_round(port, n))
            finally:
                stop(proc)
    res = {"rounds": rounds}
    for n in names:
        res[f"{n}_rps"] = statistics.median(x["rps"] for x in per[n])
        res[f"{n}_p50_ms"] = statistics.median(x["p50_ms"] for x in per[n])
        res[f"{n}_p99_ms"] = statistics.median(x["p99_ms"] for x in per[n])
    for peer in names[1:]:
        if peer.startswith("osvrt"):
            continue
        for mine in [n for n in names if n.startswith("osvrt")]:
            tag = "" if mine == "osvrt" else f"{mine}_"
            res[f"{tag}ratio_rps_vs_{peer}"] = res[f"{mine}_rps"] / res[f"{peer}_rps"]
            res[f"{tag}ratio_p50_vs_{peer}"] = res[f"{mine}_p50_ms"] / res[f"{peer}_p50_ms"]
            res[f"{tag}ratio_p99_vs_{peer}"] = res[f"{mine}_p99_ms"] / res[f"{peer}_p99_ms"]
    res["raw"] = per
    return res


def _need(tool, package):
    sys.path.insert(0, ROOT)
    from osvrt.bench.net import find_tool
    path, why = find_tool(tool, package)
    if path is None:
        pytest.skip(why)


def _bench(benchmark, quick, kind):
    rounds, seconds = (1, 0.5) if quick else (ROUNDS, SECONDS)
    box = {}

    def run():
        box["r"] = compare(kind, rounds=rounds, seconds=seconds,
                           requests=10000 if quick else None)   # fewer: too quick to time
    benchmark.pedantic(run, rounds=1, iterations=1)
    r = box["r"]
    assert all(x["rps"] > 0 for xs in r["raw"].values() for x in xs), r
    for k, v in r.items():
        if k != "raw":
            benchmark.extra_info[k] = v
    benchmark.extra_info["target"] = "ratio_rps_vs_uvloop >= 1.25 and ratio_p99_vs_uvloop <= 1"
    return r


@pytest.mark.benchmark(group="streams-real-clients")
def bench_wrk_http_hello(benchmark, quick):
    _need("wrk", "wrk")
    _bench(benchmark, quick, "http")


@pytest.mark.benchmark(group="streams-real-clients")
def bench_redis_benchmark_resp(benchmark, quick):
    _need("redis-benchmark", "redis-tools")
    _bench(benchmark, quick, "resp")


def _number(kind, lo, hi=None):
    """An argparse type: kind(text), above 0 and in lo..hi (0 rounds died on
    an empty median, --seconds 0 asked redis-benchmark for 0 requests,
    --cpus 99 failed inside the server)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not (0 < value < float("inf") and value >= lo and (hi is None or value <= hi)):
            raise argparse.ArgumentTypeError(
                f"{text!r}: give a number in {lo}..{hi}" if hi else
                f"{text!r}: give a number > 0" if lo == 0 else f"{text!r}: give {lo} or more")
        return value
    return parse


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        _, _, name, kind, port = sys.argv
        if name in PROTOCOL_PEERS:
            protocol_server(kind, int(port), name == "uvloop_protocol")
        else:
            _asyncio_server(kind, int(port), name == "uvloop")
        sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=_number(int, 1), default=ROUNDS)
    ap.add_argument("--seconds", type=_number(float, 0), default=SECONDS,
                    help="of wrk or redis-benchmark per round (wrk runs whole seconds, at least 1)")
    ap.add_argument("--cpus", type=_number(int, 1, len(os.sched_getaffinity(0))), default=None,
                    help="osvrt worker CPUs (default: all)")
    ap.add_argument("--only", choices=["http", "resp"], default=None)
    ap.add_argument("--protocol", action="store_true",
                    help="peers: asyncio.Protocol servers (uvloop, asyncio) and osvrt on 1 CPU too")
    a = ap.parse_args()
    for kind in ([a.only] if a.only else ["http", "resp"]):
        r = compare(kind, rounds=a.rounds, seconds=a.seconds, cpus=a.cpus, protocol=a.protocol)
        r.pop("raw")
        print(kind, json.dumps(r, indent=1), flush=True)
