"""Send errors on the user stack's link: a frame the device takes no part in
(EMSGSIZE once the interface's MTU drops below the stack's segments) is a
lost frame, which TCP recovers from by retransmission: the callers of
send/recv see no exception for it, the timer thread that retransmits
survives it, it is counted and logged once, and the data arrive intact
once sending works again.  A link whose fd is no socket any more closes the
stack, and the green threads waiting on it are told why."""
import errno
import hashlib
import logging
import os
import socket

import pytest

import osvrt
import osvrt.net
from osvrt.bench.netns import ip

from tcp_support import T, PeerThread, pattern, run_stack

PORT = 7400
SIZE = 2_000_000
LOW_MTU = 1000          # below the stack's 1514-byte frames: the kernel answers EMSGSIZE


def _read_all(sock, addr):
    """Connect, read to EOF: (bytes, SHA-256)."""
    sock.settimeout(T)
    sock.connect(addr)
    h = hashlib.sha256()
    got = 0
    while True:
        data = sock.recv(1 << 16)
        if not data:
            break
        h.update(data)
        got += len(data)
    sock.close()
    return got, h.hexdigest()


async def _until(cond):
    while not cond():
        await osvrt.sleep(0.01)


def test_send_errors_are_lost_frames_and_tcp_recovers(topo, caplog):
    payload = pattern(SIZE, 7)

    def set_mtu(mtu):
        ip("link", "set", "dev", topo.stack_if, "mtu", str(mtu), ns=topo.stack_ns)

    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        try:
            async with await stack.tcp_listen(PORT) as listener:
                peer = PeerThread(_read_all, topo.peer_socket(socket.AF_INET, socket.SOCK_STREAM),
                                  (topo.stack_ip, PORT))
                peer.start()
                stream, _ = await listener.accept()
                await osvrt.to_thread(set_mtu, LOW_MTU)
                rto_before = stack.stats()["tcp"]["rto_expiries"]
                async with osvrt.TaskGroup() as g:
                    # The sender's own calls send the first segments: they fail
                    # in its call, which must not raise for them.
                    sender = g.spawn(stream.sendall, payload)
                    await _until(lambda: stack.stats()["link"].get("tx_errors", 0) > 0)
                    # Only the timer thread sends now (nothing is acknowledged):
                    # a second RTO means it survived the failed retransmission
                    # of the first.
                    await _until(lambda: stack.stats()["tcp"]["rto_expiries"] >= rto_before + 2)
                    during = stack.stats()
                    await osvrt.to_thread(set_mtu, 1500)
                    await sender.join()
                await stream.aclose()
                got, sha = await osvrt.to_thread(peer.outcome)
                return got, sha, during, stack.stats()
        finally:
            await stack.aclose()

    with caplog.at_level(logging.WARNING, logger="osvrt"):
        got, sha, during, after = run_stack(topo, main)
    assert (got, sha) == (SIZE, hashlib.sha256(payload).hexdigest())
    assert during["running"] and after["running"]
    assert during["link"]["last_tx_errno"] == errno.EMSGSIZE
    assert after["link"]["tx_errors"] >= during["link"]["tx_errors"] >= 2
    assert after["retransmissions"] > 0
    logged = [r for r in caplog.records if "EMSGSIZE" in r.getMessage()
              or f"[Errno {errno.EMSGSIZE}]" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in caplog.records]


def _packet_socket_fds():
    """The fds of this process that are AF_PACKET sockets."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            s = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            if s.family == socket.AF_PACKET:
                found.append(fd)
        finally:
            s.detach()
    return found


@pytest.mark.parametrize("waiter", ["recv", "accept"])
def test_a_link_fd_that_is_no_socket_closes_the_stack_and_names_why(topo, waiter):
    """The link's fd number is made to name /dev/null (dup2): the next send
    fails with ENOTSOCK; the stack closes, its parked green threads get
    ClosedResourceError naming the failure, and the fd number (not the
    stack's any more) is left open."""
    async def main():
        before = set(_packet_socket_fds())
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        (fd,) = set(_packet_socket_fds()) - before
        try:
            async with await stack.tcp_listen(PORT) as listener:
                peer_sock = topo.peer_socket(socket.AF_INET, socket.SOCK_STREAM)
                peer_sock.settimeout(T)
                await osvrt.to_thread(peer_sock.connect, (topo.stack_ip, PORT))
                stream, _ = await listener.accept()
                outcome = {}

                async def wait_on_it():
                    try:
                        if waiter == "recv":
                            await stream.recv()
                        else:
                            await listener.accept()
                    except osvrt.ClosedResourceError as e:
                        outcome["error"] = e

                async with osvrt.TaskGroup() as g:
                    g.spawn(wait_on_it)
                    await osvrt.sleep(0.05)
                    null = os.open(os.devnull, os.O_RDONLY)
                    try:
                        os.dup2(null, fd)
                    finally:
                        os.close(null)
                    await stream.sendall(b"x" * 100)   # taken: no exception for it
                with pytest.raises(osvrt.ClosedResourceError) as info:
                    await stream.sendall(b"more")
                peer_sock.close()
                os.fstat(fd)                            # still open: the stack forgot it
                os.close(fd)
                return outcome, stack.closed, stack.failure, str(info.value)
        finally:
            await stack.aclose()

    outcome, closed, failure, later = run_stack(topo, main)
    assert closed
    assert "ENOTSOCK" in failure or f"[Errno {errno.ENOTSOCK}]" in failure
    assert failure in str(outcome["error"])
    assert failure in later
