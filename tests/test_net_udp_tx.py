"""Batched UDP replies of osvrt.net endpoints (csrc/net/tx_batch.h,
osvrt/_engine/udptx.c): one sendmmsg per worker turn, the order of a
thread's datagrams kept, the batch sent when the thread parks (no reply left
behind while the thread sleeps), every refusal of the kernel counted, the
socket kept open for a batch that outlives close(), and the unbatched path.

The receiver is a kernel UDP socket on loopback with a timeout; green
threads run through submit(...).result(timeout).  Nothing here times anything.
"""
import errno
import socket
import threading

import pytest

import osvrt
import osvrt.net
from osvrt import _engine
from osvrt.bench import frames as testing

ok, why = testing.can_open_packet_socket()
pytestmark = pytest.mark.skipif(not ok, reason=f"osvrt.net needs CAP_NET_RAW ({why})")

T = 10            # seconds any one step may take before the test fails


@pytest.fixture
def rt(make_rt):
    return make_rt(cpus=[0])


def receiver():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(T)
    return s


def bind_in(rt, **kw):
    async def b():
        return await osvrt.net.udp_bind(("127.0.0.1", 0), **kw)
    return rt.submit(b).result(timeout=T)


def sent(ep):
    return ep.stats()["sent"]


def test_one_turn_of_replies_is_one_sendmmsg_in_order(rt):
    """70 datagrams sent in one turn (no trap between them) leave in order,
    in ceil(70 / 32) sendmmsg calls: two forced by a full batch, the rest at
    the end of the turn."""
    ep, r = bind_in(rt), receiver()

    async def burst():
        for i in range(70):
            await ep.sendto(b"%d" % i, r.getsockname())
    rt.submit(burst).result(timeout=T)
    assert [r.recv(100) for _ in range(70)] == [b"%d" % i for i in range(70)]
    st = sent(ep)
    assert st["sent"] == 70 and st["syscalls"] == 3
    assert st["errors"] == 0 and st["dropped_full"] == 0
    ep.close()
    r.close()


def test_batch_is_sent_when_the_thread_parks(rt):
    """A thread that replies and then parks (here: for good, on an Event
    nobody sets) must not keep its reply: the worker sends its batch before
    it parks.  The reply arrives while the thread is still parked."""
    ep, r = bind_in(rt), receiver()
    never = osvrt.Event()

    async def reply_then_park():
        await ep.sendto(b"reply", r.getsockname())
        await never.wait()
    t = rt.submit(reply_then_park)
    assert r.recv(100) == b"reply"          # socket.timeout here: the reply was left behind
    assert not t.done()
    assert sent(ep)["syscalls"] == 1
    async def release():
        never.set()
    rt.submit(release).result(timeout=T)
    t.result(timeout=T)
    ep.close()
    r.close()


def test_refused_datagram_is_counted_and_the_rest_still_go(rt):
    """Port 0 is refused by the kernel (EINVAL) only at the flush: it is
    counted (errors, last_errno) and the datagrams after it are sent."""
    ep, r = bind_in(rt), receiver()

    async def three():
        await ep.sendto(b"a", r.getsockname())
        await ep.sendto(b"lost", ("127.0.0.1", 0))
        await ep.sendto(b"b", r.getsockname())
    rt.submit(three).result(timeout=T)
    assert [r.recv(100), r.recv(100)] == [b"a", b"b"]
    st = sent(ep)
    assert st["sent"] == 2 and st["errors"] == 1 and st["last_errno"] == errno.EINVAL
    ep.close()
    r.close()


def bind_port(port):
    """Bind a kernel UDP socket to the port: EADDRINUSE while anything holds it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", port))
    finally:
        s.close()


def test_close_with_datagrams_in_the_batch_sends_them_and_frees_the_port_at_once(rt):
    """close() in the same turn as the sends: the closing thread's batch goes
    out first, and the port is free when close() returns, in that same turn."""
    ep, r = bind_in(rt), receiver()
    port = ep.address[1]

    async def send_and_close():
        await ep.sendto(b"last words", r.getsockname())
        ep.close()
        bind_port(port)                   # EADDRINUSE if the batch still held the socket
        with pytest.raises(OSError) as e:
            await ep.sendto(b"too late", r.getsockname())
        assert e.value.errno == errno.EBADF
    rt.submit(send_and_close).result(timeout=T)
    assert r.recv(100) == b"last words"
    assert sent(ep)["sent"] == 1 and sent(ep)["errors"] == 0
    r.close()


def test_close_frees_the_port_while_another_workers_batch_holds_datagrams(rt):
    """A thread queues a reply and keeps its worker (no trap, so its batch is
    not sent) while another thread closes the endpoint: the port is free when
    close() returns, and the reply, sent after the close, is refused and
    counted (EBADF), as a sendto after close would be."""
    ep, r = bind_in(rt), receiver()
    port = ep.address[1]
    queued, go = threading.Event(), threading.Event()

    async def reply_then_compute():
        await ep.sendto(b"after the close", r.getsockname())
        queued.set()
        while not go.is_set():            # computing: its turn (and batch) lasts
            pass
    t = rt.submit(reply_then_compute)
    assert queued.wait(T)
    ep.close()                            # from a thread that is no worker
    try:
        bind_port(port)                   # EADDRINUSE: held until that worker's turn ends
    finally:
        go.set()
    t.result(timeout=T)
    st = sent(ep)
    assert st["sent"] == 0 and st["errors"] == 1 and st["last_errno"] == errno.EBADF
    r.close()


def test_too_big_raises_at_once_and_queues_nothing(rt):
    ep, r = bind_in(rt), receiver()

    async def big():
        with pytest.raises(OSError) as e:
            await ep.sendto(b"x" * 65508, r.getsockname())
        assert e.value.errno == errno.EMSGSIZE
        with pytest.raises(TypeError):
            await ep.sendto(b"x", "not an address")     # the kernel's own error
    rt.submit(big).result(timeout=T)
    assert sent(ep)["syscalls"] == 0
    ep.close()
    r.close()


def test_unbatched_endpoint_sends_each_datagram(rt):
    ep, r = bind_in(rt, tx_batch=False), receiver()

    async def two():
        await ep.sendto(b"1", r.getsockname())
        await ep.sendto(b"2", r.getsockname())
    rt.submit(two).result(timeout=T)
    assert [r.recv(10), r.recv(10)] == [b"1", b"2"]
    assert ep.stats()["sent"] is None
    ep.close()
    r.close()
    with pytest.raises(TypeError, match="tx_batch must be True or False"):
        bind_in(rt, tx_batch=1)


def test_udptx_off_a_worker_sends_at_once():
    """UdpTx.send from a thread that is no worker: one sendto, no batch."""
    src, r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), receiver()
    src.bind(("127.0.0.1", 0))
    tx = _engine.UdpTx(src.fileno())
    ip = int.from_bytes(socket.inet_aton("127.0.0.1"), "little")
    assert tx.send(b"now", ip, r.getsockname()[1]) == 3
    assert r.recv(10) == b"now"
    assert tx.stats()["syscalls"] == 1 and _engine.udp_tx_flush() == 0
    tx.close()
    tx.close()                               # idempotent
    with pytest.raises(OSError) as e:
        tx.send(b"x", ip, r.getsockname()[1])
    assert e.value.errno == errno.EBADF
    src.close()
    r.close()


def test_udptx_sendto_parses_only_plain_addresses():
    """UdpTx.sendto takes (dotted quad or "localhost", int port) and returns
    NotImplemented, sending nothing, for anything else (udp.py then leaves it
    to the kernel's sendto and its error); a worker's cached last address
    never sends a datagram to the previous destination."""
    src, r1, r2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), receiver(), receiver()
    src.bind(("127.0.0.1", 0))
    tx = _engine.UdpTx(src.fileno())
    port = r1.getsockname()[1]
    for bad in (("127.1", port), ("127.000.0.1", port), ("localhost.", port), ("::1", port),
                ("127.0.0.1", -1), ("127.0.0.1", 65536), ("127.0.0.1", True), (b"127.0.0.1", port),
                ["127.0.0.1", port], ("127.0.0.1",), "127.0.0.1", None, ("127.0.0.1", port, 0),
                ("127.0.0.1\x00junk", port)):                # the kernel refuses a NUL
        assert tx.sendto(b"x", bad) is NotImplemented, bad
    assert tx.stats()["sent"] == 0
    assert tx.sendto(b"one", ("localhost", port)) == 3
    assert r1.recv(10) == b"one"
    tx.close()
    src.close()
    r1.close()
    r2.close()


def test_sendto_follows_each_new_address(rt):
    """On a worker, sendto to one address object and then to another goes
    to each in turn (the worker keeps only the last one parsed)."""
    ep, r1, r2 = bind_in(rt), receiver(), receiver()

    async def alternate():
        a1, a2 = r1.getsockname(), r2.getsockname()
        for i in range(6):
            await ep.sendto(b"%d" % i, a1 if i % 2 == 0 else a2)
            await ep.sendto(b"c%d" % i, (a1[0], a1[1]) if i % 2 == 0 else (a2[0], a2[1]))
    rt.submit(alternate).result(timeout=T)
    assert [r1.recv(10) for _ in range(6)] == [b"0", b"c0", b"2", b"c2", b"4", b"c4"]
    assert [r2.recv(10) for _ in range(6)] == [b"1", b"c1", b"3", b"c3", b"5", b"c5"]
    ep.close()
    r1.close()
    r2.close()


def test_a_reader_sends_its_replies_before_it_waits_for_input(rt, monkeypatch):
    """recvfrom() on an empty channel sends the thread's queued replies
    before its poll and park (lane.py): a round trip's reply never waits
    out the poll.  The spy sees the flush send the reply."""
    from osvrt.net.channels import lane
    flushed = []

    def spy():
        n = _engine.udp_tx_flush()
        flushed.append(n)
        return n
    monkeypatch.setattr(lane, "udp_tx_flush", spy)
    ep, r = bind_in(rt), receiver()

    async def reply_then_read():
        await ep.sendto(b"reply", r.getsockname())
        with pytest.raises(OSError):
            await ep.recvfrom()               # empty: waits until close() below
    t = rt.submit(reply_then_read)
    assert r.recv(100) == b"reply"
    ep.close()
    t.result(timeout=T)
    assert flushed[0] == 1
    r.close()
