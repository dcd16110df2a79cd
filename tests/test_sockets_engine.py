"""The socket calls in the engine (osvrt/_engine/sock.c): recv, recv_into and
sendall made in C with the GIL held, parking on the worker's epoll on EAGAIN.
Every error path keeps its meaning: EOF, reset, EPIPE, EBADF after close, a
cancel or a timeout while parked, bad arguments."""
import gc
import socket

import pytest

import osvrt
from osvrt import _engine
from osvrt.net.sockets import Stream


def streams():
    a, b = socket.socketpair()
    return Stream(a), Stream(b)


def test_recv_parks_then_gets_the_data_and_eof(call):
    async def main():
        a, b = streams()
        got = []

        async def reader():
            while data := await a.recv(3):
                got.append(data)

        t = osvrt.spawn(reader)
        for _ in range(100):
            if t.state == "waiting":
                break
            await osvrt.sleep(0.001)             # park, so t runs
        assert t.state == "waiting"
        await b.sendall(b"hello")
        b.close()
        await t.join(timeout=5)
        a.close()
        return b"".join(got)
    assert call(main) == b"hello"


def test_recv_into_and_its_bounds(call):
    async def main():
        a, b = streams()
        buf = bytearray(8)
        await b.sendall(b"abcdef")
        n = await a.recv_into(buf, 4)
        with pytest.raises(ValueError, match="buffer too small"):
            await a.recv_into(buf, 9)
        with pytest.raises(ValueError, match="negative"):
            await a.recv(-1)
        with pytest.raises(TypeError, match="writable"):
            await a.recv_into(b"immutable")
        m = await a.recv_into(memoryview(buf)[4:])
        a.close()
        b.close()
        return n, m, bytes(buf)
    assert call(main) == (4, 2, b"abcdef\0\0")


def test_sendall_to_a_closed_peer_is_broken_pipe(call):
    async def main():
        a, b = streams()
        b.close()
        with pytest.raises((BrokenPipeError, ConnectionResetError)) as ei:
            for _ in range(100):
                await a.sendall(b"x" * 65536)
        a.close()
        return ei.value.errno
    assert call(main) in (32, 104)


def test_calls_on_a_closed_stream_raise_closed_resource_error(call):
    async def main():
        a, b = streams()
        a.close()
        for op in (a.recv(), a.recv_into(bytearray(1)), a.sendall(b"x")):
            with pytest.raises(osvrt.ClosedResourceError) as ei:
                await op
            assert ei.value.errno == 9
        b.close()
    call(main)


def test_a_timeout_scope_ends_a_parked_recv_and_the_wait_is_gone(call):
    async def main():
        a, b = streams()
        me = osvrt.kernel.current_worker()
        with pytest.raises(TimeoutError):
            with osvrt.timeout(0.01):
                await a.recv()
        assert _engine.io_waiters(me) == 0    # the wait left the table
        await b.sendall(b"z")                   # and the fd can be waited on again
        got = await a.recv()
        a.close()
        b.close()
        return got
    assert call(main) == b"z"


def test_cancel_while_parked_in_sendall_leaves_no_waiter(call):
    async def main():
        a, b = streams()
        a.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        t = osvrt.spawn(a.sendall, b"x" * (1 << 22))
        for _ in range(100):
            if t.state == "waiting":
                break
            await osvrt.sleep(0.001)             # park, so t runs
        assert t.state == "waiting"
        t.cancel()
        with pytest.raises(osvrt.Cancelled):
            await t.join(timeout=5)
        assert _engine.io_waiters(osvrt.kernel.current_worker()) == 0
        a.close()
        b.close()
    call(main)


def test_a_socket_call_outside_a_green_thread_is_a_clear_error():
    a, b = socket.socketpair()
    with a, b:
        op = _engine.sock_recv(a.fileno(), 1)
        with pytest.raises(RuntimeError):
            op.send(None)
        del op
        gc.collect()
