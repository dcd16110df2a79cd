"""osvrt.net UDP endpoints with real kernel clients on loopback: echo with a
connected client (no ICMP errors), flows kept apart (also one port on two
addresses), a flow nobody reads does not stall the others, GSO sends arrive
as separate datagrams, a burst of 10,000 datagrams all accounted for, bind
errors, close, timeouts and cancellation, several readers, stats, and stop.

Every wait is bounded: green threads run through submit(...).result(timeout)
and kernel clients use socket timeouts.  Like a NIC, the classifier's packet
ring drops frames when the classifier thread does not run for a while (on a
busy 2-CPU machine it can be descheduled for milliseconds); those drops are
counted (stats "ring").  So request/response clients resend after a short
timeout, as UDP clients do, and flood tests check that every datagram was
either delivered or counted as dropped.
"""
import errno
import os
import socket
import threading
import time

import pytest

import osvrt
import osvrt.net
from osvrt.bench import frames as testing

ok, why = testing.can_open_packet_socket()
pytestmark = pytest.mark.skipif(not ok, reason=f"osvrt.net needs CAP_NET_RAW ({why})")

T = 10            # seconds any one green-thread step may take before the test fails


def client(addr, connect=True, timeout=5.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    if connect:
        s.connect(addr)
    return s


def bind_in(rt, address=("127.0.0.1", 0), **kw):
    """udp_bind run in a green thread of rt; returns the endpoint."""
    async def b():
        return await osvrt.net.udp_bind(address, **kw)
    return rt.submit(b).result(timeout=T)


def wait_until(pred, timeout=T, what="condition"):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def request(c, msg, timeout=T):
    """Send msg on the connected socket c until its echo comes back (resending
    every 0.3 s: a request can be lost in the classifier's ring); stale
    echoes of earlier resends are skipped."""
    end = time.monotonic() + timeout
    c.settimeout(0.3)
    while time.monotonic() < end:
        c.send(msg)
        try:
            while True:
                reply = c.recv(65536)           # ConnectionRefusedError if an ICMP came back
                if reply == msg:
                    return reply
        except socket.timeout:
            continue
    raise AssertionError(f"no echo of {msg!r} within {timeout} s")


async def read_numbered(ep, n, quiet_s):
    """Up to n datagrams that start with an 8-digit number, until none came
    for quiet_s seconds: [(number, length)] in the order they arrived."""
    got = []
    while len(got) < n:
        try:
            with osvrt.timeout(quiet_s):
                data, _ = await ep.recvfrom()
        except TimeoutError:
            break
        got.append((int(data[:8]), len(data)))
    return got


async def echo(ep, n=None):
    """Echo until n datagrams (or until the endpoint is closed); returns the count."""
    count = 0
    while n is None or count < n:
        try:
            data, addr = await ep.recvfrom()
        except OSError:
            break
        await ep.sendto(data, addr)
        count += 1
    return count


def test_echo_connected_client(rt):
    ep = bind_in(rt)
    assert ep.address[0] == "127.0.0.1" and ep.address[1] > 0
    server = rt.submit(echo, ep)
    c = client(ep.address)
    for i in range(300):
        request(c, b"ping %d" % i)          # a connected client: ICMP would raise here
    st = ep.stats()
    assert st["received"] >= 300 and st["dropped"] == {"channel_full": 0, "too_big": 0, "truncated": 0, "rule": 0}
    c.close()
    ep.close()
    assert server.result(timeout=T) == st["received"]


def test_no_icmp_while_nobody_reads(rt):
    """Datagrams to the port while its reader is busy: the kernel socket that
    reserves the port keeps the kernel from answering ICMP port-unreachable,
    so a connected client sees no ECONNREFUSED, and everything is delivered."""
    ep = bind_in(rt)
    c = client(ep.address, timeout=0.5)
    before = testing.udp_socket_stats()
    for i in range(20):
        c.send(b"early %d" % i)
    time.sleep(0.05)
    server = rt.submit(echo, ep)
    got = []
    try:
        while True:
            got.append(c.recv(100))           # ConnectionRefusedError if an ICMP came back
    except socket.timeout:
        pass
    c.settimeout(5)
    lost = rt.stats()["net"]["dropped"]["ring"]
    assert len(got) + lost >= 20 and len(set(got)) == len(got)
    assert set(got) <= {b"early %d" % i for i in range(20)}
    request(c, b"late")                        # still no ICMP, still served
    ep.close()
    server.result(timeout=T)
    after = testing.udp_socket_stats()
    # The reserving socket owns the port: none of these counted as "no port".
    # (Other processes may cause NoPorts too; ours would add at least 20.)
    assert after["NoPorts"] - before["NoPorts"] < 20
    c.close()


def test_flows_kept_apart_same_port_two_addresses(rt):
    a = bind_in(rt, ("127.0.0.1", 0))
    port = a.address[1]
    b = bind_in(rt, ("127.0.0.2", port))          # the same port on another address
    c = bind_in(rt, ("127.0.0.1", 0))
    assert b.address == ("127.0.0.2", port)
    eps = {"a": a, "b": b, "c": c}
    clients = {k: client(ep.address) for k, ep in eps.items()}
    servers = {k: rt.submit(echo, ep) for k, ep in eps.items()}
    for i in range(50):
        for k, s in clients.items():
            request(s, f"{k}{i}".encode())      # only its own flow answers it

    for k, ep in eps.items():
        assert ep.stats()["received"] >= 50, k
        ep.close()
        assert servers[k].result(timeout=T) == ep.stats()["received"]
    for s in clients.values():
        s.close()


def test_source_address_reported(rt):
    ep = bind_in(rt)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.3", 0))

    async def read():
        return await ep.recvfrom()
    fut = rt.submit(read)
    for _ in range(50):                         # resent until it gets through
        s.sendto(b"hi", ep.address)
        try:
            data, addr = fut.result(timeout=0.2)
            break
        except TimeoutError:
            continue
    assert data == b"hi" and addr == s.getsockname()
    s.close()
    ep.close()


def test_sources_taking_turns_each_get_their_own_address(rt):
    """The reader's (ip, port) tuples come from a per-channel cache
    (osvrt/_engine/chanrx.c: the last source, then a dict): datagrams from
    three sources in turn each report their own sender, and each echo goes
    back to it (the reply path keeps its own last address, udptx.c)."""
    ep = bind_in(rt)
    server = rt.submit(echo, ep)
    socks = []
    for ip in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((ip, 0))
        socks.append(s)
    for i in range(30):
        s = socks[i % 3]
        msg = b"%d from %s" % (i, repr(s.getsockname()).encode())
        s.connect(ep.address)
        assert request(s, msg) == msg
    for s in socks:
        s.close()
    ep.close()
    assert server.result(timeout=T) >= 30


def test_unread_flow_does_not_stall_others(rt):
    stuck = bind_in(rt, capacity=64)
    live = bind_in(rt)
    server = rt.submit(echo, live)
    flood = client(stuck.address)
    c = client(live.address)
    ring0 = rt.stats()["net"]["dropped"]["ring"]
    for i in range(100):
        for _ in range(10):
            flood.send(b"x" * 100)                 # 1,000 to a flow nobody reads
        request(c, b"live %d" % i)                 # the other flow is served all along
    wait_until(lambda: stuck.stats()["received"] + stuck.stats()["dropped"]["channel_full"]
               + rt.stats()["net"]["dropped"]["ring"] - ring0 >= 1000,
               what="the flood to be counted")
    st = stuck.stats()
    assert st["received"] == 64 and st["queued"] == 64     # full, oldest kept
    assert st["dropped"]["channel_full"] > 0
    flood.close()
    c.close()
    stuck.close()
    live.close()
    assert server.result(timeout=T) >= 100


def test_gso_sends_arrive_as_separate_datagrams(rt):
    UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
    ep = bind_in(rt)
    c = client(ep.address)
    try:
        c.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 1000)
    except OSError as e:
        pytest.skip(f"UDP_SEGMENT not supported: {e}")
    gso_before = rt.stats()["net"]["gso_packets"]
    blob = b"".join(bytes([65 + i]) * 1000 for i in range(9)) + b"Z" * 123

    async def read(n):
        return [(await ep.recvfrom())[0] for _ in range(n)]
    fut = rt.submit(read, 10)
    for _ in range(20):
        c.send(blob)                               # one send, one super-packet
        try:
            got = fut.result(timeout=0.3)          # (resent if the ring dropped it)
            break
        except TimeoutError:
            continue
    assert got == [bytes([65 + i]) * 1000 for i in range(9)] + [b"Z" * 123]
    assert rt.stats()["net"]["gso_packets"] >= gso_before + 1
    c.close()
    ep.close()


@pytest.mark.parametrize("drain", ["thread", "workers"])
def test_burst_of_10000_all_accounted(rt, drain):
    """Every datagram of a 10,000 burst is either delivered (in order, once)
    or counted as dropped: by the channel, by the kernel's packet ring, or
    by the kernel before any tap (softnet backlog); whoever drains the ring."""
    N = 10_000
    osvrt.net.configure(rt, drain=drain)
    ep = bind_in(rt, capacity=1024)
    stop = threading.Event()

    async def reader():
        seqs = []
        while not stop.is_set():
            try:
                with osvrt.timeout(0.05):
                    data, _ = await ep.recvfrom()
            except TimeoutError:
                continue
            seqs.append(int(data[:8]))
        while ep.pending():
            data, _ = await ep.recvfrom()
            seqs.append(int(data[:8]))
        return seqs

    ring0 = rt.stats()["net"]["dropped"]["ring"]
    soft0 = testing.softnet_drops()
    fut = rt.submit(reader)
    c = client(ep.address)
    for i in range(N):
        c.send(b"%08d" % i + b"." * 56)

    def settled():
        st = ep.stats()
        return (st["received"] + st["dropped"]["channel_full"]
                + rt.stats()["net"]["dropped"]["ring"] - ring0
                + testing.softnet_drops() - soft0) >= N
    wait_until(settled, what="all 10,000 to be delivered or counted")
    stop.set()
    seqs = fut.result(timeout=T)
    st = ep.stats()
    ring = rt.stats()["net"]["dropped"]["ring"] - ring0
    soft = testing.softnet_drops() - soft0
    dropped = st["dropped"]["channel_full"] + st["dropped"]["too_big"]
    assert len(seqs) == st["received"]
    assert seqs == sorted(set(seqs)), "delivered out of order or twice"
    assert all(0 <= s < N for s in seqs)
    assert st["received"] + dropped <= N <= st["received"] + dropped + ring + soft
    assert st["received"] > 0
    c.close()
    ep.close()


def test_bind_errors(rt):
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    with pytest.raises(OSError) as e:
        bind_in(rt, taken.getsockname())
    assert e.value.errno == errno.EADDRINUSE and str(taken.getsockname()[1]) in str(e.value)
    taken.close()

    ep = bind_in(rt)
    with pytest.raises(OSError) as e:               # twice
        bind_in(rt, ep.address)
    assert e.value.errno == errno.EADDRINUSE
    # The reservation keeps other processes off, even with SO_REUSEADDR/PORT.
    thief = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    with pytest.raises(OSError) as e:
        thief.bind(ep.address)
    assert e.value.errno == errno.EADDRINUSE
    thief.close()
    with pytest.raises(OSError) as e:               # the wildcard address conflicts too
        bind_in(rt, ("0.0.0.0", ep.address[1]))
    assert e.value.errno == errno.EADDRINUSE
    ep.close()

    for bad, exc, text in [(("127.0.0.1", 70000), ValueError, "70000"),
                           (("::1", 5), ValueError, "::1"),
                           (("example.invalid", 5), ValueError, "example.invalid"),
                           (("127.0.0.1", -1), ValueError, "-1"),
                           ("127.0.0.1:5", TypeError, "127.0.0.1:5"),
                           ((b"127.0.0.1", 5), TypeError, "b'127.0.0.1'")]:
        with pytest.raises(exc, match=text.replace(".", r"\.").replace(":", ":")):
            bind_in(rt, bad)
    with pytest.raises(ValueError, match="capacity"):
        bind_in(rt, capacity=0)
    with pytest.raises(ValueError, match="lanes=2"):
        bind_in(rt, lanes=2)
    with pytest.raises(TypeError, match="rule"):
        bind_in(rt, rule="not a rule")
    with pytest.raises(RuntimeError, match="osvrt"):       # not in a green thread
        import asyncio
        asyncio.run(osvrt.net.udp_bind(("127.0.0.1", 0)))


def test_a_bind_that_fails_after_its_flow_was_added_frees_the_port(rt, monkeypatch):
    # The endpoint's making failed (here: a Lane, by a MemoryError) after
    # the flow was in the table: nothing removed it, and the port stayed
    # "already has a flow" for the classifier's life.
    from osvrt.net.channels import udp as udp_module
    real = udp_module.Lane

    def failing_lane(*a, **k):
        raise MemoryError("no lane")

    monkeypatch.setattr(udp_module, "Lane", failing_lane)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        addr = s.getsockname()
    with pytest.raises(MemoryError):
        bind_in(rt, addr)
    monkeypatch.setattr(udp_module, "Lane", real)
    ep = bind_in(rt, addr)                          # the same port, bound again
    assert ep.address == addr
    ep.close()


def test_close_frees_port_and_flow(rt):
    ep = bind_in(rt)
    addr = ep.address
    ep.close()
    ep.close()                                      # idempotent
    assert ep.closed and ep.stats()["closed"]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(addr)                                    # the kernel port is free again
    s.close()
    ep2 = bind_in(rt, addr)                         # and the flow: a new one can be added
    server = rt.submit(echo, ep2)
    c = client(addr)
    request(c, b"again")
    c.close()
    ep2.close()
    server.result(timeout=T)

    async def use_closed():
        with pytest.raises(OSError) as e:
            await ep2.recvfrom()
        assert e.value.errno == errno.EBADF
        with pytest.raises(OSError):
            await ep2.sendto(b"x", addr)
    rt.submit(use_closed).result(timeout=T)


def test_close_wakes_waiting_reader(rt):
    ep = bind_in(rt)
    started = threading.Event()

    async def reader():
        started.set()
        with pytest.raises(OSError) as e:
            await ep.recvfrom()
        return e.value.errno
    fut = rt.submit(reader, cpu=rt.cpus[0])
    started.wait(T)
    time.sleep(0.05)                                # let it park

    async def closer():
        ep.close()
    rt.submit(closer, cpu=rt.cpus[-1]).result(timeout=T)
    assert fut.result(timeout=T) == errno.EBADF


def test_a_shut_channel_is_ready_and_names_its_waiter_once_set(rt):
    """The closer's half of the wake in C (ChanRx.shut): after it, the
    reader's re-check (ready()) is true; it returns the handle a parked
    reader stored, or None when none waits."""
    ep = bind_in(rt)
    rx = ep._lanes[0].rx
    assert rx.ready() is False                     # empty, open
    rx.set_waiter(12345)
    assert rx.shut() == 12345
    assert rx.ready() is True
    rx.set_waiter(None)
    assert rx.shut() is None
    ep.close()


def test_timeout_and_cancel_leave_endpoint_usable(rt):
    ep = bind_in(rt)

    async def timed():
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            with osvrt.timeout(0.05):
                await ep.recvfrom()
        return time.monotonic() - t0
    assert 0.04 <= rt.submit(timed).result(timeout=T) < 2

    async def forever():
        await ep.recvfrom()
    fut = rt.submit(forever)
    time.sleep(0.05)
    fut.cancel()
    time.sleep(0.05)
    server = rt.submit(echo, ep)
    c = client(ep.address)
    request(c, b"after")
    c.close()
    ep.close()
    server.result(timeout=T)


def test_two_readers_share_one_endpoint(rt):
    """Two green threads on two CPUs read one endpoint: each datagram goes
    to exactly one of them, each sees its share in order."""
    ep = bind_in(rt)
    N = 400

    async def reader(out):
        while True:
            try:
                data, _ = await ep.recvfrom()
            except OSError:                         # closed: done
                return out
            out.append(int(data))
    a, b = [], []
    ring0 = rt.stats()["net"]["dropped"]["ring"]
    fa = rt.submit(reader, a, cpu=rt.cpus[0])
    fb = rt.submit(reader, b, cpu=rt.cpus[-1])
    c = client(ep.address)
    for i in range(N):
        c.send(b"%d" % i)
        if i % 50 == 49:
            time.sleep(0.005)                       # keep the 256-slot channel from filling

    def accounted():
        st = ep.stats()
        return (st["queued"] == 0 and st["received"] + st["dropped"]["channel_full"]
                + rt.stats()["net"]["dropped"]["ring"] - ring0 >= N)
    wait_until(accounted, what="all datagrams read or counted as dropped")
    received = ep.stats()["received"]
    ep.close()
    fa.result(timeout=T)
    fb.result(timeout=T)
    got = a + b
    assert len(got) == received and len(set(got)) == len(got)    # each exactly once
    assert set(got) <= set(range(N))
    assert a == sorted(a) and b == sorted(b)        # each reader in order
    c.close()


@pytest.mark.parametrize("drain", ["thread", "workers"])
def test_burst_of_5000_small_datagrams_no_ring_drops(rt, drain):
    """5,000 small datagrams sent back to back into a flow that reads: the
    small-frame ring (8192 frames of 512 bytes) holds the whole burst even if the classifier
    (its thread, or the workers) does not run meanwhile, so nothing is lost
    at the ring; the channel is large enough here too, so every datagram
    arrives, in order."""
    N = 5_000
    osvrt.net.configure(rt, drain=drain)
    ep = bind_in(rt, capacity=8192)
    ring0 = rt.stats()["net"]["dropped"]["ring"]
    soft0 = testing.softnet_drops()

    fut = rt.submit(read_numbered, ep, N, 2)
    c = client(ep.address)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    for i in range(N):
        c.send(b"%08d" % i + b"." * 24)
    seqs = [seq for seq, _ in fut.result(timeout=T)]
    ring = rt.stats()["net"]["dropped"]["ring"] - ring0
    soft = testing.softnet_drops() - soft0
    st = ep.stats()
    assert ring == 0, f"{ring} dropped at the ring"
    assert st["dropped"]["channel_full"] == 0 and st["dropped"]["truncated"] == 0
    if soft == 0:               # the kernel dropped none before the tap (softnet backlog)
        assert seqs == list(range(N))
    else:
        assert seqs == sorted(set(seqs)) and len(seqs) + soft >= N
    c.close()
    ep.close()


@pytest.mark.parametrize("drain", ["thread", "workers"])
def test_sizes_on_both_sides_of_the_ring_split_arrive_in_order(rt, drain):
    """Two rings: frames that fit a 512-byte slot go to the small-frame ring,
    the rest to the 2 KiB one (a socket filter on the frame's length).
    Datagrams of sizes on both sides of that limit, sent back to back from
    one socket on one CPU, arrive whole, none read through the copy path, in
    the order sent: the drain takes the two rings' frames in the order they
    came.
    With the workers draining, every worker is held in a blocking wait while
    the datagrams are sent, so both rings fill before the first drain and
    the merge alone decides the order."""
    N = 3_000
    osvrt.net.configure(rt, drain=drain)
    net0 = rt.stats()["net"]
    assert [(r["frame_size"], r["frames"]) for r in net0["rings"]] == [(512, 8192), (2048, 8192)]
    small = net0["rings"][0]["max_frame"] - 14 - 20 - 8     # UDP payload: Ethernet, IPv4, UDP
    assert small == 394
    sizes = [16, small, small + 1, 1472, 100, small - 1, small + 2, 700]
    ep = bind_in(rt, capacity=8192, buffer_size=16 << 20)
    soft0 = testing.softnet_drops()

    fut = rt.submit(read_numbered, ep, N, 5)
    release, held = threading.Event(), threading.Semaphore(0)
    holds = []
    if drain == "workers":
        def hold():
            held.release()
            release.wait(T)                  # blocks the worker's OS thread: no drain there

        async def hold_worker():
            hold()
        holds = [rt.submit(hold_worker, cpu=i) for i in range(len(rt.cpus))]
        for _ in holds:
            assert held.acquire(timeout=T), "a worker was never held"
    c = client(ep.address)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    sent = [sizes[i % len(sizes)] for i in range(N)]
    # One CPU sends (on lo, it also receives, in the send): the order the
    # merge keeps exactly is one CPU's (csrc/net/packet_ring.h).
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        for i, size in enumerate(sent):
            c.send(b"%08d" % i + b"." * (size - 8))
    finally:
        os.sched_setaffinity(0, allowed)
        release.set()
    for h in holds:
        h.result(timeout=T)
    got = fut.result(timeout=T)
    net = rt.stats()["net"]
    soft = testing.softnet_drops() - soft0
    assert net["copied"] == net0["copied"], "a datagram that fits a frame was read whole from the socket"
    assert net["dropped"]["ring"] == net0["dropped"]["ring"]
    n_small = sum(s <= small for s in sent)
    taken = [b["taken"] - a["taken"] for a, b in zip(net0["rings"], net["rings"])]
    assert taken[0] >= n_small and taken[1] >= N - n_small, taken
    if soft == 0:               # the kernel dropped none before the tap (softnet backlog)
        assert got == list(enumerate(sent))
    else:
        seqs = [s for s, _ in got]
        assert seqs == sorted(set(seqs)) and len(seqs) + soft >= N
        assert all(size == sent[s] for s, size in got)
    c.close()
    ep.close()


def test_one_ring_when_the_small_frames_are_not_smaller(rt):
    """small_frame_size at least frame_size: one ring takes every frame (the
    layout before the split), and datagrams of every size still arrive."""
    osvrt.net.configure(rt, frame_size=1024, small_frame_size=1024)
    assert [(r["frame_size"], r["max_frame"]) for r in rt.stats()["net"]["rings"]] == [(1024, 948)]
    ep = bind_in(rt, buffer_size=1 << 20)
    server = rt.submit(echo, ep)
    c = client(ep.address)
    for size in (10, 500, 906, 907, 1400):
        msg = bytes(range(256)) * (size // 256) + b"e" * (size % 256)
        assert request(c, msg) == msg
    assert rt.stats()["net"]["copied"] == 2          # 907 and 1400: past 948 bytes of frame
    c.close()
    ep.close()
    server.result(timeout=T)


@pytest.mark.parametrize("bad", [0, 255, 1 << 30, 512.0, "512", True])
def test_bad_small_frame_size_is_refused_by_name(rt, bad):
    with pytest.raises((TypeError, ValueError), match="small_frame_size"):
        osvrt.net.configure(rt, small_frame_size=bad)
    assert rt.service("net") is None


def test_datagrams_larger_than_a_ring_frame_arrive_whole(rt):
    """A datagram bigger than a 2 KiB ring frame (lo's MTU is 64 KiB) is cut
    in the ring; the kernel queues a whole copy on the packet socket
    (TP_STATUS_COPY), which the classifier reads: it arrives whole, counted
    as copied, and nothing is counted as truncated."""
    ep = bind_in(rt, buffer_size=1 << 20)
    server = rt.submit(echo, ep)
    c = client(ep.address)
    copied0 = rt.stats()["net"]["copied"]
    for size in (1800, 1973, 3000, 9000, 30000, 65000):
        msg = bytes(range(256)) * (size // 256) + b"e" * (size % 256)
        assert request(c, msg) == msg
    net = rt.stats()["net"]
    assert net["copied"] - copied0 >= 4
    assert net["dropped"]["truncated"] == 0
    assert ep.stats()["dropped"]["truncated"] == 0
    c.close()
    ep.close()
    server.result(timeout=T)


def test_placement_rule():
    """The classifier's placement (osvrt.net.channels.service.placement): spare CPUs
    when there are some (adaptive polling), otherwise unpinned and never
    polling; a CPU given that runs a worker: no polling."""
    from osvrt.net.channels.service import placement

    class R:
        cpus = [1]
    cpu, mask, spin, _ = placement(R, allowed=[0, 1])
    assert (cpu, mask, spin) == (-1, 0b01, 50_000)
    R.cpus = [0, 1]
    assert placement(R, allowed=[0, 1])[:3] == (-1, 0, 0)
    R.cpus = [0]
    assert placement(R, allowed=[0])[:3] == (-1, 0, 0)          # one CPU: never polls
    assert placement(R, cpu=0, allowed=[0, 1])[:3] == (0, 0, 0)
    assert placement(R, cpu=1, allowed=[0, 1], spin_us=20)[:3] == (1, 0, 20_000)
    R.cpus = [1]
    assert placement(R, allowed=[0, 1], spin_us=0)[:3] == (-1, 0b01, 0)


def test_stats(rt):
    ep = bind_in(rt)
    server = rt.submit(echo, ep)
    c = client(ep.address)
    for i in range(5):
        time.sleep(0.01)                            # the server is parked: it gets woken
        request(c, b"s%d" % i)
    st = ep.stats()
    assert st["received"] >= 5 and st["wakes_sent"] >= 1
    assert set(st) >= {"address", "received", "dropped", "wakes_sent", "queued", "capacity"}
    net = rt.stats()["net"]
    assert net["interface"] == "lo" and net["running"]
    assert set(net["dropped"]) == {"malformed", "no_flow", "too_big", "truncated", "channel_full",
                                  "rule", "ring"}
    assert net["received"] >= 5 and net["wakes_sent"] >= st["wakes_sent"]
    assert any(e["address"] == ep.address for e in net["endpoints"])
    assert "bad_ip_checksum" in net["malformed"]
    c.close()
    ep.close()
    server.result(timeout=T)
    assert not any(e["address"] == ep.address for e in rt.stats()["net"]["endpoints"])


def test_too_big_for_channel_is_counted(rt):
    ep = bind_in(rt, buffer_size=1000)
    c = client(ep.address)
    server = rt.submit(echo, ep)
    c.send(b"x" * 1001)
    request(c, b"y" * 1000)
    assert ep.stats()["dropped"]["too_big"] + rt.stats()["net"]["dropped"]["ring"] >= 1
    assert ep.stats()["dropped"]["too_big"] <= 1
    c.close()
    ep.close()
    server.result(timeout=T)


def test_a_datagram_that_finds_the_buffer_short_counts_as_channel_full(rt):
    # Not too_big (which is larger than the whole buffer), as documented.
    ep = bind_in(rt, buffer_size=4096)
    c = client(ep.address)
    for _ in range(3):                              # nobody reads: the third has no room
        c.send(b"z" * 1500)
    wait_until(lambda: sum(ep.stats()["dropped"].values()) + ep.stats()["received"]
               + rt.stats()["net"]["dropped"]["ring"] >= 3, what="three datagrams counted")
    st = ep.stats()
    assert st["dropped"]["too_big"] == 0, st
    assert st["received"] + st["dropped"]["channel_full"] + rt.stats()["net"]["dropped"]["ring"] == 3
    assert st["received"] <= 2, st
    c.close()
    ep.close()


@pytest.mark.parametrize("drain", ["thread", "workers"])
def test_stop_closes_endpoints_and_joins_classifier(make_rt, drain):
    rt = make_rt()
    osvrt.net.configure(rt, drain=drain)
    ep = bind_in(rt)
    addr = ep.address
    # The classifier's own thread only when it drains the ring; the workers need none.
    assert ("osvrt-net" in testing.pid_threads()) == (drain == "thread")
    fut = rt.submit(echo, ep, 1)                    # parked in recvfrom at stop
    time.sleep(0.02)
    rt.stop(timeout=2)
    assert fut.cancelled()
    assert ep.closed
    assert "osvrt-net" not in testing.pid_threads()
    assert rt.stats()["net"]["running"] is False
    assert rt.stats()["net"]["drain"] == drain
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(addr)                                    # freed by the stop
    s.close()


def test_configure(make_rt):
    rt = make_rt()
    net = osvrt.net.configure(rt, spin_us=0, ring_frames=64, burst=16, drain="thread")
    assert net is osvrt.net.net_of(rt)
    with pytest.raises(RuntimeError, match="configure"):
        osvrt.net.configure(rt)
    with pytest.raises(ValueError, match="ring_frames"):
        osvrt.net.configure(make_rt(), ring_frames=0)
    with pytest.raises(TypeError, match="spin_yield.*'no'"):
        osvrt.net.configure(make_rt(), spin_yield="no")
    with pytest.raises(OSError, match="no-such-if0"):
        osvrt.net.configure(make_rt(), interface="no-such-if0")
    ep = bind_in(rt)                                # works without polling (spin_us=0)
    server = rt.submit(echo, ep)
    c = client(ep.address)
    for i in range(3):
        request(c, b"%d" % i)
    assert rt.stats()["net"]["sleeps"] >= 1
    c.close()
    ep.close()
    server.result(timeout=T)


@pytest.mark.parametrize("prefilter", [True, False])
def test_prefilter_keeps_other_traffic_out(make_rt, prefilter):
    """With the prefilter (the default), UDP to ports without a flow never
    reaches the classifier (no copy, no wake-up); without it, every such
    datagram is seen and counted as "no flow"."""
    rt = make_rt()
    osvrt.net.configure(rt, prefilter=prefilter)
    ep = bind_in(rt)
    server = rt.submit(echo, ep)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    c = client(ep.address)
    request(c, b"warm")
    before = rt.stats()["net"]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(50):
        s.sendto(b"not for us", other.getsockname())
    request(c, b"after")                            # our flow still gets through
    if not prefilter:
        wait_until(lambda: rt.stats()["net"]["dropped"]["no_flow"]
                   - before["dropped"]["no_flow"] >= 50, what="50 no-flow datagrams")
    after = rt.stats()["net"]
    d_no_flow = after["dropped"]["no_flow"] - before["dropped"]["no_flow"]
    if prefilter:
        assert d_no_flow == 0
    else:
        assert d_no_flow >= 50
    for sock in (s, other, c):
        sock.close()
    ep.close()
    server.result(timeout=T)


def test_endpoint_dropped_without_close_frees_its_flow(rt):
    import gc
    # Not returned by the green thread: an ended Thread keeps its return
    # value, and the worker may still hold the Thread when result() returns.
    held = []

    async def bind():
        held.append(await osvrt.net.udp_bind(("127.0.0.1", 0)))
    rt.submit(bind).result(timeout=T)
    ep = held.pop()
    addr = ep.address
    with pytest.warns(ResourceWarning):             # its kernel socket, unclosed
        del ep
        gc.collect()
    ep2 = bind_in(rt, addr)                         # port and flow both free again
    assert ep2.address == addr
    ep2.close()


def test_reader_cancelled_while_queued_for_the_token(rt):
    """A waits for data (holding the lane's reader token), B queues behind it
    and is cancelled; data then goes to A, and a later reader C still gets
    the token: a cancelled waiter neither loses nor keeps a wake-up."""
    ep = bind_in(rt)

    async def read_one():
        return (await ep.recvfrom())[0]
    a = rt.submit(read_one, cpu=rt.cpus[0])
    time.sleep(0.05)
    b = rt.submit(read_one, cpu=rt.cpus[-1])
    time.sleep(0.05)
    b.cancel()
    time.sleep(0.05)
    assert b.cancelled()
    c = client(ep.address)
    for _ in range(50):                             # resent until A has it
        c.send(b"for A")
        try:
            assert a.result(timeout=0.2) == b"for A"
            break
        except TimeoutError:
            continue
    while ep.pending():                             # drop the resends
        rt.submit(read_one).result(timeout=T)
    third = rt.submit(read_one, cpu=rt.cpus[-1])
    for _ in range(50):
        c.send(b"for C")
        try:
            assert third.result(timeout=0.2) == b"for C"
            break
        except TimeoutError:
            continue
    assert third.result(timeout=0) == b"for C"
    c.close()
    ep.close()


def test_a_reader_whose_channel_never_empties_lets_its_cpu_go(rt):
    """A recvfrom that finds a datagram returns with no trap.  A reader whose
    channel stays full must still trap now and then, so the fair rule, timers,
    readiness and its worker's batched replies get their turn: it spends the
    sockets' cooperative budget (128 calls that complete at once per resume,
    docs/design.md).  The bench's dnsperf flood once held a CPU for 120 ms
    without a trap.  The reader first computes 30 ms (far past OSv's 5 ms
    hysteresis above a new thread), so at its first trap the rule hands the
    CPU to a sibling: that must come within the budget, not when the channel
    is empty."""
    n = 300
    ep = bind_in(rt, capacity=512)
    c = client(ep.address)
    for i in range(n):
        c.send(b"%d" % i)
    wait_until(lambda: ep.pending() == n, what="the channel to fill")

    async def reader():
        taken, seen = [0], []

        async def sibling():
            seen.append(taken[0])

        end = time.thread_time() + 0.03
        while time.thread_time() < end:      # CPU time, no trap
            pass
        s = osvrt.spawn(sibling, cpu=osvrt.current().cpu)
        for _ in range(n):
            await ep.recvfrom()
            taken[0] += 1
        await s.join(timeout=T)
        return seen

    seen = rt.submit(reader).result(timeout=T)
    c.close()
    ep.close()
    assert seen and seen[0] <= 129, f"the sibling ran only after {seen} datagrams"


def fill(ep, c, n):
    """Send n datagrams b"0".."n-1" and wait until all are queued."""
    for i in range(n):
        c.send(b"%d" % i)
    wait_until(lambda: ep.pending() == n, what="the channel to fill")


def test_the_reader_token_is_the_channels_own(rt):
    """The reader's token lives in the ChanRx (chanrx.c): acquire() takes it
    once; while it is held, take_fast() takes nothing (the holder is the
    channel's only consumer) and recvfrom() queues for it; release(), from
    any OS thread, gives it back and wakes the queued reader, which then
    gives it back in turn."""
    ep = bind_in(rt)
    rx = ep._lanes[0].rx
    c = client(ep.address)
    fill(ep, c, 1)
    assert rx.acquire() is True
    assert rx.acquire() is False
    assert rx.take_fast() is None and ep.pending() == 1      # held: nothing taken

    async def read_one():
        return (await ep.recvfrom())[0]
    fut = rt.submit(read_one)
    wait_until(lambda: len(ep._lanes[0].readers) == 1, what="the reader to queue for the token")
    time.sleep(0.02)
    assert not fut.done() and ep.pending() == 1
    rx.release()                                    # off a worker: wakes the reader
    assert fut.result(timeout=T) == b"0"
    assert rx.acquire() is True                     # it gave the token back
    rx.release()
    c.close()
    ep.close()


def test_the_fast_path_spends_the_budget_but_leaves_its_yield_to_recvfrom(rt):
    """take_fast() (recvfrom()'s common case in one call) spends one unit of
    the cooperative I/O budget per datagram, as io_budget() does, and never
    the last one, whose call must yield before it takes (recvfrom()'s full
    path): after a resume (a fresh budget of 128) it takes 127 datagrams in
    order, then answers None with nothing taken, and the next io_budget()
    is the yield."""
    from osvrt._engine import io_budget
    n = 200
    ep = bind_in(rt, capacity=512)
    c = client(ep.address)
    fill(ep, c, n)

    async def fast():
        rx = ep._lanes[0].rx
        await osvrt.yield_now()                     # a fresh budget (worker.c)
        got = []
        while (d := rx.take_fast()) is not None:
            got.append(int(d[0]))
        left = ep.pending()
        y = io_budget()
        if y is not None:
            await y
        return got, left, y is not None
    got, left, yielded = rt.submit(fast).result(timeout=T)
    assert got == list(range(127)) and left == n - 127 and yielded
    c.close()
    ep.close()


def test_a_cancel_at_the_budgets_yield_loses_no_datagram(rt):
    """A reader whose channel never empties traps only at the budget's yield,
    which comes before its take: a cancel asked after k datagrams is raised
    there, within the budget, and every datagram is either in the reader's
    hands or still queued, in order."""
    n = 400
    ep = bind_in(rt, capacity=512)
    c = client(ep.address)
    fill(ep, c, n)
    taken = []

    async def reader():
        try:
            for i in range(n):
                taken.append(int((await ep.recvfrom())[0]))
                if i == 10:
                    osvrt.current().cancel()
        except osvrt.Cancelled:
            return "cancelled"
        return "not cancelled"
    assert rt.submit(reader).result(timeout=T) == "cancelled"
    assert 11 <= len(taken) <= 11 + 128 and taken == list(range(len(taken)))
    assert ep.pending() == n - len(taken)

    async def rest():
        return [int((await ep.recvfrom())[0]) for _ in range(n - len(taken))]
    assert rt.submit(rest).result(timeout=T) == list(range(len(taken), n))
    c.close()
    ep.close()


def test_a_reader_cancelled_while_it_waits_for_data_loses_nothing(rt):
    """A reader parked on an empty channel (it holds the token) is cancelled:
    it gives the token back, and the datagrams sent afterwards all reach the
    next reader, through the fast path, in order."""
    ep = bind_in(rt)

    async def forever():
        await ep.recvfrom()
    rx = ep._lanes[0].rx

    def token_held():
        if rx.acquire():
            rx.release()                            # a probe: given back at once
            return False
        return True
    fut = rt.submit(forever)
    wait_until(token_held, what="the reader to take the token")
    time.sleep(0.05)                                # let it park
    fut.cancel()
    wait_until(fut.done, what="the cancel")
    c = client(ep.address)
    fill(ep, c, 20)

    async def read_all():
        return [int((await ep.recvfrom())[0]) for _ in range(20)]
    assert rt.submit(read_all).result(timeout=T) == list(range(20))
    c.close()
    ep.close()


def test_recvfrom_on_a_closed_endpoint_with_datagrams_queued_raises(rt):
    """close() with datagrams still queued: recvfrom() raises EBADF before its
    fast path would take one."""
    ep = bind_in(rt)
    c = client(ep.address)
    fill(ep, c, 3)
    rx = ep._lanes[0].rx
    ep.close()

    async def read():
        with pytest.raises(OSError) as e:
            await ep.recvfrom()
        return e.value.errno
    assert rt.submit(read).result(timeout=T) == errno.EBADF
    assert rx.queued() == 3
    c.close()


def test_the_fast_paths_release_wakes_a_reader_queued_for_the_token(rt):
    """A reader that queued its ticket while the token was held (as
    acquire_slow does, then parks) is woken by the next release, also when
    that release is take_fast()'s own: a take in between must not leave it
    parked with the token free."""
    from osvrt import kernel
    ep = bind_in(rt)
    ln = ep._lanes[0]
    c = client(ep.address)
    fill(ep, c, 2)
    queued = threading.Event()

    async def queue_and_park():
        t = kernel.current()
        ln.readers.append(t.new_ticket())
        queued.set()
        await kernel.park()
        return "woken"
    fut = rt.submit(queue_and_park)
    assert queued.wait(T)
    time.sleep(0.02)
    assert not fut.done()
    assert ln.rx.take_fast()[0] == b"0"             # off a worker: no budget; a take
    assert fut.result(timeout=T) == "woken"
    assert len(ln.readers) == 0 and ep.pending() == 1
    c.close()
    ep.close()


def test_a_channel_reader_needs_the_deque_of_its_waiting_readers(rt):
    """ChanRx takes the lane's deque of waiting tickets at construction (its
    release wakes them); anything else is refused, by name."""
    from osvrt._engine import ChanRx
    ep = bind_in(rt)
    rx = ep._lanes[0].rx
    with pytest.raises(TypeError, match=r"readers must be a collections.deque, not \[\]"):
        ChanRx(ep._flow, 1, [])
    assert rx.acquire() is True
    rx.release()
    ep.close()
