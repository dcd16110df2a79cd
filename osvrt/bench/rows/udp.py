"""The UDP rows: request/response and transactions with the C client, and
the real clients (sockperf, dnsperf) against osvrt.net channels and a kernel
UDP socket served by a Python thread.

Every row runs in two placements (osvrt/bench/placement.py), each a row of
its own labelled with what it pinned: the plain key is the placement
osvrt.run(main) gives (a worker on every CPU, nothing pinned, the client
unpinned), the key ending in _dedicated the layout with a CPU for the client
and the classifier's thread (until pipelined requests make it hand the ring
to the worker)."""
import contextlib

from .. import peers
from ..catalog import row
from ..measure import Contender, Measure, Target, Unavailable
from .. import placement as P

SUFFIX = {"run": "", "dedicated": "_dedicated"}
TITLE = {"run": "osvrt.run placement", "dedicated": "dedicated CPUs"}


def _udp_done(k):
    def check(r):
        if r["done"] != k:
            raise RuntimeError(f"{r['done']} of {k} transactions answered")
    return check


@contextlib.contextmanager
def _placed(cpus, name, test=None):
    """(Placement, kernel-socket peer) of a UDP row; Unavailable without
    osvrt.net, without the real client, or (dedicated) with one CPU."""
    try:
        pl = P.placement(name, cpus)
    except ValueError as e:
        raise Unavailable(str(e)) from None
    why = peers.udp_unavailable()
    if why is not None:
        raise Unavailable(f"osvrt.net not available: {why}")
    reply = None
    if test is not None:
        from .. import net as nb
        package = {"sockperf": nb.SOCKPERF_PACKAGE, "dnsperf": nb.DNSPERF_PACKAGE}[test]
        path, why = nb.find_tool(test, package)
        if path is None:
            raise Unavailable(why)
        reply = nb.CLIENTS[test][1]
    else:
        try:
            P.osvrt_echo_round(pl, P.rr_client(pl, 20, 1, warm=0))
        except Exception as e:
            raise Unavailable(f"osvrt.net not available: {type(e).__name__}: {e}") from None
    server = P.kernel_server(pl, reply)
    try:
        yield pl, server
    finally:
        server.close()


def _label(cpus, name):
    try:
        return P.placement(name, cpus).label
    except ValueError as e:
        return str(e)


def _rr_measure(cpus, name, key, title, unit, better, n, window, value_key, target):
    def osvrt_side(ctx):
        return P.osvrt_echo_round(ctx[0], P.rr_client(ctx[0], n, window))

    def kernel_side(ctx):
        return P.rr_client(ctx[0], n, window)(ctx[1].addr)
    scale = 1e-3 if value_key is None else 1.0
    kw = {} if value_key is None else {"key": value_key}
    return Measure(
        key + SUFFIX[name], f"{title}, {TITLE[name]}", unit, better,
        Contender("osvrt", "echo green thread on an osvrt.net channel", osvrt_side,
                  scale=scale, check=_udp_done(n), **kw),
        [Contender("kernel_udp", "kernel UDP socket served by a Python thread", kernel_side,
                   scale=scale, check=_udp_done(n), **kw)],
        targets=[target], setup=lambda: _placed(cpus, name), weight=5,
        sizes={"transactions": n, "window": window},
        notes=f"C client (osvrt.bench.net.rr); {_label(cpus, name)}")


def _real_measure(cpus, name, key, title, unit, better, test, value_key, target, sizes):
    def osvrt_side(ctx):
        client, reply = P.real_client(ctx[0], test)
        return P.osvrt_echo_round(ctx[0], client, reply)

    def kernel_side(ctx):
        return P.real_client(ctx[0], test)[0](ctx[1].addr)
    return Measure(
        key + SUFFIX[name], f"{title}, {TITLE[name]}", unit, better,
        Contender("osvrt", "echo green thread on an osvrt.net channel", osvrt_side,
                  key=value_key),
        [Contender("kernel_udp", "kernel UDP socket served by a Python thread", kernel_side,
                   key=value_key)],
        targets=[target], setup=lambda: _placed(cpus, name, test), weight=3, sizes=sizes,
        notes=f"Debian's {test}; {_label(cpus, name)}")


def _register(name, base):
    """The rows of placement `name`; the dedicated ones come right after
    the osvrt.run ones in the table (order + 5)."""
    order = base
    sfx = SUFFIX[name]

    @row("udp_rr" + sfx, order=order, full={"udp": 5_000}, quick={"udp": 2_000})
    def udp_rr(cpus, s):
        return _rr_measure(cpus, name, "udp_rr", "UDP request/response", "us", "lower",
                           s["udp"], 1, None,
                           Target("kernel_udp", "<=", 0.75, ">= 25% lower round trip"))

    @row("udp_tps" + sfx, order=order + 10, full={"udp_tps": 20_000}, quick={"udp_tps": 5_000})
    def udp_tps(cpus, s):
        return _rr_measure(cpus, name, "udp_tps", "UDP transactions, 16 in flight", "tx/s",
                           "higher", s["udp_tps"], 16, "per_s",
                           Target("kernel_udp", ">=", 1.25, ">= 1.25x transactions/s"))

    for i, pct in enumerate(("p50", "p99")):
        def sockperf(cpus, s, pct=pct):
            return _real_measure(cpus, name, f"sockperf_{pct}", f"sockperf ping-pong {pct} "
                                 "(one-way)", "us", "lower", "sockperf", f"{pct}_us",
                                 Target("kernel_udp", "<=", 0.75, f">= 25% lower {pct}"),
                                 {"seconds": 1, "msg_size": 14})
        row(f"sockperf_{pct}{sfx}", order=order + 20 + 10 * i)(sockperf)

    @row("dnsperf_qps" + sfx, order=order + 40)
    def dnsperf_qps(cpus, s):
        return _real_measure(cpus, name, "dnsperf_qps", "dnsperf queries/s (DNS-shaped echo)",
                             "q/s", "higher", "dnsperf", "qps",
                             Target("kernel_udp", ">=", 1.25, ">= 1.25x queries/s"),
                             {"seconds": 1, "outstanding": 100})


_register("run", 70)
_register("dedicated", 75)
