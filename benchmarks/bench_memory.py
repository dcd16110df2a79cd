"""Memory per parked task: RSS growth per task while N tasks each wait on an
Event, measured in a fresh interpreter per peer and round
(osvrt.bench.peers.memory_in_subprocess), so one peer's heap never pollutes
another's.  The child warms up with
a small batch, reads /proc/self/statm, parks N tasks, reads it again once
all are parked, then releases and joins them.
extra_info["bytes_per_task"] = (RSS after - RSS before) / N, median of rounds.

Group memory: osvrt (green threads on a Runtime(cpus=1)) against asyncio,
uvloop, trio and gevent (N tasks each) and threading.Thread (fewer).

Target (BENCHMARKS.md): osvrt <= 1/2 of asyncio's per-task memory, i.e.
extra_info["ratio_vs_asyncio"] (osvrt bytes / asyncio bytes, from children
run alternately) <= 0.5.
"""
import pytest

from osvrt.bench.peers import memory_in_subprocess as child

N = 20_000
THREADS_N = 2_000
ROUNDS = 3
UNIT = "bytes_per_task"

PEERS = {
    "asyncio": (None, N),
    "uvloop": ("uvloop", N),
    "trio": ("trio", N),
    "gevent": ("gevent", N),
    "threading": (None, THREADS_N),
}


@pytest.mark.benchmark(group="memory")
def bench_memory_osvrt(benchmark, measure, size):
    n = size(N)
    measure(lambda: child("osvrt", n), unit=UNIT, key="bytes_per_task", rounds=ROUNDS, warmup=0,
            paired={"asyncio": lambda: child("asyncio", n)}, tasks=n)


@pytest.mark.benchmark(group="memory")
@pytest.mark.parametrize("peer", list(PEERS))
def bench_memory_peer(benchmark, measure, size, peer):
    module, full = PEERS[peer]
    if module:
        pytest.importorskip(module)
    n = size(full)
    measure(lambda: child(peer, n), unit=UNIT, key="bytes_per_task", rounds=ROUNDS, warmup=0,
            tasks=n)
