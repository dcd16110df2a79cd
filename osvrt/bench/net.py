"""UDP workloads for benchmarks/bench_udp.py: echo servers (osvrt on a net
channel, a kernel socket served by a Python thread, the same served by
asyncio) and a load generator in C (csrc/bench/net_bench.c) that holds no GIL, so
each server has the interpreter to itself and the figures compare servers,
not clients.

Placement on a 2-CPU machine (see bench_udp.py): the client on one CPU, the
server (the osvrt worker, or the Python thread, or the asyncio loop) on the
other; the classifier thread where osvrt.net's placement rule puts it (the
CPU without a worker, polling an adaptive window and yielding to the client)
unless a caller configures it.  real_clients(): the same with real clients,
sockperf (ping-pong latency) and dnsperf (queries/s).
"""
import asyncio
import os
import socket
import threading
import time

from ._peers import ffi, lib     # the C load generator (csrc/bench/net_bench.c)

_STOP = b"osvrt-net-bench-stop"


# The C client keeps every round trip (8 bytes each) to sort them: 2**32 of
# them would take 32 GiB already.
MAX_RR = 2 ** 32


def rr(addr, n, *, payload=64, window=1, cpu=-1, timeout_ms=200):
    """n request/response exchanges with the echo server at addr, `window`
    requests in flight (at most 1,024: one sendmmsg refills it, and every
    reply that is there is read before the next poll), from the C client
    (pinned to cpu unless -1); payload 16-65,000 bytes.
    Returns a dict: ns (mean round trip), p50_ns, p99_ns, per_s
    (transactions per second), done, lost, and what bounds the rate
    (osvrt/bench/client_cpu.py): client_cpu_s and client_cpu_share (the
    client's thread: its CPU seconds, and those over the call's wall
    seconds), server_cpu_s (every other thread of this process over the
    call: the echo server under test, osvrt's workers or the peer's thread,
    is the only other one at work) and requests (= done).  The call's window
    also holds the client's set-up and its sort of the round trips, client
    work while the server idles (not measured apart; small beside n round
    trips)."""
    for name, value, low, high in (("payload", payload, 16, 65000), ("window", window, 1, 1024),
                                   ("n", n, 1, MAX_RR), ("timeout_ms", timeout_ms, 1, 3_600_000)):
        if type(value) is not int or not low <= value <= high:
            raise ValueError(f"rr({name}={value!r}): a whole number from {low} to {high}")
    res = ffi.new("struct osvrt_rr_result *")
    # The client runs in this thread (cffi drops the GIL for the call).
    wall0, client0, process0 = time.monotonic(), time.thread_time(), time.process_time()
    err = lib.osvrt_net_bench_rr(addr[0].encode(), addr[1], n, payload, window, cpu, timeout_ms, res)
    wall, client_s = time.monotonic() - wall0, time.thread_time() - client0
    server_s = time.process_time() - process0 - client_s
    if err:
        raise OSError(-err, f"UDP client to {addr}: {os.strerror(-err)} "
                            f"(done {res.done}, lost {res.lost})")
    return dict(ns=res.mean_ns, p50_ns=res.p50_ns, p99_ns=res.p99_ns,
                per_s=res.done / (res.elapsed_ns / 1e9) if res.elapsed_ns else 0.0,
                done=res.done, lost=res.lost, window=window,
                client_cpu_s=client_s,
                client_cpu_share=round(client_s / wall, 3) if wall > 0 else 0.0,
                server_cpu_s=max(server_s, 0.0), requests=res.done)


def _pin(cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})           # this thread only (Linux)


class ThreadEchoServer:
    """A kernel UDP socket served by one Python thread (blocking recvfrom /
    sendto), pinned to cpu.  reply: data -> the datagram to send back
    (default: the same bytes; see sockperf_reply, dns_reply)."""

    def __init__(self, cpu=None, ip="127.0.0.1", reply=None):
        self._reply = reply
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.addr = self.sock.getsockname()
        self._t = threading.Thread(target=self._run, args=(cpu,), name="udp-thread-echo", daemon=True)
        self._t.start()

    def _run(self, cpu):
        _pin(cpu)
        s = self.sock
        reply = self._reply
        while True:
            data, addr = s.recvfrom(65536)
            if data == _STOP:
                return
            s.sendto(data if reply is None else reply(data), addr)

    def close(self):
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(_STOP, self.addr)
        self._t.join(5)
        self.sock.close()


class CEchoServer:
    """A kernel UDP socket served by C that runs no Python (csrc/bench/
    net_bench.c: recvmmsg/sendmmsg in batches, on a thread whose call holds
    no GIL), pinned to cpu: the floor and ceiling of what any server could
    do (benchmarks/client_ceiling.py).  busy: poll instead of sleeping in
    recvmmsg; dns: answer as dns_reply does (for dnsperf)."""

    def __init__(self, cpu=None, ip="127.0.0.1", busy=False, dns=False):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.addr = self.sock.getsockname()
        self.echoed = None
        args = (self.sock.fileno(), -1 if cpu is None else cpu, int(busy), int(dns),
                _STOP, len(_STOP))
        self._t = threading.Thread(target=self._run, args=args, name="udp-c-echo", daemon=True)
        self._t.start()

    def _run(self, *args):
        self.echoed = lib.osvrt_net_bench_echo(*args)   # cffi drops the GIL for the call

    def close(self):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(50):              # a datagram may be dropped: say it again
                s.sendto(_STOP, self.addr)
                self._t.join(0.1)
                if not self._t.is_alive():
                    break
        if self._t.is_alive():
            raise RuntimeError("the C echo did not stop")   # its socket stays open: in use
        self.sock.close()
        if self.echoed is not None and self.echoed < 0:
            raise OSError(-self.echoed, f"the C echo failed: {os.strerror(-self.echoed)}")


class AsyncioEchoServer:
    """A kernel UDP socket served by an asyncio DatagramProtocol in an event
    loop on its own thread, pinned to cpu (uvloop if loop="uvloop")."""

    def __init__(self, cpu=None, ip="127.0.0.1", loop=None):
        self._ready = threading.Event()
        self._loop_kind = loop
        self._t = threading.Thread(target=self._run, args=(cpu, ip), name="udp-asyncio-echo",
                                   daemon=True)
        self._t.start()
        if not self._ready.wait(10):
            raise RuntimeError("asyncio echo server did not start")

    def _run(self, cpu, ip):
        _pin(cpu)
        if self._loop_kind == "uvloop":
            import uvloop
            loop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        self.loop = loop
        done = loop.create_future()

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.t = transport

            def datagram_received(self, data, addr):
                if data == _STOP:
                    done.set_result(None)
                else:
                    self.t.sendto(data, addr)

        async def main():
            transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=(ip, 0))
            self.addr = transport.get_extra_info("sockname")
            self._ready.set()
            await done
            transport.close()
        loop.run_until_complete(main())
        loop.close()

    def close(self):
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(_STOP, self.addr)
        self._t.join(5)


class OsvrtEchoServer:
    """An osvrt.net endpoint echoed by one green thread of rt, pinned to cpu
    (reply: as for ThreadEchoServer)."""

    def __init__(self, rt, cpu=None, ip="127.0.0.1", reply=None, tx_batch=True):
        from ..net import udp_bind
        self.rt = rt
        ready = threading.Event()
        box = []

        async def serve():
            ep = await udp_bind((ip, 0), tx_batch=tx_batch)
            box.append(ep)
            ready.set()
            count = 0
            recvfrom, sendto = ep.recvfrom, ep.sendto
            while True:
                try:
                    data, addr = await recvfrom()
                except OSError:
                    return count
                try:
                    await sendto(data if reply is None else reply(data), addr)
                except OSError:
                    if ep.closed:        # close() from the bench's thread won the race
                        return count
                    raise
                count += 1
        self._fut = rt.submit(serve, cpu=cpu)
        if not ready.wait(10):
            self._fut.result(timeout=0)          # raises the server's error
            raise RuntimeError("osvrt echo server did not start")
        self.ep = box[0]
        self.addr = self.ep.address

    def close(self):
        self.ep.close()
        return self._fut.result(timeout=10)


def classifier_throughput(rt, n, *, payload=64, gso=32, cpu=-1):
    """Blast n datagrams (UDP_SEGMENT super-packets of `gso` datagrams, so the
    sender is not the bottleneck) at an osvrt endpoint nobody reads, and
    measure how fast the classifier takes them in: packets it classified per
    second from the first to the last, plus how many the kernel's ring
    dropped (the classifier fell behind) and the channel dropped (full: the
    point here)."""
    from ..net import net_of, udp_bind

    async def bind():
        return await udp_bind(("127.0.0.1", 0), capacity=64)
    ep = rt.submit(bind).result(timeout=10)
    net = net_of(rt)
    s0 = net.stats()
    t0 = time.perf_counter_ns()
    blast_ns = lib.osvrt_net_bench_blast(b"127.0.0.1", ep.address[1], n, payload, gso, cpu)
    if blast_ns < 0:
        ep.close()
        raise OSError(int(-blast_ns), f"blast: {os.strerror(int(-blast_ns))}")
    # Wait for the classifier to go quiet (bounded).
    last, still = -1, 0
    end = time.monotonic() + 10
    while time.monotonic() < end:
        st = net.stats()
        seen = st["packets"] - s0["packets"] + st["dropped"]["ring"] - s0["dropped"]["ring"]
        if seen >= n or (seen == last and still >= 20):
            break
        still = still + 1 if seen == last else 0
        last = seen
        time.sleep(0.001)
    t1 = time.perf_counter_ns()
    st = net.stats()
    ep.close()
    packets = st["packets"] - s0["packets"]
    elapsed = max(t1 - t0, blast_ns)
    return dict(per_s=packets / (elapsed / 1e9), packets=packets, sent=n,
                ring_dropped=st["dropped"]["ring"] - s0["dropped"]["ring"],
                channel_dropped=st["dropped"]["channel_full"] - s0["dropped"]["channel_full"],
                sender_per_s=n / (blast_ns / 1e9))


def classify_cost(n, payload=64, flows=4):
    """The classifier's own cost per packet, no kernel (ns)."""
    ns = lib.osvrt_net_bench_classify(n, payload, flows)
    if ns < 0:
        raise OSError(int(-ns), f"classify benchmark: {os.strerror(int(-ns))}")
    return dict(ns=ns, per_s=1e9 / ns)


def cpu_seconds_of_thread(name):
    """CPU time (s) used so far by this process's OS threads named `name`."""
    from .client_cpu import stat_cpu_seconds
    total = 0.0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().strip() != name:
                    continue
            total += stat_cpu_seconds(f"/proc/self/task/{tid}/stat")
        except OSError:
            pass
    return total


# ---------------------------------------------------------------------------
# Real clients: sockperf (ping-pong latency) and dnsperf (queries/s), each
# against an osvrt.net echo and a kernel UDP socket served by a Python
# thread, alternating rounds, medians.

SOCKPERF_PACKAGE = "sockperf"
DNSPERF_PACKAGE = "dnsperf"


def sockperf_reply(data):
    """sockperf's reply: its 14-byte header with the client bit (bit 0 of
    byte 9) cleared, or sockperf ignores the datagram."""
    if len(data) < 14:
        return data
    return data[:9] + bytes((data[9] & 0xFE,)) + data[10:]


def dns_reply(data):
    """A valid DNS response to a query: same ID, question and counts, the QR
    bit set (NOERROR, no answers): what dnsperf counts as completed."""
    if len(data) < 12:
        return data
    return data[:2] + bytes((data[2] | 0x80, data[3] & 0x70)) + data[4:]


def find_tool(name, package, install=True):
    """The path of program `name`; installed with apt-get (package) when it
    is missing and we run as root.  (path, None) or (None, why)."""
    import shutil
    import subprocess
    path = shutil.which(name)
    if path:
        return path, None
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", package], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=600, check=False)
        path = shutil.which(name)
        if path:
            return path, None
    return None, f"{name} is not installed (Debian/Ubuntu package {package!r}: apt-get install {package})"


def _taskset(cpu):
    return [] if cpu is None else ["taskset", "-c", str(cpu)]


def sockperf_round(addr, seconds=1.0, cpu=None, msg_size=14):
    """sockperf ping-pong (one request in flight) against addr for `seconds`;
    the client pinned to cpu.  Returns dict(p50_us, p99_us, avg_us,
    observations): sockperf's one-way latency (half the round trip)."""
    import re
    import subprocess
    path, why = find_tool("sockperf", SOCKPERF_PACKAGE)
    if path is None:
        raise FileNotFoundError(why)
    cmd = _taskset(cpu) + [path, "ping-pong", "-i", addr[0], "-p", str(addr[1]),
                           "-t", str(max(1, round(seconds))) if seconds >= 1 else "1",
                           "-m", str(msg_size)]
    from .client_cpu import require_success
    out = require_success(subprocess.run(cmd, capture_output=True, text=True,
                                         timeout=seconds + 30), "sockperf").stdout
    pct = {float(a): float(b) for a, b in re.findall(r"percentile\s+([\d.]+)\s*=\s*([\d.]+)", out)}
    avg = re.search(r"avg-latency=([\d.]+)", out)
    obs = re.search(r"Total (\d+) observations", out)
    if 50.0 not in pct or 99.0 not in pct:
        raise RuntimeError(f"sockperf gave no percentiles: {out[-600:]!r}")
    return dict(p50_us=pct[50.0], p99_us=pct[99.0], avg_us=float(avg.group(1)) if avg else 0.0,
                observations=int(obs.group(1)) if obs else 0)


def dnsperf_round(addr, seconds=1.0, cpu=None, outstanding=100):
    """dnsperf against addr for `seconds` (client pinned to cpu).  Returns
    dict(qps, completed, lost)."""
    import re
    import tempfile
    path, why = find_tool("dnsperf", DNSPERF_PACKAGE)
    if path is None:
        raise FileNotFoundError(why)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("example.com A\nexample.org AAAA\nosvrt.test MX\nwww.example.net A\n")
        qfile = f.name
    try:
        cmd = _taskset(cpu) + [path, "-s", addr[0], "-p", str(addr[1]), "-d", qfile,
                               "-l", str(seconds), "-q", str(outstanding), "-t", "1"]
        from .client_cpu import require_success, run_client
        done, shares = run_client(cmd, timeout=seconds + 30)
        require_success(done, "dnsperf")
        out = done.stdout
    finally:
        os.unlink(qfile)
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    completed = re.search(r"Queries completed:\s+(\d+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    if not qps:
        raise RuntimeError(f"dnsperf gave no rate: {out[-600:]!r}")
    return dict(qps=float(qps.group(1)), completed=int(completed.group(1)) if completed else 0,
                lost=int(lost.group(1)) if lost else 0, **shares)


def default_cpus():
    """(client CPU, server CPU): the first two CPUs this process may use
    (both the same on a one-CPU host)."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[0], cpus[1] if len(cpus) > 1 else cpus[0]


def osvrt_server_round(client, reply, client_cpu, server_cpu, net_options=None, rt_options=None):
    """One round of `client(addr)` against an osvrt.net echo (reply
    transform) in a fresh Runtime on server_cpu with the default classifier
    placement (or net_options); the runtime stops before returning."""
    import osvrt
    import osvrt.net
    rt = osvrt.Runtime(cpus=[server_cpu], **(rt_options or {})).start()
    try:
        if net_options:
            osvrt.net.configure(rt, **net_options)
        server = OsvrtEchoServer(rt, cpu=server_cpu, reply=reply)
        try:
            r = client(server.addr)
            net = rt.stats()["net"]
            r["ring_dropped"] = net["dropped"]["ring"]
            r["classifier_cpu"] = net.get("cpu")
            r["classifier_spin_us"] = net.get("spin_us")
            return r
        finally:
            server.close()
    finally:
        time.sleep(0.005)
        rt.stop(timeout=5)


def real_clients(rounds=5, seconds=1.0, client_cpu=None, server_cpu=None, tests=("sockperf", "dnsperf"),
                 net_options=None, rt_options=None, log=None):
    """sockperf ping-pong (p50, p99 one-way latency, us) and dnsperf
    (queries/s) against an osvrt.net echo and a kernel UDP socket served by a
    Python thread, in alternating rounds (kernel, osvrt, kernel, osvrt...);
    medians, and ratios osvrt/kernel.  A client that is missing (and cannot
    be installed) is skipped: result[test] = {"skipped": why}.  Needs
    CAP_NET_RAW (osvrt.net)."""
    import statistics
    dc, ds = default_cpus()
    client_cpu = dc if client_cpu is None else client_cpu
    server_cpu = ds if server_cpu is None else server_cpu
    out = {"client_cpu": client_cpu, "server_cpu": server_cpu, "rounds": rounds, "seconds": seconds}
    specs = {
        "sockperf": ("sockperf", SOCKPERF_PACKAGE, sockperf_reply,
                     lambda a: sockperf_round(a, seconds, client_cpu), ("p50_us", "p99_us", "avg_us")),
        "dnsperf": ("dnsperf", DNSPERF_PACKAGE, dns_reply,
                    lambda a: dnsperf_round(a, seconds, client_cpu), ("qps",)),
    }
    for test in tests:
        tool, package, reply, client, keys = specs[test]
        path, why = find_tool(tool, package)
        if path is None:
            out[test] = {"skipped": why}
            continue
        kernel = ThreadEchoServer(cpu=server_cpu, reply=reply)
        ks, os_ = [], []
        try:
            for i in range(rounds):
                ks.append(client(kernel.addr))
                os_.append(osvrt_server_round(client, reply, client_cpu, server_cpu,
                                              net_options, rt_options))
                if log:
                    log(f"{test} round {i}: kernel {ks[-1]} osvrt {os_[-1]}")
        finally:
            kernel.close()
        res = {"kernel_rounds": ks, "osvrt_rounds": os_}
        for k in keys:
            kv = statistics.median(r[k] for r in ks)
            ov = statistics.median(r[k] for r in os_)
            res[f"kernel_{k}"], res[f"osvrt_{k}"] = kv, ov
            res[f"ratio_{k}"] = statistics.median(o[k] / r[k] for o, r in zip(os_, ks) if r[k])
        res["ring_dropped"] = sum(r["ring_dropped"] for r in os_)
        out[test] = res
    return out


# One side of one round, for a report that alternates the sides itself
# (osvrt/bench/cli.py): test is "sockperf" or "dnsperf".
CLIENTS = {"sockperf": (sockperf_round, sockperf_reply), "dnsperf": (dnsperf_round, dns_reply)}


def real_client_osvrt(test, client_cpu, server_cpu, seconds=1.0):
    """One round of `test` against an osvrt.net echo (fresh Runtime on
    server_cpu, default classifier placement)."""
    run, reply = CLIENTS[test]
    return osvrt_server_round(lambda a: run(a, seconds, client_cpu), reply, client_cpu, server_cpu)


def real_client_kernel(test, server, client_cpu, seconds=1.0):
    """One round of `test` against `server`, a ThreadEchoServer made with
    real_client_server(test, ...)."""
    run, _ = CLIENTS[test]
    return run(server.addr, seconds, client_cpu)


def real_client_server(test, server_cpu):
    """The kernel-socket peer for `test`: a Python thread on server_cpu
    answering as the client expects; close() it when done."""
    return ThreadEchoServer(cpu=server_cpu, reply=CLIENTS[test][1])
