"""The fair rule: unit tests of osvrt.fair against the decayed-runtime
integral, and the scheduler's fairness between CPU hogs."""
import math
import time

import pytest

import osvrt
from osvrt import fair

TAU = 0.2            # OSv's tau; fair.TAU must agree


def integral_R(schedule, p, t_end=None, steps=4000):
    """R(t) = integral of p * run(s) * exp(-(t - s)/tau) ds, by Simpson's rule
    over each run interval (computed here independently of osvrt.fair).
    schedule: [(running: bool, seconds)], starting at s = 0."""
    t = 0.0
    runs = []
    for running, dt in schedule:
        if running:
            runs.append((t, t + dt))
        t += dt
    t_end = t if t_end is None else t_end
    total = 0.0
    for a, b in runs:
        h = (b - a) / steps
        f = lambda s: p * math.exp(-(t_end - s) / TAU)
        acc = f(a) + f(b)
        for k in range(1, steps):
            acc += (4 if k % 2 else 2) * f(a + k * h)
        total += acc * h / 3
    return total


def simulate(schedule, p, c0=1.0, r2=0.0):
    """Drive osvrt.fair through `schedule` as a worker does: the normalizer
    advances with every interval, the thread is charged for the ones it ran."""
    c = c0
    for running, dt in schedule:
        cn = fair.advance(c, dt)
        if running:
            r2 = fair.charge(r2, p, c, cn)
        c = cn
    return r2, c


SCHEDULES = {
    "run-100ms": [(True, 0.1)],
    "run-then-sleep": [(True, 0.05), (False, 0.3)],
    "alternating": [(True, 0.01), (False, 0.01)] * 25,
    "sleep-then-run": [(False, 0.4), (True, 0.2)],
    "long-mixed": [(True, 0.3), (False, 0.1), (True, 0.02), (False, 0.5), (True, 0.07)],
}


def test_tau_is_osvs():
    assert fair.TAU == TAU


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("p", [1.0, 2.0, 1e-5, 86.0])
def test_true_runtime_matches_the_integral(name, p):
    schedule = SCHEDULES[name]
    r2, c = simulate(schedule, p)
    expected = integral_R(schedule, p)
    assert fair.true_runtime(r2, c) == pytest.approx(expected, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_result_does_not_depend_on_the_starting_normalizer(name):
    schedule = SCHEDULES[name]
    r2a, ca = simulate(schedule, 1.0, c0=1.0)
    r2b, cb = simulate(schedule, 1.0, c0=12345.678)
    assert fair.true_runtime(r2a, ca) == pytest.approx(fair.true_runtime(r2b, cb), rel=1e-9)


def test_charging_in_one_piece_or_many_is_the_same():
    whole, c1 = simulate([(True, 0.1)], 1.0)
    pieces, c2 = simulate([(True, 0.001)] * 100, 1.0)
    assert c1 == pytest.approx(c2, rel=1e-12)
    assert fair.true_runtime(whole, c1) == pytest.approx(fair.true_runtime(pieces, c2), rel=1e-9)


def test_a_sleeper_decays_by_e_every_tau():
    r2, c = simulate([(True, 0.1)], 1.0)
    before = fair.true_runtime(r2, c)
    c_later = fair.advance(c, TAU)            # another thread runs for tau
    assert fair.true_runtime(r2, c_later) == pytest.approx(before / math.e, rel=1e-12)


def test_priority_scales_runtime():
    s = SCHEDULES["long-mixed"]
    r1, c1 = simulate(s, 1.0)
    r2, c2 = simulate(s, 2.0)
    assert fair.true_runtime(r2, c2) == pytest.approx(2 * fair.true_runtime(r1, c1), rel=1e-12)


def test_advance_is_exponential_in_elapsed_time():
    assert fair.advance(1.0, TAU) == pytest.approx(math.e, rel=1e-12)
    assert fair.advance(3.0, 0.0) == 3.0
    assert fair.advance(2.0, 0.05) == pytest.approx(2.0 * math.exp(0.25), rel=1e-12)


@pytest.mark.parametrize("head, cur, p, c", [
    (10.0, 4.0, 1.0, 1.0),
    (10.0, 4.0, 2.0, 1.0),
    (5e3, 1e3, 1.0, 1e4),
    (1.0, 0.999, 0.5, 3.0),
    (1e18, 0.0, 1e-5, 1e17),
])
def test_time_until_makes_the_two_runtimes_meet(head, cur, p, c):
    dt = fair.time_until(head, cur, p, c)
    assert dt > 0
    cn = fair.advance(c, dt)                  # the current thread runs for dt
    assert fair.charge(cur, p, c, cn) == pytest.approx(head, rel=1e-9)
    # and not before: half of dt leaves it strictly below the head
    half = fair.advance(c, dt / 2)
    assert fair.charge(cur, p, c, half) < head
    assert dt == pytest.approx(TAU * math.log(1 + (head - cur) / (p * c)), rel=1e-12)


@pytest.mark.parametrize("head, cur", [(4.0, 4.0), (4.0, 10.0)])
def test_time_until_is_zero_when_already_past(head, cur):
    assert fair.time_until(head, cur, 1.0, 1.0) == 0.0


@pytest.mark.parametrize("c1, c2", [(1.0, 1.0), (1.0, 1e6), (5e12, 3.0), (2.0 ** 62, 1.5)])
def test_export_import_round_trip_between_normalizers(c1, c2):
    r2, c = simulate(SCHEDULES["long-mixed"], 1.0, c0=c1)
    R = fair.true_runtime(r2, c)
    moved = fair.import_runtime(fair.export_runtime(r2, c), c2)
    assert fair.true_runtime(moved, c2) == pytest.approx(R, rel=1e-12)
    back = fair.import_runtime(fair.export_runtime(moved, c2), c)
    assert back == pytest.approx(r2, rel=1e-12)
    # after the move it decays on the new CPU exactly as it would have at home
    assert fair.true_runtime(moved, fair.advance(c2, 0.1)) == pytest.approx(
        fair.true_runtime(r2, fair.advance(c, 0.1)), rel=1e-12)


def test_renormalized():
    f = fair.RENORM_FACTOR
    assert fair.RENORM_LIMIT == 2.0 ** 63
    assert f == 2.0 ** -126
    assert fair.renormalized(123.0, 0) == 123.0
    assert fair.renormalized(123.0, 1) == 123.0 * f
    assert fair.renormalized(123.0, 2) == 0.0
    assert fair.renormalized(123.0, 7) == 0.0
    # one renormalization scales c and R'' alike: R is unchanged
    r2, c = 3.0e20, 2.0 ** 64
    assert fair.true_runtime(fair.renormalized(r2, 1), c * f) == pytest.approx(
        fair.true_runtime(r2, c), rel=1e-12)


def test_priority_of_nice():
    assert fair.priority_of_nice(0) == 1.0
    assert fair.priority_of_nice(20) == pytest.approx(86.0, rel=1e-12)
    assert fair.priority_of_nice(-20) == pytest.approx(1 / 86.0, rel=1e-12)


# ---- the scheduler's fairness ----------------------------------------------------

def _work(us):
    end = time.perf_counter() + us * 1e-6
    while time.perf_counter() < end:
        pass


async def _hog(deadline):
    """Loop: ~50 us of work, then yield; return the time this green thread ran.
    It is measured as the fair rule charges it (monotonic wall-clock time
    from resume to trap, docs/design.md), so time the OS takes the worker away
    for other processes counts alike for everyone and cannot skew it."""
    used = 0.0
    clock = time.perf_counter
    while time.monotonic() < deadline:
        t0 = clock()
        _work(50)
        used += clock() - t0
        await osvrt.yield_now()
    return used


def _run_hogs(rt, priorities, seconds):
    c = rt.cpus[0]

    async def main():
        deadline = time.monotonic() + seconds
        ts = [osvrt.spawn(_hog, deadline, cpu=c, priority=p) for p in priorities]
        return [await t.join() for t in ts]

    return rt.submit(main, cpu=c).result(timeout=seconds + 20)


def test_equal_hogs_share_a_cpu_fairly(make_rt):
    rt = make_rt(cpus=1)
    # 0.95, not 1: a preemption of the worker by the host near the deadline is
    # charged to one hog with no turn left to even it out; an unfair split such
    # as 0.4/0.3/0.2/0.1 s scores 0.83.  Up to three tries, for a preemption
    # longer than that (0.4 s gave 0.68 once, load average 4.4): an unfair
    # scheduler fails every try.
    tries = []
    for _ in range(3):
        used = _run_hogs(rt, [1.0] * 4, 1.0)
        assert all(u > 0 for u in used), used
        tries.append((sum(used) ** 2 / (len(used) * sum(u * u for u in used)), used))
        if tries[-1][0] > 0.95:
            return
    pytest.fail(f"Jain's index of 4 equal hogs' CPU time <= 0.95 in every try "
                f"(index, per-hog seconds): {tries}")


def test_priorities_1_and_2_share_a_cpu_2_to_1(make_rt):
    rt = make_rt(cpus=1)
    # A host preemption of the worker near the deadline is charged to the hog
    # that held the CPU, with no turn left to even it out (a loaded host gave
    # 1.59 once and 4.5 once, load average 4.4), so up to three tries: ignored
    # priorities give about 1.0 and inverted ones 0.5 in every try.
    tries = []
    for _ in range(3):
        used = _run_hogs(rt, [1.0, 2.0], 1.2)
        tries.append((used[0] / used[1], used))
        if 1.4 <= tries[-1][0] <= 2.6:
            return
    pytest.fail(f"CPU time of priority 1 / priority 2 outside 1.4-2.6 in every try "
                f"(ratio, per-hog seconds): {tries}")
