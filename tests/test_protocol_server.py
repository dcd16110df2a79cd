"""osvrt.net.serve_tcp_protocol: connections served by callbacks in the
engine (osvrt/_engine/serve.c): replies in order, close after the reply,
connection_lost, a failing callback closes only its connection, output
queued while the peer does not read, cancel closes everything, accept out of
fds is retried, and the argument errors."""
import functools
import logging
import os
import socket
import subprocess
import sys
import textwrap

import pytest

import osvrt
from osvrt import net


class Upper:
    """Replies with each chunk upper-cased; records its life."""
    lost: list = []

    def __init__(self, conn):
        self.conn = conn

    def data_received(self, data):
        if data.startswith(b"close"):
            self.conn.close()                 # the reply is still sent
            return b"bye"
        if data.startswith(b"boom"):
            raise ValueError("boom from the handler")
        if data.startswith(b"big"):
            return b"x" * (4 << 20)           # more than the socket buffers hold
        if data.startswith(b"write"):
            self.conn.write(b"first,")
            return b"second"
        return data.upper()

    def connection_lost(self, exc):
        Upper.lost.append(exc)


def _serve(main, factory=Upper, runtime_options=None, **kw):
    """Run main(address) beside a serve_tcp_protocol server, then cancel it
    (a one-CPU runtime, with runtime_options)."""
    async def runner():
        bound = []
        srv = osvrt.spawn(functools.partial(net.serve_tcp_protocol, factory, ("127.0.0.1", 0),
                                            on_listen=bound.append, **kw))
        while not bound:
            await osvrt.sleep(0.001)
        try:
            return await main(bound[0])
        finally:
            srv.cancel()
            with pytest.raises(osvrt.Cancelled):
                await srv.join(timeout=5)
    return osvrt.run(runner, cpus=1, **(runtime_options or {}))


async def _recv_exactly(s, n):
    got = b""
    while len(got) < n:
        d = await s.recv()
        if not d:
            break
        got += d
    return got


def test_replies_in_order_on_many_connections_and_fd_reuse():
    async def main(addr):
        for round_ in range(3):               # later rounds reuse the fds of earlier ones
            conns = [await net.open_tcp_stream(*addr) for _ in range(10)]
            for i, s in enumerate(conns):
                await s.sendall(b"abc%d-%d" % (round_, i))
            for i, s in enumerate(conns):
                want = b"ABC%d-%d" % (round_, i)
                assert await _recv_exactly(s, len(want)) == want
                s.close()
        return True
    Upper.lost = []
    assert _serve(main)


def test_close_in_the_callback_sends_the_reply_then_eof_and_connection_lost():
    async def main(addr):
        s = await net.open_tcp_stream(*addr)
        await s.sendall(b"close please")
        assert await _recv_exactly(s, 3) == b"bye"
        assert await s.recv() == b""          # then EOF
        s.close()
        for _ in range(100):
            if Upper.lost:
                break
            await osvrt.sleep(0.01)
        return list(Upper.lost)
    Upper.lost = []
    assert _serve(main) == [None]


def test_write_and_the_return_value_go_out_in_order():
    async def main(addr):
        s = await net.open_tcp_stream(*addr)
        await s.sendall(b"write")
        got = await _recv_exactly(s, len(b"first,second"))
        s.close()
        return got
    assert _serve(main) == b"first,second"


def test_a_reset_peer_reaches_connection_lost_as_an_oserror():
    async def main(addr):
        s = await net.open_tcp_stream(*addr)
        await s.sendall(b"hi")
        assert await _recv_exactly(s, 2) == b"HI"
        # SO_LINGER 0: close() sends RST, the server's next call fails
        s.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
        for _ in range(200):
            if Upper.lost:
                break
            await osvrt.sleep(0.01)
        return list(Upper.lost)
    Upper.lost = []
    lost = _serve(main)
    assert len(lost) == 1 and isinstance(lost[0], ConnectionResetError), lost


def test_a_failing_callback_closes_its_connection_only_and_is_logged(caplog):
    async def main(addr):
        bad = await net.open_tcp_stream(*addr)
        good = await net.open_tcp_stream(*addr)
        await bad.sendall(b"boom")
        assert await bad.recv() == b""        # closed by the server
        bad.close()
        await good.sendall(b"still")
        got = await _recv_exactly(good, 5)
        good.close()
        return got
    Upper.lost = []
    with caplog.at_level(logging.ERROR, logger="osvrt"):
        assert _serve(main) == b"STILL"
    assert any("boom from the handler" in repr(r.exc_info) for r in caplog.records), caplog.text
    assert any(isinstance(e, ValueError) for e in Upper.lost)


def test_output_is_queued_while_the_peer_does_not_read_and_all_arrives():
    async def main(addr):
        s = await net.open_tcp_stream(*addr)
        await s.sendall(b"big")
        await osvrt.sleep(0.05)               # the server filled the buffers and queued the rest
        await s.sendall(b"after")             # read after the queued output is sent
        got = await _recv_exactly(s, (4 << 20) + 5)
        s.close()
        return got
    got = _serve(main)
    assert got == b"x" * (4 << 20) + b"AFTER"


def test_cancel_closes_every_connection_and_the_listener():
    async def main():
        bound = []
        srv = osvrt.spawn(functools.partial(net.serve_tcp_protocol, Upper, ("127.0.0.1", 0),
                                            on_listen=bound.append))
        while not bound:
            await osvrt.sleep(0.001)
        s = await net.open_tcp_stream(*bound[0])
        await s.sendall(b"x")
        assert await _recv_exactly(s, 1) == b"X"
        srv.cancel()
        with pytest.raises(osvrt.Cancelled):
            await srv.join(timeout=5)
        eof = await s.recv()
        s.close()
        with pytest.raises(ConnectionRefusedError):
            await net.open_tcp_stream(*bound[0])
        return eof
    Upper.lost = []
    assert osvrt.run(main, cpus=1) == b""
    assert Upper.lost == [None]


def test_bad_arguments_are_named():
    async def main():
        with pytest.raises(TypeError, match="factory"):
            await net.serve_tcp_protocol(None, ("127.0.0.1", 0))
        with pytest.raises(ValueError, match="backlog .* -1"):
            await net.serve_tcp_protocol(Upper, ("127.0.0.1", 0), backlog=-1)
        with pytest.raises(TypeError, match="on_listen .* 5"):
            await net.serve_tcp_protocol(Upper, ("127.0.0.1", 0), on_listen=5)
        with pytest.raises(ValueError, match="cpus=\\[12345\\]"):
            await net.serve_tcp_protocol(Upper, ("127.0.0.1", 0), cpus=[12345])
    osvrt.run(main, cpus=1)


def test_a_protocol_without_data_received_is_refused_per_connection(caplog):
    class NoData:
        def __init__(self, conn):
            pass

    async def main(addr):
        s = await net.open_tcp_stream(*addr)
        got = await s.recv()                  # the server closes it
        s.close()
        return got
    with caplog.at_level(logging.ERROR, logger="osvrt"):
        assert _serve(main, factory=NoData) == b""
    assert "data_received" in caplog.text


def test_the_connection_is_only_usable_on_its_servers_cpu_and_while_open():
    kept = []

    class Keep:
        def __init__(self, conn):
            kept.append(conn)

        def data_received(self, data):
            return data

    async def main(addr):
        s = await net.open_tcp_stream(*addr)
        await s.sendall(b"x")
        assert await _recv_exactly(s, 1) == b"x"
        conn = kept[0]
        s.close()
        for _ in range(200):
            if conn.closed:
                break
            await osvrt.sleep(0.01)
        with pytest.raises(osvrt.ClosedResourceError):
            conn.write(b"late")
        conn.close()                          # a no-op once closed
        return conn.fileno()
    assert _serve(main, factory=Keep) == -1


SERVER_LOW_FDS = textwrap.dedent("""
    import resource, sys
    import osvrt
    from osvrt import net
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (48, hard))

    class Echo:
        def __init__(self, conn):
            pass
        def data_received(self, data):
            return data

    async def main():
        await net.serve_tcp_protocol(Echo, ("127.0.0.1", 0),
                                     on_listen=lambda a: print(a[1], flush=True))
    osvrt.run(main, cpus=1)
""")


def test_accept_out_of_fds_is_reported_and_retried_not_fatal():
    p = subprocess.Popen([sys.executable, "-P", "-c", SERVER_LOW_FDS], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    clients = []
    try:
        port = int(p.stdout.readline())
        for _ in range(60):                   # more than the server has fds for
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        first = clients[0]
        first.sendall(b"ping")
        assert first.recv(10) == b"ping"      # still serving the accepted ones
        for c in clients[1:40]:               # give fds back ...
            c.close()
        last = clients[-1]
        last.sendall(b"late")                 # ... and the queued connection is served
        assert last.recv(10) == b"late"
    finally:
        for c in clients:
            c.close()
        p.terminate()
        _, err = p.communicate(timeout=10)
    assert "accept failed" in err and "Too many open files" in err, err[-2000:]
    assert p.returncode in (-15, 143), err[-2000:]       # SIGTERM: osvrt exits 143


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_serves_on_every_cpu_asked_for():
    seen = set()

    class Where:
        def __init__(self, conn):
            seen.add(osvrt.current().cpu)

        def data_received(self, data):
            return data

    async def main():
        bound = []
        cpus = list(osvrt.kernel.current_worker().rt.cpus)
        srv = osvrt.spawn(functools.partial(net.serve_tcp_protocol, Where, ("127.0.0.1", 0),
                                            cpus=cpus, on_listen=bound.append))
        while not bound:
            await osvrt.sleep(0.001)
        for _ in range(40):                   # SO_REUSEPORT spreads them by hash
            s = await net.open_tcp_stream(*bound[0])
            await s.sendall(b"a")
            assert await _recv_exactly(s, 1) == b"a"
            s.close()
        srv.cancel()
        with pytest.raises(osvrt.Cancelled):
            await srv.join(timeout=5)
        return cpus
    cpus = osvrt.run(main, cpus=2)
    assert seen == set(cpus)


def test_the_factory_may_write_a_greeting_or_close_at_once():
    class Greet:
        def __init__(self, conn):
            if Greet.refuse:
                conn.close()
            else:
                conn.write(b"220 hello\r\n")

        def data_received(self, data):
            return data
    Greet.refuse = False

    async def main(addr):
        s = await net.open_tcp_stream(*addr)
        greeting = await _recv_exactly(s, 11)
        s.close()
        Greet.refuse = True
        s = await net.open_tcp_stream(*addr)
        refused = await s.recv()
        s.close()
        return greeting, refused
    assert _serve(main, factory=Greet) == (b"220 hello\r\n", b"")


def test_a_reuse_of_the_servers_epoll_fd_number_is_waited_on_afresh():
    # The server's own epoll fd waits in the worker's epoll (edge-triggered,
    # registered once); when the server ends, the worker must forget that
    # registration, or a socket that gets the same fd number would park in
    # recv with nothing registered for it.
    async def main():
        bound = []
        srv = osvrt.spawn(functools.partial(net.serve_tcp_protocol, Upper, ("127.0.0.1", 0),
                                            on_listen=bound.append))
        while not bound:
            await osvrt.sleep(0.001)
        s = await net.open_tcp_stream(*bound[0])
        await s.sendall(b"x")
        assert await _recv_exactly(s, 1) == b"X"
        await osvrt.sleep(0.01)               # the server parked on its epoll fd
        srv.cancel()
        with pytest.raises(osvrt.Cancelled):
            await srv.join(timeout=5)
        s.close()
        pairs = [socket.socketpair() for _ in range(8)]   # the lowest numbers: reused
        got = []
        streams = [(osvrt.net.sockets.Stream(a), osvrt.net.sockets.Stream(b)) for a, b in pairs]
        for sa, sb in streams:
            for x, y in ((sa, sb), (sb, sa)):     # either end may hold the old number
                r = osvrt.spawn(x.recv)
                await osvrt.sleep(0.002)          # parked
                y.socket.send(b"y")
                with osvrt.timeout(5):
                    got.append(await r.join())
        for sa, sb in streams:
            sa.close()
            sb.close()
        return got
    assert osvrt.run(main, cpus=1) == [b"y"] * 16


def test_the_server_sleeps_at_once_when_it_parks_not_after_the_idle_spin():
    """Between a client's requests the serving worker sleeps in epoll at
    once: its idle spin (idle_spin_us) would burn the CPU that the clients
    and the kernel's TCP need (issue #17).  A 1 s spin would catch every
    request here and never sleep; a park must end in a sleep instead (one
    request may come before the server parks: half the rounds suffice)."""
    rounds = 30

    def client(addr):
        with socket.create_connection(addr, timeout=30) as s:
            for i in range(rounds):
                s.sendall(b"r%02d" % i)
                got = b""
                while len(got) < 3:
                    d = s.recv(3 - len(got))
                    assert d, "the server closed the connection"
                    got += d
                assert got == b"R%02d" % i

    async def main(addr):
        stats = osvrt.current().worker.rt.stats
        before = stats()["cpus"][0]["idle_sleeps"]
        await osvrt.to_thread(client, addr)          # an OS thread: it needs no turn here
        return stats()["cpus"][0]["idle_sleeps"] - before
    # no balancer: its timer would end the spin early and count sleeps of its own
    assert _serve(main, runtime_options={"idle_spin_us": 1_000_000, "balance": False}) >= rounds // 2


_SLOW_CLIENT = r'''
import socket, sys, time
c = socket.socket()
c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
c.connect(("127.0.0.1", int(sys.argv[1])))
mode = sys.argv[2]
if mode == "half-close":
    c.sendall(b"GET")
    c.shutdown(socket.SHUT_WR)              # EOF at once; the reply is read later
    time.sleep(1.5)
else:
    for part in (b"first", b"second", b"third"):
        c.sendall(part)
        time.sleep(0.3)
n = 0
while (d := c.recv(65536)):
    n += len(d)
print(n, flush=True)
'''


def _serve_for_one_slow_client(protocol, mode):
    """serve_tcp_protocol with `protocol`; a client process that reads its
    reply only later; returns (server CPU seconds while it waited, bytes the
    client got)."""
    import time

    async def main():
        got = []
        srv = osvrt.spawn(functools.partial(net.serve_tcp_protocol, protocol,
                                            ("127.0.0.1", 0), on_listen=got.append))
        while not got:
            await osvrt.sleep(0.01)
        p = subprocess.Popen([sys.executable, "-c", _SLOW_CLIENT, str(got[0][1]), mode],
                             stdout=subprocess.PIPE, text=True)
        c0 = time.process_time()
        while p.poll() is None:
            await osvrt.sleep(0.05)
        cpu = time.process_time() - c0
        srv.cancel()
        try:
            await srv.join()
        except osvrt.Cancelled:
            pass
        return cpu, int(p.stdout.read())
    return osvrt.run(main, cpus=1)


def _small_sndbuf(conn):
    s = socket.socket(fileno=conn.fileno())
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    s.detach()


def test_a_peers_eof_with_output_pending_parks_the_server():
    """The peer half-closes and reads its reply slowly: with output pending
    the connection stayed registered for EPOLLIN, level-triggered, which
    reports the EOF every turn: the server spun (75% of a core) until the
    reply drained."""
    class Reply:
        def __init__(self, conn):
            _small_sndbuf(conn)

        def data_received(self, data):
            return b"r" * (200 << 10)

    cpu, got = _serve_for_one_slow_client(Reply, "half-close")
    assert got == 200 << 10
    assert cpu < 0.5, f"the server used {cpu:.2f} s of CPU while the client waited"


def test_no_data_received_after_close():
    """close() with output pending: the connection's later input is read and
    dropped (no data_received, no reply), as asyncio's transports stop
    reading at close()."""
    calls = []

    class CloseAfterFirst:
        def __init__(self, conn):
            self.conn = conn
            _small_sndbuf(conn)

        def data_received(self, data):
            calls.append((data, self.conn.closed))
            if data == b"first":
                self.conn.write(b"r" * 100_000)        # stays pending: the client reads later
                self.conn.close()
                return None
            return b"late reply"

    _cpu, got = _serve_for_one_slow_client(CloseAfterFirst, "three-parts")
    assert calls == [(b"first", False)]
    assert got == 100_000
