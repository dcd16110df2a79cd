"""Workloads: osvrt's and its peers', each one measured round.

Every workload returns a dict with the per-unit figure it measured itself
(``ns`` per one-way switch, per round trip or per item; ``per_s`` for rates;
``bytes_per_task`` for memory) and the counts a caller checks (did the
ping-pong complete, did every task run).  Timing is taken inside the workload
with time.perf_counter_ns(), so the start-up of a loop or a runtime is not
counted.  The C peers live in csrc/bench/peers.c and are called through
osvrt.bench._peers.lib: no compiler is needed at run time.

Used by ``python -m osvrt bench`` (osvrt.bench.cli) and by the pytest-benchmark
suites in benchmarks/.

The memory workloads run in a fresh interpreter each (memory_in_subprocess),
so one peer's heap never pollutes another's.
"""
import gc
import json
import os
import subprocess
import sys
import threading
import time

_now = time.perf_counter_ns


def _done(ns_total, units, **counts):
    return dict(ns=ns_total / units if units else 0.0, **counts)


def _rate(n, dt_ns, **counts):
    return dict(per_s=n * 1e9 / dt_ns if dt_ns else 0.0, ns=dt_ns / n if n else 0.0, **counts)


# ---------------------------------------------------------------------------
# osvrt runtimes

def stop_runtime(rt, timeout=5):
    """Stop rt, giving idle workers a moment to reach their sleep first."""
    time.sleep(0.005)
    rt.stop(timeout=timeout)


def runtime(ncpus, **options):
    """A started osvrt.Runtime(cpus=ncpus, **options) (fewer CPUs if this process
    has fewer), stopped at the end: a generator, for module-scoped fixtures
    (`yield from runtime(2)`)."""
    import osvrt
    rt = osvrt.Runtime(cpus=min(ncpus, len(os.sched_getaffinity(0))), **options).start()
    try:
        yield rt
    finally:
        stop_runtime(rt)


# ---------------------------------------------------------------------------
# osvrt workloads (coroutine functions: run them with rt.run(fn, ...))

def _event_sides(ping, pong, n, count):
    """The two sides of an Event ping-pong, n round trips; the same code runs
    on osvrt's and asyncio's Events (same API), so both measure one shape."""
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

    return a, b


def _blocking_event_sides(ping, pong, n, count):
    """_event_sides for blocking Events (gevent's, threading's): the same turn."""
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

    return a, b


async def osvrt_event_pingpong(n, cpu_a, cpu_b):
    """Two green threads pinned to cpu_a / cpu_b hand a turn back and forth
    over two osvrt Events, n round trips."""
    import osvrt
    ping, pong = osvrt.Event(), osvrt.Event()
    count = [0, 0]

    a, b = _event_sides(ping, pong, n, count)
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
    return _rate(n, _now() - t0, done=sum(t.done() for t in ts))


async def osvrt_pairs(k, m, cpus):
    """k pairs ping-pong m round trips each on osvrt Events; pair i is pinned
    (both its threads) to cpus[i % len(cpus)].  Returns total switches/s."""
    import osvrt
    counts = [0] * k
    start = osvrt.Event()

    def pair(i):
        ping, pong = osvrt.Event(), osvrt.Event()

        async def a():
            await start.wait()
            for _ in range(m):
                ping.set()
                await pong.wait()
                pong.clear()
            counts[i] += m

        async def b():
            await start.wait()
            for _ in range(m):
                await ping.wait()
                ping.clear()
                pong.set()
            counts[i] += m
        return a, b

    ts = []
    for i in range(k):
        a, b = pair(i)
        c = cpus[i % len(cpus)]
        ts.append(osvrt.spawn(b, cpu=c))
        ts.append(osvrt.spawn(a, cpu=c))
    await osvrt.sleep(0.005)          # let every thread reach the gate
    t0 = _now()
    start.set()
    for t in ts:
        await t.join()
    switches = 2 * k * m
    return dict(_rate(switches, _now() - t0), round_trips=sum(counts) // 2)


async def _osvrt_seven():
    return 7


def osvrt_submit_round_trips(rt, n, how="run"):
    """n round trips from this (foreign) OS thread into rt and back: rt.run(),
    rt.submit().result(), or submit pinned to rt's first CPU."""
    if how not in ("run", "submit", "submit_pinned"):
        raise ValueError(f"how={how!r}: one of run, submit, submit_pinned")
    ok = 0
    t0 = _now()
    if how == "run":
        for _ in range(n):
            ok += rt.run(_osvrt_seven) == 7
    elif how == "submit":
        for _ in range(n):
            ok += rt.submit(_osvrt_seven).result() == 7
    else:
        cpu = rt.cpus[0]
        for _ in range(n):
            ok += rt.submit(_osvrt_seven, cpu=cpu).result() == 7
    return _done(_now() - t0, n, answered=ok)


# ---------------------------------------------------------------------------
# C peers (csrc/bench/peers.c)

def c_pingpong(kind, cpu_a, cpu_b, n):
    """Two pthreads pinned to cpu_a / cpu_b hand a turn over n round trips;
    kind: "futex" (a futex word), "condvar" (mutex + condvar, OSv's own test
    shape) or "spin" (pure spin on an atomic: the floor)."""
    from osvrt.bench._peers import lib
    fn = {"futex": lib.osvrt_peer_futex_pingpong, "condvar": lib.osvrt_peer_condvar_pingpong,
          "spin": lib.osvrt_peer_spin_pingpong}[kind]
    ns = fn(cpu_a, cpu_b, n)
    if ns <= 0 and n:
        raise RuntimeError(f"C {kind} ping-pong failed (returned {ns})")
    return dict(ns=ns, a=n, b=n)


def c_queue(kind, producers, per_producer):
    """`producers` pthreads push per_producer items each to one consumer pthread
    that takes batches: kind "pushlist" (osvrt's lock-free MPSC list) or
    "mutex" (a FIFO under a pthread mutex).  ns per item."""
    from osvrt.bench._peers import lib
    k = {"pushlist": lib.OSVRT_PEER_PUSHLIST, "mutex": lib.OSVRT_PEER_MUTEX_QUEUE}[kind]
    ns = lib.osvrt_peer_queue(k, producers, per_producer)
    if ns < 0:
        raise RuntimeError(f"C {kind} queue lost, duplicated or reordered items")
    return dict(ns=ns, items=producers * per_producer)


# ---------------------------------------------------------------------------
# asyncio / uvloop

def _run_loop(kind, coro_fn, *args):
    if kind == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    elif kind == "asyncio":
        import asyncio
        loop = asyncio.new_event_loop()
    else:
        raise ValueError(f"kind={kind!r}: asyncio or uvloop")
    try:
        return loop.run_until_complete(coro_fn(*args))
    finally:
        loop.close()


async def aio_event_pingpong(n):
    import asyncio
    ping, pong = asyncio.Event(), asyncio.Event()
    count = [0, 0]

    a, b = _event_sides(ping, pong, n, count)
    loop = asyncio.get_running_loop()
    t0 = _now()
    tb = loop.create_task(b())
    ta = loop.create_task(a())
    await ta
    await tb
    return _done(_now() - t0, 2 * n, a=count[0], b=count[1])


async def aio_future_pingpong(n):
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
    return _run_loop(kind, aio_event_pingpong, n)


def asyncio_future_pingpong(n, kind="asyncio"):
    return _run_loop(kind, aio_future_pingpong, n)


async def _aio_nop():
    return None


async def aio_spawn_join(n):
    import asyncio
    create = asyncio.get_running_loop().create_task
    t0 = _now()
    ts = [create(_aio_nop()) for _ in range(n)]
    for t in ts:
        await t
    return _rate(n, _now() - t0, done=sum(t.done() for t in ts))


def asyncio_spawn_join(n, kind="asyncio"):
    return _run_loop(kind, aio_spawn_join, n)


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
        return _rate(n, _now() - t0, done=done[0])

    return trio.run(main)


# ---------------------------------------------------------------------------
# gevent

def gevent_event_pingpong(n):
    import gevent
    from gevent.event import Event
    ping, pong = Event(), Event()
    count = [0, 0]

    a, b = _blocking_event_sides(ping, pong, n, count)
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
    return _rate(n, _now() - t0, done=done[0])


# ---------------------------------------------------------------------------
# threading (OS threads running Python)

def _pinned(fn, cpu):
    def run(*args):
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        fn(*args)
    return run


def _run_threads(threads):
    t0 = _now()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return _now() - t0


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

    dt = _run_threads([threading.Thread(target=_pinned(side, c), args=(i,))
                       for i, c in ((1, cpu_b), (0, cpu_a))])
    return _done(dt, 2 * n, a=count[0], b=count[1])


def threading_event_pingpong(n, cpu_a=None, cpu_b=None):
    ping, pong = threading.Event(), threading.Event()
    count = [0, 0]

    a, b = _blocking_event_sides(ping, pong, n, count)
    dt = _run_threads([threading.Thread(target=_pinned(b, cpu_b)),
                       threading.Thread(target=_pinned(a, cpu_a))])
    return _done(dt, 2 * n, a=count[0], b=count[1])


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
    return _rate(n, _now() - t0, done=len(done))


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
        return _done(_now() - t0, n, answered=self.answered - before)

    def close(self):
        self.stop = True
        self.req.set()
        self.thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------
# UDP request/response: osvrt.bench.net's echo servers and its C client (which
# holds no GIL, so each server has the interpreter to itself), placed as
# benchmarks/bench_udp.py places them on two CPUs: the client on the first,
# the server (the osvrt worker, or the Python thread) on the second, the
# osvrt classifier beside the client, not polling.

UDP_WORKER_SPIN_US = 200


def udp_unavailable():
    """None if osvrt.net can run here, else why not (a sentence)."""
    try:
        import osvrt.net  # noqa: F401
        from osvrt.bench import frames, net  # noqa: F401
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    ok, why = frames.can_open_packet_socket()
    return None if ok else f"needs CAP_NET_RAW ({why})"


def udp_osvrt_round(n, window, client_cpu, server_cpu, warm=200, extras=False):
    """One osvrt round: a fresh Runtime on the server CPU and its classifier,
    an echo green thread on a net channel, `warm` then n transactions from
    the C client with `window` in flight; the runtime stops before any peer
    round.  The dict of osvrt.bench.net.rr: ns, per_s, p50_ns, p99_ns, done,
    lost; with extras, also the classifier's CPU share and the net counters
    wakes_sent and ring_dropped."""
    import osvrt
    import osvrt.net
    from osvrt.bench import net as nb
    rt = osvrt.Runtime(cpus=[server_cpu], idle_spin_us=UDP_WORKER_SPIN_US).start()
    try:
        # drain="thread": the thread measured here never hands the ring over
        osvrt.net.configure(rt, cpu=client_cpu, spin_us=0, drain="thread")
        server = nb.OsvrtEchoServer(rt, cpu=server_cpu)
        try:
            if warm:
                nb.rr(server.addr, warm, window=window, cpu=client_cpu)
            c0, t0 = nb.cpu_seconds_of_thread("osvrt-net"), time.perf_counter()
            r = nb.rr(server.addr, n, window=window, cpu=client_cpu)
            if extras:
                r["classifier_cpu_pct"] = 100 * (nb.cpu_seconds_of_thread("osvrt-net") - c0) / (
                    time.perf_counter() - t0)
                net = rt.stats()["net"]
                r["wakes_sent"] = net["wakes_sent"]
                r["ring_dropped"] = net["dropped"]["ring"]
            return r
        finally:
            server.close()
    finally:
        stop_runtime(rt)


def udp_peer_round(server, n, window, client_cpu, warm=200):
    """The same transactions against a peer echo server (osvrt.bench.net)."""
    from osvrt.bench import net as nb
    if warm:
        nb.rr(server.addr, warm, window=window, cpu=client_cpu)
    return nb.rr(server.addr, n, window=window, cpu=client_cpu)


def udp_thread_server(server_cpu):
    """A kernel UDP socket served by a Python thread pinned to server_cpu."""
    from osvrt.bench import net as nb
    return nb.ThreadEchoServer(cpu=server_cpu)


# ---------------------------------------------------------------------------
# Memory per parked task: RSS growth while n tasks each wait on an Event.
# Each runs in a fresh interpreter (memory_in_subprocess): it warms up with a
# small batch, reads /proc/self/statm, parks n tasks, reads it again once all
# are parked, then releases and joins them.

_WARM = 100


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _measure_sync(batch, n, warm=_WARM):
    batch(warm)
    gc.collect()
    before = _rss()
    after, parked = batch(n)
    return before, after, parked


async def _measure_async(batch, n, warm=_WARM):
    await batch(warm)
    gc.collect()
    before = _rss()
    after, parked = await batch(n)
    return before, after, parked


def _parked_batch(event, spawn, join, settle=None):
    """batch(k) for osvrt's and asyncio's tasks (one shape): park k tasks on
    an Event, read the RSS, release them and join them.  settle(), if
    given, is awaited after the last task parked, before the reading."""
    async def batch(k):
        release, parked = event(), event()
        count = [0]

        async def waiter():
            count[0] += 1
            if count[0] == k:
                parked.set()
            await release.wait()

        ts = [spawn(waiter) for _ in range(k)]
        await parked.wait()
        if settle is not None:
            await settle()
        rss = _rss()
        release.set()
        for t in ts:
            await join(t)
        return rss, count[0]
    return batch


def _mem_osvrt(n):
    import osvrt

    batch = _parked_batch(osvrt.Event, osvrt.spawn, lambda t: t.join())
    rt = osvrt.Runtime(cpus=1).start()
    try:
        return rt.run(_measure_async, batch, n)
    finally:
        stop_runtime(rt)


def _mem_asyncio(n, kind="asyncio"):
    import asyncio

    batch = _parked_batch(asyncio.Event,
                          lambda fn: asyncio.get_running_loop().create_task(fn()),
                          lambda t: t,
                          lambda: asyncio.sleep(0))   # the last waiter reaches its wait
    return _run_loop(kind, _measure_async, batch, n)


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

    return trio.run(_measure_async, batch, n)


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

    return _measure_sync(batch, n)


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

    return _measure_sync(batch, n, warm=min(_WARM, 20))


MEMORY_PEERS = {
    "osvrt": _mem_osvrt,
    "asyncio": _mem_asyncio,
    "uvloop": lambda n: _mem_asyncio(n, "uvloop"),
    "trio": _mem_trio,
    "gevent": _mem_gevent,
    "threading": _mem_threading,
}


def memory_child(peer, n):
    """Run in the child: park n tasks of `peer`; the figures as a dict."""
    before, after, parked = MEMORY_PEERS[peer](n)
    return dict(peer=peer, n=n, parked=parked, rss_before=before, rss_after=after,
                bytes_per_task=(after - before) / n)


def _child_env():
    # The child must import this very osvrt (an in-place checkout as well as
    # an installed one).
    import osvrt
    root = os.path.dirname(os.path.dirname(os.path.abspath(osvrt.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def memory_in_subprocess(peer, n, timeout=120):
    """Bytes per parked task of `peer` (a key of MEMORY_PEERS), measured in a
    fresh interpreter; the child's dict, with bytes_per_task and parked."""
    if peer not in MEMORY_PEERS:
        raise ValueError(f"peer={peer!r}: one of {sorted(MEMORY_PEERS)}")
    code = ("import json, sys; from osvrt.bench.peers import memory_child; "
            "print(json.dumps(memory_child(sys.argv[1], int(sys.argv[2]))))")
    # -P: never the current directory first on sys.path (a source checkout's
    # osvrt/, without the built extension, would shadow the installed one).
    proc = subprocess.run([sys.executable, "-P", "-c", code, peer, str(int(n))], capture_output=True,
                          text=True, env=_child_env(), timeout=timeout)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"memory child for {peer} failed: {tail[0]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    if r["parked"] != n:
        raise RuntimeError(f"{peer}: only {r['parked']} of {n} tasks parked")
    return r
