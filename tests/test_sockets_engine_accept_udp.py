"""accept and kernel UDP recvfrom/recvfrom_into/sendto in the engine
(osvrt/_engine/sock.c): the syscall in C with the GIL held, EAGAIN parks on
the worker's epoll.  Their error paths: EBADF after close, a close while
parked, fd reuse, bad addresses; and they make no socket-module call."""
import os
import socket
import sys
import tempfile

import pytest

import osvrt
from osvrt import net


def _socket_module_calls(fn):
    """Run fn (a coroutine function) with a profiler that records calls into
    the socket module's socket methods (what the Python path made)."""
    async def main():
        seen = []

        def prof(frame, event, arg):
            if event == "c_call" and getattr(arg, "__self__", None) is not None \
                    and isinstance(arg.__self__, socket.socket):
                seen.append(arg.__name__)
            elif event == "call" and frame.f_code.co_filename == socket.__file__:
                seen.append(frame.f_code.co_name)
        sys.setprofile(prof)
        try:
            await fn()
        finally:
            sys.setprofile(None)
        return seen
    return main


def test_accept_recvfrom_sendto_make_no_socket_module_call(call):
    async def body():
        lst = await net.tcp_listen(("127.0.0.1", 0))
        peer = socket.create_connection(lst.address)
        s, _ = await lst.accept()
        a = await net.udp_socket(("127.0.0.1", 0))
        b = await net.udp_socket(("127.0.0.1", 0))
        await a.sendto(b"d", b.address)
        await b.recvfrom()
        await a.sendto(b"e", b.address)
        await b.recvfrom_into(bytearray(4))
        for x in (s, lst, a, b):
            x.close()
        peer.close()
    seen = call(_socket_module_calls(body))
    assert not {"accept", "_accept", "recvfrom", "recvfrom_into", "sendto"} & set(seen), seen


def test_accept_parks_then_returns_a_nonblocking_nodelay_stream(call):
    async def main():
        lst = await net.tcp_listen(("127.0.0.1", 0))
        t = osvrt.spawn(lst.accept)
        await osvrt.sleep(0.01)
        assert t.state == "waiting"                  # parked: nothing queued
        peer = socket.create_connection(lst.address)
        s, addr = await t.join(timeout=5)
        assert addr == peer.getsockname()
        assert s.socket.getblocking() is False
        assert s.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert not os.get_inheritable(s.fileno())   # close-on-exec
        peer.sendall(b"hi")
        got = await s.recv()
        s.close()
        lst.close()
        peer.close()
        return got
    assert call(main) == b"hi"


def test_accept_on_a_unix_listener_gives_the_unnamed_peer_address(call):
    async def main():
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "s")
            lst = await net.unix_listen(path)
            c = await net.open_unix_stream(path)
            s, addr = await lst.accept()
            await c.sendall(b"u")
            got = await s.recv()
            for x in (s, c, lst):
                x.close()
            return addr, got
    assert call(main) == ("", b"u")


def test_accept_after_close_and_a_close_while_parked_raise_closed_resource_error(call):
    async def main():
        lst = await net.tcp_listen(("127.0.0.1", 0))
        t = osvrt.spawn(lst.accept)
        await osvrt.sleep(0.01)
        lst.close()
        with pytest.raises(osvrt.ClosedResourceError):
            await t.join(timeout=5)
        with pytest.raises(osvrt.ClosedResourceError) as ei:
            await lst.accept()
        return ei.value.errno
    assert call(main) == 9


def test_udp_recvfrom_parks_then_gets_the_datagram_and_its_sender(call):
    async def main():
        a = await net.udp_socket(("127.0.0.1", 0))
        b = await net.udp_socket(("127.0.0.1", 0))
        t = osvrt.spawn(b.recvfrom)
        await osvrt.sleep(0.01)
        assert t.state == "waiting"
        assert await a.sendto(b"dgram", b.address) == 5
        got = await t.join(timeout=5)
        buf = bytearray(8)
        await a.sendto(b"into", b.address)
        n, frm = await b.recvfrom_into(buf)
        short = await a.sendto(b"0123456789", b.address)
        part, _ = await b.recvfrom(4)                # a datagram cut to max_bytes
        a.close()
        b.close()
        return got, (n, bytes(buf[:n]), frm), short, part, a.address if False else None
    got, into, short, part, _ = call(main)
    assert got[0] == b"dgram" and got[1][0] == "127.0.0.1"
    assert into[0] == 4 and into[1] == b"into" and into[2][0] == "127.0.0.1"
    assert short == 10 and part == b"0123"


def test_udp_sendto_a_name_or_ipv6(call):
    async def main():
        b = await net.udp_socket(("127.0.0.1", 0))
        a = await net.udp_socket(("127.0.0.1", 0))
        await a.sendto(b"named", ("localhost", b.address[1]))   # resolved by the socket module
        got = (await b.recvfrom())[0]
        a.close()
        b.close()
        v6 = None
        if socket.has_ipv6:
            try:
                c = await net.udp_socket(("::1", 0))
            except OSError:
                c = None                              # no IPv6 on this host
            if c is not None:
                d = await net.udp_socket(("::1", 0))
                await d.sendto(b"six", c.address)
                data, frm = await c.recvfrom()
                v6 = (data, len(frm))
                c.close()
                d.close()
        return got, v6
    got, v6 = call(main)
    assert got == b"named"
    assert v6 in (None, (b"six", 4))


def test_udp_calls_after_close_and_a_close_while_parked(call):
    async def main():
        a = await net.udp_socket(("127.0.0.1", 0))
        t = osvrt.spawn(a.recvfrom)
        await osvrt.sleep(0.01)
        a.close()
        with pytest.raises(osvrt.ClosedResourceError):
            await t.join(timeout=5)
        errnos = []
        for op in (a.recvfrom(), a.recvfrom_into(bytearray(1)), a.sendto(b"x", ("127.0.0.1", 9))):
            with pytest.raises(osvrt.ClosedResourceError) as ei:
                await op
            errnos.append(ei.value.errno)
        return errnos
    assert call(main) == [9, 9, 9]


def test_a_reused_udp_fd_is_waited_on_afresh(call):
    async def main():
        a = await net.udp_socket(("127.0.0.1", 0))
        fd = a.fileno()
        t = osvrt.spawn(a.recvfrom)
        await osvrt.sleep(0.01)
        a.close()                                     # registered, then closed while parked
        with pytest.raises(osvrt.ClosedResourceError):
            await t.join(timeout=5)
        b = await net.udp_socket(("127.0.0.1", 0))    # takes the same fd number
        c = await net.udp_socket(("127.0.0.1", 0))
        same = b.fileno() == fd
        r = osvrt.spawn(b.recvfrom)
        await osvrt.sleep(0.01)
        await c.sendto(b"new", b.address)
        got = await r.join(timeout=5)
        b.close()
        c.close()
        return same, got[0]
    same, got = call(main)
    assert got == b"new"
    assert same                                       # the case this test is about


def test_bad_addresses_are_named(call):
    async def main():
        a = await net.udp_socket(("127.0.0.1", 0))
        try:
            with pytest.raises(OverflowError, match="70000"):
                await a.sendto(b"x", ("127.0.0.1", 70000))
            with pytest.raises(TypeError):
                await a.sendto(b"x", ("127.0.0.1",))      # the socket module's own error
            with pytest.raises(TypeError):
                await a.sendto(12, ("127.0.0.1", 9))
        finally:
            a.close()
    call(main)
