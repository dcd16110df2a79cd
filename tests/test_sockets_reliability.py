"""Issue #21, items 1-3 (kernel sockets): readiness kept across fd reuse, a
Unix connect into a full backlog, one busy connection and the CPU it shares.
Every check counts or orders events; nothing here is timed."""
import os
import select
import socket
import tempfile
import threading

import pytest

import osvrt
import osvrt.net
from osvrt.net.protocol_server import _serve_one
from osvrt.net.sockets import Stream
from support import queued


def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def two_cpu_runtime():
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    return osvrt.Runtime(cpus=2, balance=False, stall_threshold=None).start()


def _close_foreign_notified(sock, rt):
    th = threading.Thread(target=lambda: (osvrt.notify_closing(sock), sock.close()))
    th.start()
    th.join()


def _close_foreign_behind_back(sock, rt):
    th = threading.Thread(target=sock.close)
    th.start()
    th.join()


def _close_from_other_cpu(sock, rt):
    async def close():
        Stream(sock).close()
    rt.submit(close, cpu=rt.cpus[0]).result(timeout=10)


@pytest.mark.parametrize("close", [_close_foreign_notified, _close_foreign_behind_back,
                                   _close_from_other_cpu],
                         ids=["foreign-notify", "foreign-behind-back", "other-cpu-stream"])
def test_readiness_is_not_lost_when_an_fd_number_is_reused(close):
    # Item 1: a wait that timed out left its slot "armed" on CPU 1; the fd was
    # closed elsewhere (the kernel dropped the registration) and a new socket
    # got the same number: its wait on CPU 1 skipped the registration and
    # never saw the data that had arrived.
    rt = two_cpu_runtime()
    try:
        async def on_cpu1():
            old, old_peer = pair()
            number = old.fileno()
            with pytest.raises(TimeoutError):
                await osvrt.wait_readable(old, timeout=0.01)
            close(old, rt)
            old_peer.close()
            fresh = []                 # lowest free number first: lower ones may be free too
            while not any(s.fileno() == number for p in fresh for s in p):
                assert len(fresh) < 200, "the fd number was not reused"
                fresh.append(pair())
            mine, peer = next((a, b) if a.fileno() == number else (b, a) for a, b in fresh
                              if number in (a.fileno(), b.fileno()))
            peer.send(b"x")                            # already there when we wait
            await osvrt.wait_readable(mine, timeout=5)   # no TimeoutError
            got = mine.recv(1)
            for p in fresh:
                for s in p:
                    s.close()
            return got
        assert rt.submit(on_cpu1, cpu=rt.cpus[1]).result(timeout=20) == b"x"
    finally:
        rt.stop(timeout=5)


def test_a_closing_reaches_a_cpu_with_no_current_waiter():
    # Item 1, second cause: notify_closing skipped workers that had no waiter
    # at that moment, so a CPU whose wait had ended kept the old fd's slot.
    # The closing is now posted to it, and taken before its next registration.
    rt = two_cpu_runtime()
    try:
        a, b = pair()
        async def arm_then_time_out():
            with pytest.raises(TimeoutError):
                await osvrt.wait_readable(a, timeout=0.01)
            return osvrt._engine.io_waiters(osvrt.kernel.current_worker())
        assert rt.submit(arm_then_time_out, cpu=rt.cpus[1]).result(timeout=10) == 0
        w1 = rt.workers[1]
        before = osvrt._engine.io_pending_closings(w1)
        osvrt.notify_closing(a)                   # a foreign thread: posts to every CPU
        assert osvrt._engine.io_pending_closings(w1) == before + 1
        a.close()
        b.close()
        async def register_again():
            c, d = pair()
            with c, d:
                d.send(b"y")
                await osvrt.wait_readable(c, timeout=5)
            return osvrt._engine.io_pending_closings(osvrt.kernel.current_worker())
        assert rt.submit(register_again, cpu=rt.cpus[1]).result(timeout=10) == 0
    finally:
        rt.stop(timeout=5)


def test_a_unix_connect_into_a_full_backlog_waits_for_room():
    # Item 2: EAGAIN from a non-blocking Unix connect() means the listener's
    # backlog is full; it was taken for EINPROGRESS, and the stream returned
    # was not connected (sendall then failed with ENOTCONN).
    n = 40
    async def main():
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "s")
            listener = await osvrt.net.unix_listen(path, backlog=4)
            got = []

            async def serve():
                for _ in range(n):
                    conn, _ = await listener.accept()
                    with conn.socket:
                        got.append(await conn.recv(1))

            async def client(i):
                s = await osvrt.net.open_unix_stream(path)
                await s.sendall(b"%c" % (65 + i % 26))
                await s.recv(1)            # b"": the server read and closed
                s.close()

            server = osvrt.spawn(serve)
            clients = [osvrt.spawn(client, i) for i in range(n)]
            for c in clients:
                await c.join(timeout=30)
            await server.join(timeout=30)
            listener.close()
            return len(got), all(len(g) == 1 for g in got)
    with osvrt.Runtime(cpus=1, stall_threshold=None) as rt:
        assert rt.submit(main).result(timeout=60) == (n, True)


def test_a_connection_that_always_has_data_still_reaches_a_trap():
    # Item 3: recv returned without a trap whenever data was ready, so a
    # reader whose peer always had data never came back to the loop: OSv's
    # rule (applied only at a trap) could not act, nor could a cancel.  Now
    # after IO_BUDGET calls that completed at once, the next one yields.  A
    # cancel asked at call k is raised at the next trap: by call k + budget.
    budget = 128                     # IO_BUDGET, osvrt/_engine/sock.c
    a, b = socket.socketpair()
    b.sendall(b"x" * 4000)
    seen = {}

    async def main():
        stream = Stream(a)
        calls = 0
        try:
            for calls in range(1, 4001):
                await stream.recv(1)
                if calls == 1000:
                    osvrt.current().cancel()
        except osvrt.Cancelled:
            seen["at"] = calls
        stream.close()
    with osvrt.Runtime(cpus=1, stall_threshold=None) as rt:
        rt.submit(main).result(timeout=60)
    b.close()
    assert 1000 < seen.get("at", 4001) <= 1000 + budget + 1, seen


def test_a_thread_woken_while_a_connection_streams_runs_before_it_ends():
    # Item 3, as the user saw it: a thread woken by the busy reader (an Event)
    # ran only once the reader stopped.  100,000 one-byte recv calls take far
    # longer than the fair rule's hysteresis (THYST, 5 ms of CPU), so the rule
    # switches to the woken thread at one of the reader's budget traps.
    n = 100_000
    a, b = socket.socketpair()
    b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    b.sendall(b"x" * n)
    order = []

    async def main():
        stream = Stream(a)
        ev = osvrt.Event()
        calls = 0

        async def woken():
            await ev.wait()
            order.append(("woken", calls))

        t = osvrt.spawn(woken)
        await osvrt.yield_now()                 # it waits on ev now
        for calls in range(1, n + 1):
            await stream.recv(1)
            if calls == 10:
                ev.set()
        order.append(("reader done", calls))
        await t.join(timeout=10)
        stream.close()
    with osvrt.Runtime(cpus=1, stall_threshold=None) as rt:
        rt.submit(main).result(timeout=120)
    b.close()
    assert [o[0] for o in order] == ["woken", "reader done"], order


def test_an_io_woken_reader_waits_at_most_one_poll_interval_of_turns():
    # The bound of docs/design.md ("How long an I/O-woken reader waits"): once
    # CPU-bound threads have run past the hysteresis (OSv's rule), a reader
    # whose data arrives runs within IO_TICKS loop turns (the busy poll) plus
    # the turn in progress: counted in the yielders' turns, no clock.
    #
    # "Past the hysteresis" is checked, not assumed: the data is sent only
    # once every yielder's decayed runtime (osvrt.threads(), what the rule
    # compares) is 2 x THYST above the reader's.  An earlier version sent it
    # after 40,000 turns of one yielder, taking that for "far more CPU than
    # THYST"; but a yield that keeps the CPU costs well under a microsecond,
    # so at that turn the others had sometimes used under 5 ms (0.8-25 ms
    # measured), and a yielder switched in then, credited THYST, kept the CPU
    # until it was past the reader again: OSv's rule doing what design.md
    # says (the THYST term of the bound), and the 1,626 turns once seen in CI.
    io_ticks, k, warm, thyst = 61, 3, 40_000, 0.005
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    turns = [0]
    box = {}

    def past_hysteresis():
        rts = {i.name: i.runtime for i in osvrt.threads()}
        return all(rts[f"y{i}"] > rts["reader"] + 2 * thyst for i in range(k))

    async def main():
        async def reader():
            await osvrt.wait_readable(a)
            box["ran_at"] = turns[0]

        async def yielder(i):
            n = 0
            while True:
                n += 1
                turns[0] += 1
                if (i == 0 and "sent_at" not in box and n >= warm and n % 256 == 0
                        and past_hysteresis()):
                    box["sent_at"] = turns[0]
                    b.send(b"x")
                if "ran_at" in box:
                    return
                assert n < 100 * warm, "the yielders never got past the hysteresis"
                await osvrt.yield_now()

        r = osvrt.spawn(reader, name="reader")
        await osvrt.sleep(0.01)                # parked on the fd
        ys = [osvrt.spawn(yielder, i, name=f"y{i}") for i in range(k)]
        await r.join(timeout=60)
        for y in ys:
            await y.join(timeout=60)
    with osvrt.Runtime(cpus=1, stall_threshold=None) as rt:
        rt.submit(main).result(timeout=120)
    a.close()
    b.close()
    waited = box["ran_at"] - box["sent_at"]
    assert 0 <= waited <= io_ticks + k, box


def test_a_unix_connect_into_a_backlog_that_stays_full_times_out():
    async def main():
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "s")
            listener = await osvrt.net.unix_listen(path, backlog=0)
            held = []
            with pytest.raises(TimeoutError, match="backlog stayed full"):
                for _ in range(16):              # nobody accepts: the backlog fills
                    held.append(await osvrt.net.open_unix_stream(path, timeout=0.05))
            for s in held:
                s.close()
            listener.close()
            return len(held)
    with osvrt.Runtime(cpus=1, stall_threshold=None) as rt:
        assert rt.submit(main).result(timeout=30) < 16


# A socket closed behind osvrt's back (stream.socket.close(), os.close) left
# its number's slot on the worker "registered, edge-triggered" with its
# readiness cached as drained; the kernel had dropped the registration with
# the file, so a new socket that got the number parked on that slot with no
# epoll_ctl and was never woken (found by reading io.c; osvrt's own close()
# goes through notify_closing and was never affected).  Every fd osvrt
# creates or is handed now bumps its number's epoch, and a slot of an older
# epoch is renewed before it is used (osvrt/_engine/io.c).

async def _registered_edge_triggered(stream, peer):
    """stream's recv parks once, so its fd is registered edge-triggered (both
    directions) on this worker, and its readiness cached as drained."""
    async def read():
        return await stream.recv(16)
    t = osvrt.spawn(read)
    await queued(t)
    await peer.sendall(b"x")
    assert await t.join(timeout=5) == b"x"


def _stream_pair():
    a, b = socket.socketpair()
    return Stream(a), Stream(b)


def _hold_below(number):
    """Fill every free fd number below `number` (the kernel gives the lowest
    free one) and hold `number` too: (the sockets below, the one on it)."""
    held = []
    while True:
        assert len(held) < 500, f"fd {number} was not free"
        s = socket.socket()
        if s.fileno() == number:
            return held, s
        held.append(s)


async def _parked_then_closed_behind_osvrts_back(method, *args):
    """A green thread parked in method(stream, *args) on a Stream whose socket
    is then closed behind osvrt's back: (that thread, the freed number, the
    sockets that hold every lower free number), so the next fd made takes it."""
    old, old_peer = _stream_pair()
    number = old.fileno()
    parked = osvrt.spawn(method, old, *args)
    await queued(parked)
    old.socket.close()                           # behind osvrt's back
    old_peer.close()
    held, on_number = _hold_below(number)
    on_number.close()
    return parked, number, held


@pytest.mark.parametrize("how", ["wrapped", "accepted", "protocol-server-epoll"])
def test_a_socket_closed_behind_osvrts_back_leaves_no_armed_slot_for_its_number(how):
    async def main():
        old, old_peer = _stream_pair()
        await _registered_edge_triggered(old, old_peer)
        number = old.fileno()
        listener = await osvrt.net.tcp_listen(("127.0.0.1", 0))
        old.socket.close()                       # behind osvrt's back
        old_peer.close()
        held, on_number = _hold_below(number)
        if how == "accepted":
            peer = socket.socket()               # above number: on_number holds it
        on_number.close()                        # the next fd made takes number
        if how == "wrapped":                     # a socket handed to osvrt (Stream)
            a, peer = socket.socketpair()
            new = Stream(a)
        elif how == "accepted":                  # a connection the engine accepted
            peer.connect(listener.address)
            new, _ = await listener.accept()
        if how in ("wrapped", "accepted"):
            assert new.fileno() == number
            peer.sendall(b"y")                   # there before the first recv
            with osvrt.timeout(5):               # the old slot: parked for ever
                got = await new.recv(16)
            new.close()
            peer.close()
        else:
            # serve_tcp_protocol's inner epoll (osvrt/_engine/serve.c) takes
            # the number.  Its edge-triggered wait on the stale slot never
            # woke: the server never served.
            srv = osvrt.spawn(_serve_one, listener, _Echo)
            await queued(srv)        # parked on its epoll
            assert os.readlink(f"/proc/self/fd/{number}") == "anon_inode:[eventpoll]"
            c = await osvrt.net.open_tcp_stream(*listener.address)
            await c.sendall(b"y")
            with osvrt.timeout(5):
                got = await c.recv(16)
            c.close()
            srv.cancel()
            with pytest.raises(osvrt.Cancelled):
                await srv.join(timeout=5)
        for s in held:
            s.close()
        listener.close()                         # closing twice is a no-op
        return got
    with osvrt.Runtime(cpus=1, stall_threshold=None) as rt:
        assert rt.submit(main).result(timeout=30) == b"y"


class _Echo:
    def __init__(self, conn):
        pass

    def data_received(self, data):
        return data


def test_a_wait_parked_on_a_socket_closed_behind_osvrts_back_ends_when_its_number_is_reused():
    # Before: the reader stayed parked for ever (the kernel forgot the fd
    # silently), and the new socket's recv on that number was refused with
    # BusyResourceError ("another green thread is already waiting").
    async def main():
        reader, number, held = await _parked_then_closed_behind_osvrts_back(Stream.recv, 16)
        a, peer = socket.socketpair()
        new = Stream(a)
        assert new.fileno() == number
        peer.sendall(b"z")
        with osvrt.timeout(5):
            got = await new.recv(16)
        with pytest.raises(osvrt.ClosedResourceError, match="behind osvrt's back"):
            await reader.join(timeout=5)
        for s in held + [new, peer]:
            s.close()
        return got
    with osvrt.Runtime(cpus=1, stall_threshold=None) as rt:
        assert rt.submit(main).result(timeout=30) == b"z"


@pytest.mark.parametrize("stale", ["reader", "writer"])
def test_a_connect_on_the_number_of_a_socket_closed_behind_osvrts_back(stale):
    # open_tcp_stream waits on its socket (the connect) before it is a
    # Stream.  A wait still parked on the old socket made that connect fail
    # with BusyResourceError (a writer), or was woken by the new connection's
    # data and read it (a reader).  The socket is adopted before it connects.
    async def main():
        listener = await osvrt.net.tcp_listen(("127.0.0.1", 0))

        async def serve():
            conn, _ = await listener.accept()
            await conn.sendall(b"BANNER")
            return conn

        if stale == "reader":
            call = Stream.recv, 16
        else:
            call = Stream.sendall, b"x" * (16 << 20)   # more than the buffers hold
        parked, number, held = await _parked_then_closed_behind_osvrts_back(*call)
        server = osvrt.spawn(serve)
        new = await osvrt.net.open_tcp_stream(*listener.address, timeout=5)
        assert new.fileno() == number
        with osvrt.timeout(5):
            got = await new.recv(16)
        with pytest.raises(osvrt.ClosedResourceError, match="behind osvrt's back"):
            await parked.join(timeout=5)
        (await server.join(timeout=5)).close()
        for s in held + [new, listener]:
            s.close()
        return got
    with osvrt.Runtime(cpus=1, stall_threshold=None) as rt:
        assert rt.submit(main).result(timeout=30) == b"BANNER"


def test_wrapping_a_socket_that_a_green_thread_waits_on_does_not_end_that_wait():
    # The adoption of a socket osvrt already waits on: the file did not change
    # (the registration is still the file's), so the wait goes on and is woken
    # by its event, not ended as if the socket had been closed.
    async def main():
        a, b = socket.socketpair()
        waiter = osvrt.spawn(osvrt.wait_readable, a, 5)
        await queued(waiter)
        stream = Stream(a)     # adopted again
        await stream.sendall(b"hi")              # a socket call on the number
        b.send(b"x")
        events = await waiter.join(timeout=5)
        got = b.recv(2)
        stream.close()
        b.close()
        return bool(events & select.EPOLLIN), got
    with osvrt.Runtime(cpus=1, stall_threshold=None) as rt:
        assert rt.submit(main).result(timeout=30) == (True, b"hi")


def _burn(seconds):
    import time
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_a_recv_woken_before_its_socket_closed_does_not_read_the_next_socket():
    """The reader is woken by readiness (runnable, not resumed yet); its
    Stream is closed and a new socket takes the number before it runs.  Its
    recv used to run on the new socket and return that connection's data."""
    async def main():
        a, peer1 = socket.socketpair()
        s1 = Stream(a)

        async def reader():
            _burn(0.2)                    # a high decayed runtime: main runs first later
            try:
                return await s1.recv(100)
            except osvrt.ClosedResourceError as e:
                return e
        t = osvrt.spawn(reader)
        await osvrt.sleep(0.01)           # parked in recv
        _burn(0.02)
        peer1.send(b"for-s1")             # readable: the poll wakes the reader ...
        await osvrt.sleep(0)              # ... and main runs first again
        number = s1.fileno()
        s1.close()
        b, peer2 = socket.socketpair()
        s2 = Stream(b)
        peer2.send(b"SECRET-for-s2")
        got = await t.join()
        reused = s2.fileno() == number
        for s in (s2, peer1, peer2):
            s.close()
        return reused, got

    reused, got = osvrt.run(main, cpus=1)
    assert reused                         # the scenario happened as intended
    assert isinstance(got, osvrt.ClosedResourceError), got


def test_a_call_in_the_budgets_yield_when_its_socket_closes_touches_no_other_socket():
    """Every 128th socket call yields before its system call; a close then
    cannot end it, and it used to run on the number's next socket."""
    async def main():
        a, peer1 = socket.socketpair()
        s1 = Stream(a)
        peer1.send(b"x" * 1000)
        got = []

        async def reader():
            _burn(0.1)
            try:
                while True:
                    got.append(await s1.recv(1))
            except osvrt.ClosedResourceError as e:
                got.append(e)
        t = osvrt.spawn(reader)
        await osvrt.sleep(0.05)           # runs at the reader's first yield: the budget's
        n = len(got)
        number = s1.fileno()
        s1.close()
        b, peer2 = socket.socketpair()
        s2 = Stream(b)
        peer2.send(b"SECRET")
        await osvrt.sleep(0.05)
        t.cancel()
        reused = s2.fileno() == number
        for s in (s2, peer1, peer2):
            s.close()
        return reused, got[n:]

    reused, after = osvrt.run(main, cpus=1)
    assert reused
    assert len(after) == 1 and isinstance(after[0], osvrt.ClosedResourceError), after


@pytest.mark.parametrize("kind", ["seqpacket", "unix_datagram"])
def test_a_short_read_of_a_record_socket_is_not_taken_for_drained(kind):
    """Each recv of a SOCK_SEQPACKET or datagram socket returns one record,
    shorter than asked while more wait; only TCP's short reads mean drained
    (before, the next recv parked with the second record queued)."""
    typ = socket.SOCK_SEQPACKET if kind == "seqpacket" else socket.SOCK_DGRAM

    async def main():
        a, b = socket.socketpair(socket.AF_UNIX, typ)
        s = Stream(a)

        async def sender():
            await osvrt.sleep(0.05)           # after the first recv parked: registered now
            b.send(b"rec1")
            b.send(b"rec2")
        osvrt.spawn(sender)
        try:
            with osvrt.timeout(5):
                return [await s.recv(100), await s.recv(100)]
        finally:
            s.close()
            b.close()

    assert osvrt.run(main, cpus=1) == [b"rec1", b"rec2"]
