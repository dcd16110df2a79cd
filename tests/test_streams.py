"""Green sockets (osvrt.net.sockets): TCP and Unix streams, UDP sockets."""
import os
import resource
import socket
import struct
import time

import pytest

import osvrt
from osvrt import net


def fd_count():
    return len(os.listdir("/proc/self/fd"))


async def echo_server(listener, *, cpu=None):
    """Accept forever; echo each connection in its own green thread."""
    async def echo(s):
        async with s:
            while True:
                try:
                    data = await s.recv()
                except ConnectionError:
                    return
                if not data:
                    return
                await s.sendall(data)
    while True:
        s, _ = await listener.accept()
        osvrt.spawn(echo, s)


def test_echo_and_listener_address(call):
    async def main():
        async with await net.tcp_listen(("127.0.0.1", 0)) as lst:
            host, port = lst.address
            assert host == "127.0.0.1" and port > 0
            srv = osvrt.spawn(echo_server, lst)
            async with await net.open_tcp_stream("127.0.0.1", port) as s:
                assert isinstance(s.socket, socket.socket)
                await s.sendall(b"hello")
                assert await s.recv() == b"hello"
            async with await net.open_tcp_stream("localhost", port, timeout=5) as s:
                await s.sendall(b"x" * 100000)
                got = b""
                while len(got) < 100000:
                    got += await s.recv()
                assert got == b"x" * 100000
            srv.cancel()
    call(main)


def test_echo_5000_concurrent_connections_across_cpus(make_rt):
    n = 5000
    need = 2 * n + 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    rt = make_rt(cpus=2)

    async def main():
        lst = await net.tcp_listen(("127.0.0.1", 0), backlog=4096)
        port = lst.address[1]
        servers = [osvrt.spawn(echo_server, lst, cpu=c) for c in rt.cpus]
        connected = 0
        all_in = osvrt.Event()

        async def client(i):
            nonlocal connected
            s = await net.open_tcp_stream("127.0.0.1", port, timeout=20)
            async with s:
                connected += 1
                if connected == n:
                    all_in.set()
                await all_in.wait(timeout=30)        # all n are open at once
                msg = struct.pack("!I", i) * 4
                for _ in range(2):
                    await s.sendall(msg)
                    got = b""
                    while len(got) < len(msg):
                        d = await s.recv()
                        assert d
                        got += d
                    assert got == msg
            return i
        async with osvrt.TaskGroup() as g:
            ths = [g.spawn(client, i, cpu=rt.cpus[i % 2]) for i in range(n)]
        assert sorted([await t.join() for t in ths]) == list(range(n))
        for t in servers:
            t.cancel()
        lst.close()
        return connected
    t0 = time.monotonic()
    assert rt.submit(main).result(timeout=90) == n
    st = rt.stats()["cpus"]
    assert all(c["io_events"] > 0 for c in st), st
    assert time.monotonic() - t0 < 90


def test_peer_reset(call):
    async def main():
        async with await net.tcp_listen(("127.0.0.1", 0)) as lst:
            c = await net.open_tcp_stream(*lst.address)
            s, _ = await lst.accept()
            c.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()                                    # RST
            with pytest.raises(ConnectionResetError) as ei:
                while await s.recv():
                    pass
            assert ei.value.errno == 104
            s.close()
    call(main)


def test_half_close(call):
    async def main():
        async with await net.tcp_listen(("127.0.0.1", 0)) as lst:
            async def server():
                s, _ = await lst.accept()
                async with s:
                    got = b""
                    while (d := await s.recv()):
                        got += d
                    await s.sendall(b"got " + got)       # we can still send after EOF
            t = osvrt.spawn(server)
            async with await net.open_tcp_stream(*lst.address) as c:
                await c.sendall(b"request")
                await c.send_eof()
                reply = b""
                while (d := await c.recv()):
                    reply += d
                assert reply == b"got request"
                assert await c.recv() == b""
            await t.join(timeout=5)
    call(main)


def test_slow_reader_backpressure(call):
    async def main():
        async with await net.tcp_listen(("127.0.0.1", 0)) as lst:
            c = await net.open_tcp_stream(*lst.address)
            s, _ = await lst.accept()
            for sock in (c.socket, s.socket):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            total = 8 << 20
            payload = bytes(range(256)) * (total // 256)
            w = osvrt.spawn(c.sendall, payload)
            await osvrt.sleep(0.1)
            assert w.state == "waiting"                 # parked: the reader reads nothing
            got = bytearray()
            while len(got) < total:
                got += await s.recv()
                if len(got) < 1 << 20:
                    await osvrt.sleep(0.0005)          # a slow reader at first
            await w.join(timeout=10)
            assert got == payload
            c.close()
            s.close()
    call(main)


def test_connect_refused(call):
    async def main():
        lst = await net.tcp_listen(("127.0.0.1", 0))
        port = lst.address[1]
        lst.close()                                     # nobody listens there now
        n0 = fd_count()
        with pytest.raises(ConnectionRefusedError) as ei:
            await net.open_tcp_stream("127.0.0.1", port)
        assert ei.value.errno == 111 and isinstance(ei.value, OSError)
        assert fd_count() <= n0
    call(main)



def test_a_port_out_of_range_is_refused_not_wrapped(call):
    """The C library's getaddrinfo reads port 70000 as 4464 (modulo 65536):
    listen, connect and serve refuse it, naming it, instead of binding there."""
    class Echo:
        def __init__(self, conn):
            pass

        def data_received(self, data):
            return data

    async def main():
        for port in (65536, 70000, -1, "70000"):
            with pytest.raises(ValueError, match=f"port must be in 0..65535, not {int(port)}"):
                await net.tcp_listen(("127.0.0.1", port))
            with pytest.raises(ValueError, match=f"not {int(port)}"):
                await net.open_tcp_stream("127.0.0.1", port)
        with pytest.raises(ValueError, match="not 70000"):
            await net.serve_tcp_protocol(Echo, ("127.0.0.1", 70000))
        with pytest.raises(TypeError, match="port must be an int, not 7.5"):
            await net.tcp_listen(("127.0.0.1", 7.5))
        for address in ("127.0.0.1:7000", ("127.0.0.1", 7000, 0)):
            with pytest.raises(TypeError, match="a \\(host, port\\) pair, not"):
                await net.tcp_listen(address)
        async with await net.tcp_listen(("127.0.0.1", "0")) as lst:   # a number in a str
            assert lst.address[1] > 0
    call(main)

def _fill_backlog(port, keep):
    """Blocking connects to a backlog-0 listener that never accepts, until one
    does not complete: the accept queue is full and further SYNs are dropped."""
    for _ in range(16):
        s = socket.socket()
        s.settimeout(0.3)
        try:
            s.connect(("127.0.0.1", port))
        except (TimeoutError, socket.timeout):
            s.close()
            return True
        keep.append(s)
    return False


def test_connect_timeout_on_a_full_backlog(call):
    """Connect timeout on loopback only: a listener whose accept queue is full
    drops SYNs, so connect() stays in progress until the timeout."""
    async def main():
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(0)
        port = lst.getsockname()[1]
        keep = []
        try:
            full = await osvrt.to_thread(_fill_backlog, port, keep)
            if not full:
                return "skip"
            n0 = fd_count()
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                await net.open_tcp_stream("127.0.0.1", port, timeout=0.2)
            assert 0.15 < time.monotonic() - t0 < 3
            assert fd_count() <= n0
        finally:
            for s in keep:
                s.close()
            lst.close()
    if call(main) == "skip":
        pytest.skip("could not fill a loopback accept queue deterministically")


def test_cancel_parked_in_recv_accept_connect_no_leak(call):
    async def main():
        lst = await net.tcp_listen(("127.0.0.1", 0))
        c = await net.open_tcp_stream(*lst.address)
        s, _ = await lst.accept()
        # a listener with a full backlog, for a connect that stays in progress
        full = socket.socket()
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        keep = []
        have_full = await osvrt.to_thread(_fill_backlog, full.getsockname()[1], keep)
        n0 = fd_count()
        ths = [osvrt.spawn(s.recv), osvrt.spawn(lst.accept)]
        if have_full:
            ths.append(osvrt.spawn(net.open_tcp_stream, "127.0.0.1", full.getsockname()[1]))
        await osvrt.sleep(0.05)
        assert all(t.state == "waiting" for t in ths)
        for t in ths:
            t.cancel()
        for t in ths:
            with pytest.raises(osvrt.Cancelled):
                await t.join(timeout=5)
        assert fd_count() <= n0
        # no lost readiness: the same objects still work
        await c.sendall(b"after")
        assert await s.recv() == b"after"
        c2 = await net.open_tcp_stream(*lst.address)
        s2, _ = await lst.accept()
        await s2.sendall(b"ok")
        assert await c2.recv() == b"ok"
        for o in (c, s, c2, s2, lst):
            o.close()
        for k in keep:
            k.close()
        full.close()
    call(main)


def test_close_while_waited_on(make_rt):
    rt = make_rt(cpus=2)

    async def main():
        lst = await net.tcp_listen(("127.0.0.1", 0))
        c = await net.open_tcp_stream(*lst.address)
        s, _ = await lst.accept()
        other = [x for x in rt.cpus if x != osvrt.current().cpu][0]
        r1 = osvrt.spawn(s.recv, cpu=other)          # waits on another CPU
        r2 = osvrt.spawn(lst.accept)
        await osvrt.sleep(0.05)
        s.close()
        lst.close()
        for t in (r1, r2):
            with pytest.raises(osvrt.ClosedResourceError):
                await t.join(timeout=5)
        with pytest.raises(osvrt.ClosedResourceError):
            await s.recv()
        with pytest.raises(osvrt.ClosedResourceError):
            await s.sendall(b"x")
        s.close()                                   # twice: a no-op
        c.close()
    rt.submit(main, cpu=rt.cpus[0]).result(timeout=15)


def test_unix_streams(call, tmp_path):
    path = str(tmp_path / "sock")

    async def main():
        async with await net.unix_listen(path) as lst:
            assert lst.address == path
            srv = osvrt.spawn(echo_server, lst)
            async with await net.open_unix_stream(path) as s:
                await s.sendall(b"unix")
                assert await s.recv() == b"unix"
            srv.cancel()
    call(main)


def test_udp_socket(call):
    async def main():
        a = await net.udp_socket(("127.0.0.1", 0))
        b = await net.udp_socket(("127.0.0.1", 0))
        async with a, b:
            r = osvrt.spawn(b.recvfrom)
            await osvrt.sleep(0.02)
            assert r.state == "waiting"
            await a.sendto(b"dgram", b.address)
            data, addr = await r.join(timeout=5)
            assert data == b"dgram" and addr == a.address
        try:
            c = await net.udp_socket(("::1", 0))
        except OSError:
            return
        async with c:
            await c.sendto(b"six", c.address)
            assert (await c.recvfrom())[0] == b"six"
    call(main)


def test_getaddrinfo(call):
    async def main():
        infos = await net.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
        assert infos and all(i[1] == socket.SOCK_STREAM for i in infos)
        assert (await net.getaddrinfo("127.0.0.1", 5))[0][4] == ("127.0.0.1", 5)
        with pytest.raises(socket.gaierror):
            await net.getaddrinfo("no-such-host.invalid", 80)
    call(main)
