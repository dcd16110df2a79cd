"""UDP workloads for benchmarks/bench_udp.py: echo servers (osvrt on a net
channel, a kernel socket served by a Python thread, the same served by
asyncio) and a load generator in C (csrc/net_bench.c) that holds no GIL, so
each server has the interpreter to itself and the figures compare servers,
not clients.

Placement on a 2-CPU machine (see bench_udp.py): the client on one CPU, the
server (the osvrt worker, or the Python thread, or the asyncio loop) on the
other; the classifier thread unpinned (the scheduler puts it where there is
room: it runs in short bursts right after the client's send).
"""
import asyncio
import os
import socket
import threading
import time

from .._core import ffi, lib

_STOP = b"osvrt-net-bench-stop"


def rr(addr, n, *, payload=64, window=1, cpu=-1, timeout_ms=200):
    """n request/response exchanges with the echo server at addr, `window`
    requests in flight, from the C client (pinned to cpu unless -1).
    Returns a dict: ns (mean round trip), p50_ns, p99_ns, per_s
    (transactions per second), done, lost."""
    res = ffi.new("struct osvrt_rr_result *")
    err = lib.osvrt_net_bench_rr(addr[0].encode(), addr[1], n, payload, window, cpu, timeout_ms, res)
    if err:
        raise OSError(-err, f"UDP client to {addr}: {os.strerror(-err)} "
                            f"(done {res.done}, lost {res.lost})")
    return dict(ns=res.mean_ns, p50_ns=res.p50_ns, p99_ns=res.p99_ns,
                per_s=res.done / (res.elapsed_ns / 1e9) if res.elapsed_ns else 0.0,
                done=res.done, lost=res.lost, window=window)


def _pin(cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})           # this thread only (Linux)


class ThreadEchoServer:
    """A kernel UDP socket served by one Python thread (blocking recvfrom /
    sendto), pinned to cpu."""

    def __init__(self, cpu=None, ip="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.addr = self.sock.getsockname()
        self._t = threading.Thread(target=self._run, args=(cpu,), name="udp-thread-echo", daemon=True)
        self._t.start()

    def _run(self, cpu):
        _pin(cpu)
        s = self.sock
        while True:
            data, addr = s.recvfrom(65536)
            if data == _STOP:
                return
            s.sendto(data, addr)

    def close(self):
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(_STOP, self.addr)
        self._t.join(5)
        self.sock.close()


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
    """An osvrt.net endpoint echoed by one green thread of rt, pinned to cpu."""

    def __init__(self, rt, cpu=None, ip="127.0.0.1"):
        from . import udp_bind
        self.rt = rt
        ready = threading.Event()
        box = []

        async def serve():
            ep = await udp_bind((ip, 0))
            box.append(ep)
            ready.set()
            count = 0
            recvfrom, sendto = ep.recvfrom, ep.sendto
            while True:
                try:
                    data, addr = await recvfrom()
                except OSError:
                    return count
                await sendto(data, addr)
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
    from . import net_of, udp_bind

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
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().strip() != name:
                    continue
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick   # utime + stime
        except OSError:
            pass
    return total
