"""Shared fixtures for the benchmark suites (see /work/shared/BENCHMARKS.md).

Two modes:
- benchmarking (the default): every benchmark runs its full size for several
  rounds and records its per-unit figure (ns per switch, tasks/s, bytes per
  task, ns per item) in benchmark.extra_info, so the saved JSON
  (--benchmark-json) carries the unit figures and the osvrt/peer ratios;
- quick (`pytest --benchmark-disable`, the project's test command): every
  benchmark runs its code once at a tiny size, so the suites never rot.

Speed is never asserted; what was measured is (round trips completed, tasks
run, nothing lost).

`measure(fn, unit=..., paired={...})` runs fn once per round under
benchmark.pedantic.  With `paired`, each peer in it runs once just before
every osvrt round (in pedantic's untimed setup), so osvrt and the peer that
its target is stated against ALTERNATE, and the per-round ratios
osvrt/peer are recorded: extra_info["ratio_vs_<peer>"] is the median of
them.  The peer also has its own benchmark row in the same group.
"""
import os
import statistics

import pytest

from osvrt.bench.peers import runtime

SMALL = 200


def _quick(config):
    return bool(config.getoption("benchmark_disable", default=False))


@pytest.fixture(scope="session")
def quick(request):
    """True when benchmarks are disabled: run once, tiny sizes."""
    return _quick(request.config)


@pytest.fixture(scope="session")
def size(quick):
    """size(full, small=200): the workload size for this mode."""
    def size(full, small=SMALL):
        return min(small, full) if quick else full
    return size


@pytest.fixture(scope="session")
def cpus():
    """The CPU ids this process may use, sorted."""
    return sorted(os.sched_getaffinity(0))


@pytest.fixture
def two_cpus(cpus):
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    return cpus[0], cpus[1]


@pytest.fixture(scope="module")
def osvrt_rt():
    """A started osvrt.Runtime(cpus=2) (fewer if the machine has fewer), one
    per module, so runtime start-up is never measured."""
    yield from runtime(2)


@pytest.fixture(scope="module")
def osvrt_rt1():
    """A started osvrt.Runtime(cpus=1), one per module."""
    yield from runtime(1)


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


class Measure:
    def __init__(self, benchmark, quick):
        self.benchmark = benchmark
        self.quick = quick

    def __call__(self, fn, *, unit, key="ns", rounds=5, warmup=1, paired=None, check=None,
                 scale=1.0, better="lower", **extra):
        """Run fn() once per round; fn returns a dict whose `key` item (times
        `scale`) is this round's per-unit figure, recorded under `unit`.
        check(result) asserts a round's correctness.  paired: {name: peer_fn}
        run before every round (untimed), alternating with fn."""
        paired = paired or {}
        own, others = [], {name: [] for name in paired}
        results = []

        def setup():
            for name, peer in paired.items():
                r = peer()
                if check is not None:
                    check(r)
                others[name].append(r[key] * scale)

        def run():
            r = fn()
            if check is not None:
                check(r)
            results.append(r)
            own.append(r[key] * scale)
            return r

        self.benchmark.pedantic(run, setup=setup if paired else None,
                                rounds=1 if self.quick else rounds,
                                warmup_rounds=0 if self.quick else warmup)
        keep = len(own) if self.quick else rounds       # drop the warm-up rounds
        own = own[-keep:]
        info = self.benchmark.extra_info
        info[unit] = _median(own)
        info[unit + "_rounds"] = own
        info["better"] = better
        info.update(extra)
        for name, values in others.items():
            values = values[-keep:]
            info[f"{name}_{unit}"] = _median(values)
            ratios = [a / b for a, b in zip(own, values) if b]
            info[f"ratio_vs_{name}"] = _median(ratios)
            info[f"ratio_vs_{name}_rounds"] = ratios
        return results[-1]


@pytest.fixture
def measure(benchmark, quick):
    """measure(fn, unit="ns_per_switch", paired={...}, check=...); see Measure."""
    return Measure(benchmark, quick)
