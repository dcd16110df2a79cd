"""TCP on the user-space stack against the kernel's TCP in a peer namespace:
a kernel client and a stack server, a stack client and a kernel server,
refused connections, peer resets, half-close both ways, 8 concurrent
connections echoing with SHA-256 equal (a few MiB here; 64 MiB in the soak
suite), the same through a relay that drops, duplicates and reorders
frames, statistics that move as they should, closing, and one echo handler
that runs unchanged on kernel streams and on the stack's streams."""
import errno
import hashlib
import socket

import pytest

import osvrt
import osvrt.net
from osvrt import kernel

from tcp_support import OK, T, WHY, PeerThread, kernel_echo_client, pattern, run_stack

PORT = 7000


async def echo(stream):
    """The handler both stacks run: echo until EOF, then close."""
    async with stream:
        while True:
            data = await stream.recv(65536)
            if not data:
                break
            await stream.sendall(data)


async def serve(listener, n):
    async with osvrt.TaskGroup() as g:
        for _ in range(n):
            stream, _addr = await listener.accept()
            g.spawn(echo, stream)


def echo_clients(topo, n, size, port=PORT):
    """n kernel clients in the peer namespace, each echoing `size` bytes of
    its own pattern; returns [(got, sha_sent, sha_back)]."""
    payloads = [pattern(size, i) for i in range(n)]
    socks = [topo.peer_socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    threads = [PeerThread(kernel_echo_client, s, (topo.stack_ip, port), p)
               for s, p in zip(socks, payloads)]
    for t in threads:
        t.start()
    return [(t, hashlib.sha256(p).hexdigest(), len(p)) for t, p in zip(threads, payloads)]


def check_echoes(clients):
    for t, sha, size in clients:
        got, back = t.outcome()
        assert got == size
        assert back == sha


def _echo_run(topo, n, size, cpus=1, limit=T):
    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        try:
            async with await stack.tcp_listen(PORT) as listener:
                clients = echo_clients(topo, n, size)
                await serve(listener, n)
                await osvrt.to_thread(check_echoes, clients)
            return stack.stats()
        finally:
            await stack.aclose()
    return run_stack(topo, main, cpus=cpus, limit=limit)


def test_kernel_client_to_stack_server(topo):
    stats = _echo_run(topo, 1, 300_000)
    assert stats["tcp"]["accepts"] == 1 and stats["tcp"]["passive_opens"] == 1
    assert stats["segments_in"] > 200_000 // 1460 and stats["segments_out"] > 200_000 // 1460
    assert stats["tcp"]["bytes_in"] == 300_000


def test_eight_connections_sha256(topo):
    stats = _echo_run(topo, 8, 512 * 1024)
    assert stats["tcp"]["accepts"] == 8
    assert stats["tcp"]["bytes_in"] == 8 * 512 * 1024


def test_eight_connections_through_a_lossy_relay(lossy_topo):
    """2% loss, 1% duplication, 2% of frames held back 2 ms (reordered),
    seeded: every byte arrives, in order, and the stack retransmitted."""
    topo = lossy_topo
    topo.start_relay(loss=0.02, dup=0.01, reorder=0.02, seed=19)
    stats = _echo_run(topo, 8, 128 * 1024)
    counts = topo.relay_counts()
    assert counts["dropped"] > 0 and counts["duplicated"] > 0 and counts["delayed"] > 0
    assert stats["retransmissions"] > 0
    assert stats["tcp"]["ooo_segments"] > 0
    # every byte counted once, in order or held out of order first (it undercounted these)
    assert stats["tcp"]["bytes_in"] == 8 * 128 * 1024


def test_app_thread_on_another_cpu(topo):
    """A stream used from a green thread of another CPU: the call moves it to
    the stack's CPU (tcp.h's one owner), and the data is intact."""
    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        other = [c for c in kernel.current_worker().rt.cpus if c != stack.cpu]
        try:
            async with await stack.tcp_listen(PORT) as listener:
                clients = echo_clients(topo, 1, 100_000)
                stream, _ = await listener.accept()
                t = osvrt.spawn(echo, stream, cpu=other[0] if other else None)
                await t.join()
                await osvrt.to_thread(check_echoes, clients)
        finally:
            await stack.aclose()
    run_stack(topo, main, cpus=2)


def _kernel_server(sock, reply):
    """Accept one connection, read to EOF, then send `reply` and close:
    the client's half-close must let it keep receiving."""
    sock.settimeout(T)
    conn, _ = sock.accept()
    conn.settimeout(T)
    h = hashlib.sha256()
    while True:
        data = conn.recv(65536)
        if not data:
            break
        h.update(data)
    conn.sendall(reply)
    conn.close()
    sock.close()
    return h.hexdigest()


def test_stack_client_to_kernel_server_half_close(topo):
    srv = topo.peer_socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((topo.peer_ip, 7001))
    srv.listen(8)
    sent = pattern(200_000, 5)
    reply = pattern(150_000, 6)
    peer = PeerThread(_kernel_server, srv, reply)
    peer.start()

    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        try:
            stream = await stack.open_tcp_stream(topo.peer_ip, 7001, timeout=T)
            async with stream:
                assert stream.remote_address == (topo.peer_ip, 7001)
                await stream.sendall(sent)
                await stream.send_eof()
                got = bytearray()
                buf = bytearray(5000)
                while True:
                    n = await stream.recv_into(buf)
                    if n == 0:
                        break
                    got += buf[:n]
            return bytes(got), stack.stats()
        finally:
            await stack.aclose()

    got, stats = run_stack(topo, main)
    assert peer.outcome() == hashlib.sha256(sent).hexdigest()
    assert got == reply
    assert stats["tcp"]["active_opens"] == 1
    assert stats["arp"]["requests_out"] >= 1 and stats["arp"]["replies_in"] >= 1


def test_reader_and_writer_threads_on_one_stream(topo):
    """Both ways at once through one stream: a green thread reads the
    client's 3 MiB while another sends 3 MiB of its own, each parking on its
    Event (the send buffer fills).  The writer is woken by ACKs that the
    reader's own recv calls run (its events must not be dropped as events of
    a connection nobody waits on: the writer waits on it)."""
    sent = pattern(3 << 20, 11)
    reply = pattern(3 << 20, 12)
    sock = topo.peer_socket(socket.AF_INET, socket.SOCK_STREAM)
    client = PeerThread(kernel_echo_client, sock, (topo.stack_ip, PORT), sent)

    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        try:
            async with await stack.tcp_listen(PORT) as listener:
                client.start()
                stream, _ = await listener.accept()
                async with stream:
                    async def reader():
                        h, n = hashlib.sha256(), 0
                        while data := await stream.recv(65536):
                            h.update(data)
                            n += len(data)
                        return n, h.hexdigest()
                    t = osvrt.spawn(reader)
                    await stream.sendall(reply)
                    await stream.send_eof()
                    got = await t.join()
            # The client reads to our FIN before aclose() resets what is left:
            # sendall returns once the reply is queued, not delivered, and on a
            # loaded host the reset came while some of it was still queued.
            await osvrt.to_thread(client.join, T)
            return got, stack.stats()
        finally:
            await stack.aclose()

    got, stats = run_stack(topo, main)
    assert got == (len(sent), hashlib.sha256(sent).hexdigest())
    assert client.outcome() == (len(reply), hashlib.sha256(reply).hexdigest())
    assert stats["tcp"]["accepts"] == 1


def test_refused_both_ways(topo):
    def kernel_connect():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(T)
        try:
            s.connect((topo.stack_ip, 7999))
        except ConnectionRefusedError as e:
            return e
        finally:
            s.close()

    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        try:
            with pytest.raises(ConnectionRefusedError) as info:
                await stack.open_tcp_stream(topo.peer_ip, 7999, timeout=T)
            refused = await osvrt.to_thread(topo.in_peer, kernel_connect)
            return info.value, refused, stack.stats()
        finally:
            await stack.aclose()

    mine, theirs, stats = run_stack(topo, main)
    assert "198.18.0.1:7999" in str(mine)
    assert isinstance(theirs, ConnectionRefusedError)
    assert stats["tcp"]["rsts_in"] >= 1 and stats["tcp"]["rsts_out"] >= 1
    assert stats["dropped"]["no_connection"] >= 1


def test_peer_reset_is_connection_reset_error(topo):
    def reset_client():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(T)
        s.connect((topo.stack_ip, PORT))
        s.sendall(b"hello")
        s.recv(5)                      # our "ok": the stack has read it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        s.close()                      # linger 0: a RST

    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        try:
            async with await stack.tcp_listen(PORT) as listener:
                peer = PeerThread(topo.in_peer, reset_client)
                peer.start()
                stream, _ = await listener.accept()
                assert await stream.recv(5) == b"hello"
                await stream.sendall(b"ok")
                with pytest.raises(ConnectionResetError):
                    while True:
                        if not await stream.recv():
                            raise AssertionError("EOF instead of a reset")
                await osvrt.to_thread(peer.outcome)
                stream.close()
                return stack.stats()
        finally:
            await stack.aclose()

    stats = run_stack(topo, main)
    assert stats["tcp"]["rsts_in"] == 1


def test_close_wakes_a_waiting_reader_and_aclose_resets_peers(topo):
    def client():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(T)
        s.connect((topo.stack_ip, PORT))
        s2 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s2.settimeout(T)
        s2.connect((topo.stack_ip, PORT))
        return s, s2

    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        listener = await stack.tcp_listen(PORT)
        socks = await osvrt.to_thread(topo.in_peer, client)
        a, _ = await listener.accept()
        b, _ = await listener.accept()

        async def reader():
            return await a.recv()
        t = osvrt.spawn(reader)
        await osvrt.sleep(0.05)
        states = stack.stats()["connections"]
        a.close()
        with pytest.raises(osvrt.ClosedResourceError):
            await t.join()
        with pytest.raises(osvrt.ClosedResourceError):
            await a.recv()
        await stack.aclose()                   # b is reset
        with pytest.raises(osvrt.ClosedResourceError):
            await b.sendall(b"x")
        with pytest.raises(osvrt.ClosedResourceError):
            await listener.accept()
        return socks, states

    (sa, sb), states = run_stack(topo, main)
    assert states["ESTABLISHED"] == 2 and states["LISTEN"] == 1
    assert sa.recv(10) == b""                 # a: closed gracefully (a FIN)
    with pytest.raises(ConnectionResetError):
        sb.recv(10)                           # b: reset by aclose()
    sa.close()
    sb.close()


def test_runtime_stop_resets_the_stacks_peers(topo):
    """The program ends with a connection open: Runtime.stop() resets it, so
    the kernel peer learns at once that it is gone (before, the stop sent
    nothing, and the peer waited on a connection that no longer existed)."""
    def client():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(T)
        s.connect((topo.stack_ip, PORT))
        return s

    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        listener = await stack.tcp_listen(PORT)
        sock = await osvrt.to_thread(topo.in_peer, client)
        stream, _ = await listener.accept()
        await stream.sendall(b"hi")
        return sock, stream, stack          # left open: the runtime's stop ends them

    sock, _stream, stack = run_stack(topo, main)
    assert stack.closed
    assert sock.recv(10) == b"hi"
    with pytest.raises(ConnectionResetError):
        sock.recv(10)
    sock.close()


def test_one_handler_on_both_stacks(topo):
    """The same echo handler and server loop, on a kernel listener and on the
    stack's listener: only how the listener is made differs."""
    def kclient(addr):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        return kernel_echo_client(s, addr, pattern(50_000, 9))

    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        try:
            results = []
            for make in (lambda: osvrt.net.tcp_listen(("127.0.0.1", 0)),
                         lambda: stack.tcp_listen(PORT)):
                async with await make() as listener:
                    host, port = listener.address
                    peer = PeerThread((topo.in_stack if host == "127.0.0.1" else topo.in_peer),
                                      kclient, (host if host == "127.0.0.1" else topo.stack_ip,
                                                port))
                    peer.start()
                    await serve(listener, 1)
                    results.append(await osvrt.to_thread(peer.outcome))
            return results
        finally:
            await stack.aclose()

    kernel, user = run_stack(topo, main)
    assert kernel == user == (50_000, hashlib.sha256(pattern(50_000, 9)).hexdigest())


def test_runtime_stop_closes_the_stack(topo):
    box = {}

    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        box["stack"] = stack
        rt = kernel.current_worker().rt
        box["stats"] = rt.stats()["tcp"]
    run_stack(topo, main)
    assert box["stack"].closed
    assert box["stats"]["stacks"][0]["address"] == topo.cidr



def test_peer_with_checksum_offload():
    """A veth peer left as the kernel makes it (tx checksum offload on, so
    TSO too): its frames carry partial TCP checksums (TP_STATUS_CSUMNOTREADY)
    and may be larger than the MTU; the stack accepts them as the kernel's
    own receive path does, and the data is intact."""
    from osvrt.bench import netns
    if not OK:
        pytest.skip(f"user_stack tests: {WHY}")
    with netns.Topology(tx_checksum=True) as topo:
        stats = _echo_run(topo, 2, 400_000)
    assert stats["link"]["checksum_partial"] > 0
    assert stats["dropped"]["bad_checksum"] == 0


def test_unanswered_arp_fails_the_connect(topo):
    """A host on the link that never answers ARP: after three requests a
    second apart, open_tcp_stream raises EHOSTUNREACH (as the kernel's
    connect does), not after every SYN retransmission."""
    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        try:
            with pytest.raises(OSError) as info:
                await stack.open_tcp_stream("198.18.0.77", 80)
            return info.value, stack.stats()
        finally:
            await stack.aclose()
    err, stats = run_stack(topo, main)
    assert err.errno == errno.EHOSTUNREACH and "198.18.0.77:80" in str(err)
    assert stats["arp"]["requests_out"] >= 3 and stats["arp"]["unresolved_drops"] >= 1


def test_segments_run_in_the_owning_thread_and_a_cancelled_wait_loses_none(topo):
    """A reader parked in recv() gets its connection's segments handed to it
    (stats: segments_to_owner) and runs them through the engine itself; a
    reader cancelled while segments wait for it leaves them to the next
    reader, in order, with nothing lost."""
    def client(go, done):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(T)
        s.connect((topo.stack_ip, PORT))
        s.sendall(b"first ")
        go.wait(T)
        s.sendall(b"second")
        s.shutdown(socket.SHUT_WR)
        done.wait(T)
        s.close()

    async def main():
        import threading
        go, done = threading.Event(), threading.Event()
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        try:
            async with await stack.tcp_listen(PORT) as listener:
                peer = PeerThread(topo.in_peer, client, go, done)
                peer.start()
                stream, _ = await listener.accept()
                got = await stream.recv()
                while got != b"first ":
                    got += await stream.recv()
                before = stack.stats()["link"]["segments_to_owner"]

                async def reader():
                    return await stream.recv()
                t = osvrt.spawn(reader)
                await osvrt.sleep(0.02)       # parked in recv
                t.cancel()
                with pytest.raises(osvrt.Cancelled):
                    await t.join()
                go.set()
                rest = b""
                while chunk := await stream.recv():
                    rest += chunk
                done.set()
                await osvrt.to_thread(peer.outcome)
                stream.close()
                return got, rest, before, stack.stats()
        finally:
            await stack.aclose()

    got, rest, before, stats = run_stack(topo, main)
    assert (got, rest) == (b"first ", b"second")
    assert before >= 1                        # "first " ran in the reader's thread
    assert stats["link"]["segments_to_owner"] > before
