"""Where the UDP benchmarks put client, server and classifier (issue #18).

Two placements, each named by what it pins:

- "run": what `osvrt.run(main)` gives a user: a worker on every CPU the
  process may use, nothing pinned (the echo green thread goes where the
  runtime puts it), the classifier by its own rule (no spare CPU, so the
  workers drain its ring themselves: no classifier thread), the client
  unpinned; the kernel-socket peer's Python thread unpinned too.
- "dedicated": the client pinned to the first CPU, the runtime's one worker
  and the peer's Python thread pinned to the second, the classifier beside
  the client (on the CPU without a worker, where placement() lets it poll).

The bench runs every real-client row in both, so no figure hides which one
produced it.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..checks import count_argument


@dataclass(frozen=True)
class Placement:
    name: str
    label: str                       # what it pinned, for the report
    client_cpu: Optional[int]        # None: unpinned
    server_cpu: Optional[int]        # the peer thread's and the echo's CPU; None: unpinned
    runtime_cpus: Optional[list]     # Runtime(cpus=...); None: every usable CPU (osvrt.run)
    net_options: dict
    echo_options: Optional[dict] = None   # OsvrtEchoServer(**echo_options): tx_batch


PLACEMENTS = ("run", "dedicated")


def placement(name: str, cpus: Optional[list] = None) -> Placement:
    """The Placement called `name` ("run" or "dedicated") on `cpus` (default:
    the CPUs this process may use).  ValueError for another name, or for
    "dedicated" with fewer than 2 CPUs."""
    cpus = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    if name == "run":
        return Placement("run", "osvrt.run placement: a worker on every CPU "
                         f"({len(cpus)}), nothing pinned (client, echo, classifier, peer thread)",
                         None, None, None, {})
    if name == "dedicated":
        if len(cpus) < 2:
            raise ValueError(f"the dedicated placement needs 2 CPUs, not {cpus!r}")
        c, s = cpus[0], cpus[1]
        return Placement("dedicated", f"dedicated: client + classifier pinned to CPU {c}, "
                         f"one worker (echo) and the peer thread pinned to CPU {s}",
                         c, s, [s], {})
    raise ValueError(f"placement must be one of {PLACEMENTS}, not {name!r}")


def osvrt_echo_round(pl: Placement, client: Callable[[Any], dict], reply=None,
                     rt_options: Optional[dict] = None) -> dict:
    """One round of client(addr) against an osvrt.net echo in a fresh
    Runtime placed as `pl`; the runtime stops before returning.  The result
    gains ring_dropped and the classifier's placement."""
    import osvrt
    import osvrt.net
    from .net import OsvrtEchoServer
    rt = osvrt.Runtime(cpus=pl.runtime_cpus, **(rt_options or {})).start()
    try:
        if pl.net_options:
            osvrt.net.configure(rt, **pl.net_options)
        server = OsvrtEchoServer(rt, cpu=pl.server_cpu if pl.runtime_cpus else None, reply=reply,
                                 **(pl.echo_options or {}))
        try:
            r = client(server.addr)
            net = rt.stats()["net"]
            r["ring_dropped"] = net["dropped"]["ring"]
            r["classifier"] = net["placement"]
            return r
        finally:
            server.close()
    finally:
        time.sleep(0.005)
        rt.stop(timeout=5)


def rr_client(pl: Placement, n: int, window: int, warm: int = 200) -> Callable[[Any], dict]:
    """The C request/response client (osvrt.bench.net.rr) placed as pl."""
    from .net import rr
    cpu = -1 if pl.client_cpu is None else pl.client_cpu

    def run(addr):
        if warm:
            rr(addr, warm, window=window, cpu=cpu)
        return rr(addr, n, window=window, cpu=cpu)
    return run


def real_client(pl: Placement, test: str, seconds: float = 1.0) -> tuple:
    """(client(addr), reply) for a real client ("sockperf" or "dnsperf")
    placed as pl."""
    from .net import CLIENTS
    run, reply = CLIENTS[test]
    return (lambda addr: run(addr, seconds, pl.client_cpu)), reply


def kernel_server(pl: Placement, reply=None):
    """The peer: a kernel UDP socket served by a Python thread, placed as pl."""
    from .net import ThreadEchoServer
    return ThreadEchoServer(cpu=pl.server_cpu, reply=reply)


def _client_and_keys(pl: Placement, test: str, seconds: float, n: int, window: int) -> tuple:
    """(client(addr), reply, the figures it gives) for `test` in placement pl."""
    keys: tuple[str, ...]
    if test == "rr":
        client, reply = rr_client(pl, n, window), None
        keys = ("ns", "per_s", "p50_ns", "p99_ns")
    else:
        client, reply = real_client(pl, test, seconds)
        keys = ("p50_us", "p99_us", "avg_us") if test == "sockperf" else ("qps",)
    return client, reply, keys


def compare(pl: Placement, test: str, rounds: int = 5, seconds: float = 1.0,
            n: int = 5000, window: int = 1, log=None) -> dict:
    """Alternating rounds (kernel, osvrt, ...) of `test` ("sockperf",
    "dnsperf" or "rr") in placement pl: per-round results and the median
    per-round ratio osvrt/kernel of each figure."""
    import statistics
    client, reply, keys = _client_and_keys(pl, test, seconds, n, window)
    ks, os_ = [], []
    server = kernel_server(pl, reply)
    try:
        for i in range(rounds):
            ks.append(client(server.addr))
            os_.append(osvrt_echo_round(pl, client, reply))
            if log:
                log(f"{pl.name} {test} round {i}: kernel {ks[-1]} osvrt {os_[-1]}")
    finally:
        server.close()
    out: dict = {"placement": pl.label, "test": test, "kernel_rounds": ks, "osvrt_rounds": os_}
    for k in keys:
        pairs = [(o[k], r[k]) for o, r in zip(os_, ks) if k in o and r.get(k)]
        if pairs:
            out[f"ratio_{k}"] = statistics.median(a / b for a, b in pairs)
            out[f"osvrt_{k}"] = statistics.median(a for a, _ in pairs)
            out[f"kernel_{k}"] = statistics.median(b for _, b in pairs)
    return out


def compare_drains(pl: Placement, test: str, drains=("thread", "workers"), rounds: int = 5,
                   seconds: float = 1.0, n: int = 5000, window: int = 1, log=None) -> dict:
    """compare() with one osvrt contender per classifier drain ("thread":
    the classifier's OS thread; "workers": the workers drain the ring,
    csrc/net/rx_workers.h), all alternating with the kernel peer in each
    round: the ratio of each drain to the kernel, per round, then medians."""
    from dataclasses import replace
    placed = {d: replace(pl, net_options={**pl.net_options, "drain": d}) for d in drains}
    return compare_contenders(pl, test, placed, rounds, seconds, n, window, log)


TX_MODES = {"batched": True, "direct": False}


def compare_tx(pl: Placement, test: str, rounds: int = 5, seconds: float = 1.0, n: int = 5000,
               window: int = 1, log=None) -> dict:
    """compare() with one osvrt contender per reply path: "batched" (a
    sendmmsg per worker turn, udp_bind's default) and "direct" (one sendto
    per datagram, udp_bind(tx_batch=False)), alternating with the kernel peer."""
    from dataclasses import replace
    placed = {m: replace(pl, echo_options={**(pl.echo_options or {}), "tx_batch": b})
              for m, b in TX_MODES.items()}
    return compare_contenders(pl, test, placed, rounds, seconds, n, window, log)


def compare_contenders(pl: Placement, test: str, placed: dict, rounds: int = 5,
                       seconds: float = 1.0, n: int = 5000, window: int = 1, log=None) -> dict:
    """Alternating rounds: the kernel peer, then every osvrt contender of
    `placed` (name -> Placement; the order reversed every other round): the
    ratio of each to the kernel, per round, then medians."""
    import statistics
    client, reply, keys = _client_and_keys(pl, test, seconds, n, window)
    names = tuple(placed)
    ks: list = []
    res: dict = {d: [] for d in names}
    server = kernel_server(pl, reply)
    try:
        for i in range(rounds):
            ks.append(client(server.addr))
            for d in (names if i % 2 == 0 else tuple(reversed(names))):
                res[d].append(osvrt_echo_round(placed[d], client, reply))
            if log:
                log(f"{pl.name} {test} round {i}: kernel {ks[-1]} " +
                    " ".join(f"{d} {res[d][-1]}" for d in names))
    finally:
        server.close()
    out: dict = {"placement": pl.label, "test": test, "rounds": rounds}
    for k in keys:
        for d in names:
            pairs = [(o[k], r[k]) for o, r in zip(res[d], ks) if k in o and r.get(k)]
            if pairs:
                out[f"{d}_ratio_{k}"] = statistics.median(a / b for a, b in pairs)
                out[f"{d}_{k}"] = statistics.median(a for a, _ in pairs)
        vals = [r[k] for r in ks if r.get(k)]
        if vals:
            out[f"kernel_{k}"] = statistics.median(vals)
    return out


def main(argv=None) -> int:
    """python -m osvrt.bench.placement [--rounds N] PLACEMENT TEST...: the
    alternating comparison of compare() for each TEST (sockperf, dnsperf,
    rr: one in flight, rr16: 16 in flight), medians and ratios osvrt/kernel."""
    import argparse
    ap = argparse.ArgumentParser(prog="python -m osvrt.bench.placement", description=main.__doc__)
    ap.add_argument("placement", choices=PLACEMENTS)
    ap.add_argument("tests", nargs="+", choices=("sockperf", "dnsperf", "rr", "rr16"))
    ap.add_argument("--rounds", type=count_argument, default=3)
    ap.add_argument("--transactions", type=count_argument, default=5000)
    ap.add_argument("--drains", action="store_true",
                    help="one osvrt contender per classifier drain (thread, workers), "
                         "alternating with the kernel peer")
    ap.add_argument("--tx", action="store_true",
                    help="one osvrt contender per reply path (batched: sendmmsg per worker "
                         "turn; direct: a sendto per datagram), alternating with the kernel peer")
    a = ap.parse_args(argv)
    pl = placement(a.placement)
    print(pl.label)
    if a.drains or a.tx:
        contest = compare_drains if a.drains else compare_tx
        for t in a.tests:
            r = contest(pl, "rr" if t.startswith("rr") else t, rounds=a.rounds,
                        n=a.transactions, window=16 if t == "rr16" else 1)
            print(t, {k: round(v, 3) for k, v in r.items() if isinstance(v, float)}, flush=True)
        return 0
    for t in a.tests:
        r = compare(pl, "rr" if t.startswith("rr") else t, rounds=a.rounds,
                    n=a.transactions, window=16 if t == "rr16" else 1)
        figs = {k: round(v, 3) for k, v in r.items()
                if k.startswith(("ratio_", "osvrt_", "kernel_")) and isinstance(v, float)}
        print(t, figs, "| classifier:", r["osvrt_rounds"][0].get("classifier"), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
