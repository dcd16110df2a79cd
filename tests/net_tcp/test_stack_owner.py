"""The user stack's one owner (tcp.h: one OS thread calls the engine): the
engine and the link are only ever touched from the stack's worker, also
when aclose() lingers while the balancer moves threads, when a caller's move
to the stack's CPU is cancelled, and when the garbage collector closes a
forgotten Stream in the middle of the stack's own work."""
import gc
import socket
import threading
import time

import osvrt
import osvrt.net
from osvrt import kernel

from tcp_support import T, run_stack

PORT = 7000


def _hold_connection(topo, seconds, rcvbuf=None):
    """A kernel client in the peer namespace that connects and reads nothing
    for `seconds` (in a daemon thread)."""
    def client():
        s = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            s.connect((topo.stack_ip, PORT))
            time.sleep(seconds)
        finally:
            s.close()
    threading.Thread(target=lambda: topo.in_peer(client), daemon=True).start()


def test_aclose_lingering_stays_on_the_stacks_cpu(topo):
    """An unpinned closer lingers while the stack's CPU is busy: the
    balancer moved the sleeping closer to the idle CPU, and the reset and
    the link's close ran on the worker it woke on."""
    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        seen = {}
        reset_all = stack._reset_all

        def recorded_reset_all():
            seen["reset on"] = kernel.current_worker().cpu_id
            reset_all()
        stack._reset_all = recorded_reset_all
        listener = await stack.tcp_listen(PORT)
        _hold_connection(topo, 4, rcvbuf=4096)
        stream, _ = await listener.accept()
        await stream.sendall(b"x" * 200_000)       # unacknowledged: the linger waits
        stop = []

        async def hog():                             # the stack's CPU stays busy
            while not stop:
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < 0.002:
                    pass
                await kernel.yield_now()
        hogs = [osvrt.spawn(hog, cpu=stack.cpu) for _ in range(2)]

        async def closer():
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 0.05:  # some runtime: the balancer may move it
                pass
            await stack.aclose(linger=1.0)
        await osvrt.spawn(closer).join()            # unpinned: the balancer may move it
        stop.append(True)
        for h in hogs:
            await h.join()
        return seen, stack.cpu

    seen, cpu = run_stack(topo, main, cpus=2)
    assert seen == {"reset on": cpu}


def test_a_cancelled_move_to_the_stacks_cpu_leaves_no_pin(topo):
    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        listener = await stack.tcp_listen(PORT)
        _hold_connection(topo, 3)
        stream, _ = await listener.accept()

        async def caller():
            me = kernel.current()
            me.unpin()                               # spawned pinned; a plain thread now
            try:
                with osvrt.timeout(0):               # expires during the move
                    await stream.recv()
            except TimeoutError:
                pass
            return me.pinned
        try:
            return await osvrt.spawn(caller, cpu=1 - stack.cpu).join()
        finally:
            stream.close()
            await stack.aclose()

    assert run_stack(topo, main, cpus=2) is False


def test_a_stream_collected_inside_the_stacks_work_loses_no_event(topo):
    """A Stream the application dropped unclosed, in a reference cycle, is
    collected while the stack dispatches the events of a link call (the
    collector can run at any allocation there).  Its close must not call the
    engine then: that refilled the view under the dispatch, the listener's
    ACCEPTABLE event was lost, and accept() parked forever."""
    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        listener = await stack.tcp_listen(PORT)
        _hold_connection(topo, T)
        garbage, _ = await listener.accept()
        cycle = [garbage]
        cycle.append(cycle)
        del garbage, cycle
        dispatch = stack._dispatch_events
        armed = []

        def dispatch_after_a_collection():
            if armed and stack._words[stack._nevents]:
                armed.clear()
                gc.collect()                         # what the collector may do here
            dispatch()
        stack._dispatch_events = dispatch_after_a_collection
        gc.disable()                                 # the cycle waits for our collection
        try:
            acceptor = osvrt.spawn(listener.accept, cpu=stack.cpu)
            await osvrt.sleep(0.05)
            armed.append(True)
            _hold_connection(topo, T)
            with osvrt.timeout(10):
                stream, _ = await acceptor.join()
            collected = not armed
        finally:
            gc.enable()
            await stack.aclose()
        return collected, stream.closed

    collected, closed = run_stack(topo, main)
    assert collected
    assert closed                                    # aclose closed it

