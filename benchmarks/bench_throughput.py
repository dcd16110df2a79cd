"""Aggregate switch throughput with 1 vs 2 busy workers.

K pairs of green threads ping-pong on osvrt Events, M round trips each (both
threads of a pair pinned to one CPU, so every wake-up is local); all pairs
are released together and joined.  extra_info["switches_per_s"] = 2*K*M /
elapsed (median over rounds).

Group throughput:
- 1 worker: Runtime(cpus=1), every pair on its one CPU;
- 2 workers: Runtime(cpus=2), pair i pinned to CPU i % 2.
Under the GIL the two busy workers share one interpreter lock, so this shows
whether adding a CPU makes the same workload slower.

Target (DESIGN.md, "The GIL"): adding a CPU must never make a workload
slower: extra_info["ratio_vs_1_worker"] (2-worker switches/s / 1-worker
switches/s, from alternating rounds) >= 1.
"""
import pytest

from osvrt.bench import peers

PAIRS = 4
ROUND_TRIPS = 5_000       # per pair
UNIT = "switches_per_s"


def completed(k, m):
    def check(r):
        assert r["round_trips"] == k * m, f"{r['round_trips']} of {k * m} round trips completed"
    return check


@pytest.mark.benchmark(group="throughput")
def bench_throughput_1_worker(benchmark, measure, size, osvrt_rt1):
    m = size(ROUND_TRIPS)
    cpus = osvrt_rt1.cpus
    measure(lambda: osvrt_rt1.run(peers.osvrt_pairs, PAIRS, m, cpus), unit=UNIT, key="per_s",
            better="higher", check=completed(PAIRS, m), pairs=PAIRS, round_trips=m,
            workers=len(cpus))


@pytest.mark.benchmark(group="throughput")
def bench_throughput_2_workers(benchmark, measure, size, osvrt_rt, osvrt_rt1):
    if len(osvrt_rt.cpus) < 2:
        pytest.skip("needs two CPUs")
    m = size(ROUND_TRIPS)
    cpus, one = osvrt_rt.cpus, osvrt_rt1.cpus
    measure(lambda: osvrt_rt.run(peers.osvrt_pairs, PAIRS, m, cpus), unit=UNIT, key="per_s",
            better="higher", check=completed(PAIRS, m), pairs=PAIRS, round_trips=m,
            workers=len(cpus), rounds=7,
            paired={"1_worker": lambda: osvrt_rt1.run(peers.osvrt_pairs, PAIRS, m, one)})
