"""Workloads for the benchmark suites: osvrt's and its pure-Python peers'.

Every function runs one measured round and returns a dict with the per-unit
figure it measured itself (``ns`` per one-way switch / per round trip, or
``per_s``) and the counts the caller asserts on (did the ping-pong complete,
did every task run).  Timing is taken inside the workload with
time.perf_counter_ns(), so the set-up of a loop or a runtime is not counted.

Run as a script, it is the child process of bench_memory.py:
    python peers.py memory <peer> <n>   -> prints one JSON line
"""
import json
import os
import sys
import threading
import time

_now = time.perf_counter_ns


def cpu_ids():
    return sorted(os.sched_getaffinity(0))


def _done(ns_total, units, **counts):
    return dict(ns=ns_total / units if units else 0.0, **counts)


# ---------------------------------------------------------------------------
# osvrt workloads (coroutine functions: run them with rt.run(fn, ...))

async def osvrt_event_pingpong(n, cpu_a, cpu_b):
    """Two green threads pinned to cpu_a / cpu_b hand a turn back and forth
    over two osvrt Events, n round trips."""
    import osvrt
    ping, pong = osvrt.Event(), osvrt.Event()
    count = [0, 0]

    async def a():
        for _ in range(n):
            ping.set()
            await pong.wait()
            pong.clear()
            count[0] += 1

    async def b():
        for _ in range(n):
            await ping.wait()
            ping.clear()
            pong.set()
            count[1] += 1

    t0 = _now()
    tb = osvrt.spawn(b, cpu=cpu_b)
    ta = osvrt.spawn(a, cpu=cpu_a)
    await ta.join()
    await tb.join()
    return _done(_now() - t0, 2 * n, a=count[0], b=count[1])


async def _osvrt_nop():
    return None


async def osvrt_spawn_join(n):
    """Spawn n trivial green threads, then join them all."""
    import osvrt
    spawn = osvrt.spawn
    t0 = _now()
    ts = [spawn(_osvrt_nop) for _ in range(n)]
    for t in ts:
        await t.join()
    dt = _now() - t0
    return dict(per_s=n * 1e9 / dt, ns=dt / n, done=sum(t.done() for t in ts))


async def osvrt_pairs(k, m, cpus):
    """k pairs ping-pong m round trips each on osvrt Events; pair i is pinned
    (both its threads) to cpus[i % len(cpus)].  Returns total switches/s."""
    import osvrt
    counts = [0] * k

    def pair(i):
        ping, pong = osvrt.Event(), osvrt.Event()

        async def a():
            for _ in range(m):
                ping.set()
                await pong.wait()
                pong.clear()
            counts[i] += m

        async def b():
            for _ in range(m):
                await ping.wait()
                ping.clear()
                pong.set()
            counts[i] += m
        return a, b

    start = osvrt.Event()
    ts = []
    for i in range(k):
        a, b = pair(i)
        c = cpus[i % len(cpus)]

        async def gated(fn):
            await start.wait()
            await fn()
        ts.append(osvrt.spawn(gated, b, cpu=c))
        ts.append(osvrt.spawn(gated, a, cpu=c))
    await osvrt.sleep(0.005)          # let every thread reach the gate
    t0 = _now()
    start.set()
    for t in ts:
        await t.join()
    dt = _now() - t0
    switches = 2 * k * m
    return dict(per_s=switches * 1e9 / dt, ns=dt / switches, round_trips=sum(counts) // 2)


# ---------------------------------------------------------------------------
# asyncio / uvloop

def _run_loop(loop_factory, coro_fn, *args):
    loop = loop_factory()
    try:
        return loop.run_until_complete(coro_fn(*args))
    finally:
        loop.close()


def asyncio_loop_factory(kind):
    if kind == "uvloop":
        import uvloop
        return uvloop.new_event_loop
    import asyncio
    return asyncio.new_event_loop


async def _aio_event_pingpong(n):
    import asyncio
    ping, pong = asyncio.Event(), asyncio.Event()
    count = [0, 0]

    async def a():
        for _ in range(n):
            ping.set()
            await pong.wait()
            pong.clear()
            count[0] += 1

    async def b():
        for _ in range(n):
            await ping.wait()
            ping.clear()
            pong.set()
            count[1] += 1

    loop = asyncio.get_running_loop()
    t0 = _now()
    tb = loop.create_task(b())
    ta = loop.create_task(a())
    await ta
    await tb
    return _done(_now() - t0, 2 * n, a=count[0], b=count[1])


async def _aio_future_pingpong(n):
    """Each side waits on a fresh Future that the other side resolves."""
    import asyncio
    loop = asyncio.get_running_loop()
    box = {}
    count = [0, 0]

    async def b():
        for _ in range(n):
            f = box["b"] = loop.create_future()
            await f
            count[1] += 1
            box["a"].set_result(None)

    async def a():
        for _ in range(n):
            f = box["a"] = loop.create_future()
            box["b"].set_result(None)
            await f
            count[0] += 1

    t0 = _now()
    tb = loop.create_task(b())
    await asyncio.sleep(0)            # b is now waiting on its first future
    ta = loop.create_task(a())
    await ta
    await tb
    return _done(_now() - t0, 2 * n, a=count[0], b=count[1])


def asyncio_event_pingpong(n, kind="asyncio"):
    return _run_loop(asyncio_loop_factory(kind), _aio_event_pingpong, n)


def asyncio_future_pingpong(n, kind="asyncio"):
    return _run_loop(asyncio_loop_factory(kind), _aio_future_pingpong, n)


async def _aio_nop():
    return None


async def _aio_spawn_join(n):
    import asyncio
    loop = asyncio.get_running_loop()
    create = loop.create_task
    t0 = _now()
    ts = [create(_aio_nop()) for _ in range(n)]
    for t in ts:
        await t
    dt = _now() - t0
    return dict(per_s=n * 1e9 / dt, ns=dt / n, done=sum(t.done() for t in ts))


def asyncio_spawn_join(n, kind="asyncio"):
    return _run_loop(asyncio_loop_factory(kind), _aio_spawn_join, n)


# ---------------------------------------------------------------------------
# trio

def trio_park_pingpong(n):
    """trio.lowlevel: each side parks with wait_task_rescheduled and the other
    side reschedules it."""
    import trio
    from trio import lowlevel as ll
    count = [0, 0]
    tasks = {}

    def abort(_):
        return ll.Abort.FAILED

    async def a():
        tasks["a"] = ll.current_task()
        for _ in range(n):
            ll.reschedule(tasks["b"])
            await ll.wait_task_rescheduled(abort)
            count[0] += 1

    async def main():
        tasks["b"] = ll.current_task()
        t0 = _now()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a)      # runs only once b (this task) parks
            for _ in range(n):
                await ll.wait_task_rescheduled(abort)
                count[1] += 1
                ll.reschedule(tasks["a"])
        return _done(_now() - t0, 2 * n, a=count[0], b=count[1])

    return trio.run(main)


def trio_spawn_join(n):
    import trio
    done = [0]

    async def nop():
        done[0] += 1

    async def main():
        t0 = _now()
        async with trio.open_nursery() as nursery:
            start = nursery.start_soon
            for _ in range(n):
                start(nop)
        dt = _now() - t0
        return dict(per_s=n * 1e9 / dt, ns=dt / n, done=done[0])

    return trio.run(main)


# ---------------------------------------------------------------------------
# gevent

def gevent_event_pingpong(n):
    import gevent
    from gevent.event import Event
    ping, pong = Event(), Event()
    count = [0, 0]

    def a():
        for _ in range(n):
            ping.set()
            pong.wait()
            pong.clear()
            count[0] += 1

    def b():
        for _ in range(n):
            ping.wait()
            ping.clear()
            pong.set()
            count[1] += 1

    t0 = _now()
    gb = gevent.spawn(b)
    ga = gevent.spawn(a)
    gevent.joinall([ga, gb], raise_error=True)
    return _done(_now() - t0, 2 * n, a=count[0], b=count[1])


def gevent_spawn_join(n):
    import gevent
    done = [0]

    def nop():
        done[0] += 1

    spawn = gevent.spawn
    t0 = _now()
    gs = [spawn(nop) for _ in range(n)]
    gevent.joinall(gs, raise_error=True)
    dt = _now() - t0
    return dict(per_s=n * 1e9 / dt, ns=dt / n, done=done[0])


# ---------------------------------------------------------------------------
# threading (OS threads running Python)

def _pinned(fn, cpu):
    def run(*args):
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        fn(*args)
    return run


def threading_condition_pingpong(n, cpu_a=None, cpu_b=None):
    cv = threading.Condition()
    turn = [0]
    count = [0, 0]

    def side(me):
        for _ in range(n):
            with cv:
                while turn[0] != me:
                    cv.wait()
                turn[0] = 1 - me
                cv.notify()
            count[me] += 1

    ths = [threading.Thread(target=_pinned(side, c), args=(i,))
           for i, c in ((1, cpu_b), (0, cpu_a))]
    t0 = _now()
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    return _done(_now() - t0, 2 * n, a=count[0], b=count[1])


def threading_event_pingpong(n, cpu_a=None, cpu_b=None):
    ping, pong = threading.Event(), threading.Event()
    count = [0, 0]

    def a():
        for _ in range(n):
            ping.set()
            pong.wait()
            pong.clear()
            count[0] += 1

    def b():
        for _ in range(n):
            ping.wait()
            ping.clear()
            pong.set()
            count[1] += 1

    ths = [threading.Thread(target=_pinned(b, cpu_b)), threading.Thread(target=_pinned(a, cpu_a))]
    t0 = _now()
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    return _done(_now() - t0, 2 * n, a=count[0], b=count[1])


def threading_spawn_join(n):
    done = []

    def nop():
        done.append(1)       # list.append is atomic under the GIL

    t0 = _now()
    ths = [threading.Thread(target=nop) for _ in range(n)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    dt = _now() - t0
    return dict(per_s=n * 1e9 / dt, ns=dt / n, done=len(done))


class EventEcho:
    """An OS thread that answers each request Event by setting a response
    Event: the threading.Event round trip that rt.run() is compared with."""

    def __init__(self):
        self.req = threading.Event()
        self.resp = threading.Event()
        self.stop = False
        self.answered = 0
        self.thread = threading.Thread(target=self._serve, name="bench-echo", daemon=True)
        self.thread.start()

    def _serve(self):
        req, resp = self.req, self.resp
        while True:
            req.wait()
            req.clear()
            if self.stop:
                return
            self.answered += 1
            resp.set()

    def round_trips(self, n):
        req, resp = self.req, self.resp
        before = self.answered
        t0 = _now()
        for _ in range(n):
            req.set()
            resp.wait()
            resp.clear()
        dt = _now() - t0
        return dict(ns=dt / n, answered=self.answered - before)

    def close(self):
        self.stop = True
        self.req.set()
        self.thread.join(5)


# ---------------------------------------------------------------------------
# memory per parked task: the child process of bench_memory.py

def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


_WARM = 100


def _mem_osvrt(n):
    import osvrt

    async def batch(k):
        release, parked = osvrt.Event(), osvrt.Event()
        count = [0]

        async def waiter():
            count[0] += 1
            if count[0] == k:
                parked.set()
            await release.wait()

        ts = [osvrt.spawn(waiter) for _ in range(k)]
        await parked.wait()
        rss = _rss()
        release.set()
        for t in ts:
            await t.join()
        return rss, count[0]

    async def main():
        await batch(_WARM)
        import gc
        gc.collect()
        before = _rss()
        after, parked = await batch(n)
        return before, after, parked

    return osvrt.run(main, cpus=1)


def _mem_asyncio(n, kind="asyncio"):
    import asyncio

    async def batch(k):
        release, parked = asyncio.Event(), asyncio.Event()
        count = [0]

        async def waiter():
            count[0] += 1
            if count[0] == k:
                parked.set()
            await release.wait()

        loop = asyncio.get_running_loop()
        ts = [loop.create_task(waiter()) for _ in range(k)]
        await parked.wait()
        await asyncio.sleep(0)         # the last waiter reaches its wait
        rss = _rss()
        release.set()
        for t in ts:
            await t
        return rss, count[0]

    async def main():
        await batch(_WARM)
        import gc
        gc.collect()
        before = _rss()
        after, parked = await batch(n)
        return before, after, parked

    return _run_loop(asyncio_loop_factory(kind), main)


def _mem_trio(n):
    import trio

    async def batch(k):
        release, parked = trio.Event(), trio.Event()
        count = [0]
        out = []

        async def waiter():
            count[0] += 1
            if count[0] == k:
                parked.set()
            await release.wait()

        async with trio.open_nursery() as nursery:
            for _ in range(k):
                nursery.start_soon(waiter)
            await parked.wait()
            await trio.sleep(0)
            out.append(_rss())
            release.set()
        return out[0], count[0]

    async def main():
        await batch(_WARM)
        import gc
        gc.collect()
        before = _rss()
        after, parked = await batch(n)
        return before, after, parked

    return trio.run(main)


def _mem_gevent(n):
    import gevent
    from gevent.event import Event

    def batch(k):
        release, parked = Event(), Event()
        count = [0]

        def waiter():
            count[0] += 1
            if count[0] == k:
                parked.set()
            release.wait()

        gs = [gevent.spawn(waiter) for _ in range(k)]
        parked.wait()
        gevent.sleep(0)
        rss = _rss()
        release.set()
        gevent.joinall(gs, raise_error=True)
        return rss, count[0]

    batch(_WARM)
    import gc
    gc.collect()
    before = _rss()
    after, parked = batch(n)
    return before, after, parked


def _mem_threading(n):
    def batch(k):
        release, parked = threading.Event(), threading.Event()
        lock = threading.Lock()
        count = [0]

        def waiter():
            with lock:
                count[0] += 1
                last = count[0] == k
            if last:
                parked.set()
            release.wait()

        ths = [threading.Thread(target=waiter) for _ in range(k)]
        for th in ths:
            th.start()
        parked.wait()
        time.sleep(0.01)
        rss = _rss()
        release.set()
        for th in ths:
            th.join()
        return rss, count[0]

    batch(min(_WARM, 20))
    import gc
    gc.collect()
    before = _rss()
    after, parked = batch(n)
    return before, after, parked


MEMORY_PEERS = {
    "osvrt": _mem_osvrt,
    "asyncio": _mem_asyncio,
    "uvloop": lambda n: _mem_asyncio(n, "uvloop"),
    "trio": _mem_trio,
    "gevent": _mem_gevent,
    "threading": _mem_threading,
}


def memory_child(peer, n):
    before, after, parked = MEMORY_PEERS[peer](n)
    return dict(peer=peer, n=n, parked=parked, rss_before=before, rss_after=after,
                bytes_per_task=(after - before) / n)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "memory":
        sys.exit("usage: peers.py memory <peer> <n>")
    print(json.dumps(memory_child(sys.argv[2], int(sys.argv[3]))))
