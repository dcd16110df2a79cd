"""Spawn + run + join of trivial tasks: N tasks that return at once are
started, then joined one by one; extra_info["tasks_per_s"] = N / elapsed
(median over rounds), measured inside the loop/runtime so its start-up is
not counted.

Group spawn: osvrt (osvrt.spawn + Thread.join, unpinned, so on the spawner's
CPU, inside a Runtime(cpus=2) that runs for the whole module), also with
balance=False (the same runtime without the balancer and idle pull, which
move the spawned threads to the other CPU so that every join becomes a
cross-CPU wake-up), against
asyncio (create_task + await), uvloop (same), trio (nursery.start_soon),
gevent (gevent.spawn + joinall) and threading.Thread (start + join, smaller N).

Target (BENCHMARKS.md): osvrt >= 5x asyncio, i.e.
extra_info["ratio_vs_asyncio"] (osvrt tasks/s / asyncio tasks/s, measured in
alternating rounds) >= 5.
"""
import pytest

from osvrt.bench import peers
from osvrt.bench.peers import runtime

# 5,000, not more: with the balancer on, osvrt's spawn+join rate falls off a
# cliff above ~1,000 tasks (~300k/s at 1,000, ~3k/s at 5,000, ~1.5k/s at
# 10,000: the idle CPU pulls the new threads and each join is a cross-CPU
# wake-up), so a larger N would take minutes per round.
N = 5_000
THREADS_N = 2_000
UNIT = "tasks_per_s"

PEERS = {
    "asyncio": (None, N, lambda n: peers.asyncio_spawn_join(n)),
    "uvloop": ("uvloop", N, lambda n: peers.asyncio_spawn_join(n, "uvloop")),
    "trio": ("trio", N, peers.trio_spawn_join),
    "gevent": ("gevent", N, peers.gevent_spawn_join),
    "threading": (None, THREADS_N, peers.threading_spawn_join),
}


def all_done(n):
    def check(r):
        assert r["done"] == n, f"{r['done']} of {n} tasks ran"
    return check


@pytest.mark.benchmark(group="spawn")
def bench_spawn_osvrt(benchmark, measure, size, osvrt_rt):
    n = size(N)
    measure(lambda: osvrt_rt.run(peers.osvrt_spawn_join, n), unit=UNIT, key="per_s",
            better="higher", check=all_done(n), tasks=n,
            paired={"asyncio": lambda: peers.asyncio_spawn_join(n)})


@pytest.fixture(scope="module")
def osvrt_rt_no_balance():
    yield from runtime(2, balance=False)


@pytest.mark.benchmark(group="spawn")
def bench_spawn_osvrt_no_balance(benchmark, measure, size, osvrt_rt_no_balance):
    n = size(N)
    measure(lambda: osvrt_rt_no_balance.run(peers.osvrt_spawn_join, n), unit=UNIT, key="per_s",
            better="higher", check=all_done(n), tasks=n, balance=False,
            paired={"asyncio": lambda: peers.asyncio_spawn_join(n)})


@pytest.mark.benchmark(group="spawn")
@pytest.mark.parametrize("peer", list(PEERS))
def bench_spawn_peer(benchmark, measure, size, peer):
    module, full, runner = PEERS[peer]
    if module:
        pytest.importorskip(module)
    n = size(full)
    measure(lambda: runner(n), unit=UNIT, key="per_s", better="higher", check=all_done(n),
            tasks=n)
