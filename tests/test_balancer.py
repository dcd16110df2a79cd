"""The load balancer: busy threads spawned on one CPU spread over both, an idle
CPU gets work quickly (idle pull), a balanced load stays balanced,
Runtime(balance=False) moves nothing, balance_policy="osv" moves one thread
per pass and still converges, and the migration counters add up.

Where threads are is sampled from the test's own OS thread (t.cpu), so the
sampling adds no green thread, and no load, to either CPU."""
import os
import time

import pytest

import osvrt

AVAILABLE = sorted(os.sched_getaffinity(0))
RESULT_TIMEOUT = 30
MIGRATION_KEYS = ("migrations_in", "migrations_out", "pull_requests", "pulls_served")

pytestmark = pytest.mark.skipif(len(AVAILABLE) < 2, reason="needs at least 2 CPUs")


@pytest.fixture
def runtimes():
    """make(**options) -> a started 2-CPU Runtime, stopped at teardown."""
    made = []

    def make(**options):
        r = osvrt.Runtime(cpus=2, **options)
        r.start()
        made.append(r)
        time.sleep(0.03)                 # let the balancers settle into their sleep
        return r

    yield make
    for r in made:
        r.stop(timeout=5)


async def busy(stop):
    """CPU-bound with a trap every step: a little work, then yield."""
    while not stop[0]:
        sum(range(100))
        await osvrt.yield_now()


class Busy:
    """n busy unpinned threads spawned on CPU `cpu` (by a starter pinned there)."""

    def __init__(self, rt, n, cpu):
        self.rt = rt
        self.stop = [False]

        async def start():
            return [osvrt.spawn(busy, self.stop) for _ in range(n)]

        self.t0 = time.monotonic()
        self.threads = rt.submit(start, cpu=cpu).result(timeout=RESULT_TIMEOUT)

    def on(self, cpu):
        return sum(1 for t in self.threads if t.cpu == cpu)

    def sample(self, cpu, duration, period=0.002):
        """[(seconds since spawn, threads on cpu)] for `duration` seconds."""
        out = []
        end = time.monotonic() + duration
        while True:
            now = time.monotonic()
            out.append((now - self.t0, self.on(cpu)))
            if now >= end:
                return out
            time.sleep(period)

    def wait_for(self, cpu, count, timeout, at_least=False):
        """Seconds since spawn until `count` (or, at_least, >= count) threads
        are on cpu, or None."""
        end = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            n = self.on(cpu)
            if n == count or (at_least and n >= count):
                return now - self.t0
            if now >= end:
                return None
            time.sleep(0.001)

    def finish(self):
        self.stop[0] = True

        async def join_all():
            for t in self.threads:
                await t.join(timeout=RESULT_TIMEOUT)

        self.rt.submit(join_all).result(timeout=RESULT_TIMEOUT)


def migrations(rt):
    s = rt.stats()["cpus"]
    return {k: [c[k] for c in s] for k in MIGRATION_KEYS}


# ---- spreading ----------------------------------------------------------------

def test_eight_busy_threads_spread_four_four(runtimes):
    """8 busy threads spawned on one CPU reach 4/4.  How fast, in balancer
    passes, is test_osv_policy's business: a wall-clock bound here failed on a
    loaded host, where the sampling thread itself got two looks in 300 ms."""
    rt = runtimes()
    C0, C1 = rt.cpus
    load = Busy(rt, 8, C0)
    try:
        reached = load.wait_for(C1, 4, timeout=10.0)
    finally:
        load.finish()
    assert reached is not None, f"8 busy threads never reached 4/4 on CPU {C1}"


def test_balanced_load_stays_within_one(runtimes):
    """Once 8 busy threads are 4/4, every later sample (for 0.5 s) is within
    +-1 of 4 on each CPU: nothing else runs, so a balancer that counts load right has no
    reason to move anything."""
    rt = runtimes()
    C0, C1 = rt.cpus
    load = Busy(rt, 8, C0)
    try:
        reached = load.wait_for(C1, 4, timeout=2.0)
        assert reached is not None, "8 busy threads never reached 4/4"
        samples = load.sample(C1, 0.5)
    finally:
        load.finish()
    bad = [(round(t * 1e3, 1), n) for t, n in samples if not 3 <= n <= 5]
    assert not bad, f"left +-1 after reaching 4/4 (ms, threads on CPU {C1}): {bad[:10]}"


def test_two_busy_threads_stay_one_per_cpu(runtimes):
    """2 busy threads on 2 CPUs: once 1/1, they must never both end up on one
    CPU while the other idles."""
    rt = runtimes()
    C0, C1 = rt.cpus
    load = Busy(rt, 2, C0)
    try:
        reached = load.wait_for(C1, 1, timeout=2.0)
        assert reached is not None, "the idle CPU never got one of the 2 threads"
        samples = load.sample(C1, 0.3)
    finally:
        load.finish()
    bad = [(round(t * 1e3, 1), n) for t, n in samples if n != 1]
    assert not bad, f"both threads on one CPU (ms, threads on CPU {C1}): {bad[:10]}"


# ---- idle pull ------------------------------------------------------------------

class TurnCounter:
    """n busy unpinned threads spawned on CPU `cpu`, each turn TURN_S or more
    of wall-clock computing (the clock is what charges runtime: a turn is
    never cheaper than that in the balancer's eyes, on any host) and then a
    yield.  Each turn, the running thread looks whether any of them has been
    given to another CPU, and the first time one has, notes how many turns
    had run in all: the move happens at a trap on the busy CPU, so the next
    turn there sees it, whether or not the idle CPU has woken up yet.

    Counting turns, not milliseconds, keeps the check independent of host
    load: a preempted turn only lasts longer, and charges more runtime."""

    TURN_S = 100e-6

    def __init__(self, rt, n, cpu):
        self.rt = rt
        self.cpu = cpu
        self.stop = [False]
        self.turns = [0] * n
        self.turns_at_move = []       # [total turns when a move was first seen]
        self.threads = []
        counter = self

        async def spin(i):
            while not counter.stop[0]:
                end = time.perf_counter() + counter.TURN_S
                while time.perf_counter() < end:
                    pass
                counter.turns[i] += 1
                if not counter.turns_at_move and any(t.cpu != counter.cpu
                                                     for t in counter.threads):
                    counter.turns_at_move.append(sum(counter.turns))
                await osvrt.yield_now()

        async def start():
            return [osvrt.spawn(spin, i) for i in range(n)]

        self.threads.extend(rt.submit(start, cpu=cpu).result(timeout=RESULT_TIMEOUT))

    def wait_for_move(self, max_turns, timeout=RESULT_TIMEOUT):
        """Total turns at the first move, or None if none came before
        max_turns turns ran (timeout: a generous last resort, seconds)."""
        end = time.monotonic() + timeout
        while not self.turns_at_move and sum(self.turns) <= max_turns \
                and time.monotonic() < end:
            time.sleep(0.001)
        return self.turns_at_move[0] if self.turns_at_move else None

    def finish(self):
        self.stop[0] = True

        async def join_all():
            for t in self.threads:
                await t.join(timeout=RESULT_TIMEOUT)

        self.rt.submit(join_all).result(timeout=RESULT_TIMEOUT)


# A new CPU-bound thread becomes worth moving after its first slice, and the
# busy CPU offers work at most once per OFFER_PERIOD (1 ms, worker.c) from a
# yield.  Measured here (150 runs of test 2's set-up, 2 vCPUs shared with
# other work): the move came after 52 turns in half the runs, in steps of
# about 50 turns after that, 207 at most.  1000 turns (100 ms or more of the
# busy CPU computing) leaves room for that tail; test 2 allows no balancer tick.
MOVE_WITHIN_TURNS = 1000


def test_idle_cpu_gets_work_within_a_few_turns(runtimes):
    """2 busy threads spawned on CPU 0 while CPU 1 idles: one of them is given
    to CPU 1 within MOVE_WITHIN_TURNS turns of CPU 0 (counted, not timed)."""
    rt = runtimes()
    C0, C1 = rt.cpus
    load = TurnCounter(rt, 2, C0)
    try:
        moved_at = load.wait_for_move(MOVE_WITHIN_TURNS)
    finally:
        load.finish()
    assert moved_at is not None, \
        f"no thread left CPU {C0} within {sum(load.turns)} turns ({MOVE_WITHIN_TURNS} allowed)"
    assert moved_at <= MOVE_WITHIN_TURNS
    assert sum(migrations(rt)["migrations_in"]) >= 1


def test_idle_cpu_gets_work_without_waiting_for_a_balancer_tick(runtimes):
    """The idle pull does not depend on the balancer's period: with a
    balance_interval of an hour, no tick can run during the test, and the
    idle CPU still gets work within MOVE_WITHIN_TURNS turns of the busy one
    (this fails when the offer and the pull are gone, even though test 1's
    10 ms tick would still pass there)."""
    rt = runtimes(balance_interval=3600)
    C0, C1 = rt.cpus
    load = TurnCounter(rt, 2, C0)
    try:
        moved_at = load.wait_for_move(MOVE_WITHIN_TURNS)
    finally:
        load.finish()
    assert moved_at is not None, \
        f"no thread left CPU {C0} within {sum(load.turns)} turns without a balancer tick"
    assert sum(migrations(rt)["migrations_in"]) >= 1


# ---- balance=False --------------------------------------------------------------

def test_balance_false_moves_nothing(runtimes):
    rt = runtimes(balance=False)
    C0, C1 = rt.cpus
    before = migrations(rt)
    load = Busy(rt, 8, C0)
    try:
        samples = load.sample(C1, 0.3)
    finally:
        load.finish()
    assert all(n == 0 for _, n in samples)
    after = migrations(rt)
    assert after == before
    assert sum(after["pull_requests"]) == 0


# ---- balance_policy="osv" ----------------------------------------------------------

def test_osv_policy_moves_one_thread_per_pass_and_converges(runtimes):
    rt = runtimes(balance_policy="osv", balance_interval=0.05)
    C0, C1 = rt.cpus
    passes = []                              # (cpu, moved) for every pass that ran
    for w in rt._workers:                    # record what each pass did
        orig = w.balance_once

        def recorded(one_per_pass=False, _orig=orig, _cpu=w.cpu_id):
            moved = _orig(one_per_pass)
            passes.append((_cpu, moved))
            return moved
        w.balance_once = recorded
    before = migrations(rt)
    load = Busy(rt, 8, C0)
    try:
        took = load.wait_for(C1, 4, timeout=5.0)
    finally:
        load.finish()
    after = migrations(rt)
    assert took is not None, "osv policy never reached 4/4"
    moved = [m for _, m in passes]
    assert moved and max(moved) <= 1, f"a pass moved more than one thread: {passes}"
    assert sum(1 for m in moved if m) >= 4
    # Four moves, one per pass of CPU 0's balancer, at least 3 periods apart.
    assert took >= 3 * 0.05 - 0.01, f"converged in {took * 1e3:.1f} ms: faster than one move per pass"
    out = sum(after["migrations_out"]) - sum(before["migrations_out"])
    assert out == sum(moved)                 # no idle pull under the osv policy
    assert sum(after["pull_requests"]) == 0
    assert sum(after["pulls_served"]) == 0


# ---- stats ---------------------------------------------------------------------------

def test_migration_stats_are_present_and_add_up(runtimes):
    rt = runtimes()
    C0, C1 = rt.cpus
    stats = rt.stats()["cpus"]
    assert len(stats) == 2
    for c in stats:
        for k in MIGRATION_KEYS:
            assert isinstance(c[k], int) and c[k] >= 0, (k, c[k])
    load = Busy(rt, 8, C0)
    try:
        assert load.wait_for(C1, 4, timeout=2.0) is not None
    finally:
        load.finish()                         # joined: every moved thread has arrived
    m = migrations(rt)
    assert sum(m["migrations_out"]) > 0
    assert sum(m["migrations_in"]) == sum(m["migrations_out"])
    assert sum(m["pulls_served"]) <= sum(m["pull_requests"])
    assert sum(m["pull_requests"]) - sum(m["pulls_served"]) <= len(rt.cpus)
    assert m["migrations_out"][0] > 0        # CPU 0 gave threads away


def compress(samples):
    """[(ms, n)] at each change of n."""
    out = []
    for t, n in samples:
        if not out or out[-1][1] != n:
            out.append((round(t * 1e3, 1), n))
    return out
