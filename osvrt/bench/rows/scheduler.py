"""The scheduler rows: switches (colocated, apart), spawn + join, memory per
parked thread, the foreign-thread wake, and the C pushlist."""
import contextlib

from .. import peers
from ..catalog import row
from ..measure import Contender, Measure, Target, Unavailable
from ._common import all_done, answered, completed, run_in, started_runtime, runtime_and_echo


@row("switch_colocated", order=10, full={"colocated": 40_000}, quick={"colocated": 10_000})
def switch_colocated(cpus, s):
    c = cpus[0]
    n = s["colocated"]
    done = completed(n)
    return Measure(
        "switch_colocated", "switch, colocated", "ns", "lower",
        Contender("osvrt", "osvrt Event ping-pong, two green threads pinned to one CPU",
                  lambda rt: run_in(rt, peers.osvrt_event_pingpong, n, c, c), check=done),
        [Contender("c_futex", "C pthreads, futex word",
                   lambda rt: peers.c_pingpong("futex", c, c, n), check=done),
         Contender("c_mutex", "C pthreads, mutex + condvar",
                   lambda rt: peers.c_pingpong("condvar", c, c, n), check=done),
         Contender("threading", "threading.Condition, two threads pinned to one CPU",
                   lambda rt: peers.threading_condition_pingpong(n, c, c), check=done),
         Contender("asyncio", "asyncio Future hand-off",
                   lambda rt: peers.asyncio_future_pingpong(n), check=done),
         Contender("uvloop", "uvloop Future hand-off",
                   lambda rt: peers.asyncio_future_pingpong(n, "uvloop"), check=done,
                   requires="uvloop"),
         Contender("trio", "trio lowlevel park/reschedule",
                   lambda rt: peers.trio_park_pingpong(n), check=done, requires="trio"),
         Contender("gevent", "gevent Event ping-pong",
                   lambda rt: peers.gevent_event_pingpong(n), check=done, requires="gevent")],
        targets=[Target("c_futex", "<=", 1 / 3, "<= 1/3 of C futex"),
                 Target("uvloop", "<=", 0.5, "<= 1/2 of uvloop")],
        setup=lambda: started_runtime(cpus), weight=24, sizes={"round_trips": n, "cpu": c},
        notes="ns per one-way switch = elapsed / (2 x round trips)")


@row("switch_apart", order=20, full={"apart": 8_000}, quick={"apart": 2_000})
def switch_apart(cpus, s):
    c = cpus[0]
    na = s["apart"]
    done_a = completed(na)
    a, b = (cpus[0], cpus[1]) if len(cpus) > 1 else (c, None)

    @contextlib.contextmanager
    def apart_setup():
        if b is None:
            raise Unavailable(f"needs 2 CPUs; running on {list(cpus)}")
        with started_runtime(cpus) as rt:
            yield rt

    return Measure(
        "switch_apart", "switch, apart", "ns", "lower",
        Contender("osvrt", "osvrt Event ping-pong, green threads pinned to two CPUs",
                  lambda rt: run_in(rt, peers.osvrt_event_pingpong, na, a, b), check=done_a),
        [Contender("c_futex", "C pthreads on two CPUs, futex word",
                   lambda rt: peers.c_pingpong("futex", a, b, na), check=done_a),
         Contender("c_mutex", "C pthreads on two CPUs, mutex + condvar",
                   lambda rt: peers.c_pingpong("condvar", a, b, na), check=done_a),
         Contender("threading", "threading.Event, two threads pinned to two CPUs",
                   lambda rt: peers.threading_event_pingpong(na, a, b), check=done_a)],
        # 1/3 under the GIL (a cross-CPU switch needs a GIL hand-off); the
        # 1/10 is the target for a free-threaded build
        targets=[Target("c_futex", "<=", 1 / 3, "<= 1/3 of C futex")],
        setup=apart_setup, weight=16, sizes={"round_trips": na, "cpus": [a, b]},
        notes="ns per one-way switch = elapsed / (2 x round trips)")


@row("spawn_join", order=30, full={"spawn": 5_000, "spawn_threads": 2_000},
     quick={"spawn": 5_000, "spawn_threads": 1_000})
def spawn_join(cpus, s):
    ns, nt = s["spawn"], s["spawn_threads"]
    return Measure(
        "spawn_join", "spawn + join", "tasks/s", "higher",
        Contender("osvrt", "osvrt.spawn + Thread.join of no-op green threads",
                  lambda rt: run_in(rt, peers.osvrt_spawn_join, ns), key="per_s",
                  check=all_done(ns)),
        [Contender("asyncio", "create_task + await", lambda rt: peers.asyncio_spawn_join(ns),
                   key="per_s", check=all_done(ns)),
         Contender("uvloop", "create_task + await on uvloop",
                   lambda rt: peers.asyncio_spawn_join(ns, "uvloop"), key="per_s",
                   check=all_done(ns), requires="uvloop"),
         Contender("trio", "nursery.start_soon", lambda rt: peers.trio_spawn_join(ns),
                   key="per_s", check=all_done(ns), requires="trio"),
         Contender("gevent", "gevent.spawn + joinall", lambda rt: peers.gevent_spawn_join(ns),
                   key="per_s", check=all_done(ns), requires="gevent"),
         Contender("threading", "threading.Thread start + join",
                   lambda rt: peers.threading_spawn_join(nt), key="per_s",
                   check=all_done(nt))],
        targets=[Target("asyncio", ">=", 5.0, ">= 5x asyncio")],
        setup=lambda: started_runtime(cpus), weight=7,
        sizes={"tasks": ns, "threading_tasks": nt})


@row("memory", order=40, full={"memory": 20_000, "memory_threads": 2_000},
     quick={"memory": 10_000, "memory_threads": 1_000})
def memory(cpus, s):
    nm, nmt = s["memory"], s["memory_threads"]

    def mem(peer, k):
        return lambda ctx: peers.memory_in_subprocess(peer, k)

    return Measure(
        "memory", "memory / parked thread", "bytes", "lower",
        Contender("osvrt", "green thread parked on an osvrt.Event (Runtime(cpus=1))",
                  mem("osvrt", nm), key="bytes_per_task"),
        [Contender("asyncio", "Task parked on an asyncio.Event", mem("asyncio", nm),
                   key="bytes_per_task"),
         Contender("uvloop", "Task parked on uvloop", mem("uvloop", nm),
                   key="bytes_per_task", requires="uvloop"),
         Contender("trio", "trio task parked on a trio.Event", mem("trio", nm),
                   key="bytes_per_task", requires="trio"),
         Contender("gevent", "greenlet parked on a gevent Event", mem("gevent", nm),
                   key="bytes_per_task", requires="gevent"),
         Contender("threading", "threading.Thread parked on a threading.Event",
                   mem("threading", nmt), key="bytes_per_task")],
        targets=[Target("asyncio", "<=", 0.5, "<= 1/2 of asyncio")],
        weight=38, sizes={"tasks": nm, "threading_tasks": nmt},
        notes="RSS growth / tasks, each peer in a fresh interpreter")


@row("foreign_wake", order=50, full={"wake": 5_000}, quick={"wake": 2_000})
def foreign_wake(cpus, s):
    nw = s["wake"]
    return Measure(
        "foreign_wake", "foreign-thread wake", "us", "lower",
        Contender("osvrt", "rt.run(async no-op) from the main thread",
                  lambda ctx: peers.osvrt_submit_round_trips(ctx[0], nw, "run"), scale=1e-3,
                  check=answered(nw)),
        [Contender("threading", "threading.Event round trip to a second Python thread",
                   lambda ctx: ctx[1].round_trips(nw), scale=1e-3, check=answered(nw))],
        targets=[Target("threading", "<=", 0.5, "<= 1/2 of threading.Event")],
        setup=lambda: runtime_and_echo(cpus), weight=6, sizes={"round_trips": nw},
        notes="microseconds per round trip")


@row("pushlist", order=60, full={"queue": 1_000_000}, quick={"queue": 300_000})
def pushlist(cpus, s):
    nq = s["queue"]
    return Measure(
        "pushlist", "pushlist 2P+1C", "ns/item", "lower",
        Contender("osvrt", "osvrt's lock-free MPSC pushlist (C)",
                  lambda ctx: peers.c_queue("pushlist", 2, nq)),
        [Contender("c_mutex", "a FIFO under a pthread mutex (C)",
                   lambda ctx: peers.c_queue("mutex", 2, nq))],
        # The 2-CPU target of the benchmarks' table; its ">= 5x" is for 8+
        # producers on 16 CPUs, which this row (2 producers) does not run.
        targets=[Target("c_mutex", "<=", 0.5, ">= 2x a mutex queue on 2 CPUs")],
        weight=2, sizes={"producers": 2, "items_per_producer": nq})
