"""The user-space TCP stack's rows (issue #19): sockperf ping-pong --tcp
(p50, p99), wrk HTTP keep-alive requests/s, and the connection setup rate
(connect + accept + close), against osvrt.net.user_stack on one CPU and
against asyncio.Protocol servers on uvloop on kernel sockets.  Both servers
are one veth hop from the clients: the stack in its namespace, uvloop in
another, the clients in a third between them (osvrt/bench/netns.py), all on
198.18.0.0/15.  The rounds of the two alternate (osvrt.bench.measure).

Needs root (namespaces, the stack's packet socket), sockperf and wrk (as root,
a missing one is installed with apt-get).
"""
import contextlib
import subprocess
import sys
import tempfile

from ..catalog import row
from ..measure import Contender, Measure, Target, Unavailable
from ..ready import wait_ready

PORT = 7100
SIZES_FULL = {"usertcp_seconds": 3}
SIZES_QUICK = {"usertcp_seconds": 1}


class _Servers:
    """The topology and the two servers, up for the whole row."""

    def __init__(self):
        from .. import netns
        self.topo = netns.Topology(kernel_server=True)
        self.procs = []
        try:
            t = self.topo
            self._start(t.stack_ns, ["user", t.stack_if, t.cidr, str(PORT)])
            self._start(t.kernel_ns, ["kernel", t.kernel_ip, str(PORT)])
        except BaseException:
            self.close()
            raise

    def _start(self, ns, args):
        # stderr to an unnamed file, not a pipe: a pipe nobody reads fills
        # (64 KiB of log) and then blocks the server in the middle of a round.
        err = tempfile.TemporaryFile()
        p = self.topo.popen_in(ns, [sys.executable, "-P", "-m", "osvrt.bench.usertcp", *args],
                               stdout=subprocess.PIPE, stderr=err, text=True)
        self.procs.append(p)
        wait_ready(p, f"the {args[0]} server", stderr=err)

    def pid(self, name):
        """The server process of contender `name` (`ip netns exec` execs it)."""
        return self.procs[0 if name == "osvrt" else 1].pid

    def host(self, name):
        return self.topo.stack_ip if name == "osvrt" else self.topo.kernel_ip

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()
        self.topo.close()


def _setup(tool):
    @contextlib.contextmanager
    def ctx():
        from .. import netns
        ok, why = netns.can_make_namespaces()
        if not ok:
            raise Unavailable(why)
        if tool is not None:
            # As root, a missing client is installed with apt-get (its
            # Debian package has the tool's name), as the UDP rows do theirs.
            from ..net import find_tool    # the C clients' module: loaded when a row runs
            path, why = find_tool(tool, tool)
            if path is None:
                raise Unavailable(why)
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise Unavailable("uvloop is not installed (the kernel-socket peer)") from None
        servers = _Servers()
        try:
            yield servers
        finally:
            servers.close()
    return ctx


def _contenders(key, run):
    mine = Contender("osvrt", "osvrt.net.user_stack, one CPU",
                     lambda s: run(s, "osvrt"), key=key)
    peer = Contender("uvloop_kernel", "asyncio.Protocol on uvloop, kernel sockets",
                     lambda s: run(s, "uvloop_kernel"), key=key, requires="uvloop")
    return mine, [peer]


def _pingpong(sizes, key, title, figure):
    from .. import usertcp
    seconds = sizes.get("usertcp_seconds", 1)

    def run(s, name):
        return usertcp.sockperf_round(s.topo.peer_ns, s.host(name), PORT, seconds)
    mine, peers = _contenders(figure, run)
    return Measure(key, title, "us", "lower", mine, peers,
                   targets=[Target("uvloop_kernel", "<=", 0.75,
                                   "<= 0.75x the uvloop kernel-socket server's")],
                   setup=_setup("sockperf"), weight=2, sizes={"seconds": seconds},
                   notes="sockperf ping-pong --tcp -m 64, one veth hop, server on 1 CPU")


@row("usertcp_pingpong_p50", order=170, full=SIZES_FULL, quick=SIZES_QUICK)
def usertcp_pingpong_p50(cpus, sizes):
    return _pingpong(sizes, "usertcp_pingpong_p50", "user-space TCP: sockperf ping-pong p50",
                     "p50_us")


@row("usertcp_pingpong_p99", order=171, full=SIZES_FULL, quick=SIZES_QUICK)
def usertcp_pingpong_p99(cpus, sizes):
    return _pingpong(sizes, "usertcp_pingpong_p99", "user-space TCP: sockperf ping-pong p99",
                     "p99_us")


@row("usertcp_wrk_rps", order=172, full=SIZES_FULL, quick=SIZES_QUICK)
def usertcp_wrk_rps(cpus, sizes):
    from .. import usertcp
    seconds = sizes.get("usertcp_seconds", 1)

    def run(s, name):
        return usertcp.wrk_round(s.topo.peer_ns, s.host(name), PORT + 1, seconds,
                                 server_pid=s.pid(name))
    mine, peers = _contenders("rps", run)
    return Measure("usertcp_wrk_rps", "user-space TCP: wrk HTTP keep-alive req/s", "req/s",
                   "higher", mine, peers,
                   targets=[Target("uvloop_kernel", ">=", 1.25,
                                   ">= 1.25x the uvloop kernel-socket server's")],
                   setup=_setup("wrk"), weight=2, sizes={"seconds": seconds},
                   notes="wrk -t1 -c64, one veth hop, server on 1 CPU")


@row("usertcp_connect_rate", order=173, full=SIZES_FULL, quick=SIZES_QUICK)
def usertcp_connect_rate(cpus, sizes):
    from .. import usertcp
    seconds = sizes.get("usertcp_seconds", 1)

    def run(s, name):
        return usertcp.connect_round(s.topo.peer_ns, s.host(name), PORT + 2, seconds)
    mine, peers = _contenders("per_s", run)
    return Measure("usertcp_connect_rate", "user-space TCP: connect+accept+close per s",
                   "conn/s", "higher", mine, peers, targets=[],
                   setup=_setup(None), weight=1, sizes={"seconds": seconds},
                   notes="one Python client connecting in a loop, one veth hop; reported "
                         "beside the kernel's (no target)")



