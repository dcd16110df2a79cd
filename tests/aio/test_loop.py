"""osvrt.new_event_loop: the asyncio loop surface, on an osvrt Runtime.

Every test runs its coroutine under asyncio.wait_for with a bound, so a lost
wake-up of the parked loop fails the test instead of hanging it."""
import asyncio
import logging
import gc
import os
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time

import pytest

import osvrt
from osvrt.aio import OsvrtEventLoop

BOUND = 20.0


def run(coro_fn, *args, debug=False, **loop_kw):
    with asyncio.Runner(debug=debug,
                        loop_factory=lambda: osvrt.new_event_loop(**loop_kw)) as r:
        return r.run(asyncio.wait_for(coro_fn(*args), BOUND))


def test_loop_is_an_asyncio_loop_run_by_an_osvrt_green_thread():
    async def main():
        loop = asyncio.get_running_loop()
        t = asyncio.current_task()
        return (type(loop), isinstance(loop, asyncio.AbstractEventLoop), type(t),
                osvrt.current().name, threading.current_thread().name)

    cls, is_loop, task_type, green, os_thread = run(main)
    assert cls is OsvrtEventLoop and is_loop
    assert task_type is asyncio.Task          # the C Task, as anyio needs
    assert green == "osvrt-asyncio-loop"
    # As on asyncio and uvloop, the loop's code runs on the thread that runs
    # the loop: the worker runs there (no OS thread of its own).
    assert os_thread == threading.current_thread().name


def test_timers_fire_in_order_and_not_early():
    async def main():
        loop = asyncio.get_running_loop()
        seen = []
        done = loop.create_future()
        t0 = loop.time()
        for d in (0.03, 0.01, 0.02):
            loop.call_later(d, lambda d=d: (seen.append((d, loop.time() - t0)),
                                            len(seen) == 3 and done.set_result(None)))
        h = loop.call_later(0.015, seen.append, "cancelled")
        h.cancel()
        await done
        return seen

    seen = run(main)
    assert [d for d, _ in seen] == [0.01, 0.02, 0.03]
    assert all(elapsed >= d - 0.001 for d, elapsed in seen)


def test_many_cancelled_timers_are_dropped_and_the_rest_fire_in_order():
    # The loop's own turn (not asyncio's, outside debug mode) drops cancelled
    # timers: the heap is rebuilt when most of it is cancelled.
    async def main():
        loop = asyncio.get_running_loop()
        fired = []
        handles = [loop.call_later(0.001 * (i % 50) + 0.01, fired.append, i) for i in range(300)]
        keep = set(range(0, 300, 6))
        for i, h in enumerate(handles):
            if i not in keep:
                h.cancel()
        await asyncio.sleep(0)               # one turn: the rebuild
        size_after_cancel = len(loop._scheduled)
        await asyncio.sleep(0.1)
        when = {i: handles[i].when() for i in keep}
        return fired, when, size_after_cancel, len(loop._scheduled)

    fired, when, size_after_cancel, left = run(main)
    assert sorted(fired) == sorted(range(0, 300, 6))
    assert [when[i] for i in fired] == sorted(when.values())       # in deadline order
    assert size_after_cancel <= len(range(0, 300, 6)) + 1      # the +1: wait_for's timer
    assert left <= 1


def test_a_timer_at_infinity_is_legal_and_other_work_still_runs():
    # Regression: call_at(inf) (anyio's process pool does it) made the loop hand
    # an infinite delay to the worker's timer (ValueError out of run_forever).
    async def main():
        loop = asyncio.get_running_loop()
        h = loop.call_at(float("inf"), lambda: None)
        fut = loop.create_future()         # the loop parks with only the inf timer
        th = threading.Timer(0.02, loop.call_soon_threadsafe, (fut.set_result, "ok"))
        th.start()
        try:
            return await fut
        finally:
            h.cancel()
            th.join()

    # No wait_for here: its own timer would sit before the inf one.  The
    # foreign thread's wake bounds the test.
    with asyncio.Runner(loop_factory=osvrt.new_event_loop) as r:
        assert r.run(main()) == "ok"


def test_call_soon_threadsafe_wakes_a_parked_loop():
    # The loop has nothing to do (no timer, no fd): only the pushlist wake can end its park.
    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def later():
            time.sleep(0.05)
            loop.call_soon_threadsafe(fut.set_result, threading.get_ident())

        th = threading.Thread(target=later)
        th.start()
        r = await fut
        th.join()
        return r != threading.get_ident()

    assert run(main)


def test_many_threadsafe_calls_from_many_threads_all_run():
    async def main():
        loop = asyncio.get_running_loop()
        n, per = 4, 500
        got = []
        done = loop.create_future()

        def add(i):
            got.append(i)
            if len(got) == n * per:
                done.set_result(None)

        def blast():
            for i in range(per):
                loop.call_soon_threadsafe(add, i)
                if i % 50 == 0:
                    time.sleep(0.001)       # let the loop park between bursts

        ths = [threading.Thread(target=blast) for _ in range(n)]
        for th in ths:
            th.start()
        await done
        for th in ths:
            th.join()
        return len(got)

    assert run(main) == 2000


def test_run_in_executor_uses_the_offload_pool():
    async def main():
        loop = asyncio.get_running_loop()
        name = await loop.run_in_executor(None, lambda: threading.current_thread().name)
        with pytest.raises(ZeroDivisionError):
            await loop.run_in_executor(None, lambda: 1 / 0)
        r = await asyncio.to_thread(sum, [1, 2, 3])
        return name, r

    name, r = run(main)
    assert name.startswith("osvrt-offload")
    assert r == 6


def test_cancelled_executor_call_releases_the_awaiter():
    async def main():
        loop = asyncio.get_running_loop()
        gate = threading.Event()
        fut = loop.run_in_executor(None, gate.wait, 5)
        await asyncio.sleep(0.01)
        fut.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fut
        gate.set()
        return True

    assert run(main)


def test_osvrt_api_inside_the_loop():
    async def green(x):
        await osvrt.sleep(0.01)
        ev = osvrt.Event()
        t = osvrt.spawn(lambda: _set_later(ev))
        await ev.wait()
        await t.join()
        return x * 2

    async def main():
        loop = asyncio.get_running_loop()
        r = await loop.run_green(green, 21)
        with pytest.raises(KeyError):
            await loop.run_green(_raise_key)
        # A green thread spawned from a task hands its result back to the loop.
        fut = loop.create_future()

        async def child():
            await osvrt.sleep(0.01)
            loop.call_soon_threadsafe(fut.set_result, "from green")

        osvrt.spawn(child)
        return r, await fut

    assert run(main) == (42, "from green")


@pytest.mark.parametrize("debug", [False, True])
def test_a_green_thread_completes_a_future_of_the_parked_loop(debug):
    # A green thread spawned from a task sets an asyncio Future directly (no
    # call_soon_threadsafe): the Future's callbacks go through call_soon, which
    # must wake the parked loop.
    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        async def child():
            await osvrt.sleep(0.02)
            fut.set_result("direct")

        osvrt.spawn(child)
        # No other timer (no wait_for): a lost wake would park the loop until
        # this fallback from a foreign thread wakes it, 10 s later.
        late = threading.Event()

        def fallback_wake():
            late.set()
            loop.call_soon_threadsafe(lambda: None)

        fallback = threading.Timer(10, fallback_wake)
        fallback.start()
        try:
            return await fut, late.is_set()
        finally:
            fallback.cancel()

    with asyncio.Runner(debug=debug, loop_factory=osvrt.new_event_loop) as r:
        assert r.run(main()) == ("direct", False)     # woken by the green thread itself


async def _set_later(ev):
    await osvrt.sleep(0.005)
    ev.set()


async def _raise_key():
    raise KeyError("k")


def test_tcp_streams_echo():
    async def main():
        async def handle(r, w):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
            w.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0, reuse_port=True)
        port = srv.sockets[0].getsockname()[1]
        rd, wr = await asyncio.open_connection("127.0.0.1", port)
        blob = os.urandom(1 << 20)
        wr.write(blob)
        await wr.drain()
        got = await rd.readexactly(len(blob))
        wr.close()
        await wr.wait_closed()
        srv.close()
        await srv.wait_closed()
        return got == blob

    assert run(main)


def test_sock_methods():
    async def main():
        loop = asyncio.get_running_loop()
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        lsock.setblocking(False)
        c = socket.socket()
        c.setblocking(False)
        accept = asyncio.ensure_future(loop.sock_accept(lsock))
        await loop.sock_connect(c, lsock.getsockname())
        s, _ = await accept
        await loop.sock_sendall(c, b"ping")
        data = await loop.sock_recv(s, 4)
        for x in (c, s, lsock):
            x.close()
        return data

    assert run(main) == b"ping"


def test_udp_datagram_endpoint():
    async def main():
        loop = asyncio.get_running_loop()
        got = loop.create_future()

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, tr):
                self.tr = tr

            def datagram_received(self, data, addr):
                self.tr.sendto(data.upper(), addr)

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                got.set_result(data)

        st, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        ct, _ = await loop.create_datagram_endpoint(
            Client, remote_addr=st.get_extra_info("sockname"))
        ct.sendto(b"hello")
        r = await got
        ct.close()
        st.close()
        return r

    assert run(main) == b"HELLO"


def test_unix_socket_server():
    async def main():
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "s")

            async def handle(r, w):
                w.write(await r.readline())
                await w.drain()
                w.close()

            srv = await asyncio.start_unix_server(handle, path)
            rd, wr = await asyncio.open_unix_connection(path)
            wr.write(b"line\n")
            r = await rd.readline()
            wr.close()
            srv.close()
            await srv.wait_closed()
            return r

    assert run(main) == b"line\n"


def test_subprocess_and_pipes():
    async def main():
        p = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read().upper())",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        out, _ = await p.communicate(b"abc")
        return out, p.returncode

    assert run(main) == (b"ABC", 0)


def test_signal_handler_runs_in_the_loop():
    # add_signal_handler is called in the loop thread (an osvrt worker); the
    # loop installs it through the main thread that waits in run_forever.
    async def main():
        loop = asyncio.get_running_loop()
        got = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, lambda: got.set_result(threading.get_ident()))
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            return await got == threading.get_ident()
        finally:
            assert loop.remove_signal_handler(signal.SIGUSR1)

    assert run(main)


def test_start_tls_and_ssl_server():
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def main():
        async def handle(r, w):
            w.write(b"secure:" + await r.readline())
            await w.drain()
            w.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = srv.sockets[0].getsockname()[1]
        # Plain connect, then upgrade with start_tls.
        rd, wr = await asyncio.open_connection("127.0.0.1", port)
        await wr.start_tls(client_ctx, server_hostname="localhost")
        wr.write(b"hi\n")
        r = await rd.read()
        wr.close()
        srv.close()
        await srv.wait_closed()
        return r

    assert run(main) == b"secure:hi\n"


def test_sendfile():
    async def main():
        loop = asyncio.get_running_loop()
        blob = os.urandom(300_000)
        received = bytearray()
        done = loop.create_future()

        class Sink(asyncio.Protocol):
            def data_received(self, data):
                received.extend(data)

            def eof_received(self):
                done.set_result(None)

        srv = await loop.create_server(Sink, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        tr, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        with tempfile.TemporaryFile() as f:
            f.write(blob)
            f.flush()
            f.seek(0)
            n = await loop.sendfile(tr, f)
        tr.write_eof()
        await done
        tr.close()
        srv.close()
        return n, bytes(received) == blob

    assert run(main) == (300_000, True)


@pytest.mark.parametrize("debug", [True, False])
def test_exception_handler_and_debug_mode(debug):
    # Outside debug mode the loop runs callbacks itself (not Handle._run): the
    # handler must get the same context.
    async def main():
        loop = asyncio.get_running_loop()
        seen = []
        loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))
        h = loop.call_soon(_divide, 1, 0)
        await asyncio.sleep(0.01)
        return loop.get_debug(), h, seen

    is_debug, h, seen = run(main, debug=debug)
    assert is_debug is debug
    assert len(seen) == 1
    assert type(seen[0]["exception"]) is ZeroDivisionError
    assert seen[0]["handle"] is h
    assert seen[0]["message"].startswith("Exception in callback _divide(")   # args shown by version and debug mode


def _divide(a, b):
    return a / b


def test_custom_task_factory():
    async def main():
        loop = asyncio.get_running_loop()
        made = []

        def factory(lp, coro, **kw):
            t = asyncio.Task(coro, loop=lp, **kw)
            made.append(t)
            return t

        loop.set_task_factory(factory)
        r = await asyncio.create_task(asyncio.sleep(0, "x"))
        return r, len(made)

    assert run(main) == ("x", 1)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are Python 3.12+")
def test_eager_task_factory():
    async def main():
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)
        ran = []

        async def f():
            ran.append(1)
            return 7

        t = asyncio.create_task(f())
        first = list(ran)               # an eager task ran its first step already
        return first, await t

    assert run(main) == ([1], 7)


def test_shutdown_asyncgens_and_default_executor():
    closed = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    async def main():
        g = agen()
        assert await g.__anext__() == 1
        asyncio.get_running_loop()._keep = g    # stays alive until shutdown_asyncgens
        await asyncio.get_running_loop().run_in_executor(None, time.sleep, 0)

    run(main)            # Runner.close() runs shutdown_asyncgens, shutdown_default_executor
    assert closed == [True]


def test_shutdown_default_executor_waits_for_offloaded_calls():
    """A call left running when main() returns (fire and forget) finishes
    before the Runner closes the loop, as on asyncio (close() would abandon
    it); one whose future was cancelled while it ran is waited for too; and
    afterwards run_in_executor(None, ...) is refused."""
    done = []

    def job(tag, secs):
        time.sleep(secs)
        done.append(tag)

    async def main():
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, job, "left running", 0.3)
        cancelled = loop.run_in_executor(None, job, "cancelled while running", 0.3)
        await asyncio.sleep(0.05)
        cancelled.cancel()
        await loop.shutdown_default_executor()
        assert sorted(done) == ["cancelled while running", "left running"]
        with pytest.raises(RuntimeError, match="shutdown"):
            loop.run_in_executor(None, job, "too late", 0)
        return True

    assert run(main)


def test_an_executor_call_cancelled_at_once_does_not_hold_up_the_shutdown():
    """Cancelled before its green thread took a step (so none of its code
    ran): the call used to stay counted, and the Runner's
    shutdown_default_executor (no timeout on 3.11) waited for ever."""
    async def main():
        asyncio.get_running_loop().run_in_executor(None, time.sleep, 0).cancel()
        return True

    assert _bounded_run(main)


def _bounded_run(coro_fn):
    box = {}
    th = threading.Thread(target=lambda: box.setdefault("r", run(coro_fn)), daemon=True)
    th.start()
    th.join(BOUND)
    assert not th.is_alive(), f"the loop did not close within {BOUND} s"
    return box["r"]


def test_run_in_executor_from_another_os_thread():
    """Not thread-safe by asyncio's letter, but it works on asyncio's loop
    (the executor's future wakes the loop thread-safely): on ours too."""
    async def main():
        loop = asyncio.get_running_loop()
        box = {}
        th = threading.Thread(target=lambda: box.setdefault(
            "f", loop.run_in_executor(None, lambda: 42)))
        th.start()
        th.join()
        return await box["f"]

    assert run(main) == 42


@pytest.mark.parametrize("what", ["call_later", "stop"])
def test_a_green_thread_beside_the_parked_loop_schedules_a_timer_or_stops_it(what):
    """call_later (an earlier deadline than the park's) and stop() from a
    green thread beside the parked loop wake it; before, the loop slept on
    until its next event (here a fallback timer 10 s later)."""
    loop = osvrt.new_event_loop()
    fired = []

    def start():
        async def green():
            await osvrt.sleep(0.05)              # the loop is parked by now
            if what == "stop":
                loop.stop()
            else:
                loop.call_later(0.05, lambda: (fired.append(True), loop.stop()))
        osvrt.spawn(green)
    loop.call_soon(start)
    late = []                                   # the park's timeout: a fallback
    fallback = loop.call_later(10, lambda: (late.append(True), loop.stop()))
    try:
        loop.run_forever()
    finally:
        fallback.cancel()
        loop.close()
    assert late == [], f"the green thread's {what} did not wake the parked loop"
    assert fired == ([True] if what == "call_later" else [])


def test_closing_a_loop_from_inside_another_running_loop():
    """close() of a finished osvrt loop from a task of another osvrt loop
    (or asyncio's __del__ closing an unclosed one in a GC pass there): the
    running loop goes on.  Before, the closed loop's worker ran nested on
    this thread and left it with no current worker: the loop never resumed."""
    other = osvrt.new_event_loop()
    other.run_until_complete(asyncio.sleep(0))

    async def main():
        other.close()
        for _ in range(10):
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        return other.is_closed()

    assert run(main)


def test_close_stops_the_runtime_and_its_worker():
    loop = osvrt.new_event_loop()
    loop.run_until_complete(asyncio.sleep(0.01))
    rt = loop.runtime
    workers = [rt.loop_worker.os_thread]
    loop.close()
    assert all(not th.is_alive() for th in workers)
    assert loop.is_closed()
    with pytest.raises(RuntimeError, match="closed"):
        loop.run_forever()


_UNCLOSED_AT_EXIT = """
import asyncio, gc, os, osvrt
GC
async def forever():
    try:
        await osvrt.sleep(3600)
    finally:
        os.write(1, b"cleaned up\\n")
async def main(green):
    if green:
        osvrt.spawn(forever)
    await asyncio.sleep(0)
loop = osvrt.new_event_loop(CPUS)
loop.run_until_complete(main(GREEN))
os.write(1, b"end\\n")
"""


@pytest.mark.parametrize("cpus", ["", "cpus=2"])
@pytest.mark.parametrize("gc_off", [False, True])
@pytest.mark.parametrize("green", [False, True])
def test_an_unclosed_loop_lets_the_interpreter_exit(green, gc_off, cpus):
    # Left unclosed, the loop was closed by asyncio's __del__ in the last GC
    # pass of finalization, whose Runtime stop started a thread: none can
    # start then, and exit hung.  A green thread left running kept the loop
    # alive instead, and its cleanup never ran.  The Runtime now stops at
    # exit; the loop is still reported as asyncio reports an unclosed loop.
    if cpus and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    import subprocess
    script = (_UNCLOSED_AT_EXIT.replace("GC", "gc.disable()" if gc_off else "")
              .replace("CPUS", cpus).replace("GREEN", str(green)))
    proc = subprocess.run([sys.executable, "-P", "-W", "always::ResourceWarning", "-c", script],
                          capture_output=True, timeout=BOUND * 4)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    # Python 3.12.0 and 3.12.1 start no thread at exit, and Runtime.stop needs one
    cleanup = green and sys.version_info[:3] not in ((3, 12, 0), (3, 12, 1))
    assert proc.stdout == (b"end\ncleaned up\n" if cleanup else b"end\n")
    assert b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")
    if not green:
        assert b"ResourceWarning: unclosed event loop" in proc.stderr


def test_keyboard_interrupt_in_a_callback_leaves_run_forever():
    loop = osvrt.new_event_loop()
    try:
        loop.call_soon(_raise_kbi)
        with pytest.raises(KeyboardInterrupt):
            loop.run_forever()
        assert not loop.is_running()
        # and the loop runs again afterwards
        assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"
    finally:
        loop.close()


def _raise_kbi():
    raise KeyboardInterrupt


def test_run_forever_from_a_green_thread_is_refused():
    loop = osvrt.new_event_loop()
    try:
        async def green():
            with pytest.raises(RuntimeError, match="green thread"):
                loop.run_forever()
            return True

        assert osvrt.run(green, cpus=1)
    finally:
        loop.close()


def test_cpu_option_pins_the_loop():
    cpu = sorted(os.sched_getaffinity(0))[-1]

    async def main():
        return osvrt.current().cpu

    assert run(main, cpu=cpu) == cpu
    # A bad cpu is refused at once, and leaves no half-made loop behind (its
    # __del__ used to raise AttributeError: no _closed).
    unraisable = []
    old_hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        with pytest.raises(ValueError, match="10000"):
            osvrt.new_event_loop(cpu=10_000)
        gc.collect()
    finally:
        sys.unraisablehook = old_hook
    assert unraisable == []


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is 3.12+")
def test_asyncio_run_with_loop_factory():
    async def main():
        return type(asyncio.get_running_loop())

    assert asyncio.run(main(), loop_factory=osvrt.new_event_loop) is OsvrtEventLoop


_IDLE_FOREVER = """
import asyncio, os, sys, osvrt
async def main():
    os.write(1, b"ready\\n")
    await asyncio.Event().wait()          # idle: no timer, no ready callback
MODE
"""


@pytest.mark.parametrize("mode", ["runner", "run_forever", "after_a_removed_handler"])
def test_ctrl_c_reaches_an_idle_loop(mode):
    # The worker sleeps in epoll_wait with nothing to do; Python runs signal
    # handlers only in bytecode.  The loop's self-pipe is the wakeup fd, so
    # Ctrl-C wakes the worker and the handler runs (Runner's: it cancels
    # main; the default one: KeyboardInterrupt out of run_forever).
    body = {"runner": "with asyncio.Runner(loop_factory=osvrt.new_event_loop) as r:\n"
                      "    r.run(main())",
            "run_forever": "loop = osvrt.new_event_loop()\nloop.create_task(main())\n"
                           "try:\n    loop.run_forever()\nfinally:\n    loop.close()",
            # asyncio clears the wakeup fd when its last signal handler goes
            "after_a_removed_handler":
                "import signal\n"
                "async def first():\n"
                "    loop = asyncio.get_running_loop()\n"
                "    loop.add_signal_handler(signal.SIGUSR1, print)\n"
                "    loop.remove_signal_handler(signal.SIGUSR1)\n"
                "    await main()\n"
                "with asyncio.Runner(loop_factory=osvrt.new_event_loop) as r:\n"
                "    r.run(first())"}[mode]
    import subprocess
    proc = subprocess.Popen([sys.executable, "-P", "-c", _IDLE_FOREVER.replace("MODE", body)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(0.2)                       # let the loop go idle
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=BOUND)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert b"KeyboardInterrupt" in err, err.decode(errors="replace")


def test_one_loop_per_cpu_with_reuse_port_listeners():
    # The per-core pattern: a loop per CPU, each in its own OS thread with its
    # own Runtime, each with a reuse_port listener on the same port.
    cpus = sorted(os.sched_getaffinity(0))[:2]
    port_box, ready, stop = [], threading.Barrier(len(cpus) + 1), threading.Event()
    served = {c: 0 for c in cpus}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    errors = []

    def serve(cpu):
        async def main():
            loop = asyncio.get_running_loop()

            async def handle(r, w):
                served[cpu] += 1
                w.write(str(cpu).encode() + b"\n")
                await w.drain()
                w.close()

            srv = await asyncio.start_server(handle, "127.0.0.1", port, reuse_port=True)
            ready.wait(BOUND)
            while not stop.is_set():
                await asyncio.sleep(0.01)
            srv.close()
            await srv.wait_closed()
            return loop.runtime.cpus

        try:
            with asyncio.Runner(loop_factory=lambda: osvrt.new_event_loop(cpu=cpu)) as r:
                port_box.append(r.run(asyncio.wait_for(main(), BOUND)))
        except BaseException as e:       # reported by the test below
            errors.append(e)
            ready.abort()

    threads = [threading.Thread(target=serve, args=(c,)) for c in cpus]
    for th in threads:
        th.start()
    try:
        ready.wait(BOUND)
        answers = []
        for _ in range(40):
            with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as s:
                answers.append(int(s.makefile().readline()))
    finally:
        stop.set()
        for th in threads:
            th.join(BOUND)
    assert not errors, errors
    assert sorted(port_box) == [(c,) for c in cpus]
    assert set(answers) <= set(cpus) and len(answers) == 40
    assert sum(served.values()) == 40
    if len(cpus) > 1:
        assert all(n > 0 for n in served.values()), served    # the kernel spread them


def test_close_does_not_wait_for_a_running_executor_call(caplog):
    # close() joined the offload pool for up to the runtime stop's 5 s;
    # asyncio's close() shuts its executor down with wait=False.  The pool
    # says which way it stopped: a call abandoned at once is reported at
    # INFO, one abandoned after the stop's wait at WARNING.
    release = threading.Event()
    loop = osvrt.new_event_loop()
    try:
        async def main():
            loop.run_in_executor(None, release.wait, 30)
            await asyncio.sleep(0.05)
        loop.run_until_complete(main())
    finally:
        with caplog.at_level(logging.INFO, logger="osvrt"):
            loop.close()
        release.set()
    abandoned = [r for r in caplog.records if "still running at stop, abandoned" in r.getMessage()]
    assert [r.levelno for r in abandoned] == [logging.INFO], caplog.text


def test_debug_call_soon_names_the_callers_frame():
    # In debug mode the handle's source traceback ended in osvrt's own
    # call_soon (asyncio drops its own frame, not ours).
    async def main():
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        h = loop.call_soon(int)
        return h._source_traceback[-1][0]

    with asyncio.Runner(loop_factory=osvrt.new_event_loop) as r:
        assert r.run(main()) == __file__


def test_green_threads_cleanup_may_use_to_thread_when_the_loop_closes():
    # close() closed the offload pool before the runtime's stop cancelled the
    # green threads: their cleanup's to_thread raised "the runtime is stopping".
    log = []

    async def green():
        try:
            await osvrt.sleep(30)
        finally:
            log.append(await osvrt.to_thread(lambda: "flushed"))

    async def main():
        await asyncio.get_running_loop().run_in_executor(None, int)   # the pool exists
        osvrt.spawn(green)
        await asyncio.sleep(0.05)

    with asyncio.Runner(loop_factory=osvrt.new_event_loop) as r:
        r.run(main())
    assert log == ["flushed"]
