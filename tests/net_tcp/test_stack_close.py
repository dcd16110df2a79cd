"""How a user-space stack closes: `aclose()` resets every connection it
still has, those the application released and that are still finishing
their close included, and more of them than the engine's control ring holds
at once; `aclose(linger=...)` first closes gracefully, as the kernel closes
the sockets of a process that exits, and resets only what is left when the
linger runs out (naming it).  Kernel peers in the peer namespace see each
outcome."""
import functools
import hashlib
import logging
import socket
import time

import pytest

import osvrt
import osvrt.net

from tcp_support import T, PeerThread, pattern, read_to_eof, run_stack

PORT = 7000
RING = 64          # the engine's control ring (tcp.c, CTL_RING): RSTs it holds at once


def _connect(topo, n, rcvbuf=None):
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(T)
        if rcvbuf is not None:                # before connect: it sets the window scale
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.connect((topo.stack_ip, PORT))
        socks.append(s)
    return socks


def _read_each_to_eof(socks):
    """One after the other: the later ones wait with full windows meanwhile."""
    out = []
    for s in socks:
        out.append(read_to_eof(s))
        s.close()
    return out


def test_linger_delivers_what_was_sent_then_closes(topo):
    """Two connections with megabytes still queued when aclose(linger=...)
    is called: one the application already closed, one it left open.  The
    peer reads both whole, each ending in a FIN, not a reset."""
    closed_payload, open_payload = pattern(3 << 20, 1), pattern(3 << 20, 2)

    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        listener = await stack.tcp_listen(PORT)
        socks = await osvrt.to_thread(topo.in_peer, _connect, topo, 2)
        reader = PeerThread(_read_each_to_eof, socks)
        reader.start()
        a, _ = await listener.accept()
        b, _ = await listener.accept()
        await a.sendall(closed_payload)
        a.close()
        await b.sendall(open_payload)       # returns once queued, not delivered
        queued = stack._unfinished()
        await stack.aclose(linger=T)
        with pytest.raises(osvrt.ClosedResourceError):
            await b.recv()
        return reader, queued, stack.stats()

    reader, queued, stats = run_stack(topo, main)
    assert queued                             # the linger had something to wait for
    assert reader.outcome() == [(len(p), hashlib.sha256(p).hexdigest())
                                for p in (closed_payload, open_payload)]
    assert stats["tcp"]["rsts_out"] == 0


def test_linger_runs_out_resets_and_names_what_it_cut(topo, caplog):
    """A peer that reads nothing (its window full): the linger runs out, a
    warning names the connection left and its state, and the peer is reset.
    Meanwhile the stack refuses new work, and a second aclose() waits for
    the first."""
    payload = pattern(1 << 20, 3)          # more than the send buffer (256 KiB) and the window

    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        listener = await stack.tcp_listen(PORT)
        [sock] = await osvrt.to_thread(topo.in_peer, _connect, topo, 1, 4096)
        stream, _ = await listener.accept()
        sender = osvrt.spawn(stream.sendall, payload)    # parks: the window is full
        await osvrt.sleep(0.1)
        first = osvrt.spawn(functools.partial(stack.aclose, linger=0.5))
        await osvrt.sleep(0.05)                          # lingering now
        with pytest.raises(osvrt.ClosedResourceError, match="is closing"):
            await stack.tcp_listen(PORT + 1)
        with pytest.raises(osvrt.ClosedResourceError):
            await sender.join()                          # its stream was closed under it
        await stack.aclose()                             # waits for the first
        assert stack.closed
        await first.join()
        return sock, stack.stats()

    with caplog.at_level(logging.WARNING, logger="osvrt"):
        sock, stats = run_stack(topo, main)
    assert any("linger of 0.5 s ran out with 1 in FIN_WAIT_1" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert stats["tcp"]["rsts_out"] == 1
    with pytest.raises(ConnectionResetError):
        read_to_eof(sock)                                # what arrived, then the reset
    sock.close()


def test_aclose_resets_released_connections_still_closing(topo):
    """The application closed its stream and the peer took our FIN, but has
    not closed its side (we are in FIN_WAIT_2, an orphan the engine keeps):
    aclose() resets it too, so the peer's next send fails instead of going
    to a stack that no longer exists."""
    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        listener = await stack.tcp_listen(PORT)
        [sock] = await osvrt.to_thread(topo.in_peer, _connect, topo, 1)
        stream, _ = await listener.accept()
        stream.close()
        assert await osvrt.to_thread(sock.recv, 10) == b""        # our FIN arrived
        while stack.stats()["connections"].get("FIN_WAIT_2", 0) != 1:
            await osvrt.sleep(0.01)                                # and was acknowledged
        await stack.aclose()
        return sock, stack.stats()

    sock, stats = run_stack(topo, main)
    assert stats["tcp"]["rsts_out"] == 1
    deadline = time.monotonic() + T
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        while time.monotonic() < deadline:   # the RST may still be on its way in
            sock.send(b"x")
            time.sleep(0.01)
    sock.close()


def test_aclose_resets_more_connections_than_the_control_ring_holds(topo):
    """RING + 36 open connections: every peer is reset, none of the RSTs is
    lost to the ring's overflow."""
    n = RING + 36

    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        listener = await stack.tcp_listen(PORT, backlog=n)
        socks = await osvrt.to_thread(topo.in_peer, _connect, topo, n)
        streams = [(await listener.accept())[0] for _ in range(n)]
        await stack.aclose()
        return socks, streams, stack.stats()

    socks, _streams, stats = run_stack(topo, main)
    assert stats["tcp"]["rsts_out"] == n
    assert stats["tcp"]["ctl_overflow"] == 0
    for s in socks:
        with pytest.raises(ConnectionResetError):
            s.recv(10)
        s.close()


def test_linger_is_checked(topo):
    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        try:
            for bad, kind in ((-1, ValueError), (float("nan"), ValueError), ("1", TypeError)):
                with pytest.raises(kind, match="linger"):
                    await stack.aclose(linger=bad)
                assert not stack.closed
        finally:
            await stack.aclose()
        return stack.closed

    assert run_stack(topo, main)
