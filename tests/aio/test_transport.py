"""The osvrt loop's socket transport (osvrt/aio/transport.py over the C data
path of osvrt/_engine/aiotx.c): asyncio's transport semantics, path by path.

Peers are plain sockets driven from the test's own coroutines (sock_* on the
loop), so a peer that does not read is simply one that is not read yet.
Every wait is bounded (asyncio.wait_for, BOUND); no test times anything."""
import asyncio
import gc
import socket
import weakref

import pytest

import osvrt
from osvrt.aio.transport import SocketTransport

BOUND = 20.0


def run(coro_fn, *args, debug=False):
    with asyncio.Runner(debug=debug, loop_factory=osvrt.new_event_loop) as r:
        return r.run(asyncio.wait_for(coro_fn(*args), BOUND))


class Recorder(asyncio.Protocol):
    """Records every callback; connection_lost must come exactly once."""

    def __init__(self, keep_open=False):
        self.keep_open = keep_open
        self.transport = None
        self.data = bytearray()
        self.events = []
        self.lost = asyncio.get_running_loop().create_future()
        self.got = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        assert isinstance(data, bytes)
        self.data += data
        self.got.set()

    def eof_received(self):
        self.events.append("eof")
        return self.keep_open

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")

    def connection_lost(self, exc):
        self.events.append("lost")
        assert not self.lost.done(), "connection_lost called twice"
        self.lost.set_result(exc)

    async def wait_for_bytes(self, n):
        while len(self.data) < n:
            self.got.clear()
            await self.got.wait()


async def connected_pair(protocol_factory=None):
    """(transport, protocol, peer socket): a transport made by
    connect_accepted_socket on one end of a TCP connection over loopback."""
    loop = asyncio.get_running_loop()
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    peer = socket.create_connection(lsock.getsockname())
    conn, _ = lsock.accept()
    lsock.close()
    peer.setblocking(False)
    transport, proto = await loop.connect_accepted_socket(protocol_factory or Recorder, conn)
    return transport, proto, peer


async def settle(turns=20):
    for _ in range(turns):
        await asyncio.sleep(0)


def test_transports_are_the_c_transport_with_asyncios_extra_info():
    async def main():
        transport, proto, peer = await connected_pair()
        with peer:
            info = (type(transport), transport.get_extra_info("peername"),
                    transport.get_extra_info("sockname"),
                    transport.get_extra_info("socket").fileno(), transport.is_closing(),
                    transport.is_reading(), transport.get_protocol() is proto)
            transport.close()
            assert transport.is_closing()
            assert await proto.lost is None
            return info, peer.getsockname(), peer.getpeername(), proto.events

    (kind, peername, sockname, fd, closing, reading, same), peer_name, peer_peer, events = \
        run(main)
    assert kind is SocketTransport
    assert peername == peer_name and sockname == peer_peer
    assert fd >= 0 and not closing and reading and same
    assert events == ["made", "lost"]


def test_echo_through_create_server_and_create_connection_in_both_modes():
    class Echo(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t

        def data_received(self, d):
            self.t.write(d)

    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(Echo, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        transport, proto = await loop.create_connection(Recorder, "127.0.0.1", port)
        payload = bytes(range(256)) * 4096          # 1 MiB: several reads and writes
        transport.write(payload)
        await proto.wait_for_bytes(len(payload))
        transport.close()
        await proto.lost
        srv.close()
        await srv.wait_closed()
        return bytes(proto.data) == payload

    assert run(main)
    # asyncio's own turn (debug mode) finds the transport's fd in its poll
    # and hands it to the same C path (LoopCore.tx_event)
    assert run(main, debug=True)


def test_eof_closes_unless_eof_received_keeps_it_open():
    async def main(keep_open):
        loop = asyncio.get_running_loop()
        transport, proto, peer = await connected_pair(lambda: Recorder(keep_open))
        with peer:
            await loop.sock_sendall(peer, b"last words")
            peer.shutdown(socket.SHUT_WR)
            await proto.wait_for_bytes(10)
            while "eof" not in proto.events:
                await asyncio.sleep(0.001)
            if keep_open:
                # half-closed: the transport still writes, then closes
                assert not proto.lost.done()
                transport.write(b"reply")
                assert await loop.sock_recv(peer, 100) == b"reply"
                transport.close()
            exc = await proto.lost
            assert await loop.sock_recv(peer, 100) == b""
            return exc, proto.events

    assert run(main, False) == (None, ["made", "eof", "lost"])
    assert run(main, True) == (None, ["made", "eof", "lost"])


def test_reset_by_peer_is_connection_lost_with_the_error_once():
    async def main():
        transport, proto, peer = await connected_pair()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        peer.close()                                  # linger 0: an RST
        exc = await proto.lost
        await settle()
        return exc, proto.events, transport.is_closing()

    exc, events, closing = run(main)
    assert isinstance(exc, ConnectionResetError)
    assert events == ["made", "lost"] and closing


def test_pause_reading_stops_data_received_until_resume():
    async def main():
        loop = asyncio.get_running_loop()
        transport, proto, peer = await connected_pair()
        with peer:
            await settle()
            transport.pause_reading()
            assert not transport.is_reading() and transport.core.registered == 0
            await loop.sock_sendall(peer, b"held")
            await asyncio.sleep(0.05)
            await settle()
            held = bytes(proto.data)
            transport.resume_reading()
            assert transport.is_reading()
            await proto.wait_for_bytes(4)
            transport.close()
            await proto.lost
            return held, bytes(proto.data)

    assert run(main) == (b"", b"held")


def test_write_buffers_when_the_peer_does_not_read_and_flow_control_follows():
    async def main():
        loop = asyncio.get_running_loop()
        transport, proto, peer = await connected_pair()
        with peer:
            transport.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
            assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
            chunk = bytes(range(256)) * 256               # 64 KiB
            total = 0
            while transport.get_write_buffer_size() == 0:   # until the kernel is full
                transport.write(chunk)
                total += len(chunk)
                assert total < 256 * 1024 * 1024, "the kernel never pushed back"
            for _ in range(4):                             # more: above the high mark
                transport.write(chunk)
                total += len(chunk)
            assert proto.events == ["made", "pause"]
            assert transport.core.registered & 4           # EPOLLOUT while output waits
            got = bytearray()
            while len(got) < total:
                got += await loop.sock_recv(peer, 1 << 20)
            await settle()
            assert got == chunk * (total // len(chunk))
            assert transport.get_write_buffer_size() == 0
            assert proto.events == ["made", "pause", "resume"]
            assert not transport.core.registered & 4
            transport.close()
            await proto.lost

    run(main)


async def fill_kernel(transport):
    chunk = b"x" * 65536
    total = 0
    while transport.get_write_buffer_size() == 0:
        transport.write(chunk)
        total += len(chunk)
    return total


def test_close_with_output_pending_sends_it_then_connection_lost_once():
    async def main():
        loop = asyncio.get_running_loop()
        transport, proto, peer = await connected_pair()
        with peer:
            total = await fill_kernel(transport)
            transport.close()
            transport.close()                              # twice: a no-op
            await settle()
            assert not proto.lost.done()                   # output still pending
            got = 0
            while True:
                b = await loop.sock_recv(peer, 1 << 20)
                if not b:
                    break
                got += len(b)
            assert await proto.lost is None
            await settle()
            return got == total, proto.events

    assert run(main) == (True, ["made", "lost"])


def test_abort_drops_pending_output_and_write_eof_waits_for_it():
    async def main():
        loop = asyncio.get_running_loop()
        transport, proto, peer = await connected_pair()
        with peer:
            await fill_kernel(transport)
            transport.abort()
            assert await proto.lost is None
            assert transport.get_write_buffer_size() == 0
        transport2, proto2, peer2 = await connected_pair()
        with peer2:
            total = await fill_kernel(transport2)
            transport2.write_eof()
            with pytest.raises(RuntimeError, match="write_eof"):
                transport2.write(b"more")
            got = 0
            while True:                                    # EOF once all is sent
                b = await loop.sock_recv(peer2, 1 << 20)
                if not b:
                    break
                got += len(b)
            assert got == total and not proto2.lost.done()
            transport2.close()
            assert await proto2.lost is None

    run(main)


def test_bad_writes_and_failing_protocols_are_reported_as_asyncio_does():
    class Bad(Recorder):
        def data_received(self, data):
            raise ValueError("bad protocol")

    async def main():
        loop = asyncio.get_running_loop()
        reports = []
        loop.set_exception_handler(lambda lp, ctx: reports.append(ctx))
        transport, proto, peer = await connected_pair(Bad)
        with peer:
            with pytest.raises(TypeError, match="bytes-like"):
                transport.write("text")
            transport.write(b"")                          # nothing, no error
            await loop.sock_sendall(peer, b"boom")
            exc = await proto.lost
        return exc, reports

    exc, reports = run(main)
    assert isinstance(exc, ValueError)
    assert [r["message"] for r in reports] == [
        "Fatal error: protocol.data_received() call failed."]
    assert reports[0]["exception"] is exc


def test_a_callback_that_raises_out_of_the_c_data_path_is_reported_and_the_loop_goes_on():
    """A protocol callback the C data path runs, not guarded by the transport
    (here connection_lost, run when a close with output pending has drained
    it), raises: asyncio's Handle._run would report it to the exception
    handler and go on; it must not end run_until_complete (it did)."""
    class Failing(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.write(b"x" * (8 << 20))      # more than the kernel buffers take
            transport.close()                      # connection_lost once drained, in C

        def connection_lost(self, exc):
            super().connection_lost(exc)
            raise ValueError("connection_lost failed")

    async def main():
        loop = asyncio.get_running_loop()
        reports = []
        loop.set_exception_handler(lambda lp, ctx: reports.append(ctx))
        server = await loop.create_server(Failing, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        n = 0
        while data := await reader.read(1 << 20):
            n += len(data)
        for _ in range(200):                       # the report comes in a later turn
            if reports:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()
        return n, reports

    n, reports = run(main)
    assert n == 8 << 20
    assert len(reports) == 1, reports
    assert isinstance(reports[0]["exception"], ValueError)
    assert isinstance(reports[0]["transport"], SocketTransport)


def test_a_closed_connections_protocol_is_freed_without_the_cycle_collector():
    """asyncio's _call_connection_lost drops the protocol, so refcounting
    frees it; the C core's bound methods of it must not keep it (they did,
    until the next GC pass)."""
    refs = []

    class Closing(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            refs.append(weakref.ref(self))

        def data_received(self, data):
            self.transport.close()

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Closing, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        writer.write(b"hi")
        await reader.read()
        writer.close()
        await settle()
        server.close()
        await server.wait_closed()
        return refs[0]() is None

    gc.collect()
    gc.disable()
    try:
        freed = run(main)
    finally:
        gc.enable()
    assert freed


def test_buffered_protocol_reads_into_its_own_buffer():
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(1000)
            self.got = bytearray()
            self.lost = asyncio.get_running_loop().create_future()

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, n):
            self.got += self.buf[:n]

        def eof_received(self):
            return False

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    async def main():
        loop = asyncio.get_running_loop()
        transport, proto, peer = await connected_pair(Buffered)
        with peer:
            payload = b"0123456789" * 1000
            await loop.sock_sendall(peer, payload)
            peer.shutdown(socket.SHUT_WR)
            assert await proto.lost is None
            return bytes(proto.got) == payload

    assert run(main)


@pytest.mark.parametrize("factory", [asyncio.new_event_loop, osvrt.new_event_loop])
def test_set_protocol_inside_get_buffer_hands_the_data_on(factory):
    """A BufferedProtocol that hands the transport to another one from
    inside get_buffer (a protocol upgrade): the bytes read into the first
    one's buffer are reported to the second's buffer_updated, as asyncio
    does.  The C data path held the protocol's methods by borrowed pointers
    across these calls, which set_protocol frees (ASan's CI run sees that)."""
    class Second(asyncio.BufferedProtocol):
        def __init__(self, first):
            self.first, self.updates = first, []

        def get_buffer(self, sizehint):
            return bytearray(100)

        def buffer_updated(self, n):
            self.updates.append(bytes(self.first.buf[:n]))
            self.first.done.set_result(None)

        def connection_lost(self, exc):
            pass

    class First(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(100)
            self.done = asyncio.get_running_loop().create_future()

        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, sizehint):
            self.second = Second(self)
            self.transport.set_protocol(self.second)
            return self.buf

        def buffer_updated(self, n):
            raise AssertionError("the first protocol let go of the transport")

        def connection_lost(self, exc):
            pass

    async def main():
        transport, proto, peer = await connected_pair(First)
        with peer:
            peer.send(b"upgrade")
            await proto.done
            transport.close()
            return proto.second.updates

    with asyncio.Runner(loop_factory=factory) as r:
        assert r.run(asyncio.wait_for(main(), BOUND)) == [b"upgrade"]


def test_a_closed_transports_fd_number_can_serve_the_next_connection():
    """asyncio's transport table is weak: a closed transport may stay there
    (here: referenced) while its fd number is reused by sock_connect and the
    next transport; routing the loop's reader calls by that table alone
    raised EEXIST (the epoll had the fd from sock_connect's writer)."""
    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        kept = []
        for _ in range(3):
            transport, proto = await loop.create_connection(Recorder, "127.0.0.1", port)
            kept.append(transport)
            transport.close()
            await proto.lost
        srv.close()
        await srv.wait_closed()
        return len({t.get_extra_info("socket") is None for t in kept})

    assert run(main) == 1


def test_many_connections_leave_no_transport_fd_or_registration_behind():
    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        refs = []
        for _ in range(4):
            batch = [await loop.create_connection(Recorder, "127.0.0.1", port)
                     for _ in range(50)]
            for transport, proto in batch:
                transport.write(b"hello")
                refs.append(weakref.ref(transport))
                transport.close()
            for transport, proto in batch:
                await proto.lost
            del batch, transport, proto
        srv.close()
        await srv.wait_closed()
        await settle()
        gc.collect()
        return sum(r() is not None for r in refs), len(loop._transports)

    import os
    before = len(os.listdir("/proc/self/fd"))
    alive, in_table = run(main)
    gc.collect()
    assert alive == 0 and in_table == 0
    assert len(os.listdir("/proc/self/fd")) <= before


class Storm(asyncio.Protocol):
    """Writes from one staging bytearray, which it refills between writes
    and empties in pause_writing (while paused it holds nothing)."""

    def __init__(self):
        self.staging = bytearray()
        self.cycles = 0
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport):
        self.transport = transport

    def pause_writing(self):
        self.cycles += 1
        self.writable.clear()
        self.staging.clear()        # a resize: BufferError while write() exported it

    def resume_writing(self):
        self.writable.set()

    def connection_lost(self, exc):
        pass


def test_a_write_storm_against_a_slow_reader_keeps_every_byte_across_pauses():
    """write() used to call pause_writing while it still held the caller's
    buffer exported; the bytes must arrive as written, whatever the writer
    does to its bytearray afterwards."""
    import hashlib
    import random

    async def main():
        loop = asyncio.get_running_loop()
        failures = []
        loop.set_exception_handler(lambda loop, ctx: failures.append(ctx))
        transport, proto, peer = await connected_pair(Storm)
        transport.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        rng = random.Random(20)
        sent, total = hashlib.sha256(), 24 * 1024 * 1024

        async def write_all():
            left = total
            while left:
                await proto.writable.wait()
                proto.staging[:] = rng.randbytes(min(left, rng.randrange(1, 256 * 1024)))
                sent.update(proto.staging)
                left -= len(proto.staging)
                transport.write(proto.staging)

        writer = asyncio.ensure_future(write_all())
        got, n = hashlib.sha256(), 0
        with peer:
            while n < total:
                data = await loop.sock_recv(peer, 48 * 1024)      # a slow reader
                got.update(data)
                n += len(data)
                await asyncio.sleep(0)
            await writer
            transport.close()
        return failures, proto.cycles, n, sent.hexdigest(), got.hexdigest()

    failures, cycles, n, sent, got = run(main)
    assert failures == []
    assert cycles >= 2
    assert n == 24 * 1024 * 1024 and got == sent


def test_the_write_buffer_gives_back_a_bursts_memory_as_it_drains():
    """The output buffer grew to its peak and kept it for the transport's
    life; it now shrinks while the burst drains and is freed once empty."""
    async def main():
        loop = asyncio.get_running_loop()
        transport, proto, peer = await connected_pair()
        burst = 64 * 1024 * 1024
        with peer:
            transport.write(bytes(burst))
            peak = transport.core.capacity
            samples = []                 # (pending, capacity) while it drains
            n = 0
            while n < burst:
                n += len(await loop.sock_recv(peer, 1 << 20))
                await settle(2)
                samples.append((transport.get_write_buffer_size(), transport.core.capacity))
            await settle()
            after = transport.get_write_buffer_size(), transport.core.capacity
            transport.close()
            await proto.lost
        return peak, samples, after

    peak, samples, after = run(main)
    assert peak >= 32 * 1024 * 1024             # the kernel took at most part of it
    assert after == (0, 0)
    assert any(0 < pending and cap <= peak // 4 for pending, cap in samples), samples
    assert all(cap >= pending for pending, cap in samples)


def test_resume_reading_while_sendfile_runs_reads_after_it(tmp_path):
    # sendfile registers the fd in the selector itself: resume_reading() then
    # added it to the epoll a second time (FileExistsError), left _paused
    # False, and the connection never read again.
    import os
    path = tmp_path / "payload"
    path.write_bytes(os.urandom(8_000_000))

    class Keep(asyncio.Protocol):
        def __init__(self):
            self.data = bytearray()

        def connection_made(self, t):
            self.t = t

        def data_received(self, d):
            self.data += d

    async def main():
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        a, b = socket.socketpair()
        b.setblocking(False)
        ta, pa = await loop.connect_accepted_socket(Keep, a)
        with open(path, "rb") as f:
            sf = asyncio.ensure_future(loop.sendfile(ta, f))
            await asyncio.sleep(0.01)          # sendfile under way, the buffer full
            ta.resume_reading()
            ta.pause_reading()
            ta.resume_reading()
            b.send(b"ping")
            got = 0
            while not sf.done():
                try:
                    got += len(b.recv(1 << 20))
                except BlockingIOError:
                    await asyncio.sleep(0.001)
            sent = sf.result()
        for _ in range(200):                   # read once sendfile has ended
            if pa.data:
                break
            await asyncio.sleep(0.01)
        ta.close()
        b.close()
        return sent, bytes(pa.data), errors

    sent, data, errors = run(main)
    assert sent == 8_000_000 and data == b"ping" and errors == []


def test_repr_shows_the_polling_state_of_the_c_registration():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        t, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
        live = repr(t)
        t.pause_reading()
        paused = repr(t)
        t.close()
        b.close()
        return live, paused

    live, paused = run(main)
    assert "read=polling" in live and "write=<idle, bufsize=0>" in live, live
    assert "read=idle" in paused, paused
