"""What the rows share: checks that a round did all its work, and the setups
(a started Runtime, an echo server, the UDP peers) that contenders run in."""
import contextlib

from .. import peers
from ..measure import Unavailable

OSVRT_TIMEOUT = 120.0                          # one osvrt round, before it counts as hung


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
    from osvrt.bench import net as nb
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
