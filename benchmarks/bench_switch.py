"""One-way context switch: an Event ping-pong between two parties.

One-way switch = elapsed / (2 x round trips); extra_info["ns_per_switch"] is
the median over rounds of the figure each round measured for itself (loop,
runtime and thread start-up are outside it for the Python peers; the C peers
include their two pthread_create calls, negligible over the round trips).

Groups:
- switch-colocated: both parties pinned to one CPU.  osvrt: two green
  threads spawned with cpu=c on a Runtime(cpus=2) that runs for the whole
  module; peers: C futex word and C mutex+condvar (two pthreads pinned to
  that CPU), asyncio Event and Future hand-off, uvloop Future hand-off and
  Event, trio lowlevel park/reschedule, gevent Event (one OS thread, so
  colocated by nature), threading.Condition and threading.Event (two Python
  threads pinned to that CPU).
- switch-apart: the parties on two different CPUs.  osvrt: green threads
  pinned to CPUs 0 and 1; peers: C futex, C mutex+condvar, C pure spin (the
  floor), threading.Event.

Targets (BENCHMARKS.md), read from the JSON, never asserted:
- colocated: osvrt <= 1/3 of C futex colocated
  (extra_info["ratio_vs_c_futex_colocated"] <= 0.333) and faster than the
  uvloop Future hand-off (extra_info["ratio_vs_uvloop_future"] < 1);
- apart: osvrt <= 1/10 of C futex apart (extra_info["ratio_vs_c_futex_apart"]
  <= 0.1).
The ratio_vs_* figures come from rounds that alternate with the peer (the
peer runs untimed just before each osvrt round); every peer also has its own
row in the group.
"""
import pytest

from osvrt.bench import peers

COLOCATED_N = 20_000          # round trips
APART_N = 3_000               # cross-CPU switches are ~10-50 us
UNIT = "ns_per_switch"


def completed(n):
    def check(r):
        assert r["a"] == n and r["b"] == n, f"ping-pong did not complete {n} round trips: {r}"
    return check


# (module to import or None, runner(n, cpu_a, cpu_b)) -- colocated peers
COLOCATED_PEERS = {
    "c_futex": (None, lambda n, a, b: peers.c_pingpong("futex", a, a, n)),
    "c_condvar": (None, lambda n, a, b: peers.c_pingpong("condvar", a, a, n)),
    "asyncio_event": (None, lambda n, a, b: peers.asyncio_event_pingpong(n)),
    "asyncio_future": (None, lambda n, a, b: peers.asyncio_future_pingpong(n)),
    "uvloop_future": ("uvloop", lambda n, a, b: peers.asyncio_future_pingpong(n, "uvloop")),
    "uvloop_event": ("uvloop", lambda n, a, b: peers.asyncio_event_pingpong(n, "uvloop")),
    "trio_park": ("trio", lambda n, a, b: peers.trio_park_pingpong(n)),
    "gevent_event": ("gevent", lambda n, a, b: peers.gevent_event_pingpong(n)),
    "threading_condition": (None, lambda n, a, b: peers.threading_condition_pingpong(n, a, a)),
    "threading_event": (None, lambda n, a, b: peers.threading_event_pingpong(n, a, a)),
}

APART_PEERS = {
    "c_futex": lambda n, a, b: peers.c_pingpong("futex", a, b, n),
    "c_condvar": lambda n, a, b: peers.c_pingpong("condvar", a, b, n),
    "c_spin": lambda n, a, b: peers.c_pingpong("spin", a, b, n),
    "threading_event": lambda n, a, b: peers.threading_event_pingpong(n, a, b),
}


def _uvloop_or_none():
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return None
    return "uvloop"


@pytest.mark.benchmark(group="switch-colocated")
def bench_colocated_osvrt(benchmark, measure, size, osvrt_rt):
    n = size(COLOCATED_N)
    c = osvrt_rt.cpus[0]
    paired = {"c_futex_colocated": lambda: COLOCATED_PEERS["c_futex"][1](n, c, c)}
    if _uvloop_or_none():
        paired["uvloop_future"] = lambda: COLOCATED_PEERS["uvloop_future"][1](n, c, c)
    measure(lambda: osvrt_rt.run(peers.osvrt_event_pingpong, n, c, c), unit=UNIT,
            paired=paired, check=completed(n), round_trips=n, cpus=[c, c])


@pytest.mark.benchmark(group="switch-colocated")
@pytest.mark.parametrize("peer", list(COLOCATED_PEERS))
def bench_colocated_peer(benchmark, measure, size, cpus, peer):
    module, runner = COLOCATED_PEERS[peer]
    if module:
        pytest.importorskip(module)
    n = size(COLOCATED_N)
    c = cpus[0]
    measure(lambda: runner(n, c, c), unit=UNIT, check=completed(n), round_trips=n)


@pytest.mark.benchmark(group="switch-apart")
def bench_apart_osvrt(benchmark, measure, size, osvrt_rt):
    if len(osvrt_rt.cpus) < 2:
        pytest.skip("needs two CPUs")
    n = size(APART_N)
    a, b = osvrt_rt.cpus[0], osvrt_rt.cpus[1]
    measure(lambda: osvrt_rt.run(peers.osvrt_event_pingpong, n, a, b), unit=UNIT, rounds=7,
            paired={"c_futex_apart": lambda: APART_PEERS["c_futex"](n, a, b)},
            check=completed(n), round_trips=n, cpus=[a, b])


@pytest.mark.benchmark(group="switch-apart")
@pytest.mark.parametrize("peer", list(APART_PEERS))
def bench_apart_peer(benchmark, measure, size, two_cpus, peer):
    n = size(APART_N * 10 if peer == "c_spin" else APART_N)
    a, b = two_cpus
    measure(lambda: APART_PEERS[peer](n, a, b), unit=UNIT, rounds=7, check=completed(n),
            round_trips=n)
