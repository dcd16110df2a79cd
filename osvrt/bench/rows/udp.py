"""The UDP rows: request/response and transactions with the C client, and
the real clients (sockperf, dnsperf) against osvrt.net channels and a kernel
UDP socket served by a Python thread."""
from .. import peers
from ..catalog import row
from ..measure import Contender, Measure, Target
from ._common import _real_client, _udp_servers


def _udp_done(k):
    def check(r):
        if r["done"] != k:
            raise RuntimeError(f"{r['done']} of {k} transactions answered")
    return check


@row("udp_rr", order=70, full={"udp": 5_000}, quick={"udp": 2_000})
def udp_rr(cpus, s):
    nu = s["udp"]
    return Measure(
        "udp_rr", "UDP request/response", "us", "lower",
        Contender("osvrt", "echo green thread on an osvrt.net channel",
                  lambda ctx: peers.udp_osvrt_round(nu, 1, ctx[0], ctx[1]), scale=1e-3,
                  check=_udp_done(nu)),
        [Contender("kernel_udp", "kernel UDP socket served by a Python thread",
                   lambda ctx: peers.udp_peer_round(ctx[2], nu, 1, ctx[0]), scale=1e-3,
                   check=_udp_done(nu))],
        targets=[Target("kernel_udp", "<=", 0.75, ">= 25% lower round trip")],
        setup=lambda: _udp_servers(cpus), weight=5, sizes={"transactions": nu, "window": 1},
        notes="mean round trip, one request in flight (UDP_RR), C client on the first CPU")


@row("udp_tps", order=80, full={"udp_tps": 20_000}, quick={"udp_tps": 5_000})
def udp_tps(cpus, s):
    nt_ = s["udp_tps"]
    return Measure(
        "udp_tps", "UDP transactions, 16 in flight", "tx/s", "higher",
        Contender("osvrt", "echo green thread on an osvrt.net channel",
                  lambda ctx: peers.udp_osvrt_round(nt_, 16, ctx[0], ctx[1]), key="per_s",
                  check=_udp_done(nt_)),
        [Contender("kernel_udp", "kernel UDP socket served by a Python thread",
                   lambda ctx: peers.udp_peer_round(ctx[2], nt_, 16, ctx[0]), key="per_s",
                   check=_udp_done(nt_))],
        targets=[Target("kernel_udp", ">=", 1.25, ">= 1.25x transactions/s")],
        setup=lambda: _udp_servers(cpus), weight=5, sizes={"transactions": nt_, "window": 16},
        notes="transactions per second with 16 requests in flight, C client")


def _real_client_contenders(test, key):
    from .. import net as nb
    return (Contender("osvrt", "echo green thread on an osvrt.net channel (default placement)",
                      lambda ctx: nb.real_client_osvrt(test, ctx[0], ctx[1], 1.0), key=key),
            [Contender("kernel_udp", "kernel UDP socket served by a Python thread",
                       lambda ctx: nb.real_client_kernel(test, ctx[2], ctx[0], 1.0), key=key)])


def _sockperf(cpus, pct):
    return Measure(
        f"sockperf_{pct}", f"sockperf ping-pong {pct} (one-way)", "us", "lower",
        *_real_client_contenders("sockperf", f"{pct}_us"),
        targets=[Target("kernel_udp", "<=", 0.75, f">= 25% lower {pct}")],
        setup=lambda: _real_client(cpus, "sockperf"), weight=3,
        sizes={"seconds": 1, "msg_size": 14},
        notes="Debian's sockperf, ping-pong -m 14, client pinned to the first CPU")


@row("sockperf_p50", order=90)
def sockperf_p50(cpus, s):
    return _sockperf(cpus, "p50")


@row("sockperf_p99", order=100)
def sockperf_p99(cpus, s):
    return _sockperf(cpus, "p99")


@row("dnsperf_qps", order=110)
def dnsperf_qps(cpus, s):
    return Measure(
        "dnsperf_qps", "dnsperf queries/s (DNS-shaped echo)", "q/s", "higher",
        *_real_client_contenders("dnsperf", "qps"),
        targets=[Target("kernel_udp", ">=", 1.25, ">= 1.25x queries/s")],
        setup=lambda: _real_client(cpus, "dnsperf"), weight=3,
        sizes={"seconds": 1, "outstanding": 100},
        notes="Debian's dnsperf against an echo that answers valid DNS responses")
