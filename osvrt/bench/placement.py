"""Where the UDP benchmarks put client, server and classifier (issue #18).

Two placements, each named by what it pins:

- "run": what `osvrt.run(main)` gives a user: a worker on every CPU the
  process may use, nothing pinned (the echo green thread goes where the
  runtime puts it), the classifier by its own rule (no spare CPU, so the
  workers drain its ring themselves: no classifier thread), the client
  unpinned; the kernel-socket peer's Python thread unpinned too.
- "dedicated": the client pinned to the first CPU, the runtime's one worker
  and the peer's Python thread pinned to the second, the classifier's thread
  beside the client (on the CPU without a worker, where placement() lets it
  poll) until pipelined requests make it hand the ring to the worker
  (drainer(): "auto" does that, and takes the ring back when requests come
  one at a time again; each round's details count both, drain_handovers and
  drain_handbacks, and say who had the ring at the end, drain_handed_over).

The bench runs every real-client row in both, so no figure hides which one
produced it.
"""
from __future__ import annotations

import argparse
import functools
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
        # What osvrt.run(main) gives: every CPU the process may use, whatever
        # the bench's --cpus (which this placement does not apply).
        every = sorted(os.sched_getaffinity(0))
        return Placement("run", "osvrt.run placement: a worker on every CPU of the process "
                         f"({len(every)}: {every}), nothing pinned (client, echo, classifier, "
                         f"peer thread)", None, None, None, {})
    if name == "dedicated":
        if len(cpus) < 2:
            raise ValueError(f"the dedicated placement needs 2 CPUs, not {cpus!r}")
        c, s = cpus[0], cpus[1]
        # The classifier's CPU given, not left to osvrt.net's rule (every CPU
        # without a worker): on a larger host that is not CPU c.
        return Placement("dedicated", f"dedicated: client + classifier thread pinned to CPU {c} "
                         "(it hands the ring to the worker when pipelined requests share that "
                         f"CPU with it), one worker (echo) and the peer thread pinned to CPU {s}",
                         c, s, [s], {"cpu": c})
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
            # An auto classifier thread's hand-overs and hand-backs in the
            # round, and 1 if the workers had the ring at its end (numbers:
            # a round's details keep numbers only)
            r["drain_handed_over"] = int(net["drain_handed_over"])
            r["drain_handovers"] = net["drain_handovers"]
            r["drain_handbacks"] = net["drain_handbacks"]
            return r
        finally:
            server.close()
    finally:
        time.sleep(0.005)
        rt.stop(timeout=5)


def rr_client(pl: Placement, n: int, window: int, warm: Optional[int] = None) -> Callable[[Any], dict]:
    """The C request/response client (osvrt.bench.net.rr) placed as pl:
    `warm` transactions (default: n, at least 200), then the n it measures."""
    from .net import rr
    cpu = -1 if pl.client_cpu is None else pl.client_cpu
    # As many unmeasured transactions as measured ones, for either server:
    # a round starts a fresh server, and its first 10-60 ms are not its
    # steady state.  An unpinned client often starts on the server's CPU
    # (both servers: the kernel moves it away within that time), and an
    # osvrt server's classifier thread hands the ring to its worker only
    # after two windows of pipelined bursts.  Measured in the osvrt.run
    # placement, 16 in flight, bursts of 2,000 from 5 fresh servers of each
    # kind: the first burst shared the client's CPU in 4 (osvrt, 156-221k/s)
    # and 3 (kernel, 183-236k/s); later bursts ran at 290-416k/s and
    # 261-300k/s (README, "where the kernel puts the client at the start").
    warm = max(n, 200) if warm is None else warm

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
    """Alternating rounds of `test` ("sockperf", "dnsperf" or "rr") in
    placement pl, osvrt against the kernel peer: per figure, the median
    per-round ratio osvrt/kernel and its min-max (compare_contenders)."""
    return compare_contenders(pl, test, {"osvrt": pl}, rounds, seconds, n, window, log)


def compare_drains(pl: Placement, test: str, drains=("thread", "workers"), rounds: int = 5,
                   seconds: float = 1.0, n: int = 5000, window: int = 1, log=None) -> dict:
    """compare() with one osvrt contender per classifier drain ("thread":
    the classifier's OS thread; "workers": the workers drain the ring,
    csrc/net/rx_workers.h), all alternating with the kernel peer in each
    round: the ratio of each drain to the kernel, per round, then medians."""
    from dataclasses import replace
    placed = {d: replace(pl, net_options={**pl.net_options, "drain": d}) for d in drains}
    return compare_contenders(pl, test, placed, rounds, seconds, n, window, log)


def compare_rings(pl: Placement, test: str, sizes=(8192, 1024), rounds: int = 5,
                  seconds: float = 1.0, n: int = 5000, window: int = 1, log=None) -> dict:
    """compare() with one osvrt contender per packet-ring size (ring_frames
    of osvrt.net.configure, named "ring<N>"), alternating with the kernel
    peer: what the ring's memory costs (README, "The ring's size")."""
    return _compare_net_values(pl, test, "ring_frames", "ring", sizes, rounds, seconds, n,
                               window, log)


def compare_small_frames(pl: Placement, test: str, sizes=(512, 2048), rounds: int = 5,
                         seconds: float = 1.0, n: int = 5000, window: int = 1, log=None) -> dict:
    """compare() with one osvrt contender per small_frame_size of
    osvrt.net.configure (named "small<N>"; 2048, the frame_size, or more:
    one ring for every frame), alternating with the kernel peer: what the
    small-frame ring gains (README, "The ring's size")."""
    return _compare_net_values(pl, test, "small_frame_size", "small", sizes, rounds, seconds, n,
                               window, log)


def _compare_net_values(pl, test, option, prefix, values, rounds, seconds, n, window, log):
    """compare_contenders() with one contender per value of the
    osvrt.net.configure option, named prefix + value."""
    from dataclasses import replace
    placed = {f"{prefix}{v}": replace(pl, net_options={**pl.net_options, option: v})
              for v in values}
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
    """The bench's method (osvrt/bench/measure.py) for the contenders of
    `placed` (name -> Placement) against the kernel peer: one warm-up round,
    then `rounds` rounds in an order that turns around every round (kernel
    first, then last), and per figure and contender the median of the
    per-round ratios to the kernel with their min and max."""
    import statistics
    client, reply, keys = _client_and_keys(pl, test, seconds, n, window)
    order = ("kernel", *placed)
    got: dict = {name: [] for name in order}
    server = kernel_server(pl, reply)
    try:
        for i in range(rounds + 1):                 # round 0: the warm-up, not counted
            for name in (order if i % 2 == 0 else order[::-1]):
                r = (client(server.addr) if name == "kernel"
                     else osvrt_echo_round(placed[name], client, reply))
                if i > 0:
                    got[name].append(r)
            if log and i > 0:
                log(f"{pl.name} {test} round {i}: " +
                    " ".join(f"{name} {got[name][-1]}" for name in order))
    finally:
        server.close()
    out: dict = {"placement": pl.label, "test": test, "rounds": rounds, "warmup": 1,
                 "kernel_rounds": got["kernel"]}
    for name in placed:
        out[f"{name}_rounds"] = got[name]
    for k in keys:
        vals = [r[k] for r in got["kernel"] if r.get(k)]
        if vals:
            out[f"kernel_{k}"] = statistics.median(vals)
        for name in placed:
            pairs = [(o[k], r[k]) for o, r in zip(got[name], got["kernel"])
                     if k in o and r.get(k)]
            if pairs:
                ratios = [a / b for a, b in pairs]
                out[f"{name}_{k}"] = statistics.median(a for a, _ in pairs)
                out[f"{name}_ratio_{k}"] = statistics.median(ratios)
                out[f"{name}_ratio_{k}_min"] = min(ratios)
                out[f"{name}_ratio_{k}_max"] = max(ratios)
    return out


def _sizes_argument(text, least=8, what="a ring has at least {} frames"):
    """"8192,1024" -> (8192, 1024) for --ring-frames (each a ring size
    osvrt.net.configure takes: 8 frames or more); with least and what, the
    same for another list of sizes."""
    sizes = tuple(count_argument(part) for part in text.split(","))
    for s in sizes:
        if s < least:
            raise argparse.ArgumentTypeError(f"{what.format(least)}, not {s}")
    return sizes


def _frame_sizes_argument(text):
    """"512,2048" -> (512, 2048) for --small-frames (each a small_frame_size
    osvrt.net.configure takes: 256 bytes or more)."""
    return _sizes_argument(text, 256, "a ring frame has at least {} bytes")


def main(argv=None) -> int:
    """python -m osvrt.bench.placement [--rounds N] PLACEMENT TEST...: the
    alternating comparison of compare() for each TEST (sockperf, dnsperf,
    rr: one in flight, rr16: 16 in flight), medians and ratios osvrt/kernel."""
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
    ap.add_argument("--ring-frames", type=_sizes_argument, metavar="N,N...",
                    help="one osvrt contender per packet-ring size (osvrt.net.configure's "
                         "ring_frames), alternating with the kernel peer")
    ap.add_argument("--small-frames", type=_frame_sizes_argument, metavar="N,N...",
                    help="one osvrt contender per small-frame ring slot size (osvrt.net."
                         "configure's small_frame_size; 2048 or more: one ring), alternating "
                         "with the kernel peer")
    a = ap.parse_args(argv)
    if sum(bool(x) for x in (a.drains, a.tx, a.ring_frames, a.small_frames)) > 1:
        ap.error("--drains, --tx, --ring-frames and --small-frames each compare their own "
                 "contenders: give one of them")
    pl = placement(a.placement)
    print(pl.label)
    print(f"{a.rounds} rounds after 1 warm-up, the order turned around every round; "
          f"ratios: median [min-max] of the per-round ratios to the kernel peer")
    contest: Callable[..., dict] = compare
    if a.drains:
        contest = compare_drains
    elif a.tx:
        contest = compare_tx
    elif a.ring_frames:
        contest = functools.partial(compare_rings, sizes=a.ring_frames)
    elif a.small_frames:
        contest = functools.partial(compare_small_frames, sizes=a.small_frames)
    for t in a.tests:
        r = contest(pl, "rr" if t.startswith("rr") else t, rounds=a.rounds,
                    n=a.transactions, window=16 if t == "rr16" else 1)
        figs: dict[str, Any] = {k: round(v, 3) for k, v in r.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
                and k not in ("rounds", "warmup") and not k.endswith(("_min", "_max"))}
        for k in [k for k in figs if "_ratio_" in k]:
            figs[k] = f"{figs[k]} [{r[k + '_min']:.3f}-{r[k + '_max']:.3f}]"
        # the first osvrt contender's first round (compare_contenders keeps their order)
        first: dict = next((v[0] for k, v in r.items()
                            if k.endswith("_rounds") and k != "kernel_rounds" and v), {})
        print(t, figs, "| classifier:", first.get("classifier"), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
