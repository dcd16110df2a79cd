"""Wake from a foreign OS thread: the round trip from the main thread into
the runtime and back.

Group submit (extra_info["ns_per_round_trip"], median over rounds):
- osvrt rt.run(async no-op) from the main thread (submit to the least loaded
  CPU, its worker runs the green thread, the Future wakes the caller);
- osvrt rt.submit(async no-op).result(), unpinned and pinned (cpu=first CPU);
- threading.Event round trip: the main thread sets a request Event, a second
  Python thread waiting on it answers by setting a response Event.
Both sides are OS threads that block and are woken, as in the osvrt case.

Target (BENCHMARKS.md): osvrt <= 1/2 of the threading.Event round trip, i.e.
extra_info["ratio_vs_threading_event"] (from alternating rounds) <= 0.5.
"""
import pytest

from osvrt.bench import peers

N = 2_000
UNIT = "ns_per_round_trip"


def answered(n):
    def check(r):
        assert r["answered"] == n, f"{r['answered']} of {n} round trips answered"
    return check


@pytest.fixture(scope="module")
def echo():
    e = peers.EventEcho()
    yield e
    e.close()


@pytest.mark.benchmark(group="submit")
@pytest.mark.parametrize("how", ["run", "submit", "submit_pinned"])
def bench_submit_osvrt(benchmark, measure, size, osvrt_rt, echo, how):
    n = size(N)
    measure(lambda: peers.osvrt_submit_round_trips(osvrt_rt, n, how), unit=UNIT,
            check=answered(n),
            paired={"threading_event": lambda: echo.round_trips(n)}, round_trips=n)


@pytest.mark.benchmark(group="submit")
def bench_submit_threading_event(benchmark, measure, size, echo):
    n = size(N)
    measure(lambda: echo.round_trips(n), unit=UNIT, check=answered(n), round_trips=n)
